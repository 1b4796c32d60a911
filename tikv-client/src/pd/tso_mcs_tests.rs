//! Tests of PD's TSO microservice mode against `tikv-mock`'s TSO servers over real gRPC: the
//! stream goes to the keyspace group's primary over `tsopb.TSO` with the keyspace and group in
//! its header, follows the primary when it moves or stops, switches between PD mode and
//! microservice mode, and fails with a typed error when no TSO server can serve the keyspace.
//!
//! Ported cases (tikv/pd `tests/integrations/mcs/tso/` and `client/`): the keyspace-group
//! primary switch of `TestTSOKeyspaceGroupManager`-style setups, the API/PD mode switch of
//! `TestSwitchModeDuringWorkload`, and the no-fallback rule of keyspaces with a configured
//! `tso_keyspace_group_id` (`checkAndHandleFallbackInMicroserviceMode`).

use std::time::Duration;

use tikv_mock::MockCluster;
use tokio::time::Instant;

use super::tso_discovery::NULL_KEYSPACE_ID;
use super::*;
use crate::{Config, Error};

fn config(timeout: Duration) -> Config {
    let mut config = Config::default();
    config.pd_client.pd_server_timeout = timeout;
    config
}

async fn connect(cluster: &MockCluster) -> PdClient {
    PdClient::connect(cluster.pd_endpoints(), &config(Duration::from_secs(2)))
        .await
        .unwrap()
}

/// Many concurrent callers: every timestamp distinct, each caller's later call larger.
async fn distinct_and_increasing(pd: &PdClient, rounds: usize) -> u64 {
    let mut last = 0;
    for _ in 0..rounds {
        let calls = (0..16).map(|_| pd.get_timestamp());
        let mut got: Vec<u64> = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.unwrap().version())
            .collect();
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), 16, "timestamps in one round are distinct");
        assert!(
            got[0] > last,
            "a round's timestamps follow the previous round's"
        );
        last = got[15];
    }
    last
}

#[tokio::test]
async fn timestamps_come_from_the_group_primary_not_pd() {
    let cluster = MockCluster::builder()
        .tso_microservice(2)
        .start()
        .await
        .unwrap();
    let pd = connect(&cluster).await;
    distinct_and_increasing(&pd, 5).await;
    assert_eq!(cluster.pd_request_count(0, "Tso"), 0);
    assert_eq!(cluster.tso_forwarded_from_pd(), 0);
    assert!(cluster.tso_server_request_count(0, "Tso") > 0);
    assert_eq!(cluster.tso_server_request_count(1, "Tso"), 0);
    assert_eq!(
        cluster.tso_last_request_header(0),
        Some((NULL_KEYSPACE_ID, 0))
    );
}

#[tokio::test]
async fn follows_the_primary_when_it_moves_or_stops() {
    let cluster = MockCluster::builder()
        .tso_microservice(3)
        .start()
        .await
        .unwrap();
    let pd = connect(&cluster).await;
    let before = distinct_and_increasing(&pd, 2).await;

    cluster.transfer_tso_primary(0, 1).unwrap();
    let moved = distinct_and_increasing(&pd, 2).await;
    assert!(moved > before);
    assert!(cluster.tso_server_request_count(1, "Tso") > 0);

    // The primary's process stops: the group elects another member, the client finds it.
    cluster.stop_tso_server(1).await.unwrap();
    let elected = cluster.tso_primary(0).unwrap();
    assert_ne!(elected, 1);
    let after = distinct_and_increasing(&pd, 2).await;
    assert!(after > moved);
    assert!(cluster.tso_server_request_count(elected, "Tso") > 0);
    assert_eq!(cluster.pd_request_count(0, "Tso"), 0);
}

#[tokio::test]
async fn a_keyspace_streams_to_its_keyspace_group() {
    let cluster = MockCluster::builder()
        .tso_microservice(3)
        .start()
        .await
        .unwrap();
    let ks = cluster.create_keyspace("ks_group2").unwrap();
    cluster.assign_keyspace_to_tso_group(ks, 2).unwrap();
    let primary = cluster.tso_primary(2).unwrap();
    let pd = PdClient::builder(cluster.pd_endpoints(), &config(Duration::from_secs(2)))
        .keyspace("ks_group2")
        .connect()
        .await
        .unwrap();
    distinct_and_increasing(&pd, 2).await;
    assert_eq!(cluster.tso_last_request_header(primary), Some((ks, 2)));

    // The keyspace id can also be given without loading the keyspace.
    let other = PdClient::builder(cluster.pd_endpoints(), &config(Duration::from_secs(2)))
        .tso_keyspace_id(ks)
        .connect()
        .await
        .unwrap();
    other.get_timestamp().await.unwrap();
    assert_eq!(cluster.tso_last_request_header(primary), Some((ks, 2)));
}

