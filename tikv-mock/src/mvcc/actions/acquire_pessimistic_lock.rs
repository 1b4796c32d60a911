//! Acquiring one key's pessimistic lock: the per-key step of KvPessimisticLock.
//!
//! Who calls it: `txn::pessimistic`, once per mutation of the request, over one `Txn`. Follows
//! TiKV `src/storage/txn/actions/acquire_pessimistic_lock.rs`, shared pessimistic locks
//! (`Op::SharedPessimisticLock`) included; old values for CDC are not modelled. The concurrency
//! manager's max_ts update is the caller's, since it lives in the cluster state.
//!
//! Shared and exclusive requests meet each other's records as TiKV's do: a shared request joins
//! a shared record unless it is shrink-only, and is KeyIsLocked by any exclusive lock (its own
//! included: no downgrade); an exclusive request that meets a shared record (its own sub-lock
//! included: no upgrade) gets [`MvccError::NotInShrinkMode`] while the record still admits new
//! holders, then KeyIsLocked with the whole record.

use bytes::Bytes;
use tikv_proto::kvrpcpb::write_conflict::Reason;

use super::{Key, MvccError, check_data_constraint};
use crate::mvcc::{Lock, LockRecord, LockType, SharedLocks, Txn, Write, WriteType};

/// What the request asks of every key.
#[derive(Debug, Clone)]
pub(crate) struct LockProps {
    pub(crate) primary: Bytes,
    pub(crate) start_ts: u64,
    pub(crate) lock_ttl: u64,
    pub(crate) for_update_ts: u64,
    pub(crate) need_value: bool,
    pub(crate) need_check_existence: bool,
    pub(crate) min_commit_ts: u64,
    pub(crate) lock_only_if_exists: bool,
    /// Wake-up mode ForceLock: lock even over a newer write, reporting the conflict.
    pub(crate) allow_lock_with_conflict: bool,
}

/// The outcome of one key (TiKV `PessimisticLockKeyResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyResult {
    Empty,
    Value(Option<Bytes>),
    Existence(bool),
    LockedWithConflict {
        value: Option<Bytes>,
        conflict_ts: u64,
    },
}

impl KeyResult {
    fn new(props: &LockProps, conflict_ts: Option<u64>, value: Option<Bytes>) -> Self {
        match conflict_ts {
            Some(conflict_ts) => KeyResult::LockedWithConflict { value, conflict_ts },
            None if props.need_value => KeyResult::Value(value),
            None if props.need_check_existence => KeyResult::Existence(value.is_some()),
            None => KeyResult::Empty,
        }
    }
}

fn abort(kind: &str, start_ts: u64, key: &Key, extra: &str) -> MvccError {
    MvccError::Abort(format!(
        "Error(Txn(Error(Mvcc(Error({kind} {{ start_ts: TimeStamp({start_ts}), key: {:?}{extra} \
         }})))))",
        key.raw.to_vec()
    ))
}

fn write_conflict(
    props: &LockProps,
    key: &Key,
    conflict_start_ts: u64,
    conflict_commit_ts: u64,
) -> MvccError {
    MvccError::WriteConflict {
        start_ts: props.start_ts,
        conflict_start_ts,
        conflict_commit_ts,
        key: key.raw.clone(),
        primary: props.primary.clone(),
        reason: Reason::PessimisticRetry,
    }
}

fn pessimistic_lock(props: &LockProps, for_update_ts: u64, with_conflict: bool) -> Lock {
    let mut lock = Lock::new(
        LockType::Pessimistic,
        props.primary.clone(),
        props.start_ts,
        props.lock_ttl,
    );
    lock.for_update_ts = for_update_ts;
    lock.min_commit_ts = props.min_commit_ts;
    lock.is_locked_with_conflict = with_conflict;
    lock
}

/// Locks `key` exclusively for the transaction, or says why not. `should_not_exist` is the
/// mutation's `assertion == NotExist`.
pub(crate) fn acquire_pessimistic_lock(
    txn: &mut Txn<'_>,
    key: &Key,
    props: &LockProps,
    should_not_exist: bool,
) -> Result<KeyResult, MvccError> {
    acquire(txn, key, props, should_not_exist, false)
}

/// Locks `key` in shared mode for the transaction (`Op::SharedPessimisticLock`), or says why
/// not.
pub(crate) fn acquire_shared_pessimistic_lock(
    txn: &mut Txn<'_>,
    key: &Key,
    props: &LockProps,
    should_not_exist: bool,
) -> Result<KeyResult, MvccError> {
    acquire(txn, key, props, should_not_exist, true)
}

