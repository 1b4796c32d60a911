//! The TiKV transport: connection pools per store, the BatchCommands stream of each
//! connection (batching, request-id demultiplexing, per-request deadlines, re-creation after a
//! failure, concurrency limit, store health feedback and load), unary calls, and the collapse
//! of duplicate ResolveLock requests.
//!
//! Who calls it: the region request sender (`request/`) resolves a region to a store address,
//! keeps that store's [`StoreClient`] beside its cached store (so the hot path does no address
//! lookup), and calls [`StoreClient::send`] with the command and its [`SendOptions`]. It
//! handles region errors and retries; this module only moves bytes, and classifies its own
//! failures: every transport failure is a retryable [`Error::Grpc`] (code UNAVAILABLE or
//! DEADLINE_EXCEEDED) or [`Error::Timeout`]; a closed transport is [`Error::Closed`]. The store
//! cache (`locate/`) reads [`StoreClient::health_feedback`] and probes unreachable stores with
//! [`StoreClient::check_liveness`].
//!
//! TLS: `[security]` gives the CA, the client identity and the allowed server Common Names
//! (`crate::tls`); server certificates are checked against the store address.
//!
//! Layout:
//!
//! | file | owns | ports (client-go `internal/client/`) |
//! |---|---|---|
//! | `mod.rs` | [`Transport`] (pools by address, close), [`StoreClient`], options, stats | `client.go` (`RPCClient`) |
//! | `pool.rs` | one store's connections, the choice of connection, send paths, liveness probe | `conn_pool.go`, `conn_batch.go` (`getClientAndSend`), `locate/store_cache.go` (`invokeKVStatusAPI`) |
//! | `batch.rs` | one BatchCommands stream: queue, request stream, driver, demultiplexing | `client_batch.go`, `conn_batch.go`, `priority_queue.go` |
//! | `policy.rs` | when to hold a batch back for more requests | `client_batch.go` (`turboBatchTrigger`), `conn_batch.go` |
//! | `unary.rs` | unary RPCs, including those without a BatchCommands slot | `client.go` (`sendRequest`), `tikvrpc.CallRPC` |
//! | `collapse.rs` | duplicate region-wide ResolveLock collapse | `client_collapse.go` |
//!
//! Not ported: coprocessor/MPP streaming calls, the callback-style async API (`client_async.go`;
//! every send here is a future), interceptors, per-request metrics and RU accounting (they come
//! with `observability/`), and `conn_monitor.go`'s connection-state gauges.
//!
//! Idle stores: a store's pool that has had no request for `IDLE_TIMEOUT` (3 minutes, client-go
//! `idleTimeout`) is closed, its connections and streams with it, and the next request to the
//! store opens a new one (client-go `recycleIdleConnArray`). A background task checks every
//! `IDLE_CHECK_INTERVAL` (15 s); a pool with a request queued or in flight is never closed. A
//! caller that took a [`StoreClient`] just before the pool was recycled gets a retryable error,
//! as client-go's "rpcClient is idle" race does, and the next [`Transport::store`] call opens
//! fresh connections.
//!
//! The module is crate-private: the workspace's transport benchmark drives [`Transport`] and
//! [`StoreClient`] through `crate::unstable` (the `unstable-internals` feature). Applications
//! use the raw and transactional clients.

// Items `crate::unstable` re-exports stay `pub`; `unreachable_pub` is checked only in builds
// with the feature, where they are reachable (see `pd/mod.rs`).
#![cfg_attr(not(feature = "unstable-internals"), allow(unreachable_pub))]

mod batch;
mod collapse;
#[cfg(test)]
mod idle_tests;
// The transport against `tikv-mock` (was `tests/transport.rs`).
#[cfg(test)]
mod integration_tests;
mod policy;
mod pool;
mod unary;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use tikv_proto::tikvpb::batch_commands_request::request::Cmd;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tokio::runtime::Handle;

pub use unary::{UnaryRequest, UnaryResponse};

use self::policy::WaitLimits;
use self::pool::{StorePool, StoreShared};
use crate::config::{BatchTriggerOptions, Config, GrpcCompression};
use crate::error::GrpcCode;
use crate::tls::ClientTls;
use crate::{Error, Result};

/// gRPC metadata naming the store a request is meant for when it is sent through another one
/// (TiKV `src/server/proxy.rs`, client-go `forwardMetadataKey`).
pub(crate) const FORWARD_METADATA_KEY: &str = "tikv-forwarded-host";

/// gRPC metadata carrying the index of the connection a BatchCommands stream belongs to
/// (client-go `batchConnIdxMetadataKey`).
pub(crate) const BATCH_CONN_INDEX_METADATA_KEY: &str = "tikv-batch-conn-index";

