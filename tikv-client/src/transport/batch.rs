//! One BatchCommands stream: the queue callers push into, the request stream that turns the
//! queue into `BatchCommandsRequest` messages, and the driver task that opens the stream,
//! demultiplexes the answers by request id and re-creates the stream after a failure.
//!
//! How a request travels:
//!
//! 1. A caller ([`super::StoreClient::send`]) pushes an [`Entry`] (the command and a one-shot
//!    reply slot) into [`BatchStream::push`] and wakes whoever waits on the queue: the request
//!    stream when the gRPC stream is open, the driver when it is idle.
//! 2. The gRPC body of the open call is a [`RequestStream`]. hyper polls it from the stream's
//!    own send task; each poll drains everything queued (up to `max-batch-size` and the
//!    concurrency limit) into ONE message, so concurrent callers coalesce without a send task of
//!    ours and without a wake-up hop. A new batch yields once to the scheduler first, so that
//!    callers made ready by the same answer message all push before it is built; and when the
//!    batch policy says more requests are about to arrive, the poll holds the batch back for a
//!    few microseconds (`policy.rs`).
//!    The call is opened with message types of this module's own rather than the generated
//!    client's: messages leave as [`Outgoing`] (encoded in one piece) and answers arrive as
//!    [`Answers`] (each answer boxed as it is decoded); both save copies described there.
//! 3. Before a message leaves, its ids and reply slots go into the in-flight map. The driver
//!    task reads answer messages and completes the reply slots by id. Only these two sides
//!    touch the map; a caller that gives up just drops its receiver (and asks for a sweep), and
//!    its late answer is dropped.
//! 4. When the stream fails, every in-flight request fails with a retryable
//!    [`Error::Grpc`](crate::Error::Grpc) (UNAVAILABLE), queued requests stay queued, and the
//!    next demand opens a new stream. A stream that cannot be opened fails the queue too and
//!    makes the stream refuse new requests for a short, growing back-off, so that callers fail
//!    fast on a dead store.
//!
//! Ports client-go `internal/client/client_batch.go` (`batchCommandsClient`, `batchRecvLoop`,
//! `failPendingRequests`, `recreateStreamingClient`, `batchCommandsBuilder.buildWithLimit`),
//! `conn_batch.go` (`batchSendLoop`, `fetchAllPendingRequests`, `fetchMorePendingRequests`,
//! `getClientAndSend`) and `priority_queue.go` (high-priority requests bypass the concurrency
//! limit; within the limit, higher priorities go first).

use std::cmp::Reverse;
use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message;
use prost::encoding::{self, WireType};
use tikv_proto::kvrpcpb;
use tikv_proto::tikvpb::BatchCommandsRequest;
use tikv_proto::tikvpb::batch_commands_request::{self, request::Cmd};
use tikv_proto::tikvpb::batch_commands_response::{self, response::Cmd as RespCmd};
use tokio::sync::{Notify, oneshot};
use tokio_stream::Stream;
use tonic::codec::CompressionEncoding;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use super::policy::{self, Trigger, WaitSizer};
use super::pool::StoreShared;
use super::{BATCH_CONN_INDEX_METADATA_KEY, FORWARD_METADATA_KEY, unary};
use crate::{Error, Result};

/// Requests at or above this priority bypass the concurrency limit (client-go
/// `highTaskPriority`).
pub(crate) const HIGH_PRIORITY: u64 = 10;

/// Waits shorter than this are spent yielding to other tasks instead of on a timer: tokio's
/// timers tick in milliseconds, and the batch policies wait about 100µs.
const TIMER_GRANULARITY: Duration = Duration::from_millis(1);

/// Back-off after a stream could not be opened: client-go's gRPC connect back-off (100ms base,
/// ×1.6, ±20% jitter, 3s cap).
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);

/// The reply slot of one request.
pub(crate) type Reply = oneshot::Sender<Result<Box<RespCmd>>>;

/// A request waiting in the queue.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Boxed: the command enum is hundreds of bytes, and it moves several times on its way.
    pub(crate) cmd: Box<Cmd>,
    pub(crate) reply: Reply,
    pub(crate) priority: u64,
    pub(crate) arrived: Instant,
}

impl Entry {
    fn is_canceled(&self) -> bool {
        self.reply.is_closed()
    }
}

/// Where a stream is in its life.
#[derive(Debug)]
enum Phase {
    /// No gRPC stream; the next push makes the driver open one.
    Idle,
    /// A gRPC stream is open or being opened; pushes are drained by its request stream.
    Open,
    /// Opening failed recently: pushes fail at once with this error until the back-off ends.
    Backoff(Error),
    /// The transport or this store's pool was closed: pushes fail with this error.
    Closed(Error),
}

#[derive(Debug)]
struct Queue {
    entries: VecDeque<Entry>,
    /// Highest priority among the queued entries; 0 lets the common case skip any ordering.
    max_priority: u64,
    /// The task to wake on a push: the request stream's, or the idle driver's.
    waker: Option<Waker>,
    phase: Phase,
    /// Incremented for every gRPC stream; a request stream of an older one ends.
    generation: u64,
}

