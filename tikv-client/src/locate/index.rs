//! The ordered index of cached regions by start key, built for lock-free reads.
//!
//! The index is immutable once published: readers load the current snapshot (an `ArcSwap` in
//! the region cache) and search it without any lock or shared write. Writers clone the snapshot,
//! change the clone and publish it. Cloning is cheap because the index is two levels of
//! reference-counted chunks: a root of up to a few thousand leaves, each leaf holding up to
//! [`LEAF_CAP`] regions in key order. A change copies the root's vectors and the one or two
//! leaves it touches; every other leaf is shared with the previous snapshot.
//!
//! # Layout, and why
//!
//! A cache hit must answer from memory that stays in the CPU caches. On this project's machine
//! a dependent load costs about 20 ns while the touched data fits in 4 MB, and 100-190 ns
//! beyond 8 MB; 100k cached regions with their peers and key buffers take tens of megabytes.
//! The first version of this index compared 16-byte prefixes stored in the leaves but then read
//! the region object (TTL, flags) and bumped the reference count of its key buffer: two
//! dependent DRAM misses, about 0.5 us per uniformly random lookup. So a hit now reads only the
//! root, one leaf and one 16-byte slot of the dense [`HotState`] slab:
//!
//! - Root: for each leaf, the 16 bytes of its first key after the root's common prefix (`Lcp`)
//!   as a `u128`, searched by binary search (a few tens of kilobytes: in L1/L2).
//! - Leaf, first eight cache lines: the 8 bytes of each start key after the leaf's own common
//!   prefix, as `u64`, in one 64-byte aligned array. The search first compares the first entry
//!   of each line (eight independent loads, so the eight lines are fetched in parallel, not one
//!   after the other as a binary search would), then the eight entries of the chosen line.
//!   TiDB keys (`t`, table id, `_r`, handle) share their first 15 bytes across a table, which is
//!   why prefixes are taken after a common prefix.
//! - Leaf, after the prefixes: per entry its `HotState` slot, region id and epoch, and offsets
//!   into the leaf's key arena: one `Bytes` holding every start key (and each end key that is
//!   not the next start key). A hit returns its keys as slices of the arena: the reference count
//!   it bumps is one per leaf and stays in cache, where the region's own key buffer would not.
//! - A region's end is checked without reading it: if the next entry starts where it ends, the
//!   search already proved the key is below its end; the last entry's end is summarized in the
//!   leaf's header relative to the common prefix.
//!
//! Full keys (from the arena) are compared only when two prefixes tie, which takes keys that
//! share more than 8 bytes after the leaf's common prefix.
//!
//! Ports client-go `internal/locate/sorted_btree.go` (`SortedRegions`: `SearchByKey`,
//! `AscendGreaterOrEqual`, `removeIntersecting`), with one fix: when a newer region is inserted,
//! client-go only removes the cached regions that *start* inside it, so an older region that
//! starts before it and overlaps it survives and keeps answering for part of its range; here
//! that region is removed too.

use std::cmp::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::prefix::{Lcp, key_prefix, key_prefix64};
use super::region::{CachedRegion, HotState, RegionVerId, VACANT_HOT_STATE};
use crate::Key;

/// Most regions in one leaf. Leaves split in half when full.
pub(crate) const LEAF_CAP: usize = 64;
/// Prefixes per 64-byte cache line.
const LINE: usize = 8;
const LINES: usize = LEAF_CAP / LINE;
/// Root prefixes per summary entry (four cache lines of `u128`).
const ROOT_BLOCK: usize = 16;

/// Where the last region of a leaf ends, relative to the keys that have the leaf's common
/// prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LastEnd {
    /// No end: the last region of the key space.
    Unbounded,
    /// The end has the common prefix; these are the 8 bytes after it.
    Within(u64),
    /// The end sorts after every key with the common prefix.
    Above,
    /// The end sorts before every key with the common prefix (only possible when the leaf's
    /// one region is left out of the prefix).
    Below,
}

