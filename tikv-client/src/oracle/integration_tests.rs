//! End-to-end tests of the PD oracle against `tikv-mock`'s PD over real gRPC.

use std::sync::Arc;
use std::time::Duration;

use crate::oracle::{Oracle, PdOracle, PdOracleOptions, Timestamp};
use crate::pd::PdClient;
use crate::{Config, Error};
use tikv_mock::{ManualClock, MockCluster};

async fn connect(cluster: &MockCluster, config: &Config) -> PdClient {
    PdClient::connect(cluster.pd_endpoints(), config)
        .await
        .unwrap()
}

#[tokio::test]
async fn timestamps_validation_and_external_ts_against_mock_pd() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let config = Config::default();
    let pd = connect(&cluster, &config).await;
    let oracle: Arc<dyn Oracle> = Arc::new(
        PdOracle::new(&pd, PdOracleOptions::default())
            .await
            .unwrap(),
    );

    // Strictly increasing, and the cached timestamp follows every fetch.
    let a = oracle.get_timestamp().await.unwrap();
    let b = oracle.get_timestamp().await.unwrap();
    assert!(b > a);
    assert_eq!(oracle.get_low_resolution_timestamp().await.unwrap(), b);

    // Reads at or below what PD allocated pass; a read in the future does not.
    oracle.validate_read_ts(b, false).await.unwrap();
    oracle.validate_read_ts(b, true).await.unwrap();
    let future = Timestamp::compose(b.physical() + 60_000, 0);
    match oracle.validate_read_ts(future, false).await {
        Err(Error::FutureTsRead {
            read_ts,
            current_ts,
        }) => {
            assert_eq!(read_ts, future);
            assert!(current_ts > b && current_ts < future);
        }
        other => panic!("expected FutureTsRead, got {other:?}"),
    }
    assert!(matches!(
        oracle.validate_read_ts(Timestamp::MAX, true).await,
        Err(Error::LatestStaleRead)
    ));
    oracle
        .validate_read_ts(Timestamp::MAX, false)
        .await
        .unwrap();

    // A timestamp another client got from the same PD is not in the future.
    let other = connect(&cluster, &config).await;
    let elsewhere = other.get_timestamp().await.unwrap();
    assert!(elsewhere > oracle.get_low_resolution_timestamp().await.unwrap());
    oracle.validate_read_ts(elsewhere, false).await.unwrap();

    // Stale timestamps trail PD's clock.
    let stale = oracle.get_stale_timestamp(1).await.unwrap();
    let now = oracle.get_timestamp().await.unwrap();
    assert!(stale < now);
    assert!(now.physical() - stale.physical() >= 1_000);

    // External timestamp: PD keeps it, accepts only growth, rejects one above its TSO.
    assert_eq!(
        oracle.get_external_timestamp().await.unwrap(),
        Timestamp::ZERO
    );
    oracle.set_external_timestamp(now).await.unwrap();
    assert_eq!(oracle.get_external_timestamp().await.unwrap(), now);
    let err = oracle.set_external_timestamp(a).await.unwrap_err();
    assert!(matches!(err, Error::Pd { .. }), "{err}");
    let err = oracle.set_external_timestamp(future).await.unwrap_err();
    assert!(matches!(err, Error::Pd { .. }), "{err}");

    // Without TSO keyspace groups, the minimum is a fresh timestamp.
    let min = oracle.get_all_tso_keyspace_group_min_ts().await.unwrap();
    assert!(min > now);

    oracle.close();
    cluster.shutdown().await;
}

#[tokio::test]
async fn lock_expiry_follows_pd_time() {
    let clock = ManualClock::new(1_700_000_000_000);
    let cluster = MockCluster::builder()
        .manual_clock(clock)
        .start()
        .await
        .unwrap();
    let pd = connect(&cluster, &Config::default()).await;
    let oracle = PdOracle::new(&pd, PdOracleOptions::default())
        .await
        .unwrap();
    let lock_ts = oracle.get_timestamp().await.unwrap();
    assert!(!oracle.is_expired(lock_ts, 3_000));
    assert_eq!(oracle.until_expired(lock_ts, 3_000), 3_000);

    // PD's clock moves; the oracle learns it at its next fetch.
    cluster.advance_clock(Duration::from_millis(3_000)).unwrap();
    assert!(!oracle.is_expired(lock_ts, 3_000));
    oracle.get_timestamp().await.unwrap();
    assert!(oracle.is_expired(lock_ts, 3_000));
    assert_eq!(oracle.until_expired(lock_ts, 3_000), 0);
    assert!(!oracle.is_expired(lock_ts, 3_001));
    cluster.shutdown().await;
}

#[tokio::test]
async fn pd_outage_is_a_typed_error_and_the_cache_survives() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let config = Config::default().with_pd_server_timeout(Duration::from_secs(1));
    let pd = connect(&cluster, &config).await;
    let oracle = PdOracle::new(&pd, PdOracleOptions::default())
        .await
        .unwrap();
    let before = oracle.get_timestamp().await.unwrap();

    cluster.stop_pd().await;
    let err = oracle.get_timestamp().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // The cached timestamp and the checks built on it keep working.
    assert_eq!(oracle.get_low_resolution_timestamp().await.unwrap(), before);
    oracle.validate_read_ts(before, false).await.unwrap();
    assert!(oracle.get_stale_timestamp(1).await.is_ok());
    // A read above the cache needs PD: PD's error, not a verdict.
    let err = oracle
        .validate_read_ts(Timestamp::from_version(before.version() + 1), false)
        .await
        .unwrap_err();
    assert!(!matches!(err, Error::FutureTsRead { .. }), "{err}");

    cluster.start_pd().await.unwrap();
    let after = oracle.get_timestamp().await.unwrap();
    assert!(after > before);
    cluster.shutdown().await;
}
