//! The region index's leaf layout: the fast lookup that reads only the index (prefixes, key
//! arena, offsets, hot-state slots), checked against a model and at the boundaries where the
//! shortcuts could go wrong: the empty key, keys equal to a region's start or end, keys that
//! share more than 8, 16 or 32 bytes, gaps between regions, and the last region of each leaf.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::bare_region;
use crate::locate::index::{LEAF_CAP, RegionIndex};
use crate::locate::location::Buckets;
use crate::locate::prefix::{Lcp, key_prefix64};
use crate::locate::region::{
    CachedRegion, InvalidReason, RegionParts, RegionPeer, RegionVerId, TTL_TOUCH_INTERVAL_MS,
    TtlPolicy, flags,
};

/// The model's answer: the region whose `[start, end)` holds `key`.
fn model_find(model: &BTreeMap<Vec<u8>, (Vec<u8>, u64)>, key: &[u8]) -> Option<u64> {
    model
        .range(..=key.to_vec())
        .next_back()
        .filter(|(_, (e, _))| e.is_empty() || key < e.as_slice())
        .map(|(_, (_, id))| *id)
}

/// Checks `lookup` (and `search_by_key`, which goes through it) against the model for `key`,
/// including the keys and epoch a hit reports.
fn check_lookup(index: &RegionIndex, model: &BTreeMap<Vec<u8>, (Vec<u8>, u64)>, key: &[u8]) {
    let expect = model_find(model, key);
    let hit = index.lookup(key);
    assert_eq!(
        hit.map(|h| h.ver_id().id()),
        expect,
        "lookup of {:?}",
        key.escape_ascii().to_string()
    );
    assert_eq!(index.search_by_key(key).map(|r| r.id()), expect);
    if let Some(hit) = hit {
        let region = hit.region().expect("a hit has its region");
        assert_eq!(hit.ver_id(), region.ver_id());
        assert_eq!(&hit.start_key(), region.start_key());
        assert_eq!(&hit.end_key(), region.end_key());
        assert!(std::ptr::eq(hit.hot(), region.hot()));
    }
}

/// Boundary probes around every region: its start, its end, one byte below each, and keys
/// extending them.
fn boundary_probes(model: &BTreeMap<Vec<u8>, (Vec<u8>, u64)>) -> Vec<Vec<u8>> {
    let mut probes = vec![Vec::new(), vec![0], vec![0xFF; 40]];
    for (start, (end, _)) in model {
        for k in [start, end] {
            probes.push(k.clone());
            let mut longer = k.clone();
            longer.push(0);
            probes.push(longer);
            let mut longer = k.clone();
            longer.push(0xFF);
            probes.push(longer);
            if let Some((&last, head)) = k.split_last() {
                probes.push(head.to_vec());
                if last > 0 {
                    let mut below = head.to_vec();
                    below.push(last - 1);
                    below.extend_from_slice(&[0xFF; 20]);
                    probes.push(below);
                }
            }
        }
    }
    probes
}

/// The model: start key -> (end key, region id).
type Model = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

/// Builds the model and the index from region bounds (sorted, disjoint), inserting in a
/// shuffled order so that leaves split at different places.
fn build(bounds: &[(Vec<u8>, Vec<u8>)], seed: u64) -> (RegionIndex, Model) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut order: Vec<usize> = (0..bounds.len()).collect();
    rng.shuffle(&mut order);
    let mut index = RegionIndex::default();
    let mut model = BTreeMap::new();
    for i in order {
        let (s, e) = &bounds[i];
        index.insert(bare_region(i as u64 + 1, s, e, 1));
        model.insert(s.clone(), (e.clone(), i as u64 + 1));
    }
    index.check_invariants();
    (index, model)
}

