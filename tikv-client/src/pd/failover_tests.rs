//! Tests of PD forwarding, follower-handled reads, the router client and the region-meta
//! circuit breaker against a three-member `tikv-mock` PD over real gRPC. The mock's counters
//! (`pd_forwarded_count`, `pd_request_count`) say which member served what; health probes are
//! run on demand (`Discovery::check_health`) instead of waiting for the background tick, and the
//! breaker runs on a manual clock, so nothing here sleeps for time to pass.
//!
//! Ported cases (tikv/pd `tests/integrations/client/client_test.go`
//! `followerForwardAndHandleTestSuite`, `router_client_test.go`, `TestCircuitBreaker*`;
//! `client/servicediscovery/service_discovery_test.go`): TestGetRegionByFollowerForwarding,
//! TestGetTsoByFollowerForwarding1 (unreachable → normal), TestGetTsoByFollowerForwarding2
//! (unreachable → leader transfer → normal), TestGetRegionFromFollower, TestServiceClient and
//! TestServiceClientBalancer (the metadata each route carries, round-robin, the "region not
//! found" cool-down), TestGetRegionConcurrently (batched lookups of every kind),
//! TestRouterClientHeaderError (a header error reaches the caller, here after the unary
//! fallback), TestDynamicallyEnableRouterClient / TestConcurrentlyEnableFollowerHandle (options
//! switched at run time), TestCircuitBreaker, TestCircuitBreakerOpenAndChangeSettings and
//! TestCircuitBreakerHalfOpenAndChangeSettings.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tikv_mock::{Action, FaultRule, Matcher, MockCluster, Times};
use tokio::time::Instant;

use super::circuit_breaker::CircuitBreakerState;
use super::conn::PdChannel;
use super::router::Query;
use super::*;
use crate::Config;
use crate::Error;
use crate::config::CircuitBreakerSettings;

/// Forwarding on or off, follower handle and router client as given; probes only on demand.
fn config(forwarding: bool, follower_handle: bool, router: bool) -> Config {
    let mut config = Config::default().with_forwarding(forwarding);
    config.pd_client.pd_server_timeout = Duration::from_secs(2);
    config.pd_client.enable_follower_handle = follower_handle;
    config.pd_client.enable_router_client = router;
    config
}

async fn connect(cluster: &MockCluster, config: &Config) -> PdClient {
    PdClient::builder(cluster.pd_endpoints(), config)
        // The background probes stay out of the way; tests probe when they mean to.
        .member_health_check_interval(Duration::from_secs(3600))
        .connect()
        .await
        .unwrap()
}

async fn three_members() -> MockCluster {
    let cluster = MockCluster::builder().pd_members(3).start().await.unwrap();
    cluster.split_raw(["g", "p"]).unwrap();
    cluster
}

/// Every request the followers forwarded to member 0.
fn forwarded_to_leader(cluster: &MockCluster) -> u64 {
    cluster.pd_forwarded_count(1, 0) + cluster.pd_forwarded_count(2, 0)
}

fn handled(cluster: &MockCluster, command: &str) -> [u64; 3] {
    [0, 1, 2].map(|m| cluster.pd_request_count(m, command))
}

