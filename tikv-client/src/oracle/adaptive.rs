//! The adaptive update interval of the low-resolution timestamp.
//!
//! The PD oracle refreshes its cached ("low-resolution") timestamp every configured interval
//! (2 s by default). A stale read whose staleness is shorter than that interval would find the
//! cached timestamp too old to vouch for its read timestamp and would have to ask PD on every
//! read. So when such reads show up, the refresh interval shrinks to just below the staleness
//! they ask for (never below 500 ms); once no such read has been seen for five minutes, it grows
//! back towards the configured value by 20 ms per second of elapsed time.
//!
//! This module is the state machine only; the refresh task in [`super::pd`] asks it for the next
//! interval at every tick, and read-timestamp validation reports requested stalenesses to it.
//! Every entry point takes `now` explicitly so that tests drive it without a clock. Ports the
//! adaptive-interval half of client-go `oracle/oracles/pd.go` (`nextUpdateInterval`,
//! `adjustUpdateLowResolutionTSIntervalWithRequestedStaleness`,
//! `SetLowResolutionTimestampUpdateInterval`), with its constants.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::oracle::Timestamp;
use crate::{Error, Result};

/// Lower bound of the adaptive interval, so that one odd read cannot make the oracle hammer PD.
pub(crate) const MIN_ALLOWED_ADAPTIVE_UPDATE_INTERVAL: Duration = Duration::from_millis(500);
/// How much below a requested staleness the interval is set when shrinking, so that reads asking
/// for that same staleness do not trigger another shrink right away.
pub(crate) const SHRINKING_PRESERVE: Duration = Duration::from_millis(100);
/// A read whose staleness is within this margin above the current interval still counts as
/// "short", and holds the interval where it is.
pub(crate) const BLOCK_RECOVER_THRESHOLD: Duration = Duration::from_millis(200);
/// Growth of the interval per second of elapsed time while recovering.
pub(crate) const RECOVER_PER_SECOND: Duration = Duration::from_millis(20);
/// How long after the last short-staleness read the interval starts to recover.
pub(crate) const DELAY_BEFORE_RECOVERING: Duration = Duration::from_secs(5 * 60);

/// Where the adaptive interval stands (client-go `adaptiveUpdateTSIntervalState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntervalState {
    /// The interval equals the configured one.
    Normal,
    /// The interval was shrunk for recent short-staleness reads, and is held there.
    Adapting,
    /// No short-staleness read for a while: the interval grows back to the configured one.
    Recovering,
    /// The configured interval is already at or below the minimum: nothing to adapt.
    Unadjustable,
}

#[derive(Debug)]
struct Machine {
    /// When the refresh task last refreshed the timestamp; recovery grows with the time since.
    last_tick: Instant,
    /// `None` until the first evaluation decides a state.
    state: Option<IntervalState>,
}

