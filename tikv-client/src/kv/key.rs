//! [`Key`], [`Value`] and [`KvPair`].

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use bytes::Bytes;

/// The conversions [`Key`] and [`Value`] share: both wrap [`Bytes`], read as `&[u8]`, take
/// `Vec<u8>`, `String` and [`Bytes`] without copying, and copy borrowed bytes once.
macro_rules! bytes_conversions {
    ($t:ident) => {
        impl AsRef<[u8]> for $t {
            fn as_ref(&self) -> &[u8] {
                self.as_bytes()
            }
        }

        impl Borrow<[u8]> for $t {
            fn borrow(&self) -> &[u8] {
                self.as_bytes()
            }
        }

        impl From<Vec<u8>> for $t {
            fn from(bytes: Vec<u8>) -> $t {
                $t(Bytes::from(bytes))
            }
        }

        impl From<String> for $t {
            fn from(s: String) -> $t {
                $t(Bytes::from(s))
            }
        }

        impl From<Bytes> for $t {
            fn from(bytes: Bytes) -> $t {
                $t(bytes)
            }
        }

        impl From<&$t> for $t {
            fn from(other: &$t) -> $t {
                other.clone()
            }
        }

        impl From<&[u8]> for $t {
            fn from(bytes: &[u8]) -> $t {
                $t::copy_from_slice(bytes)
            }
        }

        impl<const N: usize> From<&[u8; N]> for $t {
            fn from(bytes: &[u8; N]) -> $t {
                $t::copy_from_slice(bytes)
            }
        }

        // Copies even for string literals: a zero-copy `From<&'static str>` would rule out
        // every borrowed `&str`, the more common argument; `from_static` covers literals.
        impl From<&str> for $t {
            fn from(s: &str) -> $t {
                $t::copy_from_slice(s.as_bytes())
            }
        }

        impl From<$t> for Bytes {
            fn from(this: $t) -> Bytes {
                this.0
            }
        }

        impl From<$t> for Vec<u8> {
            fn from(this: $t) -> Vec<u8> {
                Vec::from(this.0)
            }
        }
    };
}

/// A key: an arbitrary byte string, ordered bytewise like TiKV orders it.
///
/// `Key` wraps [`Bytes`], so cloning it bumps a reference count instead of copying, and a key
/// moves into a request message (whose byte fields are `Bytes`) without a copy.
///
/// Conversions that take ownership never copy: `Vec<u8>`, `String` and [`Bytes`]. Conversions
/// from borrowed data copy once: `&[u8]`, `&[u8; N]` (byte-string literals) and `&str`. For a
/// `'static` literal that should not be copied at all, use [`Key::from_static`].
///
/// The empty key is the smallest key. Used as the exclusive end of a range, TiKV reads it as
/// "no upper bound"; [`BoundRange`](super::BoundRange) follows that convention.
///
/// ```
/// use tikv_client::Key;
///
/// let k = Key::from("user/42");
/// assert!(k < Key::from("user/43"));
/// assert_eq!(k.prefix_next().as_bytes(), b"user/43");
/// assert_eq!(k.next_key().as_bytes(), b"user/42\0");
/// ```
#[derive(Clone, Default)]
pub struct Key(Bytes);

impl Key {
    /// The empty key: the smallest key, and "unbounded" as an exclusive range end.
    ///
    /// ```
    /// use tikv_client::Key;
    /// assert!(Key::EMPTY.is_empty() && Key::EMPTY < Key::from("a"));
    /// ```
    pub const EMPTY: Key = Key(Bytes::new());

    /// A key pointing at static bytes, without copying them.
    ///
    /// ```
    /// use tikv_client::Key;
    /// assert_eq!(Key::from_static(b"k").as_bytes(), b"k");
    /// ```
    pub const fn from_static(bytes: &'static [u8]) -> Key {
        Key(Bytes::from_static(bytes))
    }

    /// A key holding a copy of `bytes`.
    ///
    /// ```
    /// use tikv_client::Key;
    /// assert_eq!(Key::copy_from_slice(&[1, 2]).as_bytes(), [1, 2]);
    /// ```
    pub fn copy_from_slice(bytes: &[u8]) -> Key {
        Key(Bytes::copy_from_slice(bytes))
    }

    /// The key's buffer, for callers that keep a cheap clone of it.
    pub(crate) fn as_bytes_ref(&self) -> &Bytes {
        &self.0
    }

