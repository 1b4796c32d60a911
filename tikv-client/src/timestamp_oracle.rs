//! [`TimestampOracle`]: the public handle to a cluster's timestamp oracle.
//!
//! What it owns: nothing but a shared reference to the [`Cluster`](crate::Cluster)'s lazily
//! made PD oracle (`cluster::ClusterOracle` over `oracle::PdOracle`), and the translation of
//! its crate-private, client-go-shaped calls into typed Rust ones: [`Duration`] for TTLs and
//! staleness, [`Timestamp`] everywhere, [`Result`] instead of sentinel values. The oracle's
//! policy (the cached low-resolution timestamp and its adaptive refresh, read-ts validation
//! sharing one PD fetch, stale-timestamp estimates) stays in `oracle`.
//!
//! Who calls it: applications, through [`Cluster::oracle`](crate::Cluster::oracle). The cluster's
//! own reads use the same oracle to validate their read timestamps, so a timestamp this handle
//! returns is one the cluster accepts.
//!
//! Every method makes the oracle if the cluster has none yet (one timestamp fetched from PD,
//! the refresh task started), retrying that first fetch within client-go's 15 s TSO budget.
//!
//! Ports what client-go users reach through `KVStore.GetOracle()` (`oracle/oracle.go`'s
//! `Oracle` interface, implemented by `oracle/oracles/pd.go`), `KVStore.CurrentTimestamp` and
//! `KVStore.CurrentAllTSOKeyspaceGroupMinTs` (`tikv/kv.go`). Transaction scopes (local TSO) are
//! not supported: every call is in the global scope.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::ClusterOracle;
use crate::oracle::{Oracle, PdOracle, TSO_MAX_BACKOFF, Timestamp, get_min_ts_with_retry};
use crate::request::Backoffer;
use crate::{Error, Result};

/// A handle to a cluster's timestamp oracle (client-go `oracle.Oracle`, as returned by
/// `KVStore.GetOracle`). Get one with [`Cluster::oracle`](crate::Cluster::oracle); clones share
/// the oracle.
///
/// The oracle keeps the last timestamp it fetched from PD and refreshes it in the background
/// (every 2 s by default, more often while stale reads ask for it). That cached timestamp is
/// the low-resolution timestamp, the clock of the lock-expiry checks and the base of stale
/// timestamps. Closing or dropping the cluster stops the refresh.
///
/// ```no_run
/// # async fn example() -> tikv_client::Result<()> {
/// use tikv_client::{Cluster, Config};
///
/// let cluster = Cluster::connect(["127.0.0.1:2379"], Config::default()).await?;
/// let oracle = cluster.oracle();
/// let start_ts = oracle.timestamp().await?;
/// assert!(oracle.low_resolution_timestamp().await? <= oracle.timestamp().await?);
/// # let _ = start_ts;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TimestampOracle {
    oracle: Arc<ClusterOracle>,
}

impl TimestampOracle {
    pub(crate) fn new(oracle: Arc<ClusterOracle>) -> TimestampOracle {
        TimestampOracle { oracle }
    }

    /// The PD oracle, made now if the cluster has none yet.
    async fn pd_oracle(&self) -> Result<&PdOracle> {
        self.oracle
            .get_with_retry(&mut Backoffer::new(TSO_MAX_BACKOFF))
            .await
    }

