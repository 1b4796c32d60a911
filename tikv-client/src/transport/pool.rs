//! The connections to one store: `grpc-connection-count` HTTP/2 connections, each with one
//! BatchCommands stream (plus one per forwarded host, made on first use), the store's health
//! feedback and load as its streams report them, and the send paths (batched, unary, collapsed
//! ResolveLock) that [`super::StoreClient`] exposes.
//!
//! Ports client-go `internal/client/conn_pool.go` (`connPool`: dial options, keepalive, window
//! sizes, gzip, the batch clients of each connection) and the connection choice of
//! `conn_batch.go` (`getClientAndSend`: round robin, skipping connections that cannot take
//! requests, failing fast when none can).

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tikv_proto::kvrpcpb;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tikv_proto::tikvpb::tikv_client::TikvClient;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::batch::{BatchStream, Entry};
use super::collapse::{self, Collapse, Role};
use super::unary::{self, UnaryRequest, UnaryResponse};
use super::{HealthFeedback, Liveness, SendOptions, TransportConfig, TransportStats};
use crate::{Error, Result};

/// What every stream and caller of one store shares.
#[derive(Debug)]
pub(crate) struct StoreShared {
    pub(crate) address: Arc<str>,
    pub(crate) config: Arc<TransportConfig>,
    /// `Some(error)` once the pool is closed: what pending and new requests fail with.
    pub(crate) closed: watch::Sender<Option<Error>>,
    /// Set with `closed`, readable without its lock (kept clients check it on every send).
    is_closed: AtomicBool,
    health: Mutex<Option<HealthFeedback>>,
    /// The slow score of `health`, readable without the lock on every answer (`i64::MIN`
    /// before the first feedback).
    slow_score: AtomicI64,
    load: AtomicU64,
    batch_unsupported: AtomicBool,
    batch_messages: AtomicU64,
    batched_requests: AtomicU64,
    unary_calls: AtomicU64,
    live_tasks: AtomicUsize,
    /// When the pool was made; `last_used` counts whole seconds from here.
    created: Instant,
    /// The second (since `created`) of the latest request, for the idle recycler. Written at
    /// most once a second, so that concurrent senders do not fight over its cache line.
    last_used: AtomicU64,
    /// Unary calls in progress (batched requests are counted by their streams).
    unary_inflight: AtomicUsize,
}

/// Counts a unary call as in progress until dropped (the call finished or was cancelled).
struct UnaryInflight<'a>(&'a AtomicUsize);

impl<'a> UnaryInflight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        UnaryInflight(counter)
    }
}

impl Drop for UnaryInflight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StoreShared {
    /// Records that a request is being sent at `now` (the send path's own clock reading).
    fn touch(&self, now: Instant) {
        let now = now.saturating_duration_since(self.created).as_secs();
        if self.last_used.load(Ordering::Relaxed) < now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_health_feedback(&self, feedback: kvrpcpb::HealthFeedback) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        // Streams of several connections race; keep the newest the store sent.
        if health
            .as_ref()
            .is_some_and(|h| h.feedback_seq_no > feedback.feedback_seq_no)
        {
            return;
        }
        self.slow_score
            .store(i64::from(feedback.slow_score), Ordering::Relaxed);
        *health = Some(HealthFeedback {
            store_id: feedback.store_id,
            feedback_seq_no: feedback.feedback_seq_no,
            slow_score: feedback.slow_score,
            received_at: Instant::now(),
        });
    }

    pub(crate) fn record_load(&self, load: u64) {
        self.load.store(load, Ordering::Relaxed);
    }

    pub(crate) fn load(&self) -> u64 {
        self.load.load(Ordering::Relaxed)
    }

    pub(crate) fn record_batch(&self, requests: usize) {
        self.batch_messages.fetch_add(1, Ordering::Relaxed);
        self.batched_requests
            .fetch_add(requests as u64, Ordering::Relaxed);
    }

    pub(crate) fn set_batch_unsupported(&self) {
        if !self.batch_unsupported.swap(true, Ordering::Relaxed) {
            tracing::info!(
                store = %self.address,
                "store does not serve BatchCommands; sending its requests as unary RPCs"
            );
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::Acquire)
    }

    pub(crate) fn close_error(&self) -> Error {
        self.closed.borrow().clone().unwrap_or(Error::Closed)
    }

