//! The transactional actions: per-key building blocks of the Kv* write commands, each a pure
//! function over a [`Txn`] (store snapshot + pending batch) that either adds its changes to the
//! batch or returns the error TiKV would return for that key.
//!
//! Who calls it: `txn::write` (the command handlers), which decide per command whether the batch
//! is applied. This module holds the helpers shared by several actions (TiKV
//! `src/storage/txn/actions/check_txn_status.rs` helpers, `mvcc/reader/reader.rs`
//! `get_txn_commit_record`, `actions/check_data_constraint.rs`, `mvcc/txn.rs`
//! `mark_rollback_on_mismatching_lock`) and the error type with its wire mapping
//! (`src/storage/errors.rs` `extract_key_error`).
//!
//! Reads of write records go to the store as it was when the command started (TiKV's snapshot),
//! never to the pending batch; lock reads go through [`Txn::lock`], which sees the batch.

pub(crate) mod acquire_pessimistic_lock;
pub(crate) mod check_txn_status;
pub(crate) mod cleanup;
pub(crate) mod commit;
pub(crate) mod gc;
pub(crate) mod prewrite;
#[cfg(test)]
mod shared_lock_tests;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use super::{Lock, LockRecord, LockType, SharedLocks, Txn, Write, WriteType};
use crate::tso::physical_of;

/// A key as both the client sent it (`raw`, what errors and lock primaries carry) and as stored
/// (`enc`, the memcomparable storage key every column family is keyed by).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    pub(crate) raw: Bytes,
    pub(crate) enc: Bytes,
}

impl Key {
    /// Whether this key is the primary a lock names.
    pub(crate) fn is_primary_of(&self, lock: &Lock) -> bool {
        self.raw == lock.primary
    }
}

/// The failures of transactional actions that TiKV reports per key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MvccError {
    KeyIsLocked(Box<kvrpcpb::LockInfo>),
    WriteConflict {
        start_ts: u64,
        conflict_start_ts: u64,
        conflict_commit_ts: u64,
        key: Bytes,
        primary: Bytes,
        reason: kvrpcpb::write_conflict::Reason,
    },
    AlreadyExist {
        key: Bytes,
    },
    TxnLockNotFound {
        start_ts: u64,
        commit_ts: u64,
        key: Bytes,
    },
    TxnNotFound {
        start_ts: u64,
        key: Bytes,
    },
    CommitTsExpired {
        start_ts: u64,
        commit_ts: u64,
        key: Bytes,
        min_commit_ts: u64,
    },
    CommitTsTooLarge {
        min_commit_ts: u64,
    },
    AssertionFailed {
        start_ts: u64,
        key: Bytes,
        assertion: kvrpcpb::Assertion,
        existing_start_ts: u64,
        existing_commit_ts: u64,
    },
    PrimaryMismatch(Box<kvrpcpb::LockInfo>),
    /// The pessimistic lock a pessimistic prewrite expected is gone or not ours (an abort).
    PessimisticLockNotFound {
        start_ts: u64,
        key: Bytes,
        reason: &'static str,
    },
    /// The transaction is already committed (cleanup/rollback of a committed key).
    Committed {
        start_ts: u64,
        commit_ts: u64,
        key: Bytes,
    },
    /// A pipelined flush of a generation not newer than the key's lock: the flush command
    /// skips the mutation (TiKV `GenerationOutOfOrder`).
    GenerationOutOfOrder {
        generation: u64,
        lock_generation: u64,
    },
    /// An exclusive pessimistic lock request met shared locks that still admit new holders:
    /// the command makes them shrink-only and answers KeyIsLocked (TiKV `NotInShrinkMode`,
    /// handled by `commands/acquire_pessimistic_lock.rs`, never sent as such).
    NotInShrinkMode(Box<SharedLocks>),
    /// Everything TiKV reports as `KeyError.abort`, with its text.
    Abort(String),
}

