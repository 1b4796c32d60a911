//! The Backoffer: how long to sleep before retrying, per kind of failure, within one budget.
//!
//! Every retry loop of the client (the region request sender, lock resolution, PD calls made by
//! the transaction layer) owns one [`Backoffer`]. Each failure is reported with its
//! [`BackoffKind`]; the kind picks an exponential schedule (base, cap, jitter) whose attempt
//! counter is kept per kind, so a burst of `regionMiss` retries does not lengthen the next
//! `tikvRPC` sleep. All sleeps draw from one budget (`max_sleep`, scaled by the weight as
//! client-go does); when the budget is spent the next report fails with
//! [`Error::BackoffExhausted`], naming the kind that slept longest, which is the best hint of
//! what went wrong. `tikvServerBusy` sleeps are kept out of the shared budget (TiKV told us how
//! long to wait) but have their own ten-minute ceiling.
//!
//! A deadline, when set, bounds everything: a sleep is cut short at the deadline and the
//! failure being retried is returned, so no loop outlives its caller's patience. Dropping the
//! future cancels a sleep, which is what client-go's context cancellation does.
//!
//! Ports client-go `config/retry/backoff.go` and `config/retry/config.go` (the `Bo*` presets,
//! jitter kinds, the excluded-sleep rule, `Clone`, `Fork`/`UpdateUsingForked`,
//! `MayBackoffForRegionError`) and the two knobs of `kv/variables.go` (backoff weight and the
//! lock-fast base). Per-kind state lives in a fixed array indexed by kind, so reporting a
//! failure allocates nothing.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::{Error, Result};

/// How a schedule spreads its sleeps (the AWS architecture blog's jitter variants, as client-go
/// implements them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum Jitter {
    /// Strict exponential: `min(cap, base * 2^attempt)`.
    None,
    /// Half the exponential value plus a uniform half: never very short.
    Equal,
}

/// The kinds of failure a [`Backoffer`] knows, each with client-go's schedule.
///
/// The name of each kind (see [`BackoffKind::name`]) is client-go's, so logs and metrics read the
/// same in both clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub(crate) enum BackoffKind {
    /// A TiKV RPC failed (connection, timeout): 100 ms .. 2 s, equal jitter.
    TikvRpc,
    /// A TiFlash RPC failed: 100 ms .. 2 s, equal jitter.
    TiflashRpc,
    /// Waiting for another transaction's lock: 100 ms .. 3 s, equal jitter.
    TxnLock,
    /// A PD RPC failed: 500 ms .. 3 s, equal jitter.
    PdRpc,
    /// The region moved or its leader is unknown: 2 ms .. 500 ms, no jitter.
    RegionMiss,
    /// The region is being scheduled (leader transfer, merge): 2 ms .. 500 ms, no jitter.
    RegionScheduling,
    /// TiKV reported ServerIsBusy: 2 s .. 10 s, equal jitter; outside the shared budget.
    TikvServerBusy,
    /// TiKV's disk is full: 500 ms .. 5 s, no jitter.
    TikvDiskFull,
    /// The region is being recovered (online unsafe recovery): 100 ms .. 10 s, equal jitter.
    RegionRecoveryInProgress,
    /// TiFlash reported ServerIsBusy: 2 s .. 10 s, equal jitter.
    TiflashServerBusy,
    /// A lock's transaction was not found yet: 2 ms .. 500 ms, no jitter.
    TxnNotFound,
    /// TiKV dropped a stale command: 2 ms .. 1 s, no jitter.
    StaleCommand,
    /// A new leader has not synced its max timestamp: 2 ms .. 500 ms, no jitter.
    MaxTsNotSynced,
    /// The commit timestamp lags: 2 ms .. 500 ms, no jitter.
    CommitTsLag,
    /// The region's peer is not initialized yet: 2 ms .. 1 s, no jitter.
    RegionNotInitialized,
    /// The peer is a witness: 1 s .. 10 s, equal jitter.
    IsWitness,
    /// A short lock wait: base from [`BackoffVars::lock_fast_base_ms`] (10 ms) .. 3 s, equal jitter.
    TxnLockFast,
}

impl BackoffKind {
    const COUNT: usize = 17;

