//! Helpers shared by the garbage, topology and faults integration tests: plain tonic clients
//! for stores and PD, contexts that address a region's leader, and a BatchCommands stream.
//!
//! (One test binary, `integration`, holds every module, so each helper has a user.)

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tikv_mock::proto::keyspacepb::keyspace_client::KeyspaceClient;
use tikv_mock::proto::pdpb::{self, pd_client::PdClient};
use tikv_mock::proto::tikvpb::batch_commands_request::{self, request::Cmd};
use tikv_mock::proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tikv_mock::proto::tikvpb::tikv_client::TikvClient;
use tikv_mock::proto::tikvpb::{BatchCommandsRequest, BatchCommandsResponse};
use tikv_mock::proto::{kvrpcpb, metapb};
use tikv_mock::{ApiVersion, MockCluster};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// Bound on any wait that is expected to succeed; hitting it means the mock hung.
pub(crate) const DEADLINE: Duration = Duration::from_secs(5);

pub(crate) fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

/// Awaits `f`, failing the test if it takes longer than [`DEADLINE`] (a hang).
pub(crate) async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: no outcome within {DEADLINE:?} (the mock hung)"),
    }
}

pub(crate) fn store_url(cluster: &MockCluster, store_id: u64) -> String {
    format!("http://{}", cluster.store_address(store_id).unwrap())
}

pub(crate) fn pd_url(cluster: &MockCluster) -> String {
    format!("http://{}", cluster.pd_endpoints()[0])
}

pub(crate) async fn store_client(cluster: &MockCluster, store_id: u64) -> TikvClient<Channel> {
    TikvClient::connect(store_url(cluster, store_id))
        .await
        .unwrap()
}

pub(crate) async fn pd_client(cluster: &MockCluster) -> PdClient<Channel> {
    PdClient::connect(pd_url(cluster)).await.unwrap()
}

pub(crate) async fn keyspace_client(cluster: &MockCluster) -> KeyspaceClient<Channel> {
    KeyspaceClient::connect(pd_url(cluster)).await.unwrap()
}

pub(crate) fn pd_header(cluster: &MockCluster) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id: cluster.cluster_id(),
        ..Default::default()
    })
}

/// A context addressing `region` through `peer`.
pub(crate) fn ctx_for(
    region: &metapb::Region,
    peer: metapb::Peer,
    api: ApiVersion,
) -> kvrpcpb::Context {
    kvrpcpb::Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: Some(peer),
        api_version: api.to_proto() as i32,
        ..Default::default()
    }
}

/// A client connected to the leader of the region holding a raw `key` (wire form), with a
/// context addressing that region.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) client: TikvClient<Channel>,
    pub(crate) ctx: kvrpcpb::Context,
    pub(crate) store: u64,
    pub(crate) region: metapb::Region,
    pub(crate) leader: metapb::Peer,
}

pub(crate) async fn target(cluster: &MockCluster, key: &[u8], api: ApiVersion) -> Target {
    let (region, leader) = cluster.region_for_raw_key(key).unwrap();
    let leader = leader.unwrap();
    Target {
        client: store_client(cluster, leader.store_id).await,
        ctx: ctx_for(&region, leader, api),
        store: leader.store_id,
        region,
        leader,
    }
}

impl Target {
    pub(crate) fn get_req(&self, key: &[u8]) -> kvrpcpb::RawGetRequest {
        kvrpcpb::RawGetRequest {
            context: Some(self.ctx.clone()),
            key: b(key),
            ..Default::default()
        }
    }

    pub(crate) fn put_req(&self, key: &[u8], value: &[u8]) -> kvrpcpb::RawPutRequest {
        kvrpcpb::RawPutRequest {
            context: Some(self.ctx.clone()),
            key: b(key),
            value: b(value),
            ..Default::default()
        }
    }

    /// A RawGet that must get a gRPC OK.
    pub(crate) async fn get(&mut self, key: &[u8]) -> kvrpcpb::RawGetResponse {
        let req = self.get_req(key);
        bounded("RawGet", self.client.raw_get(req))
            .await
            .unwrap()
            .into_inner()
    }

    /// A RawPut that must get a gRPC OK.
    pub(crate) async fn put(&mut self, key: &[u8], value: &[u8]) -> kvrpcpb::RawPutResponse {
        let req = self.put_req(key, value);
        bounded("RawPut", self.client.raw_put(req))
            .await
            .unwrap()
            .into_inner()
    }

