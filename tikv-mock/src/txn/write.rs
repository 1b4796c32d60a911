//! Transactional write commands: KvPrewrite (optimistic, async commit, 1PC), KvFlush
//! (pipelined DML), BroadcastTxnStatus, KvCommit,
//! KvBatchRollback, KvCleanup, KvCheckTxnStatus, KvTxnHeartBeat, KvCheckSecondaryLocks,
//! KvResolveLock and KvDeleteRange.
//!
//! Who calls it: `tikv::dispatch`, with the cluster lock held. Each handler validates the
//! context (`txn::common`), runs the per-key actions of `mvcc::actions` over one `Txn`, and
//! applies the write batch only when the whole command succeeds, as TiKV's scheduler does.
//! Follows TiKV `src/storage/txn/commands/{prewrite,commit,rollback,cleanup,check_txn_status,
//! txn_heart_beat,check_secondary_locks,resolve_lock,resolve_lock_lite,flush}.rs`,
//! `src/storage/mod.rs` (`delete_range`, `update_txn_status_cache`) and `src/server/service/kv.rs` (response shapes).
//!
//! Released locks wake lock waiters without help from these handlers: `tikv::dispatch` pokes
//! `crate::lockwait` after every request and each waiter re-reads its lock.
//!
//! Each store keeps TiKV's cache of committed transactions (`cluster::TxnStatusCache`), filled
//! by commits, 1PC, resolve lock and status checks that find a commit, and by
//! BroadcastTxnStatus; pessimistic prewrite reads it (`src/storage/txn/txn_status_cache.rs`).

use std::cmp::Reverse;
use std::collections::HashMap;

use bytes::Bytes;
use tikv_proto::kvrpcpb::prewrite_request::PessimisticAction;
use tikv_proto::{errorpb, kvrpcpb};
use tonic::Status;

use super::common::{
    MaxTsSource, TxnError, TxnRegion, check_api_range, check_context, check_key_size, ctx_of,
    outcome, outcome_errors, update_max_ts, user_key,
};
use crate::cluster::{CachedTxnState, ClusterState};
use crate::codec::encode_bytes;
use crate::mvcc::actions::check_txn_status::{
    CheckTxnStatusArgs, SecondaryStatus, check_secondary_lock, check_txn_status, txn_heart_beat,
};
use crate::mvcc::actions::cleanup::cleanup;
use crate::mvcc::actions::commit::commit;
use crate::mvcc::actions::prewrite::{CommitKind, Mutation, PrewriteProps, Prewritten, prewrite};
use crate::mvcc::actions::{Key, MvccError, TxnCommitRecord, TxnStatus, get_txn_commit_record};
use crate::mvcc::{LockRecord, Txn, WriteBatch, WriteType};

fn key_err(e: MvccError) -> TxnError {
    TxnError::key(e.to_key_error())
}

fn invalid_txn_tso(start_ts: u64, commit_ts: u64) -> TxnError {
    TxnError::abort(format!(
        "Error(Txn(Error(Mvcc(Error(InvalidTxnTso {{ start_ts: TimeStamp({start_ts}), \
         commit_ts: TimeStamp({commit_ts}) }})))))"
    ))
}

/// Validates a write command's context and keys (API version, region, key size, every key in
/// the region) and returns the region and the keys in both forms.
fn prepare(
    state: &ClusterState,
    store_id: u64,
    ctx: &kvrpcpb::Context,
    cmd: &'static str,
    raw_keys: &[Bytes],
) -> Result<(TxnRegion, Vec<Key>), TxnError> {
    let (region, enc) = check_context(
        state,
        store_id,
        ctx,
        cmd,
        raw_keys.iter().map(|k| k.as_ref()),
    )?;
    check_key_size(raw_keys.iter().map(|k| k.as_ref()))?;
    for e in &enc {
        region.check_key(e)?;
    }
    let keys = raw_keys
        .iter()
        .zip(enc)
        .map(|(raw, enc)| Key {
            raw: raw.clone(),
            enc,
        })
        .collect();
    Ok((region, keys))
}

