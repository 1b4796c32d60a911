//! Topology control end to end, as plain tonic clients see it: leader transfer, merge, learners
//! and replica reads, voter changes (conf_ver only), splits, stopped and unhealthy stores, a PD
//! restart, keyspace creation under API V2, RPC counts, the manual clock, and the ports a
//! dropped cluster frees.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use tikv_mock::proto::{keyspacepb, metapb, pdpb};
use tikv_mock::{ApiVersion, ManualClock, MockCluster, MockError};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn pd_region(cluster: &MockCluster, key: &[u8]) -> pdpb::GetRegionResponse {
    let mut pd = pd_client(cluster).await;
    bounded(
        "GetRegion",
        pd.get_region(pdpb::GetRegionRequest {
            header: pd_header(cluster),
            region_key: b(key),
            need_buckets: false,
        }),
    )
    .await
    .unwrap()
    .into_inner()
}

async fn pd_region_by_id(cluster: &MockCluster, id: u64) -> pdpb::GetRegionResponse {
    let mut pd = pd_client(cluster).await;
    bounded(
        "GetRegionByID",
        pd.get_region_by_id(pdpb::GetRegionByIdRequest {
            header: pd_header(cluster),
            region_id: id,
            need_buckets: false,
        }),
    )
    .await
    .unwrap()
    .into_inner()
}

fn epoch(region: &metapb::Region) -> metapb::RegionEpoch {
    region.region_epoch.unwrap()
}

/// A store that holds no peer of `region`.
fn store_without_peer(cluster: &MockCluster, region: &metapb::Region) -> u64 {
    cluster
        .store_ids()
        .into_iter()
        .find(|s| region.peers.iter().all(|p| p.store_id != *s))
        .unwrap()
}

#[tokio::test]
async fn transfer_leader_moves_what_clients_see() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut old = target(&cluster, b"k", ApiVersion::V1).await;
    assert!(old.put(b"k", b"v").await.error.is_empty());
    let follower = *old
        .region
        .peers
        .iter()
        .find(|p| p.id != old.leader.id)
        .unwrap();

    cluster
        .transfer_leader(old.region.id, follower.store_id)
        .unwrap();

    // The old leader refuses and names the new one.
    let resp = old.get(b"k").await;
    let not_leader = resp.region_error.unwrap().not_leader.unwrap();
    assert_eq!(not_leader.region_id, old.region.id);
    assert_eq!(not_leader.leader, Some(follower));
    // PD agrees, and the epoch did not change.
    let pd = pd_region(&cluster, b"k").await;
    assert_eq!(pd.leader, Some(follower));
    assert_eq!(pd.region.unwrap(), old.region);
    // The new leader serves, with the context the client already had (only the peer changed).
    let mut new = old.clone();
    new.client = store_client(&cluster, follower.store_id).await;
    new.ctx.peer = Some(follower);
    assert_eq!(new.value(b"k").await, Some(b(b"v")));
    assert!(new.put(b"k", b"w").await.error.is_empty());
    assert_eq!(new.value(b"k").await, Some(b(b"w")));

    // No voter there, no region: refused.
    assert!(matches!(
        cluster.transfer_leader(old.region.id, 999),
        Err(MockError::Topology(_))
    ));
    assert!(matches!(
        cluster.transfer_leader(999, follower.store_id),
        Err(MockError::Topology(_))
    ));
}