/// The adaptive interval: configuration, current value, and the bookkeeping that moves it.
///
/// The two intervals and the time of the last short-staleness read are atomics so that read
/// validation can consult them without locking; the mutex only orders the refresh task's
/// evaluation against configuration changes, and is never held across an await.
#[derive(Debug)]
pub(crate) struct AdaptiveInterval {
    /// Base of the millisecond counter in `last_short_staleness_read`.
    epoch: Instant,
    configured_ns: AtomicU64,
    adaptive_ns: AtomicU64,
    /// Milliseconds since `epoch`, plus one, of the latest read whose staleness was close to the
    /// interval; 0 when there was none.
    last_short_staleness_read: AtomicU64,
    machine: Mutex<Machine>,
    /// Wakes the refresh task to shrink at once. Capacity one: if a request is already queued,
    /// another one adds nothing.
    shrink_tx: mpsc::Sender<Duration>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `ts`'s physical time minus `earlier`'s, in nanoseconds (negative if `earlier` is later).
fn physical_gap_ns(ts: Timestamp, earlier: Timestamp) -> i128 {
    (i128::from(ts.physical()) - i128::from(earlier.physical())) * 1_000_000
}

impl AdaptiveInterval {
    /// A machine starting in sync with `configured`. The receiver gets the staleness of each
    /// read that asks for an immediate shrink; the refresh task owns it.
    pub(crate) fn new(configured: Duration, now: Instant) -> (Self, mpsc::Receiver<Duration>) {
        let (shrink_tx, shrink_rx) = mpsc::channel(1);
        let this = AdaptiveInterval {
            epoch: now,
            configured_ns: AtomicU64::new(nanos(configured)),
            adaptive_ns: AtomicU64::new(nanos(configured)),
            last_short_staleness_read: AtomicU64::new(0),
            machine: Mutex::new(Machine {
                last_tick: now,
                state: None,
            }),
            shrink_tx,
        };
        (this, shrink_rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Machine> {
        // The critical sections only do arithmetic; a panic in one cannot leave it torn.
        self.machine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The configured interval.
    pub(crate) fn configured(&self) -> Duration {
        Duration::from_nanos(self.configured_ns.load(Ordering::Relaxed))
    }

    /// The interval the refresh task currently uses (or will use from its next tick).
    pub(crate) fn current(&self) -> Duration {
        Duration::from_nanos(self.adaptive_ns.load(Ordering::Relaxed))
    }

    /// The current state; `None` before the first evaluation.
    #[cfg(test)]
    pub(crate) fn state(&self) -> Option<IntervalState> {
        self.lock().state
    }

    /// Records that the refresh task refreshed the timestamp at `now`.
    pub(crate) fn set_last_tick(&self, now: Instant) {
        self.lock().last_tick = now;
    }

    /// When the refresh task last refreshed the timestamp.
    pub(crate) fn last_tick(&self) -> Instant {
        self.lock().last_tick
    }

    fn since_last_short_read(&self, now: Instant) -> Option<Duration> {
        match self.last_short_staleness_read.load(Ordering::Relaxed) {
            0 => None,
            stamp => {
                let at = self.epoch + Duration::from_millis(stamp - 1);
                Some(now.saturating_duration_since(at))
            }
        }
    }

    /// Milliseconds since the machine's epoch of the latest short-staleness read (tests).
    #[cfg(test)]
    pub(crate) fn last_short_staleness_read_ms(&self) -> Option<u64> {
        match self.last_short_staleness_read.load(Ordering::Relaxed) {
            0 => None,
            stamp => Some(stamp - 1),
        }
    }

    #[cfg(test)]
    pub(crate) fn ms_since_epoch(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Changes the configured interval. The current interval follows at once when it was not
    /// adapted, or when the new configuration is shorter than it; otherwise it keeps serving the
    /// reads it was shrunk for and recovers to the new value later.
    pub(crate) fn set_configured(&self, interval: Duration) -> Result<()> {
        if interval.is_zero() {
            return Err(Error::invalid_argument("updateInterval must be > 0"));
        }
        let _machine = self.lock();
        let new = nanos(interval);
        let prev_configured = self.configured_ns.swap(new, Ordering::Relaxed);
        if new == prev_configured {
            return Ok(());
        }
        let adaptive = self.adaptive_ns.load(Ordering::Relaxed);
        let follows = adaptive == prev_configured || new < adaptive;
        if follows {
            self.adaptive_ns.store(new, Ordering::Relaxed);
        }
        tracing::info!(
            previous = ?Duration::from_nanos(prev_configured),
            new = ?interval,
            prev_adaptive = ?Duration::from_nanos(adaptive),
            adaptive_updated = follows,
            "updated low resolution ts update interval"
        );
        Ok(())
    }

    /// Decides the interval to use from `now` on. `required_staleness` is `Some` when a read
    /// asked for an immediate shrink (it is then never zero), `None` at a regular tick.
    pub(crate) fn next_update_interval(
        &self,
        now: Instant,
        required_staleness: Option<Duration>,
    ) -> Duration {
        let mut machine = self.lock();
        let configured = self.configured();
        let prev = self.current();
        let since_short = self.since_last_short_read(now);
        let short_read_recently = since_short.is_some_and(|d| d < DELAY_BEFORE_RECOVERING);
        let min = MIN_ALLOWED_ADAPTIVE_UPDATE_INTERVAL;
        let last_tick = machine.last_tick;

        let unadjustable =
            || (configured <= min).then_some((IntervalState::Unadjustable, configured));
        let normal = |current: Duration| {
            (configured > min && current == configured).then_some((IntervalState::Normal, current))
        };
        let adapting = |current: Duration| {
            if let Some(required) = required_staleness
                && required < current
                && current > min
            {
                // Shrink a little below what the read asks for, but not below the floor.
                let shrunk = required.saturating_sub(SHRINKING_PRESERVE).max(min);
                return Some((IntervalState::Adapting, shrunk));
            }
            // A short-staleness read came recently: hold the shrunk interval (this also stops a
            // recovery in progress).
            (current != configured && short_read_recently)
                .then_some((IntervalState::Adapting, current))
        };
        let recovering = |current: Duration| {
            if current == configured || short_read_recently {
                return None;
            }
            let since_tick = now.saturating_duration_since(last_tick);
            let grown = current + RECOVER_PER_SECOND.mul_f64(since_tick.as_secs_f64());
            Some((IntervalState::Recovering, grown.min(configured)))
        };

        let decided = if required_staleness.is_some() {
            unadjustable().or_else(|| adapting(prev))
        } else {
            unadjustable()
                .or_else(|| adapting(prev))
                .or_else(|| normal(prev))
                .or_else(|| recovering(prev))
        };
        let Some((mut state, mut interval)) = decided else {
            return prev;
        };
        // A recovery step that reached the configured value is simply normal again.
        if state == IntervalState::Recovering
            && let Some((s, i)) = normal(interval)
        {
            state = s;
            interval = i;
        }
        self.adaptive_ns.store(nanos(interval), Ordering::Relaxed);
        if machine.state != Some(state) {
            tracing::info!(
                configured = ?configured,
                prev_interval = ?prev,
                new_interval = ?interval,
                required_staleness = ?required_staleness,
                prev_state = ?machine.state,
                new_state = ?state,
                "adaptive update ts interval state transition"
            );
            machine.state = Some(state);
        }
        interval
    }

    /// Called by stale-read validation with the read timestamp and a current timestamp (fetched
    /// or estimated). Records a read whose staleness is close to the current interval (which
    /// holds the interval from recovering), and asks the refresh task to shrink at once when the
    /// staleness is below the interval.
    pub(crate) fn adjust_with_requested_staleness(
        &self,
        read_ts: Timestamp,
        current_ts: Timestamp,
        now: Instant,
    ) {
        // Signed: PD time and the read timestamp may disagree in either direction.
        let required_ns = physical_gap_ns(current_ts, read_ts);
        // Both atomics are read without the mutex: a rough view is enough here.
        let current = i128::from(self.adaptive_ns.load(Ordering::Relaxed));

        if required_ns <= current + BLOCK_RECOVER_THRESHOLD.as_nanos() as i128 {
            let stamp = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
                .unwrap_or(u64::MAX - 1)
                + 1;
            let last = self.last_short_staleness_read.load(Ordering::Relaxed);
            if last < stamp {
                // One attempt is enough: a concurrent writer stores a time just as recent.
                let _ = self.last_short_staleness_read.compare_exchange(
                    last,
                    stamp,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
        }

        if required_ns <= current
            && current > MIN_ALLOWED_ADAPTIVE_UPDATE_INTERVAL.as_nanos() as i128
        {
            // Clock skew can make the staleness zero or negative; the task expects it positive.
            let required = u64::try_from(required_ns)
                .map(Duration::from_nanos)
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_millis(1));
            // A full queue means a shrink is already pending; dropping this one loses nothing.
            let _ = self.shrink_tx.try_send(required);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE_MS: u64 = 1_700_000_000_000;

    /// A timestamp `before` earlier than the test's notion of PD's current time.
    fn ts(before: Duration) -> Timestamp {
        Timestamp::compose(BASE_MS - u64::try_from(before.as_millis()).unwrap(), 1)
    }

    fn now_ts() -> Timestamp {
        ts(Duration::ZERO)
    }

    #[track_caller]
    fn approx(actual: Duration, expected: Duration) {
        let diff = actual.abs_diff(expected);
        assert!(
            diff.as_secs_f64() <= expected.as_secs_f64() * 1e-3,
            "{actual:?} is not about {expected:?}"
        );
    }

    #[track_caller]
    fn must_notify(rx: &mut mpsc::Receiver<Duration>, expected: Duration) {
        assert_eq!(
            rx.try_recv().ok(),
            Some(expected),
            "expected a shrink request"
        );
    }

    #[track_caller]
    fn must_not_notify(rx: &mut mpsc::Receiver<Duration>) {
        assert!(rx.try_recv().is_err(), "unexpected shrink request");
    }

    // client-go pd_test.go TestAdaptiveUpdateTSInterval, step by step.
    #[test]
    fn adaptive_update_interval_state_machine() {
        use IntervalState::*;
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        let mut now = Instant::now();
        let (ai, mut rx) = AdaptiveInterval::new(secs(2), now);

        now += secs(2);
        assert_eq!(ai.next_update_interval(now, None), secs(2));
        now += secs(2);
        assert_eq!(ai.next_update_interval(now, None), secs(2));
        assert_eq!(ai.state(), Some(Normal));

        // A read asking for more staleness than the interval changes nothing.
        now += secs(1);
        ai.adjust_with_requested_staleness(ts(secs(3)), now_ts(), now);
        must_not_notify(&mut rx);
        assert_eq!(ai.next_update_interval(now, None), secs(2));

        // A read asking for less shrinks the interval at once, a little below its staleness.
        now += secs(1);
        ai.adjust_with_requested_staleness(ts(secs(1)), now_ts(), now);
        must_notify(&mut rx, secs(1));
        let mut expected = secs(1) - SHRINKING_PRESERVE;
        assert_eq!(ai.next_update_interval(now, Some(secs(1))), expected);
        assert_eq!(ai.state(), Some(Adapting));
        assert_eq!(
            ai.last_short_staleness_read_ms(),
            Some(ai.ms_since_epoch(now))
        );

        // Such reads keep coming: recorded, but no further shrink (already below them).
        now += DELAY_BEFORE_RECOVERING / 2;
        ai.adjust_with_requested_staleness(ts(secs(1)), now_ts(), now);
        must_not_notify(&mut rx);
        assert_eq!(
            ai.last_short_staleness_read_ms(),
            Some(ai.ms_since_epoch(now))
        );

        // Less than the delay since the last short read: no recovery yet.
        now += DELAY_BEFORE_RECOVERING / 2 + secs(1);
        ai.set_last_tick(now - secs(1));
        assert_eq!(ai.next_update_interval(now, None), expected);
        assert_eq!(ai.state(), Some(Adapting));

        // The delay has passed: grow by the recovery rate per second since the last tick.
        now += DELAY_BEFORE_RECOVERING / 2;
        ai.set_last_tick(now - secs(1));
        expected += RECOVER_PER_SECOND;
        approx(ai.next_update_interval(now, None), expected);
        assert_eq!(ai.state(), Some(Recovering));
        ai.set_last_tick(now);
        now += secs(2);
        // A read far above the interval does not hold the recovery.
        ai.adjust_with_requested_staleness(
            ts(expected + BLOCK_RECOVER_THRESHOLD * 2),
            now_ts(),
            now,
        );
        must_not_notify(&mut rx);
        expected += RECOVER_PER_SECOND * 2;
        approx(ai.next_update_interval(now, None), expected);
        assert_eq!(ai.state(), Some(Recovering));

        // A read close enough above the interval holds it where it is.
        ai.set_last_tick(now);
        now += secs(1);
        ai.adjust_with_requested_staleness(
            ts(expected + BLOCK_RECOVER_THRESHOLD / 2),
            now_ts(),
            now,
        );
        must_not_notify(&mut rx);
        approx(ai.next_update_interval(now, None), expected);
        assert_eq!(ai.state(), Some(Adapting));
        ai.set_last_tick(now);
        now += secs(1);
        approx(ai.next_update_interval(now, None), expected);
        assert_eq!(ai.state(), Some(Adapting));

        // The delay has passed again: recovery resumes...
        now += DELAY_BEFORE_RECOVERING;
        ai.set_last_tick(now - secs(1));
        expected += RECOVER_PER_SECOND;
        approx(ai.next_update_interval(now, None), expected);
        assert_eq!(ai.state(), Some(Recovering));

        // ...until the configured value, where the state is normal again.
        loop {
            ai.set_last_tick(now);
            now += secs(1);
            expected += RECOVER_PER_SECOND;
            if expected >= secs(2) {
                break;
            }
            approx(ai.next_update_interval(now, None), expected);
            assert_eq!(ai.state(), Some(Recovering));
        }
        assert_eq!(ai.next_update_interval(now, None), secs(2));
        assert_eq!(ai.state(), Some(Normal));

        // Configuration changes apply at once while the interval is not adapted.
        ai.set_configured(secs(1)).unwrap();
        assert_eq!(ai.current(), secs(1));
        assert_eq!(ai.next_update_interval(now, None), secs(1));
        ai.set_configured(secs(2)).unwrap();
        assert_eq!(ai.current(), secs(2));
        assert_eq!(ai.next_update_interval(now, None), secs(2));

        // While adapted, a longer configuration does not undo the shrink...
        now += secs(1);
        ai.adjust_with_requested_staleness(ts(secs(1)), now_ts(), now);
        must_notify(&mut rx, secs(1));
        expected = secs(1) - SHRINKING_PRESERVE;
        assert_eq!(ai.next_update_interval(now, Some(secs(1))), expected);
        assert_eq!(ai.state(), Some(Adapting));
        ai.set_configured(secs(3)).unwrap();
        assert_eq!(ai.current(), expected);
        assert_eq!(ai.next_update_interval(now, None), expected);
        ai.set_configured(secs(1)).unwrap();
        assert_eq!(ai.current(), expected);
        assert_eq!(ai.next_update_interval(now, None), expected);

        // ...but a configuration shorter than the current interval applies at once.
        ai.set_configured(ms(800)).unwrap();
        assert_eq!(ai.current(), ms(800));
        assert_eq!(ai.next_update_interval(now, None), ms(800));
        assert_eq!(ai.state(), Some(Normal));

        // At or below the floor, the interval is not adaptive.
        ai.set_configured(MIN_ALLOWED_ADAPTIVE_UPDATE_INTERVAL / 2)
            .unwrap();
        assert_eq!(ai.current(), MIN_ALLOWED_ADAPTIVE_UPDATE_INTERVAL / 2);
        assert_eq!(
            ai.next_update_interval(now, None),
            MIN_ALLOWED_ADAPTIVE_UPDATE_INTERVAL / 2
        );
        assert_eq!(ai.state(), Some(Unadjustable));
    }

    #[test]
    fn zero_interval_is_rejected_and_skew_still_shrinks() {
        let now = Instant::now();
        let (ai, mut rx) = AdaptiveInterval::new(Duration::from_secs(2), now);
        let err = ai.set_configured(Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("updateInterval must be > 0"));
        assert_eq!(ai.configured(), Duration::from_secs(2));

        // A read timestamp ahead of the "current" one (clock skew) asks for the smallest
        // positive staleness, not a negative one.
        ai.adjust_with_requested_staleness(now_ts(), ts(Duration::from_millis(5)), now);
        must_notify(&mut rx, Duration::from_millis(1));
        // The queue holds one request: a second one while it is pending is dropped.
        ai.adjust_with_requested_staleness(ts(Duration::from_secs(1)), now_ts(), now);
        ai.adjust_with_requested_staleness(ts(Duration::from_millis(700)), now_ts(), now);
        must_notify(&mut rx, Duration::from_secs(1));
        must_not_notify(&mut rx);
        // The floor holds for very short stalenesses.
        assert_eq!(
            ai.next_update_interval(now, Some(Duration::from_millis(1))),
            MIN_ALLOWED_ADAPTIVE_UPDATE_INTERVAL
        );
    }
}
