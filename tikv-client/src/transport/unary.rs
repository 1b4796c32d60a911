//! Unary gRPC calls to a store: every BatchCommands command in its unary form (used when
//! batching is off or the store does not serve BatchCommands) and the RPCs that have no
//! BatchCommands slot at all (split, checksum, compare-and-swap, MVCC debugging, ...).
//!
//! Ports the unary half of client-go `internal/client/client.go` (`sendRequest` after the batch
//! branch) and `tikvrpc.CallRPC` in `tikvrpc/tikvrpc.go`: one call per request on a connection
//! of the store's pool, with the `tikv-forwarded-host` header when the request is forwarded and
//! the deadline sent as `grpc-timeout`.

use tikv_proto::kvrpcpb;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tikv_proto::tikvpb::tikv_client::TikvClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use super::{FORWARD_METADATA_KEY, SendOptions};
use crate::{Error, Result};

/// A unary RPC to a store: any BatchCommands command, or one of the unary-only methods.
// The variants hold requests whose size is fixed by the protocol; boxing them would cost an
// allocation per call for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum UnaryRequest {
    /// A command that also has a BatchCommands slot, sent as its own RPC.
    Cmd(Cmd),
    /// `RawGetKeyTTL`.
    RawGetKeyTtl(kvrpcpb::RawGetKeyTtlRequest),
    /// `RawCompareAndSwap`.
    RawCompareAndSwap(kvrpcpb::RawCasRequest),
    /// `RawChecksum`.
    RawChecksum(kvrpcpb::RawChecksumRequest),
    /// `UnsafeDestroyRange`.
    UnsafeDestroyRange(kvrpcpb::UnsafeDestroyRangeRequest),
    /// `SplitRegion`.
    SplitRegion(kvrpcpb::SplitRegionRequest),
    /// `MvccGetByKey`.
    MvccGetByKey(kvrpcpb::MvccGetByKeyRequest),
    /// `MvccGetByStartTs`.
    MvccGetByStartTs(kvrpcpb::MvccGetByStartTsRequest),
    /// `GetStoreSafeTS`.
    GetStoreSafeTs(kvrpcpb::StoreSafeTsRequest),
}

/// The answer to a [`UnaryRequest`], in the variant of the same name.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum UnaryResponse {
    /// Answer to [`UnaryRequest::Cmd`].
    Cmd(RespCmd),
    /// Answer to [`UnaryRequest::RawGetKeyTtl`].
    RawGetKeyTtl(kvrpcpb::RawGetKeyTtlResponse),
    /// Answer to [`UnaryRequest::RawCompareAndSwap`].
    RawCompareAndSwap(kvrpcpb::RawCasResponse),
    /// Answer to [`UnaryRequest::RawChecksum`].
    RawChecksum(kvrpcpb::RawChecksumResponse),
    /// Answer to [`UnaryRequest::UnsafeDestroyRange`].
    UnsafeDestroyRange(kvrpcpb::UnsafeDestroyRangeResponse),
    /// Answer to [`UnaryRequest::SplitRegion`].
    SplitRegion(kvrpcpb::SplitRegionResponse),
    /// Answer to [`UnaryRequest::MvccGetByKey`].
    MvccGetByKey(kvrpcpb::MvccGetByKeyResponse),
    /// Answer to [`UnaryRequest::MvccGetByStartTs`].
    MvccGetByStartTs(kvrpcpb::MvccGetByStartTsResponse),
    /// Answer to [`UnaryRequest::GetStoreSafeTs`].
    GetStoreSafeTs(kvrpcpb::StoreSafeTsResponse),
}

impl UnaryRequest {
    /// The gRPC method name, as TiKV names it (and as the mock counts it).
    pub fn method(&self) -> &'static str {
        match self {
            UnaryRequest::Cmd(cmd) => cmd_method(cmd),
            UnaryRequest::RawGetKeyTtl(_) => "RawGetKeyTTL",
            UnaryRequest::RawCompareAndSwap(_) => "RawCompareAndSwap",
            UnaryRequest::RawChecksum(_) => "RawChecksum",
            UnaryRequest::UnsafeDestroyRange(_) => "UnsafeDestroyRange",
            UnaryRequest::SplitRegion(_) => "SplitRegion",
            UnaryRequest::MvccGetByKey(_) => "MvccGetByKey",
            UnaryRequest::MvccGetByStartTs(_) => "MvccGetByStartTs",
            UnaryRequest::GetStoreSafeTs(_) => "GetStoreSafeTS",
        }
    }
}