#[tokio::test]
async fn merge_leaves_one_region_at_the_next_version() {
    let cluster = MockCluster::builder().start().await.unwrap();
    cluster.split_raw([b"m"]).unwrap();
    cluster.split_raw([b"t"]).unwrap();
    let mut left = target(&cluster, b"a", ApiVersion::V1).await;
    let mut source = target(&cluster, b"n", ApiVersion::V1).await;
    assert_eq!(
        (left.region.end_key.as_ref(), source.region.end_key.as_ref()),
        (&b"m"[..], &b"t"[..])
    );
    assert!(left.put(b"a", b"1").await.error.is_empty());
    assert!(source.put(b"n", b"2").await.error.is_empty());
    let (target_epoch, source_epoch) = (epoch(&left.region), epoch(&source.region));
    assert_ne!(target_epoch.version, source_epoch.version);

    let merged = cluster.merge(source.region.id, left.region.id).unwrap();
    assert_eq!(merged.id, left.region.id);
    assert_eq!(
        (merged.start_key.as_ref(), merged.end_key.as_ref()),
        (&b""[..], &b"t"[..])
    );
    assert_eq!(
        epoch(&merged).version,
        target_epoch.version.max(source_epoch.version) + 1
    );
    assert_eq!(epoch(&merged).conf_ver, target_epoch.conf_ver);

    // PD: one region covers both ranges; the source is gone.
    assert_eq!(cluster.regions().len(), 2);
    for key in [&b"a"[..], b"n", b"s"] {
        assert_eq!(pd_region(&cluster, key).await.region.unwrap(), merged);
    }
    assert!(
        pd_region_by_id(&cluster, source.region.id)
            .await
            .region
            .is_none()
    );

    // The source's context: the region is gone from its store.
    let resp = source.get(b"n").await;
    let e = resp.region_error.unwrap();
    assert_eq!(e.region_not_found.unwrap().region_id, source.region.id);
    // The target's stale epoch: EpochNotMatch with the merged region.
    let resp = left.get(b"a").await;
    let current = resp
        .region_error
        .unwrap()
        .epoch_not_match
        .unwrap()
        .current_regions;
    assert_eq!(current.first(), Some(&merged));
    // A fresh context reads the data of both former regions.
    let mut fresh = target(&cluster, b"n", ApiVersion::V1).await;
    assert_eq!(fresh.region, merged);
    assert_eq!(fresh.value(b"a").await, Some(b(b"1")));
    assert_eq!(fresh.value(b"n").await, Some(b(b"2")));

    // Regions that do not touch cannot merge.
    let right = cluster.region_for_raw_key(b"z").unwrap().0;
    let far_left = cluster.split_raw([b"c"]).unwrap();
    let first = far_left.iter().find(|r| r.start_key.is_empty()).unwrap();
    assert!(matches!(
        cluster.merge(first.id, right.id),
        Err(MockError::Topology(_))
    ));
}

#[tokio::test]
async fn a_learner_serves_replica_reads_only() {
    let cluster = MockCluster::builder()
        .stores(4)
        .replicas(3)
        .start()
        .await
        .unwrap();
    let mut leader = target(&cluster, b"k", ApiVersion::V1).await;
    assert!(leader.put(b"k", b"v").await.error.is_empty());
    let learner_store = store_without_peer(&cluster, &leader.region);
    let learner_id = cluster
        .add_learner(leader.region.id, learner_store)
        .unwrap();

    let region = pd_region(&cluster, b"k").await.region.unwrap();
    let learner = *region.peers.iter().find(|p| p.id == learner_id).unwrap();
    assert_eq!(
        (learner.store_id, learner.role),
        (learner_store, metapb::PeerRole::Learner as i32)
    );
    assert_eq!(epoch(&region).conf_ver, epoch(&leader.region).conf_ver + 1);
    assert_eq!(epoch(&region).version, epoch(&leader.region).version);

    let mut on_learner = leader.clone();
    on_learner.client = store_client(&cluster, learner_store).await;
    on_learner.ctx = ctx_for(&region, learner, ApiVersion::V1);
    on_learner.ctx.replica_read = true;
    assert_eq!(on_learner.value(b"k").await, Some(b(b"v")));
    on_learner.ctx.replica_read = false;
    let resp = on_learner.get(b"k").await;
    let not_leader = resp.region_error.unwrap().not_leader.unwrap();
    assert_eq!(not_leader.leader, Some(leader.leader));

    // A learner cannot lead.
    assert!(matches!(
        cluster.transfer_leader(region.id, learner_store),
        Err(MockError::Topology(_))
    ));
}

