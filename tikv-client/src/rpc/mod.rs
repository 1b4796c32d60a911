//! The request model: every region-routed TiKV command as a typed request with its typed
//! response, the `kvrpcpb.Context` every one of them carries, and the conversion to and from what
//! the transport moves.
//!
//! Who calls it: the region request sender (`crate::request`) is generic over [`KvRequest`]. It
//! copies each attempt's part of the context (region, epoch, peer, replica/stale read, busy
//! threshold: the selector's `AttemptContext`) into [`KvRequest::context_mut`], hands
//! [`KvRequest::into_wire`] to the transport, turns the answer back with
//! [`KvRequest::response_from`] and inspects [`KvResponse::take_region_error`]. The raw and
//! transactional clients build the requests and fill the rest of the context once, with
//! [`ContextTemplate`].
//!
//! Key errors in answers are classified by `key_error.rs` ([`KeyErr`], which keeps a lock's
//! whole `LockInfo` for the lock resolver) and become the public error only at the API edge.
//!
//! Ports client-go `tikvrpc/tikvrpc.go` (`CmdType`, `Request`, `AttachContext`,
//! `FromBatchCommandsResponse`, `Response.GetRegionError`) and the generated
//! `tikvrpc/cmds_generated.go`. Where client-go switches over an untyped request at run time,
//! here each command is its own type: a response of the wrong kind is impossible to confuse with
//! the right one, and the compiler checks that every command has a response.

pub(crate) mod key_error;

pub(crate) use key_error::KeyErr;

use tikv_proto::tikvpb::batch_commands_request::request::Cmd;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tikv_proto::{errorpb, kvrpcpb};

use crate::transport::{UnaryRequest, UnaryResponse};
use crate::{Error, Result};

/// How a command travels.
#[derive(Debug)]
pub(crate) enum Wire {
    /// In a BatchCommands message (the transport falls back to the unary RPC by itself when the
    /// store does not serve BatchCommands).
    Batch(Cmd),
    /// As its own unary RPC: the command has no BatchCommands slot.
    Unary(UnaryRequest),
}

/// The answer to a [`Wire`] request.
#[derive(Debug)]
pub(crate) enum WireResponse {
    /// Answer from a BatchCommands message (boxed by the transport: the enum is large, and
    /// moving it by value showed up in profiles).
    Batch(Box<RespCmd>),
    /// Answer to a unary RPC (boxed for the same reason).
    Unary(Box<UnaryResponse>),
}

/// Whether a command only reads. Reads may go to followers (replica read, stale read) and have
/// their timestamp validated against the oracle; writes always go to the leader (the replica
/// selector ignores a read mode for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// A TiKV command addressed to one region.
pub(crate) trait KvRequest: Clone + Send + Sync + 'static {
    /// The typed answer.
    type Response: KvResponse;
    /// TiKV's gRPC method name (`KvGet`, `RawPut`, ...): for logs, metrics and the mock's counts.
    const NAME: &'static str;
    /// Whether the command only reads.
    const ACCESS: Access;

    /// The request's context, created empty if absent.
    fn context_mut(&mut self) -> &mut kvrpcpb::Context;

    /// The request's context, if set (tests read what an attempt carried).
    #[cfg(test)]
    fn context(&self) -> Option<&kvrpcpb::Context>;

    /// Wraps the request for the transport.
    fn into_wire(self) -> Wire;

    /// Unwraps the transport's answer; an answer of another kind is an internal error.
    fn response_from(wire: WireResponse) -> Result<Self::Response>;

    /// Whether [`read_ts`](KvRequest::read_ts) can answer: checked first, so that commands
    /// without a read timestamp (every raw command) cost the validation nothing.
    const HAS_READ_TS: bool = false;

    /// The snapshot timestamp a read reads at, for the commands whose timestamp the oracle
    /// validates before sending (client-go `validateReadTS`): KvGet, KvScan, KvBatchGet,
    /// KvScanLock and KvBufferBatchGet.
    fn read_ts(&self) -> Option<u64> {
        None
    }
}

/// A TiKV answer that may carry a region error.
pub(crate) trait KvResponse: Send + 'static {
    /// Takes the region error out of the answer, if there is one.
    fn take_region_error(&mut self) -> Option<errorpb::Error>;
}

fn mismatch(expected: &'static str, got: &WireResponse) -> Error {
    Error::Internal {
        message: format!("expected a {expected} answer, got {got:?}"),
    }
}

/// True: lets the request macros set [`KvRequest::HAS_READ_TS`] for the commands that name
/// their read-ts field.
const fn names_a_field(_field: &str) -> bool {
    true
}