    /// Every kind, in declaration order.
    pub(crate) const ALL: [BackoffKind; Self::COUNT] = [
        BackoffKind::TikvRpc,
        BackoffKind::TiflashRpc,
        BackoffKind::TxnLock,
        BackoffKind::PdRpc,
        BackoffKind::RegionMiss,
        BackoffKind::RegionScheduling,
        BackoffKind::TikvServerBusy,
        BackoffKind::TikvDiskFull,
        BackoffKind::RegionRecoveryInProgress,
        BackoffKind::TiflashServerBusy,
        BackoffKind::TxnNotFound,
        BackoffKind::StaleCommand,
        BackoffKind::MaxTsNotSynced,
        BackoffKind::CommitTsLag,
        BackoffKind::RegionNotInitialized,
        BackoffKind::IsWitness,
        BackoffKind::TxnLockFast,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// client-go's name of the kind (`tikvRPC`, `regionMiss`, ...).
    pub(crate) fn name(self) -> &'static str {
        self.schedule().name
    }

    /// The schedule of this kind.
    pub(crate) fn schedule(self) -> Schedule {
        use BackoffKind as K;
        use Jitter as J;
        let (name, base_ms, cap_ms, jitter) = match self {
            K::TikvRpc => ("tikvRPC", 100, 2_000, J::Equal),
            K::TiflashRpc => ("tiflashRPC", 100, 2_000, J::Equal),
            K::TxnLock => ("txnLock", 100, 3_000, J::Equal),
            K::PdRpc => ("pdRPC", 500, 3_000, J::Equal),
            K::RegionMiss => ("regionMiss", 2, 500, J::None),
            K::RegionScheduling => ("regionScheduling", 2, 500, J::None),
            K::TikvServerBusy => ("tikvServerBusy", 2_000, 10_000, J::Equal),
            K::TikvDiskFull => ("tikvDiskFull", 500, 5_000, J::None),
            K::RegionRecoveryInProgress => ("regionRecoveryInProgress", 100, 10_000, J::Equal),
            K::TiflashServerBusy => ("tiflashServerBusy", 2_000, 10_000, J::Equal),
            K::TxnNotFound => ("txnNotFound", 2, 500, J::None),
            K::StaleCommand => ("staleCommand", 2, 1_000, J::None),
            K::MaxTsNotSynced => ("maxTsNotSynced", 2, 500, J::None),
            K::CommitTsLag => ("commitTSLag", 2, 500, J::None),
            K::RegionNotInitialized => ("regionNotInitialized", 2, 1_000, J::None),
            K::IsWitness => ("isWitness", 1_000, 10_000, J::Equal),
            K::TxnLockFast => ("txnLockFast", 2, 3_000, J::Equal),
        };
        Schedule {
            name,
            base_ms,
            cap_ms,
            jitter,
        }
    }

    /// The ceiling of sleeps kept outside the shared budget, for kinds that have one. Only
    /// `tikvServerBusy` does: TiKV asked us to wait, so waiting does not count against the
    /// request, but never for more than ten minutes in all.
    fn excluded_limit_ms(self) -> Option<u64> {
        match self {
            BackoffKind::TikvServerBusy => Some(600_000),
            _ => None,
        }
    }
}

impl fmt::Display for BackoffKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An exponential schedule: sleeps start at `base_ms`, double per attempt, stop growing at
/// `cap_ms`, and are spread by `jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) struct Schedule {
    /// The kind's name.
    pub name: &'static str,
    /// The first sleep, in milliseconds.
    pub base_ms: u64,
    /// The largest sleep, in milliseconds.
    pub cap_ms: u64,
    /// How sleeps are randomised.
    pub jitter: Jitter,
}

impl Schedule {
    /// The sleep for the given attempt (0-based), before any per-call maximum. Randomness comes from `rng`.
    fn sleep_ms(&self, base_ms: u64, attempt: u32, rng: &mut fastrand::Rng) -> u64 {
        // client-go raises tiny bases to 2 so that the random ranges below are never empty.
        let base = base_ms.max(2);
        let cap = self.cap_ms;
        let expo = || {
            let factor = 1u64.checked_shl(attempt).unwrap_or(u64::MAX);
            base.saturating_mul(factor).min(cap)
        };
        match self.jitter {
            Jitter::None => expo(),
            Jitter::Equal => {
                let v = expo();
                let half = v / 2;
                if half == 0 {
                    half
                } else {
                    half + rng.u64(0..half)
                }
            }
        }
    }
}

/// Knobs shared by the backoffers of one client (client-go `kv.Variables`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub(crate) struct BackoffVars {
    /// Multiplies every backoffer's budget (`BackOffWeight`, default 2).
    pub weight: u32,
    /// Base sleep of [`BackoffKind::TxnLockFast`] in milliseconds (`BackoffLockFast`, default 10).
    pub lock_fast_base_ms: u64,
    /// When set to non-zero by another task, the next backoff fails with [`Error::Cancelled`]
    /// (client-go's `Killed` signal).
    pub killed: Option<Arc<AtomicU32>>,
}

