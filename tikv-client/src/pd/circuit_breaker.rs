//! The circuit breaker on region metadata calls: when PD looks overloaded, fail those calls at
//! once instead of piling more onto it.
//!
//! Who calls it: [`super::client`] asks [`CircuitBreaker::admit`] before every region-meta
//! attempt it sends (unary calls, and each region lookup handed to the router) and reports the
//! outcome with [`CircuitBreaker::record`]; `PdClient::change_region_meta_circuit_breaker_settings`
//! changes the settings at run time.
//!
//! Ports tikv/pd `client/pkg/circuitbreaker/circuit_breaker.go` (the state machine of TiKV RFC
//! 115: closed for a window, judged at the first request after it; open for the cool-down;
//! half-open for a fixed number of probes) and the overload rule of
//! `client/pkg/utils/grpcutil/grpcutil.go` (`isOverloaded`: DEADLINE_EXCEEDED, UNAVAILABLE,
//! RESOURCE_EXHAUSTED), as client-go's `region-meta` breaker in `internal/locate/region_cache.go`
//! uses it. Every transition happens when a request asks to be admitted, as in PD, so a breaker
//! nobody calls costs nothing. A result counts only in the state that admitted its request: PD
//! keeps a pointer to that state, here a generation number does the same.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::Error;
use crate::config::CircuitBreakerSettings;
use crate::error::GrpcCode;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitBreakerState {
    /// Requests go through; errors are being counted.
    Closed,
    /// Requests fail at once until the cool-down ends.
    Open,
    /// A few probe requests go through; the rest fail at once.
    HalfOpen,
}

/// The time source: tokio's clock (pausable in tests) unless a test installs another.
pub(crate) type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Counts of the current state.
#[derive(Debug, Clone)]
struct State {
    kind: CircuitBreakerState,
    /// Closed: end of the counting window. Open: end of the cool-down. Half-open: unused.
    end: Instant,
    pending: u32,
    successes: u32,
    failures: u32,
    /// Distinguishes this state from the ones before it, for results that come back late.
    generation: u64,
}

struct Inner {
    settings: CircuitBreakerSettings,
    state: State,
    clock: Clock,
}

/// A circuit breaker (PD's `CircuitBreaker`).
pub(crate) struct CircuitBreaker {
    name: &'static str,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("settings", &inner.settings)
            .field("state", &inner.state.kind)
            .finish()
    }
}

/// A request the breaker let through; hand it back with the outcome.
#[derive(Debug, Clone, Copy)]
#[must_use = "report the outcome with CircuitBreaker::record"]
pub(crate) struct Admission {
    /// `None` when the breaker was off: nothing is counted.
    generation: Option<u64>,
}

impl CircuitBreaker {
    pub(crate) fn new(name: &'static str, settings: CircuitBreakerSettings) -> Self {
        Self::with_clock(name, settings, Arc::new(Instant::now))
    }