/// Sequential request ids hash well enough by themselves; SipHash would cost more than the
/// map operation.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing spreads consecutive ids over the table's buckets.
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

#[derive(Debug)]
struct Inflight {
    waiters: IdMap<Reply>,
    /// The gRPC stream the waiters were sent on.
    generation: u64,
    /// False once that stream failed: a late insert is failed instead of stranded.
    open: bool,
}

/// One BatchCommands stream of one connection, direct or forwarded through the store to
/// another one.
#[derive(Debug)]
pub(crate) struct BatchStream {
    store: Arc<StoreShared>,
    channel: Channel,
    conn_index: usize,
    forwarded_host: Option<Arc<str>>,
    queue: Mutex<Queue>,
    inflight: Mutex<Inflight>,
    /// Number of in-flight waiters, readable without the lock (concurrency limit, stats).
    inflight_len: AtomicUsize,
    next_id: AtomicU64,
    /// Set by the request stream when the concurrency limit stopped it; the driver wakes it
    /// when answers free room.
    limited: AtomicBool,
    /// A caller gave up on an in-flight request: the driver drops abandoned reply slots.
    sweep: Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data is still
    // consistent (every critical section is a handful of moves), so keep going.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl BatchStream {
    pub(crate) fn new(
        store: Arc<StoreShared>,
        channel: Channel,
        conn_index: usize,
        forwarded_host: Option<Arc<str>>,
    ) -> Arc<Self> {
        Arc::new(BatchStream {
            store,
            channel,
            conn_index,
            forwarded_host,
            queue: Mutex::new(Queue {
                entries: VecDeque::new(),
                max_priority: 0,
                waker: None,
                phase: Phase::Idle,
                generation: 0,
            }),
            inflight: Mutex::new(Inflight {
                waiters: IdMap::default(),
                generation: 0,
                open: false,
            }),
            inflight_len: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            limited: AtomicBool::new(false),
            sweep: Notify::new(),
        })
    }

    /// Queues the request in `slot`. Fails at once, leaving it in the slot, while the stream
    /// backs off after a failed open or once it is closed; the caller may try another
    /// connection.
    pub(crate) fn push(&self, slot: &mut Option<Entry>) -> Result<()> {
        let waker = {
            let mut queue = lock(&self.queue);
            match &queue.phase {
                Phase::Backoff(error) | Phase::Closed(error) => return Err(error.clone()),
                Phase::Idle | Phase::Open => {}
            }
            let Some(entry) = slot.take() else {
                return Ok(());
            };
            queue.max_priority = queue.max_priority.max(entry.priority);
            queue.entries.push_back(entry);
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Asks the driver to drop reply slots whose callers gave up.
    pub(crate) fn request_sweep(&self) {
        self.sweep.notify_one();
    }

    pub(crate) fn inflight_len(&self) -> usize {
        self.inflight_len.load(Ordering::Relaxed)
    }

    pub(crate) fn queued_len(&self) -> usize {
        lock(&self.queue).entries.len()
    }

    /// The driver task: opens the gRPC stream on demand, delivers answers, and re-creates the
    /// stream after a failure, until the store's pool or the transport is closed.
    pub(crate) async fn drive(self: Arc<Self>) {
        let _guard = DriverGuard(self.clone());
        let mut closed = self.store.closed.subscribe();
        let mut open_failures = 0u32;
        let mut replies = Vec::new();
        'life: loop {
            tokio::select! {
                biased;
                _ = closed.wait_for(Option::is_some) => break 'life,
                () = poll_fn(|cx| self.poll_demand(cx)) => {}
            }

            let generation = self.begin_stream();
            let request = match self.open_request(generation) {
                Ok(request) => request,
                Err(error) => {
                    // A forwarded host that is not a header value: nothing can go out.
                    self.end_stream(generation, &error, true);
                    continue;
                }
            };
            let opened = tokio::select! {
                biased;
                _ = closed.wait_for(Option::is_some) => break 'life,
                opened = tokio::time::timeout(
                    self.store.config.dial_timeout,
                    self.open_call(request),
                ) => opened,
            };
            // `Some(delivered)` when the stream opened: whether any answer came back on it.
            let (status, opened) = match opened {
                Err(_) => (
                    tonic::Status::deadline_exceeded(format!(
                        "opening the stream took longer than {:?}",
                        self.store.config.dial_timeout
                    )),
                    None,
                ),
                Ok(Err(status)) => (status, None),
                Ok(Ok(response)) => {
                    let mut inbound = response.into_inner();
                    let mut delivered = false;
                    let status = loop {
                        tokio::select! {
                            biased;
                            _ = closed.wait_for(Option::is_some) => break 'life,
                            () = self.sweep.notified() => self.sweep_canceled(),
                            message = inbound.message() => match message {
                                Ok(Some(message)) => {
                                    if let Err(status) = self.deliver(message, &mut replies) {
                                        break status;
                                    }
                                    delivered = true;
                                }
                                Ok(None) => {
                                    break tonic::Status::unavailable("the server ended the stream");
                                }
                                Err(status) => break status,
                            },
                        }
                    };
                    (status, Some(delivered))
                }
            };

            if status.code() == tonic::Code::Unimplemented {
                // The store does not serve BatchCommands: its requests go unary from now on.
                self.store.set_batch_unsupported();
            }
            let error = self.stream_error(&status);
            tracing::debug!(
                store = %self.store.address,
                conn = self.conn_index,
                forwarded_host = ?self.forwarded_host,
                %status,
                "BatchCommands stream failed"
            );
            // A stream that answered, or the first one that opened but died before answering,
            // broke on the server's side while the connection may be fine: reopen as soon as
            // someone asks, keeping what is queued. Repeated failures back off.
            match opened {
                Some(true) => open_failures = 0,
                _ => open_failures = open_failures.saturating_add(1),
            }
            if opened.is_some() && open_failures <= 1 {
                self.end_stream(generation, &error, false);
                continue;
            }
            self.end_stream(generation, &error, true);
            let delay = backoff_delay(open_failures);
            tokio::select! {
                biased;
                _ = closed.wait_for(Option::is_some) => break 'life,
                () = tokio::time::sleep(delay) => {}
            }
            let mut queue = lock(&self.queue);
            if matches!(queue.phase, Phase::Backoff(_)) {
                queue.phase = Phase::Idle;
            }
        }
        // `_guard` fails everything left with the close error.
    }

    /// Opens the BatchCommands call (what `TikvClient::batch_commands` does), decoding the
    /// answer messages as [`Answers`] instead of `BatchCommandsResponse`.
    async fn open_call(
        &self,
        request: tonic::Request<RequestStream>,
    ) -> std::result::Result<tonic::Response<tonic::Streaming<Answers>>, tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        if self.store.config.gzip {
            grpc = grpc
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        grpc.ready().await.map_err(|e| {
            let e: tonic::codegen::StdError = e.into();
            tonic::Status::unknown(format!("Service was not ready: {e}"))
        })?;
        let mut request = request;
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new("tikvpb.Tikv", "BatchCommands"));
        let path = PathAndQuery::from_static("/tikvpb.Tikv/BatchCommands");
        let codec = ProstCodec::<Outgoing, Answers>::default();
        grpc.streaming(request, path, codec).await
    }

