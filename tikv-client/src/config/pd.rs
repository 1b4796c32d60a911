//! The `[pd-client]` section: PD call deadline, follower-handled region reads, the router
//! client, and the region-meta circuit breaker.
//!
//! Who calls it: [`Config`](super::Config) holds a [`PdClientConfig`]; `crate::pd::PdClient`
//! reads it when connecting (and takes [`CircuitBreakerSettings`] again at run time through
//! `PdClient::change_region_meta_circuit_breaker_settings`).
//!
//! Ports client-go `config/client.go` (`PDClient.PDServerTimeout`) and, for the knobs client-go
//! leaves at the PD client's defaults, tikv/pd `client/opt/option.go` (`EnableFollowerHandle`,
//! `EnableRouterClient`) and `client/pkg/circuitbreaker/circuit_breaker.go` (`Settings`, with
//! the values client-go's `internal/locate/region_cache.go` gives its region-meta breaker). PD
//! forwarding through followers has no key here: as in client-go, the top-level
//! `enable-forwarding` turns it on together with TiKV forwarding.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::{self, check_go_range, check_whole_secs};
use crate::{Error, Result};

/// PD client settings (client-go `config.PDClient`, TOML table `[pd-client]`).
///
/// ```
/// use tikv_client::config::PdClientConfig;
/// let pd = PdClientConfig::default().with_follower_handle(true);
/// assert!(pd.enable_follower_handle);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct PdClientConfig {
    /// How long the PD client waits for a PD server (`PDServerTimeout`, integer seconds,
    /// default 3s). Must be > 0.
    #[serde(with = "duration::secs")]
    pub pd_server_timeout: Duration,
    /// Let PD followers answer region reads (PD's `EnableFollowerHandle`, default false). Reads
    /// that the region cache allows to go to a follower (locating a key, scans) are then spread
    /// over every healthy PD member with `pd-allow-follower-handle`; a follower's failure is
    /// retried on the leader. A follower may be slightly behind the leader.
    pub enable_follower_handle: bool,
    /// Batch concurrent region lookups (by key, previous key and id) onto one `QueryRegion`
    /// stream (PD's `EnableRouterClient`, default true as in PD's client). Off, each lookup is
    /// its own unary call.
    pub enable_router_client: bool,
    /// The breaker on region metadata calls (`GetRegion`, `GetPrevRegion`, `GetRegionByID`,
    /// `ScanRegions`, `BatchScanRegions`; TOML table `[pd-client.region-meta-circuit-breaker]`).
    /// Off by default (`error-rate-threshold-pct = 0`), as in client-go.
    pub region_meta_circuit_breaker: CircuitBreakerSettings,
}

impl Default for PdClientConfig {
    fn default() -> Self {
        PdClientConfig {
            pd_server_timeout: Duration::from_secs(3),
            enable_follower_handle: false,
            enable_router_client: true,
            region_meta_circuit_breaker: CircuitBreakerSettings::default(),
        }
    }
}

impl PdClientConfig {
    pub(super) fn validate(&self) -> Result<()> {
        check_whole_secs("pd-client.pd-server-timeout", self.pd_server_timeout)?;
        if self.pd_server_timeout.is_zero() {
            return Err(Error::config(
                "pd-client.pd-server-timeout: must be at least 1 second",
            ));
        }
        self.region_meta_circuit_breaker
            .validate("pd-client.region-meta-circuit-breaker")
    }

    /// Lets PD followers answer region reads, or stops it.
    ///
    /// ```
    /// use tikv_client::config::PdClientConfig;
    /// assert!(PdClientConfig::default().with_follower_handle(true).enable_follower_handle);
    /// ```
    pub fn with_follower_handle(mut self, enabled: bool) -> Self {
        self.enable_follower_handle = enabled;
        self
    }

    /// Turns the batching router client on or off.
    ///
    /// ```
    /// use tikv_client::config::PdClientConfig;
    /// assert!(PdClientConfig::default().with_router_client(true).enable_router_client);
    /// ```
    pub fn with_router_client(mut self, enabled: bool) -> Self {
        self.enable_router_client = enabled;
        self
    }

    /// Sets the region-meta circuit breaker.
    ///
    /// ```
    /// use tikv_client::config::{CircuitBreakerSettings, PdClientConfig};
    /// let pd = PdClientConfig::default().with_region_meta_circuit_breaker(CircuitBreakerSettings::always_closed());
    /// assert!(!pd.region_meta_circuit_breaker.is_enabled());
    /// ```
    pub fn with_region_meta_circuit_breaker(mut self, settings: CircuitBreakerSettings) -> Self {
        self.region_meta_circuit_breaker = settings;
        self
    }
}

