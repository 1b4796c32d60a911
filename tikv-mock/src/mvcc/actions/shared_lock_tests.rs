//! Shared-lock scenarios of the actions, ported (in our own words) from TiKV's tests of
//! `components/txn_types/src/lock.rs`, `src/storage/txn/actions/{acquire_pessimistic_lock,
//! prewrite,commit,cleanup}.rs` and `src/storage/txn/commands/{prewrite,check_txn_status,
//! txn_heart_beat,resolve_lock}.rs`.

use bytes::Bytes;
use tikv_proto::kvrpcpb::{self, Op};

use super::MvccError;
use super::acquire_pessimistic_lock::{
    KeyResult, LockProps, acquire_pessimistic_lock, acquire_shared_pessimistic_lock,
};
use super::check_txn_status::{
    CheckTxnStatusArgs, SecondaryStatus, check_secondary_lock, check_txn_status, txn_heart_beat,
};
use super::cleanup::cleanup;
use super::commit::commit;
use super::prewrite::tests::{mutation, props};
use super::prewrite::{CommitKind, Prewritten, prewrite};
use super::test_util::*;
use crate::mvcc::{Lock, LockRecord, LockType, MvccStore, SharedLocks, WriteType};
use crate::tso::compose;

fn lock_props(primary: &str, start_ts: u64, for_update_ts: u64, ttl: u64) -> LockProps {
    LockProps {
        primary: key(primary).raw,
        start_ts,
        lock_ttl: ttl,
        for_update_ts,
        need_value: false,
        need_check_existence: false,
        min_commit_ts: 0,
        lock_only_if_exists: false,
        allow_lock_with_conflict: false,
    }
}

fn slock(
    store: &mut MvccStore,
    k: &str,
    primary: &str,
    start_ts: u64,
    for_update_ts: u64,
    ttl: u64,
) -> Result<KeyResult, MvccError> {
    let p = lock_props(primary, start_ts, for_update_ts, ttl);
    run(store, start_ts, |txn| {
        acquire_shared_pessimistic_lock(txn, &key(k), &p, false)
    })
}

fn xlock(
    store: &mut MvccStore,
    k: &str,
    primary: &str,
    start_ts: u64,
    for_update_ts: u64,
) -> Result<KeyResult, MvccError> {
    let p = lock_props(primary, start_ts, for_update_ts, 3000);
    run(store, start_ts, |txn| {
        acquire_pessimistic_lock(txn, &key(k), &p, false)
    })
}

fn shared(store: &MvccStore, k: &str) -> SharedLocks {
    match store.lock_record(&key(k).enc) {
        Some(LockRecord::Shared(locks)) => locks.clone(),
        other => panic!("expected shared locks on {k}, found {other:?}"),
    }
}

fn pessimistic_props(
    primary: &str,
    start_ts: u64,
    for_update_ts: u64,
) -> super::prewrite::PrewriteProps {
    let mut p = props(primary, start_ts);
    p.for_update_ts = for_update_ts;
    p
}

fn shared_prewrite_mutation(k: &str) -> super::prewrite::Mutation {
    let mut m = mutation(Op::SharedLock, k, b"");
    m.pessimistic_action = kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck;
    m
}

fn shared_prewrite(
    store: &mut MvccStore,
    k: &str,
    primary: &str,
    start_ts: u64,
    for_update_ts: u64,
) -> Result<Prewritten, MvccError> {
    let p = pessimistic_props(primary, start_ts, for_update_ts);
    run(store, start_ts, |txn| {
        prewrite(txn, &p, &shared_prewrite_mutation(k))
    })
}

fn commit_key(
    store: &mut MvccStore,
    k: &str,
    start_ts: u64,
    commit_ts: u64,
) -> Result<(), MvccError> {
    run(store, start_ts, |txn| {
        commit(txn, &key(k), start_ts, commit_ts)
    })
}

// ----- the SharedLocks record (txn_types lock.rs) ---------------------------------------------

