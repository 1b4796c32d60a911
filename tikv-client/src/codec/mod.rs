//! The API codec: how the keys a user speaks map to the keys requests carry (the *wire* form)
//! and to the keys PD and TiKV keep region boundaries in (the *route* form), for API V1 and
//! API V2 (keyspaces).
//!
//! # What it owns
//!
//! [`ApiCodec`], one of four key mappings fixed when a client opens:
//!
//! | mode | wire form of a user key | route form of a wire key |
//! |---|---|---|
//! | API V1 raw | the key itself | the wire key itself |
//! | API V1 txn | the key itself | memcomparable encoding of the wire key |
//! | API V2 raw | `r` + 3-byte keyspace id + key | memcomparable encoding of the wire key |
//! | API V2 txn | `x` + 3-byte keyspace id + key | memcomparable encoding of the wire key |
//!
//! TiKV stores transactional keys (and every API V2 key) memcomparable-encoded, so the region
//! boundaries PD reports are encoded wire keys; raw API V1 keys are stored as given. An API V2
//! keyspace is the wire range `[prefix, next keyspace's prefix)`: a user's empty end key means
//! the end of that range, never the end of the cluster.
//!
//! # Who calls it, and the contract
//!
//! Every client (the raw client now, the transactional client next) builds one [`ApiCodec`]
//! when it opens (API V2: after PD's `LoadKeyspace` found the keyspace ENABLED) and then:
//!
//! 1. stamps the API version and keyspace on its request context ([`ApiCodec::stamp`]);
//! 2. encodes every user key and range once, when a call starts ([`ApiCodec::encode_key`],
//!    [`ApiCodec::encode_range`]); requests carry the wire form, and retries reuse it;
//! 3. locates regions by the route form of its wire keys ([`ApiCodec::route_key`]) in the
//!    shared `Cluster` region cache, and turns region boundaries back into wire keys
//!    ([`ApiCodec::wire_bound`]) to clamp ranges to a region and to step to the next one;
//! 4. decodes every key an answer returns ([`ApiCodec::decode_key`]); a key outside the
//!    keyspace (a TiKV bug, or a request built without the codec) is an [`Error::Codec`].
//!
//! Region errors (`EpochNotMatch`'s regions, `KeyNotInRegion`'s range, bucket keys) need no
//! recoding: they carry stored keys, and the region cache, which PD fills, speaks stored keys
//! too. Nothing else in the request layer knows about keyspaces.
//!
//! # What it ports
//!
//! client-go `internal/apicodec/` (`codec_v1.go`, `codec_v2.go`, `mem_codec.go`): the key and
//! range encodings, `EncodeRegionKey`/`DecodeRegionKey` of API V1 transactional mode
//! (memcomparable) and of API V2, the context stamping. The deliberate difference: client-go
//! wraps PD in a `CodecPDClient` per client (`internal/locate/pd_codec.go`), so each client
//! keeps its own region cache in user keys and recodes every request, response and region
//! error. Here the clients of one cluster share one region cache in stored-key form, so one
//! cluster serves any number of keyspaces and modes; each client encodes keys once at the call
//! entry and routes by their route form, and nothing is recoded per attempt.

use std::sync::Arc;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::kv::codec::{decode_bytes, encode_bytes};
use crate::pd::KeyspaceMeta;
use crate::rpc::ContextTemplate;
use crate::{Error, Result};

#[cfg(test)]
mod tests;
/// First byte of every API V2 raw key.
pub(crate) const RAW_MODE_PREFIX: u8 = b'r';
/// First byte of every API V2 transactional key.
#[cfg(test)]
pub(crate) const TXN_MODE_PREFIX: u8 = b'x';
/// Mode byte plus the 3-byte keyspace id.
pub(crate) const KEYSPACE_PREFIX_LEN: usize = 4;
/// The largest keyspace id: it must fit in three bytes.
pub(crate) const MAX_KEYSPACE_ID: u32 = 0x00FF_FFFF;

/// Which kind of data a client reads and writes: it picks the API V2 prefix, and under API V1
/// whether region boundaries are memcomparable-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum KeyMode {
    /// Raw KV.
    Raw,
    /// Transactional KV. Only tests build it until the transactional client lands: that
    /// client drops the `cfg`, and every method here already serves it.
    #[cfg(test)]
    Txn,
}

impl KeyMode {
    /// The API V2 mode byte.
    pub(crate) const fn prefix_byte(self) -> u8 {
        match self {
            KeyMode::Raw => RAW_MODE_PREFIX,
            #[cfg(test)]
            KeyMode::Txn => TXN_MODE_PREFIX,
        }
    }
}

