//! The one path every TiKV request takes, unary or BatchCommands sub-request alike.
//!
//! [`Request`] wraps every command the store knows: the BatchCommands `Cmd` oneof (which covers
//! every command that has a batch slot) plus the unary-only ones. [`Dispatcher::dispatch`]
//! counts the request, runs the fault rules of the `Before` phase, checks the cluster id, then
//! executes it with the cluster state locked (validation and the command's own checks happen in
//! the command's handler, in TiKV's order), and finally runs the `AfterApply` rules, which see a
//! request that was applied and may still lose or alter its answer. A dispatcher for requests
//! forwarded to another store (`forward.rs`) acts as that store, and first counts the request as
//! forwarded and fails it as unreachable if the store's server is down.
//!
//! Follows TiKV `src/server/service/kv.rs` (`handle_request!`, `reject_if_cluster_id_mismatch!`,
//! `handle_batch_commands_request`): which commands check the cluster id, what a rejected one
//! looks like in either transport, and that `KvGC` is always UNIMPLEMENTED.

use std::sync::Arc;

use bytes::Bytes;
use tikv_proto::tikvpb::BatchCommandsEmptyResponse;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tikv_proto::{coprocessor, errorpb, kvrpcpb};
use tonic::Status;

use super::admin;
use super::forward::{self, StoreLinks};
use crate::Shared;
use crate::cluster::ClusterState;
use crate::fault::{self, Action, Phase, RequestInfo, Service};
use crate::{raw, txn};

/// A request to a store.
// Moved, never copied, from decoding to its handler: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Request {
    /// Any command with a BatchCommands slot, received unary or batched.
    Cmd(Cmd),
    RawGetKeyTtl(kvrpcpb::RawGetKeyTtlRequest),
    RawCompareAndSwap(kvrpcpb::RawCasRequest),
    RawChecksum(kvrpcpb::RawChecksumRequest),
    SplitRegion(kvrpcpb::SplitRegionRequest),
    UnsafeDestroyRange(kvrpcpb::UnsafeDestroyRangeRequest),
    GetStoreSafeTs(kvrpcpb::StoreSafeTsRequest),
    MvccGetByKey(kvrpcpb::MvccGetByKeyRequest),
    MvccGetByStartTs(kvrpcpb::MvccGetByStartTsRequest),
}

/// The answer to a [`Request`], of the matching variant.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Response {
    Cmd(RespCmd),
    RawGetKeyTtl(kvrpcpb::RawGetKeyTtlResponse),
    RawCompareAndSwap(kvrpcpb::RawCasResponse),
    RawChecksum(kvrpcpb::RawChecksumResponse),
    SplitRegion(kvrpcpb::SplitRegionResponse),
    UnsafeDestroyRange(kvrpcpb::UnsafeDestroyRangeResponse),
    GetStoreSafeTs(kvrpcpb::StoreSafeTsResponse),
    MvccGetByKey(kvrpcpb::MvccGetByKeyResponse),
    MvccGetByStartTs(kvrpcpb::MvccGetByStartTsResponse),
}

/// How a dispatched request ends.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Answer with this response.
    Reply(Response),
    /// Fail with this status: the call (unary) or the whole stream (BatchCommands).
    Fail(Status),
    /// Never answer; the client times out.
    NoReply,
}

// ----- error slots of every response type ---------------------------------------------------

/// Where a response type carries a region error and a key error, so a fault (or a rejected
/// request) can be answered in any command's own response type.
trait ErrorSlots {
    fn set_region_error(&mut self, e: errorpb::Error);
    fn set_key_error(&mut self, e: kvrpcpb::KeyError);
}

/// A key error as a readable line, for responses whose error is a string.
fn key_error_text(e: &kvrpcpb::KeyError) -> String {
    if !e.abort.is_empty() {
        e.abort.clone()
    } else if !e.retryable.is_empty() {
        e.retryable.clone()
    } else {
        format!("{e:?}")
    }
}

