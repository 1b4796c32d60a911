//! Region cache behaviour against the in-memory PD.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::metapb;

use super::fake::{Calls, FakePd, store_addr};
use super::{
    Request, Target, config_ttl, first_target, quiet_cache, quiet_cache_with, report_leader,
};
use crate::locate::health::LivenessState;
use crate::locate::region::{CachedRegion, InvalidReason, RegionVerId, flags};
use crate::locate::region_cache::{BatchLocateOptions, RegionCache};
use crate::pd::RegionInfo;
use crate::{Error, Key};

fn get_region_calls(pd: &FakePd) -> usize {
    Calls::get(&pd.calls.get_region)
}

/// The first attempt of a new leader read of the region holding `key`.
async fn leader(cache: &RegionCache, key: &[u8]) -> Target {
    let loc = cache.locate_key(key).await.unwrap();
    first_target(cache, loc.region())
        .await
        .expect("leader target")
}

// client-go TestSimple (leader part; follower reads are the sender's tests).
#[tokio::test]
async fn simple_locate_and_expire() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    assert_eq!(loc.region_id(), 1);
    assert_eq!(loc.region(), RegionVerId::new(1, 1, 1));
    assert!(loc.start_key().is_empty() && loc.end_key().is_empty());
    let t = first_target(&cache, loc.region()).await.unwrap();
    assert_eq!(&*t.addr, store_addr(1));
    assert_eq!(t.peer.id, 101);
    assert_eq!(cache.valid_region_count(), 1);
    cache.check_consistency();
    // Hits do not go to PD.
    for _ in 0..10 {
        cache.locate_key(b"zzz").await.unwrap();
    }
    assert_eq!(get_region_calls(&pd), 1);
    // Once the TTL passed, the region is not answered from the cache and is reloaded.
    cache
        .cached_region(loc.region())
        .unwrap()
        .set_ttl_deadline(0);
    assert!(cache.try_locate_key(b"a").is_none());
    assert!(
        Request::new(&cache, loc.region()).is_none(),
        "no request to an expired view"
    );
    cache.locate_key(b"a").await.unwrap();
    assert_eq!(get_region_calls(&pd), 2);
}

// client-go TestReconnect.
#[tokio::test]
async fn invalidate_then_reload() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    cache.invalidate_region(loc.region(), InvalidReason::Other);
    assert_eq!(cache.valid_region_count(), 0);
    assert!(cache.try_locate_key(b"a").is_none());
    let t = leader(&cache, b"a").await;
    assert_eq!(t.region.id(), 1);
    assert_eq!(&*t.addr, store_addr(1));
    assert_eq!(get_region_calls(&pd), 2);
    assert_eq!(cache.valid_region_count(), 1);
    cache.check_consistency();
}

// client-go TestUpdateLeader: NotLeader naming another peer moves the region's leader, for
// every later request.
#[tokio::test]
async fn update_leader_switches_to_reported_store() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    report_leader(&cache, loc.region(), Some(2)).await;
    let t = leader(&cache, b"a").await;
    assert_eq!((t.peer.id, &*t.addr), (102, store_addr(2).as_str()));
    let end = cache.locate_end_key(b"z").await.unwrap();
    assert_eq!(end.region_id(), 1);
    assert_eq!(
        first_target(&cache, end.region()).await.map(|t| t.peer.id),
        Some(102)
    );
    assert_eq!(get_region_calls(&pd), 1);
}

// client-go TestUpdateLeader2.
#[tokio::test]
async fn update_leader_to_a_store_without_cached_peer_reloads() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    pd.add_store(3, &store_addr(3), &[]);
    let peer3 = pd.add_peer(1, 3);
    // TiKV names store 3, which the cached view has no peer on: the view is stale.
    report_leader(&cache, loc.region(), Some(3)).await;
    assert_eq!(
        cache.cached_region(loc.region()).unwrap().invalid_reason(),
        InvalidReason::StoreNotFound
    );
    let t = leader(&cache, b"a").await;
    assert_eq!(t.region.peers().len(), 3);
    assert_eq!(t.region.ver_id().conf_ver(), 2);
    assert_eq!(t.peer.store_id, 1, "PD still says store 1 leads");
    pd.change_leader(1, Some(3));
    report_leader(&cache, t.region.ver_id(), Some(3)).await;
    let t = leader(&cache, b"a").await;
    assert_eq!((t.peer.id, &*t.addr), (peer3, store_addr(3).as_str()));
}

// client-go TestUpdateLeader3.
#[tokio::test]
async fn leader_on_a_removed_store_is_reloaded() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    pd.change_leader(1, Some(2));
    pd.remove_store(2);
    pd.add_store(3, &store_addr(3), &[]);
    let peer3 = pd.add_peer(1, 3);
    pd.change_leader(1, Some(3));
    // TiKV reports store 2 as leader; the cached view has a peer there and its address.
    report_leader(&cache, loc.region(), Some(2)).await;
    let mut req = Request::new(&cache, loc.region()).unwrap();
    let t = req.next(&cache).await.unwrap();
    assert_eq!(&*t.addr, store_addr(2));
    // Sending fails and the store is unreachable; the store check finds store 2 gone.
    req.send_failed(&cache, &t, LivenessState::Unreachable);
    cache.store_cache().check_marked().await;
    // The retry avoids store 2; store 1 names store 3, which the view does not know.
    let t = req.next(&cache).await.unwrap();
    assert_eq!(t.peer.store_id, 1);
    req.not_leader(&t, Some(3));
    assert!(Request::new(&cache, loc.region()).is_none());
    let t = leader(&cache, b"a").await;
    assert_eq!((t.peer.id, &*t.addr), (peer3, store_addr(3).as_str()));
    assert!(t.region.peers().iter().all(|p| p.store_id != 2));
}

// client-go TestSendFailedButLeaderNotChange (leader part): a failed leader store sends the
// retry to a follower; a NotLeader naming the other follower is followed at once.
#[tokio::test]
async fn send_fail_moves_to_a_follower_and_not_leader_points_on() {
    let pd = FakePd::bootstrap(3);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    let mut req = Request::new(&cache, loc.region()).unwrap();
    let t = req.next(&cache).await.unwrap();
    assert_eq!(t.peer.id, 101);
    req.send_failed(&cache, &t, LivenessState::Unreachable);
    let t = req.next(&cache).await.unwrap();
    assert_ne!(t.peer.id, 101);
    let named = if t.peer.store_id == 2 { 3 } else { 2 };
    req.not_leader(&t, Some(named));
    let t = req.next(&cache).await.unwrap();
    assert_eq!(t.peer.store_id, named);
    req.answered(&t);
    assert_eq!(leader(&cache, b"a").await.peer.store_id, named);
    assert_eq!(get_region_calls(&pd), 1);
}

// client-go TestSendFailedInHibernateRegion: NotLeader without a leader moves each retry to a
// peer not tried yet; when every peer said so, the region is invalidated.
#[tokio::test]
async fn not_leader_without_a_leader_moves_to_the_next_peer() {
    let pd = FakePd::bootstrap(3);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    let mut req = Request::new(&cache, loc.region()).unwrap();
    let mut tried = Vec::new();
    while let Some(t) = req.next(&cache).await {
        assert!(!tried.contains(&t.peer.id), "{} tried twice", t.peer.id);
        tried.push(t.peer.id);
        req.not_leader(&t, None);
    }
    tried.sort_unstable();
    assert_eq!(tried, [101, 102, 103]);
    assert_ne!(
        cache.cached_region(loc.region()).unwrap().invalid_reason(),
        InvalidReason::Ok
    );
}

