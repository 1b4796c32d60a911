//! Request forwarding: a store that receives a request whose gRPC metadata carries
//! `tikv-forwarded-host: <address>` has the store at that address handle it, as TiKV's proxy does
//! for a client that cannot reach that store directly but can reach this one.
//!
//! Who calls it: the `tikvpb.Tikv` service (`mod.rs`) asks [`StoreLinks::route`] where each
//! forwardable unary call and each BatchCommands stream goes, and runs forwarded requests through
//! a [`Dispatcher`](super::dispatch::Dispatcher) acting as the target store; `server.rs` tells
//! [`StoreLinks`] when a store's server starts and stops and reads the forwarded-request counts
//! for `MockCluster::forwarded_count`.
//!
//! Follows TiKV `src/server/proxy.rs` (the metadata key, `get_target_address`, `forward_unary!`,
//! `forward_duplex!`) and where `src/server/service/kv.rs` invokes them. What the mock mirrors:
//!
//! - A missing, empty or non-UTF-8 header means "handle it here". So does an address naming the
//!   receiving store itself (TiKV would proxy the call to itself; the answer is the same).
//! - Only the methods TiKV forwards read the header: every `handle_request!` method (the KV,
//!   raw and MVCC commands, including RawGetKeyTTL, RawCompareAndSwap, RawChecksum, KvFlush,
//!   KvBufferBatchGet, BroadcastTxnStatus), Coprocessor, SplitRegion and BatchCommands. KvGC,
//!   KvImport, the flashback commands, RawCoprocessor, UnsafeDestroyRange, GetStoreSafeTS,
//!   GetHealthFeedback and the methods the mock does not serve are answered by the receiver.
//! - A forwarded request is handled exactly as the target would handle a direct one: the
//!   target's store id for region, peer and leader checks, the target's rpc counts, and fault
//!   rules see the target as the store (with the receiver as `via`, see `Matcher::via`).
//! - Unary: the target's answer, gRPC status included, is relayed unchanged. A target that is
//!   unknown or stopped cannot be connected to: TiKV's proxy gives up after waiting up to 3 s
//!   and drops the call, which the client sees as CANCELLED; the mock answers CANCELLED at once
//!   (after the receiver's own cluster-id check, which TiKV runs before forwarding). A target
//!   that stops while it holds the request breaks the proxy's connection: UNAVAILABLE.
//! - BatchCommands: the whole stream is bridged to the target, so every sub-request is the
//!   target's, health feedback included. TiKV's bridge drops the client's call whenever the
//!   target's side fails, so a forwarded stream ends with CANCELLED whatever ended it: a failing
//!   sub-request, or the target stopping (TiKV may notice only at the client's next message; the
//!   mock ends the stream at once). A stream to an unreachable target fails with CANCELLED.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tokio::sync::watch;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::Shared;

/// TiKV's `FORWARD_METADATA_KEY`; client-go's `forwardMetadataKey`.
pub(crate) const FORWARD_METADATA_KEY: &str = "tikv-forwarded-host";

/// Where a request that arrived at a store goes.
#[derive(Debug)]
pub(crate) enum Route {
    /// The receiving store handles it.
    Local,
    /// Forwarded to store `to` at `host`; `running` turns false when its server stops.
    Forward {
        to: u64,
        host: String,
        running: watch::Receiver<bool>,
    },
    /// Forwarded to an address no store has: nothing answers there.
    Unknown(String),
}

/// What stores know of each other for forwarding: whose server is running, and how many
/// requests each store forwarded to each other store.
#[derive(Debug, Default)]
pub(crate) struct StoreLinks {
    /// One sender per store that ever started; never removed, so receivers stay valid across
    /// restarts.
    running: Mutex<HashMap<u64, watch::Sender<bool>>>,
    /// (receiving store, target store) → requests.
    forwarded: Mutex<HashMap<(u64, u64), u64>>,
}

impl StoreLinks {
    fn running_map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, watch::Sender<bool>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forwarded_map(&self) -> std::sync::MutexGuard<'_, HashMap<(u64, u64), u64>> {
        self.forwarded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that a store's server started (`true`) or stopped (`false`). Stopping wakes the
    /// forwarded calls and streams that wait on the store.
    pub(crate) fn set_running(&self, store_id: u64, running: bool) {
        self.running_map()
            .entry(store_id)
            .or_insert_with(|| watch::channel(running).0)
            .send_replace(running);
    }

