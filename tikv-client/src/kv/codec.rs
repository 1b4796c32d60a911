//! Order-preserving ("memcomparable") encodings for bytes and integers, plus Go-compatible
//! varints.
//!
//! A memcomparable encoding maps values to byte strings whose bytewise order matches the
//! values' order, and which are self-delimiting, so several encoded values can be concatenated
//! into one key and still sort field by field. PD reports the region boundaries of
//! transactional data (and of every API v2 keyspace) in the [`encode_bytes`] form, so the
//! client's API codec encodes keys before region lookups and decodes the boundaries it gets back;
//! TiDB-style applications build row and index keys from these pieces.
//!
//! Conventions: encoders append to a caller's `Vec<u8>`, so a composite key is built in one
//! buffer; [`encode_bytes`] is the one shortcut that returns a fresh `Vec`. Decoders take the
//! input and return the value together with the unread rest. Malformed input never panics: it
//! yields [`Error::Codec`] saying what was wrong.
//!
//! The formats are bit-for-bit those of client-go `util/codec/bytes.go` and
//! `util/codec/number.go` (and of TiKV and TiDB):
//!
//! - bytes: the input is cut into groups of 8; each group is written padded with `0x00` to 8
//!   bytes and followed by a marker, `0xFF` minus the number of pad bytes. Only the last group
//!   has padding (an input whose length is a multiple of 8 ends with an all-padding group), so a
//!   marker of `0xFF` means "more groups follow".
//! - `i64`: big-endian with the sign bit flipped; `u64`: big-endian. The `_desc` variants invert
//!   every bit, so they sort in descending order.
//! - varint / uvarint: Go's `encoding/binary` formats (LEB128, zig-zag for signed). Compact, but
//!   **not** order-preserving.
//! - comparable varint / uvarint: a tag byte then a big-endian magnitude of minimal length.
//!   Tags `0..=7` mark negative numbers of `8 - tag` bytes, tags `8..=247` are single-byte values
//!   `0..=239`, and tags `248..=255` mark positive numbers of `tag - 247` bytes.

use super::key::BytesDisplay;
use crate::{Error, Result};

/// Raw bytes per group of the memcomparable bytes encoding.
const GROUP_SIZE: usize = 8;
/// One encoded group: the raw bytes and the marker.
const ENCODED_GROUP_SIZE: usize = GROUP_SIZE + 1;
/// The marker of a full group; a group with `n` pad bytes has marker `MARKER - n`.
const MARKER: u8 = 0xFF;
const PAD: u8 = 0x00;

const SIGN_MASK: u64 = 1 << 63;

/// Longest Go varint of a 64-bit number.
const MAX_VARINT_LEN: usize = 10;

/// Tags below this mark negative comparable varints, `NEGATIVE_TAG_END - tag` bytes long.
const NEGATIVE_TAG_END: u8 = 8;
/// Tags above this mark positive comparable varints, `tag - POSITIVE_TAG_START` bytes long.
const POSITIVE_TAG_START: u8 = 0xFF - 8;
/// Largest value a comparable varint stores in its tag byte alone.
const MAX_SINGLE_BYTE: u64 = (POSITIVE_TAG_START - NEGATIVE_TAG_END) as u64;

// ---------------------------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------------------------

/// The length of the memcomparable encoding of `raw_len` bytes: whole groups of 9, one more than
/// `raw_len / 8` (saturating at `usize::MAX` for lengths no slice can have).
///
/// ```
/// use tikv_client::kv::codec::{encode_bytes, encoded_len};
/// assert_eq!(encode_bytes(b"abc").len(), encoded_len(3));
/// ```
pub const fn encoded_len(raw_len: usize) -> usize {
    (raw_len / GROUP_SIZE + 1).saturating_mul(ENCODED_GROUP_SIZE)
}

/// Encodes `data` into a new buffer, preserving order: for any `a` and `b`,
/// `encode_bytes(a).cmp(&encode_bytes(b)) == a.cmp(b)`, and no encoding is a prefix of another.
///
/// ```
/// use tikv_client::kv::codec::encode_bytes;
///
/// assert_eq!(encode_bytes(b"abc"), [b'a', b'b', b'c', 0, 0, 0, 0, 0, 0xFA]);
/// assert_eq!(encode_bytes(b""), [0, 0, 0, 0, 0, 0, 0, 0, 0xF7]);
/// ```
pub fn encode_bytes(data: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(encoded_len(data.len()));
    encode_bytes_into(&mut buf, data);
    buf
}

/// Appends the memcomparable encoding of `data` to `buf`, growing it at most once.
///
/// ```
/// use tikv_client::kv::codec::{encode_bytes, encode_bytes_into};
/// let mut buf = b"prefix".to_vec();
/// encode_bytes_into(&mut buf, b"k");
/// assert_eq!(&buf[6..], encode_bytes(b"k").as_slice());
/// ```
pub fn encode_bytes_into(buf: &mut Vec<u8>, data: &[u8]) {
    buf.reserve(encoded_len(data.len()));
    let mut groups = data.chunks_exact(GROUP_SIZE);
    for group in &mut groups {
        buf.extend_from_slice(group);
        buf.push(MARKER);
    }
    // Always written, even when empty: the padded group is what terminates the encoding.
    let tail = groups.remainder();
    let mut last = [PAD; ENCODED_GROUP_SIZE];
    last[..tail.len()].copy_from_slice(tail);
    // `tail.len() < GROUP_SIZE`, so the pad count fits in a byte and stays below the marker.
    last[GROUP_SIZE] = MARKER - (GROUP_SIZE - tail.len()) as u8;
    buf.extend_from_slice(&last);
}

/// Decodes one memcomparable-encoded byte string from the front of `input`, returning it and the
/// bytes after it.
///
/// Fails with [`Error::Codec`] if the input ends before the final group, or if a group's marker
/// or padding is not one [`encode_bytes`] writes. Any successful decode is canonical:
/// re-encoding the value yields exactly the bytes consumed.
///
/// ```
/// use tikv_client::kv::codec::{decode_bytes, encode_bytes};
///
/// let mut key = encode_bytes(b"table");
/// key.extend_from_slice(b"tail");
/// let (value, rest) = decode_bytes(&key)?;
/// assert_eq!((value.as_slice(), rest), (&b"table"[..], &b"tail"[..]));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn decode_bytes(input: &[u8]) -> Result<(Vec<u8>, &[u8])> {
    let mut buf = Vec::new();
    let rest = decode_bytes_into(&mut buf, input)?;
    Ok((buf, rest))
}

