//! BatchCommands end to end: request ids, completion order, the special sub-requests (Empty,
//! GetHealthFeedback, no command), RPC counting across transports, stream failure, and what a
//! stopped store does to open streams and new connections.

use std::collections::HashMap;

use bytes::Bytes;
use tikv_mock::proto::kvrpcpb;
use tikv_mock::proto::tikvpb::batch_commands_request::{self, request::Cmd};
use tikv_mock::proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tikv_mock::proto::tikvpb::tikv_client::TikvClient;
use tikv_mock::proto::tikvpb::{
    BatchCommandsEmptyRequest, BatchCommandsRequest, BatchCommandsResponse,
};
use tikv_mock::{ApiVersion, MockCluster};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

async fn connect(cluster: &MockCluster, store_id: u64) -> TikvClient<Channel> {
    let addr = cluster.store_address(store_id).unwrap();
    TikvClient::connect(format!("http://{addr}")).await.unwrap()
}

/// The leader store of the region holding `key`, and a context for that region.
fn leader_ctx(cluster: &MockCluster, key: &[u8]) -> (u64, kvrpcpb::Context) {
    let (region, leader) = cluster.region_for_raw_key(key).unwrap();
    let leader = leader.unwrap();
    let ctx = kvrpcpb::Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: Some(leader),
        api_version: ApiVersion::V1.to_proto() as i32,
        ..Default::default()
    };
    (leader.store_id, ctx)
}

/// An open BatchCommands stream.
struct Stream {
    send: mpsc::Sender<BatchCommandsRequest>,
    recv: Streaming<BatchCommandsResponse>,
}

async fn open(client: &mut TikvClient<Channel>) -> Stream {
    let (send, rx) = mpsc::channel(16);
    let recv = client
        .batch_commands(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    Stream { send, recv }
}

impl Stream {
    async fn send(&self, requests: Vec<(u64, Option<Cmd>)>) {
        let (ids, requests) = requests
            .into_iter()
            .map(|(id, cmd)| (id, batch_commands_request::Request { cmd }))
            .unzip();
        self.send
            .send(BatchCommandsRequest {
                requests,
                request_ids: ids,
                client_send_time_ns: 0,
            })
            .await
            .unwrap();
    }

    async fn next(&mut self) -> BatchCommandsResponse {
        let resp = self.recv.message().await.unwrap().unwrap();
        assert_eq!(resp.request_ids.len(), resp.responses.len());
        assert_eq!(resp.transport_layer_load, 0);
        resp
    }

    /// Responses until every id in `ids` has been answered, by id, in arrival order.
    async fn collect(&mut self, ids: &[u64]) -> (Vec<u64>, HashMap<u64, Option<RespCmd>>) {
        let mut order = Vec::new();
        let mut by_id = HashMap::new();
        while ids.iter().any(|id| !by_id.contains_key(id)) {
            let resp = self.next().await;
            for (id, r) in resp.request_ids.into_iter().zip(resp.responses) {
                order.push(id);
                assert!(by_id.insert(id, r.cmd).is_none(), "id {id} answered twice");
            }
        }
        (order, by_id)
    }
}

fn raw_put(ctx: &kvrpcpb::Context, key: &[u8], value: &[u8]) -> Option<Cmd> {
    Some(Cmd::RawPut(kvrpcpb::RawPutRequest {
        context: Some(ctx.clone()),
        key: b(key),
        value: b(value),
        ..Default::default()
    }))
}

fn raw_get(ctx: &kvrpcpb::Context, key: &[u8]) -> Option<Cmd> {
    Some(Cmd::RawGet(kvrpcpb::RawGetRequest {
        context: Some(ctx.clone()),
        key: b(key),
        ..Default::default()
    }))
}

fn empty(test_id: u64, delay_time: u64) -> Option<Cmd> {
    Some(Cmd::Empty(BatchCommandsEmptyRequest {
        test_id,
        delay_time,
    }))
}

fn get_value(cmd: &Option<RespCmd>) -> Bytes {
    match cmd {
        Some(RespCmd::RawGet(r)) => {
            assert!(r.region_error.is_none() && r.error.is_empty(), "{r:?}");
            r.value.clone()
        }
        other => panic!("not a RawGet response: {other:?}"),
    }
}

#[tokio::test]
async fn many_requests_in_one_message_and_across_messages() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let (store, ctx) = leader_ctx(&cluster, b"a");
    let mut client = connect(&cluster, store).await;
    let mut stream = open(&mut client).await;

    stream
        .send(vec![
            (1, raw_put(&ctx, b"a", b"1")),
            (2, raw_put(&ctx, b"b", b"2")),
            (3, raw_put(&ctx, b"c", b"3")),
        ])
        .await;
    let (_, puts) = stream.collect(&[1, 2, 3]).await;
    for id in [1, 2, 3] {
        match &puts[&id] {
            Some(RespCmd::RawPut(r)) => assert!(r.error.is_empty() && r.region_error.is_none()),
            other => panic!("id {id}: {other:?}"),
        }
    }

    stream.send(vec![(10, raw_get(&ctx, b"c"))]).await;
    stream
        .send(vec![(11, raw_get(&ctx, b"a")), (12, raw_get(&ctx, b"b"))])
        .await;
    let (_, gets) = stream.collect(&[10, 11, 12]).await;
    assert_eq!(get_value(&gets[&10]), b(b"3"));
    assert_eq!(get_value(&gets[&11]), b(b"1"));
    assert_eq!(get_value(&gets[&12]), b(b"2"));

    // Unary and batched requests are counted alike.
    let unary = client
        .raw_get(kvrpcpb::RawGetRequest {
            context: Some(ctx.clone()),
            key: b(b"a"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unary.value, b(b"1"));
    assert_eq!(cluster.rpc_count(store, "RawGet"), 4);
    assert_eq!(cluster.rpc_count(store, "RawPut"), 3);
}

#[tokio::test]
async fn responses_come_in_completion_order() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let (store, ctx) = leader_ctx(&cluster, b"a");
    let mut client = connect(&cluster, store).await;
    let mut stream = open(&mut client).await;
    stream
        .send(vec![
            (1, empty(41, 100)),
            (2, raw_get(&ctx, b"a")),
            (3, empty(43, 0)),
        ])
        .await;
    let (order, by_id) = stream.collect(&[1, 2, 3]).await;
    // The delayed request finishes last although it came first.
    assert_eq!(order.last(), Some(&1));
    assert!(matches!(&by_id[&1], Some(RespCmd::Empty(e)) if e.test_id == 41));
    assert!(matches!(&by_id[&3], Some(RespCmd::Empty(e)) if e.test_id == 43));
    assert!(matches!(&by_id[&2], Some(RespCmd::RawGet(r)) if r.not_found));
}

#[tokio::test]
async fn a_request_without_a_command_gets_a_response_without_one() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let store = cluster.store_ids()[0];
    let mut client = connect(&cluster, store).await;
    let mut stream = open(&mut client).await;
    stream.send(vec![(7, None)]).await;
    let (_, by_id) = stream.collect(&[7]).await;
    assert!(by_id[&7].is_none());
}

