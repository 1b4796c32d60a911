//! One cached region: its identity ([`RegionVerId`]), key range, peers with their stores, the
//! current leader, buckets, and the atomics that make it expire, reload or switch leader without
//! taking a lock.
//!
//! Ports the `Region`/`regionStore` half of client-go `internal/locate/region_cache.go`
//! (`newRegion`, `checkRegionCacheTTL`, `invalidate`, sync flags, `switchWorkLeaderToPeer`,
//! `switchNextTiKVPeer`). client-go swaps a whole `regionStore` by compare-and-swap whenever the
//! leader changes; here each mutable field is its own atomic, and the immutable parts (peers,
//! stores) never change after construction.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use tikv_proto::metapb;

use super::location::Buckets;
use super::prefix::{Lcp, key_prefix};
use super::store::{Store, StoreType};
use crate::Key;

/// A region at one epoch: its id plus the two halves of its epoch.
///
/// The epoch's `conf_ver` grows on membership changes and `version` on splits and merges, so two
/// `RegionVerId`s with the same id tell which view of the region is newer. Requests carry it so
/// that TiKV can reject them (`EpochNotMatch`) once the region has changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct RegionVerId {
    id: u64,
    conf_ver: u64,
    version: u64,
}

impl RegionVerId {
    /// A region id with its epoch (client-go `NewRegionVerID`).
    pub const fn new(id: u64, conf_ver: u64, version: u64) -> RegionVerId {
        RegionVerId {
            id,
            conf_ver,
            version,
        }
    }

    /// The region id.
    pub const fn id(&self) -> u64 {
        self.id
    }

    /// The epoch's configuration version (membership changes).
    pub const fn conf_ver(&self) -> u64 {
        self.conf_ver
    }

    /// The epoch's version (splits and merges).
    pub const fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn from_meta(meta: &metapb::Region) -> RegionVerId {
        let epoch = meta.region_epoch.unwrap_or_default();
        RegionVerId::new(meta.id, epoch.conf_ver, epoch.version)
    }

    /// The epoch, for a request's context.
    pub(crate) fn epoch(&self) -> metapb::RegionEpoch {
        metapb::RegionEpoch {
            conf_ver: self.conf_ver,
            version: self.version,
        }
    }
}

impl fmt::Display for RegionVerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "region {} (conf_ver {}, version {})",
            self.id, self.conf_ver, self.version
        )
    }
}

/// Why a cached region was invalidated (client-go `InvalidReason`). The cache reacts to some
/// reasons: a region dropped for `NoLeader` is reloaded with the next peer as the presumed leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum InvalidReason {
    /// Still valid.
    Ok = 0,
    /// TiKV reported no leader.
    NoLeader = 1,
    /// The store has no peer of the region.
    RegionNotFound = 2,
    /// The region's epoch changed.
    EpochNotMatch = 3,
    /// The store is gone from PD, or the peer could not be found on it.
    StoreNotFound = 4,
    /// Anything else: a send failure, a store that failed for another region, a split seen
    /// elsewhere.
    Other = 5,
}

impl InvalidReason {
    fn from_u8(value: u8) -> InvalidReason {
        match value {
            0 => InvalidReason::Ok,
            1 => InvalidReason::NoLeader,
            2 => InvalidReason::RegionNotFound,
            3 => InvalidReason::EpochNotMatch,
            4 => InvalidReason::StoreNotFound,
            _ => InvalidReason::Other,
        }
    }
}

/// Lazy-reload flags (client-go `syncFlags`).
pub(crate) mod flags {
    /// Reload the region from PD on its next lookup (set after a send failure that asked for it).
    pub(crate) const NEED_RELOAD_ON_ACCESS: u32 = 1;
    /// Let the region expire at its TTL even if it keeps being used (it has down peers or a
    /// failed store, so PD's view should be fetched again eventually).
    pub(crate) const NEED_EXPIRE_AFTER_TTL: u32 = 1 << 1;
    /// The replica selector wants a reload once the background GC has seen the region.
    pub(crate) const NEED_DELAYED_RELOAD_PENDING: u32 = 1 << 2;
    /// The GC has seen a pending region: reload it on its next lookup.
    pub(crate) const NEED_DELAYED_RELOAD_READY: u32 = 1 << 3;
    /// The flags that make a lookup go to PD instead of answering from the cache.
    pub(crate) const RELOAD_ON_LOOKUP: u32 = NEED_RELOAD_ON_ACCESS | NEED_DELAYED_RELOAD_READY;
}