impl Default for BackoffVars {
    fn default() -> Self {
        BackoffVars {
            weight: 2,
            lock_fast_base_ms: 10,
            killed: None,
        }
    }
}

impl BackoffVars {
    /// Sets the budget weight.
    pub(crate) fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    #[cfg(test)]
    /// Installs a kill flag: a non-zero value stops every backoff that sees it.
    pub(crate) fn with_kill_flag(mut self, flag: Arc<AtomicU32>) -> Self {
        self.killed = Some(flag);
        self
    }
}

/// Per-kind schedule state and accounting.
#[derive(Debug, Clone, Copy, Default)]
struct KindState {
    attempts: u32,
    slept_ms: u64,
    times: u32,
    /// Whether the schedule has been started (client-go creates the closure lazily; a `Reset`
    /// drops it, which restarts the exponent).
    started: bool,
}

/// Gives every backoffer an identity so a fork can be merged back only into its ancestor.
static NEXT_BACKOFFER_ID: AtomicU64 = AtomicU64::new(1);
/// Identities each thread takes from [`NEXT_BACKOFFER_ID`] at a time: every request makes a
/// backoffer, and one shared counter bumped by every thread would bounce between the cores.
const ID_BLOCK: u64 = 1024;

fn next_backoffer_id() -> u64 {
    thread_local! {
        /// The next identity of this thread's block, and the block's end.
        static IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    IDS.with(|ids| {
        let (mut next, mut end) = ids.get();
        if next == end {
            next = NEXT_BACKOFFER_ID.fetch_add(ID_BLOCK, Ordering::Relaxed);
            end = next + ID_BLOCK;
        }
        ids.set((next + 1, end));
        next
    })
}

/// The per-kind state of a backoffer.
type Kinds = [KindState; BackoffKind::COUNT];

/// Sleeps between retries within a budget; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Backoffer {
    id: u64,
    ancestors: Vec<u64>,
    max_sleep_ms: u64,
    total_sleep_ms: u64,
    excluded_sleep_ms: u64,
    deadline: Option<Instant>,
    noop: bool,
    /// Accounts every sleep but does not wait (tests that assert on the accounting against a
    /// live mock cluster, where paused time would also fire the transport's timeouts).
    skip_sleep: bool,
    vars: BackoffVars,
    /// Made on the first backoff: most requests never back off, and the array is over half a
    /// kilobyte that every request's future would otherwise carry and copy.
    kinds: Option<Box<Kinds>>,
    /// Kinds in the order they were used, for [`Backoffer::kinds_used`].
    history: Vec<BackoffKind>,
    rng: fastrand::Rng,
    /// Where a backoffer forked for a concurrent sub-task reports its sleeps, so the parent
    /// can take over the largest ([`Backoffer::fork_reporting`]).
    report: Option<ForkReport>,
}

/// The sleeps of the forked backoffer that slept most among the sub-tasks of one concurrent
/// step (client-go keeps the longest child when it merges them back); the parent merges it
/// with [`Backoffer::merge_reported`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ForkReport(Arc<std::sync::Mutex<Option<Backoffer>>>);

impl Backoffer {
    /// A backoffer whose sleeps may total `max_sleep` (multiplied by the default weight of 2).
    pub(crate) fn new(max_sleep: Duration) -> Self {
        Backoffer::with_vars(max_sleep, BackoffVars::default())
    }

    /// A backoffer with explicit [`BackoffVars`].
    pub(crate) fn with_vars(max_sleep: Duration, vars: BackoffVars) -> Self {
        let base = u64::try_from(max_sleep.as_millis()).unwrap_or(u64::MAX);
        // client-go applies the weight only while the product stays within an i32; beyond that
        // the budget is already effectively unbounded.
        let weighted = if base > 0 && u64::from(vars.weight) > 0 {
            match base.checked_mul(u64::from(vars.weight)) {
                Some(v) if v <= i32::MAX as u64 => v,
                _ => base,
            }
        } else {
            base
        };
        Backoffer {
            id: next_backoffer_id(),
            ancestors: Vec::new(),
            max_sleep_ms: weighted,
            total_sleep_ms: 0,
            excluded_sleep_ms: 0,
            deadline: None,
            noop: false,
            skip_sleep: false,
            vars,
            kinds: None,
            history: Vec::new(),
            rng: fastrand::Rng::new(),
            report: None,
        }
    }

    /// The same backoffer, accounting sleeps without waiting them out.
    #[cfg(test)]
    pub(crate) fn without_sleeps(mut self) -> Self {
        self.skip_sleep = true;
        self
    }

    /// A backoffer that never sleeps: every report returns the error at once.
    pub(crate) fn no_retry() -> Self {
        let mut bo = Backoffer::new(Duration::ZERO);
        bo.noop = true;
        bo
    }

