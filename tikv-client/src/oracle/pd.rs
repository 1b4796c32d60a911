//! [`PdOracle`]: the timestamp oracle backed by PD.
//!
//! It owns three things on top of the [`TimestampSource`] it wraps:
//!
//! - the **last timestamp**: the highest timestamp fetched so far and the local instant it
//!   arrived. Every fetch pushes it (never backwards). It is the low-resolution timestamp, the
//!   clock of [`Oracle::is_expired`] / [`Oracle::until_expired`], and the base of
//!   [`Oracle::get_stale_timestamp`] (last timestamp plus local time elapsed since it arrived);
//! - the **refresh task**: a tokio task that fetches a timestamp every update interval, so that
//!   the last timestamp is never much older than the interval even when nobody asks PD. Its
//!   interval adapts to stale reads (see [`super::adaptive`]). It stops on [`Oracle::close`] and
//!   when the oracle is dropped;
//! - **read-timestamp validation**: a read timestamp above every timestamp PD has allocated
//!   would read a snapshot that later commits can still change. A read timestamp at or below the
//!   last timestamp is known to be safe without a round trip; above it, the oracle asks PD, and
//!   concurrent validators share one PD fetch.
//!
//! Ports client-go `oracle/oracles/pd.go` (`pdOracle`, `PDOracleOptions`, `EnableTSValidation`)
//! without its per-transaction-scope map: local (DC) TSO is not supported, so there is one
//! global scope.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::adaptive::AdaptiveInterval;
use super::{Oracle, OracleFuture, Timestamp, TimestampSource};
use crate::pd::PdClient;
use crate::{Error, Result};

/// A fetch slower than this is logged (client-go `slowDist`).
const SLOW_FETCH: Duration = Duration::from_millis(30);

/// Default refresh interval of the low-resolution timestamp (client-go
/// `defaultOracleUpdateInterval`).
pub(crate) const DEFAULT_UPDATE_INTERVAL: Duration = Duration::from_secs(2);

/// Options of [`PdOracle`] (client-go `PDOracleOptions`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub(crate) struct PdOracleOptions {
    /// How often the low-resolution timestamp is refreshed from PD when stale reads do not ask
    /// for a shorter interval. Must be positive. Default: 2 s.
    pub(crate) update_interval: Duration,
    /// Whether [`Oracle::validate_read_ts`] checks read timestamps (client-go
    /// `EnableTSValidation`, a process-wide switch there, per oracle here). Default: on; the
    /// check costs a PD round trip only for a read timestamp newer than every timestamp this
    /// oracle has seen.
    pub(crate) ts_validation: bool,
    /// Run the refresh task. Off only in tests that drive the oracle by hand (client-go
    /// `NoUpdateTS`).
    pub(crate) background_update: bool,
}

impl Default for PdOracleOptions {
    fn default() -> Self {
        PdOracleOptions {
            update_interval: DEFAULT_UPDATE_INTERVAL,
            ts_validation: true,
            background_update: true,
        }
    }
}

// The cluster makes its oracle with the defaults; only tests choose other options.
#[cfg(test)]
impl PdOracleOptions {
    /// Sets [`update_interval`](Self::update_interval).
    pub(crate) fn with_update_interval(mut self, interval: Duration) -> Self {
        self.update_interval = interval;
        self
    }

    /// Sets [`ts_validation`](Self::ts_validation).
    pub(crate) fn with_ts_validation(mut self, enabled: bool) -> Self {
        self.ts_validation = enabled;
        self
    }
}

/// The highest timestamp fetched so far and when it arrived.
///
/// Two atomics instead of a lock: a reader pairs a timestamp with an arrival time that is at
/// least as late as that timestamp's own arrival, because a writer publishes the arrival before
/// the timestamp. A later arrival only makes a stale-timestamp estimate older, never newer than
/// PD's clock, which is the direction that is safe.
#[derive(Debug)]
struct LastTs {
    epoch: Instant,
    /// 0 until the first fetch: PD never allocates timestamp 0.
    ts: AtomicU64,
    /// Nanoseconds after `epoch`.
    arrival_ns: AtomicU64,
}

impl LastTs {
    fn new(epoch: Instant) -> Self {
        LastTs {
            epoch,
            ts: AtomicU64::new(0),
            arrival_ns: AtomicU64::new(0),
        }
    }

