//! Tests of the PD client against `tikv-mock`'s PD over real gRPC: the crate-internal queries
//! (the [`RegionSource`] contract, stores), discovery and failover, and the TSO batcher's
//! internals. The public API is exercised again from outside in `tests/pd.rs`.
//!
//! Ported cases (tikv/pd `client/` and `tests/integrations/client/`, client-go
//! `internal/locate`): the cluster-id check of `TestClientLeaderChange`-style setups and
//! `initClusterID`; `TestTSOFollowerProxy`'s "every caller gets a distinct, increasing ts";
//! `TestGetTsoByFollowerForwarding`'s stream recreation after a failure (here: the stream
//! broken by a fault, not by a network partition); `TestLeaderTransfer` /
//! `TestLeaderTransferAndMoveCluster` (requests keep working while the leader moves);
//! `TestScanRegions`, `TestBatchScanRegions` and client-go's `batchScanRegionsFallback`;
//! `TestGetStore`'s "unknown store is nil".

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tikv_mock::{Action, FaultRule, ManualClock, Matcher, MockCluster, Times};

use super::*;
use crate::Config;
use crate::Error;
use crate::error::GrpcCode;

fn config(timeout_secs: u64) -> Config {
    let mut config = Config::default();
    config.pd_client.pd_server_timeout = Duration::from_secs(timeout_secs);
    config
}

async fn connect(cluster: &MockCluster) -> PdClient {
    PdClient::connect(cluster.pd_endpoints(), &config(1))
        .await
        .unwrap()
}

/// An address nothing listens on.
async fn dead_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test]
async fn connects_past_a_dead_endpoint_and_finds_the_leader() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut endpoints = vec![dead_endpoint().await];
    endpoints.extend(cluster.pd_endpoints());
    let pd = PdClient::connect(&endpoints, &config(1)).await.unwrap();
    assert_eq!(pd.cluster_id(), cluster.cluster_id());
    let leader = format!("http://{}", cluster.pd_endpoints()[0]);
    assert_eq!(pd.leader_url().as_deref(), Some(leader.as_str()));
    assert_eq!(pd.member_urls(), vec![leader]);
    assert!(pd.get_timestamp().await.unwrap() > crate::Timestamp::ZERO);
}

#[tokio::test]
async fn nothing_reachable_is_a_typed_connect_error() {
    let endpoints = [dead_endpoint().await, dead_endpoint().await];
    let err = PdClient::connect(&endpoints, &config(1)).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err.is_retryable());
    let err = PdClient::connect(Vec::<String>::new(), &config(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
}

#[tokio::test]
async fn endpoints_of_two_clusters_are_refused() {
    let a = MockCluster::builder()
        .cluster_id(1111)
        .start()
        .await
        .unwrap();
    let other = MockCluster::builder()
        .cluster_id(2222)
        .start()
        .await
        .unwrap();
    let endpoints = [a.pd_endpoints()[0].clone(), other.pd_endpoints()[0].clone()];
    match PdClient::connect(&endpoints, &config(1)).await {
        Err(Error::ClusterIdMismatch { expected, actual }) => {
            assert_eq!((expected, actual), (1111, 2222));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_member_of_another_cluster_is_never_used() {
    // The client joined cluster A; the only endpoint left to ask now serves cluster B (a PD
    // redeployed on the same address). Calls must fail typed, never talk to B as if it were A.
    let a = MockCluster::builder()
        .cluster_id(1111)
        .start()
        .await
        .unwrap();
    let addr: std::net::SocketAddr = a.pd_endpoints()[0].parse().unwrap();
    let pd = connect(&a).await;
    a.shutdown().await;
    let b = MockCluster::builder()
        .cluster_id(2222)
        .pd_addr(addr)
        .start()
        .await
        .unwrap();
    let err = pd.region_by_key(b"k", false).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::ClusterIdMismatch {
                expected: 1111,
                actual: 2222
            }
        ),
        "{err:?}"
    );
    let err = pd.get_timestamp().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::ClusterIdMismatch { .. } | Error::PdServerTimeout { .. }
        ),
        "{err:?}"
    );
    drop(b);
}

