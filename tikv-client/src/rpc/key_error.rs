//! TiKV key errors (`kvrpcpb.KeyError`), classified into [`KeyErr`] inside the crate and turned
//! into the public [`Error`] only at the API edge ([`KeyErr::into_error`], the one place that
//! knows the public variants).
//!
//! Who calls it: the raw client (a key error in a raw answer), and the transactional layers as
//! they land: the lock resolver reads the whole [`Lock`] (type, TTL, primary, min commit ts,
//! async-commit secondaries, txn-file flag), which the public `Error::Locked` summarises.
//!
//! Ports client-go `error/error.go` (`ExtractKeyErr`, its order of checks) and the
//! `txnlock.Lock` built from `kvrpcpb.LockInfo` (`txnkv/txnlock/lock.go`, `NewLock`).

use std::fmt;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::error::{
    Assertion, AssertionFailed, Deadlock, LockedKey, WaitForEntry, WriteConflict,
    WriteConflictReason,
};
use crate::{Error, Key};

/// A lock held by a transaction, with everything TiKV told about it (`kvrpcpb.LockInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Lock {
    pub(crate) key: Bytes,
    pub(crate) primary: Bytes,
    /// Start ts of the lock's transaction (`lock_version`).
    pub(crate) start_ts: u64,
    pub(crate) ttl_ms: u64,
    pub(crate) txn_size: u64,
    /// `kvrpcpb.Op` of the lock (Put, Del, Lock, PessimisticLock, SharedLock...).
    pub(crate) lock_type: i32,
    pub(crate) for_update_ts: u64,
    pub(crate) use_async_commit: bool,
    pub(crate) min_commit_ts: u64,
    /// The async-commit transaction's secondary keys, for its resolution.
    pub(crate) secondaries: Vec<Bytes>,
    pub(crate) duration_to_last_update_ms: u64,
    /// The shared locks a shared-lock wrapper holds.
    pub(crate) shared_locks: Vec<Lock>,
    /// The lock belongs to a pipelined (txn-file) transaction.
    pub(crate) is_txn_file: bool,
}

impl From<kvrpcpb::LockInfo> for Lock {
    fn from(l: kvrpcpb::LockInfo) -> Lock {
        Lock {
            key: l.key,
            primary: l.primary_lock,
            start_ts: l.lock_version,
            ttl_ms: l.lock_ttl,
            txn_size: l.txn_size,
            lock_type: l.lock_type,
            for_update_ts: l.lock_for_update_ts,
            use_async_commit: l.use_async_commit,
            min_commit_ts: l.min_commit_ts,
            secondaries: l.secondaries,
            duration_to_last_update_ms: l.duration_to_last_update_ms,
            shared_locks: l.shared_lock_infos.into_iter().map(Lock::from).collect(),
            is_txn_file: l.is_txn_file,
        }
    }
}

impl fmt::Display for Lock {
    /// Every field, for the logs of whoever meets the lock.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = kvrpcpb::Op::try_from(self.lock_type)
            .map_or_else(|_| format!("op {}", self.lock_type), |op| format!("{op:?}"));
        write!(
            f,
            "lock on {:?} by txn {} ({op}, primary {:?}, ttl {} ms, txn size {}, \
             for_update_ts {}, min_commit_ts {}, async commit {} with {} secondaries, \
             txn file {}, updated {} ms ago, {} shared locks)",
            self.key,
            self.start_ts,
            self.primary,
            self.ttl_ms,
            self.txn_size,
            self.for_update_ts,
            self.min_commit_ts,
            self.use_async_commit,
            self.secondaries.len(),
            self.is_txn_file,
            self.duration_to_last_update_ms,
            self.shared_locks.len(),
        )
    }
}

impl Lock {
    /// The public summary of the lock.
    fn to_locked_key(&self) -> LockedKey {
        LockedKey {
            key: Key::from(self.key.clone()),
            primary: Key::from(self.primary.clone()),
            lock_ts: self.start_ts.into(),
            ttl_ms: self.ttl_ms,
            txn_size: self.txn_size,
            min_commit_ts: self.min_commit_ts.into(),
            for_update_ts: self.for_update_ts.into(),
            use_async_commit: self.use_async_commit,
        }
    }
}