    fn open_request(self: &Arc<Self>, generation: u64) -> Result<tonic::Request<RequestStream>> {
        let mut request = tonic::Request::new(RequestStream::new(self.clone(), generation));
        let metadata = request.metadata_mut();
        if let Some(host) = &self.forwarded_host {
            metadata.insert(FORWARD_METADATA_KEY, unary::forwarded_value(host)?);
        }
        metadata.insert(BATCH_CONN_INDEX_METADATA_KEY, self.conn_index.into());
        Ok(request)
    }

    /// Ready once something is queued; registers the driver to be woken by the next push.
    fn poll_demand(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut queue = lock(&self.queue);
        if !queue.entries.is_empty() {
            return Poll::Ready(());
        }
        queue.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn begin_stream(&self) -> u64 {
        let generation = {
            let mut queue = lock(&self.queue);
            queue.generation += 1;
            queue.phase = Phase::Open;
            queue.generation
        };
        let mut inflight = lock(&self.inflight);
        inflight.generation = generation;
        inflight.open = true;
        generation
    }

    /// Ends the stream `generation`: its request stream stops, its in-flight requests fail
    /// with `error`; with `back_off`, queued requests fail too and new ones are refused until
    /// the driver's back-off ends.
    fn end_stream(&self, generation: u64, error: &Error, back_off: bool) {
        // Bump the queue first: a request stream that drained entries before this point finds
        // the in-flight map closed below and fails them itself.
        let (queued, waker) = {
            let mut queue = lock(&self.queue);
            if queue.generation == generation {
                queue.generation += 1;
            }
            if matches!(queue.phase, Phase::Closed(_)) {
                (VecDeque::new(), queue.waker.take())
            } else if back_off {
                queue.phase = Phase::Backoff(error.clone());
                queue.max_priority = 0;
                (std::mem::take(&mut queue.entries), queue.waker.take())
            } else {
                queue.phase = Phase::Idle;
                (VecDeque::new(), queue.waker.take())
            }
        };
        let waiters = self.close_inflight();
        if let Some(waker) = waker {
            waker.wake();
        }
        for (_, reply) in waiters {
            let _ = reply.send(Err(error.clone()));
        }
        for entry in queued {
            let _ = entry.reply.send(Err(error.clone()));
        }
    }

    fn close_inflight(&self) -> IdMap<Reply> {
        let mut inflight = lock(&self.inflight);
        inflight.open = false;
        self.inflight_len.store(0, Ordering::Relaxed);
        std::mem::take(&mut inflight.waiters)
    }

    /// Closes the stream for good and fails everything queued or in flight with `error`.
    fn shut_down(&self, error: &Error) {
        let (queued, waker) = {
            let mut queue = lock(&self.queue);
            queue.generation += 1;
            queue.phase = Phase::Closed(error.clone());
            (std::mem::take(&mut queue.entries), queue.waker.take())
        };
        let waiters = self.close_inflight();
        if let Some(waker) = waker {
            waker.wake();
        }
        for (_, reply) in waiters {
            let _ = reply.send(Err(error.clone()));
        }
        for entry in queued {
            let _ = entry.reply.send(Err(error.clone()));
        }
    }

    /// Completes the requests answered by one message. Fails when the message is malformed,
    /// which ends the stream.
    fn deliver(
        &self,
        message: Answers,
        replies: &mut Vec<(Reply, Option<Box<RespCmd>>)>,
    ) -> std::result::Result<(), tonic::Status> {
        if let Some(feedback) = message.health_feedback {
            self.store.record_health_feedback(feedback);
        }
        if message.transport_layer_load > 0 {
            self.store.record_load(message.transport_layer_load);
        }
        if message.request_ids.len() != message.responses.len() {
            return Err(tonic::Status::internal(format!(
                "BatchCommandsResponse has {} request ids for {} responses",
                message.request_ids.len(),
                message.responses.len()
            )));
        }
        {
            let mut inflight = lock(&self.inflight);
            for (id, response) in message.request_ids.into_iter().zip(message.responses) {
                // An unknown id belongs to a caller that gave up (or to a failed stream).
                if let Some(reply) = inflight.waiters.remove(&id) {
                    replies.push((reply, response));
                }
            }
            self.inflight_len
                .store(inflight.waiters.len(), Ordering::Relaxed);
        }
        // Wake callers outside the lock: waking may have to unpark a worker thread.
        for (reply, cmd) in replies.drain(..) {
            let answer = cmd.ok_or_else(|| {
                Error::internal("TiKV answered a BatchCommands request without a response")
            });
            let _ = reply.send(answer);
        }
        if self.limited.swap(false, Ordering::AcqRel) {
            let waker = lock(&self.queue).waker.take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        Ok(())
    }

    fn sweep_canceled(&self) {
        let mut inflight = lock(&self.inflight);
        inflight.waiters.retain(|_, reply| !reply.is_closed());
        self.inflight_len
            .store(inflight.waiters.len(), Ordering::Relaxed);
    }

    /// What the requests of a failed stream see: always retryable, since the store may be
    /// reachable again (or through another connection) by the next attempt.
    fn stream_error(&self, status: &tonic::Status) -> Error {
        let via = match &self.forwarded_host {
            Some(host) => format!(" (forwarded to {host})"),
            None => String::new(),
        };
        super::unavailable(
            &self.store.address,
            format!(
                "BatchCommands stream{via} failed: {:?}: {}",
                status.code(),
                status.message()
            ),
        )
    }
}

/// Ends the driver's life, whether it returns or its task is dropped with the runtime.
struct DriverGuard(Arc<BatchStream>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        let error = self.0.store.close_error();
        self.0.shut_down(&error);
        self.0.store.task_ended();
    }
}

fn backoff_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = BACKOFF_BASE.as_secs_f64() * 1.6f64.powi(exp as i32);
    let capped = base.min(BACKOFF_MAX.as_secs_f64());
    let jitter = 1.0 + (fastrand::f64() * 0.4 - 0.2);
    Duration::from_secs_f64(capped * jitter)
}

