//! PD forwarding (`pd-forwarded-host`), follower-handled region reads
//! (`pd-allow-follower-handle`), `QueryRegion` on followers, and the client partition
//! (`isolate_pd_member`), end to end through gRPC on a three-member PD.
//!
//! What PD does, and what these tests hold the mock to (tikv/pd `server/grpc_service.go`
//! `unaryFollowerMiddleware` / `validateRoleInRequest` / `Tso` / `QueryRegion`,
//! `server/forward.go` `validatePDForwardedHost` / `isLocalRequest`,
//! `pkg/utils/grpcutil/cluster.go`): a follower hands a request naming the leader to the leader;
//! a host that is not the leader is refused with a text that still says "not leader"; region
//! reads that allow it are answered by followers, "region not found" when a follower lacks the
//! region or has not synced; store reads never are.

use crate::common;

use common::*;
use tikv_mock::MockCluster;
use tikv_mock::proto::pdpb::{self, pd_client::PdClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const FORWARDED_HOST: &str = "pd-forwarded-host";
const FOLLOWER_HANDLE: &str = "pd-allow-follower-handle";

fn member_url(cluster: &MockCluster, member: usize) -> String {
    format!("http://{}", cluster.pd_endpoints()[member])
}

async fn member(cluster: &MockCluster, member: usize) -> PdClient<Channel> {
    PdClient::connect(member_url(cluster, member))
        .await
        .unwrap()
}

/// A request carrying `pd-forwarded-host: host`.
fn forwarded<T>(message: T, host: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED_HOST, host.parse().unwrap());
    request
}

/// A request carrying `pd-allow-follower-handle` (PD's client sends it with an empty value).
fn follower_handle<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(FOLLOWER_HANDLE, "".parse().unwrap());
    request
}

fn stores_req(cluster: &MockCluster) -> pdpb::GetAllStoresRequest {
    pdpb::GetAllStoresRequest {
        header: pd_header(cluster),
        ..Default::default()
    }
}

fn region_req(cluster: &MockCluster, key: &[u8]) -> pdpb::GetRegionRequest {
    pdpb::GetRegionRequest {
        header: pd_header(cluster),
        region_key: b(key),
        need_buckets: false,
    }
}

fn tso_req(cluster: &MockCluster, count: u32) -> pdpb::TsoRequest {
    pdpb::TsoRequest {
        header: pd_header(cluster),
        count,
        dc_location: String::new(),
    }
}

async fn three_members() -> MockCluster {
    let cluster = MockCluster::builder().pd_members(3).start().await.unwrap();
    assert_eq!(cluster.pd_leader(), 0);
    cluster
}

fn region_not_found(header: Option<&pdpb::ResponseHeader>) -> bool {
    header.and_then(|h| h.error.as_ref()).is_some_and(|e| {
        e.r#type == pdpb::ErrorType::RegionNotFound as i32 && e.message == "region not found"
    })
}

#[tokio::test]
async fn a_follower_forwards_unary_calls_to_the_leader_it_is_told() {
    let cluster = three_members().await;
    let leader_url = member_url(&cluster, 0);
    let mut follower = member(&cluster, 1).await;

    // Without the header a follower refuses, as before.
    let status = follower
        .get_all_stores(stores_req(&cluster))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "not leader");
    assert_eq!(cluster.pd_forwarded_count(1, 0), 0);

    // Naming the leader, the follower hands it over: the leader answers, the hop is counted.
    let stores = follower
        .get_all_stores(forwarded(stores_req(&cluster), &leader_url))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stores.stores.len(), 3);
    assert_eq!(cluster.pd_forwarded_count(1, 0), 1);
    assert_eq!(cluster.pd_request_count(0, "GetAllStores"), 1);
    assert_eq!(cluster.pd_request_count(1, "GetAllStores"), 0);
    // The scheme may differ (clients rewrite it to match their TLS setting).
    let https = leader_url.replacen("http://", "https://", 1);
    follower
        .get_region(forwarded(region_req(&cluster, b"k"), &https))
        .await
        .unwrap();
    assert_eq!(cluster.pd_forwarded_count(1, 0), 2);

    // A host that is not the leader is refused with a text that still reads "not leader", so
    // clients refresh their members; so is a host without a scheme.
    for host in [member_url(&cluster, 2), cluster.pd_endpoints()[0].clone()] {
        let status = follower
            .get_all_stores(forwarded(stores_req(&cluster), &host))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            format!(
                "forwarded host {host:?} is not a client URL of the PD leader: pd not leader of \
                 cluster"
            )
        );
    }
    // The leader naming itself handles the request locally; an empty header means no forward.
    let mut leader = member(&cluster, 0).await;
    leader
        .get_all_stores(forwarded(stores_req(&cluster), &leader_url))
        .await
        .unwrap();
    let status = follower
        .get_all_stores(forwarded(stores_req(&cluster), ""))
        .await
        .unwrap_err();
    assert_eq!(status.message(), "not leader");
    assert_eq!(
        cluster
            .pd_forwarded_counts()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![((1, 0), 2)]
    );

    // The leader still validates the forwarded request itself: a wrong cluster id fails there.
    let status = follower
        .get_all_stores(forwarded(pdpb::GetAllStoresRequest::default(), &leader_url))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);

    // After the leader moves, naming the old one is refused.
    cluster.transfer_pd_leader(2).unwrap();
    let status = follower
        .get_all_stores(forwarded(stores_req(&cluster), &leader_url))
        .await
        .unwrap_err();
    assert!(status.message().contains("not leader"), "{status:?}");
    cluster.reset_pd_request_counts();
    assert!(cluster.pd_forwarded_counts().is_empty());
    assert_eq!(cluster.pd_request_count(0, "GetAllStores"), 0);
}

