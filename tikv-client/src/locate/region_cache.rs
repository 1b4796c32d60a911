//! [`RegionCache`]: answers "which region holds this key, and where is its leader" from memory,
//! asking PD only on a miss.
//!
//! Ports client-go `internal/locate/region_cache.go`: `LocateKey`, `TryLocateKey`,
//! `LocateEndKey`, `LocateRegionByID`, `LocateKeyRange`, `BatchLocateKeyRanges`,
//! `LoadRegionsInKeyRange`, `ListRegionIDsInKeyRange`, `GroupKeysByRegion`, `UpdateLeader`,
//! `InvalidateCachedRegionWithReason`, `OnSendFail`, `OnRegionEpochNotMatch`,
//! `OnBucketVersionNotMatch`, `UpdateBucketsIfNeeded`, `insertRegionToCache`, the loaders
//! (`loadRegion`, `loadRegionByID`, `batchScanRegions`), `refreshRegionIndex` and `gcRoundFunc`.
//!
//! # Concurrency
//!
//! - Reads take no lock. The index ([`RegionIndex`]) is an immutable snapshot behind an
//!   `ArcSwap`; a hit loads it, searches it, checks the region's TTL and flags in their 8-byte
//!   slot, and slices the two keys out of a buffer of the leaf through the calling thread's
//!   handle (its own reference count): it never reads the region object itself (see
//!   `index.rs` for why). Per-region state (TTL, flags, leader) is atomics, and a hit writes
//!   the TTL at most once a second per region. Measured on this project's 2-core machine
//!   against a `std::sync::RwLock<BTreeMap>` read lock and a sharded lock: with two threads
//!   hitting a few hot regions the `RwLock` did not scale at all (0.96x); the snapshot scaled
//!   1.65x while hits shared one reference count per leaf, 1.9-2x since.
//! - Writers (inserting what PD returned) serialize on a mutex, copy the snapshot's changed
//!   parts (the root's vectors, a leaf or two) and publish. Readers never wait for them.
//! - Misses are coalesced: concurrent lookups of the same key (or end key, or region id) share
//!   one PD call.
//! - The TTL clock is a millisecond counter advanced by the background task every second (and
//!   on every miss), so a hit does not read the system clock.
//!
//! `benchmarks/src/bin/region_cache.rs` measures hits on 100k regions (see
//! `docs/benchmarks.md`): about 50-85 ns when the touched part of the index is in the CPU
//! caches, about 155-185 ns for uniformly random keys on a quiet machine (0.45-0.5 us before
//! hits stopped reading the region object), and two threads do 1.5-1.95 times one.

use std::collections::HashMap;
#[cfg(any(test, feature = "unstable-internals"))]
use std::collections::HashSet;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tikv_proto::metapb;
use tokio::sync::OnceCell;
use tokio::task::AbortHandle;

use super::batch::{KeyRange, regions_have_gap_in_ranges};
#[cfg(any(test, feature = "unstable-internals"))]
use super::batch::{Merger, ranges_after_key};
use super::index::RegionIndex;
use super::location::{Buckets, KeyLocation};
use super::region::{
    CachedRegion, InvalidReason, RegionParts, RegionPeer, RegionVerId, TtlPolicy, flags,
};
#[cfg(any(test, feature = "unstable-internals"))]
use super::store::ResolveState;
use super::store::{Store, StoreCache, StoreInfo, StoreType};
use crate::config::Config;
use crate::error::{RegionError, RegionErrorKind};
#[cfg(any(test, feature = "unstable-internals"))]
use crate::pd::PdClient;
use crate::pd::{BoxFuture, RegionInfo, RegionSource};
use crate::{Error, Key, Result};

/// Regions asked of PD per batch scan (client-go `defaultRegionsPerBatch`).
const REGIONS_PER_BATCH: usize = 128;
#[cfg(any(test, feature = "unstable-internals"))]
/// Most ranges sent in one `BatchScanRegions`, to stay under gRPC's message limit.
const MAX_RANGES_PER_BATCH: usize = 16 * REGIONS_PER_BATCH;
/// Regions per page when loading the whole cluster (preload, periodic refresh).
const FULL_SCAN_PAGE: usize = 10_000;
/// How often the background task advances the clock and runs one GC round.
const TICK_INTERVAL: Duration = Duration::from_secs(1);
/// Regions one GC round looks at (client-go `cleanRegionNumPerRound`).
const GC_REGIONS_PER_ROUND: usize = 50;
/// Retries when PD answers but the answer is unusable (no region, a gap, no leader, a region
/// that does not hold the key): PD's view may be catching up with TiKV's heartbeats.
/// Transport errors are not retried here; the PD client has its own budget for them.
const PD_ANSWER_RETRIES: u32 = 4;
/// The first pause between those retries; it doubles each time (20+40+80+160 ms in all).
const PD_ANSWER_BACKOFF: Duration = Duration::from_millis(20);
/// A key above every key a region can start at in practice, used to find the last region.
const LAST_REGION_PROBE: [u8; 32] = [0xFF; 32];
/// Shards of the region-id map; lookups of different regions rarely share a lock.
const ID_SHARDS: usize = 16;

#[cfg(any(test, feature = "unstable-internals"))]
/// Options of [`RegionCache::batch_locate_key_ranges`] (client-go `BatchLocateKeyRangesOpt`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchLocateOptions {
    /// Ask PD for the buckets of the regions it loads (`WithNeedBuckets`).
    pub need_buckets: bool,
    /// Leave out regions PD reports without a leader (`WithNeedRegionHasLeaderPeer`).
    pub need_leader: bool,
}

#[cfg(any(test, feature = "unstable-internals"))]
impl BatchLocateOptions {
    #[cfg(feature = "unstable-internals")]
    /// Ask PD for buckets.
    pub fn with_buckets(mut self) -> Self {
        self.need_buckets = true;
        self
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Leave out regions without a leader.
    pub fn with_leader(mut self) -> Self {
        self.need_leader = true;
        self
    }
}

/// The cache's clock: milliseconds since the cache was created, read with one atomic load.
#[derive(Debug)]
struct Clock {
    base: tokio::time::Instant,
    now_ms: AtomicU64,
    /// Set when no background task advances the clock: then every read advances it.
    self_ticking: bool,
}

impl Clock {
    fn new(self_ticking: bool) -> Clock {
        Clock {
            base: tokio::time::Instant::now(),
            now_ms: AtomicU64::new(0),
            self_ticking,
        }
    }

    #[inline]
    fn now(&self) -> u64 {
        if self.self_ticking {
            self.tick()
        } else {
            self.now_ms.load(Ordering::Relaxed)
        }
    }

    fn tick(&self) -> u64 {
        let elapsed = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        // Written only when the millisecond moved on: a self-ticking clock is read on every
        // lookup, and a read-modify-write of a shared word per lookup would move its cache
        // line between the cores doing lookups.
        let current = self.now_ms.load(Ordering::Relaxed);
        if elapsed <= current {
            return current;
        }
        self.now_ms
            .fetch_max(elapsed, Ordering::Relaxed)
            .max(elapsed)
    }
}

type IdShard = RwLock<HashMap<u64, Arc<CachedRegion>>>;

/// The latest cached version of each region, by id.
struct IdMap {
    shards: Box<[IdShard]>,
}

impl IdMap {
    fn new() -> IdMap {
        IdMap {
            shards: (0..ID_SHARDS)
                .map(|_| RwLock::new(HashMap::new()))
                .collect(),
        }
    }

    fn shard(&self, id: u64) -> &IdShard {
        // Region ids are sequential: the low bits spread them evenly.
        &self.shards[(id as usize) % ID_SHARDS]
    }

