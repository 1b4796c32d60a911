//! The TSO timestamp: a 64-bit value whose high 46 bits are PD's physical clock in milliseconds
//! and whose low 18 bits are a logical counter within that millisecond.
//!
//! Everything that orders transactions (start_ts, commit_ts, for_update_ts, lock TTL checks)
//! compares these values as plain integers, so the type is a transparent `u64` newtype with
//! conversions to and from wall-clock time. Ports the helpers of client-go `oracle/oracle.go`
//! (`ComposeTS`, `ExtractPhysical`, `ExtractLogical`, `GetTimeFromTS`, `GoTimeToTS`,
//! `GoTimeToLowerLimitStartTS`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bits of a timestamp that hold the logical counter.
pub(crate) const LOGICAL_BITS: u32 = 18;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// A timestamp allocated by PD's timestamp oracle (or derived from one).
///
/// Ordering is the integer order, which is the order PD allocated them in. Converts from and to
/// the `u64` TiKV stores ([`From`]), and splits into PD's physical milliseconds and logical
/// counter (client-go `oracle.ExtractPhysical`, `ExtractLogical`, `ComposeTS`).
///
/// ```
/// use tikv_client::Timestamp;
///
/// let ts = Timestamp::compose(1_700_000_000_000, 7);
/// assert_eq!((ts.physical(), ts.logical()), (1_700_000_000_000, 7));
/// assert_eq!(Timestamp::from(ts.version()), ts);
/// assert!(Timestamp::compose(1_700_000_000_001, 0) > ts);
/// let raw: u64 = ts.into();
/// assert_eq!(raw, ts.version());
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The zero timestamp; never allocated by PD.
    ///
    /// ```
    /// assert_eq!(tikv_client::Timestamp::ZERO.version(), 0);
    /// ```
    pub const ZERO: Timestamp = Timestamp(0);
    /// The largest timestamp. TiKV reads at it see the latest committed data; it is not a valid
    /// stale-read timestamp.
    ///
    /// ```
    /// assert_eq!(tikv_client::Timestamp::MAX.version(), u64::MAX);
    /// ```
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// Wraps a raw 64-bit timestamp (the same as `Timestamp::from`).
    ///
    /// ```
    /// # use tikv_client::Timestamp;
    /// const START: Timestamp = Timestamp::from_version(42);
    /// assert_eq!(START, Timestamp::from(42));
    /// ```
    pub const fn from_version(version: u64) -> Self {
        Timestamp(version)
    }

    /// Builds a timestamp from PD's physical milliseconds and logical counter.
    ///
    /// The logical part is masked to its 18 bits, as the wire format cannot hold more.
    ///
    /// ```
    /// # use tikv_client::Timestamp;
    /// assert_eq!(Timestamp::compose(1, 2).version(), (1 << 18) + 2);
    /// ```
    pub const fn compose(physical_ms: u64, logical: u64) -> Self {
        Timestamp((physical_ms << LOGICAL_BITS) + (logical & LOGICAL_MASK))
    }

    /// The raw 64-bit value sent on the wire.
    ///
    /// ```
    /// # use tikv_client::Timestamp;
    /// assert_eq!(Timestamp::from(400_000).version(), 400_000);
    /// ```
    pub const fn version(self) -> u64 {
        self.0
    }

    /// The physical part: milliseconds since the Unix epoch.
    ///
    /// ```
    /// # use tikv_client::Timestamp;
    /// assert_eq!(Timestamp::compose(1_000, 5).physical(), 1_000);
    /// ```
    pub const fn physical(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// The logical part: the counter within the physical millisecond.
    ///
    /// ```
    /// # use tikv_client::Timestamp;
    /// assert_eq!(Timestamp::compose(1_000, 5).logical(), 5);
    /// ```
    pub const fn logical(self) -> u64 {
        self.0 & LOGICAL_MASK
    }

    /// The wall-clock time of the physical part.
    ///
    /// ```
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # use tikv_client::Timestamp;
    /// let ts = Timestamp::compose(1_500, 9);
    /// assert_eq!(ts.to_system_time(), UNIX_EPOCH + Duration::from_millis(1_500));
    /// ```
    pub fn to_system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.physical())
    }

    /// The lowest timestamp of the given wall-clock time (logical part zero). Times before the
    /// Unix epoch map to [`Timestamp::ZERO`].
    ///
    /// ```
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # use tikv_client::Timestamp;
    /// let ts = Timestamp::from_system_time(UNIX_EPOCH + Duration::from_millis(1_500));
    /// assert_eq!(ts, Timestamp::compose(1_500, 0));
    /// ```
    pub fn from_system_time(time: SystemTime) -> Self {
        let ms = time
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX >> LOGICAL_BITS))
            .unwrap_or(0);
        Timestamp::compose(ms.min(u64::MAX >> LOGICAL_BITS), 0)
    }

    /// The lowest start timestamp a transaction still running at `now` can have, given that no
    /// transaction lives longer than `max_txn_time`. GC and lock resolution use it as a bound.
    ///
    /// ```
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # use tikv_client::Timestamp;
    /// let now = UNIX_EPOCH + Duration::from_secs(100);
    /// let bound = Timestamp::lower_limit_start_ts(now, Duration::from_secs(60));
    /// assert_eq!(bound.physical(), 40_000);
    /// ```
    pub fn lower_limit_start_ts(now: SystemTime, max_txn_time: Duration) -> Self {
        let earliest = now.checked_sub(max_txn_time).unwrap_or(UNIX_EPOCH);
        Timestamp::from_system_time(earliest)
    }
}

impl From<u64> for Timestamp {
    fn from(version: u64) -> Self {
        Timestamp(version)
    }
}

impl From<Timestamp> for u64 {
    fn from(ts: Timestamp) -> Self {
        ts.0
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Timestamp({}: {}ms+{})",
            self.0,
            self.physical(),
            self.logical()
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_and_extract_round_trip() {
        let ts = Timestamp::compose(1_700_000_000_123, 42);
        assert_eq!(ts.physical(), 1_700_000_000_123);
        assert_eq!(ts.logical(), 42);
        assert_eq!(ts.version(), (1_700_000_000_123 << 18) + 42);
        // The logical counter cannot spill into the physical part.
        assert_eq!(Timestamp::compose(5, 1 << 18).physical(), 5);
    }

    #[test]
    fn system_time_conversions() {
        let t = UNIX_EPOCH + Duration::from_millis(1_234_567);
        let ts = Timestamp::from_system_time(t);
        assert_eq!(ts.physical(), 1_234_567);
        assert_eq!(ts.logical(), 0);
        assert_eq!(ts.to_system_time(), t);
        assert_eq!(
            Timestamp::from_system_time(UNIX_EPOCH - Duration::from_secs(1)),
            Timestamp::ZERO
        );
        let lower = Timestamp::lower_limit_start_ts(t, Duration::from_millis(1_000));
        assert_eq!(lower.physical(), 1_233_567);
        assert_eq!(
            Timestamp::lower_limit_start_ts(t, Duration::from_secs(10_000)),
            Timestamp::ZERO
        );
    }
}
