//! Transactional storage: TiKV's MVCC data model over three ordered maps, and the write batch
//! every transactional command builds before it is applied atomically.
//!
//! Who calls it: the transactional actions (`mvcc::actions`, ported branch for branch from TiKV's
//! `src/storage/txn/actions/`) and the Kv* command handlers of the TiKV service. Everything runs
//! under the cluster's one lock, so a command reads a consistent state, computes its whole
//! [`WriteBatch`], and applies it or discards it, as TiKV's scheduler does with latches and a
//! RocksDB write batch.
//!
//! The layout follows TiKV (`components/txn_types`, `src/storage/mvcc/`):
//!
//! - lock column family: at most one [`LockRecord`] per key: one transaction's [`Lock`], or the
//!   [`SharedLocks`] of several transactions holding the key in shared mode (TiKV
//!   `LockOrSharedLocks`, the `H`-tagged lock value);
//! - write column family: [`Write`] records at `key@commit_ts` (a rollback record sits at
//!   `key@start_ts`), newest first;
//! - default column family: values longer than [`SHORT_VALUE_MAX_LEN`] at `key@start_ts`;
//!   shorter values are inlined in the lock and then in the write record.
//!
//! Keys are storage keys: the memcomparable encoding of the user key, exactly what region
//! boundaries are compared with.

pub(crate) mod actions;

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

/// Values up to this many bytes are stored inline in locks and write records (TiKV's
/// `SHORT_VALUE_MAX_LEN`).
pub(crate) const SHORT_VALUE_MAX_LEN: usize = 255;

/// The short value TiKV stores in a protected rollback record (`PROTECTED_ROLLBACK_SHORT_VALUE`).
pub(crate) const PROTECTED_ROLLBACK_SHORT_VALUE: &[u8] = b"p";

/// The kind of a lock (TiKV `LockType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockType {
    Put,
    Delete,
    Lock,
    Pessimistic,
}

impl LockType {
    /// The `kvrpcpb.Op` a lock of this type reports in `LockInfo.lock_type`.
    pub(crate) fn to_op(self) -> kvrpcpb::Op {
        match self {
            LockType::Put => kvrpcpb::Op::Put,
            LockType::Delete => kvrpcpb::Op::Del,
            LockType::Lock => kvrpcpb::Op::Lock,
            LockType::Pessimistic => kvrpcpb::Op::PessimisticLock,
        }
    }
}

/// A lock record (TiKV `txn_types::Lock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lock {
    pub(crate) lock_type: LockType,
    /// The transaction's primary key (user key, as the client sent it).
    pub(crate) primary: Bytes,
    /// The transaction's start timestamp.
    pub(crate) ts: u64,
    /// Time to live in milliseconds, counted from the physical part of `ts`.
    pub(crate) ttl: u64,
    pub(crate) short_value: Option<Bytes>,
    /// Non-zero for locks of pessimistic transactions.
    pub(crate) for_update_ts: u64,
    pub(crate) txn_size: u64,
    pub(crate) min_commit_ts: u64,
    pub(crate) use_async_commit: bool,
    /// Secondary keys, on the primary lock of an async-commit transaction.
    pub(crate) secondaries: Vec<Bytes>,
    /// Start timestamps of transactions rolled back on this key while it was locked, so their
    /// rollback survives the commit of this lock (TiKV `rollback_ts`).
    pub(crate) rollback_ts: Vec<u64>,
    /// Set on a pessimistic lock acquired in wake-up mode ForceLock despite a newer write.
    pub(crate) is_locked_with_conflict: bool,
    /// Pipelined DML flush generation; 0 for ordinary locks.
    pub(crate) generation: u64,
    pub(crate) txn_source: u64,
}

impl Lock {
    /// A lock with the fields every lock has; the rest default to zero.
    pub(crate) fn new(lock_type: LockType, primary: Bytes, ts: u64, ttl: u64) -> Self {
        Lock {
            lock_type,
            primary,
            ts,
            ttl,
            short_value: None,
            for_update_ts: 0,
            txn_size: 0,
            min_commit_ts: 0,
            use_async_commit: false,
            secondaries: Vec::new(),
            rollback_ts: Vec::new(),
            is_locked_with_conflict: false,
            generation: 0,
            txn_source: 0,
        }
    }

    /// Whether this is a pessimistic lock (not yet prewritten).
    pub(crate) fn is_pessimistic_lock(&self) -> bool {
        self.lock_type == LockType::Pessimistic
    }