macro_rules! error_slots {
    (key_error: $($t:ty),* $(,)?) => {$(
        impl ErrorSlots for $t {
            fn set_region_error(&mut self, e: errorpb::Error) { self.region_error = Some(e); }
            fn set_key_error(&mut self, e: kvrpcpb::KeyError) { self.error = Some(e); }
        }
    )*};
    // Whole-request failures of these fill `error` and, for older clients, one error pair.
    (key_error_and_pairs: $($t:ty),* $(,)?) => {$(
        impl ErrorSlots for $t {
            fn set_region_error(&mut self, e: errorpb::Error) { self.region_error = Some(e); }
            fn set_key_error(&mut self, e: kvrpcpb::KeyError) {
                self.pairs = vec![kvrpcpb::KvPair { error: Some(e.clone()), ..Default::default() }];
                self.error = Some(e);
            }
        }
    )*};
    (key_errors: $($t:ty),* $(,)?) => {$(
        impl ErrorSlots for $t {
            fn set_region_error(&mut self, e: errorpb::Error) { self.region_error = Some(e); }
            fn set_key_error(&mut self, e: kvrpcpb::KeyError) { self.errors = vec![e]; }
        }
    )*};
    (string: $($t:ty),* $(,)?) => {$(
        impl ErrorSlots for $t {
            fn set_region_error(&mut self, e: errorpb::Error) { self.region_error = Some(e); }
            fn set_key_error(&mut self, e: kvrpcpb::KeyError) { self.error = key_error_text(&e); }
        }
    )*};
    (pairs: $($t:ty => $field:ident),* $(,)?) => {$(
        impl ErrorSlots for $t {
            fn set_region_error(&mut self, e: errorpb::Error) { self.region_error = Some(e); }
            fn set_key_error(&mut self, e: kvrpcpb::KeyError) {
                self.$field = vec![kvrpcpb::KvPair { error: Some(e), ..Default::default() }];
            }
        }
    )*};
    (region_error_only: $($t:ty),* $(,)?) => {$(
        impl ErrorSlots for $t {
            fn set_region_error(&mut self, e: errorpb::Error) { self.region_error = Some(e); }
            fn set_key_error(&mut self, _: kvrpcpb::KeyError) {}
        }
    )*};
}

error_slots!(key_error:
    kvrpcpb::GetResponse, kvrpcpb::CommitResponse, kvrpcpb::CleanupResponse,
    kvrpcpb::BatchRollbackResponse, kvrpcpb::ScanLockResponse, kvrpcpb::ResolveLockResponse,
    kvrpcpb::GcResponse, kvrpcpb::CheckTxnStatusResponse, kvrpcpb::TxnHeartBeatResponse,
    kvrpcpb::CheckSecondaryLocksResponse,
);
error_slots!(key_error_and_pairs:
    kvrpcpb::ScanResponse, kvrpcpb::BatchGetResponse, kvrpcpb::BufferBatchGetResponse,
);
error_slots!(key_errors:
    kvrpcpb::PrewriteResponse, kvrpcpb::PessimisticLockResponse,
    kvrpcpb::PessimisticRollbackResponse, kvrpcpb::FlushResponse,
);
error_slots!(string:
    kvrpcpb::ImportResponse, kvrpcpb::DeleteRangeResponse, kvrpcpb::RawGetResponse,
    kvrpcpb::RawPutResponse, kvrpcpb::RawBatchPutResponse, kvrpcpb::RawDeleteResponse,
    kvrpcpb::RawBatchDeleteResponse, kvrpcpb::RawDeleteRangeResponse,
    kvrpcpb::RawCoprocessorResponse, kvrpcpb::FlashbackToVersionResponse,
    kvrpcpb::PrepareFlashbackToVersionResponse, kvrpcpb::RawGetKeyTtlResponse,
    kvrpcpb::RawCasResponse, kvrpcpb::RawChecksumResponse,
    kvrpcpb::UnsafeDestroyRangeResponse, kvrpcpb::MvccGetByKeyResponse,
    kvrpcpb::MvccGetByStartTsResponse,
);
error_slots!(pairs:
    kvrpcpb::RawBatchGetResponse => pairs, kvrpcpb::RawScanResponse => kvs,
    kvrpcpb::RawBatchScanResponse => kvs,
);
error_slots!(region_error_only: kvrpcpb::GetHealthFeedbackResponse);

impl ErrorSlots for kvrpcpb::SplitRegionResponse {
    fn set_region_error(&mut self, e: errorpb::Error) {
        self.region_error = Some(e);
    }
    fn set_key_error(&mut self, e: kvrpcpb::KeyError) {
        self.errors = vec![e];
    }
}

impl ErrorSlots for coprocessor::Response {
    fn set_region_error(&mut self, e: errorpb::Error) {
        self.region_error = Some(e);
    }
    fn set_key_error(&mut self, e: kvrpcpb::KeyError) {
        self.other_error = key_error_text(&e);
    }
}

impl ErrorSlots for kvrpcpb::BroadcastTxnStatusResponse {
    fn set_region_error(&mut self, _: errorpb::Error) {}
    fn set_key_error(&mut self, _: kvrpcpb::KeyError) {}
}