/// Runs `f` over a transaction view of the store and applies its batch if it succeeds.
fn run<T>(
    state: &mut ClusterState,
    start_ts: u64,
    f: impl FnOnce(&mut Txn<'_>) -> Result<T, TxnError>,
) -> Result<T, TxnError> {
    let (out, batch) = {
        let mut txn = Txn::new(&state.mvcc, start_ts);
        let out = f(&mut txn)?;
        (out, std::mem::take(&mut txn.batch))
    };
    if !batch.is_empty() {
        batch.apply(&mut state.mvcc);
    }
    Ok(out)
}

fn store_max_ts(state: &ClusterState, store_id: u64) -> u64 {
    state.stores.get(&store_id).map_or(0, |s| s.max_ts)
}

/// The commit ts of this transaction's non-rollback record on `key`, if it already committed:
/// a prewrite that meets a conflict then succeeds as a retry of a finished transaction.
fn committed_record(txn: &Txn<'_>, key: &Key) -> Option<u64> {
    match get_txn_commit_record(txn, key, txn.start_ts) {
        TxnCommitRecord::SingleRecord { commit_ts, write }
            if write.write_type != WriteType::Rollback =>
        {
            Some(commit_ts)
        }
        _ => None,
    }
}

#[derive(Debug, Default)]
struct PrewriteResult {
    locked: Vec<kvrpcpb::KeyError>,
    min_commit_ts: u64,
    one_pc_commit_ts: u64,
}

/// More optimistic mutations than this make prewrite sort them and skip the constraint check
/// when no key between the first and the last has any write record (TiKV
/// `FORWARD_MIN_MUTATIONS_NUM`).
pub(crate) const FORWARD_MIN_MUTATIONS_NUM: usize = 12;

/// One request mutation in the form the prewrite action takes.
fn to_mutation(
    m: &kvrpcpb::Mutation,
    key: Key,
    pessimistic_action: Option<i32>,
    expected_for_update_ts: Option<u64>,
) -> Result<Mutation, TxnError> {
    let op = kvrpcpb::Op::try_from(m.op)
        .map_err(|_| TxnError::abort(format!("Error(Other(\"invalid mutation op {}\"))", m.op)))?;
    Ok(Mutation {
        op,
        key,
        value: m.value.clone(),
        assertion: kvrpcpb::Assertion::try_from(m.assertion).unwrap_or(kvrpcpb::Assertion::None),
        pessimistic_action: pessimistic_action
            .and_then(|a| PessimisticAction::try_from(a).ok())
            .unwrap_or(PessimisticAction::SkipPessimisticCheck),
        expected_for_update_ts,
    })
}

/// Insert and CheckNotExists read the key, so they move max_ts to the start ts first.
fn update_max_ts_for_existence_checks(
    state: &mut ClusterState,
    store_id: u64,
    mutations: &[Mutation],
    start_ts: u64,
) -> Result<(), TxnError> {
    if mutations
        .iter()
        .any(|m| matches!(m.op, kvrpcpb::Op::Insert | kvrpcpb::Op::CheckNotExists))
    {
        update_max_ts(state, store_id, start_ts, MaxTsSource::Drifted)?;
    }
    Ok(())
}

/// Whether any write record lies on a key in `first..=last` (storage keys), as TiKV's
/// `has_data_in_range` over the write column family sees it.
fn has_writes_between(state: &ClusterState, first: &Bytes, last: &Bytes) -> bool {
    state
        .mvcc
        .writes
        .range((first.clone(), Reverse(u64::MAX))..=(last.clone(), Reverse(0)))
        .next()
        .is_some()
}

/// Records a transaction TiKV learnt committed in the store's status cache.
fn cache_committed(state: &mut ClusterState, store_id: u64, start_ts: u64, commit_ts: u64) {
    let now = state.clock.now_ms();
    if let Some(store) = state.stores.get_mut(&store_id) {
        store
            .txn_status
            .upsert(start_ts, CachedTxnState::Committed { commit_ts }, now);
    }
}

fn do_prewrite(
    state: &mut ClusterState,
    store_id: u64,
    req: &kvrpcpb::PrewriteRequest,
) -> Result<PrewriteResult, TxnError> {
    let ctx = ctx_of(&req.context);
    let raw_keys: Vec<Bytes> = req.mutations.iter().map(|m| m.key.clone()).collect();
    let (region, keys) = prepare(state, store_id, &ctx, "prewrite", &raw_keys)?;
    let start_ts = req.start_version;
    let pessimistic = req.for_update_ts != 0;
    // A pessimistic prewrite of a transaction this store knows committed is handled as a
    // retry, so keys without a pessimistic lock get their constraint check (TiKV's guard
    // against late duplicates of a prewrite, which would otherwise lock a committed key).
    let is_retry_request = ctx.is_retry_request
        || (pessimistic
            && state
                .stores
                .get(&store_id)
                .is_some_and(|s| s.txn_status.committed(start_ts).is_some()));
    let mut expected_for_update_ts = HashMap::new();
    for c in &req.for_update_ts_constraints {
        if c.index as usize >= req.mutations.len() {
            return Err(TxnError::abort(format!(
                "Error(Other(\"prewrite request invalid: for_update_ts constraint index {} \
                 exceeds mutation count {}\"))",
                c.index,
                req.mutations.len()
            )));
        }
        expected_for_update_ts.insert(c.index as usize, c.expected_for_update_ts);
    }
    // TiKV zips mutations with the pessimistic actions, so a short action list drops mutations.
    let count = if pessimistic {
        req.mutations.len().min(req.pessimistic_actions.len())
    } else {
        req.mutations.len()
    };
    let mut mutations = Vec::with_capacity(count);
    for (i, (m, key)) in req.mutations.iter().zip(keys).take(count).enumerate() {
        mutations.push(to_mutation(
            m,
            key,
            req.pessimistic_actions.get(i).copied(),
            expected_for_update_ts.get(&i).copied(),
        )?);
    }
    // A large optimistic batch is prewritten in key order, and without the constraint check
    // when nothing was ever written in its key range (so no conflict or existing key can be
    // found, and a Fast assertion has no loaded write to look at).
    let mut skip_constraint_check = req.skip_constraint_check;
    if !pessimistic && mutations.len() > FORWARD_MIN_MUTATIONS_NUM {
        mutations.sort_by(|a, b| a.key.enc.cmp(&b.key.enc));
        if let (Some(first), Some(last)) = (mutations.first(), mutations.last())
            && !has_writes_between(state, &first.key.enc, &last.key.enc)
        {
            skip_constraint_check = true;
        }
    }
    // Async commit and 1PC compute the commit ts from max_ts, which a new leader must first
    // sync with the TSO.
    if (req.use_async_commit || req.try_one_pc) && !region.max_ts_synced {
        return Err(TxnError::region(errorpb::Error {
            max_timestamp_not_synced: Some(Default::default()),
            ..Default::default()
        }));
    }
    update_max_ts_for_existence_checks(state, store_id, &mutations, start_ts)?;
    let kind = if req.try_one_pc {
        CommitKind::OnePc {
            max_commit_ts: req.max_commit_ts,
        }
    } else if req.use_async_commit {
        CommitKind::Async {
            max_commit_ts: req.max_commit_ts,
        }
    } else {
        CommitKind::TwoPc
    };
    let props = PrewriteProps {
        start_ts,
        primary: req.primary_lock.clone(),
        lock_ttl: req.lock_ttl,
        txn_size: req.txn_size,
        min_commit_ts: req.min_commit_ts,
        kind,
        secondaries: if req.use_async_commit {
            req.secondaries.clone()
        } else {
            Vec::new()
        },
        skip_constraint_check,
        assertion_level: kvrpcpb::AssertionLevel::try_from(req.assertion_level)
            .unwrap_or(kvrpcpb::AssertionLevel::Off),
        max_ts: store_max_ts(state, store_id),
        txn_source: ctx.txn_source,
        for_update_ts: req.for_update_ts,
        is_retry_request,
        generation: 0,
    };
    let result = run_prewrite(state, &props, kind, &mutations)?;
    if result.one_pc_commit_ts != 0 {
        cache_committed(state, store_id, start_ts, result.one_pc_commit_ts);
    }
    Ok(result)
}

/// Prewrites every mutation in order and decides what is written (TiKV `Prewriter::prewrite`
/// and `write_result`).
fn run_prewrite(
    state: &mut ClusterState,
    props: &PrewriteProps,
    kind: CommitKind,
    mutations: &[Mutation],
) -> Result<PrewriteResult, TxnError> {
    let start_ts = props.start_ts;
    run(state, start_ts, |txn| {
        let mut out = PrewriteResult::default();
        let mut assertion_failure = None;
        let mut fallback = false;
        let mut final_min = 0u64;
        let mut one_pc = Vec::new();
        let two_pc = PrewriteProps {
            kind: CommitKind::TwoPc,
            ..props.clone()
        };
        // A retry of a transaction that already committed succeeds without writing.
        let already_committed = |txn: &mut Txn<'_>, key: &Key| {
            committed_record(txn, key).map(|commit_ts| {
                txn.batch = WriteBatch::default();
                PrewriteResult {
                    locked: Vec::new(),
                    min_commit_ts: if matches!(kind, CommitKind::Async { .. }) {
                        commit_ts
                    } else {
                        0
                    },
                    one_pc_commit_ts: if matches!(kind, CommitKind::OnePc { .. }) {
                        commit_ts
                    } else {
                        0
                    },
                }
            })
        };
        for m in mutations {
            let p = if fallback { &two_pc } else { props };
            let result = match prewrite(txn, p, m) {
                Err(MvccError::CommitTsTooLarge { .. }) => {
                    if let Some(done) = already_committed(txn, &m.key) {
                        return Ok(done);
                    }
                    fallback = true;
                    prewrite(txn, &two_pc, m)
                }
                other => other,
            };
            match result {
                Ok(Prewritten::Locked { min_commit_ts }) => {
                    if kind != CommitKind::TwoPc && min_commit_ts == 0 {
                        fallback = true;
                    }
                    final_min = final_min.max(min_commit_ts);
                }
                Ok(Prewritten::OnePc {
                    lock,
                    min_commit_ts,
                }) => {
                    final_min = final_min.max(min_commit_ts);
                    one_pc.push((m.key.clone(), lock));
                }
                Err(e @ MvccError::KeyIsLocked(_)) => {
                    if let Some(done) = already_committed(txn, &m.key) {
                        return Ok(done);
                    }
                    out.locked.push(e.to_key_error());
                }
                Err(e @ MvccError::AssertionFailed { .. }) => {
                    assertion_failure.get_or_insert(e);
                }
                Err(e) => {
                    let maybe_committed = match &e {
                        MvccError::WriteConflict {
                            conflict_commit_ts, ..
                        } => *conflict_commit_ts > start_ts,
                        MvccError::PessimisticLockNotFound { .. } => true,
                        _ => false,
                    };
                    if maybe_committed && let Some(done) = already_committed(txn, &m.key) {
                        return Ok(done);
                    }
                    return Err(key_err(e));
                }
            }
        }
        if !out.locked.is_empty() {
            // Another transaction's lock on any key: nothing of this request is written.
            txn.batch = WriteBatch::default();
            return Ok(out);
        }
        if let Some(e) = assertion_failure {
            return Err(key_err(e));
        }
        if fallback || kind == CommitKind::TwoPc {
            for (key, lock) in one_pc {
                txn.batch.put_lock(key.enc, lock);
            }
            return Ok(out);
        }
        if matches!(kind, CommitKind::OnePc { .. }) {
            for (key, lock) in one_pc {
                let write_type = match lock.lock_type {
                    crate::mvcc::LockType::Put => WriteType::Put,
                    crate::mvcc::LockType::Delete => WriteType::Delete,
                    _ => WriteType::Lock,
                };
                let mut write = crate::mvcc::Write::new(write_type, start_ts, lock.short_value);
                write.txn_source = lock.txn_source;
                // The pessimistic lock the key held is replaced by the commit record.
                if txn.lock(&key.enc).is_some() {
                    txn.batch.unlock_key(key.enc.clone(), start_ts);
                }
                txn.batch.put_write(key.enc, final_min, write);
            }
            out.one_pc_commit_ts = final_min;
        } else {
            out.min_commit_ts = final_min;
        }
        Ok(out)
    })
}