    /// Pushes the last timestamp to `ts` if it is higher.
    fn push(&self, ts: Timestamp, arrival: Instant) {
        let ts = ts.version();
        let mut current = self.ts.load(Ordering::Acquire);
        if ts <= current {
            return;
        }
        let arrival_ns = u64::try_from(arrival.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX);
        self.arrival_ns.fetch_max(arrival_ns, Ordering::Release);
        while ts > current {
            match self
                .ts
                .compare_exchange_weak(current, ts, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    fn get(&self) -> Option<(Timestamp, Instant)> {
        let ts = self.ts.load(Ordering::Acquire);
        if ts == 0 {
            return None;
        }
        let arrival = self.epoch + Duration::from_nanos(self.arrival_ns.load(Ordering::Acquire));
        Some((Timestamp::from_version(ts), arrival))
    }

    fn ts(&self) -> Option<Timestamp> {
        match self.ts.load(Ordering::Acquire) {
            0 => None,
            ts => Some(Timestamp::from_version(ts)),
        }
    }
}

/// A timestamp `prev_seconds` before PD's current time, estimated from `last` (a fetched
/// timestamp and its local arrival) plus the local time elapsed since (client-go
/// `getStaleTimestampWithLastTS`).
fn stale_timestamp(
    last: (Timestamp, Instant),
    prev_seconds: u64,
    now: Instant,
) -> Result<Timestamp> {
    let (ts, arrival) = last;
    if ts.physical() / 1000 <= prev_seconds {
        return Err(Error::invalid_argument(format!(
            "invalid prevSecond {prev_seconds}"
        )));
    }
    let elapsed_ns = now.saturating_duration_since(arrival).as_nanos() as i128;
    let stale_ns = i128::from(ts.physical()) * 1_000_000 + elapsed_ns
        - i128::from(prev_seconds) * 1_000_000_000;
    // Positive: the physical part is more than `prev_seconds` seconds.
    let ms = u64::try_from(stale_ns.div_euclid(1_000_000)).unwrap_or(0);
    Ok(Timestamp::compose(ms, 0))
}

/// The outcome of a validation fetch, shared with every validator that joined it; `None` until
/// it is known.
type SharedFetch = watch::Receiver<Option<Result<Timestamp>>>;

/// State shared between the oracle handle and its refresh task.
#[derive(Debug)]
struct Shared {
    source: Arc<dyn TimestampSource>,
    last: LastTs,
    adaptive: AdaptiveInterval,
    ts_validation: AtomicBool,
    /// The validation fetch in flight, if any. Validators that find one wait for its result
    /// instead of asking PD again (client-go uses a singleflight group for this).
    validation_fetch: Mutex<Option<SharedFetch>>,
    /// Test knob: fail at once instead of retrying once (client-go failpoint
    /// `validateReadTSRetryGetTS`).
    #[cfg(test)]
    skip_validation_retry: AtomicBool,
}

/// Clears the in-flight validation fetch when its leader finishes or is dropped, so that a
/// waiter whose leader was cancelled can start a new fetch.
struct FetchSlotGuard<'a>(&'a Mutex<Option<SharedFetch>>);

impl Drop for FetchSlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl Shared {
    async fn fetch_timestamp(&self) -> Result<Timestamp> {
        let start = Instant::now();
        let ts = self.source.get_timestamp().await?;
        let now = Instant::now();
        let took = now.saturating_duration_since(start);
        if took > SLOW_FETCH {
            tracing::warn!(cost = ?took, "get timestamp too slow");
        }
        self.last.push(ts, now);
        Ok(ts)
    }

    /// A timestamp fetched after this call started, or one fetched by a concurrent validation
    /// that started earlier (so possibly older than timestamps allocated meanwhile: the caller
    /// retries once for that reason).
    async fn fetch_for_validation(&self) -> Result<Timestamp> {
        enum Role {
            Lead(watch::Sender<Option<Result<Timestamp>>>),
            Join(SharedFetch),
        }
        loop {
            let role = {
                let mut slot = self
                    .validation_fetch
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match &*slot {
                    Some(rx) => Role::Join(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        *slot = Some(rx);
                        Role::Lead(tx)
                    }
                }
            };
            match role {
                Role::Lead(tx) => {
                    // Declared after `tx`, so dropped before it if this future is cancelled:
                    // the waiters, woken by the closed channel, find the slot free.
                    let guard = FetchSlotGuard(&self.validation_fetch);
                    let result = self.fetch_timestamp().await;
                    drop(guard);
                    tx.send_replace(Some(result.clone()));
                    return result;
                }
                Role::Join(mut rx) => {
                    if let Ok(outcome) = rx.wait_for(Option::is_some).await
                        && let Some(result) = outcome.as_ref()
                    {
                        return result.clone();
                    }
                    // The leading validator was cancelled before PD answered: lead anew. The
                    // new fetch starts after this call did, so its answer is as good.
                }
            }
        }
    }

    async fn validate_slow(&self, read_ts: Timestamp, is_stale_read: bool) -> Result<()> {
        let mut retrying = false;
        loop {
            let last = self.last.get();
            match last {
                Some(last) if read_ts <= last.0 => {
                    if !retrying && is_stale_read {
                        self.adjust_from_estimate(read_ts, last);
                    }
                    return Ok(());
                }
                _ => {}
            }
            let current = self.fetch_for_validation().await?;
            if is_stale_read && !retrying {
                self.adaptive
                    .adjust_with_requested_staleness(read_ts, current, Instant::now());
            }
            if read_ts <= current {
                return Ok(());
            }
            // The fetch may have been a shared one that started before `read_ts` was allocated
            // (by another client of the same cluster), so it proves nothing yet. One more round:
            // the last timestamp may have moved meanwhile, and a fetch started now is newer than
            // anything PD allocated before this call.
            #[cfg(test)]
            let skip_retry = self.skip_validation_retry.load(Ordering::Relaxed);
            #[cfg(not(test))]
            let skip_retry = false;
            if retrying || skip_retry {
                return Err(Error::FutureTsRead {
                    read_ts,
                    current_ts: current,
                });
            }
            retrying = true;
        }
    }

    /// Feeds the adaptive interval with the staleness of a read validated from the cache, using
    /// an estimate of PD's current time.
    fn adjust_from_estimate(&self, read_ts: Timestamp, last: (Timestamp, Instant)) {
        let now = Instant::now();
        match stale_timestamp(last, 0, now) {
            Ok(estimated) => self
                .adaptive
                .adjust_with_requested_staleness(read_ts, estimated, now),
            Err(err) => tracing::warn!(
                %err,
                read_ts = read_ts.version(),
                "cannot estimate the current ts to adapt the low resolution ts update interval"
            ),
        }
    }

    /// One refresh: fetch, then record the tick (after the interval was decided, which reads
    /// the previous tick).
    async fn refresh(&self, now: Instant) {
        if let Err(err) = self.fetch_timestamp().await {
            tracing::error!(%err, "updateTS error");
        }
        self.adaptive.set_last_tick(now);
    }
}

fn ticker(period: Duration) -> tokio::time::Interval {
    // A zero period would panic; the adaptive interval is never zero, but be defensive.
    let period = period.max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    ticker
}

/// The refresh task (client-go `updateTS`).
async fn run_refresh(shared: Arc<Shared>, mut shrink_rx: mpsc::Receiver<Duration>) {
    let mut current = shared.adaptive.configured();
    let mut ticks = ticker(current);
    loop {
        tokio::select! {
            tick = ticks.tick() => {
                let next = shared.adaptive.next_update_interval(tick, None);
                shared.refresh(tick).await;
                if next != current {
                    current = next;
                    ticks = ticker(current);
                }
            }
            Some(required) = shrink_rx.recv() => {
                let now = Instant::now();
                let next = shared.adaptive.next_update_interval(now, Some(required));
                if next != current {
                    current = next;
                    // The cached timestamp may already be older than the new interval allows.
                    if now.saturating_duration_since(shared.adaptive.last_tick()) >= current {
                        shared.refresh(Instant::now()).await;
                    }
                    ticks = ticker(current);
                }
            }
        }
    }
}

/// The timestamp oracle backed by PD.
///
/// Create it once per cluster and share it (`Arc<PdOracle>` or `Arc<dyn Oracle>`). It is not
/// `Clone`: dropping it stops its refresh task.
pub(crate) struct PdOracle {
    shared: Arc<Shared>,
    refresh_task: Option<JoinHandle<()>>,
    /// The shrink requests' receiver while no refresh task consumes them (tests).
    idle_shrink_rx: Mutex<Option<mpsc::Receiver<Duration>>>,
}

impl fmt::Debug for PdOracle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PdOracle")
            .field("last_ts", &self.shared.last.ts())
            .field("configured_interval", &self.shared.adaptive.configured())
            .field("current_interval", &self.shared.adaptive.current())
            .field(
                "ts_validation",
                &self.shared.ts_validation.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl PdOracle {
    /// An oracle on `pd` (client-go `NewPdOracle`): fetches a first timestamp, so that the
    /// low-resolution timestamp exists from the start, and starts the refresh task. The oracle
    /// keeps a clone of `pd` (sharing its connections) for as long as it lives. Must run inside
    /// a tokio runtime.
    ///
    /// Fails with [`Error::InvalidArgument`] for a zero update interval, and with PD's error
    /// if the first timestamp cannot be fetched.
    pub(crate) async fn new(pd: &PdClient, options: PdOracleOptions) -> Result<PdOracle> {
        PdOracle::with_source(Arc::new(pd.clone()), options).await
    }

    /// An oracle over `source`: fetches a first timestamp (so that the low-resolution timestamp
    /// exists from the start) and starts the refresh task. Must run inside a tokio runtime.
    pub(crate) async fn with_source(
        source: Arc<dyn TimestampSource>,
        options: PdOracleOptions,
    ) -> Result<PdOracle> {
        let mut oracle = PdOracle::unstarted(source, &options)?;
        oracle.shared.fetch_timestamp().await?;
        if options.background_update {
            oracle.start_refresh();
        }
        Ok(oracle)
    }

    /// An oracle with no timestamp fetched yet and no refresh task.
    fn unstarted(source: Arc<dyn TimestampSource>, options: &PdOracleOptions) -> Result<PdOracle> {
        if options.update_interval.is_zero() {
            return Err(Error::invalid_argument("updateInterval must be > 0"));
        }
        let now = Instant::now();
        let (adaptive, shrink_rx) = AdaptiveInterval::new(options.update_interval, now);
        let shared = Arc::new(Shared {
            source,
            last: LastTs::new(now),
            adaptive,
            ts_validation: AtomicBool::new(options.ts_validation),
            validation_fetch: Mutex::new(None),
            #[cfg(test)]
            skip_validation_retry: AtomicBool::new(false),
        });
        Ok(PdOracle {
            shared,
            refresh_task: None,
            idle_shrink_rx: Mutex::new(Some(shrink_rx)),
        })
    }

    fn start_refresh(&mut self) {
        let rx = self
            .idle_shrink_rx
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(rx) = rx {
            self.refresh_task = Some(tokio::spawn(run_refresh(self.shared.clone(), rx)));
        }
    }
}

impl Drop for PdOracle {
    fn drop(&mut self) {
        if let Some(task) = &self.refresh_task {
            task.abort();
        }
    }
}

impl Oracle for PdOracle {
    fn get_timestamp(&self) -> OracleFuture<'_, Result<Timestamp>> {
        OracleFuture::boxed(self.shared.fetch_timestamp())
    }

    fn get_low_resolution_timestamp(&self) -> OracleFuture<'_, Result<Timestamp>> {
        match self.shared.last.ts() {
            Some(ts) => OracleFuture::ready(Ok(ts)),
            None => OracleFuture::boxed(self.shared.fetch_timestamp()),
        }
    }

    fn set_low_resolution_update_interval(&self, interval: Duration) -> Result<()> {
        self.shared.adaptive.set_configured(interval)
    }

    fn get_stale_timestamp(&self, prev_seconds: u64) -> OracleFuture<'_, Result<Timestamp>> {
        match self.shared.last.get() {
            Some(last) => OracleFuture::ready(stale_timestamp(last, prev_seconds, Instant::now())),
            None => OracleFuture::boxed(async move {
                let ts = self.shared.fetch_timestamp().await?;
                stale_timestamp((ts, Instant::now()), prev_seconds, Instant::now())
            }),
        }
    }

