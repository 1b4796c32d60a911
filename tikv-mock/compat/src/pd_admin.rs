//! The two PD calls the transactional scenario needs that tikv-client 0.4 does not expose:
//! `GetMembers` (for the cluster id) and `UpdateServiceGCSafePoint` as TiDB's `gc_worker`, which
//! moves the txn safe point. PD (v8.5 and later, and the mock) refuses a GC safe point above the
//! txn safe point, and 0.4's `gc()` only calls the legacy `UpdateGCSafePoint`, so without this
//! step its `gc()` fails with `ErrGCSafePointExceedsTxnSafePoint`.
//!
//! The messages carry only the fields these calls use, with their pdpb field numbers; tonic and
//! prost are the versions tikv-client 0.4 already depends on.

use std::time::Duration;

use tonic::codec::ProstCodec;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, PartialEq, prost::Message)]
struct RequestHeader {
    #[prost(uint64, tag = "1")]
    cluster_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    cluster_id: u64,
    #[prost(message, optional, tag = "2")]
    error: Option<PdError>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PdError {
    #[prost(int32, tag = "1")]
    r#type: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetMembersRequest {
    #[prost(message, optional, tag = "1")]
    header: Option<RequestHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GetMembersResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct UpdateServiceGcSafePointRequest {
    #[prost(message, optional, tag = "1")]
    header: Option<RequestHeader>,
    #[prost(bytes = "vec", tag = "2")]
    service_id: Vec<u8>,
    #[prost(int64, tag = "3")]
    ttl: i64,
    #[prost(uint64, tag = "4")]
    safe_point: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct UpdateServiceGcSafePointResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(bytes = "vec", tag = "2")]
    service_id: Vec<u8>,
    #[prost(int64, tag = "3")]
    ttl: i64,
    #[prost(uint64, tag = "4")]
    min_safe_point: u64,
}

async fn unary<Req, Resp>(channel: Channel, path: &'static str, req: Req) -> Result<Resp, String>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| format!("{path}: {e}"))?;
    let codec: ProstCodec<Req, Resp> = ProstCodec::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(req), path, codec)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|e| format!("{e}"))
}

/// Moves the txn safe point of the null keyspace to `safe_point` as TiDB's GC worker does
/// (service `gc_worker`, infinite TTL) and returns the minimum service safe point PD reports.
pub async fn advance_txn_safe_point(pd: &str, safe_point: u64) -> Result<u64, String> {
    let channel = Endpoint::from_shared(format!("http://{pd}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connect {pd}: {e}"))?;
    let members: GetMembersResponse = unary(
        channel.clone(),
        "/pdpb.PD/GetMembers",
        GetMembersRequest {
            header: Some(RequestHeader { cluster_id: 0 }),
        },
    )
    .await?;
    let cluster_id = members.header.map_or(0, |h| h.cluster_id);
    let resp: UpdateServiceGcSafePointResponse = unary(
        channel,
        "/pdpb.PD/UpdateServiceGCSafePoint",
        UpdateServiceGcSafePointRequest {
            header: Some(RequestHeader { cluster_id }),
            service_id: b"gc_worker".to_vec(),
            ttl: i64::MAX,
            safe_point,
        },
    )
    .await?;
    if let Some(e) = resp.header.and_then(|h| h.error) {
        return Err(format!("UpdateServiceGCSafePoint: {}", e.message));
    }
    Ok(resp.min_safe_point)
}
