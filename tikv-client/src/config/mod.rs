//! Client configuration: every tunable of the client in one value, loadable from TOML.
//!
//! This module owns [`Config`] and its sections ([`TikvClientConfig`], [`PdClientConfig`] with
//! [`CircuitBreakerSettings`], [`PessimisticTxnConfig`], [`TxnLocalLatchesConfig`], [`AsyncCommitConfig`], [`RuV2Config`],
//! [`BatchPolicy`]), the TLS settings in [`Security`], the `tikv://` URI parser
//! ([`TikvPath`]), and [`ApiVersion`], the key format both clients share. It holds data and checks it; it does no I/O beyond reading the files it is
//! pointed at.
//!
//! Who calls it: applications build a [`Config`] (defaults, `with_*` builders, or a TOML file)
//! and hand it to a client builder; the transport, PD client, region cache and transaction
//! layers read their sections from it. There is no global configuration (client-go has
//! `GetGlobalConfig`/`UpdateGlobal`): each client owns the `Config` it was built with.
//!
//! Ports client-go `config/config.go`, `config/client.go` and `config/security.go`. Defaults
//! equal client-go's `DefaultConfig()`, and TOML keys are client-go's `toml` tags (kebab-case),
//! so a `[tikv-client]` or `[security]` section written for client-go loads unchanged.
//! `raw-fan-out-concurrency` is this crate's own key. Every setting is either read by the
//! client or documented as "not used yet" (mostly the transactional client's, not written
//! yet); a cluster logs a warning for each such setting that differs from its default when
//! it connects ([`Config::unused_settings`]). Knobs
//! client-go keeps only for old clusters (`TxnScope`, `EnableReplicaSelectorV2`) and its
//! TiDB-only coprocessor settings are not ported; a file that sets them gets an error that says
//! so, rather than a silent no-op.
//!
//! ```
//! use std::time::Duration;
//! use tikv_client::Config;
//! use tikv_client::config::TikvClientConfig;
//!
//! let config = Config::from_toml_str(
//!     r#"
//!     enable-async-commit = true
//!     [tikv-client]
//!     grpc-connection-count = 8
//!     commit-timeout = "30s"
//!     "#,
//! )?;
//! assert_eq!(config.tikv_client.commit_timeout, Duration::from_secs(30));
//!
//! let built = Config::default()
//!     .with_async_commit(true)
//!     .with_tikv_client(
//!         TikvClientConfig::default()
//!             .with_grpc_connection_count(8)
//!             .with_commit_timeout(Duration::from_secs(30)),
//!     );
//! assert_eq!(built, config);
//! # Ok::<(), tikv_client::Error>(())
//! ```
//!
//! # Durations in TOML
//!
//! Every duration is a [`Duration`] in Rust. In TOML each one keeps the form its client-go field
//! has, so files are interchangeable: integer seconds for Go `uint` seconds (for example
//! `region-cache-ttl = 600`), integer milliseconds for `max-txn-ttl`, float seconds for
//! `grpc-keepalive-timeout`, a Go duration string for Go `string` fields
//! (`commit-timeout = "41s"`), and for Go `time.Duration` fields either a Go duration string or
//! an integer of nanoseconds (`safe-window = "2s"` or `2000000000`). Each field's doc states its
//! form.

mod batch_policy;
mod client;
mod duration;
mod path;
mod pd;
mod security;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use batch_policy::{BatchPolicy, BatchTrigger, BatchTriggerOptions};
pub use client::{AsyncCommitConfig, GrpcCompression, RuV2Config, TikvClientConfig};
use duration::{check_whole_millis, check_whole_secs};
pub use path::TikvPath;
pub use pd::{CircuitBreakerSettings, PdClientConfig};
pub use security::{Security, TlsMaterial};

use crate::{Error, Result};

