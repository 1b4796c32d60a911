//! Pure functions: containment, buckets, gap checks, range trimming, the merger, the index.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tikv_proto::metapb;

use super::bare_region;
use crate::Key;
use crate::locate::batch::{KeyRange, Merger, ranges_after_key, regions_have_gap_in_ranges};
use crate::locate::index::{LEAF_CAP, RegionIndex};
use crate::locate::location::{Bucket, Buckets, KeyLocation};
use crate::locate::region::{RegionVerId, contains, contains_by_end};
use crate::pd::RegionInfo;

fn k(s: &str) -> Key {
    Key::copy_from_slice(s.as_bytes())
}

// client-go TestContains.
#[test]
fn contains_cases() {
    assert!(contains(b"", b"", b""));
    assert!(contains(b"", b"", &[10]));
    assert!(!contains(&[10], b"", b""));
    assert!(!contains(&[10], b"", &[9]));
    assert!(contains(&[10], b"", &[10]));
    assert!(contains(b"", &[10], b""));
    assert!(contains(b"", &[10], &[9]));
    assert!(!contains(b"", &[10], &[10]));
    assert!(!contains(&[10], &[20], b""));
    assert!(contains(&[10], &[20], &[15]));
    assert!(!contains(&[10], &[20], &[30]));
}

// client-go TestContainsByEnd.
#[test]
fn contains_by_end_cases() {
    assert!(contains_by_end(b"", b"", b""));
    assert!(contains_by_end(b"", b"", &[10]));
    assert!(contains_by_end(&[10], b"", b""));
    assert!(!contains_by_end(&[10], b"", &[10]));
    assert!(contains_by_end(&[10], b"", &[11]));
    assert!(!contains_by_end(b"", &[10], b""));
    assert!(contains_by_end(b"", &[10], &[10]));
    assert!(!contains_by_end(b"", &[10], &[11]));
    assert!(!contains_by_end(&[10], &[20], b""));
    assert!(contains_by_end(&[10], &[20], &[15]));
    assert!(!contains_by_end(&[10], &[20], &[30]));
}

fn location(start: &str, end: &str, buckets: Option<(u64, &[&str])>) -> KeyLocation {
    KeyLocation::for_test(
        RegionVerId::new(1, 1, 1),
        start.as_bytes(),
        end.as_bytes(),
        buckets.map(|(v, keys)| Buckets::new(v, keys.iter().map(|s| k(s)).collect())),
    )
}

// client-go TestLocateBucket (and the locateBucket checks of TestBuckets).
#[test]
fn locate_bucket_cases() {
    // Bucket keys span the region exactly.
    let loc = location("", "", Some((7, &["", "a", "b", ""])));
    for key in ["", "`", "a", "a0", "b", "c"] {
        let b = loc.locate_bucket(key.as_bytes()).expect("bucket");
        assert!(b.contains(key.as_bytes()), "{key}");
    }
    assert_eq!(loc.bucket_version(), 7);
    // Stale buckets that do not cover the key: the strict search finds nothing; the public one
    // falls back to the region's edges.
    let loc = location("", "", Some((8, &["a", "b"])));
    for key in ["`", "c"] {
        let b = loc.locate_bucket(key.as_bytes()).expect("bucket");
        assert!(b.contains(key.as_bytes()), "{key}");
    }
    let b = loc.locate_bucket(b"`").unwrap();
    assert_eq!((b.start_key(), b.end_key()), (&k(""), &k("a")));
    let b = loc.locate_bucket(b"c").unwrap();
    assert_eq!((b.start_key(), b.end_key()), (&k("b"), &k("")));
    // Outside the region: none.
    let loc = location("b", "d", Some((1, &["b", "c", "d"])));
    assert!(loc.locate_bucket(b"a").is_none());
    assert!(loc.locate_bucket(b"d").is_none());
    // No buckets: the whole region.
    let loc = location("b", "d", None);
    let b = loc.locate_bucket(b"c").unwrap();
    assert_eq!((b.start_key(), b.end_key()), (&k("b"), &k("d")));
    assert_eq!(loc.bucket_version(), 0);
}

