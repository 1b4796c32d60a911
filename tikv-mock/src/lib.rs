//! `tikv-mock`: an in-memory TiKV + PD cluster that serves the real gRPC protocol on loopback
//! ports, so clients (this workspace's, or any other TiKV client) can be tested without a real
//! cluster. It starts in milliseconds and shuts down with its handle.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tikv_mock::MockError> {
//! use tikv_mock::{ApiVersion, MockCluster};
//!
//! let cluster = MockCluster::builder()
//!     .stores(3)
//!     .split_keys(["b", "m"])
//!     .api_version(ApiVersion::V1)
//!     .start()
//!     .await?;
//! let pd = cluster.pd_endpoints(); // e.g. ["127.0.0.1:41234"]
//! # let _ = pd;
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! What it owns, and who calls it: tests, examples and benchmarks of this workspace embed it
//! through [`MockCluster`]; the `tikv-mock` binary serves it to other processes.
//!
//! Behaviour follows TiKV and PD (read from their source; summarised in the workspace's
//! `mock-cluster-spec.md`):
//!
//! - [`cluster`](crate::MockCluster) state: regions with epochs, stores, keyspaces, TSO, raw
//!   data, all behind one lock so every request is atomic and linearizable;
//! - the PD service (`pdpb.PD`, `keyspacepb.Keyspace`) and the PD HTTP API subset clients use,
//!   with N members: followers forward `pd-forwarded-host` calls and TSO streams to the leader
//!   and serve region reads under `pd-allow-follower-handle`, as PD does; a leader can be cut
//!   off from clients only ([`MockCluster::isolate_pd_member`]);
//! - optionally PD's microservice mode ([`MockClusterBuilder::tso_microservice`]): N TSO
//!   servers serving `tsopb.TSO` (keyspace groups, primaries, `FindGroupByKeyspaceID`,
//!   `GetMinTS`), `GetClusterInfo` reporting `API_SVC_MODE` and PD forwarding its own `Tso`,
//!   with control over primaries, server stops and keyspace-to-group assignment;
//! - optionally PD's router microservice ([`MockClusterBuilder::router_microservice`]): N router
//!   servers serving `routerpb.Router` region and store reads, registered in PD's meta storage
//!   (`meta_storagepb.MetaStorage/Get`, served by the PD leader), with control over server
//!   stops, registration and a stopped region syncer that leaves a server answering stale
//!   regions;
//! - a `tikvpb.Tikv` service per store (unary and BatchCommands) plus gRPC health, gzip
//!   accepted and offered by every store and PD;
//! - request forwarding: a request carrying `tikv-forwarded-host` is handled as the named store
//!   would handle it, as TiKV's proxy does ([`MockCluster::forwarded_count`],
//!   [`Matcher::forwarded`] and [`Matcher::via`] for partitions between client and store);
//! - region validation in TiKV's order (store, region, peer, leader, epoch, key range);
//! - per-store transaction status caches (fed by commits and BroadcastTxnStatus), the new
//!   leader's max_ts sync (`MaxTimestampNotSynced`, deferrable with
//!   [`MockCluster::defer_max_ts_sync`]) and the max_ts update limit
//!   ([`InvalidMaxTsAction`]);
//! - a control API (split, merge, leader transfer, peers, stop/start stores, store lifecycle:
//!   add, move to another address, Offline/Tombstone, remove; manual clock) and a
//!   fault API (rules that inject region errors, key errors, gRPC statuses, delays, drops and
//!   hangs, before execution or after apply).
//!
//! Ports the client-go test infrastructure's purpose (`internal/mockstore/mocktikv`), but over
//! the real protocol and with TiKV's (stricter) semantics.

mod clock;
mod cluster;
mod codec;
mod fault;
mod lockwait;
mod mvcc;
mod pd;
mod raw;
mod server;
mod tikv;
mod tso;
mod txn;

