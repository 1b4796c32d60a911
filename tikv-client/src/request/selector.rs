//! Choosing the replica (and, when forwarding, the proxy) each attempt of a request goes to,
//! and learning from what each attempt answered.
//!
//! One [`ReplicaSelector`] lives for one request to one region version. It copies the region's
//! TiKV peers into [`Replica`]s that count their own attempts and remember what went wrong on
//! them (not leader, server busy, ...), so that a retry never walks in a circle: every replica
//! is tried a bounded number of times, after which the region is invalidated and the caller
//! relocates.
//!
//! Most requests are answered by the leader on the first attempt, so that attempt has a fast
//! path: when the presumed leader is reachable and its store has not failed since the region
//! trusted it, the selector sends there without building the replica list, allocating nothing
//! and touching no reference count. The list (with the first attempt booked on the leader) is
//! built only when something asks for a retry. Replicas name their store by index into the
//! region's stores rather than holding a reference of their own.
//!
//! Who calls it: the retry loop in `sender.rs`, once per attempt ([`ReplicaSelector::next`])
//! and on each failure (`on_*`). It reads and updates the shared [`CachedRegion`] (presumed
//! leader, validity) and the stores' health (`locate::StoreHealth`).
//!
//! Ports the leader and proxy paths of client-go `internal/locate/replica_selector.go`
//! (`replicaSelector.next`, `nextForReplicaReadLeader`, `ReplicaSelectLeaderStrategy`,
//! `ReplicaSelectMixedStrategy` as the leader path's fallback, `ReplicaSelectLeaderWithProxyStrategy`,
//! `onNotLeader`, `onRegionNotFound`, `onServerIsBusy`, `onSendFailure`, `onSendSuccess`) and
//! the replica bookkeeping of `region_request.go` (`replica`, `buildRPCContext`,
//! `invalidateReplicaStore`, `updateLeader`, the pending backoffs), and the replica-read paths:
//! `nextForReplicaReadMixed` (follower, mixed and stale reads, with the stale read's second
//! attempt on the leader as a normal read), the busy-threshold redirection of a leader read,
//! `onDataIsNotReady`.
//!
//! What one attempt needs is an [`AttemptContext`]: the target peer and its address, the proxy,
//! and the read flags of that attempt (`replica_read`, `stale_read`, busy threshold), which may
//! differ from the request's mode (a stale read that met DataIsNotReady is retried on the
//! leader as a normal read). The sender copies all of it into the request's context.

use std::sync::Arc;
use std::time::Duration;

use tikv_proto::metapb;

use crate::Error;
use crate::locate::{
    CachedRegion, InvalidReason, LivenessState, RegionCache, RegionVerId, ResolveState, Store,
    StoreCache, region_flags,
};
use crate::request::BackoffKind;
use crate::request::sender::{CallOptions, ReadMode};
use crate::rpc::Access;

/// TiKV peers whose store epochs a selector snapshots inline; a region with more (never seen
/// in practice: 3 or 5 is the norm) builds its replica list at once instead.
const INLINE_EPOCHS: usize = 8;

/// How many times one replica may be tried by one request (client-go `maxReplicaAttempt`).
pub(crate) const MAX_REPLICA_ATTEMPTS: u32 = 10;
/// How long attempts on one replica may take in total before it counts as exhausted (client-go
/// `maxReplicaAttemptTime`): a replica that times out is not retried ten times over.
pub(crate) const MAX_REPLICA_ATTEMPT_TIME: Duration = Duration::from_secs(50);
/// ServerIsBusy answers without a wait estimate from the presumed leader after which the
/// selector suspects that the leader moved and probes a follower (client-go
/// `leaderBusyProbeThreshold`, the workaround for tikv/client-go#2028).
const LEADER_BUSY_PROBE_THRESHOLD: u32 = 2;

/// What went wrong on a replica earlier in this request.
mod flag {
    /// It answered NotLeader.
    pub(super) const NOT_LEADER: u8 = 1 << 0;
    /// It answered ServerIsBusy.
    pub(super) const SERVER_IS_BUSY: u8 = 1 << 1;
    /// It is the presumed leader but keeps refusing with ServerIsBusy: probe a follower.
    pub(super) const SUSPECT_NOT_LEADER: u8 = 1 << 2;
    /// A stale read on it answered DataIsNotReady: a follower may still serve a replica read.
    pub(super) const DATA_IS_NOT_READY: u8 = 1 << 3;
}

/// One TiKV peer of the region, as this request sees it. Its store is the region's
/// `stores()[peer_idx]`.
#[derive(Debug)]
pub(crate) struct Replica {
    /// Index into the region's peers.
    pub(crate) peer_idx: usize,
    pub(crate) peer: metapb::Peer,
    /// The store's failure epoch when the region last trusted it.
    epoch: u32,
    attempts: u32,
    attempted_time: Duration,
    flags: u8,
}