    /// A fresh timestamp from PD, greater than every timestamp PD allocated before the call
    /// (client-go `KVStore.CurrentTimestamp`, `Oracle.GetTimestamp`). Retried while PD may come
    /// back, within client-go's 15 s TSO budget; the same as
    /// [`Cluster::current_timestamp`](crate::Cluster::current_timestamp).
    ///
    /// Errors: [`Error::BackoffExhausted`] with PD's last error when the budget runs out, and at
    /// once the errors waiting cannot cure ([`Error::Closed`], a cluster-id mismatch).
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// let oracle = cluster.oracle();
    /// let first = oracle.timestamp().await?;
    /// assert!(oracle.timestamp().await? > first);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn timestamp(&self) -> Result<Timestamp> {
        self.oracle.current_timestamp().await
    }

    /// The last timestamp the oracle fetched (client-go `Oracle.GetLowResolutionTimestamp`):
    /// answered from memory, at most about one update interval old, and not unique. Use it
    /// where a recent lower bound of "now" is enough, never as a transaction's start or commit
    /// timestamp.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// let oracle = cluster.oracle();
    /// let recent = oracle.low_resolution_timestamp().await?;
    /// println!("PD's clock was at least {:?}", recent.to_system_time());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn low_resolution_timestamp(&self) -> Result<Timestamp> {
        self.pd_oracle().await?.get_low_resolution_timestamp().await
    }

    /// Sets how often the low-resolution timestamp is refreshed from PD (client-go
    /// `Oracle.SetLowResolutionTimestampUpdateInterval`; default 2 s). The change takes effect
    /// within one previous interval; stale reads may still make the oracle refresh more often.
    ///
    /// Errors: [`Error::InvalidArgument`] for a zero interval.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    ///
    /// cluster
    ///     .oracle()
    ///     .set_low_resolution_update_interval(Duration::from_millis(500))
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_low_resolution_update_interval(&self, interval: Duration) -> Result<()> {
        if interval.is_zero() {
            // Refused before the oracle is made for it.
            return Err(Error::invalid_argument("updateInterval must be > 0"));
        }
        self.pd_oracle()
            .await?
            .set_low_resolution_update_interval(interval)
    }

    /// A timestamp about `back` before PD's current time, to the millisecond (client-go
    /// `Oracle.GetStaleTimestamp`, which counts in whole seconds). It is estimated from the last
    /// fetched timestamp plus the local time elapsed since it arrived, without asking PD.
    ///
    /// It is an estimate, not a proof that data at that time is readable: check it with
    /// [`validate_read_ts`](Self::validate_read_ts) before a stale read.
    ///
    /// Errors: [`Error::InvalidArgument`] when `back` reaches before the Unix epoch.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    ///
    /// let oracle = cluster.oracle();
    /// let read_ts = oracle.stale_timestamp(Duration::from_secs(5)).await?;
    /// oracle.validate_read_ts(read_ts, true).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stale_timestamp(&self, back: Duration) -> Result<Timestamp> {
        let ts = self
            .pd_oracle()
            .await?
            .get_stale_timestamp(back.as_secs())
            .await?;
        // The oracle works in whole seconds; the milliseconds below one are taken off here.
        match ts.physical().checked_sub(u64::from(back.subsec_millis())) {
            Some(physical) if physical > 0 => Ok(Timestamp::compose(physical, 0)),
            _ => Err(Error::invalid_argument(format!(
                "stale timestamp {back:?} back reaches before the Unix epoch"
            ))),
        }
    }

    /// Whether a lock taken at `lock_ts` with time-to-live `ttl` has expired (client-go
    /// `Oracle.IsExpired`), judged by the oracle's cached timestamp: it may answer "not yet"
    /// for up to one update interval after the expiry, never "expired" too early. `ttl` counts
    /// to the millisecond, as TiKV's lock TTLs do.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    ///
    /// let oracle = cluster.oracle();
    /// let lock_ts = oracle.timestamp().await?;
    /// assert!(!oracle.is_expired(lock_ts, Duration::from_secs(3)).await?);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn is_expired(&self, lock_ts: Timestamp, ttl: Duration) -> Result<bool> {
        Ok(self.pd_oracle().await?.is_expired(lock_ts, ttl_ms(ttl)))
    }

    /// How long until that lock expires (client-go `Oracle.UntilExpired`), by the same clock as
    /// [`is_expired`](Self::is_expired); zero once it has.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    ///
    /// let oracle = cluster.oracle();
    /// let lock_ts = oracle.timestamp().await?;
    /// let left = oracle.until_expired(lock_ts, Duration::from_secs(3)).await?;
    /// assert!(left <= Duration::from_secs(3));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn until_expired(&self, lock_ts: Timestamp, ttl: Duration) -> Result<Duration> {
        let ms = self.pd_oracle().await?.until_expired(lock_ts, ttl_ms(ttl));
        Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }

    /// Checks that reading at `read_ts` is safe from the oracle's point of view (client-go
    /// `Oracle.ValidateReadTS`): the same check the cluster makes before sending every read that
    /// carries a timestamp. Whether GC has already removed that snapshot is not checked.
    ///
    /// Answered from memory when `read_ts` is at most the last fetched timestamp; otherwise PD
    /// is asked once (concurrent callers share the fetch).
    ///
    /// Errors: [`Error::FutureTsRead`] when `read_ts` is above every timestamp PD has
    /// allocated; [`Error::LatestStaleRead`] for a stale read at [`Timestamp::MAX`];
    /// [`Error::InvalidArgument`] for a timestamp between `i64::MAX` and `u64::MAX` (a
    /// conversion mistake); PD's error when it had to be asked and could not answer.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// use tikv_client::{Error, Timestamp};
    ///
    /// let oracle = cluster.oracle();
    /// let now = oracle.timestamp().await?;
    /// oracle.validate_read_ts(now, false).await?;
    /// let tomorrow = Timestamp::compose(now.physical() + 86_400_000, 0);
    /// assert!(matches!(
    ///     oracle.validate_read_ts(tomorrow, false).await,
    ///     Err(Error::FutureTsRead { .. })
    /// ));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn validate_read_ts(&self, read_ts: Timestamp, is_stale_read: bool) -> Result<()> {
        self.pd_oracle()
            .await?
            .validate_read_ts(read_ts, is_stale_read)
            .await
    }

    /// The cluster's external timestamp (client-go `Oracle.GetExternalTimestamp`, PD
    /// `GetExternalTimestamp`): a timestamp kept by PD for tools such as TiCDC's consistent
    /// replication; [`Timestamp::ZERO`] when never set. One attempt.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// let external = cluster.oracle().external_timestamp().await?;
    /// println!("external timestamp: {}", external.version());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn external_timestamp(&self) -> Result<Timestamp> {
        self.pd_oracle().await?.get_external_timestamp().await
    }

    /// Sets the cluster's external timestamp (client-go `Oracle.SetExternalTimestamp`, PD
    /// `SetExternalTimestamp`). One attempt.
    ///
    /// Errors: PD's refusal ([`Error::Pd`]) when `ts` is below the external timestamp already
    /// set or above PD's current timestamp.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// let oracle = cluster.oracle();
    /// let now = oracle.timestamp().await?;
    /// oracle.set_external_timestamp(now).await?;
    /// assert_eq!(oracle.external_timestamp().await?, now);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_external_timestamp(&self, ts: Timestamp) -> Result<()> {
        self.pd_oracle().await?.set_external_timestamp(ts).await
    }

    /// The minimum of the current timestamps of all TSO keyspace groups (client-go
    /// `KVStore.CurrentAllTSOKeyspaceGroupMinTs`, `Oracle.GetAllTSOKeyspaceGroupMinTS`, PD
    /// `GetMinTS`): no keyspace's transactions can still start below it. Without TSO
    /// microservices it is a fresh timestamp. Retried as [`timestamp`](Self::timestamp).
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// let min_ts = cluster.oracle().min_timestamp_of_keyspace_groups().await?;
    /// println!("no transaction starts below {}", min_ts.version());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn min_timestamp_of_keyspace_groups(&self) -> Result<Timestamp> {
        let mut bo = Backoffer::new(TSO_MAX_BACKOFF);
        let oracle = self.oracle.get_with_retry(&mut bo).await?;
        get_min_ts_with_retry(oracle, &mut bo).await
    }
}

