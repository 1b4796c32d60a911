//! Helpers every transactional command shares: the storage form of keys, context and API-version
//! validation, the concurrency manager's `max_ts` (with its update limit: InvalidMaxTsUpdate),
//! the snapshot-isolation read lock check, and the mapping of failures onto a response's
//! `region_error` / `error` fields.
//!
//! Who calls it: the read handlers (`txn::read`) and the write handlers (`txn::write`,
//! `mvcc::actions`). Follows TiKV `src/storage/mod.rs` (`check_api_version*`, `prepare_snap_ctx`),
//! `components/concurrency_manager/src/lib.rs` (`update_max_ts`, `set_max_ts_limit`),
//! `src/storage/mvcc/reader/point_getter.rs` and `components/txn_types/src/lock.rs`
//! (`check_ts_conflict`), and `src/storage/errors.rs` (`extract_key_error`, `extract_region_error`).

use bytes::Bytes;
use tikv_proto::{errorpb, kvrpcpb};

use crate::ApiVersion;
use crate::cluster::{ClusterState, hex_upper};
use crate::codec::{decode_bytes, encode_bytes};
use crate::mvcc::{Lock, LockType};
use crate::raw::RawError;
use crate::tso::{LOGICAL_BITS, compose, physical_of};

/// TiKV's `storage.max-key-size` default; only write commands check it.
pub(crate) const MAX_KEY_SIZE: usize = 8 * 1024;

/// Why a transactional command failed, already in wire form: a region error suppresses the
/// body; a key error lands in the response's `error` (or a pair's `error`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TxnError {
    Region(Box<errorpb::Error>),
    Key(Box<kvrpcpb::KeyError>),
}

impl TxnError {
    /// A failure TiKV reports only as `KeyError.abort` (the storage error's `Debug` text).
    pub(crate) fn abort(text: impl Into<String>) -> Self {
        TxnError::Key(Box::new(kvrpcpb::KeyError {
            abort: text.into(),
            ..Default::default()
        }))
    }

    pub(crate) fn key(e: kvrpcpb::KeyError) -> Self {
        TxnError::Key(Box::new(e))
    }

    pub(crate) fn region(e: errorpb::Error) -> Self {
        TxnError::Region(Box::new(e))
    }

    /// The key error a per-key slot (a `KvPair`, one entry of `errors`) carries for this
    /// failure; a region error there is reported as an abort, which TiKV never produces.
    pub(crate) fn into_key_error(self) -> kvrpcpb::KeyError {
        match self {
            TxnError::Key(e) => *e,
            TxnError::Region(e) => kvrpcpb::KeyError {
                abort: e.message,
                ..Default::default()
            },
        }
    }
}

impl From<RawError> for TxnError {
    fn from(e: RawError) -> Self {
        match e {
            RawError::Region(e) => TxnError::Region(e),
            RawError::Other(message) => TxnError::abort(format!("Error(Other({message:?}))")),
            other => TxnError::abort(format!("Error({other:?})")),
        }
    }
}

/// Splits a result into `(body, region_error, error)` for a response with an optional
/// `KeyError error` field (TiKV's `extract_region_error` then `extract_key_error`).
pub(crate) fn outcome<T>(
    result: Result<T, TxnError>,
) -> (Option<T>, Option<errorpb::Error>, Option<kvrpcpb::KeyError>) {
    match result {
        Ok(v) => (Some(v), None, None),
        Err(TxnError::Region(e)) => (None, Some(*e), None),
        Err(TxnError::Key(e)) => (None, None, Some(*e)),
    }
}

/// Like [`outcome`] for responses with a repeated `errors` field (Prewrite, PessimisticLock):
/// a whole-command key error becomes the single entry.
pub(crate) fn outcome_errors<T>(
    result: Result<T, TxnError>,
) -> (Option<T>, Option<errorpb::Error>, Vec<kvrpcpb::KeyError>) {
    let (body, region, key) = outcome(result);
    (body, region, key.into_iter().collect())
}

/// The context of a request, or the default one when the client sent none (which then fails
/// validation like TiKV's zeroed context).
pub(crate) fn ctx_of(ctx: &Option<kvrpcpb::Context>) -> std::borrow::Cow<'_, kvrpcpb::Context> {
    match ctx {
        Some(c) => std::borrow::Cow::Borrowed(c),
        None => std::borrow::Cow::Owned(kvrpcpb::Context::default()),
    }
}

