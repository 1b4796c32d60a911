//! The ordered index of cached regions by start key, built for lock-free reads.
//!
//! The index is immutable once published: readers load the current snapshot (an `ArcSwap` in
//! the region cache) and search it without any lock. Writers clone the snapshot, change the
//! clone and publish it. Cloning is cheap because the index is two levels of
//! reference-counted chunks: a root of a few thousand leaves, each leaf holding up to
//! [`LEAF_CAP`] regions in key order. A change copies the root's vectors and the one or two
//! leaves it touches; every other leaf is shared with the previous snapshot.
//!
//! # Layout, and why
//!
//! A cache hit must answer from memory that stays in the CPU caches. On this project's machine
//! a dependent load costs about 20 ns while the touched data fits in 4 MB, and 100-190 ns
//! beyond 8 MB; 100k cached regions with their peers and key buffers take tens of megabytes.
//! The first version of this index compared 16-byte prefixes in its leaves but then read the
//! region object (TTL, flags) and bumped the reference count of the region's key buffer: two
//! dependent DRAM misses, about 0.5 us per uniformly random lookup. A hit now reads the root,
//! one leaf, and the region's 8-byte slot in the dense [`HotState`] slab, about 40 bytes per
//! region in all (4 MB for 100k):
//!
//! - Root: the 16 bytes after the root's common prefix (`Lcp`) of each leaf's first key, as
//!   `u128`, and a radix table over them ([`Radix`]) that narrows a search to one or two
//!   entries; a binary search here took a dozen dependent steps. Copying the root (and
//!   bumping, then dropping, the reference count of each of its 3,600 leaves at 100k regions)
//!   is most of the 60-70 us a write takes at that size. A root of chunks of 64 leaves, with
//!   one radix table over all of them, cut writes to about 10 us but cost 5-15 ns per hit (one
//!   more dependent load, a chunk, before the leaf), so the root stays flat.
//! - Leaf, first cache lines: the 8 bytes after the leaf's own common prefix of each start key,
//!   as `u64`, line-aligned. The search compares the first entry of each line first (loads
//!   that do not depend on each other, so the lines are fetched in parallel), then the entries
//!   of one line. TiDB keys (`t`, table id, `_r`, handle) share their first 15 bytes across a
//!   table, which is why prefixes are taken after a common prefix.
//! - Leaf, per entry: the region's `HotState` slot, its id and epoch, and where its keys are in
//!   the leaf's key arena. A hit returns its keys as slices of the arena, which bumps a
//!   reference count per leaf and per stripe of threads ([`KeyArena`]), not per region.
//! - A region's end is checked without reading it: if the next entry starts where it ends (a
//!   bit per entry), the search already proved the key below its end; the last entry's end is
//!   summarized in the leaf's header relative to the common prefix.
//!
//! Full keys (from the arena) are compared only when two prefixes tie, which takes keys that
//! share more than 8 bytes after the leaf's common prefix (16 after the root's). Leaves of 32
//! regions measured faster than 64 (fewer lines per search) and than 128.
//!
//! Ports client-go `internal/locate/sorted_btree.go` (`SortedRegions`: `SearchByKey`,
//! `AscendGreaterOrEqual`, `removeIntersecting`), with one fix: when a newer region is inserted,
//! client-go only removes the cached regions that *start* inside it, so an older region that
//! starts before it and overlaps it survives and keeps answering for part of its range; here
//! that region is removed too.

use std::cell::Cell;
use std::cmp::Ordering;
use std::sync::atomic::{self, AtomicUsize};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::prefix::{Lcp, key_prefix, key_prefix64};
use super::region::{CachedRegion, HotState, RegionVerId, VACANT_HOT_STATE};
use crate::Key;

/// Most regions in one leaf. Leaves split in half when full.
pub(crate) const LEAF_CAP: usize = 32;
/// Prefixes per 64-byte cache line.
const LINE: usize = 8;
const LINES: usize = LEAF_CAP / LINE;
/// Bits of a root prefix that pick its bucket in the root's radix table.
const RADIX_BITS: u32 = 12;
/// Most handles on a leaf's key buffer, each with its own reference count (see [`KeyArena`]).
const STRIPES: usize = 8;

