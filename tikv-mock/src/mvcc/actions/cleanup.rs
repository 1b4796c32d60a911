//! Cleanup of one key (TiKV `src/storage/txn/actions/cleanup.rs`): roll back the transaction's
//! lock if it expired (or unconditionally when `current_ts` is 0), or record a rollback when the
//! lock is gone and the transaction did not commit. A shared holder rolls back only its own
//! sub-lock.
//!
//! Who calls it: `txn::write` for KvBatchRollback, KvCleanup and the rollback half of
//! KvResolveLock.

use super::{
    Key, MissingLockAction, MvccError, TxnStatus, check_txn_status_missing_lock, exclusive,
    is_expired, rollback_lock, rollback_shared_lock,
};
use crate::mvcc::{LockRecord, Txn};

/// Rolls back `key` of transaction `start_ts`. A committed key is `MvccError::Committed`.
pub(crate) fn cleanup(
    txn: &mut Txn<'_>,
    key: &Key,
    start_ts: u64,
    current_ts: u64,
    protect_rollback: bool,
) -> Result<(), MvccError> {
    match txn.lock(&key.enc) {
        Some(LockRecord::Exclusive(lock)) if lock.ts == start_ts => {
            if current_ts != 0 && !is_expired(&lock, current_ts) {
                return Err(MvccError::KeyIsLocked(Box::new(
                    lock.to_lock_info(key.raw.clone()),
                )));
            }
            rollback_lock(txn, key, &lock, !protect_rollback)
        }
        Some(LockRecord::Shared(locks)) if locks.contains(start_ts) => {
            // A live holder is reported with the whole record, as TiKV does.
            if current_ts != 0
                && locks
                    .get(start_ts)
                    .is_some_and(|l| !is_expired(l, current_ts))
            {
                return Err(MvccError::KeyIsLocked(Box::new(
                    locks.to_lock_info(key.raw.clone()),
                )));
            }
            rollback_shared_lock(txn, key, locks, start_ts, !protect_rollback)
        }
        other => {
            let other = exclusive(other);
            let action = if protect_rollback {
                MissingLockAction::ProtectedRollback
            } else {
                MissingLockAction::Rollback
            };
            match check_txn_status_missing_lock(txn, key, start_ts, other, action, false)? {
                TxnStatus::Committed { commit_ts } => Err(MvccError::Committed {
                    start_ts,
                    commit_ts,
                    key: key.raw.clone(),
                }),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::prewrite::prewrite;
    use super::super::prewrite::tests::{mutation, props, put_committed};
    use super::super::test_util::*;
    use super::*;
    use crate::mvcc::{MvccStore, WriteType};
    use crate::tso::compose;
    use tikv_proto::kvrpcpb::Op;

    #[test]
    fn cleanup_respects_ttl_and_protects_primary() {
        let mut store = MvccStore::default();
        let start = compose(1000, 0);
        run(&mut store, start, |txn| {
            prewrite(txn, &props("p", start), &mutation(Op::Put, "p", b"v"))?;
            prewrite(txn, &props("p", start), &mutation(Op::Put, "s", b"v"))
        })
        .unwrap();
        // TTL is 3000 ms: still alive at 3999 ms.
        assert!(matches!(
            run(&mut store, start, |txn| cleanup(
                txn,
                &key("p"),
                start,
                compose(4000, 0),
                true
            )),
            Err(MvccError::KeyIsLocked(_))
        ));
        run(&mut store, start, |txn| {
            cleanup(txn, &key("p"), start, compose(4001, 0), true)
        })
        .unwrap();
        assert!(
            write_at(&store, &key("p"), start)
                .unwrap()
                .is_protected_rollback()
        );
        // current_ts 0 rolls back unconditionally; a secondary gets an unprotected record.
        run(&mut store, start, |txn| {
            cleanup(txn, &key("s"), start, 0, false)
        })
        .unwrap();
        let w = write_at(&store, &key("s"), start).unwrap();
        assert!(w.write_type == WriteType::Rollback && !w.is_protected_rollback());
        assert!(store.locks.is_empty());
        // Idempotent.
        run(&mut store, start, |txn| {
            cleanup(txn, &key("s"), start, 0, false)
        })
        .unwrap();
    }

    #[test]
    fn cleanup_of_committed_key_fails_and_missing_lock_is_rolled_back() {
        let mut store = MvccStore::default();
        put_committed(&mut store, "a", b"v", 5, 10);
        assert_eq!(
            run(&mut store, 5, |txn| cleanup(txn, &key("a"), 5, 0, false)),
            Err(MvccError::Committed {
                start_ts: 5,
                commit_ts: 10,
                key: key("a").raw
            })
        );
        run(&mut store, 20, |txn| cleanup(txn, &key("b"), 20, 0, true)).unwrap();
        assert!(
            write_at(&store, &key("b"), 20)
                .unwrap()
                .is_protected_rollback()
        );
    }
}
