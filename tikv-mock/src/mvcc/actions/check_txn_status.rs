//! Status checks on a transaction's primary (TiKV `src/storage/txn/actions/check_txn_status.rs`
//! and the per-key bodies of `commands/check_txn_status.rs`, `txn_heart_beat.rs`,
//! `check_secondary_locks.rs`): expire and roll back dead locks, push min_commit_ts, extend TTLs,
//! and report committed / rolled back / locked.
//!
//! Who calls it: `txn::write` for KvCheckTxnStatus, KvTxnHeartBeat and KvCheckSecondaryLocks.

use super::{
    Key, MissingLockAction, MvccError, TxnCommitRecord, TxnStatus, check_txn_status_missing_lock,
    collapse_prev_rollback, exclusive, get_txn_commit_record, is_expired, make_rollback,
    rollback_lock,
};
use crate::mvcc::{Lock, LockRecord, Txn, WriteType};

/// The inputs of KvCheckTxnStatus.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckTxnStatusArgs {
    pub(crate) lock_ts: u64,
    pub(crate) caller_start_ts: u64,
    pub(crate) current_ts: u64,
    pub(crate) rollback_if_not_exist: bool,
    pub(crate) force_sync_commit: bool,
    pub(crate) resolving_pessimistic_lock: bool,
    pub(crate) verify_is_primary: bool,
}

/// The status of the transaction recorded on this key if it is decided, whatever locks say.
fn determined_status(txn: &Txn<'_>, key: &Key, start_ts: u64) -> Option<TxnStatus> {
    match get_txn_commit_record(txn, key, start_ts) {
        TxnCommitRecord::SingleRecord { commit_ts, write } => {
            Some(if write.write_type == WriteType::Rollback {
                TxnStatus::RolledBack
            } else {
                TxnStatus::Committed { commit_ts }
            })
        }
        TxnCommitRecord::OverlappedRollback => Some(TxnStatus::RolledBack),
        TxnCommitRecord::None(_) => None,
    }
}

/// KvCheckTxnStatus on the primary `key`.
pub(crate) fn check_txn_status(
    txn: &mut Txn<'_>,
    key: &Key,
    args: &CheckTxnStatusArgs,
) -> Result<TxnStatus, MvccError> {
    let start_ts = args.lock_ts;
    let lock = match txn.lock(&key.enc) {
        Some(LockRecord::Exclusive(lock)) if lock.ts == start_ts => lock,
        // A shared-locked key is never a transaction's primary: whoever the holders are, the
        // request is refused with the whole record.
        Some(LockRecord::Shared(locks)) => {
            return Err(MvccError::PrimaryMismatch(Box::new(
                locks.to_lock_info(key.raw.clone()),
            )));
        }
        other => {
            let other = exclusive(other);
            return check_txn_status_missing_lock(
                txn,
                key,
                start_ts,
                other,
                MissingLockAction::rollback(args.rollback_if_not_exist),
                args.resolving_pessimistic_lock,
            );
        }
    };
    check_txn_status_lock_exists(txn, key, lock, args)
}

fn check_txn_status_lock_exists(
    txn: &mut Txn<'_>,
    key: &Key,
    mut lock: Lock,
    args: &CheckTxnStatusArgs,
) -> Result<TxnStatus, MvccError> {
    if args.verify_is_primary && !key.is_primary_of(&lock) {
        if lock.is_pessimistic_lock() && !args.resolving_pessimistic_lock {
            // A pessimistic lock wrongly taken as primary: it cannot be committed, drop it.
            let status = check_txn_status_missing_lock(
                txn,
                key,
                lock.ts,
                None,
                MissingLockAction::rollback(args.rollback_if_not_exist),
                args.resolving_pessimistic_lock,
            )?;
            txn.batch.unlock_key(key.enc.clone(), lock.ts);
            return Ok(status);
        }
        return Err(MvccError::PrimaryMismatch(Box::new(
            lock.to_lock_info(key.raw.clone()),
        )));
    }
    if lock.use_async_commit && !args.force_sync_commit {
        return Ok(TxnStatus::Uncommitted {
            lock,
            min_commit_ts_pushed: false,
        });
    }
    if lock.is_pessimistic_lock() {
        if lock.is_locked_with_conflict
            && let Some(status) = determined_status(txn, key, lock.ts)
        {
            txn.batch.unlock_key(key.enc.clone(), lock.ts);
            return Ok(status);
        }
        if is_expired(&lock, args.current_ts) {
            if args.resolving_pessimistic_lock {
                txn.batch.unlock_key(key.enc.clone(), lock.ts);
                return Ok(TxnStatus::PessimisticRollBack);
            }
            rollback_lock(txn, key, &lock, true)?;
            return Ok(TxnStatus::TtlExpire);
        }
    } else if is_expired(&lock, args.current_ts) {
        rollback_lock(txn, key, &lock, true)?;
        return Ok(TxnStatus::TtlExpire);
    }
    let caller = args.caller_start_ts;
    if lock.min_commit_ts != 0 && caller != u64::MAX && caller >= lock.min_commit_ts {
        lock.min_commit_ts = (caller + 1).max(args.current_ts);
        txn.batch.put_lock(key.enc.clone(), lock.clone());
    }
    let min_commit_ts_pushed = (caller != 0 && lock.min_commit_ts > caller) || caller == u64::MAX;
    Ok(TxnStatus::Uncommitted {
        lock,
        min_commit_ts_pushed,
    })
}