// client-go TestBucketClampingToRegion: each case is (region, bucket, expected).
#[test]
fn bucket_clamping_to_region() {
    let cases: [(&str, &str, &str, &str, &str, &str); 13] = [
        ("a", "z", "f", "m", "f", "m"),
        ("f", "z", "a", "m", "f", "m"),
        ("a", "m", "f", "z", "f", "m"),
        ("f", "m", "a", "z", "f", "m"),
        ("", "m", "a", "z", "a", "m"),
        ("f", "", "a", "z", "f", "z"),
        ("m", "z", "a", "f", "m", "z"),
        ("f", "z", "", "m", "f", "m"),
        ("a", "m", "f", "", "f", "m"),
        ("", "z", "", "m", "", "m"),
        ("a", "", "f", "", "f", ""),
        ("f", "m", "", "", "f", "m"),
        ("", "", "a", "z", "a", "z"),
    ];
    for (rs, re, bs, be, ws, we) in cases {
        let loc = location(rs, re, None);
        let b = loc.clamp_bucket(Bucket::new(k(bs), k(be)));
        assert_eq!(
            (b.start_key(), b.end_key()),
            (&k(ws), &k(we)),
            "region [{rs},{re}) bucket [{bs},{be})"
        );
    }
}

fn ranges(keys: &[&str]) -> Vec<KeyRange> {
    keys.chunks(2)
        .map(|c| {
            (
                Bytes::copy_from_slice(c[0].as_bytes()),
                Bytes::copy_from_slice(c[1].as_bytes()),
            )
        })
        .collect()
}

fn infos(keys: &[&str]) -> Vec<RegionInfo> {
    keys.chunks(2)
        .map(|c| RegionInfo {
            region: metapb::Region {
                start_key: Bytes::copy_from_slice(c[0].as_bytes()),
                end_key: Bytes::copy_from_slice(c[1].as_bytes()),
                ..Default::default()
            },
            ..Default::default()
        })
        .collect()
}

// client-go TestRangesAreCoveredCheck (limit -1 there is 0 here).
#[test]
fn gap_check_cases() {
    let check = |r: &[&str], g: &[&str], limit: usize, expect: bool| {
        assert_eq!(
            regions_have_gap_in_ranges(&ranges(r), &infos(g), limit),
            expect,
            "ranges {r:?} regions {g:?} limit {limit}"
        );
    };
    let bound: [&[&str]; 3] = [
        &["a", "c"],
        &["a", "b", "b", "c"],
        &["a", "a1", "a1", "b", "b", "b1", "b1", "c"],
    ];
    for c in bound {
        check(c, &["a", "c"], 0, false);
        check(c, &["a", ""], 0, false);
        check(c, &["", "c"], 0, false);
        check(c, &["a", "b"], 0, true);
        check(c, &["b", "c"], 0, true);
        check(c, &["b", ""], 0, true);
        check(c, &["", "b"], 0, true);
        check(c, &["a", "b", "b", "c"], 0, false);
        check(c, &["", "b", "b", "c"], 0, false);
        check(c, &["a", "b", "b", ""], 0, false);
        check(c, &["", "b", "b", ""], 0, false);
        check(c, &["a", "b", "b1", "c"], 0, true);
        check(c, &["", "b", "b1", "c"], 0, true);
        check(c, &["a", "b", "b1", ""], 0, true);
        check(c, &["", "b", "b1", ""], 0, true);
        check(c, &[], 0, true);
    }
    let non_continuous: [&[&str]; 4] = [
        &["a", "b", "c", "d"],
        &["a", "b1", "b1", "b", "c", "d"],
        &["a", "b", "c", "c1", "c1", "d"],
        &["a", "b1", "b1", "b", "c", "c1", "c1", "d"],
    ];
    for c in non_continuous {
        check(c, &["a", "d"], 0, false);
        check(c, &["", "d"], 0, false);
        check(c, &["a", ""], 0, false);
        check(c, &["", ""], 0, false);
        check(c, &["a", "b"], 0, true);
        check(c, &["b", "c"], 0, true);
        check(c, &["c", "d"], 0, true);
        check(c, &["", "b"], 0, true);
        check(c, &["c", ""], 0, true);
    }
    let unbound: [&[&str]; 3] = [
        &["", ""],
        &["", "b", "b", ""],
        &["", "a1", "a1", "b", "b", "b1", "b1", ""],
    ];
    for c in unbound {
        check(c, &["", ""], 0, false);
        check(c, &["a", "c"], 0, true);
        check(c, &["a", ""], 0, true);
        check(c, &["", "c"], 0, true);
        check(c, &["", "b", "b", ""], 0, false);
        check(c, &["", "b", "b1", ""], 0, true);
        check(c, &["a", "b", "b", ""], 0, true);
        check(c, &["", "b", "b", "c"], 0, true);
        check(c, &[], 0, true);
    }
    check(&["", "b"], &["", "a"], 0, true);
    check(&["", "b"], &["", "a"], 1, false);
    check(&["", "b"], &["", "a"], 2, true);
    check(&["a", ""], &["b", ""], 0, true);
    check(&["a", ""], &["b", ""], 1, true);
    check(&["a", ""], &["b", "c"], 1, true);
    check(&["a", ""], &["a", ""], 0, false);
}