#[tokio::test]
async fn region_queries_follow_split_merge_and_leader_transfer() {
    let cluster = MockCluster::builder().stores(3).start().await.unwrap();
    let pd = connect(&cluster).await;
    let source: &dyn RegionSource = &pd;

    let whole = source.get_region(b"m", false).await.unwrap().unwrap();
    assert!(whole.region.start_key.is_empty() && whole.region.end_key.is_empty());
    assert!(whole.leader.is_some());

    cluster.split_raw(["g", "p"]).unwrap();
    let middle = source.get_region(b"m", false).await.unwrap().unwrap();
    assert_eq!(middle.region.start_key, b("g"));
    assert_eq!(middle.region.end_key, b("p"));
    let prev = source.get_prev_region(b"g", false).await.unwrap().unwrap();
    assert_eq!(prev.region.end_key, b("g"));
    let by_id = source
        .get_region_by_id(middle.region.id, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id.region, middle.region);
    assert!(
        source
            .get_region_by_id(999_999, false)
            .await
            .unwrap()
            .is_none()
    );

    // The leader moves: PD reports the new one.
    let leader_store = middle.leader.as_ref().unwrap().store_id;
    let target = cluster
        .store_ids()
        .into_iter()
        .find(|s| *s != leader_store)
        .unwrap();
    cluster.transfer_leader(middle.region.id, target).unwrap();
    let moved = source.get_region(b"m", false).await.unwrap().unwrap();
    assert_eq!(moved.leader.unwrap().store_id, target);

    // A merge bumps the epoch and widens the range.
    let last = source.get_region(b"z", false).await.unwrap().unwrap();
    cluster.merge(last.region.id, middle.region.id).unwrap();
    let merged = source.get_region(b"z", false).await.unwrap().unwrap();
    assert_eq!(merged.region.id, middle.region.id);
    assert_eq!(merged.region.start_key, b("g"));
    assert!(merged.region.end_key.is_empty());
    assert!(
        merged.region.region_epoch.unwrap().version > middle.region.region_epoch.unwrap().version
    );
}

#[tokio::test]
async fn batch_scan_regions_and_its_fallback_agree() {
    let cluster = MockCluster::builder().start().await.unwrap();
    cluster.split_raw(["b", "d", "f", "h"]).unwrap();
    let pd = connect(&cluster).await;
    let ranges = vec![(b("a"), b("c")), (b("e"), b("g")), (b("i"), Bytes::new())];
    let ids = |regions: &[RegionInfo]| -> Vec<Bytes> {
        regions.iter().map(|r| r.region.start_key.clone()).collect()
    };
    let batched = pd.batch_scan_regions(&ranges, 100, false).await.unwrap();
    assert_eq!(ids(&batched), vec![b(""), b("b"), b("d"), b("f"), b("h")]);
    let limited = pd.batch_scan_regions(&ranges, 2, false).await.unwrap();
    assert_eq!(ids(&limited), vec![b(""), b("b")]);
    assert!(
        pd.batch_scan_regions(&ranges, 0, false)
            .await
            .unwrap()
            .is_empty()
    );

    // A PD without BatchScanRegions answers UNIMPLEMENTED: ScanRegions per range instead.
    cluster.add_fault(FaultRule::new(
        Matcher::pd().command("BatchScanRegions"),
        Action::status(tonic::Code::Unimplemented, ""),
    ));
    let fallback = pd.batch_scan_regions(&ranges, 100, false).await.unwrap();
    assert_eq!(ids(&fallback), ids(&batched));
    let fallback = pd.batch_scan_regions(&ranges, 3, false).await.unwrap();
    assert_eq!(ids(&fallback), vec![b(""), b("b"), b("d")]);
    // A range inside the region found for the previous one costs no extra scan.
    let covered = vec![(b("a"), b("a1")), (b("a2"), b("a3"))];
    let found = pd.batch_scan_regions(&covered, 10, false).await.unwrap();
    assert_eq!(ids(&found), vec![b("")]);
}

#[tokio::test]
async fn stores_known_unknown_and_all() {
    let cluster = MockCluster::builder().stores(3).start().await.unwrap();
    let pd = connect(&cluster).await;
    let ids = cluster.store_ids();
    let store = pd.get_store(ids[0]).await.unwrap().unwrap();
    assert_eq!(store.id, ids[0]);
    assert_eq!(Some(store.address), cluster.store_address(ids[0]));
    assert!(pd.get_store(424_242).await.unwrap().is_none());
    let all = pd.get_all_stores(true).await.unwrap();
    let mut all_ids: Vec<u64> = all.iter().map(|s| s.id).collect();
    all_ids.sort_unstable();
    assert_eq!(all_ids, ids);
}

