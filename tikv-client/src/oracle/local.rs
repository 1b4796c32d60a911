//! [`LocalOracle`]: an oracle on the local clock, for tests.
//!
//! Timestamps come from the system clock, or from a manual clock that a test sets and advances,
//! so that lock expiry can be tested without sleeping. It can also be switched off to make
//! every fetch fail, as if PD were unreachable. Folds client-go's `localOracle` (time hook) and
//! `MockOracle` (offset, enable/disable) into one type; ports `oracle/oracles/local.go`,
//! `local_external_timestamp.go` and `mock.go`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::pd::{check_read_ts_range, until_expired_ms};
use super::{Oracle, OracleFuture, Timestamp};
use crate::{Error, Result};

#[derive(Debug)]
struct Clock {
    /// The last timestamp handed out, so that the next one is strictly greater.
    last: u64,
    /// `Some` once a test took control of time.
    manual: Option<SystemTime>,
    /// Added to the system clock (client-go `MockOracle.AddOffset`).
    offset: Duration,
    enabled: bool,
}

/// An [`Oracle`] whose timestamps come from the local clock. For tests: a single process has no
/// cluster-wide order of time, so never use it against a shared cluster.
///
/// Timestamps are strictly increasing even within one millisecond or when the clock is set
/// back. The low-resolution timestamp is a fresh one; stale timestamps and lock expiry use the
/// same clock; [`validate_read_ts`](Oracle::validate_read_ts) only rejects the out-of-range
/// values (`u64::MAX` for a stale read, values at or above `i64::MAX`), like client-go's.
#[derive(Debug)]
pub(crate) struct LocalOracle {
    clock: Mutex<Clock>,
    external: AtomicU64,
}

impl Default for LocalOracle {
    fn default() -> Self {
        LocalOracle::new()
    }
}

impl LocalOracle {
    /// An oracle on the system clock.
    pub(crate) fn new() -> Self {
        LocalOracle {
            clock: Mutex::new(Clock {
                last: 0,
                manual: None,
                offset: Duration::ZERO,
                enabled: true,
            }),
            external: AtomicU64::new(0),
        }
    }

    /// An oracle on a manual clock that starts at `now` and moves only by
    /// [`set_time`](Self::set_time) and [`advance`](Self::advance).
    pub(crate) fn with_manual_time(now: SystemTime) -> Self {
        let oracle = LocalOracle::new();
        oracle.set_time(now);
        oracle
    }

    fn lock(&self) -> MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the clock to `now` and stops following the system clock (client-go
    /// `SetOracleHookCurrentTime`). Timestamps stay strictly increasing if it goes back.
    pub(crate) fn set_time(&self, now: SystemTime) {
        self.lock().manual = Some(now);
    }

    /// Moves the clock forward: the manual clock if one is set, otherwise the offset added to
    /// the system clock (client-go `MockOracle.AddOffset`).
    pub(crate) fn advance(&self, by: Duration) {
        let mut clock = self.lock();
        match clock.manual.as_mut() {
            Some(t) => *t += by,
            None => clock.offset += by,
        }
    }

    /// Switches the oracle on or off (client-go `MockOracle.Enable` / `Disable`). While off,
    /// fetching a timestamp fails with [`Error::PdServerTimeout`], as if PD were unreachable.
    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.lock().enabled = enabled;
    }

    fn now(clock: &Clock) -> SystemTime {
        clock
            .manual
            .unwrap_or_else(|| SystemTime::now() + clock.offset)
    }

    fn current_time(&self) -> SystemTime {
        LocalOracle::now(&self.lock())
    }

    fn next_timestamp(&self) -> Result<Timestamp> {
        let mut clock = self.lock();
        if !clock.enabled {
            return Err(disabled());
        }
        let now = Timestamp::from_system_time(LocalOracle::now(&clock)).version();
        let ts = now.max(clock.last.saturating_add(1));
        clock.last = ts;
        Ok(Timestamp::from_version(ts))
    }