// client-go TestSendFailedInMultipleNode: send failures walk the peers; the follower that
// answers a leader read is the leader from then on.
#[tokio::test]
async fn send_fails_cycle_through_peers() {
    let pd = FakePd::bootstrap(3);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    let mut req = Request::new(&cache, loc.region()).unwrap();
    let first = req.next(&cache).await.unwrap();
    assert_eq!(first.peer.id, 101);
    req.send_failed(&cache, &first, LivenessState::Unreachable);
    let second = req.next(&cache).await.unwrap();
    req.send_failed(&cache, &second, LivenessState::Unreachable);
    let third = req.next(&cache).await.unwrap();
    let mut ids = [first.peer.id, second.peer.id, third.peer.id];
    ids.sort_unstable();
    assert_eq!(ids, [101, 102, 103]);
    req.answered(&third);
    let region = cache.cached_region(loc.region()).unwrap();
    assert_eq!(region.leader_peer().unwrap().id, third.peer.id);
    assert!(
        region.has_flags(flags::NEED_DELAYED_RELOAD_PENDING),
        "peers on failed stores: reload soon"
    );
}

// client-go TestSendFailInvalidateRegionsInSameStore: a store failure seen by one region's
// request is seen by every region on the store.
#[tokio::test]
async fn store_failure_invalidates_other_regions_on_it() {
    let pd = FakePd::bootstrap(2);
    let region2 = pd.split(1, b"m");
    let cache = quiet_cache(&pd);
    let loc1 = cache.locate_key(b"a").await.unwrap();
    let loc2 = cache.locate_key(b"x").await.unwrap();
    assert_eq!((loc1.region_id(), loc2.region_id()), (1, region2));
    let mut req = Request::new(&cache, loc1.region()).unwrap();
    let t1 = req.next(&cache).await.unwrap();
    assert_eq!(t1.peer.store_id, 1);
    assert_eq!(cache.valid_region_count(), 2);
    req.send_failed(&cache, &t1, LivenessState::Unreachable);
    // Region 2 no longer trusts store 1: its next request goes elsewhere and it reloads soon.
    let t2 = first_target(&cache, loc2.region()).await.unwrap();
    assert_eq!(t2.peer.store_id, 2);
    let cached2 = cache.cached_region(loc2.region()).unwrap();
    assert!(cached2.has_flags(flags::NEED_DELAYED_RELOAD_PENDING));
}

// client-go TestPeersLenChange (region part): a region reloaded with a down peer leaves it out.
#[tokio::test]
async fn a_reload_with_a_down_peer_leaves_it_out() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    report_leader(&cache, loc.region(), Some(2)).await;
    let t = leader(&cache, b"a").await;
    assert_eq!(t.peer.store_id, 2);
    // The region is reloaded meanwhile with peer 1 down.
    let mut info = pd.info(1);
    info.down_peers = vec![info.region.peers[0]];
    let region = cache.build_region_for_test(info).await.unwrap();
    assert_eq!(region.peers().len(), 1);
    assert_eq!(region.down_peers().len(), 1);
    assert_eq!(region.peers()[0].store_id, 2);
    assert!(cache.insert_for_test(region, true));
}

// client-go TestPeersLenChangedByWitness.
#[tokio::test]
async fn witness_peers_are_left_out_unless_leading() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    report_leader(&cache, loc.region(), Some(2)).await;
    assert_eq!(leader(&cache, b"a").await.peer.store_id, 2);
    pd.change_leader(1, Some(2));
    pd.set_witness(1, 1);
    let region = cache.build_region_for_test(pd.info(1)).await.unwrap();
    assert_eq!(
        region.peers().len(),
        1,
        "the witness on store 1 does not lead"
    );
    assert!(cache.insert_for_test(region, true));
    // A witness that leads is kept.
    pd.change_leader(1, Some(1));
    let region = cache.build_region_for_test(pd.info(1)).await.unwrap();
    assert_eq!(region.peers().len(), 2);
    assert_eq!(region.leader_peer().unwrap().store_id, 1);
}

// client-go TestSwitchPeerWhenNoLeader.
#[tokio::test]
async fn no_leader_invalidation_reloads_with_the_next_peer() {
    let pd = FakePd::bootstrap(3);
    let cache = quiet_cache(&pd);
    let mut previous: Option<Target> = None;
    for _ in 0..=3 {
        let t = leader(&cache, b"a").await;
        if let Some(p) = &previous {
            assert_ne!(t.attempt.target, p.attempt.target);
            assert_ne!(t.peer.id, p.peer.id);
        }
        cache.invalidate_region(t.region.ver_id(), InvalidReason::NoLeader);
        assert_eq!(
            cache
                .cached_region(t.region.ver_id())
                .unwrap()
                .invalid_reason(),
            InvalidReason::NoLeader
        );
        previous = Some(t);
    }
}

// client-go TestSplit.
#[tokio::test]
async fn split_then_locate() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"x").await.unwrap();
    assert_eq!(loc.region_id(), 1);
    let region2 = pd.split(1, b"m");
    // TiKV reports the key is not in the region.
    cache.invalidate_region(loc.region(), InvalidReason::Other);
    assert_eq!(cache.valid_region_count(), 0);
    let loc = cache.locate_key(b"x").await.unwrap();
    assert_eq!(loc.region_id(), region2);
    assert_eq!(loc.start_key(), &Key::from("m"));
    assert_eq!(cache.valid_region_count(), 1);
    let end = cache.locate_end_key(b"m").await.unwrap();
    assert_eq!(end.region_id(), 1);
    assert_eq!(end.region().version(), 2);
    assert_eq!(cache.valid_region_count(), 2);
    cache.check_consistency();
}

// client-go TestMerge.
#[tokio::test]
async fn merge_then_locate() {
    let pd = FakePd::bootstrap(2);
    let region2 = pd.split(1, b"m");
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"x").await.unwrap();
    assert_eq!(loc.region_id(), region2);
    pd.merge(1, region2);
    cache.invalidate_region(loc.region(), InvalidReason::Other);
    assert_eq!(cache.valid_region_count(), 0);
    let loc = cache.locate_key(b"x").await.unwrap();
    assert_eq!(loc.region_id(), 1);
    assert!(loc.contains(b"a") && loc.contains(b"x"));
    assert_eq!(cache.valid_region_count(), 1);
    cache.check_consistency();
}

// client-go TestRegionEpochAheadOfTiKV.
#[tokio::test]
async fn epoch_not_match_behind_the_cache_asks_to_back_off() {
    let pd = FakePd::bootstrap(1);
    let cache = quiet_cache(&pd);
    let mut info = pd.info(1);
    info.region.region_epoch = Some(metapb::RegionEpoch {
        conf_ver: 10,
        version: 10,
    });
    let region = cache.build_region_for_test(info).await.unwrap();
    assert!(cache.insert_for_test(region.clone(), true));
    let t = first_target(&cache, region.ver_id()).await.unwrap();
    let behind = |conf_ver, version| metapb::Region {
        id: 1,
        region_epoch: Some(metapb::RegionEpoch { conf_ver, version }),
        ..Default::default()
    };
    assert!(
        cache
            .on_region_epoch_not_match(&t.region, &t.store, &[behind(10, 9)])
            .await
            .unwrap()
    );
    assert!(
        cache
            .on_region_epoch_not_match(&t.region, &t.store, &[behind(9, 10)])
            .await
            .unwrap()
    );
    assert_eq!(region.invalid_reason(), InvalidReason::Ok);
    // No current regions: the cached one is invalidated.
    assert!(
        !cache
            .on_region_epoch_not_match(&t.region, &t.store, &[])
            .await
            .unwrap()
    );
    assert_eq!(region.invalid_reason(), InvalidReason::EpochNotMatch);
}

