//! # tikv-client
//!
//! A TiKV client for Rust with the feature set of client-go v2 (`github.com/tikv/client-go/v2`),
//! built on tokio and tonic. [`RawClient`] is the raw key-value API; the transactional client is
//! not written yet (it will live in a `txn` module, built on the same [`Cluster`] and taking the
//! same [`options`]).
//!
//! ## A short tour
//!
//! Connect, then call: every call returns a request builder whose options are methods, and
//! awaiting it sends it. Keys and values take `&str`, `&[u8]`, `String`, `Vec<u8>` or
//! `Bytes`.
//!
//! ```no_run
//! use std::time::Duration;
//! use tikv_client::{Error, RawClient};
//!
//! # async fn tour() -> tikv_client::Result<()> {
//! let client = RawClient::builder(["127.0.0.1:2379"])
//!     .timeout(Duration::from_secs(10)) // every call's deadline, unless it sets its own
//!     .build()
//!     .await?;
//!
//! client.put("user/1", "Ada").await?;
//! client.put("session/1", "token").ttl(Duration::from_secs(900)).await?;
//! let name = client.get("user/1").timeout(Duration::from_millis(200)).await?;
//! let last_users = client.scan("user/".."user0").reverse().limit(10).await?;
//! let user_keys = client.scan("user/".."user0").keys_only().await?; // Vec<Key>
//!
//! // Errors are one enum, classified.
//! match client.get("user/2").timeout(Duration::from_millis(1)).await {
//!     Ok(value) => println!("{value:?}"),
//!     Err(Error::Timeout { .. }) => println!("too slow this time"),
//!     Err(e) if e.is_retryable() => println!("worth retrying: {e}"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
//!
//! Dropping a call's future cancels the call; the client stays usable. Clients are cheap to
//! clone, and several clients (keyspaces, column families, atomic or not) can share one
//! [`Cluster`], its connections and its caches:
//!
//! ```no_run
//! use tikv_client::{ApiVersion, Cluster, Config, RawClient};
//!
//! # async fn share() -> tikv_client::Result<()> {
//! let cluster = Cluster::connect(["127.0.0.1:2379"], Config::default()).await?;
//! let plain = RawClient::builder_on(&cluster).build().await?;
//! let atomic = RawClient::builder_on(&cluster).atomic(true).build().await?;
//! let cas = atomic.compare_and_swap("lock", None::<&str>, "me").await?;
//! println!("took the lock: {}", cas.swapped);
//! # Ok(()) }
//! ```
//!
//! Configuration is a [`Config`] (defaults as client-go's, loadable from client-go's TOML);
//! see [`config`].
//!
//! ## Module map
//!
//! | module | owns | ports (client-go) |
//! |---|---|---|
//! | [`error`] | the public error catalogue, classified (retryable, undetermined) | `error/error.go` |
//! | [`config`] | [`Config`] (builder, TOML, `tikv://` paths), [`Security`] (TLS files), [`ApiVersion`] | `config/` |
//! | [`options`] | per-call options shared by the clients: deadline, retry budget, column family | `rawkv` options, `context` deadlines |
//! | [`kv`] | [`Key`], [`Value`], [`KvPair`], [`BoundRange`], memcomparable codec | `kv/key.go`, `util/codec/` |
//! | `pd` | the PD client: members, TSO, region and store queries, GC, keyspaces | tikv/pd `client/` |
//! | `oracle` | [`Timestamp`], the `Oracle` trait, the PD oracle (public as [`TimestampOracle`]) | `oracle/` |
//! | `locate` | the region cache and the store cache (crate-private; [`RawClient::locate_key`], [`Cluster::stores`]) | `internal/locate/region_cache.go`, `store_cache.go` |
//! | `transport` | per-store connections, BatchCommands streams, unary calls | `internal/client/` |
//! | `request` | backoff, the region request sender, replica selection, fan-out | `config/retry/`, `internal/locate/region_request.go` |
//! | `rpc` | typed requests and responses of every region-routed command | `tikvrpc/` |
//! | `codec` | API V1/V2 key codecs (keyspaces) | `internal/apicodec/` |
//! | `tls` | the TLS settings of every connection, `cluster-verify-cn` | `config/security.go` |
//! | [`Cluster`] | what the clients of one cluster share: PD client, caches, transport, sender | `tikv/kv.go` |
//! | `timestamp_oracle` | [`TimestampOracle`], the public handle to the cluster's PD oracle | `tikv/kv.go` (`GetOracle`), `oracle/` |
//! | `region_location` | [`RegionLocation`], a region in the caller's key space | `internal/locate/region_cache.go` (`LocateKey`) |
//! | [`gc`] | PD's GC states (safe points, GC barriers) and keyspaces, through [`Cluster`] | tikv/pd `client/clients/gc/`, `tikv/gc.go` |
//! | [`raw`] | [`RawClient`] and its request builders | `rawkv/` |
//! | `safe_ts` | per-store and per-scope safe timestamps for stale reads | `tikv/kv.go` (`updateSafeTS`) |
//!
//! Proto types from `tikv-proto` stay inside the crate; the public API speaks the types above.

mod cluster;
mod cluster_gc;
// The API V1/V2 key codec; the raw and transactional clients are its users.
mod codec;
pub mod config;
pub mod error;
pub mod kv;
pub(crate) mod locate;
pub mod options;
pub(crate) mod oracle;
pub(crate) mod pd;
pub mod raw;
mod region_location;
pub(crate) mod request;
mod rpc;
// Doctests that keep the internals out of the public API.
#[cfg(doctest)]
mod public_api;
mod safe_ts;
mod timestamp_oracle;
mod tls;
pub(crate) mod transport;

pub use cluster::Cluster;
pub use cluster_gc::{KeyspaceMeta, KeyspaceState, gc};
pub use config::{ApiVersion, Config, Security};
pub use error::{Error, Result};
pub use kv::{BoundRange, Key, KvPair, Value};
pub use locate::{StoreHealthDetail, StoreInfo, StoreState, StoreType};
pub use oracle::Timestamp;
pub use raw::{CasResult, RawClient};
pub use region_location::RegionLocation;
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
    pub use crate::locate::{
        BatchLocateOptions, Bucket, Buckets, KeyLocation, RegionCache, RegionVerId,
    };
    pub use crate::pd::{
        CircuitBreakerState, GcBarrier, GcSafePointAdvance, GcState, Operator, OperatorStatus,
        PdClient, PdClientBuilder, ScatterResult, TsoStats, TxnSafePointAdvance,
    };
    pub use crate::transport::{
        HealthFeedback, Liveness, SendOptions, StoreClient, Transport, TransportStats,
        UnaryRequest, UnaryResponse,
    };
}