// client-go TestSplitKeyRanges.
#[test]
fn ranges_after_key_cases() {
    let check = |r: &[&str], split: &str, expect: &[&str]| {
        let got = ranges_after_key(ranges(r), split.as_bytes());
        assert_eq!(got, ranges(expect), "{r:?} after {split:?}");
    };
    check(&["a", "c"], "a", &["a", "c"]);
    check(&["b", "c"], "a", &["b", "c"]);
    check(&["a", "c"], "b", &["b", "c"]);
    check(&["a", "c"], "c", &[]);
    check(&["a", "c"], "", &[]);
    check(&["a", ""], "b", &["b", ""]);
    check(&["a", ""], "", &[]);
    check(&["a", "b", "c", "f"], "a1", &["a1", "b", "c", "f"]);
    check(&["a", "b", "c", "f"], "b", &["c", "f"]);
    check(&["a", "b", "c", "f"], "b1", &["c", "f"]);
    check(&["a", "b", "c", "f"], "c", &["c", "f"]);
    check(&["a", "b", "c", "f"], "d", &["d", "f"]);
}

// client-go TestBatchScanRegionsMerger.
#[test]
fn merger_cases() {
    let regions = |keys: &[&str]| -> Vec<Arc<_>> {
        keys.chunks(2)
            .enumerate()
            .map(|(i, c)| bare_region(i as u64 + 1, c[0].as_bytes(), c[1].as_bytes(), 1))
            .collect()
    };
    let check = |uncached: &[&str], cached: &[&str], expect: &[&str]| {
        let mut merger = Merger::new(regions(cached), 0);
        for r in regions(uncached) {
            merger.append_loaded(&r);
        }
        let got: Vec<String> = merger
            .build()
            .iter()
            .flat_map(|l| {
                [
                    String::from_utf8_lossy(l.start_key().as_bytes()).into_owned(),
                    String::from_utf8_lossy(l.end_key().as_bytes()).into_owned(),
                ]
            })
            .collect();
        assert_eq!(got, expect, "uncached {uncached:?} cached {cached:?}");
    };
    check(
        &["b", "c", "c", "d"],
        &["a", "b"],
        &["a", "b", "b", "c", "c", "d"],
    );
    check(
        &["a", "b", "c", "d"],
        &["b", "c"],
        &["a", "b", "b", "c", "c", "d"],
    );
    check(
        &["a", "b", "b", "c"],
        &["c", "d"],
        &["a", "b", "b", "c", "c", "d"],
    );
    check(&["", ""], &["a", "b", "b", "c"], &["", ""]);
    check(&["", "b"], &["a", "b", "b", "c"], &["", "b", "b", "c"]);
    check(&["b", ""], &["a", "b", "b", "c"], &["a", "b", "b", ""]);
    check(&["b", ""], &["a", "b", "c", "d"], &["a", "b", "b", ""]);
    check(&["b", "e"], &["a", "b", "c", "d"], &["a", "b", "b", "e"]);
    check(
        &["b", "i"],
        &["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"],
        &["a", "b", "b", "i", "i", "j"],
    );
    check(
        &["b", "d"],
        &["a", "b", "c", "e"],
        &["a", "b", "b", "d", "c", "e"],
    );
    check(
        &["b", "d", "d", "f"],
        &["a", "b", "c", "e"],
        &["a", "b", "b", "d", "d", "f"],
    );
    check(
        &["b", "d", "d", "e", "e", "g"],
        &["a", "b", "c", "f"],
        &["a", "b", "b", "d", "d", "e", "e", "g"],
    );
    check(
        &["b", "d", "d", "e", "f", "h"],
        &["a", "b", "c", "g"],
        &["a", "b", "b", "d", "d", "e", "c", "g", "f", "h"],
    );
}

