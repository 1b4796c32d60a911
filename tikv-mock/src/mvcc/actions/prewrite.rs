//! Prewrite of one mutation (TiKV `src/storage/txn/actions/prewrite.rs`), for optimistic and
//! pessimistic transactions: lock check (including the pessimistic lock the key should hold),
//! write-conflict and existence constraint, assertions, then the lock (or, for one-phase commit,
//! the lock handed back to the command to be committed at once).
//!
//! Shared locks (`Op::SharedLock`) follow TiKV: the mutation prewrites the transaction's own
//! sub-lock inside the key's shared locks (2PC only), leaving the other holders alone.
//!
//! Pipelined DML flushes (KvFlush) use the same action with a non-zero `generation`: a newer
//! generation overwrites the transaction's own lock of an older one (skipping the assertion,
//! which only the first flush of a key checks), an older or equal generation is refused with
//! [`MvccError::GenerationOutOfOrder`], which the flush command ignores.
//!
//! Who calls it: `txn::write::kv_prewrite` and `txn::write::kv_flush`, once per mutation, in
//! request order (sorted by key when the prewrite command sorted the mutations).

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use kvrpcpb::prewrite_request::PessimisticAction;

use super::{Key, MvccError, check_data_constraint};
use crate::mvcc::{
    Lock, LockRecord, LockType, SHORT_VALUE_MAX_LEN, SharedLocks, Txn, Write, WriteType,
};

/// How the transaction commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitKind {
    TwoPc,
    Async { max_commit_ts: u64 },
    OnePc { max_commit_ts: u64 },
}

/// The request-wide inputs of a prewrite.
#[derive(Debug, Clone)]
pub(crate) struct PrewriteProps {
    pub(crate) start_ts: u64,
    pub(crate) primary: Bytes,
    pub(crate) lock_ttl: u64,
    pub(crate) txn_size: u64,
    pub(crate) min_commit_ts: u64,
    pub(crate) kind: CommitKind,
    /// The primary lock's secondaries, for async commit.
    pub(crate) secondaries: Vec<Bytes>,
    pub(crate) skip_constraint_check: bool,
    pub(crate) assertion_level: kvrpcpb::AssertionLevel,
    /// The store's max_ts when the command started.
    pub(crate) max_ts: u64,
    pub(crate) txn_source: u64,
    /// Non-zero for a pessimistic transaction.
    pub(crate) for_update_ts: u64,
    pub(crate) is_retry_request: bool,
    /// The pipelined-DML flush generation; 0 for a prewrite.
    pub(crate) generation: u64,
}

impl PrewriteProps {
    fn is_pessimistic(&self) -> bool {
        self.for_update_ts != 0
    }
}

/// One mutation of the request.
#[derive(Debug, Clone)]
pub(crate) struct Mutation {
    pub(crate) op: kvrpcpb::Op,
    pub(crate) key: Key,
    pub(crate) value: Bytes,
    pub(crate) assertion: kvrpcpb::Assertion,
    /// What a pessimistic prewrite must check about the key's pessimistic lock.
    pub(crate) pessimistic_action: kvrpcpb::prewrite_request::PessimisticAction,
    /// The for_update_ts the key's pessimistic lock must have, if the client said so.
    pub(crate) expected_for_update_ts: Option<u64>,
}

/// What prewriting one mutation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Prewritten {
    /// The commit ts lower bound this key contributes (0 when it imposes none, which makes an
    /// async-commit request fall back to 2PC).
    Locked { min_commit_ts: u64 },
    /// One-phase commit: the lock to turn into a commit record by the command.
    OnePc { lock: Lock, min_commit_ts: u64 },
}