/// Everything a client can be tuned with (client-go `config.Config`).
///
/// Build it from [`Config::default`] with the `with_*` methods, set the public fields, or load
/// a TOML file with [`Config::from_toml_file`]. Loading checks the result with
/// [`Config::validate`]; call it yourself after changing fields by hand.
///
/// client-go's `Config` has no `toml` tags of its own; its top-level keys are the kebab-case
/// form of the Go field names (as TiDB, client-go's main user, spells them).
///
/// ```
/// use tikv_client::Config;
/// let config = Config::default().with_forwarding(true);
/// assert!(config.enable_forwarding);
/// config.validate()?;
/// # Ok::<(), tikv_client::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Most prewrite/commit batches a transaction sends at once (`CommitterConcurrency`,
    /// default 128). Must be > 0. Not used yet (the transactional client is not written):
    /// setting it logs a warning when a cluster connects.
    pub committer_concurrency: usize,
    /// Most region requests one raw batch or fan-out call has in flight at once (TOML
    /// `raw-fan-out-concurrency`, default 128; not a client-go field: client-go sends a raw
    /// batch's regions all at once). Must be > 0.
    pub raw_fan_out_concurrency: usize,
    /// The longest a transaction's primary lock is kept alive (`MaxTxnTTL`, integer
    /// milliseconds, default 1 hour). Not used yet: setting it logs a warning when a cluster
    /// connects.
    #[serde(with = "duration::millis")]
    pub max_txn_ttl: Duration,
    /// How often store metadata is refreshed from PD (`StoresRefreshInterval`, integer seconds,
    /// default 60s). Must be > 0.
    #[serde(with = "duration::secs")]
    pub stores_refresh_interval: Duration,
    /// How often every cached region is reloaded from PD (`RegionsRefreshInterval`, integer
    /// seconds, default 0 = never).
    #[serde(with = "duration::secs")]
    pub regions_refresh_interval: Duration,
    /// Load all regions into the cache when the client starts (`EnablePreload`, default false).
    pub enable_preload: bool,
    /// Reach a store that the client cannot connect to through another store of the same region,
    /// and the PD leader through a PD follower (`EnableForwarding`, default false; client-go
    /// passes it to PD's client as `WithForwardingOption`).
    pub enable_forwarding: bool,
    /// Commit transactions asynchronously when they fit the
    /// [`AsyncCommitConfig`] limits (`EnableAsyncCommit`, default false). Not used yet:
    /// setting it logs a warning when a cluster connects.
    pub enable_async_commit: bool,
    /// Commit single-region transactions in one phase (`Enable1PC`, TOML `enable-1pc`, default
    /// false). Not used yet: setting it logs a warning when a cluster connects.
    pub enable_1pc: bool,
    /// Use the asynchronous batch-get path (`EnableAsyncBatchGet`, default false). client-go
    /// switches to a callback-driven batch get; this client's reads are asynchronous either
    /// way, and the snapshot layer decides what, if anything, the flag still changes. Not used
    /// yet: setting it logs a warning when a cluster connects.
    pub enable_async_batch_get: bool,
    /// The `zone` label of the machine this client runs on, used to tell same-zone from
    /// cross-zone traffic (`ZoneLabel`, default empty = unknown). Not used yet: setting it
    /// logs a warning when a cluster connects.
    pub zone_label: String,
    /// Propagate tracing context on every RPC (`OpenTracingEnable`, default false; client-go
    /// installs its OpenTracing gRPC interceptors). Not used yet: setting it logs a warning
    /// when a cluster connects.
    pub open_tracing_enable: bool,
    /// The `tikv://` URI this configuration was made for (`Path`, default empty); parse it with
    /// [`Config::parse_path`]. Not read by the client (connections take their PD endpoints
    /// from the builder): setting it logs a warning when a cluster connects.
    pub path: String,
    /// Connection and request settings for TiKV (`TiKVClient`, table `[tikv-client]`).
    pub tikv_client: TikvClientConfig,
    /// PD client settings (`PDClient`, table `[pd-client]`).
    pub pd_client: PdClientConfig,
    /// Pessimistic transaction settings (`PessimisticTxn`, table `[pessimistic-txn]`). Not
    /// used yet: setting them logs a warning when a cluster connects.
    pub pessimistic_txn: PessimisticTxnConfig,
    /// In-process latches (`TxnLocalLatches`, table `[txn-local-latches]`). Not used yet:
    /// setting them logs a warning when a cluster connects.
    pub txn_local_latches: TxnLocalLatchesConfig,
    /// TLS settings (`Security`, table `[security]`).
    pub security: Security,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            committer_concurrency: 128,
            raw_fan_out_concurrency: 128,
            max_txn_ttl: Duration::from_secs(60 * 60),
            stores_refresh_interval: Duration::from_secs(60),
            regions_refresh_interval: Duration::ZERO,
            enable_preload: false,
            enable_forwarding: false,
            enable_async_commit: false,
            enable_1pc: false,
            enable_async_batch_get: false,
            zone_label: String::new(),
            open_tracing_enable: false,
            path: String::new(),
            tikv_client: TikvClientConfig::default(),
            pd_client: PdClientConfig::default(),
            pessimistic_txn: PessimisticTxnConfig::default(),
            txn_local_latches: TxnLocalLatchesConfig::default(),
            security: Security::default(),
        }
    }
}

