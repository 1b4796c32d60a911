//! The client-side slow score of a store: a number from 1 (healthy) to 100 that rises when the
//! store's request latency climbs while its request rate falls, and decays on every health tick
//! otherwise. 80 and above makes the store slow for replica scoring.
//!
//! Who calls it: [`super::health::StoreHealth`] owns one per store. Request paths record
//! latencies and mark the store slow from any task (atomics only); the health tick, one task per
//! cluster, folds the interval's numbers into the score (the sliding windows sit behind a lock
//! only the tick takes).
//!
//! Ports client-go `internal/locate/slow_score.go` (`SlowScoreStat`, `CountSlidingWindow`) with
//! its constants and its update rule, gradients and all.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(test)]
use std::time::Duration;

/// The score of a healthy store.
const SLOW_SCORE_INIT: u64 = 1;
/// A score at or above this makes the store slow (client-go `slowScoreThreshold`).
pub(crate) const SLOW_SCORE_THRESHOLD: u64 = 80;
/// The highest score.
const SLOW_SCORE_MAX: u64 = 100;
/// The average latency assumed before any is measured, in µs.
const INIT_TIMECOST_US: u64 = 500_000;
/// A single request this slow (the longest a request may take) makes the store slow at once.
#[cfg(test)]
const MAX_TIMECOST_US: u64 = 30_000_000;
/// How many ticks the sliding windows remember.
const SLIDING_WINDOW_SIZE: usize = 10;

/// The average of the last [`SLIDING_WINDOW_SIZE`] values.
#[derive(Debug, Default)]
struct CountSlidingWindow {
    avg: u64,
    sum: u64,
    history: VecDeque<u64>,
}

impl CountSlidingWindow {
    /// Adds `value`; returns its gradient against the previous average (how much it rose,
    /// relative), or a token positive value when there is nothing to compare with.
    fn append(&mut self, value: u64) -> f64 {
        let prev_avg = self.avg;
        if self.history.len() < SLIDING_WINDOW_SIZE {
            self.sum = self.sum.saturating_add(value);
        } else {
            let oldest = self.history.pop_front().unwrap_or(0);
            self.sum = self.sum.saturating_sub(oldest).saturating_add(value);
        }
        self.history.push_back(value);
        self.avg = self.sum / self.history.len() as u64;
        if prev_avg > 0 && value != prev_avg {
            (value as f64 - prev_avg as f64) / prev_avg as f64
        } else {
            1e-6
        }
    }
}

/// One store's slow-score statistics.
#[derive(Debug, Default)]
pub(crate) struct SlowScoreStat {
    /// The score; 0 until the first request or tick.
    avg_score: AtomicU64,
    /// The average latency of the recent ticks, in µs; 0 until initialised.
    avg_timecost: AtomicU64,
    /// The latency sum and the request count of the current tick.
    interval_timecost: AtomicU64,
    interval_count: AtomicU64,
    /// (latency, request count) windows, changed by the tick only.
    windows: Mutex<(CountSlidingWindow, CountSlidingWindow)>,
}

impl SlowScoreStat {
    /// The current score.
    pub(crate) fn score(&self) -> u64 {
        self.avg_score.load(Ordering::Acquire)
    }

    /// Whether the score makes the store slow.
    #[cfg(test)]
    pub(crate) fn is_slow(&self) -> bool {
        self.score() >= SLOW_SCORE_THRESHOLD
    }

    fn init(&self) {
        self.avg_score.store(SLOW_SCORE_INIT, Ordering::Release);
        self.avg_timecost.store(INIT_TIMECOST_US, Ordering::Release);
    }

    /// Records one request's latency (client-go `recordSlowScoreStat`; see
    /// `StoreHealth::client_score` for why only tests do).
    #[cfg(test)]
    pub(crate) fn record(&self, took: Duration) {
        self.interval_count.fetch_add(1, Ordering::AcqRel);
        let took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if self.avg_timecost.load(Ordering::Acquire) == 0 {
            self.init();
            self.interval_timecost.store(took_us, Ordering::Release);
            return;
        }
        if took_us >= MAX_TIMECOST_US {
            self.avg_score.store(SLOW_SCORE_MAX, Ordering::Release);
            return;
        }
        self.interval_timecost.fetch_add(took_us, Ordering::AcqRel);
    }

    /// Marks the store slow at once (a failure that points at the store itself).
    pub(crate) fn mark_already_slow(&self) {
        self.avg_score.store(SLOW_SCORE_MAX, Ordering::Release);
    }

