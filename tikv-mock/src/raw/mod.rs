//! Raw KV: the storage ([`RawStore`]) and the request handlers of every `Raw*` RPC.
//!
//! Called by the TiKV dispatcher (`tikv/dispatch.rs`) with the cluster state locked, after the
//! fault hooks and the cluster-id check; each handler runs TiKV's checks in TiKV's order and
//! returns the complete response (region error, string error or result).
//!
//! Follows TiKV `src/server/service/kv.rs` (`future_raw_*`: how results and errors map onto
//! responses), `src/storage/mod.rs` (`raw_*`: the order of the API-version, key-size, TTL and
//! column-family checks), `src/storage/raw/{store,encoded}.rs` (scans, TTL, checksum),
//! `src/storage/txn/commands/compare_and_swap.rs`, `components/api_version` (V1/V2 key modes,
//! TTL) and raftstore (`region_snapshot.rs`: scans are bounded by the region and must start
//! inside it; `fsm/apply.rs`: written keys must lie in the region).
//!
//! TiKV quirks kept on purpose, because a client tested here must survive them there: an API V2
//! delete writes a tombstone, which `RawGetKeyTTL` still reports (TTL 0); API V1 `RawBatchPut`
//! zips pairs with `ttls`, so a too-short list of zero TTLs drops the extra pairs; a scan must
//! start inside `[region start, region end]` and is cut at the region's end, while a point read
//! outside the region is a string error, not a region error.
//!
//! Differences from TiKV: API V2 keeps only the newest version of a key (TiKV keeps MVCC
//! versions stamped by a causal timestamp; invisible to clients); the raft entry size that
//! `RaftEntryTooLarge` compares with 8 MiB is the sum of the written keys and values rather than
//! the encoded raft command; `RawGetKeyTTL` under API V1, where TiKV panics, answers the panic's
//! text as an error; error texts for cases clients do not match on (out-of-region point reads,
//! `abort` debug strings) have TiKV's shape but are not byte-identical. Regions split by key
//! count when the cluster has `auto_split_keys` (see [`maybe_auto_split`]).

mod crc64;
mod store;

use std::borrow::Cow;
use std::fmt;
use std::ops::Bound;

use bytes::Bytes;
use tikv_proto::{errorpb, kvrpcpb};

use crate::ApiVersion;
use crate::cluster::ClusterState;
use crate::codec::encode_bytes;

pub(crate) use store::{Checksum, KeyBounds, RawCf, RawStore};

/// TiKV's `storage.max-key-size` default.
const MAX_KEY_SIZE: usize = 8 * 1024;

/// TiKV's `raftstore.raft-entry-max-size` default.
pub(crate) const RAFT_ENTRY_MAX_SIZE: usize = 8 * 1024 * 1024;

/// Why a raw request failed. `Region` becomes the response's `region_error`; everything else
/// becomes its string `error` (or, for responses without one, a `KvPair` whose `error.abort`
/// carries the debug text, as TiKV's `extract_kv_pairs` does).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawError {
    Region(Box<errorpb::Error>),
    ApiVersionNotMatched {
        cmd: &'static str,
        storage: ApiVersion,
        request: i32,
    },
    InvalidKeyMode {
        cmd: &'static str,
        storage: ApiVersion,
        key: Bytes,
    },
    InvalidKeyRangeMode {
        cmd: &'static str,
        storage: ApiVersion,
        range: (Option<Bytes>, Option<Bytes>),
    },
    KeyTooLarge {
        size: usize,
        limit: usize,
    },
    InvalidCf(String),
    CfDeprecated(String),
    TtlNotEnabled,
    TtlLenNotEqualsToPairs,
    Other(String),
}

fn region_error(e: errorpb::Error) -> RawError {
    RawError::Region(Box::new(e))
}

/// Upper-case hex, as TiKV's `log_wrappers` prints keys.
pub(crate) fn hex_upper(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// The name TiKV's `Debug` gives a request's `kvrpcpb.APIVersion`.
fn request_api_name(v: i32) -> String {
    match kvrpcpb::ApiVersion::try_from(v) {
        Ok(kvrpcpb::ApiVersion::V1) => "V1".to_owned(),
        Ok(kvrpcpb::ApiVersion::V1ttl) => "V1ttl".to_owned(),
        Ok(kvrpcpb::ApiVersion::V2) => "V2".to_owned(),
        Ok(kvrpcpb::ApiVersion::V3) => "V3".to_owned(),
        Err(_) => v.to_string(),
    }
}

impl fmt::Display for RawError {
    // The texts are TiKV's (`src/storage/errors.rs`): clients and people grep for them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawError::Region(e) => write!(f, "{}", e.message),
            RawError::ApiVersionNotMatched {
                cmd,
                storage,
                request,
            } => write!(
                f,
                "Api version in request does not match with TiKV storage, cmd: {cmd}, \
                 storage: {storage:?}, request: {}",
                request_api_name(*request)
            ),
            RawError::InvalidKeyMode { cmd, storage, key } => write!(
                f,
                "Key mode mismatched with the request mode, cmd: {cmd}, storage: {storage:?}, \
                 key: {}",
                hex_upper(key)
            ),
            RawError::InvalidKeyRangeMode {
                cmd,
                storage,
                range,
            } => {
                let start = range.0.as_deref().map(hex_upper);
                let end = range.1.as_deref().map(hex_upper);
                write!(
                    f,
                    "Key mode mismatched with the request mode, cmd: {cmd}, \
                     storage: {storage:?}, range: ({start:?}, {end:?})"
                )
            }
            RawError::KeyTooLarge { size, limit } => {
                write!(f, "max key size exceeded, size: {size}, limit: {limit}")
            }
            RawError::InvalidCf(cf) => write!(f, "invalid cf name: {cf}"),
            RawError::CfDeprecated(cf) => write!(f, "cf is deprecated in API V2, cf name: {cf}"),
            RawError::TtlNotEnabled => {
                write!(f, "ttl is not enabled, but get put request with ttl")
            }
            RawError::TtlLenNotEqualsToPairs => write!(
                f,
                "The length of ttls does not equal to the length of pairs"
            ),
            RawError::Other(message) => f.write_str(message),
        }
    }
}

