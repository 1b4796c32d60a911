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
//! Slowness has two sources, either of which makes the store slow at 80: the client's own score
//! ([`SlowScoreStat`]: latency trends, and a mark after a failure that points at the store) and
//! the slow score TiKV reports in its health feedback. The health tick (`request::sender`, every
//! quarter of `stores-refresh-interval`) decays both: the client score by its own rule, TiKV's
//! linearly (20 points a minute) once it has not been refreshed for 15 s, after asking the store
//! for fresh feedback.
//!
//! Ports the state parts of client-go `internal/locate/store_cache.go` (`livenessState`,
//! `loadStats`/`EstimatedWaitTime`, `tokenCount`, `StoreHealthStatus` with `tick`,
//! `updateTiKVServerSideSlowScore`, `updateTiKVServerSideSlowScoreOnTick`,
//! `GetHealthStatusDetail`).

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::slow_score::{SLOW_SCORE_THRESHOLD, SlowScoreStat};

/// A TiKV-reported slow score at or above this makes the store slow (client-go
/// `tikvSlowScoreSlowThreshold`).
pub(crate) const TIKV_SLOW_SCORE_THRESHOLD: i64 = 80;

/// How often a TiKV-side slow score may change (client-go `tikvSlowScoreUpdateInterval`).
const TIKV_SLOW_SCORE_UPDATE_INTERVAL: Duration = Duration::from_millis(100);

/// A TiKV-side score not refreshed for this long is asked for again, then decayed (client-go
/// `tikvSlowScoreActiveUpdateInterval`).
pub(crate) const TIKV_SLOW_SCORE_ACTIVE_UPDATE_INTERVAL: Duration = Duration::from_secs(15);

/// How fast a stale TiKV-side score decays, in points per second (client-go
/// `tikvSlowScoreDecayRate`).
const TIKV_SLOW_SCORE_DECAY_PER_SEC: f64 = 20.0 / 60.0;

/// Where a store's millisecond clock starts: an hour, so that times can be moved back in
/// tests without reaching zero.
const CLOCK_OFFSET_MS: u64 = 3_600_000;

/// A store's slow scores as the client sees them (client-go `HealthStatusDetail`), from
/// [`Cluster::store_health`](crate::Cluster::store_health).
///
/// ```no_run
/// # fn f(cluster: &tikv_client::Cluster) {
/// for store in cluster.stores() {
///     if let Some(health) = cluster.store_health(store.id) {
///         println!(
///             "store {}: client score {}, TiKV score {}",
///             store.id, health.client_side_slow_score, health.tikv_side_slow_score
///         );
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub struct StoreHealthDetail {
    /// The client's own score, 1 (healthy) to 100; 0 before the first health tick.
    pub client_side_slow_score: i64,
    /// The score TiKV last reported, 1 (healthy) to 100; 0 before any feedback.
    pub tikv_side_slow_score: i64,
}

impl StoreHealthDetail {
    /// Whether either score makes the store slow (80 or more).
    ///
    /// ```
    /// use tikv_client::StoreHealthDetail;
    ///
    /// let mut health = StoreHealthDetail::default();
    /// assert!(!health.is_slow());
    /// health.tikv_side_slow_score = 90;
    /// assert!(health.is_slow());
    /// ```
    pub fn is_slow(&self) -> bool {
        self.client_side_slow_score >= SLOW_SCORE_THRESHOLD as i64
            || self.tikv_side_slow_score >= TIKV_SLOW_SCORE_THRESHOLD
    }
}

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
    /// The client's own slow score (latency trends, and marks after failures).
    client_score: SlowScoreStat,
    /// TiKV's own slow score from health feedback (1 healthy .. 100), and when it was taken
    /// (`u64::MAX`: never, so no feedback came yet).
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
            client_score: SlowScoreStat::default(),
            tikv_slow_score: AtomicI64::new(0),
            tikv_score_at_ms: AtomicU64::new(u64::MAX),
            origin: Instant::now(),
            probe: tokio::sync::Mutex::new(None),
        }
    }
}