/// Generates the per-command tables of the `Cmd` oneof: gRPC method name (what RPC counts and
/// fault rules match on), context, and an empty response of the matching type.
macro_rules! cmd_table {
    ($($variant:ident => $name:literal),* $(,)?) => {
        fn cmd_name(cmd: &Cmd) -> &'static str {
            match cmd {
                $(Cmd::$variant(_) => $name,)*
                Cmd::Import(_) => "KvImport",
                Cmd::Empty(_) => "BatchCommandsEmpty",
            }
        }

        fn cmd_context(cmd: &Cmd) -> Option<&kvrpcpb::Context> {
            match cmd {
                $(Cmd::$variant(r) => r.context.as_ref(),)*
                Cmd::Import(_) | Cmd::Empty(_) => None,
            }
        }

        fn cmd_empty_response(cmd: &Cmd) -> RespCmd {
            match cmd {
                $(Cmd::$variant(_) => RespCmd::$variant(Default::default()),)*
                Cmd::Import(_) => RespCmd::Import(Default::default()),
                Cmd::Empty(e) => RespCmd::Empty(BatchCommandsEmptyResponse { test_id: e.test_id }),
            }
        }

        fn cmd_slots(resp: &mut RespCmd) -> Option<&mut dyn ErrorSlots> {
            match resp {
                $(RespCmd::$variant(r) => Some(r),)*
                RespCmd::Import(r) => Some(r),
                RespCmd::Empty(_) => None,
            }
        }
    };
}

cmd_table! {
    Get => "KvGet",
    Scan => "KvScan",
    Prewrite => "KvPrewrite",
    Commit => "KvCommit",
    Cleanup => "KvCleanup",
    BatchGet => "KvBatchGet",
    BatchRollback => "KvBatchRollback",
    ScanLock => "KvScanLock",
    ResolveLock => "KvResolveLock",
    Gc => "KvGC",
    DeleteRange => "KvDeleteRange",
    RawGet => "RawGet",
    RawBatchGet => "RawBatchGet",
    RawPut => "RawPut",
    RawBatchPut => "RawBatchPut",
    RawDelete => "RawDelete",
    RawBatchDelete => "RawBatchDelete",
    RawScan => "RawScan",
    RawDeleteRange => "RawDeleteRange",
    RawBatchScan => "RawBatchScan",
    Coprocessor => "Coprocessor",
    PessimisticLock => "KvPessimisticLock",
    PessimisticRollback => "KVPessimisticRollback",
    CheckTxnStatus => "KvCheckTxnStatus",
    TxnHeartBeat => "KvTxnHeartBeat",
    CheckSecondaryLocks => "KvCheckSecondaryLocks",
    RawCoprocessor => "RawCoprocessor",
    FlashbackToVersion => "KvFlashbackToVersion",
    PrepareFlashbackToVersion => "KvPrepareFlashbackToVersion",
    Flush => "KvFlush",
    BufferBatchGet => "KvBufferBatchGet",
    GetHealthFeedback => "GetHealthFeedback",
    BroadcastTxnStatus => "BroadcastTxnStatus",
}

fn mutation_keys(mutations: &[kvrpcpb::Mutation]) -> Vec<Bytes> {
    mutations.iter().map(|m| m.key.clone()).collect()
}