/// Prewrites one mutation. `Err(AssertionFailed)` comes only when nothing else failed; the
/// command collects those and reports them after other errors.
pub(crate) fn prewrite(
    txn: &mut Txn<'_>,
    props: &PrewriteProps,
    m: &Mutation,
) -> Result<Prewritten, MvccError> {
    let start_ts = props.start_ts;
    let lock_type = match m.op {
        kvrpcpb::Op::Put | kvrpcpb::Op::Insert => Some(LockType::Put),
        kvrpcpb::Op::Del => Some(LockType::Delete),
        // A shared lock's prewrite turns the holder's sub-lock into a Lock lock.
        kvrpcpb::Op::Lock | kvrpcpb::Op::SharedLock => Some(LockType::Lock),
        kvrpcpb::Op::CheckNotExists => None,
        other => {
            return Err(MvccError::Abort(format!(
                "Other(\"unexpected mutation op {other:?} in prewrite\")"
            )));
        }
    };
    let should_not_exist = matches!(m.op, kvrpcpb::Op::Insert | kvrpcpb::Op::CheckNotExists);
    let pessimistic = props.is_pessimistic();
    if pessimistic && m.op == kvrpcpb::Op::CheckNotExists {
        return Err(MvccError::Abort(
            "Other(\"CheckNotExists is not allowed in a pessimistic prewrite\")".to_owned(),
        ));
    }
    let action = m.pessimistic_action;
    let do_pessimistic_check = pessimistic && action == PessimisticAction::DoPessimisticCheck;
    let lock_not_found = |reason: &'static str| MvccError::PessimisticLockNotFound {
        start_ts,
        key: m.key.raw.clone(),
        reason,
    };

    // The pessimistic lock this prewrite replaces, if any.
    let mut pessimistic_lock = None;
    let mut latest: Option<(u64, Write)> = None;
    let mut loaded = false;
    let mut subsequent_flush = false;
    // A SharedLock mutation prewrites the transaction's sub-lock in the key's shared locks, and
    // only that: an exclusive lock (even its own) is KeyIsLocked, and with no sub-lock of its
    // own there is no pessimistic lock to amend. Without a pessimistic check and with no lock
    // at all, it becomes an ordinary Lock lock, as in TiKV.
    let shared_op = m.op == kvrpcpb::Op::SharedLock;
    let mut shared: Option<SharedLocks> = None;
    let current = match txn.lock(&m.key.enc) {
        Some(LockRecord::Exclusive(lock)) if shared_op => {
            return Err(MvccError::KeyIsLocked(Box::new(
                lock.to_lock_info(m.key.raw.clone()),
            )));
        }
        Some(LockRecord::Exclusive(lock)) => Some(lock),
        Some(LockRecord::Shared(locks)) if locks.contains(start_ts) => {
            if !shared_op {
                return Err(MvccError::Abort(
                    "Other(\"use Op::SharedLock to prewrite on a shared lock\")".to_owned(),
                ));
            }
            let own = locks.get(start_ts).cloned();
            shared = Some(locks);
            own
        }
        Some(LockRecord::Shared(_)) if shared_op => {
            return Err(lock_not_found("LockMissingAmendFail"));
        }
        Some(LockRecord::Shared(locks)) => {
            return Err(MvccError::KeyIsLocked(Box::new(
                locks.to_lock_info(m.key.raw.clone()),
            )));
        }
        None if shared_op && do_pessimistic_check => {
            return Err(lock_not_found("LockMissingAmendFail"));
        }
        None => None,
    };
    match current {
        Some(lock) if lock.ts != start_ts => {
            if do_pessimistic_check {
                return Err(lock_not_found("LockTsMismatch"));
            }
            let mut info = lock.to_lock_info(m.key.raw.clone());
            if pessimistic {
                // The pessimistic client must not wait on it: TiKV reports it without a TTL.
                info.lock_ttl = 0;
            }
            return Err(MvccError::KeyIsLocked(Box::new(info)));
        }
        Some(lock) if lock.is_pessimistic_lock() => {
            if !pessimistic {
                return Err(MvccError::Abort(format!(
                    "LockTypeNotMatch {{ start_ts: {start_ts}, key: {:?}, pessimistic: true }}",
                    m.key.raw
                )));
            }
            if m.expected_for_update_ts
                .is_some_and(|ts| ts != lock.for_update_ts)
            {
                return Err(lock_not_found("LockForUpdateTsMismatch"));
            }
            pessimistic_lock = Some(lock);
        }
        Some(lock) => {
            if props.generation > 0 && lock.generation >= props.generation {
                return Err(MvccError::GenerationOutOfOrder {
                    generation: props.generation,
                    lock_generation: lock.generation,
                });
            }
            // A key flushed with a value by an earlier generation exists for a later insert.
            if lock.generation > 0 && should_not_exist && lock.lock_type == LockType::Put {
                return Err(MvccError::AlreadyExist {
                    key: m.key.raw.clone(),
                });
            }
            if props.generation == 0 {
                // A retried prewrite: the lock is already there.
                let min_commit_ts = if lock.use_async_commit {
                    lock.min_commit_ts
                } else {
                    0
                };
                return Ok(Prewritten::Locked { min_commit_ts });
            }
            // A later flush of a key this transaction already flushed: overwrite it.
            subsequent_flush = true;
        }
        None if do_pessimistic_check => {
            // The pessimistic lock is gone; it may be re-created only if nothing was committed
            // since this transaction started.
            latest = txn
                .store
                .seek_write(&m.key.enc, u64::MAX)
                .map(|(ts, w)| (ts, w.clone()));
            loaded = true;
            if latest.as_ref().is_some_and(|(ts, _)| *ts >= start_ts) {
                return Err(lock_not_found("LockMissingAmendFail"));
            }
        }
        None => {}
    }

    // Constraint check on the latest version.
    let check = if pessimistic {
        match action {
            PessimisticAction::DoPessimisticCheck => false,
            PessimisticAction::SkipPessimisticCheck => props.is_retry_request,
            PessimisticAction::DoConstraintCheck => true,
        }
    } else {
        !props.skip_constraint_check
    };
    if check {
        latest = txn
            .store
            .seek_write(&m.key.enc, u64::MAX)
            .map(|(ts, w)| (ts, w.clone()));
        loaded = true;
        check_newer_version(txn, props, m, should_not_exist)?;
    }

    // Assertions: level Fast checks only a write already loaded, Strict always loads it. A key
    // is asserted once per transaction: later flushes of it are not checked.
    let level = props.assertion_level;
    if !subsequent_flush
        && m.assertion != kvrpcpb::Assertion::None
        && level != kvrpcpb::AssertionLevel::Off
        && (loaded || level == kvrpcpb::AssertionLevel::Strict)
    {
        if !loaded {
            latest = txn
                .store
                .seek_write(&m.key.enc, u64::MAX)
                .map(|(ts, w)| (ts, w.clone()));
        }
        if let Err(e) = check_assertion(txn, props, m, latest.as_ref()) {
            if !check {
                // A conflict is a better answer than a failed assertion.
                check_newer_version(txn, props, m, should_not_exist)?;
            }
            return Err(e);
        }
    }

    let Some(lock_type) = lock_type else {
        let contributes = match props.kind {
            CommitKind::TwoPc => 0,
            _ => props.min_commit_ts.max(start_ts + 1),
        };
        return Ok(Prewritten::Locked {
            min_commit_ts: contributes,
        });
    };

    let mut lock = Lock::new(lock_type, props.primary.clone(), start_ts, props.lock_ttl);
    lock.txn_size = props.txn_size;
    lock.min_commit_ts = props.min_commit_ts;
    lock.txn_source = props.txn_source;
    lock.for_update_ts = props.for_update_ts;
    lock.generation = props.generation;
    if let Some(pl) = &pessimistic_lock {
        lock.ttl = lock.ttl.max(pl.ttl);
        lock.min_commit_ts = lock.min_commit_ts.max(pl.min_commit_ts);
        lock.for_update_ts = lock.for_update_ts.max(pl.for_update_ts);
    }
    let mut long_value = None;
    if lock_type == LockType::Put {
        if m.value.len() <= SHORT_VALUE_MAX_LEN {
            lock.short_value = Some(m.value.clone());
        } else {
            long_value = Some(m.value.clone());
        }
    }
    let mut final_min_commit_ts = 0;
    match props.kind {
        CommitKind::TwoPc => {}
        CommitKind::Async { max_commit_ts } | CommitKind::OnePc { max_commit_ts } => {
            if matches!(props.kind, CommitKind::Async { .. }) {
                lock.use_async_commit = true;
                if m.key.raw == props.primary {
                    lock.secondaries = props.secondaries.clone();
                }
            }
            let min = lock.min_commit_ts.max(
                props
                    .max_ts
                    .max(start_ts)
                    .max(lock.for_update_ts)
                    .saturating_add(1),
            );
            if max_commit_ts != 0 && min > max_commit_ts {
                return Err(MvccError::CommitTsTooLarge { min_commit_ts: min });
            }
            lock.min_commit_ts = min;
            final_min_commit_ts = min;
        }
    }
    if let Some(mut locks) = shared {
        let refused = if props.generation > 0 {
            Some(format!(
                "shared lock prewrite does not support non-zero generation, generation: {}",
                props.generation
            ))
        } else {
            match props.kind {
                CommitKind::TwoPc => None,
                CommitKind::OnePc { .. } => {
                    Some("shared lock prewrite is incompatible with one-phase commit".to_owned())
                }
                CommitKind::Async { .. } => Some(
                    "shared lock prewrite cannot use async-commit, falling back to 2PC".to_owned(),
                ),
            }
        };
        if let Some(text) = refused {
            return Err(MvccError::Abort(format!("Other({text:?})")));
        }
        locks
            .update(lock)
            .map_err(|text| MvccError::Abort(format!("Other({text:?})")))?;
        txn.batch.put_shared_locks(m.key.enc.clone(), locks);
        return Ok(Prewritten::Locked {
            min_commit_ts: final_min_commit_ts,
        });
    }
    if let Some(v) = long_value {
        txn.batch.put_value(m.key.enc.clone(), start_ts, v);
    }
    if matches!(props.kind, CommitKind::OnePc { .. }) {
        return Ok(Prewritten::OnePc {
            lock,
            min_commit_ts: final_min_commit_ts,
        });
    }
    txn.batch.put_lock(m.key.enc.clone(), lock);
    Ok(Prewritten::Locked {
        min_commit_ts: final_min_commit_ts,
    })
}

