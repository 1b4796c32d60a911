//! `[tikv-client]`: how the client talks to TiKV stores (gRPC, batching, commit limits, region
//! cache lifetimes). Ports client-go `config/client.go` (`TiKVClient`, `AsyncCommit`,
//! `RUV2TiKVConfig`, `DefaultTiKVClient`, `Valid`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BatchPolicy;
use super::duration::{self, check_go_range, check_whole_secs};
use crate::{Error, Result};

/// Settings for the connections to TiKV and the requests sent over them (client-go
/// `config.TiKVClient`, TOML table `[tikv-client]`).
///
/// Defaults are client-go's `DefaultTiKVClient()`. Each field names the client-go field it
/// mirrors and its TOML form.
///
/// ```
/// use tikv_client::config::TikvClientConfig;
/// let c = TikvClientConfig::default().with_grpc_connection_count(8);
/// assert_eq!(c.grpc_connection_count, 8);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct TikvClientConfig {
    /// gRPC connections opened to each store (`GrpcConnectionCount`, default 4). Must be > 0.
    pub grpc_connection_count: usize,
    /// Idle time after which the client pings a connection (`GrpcKeepAliveTime`, integer
    /// seconds, default 10s). Must be > 0.
    #[serde(with = "duration::secs")]
    pub grpc_keepalive_time: Duration,
    /// How long a keepalive ping may go unanswered before the connection is closed
    /// (`GrpcKeepAliveTimeout`, float seconds, default 3s). Must be at least 50ms.
    #[serde(with = "duration::secs_f64")]
    pub grpc_keepalive_timeout: Duration,
    /// Message compression on TiKV channels (`GrpcCompressionType`, `"none"` or `"gzip"`).
    pub grpc_compression_type: GrpcCompression,
    /// Share one buffer pool among the TiKV connections instead of allocating per message
    /// (`GrpcSharedBufferPool`, default false). A transport hint. Not used yet (tonic manages
    /// its own buffers): setting it logs a warning when a cluster connects.
    pub grpc_shared_buffer_pool: bool,
    /// HTTP/2 initial flow-control window of each stream, in bytes
    /// (`GrpcInitialWindowSize`, default 128 MiB). At most 2^31 - 1 (the HTTP/2 limit).
    pub grpc_initial_window_size: u32,
    /// HTTP/2 initial flow-control window of each connection, in bytes
    /// (`GrpcInitialConnWindowSize`, default 128 MiB). At most 2^31 - 1.
    pub grpc_initial_conn_window_size: u32,
    /// The longest a commit may wait (`CommitTimeout`, Go duration string, default `"41s"`).
    /// Must be > 0. Not used yet: setting it logs a warning when a cluster connects.
    #[serde(with = "duration::go_string")]
    pub commit_timeout: Duration,
    /// How BatchCommands decides to wait for more requests (`BatchPolicy`, default
    /// `"standard"`).
    pub batch_policy: BatchPolicy,
    /// Most requests in one BatchCommands message (`MaxBatchSize`, default 128); 0 turns
    /// batching off and sends every request as a unary RPC.
    pub max_batch_size: usize,
    /// Store load (as TiKV reports it) above which the sender waits to build bigger batches
    /// (`OverloadThreshold`, default 200).
    pub overload_threshold: u64,
    /// The longest the sender waits to fill a batch on an overloaded store
    /// (`MaxBatchWaitTime`, Go `time.Duration`: duration string or integer nanoseconds, default
    /// 0 = no wait).
    #[serde(with = "duration::go_duration")]
    pub max_batch_wait_time: Duration,
    /// Requests the sender waits for when it does wait (`BatchWaitSize`, default 8).
    pub batch_wait_size: usize,
    /// Most requests in flight on one batch stream (`MaxConcurrencyRequestLimit`, default
    /// `i64::MAX`, i.e. unlimited). Must be between 1 and `i64::MAX`.
    pub max_concurrency_request_limit: u64,
    /// How long a cached region stays valid without being accessed (`RegionCacheTTL`,
    /// integer seconds, default 600s). Must be > 0.
    #[serde(with = "duration::secs")]
    pub region_cache_ttl: Duration,
    /// Random extra lifetime in `[0, jitter)` added to each region's TTL, so that regions loaded
    /// together do not expire together (integer seconds, default 60s).
    ///
    /// Not a `TiKVClient` field: client-go keeps it in a package variable set by
    /// `SetRegionCacheTTLWithJitter`. The TOML key `region-cache-ttl-jitter` is this crate's.
    #[serde(with = "duration::secs")]
    pub region_cache_ttl_jitter: Duration,
    /// Most requests in flight to one store; beyond it new requests fail fast with a
    /// token-limit error (`StoreLimit`, default 0 = unlimited).
    pub store_limit: u64,
    /// Timeout of the liveness probe sent to a store that looks down
    /// (`StoreLivenessTimeout`, Go duration string, default `"1s"`); 0 skips the probe and
    /// treats the store as reachable.
    #[serde(with = "duration::go_string")]
    pub store_liveness_timeout: Duration,
    /// Transactions bigger than this many bytes keep their primary lock alive with TTL
    /// heartbeats (`TTLRefreshedTxnSize`, default 32 MiB). Not used yet: setting it logs a
    /// warning when a cluster connects.
    pub ttl_refreshed_txn_size: u64,
    /// Locks of transactions that wrote fewer than this many keys are resolved key by key
    /// ("lite" resolve) rather than region by region (`ResolveLockLiteThreshold`, default 512).
    /// Not used yet: setting it logs a warning when a cluster connects.
    pub resolve_lock_lite_threshold: u64,
    /// Limits under which a transaction may use async commit (`AsyncCommit`, TOML table
    /// `[tikv-client.async-commit]`). Not used yet: setting them logs a warning when a
    /// cluster connects.
    pub async_commit: AsyncCommitConfig,
    /// Weights that turn TiKV's RU v2 counters into request units (`RUV2`, TOML table
    /// `[tikv-client.ru-v2]`). Not used yet: setting them logs a warning when a cluster
    /// connects.
    pub ru_v2: RuV2Config,
}