/// A leaf: up to [`LEAF_CAP`] regions in start-key order.
#[derive(Clone)]
#[repr(C, align(64))]
struct Leaf {
    /// The 8 bytes of each start key after `lcp`. Entry 0 is left out of the common prefix
    /// (often the empty key of the first region, it would shrink the prefix to nothing) and
    /// holds 0; unused entries hold `u64::MAX`. First, so that it is line-aligned.
    prefixes: [u64; LEAF_CAP],
    /// Each region's [`HotState`] slot; line-aligned too, like the prefixes.
    hot: [&'static HotState; LEAF_CAP],
    len: usize,
    lcp: Lcp,
    last_end: LastEnd,
    /// Start keys, each followed by its region's end key unless that is the next start key.
    arena: Bytes,
    /// Entry `i`'s start key is `arena[offs[2i]..offs[2i+1]]`; its end key, if stored, runs
    /// from `offs[2i+1]` to `offs[2i+2]`.
    offs: [u32; 2 * LEAF_CAP + 1],
    regions: Vec<Arc<CachedRegion>>,
}

/// Where a search ended in a leaf.
#[derive(Debug, Clone, Copy)]
struct Probe {
    /// How many of the leaf's regions start before the key.
    rank: usize,
    /// The key against the leaf's common prefix.
    class: Ordering,
}

impl Leaf {
    fn empty() -> Leaf {
        Leaf {
            prefixes: [u64::MAX; LEAF_CAP],
            hot: [&VACANT_HOT_STATE; LEAF_CAP],
            len: 0,
            lcp: Lcp::default(),
            last_end: LastEnd::Unbounded,
            arena: Bytes::new(),
            offs: [0; 2 * LEAF_CAP + 1],
            regions: Vec::new(),
        }
    }

    #[inline]
    fn region(&self, i: usize) -> Option<&Arc<CachedRegion>> {
        self.regions.get(i)
    }

    #[inline]
    fn off(&self, i: usize) -> usize {
        self.offs.get(i).map_or(0, |&o| o as usize)
    }

    /// Entry `i`'s start key, from the arena.
    #[inline]
    fn start_bytes(&self, i: usize) -> &[u8] {
        self.arena
            .get(self.off(2 * i)..self.off(2 * i + 1))
            .unwrap_or(&[])
    }

    /// Where entry `i`'s end key is in the arena.
    #[inline]
    fn end_range(&self, i: usize) -> std::ops::Range<usize> {
        let (a, b) = (self.off(2 * i + 1), self.off(2 * i + 2));
        if a == b && i + 1 < self.len {
            // Not stored: it is the next start key.
            b..self.off(2 * i + 3)
        } else {
            a..b
        }
    }

    #[inline]
    fn end_bytes(&self, i: usize) -> &[u8] {
        self.arena.get(self.end_range(i)).unwrap_or(&[])
    }

    /// Recomputes everything derived from `regions` after a change.
    fn rebuild(&mut self) {
        let n = self.regions.len();
        debug_assert!(n <= LEAF_CAP);
        self.len = n;
        let start = |i: usize| self.regions[i].start_key().as_bytes();
        self.lcp = if n >= 2 {
            Lcp::of(start(1), start(n - 1))
        } else {
            Lcp::default()
        };
        let mut arena = Vec::with_capacity(
            self.regions
                .iter()
                .map(|r| r.start_key().len() + r.end_key().len())
                .sum(),
        );
        let mut offs = [0u32; 2 * LEAF_CAP + 1];
        for (i, region) in self.regions.iter().enumerate() {
            let s = region.start_key().as_bytes();
            self.prefixes[i] = if i == 0 {
                0
            } else {
                key_prefix64(&s[self.lcp.len.min(s.len())..])
            };
            self.hot[i] = region.hot();
            offs[2 * i] = arena_offset(arena.len());
            arena.extend_from_slice(s);
            offs[2 * i + 1] = arena_offset(arena.len());
            let end = region.end_key().as_bytes();
            let next_start = self.regions.get(i + 1).map(|r| r.start_key().as_bytes());
            if next_start != Some(end) {
                arena.extend_from_slice(end);
            }
            offs[2 * i + 2] = arena_offset(arena.len());
        }
        for i in n..LEAF_CAP {
            self.prefixes[i] = u64::MAX;
            self.hot[i] = &VACANT_HOT_STATE;
        }
        self.offs = offs;
        self.arena = Bytes::from(arena);
        // Turn the arena into a shared buffer now rather than on a reader's first slice.
        drop(self.arena.clone());
        self.last_end = match n.checked_sub(1) {
            None => LastEnd::Unbounded,
            Some(last) => {
                let end = self.end_bytes(last);
                if end.is_empty() {
                    LastEnd::Unbounded
                } else {
                    match self.lcp.locate(end, || self.start_bytes(1)) {
                        Ordering::Less => LastEnd::Below,
                        Ordering::Greater => LastEnd::Above,
                        Ordering::Equal => LastEnd::Within(key_prefix64(&end[self.lcp.len..])),
                    }
                }
            }
        };
    }

