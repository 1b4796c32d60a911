//! The cluster's shared state: stores, regions and their epochs, keyspaces, the TSO, raw data,
//! and the region validation TiKV performs before executing a request.
//!
//! Everything lives in one [`ClusterState`] behind one mutex (see [`crate::Shared`]): every RPC
//! takes the lock, validates, executes and applies atomically, which makes the mock linearizable
//! without TiKV's latches. PD and every store read the same state, so PD never lags behind TiKV
//! unless a fault rule says so.
//!
//! Region rules follow TiKV's raftstore (see `mock-cluster-spec.md` §4.1 and §5.2): batch split
//! bumps `version` by the number of new regions and keeps the original id on the rightmost part
//! (TiKV's right-derive default); merge makes the target's version `max(source, target) + 1`;
//! membership changes bump `conf_ver`; leader transfer changes neither. A region whose leader
//! was just elected (leader transfer, merge target, new split regions) must sync max_ts before
//! async commit and 1PC are allowed (raftstore `require_updating_max_ts` and the PD worker's
//! `UpdateMaxTimestamp`). Each store also keeps TiKV's transaction status cache
//! (`src/storage/txn/txn_status_cache.rs`). Region boundaries are
//! storage keys: raw bytes for API V1 raw keys, memcomparable-encoded keys for API V1
//! transactional keys and for every API V2 key.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use tikv_proto::{errorpb, keyspacepb, kvrpcpb, metapb};

use crate::clock::Clock;
use crate::codec::encode_bytes;
use crate::raw::RawStore;
use crate::tso::Tso;
use crate::{ApiVersion, MockError};

/// How many regions split from the addressed one TiKV reports in `EpochNotMatch`, besides the
/// addressed region itself (TiKV's `MAX_REGIONS_IN_ERROR`).
const MAX_REGIONS_IN_ERROR: usize = 10;

/// The id of the keyspace named DEFAULT, which always exists.
pub(crate) const DEFAULT_KEYSPACE_ID: u32 = 0;

/// A region as the mock keeps it.
#[derive(Debug, Clone)]
pub(crate) struct RegionState {
    pub(crate) meta: metapb::Region,
    /// Peer id of the leader; 0 when the region has no leader.
    pub(crate) leader: u64,
    /// Regions split off this one, with the version this region had right after each split, so
    /// EpochNotMatch can list the regions that now cover a stale request's range.
    split_children: Vec<(u64, u64)>,
    /// Whether the leader's store has synced its max_ts with the TSO since it became leader
    /// (TiKV `TxnExt::is_max_ts_synced`). Async-commit and 1PC prewrites need it.
    pub(crate) max_ts_synced: bool,
}

impl RegionState {
    pub(crate) fn id(&self) -> u64 {
        self.meta.id
    }

    pub(crate) fn leader_peer(&self) -> Option<&metapb::Peer> {
        self.meta.peers.iter().find(|p| p.id == self.leader)
    }

    pub(crate) fn peer_on_store(&self, store_id: u64) -> Option<&metapb::Peer> {
        self.meta.peers.iter().find(|p| p.store_id == store_id)
    }

    /// Whether the storage key lies in `[start_key, end_key)`; an empty end key is unbounded.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        key >= self.meta.start_key.as_ref()
            && (self.meta.end_key.is_empty() || key < self.meta.end_key.as_ref())
    }

    fn version(&self) -> u64 {
        self.meta.region_epoch.as_ref().map_or(0, |e| e.version)
    }

    fn bump(&mut self, version_by: u64, conf_ver_by: u64) {
        let epoch = self.meta.region_epoch.get_or_insert_with(Default::default);
        epoch.version += version_by;
        epoch.conf_ver += conf_ver_by;
    }
}

/// A store as the mock keeps it.
#[derive(Debug, Clone)]
pub(crate) struct StoreState {
    pub(crate) meta: metapb::Store,
    /// False while the store is stopped: its listener is closed and PD reports it as down.
    pub(crate) up: bool,
    /// The store's concurrency-manager max_ts (used by transactional reads and async commit).
    pub(crate) max_ts: u64,
    /// Sequence number of the store's health feedback.
    pub(crate) feedback_seq: u64,
    /// The slow score the store reports in its health feedback (TiKV's: 1 healthy .. 100).
    pub(crate) slow_score: u64,
    /// The store's cache of finished transactions (TiKV's `TxnStatusCache`).
    pub(crate) txn_status: TxnStatusCache,
}

/// How long TiKV keeps a transaction's status in its cache at least
/// (`CACHE_ITEMS_REQUIRED_KEEP_TIME`); older entries are dropped when a new one arrives.
const TXN_STATUS_KEEP_MS: u64 = 30_000;

/// A transaction's state as a store's status cache knows it (TiKV `TxnState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CachedTxnState {
    Ongoing,
    Committed { commit_ts: u64 },
    RolledBack,
}

/// The per-store cache of recently finished transactions. TiKV fills it from its own commits
/// (commit, 1PC, resolve lock, status checks that find a commit) and from
/// BroadcastTxnStatus; the one reader that changes an answer is pessimistic prewrite, which
/// treats a request of a transaction known to be committed as a retry. TiKV's separate cache of
/// ongoing large transactions only feeds the resolved-ts tracker, which the mock does not have.
#[derive(Debug, Default, Clone)]
pub(crate) struct TxnStatusCache {
    entries: HashMap<u64, (CachedTxnState, u64)>,
    /// Insertion order, for dropping entries past the keep time; an entry updated later than
    /// its queue position says is skipped there.
    order: std::collections::VecDeque<(u64, u64)>,
}