/// Random inserts (with overlap eviction) and removals, checked against a `BTreeMap` model,
/// with keys that share long prefixes so that the full-key tie-break runs.
#[test]
fn index_matches_model() {
    let mut rng = fastrand::Rng::with_seed(42);
    let key = |rng: &mut fastrand::Rng| -> Vec<u8> {
        // Longer than the 32 bytes of common prefix kept inline, to run the slow path too.
        let mut k = b"a_shared_prefix_longer_than_32_bytes_xyz".to_vec();
        if rng.u8(0..10) == 0 {
            k.truncate(rng.usize(0..k.len()));
        }
        for _ in 0..rng.usize(0..6) {
            k.push(rng.u8(b'a'..b'i'));
        }
        k
    };
    let mut index = RegionIndex::default();
    // model: start -> (end, id)
    let mut model: BTreeMap<Vec<u8>, (Vec<u8>, u64)> = BTreeMap::new();
    let mut max_len = 0;
    for step in 0..6000u64 {
        let a = key(&mut rng);
        let mut b = match rng.u8(0..200) {
            0 => Vec::new(),        // unbounded
            1..=4 => key(&mut rng), // wide (or empty, skipped below)
            _ => {
                // Narrow: only keys with `a` as a prefix below `a` + one byte.
                let mut b = a.clone();
                b.push(rng.u8(0..3));
                b
            }
        };
        if !b.is_empty() && b < a {
            b = a.clone();
            b.push(b'a');
        }
        if !b.is_empty() && a >= b {
            continue;
        }
        let region = bare_region(step + 1, &a, &b, step + 1);
        let overlapped = index.intersecting(&region).expect("versions only grow");
        for old in &overlapped {
            assert!(index.remove(old));
            model.remove(old.start_key().as_bytes());
        }
        // The model's own overlap set must match.
        let overlaps_model = |s: &Vec<u8>, e: &Vec<u8>| {
            (e.is_empty() || e.as_slice() > a.as_slice()) && (b.is_empty() || s < &b)
        };
        assert!(model.iter().all(|(s, (e, _))| !overlaps_model(s, e)));
        index.insert(region);
        model.insert(a.clone(), (b.clone(), step + 1));
        if rng.u8(0..8) == 0 && !model.is_empty() {
            let start = model.keys().nth(rng.usize(0..model.len())).unwrap().clone();
            let region = index.search_by_key(&start).unwrap().clone();
            assert!(index.remove(&region));
            model.remove(&start);
        }
        if step % 97 == 0 {
            index.check_invariants();
        }
        max_len = max_len.max(index.len());
        for _ in 0..4 {
            let probe = key(&mut rng);
            let expect = model
                .range(..=probe.clone())
                .next_back()
                .filter(|(_, (e, _))| e.is_empty() || probe < *e)
                .map(|(_, (_, id))| *id);
            assert_eq!(index.search_by_key(&probe).map(|r| r.id()), expect);
            let expect_end = if probe.is_empty() {
                model
                    .iter()
                    .next_back()
                    .filter(|(_, (e, _))| e.is_empty())
                    .map(|(_, (_, id))| *id)
            } else {
                model
                    .range(..probe.clone())
                    .next_back()
                    .filter(|(_, (e, _))| e.is_empty() || probe <= *e)
                    .map(|(_, (_, id))| *id)
            };
            assert_eq!(index.search_by_end_key(&probe).map(|r| r.id()), expect_end);
            let expect_next = model.range(probe.clone()..).next().map(|(_, (_, id))| *id);
            assert_eq!(index.iter_from(&probe).next().map(|r| r.id()), expect_next);
        }
    }
    index.check_invariants();
    assert!(
        max_len > LEAF_CAP,
        "the test should split leaves: {max_len}"
    );
    let order: Vec<u64> = index.iter().map(|r| r.id()).collect();
    let model_order: Vec<u64> = model.values().map(|(_, id)| *id).collect();
    assert_eq!(order, model_order);
}

