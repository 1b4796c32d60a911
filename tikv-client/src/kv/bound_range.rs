//! [`BoundRange`]: a key range written as any Rust range expression.

use std::ops::{
    Bound, Range, RangeBounds, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive,
};

use super::key::{BytesDisplay, Key};
use crate::{Error, Result};

/// A range of keys, with an included, excluded or missing bound at each end.
///
/// Every Rust range expression over key-like values converts into one, so APIs that take
/// `impl Into<BoundRange>` accept `"a".."m"`, `"a"..="m"`, `"a"..`, `..`, and
/// `(Bound<K>, Bound<K>)` pairs alike. TiKV itself only speaks `[start, end)`;
/// [`into_keys`](BoundRange::into_keys) lowers any range to that form.
///
/// TiKV reads an empty exclusive end key as "no upper bound", and this type follows suit: an
/// excluded empty end is stored as [`Bound::Unbounded`], so `"a"..""` is the same range as
/// `"a"..`. That is what makes `prefix..prefix.prefix_next()` correct even for a prefix of only
/// `0xFF` bytes, whose [`prefix_next`](Key::prefix_next) is empty. Likewise an included empty start
/// is stored as unbounded, since the empty key is the smallest key. An *included* empty end is not
/// special: `..=""` holds just the empty key.
///
/// ```
/// use std::ops::Bound;
/// use tikv_client::{BoundRange, Key};
///
/// let range = BoundRange::from("a"..="m");
/// assert!(range.contains(b"m"));
/// assert!(!range.contains(b"m\0"));
/// let (start, end) = range.into_keys();
/// assert_eq!((start, end), (Key::from("a"), Some(Key::from("m\0"))));
///
/// let everything = BoundRange::from(..);
/// assert_eq!(everything.into_keys(), (Key::EMPTY, None));
///
/// let after_a = BoundRange::from((Bound::Excluded("a"), Bound::Unbounded));
/// assert!(!after_a.contains(b"a"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BoundRange {
    start: Bound<Key>,
    end: Bound<Key>,
}

impl BoundRange {
    /// A range from explicit bounds. An excluded empty end and an included empty start become
    /// [`Bound::Unbounded`] (see the type docs).
    ///
    /// ```
    /// use std::ops::Bound;
    /// use tikv_client::{BoundRange, Key};
    /// let r = BoundRange::new(Bound::Included(Key::from("a")), Bound::Excluded(Key::from("m")));
    /// assert!(r.contains(b"a") && !r.contains(b"m"));
    /// ```
    pub fn new(start: Bound<Key>, end: Bound<Key>) -> BoundRange {
        let start = match start {
            Bound::Included(key) if key.is_empty() => Bound::Unbounded,
            other => other,
        };
        let end = match end {
            Bound::Excluded(key) if key.is_empty() => Bound::Unbounded,
            other => other,
        };
        BoundRange { start, end }
    }

    /// The lower bound.
    ///
    /// ```
    /// use std::ops::Bound;
    /// use tikv_client::{BoundRange, Key};
    /// assert_eq!(BoundRange::from("a"..).start(), Bound::Included(&Key::from("a")));
    /// ```
    pub fn start(&self) -> Bound<&Key> {
        self.start.as_ref()
    }

    /// The upper bound.
    ///
    /// ```
    /// use std::ops::Bound;
    /// use tikv_client::BoundRange;
    /// assert_eq!(BoundRange::from("a"..).end(), Bound::Unbounded);
    /// ```
    pub fn end(&self) -> Bound<&Key> {
        self.end.as_ref()
    }

    /// The two bounds, by value.
    ///
    /// ```
    /// use std::ops::Bound;
    /// use tikv_client::{BoundRange, Key};
    /// let (start, _end) = BoundRange::from("a"..="b").into_bounds();
    /// assert_eq!(start, Bound::Included(Key::from("a")));
    /// ```
    pub fn into_bounds(self) -> (Bound<Key>, Bound<Key>) {
        (self.start, self.end)
    }