impl TxnStatusCache {
    /// Records `state` for `start_ts` at `now_ms`. A finished state (committed or rolled back)
    /// is final: later updates of it are ignored, as TiKV's `upsert` does.
    pub(crate) fn upsert(&mut self, start_ts: u64, state: CachedTxnState, now_ms: u64) {
        while let Some(&(at, ts)) = self.order.front() {
            if now_ms.saturating_sub(at) <= TXN_STATUS_KEEP_MS {
                break;
            }
            self.order.pop_front();
            if self
                .entries
                .get(&ts)
                .is_some_and(|(_, updated)| *updated == at)
            {
                self.entries.remove(&ts);
            }
        }
        match self.entries.get_mut(&start_ts) {
            Some((existing, updated)) => {
                if *existing == CachedTxnState::Ongoing {
                    *existing = state;
                    *updated = now_ms;
                    self.order.push_back((now_ms, start_ts));
                }
            }
            None => {
                self.entries.insert(start_ts, (state, now_ms));
                self.order.push_back((now_ms, start_ts));
            }
        }
    }

    /// The commit ts of `start_ts` if the cache knows it committed.
    pub(crate) fn committed(&self, start_ts: u64) -> Option<u64> {
        match self.entries.get(&start_ts) {
            Some((CachedTxnState::Committed { commit_ts }, _)) => Some(*commit_ts),
            _ => None,
        }
    }
}

/// A keyspace as PD keeps it.
#[derive(Debug, Clone)]
pub(crate) struct KeyspaceState {
    pub(crate) id: u32,
    pub(crate) meta: keyspacepb::KeyspaceMeta,
}

/// The regions by id and by start key. Regions tile the whole key space. The cluster state
/// owns the live map; PD's router servers keep a clone while their region sync is stopped, so
/// the lookups here serve both.
#[derive(Debug, Clone, Default)]
pub(crate) struct RegionMap {
    regions: BTreeMap<u64, RegionState>,
    /// Region start key (storage form) to region id.
    by_start: BTreeMap<Bytes, u64>,
}

impl RegionMap {
    fn insert(&mut self, region: RegionState) {
        self.by_start
            .insert(region.meta.start_key.clone(), region.id());
        self.regions.insert(region.id(), region);
    }

    pub(crate) fn region(&self, id: u64) -> Option<&RegionState> {
        self.regions.get(&id)
    }

    /// The region containing the storage key.
    pub(crate) fn region_by_key(&self, key: &[u8]) -> Option<&RegionState> {
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        self.regions.get(id).filter(|r| r.contains(key))
    }

    /// The region just before the one containing the storage key.
    pub(crate) fn prev_region(&self, key: &[u8]) -> Option<&RegionState> {
        let current = self.region_by_key(key)?;
        if current.meta.start_key.is_empty() {
            return None;
        }
        self.region_by_key_end(&current.meta.start_key)
    }

    /// The region whose end key is `end` (the region left of a boundary).
    fn region_by_key_end(&self, end: &[u8]) -> Option<&RegionState> {
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(end)))
            .next_back()?;
        self.regions.get(id)
    }

    /// Regions overlapping `[start, end)` in key order, at most `limit` (0 = no limit).
    pub(crate) fn regions_in_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Vec<&RegionState> {
        let mut out = Vec::new();
        let first_start = match self.region_by_key(start) {
            Some(r) => r.meta.start_key.clone(),
            None => return out,
        };
        for (region_start, id) in self.by_start.range(first_start..) {
            if !end.is_empty() && region_start.as_ref() >= end {
                break;
            }
            if let Some(r) = self.regions.get(id) {
                out.push(r);
            }
            if limit != 0 && out.len() >= limit {
                break;
            }
        }
        out
    }

    /// Every region in key order.
    pub(crate) fn all_regions(&self) -> impl Iterator<Item = &RegionState> {
        self.by_start.values().filter_map(|id| self.regions.get(id))
    }
}

/// The whole cluster, behind the one lock of [`crate::Shared`].
#[derive(Debug)]
pub(crate) struct ClusterState {
    pub(crate) cluster_id: u64,
    pub(crate) api_version: ApiVersion,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tso: Tso,
    pub(crate) raw: RawStore,
    /// Transactional data (lock, write and default column families).
    pub(crate) mvcc: crate::mvcc::MvccStore,
    pub(crate) stores: BTreeMap<u64, StoreState>,
    /// The regions, PD's view of them and the stores' alike.
    map: RegionMap,
    pub(crate) keyspaces: BTreeMap<u32, KeyspaceState>,
    /// Requests received, by (store id, command name).
    pub(crate) rpc_counts: HashMap<(u64, &'static str), u64>,
    /// Split a region once it holds more than this many raw keys.
    pub(crate) auto_split_keys: Option<usize>,
    /// PD's own state (GC safe points and barriers, operators, external timestamp), owned by
    /// the PD server module.
    pub(crate) pd: crate::pd::PdState,
    /// When set, a region whose leadership moves (leader transfer, merge, split) stays
    /// unsynced until a control call syncs it; otherwise it syncs at once, as TiKV's PD worker
    /// usually does before the next request arrives.
    pub(crate) defer_max_ts_sync: bool,
    /// What a store does when a request would move its max_ts past what the TSO allows.
    pub(crate) invalid_max_ts_action: crate::InvalidMaxTsAction,
    /// Stores that "crashed" on an invalid max_ts update during the current request; the
    /// dispatcher takes the mark and stops the store's server.
    pub(crate) crashed_stores: Vec<u64>,
    replicas: usize,
    next_id: u64,
}

impl ClusterState {
    /// A cluster of `store_addrs.len()` stores with one region covering everything.
    pub(crate) fn new(
        cluster_id: u64,
        api_version: ApiVersion,
        clock: Arc<dyn Clock>,
        store_addrs: &[String],
        replicas: usize,
    ) -> Self {
        let mut state = ClusterState {
            cluster_id,
            api_version,
            tso: Tso::default(),
            clock,
            raw: RawStore::default(),
            mvcc: crate::mvcc::MvccStore::default(),
            stores: BTreeMap::new(),
            map: RegionMap::default(),
            keyspaces: BTreeMap::new(),
            rpc_counts: HashMap::new(),
            auto_split_keys: None,
            pd: crate::pd::PdState::default(),
            defer_max_ts_sync: false,
            invalid_max_ts_action: crate::InvalidMaxTsAction::default(),
            crashed_stores: Vec::new(),
            replicas: replicas.clamp(1, store_addrs.len().max(1)),
            next_id: 1,
        };
        for addr in store_addrs {
            state.add_store(addr.clone());
        }
        let store_ids: Vec<u64> = state.stores.keys().copied().collect();
        let region_id = state.alloc_id();
        let peers: Vec<metapb::Peer> = store_ids
            .iter()
            .take(state.replicas)
            .map(|&store_id| metapb::Peer {
                id: state.alloc_id(),
                store_id,
                ..Default::default()
            })
            .collect();
        let leader = peers.first().map_or(0, |p| p.id);
        let meta = metapb::Region {
            id: region_id,
            region_epoch: Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers,
            ..Default::default()
        };
        state.insert_region(RegionState {
            meta,
            leader,
            split_children: Vec::new(),
            max_ts_synced: true,
        });
        state.create_keyspace_meta(DEFAULT_KEYSPACE_ID, "DEFAULT");
        state
    }

