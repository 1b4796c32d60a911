//! Transactional reads: KvGet, KvBatchGet, KvScan, KvScanLock, KvBufferBatchGet (a pipelined
//! transaction reading its own flushed locks) and the MVCC debug reads (MvccGetByKey,
//! MvccGetByStartTs), snapshot-isolation reads over `ClusterState::mvcc`.
//!
//! Who calls it: `tikv::dispatch::execute`, with the cluster lock held, so every read sees one
//! consistent state (TiKV's snapshot) and never waits.
//!
//! Follows TiKV `src/storage/mod.rs` (`get_entry`, `batch_get`, `scan`, `scan_lock`,
//! `buffer_batch_get`: API check,
//! then `max_ts`, then the region snapshot), `src/storage/mvcc/reader/point_getter.rs` (lock check,
//! committed-lock read-through, gc fence, RcCheckTs), `src/storage/mvcc/reader/scanner/`,
//! `src/storage/txn/store.rs` (`scan` with limit and sample step, `verify_range`),
//! `src/storage/txn/actions/mvcc.rs` + `src/storage/types.rs` (MVCC debug info) and
//! `src/server/service/kv.rs` (how results land in each response).

use std::cmp::Reverse;
use std::ops::Bound;

use bytes::Bytes;
use tikv_proto::{errorpb, kvrpcpb};
use tonic::Status;

use super::common::{
    LockCheck, MaxTsSource, TxnError, TxnRegion, check_api_keys, check_api_range,
    check_lock_for_read, ctx_of, outcome, storage_key, update_max_ts, user_key,
    write_conflict_rc_check_ts,
};
use crate::cluster::{ClusterState, hex_upper};
use crate::codec::encode_bytes;
use crate::mvcc::{Lock, LockRecord, LockType, MvccStore, Write, WriteType};

fn is_rc_check_ts(ctx: &kvrpcpb::Context) -> bool {
    ctx.isolation_level == kvrpcpb::IsolationLevel::RcCheckTs as i32
}

/// TiKV's `check_gc_fence_as_latest_version`: a fence pointing at a version the read should
/// have seen (non-zero and at or below the read ts) means this record is stale.
fn gc_fence_allows(write: &Write, read_ts: u64) -> bool {
    !matches!(write.gc_fence, Some(fence) if fence != 0 && fence <= read_ts)
}

/// TiKV's `DefaultNotFound`: a Put record whose long value is missing (never in a consistent
/// store; reported rather than invented).
fn default_not_found(storage_key: &[u8], start_ts: u64) -> TxnError {
    TxnError::abort(format!(
        "Error(Txn(Error(Mvcc(Error(DefaultNotFound {{ key: {} }})))))",
        hex_upper(&[storage_key, &(!start_ts).to_be_bytes()].concat())
    ))
}

/// The value a Put lock stands for (its short value, or the default CF at the lock's ts).
fn lock_value(store: &MvccStore, storage_key: &Bytes, lock: &Lock) -> Option<Bytes> {
    match &lock.short_value {
        Some(v) => Some(v.clone()),
        None => store
            .values
            .get(&(storage_key.clone(), Reverse(lock.ts)))
            .cloned(),
    }
}

/// One key read as TiKV's point getter / scanner read it. The answer is the value (empty when
/// `omit_value`) and its commit ts (0 when read through a committed lock).
fn read_key(
    store: &MvccStore,
    ctx: &kvrpcpb::Context,
    storage_key: &Bytes,
    user_key: &[u8],
    ts: u64,
    load_commit_ts: bool,
    omit_value: bool,
) -> Result<Option<(Bytes, u64)>, TxnError> {
    if let Some(lock) = store.lock(storage_key) {
        let checked = check_lock_for_read(lock, user_key, ts, ctx, !load_commit_ts, |l| {
            if omit_value {
                Some(Bytes::new())
            } else {
                lock_value(store, storage_key, l)
            }
        });
        match checked {
            Ok(LockCheck::Ignore) => {}
            Ok(LockCheck::ReadThrough(v)) => return Ok(v.map(|v| (v, 0))),
            Err(e) => return Err(TxnError::key(e)),
        }
    }
    // RcCheckTs refuses to read under a newer commit of any kind (TiKV reports the write CF
    // key of that record as the conflict key; the mock reports the user key).
    if is_rc_check_ts(ctx)
        && let Some((newest, _)) = store.seek_write(storage_key, u64::MAX)
        && newest > ts
    {
        return Err(TxnError::key(write_conflict_rc_check_ts(
            ts, 0, newest, user_key, b"",
        )));
    }
    for (commit_ts, write) in store.writes_at_or_below(storage_key, ts) {
        if !gc_fence_allows(write, ts) {
            return Ok(None);
        }
        match write.write_type {
            WriteType::Put => {
                if omit_value {
                    return Ok(Some((Bytes::new(), commit_ts)));
                }
                return match store.value_of(storage_key, write) {
                    Some(v) => Ok(Some((v, commit_ts))),
                    None => Err(default_not_found(storage_key, write.start_ts)),
                };
            }
            WriteType::Delete => return Ok(None),
            WriteType::Lock | WriteType::Rollback => continue,
        }
    }
    Ok(None)
}

/// KvGet.
pub(crate) fn kv_get(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::GetRequest,
) -> Result<kvrpcpb::GetResponse, Status> {
    let ctx = ctx_of(&req.context).into_owned();
    let result = (|| {
        check_api_keys(state.api_version, &ctx, "get", [req.key.as_ref()])?;
        let storage_key = storage_key(state.api_version, &req.key)?;
        if !ctx.stale_read {
            update_max_ts(state, store_id, req.version, MaxTsSource::Drifted)?;
        }
        let region = TxnRegion::of(state, store_id, &ctx)?;
        region.check_read_key(&storage_key)?;
        read_key(
            &state.mvcc,
            &ctx,
            &storage_key,
            &req.key,
            req.version,
            req.need_commit_ts,
            false,
        )
    })();
    let (body, region_error, error) = outcome(result);
    let mut resp = kvrpcpb::GetResponse {
        region_error,
        error,
        ..Default::default()
    };
    match body {
        Some(Some((value, commit_ts))) => {
            resp.value = value;
            if req.need_commit_ts {
                resp.commit_ts = commit_ts;
            }
        }
        Some(None) => resp.not_found = true,
        None => {}
    }
    Ok(resp)
}

/// A whole-request key error as TiKV's `extract_kv_pairs` also reports it: one pair carrying
/// it, for clients that only look at the pairs.
fn error_pairs(error: &Option<kvrpcpb::KeyError>) -> Vec<kvrpcpb::KvPair> {
    error
        .iter()
        .map(|e| kvrpcpb::KvPair {
            error: Some(e.clone()),
            ..Default::default()
        })
        .collect()
}