/// How long a connection or a stream may take to open (client-go `dialTimeout`).
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a store's pool may go without requests before it is closed (client-go
/// `idleTimeout`).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(3 * 60);

/// How often the idle recycler looks for idle pools.
const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(15);

/// The transport settings, resolved once from [`Config`].
#[derive(Debug, Clone)]
pub(crate) struct TransportConfig {
    pub(crate) connection_count: usize,
    pub(crate) keepalive_time: Duration,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) gzip: bool,
    pub(crate) stream_window: u32,
    pub(crate) connection_window: u32,
    pub(crate) dial_timeout: Duration,
    pub(crate) limits: WaitLimits,
    pub(crate) max_concurrency: usize,
    pub(crate) trigger: BatchTriggerOptions,
    pub(crate) tls: Option<ClientTls>,
}

impl TransportConfig {
    fn from_config(config: &Config) -> Result<Self> {
        config.validate()?;
        let c = &config.tikv_client;
        let tls = if config.security.is_enabled() {
            let material = config.security.load()?;
            Some(ClientTls::from_material(&material)?.assume_http2())
        } else {
            None
        };
        Ok(TransportConfig {
            connection_count: c.grpc_connection_count,
            keepalive_time: c.grpc_keepalive_time,
            keepalive_timeout: c.grpc_keepalive_timeout,
            gzip: c.grpc_compression_type == GrpcCompression::Gzip,
            stream_window: c.grpc_initial_window_size,
            connection_window: c.grpc_initial_conn_window_size,
            dial_timeout: DIAL_TIMEOUT,
            limits: WaitLimits {
                max_batch_size: c.max_batch_size,
                max_batch_wait_time: c.max_batch_wait_time,
                batch_wait_size: c.batch_wait_size,
                overload_threshold: c.overload_threshold,
            },
            max_concurrency: usize::try_from(c.max_concurrency_request_limit).unwrap_or(usize::MAX),
            trigger: c.batch_policy.options(),
            tls,
        })
    }
}

/// The connections of a client to every TiKV store, by address (client-go `RPCClient`).
///
/// Cheap to clone. Its background tasks (one per BatchCommands stream) end when
/// [`Transport::close`] is called or the last clone is dropped; requests then fail with
/// [`Error::Closed`].
#[derive(Debug, Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<TransportConfig>,
    runtime: Handle,
    stores: RwLock<HashMap<Arc<str>, Arc<StorePool>>>,
    closed: AtomicBool,
    /// Tells the idle recycler to stop (sent on close; dropping it stops the task too).
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Inner {
    /// Closes the pools that have been idle for at least `idle_timeout`; returns how many.
    fn recycle_idle(&self, idle_timeout: Duration) -> usize {
        let is_idle = |pool: &StorePool| pool.idle_for().is_some_and(|d| d >= idle_timeout);
        let candidates: Vec<Arc<str>> = self
            .stores
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, pool)| is_idle(pool))
            .map(|(address, _)| address.clone())
            .collect();
        if candidates.is_empty() {
            return 0;
        }
        let mut recycled = Vec::new();
        {
            let mut stores = self.stores.write().unwrap_or_else(PoisonError::into_inner);
            for address in candidates {
                // Checked again under the lock: a request may have started meanwhile.
                if stores.get(&address).is_some_and(|pool| is_idle(pool))
                    && let Some(pool) = stores.remove(&address)
                {
                    recycled.push((address, pool));
                }
            }
        }
        let n = recycled.len();
        for (address, pool) in recycled {
            tracing::debug!(%address, "closing the connections of an idle store");
            pool.close(unavailable(
                &address,
                "the client closed its idle connections to the store",
            ));
        }
        n
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.shutdown.send_replace(true);
        let stores =
            std::mem::take(&mut *self.stores.write().unwrap_or_else(PoisonError::into_inner));
        for pool in stores.into_values() {
            pool.close(Error::Closed);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

impl Transport {
    /// A transport with the connection, batching and TLS settings of `config`
    /// (`[tikv-client]` and `[security]`). Opens no connection: each store's connections open
    /// on its first request.
    ///
    /// Must be called inside a tokio runtime; the transport's tasks run on that runtime.
    pub fn new(config: &Config) -> Result<Transport> {
        let runtime = Handle::try_current().map_err(|_| {
            Error::invalid_argument("the transport must be created inside a tokio runtime")
        })?;
        let (shutdown, stop) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            config: Arc::new(TransportConfig::from_config(config)?),
            runtime: runtime.clone(),
            stores: RwLock::new(HashMap::new()),
            closed: AtomicBool::new(false),
            shutdown,
        });
        runtime.spawn(recycle_idle_stores(Arc::downgrade(&inner), stop));
        Ok(Transport { inner })
    }

    /// Closes the pools idle for at least `idle_timeout` now (the recycler's check, for tests).
    #[cfg(test)]
    pub(crate) fn recycle_idle(&self, idle_timeout: Duration) -> usize {
        self.inner.recycle_idle(idle_timeout)
    }

    /// The client of the store at `address` (`host:port`), made on first use. Keep it: it is a
    /// cheap handle, and reusing it spares the address lookup on every request.
    pub fn store(&self, address: &str) -> Result<StoreClient> {
        if let Some(store) = self
            .inner
            .stores
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(address)
        {
            return Ok(StoreClient::of(store));
        }
        let mut stores = self
            .inner
            .stores
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock so that `close` cannot miss a pool made concurrently.
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        if let Some(store) = stores.get(address) {
            return Ok(StoreClient::of(store));
        }
        let pool = StorePool::new(address, self.inner.config.clone(), &self.inner.runtime)?;
        let store = StoreClient::of(&pool);
        stores.insert(Arc::from(address), pool);
        Ok(store)
    }

    /// This transport's identity, for caches that keep its [`StoreClient`]s (the address of its
    /// shared state: equal for clones, distinct between live transports).
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// Closes the connections to one store (client-go `CloseAddr`): its pending requests fail
    /// with a retryable error, existing [`StoreClient`]s of it stop working, and the next
    /// [`Transport::store`] call for the address opens fresh connections.
    pub fn close_store(&self, address: &str) {
        let removed = self
            .inner
            .stores
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(address);
        if let Some(pool) = removed {
            pool.close(unavailable(
                address,
                "the client closed its connections to the store",
            ));
        }
    }

    /// Closes every connection and ends every background task; pending and later requests
    /// fail with [`Error::Closed`].
    pub fn close(&self) {
        self.inner.close();
    }
}

