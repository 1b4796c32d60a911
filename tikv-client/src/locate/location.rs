//! What a lookup returns: [`KeyLocation`] (a region's identity and key range) and the region's
//! [`Buckets`].
//!
//! Ports `KeyLocation`, `Bucket`, `LocateBucket` and `clampBucketToRegion` of client-go
//! `internal/locate/region_cache.go`.

use std::fmt;
use std::sync::Arc;

use tikv_proto::metapb;

#[cfg(any(test, feature = "unstable-internals"))]
use super::region::contains;
#[cfg(feature = "unstable-internals")]
use super::region::contains_by_end;
use super::region::{CachedRegion, RegionVerId};
use crate::Key;

/// Where a key lives: the region (id and epoch) and its key range `[start_key, end_key)`, plus
/// the region's buckets when they are known.
///
/// Cloning is cheap: the keys are shared buffers and the buckets are reference-counted.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyLocation {
    region: RegionVerId,
    start_key: Key,
    end_key: Key,
    buckets: Option<Arc<Buckets>>,
}

impl fmt::Debug for KeyLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyLocation")
            .field("region", &self.region)
            .field("start_key", &self.start_key)
            .field("end_key", &self.end_key)
            .field("bucket_version", &self.bucket_version())
            .finish()
    }
}

impl KeyLocation {
    /// A location from its parts: the cache's fast path builds one from the index alone.
    #[inline]
    pub(crate) fn from_parts(
        region: RegionVerId,
        start_key: Key,
        end_key: Key,
        buckets: Option<Arc<Buckets>>,
    ) -> KeyLocation {
        KeyLocation {
            region,
            start_key,
            end_key,
            buckets,
        }
    }

    #[inline]
    pub(crate) fn from_region(region: &CachedRegion) -> KeyLocation {
        KeyLocation {
            region: region.ver_id(),
            start_key: region.start_key().clone(),
            end_key: region.end_key().clone(),
            buckets: region.buckets(),
        }
    }

    /// The region and its epoch.
    pub fn region(&self) -> RegionVerId {
        self.region
    }

    /// The region id.
    pub fn region_id(&self) -> u64 {
        self.region.id()
    }

    /// The first key of the region (inclusive); empty for the first region.
    pub fn start_key(&self) -> &Key {
        &self.start_key
    }

