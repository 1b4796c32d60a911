//! The TiKV transport end to end against `tikv-mock`: batching, demultiplexing, deadlines,
//! broken and re-created streams, fast failure on a dead store, unary fallback and unary-only
//! RPCs, request forwarding (through a header-recording proxy, also over mutual TLS), health
//! feedback, ResolveLock collapse, the concurrency limit with priorities, and closing.
//!
//! Ports the applicable cases of client-go `internal/client/client_test.go`,
//! `client_fail_test.go` and `priority_queue_test.go`; each test names its client-go original.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::config::TikvClientConfig;
use crate::transport::{
    Liveness, SendOptions, StoreClient, Transport, UnaryRequest, UnaryResponse,
};
use crate::{Config, Error, Security};
use bytes::Bytes;
use tikv_mock::{Action, FaultRule, HangHandle, Matcher, MockCluster, Times};
use tikv_proto::kvrpcpb;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tokio::task::JoinSet;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::{Certificate, Channel, Endpoint, Identity, Server, ServerTlsConfig};

/// Longest any test waits for something that must happen.
const BOUND: Duration = Duration::from_secs(20);

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn opts() -> SendOptions {
    SendOptions::new(Duration::from_secs(10))
}

fn config(tikv: TikvClientConfig) -> Config {
    Config::default().with_tikv_client(tikv)
}

fn one_connection() -> TikvClientConfig {
    TikvClientConfig::default().with_grpc_connection_count(1)
}

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {BOUND:?}"))
}

/// Waits (bounded) until `cond` holds, checking between short pauses: for conditions that
/// change on another task with nothing to await.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    bounded(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A one-store cluster, a transport and the store's client.
struct Env {
    cluster: MockCluster,
    transport: Transport,
    store: StoreClient,
    store_id: u64,
    address: String,
    ctx: kvrpcpb::Context,
}

async fn start(config: Config) -> Env {
    let cluster = MockCluster::builder()
        .stores(1)
        .replicas(1)
        .start()
        .await
        .unwrap();
    let (region, leader) = cluster.region_for_raw_key(b"").unwrap();
    let leader = leader.unwrap();
    let address = cluster.store_address(leader.store_id).unwrap();
    let transport = Transport::new(&config).unwrap();
    let store = transport.store(&address).unwrap();
    let ctx = kvrpcpb::Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: Some(leader),
        ..Default::default()
    };
    Env {
        cluster,
        transport,
        store,
        store_id: leader.store_id,
        address,
        ctx,
    }
}

fn raw_get(ctx: &kvrpcpb::Context, key: &[u8]) -> Cmd {
    Cmd::RawGet(kvrpcpb::RawGetRequest {
        context: Some(ctx.clone()),
        key: b(key),
        ..Default::default()
    })
}

fn raw_put(ctx: &kvrpcpb::Context, key: &[u8], value: &[u8]) -> Cmd {
    Cmd::RawPut(kvrpcpb::RawPutRequest {
        context: Some(ctx.clone()),
        key: b(key),
        value: b(value),
        ..Default::default()
    })
}

fn resolve_lock(ctx: &kvrpcpb::Context, start_ts: u64, keys: &[&[u8]], is_async: bool) -> Cmd {
    Cmd::ResolveLock(kvrpcpb::ResolveLockRequest {
        context: Some(ctx.clone()),
        start_version: start_ts,
        commit_version: 0,
        keys: keys.iter().map(|k| b(k)).collect(),
        is_async,
        ..Default::default()
    })
}

fn get_value(resp: Box<RespCmd>) -> Option<Bytes> {
    match *resp {
        RespCmd::RawGet(r) => {
            assert!(r.region_error.is_none() && r.error.is_empty(), "{r:?}");
            (!r.not_found).then_some(r.value)
        }
        other => panic!("expected RawGet, got {other:?}"),
    }
}

impl Env {
    async fn put(&self, key: &[u8], value: &[u8]) {
        match self
            .store
            .send(raw_put(&self.ctx, key, value), opts())
            .await
            .map(|r| *r)
        {
            Ok(RespCmd::RawPut(r)) => assert!(r.region_error.is_none() && r.error.is_empty()),
            other => panic!("RawPut: {other:?}"),
        }
    }

    async fn get(&self, key: &[u8]) -> Option<Bytes> {
        get_value(
            self.store
                .send(raw_get(&self.ctx, key), opts())
                .await
                .unwrap(),
        )
    }

    fn hang(&self, command: &str, key: &[u8]) -> HangHandle {
        let hang = HangHandle::new();
        self.cluster.add_fault(
            FaultRule::new(
                Matcher::tikv().command(command).key(key),
                Action::hang(&hang),
            )
            .times(Times::Always),
        );
        hang
    }

    async fn wait_for_count(&self, command: &str, n: u64) {
        eventually(&format!("{n} {command} at the store"), || {
            self.cluster.rpc_count(self.store_id, command) >= n
        })
        .await;
    }
}

