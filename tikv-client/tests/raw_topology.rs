//! `RawClient` while stores change under it: a store restarted on another store's address, a
//! store removed while a new one takes its address, and a store replaced by a new one. Each
//! time the client holds cached addresses that now reach the wrong store (which answers
//! `StoreNotMatch`) or nothing, and must find the data without the caller seeing an error.
//!
//! Ports the store-address cases of client-go `rawkv/rawkv_test.go` (TestUpdateStoreAddr,
//! TestReplaceAddrWithNewStore, TestReplaceNewAddrAndOldOfflineImmediately, TestReplaceStore,
//! and the address-swap half of TestColumnFamilyForClient / TestColumnFamilyForOptions).
//! client-go fakes liveness with a failpoint; here the stores really stop, restart and move, and
//! tikv-mock's stores check the store id of every request as TiKV does.

// Test code: an unwrap that fails is a failed test (the workspace lints deny them elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use tikv_client::RawClient;
use tikv_client::options::ColumnFamily;
use tikv_mock::MockCluster;
use tikv_mock::proto::metapb;

/// Three stores, one region per split key, leaders spread over the stores.
async fn mock(split: &[&str]) -> MockCluster {
    MockCluster::builder()
        .stores(3)
        .split_keys(split.iter().map(|k| k.as_bytes()))
        .start()
        .await
        .unwrap()
}

/// The store leading the region of `key` and the peer ids of that region.
fn leader_of(mock: &MockCluster, key: &str) -> (u64, metapb::Region) {
    let (region, leader) = mock.region_for_raw_key(key.as_bytes()).unwrap();
    (leader.unwrap().store_id, region)
}

fn addr(mock: &MockCluster, store: u64) -> SocketAddr {
    mock.store_address(store).unwrap().parse().unwrap()
}

/// Restarts stores `a` and `b` on each other's addresses.
async fn swap_addresses(mock: &MockCluster, a: u64, b: u64) {
    let (addr_a, addr_b) = (addr(mock, a), addr(mock, b));
    mock.stop_store(a).await.unwrap();
    mock.stop_store(b).await.unwrap();
    mock.set_store_address(a, addr_b).unwrap();
    mock.set_store_address(b, addr_a).unwrap();
    mock.start_store(a).await.unwrap();
    mock.start_store(b).await.unwrap();
}

/// A store other than `store` that holds a peer of `region`.
fn other_peer_store(region: &metapb::Region, store: u64) -> u64 {
    region
        .peers
        .iter()
        .map(|p| p.store_id)
        .find(|&s| s != store)
        .unwrap()
}

fn total(mock: &MockCluster, command: &str) -> u64 {
    mock.store_ids()
        .into_iter()
        .map(|s| mock.rpc_count(s, command))
        .sum()
}

/// TestUpdateStoreAddr: the leader's store comes back on another store's address. The old
/// address now reaches the wrong store, which answers StoreNotMatch; the client re-resolves the
/// store through PD and reads from its new address.
#[tokio::test]
async fn a_store_restarted_on_another_stores_address() {
    let mock = mock(&[]).await;
    let c = RawClient::new(mock.pd_endpoints()).await.unwrap();
    c.put("test_key", "test_value").await.unwrap();
    let (leader, region) = leader_of(&mock, "test_key");
    let other = other_peer_store(&region, leader);

    swap_addresses(&mock, leader, other).await;
    mock.reset_rpc_counts();

    let got = c.get("test_key").await.unwrap();
    assert_eq!(got.unwrap().as_ref(), b"test_value");
    // The stale address led to the other store once; the leader answered at its new address.
    assert_eq!(mock.rpc_count(leader, "RawGet"), 1);
    assert!(mock.rpc_count(other, "RawGet") <= 1);
    // Later calls go straight to the new address.
    mock.reset_rpc_counts();
    c.put("test_key", "v2").await.unwrap();
    assert_eq!(mock.rpc_count(leader, "RawPut"), 1);
    assert_eq!(total(&mock, "RawPut"), 1);
}

/// TestReplaceAddrWithNewStore and the address half of the column-family tests: the addresses
/// of two stores swap, then the old leader's store is removed (its peer gone, leadership moved
/// to the other store, the store buried). The client's cached leader address now reaches the
/// store that leads; the cached store is gone in PD, so the region is reloaded. Values in
/// every column family survive.
#[tokio::test]
async fn a_removed_store_whose_address_another_store_took() {
    let mock = mock(&[]).await;
    let c = RawClient::new(mock.pd_endpoints()).await.unwrap();
    c.put("test_key", "test_value").await.unwrap();
    let write_cf = c.with_cf(ColumnFamily::Write);
    let lock_cf = c.with_cf(ColumnFamily::Lock);
    write_cf.put("cf_key", "in write").await.unwrap();
    lock_cf.put("cf_key", "in lock").await.unwrap();
    let (old, region) = leader_of(&mock, "test_key");
    let new = other_peer_store(&region, old);

    swap_addresses(&mock, old, new).await;
    mock.transfer_leader(region.id, new).unwrap();
    mock.remove_peer(region.id, old).unwrap();
    mock.stop_store(old).await.unwrap();
    mock.set_store_state(old, metapb::StoreState::Tombstone)
        .unwrap();

    assert_eq!(
        c.get("test_key").await.unwrap().unwrap().as_ref(),
        b"test_value"
    );
    assert_eq!(
        write_cf.get("cf_key").await.unwrap().unwrap().as_ref(),
        b"in write"
    );
    assert_eq!(
        lock_cf.get("cf_key").await.unwrap().unwrap().as_ref(),
        b"in lock"
    );
    assert_eq!(c.get("cf_key").await.unwrap(), None);
    assert_eq!(write_cf.get("test_key").await.unwrap(), None);
    // Deletes reach the new leader too.
    write_cf.delete("cf_key").await.unwrap();
    assert_eq!(write_cf.get("cf_key").await.unwrap(), None);
    assert_eq!(mock.rpc_count(old, "RawGet"), 0);
}

