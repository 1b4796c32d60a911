//! The store cache: resolution, labels, engines, tombstones, address changes.

use std::sync::Arc;

use super::fake::{Calls, FakePd, store_addr};
use super::{Request, first_target, quiet_cache};
use crate::locate::region::{InvalidReason, flags};
use crate::locate::store::{ResolveState, StoreCache, StoreState, StoreType};
use crate::pd::RegionSource;

fn store_cache(pd: &Arc<FakePd>) -> StoreCache {
    StoreCache::new(pd.clone() as Arc<dyn RegionSource>)
}

// client-go TestStoreLabels.
#[tokio::test]
async fn store_labels_come_from_pd() {
    let pd = FakePd::bootstrap(2);
    pd.set_store_labels(1, &[("id", "1")]);
    pd.set_store_labels(2, &[("id", "2")]);
    let stores = store_cache(&pd);
    for id in [1, 2] {
        let store = stores.get_or_insert(id);
        stores.resolve(&store).await.unwrap();
        let label = vec![("id".to_owned(), id.to_string())];
        let matching: Vec<u64> = stores
            .all()
            .iter()
            .filter(|s| s.matches_labels(&label))
            .map(|s| s.id())
            .collect();
        assert_eq!(matching, [id]);
        assert_eq!(store.labels()[0].value, id.to_string());
    }
}

// client-go TestResolveStateTransition.
#[tokio::test]
async fn resolve_state_transitions() {
    let pd = FakePd::bootstrap(2);
    let stores = store_cache(&pd);
    // Unresolved -> Resolved.
    for id in [1, 2] {
        let store = stores.get_or_insert(id);
        assert_eq!(store.resolve_state(), ResolveState::Unresolved);
        let addr = stores.resolve(&store).await.unwrap().unwrap();
        assert_eq!(&*addr, store_addr(id));
        assert_eq!(store.resolve_state(), ResolveState::Resolved);
    }
    // Marked NeedCheck -> checked -> Resolved.
    let store = stores.get_or_insert(1);
    stores.mark_need_check(&store);
    assert_eq!(store.resolve_state(), ResolveState::NeedCheck);
    stores.check_marked().await;
    assert_eq!(store.resolve_state(), ResolveState::Resolved);
    // Marked, and PD says tombstone -> Tombstone.
    pd.tombstone_store(1);
    stores.mark_need_check(&store);
    stores.check_marked().await;
    assert_eq!(store.resolve_state(), ResolveState::Tombstone);
    pd.revive_store(1);
    // Marked, and PD forgot it -> Tombstone.
    stores.clear();
    let store = stores.get_or_insert(1);
    stores.resolve(&store).await.unwrap();
    let meta = pd.remove_store(1);
    stores.mark_need_check(&store);
    stores.check_marked().await;
    assert_eq!(store.resolve_state(), ResolveState::Tombstone);
    pd.put_store(meta);
    // Marked, and the address and labels changed: updated in place.
    stores.clear();
    let store = stores.get_or_insert(1);
    stores.resolve(&store).await.unwrap();
    pd.set_store_address(1, "store1-moved");
    pd.set_store_labels(1, &[("k", "v")]);
    stores.mark_need_check(&store);
    stores.check_marked().await;
    let again = stores.get_or_insert(1);
    assert!(Arc::ptr_eq(&store, &again));
    assert_eq!(again.resolve_state(), ResolveState::Resolved);
    assert_eq!(&*again.address(), "store1-moved");
    assert!(again.matches_labels(&[("k".to_owned(), "v".to_owned())]));
    // Resolving a tombstone, or a store PD does not know, gives no address, twice.
    stores.clear();
    pd.tombstone_store(1);
    let store = stores.get_or_insert(1);
    for _ in 0..2 {
        assert!(stores.resolve(&store).await.unwrap().is_none());
        assert_eq!(store.resolve_state(), ResolveState::Tombstone);
    }
    pd.revive_store(1);
    stores.clear();
    let meta = pd.remove_store(1);
    let store = stores.get_or_insert(1);
    for _ in 0..2 {
        assert!(stores.resolve(&store).await.unwrap().is_none());
        assert_eq!(store.resolve_state(), ResolveState::Tombstone);
    }
    pd.put_store(meta);
}