impl Default for TikvClientConfig {
    fn default() -> Self {
        const WINDOW_128_MIB: u32 = 1 << 27;
        TikvClientConfig {
            grpc_connection_count: 4,
            grpc_keepalive_time: Duration::from_secs(10),
            grpc_keepalive_timeout: Duration::from_secs(3),
            grpc_compression_type: GrpcCompression::None,
            grpc_shared_buffer_pool: false,
            grpc_initial_window_size: WINDOW_128_MIB,
            grpc_initial_conn_window_size: WINDOW_128_MIB,
            commit_timeout: Duration::from_secs(41),
            batch_policy: BatchPolicy::Standard,
            max_batch_size: 128,
            overload_threshold: 200,
            max_batch_wait_time: Duration::ZERO,
            batch_wait_size: 8,
            max_concurrency_request_limit: i64::MAX.unsigned_abs(),
            region_cache_ttl: Duration::from_secs(600),
            region_cache_ttl_jitter: Duration::from_secs(60),
            store_limit: 0,
            store_liveness_timeout: Duration::from_secs(1),
            ttl_refreshed_txn_size: 32 * 1024 * 1024,
            resolve_lock_lite_threshold: 512,
            async_commit: AsyncCommitConfig::default(),
            ru_v2: RuV2Config::default(),
        }
    }
}

impl TikvClientConfig {
    /// Sets how many gRPC connections are opened to each store.
    ///
    /// ```
    /// use tikv_client::config::TikvClientConfig;
    /// let c = TikvClientConfig::default().with_grpc_connection_count(2);
    /// assert_eq!(c.grpc_connection_count, 2);
    /// ```
    pub fn with_grpc_connection_count(mut self, count: usize) -> Self {
        self.grpc_connection_count = count;
        self
    }

    /// Sets the keepalive ping interval and how long a ping may go unanswered.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tikv_client::config::TikvClientConfig;
    /// let c = TikvClientConfig::default().with_grpc_keepalive(Duration::from_secs(20), Duration::from_secs(5));
    /// assert_eq!(c.grpc_keepalive_time, Duration::from_secs(20));
    /// ```
    pub fn with_grpc_keepalive(mut self, time: Duration, timeout: Duration) -> Self {
        self.grpc_keepalive_time = time;
        self.grpc_keepalive_timeout = timeout;
        self
    }