    /// The range as TiKV wants it: an inclusive start key and an exclusive end key, where `None`
    /// (sent as an empty end key) means unbounded.
    ///
    /// An excluded start and an included end are shifted with [`Key::next_key`], the immediate
    /// successor, so the set of keys is unchanged: `..=[0xFF]` ends before `[0xFF, 0x00]`.
    ///
    /// ```
    /// use tikv_client::{BoundRange, Key};
    /// assert_eq!(BoundRange::from("a".."b").into_keys(), (Key::from("a"), Some(Key::from("b"))));
    /// ```
    pub fn into_keys(self) -> (Key, Option<Key>) {
        let start = match self.start {
            Bound::Included(key) => key,
            Bound::Excluded(key) => key.next_key(),
            Bound::Unbounded => Key::EMPTY,
        };
        let end = match self.end {
            Bound::Included(key) => Some(key.next_key()),
            Bound::Excluded(key) => Some(key),
            Bound::Unbounded => None,
        };
        (start, end)
    }

    /// Whether `key` lies in the range.
    ///
    /// ```
    /// use tikv_client::BoundRange;
    /// assert!(BoundRange::from("a".."b").contains(b"a\xff"));
    /// ```
    pub fn contains(&self, key: &[u8]) -> bool {
        let above_start = match &self.start {
            Bound::Included(start) => key >= start.as_bytes(),
            Bound::Excluded(start) => key > start.as_bytes(),
            Bound::Unbounded => true,
        };
        let below_end = match &self.end {
            Bound::Included(end) => key <= end.as_bytes(),
            Bound::Excluded(end) => key < end.as_bytes(),
            Bound::Unbounded => true,
        };
        above_start && below_end
    }

    /// Whether no key at all lies in the range, e.g. `"b".."a"`, `"a".."a"` or
    /// `(Excluded("a"), Excluded("a\0"))`.
    ///
    /// ```
    /// use tikv_client::BoundRange;
    /// assert!(BoundRange::from("b".."b").is_empty_range());
    /// assert!(!BoundRange::from("a".."b").is_empty_range());
    /// ```
    pub fn is_empty_range(&self) -> bool {
        match (&self.start, &self.end) {
            (Bound::Unbounded, _) | (_, Bound::Unbounded) => false,
            (Bound::Included(start), Bound::Included(end)) => end < start,
            (Bound::Included(start), Bound::Excluded(end))
            | (Bound::Excluded(start), Bound::Included(end)) => end <= start,
            // The smallest key above `start` is `start` + 0x00, so nothing fits below that.
            (Bound::Excluded(start), Bound::Excluded(end)) => {
                end <= start || is_successor(start.as_bytes(), end.as_bytes())
            }
        }
    }

    /// Checks that the end does not sort before the start, returning
    /// [`Error::InvalidArgument`] if it does.
    ///
    /// An empty but well-ordered range such as `"a".."a"` passes: it simply holds no keys (see
    /// [`is_empty_range`](BoundRange::is_empty_range)).
    ///
    /// ```
    /// use tikv_client::BoundRange;
    /// assert!(BoundRange::from("a".."b").validate().is_ok());
    /// assert!(BoundRange::from("b".."a").validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        let start = match &self.start {
            Bound::Included(key) | Bound::Excluded(key) => key,
            Bound::Unbounded => return Ok(()),
        };
        let end = match &self.end {
            Bound::Included(key) | Bound::Excluded(key) => key,
            Bound::Unbounded => return Ok(()),
        };
        if end < start {
            return Err(Error::invalid_argument(format!(
                "key range end {} sorts before its start {}; a range always runs from the smaller \
                 key to the larger one (reverse scans take the same ascending range)",
                BytesDisplay(end.as_bytes()),
                BytesDisplay(start.as_bytes()),
            )));
        }
        Ok(())
    }
}

/// Whether `next` is `key` followed by one `0x00` byte.
fn is_successor(key: &[u8], next: &[u8]) -> bool {
    next.len() == key.len() + 1 && next.starts_with(key) && next.last() == Some(&0)
}

impl RangeBounds<Key> for BoundRange {
    fn start_bound(&self) -> Bound<&Key> {
        self.start()
    }

    fn end_bound(&self) -> Bound<&Key> {
        self.end()
    }
}