    /// Bounds every sleep and report by an absolute deadline.
    pub(crate) fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    #[cfg(test)]
    /// Seeds the jitter, for reproducible schedules in tests.
    pub(crate) fn with_seed(mut self, seed: u64) -> Self {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// The deadline, if any.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    #[cfg(test)]
    /// The budget in effect (after weighting).
    pub(crate) fn max_sleep(&self) -> Duration {
        Duration::from_millis(self.max_sleep_ms)
    }

    /// Time slept so far, all kinds together.
    pub(crate) fn total_sleep(&self) -> Duration {
        Duration::from_millis(self.total_sleep_ms)
    }

    #[cfg(test)]
    /// Time slept so far on a kind.
    pub(crate) fn sleep_of(&self, kind: BackoffKind) -> Duration {
        Duration::from_millis(self.kind_state(kind).slept_ms)
    }

    #[cfg(test)]
    /// How many times a kind has slept.
    pub(crate) fn times_of(&self, kind: BackoffKind) -> u32 {
        self.kind_state(kind).times
    }

    #[cfg(test)]
    /// How many backoffs happened, all kinds together.
    pub(crate) fn total_times(&self) -> u32 {
        self.kinds
            .as_deref()
            .map_or(0, |kinds| kinds.iter().map(|k| k.times).sum())
    }

    fn kind_state(&self, kind: BackoffKind) -> KindState {
        self.kinds
            .as_deref()
            .map_or_else(KindState::default, |kinds| kinds[kind.index()])
    }

    fn kinds_mut(&mut self) -> &mut Kinds {
        self.kinds
            .get_or_insert_with(|| Box::new([KindState::default(); BackoffKind::COUNT]))
    }

    #[cfg(test)]
    /// The kinds reported so far, oldest first (with repeats).
    pub(crate) fn kinds_used(&self) -> &[BackoffKind] {
        &self.history
    }

    /// Sleeps before retrying after `err`, which failed with `kind`.
    ///
    /// Returns `Ok(())` when the caller should retry. Returns an error when it should not: the
    /// budget is spent ([`Error::BackoffExhausted`] with the longest-sleeping kind), the deadline
    /// passed (`err` itself), the backoffer is a no-retry one (`err` itself), or the kill flag
    /// is set ([`Error::Cancelled`]). A [`Error::ClusterIdMismatch`] is never retried.
    pub(crate) async fn backoff(&mut self, kind: BackoffKind, err: Error) -> Result<()> {
        self.backoff_with_max_sleep(kind, None, err).await
    }

    /// [`Backoffer::backoff`] with a ceiling on this one sleep (client-go
    /// `BackoffWithCfgAndMaxSleep`): the schedule advances as usual but the sleep taken is at
    /// most `max_sleep`.
    pub(crate) async fn backoff_with_max_sleep(
        &mut self,
        kind: BackoffKind,
        max_sleep: Option<Duration>,
        err: Error,
    ) -> Result<()> {
        let sleep_ms = self.plan(kind, max_sleep, err)?;
        self.sleep(sleep_ms).await
    }

    /// Everything [`Backoffer::backoff`] decides, without the sleep: returns the milliseconds
    /// to sleep, with the accounting already done. Split out so the decision logic is testable
    /// without a runtime.
    fn plan(&mut self, kind: BackoffKind, max_sleep: Option<Duration>, err: Error) -> Result<u64> {
        if matches!(err, Error::ClusterIdMismatch { .. }) {
            return Err(err);
        }
        if let Some(deadline) = self.deadline
            && Instant::now() >= deadline
        {
            return Err(err);
        }
        if self.noop {
            return Err(err);
        }
        let counted = self.total_sleep_ms.saturating_sub(self.excluded_sleep_ms);
        let budget_spent = counted >= self.max_sleep_ms;
        let excluded_spent = kind.excluded_limit_ms().is_some_and(|limit| {
            self.excluded_sleep_ms >= limit && self.excluded_sleep_ms >= self.max_sleep_ms
        });
        if self.max_sleep_ms > 0 && (budget_spent || excluded_spent) {
            let blamed = self.longest_sleeping_kind().unwrap_or(kind);
            tracing::warn!(
                kind = kind.name(),
                blamed = blamed.name(),
                total_sleep_ms = self.total_sleep_ms,
                max_sleep_ms = self.max_sleep_ms,
                error = %err,
                "backoff budget exhausted"
            );
            return Err(Error::BackoffExhausted {
                kind: blamed.name().to_owned(),
                total_sleep: self.total_sleep(),
                last: Box::new(err),
            });
        }

        let schedule = kind.schedule();
        let base_ms = if kind == BackoffKind::TxnLockFast {
            self.vars.lock_fast_base_ms
        } else {
            schedule.base_ms
        };
        let state = &mut self
            .kinds
            .get_or_insert_with(|| Box::new([KindState::default(); BackoffKind::COUNT]))
            [kind.index()];
        if !state.started {
            state.started = true;
            state.attempts = 0;
        }
        let planned = schedule.sleep_ms(base_ms, state.attempts, &mut self.rng);
        let ceiling = max_sleep.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let real = ceiling.map_or(planned, |c| planned.min(c));
        state.attempts = state.attempts.saturating_add(1);
        state.slept_ms = state.slept_ms.saturating_add(real);
        state.times = state.times.saturating_add(1);
        self.total_sleep_ms = self.total_sleep_ms.saturating_add(real);
        if kind.excluded_limit_ms().is_some() {
            self.excluded_sleep_ms = self.excluded_sleep_ms.saturating_add(real);
        }
        self.history.push(kind);
        self.report_sleeps();
        tracing::debug!(
            kind = kind.name(),
            sleep_ms = real,
            total_sleep_ms = self.total_sleep_ms,
            error = %err,
            "retry later"
        );

        if let Some(flag) = &self.vars.killed
            && flag.load(Ordering::Relaxed) != 0
        {
            return Err(Error::Cancelled);
        }
        Ok(real)
    }

    async fn sleep(&self, ms: u64) -> Result<()> {
        if self.skip_sleep {
            return Ok(());
        }
        let wake = Instant::now() + Duration::from_millis(ms);
        match self.deadline {
            Some(deadline) if deadline < wake => {
                tokio::time::sleep_until(deadline).await;
                // The sleep was accounted in full; what matters now is that the caller stops.
                Err(Error::Timeout {
                    operation: "retrying a request".to_owned(),
                    after: self.total_sleep(),
                })
            }
            _ => {
                tokio::time::sleep_until(wake).await;
                Ok(())
            }
        }
    }

    /// The kind that slept longest, ignoring kinds outside the shared budget.
    fn longest_sleeping_kind(&self) -> Option<BackoffKind> {
        let mut best: Option<(BackoffKind, u64)> = None;
        for kind in BackoffKind::ALL {
            if kind.excluded_limit_ms().is_some() {
                continue;
            }
            let slept = self.kind_state(kind).slept_ms;
            if slept > 0 && best.is_none_or(|(_, b)| slept > b) {
                best = Some((kind, slept));
            }
        }
        best.map(|(k, _)| k)
    }

    /// A child backoffer for a sub-task: it starts from this one's sleeps and counters, and can
    /// be merged back with [`Backoffer::merge_forked`]. Unlike [`Clone`], the child has its own
    /// identity.
    pub(crate) fn fork(&self) -> Backoffer {
        let mut child = self.clone();
        child.id = next_backoffer_id();
        child.ancestors.push(self.id);
        child
    }

    /// A child for one of several concurrent sub-tasks: like [`Backoffer::fork`], and every
    /// sleep it takes is reported to `report`, which keeps the child that slept most.
    pub(crate) fn fork_reporting(&self, report: &ForkReport) -> Backoffer {
        let mut child = self.fork();
        child.report = Some(report.clone());
        child
    }

    /// Takes over the sleeps of the reported child that slept most (see
    /// [`Backoffer::merge_forked`]), so the budget bounds the whole call across its
    /// concurrent steps, and passes them on to this backoffer's own report.
    pub(crate) fn merge_reported(&mut self, report: &ForkReport) {
        let child = report
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(child) = child
            && child.total_sleep_ms > self.total_sleep_ms
            && self.merge_forked(&child)
        {
            self.report_sleeps();
        }
    }

    /// Reports this backoffer's sleeps to its report if it slept more than the one kept.
    fn report_sleeps(&self) {
        let Some(report) = &self.report else { return };
        let mut kept = report
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept
            .as_ref()
            .is_none_or(|k| self.total_sleep_ms > k.total_sleep_ms)
        {
            let mut copy = self.clone();
            // The copy must not hold the report it sits in.
            copy.report = None;
            *kept = Some(copy);
        }
    }

    /// Takes over the sleeps and counters of a backoffer forked (directly or not) from this one,
    /// so the parent's budget reflects what the sub-task spent. A backoffer from elsewhere is
    /// ignored. Returns whether the merge happened.
    pub(crate) fn merge_forked(&mut self, forked: &Backoffer) -> bool {
        if !forked.ancestors.contains(&self.id) {
            return false;
        }
        self.total_sleep_ms = forked.total_sleep_ms;
        self.excluded_sleep_ms = forked.excluded_sleep_ms;
        if let Some(theirs) = forked.kinds.as_deref() {
            for (mine, theirs) in self.kinds_mut().iter_mut().zip(theirs.iter()) {
                mine.slept_ms = theirs.slept_ms;
                mine.times = theirs.times;
            }
        } else if let Some(mine) = self.kinds.as_deref_mut() {
            for mine in mine.iter_mut() {
                mine.slept_ms = 0;
                mine.times = 0;
            }
        }
        true
    }

    #[cfg(test)]
    /// Forgets the sleeps taken so far (and restarts every schedule), keeping the counters of
    /// times per kind: the next stage of a multi-stage operation gets a fresh budget.
    pub(crate) fn reset(&mut self) {
        self.total_sleep_ms = 0;
        self.excluded_sleep_ms = 0;
        for k in self.kinds.iter_mut().flat_map(|kinds| kinds.iter_mut()) {
            k.started = false;
        }
    }

    #[cfg(test)]
    /// [`Backoffer::reset`] with a new budget (weighted like the original).
    pub(crate) fn reset_max_sleep(&mut self, max_sleep: Duration) {
        self.reset();
        let fresh = Backoffer::with_vars(max_sleep, self.vars.clone());
        self.max_sleep_ms = fresh.max_sleep_ms;
    }
}

/// Whether a region error deserves a sleep before the retry (client-go
/// `MayBackoffForRegionError`): a real EpochNotMatch (one that carries the current regions)
/// is retried at once after the cache is updated; everything else, including an EpochNotMatch
/// without regions, sleeps on [`BackoffKind::RegionMiss`].
pub(crate) fn region_error_needs_backoff(err: &tikv_proto::errorpb::Error) -> bool {
    match &err.epoch_not_match {
        Some(e) => e.current_regions.is_empty(),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some_err(msg: &str) -> Error {
        Error::Internal {
            message: msg.to_owned(),
        }
    }

    #[test]
    fn presets_match_client_go() {
        let s = BackoffKind::TikvRpc.schedule();
        assert_eq!(
            (s.name, s.base_ms, s.cap_ms, s.jitter),
            ("tikvRPC", 100, 2000, Jitter::Equal)
        );
        let s = BackoffKind::RegionMiss.schedule();
        assert_eq!(
            (s.name, s.base_ms, s.cap_ms, s.jitter),
            ("regionMiss", 2, 500, Jitter::None)
        );
        let s = BackoffKind::TikvServerBusy.schedule();
        assert_eq!((s.base_ms, s.cap_ms), (2000, 10_000));
        assert_eq!(BackoffKind::CommitTsLag.name(), "commitTSLag");
        // Every kind has a distinct name and index.
        let mut names: Vec<_> = BackoffKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BackoffKind::COUNT);
        for (i, k) in BackoffKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }

    #[test]
    fn no_jitter_doubles_up_to_the_cap() {
        let mut bo = Backoffer::new(Duration::from_secs(100));
        let sleeps: Vec<u64> = (0..10)
            .map(|_| {
                bo.plan(BackoffKind::RegionMiss, None, some_err("x"))
                    .unwrap()
            })
            .collect();
        assert_eq!(sleeps, vec![2, 4, 8, 16, 32, 64, 128, 256, 500, 500]);
        assert_eq!(bo.times_of(BackoffKind::RegionMiss), 10);
        assert_eq!(bo.total_sleep(), Duration::from_millis(sleeps.iter().sum()));
    }

    #[test]
    fn jitter_kinds_stay_in_their_ranges() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mk = |jitter| Schedule {
            name: "t",
            base_ms: 100,
            cap_ms: 1000,
            jitter,
        };
        for attempt in 0..8 {
            let expo = (100u64 << attempt).min(1000);
            let equal = mk(Jitter::Equal).sleep_ms(100, attempt, &mut rng);
            assert!(equal >= expo / 2 && equal < expo);
        }
        // Tiny bases are raised to 2 so that the random ranges are never empty.
        let tiny = Schedule {
            name: "t",
            base_ms: 0,
            cap_ms: 10,
            jitter: Jitter::Equal,
        };
        assert_eq!(tiny.sleep_ms(0, 0, &mut rng), 1);
    }

