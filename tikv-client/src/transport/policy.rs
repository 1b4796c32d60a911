//! When the BatchCommands sender should hold a batch back to let more requests join it.
//!
//! Two reasons to wait, in client-go's order (`batchSendLoop` in `internal/client/conn_batch.go`):
//!
//! 1. The store reports a transport-layer load above `overload-threshold` and
//!    `max-batch-wait-time` is set: wait up to that long for `batch-wait-size` requests.
//! 2. Otherwise the configured [`BatchPolicy`](crate::config::BatchPolicy) decides from recent
//!    arrival intervals whether more requests are likely to come within its short wait
//!    ([`Trigger`], client-go `turboBatchTrigger` in `internal/client/client_batch.go`).
//!
//! The request stream of `batch.rs` owns one [`Trigger`] and one [`WaitSizer`] per stream and
//! asks [`decide`] after it has drained whatever was queued.

use std::time::Duration;

use crate::config::{BatchTrigger, BatchTriggerOptions};

/// The adaptive part of a batch policy: tracks how densely requests arrive and says whether a
/// short wait is likely to gather more of them.
#[derive(Debug, Clone)]
pub(crate) struct Trigger {
    opts: BatchTriggerOptions,
    /// Moving average of the chance that the next head request arrives within the wait.
    est_fetch_more_prob: f64,
    /// Moving average of head arrival intervals, in seconds.
    est_arrival_interval: f64,
    /// Cap applied to one interval before it is averaged, in seconds (`n × t`).
    max_arrival_interval: f64,
}

impl Trigger {
    pub(crate) fn new(opts: BatchTriggerOptions) -> Self {
        Trigger {
            opts,
            est_fetch_more_prob: 0.0,
            est_arrival_interval: 0.0,
            max_arrival_interval: opts.max_wait.as_secs_f64() * f64::from(opts.interval_cap_factor),
        }
    }

    /// The longest extra wait this policy allows; zero turns the policy's waiting off.
    pub(crate) fn wait_time(&self) -> Duration {
        self.opts.max_wait
    }

    /// Feeds the interval between the previous batch's last request and this batch's first one,
    /// and says whether to wait for more.
    pub(crate) fn need_fetch_more(&mut self, arrival_interval: Duration) -> bool {
        let wait = self.opts.max_wait.as_secs_f64();
        match self.opts.trigger {
            BatchTrigger::TimeBased => {
                // Capping keeps one long idle gap from suppressing waits for a long time.
                let this = arrival_interval
                    .as_secs_f64()
                    .min(self.max_arrival_interval);
                self.est_arrival_interval = if self.est_arrival_interval == 0.0 {
                    this
                } else {
                    self.opts.smoothing * this
                        + (1.0 - self.opts.smoothing) * self.est_arrival_interval
                };
                self.est_arrival_interval < wait * self.opts.threshold
            }
            BatchTrigger::ProbabilityBased => {
                let this = if arrival_interval.as_secs_f64() < wait {
                    1.0
                } else {
                    0.0
                };
                self.est_fetch_more_prob = self.opts.smoothing * this
                    + (1.0 - self.opts.smoothing) * self.est_fetch_more_prob;
                self.est_fetch_more_prob > self.opts.threshold
            }
            // `Always`, and any trigger a newer config knows but this code does not.
            _ => true,
        }
    }

    /// How many requests to wait for, given the running average of recent batch sizes: the
    /// average rounded down, or up when its fraction reaches the policy's `q`. The `Always`
    /// trigger keeps the configured `batch-wait-size`.
    pub(crate) fn preferred_wait_size(&self, avg_batch_size: f64, configured: usize) -> usize {
        if self.opts.trigger == BatchTrigger::Always {
            return configured;
        }
        let whole = avg_batch_size.trunc();
        let mut size = whole as usize;
        if avg_batch_size - whole >= self.opts.size_round_up {
            size += 1;
        }
        size
    }

    #[cfg(test)]
    fn est_arrival_interval(&self) -> f64 {
        self.est_arrival_interval
    }
}

/// The settings of the overload wait (client-go `MaxBatchWaitTime`, `BatchWaitSize`,
/// `OverloadThreshold`) and the batch size cap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitLimits {
    pub(crate) max_batch_size: usize,
    pub(crate) max_batch_wait_time: Duration,
    pub(crate) batch_wait_size: usize,
    pub(crate) overload_threshold: u64,
}

/// A decision to hold the batch back: until it has `size` requests or `for_at_most` passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    pub(crate) size: usize,
    pub(crate) for_at_most: Duration,
}

/// Decides whether a freshly drained batch of `len` requests should wait for more.
///
/// `head_interval` is the time between the previous batch's last arrival and this batch's first
/// (`None` for the first batch or when arrivals are out of order); `load` is the store's last
/// reported transport-layer load; `avg_batch_size` the running average of batch sizes.
pub(crate) fn decide(
    limits: &WaitLimits,
    trigger: &mut Trigger,
    len: usize,
    head_interval: Option<Duration>,
    load: u64,
    avg_batch_size: f64,
) -> Option<Wait> {
    if len >= limits.max_batch_size {
        return None;
    }
    let wait = if !limits.max_batch_wait_time.is_zero() && load > limits.overload_threshold {
        Wait {
            size: limits.batch_wait_size,
            for_at_most: limits.max_batch_wait_time,
        }
    } else {
        let interval = head_interval.filter(|i| !i.is_zero())?;
        if trigger.wait_time().is_zero() || !trigger.need_fetch_more(interval) {
            return None;
        }
        Wait {
            size: trigger.preferred_wait_size(avg_batch_size, limits.batch_wait_size),
            for_at_most: trigger.wait_time(),
        }
    };
    (wait.size > len).then_some(wait)
}

