//! Tests of PD's router microservice mode against `tikv-mock`'s router servers over real gRPC:
//! the router servers are found in PD's meta storage, the reads client-go lets them serve go to
//! them (unary `routerpb.Router` calls and the batched `QueryRegion` stream), leader-only reads
//! never do, a stopped or deregistered server is left out and its reads fall back to PD without
//! the caller noticing, and a frozen server's stale answer is corrected by the region cache's
//! leader-only retry.
//!
//! Ported cases (tikv/pd `tests/integrations/mcs/router/` and `client/`): the router-service
//! read routing of `getServiceClient` (`TestRouterServiceClient`-style setups: region and store
//! reads served by the router, fallback to PD when no router is available), the registry
//! refresh of `routerServiceDiscovery.updateMember`, the health-check exclusion of
//! `checkNodeHealth`, `sendToMs` for `QueryRegion` batches; and client-go's "first lookup may be
//! served by anyone, the retry by the PD leader only" rule of `loadRegion`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tikv_mock::MockCluster;
use tokio::time::Instant;

use super::circuit_breaker::CircuitBreakerState;
use super::router::Query;
use super::*;
use crate::config::CircuitBreakerSettings;
use crate::locate::RegionCache;
use crate::{Config, Error};

fn config() -> Config {
    let mut config = Config::default();
    config.pd_client.pd_server_timeout = Duration::from_secs(2);
    config
}

async fn connect(cluster: &MockCluster, router_client: bool) -> PdClient {
    let mut config = config();
    config.pd_client.enable_router_client = router_client;
    PdClient::connect(cluster.pd_endpoints(), &config)
        .await
        .unwrap()
}

