//! What the client has learned about a store's health from using it: whether it answers at all
//! (liveness), whether it is slow (the client's own mark and TiKV's reported slow score), how
//! long TiKV says requests queue there, and how many requests this client has in flight to it
//! under the store limit.
//!
//! Every field is an atomic: the request sender reads them on each attempt and updates them from
//! any task without a lock. The cache only holds the state; probing (gRPC health checks) and the
//! background loop that watches an unreachable store belong to the sender (`request/`), which
//! owns the transport.
//!
//! Ports the state parts of client-go `internal/locate/store_cache.go` (`livenessState`,
//! `loadStats`/`EstimatedWaitTime`, `tokenCount`, `StoreHealthStatus`) and the TiKV-side slow
//! score of `StoreHealthStatus.updateTiKVServerSideSlowScore`.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A TiKV-reported slow score at or above this makes the store slow (client-go
/// `tikvSlowScoreSlowThreshold`).
pub(crate) const TIKV_SLOW_SCORE_THRESHOLD: i64 = 80;

/// How often a TiKV-side slow score may change (client-go `tikvSlowScoreUpdateInterval`).
const TIKV_SLOW_SCORE_UPDATE_INTERVAL: Duration = Duration::from_millis(100);

/// Whether a store answers (client-go `livenessState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum LivenessState {
    /// The store answered its last probe, or was never found unreachable.
    Reachable = 0,
    /// The last probe found no answer; a background loop probes it until it answers.
    Unreachable = 1,
    /// The last probe could not tell (the store's address is unknown, or the probe was cut
    /// short).
    Unknown = 2,
}

impl LivenessState {
    fn from_u8(v: u8) -> LivenessState {
        match v {
            0 => LivenessState::Reachable,
            1 => LivenessState::Unreachable,
            _ => LivenessState::Unknown,
        }
    }
}

/// One store's health, shared by every region on it.
pub(crate) struct StoreHealth {
    liveness: AtomicU8,
    /// Requests in flight under `store_limit` (client-go `tokenCount`).
    tokens: AtomicU64,
    /// TiKV's estimate of the queueing delay, in ms, and when it was received (ms since
    /// `origin`): the estimate shrinks as time passes (client-go `EstimatedWaitTime`).
    estimated_wait_ms: AtomicU64,
    estimated_wait_at_ms: AtomicU64,
    /// Set when a request to the store failed in a way that says it is in trouble (client-go
    /// `markAlreadySlow`); cleared when the store is found reachable again.
    marked_slow: AtomicBool,
    /// TiKV's own slow score from health feedback (1 healthy .. 100), and when it was taken.
    tikv_slow_score: AtomicI64,
    tikv_score_at_ms: AtomicU64,
    origin: Instant,
    /// The last liveness probe and when it finished; held while a probe runs, so concurrent
    /// callers wait for one probe instead of each sending their own.
    probe: tokio::sync::Mutex<Option<(Instant, LivenessState)>>,
}

impl fmt::Debug for StoreHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreHealth")
            .field("liveness", &self.liveness())
            .field("tokens", &self.tokens())
            .field("slow", &self.is_slow())
            .finish_non_exhaustive()
    }
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            liveness: AtomicU8::new(LivenessState::Reachable as u8),
            tokens: AtomicU64::new(0),
            estimated_wait_ms: AtomicU64::new(0),
            estimated_wait_at_ms: AtomicU64::new(0),
            marked_slow: AtomicBool::new(false),
            tikv_slow_score: AtomicI64::new(0),
            tikv_score_at_ms: AtomicU64::new(u64::MAX),
            origin: Instant::now(),
            probe: tokio::sync::Mutex::new(None),
        }
    }
}

impl StoreHealth {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The liveness last recorded.
    pub(crate) fn liveness(&self) -> LivenessState {
        LivenessState::from_u8(self.liveness.load(Ordering::Acquire))
    }

    /// Records a probe's result unconditionally (the health loop's write).
    pub(crate) fn set_liveness(&self, state: LivenessState) {
        self.liveness.store(state as u8, Ordering::Release);
        if state == LivenessState::Reachable {
            self.marked_slow.store(false, Ordering::Release);
        }
    }

    /// Moves a reachable store to `state`; true for the one caller that made the move, which
    /// then starts the health loop (client-go's CAS from `reachable`).
    pub(crate) fn leave_reachable(&self, state: LivenessState) -> bool {
        self.liveness
            .compare_exchange(
                LivenessState::Reachable as u8,
                state as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// The single-flight slot of liveness probes.
    pub(crate) fn probe_slot(&self) -> &tokio::sync::Mutex<Option<(Instant, LivenessState)>> {
        &self.probe
    }

    /// Requests in flight under the store limit.
    pub(crate) fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Acquire)
    }