fn key_mode_txn_compatible(key: &[u8]) -> bool {
    matches!(key.first(), Some(b'x' | b'm' | b't'))
}

/// The storage key of a transactional user key: `encode_bytes(user_key)` in both API versions.
/// Under V2 only transactional (`x`) keys and TiDB (`m`/`t`) keys can be stored (the exact
/// request-mode rules are [`check_api_keys`]'s); anything else is InvalidKeyMode.
pub(crate) fn storage_key(api: ApiVersion, user_key: &[u8]) -> Result<Bytes, TxnError> {
    if api == ApiVersion::V2 && !key_mode_txn_compatible(user_key) {
        return Err(RawError::InvalidKeyMode {
            cmd: "txn",
            storage: api,
            key: Bytes::from(encode_bytes(user_key)),
        }
        .into());
    }
    Ok(Bytes::from(encode_bytes(user_key)))
}

/// The user key a storage key stands for; `None` only for a key the mock never stores.
pub(crate) fn user_key(storage_key: &[u8]) -> Option<Bytes> {
    decode_bytes(storage_key).map(Bytes::from)
}

/// TiKV's `check_api_version` for transactional commands (`cmd` is TiKV's command name, e.g.
/// `"get"`, `"prewrite"`): V1 storage takes V1 requests; V2 storage takes V2 requests whose keys
/// start with `x`, and V1 requests whose keys are TiDB keys (`m`, `t`).
pub(crate) fn check_api_keys<'k>(
    api: ApiVersion,
    ctx: &kvrpcpb::Context,
    cmd: &'static str,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> Result<(), TxnError> {
    let wanted: &[u8] = match (api, kvrpcpb::ApiVersion::try_from(ctx.api_version)) {
        (ApiVersion::V1, Ok(kvrpcpb::ApiVersion::V1)) => return Ok(()),
        (ApiVersion::V2, Ok(kvrpcpb::ApiVersion::V1)) => b"mt",
        (ApiVersion::V2, Ok(kvrpcpb::ApiVersion::V2)) => b"x",
        _ => {
            return Err(RawError::ApiVersionNotMatched {
                cmd,
                storage: api,
                request: ctx.api_version,
            }
            .into());
        }
    };
    for key in keys {
        if !key.first().is_some_and(|b| wanted.contains(b)) {
            // TiKV checks (and prints) the encoded key.
            return Err(RawError::InvalidKeyMode {
                cmd,
                storage: api,
                key: Bytes::from(encode_bytes(key)),
            }
            .into());
        }
    }
    Ok(())
}

/// TiKV's `check_api_version_ranges` for transactional commands: under V2 both ends must be
/// given and lie in one key mode (or end at the next mode's first byte).
pub(crate) fn check_api_range(
    api: ApiVersion,
    ctx: &kvrpcpb::Context,
    cmd: &'static str,
    start: Option<&[u8]>,
    end: Option<&[u8]>,
) -> Result<(), TxnError> {
    let wanted: &[u8] = match (api, kvrpcpb::ApiVersion::try_from(ctx.api_version)) {
        (ApiVersion::V1, Ok(kvrpcpb::ApiVersion::V1)) => return Ok(()),
        (ApiVersion::V2, Ok(kvrpcpb::ApiVersion::V1)) => b"mt",
        (ApiVersion::V2, Ok(kvrpcpb::ApiVersion::V2)) => b"x",
        _ => {
            return Err(RawError::ApiVersionNotMatched {
                cmd,
                storage: api,
                request: ctx.api_version,
            }
            .into());
        }
    };
    let in_mode = match (start, end) {
        (Some(s), Some(e)) if !s.is_empty() && !e.is_empty() => {
            (s[0] == e[0] || e == [s[0].wrapping_add(1)]) && wanted.contains(&s[0])
        }
        _ => false,
    };
    if in_mode {
        Ok(())
    } else {
        Err(RawError::InvalidKeyRangeMode {
            cmd,
            storage: api,
            range: (
                start.map(Bytes::copy_from_slice),
                end.map(Bytes::copy_from_slice),
            ),
        }
        .into())
    }
}

