//! Keys, values and key ranges: the vocabulary every other module speaks.
//!
//! This module owns the user-facing data types of the client and the byte-level encodings that
//! sit under them:
//!
//! - [`Key`]: an ordered byte string, cheap to clone. It wraps [`bytes::Bytes`], the type the
//!   generated proto messages use for byte fields, so a key moves into a request with no copy.
//! - [`Value`]: the payload stored under a key (an alias of [`bytes::Bytes`]).
//! - [`KvPair`]: a key with its value, as returned by gets and scans.
//! - [`BoundRange`]: a key range built from any Rust range expression, lowered to the
//!   `[start, end)` pair with "empty end = unbounded" that TiKV expects.
//! - [`codec`]: the memcomparable byte and number encodings (used by the API codec for the region
//!   keys PD reports, and by applications that build ordered composite keys).
//!
//! Who calls it: the public `raw` and `txn` APIs take `impl Into<Key>` / `impl Into<BoundRange>`
//! and return [`KvPair`]s; the request layer splits [`BoundRange`]s by region; the API v2
//! keyspace codec uses [`codec`]. This module depends on nothing else in the crate but
//! [`crate::Error`].
//!
//! Ports from client-go: `kv/key.go` (`NextKey`, `PrefixNextKey`, `CmpKey`, `KeyRange`) and
//! `util/codec/bytes.go`, `util/codec/number.go`.

mod bound_range;
pub mod codec;
mod key;

pub use bound_range::BoundRange;
pub use key::{Key, KvPair, Value};