/// KvPrewrite (optimistic and pessimistic, 2PC, async commit and 1PC).
pub(crate) fn kv_prewrite(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::PrewriteRequest,
) -> Result<kvrpcpb::PrewriteResponse, Status> {
    let (body, region_error, errors) = outcome_errors(do_prewrite(state, store_id, &req));
    let body = body.unwrap_or_default();
    Ok(kvrpcpb::PrewriteResponse {
        region_error,
        errors: if errors.is_empty() {
            body.locked
        } else {
            errors
        },
        min_commit_ts: body.min_commit_ts,
        one_pc_commit_ts: body.one_pc_commit_ts,
        ..Default::default()
    })
}

/// KvFlush: writes one generation of a pipelined-DML transaction's mutations as locks (TiKV
/// `commands/flush.rs`). Unlike a prewrite, keys locked by other transactions are reported
/// while every other key of the request is still written; a mutation whose key already holds
/// this transaction's lock of the same or a newer generation is skipped.
pub(crate) fn kv_flush(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::FlushRequest,
) -> Result<kvrpcpb::FlushResponse, Status> {
    let (body, region_error, errors) = outcome_errors(do_flush(state, store_id, &req));
    Ok(kvrpcpb::FlushResponse {
        region_error,
        errors: if errors.is_empty() {
            body.unwrap_or_default()
        } else {
            errors
        },
        ..Default::default()
    })
}