    fn get(&self, id: u64) -> Option<Arc<CachedRegion>> {
        self.shard(id)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    fn insert(&self, region: Arc<CachedRegion>) {
        self.shard(region.id())
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(region.id(), region);
    }

    /// Removes `region` if it is still the cached version of its id.
    fn remove(&self, region: &Arc<CachedRegion>) {
        let mut shard = self
            .shard(region.id())
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if shard
            .get(&region.id())
            .is_some_and(|r| Arc::ptr_eq(r, region))
        {
            shard.remove(&region.id());
        }
    }

    fn clear(&self) {
        for shard in self.shards.iter() {
            shard
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// What a coalesced load looks up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FlightKey {
    Key(Bytes),
    EndKey(Bytes),
    #[cfg(any(test, feature = "unstable-internals"))]
    Id(u64),
}

type Flight = Arc<OnceCell<Result<Arc<CachedRegion>>>>;

/// Removes a finished (or abandoned) flight from the table when its last waiter leaves.
struct FlightGuard<'a> {
    flights: &'a Mutex<HashMap<FlightKey, Flight>>,
    key: &'a FlightKey,
    flight: &'a Flight,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        let ours = flights
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, self.flight));
        // While others still wait on an unfinished flight (its leader was cancelled, one of them
        // takes over), newcomers must join it rather than start a second PD call.
        if ours && (self.flight.initialized() || Arc::strong_count(self.flight) <= 2) {
            flights.remove(self.key);
        }
    }
}

/// The cache's state, shared with its background tasks.
struct Inner {
    source: Arc<dyn RegionSource>,
    stores: StoreCache,
    index: ArcSwap<RegionIndex>,
    /// Serializes writers of `index` and `by_id`; never held across an await.
    write_lock: Mutex<()>,
    by_id: IdMap,
    flights: Mutex<HashMap<FlightKey, Flight>>,
    clock: Clock,
    ttl: TtlPolicy,
    regions_refresh_interval: Duration,
    stores_refresh_interval: Duration,
    enable_preload: bool,
    /// Regions whose buckets are being reloaded in the background.
    #[cfg(any(test, feature = "unstable-internals"))]
    bucket_updates: Mutex<HashSet<u64>>,
    /// Where the next GC round starts.
    gc_cursor: Mutex<Key>,
    closed: AtomicBool,
}

/// The region cache: maps keys to regions, and regions to their leader's store, from memory.
///
/// Lookups answer from the cache when they can and ask PD otherwise; what PD returns is cached.
/// A region unused for the configured TTL (`tikv_client.region_cache_ttl`, plus a random part of
/// `region_cache_ttl_jitter`) is asked again on its next use. Concurrent misses on the same key
/// make one PD call.
///
/// The background tasks (store refresh, idle-region GC, optional preload and periodic full
/// refresh) stop when the cache is [closed](RegionCache::close) or dropped.
pub struct RegionCache {
    inner: Arc<Inner>,
    background: Mutex<Vec<AbortHandle>>,
}

impl fmt::Debug for RegionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegionCache")
            .field("regions", &self.inner.index.load().len())
            .field("stores", &self.inner.stores)
            .finish_non_exhaustive()
    }
}

impl Drop for RegionCache {
    fn drop(&mut self) {
        self.close();
    }
}

fn region_miss(region_id: Option<u64>, message: String) -> Error {
    Error::Region(Box::new(RegionError {
        region_id,
        kind: RegionErrorKind::RegionNotFound,
        message,
    }))
}

