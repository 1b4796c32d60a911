//! The mock's PD server as a PD client sees it over gRPC (plain tonic clients from
//! `tikv_proto`) and over its HTTP API (a hand-written HTTP/1.1 GET): members, TSO, region and
//! store queries, GC states, keyspaces, scatter/split, cluster-id checks, a PD restart.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tikv_mock::proto::keyspacepb::{self, keyspace_client::KeyspaceClient};
use tikv_mock::proto::pdpb::{self, pd_client::PdClient};
use tikv_mock::{Action, ApiVersion, FaultRule, ManualClock, Matcher, MockCluster, Times};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// Where the manual clock starts: 2023-11-14T22:13:20Z.
const START_MS: u64 = 1_700_000_000_000;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn pd_url(cluster: &MockCluster) -> String {
    format!("http://{}", cluster.pd_endpoints()[0])
}

async fn pd(cluster: &MockCluster) -> PdClient<Channel> {
    PdClient::connect(pd_url(cluster)).await.unwrap()
}

async fn keyspaces(cluster: &MockCluster) -> KeyspaceClient<Channel> {
    KeyspaceClient::connect(pd_url(cluster)).await.unwrap()
}

fn header(cluster: &MockCluster) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: cluster.cluster_id(),
        ..Default::default()
    })
}