impl<K: Into<Key>> From<Range<K>> for BoundRange {
    fn from(range: Range<K>) -> BoundRange {
        BoundRange::new(
            Bound::Included(range.start.into()),
            Bound::Excluded(range.end.into()),
        )
    }
}

impl<K: Into<Key>> From<RangeInclusive<K>> for BoundRange {
    fn from(range: RangeInclusive<K>) -> BoundRange {
        let (start, end) = range.into_inner();
        BoundRange::new(Bound::Included(start.into()), Bound::Included(end.into()))
    }
}

impl<K: Into<Key>> From<RangeFrom<K>> for BoundRange {
    fn from(range: RangeFrom<K>) -> BoundRange {
        BoundRange::new(Bound::Included(range.start.into()), Bound::Unbounded)
    }
}

impl<K: Into<Key>> From<RangeTo<K>> for BoundRange {
    fn from(range: RangeTo<K>) -> BoundRange {
        BoundRange::new(Bound::Unbounded, Bound::Excluded(range.end.into()))
    }
}

impl<K: Into<Key>> From<RangeToInclusive<K>> for BoundRange {
    fn from(range: RangeToInclusive<K>) -> BoundRange {
        BoundRange::new(Bound::Unbounded, Bound::Included(range.end.into()))
    }
}

impl From<RangeFull> for BoundRange {
    fn from(_: RangeFull) -> BoundRange {
        BoundRange::new(Bound::Unbounded, Bound::Unbounded)
    }
}