#[tokio::test]
async fn pd_errors_keep_pd_text_and_other_statuses_stay_grpc() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let pd = connect(&cluster).await;
    cluster.add_fault(
        FaultRule::new(
            Matcher::pd().command("GetAllStores"),
            Action::status(tonic::Code::PermissionDenied, "nope"),
        )
        .times(Times::Once),
    );
    match pd.get_all_stores(false).await {
        Err(Error::Grpc { code, message, .. }) => {
            assert_eq!(code, GrpcCode::PermissionDenied);
            assert_eq!(message, "nope");
        }
        other => panic!("{other:?}"),
    }
    // A transient UNAVAILABLE (a leader change) is retried within the deadline.
    cluster.add_fault(
        FaultRule::new(
            Matcher::pd().command("GetAllStores"),
            Action::status(tonic::Code::Unavailable, "not leader"),
        )
        .times(Times::N(2)),
    );
    assert_eq!(pd.get_all_stores(false).await.unwrap().len(), 3);
}

#[tokio::test]
async fn tso_batch_is_split_exactly_as_pd_client_does() {
    // With the clock standing still every timestamp has the same physical part, so the
    // logical parts handed out must be exactly 1..=n, each once.
    let clock = ManualClock::new(1_700_000_000_000);
    let cluster = MockCluster::builder()
        .manual_clock(clock)
        .start()
        .await
        .unwrap();
    let pd = connect(&cluster).await;
    let n = 300u64;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let pd = pd.clone();
        tasks.spawn(async move { pd.get_timestamp().await.unwrap() });
    }
    let mut logical = Vec::new();
    while let Some(ts) = tasks.join_next().await {
        let ts = ts.unwrap();
        assert_eq!(ts.physical(), 1_700_000_000_000);
        logical.push(ts.logical());
    }
    logical.sort_unstable();
    assert_eq!(logical, (1..=n).collect::<Vec<_>>());
    let stats = pd.tso_stats();
    assert_eq!(stats.timestamps, n);
    assert!(stats.requests < n, "{stats:?}");
}

#[tokio::test]
async fn concurrent_callers_share_requests_and_see_increasing_timestamps() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let pd = connect(&cluster).await;
    let (callers, per_caller) = (64usize, 50usize);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let pd = pd.clone();
        tasks.spawn(async move {
            let mut seen = Vec::with_capacity(per_caller);
            for _ in 0..per_caller {
                seen.push(pd.get_timestamp().await.unwrap());
            }
            seen
        });
    }
    let mut all = HashSet::new();
    while let Some(seen) = tasks.join_next().await {
        let seen = seen.unwrap();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "per-caller order");
        for ts in seen {
            assert!(all.insert(ts), "duplicate {ts:?}");
        }
    }
    let stats = pd.tso_stats();
    assert_eq!(stats.timestamps as usize, callers * per_caller);
    assert!(
        stats.requests * 2 < stats.timestamps,
        "batching should coalesce callers: {stats:?}"
    );
    assert_eq!(stats.streams, 1);
}

