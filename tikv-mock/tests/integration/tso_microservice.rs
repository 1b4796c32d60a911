//! The TSO microservice: PD in API mode, keyspace groups, primaries and `tsopb.TSO`.

use tikv_mock::MockCluster;
use tikv_mock::proto::{pdpb, tsopb};
use tokio_stream::StreamExt;
use tsopb::tso_client::TsoClient;

async fn tso_client(cluster: &MockCluster, server: usize) -> TsoClient<tonic::transport::Channel> {
    TsoClient::connect(format!("http://{}", cluster.tso_server_addrs()[server]))
        .await
        .unwrap()
}

async fn pd_client(cluster: &MockCluster) -> pdpb::pd_client::PdClient<tonic::transport::Channel> {
    pdpb::pd_client::PdClient::connect(format!("http://{}", cluster.pd_endpoints()[0]))
        .await
        .unwrap()
}

fn header(cluster: &MockCluster, keyspace: u32, group: u32) -> Option<tsopb::RequestHeader> {
    Some(tsopb::RequestHeader {
        cluster_id: cluster.cluster_id(),
        keyspace: Some(tsopb::request_header::Keyspace::KeyspaceId(keyspace)),
        keyspace_group_id: group,
        ..Default::default()
    })
}

async fn find_group(
    cluster: &MockCluster,
    server: usize,
    keyspace: u32,
) -> tsopb::FindGroupByKeyspaceIdResponse {
    tso_client(cluster, server)
        .await
        .find_group_by_keyspace_id(tsopb::FindGroupByKeyspaceIdRequest {
            header: header(cluster, keyspace, 0),
            keyspace: Some(
                tsopb::find_group_by_keyspace_id_request::Keyspace::KeyspaceId(keyspace),
            ),
            mod_revision: 0,
        })
        .await
        .unwrap()
        .into_inner()
}

async fn tso_once(
    cluster: &MockCluster,
    server: usize,
    keyspace: u32,
    group: u32,
    count: u32,
) -> Result<tsopb::TsoResponse, tonic::Status> {
    let request = tsopb::TsoRequest {
        header: header(cluster, keyspace, group),
        count,
        dc_location: String::new(),
    };
    let mut stream = tso_client(cluster, server)
        .await
        .tso(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    stream.next().await.unwrap()
}

fn version(ts: &tikv_mock::proto::pdpb::Timestamp) -> u64 {
    ((ts.physical as u64) << 18) | ts.logical as u64
}

#[tokio::test]
async fn cluster_info_reports_api_mode_and_servers() {
    let cluster = MockCluster::builder()
        .tso_microservice(2)
        .start()
        .await
        .unwrap();
    let mut pd = pd_client(&cluster).await;
    let info = pd
        .get_cluster_info(pdpb::GetClusterInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.service_modes,
        vec![pdpb::ServiceMode::ApiSvcMode as i32]
    );
    let expected: Vec<String> = cluster
        .tso_server_addrs()
        .iter()
        .map(|a| format!("http://{a}"))
        .collect();
    assert_eq!(info.tso_urls, expected);

    cluster.stop_tso_server(1).await.unwrap();
    let info = pd
        .get_cluster_info(pdpb::GetClusterInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.tso_urls, expected[..1].to_vec());

    cluster.set_tso_microservice_mode(false).unwrap();
    let info = pd
        .get_cluster_info(pdpb::GetClusterInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.service_modes,
        vec![pdpb::ServiceMode::PdSvcMode as i32]
    );
    assert!(info.tso_urls.is_empty());
}

#[tokio::test]
async fn without_microservice_pd_mode_is_reported() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let info = pd_client(&cluster)
        .await
        .get_cluster_info(pdpb::GetClusterInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        info.service_modes,
        vec![pdpb::ServiceMode::PdSvcMode as i32]
    );
    assert!(cluster.tso_server_addrs().is_empty());
}

#[tokio::test]
async fn primary_serves_and_others_refuse() {
    let cluster = MockCluster::builder()
        .tso_microservice(2)
        .start()
        .await
        .unwrap();
    let group = find_group(&cluster, 1, 0).await;
    assert!(group.header.unwrap().error.is_none());
    let kg = group.keyspace_group.unwrap();
    assert_eq!(kg.id, 0);
    assert_eq!(kg.members.len(), 2);
    assert!(kg.members[0].is_primary && !kg.members[1].is_primary);

    let a = tso_once(&cluster, 0, 0, 0, 3).await.unwrap();
    assert_eq!(a.count, 3);
    let b = tso_once(&cluster, 0, 0, 0, 1).await.unwrap();
    assert!(version(b.timestamp.as_ref().unwrap()) > version(a.timestamp.as_ref().unwrap()));
    assert_eq!(cluster.tso_server_request_count(0, "Tso"), 2);

    let refused = tso_once(&cluster, 1, 0, 0, 1).await.unwrap_err();
    assert!(refused.message().contains("is not served"), "{refused:?}");

    cluster.transfer_tso_primary(0, 1).unwrap();
    assert_eq!(cluster.tso_primary(0), Some(1));
    let c = tso_once(&cluster, 1, 0, 0, 1).await.unwrap();
    assert!(version(c.timestamp.as_ref().unwrap()) > version(b.timestamp.as_ref().unwrap()));
    assert!(tso_once(&cluster, 0, 0, 0, 1).await.is_err());

    // A stopped primary's group elects the other member.
    cluster.stop_tso_server(1).await.unwrap();
    assert_eq!(cluster.tso_primary(0), Some(0));
    cluster.start_tso_server(1).await.unwrap();
    tso_once(&cluster, 0, 0, 0, 1).await.unwrap();
}

