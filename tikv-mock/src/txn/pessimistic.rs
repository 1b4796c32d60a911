//! KvPessimisticLock (with lock waiting and deadlock detection) and KVPessimisticRollback.
//!
//! Who calls it: `tikv::dispatch`. [`kv_pessimistic_lock_waiting`] is the asynchronous path a
//! served request takes: it runs one attempt under the cluster lock ([`attempt`]), and when a key
//! is locked by another transaction it parks in `crate::lockwait` with the cluster lock released,
//! then answers as TiKV's lock manager does (deadlock, timeout, or woken by the release).
//!
//! Follows TiKV `src/storage/txn/commands/acquire_pessimistic_lock.rs`,
//! `src/storage/txn/commands/pessimistic_rollback.rs`, `src/storage/lock_manager/` and
//! `src/server/service/kv.rs` (response shapes: legacy `values`/`not_founds`, or `results` in
//! wake-up mode ForceLock).
//!
//! Shared pessimistic locks (`Op::SharedPessimisticLock`): an exclusive request that meets a
//! shared record waits for all its holders and is woken when the last one releases; TiKV's
//! first meeting marks the record shrink-only and answers KeyIsLocked at once (see [`attempt`]).

use std::sync::Arc;

use bytes::Bytes;
use tikv_proto::kvrpcpb;
use tikv_proto::kvrpcpb::PessimisticLockKeyResultType as ResultType;
use tonic::Status;

use super::common::{
    MaxTsSource, TxnError, check_context, check_key_size, ctx_of, outcome_errors, update_max_ts,
};
use crate::Shared;
use crate::cluster::ClusterState;
use crate::lockwait::{LockWaits, WAKE_UP_DELAY, wait_timeout};
use crate::mvcc::actions::acquire_pessimistic_lock::{
    KeyResult, LockProps, acquire_pessimistic_lock, acquire_shared_pessimistic_lock,
};
use crate::mvcc::actions::{Key, MvccError, TxnCommitRecord, get_txn_commit_record};
use crate::mvcc::{LockRecord, Txn, WriteBatch, WriteType, lock_info_holders};

/// Whether the request is in wake-up mode ForceLock.
fn force_lock(req: &kvrpcpb::PessimisticLockRequest) -> bool {
    req.wake_up_mode == kvrpcpb::PessimisticLockWakeUpMode::WakeUpModeForceLock as i32
}

/// A lock of another transaction that stopped the request.
#[derive(Debug, Clone)]
pub(crate) struct Blocked {
    /// The lock met: one transaction's, or a shared record with all its holders.
    info: kvrpcpb::LockInfo,
    key: Key,
    /// Whether the blocked mutation asks for a shared lock: consecutive shared waiters at the
    /// head of a key's queue are woken together.
    shared_request: bool,
}

/// The outcome of one attempt.
// Built once per attempt and consumed at once: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Attempt {
    Done(kvrpcpb::PessimisticLockResponse),
    Blocked(Blocked),
}

/// The response of a request that failed with `error` (a single key error).
fn error_response(
    req: &kvrpcpb::PessimisticLockRequest,
    error: kvrpcpb::KeyError,
) -> kvrpcpb::PessimisticLockResponse {
    let results = if force_lock(req) {
        req.mutations
            .iter()
            .map(|_| kvrpcpb::PessimisticLockKeyResult {
                r#type: ResultType::LockResultFailed as i32,
                ..Default::default()
            })
            .collect()
    } else {
        Vec::new()
    };
    kvrpcpb::PessimisticLockResponse {
        errors: vec![error],
        results,
        ..Default::default()
    }
}

fn success_response(
    req: &kvrpcpb::PessimisticLockRequest,
    results: Vec<KeyResult>,
) -> kvrpcpb::PessimisticLockResponse {
    let mut resp = kvrpcpb::PessimisticLockResponse::default();
    if force_lock(req) {
        resp.results = results
            .into_iter()
            .map(|r| {
                let mut pb = kvrpcpb::PessimisticLockKeyResult {
                    r#type: ResultType::LockResultNormal as i32,
                    ..Default::default()
                };
                match r {
                    KeyResult::Empty => {}
                    KeyResult::Value(v) => {
                        pb.existence = v.is_some();
                        pb.value = v.unwrap_or_default();
                    }
                    KeyResult::Existence(e) => pb.existence = e,
                    KeyResult::LockedWithConflict { value, conflict_ts } => {
                        pb.r#type = ResultType::LockResultLockedWithConflict as i32;
                        pb.existence = value.is_some();
                        pb.value = value.unwrap_or_default();
                        pb.locked_with_conflict_ts = conflict_ts;
                    }
                }
                pb
            })
            .collect();
    } else if req.return_values {
        for r in results {
            let v = match r {
                KeyResult::Value(v) | KeyResult::LockedWithConflict { value: v, .. } => v,
                _ => None,
            };
            resp.not_founds.push(v.is_none());
            resp.values.push(v.unwrap_or_default());
        }
    } else if req.check_existence {
        resp.not_founds = results
            .into_iter()
            .map(|r| !matches!(r, KeyResult::Existence(true)))
            .collect();
    }
    resp
}