    /// The `LockInfo` a reader or writer that meets this lock receives (TiKV
    /// `Lock::into_lock_info`).
    pub(crate) fn to_lock_info(&self, user_key: Bytes) -> kvrpcpb::LockInfo {
        kvrpcpb::LockInfo {
            primary_lock: self.primary.clone(),
            lock_version: self.ts,
            key: user_key,
            lock_ttl: self.ttl,
            txn_size: self.txn_size,
            lock_type: self.lock_type.to_op() as i32,
            lock_for_update_ts: self.for_update_ts,
            use_async_commit: self.use_async_commit,
            min_commit_ts: self.min_commit_ts,
            secondaries: self.secondaries.clone(),
            ..Default::default()
        }
    }
}

/// What the lock column family holds for one key (TiKV `LockOrSharedLocks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LockRecord {
    /// One transaction's lock.
    Exclusive(Lock),
    /// Several transactions' shared locks.
    Shared(SharedLocks),
}

impl LockRecord {
    /// The lock, unless the key is held in shared mode.
    pub(crate) fn exclusive(&self) -> Option<&Lock> {
        match self {
            LockRecord::Exclusive(lock) => Some(lock),
            LockRecord::Shared(_) => None,
        }
    }

    /// Owned form of [`LockRecord::exclusive`].
    pub(crate) fn into_exclusive(self) -> Option<Lock> {
        match self {
            LockRecord::Exclusive(lock) => Some(lock),
            LockRecord::Shared(_) => None,
        }
    }

    /// The `LockInfo` a request that meets this record receives.
    pub(crate) fn to_lock_info(&self, user_key: Bytes) -> kvrpcpb::LockInfo {
        match self {
            LockRecord::Exclusive(lock) => lock.to_lock_info(user_key),
            LockRecord::Shared(shared) => shared.to_lock_info(user_key),
        }
    }
}

/// The shared locks on one key (TiKV `txn_types::SharedLocks`): per holding transaction, its
/// sub-lock, a `Pessimistic` lock until its prewrite turns it into a `Lock` lock.
///
/// A record is shrink-only once an exclusive lock request met it: no transaction may join any
/// more, so the exclusive request, which waits, is not starved by a stream of new readers. The
/// flag is never cleared; the record goes away when its last holder commits or rolls back.
/// Sub-locks are kept ordered by start ts, which is the order TiKV's scans keep when they cut a
/// record short (TiKV itself stores them unordered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SharedLocks {
    shrink_only: bool,
    locks: BTreeMap<u64, Lock>,
}

impl SharedLocks {
    pub(crate) fn len(&self) -> usize {
        self.locks.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    pub(crate) fn is_shrink_only(&self) -> bool {
        self.shrink_only
    }

    pub(crate) fn set_shrink_only(&mut self) {
        self.shrink_only = true;
    }

    pub(crate) fn contains(&self, start_ts: u64) -> bool {
        self.locks.contains_key(&start_ts)
    }

    pub(crate) fn get(&self, start_ts: u64) -> Option<&Lock> {
        self.locks.get(&start_ts)
    }

    /// The sub-locks, smallest start ts first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Lock> {
        self.locks.values()
    }

    pub(crate) fn remove(&mut self, start_ts: u64) -> Option<Lock> {
        self.locks.remove(&start_ts)
    }

    /// Adds a new holder. Refused once shrink-only or when the transaction already holds one
    /// (TiKV `InvalidOperation`; the actions check both before, so this is a safety net).
    pub(crate) fn insert(&mut self, lock: Lock) -> Result<(), String> {
        if self.shrink_only {
            return Err(format!(
                "cannot insert new lock #{} into shrink-only SharedLocks",
                lock.ts
            ));
        }
        if self.locks.contains_key(&lock.ts) {
            return Err(format!("lock #{} already exists in SharedLocks", lock.ts));
        }
        self.locks.insert(lock.ts, lock);
        Ok(())
    }

    /// Replaces an existing holder's sub-lock.
    pub(crate) fn update(&mut self, lock: Lock) -> Result<(), String> {
        if !self.locks.contains_key(&lock.ts) {
            return Err(format!("lock #{} does not exist in SharedLocks", lock.ts));
        }
        self.locks.insert(lock.ts, lock);
        Ok(())
    }