/// TiKV `test_put_and_get_shared_lock_txn`, `test_shared_locks_shrink_only_flag_basic`,
/// `test_insert_into_shrink_only_*`, `test_insert_existing_*`, `test_update_*`.
#[test]
fn shared_locks_record_rules() {
    let mut locks = SharedLocks::default();
    assert!(locks.is_empty() && !locks.is_shrink_only());
    let l1 = Lock::new(LockType::Lock, key("p1").raw, 1, 100);
    let mut l2 = Lock::new(LockType::Pessimistic, key("p2").raw, 2, 100);
    locks.insert(l1).unwrap();
    locks.insert(l2.clone()).unwrap();
    assert_eq!(
        locks.insert(l2.clone()),
        Err("lock #2 already exists in SharedLocks".to_owned())
    );
    l2.lock_type = LockType::Lock;
    locks.update(l2).unwrap();
    assert_eq!(locks.get(2).map(|l| l.lock_type), Some(LockType::Lock));
    assert_eq!(
        locks.update(Lock::new(LockType::Lock, key("p").raw, 10, 1)),
        Err("lock #10 does not exist in SharedLocks".to_owned())
    );
    locks.set_shrink_only();
    assert!(locks.is_shrink_only());
    assert_eq!(
        locks.insert(Lock::new(LockType::Pessimistic, key("p").raw, 7, 1)),
        Err("cannot insert new lock #7 into shrink-only SharedLocks".to_owned())
    );
    // The LockInfo: type SharedLock, the key, one entry per holder, nothing else.
    let info = locks.to_lock_info(key("k").raw);
    assert_eq!(info.lock_type, Op::SharedLock as i32);
    assert_eq!(info.key, key("k").raw);
    assert_eq!((info.lock_version, info.lock_ttl), (0, 0));
    assert!(info.primary_lock.is_empty());
    let subs: Vec<(u64, Bytes, i32)> = info
        .shared_lock_infos
        .iter()
        .map(|l| (l.lock_version, l.primary_lock.clone(), l.lock_type))
        .collect();
    assert_eq!(
        subs,
        vec![
            (1, key("p1").raw, Op::Lock as i32),
            (2, key("p2").raw, Op::Lock as i32)
        ]
    );
    assert!(info.shared_lock_infos.iter().all(|l| l.key == key("k").raw));
    // Scans keep the smallest start timestamps when cutting a record short.
    locks.truncate(1);
    assert!(locks.contains(1) && !locks.contains(2));
}

// ----- acquiring (actions/acquire_pessimistic_lock.rs) ----------------------------------------

/// TiKV `test_acquire_shared_lock_creates_shared_entry`.
#[test]
fn shared_lock_creates_a_shared_record() {
    let mut store = MvccStore::default();
    assert_eq!(
        slock(&mut store, "k", "pk", 5, 15, 2000),
        Ok(KeyResult::Empty)
    );
    let locks = shared(&store, "k");
    assert_eq!(locks.len(), 1);
    let sub = locks.get(5).unwrap();
    assert_eq!(sub.lock_type, LockType::Pessimistic);
    assert_eq!(
        (sub.primary.clone(), sub.for_update_ts, sub.ttl),
        (key("pk").raw, 15, 2000)
    );
}

/// TiKV `test_acquire_shared_lock_merges_existing_entries`.
#[test]
fn second_shared_locker_joins_the_record() {
    let mut store = MvccStore::default();
    slock(&mut store, "k", "pk1", 10, 20, 1500).unwrap();
    slock(&mut store, "k", "pk2", 12, 18, 2500).unwrap();
    let locks = shared(&store, "k");
    assert_eq!(locks.len(), 2);
    let (a, b) = (locks.get(10).unwrap(), locks.get(12).unwrap());
    assert_eq!(
        (a.primary.clone(), a.for_update_ts, a.ttl),
        (key("pk1").raw, 20, 1500)
    );
    assert_eq!(
        (b.primary.clone(), b.for_update_ts, b.ttl),
        (key("pk2").raw, 18, 2500)
    );
}