impl Request {
    /// The gRPC method name.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Request::Cmd(cmd) => cmd_name(cmd),
            Request::RawGetKeyTtl(_) => "RawGetKeyTTL",
            Request::RawCompareAndSwap(_) => "RawCompareAndSwap",
            Request::RawChecksum(_) => "RawChecksum",
            Request::SplitRegion(_) => "SplitRegion",
            Request::UnsafeDestroyRange(_) => "UnsafeDestroyRange",
            Request::GetStoreSafeTs(_) => "GetStoreSafeTS",
            Request::MvccGetByKey(_) => "MvccGetByKey",
            Request::MvccGetByStartTs(_) => "MvccGetByStartTs",
        }
    }

    pub(crate) fn context(&self) -> Option<&kvrpcpb::Context> {
        match self {
            Request::Cmd(cmd) => cmd_context(cmd),
            Request::RawGetKeyTtl(r) => r.context.as_ref(),
            Request::RawCompareAndSwap(r) => r.context.as_ref(),
            Request::RawChecksum(r) => r.context.as_ref(),
            Request::SplitRegion(r) => r.context.as_ref(),
            Request::UnsafeDestroyRange(r) => r.context.as_ref(),
            Request::GetStoreSafeTs(_) => None,
            Request::MvccGetByKey(r) => r.context.as_ref(),
            Request::MvccGetByStartTs(r) => r.context.as_ref(),
        }
    }

    /// Whether TiKV's unary handler of the request honours `tikv-forwarded-host` (every
    /// sub-request of a forwarded BatchCommands stream is forwarded regardless).
    pub(crate) fn forwardable(&self) -> bool {
        match self {
            Request::Cmd(cmd) => !matches!(
                cmd,
                Cmd::Gc(_)
                    | Cmd::Import(_)
                    | Cmd::PrepareFlashbackToVersion(_)
                    | Cmd::FlashbackToVersion(_)
                    | Cmd::RawCoprocessor(_)
                    | Cmd::GetHealthFeedback(_)
                    | Cmd::Empty(_)
            ),
            Request::UnsafeDestroyRange(_) | Request::GetStoreSafeTs(_) => false,
            Request::RawGetKeyTtl(_)
            | Request::RawCompareAndSwap(_)
            | Request::RawChecksum(_)
            | Request::SplitRegion(_)
            | Request::MvccGetByKey(_)
            | Request::MvccGetByStartTs(_) => true,
        }
    }

    /// Whether TiKV rejects the request when its context names another cluster. SplitRegion,
    /// UnsafeDestroyRange and GetStoreSafeTS are served without the check.
    fn checks_cluster_id(&self) -> bool {
        matches!(
            self,
            Request::Cmd(_)
                | Request::RawGetKeyTtl(_)
                | Request::RawCompareAndSwap(_)
                | Request::RawChecksum(_)
                | Request::MvccGetByKey(_)
                | Request::MvccGetByStartTs(_)
        )
    }

    /// The request's keys as sent, for fault matching: every key of a point or batch request,
    /// the start of each range of a range request.
    pub(crate) fn keys(&self) -> Vec<Bytes> {
        let one = |k: &Bytes| vec![k.clone()];
        match self {
            Request::Cmd(cmd) => match cmd {
                Cmd::Get(r) => one(&r.key),
                Cmd::Scan(r) => one(&r.start_key),
                Cmd::Prewrite(r) => mutation_keys(&r.mutations),
                Cmd::Commit(r) => r.keys.clone(),
                Cmd::Import(r) => mutation_keys(&r.mutations),
                Cmd::Cleanup(r) => one(&r.key),
                Cmd::BatchGet(r) => r.keys.clone(),
                Cmd::BatchRollback(r) => r.keys.clone(),
                Cmd::ScanLock(r) => one(&r.start_key),
                Cmd::ResolveLock(r) => r.keys.clone(),
                Cmd::Gc(_) => Vec::new(),
                Cmd::DeleteRange(r) => one(&r.start_key),
                Cmd::RawGet(r) => one(&r.key),
                Cmd::RawBatchGet(r) => r.keys.clone(),
                Cmd::RawPut(r) => one(&r.key),
                Cmd::RawBatchPut(r) => r.pairs.iter().map(|p| p.key.clone()).collect(),
                Cmd::RawDelete(r) => one(&r.key),
                Cmd::RawBatchDelete(r) => r.keys.clone(),
                Cmd::RawScan(r) => one(&r.start_key),
                Cmd::RawDeleteRange(r) => one(&r.start_key),
                Cmd::RawBatchScan(r) => r.ranges.iter().map(|x| x.start_key.clone()).collect(),
                Cmd::Coprocessor(r) => r.ranges.iter().map(|x| x.start.clone()).collect(),
                Cmd::PessimisticLock(r) => mutation_keys(&r.mutations),
                Cmd::PessimisticRollback(r) => r.keys.clone(),
                Cmd::CheckTxnStatus(r) => one(&r.primary_key),
                Cmd::TxnHeartBeat(r) => one(&r.primary_lock),
                Cmd::CheckSecondaryLocks(r) => r.keys.clone(),
                Cmd::RawCoprocessor(r) => r.ranges.iter().map(|x| x.start_key.clone()).collect(),
                Cmd::FlashbackToVersion(r) => one(&r.start_key),
                Cmd::PrepareFlashbackToVersion(r) => one(&r.start_key),
                Cmd::Flush(r) => mutation_keys(&r.mutations),
                Cmd::BufferBatchGet(r) => r.keys.clone(),
                Cmd::GetHealthFeedback(_) | Cmd::BroadcastTxnStatus(_) | Cmd::Empty(_) => {
                    Vec::new()
                }
            },
            Request::RawGetKeyTtl(r) => one(&r.key),
            Request::RawCompareAndSwap(r) => one(&r.key),
            Request::RawChecksum(r) => r.ranges.iter().map(|x| x.start_key.clone()).collect(),
            Request::SplitRegion(r) if !r.split_key.is_empty() => one(&r.split_key),
            Request::SplitRegion(r) => r.split_keys.clone(),
            Request::UnsafeDestroyRange(r) => one(&r.start_key),
            Request::GetStoreSafeTs(r) => r
                .key_range
                .as_ref()
                .map(|k| vec![k.start_key.clone()])
                .unwrap_or_default(),
            Request::MvccGetByKey(r) => one(&r.key),
            Request::MvccGetByStartTs(_) => Vec::new(),
        }
    }

    /// The transaction's start timestamp, for fault matching.
    pub(crate) fn start_ts(&self) -> Option<u64> {
        let Request::Cmd(cmd) = self else {
            return match self {
                Request::MvccGetByStartTs(r) => Some(r.start_ts),
                _ => None,
            };
        };
        match cmd {
            Cmd::Get(r) => Some(r.version),
            Cmd::Scan(r) => Some(r.version),
            Cmd::Prewrite(r) => Some(r.start_version),
            Cmd::Commit(r) => Some(r.start_version),
            Cmd::Cleanup(r) => Some(r.start_version),
            Cmd::BatchGet(r) => Some(r.version),
            Cmd::BatchRollback(r) => Some(r.start_version),
            Cmd::ResolveLock(r) => Some(r.start_version),
            Cmd::PessimisticLock(r) => Some(r.start_version),
            Cmd::PessimisticRollback(r) => Some(r.start_version),
            Cmd::CheckTxnStatus(r) => Some(r.lock_ts),
            Cmd::TxnHeartBeat(r) => Some(r.start_version),
            Cmd::CheckSecondaryLocks(r) => Some(r.start_version),
            Cmd::Flush(r) => Some(r.start_ts),
            Cmd::BufferBatchGet(r) => Some(r.version),
            Cmd::Coprocessor(r) => Some(r.start_ts),
            Cmd::FlashbackToVersion(r) => Some(r.start_ts),
            Cmd::PrepareFlashbackToVersion(r) => Some(r.start_ts),
            _ => None,
        }
    }

    /// An empty response of the matching type, to carry an error.
    fn empty_response(&self) -> Response {
        match self {
            Request::Cmd(cmd) => Response::Cmd(cmd_empty_response(cmd)),
            Request::RawGetKeyTtl(_) => Response::RawGetKeyTtl(Default::default()),
            Request::RawCompareAndSwap(_) => Response::RawCompareAndSwap(Default::default()),
            Request::RawChecksum(_) => Response::RawChecksum(Default::default()),
            Request::SplitRegion(_) => Response::SplitRegion(Default::default()),
            Request::UnsafeDestroyRange(_) => Response::UnsafeDestroyRange(Default::default()),
            Request::GetStoreSafeTs(_) => Response::GetStoreSafeTs(Default::default()),
            Request::MvccGetByKey(_) => Response::MvccGetByKey(Default::default()),
            Request::MvccGetByStartTs(_) => Response::MvccGetByStartTs(Default::default()),
        }
    }
}

