//! Bad input never panics and never hangs: every gRPC method of every service the mock serves
//! (enumerated from the `.proto` files at test time, so a method added later is covered) gets
//! bytes that are not protobuf, a truncated field and an all-default message, through a raw-bytes
//! codec; each must come back with a status (or a stream event) within a deadline, no handler
//! may panic, and the servers must keep serving. Then valid protobuf with bad content: what TiKV
//! and PD answer to an empty key, an inverted range, an unknown region, a context without peer
//! or epoch, and a wrong cluster id.

use crate::common;

use std::sync::{Mutex, Once};

use bytes::{Buf, BufMut, Bytes};
use common::*;
use prost::Message;
use tikv_mock::proto::{kvrpcpb, pdpb};
use tikv_mock::{ApiVersion, MockCluster};
use tokio_stream::StreamExt;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

// ----- panic detection ------------------------------------------------------------------------

/// Panics on tokio worker threads, where the servers of the tests that check for panics run
/// (those tests use the multi-threaded runtime, so their own assertions fail on the test thread
/// and are not counted). A handler's panic passes through the hook even though tokio catches it.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("tokio-runtime-worker") {
                PANICS
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(info.to_string());
            }
            default(info);
        }));
    });
}

fn assert_no_panics() {
    // Copied out: failing the assertion below runs the hook, which takes the lock.
    let panics = PANICS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert!(panics.is_empty(), "the mock panicked: {panics:#?}");
}

// ----- a codec that sends bytes as they are ---------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

// ----- the methods the mock serves ------------------------------------------------------------

/// One gRPC method: its path and whether either side streams.
#[derive(Debug, Clone)]
struct Method {
    path: String,
    client_streaming: bool,
    server_streaming: bool,
}

impl Method {
    fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or_default()
    }

    fn streaming(&self) -> bool {
        self.client_streaming || self.server_streaming
    }
}

/// Every rpc of every service in a `.proto` file of the workspace's `proto/` directory.
fn proto_methods(file: &str) -> Vec<Method> {
    let path = format!("{}/../proto/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    // Comments out, punctuation into tokens of its own, so declarations may span lines.
    let mut spaced = String::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        for c in code.chars() {
            if "(){};".contains(c) {
                spaced.push(' ');
                spaced.push(c);
                spaced.push(' ');
            } else {
                spaced.push(c);
            }
        }
        spaced.push('\n');
    }
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut package = "";
    let mut service: Option<&str> = None;
    let mut depth = 0usize;
    let mut service_depth = 0usize;
    let mut methods = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match tokens[i] {
            "package" => package = tokens[i + 1],
            "service" if depth == 0 => {
                service = Some(tokens[i + 1]);
                service_depth = depth + 1;
            }
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if depth < service_depth {
                    service = None;
                }
            }
            "rpc" if service.is_some() => {
                // rpc Name ( [stream] Type ) returns ( [stream] Type )
                let name = tokens[i + 1];
                assert_eq!(tokens[i + 2], "(", "{file}: rpc {name}");
                let client_streaming = tokens[i + 3] == "stream";
                let mut j = i + 3;
                while tokens[j] != "returns" {
                    j += 1;
                }
                assert_eq!(tokens[j + 1], "(", "{file}: rpc {name}");
                let server_streaming = tokens[j + 2] == "stream";
                methods.push(Method {
                    path: format!("/{package}.{}/{name}", service.unwrap_or_default()),
                    client_streaming,
                    server_streaming,
                });
                i = j;
            }
            _ => {}
        }
        i += 1;
    }
    methods
}

/// The pieces of `google.protobuf.FileDescriptorSet` needed to list services and methods.
#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorSet {
    #[prost(message, repeated, tag = "1")]
    file: Vec<FileDescriptorProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorProto {
    #[prost(string, optional, tag = "2")]
    package: Option<String>,
    #[prost(message, repeated, tag = "6")]
    service: Vec<ServiceDescriptorProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceDescriptorProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(message, repeated, tag = "2")]
    method: Vec<MethodDescriptorProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MethodDescriptorProto {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(bool, optional, tag = "5")]
    client_streaming: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    server_streaming: Option<bool>,
}