    // client-go TestBackoffWithMax.
    #[test]
    fn per_call_ceiling_limits_one_sleep() {
        let mut bo = Backoffer::new(Duration::from_millis(2000));
        let slept = bo
            .plan(
                BackoffKind::TxnLockFast,
                Some(Duration::from_millis(5)),
                some_err("test"),
            )
            .unwrap();
        assert_eq!(slept, 5);
        assert_eq!(bo.total_sleep(), Duration::from_millis(5));
    }

    // client-go TestBackoffErrorType: the exhausted error names the kind that slept longest,
    // and server-busy sleeps do not count against the budget.
    #[test]
    fn exhaustion_blames_the_longest_sleeping_kind() {
        let mut bo = Backoffer::new(Duration::from_millis(800)).with_seed(1);
        assert_eq!(bo.max_sleep(), Duration::from_millis(1600));
        bo.plan(BackoffKind::RegionMiss, None, some_err("region miss"))
            .unwrap();
        for _ in 0..2 {
            bo.plan(
                BackoffKind::RegionNotInitialized,
                None,
                some_err("not init"),
            )
            .unwrap();
        }
        bo.plan(
            BackoffKind::RegionRecoveryInProgress,
            None,
            some_err("recovery"),
        )
        .unwrap();
        bo.plan(BackoffKind::TikvServerBusy, None, some_err("busy"))
            .unwrap();
        bo.plan(BackoffKind::IsWitness, None, some_err("witness"))
            .unwrap();
        for _ in 0..15 {
            match bo.plan(BackoffKind::TxnNotFound, None, some_err("txn not found")) {
                Ok(_) => continue,
                Err(Error::BackoffExhausted { kind, last, .. }) => {
                    // The blamed kind is the one with the most sleep inside the budget.
                    let longest = BackoffKind::ALL
                        .into_iter()
                        .filter(|k| *k != BackoffKind::TikvServerBusy)
                        .max_by_key(|k| bo.sleep_of(*k))
                        .unwrap();
                    assert_eq!(kind, longest.name());
                    assert!(matches!(
                        longest,
                        BackoffKind::IsWitness | BackoffKind::TxnNotFound
                    ));
                    assert!(
                        matches!(*last, Error::Internal { ref message } if message == "txn not found")
                    );
                    assert!(bo.excluded_sleep_ms >= 1000);
                    return;
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        panic!("the budget was never exhausted");
    }

    // client-go TestBackoffDeepCopy.
    #[test]
    fn clone_and_fork_keep_the_spent_budget() {
        let mut bo = Backoffer::new(Duration::from_millis(4));
        for _ in 0..3 {
            bo.plan(BackoffKind::RegionNotInitialized, None, some_err("ni"))
                .unwrap();
        }
        let mut forked = bo.fork();
        let mut cloned = bo.clone();
        for b in [&mut forked, &mut cloned] {
            assert_eq!(b.total_sleep(), bo.total_sleep());
            assert_eq!(b.times_of(BackoffKind::RegionNotInitialized), 3);
            match b.plan(BackoffKind::TikvRpc, None, some_err("rpc")) {
                Err(Error::BackoffExhausted { kind, .. }) => {
                    assert_eq!(kind, "regionNotInitialized")
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    // client-go TestBackoffUpdateUsingFork.
    #[test]
    fn merging_a_fork_takes_its_accounting() {
        let mut bo = Backoffer::new(Duration::from_secs(10));
        bo.plan(BackoffKind::RegionMiss, None, some_err("a"))
            .unwrap();
        let mut forked = bo.fork();
        let mut grandchild = forked.fork();
        forked
            .plan(BackoffKind::StaleCommand, None, some_err("b"))
            .unwrap();
        grandchild
            .plan(BackoffKind::StaleCommand, None, some_err("c"))
            .unwrap();
        grandchild
            .plan(BackoffKind::StaleCommand, None, some_err("d"))
            .unwrap();
        assert!(bo.merge_forked(&forked));
        assert_eq!(bo.total_sleep(), forked.total_sleep());
        assert_eq!(bo.times_of(BackoffKind::StaleCommand), 1);
        assert!(bo.merge_forked(&grandchild));
        assert_eq!(bo.times_of(BackoffKind::StaleCommand), 2);
        // A stranger's accounting is not taken.
        let stranger = Backoffer::new(Duration::from_secs(1));
        assert!(!bo.merge_forked(&stranger));
        assert!(!forked.merge_forked(&bo));
    }

    // client-go TestBackoffWithMaxExcludedExceed, with the real ten-minute ceiling reached.
    #[test]
    fn server_busy_has_its_own_ceiling() {
        let mut bo = Backoffer::new(Duration::from_millis(1));
        let mut outcome = Ok(0);
        for _ in 0..200 {
            outcome = bo.plan(BackoffKind::TikvServerBusy, None, some_err("busy"));
            if outcome.is_err() {
                break;
            }
        }
        assert!(matches!(outcome, Err(Error::BackoffExhausted { .. })));
        assert!(bo.excluded_sleep_ms >= 600_000);
        // Server-busy sleeps never count against the shared budget.
        assert_eq!(bo.total_sleep_ms - bo.excluded_sleep_ms, 0);
    }

    #[test]
    fn no_retry_and_cluster_mismatch_fail_at_once() {
        let mut bo = Backoffer::no_retry();
        assert!(matches!(
            bo.plan(BackoffKind::RegionMiss, None, some_err("x")),
            Err(Error::Internal { .. })
        ));
        let mut bo = Backoffer::new(Duration::from_secs(10));
        let mismatch = Error::ClusterIdMismatch {
            expected: 1,
            actual: 2,
        };
        assert!(matches!(
            bo.plan(BackoffKind::PdRpc, None, mismatch),
            Err(Error::ClusterIdMismatch { .. })
        ));
        assert_eq!(bo.total_times(), 0);
    }

    #[test]
    fn kill_flag_stops_the_loop() {
        let flag = Arc::new(AtomicU32::new(0));
        let mut bo = Backoffer::with_vars(
            Duration::from_secs(10),
            BackoffVars::default().with_kill_flag(flag.clone()),
        );
        bo.plan(BackoffKind::RegionMiss, None, some_err("x"))
            .unwrap();
        flag.store(1, Ordering::Relaxed);
        assert!(matches!(
            bo.plan(BackoffKind::RegionMiss, None, some_err("x")),
            Err(Error::Cancelled)
        ));
    }

    #[test]
    fn reset_restarts_schedules_and_budget() {
        let mut bo = Backoffer::new(Duration::from_millis(5));
        while bo
            .plan(BackoffKind::RegionMiss, None, some_err("x"))
            .is_ok()
        {}
        bo.reset();
        assert_eq!(bo.total_sleep(), Duration::ZERO);
        assert_eq!(
            bo.plan(BackoffKind::RegionMiss, None, some_err("x"))
                .unwrap(),
            2
        );
        bo.reset_max_sleep(Duration::from_secs(1));
        assert_eq!(bo.max_sleep(), Duration::from_secs(2));
        assert_eq!(bo.kinds_used().len(), bo.total_times() as usize);
    }

    #[test]
    fn weight_does_not_overflow_the_budget() {
        let bo = Backoffer::with_vars(
            Duration::from_millis(u64::from(u32::MAX)),
            BackoffVars::default().with_weight(4),
        );
        assert_eq!(bo.max_sleep(), Duration::from_millis(u64::from(u32::MAX)));
        let bo = Backoffer::with_vars(
            Duration::from_millis(10),
            BackoffVars::default().with_weight(0),
        );
        assert_eq!(bo.max_sleep(), Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn sleeps_on_the_tokio_clock() {
        let mut bo = Backoffer::new(Duration::from_secs(10));
        let start = Instant::now();
        bo.backoff(BackoffKind::RegionMiss, some_err("x"))
            .await
            .unwrap();
        bo.backoff(BackoffKind::RegionMiss, some_err("x"))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(6));
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_cuts_the_sleep_and_stops_retrying() {
        let start = Instant::now();
        let mut bo = Backoffer::new(Duration::from_secs(100))
            .with_deadline(start + Duration::from_millis(150));
        bo.backoff(BackoffKind::TikvRpc, some_err("x"))
            .await
            .unwrap_or_default();
        let mut outcome = Ok(());
        for _ in 0..10 {
            outcome = bo.backoff(BackoffKind::TikvRpc, some_err("rpc")).await;
            if outcome.is_err() {
                break;
            }
        }
        assert!(outcome.is_err());
        assert_eq!(start.elapsed(), Duration::from_millis(150));
        // Once past the deadline the error being retried comes straight back.
        assert!(matches!(
            bo.backoff(BackoffKind::TikvRpc, some_err("late")).await,
            Err(Error::Internal { ref message }) if message == "late"
        ));
    }

    // client-go TestMayBackoffForRegionError.
    #[test]
    fn only_a_real_epoch_not_match_skips_the_sleep() {
        use tikv_proto::{errorpb, metapb};
        let real = errorpb::Error {
            epoch_not_match: Some(errorpb::EpochNotMatch {
                current_regions: vec![metapb::Region {
                    id: 1,
                    ..Default::default()
                }],
            }),
            ..Default::default()
        };
        assert!(!region_error_needs_backoff(&real));
        let fake = errorpb::Error {
            epoch_not_match: Some(errorpb::EpochNotMatch::default()),
            ..Default::default()
        };
        assert!(region_error_needs_backoff(&fake));
        let not_leader = errorpb::Error {
            not_leader: Some(errorpb::NotLeader::default()),
            ..Default::default()
        };
        assert!(region_error_needs_backoff(&not_leader));
    }
}
