//! The raw key-value data of the cluster: one ordered map per column family, keyed by storage
//! key, so a region's share of the data is one `BTreeMap` range.
//!
//! Storage keys are what region boundaries compare against: under API V1 the key exactly as the
//! client sent it, under API V2 its memcomparable encoding (see
//! [`ClusterState::raw_storage_key`](crate::cluster::ClusterState::raw_storage_key)). Each entry
//! also keeps the wire key, so reads answer without decoding.
//!
//! Every operation here is a pure function of the store, the bounds it is given and the current
//! time in seconds; the request handlers in `raw/mod.rs` decide the bounds (region clamping,
//! reverse scans) and the error semantics. TiKV keeps values with an encoded TTL / tombstone
//! suffix (`components/api_version/src/api_v2.rs`); the mock keeps the same facts as fields.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use super::crc64::Crc64;

/// A raw column family. API V1 accepts `""`/`default`, `lock` and `write`; API V2 only `""`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawCf {
    Default,
    Lock,
    Write,
}

impl RawCf {
    const ALL: [RawCf; 3] = [RawCf::Default, RawCf::Lock, RawCf::Write];

    fn index(self) -> usize {
        match self {
            RawCf::Default => 0,
            RawCf::Lock => 1,
            RawCf::Write => 2,
        }
    }
}

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEntry {
    /// The key as the client sent it.
    pub(crate) key: Bytes,
    pub(crate) value: Bytes,
    /// Unix seconds at and after which the value is invisible; `None` for no TTL.
    pub(crate) expire_secs: Option<u64>,
    /// An API V2 logical delete: TiKV writes a tombstone version instead of removing the key.
    pub(crate) deleted: bool,
}

impl RawEntry {
    /// Whether reads see the entry at `now_secs` (TiKV's `RawValue::is_valid`).
    pub(crate) fn is_live(&self, now_secs: u64) -> bool {
        !self.deleted && self.expire_secs.is_none_or(|expire| expire > now_secs)
    }
}

/// A range of storage keys.
pub(crate) type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Whether `BTreeMap::range` would panic on (or return nothing for) these bounds.
fn is_empty_range(bounds: &KeyBounds<'_>) -> bool {
    match *bounds {
        (Bound::Included(lo), Bound::Included(hi)) => lo > hi,
        (Bound::Included(lo), Bound::Excluded(hi))
        | (Bound::Excluded(lo), Bound::Included(hi))
        | (Bound::Excluded(lo), Bound::Excluded(hi)) => lo >= hi,
        _ => false,
    }
}

/// Accumulated `RawChecksum` result: XOR of per-entry CRC-64s, entry count, bytes of keys and
/// values.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checksum {
    pub(crate) checksum: u64,
    pub(crate) total_kvs: u64,
    pub(crate) total_bytes: u64,
}

/// Raw key-value data of the cluster.
#[derive(Debug, Default)]
pub(crate) struct RawStore {
    cfs: [BTreeMap<Bytes, RawEntry>; 3],
}

impl RawStore {
    fn cf(&self, cf: RawCf) -> &BTreeMap<Bytes, RawEntry> {
        &self.cfs[cf.index()]
    }

    fn cf_mut(&mut self, cf: RawCf) -> &mut BTreeMap<Bytes, RawEntry> {
        &mut self.cfs[cf.index()]
    }