/// `check_for_newer_version`: walks the key's writes newest first. Our own rollback is a
/// conflict; an optimistic txn (or a lazy uniqueness check) conflicts with any commit after its
/// start; a pessimistic txn conflicts with a commit after its for_update_ts, except rollbacks,
/// which it looks past. The first write that passes is checked for existence.
fn check_newer_version(
    txn: &Txn<'_>,
    props: &PrewriteProps,
    m: &Mutation,
    should_not_exist: bool,
) -> Result<(), MvccError> {
    use kvrpcpb::write_conflict::Reason;
    for (commit_ts, write) in txn.store.writes_at_or_below(&m.key.enc, u64::MAX) {
        let conflict = |reason| MvccError::WriteConflict {
            start_ts: props.start_ts,
            conflict_start_ts: write.start_ts,
            conflict_commit_ts: commit_ts,
            key: m.key.raw.clone(),
            primary: props.primary.clone(),
            reason,
        };
        if commit_ts == props.start_ts
            && (write.write_type == WriteType::Rollback || write.has_overlapped_rollback)
        {
            return Err(conflict(Reason::SelfRolledBack));
        }
        if !props.is_pessimistic() {
            if commit_ts > props.start_ts {
                return Err(conflict(Reason::Optimistic));
            }
        } else {
            if m.pessimistic_action == PessimisticAction::DoConstraintCheck
                && commit_ts > props.start_ts
            {
                return Err(conflict(Reason::LazyUniquenessCheck));
            }
            if commit_ts > props.for_update_ts {
                if write.write_type == WriteType::Rollback {
                    continue;
                }
                return Err(MvccError::PessimisticLockNotFound {
                    start_ts: props.start_ts,
                    key: m.key.raw.clone(),
                    reason: "NonLockKeyConflict",
                });
            }
        }
        return check_data_constraint(txn, should_not_exist, write, commit_ts, &m.key);
    }
    Ok(())
}