/// A leaf's key buffer, with handles on it for the threads that slice keys out of it.
///
/// A `KeyLocation` owns its keys, so a hit bumps a reference count for each key and the
/// location drops it later. With one count per leaf, two threads hitting the same few hot
/// regions write the same cache line on every lookup, and it moves between their cores: two
/// threads on 1000 neighbouring regions did 1.5x one thread, and 1.8x once the keys were left
/// out. Each thread therefore slices from the handle of its stripe: up to
/// [`STRIPES`] handles, as many distinct counts as the machine has cores (the rest repeat
/// them), each in its own cache line. Copying the keys into fresh buffers instead costs an
/// allocation per key, and a count per region moves just as much between cores when the same
/// regions are hot on both.
#[derive(Clone, Default)]
struct KeyArena {
    handles: [Bytes; STRIPES],
}

/// A key buffer owned by one stripe's handles. `Bytes` keeps the count next to its owner, so
/// aligning the owner gives the count a cache line that no other stripe writes.
#[repr(align(64))]
struct StripeOwner(Bytes);

impl AsRef<[u8]> for StripeOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl KeyArena {
    fn new(keys: Vec<u8>) -> KeyArena {
        let keys = Bytes::from(keys);
        if keys.is_empty() {
            return KeyArena::default();
        }
        let counts = distinct_stripes();
        if counts == 1 {
            return KeyArena {
                handles: std::array::from_fn(|_| keys.clone()),
            };
        }
        let owned: Vec<Bytes> = (0..counts)
            .map(|_| Bytes::from_owner(StripeOwner(keys.clone())))
            .collect();
        KeyArena {
            handles: std::array::from_fn(|i| owned[i % counts].clone()),
        }
    }

    /// The keys, to compare against.
    #[inline]
    fn bytes(&self) -> &[u8] {
        &self.handles[0]
    }

    /// The handle the calling thread slices keys from.
    #[inline]
    fn handle(&self) -> &Bytes {
        &self.handles[stripe() % STRIPES]
    }
}

/// How many handles of a key arena have a count of their own: one per core, up to
/// [`STRIPES`].
fn distinct_stripes() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, STRIPES)
    })
}

/// The calling thread's stripe: threads are numbered in the order of their first lookup.
#[inline]
fn stripe() -> usize {
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE
        .try_with(|s| match s.get() {
            usize::MAX => assign_stripe(s),
            stripe => stripe,
        })
        .unwrap_or(0)
}

