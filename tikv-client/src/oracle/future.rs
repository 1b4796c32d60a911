//! [`OracleFuture`]: the future type of [`Oracle`](super::Oracle)'s asynchronous methods.
//!
//! Most oracle calls are answered from memory (a cached low-resolution timestamp, a read
//! timestamp at or below the last fetched one), and only a few go to PD. A future that is either
//! an already-computed value or a boxed future keeps the trait object-safe while the cached paths
//! cost no allocation.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The future returned by the asynchronous methods of [`Oracle`](super::Oracle).
///
/// It is either ready at once (the answer was in memory) or wraps a boxed future (the answer
/// needs PD). Implementors of `Oracle` build one with [`OracleFuture::ready`] or
/// [`OracleFuture::boxed`].
#[must_use = "futures do nothing unless awaited"]
pub(crate) struct OracleFuture<'a, T> {
    inner: Inner<'a, T>,
}

enum Inner<'a, T> {
    Ready(Ready<T>),
    Boxed(Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<'a, T> OracleFuture<'a, T> {
    /// A future that resolves to `value` on its first poll, without allocating.
    pub(crate) fn ready(value: T) -> Self {
        OracleFuture {
            inner: Inner::Ready(ready(value)),
        }
    }

    /// Wraps an arbitrary sendable future.
    pub(crate) fn boxed(future: impl Future<Output = T> + Send + 'a) -> Self {
        OracleFuture {
            inner: Inner::Boxed(Box::pin(future)),
        }
    }
}

impl<T> Future for OracleFuture<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // Both variants are `Unpin` (`Ready<T>` always is, the box is pinned on the heap).
        match &mut self.get_mut().inner {
            Inner::Ready(r) => Pin::new(r).poll(cx),
            Inner::Boxed(f) => f.as_mut().poll(cx),
        }
    }
}

impl<T> fmt::Debug for OracleFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.inner {
            Inner::Ready(_) => "ready",
            Inner::Boxed(_) => "pending",
        };
        f.debug_struct("OracleFuture").field("kind", &kind).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_and_boxed_resolve() {
        assert_eq!(OracleFuture::ready(7).await, 7);
        let x = 5;
        assert_eq!(OracleFuture::boxed(async move { x + 1 }).await, 6);
        assert!(format!("{:?}", OracleFuture::ready(1)).contains("ready"));
    }
}
