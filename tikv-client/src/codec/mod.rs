//! The API codec: how the keys a user speaks map to the keys TiKV and PD store, applied to every
//! request, every response and every region the client sees.
//!
//! # What it owns
//!
//! - [`ApiCodec`]: one of three key mappings, fixed when a client opens.
//!   - API V1, raw mode: keys travel and are stored as given; region boundaries too. Nothing
//!     to do anywhere.
//!   - API V1, transactional mode: keys travel as given, but TiKV stores them memcomparable-
//!     encoded, so the region boundaries PD and TiKV report are encoded. Only region keys are
//!     recoded (PD queries, regions, buckets, and the regions inside region errors).
//!   - API V2 ([`KeyspaceCodec`]): every key is prefixed with the mode byte (`r` raw, `x` txn)
//!     and the 3-byte big-endian keyspace id; region boundaries are memcomparable encodings of
//!     prefixed keys. A keyspace is the key range `[prefix, next keyspace's prefix)`, and the
//!     user's empty end key means the end of that range, never the end of the cluster.
//! - The request and response recoding: [`Encode`] (every key-bearing request field gets the
//!   prefix) and [`Decode`] (every key-bearing response field loses it, region errors are
//!   mapped into the keyspace's view), implemented for every command of `crate::rpc`.
//! - [`CodecRegionSource`]: a [`RegionSource`] wrapper that encodes the keys of every PD query
//!   and decodes every region PD answers, clamped to the keyspace. The region cache above it
//!   lives entirely in the user's key space, as client-go's caches above `CodecPDClient` do.
//!
//! # Who calls it, and the contract
//!
//! The raw client builds one [`ApiCodec`] when it opens (API V2: after PD's `LoadKeyspace`
//! found the keyspace ENABLED), stamps its version and keyspace on its `ContextTemplate`
//! ([`ApiCodec::stamp`]), encodes every key and range once when a call starts
//! ([`ApiCodec::encode_key`], [`ApiCodec::encode_range`]) and decodes every key it returns
//! ([`ApiCodec::decode_key`]). It routes by the stored form of its keys over the shared
//! `Cluster` region cache, which holds stored keys too, so region errors need no recoding.
//!
//! The whole-request recoding ([`Encode`], [`Decode`]) and [`CodecRegionSource`] serve a client
//! that keeps a region cache in its users' key space, as client-go's `CodecPDClient` does; they
//! are complete and tested, and no client uses them yet. Their contract, for such a sender:
//!
//! 1. call [`Encode::encode`] exactly once per request, on the user-space request, before its
//!    first attempt. Encoding is not idempotent (a second call prefixes again), and retries
//!    reuse the encoded request. Split requests by region *before* encoding: that region cache
//!    speaks user keys.
//! 2. call [`Decode::decode`] on every answer before looking at it (region error included).
//!
//! Under API V1 raw both are a single comparison and return. Under API V1 transactional mode
//! `encode` does nothing but `decode` must still run: the regions inside `EpochNotMatch` (and
//! the range of `KeyNotInRegion`, the keys of `BucketVersionNotMatch`) arrive memcomparable-
//! encoded and the region cache expects them decoded. A sender that takes the region error out
//! first can call [`ApiCodec::decode_region_error`] on it instead.
//!
//! A response key outside the keyspace (a TiKV bug, or a request built without the codec) is
//! an [`Error::Codec`]; a region outside the keyspace is not an error but "not there": PD
//! queries answer `None` for it, region lists leave it out.
//!
//! # What it ports
//!
//! client-go `internal/apicodec/` (`codec.go`, `codec_v1.go`, `codec_v2.go`, `mem_codec.go`)
//! and `internal/locate/pd_codec.go` (`CodecPDClient`). Differences:
//!
//! - requests are recoded in place, once: client-go copies each request per attempt because
//!   its requests are shared with retries; ours are owned by the sender.
//! - all prefixed keys of one request share one allocation, and decoded response keys are
//!   slices of the received buffers (no copy).
//! - `RawBatchScan` is recoded (client-go leaves it out); its empty end keys keep TiKV's "up to
//!   the next range" meaning under API V2, where TiKV refuses empty end keys.
//! - `SplitRegion`'s deprecated `split_key`, `left`, `right` and `errors`, and the keys of
//!   `BucketVersionNotMatch` and of the key errors `LockUpgradeConflict` / `SharedLockLost`,
//!   are recoded too.
//! - regions outside the keyspace in PD answers and in `SplitRegion` answers are dropped
//!   (client-go fails the call), as client-go already does for `EpochNotMatch`.
//! - coprocessor, MPP, batch-cop, compact, store-safe-ts and lock-observer commands are not
//!   ported, so their cases are not here.