    /// Sets the message compression used on TiKV channels.
    ///
    /// ```
    /// use tikv_client::config::{GrpcCompression, TikvClientConfig};
    /// let c = TikvClientConfig::default().with_grpc_compression(GrpcCompression::Gzip);
    /// assert_eq!(c.grpc_compression_type, GrpcCompression::Gzip);
    /// ```
    pub fn with_grpc_compression(mut self, compression: GrpcCompression) -> Self {
        self.grpc_compression_type = compression;
        self
    }

    /// Sets the HTTP/2 initial flow-control windows of each stream and each connection.
    ///
    /// ```
    /// use tikv_client::config::TikvClientConfig;
    /// let c = TikvClientConfig::default().with_grpc_window_sizes(1 << 20, 1 << 24);
    /// assert_eq!(c.grpc_initial_window_size, 1 << 20);
    /// ```
    pub fn with_grpc_window_sizes(mut self, stream: u32, connection: u32) -> Self {
        self.grpc_initial_window_size = stream;
        self.grpc_initial_conn_window_size = connection;
        self
    }

    /// Sets the longest a commit may wait.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tikv_client::config::TikvClientConfig;
    /// let c = TikvClientConfig::default().with_commit_timeout(Duration::from_secs(30));
    /// assert_eq!(c.commit_timeout, Duration::from_secs(30));
    /// ```
    pub fn with_commit_timeout(mut self, timeout: Duration) -> Self {
        self.commit_timeout = timeout;
        self
    }

    /// Sets the BatchCommands batching policy.
    ///
    /// ```
    /// use tikv_client::config::{BatchPolicy, TikvClientConfig};
    /// let c = TikvClientConfig::default().with_batch_policy(BatchPolicy::Positive);
    /// assert_eq!(c.batch_policy, BatchPolicy::Positive);
    /// ```
    pub fn with_batch_policy(mut self, policy: BatchPolicy) -> Self {
        self.batch_policy = policy;
        self
    }

    /// Sets the most requests per BatchCommands message; 0 turns batching off.
    ///
    /// ```
    /// use tikv_client::config::TikvClientConfig;
    /// let unbatched = TikvClientConfig::default().with_max_batch_size(0);
    /// assert_eq!(unbatched.max_batch_size, 0);
    /// ```
    pub fn with_max_batch_size(mut self, size: usize) -> Self {
        self.max_batch_size = size;
        self
    }

    /// Sets how long and for how many requests the sender waits on an overloaded store.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tikv_client::config::TikvClientConfig;
    /// let c = TikvClientConfig::default().with_batch_wait(Duration::from_micros(500), 16);
    /// assert_eq!(c.batch_wait_size, 16);
    /// ```
    pub fn with_batch_wait(mut self, max_wait: Duration, wait_size: usize) -> Self {
        self.max_batch_wait_time = max_wait;
        self.batch_wait_size = wait_size;
        self
    }

    /// Sets the store load above which the sender waits to build bigger batches.
    ///
    /// ```
    /// use tikv_client::config::TikvClientConfig;
    /// let c = TikvClientConfig::default().with_overload_threshold(100);
    /// assert_eq!(c.overload_threshold, 100);
    /// ```
    pub fn with_overload_threshold(mut self, threshold: u64) -> Self {
        self.overload_threshold = threshold;
        self
    }

    /// Sets the most requests in flight on one batch stream.
    ///
    /// ```
    /// use tikv_client::config::TikvClientConfig;
    /// let c = TikvClientConfig::default().with_max_concurrency_request_limit(1024);
    /// assert_eq!(c.max_concurrency_request_limit, 1024);
    /// ```
    pub fn with_max_concurrency_request_limit(mut self, limit: u64) -> Self {
        self.max_concurrency_request_limit = limit;
        self
    }

    /// Sets the region cache TTL and the random jitter added to it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tikv_client::config::TikvClientConfig;
    /// let c = TikvClientConfig::default().with_region_cache_ttl(Duration::from_secs(300), Duration::from_secs(30));
    /// assert_eq!(c.region_cache_ttl, Duration::from_secs(300));
    /// ```
    pub fn with_region_cache_ttl(mut self, ttl: Duration, jitter: Duration) -> Self {
        self.region_cache_ttl = ttl;
        self.region_cache_ttl_jitter = jitter;
        self
    }