    /// Keeps only the sub-locks `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Lock) -> bool) {
        self.locks.retain(|_, l| keep(l));
    }

    /// Keeps the `n` sub-locks with the smallest start ts.
    pub(crate) fn truncate(&mut self, n: usize) {
        while self.locks.len() > n {
            self.locks.pop_last();
        }
    }

    /// The `LockInfo` of the whole record (TiKV `SharedLocks::into_lock_info`): type
    /// `SharedLock` and the key, every other top-level field left zero, one entry per holder in
    /// `shared_lock_infos`.
    pub(crate) fn to_lock_info(&self, user_key: Bytes) -> kvrpcpb::LockInfo {
        kvrpcpb::LockInfo {
            lock_type: kvrpcpb::Op::SharedLock as i32,
            shared_lock_infos: self
                .locks
                .values()
                .map(|l| l.to_lock_info(user_key.clone()))
                .collect(),
            key: user_key,
            ..Default::default()
        }
    }
}

/// The transactions a `LockInfo` names: every holder of a shared record, else its one lock.
pub(crate) fn lock_info_holders(info: &kvrpcpb::LockInfo) -> Vec<u64> {
    if info.lock_type == kvrpcpb::Op::SharedLock as i32 {
        info.shared_lock_infos
            .iter()
            .map(|l| l.lock_version)
            .collect()
    } else {
        vec![info.lock_version]
    }
}

/// The kind of a write record (TiKV `WriteType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteType {
    Put,
    Delete,
    Lock,
    Rollback,
}

/// A write record (TiKV `txn_types::Write`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    pub(crate) write_type: WriteType,
    pub(crate) start_ts: u64,
    pub(crate) short_value: Option<Bytes>,
    /// A rollback of another transaction with `start_ts == this commit_ts` happened here.
    pub(crate) has_overlapped_rollback: bool,
    /// Commit ts of the next newer Put/Delete when the record was rewritten for an overlapped
    /// rollback; versions with a gc fence at or below a read ts are treated as absent.
    pub(crate) gc_fence: Option<u64>,
    pub(crate) txn_source: u64,
}

impl Write {
    pub(crate) fn new(write_type: WriteType, start_ts: u64, short_value: Option<Bytes>) -> Self {
        Write {
            write_type,
            start_ts,
            short_value,
            has_overlapped_rollback: false,
            gc_fence: None,
            txn_source: 0,
        }
    }

    /// A rollback record; protected ones carry the marker value and are never collapsed.
    pub(crate) fn new_rollback(start_ts: u64, protected: bool) -> Self {
        let marker = protected.then(|| Bytes::from_static(PROTECTED_ROLLBACK_SHORT_VALUE));
        Write::new(WriteType::Rollback, start_ts, marker)
    }

    pub(crate) fn is_protected_rollback(&self) -> bool {
        self.write_type == WriteType::Rollback
            && self.short_value.as_deref() == Some(PROTECTED_ROLLBACK_SHORT_VALUE)
    }

    /// Whether a read at `read_ts` may use this version (TiKV
    /// `check_gc_fence_as_latest_version`): only a non-zero fence at or below the read ts hides
    /// it; a zero fence means no newer version existed when the record was rewritten.
    pub(crate) fn gc_fence_allows(&self, read_ts: u64) -> bool {
        !matches!(self.gc_fence, Some(fence) if fence != 0 && fence <= read_ts)
    }
}

/// The three column families.
#[derive(Debug, Default)]
pub(crate) struct MvccStore {
    pub(crate) locks: BTreeMap<Bytes, LockRecord>,
    /// `(key, Reverse(commit_ts))`: iteration within a key goes newest first, as TiKV's
    /// `key ++ !ts` encoding orders it.
    pub(crate) writes: BTreeMap<(Bytes, Reverse<u64>), Write>,
    pub(crate) values: BTreeMap<(Bytes, Reverse<u64>), Bytes>,
}

impl MvccStore {
    /// What the lock column family holds for `key`.
    pub(crate) fn lock_record(&self, key: &[u8]) -> Option<&LockRecord> {
        self.locks.get(key)
    }

    /// The exclusive lock of `key`; `None` also when the key is held in shared mode.
    pub(crate) fn lock(&self, key: &[u8]) -> Option<&Lock> {
        self.locks.get(key).and_then(LockRecord::exclusive)
    }