/// EpochNotMatch with the new regions after a split: both are cached, with the store that
/// answered as leader, and the old view is invalidated.
#[tokio::test]
async fn epoch_not_match_caches_the_current_regions() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    report_leader(&cache, loc.region(), Some(2)).await;
    let t = first_target(&cache, loc.region()).await.unwrap();
    pd.set_buckets(1, 3, &[b"", b"c", b""]);
    let region2 = pd.split(1, b"m");
    let current = vec![pd.region(1).meta, pd.region(region2).meta];
    let calls = get_region_calls(&pd);
    assert!(
        !cache
            .on_region_epoch_not_match(&t.region, &t.store, &current)
            .await
            .unwrap()
    );
    assert_eq!(t.region.invalid_reason(), InvalidReason::EpochNotMatch);
    let left = cache.locate_key(b"a").await.unwrap();
    let right = cache.locate_key(b"x").await.unwrap();
    assert_eq!((left.region_id(), right.region_id()), (1, region2));
    assert_eq!(get_region_calls(&pd), calls, "no PD call needed");
    assert_eq!(leader(&cache, b"a").await.peer.store_id, 2);
    assert_eq!(leader(&cache, b"x").await.peer.store_id, 2);
    cache.check_consistency();
}

// client-go TestRegionEpochOnTiFlash.
#[tokio::test]
async fn epoch_not_match_from_tiflash_keeps_the_leader_on_tikv() {
    let pd = FakePd::bootstrap(2);
    pd.set_store_labels(1, &[("engine", "tiflash")]);
    pd.add_store(3, &store_addr(3), &[]);
    let peer3 = pd.add_peer(1, 3);
    pd.change_leader(1, Some(3));
    let cache = quiet_cache(&pd);
    let t = leader(&cache, b"a").await;
    assert_eq!(t.peer.id, peer3);
    assert_eq!(t.region.tiflash_peer_indexes().len(), 1);
    // The TiFlash peer (a learner) answers EpochNotMatch.
    let mut meta = pd.region(1).meta;
    meta.peers[0].role = metapb::PeerRole::Learner as i32;
    let flash_idx = t.region.tiflash_peer_indexes()[0];
    let flash_store = t.region.stores()[flash_idx].clone();
    meta.region_epoch.as_mut().unwrap().conf_ver += 1;
    assert!(
        !cache
            .on_region_epoch_not_match(&t.region, &flash_store, &[meta])
            .await
            .unwrap()
    );
    let t = leader(&cache, b"a").await;
    assert_ne!(
        t.peer.store_id, 1,
        "a TiFlash learner never becomes the leader"
    );
}

// client-go TestListRegionIDsInCache.
#[tokio::test]
async fn list_region_ids_in_key_range() {
    let pd = FakePd::bootstrap(2);
    let region2 = pd.split(1, b"m");
    let cache = quiet_cache(&pd);
    assert_eq!(
        cache
            .list_region_ids_in_key_range(b"a", b"z")
            .await
            .unwrap(),
        [1, region2]
    );
    assert_eq!(
        cache
            .list_region_ids_in_key_range(b"m", b"z")
            .await
            .unwrap(),
        [region2]
    );
    assert_eq!(
        cache
            .list_region_ids_in_key_range(b"a", b"m")
            .await
            .unwrap(),
        [1, region2],
        "the end is inclusive"
    );
    assert_eq!(
        cache.list_region_ids_in_key_range(b"", b"").await.unwrap(),
        [1, region2]
    );
}

fn split_abcd(pd: &FakePd) -> Vec<u64> {
    let mut ids = vec![1];
    ids.extend(pd.split_keys(&[b"a", b"b", b"c", b"d"]));
    ids
}

// client-go TestScanRegions, on BatchScanRegions (PD's ScanRegions is not used).
#[tokio::test(start_paused = true)]
async fn scans_respect_limits_and_skip_regions_without_leader() {
    let pd = FakePd::bootstrap(2);
    let regions = split_abcd(&pd);
    let cache = quiet_cache(&pd);
    let all = cache.load_regions_in_key_range(b"", b"").await.unwrap();
    let ids: Vec<u64> = all.iter().map(|l| l.region_id()).collect();
    assert_eq!(ids, regions);
    let range = |s: &str| vec![(Bytes::copy_from_slice(s.as_bytes()), Bytes::new())];
    let got = cache.batch_load_for_test(&range("a"), 3).await.unwrap();
    assert_eq!(
        got.iter().map(|r| r.id()).collect::<Vec<_>>(),
        regions[1..4]
    );
    let got = cache.batch_load_for_test(&range("a1"), 1).await.unwrap();
    assert_eq!(got.iter().map(|r| r.id()).collect::<Vec<_>>(), [regions[1]]);
    // Regions without a leader are left out of a leader-only location.
    pd.change_leader(regions[1], None);
    pd.change_leader(regions[3], None);
    let cache = quiet_cache(&pd);
    let got = cache.locate_key_range(b"", b"").await.unwrap();
    let ids: Vec<u64> = got.iter().map(|l| l.region_id()).collect();
    assert_eq!(ids, [regions[0], regions[2], regions[4]]);
}

// client-go TestBatchLoadRegions.
#[tokio::test]
async fn batch_load_regions_with_limits() {
    let pd = FakePd::bootstrap(2);
    let regions = split_abcd(&pd);
    let cache = quiet_cache(&pd);
    let cases: [(&str, &str, usize, &[u64]); 5] = [
        ("", "a", 1, &[regions[0]]),
        ("a", "b1", 2, &[regions[1], regions[2]]),
        ("a1", "d", 2, &[regions[1], regions[2]]),
        ("c", "c1", 2, &[regions[3]]),
        ("d", "", 2, &[regions[4]]),
    ];
    for (start, end, limit, expect) in cases {
        let ranges = vec![(
            Bytes::copy_from_slice(start.as_bytes()),
            Bytes::copy_from_slice(end.as_bytes()),
        )];
        let got = cache.batch_load_for_test(&ranges, limit).await.unwrap();
        let ids: Vec<u64> = got.iter().map(|r| r.id()).collect();
        assert_eq!(ids, expect, "[{start}, {end}) limit {limit}");
    }
    assert_eq!(cache.valid_region_count(), regions.len());
    cache.check_consistency();
}

// client-go TestReturnRegionWithNoLeader.
#[tokio::test(start_paused = true)]
async fn a_scan_where_every_region_lacks_a_leader_is_retried() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    pd.leaderless_in_scans(1, 1);
    let got = cache.locate_key_range(b"", b"").await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(Calls::get(&pd.calls.batch_scan), 2);
    assert_eq!(
        Calls::get(&pd.calls.leader_only),
        1,
        "the retry asks the leader"
    );
}

// client-go TestRemoveIntersectingRegions.
#[tokio::test]
async fn a_newer_region_evicts_the_regions_it_overlaps() {
    let pd = FakePd::bootstrap(2);
    let mut regions = vec![1];
    regions.extend(pd.split_keys(&[b"b", b"c", b"d", b"e"]));
    let cache = quiet_cache(&pd);
    for (i, c) in (b'a'..=b'e').enumerate() {
        assert_eq!(
            cache.locate_key(&[c]).await.unwrap().region_id(),
            regions[i]
        );
    }
    for &r in &regions[1..=3] {
        pd.merge(regions[0], r);
    }
    // The cache still holds the merged regions' old views; that is expected until it learns.
    assert_ne!(
        cache.locate_key(b"c").await.unwrap().region_id(),
        regions[0]
    );
    assert_eq!(
        cache.locate_key(b"e").await.unwrap().region_id(),
        regions[4]
    );
    let merged = cache.load_region_for_test(b"c").await.unwrap();
    assert_eq!(merged.id(), regions[0]);
    assert!(cache.insert_for_test(merged, true));
    assert_eq!(
        cache.locate_key(b"c").await.unwrap().region_id(),
        regions[0]
    );
    assert_eq!(cache.valid_region_count(), 2);
    // Merging the last region tests the unbounded end.
    pd.merge(regions[0], regions[4]);
    let merged = cache.load_region_for_test(b"e").await.unwrap();
    assert!(cache.insert_for_test(merged, true));
    assert_eq!(
        cache.locate_key(b"e").await.unwrap().region_id(),
        regions[0]
    );
    assert_eq!(cache.valid_region_count(), 1);
    cache.check_consistency();
}