impl Response {
    fn slots(&mut self) -> Option<&mut dyn ErrorSlots> {
        match self {
            Response::Cmd(cmd) => cmd_slots(cmd),
            Response::RawGetKeyTtl(r) => Some(r),
            Response::RawCompareAndSwap(r) => Some(r),
            Response::RawChecksum(r) => Some(r),
            Response::SplitRegion(r) => Some(r),
            Response::UnsafeDestroyRange(r) => Some(r),
            Response::GetStoreSafeTs(_) => None,
            Response::MvccGetByKey(r) => Some(r),
            Response::MvccGetByStartTs(r) => Some(r),
        }
    }

    /// Sets the region error (responses without one, such as GetStoreSafeTS, stay as they are).
    pub(crate) fn with_region_error(mut self, e: errorpb::Error) -> Self {
        if let Some(slots) = self.slots() {
            slots.set_region_error(e);
        }
        self
    }

    /// Puts a key error where the response type carries one: the key error field, the errors
    /// list, a readable string, or a single error pair.
    pub(crate) fn with_key_error(mut self, e: kvrpcpb::KeyError) -> Self {
        if let Some(slots) = self.slots() {
            slots.set_key_error(e);
        }
        self
    }
}

// ----- the dispatcher ---------------------------------------------------------------------------

/// Dispatches the requests one store handles: those it receives, or those another store
/// forwards to it.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    pub(crate) shared: Arc<Shared>,
    /// The store that handles the requests.
    pub(crate) store_id: u64,
    /// For requests forwarded to `store_id`: the store that received them from the client.
    pub(crate) via: Option<u64>,
    pub(crate) links: Arc<StoreLinks>,
}

impl Dispatcher {
    pub(crate) fn new(shared: Arc<Shared>, store_id: u64, links: Arc<StoreLinks>) -> Self {
        Dispatcher {
            shared,
            store_id,
            via: None,
            links,
        }
    }

    /// A dispatcher for the requests this store forwards to `to`.
    pub(crate) fn forwarding_to(&self, to: u64) -> Self {
        Dispatcher {
            shared: self.shared.clone(),
            store_id: to,
            via: Some(self.store_id),
            links: self.links.clone(),
        }
    }

    /// The answer to a unary call forwarded to an address nothing serves: the receiver's
    /// cluster-id check (TiKV runs it before forwarding), then CANCELLED.
    pub(crate) fn unreachable(&self, req: &Request, host: &str) -> Status {
        let request_cluster_id = req
            .context()
            .filter(|_| req.checks_cluster_id())
            .map_or(0, |c| c.cluster_id);
        if request_cluster_id != 0 && request_cluster_id != self.shared.lock().cluster_id {
            return cluster_id_mismatch(request_cluster_id, 0, false);
        }
        forward::unreachable(host)
    }