fn do_flush(
    state: &mut ClusterState,
    store_id: u64,
    req: &kvrpcpb::FlushRequest,
) -> Result<Vec<kvrpcpb::KeyError>, TxnError> {
    let ctx = ctx_of(&req.context);
    let raw_keys: Vec<Bytes> = req.mutations.iter().map(|m| m.key.clone()).collect();
    let (_, keys) = prepare(state, store_id, &ctx, "flush", &raw_keys)?;
    if req.generation == 0 {
        return Err(TxnError::abort(
            "Error(Txn(Error(Other(\"generation should be greater than 0 for Flush \
             requests\"))))",
        ));
    }
    let start_ts = req.start_ts;
    let mutations = req
        .mutations
        .iter()
        .zip(keys)
        .map(|(m, key)| to_mutation(m, key, None, None))
        .collect::<Result<Vec<_>, _>>()?;
    update_max_ts_for_existence_checks(state, store_id, &mutations, start_ts)?;
    let props = PrewriteProps {
        start_ts,
        primary: req.primary_key.clone(),
        lock_ttl: req.lock_ttl,
        // The size of a pipelined transaction is unknown; the largest size keeps readers from
        // resolving its locks one key at a time.
        txn_size: u64::MAX,
        // Non-zero, so readers may push it.
        min_commit_ts: start_ts.saturating_add(1),
        kind: CommitKind::TwoPc,
        secondaries: Vec::new(),
        skip_constraint_check: false,
        assertion_level: kvrpcpb::AssertionLevel::try_from(req.assertion_level)
            .unwrap_or(kvrpcpb::AssertionLevel::Off),
        max_ts: store_max_ts(state, store_id),
        txn_source: ctx.txn_source,
        for_update_ts: 0,
        is_retry_request: ctx.is_retry_request,
        generation: req.generation,
    };
    run(state, start_ts, |txn| {
        let mut locked = Vec::new();
        let mut assertion_failure = None;
        for m in &mutations {
            match prewrite(txn, &props, m) {
                Ok(_) | Err(MvccError::GenerationOutOfOrder { .. }) => {}
                Err(e @ MvccError::WriteConflict { .. }) => {
                    if committed_record(txn, &m.key).is_some() {
                        // A late flush of a committed transaction: nothing to do.
                        txn.batch = WriteBatch::default();
                        return Ok(Vec::new());
                    }
                    return Err(key_err(e));
                }
                Err(e @ MvccError::KeyIsLocked(_)) => {
                    if committed_record(txn, &m.key).is_some() {
                        txn.batch = WriteBatch::default();
                        return Ok(Vec::new());
                    }
                    locked.push(e.to_key_error());
                }
                Err(e @ MvccError::AssertionFailed { .. }) => {
                    assertion_failure.get_or_insert(e);
                }
                Err(e) => return Err(key_err(e)),
            }
        }
        match assertion_failure {
            Some(e) => Err(key_err(e)),
            None => Ok(locked),
        }
    })
}

