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
//! | [`pd`] | the PD client: members, TSO, region and store queries, GC, keyspaces | tikv/pd `client/` |
//! | [`oracle`] | [`Timestamp`], the `Oracle` trait, PD and local oracles | `oracle/` |
//! | [`locate`] | the region cache and the store cache | `internal/locate/region_cache.go`, `store_cache.go` |
//! | [`transport`] | per-store connections, BatchCommands streams, unary calls (hidden, unstable) | `internal/client/` |
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
pub mod oracle;
pub mod pd;
pub mod raw;
pub mod request;
mod rpc;
mod safe_ts;
mod tls;
pub mod transport;

pub use cluster::Cluster;
pub use config::{Config, Security};
pub use error::{Error, Result};
pub use kv::{BoundRange, Key, KvPair, Value};
pub use oracle::Timestamp;
pub use raw::{ApiVersion, RawClient};
pub use safe_ts::GLOBAL_TXN_SCOPE;
