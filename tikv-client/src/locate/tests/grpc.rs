//! The cache through the real PD client, against `tikv-mock` over gRPC.

use std::sync::Arc;

use super::{first_target, report_leader};
use crate::Config;
use crate::Key;
use crate::locate::region::InvalidReason;
use crate::locate::region_cache::{BatchLocateOptions, RegionCache};
use crate::pd::{PdClient, RegionSource};
use tikv_mock::MockCluster;

async fn start(split_keys: &[&str]) -> (MockCluster, Arc<PdClient>, Config) {
    let mock = MockCluster::builder()
        .stores(3)
        .split_keys(split_keys.iter().map(|k| k.as_bytes()))
        .start()
        .await
        .unwrap();
    let config = Config::default();
    let pd = PdClient::connect(mock.pd_endpoints(), &config)
        .await
        .unwrap();
    (mock, Arc::new(pd), config)
}

fn cache(pd: &Arc<PdClient>, config: &Config) -> RegionCache {
    RegionCache::new(pd.clone() as Arc<dyn RegionSource>, config)
}

#[tokio::test]
async fn locate_split_and_leader_change_over_grpc() {
    let (mock, pd, config) = start(&["b", "d"]).await;
    let cache = cache(&pd, &config);
    let regions = mock.regions();
    assert_eq!(regions.len(), 3);
    for (key, expect) in [("a", 0), ("b", 1), ("c", 1), ("z", 2)] {
        let loc = cache.locate_key(key.as_bytes()).await.unwrap();
        assert_eq!(loc.region_id(), regions[expect].id, "{key}");
        assert_eq!(
            loc.start_key().as_bytes(),
            regions[expect].start_key.as_ref()
        );
    }
    assert_eq!(
        cache.locate_end_key(b"d").await.unwrap().region_id(),
        regions[1].id
    );
    assert_eq!(
        cache.locate_end_key(b"").await.unwrap().region_id(),
        regions[2].id
    );
    assert_eq!(
        cache
            .locate_region_by_id(regions[1].id)
            .await
            .unwrap()
            .region_id(),
        regions[1].id
    );
    // The leader and its address are PD's.
    let loc = cache.locate_key(b"c").await.unwrap();
    let t = first_target(&cache, loc.region()).await.unwrap();
    let (_, mock_leader) = mock.region_for_raw_key(b"c").unwrap();
    let mock_leader = mock_leader.unwrap();
    assert_eq!(t.peer.store_id, mock_leader.store_id);
    assert_eq!(
        Some(t.addr.to_string()),
        mock.store_address(mock_leader.store_id)
    );
    // A leader transfer reported by TiKV.
    let other = mock
        .store_ids()
        .into_iter()
        .find(|&s| s != mock_leader.store_id)
        .unwrap();
    mock.transfer_leader(loc.region_id(), other).unwrap();
    report_leader(&cache, loc.region(), Some(other)).await;
    let t = first_target(&cache, loc.region()).await.unwrap();
    assert_eq!(Some(t.addr.to_string()), mock.store_address(other));
    // A split: the stale view is invalidated (as on EpochNotMatch) and reloaded.
    mock.split_raw(["c"]).unwrap();
    cache.invalidate_region(loc.region(), InvalidReason::EpochNotMatch);
    let left = cache.locate_key(b"b").await.unwrap();
    let right = cache.locate_key(b"c").await.unwrap();
    assert_ne!(left.region_id(), right.region_id());
    assert_eq!(right.start_key(), &Key::from("c"));
    assert_eq!(left.end_key(), &Key::from("c"));
    cache.check_consistency();
    pd.close();
}