    /// How many regions start before `key` (`inclusive`: at or before), for a `key` the root
    /// already found at or after this leaf's first region: the first entry is not compared
    /// again.
    #[inline]
    fn probe(&self, key: &[u8], inclusive: bool) -> Probe {
        let n = self.len;
        if n <= 1 {
            return Probe {
                rank: n,
                class: Ordering::Equal,
            };
        }
        let class = self.lcp.locate(key, || self.start_bytes(1));
        let rank = match class {
            Ordering::Less => 1,
            Ordering::Greater => n,
            Ordering::Equal => {
                // Load the first slot reference of every line now, while the prefixes load:
                // whichever entry the search ends on, its slot reference is then in the L1
                // cache and the slot itself is fetched right away, in parallel with the
                // entry's epoch and key offsets.
                for line in 0..LINES {
                    std::hint::black_box(self.hot[line * LINE]);
                }
                let p = key_prefix64(&key[self.lcp.len..]);
                // Entry 0 holds 0: counted below any `p` but 0.
                let mut rank = 1 + count_below(&self.prefixes, p) - usize::from(p > 0);
                if rank < n && self.prefixes[rank] == p {
                    let ties = self.prefixes[rank..n]
                        .iter()
                        .take_while(|&&x| x == p)
                        .count();
                    rank += TieRange(ties).partition_point(|t| {
                        starts_before(self.start_bytes(rank + t), key, inclusive)
                    });
                }
                rank
            }
        };
        Probe { rank, class }
    }

    /// Whether `key` is below the end of entry `i`, where an inclusive probe put it.
    #[inline]
    fn below_end(&self, i: usize, key: &[u8], class: Ordering) -> bool {
        let (a, b) = (self.off(2 * i + 1), self.off(2 * i + 2));
        if i + 1 < self.len {
            // The region ends where the next one starts, which the probe found above `key`.
            return a == b || self.arena.get(a..b).is_some_and(|end| key < end);
        }
        let end = || self.arena.get(a..b).unwrap_or(&[]);
        match self.last_end {
            LastEnd::Unbounded => true,
            LastEnd::Within(rel) => match class {
                Ordering::Less => true,
                Ordering::Greater => false,
                Ordering::Equal => match key_prefix64(&key[self.lcp.len..]).cmp(&rel) {
                    Ordering::Less => true,
                    Ordering::Greater => false,
                    Ordering::Equal => key < end(),
                },
            },
            LastEnd::Above => class != Ordering::Greater || key < end(),
            LastEnd::Below => class == Ordering::Less && key < end(),
        }
    }

    fn insert(&mut self, at: usize, region: Arc<CachedRegion>) {
        debug_assert!(self.regions.len() < LEAF_CAP);
        self.regions.insert(at, region);
        self.rebuild();
    }

    fn remove(&mut self, at: usize) -> Arc<CachedRegion> {
        let removed = self.regions.remove(at);
        self.rebuild();
        removed
    }