/// A TTL in the milliseconds the oracle counts in (saturating: no lock lives that long).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    //! Through the public API, against `tikv-mock`'s PD over real gRPC.

    use std::time::Duration;

    use tikv_mock::{ManualClock, MockCluster};

    use crate::{Cluster, Config, Error, Timestamp};

    async fn connect(mock: &MockCluster) -> Cluster {
        Cluster::connect(mock.pd_endpoints(), Config::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn timestamps_increase_and_the_low_resolution_one_trails_them() {
        let mock = MockCluster::builder().start().await.unwrap();
        let cluster = connect(&mock).await;
        let oracle = cluster.oracle();
        let a = oracle.timestamp().await.unwrap();
        let b = oracle.clone().timestamp().await.unwrap();
        assert!(b > a);
        // The cluster's own timestamps come from the same oracle and PD.
        let c = cluster.current_timestamp().await.unwrap();
        assert!(c > b);
        let low = oracle.low_resolution_timestamp().await.unwrap();
        assert!(low >= a && low <= c, "{low:?} not in [{a:?}, {c:?}]");
        assert!(low <= oracle.timestamp().await.unwrap());

        // Above every allocated timestamp after the three above.
        let min = oracle.min_timestamp_of_keyspace_groups().await.unwrap();
        assert!(min > c);

        oracle
            .set_low_resolution_update_interval(Duration::from_millis(500))
            .await
            .unwrap();
        let err = oracle
            .set_low_resolution_update_interval(Duration::ZERO)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        cluster.close();
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn stale_timestamps_are_in_the_past() {
        let mock = MockCluster::builder().start().await.unwrap();
        let cluster = connect(&mock).await;
        let oracle = cluster.oracle();
        let stale = oracle
            .stale_timestamp(Duration::from_millis(1_500))
            .await
            .unwrap();
        let now = oracle.timestamp().await.unwrap();
        assert!(stale < now);
        assert!(now.physical() - stale.physical() >= 1_500);
        assert_eq!(stale.logical(), 0);

        // Before the Unix epoch.
        let back = Duration::from_millis(now.physical() + 60_000);
        let err = oracle.stale_timestamp(back).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn validate_read_ts_refuses_a_future_ts_and_a_latest_stale_read() {
        let mock = MockCluster::builder().start().await.unwrap();
        let cluster = connect(&mock).await;
        let oracle = cluster.oracle();
        let now = oracle.timestamp().await.unwrap();
        oracle.validate_read_ts(now, false).await.unwrap();
        oracle.validate_read_ts(now, true).await.unwrap();
        oracle
            .validate_read_ts(Timestamp::MAX, false)
            .await
            .unwrap();

        let future = Timestamp::compose(now.physical() + 3_600_000, 0);
        match oracle.validate_read_ts(future, false).await {
            Err(Error::FutureTsRead {
                read_ts,
                current_ts,
            }) => {
                assert_eq!(read_ts, future);
                assert!(current_ts > now && current_ts < future);
            }
            other => panic!("expected FutureTsRead, got {other:?}"),
        }
        assert!(matches!(
            oracle.validate_read_ts(Timestamp::MAX, true).await,
            Err(Error::LatestStaleRead)
        ));
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn the_external_timestamp_only_grows_and_never_passes_now() {
        let mock = MockCluster::builder().start().await.unwrap();
        let cluster = connect(&mock).await;
        let oracle = cluster.oracle();
        assert_eq!(oracle.external_timestamp().await.unwrap(), Timestamp::ZERO);

        let earlier = oracle.timestamp().await.unwrap();
        let now = oracle.timestamp().await.unwrap();
        oracle.set_external_timestamp(now).await.unwrap();
        assert_eq!(oracle.external_timestamp().await.unwrap(), now);
        // Another handle sees what PD keeps.
        assert_eq!(cluster.oracle().external_timestamp().await.unwrap(), now);

        let err = oracle.set_external_timestamp(earlier).await.unwrap_err();
        assert!(matches!(err, Error::Pd { .. }), "{err}");
        let ahead = Timestamp::compose(now.physical() + 3_600_000, 0);
        let err = oracle.set_external_timestamp(ahead).await.unwrap_err();
        assert!(matches!(err, Error::Pd { .. }), "{err}");
        assert_eq!(oracle.external_timestamp().await.unwrap(), now);
        mock.shutdown().await;
    }

    #[tokio::test]
    async fn lock_expiry_follows_pds_clock() {
        let mock = MockCluster::builder()
            .manual_clock(ManualClock::new(1_700_000_000_000))
            .start()
            .await
            .unwrap();
        let cluster = connect(&mock).await;
        let oracle = cluster.oracle();
        let ttl = Duration::from_secs(3);
        let lock_ts = oracle.timestamp().await.unwrap();
        assert!(!oracle.is_expired(lock_ts, ttl).await.unwrap());
        assert_eq!(oracle.until_expired(lock_ts, ttl).await.unwrap(), ttl);

        // PD's clock moves; the oracle learns it at its next fetch.
        mock.advance_clock(Duration::from_millis(1_000)).unwrap();
        oracle.timestamp().await.unwrap();
        assert_eq!(
            oracle.until_expired(lock_ts, ttl).await.unwrap(),
            Duration::from_millis(2_000)
        );
        mock.advance_clock(Duration::from_millis(2_000)).unwrap();
        oracle.timestamp().await.unwrap();
        assert!(oracle.is_expired(lock_ts, ttl).await.unwrap());
        assert_eq!(
            oracle.until_expired(lock_ts, ttl).await.unwrap(),
            Duration::ZERO
        );
        assert!(
            !oracle
                .is_expired(lock_ts, ttl + Duration::from_millis(1))
                .await
                .unwrap()
        );
        mock.shutdown().await;
    }
}