#[tokio::test]
async fn batch_locate_group_and_stores_over_grpc() {
    let (mock, pd, config) = start(&["b", "d", "f", "h"]).await;
    let cache = cache(&pd, &config);
    let ranges = [
        (Key::from("a"), Key::from("c")),
        (Key::from("e"), Key::from("g")),
        (Key::from("i"), Key::EMPTY),
    ];
    let locs = cache
        .batch_locate_key_ranges(&ranges, BatchLocateOptions::default().with_leader())
        .await
        .unwrap();
    let regions = mock.regions();
    let ids: Vec<u64> = locs.iter().map(|l| l.region_id()).collect();
    assert_eq!(
        ids,
        [
            regions[0].id,
            regions[1].id,
            regions[2].id,
            regions[3].id,
            regions[4].id
        ]
    );
    let groups = cache
        .group_keys_by_region([&b"a"[..], b"e", b"b", b"z"])
        .await
        .unwrap();
    assert_eq!(groups.len(), 4);
    assert_eq!(groups[0].0.region_id(), regions[0].id);
    let all = cache.load_regions_in_key_range(b"", b"").await.unwrap();
    assert_eq!(all.len(), regions.len());
    // Every store the regions use was resolved to the mock's address.
    for store in cache.stores() {
        assert_eq!(Some(store.address), mock.store_address(store.id));
    }
    cache.store_cache().refresh_all().await.unwrap();
    assert_eq!(cache.stores().len(), 3);
    pd.close();
}

#[tokio::test]
async fn preload_over_grpc() {
    let (mock, pd, _) = start(&["b", "d", "f"]).await;
    let config = Config::default().with_preload(true);
    let cache = cache(&pd, &config);
    for _ in 0..100_000 {
        if cache.region_count() == 4 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(cache.region_count(), mock.regions().len());
    cache.check_consistency();
    pd.close();
}

/// The public constructor: a cache over a `PdClient`, answering from PD on a miss and from
/// memory after (checked with PD stopped).
#[tokio::test]
async fn from_pd_locates_through_pd_then_from_cache() {
    let (mock, pd, config) = start(&["m"]).await;
    let cache = RegionCache::from_pd(&pd, &config);
    let regions = mock.regions();
    let loc = cache.locate_key(b"x").await.unwrap();
    assert_eq!(loc.region_id(), regions[1].id);
    assert_eq!(loc.start_key(), &Key::from("m"));
    assert!(loc.end_key().is_empty());
    let first = cache.locate_key(b"a").await.unwrap();
    assert_eq!(first.region_id(), regions[0].id);
    assert_eq!(first.end_key(), &Key::from("m"));
    assert_eq!(cache.region_count(), 2);
    // Hits answer from memory, with the same locations.
    mock.stop_pd().await;
    assert_eq!(cache.try_locate_key(b"y"), Some(loc.clone()));
    assert_eq!(cache.locate_key(b"m").await.unwrap(), loc);
    assert_eq!(cache.locate_key(b"").await.unwrap(), first);
    cache.close();
    assert!(cache.is_closed());
    pd.close();
}

/// client-go TestMerge against tikv-mock: once the source region is merged away, its key is
/// located in the merged region, whose newer epoch evicts the cached view of the target too.
#[tokio::test]
async fn merge_over_grpc() {
    let (mock, pd, config) = start(&["m"]).await;
    let cache = cache(&pd, &config);
    let left = cache.locate_key(b"a").await.unwrap();
    let right = cache.locate_key(b"x").await.unwrap();
    assert_ne!(left.region_id(), right.region_id());
    let merged = mock.merge(left.region_id(), right.region_id()).unwrap();
    // What a request to the merged-away region makes the sender do.
    cache.invalidate_region(left.region(), InvalidReason::EpochNotMatch);
    let a = cache.locate_key(b"a").await.unwrap();
    assert_eq!(a.region_id(), merged.id);
    assert!(a.contains(b"x"), "the merged region holds both halves");
    let x = cache.try_locate_key(b"x").expect("cached");
    assert_eq!(x.region(), a.region(), "the stale target half is gone");
    assert_eq!(cache.region_count(), 1);
    cache.check_consistency();
    pd.close();
}
