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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::SystemTime;

    use super::*;
    use crate::oracle::LocalOracle;

    #[tokio::test(start_paused = true)]
    async fn a_timestamp_comes_once_pd_is_back() {
        let oracle = Arc::new(LocalOracle::with_manual_time(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
        ));
        oracle.set_enabled(false);
        let back = {
            let oracle = oracle.clone();
            tokio::spawn(async move {
                // Paused time: this sleep ends only as the retries below sleep past it.
                tokio::time::sleep(Duration::from_secs(2)).await;
                oracle.set_enabled(true);
            })
        };
        let mut bo = Backoffer::new(TSO_MAX_BACKOFF);
        let ts = get_timestamp_with_retry(oracle.as_ref(), &mut bo)
            .await
            .unwrap();
        assert!(ts.version() > 0);
        assert!(bo.times_of(BackoffKind::PdRpc) >= 1, "it waited for PD");
        back.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_pd_exhausts_the_budget_with_the_last_error() {
        let oracle =
            LocalOracle::with_manual_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
        oracle.set_enabled(false);
        let err = current_timestamp(&oracle).await.unwrap_err();
        match &err {
            Error::BackoffExhausted { last, .. } => {
                assert!(matches!(**last, Error::PdServerTimeout { .. }), "{last:?}");
            }
            other => panic!("expected BackoffExhausted, got {other:?}"),
        }
        assert!(
            err.is_retryable(),
            "the whole operation may be retried later"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn errors_that_cannot_pass_are_returned_at_once() {
        #[derive(Debug)]
        struct Closed;
        impl Oracle for Closed {
            fn get_timestamp(&self) -> crate::oracle::OracleFuture<'_, Result<Timestamp>> {
                crate::oracle::OracleFuture::ready(Err(Error::Closed))
            }
            fn get_low_resolution_timestamp(
                &self,
            ) -> crate::oracle::OracleFuture<'_, Result<Timestamp>> {
                crate::oracle::OracleFuture::ready(Err(Error::Closed))
            }
            fn set_low_resolution_update_interval(&self, _: Duration) -> Result<()> {
                Err(Error::Closed)
            }
            fn get_stale_timestamp(
                &self,
                _: u64,
            ) -> crate::oracle::OracleFuture<'_, Result<Timestamp>> {
                crate::oracle::OracleFuture::ready(Err(Error::Closed))
            }
            fn is_expired(&self, _: Timestamp, _: u64) -> bool {
                false
            }
            fn until_expired(&self, _: Timestamp, _: u64) -> i64 {
                0
            }
            fn validate_read_ts(
                &self,
                _: Timestamp,
                _: bool,
            ) -> crate::oracle::OracleFuture<'_, Result<()>> {
                crate::oracle::OracleFuture::ready(Err(Error::Closed))
            }
            fn get_external_timestamp(&self) -> crate::oracle::OracleFuture<'_, Result<Timestamp>> {
                crate::oracle::OracleFuture::ready(Err(Error::Closed))
            }
            fn set_external_timestamp(
                &self,
                _: Timestamp,
            ) -> crate::oracle::OracleFuture<'_, Result<()>> {
                crate::oracle::OracleFuture::ready(Err(Error::Closed))
            }
            fn get_all_tso_keyspace_group_min_ts(
                &self,
            ) -> crate::oracle::OracleFuture<'_, Result<Timestamp>> {
                crate::oracle::OracleFuture::ready(Err(Error::Closed))
            }
            fn close(&self) {}
        }
        let mut bo = Backoffer::new(TSO_MAX_BACKOFF);
        let err = get_timestamp_with_retry(&Closed, &mut bo)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Closed));
        assert_eq!(bo.total_times(), 0, "no backoff for a closed client");
    }
}
