//! Commit of one key (TiKV `src/storage/txn/actions/commit.rs`): turns the transaction's lock
//! into a commit record, or accepts an already committed key. A shared holder commits only its
//! own sub-lock; the record stays for the other holders.
//!
//! Who calls it: `txn::write::kv_commit` and `kv_resolve_lock`.

use super::{Key, MvccError, TxnCommitRecord, get_txn_commit_record, put_or_release_shared};
use crate::mvcc::{LockRecord, LockType, SharedLocks, Txn, Write, WriteType};

/// Commits `key` of transaction `start_ts` at `commit_ts`.
pub(crate) fn commit(
    txn: &mut Txn<'_>,
    key: &Key,
    start_ts: u64,
    commit_ts: u64,
) -> Result<(), MvccError> {
    // A shared holder's commit takes only its own sub-lock out of the record.
    let (lock, shared) = match txn.lock(&key.enc) {
        Some(LockRecord::Exclusive(lock)) if lock.ts == start_ts => (Some(lock), None),
        Some(LockRecord::Shared(mut locks)) => match locks.remove(start_ts) {
            Some(lock) => (Some(lock), Some(locks)),
            None => (None, None),
        },
        _ => (None, None),
    };
    let Some(lock) = lock else {
        return match get_txn_commit_record(txn, key, start_ts) {
            TxnCommitRecord::SingleRecord { write, .. }
                if write.write_type != WriteType::Rollback =>
            {
                Ok(())
            }
            _ => Err(MvccError::TxnLockNotFound {
                start_ts,
                commit_ts,
                key: key.raw.clone(),
            }),
        };
    };
    if commit_ts < lock.min_commit_ts {
        return Err(MvccError::CommitTsExpired {
            start_ts,
            commit_ts,
            key: key.raw.clone(),
            min_commit_ts: lock.min_commit_ts,
        });
    }
    let write_type = match lock.lock_type {
        LockType::Put => WriteType::Put,
        LockType::Delete => WriteType::Delete,
        LockType::Lock => WriteType::Lock,
        // A pessimistic lock that was never prewritten holds no data: just release it (a
        // shared one keeps the other holders).
        LockType::Pessimistic => {
            release(txn, key, shared, start_ts);
            return Ok(());
        }
    };
    let mut write = Write::new(write_type, start_ts, lock.short_value.clone());
    write.txn_source = lock.txn_source;
    write.has_overlapped_rollback = lock.rollback_ts.contains(&commit_ts);
    txn.batch.put_write(key.enc.clone(), commit_ts, write);
    release(txn, key, shared, start_ts);
    Ok(())
}

/// Removes the committed lock: the whole record, or only this holder's part of a shared one.
fn release(txn: &mut Txn<'_>, key: &Key, shared: Option<SharedLocks>, start_ts: u64) {
    match shared {
        Some(locks) => put_or_release_shared(txn, key, locks, start_ts),
        None => txn.batch.unlock_key(key.enc.clone(), start_ts),
    }
}

#[cfg(test)]
mod tests {
    use super::super::prewrite::tests::{mutation, props, put_committed};
    use super::super::prewrite::{CommitKind, prewrite};
    use super::super::test_util::*;
    use super::*;
    use crate::mvcc::{Lock, MvccStore, WriteBatch};
    use tikv_proto::kvrpcpb::Op;

    #[test]
    fn commit_writes_record_and_is_idempotent() {
        let mut store = MvccStore::default();
        put_committed(&mut store, "a", b"v", 5, 10);
        assert!(store.locks.is_empty());
        let w = write_at(&store, &key("a"), 10).unwrap();
        assert_eq!((w.write_type, w.start_ts), (WriteType::Put, 5));
        assert_eq!(store.get(&key("a").enc, 10).unwrap().0.as_ref(), b"v");
        // Committing again succeeds without writing.
        run(&mut store, 5, |txn| {
            commit(txn, &key("a"), 5, 10)?;
            assert!(txn.batch.is_empty());
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn commit_without_lock_or_after_rollback_fails() {
        let mut store = MvccStore::default();
        assert!(matches!(
            run(&mut store, 5, |txn| commit(txn, &key("a"), 5, 10)),
            Err(MvccError::TxnLockNotFound { .. })
        ));
        run(&mut store, 5, |txn| {
            prewrite(txn, &props("a", 5), &mutation(Op::Put, "a", b"v"))
        })
        .unwrap();
        run(&mut store, 5, |txn| {
            let lock = txn.exclusive_lock(&key("a").enc).unwrap();
            super::super::rollback_lock(txn, &key("a"), &lock, false)
        })
        .unwrap();
        assert!(matches!(
            run(&mut store, 5, |txn| commit(txn, &key("a"), 5, 10)),
            Err(MvccError::TxnLockNotFound { .. })
        ));
    }

    #[test]
    fn commit_ts_expired_below_min_commit_ts() {
        let mut store = MvccStore::default();
        let mut p = props("a", 5);
        p.kind = CommitKind::Async { max_commit_ts: 0 };
        p.max_ts = 20;
        run(&mut store, 5, |txn| {
            prewrite(txn, &p, &mutation(Op::Put, "a", b"v"))
        })
        .unwrap();
        match run(&mut store, 5, |txn| commit(txn, &key("a"), 5, 15)) {
            Err(MvccError::CommitTsExpired {
                min_commit_ts: 21,
                commit_ts: 15,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        run(&mut store, 5, |txn| commit(txn, &key("a"), 5, 21)).unwrap();
    }

    #[test]
    fn pessimistic_lock_is_released_and_rollback_ts_marks_overlap() {
        let mut store = MvccStore::default();
        let mut pl = Lock::new(LockType::Pessimistic, key("a").raw, 5, 100);
        pl.for_update_ts = 5;
        let mut l = Lock::new(LockType::Put, key("b").raw, 5, 100);
        l.rollback_ts = vec![10];
        l.short_value = Some(key("v").raw);
        let mut b = WriteBatch::default();
        b.put_lock(key("a").enc, pl);
        b.put_lock(key("b").enc, l);
        b.apply(&mut store);
        run(&mut store, 5, |txn| {
            commit(txn, &key("a"), 5, 10)?;
            commit(txn, &key("b"), 5, 10)
        })
        .unwrap();
        assert!(store.locks.is_empty());
        assert!(write_at(&store, &key("a"), 10).is_none());
        assert!(
            write_at(&store, &key("b"), 10)
                .unwrap()
                .has_overlapped_rollback
        );
    }
}