/// A key error, classified. Payloads stay as TiKV sent them (they are crate-internal); locks are
/// kept whole as [`Lock`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KeyErr {
    Conflict(Box<kvrpcpb::WriteConflict>),
    Retryable(String),
    AssertionFailed(Box<kvrpcpb::AssertionFailed>),
    Abort(String),
    CommitTsTooLarge {
        commit_ts: u64,
    },
    TxnNotFound {
        start_ts: u64,
        primary_key: Bytes,
    },
    Locked(Box<Lock>),
    AlreadyExist {
        key: Bytes,
    },
    Deadlock(Box<kvrpcpb::Deadlock>),
    CommitTsExpired(Box<kvrpcpb::CommitTsExpired>),
    TxnLockNotFound {
        key: Bytes,
    },
    /// The lock TiKV found on the key names another primary.
    PrimaryMismatch(Box<Lock>),
    LockUpgradeConflict(Box<kvrpcpb::LockUpgradeConflict>),
    SharedLockLost {
        key: Bytes,
        start_ts: u64,
    },
    /// No detail field was set.
    Unknown,
}

impl From<kvrpcpb::KeyError> for KeyErr {
    /// When several fields are set (TiKV sets one), the first of client-go's `ExtractKeyErr`
    /// order wins: conflict, retryable, assertion, abort, commit ts too large, txn not found;
    /// then the kinds client-go handles at its call sites, in field order.
    fn from(err: kvrpcpb::KeyError) -> KeyErr {
        if let Some(c) = err.conflict {
            return KeyErr::Conflict(Box::new(c));
        }
        if !err.retryable.is_empty() {
            return KeyErr::Retryable(err.retryable);
        }
        if let Some(a) = err.assertion_failed {
            return KeyErr::AssertionFailed(Box::new(a));
        }
        if !err.abort.is_empty() {
            return KeyErr::Abort(err.abort);
        }
        if let Some(c) = err.commit_ts_too_large {
            return KeyErr::CommitTsTooLarge {
                commit_ts: c.commit_ts,
            };
        }
        if let Some(t) = err.txn_not_found {
            return KeyErr::TxnNotFound {
                start_ts: t.start_ts,
                primary_key: t.primary_key,
            };
        }
        if let Some(l) = err.locked {
            return KeyErr::Locked(Box::new(Lock::from(l)));
        }
        if let Some(e) = err.already_exist {
            return KeyErr::AlreadyExist { key: e.key };
        }
        if let Some(d) = err.deadlock {
            return KeyErr::Deadlock(Box::new(d));
        }
        if let Some(c) = err.commit_ts_expired {
            return KeyErr::CommitTsExpired(Box::new(c));
        }
        if let Some(t) = err.txn_lock_not_found {
            return KeyErr::TxnLockNotFound { key: t.key };
        }
        if let Some(p) = err.primary_mismatch {
            return KeyErr::PrimaryMismatch(Box::new(Lock::from(p.lock_info.unwrap_or_default())));
        }
        if let Some(c) = err.lock_upgrade_conflict {
            return KeyErr::LockUpgradeConflict(Box::new(c));
        }
        if let Some(s) = err.shared_lock_lost {
            return KeyErr::SharedLockLost {
                key: s.key,
                start_ts: s.start_ts,
            };
        }
        KeyErr::Unknown
    }
}