    /// Write records of `key` with `commit_ts <= ts`, newest first.
    pub(crate) fn writes_at_or_below<'a>(
        &'a self,
        key: &Bytes,
        ts: u64,
    ) -> impl Iterator<Item = (u64, &'a Write)> + use<'a> {
        self.writes
            .range((
                Bound::Included((key.clone(), Reverse(ts))),
                Bound::Included((key.clone(), Reverse(0))),
            ))
            .map(|((_, Reverse(commit_ts)), w)| (*commit_ts, w))
    }

    /// The newest write record of `key` with `commit_ts <= ts` (TiKV `seek_write`).
    pub(crate) fn seek_write(&self, key: &Bytes, ts: u64) -> Option<(u64, &Write)> {
        self.writes_at_or_below(key, ts).next()
    }

    /// The value a Put write record stands for.
    pub(crate) fn value_of(&self, key: &Bytes, write: &Write) -> Option<Bytes> {
        match &write.short_value {
            Some(v) => Some(v.clone()),
            None => self
                .values
                .get(&(key.clone(), Reverse(write.start_ts)))
                .cloned(),
        }
    }

    /// The visible value of `key` at `ts`: the newest Put or Delete at or below `ts`, skipping
    /// Lock and Rollback records (TiKV `MvccReader::get`). Returns the value and its commit ts.
    pub(crate) fn get(&self, key: &Bytes, ts: u64) -> Option<(Bytes, u64)> {
        for (commit_ts, write) in self.writes_at_or_below(key, ts) {
            match write.write_type {
                WriteType::Put => {
                    if !write.gc_fence_allows(ts) {
                        return None;
                    }
                    return self.value_of(key, write).map(|v| (v, commit_ts));
                }
                WriteType::Delete => return None,
                WriteType::Lock | WriteType::Rollback => continue,
            }
        }
        None
    }
}

/// A key of the write and default column families: storage key and timestamp, newest first.
type VersionKey = (Bytes, Reverse<u64>);

/// The changes one command makes, applied all at once or not at all.
#[derive(Debug, Default)]
pub(crate) struct WriteBatch {
    locks: Vec<(Bytes, Option<LockRecord>)>,
    writes: Vec<(VersionKey, Option<Write>)>,
    values: Vec<(VersionKey, Option<Bytes>)>,
    /// Keys whose lock this batch removes, with the lock's start ts: lock waiters on them are
    /// woken after the batch is applied.
    pub(crate) released: Vec<(Bytes, u64)>,
}

impl WriteBatch {
    pub(crate) fn put_lock(&mut self, key: Bytes, lock: Lock) {
        self.locks.push((key, Some(LockRecord::Exclusive(lock))));
    }

    /// Writes a key's shared locks back (TiKV `put_shared_locks`); an emptied record must be
    /// removed with [`WriteBatch::unlock_key`] instead.
    pub(crate) fn put_shared_locks(&mut self, key: Bytes, shared: SharedLocks) {
        self.locks.push((key, Some(LockRecord::Shared(shared))));
    }

    /// Removes the lock of `key`, remembering it so lock waiters can be woken.
    pub(crate) fn unlock_key(&mut self, key: Bytes, lock_ts: u64) {
        self.released.push((key.clone(), lock_ts));
        self.locks.push((key, None));
    }

    pub(crate) fn put_write(&mut self, key: Bytes, commit_ts: u64, write: Write) {
        self.writes.push(((key, Reverse(commit_ts)), Some(write)));
    }

    pub(crate) fn delete_write(&mut self, key: Bytes, commit_ts: u64) {
        self.writes.push(((key, Reverse(commit_ts)), None));
    }

    pub(crate) fn put_value(&mut self, key: Bytes, start_ts: u64, value: Bytes) {
        self.values.push(((key, Reverse(start_ts)), Some(value)));
    }

    pub(crate) fn delete_value(&mut self, key: Bytes, start_ts: u64) {
        self.values.push(((key, Reverse(start_ts)), None));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.locks.is_empty() && self.writes.is_empty() && self.values.is_empty()
    }

    /// Applies every change in order and returns the released locks.
    pub(crate) fn apply(self, store: &mut MvccStore) -> Vec<(Bytes, u64)> {
        for (key, lock) in self.locks {
            match lock {
                Some(lock) => store.locks.insert(key, lock),
                None => store.locks.remove(&key),
            };
        }
        for (key, write) in self.writes {
            match write {
                Some(write) => store.writes.insert(key, write),
                None => store.writes.remove(&key),
            };
        }
        for (key, value) in self.values {
            match value {
                Some(value) => store.values.insert(key, value),
                None => store.values.remove(&key),
            };
        }
        self.released
    }
}