/// The key mapping of one client. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiCodec {
    /// API V1: user keys are wire keys. In [`KeyMode::Txn`] region boundaries are
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

    /// The API version requests must carry in their context.
    pub(crate) fn api_version(&self) -> kvrpcpb::ApiVersion {
        match self {
            ApiCodec::V1(_) => kvrpcpb::ApiVersion::V1,
            ApiCodec::V2(_) => kvrpcpb::ApiVersion::V2,
        }
    }

    /// The API V2 keyspace, if any.
    pub(crate) fn keyspace(&self) -> Option<&KeyspaceCodec> {
        match self {
            ApiCodec::V1(_) => None,
            ApiCodec::V2(ks) => Some(ks),
        }
    }

    /// Whether the codec changes nothing at all (API V1 raw): callers may skip it entirely.
    #[inline]
    pub(crate) fn is_identity(&self) -> bool {
        matches!(self, ApiCodec::V1(KeyMode::Raw))
    }

    /// Sets the API version and keyspace of a client's request context (client-go
    /// `setAPICtx`). Under API V1 the keyspace stays unset, as `ContextTemplate` wants it;
    /// client-go sends PD's null keyspace id there instead.
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

    // ----- the wire form: keys and ranges as requests carry them -----------------------------

    /// A user key as it travels (client-go `EncodeKey`).
    pub(crate) fn encode_key(&self, key: &Bytes) -> Bytes {
        match self {
            ApiCodec::V1(_) => key.clone(),
            ApiCodec::V2(ks) => ks.encode_key(key),
        }
    }

    /// A key from an answer back in user space (client-go `DecodeKey`); a key outside the
    /// keyspace is an [`Error::Codec`].
    pub(crate) fn decode_key(&self, key: &Bytes) -> Result<Bytes> {
        match self {
            ApiCodec::V1(_) => Ok(key.clone()),
            ApiCodec::V2(ks) => ks.decode_key(key),
        }
    }

    /// A user range `[start, end)` as it travels; an empty `end` is unbounded under API V1
    /// and the end of the keyspace under API V2, so there it is never empty (client-go
    /// `EncodeRange`).
    pub(crate) fn encode_range(&self, start: &Bytes, end: &Bytes) -> (Bytes, Bytes) {
        match self {
            ApiCodec::V1(_) => (start.clone(), end.clone()),
            ApiCodec::V2(ks) => ks.encode_range(start, end),
        }
    }

    // ----- the route form: keys as region boundaries hold them -------------------------------

    /// The form of a wire key that region boundaries, and so the region cache, are in
    /// (client-go `EncodeRegionKey` of the wire key): its memcomparable encoding under API V1
    /// transactional mode and API V2; `None` under API V1 raw, where the wire key routes as it
    /// is (no copy).
    #[inline]
    pub(crate) fn route_key(&self, wire: &[u8]) -> Option<Bytes> {
        if self.is_identity() {
            None
        } else {
            Some(Bytes::from(encode_bytes(wire)))
        }
    }

    /// A region boundary as a wire key (client-go `DecodeRegionKey`): the empty boundary
    /// (unbounded) stays empty. Under API V2 the result may lie outside the keyspace (a region
    /// can span keyspaces); callers clamp it to their encoded range, whose bounds are inside.
    /// A boundary that is not a valid memcomparable encoding is an [`Error::Codec`].
    pub(crate) fn wire_bound(&self, boundary: &Bytes) -> Result<Bytes> {
        if self.is_identity() || boundary.is_empty() {
            return Ok(boundary.clone());
        }
        // Bytes after the encoded key are ignored, as client-go does.
        let (decoded, _rest) = decode_bytes(boundary).map_err(|e| {
            Error::codec(format!(
                "malformed region key {}: {e}",
                boundary.escape_ascii()
            ))
        })?;
        Ok(Bytes::from(decoded))
    }

    /// A region's wire bounds `[start, end)` in the user's key space (client-go
    /// `DecodeRegionRange`): under API V2 the region is clamped to the keyspace, a start before
    /// it becomes empty (the keyspace's first key) and an end at or after it becomes empty (the
    /// keyspace's end); under API V1 the bounds are the user's keys already.
    pub(crate) fn user_bounds(&self, start: &Bytes, end: &Bytes) -> (Bytes, Bytes) {
        let Some(ks) = self.keyspace() else {
            return (start.clone(), end.clone());
        };
        let start = if start.starts_with(&ks.prefix) {
            start.slice(KEYSPACE_PREFIX_LEN..)
        } else {
            Bytes::new()
        };
        let end = if end.starts_with(&ks.prefix) {
            end.slice(KEYSPACE_PREFIX_LEN..)
        } else {
            Bytes::new()
        };
        (start, end)
    }
}

/// The API V2 codec of one keyspace and mode (client-go `codecV2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyspaceCodec {
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
            id,
            name,
            prefix: prefix_value.to_be_bytes(),
            // The mode byte is `r` or `x`, so adding one never overflows.
            end: (prefix_value + 1).to_be_bytes(),
        })
    }

    /// The key mode.
    #[cfg(test)]
    pub(crate) fn mode(&self) -> KeyMode {
        if self.prefix[0] == RAW_MODE_PREFIX {
            KeyMode::Raw
        } else {
            KeyMode::Txn
        }
    }

    /// The keyspace id.
    #[cfg(test)]
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// The keyspace name.
    #[cfg(test)]
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The prefix of every key of the keyspace (client-go `GetKeyspace`).
    #[cfg(test)]
    pub(crate) fn prefix(&self) -> &[u8; KEYSPACE_PREFIX_LEN] {
        &self.prefix
    }

    /// The first key after the keyspace.
    #[cfg(test)]
    pub(crate) fn end_key(&self) -> &[u8; KEYSPACE_PREFIX_LEN] {
        &self.end
    }

    /// `key` with the keyspace prefix.
    pub(crate) fn encode_key(&self, key: &[u8]) -> Bytes {
        let mut buf = Vec::with_capacity(KEYSPACE_PREFIX_LEN + key.len());
        buf.extend_from_slice(&self.prefix);
        buf.extend_from_slice(key);
        Bytes::from(buf)
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

    /// A user range as it travels (client-go `encodeRange`): an empty end becomes the end of
    /// the keyspace.
    pub(crate) fn encode_range(&self, start: &[u8], end: &[u8]) -> (Bytes, Bytes) {
        let end = if end.is_empty() {
            Bytes::copy_from_slice(&self.end)
        } else {
            self.encode_key(end)
        };
        (self.encode_key(start), end)
    }
}