impl MvccError {
    /// The `KeyError` a response carries for this failure.
    pub(crate) fn to_key_error(&self) -> kvrpcpb::KeyError {
        let mut e = kvrpcpb::KeyError::default();
        match self {
            MvccError::KeyIsLocked(info) => e.locked = Some((**info).clone()),
            MvccError::WriteConflict {
                start_ts,
                conflict_start_ts,
                conflict_commit_ts,
                key,
                primary,
                reason,
            } => {
                e.retryable = format!("{self:?}");
                e.conflict = Some(kvrpcpb::WriteConflict {
                    start_ts: *start_ts,
                    conflict_ts: *conflict_start_ts,
                    conflict_commit_ts: *conflict_commit_ts,
                    key: key.clone(),
                    primary: primary.clone(),
                    reason: *reason as i32,
                });
            }
            MvccError::AlreadyExist { key } => {
                e.already_exist = Some(kvrpcpb::AlreadyExist { key: key.clone() })
            }
            MvccError::TxnLockNotFound { key, .. } => {
                e.retryable = format!("{self:?}");
                e.txn_lock_not_found = Some(kvrpcpb::TxnLockNotFound { key: key.clone() });
            }
            MvccError::TxnNotFound { start_ts, key } => {
                e.txn_not_found = Some(kvrpcpb::TxnNotFound {
                    start_ts: *start_ts,
                    primary_key: key.clone(),
                })
            }
            MvccError::CommitTsExpired {
                start_ts,
                commit_ts,
                key,
                min_commit_ts,
            } => {
                e.commit_ts_expired = Some(kvrpcpb::CommitTsExpired {
                    start_ts: *start_ts,
                    attempted_commit_ts: *commit_ts,
                    key: key.clone(),
                    min_commit_ts: *min_commit_ts,
                })
            }
            MvccError::CommitTsTooLarge { min_commit_ts } => {
                e.commit_ts_too_large = Some(kvrpcpb::CommitTsTooLarge {
                    commit_ts: *min_commit_ts,
                })
            }
            MvccError::AssertionFailed {
                start_ts,
                key,
                assertion,
                existing_start_ts,
                existing_commit_ts,
            } => {
                e.assertion_failed = Some(kvrpcpb::AssertionFailed {
                    start_ts: *start_ts,
                    key: key.clone(),
                    assertion: *assertion as i32,
                    existing_start_ts: *existing_start_ts,
                    existing_commit_ts: *existing_commit_ts,
                })
            }
            MvccError::PrimaryMismatch(info) => {
                e.primary_mismatch = Some(kvrpcpb::PrimaryMismatch {
                    lock_info: Some((**info).clone()),
                })
            }
            MvccError::Committed { .. }
            | MvccError::PessimisticLockNotFound { .. }
            | MvccError::GenerationOutOfOrder { .. }
            | MvccError::NotInShrinkMode(_) => e.abort = format!("{self:?}"),
            MvccError::Abort(text) => e.abort = text.clone(),
        }
        e
    }
}

/// A lock whose TTL, counted from the physical part of its start ts, ended before `current_ts`.
pub(crate) fn is_expired(lock: &Lock, current_ts: u64) -> bool {
    physical_of(lock.ts).saturating_add(lock.ttl) < physical_of(current_ts)
}

/// Another transaction's commit record that sits at this transaction's start ts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OverlappedWrite {
    pub(crate) write: Write,
    /// Commit ts of the nearest newer Put/Delete, 0 if none.
    pub(crate) gc_fence: u64,
}

/// What the write column family says about one transaction on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxnCommitRecord {
    /// No record of the transaction; maybe another txn's commit sits at its start ts.
    None(Option<OverlappedWrite>),
    SingleRecord {
        commit_ts: u64,
        write: Write,
    },
    /// Another txn's commit record at this start ts is marked as overlapping our rollback.
    OverlappedRollback,
}