    fn is_expired(&self, lock_ts: Timestamp, ttl_ms: u64) -> bool {
        match self.shared.last.ts() {
            None => true,
            Some(last) => last.physical() >= lock_ts.physical().saturating_add(ttl_ms),
        }
    }

    fn until_expired(&self, lock_ts: Timestamp, ttl_ms: u64) -> i64 {
        match self.shared.last.ts() {
            None => 0,
            Some(last) => until_expired_ms(lock_ts, ttl_ms, last.physical()),
        }
    }

    fn validate_read_ts(
        &self,
        read_ts: Timestamp,
        is_stale_read: bool,
    ) -> OracleFuture<'_, Result<()>> {
        let shared = &self.shared;
        if !shared.ts_validation.load(Ordering::Relaxed) {
            return OracleFuture::ready(Ok(()));
        }
        if let Some(err) = check_read_ts_range(read_ts, is_stale_read) {
            return OracleFuture::ready(err);
        }
        // The common case, answered from memory.
        if let Some(last) = shared.last.get()
            && read_ts <= last.0
        {
            if is_stale_read {
                shared.adjust_from_estimate(read_ts, last);
            }
            return OracleFuture::ready(Ok(()));
        }
        OracleFuture::boxed(shared.validate_slow(read_ts, is_stale_read))
    }

    fn get_external_timestamp(&self) -> OracleFuture<'_, Result<Timestamp>> {
        OracleFuture::boxed(async move {
            let ts = self.shared.source.get_external_timestamp().await?;
            Ok(Timestamp::from_version(ts))
        })
    }

    fn set_external_timestamp(&self, ts: Timestamp) -> OracleFuture<'_, Result<()>> {
        OracleFuture::boxed(self.shared.source.set_external_timestamp(ts.version()))
    }

    fn get_all_tso_keyspace_group_min_ts(&self) -> OracleFuture<'_, Result<Timestamp>> {
        OracleFuture::boxed(async move {
            let start = Instant::now();
            let ts = self.shared.source.get_min_ts().await?;
            let took = start.elapsed();
            if took > SLOW_FETCH {
                tracing::warn!(cost = ?took, "get minimum timestamp too slow");
            }
            Ok(ts)
        })
    }

    fn close(&self) {
        if let Some(task) = &self.refresh_task {
            task.abort();
        }
    }
}