#[tokio::test]
async fn health_feedback_is_attached_with_increasing_sequence_numbers() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let store = cluster.store_ids()[1];
    let mut client = connect(&cluster, store).await;
    let mut stream = open(&mut client).await;
    let ask = || {
        Some(Cmd::GetHealthFeedback(
            kvrpcpb::GetHealthFeedbackRequest::default(),
        ))
    };
    let mut seqs = Vec::new();
    for id in 1..=3 {
        stream.send(vec![(id, ask())]).await;
        let resp = stream.next().await;
        assert_eq!(resp.request_ids, [id]);
        let batch_feedback = resp.health_feedback.unwrap();
        assert_eq!(batch_feedback.store_id, store);
        assert_eq!(batch_feedback.slow_score, 1);
        match &resp.responses[0].cmd {
            Some(RespCmd::GetHealthFeedback(r)) => {
                assert_eq!(r.health_feedback, Some(batch_feedback));
            }
            other => panic!("{other:?}"),
        }
        seqs.push(batch_feedback.feedback_seq_no);
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(cluster.rpc_count(store, "GetHealthFeedback"), 3);
}

#[tokio::test]
async fn a_store_reports_the_slow_score_it_is_given() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let store = cluster.store_ids()[0];
    let mut client = connect(&cluster, store).await;
    let mut stream = open(&mut client).await;
    let ask = || {
        Some(Cmd::GetHealthFeedback(
            kvrpcpb::GetHealthFeedbackRequest::default(),
        ))
    };
    cluster.set_store_slow_score(store, 90).unwrap();
    stream.send(vec![(1, ask())]).await;
    assert_eq!(stream.next().await.health_feedback.unwrap().slow_score, 90);
    cluster.set_store_slow_score(store, 1).unwrap();
    stream.send(vec![(2, ask())]).await;
    assert_eq!(stream.next().await.health_feedback.unwrap().slow_score, 1);
    assert!(cluster.set_store_slow_score(store, 0).is_err());
    assert!(cluster.set_store_slow_score(store, 101).is_err());
    assert!(cluster.set_store_slow_score(999, 50).is_err());
}