fn assert_retryable(result: &Result<Box<RespCmd>, Error>) {
    match result {
        Err(e) => assert!(e.is_retryable(), "not retryable: {e:?}"),
        Ok(r) => panic!("expected a failure, got {r:?}"),
    }
}

// ----- batching and demultiplexing -------------------------------------------------------------

/// Many concurrent callers → few BatchCommands messages (client-go's batch send loop).
#[tokio::test]
async fn concurrent_callers_share_batch_commands_messages() {
    let env = start(config(one_connection())).await;
    assert_eq!(env.get(b"warm-up").await, None);
    let before = env.store.stats();

    let mut callers = JoinSet::new();
    for i in 0..64u32 {
        let (store, cmd) = (env.store.clone(), raw_get(&env.ctx, &i.to_be_bytes()));
        callers.spawn(async move { store.send(cmd, opts()).await });
    }
    while let Some(result) = callers.join_next().await {
        assert_eq!(get_value(result.unwrap().unwrap()), None);
    }

    let after = env.store.stats();
    let messages = after.batch_messages - before.batch_messages;
    assert_eq!(after.batched_requests - before.batched_requests, 64);
    assert!(
        messages <= 8,
        "{messages} messages for 64 concurrent requests"
    );
    assert_eq!(after.unary_calls, 0);
    assert_eq!(env.cluster.rpc_count(env.store_id, "RawGet"), 65);
    assert_eq!((after.inflight, after.queued), (0, 0));
}

/// Every caller gets its own answer while the store answers out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_reach_their_callers_under_concurrency() {
    let env = Arc::new(start(config(TikvClientConfig::default())).await);
    // Keys starting with "slow" are answered late, so answers come back out of order.
    env.cluster.add_fault(
        FaultRule::new(
            Matcher::tikv().command("RawGet").keys("slow", "slox"),
            Action::delay(Duration::from_millis(3)),
        )
        .times(Times::Always),
    );
    let mut callers = JoinSet::new();
    for t in 0..64u32 {
        let env = env.clone();
        callers.spawn(async move {
            for i in 0..20u32 {
                let prefix = if (t + i) % 3 == 0 { "slow" } else { "fast" };
                let key = format!("{prefix}-{t}-{i}");
                env.put(key.as_bytes(), format!("v{t}.{i}").as_bytes())
                    .await;
                let value = env.get(key.as_bytes()).await;
                assert_eq!(value, Some(Bytes::from(format!("v{t}.{i}"))), "{key}");
            }
        });
    }
    bounded("callers", async {
        while let Some(result) = callers.join_next().await {
            result.unwrap();
        }
    })
    .await;
    let stats = env.store.stats();
    assert_eq!(stats.batched_requests, 64 * 20 * 2);
    assert_eq!((stats.inflight, stats.queued), (0, 0));
}

// ----- deadlines, broken streams, dead stores ------------------------------------------------

