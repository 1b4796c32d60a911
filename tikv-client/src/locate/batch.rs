//! Pure helpers of batch and range location: PD's answer coverage check, range trimming, and the
//! merge of cached and freshly loaded regions.
//!
//! Ports `regionsHaveGapInRanges`, `rangesAfterKey` and `batchLocateRangesMerger` of client-go
//! `internal/locate/region_cache.go`.

#[cfg(any(test, feature = "unstable-internals"))]
use std::sync::Arc;

use bytes::Bytes;

#[cfg(any(test, feature = "unstable-internals"))]
use super::location::KeyLocation;
#[cfg(any(test, feature = "unstable-internals"))]
use super::region::CachedRegion;
#[cfg(any(test, feature = "unstable-internals"))]
use crate::Key;
use crate::pd::RegionInfo;

/// A key range `[start, end)`; an empty end is unbounded.
pub(crate) type KeyRange = (Bytes, Bytes);

/// Whether `regions` (PD's answer, in key order) leave part of `ranges` uncovered
/// (client-go `regionsHaveGapInRanges`). `limit` is the number of regions asked for (0: no
/// limit): an answer that hit the limit only has to be gapless as far as it goes.
pub(crate) fn regions_have_gap_in_ranges(
    ranges: &[KeyRange],
    regions: &[RegionInfo],
    limit: usize,
) -> bool {
    let Some(first) = ranges.first() else {
        return false;
    };
    if regions.is_empty() {
        return true;
    }
    let mut check_idx = 0;
    let mut check_key: &[u8] = &first.0;
    for info in regions {
        let meta = &info.region;
        if meta.start_key.as_ref() > check_key {
            return true;
        }
        if meta.end_key.is_empty() {
            return false;
        }
        check_key = &meta.end_key;
        while !ranges[check_idx].1.is_empty() && check_key >= ranges[check_idx].1.as_ref() {
            check_idx += 1;
            if check_idx == ranges.len() {
                return false;
            }
        }
        if check_key < ranges[check_idx].0.as_ref() {
            check_key = &ranges[check_idx].0;
        }
    }
    if limit > 0 && regions.len() == limit {
        return false;
    }
    if check_idx < ranges.len() - 1 {
        return true;
    }
    if check_key.is_empty() {
        return false;
    }
    let end = &ranges[check_idx].1;
    end.is_empty() || check_key < end.as_ref()
}

#[cfg(any(test, feature = "unstable-internals"))]
/// The part of `ranges` at or after `split` (client-go `rangesAfterKey`). An empty `split` (the
/// loaded regions reached +inf) leaves nothing.
pub(crate) fn ranges_after_key(mut ranges: Vec<KeyRange>, split: &[u8]) -> Vec<KeyRange> {
    let Some(last) = ranges.last() else {
        return ranges;
    };
    if split.is_empty() || (!last.1.is_empty() && split >= last.1.as_ref()) {
        return Vec::new();
    }
    let n = ranges.partition_point(|r| !(r.1.is_empty() || r.1.as_ref() > split));
    ranges.drain(..n);
    if let Some(first) = ranges.first_mut()
        && split > first.0.as_ref()
    {
        first.0 = Bytes::copy_from_slice(split);
    }
    ranges
}

#[cfg(any(test, feature = "unstable-internals"))]
/// Merges the regions found in the cache with those loaded from PD into one list in key order
/// (client-go `batchLocateRangesMerger`). A cached region that the loaded ones cover is dropped;
/// one they only partly cover is kept, since part of the asked ranges may be in it alone.
pub(crate) struct Merger {
    last_end: Option<Key>,
    cached_idx: usize,
    cached: Vec<Arc<CachedRegion>>,
    merged: Vec<KeyLocation>,
}

#[cfg(any(test, feature = "unstable-internals"))]
impl Merger {
    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn new(cached: Vec<Arc<CachedRegion>>, size_hint: usize) -> Merger {
        Merger {
            last_end: None,
            cached_idx: 0,
            cached,
            merged: Vec::with_capacity(size_hint),
        }
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    fn covered(&self, region: &CachedRegion) -> bool {
        match &self.last_end {
            Some(last_end) => !region.end_key().is_empty() && last_end >= region.end_key(),
            None => false,
        }
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Adds a region loaded from PD; loaded regions come in key order.
    pub(crate) fn append_loaded(&mut self, loaded: &CachedRegion) {
        let continues = loaded.start_key().is_empty()
            || self
                .last_end
                .as_ref()
                .is_some_and(|last_end| last_end >= loaded.start_key());
        if !continues {
            while self.cached_idx < self.cached.len() {
                let cached = &self.cached[self.cached_idx];
                if self.covered(cached) {
                    self.cached_idx += 1;
                    continue;
                }
                if cached.start_key() >= loaded.start_key() {
                    break;
                }
                self.merged.push(KeyLocation::from_region(cached));
                self.cached_idx += 1;
            }
        }
        self.merged.push(KeyLocation::from_region(loaded));
        if loaded.end_key().is_empty() {
            // The loaded region reaches +inf: every cached region left is behind it.
            self.cached_idx = self.cached.len();
        } else {
            self.last_end = Some(loaded.end_key().clone());
        }
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn build(mut self) -> Vec<KeyLocation> {
        while self.cached_idx < self.cached.len() {
            let cached = &self.cached[self.cached_idx];
            if !self.covered(cached) {
                self.merged.push(KeyLocation::from_region(cached));
            }
            self.cached_idx += 1;
        }
        self.merged
    }
}
