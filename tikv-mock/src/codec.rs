//! The memcomparable bytes encoding TiKV uses for storage keys (`Key::from_raw`): region
//! boundaries of transactional keys (API V1) and of every key in API V2 are in this form, so the
//! mock encodes keys before comparing them with boundaries.
//!
//! The client crate has its own full codec (`tikv_client::kv::codec`); the mock cannot depend on
//! the client (the client's tests depend on the mock), so it carries this small copy of the bytes
//! part only.

const GROUP: usize = 8;
const MARKER: u8 = 0xFF;
const PAD: u8 = 0x00;

/// Encodes `key` in groups of 8 bytes, each followed by `0xFF - padding`.
pub(crate) fn encode_bytes(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((key.len() / GROUP + 1) * (GROUP + 1));
    let mut chunks = key.chunks_exact(GROUP);
    for chunk in &mut chunks {
        out.extend_from_slice(chunk);
        out.push(MARKER);
    }
    // The last group is always present, even when empty, and says how much of it is padding.
    let tail = chunks.remainder();
    let pad = GROUP - tail.len();
    out.extend_from_slice(tail);
    out.extend(std::iter::repeat_n(PAD, pad));
    out.push(MARKER - pad as u8);
    out
}

/// Decodes an encoded key, returning `None` if `data` is not a complete, canonical encoding
/// followed by nothing.
pub(crate) fn decode_bytes(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len() / (GROUP + 1) * GROUP);
    let mut rest = data;
    loop {
        if rest.len() < GROUP + 1 {
            return None;
        }
        let (group, tail) = rest.split_at(GROUP);
        let marker = tail[0];
        rest = &tail[1..];
        let pad = (MARKER - marker) as usize;
        if marker == MARKER {
            out.extend_from_slice(group);
            continue;
        }
        if pad > GROUP {
            return None;
        }
        let (real, padding) = group.split_at(GROUP - pad);
        if padding.iter().any(|b| *b != PAD) || !rest.is_empty() {
            return None;
        }
        out.extend_from_slice(real);
        return Some(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(encode_bytes(b""), [0, 0, 0, 0, 0, 0, 0, 0, 0xF7]);
        assert_eq!(encode_bytes(b"a"), [b'a', 0, 0, 0, 0, 0, 0, 0, 0xF8]);
        assert_eq!(
            encode_bytes(b"12345678"),
            [
                b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8', 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0xF7
            ]
        );
        assert_eq!(
            encode_bytes(b"123456789"),
            [
                b'1', b'2', b'3', b'4', b'5', b'6', b'7', b'8', 0xFF, b'9', 0, 0, 0, 0, 0, 0, 0,
                0xF8
            ]
        );
    }

    #[test]
    fn round_trip_and_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"a\0",
            b"ab",
            b"abcdefgh",
            b"abcdefgh\0",
            b"\xff",
        ];
        for k in &keys {
            assert_eq!(decode_bytes(&encode_bytes(k)).as_deref(), Some(*k));
        }
        for a in &keys {
            for b in &keys {
                assert_eq!(
                    a.cmp(b),
                    encode_bytes(a).cmp(&encode_bytes(b)),
                    "{a:?} {b:?}"
                );
            }
        }
        assert_eq!(decode_bytes(b"abc"), None);
        assert_eq!(decode_bytes(&[b'a', 1, 0, 0, 0, 0, 0, 0, 0xF8]), None);
    }
}
