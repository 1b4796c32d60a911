//! An in-memory PD for cache tests: regions with epochs, stores, and knobs for what client-go's
//! mock cluster does (split, merge, leader change, down peers, tombstones, address changes,
//! buckets), plus faults (delays, gaps in batch scans, stale answers). Counts every call.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::metapb;

use crate::Result;
use crate::pd::{BoxFuture, RegionInfo, RegionSource};

#[derive(Debug, Clone)]
pub(crate) struct FakeRegion {
    pub(crate) meta: metapb::Region,
    pub(crate) leader_store: Option<u64>,
    pub(crate) down_stores: Vec<u64>,
    pub(crate) buckets: Option<metapb::Buckets>,
}

impl FakeRegion {
    fn info(&self, need_buckets: bool) -> RegionInfo {
        let leader = self
            .leader_store
            .and_then(|s| self.meta.peers.iter().find(|p| p.store_id == s).cloned());
        RegionInfo {
            region: self.meta.clone(),
            leader,
            down_peers: self
                .meta
                .peers
                .iter()
                .filter(|p| self.down_stores.contains(&p.store_id))
                .cloned()
                .collect(),
            pending_peers: Vec::new(),
            buckets: if need_buckets {
                self.buckets.clone()
            } else {
                None
            },
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.meta.start_key.as_ref() <= key
            && (self.meta.end_key.is_empty() || key < self.meta.end_key.as_ref())
    }
}

#[derive(Debug, Default)]
struct State {
    /// By start key.
    regions: BTreeMap<Vec<u8>, FakeRegion>,
    /// `None`: PD no longer knows the store.
    stores: BTreeMap<u64, metapb::Store>,
    next_id: u64,
    /// Regions left out of the next batch scans: id -> how many more scans.
    hidden: HashMap<u64, usize>,
    /// Regions answered without a leader by the next batch scans: id -> how many more.
    leaderless_scans: HashMap<u64, usize>,
    /// Answers queued for the next `get_region` calls, before the real state.
    queued_get_region: Vec<Option<RegionInfo>>,
}

/// Call counters, one per RPC.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    pub(crate) get_region: AtomicUsize,
    pub(crate) get_prev_region: AtomicUsize,
    pub(crate) get_region_by_id: AtomicUsize,
    pub(crate) batch_scan: AtomicUsize,
    pub(crate) get_store: AtomicUsize,
    pub(crate) get_all_stores: AtomicUsize,
    /// Of the region lookups above, those only the PD leader may answer.
    pub(crate) leader_only: AtomicUsize,
}

impl Calls {
    pub(crate) fn get(c: &AtomicUsize) -> usize {
        c.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Default)]
pub(crate) struct FakePd {
    state: Mutex<State>,
    pub(crate) calls: Calls,
    /// Delay of every region query (use with paused time).
    delay: Mutex<Duration>,
    /// Largest number of ranges seen in one batch scan.
    pub(crate) max_scan_ranges: AtomicUsize,
}

pub(crate) const STORE_ADDR_PREFIX: &str = "store";

pub(crate) fn store_addr(id: u64) -> String {
    format!("{STORE_ADDR_PREFIX}{id}")
}

impl FakePd {
    /// `n` stores (ids 1..=n) and one region (id 1) over the whole key space with a peer on each
    /// store, led by store 1.
    pub(crate) fn bootstrap(n: u64) -> Arc<FakePd> {
        let pd = FakePd::default();
        {
            let mut s = pd.state.lock().unwrap();
            s.next_id = 1000;
            for id in 1..=n {
                s.stores.insert(
                    id,
                    metapb::Store {
                        id,
                        address: store_addr(id),
                        ..Default::default()
                    },
                );
            }
            let peers = (1..=n)
                .map(|store_id| metapb::Peer {
                    id: 100 + store_id,
                    store_id,
                    ..Default::default()
                })
                .collect();
            let meta = metapb::Region {
                id: 1,
                start_key: Bytes::new(),
                end_key: Bytes::new(),
                region_epoch: Some(metapb::RegionEpoch {
                    conf_ver: 1,
                    version: 1,
                }),
                peers,
                ..Default::default()
            };
            s.regions.insert(
                Vec::new(),
                FakeRegion {
                    meta,
                    leader_store: Some(1),
                    down_stores: Vec::new(),
                    buckets: None,
                },
            );
        }
        Arc::new(pd)
    }