    pub(crate) fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn insert_region(&mut self, region: RegionState) {
        self.map.insert(region);
    }

    // ----- lookups ----------------------------------------------------------------------------

    /// The region map, for readers that serve PD's region queries.
    pub(crate) fn region_map(&self) -> &RegionMap {
        &self.map
    }

    pub(crate) fn region(&self, id: u64) -> Option<&RegionState> {
        self.map.region(id)
    }

    /// The region containing the storage key.
    pub(crate) fn region_by_key(&self, key: &[u8]) -> Option<&RegionState> {
        self.map.region_by_key(key)
    }

    /// The region just before the one containing the storage key.
    pub(crate) fn prev_region(&self, key: &[u8]) -> Option<&RegionState> {
        self.map.prev_region(key)
    }

    /// Regions overlapping `[start, end)` in key order, at most `limit` (0 = no limit).
    pub(crate) fn regions_in_range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Vec<&RegionState> {
        self.map.regions_in_range(start, end, limit)
    }

    /// Every region in key order.
    pub(crate) fn all_regions(&self) -> impl Iterator<Item = &RegionState> {
        self.map.all_regions()
    }

    /// The storage form of a raw key: API V2 keys are memcomparable-encoded, API V1 raw keys
    /// are used as they are.
    pub(crate) fn raw_storage_key(&self, key: &[u8]) -> Bytes {
        match self.api_version {
            ApiVersion::V1 => Bytes::copy_from_slice(key),
            ApiVersion::V2 => Bytes::from(encode_bytes(key)),
        }
    }

    // ----- validation -------------------------------------------------------------------------

    /// Checks a request's context in TiKV's order (store, region, peer, leader, epoch) for a
    /// request received by `store_id`, returning the region it addresses.
    ///
    /// Replica and stale reads (`ctx.replica_read`, `ctx.stale_read`) are served by followers and
    /// learners too. The error is the wire value the response carries; it is large, but it is
    /// built only on the error path and moved once into the response.
    #[allow(clippy::result_large_err)]
    pub(crate) fn validate(
        &self,
        store_id: u64,
        ctx: &kvrpcpb::Context,
    ) -> Result<&RegionState, errorpb::Error> {
        let request_store = ctx.peer.as_ref().map_or(0, |p| p.store_id);
        if request_store != store_id {
            return Err(errorpb::Error {
                message: format!("to store id {request_store}, mine {store_id}"),
                store_not_match: Some(errorpb::StoreNotMatch {
                    request_store_id: request_store,
                    actual_store_id: store_id,
                }),
                ..Default::default()
            });
        }
        let region = self
            .map
            .regions
            .get(&ctx.region_id)
            .filter(|r| r.peer_on_store(store_id).is_some())
            .ok_or_else(|| region_not_found(ctx.region_id))?;
        let local_peer = region.peer_on_store(store_id).map_or(0, |p| p.id);
        let request_peer = ctx.peer.as_ref().map_or(0, |p| p.id);
        if request_peer != local_peer {
            return Err(errorpb::Error {
                message: format!("mismatch peer id {request_peer} != {local_peer}"),
                mismatch_peer_id: Some(errorpb::MismatchPeerId {
                    request_peer_id: request_peer,
                    store_peer_id: local_peer,
                }),
                ..Default::default()
            });
        }
        let read_on_replica = ctx.replica_read || ctx.stale_read;
        if region.leader != local_peer && !read_on_replica {
            return Err(self.not_leader(region));
        }
        // TiKV copies the context's epoch into the raft header, so a missing epoch is epoch
        // {0, 0} and fails the version check like any stale one.
        let epoch = ctx.region_epoch.unwrap_or_default();
        // TiKV compares only `version` for KV requests; conf_ver changes do not reject them.
        if epoch.version != region.version() {
            return Err(self.epoch_not_match(region, epoch));
        }
        Ok(region)
    }