impl RawError {
    /// The `KeyError.abort` text TiKV gives (the storage error's `Debug`); clients must not
    /// parse it.
    fn abort_text(&self) -> String {
        match self {
            RawError::Other(message) => format!("Error(Other({message:?}))"),
            other => format!("Error({other:?})"),
        }
    }

    fn key_error(&self) -> kvrpcpb::KeyError {
        kvrpcpb::KeyError {
            abort: self.abort_text(),
            ..Default::default()
        }
    }
}

/// Splits a result into (region error, string error) as the `future_raw_*` functions do.
fn string_outcome<T>(result: Result<T, RawError>) -> (Option<T>, Option<errorpb::Error>, String) {
    match result {
        Ok(v) => (Some(v), None, String::new()),
        Err(RawError::Region(e)) => (None, Some(*e), String::new()),
        Err(e) => (None, None, e.to_string()),
    }
}

/// Splits a result into (region error, pairs) as `extract_kv_pairs` does: any other error
/// becomes a single pair carrying it.
fn pairs_outcome(
    result: Result<Vec<kvrpcpb::KvPair>, RawError>,
) -> (Option<errorpb::Error>, Vec<kvrpcpb::KvPair>) {
    match result {
        Ok(pairs) => (None, pairs),
        Err(RawError::Region(e)) => (Some(*e), Vec::new()),
        Err(e) => (
            None,
            vec![kvrpcpb::KvPair {
                error: Some(e.key_error()),
                ..Default::default()
            }],
        ),
    }
}

fn ctx_of(ctx: &Option<kvrpcpb::Context>) -> Cow<'_, kvrpcpb::Context> {
    match ctx {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(kvrpcpb::Context::default()),
    }
}

fn now_secs(state: &ClusterState) -> u64 {
    state.clock.now_ms() / 1000
}

/// The storage form of a wire key; cheap (a reference count) under API V1.
fn storage_key(api: ApiVersion, key: &Bytes) -> Bytes {
    match api {
        ApiVersion::V1 => key.clone(),
        ApiVersion::V2 => Bytes::from(encode_bytes(key)),
    }
}

fn is_raw_mode(key: &[u8]) -> bool {
    key.first() == Some(&b'r')
}

/// TiKV's `check_api_version` for raw commands.
fn check_api_keys<'k>(
    api: ApiVersion,
    ctx: &kvrpcpb::Context,
    cmd: &'static str,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> Result<(), RawError> {
    match (api, kvrpcpb::ApiVersion::try_from(ctx.api_version)) {
        (ApiVersion::V1, Ok(kvrpcpb::ApiVersion::V1)) => Ok(()),
        (ApiVersion::V2, Ok(kvrpcpb::ApiVersion::V2)) => {
            match keys.into_iter().find(|k| !is_raw_mode(k)) {
                Some(bad) => Err(RawError::InvalidKeyMode {
                    cmd,
                    storage: api,
                    key: Bytes::copy_from_slice(bad),
                }),
                None => Ok(()),
            }
        }
        _ => Err(RawError::ApiVersionNotMatched {
            cmd,
            storage: api,
            request: ctx.api_version,
        }),
    }
}

/// TiKV's `check_api_version_ranges` for raw commands: under V2 both ends must be present, in
/// raw mode, and either share their first byte or end at the next mode (`"r".."s"`).
fn check_api_ranges<'k>(
    api: ApiVersion,
    ctx: &kvrpcpb::Context,
    cmd: &'static str,
    ranges: impl IntoIterator<Item = (Option<&'k [u8]>, Option<&'k [u8]>)>,
) -> Result<(), RawError> {
    match (api, kvrpcpb::ApiVersion::try_from(ctx.api_version)) {
        (ApiVersion::V1, Ok(kvrpcpb::ApiVersion::V1)) => Ok(()),
        (ApiVersion::V2, Ok(kvrpcpb::ApiVersion::V2)) => {
            for (start, end) in ranges {
                let raw_range = match (start, end) {
                    (Some(s), Some(e)) if !s.is_empty() && !e.is_empty() => {
                        (s[0] == e[0] || e == [s[0].wrapping_add(1)]) && is_raw_mode(s)
                    }
                    _ => false,
                };
                if !raw_range {
                    return Err(RawError::InvalidKeyRangeMode {
                        cmd,
                        storage: api,
                        range: (
                            start.map(Bytes::copy_from_slice),
                            end.map(Bytes::copy_from_slice),
                        ),
                    });
                }
            }
            Ok(())
        }
        _ => Err(RawError::ApiVersionNotMatched {
            cmd,
            storage: api,
            request: ctx.api_version,
        }),
    }
}

fn check_key_size<'k>(keys: impl IntoIterator<Item = &'k [u8]>) -> Result<(), RawError> {
    match keys.into_iter().find(|k| k.len() > MAX_KEY_SIZE) {
        Some(k) => Err(RawError::KeyTooLarge {
            size: k.len(),
            limit: MAX_KEY_SIZE,
        }),
        None => Ok(()),
    }
}