    pub(crate) fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    async fn pause(&self) {
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn find_id(s: &State, id: u64) -> Option<Vec<u8>> {
        s.regions
            .iter()
            .find(|(_, r)| r.meta.id == id)
            .map(|(k, _)| k.clone())
    }

    pub(crate) fn region(&self, id: u64) -> FakeRegion {
        self.with(|s| {
            let k = Self::find_id(s, id).expect("region exists");
            s.regions[&k].clone()
        })
    }

    pub(crate) fn region_id_for_key(&self, key: &[u8]) -> u64 {
        self.with(|s| {
            s.regions
                .values()
                .find(|r| r.contains(key))
                .expect("covered")
                .meta
                .id
        })
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut FakeRegion)) {
        self.with(|s| {
            let k = Self::find_id(s, id).expect("region exists");
            f(s.regions.get_mut(&k).unwrap());
        })
    }

    pub(crate) fn alloc_id(&self) -> u64 {
        self.with(|s| {
            s.next_id += 1;
            s.next_id
        })
    }

    /// Splits region `id` at `key`: `id` keeps `[start, key)`, a new region (returned) takes
    /// `[key, end)` with peers on the same stores; both get the bumped version (mocktikv `Split`).
    pub(crate) fn split(&self, id: u64, key: &[u8]) -> u64 {
        self.with(|s| {
            let k = Self::find_id(s, id).expect("region exists");
            let mut left = s.regions.remove(&k).unwrap();
            assert!(left.contains(key) && left.meta.start_key.as_ref() != key);
            s.next_id += 1;
            let new_id = s.next_id;
            let epoch = left.meta.region_epoch.as_mut().unwrap();
            epoch.version += 1;
            let mut right = left.clone();
            right.meta.id = new_id;
            right.meta.start_key = Bytes::copy_from_slice(key);
            for p in &mut right.meta.peers {
                s.next_id += 1;
                p.id = s.next_id;
            }
            right.buckets = None;
            left.meta.end_key = Bytes::copy_from_slice(key);
            left.buckets = None;
            s.regions.insert(k, left);
            s.regions.insert(key.to_vec(), right);
            new_id
        })
    }

    /// Splits the region holding each key, in order; returns the new ids.
    pub(crate) fn split_keys(&self, keys: &[&[u8]]) -> Vec<u64> {
        keys.iter()
            .map(|k| self.split(self.region_id_for_key(k), k))
            .collect()
    }

    /// Merges `source` into the adjacent `target` (mocktikv `Merge`): `target` takes both ranges
    /// and a version above both.
    pub(crate) fn merge(&self, target: u64, source: u64) {
        self.with(|s| {
            let tk = Self::find_id(s, target).unwrap();
            let sk = Self::find_id(s, source).unwrap();
            let src = s.regions.remove(&sk).unwrap();
            let mut tgt = s.regions.remove(&tk).unwrap();
            let sv = src.meta.region_epoch.unwrap().version;
            let te = tgt.meta.region_epoch.as_mut().unwrap();
            te.version = te.version.max(sv) + 1;
            if src.meta.start_key < tgt.meta.start_key {
                tgt.meta.start_key = src.meta.start_key.clone();
            } else {
                tgt.meta.end_key = src.meta.end_key.clone();
            }
            tgt.buckets = None;
            s.regions.insert(tgt.meta.start_key.to_vec(), tgt);
        })
    }

    pub(crate) fn change_leader(&self, id: u64, store_id: Option<u64>) {
        self.update(id, |r| r.leader_store = store_id);
    }

    /// Adds a peer on `store_id` (conf_ver + 1); returns the peer id.
    pub(crate) fn add_peer(&self, id: u64, store_id: u64) -> u64 {
        let peer_id = self.alloc_id();
        self.update(id, |r| {
            r.meta.peers.push(metapb::Peer {
                id: peer_id,
                store_id,
                ..Default::default()
            });
            r.meta.region_epoch.as_mut().unwrap().conf_ver += 1;
        });
        peer_id
    }

    pub(crate) fn set_witness(&self, id: u64, store_id: u64) {
        self.update(id, |r| {
            for p in &mut r.meta.peers {
                if p.store_id == store_id {
                    p.is_witness = true;
                }
            }
        });
    }