/// Like [`decode_bytes`], but appends the decoded bytes to `buf` (reusing its allocation) and
/// returns the rest of `input`. On error `buf` is left as it was.
///
/// ```
/// use tikv_client::kv::codec::{decode_bytes_into, encode_bytes};
/// let mut out = Vec::new();
/// let encoded = encode_bytes(b"key");
/// let rest = decode_bytes_into(&mut out, &encoded)?;
/// assert_eq!((out.as_slice(), rest.len()), (&b"key"[..], 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn decode_bytes_into<'a>(buf: &mut Vec<u8>, input: &'a [u8]) -> Result<&'a [u8]> {
    // Peek at the markers first so the output grows once; the decode below still validates all.
    let groups = input
        .chunks_exact(ENCODED_GROUP_SIZE)
        .position(|group| group[GROUP_SIZE] != MARKER)
        .map_or(0, |last| last + 1);
    buf.reserve(groups * GROUP_SIZE);
    let original_len = buf.len();
    let result = decode_groups(buf, input);
    if result.is_err() {
        buf.truncate(original_len);
    }
    result
}

fn decode_groups<'a>(buf: &mut Vec<u8>, input: &'a [u8]) -> Result<&'a [u8]> {
    let mut rest = input;
    loop {
        let offset = input.len() - rest.len();
        let Some((group, after)) = rest.split_first_chunk::<ENCODED_GROUP_SIZE>() else {
            return Err(Error::codec(format!(
                "memcomparable bytes are truncated: the group at offset {offset} needs \
                 {ENCODED_GROUP_SIZE} bytes but only {} remain (the input must hold a complete \
                 value written by encode_bytes)",
                rest.len()
            )));
        };
        let marker = group[GROUP_SIZE];
        let pad_count = usize::from(MARKER - marker);
        if pad_count > GROUP_SIZE {
            return Err(Error::codec(format!(
                "invalid memcomparable marker 0x{marker:02x} in group {} at offset {offset}: \
                 markers range over 0xf7..=0xff, so the input is not bytes written by \
                 encode_bytes",
                BytesDisplay(group)
            )));
        }
        let (payload, padding) = group[..GROUP_SIZE].split_at(GROUP_SIZE - pad_count);
        if padding.iter().any(|&b| b != PAD) {
            return Err(Error::codec(format!(
                "invalid memcomparable padding in group {} at offset {offset}: its marker \
                 announces {pad_count} pad bytes, which must all be 0x00, so the input is not \
                 bytes written by encode_bytes",
                BytesDisplay(group)
            )));
        }
        buf.extend_from_slice(payload);
        rest = after;
        if pad_count > 0 {
            return Ok(rest);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed-width integers
// ---------------------------------------------------------------------------------------------

/// Maps an `i64` onto a `u64` with the same order (flips the sign bit).
///
/// ```
/// use tikv_client::kv::codec::int_to_cmp_uint;
/// assert!(int_to_cmp_uint(-1) < int_to_cmp_uint(0));
/// ```
pub const fn int_to_cmp_uint(v: i64) -> u64 {
    v.cast_unsigned() ^ SIGN_MASK
}

/// Inverse of [`int_to_cmp_uint`].
///
/// ```
/// use tikv_client::kv::codec::{cmp_uint_to_int, int_to_cmp_uint};
/// assert_eq!(cmp_uint_to_int(int_to_cmp_uint(-7)), -7);
/// ```
pub const fn cmp_uint_to_int(u: u64) -> i64 {
    (u ^ SIGN_MASK).cast_signed()
}

/// Appends `v` as 8 bytes that sort in ascending numeric order.
///
/// ```
/// use tikv_client::kv::codec::{encode_int, decode_int};
/// let mut buf = Vec::new();
/// encode_int(&mut buf, -42);
/// let (v, rest) = decode_int(&buf)?;
/// assert_eq!((v, rest.len()), (-42, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn encode_int(buf: &mut Vec<u8>, v: i64) {
    encode_uint(buf, int_to_cmp_uint(v));
}

/// Decodes an `i64` written by [`encode_int`], returning it and the rest of `input`.
///
/// ```
/// use tikv_client::kv::codec::{encode_int, decode_int};
/// let mut buf = Vec::new();
/// encode_int(&mut buf, 7);
/// let (v, rest) = decode_int(&buf)?;
/// assert_eq!((v, rest.len()), (7, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn decode_int(input: &[u8]) -> Result<(i64, &[u8])> {
    let (u, rest) = read_u64(input, "i64")?;
    Ok((cmp_uint_to_int(u), rest))
}

/// Appends `v` as 8 bytes that sort in descending numeric order.
///
/// ```
/// use tikv_client::kv::codec::{encode_int_desc, decode_int_desc};
/// let mut buf = Vec::new();
/// encode_int_desc(&mut buf, -42);
/// let (v, rest) = decode_int_desc(&buf)?;
/// assert_eq!((v, rest.len()), (-42, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn encode_int_desc(buf: &mut Vec<u8>, v: i64) {
    encode_uint(buf, !int_to_cmp_uint(v));
}

/// Decodes an `i64` written by [`encode_int_desc`], returning it and the rest of `input`.
///
/// ```
/// use tikv_client::kv::codec::{encode_int_desc, decode_int_desc};
/// let mut buf = Vec::new();
/// encode_int_desc(&mut buf, 7);
/// let (v, rest) = decode_int_desc(&buf)?;
/// assert_eq!((v, rest.len()), (7, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn decode_int_desc(input: &[u8]) -> Result<(i64, &[u8])> {
    let (u, rest) = read_u64(input, "descending i64")?;
    Ok((cmp_uint_to_int(!u), rest))
}