    /// The key's bytes.
    ///
    /// ```
    /// use tikv_client::Key;
    /// assert_eq!(Key::from("k").as_bytes(), b"k");
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The number of bytes in the key.
    ///
    /// ```
    /// use tikv_client::Key;
    /// assert_eq!(Key::from("abc").len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether this is the empty key.
    ///
    /// ```
    /// use tikv_client::Key;
    /// assert!(Key::from("").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A copy of the key's bytes in a new `Vec`.
    ///
    /// ```
    /// use tikv_client::Key;
    /// assert_eq!(Key::from("k").to_vec(), b"k".to_vec());
    /// ```
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// The underlying shared buffer, without copying.
    ///
    /// ```
    /// use tikv_client::Key;
    /// assert_eq!(Key::from("k").into_bytes(), "k");
    /// ```
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The smallest key greater than this one: the key with a `0x00` byte appended.
    ///
    /// Use it to turn an inclusive bound into an exclusive one (`..=k` is `..k.next_key()`), or to
    /// resume a scan just after the last key returned. Ports client-go `kv.NextKey`.
    ///
    /// ```
    /// use tikv_client::Key;
    /// assert_eq!(Key::from("a").next_key(), Key::from("a\0"));
    /// ```
    pub fn next_key(&self) -> Key {
        let mut next = Vec::with_capacity(self.len() + 1);
        next.extend_from_slice(self.as_bytes());
        next.push(0);
        Key(Bytes::from(next))
    }

    /// The smallest key greater than every key that starts with this one, so that
    /// `k..k.prefix_next()` holds exactly the keys with prefix `k`.
    ///
    /// It increments the last byte that is not `0xFF` and drops the `0xFF` bytes after it. When
    /// every byte is `0xFF` (or the key is empty) no such key exists, and the result is
    /// [`Key::EMPTY`], which as an exclusive range end means "unbounded".
    ///
    /// Ports client-go `kv.PrefixNextKey`, with one deliberate difference: client-go keeps the
    /// overflowed bytes as `0x00` (`[0x01, 0xFF]` gives `[0x02, 0x00]`), a bound one key too loose,
    /// since `[0x02]` itself would fall inside the range. Dropping them gives the tight bound.
    ///
    /// ```
    /// use tikv_client::Key;
    /// assert_eq!(Key::from("ab").prefix_next(), Key::from("ac"));
    /// ```
    pub fn prefix_next(&self) -> Key {
        let bytes = self.as_bytes();
        match bytes.iter().rposition(|&b| b != 0xFF) {
            Some(last) => {
                let mut next = bytes[..=last].to_vec();
                next[last] += 1;
                Key(Bytes::from(next))
            }
            None => Key::EMPTY,
        }
    }
}

// Equality, ordering and hashing all go through the byte slice. `Borrow<[u8]>` requires exactly
// this (maps keyed by `Key` are queried with `&[u8]`), so it is spelled out rather than derived
// through `Bytes`.
impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Bytewise order, the order of keys in TiKV (client-go `kv.CmpKey`).
impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

bytes_conversions!(Key);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", BytesDisplay(self.as_bytes()))
    }
}

/// The key for messages and logs: `"user/1"` when every byte is printable ASCII, otherwise
/// `0x` and lowercase hex (`0x748000ff`).
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        BytesDisplay(self.as_bytes()).fmt(f)
    }
}

/// Formats bytes for humans: a quoted string when every byte is printable ASCII (most keys in
/// logs are), otherwise `0x` and lowercase hex, so binary keys stay unambiguous.
pub(crate) struct BytesDisplay<'a>(pub(crate) &'a [u8]);

impl fmt::Display for BytesDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(|b| (0x20..=0x7E).contains(b)) {
            f.write_str("\"")?;
            for &b in self.0 {
                if b == b'"' || b == b'\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{}", char::from(b))?;
            }
            return f.write_str("\"");
        }
        f.write_str("0x")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A value: the bytes stored under a key.
///
/// Like [`Key`], a `Value` wraps [`Bytes`], and it converts from the same types: `Vec<u8>`,
/// `String` and [`Bytes`] without copying; `&[u8]`, `&[u8; N]` and `&str` (borrowed, any
/// lifetime) by copying once. [`Value::from_static`] takes a `'static` literal without a copy.
/// An empty value is a value: it exists, unlike a missing key.
///
/// ```
/// use tikv_client::Value;
///
/// let name = String::from("Ada");
/// let v = Value::from(name.as_str()); // borrowed: copied once
/// assert_eq!(v, "Ada");
/// assert_eq!(v.len(), 3);
/// assert_eq!(Value::from(vec![1, 2]).as_bytes(), [1, 2]);
/// assert!(Value::from("").is_empty());
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(Bytes);