fn whole(
    req: &kvrpcpb::PessimisticLockRequest,
    result: Result<Attempt, TxnError>,
) -> Result<Attempt, Status> {
    let (body, region_error, errors) = outcome_errors(result);
    Ok(match body {
        Some(attempt) => attempt,
        None => {
            let mut resp = match errors.into_iter().next() {
                Some(e) => error_response(req, e),
                None => kvrpcpb::PessimisticLockResponse::default(),
            };
            resp.region_error = region_error;
            if resp.region_error.is_some() {
                resp.results.clear();
            }
            Attempt::Done(resp)
        }
    })
}

/// One attempt of KvPessimisticLock under the cluster lock: every key is locked and the batch
/// applied, or the first key locked by another transaction stops it with nothing written.
///
/// An exclusive request that meets a shared record still admitting holders makes it
/// shrink-only (writing only that) and fails at once with KeyIsLocked, without waiting; a retry
/// then waits. A `resumed` attempt (a ForceLock request woken in the queue) waits instead and
/// leaves the record alone, as TiKV's resumed command does.
pub(crate) fn attempt(
    state: &mut ClusterState,
    store_id: u64,
    req: &kvrpcpb::PessimisticLockRequest,
    resumed: bool,
) -> Result<Attempt, Status> {
    let result = (|| {
        let ctx = ctx_of(&req.context);
        let raw: Vec<&[u8]> = req.mutations.iter().map(|m| m.key.as_ref()).collect();
        let (region, enc) = check_context(
            state,
            store_id,
            &ctx,
            "acquire_pessimistic_lock",
            raw.iter().copied(),
        )?;
        check_key_size(raw.iter().copied())?;
        for e in &enc {
            region.check_key(e)?;
        }
        if force_lock(req) && req.mutations.len() > 1 {
            return Err(TxnError::abort(format!(
                "Error(Txn(Error(Other({:?}))))",
                "multiple keys in a single request with allowed_lock_with_conflict set is not \
                 allowed"
            )));
        }
        let props = LockProps {
            primary: req.primary_lock.clone(),
            start_ts: req.start_version,
            lock_ttl: req.lock_ttl,
            for_update_ts: req.for_update_ts,
            need_value: req.return_values,
            need_check_existence: req.check_existence,
            min_commit_ts: req.min_commit_ts,
            lock_only_if_exists: req.lock_only_if_exists,
            allow_lock_with_conflict: force_lock(req),
        };
        let should_not_exist =
            |m: &kvrpcpb::Mutation| m.assertion == kvrpcpb::Assertion::NotExist as i32;
        // A request refused for lock_only_if_exists without return_values moves nothing.
        if (props.need_value || !props.lock_only_if_exists)
            && (props.need_value
                || props.need_check_existence
                || req.mutations.iter().any(should_not_exist))
        {
            update_max_ts(state, store_id, props.for_update_ts, MaxTsSource::Drifted)?;
        }
        let keys: Vec<Key> = req
            .mutations
            .iter()
            .zip(enc)
            .map(|(m, enc)| Key {
                raw: m.key.clone(),
                enc,
            })
            .collect();
        let (outcome, batch, shrunk) = {
            let mut txn = Txn::new(&state.mvcc, props.start_ts);
            let mut results = Vec::new();
            let mut outcome = None;
            let mut shrunk = false;
            for (m, key) in req.mutations.iter().zip(&keys) {
                let shared_request = m.op == kvrpcpb::Op::SharedPessimisticLock as i32;
                let acquired = if shared_request {
                    acquire_shared_pessimistic_lock(&mut txn, key, &props, should_not_exist(m))
                } else {
                    acquire_pessimistic_lock(&mut txn, key, &props, should_not_exist(m))
                };
                match acquired {
                    Ok(r) => results.push(r),
                    Err(MvccError::KeyIsLocked(info)) => {
                        outcome = Some(Ok(Attempt::Blocked(Blocked {
                            info: *info,
                            key: key.clone(),
                            shared_request,
                        })));
                        break;
                    }
                    Err(MvccError::NotInShrinkMode(locks)) if resumed => {
                        outcome = Some(Ok(Attempt::Blocked(Blocked {
                            info: locks.to_lock_info(key.raw.clone()),
                            key: key.clone(),
                            shared_request,
                        })));
                        break;
                    }
                    Err(MvccError::NotInShrinkMode(mut locks)) => {
                        // Nothing else of the request is written: only the record, now
                        // closed to new holders.
                        locks.set_shrink_only();
                        let info = locks.to_lock_info(key.raw.clone());
                        txn.batch = WriteBatch::default();
                        txn.batch.put_shared_locks(key.enc.clone(), *locks);
                        shrunk = true;
                        outcome = Some(Err(TxnError::key(kvrpcpb::KeyError {
                            locked: Some(info),
                            ..Default::default()
                        })));
                        break;
                    }
                    Err(e) => {
                        outcome = Some(Err(TxnError::key(e.to_key_error())));
                        break;
                    }
                }
            }
            let outcome =
                outcome.unwrap_or_else(|| Ok(Attempt::Done(success_response(req, results))));
            (outcome, std::mem::take(&mut txn.batch), shrunk)
        };
        // Only a fully successful request writes anything, or the shrink-only mark alone.
        if (shrunk || matches!(outcome, Ok(Attempt::Done(_)))) && !batch.is_empty() {
            batch.apply(&mut state.mvcc);
        }
        outcome
    })();
    whole(req, result)
}