impl Replica {
    fn is_epoch_stale(&self, store: &Store) -> bool {
        self.epoch != store.epoch()
    }

    fn is_exhausted(&self, max_attempts: u32, max_time: Duration) -> bool {
        self.attempts >= max_attempts || (!max_time.is_zero() && self.attempted_time >= max_time)
    }

    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    /// The replica was named leader by TiKV: give it one more chance even if exhausted (each
    /// follower is still tried once, so this cannot loop).
    fn on_update_leader(&mut self) {
        if self.is_exhausted(MAX_REPLICA_ATTEMPTS, MAX_REPLICA_ATTEMPT_TIME) {
            self.attempts = MAX_REPLICA_ATTEMPTS - 1;
            self.attempted_time = Duration::ZERO;
        }
        self.flags &= !(flag::NOT_LEADER | flag::SUSPECT_NOT_LEADER);
    }

    /// Whether the presumed leader may take the next attempt (client-go `isLeaderCandidate`).
    fn is_leader_candidate(&self, store: &Store) -> bool {
        store.health().liveness() == LivenessState::Reachable
            && !self.is_exhausted(MAX_REPLICA_ATTEMPTS, MAX_REPLICA_ATTEMPT_TIME)
            && !self.has(flag::NOT_LEADER)
            && !self.is_epoch_stale(store)
    }
}

/// Everything about one attempt that may change between attempts (client-go `RPCContext`
/// plus the request fields `replicaSelector.next` rewrites): where it goes (the target replica,
/// and the replica that forwards to it), and how the target must serve it. The replicas' stores
/// are the selector's ([`ReplicaSelector::store`], [`ReplicaSelector::send_store`]). Built by
/// copy: nothing here allocates (the addresses are shared).
#[derive(Debug, Clone)]
pub(crate) struct AttemptContext {
    pub(crate) region: RegionVerId,
    /// Index of the target among the selector's replicas.
    pub(crate) target: usize,
    pub(crate) peer: metapb::Peer,
    pub(crate) addr: Arc<str>,
    /// The proxy's replica index and address, when the request is forwarded.
    pub(crate) proxy: Option<(usize, Arc<str>)>,
    /// `kvrpcpb.Context.replica_read`: a follower serves the read after a read index.
    pub(crate) replica_read: bool,
    /// `kvrpcpb.Context.stale_read`: the target serves the read from its own safe ts.
    pub(crate) stale_read: bool,
    /// `kvrpcpb.Context.busy_threshold_ms`: TiKV refuses with ServerIsBusy rather than queue
    /// the read for longer (0: no threshold).
    pub(crate) busy_threshold_ms: u32,
}

/// The read flags an attempt is sent with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ReadFlags {
    replica_read: bool,
    stale_read: bool,
}

/// The knobs of one run of the mixed strategy (client-go `ReplicaSelectMixedStrategy`).
struct Mixed<'a> {
    leader_idx: usize,
    /// The leader competes with the followers (client-go `tryLeader`, the Mixed read type).
    try_leader: bool,
    leader_only: bool,
    /// Only replicas estimated less busy than this; the leader is excluded (zero: no filter).
    busy_threshold: Duration,
    match_stores: &'a [u64],
    match_labels: &'a [(String, String)],
}

impl Mixed<'_> {
    /// A leader path's fallback: no preferences.
    fn leader_fallback(leader_idx: usize, leader_only: bool) -> Mixed<'static> {
        Mixed {
            leader_idx,
            try_leader: false,
            leader_only,
            busy_threshold: Duration::ZERO,
            match_stores: &[],
            match_labels: &[],
        }
    }

    /// Whether `store` is one the caller asked for (client-go `IsStoreMatch` and
    /// `IsLabelsMatch`; no preference matches every store).
    fn matches(&self, store: &Store) -> bool {
        (self.match_stores.is_empty() || self.match_stores.contains(&store.id()))
            && (self.match_labels.is_empty() || store.matches_labels(self.match_labels))
    }
}

impl AttemptContext {
    /// The replica the request is physically sent to: the proxy when forwarding.
    pub(crate) fn send_replica(&self) -> usize {
        self.proxy.as_ref().map_or(self.target, |(p, _)| *p)
    }

    /// The address the request is physically sent to.
    pub(crate) fn send_addr(&self) -> &Arc<str> {
        self.proxy.as_ref().map_or(&self.addr, |(_, a)| a)
    }
}

/// The store epochs of a region's TiKV peers when a selector was made (each replica's
/// `epoch`), kept inline until the replica list is built.
#[derive(Debug)]
struct EpochSnapshot {
    len: usize,
    epochs: [u32; INLINE_EPOCHS],
}

impl EpochSnapshot {
    fn get(&self, i: usize) -> Option<u32> {
        self.epochs[..self.len].get(i).copied()
    }
}