/// Generates, from one table of `Cmd` variant → gRPC method name → client method, the name
/// lookup and the unary call of every BatchCommands command.
macro_rules! cmd_table {
    ($($variant:ident => $name:literal, $method:ident;)*) => {
        /// The gRPC method name of a BatchCommands command, as TiKV names it.
        pub(crate) fn cmd_method(cmd: &Cmd) -> &'static str {
            match cmd {
                $(Cmd::$variant(_) => $name,)*
                Cmd::Import(_) => "KvImport",
                Cmd::Empty(_) => "BatchCommandsEmpty",
            }
        }

        async fn call_cmd(
            client: &mut TikvClient<Channel>,
            address: &str,
            cmd: Cmd,
            opts: &SendOptions,
        ) -> Result<RespCmd> {
            let status = |s: tonic::Status| grpc_error(address, &s);
            Ok(match cmd {
                $(Cmd::$variant(r) => RespCmd::$variant(
                    client.$method(request(r, opts)?).await.map_err(status)?.into_inner(),
                ),)*
                Cmd::Import(_) | Cmd::Empty(_) => {
                    return Err(Error::invalid_argument(format!(
                        "{} has no unary RPC; send it through BatchCommands",
                        cmd_method(&cmd)
                    )));
                }
            })
        }
    };
}

cmd_table! {
    Get => "KvGet", kv_get;
    Scan => "KvScan", kv_scan;
    Prewrite => "KvPrewrite", kv_prewrite;
    Commit => "KvCommit", kv_commit;
    Cleanup => "KvCleanup", kv_cleanup;
    BatchGet => "KvBatchGet", kv_batch_get;
    BatchRollback => "KvBatchRollback", kv_batch_rollback;
    ScanLock => "KvScanLock", kv_scan_lock;
    ResolveLock => "KvResolveLock", kv_resolve_lock;
    Gc => "KvGC", kv_gc;
    DeleteRange => "KvDeleteRange", kv_delete_range;
    RawGet => "RawGet", raw_get;
    RawBatchGet => "RawBatchGet", raw_batch_get;
    RawPut => "RawPut", raw_put;
    RawBatchPut => "RawBatchPut", raw_batch_put;
    RawDelete => "RawDelete", raw_delete;
    RawBatchDelete => "RawBatchDelete", raw_batch_delete;
    RawScan => "RawScan", raw_scan;
    RawDeleteRange => "RawDeleteRange", raw_delete_range;
    RawBatchScan => "RawBatchScan", raw_batch_scan;
    Coprocessor => "Coprocessor", coprocessor;
    PessimisticLock => "KvPessimisticLock", kv_pessimistic_lock;
    PessimisticRollback => "KVPessimisticRollback", kv_pessimistic_rollback;
    CheckTxnStatus => "KvCheckTxnStatus", kv_check_txn_status;
    TxnHeartBeat => "KvTxnHeartBeat", kv_txn_heart_beat;
    CheckSecondaryLocks => "KvCheckSecondaryLocks", kv_check_secondary_locks;
    RawCoprocessor => "RawCoprocessor", raw_coprocessor;
    FlashbackToVersion => "KvFlashbackToVersion", kv_flashback_to_version;
    PrepareFlashbackToVersion => "KvPrepareFlashbackToVersion", kv_prepare_flashback_to_version;
    Flush => "KvFlush", kv_flush;
    BufferBatchGet => "KvBufferBatchGet", kv_buffer_batch_get;
    GetHealthFeedback => "GetHealthFeedback", get_health_feedback;
    BroadcastTxnStatus => "BroadcastTxnStatus", broadcast_txn_status;
}