/// Probes every member now, as the background loop would on its next tick.
async fn probe(pd: &PdClient) {
    pd.core()
        .discovery
        .check_health(Duration::from_secs(3))
        .await;
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test]
async fn an_unreachable_leader_is_reached_through_a_follower_and_traffic_comes_back() {
    // TestGetRegionByFollowerForwarding + TestGetTsoByFollowerForwarding1, with the partition
    // made by the mock instead of a failpoint in the client.
    let cluster = three_members().await;
    let pd = connect(&cluster, &config(true, false, true)).await;
    let t0 = pd.get_timestamp().await.unwrap();
    pd.get_region(b"k", false).await.unwrap().unwrap();
    assert_eq!(forwarded_to_leader(&cluster), 0);

    cluster.isolate_pd_member(0).await.unwrap();
    cluster.reset_pd_request_counts();

    // TSO: the stream to the leader breaks, the leader's probe fails, the next stream opens on
    // a follower that proxies every request.
    let t1 = pd.get_timestamp().await.unwrap();
    assert!(t1 > t0);
    let tso_forwarded = forwarded_to_leader(&cluster);
    assert!(tso_forwarded >= 1, "{:?}", cluster.pd_forwarded_counts());
    assert_eq!(handled(&cluster, "Tso")[0], tso_forwarded);
    let mut last = t1;
    for _ in 0..20 {
        let ts = pd.get_timestamp().await.unwrap();
        assert!(ts > last);
        last = ts;
    }

    // Region reads (router first: its leader stream is known unreachable, so the lookup falls
    // back to the unary call, which is forwarded), store reads and other leader-only calls.
    let region = pd.get_region(b"k", false).await.unwrap().unwrap();
    assert_eq!(region.region.start_key, b("g"));
    assert_eq!(handled(&cluster, "GetRegion")[0], 1);
    pd.get_all_stores(false).await.unwrap();
    pd.get_external_timestamp().await.unwrap();
    assert!(forwarded_to_leader(&cluster) >= tso_forwarded + 3);
    assert_eq!(
        pd.leader_url().unwrap(),
        format!("http://{}", cluster.pd_endpoints()[0])
    );

    // The leader comes back: once a probe sees it, everything goes straight to it again.
    cluster.heal_pd_member(0).await.unwrap();
    probe(&pd).await;
    cluster.reset_pd_request_counts();
    for _ in 0..5 {
        let ts = pd.get_timestamp().await.unwrap();
        assert!(ts > last);
        last = ts;
    }
    pd.get_region(b"z", false).await.unwrap().unwrap();
    pd.get_all_stores(false).await.unwrap();
    assert!(
        cluster.pd_forwarded_counts().is_empty(),
        "{:?}",
        cluster.pd_forwarded_counts()
    );
    assert_eq!(handled(&cluster, "Tso")[0], 5);
    assert_eq!(handled(&cluster, "QueryRegion")[0], 1);
    assert_eq!(handled(&cluster, "GetAllStores")[0], 1);
    assert!(pd.tso_stats().streams >= 3, "{:?}", pd.tso_stats());
}