/// Contiguous regions over keys that share 40 bytes, then differ after 8, 16 or 32 more: the
/// leaf prefixes (8 bytes after the leaf's common prefix) tie and the arena's full keys decide.
#[test]
fn lookup_with_long_shared_prefixes() {
    let shared = [b'p'; 40];
    let mut splits: Vec<Vec<u8>> = Vec::new();
    for extra in [0usize, 8, 9, 16, 17, 32, 33] {
        for i in 0..40u8 {
            let mut k = shared.to_vec();
            k.extend(std::iter::repeat_n(b'm', extra));
            k.push(i);
            splits.push(k);
        }
    }
    splits.sort();
    splits.dedup();
    let mut bounds = Vec::new();
    let mut prev = Vec::new();
    for s in &splits {
        bounds.push((prev.clone(), s.clone()));
        prev = s.clone();
    }
    bounds.push((prev, Vec::new()));
    assert!(bounds.len() > 2 * LEAF_CAP, "several leaves");
    for seed in 0..3 {
        let (index, model) = build(&bounds, seed);
        for probe in boundary_probes(&model) {
            check_lookup(&index, &model, &probe);
        }
    }
}

/// Regions with gaps between them: a key in a gap, at a region's end or at the next start is
/// found (or not) like the model says, and keys of the last region of each leaf take the
/// leaf's end summary.
#[test]
fn lookup_with_gaps_and_leaf_ends() {
    let row = |h: u64| {
        let mut k = b"t\x80\0\0\0\0\0\0\x2a_r".to_vec();
        k.extend_from_slice(&h.to_be_bytes());
        k
    };
    // Every third region is missing; the first starts at the empty key, the last is unbounded.
    let mut bounds = vec![(Vec::new(), row(10))];
    for i in 1..600u64 {
        if i % 3 != 0 {
            bounds.push((row(i * 10), row(i * 10 + 10)));
        }
    }
    bounds.push((row(6000), Vec::new()));
    let (index, model) = build(&bounds, 9);
    for probe in boundary_probes(&model) {
        check_lookup(&index, &model, &probe);
    }
    for h in 0..6100 {
        check_lookup(&index, &model, &row(h));
    }
    // The end of a region is outside it; its start is inside.
    assert!(index.lookup(&row(20)).is_some());
    assert!(index.lookup(&row(30)).is_none());
    assert_eq!(index.lookup(b"").map(|h| h.ver_id().id()), Some(1));
    assert_eq!(
        index.lookup(&[0xFF; 30]).map(|h| h.hot() as *const _),
        index
            .search_by_key(&[0xFF; 30])
            .map(|r| r.hot() as *const _)
    );
}

/// A leaf's last region whose end falls outside the keys sharing the leaf's common prefix
/// (another table), and a one-region leaf whose region is left out of the common prefix.
#[test]
fn lookup_at_leaf_end_outside_common_prefix() {
    let mut model = BTreeMap::new();
    let mut index = RegionIndex::default();
    // Regions in table 1, then one region spanning into table 2, then table 3.
    let mut bounds = vec![(b"a".to_vec(), b"t1_0010".to_vec())];
    for i in 1..10u32 {
        bounds.push((
            format!("t1_{:04}", i * 10).into_bytes(),
            format!("t1_{:04}", i * 10 + 10).into_bytes(),
        ));
    }
    bounds.push((b"t1_0100".to_vec(), b"t2_5".to_vec()));
    bounds.push((b"t3".to_vec(), b"u".to_vec()));
    for (i, (s, e)) in bounds.iter().enumerate() {
        index.insert(bare_region(i as u64 + 1, s, e, 1));
        model.insert(s.clone(), (e.clone(), i as u64 + 1));
    }
    index.check_invariants();
    let probes: Vec<&[u8]> = vec![
        b"", b"a", b"b", b"t", b"t1", b"t1_", b"t1_0100", b"t1_9", b"t2", b"t2_4", b"t2_5",
        b"t2_6", b"t3", b"t3\xff", b"t4", b"tz", b"u", b"u\0", b"v",
    ];
    for probe in probes {
        check_lookup(&index, &model, probe);
    }
    // A single region (alone in its leaf): every key classes as sharing the empty prefix.
    let mut single = RegionIndex::default();
    single.insert(bare_region(1, b"m", b"n", 1));
    let mut one = BTreeMap::new();
    one.insert(b"m".to_vec(), (b"n".to_vec(), 1));
    for probe in [&b""[..], b"l", b"m", b"m\0", b"mz", b"n", b"n\0", b"z"] {
        check_lookup(&single, &one, probe);
    }
}