    /// The end of the region (exclusive); empty for the last region, meaning unbounded.
    pub fn end_key(&self) -> &Key {
        &self.end_key
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The region's buckets, if PD reported them.
    pub fn buckets(&self) -> Option<&Buckets> {
        self.buckets.as_deref()
    }

    /// The version of the region's buckets, 0 when there are none (client-go
    /// `GetBucketVersion`).
    pub fn bucket_version(&self) -> u64 {
        self.buckets.as_ref().map_or(0, |b| b.version)
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Whether `start_key <= key < end_key`.
    pub fn contains(&self, key: &[u8]) -> bool {
        contains(self.start_key.as_bytes(), self.end_key.as_bytes(), key)
    }

    #[cfg(feature = "unstable-internals")]
    /// Whether `start_key < key <= end_key`, the test for a range's exclusive end. An empty `key`
    /// stands for +inf: only the last region contains it (client-go `ContainsByEnd`).
    pub fn contains_by_end(&self, key: &[u8]) -> bool {
        contains_by_end(self.start_key.as_bytes(), self.end_key.as_bytes(), key)
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The bucket of this region that holds `key`, or `None` if the region does not hold it
    /// (client-go `LocateBucket`).
    ///
    /// Buckets can be stale: keys of the region that fall before the first bucket boundary or
    /// after the last one get a bucket that runs to the region's edge, and a bucket reaching past
    /// the region is clamped to the region. Without buckets the whole region is one bucket.
    pub fn locate_bucket(&self, key: &[u8]) -> Option<Bucket> {
        if let Some(bucket) = self.locate_bucket_strict(key) {
            return Some(self.clamp_bucket(bucket));
        }
        if !self.contains(key) {
            return None;
        }
        let keys: &[Key] = self.buckets.as_ref().map_or(&[], |b| &b.keys);
        let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
            return Some(Bucket::new(self.start_key.clone(), self.end_key.clone()));
        };
        if key < first.as_bytes() {
            return Some(Bucket::new(self.start_key.clone(), first.clone()));
        }
        if last.as_bytes() <= key {
            return Some(Bucket::new(last.clone(), self.end_key.clone()));
        }
        // Only bucket keys out of order get here; fall back to the whole region.
        Some(Bucket::new(self.start_key.clone(), self.end_key.clone()))
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The bucket holding `key`, or `None` if `key` is outside every bucket.
    fn locate_bucket_strict(&self, key: &[u8]) -> Option<Bucket> {
        let keys = &self.buckets.as_ref()?.keys;
        let search_len = keys.len().checked_sub(1)?;
        let i = keys[..search_len].partition_point(|k| k.as_bytes() <= key);
        // The bucket keys include the region's start and end, so a key before the first one or
        // after the last bounded one means the buckets are stale.
        if i == 0
            || (i == search_len
                && !keys[search_len].is_empty()
                && key >= keys[search_len].as_bytes())
        {
            return None;
        }
        Some(Bucket::new(keys[i - 1].clone(), keys[i].clone()))
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Narrows a bucket to the region (client-go `clampBucketToRegion`).
    pub(crate) fn clamp_bucket(&self, bucket: Bucket) -> Bucket {
        let mut start = bucket.start_key.clone();
        let mut end = bucket.end_key.clone();
        if start < self.start_key {
            start = self.start_key.clone();
        }
        if !self.end_key.is_empty() && (end.is_empty() || end > self.end_key) {
            end = self.end_key.clone();
        }
        if !end.is_empty() && start >= end {
            return Bucket::new(self.start_key.clone(), self.end_key.clone());
        }
        if start == bucket.start_key && end == bucket.end_key {
            return bucket;
        }
        Bucket::new(start, end)
    }

    #[cfg(test)]
    pub(crate) fn for_test(
        region: RegionVerId,
        start_key: &[u8],
        end_key: &[u8],
        buckets: Option<Buckets>,
    ) -> KeyLocation {
        KeyLocation {
            region,
            start_key: Key::copy_from_slice(start_key),
            end_key: Key::copy_from_slice(end_key),
            buckets: buckets.map(Arc::new),
        }
    }
}

/// A region's buckets: split points inside the region that let large scans be cut into smaller
/// tasks. The first key is the region's start and the last is its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    version: u64,
    keys: Vec<Key>,
}

impl Buckets {
    /// The buckets' version; TiKV bumps it whenever the boundaries change.
    pub fn version(&self) -> u64 {
        self.version
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The boundaries, in key order.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    pub(crate) fn new(version: u64, keys: Vec<Key>) -> Buckets {
        Buckets { version, keys }
    }

    /// Copies PD's buckets; the keys are copied out of the response buffer.
    pub(crate) fn from_proto(buckets: &metapb::Buckets) -> Buckets {
        Buckets {
            version: buckets.version,
            keys: buckets
                .keys
                .iter()
                .map(|k| Key::copy_from_slice(k))
                .collect(),
        }
    }
}

#[cfg(any(test, feature = "unstable-internals"))]
/// One bucket: the key range `[start_key, end_key)`, an empty end being unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    start_key: Key,
    end_key: Key,
}

#[cfg(any(test, feature = "unstable-internals"))]
impl Bucket {
    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn new(start_key: Key, end_key: Key) -> Bucket {
        Bucket { start_key, end_key }
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The first key of the bucket.
    pub fn start_key(&self) -> &Key {
        &self.start_key
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The end of the bucket (exclusive); empty means unbounded.
    pub fn end_key(&self) -> &Key {
        &self.end_key
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Whether `start_key <= key < end_key`.
    pub fn contains(&self, key: &[u8]) -> bool {
        contains(self.start_key.as_bytes(), self.end_key.as_bytes(), key)
    }
}
