//! Fetching a timestamp with retries: what a transaction does to get its start timestamp.
//!
//! The oracle makes one attempt per call (each PD call has the PD client's own deadline); a
//! PD leader change or a brief outage must not fail a transaction that could simply wait a
//! moment. These helpers retry around the oracle with the `pdRPC` backoff, bounded by the
//! caller's backoffer, or by client-go's 15 s TSO budget.
//!
//! Who calls it: transactions and anything else that needs "now" and prefers waiting to
//! failing; callers that want one attempt call [`Oracle::get_timestamp`] directly.
//!
//! Ports client-go `tikv/kv.go` (`KVStore.GetTimestampWithRetry`, `CurrentTimestamp`) and
//! `txnkv/transaction/2pc.go` (`TsoMaxBackoff`).

use std::time::Duration;

use super::{Oracle, Timestamp};
use crate::request::{BackoffKind, Backoffer};
use crate::{Error, Result};

/// The backoff budget of [`current_timestamp`] (client-go `TsoMaxBackoff`, 15 000 ms).
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
    loop {
        match oracle.get_timestamp().await {
            Ok(ts) => return Ok(ts),
            Err(err) if worth_retrying(&err) => bo.backoff(BackoffKind::PdRpc, err).await?,
            Err(err) => return Err(err),
        }
    }
}

/// [`get_timestamp_with_retry`] with a backoffer of its own, [`TSO_MAX_BACKOFF`] in all
/// (client-go `CurrentTimestamp`).
pub(crate) async fn current_timestamp(oracle: &dyn Oracle) -> Result<Timestamp> {
    let mut bo = Backoffer::new(TSO_MAX_BACKOFF);
    get_timestamp_with_retry(oracle, &mut bo).await
}

/// Whether a failed fetch may succeed later: PD unreachable or without a leader, a transient
/// gRPC status, or an error PD reported in a response header (such as "not leader" while an
/// election runs).
fn worth_retrying(err: &Error) -> bool {
    err.is_retryable() || matches!(err, Error::Pd { .. })
}