/// Random inserts and removals over keys with long common parts; after each step the
/// structure is rebuilt-equal (prefixes, offsets, arena, end summary) and lookups match.
#[test]
fn lookup_matches_model_under_churn() {
    let mut rng = fastrand::Rng::with_seed(1234);
    let key = |rng: &mut fastrand::Rng| -> Vec<u8> {
        let mut k = match rng.u8(0..3) {
            0 => b"t\x80\0\0\0\0\0\0\x2a_r\0\0\0".to_vec(),
            1 => b"same_forty_bytes_prefix_for_every_key__".to_vec(),
            _ => Vec::new(),
        };
        for _ in 0..rng.usize(0..12) {
            k.push(rng.u8(b'a'..b'e'));
        }
        k
    };
    let mut index = RegionIndex::default();
    let mut model: BTreeMap<Vec<u8>, (Vec<u8>, u64)> = BTreeMap::new();
    for step in 0..4000u64 {
        let a = key(&mut rng);
        let b = match rng.u8(0..50) {
            0 => Vec::new(),
            1..=10 => key(&mut rng),
            _ => {
                let mut b = a.clone();
                b.push(rng.u8(b'a'..b'e'));
                b
            }
        };
        if !b.is_empty() && a >= b {
            continue;
        }
        let region = bare_region(step + 1, &a, &b, step + 1);
        let overlapped = index.intersecting(&region).expect("versions only grow");
        for old in &overlapped {
            assert!(index.remove(old));
            model.remove(old.start_key().as_bytes());
        }
        index.insert(region);
        model.insert(a.clone(), (b.clone(), step + 1));
        if rng.u8(0..6) == 0 && !model.is_empty() {
            let start = model.keys().nth(rng.usize(0..model.len())).unwrap().clone();
            let region = index.search_by_key(&start).unwrap().clone();
            assert!(index.remove(&region));
            model.remove(&start);
        }
        if step % 50 == 0 {
            index.check_invariants();
        }
        for _ in 0..4 {
            check_lookup(&index, &model, &key(&mut rng));
        }
        if step % 500 == 0 {
            for probe in boundary_probes(&model) {
                check_lookup(&index, &model, &probe);
            }
        }
    }
    index.check_invariants();
    for probe in boundary_probes(&model) {
        check_lookup(&index, &model, &probe);
    }
}

