//! MVCC garbage collection: dropping the versions no reader at or above the GC safe point can
//! see any more.
//!
//! Who calls it: PD's GC safe point handlers (`pd::service`: `UpdateGCSafePoint`,
//! `AdvanceGCSafePoint`) right after the safe point moves, standing in for TiKV's GC worker that
//! watches the safe point; and `MockCluster::run_gc` for tests. Follows TiKV
//! `src/storage/txn/actions/gc.rs` (the per-key state machine) and `src/server/gc_worker/`
//! (GC runs over a key range once the safe point advances).
//!
//! Per key, versions newer than the safe point are kept. Walking down from the safe point, Lock
//! and Rollback records are dropped until the first Put or Delete; a Put is kept (it is what a
//! read at the safe point sees), a Delete is dropped; everything older goes, long values with it.
//! The lock column family is untouched: clients resolve locks below the safe point before they
//! advance it.

use std::cmp::Reverse;
use std::ops::Bound;

use bytes::Bytes;

use crate::codec::encode_bytes;
use crate::mvcc::{MvccStore, WriteBatch, WriteType};

/// How many records one GC pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GcStats {
    pub(crate) writes: usize,
    pub(crate) values: usize,
}

/// Adds to `batch` the deletions GC makes on one storage key at `safe_point`.
pub(crate) fn gc_key(
    store: &MvccStore,
    key: &Bytes,
    safe_point: u64,
    batch: &mut WriteBatch,
    stats: &mut GcStats,
) {
    // False while looking for the newest Put/Delete at or below the safe point; true once every
    // older record is garbage.
    let mut remove_all = false;
    for (commit_ts, write) in store.writes_at_or_below(key, safe_point) {
        if !remove_all {
            match write.write_type {
                WriteType::Put => {
                    remove_all = true;
                    continue;
                }
                // Reading a Delete and reading nothing are the same at and above the safe point.
                WriteType::Delete => remove_all = true,
                WriteType::Lock | WriteType::Rollback => {}
            }
        }
        batch.delete_write(key.clone(), commit_ts);
        stats.writes += 1;
        if write.write_type == WriteType::Put && write.short_value.is_none() {
            batch.delete_value(key.clone(), write.start_ts);
            stats.values += 1;
        }
    }
}

/// Computes the deletions GC makes at `safe_point` over storage keys in `[start, end)` (an empty
/// `end` is unbounded), without changing the store.
pub(crate) fn gc_range(
    store: &MvccStore,
    safe_point: u64,
    start: &[u8],
    end: &[u8],
) -> (WriteBatch, GcStats) {
    let mut batch = WriteBatch::default();
    let mut stats = GcStats::default();
    let mut lower = Bound::Included((Bytes::copy_from_slice(start), Reverse(u64::MAX)));
    loop {
        let next = store
            .writes
            .range((lower, Bound::Unbounded))
            .next()
            .map(|((k, _), _)| k.clone());
        let Some(key) = next else { break };
        if !end.is_empty() && key.as_ref() >= end {
            break;
        }
        gc_key(store, &key, safe_point, &mut batch, &mut stats);
        lower = Bound::Excluded((key, Reverse(0)));
    }
    (batch, stats)
}

/// The storage key range of a GC scope: the whole store without a keyspace (API V1 and the
/// unified GC of the null keyspace), the keyspace's transactional key range (`x` + 3-byte id)
/// otherwise.
pub(crate) fn scope_range(keyspace: Option<u32>) -> (Bytes, Bytes) {
    let Some(scope) = keyspace else {
        return (Bytes::new(), Bytes::new());
    };
    let prefix = |id: u32| [b'x', (id >> 16) as u8, (id >> 8) as u8, id as u8];
    let start = Bytes::from(encode_bytes(&prefix(scope)));
    let end = if scope >= 0x00FF_FFFF {
        // The last keyspace id: its range runs to the end of the `x` mode.
        Bytes::from(encode_bytes(b"y"))
    } else {
        Bytes::from(encode_bytes(&prefix(scope + 1)))
    };
    (start, end)
}

