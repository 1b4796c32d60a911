//! Timestamps from PD's TSO: one long-lived `Tso` stream to the leader and request batching.
//!
//! Who calls it: `PdClient::get_timestamp` (and through it the oracle's `TimestampSource`)
//! joins a batch here; one dispatcher task per client, started by `PdClient::connect`, sends the
//! batches and hands out the answers. Nothing is spawned per request.
//!
//! How a batch works. A caller takes the lock of the queue, joins the open batch at the next
//! index and waits on the batch. When the stream is free, the dispatcher takes every queued
//! batch at once (whatever arrived while the previous answer was on its way: no added latency
//! when idle, large batches under load), sends one `TsoRequest` per batch whose `count` is the
//! number of callers that joined, and completes the batch with PD's answer. PD answers with the
//! *last* timestamp of the range it allocated, so the first is `logical - count + 1` and the
//! caller at index `i` gets `(physical, first + i)`: distinct within the batch, and above every
//! timestamp of earlier batches (checked; a fallback fails the batch instead of going back in
//! time).
//!
//! Failures. A stream that breaks or reaches a follower is dropped, the members are refreshed
//! and the unanswered batches are sent again on a new stream to the (new) leader, each until its
//! own deadline: `pd_server_timeout` after its first caller joined. Past it, the batch fails
//! with a retryable [`Error::PdServerTimeout`]. PD's definite errors (another cluster id, a
//! malformed answer) fail the batch at once.
//!
//! Forwarding. With `enable-forwarding`, a stream to the leader that fails makes the dispatcher
//! probe the leader's health; if the leader is unreachable, the next stream is opened on a
//! healthy follower with `pd-forwarded-host: <leader>`, and the follower proxies every request
//! to the leader (PD's `tryConnectToTSO` falling back to `backupClientConn`). Before every
//! batch the dispatcher checks where the stream should go; once the health checks see the
//! leader again, the forwarded stream is replaced by one to the leader (PD's `checkLeader`).
//!
//! Microservice mode. When PD runs TSO as a separate service (`API_SVC_MODE`, see
//! [`super::tso_discovery`]), the same batches go over a `tsopb.TSO/Tso` stream to the primary
//! of the client's keyspace group, each request's header carrying the keyspace id and the
//! keyspace group id. A failed or refused ("is not served") stream makes the dispatcher ask
//! PD for the service mode and the TSO servers for the group's primary again, then resend, with
//! the same backoff and per-batch deadlines as in PD mode. Before every batch the dispatcher
//! reads the current route, so a primary change or a switch between PD mode and microservice
//! mode found by the background check moves the stream without failing anybody. The batch
//! semantics (one request per batch, `first + i` per caller, the monotonicity check) are the
//! same in both modes.
//!
//! Ports tikv/pd `client/clients/tso/client.go` (leader stream, reconnection, follower
//! forwarding),
//! `dispatcher.go` (the batch loop, `processRequests`, `checkMonotonicity`, one RPC in flight
//! as with the default `TSOClientRPCConcurrency` of 1, the optional max batch wait;
//! `tsoServiceDiscovery`'s stream switch when the primary moves),
//! `request.go` (`tsoRequestFinisher`: `firstLogical + idx`) and `stream.go` (the count check,
//! `ErrTSOLength`). `client.go`'s `GetTS` retry on leader change is folded into the resend.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tikv_proto::pdpb::{self, pd_client::PdClient as PdGrpc};
use tikv_proto::tsopb::{self, tso_client::TsoClient};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;

use super::discovery::{Discovery, Target};
use super::retry::{Backoff, Failure, classify_status, is_leader_change};
use super::tso_discovery::{Primary, TsoDiscovery, TsoRoute};
use crate::oracle::{LOGICAL_BITS, Timestamp};
use crate::{Error, Result};

/// Most callers in one `TsoRequest` (PD's `defaultMaxTSOBatchSize`); PD rejects a count that
/// does not fit the 18-bit logical part.
pub(crate) const MAX_BATCH_SIZE: u32 = 10_000;