/// TiKV's `rawkv_cf`.
fn raw_cf(api: ApiVersion, cf: &str) -> Result<RawCf, RawError> {
    match (api, cf) {
        (_, "") => Ok(RawCf::Default),
        (ApiVersion::V1, "default") => Ok(RawCf::Default),
        (ApiVersion::V1, "lock") => Ok(RawCf::Lock),
        (ApiVersion::V1, "write") => Ok(RawCf::Write),
        (ApiVersion::V1, other) => Err(RawError::InvalidCf(other.to_owned())),
        (ApiVersion::V2, other) => Err(RawError::CfDeprecated(other.to_owned())),
    }
}

/// TiKV's `check_ttl_valid`: V1 refuses any TTL; V2 needs one TTL per pair.
fn check_ttls(api: ApiVersion, pairs: usize, ttls: &[u64]) -> Result<(), RawError> {
    match api {
        ApiVersion::V1 if ttls.iter().any(|&t| t != 0) => Err(RawError::TtlNotEnabled),
        ApiVersion::V1 => Ok(()),
        ApiVersion::V2 if ttls.len() != pairs => Err(RawError::TtlLenNotEqualsToPairs),
        ApiVersion::V2 => Ok(()),
    }
}

/// TiKV's `ttl_to_expire_ts`.
fn expire_at(now_secs: u64, ttl: u64) -> Option<u64> {
    (ttl != 0).then(|| now_secs.saturating_add(ttl))
}

/// The range of the region a request addressed, copied out of the state so the data can be
/// read while it is in hand.
#[derive(Debug, Clone)]
struct RegionView {
    id: u64,
    start: Bytes,
    end: Bytes,
}

impl RegionView {
    fn of(state: &ClusterState, store_id: u64, ctx: &kvrpcpb::Context) -> Result<Self, RawError> {
        let region = state.validate(store_id, ctx).map_err(region_error)?;
        Ok(RegionView {
            id: region.id(),
            start: region.meta.start_key.clone(),
            end: region.meta.end_key.clone(),
        })
    }

    fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_ref() && (self.end.is_empty() || key < self.end.as_ref())
    }

    fn not_in_region(&self, key: &[u8]) -> errorpb::Error {
        key_not_in_region(self.id, &self.start, &self.end, key)
    }

    /// A scan may start anywhere in `[start, end]` (raftstore's `should_seekable`); elsewhere
    /// it fails with KeyNotInRegion.
    fn check_seekable(&self, key: &[u8]) -> Result<(), RawError> {
        let inside =
            key >= self.start.as_ref() && (self.end.is_empty() || key <= self.end.as_ref());
        if inside {
            Ok(())
        } else {
            Err(region_error(self.not_in_region(key)))
        }
    }

    /// A point read outside the region fails in TiKV's engine with a plain error, not a region
    /// error.
    fn check_point(&self, key: &[u8]) -> Result<(), RawError> {
        if self.contains(key) {
            Ok(())
        } else {
            Err(RawError::Other(self.out_of_range(key)))
        }
    }

    fn out_of_range(&self, key: &[u8]) -> String {
        format!(
            "Key {} is out of [region {}] [{}, {})",
            hex_upper(key),
            self.id,
            hex_upper(&self.start),
            hex_upper(&self.end)
        )
    }

    fn end_bound(&self) -> Bound<&[u8]> {
        if self.end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(self.end.as_ref())
        }
    }
}

/// KeyNotInRegion with raftstore's message.
pub(crate) fn key_not_in_region(
    region_id: u64,
    start: &Bytes,
    end: &Bytes,
    key: &[u8],
) -> errorpb::Error {
    errorpb::Error {
        message: format!(
            "key {} is not in region key range [{}, {}) for region {region_id}",
            hex_upper(key),
            hex_upper(start),
            hex_upper(end)
        ),
        key_not_in_region: Some(errorpb::KeyNotInRegion {
            key: Bytes::copy_from_slice(key),
            region_id,
            start_key: start.clone(),
            end_key: end.clone(),
        }),
        ..Default::default()
    }
}

fn raft_entry_too_large(region_id: u64, entry_size: usize) -> errorpb::Error {
    errorpb::Error {
        message: format!("raft entry is too large, region {region_id}, entry size {entry_size}"),
        raft_entry_too_large: Some(errorpb::RaftEntryTooLarge {
            region_id,
            entry_size: entry_size as u64,
        }),
        ..Default::default()
    }
}

/// One modification of a raw write batch.
#[derive(Debug)]
enum Write {
    Put {
        storage_key: Bytes,
        key: Bytes,
        value: Bytes,
        expire_secs: Option<u64>,
    },
    Delete {
        storage_key: Bytes,
        key: Bytes,
    },
}

impl Write {
    fn storage_key(&self) -> &[u8] {
        match self {
            Write::Put { storage_key, .. } | Write::Delete { storage_key, .. } => storage_key,
        }
    }

    fn size(&self) -> usize {
        match self {
            Write::Put {
                storage_key, value, ..
            } => storage_key.len() + value.len(),
            Write::Delete { storage_key, .. } => storage_key.len(),
        }
    }
}