impl Config {
    /// Parses a TOML document and validates the result. Keys left out keep their defaults;
    /// unknown keys are errors.
    ///
    /// ```
    /// use tikv_client::Config;
    /// let config = Config::from_toml_str("enable-forwarding = true")?;
    /// assert!(config.enable_forwarding);
    /// # Ok::<(), tikv_client::Error>(())
    /// ```
    pub fn from_toml_str(toml: &str) -> Result<Config> {
        let config = parse_toml(toml).map_err(Error::config)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file, then validates the result.
    ///
    /// ```no_run
    /// let config = tikv_client::Config::from_toml_file("/etc/tikv-client.toml")?;
    /// # Ok::<(), tikv_client::Error>(())
    /// ```
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!(
                "cannot read configuration file {}: {e}",
                path.display()
            ))
        })?;
        let config =
            parse_toml(&text).map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    /// Writes the configuration as TOML, in the form [`Config::from_toml_str`] reads back.
    ///
    /// ```
    /// use tikv_client::Config;
    /// let text = Config::default().to_toml_string()?;
    /// assert_eq!(Config::from_toml_str(&text)?, Config::default());
    /// # Ok::<(), tikv_client::Error>(())
    /// ```
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::config(format!("cannot write TOML: {e}")))
    }

    /// Parses a `tikv://pd1:2379,pd2:2379?disableGC=true&keyspaceName=ks` URI (client-go
    /// `ParsePath`). See [`TikvPath::parse`].
    ///
    /// ```
    /// use tikv_client::Config;
    /// let path = Config::parse_path("tikv://pd1:2379,pd2:2379?keyspaceName=ks")?;
    /// assert_eq!(path.pd_endpoints, ["pd1:2379", "pd2:2379"]);
    /// # Ok::<(), tikv_client::Error>(())
    /// ```
    pub fn parse_path(path: &str) -> Result<TikvPath> {
        TikvPath::parse(path)
    }

    /// Checks every setting, as client-go's `Valid` methods do (`TiKVClient`, `PDClient`,
    /// `TxnLocalLatches`), plus the ranges this crate relies on: nonzero counts and intervals,
    /// durations that fit their TOML form, and TLS settings that fit together. The error names
    /// the TOML key, what is wrong, and what is accepted.
    ///
    /// ```
    /// use tikv_client::Config;
    /// let mut config = Config::default();
    /// config.raw_fan_out_concurrency = 0;
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.committer_concurrency == 0 {
            return Err(Error::config(
                "committer-concurrency: must be greater than 0",
            ));
        }
        if self.raw_fan_out_concurrency == 0 {
            return Err(Error::config(
                "raw-fan-out-concurrency: must be greater than 0",
            ));
        }
        check_whole_millis("max-txn-ttl", self.max_txn_ttl)?;
        if self.max_txn_ttl.is_zero() {
            return Err(Error::config("max-txn-ttl: must be at least 1 millisecond"));
        }
        check_whole_secs("stores-refresh-interval", self.stores_refresh_interval)?;
        if self.stores_refresh_interval.is_zero() {
            return Err(Error::config(
                "stores-refresh-interval: must be at least 1 second",
            ));
        }
        check_whole_secs("regions-refresh-interval", self.regions_refresh_interval)?;
        self.tikv_client.validate()?;
        self.pd_client.validate()?;
        self.txn_local_latches.validate()?;
        self.security.validate()
    }

    /// Sets the TLS settings.
    ///
    /// ```
    /// use tikv_client::{Config, Security};
    /// let config = Config::default().with_security(Security::default().with_ca("ca.pem"));
    /// assert!(config.security.is_enabled());
    /// ```
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// Sets the TiKV connection and request settings.
    ///
    /// ```
    /// use tikv_client::Config;
    /// use tikv_client::config::TikvClientConfig;
    /// let config = Config::default().with_tikv_client(TikvClientConfig::default().with_max_batch_size(0));
    /// assert_eq!(config.tikv_client.max_batch_size, 0);
    /// ```
    pub fn with_tikv_client(mut self, tikv_client: TikvClientConfig) -> Self {
        self.tikv_client = tikv_client;
        self
    }

    /// Sets how long the PD client waits for a PD server.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = tikv_client::Config::default().with_pd_server_timeout(Duration::from_secs(5));
    /// assert_eq!(config.pd_client.pd_server_timeout, Duration::from_secs(5));
    /// ```
    pub fn with_pd_server_timeout(mut self, timeout: Duration) -> Self {
        self.pd_client.pd_server_timeout = timeout;
        self
    }

    /// Sets how many prewrite/commit batches a transaction sends at once.
    ///
    /// ```
    /// let config = tikv_client::Config::default().with_committer_concurrency(64);
    /// assert_eq!(config.committer_concurrency, 64);
    /// ```
    pub fn with_committer_concurrency(mut self, concurrency: usize) -> Self {
        self.committer_concurrency = concurrency;
        self
    }

    /// Sets how many region requests one raw batch or fan-out call has in flight at once.
    ///
    /// ```
    /// let config = tikv_client::Config::default().with_raw_fan_out_concurrency(16);
    /// assert_eq!(config.raw_fan_out_concurrency, 16);
    /// ```
    pub fn with_raw_fan_out_concurrency(mut self, concurrency: usize) -> Self {
        self.raw_fan_out_concurrency = concurrency;
        self
    }

    /// The TOML keys of the settings this client does not use yet (they belong to parts not
    /// written, mostly the transactional client) that differ from their defaults. A cluster
    /// logs a warning for each when it connects; a setting that has no effect is never
    /// silent.
    ///
    /// ```
    /// use tikv_client::Config;
    /// let config = Config::default().with_async_commit(true).with_raw_fan_out_concurrency(8);
    /// assert_eq!(config.unused_settings(), ["enable-async-commit"]);
    /// assert!(Config::default().unused_settings().is_empty());
    /// ```
    pub fn unused_settings(&self) -> Vec<&'static str> {
        let default = Config::default();
        let (tikv, tikv_default) = (&self.tikv_client, &default.tikv_client);
        [
            (
                "committer-concurrency",
                self.committer_concurrency != default.committer_concurrency,
            ),
            ("max-txn-ttl", self.max_txn_ttl != default.max_txn_ttl),
            (
                "enable-async-commit",
                self.enable_async_commit != default.enable_async_commit,
            ),
            ("enable-1pc", self.enable_1pc != default.enable_1pc),
            (
                "enable-async-batch-get",
                self.enable_async_batch_get != default.enable_async_batch_get,
            ),
            ("zone-label", self.zone_label != default.zone_label),
            (
                "open-tracing-enable",
                self.open_tracing_enable != default.open_tracing_enable,
            ),
            ("path", self.path != default.path),
            (
                "pessimistic-txn",
                self.pessimistic_txn != default.pessimistic_txn,
            ),
            (
                "txn-local-latches",
                self.txn_local_latches != default.txn_local_latches,
            ),
            (
                "tikv-client.grpc-shared-buffer-pool",
                tikv.grpc_shared_buffer_pool != tikv_default.grpc_shared_buffer_pool,
            ),
            (
                "tikv-client.commit-timeout",
                tikv.commit_timeout != tikv_default.commit_timeout,
            ),
            (
                "tikv-client.ttl-refreshed-txn-size",
                tikv.ttl_refreshed_txn_size != tikv_default.ttl_refreshed_txn_size,
            ),
            (
                "tikv-client.resolve-lock-lite-threshold",
                tikv.resolve_lock_lite_threshold != tikv_default.resolve_lock_lite_threshold,
            ),
            (
                "tikv-client.async-commit",
                tikv.async_commit != tikv_default.async_commit,
            ),
            ("tikv-client.ru-v2", tikv.ru_v2 != tikv_default.ru_v2),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }

    /// Logs a warning for each of [`Config::unused_settings`]; a cluster calls it once, when
    /// it connects.
    pub(crate) fn warn_unused_settings(&self) {
        for key in self.unused_settings() {
            tracing::warn!(
                setting = key,
                "configuration setting {key} is not used yet by this client and has no effect"
            );
        }
    }

    /// Sets the longest a transaction's primary lock is kept alive.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = tikv_client::Config::default().with_max_txn_ttl(Duration::from_secs(600));
    /// assert_eq!(config.max_txn_ttl, Duration::from_secs(600));
    /// ```
    pub fn with_max_txn_ttl(mut self, ttl: Duration) -> Self {
        self.max_txn_ttl = ttl;
        self
    }

    /// Turns async commit on or off.
    ///
    /// ```
    /// assert!(tikv_client::Config::default().with_async_commit(true).enable_async_commit);
    /// ```
    pub fn with_async_commit(mut self, enabled: bool) -> Self {
        self.enable_async_commit = enabled;
        self
    }

    /// Turns one-phase commit on or off.
    ///
    /// ```
    /// assert!(tikv_client::Config::default().with_one_pc(true).enable_1pc);
    /// ```
    pub fn with_one_pc(mut self, enabled: bool) -> Self {
        self.enable_1pc = enabled;
        self
    }

    /// Turns forwarding through other stores on or off.
    ///
    /// ```
    /// assert!(tikv_client::Config::default().with_forwarding(true).enable_forwarding);
    /// ```
    pub fn with_forwarding(mut self, enabled: bool) -> Self {
        self.enable_forwarding = enabled;
        self
    }

    /// Turns loading all regions at start-up on or off.
    ///
    /// ```
    /// assert!(tikv_client::Config::default().with_preload(true).enable_preload);
    /// ```
    pub fn with_preload(mut self, enabled: bool) -> Self {
        self.enable_preload = enabled;
        self
    }

    /// Turns in-process latches on, with room for `capacity` slots.
    ///
    /// ```
    /// let config = tikv_client::Config::default().with_txn_local_latches(2048);
    /// assert!(config.txn_local_latches.enabled);
    /// ```
    pub fn with_txn_local_latches(mut self, capacity: usize) -> Self {
        self.txn_local_latches = TxnLocalLatchesConfig {
            enabled: true,
            capacity,
        };
        self
    }

    /// Sets the `zone` label of the machine this client runs on.
    ///
    /// ```
    /// assert_eq!(tikv_client::Config::default().with_zone_label("z1").zone_label, "z1");
    /// ```
    pub fn with_zone_label(mut self, zone: impl Into<String>) -> Self {
        self.zone_label = zone.into();
        self
    }

    /// Sets how often store and region metadata are refreshed from PD; a zero region interval
    /// turns the periodic region reload off.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = tikv_client::Config::default()
    ///     .with_refresh_intervals(Duration::from_secs(30), Duration::ZERO);
    /// assert_eq!(config.stores_refresh_interval, Duration::from_secs(30));
    /// ```
    pub fn with_refresh_intervals(mut self, stores: Duration, regions: Duration) -> Self {
        self.stores_refresh_interval = stores;
        self.regions_refresh_interval = regions;
        self
    }
}