impl StoreHealth {
    fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// `at` in ms on this store's clock: [`CLOCK_OFFSET_MS`] plus the time since `origin`
    /// (the offset for anything earlier).
    fn ms_at(&self, at: Instant) -> u64 {
        let ms = at.saturating_duration_since(self.origin).as_millis();
        u64::try_from(ms)
            .unwrap_or(u64::MAX)
            .saturating_add(CLOCK_OFFSET_MS)
            .min(u64::MAX - 1)
    }

    /// Makes TiKV's score look `by` older than it is (health-tick tests).
    #[cfg(test)]
    pub(crate) fn backdate_tikv_score(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .tikv_score_at_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |at| {
                (at != u64::MAX).then(|| at.saturating_sub(by))
            });
    }

    /// The liveness last recorded.
    pub(crate) fn liveness(&self) -> LivenessState {
        LivenessState::from_u8(self.liveness.load(Ordering::Acquire))
    }

    /// Records a probe's result unconditionally (the health loop's write).
    pub(crate) fn set_liveness(&self, state: LivenessState) {
        self.liveness.store(state as u8, Ordering::Release);
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

    /// Marks the store slow after a failure that points at the store itself (client-go
    /// `markAlreadySlow`); health ticks bring the score down again.
    pub(crate) fn mark_slow(&self) {
        self.client_score.mark_already_slow();
    }

    /// The client's slow-score statistics. (client-go records latencies into them only for
    /// prefer-leader reads, not ported yet: tests drive them.)
    #[cfg(test)]
    pub(crate) fn client_score(&self) -> &SlowScoreStat {
        &self.client_score
    }

    /// Records TiKV's slow score from health feedback (called with every answer). Changes are
    /// taken at most every 100 ms, as client-go does, so that a burst of answers cannot make
    /// the score flap; an unchanged healthy score writes nothing, so the common case touches
    /// no shared cache line.
    pub(crate) fn update_tikv_slow_score(&self, score: i64) {
        self.update_tikv_slow_score_at(score, Instant::now());
    }

    /// [`update_tikv_slow_score`](Self::update_tikv_slow_score) as of `at`.
    pub(crate) fn update_tikv_slow_score_at(&self, score: i64, at: Instant) {
        let last = self.tikv_slow_score.load(Ordering::Acquire);
        if last == score && score <= 1 {
            return;
        }
        let now = self.ms_at(at);
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
    #[cfg(test)]
    pub(crate) fn tikv_slow_score(&self) -> i64 {
        self.tikv_slow_score.load(Ordering::Acquire)
    }

    /// Whether the store should be avoided when another replica will do (client-go
    /// `StoreHealthStatus.IsSlow`).
    pub(crate) fn is_slow(&self) -> bool {
        self.detail().is_slow()
    }

    /// Both scores (client-go `GetHealthStatusDetail`).
    pub(crate) fn detail(&self) -> StoreHealthDetail {
        StoreHealthDetail {
            client_side_slow_score: i64::try_from(self.client_score.score()).unwrap_or(i64::MAX),
            tikv_side_slow_score: self.tikv_slow_score.load(Ordering::Acquire),
        }
    }

    /// The health tick's first step (client-go `tick`, before the TiKV side): folds the
    /// interval's latencies into the client score.
    pub(crate) fn tick_client_score(&self) {
        self.client_score.update();
    }

    /// Whether TiKV's score is stale as of `now` and should be asked of the store again: there
    /// was feedback, it says the store is not healthy (a healthy store that is not being used
    /// is the common case and needs nothing), and it has not changed or been confirmed for
    /// [`TIKV_SLOW_SCORE_ACTIVE_UPDATE_INTERVAL`].
    pub(crate) fn tikv_score_needs_refresh(&self, now: Instant) -> bool {
        let at = self.tikv_score_at_ms.load(Ordering::Acquire);
        if at == u64::MAX || self.tikv_slow_score.load(Ordering::Acquire) <= 1 {
            return false;
        }
        let interval = TIKV_SLOW_SCORE_ACTIVE_UPDATE_INTERVAL.as_millis() as u64;
        self.ms_at(now).saturating_sub(at) >= interval
    }

    /// The health tick's last step (client-go `updateTiKVServerSideSlowScoreOnTick`): a TiKV
    /// score still stale as of `now` (the store could not be asked, or did not answer) decays
    /// linearly with the time since it was taken, to no less than 1.
    pub(crate) fn decay_tikv_score(&self, now: Instant) {
        if !self.tikv_score_needs_refresh(now) {
            return;
        }
        let at = self.tikv_score_at_ms.load(Ordering::Acquire);
        let now_ms = self.ms_at(now);
        let score = self.tikv_slow_score.load(Ordering::Acquire);
        let elapsed_s = now_ms.saturating_sub(at) as f64 / 1000.0;
        let decayed =
            ((score as f64 - TIKV_SLOW_SCORE_DECAY_PER_SEC * elapsed_s).round() as i64).max(1);
        // Feedback that arrived meanwhile moved the time: it wins.
        if self
            .tikv_score_at_ms
            .compare_exchange(at, now_ms, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.tikv_slow_score.store(decayed, Ordering::Release);
        }
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
        assert!(h.is_slow(), "only health ticks bring a slow mark down");
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

    /// client-go `TestTiKVSideSlowScore`.
    #[test]
    fn the_tikv_score_is_taken_then_decays_when_stale() {
        let h = StoreHealth::default();
        let mut now = Instant::now();
        assert!(h.detail().tikv_side_slow_score <= 1);
        h.tick_client_score();
        h.decay_tikv_score(now);
        assert!(h.detail().tikv_side_slow_score <= 1);
        assert!(!h.tikv_score_needs_refresh(now), "no feedback yet");
        assert!(!h.is_slow());

        now += TIKV_SLOW_SCORE_UPDATE_INTERVAL * 2;
        h.update_tikv_slow_score_at(50, now);
        assert_eq!(h.detail().tikv_side_slow_score, 50);
        assert!(!h.is_slow());
        now += TIKV_SLOW_SCORE_UPDATE_INTERVAL * 2;
        h.update_tikv_slow_score_at(100, now);
        assert_eq!(h.detail().tikv_side_slow_score, 100);
        assert!(h.is_slow());

        // Two minutes without news: 40 points off.
        now += Duration::from_secs(120);
        assert!(h.tikv_score_needs_refresh(now));
        h.decay_tikv_score(now);
        assert_eq!(h.detail().tikv_side_slow_score, 60);
        assert!(!h.is_slow());
        now += Duration::from_secs(180);
        h.decay_tikv_score(now);
        assert_eq!(h.detail().tikv_side_slow_score, 1);
        now += Duration::from_secs(60);
        h.decay_tikv_score(now);
        assert_eq!(h.detail().tikv_side_slow_score, 1);
        assert!(
            !h.tikv_score_needs_refresh(now),
            "a healthy score needs no refresh"
        );
    }

    /// client-go `TestStoreHealthStatus`: either score makes the store slow; it is healthy
    /// again only when both are low.
    #[test]
    fn either_score_makes_the_store_slow() {
        let h = StoreHealth::default();
        let mut now = Instant::now();
        assert!(!h.is_slow());
        while !h.client_score().is_slow() {
            h.client_score().record(Duration::from_secs(60));
        }
        h.tick_client_score();
        assert!(h.is_slow());
        assert_eq!(
            h.detail().client_side_slow_score,
            h.client_score().score() as i64
        );

        now += Duration::from_secs(1);
        h.update_tikv_slow_score_at(100, now);
        assert!(h.is_slow());
        assert_eq!(h.detail().tikv_side_slow_score, 100);
        while h.client_score().is_slow() {
            h.client_score().record(Duration::from_millis(1));
            h.tick_client_score();
        }
        assert!(h.is_slow(), "TiKV still says slow");
        assert_eq!(
            h.detail().client_side_slow_score,
            h.client_score().score() as i64
        );
        now += Duration::from_secs(1);
        h.update_tikv_slow_score_at(1, now);
        assert!(!h.is_slow());
        assert!(!h.detail().is_slow());
    }

    /// Fresh feedback between the staleness check and the decay wins over the decay.
    #[test]
    fn feedback_confirmed_in_time_is_not_decayed() {
        let h = StoreHealth::default();
        let start = Instant::now();
        h.update_tikv_slow_score_at(90, start);
        let later = start + Duration::from_secs(20);
        assert!(h.tikv_score_needs_refresh(later));
        // The store answered the active request with the same score: the time moves on.
        h.update_tikv_slow_score_at(90, later);
        h.decay_tikv_score(later);
        assert_eq!(h.detail().tikv_side_slow_score, 90);
    }
}
