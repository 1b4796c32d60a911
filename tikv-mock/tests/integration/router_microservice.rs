//! The router microservice: router servers registered in PD's meta storage, `routerpb.Router`
//! answered from PD's maps, stops, deregistration and a stopped region syncer.

use tikv_mock::MockCluster;
use tikv_mock::proto::meta_storagepb::{self, meta_storage_client::MetaStorageClient};
use tikv_mock::proto::pdpb;
use tikv_mock::proto::routerpb::router_client::RouterClient;
use tonic::transport::Channel;

async fn router(cluster: &MockCluster, server: usize) -> RouterClient<Channel> {
    RouterClient::connect(format!("http://{}", cluster.router_server_addrs()[server]))
        .await
        .unwrap()
}

async fn meta_storage(cluster: &MockCluster, member: usize) -> MetaStorageClient<Channel> {
    MetaStorageClient::connect(format!("http://{}", cluster.pd_endpoints()[member]))
        .await
        .unwrap()
}

fn pd_header(cluster: &MockCluster) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: cluster.cluster_id(),
        ..Default::default()
    })
}

/// A prefix read of the router registry on PD member `member`.
async fn registry(cluster: &MockCluster, member: usize) -> meta_storagepb::GetResponse {
    let prefix = format!("/ms/{}/router/registry/", cluster.cluster_id());
    let mut end = prefix.clone().into_bytes();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    meta_storage(cluster, member)
        .await
        .get(meta_storagepb::GetRequest {
            key: prefix.into_bytes().into(),
            range_end: end.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

fn registered_addrs(resp: &meta_storagepb::GetResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| {
            let entry: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
            let addr = entry["service-addr"].as_str().unwrap().to_owned();
            let key = String::from_utf8(kv.key.to_vec()).unwrap();
            assert!(key.ends_with(&addr), "{key} names {addr}");
            addr
        })
        .collect()
}

async fn region_by_key(
    cluster: &MockCluster,
    server: usize,
    key: &[u8],
) -> Result<pdpb::GetRegionResponse, tonic::Status> {
    router(cluster, server)
        .await
        .get_region(pdpb::GetRegionRequest {
            header: pd_header(cluster),
            region_key: key.to_vec().into(),
            need_buckets: false,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn servers_are_registered_in_meta_storage_with_pd_entries() {
    let cluster = MockCluster::builder()
        .router_microservice(2)
        .start()
        .await
        .unwrap();
    let resp = registry(&cluster, 0).await;
    let header = resp.header.clone().unwrap();
    assert_eq!(header.cluster_id, cluster.cluster_id());
    assert!(header.error.is_none());
    assert!(header.revision > 1);
    assert_eq!(resp.count, 2);
    let mut expected: Vec<String> = cluster
        .router_server_addrs()
        .iter()
        .map(|a| format!("http://{a}"))
        .collect();
    expected.sort();
    assert_eq!(registered_addrs(&resp), expected);
    let entry: serde_json::Value = serde_json::from_slice(&resp.kvs[0].value).unwrap();
    for field in [
        "name",
        "version",
        "git-hash",
        "deploy-path",
        "start-timestamp",
    ] {
        assert!(entry.get(field).is_some(), "{field} in {entry}");
    }

    // Deregistered servers leave the registry; registered ones come back.
    cluster.set_router_registered(1, false).unwrap();
    assert!(!cluster.is_router_registered(1));
    let resp = registry(&cluster, 0).await;
    assert_eq!(
        registered_addrs(&resp),
        vec![format!("http://{}", cluster.router_server_addrs()[0])]
    );
    cluster.set_router_registered(1, true).unwrap();
    assert_eq!(registry(&cluster, 0).await.count, 2);
    assert!(cluster.set_router_registered(2, true).is_err());
}

#[tokio::test]
async fn meta_storage_is_served_by_the_leader_only() {
    let cluster = MockCluster::builder()
        .pd_members(2)
        .router_microservice(1)
        .start()
        .await
        .unwrap();
    let err = meta_storage(&cluster, 1)
        .await
        .get(meta_storagepb::GetRequest {
            key: b"/ms/".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(cluster.pd_request_count(0, "Get"), 0);
    assert_eq!(registry(&cluster, 0).await.count, 1);
    assert_eq!(cluster.pd_request_count(0, "Get"), 1);

    // A future revision is an error in the header, as etcd reports it through PD.
    let resp = meta_storage(&cluster, 0)
        .await
        .get(meta_storagepb::GetRequest {
            key: b"/ms/".to_vec().into(),
            revision: 1_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let error = resp.header.unwrap().error.unwrap();
    assert_eq!(error.r#type, meta_storagepb::ErrorType::Unknown as i32);
    assert!(
        error.message.contains("future revision"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn without_a_router_microservice_the_registry_is_empty() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let resp = registry(&cluster, 0).await;
    assert_eq!(resp.count, 0);
    assert!(resp.kvs.is_empty());
    assert!(cluster.router_server_addrs().is_empty());
    assert!(cluster.set_router_registered(0, true).is_err());
    assert!(cluster.set_router_region_sync(0, false).is_err());
    assert!(cluster.stop_router_server(0).await.is_err());
}

#[tokio::test]
async fn router_servers_answer_region_and_store_reads_as_pd_does() {
    let cluster = MockCluster::builder()
        .router_microservice(1)
        .start()
        .await
        .unwrap();
    cluster.split_raw(["g", "p"]).unwrap();
    let mut pd =
        pdpb::pd_client::PdClient::connect(format!("http://{}", cluster.pd_endpoints()[0]))
            .await
            .unwrap();
    let mut router = router(&cluster, 0).await;

    let request = pdpb::GetRegionRequest {
        header: pd_header(&cluster),
        region_key: b"h".to_vec().into(),
        need_buckets: false,
    };
    let from_router = router
        .get_region(request.clone())
        .await
        .unwrap()
        .into_inner();
    let from_pd = pd.get_region(request.clone()).await.unwrap().into_inner();
    assert_eq!(from_router, from_pd);
    assert_eq!(from_router.region.unwrap().start_key.as_ref(), b"g");
    let prev = router.get_prev_region(request).await.unwrap().into_inner();
    assert_eq!(prev.region.clone().unwrap().end_key.as_ref(), b"g");
    let id = prev.region.unwrap().id;
    let by_id = router
        .get_region_by_id(pdpb::GetRegionByIdRequest {
            header: pd_header(&cluster),
            region_id: id,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.region.unwrap().id, id);
    // A region the router does not know is an empty answer, as from PD's leader.
    let unknown = router
        .get_region_by_id(pdpb::GetRegionByIdRequest {
            header: pd_header(&cluster),
            region_id: 999_999,
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(unknown.region.is_none());
    assert!(unknown.header.unwrap().error.is_none());

    let scan = pdpb::BatchScanRegionsRequest {
        header: pd_header(&cluster),
        ranges: vec![pdpb::KeyRange {
            start_key: Default::default(),
            end_key: Default::default(),
        }],
        limit: 10,
        ..Default::default()
    };
    let scanned = router
        .batch_scan_regions(scan.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scanned.regions.len(), 3);
    assert_eq!(
        scanned,
        pd.batch_scan_regions(scan).await.unwrap().into_inner()
    );

    let store_id = cluster.store_ids()[0];
    let store = router
        .get_store(pdpb::GetStoreRequest {
            header: pd_header(&cluster),
            store_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(store.store.unwrap().id, store_id);
    let stores = router
        .get_all_stores(pdpb::GetAllStoresRequest {
            header: pd_header(&cluster),
            exclude_tombstone_stores: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stores.stores.len(), cluster.store_ids().len());

    for (method, n) in [
        ("GetRegion", 1),
        ("GetPrevRegion", 1),
        ("GetRegionByID", 2),
        ("BatchScanRegions", 1),
        ("GetStore", 1),
        ("GetAllStores", 1),
    ] {
        assert_eq!(
            cluster.router_server_request_count(0, method),
            n,
            "{method}"
        );
    }
    assert_eq!(cluster.pd_request_count(0, "GetRegionByID"), 0);
    cluster.reset_pd_request_counts();
    assert_eq!(cluster.router_server_request_count(0, "GetRegion"), 0);
}

#[tokio::test]
async fn query_region_messages_are_answered_and_counted() {
    let cluster = MockCluster::builder()
        .router_microservice(1)
        .start()
        .await
        .unwrap();
    cluster.split_raw(["g"]).unwrap();
    let mut router = router(&cluster, 0).await;
    let ok = pdpb::QueryRegionRequest {
        header: pd_header(&cluster),
        keys: vec![b"a".to_vec().into(), b"h".to_vec().into()],
        prev_keys: vec![b"h".to_vec().into()],
        ..Default::default()
    };
    let mismatched = pdpb::QueryRegionRequest {
        header: Some(pdpb::RequestHeader {
            cluster_id: cluster.cluster_id() + 1,
            ..Default::default()
        }),
        ..ok.clone()
    };
    let mut answers = router
        .query_region(tokio_stream::iter(vec![ok.clone(), ok, mismatched]))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        let resp = answers.message().await.unwrap().unwrap();
        assert_eq!(resp.key_id_map.len(), 2);
        assert_ne!(resp.key_id_map[0], resp.key_id_map[1]);
        assert_eq!(resp.prev_key_id_map, vec![resp.key_id_map[0]]);
        assert_eq!(resp.regions_by_id.len(), 2);
    }
    // A message naming another cluster ends the stream.
    let err = answers.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(cluster.router_server_request_count(0, "QueryRegion"), 2);
}

#[tokio::test]
async fn a_stopped_region_syncer_answers_the_map_as_it_was() {
    let cluster = MockCluster::builder()
        .router_microservice(2)
        .start()
        .await
        .unwrap();
    cluster.split_raw(["g"]).unwrap();
    cluster.set_router_region_sync(0, false).unwrap();
    cluster.split_raw(["t"]).unwrap();

    let stale = region_by_key(&cluster, 0, b"u").await.unwrap();
    assert_eq!(stale.region.unwrap().start_key.as_ref(), b"g");
    let fresh = region_by_key(&cluster, 1, b"u").await.unwrap();
    assert_eq!(fresh.region.unwrap().start_key.as_ref(), b"t");

    // Stopping it again keeps the older copy; starting it catches up.
    cluster.set_router_region_sync(0, false).unwrap();
    let still = region_by_key(&cluster, 0, b"u").await.unwrap();
    assert_eq!(still.region.unwrap().start_key.as_ref(), b"g");
    cluster.set_router_region_sync(0, true).unwrap();
    let synced = region_by_key(&cluster, 0, b"u").await.unwrap();
    assert_eq!(synced.region.unwrap().start_key.as_ref(), b"t");
}

#[tokio::test]
async fn a_stopped_server_refuses_connections_and_keeps_its_entry() {
    let cluster = MockCluster::builder()
        .router_microservice(1)
        .start()
        .await
        .unwrap();
    let mut client = router(&cluster, 0).await;
    cluster.stop_router_server(0).await.unwrap();
    assert!(cluster.stop_router_server(0).await.is_err());
    let request = pdpb::GetRegionRequest {
        header: pd_header(&cluster),
        region_key: b"a".to_vec().into(),
        need_buckets: false,
    };
    assert!(client.get_region(request.clone()).await.is_err());
    assert_eq!(registry(&cluster, 0).await.count, 1, "the entry stays");
    assert!(cluster.is_router_registered(0));

    cluster.start_router_server(0).await.unwrap();
    assert!(cluster.start_router_server(0).await.is_err());
    let resp = region_by_key(&cluster, 0, b"a").await.unwrap();
    assert!(resp.region.is_some());
    assert!(cluster.start_router_server(5).await.is_err());
}

#[tokio::test]
async fn fault_rules_reach_router_servers() {
    let cluster = MockCluster::builder()
        .router_microservice(2)
        .start()
        .await
        .unwrap();
    let rule = cluster.add_fault(
        tikv_mock::FaultRule::new(
            tikv_mock::Matcher::router_server(0).command("GetRegion"),
            tikv_mock::Action::status(tonic::Code::Unavailable, "router down"),
        )
        .times(tikv_mock::Times::Always),
    );
    let err = region_by_key(&cluster, 0, b"a").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.message(), "router down");
    assert_eq!(
        cluster.router_server_request_count(0, "GetRegion"),
        0,
        "a refused request is not served"
    );
    // The other server, and PD itself, are not matched.
    assert!(
        region_by_key(&cluster, 1, b"a")
            .await
            .unwrap()
            .region
            .is_some()
    );
    let mut pd =
        pdpb::pd_client::PdClient::connect(format!("http://{}", cluster.pd_endpoints()[0]))
            .await
            .unwrap();
    let from_pd = pd
        .get_region(pdpb::GetRegionRequest {
            header: pd_header(&cluster),
            region_key: b"a".to_vec().into(),
            need_buckets: false,
        })
        .await
        .unwrap();
    assert!(from_pd.into_inner().region.is_some());
    assert!(cluster.remove_fault(rule));
    assert!(
        region_by_key(&cluster, 0, b"a")
            .await
            .unwrap()
            .region
            .is_some()
    );

    // QueryRegion messages see the rules too: the failing message ends the stream.
    cluster.add_fault(tikv_mock::FaultRule::new(
        tikv_mock::Matcher::router().command("QueryRegion"),
        tikv_mock::Action::status(tonic::Code::Unavailable, "stream down"),
    ));
    let query = pdpb::QueryRegionRequest {
        header: pd_header(&cluster),
        keys: vec![b"a".to_vec().into()],
        ..Default::default()
    };
    let mut answers = router(&cluster, 1)
        .await
        .query_region(tokio_stream::iter(vec![query]))
        .await
        .unwrap()
        .into_inner();
    let err = answers.message().await.unwrap_err();
    assert_eq!(err.message(), "stream down");
}