/// Concurrent first uses of a store share one `GetStore`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_uses_of_a_store_share_one_get_store() {
    let pd = FakePd::bootstrap(1);
    let stores = Arc::new(store_cache(&pd));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let stores = stores.clone();
        tasks.spawn(async move {
            let store = stores.get_or_insert(1);
            stores.resolve(&store).await.unwrap()
        });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(&*r.unwrap().unwrap(), store_addr(1));
    }
    assert_eq!(Calls::get(&pd.calls.get_store), 1);
}

#[tokio::test]
async fn store_type_comes_from_the_engine_label() {
    let pd = FakePd::bootstrap(3);
    pd.set_store_labels(2, &[("engine", "tiflash")]);
    pd.set_store_labels(3, &[("engine", "tiflash_compute"), ("zone", "z1")]);
    let cache = quiet_cache(&pd);
    let region = cache.locate_region(b"a").await.unwrap();
    assert_eq!(region.tikv_peer_indexes().len(), 1);
    assert_eq!(region.tiflash_peer_indexes().len(), 2);
    let types: Vec<(u64, StoreType)> = cache
        .stores()
        .iter()
        .map(|s| (s.id, s.store_type))
        .collect();
    assert_eq!(
        types,
        [
            (1, StoreType::TiKv),
            (2, StoreType::TiFlash),
            (3, StoreType::TiFlashCompute)
        ]
    );
    assert_eq!(cache.stores_by_type(StoreType::TiFlash)[0].id, 2);
    let s3 = &cache.stores()[2];
    assert_eq!(s3.address, store_addr(3));
    assert!(s3.labels.contains(&("zone".to_owned(), "z1".to_owned())));
    assert_eq!(s3.state, StoreState::Up);
}

// client-go TestFilterDownPeersOrPeersOnTombstoneOrDroppedStores.
#[tokio::test]
async fn down_peers_and_peers_on_gone_stores_are_left_out() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    let region = cache.locate_region(b"a").await.unwrap();
    assert_eq!(region.peers().len(), 2);
    assert_eq!(region.stores().len(), 2);
    cache.check_consistency();
    // On a tombstone store.
    cache.clear_for_test();
    pd.tombstone_store(1);
    let region = cache.locate_region(b"a").await.unwrap();
    assert_eq!(region.peers().len(), 1);
    assert!(region.peers().iter().all(|p| p.store_id != 1));
    assert!(region.stores().iter().all(|s| s.id() != 1));
    let t = first_target(&cache, region.ver_id()).await.unwrap();
    assert_eq!(t.peer.store_id, 2);
    pd.revive_store(1);
    // On a store PD no longer knows.
    cache.clear_for_test();
    let meta = pd.remove_store(1);
    let region = cache.locate_region(b"a").await.unwrap();
    assert_eq!(region.peers().len(), 1);
    assert_eq!(region.peers()[0].store_id, 2);
    pd.put_store(meta);
    // Down peers.
    cache.clear_for_test();
    pd.set_down_stores(1, vec![2]);
    let region = cache.locate_region(b"a").await.unwrap();
    assert_eq!(region.peers().len(), 1);
    assert_eq!(region.down_peers().len(), 1);
    pd.set_down_stores(1, vec![]);
    // No peer left: an error.
    cache.clear_for_test();
    pd.tombstone_store(1);
    pd.tombstone_store(2);
    let err = cache.locate_key(b"a").await.unwrap_err();
    assert!(err.to_string().contains("no available peers"), "{err}");
}

/// A store that moved: the refresh finds the new address, regions on the store are reloaded
/// before their next use, and requests go to the new address.
#[tokio::test]
async fn store_address_change_reloads_its_regions() {
    let pd = FakePd::bootstrap(1);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    let t = first_target(&cache, loc.region()).await.unwrap();
    assert_eq!(&*t.addr, store_addr(1));
    pd.set_store_address(1, "10.0.0.1:20160");
    cache.store_cache().refresh_all().await.unwrap();
    assert_eq!(
        cache.stores().iter().find(|s| s.id == 1).unwrap().address,
        "10.0.0.1:20160"
    );
    // The cached view of the region trusted the store at its old address: with no other
    // replica to try, the request's selector drops it.
    assert!(first_target(&cache, loc.region()).await.is_none());
    let calls = Calls::get(&pd.calls.get_region);
    let loc = cache.locate_key(b"a").await.unwrap();
    assert_eq!(Calls::get(&pd.calls.get_region), calls + 1);
    let t = first_target(&cache, loc.region()).await.unwrap();
    assert_eq!(&*t.addr, "10.0.0.1:20160");
}