/// Splits and merges of random regions, as PD reports them, over TiDB-style row keys: the
/// index grows to many leaves and shrinks again (leaves split, empty out, change their first
/// keys), with lookups, end-key lookups and scans matching the model and the structure
/// rebuilt-equal throughout.
#[test]
fn index_under_splits_and_merges() {
    let row = |h: u64| {
        let mut k = b"t\x80\0\0\0\0\0\0\x2a_r".to_vec();
        k.extend_from_slice(&h.to_be_bytes());
        k
    };
    for seed in [7, 8] {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut index = RegionIndex::default();
        index.insert(bare_region(1, b"", b"", 1));
        let mut model: Model = BTreeMap::new();
        model.insert(Vec::new(), (Vec::new(), 1));
        let mut next_id = 2;
        let mut max_leaves = 0;
        for step in 0..4000 {
            let key = row(rng.u64(0..1_000_000));
            let region = index.search_by_key(&key).unwrap().clone();
            let version = region.ver_id().version() + 1;
            let (start, end) = (region.start_key().to_vec(), region.end_key().to_vec());
            // Split while growing, then mostly merge.
            let split = if step < 2500 {
                rng.u8(0..4) > 0
            } else {
                rng.u8(0..4) == 0
            };
            if split && start != key {
                assert!(index.remove(&region));
                model.remove(&start);
                for (s, e) in [(&start, &key), (&key, &end)] {
                    index.insert(bare_region(next_id, s, e, version));
                    model.insert(s.to_vec(), (e.to_vec(), next_id));
                    next_id += 1;
                }
            } else if !split && !end.is_empty() {
                let right = index.search_by_key(&end).unwrap().clone();
                let merged_end = right.end_key().to_vec();
                let version = version.max(right.ver_id().version() + 1);
                assert!(index.remove(&region));
                assert!(index.remove(&right));
                model.remove(&start);
                model.remove(&end);
                index.insert(bare_region(next_id, &start, &merged_end, version));
                model.insert(start.clone(), (merged_end, next_id));
                next_id += 1;
            }
            max_leaves = max_leaves.max(index.leaf_count());
            if step % 50 == 0 {
                index.check_invariants();
                for _ in 0..20 {
                    let probe = row(rng.u64(0..1_000_000));
                    check_lookup(&index, &model, &probe);
                    let expect_end = model
                        .range(..probe.clone())
                        .next_back()
                        .filter(|(_, (e, _))| e.is_empty() || probe <= *e)
                        .map(|(_, (_, id))| *id);
                    assert_eq!(index.search_by_end_key(&probe).map(|r| r.id()), expect_end);
                    let expect_next = model.range(probe.clone()..).next().map(|(_, (_, id))| *id);
                    assert_eq!(index.iter_from(&probe).next().map(|r| r.id()), expect_next);
                }
            }
        }
        index.check_invariants();
        for probe in boundary_probes(&model) {
            check_lookup(&index, &model, &probe);
        }
        assert!(max_leaves > 40, "seed {seed}: {max_leaves} leaves at most");
        let order: Vec<u64> = index.iter().map(|r| r.id()).collect();
        let model_order: Vec<u64> = model.values().map(|(_, id)| *id).collect();
        assert_eq!(order, model_order);
    }
}

/// `Lcp::locate` against a plain byte comparison, for prefixes shorter and longer than the 16
/// and 32 bytes held inline.
#[test]
fn lcp_locate_matches_byte_comparison() {
    let reference = |prefix: &[u8], key: &[u8]| -> Ordering {
        if key.starts_with(prefix) {
            Ordering::Equal
        } else {
            key.cmp(prefix)
        }
    };
    let mut rng = fastrand::Rng::with_seed(5);
    for len in [0usize, 1, 7, 8, 15, 16, 17, 31, 32, 33, 50] {
        let prefix: Vec<u8> = (0..len).map(|_| rng.u8(0..4)).collect();
        let mut first = prefix.clone();
        first.push(0);
        let mut last = prefix.clone();
        last.push(9);
        let lcp = Lcp::of(&first, &last);
        assert_eq!(lcp.len, len);
        for _ in 0..400 {
            // Keys near the prefix: a piece of it, then random bytes.
            let mut key = prefix[..rng.usize(0..=len)].to_vec();
            if rng.bool() && !key.is_empty() {
                let i = rng.usize(0..key.len());
                key[i] = rng.u8(0..4);
            }
            for _ in 0..rng.usize(0..4) {
                key.push(rng.u8(0..4));
            }
            assert_eq!(
                lcp.locate(&key, || &first),
                reference(&prefix, &key),
                "prefix {prefix:?} key {key:?}"
            );
        }
    }
}

#[test]
fn key_prefix64_matches_zero_padding() {
    let reference = |k: &[u8]| {
        let mut buf = [0u8; 8];
        let n = k.len().min(8);
        buf[..n].copy_from_slice(&k[..n]);
        u64::from_be_bytes(buf)
    };
    let mut rng = fastrand::Rng::with_seed(11);
    for len in 0..20 {
        for _ in 0..50 {
            let key: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            assert_eq!(key_prefix64(&key), reference(&key), "{key:?}");
        }
    }
}