/// The error of a response header, as (type, message); `None` when the header says OK.
fn header_error(h: &Option<pdpb::ResponseHeader>) -> Option<(pdpb::ErrorType, String)> {
    let e = h.as_ref()?.error.as_ref()?;
    Some((
        pdpb::ErrorType::try_from(e.r#type).unwrap_or(pdpb::ErrorType::Unknown),
        e.message.clone(),
    ))
}

async fn manual_cluster() -> (MockCluster, ManualClock) {
    let clock = ManualClock::new(START_MS);
    let cluster = MockCluster::builder()
        .manual_clock(clock.clone())
        .start()
        .await
        .unwrap();
    (cluster, clock)
}

fn tso_request(cluster: &MockCluster, count: u32) -> pdpb::TsoRequest {
    pdpb::TsoRequest {
        header: header(cluster),
        count,
        dc_location: String::new(),
    }
}

/// A minimal HTTP/1.1 GET: returns (status code, body parsed as JSON).
async fn http_get(cluster: &MockCluster, path: &str) -> (u16, Value) {
    let (status, body) = http_get_raw(cluster, path).await;
    (status, serde_json::from_slice(&body).unwrap())
}

/// A minimal HTTP/1.1 GET: returns (status code, body). Blocking std I/O on a blocking thread
/// keeps the test free of an HTTP client dependency.
async fn http_get_raw(cluster: &MockCluster, path: &str) -> (u16, Vec<u8>) {
    let addr = cluster.pd_endpoints()[0].clone();
    let request = format!("GET {path} HTTP/1.1\r\nHost: pd\r\nConnection: close\r\n\r\n");
    let raw = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap();
        raw
    })
    .await
    .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("no status code");
    (status, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[tokio::test]
async fn members_cluster_info_and_health() {
    let cluster = MockCluster::builder().cluster_id(42).start().await.unwrap();
    let mut client = pd(&cluster).await;
    // GetMembers is how a client learns the cluster id, so it needs none.
    let members = client
        .get_members(pdpb::GetMembersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(members.header.as_ref().unwrap().cluster_id, 42);
    let leader = members.leader.unwrap();
    assert_eq!(leader.name, "pd-1");
    assert_ne!(leader.member_id, 0);
    assert_eq!(leader.client_urls, vec![pd_url(&cluster)]);
    assert_eq!(members.etcd_leader.unwrap(), leader);
    assert_eq!(members.members, vec![leader]);

    let info = client
        .get_cluster_info(pdpb::GetClusterInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.service_modes,
        vec![pdpb::ServiceMode::PdSvcMode as i32]
    );

    let channel = Channel::from_shared(pd_url(&cluster))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn cluster_id_mismatch_is_a_failed_precondition() {
    let cluster = MockCluster::builder().cluster_id(42).start().await.unwrap();
    let mut client = pd(&cluster).await;
    for cluster_id in [0, 43] {
        let status = client
            .get_region(pdpb::GetRegionRequest {
                header: Some(pdpb::RequestHeader {
                    cluster_id,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            format!("mismatch cluster id, need 42 but got {cluster_id}")
        );
    }
    let mut ks = keyspaces(&cluster).await;
    let status = ks
        .load_keyspace(keyspacepb::LoadKeyspaceRequest {
            name: "DEFAULT".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn tso_batches_end_at_their_last_logical_and_never_repeat() {
    let (cluster, clock) = manual_cluster().await;
    let mut client = pd(&cluster).await;
    let requests = vec![
        tso_request(&cluster, 10),
        tso_request(&cluster, 1),
        tso_request(&cluster, 5),
    ];
    let mut responses = client
        .tso(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(r) = responses.next().await {
        let r = r.unwrap();
        let ts = r.timestamp.unwrap();
        got.push((
            r.count,
            ts.physical as u64,
            ts.logical as u64,
            ts.suffix_bits,
        ));
    }
    // Nothing allocated before, clock fixed: logical is the last of each batch.
    assert_eq!(
        got,
        vec![
            (10, START_MS, 10, 0),
            (1, START_MS, 11, 0),
            (5, START_MS, 16, 0)
        ]
    );

    // Two concurrent streams: every timestamp handed out is unique, each stream increasing,
    // also across a clock move.
    let (tx_a, rx_a) = tokio::sync::mpsc::channel(4);
    let (tx_b, rx_b) = tokio::sync::mpsc::channel(4);
    let mut a = client
        .tso(tokio_stream::wrappers::ReceiverStream::new(rx_a))
        .await
        .unwrap()
        .into_inner();
    let mut client_b = pd(&cluster).await;
    let mut b_stream = client_b
        .tso(tokio_stream::wrappers::ReceiverStream::new(rx_b))
        .await
        .unwrap()
        .into_inner();
    let mut all = Vec::new();
    let (mut last_a, mut last_b) = (0u64, 0u64);
    for i in 0..200u32 {
        if i == 100 {
            clock.advance(Duration::from_millis(3));
        }
        let count = i % 7 + 1;
        tx_a.send(tso_request(&cluster, count)).await.unwrap();
        tx_b.send(tso_request(&cluster, count + 1)).await.unwrap();
        for (stream, last) in [(&mut a, &mut last_a), (&mut b_stream, &mut last_b)] {
            let r = stream.next().await.unwrap().unwrap();
            let ts = r.timestamp.unwrap();
            let end = ((ts.physical as u64) << 18) | ts.logical as u64;
            let first = end - u64::from(r.count) + 1;
            assert!(first > *last, "stream went backwards");
            *last = end;
            all.extend(first..=end);
        }
    }
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a timestamp was handed out twice");
    assert!(last_a >> 18 == START_MS + 3 && last_b >> 18 == START_MS + 3);
}

#[tokio::test]
async fn tso_count_zero_and_wrong_cluster_end_the_stream() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut client = pd(&cluster).await;
    let requests = vec![tso_request(&cluster, 1), tso_request(&cluster, 0)];
    let mut responses = client
        .tso(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert!(responses.next().await.unwrap().is_ok());
    let status = responses.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unknown);
    assert!(status.message().contains("tso count should be positive"));
    assert!(responses.next().await.is_none());

    let mut responses = client
        .tso(tokio_stream::iter(vec![tso_request(&cluster, 1 << 18)]))
        .await
        .unwrap()
        .into_inner();
    let status = responses.next().await.unwrap().unwrap_err();
    assert!(
        status
            .message()
            .contains("maximum number of retries exceeded")
    );

    let bad = pdpb::TsoRequest {
        header: None,
        count: 1,
        dc_location: String::new(),
    };
    let mut responses = client
        .tso(tokio_stream::iter(vec![bad]))
        .await
        .unwrap()
        .into_inner();
    let status = responses.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn region_queries_after_splits() {
    let cluster = MockCluster::builder().start().await.unwrap();
    cluster.split_raw(["b", "m"]).unwrap();
    let mut client = pd(&cluster).await;
    let h = header(&cluster);

    let get = |key: &str| pdpb::GetRegionRequest {
        header: h.clone(),
        region_key: b(key),
        need_buckets: true,
    };
    let r = client.get_region(get("c")).await.unwrap().into_inner();
    assert!(header_error(&r.header).is_none());
    let region = r.region.unwrap();
    assert_eq!(
        (region.start_key.clone(), region.end_key.clone()),
        (b("b"), b("m"))
    );
    assert_eq!(
        r.leader.unwrap().store_id,
        cluster
            .region_for_raw_key(b"c")
            .unwrap()
            .1
            .unwrap()
            .store_id
    );
    assert!(r.buckets.is_none() && r.down_peers.is_empty() && r.pending_peers.is_empty());

    let prev = client.get_prev_region(get("c")).await.unwrap().into_inner();
    let prev_region = prev.region.unwrap();
    assert_eq!(
        (prev_region.start_key.clone(), prev_region.end_key.clone()),
        (b(""), b("b"))
    );
    let none = client.get_prev_region(get("a")).await.unwrap().into_inner();
    assert!(none.region.is_none() && header_error(&none.header).is_none());

    let by_id = client
        .get_region_by_id(pdpb::GetRegionByIdRequest {
            header: h.clone(),
            region_id: region.id,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.region.unwrap(), region);
    let unknown = client
        .get_region_by_id(pdpb::GetRegionByIdRequest {
            header: h.clone(),
            region_id: 999_999,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(unknown.region.is_none() && header_error(&unknown.header).is_none());

    // ScanRegions: limit <= 0 is unlimited; both the legacy and the new fields are filled.
    let scan = |start: &str, end: &str, limit: i32| pdpb::ScanRegionsRequest {
        header: h.clone(),
        start_key: b(start),
        end_key: b(end),
        limit,
    };
    let all = client
        .scan_regions(scan("", "", 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.regions.len(), 3);
    assert_eq!(all.region_metas.len(), 3);
    assert_eq!(all.leaders.len(), 3);
    assert_eq!(all.regions[1].region.as_ref().unwrap(), &region);
    let two = client
        .scan_regions(scan("a", "", 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        two.region_metas
            .iter()
            .map(|r| r.start_key.clone())
            .collect::<Vec<_>>(),
        vec![b(""), b("b")]
    );
    let bounded = client
        .scan_regions(scan("c", "m", -1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bounded.region_metas, vec![region.clone()]);

    // BatchScanRegions: ranges sorted and disjoint, a region shared by two ranges listed once.
    let range = |s: &str, e: &str| pdpb::KeyRange {
        start_key: b(s),
        end_key: b(e),
    };
    let batch = |ranges: Vec<pdpb::KeyRange>, limit: i32| pdpb::BatchScanRegionsRequest {
        header: h.clone(),
        need_buckets: false,
        ranges,
        limit,
        contain_all_key_range: true,
    };
    let r = client
        .batch_scan_regions(batch(
            vec![range("a", "c"), range("d", "e"), range("n", "")],
            0,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(header_error(&r.header).is_none());
    let starts: Vec<Bytes> = r
        .regions
        .iter()
        .map(|r| r.region.as_ref().unwrap().start_key.clone())
        .collect();
    assert_eq!(starts, vec![b(""), b("b"), b("m")]);
    let limited = client
        .batch_scan_regions(batch(vec![range("a", "c"), range("n", "")], 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(limited.regions.len(), 2);
    let overlapped = client
        .batch_scan_regions(batch(vec![range("a", "d"), range("c", "e")], 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        header_error(&overlapped.header),
        Some((
            pdpb::ErrorType::Unknown,
            "invalid key range, ranges overlapped".to_owned()
        ))
    );
    let reversed = client
        .batch_scan_regions(batch(vec![range("d", "c")], 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        header_error(&reversed.header),
        Some((
            pdpb::ErrorType::Unknown,
            "invalid key range, start key > end key".to_owned()
        ))
    );

    // QueryRegion answers keys, previous keys and ids in one batch.
    let mut stream = client
        .query_region(tokio_stream::iter(vec![pdpb::QueryRegionRequest {
            header: h.clone(),
            need_buckets: false,
            ids: vec![region.id, 424_242],
            keys: vec![b("c"), b("z")],
            prev_keys: vec![b("c")],
        }]))
        .await
        .unwrap()
        .into_inner();
    let q = stream.next().await.unwrap().unwrap();
    assert_eq!(q.key_id_map[0], region.id);
    assert_eq!(q.prev_key_id_map, vec![prev_region.id]);
    assert_eq!(
        q.regions_by_id[&region.id].region.as_ref().unwrap(),
        &region
    );
    assert!(q.regions_by_id[&424_242].region.is_none());
}

#[tokio::test]
async fn stores_known_and_unknown() {
    let cluster = MockCluster::builder().stores(2).start().await.unwrap();
    let mut client = pd(&cluster).await;
    let ids = cluster.store_ids();
    let store = client
        .get_store(pdpb::GetStoreRequest {
            header: header(&cluster),
            store_id: ids[0],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(header_error(&store.header).is_none());
    let meta = store.store.unwrap();
    assert_eq!(Some(meta.address.clone()), cluster.store_address(ids[0]));
    assert_eq!(meta.version, tikv_mock::TIKV_VERSION);
    assert_eq!(store.stats.unwrap().store_id, ids[0]);

    let unknown = client
        .get_store(pdpb::GetStoreRequest {
            header: header(&cluster),
            store_id: 4242,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(unknown.store.is_none());
    assert_eq!(
        header_error(&unknown.header),
        Some((
            pdpb::ErrorType::Unknown,
            "invalid store ID 4242, not found".to_owned()
        ))
    );

    for exclude_tombstone_stores in [false, true] {
        let all = client
            .get_all_stores(pdpb::GetAllStoresRequest {
                header: header(&cluster),
                exclude_tombstone_stores,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.stores.iter().map(|s| s.id).collect::<Vec<_>>(), ids);
    }
}

#[tokio::test]
async fn gc_safe_points_and_barriers_follow_pd_rules() {
    let (cluster, clock) = manual_cluster().await;
    let mut client = pd(&cluster).await;
    let h = header(&cluster);

    let state = |exclude_gc_barriers: bool| pdpb::GetGcStateRequest {
        header: h.clone(),
        keyspace_scope: None,
        exclude_gc_barriers,
        include_global_gc_barriers: true,
    };
    let s = client
        .get_gc_state(state(false))
        .await
        .unwrap()
        .into_inner();
    let gc = s.gc_state.unwrap();
    assert_eq!((gc.txn_safe_point, gc.gc_safe_point), (0, 0));
    assert!(!gc.is_keyspace_level_gc);
    assert_eq!(
        gc.keyspace_scope.unwrap().keyspace,
        Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(0xFFFF_FFFF))
    );

    // A barrier holds the txn safe point back.
    let set = client
        .set_gc_barrier(pdpb::SetGcBarrierRequest {
            header: h.clone(),
            keyspace_scope: None,
            barrier_id: "backup".into(),
            barrier_ts: 100,
            ttl_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(set.new_barrier_info.unwrap().ttl_seconds, 60);
    let advance = |target: u64| pdpb::AdvanceTxnSafePointRequest {
        header: h.clone(),
        keyspace_scope: None,
        target,
    };
    let r = client
        .advance_txn_safe_point(advance(200))
        .await
        .unwrap()
        .into_inner();
    assert!(header_error(&r.header).is_none());
    assert_eq!((r.old_txn_safe_point, r.new_txn_safe_point), (0, 100));
    assert!(
        r.blocker_description.contains("BarrierID: \"backup\""),
        "{}",
        r.blocker_description
    );

    // The GC safe point may not pass the txn safe point, nor go back.
    let advance_gc = |target: u64| pdpb::AdvanceGcSafePointRequest {
        header: h.clone(),
        keyspace_scope: None,
        target,
    };
    let r = client
        .advance_gc_safe_point(advance_gc(150))
        .await
        .unwrap()
        .into_inner();
    let (kind, message) = header_error(&r.header).unwrap();
    assert_eq!(kind, pdpb::ErrorType::Unknown);
    assert!(message.contains("exceeds the txn safe point"), "{message}");
    let r = client
        .advance_gc_safe_point(advance_gc(80))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.old_gc_safe_point, r.new_gc_safe_point), (0, 80));
    let r = client
        .advance_gc_safe_point(advance_gc(70))
        .await
        .unwrap()
        .into_inner();
    assert!(
        header_error(&r.header)
            .unwrap()
            .1
            .contains("ErrDecreasingGCSafePoint")
    );

    // The legacy API keeps a larger old value silently and fails with a gRPC status.
    let legacy = |safe_point: u64| pdpb::UpdateGcSafePointRequest {
        header: h.clone(),
        safe_point,
    };
    let r = client
        .update_gc_safe_point(legacy(50))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.new_safe_point, 80);
    let status = client.update_gc_safe_point(legacy(120)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unknown);
    assert!(
        status
            .message()
            .contains("ErrGCSafePointExceedsTxnSafePoint")
    );
    let r = client
        .update_gc_safe_point(legacy(100))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.new_safe_point, 100);
    let r = client
        .get_gc_safe_point(pdpb::GetGcSafePointRequest { header: h.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.safe_point, 100);

    // The barrier expires on the cluster clock (strictly after its whole-second expiration).
    clock.advance(Duration::from_secs(60));
    let r = client
        .advance_txn_safe_point(advance(200))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.new_txn_safe_point, 100);
    clock.advance(Duration::from_millis(1));
    let r = client
        .advance_txn_safe_point(advance(200))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.new_txn_safe_point, 200);
    assert!(r.blocker_description.is_empty());
    let s = client
        .get_gc_state(state(false))
        .await
        .unwrap()
        .into_inner();
    assert!(s.gc_state.unwrap().gc_barriers.is_empty());
    let r = client
        .advance_txn_safe_point(advance(150))
        .await
        .unwrap()
        .into_inner();
    assert!(
        header_error(&r.header)
            .unwrap()
            .1
            .contains("ErrDecreasingTxnSafePoint")
    );

    // Barriers below the txn safe point are refused; TTL must be positive.
    let r = client
        .set_gc_barrier(pdpb::SetGcBarrierRequest {
            header: h.clone(),
            keyspace_scope: None,
            barrier_id: "late".into(),
            barrier_ts: 199,
            ttl_seconds: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        header_error(&r.header)
            .unwrap()
            .1
            .contains("behind the txn safe point 200")
    );
    let r = client
        .set_gc_barrier(pdpb::SetGcBarrierRequest {
            header: h.clone(),
            keyspace_scope: None,
            barrier_id: "zero".into(),
            barrier_ts: 300,
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        header_error(&r.header).unwrap().1,
        "[PD:common:ErrInvalidArgument]invalid argument for ttl: 0s"
    );

    // The service safe point API: gc_worker advances the txn safe point, others set barriers.
    let service = |id: &str, ttl: i64, safe_point: u64| pdpb::UpdateServiceGcSafePointRequest {
        header: h.clone(),
        service_id: b(id),
        ttl,
        safe_point,
    };
    let r = client
        .update_service_gc_safe_point(service("cdc", 600, 250))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.service_id.as_ref(), r.min_safe_point),
        (&b"gc_worker"[..], 200)
    );
    let r = client
        .update_service_gc_safe_point(service("gc_worker", i64::MAX, 300))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.service_id.as_ref(), r.min_safe_point),
        (&b"cdc"[..], 250)
    );
    let status = client
        .update_service_gc_safe_point(service("gc_worker", 10, 300))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unknown);
    client
        .update_service_gc_safe_point(service("cdc", 0, 0))
        .await
        .unwrap();

    // A global barrier blocks every scope.
    let g = client
        .set_global_gc_barrier(pdpb::SetGlobalGcBarrierRequest {
            header: h.clone(),
            barrier_id: "br".into(),
            barrier_ts: 260,
            ttl_seconds: i64::MAX,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.new_barrier_info.unwrap().ttl_seconds, i64::MAX);
    let r = client
        .advance_txn_safe_point(advance(400))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.new_txn_safe_point, 260);
    assert!(r.blocker_description.starts_with("GlobalGCBarrier {"));
    let s = client.get_gc_state(state(true)).await.unwrap().into_inner();
    assert_eq!(s.global_gc_barriers.unwrap().barriers.len(), 1);
    let all = client
        .get_all_keyspaces_gc_states(pdpb::GetAllKeyspacesGcStatesRequest {
            header: h.clone(),
            exclude_gc_barriers: false,
            exclude_global_gc_barriers: false,
        })
        .await
        .unwrap()
        .into_inner();
    let unified = Some(pdpb::KeyspaceScope {
        keyspace: Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(0xFFFF_FFFF)),
    });
    let null = all
        .gc_states
        .iter()
        .find(|s| s.keyspace_scope == unified)
        .expect("the unified state is listed");
    assert!(!null.is_keyspace_level_gc);
    assert_eq!(null.txn_safe_point, 260);
    assert_eq!(all.global_gc_barriers.len(), 1);
    let d = client
        .delete_global_gc_barrier(pdpb::DeleteGlobalGcBarrierRequest {
            header: h.clone(),
            barrier_id: "br".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.deleted_barrier_info.unwrap().barrier_ts, 260);
    let d = client
        .delete_gc_barrier(pdpb::DeleteGcBarrierRequest {
            header: h.clone(),
            keyspace_scope: None,
            barrier_id: "nothing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(header_error(&d.header).is_none() && d.deleted_barrier_info.is_none());
}

#[tokio::test]
async fn keyspaces_load_list_update_and_watch() {
    let cluster = MockCluster::builder()
        .api_version(ApiVersion::V2)
        .keyspace("ks1")
        .start()
        .await
        .unwrap();
    let mut client = keyspaces(&cluster).await;
    let h = header(&cluster);
    let load = |name: &str| keyspacepb::LoadKeyspaceRequest {
        header: h.clone(),
        name: name.into(),
        namespace: None,
    };
    let default = client
        .load_keyspace(load("DEFAULT"))
        .await
        .unwrap()
        .into_inner();
    let default = default.keyspace.unwrap();
    assert_eq!(
        default.keyspace,
        Some(keyspacepb::keyspace_meta::Keyspace::Id(0))
    );
    let ks1 = client
        .load_keyspace(load("ks1"))
        .await
        .unwrap()
        .into_inner()
        .keyspace
        .unwrap();
    assert_eq!(
        ks1.keyspace,
        Some(keyspacepb::keyspace_meta::Keyspace::Id(1))
    );
    assert_eq!(ks1.state, keyspacepb::KeyspaceState::Enabled as i32);
    // Unknown names, including "" (the client maps "" to DEFAULT), are ENTRY_NOT_FOUND.
    for name in ["nope", ""] {
        let r = client.load_keyspace(load(name)).await.unwrap().into_inner();
        assert!(r.keyspace.is_none());
        assert_eq!(
            header_error(&r.header),
            Some((
                pdpb::ErrorType::EntryNotFound,
                "[PD:keyspace:ErrKeyspaceNotFound]keyspace does not exist".to_owned()
            ))
        );
    }
    let by_id = client
        .load_keyspace_by_id(keyspacepb::LoadKeyspaceByIdRequest {
            header: h.clone(),
            keyspace: Some(keyspacepb::load_keyspace_by_id_request::Keyspace::Id(1)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.keyspace.unwrap(), ks1);

    let mut watch = client
        .watch_keyspaces(keyspacepb::WatchKeyspacesRequest { header: h.clone() })
        .await
        .unwrap()
        .into_inner();
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!(
        first
            .keyspaces
            .iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>(),
        ["DEFAULT", "ks1"]
    );

    let update =
        |id: u32, state: keyspacepb::KeyspaceState| keyspacepb::UpdateKeyspaceStateRequest {
            header: h.clone(),
            keyspace: Some(keyspacepb::update_keyspace_state_request::Keyspace::Id(id)),
            state: state as i32,
        };
    let r = client
        .update_keyspace_state(update(1, keyspacepb::KeyspaceState::Disabled))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.keyspace.unwrap().state,
        keyspacepb::KeyspaceState::Disabled as i32
    );
    let changed = watch.next().await.unwrap().unwrap();
    assert_eq!(changed.keyspaces.len(), 1);
    assert_eq!(
        changed.keyspaces[0].state,
        keyspacepb::KeyspaceState::Disabled as i32
    );
    let r = client
        .update_keyspace_state(update(1, keyspacepb::KeyspaceState::Tombstone))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        header_error(&r.header).unwrap().1,
        "cannot change keyspace state from DISABLED to TOMBSTONE"
    );
    let r = client
        .update_keyspace_state(update(0, keyspacepb::KeyspaceState::Disabled))
        .await
        .unwrap()
        .into_inner();
    assert!(
        header_error(&r.header)
            .unwrap()
            .1
            .contains("ErrModifyDefaultKeyspace")
    );

    // Keyspaces created through the control API reach watchers too.
    cluster.create_keyspace("ks2").unwrap();
    let created = watch.next().await.unwrap().unwrap();
    assert_eq!(created.keyspaces[0].name, "ks2");

    let page = |start: u32, limit: u32| keyspacepb::GetAllKeyspacesRequest {
        header: h.clone(),
        start_keyspace: Some(keyspacepb::get_all_keyspaces_request::StartKeyspace::StartId(start)),
        limit,
        namespace: None,
    };
    let r = client
        .get_all_keyspaces(page(1, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.keyspaces
            .iter()
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>(),
        ["ks1"]
    );
    let r = client
        .get_all_keyspaces(page(0, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.keyspaces.len(), 3);
}

#[tokio::test]
async fn scatter_split_and_operators() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut client = pd(&cluster).await;
    let h = header(&cluster);
    let region = cluster.regions()[0].id;

    let r = client
        .scatter_region(pdpb::ScatterRegionRequest {
            header: h.clone(),
            regions_id: vec![region],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.finished_percentage, 100);
    let op = client
        .get_operator(pdpb::GetOperatorRequest {
            header: h.clone(),
            region_id: region,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(header_error(&op.header).is_none());
    assert_eq!(op.desc.as_ref(), b"scatter-region");
    assert_eq!(op.status, pdpb::OperatorStatus::Success as i32);

    let status = client
        .scatter_region(pdpb::ScatterRegionRequest {
            header: h.clone(),
            regions_id: vec![999_999],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unknown);

    // Split at keys: the ids of the regions now starting at them; a key that already starts a
    // region counts as unprocessed, as PD's splitter reports it.
    let r = client
        .split_regions(pdpb::SplitRegionsRequest {
            header: h.clone(),
            split_keys: vec![b("g"), b("p")],
            retry_limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.finished_percentage, 100);
    let g = cluster.region_for_raw_key(b"g").unwrap().0;
    let p = cluster.region_for_raw_key(b"p").unwrap().0;
    assert_eq!(g.start_key, b("g"));
    assert_eq!(r.regions_id, vec![g.id, p.id]);
    let r = client
        .split_regions(pdpb::SplitRegionsRequest {
            header: h.clone(),
            split_keys: vec![b("g"), b("t")],
            retry_limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.finished_percentage, 50);

    let r = client
        .split_and_scatter_regions(pdpb::SplitAndScatterRegionsRequest {
            header: h.clone(),
            split_keys: vec![b("x")],
            group: String::new(),
            retry_limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.split_finished_percentage, r.scatter_finished_percentage),
        (100, 100)
    );
    let x = cluster.region_for_raw_key(b"x").unwrap().0;
    assert_eq!(r.regions_id, vec![x.id]);

    let none = client
        .get_operator(pdpb::GetOperatorRequest {
            header: h.clone(),
            region_id: g.id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        header_error(&none.header),
        Some((pdpb::ErrorType::RegionNotFound, "Not Found".to_owned()))
    );
}

#[tokio::test]
async fn external_timestamp_and_min_ts() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut client = pd(&cluster).await;
    let h = header(&cluster);
    let min = client
        .get_min_ts(pdpb::GetMinTsRequest { header: h.clone() })
        .await
        .unwrap()
        .into_inner()
        .timestamp
        .unwrap();
    let min = ((min.physical as u64) << 18) | min.logical as u64;
    assert!(min > 0);

    let set = |timestamp: u64| pdpb::SetExternalTimestampRequest {
        header: h.clone(),
        timestamp,
    };
    let r = client
        .set_external_timestamp(set(min))
        .await
        .unwrap()
        .into_inner();
    assert!(header_error(&r.header).is_none());
    let r = client
        .set_external_timestamp(set(min))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        header_error(&r.header),
        Some((
            pdpb::ErrorType::InvalidValue,
            "the external timestamp should be larger than current external timestamp".to_owned()
        ))
    );
    let r = client
        .set_external_timestamp(set(u64::MAX))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        header_error(&r.header).unwrap().0,
        pdpb::ErrorType::InvalidValue
    );
    let got = client
        .get_external_timestamp(pdpb::GetExternalTimestampRequest { header: h.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.timestamp, min);
}

#[tokio::test]
async fn pd_restart_keeps_state_and_clients_reconnect() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut client = pd(&cluster).await;
    let ts = |r: pdpb::TsoResponse| {
        let t = r.timestamp.unwrap();
        ((t.physical as u64) << 18) | t.logical as u64
    };
    let mut stream = client
        .tso(tokio_stream::iter(vec![tso_request(&cluster, 1)]))
        .await
        .unwrap()
        .into_inner();
    let before = ts(stream.next().await.unwrap().unwrap());

    cluster.stop_pd().await;
    assert!(
        client
            .get_members(pdpb::GetMembersRequest::default())
            .await
            .is_err()
    );
    assert!(PdClient::connect(pd_url(&cluster)).await.is_err());

    cluster.start_pd().await.unwrap();
    let mut client = pd(&cluster).await;
    client
        .get_members(pdpb::GetMembersRequest::default())
        .await
        .unwrap();
    let mut stream = client
        .tso(tokio_stream::iter(vec![tso_request(&cluster, 1)]))
        .await
        .unwrap()
        .into_inner();
    assert!(ts(stream.next().await.unwrap().unwrap()) > before);
}

#[tokio::test]
async fn http_regions_stores_and_min_resolved_ts() {
    let cluster = MockCluster::builder().start().await.unwrap();
    cluster.split_raw(["b", "m"]).unwrap();

    let (status, regions) = http_get(&cluster, "/pd/api/v1/regions").await;
    assert_eq!(status, 200);
    assert_eq!(regions["count"], 3);
    let second = &regions["regions"][1];
    assert_eq!(second["start_key"], "62");
    assert_eq!(second["end_key"], "6D");
    let region = cluster.region_for_raw_key(b"c").unwrap();
    assert_eq!(second["id"], region.0.id);
    assert_eq!(
        second["epoch"]["version"],
        region.0.region_epoch.unwrap().version
    );
    assert_eq!(second["peers"].as_array().unwrap().len(), 3);
    assert_eq!(second["peers"][0]["role_name"], "Voter");
    assert_eq!(second["leader"]["store_id"], region.1.unwrap().store_id);

    let (status, stores) = http_get(&cluster, "/pd/api/v1/stores").await;
    assert_eq!(status, 200);
    assert_eq!(stores["count"], 3);
    let first = &stores["stores"][0];
    assert_eq!(first["store"]["id"], cluster.store_ids()[0]);
    assert_eq!(first["store"]["state_name"], "Up");
    assert_eq!(first["store"]["version"], tikv_mock::TIKV_VERSION);
    assert!(first["status"]["region_count"].as_u64().unwrap() >= 1);

    let (status, cluster_wide) = http_get(&cluster, "/pd/api/v1/min-resolved-ts").await;
    assert_eq!(status, 200);
    assert_eq!(cluster_wide["is_real_time"], true);
    assert!(cluster_wide["stores_min_resolved_ts"].is_null());
    let first_ts = cluster_wide["min_resolved_ts"].as_u64().unwrap();
    assert!(first_ts > 0 && first_ts < u64::MAX);

    let ids = cluster.store_ids();
    let scope: Vec<String> = ids.iter().map(u64::to_string).collect();
    let (status, scoped) = http_get(
        &cluster,
        &format!("/pd/api/v1/min-resolved-ts?scope={},4242", scope.join(",")),
    )
    .await;
    assert_eq!(status, 200);
    let per_store = scoped["stores_min_resolved_ts"].as_object().unwrap();
    assert_eq!(per_store.len(), ids.len() + 1);
    assert_eq!(per_store["4242"], u64::MAX);
    let store_ts = per_store[&ids[0].to_string()].as_u64().unwrap();
    assert!(store_ts > first_ts);
    assert_eq!(scoped["min_resolved_ts"].as_u64().unwrap(), store_ts);

    let (status, error) = http_get(&cluster, "/pd/api/v1/min-resolved-ts?scope=x").await;
    assert_eq!(status, 400);
    assert_eq!(error, "strconv.ParseUint: parsing \"x\": invalid syntax");
}

#[tokio::test]
async fn unknown_http_paths_and_grpc_services() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let (status, body) = http_get_raw(&cluster, "/pd/api/v1/config").await;
    assert_eq!(
        (status, body.as_slice()),
        (404, &b"404 page not found\n"[..])
    );
    let channel = Channel::from_shared(pd_url(&cluster))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status =
        tikv_mock::proto::resource_manager::resource_manager_client::ResourceManagerClient::new(
            channel,
        )
        .list_resource_groups(
            tikv_mock::proto::resource_manager::ListResourceGroupsRequest::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn fault_rules_reach_pd_requests_and_tso_streams() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut client = pd(&cluster).await;
    cluster.add_fault(FaultRule::new(
        Matcher::pd().command("GetRegion"),
        Action::status(tonic::Code::Unavailable, "injected"),
    ));
    let get = pdpb::GetRegionRequest {
        header: header(&cluster),
        region_key: b("a"),
        need_buckets: false,
    };
    let status = client.get_region(get.clone()).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, "injected")
    );
    assert!(
        client
            .get_region(get)
            .await
            .unwrap()
            .into_inner()
            .region
            .is_some()
    );

    // An error after the allocation ends the TSO stream; the timestamp is spent anyway.
    cluster.add_fault(
        FaultRule::new(
            Matcher::pd().command("Tso"),
            Action::status(tonic::Code::Unknown, "tso failed"),
        )
        .after_apply()
        .times(Times::Once),
    );
    let requests = vec![tso_request(&cluster, 1), tso_request(&cluster, 1)];
    let mut responses = client
        .tso(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        responses.next().await.unwrap().unwrap_err().message(),
        "tso failed"
    );
    assert!(responses.next().await.is_none());
}