    /// Sets the most requests queued per store; 0 means unlimited.
    ///
    /// ```
    /// use tikv_client::config::TikvClientConfig;
    /// let c = TikvClientConfig::default().with_store_limit(5000);
    /// assert_eq!(c.store_limit, 5000);
    /// ```
    pub fn with_store_limit(mut self, limit: u64) -> Self {
        self.store_limit = limit;
        self
    }

    /// Sets the timeout of store liveness probes; zero disables them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tikv_client::config::TikvClientConfig;
    /// let c = TikvClientConfig::default().with_store_liveness_timeout(Duration::ZERO);
    /// assert!(c.store_liveness_timeout.is_zero());
    /// ```
    pub fn with_store_liveness_timeout(mut self, timeout: Duration) -> Self {
        self.store_liveness_timeout = timeout;
        self
    }

    /// Sets the async-commit limits.
    ///
    /// ```
    /// use tikv_client::config::{AsyncCommitConfig, TikvClientConfig};
    /// let c = TikvClientConfig::default().with_async_commit(AsyncCommitConfig::default().with_keys_limit(64));
    /// assert_eq!(c.async_commit.keys_limit, 64);
    /// ```
    pub fn with_async_commit(mut self, async_commit: AsyncCommitConfig) -> Self {
        self.async_commit = async_commit;
        self
    }

    /// Checks what client-go's `TiKVClient.Valid` checks, plus ranges this crate relies on.
    pub(crate) fn validate(&self) -> Result<()> {
        const HTTP2_MAX_WINDOW: u32 = (1 << 31) - 1;
        const MIN_KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(50);

        if self.grpc_connection_count == 0 {
            return Err(Error::config(
                "tikv-client.grpc-connection-count: must be greater than 0",
            ));
        }
        check_whole_secs("tikv-client.grpc-keepalive-time", self.grpc_keepalive_time)?;
        if self.grpc_keepalive_time.is_zero() {
            return Err(Error::config(
                "tikv-client.grpc-keepalive-time: must be at least 1 second",
            ));
        }
        if self.grpc_keepalive_timeout < MIN_KEEPALIVE_TIMEOUT {
            return Err(Error::config(format!(
                "tikv-client.grpc-keepalive-timeout: must be at least 0.05 seconds (50ms), got {} \
                 seconds",
                self.grpc_keepalive_timeout.as_secs_f64()
            )));
        }
        for (field, size) in [
            (
                "tikv-client.grpc-initial-window-size",
                self.grpc_initial_window_size,
            ),
            (
                "tikv-client.grpc-initial-conn-window-size",
                self.grpc_initial_conn_window_size,
            ),
        ] {
            if size > HTTP2_MAX_WINDOW {
                return Err(Error::config(format!(
                    "{field}: must be at most {HTTP2_MAX_WINDOW} bytes (the HTTP/2 limit), got \
                     {size}"
                )));
            }
        }
        check_go_range("tikv-client.commit-timeout", self.commit_timeout)?;
        if self.commit_timeout.is_zero() {
            return Err(Error::config(
                "tikv-client.commit-timeout: must be greater than 0",
            ));
        }
        self.batch_policy
            .check()
            .map_err(|why| Error::config(format!("tikv-client.batch-policy: {why}")))?;
        check_go_range("tikv-client.max-batch-wait-time", self.max_batch_wait_time)?;
        if self.max_concurrency_request_limit == 0
            || i64::try_from(self.max_concurrency_request_limit).is_err()
        {
            return Err(Error::config(format!(
                "tikv-client.max-concurrency-request-limit: must be between 1 and {}, got {}",
                i64::MAX,
                self.max_concurrency_request_limit
            )));
        }
        check_whole_secs("tikv-client.region-cache-ttl", self.region_cache_ttl)?;
        if self.region_cache_ttl.is_zero() {
            return Err(Error::config(
                "tikv-client.region-cache-ttl: must be at least 1 second",
            ));
        }
        check_whole_secs(
            "tikv-client.region-cache-ttl-jitter",
            self.region_cache_ttl_jitter,
        )?;
        check_go_range(
            "tikv-client.store-liveness-timeout",
            self.store_liveness_timeout,
        )?;
        self.async_commit.validate()?;
        self.ru_v2.validate()
    }
}