async fn routers(n: usize) -> MockCluster {
    let cluster = MockCluster::builder()
        .router_microservice(n)
        .start()
        .await
        .unwrap();
    cluster.split_raw(["g", "p"]).unwrap();
    cluster
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Requests of `method` served by every router server together.
fn served_by_routers(cluster: &MockCluster, method: &str) -> u64 {
    (0..cluster.router_server_addrs().len())
        .map(|i| cluster.router_server_request_count(i, method))
        .sum()
}

const ROUTER_METHODS: [&str; 7] = [
    "GetRegion",
    "GetPrevRegion",
    "GetRegionByID",
    "BatchScanRegions",
    "GetStore",
    "GetAllStores",
    "QueryRegion",
];

fn all_router_requests(cluster: &MockCluster) -> u64 {
    ROUTER_METHODS
        .iter()
        .map(|m| served_by_routers(cluster, m))
        .sum()
}

fn url_of(cluster: &MockCluster, i: usize) -> String {
    format!("http://{}", cluster.router_server_addrs()[i])
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(2)
}

/// The URLs of the router servers the client knows.
fn known(pd: &PdClient) -> Vec<String> {
    pd.core().router_service.urls()
}

#[tokio::test]
async fn router_servers_are_discovered_from_the_registry() {
    let cluster = routers(3).await;
    let pd = connect(&cluster, false).await;
    let mut expected: Vec<String> = (0..3).map(|i| url_of(&cluster, i)).collect();
    expected.sort();
    assert_eq!(known(&pd), expected);
}

#[tokio::test]
async fn unary_region_and_store_reads_are_served_by_router_servers() {
    let cluster = routers(2).await;
    let pd = connect(&cluster, false).await;

    let by_key = pd.region_by_key(b"h", true).await.unwrap().unwrap();
    let prev = pd.prev_region(b"p", false).await.unwrap().unwrap();
    let ranges = [(b(""), b(""))];
    let scanned = pd.batch_scan_regions(&ranges, 10, false).await.unwrap();
    let store_id = cluster.store_ids()[0];
    let store = pd.store(store_id).await.unwrap().unwrap();
    let stores = pd.all_stores(false).await.unwrap();
    assert_eq!(served_by_routers(&cluster, "GetRegion"), 1);
    assert_eq!(served_by_routers(&cluster, "GetPrevRegion"), 1);
    assert_eq!(served_by_routers(&cluster, "BatchScanRegions"), 1);
    assert_eq!(served_by_routers(&cluster, "GetStore"), 1);
    assert_eq!(served_by_routers(&cluster, "GetAllStores"), 1);
    for method in ROUTER_METHODS {
        assert_eq!(cluster.pd_request_count(0, method), 0, "{method} on PD");
    }
    // The balancer takes the servers in turn.
    assert!(
        (0..2).all(|i| ROUTER_METHODS
            .iter()
            .any(|m| cluster.router_server_request_count(i, m) > 0)),
        "both router servers served reads"
    );

    // The answers are PD's.
    assert_eq!(by_key.region.start_key, b("g"));
    assert_eq!(
        Some(by_key),
        pd.region_lookup(Query::Key(b("h")), true, false)
            .await
            .unwrap()
    );
    assert_eq!(prev.region.end_key, b("p"));
    assert_eq!(
        Some(prev),
        pd.region_lookup(Query::PrevKey(b("p")), false, false)
            .await
            .unwrap()
    );
    assert_eq!(scanned.len(), 3);
    assert_eq!(
        scanned,
        pd.scan_regions_batch(&ranges, 10, false, false)
            .await
            .unwrap()
    );
    // Heartbeat times move; the stores are the same.
    let from_pd = pd.store_from(store_id, false).await.unwrap().unwrap();
    assert_eq!((store.id, &store.address), (from_pd.id, &from_pd.address));
    let ids = |stores: &[tikv_proto::metapb::Store]| -> Vec<(u64, String)> {
        stores.iter().map(|s| (s.id, s.address.clone())).collect()
    };
    let all_from_pd = pd.all_stores_from(false, false).await.unwrap();
    assert_eq!(ids(&stores), ids(&all_from_pd));
    assert_eq!(cluster.pd_request_count(0, "GetRegion"), 1);
    assert_eq!(cluster.pd_request_count(0, "GetPrevRegion"), 1);
    assert_eq!(cluster.pd_request_count(0, "BatchScanRegions"), 1);
    assert_eq!(cluster.pd_request_count(0, "GetStore"), 1);
    assert_eq!(cluster.pd_request_count(0, "GetAllStores"), 1);
    assert_eq!(served_by_routers(&cluster, "GetRegion"), 1);
}

#[tokio::test]
async fn query_region_batches_go_to_a_router_stream() {
    let cluster = routers(2).await;
    let pd = connect(&cluster, true).await;
    let keys = ["a", "h", "q", "z", "b", "i"];
    let lookups = keys.iter().map(|k| pd.region_by_key(k.as_bytes(), false));
    let found: Vec<_> = futures_util::future::join_all(lookups).await;
    for (key, region) in keys.iter().zip(found) {
        let region = region.unwrap().unwrap();
        let expected = pd
            .get_region_from_leader(key.as_bytes(), false, false)
            .await
            .unwrap();
        assert_eq!(Some(region), expected, "{key}");
    }
    let routed = served_by_routers(&cluster, "QueryRegion");
    assert!(routed >= 1 && routed <= keys.len() as u64, "{routed}");
    // The leader-only lookups went to PD's own stream, and nothing took the unary path.
    assert_eq!(
        cluster.pd_request_count(0, "QueryRegion"),
        keys.len() as u64
    );
    assert_eq!(served_by_routers(&cluster, "GetRegion"), 0);
    assert_eq!(cluster.pd_request_count(0, "GetRegion"), 0);
    assert!(
        pd.core().router.stats().streams >= 2,
        "a router and a PD stream"
    );

    // Previous-key lookups ride the router stream too; by-id lookups never do.
    pd.prev_region(b"p", false).await.unwrap().unwrap();
    assert!(served_by_routers(&cluster, "QueryRegion") > routed);
    let routed = served_by_routers(&cluster, "QueryRegion");
    let id = pd
        .region_by_key(b"a", false)
        .await
        .unwrap()
        .unwrap()
        .region
        .id;
    let routed = routed + 1;
    assert_eq!(served_by_routers(&cluster, "QueryRegion"), routed);
    let pd_before = cluster.pd_request_count(0, "QueryRegion");
    assert_eq!(
        pd.region_by_id(id, false).await.unwrap().unwrap().region.id,
        id
    );
    assert_eq!(served_by_routers(&cluster, "QueryRegion"), routed);
    assert_eq!(cluster.pd_request_count(0, "QueryRegion"), pd_before + 1);
}

#[tokio::test]
async fn leader_only_and_by_id_reads_never_go_to_router_servers() {
    let cluster = routers(2).await;
    for router_client in [false, true] {
        let pd = connect(&cluster, router_client).await;
        let first = pd.region_by_key(b"a", false).await.unwrap().unwrap();
        let before = all_router_requests(&cluster);
        assert!(before > 0);

        pd.get_region_from_leader(b"a", false, false)
            .await
            .unwrap()
            .unwrap();
        pd.get_region_from_leader(b"p", true, false)
            .await
            .unwrap()
            .unwrap();
        pd.region_by_id(first.region.id, false)
            .await
            .unwrap()
            .unwrap();
        pd.batch_scan_regions_from_leader(&[(b(""), b(""))], 10, false)
            .await
            .unwrap();
        let store_id = cluster.store_ids()[0];
        pd.get_store_from_leader(store_id).await.unwrap().unwrap();
        assert_eq!(
            all_router_requests(&cluster),
            before,
            "router {router_client}"
        );
        assert_eq!(served_by_routers(&cluster, "GetRegionByID"), 0);
    }
}

#[tokio::test]
async fn a_stopped_router_server_is_skipped_and_reads_fall_back_to_pd() {
    for router_client in [false, true] {
        let cluster = routers(1).await;
        let pd = connect(&cluster, router_client).await;
        pd.region_by_key(b"a", false).await.unwrap().unwrap();
        let served = all_router_requests(&cluster);
        assert!(served > 0);

        // The crash is found by the next read, which PD answers within the same call.
        cluster.stop_router_server(0).await.unwrap();
        let region = pd.region_by_key(b"h", false).await.unwrap().unwrap();
        assert_eq!(region.region.start_key, b("g"));
        assert!(pd.core().router_service.pick().is_none(), "left out");
        let store_id = cluster.store_ids()[0];
        pd.store(store_id).await.unwrap().unwrap();
        pd.all_stores(false).await.unwrap();
        pd.batch_scan_regions(&[(b(""), b(""))], 10, false)
            .await
            .unwrap();
        assert_eq!(cluster.pd_request_count(0, "GetStore"), 1);
        assert_eq!(cluster.pd_request_count(0, "GetAllStores"), 1);
        assert_eq!(cluster.pd_request_count(0, "BatchScanRegions"), 1);

        // Back: the next health probe lets reads go to it again.
        cluster.start_router_server(0).await.unwrap();
        pd.core()
            .router_service
            .check_health(Duration::from_secs(3))
            .await;
        assert!(pd.core().router_service.pick().is_some());
        let before = all_router_requests(&cluster);
        pd.region_by_key(b"q", false).await.unwrap().unwrap();
        pd.all_stores(false).await.unwrap();
        assert_eq!(
            all_router_requests(&cluster),
            before + 2,
            "router {router_client}"
        );
        assert_eq!(cluster.pd_request_count(0, "GetAllStores"), 1);
    }
}

#[tokio::test]
async fn a_failed_health_probe_leaves_a_server_out() {
    let cluster = routers(2).await;
    let pd = connect(&cluster, false).await;
    cluster.stop_router_server(1).await.unwrap();
    pd.core()
        .router_service
        .check_health(Duration::from_secs(3))
        .await;
    let before = cluster.router_server_request_count(0, "GetRegion");
    for _ in 0..4 {
        pd.region_by_key(b"a", false).await.unwrap().unwrap();
    }
    assert_eq!(
        cluster.router_server_request_count(0, "GetRegion"),
        before + 4
    );
    assert_eq!(cluster.pd_request_count(0, "GetRegion"), 0);
}

#[tokio::test]
async fn registry_changes_are_followed() {
    let cluster = routers(2).await;
    cluster.set_router_registered(1, false).unwrap();
    let pd = connect(&cluster, false).await;
    assert_eq!(known(&pd), vec![url_of(&cluster, 0)]);
    pd.region_by_key(b"a", false).await.unwrap().unwrap();
    assert_eq!(cluster.router_server_request_count(0, "GetRegion"), 1);

    // Server 0 leaves the registry and server 1 joins: the next refresh follows.
    cluster.set_router_registered(0, false).unwrap();
    cluster.set_router_registered(1, true).unwrap();
    pd.core().router_service.update(deadline()).await.unwrap();
    assert_eq!(known(&pd), vec![url_of(&cluster, 1)]);
    pd.region_by_key(b"a", false).await.unwrap().unwrap();
    pd.all_stores(false).await.unwrap();
    assert_eq!(cluster.router_server_request_count(0, "GetRegion"), 1);
    assert_eq!(cluster.router_server_request_count(1, "GetRegion"), 1);
    assert_eq!(cluster.router_server_request_count(1, "GetAllStores"), 1);

    // Nobody registered: PD serves everything again.
    cluster.set_router_registered(1, false).unwrap();
    pd.core().router_service.update(deadline()).await.unwrap();
    assert!(known(&pd).is_empty());
    let before = all_router_requests(&cluster);
    pd.region_by_key(b"a", false).await.unwrap().unwrap();
    pd.all_stores(false).await.unwrap();
    assert_eq!(all_router_requests(&cluster), before);
    assert_eq!(cluster.pd_request_count(0, "GetRegion"), 1);
}

#[tokio::test]
async fn a_failed_call_triggers_a_registry_refresh() {
    let cluster = routers(2).await;
    cluster.set_router_registered(1, false).unwrap();
    let pd = connect(&cluster, false).await;
    assert_eq!(known(&pd), vec![url_of(&cluster, 0)]);

    // Server 0 is replaced by server 1 without the client being told.
    cluster.stop_router_server(0).await.unwrap();
    cluster.set_router_registered(0, false).unwrap();
    cluster.set_router_registered(1, true).unwrap();
    let mut updates = pd.core().router_service.subscribe_updates();
    updates.borrow_and_update();
    pd.region_by_key(b"a", false).await.unwrap().unwrap();
    assert_eq!(cluster.pd_request_count(0, "GetRegion"), 1);
    // The failure asked the background task to read the registry again.
    let wanted = vec![url_of(&cluster, 1)];
    tokio::time::timeout(Duration::from_secs(10), async {
        while known(&pd) != wanted {
            updates.changed().await.unwrap();
        }
    })
    .await
    .expect("the registry is read again after the failure");
    pd.region_by_key(b"a", false).await.unwrap().unwrap();
    assert_eq!(cluster.router_server_request_count(1, "GetRegion"), 1);
    assert_eq!(cluster.pd_request_count(0, "GetRegion"), 1);
}

#[tokio::test]
async fn without_router_servers_pd_serves_everything() {
    let cluster = MockCluster::builder().start().await.unwrap();
    cluster.split_raw(["g"]).unwrap();
    for router_client in [false, true] {
        let pd = connect(&cluster, router_client).await;
        assert!(known(&pd).is_empty());
        pd.core().router_service.update(deadline()).await.unwrap();
        assert!(known(&pd).is_empty());
        pd.region_by_key(b"a", false).await.unwrap().unwrap();
        pd.prev_region(b"g", false).await.unwrap().unwrap();
        pd.batch_scan_regions(&[(b(""), b(""))], 10, false)
            .await
            .unwrap();
        pd.store(cluster.store_ids()[0]).await.unwrap().unwrap();
        pd.all_stores(false).await.unwrap();
    }
    assert_eq!(cluster.pd_request_count(0, "GetRegion"), 1);
    assert_eq!(cluster.pd_request_count(0, "GetPrevRegion"), 1);
    assert_eq!(cluster.pd_request_count(0, "QueryRegion"), 2);
    assert_eq!(cluster.pd_request_count(0, "BatchScanRegions"), 2);
    assert_eq!(cluster.pd_request_count(0, "GetStore"), 2);
    assert_eq!(cluster.pd_request_count(0, "GetAllStores"), 2);
}

#[tokio::test]
async fn a_frozen_router_answer_is_corrected_by_the_leader_only_retry() {
    let cluster = routers(1).await;
    let pd = connect(&cluster, true).await;
    cluster.set_router_region_sync(0, false).unwrap();
    let split = cluster.split_raw(["t"]).unwrap();
    assert!(!split.is_empty());

    // The frozen server still answers with the region as it was before the split.
    let stale = pd.region_by_key(b"u", false).await.unwrap().unwrap();
    assert_eq!(stale.region.start_key, b("p"));
    assert_eq!(stale.region.end_key, b(""));
    let fresh = pd
        .get_region_from_leader(b"u", false, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fresh.region.start_key, b("t"));

    // The region cache learned the left half of the split (as an EpochNotMatch teaches it).
    // A miss on the right half asks the router first, gets the stale region, which overlaps
    // the newer left half, and asks the PD leader again.
    let cache = RegionCache::from_pd(&pd, &config());
    let left = pd
        .get_region_from_leader(b"q", false, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(left.region.end_key, b("t"));
    let left = cache.build_region_for_test(left).await.unwrap();
    assert!(cache.insert_for_test(left, true));
    let routed = served_by_routers(&cluster, "QueryRegion");
    let from_pd = cluster.pd_request_count(0, "QueryRegion");
    let location = cache.locate_key(b"u").await.unwrap();
    assert_eq!(location.start_key().as_ref(), b"t");
    assert_eq!(location.end_key().as_ref(), b"");
    assert_eq!(served_by_routers(&cluster, "QueryRegion"), routed + 1);
    assert_eq!(cluster.pd_request_count(0, "QueryRegion"), from_pd + 1);

    // Once the server syncs again it answers the fresh region.
    cluster.set_router_region_sync(0, true).unwrap();
    let synced = pd.region_by_key(b"u", false).await.unwrap().unwrap();
    assert_eq!(synced.region.start_key, b("t"));
}

/// A breaker clock tests move by hand.
#[derive(Clone)]
struct ManualClock {
    base: Instant,
    offset_ms: Arc<AtomicU64>,
}

impl ManualClock {
    fn new() -> Self {
        ManualClock {
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

/// Puts every known router server back in the rotation, as a passing probe would.
fn mark_routers_healthy(pd: &PdClient) {
    for node in &pd.core().router_service.view().nodes {
        node.health.set_network_failure(false);
    }
}

#[tokio::test]
async fn the_region_meta_breaker_covers_router_reads() {
    let cluster = routers(1).await;
    let mut config = config();
    config.pd_client.enable_router_client = false;
    config.pd_client.region_meta_circuit_breaker = CircuitBreakerSettings::default()
        .with_error_rate_threshold_pct(40)
        .with_min_qps_for_open(10)
        .with_error_rate_window(Duration::from_secs(1))
        .with_cool_down_interval(Duration::from_secs(1))
        .with_half_open_success_count(1);
    let pd = PdClient::connect(cluster.pd_endpoints(), &config)
        .await
        .unwrap();
    let clock = ManualClock::new();
    pd.core().region_meta_breaker.set_clock(clock.clock());

    // A crashed router server fails the first attempt of every region read (PD answers the
    // second): half of the attempts fail, and the breaker counts them like PD failures.
    cluster.stop_router_server(0).await.unwrap();
    for _ in 0..20 {
        mark_routers_healthy(&pd);
        pd.region_by_key(b"a", false).await.unwrap().unwrap();
    }
    assert_eq!(
        pd.region_meta_circuit_breaker_state(),
        CircuitBreakerState::Closed
    );
    clock.advance(Duration::from_millis(1_001));
    let err = pd.region_by_key(b"a", false).await.unwrap_err();
    assert!(matches!(err, Error::PdCircuitBreakerOpen { .. }), "{err:?}");

    // Open: region reads are refused before any router server is asked.
    cluster.start_router_server(0).await.unwrap();
    mark_routers_healthy(&pd);
    let before = all_router_requests(&cluster);
    let err = pd
        .batch_scan_regions(&[(b(""), b(""))], 10, false)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PdCircuitBreakerOpen { .. }), "{err:?}");
    assert_eq!(all_router_requests(&cluster), before);
    // Store reads are not region metadata: the router still serves them.
    pd.all_stores(false).await.unwrap();
    assert_eq!(all_router_requests(&cluster), before + 1);
}

/// A router server that answers with an error (a fault rule, the server itself up) is left out
/// and PD answers within the same call; the next health probe brings it back.
#[tokio::test]
async fn a_router_answering_errors_is_left_out_and_pd_answers() {
    let cluster = routers(1).await;
    let pd = connect(&cluster, false).await;
    let rule = cluster.add_fault(
        tikv_mock::FaultRule::new(
            tikv_mock::Matcher::router_server(0).command("GetRegion"),
            tikv_mock::Action::status(tonic::Code::Unavailable, "router overloaded"),
        )
        .times(tikv_mock::Times::Always),
    );
    let region = pd.region_by_key(b"h", false).await.unwrap().unwrap();
    assert_eq!(region.region.start_key, b("g"));
    assert_eq!(cluster.router_server_request_count(0, "GetRegion"), 0);
    assert_eq!(cluster.pd_request_count(0, "GetRegion"), 1);
    assert!(pd.core().router_service.pick().is_none(), "left out");
    // Other reads go to PD meanwhile.
    pd.all_stores(false).await.unwrap();
    assert_eq!(cluster.pd_request_count(0, "GetAllStores"), 1);

    assert!(cluster.remove_fault(rule));
    pd.core()
        .router_service
        .check_health(Duration::from_secs(3))
        .await;
    assert!(pd.core().router_service.pick().is_some());
    pd.region_by_key(b"h", false).await.unwrap().unwrap();
    assert_eq!(cluster.router_server_request_count(0, "GetRegion"), 1);
}
