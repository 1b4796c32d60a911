//! # tikv-client
//!
//! A TiKV client for Rust with the feature set of client-go v2 (`github.com/tikv/client-go/v2`),
//! built on tokio and tonic. This is the workspace foundation: typed errors, configuration, TLS
//! settings, key types and the memcomparable codec. Raw and transactional clients follow.
//!
//! ## Module map
//!
//! | module | owns | ports (client-go) |
//! |---|---|---|
//! | [`error`] | the public error catalogue, classified (retryable, undetermined) | `error/error.go` |
//! | [`config`] | [`Config`] (builder, TOML), [`Security`] (TLS) | `config/config.go`, `config/client.go`, `config/security.go` |
//! | [`kv`] | [`Key`], [`Value`], [`KvPair`], [`BoundRange`], memcomparable codec | `kv/key.go`, `util/codec/` |
//!
//! Proto types from `tikv-proto` stay inside the crate; the public API speaks the types above.

// The API V1/V2 key codec; the raw and transactional clients are its users.
mod cluster;
#[cfg_attr(not(test), allow(dead_code))]
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
mod tls;
pub mod transport;

pub use cluster::Cluster;
pub use config::{Config, Security};
pub use error::{Error, Result};
pub use kv::{BoundRange, Key, KvPair, Value};
pub use oracle::Timestamp;
pub use raw::{ApiVersion, RawClient};