/// A view of the store plus the pending batch, so an action sees its own earlier writes within
/// one command, as TiKV's `MvccTxn` + reader do for the keys a command touches.
#[derive(Debug)]
pub(crate) struct Txn<'a> {
    pub(crate) store: &'a MvccStore,
    pub(crate) batch: WriteBatch,
    pub(crate) start_ts: u64,
}

impl<'a> Txn<'a> {
    pub(crate) fn new(store: &'a MvccStore, start_ts: u64) -> Self {
        Txn {
            store,
            batch: WriteBatch::default(),
            start_ts,
        }
    }

    /// The lock record of `key` as this command has left it so far.
    pub(crate) fn lock(&self, key: &Bytes) -> Option<LockRecord> {
        for (k, lock) in self.batch.locks.iter().rev() {
            if k == key {
                return lock.clone();
            }
        }
        self.store.lock_record(key).cloned()
    }

    /// The exclusive lock of `key` as this command has left it so far; `None` also when the
    /// key is held in shared mode.
    #[cfg(test)]
    pub(crate) fn exclusive_lock(&self, key: &Bytes) -> Option<Lock> {
        self.lock(key).and_then(LockRecord::into_exclusive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn writes_iterate_newest_first_and_reads_skip_locks_and_rollbacks() {
        let mut store = MvccStore::default();
        let mut batch = WriteBatch::default();
        batch.put_write(k("a"), 10, Write::new(WriteType::Put, 5, Some(k("v1"))));
        batch.put_write(k("a"), 20, Write::new(WriteType::Lock, 15, None));
        batch.put_write(k("a"), 25, Write::new_rollback(25, true));
        batch.put_value(k("a"), 30, Bytes::from(vec![b'x'; 300]));
        batch.put_write(k("a"), 40, Write::new(WriteType::Put, 30, None));
        batch.put_write(k("a"), 50, Write::new(WriteType::Delete, 45, None));
        batch.put_write(k("b"), 5, Write::new(WriteType::Put, 1, Some(k("other"))));
        assert!(batch.apply(&mut store).is_empty());

        assert_eq!(store.get(&k("a"), 9), None);
        assert_eq!(store.get(&k("a"), 10), Some((k("v1"), 10)));
        // Lock and rollback records are skipped down to the Put at 10.
        assert_eq!(store.get(&k("a"), 39), Some((k("v1"), 10)));
        // A long value lives in the default column family at start_ts.
        assert_eq!(
            store.get(&k("a"), 45).map(|(v, ts)| (v.len(), ts)),
            Some((300, 40))
        );
        assert_eq!(store.get(&k("a"), 60), None);
        let commits: Vec<u64> = store
            .writes_at_or_below(&k("a"), u64::MAX)
            .map(|(c, _)| c)
            .collect();
        assert_eq!(commits, vec![50, 40, 25, 20, 10]);
        assert!(
            store
                .seek_write(&k("a"), 25)
                .unwrap()
                .1
                .is_protected_rollback()
        );
    }

    #[test]
    fn batch_applies_in_order_and_reports_released_locks() {
        let mut store = MvccStore::default();
        let mut txn = Txn::new(&store, 1);
        txn.batch
            .put_lock(k("a"), Lock::new(LockType::Put, k("a"), 1, 3000));
        assert_eq!(txn.exclusive_lock(&k("a")).map(|l| l.ts), Some(1));
        txn.batch.unlock_key(k("a"), 1);
        assert_eq!(txn.lock(&k("a")), None);
        let batch = std::mem::take(&mut txn.batch);
        assert_eq!(batch.apply(&mut store), vec![(k("a"), 1)]);
        assert!(store.locks.is_empty());
    }

    #[test]
    fn gc_fence_hides_versions() {
        let mut w = Write::new(WriteType::Put, 1, Some(k("v")));
        assert!(w.gc_fence_allows(100));
        w.gc_fence = Some(50);
        assert!(w.gc_fence_allows(49));
        assert!(!w.gc_fence_allows(50));
        w.gc_fence = Some(0);
        assert!(w.gc_fence_allows(1));
    }
}
