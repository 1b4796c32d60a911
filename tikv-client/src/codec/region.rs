//! Region boundaries between storage and user space: the memcomparable decoding of API V1
//! transactional mode and the keyspace clamping of API V2, behind one trait so that the
//! region, region-list, region-info and region-error walks are written once.
//!
//! Ports client-go `codecV1.DecodeRegionRange` / `decodeRegionError` / `DecodeBucketKeys`
//! (memcomparable mode) and their `codecV2` counterparts.

use bytes::Bytes;
use tikv_proto::{errorpb, metapb};

use super::{KEYSPACE_PREFIX_LEN, KeyspaceCodec};
use crate::kv::codec::decode_bytes;
use crate::pd::{NULL_KEYSPACE_ID, RegionInfo};
use crate::{Error, Result};

/// The region-key half of a codec that recodes region keys.
pub(super) trait RegionKeyCodec {
    /// A key from a request, echoed in a region error, back in user space.
    fn decode_key(&self, key: &Bytes) -> Result<Bytes>;

    /// Region boundaries in user space; `None` outside the keyspace.
    fn decode_region_range(&self, start: &Bytes, end: &Bytes) -> Result<Option<(Bytes, Bytes)>>;

    /// A region's bucket boundaries in user space.
    fn decode_bucket_keys(&self, keys: &[Bytes]) -> Result<Vec<Bytes>>;

    /// For messages.
    fn keyspace_id(&self) -> u32;
}

/// API V1 transactional mode: region boundaries are memcomparable, request keys are not.
#[derive(Debug, Clone, Copy)]
pub(super) struct MemComparable;

impl RegionKeyCodec for MemComparable {
    fn decode_key(&self, key: &Bytes) -> Result<Bytes> {
        Ok(key.clone())
    }

    fn decode_region_range(&self, start: &Bytes, end: &Bytes) -> Result<Option<(Bytes, Bytes)>> {
        Ok(Some((mem_decode(start)?, mem_decode(end)?)))
    }

    fn decode_bucket_keys(&self, keys: &[Bytes]) -> Result<Vec<Bytes>> {
        keys.iter().map(mem_decode).collect()
    }

    fn keyspace_id(&self) -> u32 {
        NULL_KEYSPACE_ID
    }
}

impl RegionKeyCodec for KeyspaceCodec {
    fn decode_key(&self, key: &Bytes) -> Result<Bytes> {
        KeyspaceCodec::decode_key(self, key)
    }

    fn decode_region_range(&self, start: &Bytes, end: &Bytes) -> Result<Option<(Bytes, Bytes)>> {
        Ok(self.decode_range(&mem_decode(start)?, &mem_decode(end)?))
    }

    fn decode_bucket_keys(&self, keys: &[Bytes]) -> Result<Vec<Bytes>> {
        let prefix = self.prefix().as_slice();
        let end = self.end_key().as_slice();
        let mut out: Vec<Bytes> = Vec::with_capacity(keys.len());
        let last = keys.len().saturating_sub(1);
        for (i, key) in keys.iter().enumerate() {
            let key = mem_decode(key)?;
            if i == 0 && key.as_ref() < prefix {
                // The region starts before the keyspace: its first bucket starts with it.
                out.push(Bytes::new());
            } else if i == last && (key.is_empty() || key.as_ref() >= end) {
                // The region ends after the keyspace: its last bucket ends with it.
                out.push(Bytes::new());
            } else if key.starts_with(prefix) {
                let user = key.slice(KEYSPACE_PREFIX_LEN..);
                // The keyspace's first key right after a clamped start would repeat it.
                if user.is_empty() && out.first().is_some_and(Bytes::is_empty) {
                    continue;
                }
                out.push(user);
            }
            // Inner keys of other keyspaces are not boundaries of this one.
        }
        Ok(out)
    }

    fn keyspace_id(&self) -> u32 {
        self.id()
    }
}

/// Decodes a memcomparable region boundary; the empty key (unbounded) stays empty.
pub(super) fn mem_decode(key: &Bytes) -> Result<Bytes> {
    if key.is_empty() {
        return Ok(Bytes::new());
    }
    // Bytes after the encoded key are ignored, as client-go does.
    let (decoded, _rest) = decode_bytes(key)
        .map_err(|e| Error::codec(format!("malformed region key {}: {e}", key.escape_ascii())))?;
    Ok(Bytes::from(decoded))
}

pub(super) fn decode_region<C: RegionKeyCodec>(
    codec: &C,
    mut region: metapb::Region,
) -> Result<Option<metapb::Region>> {
    match codec.decode_region_range(&region.start_key, &region.end_key)? {
        Some((start, end)) => {
            region.start_key = start;
            region.end_key = end;
            Ok(Some(region))
        }
        None => Ok(None),
    }
}

pub(super) fn decode_regions<C: RegionKeyCodec>(
    codec: &C,
    regions: Vec<metapb::Region>,
) -> Result<Vec<metapb::Region>> {
    let mut out = Vec::with_capacity(regions.len());
    for region in regions {
        if let Some(region) = decode_region(codec, region)? {
            out.push(region);
        }
    }
    Ok(out)
}

pub(super) fn decode_region_info<C: RegionKeyCodec>(
    codec: &C,
    mut info: RegionInfo,
) -> Result<Option<RegionInfo>> {
    let Some(region) = decode_region(codec, std::mem::take(&mut info.region))? else {
        return Ok(None);
    };
    info.region = region;
    if let Some(buckets) = info.buckets.as_mut() {
        buckets.keys = codec.decode_bucket_keys(&buckets.keys)?;
    }
    Ok(Some(info))
}

pub(super) fn decode_region_error<C: RegionKeyCodec>(
    codec: &C,
    err: &mut errorpb::Error,
) -> Result<()> {
    if let Some(info) = err.key_not_in_region.as_mut() {
        info.key = codec.decode_key(&info.key)?;
        let Some((start, end)) = codec.decode_region_range(&info.start_key, &info.end_key)? else {
            // The key is in the keyspace, so its region was routed here by a view of a region
            // that never intersected it: nothing sensible to map to.
            return Err(Error::codec(format!(
                "KeyNotInRegion reports region {} outside keyspace {}",
                info.region_id,
                codec.keyspace_id()
            )));
        };
        info.start_key = start;
        info.end_key = end;
    }
    if let Some(info) = err.epoch_not_match.as_mut() {
        let regions = std::mem::take(&mut info.current_regions);
        info.current_regions = decode_regions(codec, regions)?;
    }
    if let Some(info) = err.bucket_version_not_match.as_mut() {
        info.keys = codec.decode_bucket_keys(&info.keys)?;
    }
    Ok(())
}