/// Not in client-go, which keeps the older region here: a newer region also evicts an older
/// one that starts before it and reaches into it.
#[tokio::test]
async fn a_newer_region_evicts_an_older_one_starting_before_it() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    cache.locate_key(b"b").await.unwrap(); // (-inf, +inf) at version 1
    let right = pd.split(1, b"m"); // [m, +inf) at version 2
    let loaded = cache.load_region_for_test(b"x").await.unwrap();
    assert_eq!(loaded.id(), right);
    assert!(cache.insert_for_test(loaded, true));
    assert!(cache.try_locate_key(b"b").is_none(), "the old view is gone");
    let loc = cache.locate_key(b"b").await.unwrap();
    assert_eq!((loc.region_id(), loc.end_key()), (1, &Key::from("m")));
    cache.check_consistency();
}

async fn split_then_locate_marked(mark: impl Fn(&CachedRegion)) {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    cache.locate_region_by_id(1).await.unwrap();
    let r1 = cache.cached_region(RegionVerId::new(1, 1, 1)).unwrap();
    pd.split(1, b"k");
    mark(&r1);
    assert!(cache.try_locate_key(r1.start_key().as_bytes()).is_none());
    assert!(cache.try_locate_key(b"k").is_none());
    assert!(cache.scan_cached_for_test(b"", b"", 2).is_empty());
    let loc1 = cache.locate_key(r1.start_key().as_bytes()).await.unwrap();
    assert!(!loc1.contains(b"k"));
    let loc2 = cache.locate_key(b"k").await.unwrap();
    assert!(loc2.contains(b"k"));
    cache.check_consistency();
}

// client-go TestSplitThenLocateInvalidRegion.
#[tokio::test]
async fn split_then_locate_an_invalidated_region() {
    split_then_locate_marked(|r| r.invalidate(InvalidReason::Other)).await;
}

// client-go TestSplitThenLocateRegionNeedReloadOnAccess.
#[tokio::test]
async fn split_then_locate_a_region_marked_reload_on_access() {
    split_then_locate_marked(|r| r.set_flags(flags::NEED_RELOAD_ON_ACCESS)).await;
}

// client-go TestSplitThenLocateRegionNeedDelayedReload.
#[tokio::test]
async fn split_then_locate_a_region_marked_delayed_reload() {
    split_then_locate_marked(|r| r.set_flags(flags::NEED_DELAYED_RELOAD_READY)).await;
}

/// A region the cache knows to be out of date is reloaded from the PD leader only (client-go
/// `findRegionByKey` calls `loadRegion` without follower handling then); a plain miss lets a
/// follower answer first.
#[tokio::test]
async fn a_known_stale_region_is_reloaded_from_the_pd_leader() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache(&pd);
    cache.locate_key(b"a").await.unwrap();
    assert_eq!(
        Calls::get(&pd.calls.leader_only),
        0,
        "a miss may ask a follower"
    );
    let r1 = cache.cached_region(RegionVerId::new(1, 1, 1)).unwrap();
    pd.split(1, b"k");
    r1.set_flags(flags::NEED_RELOAD_ON_ACCESS);
    let loc = cache.locate_key(b"a").await.unwrap();
    assert_eq!(loc.end_key(), &Key::from("k"));
    assert_eq!(Calls::get(&pd.calls.leader_only), 1);
    cache.check_consistency();
}

// client-go TestRefreshCache. Differs from client-go where noted: a region id is cached at one
// place only, and a newer region evicts the older one it overlaps.
#[tokio::test]
async fn refresh_replaces_the_cache_with_pd_view() {
    let pd = FakePd::bootstrap(1);
    let cache = quiet_cache(&pd);
    cache.refresh_all_regions().await.unwrap();
    assert_eq!(cache.scan_cached_for_test(b"", b"", 10).len(), 1);
    let build = |start: &[u8], end: &[u8], conf_ver: u64| {
        let mut info = pd.info(1);
        info.region.start_key = Bytes::copy_from_slice(start);
        info.region.end_key = Bytes::copy_from_slice(end);
        info.region.region_epoch.as_mut().unwrap().conf_ver = conf_ver;
        info
    };
    let r2 = cache
        .build_region_for_test(build(&[2], b"", 2))
        .await
        .unwrap();
    assert!(cache.insert_for_test(r2, true));
    // client-go keeps (-inf, +inf) here and answers 1; it is evicted here, leaving a hole.
    assert_eq!(cache.scan_cached_for_test(b"", b"", 10).len(), 0);
    let r3 = cache
        .build_region_for_test(build(b"", &[2], 3))
        .await
        .unwrap();
    assert!(cache.insert_for_test(r3, true));
    // client-go answers 2 (it keeps both views of region 1); one id is one region here.
    assert_eq!(cache.scan_cached_for_test(b"", b"", 10).len(), 1);
    cache.refresh_all_regions().await.unwrap();
    let scanned = cache.scan_cached_for_test(b"", b"", 10);
    assert_eq!(scanned.len(), 1);
    assert!(scanned[0].end_key().is_empty());
    cache.check_consistency();
}

// client-go TestRegionCacheStartNonEmpty.
#[tokio::test]
async fn a_hole_at_the_start_stops_a_cache_scan() {
    let pd = FakePd::bootstrap(1);
    let cache = quiet_cache(&pd);
    let mut info = pd.info(1);
    info.region.start_key = Bytes::from_static(&[1]);
    let region = cache.build_region_for_test(info).await.unwrap();
    assert!(cache.insert_for_test(region, true));
    assert!(cache.scan_cached_for_test(b"", b"", 10).is_empty());
    assert_eq!(cache.scan_cached_for_test(&[1], b"", 10).len(), 1);
}

// client-go TestRefreshCacheConcurrency (bounded: a fixed number of rounds, no sleeps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_concurrent_with_lookups() {
    let pd = FakePd::bootstrap(2);
    pd.split_keys(&[b"b", b"d", b"f"]);
    let cache = Arc::new(quiet_cache(&pd));
    let refresher = {
        let cache = cache.clone();
        tokio::spawn(async move {
            for _ in 0..300 {
                cache.refresh_all_regions().await.unwrap();
            }
        })
    };
    let reader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            for i in 0..3000u32 {
                let key = [b'a' + (i % 7) as u8];
                let loc = cache.locate_key(&key).await.unwrap();
                assert!(loc.contains(&key));
                cache.locate_region_by_id(1).await.unwrap();
            }
        })
    };
    refresher.await.unwrap();
    reader.await.unwrap();
    cache.check_consistency();
}

// client-go TestInsertStaleRegion (TestRegionCacheWithDelay suite).
#[tokio::test]
async fn a_stale_region_never_overwrites_a_newer_one() {
    let pd = FakePd::bootstrap(1);
    let cache = quiet_cache(&pd);
    let r = cache.locate_region(b"a").await.unwrap();
    let stale = cache.build_region_for_test(pd.info(1)).await.unwrap();
    let b = pd.split(1, b"b");
    pd.split(b, b"c");
    r.invalidate(InvalidReason::Other);
    assert_eq!(
        cache.locate_key(b"c").await.unwrap().start_key(),
        &Key::from("c")
    );
    assert_eq!(
        cache.locate_key(b"b").await.unwrap().start_key(),
        &Key::from("b")
    );
    let ra = cache.load_region_for_test(b"a").await.unwrap();
    assert!(cache.insert_for_test(ra, true));
    assert!(
        !cache.insert_for_test(stale, true),
        "version 1 must not replace version 2"
    );
    let scanned = cache.scan_cached_for_test(b"", b"", 100);
    assert!(scanned.len() > 1);
    assert!(!scanned[0].end_key().is_empty());
    assert_eq!(
        cache.locate_key(b"a").await.unwrap().end_key(),
        &Key::from("b")
    );
    cache.check_consistency();
}