/// A backoff postponed by a fast retry on another replica (client-go `pendingBackoffs`): taken
/// when the request comes back to that store, or when no replica is left.
#[derive(Debug)]
struct PendingBackoff {
    store_id: u64,
    kind: BackoffKind,
    error: Error,
}

/// Picks replicas for one request to one region.
#[derive(Debug)]
pub(crate) struct ReplicaSelector {
    region: Arc<CachedRegion>,
    /// Empty until built (see the module docs); then one entry per TiKV peer.
    replicas: Vec<Replica>,
    built: bool,
    /// What the replicas are built from, taken when the selector was made.
    epochs: EpochSnapshot,
    /// The first attempt, sent by the fast path before the replica list was built: its
    /// replica and the time it took so far, booked on that replica when the list is built.
    fast_attempt: Option<(usize, Duration)>,
    /// Send through a follower when the leader's store is unreachable.
    enable_forwarding: bool,
    /// The request may only be served by the leader (never retried on a follower).
    leader_only: bool,
    /// How the request reads (always the leader for writes); its busy threshold is dropped
    /// when every replica is too busy.
    mode: ReadMode,
    /// The command only reads.
    is_read: bool,
    target: Option<usize>,
    proxy: Option<usize>,
    attempts: u32,
    /// Set by RegionNotFound from a follower: the region was invalidated for everyone else,
    /// but this request may still try the leader once.
    invalidated_for_retry: bool,
    leader_busy_count: u32,
    leader_busy_peer: u64,
    leader_busy_probed: bool,
    pending: Vec<PendingBackoff>,
}

impl ReplicaSelector {
    /// A selector over the cached region `region`, or `None` when the cache no longer holds a
    /// valid region at that version (the caller relocates).
    /// `opts` gives the read mode and the replica preferences; a write (`access`) always goes
    /// to the leader whatever they say.
    pub(crate) fn new(
        cache: &RegionCache,
        region: RegionVerId,
        enable_forwarding: bool,
        opts: &CallOptions,
        access: Access,
    ) -> Option<ReplicaSelector> {
        let cached = cache.cached_region(region)?;
        if !cache.is_region_valid(&cached) {
            return None;
        }
        let tikv_peers = cached.tikv_peer_indexes();
        let mut epochs = EpochSnapshot {
            len: tikv_peers.len().min(INLINE_EPOCHS),
            epochs: [0; INLINE_EPOCHS],
        };
        for (slot, &peer_idx) in epochs.epochs.iter_mut().zip(tikv_peers) {
            *slot = cached.store_epoch_at(peer_idx);
        }
        let mut selector = ReplicaSelector {
            region: cached,
            replicas: Vec::new(),
            built: false,
            epochs,
            fast_attempt: None,
            enable_forwarding,
            leader_only: opts.leader_only,
            mode: match access {
                Access::Read => opts.read,
                Access::Write => ReadMode::default(),
            },
            is_read: access == Access::Read,
            target: None,
            proxy: None,
            attempts: 0,
            invalidated_for_retry: false,
            leader_busy_count: 0,
            leader_busy_peer: 0,
            leader_busy_probed: false,
            pending: Vec::new(),
        };
        if selector.region.tikv_peer_indexes().len() > INLINE_EPOCHS {
            selector.build_replicas();
        }
        Some(selector)
    }

    /// Builds the replica list (once), booking a first attempt made by the fast path.
    fn build_replicas(&mut self) {
        if self.built {
            return;
        }
        self.built = true;
        let region = &self.region;
        let epochs = &self.epochs;
        self.replicas = region
            .tikv_peer_indexes()
            .iter()
            .enumerate()
            .map(|(i, &peer_idx)| Replica {
                peer_idx,
                peer: region.peers()[peer_idx],
                epoch: epochs
                    .get(i)
                    .unwrap_or_else(|| region.store_epoch_at(peer_idx)),
                attempts: 0,
                attempted_time: Duration::ZERO,
                flags: 0,
            })
            .collect();
        if let Some((target, took)) = self.fast_attempt.take()
            && let Some(t) = self.replicas.get_mut(target)
        {
            t.attempts = 1;
            t.attempted_time = took;
        }
    }

    /// The cached region this selector works on.
    pub(crate) fn region(&self) -> &Arc<CachedRegion> {
        &self.region
    }

    /// The index into the region's peers of replica `i`.
    pub(crate) fn peer_idx(&self, i: usize) -> usize {
        self.region.tikv_peer_indexes().get(i).copied().unwrap_or(0)
    }

    /// The store of replica `i` (an index a [`AttemptContext`] of this selector names).
    pub(crate) fn store(&self, i: usize) -> &Arc<Store> {
        &self.region.stores()[self.peer_idx(i)]
    }