/// Proposes and applies a write batch as raftstore would: the region must accept the request
/// (store, peer, leader, epoch), the batch must fit in a raft entry, every key must lie in the
/// region; then every modification applies at once, or none does.
fn write(
    state: &mut ClusterState,
    store_id: u64,
    ctx: &kvrpcpb::Context,
    cf: RawCf,
    writes: Vec<Write>,
) -> Result<(), RawError> {
    let region_id = {
        let region = state.validate(store_id, ctx).map_err(region_error)?;
        // API V2 writes take a causal timestamp, which a new leader must first sync with the
        // TSO (TiKV `check_causal_ts_flushed` / `get_raw_ext`).
        if state.api_version == ApiVersion::V2 && !region.max_ts_synced {
            return Err(region_error(errorpb::Error {
                message: format!(
                    "RawKV write fails due to potentially stale max timestamp, region_id: {}",
                    region.id()
                ),
                max_timestamp_not_synced: Some(Default::default()),
                ..Default::default()
            }));
        }
        let entry_size: usize = writes.iter().map(Write::size).sum();
        if entry_size > RAFT_ENTRY_MAX_SIZE {
            return Err(region_error(raft_entry_too_large(region.id(), entry_size)));
        }
        for w in &writes {
            ClusterState::check_key(region, w.storage_key()).map_err(region_error)?;
        }
        region.id()
    };
    // API V2 deletes are logical: TiKV writes a tombstone version so CDC can see them.
    let tombstone = state.api_version == ApiVersion::V2;
    for w in writes {
        match w {
            Write::Put {
                storage_key,
                key,
                value,
                expire_secs,
            } => state.raw.put(cf, storage_key, key, value, expire_secs),
            Write::Delete { storage_key, key } => state.raw.delete(cf, storage_key, key, tombstone),
        }
    }
    maybe_auto_split(state, region_id);
    Ok(())
}

/// Splits the region (and, recursively, its halves) at its median key while it holds more
/// than `auto_split_keys` live raw keys: TiKV's split checker splits a region that grew past
/// `region-split-size` roughly in half, and this counts keys instead of bytes so tests can
/// choose the threshold. Counting stops just past the threshold, so the check costs at most
/// that many steps per write.
pub(crate) fn maybe_auto_split(state: &mut ClusterState, region_id: u64) {
    let Some(limit) = state.auto_split_keys else {
        return;
    };
    let now = now_secs(state);
    let mut pending = vec![region_id];
    while let Some(id) = pending.pop() {
        let Some(region) = state.region(id) else {
            continue;
        };
        let start = region.meta.start_key.clone();
        let end = region.meta.end_key.clone();
        let bounds: KeyBounds<'_> = (
            Bound::Included(start.as_ref()),
            if end.is_empty() {
                Bound::Unbounded
            } else {
                Bound::Excluded(end.as_ref())
            },
        );
        if state.raw.live_keys(bounds, now, limit).len() <= limit {
            continue;
        }
        let keys = state.raw.live_keys(bounds, now, usize::MAX);
        // At least limit + 1 >= 2 distinct keys, so the median lies strictly inside the region.
        let Some(median) = keys.get(keys.len() / 2).cloned() else {
            continue;
        };
        if let Ok(regions) = state.split(&[median]) {
            pending.extend(regions.iter().map(|r| r.id));
        }
    }
}

// ----- reads ----------------------------------------------------------------------------------

/// RawGet.
pub(crate) fn raw_get(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::RawGetRequest,
) -> kvrpcpb::RawGetResponse {
    let result = (|| -> Result<_, RawError> {
        let api = state.api_version;
        let ctx = ctx_of(&req.context);
        check_api_keys(api, &ctx, "raw_get", [req.key.as_ref()])?;
        let region = RegionView::of(state, store_id, &ctx)?;
        let cf = raw_cf(api, &req.cf)?;
        let skey = storage_key(api, &req.key);
        region.check_point(&skey)?;
        Ok(state
            .raw
            .get(cf, &skey, now_secs(state))
            .map(|e| e.value.clone()))
    })();
    let (value, region_error, error) = string_outcome(result);
    match value {
        Some(Some(value)) => kvrpcpb::RawGetResponse {
            value,
            ..Default::default()
        },
        Some(None) => kvrpcpb::RawGetResponse {
            not_found: true,
            ..Default::default()
        },
        None => kvrpcpb::RawGetResponse {
            region_error,
            error,
            ..Default::default()
        },
    }
}

/// RawBatchGet: found keys only; a key outside the region yields a pair carrying the error.
pub(crate) fn raw_batch_get(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::RawBatchGetRequest,
) -> kvrpcpb::RawBatchGetResponse {
    let result = (|| -> Result<_, RawError> {
        let api = state.api_version;
        let ctx = ctx_of(&req.context);
        check_api_keys(
            api,
            &ctx,
            "raw_batch_get",
            req.keys.iter().map(|k| k.as_ref()),
        )?;
        let region = RegionView::of(state, store_id, &ctx)?;
        let cf = raw_cf(api, &req.cf)?;
        let now = now_secs(state);
        let mut pairs = Vec::new();
        for key in &req.keys {
            let skey = storage_key(api, key);
            if let Err(e) = region.check_point(&skey) {
                pairs.push(kvrpcpb::KvPair {
                    error: Some(e.key_error()),
                    ..Default::default()
                });
                continue;
            }
            if let Some(entry) = state.raw.get(cf, &skey, now) {
                pairs.push(kvrpcpb::KvPair {
                    key: key.clone(),
                    value: entry.value.clone(),
                    ..Default::default()
                });
            }
        }
        Ok(pairs)
    })();
    let (region_error, pairs) = pairs_outcome(result);
    kvrpcpb::RawBatchGetResponse {
        region_error,
        pairs,
    }
}