#[tokio::test]
async fn a_broken_tso_stream_is_reopened_and_waiters_are_served() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let pd = connect(&cluster).await;
    let before = pd.get_timestamp().await.unwrap();
    // The next TSO request kills the stream with a leader-change error: the batch is sent
    // again on a new stream.
    cluster.add_fault(
        FaultRule::new(
            Matcher::pd().command("Tso"),
            Action::status(tonic::Code::Unavailable, "not leader"),
        )
        .times(Times::Once),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let pd = pd.clone();
        tasks.spawn(async move { pd.get_timestamp().await });
    }
    while let Some(ts) = tasks.join_next().await {
        assert!(ts.unwrap().unwrap() > before);
    }
    assert_eq!(pd.tso_stats().streams, 2);

    // A definite error (not a leader change) fails that batch at once, typed.
    cluster.add_fault(
        FaultRule::new(
            Matcher::pd().command("Tso"),
            Action::status(tonic::Code::Unknown, "[PD:tso:ErrX]bad"),
        )
        .times(Times::Once),
    );
    match pd.get_timestamp().await {
        Err(Error::Pd { message }) => assert_eq!(message, "[PD:tso:ErrX]bad"),
        other => panic!("{other:?}"),
    }
    // A request PD never answers fails at its deadline; the next one gets a new stream.
    cluster
        .add_fault(FaultRule::new(Matcher::pd().command("Tso"), Action::Drop).times(Times::Once));
    let err = pd.get_timestamp().await.unwrap_err();
    assert!(matches!(err, Error::PdServerTimeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(pd.get_timestamp().await.unwrap() > before);
}

#[tokio::test]
async fn leader_moves_between_pd_members() {
    let cluster = MockCluster::builder().pd_members(3).start().await.unwrap();
    let endpoints = cluster.pd_endpoints();
    // Start from a follower only: discovery finds the leader through it.
    let pd = PdClient::connect([&endpoints[2]], &config(2))
        .await
        .unwrap();
    assert_eq!(pd.member_urls().len(), 3);
    assert_eq!(pd.leader_url().unwrap(), format!("http://{}", endpoints[0]));
    let t1 = pd.get_timestamp().await.unwrap();

    cluster.transfer_pd_leader(1).unwrap();
    // Leader-only calls hit the former leader, get `not leader`, refresh and follow. (Region
    // lookups on the QueryRegion stream are answered by the former leader as a follower, as
    // PD's followers do, so they do not notice.)
    pd.get_all_stores(false).await.unwrap();
    assert_eq!(pd.leader_url().unwrap(), format!("http://{}", endpoints[1]));
    pd.get_region(b"k", false).await.unwrap().unwrap();
    // The TSO stream follows the leader too, and time keeps moving forward.
    let t2 = pd.get_timestamp().await.unwrap();
    assert!(t2 > t1);

    // The leader crashes: the mock elects the first member still running.
    cluster.stop_pd_member(1).await.unwrap();
    assert_eq!(cluster.pd_leader(), 0);
    let t3 = pd.get_timestamp().await.unwrap();
    assert!(t3 > t2);
    pd.get_all_stores(false).await.unwrap();
    assert_eq!(pd.leader_url().unwrap(), format!("http://{}", endpoints[0]));
}

#[tokio::test]
async fn pd_restart_fails_typed_then_recovers() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let pd = connect(&cluster).await;
    let before = pd.get_timestamp().await.unwrap();
    cluster.stop_pd().await;
    let err = pd.get_timestamp().await.unwrap_err();
    assert!(matches!(err, Error::PdServerTimeout { .. }), "{err:?}");
    let err = pd.get_region(b"k", false).await.unwrap_err();
    assert!(matches!(err, Error::PdServerTimeout { .. }), "{err:?}");
    assert!(err.is_retryable());

    // Calls waiting while PD comes back are served.
    let waiting = {
        let pd = pd.clone();
        tokio::spawn(async move { pd.get_timestamp().await })
    };
    cluster.start_pd().await.unwrap();
    let recovered = match waiting.await.unwrap() {
        Ok(ts) => ts,
        // It may have run out of time before the restart; a new call must then succeed.
        Err(Error::PdServerTimeout { .. }) => pd.get_timestamp().await.unwrap(),
        Err(e) => panic!("{e:?}"),
    };
    assert!(recovered > before);
    pd.get_region(b"k", false).await.unwrap().unwrap();
}

#[tokio::test]
async fn background_tasks_stop_with_the_last_handle_and_close_fails_calls() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let pd = connect(&cluster).await;
    pd.get_timestamp().await.unwrap();
    let tso = Arc::downgrade(&pd.core().tso);
    let discovery = Arc::downgrade(&pd.core().discovery);
    let clone = pd.clone();
    drop(pd);
    clone.get_timestamp().await.unwrap();
    drop(clone);
    // The tasks notice the shutdown and release what they held.
    tokio::time::timeout(Duration::from_secs(5), async {
        while tso.upgrade().is_some() || discovery.upgrade().is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("background tasks did not stop");

    let pd = connect(&cluster).await;
    let other = pd.clone();
    pd.close();
    assert!(matches!(other.get_timestamp().await, Err(Error::Closed)));
    assert!(matches!(
        other.get_region(b"k", false).await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn min_ts_rpc_and_external_timestamps() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let pd = connect(&cluster).await;
    let a = pd.get_timestamp().await.unwrap();
    let min = pd.core().get_min_ts_rpc().await.unwrap();
    assert!(min > a);
    assert!(pd.get_min_ts().await.unwrap() > min);

    assert_eq!(pd.get_external_timestamp().await.unwrap(), 0);
    let ts = pd.get_timestamp().await.unwrap().version();
    pd.set_external_timestamp(ts).await.unwrap();
    assert_eq!(pd.get_external_timestamp().await.unwrap(), ts);
    match pd.set_external_timestamp(ts).await {
        Err(Error::Pd { message }) => assert!(message.contains("larger than current"), "{message}"),
        other => panic!("{other:?}"),
    }
    let source: &dyn crate::oracle::TimestampSource = &pd;
    assert!(source.get_timestamp().await.unwrap().version() > ts);
    assert_eq!(source.get_external_timestamp().await.unwrap(), ts);
}