    pub(crate) fn with_clock(
        name: &'static str,
        settings: CircuitBreakerSettings,
        clock: Clock,
    ) -> Self {
        let now = clock();
        let state = State {
            kind: CircuitBreakerState::Closed,
            end: now + settings.error_rate_window,
            pending: 0,
            successes: 0,
            failures: 0,
            generation: 0,
        };
        CircuitBreaker {
            name,
            inner: Mutex::new(Inner {
                settings,
                state,
                clock,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the time source (tests).
    #[cfg(test)]
    pub(crate) fn set_clock(&self, clock: Clock) {
        self.lock().clock = clock;
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Changes the settings; a new window or cool-down uses them, as in PD.
    pub(crate) fn change_settings(&self, apply: impl FnOnce(&mut CircuitBreakerSettings)) {
        apply(&mut self.lock().settings);
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn settings(&self) -> CircuitBreakerSettings {
        self.lock().settings.clone()
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn state(&self) -> CircuitBreakerState {
        self.lock().state.kind
    }

    /// Lets a request through, or fails it with [`Error::PdCircuitBreakerOpen`]. A breaker
    /// without a threshold lets everything through without counting (PD's interceptor skips a
    /// disabled breaker).
    pub(crate) fn admit(&self) -> Result<Admission, Error> {
        let mut inner = self.lock();
        if !inner.settings.is_enabled() {
            return Ok(Admission { generation: None });
        }
        let now = (inner.clock)();
        let open = match inner.state.kind {
            CircuitBreakerState::Closed => {
                if now > inner.state.end {
                    let trip = should_trip(&inner.settings, &inner.state);
                    if trip {
                        tracing::error!(
                            name = self.name,
                            "circuit breaker tripped and starting to fail all requests"
                        );
                        inner.transition(now, CircuitBreakerState::Open);
                    } else {
                        inner.transition(now, CircuitBreakerState::Closed);
                    }
                    trip
                } else {
                    false
                }
            }
            CircuitBreakerState::Open => {
                if now > inner.state.end {
                    tracing::info!(
                        name = self.name,
                        "circuit breaker cooldown period is over; half-open to test the service"
                    );
                    inner.transition(now, CircuitBreakerState::HalfOpen);
                    false
                } else {
                    true
                }
            }
            CircuitBreakerState::HalfOpen => {
                let probes = inner.settings.half_open_success_count;
                if inner.state.failures > 0 {
                    tracing::error!(
                        name = self.name,
                        "circuit breaker opens again: errors persist in half-open state"
                    );
                    inner.transition(now, CircuitBreakerState::Open);
                    true
                } else if inner.state.successes == probes {
                    tracing::info!(name = self.name, "circuit breaker is closed");
                    inner.transition(now, CircuitBreakerState::Closed);
                    false
                } else if inner.state.pending < probes {
                    inner.state.pending += 1;
                    false
                } else {
                    true
                }
            }
        };
        if open {
            return Err(Error::PdCircuitBreakerOpen {
                name: self.name.to_owned(),
            });
        }
        Ok(Admission {
            generation: Some(inner.state.generation),
        })
    }

    /// Reports how an admitted request went: `overloaded` when PD looked overloaded.
    pub(crate) fn record(&self, admission: Admission, overloaded: bool) {
        let Some(generation) = admission.generation else {
            return;
        };
        let mut inner = self.lock();
        if inner.state.generation != generation {
            return;
        }
        if overloaded {
            inner.state.failures += 1;
        } else {
            inner.state.successes += 1;
        }
    }

    #[cfg(test)]
    fn counts(&self) -> (u32, u32) {
        let inner = self.lock();
        (inner.state.successes, inner.state.failures)
    }
}

impl Inner {
    /// PD's `newState`: fresh counts; a closed state counts for a window, an open one waits out
    /// the cool-down, a half-open one starts with the probe that caused the transition.
    fn transition(&mut self, now: Instant, kind: CircuitBreakerState) {
        let (end, pending) = match kind {
            CircuitBreakerState::Closed => (now + self.settings.error_rate_window, 0),
            CircuitBreakerState::Open => (now + self.settings.cool_down_interval, 0),
            CircuitBreakerState::HalfOpen => (now, 1),
        };
        self.state = State {
            kind,
            end,
            pending,
            successes: 0,
            failures: 0,
            generation: self.state.generation + 1,
        };
    }

    #[cfg(test)]
    fn advance(&mut self, by: std::time::Duration) {
        // As PD's test helper: move the state's end into the past instead of the clock forward.
        self.state.end = self
            .state
            .end
            .checked_sub(by + std::time::Duration::from_nanos(1))
            .unwrap_or(self.state.end);
    }
}

/// Whether a window's counts open the breaker: enough requests (the window's whole seconds
/// times the minimum rate) and an error rate at the threshold.
fn should_trip(settings: &CircuitBreakerSettings, state: &State) -> bool {
    let total = state.failures.saturating_add(state.successes);
    if total == 0 {
        return false;
    }
    let observed_pct = u64::from(state.failures) * 100 / u64::from(total);
    let window_secs = u32::try_from(settings.error_rate_window.as_secs()).unwrap_or(u32::MAX);
    let min_total = window_secs.saturating_mul(settings.min_qps_for_open);
    total >= min_total && observed_pct >= u64::from(settings.error_rate_threshold_pct)
}

/// PD's `isOverloaded` on a gRPC status: DEADLINE_EXCEEDED, UNAVAILABLE, RESOURCE_EXHAUSTED.
pub(crate) fn status_overloaded(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::DeadlineExceeded | tonic::Code::Unavailable | tonic::Code::ResourceExhausted
    )
}

/// PD's `isOverloaded` on one of our errors: the gRPC codes that mean the server is
/// struggling. Our own deadline (`PdServerTimeout`) and unreachable members count too.
pub(crate) fn is_overloaded(error: &Error) -> bool {
    match error {
        Error::Grpc { code, .. } => matches!(
            code,
            GrpcCode::DeadlineExceeded | GrpcCode::Unavailable | GrpcCode::ResourceExhausted
        ),
        Error::PdServerTimeout { .. } | Error::Connect { .. } | Error::Timeout { .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    //! Ports tikv/pd `client/pkg/circuitbreaker/circuit_breaker_test.go` case by case (names in
    //! the comments). Time moves as in PD's test: by pulling the state's end into the past.

    use std::time::Duration;

    use super::*;

    fn settings() -> CircuitBreakerSettings {
        CircuitBreakerSettings::default()
            .with_error_rate_threshold_pct(50)
            .with_min_qps_for_open(10)
            .with_error_rate_window(Duration::from_secs(30))
            .with_cool_down_interval(Duration::from_secs(10))
            .with_half_open_success_count(2)
    }

    const MIN_COUNT_TO_OPEN: usize = 10 * 30;

    fn advance(cb: &CircuitBreaker, by: Duration) {
        cb.lock().advance(by);
    }

    fn drive(cb: &CircuitBreaker, count: usize, overloaded: bool) {
        for _ in 0..count {
            let admitted = cb.admit().expect("admitted");
            cb.record(admitted, overloaded);
        }
    }

    fn assert_fast_fail(cb: &CircuitBreaker) {
        match cb.admit() {
            Err(Error::PdCircuitBreakerOpen { name }) => assert_eq!(name, "test_cb"),
            other => panic!("expected a fast failure, got {other:?}"),
        }
    }

    fn assert_succeeds(cb: &CircuitBreaker) {
        let admitted = cb.admit().expect("admitted");
        cb.record(admitted, false);
    }

    fn moved_to_half_open() -> CircuitBreaker {
        let cb = CircuitBreaker::new("test_cb", settings());
        drive(&cb, MIN_COUNT_TO_OPEN, true);
        advance(&cb, settings().error_rate_window);
        assert_fast_fail(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::Open);
        advance(&cb, settings().cool_down_interval);
        cb
    }

    #[test]
    fn results_pass_through_and_only_admission_fails_typed() {
        // TestCircuitBreakerExecuteWrapperReturnValues: the breaker never turns a call's own
        // result into something else. Here it does not see results at all beyond the overload
        // flag, so a failed call is still admitted next time within the window; the only error
        // it makes is its own, typed and retryable.
        let cb = CircuitBreaker::new("test_cb", settings());
        let first = cb.admit().unwrap();
        cb.record(first, false);
        let second = cb.admit().unwrap();
        cb.record(second, true);
        assert!(cb.admit().is_ok());
        let e = Error::PdCircuitBreakerOpen {
            name: "region-meta".to_owned(),
        };
        assert!(e.is_retryable());
        assert!(!e.is_undetermined());
        assert!(e.to_string().contains("circuit breaker is open"), "{e}");
    }

    #[test]
    fn opens_after_a_bad_window() {
        // TestCircuitBreakerOpenState
        let cb = CircuitBreaker::new("test_cb", settings());
        drive(&cb, MIN_COUNT_TO_OPEN, true);
        assert_eq!(cb.state(), CircuitBreakerState::Closed);
        assert_succeeds(&cb); // no judgement before the window ends
        advance(&cb, settings().error_rate_window);
        assert_fast_fail(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::Open);
    }

    #[test]
    fn stays_closed_without_enough_requests() {
        // TestCircuitBreakerCloseStateNotEnoughQPS
        let cb = CircuitBreaker::new("test_cb", settings());
        drive(&cb, MIN_COUNT_TO_OPEN / 2, true);
        advance(&cb, settings().error_rate_window);
        assert_succeeds(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::Closed);
    }

    #[test]
    fn stays_closed_below_the_error_rate() {
        // TestCircuitBreakerCloseStateNotEnoughErrorRate
        let cb = CircuitBreaker::new("test_cb", settings());
        drive(&cb, MIN_COUNT_TO_OPEN / 4, true);
        drive(&cb, MIN_COUNT_TO_OPEN, false);
        advance(&cb, settings().error_rate_window);
        assert_succeeds(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::Closed);
    }

    #[test]
    fn half_open_closes_after_enough_probes() {
        // TestCircuitBreakerHalfOpenToClosed
        let cb = moved_to_half_open();
        assert_succeeds(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::HalfOpen);
        assert_succeeds(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::HalfOpen);
        // The state moves only when the next request asks.
        assert_succeeds(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::Closed);
    }

    #[test]
    fn half_open_reopens_on_a_failed_probe() {
        // TestCircuitBreakerHalfOpenToOpen
        let cb = moved_to_half_open();
        assert_succeeds(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::HalfOpen);
        let probe = cb.admit().unwrap();
        cb.record(probe, true);
        assert_eq!(cb.state(), CircuitBreakerState::HalfOpen);
        assert_fast_fail(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::Open);
    }

    #[test]
    fn half_open_admits_only_the_probes() {
        // TestCircuitBreakerHalfOpenFailOverPendingCount
        let cb = moved_to_half_open();
        let probes: Vec<Admission> = (0..settings().half_open_success_count)
            .map(|_| cb.admit().expect("probe admitted"))
            .collect();
        assert_fast_fail(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::HalfOpen);
        for probe in probes {
            cb.record(probe, false);
        }
        assert_succeeds(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::Closed);
        assert_eq!(cb.counts(), (1, 0), "counters start over in the new state");
    }

    #[test]
    fn results_count_only_in_the_window_that_admitted_them() {
        // TestCircuitBreakerCountOnlyRequestsInSameWindow
        let cb = CircuitBreaker::new("test_cb", settings());
        let in_flight = cb.admit().unwrap();
        assert_eq!(cb.counts(), (0, 0));
        advance(&cb, settings().error_rate_window);
        assert_succeeds(&cb);
        assert_eq!(cb.counts(), (1, 0));
        cb.record(in_flight, false);
        assert_eq!(cb.counts(), (1, 0));
    }

    #[test]
    fn settings_change_takes_effect() {
        // TestCircuitBreakerChangeSettings
        let closed = CircuitBreakerSettings::always_closed();
        let cb = CircuitBreaker::new("test_cb", closed.clone());
        drive(&cb, 10 * 10, true);
        advance(&cb, closed.error_rate_window);
        assert_succeeds(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::Closed);

        cb.change_settings(|s| s.error_rate_threshold_pct = 50);
        assert_eq!(cb.settings().error_rate_threshold_pct, 50);
        drive(&cb, MIN_COUNT_TO_OPEN, true);
        advance(&cb, settings().error_rate_window);
        assert_fast_fail(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::Open);

        // Turning it off closes it at the next request.
        cb.change_settings(|s| *s = CircuitBreakerSettings::always_closed());
        assert_succeeds(&cb);
    }

    #[test]
    fn enabled_follows_the_threshold() {
        // TestCircuitBreakerEnabled
        let cb = CircuitBreaker::new("test_cb", CircuitBreakerSettings::always_closed());
        assert!(!cb.settings().is_enabled());
        cb.change_settings(|s| s.error_rate_threshold_pct = 50);
        assert!(cb.settings().is_enabled());
    }

    #[tokio::test(start_paused = true)]
    async fn half_opens_when_the_cool_down_passes_on_the_clock() {
        // The same machine on tokio's paused clock: no state poking, time really passes.
        let s = settings()
            .with_error_rate_window(Duration::from_secs(1))
            .with_min_qps_for_open(1)
            .with_half_open_success_count(1);
        let cb = CircuitBreaker::new("test_cb", s.clone());
        drive(&cb, 2, true);
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_fast_fail(&cb);
        tokio::time::advance(s.cool_down_interval).await;
        assert_fast_fail(&cb);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_succeeds(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::HalfOpen);
        assert_succeeds(&cb);
        assert_eq!(cb.state(), CircuitBreakerState::Closed);
    }

    #[test]
    fn overload_classification_follows_pd() {
        let grpc = |code| Error::Grpc {
            address: "pd".to_owned(),
            code,
            message: String::new(),
            source: None,
        };
        assert!(is_overloaded(&grpc(GrpcCode::ResourceExhausted)));
        assert!(is_overloaded(&grpc(GrpcCode::Unavailable)));
        assert!(is_overloaded(&grpc(GrpcCode::DeadlineExceeded)));
        assert!(!is_overloaded(&grpc(GrpcCode::InvalidArgument)));
        assert!(!is_overloaded(&Error::Pd {
            message: "region not found".to_owned()
        }));
        assert!(is_overloaded(&Error::PdServerTimeout {
            message: String::new()
        }));
    }
}