    /// The store `route` is physically sent to: the proxy's when forwarding.
    pub(crate) fn send_store(&self, route: &AttemptContext) -> &Arc<Store> {
        self.store(route.send_replica())
    }

    fn leader_idx(&self) -> usize {
        self.region.leader_access_idx()
    }

    fn leader_peer_id(&self) -> u64 {
        self.region.leader_peer().map_or(0, |p| p.id)
    }

    /// Whether the request reads from the leader only (client-go `ReplicaReadLeader` without
    /// stale read): the leader path.
    fn is_leader_read(&self) -> bool {
        !self.mode.replica_read && !self.mode.stale_read
    }

    /// The rest of the request reads from the leader (client-go
    /// `SetReplicaReadType(ReplicaReadLeader)` on the selector and the request).
    fn switch_to_leader_read(&mut self) {
        self.mode.replica_read = false;
        self.mode.try_leader = false;
        self.mode.stale_read = false;
    }

    /// Picks the next replica and how it must serve the attempt (client-go
    /// `replicaSelector.next` + `buildRPCContext`). `None` means no replica is left for this
    /// region version: it has been invalidated where that is the right reaction, and the caller
    /// relocates the key. `opts` must be the options the selector was made with.
    pub(crate) async fn next(
        &mut self,
        cache: &RegionCache,
        opts: &CallOptions,
    ) -> crate::Result<Option<AttemptContext>> {
        if self.invalidated_for_retry {
            self.invalidated_for_retry = false;
        } else if !cache.is_region_valid(&self.region) {
            return Ok(None);
        }
        self.attempts += 1;
        self.target = None;
        self.proxy = None;
        let leader_read = self.is_leader_read();
        if leader_read
            && self.mode.busy_threshold_ms == 0
            && !self.built
            && self.attempts == 1
            && let Some(leader) = self.untouched_leader()
        {
            self.target = Some(leader);
            return self.build_fast_route(cache, leader).await;
        }
        self.build_replicas();
        let flags = if leader_read {
            self.pick_for_leader(cache.store_cache())
        } else {
            self.pick_for_replica_read(opts)
        };
        let Some(target) = self.target else {
            return Ok(None);
        };
        self.build_route(cache, target, self.proxy, flags).await
    }

    /// The presumed leader's replica index when the leader path would pick it, unproxied, for
    /// a first attempt: its store is reachable and has not failed since the selector was made
    /// (the other tests of `is_leader_candidate` hold for a replica not tried yet).
    fn untouched_leader(&self) -> Option<usize> {
        let leader = self.leader_idx();
        let peer_idx = *self.region.tikv_peer_indexes().get(leader)?;
        let store = self.region.stores().get(peer_idx)?;
        (store.health().liveness() == LivenessState::Reachable
            && self.epochs.get(leader) == Some(store.epoch()))
        .then_some(leader)
    }

    /// `build_route` for the fast path's leader, before the replica list exists.
    async fn build_fast_route(
        &mut self,
        cache: &RegionCache,
        target: usize,
    ) -> crate::Result<Option<AttemptContext>> {
        let peer_idx = self.peer_idx(target);
        let store = &self.region.stores()[peer_idx];
        if self.epochs.get(target) != Some(store.epoch()) {
            self.region.invalidate(InvalidReason::Other);
            return Ok(None);
        }
        let Some(addr) = cache
            .store_cache()
            .resolve(store)
            .await?
            .filter(|a| !a.is_empty())
        else {
            return Ok(None);
        };
        self.fast_attempt = Some((target, Duration::ZERO));
        Ok(Some(AttemptContext {
            region: self.region.ver_id(),
            target,
            peer: self.region.peers()[peer_idx],
            addr,
            proxy: None,
            replica_read: false,
            stale_read: false,
            busy_threshold_ms: 0,
        }))
    }

    /// The leader path (client-go `nextForReplicaReadLeader`): the leader when it is a
    /// candidate (through a proxy when its store is unreachable and forwarding is on),
    /// otherwise the best-scoring follower, which will answer NotLeader with a hint.
    /// With a busy threshold, a read whose leader is estimated busier than it goes to an idle
    /// follower as a replica read; when every follower is busy too, the threshold is dropped.
    fn pick_for_leader(&mut self, stores: &StoreCache) -> ReadFlags {
        let mut flags = ReadFlags::default();
        if self.enable_forwarding {
            match self.pick_leader_with_proxy(stores) {
                ProxyPick::Direct => {}
                ProxyPick::Proxied(target, proxy) => {
                    self.target = Some(target);
                    self.proxy = Some(proxy);
                    return flags;
                }
                ProxyPick::Nothing => return flags,
            }
        }
        let leader_idx = self.leader_idx();
        let threshold = Duration::from_millis(u64::from(self.mode.busy_threshold_ms));
        // (candidate, busy beyond the threshold)
        let leader_state = self.replicas.get(leader_idx).map(|leader| {
            let store = &self.region.stores()[leader.peer_idx];
            (
                leader.is_leader_candidate(store) && !leader.has(flag::SUSPECT_NOT_LEADER),
                !threshold.is_zero()
                    && self.is_read
                    && (store.health().estimated_wait() > threshold
                        || leader.has(flag::SERVER_IS_BUSY)),
            )
        });
        if let Some((true, busy)) = leader_state {
            self.target = Some(leader_idx);
            if busy {
                let idle = Mixed {
                    busy_threshold: threshold,
                    ..Mixed::leader_fallback(leader_idx, false)
                };
                match self.pick_mixed(&idle) {
                    Some(follower) => {
                        self.target = Some(follower);
                        flags.replica_read = true;
                    }
                    None => self.mode.busy_threshold_ms = 0,
                }
            }
            return flags;
        }
        self.target = self.pick_mixed(&Mixed::leader_fallback(leader_idx, self.leader_only));
        flags
    }

