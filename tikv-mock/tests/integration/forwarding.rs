//! Request forwarding (`tikv-forwarded-host`) and gzip, end to end through gRPC: a request sent
//! to store S naming store T's address is handled as T would handle it (unary and every
//! sub-request of a BatchCommands stream), counted as forwarded, and fails as TiKV's proxy fails
//! when T cannot be reached; the partition fault (`Matcher::forwarded`) fails only the client's
//! own requests to T; health probes see `set_store_serving`; gzip requests are accepted by the
//! stores and PD.

use crate::common;

use bytes::Bytes;
use common::*;
use tikv_mock::proto::kvrpcpb;
use tikv_mock::proto::pdpb;
use tikv_mock::proto::tikvpb::batch_commands_request::request::Cmd;
use tikv_mock::proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tikv_mock::proto::tikvpb::tikv_client::TikvClient;
use tikv_mock::{
    Action, ApiVersion, FaultRule, HangHandle, Matcher, MockCluster, RegionErrorSpec, Times,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const HEADER: &str = "tikv-forwarded-host";

/// A request carrying the forwarding header (an empty `host` sends an empty value).
fn forwarded<T>(message: T, host: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(HEADER, host.parse().unwrap());
    request
}

/// Three stores, one region; `t` is the store of the region's leader, `s` another store (the
/// one the client can reach), `u` the third.
struct Setup {
    cluster: MockCluster,
    /// Context addressing the region's leader, on T.
    target: Target,
    t: u64,
    s: u64,
    u: u64,
}

async fn setup() -> Setup {
    let cluster = MockCluster::builder().stores(3).start().await.unwrap();
    let target = target(&cluster, b"k", ApiVersion::V1).await;
    let t = target.store;
    let others: Vec<u64> = cluster
        .store_ids()
        .into_iter()
        .filter(|&id| id != t)
        .collect();
    Setup {
        s: others[0],
        u: others[1],
        t,
        target,
        cluster,
    }
}

impl Setup {
    fn t_addr(&self) -> String {
        self.cluster.store_address(self.t).unwrap()
    }

    async fn client(&self, store: u64) -> TikvClient<Channel> {
        store_client(&self.cluster, store).await
    }
}

#[tokio::test]
async fn forwarded_raw_put_lands_on_the_target_and_is_readable() {
    let mut x = setup().await;
    let mut via_s = x.client(x.s).await;
    let resp = bounded(
        "forwarded RawPut",
        via_s.raw_put(forwarded(x.target.put_req(b"k", b"v"), &x.t_addr())),
    )
    .await
    .unwrap()
    .into_inner();
    assert!(
        resp.region_error.is_none() && resp.error.is_empty(),
        "{resp:?}"
    );

    // Readable from T directly, and forwarded again.
    assert_eq!(x.target.value(b"k").await, Some(Bytes::from_static(b"v")));
    let resp = bounded(
        "forwarded RawGet",
        via_s.raw_get(forwarded(x.target.get_req(b"k"), &x.t_addr())),
    )
    .await
    .unwrap()
    .into_inner();
    assert_eq!((resp.value.as_ref(), resp.not_found), (&b"v"[..], false));

    // T handled them; S only forwarded.
    assert_eq!(x.cluster.forwarded_count(x.s, x.t), 2);
    assert_eq!(x.cluster.rpc_count(x.t, "RawPut"), 1);
    assert_eq!(x.cluster.rpc_count(x.t, "RawGet"), 2);
    assert_eq!(x.cluster.rpc_count(x.s, "RawPut"), 0);
    assert_eq!(x.cluster.rpc_count(x.s, "RawGet"), 0);
    assert_eq!(
        x.cluster.forwarded_counts().into_iter().collect::<Vec<_>>(),
        vec![((x.s, x.t), 2)]
    );
    x.cluster.reset_rpc_counts();
    assert_eq!(x.cluster.forwarded_count(x.s, x.t), 0);
}

#[tokio::test]
async fn a_forwarded_request_is_answered_as_the_target_would() {
    let x = setup().await;
    // Move the leadership to S: T now holds a follower.
    x.cluster.transfer_leader(x.target.region.id, x.s).unwrap();
    let region = x.cluster.regions()[0].clone();
    let t_peer = *region.peers.iter().find(|p| p.store_id == x.t).unwrap();
    let req = kvrpcpb::RawGetRequest {
        context: Some(ctx_for(&region, t_peer, ApiVersion::V1)),
        key: b(b"k"),
        ..Default::default()
    };

    // T's own answer, sent directly.
    let mut direct = x.client(x.t).await;
    let want = direct.raw_get(req.clone()).await.unwrap().into_inner();
    let not_leader = want.region_error.clone().unwrap().not_leader.unwrap();
    assert_eq!(not_leader.leader.unwrap().store_id, x.s);

    // The same through S (which holds the leader itself) and through U.
    for via in [x.s, x.u] {
        let mut client = x.client(via).await;
        let got = client
            .raw_get(forwarded(req.clone(), &x.t_addr()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, want, "forwarded through store {via}");
    }
    assert_eq!(x.cluster.forwarded_count(x.s, x.t), 1);
    assert_eq!(x.cluster.forwarded_count(x.u, x.t), 1);
    assert_eq!(x.cluster.rpc_count(x.t, "RawGet"), 3);

    // Addressed to S's leader peer but forwarded to T: T is not that peer's store.
    let leader_peer = *region.peers.iter().find(|p| p.store_id == x.s).unwrap();
    let mut via_u = x.client(x.u).await;
    let resp = via_u
        .raw_get(forwarded(
            kvrpcpb::RawGetRequest {
                context: Some(ctx_for(&region, leader_peer, ApiVersion::V1)),
                key: b(b"k"),
                ..Default::default()
            },
            &x.t_addr(),
        ))
        .await
        .unwrap()
        .into_inner();
    let snm = resp.region_error.unwrap().store_not_match.unwrap();
    assert_eq!((snm.request_store_id, snm.actual_store_id), (x.s, x.t));
}

#[tokio::test]
async fn a_header_naming_the_receiver_or_empty_is_handled_locally() {
    let x = setup().await;
    let mut t = x.client(x.t).await;
    for host in [x.t_addr(), String::new()] {
        let resp = t
            .raw_put(forwarded(x.target.put_req(b"k", b"v"), &host))
            .await
            .unwrap()
            .into_inner();
        assert!(resp.region_error.is_none(), "{resp:?}");
    }
    assert_eq!(x.cluster.rpc_count(x.t, "RawPut"), 2);
    assert!(x.cluster.forwarded_counts().is_empty());

    // Methods TiKV does not forward are served by the receiver, header or not.
    let mut s = x.client(x.s).await;
    s.get_store_safe_ts(forwarded(
        kvrpcpb::StoreSafeTsRequest::default(),
        &x.t_addr(),
    ))
    .await
    .unwrap();
    assert_eq!(x.cluster.rpc_count(x.s, "GetStoreSafeTS"), 1);
    assert_eq!(x.cluster.rpc_count(x.t, "GetStoreSafeTS"), 0);
    assert!(x.cluster.forwarded_counts().is_empty());
}

#[tokio::test]
async fn the_partition_matcher_fails_direct_requests_only() {
    let mut x = setup().await;
    x.cluster.add_fault(
        FaultRule::new(
            Matcher::tikv().store(x.t).forwarded(false),
            Action::status(tonic::Code::Unavailable, "partitioned from the client"),
        )
        .times(Times::Always),
    );
    x.cluster.set_store_serving(x.t, false).await.unwrap();

    // The client's liveness probe on T says NOT_SERVING; S is fine.
    for (store, want) in [
        (x.t, ServingStatus::NotServing),
        (x.s, ServingStatus::Serving),
    ] {
        let channel = Channel::from_shared(store_url(&x.cluster, store))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        let status = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, want as i32, "store {store}");
    }

    // Direct requests to T fail, unary and batched.
    let err = x
        .target
        .client
        .raw_put(x.target.put_req(b"k", b"v"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let mut direct = open_stream(&mut x.target.client).await;
    direct
        .send(vec![(1, batched_get(&x.target.ctx, b"k"))])
        .await;
    let err = bounded("direct stream", direct.recv.message())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);

    // Forwarded through S they succeed, unary and batched.
    let mut via_s = x.client(x.s).await;
    let resp = via_s
        .raw_put(forwarded(x.target.put_req(b"k", b"v"), &x.t_addr()))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region_error.is_none(), "{resp:?}");
    let mut stream = open_forwarded_stream(&mut via_s, &x.t_addr()).await;
    stream
        .send(vec![(7, batched_get(&x.target.ctx, b"k"))])
        .await;
    let (_, by_id) = stream.collect(&[7]).await;
    assert_eq!(raw_get_of(&by_id[&7]).value.as_ref(), b"v");
}

#[tokio::test]
async fn via_matches_the_store_that_forwarded() {
    let x = setup().await;
    x.cluster.add_fault(
        FaultRule::new(
            Matcher::tikv().store(x.t).via(x.s),
            Action::region_error(RegionErrorSpec::ServerIsBusy {
                reason: "scheduler is busy".to_owned(),
                estimated_wait_ms: 5,
            }),
        )
        .times(Times::Always),
    );
    let get = |via: u64| {
        let (x, addr) = (&x, x.t_addr());
        async move {
            let mut client = x.client(via).await;
            client
                .raw_get(forwarded(x.target.get_req(b"k"), &addr))
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert!(
        get(x.s)
            .await
            .region_error
            .unwrap()
            .server_is_busy
            .is_some()
    );
    assert!(get(x.u).await.region_error.is_none());
    let mut direct = x.client(x.t).await;
    let resp = direct
        .raw_get(x.target.get_req(b"k"))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region_error.is_none());
}

async fn open_forwarded_stream(client: &mut TikvClient<Channel>, host: &str) -> Stream {
    let (send, rx) = mpsc::channel(16);
    let recv = bounded(
        "forwarded BatchCommands",
        client.batch_commands(forwarded(ReceiverStream::new(rx), host)),
    )
    .await
    .unwrap()
    .into_inner();
    Stream { send, recv }
}

#[tokio::test]
async fn a_forwarded_batch_commands_stream_forwards_every_sub_request() {
    let x = setup().await;
    let mut via_s = x.client(x.s).await;
    let mut stream = open_forwarded_stream(&mut via_s, &x.t_addr()).await;
    let ctx = &x.target.ctx;
    stream
        .send(vec![
            (1, batched_put(ctx, b"a", b"1")),
            (2, batched_put(ctx, b"b", b"2")),
            (3, batched_put(ctx, b"c", b"3")),
        ])
        .await;
    let (_, by_id) = stream.collect(&[1, 2, 3]).await;
    for id in [1, 2, 3] {
        let r = raw_put_of(&by_id[&id]);
        assert!(r.region_error.is_none() && r.error.is_empty(), "{r:?}");
    }
    stream
        .send(vec![
            (4, batched_get(ctx, b"b")),
            (5, Cmd::GetHealthFeedback(Default::default())),
        ])
        .await;
    let (_, by_id) = stream.collect(&[4, 5]).await;
    assert_eq!(raw_get_of(&by_id[&4]).value.as_ref(), b"2");
    // The health feedback is T's: the stream is T's.
    match &by_id[&5] {
        RespCmd::GetHealthFeedback(r) => {
            assert_eq!(r.health_feedback.unwrap().store_id, x.t);
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(x.cluster.forwarded_count(x.s, x.t), 5);
    assert_eq!(x.cluster.rpc_count(x.t, "RawPut"), 3);
    assert_eq!(x.cluster.rpc_count(x.s, "RawPut"), 0);
    let mut t = x.target.clone();
    assert_eq!(t.value(b"c").await, Some(Bytes::from_static(b"3")));

    // A sub-request for a region T does not lead gets T's NotLeader.
    x.cluster.transfer_leader(x.target.region.id, x.u).unwrap();
    stream.send(vec![(6, batched_get(ctx, b"b"))]).await;
    let (_, by_id) = stream.collect(&[6]).await;
    let nl = raw_get_of(&by_id[&6])
        .region_error
        .clone()
        .unwrap()
        .not_leader
        .unwrap();
    assert_eq!(nl.leader.unwrap().store_id, x.u);
}

#[tokio::test]
async fn a_failing_forwarded_stream_ends_with_cancelled() {
    let mut x = setup().await;
    // The same status fault fails a direct stream with its own code ...
    x.cluster.add_fault(
        FaultRule::new(
            Matcher::tikv().store(x.t).batched(true),
            Action::status(tonic::Code::Unavailable, "boom"),
        )
        .times(Times::N(2)),
    );
    let mut direct = open_stream(&mut x.target.client).await;
    direct
        .send(vec![(1, batched_get(&x.target.ctx, b"k"))])
        .await;
    let err = bounded("direct", direct.recv.message()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    // ... and a forwarded one with CANCELLED: TiKV's proxy drops the client's call.
    let mut via_s = x.client(x.s).await;
    let mut stream = open_forwarded_stream(&mut via_s, &x.t_addr()).await;
    stream
        .send(vec![(1, batched_get(&x.target.ctx, b"k"))])
        .await;
    let err = bounded("forwarded", stream.recv.message())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Cancelled);
}

#[tokio::test]
async fn an_unreachable_target_is_cancelled_as_tikv_proxy_does() {
    let x = setup().await;
    let mut via_s = x.client(x.s).await;

    // An address no store has.
    let err = via_s
        .raw_get(forwarded(x.target.get_req(b"k"), "127.0.0.1:1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Cancelled);
    let (_tx, rx) = mpsc::channel::<tikv_mock::proto::tikvpb::BatchCommandsRequest>(1);
    let err = via_s
        .batch_commands(forwarded(ReceiverStream::new(rx), "127.0.0.1:1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Cancelled);

    // A stopped store: counted as forwarded, never handled.
    x.cluster.stop_store(x.t).await.unwrap();
    let err = via_s
        .raw_put(forwarded(x.target.put_req(b"k", b"v"), &x.t_addr()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Cancelled);
    assert_eq!(x.cluster.forwarded_count(x.s, x.t), 1);
    assert_eq!(x.cluster.rpc_count(x.t, "RawPut"), 0);
    let (_tx, rx) = mpsc::channel::<tikv_mock::proto::tikvpb::BatchCommandsRequest>(1);
    let err = via_s
        .batch_commands(forwarded(ReceiverStream::new(rx), &x.t_addr()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Cancelled);

    // The receiver's cluster-id check comes first.
    let mut req = x.target.get_req(b"k");
    req.context.as_mut().unwrap().cluster_id = x.cluster.cluster_id() + 1;
    let err = via_s
        .raw_get(forwarded(req, &x.t_addr()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // Back up, forwarding works again.
    x.cluster.start_store(x.t).await.unwrap();
    let resp = via_s
        .raw_put(forwarded(x.target.put_req(b"k", b"v"), &x.t_addr()))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region_error.is_none(), "{resp:?}");
}

#[tokio::test]
async fn a_target_stopping_breaks_forwarded_calls_and_streams() {
    let x = setup().await;
    let mut via_s = x.client(x.s).await;
    let mut stream = open_forwarded_stream(&mut via_s, &x.t_addr()).await;
    stream
        .send(vec![(1, batched_get(&x.target.ctx, b"k"))])
        .await;
    stream.collect(&[1]).await;

    // A unary call T holds.
    let hang = HangHandle::new();
    x.cluster.add_fault(FaultRule::new(
        Matcher::tikv().store(x.t).command("RawPut").forwarded(true),
        Action::hang(&hang),
    ));
    let held = {
        let mut client = via_s.clone();
        let req = forwarded(x.target.put_req(b"k", b"v"), &x.t_addr());
        tokio::spawn(async move { client.raw_put(req).await })
    };
    bounded("T holds the call", async {
        while x.cluster.rpc_count(x.t, "RawPut") == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    x.cluster.stop_store(x.t).await.unwrap();
    let err = bounded("held call", held).await.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let err = bounded("forwarded stream", stream.recv.message())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Cancelled);
    hang.release();
}

#[tokio::test]
async fn gzip_requests_are_accepted_and_answered_compressed() {
    let x = setup().await;
    let mut client = x
        .client(x.t)
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    // Large enough that compression is worth it, and compressible.
    let value = vec![b'z'; 64 * 1024];
    let resp = client
        .raw_put(x.target.put_req(b"k", &value))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region_error.is_none(), "{resp:?}");
    let resp = client.raw_get(x.target.get_req(b"k")).await.unwrap();
    assert_eq!(
        resp.metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap()),
        Some("gzip")
    );
    assert_eq!(resp.into_inner().value.len(), value.len());

    // BatchCommands too, and forwarded.
    let mut via_s = x
        .client(x.s)
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let mut stream = open_forwarded_stream(&mut via_s, &x.t_addr()).await;
    stream
        .send(vec![(1, batched_get(&x.target.ctx, b"k"))])
        .await;
    let (_, by_id) = stream.collect(&[1]).await;
    assert_eq!(raw_get_of(&by_id[&1]).value.len(), value.len());

    // PD as well.
    let mut pd = pd_client(&x.cluster)
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let members = pd
        .get_members(pdpb::GetMembersRequest {
            header: pd_header(&x.cluster),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(members.leader.is_some());
}