/// When a circuit breaker stops sending requests that are likely to fail (PD's
/// `circuitbreaker.Settings`).
///
/// The breaker counts requests in windows of `error-rate-window`. At the end of a window in
/// which at least `min-qps-for-open` requests per second were made and at least
/// `error-rate-threshold-pct` percent of them found PD overloaded (deadline exceeded,
/// unavailable, resource exhausted), it opens: requests fail at once with
/// [`Error::PdCircuitBreakerOpen`](crate::Error::PdCircuitBreakerOpen) for `cool-down-interval`.
/// Then it half-opens: up to `half-open-success-count` probe requests go through; if they all
/// succeed it closes, if any fails it opens again.
///
/// ```
/// use std::time::Duration;
/// use tikv_client::config::CircuitBreakerSettings;
///
/// let settings = CircuitBreakerSettings::default()
///     .with_error_rate_threshold_pct(50)
///     .with_cool_down_interval(Duration::from_secs(5));
/// assert_eq!(settings.min_qps_for_open, 10);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct CircuitBreakerSettings {
    /// Percentage of overloaded requests in a window that opens the breaker
    /// (`ErrorRateThresholdPct`, 0 to 100, default 0 = never open).
    pub error_rate_threshold_pct: u32,
    /// Requests per second, averaged over the window, below which the error rate is not
    /// judged (`MinQPSForOpen`, default 10).
    pub min_qps_for_open: u32,
    /// How long requests are counted before the error rate is judged (`ErrorRateWindow`, Go
    /// `time.Duration`: duration string or integer nanoseconds, default 30s). Only whole seconds
    /// count towards the request minimum, as in PD.
    #[serde(with = "duration::go_duration")]
    pub error_rate_window: Duration,
    /// How long an open breaker fails requests before it lets probes through
    /// (`CoolDownInterval`, Go `time.Duration`, default 10s).
    #[serde(with = "duration::go_duration")]
    pub cool_down_interval: Duration,
    /// Probe requests that must all succeed before a half-open breaker closes
    /// (`HalfOpenSuccessCount`, default 1). Must be > 0.
    pub half_open_success_count: u32,
}

impl Default for CircuitBreakerSettings {
    /// client-go's region-meta breaker: off, with PD's other defaults ready for when a
    /// threshold is set.
    fn default() -> Self {
        CircuitBreakerSettings {
            error_rate_threshold_pct: 0,
            min_qps_for_open: 10,
            error_rate_window: Duration::from_secs(30),
            cool_down_interval: Duration::from_secs(10),
            half_open_success_count: 1,
        }
    }
}

impl CircuitBreakerSettings {
    /// PD's `AlwaysClosedSettings`: a breaker that never opens.
    ///
    /// ```
    /// use tikv_client::config::CircuitBreakerSettings;
    /// assert!(!CircuitBreakerSettings::always_closed().is_enabled());
    /// ```
    pub fn always_closed() -> Self {
        CircuitBreakerSettings {
            error_rate_threshold_pct: 0,
            min_qps_for_open: 10,
            error_rate_window: Duration::from_secs(10),
            cool_down_interval: Duration::from_secs(10),
            half_open_success_count: 1,
        }
    }

    /// Whether the breaker can open at all (a threshold is set).
    ///
    /// ```
    /// use tikv_client::config::CircuitBreakerSettings;
    /// let on = CircuitBreakerSettings::always_closed().with_error_rate_threshold_pct(50);
    /// assert!(on.is_enabled());
    /// ```
    pub fn is_enabled(&self) -> bool {
        self.error_rate_threshold_pct > 0
    }

    /// Sets the error-rate threshold (percent; 0 turns the breaker off).
    ///
    /// ```
    /// use tikv_client::config::CircuitBreakerSettings;
    /// let s = CircuitBreakerSettings::always_closed().with_error_rate_threshold_pct(30);
    /// assert_eq!(s.error_rate_threshold_pct, 30);
    /// ```
    pub fn with_error_rate_threshold_pct(mut self, pct: u32) -> Self {
        self.error_rate_threshold_pct = pct;
        self
    }

    /// Sets the minimum average request rate for the error rate to be judged.
    ///
    /// ```
    /// use tikv_client::config::CircuitBreakerSettings;
    /// let s = CircuitBreakerSettings::always_closed().with_min_qps_for_open(20);
    /// assert_eq!(s.min_qps_for_open, 20);
    /// ```
    pub fn with_min_qps_for_open(mut self, qps: u32) -> Self {
        self.min_qps_for_open = qps;
        self
    }

    /// Sets the counting window.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tikv_client::config::CircuitBreakerSettings;
    /// let s = CircuitBreakerSettings::always_closed().with_error_rate_window(Duration::from_secs(10));
    /// assert_eq!(s.error_rate_window, Duration::from_secs(10));
    /// ```
    pub fn with_error_rate_window(mut self, window: Duration) -> Self {
        self.error_rate_window = window;
        self
    }

