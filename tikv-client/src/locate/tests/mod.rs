//! Tests of the region and store caches.
//!
//! Most run against [`fake::FakePd`], an in-memory `RegionSource` that counts calls; `grpc.rs`
//! runs the same kind of checks through the real PD client against `tikv-mock`. Each test names
//! the client-go `internal/locate/region_cache_test.go` case it ports, if any.

mod background;
mod cache;
mod fake;
mod grpc;
mod index;
mod pure;
mod stores;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::metapb;

use super::region::{CachedRegion, RegionParts, RegionPeer, RegionVerId};
use super::region_cache::RegionCache;
use super::store::StoreCache;
use crate::Config;
use crate::pd::RegionSource;
use fake::FakePd;

/// A config with the given TTL and jitter.
fn config_ttl(ttl: Duration, jitter: Duration) -> Config {
    let mut config = Config::default();
    config.tikv_client.region_cache_ttl = ttl;
    config.tikv_client.region_cache_ttl_jitter = jitter;
    config
}

/// A cache over `pd` without background tasks (tests drive GC and refreshes themselves).
fn quiet_cache(pd: &Arc<FakePd>) -> RegionCache {
    quiet_cache_with(pd, &Config::default())
}

fn quiet_cache_with(pd: &Arc<FakePd>, config: &Config) -> RegionCache {
    RegionCache::new_quiet(pd.clone() as Arc<dyn RegionSource>, config)
}

/// A region for index tests: peers on store 1 of a throwaway store cache.
fn bare_region(id: u64, start: &[u8], end: &[u8], version: u64) -> Arc<CachedRegion> {
    let stores = StoreCache::new(FakePd::bootstrap(1) as Arc<dyn RegionSource>);
    let store = stores.put_resolved(&metapb::Store {
        id: 1,
        address: "store1".to_owned(),
        ..Default::default()
    });
    Arc::new(CachedRegion::new(
        RegionParts {
            ver_id: RegionVerId::new(id, 1, version),
            start_key: Bytes::copy_from_slice(start),
            end_key: Bytes::copy_from_slice(end),
            leader: Some(0),
            buckets: None,
            down_peers: Vec::new(),
            pending_peers: Vec::new(),
        },
        vec![RegionPeer {
            peer: metapb::Peer {
                id: id + 10_000,
                store_id: 1,
                ..Default::default()
            },
            store,
        }],
        u64::MAX,
    ))
}