/// A scan of `[start, end)` (forward) or of the keys strictly below `start` down to `end`
/// (reverse), within the region: the start must be seekable in the region, and the range is
/// cut at the region's boundaries.
#[allow(clippy::too_many_arguments)]
fn scan_in_region(
    store: &RawStore,
    region: &RegionView,
    cf: RawCf,
    start: &[u8],
    end: Option<&[u8]>,
    limit: usize,
    key_only: bool,
    reverse: bool,
    now: u64,
) -> Result<Vec<kvrpcpb::KvPair>, RawError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    region.check_seekable(start)?;
    // An empty bound is no bound, as in TiKV's iterator options.
    let end = end.filter(|e| !e.is_empty());
    let bounds: KeyBounds<'_> = if reverse {
        let lower = match end {
            Some(e) if e > region.start.as_ref() => e,
            _ => region.start.as_ref(),
        };
        (Bound::Included(lower), Bound::Excluded(start))
    } else {
        let upper = match end {
            Some(e) if region.end.is_empty() || e < region.end.as_ref() => Bound::Excluded(e),
            _ => region.end_bound(),
        };
        (Bound::Included(start), upper)
    };
    Ok(store.scan(cf, bounds, limit, reverse, key_only, now))
}

/// RawScan.
pub(crate) fn raw_scan(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::RawScanRequest,
) -> kvrpcpb::RawScanResponse {
    let result = (|| -> Result<_, RawError> {
        let api = state.api_version;
        let ctx = ctx_of(&req.context);
        let end = (!req.end_key.is_empty()).then_some(&req.end_key);
        check_api_ranges(
            api,
            &ctx,
            "raw_scan",
            [(Some(req.start_key.as_ref()), end.map(|e| e.as_ref()))],
        )?;
        let region = RegionView::of(state, store_id, &ctx)?;
        let cf = raw_cf(api, &req.cf)?;
        let start = storage_key(api, &req.start_key);
        let end = end.map(|e| storage_key(api, e));
        scan_in_region(
            &state.raw,
            &region,
            cf,
            &start,
            end.as_deref(),
            req.limit as usize,
            req.key_only,
            req.reverse,
            now_secs(state),
        )
    })();
    let (region_error, kvs) = pairs_outcome(result);
    kvrpcpb::RawScanResponse { region_error, kvs }
}

/// TiKV's `check_key_ranges`: every range must be non-empty in the scan direction, an empty
/// end taking the next range's start.
fn key_ranges_valid(ranges: &[kvrpcpb::KeyRange], reverse: bool) -> bool {
    ranges.iter().enumerate().all(|(i, range)| {
        let mut end = range.end_key.as_ref();
        if end.is_empty()
            && let Some(next) = ranges.get(i + 1)
        {
            end = next.start_key.as_ref();
        }
        let start = range.start_key.as_ref();
        end.is_empty() || (if reverse { start > end } else { start < end })
    })
}

/// RawBatchScan: each range scanned as RawScan with `each_limit`, results concatenated.
pub(crate) fn raw_batch_scan(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::RawBatchScanRequest,
) -> kvrpcpb::RawBatchScanResponse {
    let result = (|| -> Result<_, RawError> {
        let api = state.api_version;
        let ctx = ctx_of(&req.context);
        check_api_ranges(
            api,
            &ctx,
            "raw_batch_scan",
            req.ranges
                .iter()
                .map(|r| (Some(r.start_key.as_ref()), Some(r.end_key.as_ref()))),
        )?;
        let region = RegionView::of(state, store_id, &ctx)?;
        let cf = raw_cf(api, &req.cf)?;
        if !key_ranges_valid(&req.ranges, req.reverse) {
            return Err(RawError::Other("Invalid KeyRanges".to_owned()));
        }
        let now = now_secs(state);
        let mut out = Vec::new();
        for (i, range) in req.ranges.iter().enumerate() {
            let start = storage_key(api, &range.start_key);
            let end = if range.end_key.is_empty() {
                req.ranges
                    .get(i + 1)
                    .map(|next| storage_key(api, &next.start_key))
            } else {
                Some(storage_key(api, &range.end_key))
            };
            out.extend(scan_in_region(
                &state.raw,
                &region,
                cf,
                &start,
                end.as_deref(),
                req.each_limit as usize,
                req.key_only,
                req.reverse,
                now,
            )?);
        }
        Ok(out)
    })();
    let (region_error, kvs) = pairs_outcome(result);
    kvrpcpb::RawBatchScanResponse { region_error, kvs }
}

/// RawGetKeyTTL: remaining seconds, 0 for a key without TTL, not_found when absent or expired.
pub(crate) fn raw_get_key_ttl(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::RawGetKeyTtlRequest,
) -> kvrpcpb::RawGetKeyTtlResponse {
    let result = (|| -> Result<_, RawError> {
        let api = state.api_version;
        let ctx = ctx_of(&req.context);
        check_api_keys(api, &ctx, "raw_get_key_ttl", [req.key.as_ref()])?;
        let region = RegionView::of(state, store_id, &ctx)?;
        let cf = raw_cf(api, &req.cf)?;
        if api == ApiVersion::V1 {
            // A TiKV without TTL panics here (`RawStore::raw_get_key_ttl`); answering with the
            // panic's text keeps the mock up and says the same thing.
            return Err(RawError::Other("get ttl on non-ttl store".to_owned()));
        }
        let skey = storage_key(api, &req.key);
        region.check_point(&skey)?;
        Ok(state.raw.ttl(cf, &skey, now_secs(state)))
    })();
    let (ttl, region_error, error) = string_outcome(result);
    match ttl {
        Some(Some(ttl)) => kvrpcpb::RawGetKeyTtlResponse {
            ttl,
            ..Default::default()
        },
        Some(None) => kvrpcpb::RawGetKeyTtlResponse {
            not_found: true,
            ..Default::default()
        },
        None => kvrpcpb::RawGetKeyTtlResponse {
            region_error,
            error,
            ..Default::default()
        },
    }
}