    /// NotLeader naming the region's actual leader (none if it has no leader).
    pub(crate) fn not_leader(&self, region: &RegionState) -> errorpb::Error {
        errorpb::Error {
            message: format!(
                "peer is not leader for region {}, leader may {}",
                region.id(),
                debug_peer(region.leader_peer())
            ),
            not_leader: Some(errorpb::NotLeader {
                region_id: region.id(),
                leader: region.leader_peer().cloned(),
            }),
            ..Default::default()
        }
    }

    /// EpochNotMatch listing the region and, for a request older than it, the regions split off
    /// it since then (as TiKV does).
    pub(crate) fn epoch_not_match(
        &self,
        region: &RegionState,
        request_epoch: metapb::RegionEpoch,
    ) -> errorpb::Error {
        let request_version = request_epoch.version;
        let mut current = vec![region.meta.clone()];
        if request_version < region.version() {
            current.extend(
                region
                    .split_children
                    .iter()
                    .filter(|(version_after, _)| *version_after > request_version)
                    .filter_map(|(_, id)| self.map.regions.get(id))
                    .take(MAX_REGIONS_IN_ERROR)
                    .map(|r| r.meta.clone()),
            );
        }
        errorpb::Error {
            message: format!(
                "EpochNotMatch current epoch of region {} is {}, but you sent {}",
                region.id(),
                debug_epoch(region.meta.region_epoch.unwrap_or_default()),
                debug_epoch(request_epoch)
            ),
            epoch_not_match: Some(errorpb::EpochNotMatch {
                current_regions: current,
            }),
            ..Default::default()
        }
    }

    /// KeyNotInRegion unless the storage key lies in the region.
    #[allow(clippy::result_large_err)]
    pub(crate) fn check_key(region: &RegionState, key: &[u8]) -> Result<(), errorpb::Error> {
        if region.contains(key) {
            return Ok(());
        }
        Err(errorpb::Error {
            message: format!(
                "key {} is not in region key range [{}, {}) for region {}",
                hex_upper(key),
                hex_upper(&region.meta.start_key),
                hex_upper(&region.meta.end_key),
                region.id()
            ),
            key_not_in_region: Some(errorpb::KeyNotInRegion {
                key: Bytes::copy_from_slice(key),
                region_id: region.id(),
                start_key: region.meta.start_key.clone(),
                end_key: region.meta.end_key.clone(),
            }),
            ..Default::default()
        })
    }

    // ----- topology changes -------------------------------------------------------------------

    /// Splits the regions containing `keys` (storage keys) so that each key starts a region.
    /// Keys that already start a region are skipped. Returns the regions that resulted from the
    /// splits, in key order.
    pub(crate) fn split(&mut self, keys: &[Bytes]) -> Result<Vec<metapb::Region>, MockError> {
        let mut by_region: BTreeMap<u64, Vec<Bytes>> = BTreeMap::new();
        for key in keys {
            let region = self
                .region_by_key(key)
                .ok_or_else(|| MockError::Topology(format!("no region contains key {key:?}")))?;
            if region.meta.start_key == *key {
                continue;
            }
            by_region.entry(region.id()).or_default().push(key.clone());
        }
        let mut result = Vec::new();
        for (region_id, mut split_keys) in by_region {
            split_keys.sort();
            split_keys.dedup();
            result.extend(self.batch_split(region_id, &split_keys));
        }
        result.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        Ok(result)
    }

    /// TiKV's batch split of one region at sorted keys strictly inside it: N keys give N + 1
    /// regions, all at `version + N`; the original id keeps the rightmost range.
    fn batch_split(&mut self, region_id: u64, keys: &[Bytes]) -> Vec<metapb::Region> {
        let Some(mut original) = self.map.regions.remove(&region_id) else {
            return Vec::new();
        };
        self.map.by_start.remove(&original.meta.start_key);
        let n = keys.len() as u64;
        original.bump(n, 0);
        let version_after = original.version();
        let mut result = Vec::with_capacity(keys.len() + 1);
        let mut start = original.meta.start_key.clone();
        for key in keys {
            let new_id = self.alloc_id();
            let mut meta = original.meta.clone();
            meta.id = new_id;
            meta.start_key = start.clone();
            meta.end_key = key.clone();
            let mut leader = 0;
            for peer in &mut meta.peers {
                let new_peer = self.alloc_id();
                if peer.id == original.leader {
                    leader = new_peer;
                }
                peer.id = new_peer;
            }
            original.split_children.push((version_after, new_id));
            result.push(meta.clone());
            self.insert_region(RegionState {
                meta,
                leader,
                split_children: Vec::new(),
                // The new region's peers elect a leader, which has to sync max_ts again.
                max_ts_synced: !self.defer_max_ts_sync,
            });
            start = key.clone();
        }
        original.meta.start_key = start;
        result.push(original.meta.clone());
        self.insert_region(original);
        result
    }