/// The final status a status-checking action reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxnStatus {
    RolledBack,
    TtlExpire,
    PessimisticRollBack,
    LockNotExist,
    LockNotExistDoNothing,
    Committed {
        commit_ts: u64,
    },
    Uncommitted {
        lock: Lock,
        min_commit_ts_pushed: bool,
    },
}

/// Finds this transaction's record on `key`, walking the key's writes newest first down to
/// `start_ts`.
pub(crate) fn get_txn_commit_record(txn: &Txn<'_>, key: &Key, start_ts: u64) -> TxnCommitRecord {
    let mut gc_fence = 0;
    for (commit_ts, write) in txn.store.writes_at_or_below(&key.enc, u64::MAX) {
        if write.start_ts == start_ts {
            return TxnCommitRecord::SingleRecord {
                commit_ts,
                write: write.clone(),
            };
        }
        if commit_ts == start_ts {
            if write.has_overlapped_rollback {
                return TxnCommitRecord::OverlappedRollback;
            }
            return TxnCommitRecord::None(Some(OverlappedWrite {
                write: write.clone(),
                gc_fence,
            }));
        }
        if matches!(write.write_type, WriteType::Put | WriteType::Delete) {
            gc_fence = commit_ts;
        }
        if commit_ts < start_ts {
            break;
        }
    }
    TxnCommitRecord::None(None)
}

/// Records a rollback of `start_ts` on `key`. When another transaction committed at exactly
/// `start_ts`, a protected rollback is folded into that commit record instead (an unprotected
/// one is simply dropped: nobody needs it to survive).
pub(crate) fn make_rollback(
    txn: &mut Txn<'_>,
    key: &Key,
    start_ts: u64,
    protected: bool,
    overlapped: Option<OverlappedWrite>,
) {
    match overlapped {
        None => txn.batch.put_write(
            key.enc.clone(),
            start_ts,
            Write::new_rollback(start_ts, protected),
        ),
        Some(ov) if protected => {
            let mut write = ov.write;
            write.has_overlapped_rollback = true;
            write.gc_fence = Some(ov.gc_fence);
            txn.batch.put_write(key.enc.clone(), start_ts, write);
        }
        Some(_) => {}
    }
}

/// Deletes the newest record at or below `start_ts` if it is an unprotected rollback, so
/// rollback records do not pile up on hot keys.
pub(crate) fn collapse_prev_rollback(txn: &mut Txn<'_>, key: &Key, start_ts: u64) {
    if let Some((commit_ts, write)) = txn.store.seek_write(&key.enc, start_ts)
        && write.write_type == WriteType::Rollback
        && !write.is_protected_rollback()
    {
        txn.batch.delete_write(key.enc.clone(), commit_ts);
    }
}

/// Rolls back `lock` (of transaction `lock.ts`) on `key`: drops its long value, writes the
/// rollback record (protected on the primary and for pipelined locks) and removes the lock.
pub(crate) fn rollback_lock(
    txn: &mut Txn<'_>,
    key: &Key,
    lock: &Lock,
    collapse: bool,
) -> Result<(), MvccError> {
    let overlapped = match get_txn_commit_record(txn, key, lock.ts) {
        TxnCommitRecord::None(ov) => ov,
        TxnCommitRecord::SingleRecord { write, commit_ts }
            if write.write_type != WriteType::Rollback =>
        {
            // TiKV panics here: a lock and a commit record of one txn cannot coexist.
            return Err(MvccError::Abort(format!(
                "txn record found but not expected: start_ts {} commit_ts {commit_ts}",
                lock.ts
            )));
        }
        _ => {
            txn.batch.unlock_key(key.enc.clone(), lock.ts);
            return Ok(());
        }
    };
    if lock.short_value.is_none() && lock.lock_type == LockType::Put {
        txn.batch.delete_value(key.enc.clone(), lock.ts);
    }
    let protected = key.is_primary_of(lock) || lock.generation > 0;
    make_rollback(txn, key, lock.ts, protected, overlapped);
    if collapse {
        collapse_prev_rollback(txn, key, lock.ts);
    }
    txn.batch.unlock_key(key.enc.clone(), lock.ts);
    Ok(())
}

