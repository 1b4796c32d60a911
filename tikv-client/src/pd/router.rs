//! The router client: region lookups by key, by previous key and by id, batched onto one
//! `QueryRegion` stream, to PD or to a router server of PD's microservice mode.
//!
//! Who calls it: `PdClient`'s `RegionSource` methods `get_region`, `get_prev_region` and
//! `get_region_by_id` hand their lookup to [`Router::query`] when `pd-client.enable-router-client`
//! is on; one dispatcher task per client, started by `PdClient::connect`, sends the batches.
//! Nothing is spawned per lookup. The router servers come from `super::router_discovery`.
//!
//! How a batch works, as in PD's router client. Callers queue their lookup and wait for its
//! answer; the dispatcher takes everything queued (up to PD's 10 000), sends one
//! `QueryRegionRequest` (keys, previous keys and ids in queue order; buckets if anyone asked),
//! and answers each caller from the response's id maps, dropping buckets for callers that did
//! not ask. One batch is in flight at a time, so lookups that arrive meanwhile form the next
//! batch: no added latency when idle, large batches under load. Where the batch goes, first
//! match wins: when router servers are known and every lookup of the batch allows router
//! handling, a randomly chosen healthy router server's `routerpb.Router/QueryRegion` stream
//! (PD's `sendToMs`); when follower handling is on and every lookup allows it, a randomly chosen
//! healthy member's `pdpb.PD/QueryRegion` stream (PD's `sendToPD` with `RandomlyPick`); else the
//! leader's. Router and PD streams speak the same messages.
//!
//! Failures. A stream error, a header error or a batch without an answer by its first deadline
//! fails that batch's lookups, drops the stream, and asks discovery to check the members (and
//! the router registry; a router server that could not be reached is left out until its health
//! probe passes). A router server's batch may use only half of the time left, so that a hung
//! server still leaves the callers' fallback time.
//! Where PD's router client then returns the error, `PdClient` falls back to the unary call for
//! the caller's remaining time (which also reaches a partitioned leader through forwarding,
//! which `QueryRegion` lacks); only running out of time or closing the client fails the lookup.
//!
//! Ports tikv/pd `client/clients/router/client.go` (`dispatcher`, `sendToPD`, `sendToMs`,
//! `processRequestsInner`, `requestFinisher`, `handleProcessRequestError`, `updateConnection`,
//! `updateMsConnection` with its `msConCtxMgr`) and `request.go`. Router streams are opened on
//! first use rather than ahead of time by a connection daemon.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tikv_proto::pdpb::{self, pd_client::PdClient as PdGrpc};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;

use tikv_proto::routerpb::router_client::RouterClient;

use super::RegionInfo;
use super::client::{Options, ReadFrom, region_info};
use super::conn::PdChannel;
use super::discovery::{Discovery, Member};
use super::retry::{classify_status, is_leader_change};
use super::router_discovery::{RouterDiscovery, RouterNode};
use crate::error::GrpcCode;
use crate::{Error, Result};

/// Most lookups in one `QueryRegionRequest` (PD's `defaultMaxRouterRequestBatchSize`).
const MAX_BATCH_SIZE: usize = 10_000;

/// What a lookup asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Query {
    /// The region containing the key.
    Key(Bytes),
    /// The region just before the one containing the key.
    PrevKey(Bytes),
    /// The region with this id.
    #[cfg(any(test, feature = "unstable-internals"))]
    Id(u64),
}

/// One queued lookup.
#[derive(Debug)]
struct Lookup {
    query: Query,
    need_buckets: bool,
    allow_follower: bool,
    allow_router: bool,
    deadline: Instant,
    reply: oneshot::Sender<Result<Option<RegionInfo>>>,
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<Lookup>,
    closed: bool,
}

/// Counters of the router stream, for tests.
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RouterStats {
    /// `QueryRegionRequest` messages sent.
    pub(crate) messages: u64,
    /// Lookups carried by them.
    pub(crate) lookups: u64,
    /// Streams opened.
    pub(crate) streams: u64,
}

/// The lookup queue shared by callers and the dispatcher task.
#[derive(Debug, Default)]
pub(crate) struct Router {
    queue: Mutex<Queue>,
    work: Notify,
    messages: AtomicU64,
    lookups: AtomicU64,
    streams: AtomicU64,
}

impl Router {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn stats(&self) -> RouterStats {
        RouterStats {
            messages: self.messages.load(Ordering::Relaxed),
            lookups: self.lookups.load(Ordering::Relaxed),
            streams: self.streams.load(Ordering::Relaxed),
        }
    }