/// Message compression on TiKV gRPC channels (client-go `TiKVClient.GrpcCompressionType`).
///
/// ```
/// use tikv_client::config::GrpcCompression;
/// assert_eq!(GrpcCompression::default(), GrpcCompression::None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum GrpcCompression {
    /// No compression (`"none"`, the default).
    #[default]
    None,
    /// gzip (`"gzip"`).
    Gzip,
}

/// When a transaction may commit asynchronously (client-go `config.AsyncCommit`, TOML table
/// `[tikv-client.async-commit]`). Whether async commit is on at all is
/// [`Config::enable_async_commit`](super::Config::enable_async_commit).
///
/// ```
/// use tikv_client::config::AsyncCommitConfig;
/// assert_eq!(AsyncCommitConfig::default().keys_limit, 256);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct AsyncCommitConfig {
    /// Most keys a transaction may write and still use async commit (`KeysLimit`, default
    /// 256).
    pub keys_limit: usize,
    /// Most total key bytes a transaction may write and still use async commit
    /// (`TotalKeySizeLimit`, default 4096).
    pub total_key_size_limit: u64,
    /// How long an async-commit or 1PC transaction may rely on an old schema
    /// (`SafeWindow`, Go `time.Duration`: duration string or integer nanoseconds, default 2s).
    #[serde(with = "duration::go_duration")]
    pub safe_window: Duration,
    /// Clock drift tolerated on top of the safe window (`AllowedClockDrift`, Go
    /// `time.Duration`, default 500ms).
    #[serde(with = "duration::go_duration")]
    pub allowed_clock_drift: Duration,
}

impl Default for AsyncCommitConfig {
    fn default() -> Self {
        AsyncCommitConfig {
            keys_limit: 256,
            total_key_size_limit: 4 * 1024,
            safe_window: Duration::from_secs(2),
            allowed_clock_drift: Duration::from_millis(500),
        }
    }
}

impl AsyncCommitConfig {
    /// Sets the most keys an async-commit transaction may write.
    ///
    /// ```
    /// use tikv_client::config::AsyncCommitConfig;
    /// assert_eq!(AsyncCommitConfig::default().with_keys_limit(10).keys_limit, 10);
    /// ```
    pub fn with_keys_limit(mut self, limit: usize) -> Self {
        self.keys_limit = limit;
        self
    }

    /// Sets the most total key bytes an async-commit transaction may write.
    ///
    /// ```
    /// use tikv_client::config::AsyncCommitConfig;
    /// let c = AsyncCommitConfig::default().with_total_key_size_limit(1024);
    /// assert_eq!(c.total_key_size_limit, 1024);
    /// ```
    pub fn with_total_key_size_limit(mut self, limit: u64) -> Self {
        self.total_key_size_limit = limit;
        self
    }

    /// Sets the schema safe window and the clock drift allowed on top of it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tikv_client::config::AsyncCommitConfig;
    /// let c = AsyncCommitConfig::default().with_safe_window(Duration::from_secs(3), Duration::from_secs(1));
    /// assert_eq!(c.safe_window, Duration::from_secs(3));
    /// ```
    pub fn with_safe_window(
        mut self,
        safe_window: Duration,
        allowed_clock_drift: Duration,
    ) -> Self {
        self.safe_window = safe_window;
        self.allowed_clock_drift = allowed_clock_drift;
        self
    }

    fn validate(&self) -> Result<()> {
        check_go_range("tikv-client.async-commit.safe-window", self.safe_window)?;
        check_go_range(
            "tikv-client.async-commit.allowed-clock-drift",
            self.allowed_clock_drift,
        )
    }
}