#[tokio::test]
async fn a_tso_stream_opened_on_a_follower_is_proxied_to_the_leader() {
    let cluster = three_members().await;
    let mut follower = member(&cluster, 2).await;
    let (tx, rx) = mpsc::channel(4);
    let mut stream = follower
        .tso(forwarded(ReceiverStream::new(rx), &member_url(&cluster, 0)))
        .await
        .unwrap()
        .into_inner();
    let mut last = 0i64;
    for count in [1, 5, 3] {
        tx.send(tso_req(&cluster, count)).await.unwrap();
        let resp = bounded("forwarded tso", stream.message())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.count, count);
        let ts = resp.timestamp.unwrap();
        let composed = (ts.physical << 18) + ts.logical;
        assert!(composed > last);
        last = composed;
    }
    assert_eq!(cluster.pd_forwarded_count(2, 0), 3);
    assert_eq!(cluster.pd_request_count(0, "Tso"), 3);
    assert_eq!(cluster.pd_request_count(2, "Tso"), 0);

    // The leader moves away from the host the stream names: the next request ends the stream
    // with the not-leader marker.
    cluster.transfer_pd_leader(1).unwrap();
    tx.send(tso_req(&cluster, 1)).await.unwrap();
    let status = bounded("stale forward", stream.message())
        .await
        .unwrap_err();
    assert!(status.message().contains("not leader"), "{status:?}");
}

#[tokio::test]
async fn an_isolated_leader_stays_leader_and_is_reached_through_followers() {
    let cluster = three_members().await;
    let leader_url = member_url(&cluster, 0);
    cluster.isolate_pd_member(0).await.unwrap();
    assert_eq!(
        cluster.pd_leader(),
        0,
        "a partition does not move leadership"
    );
    assert!(cluster.isolate_pd_member(0).await.is_err());

    // The client cannot reach it: no connection, no health.
    let direct = Channel::from_shared(leader_url.clone())
        .unwrap()
        .connect()
        .await;
    assert!(direct.is_err(), "isolated member still accepts connections");

    // The followers still name it leader, and reach it for the client.
    let mut follower = member(&cluster, 1).await;
    let members = follower
        .get_members(pdpb::GetMembersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        members.leader.unwrap().client_urls,
        vec![leader_url.clone()]
    );
    follower
        .get_all_stores(forwarded(stores_req(&cluster), &leader_url))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(1);
    tx.send(tso_req(&cluster, 1)).await.unwrap();
    let mut stream = follower
        .tso(forwarded(ReceiverStream::new(rx), &leader_url))
        .await
        .unwrap()
        .into_inner();
    bounded("tso through follower", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cluster.pd_forwarded_count(1, 0), 2);

    // Healing reopens its address; health and direct calls work again.
    cluster.heal_pd_member(0).await.unwrap();
    assert!(cluster.heal_pd_member(0).await.is_err());
    let channel = Channel::from_shared(leader_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1, "SERVING");
    PdClient::new(channel)
        .get_all_stores(stores_req(&cluster))
        .await
        .unwrap();

    // A crash of an isolated leader moves the leadership; the old host is then refused.
    cluster.isolate_pd_member(0).await.unwrap();
    cluster.stop_pd_member(0).await.unwrap();
    assert_eq!(cluster.pd_leader(), 1);
    let status = follower
        .get_all_stores(forwarded(stores_req(&cluster), &leader_url))
        .await
        .unwrap_err();
    assert!(status.message().contains("not leader"), "{status:?}");
    assert!(
        cluster.heal_pd_member(0).await.is_err(),
        "down, not isolated"
    );
    cluster.start_pd_member(0).await.unwrap();
}