/// The idle recycler: every [`IDLE_CHECK_INTERVAL`], closes the pools idle for
/// [`IDLE_TIMEOUT`]. Holds the transport weakly, and stops when it closes or is dropped.
async fn recycle_idle_stores(inner: Weak<Inner>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(IDLE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A close, or the sender dropped with the transport.
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        inner.recycle_idle(IDLE_TIMEOUT);
    }
}

/// Sends requests to one store. A cheap handle (clone it freely); see [`Transport::store`].
///
/// The [`Transport`] owns the connections: once it is closed or dropped (or
/// [`Transport::close_store`] closed this store), the handle only returns errors.
#[derive(Debug, Clone)]
pub struct StoreClient {
    pool: Weak<StorePool>,
    store: Arc<StoreShared>,
}

impl StoreClient {
    fn of(pool: &Arc<StorePool>) -> Self {
        StoreClient {
            pool: Arc::downgrade(pool),
            store: pool.shared().clone(),
        }
    }

    fn pool(&self) -> Result<Arc<StorePool>> {
        self.pool.upgrade().ok_or_else(|| self.store.close_error())
    }

    /// Whether the connections behind this handle still take requests: false once the
    /// transport, or this store's pool ([`Transport::close_store`]), was closed. A handle kept
    /// across requests is replaced when this turns false.
    pub(crate) fn is_open(&self) -> bool {
        !self.store.is_closed() && self.pool.strong_count() > 0
    }

    // Read by the tests and the transport benchmark only.
    #[cfg(any(test, feature = "unstable-internals"))]
    /// The store's address.
    pub fn address(&self) -> &str {
        &self.store.address
    }