/// Running average of batch sizes (client-go `avgBatchWaitSize`), seeded with the configured
/// `batch-wait-size`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WaitSizer {
    avg: f64,
}

impl WaitSizer {
    pub(crate) fn new(batch_wait_size: usize) -> Self {
        WaitSizer {
            avg: batch_wait_size as f64,
        }
    }

    pub(crate) fn avg(&self) -> f64 {
        self.avg
    }

    pub(crate) fn observe(&mut self, batch_len: usize) {
        self.avg = 0.2 * batch_len as f64 + 0.8 * self.avg;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BatchPolicy;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    // Ported from client-go internal/client/client_test.go TestBatchPolicy (the trigger
    // behaviour; the parsing cases live in config/batch_policy.rs).
    #[test]
    fn basic_policy_never_waits() {
        let trigger = Trigger::new(BatchPolicy::Basic.options());
        assert!(trigger.wait_time().is_zero());
    }

    #[test]
    fn positive_policy_always_waits() {
        let mut trigger = Trigger::new(BatchPolicy::Positive.options());
        assert_eq!(trigger.wait_time(), us(100));
        assert!(trigger.need_fetch_more(Duration::from_secs(3600)));
        assert!(trigger.need_fetch_more(Duration::from_millis(1)));
        for avg in [1.0, 1.2, 1.8] {
            assert_eq!(trigger.preferred_wait_size(avg, 8), 8);
        }
    }

    #[test]
    fn standard_policy_follows_arrival_intervals() {
        let mut trigger = Trigger::new(BatchPolicy::Standard.options());
        assert_eq!(trigger.preferred_wait_size(1.0, 8), 1);
        assert_eq!(trigger.preferred_wait_size(1.2, 8), 1);
        assert_eq!(trigger.preferred_wait_size(1.8, 8), 2);
        assert_eq!(trigger.wait_time(), us(100));
        assert!(!trigger.need_fetch_more(us(100)));
        assert!(!trigger.need_fetch_more(us(80)));
        assert!(trigger.need_fetch_more(us(10)));
        assert!(trigger.need_fetch_more(us(80)));
        assert!(!trigger.need_fetch_more(us(90)));

        for _ in 0..50 {
            trigger.need_fetch_more(Duration::from_secs(3600));
        }
        // One-hour gaps are capped at n × t (500µs), so a few dense arrivals bring the average
        // back under the threshold.
        assert!(trigger.est_arrival_interval() < 500e-6);
        for _ in 0..8 {
            assert!(!trigger.need_fetch_more(us(10)));
        }
        assert!(trigger.need_fetch_more(us(10)));
    }

    #[test]
    fn probability_policy_waits_once_dense_arrivals_dominate() {
        let policy: BatchPolicy = r#"custom {"v":2,"t":0.001,"w":0.5,"p":0.6}"#.parse().unwrap();
        let mut trigger = Trigger::new(policy.options());
        // 0.5, then 0.75: above p only from the second dense arrival on.
        assert!(!trigger.need_fetch_more(us(10)));
        assert!(trigger.need_fetch_more(us(10)));
        // A sparse arrival halves the estimate.
        assert!(!trigger.need_fetch_more(Duration::from_millis(5)));
    }

    fn limits() -> WaitLimits {
        WaitLimits {
            max_batch_size: 128,
            max_batch_wait_time: Duration::from_millis(2),
            batch_wait_size: 8,
            overload_threshold: 200,
        }
    }

    #[test]
    fn overload_wait_comes_first_and_needs_a_wait_time() {
        let mut trigger = Trigger::new(BatchPolicy::Basic.options());
        let wait = decide(&limits(), &mut trigger, 1, None, 201, 8.0);
        assert_eq!(
            wait,
            Some(Wait {
                size: 8,
                for_at_most: Duration::from_millis(2)
            })
        );
        // At or below the threshold, or with no wait time configured, the basic policy sends.
        assert_eq!(decide(&limits(), &mut trigger, 1, None, 200, 8.0), None);
        let no_wait = WaitLimits {
            max_batch_wait_time: Duration::ZERO,
            ..limits()
        };
        assert_eq!(decide(&no_wait, &mut trigger, 1, None, 1000, 8.0), None);
        // A batch that already has the wait size, or is full, goes at once.
        assert_eq!(decide(&limits(), &mut trigger, 8, None, 201, 8.0), None);
        assert_eq!(decide(&limits(), &mut trigger, 128, None, 201, 8.0), None);
    }

    #[test]
    fn policy_wait_needs_a_known_arrival_interval() {
        let mut trigger = Trigger::new(BatchPolicy::Positive.options());
        assert_eq!(decide(&limits(), &mut trigger, 1, None, 0, 8.0), None);
        assert_eq!(
            decide(&limits(), &mut trigger, 1, Some(us(5)), 0, 8.0),
            Some(Wait {
                size: 8,
                for_at_most: us(100)
            })
        );
        let mut standard = Trigger::new(BatchPolicy::Standard.options());
        // Standard waits for about the recent average batch size.
        assert_eq!(
            decide(&limits(), &mut standard, 1, Some(us(5)), 0, 3.9),
            Some(Wait {
                size: 4,
                for_at_most: us(100)
            })
        );
    }

    #[test]
    fn wait_sizer_is_a_moving_average() {
        let mut sizer = WaitSizer::new(8);
        sizer.observe(18);
        assert!((sizer.avg() - 10.0).abs() < 1e-9);
    }
}
