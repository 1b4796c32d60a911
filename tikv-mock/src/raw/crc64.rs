//! CRC-64/XZ, the digest TiKV's `RawChecksum` computes per entry (`crc64fast::Digest` in TiKV,
//! `crc64.MakeTable(crc64.ECMA)` in client-go): the ECMA-182 polynomial, reflected, with the
//! register initialised to all ones and inverted at the end.
//!
//! Written here because it is forty lines and the mock has no other use for a CRC crate.

/// The ECMA-182 polynomial in its reflected (LSB-first) form.
const POLY: u64 = 0xC96C_5795_D787_0F42;

/// One table entry per byte value: the register after shifting that byte through it.
const TABLE: [u64; 256] = build_table();

const fn build_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// A running CRC-64/XZ digest.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Crc64 {
    register: u64,
}

impl Default for Crc64 {
    fn default() -> Self {
        Crc64 { register: !0 }
    }
}

impl Crc64 {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        let mut crc = self.register;
        for &byte in data {
            crc = TABLE[((crc ^ u64::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
        }
        self.register = crc;
    }

    pub(crate) fn finish(&self) -> u64 {
        !self.register
    }
}

/// The digest of the concatenation of `parts`.
#[cfg(test)]
pub(crate) fn crc64(parts: &[&[u8]]) -> u64 {
    let mut digest = Crc64::new();
    for part in parts {
        digest.update(part);
    }
    digest.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_of_crc64_xz() {
        assert_eq!(crc64(&[b"123456789"]), 0x995D_C9BB_DF19_39FA);
        assert_eq!(crc64(&[b""]), 0);
    }

    #[test]
    fn parts_are_concatenated() {
        assert_eq!(crc64(&[b"1234", b"", b"56789"]), crc64(&[b"123456789"]));
        assert_ne!(crc64(&[b"a"]), crc64(&[b"b"]));
    }
}