/// The hot state a hit reads is the region's own: invalidation, flags and TTL seen through
/// the index are the region's, and a recycled slot starts clean.
#[test]
fn hot_state_is_shared_with_the_region_and_recycled_clean() {
    let policy = TtlPolicy {
        ttl_ms: 1000,
        jitter_ms: 0,
    };
    let mut index = RegionIndex::default();
    let region = bare_region(1, b"a", b"c", 1);
    index.insert(region.clone());
    let hot = index.lookup(b"b").unwrap().hot();
    assert!(hot.usable(0, &policy));
    region.set_flags(flags::NEED_RELOAD_ON_ACCESS);
    assert!(
        !hot.usable(0, &policy),
        "a region to reload does not answer"
    );
    region.take_flags(flags::NEED_RELOAD_ON_ACCESS);
    assert!(hot.usable(0, &policy));
    region.invalidate(InvalidReason::Other);
    assert!(!index.lookup(b"b").unwrap().hot().usable(0, &policy));
    assert!(region.is_ttl_expired(0));

    // Drop the region everywhere; its slot goes back to the slab and a new region reusing
    // slots starts valid, without flags.
    assert!(index.remove(&region));
    drop(region);
    let fresh: Vec<Arc<CachedRegion>> = (0..64)
        .map(|i| bare_region(100 + i, &[i as u8], &[i as u8, 0], 1))
        .collect();
    for r in &fresh {
        assert_eq!(r.invalid_reason(), InvalidReason::Ok);
        assert_eq!(r.sync_flags(), 0);
        assert!(r.hot().usable(0, &policy));
        assert!(!r.hot().has_buckets());
    }
    // Slots are distinct while their regions live.
    for (i, a) in fresh.iter().enumerate() {
        for b in &fresh[i + 1..] {
            assert!(!std::ptr::eq(a.hot(), b.hot()));
        }
    }
}

/// The packed slot word: deadline, flags, invalid reason and the buckets bit change without
/// disturbing each other, and deadlines past 48 bits mean "never".
#[test]
fn hot_state_fields_are_independent() {
    let policy = TtlPolicy {
        ttl_ms: 100,
        jitter_ms: 0,
    };
    let region = bare_region(1, b"a", b"b", 1);
    assert_eq!(region.ttl_deadline(), u64::MAX, "never expires");
    assert!(!region.is_ttl_expired(u64::MAX - 1));
    region.set_ttl_deadline(1 << 50);
    assert_eq!(region.ttl_deadline(), u64::MAX, "saturates to never");
    region.set_ttl_deadline(1000);
    assert_eq!(region.ttl_deadline(), 1000);

    region.set_flags(flags::NEED_EXPIRE_AFTER_TTL | flags::NEED_DELAYED_RELOAD_PENDING);
    assert_eq!(region.ttl_deadline(), 1000);
    assert_eq!(
        region.take_flags(flags::NEED_DELAYED_RELOAD_PENDING | flags::NEED_RELOAD_ON_ACCESS),
        flags::NEED_DELAYED_RELOAD_PENDING
    );
    assert_eq!(region.sync_flags(), flags::NEED_EXPIRE_AFTER_TTL);
    // Flagged to expire at its TTL: used near the deadline, it is not extended.
    assert!(region.check_ttl(950, &policy));
    assert_eq!(region.ttl_deadline(), 1000);
    region.take_flags(flags::NEED_EXPIRE_AFTER_TTL);
    // Now it is, to now + ttl + the touch interval (capped at the TTL), and the flags stay as
    // they are.
    region.set_flags(flags::NEED_DELAYED_RELOAD_READY);
    assert!(region.check_ttl(950, &policy));
    assert_eq!(region.ttl_deadline(), 1150);
    assert_eq!(region.sync_flags(), flags::NEED_DELAYED_RELOAD_READY);
    assert!(!region.hot().usable(950, &policy), "reload-on-lookup flag");
    region.take_flags(flags::NEED_DELAYED_RELOAD_READY);
    assert!(region.hot().usable(950, &policy));
    assert!(!region.check_ttl(1150, &policy), "expired at the deadline");

    region.set_ttl_deadline(5000);
    region.set_buckets(Some(Arc::new(Buckets::new(3, Vec::new()))));
    assert!(region.hot().has_buckets());
    region.set_flags(flags::NEED_RELOAD_ON_ACCESS);
    // The first reason sticks; invalidating zeroes the deadline and keeps flags and buckets.
    region.invalidate(InvalidReason::NoLeader);
    region.invalidate(InvalidReason::EpochNotMatch);
    assert_eq!(region.invalid_reason(), InvalidReason::NoLeader);
    assert_eq!(region.ttl_deadline(), 0);
    assert_eq!(region.sync_flags(), flags::NEED_RELOAD_ON_ACCESS);
    assert!(region.hot().has_buckets());
    region.set_buckets(None);
    assert!(!region.hot().has_buckets());
    assert_eq!(region.invalid_reason(), InvalidReason::NoLeader);
}