#[tokio::test]
async fn without_forwarding_an_unreachable_leader_is_a_typed_timeout() {
    let cluster = three_members().await;
    let pd = connect(&cluster, &config(false, false, false)).await;
    pd.get_timestamp().await.unwrap();
    cluster.isolate_pd_member(0).await.unwrap();
    let err = pd.get_timestamp().await.unwrap_err();
    assert!(matches!(err, Error::PdServerTimeout { .. }), "{err:?}");
    let err = pd.get_all_stores(false).await.unwrap_err();
    assert!(matches!(err, Error::PdServerTimeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(cluster.pd_forwarded_counts().is_empty());

    // With forwarding on but no PD reachable at all, calls still end typed, in time.
    let forwarding = connect(&cluster, &config(true, false, true)).await;
    cluster.stop_pd().await;
    let err = forwarding.get_timestamp().await.unwrap_err();
    assert!(matches!(err, Error::PdServerTimeout { .. }), "{err:?}");
    let err = forwarding.get_region(b"k", false).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn a_forwarded_client_follows_a_leader_transfer() {
    // TestGetTsoByFollowerForwarding2: unreachable → leader transfer → normal.
    let cluster = three_members().await;
    let pd = connect(&cluster, &config(true, false, false)).await;
    let mut last = pd.get_timestamp().await.unwrap();
    cluster.isolate_pd_member(0).await.unwrap();
    let ts = pd.get_timestamp().await.unwrap();
    assert!(ts > last);
    last = ts;
    assert!(forwarded_to_leader(&cluster) > 0);

    // The reachable member 2 becomes the leader: the forwarded stream and calls are refused
    // with the not-leader marker, the client refreshes and talks to member 2 directly.
    cluster.transfer_pd_leader(2).unwrap();
    cluster.reset_pd_request_counts();
    for _ in 0..5 {
        let ts = pd.get_timestamp().await.unwrap();
        assert!(ts > last);
        last = ts;
    }
    pd.get_all_stores(false).await.unwrap();
    assert_eq!(
        pd.leader_url().unwrap(),
        format!("http://{}", cluster.pd_endpoints()[2])
    );
    assert_eq!(handled(&cluster, "GetAllStores")[2], 1);
    assert_eq!(handled(&cluster, "Tso")[2], 5);
    assert!(
        cluster.pd_forwarded_counts().values().all(|n| *n == 0),
        "{:?}",
        cluster.pd_forwarded_counts()
    );
    cluster.heal_pd_member(0).await.unwrap();
}

#[tokio::test]
async fn routes_carry_pd_metadata_and_balance_over_healthy_members() {
    // TestServiceClient + TestServiceClientBalancer: what each route puts on the wire, and the
    // balancers' round-robin over available members.
    let cluster = three_members().await;
    let pd = connect(&cluster, &config(true, true, false)).await;
    let discovery = &pd.core().discovery;
    let urls: Vec<String> = cluster
        .pd_endpoints()
        .iter()
        .map(|e| format!("http://{e}"))
        .collect();

    // The leader is reached directly, without metadata.
    let (_, target) = discovery.leader_target(true);
    let target = target.unwrap();
    assert_eq!(target.url, urls[0]);
    assert_eq!(target.forwarded_to, None);
    assert_eq!(target.channel.header(), None);
    assert_eq!(discovery.leader_route(true), Some((urls[0].clone(), false)));

    // Leader unreachable: followers take turns forwarding, naming the leader.
    let leader = discovery.view().leader.clone().unwrap();
    leader.health.set_network_failure(true);
    let mut vias = Vec::new();
    for _ in 0..4 {
        let (_, target) = discovery.leader_target(true);
        let target = target.unwrap();
        assert_eq!(target.forwarded_to.as_deref(), Some(urls[0].as_str()));
        assert_eq!(
            target.channel.header(),
            Some(("pd-forwarded-host", urls[0].as_str()))
        );
        vias.push(target.url);
    }
    assert_eq!(
        vias,
        [&urls[1], &urls[2], &urls[1], &urls[2]].map(String::clone)
    );
    assert_eq!(discovery.leader_route(true), Some((urls[0].clone(), true)));
    // Without forwarding the leader is used anyway.
    let (_, target) = discovery.leader_target(false);
    assert_eq!(target.unwrap().url, urls[0]);
    leader.health.set_network_failure(false);

    // Follower reads: round-robin over every available member, leader included; a member
    // that answered "region not found" sits out.
    let picks: Vec<String> = (0..6)
        .map(|_| discovery.follower_read_member().unwrap().0.url)
        .collect();
    for url in &urls {
        assert_eq!(picks.iter().filter(|p| *p == url).count(), 2, "{picks:?}");
    }
    let follower = discovery.view().followers[0].clone();
    follower.health.mark_region_unavailable(Instant::now());
    for _ in 0..6 {
        let (m, is_leader) = discovery.follower_read_member().unwrap();
        assert_ne!(m.url, follower.url);
        assert_eq!(is_leader, m.url == urls[0]);
    }
    assert_eq!(
        PdChannel::follower_handle(follower.channel.clone()).header(),
        Some(("pd-allow-follower-handle", ""))
    );

    // Probes find what the mock did: an isolated member is unavailable until it heals.
    cluster.isolate_pd_member(2).await.unwrap();
    probe(&pd).await;
    let view = discovery.view();
    assert!(view.leader.as_ref().unwrap().health.is_available());
    assert!(view.followers[0].health.is_available());
    assert!(!view.followers[1].health.is_available());
    cluster.heal_pd_member(2).await.unwrap();
    probe(&pd).await;
    assert!(discovery.view().followers[1].health.is_available());
}

#[tokio::test]
async fn follower_handled_reads_are_served_by_followers_and_fall_back_to_the_leader() {
    // TestGetRegionFromFollower, with the mock's counters instead of a leader failpoint to
    // show who answered.
    let cluster = three_members().await;
    let pd = connect(&cluster, &config(false, true, false)).await;
    for _ in 0..9 {
        let region = pd.get_region(b"k", false).await.unwrap().unwrap();
        assert_eq!(region.region.start_key, b("g"));
    }
    assert_eq!(handled(&cluster, "GetRegion"), [3, 3, 3]);
    let prev = pd.get_prev_region(b"p", false).await.unwrap().unwrap();
    assert_eq!(prev.region.end_key, b("p"));
    let scanned = pd
        .batch_scan_regions(&[(b(""), b(""))], 10, false)
        .await
        .unwrap();
    assert_eq!(scanned.len(), 3);
    // By id, or told to ask the leader, only the leader answers (client-go's choices).
    cluster.reset_pd_request_counts();
    pd.get_region_by_id(prev.region.id, false)
        .await
        .unwrap()
        .unwrap();
    for _ in 0..3 {
        pd.get_region_from_leader(b"k", false, false)
            .await
            .unwrap()
            .unwrap();
        pd.batch_scan_regions_from_leader(&[(b(""), b(""))], 10, false)
            .await
            .unwrap();
    }
    assert_eq!(handled(&cluster, "GetRegionByID"), [1, 0, 0]);
    assert_eq!(handled(&cluster, "GetRegion"), [3, 0, 0]);
    assert_eq!(handled(&cluster, "BatchScanRegions"), [3, 0, 0]);

    // Followers that have not synced answer "region not found": the read is retried on the
    // leader within the same call, and those followers sit out for a while.
    cluster.set_pd_region_sync(1, false).unwrap();
    cluster.set_pd_region_sync(2, false).unwrap();
    cluster.reset_pd_request_counts();
    for _ in 0..6 {
        pd.get_region(b"k", false).await.unwrap().unwrap();
    }
    let [leader, f1, f2] = handled(&cluster, "GetRegion");
    assert_eq!(
        (f1, f2),
        (1, 1),
        "each follower is tried once, then skipped"
    );
    assert_eq!(leader, 6);

    // The leader unreachable and forwarding off: with follower handle on, region reads still
    // succeed on the followers.
    cluster.set_pd_region_sync(1, true).unwrap();
    cluster.set_pd_region_sync(2, true).unwrap();
    let pd = connect(&cluster, &config(false, true, false)).await;
    cluster.isolate_pd_member(0).await.unwrap();
    probe(&pd).await;
    cluster.reset_pd_request_counts();
    for _ in 0..4 {
        pd.get_region(b"z", false).await.unwrap().unwrap();
    }
    assert_eq!(handled(&cluster, "GetRegion"), [0, 2, 2]);
    cluster.heal_pd_member(0).await.unwrap();

    // Switched off at run time: back to the leader only.
    probe(&pd).await;
    pd.set_follower_handle(false);
    cluster.reset_pd_request_counts();
    for _ in 0..3 {
        pd.get_region(b"z", false).await.unwrap().unwrap();
    }
    assert_eq!(handled(&cluster, "GetRegion"), [3, 0, 0]);
}

#[tokio::test]
async fn the_router_batches_concurrent_lookups() {
    // TestGetRegionConcurrently: many lookups of every kind at once share few QueryRegion
    // messages, and each gets its own answer.
    let cluster = three_members().await;
    let pd = connect(&cluster, &config(false, false, true)).await;
    let regions = cluster.regions();
    let n = 300usize;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let pd = pd.clone();
        let regions = regions.clone();
        tasks.spawn(async move {
            let got = match i % 3 {
                0 => pd.get_region(b"h", false).await,
                1 => pd.get_prev_region(b"p", false).await,
                _ => pd.get_region_by_id(regions[2].id, false).await,
            };
            (i, got.unwrap().unwrap())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, got) = joined.unwrap();
        let expected = if i % 3 == 2 { &regions[2] } else { &regions[1] };
        assert_eq!(&got.region, expected);
        assert!(got.leader.is_some());
        assert!(got.buckets.is_none());
    }
    let stats = pd.core().router.stats();
    assert_eq!(stats.lookups, n as u64);
    assert!(stats.messages < n as u64, "{stats:?}");
    assert_eq!(stats.streams, 1);
    let messages = handled(&cluster, "QueryRegion");
    assert_eq!(messages, [stats.messages, 0, 0]);
    assert_eq!(handled(&cluster, "GetRegion"), [0, 0, 0]);

    // Unknown ids and keys in gaps are "none", not errors.
    assert!(pd.get_region_by_id(987_654, false).await.unwrap().is_none());

    // With follower handle on, batches go to any member's stream.
    pd.set_follower_handle(true);
    cluster.reset_pd_request_counts();
    for _ in 0..30 {
        pd.get_region(b"a", false).await.unwrap().unwrap();
    }
    let messages = handled(&cluster, "QueryRegion");
    assert_eq!(messages.iter().sum::<u64>(), 30);
    assert!(messages[1] + messages[2] > 0, "{messages:?}");
    // Lookups by id must be the leader's (client-go does not allow followers there).
    cluster.reset_pd_request_counts();
    for _ in 0..5 {
        pd.get_region_by_id(regions[0].id, false)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(handled(&cluster, "QueryRegion"), [5, 0, 0]);

    // Switched off at run time: unary calls.
    pd.set_router_client(false);
    pd.set_follower_handle(false);
    cluster.reset_pd_request_counts();
    pd.get_region(b"a", false).await.unwrap().unwrap();
    assert_eq!(handled(&cluster, "QueryRegion"), [0, 0, 0]);
    assert_eq!(handled(&cluster, "GetRegion"), [1, 0, 0]);
}

#[tokio::test]
async fn a_failing_router_stream_falls_back_to_unary_calls() {
    let cluster = three_members().await;
    let pd = connect(&cluster, &config(false, false, true)).await;
    // The stream fails on every message: each lookup still gets its answer, by a unary call.
    let rule = cluster.add_fault(
        FaultRule::new(
            Matcher::pd().command("QueryRegion"),
            Action::status(tonic::Code::Unavailable, "router overloaded"),
        )
        .times(Times::Always),
    );
    for key in ["a", "h", "z"] {
        pd.get_region(key.as_bytes(), false).await.unwrap().unwrap();
    }
    assert_eq!(handled(&cluster, "GetRegion"), [3, 0, 0]);
    cluster.remove_fault(rule);
    pd.get_region(b"a", false).await.unwrap().unwrap();
    assert_eq!(
        handled(&cluster, "GetRegion"),
        [3, 0, 0],
        "stream works again"
    );

    // TestRouterClientHeaderError: a header error on the stream (here "region not found" from
    // followers whose region syncer is stopped) fails the batch; the callers' unary fallback
    // then gets the answer from the leader. A definite error on both paths reaches the caller,
    // typed.
    let err = {
        let pd = connect(&cluster, &config(false, true, true)).await;
        cluster.set_pd_region_sync(1, false).unwrap();
        cluster.set_pd_region_sync(2, false).unwrap();
        for _ in 0..6 {
            pd.get_region(b"a", false).await.unwrap().unwrap();
        }
        cluster.add_fault(
            FaultRule::new(
                Matcher::pd().command("GetRegion"),
                Action::status(tonic::Code::PermissionDenied, "nope"),
            )
            .times(Times::Always),
        );
        cluster.add_fault(
            FaultRule::new(
                Matcher::pd().command("QueryRegion"),
                Action::status(tonic::Code::PermissionDenied, "nope"),
            )
            .times(Times::Always),
        );
        pd.get_region(b"a", false).await.unwrap_err()
    };
    assert!(
        matches!(&err, Error::Grpc { message, .. } if message == "nope"),
        "{err:?}"
    );
}

/// A clock the test moves by hand.
#[derive(Debug, Clone)]
struct ManualInstant {
    base: Instant,
    offset_ms: Arc<AtomicU64>,
}

impl ManualInstant {
    fn new() -> Self {
        ManualInstant {
            base: Instant::now(),
            offset_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap();
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    fn clock(&self) -> super::circuit_breaker::Clock {
        let this = self.clone();
        Arc::new(move || this.base + Duration::from_millis(this.offset_ms.load(Ordering::SeqCst)))
    }
}

fn breaker_settings(half_open: u32) -> CircuitBreakerSettings {
    CircuitBreakerSettings::default()
        .with_error_rate_threshold_pct(60)
        .with_min_qps_for_open(10)
        .with_error_rate_window(Duration::from_secs(1))
        .with_cool_down_interval(Duration::from_secs(1))
        .with_half_open_success_count(half_open)
}

async fn breaker_client(
    cluster: &MockCluster,
    router: bool,
    half_open: u32,
) -> (PdClient, ManualInstant) {
    let mut config = config(false, false, router);
    config.pd_client.region_meta_circuit_breaker = breaker_settings(half_open);
    let pd = connect(cluster, &config).await;
    let clock = ManualInstant::new();
    pd.core().region_meta_breaker.set_clock(clock.clock());
    (pd, clock)
}

fn overload(cluster: &MockCluster, command: &str) -> tikv_mock::FaultId {
    cluster.add_fault(
        FaultRule::new(
            Matcher::pd().command(command),
            Action::status(tonic::Code::ResourceExhausted, "resource exhausted"),
        )
        .times(Times::Always),
    )
}

fn is_open(err: &Error) -> bool {
    matches!(err, Error::PdCircuitBreakerOpen { name } if name == "region-meta")
}

#[tokio::test]
async fn the_region_meta_breaker_opens_fails_fast_and_half_opens() {
    // TestCircuitBreaker, on the unary path and on the router.
    for (router, command) in [(false, "GetRegion"), (true, "QueryRegion")] {
        let cluster = three_members().await;
        let (pd, clock) = breaker_client(&cluster, router, 1).await;
        for _ in 0..10 {
            pd.get_region(b"a", false).await.unwrap().unwrap();
        }
        let fault = overload(&cluster, command);
        if router {
            // The router's fallback would hide the stream's overload; overload both.
            overload(&cluster, "GetRegion");
        }
        for _ in 0..100 {
            let err = pd.get_region(b"a", false).await.unwrap_err();
            assert!(!is_open(&err), "not judged before the window ends: {err:?}");
        }
        assert_eq!(
            pd.region_meta_circuit_breaker_state(),
            CircuitBreakerState::Closed
        );
        clock.advance(Duration::from_millis(1_001));
        let err = pd.get_region(b"a", false).await.unwrap_err();
        assert!(is_open(&err), "{err:?}");
        assert!(err.is_retryable());
        assert!(err.to_string().contains("circuit breaker is open"), "{err}");
        assert_eq!(
            pd.region_meta_circuit_breaker_state(),
            CircuitBreakerState::Open
        );

        // Open: nothing reaches PD, even once PD is fine again; other calls are not affected.
        cluster.clear_faults();
        let before = handled(&cluster, command)[0];
        for _ in 0..5 {
            assert!(is_open(&pd.get_region(b"a", false).await.unwrap_err()));
            assert!(is_open(
                &pd.batch_scan_regions(&[(b(""), b(""))], 10, false)
                    .await
                    .unwrap_err()
            ));
        }
        assert_eq!(handled(&cluster, command)[0], before);
        pd.get_all_stores(false).await.unwrap();
        pd.get_timestamp().await.unwrap();
        let _ = fault;

        // After the cool-down a probe goes through; its success closes the breaker.
        clock.advance(Duration::from_millis(1_001));
        pd.get_region(b"a", false).await.unwrap().unwrap();
        assert_eq!(
            pd.region_meta_circuit_breaker_state(),
            CircuitBreakerState::HalfOpen
        );
        for _ in 0..10 {
            pd.get_region(b"a", false).await.unwrap().unwrap();
        }
        assert_eq!(
            pd.region_meta_circuit_breaker_state(),
            CircuitBreakerState::Closed
        );
    }
}

#[tokio::test]
async fn breaker_settings_change_at_run_time() {
    // TestCircuitBreakerOpenAndChangeSettings and TestCircuitBreakerHalfOpenAndChangeSettings.
    let cluster = three_members().await;
    let (pd, clock) = breaker_client(&cluster, false, 20).await;
    let fault = overload(&cluster, "GetRegion");
    for _ in 0..100 {
        pd.get_region(b"a", false).await.unwrap_err();
    }
    clock.advance(Duration::from_millis(1_001));
    assert!(is_open(&pd.get_region(b"a", false).await.unwrap_err()));
    // Open → always closed: the next call goes through.
    pd.change_region_meta_circuit_breaker_settings(|s| {
        *s = CircuitBreakerSettings::always_closed()
    });
    assert!(!pd.region_meta_circuit_breaker_settings().is_enabled());
    let err = pd.get_region(b"a", false).await.unwrap_err();
    assert!(!is_open(&err), "{err:?}");

    cluster.remove_fault(fault);

    // Half-open with 20 probes, then always closed: never opens again.
    let (pd, clock) = breaker_client(&cluster, false, 20).await;
    let fault = overload(&cluster, "GetRegion");
    for _ in 0..100 {
        pd.get_region(b"a", false).await.unwrap_err();
    }
    clock.advance(Duration::from_millis(1_001));
    assert!(is_open(&pd.get_region(b"a", false).await.unwrap_err()));
    clock.advance(Duration::from_millis(1_001));
    cluster.remove_fault(fault);
    pd.get_region(b"a", false).await.unwrap().unwrap();
    assert_eq!(
        pd.region_meta_circuit_breaker_state(),
        CircuitBreakerState::HalfOpen
    );
    overload(&cluster, "GetRegion");
    pd.change_region_meta_circuit_breaker_settings(|s| {
        *s = CircuitBreakerSettings::always_closed()
    });
    for _ in 0..100 {
        let err = pd.get_region(b"a", false).await.unwrap_err();
        assert!(!is_open(&err), "{err:?}");
    }
}

#[tokio::test]
async fn lookups_with_query_kinds_match_unary_answers() {
    // The router and the unary path agree on every kind of lookup, buckets included.
    let cluster = three_members().await;
    let routed = connect(&cluster, &config(false, false, true)).await;
    let unary = connect(&cluster, &config(false, false, false)).await;
    let regions = cluster.regions();
    for query in [
        Query::Key(b("a")),
        Query::Key(b("p")),
        Query::PrevKey(b("p")),
        Query::PrevKey(b("")),
        Query::Id(regions[1].id),
        Query::Id(424_242),
    ] {
        for need_buckets in [false, true] {
            let a = routed
                .region_lookup(query.clone(), need_buckets, false)
                .await
                .unwrap();
            let b = unary
                .region_lookup(query.clone(), need_buckets, false)
                .await
                .unwrap();
            assert_eq!(a, b, "{query:?}");
        }
    }
}