/// Appends `v` as 8 big-endian bytes, which sort in ascending numeric order.
///
/// ```
/// use tikv_client::kv::codec::{encode_uint, decode_uint};
/// let mut buf = Vec::new();
/// encode_uint(&mut buf, 42u64);
/// let (v, rest) = decode_uint(&buf)?;
/// assert_eq!((v, rest.len()), (42u64, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn encode_uint(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_be_bytes());
}

/// Decodes a `u64` written by [`encode_uint`], returning it and the rest of `input`.
///
/// ```
/// use tikv_client::kv::codec::{encode_uint, decode_uint};
/// let mut buf = Vec::new();
/// encode_uint(&mut buf, 7u64);
/// let (v, rest) = decode_uint(&buf)?;
/// assert_eq!((v, rest.len()), (7u64, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn decode_uint(input: &[u8]) -> Result<(u64, &[u8])> {
    read_u64(input, "u64")
}

/// Appends `v` as 8 bytes that sort in descending numeric order.
///
/// ```
/// use tikv_client::kv::codec::{encode_uint_desc, decode_uint_desc};
/// let mut buf = Vec::new();
/// encode_uint_desc(&mut buf, 42u64);
/// let (v, rest) = decode_uint_desc(&buf)?;
/// assert_eq!((v, rest.len()), (42u64, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn encode_uint_desc(buf: &mut Vec<u8>, v: u64) {
    encode_uint(buf, !v);
}

/// Decodes a `u64` written by [`encode_uint_desc`], returning it and the rest of `input`.
///
/// ```
/// use tikv_client::kv::codec::{encode_uint_desc, decode_uint_desc};
/// let mut buf = Vec::new();
/// encode_uint_desc(&mut buf, 7u64);
/// let (v, rest) = decode_uint_desc(&buf)?;
/// assert_eq!((v, rest.len()), (7u64, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn decode_uint_desc(input: &[u8]) -> Result<(u64, &[u8])> {
    let (u, rest) = read_u64(input, "descending u64")?;
    Ok((!u, rest))
}

fn read_u64<'a>(input: &'a [u8], what: &str) -> Result<(u64, &'a [u8])> {
    match input.split_first_chunk::<8>() {
        Some((bytes, rest)) => Ok((u64::from_be_bytes(*bytes), rest)),
        None => Err(Error::codec(format!(
            "truncated {what}: it takes 8 bytes but the input has {}",
            input.len()
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Go varints (not order-preserving)
// ---------------------------------------------------------------------------------------------

/// Appends `v` in Go's `binary.PutVarint` format (zig-zag, then LEB128; 1 to 10 bytes).
///
/// Compact but not order-preserving; use [`encode_comparable_varint`] inside keys.
///
/// ```
/// use tikv_client::kv::codec::{encode_varint, decode_varint};
/// let mut buf = Vec::new();
/// encode_varint(&mut buf, -300);
/// let (v, rest) = decode_varint(&buf)?;
/// assert_eq!((v, rest.len()), (-300, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn encode_varint(buf: &mut Vec<u8>, v: i64) {
    // Zig-zag interleaves signs (0, -1, 1, -2, ...) so small magnitudes stay short.
    let zigzag = (v.cast_unsigned() << 1) ^ (v >> 63).cast_unsigned();
    encode_uvarint(buf, zigzag);
}

/// Decodes a varint written by [`encode_varint`] (or Go's `binary.PutVarint`), returning it and
/// the rest of `input`.
///
/// ```
/// use tikv_client::kv::codec::{encode_varint, decode_varint};
/// let mut buf = Vec::new();
/// encode_varint(&mut buf, 300);
/// let (v, rest) = decode_varint(&buf)?;
/// assert_eq!((v, rest.len()), (300, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn decode_varint(input: &[u8]) -> Result<(i64, &[u8])> {
    let (zigzag, rest) = decode_uvarint(input)?;
    let magnitude = (zigzag >> 1).cast_signed();
    let v = if zigzag & 1 == 0 {
        magnitude
    } else {
        !magnitude
    };
    Ok((v, rest))
}

/// Appends `v` in Go's `binary.PutUvarint` format (LEB128: 7 bits per byte, least significant
/// first, high bit set on all but the last byte; 1 to 10 bytes).
///
/// Compact but not order-preserving; use [`encode_comparable_uvarint`] inside keys.
///
/// ```
/// use tikv_client::kv::codec::{encode_uvarint, decode_uvarint};
/// let mut buf = Vec::new();
/// encode_uvarint(&mut buf, 300u64);
/// let (v, rest) = decode_uvarint(&buf)?;
/// assert_eq!((v, rest.len()), (300u64, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn encode_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    let mut out = [0u8; MAX_VARINT_LEN];
    let mut len = 0;
    while v >= 0x80 {
        out[len] = (v & 0x7F) as u8 | 0x80;
        v >>= 7;
        len += 1;
    }
    out[len] = v as u8;
    buf.extend_from_slice(&out[..=len]);
}

/// Decodes a uvarint written by [`encode_uvarint`] (or Go's `binary.PutUvarint`), returning it
/// and the rest of `input`.
///
/// Like Go, accepts non-minimal encodings (`[0x80, 0x00]` is 0) and rejects any encoding whose
/// value does not fit in 64 bits.
///
/// ```
/// use tikv_client::kv::codec::{encode_uvarint, decode_uvarint};
/// let mut buf = Vec::new();
/// encode_uvarint(&mut buf, 1u64);
/// let (v, rest) = decode_uvarint(&buf)?;
/// assert_eq!((v, rest.len()), (1u64, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn decode_uvarint(input: &[u8]) -> Result<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &byte) in input.iter().take(MAX_VARINT_LEN).enumerate() {
        // The 10th byte carries bit 63 alone. (Go reports a 10th byte with the continuation bit
        // as truncation when the input ends there; it is an overflow either way.)
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(Error::codec(format!(
                "varint overflows 64 bits: its 10th byte is 0x{byte:02x}, but only 0x00 or 0x01 \
                 fit"
            )));
        }
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte < 0x80 {
            return Ok((value, &input[i + 1..]));
        }
    }
    Err(Error::codec(format!(
        "varint is truncated: all {} input bytes have the continuation bit (0x80) set",
        input.len()
    )))
}

// ---------------------------------------------------------------------------------------------
// Comparable varints
// ---------------------------------------------------------------------------------------------