/// BroadcastTxnStatus: the client tells the store how transactions ended (or that a large one
/// is still running), and the store records it in its status cache (TiKV
/// `Storage::update_txn_status_cache`). Always answers an empty response.
pub(crate) fn broadcast_txn_status(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::BroadcastTxnStatusRequest,
) -> kvrpcpb::BroadcastTxnStatusResponse {
    let now = state.clock.now_ms();
    if let Some(store) = state.stores.get_mut(&store_id) {
        for status in req.txn_status {
            let cached = if status.rolled_back {
                CachedTxnState::RolledBack
            } else if status.commit_ts != 0 {
                CachedTxnState::Committed {
                    commit_ts: status.commit_ts,
                }
            } else if status.min_commit_ts > status.start_ts {
                // An ongoing large transaction: only TiKV's resolved-ts tracker reads that.
                continue;
            } else {
                CachedTxnState::Ongoing
            };
            store.txn_status.upsert(status.start_ts, cached, now);
        }
    }
    kvrpcpb::BroadcastTxnStatusResponse::default()
}

/// KvCommit.
pub(crate) fn kv_commit(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::CommitRequest,
) -> Result<kvrpcpb::CommitResponse, Status> {
    let result = (|| {
        let ctx = ctx_of(&req.context);
        let (_, keys) = prepare(state, store_id, &ctx, "commit", &req.keys)?;
        let (start_ts, commit_ts) = (req.start_version, req.commit_version);
        if commit_ts <= start_ts {
            return Err(invalid_txn_tso(start_ts, commit_ts));
        }
        run(state, start_ts, |txn| {
            for key in &keys {
                commit(txn, key, start_ts, commit_ts).map_err(key_err)?;
            }
            Ok(())
        })?;
        cache_committed(state, store_id, start_ts, commit_ts);
        Ok(commit_ts)
    })();
    let (body, region_error, error) = outcome(result);
    Ok(kvrpcpb::CommitResponse {
        region_error,
        error,
        commit_version: body.unwrap_or(0),
        ..Default::default()
    })
}