/// Implements [`KvRequest`] for commands that travel in BatchCommands.
macro_rules! batch_requests {
    ($($req:ident => $resp:ident, $variant:ident, $name:literal, $access:ident
        $(, read_ts = $ts:ident)?;)*) => {$(
        impl KvRequest for kvrpcpb::$req {
            type Response = kvrpcpb::$resp;
            const NAME: &'static str = $name;
            const ACCESS: Access = Access::$access;

            $(
                const HAS_READ_TS: bool = names_a_field(stringify!($ts));

                fn read_ts(&self) -> Option<u64> {
                    Some(self.$ts)
                }
            )?

            fn context_mut(&mut self) -> &mut kvrpcpb::Context {
                self.context.get_or_insert_with(Default::default)
            }

            #[cfg(test)]
            fn context(&self) -> Option<&kvrpcpb::Context> {
                self.context.as_ref()
            }

            fn into_wire(self) -> Wire {
                Wire::Batch(Cmd::$variant(self))
            }

            fn response_from(wire: WireResponse) -> Result<Self::Response> {
                match wire {
                    WireResponse::Batch(cmd) => match *cmd {
                        RespCmd::$variant(r) => Ok(r),
                        other => Err(mismatch($name, &WireResponse::Batch(Box::new(other)))),
                    },
                    WireResponse::Unary(unary) => match *unary {
                        UnaryResponse::Cmd(RespCmd::$variant(r)) => Ok(r),
                        other => Err(mismatch($name, &WireResponse::Unary(Box::new(other)))),
                    },
                }
            }
        }

        impl KvResponse for kvrpcpb::$resp {
            fn take_region_error(&mut self) -> Option<errorpb::Error> {
                self.region_error.take()
            }
        }
    )*};
}

/// Implements [`KvRequest`] for commands that only exist as unary RPCs.
macro_rules! unary_requests {
    ($($req:ident => $resp:ident, $variant:ident, $name:literal, $access:ident;)*) => {$(
        impl KvRequest for kvrpcpb::$req {
            type Response = kvrpcpb::$resp;
            const NAME: &'static str = $name;
            const ACCESS: Access = Access::$access;

            fn context_mut(&mut self) -> &mut kvrpcpb::Context {
                self.context.get_or_insert_with(Default::default)
            }

            #[cfg(test)]
            fn context(&self) -> Option<&kvrpcpb::Context> {
                self.context.as_ref()
            }

            fn into_wire(self) -> Wire {
                Wire::Unary(UnaryRequest::$variant(self))
            }

            fn response_from(wire: WireResponse) -> Result<Self::Response> {
                match wire {
                    WireResponse::Unary(unary) => match *unary {
                        UnaryResponse::$variant(r) => Ok(r),
                        other => Err(mismatch($name, &WireResponse::Unary(Box::new(other)))),
                    },
                    other => Err(mismatch($name, &other)),
                }
            }
        }

        impl KvResponse for kvrpcpb::$resp {
            fn take_region_error(&mut self) -> Option<errorpb::Error> {
                self.region_error.take()
            }
        }
    )*};
}

