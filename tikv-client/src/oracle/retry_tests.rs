//! Tests of fetching a timestamp with retries (`oracle/retry.rs`): waiting out an outage,
//! exhausting the budget, retrying PD's own errors and giving up at once on the others.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::retry::{TSO_MAX_BACKOFF, get_timestamp_with_retry};
use super::{Oracle, Timestamp};
use crate::oracle::{LocalOracle, OracleFuture};
use crate::request::{BackoffKind, Backoffer};
use crate::{Error, Result};

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
    let oracle = LocalOracle::with_manual_time(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
    oracle.set_enabled(false);
    let mut bo = Backoffer::new(TSO_MAX_BACKOFF);
    let err = get_timestamp_with_retry(&oracle, &mut bo)
        .await
        .unwrap_err();
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

/// An oracle whose timestamp fetches answer from a script, one entry per call; every other
/// method reports a closed client (these tests never call them).
#[derive(Debug)]
struct Scripted {
    answers: Mutex<VecDeque<Result<Timestamp>>>,
    fetches: Mutex<usize>,
}

impl Scripted {
    fn new(answers: impl IntoIterator<Item = Result<Timestamp>>) -> Scripted {
        Scripted {
            answers: Mutex::new(answers.into_iter().collect()),
            fetches: Mutex::new(0),
        }
    }

    fn fetches(&self) -> usize {
        *self.fetches.lock().unwrap()
    }
}

impl Oracle for Scripted {
    fn get_timestamp(&self) -> OracleFuture<'_, Result<Timestamp>> {
        *self.fetches.lock().unwrap() += 1;
        let next = self.answers.lock().unwrap().pop_front();
        OracleFuture::ready(next.unwrap_or(Err(Error::Closed)))
    }
    fn get_low_resolution_timestamp(&self) -> OracleFuture<'_, Result<Timestamp>> {
        OracleFuture::ready(Err(Error::Closed))
    }
    fn set_low_resolution_update_interval(&self, _: Duration) -> Result<()> {
        Err(Error::Closed)
    }
    fn get_stale_timestamp(&self, _: u64) -> OracleFuture<'_, Result<Timestamp>> {
        OracleFuture::ready(Err(Error::Closed))
    }
    fn is_expired(&self, _: Timestamp, _: u64) -> bool {
        false
    }
    fn until_expired(&self, _: Timestamp, _: u64) -> i64 {
        0
    }
    fn validate_read_ts(&self, _: Timestamp, _: bool) -> OracleFuture<'_, Result<()>> {
        OracleFuture::ready(Err(Error::Closed))
    }
    fn get_external_timestamp(&self) -> OracleFuture<'_, Result<Timestamp>> {
        OracleFuture::ready(Err(Error::Closed))
    }
    fn set_external_timestamp(&self, _: Timestamp) -> OracleFuture<'_, Result<()>> {
        OracleFuture::ready(Err(Error::Closed))
    }
    fn get_all_tso_keyspace_group_min_ts(&self) -> OracleFuture<'_, Result<Timestamp>> {
        OracleFuture::ready(Err(Error::Closed))
    }
    fn close(&self) {}
}

#[tokio::test(start_paused = true)]
async fn errors_that_cannot_pass_are_returned_at_once() {
    let oracle = Scripted::new([Err(Error::Closed), Ok(Timestamp::from_version(9))]);
    let mut bo = Backoffer::new(TSO_MAX_BACKOFF);
    let err = get_timestamp_with_retry(&oracle, &mut bo)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Closed));
    assert_eq!(bo.total_times(), 0, "no backoff for a closed client");
    assert_eq!(oracle.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn errors_pd_reports_are_waited_out() {
    // "not leader" while PD elects one: not retryable as a call, worth waiting for here.
    let not_leader = || Error::Pd {
        message: "not leader".to_owned(),
    };
    assert!(!not_leader().is_retryable());
    let oracle = Scripted::new([
        Err(not_leader()),
        Err(not_leader()),
        Ok(Timestamp::from_version(42)),
    ]);
    let mut bo = Backoffer::new(TSO_MAX_BACKOFF);
    let ts = get_timestamp_with_retry(&oracle, &mut bo).await.unwrap();
    assert_eq!(ts, Timestamp::from_version(42));
    assert_eq!(bo.times_of(BackoffKind::PdRpc), 2);
    assert_eq!(oracle.fetches(), 3);

    // A first success is answered at once, without a backoff.
    let oracle = Scripted::new([Ok(Timestamp::from_version(7))]);
    let mut bo = Backoffer::new(TSO_MAX_BACKOFF);
    assert_eq!(
        get_timestamp_with_retry(&oracle, &mut bo).await.unwrap(),
        Timestamp::from_version(7)
    );
    assert_eq!(bo.times_of(BackoffKind::PdRpc), 0);
}