impl<K: Into<Key>> From<(Bound<K>, Bound<K>)> for BoundRange {
    fn from((start, end): (Bound<K>, Bound<K>)) -> BoundRange {
        BoundRange::new(start.map(Into::into), end.map(Into::into))
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound::{Excluded, Included, Unbounded};

    use super::*;

    fn k(bytes: &[u8]) -> Key {
        Key::copy_from_slice(bytes)
    }

    fn keys(range: impl Into<BoundRange>) -> (Vec<u8>, Option<Vec<u8>>) {
        let (start, end) = range.into().into_keys();
        (start.to_vec(), end.map(|e| e.to_vec()))
    }

    #[test]
    fn from_range() {
        let r = BoundRange::from("a".."c");
        assert_eq!(r.start(), Included(&k(b"a")));
        assert_eq!(r.end(), Excluded(&k(b"c")));
        assert_eq!(keys("a".."c"), (b"a".to_vec(), Some(b"c".to_vec())));
    }

    #[test]
    fn from_range_inclusive() {
        let r = BoundRange::from("a"..="c");
        assert_eq!(
            (r.start(), r.end()),
            (Included(&k(b"a")), Included(&k(b"c")))
        );
        assert_eq!(keys("a"..="c"), (b"a".to_vec(), Some(b"c\0".to_vec())));
    }

    #[test]
    fn from_range_from() {
        let r = BoundRange::from(String::from("a")..);
        assert_eq!((r.start(), r.end()), (Included(&k(b"a")), Unbounded));
        assert_eq!(keys(vec![1u8]..), (vec![1], None));
    }

    #[test]
    fn from_range_to() {
        let r = BoundRange::from(..b"c");
        assert_eq!((r.start(), r.end()), (Unbounded, Excluded(&k(b"c"))));
        assert_eq!(keys(..b"c"), (vec![], Some(b"c".to_vec())));
    }

    #[test]
    fn from_range_to_inclusive() {
        let r = BoundRange::from(..=Key::from("c"));
        assert_eq!((r.start(), r.end()), (Unbounded, Included(&k(b"c"))));
        assert_eq!(keys(..="c"), (vec![], Some(b"c\0".to_vec())));
    }

    #[test]
    fn from_range_full() {
        let r = BoundRange::from(..);
        assert_eq!((r.start(), r.end()), (Unbounded, Unbounded));
        assert_eq!(keys(..), (vec![], None));
    }

    #[test]
    fn from_bound_pair() {
        let check = |bounds: (Bound<&str>, Bound<&str>), start: &[u8], end: Option<&[u8]>| {
            let expected = (start.to_vec(), end.map(<[u8]>::to_vec));
            assert_eq!(keys(bounds), expected, "bounds {bounds:?}");
        };
        check((Included("a"), Included("c")), b"a", Some(b"c\0"));
        check((Included("a"), Excluded("c")), b"a", Some(b"c"));
        check((Excluded("a"), Included("c")), b"a\0", Some(b"c\0"));
        check((Excluded("a"), Excluded("c")), b"a\0", Some(b"c"));
        check((Excluded("a"), Unbounded), b"a\0", None);
        check((Unbounded, Excluded("c")), b"", Some(b"c"));
        check((Unbounded, Unbounded), b"", None);
    }

    #[test]
    fn empty_exclusive_end_means_unbounded() {
        assert_eq!(BoundRange::from("a"..""), BoundRange::from("a"..));
        assert_eq!(keys("a"..""), (b"a".to_vec(), None));
        assert_eq!(keys(..""), (vec![], None));
        assert_eq!(
            BoundRange::from((Excluded("a"), Excluded(""))).end(),
            Unbounded
        );
        assert!(BoundRange::from(Key::from("a")..Key::EMPTY).contains(&[0xFF, 0xFF]));
        // The usual prefix scan still works when prefix_next has no answer.
        let prefix = k(&[0xFF, 0xFF]);
        let range = BoundRange::from(prefix.clone()..prefix.prefix_next());
        assert_eq!(range.into_keys(), (prefix, None));
    }

    #[test]
    fn empty_start_is_the_smallest_key() {
        assert_eq!(BoundRange::from(""..), BoundRange::from(..));
        assert_eq!(BoundRange::from(""..="a").start(), Unbounded);
        // An excluded empty start is a real bound: everything but the empty key.
        let r = BoundRange::from((Excluded(""), Unbounded));
        assert_eq!(r.start(), Excluded(&Key::EMPTY));
        assert!(!r.contains(b""));
        assert!(r.contains(b"\0"));
        assert_eq!(r.into_keys(), (k(b"\0"), None));
    }

    #[test]
    fn inclusive_empty_end_holds_only_the_empty_key() {
        let r = BoundRange::from(..="");
        assert!(r.contains(b""));
        assert!(!r.contains(b"\0"));
        assert_eq!(r.into_keys(), (Key::EMPTY, Some(k(b"\0"))));
    }

    #[test]
    fn inclusive_end_of_ff_keys_uses_next_key() {
        // Not prefix_next: ..=[0xFF] must not swallow [0xFF, 0x00] or anything after it.
        assert_eq!(keys(..=vec![0xFF]), (vec![], Some(vec![0xFF, 0x00])));
        assert_eq!(
            keys(vec![0xFF]..=vec![0xFF, 0xFF]),
            (vec![0xFF], Some(vec![0xFF, 0xFF, 0x00]))
        );
        let r = BoundRange::from(..=vec![0xFF]);
        assert!(r.contains(&[0xFF]));
        assert!(!r.contains(&[0xFF, 0x00]));
    }

    #[test]
    fn contains_checks_each_bound_kind() {
        let r = BoundRange::from("b".."d");
        assert!(!r.contains(b"a"));
        assert!(r.contains(b"b"));
        assert!(r.contains(b"c\xff"));
        assert!(!r.contains(b"d"));
        let r = BoundRange::from((Excluded("b"), Included("d")));
        assert!(!r.contains(b"b"));
        assert!(r.contains(b"b\0"));
        assert!(r.contains(b"d"));
        assert!(!r.contains(b"d\0"));
        assert!(BoundRange::from(..).contains(b""));
    }

    #[test]
    fn into_bounds_returns_normalized_bounds() {
        let (start, end) = BoundRange::from("a".."").into_bounds();
        assert_eq!((start, end), (Included(k(b"a")), Unbounded));
        let (start, end) = BoundRange::from((Excluded("a"), Included("b"))).into_bounds();
        assert_eq!((start, end), (Excluded(k(b"a")), Included(k(b"b"))));
    }

    #[test]
    fn range_bounds_impl() {
        use std::collections::BTreeSet;
        let set: BTreeSet<Key> = ["a", "b", "c", "d"].into_iter().map(Key::from).collect();
        let got: Vec<_> = set.range(BoundRange::from("b"..="c")).cloned().collect();
        assert_eq!(got, vec![k(b"b"), k(b"c")]);
        assert!(RangeBounds::contains(&BoundRange::from("a".."b"), &k(b"a")));
    }

    #[test]
    fn is_empty_range_cases() {
        let cases: Vec<(BoundRange, bool)> = vec![
            (("a".."a").into(), true),
            (("b".."a").into(), true),
            (("a".."b").into(), false),
            (("a"..="a").into(), false),
            (("b"..="a").into(), true),
            ((Excluded("a"), Included("a")).into(), true),
            ((Excluded("a"), Included("a\0")).into(), false),
            ((Excluded("a"), Excluded("a\0")).into(), true),
            ((Excluded("a"), Excluded("a\0\0")).into(), false),
            ((Excluded("a"), Excluded("b")).into(), false),
            ((Excluded("a"), Unbounded).into(), false),
            (("z"..).into(), false),
            (("z".."").into(), false),
            ((..Key::from(vec![0x00])).into(), false),
            ((..).into(), false),
        ];
        for (range, empty) in cases {
            assert_eq!(range.is_empty_range(), empty, "{range:?}");
        }
    }

    #[test]
    fn validate_rejects_inverted_ranges() {
        for ok in [
            BoundRange::from("a".."b"),
            ("a".."a").into(),
            ("a"..="a").into(),
            ("b".."").into(),
            (..).into(),
            ("z"..).into(),
            (..="a").into(),
            (Excluded("a"), Excluded("a")).into(),
        ] {
            assert!(ok.validate().is_ok(), "{ok:?}");
        }
        for bad in [
            BoundRange::from("b".."a"),
            ("b"..="a").into(),
            ("a\0"..="a").into(),
            (Excluded("b"), Excluded("a")).into(),
        ] {
            match bad.validate() {
                Err(Error::InvalidArgument { message }) => {
                    assert!(message.contains("sorts before its start"), "{message}");
                }
                other => panic!("{bad:?} should be rejected, got {other:?}"),
            }
        }
        let Err(err) = BoundRange::from(vec![0x02]..vec![0x01]).validate() else {
            panic!("inverted range accepted");
        };
        assert!(
            err.to_string()
                .contains("end 0x01 sorts before its start 0x02"),
            "{err}"
        );
    }

    /// Every key of length up to `max_len` over a small alphabet that includes both extremes.
    fn universe(max_len: usize) -> Vec<Vec<u8>> {
        let mut all = vec![vec![]];
        let mut frontier = vec![vec![]];
        for _ in 0..max_len {
            let mut next = Vec::new();
            for prefix in &frontier {
                for b in [0x00, 0x01, 0xFF] {
                    let mut key: Vec<u8> = prefix.clone();
                    key.push(b);
                    next.push(key);
                }
            }
            all.extend(next.iter().cloned());
            frontier = next;
        }
        all
    }

    /// Exhaustively checks `contains`, `into_keys` and `is_empty_range` against each other over
    /// every range with bounds of up to 2 bytes. Probing keys of up to 3 bytes suffices: when a
    /// range is non-empty, its smallest member is a bound key or a bound key plus 0x00.
    #[test]
    fn bounds_agree_exhaustively() {
        let bound_keys = universe(2);
        let probes = universe(3);
        let mut bounds = vec![Unbounded];
        for key in &bound_keys {
            bounds.push(Included(key.clone()));
            bounds.push(Excluded(key.clone()));
        }
        for start in &bounds {
            for end in &bounds {
                let range = BoundRange::from((start.clone(), end.clone()));
                let (lo, hi) = range.clone().into_keys();
                let mut any = false;
                for probe in &probes {
                    let in_lowered = probe.as_slice() >= lo.as_bytes()
                        && hi
                            .as_ref()
                            .is_none_or(|hi| probe.as_slice() < hi.as_bytes());
                    assert_eq!(range.contains(probe), in_lowered, "{range:?} vs {probe:?}");
                    any |= in_lowered;
                }
                assert_eq!(range.is_empty_range(), !any, "{range:?}");
            }
        }
    }
}