/// A per-key failure: TiKV sets only the error, not the key.
fn error_pair(e: TxnError) -> kvrpcpb::KvPair {
    kvrpcpb::KvPair {
        error: Some(e.into_key_error()),
        ..Default::default()
    }
}

/// KvBatchGet.
pub(crate) fn kv_batch_get(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::BatchGetRequest,
) -> Result<kvrpcpb::BatchGetResponse, Status> {
    let ctx = ctx_of(&req.context).into_owned();
    let result = (|| {
        check_api_keys(
            state.api_version,
            &ctx,
            "batch_get",
            req.keys.iter().map(|k| k.as_ref()),
        )?;
        if !ctx.stale_read {
            update_max_ts(state, store_id, req.version, MaxTsSource::Drifted)?;
        }
        let region = TxnRegion::of(state, store_id, &ctx)?;
        let mut pairs = Vec::new();
        for key in &req.keys {
            let read = storage_key(state.api_version, key).and_then(|storage_key| {
                region.check_read_key(&storage_key)?;
                read_key(
                    &state.mvcc,
                    &ctx,
                    &storage_key,
                    key,
                    req.version,
                    req.need_commit_ts,
                    false,
                )
            });
            match read {
                Ok(Some((value, commit_ts))) => pairs.push(kvrpcpb::KvPair {
                    key: key.clone(),
                    value,
                    commit_ts: if req.need_commit_ts { commit_ts } else { 0 },
                    ..Default::default()
                }),
                Ok(None) => {}
                Err(TxnError::Region(e)) => return Err(TxnError::Region(e)),
                Err(e) => pairs.push(error_pair(e)),
            }
        }
        Ok(pairs)
    })();
    let (pairs, region_error, error) = outcome(result);
    Ok(kvrpcpb::BatchGetResponse {
        pairs: pairs.unwrap_or_else(|| error_pairs(&error)),
        region_error,
        error,
        ..Default::default()
    })
}

/// KvBufferBatchGet: a pipelined-DML transaction reads back the values it has flushed (TiKV
/// `Storage::buffer_batch_get`). Only the transaction's own locks (`version` is its start ts)
/// are read: a Put lock gives its value, a Delete lock an empty value (as the transaction's
/// in-memory buffer would); keys without such a lock are left out. Pairs come in key order,
/// each key once.
///
/// TiKV asserts that a pipelined transaction never holds Lock or pessimistic locks and aborts
/// the process when one is read here; the mock stops the store the same way (see
/// [`crate::InvalidMaxTsAction::Panic`] for what that looks like).
pub(crate) fn kv_buffer_batch_get(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::BufferBatchGetRequest,
) -> Result<kvrpcpb::BufferBatchGetResponse, Status> {
    let ctx = ctx_of(&req.context).into_owned();
    let result = (|| {
        let mut keys: Vec<(Bytes, &Bytes)> = req
            .keys
            .iter()
            .map(|k| (Bytes::from(encode_bytes(k)), k))
            .collect();
        keys.sort();
        keys.dedup_by(|a, b| a.0 == b.0);
        check_api_keys(
            state.api_version,
            &ctx,
            "buffer_batch_get",
            keys.iter().map(|(_, k)| k.as_ref()),
        )?;
        if !ctx.stale_read {
            update_max_ts(state, store_id, req.version, MaxTsSource::Drifted)?;
        }
        let region = TxnRegion::of(state, store_id, &ctx)?;
        let mut pairs = Vec::new();
        for (storage_key, key) in keys {
            if let Err(e) = region.check_read_key(&storage_key) {
                pairs.push(error_pair(e));
                continue;
            }
            let Some(lock) = state
                .mvcc
                .lock(&storage_key)
                .filter(|l| l.ts == req.version)
            else {
                continue;
            };
            let value = match lock.lock_type {
                LockType::Delete => Some(Bytes::new()),
                LockType::Put => lock.short_value.clone().or_else(|| {
                    state
                        .mvcc
                        .values
                        .get(&(storage_key.clone(), Reverse(lock.ts)))
                        .cloned()
                }),
                LockType::Lock | LockType::Pessimistic => {
                    state.crashed_stores.push(store_id);
                    return Err(TxnError::abort(format!(
                        "tikv-mock: store {store_id} aborted: a pipelined transaction holds a \
                         {:?} lock",
                        lock.lock_type
                    )));
                }
            };
            if let Some(value) = value {
                pairs.push(kvrpcpb::KvPair {
                    key: key.clone(),
                    value,
                    ..Default::default()
                });
            }
        }
        Ok(pairs)
    })();
    let (pairs, region_error, error) = outcome(result);
    Ok(kvrpcpb::BufferBatchGetResponse {
        pairs: pairs.unwrap_or_default(),
        region_error,
        error,
        ..Default::default()
    })
}

/// TiKV's `InvalidReqRange`: a scan bound outside the region snapshot.
fn invalid_req_range(
    start: Option<&Bytes>,
    end: Option<&Bytes>,
    lower: &Bytes,
    upper: &Bytes,
) -> TxnError {
    let opt = |b: Option<&Bytes>| b.map(|b| b.to_vec());
    TxnError::abort(format!(
        "Error(Txn(Error(InvalidReqRange {{ start: {:?}, end: {:?}, lower_bound: {:?}, \
         upper_bound: {:?} }})))",
        opt(start),
        opt(end),
        Some(lower.to_vec()),
        Some(upper.to_vec())
    ))
}

/// The storage keys of `store` (with a lock or any write record) inside `(lower, upper)`, one at
/// a time in either direction, without collecting the range.
struct KeyCursor<'a> {
    store: &'a MvccStore,
    lower: Bound<Bytes>,
    upper: Bound<Bytes>,
    reverse: bool,
}

