//! Tests of [`PdOracle`] against the in-memory source, on tokio's paused clock. Ports client-go
//! `oracle/oracles/pd_test.go` (each test names the case it ports).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::testing::MemSource;
use super::{Oracle, PdOracle, PdOracleOptions, Timestamp};
use crate::{Error, Result};

const BASE_MS: u64 = 1_700_000_000_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn v(version: u64) -> Timestamp {
    Timestamp::from_version(version)
}

/// Lets every runnable task run until it blocks.
async fn settle() {
    for _ in 0..32 {
        tokio::task::yield_now().await;
    }
}

/// An oracle without refresh task, seeded with one fetch (client-go `NewPdOracle` with
/// `NoUpdateTS`).
async fn seeded_idle(source: &Arc<MemSource>) -> PdOracle {
    let oracle = PdOracle::new_idle(source.clone());
    oracle.get_timestamp().await.unwrap();
    oracle
}

// client-go TestPDOracle_UntilExpired (and IsExpired against the last timestamp).
#[tokio::test(start_paused = true)]
async fn until_expired_and_is_expired_use_last_ts() {
    let oracle = PdOracle::new_idle(MemSource::counter());
    // Nothing fetched yet: client-go treats every lock as expired.
    assert!(oracle.is_expired(v(1), 1_000));
    assert_eq!(oracle.until_expired(v(1), 1_000), 0);

    oracle.set_last_ts(Timestamp::compose(BASE_MS, 0), Instant::now());
    let lock_ts = v(Timestamp::compose(BASE_MS + 10, 0).version() + 1);
    assert_eq!(oracle.until_expired(lock_ts, 15), 25);
    assert!(!oracle.is_expired(lock_ts, 15));

    // Local time passing does not expire a lock: only a newer fetched timestamp does.
    tokio::time::advance(secs(60)).await;
    assert!(!oracle.is_expired(lock_ts, 15));
    oracle.set_last_ts(Timestamp::compose(BASE_MS + 24, 0), Instant::now());
    assert!(!oracle.is_expired(lock_ts, 15));
    assert_eq!(oracle.until_expired(lock_ts, 15), 1);
    oracle.set_last_ts(Timestamp::compose(BASE_MS + 25, 0), Instant::now());
    assert!(oracle.is_expired(lock_ts, 15));
    assert_eq!(oracle.until_expired(lock_ts, 15), 0);
    assert_eq!(oracle.until_expired(lock_ts, 5), -10);
}

// client-go TestPdOracle_GetStaleTimestamp.
#[tokio::test(start_paused = true)]
async fn stale_timestamp_from_last_ts() {
    let oracle = PdOracle::new_idle(MemSource::counter());
    let start_ms = Timestamp::from_system_time(SystemTime::now()).physical();
    oracle.set_last_ts(Timestamp::compose(start_ms, 0), Instant::now());
    let ts = oracle.get_stale_timestamp(10).await.unwrap();
    assert_eq!(ts, Timestamp::compose(start_ms - 10_000, 0));

    // The estimate moves with local time elapsed since the last timestamp arrived.
    tokio::time::advance(ms(1_500)).await;
    let ts = oracle.get_stale_timestamp(10).await.unwrap();
    assert_eq!(ts, Timestamp::compose(start_ms - 8_500, 0));

    for prev in [1_000_000_000_000, u64::MAX] {
        let err = oracle.get_stale_timestamp(prev).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert!(err.to_string().contains("invalid prevSecond"), "{err}");
    }
}

// client-go GetStaleTimestamp's fallback: with no timestamp yet, it fetches one first.
#[tokio::test(start_paused = true)]
async fn stale_and_low_resolution_timestamps_fetch_when_nothing_cached() {
    let source = MemSource::clocked(BASE_MS);
    let oracle = PdOracle::new_idle(source.clone());
    let ts = oracle.get_stale_timestamp(1).await.unwrap();
    assert_eq!(ts, Timestamp::compose(BASE_MS - 1_000, 0));
    assert_eq!(source.fetches(), 1);

    let oracle = PdOracle::new_idle(source.clone());
    let low = oracle.get_low_resolution_timestamp().await.unwrap();
    assert_eq!(low, source.peek());
    assert_eq!(source.fetches(), 2);
    // Now cached: no further fetch.
    assert_eq!(oracle.get_low_resolution_timestamp().await.unwrap(), low);
    assert_eq!(source.fetches(), 2);
}

