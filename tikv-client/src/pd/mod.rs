//! The PD client: member discovery, leader failover and forwarding through followers, the TSO
//! stream with request batching, and PD's region, store, GC and keyspace queries (from
//! followers or the router servers of PD's microservice mode too, and batched on a
//! `QueryRegion` stream, behind a circuit breaker).
//!
//! [`PdClient`] is the entry point. It connects to any number of PD endpoints (one cluster;
//! members that report another cluster id are never used), follows the leader as it moves,
//! and runs every call under `pd-client.pd-server-timeout`: PD's error answers become
//! [`Error::Pd`](crate::Error::Pd) with PD's text, and a leader that cannot be found in time
//! becomes a retryable [`Error::PdServerTimeout`](crate::Error::PdServerTimeout). Six
//! background tasks per client, stopped when the last clone is dropped or
//! [`PdClient::close`] is called: the member refresh, the member health checks, the TSO
//! service-mode check, the TSO dispatcher, the router dispatcher and the router-server
//! discovery (registry reads and health checks).
//!
//! | submodule | owns | ports (tikv/pd `client/`) |
//! |---|---|---|
//! | `client` | [`PdClient`], [`PdClientBuilder`], the call discipline (deadline, leader failover, forwarding, follower reads, the breaker), region/store/scatter/operator/external-ts queries, `RegionSource` and the oracle's `TimestampSource` | `client.go`, `inner_client.go` |
//! | `discovery` | cluster id, member list, leader, single-flight refresh, member health checks, where a call goes | `servicediscovery/service_discovery.go` |
//! | `tso` | the TSO stream (to the leader, through a follower, or to a TSO microservice primary), batching, the dispatcher task, [`TsoStats`] | `clients/tso/{client,dispatcher,request,stream}.go` |
//! | `tso_discovery` | PD mode vs TSO microservice mode (`GetClusterInfo`), the keyspace group and its primary (`FindGroupByKeyspaceID`), the fallback rule | `servicediscovery/tso_service_discovery.go`, `service_discovery.go` (`checkServiceModeChanged`) |
//! | `router` | the `QueryRegion` stream (to PD or a router server), batching region lookups, the router dispatcher task | `clients/router/{client,request}.go` |
//! | `router_discovery` | the router servers of PD's microservice mode: registry read from meta storage, health checks, which server a read goes to | `servicediscovery/router_service_discovery.go`, `clients/metastorage/client.go` |
//! | `circuit_breaker` | the region-meta breaker, [`CircuitBreakerState`] | `pkg/circuitbreaker/circuit_breaker.go` |
//! | `conn` | endpoint URLs, TLS from [`Security`](crate::Security), the channel cache, routing metadata | `pkg/utils/tlsutil`, `pkg/utils/grpcutil` |
//! | `retry` | the bounded backoff, leader-change and failure classification | `pkg/retry/backoff.go`, `errs/errs.go` |
//! | `gc` | the GC states API: safe points and barriers (public through `Cluster`, see `crate::cluster_gc`) | `gc_client.go` |
//! | `keyspace` | [`KeyspaceMeta`], `LoadKeyspace` | `keyspace_client.go` (+ client-go `internal/locate/pd_codec.go`) |
//!
//! Not ported: the legacy etcd discovery of TSO servers (`discoverWithLegacyPath`; without
//! listed TSO servers the stream falls back to PD, which forwards), the TSO follower proxy, the
//! scheduling microservice, resource groups, and meta storage beyond the router registry read
//! (no public `Get`/`Put`/`Watch`).
//!
//! # The contract with the caches
//!
//! The region and store caches (`crate::locate`) never talk to PD directly: they go through
//! `RegionSource`, which the PD client implements. The caches speak PD's own region keys (the
//! clients encode their keys before routing, `crate::codec`), so nothing wraps PD; the narrow
//! seam lets cache tests use an in-memory source. The trait's methods and `RegionInfo` are a shared contract: change them
//! only together with their users.

// The module is crate-private, but its items that `crate::unstable` re-exports for the
// benchmarks stay `pub`. Without the `unstable-internals` feature nothing outside the crate can
// reach them, so `unreachable_pub` is allowed in that build only; the workspace build (where
// the benchmarks turn the feature on) still checks that every `pub` item here is reachable.
#![cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]

mod circuit_breaker;
mod client;
mod conn;
mod discovery;
#[cfg(test)]
mod failover_tests;
// The PD client against `tikv-mock` over real gRPC (was `tests/pd.rs`).
mod gc;
mod http;
#[cfg(test)]
mod integration_tests;
pub(crate) use http::MinResolvedTs;
mod keyspace;
#[cfg(test)]
mod mod_tests;
mod retry;
mod router;
mod router_discovery;
#[cfg(test)]
mod router_mcs_tests;
#[cfg(test)]
mod tests;
mod tso;
mod tso_discovery;
#[cfg(test)]
mod tso_mcs_tests;

use std::future::Future;
use std::pin::Pin;

use tikv_proto::metapb;

use crate::Result;

