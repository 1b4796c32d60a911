//! Key comparison by integer prefixes: the first 16 bytes of a key (or of what follows a
//! common prefix) as a big-endian `u128`, so that the region index and the range checks compare
//! integers held inline instead of chasing pointers to key buffers and calling `memcmp`.

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
        }
    }

    /// Where `key` sorts relative to the keys sharing this prefix: before all of them, after
    /// all of them, or among them (`Equal`: `key` starts with the prefix). `member` is one of
    /// the keys, read only for prefixes longer than 32 bytes.
    #[inline]
    pub(crate) fn locate<'a>(&self, key: &[u8], member: impl FnOnce() -> &'a [u8]) -> Ordering {
        let mut covered = 0;
        for (i, &head) in self.head.iter().enumerate() {
            let n = self.len.saturating_sub(i * 16).min(16);
            if n == 0 {
                break;
            }
            // Compare the first `n` bytes of this 16-byte chunk only.
            let shift = 128 - 8 * n as u32;
            let k = key_prefix(key.get(i * 16..).unwrap_or(&[]))
                .checked_shr(shift)
                .unwrap_or(0);
            let h = head.checked_shr(shift).unwrap_or(0);
            match k.cmp(&h) {
                Ordering::Equal => {}
                other => return other,
            }
            covered += n;
        }
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