    /// Follower, mixed and stale reads (client-go `nextForReplicaReadMixed`). A stale read's
    /// second attempt goes to the leader as a normal read when the leader was not tried yet;
    /// after that, a replica that cannot serve the stale read serves a replica read.
    fn pick_for_replica_read(&mut self, opts: &CallOptions) -> ReadFlags {
        let leader_idx = self.leader_idx();
        if self.mode.stale_read
            && self.attempts == 2
            && let Some(leader) = self.replicas.get(leader_idx)
            && leader.is_leader_candidate(&self.region.stores()[leader.peer_idx])
            && !leader.has(flag::SUSPECT_NOT_LEADER)
            && !leader.is_exhausted(1, Duration::ZERO)
        {
            self.target = Some(leader_idx);
            return ReadFlags::default();
        }
        let mixed = Mixed {
            leader_idx,
            // Stale reads are mixed reads (client-go sets `ReplicaReadMixed` for them).
            try_leader: self.mode.try_leader || self.mode.stale_read,
            leader_only: self.leader_only,
            busy_threshold: Duration::ZERO,
            match_stores: &opts.match_stores,
            match_labels: &opts.match_labels,
        };
        self.target = self.pick_mixed(&mixed);
        let Some(target) = self.target else {
            return ReadFlags::default();
        };
        let is_leader = self.replicas[target].peer.id == self.leader_peer_id();
        if !self.mode.stale_read {
            return ReadFlags {
                replica_read: self.is_read && !is_leader,
                stale_read: false,
            };
        }
        let store = &self.region.stores()[self.replicas[target].peer_idx];
        let mut stale = true;
        if (self.attempts != 1 || (!mixed.matches(store) && !is_leader))
            && self.can_send_replica_read(leader_idx)
        {
            stale = false;
        }
        ReadFlags {
            replica_read: !stale,
            stale_read: stale,
        }
    }

    /// Whether a retried stale read may become a replica read (client-go
    /// `canSendReplicaRead`): only once the leader was tried and did not answer busy.
    fn can_send_replica_read(&self, leader_idx: usize) -> bool {
        self.replicas
            .get(leader_idx)
            .is_some_and(|l| l.attempts != 0 && !l.has(flag::SERVER_IS_BUSY))
    }