/// Writes a key's shared locks back after `lock_ts`'s sub-lock left them, or, when it was the
/// last holder, removes the record: only then are lock waiters woken (TiKV releases a lock only
/// when the last sub-lock goes).
pub(crate) fn put_or_release_shared(
    txn: &mut Txn<'_>,
    key: &Key,
    shared: SharedLocks,
    lock_ts: u64,
) {
    if shared.is_empty() {
        txn.batch.unlock_key(key.enc.clone(), lock_ts);
    } else {
        txn.batch.put_shared_locks(key.enc.clone(), shared);
    }
}

/// Rolls back transaction `lock_ts`'s sub-lock of a key's shared locks (TiKV
/// `rollback_shared_lock`): the rollback record is never protected (a shared-locked key is
/// never a primary), and the other holders stay.
pub(crate) fn rollback_shared_lock(
    txn: &mut Txn<'_>,
    key: &Key,
    mut shared: SharedLocks,
    lock_ts: u64,
    collapse: bool,
) -> Result<(), MvccError> {
    if shared.remove(lock_ts).is_none() {
        return Ok(());
    }
    match get_txn_commit_record(txn, key, lock_ts) {
        TxnCommitRecord::None(overlapped) => {
            make_rollback(txn, key, lock_ts, false, overlapped);
            if collapse {
                collapse_prev_rollback(txn, key, lock_ts);
            }
        }
        TxnCommitRecord::SingleRecord { write, commit_ts }
            if write.write_type != WriteType::Rollback =>
        {
            return Err(MvccError::Abort(format!(
                "txn record found but not expected: start_ts {lock_ts} commit_ts {commit_ts}"
            )));
        }
        _ => {}
    }
    put_or_release_shared(txn, key, shared, lock_ts);
    Ok(())
}

/// The exclusive lock of a lock record, for the paths that treat shared locks as "no lock of
/// this transaction here".
pub(crate) fn exclusive(record: Option<LockRecord>) -> Option<Lock> {
    record.and_then(LockRecord::into_exclusive)
}

/// What to do when the lock a status check looks for is gone and nothing was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MissingLockAction {
    /// Unprotected rollback, collapsing the previous one.
    Rollback,
    ProtectedRollback,
    ReturnError,
}

impl MissingLockAction {
    pub(crate) fn rollback(rollback_if_not_exist: bool) -> Self {
        if rollback_if_not_exist {
            MissingLockAction::ProtectedRollback
        } else {
            MissingLockAction::ReturnError
        }
    }
}

/// Decides the status of transaction `start_ts` on `key` whose lock is not there: committed,
/// rolled back, or (per `action`) rolled back now / reported missing.
pub(crate) fn check_txn_status_missing_lock(
    txn: &mut Txn<'_>,
    key: &Key,
    start_ts: u64,
    mismatch_lock: Option<Lock>,
    action: MissingLockAction,
    resolving_pessimistic_lock: bool,
) -> Result<TxnStatus, MvccError> {
    match get_txn_commit_record(txn, key, start_ts) {
        TxnCommitRecord::SingleRecord { commit_ts, write } => {
            if write.write_type == WriteType::Rollback {
                Ok(TxnStatus::RolledBack)
            } else {
                Ok(TxnStatus::Committed { commit_ts })
            }
        }
        TxnCommitRecord::OverlappedRollback => Ok(TxnStatus::RolledBack),
        TxnCommitRecord::None(overlapped) => {
            if action == MissingLockAction::ReturnError {
                return Err(MvccError::TxnNotFound {
                    start_ts,
                    key: key.raw.clone(),
                });
            }
            if resolving_pessimistic_lock {
                return Ok(TxnStatus::LockNotExistDoNothing);
            }
            let protected = action == MissingLockAction::ProtectedRollback;
            if !protected {
                collapse_prev_rollback(txn, key, start_ts);
            }
            if let (Some(other), None) = (mismatch_lock, overlapped.as_ref()) {
                mark_rollback_on_mismatching_lock(txn, key, other, start_ts, protected);
            }
            make_rollback(txn, key, start_ts, protected, overlapped);
            Ok(TxnStatus::LockNotExist)
        }
    }
}