impl KeyCursor<'_> {
    fn empty(&self) -> bool {
        match (&self.lower, &self.upper) {
            (Bound::Included(l), Bound::Excluded(u)) => l >= u,
            (Bound::Excluded(l), Bound::Excluded(u)) => l >= u,
            (Bound::Included(l), Bound::Included(u)) => l > u,
            (Bound::Excluded(l), Bound::Included(u)) => l >= u,
            _ => false,
        }
    }

    fn next_key(&mut self) -> Option<Bytes> {
        if self.empty() {
            return None;
        }
        // Within one key the write records sort by Reverse(commit_ts): (k, Reverse(MAX)) is
        // the first of k's records and (k, Reverse(0)) the last.
        let write_lower = match &self.lower {
            Bound::Included(k) => Bound::Included((k.clone(), Reverse(u64::MAX))),
            Bound::Excluded(k) => Bound::Excluded((k.clone(), Reverse(0))),
            Bound::Unbounded => Bound::Unbounded,
        };
        let write_upper = match &self.upper {
            Bound::Included(k) => Bound::Included((k.clone(), Reverse(0))),
            Bound::Excluded(k) => Bound::Excluded((k.clone(), Reverse(u64::MAX))),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut locks = self
            .store
            .locks
            .range((self.lower.clone(), self.upper.clone()))
            .map(|(k, _)| k);
        let mut writes = self
            .store
            .writes
            .range((write_lower, write_upper))
            .map(|((k, _), _)| k);
        let found = if self.reverse {
            let (l, w) = (locks.next_back(), writes.next_back());
            l.into_iter().chain(w).max().cloned()
        } else {
            let (l, w) = (locks.next(), writes.next());
            l.into_iter().chain(w).min().cloned()
        };
        if let Some(k) = &found {
            if self.reverse {
                self.upper = Bound::Excluded(k.clone());
            } else {
                self.lower = Bound::Excluded(k.clone());
            }
        }
        found
    }
}

/// The iteration bounds of a scan: the request's bounds (checked like TiKV's `verify_range`)
/// intersected with the region.
fn scan_bounds(
    region: &TxnRegion,
    lower: Option<Bytes>,
    upper: Option<Bytes>,
) -> Result<(Bound<Bytes>, Bound<Bytes>), TxnError> {
    let below = lower
        .as_ref()
        .is_some_and(|l| !region.start.is_empty() && *l < region.start);
    let above = upper
        .as_ref()
        .is_some_and(|u| !region.end.is_empty() && (*u > region.end || u.is_empty()));
    if below || above {
        return Err(invalid_req_range(
            lower.as_ref(),
            upper.as_ref(),
            &region.start,
            &region.end,
        ));
    }
    let lower = match lower {
        Some(l) if l > region.start => l,
        _ => region.start.clone(),
    };
    let upper = match upper {
        Some(u) if region.end.is_empty() || u < region.end => Bound::Excluded(u),
        _ if region.end.is_empty() => Bound::Unbounded,
        _ => Bound::Excluded(region.end.clone()),
    };
    Ok((Bound::Included(lower), upper))
}