    pub(crate) fn set_down_stores(&self, id: u64, stores: Vec<u64>) {
        self.update(id, |r| r.down_stores = stores);
    }

    pub(crate) fn set_buckets(&self, id: u64, version: u64, keys: &[&[u8]]) {
        self.update(id, |r| {
            r.buckets = Some(metapb::Buckets {
                region_id: id,
                version,
                keys: keys.iter().map(|k| Bytes::copy_from_slice(k)).collect(),
                ..Default::default()
            })
        });
    }

    pub(crate) fn add_store(&self, id: u64, address: &str, labels: &[(&str, &str)]) {
        self.with(|s| {
            s.stores.insert(
                id,
                metapb::Store {
                    id,
                    address: address.to_owned(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| metapb::StoreLabel {
                            key: (*k).to_owned(),
                            value: (*v).to_owned(),
                        })
                        .collect(),
                    ..Default::default()
                },
            );
        })
    }

    pub(crate) fn store(&self, id: u64) -> Option<metapb::Store> {
        self.with(|s| s.stores.get(&id).cloned())
    }

    pub(crate) fn set_store_address(&self, id: u64, address: &str) {
        self.with(|s| s.stores.get_mut(&id).unwrap().address = address.to_owned());
    }

    pub(crate) fn set_store_labels(&self, id: u64, labels: &[(&str, &str)]) {
        self.with(|s| {
            s.stores.get_mut(&id).unwrap().labels = labels
                .iter()
                .map(|(k, v)| metapb::StoreLabel {
                    key: (*k).to_owned(),
                    value: (*v).to_owned(),
                })
                .collect()
        });
    }

    pub(crate) fn tombstone_store(&self, id: u64) {
        self.with(|s| s.stores.get_mut(&id).unwrap().state = metapb::StoreState::Tombstone as i32);
    }

    pub(crate) fn revive_store(&self, id: u64) {
        self.with(|s| s.stores.get_mut(&id).unwrap().state = metapb::StoreState::Up as i32);
    }

    /// PD forgets the store; returns it so that a test can add it back.
    pub(crate) fn remove_store(&self, id: u64) -> metapb::Store {
        self.with(|s| s.stores.remove(&id).unwrap())
    }

    pub(crate) fn put_store(&self, store: metapb::Store) {
        self.with(|s| {
            s.stores.insert(store.id, store);
        })
    }

    /// Leaves region `id` out of the next `times` batch scans.
    pub(crate) fn hide_from_scans(&self, id: u64, times: usize) {
        self.with(|s| {
            s.hidden.insert(id, times);
        })
    }

    /// Reports region `id` without a leader in the next `times` batch scans.
    pub(crate) fn leaderless_in_scans(&self, id: u64, times: usize) {
        self.with(|s| {
            s.leaderless_scans.insert(id, times);
        })
    }

    /// Makes the next `get_region` answer this (e.g. a stale view), whatever the key.
    pub(crate) fn queue_get_region(&self, answer: Option<RegionInfo>) {
        self.with(|s| s.queued_get_region.push(answer));
    }

    pub(crate) fn info(&self, id: u64) -> RegionInfo {
        self.region(id).info(true)
    }

    pub(crate) fn region_ids(&self) -> Vec<u64> {
        self.with(|s| s.regions.values().map(|r| r.meta.id).collect())
    }
}