/// RawChecksum: CRC-64/XZ of each visible entry's wire key ++ value, XORed over the ranges.
pub(crate) fn raw_checksum(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::RawChecksumRequest,
) -> kvrpcpb::RawChecksumResponse {
    let result = (|| -> Result<_, RawError> {
        let api = state.api_version;
        let ctx = ctx_of(&req.context);
        if req.algorithm != kvrpcpb::ChecksumAlgorithm::Crc64Xor as i32 {
            return Err(RawError::Other(format!(
                "unknown checksum algorithm {}",
                req.algorithm
            )));
        }
        check_api_ranges(
            api,
            &ctx,
            "raw_checksum",
            req.ranges
                .iter()
                .map(|r| (Some(r.start_key.as_ref()), Some(r.end_key.as_ref()))),
        )?;
        let region = RegionView::of(state, store_id, &ctx)?;
        let now = now_secs(state);
        let mut acc = Checksum::default();
        for range in &req.ranges {
            let start = storage_key(api, &range.start_key);
            let end = storage_key(api, &range.end_key);
            region.check_seekable(&start)?;
            let upper = if !end.is_empty() && (region.end.is_empty() || end < region.end) {
                Bound::Excluded(end.as_ref())
            } else {
                region.end_bound()
            };
            state.raw.checksum(
                RawCf::Default,
                (Bound::Included(start.as_ref()), upper),
                now,
                &mut acc,
            );
        }
        Ok(acc)
    })();
    let (acc, region_error, error) = string_outcome(result);
    let acc = acc.unwrap_or_default();
    kvrpcpb::RawChecksumResponse {
        region_error,
        error,
        checksum: acc.checksum,
        total_kvs: acc.total_kvs,
        total_bytes: acc.total_bytes,
    }
}

// ----- writes ---------------------------------------------------------------------------------

/// RawPut. `for_cas` routes it through TiKV's atomic path, which skips the key-size check.
pub(crate) fn raw_put(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::RawPutRequest,
) -> kvrpcpb::RawPutResponse {
    let result = (|| -> Result<_, RawError> {
        let api = state.api_version;
        let ctx = ctx_of(&req.context);
        let cf = if req.for_cas {
            check_api_keys(api, &ctx, "raw_atomic_store", [req.key.as_ref()])?;
            let cf = raw_cf(api, &req.cf)?;
            check_ttls(api, 1, &[req.ttl])?;
            cf
        } else {
            check_api_keys(api, &ctx, "raw_put", [req.key.as_ref()])?;
            check_key_size([req.key.as_ref()])?;
            if api == ApiVersion::V1 && req.ttl != 0 {
                return Err(RawError::TtlNotEnabled);
            }
            raw_cf(api, &req.cf)?
        };
        let put = Write::Put {
            storage_key: storage_key(api, &req.key),
            key: req.key.clone(),
            value: req.value.clone(),
            expire_secs: expire_at(now_secs(state), req.ttl),
        };
        write(state, store_id, &ctx, cf, vec![put])
    })();
    let (_, region_error, error) = string_outcome(result);
    kvrpcpb::RawPutResponse {
        region_error,
        error,
    }
}

/// RawBatchPut. `ttls` may be empty (no TTL), one TTL for every pair (older clients), or one
/// per pair.
pub(crate) fn raw_batch_put(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::RawBatchPutRequest,
) -> kvrpcpb::RawBatchPutResponse {
    let result = (|| -> Result<_, RawError> {
        let api = state.api_version;
        let ctx = ctx_of(&req.context);
        let n = req.pairs.len();
        let ttls = match req.ttls.as_slice() {
            [] => vec![0; n],
            [one] => vec![*one; n],
            many => many.to_vec(),
        };
        let keys = || req.pairs.iter().map(|p| p.key.as_ref());
        let cmd = if req.for_cas {
            "raw_atomic_store"
        } else {
            "raw_batch_put"
        };
        check_api_keys(api, &ctx, cmd, keys())?;
        let cf = raw_cf(api, &req.cf)?;
        if !req.for_cas {
            check_key_size(keys())?;
        }
        check_ttls(api, n, &ttls)?;
        let now = now_secs(state);
        // Zipped as TiKV does: under V1 a too-short all-zero `ttls` silently drops the pairs
        // past its end.
        let puts = req
            .pairs
            .iter()
            .zip(ttls)
            .map(|(pair, ttl)| Write::Put {
                storage_key: storage_key(api, &pair.key),
                key: pair.key.clone(),
                value: pair.value.clone(),
                expire_secs: expire_at(now, ttl),
            })
            .collect();
        write(state, store_id, &ctx, cf, puts)
    })();
    let (_, region_error, error) = string_outcome(result);
    kvrpcpb::RawBatchPutResponse {
        region_error,
        error,
    }
}

