//! [`Encode`]: prefixing every key-bearing field of every request with the keyspace prefix.
//!
//! Ports the request half of client-go `codecV2.EncodeRequest`, case by case, for the commands
//! of `crate::rpc` (both the BatchCommands and the unary lists).

use tikv_proto::kvrpcpb;

use super::{ApiCodec, KeyspaceCodec};
use crate::Result;

/// A request whose keys the codec recodes.
///
/// The sender calls [`Encode::encode`] once per request, before the first attempt; see the
/// module docs of `crate::codec` for the contract.
pub(crate) trait Encode {
    /// Prefixes every key-bearing field with the keyspace prefix. Not idempotent.
    fn encode_v2(&mut self, ks: &KeyspaceCodec);

    /// Encodes the request for `codec`: nothing to do under API V1.
    #[inline]
    fn encode(&mut self, codec: &ApiCodec) -> Result<()> {
        if let ApiCodec::V2(ks) = codec {
            self.encode_v2(ks);
        }
        Ok(())
    }
}

/// Requests with one `key`.
macro_rules! key_requests {
    ($($req:ident),* $(,)?) => {$(
        impl Encode for kvrpcpb::$req {
            fn encode_v2(&mut self, ks: &KeyspaceCodec) {
                self.key = ks.encode_key(&self.key);
            }
        }
    )*};
}

/// Requests with a list of `keys`.
macro_rules! keys_requests {
    ($($req:ident),* $(,)?) => {$(
        impl Encode for kvrpcpb::$req {
            fn encode_v2(&mut self, ks: &KeyspaceCodec) {
                ks.encode_keys(&mut self.keys);
            }
        }
    )*};
}

/// Requests with a forward `[start_key, end_key)` range; an empty end is the keyspace's end.
macro_rules! range_requests {
    ($($req:ident),* $(,)?) => {$(
        impl Encode for kvrpcpb::$req {
            fn encode_v2(&mut self, ks: &KeyspaceCodec) {
                ks.encode_range_in_place(&mut self.start_key, &mut self.end_key, false);
            }
        }
    )*};
}

key_requests! {
    GetRequest,
    CleanupRequest,
    RawGetRequest,
    RawPutRequest,
    RawDeleteRequest,
    RawGetKeyTtlRequest,
    RawCasRequest,
    MvccGetByKeyRequest,
}

keys_requests! {
    BatchGetRequest,
    BufferBatchGetRequest,
    BatchRollbackRequest,
    ResolveLockRequest,
    PessimisticRollbackRequest,
    CheckSecondaryLocksRequest,
    RawBatchGetRequest,
    RawBatchDeleteRequest,
}

range_requests! {
    ScanLockRequest,
    DeleteRangeRequest,
    FlashbackToVersionRequest,
    PrepareFlashbackToVersionRequest,
    RawDeleteRangeRequest,
    UnsafeDestroyRangeRequest,
}

impl Encode for kvrpcpb::ScanRequest {
    fn encode_v2(&mut self, ks: &KeyspaceCodec) {
        ks.encode_range_in_place(&mut self.start_key, &mut self.end_key, self.reverse);
    }
}

impl Encode for kvrpcpb::RawScanRequest {
    fn encode_v2(&mut self, ks: &KeyspaceCodec) {
        ks.encode_range_in_place(&mut self.start_key, &mut self.end_key, self.reverse);
    }
}

impl Encode for kvrpcpb::PrewriteRequest {
    fn encode_v2(&mut self, ks: &KeyspaceCodec) {
        ks.encode_keys_of(&mut self.mutations, |m| &mut m.key);
        self.primary_lock = ks.encode_key(&self.primary_lock);
        ks.encode_keys(&mut self.secondaries);
    }
}

impl Encode for kvrpcpb::PessimisticLockRequest {
    fn encode_v2(&mut self, ks: &KeyspaceCodec) {
        ks.encode_keys_of(&mut self.mutations, |m| &mut m.key);
        self.primary_lock = ks.encode_key(&self.primary_lock);
    }
}

impl Encode for kvrpcpb::CommitRequest {
    fn encode_v2(&mut self, ks: &KeyspaceCodec) {
        ks.encode_keys(&mut self.keys);
        // Empty means the field is not set, and a bare prefix would set it.
        if !self.primary_key.is_empty() {
            self.primary_key = ks.encode_key(&self.primary_key);
        }
    }
}

impl Encode for kvrpcpb::FlushRequest {
    fn encode_v2(&mut self, ks: &KeyspaceCodec) {
        ks.encode_keys_of(&mut self.mutations, |m| &mut m.key);
        if !self.primary_key.is_empty() {
            self.primary_key = ks.encode_key(&self.primary_key);
        }
    }
}

impl Encode for kvrpcpb::TxnHeartBeatRequest {
    fn encode_v2(&mut self, ks: &KeyspaceCodec) {
        self.primary_lock = ks.encode_key(&self.primary_lock);
    }
}

impl Encode for kvrpcpb::CheckTxnStatusRequest {
    fn encode_v2(&mut self, ks: &KeyspaceCodec) {
        self.primary_key = ks.encode_key(&self.primary_key);
    }
}

impl Encode for kvrpcpb::RawBatchPutRequest {
    fn encode_v2(&mut self, ks: &KeyspaceCodec) {
        ks.encode_keys_of(&mut self.pairs, |p| &mut p.key);
    }
}

impl Encode for kvrpcpb::RawChecksumRequest {
    fn encode_v2(&mut self, ks: &KeyspaceCodec) {
        for range in &mut self.ranges {
            ks.encode_range_in_place(&mut range.start_key, &mut range.end_key, false);
        }
    }
}

impl Encode for kvrpcpb::RawBatchScanRequest {
    fn encode_v2(&mut self, ks: &KeyspaceCodec) {
        // TiKV reads an empty end key as "up to the next range's start" (the last range: no
        // bound), but under API V2 it refuses empty end keys. So an inner empty end is written
        // out as the next start, and only the last one becomes the keyspace's bound. In
        // reverse, starts are upper bounds and ends lower ones; `encode_range` knows.
        let reverse = self.reverse;
        let n = self.ranges.len();
        for i in 0..n {
            // The next range is still in user space: ranges are encoded front to back.
            let end = match self.ranges.get(i + 1) {
                Some(next) if self.ranges[i].end_key.is_empty() => next.start_key.clone(),
                _ => self.ranges[i].end_key.clone(),
            };
            let range = &mut self.ranges[i];
            (range.start_key, range.end_key) = ks.encode_range(&range.start_key, &end, reverse);
        }
    }
}

impl Encode for kvrpcpb::SplitRegionRequest {
    fn encode_v2(&mut self, ks: &KeyspaceCodec) {
        ks.encode_keys(&mut self.split_keys);
        // The deprecated single key, when an old-style caller sets it.
        if !self.split_key.is_empty() {
            self.split_key = ks.encode_key(&self.split_key);
        }
    }
}

impl Encode for kvrpcpb::MvccGetByStartTsRequest {
    fn encode_v2(&mut self, _: &KeyspaceCodec) {}
}