// client-go TestPdOracle_SetLowResolutionTimestampUpdateInterval: the refresh follows the
// configured interval, and a change takes effect within one previous interval.
#[tokio::test(start_paused = true)]
async fn low_resolution_update_interval_takes_effect() {
    let source = MemSource::counter();
    let mut oracle = PdOracle::new_idle(source.clone());
    oracle.set_low_resolution_update_interval(ms(50)).unwrap();
    assert!(
        oracle
            .set_low_resolution_update_interval(Duration::ZERO)
            .is_err()
    );

    oracle.get_timestamp().await.unwrap();
    // No refresh task yet: the low-resolution timestamp stays behind fresh ones.
    let low = oracle.get_low_resolution_timestamp().await.unwrap();
    let ts = oracle.get_timestamp().await.unwrap();
    assert!(ts > low);

    oracle.start_refresh_for_test();
    for interval in [ms(50), ms(150), ms(500)] {
        oracle.set_low_resolution_update_interval(interval).unwrap();
        let start = Instant::now();
        let fetched = source.fetches();
        source.wait_fetches(fetched + 2).await;
        let elapsed = start.elapsed();
        assert!(elapsed > interval, "{elapsed:?} for {interval:?}");
        assert!(elapsed <= interval * 3, "{elapsed:?} for {interval:?}");
        settle().await;
        assert_eq!(
            oracle.get_low_resolution_timestamp().await.unwrap(),
            source.peek()
        );
    }
    oracle.close();
}

// The refresh task stops on close and on drop, and the oracle keeps answering after close.
#[tokio::test(start_paused = true)]
async fn refresh_task_stops_on_close_and_drop() {
    let source = MemSource::counter();
    let oracle = PdOracle::with_source(source.clone(), PdOracleOptions::default())
        .await
        .unwrap();
    assert_eq!(source.fetches(), 1);
    let start = Instant::now();
    source.wait_fetches(2).await;
    assert_eq!(start.elapsed(), secs(2));

    oracle.close();
    settle().await;
    tokio::time::sleep(secs(60)).await;
    assert_eq!(source.fetches(), 2);
    assert_eq!(oracle.get_timestamp().await.unwrap(), v(3));
    drop(oracle);

    let oracle = PdOracle::with_source(source.clone(), PdOracleOptions::default())
        .await
        .unwrap();
    assert!(Arc::strong_count(&source) > 1);
    drop(oracle);
    settle().await;
    assert_eq!(
        Arc::strong_count(&source),
        1,
        "the refresh task still holds the source"
    );
}

// A failed refresh is logged and the next tick tries again; a failed first fetch fails the
// constructor (client-go NewPdOracle).
#[tokio::test(start_paused = true)]
async fn refresh_survives_errors_and_constructor_reports_them() {
    let source = MemSource::counter();
    source.set_unavailable(true);
    let err = PdOracle::with_source(source.clone(), PdOracleOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PdServerTimeout { .. }), "{err}");
    let err = PdOracle::with_source(
        source.clone(),
        PdOracleOptions::default().with_update_interval(Duration::ZERO),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("updateInterval must be > 0"),
        "{err}"
    );
    settle().await;
    assert_eq!(Arc::strong_count(&source), 1);

    source.set_unavailable(false);
    let oracle = PdOracle::with_source(source.clone(), PdOracleOptions::default())
        .await
        .unwrap();
    let seeded = oracle.get_low_resolution_timestamp().await.unwrap();
    source.set_unavailable(true);
    source.wait_arrived(2).await;
    settle().await;
    assert_eq!(oracle.get_low_resolution_timestamp().await.unwrap(), seeded);
    assert!(oracle.get_timestamp().await.is_err());
    source.set_unavailable(false);
    source.wait_fetches(2).await;
    settle().await;
    assert!(oracle.get_low_resolution_timestamp().await.unwrap() > seeded);
}