/// A batch the request stream holds back for more requests.
#[derive(Debug, Clone, Copy)]
struct Holding {
    size: usize,
    until: Instant,
}

/// The body of a BatchCommands call: each poll turns what is queued into one message.
pub(crate) struct RequestStream {
    shared: Arc<BatchStream>,
    generation: u64,
    /// Entries drained but not yet sent: non-empty only while a batch is held back.
    pending: Vec<Entry>,
    holding: Option<Holding>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    trigger: Trigger,
    sizer: WaitSizer,
    /// Arrival of the last request sent, for the head arrival interval.
    last_arrival: Option<Instant>,
    replies: Vec<(u64, Reply)>,
    /// Whether the pending batch already yielded once (see `poll_next`).
    yielded: bool,
}

impl std::fmt::Debug for RequestStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestStream")
            .field("generation", &self.generation)
            .field("pending", &self.pending.len())
            .field("holding", &self.holding)
            .finish_non_exhaustive()
    }
}

impl RequestStream {
    fn new(shared: Arc<BatchStream>, generation: u64) -> Self {
        let config = &shared.store.config;
        RequestStream {
            trigger: Trigger::new(config.trigger),
            sizer: WaitSizer::new(config.limits.batch_wait_size),
            shared,
            generation,
            pending: Vec::new(),
            holding: None,
            timer: None,
            last_arrival: None,
            replies: Vec::new(),
            yielded: false,
        }
    }