/// Remembers our rollback in another async-commit transaction's lock on the key, so that the
/// rollback survives if that transaction commits at exactly our start ts.
fn mark_rollback_on_mismatching_lock(
    txn: &mut Txn<'_>,
    key: &Key,
    mut other: Lock,
    start_ts: u64,
    protected: bool,
) {
    if !protected || start_ts < other.min_commit_ts || !other.use_async_commit {
        return;
    }
    other.rollback_ts.push(start_ts);
    txn.batch.put_lock(key.enc.clone(), other);
}

/// Fails with AlreadyExist when the key must not exist and its latest version (`latest` at
/// `commit_ts`) says it does.
pub(crate) fn check_data_constraint(
    txn: &Txn<'_>,
    should_not_exist: bool,
    latest: &Write,
    commit_ts: u64,
    key: &Key,
) -> Result<(), MvccError> {
    if !should_not_exist
        || latest.write_type == WriteType::Delete
        || latest.gc_fence.is_some_and(|f| f != 0)
    {
        return Ok(());
    }
    let exists = match latest.write_type {
        WriteType::Put => true,
        // Lock and Rollback records say nothing about the value: look at the older Put/Delete,
        // where a GC fence at or below our start ts hides a version (TiKV `get_write` with the
        // reader's start ts as the fence limit).
        _ => {
            commit_ts > 0
                && txn
                    .store
                    .writes_at_or_below(&key.enc, commit_ts - 1)
                    .take_while(|(_, w)| w.gc_fence_allows(txn.start_ts))
                    .find(|(_, w)| matches!(w.write_type, WriteType::Put | WriteType::Delete))
                    .is_some_and(|(_, w)| w.write_type == WriteType::Put)
        }
    };
    if exists {
        return Err(MvccError::AlreadyExist {
            key: key.raw.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Shorthands for the action tests: a store driven command by command.

    use super::*;
    use crate::mvcc::MvccStore;

    pub(crate) fn key(s: &str) -> Key {
        let raw = Bytes::copy_from_slice(s.as_bytes());
        Key {
            enc: Bytes::from(crate::codec::encode_bytes(&raw)),
            raw,
        }
    }

    /// Runs `f` over a Txn of `store` and applies its batch only if it succeeds.
    pub(crate) fn run<T>(
        store: &mut MvccStore,
        start_ts: u64,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, MvccError>,
    ) -> Result<T, MvccError> {
        let mut txn = Txn::new(store, start_ts);
        let out = f(&mut txn)?;
        let batch = std::mem::take(&mut txn.batch);
        batch.apply(store);
        Ok(out)
    }

    pub(crate) fn write_at(store: &MvccStore, k: &Key, commit_ts: u64) -> Option<Write> {
        store
            .writes
            .get(&(k.enc.clone(), std::cmp::Reverse(commit_ts)))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use crate::mvcc::{MvccStore, WriteBatch};

    fn put_write(store: &mut MvccStore, k: &Key, commit_ts: u64, w: Write) {
        let mut b = WriteBatch::default();
        b.put_write(k.enc.clone(), commit_ts, w);
        b.apply(store);
    }

    #[test]
    fn commit_record_finds_own_record_overlap_and_gc_fence() {
        let mut store = MvccStore::default();
        let k = key("k");
        put_write(&mut store, &k, 10, Write::new(WriteType::Put, 5, None));
        put_write(&mut store, &k, 20, Write::new(WriteType::Put, 15, None));
        put_write(&mut store, &k, 30, Write::new(WriteType::Lock, 25, None));
        let txn = Txn::new(&store, 0);
        assert!(matches!(
            get_txn_commit_record(&txn, &k, 15),
            TxnCommitRecord::SingleRecord { commit_ts: 20, .. }
        ));
        // Someone else committed at 10; the nearest newer Put is at 20.
        match get_txn_commit_record(&txn, &k, 10) {
            TxnCommitRecord::None(Some(ov)) => {
                assert_eq!(ov.write.start_ts, 5);
                assert_eq!(ov.gc_fence, 20);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            get_txn_commit_record(&txn, &k, 12),
            TxnCommitRecord::None(None)
        );
    }

    #[test]
    fn protected_rollback_on_overlap_marks_the_commit_record() {
        let mut store = MvccStore::default();
        let k = key("k");
        put_write(
            &mut store,
            &k,
            10,
            Write::new(WriteType::Put, 5, Some(key("v").raw)),
        );
        // Unprotected: nothing written.
        run(&mut store, 10, |txn| {
            check_txn_status_missing_lock(txn, &k, 10, None, MissingLockAction::Rollback, false)
        })
        .unwrap();
        assert!(!write_at(&store, &k, 10).unwrap().has_overlapped_rollback);
        // Protected: the commit record is rewritten and the status becomes RolledBack.
        let st = run(&mut store, 10, |txn| {
            check_txn_status_missing_lock(
                txn,
                &k,
                10,
                None,
                MissingLockAction::ProtectedRollback,
                false,
            )
        })
        .unwrap();
        assert_eq!(st, TxnStatus::LockNotExist);
        let w = write_at(&store, &k, 10).unwrap();
        assert!(w.has_overlapped_rollback);
        assert_eq!(w.gc_fence, Some(0));
        assert_eq!(w.start_ts, 5);
        let st = run(&mut store, 10, |txn| {
            check_txn_status_missing_lock(txn, &k, 10, None, MissingLockAction::ReturnError, false)
        })
        .unwrap();
        assert_eq!(st, TxnStatus::RolledBack);
    }

    #[test]
    fn missing_lock_paths() {
        let mut store = MvccStore::default();
        let k = key("k");
        let err = run(&mut store, 7, |txn| {
            check_txn_status_missing_lock(txn, &k, 7, None, MissingLockAction::ReturnError, false)
        })
        .unwrap_err();
        assert_eq!(
            err,
            MvccError::TxnNotFound {
                start_ts: 7,
                key: k.raw.clone()
            }
        );
        let st = run(&mut store, 7, |txn| {
            check_txn_status_missing_lock(txn, &k, 7, None, MissingLockAction::Rollback, true)
        })
        .unwrap();
        assert_eq!(st, TxnStatus::LockNotExistDoNothing);
        assert!(store.writes.is_empty());
        // Unprotected rollback at 7, then another at 9 collapses it.
        run(&mut store, 7, |txn| {
            check_txn_status_missing_lock(txn, &k, 7, None, MissingLockAction::Rollback, false)
        })
        .unwrap();
        assert!(write_at(&store, &k, 7).is_some());
        run(&mut store, 9, |txn| {
            check_txn_status_missing_lock(txn, &k, 9, None, MissingLockAction::Rollback, false)
        })
        .unwrap();
        assert!(write_at(&store, &k, 7).is_none());
        assert!(!write_at(&store, &k, 9).unwrap().is_protected_rollback());
        // A protected rollback is never collapsed.
        run(&mut store, 11, |txn| {
            check_txn_status_missing_lock(
                txn,
                &k,
                11,
                None,
                MissingLockAction::ProtectedRollback,
                false,
            )
        })
        .unwrap();
        run(&mut store, 13, |txn| {
            check_txn_status_missing_lock(txn, &k, 13, None, MissingLockAction::Rollback, false)
        })
        .unwrap();
        assert!(write_at(&store, &k, 11).unwrap().is_protected_rollback());
        assert_eq!(
            run(&mut store, 13, |txn| check_txn_status_missing_lock(
                txn,
                &k,
                13,
                None,
                MissingLockAction::ReturnError,
                false
            )),
            Ok(TxnStatus::RolledBack)
        );
    }

    #[test]
    fn rollback_marks_foreign_async_commit_lock() {
        let mut store = MvccStore::default();
        let k = key("k");
        let mut other = Lock::new(LockType::Put, k.raw.clone(), 5, 100);
        other.use_async_commit = true;
        other.min_commit_ts = 8;
        run(&mut store, 9, |txn| {
            check_txn_status_missing_lock(
                txn,
                &k,
                9,
                Some(other.clone()),
                MissingLockAction::ProtectedRollback,
                false,
            )
        })
        .unwrap();
        // The foreign lock was absent from the store here; the batch wrote it with our ts.
        assert_eq!(store.lock(&k.enc).unwrap().rollback_ts, vec![9]);
        assert!(write_at(&store, &k, 9).unwrap().is_protected_rollback());
    }

    #[test]
    fn rollback_lock_deletes_long_value_and_protects_primary() {
        let mut store = MvccStore::default();
        let p = key("p");
        let s = key("s");
        let lock_p = Lock::new(LockType::Put, p.raw.clone(), 10, 100);
        let lock_s = Lock::new(LockType::Put, p.raw.clone(), 10, 100);
        let mut b = WriteBatch::default();
        b.put_lock(p.enc.clone(), lock_p.clone());
        b.put_lock(s.enc.clone(), lock_s.clone());
        b.put_value(s.enc.clone(), 10, Bytes::from(vec![0; 300]));
        b.apply(&mut store);
        run(&mut store, 10, |txn| {
            rollback_lock(txn, &p, &lock_p, true)?;
            rollback_lock(txn, &s, &lock_s, true)
        })
        .unwrap();
        assert!(store.locks.is_empty() && store.values.is_empty());
        assert!(write_at(&store, &p, 10).unwrap().is_protected_rollback());
        let ws = write_at(&store, &s, 10).unwrap();
        assert_eq!(ws.write_type, WriteType::Rollback);
        assert!(!ws.is_protected_rollback());
    }

    #[test]
    fn data_constraint_looks_past_lock_records() {
        let mut store = MvccStore::default();
        let k = key("k");
        put_write(
            &mut store,
            &k,
            10,
            Write::new(WriteType::Put, 5, Some(key("v").raw)),
        );
        put_write(&mut store, &k, 20, Write::new(WriteType::Lock, 15, None));
        let txn = Txn::new(&store, 30);
        let lock_rec = Write::new(WriteType::Lock, 15, None);
        assert!(matches!(
            check_data_constraint(&txn, true, &lock_rec, 20, &k),
            Err(MvccError::AlreadyExist { .. })
        ));
        assert!(check_data_constraint(&txn, false, &lock_rec, 20, &k).is_ok());
        let del = Write::new(WriteType::Delete, 25, None);
        assert!(check_data_constraint(&txn, true, &del, 30, &k).is_ok());
    }

    #[test]
    fn key_errors_map_like_tikv() {
        let e = MvccError::TxnLockNotFound {
            start_ts: 1,
            commit_ts: 2,
            key: key("a").raw,
        };
        let ke = e.to_key_error();
        assert!(ke.txn_lock_not_found.is_some() && !ke.retryable.is_empty());
        let e = MvccError::Committed {
            start_ts: 1,
            commit_ts: 2,
            key: key("a").raw,
        };
        assert!(!e.to_key_error().abort.is_empty());
    }
}
