//! Key comparison by integer prefixes: the first 16 (or 8) bytes of a key, or of what follows a
//! common prefix, as a big-endian `u128` (or `u64`), so that the region index and the range
//! checks compare integers held inline instead of chasing pointers to key buffers and calling
//! `memcmp`.

use std::cmp::Ordering;

/// The first 16 bytes of a key, zero-padded, as a big-endian integer.
///
/// Comparing prefixes orders keys like comparing the keys themselves whenever the prefixes
/// differ (a shorter key padded with zeros is never above a key it is a prefix of); equal
/// prefixes leave the order undecided and the full keys are compared. The region index and the
/// range checks compare prefixes first so that the common case touches no key memory.
#[inline]
pub(crate) fn key_prefix(key: &[u8]) -> u128 {
    // Whole-word loads only: copying a short key into a zeroed buffer and reading it back as
    // one integer costs a `memmove` call and a store-forwarding stall, on every level of every
    // search (the bytes after a common prefix are often only a few).
    let n = key.len();
    if let Some(head) = key.first_chunk::<16>() {
        return u128::from_be_bytes(*head);
    }
    let (hi, lo) = if n >= 8 {
        let hi = be_u64(key);
        // The last eight bytes, shifted so that those after the first eight lead.
        let tail = be_u64(&key[n - 8..]);
        (hi, tail.checked_shl(8 * (16 - n) as u32).unwrap_or(0))
    } else {
        (short_prefix(key), 0)
    };
    (u128::from(hi) << 64) | u128::from(lo)
}

/// The first 8 bytes of a key, zero-padded, as a big-endian integer: [`key_prefix`] at half the
/// width, for the index leaves, whose keys are told apart by the few bytes after their common
/// prefix and where density decides how many cache lines a search touches.
#[inline]
pub(crate) fn key_prefix64(key: &[u8]) -> u64 {
    match key.first_chunk::<8>() {
        Some(head) => u64::from_be_bytes(*head),
        None => short_prefix(key),
    }
}

/// The first eight bytes of `key` (at least eight long) as a big-endian integer.
#[inline]
fn be_u64(key: &[u8]) -> u64 {
    key.first_chunk::<8>().map_or(0, |b| u64::from_be_bytes(*b))
}

/// A key shorter than eight bytes, zero-padded, as a big-endian integer.
#[inline]
fn short_prefix(key: &[u8]) -> u64 {
    let n = key.len();
    if n >= 4 {
        let head = key.first_chunk::<4>().map_or(0, |b| u32::from_be_bytes(*b));
        let tail = key[n - 4..]
            .first_chunk::<4>()
            .map_or(0, |b| u32::from_be_bytes(*b));
        let tail = tail.checked_shl(8 * (8 - n) as u32).unwrap_or(0);
        (u64::from(head) << 32) | u64::from(tail)
    } else {
        key.iter()
            .enumerate()
            .fold(0, |acc, (i, &b)| acc | u64::from(b) << (56 - 8 * i))
    }
}

/// The common prefix of a sorted list of keys.
///
/// Neighbouring keys share long prefixes (a table id, the high bytes of a row handle), so
/// comparing their first 16 bytes tells them apart poorly. Comparing the 16 bytes that follow
/// the prefix they all share does: those are where sorted neighbours differ.
#[derive(Clone, Default)]
pub(crate) struct Lcp {
    pub(crate) len: usize,
    /// The first 32 bytes of the prefix (zero-padded), as two big-endian integers, so that
    /// checking a key against it is two integer comparisons rather than a `memcmp` call.
    head: [u128; 2],
    /// Which bytes of each head belong to the prefix (all ones over them).
    mask: [u128; 2],
}

/// A mask over the first `n` (at most 16) bytes of a big-endian `u128`.
fn head_mask(n: usize) -> u128 {
    match n {
        0 => 0,
        n if n >= 16 => u128::MAX,
        n => !(u128::MAX >> (8 * n)),
    }
}

impl Lcp {
    /// The common prefix of a sorted list, from its first and last key.
    pub(crate) fn of(first: &[u8], last: &[u8]) -> Lcp {
        let len = first
            .iter()
            .zip(last)
            .position(|(a, b)| a != b)
            .unwrap_or(first.len().min(last.len()));
        let prefix = &first[..len];
        Lcp {
            len,
            head: [
                key_prefix(prefix),
                key_prefix(prefix.get(16..).unwrap_or(&[])),
            ],
            mask: [head_mask(len), head_mask(len.saturating_sub(16))],
        }
    }

    /// Where `key` sorts relative to the keys sharing this prefix: before all of them, after
    /// all of them, or among them (`Equal`: `key` starts with the prefix). `member` is one of
    /// the keys, read only for prefixes longer than 32 bytes.
    #[inline]
    pub(crate) fn locate<'a>(&self, key: &[u8], member: impl FnOnce() -> &'a [u8]) -> Ordering {
        if self.len == 0 {
            return Ordering::Equal;
        }
        // Masking keeps the prefix's bytes only: comparing what is left compares the key's
        // first bytes with the prefix, as zero padding orders a short key first.
        let k = key_prefix(key) & self.mask[0];
        if k != self.head[0] {
            return k.cmp(&self.head[0]);
        }
        if self.len > 16 {
            let k = key_prefix(key.get(16..).unwrap_or(&[])) & self.mask[1];
            if k != self.head[1] {
                return k.cmp(&self.head[1]);
            }
        }
        let covered = self.len.min(32);
        if key.len() < covered {
            // A proper prefix of the common prefix sorts before every key that has it.
            return Ordering::Less;
        }
        if self.len > covered {
            let member = member();
            let rest = &member[covered.min(member.len())..self.len.min(member.len())];
            let n = (key.len() - covered).min(rest.len());
            match key[covered..covered + n].cmp(&rest[..n]) {
                Ordering::Equal => {}
                other => return other,
            }
            if key.len() < self.len {
                return Ordering::Less;
            }
        }
        Ordering::Equal
    }

    /// Whether `key` starts with this prefix (`member` as for `locate`).
    pub(crate) fn is_prefix_of<'a>(&self, key: &[u8], member: impl FnOnce() -> &'a [u8]) -> bool {
        self.locate(key, member) == Ordering::Equal
    }
}