    /// Scores every candidate and takes the best, at random among equals (client-go
    /// `ReplicaSelectMixedStrategy.next`). When none is left, the region is invalidated, except
    /// when looking for an idle replica under a busy threshold.
    fn pick_mixed(&mut self, strategy: &Mixed<'_>) -> Option<usize> {
        // Score bits, most significant first.
        const NOT_ATTEMPTED: u8 = 1;
        const NORMAL_PEER: u8 = 1 << 1;
        const PREFER_LEADER: u8 = 1 << 2;
        const LABEL_MATCHES: u8 = 1 << 3;
        const NOT_SLOW: u8 = 1 << 4;
        let leader_idx = strategy.leader_idx;
        let mut best: Option<u8> = None;
        let mut best_idxs: Vec<usize> = Vec::with_capacity(self.replicas.len());
        let mut reload = false;
        let stores = self.region.stores();
        for (i, r) in self.replicas.iter().enumerate() {
            let store = &stores[r.peer_idx];
            let is_leader = i == leader_idx;
            let stale = r.is_epoch_stale(store);
            let liveness = store.health().liveness();
            if stale
                && (is_leader
                    || (liveness == LivenessState::Reachable
                        && store.resolve_state() == ResolveState::Resolved))
            {
                reload = true;
            }
            // A follower that was not ready for a stale read may still serve a replica read.
            let max_attempts = if r.has(flag::DATA_IS_NOT_READY) && !is_leader {
                2
            } else {
                1
            };
            if stale
                || liveness == LivenessState::Unreachable
                || r.is_exhausted(max_attempts, Duration::ZERO)
            {
                continue;
            }
            if strategy.leader_only && !is_leader {
                continue;
            }
            if !strategy.busy_threshold.is_zero()
                && (is_leader
                    || r.has(flag::SERVER_IS_BUSY)
                    || store.health().estimated_wait() > strategy.busy_threshold)
            {
                continue;
            }
            let mut score = 0u8;
            if strategy.matches(store) {
                score |= LABEL_MATCHES;
            }
            if !is_leader {
                score |= NORMAL_PEER;
            } else if strategy.try_leader {
                // With labels, the leader wins among replicas that match equally.
                score |= if strategy.match_labels.is_empty() {
                    NORMAL_PEER
                } else {
                    PREFER_LEADER
                };
            }
            if !store.health().is_slow() {
                score |= NOT_SLOW;
            }
            if r.attempts == 0 {
                score |= NOT_ATTEMPTED;
            }
            match best {
                Some(b) if score < b => {}
                Some(b) if score == b => best_idxs.push(i),
                _ => {
                    best = Some(score);
                    best_idxs.clear();
                    best_idxs.push(i);
                }
            }
        }
        if reload {
            self.region
                .set_flags(region_flags::NEED_DELAYED_RELOAD_PENDING);
        }
        match best_idxs.len() {
            0 => {}
            1 => return Some(best_idxs[0]),
            n => return Some(best_idxs[fastrand::usize(..n)]),
        }
        if !strategy.busy_threshold.is_zero() {
            // No idle replica: the caller keeps the leader; nothing is wrong with the region.
            return None;
        }
        // The leader was skipped only on suspicion; with nothing else to probe, use it again.
        if let Some(leader) = self.replicas.get_mut(leader_idx)
            && leader.has(flag::SUSPECT_NOT_LEADER)
        {
            leader.flags &= !flag::SUSPECT_NOT_LEADER;
            if leader.is_leader_candidate(&self.region.stores()[leader.peer_idx]) {
                return Some(leader_idx);
            }
        }
        self.region.invalidate(InvalidReason::Other);
        None
    }

    /// client-go `ReplicaSelectLeaderWithProxyStrategy`.
    fn pick_leader_with_proxy(&mut self, store_cache: &StoreCache) -> ProxyPick {
        let leader_idx = self.leader_idx();
        let stores = self.region.stores();
        let Some(leader) = self.replicas.get(leader_idx) else {
            return ProxyPick::Direct;
        };
        let leader_store = &stores[leader.peer_idx];
        if leader_store.health().liveness() == LivenessState::Reachable
            || leader.has(flag::NOT_LEADER)
        {
            return ProxyPick::Direct;
        }
        let candidate = |i: usize, r: &Replica| {
            let store = &stores[r.peer_idx];
            i != leader_idx
                && !r.is_exhausted(1, Duration::ZERO)
                && store.health().liveness() == LivenessState::Reachable
                && !r.is_epoch_stale(store)
        };
        if let Some(i) = self
            .replicas
            .iter()
            .enumerate()
            .position(|(i, r)| candidate(i, r))
        {
            return ProxyPick::Proxied(leader_idx, i);
        }
        // Every follower failed as a proxy: the leader's store is treated as failed, and the
        // region reloads on its next use.
        invalidate_replica_store(store_cache, leader_store, leader.epoch);
        self.region.set_flags(region_flags::NEED_RELOAD_ON_ACCESS);
        ProxyPick::Nothing
    }

    async fn build_route(
        &mut self,
        cache: &RegionCache,
        target: usize,
        proxy: Option<usize>,
        flags: ReadFlags,
    ) -> crate::Result<Option<AttemptContext>> {
        let region = self.region.clone();
        let store_of = |r: &Replica| &region.stores()[r.peer_idx];
        let stale = self.replicas[target].is_epoch_stale(store_of(&self.replicas[target]))
            || proxy.is_some_and(|p| self.replicas[p].is_epoch_stale(store_of(&self.replicas[p])));
        if stale {
            self.region.invalidate(InvalidReason::Other);
            return Ok(None);
        }
        let stores = cache.store_cache();
        let Some(addr) = stores
            .resolve(store_of(&self.replicas[target]))
            .await?
            .filter(|a| !a.is_empty())
        else {
            return Ok(None);
        };
        let proxy = match proxy {
            None => None,
            Some(p) => {
                let Some(paddr) = stores
                    .resolve(store_of(&self.replicas[p]))
                    .await?
                    .filter(|a| !a.is_empty())
                else {
                    return Ok(None);
                };
                self.replicas[p].attempts += 1;
                Some((p, paddr))
            }
        };
        let t = &mut self.replicas[target];
        t.attempts += 1;
        Ok(Some(AttemptContext {
            region: self.region.ver_id(),
            target,
            peer: t.peer,
            addr,
            proxy,
            replica_read: flags.replica_read,
            stale_read: flags.stale_read,
            busy_threshold_ms: self.mode.busy_threshold_ms,
        }))
    }

