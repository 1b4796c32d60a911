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

use std::sync::Arc;

use bytes::Bytes;
use tikv_proto::kvrpcpb;
use tikv_proto::kvrpcpb::PessimisticLockKeyResultType as ResultType;
use tonic::Status;

use super::common::{
    TxnError, check_context, check_key_size, ctx_of, outcome_errors, update_max_ts,
};
use crate::Shared;
use crate::cluster::ClusterState;
use crate::lockwait::{LockWaits, WAKE_UP_DELAY, wait_timeout};
use crate::mvcc::actions::acquire_pessimistic_lock::{
    KeyResult, LockProps, acquire_pessimistic_lock,
};
use crate::mvcc::actions::{Key, MvccError, TxnCommitRecord, get_txn_commit_record};
use crate::mvcc::{Txn, WriteType};

/// Whether the request is in wake-up mode ForceLock.
fn force_lock(req: &kvrpcpb::PessimisticLockRequest) -> bool {
    req.wake_up_mode == kvrpcpb::PessimisticLockWakeUpMode::WakeUpModeForceLock as i32
}

/// A lock of another transaction that stopped the request.
#[derive(Debug, Clone)]
pub(crate) struct Blocked {
    info: kvrpcpb::LockInfo,
    key: Key,
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
pub(crate) fn attempt(
    state: &mut ClusterState,
    store_id: u64,
    req: &kvrpcpb::PessimisticLockRequest,
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
            update_max_ts(state, store_id, props.for_update_ts);
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
        let (outcome, batch) = {
            let mut txn = Txn::new(&state.mvcc, props.start_ts);
            let mut results = Vec::new();
            let mut outcome = None;
            for (m, key) in req.mutations.iter().zip(&keys) {
                match acquire_pessimistic_lock(&mut txn, key, &props, should_not_exist(m)) {
                    Ok(r) => results.push(r),
                    Err(MvccError::KeyIsLocked(info)) => {
                        outcome = Some(Ok(Attempt::Blocked(Blocked {
                            info: *info,
                            key: key.clone(),
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
            (outcome, std::mem::take(&mut txn.batch))
        };
        // Only a fully successful request writes anything.
        if matches!(outcome, Ok(Attempt::Done(_))) && !batch.is_empty() {
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
    Ok(match attempt(state, store_id, &req)? {
        Attempt::Done(resp) => resp,
        Attempt::Blocked(blocked) => locked_response(&req, &blocked),
    })
}

/// Whether transaction `lock_ts` still holds its lock on `key`; if not, the commit ts it left
/// there (0 if it rolled back or left no record).
fn released(state: &ClusterState, key: &Key, lock_ts: u64) -> Option<u64> {
    if state.mvcc.lock(&key.enc).is_some_and(|l| l.ts == lock_ts) {
        return None;
    }
    let txn = Txn::new(&state.mvcc, lock_ts);
    Some(match get_txn_commit_record(&txn, key, lock_ts) {
        TxnCommitRecord::SingleRecord { commit_ts, write }
            if write.write_type != WriteType::Rollback =>
        {
            commit_ts
        }
        _ => 0,
    })
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
    loop {
        // Subscribe before reading, so a release right after the attempt still wakes us.
        let mut changes = waits.subscribe();
        let blocked = match attempt(&mut shared.lock(), store_id, &req)? {
            Attempt::Done(resp) => return Ok(resp),
            Attempt::Blocked(blocked) => blocked,
        };
        let Some(deadline) = deadline else {
            return Ok(locked_response(&req, &blocked));
        };
        let lock_ts = blocked.info.lock_version;
        let waiter = match waits.park(
            req.start_version,
            lock_ts,
            &blocked.key.raw,
            &blocked.key.enc,
            req.is_first_lock,
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
        let commit_ts = loop {
            if let Some(commit_ts) = released(&shared.lock(), &blocked.key, lock_ts) {
                break commit_ts;
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
            let resp = match attempt(&mut shared.lock(), store_id, &req)? {
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
        let targets: Vec<Bytes> = if req.keys.is_empty() {
            state
                .mvcc
                .locks
                .range(region.start.clone()..)
                .take_while(|(k, _)| region.end.is_empty() || k.as_ref() < region.end.as_ref())
                .filter(|(_, l)| matches(l))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            enc.into_iter()
                .filter(|k| state.mvcc.lock(k).is_some_and(matches))
                .collect()
        };
        let mut batch = crate::mvcc::WriteBatch::default();
        for key in targets {
            batch.unlock_key(key, req.start_version);
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