    fn range<'s>(
        &'s self,
        cf: RawCf,
        bounds: KeyBounds<'_>,
    ) -> impl DoubleEndedIterator<Item = (&'s Bytes, &'s RawEntry)> {
        let map = self.cf(cf);
        let range = if is_empty_range(&bounds) {
            None
        } else {
            Some(map.range::<[u8], _>(bounds))
        };
        range.into_iter().flatten()
    }

    /// The live entry at a storage key.
    pub(crate) fn get(&self, cf: RawCf, storage_key: &[u8], now_secs: u64) -> Option<&RawEntry> {
        self.cf(cf)
            .get(storage_key)
            .filter(|entry| entry.is_live(now_secs))
    }

    /// Remaining TTL in seconds (0 for no TTL), `None` if the key is absent or expired.
    ///
    /// Like TiKV's `get_key_ttl_cf`, this looks at the newest version without checking the
    /// tombstone flag, so an API V2 key deleted by `RawDelete` reports TTL 0 (found).
    pub(crate) fn ttl(&self, cf: RawCf, storage_key: &[u8], now_secs: u64) -> Option<u64> {
        let entry = self.cf(cf).get(storage_key)?;
        match entry.expire_secs {
            Some(expire) if expire <= now_secs => None,
            Some(expire) => Some(expire - now_secs),
            None => Some(0),
        }
    }

    pub(crate) fn put(
        &mut self,
        cf: RawCf,
        storage_key: Bytes,
        key: Bytes,
        value: Bytes,
        expire_secs: Option<u64>,
    ) {
        self.cf_mut(cf).insert(
            storage_key,
            RawEntry {
                key,
                value,
                expire_secs,
                deleted: false,
            },
        );
    }

    /// Deletes a key: physically, or (API V2) by writing a tombstone.
    pub(crate) fn delete(&mut self, cf: RawCf, storage_key: Bytes, key: Bytes, tombstone: bool) {
        let map = self.cf_mut(cf);
        if tombstone {
            map.insert(
                storage_key,
                RawEntry {
                    key,
                    value: Bytes::new(),
                    expire_secs: None,
                    deleted: true,
                },
            );
        } else {
            map.remove(&storage_key);
        }
    }

    /// Physically removes every entry of `cf` in the range; returns how many.
    pub(crate) fn delete_range(&mut self, cf: RawCf, bounds: KeyBounds<'_>) -> usize {
        let doomed: Vec<Bytes> = self.range(cf, bounds).map(|(k, _)| k.clone()).collect();
        let map = self.cf_mut(cf);
        for key in &doomed {
            map.remove(key);
        }
        doomed.len()
    }

    /// Physically removes every entry of every column family in the range.
    pub(crate) fn destroy_range(&mut self, bounds: KeyBounds<'_>) -> usize {
        RawCf::ALL
            .into_iter()
            .map(|cf| self.delete_range(cf, bounds))
            .sum()
    }

    /// Up to `limit` live entries of the range, ascending or (reverse) descending.
    pub(crate) fn scan(
        &self,
        cf: RawCf,
        bounds: KeyBounds<'_>,
        limit: usize,
        reverse: bool,
        key_only: bool,
        now_secs: u64,
    ) -> Vec<kvrpcpb::KvPair> {
        let to_pair = |(_, entry): (&Bytes, &RawEntry)| kvrpcpb::KvPair {
            key: entry.key.clone(),
            value: if key_only {
                Bytes::new()
            } else {
                entry.value.clone()
            },
            ..Default::default()
        };
        let live = |(_, entry): &(&Bytes, &RawEntry)| entry.is_live(now_secs);
        let range = self.range(cf, bounds);
        if reverse {
            range.rev().filter(live).take(limit).map(to_pair).collect()
        } else {
            range.filter(live).take(limit).map(to_pair).collect()
        }
    }

    /// Folds the live entries of the range into `acc` (CRC-64 of wire key ++ value, XORed).
    pub(crate) fn checksum(
        &self,
        cf: RawCf,
        bounds: KeyBounds<'_>,
        now_secs: u64,
        acc: &mut Checksum,
    ) {
        for (_, entry) in self.range(cf, bounds) {
            if !entry.is_live(now_secs) {
                continue;
            }
            let mut digest = Crc64::new();
            digest.update(&entry.key);
            digest.update(&entry.value);
            acc.checksum ^= digest.finish();
            acc.total_kvs += 1;
            acc.total_bytes += (entry.key.len() + entry.value.len()) as u64;
        }
    }

    /// The distinct storage keys with a live value in any column family in the range, in
    /// order, stopping once more than `at_most` are found.
    pub(crate) fn live_keys(
        &self,
        bounds: KeyBounds<'_>,
        now_secs: u64,
        at_most: usize,
    ) -> Vec<Bytes> {
        let mut keys: Vec<Bytes> = Vec::new();
        for cf in RawCf::ALL {
            keys.extend(
                self.range(cf, bounds)
                    .filter(|(_, e)| e.is_live(now_secs))
                    .map(|(k, _)| k.clone())
                    .take(at_most.saturating_add(1)),
            );
        }
        keys.sort();
        keys.dedup();
        keys.truncate(at_most.saturating_add(1));
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn store_with(keys: &[&str]) -> RawStore {
        let mut store = RawStore::default();
        for k in keys {
            store.put(RawCf::Default, b(k), b(k), b(&k.to_uppercase()), None);
        }
        store
    }

    fn keys(pairs: &[kvrpcpb::KvPair]) -> Vec<&[u8]> {
        pairs.iter().map(|p| p.key.as_ref()).collect()
    }

    #[test]
    fn scans_respect_bounds_limit_direction_and_key_only() {
        let store = store_with(&["a", "b", "c", "d"]);
        let all = (Bound::Unbounded, Bound::Unbounded);
        let fwd = store.scan(RawCf::Default, all, 3, false, false, 0);
        assert_eq!(keys(&fwd), [b"a", b"b", b"c"]);
        assert_eq!(fwd[0].value, b("A"));
        let rev = store.scan(RawCf::Default, all, 2, true, true, 0);
        assert_eq!(keys(&rev), [b"d", b"c"]);
        assert!(rev[0].value.is_empty());
        let mid = (Bound::Included(&b"b"[..]), Bound::Excluded(&b"d"[..]));
        assert_eq!(
            keys(&store.scan(RawCf::Default, mid, 10, false, false, 0)),
            [b"b", b"c"]
        );
        // Bounds that cross must not panic; they select nothing.
        let crossed = (Bound::Included(&b"d"[..]), Bound::Excluded(&b"b"[..]));
        assert!(
            store
                .scan(RawCf::Default, crossed, 10, false, false, 0)
                .is_empty()
        );
        let same = (Bound::Excluded(&b"b"[..]), Bound::Excluded(&b"b"[..]));
        assert!(
            store
                .scan(RawCf::Default, same, 10, true, false, 0)
                .is_empty()
        );
        // Other column families are separate.
        assert!(store.scan(RawCf::Lock, all, 10, false, false, 0).is_empty());
    }

    #[test]
    fn ttl_expiry_and_tombstones() {
        let mut store = RawStore::default();
        store.put(RawCf::Default, b("k"), b("k"), b("v"), Some(100));
        store.put(RawCf::Default, b("n"), b("n"), b("v"), None);
        assert!(store.get(RawCf::Default, b"k", 99).is_some());
        assert_eq!(store.ttl(RawCf::Default, b"k", 90), Some(10));
        assert_eq!(store.ttl(RawCf::Default, b"n", 90), Some(0));
        // Expired at exactly expire time.
        assert!(store.get(RawCf::Default, b"k", 100).is_none());
        assert_eq!(store.ttl(RawCf::Default, b"k", 100), None);
        let all = (Bound::Unbounded, Bound::Unbounded);
        assert_eq!(
            keys(&store.scan(RawCf::Default, all, 10, false, false, 100)),
            [b"n"]
        );

        store.delete(RawCf::Default, b("n"), b("n"), true);
        assert!(store.get(RawCf::Default, b"n", 0).is_none());
        assert!(store.scan(RawCf::Default, all, 10, false, false, 0).len() == 1);
        // TiKV's TTL lookup does not look at the tombstone flag.
        assert_eq!(store.ttl(RawCf::Default, b"n", 0), Some(0));
        store.delete(RawCf::Default, b("k"), b("k"), false);
        assert_eq!(store.ttl(RawCf::Default, b"k", 0), None);
    }

    #[test]
    fn delete_and_destroy_ranges() {
        let mut store = store_with(&["a", "b", "c", "d"]);
        store.put(RawCf::Write, b("b"), b("b"), b("w"), None);
        let bc = (Bound::Included(&b"b"[..]), Bound::Excluded(&b"d"[..]));
        assert_eq!(store.delete_range(RawCf::Default, bc), 2);
        assert!(store.get(RawCf::Write, b"b", 0).is_some());
        assert_eq!(
            store.destroy_range((Bound::Unbounded, Bound::Excluded(&b"c"[..]))),
            2
        );
        let all = (Bound::Unbounded, Bound::Unbounded);
        assert_eq!(
            keys(&store.scan(RawCf::Default, all, 10, false, false, 0)),
            [b"d"]
        );
        assert!(store.get(RawCf::Write, b"b", 0).is_none());
    }

    #[test]
    fn checksum_is_xor_of_entry_crcs() {
        let mut store = store_with(&["a", "b"]);
        store.put(RawCf::Default, b("x"), b("x"), b("gone"), Some(5));
        let mut acc = Checksum::default();
        store.checksum(
            RawCf::Default,
            (Bound::Unbounded, Bound::Unbounded),
            10,
            &mut acc,
        );
        let expected =
            super::super::crc64::crc64(&[b"a", b"A"]) ^ super::super::crc64::crc64(&[b"b", b"B"]);
        assert_eq!(
            acc,
            Checksum {
                checksum: expected,
                total_kvs: 2,
                total_bytes: 4
            }
        );
    }

    #[test]
    fn live_keys_are_distinct_and_capped() {
        let mut store = store_with(&["a", "b", "c", "d", "e"]);
        store.put(RawCf::Lock, b("b"), b("b"), b("l"), None);
        let all = (Bound::Unbounded, Bound::Unbounded);
        assert_eq!(store.live_keys(all, 0, 10).len(), 5);
        assert_eq!(store.live_keys(all, 0, 2), vec![b("a"), b("b"), b("c")]);
    }
}