mod region;
mod region_source;
mod request;
mod response;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tikv_proto::{errorpb, kvrpcpb, metapb};

use crate::kv::codec::encode_bytes;
use crate::pd::{KeyspaceMeta, NULL_KEYSPACE_ID, RegionInfo, RegionSource};
use crate::rpc::ContextTemplate;
use crate::{Error, Result};

use region::{MemComparable, RegionKeyCodec};
pub(crate) use region_source::CodecRegionSource;
#[allow(unused_imports)]
pub(crate) use request::Encode;
#[allow(unused_imports)]
pub(crate) use response::Decode;

/// First byte of every API V2 raw key.
pub(crate) const RAW_MODE_PREFIX: u8 = b'r';
/// First byte of every API V2 transactional key.
pub(crate) const TXN_MODE_PREFIX: u8 = b'x';
/// Mode byte plus the 3-byte keyspace id.
pub(crate) const KEYSPACE_PREFIX_LEN: usize = 4;
/// The largest keyspace id: it must fit in three bytes.
pub(crate) const MAX_KEYSPACE_ID: u32 = 0x00FF_FFFF;
/// The first bytes of every key API V2 uses, sorted (client-go `CodecV2Prefixes`). A key that
/// starts with none of them belongs to API V1 in a mixed deployment (`CodecV1ExcludePrefixes`).
pub(crate) const V2_MODE_PREFIXES: [u8; 2] = [RAW_MODE_PREFIX, TXN_MODE_PREFIX];

/// Which kind of data a client reads and writes: it picks the API V2 prefix, and under API V1
/// whether region boundaries are memcomparable-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum KeyMode {
    /// Raw KV.
    Raw,
    /// Transactional KV.
    Txn,
}

impl KeyMode {
    /// The API V2 mode byte.
    pub(crate) const fn prefix_byte(self) -> u8 {
        match self {
            KeyMode::Raw => RAW_MODE_PREFIX,
            KeyMode::Txn => TXN_MODE_PREFIX,
        }
    }
}

/// The key mapping of one client. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiCodec {
    /// API V1: user keys are storage keys. In [`KeyMode::Txn`] region boundaries are
    /// memcomparable-encoded.
    V1(KeyMode),
    /// API V2: every key lives inside one keyspace.
    V2(KeyspaceCodec),
}

impl ApiCodec {
    /// The API V1 codec of `mode` (client-go `NewCodecV1`).
    pub(crate) const fn v1(mode: KeyMode) -> ApiCodec {
        ApiCodec::V1(mode)
    }

    /// The API V2 codec of keyspace `id` (client-go `NewCodecV2`); `name` is stamped on
    /// requests. Fails with [`Error::InvalidArgument`] if the id needs more than three bytes.
    pub(crate) fn v2(mode: KeyMode, id: u32, name: impl Into<Arc<str>>) -> Result<ApiCodec> {
        KeyspaceCodec::new(mode, id, name.into()).map(ApiCodec::V2)
    }

    /// The API V2 codec of a keyspace PD described. The caller checks the keyspace's state
    /// (`KeyspaceMeta::ensure_enabled`) first.
    pub(crate) fn for_keyspace(mode: KeyMode, meta: &KeyspaceMeta) -> Result<ApiCodec> {
        ApiCodec::v2(mode, meta.id, meta.name.as_str())
    }