    /// Runs one request through counting, faults, the cluster-id check and execution.
    pub(crate) async fn dispatch(&self, req: Request, batched: bool) -> Outcome {
        if let Some(via) = self.via {
            self.links.count(via, self.store_id);
            if !self.links.is_running(self.store_id) {
                let host = self
                    .shared
                    .lock()
                    .stores
                    .get(&self.store_id)
                    .map(|s| s.meta.address.clone())
                    .unwrap_or_default();
                // A batched request's stream is bridged without the receiver's checks.
                let status = if batched {
                    forward::unreachable(&host)
                } else {
                    self.unreachable(&req, &host)
                };
                return Outcome::Fail(status);
            }
        }
        let name = req.name();
        let region_id = req.context().map(|c| c.region_id);
        let request_cluster_id = req
            .context()
            .filter(|_| req.checks_cluster_id())
            .map_or(0, |c| c.cluster_id);
        let cluster_id = {
            let mut state = self.shared.lock();
            state.count_rpc(self.store_id, name);
            state.cluster_id
        };
        // Collecting the keys allocates; only fault matching reads them, so skip it (an empty
        // Vec does not allocate) unless a rule is installed.
        let keys = if self.shared.faults.has_rules() {
            req.keys()
        } else {
            Vec::new()
        };
        let info = RequestInfo {
            service: Service::Tikv,
            store_id: Some(self.store_id),
            command: name,
            region_id,
            keys: &keys,
            start_ts: req.start_ts(),
            batched,
            forwarded_via: self.via,
        };

        if let Some(action) = self.shared.faults.check(&info, Phase::Before) {
            match action {
                Action::Delay(d) => tokio::time::sleep(d).await,
                Action::Hang(handle) => handle.wait().await,
                other => return self.fault_outcome(other, req.empty_response(), region_id),
            }
        }

        if request_cluster_id != 0 && request_cluster_id != cluster_id {
            return Outcome::Fail(cluster_id_mismatch(request_cluster_id, cluster_id, batched));
        }

        let is_gc = matches!(req, Request::Cmd(Cmd::Gc(_)));
        let empty = req.empty_response();
        let result = match req {
            // The one command that may wait: it takes and releases the state lock itself.
            Request::Cmd(Cmd::PessimisticLock(r)) => {
                txn::pessimistic::kv_pessimistic_lock_waiting(&self.shared, self.store_id, r)
                    .await
                    .map(|r| Response::Cmd(RespCmd::PessimisticLock(r)))
            }
            req => {
                let mut state = self.shared.lock();
                execute(&mut state, self.store_id, req, batched)
            }
        };
        if self.take_crash() {
            return Outcome::NoReply;
        }
        // Any command may have released a lock someone waits for.
        self.shared.lock_waits.notify_changed();
        let response = match result {
            Ok(response) => response,
            // A batched request whose handler fails with a server error gets no answer at all.
            Err(_) if batched && is_gc => return Outcome::NoReply,
            Err(status) => return Outcome::Fail(status),
        };

        match self.shared.faults.check(&info, Phase::AfterApply) {
            None => Outcome::Reply(response),
            Some(Action::Delay(d)) => {
                tokio::time::sleep(d).await;
                Outcome::Reply(response)
            }
            Some(Action::Hang(handle)) => {
                handle.wait().await;
                Outcome::Reply(response)
            }
            Some(other) => self.fault_outcome(other, empty, region_id),
        }
    }

    /// Whether the request just executed made this store "panic" (an invalid max_ts update
    /// under [`crate::InvalidMaxTsAction::Panic`]): the store is marked down and its server is
    /// stopped, and the request is never answered, as when a TiKV process aborts.
    fn take_crash(&self) -> bool {
        let mut state = self.shared.lock();
        let Some(pos) = state
            .crashed_stores
            .iter()
            .position(|&s| s == self.store_id)
        else {
            return false;
        };
        state.crashed_stores.swap_remove(pos);
        if let Some(store) = state.stores.get_mut(&self.store_id) {
            store.up = false;
        }
        drop(state);
        // The receiver lives as long as the cluster handle; without it nothing is left to stop.
        let _ = self.shared.crashes.send(self.store_id);
        true
    }

    /// The outcome of a fault that answers instead of the request.
    fn fault_outcome(&self, action: Action, empty: Response, region_id: Option<u64>) -> Outcome {
        match action {
            Action::RegionError(spec) => {
                let error = {
                    let state = self.shared.lock();
                    fault::materialize(&spec, &state, region_id, Some(self.store_id))
                };
                Outcome::Reply(empty.with_region_error(error))
            }
            Action::KeyError(e) => Outcome::Reply(empty.with_key_error(e)),
            Action::Status { code, message } => Outcome::Fail(Status::new(code, message)),
            Action::Drop => Outcome::NoReply,
            // Waiting actions are handled by the caller; reaching here means a new action kind
            // that answers nothing useful, so answer as the request would have been refused.
            _ => Outcome::Fail(Status::internal("unhandled fault action")),
        }
    }