    /// Moves the upper half into a new leaf.
    fn split_off_half(&mut self) -> Leaf {
        let mut right = Leaf::empty();
        right.regions = self.regions.split_off(self.regions.len() / 2);
        self.rebuild();
        right.rebuild();
        right
    }
}

fn arena_offset(len: usize) -> u32 {
    // A leaf's keys would need to pass 4 GB; TiKV caps keys far below that.
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// How many of the sorted `prefixes` are below `p`.
///
/// Reads the first prefix of each cache line first: those eight loads do not depend on each
/// other, so the lines are fetched in parallel, and the second step searches one line already
/// in the L1 cache. A plain binary search would fetch up to four lines one after the other.
#[inline]
fn count_below(prefixes: &[u64; LEAF_CAP], p: u64) -> usize {
    let mut lines = 0;
    for line in 0..LINES {
        lines += usize::from(prefixes[line * LINE] < p);
    }
    if lines == 0 {
        return 0;
    }
    // The last entry below `p` is in line `lines - 1`, at or after its first entry.
    let mut last = (lines - 1) * LINE;
    let mut step = LINE / 2;
    while step > 0 {
        // Masked: the compiler then knows the index is in bounds.
        last += step * usize::from(prefixes[(last + step) % LEAF_CAP] < p);
        step /= 2;
    }
    last + 1
}

/// How many of the sorted `values` are below `p`: a binary search without data-dependent
/// branches (the comparison only picks the next base).
#[inline]
fn lower_bound(values: &[u128], p: u128) -> usize {
    let Some(mut base_value) = values.first() else {
        return 0;
    };
    let mut base = 0;
    let mut size = values.len();
    while size > 1 {
        let half = size / 2;
        let mid = base + half;
        let mid_value = &values[mid.min(values.len() - 1)];
        if *mid_value < p {
            base = mid;
            base_value = mid_value;
        }
        size -= half;
    }
    base + usize::from(*base_value < p)
}

/// A binary search over `0..n` with a predicate on the index: entries whose prefixes tie are
/// ordered by their full keys. Ties are rare, but keys with long common middles must not make
/// the search linear.
struct TieRange(usize);

impl TieRange {
    fn partition_point(&self, pred: impl Fn(usize) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.0);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(mid) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// How many prefixes from `lo` on equal `p` (the first one not below `p` is at `lo`). Almost
/// always 0 or 1: checked directly before searching.
#[inline]
fn count_ties(prefixes: &[u128], lo: usize, p: u128) -> usize {
    match prefixes.get(lo..) {
        Some([first, second, ..]) if *first == p && *second == p => {
            prefixes[lo..].partition_point(|&x| x == p)
        }
        Some([first, ..]) if *first == p => 1,
        _ => 0,
    }
}

#[inline]
fn starts_before(start: &[u8], key: &[u8], inclusive: bool) -> bool {
    if inclusive { start <= key } else { start < key }
}

/// A position in the index: leaf and slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    leaf: usize,
    slot: usize,
}

/// A cache hit found by [`RegionIndex::lookup`]: everything a `KeyLocation` needs, read from
/// the index without touching the region object.
#[derive(Clone, Copy)]
pub(crate) struct Hit<'a> {
    leaf: &'a Leaf,
    slot: usize,
}

impl<'a> Hit<'a> {
    /// The region's TTL, flags and bucket presence.
    #[inline]
    pub(crate) fn hot(&self) -> &'static HotState {
        self.leaf.hot[self.slot]
    }

    #[inline]
    pub(crate) fn ver_id(&self) -> RegionVerId {
        match self.hot().ver_id() {
            Some(ver) => ver,
            None => self
                .region()
                .map_or_else(RegionVerId::default, |r| r.ver_id()),
        }
    }

    /// The start key, sharing the leaf's key buffer.
    #[inline]
    pub(crate) fn start_key(&self) -> Key {
        let (a, b) = (
            self.leaf.off(2 * self.slot),
            self.leaf.off(2 * self.slot + 1),
        );
        Key::from(self.leaf.arena.slice(a..b))
    }