impl KeyErr {
    /// The public error for this key error: the only conversion from the internal
    /// classification to [`Error`], applied where an error leaves the crate.
    pub(crate) fn into_error(self) -> Error {
        match self {
            KeyErr::Conflict(c) => Error::WriteConflict(Box::new(WriteConflict {
                start_ts: c.start_ts.into(),
                conflict_ts: c.conflict_ts.into(),
                conflict_commit_ts: c.conflict_commit_ts.into(),
                key: c.key.into(),
                primary: c.primary.into(),
                reason: WriteConflictReason::from_proto(c.reason),
            })),
            KeyErr::Retryable(message) => Error::Retryable { message },
            KeyErr::AssertionFailed(a) => {
                let assertion = match kvrpcpb::Assertion::try_from(a.assertion) {
                    Ok(kvrpcpb::Assertion::Exist) => Assertion::Exist,
                    Ok(kvrpcpb::Assertion::NotExist) => Assertion::NotExist,
                    _ => Assertion::None,
                };
                Error::AssertionFailed(Box::new(AssertionFailed {
                    start_ts: a.start_ts.into(),
                    key: a.key.into(),
                    assertion,
                    existing_start_ts: a.existing_start_ts.into(),
                    existing_commit_ts: a.existing_commit_ts.into(),
                }))
            }
            KeyErr::Abort(message) => Error::TxnAborted { message },
            KeyErr::CommitTsTooLarge { commit_ts } => Error::CommitTsTooLarge {
                commit_ts: commit_ts.into(),
            },
            KeyErr::TxnNotFound {
                start_ts,
                primary_key,
            } => Error::TxnNotFound {
                start_ts: start_ts.into(),
                primary_key: primary_key.into(),
            },
            KeyErr::Locked(lock) => {
                tracing::debug!(%lock, "key error: locked");
                Error::Locked(Box::new(lock.to_locked_key()))
            }
            KeyErr::AlreadyExist { key } => Error::KeyExists { key: key.into() },
            KeyErr::Deadlock(d) => {
                let d = *d;
                Error::Deadlock(Box::new(Deadlock {
                    lock_ts: d.lock_ts.into(),
                    lock_key: d.lock_key.into(),
                    deadlock_key_hash: d.deadlock_key_hash,
                    deadlock_key: d.deadlock_key.into(),
                    wait_chain: d
                        .wait_chain
                        .into_iter()
                        .map(|w| WaitForEntry {
                            txn: w.txn.into(),
                            wait_for_txn: w.wait_for_txn.into(),
                            key_hash: w.key_hash,
                            key: w.key.into(),
                            wait_time_ms: w.wait_time,
                        })
                        .collect(),
                    is_retryable: false,
                }))
            }
            KeyErr::CommitTsExpired(c) => Error::CommitTsExpired {
                start_ts: c.start_ts.into(),
                attempted_commit_ts: c.attempted_commit_ts.into(),
                key: c.key.into(),
                min_commit_ts: c.min_commit_ts.into(),
            },
            KeyErr::TxnLockNotFound { key } => Error::TxnLockNotFound { key: key.into() },
            KeyErr::PrimaryMismatch(lock) => {
                tracing::debug!(%lock, "key error: primary mismatch");
                Error::PrimaryMismatch {
                    start_ts: lock.start_ts.into(),
                    key: lock.key.into(),
                }
            }
            KeyErr::LockUpgradeConflict(c) => Error::LockUpgradeConflict {
                key: c.key.into(),
                start_ts: c.start_ts.into(),
                owner_start_ts: c.owner_start_ts.into(),
            },
            KeyErr::SharedLockLost { key, start_ts } => Error::SharedLockLost {
                key: key.into(),
                start_ts: start_ts.into(),
            },
            // TiKV's answer, not a broken invariant of ours: a newer TiKV may set a field this
            // client does not know (client-go reports it as an unexpected key error).
            KeyErr::Unknown => Error::Server {
                message: "TiKV answered a key error with no field this client knows".to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn key_error() -> kvrpcpb::KeyError {
        kvrpcpb::KeyError::default()
    }

    /// The public error for a key error, as the API edge builds it.
    fn public(err: kvrpcpb::KeyError) -> Error {
        KeyErr::from(err).into_error()
    }

    fn full_lock_info() -> kvrpcpb::LockInfo {
        kvrpcpb::LockInfo {
            primary_lock: Bytes::from_static(b"p"),
            lock_version: 10,
            key: Bytes::from_static(b"k"),
            lock_ttl: 3000,
            txn_size: 7,
            lock_type: kvrpcpb::Op::PessimisticLock as i32,
            lock_for_update_ts: 12,
            use_async_commit: true,
            min_commit_ts: 13,
            secondaries: vec![Bytes::from_static(b"s1"), Bytes::from_static(b"s2")],
            duration_to_last_update_ms: 44,
            shared_lock_infos: vec![kvrpcpb::LockInfo {
                lock_version: 9,
                key: Bytes::from_static(b"k"),
                ..Default::default()
            }],
            is_txn_file: true,
        }
    }

    #[test]
    fn a_lock_keeps_every_lock_info_field() {
        let info = full_lock_info();
        let KeyErr::Locked(lock) = KeyErr::from(kvrpcpb::KeyError {
            locked: Some(info.clone()),
            ..key_error()
        }) else {
            panic!("not classified as locked")
        };
        // Destructured without `..`: a field added to Lock must be checked here too.
        let Lock {
            key,
            primary,
            start_ts,
            ttl_ms,
            txn_size,
            lock_type,
            for_update_ts,
            use_async_commit,
            min_commit_ts,
            secondaries,
            duration_to_last_update_ms,
            shared_locks,
            is_txn_file,
        } = *lock.clone();
        assert_eq!(key, info.key);
        assert_eq!(primary, info.primary_lock);
        assert_eq!(start_ts, info.lock_version);
        assert_eq!(ttl_ms, info.lock_ttl);
        assert_eq!(txn_size, info.txn_size);
        assert_eq!(lock_type, kvrpcpb::Op::PessimisticLock as i32);
        assert_eq!(for_update_ts, info.lock_for_update_ts);
        assert!(use_async_commit);
        assert_eq!(min_commit_ts, info.min_commit_ts);
        assert_eq!(secondaries, info.secondaries);
        assert_eq!(duration_to_last_update_ms, 44);
        assert_eq!(shared_locks.len(), 1);
        assert_eq!(shared_locks[0].start_ts, 9);
        assert!(is_txn_file);
        let shown = lock.to_string();
        assert!(shown.contains("PessimisticLock") && shown.contains("2 secondaries"));

        // The public summary.
        let Error::Locked(locked) = KeyErr::Locked(lock).into_error() else {
            panic!("not a public Locked")
        };
        assert_eq!(locked.lock_ts, crate::Timestamp::from_version(10));
        assert_eq!(locked.primary, Key::from(b"p".to_vec()));
        assert_eq!(locked.ttl_ms, 3000);
        assert_eq!(locked.min_commit_ts, crate::Timestamp::from_version(13));
        assert_eq!(locked.for_update_ts, crate::Timestamp::from_version(12));
        assert!(locked.use_async_commit);
    }

    #[test]
    fn primary_mismatch_keeps_the_lock() {
        let err = KeyErr::from(kvrpcpb::KeyError {
            primary_mismatch: Some(kvrpcpb::PrimaryMismatch {
                lock_info: Some(full_lock_info()),
            }),
            ..key_error()
        });
        let KeyErr::PrimaryMismatch(lock) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(lock.secondaries.len(), 2);
        assert!(matches!(
            err.into_error(),
            Error::PrimaryMismatch { start_ts, .. } if start_ts == crate::Timestamp::from_version(10)
        ));
    }

    #[test]
    fn classification_follows_extract_key_err_order() {
        // Every field set: each step removes the winner and checks the next one wins.
        let mut err = kvrpcpb::KeyError {
            locked: Some(full_lock_info()),
            retryable: "r".to_owned(),
            abort: "a".to_owned(),
            conflict: Some(Default::default()),
            already_exist: Some(Default::default()),
            deadlock: Some(Default::default()),
            commit_ts_expired: Some(Default::default()),
            txn_not_found: Some(Default::default()),
            commit_ts_too_large: Some(Default::default()),
            assertion_failed: Some(Default::default()),
            primary_mismatch: Some(Default::default()),
            txn_lock_not_found: Some(Default::default()),
            lock_upgrade_conflict: Some(Default::default()),
            shared_lock_lost: Some(Default::default()),
            debug_info: None,
        };
        type Step = (fn(&KeyErr) -> bool, fn(&mut kvrpcpb::KeyError));
        let order: Vec<Step> = vec![
            (|e| matches!(e, KeyErr::Conflict(_)), |k| k.conflict = None),
            (
                |e| matches!(e, KeyErr::Retryable(_)),
                |k| k.retryable.clear(),
            ),
            (
                |e| matches!(e, KeyErr::AssertionFailed(_)),
                |k| k.assertion_failed = None,
            ),
            (|e| matches!(e, KeyErr::Abort(_)), |k| k.abort.clear()),
            (
                |e| matches!(e, KeyErr::CommitTsTooLarge { .. }),
                |k| k.commit_ts_too_large = None,
            ),
            (
                |e| matches!(e, KeyErr::TxnNotFound { .. }),
                |k| k.txn_not_found = None,
            ),
            (|e| matches!(e, KeyErr::Locked(_)), |k| k.locked = None),
            (
                |e| matches!(e, KeyErr::AlreadyExist { .. }),
                |k| k.already_exist = None,
            ),
            (|e| matches!(e, KeyErr::Deadlock(_)), |k| k.deadlock = None),
            (
                |e| matches!(e, KeyErr::CommitTsExpired(_)),
                |k| k.commit_ts_expired = None,
            ),
            (
                |e| matches!(e, KeyErr::TxnLockNotFound { .. }),
                |k| k.txn_lock_not_found = None,
            ),
            (
                |e| matches!(e, KeyErr::PrimaryMismatch(_)),
                |k| k.primary_mismatch = None,
            ),
            (
                |e| matches!(e, KeyErr::LockUpgradeConflict(_)),
                |k| k.lock_upgrade_conflict = None,
            ),
            (
                |e| matches!(e, KeyErr::SharedLockLost { .. }),
                |k| k.shared_lock_lost = None,
            ),
            (|e| matches!(e, KeyErr::Unknown), |_| {}),
        ];
        for (i, (is, clear)) in order.into_iter().enumerate() {
            let classified = KeyErr::from(err.clone());
            assert!(is(&classified), "step {i}: {classified:?}");
            clear(&mut err);
        }
    }

    // Moved from error.rs with the classification: the public errors built from key errors.
    #[test]
    fn write_conflict_maps_every_field_and_is_retryable() {
        let err = public(kvrpcpb::KeyError {
            conflict: Some(kvrpcpb::WriteConflict {
                start_ts: 10,
                conflict_ts: 11,
                key: Bytes::from_static(b"k"),
                primary: Bytes::from_static(b"p"),
                conflict_commit_ts: 12,
                reason: kvrpcpb::write_conflict::Reason::PessimisticRetry as i32,
            }),
            // client-go checks the conflict before `retryable`.
            retryable: "also set".to_owned(),
            ..key_error()
        });
        let Error::WriteConflict(wc) = &err else {
            panic!("got {err:?}")
        };
        assert_eq!(wc.start_ts, crate::Timestamp::from_version(10));
        assert_eq!(wc.conflict_ts, crate::Timestamp::from_version(11));
        assert_eq!(wc.conflict_commit_ts, crate::Timestamp::from_version(12));
        assert_eq!(wc.key, Key::from(b"k".to_vec()));
        assert_eq!(wc.primary, Key::from(b"p".to_vec()));
        assert_eq!(wc.reason, WriteConflictReason::PessimisticRetry);
        assert!(err.is_retryable());
        assert!(err.is_write_conflict());
        assert!(!err.is_undetermined());
        assert!(err.to_string().contains("retry the transaction"));
    }

    #[test]
    fn key_error_precedence_follows_client_go() {
        let err = public(kvrpcpb::KeyError {
            retryable: "stale".to_owned(),
            abort: "aborted".to_owned(),
            ..key_error()
        });
        assert!(matches!(err, Error::Retryable { ref message } if message == "stale"));

        let err = public(kvrpcpb::KeyError {
            abort: "aborted".to_owned(),
            txn_not_found: Some(Default::default()),
            ..key_error()
        });
        assert!(matches!(err, Error::TxnAborted { .. }));
        assert!(!err.is_retryable());
    }

    #[test]
    fn every_key_error_kind_is_typed() {
        type Check = fn(&Error) -> bool;
        let cases: Vec<(kvrpcpb::KeyError, Check)> = vec![
            (
                kvrpcpb::KeyError {
                    already_exist: Some(kvrpcpb::AlreadyExist {
                        key: Bytes::from_static(b"a"),
                    }),
                    ..key_error()
                },
                |e| e.is_key_exists(),
            ),
            (
                kvrpcpb::KeyError {
                    locked: Some(Default::default()),
                    ..key_error()
                },
                |e| matches!(e, Error::Locked(_)),
            ),
            (
                kvrpcpb::KeyError {
                    deadlock: Some(Default::default()),
                    ..key_error()
                },
                |e| matches!(e, Error::Deadlock(_)) && !e.is_retryable(),
            ),
            (
                kvrpcpb::KeyError {
                    commit_ts_expired: Some(Default::default()),
                    ..key_error()
                },
                |e| matches!(e, Error::CommitTsExpired { .. }),
            ),
            (
                kvrpcpb::KeyError {
                    txn_not_found: Some(Default::default()),
                    ..key_error()
                },
                |e| matches!(e, Error::TxnNotFound { .. }),
            ),
            (
                kvrpcpb::KeyError {
                    commit_ts_too_large: Some(Default::default()),
                    ..key_error()
                },
                |e| matches!(e, Error::CommitTsTooLarge { .. }),
            ),
            (
                kvrpcpb::KeyError {
                    assertion_failed: Some(Default::default()),
                    ..key_error()
                },
                |e| matches!(e, Error::AssertionFailed(_)),
            ),
            (
                kvrpcpb::KeyError {
                    primary_mismatch: Some(Default::default()),
                    ..key_error()
                },
                |e| matches!(e, Error::PrimaryMismatch { .. }),
            ),
            (
                kvrpcpb::KeyError {
                    txn_lock_not_found: Some(Default::default()),
                    ..key_error()
                },
                |e| matches!(e, Error::TxnLockNotFound { .. }),
            ),
            (
                kvrpcpb::KeyError {
                    lock_upgrade_conflict: Some(Default::default()),
                    ..key_error()
                },
                |e| matches!(e, Error::LockUpgradeConflict { .. }),
            ),
            (
                kvrpcpb::KeyError {
                    shared_lock_lost: Some(Default::default()),
                    ..key_error()
                },
                |e| matches!(e, Error::SharedLockLost { .. }),
            ),
            (key_error(), |e| matches!(e, Error::Server { .. })),
        ];
        for (input, check) in cases {
            let err = public(input.clone());
            assert!(check(&err), "{input:?} mapped to {err:?}");
        }
    }

    #[test]
    fn deadlock_keeps_wait_chain() {
        let err = public(kvrpcpb::KeyError {
            deadlock: Some(kvrpcpb::Deadlock {
                lock_ts: 5,
                lock_key: Bytes::from_static(b"x"),
                deadlock_key_hash: 99,
                wait_chain: vec![tikv_proto::deadlock::WaitForEntry {
                    txn: 5,
                    wait_for_txn: 6,
                    key_hash: 99,
                    key: Bytes::from_static(b"y"),
                    wait_time: 7,
                    ..Default::default()
                }],
                deadlock_key: Bytes::from_static(b"y"),
            }),
            ..key_error()
        });
        let Error::Deadlock(d) = err else { panic!() };
        assert_eq!(d.lock_ts, crate::Timestamp::from_version(5));
        assert_eq!(d.wait_chain.len(), 1);
        assert_eq!(
            d.wait_chain[0].wait_for_txn,
            crate::Timestamp::from_version(6)
        );
        assert_eq!(d.wait_chain[0].wait_time_ms, 7);
    }
}