// client-go TestStaleGetRegion: a slow, stale PD answer arriving after a newer view was cached
// is refused, and the lookup asks again.
#[tokio::test]
async fn a_late_stale_pd_answer_is_not_cached() {
    let pd = FakePd::bootstrap(1);
    let cache = quiet_cache(&pd);
    let old = pd.info(1);
    let r = cache.locate_region(b"a").await.unwrap();
    pd.split(1, b"b");
    r.invalidate(InvalidReason::Other);
    assert_eq!(
        cache.locate_key(b"b").await.unwrap().start_key(),
        &Key::from("b")
    );
    pd.queue_get_region(Some(old));
    let calls = get_region_calls(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    assert_eq!(loc.end_key(), &Key::from("b"));
    assert_eq!(
        get_region_calls(&pd),
        calls + 2,
        "the stale answer was refused"
    );
    assert_eq!(
        Calls::get(&pd.calls.leader_only),
        1,
        "the second call asks the PD leader only"
    );
    assert_eq!(
        cache.locate_key(b"b").await.unwrap().start_key(),
        &Key::from("b")
    );
    cache.check_consistency();
}

fn key_ranges(keys: &[&str]) -> Vec<(Key, Key)> {
    keys.chunks(2)
        .map(|c| (Key::from(c[0]), Key::from(c[1])))
        .collect()
}

async fn fill(cache: &RegionCache, ranges: &[(Key, Key)]) {
    for (start, end) in ranges {
        let mut start = start.clone();
        loop {
            let loc = cache.locate_key(start.as_bytes()).await.unwrap();
            if loc.contains(end.as_bytes()) || loc.end_key() == end || loc.end_key().is_empty() {
                break;
            }
            start = loc.end_key().clone();
        }
    }
}

// client-go TestBatchScanRegions.
#[tokio::test]
async fn batch_locate_key_ranges_cases() {
    let pd = FakePd::bootstrap(2);
    let mut r = vec![1];
    r.extend(pd.split_keys(&[b"a", b"b", b"c", b"d", b"e", b"f", b"g"]));
    let check = async |pd: &Arc<FakePd>, scan: &[&str], cached: &[&str], expect: &[u64]| {
        let cache = quiet_cache(pd);
        fill(&cache, &key_ranges(cached)).await;
        let got = cache
            .batch_locate_key_ranges(&key_ranges(scan), BatchLocateOptions::default())
            .await
            .unwrap();
        let ids: Vec<u64> = got.iter().map(|l| l.region_id()).collect();
        assert_eq!(ids, expect, "scan {scan:?} cached {cached:?}");
        cache.check_consistency();
    };
    check(&pd, &["A", "B", "C", "D", "E", "F"], &["", "a"], &r[..1]).await;
    check(
        &pd,
        &["A", "B", "C", "D", "E", "F", "G", "c"],
        &["", "c"],
        &r[..3],
    )
    .await;
    check(&pd, &["a", "g"], &[], &r[1..7]).await;
    check(&pd, &["a", "g"], &["a", "d"], &r[1..7]).await;
    let expect = [r[1], r[2], r[3], r[5], r[6]];
    check(&pd, &["a", "d", "e", "g"], &["a", "d"], &expect).await;
    check(&pd, &["a", "d", "e", "g"], &["a", "b", "e", "f"], &expect).await;
    // After a merge, what PD returns replaces the cached regions.
    {
        let cache = quiet_cache(&pd);
        fill(&cache, &key_ranges(&["a", "b", "e", "f"])).await;
        pd.merge(r[1], r[2]);
        let got = cache
            .batch_locate_key_ranges(
                &key_ranges(&["a", "d", "e", "g"]),
                BatchLocateOptions::default(),
            )
            .await
            .unwrap();
        let ids: Vec<u64> = got.iter().map(|l| l.region_id()).collect();
        assert_eq!(ids, [r[1], r[3], r[5], r[6]]);
    }
    // Loaded regions that do not cover a cached one leave it in the answer.
    {
        let cache = quiet_cache(&pd);
        fill(&cache, &key_ranges(&["a", "c", "e", "f"])).await;
        pd.merge(r[4], r[5]);
        let new1 = pd.split(r[4], b"d2");
        let new2 = pd.split(new1, b"e1");
        let got = cache
            .batch_locate_key_ranges(
                &key_ranges(&["a", "d3", "e", "g"]),
                BatchLocateOptions::default(),
            )
            .await
            .unwrap();
        let ids: Vec<u64> = got.iter().map(|l| l.region_id()).collect();
        assert_eq!(ids, [r[1], r[3], r[4], new1, r[5], r[6]]);
        let _ = new2;
    }
}

#[tokio::test]
async fn batch_locate_rejects_unsorted_ranges() {
    let pd = FakePd::bootstrap(1);
    let cache = quiet_cache(&pd);
    for bad in [&["c", "d", "a", "b"][..], &["a", "", "b", "c"], &["b", "a"]] {
        let err = cache
            .batch_locate_key_ranges(&key_ranges(bad), BatchLocateOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { .. }),
            "{bad:?}: {err}"
        );
    }
}

// client-go TestScanRegionsWithGaps: PD's answer misses a region (not yet reported); the scan
// is retried and the gap is filled.
#[tokio::test(start_paused = true)]
async fn a_batch_scan_with_a_gap_is_retried() {
    let pd = FakePd::bootstrap(2);
    let mut r = vec![1];
    r.extend(pd.split_keys(&[b"a", b"c", b"e"]));
    let cache = quiet_cache(&pd);
    pd.hide_from_scans(r[2], 1);
    let got = cache.load_regions_in_key_range(b"", b"").await.unwrap();
    assert_eq!(got.iter().map(|l| l.region_id()).collect::<Vec<_>>(), r);
    assert_eq!(Calls::get(&pd.calls.batch_scan), 2);
    let cache = quiet_cache(&pd);
    pd.hide_from_scans(r[2], 1);
    let got = cache
        .batch_locate_key_ranges(&key_ranges(&["", ""]), BatchLocateOptions::default())
        .await
        .unwrap();
    assert_eq!(got.iter().map(|l| l.region_id()).collect::<Vec<_>>(), r);
}

/// A gap that does not go away is reported as a retryable region error.
#[tokio::test(start_paused = true)]
async fn a_persistent_gap_is_an_error() {
    let pd = FakePd::bootstrap(2);
    let r = pd.split_keys(&[b"a", b"c"]);
    let cache = quiet_cache(&pd);
    pd.hide_from_scans(r[0], 100);
    let err = cache
        .batch_locate_key_ranges(&key_ranges(&["", ""]), BatchLocateOptions::default())
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(matches!(err, Error::Region(_)), "{err}");
    assert_eq!(
        Calls::get(&pd.calls.batch_scan),
        5,
        "first try plus four retries"
    );
}

// client-go TestBatchLoadLimitRanges.
#[tokio::test]
async fn batch_locate_sends_at_most_2048_ranges_per_call() {
    let pd = FakePd::bootstrap(1);
    pd.split_keys(&[&5u64.to_be_bytes()]); // keep the first range's region bounded
    let cache = quiet_cache(&pd);
    let ranges: Vec<(Key, Key)> = (0..100_000u64)
        .map(|i| {
            (
                Key::from((i * 2 + 10).to_be_bytes().to_vec()),
                Key::from((i * 2 + 11).to_be_bytes().to_vec()),
            )
        })
        .collect();
    let got = cache
        .batch_locate_key_ranges(&ranges, BatchLocateOptions::default())
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    let max = pd.max_scan_ranges.load(Ordering::SeqCst);
    assert!(max > 0 && max <= 2048, "{max}");
}