/// TiKV `test_acquire_shared_lock_idempotent_for_same_txn`: a retry only moves the
/// for_update_ts forward; a value asked for is not read.
#[test]
fn shared_lock_retry_is_idempotent() {
    let mut store = MvccStore::default();
    slock(&mut store, "k", "pk", 25, 35, 3000).unwrap();
    slock(&mut store, "k", "pk", 25, 45, 3000).unwrap();
    slock(&mut store, "k", "pk", 25, 40, 3000).unwrap();
    let locks = shared(&store, "k");
    assert_eq!(locks.len(), 1);
    assert_eq!(locks.get(25).unwrap().for_update_ts, 45);
    let mut p = lock_props("pk", 25, 45, 3000);
    p.need_value = true;
    assert_eq!(
        run(&mut store, 25, |txn| acquire_shared_pessimistic_lock(
            txn,
            &key("k"),
            &p,
            false
        )),
        Ok(KeyResult::Value(None))
    );
}

/// TiKV `test_lock_upgrade_and_downgrade_blocked`: no upgrade of an own shared lock, no
/// downgrade of an own exclusive lock (and neither is LockUpgradeConflict: TiKV never
/// produces that error).
#[test]
fn own_shared_lock_cannot_upgrade_nor_exclusive_downgrade() {
    let mut store = MvccStore::default();
    slock(&mut store, "s", "pk", 25, 35, 3000).unwrap();
    assert!(matches!(
        xlock(&mut store, "s", "pk", 25, 45),
        Err(MvccError::NotInShrinkMode(_))
    ));
    xlock(&mut store, "x", "pk", 25, 35).unwrap();
    match slock(&mut store, "x", "pk", 25, 45, 3000) {
        Err(MvccError::KeyIsLocked(info)) => {
            assert_eq!(
                (info.lock_version, info.lock_type),
                (25, Op::PessimisticLock as i32)
            )
        }
        other => panic!("{other:?}"),
    }
}

/// TiKV `test_xlock_meet_slock_without_shrink_only` and `test_slock_meet_slock_with_shrink_only`
/// (with the command's part: the record is made shrink-only, then an exclusive request is
/// KeyIsLocked and so is a new shared one).
#[test]
fn exclusive_request_meets_shared_record() {
    let mut store = MvccStore::default();
    slock(&mut store, "k", "pk", 10, 20, 3000).unwrap();
    let mut locks = match xlock(&mut store, "k", "pk", 30, 30) {
        Err(MvccError::NotInShrinkMode(locks)) => {
            assert!(!locks.is_shrink_only());
            assert_eq!(locks.len(), 1);
            *locks
        }
        other => panic!("{other:?}"),
    };
    locks.set_shrink_only();
    let mut b = crate::mvcc::WriteBatch::default();
    b.put_shared_locks(key("k").enc, locks);
    b.apply(&mut store);
    for result in [
        xlock(&mut store, "k", "pk", 30, 30),
        slock(&mut store, "k", "pk", 20, 20, 3000),
    ] {
        match result {
            Err(MvccError::KeyIsLocked(info)) => {
                assert_eq!(info.lock_type, Op::SharedLock as i32);
                assert_eq!(info.shared_lock_infos.len(), 1);
                assert_eq!(info.shared_lock_infos[0].lock_version, 10);
            }
            other => panic!("{other:?}"),
        }
    }
    // The existing holder may still retry.
    slock(&mut store, "k", "pk", 10, 25, 3000).unwrap();
    assert_eq!(shared(&store, "k").get(10).unwrap().for_update_ts, 25);
}

#[test]
fn shared_request_meets_exclusive_lock_and_newer_write() {
    let mut store = MvccStore::default();
    xlock(&mut store, "k", "pk", 10, 10).unwrap();
    assert!(matches!(
        slock(&mut store, "k", "pk", 20, 20, 3000),
        Err(MvccError::KeyIsLocked(info)) if info.lock_version == 10
    ));
    // A write newer than for_update_ts conflicts as for an exclusive lock.
    super::prewrite::tests::put_committed(&mut store, "w", b"v", 30, 40);
    assert!(matches!(
        slock(&mut store, "w", "pk", 35, 35, 3000),
        Err(MvccError::WriteConflict {
            conflict_commit_ts: 40,
            ..
        })
    ));
}

// ----- prewrite (actions/prewrite.rs, commands/prewrite.rs) -----------------------------------