#[tokio::test]
async fn kv_gc_batched_is_never_answered() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let (store, ctx) = leader_ctx(&cluster, b"a");
    let mut client = connect(&cluster, store).await;
    let mut stream = open(&mut client).await;
    let gc = Some(Cmd::Gc(kvrpcpb::GcRequest {
        context: Some(ctx.clone()),
        safe_point: 1,
    }));
    // Everything else in the message is answered; the GC request never is. The delayed Empty
    // finishes after anything answered inline, so its arrival closes the window.
    stream
        .send(vec![(1, gc), (2, raw_get(&ctx, b"a")), (3, empty(3, 20))])
        .await;
    let (order, _) = stream.collect(&[2, 3]).await;
    assert_eq!(order, [2, 3]);
    assert_eq!(cluster.rpc_count(store, "KvGC"), 1);
}

#[tokio::test]
async fn a_cluster_id_mismatch_fails_the_whole_stream() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let (store, mut ctx) = leader_ctx(&cluster, b"a");
    let mut client = connect(&cluster, store).await;
    let mut stream = open(&mut client).await;
    stream.send(vec![(1, raw_get(&ctx, b"a"))]).await;
    stream.collect(&[1]).await;
    ctx.cluster_id = cluster.cluster_id() + 1;
    stream.send(vec![(2, raw_get(&ctx, b"a"))]).await;
    let err = stream.recv.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("does not match TiKV cluster id"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_stopped_store_breaks_streams_and_refuses_connections_until_restarted() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let (store, ctx) = leader_ctx(&cluster, b"a");
    let mut client = connect(&cluster, store).await;
    let mut stream = open(&mut client).await;
    stream.send(vec![(1, raw_put(&ctx, b"a", b"1"))]).await;
    stream.collect(&[1]).await;

    cluster.stop_store(store).await.unwrap();
    // The open stream ends (with an error or end of stream), it does not hang.
    let ended = stream.recv.message().await;
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    let addr = cluster.store_address(store).unwrap();
    assert!(TikvClient::connect(format!("http://{addr}")).await.is_err());

    cluster.start_store(store).await.unwrap();
    let mut client = connect(&cluster, store).await;
    let got = client
        .raw_get(kvrpcpb::RawGetRequest {
            context: Some(ctx.clone()),
            key: b(b"a"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value, b(b"1"));
    let mut stream = open(&mut client).await;
    stream.send(vec![(2, raw_get(&ctx, b"a"))]).await;
    let (_, by_id) = stream.collect(&[2]).await;
    assert_eq!(get_value(&by_id[&2]), b(b"1"));
}

#[tokio::test]
async fn large_bursts_are_split_into_messages_of_at_most_128() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let (store, ctx) = leader_ctx(&cluster, b"a");
    let mut client = connect(&cluster, store).await;
    let mut stream = open(&mut client).await;
    let ids: Vec<u64> = (1..=300).collect();
    stream
        .send(ids.iter().map(|&id| (id, raw_get(&ctx, b"a"))).collect())
        .await;
    let mut seen = 0;
    while seen < ids.len() {
        let resp = stream.next().await;
        assert!(!resp.responses.is_empty() && resp.responses.len() <= 128);
        seen += resp.responses.len();
    }
    assert_eq!(seen, 300);
    assert_eq!(cluster.rpc_count(store, "RawGet"), 300);
}

// ----- fault rules on BatchCommands sub-requests ------------------------------------------------

#[tokio::test]
async fn faults_target_single_sub_requests() {
    use std::time::Duration;
    use tikv_mock::{Action, FaultRule, Matcher};

    let cluster = MockCluster::builder().start().await.unwrap();
    let (store, ctx) = leader_ctx(&cluster, b"a");
    let mut client = connect(&cluster, store).await;
    let mut stream = open(&mut client).await;
    stream.send(vec![(1, raw_put(&ctx, b"a", b"1"))]).await;
    stream.collect(&[1]).await;

    // One response dropped, one delayed: the others come first, the dropped one never.
    cluster.add_fault(FaultRule::new(
        Matcher::tikv().batched(true).command("RawGet").key(b"drop"),
        Action::Drop,
    ));
    cluster.add_fault(FaultRule::new(
        Matcher::tikv().batched(true).command("RawGet").key(b"slow"),
        Action::delay(Duration::from_millis(50)),
    ));
    stream
        .send(vec![
            (2, raw_get(&ctx, b"drop")),
            (3, raw_get(&ctx, b"slow")),
            (4, raw_get(&ctx, b"a")),
        ])
        .await;
    let (order, by_id) = stream.collect(&[3, 4]).await;
    assert_eq!(order, [4, 3]);
    assert_eq!(get_value(&by_id[&4]), b(b"1"));
    assert!(!by_id.contains_key(&2));

    // A status fails the whole stream.
    cluster.add_fault(FaultRule::new(
        Matcher::tikv().batched(true).command("RawGet"),
        Action::status(tonic::Code::Internal, "injected"),
    ));
    stream.send(vec![(5, raw_get(&ctx, b"a"))]).await;
    let err = stream.recv.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal);
    assert_eq!(cluster.rpc_count(store, "RawGet"), 4);
}
