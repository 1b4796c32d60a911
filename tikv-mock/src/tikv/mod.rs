//! The TiKV server of one store: the `tikvpb.Tikv` gRPC service and the gRPC health service.
//!
//! `server.rs` calls [`routes`] whenever it starts a store's server. Every unary method
//! converts its request into the dispatcher's [`Request`](dispatch::Request), runs it through
//! the same [`Dispatcher`](dispatch::Dispatcher) that BatchCommands sub-requests take
//! (`dispatch.rs`), and converts the answer back; BatchCommands lives in `batch.rs`;
//! SplitRegion, UnsafeDestroyRange, GetStoreSafeTS and health feedback in `admin.rs`; raw KV in
//! `crate::raw`; requests forwarded to another store (`tikv-forwarded-host`) in `forward.rs`.
//! Methods the mock does not serve answer UNIMPLEMENTED, after being counted.
//!
//! Follows TiKV `src/server/service/kv.rs` and `src/server/server.rs` (no message size limits:
//! TiKV sets none, so oversized writes reach raftstore and fail as RaftEntryTooLarge; gzip
//! requests are accepted, as TiKV's gRPC core decompresses them whatever its configuration, and
//! responses are gzip-compressed for clients that accept it, as with TiKV's
//! `server.grpc-compression-type = "gzip"`).

mod admin;
mod batch;
mod dispatch;
mod forward;

pub(crate) use forward::StoreLinks;

use std::sync::Arc;

use tikv_proto::tikvpb::batch_commands_request::request::Cmd;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tikv_proto::tikvpb::tikv_server::{Tikv, TikvServer};
use tikv_proto::{coprocessor, kvrpcpb, tikvpb};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::service::Routes;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status};
use tonic_health::server::HealthReporter;

use crate::Shared;
use dispatch::{Dispatcher, Outcome, Request, Response};
use forward::Route;

/// The store's services and the reporter of its health service, whose overall status (`""`)
/// starts SERVING. A stopped store is simply not listening; a caller that wants a running store
/// to report NOT_SERVING keeps the reporter and calls
/// `set_service_status("", ServingStatus::NotServing)`.
///
/// `links` is shared by every store of the cluster: forwarding looks up the target's server there.
pub(crate) fn routes_with_health(
    shared: Arc<Shared>,
    store_id: u64,
    links: Arc<StoreLinks>,
) -> (Routes, HealthReporter) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let tikv = TikvServer::new(TikvService {
        dispatcher: Arc::new(Dispatcher::new(shared, store_id, links)),
    })
    .max_decoding_message_size(usize::MAX)
    .max_encoding_message_size(usize::MAX)
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip);
    (Routes::new(tikv).add_service(health), reporter)
}

/// The `tikvpb.Tikv` service of one store.
#[derive(Debug)]
struct TikvService {
    dispatcher: Arc<Dispatcher>,
}

impl TikvService {
    /// Routes a unary call (to this store, or to the store it is forwarded to), dispatches it and
    /// unwraps the answer of the expected type.
    async fn call<T>(
        &self,
        metadata: &MetadataMap,
        request: Request,
        unwrap: impl FnOnce(Response) -> Option<T>,
    ) -> Result<GrpcResponse<T>, Status> {
        let d = &self.dispatcher;
        let route = if request.forwardable() {
            d.links.route(&d.shared, d.store_id, metadata)
        } else {
            Route::Local
        };
        match route {
            Route::Local => answer(d, request, unwrap).await,
            Route::Unknown(host) => Err(d.unreachable(&request, &host)),
            Route::Forward {
                to, mut running, ..
            } => {
                let target = d.forwarding_to(to);
                tokio::select! {
                    // First, so that a target already stopped answers as unreachable.
                    biased;
                    result = answer(&target, request, unwrap) => result,
                    () = forward::stopped(&mut running) => Err(forward::target_lost(to)),
                }
            }
        }
    }