/// The methods of `grpc.health.v1.Health`, from the descriptor tonic-health is built from (the
/// workspace has no `.proto` for it).
fn health_methods() -> Vec<Method> {
    let set = FileDescriptorSet::decode(tonic_health::pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = Vec::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let service_name = service.name.unwrap_or_default();
            for m in service.method {
                methods.push(Method {
                    path: format!("/{package}.{service_name}/{}", m.name.unwrap_or_default()),
                    client_streaming: m.client_streaming.unwrap_or(false),
                    server_streaming: m.server_streaming.unwrap_or(false),
                });
            }
        }
    }
    methods
}

// ----- calls with raw bodies ------------------------------------------------------------------

/// What a call produced first.
#[derive(Debug)]
enum Outcome {
    /// A unary answer, or a stream's first message.
    Message(Bytes),
    /// A status: the call failed, or the stream failed before any message.
    Status(Status),
    /// The stream ended without a message.
    Ended,
}

/// Sends `body` as the one request message of `method` and waits (bounded) for the first
/// outcome.
async fn call(channel: &Channel, method: &Method, body: Bytes) -> Outcome {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    let path = PathAndQuery::try_from(method.path.clone()).unwrap();
    let what = format!("{} with {body:02x?}", method.path);
    bounded(&what, async move {
        grpc.ready().await.unwrap();
        if !method.streaming() {
            return match grpc.unary(tonic::Request::new(body), path, RawCodec).await {
                Ok(resp) => Outcome::Message(resp.into_inner()),
                Err(status) => Outcome::Status(status),
            };
        }
        let request = tonic::Request::new(tokio_stream::once(body));
        match grpc.streaming(request, path, RawCodec).await {
            Err(status) => Outcome::Status(status),
            Ok(resp) => match resp.into_inner().next().await {
                Some(Ok(message)) => Outcome::Message(message),
                Some(Err(status)) => Outcome::Status(status),
                None => Outcome::Ended,
            },
        }
    })
    .await
}

/// Bytes that are not a protobuf message of any type: a field key with the invalid wire type 7.
const INVALID_WIRE_TYPE: &[u8] = &[0xff, 0xff, 0xff, 0x0f, 0x01];
/// Field 1, length-delimited, announcing 5 bytes of which 1 follows.
const TRUNCATED_FIELD: &[u8] = &[0x0a, 0x05, 0x01];

async fn channel(url: String) -> Channel {
    Channel::from_shared(url).unwrap().connect().await.unwrap()
}

struct Server {
    channel: Channel,
    methods: Vec<Method>,
}

async fn servers(cluster: &MockCluster) -> Vec<Server> {
    let store = cluster.store_ids()[0];
    let pd = channel(pd_url(cluster)).await;
    let tikv = channel(store_url(cluster, store)).await;
    let mut pd_methods = proto_methods("pdpb.proto");
    pd_methods.extend(proto_methods("keyspacepb.proto"));
    pd_methods.extend(health_methods());
    let mut tikv_methods = proto_methods("tikvpb.proto");
    tikv_methods.extend(health_methods());
    vec![
        Server {
            channel: pd,
            methods: pd_methods,
        },
        Server {
            channel: tikv,
            methods: tikv_methods,
        },
    ]
}