fn acquire(
    txn: &mut Txn<'_>,
    key: &Key,
    props: &LockProps,
    should_not_exist: bool,
    shared: bool,
) -> Result<KeyResult, MvccError> {
    if props.lock_only_if_exists && !props.need_value {
        return Err(abort("LockIfExistsFailed", props.start_ts, key, ""));
    }
    let locked = |record: &LockRecord| {
        MvccError::KeyIsLocked(Box::new(record.to_lock_info(key.raw.clone())))
    };
    // The shared record a new shared holder joins.
    let mut joined: Option<SharedLocks> = None;
    match txn.lock(&key.enc) {
        Some(LockRecord::Exclusive(lock)) if !shared => {
            return existing_lock(txn, key, props, should_not_exist, lock);
        }
        Some(record @ LockRecord::Exclusive(_)) => return Err(locked(&record)),
        Some(LockRecord::Shared(locks)) if !shared => {
            if !locks.is_shrink_only() {
                return Err(MvccError::NotInShrinkMode(Box::new(locks)));
            }
            return Err(locked(&LockRecord::Shared(locks)));
        }
        Some(LockRecord::Shared(locks)) => {
            if locks.contains(props.start_ts) {
                return existing_shared_lock(txn, key, props, locks);
            }
            if locks.is_shrink_only() {
                return Err(locked(&LockRecord::Shared(locks)));
            }
            joined = Some(locks);
        }
        None if shared => joined = Some(SharedLocks::default()),
        None => {}
    }
    let mut for_update_ts = props.for_update_ts;
    let mut conflict: Option<(u64, u64)> = None;
    let mut value = None;
    let store = txn.store;
    if let Some((commit_ts, write)) = store.seek_write(&key.enc, u64::MAX) {
        if commit_ts > for_update_ts {
            if !props.allow_lock_with_conflict {
                return Err(write_conflict(props, key, write.start_ts, commit_ts));
            }
            conflict = Some((write.start_ts, commit_ts));
            for_update_ts = commit_ts;
        }
        let rolled_back = |(ts, w): (u64, &Write)| {
            ts == props.start_ts
                && (w.write_type == WriteType::Rollback || w.has_overlapped_rollback)
        };
        if rolled_back((commit_ts, write))
            || (commit_ts > props.start_ts
                && store
                    .seek_write(&key.enc, props.start_ts)
                    .is_some_and(rolled_back))
        {
            return Err(abort("PessimisticLockRolledBack", props.start_ts, key, ""));
        }
        check_data_constraint(txn, should_not_exist, write, commit_ts, key).map_err(|e| match (
            e, conflict,
        ) {
            (MvccError::AlreadyExist { .. }, Some((s, c))) => write_conflict(props, key, s, c),
            (e, _) => e,
        })?;
        if props.need_value || props.need_check_existence || conflict.is_some() {
            value = match write.write_type {
                WriteType::Put if write.gc_fence_allows(props.start_ts) => {
                    store.value_of(&key.enc, write)
                }
                WriteType::Put | WriteType::Delete => None,
                WriteType::Lock | WriteType::Rollback => {
                    store.get(&key.enc, commit_ts - 1).map(|(v, _)| v)
                }
            };
        }
    }
    if let Some(mut locks) = joined {
        // A shared lock is taken whether or not the key exists.
        let lock = pessimistic_lock(props, for_update_ts, conflict.is_some());
        locks.insert(lock).map_err(invalid_operation)?;
        txn.batch.put_shared_locks(key.enc.clone(), locks);
    } else if !props.lock_only_if_exists || value.is_some() {
        let lock = pessimistic_lock(props, for_update_ts, conflict.is_some());
        txn.batch.put_lock(key.enc.clone(), lock);
    } else if let Some((s, c)) = conflict {
        return Err(write_conflict(props, key, s, c));
    }
    Ok(KeyResult::new(props, conflict.map(|(_, c)| c), value))
}