    /// Sets how long an open breaker waits before letting probes through.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tikv_client::config::CircuitBreakerSettings;
    /// let s = CircuitBreakerSettings::always_closed().with_cool_down_interval(Duration::from_secs(5));
    /// assert_eq!(s.cool_down_interval, Duration::from_secs(5));
    /// ```
    pub fn with_cool_down_interval(mut self, interval: Duration) -> Self {
        self.cool_down_interval = interval;
        self
    }

    /// Sets how many probes must succeed to close a half-open breaker.
    ///
    /// ```
    /// use tikv_client::config::CircuitBreakerSettings;
    /// let s = CircuitBreakerSettings::always_closed().with_half_open_success_count(3);
    /// assert_eq!(s.half_open_success_count, 3);
    /// ```
    pub fn with_half_open_success_count(mut self, count: u32) -> Self {
        self.half_open_success_count = count;
        self
    }

    /// Checks the ranges; `section` names the TOML table in errors.
    pub(crate) fn validate(&self, section: &str) -> Result<()> {
        if self.error_rate_threshold_pct > 100 {
            return Err(Error::config(format!(
                "{section}.error-rate-threshold-pct: must be a percentage from 0 to 100, got {}",
                self.error_rate_threshold_pct
            )));
        }
        if self.half_open_success_count == 0 {
            return Err(Error::config(format!(
                "{section}.half-open-success-count: must be greater than 0"
            )));
        }
        check_go_range(
            &format!("{section}.error-rate-window"),
            self.error_rate_window,
        )?;
        check_go_range(
            &format!("{section}.cool-down-interval"),
            self.cool_down_interval,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn defaults_match_pd_client_and_client_go() {
        let c = PdClientConfig::default();
        assert_eq!(c.pd_server_timeout, Duration::from_secs(3));
        assert!(!c.enable_follower_handle);
        assert!(c.enable_router_client);
        let cb = &c.region_meta_circuit_breaker;
        assert!(!cb.is_enabled());
        assert_eq!(cb.min_qps_for_open, 10);
        assert_eq!(cb.error_rate_window, Duration::from_secs(30));
        assert_eq!(cb.cool_down_interval, Duration::from_secs(10));
        assert_eq!(cb.half_open_success_count, 1);
        assert!(!CircuitBreakerSettings::always_closed().is_enabled());
    }

    #[test]
    fn pd_section_loads_and_round_trips() {
        let config = Config::from_toml_str(
            "enable-forwarding = true\n\
             [pd-client]\n\
             pd-server-timeout = 5\n\
             enable-follower-handle = true\n\
             enable-router-client = false\n\
             [pd-client.region-meta-circuit-breaker]\n\
             error-rate-threshold-pct = 60\n\
             min-qps-for-open = 20\n\
             error-rate-window = \"1m\"\n\
             cool-down-interval = 2000000000\n\
             half-open-success-count = 3\n",
        )
        .unwrap();
        let expected = PdClientConfig {
            pd_server_timeout: Duration::from_secs(5),
            ..PdClientConfig::default()
        }
        .with_follower_handle(true)
        .with_router_client(false)
        .with_region_meta_circuit_breaker(
            CircuitBreakerSettings::default()
                .with_error_rate_threshold_pct(60)
                .with_min_qps_for_open(20)
                .with_error_rate_window(Duration::from_secs(60))
                .with_cool_down_interval(Duration::from_secs(2))
                .with_half_open_success_count(3),
        );
        assert_eq!(config.pd_client, expected);
        assert!(config.enable_forwarding);
        let text = config.to_toml_string().unwrap();
        assert!(text.contains("error-rate-window = \"1m0s\""), "{text}");
        assert_eq!(Config::from_toml_str(&text).unwrap(), config);
    }

    #[test]
    fn bad_breaker_settings_are_refused() {
        for (toml, expected) in [
            (
                "[pd-client.region-meta-circuit-breaker]\nerror-rate-threshold-pct = 101\n",
                "pd-client.region-meta-circuit-breaker.error-rate-threshold-pct",
            ),
            (
                "[pd-client.region-meta-circuit-breaker]\nhalf-open-success-count = 0\n",
                "half-open-success-count: must be greater than 0",
            ),
            (
                "[pd-client.region-meta-circuit-breaker]\nerror-rate-window = \"-1s\"\n",
                "error-rate-window",
            ),
            (
                "[pd-client.region-meta-circuit-breaker]\nno-such-knob = 1\n",
                "unknown field `no-such-knob`",
            ),
        ] {
            let err = Config::from_toml_str(toml).unwrap_err().to_string();
            assert!(err.contains(expected), "{toml:?}: {err}");
        }
    }
}