/// Milliseconds from `now_physical_ms` until a lock taken at `lock_ts` with `ttl_ms` expires;
/// negative once it has.
pub(crate) fn until_expired_ms(lock_ts: Timestamp, ttl_ms: u64, now_physical_ms: u64) -> i64 {
    // Physical parts are below 2^46, so these conversions are exact.
    let lock = i64::try_from(lock_ts.physical()).unwrap_or(i64::MAX);
    let now = i64::try_from(now_physical_ms).unwrap_or(i64::MAX);
    let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX);
    lock.saturating_add(ttl).saturating_sub(now)
}

/// The checks of a read timestamp that need no clock: `Some(result)` when they decide.
pub(crate) fn check_read_ts_range(read_ts: Timestamp, is_stale_read: bool) -> Option<Result<()>> {
    let v = read_ts.version();
    if v == u64::MAX {
        // "Read the latest" is fine for a normal read and meaningless for a stale one.
        return Some(if is_stale_read {
            Err(Error::LatestStaleRead)
        } else {
            Ok(())
        });
    }
    if v >= i64::MAX as u64 {
        // Guards against a conversion mistake seen in the wild (a signed max passed as a ts).
        return Some(Err(Error::invalid_argument(format!(
            "MaxInt64 <= readTS < MaxUint64, readTS={v}"
        ))));
    }
    None
}

