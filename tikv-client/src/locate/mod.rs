//! The region cache and the store cache: which region holds a key, where its leader is, and
//! how to reach that leader's store.
//!
//! # What it owns
//!
//! - [`RegionCache`] (`region_cache.rs`): lookups by key, by end key, by region id and by range
//!   ([`KeyLocation`]); batch location of many ranges with PD's `BatchScanRegions`; grouping
//!   keys by region; the reactions the request sender reports (`NotLeader` → leader switch,
//!   `EpochNotMatch` → the new regions, send failures → next peer and failed stores, bucket
//!   updates, invalidation with a reason); the region TTL with jitter; the idle-region GC,
//!   optional preload and periodic full refresh in a background task.
//! - The region index (`index.rs`): regions ordered by start key, read without locks from an
//!   immutable snapshot. See its docs for the layout and why.
//! - One cached region (`region.rs`): [`RegionVerId`], peers with their stores, the presumed
//!   leader, buckets, TTL and lazy-reload flags, all mutable state in atomics.
//! - The store cache (`store.rs`): each store's address, labels, engine ([`StoreType`]) and
//!   state, resolved from PD on first use, refreshed periodically; tombstone and removed stores
//!   invalidate their regions, and a store whose address changed gets the new one and has its
//!   regions reloaded.
//! - Batch helpers (`batch.rs`): PD answer gap checks, range trimming, and the merge of cached
//!   and loaded regions.
//!
//! # Who calls it
//!
//! The request sender (`crate::request`) locates keys, takes the cached region for its
//! replica selector and reports region errors back (`on_region_epoch_not_match`,
//! `on_bucket_version_not_match`, `invalidate_region`); the raw and transactional clients group
//! keys and ranges by region. The cache reaches PD only through `RegionSource` (`crate::pd`),
//! implemented by the PD client; its keys are PD's region keys (stored form: API V2 prefixes
//! and memcomparable encoding included), which each client derives with `crate::codec`.
//!
//! # What it ports
//!
//! client-go `internal/locate/region_cache.go`, `internal/locate/store_cache.go` and
//! `internal/locate/sorted_btree.go`. Replica selection (`replica_selector.go`), the store
//! liveness probe and slow-score health are not here yet. Differences from client-go:
//!
//! - reads are lock-free (client-go takes a global read lock per lookup);
//! - concurrent misses on the same key share one PD call (client-go makes one each);
//! - inserting a newer region also evicts an older one that starts before it and overlaps it
//!   (client-go leaves it answering for part of its range);
//! - a region replacing another inherits leader position and buckets only from an older view
//!   of itself, never from a different region;
//! - a store whose address changed has its regions reloaded (client-go only updates the
//!   address), and the periodic store refresh uses one `GetAllStores` per
//!   `stores_refresh_interval` instead of one `GetStore` per store;
//! - `locate_end_key` of the empty key (+inf) finds the last region (client-go returns the
//!   first);
//! - use extends a region's TTL by at least one second more than `ttl` (client-go keeps the
//!   TTL in whole seconds to the same effect), so a region in constant use has its TTL written
//!   at most once a second; a region idle since its last use expires between `ttl` and
//!   `ttl + max(jitter, 1 s)` after it;
//! - PD answers that are unusable (no region, a gap, no leader) are retried a few times with a
//!   short backoff inside the cache (about 300 ms in all), then reported as a retryable
//!   [`Error::Region`](crate::Error::Region); PD transport errors are the PD client's to retry.

// Crate-private, like `pd`: its `pub` items are what `crate::unstable` re-exports for the
// region-cache benchmark, and the store types the crate root re-exports. Without the
// `unstable-internals` feature the rest is unreachable by design (see `pd/mod.rs`).
#![cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]

mod batch;
mod health;
mod index;
mod location;
mod prefix;
mod region;
pub(crate) mod region_cache;
mod slow_score;
mod store;

#[cfg(test)]
mod tests;

pub use location::KeyLocation;
#[cfg(feature = "unstable-internals")]
pub use location::{Bucket, Buckets};
pub use region::RegionVerId;
#[cfg(feature = "unstable-internals")]
pub use region_cache::BatchLocateOptions;
pub use region_cache::RegionCache;
pub use store::{StoreInfo, StoreState, StoreType};

pub(crate) use health::LivenessState;
pub use health::StoreHealthDetail;
pub(crate) use region::flags as region_flags;
pub(crate) use region::{CachedRegion, InvalidReason};
pub(crate) use store::{ResolveState, Store, StoreCache};