    /// Puts drained but unsent requests back at the front of the queue for the next stream,
    /// or fails them when the stream is closed for good.
    fn give_back(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let waker = {
            let mut queue = lock(&self.shared.queue);
            match &queue.phase {
                Phase::Closed(error) | Phase::Backoff(error) => {
                    let error = error.clone();
                    drop(queue);
                    for entry in self.pending.drain(..) {
                        let _ = entry.reply.send(Err(error.clone()));
                    }
                    return;
                }
                Phase::Idle | Phase::Open => {}
            }
            for entry in self.pending.drain(..).rev() {
                queue.max_priority = queue.max_priority.max(entry.priority);
                queue.entries.push_front(entry);
            }
            queue.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Turns the pending entries into a message and registers their reply slots. `None` when
    /// every caller gave up or the stream has already failed.
    fn build(&mut self) -> Option<BatchCommandsRequest> {
        let shared = &*self.shared;
        self.sizer.observe(self.pending.len());
        let count = self.pending.len() as u64;
        let first_id = shared.next_id.fetch_add(count, Ordering::Relaxed);
        let mut requests = Vec::with_capacity(self.pending.len());
        let mut request_ids = Vec::with_capacity(self.pending.len());
        for (id, entry) in (first_id..).zip(self.pending.drain(..)) {
            if self.last_arrival.is_none_or(|last| entry.arrived > last) {
                self.last_arrival = Some(entry.arrived);
            }
            if entry.is_canceled() {
                continue;
            }
            requests.push(batch_commands_request::Request {
                cmd: Some(*entry.cmd),
            });
            request_ids.push(id);
            self.replies.push((id, entry.reply));
        }
        if requests.is_empty() {
            return None;
        }
        {
            let mut inflight = lock(&shared.inflight);
            if !inflight.open || inflight.generation != self.generation {
                drop(inflight);
                let error = super::unavailable(
                    &shared.store.address,
                    "BatchCommands stream failed before the request was sent",
                );
                for (_, reply) in self.replies.drain(..) {
                    let _ = reply.send(Err(error.clone()));
                }
                return None;
            }
            inflight.waiters.extend(self.replies.drain(..));
            shared
                .inflight_len
                .store(inflight.waiters.len(), Ordering::Relaxed);
        }
        shared.store.record_batch(requests.len());
        Some(BatchCommandsRequest {
            requests,
            request_ids,
            client_send_time_ns: unix_nanos(),
        })
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl Stream for RequestStream {
    type Item = Outgoing;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let config = &this.shared.store.config;
        let limits = config.limits;
        let max_concurrency = config.max_concurrency;
        let max = limits.max_batch_size.max(1);
        loop {
            let mut queue = lock(&this.shared.queue);
            if queue.generation != this.generation || !matches!(queue.phase, Phase::Open) {
                drop(queue);
                this.give_back();
                return Poll::Ready(None);
            }
            let fresh = this.pending.is_empty();
            let in_use = this.shared.inflight_len() + this.pending.len();
            let available = max_concurrency.saturating_sub(in_use);
            let room = max.saturating_sub(this.pending.len());
            let limited = take(&mut queue, &mut this.pending, room, available);
            if this.pending.is_empty() {
                queue.waker = Some(cx.waker().clone());
                this.shared.limited.store(limited, Ordering::Release);
                return Poll::Pending;
            }
            if fresh && !this.yielded {
                // Yield once before sending a new batch. The push that woke us usually came
                // from the first of several callers that just became ready (their answers
                // arrived in one message), and tokio runs a task woken that way right after
                // the waker; yielding lets the other callers push first. Measured with the
                // transport benchmark: about twice the requests per message at concurrency
                // 64 and 256, less CPU per request, no cost at concurrency 1.
                this.yielded = true;
                queue.waker = Some(cx.waker().clone());
                drop(queue);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if fresh || this.yielded {
                this.yielded = false;
                let head = this.pending[0].arrived;
                let interval = this
                    .last_arrival
                    .and_then(|last| head.checked_duration_since(last));
                this.holding = policy::decide(
                    &limits,
                    &mut this.trigger,
                    this.pending.len(),
                    interval,
                    this.shared.store.load(),
                    this.sizer.avg(),
                )
                .map(|wait| Holding {
                    size: wait.size,
                    until: Instant::now() + wait.for_at_most,
                });
            }
            let now = Instant::now();
            let hold_for = this.holding.and_then(|holding| {
                let full = this.pending.len() >= holding.size.min(max);
                (!full && !limited && now < holding.until).then(|| holding.until - now)
            });
            if let Some(left) = hold_for {
                // Hold the batch: a push wakes us, and so does the timer or our own yield.
                queue.waker = Some(cx.waker().clone());
                drop(queue);
                if left < TIMER_GRANULARITY {
                    // Re-polled after the tasks that are ready now, which may push.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let deadline = tokio::time::Instant::from_std(now + left);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            } else {
                drop(queue);
            }
            this.holding = None;
            if let Some(message) = this.build() {
                return Poll::Ready(Some(Outgoing(message)));
            }
        }
    }
}

/// Moves queued entries into `out`: at most `room` of them, of which at most `available` below
/// [`HIGH_PRIORITY`]; higher priorities first. Returns whether entries were left behind
/// because of `available`.
fn take(queue: &mut Queue, out: &mut Vec<Entry>, room: usize, available: usize) -> bool {
    let len = queue.entries.len();
    if len == 0 || room == 0 {
        return false;
    }
    if queue.max_priority == 0 {
        // Nobody is prioritised: first come, first served.
        let n = len.min(room).min(available);
        out.extend(queue.entries.drain(..n));
        if queue.entries.is_empty() {
            queue.max_priority = 0;
        }
        return n < len.min(room);
    }
    // Prioritised entries under a limit: order by priority (stable: FIFO within a priority).
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by_key(|&i| Reverse(queue.entries[i].priority));
    let mut rank = vec![usize::MAX; len];
    let (mut picked, mut normal, mut limited) = (0, 0, false);
    for &i in &order {
        if picked == room {
            break;
        }
        if queue.entries[i].priority >= HIGH_PRIORITY {
            rank[i] = picked;
            picked += 1;
        } else if normal < available {
            rank[i] = picked;
            picked += 1;
            normal += 1;
        } else {
            limited = true;
        }
    }
    let mut chosen = Vec::with_capacity(picked);
    let mut rest = VecDeque::with_capacity(len - picked);
    for (i, entry) in std::mem::take(&mut queue.entries).into_iter().enumerate() {
        if rank[i] == usize::MAX {
            rest.push_back(entry);
        } else {
            chosen.push((rank[i], entry));
        }
    }
    chosen.sort_by_key(|(r, _)| *r);
    out.extend(chosen.into_iter().map(|(_, entry)| entry));
    queue.max_priority = rest.iter().map(|e| e.priority).max().unwrap_or(0);
    queue.entries = rest;
    limited
}

/// A `BatchCommandsRequest` on its way out. prost writes a message one varint byte at a time,
/// and tonic's encode buffer turns each byte into a `memcpy` call; encoded first into a plain
/// vector (a reused one per thread) and handed over in one piece, a message costs one copy
/// instead (measured with the raw benchmark: about 2% of the client's CPU for one-key gets).
#[derive(Debug, Default)]
pub(crate) struct Outgoing(BatchCommandsRequest);

impl Message for Outgoing {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.clear();
                self.0.encode_raw(&mut *scratch);
                buf.put_slice(&scratch);
                // A rare huge message should not keep its buffer for the thread's life.
                if scratch.capacity() > SCRATCH_KEEP {
                    *scratch = Vec::new();
                }
            }
            // Only if encoding re-entered itself; write directly then.
            Err(_) => self.0.encode_raw(buf),
        });
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: encoding::DecodeContext,
    ) -> std::result::Result<(), prost::DecodeError> {
        self.0.merge_field(tag, wire_type, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// The largest encoding buffer a thread keeps between messages.
const SCRATCH_KEEP: usize = 1 << 20;

/// A `BatchCommandsResponse` as the driver decodes it: each answer is boxed as soon as it is
/// decoded. prost's own decoding of `responses` would store the answers in a vector of the
/// response enum, which is kilobytes wide whatever the answer: each one copied into the vector,
/// again whenever the vector grows, and once more on its way out into a box. Those copies were
/// a large share of the CPU spent per answer. Fields the client does not read
/// (`tikv_send_time_ns`) are skipped.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Answers {
    /// `responses[i].cmd`, boxed.
    responses: Vec<Option<Box<RespCmd>>>,
    request_ids: Vec<u64>,
    transport_layer_load: u64,
    health_feedback: Option<kvrpcpb::HealthFeedback>,
}

/// `BatchCommandsResponse` field numbers.
mod answer_field {
    pub(super) const RESPONSES: u32 = 1;
    pub(super) const REQUEST_IDS: u32 = 2;
    pub(super) const TRANSPORT_LAYER_LOAD: u32 = 3;
    pub(super) const HEALTH_FEEDBACK: u32 = 4;
}

impl Message for Answers {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        for cmd in &self.responses {
            encoding::encode_key(answer_field::RESPONSES, WireType::LengthDelimited, buf);
            encoding::encode_varint(cmd.as_ref().map_or(0, |c| c.encoded_len()) as u64, buf);
            if let Some(cmd) = cmd {
                cmd.encode(buf);
            }
        }
        encoding::uint64::encode_packed(answer_field::REQUEST_IDS, &self.request_ids, buf);
        if self.transport_layer_load != 0 {
            encoding::uint64::encode(
                answer_field::TRANSPORT_LAYER_LOAD,
                &self.transport_layer_load,
                buf,
            );
        }
        if let Some(feedback) = &self.health_feedback {
            encoding::message::encode(answer_field::HEALTH_FEEDBACK, feedback, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: encoding::DecodeContext,
    ) -> std::result::Result<(), prost::DecodeError> {
        match tag {
            answer_field::RESPONSES => {
                let mut response = batch_commands_response::Response::default();
                encoding::message::merge(wire_type, &mut response, buf, ctx)?;
                self.responses.push(response.cmd.map(Box::new));
                Ok(())
            }
            answer_field::REQUEST_IDS => {
                encoding::uint64::merge_repeated(wire_type, &mut self.request_ids, buf, ctx)
            }
            answer_field::TRANSPORT_LAYER_LOAD => {
                encoding::uint64::merge(wire_type, &mut self.transport_layer_load, buf, ctx)
            }
            answer_field::HEALTH_FEEDBACK => encoding::message::merge(
                wire_type,
                self.health_feedback.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let responses: usize = self
            .responses
            .iter()
            .map(|cmd| {
                let len = cmd.as_ref().map_or(0, |c| c.encoded_len());
                encoding::key_len(answer_field::RESPONSES)
                    + encoding::encoded_len_varint(len as u64)
                    + len
            })
            .sum();
        responses
            + encoding::uint64::encoded_len_packed(answer_field::REQUEST_IDS, &self.request_ids)
            + if self.transport_layer_load != 0 {
                encoding::uint64::encoded_len(
                    answer_field::TRANSPORT_LAYER_LOAD,
                    &self.transport_layer_load,
                )
            } else {
                0
            }
            + self.health_feedback.as_ref().map_or(0, |feedback| {
                encoding::message::encoded_len(answer_field::HEALTH_FEEDBACK, feedback)
            })
    }

    fn clear(&mut self) {
        *self = Answers::default();
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tikv_proto::tikvpb::BatchCommandsEmptyRequest;

    fn entry(test_id: u64, priority: u64) -> (Entry, oneshot::Receiver<Result<Box<RespCmd>>>) {
        let (reply, rx) = oneshot::channel();
        let entry = Entry {
            cmd: Box::new(Cmd::Empty(BatchCommandsEmptyRequest {
                test_id,
                delay_time: 0,
            })),
            reply,
            priority,
            arrived: Instant::now(),
        };
        (entry, rx)
    }

    fn queue_of(entries: impl IntoIterator<Item = Entry>) -> Queue {
        let mut queue = Queue {
            entries: VecDeque::new(),
            max_priority: 0,
            waker: None,
            phase: Phase::Open,
            generation: 1,
        };
        for e in entries {
            queue.max_priority = queue.max_priority.max(e.priority);
            queue.entries.push_back(e);
        }
        queue
    }

    fn ids(entries: &[Entry]) -> Vec<u64> {
        entries
            .iter()
            .map(|e| match &*e.cmd {
                Cmd::Empty(e) => e.test_id,
                _ => unreachable!(),
            })
            .collect()
    }

    // Ported from client-go internal/client/client_test.go TestBatchCommandsBuilder (no
    // forwarding groups here: each forwarded host has a queue of its own) and TestLimitConcurrency.
    #[test]
    fn take_is_fifo_up_to_room_and_limit() {
        let (entries, _rx): (Vec<_>, Vec<_>) = (1..=10).map(|i| entry(i, 0)).unzip();
        let mut queue = queue_of(entries);
        let mut out = Vec::new();
        assert!(!take(&mut queue, &mut out, 4, usize::MAX));
        assert_eq!(ids(&out), [1, 2, 3, 4]);
        out.clear();
        // Limited by the concurrency limit: reports it.
        assert!(take(&mut queue, &mut out, 128, 2));
        assert_eq!(ids(&out), [5, 6]);
        out.clear();
        assert!(take(&mut queue, &mut out, 128, 0));
        assert!(out.is_empty());
        assert!(!take(&mut queue, &mut out, 128, usize::MAX));
        assert_eq!(ids(&out), [7, 8, 9, 10]);
        assert_eq!(queue.max_priority, 0);
    }

    #[test]
    fn high_priority_bypasses_the_limit_and_goes_first() {
        let (entries, _rx): (Vec<_>, Vec<_>) = [(1, 0), (2, HIGH_PRIORITY - 1), (3, HIGH_PRIORITY)]
            .into_iter()
            .map(|(i, p)| entry(i, p))
            .unzip();
        let mut queue = queue_of(entries);
        let mut out = Vec::new();
        // No room for normal requests: only the high-priority one goes.
        assert!(take(&mut queue, &mut out, 128, 0));
        assert_eq!(ids(&out), [3]);
        assert_eq!(queue.max_priority, HIGH_PRIORITY - 1);
        out.clear();
        // One slot: the higher of the normal priorities takes it.
        assert!(take(&mut queue, &mut out, 128, 1));
        assert_eq!(ids(&out), [2]);
        out.clear();
        assert!(!take(&mut queue, &mut out, 128, 1));
        assert_eq!(ids(&out), [1]);
        assert_eq!(queue.max_priority, 0);
    }

    // Ported from client-go priority_queue_test.go TestPriority: highest first, FIFO among
    // equals, and `room` caps every take.
    #[test]
    fn priorities_order_a_limited_take() {
        let (entries, _rx): (Vec<_>, Vec<_>) = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 3)]
            .into_iter()
            .map(|(i, p)| entry(i, p))
            .unzip();
        let mut queue = queue_of(entries);
        let mut out = Vec::new();
        take(&mut queue, &mut out, 1, 5);
        assert_eq!(ids(&out), [5]);
        out.clear();
        take(&mut queue, &mut out, 3, 5);
        assert_eq!(ids(&out), [4, 3, 6]);
        out.clear();
        take(&mut queue, &mut out, 5, 5);
        assert_eq!(ids(&out), [2, 1]);
        assert!(queue.entries.is_empty());
        assert_eq!(queue.max_priority, 0);
    }

    #[test]
    fn outgoing_messages_encode_as_the_request_itself() {
        let request = BatchCommandsRequest {
            requests: vec![
                batch_commands_request::Request {
                    cmd: Some(Cmd::RawGet(kvrpcpb::RawGetRequest {
                        context: Some(kvrpcpb::Context {
                            region_id: 300,
                            request_source: "external_rawkv".into(),
                            max_execution_duration_ms: 30_000,
                            ..Default::default()
                        }),
                        key: bytes::Bytes::from_static(b"key"),
                        cf: String::new(),
                    })),
                },
                batch_commands_request::Request { cmd: None },
            ],
            request_ids: vec![1, 2],
            client_send_time_ns: 99,
        };
        let outgoing = Outgoing(request.clone());
        assert_eq!(outgoing.encoded_len(), request.encoded_len());
        assert_eq!(outgoing.encode_to_vec(), request.encode_to_vec());
        // Twice on one thread: the reused buffer starts empty each time.
        assert_eq!(outgoing.encode_to_vec(), request.encode_to_vec());
        let back = Outgoing::decode(request.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.0, request);
    }

    #[test]
    fn answers_decode_what_tikv_sends_and_encode_back_the_same() {
        use tikv_proto::tikvpb::BatchCommandsResponse;
        use tikv_proto::tikvpb::batch_commands_response::Response;

        let sent = BatchCommandsResponse {
            responses: vec![
                Response {
                    cmd: Some(RespCmd::RawGet(kvrpcpb::RawGetResponse {
                        value: bytes::Bytes::from_static(b"v"),
                        ..Default::default()
                    })),
                },
                Response { cmd: None },
                Response {
                    cmd: Some(RespCmd::RawBatchGet(kvrpcpb::RawBatchGetResponse {
                        pairs: vec![kvrpcpb::KvPair {
                            key: bytes::Bytes::from_static(b"k"),
                            value: bytes::Bytes::from_static(b"w"),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })),
                },
            ],
            request_ids: vec![7, 1 << 40, 9],
            transport_layer_load: 3,
            health_feedback: Some(kvrpcpb::HealthFeedback {
                store_id: 2,
                feedback_seq_no: 5,
                slow_score: 1,
            }),
            tikv_send_time_ns: 123,
        };
        let wire = sent.encode_to_vec();
        let answers = Answers::decode(wire.as_slice()).unwrap();
        assert_eq!(answers.request_ids, sent.request_ids);
        assert_eq!(answers.transport_layer_load, 3);
        assert_eq!(answers.health_feedback, sent.health_feedback);
        let cmds: Vec<Option<RespCmd>> = answers
            .responses
            .iter()
            .map(|c| c.as_deref().cloned())
            .collect();
        let sent_cmds: Vec<Option<RespCmd>> =
            sent.responses.iter().map(|r| r.cmd.clone()).collect();
        assert_eq!(cmds, sent_cmds);

        // Encoding them again gives what was sent, less the field the client skips.
        assert_eq!(answers.encoded_len(), answers.encode_to_vec().len());
        let back = BatchCommandsResponse::decode(answers.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            back,
            BatchCommandsResponse {
                tikv_send_time_ns: 0,
                ..sent
            }
        );
        assert_eq!(Answers::decode(&[][..]).unwrap(), Answers::default());
    }

    #[test]
    fn id_hasher_spreads_sequential_ids() {
        let mut map: IdMap<u64> = IdMap::default();
        for id in 0..1000 {
            map.insert(id, id);
        }
        assert!((0..1000).all(|id| map.get(&id) == Some(&id)));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let first = backoff_delay(1);
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        let late = backoff_delay(50);
        assert!(late <= Duration::from_secs_f64(3.0 * 1.2));
        assert!(late >= Duration::from_secs_f64(3.0 * 0.8));
    }
}