#[cfg(test)]
impl PdOracle {
    /// An oracle without a first fetch and without the refresh task (client-go
    /// `NewEmptyPDOracle` / `NewPdOracleWithClient`).
    pub(crate) fn new_idle(source: Arc<dyn TimestampSource>) -> PdOracle {
        let options = PdOracleOptions {
            background_update: false,
            ..PdOracleOptions::default()
        };
        PdOracle::unstarted(source, &options).unwrap()
    }

    /// Sets the last timestamp as if it had just been fetched (client-go
    /// `SetEmptyPDOracleLastTs`).
    pub(crate) fn set_last_ts(&self, ts: Timestamp, arrival: Instant) {
        self.shared.last.push(ts, arrival);
    }

    pub(crate) fn last_ts(&self) -> Option<Timestamp> {
        self.shared.last.ts()
    }

    /// Turns read-timestamp validation on or off (see [`PdOracleOptions::ts_validation`]).
    pub(crate) fn set_ts_validation(&self, enabled: bool) {
        self.shared.ts_validation.store(enabled, Ordering::Relaxed);
    }

    /// The interval the refresh task currently uses: the configured one, or shorter while
    /// adapting to stale reads.
    pub(crate) fn current_update_interval(&self) -> Duration {
        self.shared.adaptive.current()
    }

