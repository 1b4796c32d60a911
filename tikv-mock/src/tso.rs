//! The timestamp oracle: hybrid timestamps `physical_ms << 18 | logical`, strictly increasing
//! for the life of the cluster, as PD's TSO allocates them.

/// Bits of the logical part of a timestamp.
pub(crate) const LOGICAL_BITS: u32 = 18;
const MAX_LOGICAL: u64 = 1 << LOGICAL_BITS;

/// Allocation state of the oracle.
#[derive(Debug, Default)]
pub(crate) struct Tso {
    physical: u64,
    logical: u64,
}

impl Tso {
    /// Allocates `count` consecutive timestamps and returns `(physical, last_logical)`: the
    /// client hands out `last_logical - count + 1 ..= last_logical`, as with PD.
    ///
    /// Physical time follows the clock but never goes backwards; when the logical part would
    /// overflow, physical time moves on by a millisecond (PD waits for the clock instead).
    pub(crate) fn allocate(&mut self, now_ms: u64, count: u32) -> (u64, u64) {
        let count = u64::from(count.max(1));
        if now_ms > self.physical {
            self.physical = now_ms;
            self.logical = 0;
        }
        if self.logical + count >= MAX_LOGICAL {
            self.physical += 1;
            self.logical = 0;
        }
        self.logical += count;
        (self.physical, self.logical)
    }

    /// One timestamp, composed.
    pub(crate) fn next(&mut self, now_ms: u64) -> u64 {
        let (physical, logical) = self.allocate(now_ms, 1);
        compose(physical, logical)
    }

    /// The timestamp the next allocation would be at least, without allocating.
    pub(crate) fn peek(&self, now_ms: u64) -> u64 {
        compose(self.physical.max(now_ms), self.logical)
    }
}

/// `physical << 18 | logical`.
pub(crate) fn compose(physical: u64, logical: u64) -> u64 {
    (physical << LOGICAL_BITS) | logical
}

/// The physical milliseconds of a timestamp.
pub(crate) fn physical_of(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_end_at_their_last_logical_and_never_repeat() {
        let mut tso = Tso::default();
        assert_eq!(tso.allocate(100, 10), (100, 10));
        assert_eq!(tso.allocate(100, 5), (100, 15));
        // The clock going backwards does not move physical time back.
        assert_eq!(tso.allocate(50, 1), (100, 16));
        assert_eq!(tso.allocate(200, 3), (200, 3));
        let mut last = 0;
        for _ in 0..1000 {
            let ts = tso.next(200);
            assert!(ts > last);
            last = ts;
        }
    }

    #[test]
    fn logical_overflow_moves_physical_forward() {
        let mut tso = Tso::default();
        tso.allocate(7, (MAX_LOGICAL - 2) as u32);
        let (physical, logical) = tso.allocate(7, 5);
        assert_eq!((physical, logical), (8, 5));
        assert_eq!(physical_of(compose(8, 5)), 8);
    }
}