/// RawDelete.
pub(crate) fn raw_delete(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::RawDeleteRequest,
) -> kvrpcpb::RawDeleteResponse {
    let result = (|| -> Result<_, RawError> {
        let api = state.api_version;
        let ctx = ctx_of(&req.context);
        let cf = if req.for_cas {
            check_api_keys(api, &ctx, "raw_atomic_store", [req.key.as_ref()])?;
            raw_cf(api, &req.cf)?
        } else {
            check_api_keys(api, &ctx, "raw_delete", [req.key.as_ref()])?;
            check_key_size([req.key.as_ref()])?;
            raw_cf(api, &req.cf)?
        };
        let delete = Write::Delete {
            storage_key: storage_key(api, &req.key),
            key: req.key.clone(),
        };
        write(state, store_id, &ctx, cf, vec![delete])
    })();
    let (_, region_error, error) = string_outcome(result);
    kvrpcpb::RawDeleteResponse {
        region_error,
        error,
    }
}

/// RawBatchDelete.
pub(crate) fn raw_batch_delete(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::RawBatchDeleteRequest,
) -> kvrpcpb::RawBatchDeleteResponse {
    let result = (|| -> Result<_, RawError> {
        let api = state.api_version;
        let ctx = ctx_of(&req.context);
        let keys = || req.keys.iter().map(|k| k.as_ref());
        let cmd = if req.for_cas {
            "raw_atomic_store"
        } else {
            "raw_batch_delete"
        };
        check_api_keys(api, &ctx, cmd, keys())?;
        let cf = raw_cf(api, &req.cf)?;
        if !req.for_cas {
            check_key_size(keys())?;
        }
        let deletes = req
            .keys
            .iter()
            .map(|key| Write::Delete {
                storage_key: storage_key(api, key),
                key: key.clone(),
            })
            .collect();
        write(state, store_id, &ctx, cf, deletes)
    })();
    let (_, region_error, error) = string_outcome(result);
    kvrpcpb::RawBatchDeleteResponse {
        region_error,
        error,
    }
}

/// RawDeleteRange: a physical delete of `[start, end)` (also under V2), which must lie in the
/// region; an empty end reaches the end of the key space, so only the last region accepts it.
pub(crate) fn raw_delete_range(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::RawDeleteRangeRequest,
) -> kvrpcpb::RawDeleteRangeResponse {
    let result = (|| -> Result<_, RawError> {
        let api = state.api_version;
        let ctx = ctx_of(&req.context);
        check_key_size([req.start_key.as_ref(), req.end_key.as_ref()])?;
        check_api_ranges(
            api,
            &ctx,
            "raw_delete_range",
            [(Some(req.start_key.as_ref()), Some(req.end_key.as_ref()))],
        )?;
        let cf = raw_cf(api, &req.cf)?;
        let start = storage_key(api, &req.start_key);
        let end = storage_key(api, &req.end_key);
        {
            let region = state.validate(store_id, &ctx).map_err(region_error)?;
            if !end.is_empty() && start >= end {
                // Raftstore's apply rejects it; the failure reaches the client as a region
                // error carrying only a message.
                return Err(region_error(errorpb::Error {
                    message: format!(
                        "invalid delete range command, start_key: {:?}, end_key: {:?}",
                        start.as_ref(),
                        end.as_ref()
                    ),
                    ..Default::default()
                }));
            }
            ClusterState::check_key(region, &start).map_err(region_error)?;
            let region_end = &region.meta.end_key;
            if !region_end.is_empty() && (end.is_empty() || end > *region_end) {
                return Err(region_error(key_not_in_region(
                    region.id(),
                    &region.meta.start_key,
                    region_end,
                    &end,
                )));
            }
        }
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end.as_ref())
        };
        state
            .raw
            .delete_range(cf, (Bound::Included(start.as_ref()), upper));
        Ok(())
    })();
    let (_, region_error, error) = string_outcome(result);
    kvrpcpb::RawDeleteRangeResponse {
        region_error,
        error,
    }
}