    /// One lookup: queued for the next batch, answered by `deadline` or failed with
    /// [`Error::PdServerTimeout`]. Any other error means the batch failed and the caller may try
    /// another way; [`Error::Closed`] means the client closed.
    pub(crate) async fn query(
        &self,
        query: Query,
        need_buckets: bool,
        from: ReadFrom,
        deadline: Instant,
    ) -> Result<Option<RegionInfo>> {
        let (reply, answer) = oneshot::channel();
        let wake = {
            let mut queue = self.lock();
            if queue.closed {
                return Err(Error::Closed);
            }
            let wake = queue.pending.is_empty();
            queue.pending.push_back(Lookup {
                query,
                need_buckets,
                allow_follower: from.follower,
                allow_router: from.router,
                deadline,
                reply,
            });
            wake
        };
        if wake {
            self.work.notify_one();
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Err(Error::PdServerTimeout {
                message: "region lookup on the QueryRegion stream got no answer in time".to_owned(),
            }),
            // The dispatcher stopped without answering: the client was closed.
            Ok(Err(_)) => Err(Error::Closed),
            Ok(Ok(result)) => result,
        }
    }

    /// Refuses new lookups and fails the queued ones with [`Error::Closed`].
    pub(crate) fn close(&self) {
        let drained = {
            let mut queue = self.lock();
            queue.closed = true;
            std::mem::take(&mut queue.pending)
        };
        // Dropping the senders answers the callers.
        drop(drained);
    }

    /// Takes up to a batch of queued lookups, leaving out callers that stopped waiting and
    /// answering those whose time is up.
    fn take(&self) -> Vec<Lookup> {
        let taken: Vec<Lookup> = {
            let mut queue = self.lock();
            let n = queue.pending.len().min(MAX_BATCH_SIZE);
            queue.pending.drain(..n).collect()
        };
        let now = Instant::now();
        let mut batch = Vec::with_capacity(taken.len());
        for lookup in taken {
            if lookup.reply.is_closed() {
                continue;
            }
            if lookup.deadline <= now {
                let _ = lookup.reply.send(Err(Error::PdServerTimeout {
                    message: "region lookup on the QueryRegion stream got no answer in time"
                        .to_owned(),
                }));
                continue;
            }
            batch.push(lookup);
        }
        batch
    }

    fn has_work(&self) -> bool {
        !self.lock().pending.is_empty()
    }
}

/// Where a batch goes.
#[derive(Debug)]
enum Server {
    /// A PD member's `pdpb.PD/QueryRegion`.
    Pd(Member),
    /// A router server's `routerpb.Router/QueryRegion`.
    Router(RouterNode),
}

impl Server {
    fn url(&self) -> &str {
        match self {
            Server::Pd(m) => &m.url,
            Server::Router(n) => &n.url,
        }
    }
}

/// An open `QueryRegion` stream to one member or router server.
#[derive(Debug)]
struct Stream {
    requests: mpsc::UnboundedSender<pdpb::QueryRegionRequest>,
    responses: Streaming<pdpb::QueryRegionResponse>,
}

/// The dispatcher task's state.
#[derive(Debug)]
pub(crate) struct RouterDispatcher {
    router: Arc<Router>,
    discovery: Arc<Discovery>,
    router_service: Arc<RouterDiscovery>,
    options: Arc<Options>,
    /// Open streams by member URL.
    streams: HashMap<String, Stream>,
    /// Open streams by router server URL (PD's `msConCtxMgr`).
    router_streams: HashMap<String, Stream>,
}