/// A hung request times out while others on the same stream complete; its late answer is
/// dropped (client-go TestCancelTimeoutRetErr, TestSendWhenReconnect's timeout).
#[tokio::test]
async fn a_hung_request_times_out_while_others_complete() {
    let env = start(config(one_connection())).await;
    let hang = env.hang("RawGet", b"hung");
    env.put(b"k", b"v").await;

    let hung = env.store.send(
        raw_get(&env.ctx, b"hung"),
        SendOptions::new(Duration::from_millis(300)),
    );
    let others = async {
        for _ in 0..10 {
            assert_eq!(env.get(b"k").await, Some(b(b"v")));
        }
    };
    let (hung, ()) = bounded("requests", async { tokio::join!(hung, others) }).await;
    match &hung {
        Err(Error::Timeout { after, .. }) => assert_eq!(*after, Duration::from_millis(300)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_retryable(&hung);
    // The abandoned request leaves the in-flight map; its answer, once released, is dropped.
    eventually("the abandoned request to be swept", || {
        env.store.stats().inflight == 0
    })
    .await;
    hang.release();
    assert_eq!(env.get(b"k").await, Some(b(b"v")));

    // A zero timeout fails at once.
    let instant = env
        .store
        .send(raw_get(&env.ctx, b"k"), SendOptions::new(Duration::ZERO))
        .await;
    assert!(matches!(instant, Err(Error::Timeout { .. })), "{instant:?}");
}

/// Stopping the store breaks the stream: every pending request fails with a retryable error,
/// none hangs; after a restart new requests succeed on a re-created stream (client-go
/// TestBatchClientRecoverAfterServerRestart).
#[tokio::test]
async fn a_broken_stream_fails_pending_requests_retryably_and_recovers() {
    let env = start(config(
        TikvClientConfig::default().with_grpc_connection_count(2),
    ))
    .await;
    env.put(b"k", b"v").await;
    let _hang = env.hang("RawGet", b"hung");
    let mut pending = JoinSet::new();
    for _ in 0..6 {
        let (store, cmd) = (env.store.clone(), raw_get(&env.ctx, b"hung"));
        pending.spawn(async move { store.send(cmd, opts()).await });
    }
    env.wait_for_count("RawGet", 6).await;
    assert_eq!(env.store.stats().inflight, 6);

    env.cluster.stop_store(env.store_id).await.unwrap();
    bounded("pending requests to fail", async {
        while let Some(result) = pending.join_next().await {
            assert_retryable(&result.unwrap());
        }
    })
    .await;
    assert_eq!(env.store.stats().inflight, 0);

    // While the store is down, requests fail (fast) with retryable errors.
    for _ in 0..3 {
        assert_retryable(&env.store.send(raw_get(&env.ctx, b"k"), opts()).await);
    }

    env.cluster.clear_faults();
    env.cluster.start_store(env.store_id).await.unwrap();
    // A sender retries with back-off; so does this loop, bounded.
    let value = bounded("a request after the restart", async {
        loop {
            match env.store.send(raw_get(&env.ctx, b"k"), opts()).await {
                Ok(resp) => break get_value(resp),
                Err(e) => {
                    assert!(e.is_retryable(), "{e:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await;
    assert_eq!(value, Some(b(b"v")));
    assert_eq!(env.get(b"k").await, Some(b(b"v")));
}

/// Nobody listens at the address: the request fails fast (not after its timeout) with a
/// retryable error, and so do the next ones while the connection backs off (client-go
/// TestFastFailRequest, TestFastFailWhenNoAvailableConn).
#[tokio::test]
async fn requests_to_a_dead_address_fail_fast_and_retryably() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    let transport = Transport::new(&Config::default()).unwrap();
    let store = transport.store(&address).unwrap();
    let ctx = kvrpcpb::Context::default();
    for _ in 0..3 {
        let result = bounded(
            "a request to a dead address",
            store.send(
                raw_get(&ctx, b"k"),
                SendOptions::new(Duration::from_secs(60)),
            ),
        )
        .await;
        assert_retryable(&result);
        let Err(Error::Grpc { address: a, .. }) = &result else {
            panic!("{result:?}")
        };
        assert_eq!(a, &address);
    }
    // Unary calls fail the same way.
    let unary = store
        .unary(
            UnaryRequest::Cmd(raw_get(&ctx, b"k")),
            SendOptions::new(Duration::from_secs(60)),
        )
        .await;
    assert!(unary.is_err_and(|e| e.is_retryable()));
}

/// A broken forwarded stream fails only its own requests; the direct stream of the same
/// connection keeps its in-flight request (client-go TestRecvErrorInMultipleRecvLoops, and the
/// forwarded-host check of `failPendingRequests`).
#[tokio::test]
async fn a_failing_stream_leaves_the_other_streams_of_its_connection_alone() {
    let env = start(config(one_connection())).await;
    env.put(b"held", b"1").await;
    let hang = env.hang("RawGet", b"held");
    let held = {
        let (store, cmd) = (env.store.clone(), raw_get(&env.ctx, b"held"));
        tokio::spawn(async move { store.send(cmd, opts()).await })
    };
    env.wait_for_count("RawGet", 1).await;

    // A forwarded stream naming the receiving store itself: the mock serves it locally, as
    // TiKV does, while the client keeps it as a stream of its own.
    env.cluster.add_fault(FaultRule::new(
        Matcher::tikv().command("RawGet").key("boom").batched(true),
        Action::status(tonic::Code::Internal, "stream broken"),
    ));
    let forwarded = opts().with_forwarded_host(env.store.address().to_owned());
    let broken = env
        .store
        .send(raw_get(&env.ctx, b"boom"), forwarded.clone())
        .await;
    assert_retryable(&broken);
    // The forwarded stream is re-created on demand.
    let again = env.store.send(raw_get(&env.ctx, b"k"), forwarded).await;
    assert_eq!(get_value(again.unwrap()), None);

    assert_eq!(env.store.stats().inflight, 1, "the held request survives");
    hang.release();
    let held = bounded("the held request", held).await.unwrap();
    assert_eq!(get_value(held.unwrap()), Some(b(b"1")));
    assert_eq!(env.store.stats().live_tasks, 2);
}

// ----- unary paths ------------------------------------------------------------------------------

/// A store that answers BatchCommands with UNIMPLEMENTED gets unary RPCs from then on.
#[tokio::test]
async fn a_store_without_batch_commands_gets_unary_requests() {
    let env = start(config(one_connection())).await;
    env.put(b"k", b"v").await;
    env.cluster.add_fault(FaultRule::new(
        Matcher::tikv().command("RawGet").batched(true),
        Action::status(
            tonic::Code::Unimplemented,
            "BatchCommands is not served here",
        ),
    ));
    let first = env.store.send(raw_get(&env.ctx, b"k"), opts()).await;
    assert_retryable(&first);
    assert!(env.store.stats().batch_unsupported);

    let messages = env.store.stats().batch_messages;
    assert_eq!(env.get(b"k").await, Some(b(b"v")));
    env.put(b"k", b"w").await;
    assert_eq!(env.get(b"k").await, Some(b(b"w")));
    let stats = env.store.stats();
    assert_eq!(stats.unary_calls, 3);
    assert_eq!(stats.batch_messages, messages);
}

/// `max-batch-size = 0` turns batching off: no stream, no task, every command unary.
#[tokio::test]
async fn batching_off_sends_every_command_unary() {
    let env = start(config(one_connection().with_max_batch_size(0))).await;
    env.put(b"k", b"v").await;
    assert_eq!(env.get(b"k").await, Some(b(b"v")));
    let stats = env.store.stats();
    assert_eq!(
        (stats.unary_calls, stats.batch_messages, stats.live_tasks),
        (2, 0, 0)
    );
}

/// RPCs without a BatchCommands slot, and a command sent unary on request.
#[tokio::test]
async fn unary_only_rpcs_reach_the_store() {
    let env = start(config(TikvClientConfig::default())).await;
    env.put(b"a", b"1").await;
    let unary = |req| env.store.unary(req, opts());

    let split = unary(UnaryRequest::SplitRegion(kvrpcpb::SplitRegionRequest {
        context: Some(env.ctx.clone()),
        split_keys: vec![b(b"m")],
        ..Default::default()
    }))
    .await
    .unwrap();
    let UnaryResponse::SplitRegion(split) = split else {
        panic!("{split:?}")
    };
    assert!(split.region_error.is_none(), "{split:?}");
    assert_eq!(split.regions.len(), 2);
    assert_eq!(env.cluster.regions().len(), 2);

    let safe_ts = unary(UnaryRequest::GetStoreSafeTs(Default::default()))
        .await
        .unwrap();
    assert!(matches!(safe_ts, UnaryResponse::GetStoreSafeTs(_)));

    // The region changed: address the left half with its new epoch.
    let (left, leader) = env.cluster.region_for_raw_key(b"a").unwrap();
    let ctx = kvrpcpb::Context {
        region_id: left.id,
        region_epoch: left.region_epoch,
        peer: leader,
        ..Default::default()
    };
    let got = unary(UnaryRequest::Cmd(raw_get(&ctx, b"a"))).await.unwrap();
    let UnaryResponse::Cmd(got) = got else {
        panic!("{got:?}")
    };
    assert_eq!(get_value(Box::new(got)), Some(b(b"1")));
    assert_eq!(env.cluster.rpc_count(env.store_id, "SplitRegion"), 1);
    assert_eq!(env.store.stats().unary_calls, 3);
}

/// The admin and debug RPCs travel unary too, and each answer comes back as its own kind (the
/// mock serves UnsafeDestroyRange; it answers the MVCC debug calls with TiKV's status, which
/// reaches the caller as a typed gRPC error). A command with no unary RPC is refused before
/// anything is sent.
#[tokio::test]
async fn admin_and_debug_rpcs_travel_unary() {
    let env = start(config(TikvClientConfig::default())).await;
    env.put(b"a", b"1").await;
    let unary = |req| env.store.unary(req, opts());

    let destroyed = unary(UnaryRequest::UnsafeDestroyRange(
        kvrpcpb::UnsafeDestroyRangeRequest {
            context: Some(env.ctx.clone()),
            start_key: b(b"a"),
            end_key: b(b"b"),
        },
    ))
    .await
    .unwrap();
    assert!(
        matches!(destroyed, UnaryResponse::UnsafeDestroyRange(_)),
        "{destroyed:?}"
    );
    assert_eq!(env.cluster.rpc_count(env.store_id, "UnsafeDestroyRange"), 1);

    for request in [
        UnaryRequest::MvccGetByKey(kvrpcpb::MvccGetByKeyRequest {
            context: Some(env.ctx.clone()),
            key: b(b"a"),
        }),
        UnaryRequest::MvccGetByStartTs(kvrpcpb::MvccGetByStartTsRequest {
            context: Some(env.ctx.clone()),
            start_ts: 1,
        }),
    ] {
        match unary(request).await {
            Ok(UnaryResponse::MvccGetByKey(_) | UnaryResponse::MvccGetByStartTs(_)) => {}
            Err(Error::Grpc { .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    let import = unary(UnaryRequest::Cmd(Cmd::Import(Default::default()))).await;
    assert!(
        matches!(import, Err(Error::InvalidArgument { .. })),
        "{import:?}"
    );
    let empty = unary(UnaryRequest::Cmd(Cmd::Empty(Default::default()))).await;
    assert!(
        matches!(empty, Err(Error::InvalidArgument { .. })),
        "{empty:?}"
    );
}

/// A forwarded host that cannot be a gRPC header value is refused before sending.
#[tokio::test]
async fn a_forwarded_host_that_is_no_header_value_is_refused() {
    let env = start(config(TikvClientConfig::default())).await;
    let refused = env
        .store
        .unary(
            UnaryRequest::GetStoreSafeTs(Default::default()),
            opts().with_forwarded_host("bad\nhost"),
        )
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument { .. })),
        "{refused:?}"
    );
}

// ----- forwarding and TLS --------------------------------------------------------------------

/// A call the proxy saw: its path and its `tikv-forwarded-host` header.
type Call = (String, Option<String>);

/// A gRPC proxy standing in for a TiKV that forwards: it records the `tikv-forwarded-host`
/// header of every call and relays the call to the store the header names, or to its own
/// target without one.
#[derive(Clone)]
struct Proxy {
    target: Channel,
    seen: Arc<Mutex<Vec<Call>>>,
    peers: Arc<Mutex<HashMap<String, Channel>>>,
}

impl NamedService for Proxy {
    const NAME: &'static str = "tikvpb.Tikv";
}

type ProxyFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl Service<http::Request<Body>> for Proxy {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ProxyFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> ProxyFuture {
        let host = req
            .headers()
            .get("tikv-forwarded-host")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.seen
            .lock()
            .unwrap()
            .push((req.uri().path().to_owned(), host.clone()));
        let mut channel = match host {
            Some(host) => self
                .peers
                .lock()
                .unwrap()
                .entry(host.clone())
                .or_insert_with(|| {
                    Endpoint::from_shared(format!("http://{host}"))
                        .unwrap()
                        .connect_lazy()
                })
                .clone(),
            None => self.target.clone(),
        };
        Box::pin(async move {
            let relayed = async {
                std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                channel.call(req).await
            };
            Ok(relayed
                .await
                .unwrap_or_else(|e| tonic::Status::unavailable(e.to_string()).into_http()))
        })
    }
}

impl Proxy {
    /// Serves on a free loopback port; returns the proxy and its address.
    async fn start(target: &str, tls: Option<ServerTlsConfig>) -> (Proxy, String) {
        let proxy = Proxy {
            target: Endpoint::from_shared(format!("http://{target}"))
                .unwrap()
                .connect_lazy(),
            seen: Arc::default(),
            peers: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let mut server = Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).unwrap();
        }
        let router = server.add_service(proxy.clone());
        tokio::spawn(
            router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (proxy, address)
    }

    fn seen(&self) -> Vec<Call> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Forwarded requests carry `tikv-forwarded-host` with the target store's address, on their
/// own BatchCommands stream and on unary calls; direct ones carry no such header (client-go
/// TestForwardMetadataByBatchCommands, TestForwardMetadataByUnaryCall).
#[tokio::test]
async fn forwarded_requests_carry_the_forwarded_host_header() {
    let env = start(config(one_connection())).await;
    env.put(b"k", b"v").await;
    let (proxy, proxy_address) = Proxy::start(&env.address, None).await;
    let via_proxy = env.transport.store(&proxy_address).unwrap();
    let batch_path = "/tikvpb.Tikv/BatchCommands".to_owned();

    let direct = via_proxy.send(raw_get(&env.ctx, b"k"), opts()).await;
    assert_eq!(get_value(direct.unwrap()), Some(b(b"v")));
    assert_eq!(proxy.seen(), [(batch_path.clone(), None)]);

    // One stream per forwarded host, opened once and reused.
    let forwarded = opts().with_forwarded_host(env.address.as_str());
    for _ in 0..3 {
        let resp = via_proxy
            .send(raw_get(&env.ctx, b"k"), forwarded.clone())
            .await;
        assert_eq!(get_value(resp.unwrap()), Some(b(b"v")));
    }
    assert_eq!(
        proxy.seen(),
        [(batch_path.clone(), Some(env.address.clone()))]
    );

    let unary = via_proxy
        .unary(UnaryRequest::Cmd(raw_get(&env.ctx, b"k")), forwarded)
        .await
        .unwrap();
    assert!(matches!(unary, UnaryResponse::Cmd(RespCmd::RawGet(_))));
    let unary = via_proxy
        .unary(UnaryRequest::Cmd(raw_get(&env.ctx, b"k")), opts())
        .await
        .unwrap();
    assert!(matches!(unary, UnaryResponse::Cmd(RespCmd::RawGet(_))));
    assert_eq!(
        proxy.seen(),
        [
            ("/tikvpb.Tikv/RawGet".to_owned(), Some(env.address.clone())),
            ("/tikvpb.Tikv/RawGet".to_owned(), None),
        ]
    );
}

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/transport/testdata")
        .join(name)
}

/// `[security]` turns on mutual TLS for batched and unary requests.
#[tokio::test]
async fn tls_connections_carry_batched_and_unary_requests() {
    let env = start(config(one_connection())).await;
    env.put(b"k", b"v").await;
    let read = |name| std::fs::read(testdata(name)).unwrap();
    let server_tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read("server.pem"),
            read("server-key.pem"),
        ))
        .client_ca_root(Certificate::from_pem(read("ca.pem")));
    let (proxy, proxy_address) = Proxy::start(&env.address, Some(server_tls)).await;

    let security = Security::new(
        testdata("ca.pem"),
        testdata("client.pem"),
        testdata("client-key.pem"),
        None::<String>,
    );
    let transport = Transport::new(&config(one_connection()).with_security(security)).unwrap();
    let store = transport.store(&proxy_address).unwrap();
    let batched = bounded(
        "a batched request over TLS",
        store.send(raw_get(&env.ctx, b"k"), opts()),
    )
    .await;
    assert_eq!(get_value(batched.unwrap()), Some(b(b"v")));
    let unary = store
        .unary(UnaryRequest::Cmd(raw_get(&env.ctx, b"k")), opts())
        .await
        .unwrap();
    assert!(matches!(unary, UnaryResponse::Cmd(RespCmd::RawGet(_))));
    assert_eq!(proxy.seen().len(), 2);

    // Without a client certificate the server refuses the handshake: a retryable failure.
    let no_identity = Security::default().with_ca(testdata("ca.pem"));
    let transport = Transport::new(&config(one_connection()).with_security(no_identity)).unwrap();
    let refused = transport
        .store(&proxy_address)
        .unwrap()
        .send(raw_get(&env.ctx, b"k"), opts())
        .await;
    assert_retryable(&refused);
}

/// `cluster-verify-cn` admits a server only when its certificate's Common Name is listed;
/// the chain and the address are checked as without it.
#[tokio::test]
async fn the_server_certificate_common_name_must_be_allowed() {
    let env = start(config(one_connection())).await;
    env.put(b"k", b"v").await;
    let read = |name| std::fs::read(testdata(name)).unwrap();
    let server_tls = ServerTlsConfig::new().identity(Identity::from_pem(
        read("server.pem"),
        read("server-key.pem"),
    ));
    let (proxy, proxy_address) = Proxy::start(&env.address, Some(server_tls)).await;
    let with_names = |names: &[&str]| {
        let security = Security::default()
            .with_ca(testdata("ca.pem"))
            .with_verify_cn(names.iter().copied());
        Transport::new(&config(one_connection()).with_security(security)).unwrap()
    };

    // The test server's certificate says CN=tikv-server.
    let allowed = with_names(&["pd-server", "tikv-server"]);
    let store = allowed.store(&proxy_address).unwrap();
    let read_back = bounded(
        "a request to an allowed server",
        store.send(raw_get(&env.ctx, b"k"), opts()),
    )
    .await;
    assert_eq!(get_value(read_back.unwrap()), Some(b(b"v")));
    let unary = store
        .unary(UnaryRequest::Cmd(raw_get(&env.ctx, b"k")), opts())
        .await;
    assert!(matches!(unary, Ok(UnaryResponse::Cmd(RespCmd::RawGet(_)))));
    assert_eq!(proxy.seen().len(), 2);

    let refused = with_names(&["pd-server"])
        .store(&proxy_address)
        .unwrap()
        .send(raw_get(&env.ctx, b"k"), opts())
        .await;
    assert_retryable(&refused);
    let message = format!("{:?}", refused.err());
    assert!(message.contains("tikv-server"), "{message}");
    assert!(
        proxy.seen().is_empty(),
        "nothing reached the refused server"
    );
}

// ----- health feedback, collapse, limit ------------------------------------------------------

/// The liveness probe asks the store's gRPC health service on a connection of its own
/// (client-go `requestLiveness` / `invokeKVStatusAPI`, region_request3_test.go's liveness
/// cases).
#[tokio::test]
async fn liveness_follows_the_stores_health_service() {
    let env = start(config(one_connection())).await;
    let probe = Duration::from_secs(2);
    assert_eq!(env.store.check_liveness(probe).await, Liveness::Reachable);
    env.cluster
        .set_store_serving(env.store_id, false)
        .await
        .unwrap();
    assert_eq!(env.store.check_liveness(probe).await, Liveness::Unreachable);
    env.cluster
        .set_store_serving(env.store_id, true)
        .await
        .unwrap();
    assert_eq!(env.store.check_liveness(probe).await, Liveness::Reachable);
    env.cluster.stop_store(env.store_id).await.unwrap();
    assert_eq!(env.store.check_liveness(probe).await, Liveness::Unreachable);
    env.cluster.start_store(env.store_id).await.unwrap();
    assert_eq!(env.store.check_liveness(probe).await, Liveness::Reachable);
    env.transport.close();
    assert_eq!(env.store.check_liveness(probe).await, Liveness::Unknown);
}

/// The health feedback TiKV attaches to BatchCommands answers is kept per store (client-go
/// TestBatchClientReceiveHealthFeedback).
#[tokio::test]
async fn health_feedback_is_recorded_per_store() {
    let env = start(config(one_connection())).await;
    assert!(env.store.health_feedback().is_none());
    env.get(b"k").await;
    let feedback = env.store.health_feedback().expect("feedback recorded");
    assert_eq!(feedback.store_id, env.store_id);
    assert!(feedback.slow_score >= 1, "{feedback:?}");
    assert!(feedback.feedback_seq_no > 0);

    // Asking for it explicitly answers it in the response and refreshes the record.
    let asked = env
        .store
        .send(
            Cmd::GetHealthFeedback(kvrpcpb::GetHealthFeedbackRequest {
                context: Some(env.ctx.clone()),
            }),
            opts(),
        )
        .await
        .unwrap();
    let RespCmd::GetHealthFeedback(asked) = *asked else {
        panic!("{asked:?}")
    };
    let in_response = asked.health_feedback.unwrap();
    let recorded = env.store.health_feedback().unwrap();
    assert_eq!(recorded.feedback_seq_no, in_response.feedback_seq_no);
    assert!(recorded.feedback_seq_no > feedback.feedback_seq_no);
    assert_eq!(env.store.transport_layer_load(), 0);
}

/// Identical region-wide ResolveLocks in flight are sent once; lite, async and other
/// transactions' resolves are not collapsed with them (client-go TestCollapseResolveLock).
#[tokio::test]
async fn duplicate_resolve_locks_are_sent_once() {
    let env = start(config(one_connection())).await;
    let hang = HangHandle::new();
    env.cluster.add_fault(
        FaultRule::new(
            Matcher::tikv().command("KvResolveLock"),
            Action::hang(&hang),
        )
        .times(Times::Always),
    );
    let mut calls = JoinSet::new();
    let mut send = |cmd: Cmd| {
        let store = env.store.clone();
        calls.spawn(async move { store.send(cmd, opts()).await });
    };
    send(resolve_lock(&env.ctx, 10, &[], false));
    env.wait_for_count("KvResolveLock", 1).await;
    // Joins the one in flight.
    send(resolve_lock(&env.ctx, 10, &[], false));
    // Each of these is different.
    send(resolve_lock(&env.ctx, 10, &[], true));
    send(resolve_lock(&env.ctx, 10, &[b"k"], false));
    send(resolve_lock(&env.ctx, 10, &[b"k"], false));
    send(resolve_lock(&env.ctx, 11, &[], false));
    env.wait_for_count("KvResolveLock", 5).await;
    assert_eq!(env.store.stats().inflight, 5);

    hang.release();
    let answers = bounded("the resolves", calls.join_all()).await;
    for answer in answers {
        match answer.map(|r| *r) {
            Ok(RespCmd::ResolveLock(r)) => {
                assert!(r.region_error.is_none() && r.error.is_none())
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(env.cluster.rpc_count(env.store_id, "KvResolveLock"), 5);
}

/// Under `max-concurrency-request-limit`, extra requests wait in the queue, a high-priority
/// one goes anyway, and the rest go as answers free room (client-go TestLimitConcurrency,
/// TestPrioritySentLimit).
#[tokio::test]
async fn the_concurrency_limit_holds_requests_back_but_not_high_priority_ones() {
    let env = start(config(
        one_connection().with_max_concurrency_request_limit(2),
    ))
    .await;
    let hang = env.hang("RawGet", b"hung");
    let mut hung = JoinSet::new();
    for _ in 0..3 {
        let (store, cmd) = (env.store.clone(), raw_get(&env.ctx, b"hung"));
        hung.spawn(async move { store.send(cmd, opts()).await });
    }
    env.wait_for_count("RawGet", 2).await;
    eventually("the third request to queue", || {
        env.store.stats().queued == 1
    })
    .await;
    assert_eq!(env.store.stats().inflight, 2);

    // Priority 10 and up ignores the limit.
    let urgent = env
        .store
        .send(raw_get(&env.ctx, b"free"), opts().with_priority(10))
        .await;
    assert_eq!(get_value(urgent.unwrap()), None);
    // Below 10 waits behind the limit, ahead of the older lower-priority request.
    let waiting = {
        let (store, cmd) = (env.store.clone(), raw_get(&env.ctx, b"free"));
        tokio::spawn(async move { store.send(cmd, opts().with_priority(5)).await })
    };
    eventually("the prioritised request to queue", || {
        env.store.stats().queued == 2
    })
    .await;
    assert_eq!(env.cluster.rpc_count(env.store_id, "RawGet"), 3);

    hang.release();
    let waiting = bounded("the waiting request", waiting).await.unwrap();
    assert_eq!(get_value(waiting.unwrap()), None);
    for result in bounded("the hung requests", hung.join_all()).await {
        assert_eq!(get_value(result.unwrap()), None);
    }
    assert_eq!(env.cluster.rpc_count(env.store_id, "RawGet"), 5);
}

// ----- closing ----------------------------------------------------------------------------------

/// Closing fails pending and later requests with `Closed` and ends every task; a dropped
/// transport does the same (client-go TestGetConnAfterClose, TestConcurrentCloseConnPanic).
#[tokio::test]
async fn closing_fails_requests_and_ends_every_task() {
    let env = start(config(TikvClientConfig::default())).await;
    let _hang = env.hang("RawGet", b"hung");
    let pending = {
        let (store, cmd) = (env.store.clone(), raw_get(&env.ctx, b"hung"));
        tokio::spawn(async move { store.send(cmd, opts()).await })
    };
    env.wait_for_count("RawGet", 1).await;
    assert_eq!(env.store.stats().live_tasks, 4);

    env.transport.close();
    let pending = bounded("the pending request", pending).await.unwrap();
    assert!(matches!(pending, Err(Error::Closed)), "{pending:?}");
    assert!(matches!(
        env.store.send(raw_get(&env.ctx, b"k"), opts()).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        env.store
            .unary(UnaryRequest::Cmd(raw_get(&env.ctx, b"k")), opts())
            .await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        env.transport.store(&env.address),
        Err(Error::Closed)
    ));
    eventually("every task to end", || env.store.stats().live_tasks == 0).await;

    // Dropping the last transport handle closes too.
    let transport = Transport::new(&config(TikvClientConfig::default())).unwrap();
    let store = transport.store(&env.address).unwrap();
    assert_eq!(store.stats().live_tasks, 4);
    drop(transport);
    eventually("every task to end after drop", || {
        store.stats().live_tasks == 0
    })
    .await;
}

/// Closing one store's connections fails its pending requests retryably; the next
/// `store()` opens fresh ones (client-go TestConn, CloseAddr).
#[tokio::test]
async fn closing_a_store_reopens_it_on_next_use() {
    let env = start(config(one_connection())).await;
    env.put(b"k", b"v").await;
    let hang = env.hang("RawGet", b"hung");
    let pending = {
        let (store, cmd) = (env.store.clone(), raw_get(&env.ctx, b"hung"));
        tokio::spawn(async move { store.send(cmd, opts()).await })
    };
    env.wait_for_count("RawGet", 1).await;

    env.transport.close_store(&env.address);
    assert_retryable(&bounded("the pending request", pending).await.unwrap());
    assert_retryable(&env.store.send(raw_get(&env.ctx, b"k"), opts()).await);
    hang.release();

    let reopened = env.transport.store(&env.address).unwrap();
    let value = reopened.send(raw_get(&env.ctx, b"k"), opts()).await;
    assert_eq!(get_value(value.unwrap()), Some(b(b"v")));
    assert_eq!(reopened.stats().batch_messages, 1);
}

/// Stores restarting under concurrent direct and forwarded traffic: every request ends with
/// an answer or a retryable error, and nothing stays in flight (client-go
/// TestRandomRestartStoreAndForwarding, scaled down and bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_under_load_leave_nothing_behind() {
    let env = Arc::new(start(config(TikvClientConfig::default())).await);
    env.put(b"k", b"v").await;
    let done = Arc::new(AtomicBool::new(false));
    let mut callers = JoinSet::new();
    for t in 0..32u32 {
        let (env, done) = (env.clone(), done.clone());
        callers.spawn(async move {
            let (mut ok, mut i) = (0u32, 0u32);
            while !done.load(Ordering::Relaxed) {
                i += 1;
                let mut options = SendOptions::new(Duration::from_millis(500));
                if (t + i) % 2 == 1 {
                    options = options.with_forwarded_host(env.address.as_str());
                }
                match env.store.send(raw_get(&env.ctx, b"k"), options).await {
                    Ok(resp) => {
                        assert_eq!(get_value(resp), Some(b(b"v")));
                        ok += 1;
                    }
                    Err(e) => {
                        assert!(e.is_retryable(), "{e:?}");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            ok
        });
    }
    bounded("the restarts", async {
        for _ in 0..3 {
            env.wait_for_count("RawGet", 100).await;
            env.cluster.stop_store(env.store_id).await.unwrap();
            env.cluster.start_store(env.store_id).await.unwrap();
            env.cluster.reset_rpc_counts();
        }
        env.wait_for_count("RawGet", 100).await;
    })
    .await;
    done.store(true, Ordering::Relaxed);
    let ok: u32 = bounded("the callers", callers.join_all())
        .await
        .into_iter()
        .sum();
    assert!(ok > 0);
    let stats = env.store.stats();
    assert_eq!((stats.inflight, stats.queued), (0, 0));
    assert_eq!(stats.live_tasks, 4 * 2);
}