    /// Merges `source` into the adjacent `target`, as PrepareMerge + CommitMerge do.
    pub(crate) fn merge(&mut self, source: u64, target: u64) -> Result<metapb::Region, MockError> {
        let (src, tgt) = match (self.map.regions.get(&source), self.map.regions.get(&target)) {
            (Some(s), Some(t)) => (s.clone(), t.clone()),
            _ => {
                return Err(MockError::Topology(format!(
                    "merge of unknown regions {source}, {target}"
                )));
            }
        };
        let source_left = src.meta.end_key == tgt.meta.start_key && !src.meta.end_key.is_empty();
        let source_right = tgt.meta.end_key == src.meta.start_key && !tgt.meta.end_key.is_empty();
        if !source_left && !source_right {
            return Err(MockError::Topology(format!(
                "regions {source} and {target} are not adjacent"
            )));
        }
        self.map.regions.remove(&source);
        self.map.by_start.remove(&src.meta.start_key);
        let mut merged = tgt;
        self.map.by_start.remove(&merged.meta.start_key);
        if source_left {
            merged.meta.start_key = src.meta.start_key.clone();
        } else {
            merged.meta.end_key = src.meta.end_key.clone();
        }
        let version = merged.version().max(src.version()) + 1;
        if let Some(epoch) = merged.meta.region_epoch.as_mut() {
            epoch.version = version;
        }
        // The target's leader must sync max_ts again after CommitMerge (TiKV
        // `on_ready_commit_merge`): the source's leader may have seen larger timestamps.
        merged.max_ts_synced = false;
        let meta = merged.meta.clone();
        self.insert_region(merged);
        if !self.defer_max_ts_sync {
            self.sync_max_ts(target)?;
        }
        Ok(meta)
    }

    /// Makes the peer on `store_id` the leader of the region (no epoch change). The new leader's
    /// store syncs its max_ts with the TSO, as a TiKV leader does on election (at once, or when
    /// [`ClusterState::sync_max_ts`] is called if syncing is deferred).
    pub(crate) fn transfer_leader(
        &mut self,
        region_id: u64,
        store_id: u64,
    ) -> Result<(), MockError> {
        let defer = self.defer_max_ts_sync;
        let region = self
            .map
            .regions
            .get_mut(&region_id)
            .ok_or_else(|| MockError::Topology(format!("unknown region {region_id}")))?;
        let peer = region
            .peer_on_store(store_id)
            .filter(|p| p.role == metapb::PeerRole::Voter as i32)
            .ok_or_else(|| {
                MockError::Topology(format!(
                    "region {region_id} has no voter on store {store_id}"
                ))
            })?
            .id;
        if region.leader == peer {
            // No election happened: nothing to sync.
            return Ok(());
        }
        region.leader = peer;
        region.max_ts_synced = false;
        if !defer {
            self.sync_max_ts(region_id)?;
        }
        Ok(())
    }

    /// Completes the max_ts sync of a region's leader: its store's max_ts catches up with the
    /// TSO and async-commit / 1PC prewrites are accepted again (TiKV's PD worker
    /// `UpdateMaxTimestamp` task).
    pub(crate) fn sync_max_ts(&mut self, region_id: u64) -> Result<(), MockError> {
        let now_ts = self.tso.peek(self.clock.now_ms());
        let region = self
            .map
            .regions
            .get_mut(&region_id)
            .ok_or_else(|| MockError::Topology(format!("unknown region {region_id}")))?;
        region.max_ts_synced = true;
        let leader_store = region.leader_peer().map(|p| p.store_id);
        if let Some(store) = leader_store.and_then(|id| self.stores.get_mut(&id)) {
            store.max_ts = store.max_ts.max(now_ts);
        }
        Ok(())
    }

    /// Syncs every region still waiting for it.
    pub(crate) fn sync_all_max_ts(&mut self) {
        let pending: Vec<u64> = self
            .map
            .regions
            .values()
            .filter(|r| !r.max_ts_synced)
            .map(RegionState::id)
            .collect();
        for id in pending {
            let _ = self.sync_max_ts(id);
        }
    }

    /// Registers a new store serving at `addr`, Up and Serving, and returns its id.
    pub(crate) fn add_store(&mut self, addr: String) -> u64 {
        let id = self.alloc_id();
        let now_secs = i64::try_from(self.clock.now_ms() / 1000).unwrap_or(i64::MAX);
        let meta = metapb::Store {
            id,
            address: addr.clone(),
            state: metapb::StoreState::Up as i32,
            version: crate::TIKV_VERSION.to_owned(),
            peer_address: addr.clone(),
            status_address: addr,
            start_timestamp: now_secs,
            last_heartbeat: now_secs.saturating_mul(1_000_000_000),
            node_state: metapb::NodeState::Serving as i32,
            ..Default::default()
        };
        self.stores.insert(
            id,
            StoreState {
                meta,
                up: true,
                max_ts: 0,
                feedback_seq: 0,
                slow_score: 1,
                txn_status: TxnStatusCache::default(),
            },
        );
        id
    }

    /// How many region peers (voters and learners) `store_id` holds.
    pub(crate) fn peers_on_store(&self, store_id: u64) -> usize {
        self.all_regions()
            .filter(|r| r.peer_on_store(store_id).is_some())
            .count()
    }

    /// Moves a store's advertised addresses (service, peer and status), as a TiKV restarted
    /// with a new `--addr` reports them to PD. A restarted store also gets a new start time.
    pub(crate) fn set_store_address(
        &mut self,
        store_id: u64,
        addr: String,
    ) -> Result<(), MockError> {
        let now_secs = i64::try_from(self.clock.now_ms() / 1000).unwrap_or(i64::MAX);
        let store = self
            .stores
            .get_mut(&store_id)
            .ok_or_else(|| MockError::Topology(format!("unknown store {store_id}")))?;
        store.meta.address = addr.clone();
        store.meta.peer_address = addr.clone();
        store.meta.status_address = addr;
        store.meta.start_timestamp = now_secs;
        Ok(())
    }