    /// The end key, sharing the leaf's key buffer.
    #[inline]
    pub(crate) fn end_key(&self) -> Key {
        Key::from(self.leaf.arena.slice(self.leaf.end_range(self.slot)))
    }

    /// The region object itself (for what the index does not copy: buckets).
    #[inline]
    pub(crate) fn region(&self) -> Option<&'a Arc<CachedRegion>> {
        self.leaf.region(self.slot)
    }
}

/// A snapshot of the cached regions ordered by start key; no two of them overlap.
#[derive(Clone, Default)]
pub(crate) struct RegionIndex {
    /// Common prefix of the leaves' first keys (a valid common prefix; it may be shorter than
    /// the longest one after removals).
    lcp: Lcp,
    /// First start key of each leaf.
    first_keys: Vec<Key>,
    /// The 16 bytes of each first key after `lcp`.
    first_prefixes: Vec<u128>,
    /// Every [`ROOT_BLOCK`]th of `first_prefixes[1..]`: a search goes through this small array
    /// (which stays in the L1 cache) and then one block, instead of a binary search whose last
    /// steps each wait for another line of the larger array.
    summary: Vec<u128>,
    leaves: Vec<Arc<Leaf>>,
    len: usize,
}

impl std::fmt::Debug for RegionIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionIndex")
            .field("regions", &self.len)
            .field("leaves", &self.leaves.len())
            .finish()
    }
}

/// Why an insert was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StaleRegion;