batch_requests! {
    GetRequest => GetResponse, Get, "KvGet", Read, read_ts = version;
    ScanRequest => ScanResponse, Scan, "KvScan", Read, read_ts = version;
    BatchGetRequest => BatchGetResponse, BatchGet, "KvBatchGet", Read, read_ts = version;
    ScanLockRequest => ScanLockResponse, ScanLock, "KvScanLock", Read, read_ts = max_version;
    BufferBatchGetRequest => BufferBatchGetResponse, BufferBatchGet, "KvBufferBatchGet", Read,
        read_ts = version;
    PrewriteRequest => PrewriteResponse, Prewrite, "KvPrewrite", Write;
    CommitRequest => CommitResponse, Commit, "KvCommit", Write;
    CleanupRequest => CleanupResponse, Cleanup, "KvCleanup", Write;
    BatchRollbackRequest => BatchRollbackResponse, BatchRollback, "KvBatchRollback", Write;
    ResolveLockRequest => ResolveLockResponse, ResolveLock, "KvResolveLock", Write;
    DeleteRangeRequest => DeleteRangeResponse, DeleteRange, "KvDeleteRange", Write;
    PessimisticLockRequest => PessimisticLockResponse, PessimisticLock, "KvPessimisticLock", Write;
    PessimisticRollbackRequest => PessimisticRollbackResponse, PessimisticRollback,
        "KVPessimisticRollback", Write;
    CheckTxnStatusRequest => CheckTxnStatusResponse, CheckTxnStatus, "KvCheckTxnStatus", Write;
    TxnHeartBeatRequest => TxnHeartBeatResponse, TxnHeartBeat, "KvTxnHeartBeat", Write;
    CheckSecondaryLocksRequest => CheckSecondaryLocksResponse, CheckSecondaryLocks,
        "KvCheckSecondaryLocks", Write;
    FlushRequest => FlushResponse, Flush, "KvFlush", Write;
    FlashbackToVersionRequest => FlashbackToVersionResponse, FlashbackToVersion,
        "KvFlashbackToVersion", Write;
    PrepareFlashbackToVersionRequest => PrepareFlashbackToVersionResponse,
        PrepareFlashbackToVersion, "KvPrepareFlashbackToVersion", Write;
    RawGetRequest => RawGetResponse, RawGet, "RawGet", Read;
    RawBatchGetRequest => RawBatchGetResponse, RawBatchGet, "RawBatchGet", Read;
    RawScanRequest => RawScanResponse, RawScan, "RawScan", Read;
    RawBatchScanRequest => RawBatchScanResponse, RawBatchScan, "RawBatchScan", Read;
    RawPutRequest => RawPutResponse, RawPut, "RawPut", Write;
    RawBatchPutRequest => RawBatchPutResponse, RawBatchPut, "RawBatchPut", Write;
    RawDeleteRequest => RawDeleteResponse, RawDelete, "RawDelete", Write;
    RawBatchDeleteRequest => RawBatchDeleteResponse, RawBatchDelete, "RawBatchDelete", Write;
    RawDeleteRangeRequest => RawDeleteRangeResponse, RawDeleteRange, "RawDeleteRange", Write;
}

unary_requests! {
    RawGetKeyTtlRequest => RawGetKeyTtlResponse, RawGetKeyTtl, "RawGetKeyTTL", Read;
    RawCasRequest => RawCasResponse, RawCompareAndSwap, "RawCompareAndSwap", Write;
    RawChecksumRequest => RawChecksumResponse, RawChecksum, "RawChecksum", Read;
    SplitRegionRequest => SplitRegionResponse, SplitRegion, "SplitRegion", Write;
    UnsafeDestroyRangeRequest => UnsafeDestroyRangeResponse, UnsafeDestroyRange,
        "UnsafeDestroyRange", Write;
    MvccGetByKeyRequest => MvccGetByKeyResponse, MvccGetByKey, "MvccGetByKey", Read;
    MvccGetByStartTsRequest => MvccGetByStartTsResponse, MvccGetByStartTs, "MvccGetByStartTs",
        Read;
}

/// The request-level part of `kvrpcpb.Context` that a client fills once and stamps on every
/// request it builds: API version, keyspace, priority, isolation, request source and the rest.
/// The routing fields (region, epoch, peer) are the sender's.
///
/// Mirrors what client-go spreads over `tikvrpc.Request`'s embedded `Context` and the options
/// the raw and transactional clients set on it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ContextTemplate {
    pub(crate) api_version: i32,
    /// API V2 keyspace of every key in the request; `None` for API V1.
    pub(crate) keyspace_id: Option<u32>,
    pub(crate) keyspace_name: String,
    pub(crate) priority: i32,
    pub(crate) isolation_level: i32,
    pub(crate) not_fill_cache: bool,
    pub(crate) sync_log: bool,
    pub(crate) request_source: String,
    pub(crate) resource_group_name: Option<String>,
    pub(crate) resource_group_tag: bytes::Bytes,
    pub(crate) disk_full_opt: i32,
    pub(crate) txn_source: u64,
    pub(crate) max_execution_duration_ms: u64,
}

impl ContextTemplate {
    /// A fresh context with the template's fields; routing fields left empty.
    pub(crate) fn to_context(&self) -> kvrpcpb::Context {
        kvrpcpb::Context {
            api_version: self.api_version,
            keyspace: self.keyspace_id.map(kvrpcpb::context::Keyspace::KeyspaceId),
            keyspace_name: self.keyspace_name.clone(),
            priority: self.priority,
            isolation_level: self.isolation_level,
            not_fill_cache: self.not_fill_cache,
            sync_log: self.sync_log,
            request_source: self.request_source.clone(),
            resource_control_context: self.resource_group_name.as_ref().map(|name| {
                kvrpcpb::ResourceControlContext {
                    resource_group_name: name.clone(),
                    ..Default::default()
                }
            }),
            resource_group_tag: self.resource_group_tag.clone(),
            disk_full_opt: self.disk_full_opt,
            txn_source: self.txn_source,
            max_execution_duration_ms: self.max_execution_duration_ms,
            ..Default::default()
        }
    }