    /// Whether a store's server is running.
    pub(crate) fn is_running(&self, store_id: u64) -> bool {
        self.running_map()
            .get(&store_id)
            .is_some_and(|tx| *tx.borrow())
    }

    fn subscribe(&self, store_id: u64) -> watch::Receiver<bool> {
        self.running_map()
            .entry(store_id)
            .or_insert_with(|| watch::channel(false).0)
            .subscribe()
    }

    /// Where a request that `receiver` got with this metadata goes.
    pub(crate) fn route(&self, shared: &Shared, receiver: u64, metadata: &MetadataMap) -> Route {
        let Some(host) = forwarded_host(metadata) else {
            return Route::Local;
        };
        let target = shared
            .lock()
            .stores
            .values()
            .filter(|s| s.meta.address == host)
            // A stopped or buried store may still list an address another store now serves:
            // the connection reaches whichever store listens there.
            .max_by_key(|s| s.up)
            .map(|s| s.meta.id);
        match target {
            None => Route::Unknown(host.to_owned()),
            Some(id) if id == receiver => Route::Local,
            Some(to) => Route::Forward {
                to,
                host: host.to_owned(),
                running: self.subscribe(to),
            },
        }
    }

    /// Counts one request `via` forwarded to `to`.
    pub(crate) fn count(&self, via: u64, to: u64) {
        *self.forwarded_map().entry((via, to)).or_default() += 1;
    }

    /// Requests `via` forwarded to `to`.
    pub(crate) fn forwarded_count(&self, via: u64, to: u64) -> u64 {
        self.forwarded_map().get(&(via, to)).copied().unwrap_or(0)
    }

    /// Every forwarded-request count, by (receiving store, target store).
    pub(crate) fn forwarded_counts(&self) -> BTreeMap<(u64, u64), u64> {
        self.forwarded_map().iter().map(|(k, n)| (*k, *n)).collect()
    }

    /// Forgets every forwarded-request count.
    pub(crate) fn reset_counts(&self) {
        self.forwarded_map().clear();
    }
}

/// The target address a request names, if any. TiKV takes the first value that is valid UTF-8
/// and treats an empty one as absent.
fn forwarded_host(metadata: &MetadataMap) -> Option<&str> {
    metadata
        .get_all(FORWARD_METADATA_KEY)
        .iter()
        .find_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .filter(|host| !host.is_empty())
}

/// The status of a forwarded call whose target cannot be connected to.
pub(crate) fn unreachable(host: &str) -> Status {
    Status::cancelled(format!(
        "tikv-mock: cannot connect to forwarded host {host}"
    ))
}

/// The status of a forwarded unary call whose target stopped while holding it.
pub(crate) fn target_lost(to: u64) -> Status {
    Status::unavailable(format!(
        "tikv-mock: connection to forwarded store {to} broke"
    ))
}

/// Resolves once the watched store is no longer running.
pub(crate) async fn stopped(running: &mut watch::Receiver<bool>) {
    // A dropped sender cannot happen (senders are never removed); treat it as stopped too.
    let _ = running.wait_for(|up| !*up).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    #[test]
    fn header_values() {
        let mut m = MetadataMap::new();
        assert_eq!(forwarded_host(&m), None);
        m.insert(FORWARD_METADATA_KEY, MetadataValue::from_static(""));
        assert_eq!(forwarded_host(&m), None);
        m.insert(
            FORWARD_METADATA_KEY,
            MetadataValue::from_static("127.0.0.1:1"),
        );
        assert_eq!(forwarded_host(&m), Some("127.0.0.1:1"));
    }

    #[tokio::test]
    async fn running_and_counts() {
        let links = StoreLinks::default();
        assert!(!links.is_running(1));
        links.set_running(1, true);
        assert!(links.is_running(1));
        let mut rx = links.subscribe(1);
        let waiter = tokio::spawn(async move { stopped(&mut rx).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        links.set_running(1, false);
        waiter.await.unwrap();

        links.count(1, 2);
        links.count(1, 2);
        links.count(3, 2);
        assert_eq!(links.forwarded_count(1, 2), 2);
        assert_eq!(links.forwarded_count(2, 1), 0);
        assert_eq!(links.forwarded_counts().len(), 2);
        links.reset_counts();
        assert!(links.forwarded_counts().is_empty());
    }
}