    /// Folds the current tick's numbers into the score (client-go `updateSlowScore`). A store
    /// whose latency rises while its request count falls gets a higher score, in proportion
    /// to the two trends; otherwise the score falls by 1 to 3 towards 1.
    pub(crate) fn update(&self) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let (timecosts, counts) = &mut *windows;
        let avg_timecost = self.avg_timecost.load(Ordering::Acquire);
        if avg_timecost == 0 {
            self.init();
            return;
        }
        let count = self.interval_count.load(Ordering::Acquire);
        let total = self.interval_timecost.load(Ordering::Acquire);
        let (mut count_gradient, mut timecost_gradient) = (1.0_f64, 1.0_f64);
        if count > 0 {
            count_gradient = counts.append(count);
            timecost_gradient = timecosts.append(total / count);
        }
        let score = self.avg_score.load(Ordering::Acquire);
        let next = if count_gradient + 0.1 <= 1e-9 && timecost_gradient - 0.1 >= 1e-9 {
            let risen = (timecost_gradient / count_gradient).abs().min(5.43);
            (score as f64 * risen + 1.0)
                .min(SLOW_SCORE_MAX as f64)
                .ceil() as u64
        } else {
            let cost = (1.0 + count_gradient.abs())
                .min(2.71)
                .max(SLOW_SCORE_INIT as f64)
                .ceil() as u64;
            if score <= SLOW_SCORE_INIT + cost {
                SLOW_SCORE_INIT
            } else {
                score - cost
            }
        };
        // A mark from a request path since the load wins over this tick's result.
        let _ = self
            .avg_score
            .compare_exchange(score, next, Ordering::AcqRel, Ordering::Acquire);
        let _ = self.avg_timecost.compare_exchange(
            avg_timecost,
            timecosts.avg,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.interval_timecost.store(0, Ordering::Release);
        self.interval_count.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started() -> SlowScoreStat {
        let stat = SlowScoreStat::default();
        stat.avg_score.store(1, Ordering::Release);
        stat
    }

    /// client-go `TestSlowScoreStat`: a steady ramp of latencies up and down never makes the
    /// store slow; a mark does.
    #[test]
    fn a_latency_ramp_is_not_slow_but_a_mark_is() {
        let stat = started();
        assert!(!stat.is_slow());
        stat.record(Duration::from_millis(1));
        stat.update();
        assert!(!stat.is_slow());
        for i in 2..=100u64 {
            stat.record(Duration::from_millis(i));
            if i % 5 == 0 {
                stat.update();
                assert!(!stat.is_slow(), "rising, at {i} ms");
            }
        }
        for i in (2..=100u64).rev() {
            stat.record(Duration::from_millis(i));
            if i % 5 == 0 {
                stat.update();
                assert!(!stat.is_slow(), "falling, at {i} ms");
            }
        }
        stat.mark_already_slow();
        assert!(stat.is_slow());
        assert_eq!(stat.score(), SLOW_SCORE_MAX);
    }

    /// Without traffic the average latency empties on the first tick and the next tick starts
    /// over from 1, so a mark lasts two ticks (as in client-go, where only PreferLeader reads
    /// record latencies).
    #[test]
    fn the_first_tick_initialises_and_idle_ticks_clear_a_mark() {
        let stat = SlowScoreStat::default();
        assert_eq!(stat.score(), 0);
        stat.update();
        assert_eq!(stat.score(), SLOW_SCORE_INIT);
        stat.mark_already_slow();
        stat.update();
        assert_eq!(stat.score(), SLOW_SCORE_MAX - 2);
        assert!(stat.is_slow());
        stat.update();
        assert_eq!(stat.score(), SLOW_SCORE_INIT);
    }

    /// With steady traffic the average latency stays, and a mark decays by 2 a tick.
    #[test]
    fn with_traffic_a_mark_decays_two_a_tick() {
        let stat = started();
        let tick = |stat: &SlowScoreStat| {
            for _ in 0..10 {
                stat.record(Duration::from_millis(2));
            }
            stat.update();
        };
        for _ in 0..3 {
            tick(&stat);
        }
        stat.mark_already_slow();
        let mut ticks = 0;
        while stat.is_slow() {
            tick(&stat);
            ticks += 1;
        }
        assert_eq!(ticks, 11, "100 -> 78 in steps of 2");
    }

    #[test]
    fn rising_latency_with_falling_traffic_raises_the_score() {
        let stat = SlowScoreStat::default();
        stat.update();
        // A steady baseline: 100 requests of 1 ms per tick.
        for _ in 0..SLIDING_WINDOW_SIZE {
            for _ in 0..100 {
                stat.record(Duration::from_millis(1));
            }
            stat.update();
        }
        assert_eq!(stat.score(), SLOW_SCORE_INIT);
        // Then fewer and slower requests each tick: the store is getting stuck.
        let mut count = 100;
        let mut took = 1;
        let mut ticks = 0;
        while !stat.is_slow() && ticks < 20 {
            count /= 2;
            took *= 4;
            for _ in 0..count.max(1) {
                stat.record(Duration::from_millis(took));
            }
            stat.update();
            ticks += 1;
        }
        assert!(stat.is_slow(), "score {} after {ticks} ticks", stat.score());
    }

    #[test]
    fn one_request_at_the_longest_timeout_is_slow_at_once() {
        let stat = started();
        stat.record(Duration::from_millis(1));
        stat.record(Duration::from_secs(30));
        assert!(stat.is_slow());
    }

    #[test]
    fn the_sliding_window_keeps_the_last_ten() {
        let mut w = CountSlidingWindow::default();
        assert!(
            (w.append(10) - 1e-6).abs() < 1e-12,
            "nothing to compare with"
        );
        assert!(
            (w.append(20) - 1.0).abs() < 1e-9,
            "20 is double the average 10"
        );
        for _ in 0..SLIDING_WINDOW_SIZE {
            w.append(5);
        }
        assert_eq!(w.avg, 5);
        assert_eq!(w.history.len(), SLIDING_WINDOW_SIZE);
    }
}