    /// Sets a store's state as PD's store lifecycle does: Offline is PD's "removing" (node state
    /// Removing), Tombstone its "removed" (node state Removed), Up brings it back to Serving. PD
    /// buries a store only once it holds no region peer, so Tombstone is refused before that.
    pub(crate) fn set_store_state(
        &mut self,
        store_id: u64,
        state: metapb::StoreState,
    ) -> Result<(), MockError> {
        let peers = self.peers_on_store(store_id);
        let store = self
            .stores
            .get_mut(&store_id)
            .ok_or_else(|| MockError::Topology(format!("unknown store {store_id}")))?;
        let node_state = match state {
            metapb::StoreState::Up => metapb::NodeState::Serving,
            metapb::StoreState::Offline => metapb::NodeState::Removing,
            metapb::StoreState::Tombstone => {
                if peers > 0 {
                    return Err(MockError::Topology(format!(
                        "store {store_id} still holds {peers} region peers"
                    )));
                }
                metapb::NodeState::Removed
            }
        };
        store.meta.state = state as i32;
        store.meta.node_state = node_state as i32;
        Ok(())
    }

    /// Forgets a store entirely, as PD's `remove-tombstone` does: PD then answers `GetStore`
    /// for it with "not found". Refused while the store holds region peers.
    pub(crate) fn remove_store(&mut self, store_id: u64) -> Result<(), MockError> {
        if !self.stores.contains_key(&store_id) {
            return Err(MockError::Topology(format!("unknown store {store_id}")));
        }
        let peers = self.peers_on_store(store_id);
        if peers > 0 {
            return Err(MockError::Topology(format!(
                "store {store_id} still holds {peers} region peers"
            )));
        }
        self.stores.remove(&store_id);
        Ok(())
    }

    /// Adds a voter or learner on `store_id` (conf_ver + 1).
    pub(crate) fn add_peer(
        &mut self,
        region_id: u64,
        store_id: u64,
        learner: bool,
    ) -> Result<u64, MockError> {
        if !self.stores.contains_key(&store_id) {
            return Err(MockError::Topology(format!("unknown store {store_id}")));
        }
        let peer_id = self.alloc_id();
        let region = self
            .map
            .regions
            .get_mut(&region_id)
            .ok_or_else(|| MockError::Topology(format!("unknown region {region_id}")))?;
        if region.peer_on_store(store_id).is_some() {
            return Err(MockError::Topology(format!(
                "region {region_id} already has a peer on store {store_id}"
            )));
        }
        let role = if learner {
            metapb::PeerRole::Learner
        } else {
            metapb::PeerRole::Voter
        };
        region.meta.peers.push(metapb::Peer {
            id: peer_id,
            store_id,
            role: role as i32,
            ..Default::default()
        });
        region.bump(0, 1);
        if region.leader == 0 && !learner {
            region.leader = peer_id;
        }
        Ok(peer_id)
    }

    /// Removes the region's peer on `store_id` (conf_ver + 1). A removed leader hands over to the
    /// first remaining voter, or leaves the region leaderless.
    pub(crate) fn remove_peer(&mut self, region_id: u64, store_id: u64) -> Result<(), MockError> {
        let region = self
            .map
            .regions
            .get_mut(&region_id)
            .ok_or_else(|| MockError::Topology(format!("unknown region {region_id}")))?;
        let Some(pos) = region
            .meta
            .peers
            .iter()
            .position(|p| p.store_id == store_id)
        else {
            return Err(MockError::Topology(format!(
                "region {region_id} has no peer on store {store_id}"
            )));
        };
        let removed = region.meta.peers.remove(pos);
        region.bump(0, 1);
        if region.leader == removed.id {
            region.leader = region
                .meta
                .peers
                .iter()
                .find(|p| p.role == metapb::PeerRole::Voter as i32)
                .map_or(0, |p| p.id);
        }
        Ok(())
    }

    // ----- keyspaces --------------------------------------------------------------------------

    fn create_keyspace_meta(&mut self, id: u32, name: &str) {
        let now = (self.clock.now_ms() / 1000) as i64;
        let meta = keyspacepb::KeyspaceMeta {
            keyspace: Some(keyspacepb::keyspace_meta::Keyspace::Id(id)),
            name: name.to_owned(),
            state: keyspacepb::KeyspaceState::Enabled as i32,
            created_at: now,
            state_changed_at: now,
            ..Default::default()
        };
        self.keyspaces.insert(id, KeyspaceState { id, meta });
    }

    /// Creates an ENABLED keyspace (or returns the existing one of that name). Under API V2 the
    /// keyspace's raw and txn key ranges get region boundaries of their own, as PD splits them.
    pub(crate) fn create_keyspace(&mut self, name: &str) -> Result<u32, MockError> {
        if let Some(existing) = self.keyspace_by_name(name) {
            return Ok(existing.id);
        }
        let id = self.keyspaces.keys().next_back().map_or(0, |id| id + 1);
        if id > 0x00FF_FFFF {
            return Err(MockError::Topology("keyspace ids are exhausted".to_owned()));
        }
        self.create_keyspace_meta(id, name);
        self.split_keyspace(id)?;
        self.pd.notify_keyspace_changed();
        Ok(id)
    }

    /// Splits the region boundaries of keyspace `id` under API V2: `[mode, id(3 bytes)]` and the
    /// next keyspace's prefix, for the raw (`r`) and txn (`x`) modes.
    pub(crate) fn split_keyspace(&mut self, id: u32) -> Result<(), MockError> {
        if self.api_version != ApiVersion::V2 {
            return Ok(());
        }
        let mut keys = Vec::new();
        for mode in [b'r', b'x'] {
            for ks in [id, id + 1] {
                let prefix = [mode, (ks >> 16) as u8, (ks >> 8) as u8, ks as u8];
                keys.push(Bytes::from(encode_bytes(&prefix)));
            }
        }
        self.split(&keys).map(|_| ())
    }

    pub(crate) fn keyspace_by_name(&self, name: &str) -> Option<&KeyspaceState> {
        self.keyspaces.values().find(|k| k.meta.name == name)
    }