/// How long a region stays cached without use: `ttl` plus a random share of `jitter`, in
/// milliseconds of the cache's clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TtlPolicy {
    pub(crate) ttl_ms: u64,
    pub(crate) jitter_ms: u64,
}

/// The least time between two extensions of a region's TTL by its use, capped at the TTL.
///
/// A hit extends the deadline only once it comes within `ttl` of now, and an extension puts it
/// at least this much further, so a region in constant use has its slot written at most once
/// per interval instead of whenever the cache's clock moved (every miss moves it). A slot
/// written by one core and read by another on every hit moves between their caches. client-go
/// gets the same effect from a TTL kept in whole seconds.
pub(crate) const TTL_TOUCH_INTERVAL_MS: u64 = 1000;

impl TtlPolicy {
    /// The deadline of a region loaded at `now_ms`: `ttl` plus a random share of `jitter`
    /// ahead (client-go `nextTTL`), so that regions loaded together do not expire together.
    pub(crate) fn next_deadline(&self, now_ms: u64) -> u64 {
        let jitter = if self.jitter_ms > 0 {
            fastrand::u64(..self.jitter_ms)
        } else {
            0
        };
        now_ms.saturating_add(self.ttl_ms).saturating_add(jitter)
    }

    /// The deadline a use at `now_ms` extends the TTL to: between `ttl` plus the touch interval
    /// and `ttl` plus the jitter ahead (or exactly `ttl` plus the interval when the jitter is
    /// smaller). A region idle since its last use thus expires between `ttl` and
    /// `ttl + max(jitter, interval)` after it.
    pub(crate) fn extended_deadline(&self, now_ms: u64) -> u64 {
        let interval = TTL_TOUCH_INTERVAL_MS.min(self.ttl_ms);
        let ahead = if self.jitter_ms > interval {
            fastrand::u64(interval..self.jitter_ms)
        } else {
            interval
        };
        now_ms.saturating_add(self.ttl_ms).saturating_add(ahead)
    }
}

/// The part of a region's state that every cache hit reads: TTL deadline, lazy-reload flags,
/// invalid reason and whether it has buckets, packed in one atomic word.
///
/// It lives in a dense slab shared by every cache of the process instead of inside the
/// `CachedRegion` allocation. With 100k regions, the regions and their buffers spread over
/// tens of megabytes and a hit on a random one took a DRAM miss (about 130-190 ns on this
/// project's machine); the slab keeps 8 bytes per region packed together (800 kB for 100k),
/// and the index keeps a reference to each region's slot next to its search keys, so a hit
/// reads the slot without touching the region. Halving the slot from 16 to 8 bytes (and from
/// 32 to 16 before that) measurably sped up uniformly random hits: the whole working set of
/// a hit must stay in the CPU caches. Slots are recycled when their region is dropped; the
/// slab's chunks are never returned to the allocator (like a free list, its size is the peak
/// number of live regions times 8 bytes).
///
/// Layout of the word: bits 0-47 the deadline in milliseconds of the cache's clock (all ones:
/// never; 0 once invalidated), bits 48-55 the sync flags, bits 56-59 the invalid reason, bit
/// 60 whether the region has buckets.
#[derive(Debug)]
pub(crate) struct HotState(AtomicU64);

const DEADLINE_MASK: u64 = (1 << 48) - 1;
const FLAGS_SHIFT: u32 = 48;
const FLAGS_MASK: u64 = 0xFF << FLAGS_SHIFT;
const REASON_SHIFT: u32 = 56;
const REASON_MASK: u64 = 0xF << REASON_SHIFT;
const BUCKETS_BIT: u64 = 1 << 60;

/// Slots per chunk of the slab (8 KiB).
const SLAB_CHUNK: usize = 1024;

struct Slab {
    free: Vec<&'static HotState>,
    chunk: &'static [HotState],
}

static SLAB: Mutex<Slab> = Mutex::new(Slab {
    free: Vec::new(),
    chunk: &[],
});

/// The slot of index entries that hold no region (never written).
pub(crate) static VACANT_HOT_STATE: HotState = HotState(AtomicU64::new(0));