/// TestReplaceNewAddrAndOldOfflineImmediately: the client has already cached the address of
/// the store that later takes over (it leads another region). That store moves to the old
/// leader's address while the old leader is removed at once, so the client's cached address of
/// the new leader reaches nothing: it must re-resolve that store too.
#[tokio::test]
async fn a_new_address_and_the_old_store_gone_at_once() {
    let mock = mock(&["m"]).await;
    let c = RawClient::new(mock.pd_endpoints()).await.unwrap();
    c.put("a_key", "a_value").await.unwrap();
    c.put("z_key", "z_value").await.unwrap();
    let (old, region) = leader_of(&mock, "a_key");
    let (new, _) = leader_of(&mock, "z_key");
    // spread_leaders puts the two regions' leaders on different stores.
    assert_ne!(old, new);
    assert!(region.peers.iter().any(|p| p.store_id == new));
    // Both leaders' addresses are cached now.
    assert_eq!(c.get("z_key").await.unwrap().unwrap().as_ref(), b"z_value");

    let old_addr = addr(&mock, old);
    mock.stop_store(old).await.unwrap();
    mock.stop_store(new).await.unwrap();
    mock.set_store_address(new, old_addr).unwrap();
    mock.start_store(new).await.unwrap();
    mock.transfer_leader(region.id, new).unwrap();
    mock.remove_peer(region.id, old).unwrap();
    mock.remove_store(old).await.unwrap_err(); // the other region still has a peer there
    for r in mock.regions() {
        if r.peers.iter().any(|p| p.store_id == old) {
            if r.id != region.id {
                let (_, leader) = mock.region_for_raw_key(&r.start_key).unwrap();
                if leader.map(|p| p.store_id) == Some(old) {
                    mock.transfer_leader(r.id, new).unwrap();
                }
            }
            mock.remove_peer(r.id, old).unwrap();
        }
    }
    mock.remove_store(old).await.unwrap();

    assert_eq!(c.get("a_key").await.unwrap().unwrap().as_ref(), b"a_value");
    assert_eq!(c.get("z_key").await.unwrap().unwrap().as_ref(), b"z_value");
    c.put("a_key", "again").await.unwrap();
    assert_eq!(c.get("a_key").await.unwrap().unwrap().as_ref(), b"again");
}

/// TestReplaceStore: the leader's store is buried and a brand-new store starts on its address
/// and takes over the region. The cached address reaches the new store, which answers
/// StoreNotMatch; the buried store makes the client reload the region and write to the new
/// store.
#[tokio::test]
async fn a_store_replaced_by_a_new_store_on_its_address() {
    let mock = mock(&[]).await;
    let c = RawClient::new(mock.pd_endpoints()).await.unwrap();
    c.put("test_key", "test_value").await.unwrap();
    let (old, region) = leader_of(&mock, "test_key");
    let old_addr = addr(&mock, old);

    mock.stop_store(old).await.unwrap();
    let replacement = mock.add_store_at(old_addr).await.unwrap();
    mock.add_peer(region.id, replacement).unwrap();
    mock.transfer_leader(region.id, replacement).unwrap();
    mock.remove_peer(region.id, old).unwrap();
    mock.set_store_state(old, metapb::StoreState::Tombstone)
        .unwrap();
    mock.reset_rpc_counts();

    c.put("test_key", "new_value").await.unwrap();
    assert_eq!(
        mock.rpc_count(replacement, "RawPut"),
        total(&mock, "RawPut")
    );
    assert_eq!(
        c.get("test_key").await.unwrap().unwrap().as_ref(),
        b"new_value"
    );
}

/// The mock's store lifecycle refuses what PD refuses: burying or forgetting a store that still
/// holds peers, and moving a running store.
#[tokio::test]
async fn store_lifecycle_controls_refuse_what_pd_refuses() {
    let mock = mock(&[]).await;
    let store = mock.store_ids()[0];
    assert!(
        mock.set_store_state(store, metapb::StoreState::Tombstone)
            .is_err()
    );
    assert!(mock.remove_store(store).await.is_err());
    assert!(
        mock.set_store_address(store, "127.0.0.1:1".parse().unwrap())
            .is_err()
    );
    let added = mock.add_store().await.unwrap();
    assert!(mock.store_ids().contains(&added));
    mock.set_store_state(added, metapb::StoreState::Offline)
        .unwrap();
    mock.set_store_state(added, metapb::StoreState::Tombstone)
        .unwrap();
    mock.remove_store(added).await.unwrap();
    assert!(!mock.store_ids().contains(&added));
    assert!(mock.start_store(added).await.is_err());
}