    /// The value stored under `key`, `None` when absent; fails on any error.
    pub(crate) async fn value(&mut self, key: &[u8]) -> Option<Bytes> {
        let resp = self.get(key).await;
        assert!(
            resp.region_error.is_none() && resp.error.is_empty(),
            "{resp:?}"
        );
        (!resp.not_found).then_some(resp.value)
    }
}

// ----- BatchCommands --------------------------------------------------------------------------

/// An open BatchCommands stream.
pub(crate) struct Stream {
    pub(crate) send: mpsc::Sender<BatchCommandsRequest>,
    pub(crate) recv: Streaming<BatchCommandsResponse>,
}

pub(crate) async fn open_stream(client: &mut TikvClient<Channel>) -> Stream {
    let (send, rx) = mpsc::channel(16);
    let recv = bounded(
        "BatchCommands",
        client.batch_commands(ReceiverStream::new(rx)),
    )
    .await
    .unwrap()
    .into_inner();
    Stream { send, recv }
}

impl Stream {
    pub(crate) async fn send(&self, requests: Vec<(u64, Cmd)>) {
        let (ids, requests) = requests
            .into_iter()
            .map(|(id, cmd)| (id, batch_commands_request::Request { cmd: Some(cmd) }))
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

    /// Responses until every id in `ids` has been answered, by id, with the arrival order.
    pub(crate) async fn collect(&mut self, ids: &[u64]) -> (Vec<u64>, HashMap<u64, RespCmd>) {
        let mut order = Vec::new();
        let mut by_id = HashMap::new();
        while ids.iter().any(|id| !by_id.contains_key(id)) {
            let resp = bounded("BatchCommands response", self.recv.message())
                .await
                .unwrap()
                .unwrap();
            for (id, r) in resp.request_ids.into_iter().zip(resp.responses) {
                order.push(id);
                let cmd = r.cmd.expect("a response without a command");
                assert!(by_id.insert(id, cmd).is_none(), "id {id} answered twice");
            }
        }
        (order, by_id)
    }
}

pub(crate) fn batched_get(ctx: &kvrpcpb::Context, key: &[u8]) -> Cmd {
    Cmd::RawGet(kvrpcpb::RawGetRequest {
        context: Some(ctx.clone()),
        key: b(key),
        ..Default::default()
    })
}

pub(crate) fn batched_put(ctx: &kvrpcpb::Context, key: &[u8], value: &[u8]) -> Cmd {
    Cmd::RawPut(kvrpcpb::RawPutRequest {
        context: Some(ctx.clone()),
        key: b(key),
        value: b(value),
        ..Default::default()
    })
}

/// An Empty sub-request answered after `delay_ms` (TiKV delays only from 10 ms up).
pub(crate) fn batched_empty(test_id: u64, delay_ms: u64) -> Cmd {
    Cmd::Empty(tikv_mock::proto::tikvpb::BatchCommandsEmptyRequest {
        test_id,
        delay_time: delay_ms,
    })
}

pub(crate) fn raw_get_of(cmd: &RespCmd) -> &kvrpcpb::RawGetResponse {
    match cmd {
        RespCmd::RawGet(r) => r,
        other => panic!("expected a RawGet response, got {other:?}"),
    }
}

pub(crate) fn raw_put_of(cmd: &RespCmd) -> &kvrpcpb::RawPutResponse {
    match cmd {
        RespCmd::RawPut(r) => r,
        other => panic!("expected a RawPut response, got {other:?}"),
    }
}

/// TiKV's memcomparable encoding of a key (groups of 8 bytes, each followed by a marker), as
/// region boundaries are stored under API V2.
pub(crate) fn mem_encode(key: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity((key.len() / 8 + 1) * 9);
    for chunk in key.chunks(8).chain(
        // A key whose length is a multiple of 8 (including empty) ends with an all-pad group.
        key.len().is_multiple_of(8).then_some(&[][..]),
    ) {
        let pad = 8 - chunk.len();
        out.extend_from_slice(chunk);
        out.extend(std::iter::repeat_n(0u8, pad));
        out.push(0xFF - pad as u8);
    }
    Bytes::from(out)
}