/// TiKV `test_prewrite_shared_lock_merges_sub_lock`.
#[test]
fn shared_prewrite_turns_the_sub_lock_into_a_lock_lock() {
    let mut store = MvccStore::default();
    slock(&mut store, "k", "pk", 10, 20, 3000).unwrap();
    slock(&mut store, "k", "pk2", 11, 21, 3000).unwrap();
    assert_eq!(
        shared_prewrite(&mut store, "k", "pk", 10, 20),
        Ok(Prewritten::Locked { min_commit_ts: 0 })
    );
    let locks = shared(&store, "k");
    assert_eq!(locks.len(), 2);
    let sub = locks.get(10).unwrap();
    assert_eq!(sub.lock_type, LockType::Lock);
    assert_eq!(
        (sub.primary.clone(), sub.for_update_ts, sub.ttl),
        (key("pk").raw, 20, 3000)
    );
    assert_eq!(locks.get(11).unwrap().lock_type, LockType::Pessimistic);
    // A retry finds the prewritten sub-lock and writes nothing.
    assert_eq!(
        shared_prewrite(&mut store, "k", "pk", 10, 20),
        Ok(Prewritten::Locked { min_commit_ts: 0 })
    );
}

/// TiKV `test_prewrite_shared_lock_rejects_async_commit_and_one_pc` and
/// `test_prewrite_shared_lock_rejects_generation`.
#[test]
fn shared_prewrite_is_two_phase_only() {
    let mut store = MvccStore::default();
    slock(&mut store, "k", "pk", 10, 20, 3000).unwrap();
    for kind in [
        CommitKind::Async { max_commit_ts: 50 },
        CommitKind::OnePc { max_commit_ts: 50 },
    ] {
        let mut p = pessimistic_props("pk", 10, 20);
        p.kind = kind;
        p.secondaries = vec![key("s").raw];
        let r = run(&mut store, 10, |txn| {
            prewrite(txn, &p, &shared_prewrite_mutation("k"))
        });
        assert!(
            matches!(r, Err(MvccError::Abort(ref t)) if t.contains("shared lock prewrite")),
            "{r:?}"
        );
    }
    let mut p = pessimistic_props("pk", 10, 20);
    p.generation = 1;
    let r = run(&mut store, 10, |txn| {
        prewrite(txn, &p, &shared_prewrite_mutation("k"))
    });
    assert!(
        matches!(r, Err(MvccError::Abort(ref t)) if t.contains("non-zero generation")),
        "{r:?}"
    );
    assert_eq!(
        shared(&store, "k").get(10).unwrap().lock_type,
        LockType::Pessimistic
    );
}

/// TiKV `test_prewrite_shared_lock_invalid_mutations`: on its own shared sub-lock a
/// transaction may only prewrite `SharedLock`.
#[test]
fn other_mutations_on_own_shared_lock_are_refused() {
    let mut store = MvccStore::default();
    slock(&mut store, "k", "pk", 10, 20, 3000).unwrap();
    for op in [Op::Put, Op::Del, Op::Lock, Op::Insert] {
        let mut m = mutation(op, "k", b"v");
        m.pessimistic_action = kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck;
        let p = pessimistic_props("pk", 10, 20);
        let r = run(&mut store, 10, |txn| prewrite(txn, &p, &m));
        assert!(
            matches!(r, Err(MvccError::Abort(ref t)) if t.contains("use Op::SharedLock")),
            "{op:?}: {r:?}"
        );
    }
    // Another transaction's ordinary mutation is KeyIsLocked by the whole record.
    let r = run(&mut store, 30, |txn| {
        prewrite(txn, &props("pk", 30), &mutation(Op::Put, "k", b"v"))
    });
    assert!(
        matches!(r, Err(MvccError::KeyIsLocked(ref info)) if info.lock_type == Op::SharedLock as i32)
    );
}