/// The answer of a request that does not (or may no longer) wait for `blocked`.
fn locked_response(
    req: &kvrpcpb::PessimisticLockRequest,
    blocked: &Blocked,
) -> kvrpcpb::PessimisticLockResponse {
    error_response(
        req,
        kvrpcpb::KeyError {
            locked: Some(blocked.info.clone()),
            ..Default::default()
        },
    )
}

/// KvPessimisticLock without waiting: a locked key is answered at once. Used where the request
/// cannot be parked (the synchronous dispatch path).
pub(crate) fn kv_pessimistic_lock(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::PessimisticLockRequest,
) -> Result<kvrpcpb::PessimisticLockResponse, Status> {
    Ok(match attempt(state, store_id, &req, false)? {
        Attempt::Done(resp) => resp,
        Attempt::Blocked(blocked) => locked_response(&req, &blocked),
    })
}

/// The commit ts transaction `start_ts` left on `key` (0 if it rolled back or left no record).
fn commit_ts_of(state: &ClusterState, key: &Key, start_ts: u64) -> u64 {
    let txn = Txn::new(&state.mvcc, start_ts);
    match get_txn_commit_record(&txn, key, start_ts) {
        TxnCommitRecord::SingleRecord { commit_ts, write }
            if write.write_type != WriteType::Rollback =>
        {
            commit_ts
        }
        _ => 0,
    }
}

/// Whether the lock `blocked` met is gone from `key`; if so, the released lock a woken request
/// reports: its start ts and the commit ts it left.
///
/// A shared record counts as released only when none of its holders is left: TiKV wakes
/// waiters when the last sub-lock goes. It reports that last holder; the mock does not record
/// which holder went last, so it reports the holder with the newest commit (commit timestamps
/// follow commit order), or, when none committed, the newest holder with commit ts 0.
fn released(state: &ClusterState, blocked: &Blocked) -> Option<(u64, u64)> {
    let key = &blocked.key;
    if blocked.info.lock_type != kvrpcpb::Op::SharedLock as i32 {
        let lock_ts = blocked.info.lock_version;
        if state.mvcc.lock(&key.enc).is_some_and(|l| l.ts == lock_ts) {
            return None;
        }
        return Some((lock_ts, commit_ts_of(state, key, lock_ts)));
    }
    let holders = lock_info_holders(&blocked.info);
    if let Some(LockRecord::Shared(locks)) = state.mvcc.lock_record(&key.enc)
        && holders.iter().any(|&ts| locks.contains(ts))
    {
        return None;
    }
    holders
        .into_iter()
        .map(|ts| (ts, commit_ts_of(state, key, ts)))
        .max_by_key(|&(ts, commit_ts)| (commit_ts, ts))
}