// client-go TestRegionCacheValidAfterLoading.
#[tokio::test]
async fn loads_keep_valid_regions_and_replace_invalid_ones() {
    let pd = FakePd::bootstrap(2);
    let keys: Vec<[u8; 1]> = (b'a'..=b'j').map(|c| [c]).collect();
    let mut regions = vec![1];
    for k in &keys {
        regions.push(pd.split(*regions.last().unwrap(), k));
    }
    let cache = quiet_cache(&pd);
    let ops: Vec<futures_lite::Op<'_>> = vec![
        Box::new(|c| Box::pin(async move { c.locate_key_range(b"a", b"e").await.map(drop) })),
        Box::new(|c| {
            Box::pin(async move {
                c.batch_locate_key_ranges(&key_ranges(&["a", "e"]), BatchLocateOptions::default())
                    .await
                    .map(drop)
            })
        }),
        Box::new(|c| Box::pin(async move { c.locate_key(b"b").await.map(drop) })),
        Box::new(|c| Box::pin(async move { c.locate_end_key(b"c").await.map(drop) })),
        Box::new(|c| {
            let ids = regions.clone();
            Box::pin(async move {
                for id in ids {
                    c.locate_region_by_id(id).await?;
                }
                Ok(())
            })
        }),
        Box::new(|c| {
            Box::pin(async move {
                c.group_keys_by_region([&b"a"[..], b"b", b"c"])
                    .await
                    .map(drop)
            })
        }),
        Box::new(|c| {
            Box::pin(async move { c.list_region_ids_in_key_range(b"a", b"e").await.map(drop) })
        }),
        Box::new(|c| {
            Box::pin(async move { c.load_regions_in_key_range(b"a", b"e").await.map(drop) })
        }),
    ];
    // A valid cached region stays valid whether the operation reads the cache or PD.
    for op in &ops {
        let loc = cache.locate_key(b"b").await.unwrap();
        let region = cache.cached_region(loc.region()).unwrap();
        op(&cache).await.unwrap();
        assert!(region.is_valid(cache.now_ms(), &cache.ttl_policy()));
    }
    // An invalidated one is replaced by a valid one, whatever loads it.
    for op in &ops {
        let loc = cache.locate_key(b"b").await.unwrap();
        let region = cache.cached_region(loc.region()).unwrap();
        region.invalidate(InvalidReason::Other);
        op(&cache).await.unwrap();
        assert!(!region.is_valid(cache.now_ms(), &cache.ttl_policy()));
        let loc = cache.try_locate_key(b"b").expect("reloaded");
        let region = cache.cached_region(loc.region()).unwrap();
        assert!(region.is_valid(cache.now_ms(), &cache.ttl_policy()));
    }
    cache.check_consistency();
}

/// Boxed futures for the table of operations above.
mod futures_lite {
    pub(super) type BoxedOp<'a> =
        std::pin::Pin<Box<dyn std::future::Future<Output = crate::Result<()>> + 'a>>;
    pub(super) type Op<'r> = Box<dyn Fn(&super::RegionCache) -> BoxedOp<'_> + 'r>;
}

// client-go TestLocateRegionByIDFromPD.
#[tokio::test]
async fn locate_by_id_from_pd_does_not_cache() {
    let pd = FakePd::bootstrap(2);
    let region2 = pd.split(1, b"b");
    let cache = quiet_cache(&pd);
    let loc = cache.locate_region_by_id_from_pd(region2).await.unwrap();
    assert_eq!(loc.region_id(), region2);
    assert!(cache.cached_region(loc.region()).is_none());
    let loc = cache.locate_region_by_id(region2).await.unwrap();
    assert!(cache.cached_region(loc.region()).is_some());
    // Cached now: by id again is a hit.
    let calls = Calls::get(&pd.calls.get_region_by_id);
    cache.locate_region_by_id(region2).await.unwrap();
    assert_eq!(Calls::get(&pd.calls.get_region_by_id), calls);
    // An unknown id is a region error naming it.
    let err = cache.locate_region_by_id(999).await.unwrap_err();
    match err {
        Error::Region(e) => assert_eq!(e.region_id, Some(999)),
        other => panic!("{other}"),
    }
}

// client-go TestBuckets.
#[tokio::test]
async fn buckets_are_cached_kept_and_updated() {
    let pd = FakePd::bootstrap(2);
    pd.set_buckets(1, 10, &[b"", b"a", b"b", b""]);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    let buckets = loc.buckets().expect("buckets").clone();
    assert_eq!(buckets.version(), 10);
    assert_eq!(buckets.keys().len(), 4);
    assert_eq!(loc.bucket_version(), 10);
    for key in [&b""[..], b"`", b"a", b"a0", b"b", b"c"] {
        assert!(loc.locate_bucket(key).unwrap().contains(key));
    }
    // A new view of the region without buckets, or with older ones, keeps the cached buckets.
    let mut info = pd.info(1);
    info.buckets = None;
    let region = cache.build_region_for_test(info.clone()).await.unwrap();
    assert!(cache.insert_for_test(region, true));
    assert_eq!(cache.locate_key(b"a").await.unwrap().bucket_version(), 10);
    info.buckets = pd.info(1).buckets.map(|mut b| {
        b.version = 9;
        b
    });
    let region = cache.build_region_for_test(info.clone()).await.unwrap();
    assert!(cache.insert_for_test(region, true));
    assert_eq!(cache.locate_key(b"a").await.unwrap().bucket_version(), 10);
    info.buckets = pd.info(1).buckets.map(|mut b| {
        b.version = 11;
        b
    });
    let region = cache.build_region_for_test(info).await.unwrap();
    assert!(cache.insert_for_test(region, true));
    assert_eq!(cache.locate_key(b"a").await.unwrap().bucket_version(), 11);
    // EpochNotMatch keeps the buckets of the region it replaces.
    let t = leader(&cache, b"a").await;
    let mut meta = pd.region(1).meta;
    meta.region_epoch.as_mut().unwrap().version += 1;
    assert!(
        !cache
            .on_region_epoch_not_match(&t.region, &t.store, &[meta])
            .await
            .unwrap()
    );
    assert_eq!(cache.locate_key(b"a").await.unwrap().bucket_version(), 11);
}

// client-go TestShouldNotRetryFlashback, bucket part: BucketVersionNotMatch replaces the
// buckets with TiKV's when they are newer.
#[tokio::test]
async fn bucket_version_not_match_takes_newer_buckets() {
    let pd = FakePd::bootstrap(1);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    assert!(loc.buckets().is_none());
    cache.on_bucket_version_not_match(loc.region(), 1, &[Bytes::from_static(b"a")]);
    let loc = cache.locate_key(b"a").await.unwrap();
    assert_eq!(loc.bucket_version(), 1);
    assert_eq!(loc.buckets().unwrap().keys(), [Key::from("a")]);
    cache.on_bucket_version_not_match(loc.region(), 0, &[]);
    assert_eq!(cache.locate_key(b"a").await.unwrap().bucket_version(), 1);
}

// client-go TestUpdateBucketsConcurrently and the UpdateBucketsIfNeeded part of TestBuckets.
#[tokio::test(start_paused = true)]
async fn bucket_updates_are_coalesced_per_region() {
    let pd = FakePd::bootstrap(1);
    let cache = quiet_cache(&pd);
    let loc = cache.locate_key(b"a").await.unwrap();
    pd.set_buckets(1, 5, &[b"", b"m", b""]);
    pd.set_delay(Duration::from_millis(500));
    cache.update_buckets_if_needed(loc.region(), 0, 5);
    cache.update_buckets_if_needed(loc.region(), 0, 5);
    // Not newer than the request's version, or not newer than the cache: nothing.
    cache.update_buckets_if_needed(loc.region(), 0, 0);
    assert_eq!(Calls::get(&pd.calls.get_region_by_id), 0);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(Calls::get(&pd.calls.get_region_by_id), 1);
    assert_eq!(cache.try_locate_key(b"a").unwrap().bucket_version(), 5);
    // The buckets are current now: no reload.
    let loc = cache.locate_key(b"a").await.unwrap();
    cache.update_buckets_if_needed(loc.region(), 0, 5);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(Calls::get(&pd.calls.get_region_by_id), 1);
    // Newer again: one more reload.
    pd.set_buckets(1, 6, &[b"", b"n", b""]);
    cache.update_buckets_if_needed(loc.region(), 5, 6);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(Calls::get(&pd.calls.get_region_by_id), 2);
    assert_eq!(cache.try_locate_key(b"a").unwrap().bucket_version(), 6);
}