    fn set_external(&self, ts: Timestamp) -> Result<()> {
        let current = self.next_timestamp()?;
        if ts > current {
            return Err(Error::invalid_argument(
                "external timestamp is greater than global tso",
            ));
        }
        let new = ts.version();
        let mut external = self.external.load(Ordering::Acquire);
        loop {
            if external > new {
                return Err(Error::invalid_argument(
                    "cannot decrease the external timestamp",
                ));
            }
            if external == new {
                return Ok(());
            }
            match self.external.compare_exchange_weak(
                external,
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => external = actual,
            }
        }
    }
}

fn disabled() -> Error {
    Error::PdServerTimeout {
        message: "local oracle is disabled".to_owned(),
    }
}

impl Oracle for LocalOracle {
    fn get_timestamp(&self) -> OracleFuture<'_, Result<Timestamp>> {
        OracleFuture::ready(self.next_timestamp())
    }

    fn get_low_resolution_timestamp(&self) -> OracleFuture<'_, Result<Timestamp>> {
        OracleFuture::ready(self.next_timestamp())
    }

    fn set_low_resolution_update_interval(&self, interval: Duration) -> Result<()> {
        if interval.is_zero() {
            return Err(Error::invalid_argument("updateInterval must be > 0"));
        }
        Ok(())
    }

    fn get_stale_timestamp(&self, prev_seconds: u64) -> OracleFuture<'_, Result<Timestamp>> {
        let now = self.current_time();
        let result = now
            .checked_sub(Duration::from_secs(prev_seconds))
            .filter(|t| *t > SystemTime::UNIX_EPOCH)
            .map(Timestamp::from_system_time)
            .ok_or_else(|| Error::invalid_argument(format!("invalid prevSecond {prev_seconds}")));
        OracleFuture::ready(result)
    }

    fn is_expired(&self, lock_ts: Timestamp, ttl_ms: u64) -> bool {
        let expire = lock_ts.to_system_time() + Duration::from_millis(ttl_ms);
        self.current_time() >= expire
    }

    fn until_expired(&self, lock_ts: Timestamp, ttl_ms: u64) -> i64 {
        let now_ms = Timestamp::from_system_time(self.current_time()).physical();
        until_expired_ms(lock_ts, ttl_ms, now_ms)
    }

    fn validate_read_ts(
        &self,
        read_ts: Timestamp,
        is_stale_read: bool,
    ) -> OracleFuture<'_, Result<()>> {
        OracleFuture::ready(check_read_ts_range(read_ts, is_stale_read).unwrap_or(Ok(())))
    }

    fn get_external_timestamp(&self) -> OracleFuture<'_, Result<Timestamp>> {
        OracleFuture::ready(Ok(Timestamp::from_version(
            self.external.load(Ordering::Acquire),
        )))
    }

    fn set_external_timestamp(&self, ts: Timestamp) -> OracleFuture<'_, Result<()>> {
        OracleFuture::ready(self.set_external(ts))
    }

    fn get_all_tso_keyspace_group_min_ts(&self) -> OracleFuture<'_, Result<Timestamp>> {
        let clock = self.lock();
        let result = if clock.enabled {
            Ok(Timestamp::from_system_time(LocalOracle::now(&clock)))
        } else {
            Err(disabled())
        };
        OracleFuture::ready(result)
    }

    fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    // client-go local_test.go TestLocalOracle: timestamps are unique even when many are taken
    // within one millisecond.
    #[tokio::test]
    async fn local_oracle_timestamps_are_unique() {
        let oracle = LocalOracle::new();
        let mut seen = HashSet::new();
        let mut prev = Timestamp::ZERO;
        for _ in 0..100_000 {
            let ts = oracle.get_timestamp().await.unwrap();
            assert!(ts > prev);
            prev = ts;
            seen.insert(ts);
        }
        assert_eq!(seen.len(), 100_000);
        // Also strictly increasing on a manual clock that does not move.
        let manual = LocalOracle::with_manual_time(SystemTime::now());
        let a = manual.get_timestamp().await.unwrap();
        let b = manual.get_timestamp().await.unwrap();
        assert!(b > a);
    }

    // client-go local_test.go TestIsExpired.
    #[tokio::test]
    async fn local_oracle_is_expired() {
        let start = SystemTime::now();
        let oracle = LocalOracle::with_manual_time(start);
        let ts = oracle.get_timestamp().await.unwrap();
        oracle.set_time(start + Duration::from_millis(10));
        assert!(oracle.is_expired(ts, 5));
        assert!(!oracle.is_expired(ts, 200));
    }

    // client-go local_test.go TestLocalOracle_UntilExpired.
    #[tokio::test]
    async fn local_oracle_until_expired() {
        let start = SystemTime::now();
        let oracle = LocalOracle::with_manual_time(start);
        let ts = oracle.get_timestamp().await.unwrap();
        oracle.set_time(start + Duration::from_millis(10));
        assert_eq!(oracle.until_expired(ts, 6), -4);
        assert_eq!(oracle.until_expired(ts, 14), 4);
        oracle.advance(Duration::from_millis(4));
        assert_eq!(oracle.until_expired(ts, 14), 0);
        assert!(oracle.is_expired(ts, 14));
    }

    // client-go mock.go semantics (used by store_test.go TestOracle): a disabled oracle fails
    // with a retryable error, and works again once enabled; the offset moves its clock.
    #[tokio::test]
    async fn local_oracle_disable_enable_and_offset() {
        let oracle = LocalOracle::new();
        oracle.set_enabled(false);
        let err = oracle.get_timestamp().await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(oracle.get_all_tso_keyspace_group_min_ts().await.is_err());
        oracle.set_enabled(true);
        let before = oracle.get_timestamp().await.unwrap();
        oracle.advance(Duration::from_secs(3600));
        let after = oracle.get_timestamp().await.unwrap();
        assert!(after.physical() >= before.physical() + 3_600_000);
        let min = oracle.get_all_tso_keyspace_group_min_ts().await.unwrap();
        assert!(min.physical() >= before.physical() + 3_600_000);
    }

    // client-go local_external_timestamp.go: grows only, never above the current timestamp.
    #[tokio::test]
    async fn local_oracle_external_timestamp() {
        let oracle = LocalOracle::with_manual_time(SystemTime::now());
        assert_eq!(
            oracle.get_external_timestamp().await.unwrap(),
            Timestamp::ZERO
        );
        let ts = oracle.get_timestamp().await.unwrap();
        oracle.set_external_timestamp(ts).await.unwrap();
        oracle.set_external_timestamp(ts).await.unwrap();
        assert_eq!(oracle.get_external_timestamp().await.unwrap(), ts);
        let lower = Timestamp::from_version(ts.version() - 1);
        let err = oracle.set_external_timestamp(lower).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot decrease the external timestamp")
        );
        let future = Timestamp::compose(ts.physical() + 60_000, 0);
        let err = oracle.set_external_timestamp(future).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("external timestamp is greater than global tso")
        );
    }

    #[tokio::test]
    async fn local_oracle_stale_and_validation() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let oracle = LocalOracle::with_manual_time(start);
        let stale = oracle.get_stale_timestamp(10).await.unwrap();
        assert_eq!(stale.physical(), (1_000_000 - 10) * 1000);
        let err = oracle.get_stale_timestamp(2_000_000).await.unwrap_err();
        assert!(err.to_string().contains("invalid prevSecond"));
        assert!(oracle.get_stale_timestamp(u64::MAX).await.is_err());

        assert!(oracle.validate_read_ts(Timestamp::MAX, false).await.is_ok());
        assert!(matches!(
            oracle.validate_read_ts(Timestamp::MAX, true).await,
            Err(Error::LatestStaleRead)
        ));
        assert!(oracle.validate_read_ts(stale, true).await.is_ok());
    }
}