/// KvTxnHeartBeat: extends the primary lock's TTL (and, for pipelined locks, its
/// min_commit_ts); returns the resulting lock.
pub(crate) fn txn_heart_beat(
    txn: &mut Txn<'_>,
    key: &Key,
    start_ts: u64,
    advise_ttl: u64,
    min_commit_ts: u64,
) -> Result<Lock, MvccError> {
    let mut lock = match txn.lock(&key.enc) {
        Some(LockRecord::Exclusive(lock)) if lock.ts == start_ts => lock,
        // Heartbeats go to primaries, which are never shared-locked.
        Some(LockRecord::Shared(locks)) if locks.contains(start_ts) => {
            return Err(MvccError::PrimaryMismatch(Box::new(
                locks.to_lock_info(key.raw.clone()),
            )));
        }
        _ => {
            return Err(MvccError::TxnNotFound {
                start_ts,
                key: key.raw.clone(),
            });
        }
    };
    let mut changed = false;
    if lock.ttl < advise_ttl {
        lock.ttl = advise_ttl;
        changed = true;
    }
    if !lock.use_async_commit && lock.generation > 0 && lock.min_commit_ts < min_commit_ts {
        lock.min_commit_ts = min_commit_ts;
        changed = true;
    }
    if changed {
        txn.batch.put_lock(key.enc.clone(), lock.clone());
    }
    Ok(lock)
}

/// The status one key of KvCheckSecondaryLocks reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecondaryStatus {
    Locked(Lock),
    Committed(u64),
    RolledBack,
}