    /// Starts the refresh task of an idle oracle (client-go `StartTsUpdateLoop`).
    pub(crate) fn start_refresh_for_test(&mut self) {
        self.start_refresh();
    }

    pub(crate) fn skip_validation_retry(&self) {
        self.shared
            .skip_validation_retry
            .store(true, Ordering::Relaxed);
    }

    /// Takes a pending shrink request, if any (only without a refresh task).
    pub(crate) fn try_take_shrink_request(&self) -> Option<Duration> {
        self.idle_shrink_rx
            .lock()
            .unwrap()
            .as_mut()
            .and_then(|rx| rx.try_recv().ok())
    }
}

#[cfg(test)]
mod last_ts_tests {
    use super::*;

    // client-go pd_test.go TestNonFutureStaleTSO: a stale timestamp estimated while the last
    // timestamp is being pushed concurrently never lands in the future. Each pushed pair keeps
    // `physical - arrival` constant, so any torn read (a new timestamp with an older arrival)
    // would show up as an estimate above the bound.
    #[test]
    fn stale_timestamp_never_in_future_under_concurrent_pushes() {
        const BASE_MS: u64 = 1_700_000_000_000;
        const STEPS: u64 = 20_000;
        let epoch = Instant::now();
        let last = LastTs::new(epoch);
        last.push(Timestamp::compose(BASE_MS, 0), epoch);
        let at = |k: u64| epoch + Duration::from_millis(k);
        let now = at(STEPS + 1_000);
        let bound = Timestamp::compose(BASE_MS + STEPS + 1_000, 0);
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for k in 1..=STEPS {
                    last.push(Timestamp::compose(BASE_MS + k, 0), at(k));
                }
                done.store(true, Ordering::SeqCst);
            });
            s.spawn(|| {
                let mut checks = 0u64;
                while !done.load(Ordering::SeqCst) || checks == 0 {
                    let pair = last.get().unwrap();
                    let stale = stale_timestamp(pair, 0, now).unwrap();
                    assert!(stale <= bound, "{stale:?} > {bound:?}");
                    checks += 1;
                }
            });
        });
        assert_eq!(last.ts(), Some(Timestamp::compose(BASE_MS + STEPS, 0)));
    }

    #[test]
    fn push_never_goes_back_and_keeps_latest_arrival() {
        let epoch = Instant::now();
        let last = LastTs::new(epoch);
        assert!(last.get().is_none());
        let late = epoch + Duration::from_secs(5);
        last.push(Timestamp::from_version(10), late);
        last.push(Timestamp::from_version(9), epoch + Duration::from_secs(9));
        assert_eq!(last.get(), Some((Timestamp::from_version(10), late)));
        // A higher timestamp that arrived "earlier" (a slow fetch) keeps the later arrival.
        last.push(Timestamp::from_version(11), epoch + Duration::from_secs(1));
        assert_eq!(last.get(), Some((Timestamp::from_version(11), late)));
    }

    #[test]
    fn read_ts_range_checks() {
        assert!(check_read_ts_range(Timestamp::from_version(5), true).is_none());
        assert!(matches!(
            check_read_ts_range(Timestamp::MAX, false),
            Some(Ok(()))
        ));
        assert!(matches!(
            check_read_ts_range(Timestamp::MAX, true),
            Some(Err(Error::LatestStaleRead))
        ));
        for v in [i64::MAX as u64, u64::MAX - 1] {
            let err = check_read_ts_range(Timestamp::from_version(v), false)
                .unwrap()
                .unwrap_err();
            assert!(
                err.to_string().contains("MaxInt64 <= readTS < MaxUint64"),
                "{err}"
            );
        }
    }
}