    /// Stamps the template on a request, keeping any routing it already has.
    // The raw client builds each request with `to_context` directly; requests built elsewhere
    // (the transactional client's, when it lands) will use this.
    #[cfg(test)]
    pub(crate) fn apply<R: KvRequest>(&self, req: &mut R) {
        let ctx = req.context_mut();
        let routing = (ctx.region_id, ctx.region_epoch.take(), ctx.peer.take());
        *ctx = self.to_context();
        (ctx.region_id, ctx.region_epoch, ctx.peer) = routing;
    }
}

#[cfg(test)]
mod tests {
    use tikv_proto::metapb;

    use super::*;

    #[test]
    fn batch_commands_round_trip_through_the_wire_enums() {
        let mut req = kvrpcpb::RawGetRequest {
            key: bytes::Bytes::from_static(b"k"),
            ..Default::default()
        };
        {
            let ctx = req.context_mut();
            ctx.region_id = 7;
            ctx.region_epoch = Some(metapb::RegionEpoch {
                conf_ver: 2,
                version: 3,
            });
            ctx.peer = Some(metapb::Peer {
                id: 9,
                store_id: 1,
                ..Default::default()
            });
        }
        let ctx = req.context().unwrap();
        assert_eq!((ctx.region_id, ctx.peer.as_ref().unwrap().id), (7, 9));
        assert_eq!(<kvrpcpb::RawGetRequest as KvRequest>::NAME, "RawGet");
        assert_eq!(<kvrpcpb::RawGetRequest as KvRequest>::ACCESS, Access::Read);
        match req.into_wire() {
            Wire::Batch(Cmd::RawGet(r)) => assert_eq!(r.key.as_ref(), b"k"),
            other => panic!("unexpected {other:?}"),
        }

        let answer = kvrpcpb::RawGetResponse {
            value: bytes::Bytes::from_static(b"v"),
            region_error: Some(errorpb::Error {
                message: "stale".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut resp = kvrpcpb::RawGetRequest::response_from(WireResponse::Batch(Box::new(
            RespCmd::RawGet(answer.clone()),
        )))
        .unwrap();
        assert_eq!(resp.take_region_error().unwrap().message, "stale");
        assert!(resp.take_region_error().is_none());
        // The unary form of a batchable command is accepted too (fallback path).
        assert!(
            kvrpcpb::RawGetRequest::response_from(WireResponse::Unary(Box::new(
                UnaryResponse::Cmd(RespCmd::RawGet(answer))
            )))
            .is_ok()
        );
    }

    #[test]
    fn a_wrong_answer_is_an_internal_error_not_a_panic() {
        let wrong = WireResponse::Batch(Box::new(RespCmd::RawPut(Default::default())));
        assert!(matches!(
            kvrpcpb::RawGetRequest::response_from(wrong),
            Err(Error::Internal { .. })
        ));
        let wrong = WireResponse::Batch(Box::new(RespCmd::RawGet(Default::default())));
        assert!(matches!(
            kvrpcpb::RawCasRequest::response_from(wrong),
            Err(Error::Internal { .. })
        ));
    }

    #[test]
    fn unary_only_commands_travel_unary() {
        let req = kvrpcpb::RawCasRequest::default();
        assert!(matches!(
            req.into_wire(),
            Wire::Unary(UnaryRequest::RawCompareAndSwap(_))
        ));
        let resp = kvrpcpb::RawCasRequest::response_from(WireResponse::Unary(Box::new(
            UnaryResponse::RawCompareAndSwap(kvrpcpb::RawCasResponse {
                succeed: true,
                ..Default::default()
            }),
        )))
        .unwrap();
        assert!(resp.succeed);
    }

    #[test]
    fn template_keeps_routing_and_fills_the_rest() {
        let template = ContextTemplate {
            api_version: kvrpcpb::ApiVersion::V2 as i32,
            keyspace_id: Some(42),
            request_source: "external_raw".into(),
            resource_group_name: Some("rg".into()),
            ..Default::default()
        };
        let mut req = kvrpcpb::RawPutRequest::default();
        req.context_mut().region_id = 5;
        req.context_mut().peer = Some(metapb::Peer::default());
        template.apply(&mut req);
        let ctx = req.context().unwrap();
        assert_eq!(ctx.region_id, 5);
        assert!(ctx.peer.is_some());
        assert_eq!(
            ctx.keyspace,
            Some(kvrpcpb::context::Keyspace::KeyspaceId(42))
        );
        assert_eq!(ctx.request_source, "external_raw");
        assert_eq!(
            ctx.resource_control_context
                .as_ref()
                .unwrap()
                .resource_group_name,
            "rg"
        );
    }
}
