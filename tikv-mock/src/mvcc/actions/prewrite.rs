//! Prewrite of one mutation (TiKV `src/storage/txn/actions/prewrite.rs`), for optimistic and
//! pessimistic transactions: lock check (including the pessimistic lock the key should hold),
//! write-conflict and existence constraint, assertions, then the lock (or, for one-phase commit,
//! the lock handed back to the command to be committed at once).
//!
//! Who calls it: `txn::write::kv_prewrite`, once per mutation, in request order.

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use kvrpcpb::prewrite_request::PessimisticAction;

use super::{Key, MvccError, check_data_constraint};
use crate::mvcc::{Lock, LockType, SHORT_VALUE_MAX_LEN, Txn, Write, WriteType};

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
        kvrpcpb::Op::Lock => Some(LockType::Lock),
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
    match txn.lock(&m.key.enc) {
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
            // A retried prewrite: the lock is already there.
            let min_commit_ts = if lock.use_async_commit {
                lock.min_commit_ts
            } else {
                0
            };
            return Ok(Prewritten::Locked { min_commit_ts });
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

    // Assertions: level Fast checks only a write already loaded, Strict always loads it.
    let level = props.assertion_level;
    if m.assertion != kvrpcpb::Assertion::None
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
}