impl RegionSource for FakePd {
    fn get_region<'a>(
        &'a self,
        key: &'a [u8],
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        Box::pin(async move {
            self.calls.get_region.fetch_add(1, Ordering::SeqCst);
            self.pause().await;
            self.with(|s| {
                if !s.queued_get_region.is_empty() {
                    return Ok(s.queued_get_region.remove(0));
                }
                Ok(s.regions
                    .values()
                    .find(|r| r.contains(key))
                    .map(|r| r.info(need_buckets)))
            })
        })
    }

    fn get_prev_region<'a>(
        &'a self,
        key: &'a [u8],
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        Box::pin(async move {
            self.calls.get_prev_region.fetch_add(1, Ordering::SeqCst);
            self.pause().await;
            self.with(|s| {
                let Some(cur) = s.regions.values().find(|r| r.contains(key)) else {
                    return Ok(None);
                };
                Ok(s.regions
                    .values()
                    .find(|r| r.meta.end_key == cur.meta.start_key && !r.meta.end_key.is_empty())
                    .map(|r| r.info(need_buckets)))
            })
        })
    }

    fn get_region_by_id(
        &self,
        region_id: u64,
        need_buckets: bool,
    ) -> BoxFuture<'_, Result<Option<RegionInfo>>> {
        Box::pin(async move {
            self.calls.get_region_by_id.fetch_add(1, Ordering::SeqCst);
            self.pause().await;
            self.with(|s| {
                Ok(s.regions
                    .values()
                    .find(|r| r.meta.id == region_id)
                    .map(|r| r.info(need_buckets)))
            })
        })
    }

    fn batch_scan_regions<'a>(
        &'a self,
        ranges: &'a [(Bytes, Bytes)],
        limit: usize,
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Vec<RegionInfo>>> {
        Box::pin(async move {
            self.calls.batch_scan.fetch_add(1, Ordering::SeqCst);
            self.max_scan_ranges
                .fetch_max(ranges.len(), Ordering::SeqCst);
            self.pause().await;
            self.with(|s| {
                let mut out: Vec<RegionInfo> = Vec::new();
                let mut hidden_used = Vec::new();
                let mut leaderless_used = Vec::new();
                for (start, end) in ranges {
                    for r in s.regions.values() {
                        let overlaps = (r.meta.end_key.is_empty()
                            || r.meta.end_key.as_ref() > start.as_ref())
                            && (end.is_empty() || r.meta.start_key.as_ref() < end.as_ref());
                        if !overlaps || out.iter().any(|o| o.region.id == r.meta.id) {
                            continue;
                        }
                        if s.hidden.get(&r.meta.id).is_some_and(|&n| n > 0) {
                            hidden_used.push(r.meta.id);
                            continue;
                        }
                        let mut info = r.info(need_buckets);
                        if s.leaderless_scans.get(&r.meta.id).is_some_and(|&n| n > 0) {
                            leaderless_used.push(r.meta.id);
                            info.leader = None;
                        }
                        out.push(info);
                        if limit > 0 && out.len() >= limit {
                            break;
                        }
                    }
                    if limit > 0 && out.len() >= limit {
                        break;
                    }
                }
                hidden_used.dedup();
                for id in hidden_used {
                    *s.hidden.get_mut(&id).unwrap() -= 1;
                }
                leaderless_used.dedup();
                for id in leaderless_used {
                    *s.leaderless_scans.get_mut(&id).unwrap() -= 1;
                }
                Ok(out)
            })
        })
    }

    // This fake has no followers: a leader-only lookup is counted, then answered as any other
    // (queued stale answers included, so tests can model a leader that has not caught up).
    fn get_region_from_leader<'a>(
        &'a self,
        key: &'a [u8],
        prev: bool,
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        self.calls.leader_only.fetch_add(1, Ordering::SeqCst);
        if prev {
            self.get_prev_region(key, need_buckets)
        } else {
            self.get_region(key, need_buckets)
        }
    }

    fn batch_scan_regions_from_leader<'a>(
        &'a self,
        ranges: &'a [(Bytes, Bytes)],
        limit: usize,
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Vec<RegionInfo>>> {
        self.calls.leader_only.fetch_add(1, Ordering::SeqCst);
        self.batch_scan_regions(ranges, limit, need_buckets)
    }

    fn get_store_from_leader(&self, store_id: u64) -> BoxFuture<'_, Result<Option<metapb::Store>>> {
        self.calls.leader_only.fetch_add(1, Ordering::SeqCst);
        self.get_store(store_id)
    }

    fn get_store(&self, store_id: u64) -> BoxFuture<'_, Result<Option<metapb::Store>>> {
        Box::pin(async move {
            self.calls.get_store.fetch_add(1, Ordering::SeqCst);
            Ok(self.with(|s| s.stores.get(&store_id).cloned()))
        })
    }

    fn get_all_stores(&self, exclude_tombstone: bool) -> BoxFuture<'_, Result<Vec<metapb::Store>>> {
        Box::pin(async move {
            self.calls.get_all_stores.fetch_add(1, Ordering::SeqCst);
            Ok(self.with(|s| {
                s.stores
                    .values()
                    .filter(|st| {
                        !exclude_tombstone || st.state != metapb::StoreState::Tombstone as i32
                    })
                    .cloned()
                    .collect()
            }))
        })
    }
}