    /// Adds the time an attempt took to its replica's account.
    pub(crate) fn record_attempt_time(&mut self, took: Duration) {
        if let Some((_, fast)) = &mut self.fast_attempt {
            *fast += took;
            return;
        }
        if let Some(t) = self.target.and_then(|t| self.replicas.get_mut(t)) {
            t.attempted_time += took;
        }
    }

    /// TiKV answered NotLeader (client-go `onNotLeader`); with no leader named the caller
    /// backs off before the retry. A named leader that may take the next attempt takes the
    /// rest of the request as a leader read (a follower or stale read that reached a
    /// follower's NotLeader goes to the leader, not to another follower).
    pub(crate) fn on_not_leader(&mut self, leader: Option<&metapb::Peer>) {
        self.build_replicas();
        if let Some(t) = self.target.and_then(|t| self.replicas.get_mut(t)) {
            t.flags |= flag::NOT_LEADER;
        }
        let Some(leader) = leader else { return };
        if let Some(i) = self.update_leader(leader)
            && self.replicas[i]
                .is_leader_candidate(&self.region.stores()[self.replicas[i].peer_idx])
        {
            self.switch_to_leader_read();
        }
    }

    /// Points the region at the peer TiKV named leader (client-go `updateLeader`), returning
    /// its replica index. A leader the cached region does not know means the cached region is
    /// out of date: it is invalidated.
    fn update_leader(&mut self, leader: &metapb::Peer) -> Option<usize> {
        let Some(i) = self
            .replicas
            .iter()
            .position(|r| r.peer.id == leader.id && r.peer.store_id == leader.store_id)
        else {
            self.region.invalidate(InvalidReason::StoreNotFound);
            return None;
        };
        // Sending to an unreachable leader only times out; wait for the next election instead.
        let store = &self.region.stores()[self.replicas[i].peer_idx];
        if store.health().liveness() != LivenessState::Reachable {
            return Some(i);
        }
        self.replicas[i].on_update_leader();
        if !self.region.switch_leader_to_store(leader.store_id) {
            self.region.invalidate(InvalidReason::StoreNotFound);
        }
        Some(i)
    }

    /// TiKV answered RegionNotFound (client-go `onRegionNotFound`). The region is invalidated
    /// for everyone; this request may still try the leader once if it has not yet. Returns
    /// whether to retry.
    pub(crate) fn on_region_not_found(&mut self) -> bool {
        self.build_replicas();
        let leader_idx = self.leader_idx();
        let leader_untried = self
            .replicas
            .get(leader_idx)
            .is_some_and(|l| !l.is_exhausted(1, Duration::ZERO));
        // client-go's `InvalidateCachedRegion`, whose reason is `Other`.
        self.region.invalidate(InvalidReason::Other);
        if leader_untried {
            // The one retry goes to the leader, as a leader read: a follower may lack the
            // region too (split by the leader, not yet created on a lagging replica).
            self.switch_to_leader_read();
            self.mode.busy_threshold_ms = 0;
            self.invalidated_for_retry = true;
        }
        leader_untried
    }

    /// TiKV answered ServerIsBusy (client-go `onServerIsBusy`). Returns the backoff to take
    /// before the retry, or `None` when another replica can be tried at once (the backoff is
    /// then kept pending for the busy store).
    pub(crate) fn on_server_is_busy(
        &mut self,
        route: &AttemptContext,
        estimated_wait_ms: u32,
        error: Error,
    ) -> Option<(BackoffKind, Error)> {
        self.build_replicas();
        let region = self.region.clone();
        // The busy store is the target's, also when a proxy forwarded the request.
        let store = &region.stores()[self.peer_idx(route.target)];
        if estimated_wait_ms != 0 {
            store.health().update_estimated_wait(estimated_wait_ms);
            // A thresholded read avoids this replica from now on.
            if self.mode.busy_threshold_ms != 0
                && self.is_read
                && let Some(t) = self.target.and_then(|t| self.replicas.get_mut(t))
            {
                t.flags |= flag::SERVER_IS_BUSY;
            }
        } else {
            store.health().mark_slow();
            let leader_peer = self.leader_peer_id();
            let leader_read = self.is_leader_read();
            if let Some(t) = self.target.and_then(|t| self.replicas.get_mut(t))
                && t.peer.id == leader_peer
                && leader_read
                && !self.leader_only
                && !self.leader_busy_probed
            {
                if self.leader_busy_peer != leader_peer {
                    self.leader_busy_peer = leader_peer;
                    self.leader_busy_count = 0;
                }
                self.leader_busy_count += 1;
                if self.leader_busy_count >= LEADER_BUSY_PROBE_THRESHOLD {
                    t.flags |= flag::SUSPECT_NOT_LEADER;
                    self.leader_busy_probed = true;
                }
            }
        }
        if self.can_fast_retry() {
            self.pending.retain(|p| p.store_id != store.id());
            self.pending.push(PendingBackoff {
                store_id: store.id(),
                kind: BackoffKind::TikvServerBusy,
                error,
            });
            if let Some(t) = self.target.and_then(|t| self.replicas.get_mut(t)) {
                t.flags |= flag::SERVER_IS_BUSY;
            }
            return None;
        }
        Some((BackoffKind::TikvServerBusy, error))
    }

