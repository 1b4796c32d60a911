//! [`CodecRegionSource`]: the PD side of the codec, a `RegionSource` that speaks user keys.
//!
//! The region cache asks it for regions by user key; it encodes the key (or ranges) the way PD
//! stores region boundaries, asks the source it wraps, and decodes every region back, clamped
//! to the keyspace. A region PD returns that does not intersect the keyspace is "not found" for
//! the cache (single lookups answer `None`, scans leave it out): under API V2 that happens to
//! `GetPrevRegion` at the first region of a keyspace, and to a `GetRegionByID` of a region that
//! a merge or split moved out of it. Store queries pass through.
//!
//! Ports client-go `internal/locate/pd_codec.go` (`CodecPDClient`).

use std::sync::Arc;

use bytes::Bytes;
use tikv_proto::metapb;

use super::ApiCodec;
use crate::Result;
use crate::pd::{BoxFuture, RegionInfo, RegionSource};

/// A [`RegionSource`] in the user's key space over one in the storage key space.
#[derive(Debug)]
pub(crate) struct CodecRegionSource {
    inner: Arc<dyn RegionSource>,
    codec: ApiCodec,
}

impl CodecRegionSource {
    /// Wraps `inner` (usually the PD client).
    pub(crate) fn new(inner: Arc<dyn RegionSource>, codec: ApiCodec) -> CodecRegionSource {
        CodecRegionSource { inner, codec }
    }

    fn decode_one(&self, info: Option<RegionInfo>) -> Result<Option<RegionInfo>> {
        match info {
            Some(info) => {
                let id = info.region.id;
                let decoded = self.codec.decode_region_info(info)?;
                if decoded.is_none() {
                    tracing::debug!(region = id, "PD returned a region outside the keyspace");
                }
                Ok(decoded)
            }
            None => Ok(None),
        }
    }
}

impl CodecRegionSource {
    /// `BatchScanRegions` over the encoded ranges, from any PD member or (`leader_only`) the
    /// leader; regions outside the keyspace are dropped.
    async fn scan(
        &self,
        ranges: &[(Bytes, Bytes)],
        limit: usize,
        need_buckets: bool,
        leader_only: bool,
    ) -> Result<Vec<RegionInfo>> {
        // Encoding keeps the order and disjointness the source requires.
        let encoded: Vec<(Bytes, Bytes)> = ranges
            .iter()
            .map(|(start, end)| self.codec.encode_region_range(start, end))
            .collect();
        let infos = if leader_only {
            self.inner
                .batch_scan_regions_from_leader(&encoded, limit, need_buckets)
                .await?
        } else {
            self.inner
                .batch_scan_regions(&encoded, limit, need_buckets)
                .await?
        };
        let mut out = Vec::with_capacity(infos.len());
        for info in infos {
            if let Some(info) = self.decode_one(Some(info))? {
                out.push(info);
            }
        }
        Ok(out)
    }
}

impl RegionSource for CodecRegionSource {
    fn get_region<'a>(
        &'a self,
        key: &'a [u8],
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        Box::pin(async move {
            let key = self.codec.encode_region_key(key);
            let info = self.inner.get_region(&key, need_buckets).await?;
            self.decode_one(info)
        })
    }

    fn get_prev_region<'a>(
        &'a self,
        key: &'a [u8],
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        Box::pin(async move {
            let key = self.codec.encode_region_key(key);
            let info = self.inner.get_prev_region(&key, need_buckets).await?;
            self.decode_one(info)
        })
    }

    fn get_region_by_id(
        &self,
        region_id: u64,
        need_buckets: bool,
    ) -> BoxFuture<'_, Result<Option<RegionInfo>>> {
        Box::pin(async move {
            let info = self.inner.get_region_by_id(region_id, need_buckets).await?;
            self.decode_one(info)
        })
    }

    fn get_region_from_leader<'a>(
        &'a self,
        key: &'a [u8],
        prev: bool,
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        Box::pin(async move {
            let key = self.codec.encode_region_key(key);
            let info = self
                .inner
                .get_region_from_leader(&key, prev, need_buckets)
                .await?;
            self.decode_one(info)
        })
    }

    fn batch_scan_regions<'a>(
        &'a self,
        ranges: &'a [(Bytes, Bytes)],
        limit: usize,
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Vec<RegionInfo>>> {
        Box::pin(self.scan(ranges, limit, need_buckets, false))
    }

    fn batch_scan_regions_from_leader<'a>(
        &'a self,
        ranges: &'a [(Bytes, Bytes)],
        limit: usize,
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Vec<RegionInfo>>> {
        Box::pin(self.scan(ranges, limit, need_buckets, true))
    }

    fn get_store(&self, store_id: u64) -> BoxFuture<'_, Result<Option<metapb::Store>>> {
        self.inner.get_store(store_id)
    }

    fn get_store_from_leader(&self, store_id: u64) -> BoxFuture<'_, Result<Option<metapb::Store>>> {
        self.inner.get_store_from_leader(store_id)
    }

    fn get_all_stores(&self, exclude_tombstone: bool) -> BoxFuture<'_, Result<Vec<metapb::Store>>> {
        self.inner.get_all_stores(exclude_tombstone)
    }
}