/// Maps a cleanup of a committed key onto the abort TiKV answers for rollbacks.
fn committed_abort(e: MvccError) -> TxnError {
    match e {
        MvccError::Committed {
            start_ts,
            commit_ts,
            key,
        } => TxnError::abort(format!(
            "Error(Txn(Error(Mvcc(Error(Committed {{ start_ts: TimeStamp({start_ts}), \
             commit_ts: TimeStamp({commit_ts}), key: {key:?} }})))))"
        )),
        other => key_err(other),
    }
}

/// KvBatchRollback.
pub(crate) fn kv_batch_rollback(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::BatchRollbackRequest,
) -> Result<kvrpcpb::BatchRollbackResponse, Status> {
    let result = (|| {
        let ctx = ctx_of(&req.context);
        let (_, keys) = prepare(state, store_id, &ctx, "batch_rollback", &req.keys)?;
        let start_ts = req.start_version;
        run(state, start_ts, |txn| {
            for key in &keys {
                cleanup(txn, key, start_ts, 0, false).map_err(committed_abort)?;
            }
            Ok(())
        })
    })();
    let (_, region_error, error) = outcome(result);
    Ok(kvrpcpb::BatchRollbackResponse {
        region_error,
        error,
        ..Default::default()
    })
}

/// KvCleanup.
pub(crate) fn kv_cleanup(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::CleanupRequest,
) -> Result<kvrpcpb::CleanupResponse, Status> {
    let result = (|| {
        let ctx = ctx_of(&req.context);
        let (_, keys) = prepare(
            state,
            store_id,
            &ctx,
            "cleanup",
            std::slice::from_ref(&req.key),
        )?;
        let start_ts = req.start_version;
        update_max_ts(
            state,
            store_id,
            start_ts,
            MaxTsSource::OriginChecked(ctx.request_origin),
        )?;
        run(state, start_ts, |txn| {
            match keys
                .first()
                .map(|k| cleanup(txn, k, start_ts, req.current_ts, true))
            {
                Some(Err(MvccError::Committed { commit_ts, .. })) => Ok(commit_ts),
                Some(Err(e)) => Err(key_err(e)),
                _ => Ok(0),
            }
        })
    })();
    let (body, region_error, error) = outcome(result);
    Ok(kvrpcpb::CleanupResponse {
        region_error,
        error,
        commit_version: body.unwrap_or(0),
    })
}