// client-go TestBackgroundCacheGC: rounds walk the cache 50 regions at a time and drop those
// whose TTL passed.
#[tokio::test]
async fn gc_walks_the_cache_and_drops_expired_regions() {
    let pd = FakePd::bootstrap(2);
    let keys: Vec<Vec<u8>> = (0..100).map(|i| format!("t{i:08}").into_bytes()).collect();
    let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    pd.split_keys(&key_refs);
    let cache = quiet_cache(&pd);
    cache.load_regions_in_key_range(b"", b"").await.unwrap();
    assert_eq!(cache.valid_region_count(), 101);
    // A full walk drops nothing.
    for _ in 0..3 {
        cache.run_gc_round(50);
    }
    assert_eq!(cache.region_count(), 101);
    // Expire a third: one full walk (3 rounds of 50 over 101) drops them.
    let expire = |rem: u64| {
        let mut remaining = 0;
        for id in pd.region_ids() {
            if let Some(r) = cache
                .try_locate_key(pd.region(id).meta.start_key.as_ref())
                .and_then(|l| cache.cached_region(l.region()))
            {
                if id % 3 == rem {
                    r.set_ttl_deadline(0);
                } else {
                    remaining += 1;
                }
            }
        }
        remaining
    };
    let remaining = expire(0);
    for _ in 0..3 {
        cache.run_gc_round(50);
    }
    assert_eq!(cache.region_count(), remaining);
    let remaining = expire(1);
    for _ in 0..3 {
        cache.run_gc_round(50);
    }
    assert_eq!(cache.region_count(), remaining);
    cache.check_consistency();
}

// client-go TestNeedExpireRegionAfterTTL/WithDownPeers: a region with down peers is reloaded
// every TTL even while in use.
#[tokio::test(start_paused = true)]
async fn a_region_with_down_peers_expires_at_its_ttl_despite_use() {
    let pd = FakePd::bootstrap(2);
    pd.set_down_stores(1, vec![2]);
    let cache = quiet_cache_with(&pd, &config_ttl(Duration::from_secs(2), Duration::ZERO));
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cache.locate_key(b"a").await.unwrap();
    }
    // Loaded at 0.1s, then at 2.1s and 4.1s.
    assert_eq!(get_region_calls(&pd), 3);
    // Without down peers, use keeps it cached.
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache_with(&pd, &config_ttl(Duration::from_secs(2), Duration::ZERO));
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cache.locate_key(b"a").await.unwrap();
    }
    assert_eq!(get_region_calls(&pd), 1);
}

// client-go TestNeedExpireRegionAfterTTL/WithStaleStores: once a GC round sees a failed store,
// the region expires at its TTL even while in use.
#[tokio::test(start_paused = true)]
async fn a_region_with_a_failed_store_expires_at_its_ttl_despite_use() {
    let pd = FakePd::bootstrap(2);
    let cache = quiet_cache_with(&pd, &config_ttl(Duration::from_secs(2), Duration::ZERO));
    let region = cache.locate_region(b"a").await.unwrap();
    let store2 = region.stores()[1].clone();
    store2.bump_epoch_from(store2.epoch());
    cache.run_gc_round(50);
    assert!(region.has_flags(flags::NEED_EXPIRE_AFTER_TTL));
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cache.locate_key(b"a").await.unwrap();
    }
    assert_eq!(get_region_calls(&pd), 2);
}

/// The TTL: a region unused for `ttl + jitter` is reloaded on its next lookup; use extends it;
/// the jitter spreads the deadlines of regions loaded together over `[ttl, ttl + jitter)`.
#[tokio::test(start_paused = true)]
async fn ttl_expiry_with_jitter() {
    let ttl = Duration::from_secs(10);
    let jitter = Duration::from_secs(5);
    let pd = FakePd::bootstrap(1);
    let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("k{i:04}").into_bytes()).collect();
    let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    pd.split_keys(&key_refs);
    let cache = quiet_cache_with(&pd, &config_ttl(ttl, jitter));
    let loaded = cache.load_regions_in_key_range(b"", b"").await.unwrap();
    let now = cache.now_ms();
    let deadlines: Vec<u64> = loaded
        .iter()
        .map(|l| cache.cached_region(l.region()).unwrap().ttl_deadline() - now)
        .collect();
    assert!(
        deadlines.iter().all(|&d| (10_000..15_000).contains(&d)),
        "{deadlines:?}"
    );
    let distinct: std::collections::HashSet<_> = deadlines.iter().collect();
    assert!(
        distinct.len() > 50,
        "jitter spreads deadlines: {} distinct",
        distinct.len()
    );

    // Idle past the TTL plus the jitter: every region is reloaded on access.
    let calls = get_region_calls(&pd);
    tokio::time::sleep(ttl + jitter).await;
    cache.tick_clock();
    assert!(cache.try_locate_key(b"k0100").is_none());
    cache.locate_key(b"k0100").await.unwrap();
    assert_eq!(get_region_calls(&pd), calls + 1);

    // Used every few seconds, a region never expires.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_secs(8)).await;
        cache.locate_key(b"k0100").await.unwrap();
    }
    assert_eq!(get_region_calls(&pd), calls + 1);
    // Idle for just under the TTL: still cached; past TTL + jitter: gone.
    tokio::time::sleep(ttl - Duration::from_secs(1)).await;
    assert!(cache.try_locate_key(b"k0100").is_some());
    tokio::time::sleep(ttl + jitter).await;
    assert!(cache.try_locate_key(b"k0100").is_none());
}

/// 1000 concurrent lookups of one uncached key make exactly one PD call.
#[tokio::test(start_paused = true)]
async fn concurrent_misses_on_one_key_make_one_pd_call() {
    let pd = FakePd::bootstrap(3);
    pd.set_delay(Duration::from_millis(50));
    let cache = Arc::new(quiet_cache(&pd));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let cache = cache.clone();
        tasks.spawn(async move { cache.locate_key(b"hot").await });
    }
    let mut regions = std::collections::HashSet::new();
    while let Some(r) = tasks.join_next().await {
        regions.insert(r.unwrap().unwrap().region());
    }
    assert_eq!(regions.len(), 1);
    assert_eq!(get_region_calls(&pd), 1);
    // Each store was resolved once, too.
    assert_eq!(Calls::get(&pd.calls.get_store), 3);
    // Same by id and by end key.
    let cache = Arc::new(quiet_cache(&pd));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let cache = cache.clone();
        tasks.spawn(async move {
            if i % 2 == 0 {
                cache.locate_region_by_id(1).await
            } else {
                cache.locate_end_key(b"hot").await
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(Calls::get(&pd.calls.get_region_by_id), 1);
    assert_eq!(get_region_calls(&pd), 2);
}

/// A cancelled leader of a coalesced load does not strand the others, nor start a second PD
/// call for newcomers.
#[tokio::test(start_paused = true)]
async fn a_cancelled_lookup_hands_its_load_to_the_waiters() {
    let pd = FakePd::bootstrap(1);
    pd.set_delay(Duration::from_millis(100));
    let cache = Arc::new(quiet_cache(&pd));
    let first = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.locate_key(b"k").await })
    };
    tokio::task::yield_now().await;
    let second = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.locate_key(b"k").await })
    };
    tokio::task::yield_now().await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    second.await.unwrap().unwrap();
    // The waiter had to redo the load: at most one call on top of the cancelled one.
    assert!(get_region_calls(&pd) <= 2);
    cache.locate_key(b"k").await.unwrap();
    assert!(get_region_calls(&pd) <= 2);
}