/// RawCompareAndSwap: writes only when the visible value equals the expectation
/// (`previous_not_exist` = expect absent), and always returns the value it saw.
pub(crate) fn raw_compare_and_swap(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::RawCasRequest,
) -> kvrpcpb::RawCasResponse {
    let result = (|| -> Result<_, RawError> {
        let api = state.api_version;
        let ctx = ctx_of(&req.context);
        check_api_keys(api, &ctx, "raw_compare_and_swap", [req.key.as_ref()])?;
        let cf = raw_cf(api, &req.cf)?;
        if api == ApiVersion::V1 && req.ttl != 0 {
            return Err(RawError::TtlNotEnabled);
        }
        let skey = storage_key(api, &req.key);
        let region = RegionView::of(state, store_id, &ctx)?;
        region.check_point(&skey)?;
        let now = now_secs(state);
        let previous = state.raw.get(cf, &skey, now).map(|e| e.value.clone());
        let expected = (!req.previous_not_exist).then_some(&req.previous_value);
        if previous.as_ref() != expected {
            return Ok((previous, false));
        }
        if req.delete {
            // Deleting a key expected to be absent succeeds without writing anything.
            if expected.is_some() {
                let delete = Write::Delete {
                    storage_key: skey,
                    key: req.key.clone(),
                };
                write(state, store_id, &ctx, cf, vec![delete])?;
            }
        } else {
            let put = Write::Put {
                storage_key: skey,
                key: req.key.clone(),
                value: req.value.clone(),
                expire_secs: expire_at(now, req.ttl),
            };
            write(state, store_id, &ctx, cf, vec![put])?;
        }
        Ok((previous, true))
    })();
    let (outcome, region_error, error) = string_outcome(result);
    match outcome {
        Some((previous, succeed)) => kvrpcpb::RawCasResponse {
            succeed,
            previous_not_exist: previous.is_none(),
            previous_value: previous.unwrap_or_default(),
            ..Default::default()
        },
        None => kvrpcpb::RawCasResponse {
            region_error,
            error,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    fn cluster(api: ApiVersion) -> ClusterState {
        let addrs = vec!["127.0.0.1:1".to_owned()];
        ClusterState::new(1, api, Arc::new(ManualClock::new(1_000_000)), &addrs, 1)
    }

    fn store_id(state: &ClusterState) -> u64 {
        state.stores.keys().copied().next().unwrap_or(0)
    }

    fn ctx_for(state: &ClusterState, key: &[u8]) -> kvrpcpb::Context {
        let region = state.region_by_key(&state.raw_storage_key(key)).unwrap();
        kvrpcpb::Context {
            region_id: region.id(),
            region_epoch: region.meta.region_epoch,
            peer: region.leader_peer().cloned(),
            api_version: state.api_version.to_proto() as i32,
            ..Default::default()
        }
    }

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    fn batch_put(state: &mut ClusterState, keys: &[&[u8]], ttls: Vec<u64>) -> String {
        let store = store_id(state);
        let req = kvrpcpb::RawBatchPutRequest {
            context: Some(ctx_for(state, keys[0])),
            pairs: keys
                .iter()
                .map(|k| kvrpcpb::KvPair {
                    key: b(k),
                    value: b(b"v"),
                    ..Default::default()
                })
                .collect(),
            ttls,
            ..Default::default()
        };
        let resp = raw_batch_put(state, store, req);
        assert!(resp.region_error.is_none(), "{resp:?}");
        resp.error
    }

    #[test]
    fn batch_scan_ranges_must_run_in_the_scan_direction() {
        let r = |s: &[u8], e: &[u8]| kvrpcpb::KeyRange {
            start_key: b(s),
            end_key: b(e),
        };
        assert!(key_ranges_valid(&[r(b"a", b"c"), r(b"c", b"")], false));
        assert!(key_ranges_valid(&[r(b"a", b""), r(b"c", b"d")], false));
        assert!(!key_ranges_valid(&[r(b"c", b""), r(b"a", b"b")], false));
        assert!(!key_ranges_valid(&[r(b"a", b"a")], false));
        assert!(key_ranges_valid(&[r(b"c", b"a"), r(b"a", b"")], true));
        assert!(!key_ranges_valid(&[r(b"a", b"c")], true));
    }

    #[test]
    fn api_v2_ranges_must_stay_in_raw_mode() {
        let ctx = kvrpcpb::Context {
            api_version: kvrpcpb::ApiVersion::V2 as i32,
            ..Default::default()
        };
        let check = |s: &[u8], e: Option<&[u8]>| {
            check_api_ranges(ApiVersion::V2, &ctx, "raw_scan", [(Some(s), e)]).is_ok()
        };
        assert!(check(b"r\0\0\0a", Some(b"r\0\0\x01")));
        // "r".."s" is the whole raw mode.
        assert!(check(b"r", Some(b"s")));
        assert!(!check(b"r", Some(b"x")));
        assert!(!check(b"r\0\0\0a", None));
        assert!(!check(b"x\0\0\0a", Some(b"x\0\0\x01")));
        assert!(!check(b"", Some(b"r")));
    }

    #[test]
    fn v1_batch_put_zips_ttls_like_tikv() {
        let mut state = cluster(ApiVersion::V1);
        // Two zero TTLs for three pairs pass the V1 check and write the first two only.
        assert_eq!(batch_put(&mut state, &[b"a", b"b", b"c"], vec![0, 0]), "");
        assert!(state.raw.get(RawCf::Default, b"b", 0).is_some());
        assert!(state.raw.get(RawCf::Default, b"c", 0).is_none());
    }

    #[test]
    fn auto_split_halves_until_every_region_fits() {
        let mut state = cluster(ApiVersion::V1);
        state.auto_split_keys = Some(2);
        let keys: Vec<[u8; 1]> = (b'a'..=b'h').map(|c| [c]).collect();
        let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        assert_eq!(batch_put(&mut state, &keys, vec![]), "");
        let regions: Vec<_> = state.all_regions().map(|r| r.meta.clone()).collect();
        assert!(regions.len() >= 4, "{regions:?}");
        for region in &regions {
            let bounds: KeyBounds<'_> = (
                Bound::Included(region.start_key.as_ref()),
                if region.end_key.is_empty() {
                    Bound::Unbounded
                } else {
                    Bound::Excluded(region.end_key.as_ref())
                },
            );
            assert!(state.raw.live_keys(bounds, 0, usize::MAX).len() <= 2);
        }
    }

    #[test]
    fn v2_scans_use_storage_keys_and_answer_wire_keys() {
        let mut state = cluster(ApiVersion::V2);
        state
            .split_keyspace(crate::cluster::DEFAULT_KEYSPACE_ID)
            .unwrap();
        assert_eq!(
            batch_put(&mut state, &[b"r\0\0\0a", b"r\0\0\0b", b"r\0\0\0c"], vec![]),
            ""
        );
        let store = store_id(&state);
        let req = kvrpcpb::RawScanRequest {
            context: Some(ctx_for(&state, b"r\0\0\0a")),
            start_key: b(b"r\0\0\x01"),
            end_key: b(b"r\0\0\0a"),
            limit: 2,
            reverse: true,
            ..Default::default()
        };
        let resp = raw_scan(&mut state, store, req);
        let keys: Vec<&[u8]> = resp.kvs.iter().map(|p| p.key.as_ref()).collect();
        assert_eq!(keys, [&b"r\0\0\0c"[..], b"r\0\0\0b"]);
    }
}