/// TiKV `test_shared_lock_prewrite_cannot_amend_pessimistic_lock`, plus a SharedLock prewrite
/// over an exclusive lock.
#[test]
fn shared_prewrite_without_own_sub_lock_fails() {
    let mut store = MvccStore::default();
    let not_found = |r: Result<Prewritten, MvccError>| {
        matches!(
            r,
            Err(MvccError::PessimisticLockNotFound {
                reason: "LockMissingAmendFail",
                ..
            })
        )
    };
    assert!(not_found(shared_prewrite(&mut store, "k", "k", 10, 10)));
    slock(&mut store, "k", "k", 11, 11, 2000).unwrap();
    assert!(not_found(shared_prewrite(&mut store, "k", "k", 10, 10)));
    assert_eq!(shared(&store, "k").len(), 1);
    // Own exclusive lock: KeyIsLocked, not a type mismatch.
    xlock(&mut store, "x", "pk", 10, 10).unwrap();
    assert!(matches!(
        shared_prewrite(&mut store, "x", "pk", 10, 10),
        Err(MvccError::KeyIsLocked(info)) if info.lock_version == 10
    ));
}

// ----- commit (actions/commit.rs) -------------------------------------------------------------

/// TiKV `test_commit_shared_lock_keeps_remaining_entries`: each holder's commit writes its Lock
/// record and removes only its sub-lock; the last one removes the record (and releases it).
#[test]
fn commit_of_one_holder_keeps_the_others() {
    let mut store = MvccStore::default();
    for ts in [10, 20] {
        slock(&mut store, "k", "pk", ts, ts, 3000).unwrap();
        shared_prewrite(&mut store, "k", "pk", ts, ts).unwrap();
    }
    let released = run(&mut store, 10, |txn| {
        commit(txn, &key("k"), 10, 30)?;
        Ok(txn.batch.released.clone())
    })
    .unwrap();
    assert!(released.is_empty());
    let w = write_at(&store, &key("k"), 30).unwrap();
    assert_eq!((w.write_type, w.start_ts), (WriteType::Lock, 10));
    let locks = shared(&store, "k");
    assert!(!locks.contains(10) && locks.contains(20));
    let released = run(&mut store, 20, |txn| {
        commit(txn, &key("k"), 20, 40)?;
        Ok(txn.batch.released.clone())
    })
    .unwrap();
    assert_eq!(released, vec![(key("k").enc, 20)]);
    assert_eq!(write_at(&store, &key("k"), 40).unwrap().start_ts, 20);
    assert!(store.lock_record(&key("k").enc).is_none());
    // Committing again is accepted; an unknown holder is TxnLockNotFound.
    commit_key(&mut store, "k", 10, 30).unwrap();
    assert!(matches!(
        commit_key(&mut store, "k", 15, 50),
        Err(MvccError::TxnLockNotFound { .. })
    ));
}

/// TiKV `test_commit_stale_pessimistic_lock_preserves_other_shared_locks`.
#[test]
fn commit_of_a_stale_shared_pessimistic_lock_only_drops_it() {
    let mut store = MvccStore::default();
    slock(&mut store, "k", "pk", 10, 10, 3000).unwrap();
    slock(&mut store, "k", "pk", 20, 20, 3000).unwrap();
    commit_key(&mut store, "k", 10, 30).unwrap();
    assert!(write_at(&store, &key("k"), 30).is_none());
    let locks = shared(&store, "k");
    assert_eq!(locks.len(), 1);
    assert!(locks.contains(20));
}

/// TiKV `test_resolve_multiple_shared_locks_same_key`: one command commits one holder and rolls
/// back another, each seeing what the other left.
#[test]
fn one_batch_resolves_two_holders_of_a_key() {
    let mut store = MvccStore::default();
    for ts in [10, 20, 30] {
        slock(&mut store, "k", "pk", ts, ts, 3000).unwrap();
    }
    shared_prewrite(&mut store, "k", "pk", 10, 10).unwrap();
    run(&mut store, 0, |txn| {
        commit(txn, &key("k"), 10, 40)?;
        cleanup(txn, &key("k"), 20, 0, false)
    })
    .unwrap();
    let locks = shared(&store, "k");
    assert_eq!(locks.len(), 1);
    assert!(locks.contains(30));
    assert_eq!(write_at(&store, &key("k"), 40).unwrap().start_ts, 10);
    assert_eq!(
        write_at(&store, &key("k"), 20).unwrap().write_type,
        WriteType::Rollback
    );
}