/// KvPessimisticLock as a served request: attempts, and while another transaction's lock
/// blocks it, waits for that lock (up to the request's wait timeout), detecting deadlocks.
pub(crate) async fn kv_pessimistic_lock_waiting(
    shared: &Arc<Shared>,
    store_id: u64,
    req: kvrpcpb::PessimisticLockRequest,
) -> Result<kvrpcpb::PessimisticLockResponse, Status> {
    let waits: &Arc<LockWaits> = &shared.lock_waits;
    let timeout = wait_timeout(req.wait_timeout);
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    // Whether the request was already woken once in wake-up mode ForceLock: from then on it
    // is TiKV's resumed command.
    let mut resumed = false;
    loop {
        // Subscribe before reading, so a release right after the attempt still wakes us.
        let mut changes = waits.subscribe();
        let blocked = match attempt(&mut shared.lock(), store_id, &req, resumed)? {
            Attempt::Done(resp) => return Ok(resp),
            Attempt::Blocked(blocked) => blocked,
        };
        let Some(deadline) = deadline else {
            return Ok(locked_response(&req, &blocked));
        };
        // A shared record is waited for as a whole: an edge to every holder.
        let holders = lock_info_holders(&blocked.info);
        let waiter = match waits.park(
            req.start_version,
            &holders,
            &blocked.key.raw,
            &blocked.key.enc,
            req.is_first_lock,
            blocked.shared_request,
        ) {
            Ok(w) => w,
            Err(deadlock) => {
                return Ok(error_response(
                    &req,
                    kvrpcpb::KeyError {
                        deadlock: Some(deadlock),
                        ..Default::default()
                    },
                ));
            }
        };
        let (lock_ts, commit_ts) = loop {
            if let Some(release) = released(&shared.lock(), &blocked) {
                break release;
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(locked_response(&req, &blocked));
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Ok(locked_response(&req, &blocked));
                }
            }
        };
        if !waiter.is_head() {
            tokio::time::sleep(WAKE_UP_DELAY).await;
        }
        if force_lock(&req) {
            // Try again while still queued, so the waiters behind us see we went first.
            resumed = true;
            let resp = match attempt(&mut shared.lock(), store_id, &req, true)? {
                Attempt::Done(resp) => resp,
                Attempt::Blocked(_) => {
                    drop(waiter);
                    continue;
                }
            };
            drop(waiter);
            return Ok(resp);
        }
        drop(waiter);
        let conflict = MvccError::WriteConflict {
            start_ts: req.start_version,
            conflict_start_ts: lock_ts,
            conflict_commit_ts: commit_ts,
            key: blocked.key.raw.clone(),
            primary: req.primary_lock.clone(),
            reason: kvrpcpb::write_conflict::Reason::PessimisticRetry,
        };
        return Ok(error_response(&req, conflict.to_key_error()));
    }
}

/// KVPessimisticRollback: removes this transaction's pessimistic locks with a for_update_ts up
/// to the request's, on the given keys or (no keys) anywhere in the region.
pub(crate) fn kv_pessimistic_rollback(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::PessimisticRollbackRequest,
) -> Result<kvrpcpb::PessimisticRollbackResponse, Status> {
    let result = (|| {
        let ctx = ctx_of(&req.context);
        let (region, enc) = check_context(
            state,
            store_id,
            &ctx,
            "pessimistic_rollback",
            req.keys.iter().map(|k| k.as_ref()),
        )?;
        check_key_size(req.keys.iter().map(|k| k.as_ref()))?;
        for e in &enc {
            region.check_key(e)?;
        }
        let matches = |l: &crate::mvcc::Lock| {
            l.is_pessimistic_lock()
                && l.ts == req.start_version
                && l.for_update_ts <= req.for_update_ts
        };
        // This transaction's matching lock on a key: the whole lock, or its sub-lock of a
        // shared record (the other holders stay).
        let matches_record = |r: &LockRecord| match r {
            LockRecord::Exclusive(l) => matches(l),
            LockRecord::Shared(locks) => locks.get(req.start_version).is_some_and(matches),
        };
        let targets: Vec<Bytes> = if req.keys.is_empty() {
            state
                .mvcc
                .locks
                .range(region.start.clone()..)
                .take_while(|(k, _)| region.end.is_empty() || k.as_ref() < region.end.as_ref())
                .filter(|(_, r)| matches_record(r))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            enc.into_iter()
                .filter(|k| state.mvcc.lock_record(k).is_some_and(matches_record))
                .collect()
        };
        let mut batch = WriteBatch::default();
        for key in targets {
            match state.mvcc.lock_record(&key) {
                Some(LockRecord::Shared(locks)) => {
                    let mut locks = locks.clone();
                    locks.remove(req.start_version);
                    if locks.is_empty() {
                        batch.unlock_key(key, req.start_version);
                    } else {
                        batch.put_shared_locks(key, locks);
                    }
                }
                _ => batch.unlock_key(key, req.start_version),
            }
        }
        batch.apply(&mut state.mvcc);
        Ok(())
    })();
    let (_, region_error, errors) = outcome_errors(result);
    Ok(kvrpcpb::PessimisticRollbackResponse {
        region_error,
        errors,
        ..Default::default()
    })
}