/// Appends `v` as a comparable varint: order-preserving like [`encode_int`], but 1 byte for
/// `0..=239` and at most 9 bytes (see the [module docs](self) for the tag layout).
///
/// ```
/// use tikv_client::kv::codec::{encode_comparable_varint, decode_comparable_varint};
/// let mut buf = Vec::new();
/// encode_comparable_varint(&mut buf, -300);
/// let (v, rest) = decode_comparable_varint(&buf)?;
/// assert_eq!((v, rest.len()), (-300, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn encode_comparable_varint(buf: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        encode_comparable_uvarint(buf, v.cast_unsigned());
        return;
    }
    // A negative number is sent as its low `len` two's-complement bytes, with `len` just large
    // enough for the magnitude; longer (more negative) numbers get smaller tags.
    let len = minimal_len(v.unsigned_abs());
    buf.reserve(len + 1);
    buf.push(NEGATIVE_TAG_END - len as u8);
    buf.extend_from_slice(&v.to_be_bytes()[8 - len..]);
}

/// Appends `v` as a comparable uvarint: order-preserving like [`encode_uint`], but 1 byte for
/// `0..=239` and at most 9 bytes.
///
/// ```
/// use tikv_client::kv::codec::{encode_comparable_uvarint, decode_comparable_uvarint};
/// let mut buf = Vec::new();
/// encode_comparable_uvarint(&mut buf, 300u64);
/// let (v, rest) = decode_comparable_uvarint(&buf)?;
/// assert_eq!((v, rest.len()), (300u64, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn encode_comparable_uvarint(buf: &mut Vec<u8>, v: u64) {
    if v <= MAX_SINGLE_BYTE {
        buf.push(v as u8 + NEGATIVE_TAG_END);
        return;
    }
    let len = minimal_len(v);
    buf.reserve(len + 1);
    buf.push(POSITIVE_TAG_START + len as u8);
    buf.extend_from_slice(&v.to_be_bytes()[8 - len..]);
}

/// Bytes needed for `magnitude` in big-endian without leading zero bytes (at least 1, at most 8).
fn minimal_len(magnitude: u64) -> usize {
    (8 - magnitude.leading_zeros() / 8).max(1) as usize
}

/// Decodes a comparable varint written by [`encode_comparable_varint`], returning it and the
/// rest of `input`.
///
/// Unlike client-go's `DecodeComparableVarint`, which hands back the input unconsumed when the
/// value fits in the tag byte, the rest returned here always starts after the value.
///
/// ```
/// use tikv_client::kv::codec::{encode_comparable_varint, decode_comparable_varint};
/// let mut buf = Vec::new();
/// encode_comparable_varint(&mut buf, 5);
/// let (v, rest) = decode_comparable_varint(&buf)?;
/// assert_eq!((v, rest.len()), (5, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn decode_comparable_varint(input: &[u8]) -> Result<(i64, &[u8])> {
    let Some((&tag, rest)) = input.split_first() else {
        return Err(Error::codec(
            "comparable varint is missing: the input is empty",
        ));
    };
    if (NEGATIVE_TAG_END..=POSITIVE_TAG_START).contains(&tag) {
        return Ok((i64::from(tag - NEGATIVE_TAG_END), rest));
    }
    if tag < NEGATIVE_TAG_END {
        // Start from all ones so the bytes left out by the encoder come back as sign bits.
        let (v, rest) = read_be(rest, usize::from(NEGATIVE_TAG_END - tag), u64::MAX, tag)?;
        if v <= i64::MAX.cast_unsigned() {
            return Err(Error::codec(format!(
                "comparable varint with negative tag {tag} holds the non-negative value {v}; the \
                 input is corrupt"
            )));
        }
        return Ok((v.cast_signed(), rest));
    }
    let (v, rest) = read_be(rest, usize::from(tag - POSITIVE_TAG_START), 0, tag)?;
    if v > i64::MAX.cast_unsigned() {
        return Err(Error::codec(format!(
            "comparable varint holds {v}, beyond i64::MAX; it was probably written by \
             encode_comparable_uvarint, so decode it with decode_comparable_uvarint"
        )));
    }
    Ok((v.cast_signed(), rest))
}

/// Decodes a comparable uvarint written by [`encode_comparable_uvarint`], returning it and the
/// rest of `input`.
///
/// ```
/// use tikv_client::kv::codec::{encode_comparable_uvarint, decode_comparable_uvarint};
/// let mut buf = Vec::new();
/// encode_comparable_uvarint(&mut buf, 5u64);
/// let (v, rest) = decode_comparable_uvarint(&buf)?;
/// assert_eq!((v, rest.len()), (5u64, 0));
/// # Ok::<(), tikv_client::Error>(())
/// ```
pub fn decode_comparable_uvarint(input: &[u8]) -> Result<(u64, &[u8])> {
    let Some((&tag, rest)) = input.split_first() else {
        return Err(Error::codec(
            "comparable uvarint is missing: the input is empty",
        ));
    };
    if tag < NEGATIVE_TAG_END {
        return Err(Error::codec(format!(
            "comparable uvarint starts with tag {tag}, which marks a negative number; it was \
             written by encode_comparable_varint, so decode it with decode_comparable_varint"
        )));
    }
    if tag <= POSITIVE_TAG_START {
        return Ok((u64::from(tag - NEGATIVE_TAG_END), rest));
    }
    read_be(rest, usize::from(tag - POSITIVE_TAG_START), 0, tag)
}