#[tokio::test]
async fn followers_answer_region_reads_only_when_allowed() {
    let cluster = three_members().await;
    cluster.split_raw(["m"]).unwrap();
    let mut follower = member(&cluster, 1).await;

    // Not allowed: PD's own refusal text, which still says "not leader".
    let status = follower
        .get_region(region_req(&cluster, b"a"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.message(),
        "not leader and follower handling not allowed"
    );

    // Allowed: the follower answers from its region map.
    let resp = follower
        .get_region(follower_handle(region_req(&cluster, b"z")))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.header.as_ref().unwrap().error.is_none());
    let region = resp.region.unwrap();
    assert_eq!(region.start_key, b(b"m"));
    assert!(resp.leader.is_some());
    let prev = follower
        .get_prev_region(follower_handle(region_req(&cluster, b"m")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(prev.region.unwrap().end_key, b(b"m"));
    let by_id = follower
        .get_region_by_id(follower_handle(pdpb::GetRegionByIdRequest {
            header: pd_header(&cluster),
            region_id: region.id,
            need_buckets: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.region.unwrap().id, region.id);
    assert_eq!(cluster.pd_request_count(1, "GetRegion"), 1);
    assert_eq!(cluster.pd_request_count(0, "GetRegion"), 0);

    // A region the follower does not have is "region not found", where the leader answers an
    // empty response.
    let missing = follower
        .get_region_by_id(follower_handle(pdpb::GetRegionByIdRequest {
            header: pd_header(&cluster),
            region_id: 999_999,
            need_buckets: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(region_not_found(missing.header.as_ref()));
    let mut leader = member(&cluster, 0).await;
    let missing = leader
        .get_region_by_id(pdpb::GetRegionByIdRequest {
            header: pd_header(&cluster),
            region_id: 999_999,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(missing.header.unwrap().error.is_none() && missing.region.is_none());

    // Scans too.
    let scanned = follower
        .scan_regions(follower_handle(pdpb::ScanRegionsRequest {
            header: pd_header(&cluster),
            start_key: b(b""),
            end_key: b(b""),
            limit: 10,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scanned.regions.len(), 2);
    let batch = follower
        .batch_scan_regions(follower_handle(pdpb::BatchScanRegionsRequest {
            header: pd_header(&cluster),
            ranges: vec![pdpb::KeyRange {
                start_key: b(b"a"),
                end_key: b(b"b"),
            }],
            limit: 10,
            contain_all_key_range: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(batch.regions.len(), 1);

    // Store reads are the leader's alone, follower handle or not.
    let status = follower
        .get_store(follower_handle(pdpb::GetStoreRequest {
            header: pd_header(&cluster),
            store_id: cluster.store_ids()[0],
        }))
        .await
        .unwrap_err();
    assert_eq!(status.message(), "not leader");

    // A follower whose region syncer stopped has nothing to say.
    cluster.set_pd_region_sync(1, false).unwrap();
    let resp = follower
        .get_region(follower_handle(region_req(&cluster, b"z")))
        .await
        .unwrap()
        .into_inner();
    assert!(region_not_found(resp.header.as_ref()) && resp.region.is_none());
    let batch = follower
        .batch_scan_regions(follower_handle(pdpb::BatchScanRegionsRequest {
            header: pd_header(&cluster),
            ranges: vec![pdpb::KeyRange {
                start_key: b(b""),
                end_key: b(b""),
            }],
            limit: 10,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(region_not_found(batch.header.as_ref()));
    // The leader is not affected by the knob.
    cluster.set_pd_region_sync(0, false).unwrap();
    let resp = leader
        .get_region(region_req(&cluster, b"z"))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region.is_some());
    cluster.set_pd_region_sync(1, true).unwrap();
    assert!(cluster.set_pd_region_sync(3, true).is_err());
}

#[tokio::test]
async fn query_region_streams_are_answered_by_followers() {
    let cluster = three_members().await;
    cluster.split_raw(["m"]).unwrap();
    let mut follower = member(&cluster, 2).await;
    let (tx, rx) = mpsc::channel(4);
    let mut stream = follower
        .query_region(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let query = pdpb::QueryRegionRequest {
        header: pd_header(&cluster),
        keys: vec![b(b"a"), b(b"z")],
        prev_keys: vec![b(b"m")],
        ids: vec![],
        need_buckets: false,
    };
    tx.send(query.clone()).await.unwrap();
    let resp = bounded("query region", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert!(resp.header.as_ref().unwrap().error.is_none());
    assert_eq!(resp.key_id_map.len(), 2);
    assert_ne!(resp.key_id_map[0], resp.key_id_map[1]);
    assert_eq!(resp.prev_key_id_map, vec![resp.key_id_map[0]]);
    assert_eq!(resp.regions_by_id.len(), 2);
    assert_eq!(cluster.pd_request_count(2, "QueryRegion"), 1);

    // Not synced: the follower answers with the region-not-found header and keeps the stream.
    cluster.set_pd_region_sync(2, false).unwrap();
    tx.send(query.clone()).await.unwrap();
    let resp = bounded("unsynced query", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert!(region_not_found(resp.header.as_ref()));
    assert!(resp.regions_by_id.is_empty());
    cluster.set_pd_region_sync(2, true).unwrap();
    tx.send(query).await.unwrap();
    let resp = bounded("synced again", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.regions_by_id.len(), 2);
    assert_eq!(cluster.pd_request_count(2, "QueryRegion"), 3);
}