#[cfg(any(test, feature = "unstable-internals"))]
/// Counters of the TSO stream, for benchmarks and monitoring ([`PdClient::tso_stats`]).
///
/// [`PdClient::tso_stats`]: super::PdClient::tso_stats
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TsoStats {
    /// `TsoRequest` messages sent to PD.
    pub requests: u64,
    /// Timestamps PD handed out in answers (the sum of their `count`s).
    pub timestamps: u64,
    /// TSO streams opened (the first, plus one per reconnection).
    pub streams: u64,
}

/// One group of callers answered by one `TsoRequest`.
#[derive(Debug)]
struct Batch {
    /// `(physical, first logical)` of the range PD allocated, or why there is none.
    result: OnceLock<Result<(u64, u64)>>,
    done: Notify,
}

/// A batch as the queue and the dispatcher hold it. Dropping one that was never answered
/// (the dispatcher stopped) answers its callers with [`Error::Closed`], so nobody waits forever.
#[derive(Debug)]
struct Pending {
    batch: Arc<Batch>,
    count: u32,
    /// When the first caller joined.
    started: Instant,
    /// `started + pd_server_timeout`: the batch fails if PD has not answered by then.
    deadline: Instant,
    /// Sent once already: new callers start a new batch instead of joining it.
    sealed: bool,
}

impl Pending {
    fn complete(&self, result: Result<(u64, u64)>) {
        if self.batch.result.set(result).is_ok() {
            self.batch.done.notify_waiters();
        }
    }

    /// The same request for a TSO microservice primary: the header names the keyspace and
    /// its keyspace group (PD's `tsoTSOStreamAdapter`).
    fn mcs_request(&self, cluster_id: u64, primary: &Primary) -> tsopb::TsoRequest {
        tsopb::TsoRequest {
            header: Some(tsopb::RequestHeader {
                cluster_id,
                keyspace: Some(tsopb::request_header::Keyspace::KeyspaceId(
                    primary.keyspace_id,
                )),
                keyspace_group_id: primary.keyspace_group_id,
                callee_id: primary.callee_id.clone(),
                ..Default::default()
            }),
            count: self.count,
            dc_location: String::new(),
        }
    }