#[cold]
fn assign_stripe(slot: &Cell<usize>) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let stripe = NEXT.fetch_add(1, atomic::Ordering::Relaxed) % STRIPES;
    slot.set(stripe);
    stripe
}

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
    /// Each region's id and epoch (`conf_ver` in the high half, `version` in the low), or
    /// [`WIDE_EPOCH`] when they do not fit: then the region is asked.
    vers: [(u64, u64); LEAF_CAP],
    len: usize,
    lcp: Lcp,
    last_end: LastEnd,
    /// Bit `i`: region `i` ends where region `i + 1` starts.
    contiguous: u64,
    /// When every start and end key of the leaf has the same length (TiDB row keys of one
    /// table do), that length: key positions are then computed, not read from `offs`.
    stride: u32,
    /// The leaf's keys: each start key followed by its region's end key. A hit returns its
    /// keys as slices of it (see [`KeyArena`] for the reference counts that costs).
    arena: KeyArena,
    /// Entry `i`'s start key is `arena[offs[2i]..offs[2i+1]]`; its end key runs from
    /// `offs[2i+1]` to the next entry's start, or to the arena's end for the last entry.
    offs: [u32; 2 * LEAF_CAP],
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
            vers: [(0, WIDE_EPOCH); LEAF_CAP],
            len: 0,
            lcp: Lcp::default(),
            last_end: LastEnd::Unbounded,
            contiguous: 0,
            stride: 0,
            arena: KeyArena::default(),
            offs: [0; 2 * LEAF_CAP],
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

    /// Where entry `i`'s start key is in the arena.
    #[inline]
    fn start_range(&self, i: usize) -> std::ops::Range<usize> {
        if self.stride > 0 {
            let at = 2 * i * self.stride as usize;
            return at..at + self.stride as usize;
        }
        self.off(2 * i)..self.off(2 * i + 1)
    }

    /// Where entry `i`'s end key is in the arena.
    #[inline]
    fn end_range(&self, i: usize) -> std::ops::Range<usize> {
        if self.stride > 0 {
            let at = (2 * i + 1) * self.stride as usize;
            return at..at + self.stride as usize;
        }
        let end = if i + 1 >= self.len {
            self.arena.bytes().len()
        } else {
            self.off(2 * i + 2)
        };
        self.off(2 * i + 1)..end
    }

    /// Entry `i`'s start key, from the arena.
    #[inline]
    fn start_bytes(&self, i: usize) -> &[u8] {
        self.arena.bytes().get(self.start_range(i)).unwrap_or(&[])
    }

    #[inline]
    fn end_bytes(&self, i: usize) -> &[u8] {
        self.arena.bytes().get(self.end_range(i)).unwrap_or(&[])
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
        let mut arena = Vec::new();
        let mut offs = [0u32; 2 * LEAF_CAP];
        let mut contiguous = 0u64;
        for (i, region) in self.regions.iter().enumerate() {
            let s = region.start_key().as_bytes();
            let end = region.end_key().as_bytes();
            self.prefixes[i] = if i == 0 {
                0
            } else {
                key_prefix64(&s[self.lcp.len.min(s.len())..])
            };
            self.hot[i] = region.hot();
            self.vers[i] = pack_ver(region.ver_id());
            if self
                .regions
                .get(i + 1)
                .is_some_and(|next| next.start_key().as_bytes() == end)
            {
                contiguous |= 1 << i;
            }
            offs[2 * i] = arena_offset(arena.len());
            arena.extend_from_slice(s);
            offs[2 * i + 1] = arena_offset(arena.len());
            arena.extend_from_slice(end);
        }
        for i in n..LEAF_CAP {
            self.prefixes[i] = u64::MAX;
            self.hot[i] = &VACANT_HOT_STATE;
            self.vers[i] = (0, WIDE_EPOCH);
        }
        self.offs = offs;
        self.contiguous = contiguous;
        let stride = self.regions.first().map_or(0, |r| r.start_key().len());
        let regular = self
            .regions
            .iter()
            .all(|r| r.start_key().len() == stride && r.end_key().len() == stride);
        self.stride = if regular {
            u32::try_from(stride).unwrap_or(0)
        } else {
            0
        };
        self.arena = KeyArena::new(arena);
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
                let p = key_prefix64(&key[self.lcp.len..]);
                // Entry 0 holds 0: counted below any `p` but 0.
                let mut rank = 1 + count_below(&self.prefixes, p) - usize::from(p > 0);
                if rank < n && self.prefixes[rank] == p {
                    rank += self.ties_before(rank, p, key, inclusive);
                }
                rank
            }
        };
        Probe { rank, class }
    }

    /// How many entries from `from` on whose prefix is `p` (the key's) start before `key`:
    /// their full keys decide. Out of line, as it is rare.
    #[cold]
    #[inline(never)]
    fn ties_before(&self, from: usize, p: u64, key: &[u8], inclusive: bool) -> usize {
        let ties = self.prefixes[from..self.len]
            .iter()
            .take_while(|&&x| x == p)
            .count();
        TieRange(ties)
            .partition_point(|t| starts_before(self.start_bytes(from + t), key, inclusive))
    }

    /// Whether `key` is below the end of entry `i`, where an inclusive probe put it.
    #[inline]
    fn below_end(&self, i: usize, key: &[u8], class: Ordering) -> bool {
        if i + 1 < self.len {
            // A region that ends where the next one starts: the probe found `key` below that.
            return self.contiguous & (1 << (i % LEAF_CAP)) != 0 || key < self.end_bytes(i);
        }
        let end = || self.end_bytes(i);
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

/// The packed epoch of a region whose `conf_ver` or `version` passed `u32::MAX`.
const WIDE_EPOCH: u64 = u64::MAX;

/// A region's id and its epoch in one `u64`, for the leaf.
fn pack_ver(ver: RegionVerId) -> (u64, u64) {
    let epoch = match (u32::try_from(ver.conf_ver()), u32::try_from(ver.version())) {
        (Ok(conf_ver), Ok(version)) => (u64::from(conf_ver) << 32) | u64::from(version),
        _ => WIDE_EPOCH,
    };
    (ver.id(), epoch)
}

fn arena_offset(len: usize) -> u32 {
    // A leaf's keys would need to pass 4 GB; TiKV caps keys far below that.
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// How many of the sorted `prefixes` are below `p`.
///
/// Reads the first prefix of each cache line first: those loads do not depend on each other,
/// so the lines are fetched in parallel, and the second step searches one line already in the
/// L1 cache. A plain binary search would fetch its lines one after the other.
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

/// A radix table over the sorted root prefixes: the top [`RADIX_BITS`] bits below those that
/// all prefixes share pick a bucket, and the table says which prefixes fall in it. A root
/// search then compares a key with the one or two prefixes of its bucket instead of taking a
/// dozen dependent steps of binary search (most of the cost of a lookup whose data is in the
/// CPU caches). Skewed keys only make buckets uneven; a bucket is still searched in
/// logarithmic time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Radix {
    /// Leading bits every prefix shares (those of the first and last).
    shared_bits: u32,
    /// `starts[b]`: how many prefixes are in buckets below `b`; one more entry than buckets.
    starts: Vec<u32>,
}

impl Radix {
    fn build(prefixes: &[u128]) -> Radix {
        let (Some(&first), Some(&last)) = (prefixes.first(), prefixes.last()) else {
            return Radix::default();
        };
        let shared_bits = (first ^ last).leading_zeros().min(127);
        let mut radix = Radix {
            shared_bits,
            starts: Vec::with_capacity((1 << RADIX_BITS) + 1),
        };
        let mut i = 0;
        for bucket in 0..=(1usize << RADIX_BITS) {
            while i < prefixes.len() && radix.bucket(prefixes[i]) < bucket {
                i += 1;
            }
            radix.starts.push(u32::try_from(i).unwrap_or(u32::MAX));
        }
        radix
    }

    /// The bucket of a prefix between the first and last (inclusive).
    #[inline]
    fn bucket(&self, p: u128) -> usize {
        ((p << self.shared_bits) >> (128 - RADIX_BITS)) as usize
    }

    /// The part of `prefixes` (sorted, the ones the table was built from) that holds the
    /// first prefix not below `p`, or its end.
    #[inline]
    fn range(&self, prefixes: &[u128], p: u128) -> std::ops::Range<usize> {
        let (Some(&first), Some(&last)) = (prefixes.first(), prefixes.last()) else {
            return 0..0;
        };
        if p <= first {
            return 0..0;
        }
        if p > last {
            return prefixes.len()..prefixes.len();
        }
        // Between the first and last, `p` shares their leading bits.
        let b = self.bucket(p);
        let at = |i: usize| self.starts.get(i).map_or(prefixes.len(), |&s| s as usize);
        at(b)..at(b + 1).min(prefixes.len())
    }
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
        self.leaf.hot[self.slot % LEAF_CAP]
    }

    #[inline]
    pub(crate) fn ver_id(&self) -> RegionVerId {
        let (id, epoch) = self.leaf.vers[self.slot % LEAF_CAP];
        if epoch == WIDE_EPOCH {
            return self
                .region()
                .map_or_else(RegionVerId::default, |r| r.ver_id());
        }
        RegionVerId::new(id, epoch >> 32, epoch & u64::from(u32::MAX))
    }

    /// The start and end keys, sharing the leaf's key buffer.
    #[inline]
    pub(crate) fn keys(&self) -> (Key, Key) {
        let arena = self.leaf.arena.handle();
        (
            Key::from(arena.slice(self.leaf.start_range(self.slot))),
            Key::from(arena.slice(self.leaf.end_range(self.slot))),
        )
    }

    /// The start key, sharing the leaf's key buffer.
    #[cfg(test)]
    pub(crate) fn start_key(&self) -> Key {
        self.keys().0
    }

    /// The end key, sharing the leaf's key buffer.
    #[cfg(test)]
    pub(crate) fn end_key(&self) -> Key {
        self.keys().1
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
    /// The first region's start key (a lookup compares it first, without reading a leaf).
    first_key: Key,
    /// The 16 bytes after `lcp` of each leaf's first start key (the keys themselves are read
    /// from the leaves, only when two of these tie). Not keeping the keys here saves a writer
    /// one reference-count increment per leaf each time it copies the root.
    first_prefixes: Vec<u128>,
    /// Where to search `first_prefixes[1..]` (see [`Radix`]).
    radix: Radix,
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

    /// Leaf `li`'s first start key.
    #[inline]
    fn first_key_of(&self, li: usize) -> &[u8] {
        self.leaves.get(li).map_or(&[], |leaf| leaf.start_bytes(0))
    }

    /// Recomputes the root's common prefix and prefixes from the leaves' first keys. As in a
    /// leaf, the first entry is compared directly and left out of the common prefix.
    fn refresh_root(&mut self) {
        let n = self.leaves.len();
        self.lcp = if n >= 2 {
            Lcp::of(self.first_key_of(1), self.first_key_of(n - 1))
        } else {
            Lcp::default()
        };
        let lcp_len = self.lcp.len;
        self.first_prefixes = (0..n)
            .map(|i| {
                let k = self.first_key_of(i);
                if i == 0 {
                    0
                } else {
                    key_prefix(&k[lcp_len.min(k.len())..])
                }
            })
            .collect();
        self.update_root_entry(0);
    }

    /// Sets the root entry of leaf `li` from the leaf, keeping the root's prefix valid.
    fn update_root_entry(&mut self, li: usize) {
        if li == 0 {
            self.first_key = self
                .leaves
                .first()
                .and_then(|l| l.region(0))
                .map_or(Key::EMPTY, |r| r.start_key().clone());
            return;
        }
        // Another entry with the common prefix, to read it beyond its inline head.
        let other = if li == 1 { self.leaves.len() - 1 } else { 1 };
        let first = self.first_key_of(li);
        let shares = other != li && self.lcp.is_prefix_of(first, || self.first_key_of(other));
        if shares {
            self.first_prefixes[li] = key_prefix(&first[self.lcp.len..]);
        } else {
            self.refresh_root();
        }
    }

    /// Recomputes `radix` after a change of `first_prefixes`.
    fn rebuild_radix(&mut self) {
        self.radix = Radix::build(self.first_prefixes.get(1..).unwrap_or(&[]));
    }

    /// How many of `first_prefixes[1..]` are below `p`.
    #[inline]
    fn count_root_below(&self, p: u128) -> usize {
        let prefixes = self.first_prefixes.get(1..).unwrap_or(&[]);
        let range = self.radix.range(prefixes, p);
        let base = range.start;
        base + lower_bound(prefixes.get(range).unwrap_or(&[]), p)
    }

    /// The leaf holding the last region that starts before `key` (`inclusive`: at or before).
    #[inline]
    fn leaf_before(&self, key: &[u8], inclusive: bool) -> Option<usize> {
        let n = self.leaves.len();
        if n == 0 {
            return None;
        }
        // The first region usually starts at the empty key: no need to compare then.
        let after_first = if self.first_key.is_empty() {
            inclusive || !key.is_empty()
        } else {
            starts_before(self.first_key.as_bytes(), key, inclusive)
        };
        if !after_first {
            return None;
        }
        let leaves_before = if n == 1 {
            1
        } else {
            match self.lcp.locate(key, || self.first_key_of(1)) {
                Ordering::Less => 1,
                Ordering::Greater => n,
                Ordering::Equal => {
                    let p = key_prefix(&key[self.lcp.len..]);
                    let prefixes = &self.first_prefixes[1..];
                    let lo = self.count_root_below(p);
                    match count_ties(prefixes, lo, p) {
                        0 => 1 + lo,
                        ties => 1 + lo + self.root_ties_before(1 + lo, ties, key, inclusive),
                    }
                }
            }
        };
        leaves_before.checked_sub(1)
    }

    /// How many of the `ties` leaves from `from` on, whose prefixes equal the key's, start
    /// before `key`: their full first keys decide. Out of line, as it is rare.
    #[cold]
    #[inline(never)]
    fn root_ties_before(&self, from: usize, ties: usize, key: &[u8], inclusive: bool) -> usize {
        TieRange(ties)
            .partition_point(|i| starts_before(self.first_key_of(from + i), key, inclusive))
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
            self.first_prefixes.push(0);
        }
        // Into the leaf of the last region starting before it, or the first leaf.
        let (leaf_idx, slot) = match self.last_before(key, false) {
            Some((pos, _)) => (pos.leaf, pos.slot + 1),
            None => (0, 0),
        };
        let root_changes = slot == 0 || self.leaves[leaf_idx].len == LEAF_CAP;
        let (leaf_idx, slot) = if self.leaves[leaf_idx].len == LEAF_CAP {
            let leaf = Arc::make_mut(&mut self.leaves[leaf_idx]);
            let right = leaf.split_off_half();
            let left_len = leaf.len;
            self.leaves.insert(leaf_idx + 1, Arc::new(right));
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
        if root_changes {
            self.rebuild_radix();
        }
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
            if pos.leaf == 0 {
                self.update_root_entry(0);
            }
            self.first_prefixes.remove(pos.leaf);
            self.rebuild_radix();
        } else if pos.slot == 0 {
            self.update_root_entry(pos.leaf);
            self.rebuild_radix();
        }
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
            index.len += leaf.len;
            index.leaves.push(Arc::new(leaf));
        }
        let mut index = RegionIndex::default();
        let mut pending = Vec::with_capacity(LEAF_CAP);
        for region in regions {
            pending.push(region);
            if pending.len() == LEAF_CAP - LEAF_CAP / 8 {
                flush(&mut pending, &mut index);
            }
        }
        flush(&mut pending, &mut index);
        index.refresh_root();
        index.rebuild_radix();
        index
    }

    /// Checks the structure (tests only): regions sorted, no overlaps, and every derived field
    /// (prefixes, arena, offsets, slots, epochs, end summary) in step with the regions.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let mut count = 0;
        let mut prev: Option<&Arc<CachedRegion>> = None;
        assert_eq!(self.first_key.as_bytes(), self.first_key_of(0), "first key");
        assert_eq!(self.first_prefixes.len(), self.leaves.len());
        let mut rebuilt = self.clone();
        rebuilt.rebuild_radix();
        assert_eq!(rebuilt.radix, self.radix, "root radix table");
        for (li, leaf) in self.leaves.iter().enumerate() {
            assert!(leaf.len > 0, "empty leaf {li}");
            assert!(leaf.len <= LEAF_CAP);
            assert_eq!(leaf.len, leaf.regions.len());
            let first = leaf.region(0).expect("filled slot").start_key();
            if li > 0 {
                assert!(
                    self.lcp
                        .is_prefix_of(first.as_bytes(), || self.first_key_of(1))
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
            assert_eq!(rebuilt.arena.bytes(), leaf.arena.bytes(), "leaf {li} arena");
            let arena = leaf.arena.bytes();
            assert!(
                leaf.arena
                    .handles
                    .iter()
                    .all(|h| h.as_ptr() == arena.as_ptr() && h.len() == arena.len()),
                "leaf {li} arena handles"
            );
            assert_eq!(rebuilt.contiguous, leaf.contiguous, "leaf {li} contiguity");
            assert_eq!(rebuilt.stride, leaf.stride, "leaf {li} stride");
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
                assert_eq!(leaf.vers[i], pack_ver(r.ver_id()));
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

    /// How many leaves the index has (tests only).
    #[cfg(test)]
    pub(crate) fn leaf_count(&self) -> usize {
        self.leaves.len()
    }

    /// How many of this index's leaves are the very ones of `other` (tests only): what a write
    /// did not copy.
    #[cfg(test)]
    pub(crate) fn shared_leaves(&self, other: &RegionIndex) -> usize {
        let theirs: std::collections::HashSet<*const Leaf> =
            other.leaves.iter().map(Arc::as_ptr).collect();
        self.leaves
            .iter()
            .filter(|l| theirs.contains(&Arc::as_ptr(l)))
            .count()
    }
}