/// Closes the queue when the dispatcher ends, however it ends.
struct CloseOnDrop(Arc<Router>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl RouterDispatcher {
    pub(crate) fn new(
        router: Arc<Router>,
        discovery: Arc<Discovery>,
        router_service: Arc<RouterDiscovery>,
        options: Arc<Options>,
    ) -> Self {
        RouterDispatcher {
            router,
            discovery,
            router_service,
            options,
            streams: HashMap::new(),
            router_streams: HashMap::new(),
        }
    }

    /// The dispatcher loop; returns when `shutdown` fires or its sender is dropped.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let _close = CloseOnDrop(self.router.clone());
        loop {
            if !self.router.has_work() {
                tokio::select! {
                    () = self.router.work.notified() => {}
                    _ = shutdown.changed() => return,
                }
            }
            let batch = self.router.take();
            if batch.is_empty() {
                continue;
            }
            tokio::select! {
                () = self.process(batch) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Where the batch goes: a random healthy router server when every lookup allows router
    /// handling (PD's `sendToMs`); a random healthy member when every lookup allows a follower
    /// and follower handling is on; else the leader. A leader the health checks found
    /// unreachable fails the batch at once: `QueryRegion` cannot be forwarded, and the callers'
    /// unary fallback can.
    fn target(&self, batch: &[Lookup]) -> Result<Server> {
        if batch.iter().all(|l| l.allow_router)
            && let Some(node) = self.router_service.pick_random()
        {
            return Ok(Server::Router(node));
        }
        if self.options.follower_handle() && batch.iter().all(|l| l.allow_follower) {
            let members = self.discovery.healthy_members();
            if !members.is_empty() {
                return Ok(Server::Pd(
                    members[fastrand::usize(..members.len())].0.clone(),
                ));
            }
        }
        match self.discovery.view().leader.clone() {
            None => Err(Error::PdServerTimeout {
                message: "no PD leader known for the QueryRegion stream".to_owned(),
            }),
            Some(leader) if !leader.health.is_available() => Err(Error::Grpc {
                address: leader.url.clone(),
                code: GrpcCode::Unavailable,
                message: "PD leader unreachable; QueryRegion cannot be forwarded".to_owned(),
                source: None,
            }),
            Some(leader) => Ok(Server::Pd(leader)),
        }
    }

    /// Forgets streams to members that left, to followers when follower handling is off
    /// (PD's `updateConnection` GC), and to router servers no longer registered (PD's
    /// `updateMsConnection` GC).
    fn gc_streams(&mut self) {
        let view = self.discovery.view();
        let follower_handle = self.options.follower_handle();
        self.streams.retain(|url, _| {
            view.leader.as_ref().is_some_and(|l| &l.url == url)
                || (follower_handle && view.followers.iter().any(|f| &f.url == url))
        });
        if !self.router_streams.is_empty() {
            let routers = self.router_service.view();
            self.router_streams.retain(|url, _| routers.contains(url));
        }
    }

    fn streams_of(&mut self, server: &Server) -> &mut HashMap<String, Stream> {
        match server {
            Server::Pd(_) => &mut self.streams,
            Server::Router(_) => &mut self.router_streams,
        }
    }

    async fn process(&mut self, batch: Vec<Lookup>) {
        let Some(deadline) = batch.iter().map(|l| l.deadline).min() else {
            return;
        };
        self.gc_streams();
        let server = match self.target(&batch) {
            Ok(server) => server,
            Err(e) => {
                self.discovery.schedule_check();
                fail(batch, &e);
                return;
            }
        };
        let deadline = match server {
            Server::Pd(_) => deadline,
            // Half of the time left, so that the callers can still ask PD if this one hangs.
            Server::Router(_) => {
                let now = Instant::now();
                now + deadline.saturating_duration_since(now) / 2
            }
        };
        let request = build_request(self.discovery.cluster_id(), &batch);
        self.router.messages.fetch_add(1, Ordering::Relaxed);
        self.router
            .lookups
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let answer = match self.send(&server, request, deadline).await {
            Ok(()) => self.receive(&server, deadline).await,
            Err(e) => Err(e),
        };
        match answer {
            Ok(resp) => answer_batch(batch, &resp),
            Err(e) => {
                self.streams_of(&server).remove(server.url());
                tracing::debug!(url = %server.url(), error = %e, "QueryRegion batch failed");
                if let Server::Router(node) = &server {
                    self.router_service.report_failure(node, unreachable(&e));
                }
                // PD refreshes the members at once after a leader change; either way they are
                // checked soon.
                self.discovery.schedule_check();
                fail(batch, &e);
            }
        }
    }

    /// Sends the request on the server's stream, opening one if there is none.
    async fn send(
        &mut self,
        server: &Server,
        request: pdpb::QueryRegionRequest,
        deadline: Instant,
    ) -> Result<()> {
        let url = server.url();
        if let Some(stream) = self.streams_of(server).get(url)
            && !stream.requests.is_closed()
        {
            // The receiver lives in the stream's request body; a send can only fail if the
            // stream just ended, which the read below reports.
            let _ = stream.requests.send(request);
            return Ok(());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // Queued before the call: a Go PD sends the stream's headers with its first answer.
        let _ = tx.send(request);
        let requests = UnboundedReceiverStream::new(rx);
        let opened = match server {
            Server::Pd(member) => {
                let mut grpc = PdGrpc::new(PdChannel::direct(member.channel.clone()));
                tokio::time::timeout_at(deadline, grpc.query_region(requests)).await
            }
            Server::Router(node) => {
                let mut grpc = RouterClient::new(node.channel.clone());
                tokio::time::timeout_at(deadline, grpc.query_region(requests)).await
            }
        };
        let responses = match opened {
            Err(_) => {
                return Err(Error::PdServerTimeout {
                    message: format!("opening a QueryRegion stream to {url} timed out"),
                });
            }
            Ok(Err(status)) => return Err(status_error(url, &status)),
            Ok(Ok(resp)) => resp.into_inner(),
        };
        self.router.streams.fetch_add(1, Ordering::Relaxed);
        let url = url.to_owned();
        self.streams_of(server).insert(
            url,
            Stream {
                requests: tx,
                responses,
            },
        );
        Ok(())
    }

    async fn receive(
        &mut self,
        server: &Server,
        deadline: Instant,
    ) -> Result<pdpb::QueryRegionResponse> {
        let url = server.url();
        let Some(stream) = self.streams_of(server).get_mut(url) else {
            return Err(Error::internal("QueryRegion stream vanished"));
        };
        let resp = match tokio::time::timeout_at(deadline, stream.responses.message()).await {
            Err(_) => {
                return Err(Error::PdServerTimeout {
                    message: format!("QueryRegion stream to {url} did not answer in time"),
                });
            }
            Ok(Err(status)) => return Err(status_error(url, &status)),
            Ok(Ok(None)) => {
                return Err(Error::Grpc {
                    address: url.to_owned(),
                    code: GrpcCode::Unavailable,
                    message: "QueryRegion stream closed by the server".to_owned(),
                    source: None,
                });
            }
            Ok(Ok(Some(resp))) => resp,
        };
        if let Some(err) = resp.header.as_ref().and_then(|h| h.error.as_ref()) {
            if is_leader_change(&err.message) {
                self.discovery.schedule_check();
            }
            return Err(Error::Pd {
                message: err.message.clone(),
            });
        }
        Ok(resp)
    }
}

/// Whether a failed batch says the server could not be reached (or did not answer in time),
/// as opposed to answering with an error.
fn unreachable(error: &Error) -> bool {
    match error {
        Error::Grpc { code, .. } => matches!(
            code,
            GrpcCode::Unavailable | GrpcCode::DeadlineExceeded | GrpcCode::Cancelled
        ),
        Error::PdServerTimeout { .. } | Error::Connect { .. } => true,
        _ => false,
    }
}

fn status_error(url: &str, status: &tonic::Status) -> Error {
    match classify_status(url, status) {
        super::retry::Failure::Retry(e) | super::retry::Failure::Fatal(e) => e,
    }
}

/// The batch's request: keys, previous keys and ids each in queue order (PD's
/// `processRequestsInner`); buckets if any lookup asked.
fn build_request(cluster_id: u64, batch: &[Lookup]) -> pdpb::QueryRegionRequest {
    let mut request = pdpb::QueryRegionRequest {
        header: Some(pdpb::RequestHeader {
            cluster_id,
            ..Default::default()
        }),
        ..Default::default()
    };
    for lookup in batch {
        request.need_buckets |= lookup.need_buckets;
        match &lookup.query {
            Query::Key(k) => request.keys.push(k.clone()),
            Query::PrevKey(k) => request.prev_keys.push(k.clone()),
            #[cfg(any(test, feature = "unstable-internals"))]
            Query::Id(id) => request.ids.push(*id),
        }
    }
    request
}

/// Answers every lookup of a batch from the response (PD's `requestFinisher`).
fn answer_batch(batch: Vec<Lookup>, resp: &pdpb::QueryRegionResponse) {
    let (mut key_idx, mut prev_idx) = (0usize, 0usize);
    for lookup in batch {
        let id = match &lookup.query {
            Query::Key(_) => {
                key_idx += 1;
                resp.key_id_map.get(key_idx - 1).copied()
            }
            Query::PrevKey(_) => {
                prev_idx += 1;
                resp.prev_key_id_map.get(prev_idx - 1).copied()
            }
            #[cfg(any(test, feature = "unstable-internals"))]
            Query::Id(id) => Some(*id),
        };
        let result = match id {
            None => Err(Error::Pd {
                message: "QueryRegion response has fewer ids than the request had lookups"
                    .to_owned(),
            }),
            Some(id) => Ok(resp.regions_by_id.get(&id).and_then(|r| {
                region_info(
                    r.region.clone(),
                    r.leader,
                    r.down_peers.clone(),
                    r.pending_peers.clone(),
                    // The flag is batch-wide; a caller that did not ask gets none.
                    r.buckets.clone().filter(|_| lookup.need_buckets),
                )
            })),
        };
        // A caller that stopped waiting is fine to miss.
        let _ = lookup.reply.send(result);
    }
}

fn fail(batch: Vec<Lookup>, error: &Error) {
    for lookup in batch {
        let _ = lookup.reply.send(Err(error.clone()));
    }
}

#[cfg(test)]
mod tests {
    use tikv_proto::metapb;

    use super::*;

    fn lookup(
        query: Query,
        need_buckets: bool,
    ) -> (Lookup, oneshot::Receiver<Result<Option<RegionInfo>>>) {
        let (reply, rx) = oneshot::channel();
        let lookup = Lookup {
            query,
            need_buckets,
            allow_follower: true,
            allow_router: true,
            deadline: Instant::now() + std::time::Duration::from_secs(1),
            reply,
        };
        (lookup, rx)
    }

    fn region(id: u64) -> pdpb::RegionResponse {
        pdpb::RegionResponse {
            region: Some(metapb::Region {
                id,
                ..Default::default()
            }),
            leader: Some(metapb::Peer {
                id: id * 10,
                store_id: 1,
                ..Default::default()
            }),
            buckets: Some(metapb::Buckets {
                region_id: id,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn answers_follow_the_id_maps_and_drop_unasked_buckets() {
        // PD's TestRequestFinisherClearsUnrequestedBuckets, plus the key / previous-key /
        // id bookkeeping of requestFinisher.
        let (a, mut ra) = lookup(Query::Key(Bytes::from_static(b"a")), true);
        let (b, mut rb) = lookup(Query::PrevKey(Bytes::from_static(b"m")), false);
        let (c, mut rc) = lookup(Query::Key(Bytes::from_static(b"z")), false);
        let (d, mut rd) = lookup(Query::Id(2), false);
        let (e, mut re) = lookup(Query::Id(99), false);
        let batch = vec![a, b, c, d, e];
        let request = build_request(7, &batch);
        assert!(request.need_buckets);
        assert_eq!(
            request.keys,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"z")]
        );
        assert_eq!(request.prev_keys, vec![Bytes::from_static(b"m")]);
        assert_eq!(request.ids, vec![2, 99]);
        assert_eq!(request.header.unwrap().cluster_id, 7);

        let resp = pdpb::QueryRegionResponse {
            key_id_map: vec![1, 2],
            prev_key_id_map: vec![1],
            regions_by_id: [(1, region(1)), (2, region(2))].into_iter().collect(),
            ..Default::default()
        };
        answer_batch(batch, &resp);
        let got = |rx: &mut oneshot::Receiver<Result<Option<RegionInfo>>>| {
            rx.try_recv().unwrap().unwrap()
        };
        let a = got(&mut ra).unwrap();
        assert_eq!(a.region.id, 1);
        assert!(a.buckets.is_some(), "asked for buckets");
        let b = got(&mut rb).unwrap();
        assert_eq!(b.region.id, 1);
        assert!(b.buckets.is_none(), "did not ask for buckets");
        assert_eq!(got(&mut rc).unwrap().region.id, 2);
        assert_eq!(got(&mut rd).unwrap().leader.unwrap().id, 20);
        assert!(got(&mut re).is_none(), "unknown id");
    }

    #[test]
    fn a_short_response_fails_the_lookups_it_cannot_answer() {
        let (a, mut ra) = lookup(Query::Key(Bytes::from_static(b"a")), false);
        let (b, mut rb) = lookup(Query::Key(Bytes::from_static(b"b")), false);
        let resp = pdpb::QueryRegionResponse {
            key_id_map: vec![1],
            regions_by_id: [(1, region(1))].into_iter().collect(),
            ..Default::default()
        };
        answer_batch(vec![a, b], &resp);
        assert!(ra.try_recv().unwrap().unwrap().is_some());
        assert!(matches!(rb.try_recv().unwrap(), Err(Error::Pd { .. })));
    }

    #[tokio::test]
    async fn closing_fails_queued_and_new_lookups() {
        let router = Arc::new(Router::default());
        let waiting = {
            let router = router.clone();
            tokio::spawn(async move {
                router
                    .query(
                        Query::Id(1),
                        false,
                        ReadFrom::LEADER,
                        Instant::now() + std::time::Duration::from_secs(5),
                    )
                    .await
            })
        };
        while !router.has_work() {
            tokio::task::yield_now().await;
        }
        router.close();
        assert!(matches!(waiting.await.unwrap(), Err(Error::Closed)));
        let deadline = Instant::now() + std::time::Duration::from_secs(1);
        assert!(matches!(
            router
                .query(Query::Id(1), false, ReadFrom::LEADER, deadline)
                .await,
            Err(Error::Closed)
        ));
    }
}
