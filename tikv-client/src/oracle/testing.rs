//! An in-memory [`TimestampSource`] for oracle tests (client-go's `MockPdClient` and
//! `MockPDClientWithPause` in `oracle/oracles/pd_test.go`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedMutexGuard, watch};
use tokio::time::Instant;

use super::{Timestamp, TimestampSource};
use crate::pd::BoxFuture;
use crate::{Error, Result};

/// A gate that calls pass through while open and wait at while closed.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    lock: Arc<tokio::sync::Mutex<()>>,
    held: Mutex<Option<OwnedMutexGuard<()>>>,
}

impl Gate {
    pub(crate) fn close(&self) {
        let guard = self
            .lock
            .clone()
            .try_lock_owned()
            .expect("gate already closed");
        *self.held.lock().unwrap() = Some(guard);
    }

    pub(crate) fn open(&self) {
        self.held.lock().unwrap().take();
    }

    async fn pass(&self) {
        drop(self.lock.lock().await);
    }
}

/// Timestamps from a counter (`physical = 0`, like client-go's mock) or, when clocked, from a
/// physical clock that follows tokio's (pausable) time.
#[derive(Debug)]
pub(crate) struct MemSource {
    /// The last allocated version.
    last: AtomicU64,
    /// `Some((physical ms at start, start))` when timestamps follow the clock.
    clock: Option<(u64, Instant)>,
    external: AtomicU64,
    unavailable: AtomicBool,
    /// Closed by tests to hold calls before they allocate (client-go `MockPDClientWithPause`).
    pub(crate) before_alloc: Gate,
    /// Closed by tests to hold calls after they allocated (client-go failpoint
    /// `getCurrentTSForValidationBeforeReturn`).
    pub(crate) after_alloc: Gate,
    /// How many `get_timestamp` calls arrived, and how many allocated.
    arrived: watch::Sender<usize>,
    allocated: watch::Sender<usize>,
}

impl MemSource {
    /// Counter timestamps: 1, 2, 3, ...
    pub(crate) fn counter() -> Arc<MemSource> {
        Arc::new(MemSource::build(None))
    }

    /// Timestamps whose physical part is `start_physical_ms` plus tokio time elapsed since now.
    pub(crate) fn clocked(start_physical_ms: u64) -> Arc<MemSource> {
        Arc::new(MemSource::build(Some((start_physical_ms, Instant::now()))))
    }

    fn build(clock: Option<(u64, Instant)>) -> MemSource {
        MemSource {
            last: AtomicU64::new(0),
            clock,
            external: AtomicU64::new(0),
            unavailable: AtomicBool::new(false),
            before_alloc: Gate::default(),
            after_alloc: Gate::default(),
            arrived: watch::channel(0).0,
            allocated: watch::channel(0).0,
        }
    }

    /// Allocates the next timestamp directly, as another client of the same PD would.
    pub(crate) fn allocate(&self) -> Timestamp {
        let clock_ts = self.clock.map(|(base, start)| {
            let elapsed = u64::try_from(start.elapsed().as_millis()).unwrap();
            Timestamp::compose(base + elapsed, 0).version()
        });
        let mut last = self.last.load(Ordering::SeqCst);
        loop {
            let next = clock_ts.unwrap_or(0).max(last + 1);
            match self
                .last
                .compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Timestamp::from_version(next),
                Err(actual) => last = actual,
            }
        }
    }

    /// The last allocated timestamp.
    pub(crate) fn peek(&self) -> Timestamp {
        Timestamp::from_version(self.last.load(Ordering::SeqCst))
    }

    /// Sets the last allocated version: the next one is `version + 1`.
    pub(crate) fn set_last(&self, version: u64) {
        self.last.store(version, Ordering::SeqCst);
    }

    /// Skips `n` versions, as if other clients had allocated them.
    pub(crate) fn skip(&self, n: u64) {
        self.last.fetch_add(n, Ordering::SeqCst);
    }

    /// Makes every call fail as if PD were out of reach.
    pub(crate) fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Number of `get_timestamp` calls that arrived (allocated or not).
    pub(crate) fn arrivals(&self) -> usize {
        *self.arrived.borrow()
    }

    /// Number of `get_timestamp` calls that allocated.
    pub(crate) fn fetches(&self) -> usize {
        *self.allocated.borrow()
    }

    /// Waits until at least `n` `get_timestamp` calls have arrived.
    pub(crate) async fn wait_arrived(&self, n: usize) {
        self.arrived
            .subscribe()
            .wait_for(|count| *count >= n)
            .await
            .unwrap();
    }

    /// Waits until at least `n` `get_timestamp` calls have allocated.
    pub(crate) async fn wait_fetches(&self, n: usize) {
        self.allocated
            .subscribe()
            .wait_for(|count| *count >= n)
            .await
            .unwrap();
    }

    fn check_available(&self) -> Result<()> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(Error::PdServerTimeout {
                message: "mem source unavailable".to_owned(),
            });
        }
        Ok(())
    }
}

impl TimestampSource for MemSource {
    fn get_timestamp(&self) -> BoxFuture<'_, Result<Timestamp>> {
        Box::pin(async move {
            self.arrived.send_modify(|n| *n += 1);
            self.before_alloc.pass().await;
            self.check_available()?;
            let ts = self.allocate();
            self.allocated.send_modify(|n| *n += 1);
            self.after_alloc.pass().await;
            Ok(ts)
        })
    }

    fn get_external_timestamp(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            self.check_available()?;
            Ok(self.external.load(Ordering::SeqCst))
        })
    }

    fn set_external_timestamp(&self, ts: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.check_available()?;
            let global = self.allocate().version();
            if ts > global {
                return Err(Error::Pd {
                    message: "external timestamp is greater than global tso".to_owned(),
                });
            }
            let current = self.external.load(Ordering::SeqCst);
            if ts < current {
                return Err(Error::Pd {
                    message: "cannot decrease the external timestamp".to_owned(),
                });
            }
            self.external.store(ts, Ordering::SeqCst);
            Ok(())
        })
    }

    fn get_min_ts(&self) -> BoxFuture<'_, Result<Timestamp>> {
        Box::pin(async move {
            self.check_available()?;
            Ok(self.allocate())
        })
    }
}