/// The key format of a client (TiKV's `storage.api-version`), shared by the raw and
/// transactional clients and re-exported at the crate root.
///
/// ```no_run
/// # async fn f() -> tikv_client::Result<()> {
/// use tikv_client::{ApiVersion, RawClient};
/// let client = RawClient::builder(["pd:2379"])
///     .api_version(ApiVersion::V2)
///     .keyspace("tenant")
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ApiVersion {
    /// Keys are stored as given; no keyspaces.
    #[default]
    V1,
    /// Keys are stored inside a keyspace (prefix `r` + 3-byte keyspace id for raw keys).
    V2,
}

/// Pessimistic transaction settings (client-go `config.PessimisticTxn`, TOML table
/// `[pessimistic-txn]`).
///
/// ```
/// use tikv_client::config::PessimisticTxnConfig;
/// assert_eq!(PessimisticTxnConfig::default().max_retry_count, 0);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct PessimisticTxnConfig {
    /// Most retries of one statement in a pessimistic transaction (`MaxRetryCount`). client-go's
    /// `DefaultConfig()` leaves it at 0 (TiDB, which sets it, defaults to 256).
    pub max_retry_count: usize,
}

/// In-process latches that catch conflicts between transactions of this client before they
/// reach TiKV (client-go `config.TxnLocalLatches`, TOML table `[txn-local-latches]`).
///
/// client-go hides these two fields from TOML (`toml:"-"`); the keys here are the ones TiDB uses
/// for the same section.
///
/// ```
/// use tikv_client::Config;
/// let config = Config::from_toml_str("[txn-local-latches]\nenabled = true\ncapacity = 1024")?;
/// assert_eq!(config.txn_local_latches.capacity, 1024);
/// # Ok::<(), tikv_client::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct TxnLocalLatchesConfig {
    /// Whether latches are used (`Enabled`, default false).
    pub enabled: bool,
    /// Number of latch slots (`Capacity`, default 0). Must be > 0 when enabled.
    pub capacity: usize,
}