/// Epochs past `u32::MAX` do not fit the leaf's packed epoch: a hit reports them from the
/// region, unchanged.
#[test]
fn wide_epochs_are_reported_exactly() {
    let stores = crate::locate::store::StoreCache::new(
        super::fake::FakePd::bootstrap(1) as Arc<dyn crate::pd::RegionSource>
    );
    let store = stores.put_resolved(&tikv_proto::metapb::Store {
        id: 1,
        address: "store1".to_owned(),
        ..Default::default()
    });
    let region = |id: u64, start: &[u8], end: &[u8], conf_ver: u64, version: u64| {
        Arc::new(CachedRegion::new(
            RegionParts {
                ver_id: RegionVerId::new(id, conf_ver, version),
                start_key: Bytes::copy_from_slice(start),
                end_key: Bytes::copy_from_slice(end),
                leader: Some(0),
                buckets: None,
                down_peers: Vec::new(),
                pending_peers: Vec::new(),
            },
            vec![RegionPeer {
                peer: tikv_proto::metapb::Peer {
                    id: id + 100,
                    store_id: 1,
                    ..Default::default()
                },
                store: store.clone(),
            }],
            u64::MAX,
        ))
    };
    let mut index = RegionIndex::default();
    index.insert(region(
        1,
        b"",
        b"b",
        u64::from(u32::MAX),
        u64::from(u32::MAX) - 1,
    ));
    index.insert(region(2, b"b", b"c", 1 << 40, 7));
    index.insert(region(3, b"c", b"", 5, u64::MAX));
    index.check_invariants();
    let ver = |key: &[u8]| index.lookup(key).map(|h| h.ver_id());
    assert_eq!(
        ver(b"a"),
        Some(RegionVerId::new(
            1,
            u64::from(u32::MAX),
            u64::from(u32::MAX) - 1
        ))
    );
    assert_eq!(ver(b"b"), Some(RegionVerId::new(2, 1 << 40, 7)));
    assert_eq!(ver(b"z"), Some(RegionVerId::new(3, 5, u64::MAX)));
}