    pub(crate) fn task_ended(&self) {
        self.live_tasks.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn slow_score(&self) -> Option<i64> {
        match self.slow_score.load(Ordering::Relaxed) {
            i64::MIN => None,
            score => Some(score),
        }
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn health_feedback(&self) -> Option<HealthFeedback> {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stats(&self, inflight: usize, queued: usize) -> TransportStats {
        TransportStats {
            batch_messages: self.batch_messages.load(Ordering::Relaxed),
            batched_requests: self.batched_requests.load(Ordering::Relaxed),
            unary_calls: self.unary_calls.load(Ordering::Relaxed),
            inflight,
            queued,
            live_tasks: self.live_tasks.load(Ordering::Relaxed),
            transport_layer_load: self.load(),
            batch_unsupported: self.batch_unsupported.load(Ordering::Relaxed),
        }
    }

    fn batching(&self) -> bool {
        self.config.limits.max_batch_size > 0 && !self.batch_unsupported.load(Ordering::Relaxed)
    }
}

/// One HTTP/2 connection and its BatchCommands streams.
#[derive(Debug)]
struct Conn {
    channel: Channel,
    direct: Arc<BatchStream>,
    /// Streams whose requests the store forwards to another one, by that store's address.
    forwarded: RwLock<HashMap<Arc<str>, Arc<BatchStream>>>,
}

/// The stream a request went to.
enum Picked<'a> {
    Direct(&'a Arc<BatchStream>),
    Forwarded(Arc<BatchStream>),
}

impl Deref for Picked<'_> {
    type Target = BatchStream;

    fn deref(&self) -> &BatchStream {
        match self {
            Picked::Direct(stream) => stream,
            Picked::Forwarded(stream) => stream,
        }
    }
}

/// Asks for a sweep when a caller stops waiting for an answer, by timeout or by being dropped.
struct AbandonGuard<'a> {
    stream: Picked<'a>,
    answered: bool,
}

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.stream.request_sweep();
        }
    }
}

/// The pool of one store.
#[derive(Debug)]
pub(crate) struct StorePool {
    shared: Arc<StoreShared>,
    conns: Box<[Conn]>,
    next: AtomicUsize,
    runtime: Handle,
    collapse: Collapse,
    /// For liveness probes, which use connections of their own.
    endpoint: Endpoint,
}

impl StorePool {
    /// Opens no connection yet: channels connect on first use, streams on first request.
    pub(crate) fn new(
        address: &str,
        config: Arc<TransportConfig>,
        runtime: &Handle,
    ) -> Result<Arc<StorePool>> {
        let endpoint = endpoint(address, &config)?;
        let shared = Arc::new(StoreShared {
            address: Arc::from(address),
            config: config.clone(),
            closed: watch::Sender::new(None),
            is_closed: AtomicBool::new(false),
            health: Mutex::new(None),
            slow_score: AtomicI64::new(i64::MIN),
            load: AtomicU64::new(0),
            batch_unsupported: AtomicBool::new(false),
            batch_messages: AtomicU64::new(0),
            batched_requests: AtomicU64::new(0),
            unary_calls: AtomicU64::new(0),
            live_tasks: AtomicUsize::new(0),
            created: Instant::now(),
            last_used: AtomicU64::new(0),
            unary_inflight: AtomicUsize::new(0),
        });
        // Channels spawn their worker tasks on the runtime they are made in.
        let _entered = runtime.enter();
        let conns: Box<[Conn]> = (0..config.connection_count.max(1))
            .map(|index| {
                let channel = endpoint.connect_lazy();
                Conn {
                    direct: BatchStream::new(shared.clone(), channel.clone(), index, None),
                    channel,
                    forwarded: RwLock::new(HashMap::new()),
                }
            })
            .collect();
        let pool = Arc::new(StorePool {
            shared,
            conns,
            next: AtomicUsize::new(0),
            runtime: runtime.clone(),
            collapse: Collapse::default(),
            endpoint,
        });
        if config.limits.max_batch_size > 0 {
            for conn in &pool.conns {
                pool.spawn_driver(&conn.direct);
            }
        }
        Ok(pool)
    }

    fn spawn_driver(&self, stream: &Arc<BatchStream>) {
        self.shared.live_tasks.fetch_add(1, Ordering::Relaxed);
        self.runtime.spawn(stream.clone().drive());
    }