/// Weights that convert TiKV's RU v2 execution counters into request units (client-go
/// `config.RUV2TiKVConfig`, TOML table `[tikv-client.ru-v2]`). Defaults are client-go's
/// `DefaultRUV2TiKVConfig()`, fitted so that RU v2 stays close to RU v1 accounting.
///
/// ```
/// use tikv_client::config::RuV2Config;
/// assert!(RuV2Config::default().ru_scale > 0.0);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub struct RuV2Config {
    /// Scale applied to the weighted sum (`RUScale`, default 2.10).
    pub ru_scale: f64,
    /// Weight of KV engine block-cache misses (`TiKVKVEngineCacheMiss`).
    pub tikv_kv_engine_cache_miss: f64,
    /// Weight of write RPCs (`ResourceManagerWriteCntTiKV`).
    pub resource_manager_write_cnt_tikv: f64,
    /// Weight of coprocessor executor input rows (`ExecutorInputs`).
    pub executor_inputs: f64,
    /// Weight of coprocessor executor iterations (`TiKVCoprocessorExecutorIterations`).
    pub tikv_coprocessor_executor_iterations: f64,
    /// Weight of coprocessor response bytes (`TiKVCoprocessorResponseBytes`).
    pub tikv_coprocessor_response_bytes: f64,
    /// Weight of raftstore write-batch bytes (`TiKVRaftstoreStoreWriteTriggerWB`).
    pub tikv_raftstore_store_write_trigger_wb_bytes: f64,
    /// Weight of keys processed by batch gets (`TiKVStorageProcessedKeysBatchGet`).
    pub tikv_storage_processed_keys_batch_get: f64,
    /// Weight of keys processed by point gets (`TiKVStorageProcessedKeysGet`).
    pub tikv_storage_processed_keys_get: f64,
}

impl Default for RuV2Config {
    fn default() -> Self {
        RuV2Config {
            ru_scale: 2.10,
            tikv_kv_engine_cache_miss: 0.459_753_89,
            resource_manager_write_cnt_tikv: 0.096_421_81,
            executor_inputs: 0.000_031_50,
            tikv_coprocessor_executor_iterations: 0.057_753_69,
            tikv_coprocessor_response_bytes: 0.000_000_87,
            tikv_raftstore_store_write_trigger_wb_bytes: 0.000_061_00,
            tikv_storage_processed_keys_batch_get: 0.002_667_91,
            tikv_storage_processed_keys_get: 0.014_168_29,
        }
    }
}