    /// Sends one command and waits for its answer, at most `opts.timeout`. The answer is
    /// boxed: the response enum is kilobytes, so it travels by pointer.
    ///
    /// The command goes through a BatchCommands stream, coalesced with concurrent ones, unless
    /// batching is off (`max-batch-size = 0`) or the store does not serve BatchCommands; then
    /// it is a unary RPC. A region-wide ResolveLock identical to one in flight waits for that
    /// one's answer instead of being sent again.
    ///
    /// Errors: [`Error::Timeout`] when the answer does not come in time; a retryable
    /// [`Error::Grpc`] when the connection or stream failed (the command may or may not have
    /// been executed); [`Error::Closed`] after [`Transport::close`].
    pub fn send(
        &self,
        cmd: Cmd,
        opts: SendOptions,
    ) -> impl Future<Output = Result<Box<RespCmd>>> + Send + 'static + use<> {
        // Boxed before the future is built, so that the future (which callers' futures embed
        // and move) carries a pointer, not the command.
        let cmd = Box::new(cmd);
        let pool = self.pool();
        async move { pool?.send(cmd, opts).await }
    }

    /// Sends one unary RPC: a command without a BatchCommands slot, or any command when the
    /// caller wants it unbatched.
    pub async fn unary(&self, req: UnaryRequest, opts: SendOptions) -> Result<UnaryResponse> {
        self.pool()?.unary(req, &opts).await
    }

    // Read by the tests and the transport benchmark only.
    #[cfg(any(test, feature = "unstable-internals"))]
    /// The newest health feedback the store attached to a BatchCommands answer, if any.
    pub fn health_feedback(&self) -> Option<HealthFeedback> {
        self.store.health_feedback()
    }

    /// Probes whether the store is alive with the gRPC health service, on a connection of its
    /// own, waiting at most `timeout` (client-go `requestLiveness`, `store-liveness-timeout`).
    pub async fn check_liveness(&self, timeout: Duration) -> Liveness {
        match self.pool.upgrade() {
            Some(pool) => pool.check_liveness(timeout).await,
            None => Liveness::Unknown,
        }
    }

    /// The slow score of the newest health feedback, without taking a lock (`None` before the
    /// store sent any).
    pub fn slow_score(&self) -> Option<i64> {
        self.store.slow_score()
    }

    // Read by the tests and the transport benchmark only.
    #[cfg(any(test, feature = "unstable-internals"))]
    /// The store's last reported transport-layer load (0 until it reports one).
    pub fn transport_layer_load(&self) -> u64 {
        self.store.load()
    }

    // Read by the tests and the transport benchmark only.
    #[cfg(any(test, feature = "unstable-internals"))]
    /// Counters of this store's connections.
    pub fn stats(&self) -> TransportStats {
        match self.pool.upgrade() {
            Some(pool) => pool.stats(),
            None => self.store.stats(0, 0),
        }
    }
}

/// How to send one request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SendOptions {
    /// The longest to wait for the answer, queueing included.
    pub timeout: Duration,
    /// The address of the store that should handle the request when it is sent through
    /// another store (the `tikv-forwarded-host` header); `None` for the store itself.
    pub forwarded_host: Option<Arc<str>>,
    /// Scheduling priority under the concurrency limit (resource control's override priority):
    /// higher goes first, and from 10 on a request is never held back by the limit.
    pub priority: u64,
}

impl SendOptions {
    /// Options with a timeout, no forwarding and priority 0.
    pub fn new(timeout: Duration) -> Self {
        SendOptions {
            timeout,
            forwarded_host: None,
            priority: 0,
        }
    }

    /// Has the receiving store forward the request to the store at `address`.
    pub fn with_forwarded_host(mut self, address: impl Into<Arc<str>>) -> Self {
        self.forwarded_host = Some(address.into());
        self
    }

    /// Sets the priority under the concurrency limit.
    pub fn with_priority(mut self, priority: u64) -> Self {
        self.priority = priority;
        self
    }
}

/// Health feedback a store sent with its BatchCommands answers (`kvrpcpb.HealthFeedback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthFeedback {
    /// The store that reported.
    pub store_id: u64,
    /// Sequence number; higher is newer.
    pub feedback_seq_no: u64,
    /// TiKV's slow score, 1 (healthy) to 100.
    pub slow_score: i32,
    /// When this client received it.
    pub received_at: Instant,
}

/// What a liveness probe found (client-go `livenessState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Liveness {
    /// The store answered SERVING.
    Reachable,
    /// No connection, no answer in time, or NOT_SERVING.
    Unreachable,
    /// The store answered, but did not say whether it serves (or the transport is closed).
    Unknown,
}

/// Counters of one store's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TransportStats {
    /// BatchCommands messages sent.
    pub batch_messages: u64,
    /// Requests sent in those messages.
    pub batched_requests: u64,
    /// Unary RPCs sent.
    pub unary_calls: u64,
    /// Requests sent and not answered yet.
    pub inflight: usize,
    /// Requests waiting to be sent (for a stream to open, or for room under the limit).
    pub queued: usize,
    /// Background tasks running (one per BatchCommands stream).
    pub live_tasks: usize,
    /// The store's last reported transport-layer load.
    pub transport_layer_load: u64,
    /// Whether the store refused BatchCommands, so requests go unary.
    pub batch_unsupported: bool,
}

impl TransportStats {
    // Read by the transport benchmark only.
    #[cfg(feature = "unstable-internals")]
    /// Mean requests per BatchCommands message (0 before the first one).
    pub fn mean_batch_size(&self) -> f64 {
        if self.batch_messages == 0 {
            return 0.0;
        }
        self.batched_requests as f64 / self.batch_messages as f64
    }
}

/// A retryable transport failure at `address`.
pub(crate) fn unavailable(address: &str, message: impl Into<String>) -> Error {
    Error::Grpc {
        address: address.to_owned(),
        code: GrpcCode::Unavailable,
        message: message.into(),
        source: None,
    }
}

/// A request that got no answer within its timeout.
pub(crate) fn timeout_error(method: &str, address: &str, after: Duration) -> Error {
    Error::Timeout {
        operation: format!("{method} to {address}"),
        after,
    }
}