/// KvCheckTxnStatus.
pub(crate) fn kv_check_txn_status(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::CheckTxnStatusRequest,
) -> Result<kvrpcpb::CheckTxnStatusResponse, Status> {
    let result = (|| {
        let ctx = ctx_of(&req.context);
        let (_, keys) = prepare(
            state,
            store_id,
            &ctx,
            "check_txn_status",
            std::slice::from_ref(&req.primary_key),
        )?;
        // One update with the largest of the three, ignoring u64::MAX (TiKV's `new_max_ts`).
        let new_max_ts = [req.current_ts, req.caller_start_ts]
            .into_iter()
            .filter(|&ts| ts != u64::MAX)
            .fold(req.lock_ts, u64::max);
        update_max_ts(
            state,
            store_id,
            new_max_ts,
            MaxTsSource::OriginChecked(ctx.request_origin),
        )?;
        let args = CheckTxnStatusArgs {
            lock_ts: req.lock_ts,
            caller_start_ts: req.caller_start_ts,
            current_ts: req.current_ts,
            rollback_if_not_exist: req.rollback_if_not_exist,
            force_sync_commit: req.force_sync_commit,
            resolving_pessimistic_lock: req.resolving_pessimistic_lock,
            verify_is_primary: req.verify_is_primary,
        };
        let status = run(state, req.lock_ts, |txn| match keys.first() {
            Some(key) => check_txn_status(txn, key, &args).map_err(key_err),
            None => Ok(TxnStatus::LockNotExistDoNothing),
        })?;
        if let TxnStatus::Committed { commit_ts } = status {
            cache_committed(state, store_id, req.lock_ts, commit_ts);
        }
        Ok(status)
    })();
    let (body, region_error, error) = outcome(result);
    let mut resp = kvrpcpb::CheckTxnStatusResponse {
        region_error,
        error,
        ..Default::default()
    };
    use kvrpcpb::Action;
    let action = match body {
        None => Action::NoAction,
        Some(TxnStatus::Committed { commit_ts }) => {
            resp.commit_version = commit_ts;
            Action::NoAction
        }
        Some(TxnStatus::RolledBack) => Action::NoAction,
        Some(TxnStatus::TtlExpire) => Action::TtlExpireRollback,
        Some(TxnStatus::PessimisticRollBack) => Action::TtlExpirePessimisticRollback,
        Some(TxnStatus::LockNotExist) => Action::LockNotExistRollback,
        Some(TxnStatus::LockNotExistDoNothing) => Action::LockNotExistDoNothing,
        Some(TxnStatus::Uncommitted {
            lock,
            min_commit_ts_pushed,
        }) => {
            resp.lock_ttl = lock.ttl;
            resp.lock_info = Some(lock.to_lock_info(req.primary_key.clone()));
            if min_commit_ts_pushed {
                Action::MinCommitTsPushed
            } else {
                Action::NoAction
            }
        }
    };
    resp.action = action as i32;
    Ok(resp)
}

/// KvTxnHeartBeat.
pub(crate) fn kv_txn_heartbeat(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::TxnHeartBeatRequest,
) -> Result<kvrpcpb::TxnHeartBeatResponse, Status> {
    let result = (|| {
        let ctx = ctx_of(&req.context);
        let (_, keys) = prepare(
            state,
            store_id,
            &ctx,
            "txn_heart_beat",
            std::slice::from_ref(&req.primary_lock),
        )?;
        let start_ts = req.start_version;
        run(state, start_ts, |txn| {
            let Some(key) = keys.first() else {
                return Ok(0);
            };
            txn_heart_beat(txn, key, start_ts, req.advise_lock_ttl, req.min_commit_ts)
                .map(|lock| lock.ttl)
                .map_err(key_err)
        })
    })();
    let (body, region_error, error) = outcome(result);
    Ok(kvrpcpb::TxnHeartBeatResponse {
        region_error,
        error,
        lock_ttl: body.unwrap_or(0),
        ..Default::default()
    })
}

/// KvCheckSecondaryLocks.
pub(crate) fn kv_check_secondary_locks(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::CheckSecondaryLocksRequest,
) -> Result<kvrpcpb::CheckSecondaryLocksResponse, Status> {
    let result = (|| {
        let ctx = ctx_of(&req.context);
        let (_, keys) = prepare(state, store_id, &ctx, "check_secondary_locks", &req.keys)?;
        let start_ts = req.start_version;
        update_max_ts(
            state,
            store_id,
            start_ts,
            MaxTsSource::OriginChecked(ctx.request_origin),
        )?;
        let checked = run(state, start_ts, |txn| {
            let mut locks = Vec::new();
            for key in &keys {
                match check_secondary_lock(txn, key, start_ts).map_err(key_err)? {
                    SecondaryStatus::Locked(lock) => locks.push(lock.to_lock_info(key.raw.clone())),
                    SecondaryStatus::Committed(commit_ts) => return Ok((Vec::new(), commit_ts)),
                    SecondaryStatus::RolledBack => return Ok((Vec::new(), 0)),
                }
            }
            Ok((locks, 0))
        })?;
        if checked.1 != 0 {
            cache_committed(state, store_id, start_ts, checked.1);
        }
        Ok(checked)
    })();
    let (body, region_error, error) = outcome(result);
    let (locks, commit_ts) = body.unwrap_or_default();
    Ok(kvrpcpb::CheckSecondaryLocksResponse {
        region_error,
        error,
        locks,
        commit_ts,
        ..Default::default()
    })
}

/// Locks TiKV's region-wide resolve lock reads and writes per round
/// (`RESOLVE_LOCK_BATCH_SIZE`).
pub(crate) const RESOLVE_LOCK_BATCH_SIZE: usize = 256;