    /// The key mode.
    pub(crate) fn mode(&self) -> KeyMode {
        match self {
            ApiCodec::V1(mode) => *mode,
            ApiCodec::V2(ks) => ks.mode,
        }
    }

    /// The API version requests must carry in their context.
    pub(crate) fn api_version(&self) -> kvrpcpb::ApiVersion {
        match self {
            ApiCodec::V1(_) => kvrpcpb::ApiVersion::V1,
            ApiCodec::V2(_) => kvrpcpb::ApiVersion::V2,
        }
    }

    /// The API V2 keyspace, if any.
    #[inline]
    pub(crate) fn keyspace(&self) -> Option<&KeyspaceCodec> {
        match self {
            ApiCodec::V1(_) => None,
            ApiCodec::V2(ks) => Some(ks),
        }
    }

    /// The keyspace id, or PD's null keyspace id under API V1 (client-go `GetKeyspaceID`).
    pub(crate) fn keyspace_id(&self) -> u32 {
        self.keyspace().map_or(NULL_KEYSPACE_ID, |ks| ks.id)
    }

    /// Whether the codec changes nothing at all (API V1 raw): callers may skip it entirely.
    #[inline]
    pub(crate) fn is_identity(&self) -> bool {
        matches!(self, ApiCodec::V1(KeyMode::Raw))
    }

    /// Sets the API version and keyspace of a client's request context (client-go
    /// `setAPICtx`). Under API V1 the keyspace stays unset, as `ContextTemplate` wants it;
    /// client-go sends PD's null keyspace id (`NULL_KEYSPACE_ID`) there instead.
    pub(crate) fn stamp(&self, template: &mut ContextTemplate) {
        template.api_version = self.api_version() as i32;
        match self {
            ApiCodec::V1(_) => {
                template.keyspace_id = None;
                template.keyspace_name.clear();
            }
            ApiCodec::V2(ks) => {
                template.keyspace_id = Some(ks.id);
                template.keyspace_name = ks.name.to_string();
            }
        }
    }

    // ----- keys and ranges as they travel in requests ---------------------------------------

    /// A user key as it travels (client-go `EncodeKey`).
    pub(crate) fn encode_key(&self, key: &Bytes) -> Bytes {
        match self {
            ApiCodec::V1(_) => key.clone(),
            ApiCodec::V2(ks) => ks.encode_key(key),
        }
    }

    /// A key from a response back in user space (client-go `DecodeKey`); a key outside the
    /// keyspace is an [`Error::Codec`].
    pub(crate) fn decode_key(&self, key: &Bytes) -> Result<Bytes> {
        match self {
            ApiCodec::V1(_) => Ok(key.clone()),
            ApiCodec::V2(ks) => ks.decode_key(key),
        }
    }

    /// A user range `[start, end)` as it travels; an empty `end` is the end of the keyspace
    /// (client-go `EncodeRange`).
    pub(crate) fn encode_range(&self, start: &Bytes, end: &Bytes) -> (Bytes, Bytes) {
        match self {
            ApiCodec::V1(_) => (start.clone(), end.clone()),
            ApiCodec::V2(ks) => ks.encode_range(start, end, false),
        }
    }

    /// A storage range clamped to the keyspace and back in user space (client-go
    /// `DecodeRange`); `None` if it does not intersect the keyspace.
    pub(crate) fn decode_range(&self, start: &Bytes, end: &Bytes) -> Option<(Bytes, Bytes)> {
        match self {
            ApiCodec::V1(_) => Some((start.clone(), end.clone())),
            ApiCodec::V2(ks) => ks.decode_range(start, end),
        }
    }

    // ----- region keys ----------------------------------------------------------------------

    /// A user key in the form of region boundaries, for PD queries (client-go
    /// `EncodeRegionKey`).
    pub(crate) fn encode_region_key(&self, key: &[u8]) -> Bytes {
        match self {
            ApiCodec::V1(KeyMode::Raw) => Bytes::copy_from_slice(key),
            ApiCodec::V1(KeyMode::Txn) => Bytes::from(encode_bytes(key)),
            ApiCodec::V2(ks) => Bytes::from(encode_bytes(&ks.prefixed(key))),
        }
    }