#[test]
fn index_insert_refuses_older_overlapping_version() {
    let mut index = RegionIndex::default();
    index.insert(bare_region(1, b"a", b"c", 5));
    assert!(index.intersecting(&bare_region(2, b"b", b"d", 4)).is_err());
    assert!(index.intersecting(&bare_region(2, b"", b"b", 4)).is_err());
    let found = index.intersecting(&bare_region(2, b"b", b"d", 6)).unwrap();
    assert_eq!(found.len(), 1);
}

/// A bulk-built index answers like one built by inserts, for TiDB-like row keys that share
/// their first 15 bytes (the case the common-prefix search exists for) and for the empty
/// first key.
#[test]
fn bulk_built_index_with_row_keys() {
    let row = |h: u64| {
        let mut k = b"t\x80\0\0\0\0\0\0\x2a_r".to_vec();
        k.extend_from_slice(&h.to_be_bytes());
        k
    };
    let bounds: Vec<Vec<u8>> = std::iter::once(Vec::new())
        .chain((1..1000).map(|i| row(i * 100)))
        .chain(std::iter::once(Vec::new()))
        .collect();
    let regions: Vec<_> = bounds
        .windows(2)
        .enumerate()
        .map(|(i, w)| bare_region(i as u64 + 1, &w[0], &w[1], 1))
        .collect();
    let bulk = RegionIndex::from_sorted(regions.clone());
    bulk.check_invariants();
    let mut one_by_one = RegionIndex::default();
    for r in regions.iter().rev() {
        one_by_one.insert(r.clone());
    }
    one_by_one.check_invariants();
    for h in (0..100_500).step_by(37) {
        let key = row(h);
        let expect = h / 100 + 1;
        assert_eq!(bulk.search_by_key(&key).unwrap().id(), expect.min(1000));
        assert_eq!(
            one_by_one.search_by_key(&key).unwrap().id(),
            expect.min(1000)
        );
    }
    assert_eq!(bulk.search_by_key(b"").unwrap().id(), 1);
    assert_eq!(bulk.search_by_key(b"t").unwrap().id(), 1);
    assert_eq!(bulk.search_by_key(b"u").unwrap().id(), 1000);
    assert_eq!(bulk.search_by_end_key(&row(100)).unwrap().id(), 1);
    assert_eq!(bulk.search_by_end_key(&row(101)).unwrap().id(), 2);
    assert_eq!(bulk.search_by_end_key(b"").unwrap().id(), 1000);
    assert_eq!(bulk.iter_from(b"").next().unwrap().id(), 1);
    assert_eq!(bulk.iter_from(&row(100)).next().unwrap().id(), 2);
    assert_eq!(bulk.iter_from(&row(101)).next().unwrap().id(), 3);
    assert_eq!(bulk.iter().count(), 1000);
}

#[test]
fn key_prefix_matches_zero_padding() {
    use crate::locate::prefix::key_prefix;
    let reference = |k: &[u8]| {
        let mut buf = [0u8; 16];
        let n = k.len().min(16);
        buf[..n].copy_from_slice(&k[..n]);
        u128::from_be_bytes(buf)
    };
    let mut rng = fastrand::Rng::with_seed(7);
    for len in 0..40 {
        for _ in 0..50 {
            let key: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            assert_eq!(key_prefix(&key), reference(&key), "{key:?}");
        }
    }
}
