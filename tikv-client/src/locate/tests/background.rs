//! Background tasks: preload, periodic region refresh, idle-region GC, store refresh, shutdown.
//!
//! Time is paused: the tasks' intervals fire as the test sleeps, without real waiting.

use std::sync::Arc;
use std::time::Duration;

use super::fake::{Calls, FakePd};
use crate::Config;
use crate::locate::region_cache::RegionCache;
use crate::pd::RegionSource;

fn cache(pd: &Arc<FakePd>, config: &Config) -> RegionCache {
    RegionCache::new(pd.clone() as Arc<dyn RegionSource>, config)
}

/// Lets the background tasks run until `done` holds (bounded).
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

#[tokio::test(start_paused = true)]
async fn preload_loads_every_region() {
    let pd = FakePd::bootstrap(2);
    pd.split_keys(&[b"b", b"d", b"f"]);
    let config = Config::default().with_preload(true);
    let cache = cache(&pd, &config);
    until(|| cache.region_count() == 4).await;
    for key in [&b"a"[..], b"c", b"e", b"g"] {
        assert!(cache.try_locate_key(key).is_some());
    }
    assert_eq!(Calls::get(&pd.calls.get_region), 0);
    cache.check_consistency();
}

// client-go RegionsRefreshInterval: the whole cache is replaced by PD's view periodically.
#[tokio::test(start_paused = true)]
async fn periodic_refresh_picks_up_splits() {
    let pd = FakePd::bootstrap(2);
    let mut config = Config::default().with_preload(true);
    config.regions_refresh_interval = Duration::from_secs(5);
    let cache = cache(&pd, &config);
    until(|| cache.region_count() == 1).await;
    pd.split_keys(&[b"m"]);
    tokio::time::sleep(Duration::from_secs(7)).await;
    until(|| cache.region_count() == 2).await;
    assert!(cache.try_locate_key(b"x").unwrap().start_key().as_bytes() == b"m");
    assert_eq!(Calls::get(&pd.calls.get_region), 0);
}

// client-go TestBackgroundCacheGC, driven by the background task.
#[tokio::test(start_paused = true)]
async fn idle_regions_are_collected_in_the_background() {
    let pd = FakePd::bootstrap(1);
    let keys: Vec<Vec<u8>> = (0..120).map(|i| format!("k{i:04}").into_bytes()).collect();
    let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    pd.split_keys(&key_refs);
    let mut config = Config::default();
    config.tikv_client.region_cache_ttl = Duration::from_secs(10);
    config.tikv_client.region_cache_ttl_jitter = Duration::ZERO;
    let cache = cache(&pd, &config);
    cache.load_regions_in_key_range(b"", b"").await.unwrap();
    assert_eq!(cache.region_count(), 121);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(cache.region_count(), 121, "not idle long enough");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        cache.region_count(),
        0,
        "every region idle past its TTL is gone"
    );
    cache.check_consistency();
}

/// The store task refreshes every `stores_refresh_interval`, and checks a store marked failed
/// at once.
#[tokio::test(start_paused = true)]
async fn stores_are_refreshed_periodically_and_on_failure() {
    let pd = FakePd::bootstrap(2);
    let config = Config {
        stores_refresh_interval: Duration::from_secs(30),
        ..Config::default()
    };
    let cache = cache(&pd, &config);
    cache.locate_key(b"a").await.unwrap();
    pd.set_store_address(2, "moved:1");
    tokio::time::sleep(Duration::from_secs(31)).await;
    until(|| cache.stores()[1].address == "moved:1").await;
    assert!(Calls::get(&pd.calls.get_all_stores) >= 1);
    // A failed store is checked without waiting for the interval.
    pd.set_store_address(1, "moved:2");
    let store1 = cache.store_cache().get(1).unwrap();
    cache.store_cache().mark_need_check(&store1);
    until(|| cache.stores()[0].address == "moved:2").await;
}

#[tokio::test(start_paused = true)]
async fn background_tasks_end_on_close_and_on_drop() {
    let pd = FakePd::bootstrap(1);
    let cache = cache(&pd, &Config::default());
    cache.locate_key(b"a").await.unwrap();
    cache.close();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        Calls::get(&pd.calls.get_all_stores),
        0,
        "no refresh after close"
    );
    // Dropping an open cache stops its tasks too: nothing keeps the source alive.
    let pd = FakePd::bootstrap(1);
    let cache = self::cache(&pd, &Config::default());
    cache.locate_key(b"a").await.unwrap();
    drop(cache);
    tokio::task::yield_now().await;
    until(|| Arc::strong_count(&pd) == 1).await;
}