impl RuV2Config {
    fn validate(&self) -> Result<()> {
        let weights = [
            ("ru-scale", self.ru_scale),
            ("tikv-kv-engine-cache-miss", self.tikv_kv_engine_cache_miss),
            (
                "resource-manager-write-cnt-tikv",
                self.resource_manager_write_cnt_tikv,
            ),
            ("executor-inputs", self.executor_inputs),
            (
                "tikv-coprocessor-executor-iterations",
                self.tikv_coprocessor_executor_iterations,
            ),
            (
                "tikv-coprocessor-response-bytes",
                self.tikv_coprocessor_response_bytes,
            ),
            (
                "tikv-raftstore-store-write-trigger-wb-bytes",
                self.tikv_raftstore_store_write_trigger_wb_bytes,
            ),
            (
                "tikv-storage-processed-keys-batch-get",
                self.tikv_storage_processed_keys_batch_get,
            ),
            (
                "tikv-storage-processed-keys-get",
                self.tikv_storage_processed_keys_get,
            ),
        ];
        for (key, weight) in weights {
            if !weight.is_finite() || weight < 0.0 {
                return Err(Error::config(format!(
                    "tikv-client.ru-v2.{key}: must be a finite number >= 0, got {weight}"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(config: TikvClientConfig) -> String {
        config
            .validate()
            .expect_err("config should be invalid")
            .to_string()
    }

    #[test]
    fn defaults_match_client_go() {
        let c = TikvClientConfig::default();
        assert_eq!(c.grpc_connection_count, 4);
        assert_eq!(c.grpc_keepalive_time, Duration::from_secs(10));
        assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(3));
        assert_eq!(c.grpc_compression_type, GrpcCompression::None);
        assert!(!c.grpc_shared_buffer_pool);
        assert_eq!(c.grpc_initial_window_size, 134_217_728);
        assert_eq!(c.grpc_initial_conn_window_size, 134_217_728);
        assert_eq!(c.commit_timeout, Duration::from_secs(41));
        assert_eq!(c.batch_policy, BatchPolicy::Standard);
        assert_eq!(c.max_batch_size, 128);
        assert_eq!(c.overload_threshold, 200);
        assert_eq!(c.max_batch_wait_time, Duration::ZERO);
        assert_eq!(c.batch_wait_size, 8);
        assert_eq!(c.max_concurrency_request_limit, 9_223_372_036_854_775_807);
        assert_eq!(c.region_cache_ttl, Duration::from_secs(600));
        assert_eq!(c.region_cache_ttl_jitter, Duration::from_secs(60));
        assert_eq!(c.store_limit, 0);
        assert_eq!(c.store_liveness_timeout, Duration::from_secs(1));
        assert_eq!(c.ttl_refreshed_txn_size, 33_554_432);
        assert_eq!(c.resolve_lock_lite_threshold, 512);
        assert_eq!(c.async_commit.keys_limit, 256);
        assert_eq!(c.async_commit.total_key_size_limit, 4_096);
        assert_eq!(c.async_commit.safe_window, Duration::from_secs(2));
        assert_eq!(
            c.async_commit.allowed_clock_drift,
            Duration::from_millis(500)
        );
        assert_eq!(c.ru_v2.ru_scale, 2.10);
        assert_eq!(c.ru_v2.tikv_storage_processed_keys_get, 0.01416829);
        c.validate().expect("defaults are valid");
    }

    // Ported from client-go config/config_test.go TestValidateGRPCKeepAliveTimeout.
    #[test]
    fn keepalive_timeout_must_be_at_least_50ms() {
        let config = TikvClientConfig::default();
        assert!(config.validate().is_ok());
        assert_eq!(config.grpc_keepalive_timeout, Duration::from_secs(3));

        let config = TikvClientConfig::default()
            .with_grpc_keepalive(Duration::from_secs(10), Duration::from_secs_f64(0.05));
        assert!(config.validate().is_ok());
        assert_eq!(config.grpc_keepalive_timeout, Duration::from_millis(50));

        let config = TikvClientConfig::default()
            .with_grpc_keepalive(Duration::from_secs(10), Duration::from_secs_f64(0.04));
        assert_eq!(
            invalid(config),
            "invalid configuration: tikv-client.grpc-keepalive-timeout: must be at least 0.05 \
             seconds (50ms), got 0.04 seconds"
        );
    }

    #[test]
    fn validate_names_the_field_and_range() {
        let cases = [
            (
                TikvClientConfig::default().with_grpc_connection_count(0),
                "tikv-client.grpc-connection-count: must be greater than 0",
            ),
            (
                TikvClientConfig::default()
                    .with_grpc_keepalive(Duration::ZERO, Duration::from_secs(3)),
                "tikv-client.grpc-keepalive-time: must be at least 1 second",
            ),
            (
                TikvClientConfig::default()
                    .with_grpc_keepalive(Duration::from_millis(1_500), Duration::from_secs(3)),
                "tikv-client.grpc-keepalive-time: must be a whole number of seconds",
            ),
            (
                TikvClientConfig::default().with_grpc_window_sizes(1 << 31, 1 << 27),
                "tikv-client.grpc-initial-window-size: must be at most 2147483647",
            ),
            (
                TikvClientConfig::default().with_commit_timeout(Duration::ZERO),
                "tikv-client.commit-timeout: must be greater than 0",
            ),
            (
                TikvClientConfig::default().with_max_concurrency_request_limit(0),
                "tikv-client.max-concurrency-request-limit: must be between 1 and",
            ),
            (
                TikvClientConfig::default().with_max_concurrency_request_limit(u64::MAX),
                "tikv-client.max-concurrency-request-limit: must be between 1 and",
            ),
            (
                TikvClientConfig::default()
                    .with_region_cache_ttl(Duration::ZERO, Duration::from_secs(60)),
                "tikv-client.region-cache-ttl: must be at least 1 second",
            ),
            (
                TikvClientConfig::default().with_batch_wait(Duration::from_secs(u64::MAX), 8),
                "tikv-client.max-batch-wait-time: must be at most",
            ),
            (
                TikvClientConfig::default().with_async_commit(
                    AsyncCommitConfig::default()
                        .with_safe_window(Duration::from_secs(u64::MAX), Duration::ZERO),
                ),
                "tikv-client.async-commit.safe-window: must be at most",
            ),
        ];
        for (config, expected) in cases {
            let message = invalid(config);
            assert!(
                message.contains(expected),
                "{message:?} should contain {expected:?}"
            );
        }

        let mut config = TikvClientConfig::default();
        config.ru_v2.ru_scale = f64::NAN;
        assert!(invalid(config).contains("tikv-client.ru-v2.ru-scale: must be a finite number"));
    }
}