    /// Health feedback of this store, with the next sequence number.
    pub(crate) fn health_feedback(&self) -> kvrpcpb::HealthFeedback {
        admin::health_feedback(&mut self.shared.lock(), self.store_id)
    }
}

/// TiKV's rejection of a request from another cluster; the batch path words it differently.
fn cluster_id_mismatch(request_cluster_id: u64, cluster_id: u64, batched: bool) -> Status {
    let message = if batched {
        format!(
            "cluster of request={request_cluster_id} does not match TiKV cluster id={cluster_id}"
        )
    } else {
        "the cluster id of the request does not match the TiKV cluster".to_owned()
    };
    Status::invalid_argument(message)
}

fn not_served(name: &str) -> Status {
    Status::unimplemented(format!("tikv-mock does not serve {name}"))
}

/// Executes a request with the cluster state locked. An `Err` is a gRPC status for the call.
fn execute(
    state: &mut ClusterState,
    store_id: u64,
    req: Request,
    batched: bool,
) -> Result<Response, Status> {
    let name = req.name();
    let resp = match req {
        Request::Cmd(cmd) => Response::Cmd(match cmd {
            Cmd::RawGet(r) => RespCmd::RawGet(raw::raw_get(state, store_id, r)),
            Cmd::RawBatchGet(r) => RespCmd::RawBatchGet(raw::raw_batch_get(state, store_id, r)),
            Cmd::RawPut(r) => RespCmd::RawPut(raw::raw_put(state, store_id, r)),
            Cmd::RawBatchPut(r) => RespCmd::RawBatchPut(raw::raw_batch_put(state, store_id, r)),
            Cmd::RawDelete(r) => RespCmd::RawDelete(raw::raw_delete(state, store_id, r)),
            Cmd::RawBatchDelete(r) => {
                RespCmd::RawBatchDelete(raw::raw_batch_delete(state, store_id, r))
            }
            Cmd::RawScan(r) => RespCmd::RawScan(raw::raw_scan(state, store_id, r)),
            Cmd::RawDeleteRange(r) => {
                RespCmd::RawDeleteRange(raw::raw_delete_range(state, store_id, r))
            }
            Cmd::RawBatchScan(r) => RespCmd::RawBatchScan(raw::raw_batch_scan(state, store_id, r)),
            Cmd::GetHealthFeedback(_) => {
                // A batched request's feedback is attached by the stream's writer, to the
                // sub-response and to the batch that carries it (TiKV's HealthFeedbackAttacher).
                let health_feedback = (!batched).then(|| admin::health_feedback(state, store_id));
                RespCmd::GetHealthFeedback(kvrpcpb::GetHealthFeedbackResponse {
                    health_feedback,
                    ..Default::default()
                })
            }
            // No region validation: TiKV only refreshes the store's transaction status cache.
            Cmd::BroadcastTxnStatus(r) => {
                RespCmd::BroadcastTxnStatus(txn::write::broadcast_txn_status(state, store_id, r))
            }
            Cmd::Empty(e) => RespCmd::Empty(BatchCommandsEmptyResponse { test_id: e.test_id }),
            // Transactional commands: the handlers in `crate::txn`.
            Cmd::Get(r) => RespCmd::Get(txn::read::kv_get(state, store_id, r)?),
            Cmd::BatchGet(r) => RespCmd::BatchGet(txn::read::kv_batch_get(state, store_id, r)?),
            Cmd::Scan(r) => RespCmd::Scan(txn::read::kv_scan(state, store_id, r)?),
            Cmd::ScanLock(r) => RespCmd::ScanLock(txn::read::kv_scan_lock(state, store_id, r)?),
            Cmd::Prewrite(r) => RespCmd::Prewrite(txn::write::kv_prewrite(state, store_id, r)?),
            Cmd::Commit(r) => RespCmd::Commit(txn::write::kv_commit(state, store_id, r)?),
            Cmd::BatchRollback(r) => {
                RespCmd::BatchRollback(txn::write::kv_batch_rollback(state, store_id, r)?)
            }
            Cmd::Cleanup(r) => RespCmd::Cleanup(txn::write::kv_cleanup(state, store_id, r)?),
            Cmd::CheckTxnStatus(r) => {
                RespCmd::CheckTxnStatus(txn::write::kv_check_txn_status(state, store_id, r)?)
            }
            Cmd::CheckSecondaryLocks(r) => RespCmd::CheckSecondaryLocks(
                txn::write::kv_check_secondary_locks(state, store_id, r)?,
            ),
            Cmd::ResolveLock(r) => {
                RespCmd::ResolveLock(txn::write::kv_resolve_lock(state, store_id, r)?)
            }
            Cmd::TxnHeartBeat(r) => {
                RespCmd::TxnHeartBeat(txn::write::kv_txn_heartbeat(state, store_id, r)?)
            }
            Cmd::DeleteRange(r) => {
                RespCmd::DeleteRange(txn::write::kv_delete_range(state, store_id, r)?)
            }
            Cmd::Flush(r) => RespCmd::Flush(txn::write::kv_flush(state, store_id, r)?),
            Cmd::BufferBatchGet(r) => {
                RespCmd::BufferBatchGet(txn::read::kv_buffer_batch_get(state, store_id, r)?)
            }
            // Served requests wait in `Dispatcher::dispatch`; here a locked key answers at once.
            Cmd::PessimisticLock(r) => {
                RespCmd::PessimisticLock(txn::pessimistic::kv_pessimistic_lock(state, store_id, r)?)
            }
            Cmd::PessimisticRollback(r) => RespCmd::PessimisticRollback(
                txn::pessimistic::kv_pessimistic_rollback(state, store_id, r)?,
            ),
            // TiKV answers KvGC with a bare UNIMPLEMENTED: GC runs inside the store.
            Cmd::Gc(_) => return Err(Status::new(tonic::Code::Unimplemented, "")),
            // Transactional commands and the coprocessor are not served yet.
            _ => return Err(not_served(name)),
        }),
        Request::RawGetKeyTtl(r) => {
            Response::RawGetKeyTtl(raw::raw_get_key_ttl(state, store_id, r))
        }
        Request::RawCompareAndSwap(r) => {
            Response::RawCompareAndSwap(raw::raw_compare_and_swap(state, store_id, r))
        }
        Request::RawChecksum(r) => Response::RawChecksum(raw::raw_checksum(state, store_id, r)),
        Request::SplitRegion(r) => Response::SplitRegion(admin::split_region(state, store_id, r)),
        Request::UnsafeDestroyRange(r) => {
            Response::UnsafeDestroyRange(admin::unsafe_destroy_range(state, r))
        }
        Request::GetStoreSafeTs(r) => Response::GetStoreSafeTs(admin::store_safe_ts(state, r)),
        Request::MvccGetByKey(r) => {
            Response::MvccGetByKey(txn::read::mvcc_get_by_key(state, store_id, r)?)
        }
        Request::MvccGetByStartTs(r) => {
            Response::MvccGetByStartTs(txn::read::mvcc_get_by_start_ts(state, store_id, r)?)
        }
    };
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_errors_land_where_each_response_keeps_them() {
        let e = kvrpcpb::KeyError {
            abort: "boom".to_owned(),
            ..Default::default()
        };
        let resp = Request::Cmd(Cmd::RawGet(Default::default()))
            .empty_response()
            .with_key_error(e.clone());
        let Response::Cmd(RespCmd::RawGet(r)) = resp else {
            panic!("wrong type")
        };
        assert_eq!(r.error, "boom");

        let resp = Request::Cmd(Cmd::RawScan(Default::default()))
            .empty_response()
            .with_key_error(e.clone());
        let Response::Cmd(RespCmd::RawScan(r)) = resp else {
            panic!("wrong type")
        };
        assert_eq!(r.kvs[0].error.as_ref().unwrap().abort, "boom");

        let resp = Request::Cmd(Cmd::Prewrite(Default::default()))
            .empty_response()
            .with_key_error(e.clone());
        let Response::Cmd(RespCmd::Prewrite(r)) = resp else {
            panic!("wrong type")
        };
        assert_eq!(r.errors, vec![e.clone()]);

        let resp = Request::Cmd(Cmd::BatchGet(Default::default()))
            .empty_response()
            .with_key_error(e.clone());
        let Response::Cmd(RespCmd::BatchGet(r)) = resp else {
            panic!("wrong type")
        };
        assert_eq!(r.error, Some(e.clone()));
        assert_eq!(r.pairs.len(), 1);
    }

    #[test]
    fn region_errors_and_names() {
        let region_error = errorpb::Error {
            message: "x".to_owned(),
            ..Default::default()
        };
        let req = Request::RawCompareAndSwap(Default::default());
        assert_eq!(req.name(), "RawCompareAndSwap");
        let Response::RawCompareAndSwap(r) = req.empty_response().with_region_error(region_error)
        else {
            panic!("wrong type")
        };
        assert_eq!(r.region_error.unwrap().message, "x");
        assert_eq!(
            Request::Cmd(Cmd::PessimisticRollback(Default::default())).name(),
            "KVPessimisticRollback"
        );
        assert_eq!(
            Request::GetStoreSafeTs(Default::default()).name(),
            "GetStoreSafeTS"
        );
        assert!(!Request::SplitRegion(Default::default()).checks_cluster_id());
    }
}