/// The key is already locked: someone else's lock is KeyIsLocked, our own prewrite lock is a
/// type mismatch, our own pessimistic lock is a retry.
fn existing_lock(
    txn: &mut Txn<'_>,
    key: &Key,
    props: &LockProps,
    should_not_exist: bool,
    lock: Lock,
) -> Result<KeyResult, MvccError> {
    if lock.ts != props.start_ts {
        return Err(MvccError::KeyIsLocked(Box::new(
            lock.to_lock_info(key.raw.clone()),
        )));
    }
    if !lock.is_pessimistic_lock() {
        return Err(abort(
            "LockTypeNotMatch",
            props.start_ts,
            key,
            ", pessimistic: false",
        ));
    }
    let requested = props.for_update_ts;
    let mut for_update_ts = requested;
    let conflict_ts = (props.allow_lock_with_conflict && requested < lock.for_update_ts)
        .then_some(lock.for_update_ts);
    if let Some(ts) = conflict_ts {
        for_update_ts = ts;
    }
    let need_load = props.need_value || conflict_ts.is_some();
    let mut value = None;
    if need_load || props.need_check_existence || should_not_exist {
        // The newest Put at or below for_update_ts; a Delete (or nothing) means no value.
        let store = txn.store;
        let found = store
            .writes_at_or_below(&key.enc, for_update_ts)
            .find(|(_, w)| matches!(w.write_type, WriteType::Put | WriteType::Delete))
            .filter(|(_, w)| w.write_type == WriteType::Put && w.gc_fence_allows(for_update_ts));
        if let Some((commit_ts, write)) = found {
            check_data_constraint(txn, should_not_exist, write, commit_ts, key).map_err(
                |e| match e {
                    MvccError::AlreadyExist { .. } if commit_ts > requested => {
                        write_conflict(props, key, write.start_ts, commit_ts)
                    }
                    e => e,
                },
            )?;
            value = if need_load {
                store.value_of(&key.enc, write)
            } else {
                Some(Bytes::new())
            };
        }
    }
    if for_update_ts > lock.for_update_ts {
        let new = pessimistic_lock(props, for_update_ts, lock.is_locked_with_conflict);
        txn.batch.put_lock(key.enc.clone(), new);
    }
    Ok(KeyResult::new(props, conflict_ts, value))
}

/// The transaction already holds a shared sub-lock on the key: a retry, which only moves the
/// sub-lock's for_update_ts forward. No value is read for a shared lock (TiKV does not support
/// it yet), so a request for values gets none.
fn existing_shared_lock(
    txn: &mut Txn<'_>,
    key: &Key,
    props: &LockProps,
    mut locks: SharedLocks,
) -> Result<KeyResult, MvccError> {
    let Some(current) = locks.get(props.start_ts) else {
        return Err(invalid_operation(format!(
            "lock #{} does not exist in SharedLocks",
            props.start_ts
        )));
    };
    if props.for_update_ts > current.for_update_ts {
        let new = pessimistic_lock(props, props.for_update_ts, current.is_locked_with_conflict);
        locks.update(new).map_err(invalid_operation)?;
        txn.batch.put_shared_locks(key.enc.clone(), locks);
    }
    Ok(KeyResult::new(props, None, None))
}