/// Thousands of regions packed into a narrow key range next to a few far away: the root's
/// radix buckets are very uneven, and lookups still find every region.
#[test]
fn lookup_with_skewed_root() {
    let mut bounds = vec![(Vec::new(), b"a".to_vec())];
    let dense = |i: u32| format!("m{i:08}").into_bytes();
    bounds.push((b"a".to_vec(), dense(0)));
    for i in 0..3000 {
        bounds.push((dense(i), dense(i + 1)));
    }
    bounds.push((dense(3000), b"y".to_vec()));
    bounds.push((b"y".to_vec(), b"y\x01".to_vec()));
    bounds.push((b"z".to_vec(), Vec::new()));
    let mut index = RegionIndex::from_sorted(
        bounds
            .iter()
            .enumerate()
            .map(|(i, (s, e))| bare_region(i as u64 + 1, s, e, 1)),
    );
    index.check_invariants();
    let model: BTreeMap<Vec<u8>, (Vec<u8>, u64)> = bounds
        .iter()
        .enumerate()
        .map(|(i, (s, e))| (s.clone(), (e.clone(), i as u64 + 1)))
        .collect();
    for probe in boundary_probes(&model) {
        check_lookup(&index, &model, &probe);
    }
    // Removing every other dense region keeps the root and its radix table in step.
    for i in (0..3000).step_by(2) {
        let region = index.search_by_key(&dense(i)).unwrap().clone();
        assert!(index.remove(&region));
    }
    index.check_invariants();
    let model: BTreeMap<_, _> = model
        .into_iter()
        .filter(|(s, _)| {
            !(s.len() == 9 && s[0] == b'm' && {
                let i: u32 = std::str::from_utf8(&s[1..]).unwrap().parse().unwrap();
                i < 3000 && i.is_multiple_of(2)
            })
        })
        .collect();
    for probe in boundary_probes(&model) {
        check_lookup(&index, &model, &probe);
    }
}

/// Regions removed one by one from the front, then from the back: leaves empty out (the first
/// one over and over, each time giving the root a new first leaf outside its common prefix),
/// lookups keep matching, and the emptied index takes new regions.
#[test]
fn draining_the_index_from_either_end() {
    let row = |h: u64| {
        let mut k = b"t\x80\0\0\0\0\0\0\x2a_r".to_vec();
        k.extend_from_slice(&h.to_be_bytes());
        k
    };
    let mut bounds = vec![(Vec::new(), row(10))];
    for i in 1..1500u64 {
        bounds.push((row(i * 10), row(i * 10 + 10)));
    }
    bounds.push((row(15_000), Vec::new()));
    for from_front in [true, false] {
        let mut model: Model = bounds
            .iter()
            .enumerate()
            .map(|(i, (s, e))| (s.clone(), (e.clone(), i as u64 + 1)))
            .collect();
        let mut index = RegionIndex::from_sorted(
            bounds
                .iter()
                .enumerate()
                .map(|(i, (s, e))| bare_region(i as u64 + 1, s, e, 1)),
        );
        assert!(index.leaf_count() > 40);
        let mut step = 0;
        while let Some(start) = if from_front {
            model.keys().next().cloned()
        } else {
            model.keys().next_back().cloned()
        } {
            let region = index.search_by_key(&start).unwrap().clone();
            assert!(index.remove(&region));
            model.remove(&start);
            if step % 40 == 0 {
                index.check_invariants();
                for h in (0..15_100).step_by(97) {
                    check_lookup(&index, &model, &row(h));
                }
                check_lookup(&index, &model, b"");
            }
            step += 1;
        }
        index.check_invariants();
        assert_eq!(index.len(), 0);
        assert_eq!(index.leaf_count(), 0);
        assert!(index.lookup(b"").is_none());
        index.insert(bare_region(9, b"a", b"b", 1));
        index.insert(bare_region(10, b"", b"a", 1));
        index.check_invariants();
        assert_eq!(index.lookup(b"").map(|h| h.ver_id().id()), Some(10));
        assert_eq!(index.lookup(b"a").map(|h| h.ver_id().id()), Some(9));
    }
}

