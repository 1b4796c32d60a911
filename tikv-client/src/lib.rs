//! # tikv-client
//!
//! A TiKV client for Rust with the feature set of client-go v2 (`github.com/tikv/client-go/v2`),
//! built on tokio and tonic. [`RawClient`] is the raw key-value API; the transactional client is
//! not written yet.
//!
//! ## Module map
//!
//! | module | owns | ports (client-go) |
//! |---|---|---|
//! | [`error`] | the public error catalogue, classified (retryable, undetermined) | `error/error.go` |
//! | [`config`] | [`Config`] (builder, TOML, `tikv://` paths), [`Security`] (TLS files) | `config/` |
//! | [`kv`] | [`Key`], [`Value`], [`KvPair`], [`BoundRange`], memcomparable codec | `kv/key.go`, `util/codec/` |
//! | `pd` | the PD client: members, TSO, region and store queries, GC, keyspaces | tikv/pd `client/` |
//! | `oracle` | [`Timestamp`], the `Oracle` trait, PD and local oracles | `oracle/` |
//! | [`locate`] | the region cache and the store cache | `internal/locate/region_cache.go`, `store_cache.go` |
//! | `transport` | per-store connections, BatchCommands streams, unary calls (hidden, unstable) | `internal/client/` |
//! | [`request`] | backoff, the region request sender, replica selection, fan-out | `config/retry/`, `internal/locate/region_request.go` |
//! | `rpc` | typed requests and responses of every region-routed command | `tikvrpc/` |
//! | `codec` | API V1/V2 key codecs (keyspaces) | `internal/apicodec/` |
//! | `tls` | the TLS settings of every connection, `cluster-verify-cn` | `config/security.go` |
//! | [`Cluster`] | what the clients of one cluster share: PD client, caches, transport, sender | `tikv/kv.go` |
//! | [`raw`] | [`RawClient`] | `rawkv/` |
//! | `safe_ts` | per-store and per-scope safe timestamps for stale reads | `tikv/kv.go` (`updateSafeTS`) |
//!
//! Proto types from `tikv-proto` stay inside the crate; the public API speaks the types above.

mod cluster;
// The API V1/V2 key codec; the raw and transactional clients are its users.
mod codec;
pub mod config;
pub mod error;
pub mod kv;
pub mod locate;
pub(crate) mod oracle;
pub(crate) mod pd;
pub mod raw;
pub mod request;
mod rpc;
// Doctests that keep the internals out of the public API.
#[cfg(doctest)]
mod public_api;
mod safe_ts;
mod timestamp_oracle;
mod tls;
pub(crate) mod transport;

pub use cluster::Cluster;
pub use config::{Config, Security};
pub use error::{Error, Result};
pub use kv::{BoundRange, Key, KvPair, Value};
pub use oracle::Timestamp;
pub use raw::{ApiVersion, RawClient};
pub use safe_ts::GLOBAL_TXN_SCOPE;
pub use timestamp_oracle::TimestampOracle;

/// Internals the workspace's benchmarks drive directly: the PD client (TSO bench), the store
/// transport (transport bench) and the region cache (region-cache bench). Not API: these types
/// speak `tikv-proto` types and change without notice. Present only with the
/// `unstable-internals` cargo feature, and hidden from the documentation.
///
/// The modules they live in are `pub(crate)`; their items stay `pub` so that this module can
/// re-export them. An internal module joins with one `pub use` line here (and the
/// `cfg_attr(..., allow(unreachable_pub))` line at the top of the module, see `pd/mod.rs`).
#[cfg(feature = "unstable-internals")]
#[doc(hidden)]
pub mod unstable {
    pub use crate::locate::RegionCache;
    pub use crate::pd::{
        CircuitBreakerState, GcBarrier, GcSafePointAdvance, GcState, KeyspaceMeta, KeyspaceState,
        Operator, OperatorStatus, PdClient, PdClientBuilder, ScatterResult, TsoStats,
        TxnSafePointAdvance,
    };
    pub use crate::transport::{
        HealthFeedback, Liveness, SendOptions, StoreClient, Transport, TransportStats,
        UnaryRequest, UnaryResponse,
    };
}