pub use clock::{Clock, ManualClock, SystemClock};
pub use fault::{
    Action, FaultId, FaultRule, HangHandle, Matcher, Phase, RegionErrorSpec, Service, Times,
};
pub use server::{MockCluster, MockClusterBuilder};
/// The generated protocol types the mock speaks, re-exported for fault rules and assertions.
pub use tikv_proto as proto;

/// The TiKV version the mock's stores report to PD. Clients gate features on it.
pub const TIKV_VERSION: &str = "9.0.0";

/// Storage API version of the cluster (TiKV's `storage.api-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ApiVersion {
    /// Raw and transactional keys as the client sends them; no TTL.
    #[default]
    V1,
    /// Keyspace-prefixed keys (`r`/`x` + 3-byte keyspace id), raw TTL.
    V2,
}

impl ApiVersion {
    /// The wire value of `kvrpcpb.APIVersion`.
    pub fn to_proto(self) -> tikv_proto::kvrpcpb::ApiVersion {
        match self {
            ApiVersion::V1 => tikv_proto::kvrpcpb::ApiVersion::V1,
            ApiVersion::V2 => tikv_proto::kvrpcpb::ApiVersion::V2,
        }
    }
}

/// What a store does when a request would move its max_ts past what PD's TSO allows (TiKV's
/// `storage.max-ts.action-on-invalid-update`). The limit is the TSO itself for status-checking
/// commands of clients that do not identify as TiDB (`Context.request_origin`), and the TSO plus
/// 60 s of drift allowance (`storage.max-ts.max-drift`) for everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum InvalidMaxTsAction {
    /// TiKV's default: the TiKV process panics. The mock stops the store as
    /// [`MockCluster::stop_store`] does, without answering the request;
    /// [`MockCluster::start_store`] brings it back.
    #[default]
    Panic,
    /// The request fails with a region error whose message is `invalid max_ts update: {ts}
    /// exceeds the limit {limit}`, and max_ts is left alone.
    Error,
    /// The update is allowed (TiKV only logs it).
    Log,
}

/// Errors of the mock's own API (starting servers, control operations).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MockError {
    /// A listener could not be bound or a server could not start.
    Io(String),
    /// A topology operation was invalid (unknown region or store, non-adjacent merge, ...).
    Topology(String),
    /// A builder setting was invalid.
    Config(String),
}

impl std::fmt::Display for MockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MockError::Io(m) => write!(f, "tikv-mock I/O error: {m}"),
            MockError::Topology(m) => write!(f, "tikv-mock topology error: {m}"),
            MockError::Config(m) => write!(f, "tikv-mock configuration error: {m}"),
        }
    }
}

impl std::error::Error for MockError {}

/// State shared by every server task: the cluster behind its one lock, and the fault rules.
#[derive(Debug)]
pub(crate) struct Shared {
    state: std::sync::Mutex<cluster::ClusterState>,
    pub(crate) faults: fault::FaultEngine,
    /// The PD members' addresses, in member order (one member unless the builder asked for
    /// more); every member serves the same cluster state.
    pub(crate) pd_addrs: Vec<std::net::SocketAddr>,
    /// Index into `pd_addrs` of the PD leader; the others answer as PD followers do.
    pub(crate) pd_leader: std::sync::atomic::AtomicUsize,
    /// Pessimistic-lock requests waiting for locks, and the deadlock detector; outside the
    /// state lock because waiting is asynchronous.
    pub(crate) lock_waits: std::sync::Arc<lockwait::LockWaits>,
    /// Stores to stop because they "panicked" (see [`InvalidMaxTsAction::Panic`]); the cluster
    /// handle's task stops their servers.
    pub(crate) crashes: tokio::sync::mpsc::UnboundedSender<u64>,
}

impl Shared {
    /// Locks the cluster state. A panic while holding the lock (a bug in the mock) must not
    /// wedge every later request, so a poisoned lock is recovered.
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, cluster::ClusterState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