impl Value {
    /// The empty value.
    ///
    /// ```
    /// assert!(tikv_client::Value::EMPTY.is_empty());
    /// ```
    pub const EMPTY: Value = Value(Bytes::new());

    /// A value pointing at static bytes, without copying them.
    ///
    /// ```
    /// # use tikv_client::Value;
    /// assert_eq!(Value::from_static(b"v"), "v");
    /// ```
    pub const fn from_static(bytes: &'static [u8]) -> Value {
        Value(Bytes::from_static(bytes))
    }

    /// A value holding a copy of `bytes`.
    ///
    /// ```
    /// # use tikv_client::Value;
    /// assert_eq!(Value::copy_from_slice(&[7]).as_bytes(), [7]);
    /// ```
    pub fn copy_from_slice(bytes: &[u8]) -> Value {
        Value(Bytes::copy_from_slice(bytes))
    }

    /// The value's buffer, for callers that keep a cheap clone of it.
    pub(crate) fn as_bytes_ref(&self) -> &Bytes {
        &self.0
    }

    /// The value's bytes.
    ///
    /// ```
    /// # use tikv_client::Value;
    /// assert_eq!(Value::from("ab").as_bytes(), b"ab");
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The number of bytes in the value.
    ///
    /// ```
    /// # use tikv_client::Value;
    /// assert_eq!(Value::from("abc").len(), 3);
    /// ```
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value has no bytes (it still exists: an empty value is not a missing key).
    ///
    /// ```
    /// # use tikv_client::Value;
    /// assert!(Value::EMPTY.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A copy of the value's bytes in a new `Vec`.
    ///
    /// ```
    /// # use tikv_client::Value;
    /// assert_eq!(Value::from("v").to_vec(), b"v".to_vec());
    /// ```
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// The underlying shared buffer, without copying.
    ///
    /// ```
    /// # use tikv_client::Value;
    /// let bytes: bytes::Bytes = Value::from("v").into_bytes();
    /// assert_eq!(bytes, "v");
    /// ```
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

/// A value reads as its bytes (as [`Bytes`] does), so `&value` works where `&[u8]` is
/// expected.
///
/// ```
/// let v = tikv_client::Value::from("42");
/// let n: u32 = std::str::from_utf8(&v).unwrap().parse().unwrap();
/// assert_eq!(n, 42);
/// ```
impl std::ops::Deref for Value {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

bytes_conversions!(Value);

// Comparisons with plain byte and string data, so that tests and callers can write
// `assert_eq!(value, "v")`.
impl PartialEq<[u8]> for Value {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_bytes() == other
    }
}

impl PartialEq<&[u8]> for Value {
    fn eq(&self, other: &&[u8]) -> bool {
        self.as_bytes() == *other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Value {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.as_bytes() == other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Value {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.as_bytes() == *other
    }
}

impl PartialEq<str> for Value {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Value {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<Vec<u8>> for Value {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_bytes() == other.as_slice()
    }
}

impl PartialEq<Bytes> for Value {
    fn eq(&self, other: &Bytes) -> bool {
        self.0 == *other
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value({})", BytesDisplay(self.as_bytes()))
    }
}

/// A key and its value, as returned by gets and scans.
///
/// Ordered by key, then by value.
///
/// ```
/// use tikv_client::{Key, KvPair};
/// let pair = KvPair::new("k", "v");
/// assert_eq!(pair.key(), &Key::from("k"));
/// assert_eq!(pair.value(), "v");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KvPair {
    key: Key,
    value: Value,
}

impl KvPair {
    /// A pair from anything convertible into a key and a value.
    ///
    /// ```
    /// use tikv_client::KvPair;
    /// let pair = KvPair::new(String::from("k"), vec![1u8]);
    /// ```
    pub fn new(key: impl Into<Key>, value: impl Into<Value>) -> KvPair {
        KvPair {
            key: key.into(),
            value: value.into(),
        }
    }

    /// The key.
    ///
    /// ```
    /// use tikv_client::{Key, KvPair};
    /// assert_eq!(KvPair::new("k", "v").key(), &Key::from("k"));
    /// ```
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The value.
    ///
    /// ```
    /// use tikv_client::KvPair;
    /// assert_eq!(KvPair::new("k", "v").value(), "v");
    /// ```
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The key, dropping the value.
    ///
    /// ```
    /// use tikv_client::{Key, KvPair};
    /// assert_eq!(KvPair::new("k", "v").into_key(), Key::from("k"));
    /// ```
    pub fn into_key(self) -> Key {
        self.key
    }

    /// The value, dropping the key.
    ///
    /// ```
    /// use tikv_client::KvPair;
    /// assert_eq!(KvPair::new("k", "v").into_value(), "v");
    /// ```
    pub fn into_value(self) -> Value {
        self.value
    }

    /// The key and the value.
    ///
    /// ```
    /// use tikv_client::KvPair;
    /// let (key, value) = KvPair::new("k", "v").into_parts();
    /// ```
    pub fn into_parts(self) -> (Key, Value) {
        (self.key, self.value)
    }
}

impl<K: Into<Key>, V: Into<Value>> From<(K, V)> for KvPair {
    fn from((key, value): (K, V)) -> KvPair {
        KvPair::new(key, value)
    }
}

impl From<KvPair> for (Key, Value) {
    fn from(pair: KvPair) -> (Key, Value) {
        pair.into_parts()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::ops::Bound;

    use super::*;

    // client-go kv/key_test.go TestPrefixNextKey.
    #[test]
    fn prefix_next_key() {
        for all_ff in [&[0xFF][..], &[0xFF, 0xFF], &[0xFF, 0xFF, 0xFF, 0xFF]] {
            assert_eq!(Key::copy_from_slice(all_ff).prefix_next(), Key::EMPTY);
        }
    }

    #[test]
    fn prefix_next_increments_last_byte_below_ff() {
        assert_eq!(Key::from("abc").prefix_next().as_bytes(), b"abd");
        assert_eq!(Key::from(vec![0x00]).prefix_next().as_bytes(), [0x01]);
        assert_eq!(
            Key::from(vec![0x01, 0xFE]).prefix_next().as_bytes(),
            [0x01, 0xFF]
        );
        // Trailing 0xFF bytes are dropped (client-go would give [0x02, 0x00, 0x00]).
        assert_eq!(
            Key::from(vec![0x01, 0xFF, 0xFF]).prefix_next().as_bytes(),
            [0x02]
        );
        assert_eq!(
            Key::from(vec![0xFF, 0x00, 0xFF]).prefix_next().as_bytes(),
            [0xFF, 0x01]
        );
        assert_eq!(Key::EMPTY.prefix_next(), Key::EMPTY);
    }

    #[test]
    fn prefix_next_bounds_exactly_the_prefixed_keys() {
        let prefix = Key::from(vec![0x61, 0xFF]);
        let end = prefix.prefix_next();
        let inside = [
            vec![0x61, 0xFF],
            vec![0x61, 0xFF, 0x00],
            vec![0x61, 0xFF, 0xFF, 0xFF],
        ];
        for k in inside {
            let k = Key::from(k);
            assert!(
                prefix <= k && k < end,
                "{k:?} should be in [{prefix:?}, {end:?})"
            );
        }
        // The first key past the prefix: client-go's looser bound [0x62, 0x00] would admit it.
        let outside = Key::from(vec![0x62]);
        assert!(outside >= end);
    }

    #[test]
    fn next_key_appends_zero() {
        assert_eq!(Key::EMPTY.next_key().as_bytes(), [0x00]);
        assert_eq!(Key::from("a").next_key().as_bytes(), b"a\0");
        assert_eq!(Key::from(vec![0xFF]).next_key().as_bytes(), [0xFF, 0x00]);
        let k = Key::from("k");
        assert!(k < k.next_key());
        assert_eq!(k.next_key(), Key::from("k\0"));
    }

    #[test]
    fn order_is_bytewise() {
        let sorted: Vec<Key> = vec![
            Key::EMPTY,
            Key::from(vec![0x00]),
            Key::from(vec![0x00, 0x00]),
            Key::from("a"),
            Key::from("a\0"),
            Key::from("ab"),
            Key::from("b"),
            Key::from(vec![0xFF]),
            Key::from(vec![0xFF, 0x00]),
        ];
        for pair in sorted.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
            assert_eq!(
                pair[0].cmp(&pair[1]),
                pair[0].as_bytes().cmp(pair[1].as_bytes())
            );
        }
    }

    #[test]
    fn owned_conversions_do_not_copy() {
        let v = b"owned".to_vec();
        let ptr = v.as_ptr();
        let key = Key::from(v);
        assert_eq!(key.as_bytes().as_ptr(), ptr);
        let bytes: Bytes = key.clone().into();
        assert_eq!(bytes.as_ptr(), ptr);
        assert_eq!(
            key.clone().as_bytes().as_ptr(),
            ptr,
            "clone shares the buffer"
        );

        let s = String::from("text");
        let ptr = s.as_ptr();
        assert_eq!(Key::from(s).as_bytes().as_ptr(), ptr);

        static LIT: &[u8] = b"static";
        assert_eq!(Key::from_static(LIT).as_bytes().as_ptr(), LIT.as_ptr());
    }

    #[test]
    fn borrowed_conversions_copy() {
        let buf = b"borrowed".to_vec();
        let key = Key::from(buf.as_slice());
        assert_ne!(key.as_bytes().as_ptr(), buf.as_ptr());
        assert_eq!(key.as_bytes(), buf.as_slice());
        let s = String::from("borrowed");
        assert_eq!(Key::from(s.as_str()).as_bytes(), b"borrowed");
        assert_eq!(Key::from(b"lit").as_bytes(), b"lit");
        assert_eq!(Key::from(&Key::from("x")), Key::from("x"));
    }

    #[test]
    fn accessors() {
        let key = Key::from("abc");
        assert_eq!(key.len(), 3);
        assert!(!key.is_empty());
        assert!(Key::EMPTY.is_empty());
        assert!(Key::default().is_empty());
        assert_eq!(key.to_vec(), b"abc".to_vec());
        assert_eq!(key.as_ref(), b"abc");
        assert_eq!(Vec::<u8>::from(key.clone()), b"abc".to_vec());
        assert_eq!(key.into_bytes(), Bytes::from_static(b"abc"));
    }

    #[test]
    fn maps_are_queryable_by_byte_slice() {
        let mut hash = HashMap::new();
        hash.insert(Key::from("k1"), 1);
        assert_eq!(hash.get(&b"k1"[..]), Some(&1));
        let mut tree = BTreeMap::new();
        tree.insert(Key::from("k1"), 1);
        tree.insert(Key::from("k2"), 2);
        assert_eq!(tree.get(&b"k2"[..]), Some(&2));
        let after_k1: (Bound<&[u8]>, Bound<&[u8]>) = (Bound::Excluded(b"k1"), Bound::Unbounded);
        let keys: Vec<_> = tree.range::<[u8], _>(after_k1).map(|(_, v)| *v).collect();
        assert_eq!(keys, [2]);
    }

    #[test]
    fn debug_and_display_print_ascii_or_hex() {
        assert_eq!(format!("{:?}", Key::from("user/1")), r#"Key("user/1")"#);
        assert_eq!(format!("{:?}", Key::from(r#"a"b\c"#)), r#"Key("a\"b\\c")"#);
        assert_eq!(format!("{:?}", Key::EMPTY), r#"Key("")"#);
        assert_eq!(
            format!("{:?}", Key::from(vec![0x74, 0x80, 0x00, 0xFF])),
            "Key(0x748000ff)"
        );
        assert_eq!(
            format!("{:?}", Key::from("tab\there")),
            "Key(0x7461620968657265)"
        );
        assert_eq!(Key::from("user/1").to_string(), r#""user/1""#);
        assert_eq!(Key::from(vec![0x00, 0xAB]).to_string(), "0x00ab");
    }

    #[test]
    fn kv_pair_conversions_and_accessors() {
        let pair = KvPair::from(("k", Bytes::from_static(b"v")));
        assert_eq!(pair.key(), &Key::from("k"));
        assert_eq!(pair.value(), &b"v"[..]);
        let pair2: KvPair = (b"k".to_vec(), "v").into();
        assert_eq!(pair, pair2);
        let (k, v): (Key, Value) = pair2.clone().into();
        assert_eq!((k, v), (Key::from("k"), Value::from("v")));
        assert_eq!(pair2.clone().into_key(), Key::from("k"));
        assert_eq!(pair2.into_value(), "v");
        assert!(
            KvPair::new("a", "z") < KvPair::new("b", "a"),
            "ordered by key first"
        );
        assert!(KvPair::new("a", "a") < KvPair::new("a", "b"));
    }
}