impl RegionIndex {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Recomputes the root's common prefix and prefixes from the first keys. As in a leaf,
    /// the first entry is compared directly and left out of the common prefix.
    fn refresh_root(&mut self) {
        self.lcp = match (self.first_keys.get(1), self.first_keys.last()) {
            (Some(second), Some(last)) => Lcp::of(second.as_bytes(), last.as_bytes()),
            _ => Lcp::default(),
        };
        let lcp_len = self.lcp.len;
        self.first_prefixes = self
            .first_keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                if i == 0 {
                    0
                } else {
                    key_prefix(&k.as_bytes()[lcp_len.min(k.len())..])
                }
            })
            .collect();
    }

    /// Sets the root entry of leaf `li` from the leaf, keeping the root's prefix valid.
    fn update_root_entry(&mut self, li: usize) {
        let Some(first) = self.leaves[li].region(0).map(|r| r.start_key().clone()) else {
            return;
        };
        if li == 0 {
            self.first_keys[0] = first;
            return;
        }
        // Another entry with the common prefix, to read it beyond its inline head.
        let other = if li == 1 {
            self.first_keys.len() - 1
        } else {
            1
        };
        let shares = other != li
            && self
                .lcp
                .is_prefix_of(first.as_bytes(), || self.first_keys[other].as_bytes());
        self.first_keys[li] = first;
        if shares {
            let k = self.first_keys[li].as_bytes();
            self.first_prefixes[li] = key_prefix(&k[self.lcp.len..]);
        } else {
            self.refresh_root();
        }
    }

    /// Recomputes `summary` after a change of `first_prefixes`.
    fn rebuild_summary(&mut self) {
        self.summary = self
            .first_prefixes
            .get(1..)
            .unwrap_or(&[])
            .iter()
            .step_by(ROOT_BLOCK)
            .copied()
            .collect();
    }

    /// How many of `first_prefixes[1..]` are below `p`.
    #[inline]
    fn count_root_below(&self, p: u128) -> usize {
        let prefixes = self.first_prefixes.get(1..).unwrap_or(&[]);
        let Some(block) = lower_bound(&self.summary, p).checked_sub(1) else {
            return 0;
        };
        let base = block * ROOT_BLOCK;
        let end = (base + ROOT_BLOCK).min(prefixes.len());
        base + lower_bound(prefixes.get(base..end).unwrap_or(&[]), p)
    }

    /// The leaf holding the last region that starts before `key` (`inclusive`: at or before).
    #[inline]
    fn leaf_before(&self, key: &[u8], inclusive: bool) -> Option<usize> {
        let first = self.first_keys.first()?;
        // The first region usually starts at the empty key: no need to compare then.
        let after_first = if first.is_empty() {
            inclusive || !key.is_empty()
        } else {
            starts_before(first.as_bytes(), key, inclusive)
        };
        if !after_first {
            return None;
        }
        let n = self.first_keys.len();
        let leaves_before = if n == 1 {
            1
        } else {
            match self.lcp.locate(key, || self.first_keys[1].as_bytes()) {
                Ordering::Less => 1,
                Ordering::Greater => n,
                Ordering::Equal => {
                    let p = key_prefix(&key[self.lcp.len..]);
                    let prefixes = &self.first_prefixes[1..];
                    let lo = self.count_root_below(p);
                    match count_ties(prefixes, lo, p) {
                        0 => 1 + lo,
                        ties => {
                            1 + lo
                                + TieRange(ties).partition_point(|i| {
                                    starts_before(
                                        self.first_keys[1 + lo + i].as_bytes(),
                                        key,
                                        inclusive,
                                    )
                                })
                        }
                    }
                }
            }
        };
        leaves_before.checked_sub(1)
    }

    /// The last region that starts before `key` (`inclusive`: at or before), with how the
    /// key compares to its leaf's common prefix.
    #[inline]
    fn last_before(&self, key: &[u8], inclusive: bool) -> Option<(Pos, Ordering)> {
        let leaf = self.leaf_before(key, inclusive)?;
        // The leaf's first region starts before `key`, so the rank is at least 1.
        let probe = self.leaves[leaf].probe(key, inclusive);
        let slot = probe.rank.checked_sub(1)?;
        Some((Pos { leaf, slot }, probe.class))
    }

    #[inline]
    fn at(&self, pos: Pos) -> Option<&Arc<CachedRegion>> {
        self.leaves.get(pos.leaf)?.region(pos.slot)
    }

    fn next_pos(&self, pos: Pos) -> Option<Pos> {
        if pos.slot + 1 < self.leaves[pos.leaf].len {
            Some(Pos {
                leaf: pos.leaf,
                slot: pos.slot + 1,
            })
        } else if pos.leaf + 1 < self.leaves.len() {
            Some(Pos {
                leaf: pos.leaf + 1,
                slot: 0,
            })
        } else {
            None
        }
    }

    fn first_pos(&self) -> Option<Pos> {
        (!self.leaves.is_empty()).then_some(Pos { leaf: 0, slot: 0 })
    }

    /// The region containing `key`, valid or not, as what a cache hit returns: reads the index
    /// and nothing else (the fast path of client-go `SearchByKey`).
    #[inline]
    pub(crate) fn lookup(&self, key: &[u8]) -> Option<Hit<'_>> {
        let (pos, class) = self.last_before(key, true)?;
        let leaf = self.leaves.get(pos.leaf)?;
        leaf.below_end(pos.slot, key, class).then_some(Hit {
            leaf,
            slot: pos.slot,
        })
    }

    /// The region containing `key`, valid or not (client-go `SearchByKey` with
    /// `isEndKey=false`).
    #[inline]
    pub(crate) fn search_by_key(&self, key: &[u8]) -> Option<&Arc<CachedRegion>> {
        self.lookup(key)?.region()
    }

    /// The region whose range `(start, end]` holds `key`: the region a range ending at `key`
    /// ends in. An empty `key` means +inf, found in the last region if it is unbounded.
    pub(crate) fn search_by_end_key(&self, key: &[u8]) -> Option<&Arc<CachedRegion>> {
        let region = if key.is_empty() {
            self.leaves.last()?.regions.last()?
        } else {
            self.at(self.last_before(key, false)?.0)?
        };
        region.contains_by_end(key).then_some(region)
    }

    /// Regions in key order from the first one starting at or after `start` (client-go
    /// `AscendGreaterOrEqual` without its checks, which the caller applies).
    pub(crate) fn iter_from(&self, start: &[u8]) -> impl Iterator<Item = &Arc<CachedRegion>> {
        let first = match self.last_before(start, false) {
            Some((pos, _)) => self.next_pos(pos),
            None => self.first_pos(),
        };
        std::iter::successors(first, |&pos| self.next_pos(pos)).filter_map(|pos| self.at(pos))
    }

    /// Every region, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<CachedRegion>> {
        self.leaves.iter().flat_map(|leaf| leaf.regions.iter())
    }

    /// The cached regions that overlap `region`'s range. Fails if one of them has a newer
    /// version than `region`: then `region` is the stale one.
    pub(crate) fn intersecting(
        &self,
        region: &CachedRegion,
    ) -> Result<Vec<Arc<CachedRegion>>, StaleRegion> {
        let start = region.start_key().as_bytes();
        let end = region.end_key().as_bytes();
        let version = region.ver_id().version();
        let mut found = Vec::new();
        // The region just before `start` overlaps when it reaches past `start`.
        if let Some(prev) = self
            .last_before(start, false)
            .and_then(|(pos, _)| self.at(pos))
            && prev.below_end(start)
        {
            found.push(prev.clone());
        }
        for other in self.iter_from(start) {
            if !end.is_empty() && other.start_key().as_bytes() >= end {
                break;
            }
            found.push(other.clone());
        }
        if found.iter().any(|o| o.ver_id().version() > version) {
            return Err(StaleRegion);
        }
        Ok(found)
    }

    /// Inserts a region whose start key is not in the index yet; the caller removed the regions
    /// it overlaps.
    pub(crate) fn insert(&mut self, region: Arc<CachedRegion>) {
        let key = region.start_key().as_bytes();
        if self.leaves.is_empty() {
            self.leaves.push(Arc::new(Leaf::empty()));
            self.first_keys.push(region.start_key().clone());
            self.first_prefixes.push(0);
        }
        // Into the leaf of the last region starting before it, or the first leaf.
        let (leaf_idx, slot) = match self.last_before(key, false) {
            Some((pos, _)) => (pos.leaf, pos.slot + 1),
            None => (0, 0),
        };
        let (leaf_idx, slot) = if self.leaves[leaf_idx].len == LEAF_CAP {
            let leaf = Arc::make_mut(&mut self.leaves[leaf_idx]);
            let right = leaf.split_off_half();
            let left_len = leaf.len;
            self.leaves.insert(leaf_idx + 1, Arc::new(right));
            self.first_keys.insert(leaf_idx + 1, Key::EMPTY);
            self.first_prefixes.insert(leaf_idx + 1, 0);
            self.update_root_entry(leaf_idx + 1);
            if slot > left_len {
                (leaf_idx + 1, slot - left_len)
            } else {
                (leaf_idx, slot)
            }
        } else {
            (leaf_idx, slot)
        };
        Arc::make_mut(&mut self.leaves[leaf_idx]).insert(slot, region);
        if slot == 0 {
            self.update_root_entry(leaf_idx);
        }
        self.rebuild_summary();
        self.len += 1;
    }

    /// Removes this exact region object; false if it is not in the index.
    pub(crate) fn remove(&mut self, region: &Arc<CachedRegion>) -> bool {
        let Some((pos, _)) = self.last_before(region.start_key().as_bytes(), true) else {
            return false;
        };
        if !self.at(pos).is_some_and(|r| Arc::ptr_eq(r, region)) {
            return false;
        }
        let leaf = Arc::make_mut(&mut self.leaves[pos.leaf]);
        leaf.remove(pos.slot);
        if leaf.len == 0 {
            self.leaves.remove(pos.leaf);
            self.first_keys.remove(pos.leaf);
            self.first_prefixes.remove(pos.leaf);
        } else if pos.slot == 0 {
            self.update_root_entry(pos.leaf);
        }
        self.rebuild_summary();
        self.len -= 1;
        true
    }

    /// An index of regions already sorted and disjoint, built leaf by leaf (preload, refresh,
    /// benchmarks): `insert` one by one would redo the root for every leaf.
    pub(crate) fn from_sorted(regions: impl IntoIterator<Item = Arc<CachedRegion>>) -> RegionIndex {
        fn flush(regions: &mut Vec<Arc<CachedRegion>>, index: &mut RegionIndex) {
            if regions.is_empty() {
                return;
            }
            let mut leaf = Leaf::empty();
            leaf.regions = std::mem::take(regions);
            leaf.rebuild();
            index.first_keys.push(leaf.regions[0].start_key().clone());
            index.len += leaf.len;
            index.leaves.push(Arc::new(leaf));
        }
        let mut index = RegionIndex::default();
        let mut pending = Vec::with_capacity(LEAF_CAP);
        for region in regions {
            pending.push(region);
            if pending.len() == LEAF_CAP * 3 / 4 {
                flush(&mut pending, &mut index);
            }
        }
        flush(&mut pending, &mut index);
        index.refresh_root();
        index.rebuild_summary();
        index
    }

    /// Checks the structure (tests only): regions sorted, no overlaps, and every derived field
    /// (prefixes, arena, offsets, slots, epochs, end summary) in step with the regions.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut count = 0;
        let mut prev: Option<&Arc<CachedRegion>> = None;
        assert_eq!(self.first_keys.len(), self.leaves.len());
        assert_eq!(self.first_prefixes.len(), self.leaves.len());
        let mut summary = self.clone();
        summary.rebuild_summary();
        assert_eq!(summary.summary, self.summary, "root summary");
        for (li, leaf) in self.leaves.iter().enumerate() {
            assert!(leaf.len > 0, "empty leaf {li}");
            assert!(leaf.len <= LEAF_CAP);
            assert_eq!(leaf.len, leaf.regions.len());
            let first = leaf.region(0).expect("filled slot").start_key();
            assert_eq!(&self.first_keys[li], first);
            if li > 0 {
                assert!(
                    self.lcp
                        .is_prefix_of(first.as_bytes(), || self.first_keys[1].as_bytes())
                );
                assert_eq!(
                    self.first_prefixes[li],
                    key_prefix(&first.as_bytes()[self.lcp.len..])
                );
            }
            let mut rebuilt = Leaf::empty();
            rebuilt.regions = leaf.regions.clone();
            rebuilt.rebuild();
            assert_eq!(rebuilt.prefixes, leaf.prefixes, "leaf {li} prefixes");
            assert_eq!(rebuilt.offs, leaf.offs, "leaf {li} offsets");
            assert_eq!(rebuilt.arena, leaf.arena, "leaf {li} arena");
            assert_eq!(rebuilt.last_end, leaf.last_end, "leaf {li} end");
            assert!(
                leaf.prefixes[1..leaf.len].is_sorted(),
                "leaf {li} prefixes unsorted"
            );
            assert!(leaf.prefixes[leaf.len..].iter().all(|&p| p == u64::MAX));
            for i in 0..leaf.len {
                let r = leaf.region(i).expect("filled slot");
                assert_eq!(leaf.start_bytes(i), r.start_key().as_bytes());
                assert_eq!(leaf.end_bytes(i), r.end_key().as_bytes());
                assert!(std::ptr::eq(leaf.hot[i], r.hot()));
                assert_eq!(leaf.hot[i].ver_id().unwrap_or(r.ver_id()), r.ver_id());
                if i > 0 {
                    assert!(
                        leaf.lcp
                            .is_prefix_of(r.start_key().as_bytes(), || leaf.start_bytes(1))
                    );
                }
                if let Some(p) = prev {
                    assert!(p.start_key() < r.start_key(), "unsorted");
                    assert!(
                        !p.end_key().is_empty() && p.end_key() <= r.start_key(),
                        "overlap: {:?} and {:?}",
                        p.ver_id(),
                        r.ver_id()
                    );
                }
                prev = Some(r);
                count += 1;
            }
        }
        assert_eq!(count, self.len);
    }
}