/// A tombstone store: the refresh marks it, requests to its regions go to the other peers
/// (which name the new leader), and its regions are reloaded soon.
#[tokio::test]
async fn a_tombstone_store_is_avoided_and_its_regions_reload() {
    let pd = FakePd::bootstrap(3);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    pd.tombstone_store(1);
    pd.change_leader(1, Some(2));
    cache.store_cache().refresh_all().await.unwrap();
    let info = cache.stores();
    assert_eq!(info[0].state, StoreState::Tombstone);
    let mut req = Request::new(&cache, loc.region()).unwrap();
    let mut t = req.next(&cache).await.unwrap();
    assert_ne!(t.peer.store_id, 1, "the tombstone store is not tried");
    if t.peer.store_id != 2 {
        req.not_leader(&t, Some(2));
        t = req.next(&cache).await.unwrap();
    }
    assert_eq!(&*t.addr, store_addr(2));
    req.answered(&t);
    let region = cache.cached_region(loc.region()).unwrap();
    assert_eq!(region.leader_peer().unwrap().store_id, 2);
    assert!(region.has_flags(flags::NEED_DELAYED_RELOAD_PENDING));
}

/// A store PD stops listing is treated as removed.
#[tokio::test]
async fn a_store_pd_forgot_invalidates_its_regions() {
    let pd = FakePd::bootstrap(1);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    pd.remove_store(1);
    cache.store_cache().refresh_all().await.unwrap();
    assert_eq!(cache.stores()[0].state, StoreState::Tombstone);
    // Its only replica is gone: the request's selector drops the region.
    assert!(first_target(&cache, loc.region()).await.is_none());
    assert_ne!(
        cache.cached_region(loc.region()).unwrap().invalid_reason(),
        InvalidReason::Ok
    );
}

/// The refresh adds stores the cache has not seen yet, resolved.
#[tokio::test]
async fn refresh_adds_unknown_stores() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    assert!(cache.stores().is_empty());
    cache.store_cache().refresh_all().await.unwrap();
    let ids: Vec<u64> = cache.stores().iter().map(|s| s.id).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(
        cache.store_cache().get(2).unwrap().resolve_state(),
        ResolveState::Resolved
    );
    // Regions built later need no GetStore.
    cache.locate_key(b"a").await.unwrap();
    assert_eq!(Calls::get(&pd.calls.get_store), 0);
}

// client-go TestIssue1401 (and the label part of TestStoreRestartWithNewLabels): a store
// re-resolved with new labels keeps its identity, so regions and requests holding it see them.
#[tokio::test]
async fn new_labels_are_applied_to_the_same_store() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    let region = cache.locate_region(b"a").await.unwrap();
    let store1 = region.stores()[0].clone();
    pd.set_store_labels(1, &[("host", "0.0.0.0:20161")]);
    cache.store_cache().mark_need_check(&store1);
    cache.store_cache().check_marked().await;
    let again = cache.store_cache().get(1).unwrap();
    assert!(Arc::ptr_eq(&store1, &again));
    assert_eq!(store1.resolve_state(), ResolveState::Resolved);
    assert!(store1.matches_labels(&[("host".to_owned(), "0.0.0.0:20161".to_owned())]));
    // Labels alone do not invalidate the store's regions.
    assert!(first_target(&cache, region.ver_id()).await.is_some());
}

/// client-go `reResolve`: a store marked for a check (something failed on it) is asked about
/// again from the PD leader only, and takes the address PD now reports.
#[tokio::test]
async fn a_marked_store_is_re_resolved_from_the_pd_leader() {
    let pd = FakePd::bootstrap(1);
    let cache = quiet_cache(&pd);
    cache.locate_key(b"a").await.unwrap();
    let stores = cache.store_cache();
    let store = stores.get_or_insert(1);
    assert_eq!(&*store.address(), store_addr(1));
    assert_eq!(
        Calls::get(&pd.calls.leader_only),
        0,
        "first resolve may ask any server"
    );
    pd.set_store_address(1, "10.0.0.9:20160");
    stores.mark_need_check(&store);
    stores.check_marked().await;
    assert_eq!(Calls::get(&pd.calls.leader_only), 1);
    assert_eq!(&*store.address(), "10.0.0.9:20160");
}