fn check_assertion(
    txn: &Txn<'_>,
    props: &PrewriteProps,
    m: &Mutation,
    latest: Option<&(u64, Write)>,
) -> Result<(), MvccError> {
    // The version the assertion is about: the latest Put/Delete (Lock and Rollback records say
    // nothing); a fenced version counts as absent.
    let mut existing: Option<(u64, Write)> = latest
        .filter(|(_, w)| w.gc_fence.is_none_or(|f| f == 0))
        .cloned();
    if let Some((_, w)) = &existing
        && matches!(w.write_type, WriteType::Lock | WriteType::Rollback)
    {
        existing = txn
            .store
            .writes_at_or_below(&m.key.enc, u64::MAX)
            .find(|(_, w)| matches!(w.write_type, WriteType::Put | WriteType::Delete))
            .filter(|(_, w)| w.gc_fence_allows(u64::MAX))
            .map(|(ts, w)| (ts, w.clone()));
    }
    let failed = match m.assertion {
        kvrpcpb::Assertion::Exist => existing
            .as_ref()
            .is_none_or(|(_, w)| w.write_type == WriteType::Delete),
        kvrpcpb::Assertion::NotExist => existing
            .as_ref()
            .is_some_and(|(_, w)| w.write_type == WriteType::Put),
        _ => false,
    };
    if failed {
        let (existing_commit_ts, existing_start_ts) =
            existing.map_or((0, 0), |(ts, w)| (ts, w.start_ts));
        return Err(MvccError::AssertionFailed {
            start_ts: props.start_ts,
            key: m.key.raw.clone(),
            assertion: m.assertion,
            existing_start_ts,
            existing_commit_ts,
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::test_util::*;
    use super::*;
    use crate::mvcc::MvccStore;
    use kvrpcpb::Op;

    pub(crate) fn props(primary: &str, start_ts: u64) -> PrewriteProps {
        PrewriteProps {
            start_ts,
            primary: key(primary).raw,
            lock_ttl: 3000,
            txn_size: 1,
            min_commit_ts: 0,
            kind: CommitKind::TwoPc,
            secondaries: vec![],
            skip_constraint_check: false,
            assertion_level: kvrpcpb::AssertionLevel::Off,
            max_ts: 0,
            txn_source: 0,
            for_update_ts: 0,
            is_retry_request: false,
            generation: 0,
        }
    }

    pub(crate) fn mutation(op: Op, k: &str, v: &[u8]) -> Mutation {
        Mutation {
            op,
            key: key(k),
            value: Bytes::copy_from_slice(v),
            assertion: kvrpcpb::Assertion::None,
            pessimistic_action: PessimisticAction::SkipPessimisticCheck,
            expected_for_update_ts: None,
        }
    }

    /// Prewrites and commits `k=v` at (start, commit).
    pub(crate) fn put_committed(store: &mut MvccStore, k: &str, v: &[u8], start: u64, commit: u64) {
        run(store, start, |txn| {
            prewrite(txn, &props(k, start), &mutation(Op::Put, k, v))
        })
        .unwrap();
        run(store, start, |txn| {
            super::super::commit::commit(txn, &key(k), start, commit)
        })
        .unwrap();
    }

    #[test]
    fn prewrite_writes_lock_with_short_or_long_value() {
        let mut store = MvccStore::default();
        run(&mut store, 5, |txn| {
            prewrite(txn, &props("a", 5), &mutation(Op::Put, "a", b"v"))?;
            prewrite(txn, &props("a", 5), &mutation(Op::Put, "b", &[7; 256]))?;
            prewrite(txn, &props("a", 5), &mutation(Op::Del, "c", b""))
        })
        .unwrap();
        let la = store.lock(&key("a").enc).unwrap();
        assert_eq!(la.short_value.as_deref(), Some(&b"v"[..]));
        assert_eq!((la.ttl, la.txn_size, la.ts), (3000, 1, 5));
        let lb = store.lock(&key("b").enc).unwrap();
        assert!(lb.short_value.is_none());
        assert_eq!(store.values.len(), 1);
        assert_eq!(
            store.lock(&key("c").enc).unwrap().lock_type,
            LockType::Delete
        );
    }

    #[test]
    fn prewrite_is_idempotent_and_blocked_by_other_locks() {
        let mut store = MvccStore::default();
        let m = mutation(Op::Put, "a", b"v");
        run(&mut store, 5, |txn| prewrite(txn, &props("a", 5), &m)).unwrap();
        assert_eq!(
            run(&mut store, 5, |txn| prewrite(txn, &props("a", 5), &m)),
            Ok(Prewritten::Locked { min_commit_ts: 0 })
        );
        match run(&mut store, 6, |txn| prewrite(txn, &props("x", 6), &m)) {
            Err(MvccError::KeyIsLocked(info)) => assert_eq!(info.lock_version, 5),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn write_conflict_self_rollback_and_already_exist() {
        let mut store = MvccStore::default();
        put_committed(&mut store, "a", b"v", 5, 10);
        // A newer commit than our start ts.
        match run(&mut store, 8, |txn| {
            prewrite(txn, &props("a", 8), &mutation(Op::Put, "a", b"x"))
        }) {
            Err(MvccError::WriteConflict {
                conflict_start_ts: 5,
                conflict_commit_ts: 10,
                reason,
                ..
            }) => {
                assert_eq!(reason, kvrpcpb::write_conflict::Reason::Optimistic)
            }
            other => panic!("{other:?}"),
        }
        // skip_constraint_check lets it through.
        let mut p = props("a", 8);
        p.skip_constraint_check = true;
        run(&mut store, 8, |txn| {
            prewrite(txn, &p, &mutation(Op::Put, "a", b"x"))
        })
        .unwrap();
        // Insert on an existing key.
        assert!(matches!(
            run(&mut store, 20, |txn| prewrite(
                txn,
                &props("b", 20),
                &mutation(Op::Insert, "a", b"x")
            )),
            Err(MvccError::KeyIsLocked(_))
        ));
        put_committed(&mut store, "b", b"v", 21, 22);
        assert!(matches!(
            run(&mut store, 30, |txn| prewrite(
                txn,
                &props("b", 30),
                &mutation(Op::Insert, "b", b"x")
            )),
            Err(MvccError::AlreadyExist { .. })
        ));
        assert!(matches!(
            run(&mut store, 30, |txn| prewrite(
                txn,
                &props("b", 30),
                &mutation(Op::CheckNotExists, "b", b"")
            )),
            Err(MvccError::AlreadyExist { .. })
        ));
        // Our own rollback at start ts.
        run(&mut store, 40, |txn| {
            super::super::check_txn_status_missing_lock(
                txn,
                &key("c"),
                40,
                None,
                super::super::MissingLockAction::ProtectedRollback,
                false,
            )
        })
        .unwrap();
        match run(&mut store, 40, |txn| {
            prewrite(txn, &props("c", 40), &mutation(Op::Put, "c", b"x"))
        }) {
            Err(MvccError::WriteConflict { reason, .. }) => {
                assert_eq!(reason, kvrpcpb::write_conflict::Reason::SelfRolledBack)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn assertions_by_level() {
        let mut store = MvccStore::default();
        put_committed(&mut store, "a", b"v", 5, 10);
        let mut m = mutation(Op::Put, "a", b"x");
        m.assertion = kvrpcpb::Assertion::NotExist;
        let mut p = props("a", 20);
        p.assertion_level = kvrpcpb::AssertionLevel::Strict;
        match run(&mut store, 20, |txn| prewrite(txn, &p, &m)) {
            Err(MvccError::AssertionFailed {
                existing_start_ts: 5,
                existing_commit_ts: 10,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // Off: no check.
        p.assertion_level = kvrpcpb::AssertionLevel::Off;
        run(&mut store, 20, |txn| prewrite(txn, &p, &m)).unwrap();
        // Fast with constraint check skipped: the write is not loaded, no check.
        let mut m2 = mutation(Op::Put, "b", b"x");
        m2.assertion = kvrpcpb::Assertion::Exist;
        let mut p2 = props("b", 20);
        p2.assertion_level = kvrpcpb::AssertionLevel::Fast;
        p2.skip_constraint_check = true;
        run(&mut store, 20, |txn| prewrite(txn, &p2, &m2)).unwrap();
        p2.skip_constraint_check = false;
        let mut m3 = mutation(Op::Put, "c", b"x");
        m3.assertion = kvrpcpb::Assertion::Exist;
        assert!(matches!(
            run(&mut store, 20, |txn| prewrite(txn, &p2, &m3)),
            Err(MvccError::AssertionFailed {
                existing_commit_ts: 0,
                ..
            })
        ));
    }

    #[test]
    fn async_commit_min_commit_ts_and_fallback() {
        let mut store = MvccStore::default();
        let mut p = props("a", 10);
        p.kind = CommitKind::Async { max_commit_ts: 0 };
        p.max_ts = 50;
        p.secondaries = vec![key("b").raw];
        let out = run(&mut store, 10, |txn| {
            let a = prewrite(txn, &p, &mutation(Op::Put, "a", b"v"))?;
            let b = prewrite(txn, &p, &mutation(Op::Put, "b", b"v"))?;
            Ok((a, b))
        })
        .unwrap();
        assert_eq!(out.0, Prewritten::Locked { min_commit_ts: 51 });
        let la = store.lock(&key("a").enc).unwrap();
        assert!(la.use_async_commit && la.secondaries == vec![key("b").raw]);
        let lb = store.lock(&key("b").enc).unwrap();
        assert!(lb.use_async_commit && lb.secondaries.is_empty());
        // A retry reports the stored min_commit_ts.
        assert_eq!(
            run(&mut store, 10, |txn| prewrite(
                txn,
                &p,
                &mutation(Op::Put, "a", b"v")
            )),
            Ok(Prewritten::Locked { min_commit_ts: 51 })
        );
        p.kind = CommitKind::Async { max_commit_ts: 40 };
        assert_eq!(
            run(&mut store, 10, |txn| prewrite(
                txn,
                &p,
                &mutation(Op::Put, "c", b"v")
            )),
            Err(MvccError::CommitTsTooLarge { min_commit_ts: 51 })
        );
    }

    fn pessimistic_lock(store: &mut MvccStore, k: &str, start_ts: u64, for_update_ts: u64) {
        let mut l = Lock::new(LockType::Pessimistic, key(k).raw, start_ts, 100);
        l.for_update_ts = for_update_ts;
        let mut b = crate::mvcc::WriteBatch::default();
        b.put_lock(key(k).enc, l);
        b.apply(store);
    }

    fn pprops(primary: &str, start_ts: u64, for_update_ts: u64) -> PrewriteProps {
        PrewriteProps {
            for_update_ts,
            ..props(primary, start_ts)
        }
    }

    fn pmutation(k: &str, action: PessimisticAction) -> Mutation {
        Mutation {
            pessimistic_action: action,
            ..mutation(Op::Put, k, b"v")
        }
    }

    #[test]
    fn pessimistic_prewrite_replaces_own_lock() {
        let mut store = MvccStore::default();
        pessimistic_lock(&mut store, "a", 10, 15);
        let p = pprops("a", 10, 20);
        run(&mut store, 10, |txn| {
            prewrite(
                txn,
                &p,
                &pmutation("a", PessimisticAction::DoPessimisticCheck),
            )
        })
        .unwrap();
        let l = store.lock(&key("a").enc).unwrap();
        assert_eq!(
            (l.lock_type, l.for_update_ts, l.ttl),
            (LockType::Put, 20, 3000)
        );
        // An optimistic prewrite may not replace a pessimistic lock.
        pessimistic_lock(&mut store, "b", 10, 15);
        assert!(matches!(
            run(&mut store, 10, |txn| prewrite(
                txn,
                &props("a", 10),
                &mutation(Op::Put, "b", b"v")
            )),
            Err(MvccError::Abort(_))
        ));
        // The for_update_ts constraint must match.
        let mut m = pmutation("b", PessimisticAction::DoPessimisticCheck);
        m.expected_for_update_ts = Some(16);
        assert!(matches!(
            run(&mut store, 10, |txn| prewrite(txn, &p, &m)),
            Err(MvccError::PessimisticLockNotFound {
                reason: "LockForUpdateTsMismatch",
                ..
            })
        ));
    }

    #[test]
    fn pessimistic_prewrite_lock_checks() {
        let mut store = MvccStore::default();
        pessimistic_lock(&mut store, "a", 5, 5);
        let p = pprops("a", 10, 20);
        assert!(matches!(
            run(&mut store, 10, |txn| prewrite(
                txn,
                &p,
                &pmutation("a", PessimisticAction::DoPessimisticCheck)
            )),
            Err(MvccError::PessimisticLockNotFound {
                reason: "LockTsMismatch",
                ..
            })
        ));
        match run(&mut store, 10, |txn| {
            prewrite(
                txn,
                &p,
                &pmutation("a", PessimisticAction::SkipPessimisticCheck),
            )
        }) {
            Err(MvccError::KeyIsLocked(info)) => assert_eq!(info.lock_ttl, 0),
            other => panic!("{other:?}"),
        }
        // Missing lock: amended unless something committed after start.
        run(&mut store, 10, |txn| {
            prewrite(
                txn,
                &p,
                &pmutation("b", PessimisticAction::DoPessimisticCheck),
            )
        })
        .unwrap();
        put_committed(&mut store, "c", b"v", 11, 12);
        assert!(matches!(
            run(&mut store, 10, |txn| prewrite(
                txn,
                &p,
                &pmutation("c", PessimisticAction::DoPessimisticCheck)
            )),
            Err(MvccError::PessimisticLockNotFound {
                reason: "LockMissingAmendFail",
                ..
            })
        ));
        // Lazy uniqueness check: a commit after start is a conflict.
        assert!(matches!(
            run(&mut store, 10, |txn| prewrite(
                txn,
                &p,
                &pmutation("c", PessimisticAction::DoConstraintCheck)
            )),
            Err(MvccError::WriteConflict {
                reason: kvrpcpb::write_conflict::Reason::LazyUniquenessCheck,
                ..
            })
        ));
        // A retried skip-check prewrite checks against for_update_ts: a commit after it that
        // is not a rollback means the lock was lost.
        put_committed(&mut store, "d", b"v", 21, 25);
        let mut retry = p.clone();
        retry.is_retry_request = true;
        assert!(matches!(
            run(&mut store, 10, |txn| prewrite(
                txn,
                &retry,
                &pmutation("d", PessimisticAction::SkipPessimisticCheck)
            )),
            Err(MvccError::PessimisticLockNotFound {
                reason: "NonLockKeyConflict",
                ..
            })
        ));
        // Without the retry flag the check is skipped.
        run(&mut store, 10, |txn| {
            prewrite(
                txn,
                &p,
                &pmutation("d", PessimisticAction::SkipPessimisticCheck),
            )
        })
        .unwrap();
    }

    // ----- pipelined DML flushes (ported from TiKV's commands/flush.rs tests) ----------------

    fn flush_props(primary: &str, start_ts: u64, generation: u64) -> PrewriteProps {
        PrewriteProps {
            generation,
            txn_size: u64::MAX,
            min_commit_ts: start_ts + 1,
            ..props(primary, start_ts)
        }
    }

    fn flush(
        store: &mut MvccStore,
        m: &Mutation,
        primary: &str,
        start_ts: u64,
        generation: u64,
    ) -> Result<Prewritten, MvccError> {
        run(store, start_ts, |txn| {
            prewrite(txn, &flush_props(primary, start_ts, generation), m)
        })
    }

    fn commit_at(store: &mut MvccStore, k: &str, start: u64, commit: u64) {
        run(store, start, |txn| {
            super::super::commit::commit(txn, &key(k), start, commit)
        })
        .unwrap();
    }

    #[test]
    fn flushed_lock_carries_generation_and_commits() {
        let mut store = MvccStore::default();
        flush(&mut store, &mutation(Op::Put, "k", b"v"), "k", 1, 1).unwrap();
        let l = store.lock(&key("k").enc).unwrap();
        assert_eq!(
            (l.generation, l.min_commit_ts, l.txn_size, l.for_update_ts),
            (1, 2, u64::MAX, 0)
        );
        commit_at(&mut store, "k", 1, 2);
        assert_eq!(store.get(&key("k").enc, 2).unwrap().0.as_ref(), b"v");
    }

    #[test]
    fn flush_and_other_writers_block_each_other() {
        use super::super::acquire_pessimistic_lock::{LockProps, acquire_pessimistic_lock};
        let mut store = MvccStore::default();
        let m = mutation(Op::Put, "k1", b"v");
        // Flush, then another flush, pessimistic lock and prewrite of a later transaction.
        flush(&mut store, &m, "k1", 1, 1).unwrap();
        assert!(matches!(
            flush(&mut store, &m, "k1", 2, 2),
            Err(MvccError::KeyIsLocked(_))
        ));
        let lock_props = LockProps {
            primary: key("k1").raw,
            start_ts: 2,
            lock_ttl: 3000,
            for_update_ts: 2,
            need_value: false,
            need_check_existence: false,
            min_commit_ts: 0,
            lock_only_if_exists: false,
            allow_lock_with_conflict: false,
        };
        assert!(matches!(
            run(&mut store, 2, |txn| acquire_pessimistic_lock(
                txn,
                &key("k1"),
                &lock_props,
                false
            )),
            Err(MvccError::KeyIsLocked(_))
        ));
        assert!(matches!(
            run(&mut store, 2, |txn| prewrite(txn, &props("k1", 2), &m)),
            Err(MvccError::KeyIsLocked(_))
        ));
        // A pessimistic lock, then a flush of another transaction.
        let lock_props = LockProps {
            primary: key("k2").raw,
            start_ts: 1,
            for_update_ts: 1,
            ..lock_props
        };
        run(&mut store, 1, |txn| {
            acquire_pessimistic_lock(txn, &key("k2"), &lock_props, false)
        })
        .unwrap();
        assert!(matches!(
            flush(&mut store, &mutation(Op::Put, "k2", b"v"), "k2", 2, 3),
            Err(MvccError::KeyIsLocked(_))
        ));
        // A prewrite, then a flush of another transaction.
        run(&mut store, 1, |txn| {
            prewrite(txn, &props("k3", 1), &mutation(Op::Put, "k3", b"v"))
        })
        .unwrap();
        assert!(matches!(
            flush(&mut store, &mutation(Op::Put, "k3", b"v"), "k3", 2, 4),
            Err(MvccError::KeyIsLocked(_))
        ));
    }

    #[test]
    fn newer_generation_overwrites_the_lock() {
        let mut store = MvccStore::default();
        flush(&mut store, &mutation(Op::Put, "k", &[7; 300]), "k", 1, 1).unwrap();
        assert!(store.lock(&key("k").enc).unwrap().short_value.is_none());
        flush(&mut store, &mutation(Op::Put, "k", b"v2"), "k", 1, 2).unwrap();
        let l = store.lock(&key("k").enc).unwrap();
        assert_eq!(
            (l.generation, l.short_value.as_deref()),
            (2, Some(&b"v2"[..]))
        );
        commit_at(&mut store, "k", 1, 2);
        assert_eq!(store.get(&key("k").enc, 3).unwrap().0.as_ref(), b"v2");
    }

    #[test]
    fn older_or_equal_generation_is_out_of_order() {
        let mut store = MvccStore::default();
        flush(&mut store, &mutation(Op::Put, "k", b"v"), "k", 1, 2).unwrap();
        for generation in [1, 2] {
            assert_eq!(
                flush(
                    &mut store,
                    &mutation(Op::Put, "k", b"v2"),
                    "k",
                    1,
                    generation
                ),
                Err(MvccError::GenerationOutOfOrder {
                    generation,
                    lock_generation: 2
                })
            );
        }
        commit_at(&mut store, "k", 1, 2);
        assert_eq!(store.get(&key("k").enc, 3).unwrap().0.as_ref(), b"v");
    }

    #[test]
    fn insert_after_a_flushed_put_already_exists() {
        let mut store = MvccStore::default();
        flush(&mut store, &mutation(Op::Put, "k", b"v"), "k", 1, 1).unwrap();
        assert!(matches!(
            flush(&mut store, &mutation(Op::Insert, "k", b"v"), "k", 1, 2),
            Err(MvccError::AlreadyExist { .. })
        ));
        commit_at(&mut store, "k", 1, 2);
        assert!(matches!(
            flush(&mut store, &mutation(Op::Insert, "k", b"v"), "k", 3, 1),
            Err(MvccError::AlreadyExist { .. })
        ));
        // A flushed Delete does not make the key exist.
        flush(&mut store, &mutation(Op::Del, "d", b""), "d", 4, 1).unwrap();
        flush(&mut store, &mutation(Op::Insert, "d", b"v"), "d", 4, 2).unwrap();
    }

    #[test]
    fn only_the_first_flush_of_a_key_is_asserted() {
        let mut store = MvccStore::default();
        let assert_flush = |store: &mut MvccStore, v: &[u8], g, assertion| {
            let mut m = mutation(Op::Put, "k", v);
            m.assertion = assertion;
            let mut p = flush_props("k", 1, g);
            p.assertion_level = kvrpcpb::AssertionLevel::Strict;
            run(store, 1, |txn| prewrite(txn, &p, &m))
        };
        assert_flush(&mut store, b"v", 1, kvrpcpb::Assertion::NotExist).unwrap();
        // The key does not exist yet, but a later flush's assertion is not checked.
        assert_flush(&mut store, b"v2", 2, kvrpcpb::Assertion::Exist).unwrap();
        commit_at(&mut store, "k", 1, 2);
        assert_eq!(store.get(&key("k").enc, 3).unwrap().0.as_ref(), b"v2");
        // A first flush is asserted.
        let mut m = mutation(Op::Put, "j", b"v");
        m.assertion = kvrpcpb::Assertion::Exist;
        let mut p = flush_props("j", 5, 1);
        p.assertion_level = kvrpcpb::AssertionLevel::Strict;
        assert!(matches!(
            run(&mut store, 5, |txn| prewrite(txn, &p, &m)),
            Err(MvccError::AssertionFailed { .. })
        ));
    }

    #[test]
    fn flush_over_own_pessimistic_lock_is_a_type_mismatch() {
        let mut store = MvccStore::default();
        pessimistic_lock(&mut store, "k", 1, 1);
        assert!(matches!(
            flush(&mut store, &mutation(Op::Put, "k", b"v"), "k", 1, 1),
            Err(MvccError::Abort(text)) if text.starts_with("LockTypeNotMatch")
        ));
    }

    // ----- scenarios of TiKV's actions/prewrite.rs tests --------------------------------------

    fn put_write(store: &mut MvccStore, k: &str, commit_ts: u64, w: Write) {
        let mut b = crate::mvcc::WriteBatch::default();
        b.put_write(key(k).enc, commit_ts, w);
        b.apply(store);
    }

    fn fenced(start_ts: u64, v: &str, fence: u64) -> Write {
        let mut w = Write::new(WriteType::Put, start_ts, Some(key(v).raw));
        w.gc_fence = Some(fence);
        w
    }

    /// TiKV `test_prewrite_check_gc_fence`: a version whose GC fence is at or below the
    /// prewrite's start ts was deleted by GC as far as existence checks go; a fence of 0 (no
    /// newer version) keeps it.
    #[test]
    fn existence_checks_respect_gc_fences() {
        let mut store = MvccStore::default();
        put_write(&mut store, "k1", 30, fenced(10, "v1", 40));
        put_write(&mut store, "k2", 30, fenced(11, "v2", 0));
        put_write(&mut store, "k3", 30, fenced(12, "v3", 40));
        put_write(&mut store, "k3", 38, Write::new(WriteType::Lock, 37, None));
        put_write(&mut store, "k3", 43, Write::new(WriteType::Lock, 42, None));
        put_write(&mut store, "k4", 30, fenced(13, "v4", 0));
        put_write(&mut store, "k4", 38, Write::new(WriteType::Lock, 37, None));
        put_write(&mut store, "k4", 43, Write::new(WriteType::Lock, 42, None));
        put_write(&mut store, "k5", 20, fenced(14, "v5", 30));
        put_write(&mut store, "k5", 30, fenced(21, "v5x", 40));
        put_write(&mut store, "k6", 20, fenced(15, "v6", 30));
        put_write(&mut store, "k6", 30, fenced(22, "v6x", 0));
        put_write(&mut store, "k7", 30, fenced(16, "v7", 40));
        put_write(&mut store, "k7", 38, Write::new(WriteType::Lock, 37, None));
        let cases = [
            ("k1", true),
            ("k2", false),
            ("k3", true),
            ("k4", false),
            ("k5", true),
            ("k6", false),
            ("k7", true),
        ];
        for (k, absent) in cases {
            for op in [Op::CheckNotExists, Op::Insert] {
                let out = {
                    let mut txn = Txn::new(&store, 50);
                    prewrite(&mut txn, &props("k1", 50), &mutation(op, k, b"value"))
                };
                assert_eq!(out.is_ok(), absent, "{k} {op:?}: {out:?}");
                if !absent {
                    assert!(matches!(out, Err(MvccError::AlreadyExist { .. })));
                }
            }
        }
    }

    /// TiKV `test_resend_prewrite_non_pessimistic_lock`: a retried pessimistic prewrite of a
    /// key that had no pessimistic lock checks for newer writes (after its for_update_ts); a
    /// first attempt does not.
    #[test]
    fn retried_skip_check_prewrite_meets_its_own_commit() {
        let mut store = MvccStore::default();
        pessimistic_lock(&mut store, "k1", 10, 10);
        let mut p = pprops("k1", 10, 10);
        p.kind = CommitKind::Async { max_commit_ts: 0 };
        p.secondaries = vec![key("k2").raw];
        run(&mut store, 10, |txn| {
            prewrite(
                txn,
                &p,
                &pmutation("k1", PessimisticAction::DoPessimisticCheck),
            )?;
            prewrite(
                txn,
                &p,
                &pmutation("k2", PessimisticAction::SkipPessimisticCheck),
            )
        })
        .unwrap();
        commit_at(&mut store, "k1", 10, 20);
        commit_at(&mut store, "k2", 10, 20);
        let mut retry = pprops("k1", 10, 10);
        retry.is_retry_request = true;
        let retried = |store: &mut MvccStore, p: &PrewriteProps| {
            run(store, p.start_ts, |txn| {
                prewrite(
                    txn,
                    p,
                    &pmutation("k2", PessimisticAction::SkipPessimisticCheck),
                )
            })
        };
        assert!(matches!(
            retried(&mut store, &retry),
            Err(MvccError::PessimisticLockNotFound {
                reason: "NonLockKeyConflict",
                ..
            })
        ));
        assert!(store.lock(&key("k2").enc).is_none());
        // Another transaction's retry conflicts the same way.
        let mut other = pprops("k1", 11, 11);
        other.is_retry_request = true;
        assert!(retried(&mut store, &other).is_err());
        // A first attempt is not checked and locks the key.
        let first = pprops("k1", 12, 12);
        retried(&mut store, &first).unwrap();
        assert_eq!(store.lock(&key("k2").enc).unwrap().ts, 12);
        // The check is against for_update_ts: a retry whose for_update_ts is past every write
        // passes.
        let mut late = pprops("k1", 13, 55);
        late.is_retry_request = true;
        store.locks.clear();
        retried(&mut store, &late).unwrap();
    }

    /// TiKV `test_async_commit_prewrite_min_commit_ts`: a CheckNotExists of an async-commit
    /// prewrite contributes `max(min_commit_ts, start_ts + 1)` without consulting max_ts;
    /// written keys take `max(max_ts, start_ts, for_update_ts) + 1` and the lock's own.
    #[test]
    fn async_commit_min_commit_ts_sources() {
        let mut store = MvccStore::default();
        let mut p = props("k0", 10);
        p.kind = CommitKind::Async { max_commit_ts: 50 };
        p.max_ts = 41;
        p.min_commit_ts = 11;
        let out = run(&mut store, 10, |txn| {
            prewrite(txn, &p, &mutation(Op::CheckNotExists, "k0", b""))
        })
        .unwrap();
        assert_eq!(out, Prewritten::Locked { min_commit_ts: 11 });
        assert!(store.locks.is_empty());
        let out = run(&mut store, 10, |txn| {
            prewrite(txn, &p, &mutation(Op::Put, "k1", b"v"))
        })
        .unwrap();
        assert_eq!(out, Prewritten::Locked { min_commit_ts: 42 });
        // The request's min_commit_ts wins when it is larger.
        p.min_commit_ts = 45;
        let out = run(&mut store, 10, |txn| {
            prewrite(txn, &p, &mutation(Op::Put, "k2", b"v"))
        })
        .unwrap();
        assert_eq!(out, Prewritten::Locked { min_commit_ts: 45 });
        // A pessimistic transaction's for_update_ts counts too.
        let mut pp = pprops("k3", 10, 60);
        pp.kind = CommitKind::OnePc { max_commit_ts: 0 };
        pp.max_ts = 41;
        pessimistic_lock(&mut store, "k3", 10, 60);
        let out = run(&mut store, 10, |txn| {
            prewrite(
                txn,
                &pp,
                &pmutation("k3", PessimisticAction::DoPessimisticCheck),
            )
        })
        .unwrap();
        assert!(matches!(
            out,
            Prewritten::OnePc {
                min_commit_ts: 61,
                ..
            }
        ));
    }
}