pub use client::PdClient;
// The GC results `crate::cluster_gc` converts into the public `tikv_client::gc` types (`u64`
// timestamps become `Timestamp`); not public themselves outside `crate::unstable`.
pub(crate) use gc::NULL_KEYSPACE_ID;
pub use gc::{GcBarrier, GcSafePointAdvance, GcState, TxnSafePointAdvance};
// Public: `crate::cluster_gc` re-exports them at the crate root (`Cluster::load_keyspace`).
pub use keyspace::{KeyspaceMeta, KeyspaceState};
// The rest of `PdClient`'s signatures, for the tests and for `crate::unstable`: with the
// feature on, every type a `pub` method of `PdClient` names must be reachable too.
#[cfg(any(test, feature = "unstable-internals"))]
pub use {circuit_breaker::CircuitBreakerState, client::OperatorStatus};
#[cfg(feature = "unstable-internals")]
pub use {
    client::{Operator, PdClientBuilder, ScatterResult},
    tso::TsoStats,
};

/// A boxed, sendable future: what [`RegionSource`] returns so that it can be used as a trait
/// object. PD calls are rare (cache misses), so the allocation does not matter.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A region as PD reports it: its metadata plus the routing facts PD knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RegionInfo {
    /// The region: id, key range (raw bytes as TiKV stores them), epoch, peers.
    pub(crate) region: metapb::Region,
    /// The leader PD last heard of; `None` while the region has no elected leader.
    pub(crate) leader: Option<metapb::Peer>,
    /// Peers PD reports as down.
    pub(crate) down_peers: Vec<metapb::Peer>,
    /// Peers PD reports as pending (lagging behind the leader's log).
    pub(crate) pending_peers: Vec<metapb::Peer>,
    /// Bucket boundaries, when asked for and PD has them.
    pub(crate) buckets: Option<metapb::Buckets>,
}

/// What the caches need from PD.
///
/// "Not found" is `Ok(None)` (or an empty list), not an error: PD answers a region query for a
/// key in a gap, or a store id it never knew, with an empty response. Errors are transport
/// failures, PD errors and timeouts, already retried within the PD client's own budget.
pub(crate) trait RegionSource: Send + Sync + std::fmt::Debug + 'static {
    /// The region containing `key` (`GetRegion`).
    fn get_region<'a>(
        &'a self,
        key: &'a [u8],
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>>;

    /// [`get_region`](Self::get_region) (or [`get_prev_region`](Self::get_prev_region) with
    /// `prev`) answered by the PD leader only, never a PD follower: what client-go's region
    /// cache asks when it retries a lookup, so that a lagging follower cannot return the same
    /// stale region again. Sources without followers answer as the plain methods do.
    fn get_region_from_leader<'a>(
        &'a self,
        key: &'a [u8],
        prev: bool,
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        if prev {
            self.get_prev_region(key, need_buckets)
        } else {
            self.get_region(key, need_buckets)
        }
    }

    /// The region that ends at `key`, i.e. the one just before the region containing `key`
    /// (`GetPrevRegion`). Used to locate by end key.
    fn get_prev_region<'a>(
        &'a self,
        key: &'a [u8],
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>>;

    /// The region with this id (`GetRegionByID`).
    #[cfg(any(test, feature = "unstable-internals"))]
    fn get_region_by_id(
        &self,
        region_id: u64,
        need_buckets: bool,
    ) -> BoxFuture<'_, Result<Option<RegionInfo>>>;

    /// Regions overlapping the given `[start, end)` ranges, in key order, at most `limit` in total
    /// (`BatchScanRegions`; falls back to `ScanRegions` per range when PD answers UNIMPLEMENTED).
    /// An empty `end` means "to the end of the key space". Ranges must be sorted and disjoint.
    fn batch_scan_regions<'a>(
        &'a self,
        ranges: &'a [(bytes::Bytes, bytes::Bytes)],
        limit: usize,
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Vec<RegionInfo>>>;

    /// [`batch_scan_regions`](Self::batch_scan_regions) answered by the PD leader only (what
    /// client-go asks after a follower's scan came back empty, with gaps, or without leaders).
    fn batch_scan_regions_from_leader<'a>(
        &'a self,
        ranges: &'a [(bytes::Bytes, bytes::Bytes)],
        limit: usize,
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Vec<RegionInfo>>> {
        self.batch_scan_regions(ranges, limit, need_buckets)
    }

    /// The store with this id (`GetStore`); `None` if PD does not know it.
    fn get_store(&self, store_id: u64) -> BoxFuture<'_, Result<Option<metapb::Store>>>;

    /// [`get_store`](Self::get_store) answered by the PD leader only, never a router server:
    /// what client-go asks when it retries a store lookup or re-resolves a known store, so
    /// that a lagging router cannot answer the same stale store again. Sources without
    /// router servers answer as `get_store` does.
    fn get_store_from_leader(&self, store_id: u64) -> BoxFuture<'_, Result<Option<metapb::Store>>> {
        self.get_store(store_id)
    }

    /// Every store PD knows (`GetAllStores`), without tombstones when `exclude_tombstone`.
    fn get_all_stores(&self, exclude_tombstone: bool) -> BoxFuture<'_, Result<Vec<metapb::Store>>>;
}