/// TiKV's `check_key_size!` (write commands only): KeyTooLarge, reported as an abort.
pub(crate) fn check_key_size<'k>(keys: impl IntoIterator<Item = &'k [u8]>) -> Result<(), TxnError> {
    match keys.into_iter().find(|k| k.len() > MAX_KEY_SIZE) {
        Some(k) => Err(RawError::KeyTooLarge {
            size: k.len(),
            limit: MAX_KEY_SIZE,
        }
        .into()),
        None => Ok(()),
    }
}

/// The range of the region a request addressed, copied out of the state so the MVCC data can
/// be read and written while it is in hand. Bounds are storage keys.
#[derive(Debug, Clone)]
pub(crate) struct TxnRegion {
    pub(crate) id: u64,
    pub(crate) start: Bytes,
    pub(crate) end: Bytes,
    /// Whether the region's leader has synced max_ts since it was elected.
    pub(crate) max_ts_synced: bool,
}

impl TxnRegion {
    /// Validates the context in TiKV's order (store, region, peer, leader, epoch).
    pub(crate) fn of(
        state: &ClusterState,
        store_id: u64,
        ctx: &kvrpcpb::Context,
    ) -> Result<Self, TxnError> {
        let region = state.validate(store_id, ctx).map_err(TxnError::region)?;
        Ok(TxnRegion {
            id: region.id(),
            start: region.meta.start_key.clone(),
            end: region.meta.end_key.clone(),
            max_ts_synced: region.max_ts_synced,
        })
    }

    pub(crate) fn contains(&self, storage_key: &[u8]) -> bool {
        storage_key >= self.start.as_ref()
            && (self.end.is_empty() || storage_key < self.end.as_ref())
    }

    /// KeyNotInRegion unless the storage key lies in the region: what raftstore answers for a
    /// write (or a scan seek) outside the region.
    pub(crate) fn check_key(&self, storage_key: &[u8]) -> Result<(), TxnError> {
        if self.contains(storage_key) {
            Ok(())
        } else {
            Err(TxnError::region(crate::raw::key_not_in_region(
                self.id,
                &self.start,
                &self.end,
                storage_key,
            )))
        }
    }

    /// A point read outside the region fails in TiKV's region snapshot with a plain error (an
    /// abort), not a region error.
    pub(crate) fn check_read_key(&self, storage_key: &[u8]) -> Result<(), TxnError> {
        if self.contains(storage_key) {
            Ok(())
        } else {
            Err(TxnError::abort(format!(
                "Error(Txn(Error(Mvcc(Error(Engine(Error(Other(\"Key {} is out of [region {}] \
                 [{}, {})\"))))))))",
                hex_upper(storage_key),
                self.id,
                hex_upper(&self.start),
                hex_upper(&self.end)
            )))
        }
    }
}

/// Everything a transactional command needs from its context before it touches data: the API
/// version check of its keys, then region validation. Returns the region and the storage keys
/// (in the order of `keys`).
pub(crate) fn check_context<'k>(
    state: &ClusterState,
    store_id: u64,
    ctx: &kvrpcpb::Context,
    cmd: &'static str,
    keys: impl IntoIterator<Item = &'k [u8]> + Clone,
) -> Result<(TxnRegion, Vec<Bytes>), TxnError> {
    check_api_keys(state.api_version, ctx, cmd, keys.clone())?;
    let region = TxnRegion::of(state, store_id, ctx)?;
    let storage_keys = keys
        .into_iter()
        .map(|k| Bytes::from(encode_bytes(k)))
        .collect();
    Ok((region, storage_keys))
}

/// The drift TiKV allows a max_ts update beyond the TSO (`storage.max-ts.max-drift`).
pub(crate) const MAX_TS_DRIFT_MS: u64 = 60_000;

/// Which limit an update of max_ts is checked against (TiKV `MaxTsUpdateSource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaxTsSource {
    /// Reads, prewrite and pessimistic locks: the TSO plus the drift allowance.
    Drifted,
    /// Commands that check the request's origin (KvCheckTxnStatus, KvCleanup,
    /// KvCheckSecondaryLocks, KvScanLock): the TSO itself, unless the request comes from TiDB.
    OriginChecked(i32),
}