/// Runs GC at `safe_point` over the keys of a GC scope (see [`scope_range`]) and applies it.
pub(crate) fn run(store: &mut MvccStore, keyspace: Option<u32>, safe_point: u64) -> GcStats {
    let (start, end) = scope_range(keyspace);
    let (batch, stats) = gc_range(store, safe_point, &start, &end);
    batch.apply(store);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::actions::test_util::{key, write_at};
    use crate::mvcc::{Lock, LockType, Write};

    fn put(store: &mut MvccStore, k: &Bytes, start: u64, commit: u64, long: bool) {
        let mut b = WriteBatch::default();
        if long {
            b.put_value(k.clone(), start, Bytes::from(vec![b'v'; 300]));
            b.put_write(k.clone(), commit, Write::new(WriteType::Put, start, None));
        } else {
            let v = Bytes::from(format!("v{commit}"));
            b.put_write(
                k.clone(),
                commit,
                Write::new(WriteType::Put, start, Some(v)),
            );
        }
        b.apply(store);
    }

    fn rec(store: &mut MvccStore, k: &Bytes, commit: u64, w: Write) {
        let mut b = WriteBatch::default();
        b.put_write(k.clone(), commit, w);
        b.apply(store);
    }

    fn commits(store: &MvccStore, k: &Bytes) -> Vec<u64> {
        store
            .writes_at_or_below(k, u64::MAX)
            .map(|(c, _)| c)
            .collect()
    }

    fn gc_all(store: &mut MvccStore, sp: u64) -> GcStats {
        run(store, None, sp)
    }

    #[test]
    fn keeps_newest_put_at_or_below_safe_point_and_everything_newer() {
        let mut s = MvccStore::default();
        let k = key("k").enc;
        put(&mut s, &k, 5, 10, true);
        put(&mut s, &k, 15, 20, false);
        put(&mut s, &k, 25, 30, true);
        put(&mut s, &k, 35, 40, false);
        let st = gc_all(&mut s, 30);
        assert_eq!(
            st,
            GcStats {
                writes: 2,
                values: 1
            }
        );
        assert_eq!(commits(&s, &k), vec![40, 30]);
        // The kept long value stays, the collected one is gone.
        assert!(s.values.contains_key(&(k.clone(), Reverse(25))));
        assert!(!s.values.contains_key(&(k.clone(), Reverse(5))));
        assert_eq!(s.get(&k, 35).map(|(v, c)| (v.len(), c)), Some((300, 30)));
        assert_eq!(s.get(&k, 40).unwrap().0, Bytes::from_static(b"v40"));
    }

    #[test]
    fn newest_delete_at_or_below_safe_point_goes_with_everything_older() {
        let mut s = MvccStore::default();
        let k = key("k").enc;
        put(&mut s, &k, 5, 10, true);
        rec(&mut s, &k, 20, Write::new(WriteType::Delete, 15, None));
        put(&mut s, &k, 25, 30, false);
        assert_eq!(gc_all(&mut s, 20).writes, 2);
        assert_eq!(commits(&s, &k), vec![30]);
        assert!(s.values.is_empty());
        // A key whose only history is a deleted value disappears entirely.
        let d = key("d").enc;
        put(&mut s, &d, 1, 2, false);
        rec(&mut s, &d, 4, Write::new(WriteType::Delete, 3, None));
        gc_all(&mut s, 100);
        assert!(commits(&s, &d).is_empty());
    }

    #[test]
    fn lock_and_rollback_records_are_dropped_down_to_the_put() {
        let mut s = MvccStore::default();
        let k = key("k").enc;
        put(&mut s, &k, 5, 10, false);
        rec(&mut s, &k, 20, Write::new(WriteType::Lock, 15, None));
        rec(&mut s, &k, 25, Write::new_rollback(25, true));
        rec(&mut s, &k, 27, Write::new_rollback(27, false));
        assert_eq!(gc_all(&mut s, 26).writes, 2);
        // The rollback above the safe point and the Put stay.
        assert_eq!(commits(&s, &k), vec![27, 10]);
        assert_eq!(s.get(&k, 30).unwrap().0, Bytes::from_static(b"v10"));
        // Only Lock/Rollback records: all of them go.
        let r = key("r").enc;
        rec(&mut s, &r, 3, Write::new_rollback(3, true));
        rec(&mut s, &r, 6, Write::new(WriteType::Lock, 4, None));
        gc_all(&mut s, 6);
        assert!(commits(&s, &r).is_empty());
    }

    #[test]
    fn nothing_at_or_below_safe_point_is_untouched_and_locks_are_never_collected() {
        let mut s = MvccStore::default();
        let k = key("k").enc;
        put(&mut s, &k, 50, 60, false);
        put(&mut s, &k, 70, 80, false);
        let mut b = WriteBatch::default();
        b.put_lock(k.clone(), Lock::new(LockType::Put, key("k").raw, 5, 100));
        b.apply(&mut s);
        assert_eq!(gc_all(&mut s, 40), GcStats::default());
        assert_eq!(commits(&s, &k), vec![80, 60]);
        gc_all(&mut s, 1000);
        assert_eq!(commits(&s, &k), vec![80]);
        assert_eq!(s.locks.len(), 1);
        // GC is idempotent.
        assert_eq!(gc_all(&mut s, 1000), GcStats::default());
        assert!(write_at(&s, &key("k"), 80).is_some());
    }

    #[test]
    fn keyspace_scope_only_touches_its_own_keys() {
        let mut s = MvccStore::default();
        let ks1 = Bytes::from(encode_bytes(b"x\x00\x00\x01key"));
        let ks2 = Bytes::from(encode_bytes(b"x\x00\x00\x02key"));
        let raw = Bytes::from(encode_bytes(b"plain"));
        for k in [&ks1, &ks2, &raw] {
            put(&mut s, k, 1, 2, false);
            put(&mut s, k, 3, 4, false);
        }
        run(&mut s, Some(1), 10);
        assert_eq!(commits(&s, &ks1), vec![4]);
        assert_eq!(commits(&s, &ks2), vec![4, 2]);
        assert_eq!(commits(&s, &raw), vec![4, 2]);
        let (start, end) = scope_range(Some(0x00FF_FFFF));
        assert!(start < end);
        run(&mut s, None, 10);
        assert_eq!(commits(&s, &ks2), vec![4]);
        assert_eq!(commits(&s, &raw), vec![4]);
    }
}