/// Sends one unary RPC and waits for its answer until `opts.timeout`.
pub(crate) async fn call(
    mut client: TikvClient<Channel>,
    address: &str,
    req: UnaryRequest,
    opts: &SendOptions,
) -> Result<UnaryResponse> {
    let method = req.method();
    let work = async {
        let client = &mut client;
        let status = |s: tonic::Status| grpc_error(address, &s);
        Ok(match req {
            UnaryRequest::Cmd(cmd) => {
                UnaryResponse::Cmd(call_cmd(client, address, cmd, opts).await?)
            }
            UnaryRequest::RawGetKeyTtl(r) => UnaryResponse::RawGetKeyTtl(
                client
                    .raw_get_key_ttl(request(r, opts)?)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ),
            UnaryRequest::RawCompareAndSwap(r) => UnaryResponse::RawCompareAndSwap(
                client
                    .raw_compare_and_swap(request(r, opts)?)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ),
            UnaryRequest::RawChecksum(r) => UnaryResponse::RawChecksum(
                client
                    .raw_checksum(request(r, opts)?)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ),
            UnaryRequest::UnsafeDestroyRange(r) => UnaryResponse::UnsafeDestroyRange(
                client
                    .unsafe_destroy_range(request(r, opts)?)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ),
            UnaryRequest::SplitRegion(r) => UnaryResponse::SplitRegion(
                client
                    .split_region(request(r, opts)?)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ),
            UnaryRequest::MvccGetByKey(r) => UnaryResponse::MvccGetByKey(
                client
                    .mvcc_get_by_key(request(r, opts)?)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ),
            UnaryRequest::MvccGetByStartTs(r) => UnaryResponse::MvccGetByStartTs(
                client
                    .mvcc_get_by_start_ts(request(r, opts)?)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ),
            UnaryRequest::GetStoreSafeTs(r) => UnaryResponse::GetStoreSafeTs(
                client
                    .get_store_safe_ts(request(r, opts)?)
                    .await
                    .map_err(status)?
                    .into_inner(),
            ),
        })
    };
    match tokio::time::timeout(opts.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(super::timeout_error(method, address, opts.timeout)),
    }
}

/// Wraps a message with the deadline and, for a forwarded request, the header naming the store
/// that should handle it.
fn request<T>(message: T, opts: &SendOptions) -> Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(opts.timeout);
    if let Some(host) = &opts.forwarded_host {
        request
            .metadata_mut()
            .insert(FORWARD_METADATA_KEY, forwarded_value(host)?);
    }
    Ok(request)
}

/// The `tikv-forwarded-host` header value; store addresses are ASCII `host:port`.
pub(crate) fn forwarded_value(host: &str) -> Result<MetadataValue<tonic::metadata::Ascii>> {
    MetadataValue::try_from(host).map_err(|_| {
        Error::invalid_argument(format!(
            "forwarded host {host:?} is not a valid gRPC header value"
        ))
    })
}

/// Maps a failed call. tonic reports its own enforcement of `grpc-timeout` as CANCELLED with
/// "Timeout expired"; that is a deadline, not a cancellation.
fn grpc_error(address: &str, status: &tonic::Status) -> Error {
    if status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired" {
        return Error::from_status(
            address,
            &tonic::Status::deadline_exceeded(status.message().to_owned()),
        );
    }
    Error::from_status(address, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_tikvs() {
        assert_eq!(
            cmd_method(&Cmd::PessimisticRollback(Default::default())),
            "KVPessimisticRollback"
        );
        assert_eq!(cmd_method(&Cmd::Gc(Default::default())), "KvGC");
        assert_eq!(
            UnaryRequest::GetStoreSafeTs(Default::default()).method(),
            "GetStoreSafeTS"
        );
        assert_eq!(
            UnaryRequest::RawGetKeyTtl(Default::default()).method(),
            "RawGetKeyTTL"
        );
    }

    #[test]
    fn forwarded_host_must_be_a_header_value() {
        assert!(forwarded_value("127.0.0.1:20160").is_ok());
        let err = forwarded_value("bad\nhost").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    }
}