#[tokio::test]
async fn voter_changes_bump_conf_ver_and_kv_requests_ignore_it() {
    let cluster = MockCluster::builder()
        .stores(4)
        .replicas(3)
        .start()
        .await
        .unwrap();
    let mut leader = target(&cluster, b"k", ApiVersion::V1).await;
    let before = epoch(&leader.region);
    let follower = *leader
        .region
        .peers
        .iter()
        .find(|p| p.id != leader.leader.id)
        .unwrap();
    let new_store = store_without_peer(&cluster, &leader.region);

    let new_peer = cluster.add_peer(leader.region.id, new_store).unwrap();
    let region = pd_region(&cluster, b"k").await.region.unwrap();
    assert_eq!(
        epoch(&region),
        metapb::RegionEpoch {
            conf_ver: before.conf_ver + 1,
            version: before.version
        }
    );
    let added = region.peers.iter().find(|p| p.id == new_peer).unwrap();
    assert_eq!(
        (added.store_id, added.role),
        (new_store, metapb::PeerRole::Voter as i32)
    );
    assert!(matches!(
        cluster.add_peer(region.id, new_store),
        Err(MockError::Topology(_))
    ));

    cluster
        .remove_peer(leader.region.id, follower.store_id)
        .unwrap();
    let region = pd_region(&cluster, b"k").await.region.unwrap();
    assert_eq!(epoch(&region).conf_ver, before.conf_ver + 2);
    assert!(region.peers.iter().all(|p| p.id != follower.id));

    // The removed peer's store no longer has the region.
    let mut removed = leader.clone();
    removed.client = store_client(&cluster, follower.store_id).await;
    removed.ctx.peer = Some(follower);
    removed.ctx.replica_read = true;
    let resp = removed.get(b"k").await;
    assert_eq!(
        resp.region_error
            .unwrap()
            .region_not_found
            .unwrap()
            .region_id,
        region.id
    );
    // The leader still takes the old conf_ver: TiKV checks only the version for KV requests.
    assert_eq!(epoch(&leader.region).conf_ver, before.conf_ver);
    assert!(leader.put(b"k", b"v").await.error.is_empty());
    assert_eq!(leader.value(b"k").await, Some(b(b"v")));

    // The added voter can lead and serve.
    cluster.transfer_leader(region.id, new_store).unwrap();
    let mut next = target(&cluster, b"k", ApiVersion::V1).await;
    assert_eq!(next.store, new_store);
    assert_eq!(next.value(b"k").await, Some(b(b"v")));
    // Removing the leader hands leadership to a remaining voter.
    cluster.remove_peer(region.id, new_store).unwrap();
    let pd = pd_region(&cluster, b"k").await;
    let leader_now = pd.leader.unwrap();
    assert_ne!(leader_now.store_id, new_store);
    assert!(pd.region.unwrap().peers.contains(&leader_now));
    assert!(matches!(
        cluster.remove_peer(region.id, new_store),
        Err(MockError::Topology(_))
    ));
}

#[tokio::test]
async fn a_split_makes_older_epochs_stale() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"a", ApiVersion::V1).await;
    let regions = cluster.split_raw([b"m"]).unwrap();
    assert_eq!(regions.len(), 2);
    let resp = t.get(b"a").await;
    let current = resp
        .region_error
        .unwrap()
        .epoch_not_match
        .unwrap()
        .current_regions;
    let mut got: Vec<u64> = current.iter().map(|r| r.id).collect();
    got.sort_unstable();
    let mut want: Vec<u64> = cluster.regions().iter().map(|r| r.id).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    // Every listed region is the live one.
    for r in &current {
        assert_eq!(
            pd_region_by_id(&cluster, r.id).await.region.as_ref(),
            Some(r)
        );
    }
    // A key that already starts a region is not split again.
    assert!(cluster.split_raw([b"m"]).unwrap().is_empty());
    assert_eq!(cluster.regions().len(), 2);
}

