//! Timestamps and the timestamp oracle.
//!
//! # What this module owns
//!
//! - [`Timestamp`] (`timestamp.rs`): the 64-bit TSO value and its conversions.
//! - [`Oracle`]: what transactions, snapshots, the lock resolver and the request sender ask of
//!   "time": fresh timestamps from PD, a cached low-resolution timestamp, stale-read
//!   timestamps, lock expiry checks, read-timestamp validation, PD's external timestamp and the
//!   minimum timestamp over TSO keyspace groups.
//! - [`PdOracle`] (`pd.rs`): the production oracle. It wraps a `TimestampSource`
//!   (`source.rs`), which the PD client implements: the oracle never speaks gRPC itself, and
//!   its tests run against an in-memory source. It keeps the last fetched timestamp, refreshes
//!   it from a background task whose interval adapts to stale reads (`adaptive.rs`), and
//!   validates read timestamps, sharing one PD fetch among concurrent validators.
//! - [`LocalOracle`] (`local.rs`): timestamps from the local clock, with a manual clock and an
//!   on/off switch, for tests of code that needs an oracle but no PD.
//!
//! # Who calls it
//!
//! The [`Cluster`](crate::Cluster) makes one [`PdOracle`] on first use ([`PdOracle::new`] over
//! its [`PdClient`](crate::pd::PdClient)) and hands it to the request sender
//! (`validate_read_ts` before every read that carries a timestamp) and to users, through the
//! public [`TimestampOracle`](crate::TimestampOracle) (`timestamp_oracle.rs`, client-go
//! `KVStore.GetOracle`); transactions (start and commit timestamps, `is_expired` /
//! `until_expired` in the lock resolver) and snapshots (stale-read timestamps) come next.
//!
//! # Why `Oracle` is object-safe
//!
//! Callers hold the oracle as `Arc<dyn Oracle>`: a client, its transactions and its lock
//! resolver then share one type whatever oracle is plugged in (PD, local, a test double), and
//! no generic parameter spreads through the transaction API. The asynchronous methods return
//! [`OracleFuture`], which is either a value computed at once or a boxed future: the paths taken
//! on every request (read-timestamp validation against the cached timestamp, the low-resolution
//! and stale timestamps) allocate nothing, and the boxing on the PD paths is noise next to a
//! network round trip. Lock expiry checks are synchronous, as they only read the cache.
//!
//! # Semantics kept from client-go
//!
//! - `is_expired` / `until_expired` compare against the last timestamp fetched from PD (refreshed
//!   at least every update interval), not against the local clock: they may report a lock as
//!   alive for up to one interval too long, never as expired too early.
//! - `get_stale_timestamp(prev_seconds)` is the last timestamp plus the local time elapsed since
//!   it arrived, minus `prev_seconds`. It is an estimate, not a proof that data at that time is
//!   readable: validate it before reading.
//! - `validate_read_ts` rejects a read timestamp above the newest timestamp PD has allocated
//!   ([`Error::FutureTsRead`](crate::Error::FutureTsRead)), and `u64::MAX` for a stale read
//!   ([`Error::LatestStaleRead`](crate::Error::LatestStaleRead)).
//! - Transaction scopes (local/DC TSO) are not supported: there is one global scope.
//! - One call, one attempt: each PD call has the PD client's own deadline. Retrying around the
//!   oracle with a PD backoff is [`get_timestamp_with_retry`] (client-go
//!   `GetTimestampWithRetry`, `retry.rs`), within client-go's 15 s TSO budget when the caller
//!   has no backoffer of its own ([`TSO_MAX_BACKOFF`], client-go `CurrentTimestamp`).
//!
//! Ports client-go `oracle/oracle.go`, `oracle/oracles/pd.go`, `oracle/oracles/local.go`,
//! `oracle/oracles/local_external_timestamp.go`, `oracle/oracles/mock.go`, and the timestamp
//! retry of `tikv/kv.go`.

mod adaptive;
mod future;
// Timestamps from the local clock: only tests use an oracle without PD.
#[cfg(test)]
mod local;
mod pd;
mod retry;
#[cfg(test)]
mod retry_tests;
mod source;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
// The PD oracle against `tikv-mock` (was `tests/oracle.rs`).
#[cfg(test)]
mod integration_tests;
mod timestamp;

use std::fmt;
use std::time::Duration;