#[tokio::test]
async fn keyspace_groups_and_mod_revision() {
    let cluster = MockCluster::builder()
        .tso_microservice(2)
        .start()
        .await
        .unwrap();
    let ks = cluster.create_keyspace("ks1").unwrap();
    let before = find_group(&cluster, 0, ks).await;
    assert_eq!(before.keyspace_group.as_ref().unwrap().id, 0);

    cluster.assign_keyspace_to_tso_group(ks, 1).unwrap();
    let after = find_group(&cluster, 0, ks).await;
    let kg = after.keyspace_group.unwrap();
    assert_eq!(kg.id, 1);
    assert!(after.mod_revision > before.mod_revision);
    // Group 1's primary is server 1 (round-robin by group id).
    assert!(
        kg.members
            .iter()
            .any(|m| m.is_primary
                && m.address == format!("http://{}", cluster.tso_server_addrs()[1]))
    );

    let resp = tso_once(&cluster, 1, ks, 1, 1).await.unwrap();
    assert_eq!(resp.header.unwrap().keyspace_group_id, 1);
    assert_eq!(cluster.tso_last_request_header(1), Some((ks, 1)));

    // A revision from the future is refused as stale.
    let stale = tso_client(&cluster, 0)
        .await
        .find_group_by_keyspace_id(tsopb::FindGroupByKeyspaceIdRequest {
            header: header(&cluster, ks, 0),
            keyspace: Some(tsopb::find_group_by_keyspace_id_request::Keyspace::KeyspaceId(ks)),
            mod_revision: after.mod_revision + 10,
        })
        .await
        .unwrap()
        .into_inner();
    let err = stale.header.unwrap().error.unwrap();
    assert_eq!(err.r#type, tsopb::ErrorType::InvalidValue as i32);
    assert!(err.message.contains("mod revision is stale"));
}

#[tokio::test]
async fn pd_tso_forwards_in_api_mode_and_min_ts() {
    let cluster = MockCluster::builder()
        .tso_microservice(1)
        .start()
        .await
        .unwrap();
    let mut pd = pd_client(&cluster).await;
    let request = pdpb::TsoRequest {
        header: Some(pdpb::RequestHeader {
            cluster_id: cluster.cluster_id(),
            ..Default::default()
        }),
        count: 1,
        dc_location: String::new(),
    };
    let mut stream = pd
        .tso(tokio_stream::iter(vec![request.clone()]))
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();
    assert_eq!(cluster.pd_request_count(0, "Tso"), 0);
    assert_eq!(cluster.tso_forwarded_from_pd(), 1);

    let min = tso_client(&cluster, 0)
        .await
        .get_min_ts(tsopb::GetMinTsRequest {
            header: header(&cluster, 0, 0),
            dc_location: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(min.keyspace_groups_serving, 1);
    assert!(min.timestamp.unwrap().physical > 0);

    // No TSO primary left: PD's forwarding finds no address.
    cluster.stop_tso_server(0).await.unwrap();
    let mut stream = pd
        .tso(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let status = stream.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_stream_naming_another_server_is_refused() {
    let cluster = MockCluster::builder()
        .tso_microservice(2)
        .start()
        .await
        .unwrap();
    let addrs = cluster.tso_server_addrs();
    let mut header = header(&cluster, 0, 0).unwrap();
    header.callee_id = addrs[1].to_string();
    let request = tsopb::TsoRequest {
        header: Some(header.clone()),
        count: 1,
        dc_location: String::new(),
    };
    let mut stream = tso_client(&cluster, 0)
        .await
        .tso(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let status = stream.next().await.unwrap().unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().starts_with("mismatch callee id"));

    header.callee_id = addrs[0].to_string();
    let request = tsopb::TsoRequest {
        header: Some(header),
        count: 1,
        dc_location: String::new(),
    };
    let mut stream = tso_client(&cluster, 0)
        .await
        .tso(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();
}