#[tokio::test]
async fn a_stopped_store_refuses_connections_and_pd_still_lists_it() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    assert!(t.put(b"k", b"v").await.error.is_empty());

    cluster.stop_store(t.store).await.unwrap();
    let connect = bounded(
        "connect",
        tikv_mock::proto::tikvpb::tikv_client::TikvClient::connect(store_url(&cluster, t.store)),
    )
    .await;
    assert!(connect.is_err(), "a stopped store accepts no connection");
    // A client connected before the stop fails too (it does not hang).
    let req = t.get_req(b"k");
    assert!(bounded("RawGet", t.client.raw_get(req)).await.is_err());
    // PD keeps reporting the store, as it does for a crashed TiKV.
    let mut pd = pd_client(&cluster).await;
    let store = bounded(
        "GetStore",
        pd.get_store(pdpb::GetStoreRequest {
            header: pd_header(&cluster),
            store_id: t.store,
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(store.header.unwrap().error.is_none());
    assert_eq!(store.store.unwrap().id, t.store);
    let all = bounded(
        "GetAllStores",
        pd.get_all_stores(pdpb::GetAllStoresRequest {
            header: pd_header(&cluster),
            exclude_tombstone_stores: true,
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(all.stores.iter().any(|s| s.id == t.store));
    assert!(matches!(
        cluster.stop_store(t.store).await,
        Err(MockError::Topology(_))
    ));

    // Started again on the same address, with its data.
    cluster.start_store(t.store).await.unwrap();
    let mut again = target(&cluster, b"k", ApiVersion::V1).await;
    assert_eq!(again.store, t.store);
    assert_eq!(again.value(b"k").await, Some(b(b"v")));
}

/// Stopping and at once restarting a server is what a test of client failover does; the
/// restart must find the address free.
#[tokio::test]
async fn a_store_and_pd_restart_right_after_being_stopped() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let store = cluster.store_ids()[0];
    cluster.stop_store(store).await.unwrap();
    cluster.start_store(store).await.unwrap();
    cluster.stop_pd().await;
    cluster.start_pd().await.unwrap();
    let mut pd = pd_client(&cluster).await;
    assert!(
        bounded(
            "GetMembers",
            pd.get_members(pdpb::GetMembersRequest::default())
        )
        .await
        .is_ok()
    );
    assert_eq!(
        health(&cluster, store).await.unwrap(),
        ServingStatus::Serving as i32
    );
}

async fn health(cluster: &MockCluster, store: u64) -> Result<i32, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(store_url(cluster, store))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    bounded(
        "Health/Check",
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .map(|r| r.into_inner().status)
}

#[tokio::test]
async fn store_health_follows_set_store_serving() -> Result<(), tonic::Status> {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    let other = cluster
        .store_ids()
        .into_iter()
        .find(|s| *s != t.store)
        .unwrap();
    assert_eq!(
        health(&cluster, t.store).await?,
        ServingStatus::Serving as i32
    );

    cluster.set_store_serving(t.store, false).await.unwrap();
    assert_eq!(
        health(&cluster, t.store).await?,
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        health(&cluster, other).await?,
        ServingStatus::Serving as i32
    );
    // Unhealthy is only what the health service says: KV requests are still served.
    assert!(t.put(b"k", b"v").await.error.is_empty());

    cluster.set_store_serving(t.store, true).await.unwrap();
    assert_eq!(
        health(&cluster, t.store).await?,
        ServingStatus::Serving as i32
    );

    // A restarted store starts SERVING; a stopped one cannot be told anything.
    cluster.set_store_serving(t.store, false).await.unwrap();
    cluster.stop_store(t.store).await.unwrap();
    assert!(matches!(
        cluster.set_store_serving(t.store, true).await,
        Err(MockError::Topology(_))
    ));
    cluster.start_store(t.store).await.unwrap();
    assert_eq!(
        health(&cluster, t.store).await?,
        ServingStatus::Serving as i32
    );
    Ok(())
}

#[tokio::test]
async fn pd_stops_and_starts() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut pd = pd_client(&cluster).await;
    let members = |pd: &mut pdpb::pd_client::PdClient<tonic::transport::Channel>| {
        let mut pd = pd.clone();
        async move {
            bounded(
                "GetMembers",
                pd.get_members(pdpb::GetMembersRequest::default()),
            )
            .await
        }
    };
    assert!(members(&mut pd).await.is_ok());
    cluster.stop_pd().await;
    assert!(members(&mut pd).await.is_err());
    let connect = bounded(
        "connect",
        pdpb::pd_client::PdClient::connect(pd_url(&cluster)),
    )
    .await;
    assert!(connect.is_err());
    // Stores keep serving while PD is down.
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    assert!(t.put(b"k", b"v").await.error.is_empty());

    cluster.start_pd().await.unwrap();
    let mut pd = pd_client(&cluster).await;
    let resp = members(&mut pd).await.unwrap().into_inner();
    assert_eq!(resp.header.unwrap().cluster_id, cluster.cluster_id());
}

#[tokio::test]
async fn create_keyspace_under_api_v2_is_loadable_and_has_its_regions() {
    let cluster = MockCluster::builder()
        .api_version(ApiVersion::V2)
        .start()
        .await
        .unwrap();
    let id = cluster.create_keyspace("ks1").unwrap();
    assert_ne!(id, 0, "DEFAULT is keyspace 0");
    assert_eq!(cluster.create_keyspace("ks1").unwrap(), id);

    let mut ks = keyspace_client(&cluster).await;
    let loaded = bounded(
        "LoadKeyspace",
        ks.load_keyspace(keyspacepb::LoadKeyspaceRequest {
            header: pd_header(&cluster),
            name: "ks1".to_owned(),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(loaded.header.unwrap().error.is_none());
    let meta = loaded.keyspace.unwrap();
    assert_eq!(meta.name, "ks1");
    assert_eq!(
        meta.keyspace,
        Some(keyspacepb::keyspace_meta::Keyspace::Id(id))
    );
    assert_eq!(meta.state, keyspacepb::KeyspaceState::Enabled as i32);

    // Region boundaries at the keyspace's raw and txn prefixes and the next keyspace's.
    let prefix = |mode: u8, ks: u32| [mode, (ks >> 16) as u8, (ks >> 8) as u8, ks as u8];
    let starts: Vec<Bytes> = cluster.regions().into_iter().map(|r| r.start_key).collect();
    for mode in [b'r', b'x'] {
        for ks in [id, id + 1] {
            let bound = mem_encode(&prefix(mode, ks));
            assert!(starts.contains(&bound), "no region starts at {bound:02x?}");
        }
    }
    let mut key = prefix(b'r', id).to_vec();
    key.extend_from_slice(b"a");
    let region = pd_region(&cluster, &mem_encode(&key)).await.region.unwrap();
    assert_eq!(region.start_key, mem_encode(&prefix(b'r', id)));
    assert_eq!(region.end_key, mem_encode(&prefix(b'r', id + 1)));
    // And the keyspace's region serves its keys.
    let mut t = target(&cluster, &key, ApiVersion::V2).await;
    assert_eq!(t.region, region);
    assert!(t.put(&key, b"v").await.error.is_empty());
    assert_eq!(t.value(&key).await, Some(b(b"v")));
}

#[tokio::test]
async fn rpc_counts_reflect_unary_and_batched_requests() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    cluster.reset_rpc_counts();
    assert!(cluster.rpc_counts().is_empty());

    t.put(b"k", b"v").await;
    t.get(b"k").await;
    t.get(b"k").await;
    let mut stream = open_stream(&mut t.client).await;
    stream
        .send(vec![
            (1, batched_get(&t.ctx, b"k")),
            (2, batched_get(&t.ctx, b"x")),
        ])
        .await;
    stream.collect(&[1, 2]).await;

    assert_eq!(cluster.rpc_count(t.store, "RawGet"), 4);
    assert_eq!(cluster.rpc_count(t.store, "RawPut"), 1);
    assert_eq!(cluster.rpc_count(t.store, "RawScan"), 0);
    let counts = cluster.rpc_counts();
    assert_eq!(
        counts,
        [
            ((t.store, "RawGet".to_owned()), 4),
            ((t.store, "RawPut".to_owned()), 1)
        ]
        .into_iter()
        .collect()
    );
    // Another store saw nothing.
    let other = cluster
        .store_ids()
        .into_iter()
        .find(|s| *s != t.store)
        .unwrap();
    assert_eq!(cluster.rpc_count(other, "RawGet"), 0);

    cluster.reset_rpc_counts();
    assert!(cluster.rpc_counts().is_empty());
    assert_eq!(cluster.rpc_count(t.store, "RawGet"), 0);
    t.get(b"k").await;
    assert_eq!(cluster.rpc_count(t.store, "RawGet"), 1);
}

#[tokio::test]
async fn advance_clock_expires_raw_ttls_only_on_a_manual_clock() {
    let clock = ManualClock::starting_now();
    let cluster = MockCluster::builder()
        .api_version(ApiVersion::V2)
        .manual_clock(clock)
        .start()
        .await
        .unwrap();
    let key = b"r\0\0\0ttl";
    let mut t = target(&cluster, key, ApiVersion::V2).await;
    let mut req = t.put_req(key, b"v");
    req.ttl = 5;
    let put = bounded("RawPut", t.client.raw_put(req))
        .await
        .unwrap()
        .into_inner();
    assert!(put.error.is_empty(), "{put:?}");
    cluster.advance_clock(Duration::from_secs(4)).unwrap();
    assert_eq!(t.value(key).await, Some(b(b"v")));
    cluster.advance_clock(Duration::from_secs(1)).unwrap();
    assert_eq!(t.value(key).await, None);

    let system = MockCluster::builder().start().await.unwrap();
    assert!(matches!(
        system.advance_clock(Duration::from_secs(1)),
        Err(MockError::Config(_))
    ));
}

/// Binds `addr` again, retrying briefly: the servers' tasks are aborted on drop and release
/// their listeners when the runtime next runs them.
async fn rebind(addr: SocketAddr) {
    let mut last = None;
    for _ in 0..250 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(_) => return,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{addr} is still in use: {last:?}");
}

fn addrs(cluster: &MockCluster) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = vec![cluster.pd_endpoints()[0].parse().unwrap()];
    for store in cluster.store_ids() {
        out.push(cluster.store_address(store).unwrap().parse().unwrap());
    }
    out
}

#[tokio::test]
async fn dropping_the_cluster_frees_its_ports() {
    let cluster = MockCluster::builder().start().await.unwrap();
    // Open connections (and a long-lived stream) must not keep the ports either.
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    t.put(b"k", b"v").await;
    let _stream = open_stream(&mut t.client).await;
    pd_client(&cluster)
        .await
        .get_members(pdpb::GetMembersRequest::default())
        .await
        .unwrap();
    let ports = addrs(&cluster);
    let clone = cluster.clone();
    drop(cluster);
    // A clone keeps the cluster alive.
    assert!(
        bounded(
            "GetMembers",
            pd_client(&clone)
                .await
                .get_members(pdpb::GetMembersRequest::default())
        )
        .await
        .is_ok()
    );
    drop(clone);
    for addr in ports {
        rebind(addr).await;
    }

    // `shutdown` frees them as well, and a new cluster can take the PD port at once.
    let cluster = MockCluster::builder().start().await.unwrap();
    let pd_addr: SocketAddr = cluster.pd_endpoints()[0].parse().unwrap();
    let ports = addrs(&cluster);
    cluster.shutdown().await;
    for addr in ports {
        rebind(addr).await;
    }
    let again = MockCluster::builder()
        .pd_addr(pd_addr)
        .start()
        .await
        .unwrap();
    assert_eq!(again.pd_endpoints(), vec![pd_addr.to_string()]);
    assert!(
        bounded(
            "GetMembers",
            pd_client(&again)
                .await
                .get_members(pdpb::GetMembersRequest::default())
        )
        .await
        .is_ok()
    );
}

async fn pd_store(cluster: &MockCluster, id: u64) -> pdpb::GetStoreResponse {
    let mut pd = pd_client(cluster).await;
    bounded(
        "GetStore",
        pd.get_store(pdpb::GetStoreRequest {
            header: pd_header(cluster),
            store_id: id,
        }),
    )
    .await
    .unwrap()
    .into_inner()
}

/// Store lifecycle as PD reports it: a new store, a store moved to another address (a request
/// sent to the old address reaches whoever listens there and gets StoreNotMatch), Offline and
/// Tombstone states with PD's node states, and a forgotten store that PD no longer knows.
#[tokio::test]
async fn stores_are_added_moved_buried_and_forgotten() {
    let cluster = MockCluster::builder().stores(2).start().await.unwrap();
    let ids = cluster.store_ids();
    let (first, second) = (ids[0], ids[1]);

    let added = cluster.add_store().await.unwrap();
    let meta = pd_store(&cluster, added).await.store.unwrap();
    assert_eq!(meta.state, metapb::StoreState::Up as i32);
    assert_eq!(meta.node_state, metapb::NodeState::Serving as i32);
    assert_eq!(Some(meta.address), cluster.store_address(added));

    // Swap the addresses of the two original stores.
    let a: SocketAddr = cluster.store_address(first).unwrap().parse().unwrap();
    let b_addr: SocketAddr = cluster.store_address(second).unwrap().parse().unwrap();
    assert!(cluster.set_store_address(first, b_addr).is_err(), "running");
    cluster.stop_store(first).await.unwrap();
    cluster.stop_store(second).await.unwrap();
    cluster.set_store_address(first, b_addr).unwrap();
    cluster.set_store_address(second, a).unwrap();
    cluster.start_store(first).await.unwrap();
    cluster.start_store(second).await.unwrap();
    assert_eq!(
        pd_store(&cluster, first).await.store.unwrap().address,
        b_addr.to_string()
    );
    // A request meant for `first` sent to its old address reaches `second`.
    let t = target(&cluster, b"k", ApiVersion::V1).await;
    let old_addr = if t.store == first { a } else { b_addr };
    let mut wrong =
        tikv_mock::proto::tikvpb::tikv_client::TikvClient::connect(format!("http://{old_addr}"))
            .await
            .unwrap();
    let resp = bounded(
        "RawGet",
        wrong.raw_get(tikv_mock::proto::kvrpcpb::RawGetRequest {
            context: Some(t.ctx.clone()),
            key: b(b"k"),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let err = resp.region_error.unwrap().store_not_match.unwrap();
    assert_eq!(err.request_store_id, t.store);

    // Offline, then Tombstone once empty; a store with peers cannot be buried or forgotten.
    cluster
        .set_store_state(added, metapb::StoreState::Offline)
        .unwrap();
    let meta = pd_store(&cluster, added).await.store.unwrap();
    assert_eq!(meta.state, metapb::StoreState::Offline as i32);
    assert_eq!(meta.node_state, metapb::NodeState::Removing as i32);
    assert!(matches!(
        cluster.set_store_state(first, metapb::StoreState::Tombstone),
        Err(MockError::Topology(_))
    ));
    assert!(cluster.remove_store(first).await.is_err());
    cluster
        .set_store_state(added, metapb::StoreState::Tombstone)
        .unwrap();
    let meta = pd_store(&cluster, added).await.store.unwrap();
    assert_eq!(meta.state, metapb::StoreState::Tombstone as i32);
    assert_eq!(meta.node_state, metapb::NodeState::Removed as i32);

    // Forgotten: PD answers "not found" in the header, and the store cannot start again.
    cluster.remove_store(added).await.unwrap();
    let resp = pd_store(&cluster, added).await;
    assert!(resp.store.is_none());
    assert_eq!(
        resp.header.unwrap().error.unwrap().message,
        format!("invalid store ID {added}, not found")
    );
    assert!(cluster.start_store(added).await.is_err());
}