/// KvScan.
pub(crate) fn kv_scan(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::ScanRequest,
) -> Result<kvrpcpb::ScanResponse, Status> {
    let ctx = ctx_of(&req.context).into_owned();
    let result = (|| {
        let start = Bytes::from(encode_bytes(&req.start_key));
        let end = (!req.end_key.is_empty()).then(|| Bytes::from(encode_bytes(&req.end_key)));
        check_api_range(
            state.api_version,
            &ctx,
            "scan",
            Some(&start),
            end.as_deref(),
        )?;
        if !ctx.stale_read {
            update_max_ts(state, store_id, req.version, MaxTsSource::Drifted)?;
        }
        let region = TxnRegion::of(state, store_id, &ctx)?;
        // A reverse scan reads [end_key, start_key): the request's start key is its upper
        // bound, even when empty (which then reads nothing).
        let (lower, upper) = if req.reverse {
            (end, Some(start))
        } else {
            (Some(start), end)
        };
        let (lower, upper) = scan_bounds(&region, lower, upper)?;
        let mut cursor = KeyCursor {
            store: &state.mvcc,
            lower,
            upper,
            reverse: req.reverse,
        };
        let limit = req.limit as usize;
        let sample_step = req.sample_step as usize;
        let mut pairs = Vec::new();
        let mut rows = 0usize;
        while pairs.len() < limit {
            let Some(storage_key) = cursor.next_key() else {
                break;
            };
            let Some(key) = user_key(&storage_key) else {
                continue;
            };
            match read_key(
                &state.mvcc,
                &ctx,
                &storage_key,
                &key,
                req.version,
                false,
                req.key_only,
            ) {
                Ok(Some((value, _))) => {
                    if sample_step > 0 {
                        rows += 1;
                        if !(rows - 1).is_multiple_of(sample_step) {
                            continue;
                        }
                    }
                    pairs.push(kvrpcpb::KvPair {
                        key,
                        value,
                        ..Default::default()
                    });
                }
                Ok(None) => {}
                // Locked keys are reported in place and the scan goes on; any other failure
                // fails the whole request.
                Err(TxnError::Key(e)) if e.locked.is_some() => pairs.push(kvrpcpb::KvPair {
                    error: Some(*e),
                    ..Default::default()
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(pairs)
    })();
    let (pairs, region_error, error) = outcome(result);
    Ok(kvrpcpb::ScanResponse {
        pairs: pairs.unwrap_or_else(|| error_pairs(&error)),
        region_error,
        error,
    })
}

/// KvScanLock.
pub(crate) fn kv_scan_lock(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::ScanLockRequest,
) -> Result<kvrpcpb::ScanLockResponse, Status> {
    let ctx = ctx_of(&req.context).into_owned();
    let result = (|| {
        update_max_ts(
            state,
            store_id,
            req.max_version,
            MaxTsSource::OriginChecked(ctx.request_origin),
        )?;
        let region = TxnRegion::of(state, store_id, &ctx)?;
        // The region snapshot bounds the scan: keys outside it are simply not seen.
        let mut lower = region.start.clone();
        if !req.start_key.is_empty() {
            lower = lower.max(Bytes::from(encode_bytes(&req.start_key)));
        }
        let mut upper = (!region.end.is_empty()).then(|| region.end.clone());
        if !req.end_key.is_empty() {
            let end = Bytes::from(encode_bytes(&req.end_key));
            upper = Some(upper.map_or(end.clone(), |u| u.min(end)));
        }
        if upper.as_ref().is_some_and(|u| *u <= lower) {
            return Ok(Vec::new());
        }
        let upper = upper.map_or(Bound::Unbounded, Bound::Excluded);
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit as usize
        };
        // The limit counts locks, and every sub-lock of a shared record is one: a record is
        // reported with the holders that pass the max_version filter, cut to the smallest start
        // timestamps when the limit runs out inside it (TiKV `scan_locks_from_storage`).
        let mut locks = Vec::new();
        let mut count = 0usize;
        for (k, record) in state.mvcc.locks.range((Bound::Included(lower), upper)) {
            if count >= limit {
                break;
            }
            let Some(key) = user_key(k) else { continue };
            match record {
                LockRecord::Exclusive(lock) => {
                    if lock.ts <= req.max_version {
                        count += 1;
                        locks.push(lock.to_lock_info(key));
                    }
                }
                LockRecord::Shared(shared) => {
                    let mut shared = shared.clone();
                    shared.retain(|l| l.ts <= req.max_version);
                    shared.truncate(limit - count);
                    if !shared.is_empty() {
                        count += shared.len();
                        locks.push(shared.to_lock_info(key));
                    }
                }
            }
        }
        Ok(locks)
    })();
    let (locks, region_error, error) = outcome(result);
    Ok(kvrpcpb::ScanLockResponse {
        locks: locks.unwrap_or_default(),
        region_error,
        error,
        ..Default::default()
    })
}

/// The MVCC history of one key as TiKV's debug commands report it (`find_mvcc_infos_by_key`
/// and `MvccInfo::into_proto`): the lock, every write record newest first, and every long
/// value newest first.
fn mvcc_info(store: &MvccStore, storage_key: &Bytes) -> kvrpcpb::MvccInfo {
    // Of a shared record, TiKV shows one sub-lock (we take the smallest start ts).
    let lock = match store.lock_record(storage_key) {
        Some(LockRecord::Exclusive(lock)) => Some(lock),
        Some(LockRecord::Shared(shared)) => shared.iter().next(),
        None => None,
    };
    let lock = lock.map(|lock| kvrpcpb::MvccLock {
        r#type: lock.lock_type.to_op() as i32,
        start_ts: lock.ts,
        primary: lock.primary.clone(),
        short_value: lock.short_value.clone().unwrap_or_default(),
        ..Default::default()
    });
    let writes = store
        .writes_at_or_below(storage_key, u64::MAX)
        .map(|(commit_ts, w)| kvrpcpb::MvccWrite {
            r#type: match w.write_type {
                WriteType::Put => kvrpcpb::Op::Put,
                WriteType::Delete => kvrpcpb::Op::Del,
                WriteType::Lock => kvrpcpb::Op::Lock,
                WriteType::Rollback => kvrpcpb::Op::Rollback,
            } as i32,
            start_ts: w.start_ts,
            commit_ts,
            short_value: w.short_value.clone().unwrap_or_default(),
            has_overlapped_rollback: w.has_overlapped_rollback,
            has_gc_fence: w.gc_fence.is_some(),
            gc_fence: w.gc_fence.unwrap_or(0),
            ..Default::default()
        })
        .collect();
    let values = store
        .values
        .range((
            Bound::Included((storage_key.clone(), Reverse(u64::MAX))),
            Bound::Included((storage_key.clone(), Reverse(0))),
        ))
        .map(|((_, Reverse(start_ts)), v)| kvrpcpb::MvccValue {
            start_ts: *start_ts,
            value: v.clone(),
        })
        .collect();
    kvrpcpb::MvccInfo {
        lock,
        writes,
        values,
    }
}

/// Splits a result for the MVCC debug responses, whose `error` is TiKV's error text.
fn string_outcome<T>(result: Result<T, TxnError>) -> (Option<T>, Option<errorpb::Error>, String) {
    let (body, region_error, error) = outcome(result);
    (
        body,
        region_error,
        error.map(|e| e.abort).unwrap_or_default(),
    )
}

/// MvccGetByKey.
pub(crate) fn mvcc_get_by_key(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::MvccGetByKeyRequest,
) -> Result<kvrpcpb::MvccGetByKeyResponse, Status> {
    let ctx = ctx_of(&req.context).into_owned();
    let result = (|| {
        let region = TxnRegion::of(state, store_id, &ctx)?;
        let storage_key = Bytes::from(encode_bytes(&req.key));
        region.check_read_key(&storage_key)?;
        Ok(mvcc_info(&state.mvcc, &storage_key))
    })();
    let (info, region_error, error) = string_outcome(result);
    Ok(kvrpcpb::MvccGetByKeyResponse {
        region_error,
        error,
        info,
    })
}

/// MvccGetByStartTs: the first key of the region (in key order) with a write record of that
/// start ts. Like TiKV (`MvccReader::seek_ts`) only the write CF is searched, so a transaction
/// that is still only locked is not found.
pub(crate) fn mvcc_get_by_start_ts(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::MvccGetByStartTsRequest,
) -> Result<kvrpcpb::MvccGetByStartTsResponse, Status> {
    let ctx = ctx_of(&req.context).into_owned();
    let result = (|| {
        let region = TxnRegion::of(state, store_id, &ctx)?;
        let upper = if region.end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded((region.end.clone(), Reverse(u64::MAX)))
        };
        let found = state
            .mvcc
            .writes
            .range((
                Bound::Included((region.start.clone(), Reverse(u64::MAX))),
                upper,
            ))
            .find(|(_, w)| w.start_ts == req.start_ts)
            .map(|((k, _), _)| k.clone());
        Ok(found.and_then(|k| Some((user_key(&k)?, mvcc_info(&state.mvcc, &k)))))
    })();
    let (found, region_error, error) = string_outcome(result);
    let mut resp = kvrpcpb::MvccGetByStartTsResponse {
        region_error,
        error,
        ..Default::default()
    };
    match found {
        Some(Some((key, info))) => {
            resp.key = key;
            resp.info = Some(info);
        }
        Some(None) => resp.info = Some(kvrpcpb::MvccInfo::default()),
        None => {}
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ApiVersion;
    use crate::clock::ManualClock;
    use crate::mvcc::{LockType, WriteBatch};

    fn cluster(api: ApiVersion) -> ClusterState {
        let addrs = vec!["127.0.0.1:1".to_owned()];
        ClusterState::new(1, api, Arc::new(ManualClock::new(1_000_000)), &addrs, 1)
    }

    fn store_id(state: &ClusterState) -> u64 {
        state.stores.keys().copied().next().unwrap_or(0)
    }

    fn b(s: &[u8]) -> Bytes {
        Bytes::copy_from_slice(s)
    }

    fn sk(key: &[u8]) -> Bytes {
        Bytes::from(encode_bytes(key))
    }

    fn ctx_for(state: &ClusterState, key: &[u8]) -> kvrpcpb::Context {
        let region = state.region_by_key(&sk(key)).unwrap();
        kvrpcpb::Context {
            region_id: region.id(),
            region_epoch: region.meta.region_epoch,
            peer: region.leader_peer().cloned(),
            api_version: state.api_version.to_proto() as i32,
            ..Default::default()
        }
    }

    /// A committed Put; values longer than 255 bytes go to the default CF like TiKV's.
    fn put(state: &mut ClusterState, key: &[u8], start: u64, commit: u64, value: &[u8]) {
        let mut batch = WriteBatch::default();
        let short = if value.len() > crate::mvcc::SHORT_VALUE_MAX_LEN {
            batch.put_value(sk(key), start, b(value));
            None
        } else {
            Some(b(value))
        };
        batch.put_write(sk(key), commit, Write::new(WriteType::Put, start, short));
        batch.apply(&mut state.mvcc);
    }

    fn write(state: &mut ClusterState, key: &[u8], commit: u64, w: Write) {
        let mut batch = WriteBatch::default();
        batch.put_write(sk(key), commit, w);
        batch.apply(&mut state.mvcc);
    }

    fn lock(state: &mut ClusterState, key: &[u8], lock: Lock) {
        let mut batch = WriteBatch::default();
        if lock.lock_type == LockType::Put && lock.short_value.is_none() {
            batch.put_value(sk(key), lock.ts, Bytes::from(vec![b'L'; 300]));
        }
        batch.put_lock(sk(key), lock);
        batch.apply(&mut state.mvcc);
    }

    fn put_lock(primary: &[u8], ts: u64, value: &[u8]) -> Lock {
        let mut l = Lock::new(LockType::Put, b(primary), ts, 3000);
        l.short_value = Some(b(value));
        l
    }

    fn get_with(
        state: &mut ClusterState,
        key: &[u8],
        version: u64,
        need_commit_ts: bool,
        tweak: impl FnOnce(&mut kvrpcpb::Context),
    ) -> kvrpcpb::GetResponse {
        let mut ctx = ctx_for(state, key);
        tweak(&mut ctx);
        let id = store_id(state);
        kv_get(
            state,
            id,
            kvrpcpb::GetRequest {
                context: Some(ctx),
                key: b(key),
                version,
                need_commit_ts,
            },
        )
        .unwrap()
    }

    fn get(state: &mut ClusterState, key: &[u8], version: u64) -> kvrpcpb::GetResponse {
        get_with(state, key, version, false, |_| {})
    }

    fn locked_key(resp_error: &Option<kvrpcpb::KeyError>) -> Option<(Bytes, u64)> {
        let info = resp_error.as_ref()?.locked.as_ref()?;
        Some((info.key.clone(), info.lock_version))
    }

    #[test]
    fn get_reads_the_visible_version_skipping_lock_and_rollback_records() {
        let mut s = cluster(ApiVersion::V1);
        put(&mut s, b"k", 5, 10, b"v1");
        write(&mut s, b"k", 20, Write::new(WriteType::Lock, 15, None));
        write(&mut s, b"k", 25, Write::new_rollback(25, true));
        put(&mut s, b"k", 30, 40, &[b'x'; 300]);
        write(&mut s, b"k", 50, Write::new(WriteType::Delete, 45, None));

        assert!(get(&mut s, b"k", 9).not_found);
        assert_eq!(get(&mut s, b"k", 10).value, b(b"v1"));
        assert_eq!(get(&mut s, b"k", 39).value, b(b"v1"));
        let long = get_with(&mut s, b"k", 45, true, |_| {});
        assert_eq!((long.value.len(), long.commit_ts), (300, 40));
        // commit_ts only when asked for.
        assert_eq!(get(&mut s, b"k", 45).commit_ts, 0);
        let deleted = get(&mut s, b"k", 60);
        assert!(deleted.not_found && deleted.error.is_none() && deleted.value.is_empty());
        assert!(get(&mut s, b"other", 60).not_found);
    }

    #[test]
    fn gc_fence_hides_a_stale_version_but_a_zero_fence_does_not() {
        let mut s = cluster(ApiVersion::V1);
        let mut fenced = Write::new(WriteType::Put, 5, Some(b(b"old")));
        fenced.gc_fence = Some(30);
        write(&mut s, b"a", 10, fenced);
        let mut zero = Write::new(WriteType::Put, 5, Some(b(b"kept")));
        zero.gc_fence = Some(0);
        write(&mut s, b"b", 10, zero);
        assert_eq!(get(&mut s, b"a", 29).value, b(b"old"));
        assert!(get(&mut s, b"a", 30).not_found);
        assert_eq!(get(&mut s, b"b", 100).value, b(b"kept"));
    }

    #[test]
    fn si_lock_check_ignores_what_tikv_ignores_and_reports_the_rest() {
        let mut s = cluster(ApiVersion::V1);
        put(&mut s, b"k", 1, 2, b"committed");
        // A newer lock does not block an older read.
        lock(&mut s, b"k", put_lock(b"k", 100, b"new"));
        assert_eq!(get(&mut s, b"k", 99).value, b(b"committed"));
        // An older Put lock does, with the user key in the LockInfo.
        let resp = get(&mut s, b"k", 150);
        assert_eq!(locked_key(&resp.error), Some((b(b"k"), 100)));
        assert!(!resp.not_found && resp.value.is_empty());
        // ...unless the client resolved it.
        let resolved = get_with(&mut s, b"k", 150, false, |c| c.resolved_locks = vec![100]);
        assert_eq!(resolved.value, b(b"committed"));
        // min_commit_ts above the read ts: the lock will commit after the read.
        let mut pushed = put_lock(b"k", 100, b"new");
        pushed.min_commit_ts = 200;
        lock(&mut s, b"k", pushed);
        assert_eq!(get(&mut s, b"k", 150).value, b(b"committed"));
        // Lock and Pessimistic locks never block reads.
        for ty in [LockType::Lock, LockType::Pessimistic] {
            lock(&mut s, b"k", Lock::new(ty, b(b"k"), 100, 3000));
            assert_eq!(get(&mut s, b"k", 150).value, b(b"committed"));
        }
        // A Delete lock blocks too.
        lock(
            &mut s,
            b"k",
            Lock::new(LockType::Delete, b(b"p"), 100, 3000),
        );
        assert_eq!(
            locked_key(&get(&mut s, b"k", 150).error),
            Some((b(b"k"), 100))
        );
    }

    #[test]
    fn autocommit_point_get_ignores_only_its_own_non_async_primary() {
        let mut s = cluster(ApiVersion::V1);
        put(&mut s, b"p", 1, 2, b"old");
        put(&mut s, b"s", 1, 2, b"old");
        lock(&mut s, b"p", put_lock(b"p", 10, b"new"));
        lock(&mut s, b"s", put_lock(b"p", 10, b"new"));
        assert_eq!(get(&mut s, b"p", u64::MAX).value, b(b"old"));
        assert!(locked_key(&get(&mut s, b"s", u64::MAX).error).is_some());
        let mut async_primary = put_lock(b"p", 10, b"new");
        async_primary.use_async_commit = true;
        lock(&mut s, b"p", async_primary);
        assert!(locked_key(&get(&mut s, b"p", u64::MAX).error).is_some());
        // u64::MAX never moves max_ts.
        assert_eq!(s.stores[&store_id(&s)].max_ts, 0);
    }

    #[test]
    fn committed_locks_are_read_through_unless_commit_ts_is_requested() {
        let mut s = cluster(ApiVersion::V1);
        put(&mut s, b"k", 1, 2, b"old");
        lock(&mut s, b"k", put_lock(b"k", 10, b"short"));
        let through = |c: &mut kvrpcpb::Context| c.committed_locks = vec![10];
        assert_eq!(
            get_with(&mut s, b"k", 20, false, through).value,
            b(b"short")
        );
        let with_ts = get_with(&mut s, b"k", 20, true, through);
        assert!(locked_key(&with_ts.error).is_some());
        // A long value is read from the default CF at the lock's ts.
        lock(&mut s, b"k", Lock::new(LockType::Put, b(b"k"), 10, 3000));
        let long = get_with(&mut s, b"k", 20, false, through);
        assert_eq!(long.value, Bytes::from(vec![b'L'; 300]));
        // A committed Delete lock reads as nothing.
        lock(&mut s, b"k", Lock::new(LockType::Delete, b(b"k"), 10, 3000));
        assert!(get_with(&mut s, b"k", 20, false, through).not_found);
    }

    #[test]
    fn rc_ignores_locks_and_rc_check_ts_conflicts_on_locks_and_newer_commits() {
        let mut s = cluster(ApiVersion::V1);
        put(&mut s, b"k", 1, 2, b"old");
        lock(&mut s, b"k", put_lock(b"p", 10, b"new"));
        let rc = |c: &mut kvrpcpb::Context| c.isolation_level = kvrpcpb::IsolationLevel::Rc as i32;
        let check_ts = |c: &mut kvrpcpb::Context| {
            c.isolation_level = kvrpcpb::IsolationLevel::RcCheckTs as i32
        };
        assert_eq!(get_with(&mut s, b"k", 20, false, rc).value, b(b"old"));
        let conflict = get_with(&mut s, b"k", 5, false, check_ts).error.unwrap();
        let wc = conflict.conflict.unwrap();
        assert_eq!(
            (wc.start_ts, wc.conflict_ts, wc.key, wc.primary, wc.reason),
            (
                5,
                10,
                b(b"k"),
                b(b"p"),
                kvrpcpb::write_conflict::Reason::RcCheckTs as i32
            )
        );
        assert!(!conflict.retryable.is_empty());
        // A Lock-type lock is no conflict, but a commit newer than the read ts is.
        lock(&mut s, b"k", Lock::new(LockType::Lock, b(b"p"), 10, 3000));
        assert_eq!(get_with(&mut s, b"k", 5, false, check_ts).value, b(b"old"));
        put(&mut s, b"k", 6, 7, b"newer");
        let wc = get_with(&mut s, b"k", 5, false, check_ts)
            .error
            .unwrap()
            .conflict
            .unwrap();
        assert_eq!((wc.conflict_ts, wc.conflict_commit_ts), (0, 7));
    }

    #[test]
    fn get_updates_max_ts_unless_stale_read() {
        let mut s = cluster(ApiVersion::V1);
        let id = store_id(&s);
        get(&mut s, b"k", 50);
        assert_eq!(s.stores[&id].max_ts, 50);
        get(&mut s, b"k", 40);
        assert_eq!(s.stores[&id].max_ts, 50);
        get_with(&mut s, b"k", 90, false, |c| c.stale_read = true);
        assert_eq!(s.stores[&id].max_ts, 50);
    }

    #[test]
    fn get_context_errors() {
        let mut s = cluster(ApiVersion::V1);
        s.split(&[sk(b"m")]).unwrap();
        // A key outside the addressed region: an abort, not a region error (TiKV's snapshot).
        let mut ctx = ctx_for(&s, b"a");
        let id = store_id(&s);
        let req = |ctx: kvrpcpb::Context, key: &[u8]| kvrpcpb::GetRequest {
            context: Some(ctx),
            key: b(key),
            version: 10,
            need_commit_ts: false,
        };
        let resp = kv_get(&mut s, id, req(ctx.clone(), b"z")).unwrap();
        assert!(resp.region_error.is_none());
        assert!(resp.error.unwrap().abort.contains("is out of [region"));
        // A stale epoch is a region error.
        ctx.region_epoch.as_mut().unwrap().version += 7;
        let resp = kv_get(&mut s, id, req(ctx.clone(), b"a")).unwrap();
        assert!(resp.region_error.unwrap().epoch_not_match.is_some());
        assert!(!resp.not_found);
        // A request of another API version.
        let mut v2 = ctx_for(&s, b"a");
        v2.api_version = kvrpcpb::ApiVersion::V2 as i32;
        let resp = kv_get(&mut s, id, req(v2, b"a")).unwrap();
        let abort = resp.error.unwrap().abort;
        assert!(abort.contains("ApiVersionNotMatched"), "{abort}");
    }

    #[test]
    fn api_v2_takes_txn_mode_keys_and_v1_tidb_keys() {
        let mut s = cluster(ApiVersion::V2);
        put(&mut s, b"x\0\0\0k", 1, 2, b"v");
        let resp = get(&mut s, b"x\0\0\0k", 10);
        assert_eq!(resp.value, b(b"v"));
        let resp = get(&mut s, b"r\0\0\0k", 10);
        assert!(resp.error.unwrap().abort.contains("InvalidKeyMode"));
        let v1 = |c: &mut kvrpcpb::Context| c.api_version = kvrpcpb::ApiVersion::V1 as i32;
        assert!(get_with(&mut s, b"t\x80k", 10, false, v1).not_found);
        let resp = get_with(&mut s, b"x\0\0\0k", 10, false, v1);
        assert!(resp.error.unwrap().abort.contains("InvalidKeyMode"));
    }

    fn batch_get(
        state: &mut ClusterState,
        keys: &[&[u8]],
        version: u64,
        need_commit_ts: bool,
    ) -> kvrpcpb::BatchGetResponse {
        let ctx = ctx_for(state, keys.first().copied().unwrap_or(b""));
        let id = store_id(state);
        kv_batch_get(
            state,
            id,
            kvrpcpb::BatchGetRequest {
                context: Some(ctx),
                keys: keys.iter().map(|k| b(k)).collect(),
                version,
                need_commit_ts,
            },
        )
        .unwrap()
    }

    #[test]
    fn batch_get_omits_missing_keys_and_reports_locks_without_keys() {
        let mut s = cluster(ApiVersion::V1);
        put(&mut s, b"a", 1, 2, b"va");
        put(&mut s, b"c", 3, 4, &[b'c'; 400]);
        lock(&mut s, b"d", put_lock(b"d", 5, b"x"));
        let resp = batch_get(&mut s, &[b"a", b"b", b"d", b"c"], 10, true);
        assert!(resp.error.is_none() && resp.region_error.is_none());
        assert_eq!(resp.pairs.len(), 3);
        assert_eq!(
            (
                &resp.pairs[0].key,
                &resp.pairs[0].value,
                resp.pairs[0].commit_ts
            ),
            (&b(b"a"), &b(b"va"), 2)
        );
        assert!(resp.pairs[1].key.is_empty());
        assert_eq!(locked_key(&resp.pairs[1].error), Some((b(b"d"), 5)));
        assert_eq!(
            (resp.pairs[2].value.len(), resp.pairs[2].commit_ts),
            (400, 4)
        );
        assert_eq!(s.stores[&store_id(&s)].max_ts, 10);
        // commit ts only when asked for.
        assert_eq!(batch_get(&mut s, &[b"a"], 10, false).pairs[0].commit_ts, 0);
    }

    #[test]
    fn batch_get_whole_request_errors() {
        let mut s = cluster(ApiVersion::V1);
        let id = store_id(&s);
        let mut ctx = ctx_for(&s, b"a");
        ctx.api_version = kvrpcpb::ApiVersion::V2 as i32;
        let req = |ctx| kvrpcpb::BatchGetRequest {
            context: Some(ctx),
            keys: vec![b(b"a")],
            version: 1,
            need_commit_ts: false,
        };
        let resp = kv_batch_get(&mut s, id, req(ctx.clone())).unwrap();
        let error = resp.error.clone().unwrap();
        assert!(!error.abort.is_empty());
        assert_eq!(resp.pairs.len(), 1);
        assert_eq!(resp.pairs[0].error.as_ref(), Some(&error));
        ctx.api_version = kvrpcpb::ApiVersion::V1 as i32;
        ctx.region_id = 999;
        let resp = kv_batch_get(&mut s, id, req(ctx)).unwrap();
        assert!(resp.region_error.unwrap().region_not_found.is_some());
        assert!(resp.pairs.is_empty() && resp.error.is_none());
    }

    struct Scan<'a> {
        start: &'a [u8],
        end: &'a [u8],
        limit: u32,
        reverse: bool,
        key_only: bool,
        sample_step: u32,
    }

    fn scan_at(state: &mut ClusterState, region_key: &[u8], q: Scan<'_>) -> kvrpcpb::ScanResponse {
        let ctx = ctx_for(state, region_key);
        let id = store_id(state);
        kv_scan(
            state,
            id,
            kvrpcpb::ScanRequest {
                context: Some(ctx),
                start_key: b(q.start),
                end_key: b(q.end),
                limit: q.limit,
                version: 100,
                key_only: q.key_only,
                reverse: q.reverse,
                sample_step: q.sample_step,
            },
        )
        .unwrap()
    }

    fn scan_q(start: &'static [u8], end: &'static [u8], limit: u32) -> Scan<'static> {
        Scan {
            start,
            end,
            limit,
            reverse: false,
            key_only: false,
            sample_step: 0,
        }
    }

    /// Keys of the pairs, with locked entries shown as `!key`.
    fn keys_of(resp: &kvrpcpb::ScanResponse) -> Vec<String> {
        resp.pairs
            .iter()
            .map(|p| match locked_key(&p.error) {
                Some((k, _)) => format!("!{}", String::from_utf8_lossy(&k)),
                None => String::from_utf8_lossy(&p.key).into_owned(),
            })
            .collect()
    }

    fn scan_fixture() -> ClusterState {
        let mut s = cluster(ApiVersion::V1);
        put(&mut s, b"a", 1, 2, b"va");
        put(&mut s, b"b", 1, 2, &[b'b'; 300]);
        write(&mut s, b"c", 3, Write::new(WriteType::Delete, 2, None));
        write(&mut s, b"d", 3, Write::new_rollback(3, false));
        lock(&mut s, b"e", put_lock(b"a", 50, b"x"));
        put(&mut s, b"f", 1, 2, b"vf");
        lock(
            &mut s,
            b"f",
            Lock::new(LockType::Pessimistic, b(b"a"), 50, 3000),
        );
        lock(&mut s, b"g", put_lock(b"a", 500, b"future"));
        put(&mut s, b"h", 1, 2, b"vh");
        put(&mut s, b"i", 1, 200, b"too new");
        s
    }

    #[test]
    fn scan_forward_reverse_and_limit() {
        let mut s = scan_fixture();
        let all = scan_at(&mut s, b"a", scan_q(b"", b"", 100));
        assert!(all.error.is_none());
        assert_eq!(keys_of(&all), ["a", "b", "!e", "f", "h"]);
        assert_eq!(all.pairs[1].value.len(), 300);
        assert_eq!(
            keys_of(&scan_at(&mut s, b"a", scan_q(b"b", b"f", 100))),
            ["b", "!e"]
        );
        // The locked key counts toward the limit.
        assert_eq!(
            keys_of(&scan_at(&mut s, b"a", scan_q(b"a", b"", 3))),
            ["a", "b", "!e"]
        );
        assert!(scan_at(&mut s, b"a", scan_q(b"a", b"", 0)).pairs.is_empty());
        // Reverse reads [end_key, start_key) newest key first.
        let rev = |start, end, limit| Scan {
            reverse: true,
            ..scan_q(start, end, limit)
        };
        assert_eq!(
            keys_of(&scan_at(&mut s, b"a", rev(b"h", b"b", 100))),
            ["f", "!e", "b"]
        );
        assert_eq!(
            keys_of(&scan_at(&mut s, b"a", rev(b"z", b"", 2))),
            ["h", "f"]
        );
        // An empty start key is an empty upper bound for a reverse scan: nothing.
        assert!(scan_at(&mut s, b"a", rev(b"", b"", 100)).pairs.is_empty());
        assert_eq!(s.stores[&store_id(&s)].max_ts, 100);
    }

    #[test]
    fn scan_key_only_and_sample_step() {
        let mut s = scan_fixture();
        let keys = scan_at(
            &mut s,
            b"a",
            Scan {
                key_only: true,
                ..scan_q(b"", b"", 100)
            },
        );
        assert!(keys.pairs.iter().all(|p| p.value.is_empty()));
        assert_eq!(keys.pairs.len(), 5);
        // Every second readable key, locks always reported.
        let sampled = scan_at(
            &mut s,
            b"a",
            Scan {
                sample_step: 2,
                ..scan_q(b"", b"", 100)
            },
        );
        assert_eq!(keys_of(&sampled), ["a", "!e", "f"]);
    }

    #[test]
    fn scan_is_clamped_to_the_region_and_rejects_bounds_outside_it() {
        let mut s = scan_fixture();
        s.split(&[sk(b"c"), sk(b"g")]).unwrap();
        // Empty bounds mean the region's own bounds.
        assert_eq!(
            keys_of(&scan_at(&mut s, b"d", scan_q(b"c", b"", 100))),
            ["!e", "f"]
        );
        let rev = Scan {
            reverse: true,
            ..scan_q(b"g", b"", 100)
        };
        assert_eq!(keys_of(&scan_at(&mut s, b"d", rev)), ["f", "!e"]);
        // A start before the region or an end after it is InvalidReqRange.
        for q in [scan_q(b"a", b"e", 100), scan_q(b"c", b"h", 100)] {
            let resp = scan_at(&mut s, b"d", q);
            let abort = resp.error.clone().unwrap().abort;
            assert!(abort.contains("InvalidReqRange"), "{abort}");
            assert_eq!(resp.pairs.len(), 1);
        }
    }

    #[test]
    fn scan_fails_whole_on_rc_check_ts_conflict() {
        let mut s = scan_fixture();
        let ctx = {
            let mut c = ctx_for(&s, b"a");
            c.isolation_level = kvrpcpb::IsolationLevel::RcCheckTs as i32;
            c
        };
        let id = store_id(&s);
        let resp = kv_scan(
            &mut s,
            id,
            kvrpcpb::ScanRequest {
                context: Some(ctx),
                start_key: b(b"h"),
                limit: 10,
                version: 100,
                ..Default::default()
            },
        )
        .unwrap();
        let wc = resp.error.unwrap().conflict.unwrap();
        assert_eq!((wc.key, wc.conflict_commit_ts), (b(b"i"), 200));
    }

    fn scan_lock(
        state: &mut ClusterState,
        start: &[u8],
        end: &[u8],
        max_version: u64,
        limit: u32,
    ) -> Vec<(Bytes, u64)> {
        let ctx = ctx_for(state, start);
        let id = store_id(state);
        let resp = kv_scan_lock(
            state,
            id,
            kvrpcpb::ScanLockRequest {
                context: Some(ctx),
                max_version,
                start_key: b(start),
                end_key: b(end),
                limit,
            },
        )
        .unwrap();
        assert!(resp.error.is_none() && resp.region_error.is_none());
        resp.locks
            .into_iter()
            .map(|l| (l.key, l.lock_version))
            .collect()
    }

    #[test]
    fn scan_lock_filters_by_version_range_and_limit() {
        let mut s = scan_fixture();
        assert_eq!(
            scan_lock(&mut s, b"", b"", 100, 0),
            [(b(b"e"), 50), (b(b"f"), 50)]
        );
        assert_eq!(scan_lock(&mut s, b"", b"", 1000, 0).len(), 3);
        assert_eq!(scan_lock(&mut s, b"", b"", 1000, 1), [(b(b"e"), 50)]);
        assert_eq!(scan_lock(&mut s, b"f", b"g", 1000, 0), [(b(b"f"), 50)]);
        assert_eq!(s.stores[&store_id(&s)].max_ts, 1000);
        // Only the region's locks.
        s.split(&[sk(b"f")]).unwrap();
        assert_eq!(scan_lock(&mut s, b"a", b"", 1000, 0), [(b(b"e"), 50)]);
    }

    #[test]
    fn mvcc_debug_reads_report_lock_writes_and_values() {
        let mut s = cluster(ApiVersion::V1);
        put(&mut s, b"k", 5, 10, b"short");
        put(&mut s, b"k", 20, 30, &[b'v'; 300]);
        let mut overlapped = Write::new(WriteType::Delete, 35, None);
        overlapped.has_overlapped_rollback = true;
        overlapped.gc_fence = Some(0);
        write(&mut s, b"k", 40, overlapped);
        write(&mut s, b"k", 45, Write::new_rollback(45, true));
        lock(&mut s, b"k", put_lock(b"k", 50, b"pending"));
        put(&mut s, b"other", 45, 46, b"o");

        let id = store_id(&s);
        let ctx = ctx_for(&s, b"k");
        let resp = mvcc_get_by_key(
            &mut s,
            id,
            kvrpcpb::MvccGetByKeyRequest {
                context: Some(ctx.clone()),
                key: b(b"k"),
            },
        )
        .unwrap();
        assert!(resp.error.is_empty());
        let info = resp.info.unwrap();
        let lock = info.lock.unwrap();
        assert_eq!(
            (lock.r#type, lock.start_ts, lock.primary, lock.short_value),
            (kvrpcpb::Op::Put as i32, 50, b(b"k"), b(b"pending"))
        );
        let writes: Vec<_> = info
            .writes
            .iter()
            .map(|w| (w.r#type, w.start_ts, w.commit_ts))
            .collect();
        use kvrpcpb::Op;
        assert_eq!(
            writes,
            [
                (Op::Rollback as i32, 45, 45),
                (Op::Del as i32, 35, 40),
                (Op::Put as i32, 20, 30),
                (Op::Put as i32, 5, 10),
            ]
        );
        assert_eq!(info.writes[0].short_value, b(b"p"));
        assert!(info.writes[1].has_overlapped_rollback && info.writes[1].has_gc_fence);
        assert_eq!(info.writes[3].short_value, b(b"short"));
        assert_eq!(info.values.len(), 1);
        assert_eq!(
            (info.values[0].start_ts, info.values[0].value.len()),
            (20, 300)
        );

        let by_ts = |s: &mut ClusterState, start_ts| {
            mvcc_get_by_start_ts(
                s,
                id,
                kvrpcpb::MvccGetByStartTsRequest {
                    context: Some(ctx.clone()),
                    start_ts,
                },
            )
            .unwrap()
        };
        let found = by_ts(&mut s, 20);
        assert_eq!(found.key, b(b"k"));
        assert_eq!(found.info.unwrap().writes.len(), 4);
        // The rollback at 45 on "k" sorts before "other"'s commit of start ts 45.
        assert_eq!(by_ts(&mut s, 45).key, b(b"k"));
        // Only write records are searched: a transaction that is only locked is not found.
        let missing = by_ts(&mut s, 50);
        assert!(missing.key.is_empty() && missing.error.is_empty());
        assert_eq!(missing.info, Some(kvrpcpb::MvccInfo::default()));
    }
}