/// Errors of the source are returned at once, not retried by the cache (client-go
/// TestNoBackoffWhenFailToDecodeRegion: the PD client owns transport retries and decoding).
#[tokio::test]
async fn source_errors_are_returned_at_once() {
    #[derive(Debug)]
    struct Failing;
    impl crate::pd::RegionSource for Failing {
        fn get_region<'a>(
            &'a self,
            _: &'a [u8],
            _: bool,
        ) -> crate::pd::BoxFuture<'a, crate::Result<Option<RegionInfo>>> {
            Box::pin(async { Err(Error::codec("bad key")) })
        }
        fn get_prev_region<'a>(
            &'a self,
            _: &'a [u8],
            _: bool,
        ) -> crate::pd::BoxFuture<'a, crate::Result<Option<RegionInfo>>> {
            Box::pin(async { Err(Error::codec("bad key")) })
        }
        fn get_region_by_id(
            &self,
            _: u64,
            _: bool,
        ) -> crate::pd::BoxFuture<'_, crate::Result<Option<RegionInfo>>> {
            Box::pin(async { Err(Error::codec("bad key")) })
        }
        fn batch_scan_regions<'a>(
            &'a self,
            _: &'a [(Bytes, Bytes)],
            _: usize,
            _: bool,
        ) -> crate::pd::BoxFuture<'a, crate::Result<Vec<RegionInfo>>> {
            Box::pin(async { Err(Error::codec("bad key")) })
        }
        fn get_store(
            &self,
            _: u64,
        ) -> crate::pd::BoxFuture<'_, crate::Result<Option<metapb::Store>>> {
            Box::pin(async { Ok(None) })
        }
        fn get_all_stores(
            &self,
            _: bool,
        ) -> crate::pd::BoxFuture<'_, crate::Result<Vec<metapb::Store>>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }
    let cache = RegionCache::new_quiet(Arc::new(Failing), &crate::Config::default());
    assert!(matches!(
        cache.locate_key(b"k").await,
        Err(Error::Codec { .. })
    ));
    assert!(matches!(
        cache.locate_region_by_id(2).await,
        Err(Error::Codec { .. })
    ));
    assert!(matches!(
        cache.load_regions_in_key_range(b"", b"").await,
        Err(Error::Codec { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_key_pd_has_no_region_for_is_a_retryable_error() {
    let pd = FakePd::bootstrap(1);
    let cache = quiet_cache(&pd);
    for _ in 0..5 {
        pd.queue_get_region(None);
    }
    let err = cache.locate_key(b"k").await.unwrap_err();
    assert!(err.is_retryable());
    assert_eq!(get_region_calls(&pd), 5);
    assert_eq!(
        Calls::get(&pd.calls.leader_only),
        4,
        "retries ask the leader"
    );
    // PD catching up within the retries is fine.
    for _ in 0..2 {
        pd.queue_get_region(None);
    }
    assert_eq!(cache.locate_key(b"k").await.unwrap().region_id(), 1);
}

#[tokio::test]
async fn locate_end_key_cases() {
    let pd = FakePd::bootstrap(1);
    let r = pd.split_keys(&[b"b", b"d"]);
    let cache = quiet_cache(&pd);
    // The region a range ending at "b" ends in is the one before "b".
    assert_eq!(cache.locate_end_key(b"b").await.unwrap().region_id(), 1);
    assert_eq!(Calls::get(&pd.calls.get_prev_region), 1);
    // Like client-go, the second call of one load (here the previous-region search) goes to
    // the PD leader.
    assert_eq!(Calls::get(&pd.calls.leader_only), 1);
    assert_eq!(cache.locate_end_key(b"c").await.unwrap().region_id(), r[0]);
    // +inf: the last region, found even on an empty cache.
    let cache = quiet_cache(&pd);
    assert_eq!(cache.locate_end_key(b"").await.unwrap().region_id(), r[1]);
    let calls = Calls::get(&pd.calls.get_region) + Calls::get(&pd.calls.batch_scan);
    assert_eq!(cache.locate_end_key(b"").await.unwrap().region_id(), r[1]);
    assert_eq!(
        Calls::get(&pd.calls.get_region) + Calls::get(&pd.calls.batch_scan),
        calls,
        "cached"
    );
    // From the cache: "b" ends in region 1 once region 1 is cached.
    cache.locate_key(b"a").await.unwrap();
    let before = Calls::get(&pd.calls.get_prev_region);
    assert_eq!(cache.locate_end_key(b"b").await.unwrap().region_id(), 1);
    assert_eq!(Calls::get(&pd.calls.get_prev_region), before);
}

/// When the probe key lands before the last region, the cache scans forward to it.
#[tokio::test]
async fn locate_end_key_of_infinity_scans_past_the_probe() {
    let pd = FakePd::bootstrap(1);
    let mut high = vec![0xFF; 40];
    let r = pd.split(1, &high);
    high.push(1);
    let last = pd.split(r, &high);
    let cache = quiet_cache(&pd);
    assert_eq!(cache.locate_end_key(b"").await.unwrap().region_id(), last);
}

#[tokio::test]
async fn group_keys_by_region_keeps_first_key_group_first() {
    let pd = FakePd::bootstrap(1);
    let r = pd.split_keys(&[b"c", b"f"]);
    let cache = quiet_cache(&pd);
    // Unsorted input: groups in order of first appearance, keys in input order.
    let keys = [&b"g"[..], b"a", b"h", b"d", b"b", b"e", b"z"];
    let groups = cache.group_keys_by_region(keys).await.unwrap();
    let got: Vec<(u64, Vec<&[u8]>)> = groups
        .iter()
        .map(|(l, ks)| (l.region_id(), ks.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (r[1], vec![&b"g"[..], b"h", b"z"]),
            (1, vec![&b"a"[..], b"b"]),
            (r[0], vec![&b"d"[..], b"e"]),
        ]
    );
    // Sorted input: one lookup per region.
    let calls = get_region_calls(&pd);
    let sorted: Vec<Key> = ["a", "b", "c", "d", "g", "h"]
        .iter()
        .map(|s| Key::from(*s))
        .collect();
    let groups = cache.group_keys_by_region(sorted).await.unwrap();
    assert_eq!(groups.len(), 3);
    assert_eq!(groups[0].1, [Key::from("a"), Key::from("b")]);
    assert_eq!(get_region_calls(&pd), calls);
    // Empty input.
    assert!(
        cache
            .group_keys_by_region(Vec::<Key>::new())
            .await
            .unwrap()
            .is_empty()
    );
}

/// After close, hits still answer; misses fail with `Closed`.
#[tokio::test]
async fn a_closed_cache_answers_hits_only() {
    let pd = FakePd::bootstrap(1);
    let cache = quiet_cache(&pd);
    cache.locate_key(b"a").await.unwrap();
    cache.close();
    assert!(cache.is_closed());
    cache.locate_key(b"a").await.unwrap();
    cache.invalidate_region(RegionVerId::new(1, 1, 1), InvalidReason::Other);
    assert!(matches!(cache.locate_key(b"a").await, Err(Error::Closed)));
}

/// What the request sender reads from a cached region.
#[tokio::test]
async fn a_region_exposes_what_the_sender_needs() {
    let pd = FakePd::bootstrap(3);
    pd.set_store_labels(3, &[("engine", "tiflash")]);
    assert_eq!(pd.store(3).unwrap().labels[0].value, "tiflash");
    let cache = quiet_cache(&pd);
    let region = cache.locate_region(b"a").await.unwrap();
    assert_eq!(
        region.ver_id().epoch(),
        metapb::RegionEpoch {
            conf_ver: 1,
            version: 1
        }
    );
    assert_eq!(region.leader_peer().unwrap().id, 101);
    assert_eq!(region.leader_store().unwrap().id(), 1);
    assert!(region.pending_peers().is_empty());
    assert_eq!(region.tiflash_peer_indexes(), [2]);
    region.switch_to_next_tiflash_peer(0);
    assert_eq!(region.tiflash_access_idx(), 0, "one TiFlash peer: stays");
    assert_eq!(region.tikv_peer_indexes(), [0, 1]);
}