    /// Closes every stream; pending and later requests fail with `error`.
    pub(crate) fn close(&self, error: Error) {
        self.shared.is_closed.store(true, Ordering::Release);
        self.shared.closed.send_if_modified(|closed| {
            if closed.is_some() {
                return false;
            }
            *closed = Some(error);
            true
        });
    }

    /// Asks the store's gRPC health service whether it serves, on a fresh connection so that a
    /// stuck pooled connection cannot hide a healthy store (client-go `invokeKVStatusAPI`).
    pub(crate) async fn check_liveness(&self, timeout: Duration) -> Liveness {
        let probe = async {
            let channel = self.endpoint.connect().await.ok()?;
            let request = HealthCheckRequest {
                service: String::new(),
            };
            let response = HealthClient::new(channel).check(request).await.ok()?;
            Some(response.into_inner().status)
        };
        match tokio::time::timeout(timeout, probe).await {
            Ok(Some(status)) => match ServingStatus::try_from(status) {
                Ok(ServingStatus::Serving) => Liveness::Reachable,
                Ok(ServingStatus::NotServing) => Liveness::Unreachable,
                Ok(ServingStatus::Unknown | ServingStatus::ServiceUnknown) | Err(_) => {
                    Liveness::Unknown
                }
            },
            Ok(None) | Err(_) => Liveness::Unreachable,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<StoreShared> {
        &self.shared
    }

    pub(crate) fn stats(&self) -> TransportStats {
        let (mut inflight, mut queued) = (0, 0);
        for conn in &self.conns {
            let forwarded = conn
                .forwarded
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            for stream in std::iter::once(&conn.direct).chain(forwarded.values()) {
                inflight += stream.inflight_len();
                queued += stream.queued_len();
            }
        }
        self.shared.stats(inflight, queued)
    }

    /// How long the pool has had no request in progress and none sent, to the second; `None`
    /// while a request is in progress (queued, in flight or a unary call).
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        if self.shared.unary_inflight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let stats = self.stats();
        if stats.inflight > 0 || stats.queued > 0 {
            return None;
        }
        let last = Duration::from_secs(self.shared.last_used.load(Ordering::Relaxed));
        Some(self.shared.created.elapsed().saturating_sub(last))
    }

    fn check_open(&self) -> Result<()> {
        match &*self.shared.closed.borrow() {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }

    /// Sends one command, batched unless batching is off or the store refuses it.
    pub(crate) async fn send(&self, cmd: Box<Cmd>, opts: SendOptions) -> Result<Box<RespCmd>> {
        if opts.timeout.is_zero() {
            // The deadline has passed: sending could only waste the store's time.
            return Err(super::timeout_error(
                unary::cmd_method(&cmd),
                &self.shared.address,
                opts.timeout,
            ));
        }
        if let Cmd::ResolveLock(req) = &*cmd
            && let Some(key) = collapse::key_of(req)
        {
            // Boxed, like the unary fallback below: both are rare, and their futures (the
            // unary one is over 10 kB) would otherwise be embedded in every send's future and
            // copied each time it moves.
            return Box::pin(self.send_collapsed(key, cmd, opts)).await;
        }
        self.send_one(cmd, &opts).await
    }

    async fn send_one(&self, cmd: Box<Cmd>, opts: &SendOptions) -> Result<Box<RespCmd>> {
        if !self.shared.batching() {
            return Box::pin(self.send_unary_cmd(cmd, opts)).await;
        }
        let method = unary::cmd_method(&cmd);
        let arrived = Instant::now();
        self.shared.touch(arrived);
        let (reply, answer) = oneshot::channel();
        let entry = Entry {
            cmd,
            reply,
            priority: opts.priority,
            arrived,
        };
        let stream = self.enqueue(entry, opts)?;
        let mut guard = AbandonGuard {
            stream,
            answered: false,
        };
        let deadline = tokio::time::Instant::from_std(arrived) + opts.timeout;
        let result = tokio::time::timeout_at(deadline, answer).await;
        // A timed-out caller leaves a reply slot in flight: have the driver drop it.
        guard.answered = result.is_ok();
        match result {
            Ok(Ok(answer)) => answer,
            // The reply slot was dropped unanswered: only when the stream is torn down.
            Ok(Err(_)) => Err(self.check_open().err().unwrap_or_else(|| {
                super::unavailable(
                    &self.shared.address,
                    "the BatchCommands stream dropped the request",
                )
            })),
            Err(_) => Err(super::timeout_error(
                method,
                &self.shared.address,
                opts.timeout,
            )),
        }
    }

    /// A command sent as its own unary RPC (batching off, or the store refuses BatchCommands).
    async fn send_unary_cmd(&self, cmd: Box<Cmd>, opts: &SendOptions) -> Result<Box<RespCmd>> {
        match self.unary(UnaryRequest::Cmd(*cmd), opts).await? {
            UnaryResponse::Cmd(resp) => Ok(Box::new(resp)),
            other => Err(Error::internal(format!(
                "unary call answered with {other:?} for a command"
            ))),
        }
    }

    /// Pushes the entry onto the next connection's stream that takes it (round robin).
    fn enqueue(&self, entry: Entry, opts: &SendOptions) -> Result<Picked<'_>> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut slot = Some(entry);
        let mut last_error = Error::Closed;
        for k in 0..n {
            let index = (start + k) % n;
            let conn = &self.conns[index];
            let stream = match &opts.forwarded_host {
                None => Picked::Direct(&conn.direct),
                Some(host) => Picked::Forwarded(self.forwarded_stream(conn, index, host)?),
            };
            match stream.push(&mut slot) {
                Ok(()) => return Ok(stream),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    fn forwarded_stream(
        &self,
        conn: &Conn,
        index: usize,
        host: &Arc<str>,
    ) -> Result<Arc<BatchStream>> {
        if let Some(stream) = conn
            .forwarded
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
        {
            return Ok(stream.clone());
        }
        unary::forwarded_value(host)?;
        self.check_open()?;
        let mut forwarded = conn
            .forwarded
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let stream = forwarded.entry(host.clone()).or_insert_with(|| {
            let stream = BatchStream::new(
                self.shared.clone(),
                conn.channel.clone(),
                index,
                Some(host.clone()),
            );
            self.spawn_driver(&stream);
            stream
        });
        Ok(stream.clone())
    }

    /// A region-wide ResolveLock: joins an identical one in flight, or sends it and shares
    /// the answer.
    async fn send_collapsed(
        &self,
        key: collapse::Key,
        cmd: Box<Cmd>,
        opts: SendOptions,
    ) -> Result<Box<RespCmd>> {
        let deadline = tokio::time::Instant::now() + opts.timeout;
        loop {
            match self.collapse.join(key) {
                Role::Leader(leader) => {
                    let result = self.send_one(cmd, &opts).await;
                    leader.finish(&result);
                    return result;
                }
                Role::Follower(outcome) => {
                    match tokio::time::timeout_at(deadline, collapse::follow(outcome)).await {
                        Ok(Some(result)) => return result,
                        // The leader went away unanswered: try again, perhaps as the leader.
                        Ok(None) => continue,
                        Err(_) => {
                            return Err(super::timeout_error(
                                "KvResolveLock",
                                &self.shared.address,
                                opts.timeout,
                            ));
                        }
                    }
                }
            }
        }
    }

    /// One unary RPC on the next connection.
    pub(crate) async fn unary(
        &self,
        req: UnaryRequest,
        opts: &SendOptions,
    ) -> Result<UnaryResponse> {
        self.check_open()?;
        self.shared.touch(Instant::now());
        let _inflight = UnaryInflight::enter(&self.shared.unary_inflight);
        if opts.timeout.is_zero() {
            return Err(super::timeout_error(
                req.method(),
                &self.shared.address,
                opts.timeout,
            ));
        }
        let n = self.conns.len();
        let conn = &self.conns[self.next.fetch_add(1, Ordering::Relaxed) % n];
        let mut client = TikvClient::new(conn.channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        if self.shared.config.gzip {
            client = client
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        self.shared.unary_calls.fetch_add(1, Ordering::Relaxed);
        unary::call(client, &self.shared.address, req, opts).await
    }
}

/// The endpoint of every connection to `address`: keepalive, windows, dial timeout, TLS.
fn endpoint(address: &str, config: &TransportConfig) -> Result<Endpoint> {
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| Error::invalid_argument(format!("bad store address {address:?}: {e}")))?
        .connect_timeout(config.dial_timeout)
        .http2_keep_alive_interval(config.keepalive_time)
        .keep_alive_timeout(config.keepalive_timeout)
        .initial_stream_window_size(config.stream_window)
        .initial_connection_window_size(config.connection_window)
        .tcp_nodelay(true);
    match &config.tls {
        Some(tls) => tls.apply(endpoint, address),
        None => Ok(endpoint),
    }
}
