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

use super::health::LivenessState;
use super::region::{CachedRegion, RegionParts, RegionPeer, RegionVerId};
use super::region_cache::RegionCache;
use super::store::{Store, StoreCache};
use crate::Config;
use crate::pd::RegionSource;
use crate::request::selector::{AttemptContext, ReplicaSelector};
use crate::request::sender::CallOptions;
use crate::rpc::Access;
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

/// One leader read of a region as the sender makes it: the production replica selector picks
/// each attempt and learns from each answer. The ported client-go cache tests drive it where
/// client-go's drive `GetTiKVRPCContext`, `UpdateLeader` and `OnSendFail`.
struct Request {
    selector: ReplicaSelector,
    opts: CallOptions,
}

/// Where one attempt of a [`Request`] goes.
struct Target {
    region: Arc<CachedRegion>,
    peer: metapb::Peer,
    addr: Arc<str>,
    store: Arc<Store>,
    attempt: AttemptContext,
}

impl Request {
    /// `None` when the cache holds no valid region at that version (the sender relocates).
    fn new(cache: &RegionCache, region: RegionVerId) -> Option<Request> {
        let opts = CallOptions::new(Duration::from_secs(1));
        let selector = ReplicaSelector::new(cache, region, false, &opts, Access::Read)?;
        Some(Request { selector, opts })
    }

    /// The next attempt; `None` when no replica is left (the region was invalidated where
    /// that is the reaction).
    async fn next(&mut self, cache: &RegionCache) -> Option<Target> {
        let attempt = self.selector.next(cache, &self.opts).await.unwrap()?;
        Some(Target {
            region: self.selector.region().clone(),
            peer: attempt.peer,
            addr: attempt.addr.clone(),
            store: self.selector.store(attempt.target).clone(),
            attempt,
        })
    }

    /// TiKV answered NotLeader, naming the leader's store or no leader.
    fn not_leader(&mut self, t: &Target, leader_store: Option<u64>) {
        let leader = leader_store.map(|store_id| {
            t.region
                .peers()
                .iter()
                .find(|p| p.store_id == store_id)
                .copied()
                .unwrap_or(metapb::Peer {
                    id: 9_999,
                    store_id,
                    ..Default::default()
                })
        });
        self.selector.on_not_leader(leader.as_ref());
    }

    /// The send to `t` failed and a probe found the store `liveness`.
    fn send_failed(&mut self, cache: &RegionCache, t: &Target, liveness: LivenessState) {
        self.selector
            .on_send_failure(cache.store_cache(), &t.attempt, liveness);
    }

    /// `t` answered.
    fn answered(&mut self, t: &Target) {
        self.selector.on_send_success(&t.attempt);
    }
}

/// The first attempt of a new leader read of `region`: the presumed leader, unless something
/// is wrong with it.
async fn first_target(cache: &RegionCache, region: RegionVerId) -> Option<Target> {
    Request::new(cache, region)?.next(cache).await
}
/// One request to `region` whose first attempt is answered NotLeader naming `leader_store`.
async fn report_leader(cache: &RegionCache, region: RegionVerId, leader_store: Option<u64>) {
    let mut req = Request::new(cache, region).expect("a valid region");
    let t = req.next(cache).await.expect("a target");
    req.not_leader(&t, leader_store);
}