/// A deadline as stored: past the 48 bits (8900 years of milliseconds) means never.
fn pack_deadline(deadline: u64) -> u64 {
    deadline.min(DEADLINE_MASK)
}

fn unpack_deadline(word: u64) -> u64 {
    match word & DEADLINE_MASK {
        DEADLINE_MASK => u64::MAX,
        deadline => deadline,
    }
}

fn flag_bits(flags: u32) -> u64 {
    u64::from(flags & 0xFF) << FLAGS_SHIFT
}

impl HotState {
    fn alloc(ttl_deadline: u64, sync_flags: u32, has_buckets: bool) -> &'static HotState {
        let slot = {
            let mut slab = SLAB.lock().unwrap_or_else(PoisonError::into_inner);
            match slab.free.pop() {
                Some(slot) => slot,
                None => {
                    if slab.chunk.is_empty() {
                        let chunk: Box<[HotState]> = (0..SLAB_CHUNK)
                            .map(|_| HotState(AtomicU64::new(0)))
                            .collect();
                        slab.chunk = Box::leak(chunk);
                    }
                    let (slot, rest) = slab.chunk.split_at(1);
                    slab.chunk = rest;
                    &slot[0]
                }
            }
        };
        let buckets = if has_buckets { BUCKETS_BIT } else { 0 };
        // The region that owns the slot is published (through the index's `ArcSwap` or an
        // `Arc`) after this store, which orders it before any reader's loads.
        slot.0.store(
            pack_deadline(ttl_deadline) | flag_bits(sync_flags) | buckets,
            Ordering::Relaxed,
        );
        slot
    }

    /// Gives the slot back; its region is being dropped, so nothing reads it any more.
    fn release(slot: &'static HotState) {
        if std::ptr::eq(slot, &VACANT_HOT_STATE) {
            return;
        }
        SLAB.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .free
            .push(slot);
    }

    #[inline]
    fn load(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn sync_flags(&self) -> u32 {
        ((self.load() & FLAGS_MASK) >> FLAGS_SHIFT) as u32
    }

    fn set_flags(&self, flags: u32) {
        self.0.fetch_or(flag_bits(flags), Ordering::AcqRel);
    }

    fn take_flags(&self, flags: u32) -> u32 {
        if self.sync_flags() & flags == 0 {
            return 0;
        }
        let before = self.0.fetch_and(!flag_bits(flags), Ordering::AcqRel);
        ((before & FLAGS_MASK) >> FLAGS_SHIFT) as u32 & flags
    }

    fn invalid_reason(&self) -> InvalidReason {
        InvalidReason::from_u8(((self.load() & REASON_MASK) >> REASON_SHIFT) as u8)
    }

    /// Sets the reason and a zero deadline, unless a reason is set already.
    fn invalidate(&self, reason: InvalidReason) {
        let mut current = self.load();
        loop {
            if current & REASON_MASK != 0 {
                return;
            }
            let next =
                (current & !(REASON_MASK | DEADLINE_MASK)) | ((reason as u64) << REASON_SHIFT);
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    fn deadline(&self) -> u64 {
        unpack_deadline(self.load())
    }

    #[cfg(test)]
    fn set_deadline(&self, deadline: u64) {
        let mut current = self.load();
        loop {
            let next = (current & !DEADLINE_MASK) | pack_deadline(deadline);
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    #[inline]
    pub(crate) fn has_buckets(&self) -> bool {
        self.load() & BUCKETS_BIT != 0
    }

    fn set_has_buckets(&self, has: bool) {
        if has {
            self.0.fetch_or(BUCKETS_BIT, Ordering::AcqRel);
        } else {
            self.0.fetch_and(!BUCKETS_BIT, Ordering::AcqRel);
        }
    }

    /// Returns false if the TTL passed; otherwise extends it (see [`CachedRegion::check_ttl`]).
    #[inline]
    pub(crate) fn check_ttl(&self, now_ms: u64, policy: &TtlPolicy) -> bool {
        self.check(self.load(), now_ms, policy)
    }

    /// `check_ttl` from an already loaded word.
    #[inline]
    fn check(&self, mut current: u64, now_ms: u64, policy: &TtlPolicy) -> bool {
        loop {
            let deadline = unpack_deadline(current);
            if now_ms >= deadline {
                return false;
            }
            // Still `ttl` or more ahead: a use now is covered. `>=`: right after a load
            // without jitter the deadline is exactly now + ttl.
            if deadline >= now_ms.saturating_add(policy.ttl_ms)
                || current & flag_bits(flags::NEED_EXPIRE_AFTER_TTL) != 0
            {
                return true;
            }
            let next = (current & !DEADLINE_MASK) | pack_deadline(policy.extended_deadline(now_ms));
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// What a hit checks (client-go `isValid` minus the reload-on-access flags a hit also
    /// refuses): not flagged for reload on lookup, and TTL not passed (extended if due). One
    /// load of the word answers both.
    #[inline]
    pub(crate) fn usable(&self, now_ms: u64, policy: &TtlPolicy) -> bool {
        let current = self.load();
        current & flag_bits(flags::RELOAD_ON_LOOKUP) == 0 && self.check(current, now_ms, policy)
    }
}

impl Drop for CachedRegion {
    fn drop(&mut self) {
        HotState::release(self.hot);
    }
}

/// A region in the cache.
///
/// Everything but the leader position, the TTL, the flags, the invalid reason and the buckets is
/// fixed at construction; a new view of the region from PD is a new `CachedRegion` that replaces
/// this one in the index.
pub(crate) struct CachedRegion {
    ver_id: RegionVerId,
    start_key: Key,
    end_key: Key,
    /// The common prefix of the start and end keys: every key of the region has it.
    bounds_lcp: Lcp,
    /// The 16 bytes of the end key after `bounds_lcp`.
    end_prefix: u128,
    /// The peers requests may go to: PD's peers minus those on tombstone stores, down peers and
    /// witnesses that are not the leader.
    peers: Box<[metapb::Peer]>,
    /// The store of each peer, same order as `peers`.
    stores: Box<[Arc<Store>]>,
    /// Each store's failure epoch when this region was built (or its leader last switched to
    /// it). A store whose epoch moved on has failed since, so this view of the region is stale.
    store_epochs: Box<[AtomicU32]>,
    /// Indexes into `peers` of the TiKV peers, and of the TiFlash peers.
    tikv_peers: Box<[usize]>,
    tiflash_peers: Box<[usize]>,
    /// Index into `tikv_peers` of the peer believed to be the leader.
    work_tikv_idx: AtomicUsize,
    /// Index into `tiflash_peers` of the TiFlash peer in use.
    work_tiflash_idx: AtomicUsize,
    buckets: ArcSwapOption<Buckets>,
    /// PD's down and pending peers, for the logs (requests only need to know that there are
    /// down peers: see `NEED_EXPIRE_AFTER_TTL`; pending peers matter to TiFlash batch reads,
    /// not ported).
    down_peers: Box<[metapb::Peer]>,
    pending_peers: Box<[metapb::Peer]>,
    /// TTL, flags and invalid reason: the state every hit reads, kept apart (see [`HotState`]).
    hot: &'static HotState,
}

impl fmt::Debug for CachedRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedRegion")
            .field("ver_id", &self.ver_id)
            .field("start_key", &self.start_key)
            .field("end_key", &self.end_key)
            .field("peers", &self.peers)
            .field("leader_idx", &self.work_tikv_idx.load(Ordering::Relaxed))
            .field("tiflash_peers", &self.tiflash_peers)
            .field("down_peers", &self.down_peers)
            .field("pending_peers", &self.pending_peers)
            .field("invalid_reason", &self.invalid_reason())
            .finish_non_exhaustive()
    }
}

/// One peer a region keeps after filtering, with its store: what `CachedRegion::new` is built
/// from.
pub(crate) struct RegionPeer {
    pub(crate) peer: metapb::Peer,
    pub(crate) store: Arc<Store>,
}

/// The parts of a PD answer that a `CachedRegion` keeps besides its peers.
pub(crate) struct RegionParts {
    pub(crate) ver_id: RegionVerId,
    pub(crate) start_key: Bytes,
    pub(crate) end_key: Bytes,
    /// Index into the peers of the leader, if PD named one that survived filtering.
    pub(crate) leader: Option<usize>,
    pub(crate) buckets: Option<Arc<Buckets>>,
    pub(crate) down_peers: Vec<metapb::Peer>,
    pub(crate) pending_peers: Vec<metapb::Peer>,
}

impl CachedRegion {
    /// Builds a region; `peers` must not be empty (the caller reports "no available peers").
    pub(crate) fn new(
        parts: RegionParts,
        peers: Vec<RegionPeer>,
        ttl_deadline: u64,
    ) -> CachedRegion {
        // One allocation for both keys, detached from the PD response buffer that the decoded
        // `Bytes` point into: a cached key must not keep a whole gRPC message alive. Slicing
        // makes the buffer shared once here, so that lookups only bump a reference count.
        let (start_key, end_key) = {
            let mut buf = Vec::with_capacity(parts.start_key.len() + parts.end_key.len());
            buf.extend_from_slice(&parts.start_key);
            buf.extend_from_slice(&parts.end_key);
            let buf = Bytes::from(buf);
            let split = parts.start_key.len();
            (Key::from(buf.slice(..split)), Key::from(buf.slice(split..)))
        };
        let mut tikv_peers = Vec::with_capacity(peers.len());
        let mut tiflash_peers = Vec::new();
        let mut leader_access_idx = 0;
        let mut peer_metas = Vec::with_capacity(peers.len());
        let mut stores = Vec::with_capacity(peers.len());
        let mut store_epochs = Vec::with_capacity(peers.len());
        for (i, p) in peers.into_iter().enumerate() {
            match p.store.store_type() {
                StoreType::TiKv => {
                    if parts.leader == Some(i) {
                        leader_access_idx = tikv_peers.len();
                    }
                    tikv_peers.push(i);
                }
                StoreType::TiFlash | StoreType::TiFlashCompute => tiflash_peers.push(i),
            }
            store_epochs.push(AtomicU32::new(p.store.epoch()));
            peer_metas.push(p.peer);
            stores.push(p.store);
        }
        let sync_flags = if parts.down_peers.is_empty() {
            0
        } else {
            flags::NEED_EXPIRE_AFTER_TTL
        };
        let bounds_lcp = Lcp::of(start_key.as_bytes(), end_key.as_bytes());
        let has_buckets = parts.buckets.is_some();
        CachedRegion {
            ver_id: parts.ver_id,
            end_prefix: key_prefix(&end_key.as_bytes()[bounds_lcp.len..]),
            bounds_lcp,
            start_key,
            end_key,
            peers: peer_metas.into_boxed_slice(),
            stores: stores.into_boxed_slice(),
            store_epochs: store_epochs.into_boxed_slice(),
            tikv_peers: tikv_peers.into_boxed_slice(),
            tiflash_peers: tiflash_peers.into_boxed_slice(),
            work_tikv_idx: AtomicUsize::new(leader_access_idx),
            work_tiflash_idx: AtomicUsize::new(0),
            buckets: ArcSwapOption::new(parts.buckets),
            down_peers: parts.down_peers.into_boxed_slice(),
            pending_peers: parts.pending_peers.into_boxed_slice(),
            hot: HotState::alloc(ttl_deadline, sync_flags, has_buckets),
        }
    }

    pub(crate) fn ver_id(&self) -> RegionVerId {
        self.ver_id
    }

    pub(crate) fn id(&self) -> u64 {
        self.ver_id.id
    }

    pub(crate) fn start_key(&self) -> &Key {
        &self.start_key
    }

    pub(crate) fn end_key(&self) -> &Key {
        &self.end_key
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Whether `start <= key < end` (an empty end is unbounded).
    #[inline]
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        self.start_key.as_bytes() <= key && self.below_end(key)
    }

    /// Whether `key < end`, for a `key` at or after the start (the index found it there).
    ///
    /// Keys of the region share the prefix common to its start and end, so the comparison
    /// starts after it: comparing the first 16 bytes would tie for keys like TiDB's, whose
    /// first 15 bytes are the same across a table.
    #[inline]
    pub(crate) fn below_end(&self, key: &[u8]) -> bool {
        if self.end_key.is_empty() {
            return true;
        }
        match self.bounds_lcp.locate(key, || self.end_key.as_bytes()) {
            // Below the shared prefix is below the start; the caller rules that out.
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => {
                let p = key_prefix(&key[self.bounds_lcp.len..]);
                match p.cmp(&self.end_prefix) {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Greater => false,
                    std::cmp::Ordering::Equal => key < self.end_key.as_bytes(),
                }
            }
        }
    }

    /// Whether `start < key <= end`, where an empty `key` is the point at +inf that only a
    /// region with an unbounded end contains (client-go `ContainsByEnd`).
    pub(crate) fn contains_by_end(&self, key: &[u8]) -> bool {
        contains_by_end(self.start_key.as_bytes(), self.end_key.as_bytes(), key)
    }

    pub(crate) fn peers(&self) -> &[metapb::Peer] {
        &self.peers
    }

    pub(crate) fn stores(&self) -> &[Arc<Store>] {
        &self.stores
    }

    pub(crate) fn tikv_peer_indexes(&self) -> &[usize] {
        &self.tikv_peers
    }

    #[cfg(test)]
    pub(crate) fn tiflash_peer_indexes(&self) -> &[usize] {
        &self.tiflash_peers
    }

    #[cfg(test)]
    pub(crate) fn down_peers(&self) -> &[metapb::Peer] {
        &self.down_peers
    }

    #[cfg(test)]
    pub(crate) fn pending_peers(&self) -> &[metapb::Peer] {
        &self.pending_peers
    }

    pub(crate) fn buckets(&self) -> Option<Arc<Buckets>> {
        self.buckets.load_full()
    }

    pub(crate) fn set_buckets(&self, buckets: Option<Arc<Buckets>>) {
        // Set before storing, cleared after: a hit that sees the flag clear may skip the
        // buckets only when there are none (or they are being replaced right now).
        if buckets.is_some() {
            self.hot.set_has_buckets(true);
        }
        let clear = buckets.is_none();
        self.buckets.store(buckets);
        if clear {
            self.hot.set_has_buckets(false);
        }
    }

    /// The state a lookup reads, in the dense slab.
    #[inline]
    pub(crate) fn hot(&self) -> &'static HotState {
        self.hot
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn bucket_version(&self) -> u64 {
        self.buckets.load().as_ref().map_or(0, |b| b.version())
    }

    /// The access index (into the TiKV peers) of the presumed leader.
    pub(crate) fn leader_access_idx(&self) -> usize {
        self.work_tikv_idx.load(Ordering::Acquire)
    }

    pub(crate) fn set_leader_access_idx(&self, idx: usize) {
        if idx < self.tikv_peers.len() {
            self.work_tikv_idx.store(idx, Ordering::Release);
        }
    }

    pub(crate) fn tiflash_access_idx(&self) -> usize {
        self.work_tiflash_idx.load(Ordering::Acquire)
    }

    pub(crate) fn set_tiflash_access_idx(&self, idx: usize) {
        self.work_tiflash_idx.store(idx, Ordering::Release);
    }

    /// The index into `peers()` of the TiKV peer at `access_idx`.
    pub(crate) fn tikv_peer_index(&self, access_idx: usize) -> Option<usize> {
        self.tikv_peers.get(access_idx).copied()
    }

    /// The presumed leader: its index into `peers()`, or `None` when the region has no TiKV peer.
    pub(crate) fn leader_peer_index(&self) -> Option<usize> {
        self.tikv_peer_index(self.leader_access_idx())
    }

    /// The presumed leader peer (client-go `GetLeaderPeerID`/`GetLeaderStoreID`).
    pub(crate) fn leader_peer(&self) -> Option<&metapb::Peer> {
        self.leader_peer_index().map(|i| &self.peers[i])
    }

    /// The store of the presumed leader.
    #[cfg(test)]
    pub(crate) fn leader_store(&self) -> Option<&Arc<Store>> {
        self.leader_peer_index().map(|i| &self.stores[i])
    }

    /// The failure epoch of a peer's store when this region last trusted it.
    pub(crate) fn store_epoch_at(&self, peer_idx: usize) -> u32 {
        self.store_epochs
            .get(peer_idx)
            .map_or(0, |e| e.load(Ordering::Acquire))
    }

    /// Whether the store of a peer has failed since this view of the region was built.
    pub(crate) fn is_store_stale(&self, peer_idx: usize) -> bool {
        match self.stores.get(peer_idx) {
            Some(store) => store.epoch() != self.store_epoch_at(peer_idx),
            None => true,
        }
    }

    /// Whether any store of the region failed since this view was built.
    pub(crate) fn has_stale_store(&self) -> bool {
        (0..self.stores.len()).any(|i| self.is_store_stale(i))
    }

    /// Makes the peer on `store_id` the presumed leader (client-go `switchWorkLeaderToPeer`).
    /// Returns false when the region has no TiKV peer on that store, in which case this view of
    /// the region is out of date.
    pub(crate) fn switch_leader_to_store(&self, store_id: u64) -> bool {
        let Some(peer_idx) = self.peers.iter().position(|p| p.store_id == store_id) else {
            return false;
        };
        let Some(access_idx) = self.tikv_peers.iter().position(|&i| i == peer_idx) else {
            return false;
        };
        if self.work_tikv_idx.load(Ordering::Acquire) != access_idx {
            // Trust the store again: the new leader answered, so its earlier failure is over.
            self.store_epochs[peer_idx].store(self.stores[peer_idx].epoch(), Ordering::Release);
            self.work_tikv_idx.store(access_idx, Ordering::Release);
        }
        true
    }

    /// Moves the TiFlash peer in use to the one after `current`.
    #[cfg(test)]
    pub(crate) fn switch_to_next_tiflash_peer(&self, current: usize) {
        let n = self.tiflash_peers.len();
        if n > 0 {
            self.work_tiflash_idx
                .store((current + 1) % n, Ordering::Release);
        }
    }

    /// The first peer that can be elected leader (not a learner), for a region learned from a
    /// TiFlash store's `EpochNotMatch` (client-go `findElectableStoreID`).
    pub(crate) fn electable_store_id(&self) -> Option<u64> {
        self.peers
            .iter()
            .find(|p| p.role != metapb::PeerRole::Learner as i32)
            .map(|p| p.store_id)
    }

    pub(crate) fn sync_flags(&self) -> u32 {
        self.hot.sync_flags()
    }

    pub(crate) fn has_flags(&self, flags: u32) -> bool {
        self.hot.sync_flags() & flags != 0
    }

    pub(crate) fn set_flags(&self, flags: u32) {
        self.hot.set_flags(flags);
    }

    /// Clears `flags` and returns those of them that were set.
    pub(crate) fn take_flags(&self, flags: u32) -> u32 {
        self.hot.take_flags(flags)
    }

    pub(crate) fn invalid_reason(&self) -> InvalidReason {
        self.hot.invalid_reason()
    }

    /// Marks the region invalid: lookups stop answering from it and reload it from PD. The first
    /// reason sticks (client-go `invalidate`).
    pub(crate) fn invalidate(&self, reason: InvalidReason) {
        self.hot.invalidate(reason);
    }

    /// Whether the TTL passed, without extending it.
    pub(crate) fn is_ttl_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.hot.deadline()
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn ttl_deadline(&self) -> u64 {
        self.hot.deadline()
    }

    #[cfg(test)]
    pub(crate) fn set_ttl_deadline(&self, deadline: u64) {
        self.hot.set_deadline(deadline);
    }

    /// Returns false if the region's TTL passed; otherwise extends it, since the region is being
    /// used (client-go `checkRegionCacheTTL`).
    ///
    /// The extension is written only when the deadline comes within `ttl` of now, and moves it
    /// at least [`TTL_TOUCH_INTERVAL_MS`] further, so a region in constant use is written at
    /// most once per interval, not on every lookup. A region flagged `NEED_EXPIRE_AFTER_TTL` is
    /// never extended.
    #[inline]
    pub(crate) fn check_ttl(&self, now_ms: u64, policy: &TtlPolicy) -> bool {
        self.hot.check_ttl(now_ms, policy)
    }

    /// Whether lookups may answer from this region (client-go `isValid`).
    pub(crate) fn is_valid(&self, now_ms: u64, policy: &TtlPolicy) -> bool {
        !self.has_flags(flags::NEED_RELOAD_ON_ACCESS) && self.check_ttl(now_ms, policy)
    }
}

/// `start < key <= end`, with an empty `key` standing for +inf (client-go `ContainsByEnd`).
pub(crate) fn contains_by_end(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    if key.is_empty() {
        return end.is_empty();
    }
    start < key && (end.is_empty() || key <= end)
}

/// `start <= key < end`, an empty end being unbounded (client-go `contains`).
pub(crate) fn contains(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    start <= key && (end.is_empty() || key < end)
}