// client-go TestValidateReadTS (run for stale and normal reads).
#[tokio::test(start_paused = true)]
async fn validate_read_ts() {
    for stale in [true, false] {
        let source = MemSource::counter();
        let oracle = PdOracle::with_source(
            source.clone(),
            PdOracleOptions::default().with_update_interval(secs(2)),
        )
        .await
        .unwrap();

        let max = oracle.validate_read_ts(Timestamp::MAX, stale).await;
        if stale {
            assert!(matches!(max, Err(Error::LatestStaleRead)), "{max:?}");
        } else {
            max.unwrap();
        }

        let ts = oracle.get_timestamp().await.unwrap();
        assert!(ts >= v(1));
        oracle.validate_read_ts(v(1), stale).await.unwrap();

        // Above the cached timestamp: fetches one (ts + 1) and passes.
        let ts = oracle.get_timestamp().await.unwrap();
        oracle
            .validate_read_ts(v(ts.version() + 1), stale)
            .await
            .unwrap();
        // ts + 2 passes too, thanks to the one retry.
        let ts = oracle.get_timestamp().await.unwrap();
        oracle
            .validate_read_ts(v(ts.version() + 2), stale)
            .await
            .unwrap();
        // ts + 3 does not: two fetches reach only ts + 2.
        let ts = oracle.get_timestamp().await.unwrap();
        let err = oracle
            .validate_read_ts(v(ts.version() + 3), stale)
            .await
            .unwrap_err();
        match err {
            Error::FutureTsRead {
                read_ts,
                current_ts,
            } => {
                assert_eq!(read_ts, Timestamp::from(ts.version() + 3));
                assert_eq!(current_ts, Timestamp::from(ts.version() + 2));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            !Error::FutureTsRead {
                read_ts: Timestamp::ZERO,
                current_ts: Timestamp::ZERO
            }
            .is_retryable()
        );

        // Another client allocated timestamps meanwhile: the same kind of read ts now passes.
        let ts = oracle.get_timestamp().await.unwrap();
        source.skip(2);
        oracle
            .validate_read_ts(v(ts.version() + 3), stale)
            .await
            .unwrap();
    }
}

// client-go EnableTSValidation = false: nothing is checked.
#[tokio::test(start_paused = true)]
async fn validation_can_be_switched_off() {
    let source = MemSource::counter();
    let oracle = PdOracle::with_source(
        source.clone(),
        PdOracleOptions::default().with_ts_validation(false),
    )
    .await
    .unwrap();
    oracle.validate_read_ts(v(1_000), false).await.unwrap();
    oracle.validate_read_ts(Timestamp::MAX, true).await.unwrap();
    assert_eq!(source.arrivals(), 1);
    oracle.set_ts_validation(true);
    assert!(oracle.validate_read_ts(v(1_000), false).await.is_err());
    let err = oracle
        .validate_read_ts(v(i64::MAX as u64), false)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    // A failing PD fails the validation with PD's error.
    source.set_unavailable(true);
    let err = oracle.validate_read_ts(v(2_000), false).await.unwrap_err();
    assert!(matches!(err, Error::PdServerTimeout { .. }), "{err}");
}

fn spawn_validate(oracle: &Arc<PdOracle>, read_ts: u64, stale: bool) -> JoinHandle<Result<()>> {
    let oracle = oracle.clone();
    tokio::spawn(async move { oracle.validate_read_ts(v(read_ts), stale).await })
}

// client-go TestValidateReadTSForStaleReadReusingGetTSResult: concurrent validations share one
// PD fetch; cancelling one of them (even the one that started the fetch) does not disturb the
// others.
#[tokio::test(start_paused = true)]
async fn concurrent_validations_share_one_fetch() {
    let source = MemSource::counter();
    let oracle = Arc::new(seeded_idle(&source).await);
    oracle.skip_validation_retry();

    let cancel_indices = [None, None, Some(0), Some(1)];
    for (case, ts) in [100u64, 200, 300, 400].into_iter().enumerate() {
        // `ts` is what the next fetch returns: read timestamps up to it pass, above it fail.
        let cancel = cancel_indices[case];
        source.before_alloc.close();
        let fetches_before = source.fetches();
        let arrivals_before = source.arrivals();

        let read_tss = [ts - 2, ts + 2, ts - 1, ts + 1, ts];
        let expected_ok = [true, false, true, false, true];
        let tasks: Vec<_> = read_tss
            .iter()
            .map(|&read_ts| spawn_validate(&oracle, read_ts, true))
            .collect();
        source.wait_arrived(arrivals_before + 1).await;
        settle().await;
        assert!(tasks.iter().all(|t| !t.is_finished()), "case {case}");
        assert_eq!(source.arrivals(), arrivals_before + 1, "one fetch for all");

        if let Some(i) = cancel {
            tasks[i].abort();
            settle().await;
            assert!(tasks[i].is_finished());
            for (j, task) in tasks.iter().enumerate() {
                assert!(
                    j == i || !task.is_finished(),
                    "case {case}: task {j} finished"
                );
            }
        }

        source.set_last(ts - 1);
        source.before_alloc.open();
        for (i, task) in tasks.into_iter().enumerate() {
            let joined = task.await;
            if Some(i) == cancel {
                assert!(joined.unwrap_err().is_cancelled());
                continue;
            }
            let result = joined.unwrap();
            if expected_ok[i] {
                result.unwrap_or_else(|e| panic!("case {case}, task {i}: {e}"));
            } else {
                match result {
                    Err(Error::FutureTsRead {
                        read_ts,
                        current_ts,
                    }) => {
                        assert_eq!(read_ts, Timestamp::from(read_tss[i]));
                        assert_eq!(current_ts, Timestamp::from(ts));
                    }
                    other => panic!("case {case}, task {i}: {other:?}"),
                }
            }
        }
        assert_eq!(source.fetches(), fetches_before + 1, "case {case}");
    }
}

// client-go TestValidateReadTSForNormalReadDoNotAffectUpdateInterval.
#[tokio::test(start_paused = true)]
async fn normal_read_validation_does_not_adapt_interval() {
    let source = MemSource::counter();
    let oracle = seeded_idle(&source).await;

    let ts = oracle.get_timestamp().await.unwrap().version();
    oracle.validate_read_ts(v(ts), false).await.unwrap();
    assert_eq!(oracle.try_take_shrink_request(), None);

    // Fetches ts + 1, retries, fetches ts + 2: passes.
    oracle.validate_read_ts(v(ts + 2), false).await.unwrap();
    assert_eq!(oracle.try_take_shrink_request(), None);

    // Fetches ts + 3 and ts + 4: fails.
    assert!(oracle.validate_read_ts(v(ts + 5), false).await.is_err());
    assert_eq!(oracle.try_take_shrink_request(), None);

    // Fetches ts + 5: passes.
    oracle.validate_read_ts(v(ts + 5), false).await.unwrap();
    assert_eq!(oracle.try_take_shrink_request(), None);

    // The same kind of read as a stale read does ask for a shorter interval.
    oracle.validate_read_ts(v(ts + 6), true).await.unwrap();
    assert_eq!(oracle.try_take_shrink_request(), Some(ms(1)));
}

// client-go TestSetLastTSAlwaysPushTS: after a fetch returns, the last timestamp is at least
// that fetch's, however fetches interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_ts_is_always_pushed() {
    let source = MemSource::counter();
    let oracle = Arc::new(seeded_idle(&source).await);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let oracle = oracle.clone();
            tokio::spawn(async move {
                for _ in 0..2_000 {
                    let ts = oracle.get_timestamp().await.unwrap();
                    let last = oracle.last_ts().unwrap();
                    assert!(last >= ts, "{last:?} < {ts:?}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(oracle.last_ts(), Some(source.peek()));
}

// client-go TestValidateReadTSFromDifferentSource: a read timestamp allocated by another client
// while a shared fetch was in flight is not rejected because of that older shared result.
#[tokio::test(start_paused = true)]
async fn validate_read_ts_from_different_source() {
    let source = MemSource::counter();
    let oracle = Arc::new(seeded_idle(&source).await);
    let ts = oracle.get_timestamp().await.unwrap();
    assert_eq!(oracle.get_low_resolution_timestamp().await.unwrap(), ts);

    // The first validation's fetch allocates ts + 1 and is held before it returns.
    source.after_alloc.close();
    let first = spawn_validate(&oracle, ts.version() + 1, false);
    source.wait_fetches(3).await;
    settle().await;
    assert!(!first.is_finished());

    // Another client gets a newer timestamp meanwhile.
    source.skip(10);
    let next_ts = source.allocate();
    assert_eq!(next_ts.version(), ts.version() + 12);
    // The cached timestamp has not moved (client-go holds its fetch after caching, so it sees
    // ts + 1 here; the in-memory source holds it before).
    assert_eq!(oracle.get_low_resolution_timestamp().await.unwrap(), ts);

    // The second validation joins the fetch in flight, whose result is older than its ts.
    let second = spawn_validate(&oracle, next_ts.version(), false);
    settle().await;
    assert!(!first.is_finished());
    assert!(!second.is_finished());
    assert_eq!(
        source.arrivals(),
        3,
        "the second validation joined the first one's fetch"
    );

    source.after_alloc.open();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
}

// The adaptive interval in action: a stale read with a staleness below the interval makes the
// refresh task tick faster at once; after five quiet minutes it recovers.
#[tokio::test(start_paused = true)]
async fn stale_reads_shrink_the_refresh_interval_and_it_recovers() {
    let source = MemSource::clocked(BASE_MS);
    let start = Instant::now();
    let oracle = PdOracle::with_source(source.clone(), PdOracleOptions::default())
        .await
        .unwrap();
    source.wait_fetches(2).await;
    assert_eq!(start.elapsed(), secs(2));
    assert_eq!(oracle.current_update_interval(), secs(2));

    // A stale read 1 s behind, validated from the cache: the interval drops to 900 ms, counted
    // from now (the cache is fresh, so no immediate refresh).
    let read_ts = Timestamp::compose(BASE_MS + 1_000, 0);
    oracle.validate_read_ts(read_ts, true).await.unwrap();
    source.wait_fetches(3).await;
    assert_eq!(start.elapsed(), ms(2_900));
    assert_eq!(oracle.current_update_interval(), ms(900));

    // 800 ms later, a read 700 ms behind is above the cache: validation fetches, and the
    // interval drops to 600 ms with an immediate refresh, as the cache is already older.
    tokio::time::sleep(ms(800)).await;
    let read_ts = Timestamp::compose(BASE_MS + 3_000, 0);
    oracle.validate_read_ts(read_ts, true).await.unwrap();
    assert_eq!(source.fetches(), 4);
    source.wait_fetches(5).await;
    assert_eq!(start.elapsed(), ms(3_700));
    assert_eq!(oracle.current_update_interval(), ms(600));
    source.wait_fetches(6).await;
    assert_eq!(start.elapsed(), ms(4_300));

    // No more short reads: after the delay the interval grows back to the configured one.
    tokio::time::sleep(secs(7 * 60)).await;
    assert_eq!(oracle.current_update_interval(), secs(2));
}

// External timestamp and GetMinTS go to the source.
#[tokio::test(start_paused = true)]
async fn external_timestamp_and_min_ts_pass_through() {
    let source = MemSource::counter();
    let oracle = seeded_idle(&source).await;
    assert_eq!(
        oracle.get_external_timestamp().await.unwrap(),
        Timestamp::ZERO
    );
    oracle.set_external_timestamp(v(1)).await.unwrap();
    assert_eq!(oracle.get_external_timestamp().await.unwrap(), v(1));
    let err = oracle.set_external_timestamp(v(1_000)).await.unwrap_err();
    assert!(matches!(err, Error::Pd { .. }), "{err}");

    let min = oracle.get_all_tso_keyspace_group_min_ts().await.unwrap();
    assert_eq!(min, source.peek());
    // GetMinTS does not move the cached timestamp.
    assert!(oracle.last_ts().unwrap() < min);
}

// An `Arc<dyn Oracle>` works, and answers from the cache without allocating a future.
#[tokio::test(start_paused = true)]
async fn usable_as_trait_object() {
    let source = MemSource::counter();
    let oracle: Arc<dyn Oracle> = Arc::new(seeded_idle(&source).await);
    let ts = oracle.get_timestamp().await.unwrap();
    let fut = oracle.validate_read_ts(ts, false);
    assert!(format!("{fut:?}").contains("ready"));
    fut.await.unwrap();
    assert!(format!("{oracle:?}").contains("PdOracle"));
    oracle.close();
}