#[tokio::test]
async fn switches_between_pd_mode_and_microservice_mode() {
    let cluster = MockCluster::builder()
        .tso_microservice(1)
        .start()
        .await
        .unwrap();
    cluster.set_tso_microservice_mode(false).unwrap();
    let pd = connect(&cluster).await;
    let a = distinct_and_increasing(&pd, 2).await;
    let pd_served = cluster.pd_request_count(0, "Tso");
    assert!(pd_served > 0);
    assert_eq!(cluster.tso_server_request_count(0, "Tso"), 0);

    // PD moves TSO to the microservice; the next service-mode check (the background one runs
    // every minute) moves the stream.
    cluster.set_tso_microservice_mode(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    pd.core()
        .tso_service
        .check_service_mode(deadline)
        .await
        .unwrap();
    let b = distinct_and_increasing(&pd, 2).await;
    assert!(b > a);
    assert_eq!(cluster.pd_request_count(0, "Tso"), pd_served);
    let mcs_served = cluster.tso_server_request_count(0, "Tso");
    assert!(mcs_served > 0);
    assert!(pd.core().tso_service.is_microservice());

    // And back.
    cluster.set_tso_microservice_mode(false).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    pd.core()
        .tso_service
        .check_service_mode(deadline)
        .await
        .unwrap();
    let c = distinct_and_increasing(&pd, 2).await;
    assert!(c > b);
    assert!(cluster.pd_request_count(0, "Tso") > pd_served);
    assert_eq!(cluster.tso_server_request_count(0, "Tso"), mcs_served);
}

#[tokio::test]
async fn a_pinned_keyspace_without_tso_server_fails_typed() {
    let cluster = MockCluster::builder()
        .tso_microservice(1)
        .start()
        .await
        .unwrap();
    let ks = cluster.create_keyspace("pinned").unwrap();
    cluster.assign_keyspace_to_tso_group(ks, 1).unwrap();
    let pd = PdClient::builder(cluster.pd_endpoints(), &config(Duration::from_secs(1)))
        .keyspace("pinned")
        .connect()
        .await
        .unwrap();
    pd.get_timestamp().await.unwrap();

    cluster.stop_tso_server(0).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), pd.get_timestamp())
        .await
        .expect("the batch deadline ends the wait");
    match result {
        Err(Error::PdServerTimeout { message }) => {
            assert!(message.contains("no TSO microservice"), "{message}")
        }
        other => panic!("expected PdServerTimeout, got {other:?}"),
    }
}

#[tokio::test]
async fn the_null_keyspace_falls_back_then_times_out_typed() {
    let cluster = MockCluster::builder()
        .tso_microservice(1)
        .start()
        .await
        .unwrap();
    let pd = PdClient::connect(cluster.pd_endpoints(), &config(Duration::from_secs(1)))
        .await
        .unwrap();
    pd.get_timestamp().await.unwrap();
    cluster.stop_tso_server(0).await.unwrap();
    // No TSO server listed: the stream falls back to PD, which has no primary to forward to.
    let result = tokio::time::timeout(Duration::from_secs(10), pd.get_timestamp())
        .await
        .expect("the batch deadline ends the wait");
    assert!(
        matches!(result, Err(Error::PdServerTimeout { .. })),
        "{result:?}"
    );
    // The server comes back: timestamps flow again.
    cluster.start_tso_server(0).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    pd.core()
        .tso_service
        .check_service_mode(deadline)
        .await
        .unwrap();
    pd.get_timestamp().await.unwrap();
}

#[tokio::test]
async fn min_ts_in_microservice_mode_asks_pd() {
    let cluster = MockCluster::builder()
        .tso_microservice(2)
        .start()
        .await
        .unwrap();
    let pd = connect(&cluster).await;
    let ts = pd.get_timestamp().await.unwrap();
    let min = pd.get_min_ts().await.unwrap();
    assert!(min >= ts);
    assert_eq!(cluster.pd_request_count(0, "GetMinTS"), 1);

    // A group whose primary is gone cannot be asked: PD's typed error, not a guess.
    cluster.assign_keyspace_to_tso_group(7, 1).unwrap();
    cluster.stop_tso_server(1).await.unwrap();
    cluster.stop_tso_server(0).await.unwrap();
    assert!(matches!(pd.get_min_ts().await, Err(Error::Pd { .. })));
}

#[test]
fn callee_id_is_the_host_and_port() {
    use super::tso_discovery::callee_id;
    assert_eq!(callee_id("http://127.0.0.1:2379"), "127.0.0.1:2379");
    assert_eq!(callee_id("https://tso-0.svc:3379/"), "tso-0.svc:3379");
    assert_eq!(callee_id("127.0.0.1:2379"), "127.0.0.1:2379");
}
