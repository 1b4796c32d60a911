//! Fetching a timestamp with retries: what a transaction does to get its start timestamp.
//!
//! The oracle makes one attempt per call (each PD call has the PD client's own deadline); a
//! PD leader change or a brief outage must not fail a transaction that could simply wait a
//! moment. These helpers retry around the oracle with the `pdRPC` backoff, bounded by the
//! caller's backoffer, or by client-go's 15 s TSO budget.
//!
//! Who calls it: the cluster (`Cluster::current_timestamp`, the public `TimestampOracle`, the
//! lazy creation of its oracle), transactions next, and anything else that needs "now" and
//! prefers waiting to failing; callers that want one attempt call [`Oracle::get_timestamp`]
//! directly.
//!
//! Ports client-go `tikv/kv.go` (`KVStore.GetTimestampWithRetry`, `CurrentTimestamp`,
//! `CurrentAllTSOKeyspaceGroupMinTs`) and
//! `txnkv/transaction/2pc.go` (`TsoMaxBackoff`).

use std::time::Duration;

use super::{Oracle, Timestamp};
use crate::request::{BackoffKind, Backoffer};
use crate::{Error, Result};

/// The backoff budget of a timestamp asked for without a caller's backoffer (client-go
/// `TsoMaxBackoff`, 15 000 ms): `Cluster::current_timestamp` and `TimestampOracle`.
pub(crate) const TSO_MAX_BACKOFF: Duration = Duration::from_millis(15_000);

/// A fresh timestamp from `oracle`, retried after a `pdRPC` backoff on `bo` while the failure
/// may pass (client-go `GetTimestampWithRetry`).
///
/// Errors that cannot pass by waiting are returned at once: a closed client, a cluster-id
/// mismatch, an invalid argument. client-go retries every error; here the typed error tells
/// which ones are worth the wait. When `bo` runs out, the error is
/// [`Error::BackoffExhausted`] carrying the last failure.
pub(crate) async fn get_timestamp_with_retry(
    oracle: &dyn Oracle,
    bo: &mut Backoffer,
) -> Result<Timestamp> {
    with_pd_retry(bo, || oracle.get_timestamp()).await
}

/// The minimum timestamp over all TSO keyspace groups, retried as
/// [`get_timestamp_with_retry`] (client-go `getAllTSOKeyspaceGroupMinTSWithRetry`; a PD that
/// does not implement the call answers a gRPC status that is not worth a retry).
pub(crate) async fn get_min_ts_with_retry(
    oracle: &dyn Oracle,
    bo: &mut Backoffer,
) -> Result<Timestamp> {
    with_pd_retry(bo, || oracle.get_all_tso_keyspace_group_min_ts()).await
}

/// Runs `call` until it succeeds, backing off (`pdRPC`) on `bo` after each failure that may
/// pass. Shared by the fetches above and by the lazy creation of a cluster's oracle, whose
/// first fetch fails as any fetch does.
pub(crate) async fn with_pd_retry<T, F, Fut>(bo: &mut Backoffer, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if worth_retrying(&err) => bo.backoff(BackoffKind::PdRpc, err).await?,
            Err(err) => return Err(err),
        }
    }
}

/// Whether a failed fetch may succeed later: PD unreachable or without a leader, a transient
/// gRPC status, or an error PD reported in a response header (such as "not leader" while an
/// election runs).
fn worth_retrying(err: &Error) -> bool {
    err.is_retryable() || matches!(err, Error::Pd { .. })
}