/// A write copies the root and the one or two leaves it touches: every other leaf of a
/// 20k-region index stays shared with the snapshot it was cloned from.
#[test]
fn a_write_copies_only_the_leaves_it_touches() {
    let row = |h: u64| {
        let mut k = b"t\x80\0\0\0\0\0\0\x2a_r".to_vec();
        k.extend_from_slice(&h.to_be_bytes());
        k
    };
    let n = 20_000u64;
    let index = RegionIndex::from_sorted((0..n).map(|i| {
        let start = if i == 0 { Vec::new() } else { row(i * 100) };
        let end = if i + 1 == n {
            Vec::new()
        } else {
            row(i * 100 + 100)
        };
        bare_region(i + 1, &start, &end, 1)
    }));
    let leaves = index.leaf_count();

    // A newer view of one region replaces it in place.
    let mut next = index.clone();
    let old = next.search_by_key(&row(777_700)).unwrap().clone();
    assert!(next.remove(&old));
    next.insert(bare_region(7778, &row(777_700), &row(777_800), 2));
    next.check_invariants();
    assert_eq!(next.shared_leaves(&index), leaves - 1);

    // Splits of neighbouring regions until their leaf splits: only those leaves are new.
    let mut next = index.clone();
    for i in 0..(LEAF_CAP as u64 * 2) {
        let old = next.search_by_key(&row(500_000 + i)).unwrap().clone();
        assert!(next.remove(&old));
        let (start, end) = (old.start_key().as_bytes(), old.end_key().as_bytes());
        next.insert(bare_region(n + 2 * i, start, &row(500_000 + i + 1), 2));
        next.insert(bare_region(n + 2 * i + 1, &row(500_000 + i + 1), end, 2));
    }
    next.check_invariants();
    assert!(next.leaf_count() > leaves);
    let shared = next.shared_leaves(&index);
    assert!(shared + 3 >= leaves, "{shared} of {leaves} leaves shared");
}

/// The TTL extension by use: written at most once per touch interval however often the region
/// is used and the clock moves, never leaving less than `ttl` ahead of a use, and never more
/// than `ttl + max(jitter, interval)`; a region left alone expires within those bounds.
#[test]
fn ttl_touch_is_throttled_and_keeps_the_ttl() {
    for jitter_ms in [0, 300, 5_000] {
        let policy = TtlPolicy {
            ttl_ms: 10_000,
            jitter_ms,
        };
        let most_ahead = policy.ttl_ms + jitter_ms.max(TTL_TOUCH_INTERVAL_MS);
        let region = bare_region(1, b"a", b"b", 1);
        region.set_ttl_deadline(policy.next_deadline(0));
        let mut writes = 0;
        let mut deadline = region.ttl_deadline();
        // Used every millisecond for a minute of the cache's clock.
        for now in 0..60_000 {
            assert!(
                region.check_ttl(now, &policy),
                "expired while in use at {now}"
            );
            let after = region.ttl_deadline();
            assert!(
                after >= now + policy.ttl_ms,
                "less than the TTL ahead at {now}"
            );
            if after != deadline {
                assert!(after <= now + most_ahead, "too far ahead at {now}: {after}");
                assert!(after >= now + policy.ttl_ms + TTL_TOUCH_INTERVAL_MS);
                writes += 1;
                deadline = after;
            }
        }
        let most_writes = 60_000 / TTL_TOUCH_INTERVAL_MS + 1;
        assert!(
            writes <= most_writes,
            "jitter {jitter_ms}: {writes} writes in 60 s"
        );
        assert!(
            writes >= 60_000 / most_ahead,
            "jitter {jitter_ms}: extended {writes} times"
        );
        // Left alone after its last use (at 59 999), it expires within the bounds.
        let last_use = 59_999;
        assert!(region.check_ttl(last_use + policy.ttl_ms - 1, &policy));
        let region = bare_region(2, b"a", b"b", 1);
        region.set_ttl_deadline(policy.extended_deadline(last_use));
        assert!(!region.is_ttl_expired(last_use + policy.ttl_ms));
        assert!(region.is_ttl_expired(last_use + most_ahead));
    }
    // A flagged region is never extended, and a TTL under the interval caps the interval.
    let policy = TtlPolicy {
        ttl_ms: 100,
        jitter_ms: 0,
    };
    assert_eq!(policy.extended_deadline(1_000), 1_200);
    let region = bare_region(3, b"a", b"b", 1);
    region.set_ttl_deadline(1_050);
    region.set_flags(flags::NEED_EXPIRE_AFTER_TTL);
    assert!(region.check_ttl(1_000, &policy));
    assert_eq!(region.ttl_deadline(), 1_050);
    assert!(!region.check_ttl(1_050, &policy));
}