/// The concurrency manager's `update_max_ts`: `u64::MAX` (the autocommit point-get ts) never
/// moves it, and a timestamp past the limit (the TSO, plus [`MAX_TS_DRIFT_MS`] unless the
/// source requires the exact limit) is an invalid update, handled as the cluster's
/// [`crate::InvalidMaxTsAction`] says. TiKV double-checks a suspicious timestamp against a
/// fresh TSO before acting; the mock's TSO is always at hand, so its limit is always fresh.
/// Unknown stores are ignored (validation has already rejected them).
pub(crate) fn update_max_ts(
    state: &mut ClusterState,
    store_id: u64,
    ts: u64,
    source: MaxTsSource,
) -> Result<(), TxnError> {
    if ts == u64::MAX {
        return Ok(());
    }
    let tso = state.tso.peek(state.clock.now_ms());
    let exact = matches!(source, MaxTsSource::OriginChecked(origin)
        if origin != kvrpcpb::RequestOrigin::TiDb as i32);
    let limit = if exact {
        tso
    } else {
        compose(
            physical_of(tso) + MAX_TS_DRIFT_MS,
            tso & ((1 << LOGICAL_BITS) - 1),
        )
    };
    if ts > limit {
        match state.invalid_max_ts_action {
            crate::InvalidMaxTsAction::Log => {}
            action => {
                if action == crate::InvalidMaxTsAction::Panic {
                    state.crashed_stores.push(store_id);
                }
                return Err(TxnError::region(errorpb::Error {
                    message: format!("invalid max_ts update: {ts} exceeds the limit {limit}"),
                    ..Default::default()
                }));
            }
        }
    }
    if let Some(store) = state.stores.get_mut(&store_id) {
        store.max_ts = store.max_ts.max(ts);
    }
    Ok(())
}

/// Outcome of the read lock check for one key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LockCheck {
    /// The lock does not affect the read; read committed data.
    Ignore,
    /// The lock's transaction is known committed (`ctx.committed_locks`): read the lock's own
    /// value (`Some`) or nothing (a Delete lock, `None`).
    ReadThrough(Option<Bytes>),
}

/// The read lock check of TiKV's point getter and scanner (`check_ts_conflict`), by
/// `ctx.isolation_level`:
///
/// - SI: locks newer than the read, Lock/Pessimistic locks, locks whose `min_commit_ts` is above
///   the read and resolved locks (`ctx.resolved_locks`) are ignored; an autocommit point get at
///   `u64::MAX` ignores a lock whose primary is the key being read unless it is async-commit;
///   any other lock is KeyIsLocked;
/// - RC: no lock matters;
/// - RCCheckTS: a Put/Delete lock that is not resolved is a WriteConflict with reason RcCheckTs.
///
/// A lock that conflicts but whose transaction the client knows to be committed
/// (`ctx.committed_locks`) is read through when `read_through_committed` (TiKV does so unless
/// the commit ts was asked for): the answer is the lock's own value, which `value_of_lock`
/// resolves for a Put lock (short value, or default CF at `lock.ts`); a Delete lock reads as
/// nothing.
#[allow(clippy::result_large_err)] // the wire value, built only on the error path
pub(crate) fn check_lock_for_read(
    lock: &Lock,
    user_key: &[u8],
    read_ts: u64,
    ctx: &kvrpcpb::Context,
    read_through_committed: bool,
    value_of_lock: impl FnOnce(&Lock) -> Option<Bytes>,
) -> Result<LockCheck, kvrpcpb::KeyError> {
    let conflict = match kvrpcpb::IsolationLevel::try_from(ctx.isolation_level) {
        Ok(kvrpcpb::IsolationLevel::Rc) => None,
        Ok(kvrpcpb::IsolationLevel::RcCheckTs) => {
            let ignored = matches!(lock.lock_type, LockType::Lock | LockType::Pessimistic)
                || ctx.resolved_locks.contains(&lock.ts);
            (!ignored)
                .then(|| write_conflict_rc_check_ts(read_ts, lock.ts, 0, user_key, &lock.primary))
        }
        // SI, and unknown levels as TiKV's protobuf decoding defaults them.
        _ => {
            let ignored = lock.ts > read_ts
                || matches!(lock.lock_type, LockType::Lock | LockType::Pessimistic)
                || lock.min_commit_ts > read_ts
                || ctx.resolved_locks.contains(&lock.ts)
                // An autocommit point get reads at u64::MAX: its own primary's lock cannot
                // block it unless the lock's commit ts may still be computed from max_ts.
                || (read_ts == u64::MAX
                    && lock.primary.as_ref() == user_key
                    && !lock.use_async_commit);
            (!ignored).then(|| kvrpcpb::KeyError {
                locked: Some(lock.to_lock_info(Bytes::copy_from_slice(user_key))),
                ..Default::default()
            })
        }
    };
    match conflict {
        None => Ok(LockCheck::Ignore),
        Some(_) if read_through_committed && ctx.committed_locks.contains(&lock.ts) => {
            Ok(LockCheck::ReadThrough(match lock.lock_type {
                LockType::Put => value_of_lock(lock),
                _ => None,
            }))
        }
        Some(e) => Err(e),
    }
}