#[test]
fn every_service_is_enumerated_from_the_protos() {
    let count = |file: &str| proto_methods(file).len();
    assert!(count("tikvpb.proto") >= 49);
    assert!(count("pdpb.proto") >= 29);
    assert!(count("keyspacepb.proto") >= 5);
    let tikv = proto_methods("tikvpb.proto");
    let batch = tikv.iter().find(|m| m.name() == "BatchCommands").unwrap();
    assert_eq!(batch.path, "/tikvpb.Tikv/BatchCommands");
    assert!(batch.client_streaming && batch.server_streaming);
    let cop = tikv
        .iter()
        .find(|m| m.name() == "CoprocessorStream")
        .unwrap();
    assert!(!cop.client_streaming && cop.server_streaming);
    let watch = proto_methods("keyspacepb.proto")
        .into_iter()
        .find(|m| m.name() == "WatchKeyspaces")
        .unwrap();
    assert_eq!(watch.path, "/keyspacepb.Keyspace/WatchKeyspaces");
    let health: Vec<String> = health_methods().into_iter().map(|m| m.path).collect();
    assert!(health.contains(&"/grpc.health.v1.Health/Check".to_owned()));
    assert!(health.contains(&"/grpc.health.v1.Health/Watch".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_get_an_error_status_on_every_method() {
    record_panics();
    let cluster = MockCluster::builder().start().await.unwrap();
    let servers = servers(&cluster).await;
    for server in &servers {
        for method in &server.methods {
            for body in [INVALID_WIRE_TYPE, TRUNCATED_FIELD] {
                let outcome = call(&server.channel, method, Bytes::from_static(body)).await;
                match outcome {
                    // Like grpc-go and grpcio, a message that cannot be parsed is INTERNAL.
                    Outcome::Status(s) => assert_eq!(
                        s.code(),
                        Code::Internal,
                        "{} with {body:02x?}: {s:?}",
                        method.path
                    ),
                    // A bidirectional stream's handler reads the request itself; ending the
                    // stream (with OK) rather than failing it is accepted there.
                    Outcome::Ended if method.client_streaming => {}
                    other => panic!("{} with {body:02x?}: {other:?}", method.path),
                }
            }
        }
    }
    assert_no_panics();
    assert_servers_still_serve(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_default_messages_get_an_answer_on_every_method() {
    record_panics();
    let cluster = MockCluster::builder().start().await.unwrap();
    let servers = servers(&cluster).await;
    for server in &servers {
        for method in &server.methods {
            // Any outcome is fine (an empty header is a wrong cluster id for PD, an empty
            // context a StoreNotMatch for TiKV); what matters is that one arrives.
            let outcome = call(&server.channel, method, Bytes::new()).await;
            if let Outcome::Status(s) = &outcome {
                assert!(
                    !s.message().contains("transport") && !s.message().contains("h2 protocol"),
                    "{}: the connection broke: {s:?}",
                    method.path
                );
            }
        }
    }
    assert_no_panics();
    assert_servers_still_serve(&cluster).await;
}

async fn assert_servers_still_serve(cluster: &MockCluster) {
    let mut pd = pd_client(cluster).await;
    let members = bounded(
        "GetMembers",
        pd.get_members(pdpb::GetMembersRequest::default()),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(
        members.header.unwrap().cluster_id,
        cluster.cluster_id(),
        "PD still answers"
    );
    let mut t = target(cluster, b"k", ApiVersion::V1).await;
    assert!(t.put(b"k", b"v").await.error.is_empty());
    assert_eq!(t.value(b"k").await, Some(b(b"v")));
    // Every store, not only the one that got the garbage.
    for store in cluster.store_ids() {
        let mut client = store_client(cluster, store).await;
        let safe_ts = bounded(
            "GetStoreSafeTS",
            client.get_store_safe_ts(kvrpcpb::StoreSafeTsRequest::default()),
        )
        .await;
        assert!(safe_ts.is_ok(), "store {store}: {safe_ts:?}");
    }
}

// ----- valid protobuf, bad content ------------------------------------------------------------

/// TiKV checks only that a raw key is not too large (`check_key_size!` in
/// `src/storage/mod.rs`), and raftstore only that it lies in the region: under API V1 the empty
/// key is an ordinary key of the first region. Under V2 it has no keyspace prefix.
#[tokio::test]
async fn an_empty_raw_key_is_an_ordinary_key_under_v1_and_a_key_mode_error_under_v2() {
    let cluster = MockCluster::builder()
        .split_keys([b"m"])
        .start()
        .await
        .unwrap();
    let mut t = target(&cluster, b"", ApiVersion::V1).await;
    let put = t.put(b"", b"empty").await;
    assert!(
        put.region_error.is_none() && put.error.is_empty(),
        "{put:?}"
    );
    assert_eq!(t.value(b"").await, Some(b(b"empty")));
    let scan = bounded(
        "RawScan",
        t.client.raw_scan(kvrpcpb::RawScanRequest {
            context: Some(t.ctx.clone()),
            start_key: Bytes::new(),
            end_key: b(b"m"),
            limit: 10,
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!(scan.kvs.len(), 1);
    assert!(scan.kvs[0].key.is_empty() && scan.kvs[0].error.is_none());

    let v2 = MockCluster::builder()
        .api_version(ApiVersion::V2)
        .start()
        .await
        .unwrap();
    let mut t = target(&v2, b"r\0\0\0", ApiVersion::V2).await;
    let put = t.put(b"", b"empty").await;
    assert!(put.region_error.is_none());
    assert_eq!(
        put.error,
        "Key mode mismatched with the request mode, cmd: raw_put, storage: V2, key: "
    );
}

/// A forward scan whose end is below its start (or a reverse scan whose end is above it) is an
/// empty iterator range in TiKV's `RawStore`: no pairs, no error.
#[tokio::test]
async fn inverted_scan_ranges_are_empty_and_inverted_batch_ranges_are_refused() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"a", ApiVersion::V1).await;
    for k in [b"a", b"c", b"m", b"x"] {
        assert!(t.put(k, b"v").await.error.is_empty());
    }
    for (start, end, reverse) in [(b"m", b"c", false), (b"c", b"m", true)] {
        let scan = bounded(
            "RawScan",
            t.client.raw_scan(kvrpcpb::RawScanRequest {
                context: Some(t.ctx.clone()),
                start_key: b(start),
                end_key: b(end),
                limit: 10,
                reverse,
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_inner();
        assert!(
            scan.region_error.is_none() && scan.kvs.is_empty(),
            "{scan:?}"
        );
    }
    // RawBatchScan validates its ranges first (`check_key_ranges`): "Invalid KeyRanges" in a pair.
    let batch = bounded(
        "RawBatchScan",
        t.client.raw_batch_scan(kvrpcpb::RawBatchScanRequest {
            context: Some(t.ctx.clone()),
            ranges: vec![kvrpcpb::KeyRange {
                start_key: b(b"m"),
                end_key: b(b"c"),
            }],
            each_limit: 10,
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(batch.region_error.is_none());
    assert_eq!(batch.kvs.len(), 1);
    let abort = &batch.kvs[0].error.as_ref().unwrap().abort;
    assert!(abort.contains("Invalid KeyRanges"), "{abort}");
    // An inverted delete range is refused by raftstore and deletes nothing.
    let dr = bounded(
        "RawDeleteRange",
        t.client.raw_delete_range(kvrpcpb::RawDeleteRangeRequest {
            context: Some(t.ctx.clone()),
            start_key: b(b"m"),
            end_key: b(b"c"),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let e = dr.region_error.unwrap();
    assert!(
        e.message.starts_with("invalid delete range command"),
        "{e:?}"
    );
    assert_eq!(t.value(b"c").await, Some(b(b"v")));
}

/// Region validation in TiKV's order on contexts that are valid protobuf but wrong: no context
/// or no peer (store 0 is not this store: StoreNotMatch), an unknown region (RegionNotFound).
#[tokio::test]
async fn contexts_without_peer_or_known_region_get_tikv_region_errors() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;

    let store_not_match = |e: Option<tikv_mock::proto::errorpb::Error>| {
        let e = e.expect("a region error");
        let snm = e.store_not_match.expect("StoreNotMatch");
        assert_eq!((snm.request_store_id, snm.actual_store_id), (0, t.store));
    };
    let resp = bounded(
        "RawGet",
        t.client.clone().raw_get(kvrpcpb::RawGetRequest {
            context: None,
            key: b(b"k"),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    store_not_match(resp.region_error);
    let mut no_peer = t.ctx.clone();
    no_peer.peer = None;
    let resp = bounded(
        "RawPut",
        t.client.clone().raw_put(kvrpcpb::RawPutRequest {
            context: Some(no_peer),
            key: b(b"k"),
            value: b(b"v"),
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner();
    store_not_match(resp.region_error);

    let mut unknown = t.ctx.clone();
    unknown.region_id = 987_654;
    let mut req = t.get_req(b"k");
    req.context = Some(unknown);
    let resp = bounded("RawGet", t.client.raw_get(req))
        .await
        .unwrap()
        .into_inner();
    let e = resp.region_error.unwrap();
    assert_eq!(e.region_not_found.unwrap().region_id, 987_654);

    // None of those writes landed.
    assert_eq!(t.value(b"k").await, None);
}

/// TiKV never sees a KV request without an epoch: `new_request_header`
/// (`src/server/raftkv/mod.rs`) always sets the raft header's epoch from
/// `ctx.get_region_epoch()`, the default `{conf_ver: 0, version: 0}` when the context has none,
/// so raftstore's "missing epoch!" check passes and the version comparison fails: EpochNotMatch
/// listing the region (and, since version 0 predates every split, its split-off siblings).
#[tokio::test]
async fn a_context_without_an_epoch_is_epoch_zero_and_gets_epoch_not_match() {
    let cluster = MockCluster::builder().start().await.unwrap();
    cluster.split_raw([b"m"]).unwrap();
    let mut t = target(&cluster, b"z", ApiVersion::V1).await;
    let mut no_epoch = t.ctx.clone();
    no_epoch.region_epoch = None;
    let mut req = t.put_req(b"z", b"v");
    req.context = Some(no_epoch);
    let resp = bounded("RawPut", t.client.raw_put(req))
        .await
        .unwrap()
        .into_inner();
    let e = resp.region_error.expect("a region error");
    let current = e.epoch_not_match.expect("EpochNotMatch").current_regions;
    assert_eq!(current.first(), Some(&t.region));
    let mut ids: Vec<u64> = current.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    let mut all: Vec<u64> = cluster.regions().iter().map(|r| r.id).collect();
    all.sort_unstable();
    assert_eq!(ids, all);
    assert_eq!(t.value(b"z").await, None);
}

/// The region errors the mock derives from live state carry raftstore's texts (the `Display` of
/// `components/raftstore/src/errors.rs`), as the fault engine's injected ones already do.
/// Clients do not parse these, but people and logs compare them with a real cluster's.
#[tokio::test]
async fn live_region_errors_carry_raftstore_messages() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let t = target(&cluster, b"k", ApiVersion::V1).await;
    let region = t.region.clone();
    let follower = *region.peers.iter().find(|p| p.id != t.leader.id).unwrap();
    // (what, message the mock sent, TiKV's message or its prefix)
    let mut seen: Vec<(&str, String, String)> = Vec::new();

    let mut ctx = t.ctx.clone();
    ctx.peer = None;
    seen.push((
        "StoreNotMatch",
        put_error_message(&t, ctx, b"k").await,
        format!("to store id 0, mine {}", t.store),
    ));

    let mut ctx = t.ctx.clone();
    ctx.peer.as_mut().unwrap().id = 4242;
    seen.push((
        "MismatchPeerId",
        put_error_message(&t, ctx, b"k").await,
        format!("mismatch peer id 4242 != {}", t.leader.id),
    ));

    let mut on_follower = t.clone();
    on_follower.client = store_client(&cluster, follower.store_id).await;
    seen.push((
        "NotLeader",
        put_error_message(
            &on_follower,
            ctx_for(&region, follower, ApiVersion::V1),
            b"k",
        )
        .await,
        format!(
            "peer is not leader for region {}, leader may Some(id: {} store_id: {})",
            region.id, t.leader.id, t.leader.store_id
        ),
    ));

    // "EpochNotMatch current epoch of region N is <epoch>, but you sent <epoch>": the epochs
    // are rust-protobuf debug texts, so only the prefix is compared.
    let mut ctx = t.ctx.clone();
    ctx.region_epoch.as_mut().unwrap().version = 0;
    let message = put_error_message(&t, ctx, b"k").await;
    let prefix = format!("EpochNotMatch current epoch of region {} is ", region.id);
    let got = if message.starts_with(&prefix) {
        prefix.clone()
    } else {
        message
    };
    seen.push(("EpochNotMatch", got, prefix));

    // A write whose key lies outside the region (the batch's second key).
    cluster.split_raw([b"m"]).unwrap();
    let left = target(&cluster, b"a", ApiVersion::V1).await;
    seen.push((
        "KeyNotInRegion",
        put_error_message(&left, left.ctx.clone(), b"z").await,
        format!(
            "key 7A is not in region key range [, 6D) for region {}",
            left.region.id
        ),
    ));

    let wrong: Vec<_> = seen
        .into_iter()
        .filter(|(_, got, want)| got != want)
        .collect();
    assert!(wrong.is_empty(), "(error, mock, TiKV): {wrong:#?}");
}

/// The region error message of a RawBatchPut of `key` (plus `a`, which lies in every region
/// the test addresses) through `t`'s client with `ctx`.
async fn put_error_message(t: &Target, ctx: kvrpcpb::Context, key: &[u8]) -> String {
    let pairs = [b"a".as_slice(), key]
        .iter()
        .map(|k| kvrpcpb::KvPair {
            key: b(k),
            value: b(b"v"),
            ..Default::default()
        })
        .collect();
    bounded(
        "RawBatchPut",
        t.client.clone().raw_batch_put(kvrpcpb::RawBatchPutRequest {
            context: Some(ctx),
            pairs,
            ..Default::default()
        }),
    )
    .await
    .unwrap()
    .into_inner()
    .region_error
    .expect("a region error")
    .message
}

/// PD validates the header of every request except GetMembers and GetClusterInfo (which is how
/// clients learn the id): a wrong cluster id is FAILED_PRECONDITION "mismatch cluster id, need
/// X but got Y" (`validateRoleInRequest` / `ErrMismatchClusterID`), for unary calls and as the
/// first event of a stream. Every request message has the header as field 1, so one body serves
/// every method, including methods added later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cluster_id_is_failed_precondition_on_every_pd_method() {
    record_panics();
    let cluster = MockCluster::builder().cluster_id(42).start().await.unwrap();
    let pd = channel(pd_url(&cluster)).await;
    let mut methods = proto_methods("pdpb.proto");
    methods.extend(proto_methods("keyspacepb.proto"));
    for wrong in [0u64, 43] {
        let header = pdpb::RequestHeader {
            cluster_id: wrong,
            ..Default::default()
        }
        .encode_to_vec();
        let mut body = vec![0x0a, u8::try_from(header.len()).unwrap()];
        body.extend_from_slice(&header);
        let body = Bytes::from(body);
        for method in &methods {
            let outcome = call(&pd, method, body.clone()).await;
            match (method.name(), outcome) {
                ("GetMembers", Outcome::Message(body)) => {
                    let resp = pdpb::GetMembersResponse::decode(body).unwrap();
                    assert_eq!(resp.header.unwrap().cluster_id, 42);
                }
                ("GetClusterInfo", Outcome::Message(body)) => {
                    let resp = pdpb::GetClusterInfoResponse::decode(body).unwrap();
                    assert_eq!(resp.header.unwrap().cluster_id, 42);
                }
                (_, Outcome::Status(s)) => {
                    assert_eq!(
                        (s.code(), s.message()),
                        (
                            Code::FailedPrecondition,
                            format!("mismatch cluster id, need 42 but got {wrong}").as_str()
                        ),
                        "{}",
                        method.path
                    );
                }
                (_, other) => panic!("{} with cluster id {wrong}: {other:?}", method.path),
            }
        }
    }
    assert_no_panics();
}