/// KvCheckSecondaryLocks for one key: a prewrite lock is reported; anything else decides the
/// transaction (and a missing lock is rolled back, protected, so the txn can never commit).
pub(crate) fn check_secondary_lock(
    txn: &mut Txn<'_>,
    key: &Key,
    start_ts: u64,
) -> Result<SecondaryStatus, MvccError> {
    // Async-commit transactions take no shared locks: a shared record is looked past to the
    // write records, as if the key held no lock of this transaction (nor a mismatching one).
    let lock = exclusive(txn.lock(&key.enc));
    match lock {
        Some(lock) if lock.ts == start_ts && !lock.is_pessimistic_lock() => {
            Ok(SecondaryStatus::Locked(lock))
        }
        Some(lock) if lock.ts == start_ts => {
            if lock.is_locked_with_conflict
                && let Some(status) = determined_status(txn, key, start_ts)
            {
                txn.batch.unlock_key(key.enc.clone(), start_ts);
                return Ok(match status {
                    TxnStatus::Committed { commit_ts } => SecondaryStatus::Committed(commit_ts),
                    _ => SecondaryStatus::RolledBack,
                });
            }
            let overlapped = match get_txn_commit_record(txn, key, start_ts) {
                TxnCommitRecord::None(ov) => ov,
                _ => None,
            };
            txn.batch.unlock_key(key.enc.clone(), start_ts);
            make_rollback(txn, key, start_ts, true, overlapped);
            collapse_prev_rollback(txn, key, start_ts);
            Ok(SecondaryStatus::RolledBack)
        }
        other => {
            match get_txn_commit_record(txn, key, start_ts) {
                TxnCommitRecord::SingleRecord { commit_ts, write } => {
                    return Ok(if write.write_type == WriteType::Rollback {
                        SecondaryStatus::RolledBack
                    } else {
                        SecondaryStatus::Committed(commit_ts)
                    });
                }
                TxnCommitRecord::OverlappedRollback => return Ok(SecondaryStatus::RolledBack),
                TxnCommitRecord::None(_) => {}
            }
            check_txn_status_missing_lock(
                txn,
                key,
                start_ts,
                other,
                MissingLockAction::ProtectedRollback,
                false,
            )?;
            collapse_prev_rollback(txn, key, start_ts);
            Ok(SecondaryStatus::RolledBack)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::prewrite::tests::{mutation, props, put_committed};
    use super::super::prewrite::{CommitKind, prewrite};
    use super::super::test_util::*;
    use super::*;
    use crate::mvcc::{LockType, MvccStore, WriteBatch};
    use crate::tso::compose;
    use tikv_proto::kvrpcpb::Op;

    fn args(lock_ts: u64, caller: u64, current: u64) -> CheckTxnStatusArgs {
        CheckTxnStatusArgs {
            lock_ts,
            caller_start_ts: caller,
            current_ts: current,
            rollback_if_not_exist: true,
            force_sync_commit: false,
            resolving_pessimistic_lock: false,
            verify_is_primary: true,
        }
    }

    #[test]
    fn missing_lock_rows() {
        let mut store = MvccStore::default();
        put_committed(&mut store, "a", b"v", 5, 10);
        assert_eq!(
            run(&mut store, 5, |txn| check_txn_status(
                txn,
                &key("a"),
                &args(5, 0, 0)
            )),
            Ok(TxnStatus::Committed { commit_ts: 10 })
        );
        let mut a = args(20, 0, 0);
        a.rollback_if_not_exist = false;
        assert!(matches!(
            run(&mut store, 20, |txn| check_txn_status(txn, &key("b"), &a)),
            Err(MvccError::TxnNotFound { start_ts: 20, .. })
        ));
        a.rollback_if_not_exist = true;
        a.resolving_pessimistic_lock = true;
        assert_eq!(
            run(&mut store, 20, |txn| check_txn_status(txn, &key("b"), &a)),
            Ok(TxnStatus::LockNotExistDoNothing)
        );
        a.resolving_pessimistic_lock = false;
        assert_eq!(
            run(&mut store, 20, |txn| check_txn_status(txn, &key("b"), &a)),
            Ok(TxnStatus::LockNotExist)
        );
        assert!(
            write_at(&store, &key("b"), 20)
                .unwrap()
                .is_protected_rollback()
        );
        assert_eq!(
            run(&mut store, 20, |txn| check_txn_status(txn, &key("b"), &a)),
            Ok(TxnStatus::RolledBack)
        );
    }

    #[test]
    fn ttl_expiry_and_min_commit_ts_push() {
        let mut store = MvccStore::default();
        let start = compose(1000, 0);
        let mut p = props("a", start);
        p.min_commit_ts = start + 1;
        run(&mut store, start, |txn| {
            prewrite(txn, &p, &mutation(Op::Put, "a", b"v"))
        })
        .unwrap();
        // Alive; a reader at caller ts pushes min_commit_ts past itself.
        let caller = compose(1500, 0);
        match run(&mut store, start, |txn| {
            check_txn_status(txn, &key("a"), &args(start, caller, compose(1500, 5)))
        }) {
            Ok(TxnStatus::Uncommitted {
                lock,
                min_commit_ts_pushed: true,
            }) => {
                assert_eq!(lock.min_commit_ts, compose(1500, 5))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            store.lock(&key("a").enc).unwrap().min_commit_ts,
            compose(1500, 5)
        );
        // caller 0: no push reported.
        assert!(matches!(
            run(&mut store, start, |txn| check_txn_status(
                txn,
                &key("a"),
                &args(start, 0, compose(1600, 0))
            )),
            Ok(TxnStatus::Uncommitted {
                min_commit_ts_pushed: false,
                ..
            })
        ));
        // Expired.
        assert_eq!(
            run(&mut store, start, |txn| check_txn_status(
                txn,
                &key("a"),
                &args(start, 0, compose(4001, 0))
            )),
            Ok(TxnStatus::TtlExpire)
        );
        assert!(store.locks.is_empty());
        assert!(
            write_at(&store, &key("a"), start)
                .unwrap()
                .is_protected_rollback()
        );
    }

    #[test]
    fn async_commit_lock_is_left_alone_and_primary_mismatch() {
        let mut store = MvccStore::default();
        let mut p = props("a", 5);
        p.kind = CommitKind::Async { max_commit_ts: 0 };
        run(&mut store, 5, |txn| {
            prewrite(txn, &p, &mutation(Op::Put, "a", b"v"))?;
            prewrite(txn, &p, &mutation(Op::Put, "b", b"v"))
        })
        .unwrap();
        assert!(matches!(
            run(&mut store, 5, |txn| check_txn_status(
                txn,
                &key("a"),
                &args(5, 0, u64::MAX >> 1)
            )),
            Ok(TxnStatus::Uncommitted { .. })
        ));
        assert!(matches!(
            run(&mut store, 5, |txn| check_txn_status(
                txn,
                &key("b"),
                &args(5, 0, 0)
            )),
            Err(MvccError::PrimaryMismatch(_))
        ));
        // Pessimistic non-primary lock is dropped and the txn rolled back.
        let mut pl = Lock::new(LockType::Pessimistic, key("x").raw, 30, 100);
        pl.for_update_ts = 30;
        let mut b = WriteBatch::default();
        b.put_lock(key("c").enc, pl);
        b.apply(&mut store);
        assert_eq!(
            run(&mut store, 30, |txn| check_txn_status(
                txn,
                &key("c"),
                &args(30, 0, 0)
            )),
            Ok(TxnStatus::LockNotExist)
        );
        assert!(store.lock(&key("c").enc).is_none());
    }

    #[test]
    fn heartbeat_extends_ttl_only_upwards() {
        let mut store = MvccStore::default();
        run(&mut store, 5, |txn| {
            prewrite(txn, &props("a", 5), &mutation(Op::Put, "a", b"v"))
        })
        .unwrap();
        assert_eq!(
            run(&mut store, 5, |txn| txn_heart_beat(
                txn,
                &key("a"),
                5,
                10,
                0
            ))
            .unwrap()
            .ttl,
            3000
        );
        assert_eq!(
            run(&mut store, 5, |txn| txn_heart_beat(
                txn,
                &key("a"),
                5,
                9000,
                0
            ))
            .unwrap()
            .ttl,
            9000
        );
        assert_eq!(store.lock(&key("a").enc).unwrap().ttl, 9000);
        assert!(matches!(
            run(&mut store, 6, |txn| txn_heart_beat(
                txn,
                &key("a"),
                6,
                10,
                0
            )),
            Err(MvccError::TxnNotFound { .. })
        ));
    }

    #[test]
    fn secondary_locks_statuses() {
        let mut store = MvccStore::default();
        run(&mut store, 5, |txn| {
            prewrite(txn, &props("a", 5), &mutation(Op::Put, "a", b"v"))
        })
        .unwrap();
        assert!(matches!(
            run(&mut store, 5, |txn| check_secondary_lock(txn, &key("a"), 5)),
            Ok(SecondaryStatus::Locked(_))
        ));
        put_committed(&mut store, "c", b"v", 7, 9);
        assert_eq!(
            run(&mut store, 7, |txn| check_secondary_lock(txn, &key("c"), 7)),
            Ok(SecondaryStatus::Committed(9))
        );
        assert_eq!(
            run(&mut store, 5, |txn| check_secondary_lock(txn, &key("b"), 5)),
            Ok(SecondaryStatus::RolledBack)
        );
        assert!(
            write_at(&store, &key("b"), 5)
                .unwrap()
                .is_protected_rollback()
        );
        let mut pl = Lock::new(LockType::Pessimistic, key("x").raw, 30, 100);
        pl.for_update_ts = 30;
        let mut b = WriteBatch::default();
        b.put_lock(key("d").enc, pl);
        b.apply(&mut store);
        assert_eq!(
            run(&mut store, 30, |txn| check_secondary_lock(
                txn,
                &key("d"),
                30
            )),
            Ok(SecondaryStatus::RolledBack)
        );
        assert!(store.lock(&key("d").enc).is_none());
        assert!(
            write_at(&store, &key("d"), 30)
                .unwrap()
                .is_protected_rollback()
        );
    }
}