    /// A user range in the form of region boundaries (client-go `EncodeRegionRange`). An empty
    /// `end` stays empty under API V1 and becomes the keyspace's end under API V2.
    pub(crate) fn encode_region_range(&self, start: &[u8], end: &[u8]) -> (Bytes, Bytes) {
        match self {
            ApiCodec::V1(_) => {
                let end = if end.is_empty() {
                    Bytes::new()
                } else {
                    self.encode_region_key(end)
                };
                (self.encode_region_key(start), end)
            }
            ApiCodec::V2(ks) => {
                let end = if end.is_empty() {
                    Bytes::from(encode_bytes(&ks.end))
                } else {
                    self.encode_region_key(end)
                };
                (self.encode_region_key(start), end)
            }
        }
    }

    /// Region boundaries in user space, clamped to the keyspace (client-go
    /// `DecodeRegionRange`): `None` if the range does not intersect the keyspace; a boundary
    /// that is not a valid memcomparable encoding is an [`Error::Codec`].
    pub(crate) fn decode_region_range(
        &self,
        start: &Bytes,
        end: &Bytes,
    ) -> Result<Option<(Bytes, Bytes)>> {
        match self {
            ApiCodec::V1(KeyMode::Raw) => Ok(Some((start.clone(), end.clone()))),
            ApiCodec::V1(KeyMode::Txn) => MemComparable.decode_region_range(start, end),
            ApiCodec::V2(ks) => ks.decode_region_range(start, end),
        }
    }

    /// A region's boundaries in user space; `None` if it lies outside the keyspace.
    pub(crate) fn decode_region(&self, region: metapb::Region) -> Result<Option<metapb::Region>> {
        match self {
            ApiCodec::V1(KeyMode::Raw) => Ok(Some(region)),
            ApiCodec::V1(KeyMode::Txn) => region::decode_region(&MemComparable, region),
            ApiCodec::V2(ks) => region::decode_region(ks, region),
        }
    }

    /// A region PD reported, with its boundaries and bucket keys in user space (client-go
    /// `CodecPDClient.decodeRegionKeyInPlace`); `None` if it lies outside the keyspace.
    pub(crate) fn decode_region_info(&self, info: RegionInfo) -> Result<Option<RegionInfo>> {
        match self {
            ApiCodec::V1(KeyMode::Raw) => Ok(Some(info)),
            ApiCodec::V1(KeyMode::Txn) => region::decode_region_info(&MemComparable, info),
            ApiCodec::V2(ks) => region::decode_region_info(ks, info),
        }
    }

    /// A region's bucket boundaries in user space (client-go `DecodeBucketKeys`). The first and
    /// last keys are the region's boundaries; under API V2 those outside the keyspace become
    /// empty (the keyspace's ends) and inner keys outside it are dropped.
    pub(crate) fn decode_bucket_keys(&self, keys: &[Bytes]) -> Result<Vec<Bytes>> {
        match self {
            ApiCodec::V1(KeyMode::Raw) => Ok(keys.to_vec()),
            ApiCodec::V1(KeyMode::Txn) => MemComparable.decode_bucket_keys(keys),
            ApiCodec::V2(ks) => ks.decode_bucket_keys(keys),
        }
    }

    /// Maps the keys of a region error into user space (client-go `decodeRegionError`):
    /// `KeyNotInRegion`'s key and region range, the regions of `EpochNotMatch` (those outside
    /// the keyspace are dropped) and the bucket keys of `BucketVersionNotMatch`.
    pub(crate) fn decode_region_error(&self, err: &mut errorpb::Error) -> Result<()> {
        match self {
            ApiCodec::V1(KeyMode::Raw) => Ok(()),
            ApiCodec::V1(KeyMode::Txn) => region::decode_region_error(&MemComparable, err),
            ApiCodec::V2(ks) => region::decode_region_error(ks, err),
        }
    }