/// WriteConflict with reason RcCheckTs, as `extract_key_error` renders it.
pub(crate) fn write_conflict_rc_check_ts(
    start_ts: u64,
    conflict_start_ts: u64,
    conflict_commit_ts: u64,
    user_key: &[u8],
    primary: &[u8],
) -> kvrpcpb::KeyError {
    let reason = kvrpcpb::write_conflict::Reason::RcCheckTs;
    kvrpcpb::KeyError {
        retryable: format!(
            "Error(Txn(Error(Mvcc(Error(WriteConflict {{ start_ts: TimeStamp({start_ts}), \
             conflict_start_ts: TimeStamp({conflict_start_ts}), conflict_commit_ts: \
             TimeStamp({conflict_commit_ts}), key: {:?}, primary: {:?}, reason: RcCheckTs }})))))",
            user_key, primary
        ),
        conflict: Some(kvrpcpb::WriteConflict {
            start_ts,
            conflict_ts: conflict_start_ts,
            conflict_commit_ts,
            key: Bytes::copy_from_slice(user_key),
            primary: Bytes::copy_from_slice(primary),
            reason: reason as i32,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;

    fn cluster(action: crate::InvalidMaxTsAction) -> (ClusterState, u64) {
        let addrs = vec!["127.0.0.1:1".to_owned()];
        let mut state = ClusterState::new(
            1,
            ApiVersion::V1,
            Arc::new(ManualClock::new(1_000_000)),
            &addrs,
            1,
        );
        state.invalid_max_ts_action = action;
        let id = state.stores.keys().copied().next().unwrap_or(0);
        (state, id)
    }

    #[test]
    fn max_ts_updates_are_limited_by_the_tso() {
        let (mut s, id) = cluster(crate::InvalidMaxTsAction::Error);
        let tso = compose(1_000_000, 0);
        let drift = compose(1_000_000 + MAX_TS_DRIFT_MS, 0);
        update_max_ts(&mut s, id, drift, MaxTsSource::Drifted).unwrap();
        assert_eq!(s.stores[&id].max_ts, drift);
        let err = update_max_ts(&mut s, id, drift + 1, MaxTsSource::Drifted).unwrap_err();
        assert!(matches!(&err, TxnError::Region(e) if e.message
            == format!("invalid max_ts update: {} exceeds the limit {drift}", drift + 1)));
        assert_eq!(s.stores[&id].max_ts, drift);
        // Origin-checked sources: exact for non-TiDB clients, drifted for TiDB.
        let unknown = MaxTsSource::OriginChecked(kvrpcpb::RequestOrigin::Unknown as i32);
        let tidb = MaxTsSource::OriginChecked(kvrpcpb::RequestOrigin::TiDb as i32);
        update_max_ts(&mut s, id, tso, unknown).unwrap();
        assert!(update_max_ts(&mut s, id, tso + 1, unknown).is_err());
        update_max_ts(&mut s, id, tso + 1, tidb).unwrap();
        update_max_ts(&mut s, id, u64::MAX, unknown).unwrap();
        assert!(s.crashed_stores.is_empty());

        let (mut s, id) = cluster(crate::InvalidMaxTsAction::Log);
        update_max_ts(&mut s, id, u64::MAX - 1, MaxTsSource::Drifted).unwrap();
        assert_eq!(s.stores[&id].max_ts, u64::MAX - 1);

        let (mut s, id) = cluster(crate::InvalidMaxTsAction::Panic);
        assert!(update_max_ts(&mut s, id, drift + 1, MaxTsSource::Drifted).is_err());
        assert_eq!(s.crashed_stores, vec![id]);
    }
}