/// KvResolveLock.
pub(crate) fn kv_resolve_lock(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::ResolveLockRequest,
) -> Result<kvrpcpb::ResolveLockResponse, Status> {
    let result = (|| {
        let ctx = ctx_of(&req.context);
        let (region, keys) = prepare(state, store_id, &ctx, "resolve_lock", &req.keys)?;
        let statuses: HashMap<u64, u64> = if req.start_version > 0 {
            HashMap::from([(req.start_version, req.commit_version)])
        } else {
            req.txn_infos.iter().map(|t| (t.txn, t.status)).collect()
        };
        if !keys.is_empty() {
            // Lite: only the given keys of one transaction.
            let start_ts = req.start_version;
            let commit_ts = req.commit_version;
            run(state, start_ts, |txn| {
                for key in &keys {
                    if commit_ts != 0 {
                        commit(txn, key, start_ts, commit_ts).map_err(key_err)?;
                    } else {
                        cleanup(txn, key, start_ts, 0, false).map_err(committed_abort)?;
                    }
                }
                Ok(())
            })?;
            if commit_ts != 0 {
                cache_committed(state, store_id, start_ts, commit_ts);
            }
            return Ok(());
        }
        // Every lock of the listed transactions in the region; a shared record contributes one
        // target per listed holder, each resolved on its own (TiKV's read phase flattens them).
        let targets: Vec<(Key, u64, u64)> = state
            .mvcc
            .locks
            .range(region.start.clone()..)
            .take_while(|(k, _)| region.end.is_empty() || k.as_ref() < region.end.as_ref())
            .flat_map(|(enc, record)| {
                let holders: Vec<&crate::mvcc::Lock> = match record {
                    LockRecord::Exclusive(lock) => vec![lock],
                    LockRecord::Shared(shared) => shared.iter().collect(),
                };
                holders.into_iter().filter_map(|lock| {
                    let commit_ts = *statuses.get(&lock.ts)?;
                    let raw = user_key(enc)?;
                    Some((
                        Key {
                            raw,
                            enc: enc.clone(),
                        },
                        lock.ts,
                        commit_ts,
                    ))
                })
            })
            .collect();
        // TiKV resolves a region in rounds of RESOLVE_LOCK_BATCH_SIZE locks, each written on its
        // own: when a round fails, the rounds before it stay applied.
        for batch in targets.chunks(RESOLVE_LOCK_BATCH_SIZE) {
            let committed = run(state, 0, |txn| {
                let mut committed = Vec::new();
                for (key, lock_ts, commit_ts) in batch {
                    if *commit_ts == 0 {
                        cleanup(txn, key, *lock_ts, 0, false).map_err(committed_abort)?;
                    } else if commit_ts > lock_ts {
                        commit(txn, key, *lock_ts, *commit_ts).map_err(key_err)?;
                        committed.push((*lock_ts, *commit_ts));
                    } else {
                        return Err(invalid_txn_tso(*lock_ts, *commit_ts));
                    }
                }
                Ok(committed)
            })?;
            for (start_ts, commit_ts) in committed {
                cache_committed(state, store_id, start_ts, commit_ts);
            }
        }
        Ok(())
    })();
    let (_, region_error, error) = outcome(result);
    Ok(kvrpcpb::ResolveLockResponse {
        region_error,
        error,
        ..Default::default()
    })
}

/// KvDeleteRange.
pub(crate) fn kv_delete_range(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::DeleteRangeRequest,
) -> Result<kvrpcpb::DeleteRangeResponse, Status> {
    let result = (|| {
        let ctx = ctx_of(&req.context);
        check_api_range(
            state.api_version,
            &ctx,
            "delete_range",
            Some(&req.start_key),
            Some(&req.end_key),
        )?;
        let region = TxnRegion::of(state, store_id, &ctx)?;
        let start = Bytes::from(encode_bytes(&req.start_key));
        let end = Bytes::from(encode_bytes(&req.end_key));
        region.check_key(&start)?;
        if !region.end.is_empty() && end > region.end {
            region.check_key(&end)?;
        }
        if req.notify_only || start >= end {
            return Ok(());
        }
        let mvcc = &mut state.mvcc;
        let in_range = |k: &Bytes| *k >= start && *k < end;
        mvcc.locks.retain(|k, _| !in_range(k));
        mvcc.writes.retain(|(k, _), _| !in_range(k));
        mvcc.values.retain(|(k, _), _| !in_range(k));
        Ok(())
    })();
    let (_, region_error, error) = outcome(result);
    Ok(kvrpcpb::DeleteRangeResponse {
        region_error,
        error: error.map(|e| e.abort).unwrap_or_default(),
    })
}