    /// Whether a busy answer may go straight to another replica (client-go `canFastRetry`):
    /// always for a replica or stale read, which any replica may serve; for a leader read only
    /// when the leader, which it must otherwise wait for, is out of the running.
    fn can_fast_retry(&self) -> bool {
        if !self.is_leader_read() {
            return true;
        }
        match self.replicas.get(self.leader_idx()) {
            Some(leader) => {
                !leader.is_leader_candidate(&self.region.stores()[leader.peer_idx])
                    || leader.has(flag::SERVER_IS_BUSY)
            }
            None => true,
        }
    }

    /// The backoff postponed for `store_id`, taken now that the request returns there
    /// (client-go `backoffOnRetry`).
    pub(crate) fn take_pending_backoff(&mut self, store_id: u64) -> Option<(BackoffKind, Error)> {
        let i = self.pending.iter().position(|p| p.store_id == store_id)?;
        let p = self.pending.swap_remove(i);
        Some((p.kind, p.error))
    }

    /// The largest postponed backoff, taken when no replica is left (client-go
    /// `backoffOnNoCandidate`).
    pub(crate) fn take_largest_pending_backoff(&mut self) -> Option<(BackoffKind, Error)> {
        let i = (0..self.pending.len()).max_by_key(|&i| self.pending[i].kind.schedule().base_ms)?;
        let p = self.pending.swap_remove(i);
        Some((p.kind, p.error))
    }

    /// A send failed and a liveness probe of the store it went to found `liveness` (client-go
    /// `onSendFailure`). Returns true when the failed store should be treated as failed: its
    /// epoch moves on, so every region on it reloads.
    pub(crate) fn on_send_failure(
        &mut self,
        stores: &StoreCache,
        route: &AttemptContext,
        liveness: LivenessState,
    ) -> bool {
        self.build_replicas();
        let failed = route.send_replica();
        let leader_peer = self.leader_peer_id();
        if self.is_leader_read()
            && route.proxy.is_none()
            && route.peer.id == leader_peer
            && liveness == LivenessState::Unreachable
            && self.replicas.len() > 1
            && self.enable_forwarding
        {
            // The next attempt goes to the leader through a follower.
            return false;
        }
        if liveness != LivenessState::Reachable {
            let r = &self.replicas[failed];
            return invalidate_replica_store(stores, &self.region.stores()[r.peer_idx], r.epoch);
        }
        false
    }

    /// A stale read found its replica behind (client-go `onDataIsNotReady`): that replica may
    /// still serve a replica read later, the next attempt reads normally.
    pub(crate) fn on_data_is_not_ready(&mut self) {
        self.build_replicas();
        if let Some(t) = self.target.and_then(|t| self.replicas.get_mut(t)) {
            t.flags |= flag::DATA_IS_NOT_READY;
        }
    }

    /// The attempt succeeded (client-go `onSendSuccess`): a follower that served a leader
    /// read (neither a replica nor a stale read) is the leader now.
    pub(crate) fn on_send_success(&mut self, route: &AttemptContext) {
        if !route.replica_read && !route.stale_read && route.peer.id != self.leader_peer_id() {
            self.region.switch_leader_to_store(route.peer.store_id);
        }
    }

    /// Drops the region from the cache (client-go `invalidateRegion`).
    pub(crate) fn invalidate_region(&self) {
        self.region.invalidate(InvalidReason::Other);
    }
}

enum ProxyPick {
    /// Send to the leader itself.
    Direct,
    /// Send to replica `.0` through replica `.1`.
    Proxied(usize, usize),
    /// No proxy left; the leader's store was marked failed.
    Nothing,
}

/// Moves a store's failure epoch on from `seen` (client-go `invalidateReplicaStore`): every
/// region that trusted the store at that epoch reloads before its next use. Returns whether
/// this call moved it (concurrent failures move it once). The store is also re-resolved with PD
/// soon, in case it moved.
fn invalidate_replica_store(stores: &StoreCache, store: &Store, seen: u32) -> bool {
    if store.bump_epoch_from(seen) {
        tracing::info!(
            store = store.id(),
            addr = %store.address(),
            "store failed; regions on it will be reloaded"
        );
        stores.mark_need_check(store);
        store.health().mark_slow();
        true
    } else {
        false
    }
}