    /// Answers UNIMPLEMENTED for a method the mock does not serve, counting it like any other.
    fn not_served<T>(&self, method: &'static str) -> Result<GrpcResponse<T>, Status> {
        self.dispatcher
            .shared
            .lock()
            .count_rpc(self.dispatcher.store_id, method);
        Err(Status::unimplemented(format!(
            "tikv-mock does not serve {method}"
        )))
    }
}

/// Dispatches a unary call on `dispatcher` and unwraps the answer of the expected type.
async fn answer<T>(
    dispatcher: &Dispatcher,
    request: Request,
    unwrap: impl FnOnce(Response) -> Option<T>,
) -> Result<GrpcResponse<T>, Status> {
    match dispatcher.dispatch(request, false).await {
        Outcome::Reply(response) => unwrap(response)
            .map(GrpcResponse::new)
            .ok_or_else(|| Status::internal("tikv-mock produced a response of another type")),
        Outcome::Fail(status) => Err(status),
        // The client's deadline (or its giving up) ends the call.
        Outcome::NoReply => std::future::pending().await,
    }
}

/// Implements `Tikv`: `cmd` methods go through the BatchCommands `Cmd` variant of the same
/// name, `req` methods through a unary-only `Request` variant. Generated as one impl block so
/// `async_trait` sees every method.
macro_rules! tikv_service {
    (
        cmd { $($cm:ident: $cv:ident($cq:ty) -> $cp:ty;)* }
        req { $($rm:ident: $rv:ident($rq:ty) -> $rp:ty;)* }
        $($rest:tt)*
    ) => {
        #[tonic::async_trait]
        impl Tikv for TikvService {
            $(
                async fn $cm(
                    &self,
                    request: GrpcRequest<$cq>,
                ) -> Result<GrpcResponse<$cp>, Status> {
                    let (metadata, _, request) = request.into_parts();
                    self.call(&metadata, Request::Cmd(Cmd::$cv(request)), |r| match r {
                        Response::Cmd(RespCmd::$cv(r)) => Some(r),
                        _ => None,
                    })
                    .await
                }
            )*
            $(
                async fn $rm(
                    &self,
                    request: GrpcRequest<$rq>,
                ) -> Result<GrpcResponse<$rp>, Status> {
                    let (metadata, _, request) = request.into_parts();
                    self.call(&metadata, Request::$rv(request), |r| match r {
                        Response::$rv(r) => Some(r),
                        _ => None,
                    })
                    .await
                }
            )*
            $($rest)*
        }
    };
}