    /// The region source the region cache should use: `inner` itself when the codec changes
    /// nothing, otherwise a [`CodecRegionSource`] over it.
    pub(crate) fn region_source(&self, inner: Arc<dyn RegionSource>) -> Arc<dyn RegionSource> {
        if self.is_identity() {
            inner
        } else {
            Arc::new(CodecRegionSource::new(inner, self.clone()))
        }
    }
}

/// The API V2 codec of one keyspace and mode (client-go `codecV2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyspaceCodec {
    mode: KeyMode,
    id: u32,
    name: Arc<str>,
    /// Mode byte and big-endian id: the first key of the keyspace.
    prefix: [u8; KEYSPACE_PREFIX_LEN],
    /// The next keyspace's prefix: the first key after the keyspace. For the last id the carry
    /// reaches the mode byte (`r` → `s`), which still sorts right after the keyspace.
    end: [u8; KEYSPACE_PREFIX_LEN],
}

impl KeyspaceCodec {
    fn new(mode: KeyMode, id: u32, name: Arc<str>) -> Result<KeyspaceCodec> {
        if id > MAX_KEYSPACE_ID {
            return Err(Error::invalid_argument(format!(
                "keyspace id {id} is out of range, maximum is {MAX_KEYSPACE_ID}"
            )));
        }
        let prefix_value = (u32::from(mode.prefix_byte()) << 24) | id;
        Ok(KeyspaceCodec {
            mode,
            id,
            name,
            prefix: prefix_value.to_be_bytes(),
            // The mode byte is `r` or `x`, so adding one never overflows.
            end: (prefix_value + 1).to_be_bytes(),
        })
    }

    /// The key mode.
    pub(crate) fn mode(&self) -> KeyMode {
        self.mode
    }

    /// The keyspace id.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// The keyspace name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The prefix of every key of the keyspace (client-go `GetKeyspace`).
    pub(crate) fn prefix(&self) -> &[u8; KEYSPACE_PREFIX_LEN] {
        &self.prefix
    }

    /// The first key after the keyspace.
    pub(crate) fn end_key(&self) -> &[u8; KEYSPACE_PREFIX_LEN] {
        &self.end
    }

    fn prefixed(&self, key: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(KEYSPACE_PREFIX_LEN + key.len());
        buf.extend_from_slice(&self.prefix);
        buf.extend_from_slice(key);
        buf
    }

    /// `key` with the keyspace prefix.
    pub(crate) fn encode_key(&self, key: &[u8]) -> Bytes {
        Bytes::from(self.prefixed(key))
    }

    /// Prefixes the keys of `items` in place, all in one shared allocation: a batch of a
    /// thousand keys costs one allocation instead of a thousand.
    pub(crate) fn encode_keys_of<T>(&self, items: &mut [T], key: impl Fn(&mut T) -> &mut Bytes) {
        match items {
            [] => {}
            [one] => {
                let k = key(one);
                *k = self.encode_key(k);
            }
            _ => {
                let total: usize = items
                    .iter_mut()
                    .map(|item| KEYSPACE_PREFIX_LEN + key(item).len())
                    .sum();
                let mut buf = BytesMut::with_capacity(total);
                for item in items.iter_mut() {
                    buf.put_slice(&self.prefix);
                    buf.put_slice(key(item));
                }
                let shared = buf.freeze();
                let mut at = 0;
                for item in items.iter_mut() {
                    let k = key(item);
                    let next = at + KEYSPACE_PREFIX_LEN + k.len();
                    *k = shared.slice(at..next);
                    at = next;
                }
            }
        }
    }

    /// Prefixes every key of a list in place.
    pub(crate) fn encode_keys(&self, keys: &mut [Bytes]) {
        self.encode_keys_of(keys, |k| k);
    }