/// TiKV's `InvalidOperation` error of a `SharedLocks` misuse, as the abort it is reported as.
fn invalid_operation(text: String) -> MvccError {
    MvccError::Abort(format!(
        "Error(Txn(Error(Mvcc(Error(InvalidOperation({text:?}))))))"
    ))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use crate::mvcc::{MvccStore, WriteBatch};

    fn props(start_ts: u64, for_update_ts: u64) -> LockProps {
        LockProps {
            primary: key("k").raw,
            start_ts,
            lock_ttl: 3000,
            for_update_ts,
            need_value: false,
            need_check_existence: false,
            min_commit_ts: 0,
            lock_only_if_exists: false,
            allow_lock_with_conflict: false,
        }
    }

    fn put(store: &mut MvccStore, k: &Key, start_ts: u64, commit_ts: u64, v: &str) {
        let mut b = WriteBatch::default();
        let w = Write::new(WriteType::Put, start_ts, Some(key(v).raw));
        b.put_write(k.enc.clone(), commit_ts, w);
        b.apply(store);
    }

    fn acquire(
        store: &mut MvccStore,
        k: &Key,
        p: &LockProps,
        should_not_exist: bool,
    ) -> Result<KeyResult, MvccError> {
        run(store, p.start_ts, |txn| {
            acquire_pessimistic_lock(txn, k, p, should_not_exist)
        })
    }

    #[test]
    fn locks_a_fresh_key_and_is_idempotent() {
        let mut store = MvccStore::default();
        let k = key("k");
        assert_eq!(
            acquire(&mut store, &k, &props(10, 10), false),
            Ok(KeyResult::Empty)
        );
        let lock = store.lock(&k.enc).unwrap().clone();
        assert_eq!(lock.lock_type, LockType::Pessimistic);
        assert_eq!((lock.ts, lock.for_update_ts, lock.ttl), (10, 10, 3000));
        // Retried with a newer for_update_ts: the lock is rewritten.
        acquire(&mut store, &k, &props(10, 12), false).unwrap();
        assert_eq!(store.lock(&k.enc).unwrap().for_update_ts, 12);
        // An older retry leaves it alone.
        acquire(&mut store, &k, &props(10, 11), false).unwrap();
        assert_eq!(store.lock(&k.enc).unwrap().for_update_ts, 12);
    }

    #[test]
    fn other_lock_is_key_is_locked_and_own_prewrite_lock_mismatches() {
        let mut store = MvccStore::default();
        let k = key("k");
        let mut b = WriteBatch::default();
        b.put_lock(
            k.enc.clone(),
            Lock::new(LockType::Put, k.raw.clone(), 5, 100),
        );
        b.apply(&mut store);
        match acquire(&mut store, &k, &props(10, 10), false) {
            Err(MvccError::KeyIsLocked(info)) => assert_eq!(info.lock_version, 5),
            other => panic!("{other:?}"),
        }
        match acquire(&mut store, &k, &props(5, 10), false) {
            Err(MvccError::Abort(t)) => assert!(t.contains("LockTypeNotMatch"), "{t}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn newer_write_conflicts_or_locks_with_conflict() {
        let mut store = MvccStore::default();
        let k = key("k");
        put(&mut store, &k, 15, 20, "v");
        match acquire(&mut store, &k, &props(10, 18), false) {
            Err(MvccError::WriteConflict {
                conflict_start_ts: 15,
                conflict_commit_ts: 20,
                reason: Reason::PessimisticRetry,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let mut p = props(10, 18);
        p.allow_lock_with_conflict = true;
        assert_eq!(
            acquire(&mut store, &k, &p, false),
            Ok(KeyResult::LockedWithConflict {
                value: Some(key("v").raw),
                conflict_ts: 20
            })
        );
        let lock = store.lock(&k.enc).unwrap();
        assert!(lock.is_locked_with_conflict);
        assert_eq!(lock.for_update_ts, 20);
        // A retry below the lock's for_update_ts reports the same conflict.
        assert_eq!(
            acquire(&mut store, &k, &p, false),
            Ok(KeyResult::LockedWithConflict {
                value: Some(key("v").raw),
                conflict_ts: 20
            })
        );
        // should_not_exist with a conflict becomes a write conflict.
        store.locks.clear();
        assert!(matches!(
            acquire(&mut store, &k, &p, true),
            Err(MvccError::WriteConflict { .. })
        ));
    }

    #[test]
    fn own_rollback_aborts() {
        let mut store = MvccStore::default();
        let k = key("k");
        let mut b = WriteBatch::default();
        b.put_write(k.enc.clone(), 10, Write::new_rollback(10, true));
        b.apply(&mut store);
        match acquire(&mut store, &k, &props(10, 10), false) {
            Err(MvccError::Abort(t)) => assert!(t.contains("PessimisticLockRolledBack"), "{t}"),
            other => panic!("{other:?}"),
        }
        // Also when a newer write hides the rollback.
        put(&mut store, &k, 11, 12, "v");
        match acquire(&mut store, &k, &props(10, 12), false) {
            Err(MvccError::Abort(t)) => assert!(t.contains("PessimisticLockRolledBack"), "{t}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn values_existence_and_constraints() {
        let mut store = MvccStore::default();
        let k = key("k");
        let missing = key("m");
        put(&mut store, &k, 5, 6, "v");
        let mut b = WriteBatch::default();
        b.put_write(k.enc.clone(), 8, Write::new(WriteType::Lock, 7, None));
        b.apply(&mut store);
        let mut p = props(10, 10);
        p.need_value = true;
        // A Lock record is looked through to the Put below it.
        assert_eq!(
            acquire(&mut store, &k, &p, false),
            Ok(KeyResult::Value(Some(key("v").raw)))
        );
        assert_eq!(
            acquire(&mut store, &missing, &p, false),
            Ok(KeyResult::Value(None))
        );
        store.locks.clear();
        let mut p = props(20, 20);
        p.need_check_existence = true;
        assert_eq!(
            acquire(&mut store, &k, &p, false),
            Ok(KeyResult::Existence(true))
        );
        assert_eq!(
            acquire(&mut store, &missing, &p, false),
            Ok(KeyResult::Existence(false))
        );
        store.locks.clear();
        assert!(matches!(
            acquire(&mut store, &k, &props(31, 31), true),
            Err(MvccError::AlreadyExist { .. })
        ));
    }

    #[test]
    fn lock_only_if_exists() {
        let mut store = MvccStore::default();
        let k = key("k");
        let missing = key("m");
        put(&mut store, &k, 5, 6, "v");
        let mut p = props(10, 10);
        p.lock_only_if_exists = true;
        match acquire(&mut store, &k, &p, false) {
            Err(MvccError::Abort(t)) => assert!(t.contains("LockIfExistsFailed"), "{t}"),
            other => panic!("{other:?}"),
        }
        p.need_value = true;
        assert_eq!(
            acquire(&mut store, &missing, &p, false),
            Ok(KeyResult::Value(None))
        );
        assert!(!store.locks.contains_key(&missing.enc));
        assert_eq!(
            acquire(&mut store, &k, &p, false),
            Ok(KeyResult::Value(Some(key("v").raw)))
        );
        assert!(store.locks.contains_key(&k.enc));
    }
}