tikv_service! {
    cmd {
        kv_get: Get(kvrpcpb::GetRequest) -> kvrpcpb::GetResponse;
        kv_scan: Scan(kvrpcpb::ScanRequest) -> kvrpcpb::ScanResponse;
        kv_prewrite: Prewrite(kvrpcpb::PrewriteRequest) -> kvrpcpb::PrewriteResponse;
        kv_pessimistic_lock:
            PessimisticLock(kvrpcpb::PessimisticLockRequest) -> kvrpcpb::PessimisticLockResponse;
        kv_pessimistic_rollback: PessimisticRollback(kvrpcpb::PessimisticRollbackRequest)
            -> kvrpcpb::PessimisticRollbackResponse;
        kv_txn_heart_beat:
            TxnHeartBeat(kvrpcpb::TxnHeartBeatRequest) -> kvrpcpb::TxnHeartBeatResponse;
        kv_check_txn_status:
            CheckTxnStatus(kvrpcpb::CheckTxnStatusRequest) -> kvrpcpb::CheckTxnStatusResponse;
        kv_check_secondary_locks: CheckSecondaryLocks(kvrpcpb::CheckSecondaryLocksRequest)
            -> kvrpcpb::CheckSecondaryLocksResponse;
        kv_commit: Commit(kvrpcpb::CommitRequest) -> kvrpcpb::CommitResponse;
        kv_cleanup: Cleanup(kvrpcpb::CleanupRequest) -> kvrpcpb::CleanupResponse;
        kv_batch_get: BatchGet(kvrpcpb::BatchGetRequest) -> kvrpcpb::BatchGetResponse;
        kv_batch_rollback:
            BatchRollback(kvrpcpb::BatchRollbackRequest) -> kvrpcpb::BatchRollbackResponse;
        kv_scan_lock: ScanLock(kvrpcpb::ScanLockRequest) -> kvrpcpb::ScanLockResponse;
        kv_resolve_lock: ResolveLock(kvrpcpb::ResolveLockRequest) -> kvrpcpb::ResolveLockResponse;
        kv_gc: Gc(kvrpcpb::GcRequest) -> kvrpcpb::GcResponse;
        kv_delete_range: DeleteRange(kvrpcpb::DeleteRangeRequest) -> kvrpcpb::DeleteRangeResponse;
        kv_prepare_flashback_to_version:
            PrepareFlashbackToVersion(kvrpcpb::PrepareFlashbackToVersionRequest)
            -> kvrpcpb::PrepareFlashbackToVersionResponse;
        kv_flashback_to_version: FlashbackToVersion(kvrpcpb::FlashbackToVersionRequest)
            -> kvrpcpb::FlashbackToVersionResponse;
        kv_flush: Flush(kvrpcpb::FlushRequest) -> kvrpcpb::FlushResponse;
        kv_buffer_batch_get:
            BufferBatchGet(kvrpcpb::BufferBatchGetRequest) -> kvrpcpb::BufferBatchGetResponse;
        raw_get: RawGet(kvrpcpb::RawGetRequest) -> kvrpcpb::RawGetResponse;
        raw_batch_get: RawBatchGet(kvrpcpb::RawBatchGetRequest) -> kvrpcpb::RawBatchGetResponse;
        raw_put: RawPut(kvrpcpb::RawPutRequest) -> kvrpcpb::RawPutResponse;
        raw_batch_put: RawBatchPut(kvrpcpb::RawBatchPutRequest) -> kvrpcpb::RawBatchPutResponse;
        raw_delete: RawDelete(kvrpcpb::RawDeleteRequest) -> kvrpcpb::RawDeleteResponse;
        raw_batch_delete:
            RawBatchDelete(kvrpcpb::RawBatchDeleteRequest) -> kvrpcpb::RawBatchDeleteResponse;
        raw_scan: RawScan(kvrpcpb::RawScanRequest) -> kvrpcpb::RawScanResponse;
        raw_delete_range:
            RawDeleteRange(kvrpcpb::RawDeleteRangeRequest) -> kvrpcpb::RawDeleteRangeResponse;
        raw_batch_scan: RawBatchScan(kvrpcpb::RawBatchScanRequest) -> kvrpcpb::RawBatchScanResponse;
        coprocessor: Coprocessor(coprocessor::Request) -> coprocessor::Response;
        raw_coprocessor:
            RawCoprocessor(kvrpcpb::RawCoprocessorRequest) -> kvrpcpb::RawCoprocessorResponse;
        get_health_feedback: GetHealthFeedback(kvrpcpb::GetHealthFeedbackRequest)
            -> kvrpcpb::GetHealthFeedbackResponse;
        broadcast_txn_status: BroadcastTxnStatus(kvrpcpb::BroadcastTxnStatusRequest)
            -> kvrpcpb::BroadcastTxnStatusResponse;
    }
    req {
        raw_get_key_ttl: RawGetKeyTtl(kvrpcpb::RawGetKeyTtlRequest) -> kvrpcpb::RawGetKeyTtlResponse;
        raw_compare_and_swap: RawCompareAndSwap(kvrpcpb::RawCasRequest) -> kvrpcpb::RawCasResponse;
        raw_checksum: RawChecksum(kvrpcpb::RawChecksumRequest) -> kvrpcpb::RawChecksumResponse;
        unsafe_destroy_range: UnsafeDestroyRange(kvrpcpb::UnsafeDestroyRangeRequest)
            -> kvrpcpb::UnsafeDestroyRangeResponse;
        split_region: SplitRegion(kvrpcpb::SplitRegionRequest) -> kvrpcpb::SplitRegionResponse;
        mvcc_get_by_key: MvccGetByKey(kvrpcpb::MvccGetByKeyRequest) -> kvrpcpb::MvccGetByKeyResponse;
        mvcc_get_by_start_ts: MvccGetByStartTs(kvrpcpb::MvccGetByStartTsRequest)
            -> kvrpcpb::MvccGetByStartTsResponse;
        get_store_safe_ts: GetStoreSafeTs(kvrpcpb::StoreSafeTsRequest) -> kvrpcpb::StoreSafeTsResponse;
    }

    type CoprocessorStreamStream = ReceiverStream<Result<coprocessor::Response, Status>>;

    async fn coprocessor_stream(
        &self,
        _request: GrpcRequest<coprocessor::Request>,
    ) -> Result<GrpcResponse<Self::CoprocessorStreamStream>, Status> {
        self.not_served("CoprocessorStream")
    }

    type BatchCoprocessorStream = ReceiverStream<Result<coprocessor::BatchResponse, Status>>;

    async fn batch_coprocessor(
        &self,
        _request: GrpcRequest<coprocessor::BatchRequest>,
    ) -> Result<GrpcResponse<Self::BatchCoprocessorStream>, Status> {
        self.not_served("BatchCoprocessor")
    }

    type BatchCommandsStream = batch::BatchStream;

    async fn batch_commands(
        &self,
        request: GrpcRequest<tonic::Streaming<tikvpb::BatchCommandsRequest>>,
    ) -> Result<GrpcResponse<Self::BatchCommandsStream>, Status> {
        let d = &self.dispatcher;
        let (metadata, _, requests) = request.into_parts();
        let stream = match d.links.route(&d.shared, d.store_id, &metadata) {
            Route::Local => batch::serve(d.clone(), requests, None),
            Route::Unknown(host) => return Err(forward::unreachable(&host)),
            Route::Forward { to, running, host } => {
                if !*running.borrow() {
                    return Err(forward::unreachable(&host));
                }
                batch::serve(Arc::new(d.forwarding_to(to)), requests, Some(running))
            }
        };
        Ok(GrpcResponse::new(stream))
    }

    async fn read_index(
        &self,
        _request: GrpcRequest<kvrpcpb::ReadIndexRequest>,
    ) -> Result<GrpcResponse<kvrpcpb::ReadIndexResponse>, Status> {
        self.not_served("ReadIndex")
    }

    async fn get_lock_wait_info(
        &self,
        _request: GrpcRequest<kvrpcpb::GetLockWaitInfoRequest>,
    ) -> Result<GrpcResponse<kvrpcpb::GetLockWaitInfoResponse>, Status> {
        self.not_served("GetLockWaitInfo")
    }

    async fn compact(
        &self,
        _request: GrpcRequest<kvrpcpb::CompactRequest>,
    ) -> Result<GrpcResponse<kvrpcpb::CompactResponse>, Status> {
        self.not_served("Compact")
    }

    async fn get_lock_wait_history(
        &self,
        _request: GrpcRequest<kvrpcpb::GetLockWaitHistoryRequest>,
    ) -> Result<GrpcResponse<kvrpcpb::GetLockWaitHistoryResponse>, Status> {
        self.not_served("GetLockWaitHistory")
    }

    async fn get_ti_flash_system_table(
        &self,
        _request: GrpcRequest<kvrpcpb::TiFlashSystemTableRequest>,
    ) -> Result<GrpcResponse<kvrpcpb::TiFlashSystemTableResponse>, Status> {
        self.not_served("GetTiFlashSystemTable")
    }
}