pub(crate) use future::OracleFuture;
#[cfg(test)]
pub(crate) use local::LocalOracle;
pub(crate) use pd::{PdOracle, PdOracleOptions};
pub(crate) use retry::{
    TSO_MAX_BACKOFF, get_min_ts_with_retry, get_timestamp_with_retry, with_pd_retry,
};
pub(crate) use source::TimestampSource;
pub(crate) use timestamp::LOGICAL_BITS;
pub use timestamp::Timestamp;

use crate::Result;

/// A source of strictly increasing timestamps, plus the time-related checks built on them
/// (client-go `oracle.Oracle`).
///
/// Implemented by [`PdOracle`] (production) and [`LocalOracle`] (tests). Use it as
/// `Arc<dyn Oracle>`; see the [module docs](self) for why it is object-safe.
pub(crate) trait Oracle: Send + Sync + fmt::Debug {
    /// A fresh timestamp from PD, greater than every timestamp allocated before the call.
    fn get_timestamp(&self) -> OracleFuture<'_, Result<Timestamp>>;

    /// The last timestamp the oracle fetched: cheap, at most about one update interval old, and
    /// not necessarily unique. Use it where a recent lower bound of "now" is enough.
    fn get_low_resolution_timestamp(&self) -> OracleFuture<'_, Result<Timestamp>>;

    /// Changes how often the low-resolution timestamp is refreshed. Takes effect within one
    /// previous interval. Stale reads may make the oracle refresh more often than this. A zero
    /// interval is rejected with [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    fn set_low_resolution_update_interval(&self, interval: Duration) -> Result<()>;

    /// A timestamp about `prev_seconds` seconds before PD's current time, estimated from the last
    /// fetched timestamp and the local time elapsed since it arrived.
    ///
    /// Not a proof that the data at that time is still readable or already complete: validate
    /// it ([`validate_read_ts`](Self::validate_read_ts)) before reading. Fails with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) (`invalid prevSecond`) when
    /// `prev_seconds` reaches back before the Unix epoch.
    fn get_stale_timestamp(&self, prev_seconds: u64) -> OracleFuture<'_, Result<Timestamp>>;

    /// Whether a lock taken at `lock_ts` with a TTL of `ttl_ms` milliseconds has expired,
    /// judged by the oracle's clock (for [`PdOracle`], the last fetched timestamp: it may say
    /// "not yet" for up to one update interval after expiry, never "expired" too early).
    fn is_expired(&self, lock_ts: Timestamp, ttl_ms: u64) -> bool;

    /// Milliseconds until that lock expires, by the same clock as
    /// [`is_expired`](Self::is_expired); zero or negative once it has.
    fn until_expired(&self, lock_ts: Timestamp, ttl_ms: u64) -> i64;

    /// Checks that reading at `read_ts` is safe from the oracle's point of view: `read_ts` does
    /// not exceed the newest timestamp PD has allocated (else
    /// [`Error::FutureTsRead`](crate::Error::FutureTsRead)), and a stale read does not ask for
    /// `u64::MAX` (else [`Error::LatestStaleRead`](crate::Error::LatestStaleRead)). Whether GC has
    /// already removed that snapshot is not checked here.
    ///
    /// Answered from memory when `read_ts` is at most the last fetched timestamp; otherwise asks
    /// PD once (concurrent callers share the fetch).
    fn validate_read_ts(
        &self,
        read_ts: Timestamp,
        is_stale_read: bool,
    ) -> OracleFuture<'_, Result<()>>;

    /// The cluster's external timestamp (PD `GetExternalTimestamp`); zero when never set.
    fn get_external_timestamp(&self) -> OracleFuture<'_, Result<Timestamp>>;

    /// Sets the cluster's external timestamp (PD `SetExternalTimestamp`). It may only grow, and
    /// may not exceed the current timestamp.
    fn set_external_timestamp(&self, ts: Timestamp) -> OracleFuture<'_, Result<()>>;

    /// The minimum current timestamp over all TSO keyspace groups (PD `GetMinTS`): a timestamp no
    /// keyspace's transactions can still start below.
    fn get_all_tso_keyspace_group_min_ts(&self) -> OracleFuture<'_, Result<Timestamp>>;

    /// Stops background work (the refresh task). The other methods keep working; a closed
    /// [`PdOracle`]'s low-resolution timestamp just stops advancing on its own.
    fn close(&self);
}