    /// `key` without the keyspace prefix, sharing its buffer. An empty key stays empty (TiKV
    /// leaves optional key fields empty); any other key must carry the prefix.
    pub(crate) fn decode_key(&self, key: &Bytes) -> Result<Bytes> {
        if key.is_empty() {
            return Ok(Bytes::new());
        }
        if key.starts_with(&self.prefix) {
            return Ok(key.slice(KEYSPACE_PREFIX_LEN..));
        }
        Err(Error::codec(format!(
            "key {} does not belong to keyspace {} (prefix {})",
            key.escape_ascii(),
            self.id,
            self.prefix.escape_ascii()
        )))
    }

    /// Strips the prefix from every key of a list in place.
    pub(crate) fn decode_keys(&self, keys: &mut [Bytes]) -> Result<()> {
        for key in keys {
            *key = self.decode_key(key)?;
        }
        Ok(())
    }

    /// A user range as it travels (client-go `encodeRange`): an empty end becomes the end of
    /// the keyspace. With `reverse`, `start` is the upper bound and `end` the lower one (TiKV's
    /// reverse scans), so an empty `start` is the end of the keyspace and an empty `end` its
    /// first key.
    pub(crate) fn encode_range(&self, start: &[u8], end: &[u8], reverse: bool) -> (Bytes, Bytes) {
        if reverse {
            let (low, high) = self.encode_range(end, start, false);
            return (high, low);
        }
        let end = if end.is_empty() {
            Bytes::copy_from_slice(&self.end)
        } else {
            self.encode_key(end)
        };
        (self.encode_key(start), end)
    }

    /// Encodes a `(start, end)` pair of fields in place.
    pub(crate) fn encode_range_in_place(&self, start: &mut Bytes, end: &mut Bytes, reverse: bool) {
        (*start, *end) = self.encode_range(start, end, reverse);
    }

    /// A storage range `[start, end)` (empty end: unbounded) clamped to the keyspace, in user
    /// space (client-go `DecodeRange`): a bound outside the keyspace becomes empty (the
    /// keyspace's own end). `None` if the range does not intersect the keyspace.
    pub(crate) fn decode_range(&self, start: &Bytes, end: &Bytes) -> Option<(Bytes, Bytes)> {
        if start.as_ref() >= self.end.as_slice()
            || (!end.is_empty() && end.as_ref() <= self.prefix.as_slice())
        {
            return None;
        }
        // Inside `(prefix, end)` every key starts with the prefix, so a bound without it lies
        // outside the keyspace and is clamped.
        let strip = |key: &Bytes| {
            if key.starts_with(&self.prefix) {
                key.slice(KEYSPACE_PREFIX_LEN..)
            } else {
                Bytes::new()
            }
        };
        Some((strip(start), strip(end)))
    }
}

/// The keyspace id of an API V2 key (client-go `ParseKeyspaceID`); an [`Error::Codec`] if the
/// key is not one.
pub(crate) fn parse_keyspace_id(key: &[u8]) -> Result<u32> {
    let (prefix, _) = split_v2_key(key)?;
    Ok(u32::from_be_bytes([0, prefix[1], prefix[2], prefix[3]]))
}

/// Splits a storage key of `version` into its keyspace prefix and the user key (client-go
/// `DecodeKey`): API V1 keys have no prefix.
pub(crate) fn split_keyspace_prefix(
    key: &[u8],
    version: kvrpcpb::ApiVersion,
) -> Result<(&[u8], &[u8])> {
    match version {
        kvrpcpb::ApiVersion::V1 => Ok((&[], key)),
        kvrpcpb::ApiVersion::V2 => split_v2_key(key),
        other => Err(Error::codec(format!(
            "unsupported api version {}",
            other.as_str_name()
        ))),
    }
}

fn split_v2_key(key: &[u8]) -> Result<(&[u8], &[u8])> {
    match key.split_first_chunk::<KEYSPACE_PREFIX_LEN>() {
        Some((prefix, rest)) if V2_MODE_PREFIXES.contains(&prefix[0]) => Ok((prefix, rest)),
        _ => Err(Error::codec(format!(
            "invalid API V2 key {}",
            key.escape_ascii()
        ))),
    }
}