    /// Counts a request for the RPC statistics of the control API.
    pub(crate) fn count_rpc(&mut self, store_id: u64, command: &'static str) {
        *self.rpc_counts.entry((store_id, command)).or_default() += 1;
    }
}

/// A peer as TiKV's error messages print an `Option<Peer>` (the protobuf text form of the set
/// fields).
fn debug_peer(peer: Option<&metapb::Peer>) -> String {
    let Some(p) = peer else {
        return "None".to_owned();
    };
    let mut fields = format!("id: {} store_id: {}", p.id, p.store_id);
    if p.role == metapb::PeerRole::Learner as i32 {
        fields.push_str(" role: Learner");
    }
    if p.is_witness {
        fields.push_str(" is_witness: true");
    }
    format!("Some({fields})")
}

/// An epoch as TiKV's error messages print it.
fn debug_epoch(epoch: metapb::RegionEpoch) -> String {
    format!("conf_ver: {} version: {}", epoch.conf_ver, epoch.version)
}

/// Keys in TiKV's error messages: upper-case hex (`log_wrappers::Value::key`).
pub(crate) fn hex_upper(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02X}")).collect()
}

/// RegionNotFound for `region_id`.
pub(crate) fn region_not_found(region_id: u64) -> errorpb::Error {
    errorpb::Error {
        message: format!("region {region_id} not found"),
        region_not_found: Some(errorpb::RegionNotFound { region_id }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn cluster(stores: usize) -> ClusterState {
        let addrs: Vec<String> = (0..stores)
            .map(|i| format!("127.0.0.1:{}", 20160 + i))
            .collect();
        ClusterState::new(
            1,
            ApiVersion::V1,
            Arc::new(ManualClock::new(1_000_000)),
            &addrs,
            3,
        )
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn ctx_for(region: &RegionState, store: u64) -> kvrpcpb::Context {
        kvrpcpb::Context {
            region_id: region.id(),
            region_epoch: region.meta.region_epoch,
            peer: region.peer_on_store(store).cloned(),
            ..Default::default()
        }
    }

    #[test]
    fn bootstrap_has_one_region_on_every_store() {
        let c = cluster(3);
        let regions: Vec<_> = c.all_regions().collect();
        assert_eq!(regions.len(), 1);
        assert_eq!(regions[0].meta.peers.len(), 3);
        assert_eq!(
            regions[0].meta.region_epoch,
            Some(metapb::RegionEpoch {
                conf_ver: 1,
                version: 1
            })
        );
        assert!(regions[0].leader_peer().is_some());
        assert!(c.keyspace_by_name("DEFAULT").is_some());
    }

    #[test]
    fn batch_split_follows_tikv_epoch_and_right_derive_rules() {
        let mut c = cluster(3);
        let original = c.region_by_key(b"").map(|r| r.id()).unwrap();
        let result = c.split(&[b("m"), b("c"), b("x")]).unwrap();
        assert_eq!(result.len(), 4);
        // Three keys: every resulting region is at version 1 + 3; conf_ver is unchanged.
        for r in &result {
            assert_eq!(
                r.region_epoch,
                Some(metapb::RegionEpoch {
                    conf_ver: 1,
                    version: 4
                })
            );
        }
        // Right-derive: the original id keeps the rightmost range.
        assert_eq!(result.last().unwrap().id, original);
        assert_eq!(result.last().unwrap().start_key, b("x"));
        let starts: Vec<Bytes> = result.iter().map(|r| r.start_key.clone()).collect();
        assert_eq!(starts, vec![b(""), b("c"), b("m"), b("x")]);
        assert_eq!(c.region_by_key(b"d").unwrap().meta.start_key, b("c"));
        assert_eq!(c.prev_region(b"d").unwrap().meta.start_key, b(""));
        assert!(c.prev_region(b"a").is_none());
        // Splitting at an existing boundary changes nothing.
        assert!(c.split(&[b("c")]).unwrap().is_empty());
    }

    #[test]
    fn validation_order_and_errors() {
        let mut c = cluster(3);
        let r = c.region_by_key(b"a").unwrap().clone();
        let leader_store = r.leader_peer().unwrap().store_id;
        let follower_store = r
            .meta
            .peers
            .iter()
            .find(|p| p.id != r.leader)
            .unwrap()
            .store_id;

        let ok = ctx_for(&r, leader_store);
        assert!(c.validate(leader_store, &ok).is_ok());

        // Store first: a context for another store is StoreNotMatch wherever it lands.
        let e = c.validate(follower_store, &ok).unwrap_err();
        assert!(e.store_not_match.is_some());

        // Follower without replica read: NotLeader with the real leader.
        let f = ctx_for(&r, follower_store);
        let e = c.validate(follower_store, &f).unwrap_err();
        assert_eq!(e.not_leader.unwrap().leader.unwrap().store_id, leader_store);
        let replica = kvrpcpb::Context {
            replica_read: true,
            ..f.clone()
        };
        assert!(c.validate(follower_store, &replica).is_ok());

        // Unknown region.
        let unknown = kvrpcpb::Context {
            region_id: 999,
            ..ok.clone()
        };
        assert!(
            c.validate(leader_store, &unknown)
                .unwrap_err()
                .region_not_found
                .is_some()
        );

        // Stale version after a split: EpochNotMatch lists the region and its new sibling.
        c.split(&[b("m")]).unwrap();
        let e = c.validate(leader_store, &ok).unwrap_err();
        let current = e.epoch_not_match.unwrap().current_regions;
        assert_eq!(current.len(), 2);
        assert_eq!(current[0].id, r.id());

        // conf_ver changes do not reject requests.
        let r = c.region(r.id()).unwrap().clone();
        let fresh = ctx_for(&r, leader_store);
        c.remove_peer(r.id(), follower_store).unwrap();
        assert!(c.validate(leader_store, &fresh).is_ok());

        // Peer id mismatch.
        let wrong_peer = kvrpcpb::Context {
            peer: Some(metapb::Peer {
                id: 12345,
                store_id: leader_store,
                ..Default::default()
            }),
            ..fresh
        };
        assert!(
            c.validate(leader_store, &wrong_peer)
                .unwrap_err()
                .mismatch_peer_id
                .is_some()
        );
    }

    #[test]
    fn merge_and_leader_transfer() {
        let mut c = cluster(3);
        c.split(&[b("m")]).unwrap();
        let left = c.region_by_key(b"a").unwrap().id();
        let right = c.region_by_key(b"z").unwrap().id();
        let merged = c.merge(left, right).unwrap();
        assert_eq!(merged.id, right);
        assert!(merged.start_key.is_empty() && merged.end_key.is_empty());
        assert_eq!(merged.region_epoch.unwrap().version, 3);
        assert!(c.region(left).is_none());

        let region = c.region(right).unwrap().clone();
        let other = region
            .meta
            .peers
            .iter()
            .find(|p| p.id != region.leader)
            .unwrap()
            .store_id;
        c.transfer_leader(right, other).unwrap();
        let region = c.region(right).unwrap();
        assert_eq!(region.leader_peer().unwrap().store_id, other);
        assert_eq!(region.meta.region_epoch.as_ref().unwrap().version, 3);
        assert!(c.merge(right, 4242).is_err());
    }

    #[test]
    fn key_not_in_region_carries_the_range() {
        let mut c = cluster(1);
        c.split(&[b("m")]).unwrap();
        let r = c.region_by_key(b"a").unwrap();
        let e = ClusterState::check_key(r, b"z").unwrap_err();
        let k = e.key_not_in_region.unwrap();
        assert_eq!(k.end_key, b("m"));
        assert!(ClusterState::check_key(r, b"b").is_ok());
    }

    #[test]
    fn v2_keyspaces_get_their_own_regions() {
        let addrs = vec!["127.0.0.1:1".to_owned()];
        let mut c = ClusterState::new(1, ApiVersion::V2, Arc::new(ManualClock::new(0)), &addrs, 1);
        c.split_keyspace(DEFAULT_KEYSPACE_ID).unwrap();
        assert_eq!(c.create_keyspace("ks1").unwrap(), 1);
        let key = encode_bytes(b"r\x00\x00\x01hello");
        let region = c.region_by_key(&key).unwrap();
        assert_eq!(
            region.meta.start_key,
            Bytes::from(encode_bytes(b"r\x00\x00\x01"))
        );
        assert_eq!(
            region.meta.end_key,
            Bytes::from(encode_bytes(b"r\x00\x00\x02"))
        );
        assert_eq!(c.create_keyspace("ks1").unwrap(), 1);
    }

    #[test]
    fn txn_status_cache_keeps_final_states_and_drops_old_entries() {
        let mut cache = TxnStatusCache::default();
        cache.upsert(10, CachedTxnState::Ongoing, 0);
        assert_eq!(cache.committed(10), None);
        cache.upsert(10, CachedTxnState::Committed { commit_ts: 20 }, 1);
        assert_eq!(cache.committed(10), Some(20));
        // A final state is never overwritten.
        cache.upsert(10, CachedTxnState::RolledBack, 2);
        cache.upsert(10, CachedTxnState::Committed { commit_ts: 30 }, 3);
        assert_eq!(cache.committed(10), Some(20));
        cache.upsert(11, CachedTxnState::RolledBack, 4);
        assert_eq!(cache.committed(11), None);
        // Entries older than the keep time go when a new one arrives, not before.
        cache.upsert(
            12,
            CachedTxnState::Committed { commit_ts: 40 },
            TXN_STATUS_KEEP_MS + 1,
        );
        assert_eq!(cache.committed(10), Some(20));
        cache.upsert(
            13,
            CachedTxnState::Committed { commit_ts: 50 },
            TXN_STATUS_KEEP_MS + 2,
        );
        assert_eq!(cache.committed(10), None);
        assert_eq!(cache.committed(12), Some(40));
    }

    #[test]
    fn new_leaders_sync_max_ts_at_once_unless_deferred() {
        let mut c = cluster(3);
        let region = c.region_by_key(b"").unwrap().id();
        let stores: Vec<u64> = c.stores.keys().copied().collect();
        c.transfer_leader(region, stores[1]).unwrap();
        assert!(c.region(region).unwrap().max_ts_synced);
        assert!(c.stores[&stores[1]].max_ts >= crate::tso::compose(1_000_000, 0));
        c.defer_max_ts_sync = true;
        c.transfer_leader(region, stores[2]).unwrap();
        assert!(!c.region(region).unwrap().max_ts_synced);
        assert_eq!(c.stores[&stores[2]].max_ts, 0);
        // Re-electing the current leader changes nothing.
        c.sync_max_ts(region).unwrap();
        c.transfer_leader(region, stores[2]).unwrap();
        assert!(c.region(region).unwrap().max_ts_synced);
        // New split regions elect leaders; the original region keeps its own.
        let regions = c.split(&[b("m")]).unwrap();
        let left = regions[0].id;
        assert!(!c.region(left).unwrap().max_ts_synced);
        assert!(c.region(region).unwrap().max_ts_synced);
        c.sync_all_max_ts();
        assert!(c.region(left).unwrap().max_ts_synced);
    }
}