fn same_peer(a: &metapb::Peer, b: &metapb::Peer) -> bool {
    a.id == b.id && a.store_id == b.store_id
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A key for messages: printable bytes as text, others escaped.
fn show(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

impl RegionCache {
    /// A cache over `source`, configured by `config` (TTL, jitter, refresh intervals, preload).
    ///
    /// Called inside a tokio runtime, it starts the background tasks; outside one it has none
    /// (no refresh, no GC) and reads the clock on every lookup.
    pub(crate) fn new(source: Arc<dyn RegionSource>, config: &Config) -> RegionCache {
        let runtime = tokio::runtime::Handle::try_current().ok();
        RegionCache::build(source, config, runtime)
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// A cache that asks `pd` on misses, configured by `config` (TTL and jitter, refresh
    /// intervals, preload).
    ///
    /// Keys are in the form PD stores them: the cache does not encode them. With an API V2
    /// keyspace, pass keys already encoded for the keyspace (a client built for a keyspace does
    /// this itself).
    ///
    /// Call it inside a tokio runtime: the cache then starts its background tasks (store
    /// refresh, idle-region GC, preload and periodic refresh if configured), which stop when
    /// the cache is [closed](RegionCache::close) or dropped. Outside a runtime it has no
    /// background tasks and reads the clock on every lookup; lookups that miss still need a
    /// runtime to await PD.
    ///
    /// (Not compiled as a doctest: the PD client is crate-private; the benchmarks reach it as
    /// `tikv_client::unstable::PdClient`.)
    ///
    /// ```ignore
    /// # async fn example() -> tikv_client::Result<()> {
    /// use tikv_client::Config;
    /// use tikv_client::locate::RegionCache;
    /// use tikv_client::pd::PdClient;
    ///
    /// let config = Config::default();
    /// let pd = PdClient::connect(["127.0.0.1:2379"], &config).await?;
    /// let cache = RegionCache::from_pd(&pd, &config);
    /// let location = cache.locate_key(b"k1").await?;
    /// println!("k1 is in region {}", location.region_id());
    /// # Ok(()) }
    /// ```
    pub fn from_pd(pd: &PdClient, config: &Config) -> RegionCache {
        RegionCache::new(Arc::new(pd.clone()), config)
    }

    /// A cache without background tasks whose clock follows the runtime's (paused) time.
    #[cfg(test)]
    pub(crate) fn new_quiet(source: Arc<dyn RegionSource>, config: &Config) -> RegionCache {
        RegionCache::build(source, config, None)
    }

    fn build(
        source: Arc<dyn RegionSource>,
        config: &Config,
        runtime: Option<tokio::runtime::Handle>,
    ) -> RegionCache {
        let inner = Arc::new(Inner {
            stores: StoreCache::new(source.clone()),
            source,
            index: ArcSwap::from_pointee(RegionIndex::default()),
            write_lock: Mutex::new(()),
            by_id: IdMap::new(),
            flights: Mutex::new(HashMap::new()),
            clock: Clock::new(runtime.is_none()),
            ttl: TtlPolicy {
                ttl_ms: duration_ms(config.tikv_client.region_cache_ttl),
                jitter_ms: duration_ms(config.tikv_client.region_cache_ttl_jitter),
            },
            regions_refresh_interval: config.regions_refresh_interval,
            stores_refresh_interval: config.stores_refresh_interval,
            enable_preload: config.enable_preload,
            #[cfg(any(test, feature = "unstable-internals"))]
            bucket_updates: Mutex::new(HashSet::new()),
            gc_cursor: Mutex::new(Key::EMPTY),
            closed: AtomicBool::new(false),
        });
        let background = match runtime {
            Some(handle) => spawn_background(&handle, &inner),
            None => Vec::new(),
        };
        RegionCache {
            inner,
            background: Mutex::new(background),
        }
    }

    #[cfg(feature = "unstable-internals")]
    /// **Not API: for benchmarks only, may change or vanish in any release.**
    ///
    /// A cache preloaded with regions `[split_keys[i-1], split_keys[i])` (the first starting at
    /// the empty key, the last unbounded), each with one peer on store 1 at `127.0.0.1:1`. It
    /// has no PD: a miss fails. Its clock never advances, so nothing expires. `split_keys`
    /// must be sorted and distinct.
    #[doc(hidden)]
    pub fn new_for_benchmark(split_keys: Vec<Key>) -> RegionCache {
        let inner = Arc::new(Inner {
            stores: StoreCache::new(Arc::new(NoRegionSource)),
            source: Arc::new(NoRegionSource),
            index: ArcSwap::from_pointee(RegionIndex::default()),
            write_lock: Mutex::new(()),
            by_id: IdMap::new(),
            flights: Mutex::new(HashMap::new()),
            clock: Clock::new(false),
            ttl: TtlPolicy {
                ttl_ms: duration_ms(Duration::from_secs(600)),
                jitter_ms: 0,
            },
            regions_refresh_interval: Duration::ZERO,
            stores_refresh_interval: Duration::from_secs(60),
            enable_preload: false,
            #[cfg(any(test, feature = "unstable-internals"))]
            bucket_updates: Mutex::new(HashSet::new()),
            gc_cursor: Mutex::new(Key::EMPTY),
            closed: AtomicBool::new(false),
        });
        let store = inner.stores.put_resolved(&metapb::Store {
            id: 1,
            address: "127.0.0.1:1".to_owned(),
            ..Default::default()
        });
        let mut bounds = Vec::with_capacity(split_keys.len() + 2);
        bounds.push(Bytes::new());
        bounds.extend(split_keys.into_iter().map(Key::into_bytes));
        bounds.push(Bytes::new());
        let ttl = inner.ttl.next_deadline(0);
        let regions: Vec<_> = bounds
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let id = i as u64 + 1;
                let peer = metapb::Peer {
                    id: id + 1_000_000_000,
                    store_id: 1,
                    ..Default::default()
                };
                Arc::new(CachedRegion::new(
                    RegionParts {
                        ver_id: RegionVerId::new(id, 1, 1),
                        start_key: w[0].clone(),
                        end_key: w[1].clone(),
                        leader: Some(0),
                        buckets: None,
                        down_peers: Vec::new(),
                        pending_peers: Vec::new(),
                    },
                    vec![RegionPeer {
                        peer,
                        store: store.clone(),
                    }],
                    ttl,
                ))
            })
            .collect();
        inner.replace_all(&regions);
        RegionCache {
            inner,
            background: Mutex::new(Vec::new()),
        }
    }

    #[cfg(feature = "unstable-internals")]
    /// **Not API: for benchmarks only, may change or vanish in any release.**
    ///
    /// Splits the cached region holding `split_key` at that key, as two PD loads after a split
    /// would: the left half (the region's id, version + 1) is cached, then the right half (id
    /// `new_id`), each as one cache write. Returns false, changing nothing, if no cached region
    /// holds `split_key` strictly after its start.
    #[doc(hidden)]
    pub fn split_for_benchmark(&self, split_key: &[u8], new_id: u64) -> bool {
        let Some(old) = self.inner.index.load().search_by_key(split_key).cloned() else {
            return false;
        };
        if old.start_key().as_bytes() == split_key {
            return false;
        }
        let ver = old.ver_id();
        let half = |id: u64, start: &[u8], end: &[u8]| {
            let peers = old
                .peers()
                .iter()
                .zip(old.stores())
                .map(|(peer, store)| RegionPeer {
                    peer: *peer,
                    store: store.clone(),
                })
                .collect();
            Arc::new(CachedRegion::new(
                RegionParts {
                    ver_id: RegionVerId::new(id, ver.conf_ver(), ver.version() + 1),
                    start_key: Bytes::copy_from_slice(start),
                    end_key: Bytes::copy_from_slice(end),
                    leader: old.leader_peer_index(),
                    buckets: None,
                    down_peers: Vec::new(),
                    pending_peers: Vec::new(),
                },
                peers,
                old.ttl_deadline(),
            ))
        };
        let left = half(ver.id(), old.start_key().as_bytes(), split_key);
        let right = half(new_id, split_key, old.end_key().as_bytes());
        self.inner.insert_regions(&[left], true);
        self.inner.insert_regions(&[right], true);
        true
    }

    /// Stops the background tasks. Lookups still answer from the cache; those that need PD fail
    /// with [`Error::Closed`].
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        for task in lock(&self.background).drain(..) {
            task.abort();
        }
    }

    /// Whether [`close`](RegionCache::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The number of cached regions, valid or not.
    pub fn region_count(&self) -> usize {
        self.inner.index.load().len()
    }

    /// The region holding `key`, from the cache or else from PD (client-go `LocateKey`).
    ///
    /// The returned future looks the key up when first polled; a cached key is ready then.
    #[inline]
    pub fn locate_key<'a>(
        &'a self,
        key: &'a [u8],
    ) -> impl Future<Output = Result<KeyLocation>> + Send + 'a {
        LocateKey {
            inner: &self.inner,
            key,
            miss: None,
        }
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The region holding `key` if the cache has it and may answer for it, without asking PD
    /// (client-go `TryLocateKey`).
    #[inline]
    pub fn try_locate_key(&self, key: &[u8]) -> Option<KeyLocation> {
        self.inner.cached_location(key)
    }

    /// The region a range ending at `key` (exclusive) ends in: the one with
    /// `start < key <= end` (client-go `LocateEndKey`). An empty `key` means +inf: the last
    /// region.
    pub async fn locate_end_key(&self, key: &[u8]) -> Result<KeyLocation> {
        let region = self.inner.find_region_by_key(key, true).await?;
        Ok(KeyLocation::from_region(&region))
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The region with this id (client-go `LocateRegionByID`).
    pub async fn locate_region_by_id(&self, region_id: u64) -> Result<KeyLocation> {
        let region = self.inner.find_region_by_id(region_id).await?;
        Ok(KeyLocation::from_region(&region))
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Asks PD for the region with this id without touching the cache (client-go
    /// `LocateRegionByIDFromPD`), for diagnosing a cache that may be stale.
    pub async fn locate_region_by_id_from_pd(&self, region_id: u64) -> Result<KeyLocation> {
        let region = self.inner.load_region_by_id(region_id).await?;
        Ok(KeyLocation::from_region(&region))
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The regions covering `[start, end)`, in key order (client-go `LocateKeyRange`). An empty
    /// `end` is unbounded. Regions PD reports without a leader are left out.
    pub async fn locate_key_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<KeyLocation>> {
        let mut locations = Vec::new();
        let mut start = Bytes::copy_from_slice(start);
        loop {
            while let Some(region) = self.inner.try_find_region(&start, false) {
                locations.push(KeyLocation::from_region(&region));
                if region.contains_by_end(end) {
                    return Ok(locations);
                }
                start = region.end_key().clone().into_bytes();
            }
            let ranges = [(start.clone(), Bytes::copy_from_slice(end))];
            let (regions, scanned_to) = self
                .inner
                .batch_load_regions(&ranges, REGIONS_PER_BATCH, false, true)
                .await?;
            locations.extend(regions.iter().map(|r| KeyLocation::from_region(r)));
            // Progress by what PD scanned: the regions without a leader it skipped are behind.
            if scanned_to.is_empty() || (!end.is_empty() && scanned_to.as_ref() >= end) {
                return Ok(locations);
            }
            start = scanned_to;
        }
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The regions covering several ranges, in key order, each region once (client-go
    /// `BatchLocateKeyRanges`). Ranges are `(start, end)` with an empty end unbounded, sorted and
    /// not overlapping.
    ///
    /// What the cache holds contiguously is taken from it; the rest is loaded from PD with
    /// `BatchScanRegions` (at most 2048 ranges per call). An answer that leaves a gap in the
    /// asked ranges is retried; if PD keeps answering with a gap the call fails.
    pub async fn batch_locate_key_ranges(
        &self,
        ranges: &[(Key, Key)],
        options: BatchLocateOptions,
    ) -> Result<Vec<KeyLocation>> {
        check_sorted_ranges(ranges)?;
        self.inner.batch_locate(ranges, options).await
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Loads from PD every region in `[start, end)` and caches them (client-go
    /// `LoadRegionsInKeyRange`), whatever the cache holds.
    pub async fn load_regions_in_key_range(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> Result<Vec<KeyLocation>> {
        let mut locations = Vec::new();
        let mut start = Bytes::copy_from_slice(start);
        let end = Bytes::copy_from_slice(end);
        loop {
            let ranges = [(start.clone(), end.clone())];
            let (regions, scanned_to) = self
                .inner
                .batch_load_regions(&ranges, REGIONS_PER_BATCH, false, false)
                .await?;
            locations.extend(regions.iter().map(|r| KeyLocation::from_region(r)));
            if scanned_to.is_empty() || (!end.is_empty() && scanned_to >= end) {
                return Ok(locations);
            }
            start = scanned_to;
        }
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The ids of the regions holding `[start, end]` (client-go `ListRegionIDsInKeyRange`; note
    /// the inclusive end). An empty `end` runs to the last region.
    pub async fn list_region_ids_in_key_range(&self, start: &[u8], end: &[u8]) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        let mut key = Bytes::copy_from_slice(start);
        loop {
            let location = self.locate_key(&key).await?;
            ids.push(location.region_id());
            if location.end_key().is_empty() || (!end.is_empty() && location.contains(end)) {
                return Ok(ids);
            }
            key = location.end_key().clone().into_bytes();
        }
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Groups keys by the region holding them (client-go `GroupKeysByRegion`).
    ///
    /// Groups come in the order their first key appears, so the first group is the first key's
    /// region (the primary's, for a transaction); keys keep their input order within a group.
    /// The input need not be sorted; sorted input is fastest (one cache lookup per region).
    pub async fn group_keys_by_region<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<(KeyLocation, Vec<K>)>> {
        self.group_by_region(keys, |k| k.as_ref()).await
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Groups items by the region of the key each holds; see
    /// [`group_keys_by_region`](RegionCache::group_keys_by_region).
    pub(crate) async fn group_by_region<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        key_of: impl Fn(&T) -> &[u8],
    ) -> Result<Vec<(KeyLocation, Vec<T>)>> {
        let mut groups: Vec<(KeyLocation, Vec<T>)> = Vec::new();
        let mut by_region: HashMap<RegionVerId, usize> = HashMap::new();
        let mut last: Option<usize> = None;
        for item in items {
            if let Some(g) = last
                && groups[g].0.contains(key_of(&item))
            {
                groups[g].1.push(item);
                continue;
            }
            let location = self.locate_key(key_of(&item)).await?;
            let g = match by_region.get(&location.region()) {
                Some(&g) => g,
                None => {
                    by_region.insert(location.region(), groups.len());
                    groups.push((location, Vec::new()));
                    groups.len() - 1
                }
            };
            groups[g].1.push(item);
            last = Some(g);
        }
        Ok(groups)
    }

    /// What the client knows about every store it has seen.
    pub fn stores(&self) -> Vec<StoreInfo> {
        let mut stores: Vec<_> = self.inner.stores.all().iter().map(|s| s.info()).collect();
        stores.sort_by_key(|s| s.id);
        stores
    }

    /// The client's view of a store's health: its own slow score and the one TiKV last
    /// reported (client-go `Store.GetHealthStatus().GetHealthStatusDetail()`); `None` for a
    /// store the cache does not know.
    pub fn store_health(&self, store_id: u64) -> Option<super::StoreHealthDetail> {
        self.inner.stores.get(store_id).map(|s| s.health().detail())
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The resolved stores of one engine (client-go `GetStoresByType`).
    pub fn stores_by_type(&self, store_type: StoreType) -> Vec<StoreInfo> {
        self.stores()
            .into_iter()
            .filter(|s| s.store_type == store_type)
            .filter(|s| {
                self.inner
                    .stores
                    .get(s.id)
                    .is_some_and(|st| st.resolve_state() == ResolveState::Resolved)
            })
            .collect()
    }

    // ----- for the request sender -------------------------------------------------------------

    /// The store cache.
    pub(crate) fn store_cache(&self) -> &StoreCache {
        &self.inner.stores
    }

    /// The cached region at exactly this version (client-go `GetCachedRegionWithRLock`).
    pub(crate) fn cached_region(&self, region: RegionVerId) -> Option<Arc<CachedRegion>> {
        self.inner.cached_region(region)
    }

    /// Whether lookups may still answer from `region` (client-go `Region.isValid`): not
    /// invalidated, not flagged for reload, TTL not passed. A valid region's TTL is extended,
    /// since the caller is using it.
    pub(crate) fn is_region_valid(&self, region: &CachedRegion) -> bool {
        region.is_valid(self.inner.clock.now(), &self.inner.ttl)
    }

    /// Marks a cached region invalid, with the reason (client-go
    /// `InvalidateCachedRegionWithReason`). Its next lookup asks PD.
    pub(crate) fn invalidate_region(&self, region: RegionVerId, reason: InvalidReason) {
        if let Some(cached) = self.inner.cached_region(region) {
            cached.invalidate(reason);
        }
    }

    /// TiKV answered `EpochNotMatch` with its current view of the region(s) (client-go
    /// `OnRegionEpochNotMatch`). Caches `current` in place of the stale `region`, with
    /// `answered_by`, the store that answered, as leader. Returns true when TiKV's epoch is *behind* the cached one (TiKV
    /// has not applied the change yet): the caller should back off and retry as is.
    pub(crate) async fn on_region_epoch_not_match(
        &self,
        region: &CachedRegion,
        answered_by: &Store,
        current: &[metapb::Region],
    ) -> Result<bool> {
        let ver = region.ver_id();
        if current.is_empty() {
            self.invalidate_region(ver, InvalidReason::EpochNotMatch);
            return Ok(false);
        }
        for meta in current {
            let epoch = meta.region_epoch.unwrap_or_default();
            if meta.id == ver.id()
                && (epoch.conf_ver < ver.conf_ver() || epoch.version < ver.version())
            {
                tracing::info!(region = %ver, "region epoch is ahead of TiKV's");
                return Ok(true);
            }
        }
        let cached = self.inner.cached_region(ver);
        let buckets = cached.as_ref().and_then(|c| c.buckets());
        let mut regions = Vec::with_capacity(current.len());
        let mut still_current = false;
        for meta in current {
            let region = self
                .inner
                .build_region(meta.clone(), None, Vec::new(), Vec::new(), buckets.clone())
                .await?;
            let leader_store = if answered_by.store_type() == StoreType::TiKv {
                Some(answered_by.id())
            } else {
                region.electable_store_id()
            };
            if let Some(store_id) = leader_store {
                region.switch_leader_to_store(store_id);
            }
            still_current |= region.ver_id() == ver;
            regions.push(region);
        }
        if !still_current && let Some(cached) = cached {
            cached.invalidate(InvalidReason::EpochNotMatch);
        }
        self.inner.insert_regions(&regions, true);
        Ok(false)
    }

    /// TiKV rejected a request for stale buckets and sent its own (client-go
    /// `OnBucketVersionNotMatch`): keep them if they are newer.
    pub(crate) fn on_bucket_version_not_match(
        &self,
        region: RegionVerId,
        version: u64,
        keys: &[Bytes],
    ) {
        let Some(cached) = self.inner.cached_region(region) else {
            return;
        };
        if cached.buckets().is_none_or(|b| b.version() < version) {
            let keys = keys.iter().map(|k| Key::copy_from_slice(k)).collect();
            cached.set_buckets(Some(Arc::new(Buckets::new(version, keys))));
        }
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// A response said newer buckets exist (client-go `UpdateBucketsIfNeeded`): reload the
    /// region by id in the background, once at a time per region.
    ///
    /// For callers that read `latest_buckets_version` from TiKV's responses (coprocessor
    /// clients do): `request_version` is the bucket version the request was sent with (0 if
    /// none), `latest_version` the one TiKV reported. Nothing happens when the cached buckets
    /// are already that new, when the region is no longer cached, or outside a tokio runtime.
    pub fn update_buckets_if_needed(
        &self,
        region: RegionVerId,
        request_version: u64,
        latest_version: u64,
    ) {
        let Some(cached) = self.inner.cached_region(region) else {
            return;
        };
        let cached_version = cached.bucket_version();
        if request_version != 0 && request_version < cached_version {
            return;
        }
        if cached_version >= latest_version || self.is_closed() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !lock(&self.inner.bucket_updates).insert(region.id()) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let task = handle.spawn(async move {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            match inner.load_region_by_id(region.id()).await {
                Ok(loaded) => {
                    inner.insert_regions(&[loaded], true);
                }
                Err(err) => tracing::warn!(region = %region, %err, "reloading buckets failed"),
            }
            lock(&inner.bucket_updates).remove(&region.id());
        });
        // Not kept for `close`: it ends by itself after one PD call.
        drop(task);
    }

    #[cfg(test)]
    fn inner(&self) -> &Inner {
        &self.inner
    }
}

/// The future of [`RegionCache::locate_key`]: a hit answers on the first poll, from the cache
/// alone; a miss boxes the PD path and polls it.
///
/// Written by hand rather than as an `async fn`: the compiler's state machine for the same
/// code embedded the miss path's state and moved the location through it, which made a hit
/// cost 25-40 ns more than `try_locate_key`. This one is 40 bytes and its first poll is the
/// cache lookup.
struct LocateKey<'a> {
    inner: &'a Inner,
    key: &'a [u8],
    miss: Option<BoxFuture<'a, Result<Arc<CachedRegion>>>>,
}

impl Future for LocateKey<'_> {
    type Output = Result<KeyLocation>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.miss.is_none()
            && let Some(location) = this.inner.cached_location(this.key)
        {
            return Poll::Ready(Ok(location));
        }
        this.poll_miss(cx)
    }
}

impl LocateKey<'_> {
    /// The miss path, out of line so that the hit path stays small enough to inline into
    /// callers.
    #[cold]
    #[inline(never)]
    fn poll_miss(&mut self, cx: &mut Context<'_>) -> Poll<Result<KeyLocation>> {
        let (inner, key) = (self.inner, self.key);
        let miss = self
            .miss
            .get_or_insert_with(|| Box::pin(inner.find_region_by_key(key, false)));
        miss.as_mut()
            .poll(cx)
            .map(|r| r.map(|region| KeyLocation::from_region(&region)))
    }
}

// ----- test helpers ---------------------------------------------------------------------------
//
// The ported client-go cases that drive leader switches and send failures go through the
// production replica selector (`crate::request::selector`), as the sender does.

#[cfg(test)]
impl RegionCache {
    /// The region holding `key` as the cache object itself.
    pub(crate) async fn locate_region(&self, key: &[u8]) -> Result<Arc<CachedRegion>> {
        self.inner.find_region_by_key(key, false).await
    }
}

/// Which PD server may answer a region lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PdReplica {
    /// A PD follower too, when the PD client has follower handling (or the router) on: the
    /// first lookup of a miss, where a slightly old answer is caught by the epoch checks.
    Any,
    /// The PD leader only: retries, and reloads of a region known to be out of date.
    Leader,
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(any(test, feature = "unstable-internals"))]
fn check_sorted_ranges(ranges: &[(Key, Key)]) -> Result<()> {
    for (i, (start, end)) in ranges.iter().enumerate() {
        if !end.is_empty() && start >= end {
            return Err(Error::invalid_argument(format!(
                "range {i} is empty or reversed: start must be below end"
            )));
        }
        if let Some((_, prev_end)) = i.checked_sub(1).map(|p| &ranges[p])
            && (prev_end.is_empty() || prev_end > start)
        {
            return Err(Error::invalid_argument(format!(
                "ranges must be sorted and not overlap: range {i} starts before range {} ends",
                i - 1
            )));
        }
    }
    Ok(())
}

impl Inner {
    // ----- lookups ----------------------------------------------------------------------------

    /// The fast path of `locate_key`: no lock, no allocation, no PD, and no read of the region
    /// object or its key buffers (see `index.rs` for why that matters).
    #[inline]
    fn cached_location(&self, key: &[u8]) -> Option<KeyLocation> {
        let now = self.clock.now();
        let index = self.index.load();
        let hit = index.lookup(key)?;
        let hot = hit.hot();
        if !hot.usable(now, &self.ttl) {
            return None;
        }
        let buckets = if hot.has_buckets() {
            hit.region().and_then(|r| r.buckets())
        } else {
            None
        };
        let (start_key, end_key) = hit.keys();
        Some(KeyLocation::from_parts(
            hit.ver_id(),
            start_key,
            end_key,
            buckets,
        ))
    }

    /// The cached region for `key` (or end key) if lookups may answer from it (client-go
    /// `tryFindRegionByKey`).
    fn try_find_region(&self, key: &[u8], is_end: bool) -> Option<Arc<CachedRegion>> {
        let (region, expired) = self.search_cached(key, is_end);
        let region = region?;
        (!expired && !region.has_flags(flags::RELOAD_ON_LOOKUP)).then_some(region)
    }

    /// The cached region for `key`, and whether its TTL passed (client-go
    /// `searchCachedRegionByKey`).
    fn search_cached(&self, key: &[u8], is_end: bool) -> (Option<Arc<CachedRegion>>, bool) {
        let now = self.clock.now();
        let index = self.index.load();
        let found = if is_end {
            index.search_by_end_key(key)
        } else {
            index.search_by_key(key)
        };
        match found {
            Some(region) => (Some(region.clone()), !region.check_ttl(now, &self.ttl)),
            None => (None, false),
        }
    }

    fn cached_region(&self, ver: RegionVerId) -> Option<Arc<CachedRegion>> {
        self.by_id.get(ver.id()).filter(|r| r.ver_id() == ver)
    }

    /// client-go `findRegionByKey`.
    ///
    /// The PD paths are boxed here and in `find_region_by_id`: their futures take about 3 kB,
    /// which every caller's future (`locate_region`'s, the sender's) would otherwise embed,
    /// hits included. A miss waits for PD anyway.
    async fn find_region_by_key(&self, key: &[u8], is_end: bool) -> Result<Arc<CachedRegion>> {
        self.clock.tick();
        let (region, expired) = self.search_cached(key, is_end);
        let Some(region) = region.filter(|_| !expired) else {
            let flight = if is_end {
                FlightKey::EndKey(Bytes::copy_from_slice(key))
            } else {
                FlightKey::Key(Bytes::copy_from_slice(key))
            };
            return Box::pin(self.coalesced_load(flight)).await;
        };
        let reload = region.take_flags(flags::RELOAD_ON_LOOKUP);
        if reload == 0 {
            return Ok(region);
        }
        // Only the lookup that cleared the flags reloads; concurrent ones use the cached view.
        // A region reloaded by key, not by id, is sure to hold the key (client-go #1299). The
        // cached view is known to be out of date, so only the PD leader is asked.
        match Box::pin(self.load_region(key, is_end, PdReplica::Leader)).await {
            Ok(loaded) => {
                let replace_old = reload & flags::NEED_RELOAD_ON_ACCESS != 0;
                self.insert_regions(std::slice::from_ref(&loaded), replace_old);
                Ok(loaded)
            }
            Err(err) => {
                tracing::warn!(key = %show(key), %err, "reloading region failed; using the cached one");
                region.set_flags(flags::NEED_RELOAD_ON_ACCESS);
                Ok(region)
            }
        }
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// client-go `LocateRegionByID`.
    async fn find_region_by_id(&self, id: u64) -> Result<Arc<CachedRegion>> {
        self.clock.tick();
        let now = self.clock.now();
        let Some(region) = self.by_id.get(id).filter(|r| r.check_ttl(now, &self.ttl)) else {
            return Box::pin(self.coalesced_load(FlightKey::Id(id))).await;
        };
        let reload = region.take_flags(flags::RELOAD_ON_LOOKUP);
        if reload == 0 {
            return Ok(region);
        }
        match Box::pin(self.load_region_by_id(id)).await {
            Ok(loaded) => {
                let replace_old = reload & flags::NEED_RELOAD_ON_ACCESS != 0;
                self.insert_regions(std::slice::from_ref(&loaded), replace_old);
                Ok(loaded)
            }
            Err(err) => {
                tracing::warn!(region = id, %err, "reloading region failed; using the cached one");
                region.set_flags(flags::NEED_RELOAD_ON_ACCESS);
                Ok(region)
            }
        }
    }

    /// Loads a region from PD and caches it, sharing the PD call with every concurrent lookup
    /// of the same key (or end key, or id).
    async fn coalesced_load(&self, key: FlightKey) -> Result<Arc<CachedRegion>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let flight = lock(&self.flights).entry(key.clone()).or_default().clone();
        let _guard = FlightGuard {
            flights: &self.flights,
            key: &key,
            flight: &flight,
        };
        flight.get_or_init(|| self.fly(&key)).await.clone()
    }

    /// The body of a coalesced load.
    async fn fly(&self, key: &FlightKey) -> Result<Arc<CachedRegion>> {
        match key {
            FlightKey::Key(k) | FlightKey::EndKey(k) => {
                let is_end = matches!(key, FlightKey::EndKey(_));
                // A flight that just finished may have cached it after this lookup missed.
                if let Some(region) = self.try_find_region(k, is_end) {
                    return Ok(region);
                }
                let loaded = self.load_region(k, is_end, PdReplica::Any).await?;
                if self.insert_regions(std::slice::from_ref(&loaded), true)[0] {
                    return Ok(loaded);
                }
                // A newer view of an overlapping region is cached: PD's answer was stale (a
                // follower lagging, or a reply overtaken by a later one). Ask the leader once.
                let loaded = self.load_region(k, is_end, PdReplica::Leader).await?;
                self.insert_regions(std::slice::from_ref(&loaded), true);
                Ok(loaded)
            }
            #[cfg(any(test, feature = "unstable-internals"))]
            FlightKey::Id(id) => {
                let now = self.clock.now();
                if let Some(region) = self
                    .by_id
                    .get(*id)
                    .filter(|r| !r.is_ttl_expired(now) && !r.has_flags(flags::RELOAD_ON_LOOKUP))
                {
                    return Ok(region);
                }
                let loaded = self.load_region_by_id(*id).await?;
                self.insert_regions(std::slice::from_ref(&loaded), true);
                Ok(loaded)
            }
        }
    }

    /// Sleeps before retry `attempt` of an unusable PD answer; false when retries are spent.
    async fn pd_answer_backoff(&self, attempt: u32) -> bool {
        if attempt >= PD_ANSWER_RETRIES || self.closed.load(Ordering::Acquire) {
            return false;
        }
        tokio::time::sleep(PD_ANSWER_BACKOFF * 2u32.pow(attempt)).await;
        true
    }

    /// Asks PD for the region holding `key` (or, with `is_end`, the one a range ending at `key`
    /// ends in), without caching it (client-go `loadRegion`). `first` says who may answer the
    /// first call; every later call of the same load goes to the PD leader.
    async fn load_region(
        &self,
        key: &[u8],
        is_end: bool,
        first: PdReplica,
    ) -> Result<Arc<CachedRegion>> {
        if is_end && key.is_empty() {
            return self.load_last_region().await;
        }
        self.load_region_at(key, is_end, first).await
    }

    /// `load_region` for a non-empty key, or a key that is not an end key.
    async fn load_region_at(
        &self,
        key: &[u8],
        is_end: bool,
        first: PdReplica,
    ) -> Result<Arc<CachedRegion>> {
        let mut search_prev = false;
        let mut attempt = 0;
        let mut next = first;
        loop {
            // A retry, whatever its cause, must not get the same stale answer from a lagging
            // follower again (client-go `loadRegion` adds `WithAllowPDLeaderOnly` from the
            // second call on).
            let asked = std::mem::replace(&mut next, PdReplica::Leader);
            let info = match asked {
                PdReplica::Any if search_prev => self.source.get_prev_region(key, true).await?,
                PdReplica::Any => self.source.get_region(key, true).await?,
                PdReplica::Leader => {
                    self.source
                        .get_region_from_leader(key, search_prev, true)
                        .await?
                }
            };
            let usable = info.filter(|i| {
                let meta = &i.region;
                if search_prev {
                    super::region::contains_by_end(&meta.start_key, &meta.end_key, key)
                } else {
                    super::region::contains(&meta.start_key, &meta.end_key, key)
                }
            });
            match usable {
                Some(info) => {
                    if is_end && !search_prev && info.region.start_key.as_ref() == key {
                        // `key` starts this region, so the range ends in the previous one.
                        search_prev = true;
                        continue;
                    }
                    return self.build_region_from_info(info).await;
                }
                None => {
                    if !self.pd_answer_backoff(attempt).await {
                        return Err(region_miss(
                            None,
                            format!("PD has no region for key {}", show(key)),
                        ));
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// The region with an unbounded end. PD cannot be asked for it directly: ask for the region
    /// of a key above every realistic key, then scan forward from it to the end.
    async fn load_last_region(&self) -> Result<Arc<CachedRegion>> {
        let mut region = self
            .load_region_at(&LAST_REGION_PROBE, false, PdReplica::Any)
            .await?;
        while !region.end_key().is_empty() {
            let ranges = [(region.end_key().clone().into_bytes(), Bytes::new())];
            let (regions, _) = self
                .batch_load_regions(&ranges, REGIONS_PER_BATCH, false, false)
                .await?;
            match regions.last() {
                Some(last) => region = last.clone(),
                None => {
                    return Err(region_miss(None, "PD has no last region".to_owned()));
                }
            }
        }
        Ok(region)
    }

    /// Asks PD for a region by id, without caching it (client-go `loadRegionByID`).
    #[cfg(any(test, feature = "unstable-internals"))]
    async fn load_region_by_id(&self, id: u64) -> Result<Arc<CachedRegion>> {
        match self.source.get_region_by_id(id, true).await? {
            Some(info) => self.build_region_from_info(info).await,
            None => Err(region_miss(Some(id), format!("PD has no region {id}"))),
        }
    }

    async fn build_region_from_info(&self, info: RegionInfo) -> Result<Arc<CachedRegion>> {
        let buckets = info
            .buckets
            .as_ref()
            .map(|b| Arc::new(Buckets::from_proto(b)));
        self.build_region(
            info.region,
            info.leader,
            info.down_peers,
            info.pending_peers,
            buckets,
        )
        .await
    }

    /// Builds a cached region from PD's metadata (client-go `newRegion`): resolves each peer's
    /// store, and keeps only the peers requests can go to.
    async fn build_region(
        &self,
        meta: metapb::Region,
        leader: Option<metapb::Peer>,
        down_peers: Vec<metapb::Peer>,
        pending_peers: Vec<metapb::Peer>,
        buckets: Option<Arc<Buckets>>,
    ) -> Result<Arc<CachedRegion>> {
        if meta.peers.is_empty() {
            return Err(region_miss(
                Some(meta.id),
                format!("PD reported region {} without peers", meta.id),
            ));
        }
        // Peer id 0 is PD's way of saying "no leader".
        let leader = leader.filter(|l| l.id != 0);
        let mut peers = Vec::with_capacity(meta.peers.len());
        let mut leader_idx = None;
        for peer in &meta.peers {
            let store = self.stores.get_or_insert(peer.store_id);
            if self.stores.resolve(&store).await?.is_none() {
                continue; // on a tombstone store, or one PD no longer knows
            }
            if down_peers.iter().any(|d| same_peer(d, peer)) {
                continue;
            }
            let is_leader = leader.as_ref().is_some_and(|l| same_peer(l, peer));
            // A witness holds no data: only worth addressing while it leads.
            if peer.is_witness && !is_leader {
                continue;
            }
            if is_leader {
                leader_idx = Some(peers.len());
            }
            peers.push(RegionPeer { peer: *peer, store });
        }
        if peers.is_empty() {
            return Err(region_miss(
                Some(meta.id),
                format!("no available peers in region {}", meta.id),
            ));
        }
        let parts = RegionParts {
            ver_id: RegionVerId::from_meta(&meta),
            start_key: meta.start_key,
            end_key: meta.end_key,
            leader: leader_idx,
            buckets,
            down_peers,
            pending_peers,
        };
        let deadline = self.ttl.next_deadline(self.clock.tick());
        Ok(Arc::new(CachedRegion::new(parts, peers, deadline)))
    }

    // ----- batch loads ------------------------------------------------------------------------

    /// Asks PD for the regions of `ranges` (client-go `batchScanRegions`), retrying answers with
    /// a gap or without a usable region. Returns the regions and where PD's answer ended (empty:
    /// at +inf), which can be past the last returned region when regions without a leader were
    /// left out.
    async fn batch_scan(
        &self,
        ranges: &[KeyRange],
        limit: usize,
        need_buckets: bool,
        need_leader: bool,
    ) -> Result<(Vec<Arc<CachedRegion>>, Bytes)> {
        let mut attempt = 0;
        loop {
            // After an unusable answer only the PD leader is asked, as client-go drops
            // `WithAllowFollowerHandle` then: a lagging follower would answer the same again.
            let infos = if attempt == 0 {
                self.source
                    .batch_scan_regions(ranges, limit, need_buckets)
                    .await?
            } else {
                self.source
                    .batch_scan_regions_from_leader(ranges, limit, need_buckets)
                    .await?
            };
            let problem = if infos.is_empty() {
                Some("PD returned no region")
            } else if regions_have_gap_in_ranges(ranges, &infos, limit) {
                Some("PD returned regions with gaps")
            } else {
                None
            };
            if problem.is_none() {
                let scanned_to = infos
                    .last()
                    .map(|i| i.region.end_key.clone())
                    .unwrap_or_default();
                let mut regions = Vec::with_capacity(infos.len());
                for info in infos {
                    if need_leader && info.leader.as_ref().is_none_or(|l| l.id == 0) {
                        tracing::debug!(region = info.region.id, "skipping region without leader");
                        continue;
                    }
                    regions.push(self.build_region_from_info(info).await?);
                }
                if !regions.is_empty() {
                    return Ok((regions, scanned_to));
                }
            }
            let problem = problem.unwrap_or("every region PD returned has no leader");
            if !self.pd_answer_backoff(attempt).await {
                return Err(region_miss(
                    None,
                    format!("{problem} for {} range(s) (limit {limit})", ranges.len()),
                ));
            }
            attempt += 1;
        }
    }

    /// Batch-scans `ranges` and caches the result without invalidating what it replaces
    /// (client-go `BatchLoadRegionsWithKeyRanges`): a cached region that is still valid may be
    /// in use by requests.
    async fn batch_load_regions(
        &self,
        ranges: &[KeyRange],
        limit: usize,
        need_buckets: bool,
        need_leader: bool,
    ) -> Result<(Vec<Arc<CachedRegion>>, Bytes)> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let (regions, scanned_to) = self
            .batch_scan(ranges, limit, need_buckets, need_leader)
            .await?;
        self.insert_regions(&regions, false);
        Ok((regions, scanned_to))
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Up to `limit` cached, usable regions in key order from the one holding `start`, stopping
    /// at a hole, an expired region or `end` (client-go `scanRegionsFromCache`).
    fn scan_cached(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<Arc<CachedRegion>> {
        let now = self.clock.now();
        let index = self.index.load();
        let mut regions = Vec::new();
        let mut expect: Bytes = Bytes::copy_from_slice(start);
        for region in index.iter_from(start) {
            if regions.len() >= limit {
                break;
            }
            if !end.is_empty() && region.start_key().as_bytes() >= end {
                break;
            }
            if !region.check_ttl(now, &self.ttl) || !region.contains(&expect) {
                break;
            }
            if region.has_flags(flags::RELOAD_ON_LOOKUP) {
                break;
            }
            expect = region.end_key().clone().into_bytes();
            regions.push(region.clone());
            if expect.is_empty() {
                break;
            }
        }
        regions
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// client-go `BatchLocateKeyRanges`.
    async fn batch_locate(
        &self,
        ranges: &[(Key, Key)],
        options: BatchLocateOptions,
    ) -> Result<Vec<KeyLocation>> {
        let mut uncached: Vec<KeyRange> = Vec::new();
        let mut cached: Vec<Arc<CachedRegion>> = Vec::new();
        let mut last: Option<Arc<CachedRegion>> = None;
        for (start, end) in ranges {
            let end_bytes = end.as_bytes();
            let mut start = start.clone().into_bytes();
            if let Some(last) = &last {
                if last.contains_by_end(end_bytes) {
                    continue;
                }
                if last.contains(&start) {
                    start = last.end_key().clone().into_bytes();
                }
            }
            let Some(first) = self.try_find_region(&start, false) else {
                last = None;
                uncached.push((start, end.clone().into_bytes()));
                continue;
            };
            last = Some(first.clone());
            cached.push(first.clone());
            if first.contains_by_end(end_bytes) {
                continue;
            }
            start = first.end_key().clone().into_bytes();
            let mut covered = false;
            'scan: loop {
                let batch = self.scan_cached(&start, end_bytes, REGIONS_PER_BATCH);
                let full = batch.len() == REGIONS_PER_BATCH;
                for region in batch {
                    if !region.contains(&start) {
                        break 'scan;
                    }
                    start = region.end_key().clone().into_bytes();
                    let done = region.contains_by_end(end_bytes);
                    last = Some(region.clone());
                    cached.push(region);
                    if done {
                        covered = true;
                        break 'scan;
                    }
                }
                if !full {
                    break;
                }
            }
            if !covered {
                uncached.push((start, end.clone().into_bytes()));
            }
        }
        let mut merger = Merger::new(cached, ranges.len());
        while !uncached.is_empty() {
            let batch = &uncached[..uncached.len().min(MAX_RANGES_PER_BATCH)];
            let (regions, _) = self
                .batch_load_regions(
                    batch,
                    REGIONS_PER_BATCH,
                    options.need_buckets,
                    options.need_leader,
                )
                .await?;
            let Some(last) = regions.last() else {
                return Err(region_miss(None, "PD returned no region".to_owned()));
            };
            let loaded_to = last.end_key().clone();
            for region in &regions {
                merger.append_loaded(region);
            }
            uncached = ranges_after_key(uncached, loaded_to.as_bytes());
        }
        Ok(merger.build())
    }

    // ----- writes -----------------------------------------------------------------------------

    /// Caches regions (client-go `insertRegionToCache`); returns, per region, whether it was
    /// cached (false: a newer view of it, or of an overlapping region, is cached).
    ///
    /// The regions it overlaps are removed; with `invalidate_old` they are also invalidated, so
    /// that requests holding them stop using them. A region replacing an older view of itself
    /// keeps that view's buckets when it has none (or older ones), its TiFlash peer choice, and,
    /// if the old view was invalidated for `NoLeader`, starts at the next peer.
    fn insert_regions(&self, regions: &[Arc<CachedRegion>], invalidate_old: bool) -> Vec<bool> {
        if regions.is_empty() {
            return Vec::new();
        }
        let _guard = lock(&self.write_lock);
        let mut index = RegionIndex::clone(&self.index.load());
        let inserted = regions
            .iter()
            .map(|r| self.insert_into(&mut index, r, invalidate_old))
            .collect();
        self.index.store(Arc::new(index));
        inserted
    }

    fn insert_into(
        &self,
        index: &mut RegionIndex,
        region: &Arc<CachedRegion>,
        invalidate_old: bool,
    ) -> bool {
        let ver = region.ver_id();
        let previous = self.by_id.get(ver.id());
        if let Some(prev) = &previous {
            let pv = prev.ver_id();
            if pv.version() > ver.version() || pv.conf_ver() > ver.conf_ver() {
                tracing::debug!(region = %ver, cached = %pv, "PD returned a stale region");
                return false;
            }
        }
        let Ok(mut overlapped) = index.intersecting(region) else {
            tracing::debug!(region = %ver, "PD returned a region older than one it overlaps");
            return false;
        };
        if let Some(prev) = previous
            && !overlapped.iter().any(|o| Arc::ptr_eq(o, &prev))
        {
            overlapped.push(prev);
        }
        if let Some(old) = overlapped.iter().find(|o| o.id() == ver.id()) {
            if old.invalid_reason() == InvalidReason::NoLeader {
                let n = region.tikv_peer_indexes().len().max(1);
                region.set_leader_access_idx((old.leader_access_idx() + 1) % n);
            }
            region.set_tiflash_access_idx(old.tiflash_access_idx());
            if let Some(old_buckets) = old.buckets()
                && region
                    .buckets()
                    .is_none_or(|b| b.version() < old_buckets.version())
            {
                region.set_buckets(Some(old_buckets));
            }
        }
        for old in &overlapped {
            index.remove(old);
            self.by_id.remove(old);
            if invalidate_old {
                old.invalidate(InvalidReason::Other);
            }
        }
        index.insert(region.clone());
        self.by_id.insert(region.clone());
        true
    }

    /// Replaces the whole cache with `regions` (sorted, from one scan of PD). A region that
    /// overlaps the one before it (PD answering across a split) is left out.
    fn replace_all(&self, regions: &[Arc<CachedRegion>]) {
        let mut kept: Vec<Arc<CachedRegion>> = Vec::with_capacity(regions.len());
        for region in regions {
            let disjoint = kept.last().is_none_or(|prev| {
                !prev.end_key().is_empty() && prev.end_key() <= region.start_key()
            });
            if disjoint {
                kept.push(region.clone());
            }
        }
        let index = RegionIndex::from_sorted(kept);
        let _guard = lock(&self.write_lock);
        self.by_id.clear();
        for region in index.iter() {
            self.by_id.insert(region.clone());
        }
        self.index.store(Arc::new(index));
    }

    /// Loads every region from PD and makes it the cache's content (client-go
    /// `refreshRegionIndex`, used by preload and the periodic refresh).
    async fn refresh_region_index(&self) -> Result<()> {
        let mut all = Vec::new();
        let mut start = Bytes::new();
        loop {
            let ranges = [(start.clone(), Bytes::new())];
            let (regions, scanned_to) = self
                .batch_scan(&ranges, FULL_SCAN_PAGE, false, true)
                .await?;
            all.extend(regions);
            if scanned_to.is_empty() || scanned_to <= start {
                break;
            }
            start = scanned_to;
        }
        self.replace_all(&all);
        Ok(())
    }

    /// One round of the idle-region GC (client-go `gcRoundFunc`): looks at the next
    /// `GC_REGIONS_PER_ROUND` regions, drops those whose TTL passed, promotes delayed reloads,
    /// and lets regions with a failed store expire at their TTL.
    fn gc_round(&self, limit: usize) {
        let now = self.clock.now();
        let index = self.index.load();
        let mut cursor = lock(&self.gc_cursor);
        let mut expired = Vec::new();
        let mut next_cursor = Key::EMPTY;
        for (seen, region) in index.iter_from(cursor.as_bytes()).enumerate() {
            if seen >= limit {
                next_cursor = region.start_key().clone();
                break;
            }
            if region.is_ttl_expired(now) {
                expired.push(region.clone());
                continue;
            }
            let region_flags = region.sync_flags();
            if region_flags & flags::NEED_DELAYED_RELOAD_READY != 0 {
                continue;
            }
            if region_flags & flags::NEED_DELAYED_RELOAD_PENDING != 0 {
                region.set_flags(flags::NEED_DELAYED_RELOAD_READY);
                continue;
            }
            if region_flags & flags::NEED_EXPIRE_AFTER_TTL == 0 && region.has_stale_store() {
                region.set_flags(flags::NEED_EXPIRE_AFTER_TTL);
            }
        }
        *cursor = next_cursor;
        drop(cursor);
        drop(index);
        if expired.is_empty() {
            return;
        }
        let _guard = lock(&self.write_lock);
        let mut index = RegionIndex::clone(&self.index.load());
        for region in &expired {
            // Skip one replaced (and so refreshed) since the scan.
            if region.is_ttl_expired(now) && index.remove(region) {
                self.by_id.remove(region);
            }
        }
        self.index.store(Arc::new(index));
    }
}

/// Starts the background tasks; they hold the cache weakly and end when it is gone.
fn spawn_background(handle: &tokio::runtime::Handle, inner: &Arc<Inner>) -> Vec<AbortHandle> {
    let regions = {
        let weak = Arc::downgrade(inner);
        handle.spawn(async move {
            if let Some(inner) = weak.upgrade().filter(|i| i.enable_preload) {
                match inner.refresh_region_index().await {
                    Ok(()) => {
                        tracing::info!(regions = inner.index.load().len(), "region cache preloaded")
                    }
                    Err(err) => tracing::warn!(%err, "preloading the region cache failed"),
                }
            }
            region_loop(weak).await;
        })
    };
    let stores = {
        let weak = Arc::downgrade(inner);
        let check_needed = inner.stores.check_needed();
        let interval = inner.stores_refresh_interval;
        handle.spawn(store_loop(weak, check_needed, interval))
    };
    vec![regions.abort_handle(), stores.abort_handle()]
}

async fn region_loop(weak: Weak<Inner>) {
    let mut ticker = tokio::time::interval(TICK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_refresh = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        let Some(inner) = weak.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        inner.clock.tick();
        let refresh = inner.regions_refresh_interval;
        if refresh.is_zero() {
            // The GC would fight the periodic refresh, so it runs only without one.
            inner.gc_round(GC_REGIONS_PER_ROUND);
        } else if last_refresh.elapsed() >= refresh {
            last_refresh = tokio::time::Instant::now();
            if let Err(err) = inner.refresh_region_index().await {
                tracing::warn!(%err, "refreshing the region cache failed");
            }
        }
    }
}

async fn store_loop(weak: Weak<Inner>, check_needed: Arc<tokio::sync::Notify>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate; stores are resolved on first use
    loop {
        let full = tokio::select! {
            _ = ticker.tick() => true,
            _ = check_needed.notified() => false,
        };
        let Some(inner) = weak.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if full && let Err(err) = inner.stores.refresh_all().await {
            tracing::warn!(%err, "refreshing the store list failed");
        }
        inner.stores.check_marked().await;
    }
}

#[cfg(feature = "unstable-internals")]
/// The source of a cache built without PD (benchmarks): every call fails.
#[derive(Debug)]
struct NoRegionSource;

#[cfg(feature = "unstable-internals")]
impl NoRegionSource {
    #[cfg(any(test, feature = "unstable-internals"))]
    fn fail<T: Send + 'static>() -> BoxFuture<'static, Result<T>> {
        Box::pin(async { Err(Error::internal("this region cache was built without PD")) })
    }
}

#[cfg(feature = "unstable-internals")]
impl RegionSource for NoRegionSource {
    fn get_region<'a>(&'a self, _: &'a [u8], _: bool) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        Self::fail()
    }

    fn get_prev_region<'a>(
        &'a self,
        _: &'a [u8],
        _: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        Self::fail()
    }

    fn get_region_by_id(&self, _: u64, _: bool) -> BoxFuture<'_, Result<Option<RegionInfo>>> {
        Self::fail()
    }

    fn batch_scan_regions<'a>(
        &'a self,
        _: &'a [(Bytes, Bytes)],
        _: usize,
        _: bool,
    ) -> BoxFuture<'a, Result<Vec<RegionInfo>>> {
        Self::fail()
    }

    fn get_store(&self, _: u64) -> BoxFuture<'_, Result<Option<metapb::Store>>> {
        Self::fail()
    }

    fn get_all_stores(&self, _: bool) -> BoxFuture<'_, Result<Vec<metapb::Store>>> {
        Self::fail()
    }
}

#[cfg(test)]
impl RegionCache {
    /// Advances the cache's clock to the runtime's current time (tests with paused time).
    pub(crate) fn tick_clock(&self) {
        self.inner().clock.tick();
    }

    pub(crate) fn run_gc_round(&self, limit: usize) {
        self.inner().gc_round(limit);
    }

    pub(crate) async fn refresh_all_regions(&self) -> Result<()> {
        self.inner().refresh_region_index().await
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.inner().clock.now()
    }

    pub(crate) fn ttl_policy(&self) -> TtlPolicy {
        self.inner().ttl
    }

    /// Caches a region as if PD had returned it (client-go tests' `insertRegionToCache`).
    pub(crate) fn insert_for_test(&self, region: Arc<CachedRegion>, invalidate_old: bool) -> bool {
        self.inner().insert_regions(&[region], invalidate_old)[0]
    }

    pub(crate) async fn build_region_for_test(
        &self,
        info: RegionInfo,
    ) -> Result<Arc<CachedRegion>> {
        self.inner().build_region_from_info(info).await
    }

    pub(crate) async fn load_region_for_test(&self, key: &[u8]) -> Result<Arc<CachedRegion>> {
        self.inner().load_region(key, false, PdReplica::Any).await
    }

    pub(crate) fn scan_cached_for_test(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Vec<Arc<CachedRegion>> {
        self.inner().scan_cached(start, end, limit)
    }

    pub(crate) async fn batch_load_for_test(
        &self,
        ranges: &[KeyRange],
        limit: usize,
    ) -> Result<Vec<Arc<CachedRegion>>> {
        Ok(self
            .inner()
            .batch_load_regions(ranges, limit, false, false)
            .await?
            .0)
    }

    /// Checks the index and the id map agree (tests only).
    pub(crate) fn check_consistency(&self) {
        let index = self.inner().index.load();
        index.check_invariants();
        assert_eq!(
            index.len(),
            self.inner().by_id.len(),
            "index and id map disagree"
        );
        for region in index.iter() {
            let by_id = self
                .inner()
                .by_id
                .get(region.id())
                .expect("region in id map");
            assert!(Arc::ptr_eq(&by_id, region));
        }
    }

    /// Regions lookups may still answer from.
    pub(crate) fn valid_region_count(&self) -> usize {
        let now = self.inner().clock.now();
        self.inner()
            .index
            .load()
            .iter()
            .filter(|r| !r.is_ttl_expired(now))
            .count()
    }

    pub(crate) fn clear_for_test(&self) {
        self.inner().replace_all(&[]);
        self.inner().stores.clear();
    }
}