/// Reads `len` big-endian bytes shifted onto `init`.
fn read_be(input: &[u8], len: usize, init: u64, tag: u8) -> Result<(u64, &[u8])> {
    if input.len() < len {
        return Err(Error::codec(format!(
            "comparable varint is truncated: tag {tag} announces {len} more bytes but the input \
             has {}",
            input.len()
        )));
    }
    let (bytes, rest) = input.split_at(len);
    let v = bytes.iter().fold(init, |acc, &b| (acc << 8) | u64::from(b));
    Ok((v, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64), so property loops need no dependency and
    /// fail reproducibly.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// Up to 25 bytes (crossing three group boundaries), half of them 0x00 or 0xFF: the
        /// bytes that collide with padding and markers.
        fn tricky_bytes(&mut self) -> Vec<u8> {
            let len = self.below(26) as usize;
            (0..len)
                .map(|_| match self.below(4) {
                    0 => 0x00,
                    1 => 0xFF,
                    _ => self.next() as u8,
                })
                .collect()
        }

        /// A number of random magnitude: uniform bits shifted right by a random amount.
        fn any_u64(&mut self) -> u64 {
            let shift = self.below(64);
            self.next() >> shift
        }
    }

    fn codec_message<T: std::fmt::Debug>(result: Result<T>) -> String {
        match result {
            Err(Error::Codec { message }) => message,
            other => panic!("expected a codec error, got {other:?}"),
        }
    }

    /// (raw, encoded) pairs: the examples documented in client-go's bytes.go and the ascending
    /// cases of TiKV's codec tests.
    fn bytes_vectors() -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (vec![], vec![0, 0, 0, 0, 0, 0, 0, 0, 247]),
            (vec![0], vec![0, 0, 0, 0, 0, 0, 0, 0, 248]),
            (b"a".to_vec(), vec![b'a', 0, 0, 0, 0, 0, 0, 0, 248]),
            (vec![1, 2, 3], vec![1, 2, 3, 0, 0, 0, 0, 0, 250]),
            (vec![1, 2, 3, 0], vec![1, 2, 3, 0, 0, 0, 0, 0, 251]),
            (vec![1, 2, 3, 4, 5, 6, 7], vec![1, 2, 3, 4, 5, 6, 7, 0, 254]),
            (
                vec![0; 8],
                vec![0, 0, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0, 0, 0, 0, 0, 0, 247],
            ),
            (
                vec![1, 2, 3, 4, 5, 6, 7, 8],
                vec![1, 2, 3, 4, 5, 6, 7, 8, 255, 0, 0, 0, 0, 0, 0, 0, 0, 247],
            ),
            (
                vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
                vec![1, 2, 3, 4, 5, 6, 7, 8, 255, 9, 0, 0, 0, 0, 0, 0, 0, 248],
            ),
            (vec![0xFF; 3], vec![0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 250]),
        ]
    }

    #[test]
    fn encode_bytes_vectors() {
        for (raw, encoded) in bytes_vectors() {
            assert_eq!(encode_bytes(&raw), encoded, "encode {raw:?}");
            assert_eq!(encoded.len(), encoded_len(raw.len()));
        }
    }

    #[test]
    fn decode_bytes_vectors() {
        for (raw, encoded) in bytes_vectors() {
            let (decoded, rest) = decode_bytes(&encoded).unwrap();
            assert_eq!(
                (decoded, rest),
                (raw.clone(), &[][..]),
                "decode {encoded:?}"
            );
            // Whatever follows the value is handed back untouched.
            let mut longer = encoded.clone();
            longer.extend_from_slice(&[0xFF, 0x00, 7]);
            let (decoded, rest) = decode_bytes(&longer).unwrap();
            assert_eq!((decoded, rest), (raw, &[0xFF, 0x00, 7][..]));
        }
    }

    #[test]
    fn encoded_len_counts_whole_groups() {
        let cases = [
            (0, 9),
            (4, 9),
            (7, 9),
            (8, 18),
            (9, 18),
            (15, 18),
            (16, 27),
            (17, 27),
        ];
        for (raw_len, len) in cases {
            assert_eq!(encoded_len(raw_len), len, "raw length {raw_len}");
        }
        assert_eq!(encoded_len(usize::MAX), usize::MAX);
    }

    #[test]
    fn encode_bytes_into_appends_with_one_allocation() {
        let mut buf = b"prefix".to_vec();
        encode_bytes_into(&mut buf, b"abc");
        assert_eq!(&buf[..6], b"prefix");
        assert_eq!(&buf[6..], encode_bytes(b"abc").as_slice());

        // With exactly enough room reserved up front, encoding never reallocates.
        for raw_len in 0..40 {
            let raw = vec![0x5A; raw_len];
            let mut buf = Vec::with_capacity(encoded_len(raw_len));
            let ptr = buf.as_ptr();
            encode_bytes_into(&mut buf, &raw);
            assert_eq!(buf.as_ptr(), ptr, "reallocated for length {raw_len}");
            assert_eq!(buf.len(), encoded_len(raw_len));
        }
    }

    #[test]
    fn decode_bytes_rejects_malformed_input() {
        let truncated: Vec<Vec<u8>> = vec![
            vec![],
            vec![1, 2, 3, 4],
            vec![0, 0, 0, 0, 0, 0, 0, 247],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 255],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 255, 1],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 255, 1, 2, 3, 4, 5, 6, 7, 8],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 255, 1, 2, 3, 4, 5, 6, 7, 8, 255],
        ];
        for input in truncated {
            let message = codec_message(decode_bytes(&input));
            assert!(message.contains("truncated"), "{input:?}: {message}");
        }
        let bad_marker: Vec<Vec<u8>> = vec![
            vec![0, 0, 0, 0, 0, 0, 0, 0, 246],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 0],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 255, 1, 2, 3, 4, 5, 6, 7, 8, 0],
        ];
        for input in bad_marker {
            let message = codec_message(decode_bytes(&input));
            assert!(
                message.contains("invalid memcomparable marker"),
                "{input:?}: {message}"
            );
        }
        let bad_padding: Vec<Vec<u8>> = vec![
            vec![0, 0, 0, 0, 0, 0, 0, 1, 247],
            vec![1, 2, 3, 0, 0, 0, 0, 0xFF, 250],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 255, 1, 0, 0, 0, 0, 0, 0, 0, 247],
        ];
        for input in bad_padding {
            let message = codec_message(decode_bytes(&input));
            assert!(
                message.contains("invalid memcomparable padding"),
                "{input:?}: {message}"
            );
        }
        let message = codec_message(decode_bytes(&[1, 2, 3, 4, 5, 6, 7, 8, 255, 1, 2]));
        assert!(message.contains("offset 9"), "{message}");
    }

    #[test]
    fn decode_bytes_into_reuses_buffer_and_restores_it_on_error() {
        let mut buf = b"kept".to_vec();
        let encoded = encode_bytes(b"more");
        let rest = decode_bytes_into(&mut buf, &encoded).unwrap();
        assert!(rest.is_empty());
        assert_eq!(buf, b"keptmore");

        // The first group decodes fine before the second turns out to be cut short.
        let mut bad = encode_bytes(&[7; 12]);
        bad.truncate(12);
        assert!(decode_bytes_into(&mut buf, &bad).is_err());
        assert_eq!(buf, b"keptmore");
    }

    #[test]
    fn concatenated_values_decode_in_sequence() {
        let parts: [&[u8]; 4] = [b"", b"table", &[0xFF; 8], &[0; 9]];
        let mut key = Vec::new();
        for part in parts {
            encode_bytes_into(&mut key, part);
        }
        let mut rest = key.as_slice();
        for part in parts {
            let (decoded, after) = decode_bytes(rest).unwrap();
            assert_eq!(decoded, part);
            rest = after;
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn encode_bytes_preserves_order() {
        let mut raw: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![0; 7],
            vec![0; 8],
            vec![0; 9],
            vec![0; 16],
            vec![0, 0xFF],
            vec![1],
            vec![1, 0],
            vec![1, 2, 3, 4, 5, 6, 7],
            vec![1, 2, 3, 4, 5, 6, 7, 0],
            vec![1, 2, 3, 4, 5, 6, 7, 8],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 0],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9],
            vec![1, 2, 3, 4, 5, 6, 7, 9],
            vec![0xF7],
            vec![0xFE, 0xFF],
            vec![0xFF],
            vec![0xFF; 7],
            vec![0xFF; 8],
            vec![0xFF; 9],
            vec![0xFF, 0],
            b"a".to_vec(),
            b"a\0".to_vec(),
            b"ab".to_vec(),
        ];
        raw.sort();
        let encoded: Vec<Vec<u8>> = raw.iter().map(|r| encode_bytes(r)).collect();
        for (i, pair) in encoded.windows(2).enumerate() {
            assert!(pair[0] < pair[1], "{:?} < {:?} lost", raw[i], raw[i + 1]);
            assert!(
                !pair[1].starts_with(&pair[0]),
                "encodings must not be prefixes"
            );
        }
    }

    #[test]
    fn composite_keys_sort_field_by_field() {
        let fields: [(&[u8], i64); 6] = [
            (b"", 5),
            (b"a", -3),
            (b"a", 0),
            (b"a", 7),
            (b"a\0", i64::MIN),
            (b"b", -1),
        ];
        let mut previous: Option<Vec<u8>> = None;
        for (name, id) in fields {
            let mut key = Vec::new();
            encode_bytes_into(&mut key, name);
            encode_int(&mut key, id);
            if let Some(previous) = previous {
                assert!(previous < key, "({name:?}, {id}) out of order");
            }
            previous = Some(key);
        }
    }

    #[test]
    fn bytes_round_trip_and_order_hold_for_generated_inputs() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut previous = (Vec::new(), encode_bytes(&[]));
        for _ in 0..5_000 {
            let raw = rng.tricky_bytes();
            let encoded = encode_bytes(&raw);
            assert_eq!(encoded.len(), encoded_len(raw.len()));
            assert_eq!(decode_bytes(&encoded).unwrap(), (raw.clone(), &[][..]));
            assert_eq!(
                raw.cmp(&previous.0),
                encoded.cmp(&previous.1),
                "{raw:?} vs {previous:?}"
            );
            previous = (raw, encoded);
        }
    }

    #[test]
    fn decode_bytes_never_panics_and_is_canonical() {
        let mut rng = XorShift(0x0123_4567_89AB_CDEF);
        let mut decoded_ok = 0;
        for _ in 0..20_000 {
            // Mostly valid encodings with one byte changed or cut short, plus pure noise.
            let mut input = encode_bytes(&rng.tricky_bytes());
            match rng.below(3) {
                0 => {
                    let at = rng.below(input.len() as u64) as usize;
                    input[at] = rng.next() as u8;
                }
                1 => input.truncate(rng.below(input.len() as u64) as usize),
                _ => input = rng.tricky_bytes(),
            }
            if let Ok((value, rest)) = decode_bytes(&input) {
                decoded_ok += 1;
                let consumed = &input[..input.len() - rest.len()];
                assert_eq!(encode_bytes(&value), consumed, "{input:?}");
            }
        }
        assert!(
            decoded_ok > 1_000,
            "the mutations should leave many inputs valid"
        );
    }

    /// Boundary values: around each byte-length step and the sign bit.
    fn u64_samples() -> Vec<u64> {
        let mut samples = vec![0, 1, 2, 127, 128, 239, 240, 241, u64::MAX, u64::MAX - 1];
        for bits in [7, 8, 15, 16, 24, 31, 32, 40, 48, 56, 62, 63] {
            let p = 1u64 << bits;
            samples.extend([p - 1, p, p + 1]);
        }
        samples
    }

    fn i64_samples() -> Vec<i64> {
        let mut samples: Vec<i64> = u64_samples().into_iter().map(u64::cast_signed).collect();
        samples.extend(
            u64_samples()
                .into_iter()
                .map(|u| u.cast_signed().wrapping_neg()),
        );
        samples.extend([
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
            -255,
            -256,
            -257,
            -65535,
            -65536,
        ]);
        samples
    }

    type Encode<T> = fn(&mut Vec<u8>, T);
    type Decode<T> = fn(&[u8]) -> Result<(T, &[u8])>;

    fn encoded<T: Copy>(v: T, encode: Encode<T>) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(&mut buf, v);
        buf
    }

    /// Checks that `encode` round-trips through `decode` (with trailing bytes left alone) and
    /// orders like `order` over `samples`.
    fn check_codec<T: Copy + Ord + std::fmt::Debug>(
        samples: &[T],
        encode: Encode<T>,
        decode: Decode<T>,
        order: fn(&T, &T) -> std::cmp::Ordering,
    ) {
        for &v in samples {
            let mut buf = encoded(v, encode);
            buf.extend_from_slice(b"rest");
            assert_eq!(decode(&buf).unwrap(), (v, &b"rest"[..]), "{v:?}");
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(order);
        sorted.dedup();
        for pair in sorted.windows(2) {
            let (a, b) = (encoded(pair[0], encode), encoded(pair[1], encode));
            assert!(
                a < b,
                "{:?} => {a:02x?} should sort before {:?} => {b:02x?}",
                pair[0],
                pair[1]
            );
        }
    }

    #[test]
    fn int_vectors() {
        let cases: [(i64, [u8; 8]); 6] = [
            (0, [0x80, 0, 0, 0, 0, 0, 0, 0]),
            (1, [0x80, 0, 0, 0, 0, 0, 0, 1]),
            (-1, [0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]),
            (i64::MIN, [0; 8]),
            (i64::MAX, [0xFF; 8]),
            (0x0102_0304_0506_0708, [0x81, 2, 3, 4, 5, 6, 7, 8]),
        ];
        for (v, bytes) in cases {
            assert_eq!(encoded(v, encode_int), bytes, "{v}");
            assert_eq!(encoded(v, encode_int_desc), bytes.map(|b| !b), "{v} desc");
            assert_eq!(int_to_cmp_uint(v), u64::from_be_bytes(bytes));
            assert_eq!(cmp_uint_to_int(u64::from_be_bytes(bytes)), v);
        }
    }

    #[test]
    fn uint_vectors() {
        let cases: [(u64, [u8; 8]); 4] = [
            (0, [0; 8]),
            (1, [0, 0, 0, 0, 0, 0, 0, 1]),
            (0x0102_0304_0506_0708, [1, 2, 3, 4, 5, 6, 7, 8]),
            (u64::MAX, [0xFF; 8]),
        ];
        for (v, bytes) in cases {
            assert_eq!(encoded(v, encode_uint), bytes, "{v}");
            assert_eq!(encoded(v, encode_uint_desc), bytes.map(|b| !b), "{v} desc");
        }
    }

    #[test]
    fn fixed_width_codecs_round_trip_and_order() {
        let ints = i64_samples();
        let uints = u64_samples();
        check_codec(&ints, encode_int, decode_int, |a, b| a.cmp(b));
        check_codec(&ints, encode_int_desc, decode_int_desc, |a, b| b.cmp(a));
        check_codec(&uints, encode_uint, decode_uint, |a, b| a.cmp(b));
        check_codec(&uints, encode_uint_desc, decode_uint_desc, |a, b| b.cmp(a));
    }

    #[test]
    fn fixed_width_decoders_reject_short_input() {
        for len in 0..8 {
            let input = vec![0xAB; len];
            for message in [
                codec_message(decode_int(&input)),
                codec_message(decode_int_desc(&input)),
                codec_message(decode_uint(&input)),
                codec_message(decode_uint_desc(&input)),
            ] {
                assert!(
                    message.contains(&format!("the input has {len}")),
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn uvarint_vectors() {
        let cases: Vec<(u64, Vec<u8>)> = vec![
            (0, vec![0x00]),
            (1, vec![0x01]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xAC, 0x02]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (
                1 << 63,
                vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            ),
            (
                u64::MAX,
                vec![0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ),
        ];
        for (v, bytes) in cases {
            assert_eq!(encoded(v, encode_uvarint), bytes, "{v}");
            assert_eq!(decode_uvarint(&bytes).unwrap(), (v, &[][..]));
        }
    }

    #[test]
    fn varint_vectors() {
        let cases: Vec<(i64, Vec<u8>)> = vec![
            (0, vec![0x00]),
            (-1, vec![0x01]),
            (1, vec![0x02]),
            (-2, vec![0x03]),
            (63, vec![0x7E]),
            (-64, vec![0x7F]),
            (64, vec![0x80, 0x01]),
            (-65, vec![0x81, 0x01]),
            (
                i64::MAX,
                vec![0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ),
            (
                i64::MIN,
                vec![0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            ),
        ];
        for (v, bytes) in cases {
            assert_eq!(encoded(v, encode_varint), bytes, "{v}");
            assert_eq!(decode_varint(&bytes).unwrap(), (v, &[][..]));
        }
    }

    #[test]
    fn varints_round_trip() {
        // Varints do not preserve order, so only the round trip is checked.
        for v in u64_samples() {
            let mut buf = encoded(v, encode_uvarint);
            assert!(buf.len() <= MAX_VARINT_LEN);
            buf.push(0x99);
            assert_eq!(decode_uvarint(&buf).unwrap(), (v, &[0x99][..]));
        }
        for v in i64_samples() {
            let mut buf = encoded(v, encode_varint);
            assert!(buf.len() <= MAX_VARINT_LEN);
            buf.push(0x99);
            assert_eq!(decode_varint(&buf).unwrap(), (v, &[0x99][..]));
        }
    }

    #[test]
    fn varint_decode_errors() {
        // Ported from TiKV's varint EOF cases: bit 63 exceeded, then a cut-short input.
        let mut overflow = vec![0x80; 9];
        overflow.push(0x02);
        assert!(codec_message(decode_uvarint(&overflow)).contains("overflows 64 bits"));
        assert!(codec_message(decode_varint(&overflow)).contains("overflows 64 bits"));
        let mut continued = vec![0xFF; 10];
        continued.push(0x01);
        assert!(codec_message(decode_uvarint(&continued)).contains("overflows 64 bits"));

        let mut short = vec![0x80; 3];
        assert!(codec_message(decode_uvarint(&short)).contains("truncated"));
        assert!(codec_message(decode_varint(&short)).contains("truncated"));
        assert!(codec_message(decode_uvarint(&[])).contains("truncated"));
        // Non-minimal encodings decode, as in Go.
        short.push(0x00);
        assert_eq!(decode_uvarint(&short).unwrap(), (0, &[][..]));
    }

    #[test]
    fn comparable_uvarint_vectors() {
        let cases: Vec<(u64, Vec<u8>)> = vec![
            (0, vec![8]),
            (1, vec![9]),
            (239, vec![247]),
            (240, vec![248, 240]),
            (255, vec![248, 255]),
            (256, vec![249, 1, 0]),
            (0xFFFF, vec![249, 0xFF, 0xFF]),
            (0x1_0000, vec![250, 1, 0, 0]),
            (
                (1 << 56) - 1,
                vec![254, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            ),
            (1 << 56, vec![255, 1, 0, 0, 0, 0, 0, 0, 0]),
            (
                u64::MAX,
                vec![255, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            ),
        ];
        for (v, bytes) in cases {
            assert_eq!(encoded(v, encode_comparable_uvarint), bytes, "{v}");
            assert_eq!(decode_comparable_uvarint(&bytes).unwrap(), (v, &[][..]));
        }
    }

    #[test]
    fn comparable_varint_vectors() {
        let cases: Vec<(i64, Vec<u8>)> = vec![
            (0, vec![8]),
            (239, vec![247]),
            (240, vec![248, 240]),
            (-1, vec![7, 0xFF]),
            (-255, vec![7, 0x01]),
            (-256, vec![6, 0xFF, 0x00]),
            (-65_535, vec![6, 0x00, 0x01]),
            (-65_536, vec![5, 0xFF, 0x00, 0x00]),
            (i64::MIN, vec![0, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            (i64::MIN + 1, vec![0, 0x80, 0, 0, 0, 0, 0, 0, 1]),
            (
                i64::MAX,
                vec![255, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            ),
        ];
        for (v, bytes) in cases {
            assert_eq!(encoded(v, encode_comparable_varint), bytes, "{v}");
            assert_eq!(decode_comparable_varint(&bytes).unwrap(), (v, &[][..]));
        }
    }

    #[test]
    fn comparable_varints_round_trip_and_order() {
        check_codec(
            &i64_samples(),
            encode_comparable_varint,
            decode_comparable_varint,
            |a, b| a.cmp(b),
        );
        check_codec(
            &u64_samples(),
            encode_comparable_uvarint,
            decode_comparable_uvarint,
            |a, b| a.cmp(b),
        );
    }

    #[test]
    fn decode_comparable_varint_consumes_single_byte_values() {
        // client-go returns the input unconsumed here; a caller reading fields in sequence
        // would read the same byte twice.
        assert_eq!(
            decode_comparable_varint(&[8 + 5, 0xAA]).unwrap(),
            (5, &[0xAA][..])
        );
    }

    #[test]
    fn comparable_varint_decode_errors() {
        assert!(codec_message(decode_comparable_varint(&[])).contains("empty"));
        assert!(codec_message(decode_comparable_uvarint(&[])).contains("empty"));
        // Tags announcing more bytes than present.
        for input in [&[249, 1][..], &[255], &[0, 0x80], &[7]] {
            let message = codec_message(decode_comparable_varint(input));
            assert!(message.contains("truncated"), "{input:?}: {message}");
        }
        assert!(codec_message(decode_comparable_uvarint(&[250, 1])).contains("truncated"));
        // A negative tag is never a valid uvarint.
        let message = codec_message(decode_comparable_uvarint(&[7, 0xFF]));
        assert!(message.contains("decode_comparable_varint"), "{message}");
        // A positive tag whose value exceeds i64::MAX came from the unsigned encoder.
        let message = codec_message(decode_comparable_varint(&[255, 0x80, 0, 0, 0, 0, 0, 0, 0]));
        assert!(message.contains("decode_comparable_uvarint"), "{message}");
        // A negative tag whose value has no sign bit is corrupt.
        let message = codec_message(decode_comparable_varint(&[
            0, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        ]));
        assert!(message.contains("corrupt"), "{message}");
    }

    #[test]
    fn numbers_round_trip_and_order_for_generated_inputs() {
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        let mut previous: Option<(i64, u64)> = None;
        for _ in 0..20_000 {
            let u = rng.any_u64();
            let i = if rng.below(2) == 0 {
                u.cast_signed()
            } else {
                u.cast_signed().wrapping_neg()
            };
            let codecs_u: [(Encode<u64>, Decode<u64>); 4] = [
                (encode_uint, decode_uint),
                (encode_uint_desc, decode_uint_desc),
                (encode_uvarint, decode_uvarint),
                (encode_comparable_uvarint, decode_comparable_uvarint),
            ];
            for (encode, decode) in codecs_u {
                assert_eq!(decode(&encoded(u, encode)).unwrap(), (u, &[][..]), "{u}");
            }
            let codecs_i: [(Encode<i64>, Decode<i64>); 4] = [
                (encode_int, decode_int),
                (encode_int_desc, decode_int_desc),
                (encode_varint, decode_varint),
                (encode_comparable_varint, decode_comparable_varint),
            ];
            for (encode, decode) in codecs_i {
                assert_eq!(decode(&encoded(i, encode)).unwrap(), (i, &[][..]), "{i}");
            }
            if let Some((pi, pu)) = previous {
                let cmp_i = |encode: Encode<i64>| encoded(pi, encode).cmp(&encoded(i, encode));
                let cmp_u = |encode: Encode<u64>| encoded(pu, encode).cmp(&encoded(u, encode));
                assert_eq!(cmp_i(encode_comparable_varint), pi.cmp(&i), "{pi} vs {i}");
                assert_eq!(cmp_i(encode_int), pi.cmp(&i), "{pi} vs {i}");
                assert_eq!(cmp_i(encode_int_desc), i.cmp(&pi), "{pi} vs {i}");
                assert_eq!(cmp_u(encode_comparable_uvarint), pu.cmp(&u), "{pu} vs {u}");
                assert_eq!(cmp_u(encode_uint), pu.cmp(&u), "{pu} vs {u}");
                assert_eq!(cmp_u(encode_uint_desc), u.cmp(&pu), "{pu} vs {u}");
            }
            previous = Some((i, u));
        }
    }

    #[test]
    fn number_decoders_never_panic() {
        let mut rng = XorShift(0x5151_5151_1234_5678);
        for _ in 0..20_000 {
            let len = rng.below(12) as usize;
            let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let _ = decode_int(&input);
            let _ = decode_int_desc(&input);
            let _ = decode_uint(&input);
            let _ = decode_uint_desc(&input);
            let _ = decode_varint(&input);
            let _ = decode_uvarint(&input);
            if let Ok((_, rest)) = decode_comparable_varint(&input) {
                assert!(rest.len() < input.len());
            }
            if let Ok((_, rest)) = decode_comparable_uvarint(&input) {
                assert!(rest.len() < input.len());
            }
        }
    }
}