    fn request(&self, cluster_id: u64) -> pdpb::TsoRequest {
        pdpb::TsoRequest {
            header: Some(pdpb::RequestHeader {
                cluster_id,
                ..Default::default()
            }),
            count: self.count,
            dc_location: String::new(),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.complete(Err(Error::Closed));
    }
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<Pending>,
    closed: bool,
}

/// The TSO client state shared by callers and the dispatcher task.
#[derive(Debug)]
pub(crate) struct Tso {
    queue: Mutex<Queue>,
    /// Wakes the dispatcher when a batch is opened on an empty queue.
    work: Notify,
    timeout: Duration,
    requests: AtomicU64,
    timestamps: AtomicU64,
    streams: AtomicU64,
}

impl Tso {
    pub(crate) fn new(timeout: Duration) -> Self {
        Tso {
            queue: Mutex::new(Queue::default()),
            work: Notify::new(),
            timeout,
            requests: AtomicU64::new(0),
            timestamps: AtomicU64::new(0),
            streams: AtomicU64::new(0),
        }
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    pub(crate) fn stats(&self) -> TsoStats {
        TsoStats {
            requests: self.requests.load(Ordering::Relaxed),
            timestamps: self.timestamps.load(Ordering::Relaxed),
            streams: self.streams.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One timestamp: joins the open batch and waits for its answer.
    pub(crate) async fn get_timestamp(&self) -> Result<Timestamp> {
        let (batch, index, wake) = {
            let mut queue = self.lock();
            if queue.closed {
                return Err(Error::Closed);
            }
            let joinable = queue
                .pending
                .back()
                .is_some_and(|p| !p.sealed && p.count < MAX_BATCH_SIZE);
            let wake = queue.pending.is_empty();
            if !joinable {
                let started = Instant::now();
                queue.pending.push_back(Pending {
                    batch: Arc::new(Batch {
                        result: OnceLock::new(),
                        done: Notify::new(),
                    }),
                    count: 0,
                    started,
                    deadline: started + self.timeout,
                    sealed: false,
                });
            }
            let Some(open) = queue.pending.back_mut() else {
                return Err(Error::internal("TSO queue lost its open batch"));
            };
            let index = open.count;
            open.count += 1;
            (open.batch.clone(), index, wake)
        };
        if wake {
            self.work.notify_one();
        }
        loop {
            let notified = batch.done.notified();
            tokio::pin!(notified);
            // Registered before the check, so an answer that lands in between still wakes us.
            notified.as_mut().enable();
            if let Some(result) = batch.result.get() {
                return match result {
                    Ok((physical, first)) => {
                        Ok(Timestamp::compose(*physical, first + u64::from(index)))
                    }
                    Err(e) => Err(e.clone()),
                };
            }
            notified.await;
        }
    }

    /// Fails every queued batch with [`Error::Closed`] and refuses new callers.
    pub(crate) fn close(&self) {
        let drained = {
            let mut queue = self.lock();
            queue.closed = true;
            std::mem::take(&mut queue.pending)
        };
        // Dropping them answers their callers, outside the lock.
        drop(drained);
    }

    /// Takes every queued batch, sealing it; fails the ones past their deadline.
    fn take(&self, last_error: Option<&Error>) -> VecDeque<Pending> {
        let mut taken = std::mem::take(&mut self.lock().pending);
        let now = Instant::now();
        taken.retain_mut(|p| {
            p.sealed = true;
            if now < p.deadline {
                return true;
            }
            p.complete(Err(self.timeout_error(last_error)));
            false
        });
        taken
    }

    /// Puts unanswered batches back at the front, to be sent again.
    fn requeue(&self, batches: VecDeque<Pending>) {
        if batches.is_empty() {
            return;
        }
        let mut queue = self.lock();
        if queue.closed {
            return; // dropping `batches` answers them with Closed
        }
        for p in batches.into_iter().rev() {
            queue.pending.push_front(p);
        }
    }

    fn earliest_deadline(&self) -> Option<Instant> {
        self.lock().pending.front().map(|p| p.deadline)
    }

    fn timeout_error(&self, last_error: Option<&Error>) -> Error {
        Error::PdServerTimeout {
            message: match last_error {
                Some(e) => format!("no timestamp from PD within {:?}: {e}", self.timeout),
                None => format!("no timestamp from PD within {:?}", self.timeout),
            },
        }
    }
}

/// An open `Tso` stream to one PD member or one TSO microservice primary.
#[derive(Debug)]
struct Stream {
    /// The member (or TSO server) the stream is open on.
    url: String,
    /// The leader that member forwards to, when it is a follower doing so.
    forwarded_to: Option<String>,
    wire: Wire,
}

/// The two protocols a TSO stream speaks; their answers carry the same facts.
#[derive(Debug)]
enum Wire {
    Pd {
        requests: mpsc::UnboundedSender<pdpb::TsoRequest>,
        responses: Streaming<pdpb::TsoResponse>,
    },
    Microservice {
        primary: Arc<Primary>,
        requests: mpsc::UnboundedSender<tsopb::TsoRequest>,
        responses: Streaming<tsopb::TsoResponse>,
    },
}

impl Stream {
    fn send(&self, pending: &Pending, cluster_id: u64) -> bool {
        match &self.wire {
            Wire::Pd { requests, .. } => requests.send(pending.request(cluster_id)).is_ok(),
            Wire::Microservice {
                primary, requests, ..
            } => requests
                .send(pending.mcs_request(cluster_id, primary))
                .is_ok(),
        }
    }

    /// The next answer, in PD's shape.
    async fn next(&mut self) -> std::result::Result<Option<pdpb::TsoResponse>, tonic::Status> {
        match &mut self.wire {
            Wire::Pd { responses, .. } => responses.message().await,
            Wire::Microservice { responses, .. } => {
                Ok(responses.message().await?.map(|r| pdpb::TsoResponse {
                    header: r.header.map(|h| pdpb::ResponseHeader {
                        cluster_id: h.cluster_id,
                        error: h.error.map(|e| pdpb::Error {
                            r#type: pdpb::ErrorType::Unknown as i32,
                            message: e.message,
                        }),
                    }),
                    count: r.count,
                    timestamp: r.timestamp,
                }))
            }
        }
    }

    /// Whether this stream is the one `route` wants.
    fn serves(&self, route: &TsoRoute) -> bool {
        match (&self.wire, route) {
            (Wire::Microservice { primary, .. }, TsoRoute::Microservice(wanted)) => {
                Arc::ptr_eq(primary, wanted)
            }
            (Wire::Pd { .. }, TsoRoute::Pd) => true,
            _ => false,
        }
    }
}

/// The dispatcher task's state.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    tso: Arc<Tso>,
    discovery: Arc<Discovery>,
    /// PD mode or microservice mode, and the keyspace group's primary.
    service: Arc<TsoDiscovery>,
    max_batch_wait: Duration,
    /// Open the stream through a follower when the leader is unreachable.
    forwarding: bool,
    stream: Option<Stream>,
    /// The last timestamp handed out, for the monotonicity check.
    last: u64,
    /// Consecutive failed attempts; the next attempt backs off first when non-zero.
    failures: u32,
    backoff: Backoff,
    last_error: Option<Error>,
}

/// Closes the queue when the dispatcher ends, however it ends.
struct CloseOnDrop(Arc<Tso>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Dispatcher {
    pub(crate) fn new(
        tso: Arc<Tso>,
        discovery: Arc<Discovery>,
        service: Arc<TsoDiscovery>,
        max_batch_wait: Duration,
        forwarding: bool,
    ) -> Self {
        Dispatcher {
            tso,
            discovery,
            service,
            max_batch_wait,
            forwarding,
            stream: None,
            last: 0,
            failures: 0,
            backoff: Backoff::call(),
            last_error: None,
        }
    }

    /// The dispatcher loop; returns when `shutdown` fires or its sender is dropped.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let _close = CloseOnDrop(self.tso.clone());
        loop {
            if self.tso.earliest_deadline().is_none() {
                tokio::select! {
                    () = self.tso.work.notified() => continue,
                    _ = shutdown.changed() => return,
                }
            }
            if self.failures > 0 {
                let until = self
                    .tso
                    .earliest_deadline()
                    .unwrap_or_else(|| Instant::now() + self.tso.timeout);
                tokio::select! {
                    _ = self.backoff.sleep_before(until) => {}
                    _ = shutdown.changed() => return,
                }
            }
            if !self.max_batch_wait.is_zero() {
                let started = self.tso.lock().pending.front().map(|p| p.started);
                if let Some(started) = started {
                    tokio::select! {
                        () = tokio::time::sleep_until(started + self.max_batch_wait) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
            let batches = self.tso.take(self.last_error.as_ref());
            if batches.is_empty() {
                continue;
            }
            tokio::select! {
                () = self.process(batches) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Sends the batches and completes them with PD's answers; on failure, requeues what is
    /// left and refreshes the members.
    async fn process(&mut self, batches: VecDeque<Pending>) {
        let mut route = self.service.route();
        if matches!(route, TsoRoute::Unknown) {
            let deadline = self.batch_deadline(&batches);
            if let Err(e) = self.service.update_member(deadline).await {
                self.tso.requeue(batches);
                self.on_service_failure(e).await;
                return;
            }
            route = self.service.route();
        }
        match route {
            TsoRoute::Pd => {
                // A stream left over from microservice mode is not reused for PD.
                if self.stream.as_ref().is_some_and(|s| !s.serves(&route)) {
                    self.stream = None;
                }
                self.process_pd(batches).await;
            }
            TsoRoute::Microservice(primary) => self.process_mcs(batches, primary).await,
            TsoRoute::Unknown => {
                self.tso.requeue(batches);
                let e = Error::PdServerTimeout {
                    message: "no primary known for the TSO keyspace group".to_owned(),
                };
                self.on_service_failure(e).await;
            }
        }
    }

    fn batch_deadline(&self, batches: &VecDeque<Pending>) -> Instant {
        batches
            .iter()
            .map(|p| p.deadline)
            .min()
            .unwrap_or_else(|| Instant::now() + self.tso.timeout)
    }

    /// Microservice mode: the batches go to the keyspace group's primary over `tsopb.TSO`.
    async fn process_mcs(&mut self, batches: VecDeque<Pending>, primary: Arc<Primary>) {
        let cluster_id = self.discovery.cluster_id();
        let route = TsoRoute::Microservice(primary.clone());
        if !self.stream.as_ref().is_some_and(|s| s.serves(&route)) {
            self.stream = None;
        }
        let sent = match &self.stream {
            Some(stream) => batches.iter().all(|p| stream.send(p, cluster_id)),
            None => false,
        };
        if !sent {
            self.stream = None;
            let deadline = self.batch_deadline(&batches);
            match open_mcs_stream(&primary, &batches, cluster_id, deadline).await {
                Ok(stream) => {
                    self.tso.streams.fetch_add(1, Ordering::Relaxed);
                    self.stream = Some(stream);
                }
                Err(failure) => {
                    self.tso.requeue(batches);
                    let (Failure::Retry(e) | Failure::Fatal(e)) = failure;
                    self.on_service_failure(e).await;
                    return;
                }
            }
        }
        if let Err(e) = self.receive(batches).await {
            self.on_service_failure(e).await;
        }
    }

    /// After a failed attempt in microservice mode: find the primary again; if that fails
    /// too, ask PD whether the service mode changed. Bounded by the earliest waiting batch.
    async fn on_service_failure(&mut self, e: Error) {
        tracing::debug!(error = %e, "TSO microservice stream failed; rediscovering");
        self.last_error = Some(e);
        self.failures += 1;
        let deadline = self
            .tso
            .earliest_deadline()
            .unwrap_or_else(|| Instant::now() + self.tso.timeout);
        if let Err(e) = self.service.check_service_mode(deadline).await {
            tracing::debug!(error = %e, "TSO service rediscovery failed");
            // Keep the more telling error: "no TSO microservice" beats a timeout.
            if e.to_string().contains("no TSO microservice") {
                self.last_error = Some(e);
            }
        }
    }

    /// Completes the sent batches with the stream's answers. A retryable failure drops the
    /// stream, requeues what is left and is returned; a definite one fails its batch only.
    async fn receive(&mut self, mut batches: VecDeque<Pending>) -> std::result::Result<(), Error> {
        self.tso
            .requests
            .fetch_add(batches.len() as u64, Ordering::Relaxed);
        while let Some(pending) = batches.pop_front() {
            let Some(stream) = self.stream.as_mut() else {
                batches.push_front(pending);
                break;
            };
            let answer = tokio::time::timeout_at(pending.deadline, stream.next()).await;
            let outcome = match answer {
                Err(_) => Err(Failure::Retry(Error::PdServerTimeout {
                    message: format!("TSO stream to {} did not answer in time", stream.url),
                })),
                Ok(Err(status)) => Err(classify_status(&stream.url, &status)),
                Ok(Ok(None)) => Err(Failure::Retry(Error::Grpc {
                    address: stream.url.clone(),
                    code: crate::error::GrpcCode::Unavailable,
                    message: "TSO stream closed by the server".to_owned(),
                    source: None,
                })),
                Ok(Ok(Some(resp))) => self.accept(&pending, resp),
            };
            match outcome {
                Ok(()) => {
                    self.failures = 0;
                    self.backoff.reset();
                    self.last_error = None;
                }
                Err(Failure::Fatal(e)) => {
                    self.stream = None;
                    pending.complete(Err(e));
                    self.tso.requeue(batches);
                    return Ok(());
                }
                Err(Failure::Retry(e)) => {
                    self.stream = None;
                    batches.push_front(pending);
                    self.tso.requeue(batches);
                    return Err(e);
                }
            }
        }
        self.tso.requeue(batches);
        Ok(())
    }

    /// PD mode: the batches go to the leader's `pdpb.PD/Tso` (or through a follower).
    async fn process_pd(&mut self, mut batches: VecDeque<Pending>) {
        let cluster_id = self.discovery.cluster_id();
        let (generation, target) = self.discovery.leader_target(self.forwarding);
        let Some(target) = target else {
            self.tso.requeue(batches);
            let failure = Failure::Retry(Error::PdServerTimeout {
                message: "no PD leader known".to_owned(),
            });
            self.on_failure(failure, generation, false).await;
            return;
        };
        let direct = target.forwarded_to.is_none();
        // Follow the leader: a stream to a former leader, or one forwarded through a follower
        // when the leader can be reached again, is replaced before it fails. A forwarded stream
        // stays on its follower while the leader is still unreachable.
        let keep = self.stream.as_ref().is_some_and(|s| {
            target.same_route(&s.url, s.forwarded_to.as_deref())
                || (!direct && s.forwarded_to == target.forwarded_to)
        });
        if !keep {
            self.stream = None;
        }
        let sent = match &self.stream {
            Some(stream) => batches.iter().all(|p| stream.send(p, cluster_id)),
            None => false,
        };
        if !sent {
            self.stream = None;
            let deadline = batches.iter().map(|p| p.deadline).min();
            let deadline = deadline.unwrap_or_else(|| Instant::now() + self.tso.timeout);
            match open_stream(&target, &batches, cluster_id, deadline).await {
                Ok(stream) => {
                    self.tso.streams.fetch_add(1, Ordering::Relaxed);
                    self.stream = Some(stream);
                }
                Err(failure) => {
                    self.tso.requeue(batches);
                    self.on_failure(failure, generation, direct).await;
                    return;
                }
            }
        }
        self.tso
            .requests
            .fetch_add(batches.len() as u64, Ordering::Relaxed);
        while let Some(pending) = batches.pop_front() {
            let Some(stream) = self.stream.as_mut() else {
                batches.push_front(pending);
                break;
            };
            let answer = tokio::time::timeout_at(pending.deadline, stream.next()).await;
            let outcome = match answer {
                Err(_) => Err(Failure::Retry(Error::PdServerTimeout {
                    message: format!("TSO stream to {} did not answer in time", stream.url),
                })),
                Ok(Err(status)) => Err(classify_status(&stream.url, &status)),
                Ok(Ok(None)) => Err(Failure::Retry(Error::Grpc {
                    address: stream.url.clone(),
                    code: crate::error::GrpcCode::Unavailable,
                    message: "TSO stream closed by PD".to_owned(),
                    source: None,
                })),
                Ok(Ok(Some(resp))) => self.accept(&pending, resp),
            };
            match outcome {
                Ok(()) => {
                    self.failures = 0;
                    self.backoff.reset();
                    self.last_error = None;
                }
                Err(Failure::Fatal(e)) => {
                    // The stream is in an unknown state after a bad answer: start over.
                    self.stream = None;
                    pending.complete(Err(e));
                    self.tso.requeue(batches);
                    return;
                }
                Err(Failure::Retry(e)) => {
                    let direct = self
                        .stream
                        .as_ref()
                        .is_some_and(|s| s.forwarded_to.is_none());
                    self.stream = None;
                    batches.push_front(pending);
                    self.tso.requeue(batches);
                    self.on_failure(Failure::Retry(e), generation, direct).await;
                    return;
                }
            }
        }
        if !batches.is_empty() {
            self.tso.requeue(batches);
        }
    }

    /// Validates one answer and completes its batch.
    fn accept(
        &mut self,
        pending: &Pending,
        resp: pdpb::TsoResponse,
    ) -> std::result::Result<(), Failure> {
        if let Some(err) = resp.header.as_ref().and_then(|h| h.error.as_ref()) {
            let e = Error::Pd {
                message: err.message.clone(),
            };
            return Err(if is_leader_change(&err.message) {
                Failure::Retry(e)
            } else {
                Failure::Fatal(e)
            });
        }
        let malformed = |what: &str| {
            Failure::Fatal(Error::Pd {
                message: format!("tso length in rpc response is incorrect: {what}"),
            })
        };
        if resp.count != pending.count {
            return Err(malformed(&format!(
                "asked for {}, got {}",
                pending.count, resp.count
            )));
        }
        let Some(ts) = resp.timestamp else {
            return Err(malformed("no timestamp"));
        };
        let physical = u64::try_from(ts.physical).map_err(|_| malformed("negative physical"))?;
        let logical = u64::try_from(ts.logical).map_err(|_| malformed("negative logical"))?;
        let count = u64::from(pending.count);
        if logical + 1 < count || logical >= 1 << LOGICAL_BITS {
            return Err(malformed("logical part out of range"));
        }
        let first_logical = logical + 1 - count;
        let first = Timestamp::compose(physical, first_logical).version();
        let last = Timestamp::compose(physical, logical).version();
        if first <= self.last {
            // PD's client panics here; failing the batch keeps time from going backwards
            // without taking the process down.
            pending.complete(Err(Error::internal(format!(
                "TSO fallback: PD allocated from {first} after {} was handed out",
                self.last
            ))));
            return Ok(());
        }
        self.last = last;
        self.tso.timestamps.fetch_add(count, Ordering::Relaxed);
        pending.complete(Ok((physical, first_logical)));
        Ok(())
    }

    /// After a failed attempt: remember why, and find the leader again (bounded by the
    /// earliest waiting batch). After a failure on the leader itself with forwarding on, probe
    /// the leader's health so that an unreachable leader is reached through a follower next.
    async fn on_failure(&mut self, failure: Failure, generation: u64, on_leader: bool) {
        let e = match failure {
            Failure::Retry(e) | Failure::Fatal(e) => e,
        };
        tracing::debug!(error = %e, "TSO stream failed; reconnecting");
        // PD may have moved TSO to a microservice (or back): have the mode checked.
        self.service.schedule_check();
        self.last_error = Some(e);
        self.failures += 1;
        let deadline = self
            .tso
            .earliest_deadline()
            .unwrap_or_else(|| Instant::now() + self.tso.timeout);
        if self.forwarding
            && on_leader
            && !self.discovery.check_leader_health(deadline).await
            && self
                .discovery
                .leader_route(true)
                .is_some_and(|(_, forwarded)| forwarded)
        {
            // A detour through a healthy follower is ready: no need to wait before taking it.
            // (Without one, the backoff stays, so an unreachable cluster is not spun on.)
            self.failures = 0;
            self.backoff.reset();
        }
        if self.discovery.refresh(generation, deadline).await.is_err() {
            self.discovery.schedule_check();
        }
    }
}

/// Opens a `Tso` stream with the batches' requests already queued on it: a Go PD server sends
/// the stream's response headers only with its first answer, so the call must not wait for
/// headers before anything was asked.
async fn open_stream(
    target: &Target,
    batches: &VecDeque<Pending>,
    cluster_id: u64,
    deadline: Instant,
) -> std::result::Result<Stream, Failure> {
    let url = &target.url;
    let (tx, rx) = mpsc::unbounded_channel();
    for p in batches {
        // The receiver is alive (it is right here), so this cannot fail.
        let _ = tx.send(p.request(cluster_id));
    }
    let mut grpc = PdGrpc::new(target.channel.clone());
    let call = grpc.tso(UnboundedReceiverStream::new(rx));
    match tokio::time::timeout_at(deadline, call).await {
        Err(_) => Err(Failure::Retry(Error::PdServerTimeout {
            message: format!("opening a TSO stream to {url} timed out"),
        })),
        Ok(Err(status)) => Err(classify_status(url, &status)),
        Ok(Ok(resp)) => Ok(Stream {
            url: url.clone(),
            forwarded_to: target.forwarded_to.clone(),
            wire: Wire::Pd {
                requests: tx,
                responses: resp.into_inner(),
            },
        }),
    }
}

/// Opens a `tsopb.TSO/Tso` stream to the keyspace group's primary with the batches' requests
/// already queued on it (as [`open_stream`], for the same reason).
async fn open_mcs_stream(
    primary: &Arc<Primary>,
    batches: &VecDeque<Pending>,
    cluster_id: u64,
    deadline: Instant,
) -> std::result::Result<Stream, Failure> {
    let url = &primary.url;
    let (tx, rx) = mpsc::unbounded_channel();
    for p in batches {
        // The receiver is alive (it is right here), so this cannot fail.
        let _ = tx.send(p.mcs_request(cluster_id, primary));
    }
    let mut grpc = TsoClient::new(primary.channel.clone());
    let call = grpc.tso(UnboundedReceiverStream::new(rx));
    match tokio::time::timeout_at(deadline, call).await {
        Err(_) => Err(Failure::Retry(Error::PdServerTimeout {
            message: format!("opening a TSO stream to {url} timed out"),
        })),
        Ok(Err(status)) => Err(classify_status(url, &status)),
        Ok(Ok(resp)) => Ok(Stream {
            url: url.clone(),
            forwarded_to: None,
            wire: Wire::Microservice {
                primary: primary.clone(),
                requests: tx,
                responses: resp.into_inner(),
            },
        }),
    }
}