impl TxnLocalLatchesConfig {
    fn validate(&self) -> Result<()> {
        if self.enabled && self.capacity == 0 {
            return Err(Error::config(
                "txn-local-latches.capacity: must be greater than 0 when latches are enabled",
            ));
        }
        Ok(())
    }
}

/// client-go keys this crate deliberately does not port, and why.
const RETIRED_KEYS: &[(&[&str], &str)] = &[
    (
        &["txn-scope"],
        "local transactions are gone from PD; timestamps are always global",
    ),
    (
        &["tikv-client", "enable-replica-selector-v2"],
        "deprecated in client-go; there is one replica selector",
    ),
    (
        &["tikv-client", "enable-chunk-rpc"],
        "a TiDB coprocessor setting; this client sends no coprocessor requests",
    ),
    (
        &["tikv-client", "copr-cache"],
        "a TiDB coprocessor setting; this client sends no coprocessor requests",
    ),
    (
        &["tikv-client", "copr-req-timeout"],
        "a TiDB coprocessor setting; this client sends no coprocessor requests",
    ),
];

fn parse_toml(text: &str) -> std::result::Result<Config, String> {
    toml::from_str(text).map_err(|error| retired_key(text).unwrap_or_else(|| error.to_string()))
}

/// On a parse failure, a retired client-go key gets a message saying why it is gone instead of
/// serde's generic "unknown field".
fn retired_key(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    RETIRED_KEYS.iter().find_map(|(key_path, why)| {
        let (last, parents) = key_path.split_last()?;
        let mut table = &table;
        for parent in parents {
            table = table.get(*parent)?.as_table()?;
        }
        table.contains_key(*last).then(|| {
            format!(
                "{}: client-go setting not supported by this client ({why}); remove it",
                key_path.join(".")
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/config/testdata")
            .join(name)
    }

    fn load_err(toml: &str) -> String {
        Config::from_toml_str(toml)
            .expect_err("loading should fail")
            .to_string()
    }

    #[test]
    fn defaults_match_client_go() {
        let c = Config::default();
        assert_eq!(c.committer_concurrency, 128);
        assert_eq!(c.max_txn_ttl, Duration::from_millis(3_600_000));
        assert_eq!(c.stores_refresh_interval, Duration::from_secs(60));
        assert_eq!(c.regions_refresh_interval, Duration::ZERO);
        assert!(!c.enable_preload && !c.enable_forwarding && !c.enable_async_batch_get);
        assert!(!c.enable_async_commit && !c.enable_1pc && !c.open_tracing_enable);
        assert_eq!((c.zone_label.as_str(), c.path.as_str()), ("", ""));
        assert_eq!(c.pd_client.pd_server_timeout, Duration::from_secs(3));
        assert_eq!(c.pessimistic_txn.max_retry_count, 0);
        assert_eq!(
            c.txn_local_latches,
            TxnLocalLatchesConfig {
                enabled: false,
                capacity: 0
            }
        );
        assert_eq!(c.tikv_client, TikvClientConfig::default());
        assert_eq!(c.security, Security::default());
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn raw_fan_out_concurrency_loads_from_toml_and_is_checked() {
        let c = Config::from_toml_str("raw-fan-out-concurrency = 32\n").unwrap();
        assert_eq!(c.raw_fan_out_concurrency, 32);
        assert_eq!(
            c.committer_concurrency, 128,
            "independent of the committer's"
        );
        assert_eq!(Config::default().raw_fan_out_concurrency, 128);
        assert_eq!(Config::default().with_raw_fan_out_concurrency(32), c);
        assert!(
            load_err("raw-fan-out-concurrency = 0\n")
                .contains("raw-fan-out-concurrency: must be greater than 0")
        );
        let text = c.to_toml_string().unwrap();
        assert!(text.contains("raw-fan-out-concurrency = 32"), "{text}");
        assert!(c.unused_settings().is_empty(), "it is read by the cluster");
    }

    #[test]
    fn settings_not_used_yet_are_named_when_changed() {
        assert!(Config::default().unused_settings().is_empty());
        let c = Config::from_toml_str(
            r#"
            committer-concurrency = 64
            max-txn-ttl = 1000
            enable-async-commit = true
            enable-1pc = true
            enable-async-batch-get = true
            zone-label = "z1"
            open-tracing-enable = true
            path = "tikv://pd:2379"
            [pessimistic-txn]
            max-retry-count = 3
            [txn-local-latches]
            enabled = true
            capacity = 16
            [tikv-client]
            grpc-shared-buffer-pool = true
            commit-timeout = "10s"
            ttl-refreshed-txn-size = 1
            resolve-lock-lite-threshold = 1
            [tikv-client.async-commit]
            keys-limit = 1
            [tikv-client.ru-v2]
            ru-scale = 1.0
            "#,
        )
        .unwrap();
        assert_eq!(
            c.unused_settings(),
            [
                "committer-concurrency",
                "max-txn-ttl",
                "enable-async-commit",
                "enable-1pc",
                "enable-async-batch-get",
                "zone-label",
                "open-tracing-enable",
                "path",
                "pessimistic-txn",
                "txn-local-latches",
                "tikv-client.grpc-shared-buffer-pool",
                "tikv-client.commit-timeout",
                "tikv-client.ttl-refreshed-txn-size",
                "tikv-client.resolve-lock-lite-threshold",
                "tikv-client.async-commit",
                "tikv-client.ru-v2",
            ]
        );
        // Settings the client reads are never listed.
        let read = Config::default()
            .with_preload(true)
            .with_forwarding(true)
            .with_pd_server_timeout(Duration::from_secs(9))
            .with_tikv_client(TikvClientConfig::default().with_grpc_connection_count(2));
        assert!(read.unused_settings().is_empty());
        // Logging them does not fail without a subscriber.
        c.warn_unused_settings();
    }

    #[test]
    fn default_round_trips_through_toml() {
        let text = Config::default().to_toml_string().unwrap();
        assert_eq!(
            Config::from_toml_str(&text).unwrap(),
            Config::default(),
            "{text}"
        );
        // Durations are written in their client-go form.
        assert!(text.contains("max-txn-ttl = 3600000"), "{text}");
        assert!(text.contains("commit-timeout = \"41s\""), "{text}");
        assert!(text.contains("grpc-keepalive-timeout = 3.0"), "{text}");
        assert!(text.contains("safe-window = \"2s\""), "{text}");
        assert!(text.contains("batch-policy = \"standard\""), "{text}");
    }

    #[test]
    fn changed_config_round_trips_through_toml() {
        let config = Config::default()
            .with_async_commit(true)
            .with_txn_local_latches(1024)
            .with_zone_label("z1")
            .with_security(Security::new("/ca.pem", "/c.pem", "/k.pem", ["tikv"]))
            .with_tikv_client(
                TikvClientConfig::default()
                    .with_batch_policy(
                        r#"custom {"v":2,"t":0.001,"w":0.2,"p":0.5}"#.parse().unwrap(),
                    )
                    .with_batch_wait(Duration::from_micros(1_500), 4)
                    .with_grpc_compression(GrpcCompression::Gzip),
            );
        let text = config.to_toml_string().unwrap();
        assert_eq!(Config::from_toml_str(&text).unwrap(), config, "{text}");
    }

    #[test]
    fn loads_a_client_go_style_file() {
        let config = Config::from_toml_file(testdata("client-go.toml")).unwrap();
        let mut expected = Config::default()
            .with_committer_concurrency(64)
            .with_max_txn_ttl(Duration::from_secs(600))
            .with_refresh_intervals(Duration::from_secs(30), Duration::from_secs(300))
            .with_preload(true)
            .with_forwarding(true)
            .with_async_commit(true)
            .with_one_pc(true)
            .with_zone_label("us-west-1a")
            .with_pd_server_timeout(Duration::from_secs(5))
            .with_txn_local_latches(2_048_000)
            .with_security(Security::new(
                "/etc/tikv/ca.pem",
                "/etc/tikv/client.pem",
                "/etc/tikv/client-key.pem",
                ["tikv-server", "pd-server"],
            ));
        expected.enable_async_batch_get = true;
        expected.open_tracing_enable = true;
        expected.path = "tikv://pd0:2379,pd1:2379?disableGC=true".to_owned();
        expected.pessimistic_txn.max_retry_count = 256;

        let c = &mut expected.tikv_client;
        c.grpc_connection_count = 16;
        c.grpc_keepalive_time = Duration::from_secs(20);
        c.grpc_keepalive_timeout = Duration::from_millis(2_500);
        c.grpc_compression_type = GrpcCompression::Gzip;
        c.grpc_shared_buffer_pool = true;
        c.grpc_initial_window_size = 1 << 26;
        c.grpc_initial_conn_window_size = 1 << 28;
        c.commit_timeout = Duration::from_secs(90);
        c.batch_policy = "custom {\"v\":1,\"t\":0.0002,\"n\":4,\"w\":0.3,\"p\":0.7,\"q\":0.6}"
            .parse()
            .unwrap();
        c.max_batch_size = 64;
        c.overload_threshold = 300;
        c.max_batch_wait_time = Duration::from_millis(2);
        c.batch_wait_size = 16;
        c.max_concurrency_request_limit = 10_000;
        c.region_cache_ttl = Duration::from_secs(300);
        c.region_cache_ttl_jitter = Duration::from_secs(30);
        c.store_limit = 1_000;
        c.store_liveness_timeout = Duration::from_millis(1_500);
        c.ttl_refreshed_txn_size = 16 * 1024 * 1024;
        c.resolve_lock_lite_threshold = 256;
        c.async_commit.keys_limit = 512;
        c.async_commit.total_key_size_limit = 8_192;
        c.async_commit.safe_window = Duration::from_secs(4);
        c.async_commit.allowed_clock_drift = Duration::from_millis(250);
        c.ru_v2.ru_scale = 3.5;
        c.ru_v2.tikv_raftstore_store_write_trigger_wb_bytes = 0.0001;

        assert_eq!(config, expected);
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let config = Config::from_toml_str("[tikv-client]\nmax-batch-size = 0\n").unwrap();
        assert_eq!(config.tikv_client.max_batch_size, 0);
        assert_eq!(
            config,
            Config {
                tikv_client: config.tikv_client.clone(),
                ..Config::default()
            }
        );
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    }

    #[test]
    fn go_time_duration_fields_accept_nanoseconds() {
        let config = Config::from_toml_str(
            "[tikv-client]\nmax-batch-wait-time = 1000000\n\
             [tikv-client.async-commit]\nsafe-window = 2000000000\n\
             allowed-clock-drift = \"1.5s\"\n",
        )
        .unwrap();
        assert_eq!(
            config.tikv_client.max_batch_wait_time,
            Duration::from_millis(1)
        );
        assert_eq!(
            config.tikv_client.async_commit.safe_window,
            Duration::from_secs(2)
        );
        assert_eq!(
            config.tikv_client.async_commit.allowed_clock_drift,
            Duration::from_millis(1_500)
        );
        // Go float fields take integers too.
        let config = Config::from_toml_str("[tikv-client]\ngrpc-keepalive-timeout = 1\n").unwrap();
        assert_eq!(
            config.tikv_client.grpc_keepalive_timeout,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn unknown_and_retired_keys_are_clear_errors() {
        let err = load_err("[tikv-client]\ngrpc-conection-count = 4\n");
        assert!(
            err.contains("unknown field `grpc-conection-count`"),
            "{err}"
        );
        let err = load_err("no-such-knob = 1\n");
        assert!(err.contains("unknown field `no-such-knob`"), "{err}");

        let err = load_err("[tikv-client]\nenable-replica-selector-v2 = true\n");
        assert!(
            err.contains("tikv-client.enable-replica-selector-v2: client-go setting not supported"),
            "{err}"
        );
        let err = load_err("[tikv-client.copr-cache]\ncapacity-mb = 1000.0\n");
        assert!(
            err.contains("tikv-client.copr-cache: client-go setting not supported"),
            "{err}"
        );
        let err = load_err("txn-scope = \"global\"\n");
        assert!(
            err.contains("txn-scope: client-go setting not supported"),
            "{err}"
        );
    }

    #[test]
    fn wrong_values_are_clear_errors() {
        for (toml, expected) in [
            ("[tikv-client]\ncommit-timeout = 41\n", "Go duration string"),
            (
                "[tikv-client]\ncommit-timeout = \"41\"\n",
                "a unit is missing",
            ),
            (
                "[tikv-client]\nstore-liveness-timeout = \"1d\"\n",
                "unknown unit \"d\"",
            ),
            (
                "[tikv-client]\ngrpc-compression-type = \"zstd\"\n",
                "unknown variant `zstd`",
            ),
            (
                "[tikv-client]\nbatch-policy = \"turbo\"\n",
                "tikv-client.batch-policy",
            ),
            ("[tikv-client]\nregion-cache-ttl = -1\n", "region-cache-ttl"),
            (
                "[tikv-client]\ngrpc-keepalive-timeout = -0.5\n",
                "non-negative",
            ),
            (
                "[tikv-client.async-commit]\nsafe-window = -1\n",
                "non-negative",
            ),
            ("max-txn-ttl = \"1h\"\n", "max-txn-ttl"),
            (
                "[security]\ncluster-verify-cn = \"tikv\"\n",
                "cluster-verify-cn",
            ),
        ] {
            let err = load_err(toml);
            assert!(err.contains(expected), "{toml:?}: {err}");
        }
    }

    #[test]
    fn loading_runs_validate() {
        for (toml, expected) in [
            (
                "[tikv-client]\ngrpc-connection-count = 0\n",
                "tikv-client.grpc-connection-count: must be greater than 0",
            ),
            (
                "[tikv-client]\ngrpc-keepalive-timeout = 0.04\n",
                "tikv-client.grpc-keepalive-timeout: must be at least 0.05 seconds",
            ),
            (
                "[pd-client]\npd-server-timeout = 0\n",
                "pd-client.pd-server-timeout: must be at least",
            ),
            (
                "[txn-local-latches]\nenabled = true\n",
                "txn-local-latches.capacity: must be greater than 0",
            ),
            (
                "committer-concurrency = 0\n",
                "committer-concurrency: must be greater than 0",
            ),
            (
                "stores-refresh-interval = 0\n",
                "stores-refresh-interval: must be at least",
            ),
            (
                "[security]\ncluster-ssl-cert = \"/c.pem\"\n",
                "security.cluster-ssl-key: not set",
            ),
        ] {
            let err = load_err(toml);
            assert!(err.contains(expected), "{toml:?}: {err}");
        }
    }

    #[test]
    fn validate_checks_hand_set_fields() {
        let config = Config::default().with_max_txn_ttl(Duration::from_micros(1_500));
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("max-txn-ttl: must be a whole number of milliseconds"),
            "{err}"
        );
        // What validate refuses, the writer refuses too instead of truncating.
        assert!(config.to_toml_string().is_err());

        let config = Config::default().with_pd_server_timeout(Duration::from_millis(2_500));
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("pd-client.pd-server-timeout")
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let path = testdata("missing.toml");
        let err = Config::from_toml_file(&path).unwrap_err().to_string();
        assert!(err.contains("cannot read configuration file"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn parse_path_delegates_to_tikv_path() {
        let path =
            Config::parse_path("tikv://pd1:2379,pd2:2379?disableGC=true&keyspaceName=ks").unwrap();
        assert_eq!(path.pd_endpoints, ["pd1:2379", "pd2:2379"]);
        assert!(path.disable_gc);
        assert_eq!(path.keyspace_name.as_deref(), Some("ks"));
    }
}