// ----- cleanup / rollback (actions/cleanup.rs, commands/rollback.rs) --------------------------

/// TiKV `test_cleanup_shared_lock` and `test_cleanup_shared_lock_returns_released_lock`: a live
/// holder is KeyIsLocked with the whole record; an expired one is rolled back (unprotected),
/// and only the last holder's rollback releases the key.
#[test]
fn cleanup_of_shared_holders() {
    let mut store = MvccStore::default();
    let (a, b) = (compose(40, 0), compose(50, 0));
    slock(&mut store, "k", "pk", a, compose(45, 0), 10).unwrap();
    slock(&mut store, "k", "pk", b, compose(55, 0), 10).unwrap();
    shared_prewrite(&mut store, "k", "pk", b, compose(55, 0)).unwrap();
    assert!(matches!(
        run(&mut store, a, |txn| cleanup(txn, &key("k"), a, compose(45, 0), true)),
        Err(MvccError::KeyIsLocked(info)) if info.lock_type == Op::SharedLock as i32
    ));
    for (ts, last) in [(a, false), (b, true)] {
        let released = run(&mut store, ts, |txn| {
            cleanup(txn, &key("k"), ts, ts + compose(4000, 0), true)?;
            Ok(txn.batch.released.clone())
        })
        .unwrap();
        assert_eq!(released.is_empty(), !last);
        let w = write_at(&store, &key("k"), ts).unwrap();
        assert_eq!(w.write_type, WriteType::Rollback);
        assert!(!w.is_protected_rollback());
    }
    assert!(store.lock_record(&key("k").enc).is_none());
}

// ----- status checks (commands/check_txn_status.rs, txn_heart_beat.rs, check_secondary_locks.rs)

fn status_args(lock_ts: u64) -> CheckTxnStatusArgs {
    CheckTxnStatusArgs {
        lock_ts,
        caller_start_ts: 0,
        current_ts: 0,
        rollback_if_not_exist: true,
        force_sync_commit: false,
        resolving_pessimistic_lock: false,
        verify_is_primary: true,
    }
}

/// A shared-locked key is never a primary: check_txn_status and heartbeats on it are
/// PrimaryMismatch with the whole record; check_secondary_locks looks past it.
#[test]
fn status_checks_on_a_shared_key() {
    let mut store = MvccStore::default();
    slock(&mut store, "k", "pk", 10, 10, 3000).unwrap();
    for ts in [10, 99] {
        assert!(matches!(
            run(&mut store, ts, |txn| check_txn_status(txn, &key("k"), &status_args(ts))),
            Err(MvccError::PrimaryMismatch(info)) if info.lock_type == Op::SharedLock as i32
        ));
    }
    assert!(matches!(
        run(&mut store, 10, |txn| txn_heart_beat(
            txn,
            &key("k"),
            10,
            5000,
            0
        )),
        Err(MvccError::PrimaryMismatch(_))
    ));
    assert!(matches!(
        run(&mut store, 11, |txn| txn_heart_beat(
            txn,
            &key("k"),
            11,
            5000,
            0
        )),
        Err(MvccError::TxnNotFound { .. })
    ));
    // The holder's primary is checked as usual.
    xlock(&mut store, "pk", "pk", 10, 10).unwrap();
    assert!(matches!(
        run(&mut store, 10, |txn| check_txn_status(
            txn,
            &key("pk"),
            &status_args(10)
        )),
        Ok(super::TxnStatus::Uncommitted { .. })
    ));
    // check_secondary_locks: no record of txn 12, so it is rolled back (protected) and the
    // shared record stays.
    assert_eq!(
        run(&mut store, 12, |txn| check_secondary_lock(
            txn,
            &key("k"),
            12
        )),
        Ok(SecondaryStatus::RolledBack)
    );
    assert!(
        write_at(&store, &key("k"), 12)
            .unwrap()
            .is_protected_rollback()
    );
    assert_eq!(shared(&store, "k").len(), 1);
}