    /// Takes a token if fewer than `limit` are out. Like client-go, the check and the increment
    /// are separate steps: under a race the limit can be passed by a few, which the limit (a
    /// guard against piling onto one store, not an exact quota) tolerates.
    pub(crate) fn try_acquire_token(&self, limit: u64) -> bool {
        if self.tokens.load(Ordering::Acquire) < limit {
            self.tokens.fetch_add(1, Ordering::AcqRel);
            true
        } else {
            false
        }
    }

    /// Returns a token taken by [`StoreHealth::try_acquire_token`].
    pub(crate) fn release_token(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Records TiKV's estimate of how long requests queue on the store (from `ServerIsBusy`).
    pub(crate) fn update_estimated_wait(&self, wait_ms: u32) {
        self.estimated_wait_at_ms
            .store(self.now_ms(), Ordering::Release);
        self.estimated_wait_ms
            .store(u64::from(wait_ms), Ordering::Release);
    }

    /// The estimated queueing delay now: the last estimate minus the time since it came.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn estimated_wait(&self) -> Duration {
        let wait = self.estimated_wait_ms.load(Ordering::Acquire);
        if wait == 0 {
            return Duration::ZERO;
        }
        let since = self
            .now_ms()
            .saturating_sub(self.estimated_wait_at_ms.load(Ordering::Acquire));
        Duration::from_millis(wait.saturating_sub(since))
    }

    /// Marks the store slow after a failure that points at the store itself.
    pub(crate) fn mark_slow(&self) {
        self.marked_slow.store(true, Ordering::Release);
    }

    /// Records TiKV's slow score from health feedback (called with every answer). Changes are
    /// taken at most every 100 ms, as client-go does, so that a burst of answers cannot make
    /// the score flap; an unchanged healthy score writes nothing, so the common case touches
    /// no shared cache line.
    pub(crate) fn update_tikv_slow_score(&self, score: i64) {
        let last = self.tikv_slow_score.load(Ordering::Acquire);
        if last == score && score <= 1 {
            return;
        }
        let now = self.now_ms();
        let last_at = self.tikv_score_at_ms.load(Ordering::Acquire);
        if last == score {
            self.tikv_score_at_ms.store(now, Ordering::Release);
            return;
        }
        let interval = TIKV_SLOW_SCORE_UPDATE_INTERVAL.as_millis() as u64;
        if last_at != u64::MAX && now.saturating_sub(last_at) < interval {
            return;
        }
        if self
            .tikv_score_at_ms
            .compare_exchange(last_at, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.tikv_slow_score.store(score, Ordering::Release);
        }
    }

    /// TiKV's last reported slow score (0 before any feedback).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn tikv_slow_score(&self) -> i64 {
        self.tikv_slow_score.load(Ordering::Acquire)
    }

    /// Whether the store should be avoided when another replica will do (client-go
    /// `StoreHealthStatus.IsSlow`).
    pub(crate) fn is_slow(&self) -> bool {
        self.marked_slow.load(Ordering::Acquire)
            || self.tikv_slow_score.load(Ordering::Acquire) >= TIKV_SLOW_SCORE_THRESHOLD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_leaves_reachable_once() {
        let h = StoreHealth::default();
        assert_eq!(h.liveness(), LivenessState::Reachable);
        assert!(h.leave_reachable(LivenessState::Unreachable));
        // A second caller finds it already moved and must not start another loop.
        assert!(!h.leave_reachable(LivenessState::Unknown));
        assert_eq!(h.liveness(), LivenessState::Unreachable);
        h.mark_slow();
        h.set_liveness(LivenessState::Reachable);
        assert!(
            !h.is_slow(),
            "reachable again clears the client's slow mark"
        );
    }

    #[test]
    fn tokens_respect_the_limit_and_never_underflow() {
        let h = StoreHealth::default();
        assert!(h.try_acquire_token(2));
        assert!(h.try_acquire_token(2));
        assert!(!h.try_acquire_token(2));
        h.release_token();
        h.release_token();
        h.release_token();
        assert_eq!(h.tokens(), 0);
    }

    #[test]
    fn estimated_wait_shrinks_from_the_reported_value() {
        let h = StoreHealth::default();
        assert_eq!(h.estimated_wait(), Duration::ZERO);
        h.update_estimated_wait(60_000);
        let w = h.estimated_wait();
        assert!(w <= Duration::from_secs(60) && w > Duration::from_secs(59));
    }

    #[test]
    fn tikv_slow_score_makes_the_store_slow() {
        let h = StoreHealth::default();
        h.update_tikv_slow_score(1);
        assert!(!h.is_slow());
        // Within 100 ms of the last change a new score is ignored.
        h.update_tikv_slow_score(100);
        assert_eq!(h.tikv_slow_score(), 1);
        let h2 = StoreHealth::default();
        h2.update_tikv_slow_score(90);
        assert!(h2.is_slow());
    }
}
