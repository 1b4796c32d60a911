//! [`Decode`]: stripping the keyspace prefix from every key-bearing field of every response,
//! and mapping region errors into the keyspace's view.
//!
//! Ports the response half of client-go `codecV2.DecodeResponse` (with `decodeKeyError`,
//! `decodeLockInfo`, `decodePairs`, `decodeMvccInfo`, `decodeRegions`) and, for API V1
//! transactional mode, `codecV1.DecodeResponse` (region errors only).

use bytes::Bytes;
use tikv_proto::{errorpb, kvrpcpb, metapb};

use super::{ApiCodec, KeyMode, KeyspaceCodec, region};
use crate::Result;

/// A response whose keys the codec recodes.
///
/// The sender calls [`Decode::decode`] on every answer before inspecting it; see the module
/// docs of `crate::codec` for the contract.
pub(crate) trait Decode {
    /// Strips the keyspace prefix from every key-bearing field and maps the region error.
    fn decode_v2(&mut self, ks: &KeyspaceCodec) -> Result<()>;

    /// The region error, if the answer carries one.
    fn region_error_mut(&mut self) -> Option<&mut errorpb::Error>;

    /// Decodes the answer for `codec`. API V1 raw: nothing. API V1 transactional: the region
    /// error's region boundaries only (keys travel unencoded).
    #[inline]
    fn decode(&mut self, codec: &ApiCodec) -> Result<()> {
        match codec {
            ApiCodec::V1(KeyMode::Raw) => Ok(()),
            ApiCodec::V1(KeyMode::Txn) => match self.region_error_mut() {
                Some(err) => codec.decode_region_error(err),
                None => Ok(()),
            },
            ApiCodec::V2(ks) => self.decode_v2(ks),
        }
    }
}

/// A key-bearing response field, decoded by its type.
trait Field {
    fn decode_field(&mut self, ks: &KeyspaceCodec) -> Result<()>;
}

impl Field for Bytes {
    fn decode_field(&mut self, ks: &KeyspaceCodec) -> Result<()> {
        *self = ks.decode_key(self)?;
        Ok(())
    }
}

impl<T: Field> Field for Option<T> {
    fn decode_field(&mut self, ks: &KeyspaceCodec) -> Result<()> {
        match self {
            Some(inner) => inner.decode_field(ks),
            None => Ok(()),
        }
    }
}

impl Field for errorpb::Error {
    fn decode_field(&mut self, ks: &KeyspaceCodec) -> Result<()> {
        region::decode_region_error(ks, self)
    }
}

impl Field for kvrpcpb::KeyError {
    fn decode_field(&mut self, ks: &KeyspaceCodec) -> Result<()> {
        self.locked.decode_field(ks)?;
        if let Some(c) = self.conflict.as_mut() {
            c.key.decode_field(ks)?;
            c.primary.decode_field(ks)?;
        }
        if let Some(e) = self.already_exist.as_mut() {
            e.key.decode_field(ks)?;
        }
        if let Some(d) = self.deadlock.as_mut() {
            d.lock_key.decode_field(ks)?;
            d.deadlock_key.decode_field(ks)?;
            for wait in &mut d.wait_chain {
                wait.key.decode_field(ks)?;
            }
        }
        if let Some(e) = self.commit_ts_expired.as_mut() {
            e.key.decode_field(ks)?;
        }
        if let Some(e) = self.txn_not_found.as_mut() {
            e.primary_key.decode_field(ks)?;
        }
        if let Some(e) = self.assertion_failed.as_mut() {
            e.key.decode_field(ks)?;
        }
        if let Some(e) = self.primary_mismatch.as_mut() {
            e.lock_info.decode_field(ks)?;
        }
        if let Some(e) = self.txn_lock_not_found.as_mut() {
            e.key.decode_field(ks)?;
        }
        if let Some(e) = self.lock_upgrade_conflict.as_mut() {
            e.key.decode_field(ks)?;
        }
        if let Some(e) = self.shared_lock_lost.as_mut() {
            e.key.decode_field(ks)?;
        }
        if let Some(debug) = self.debug_info.as_mut() {
            for info in &mut debug.mvcc_info {
                info.key.decode_field(ks)?;
                info.mvcc.decode_field(ks)?;
            }
        }
        Ok(())
    }
}

impl Field for kvrpcpb::LockInfo {
    fn decode_field(&mut self, ks: &KeyspaceCodec) -> Result<()> {
        self.key.decode_field(ks)?;
        self.primary_lock.decode_field(ks)?;
        ks.decode_keys(&mut self.secondaries)?;
        self.shared_lock_infos.decode_field(ks)
    }
}

impl Field for kvrpcpb::KvPair {
    fn decode_field(&mut self, ks: &KeyspaceCodec) -> Result<()> {
        self.error.decode_field(ks)?;
        self.key.decode_field(ks)
    }
}

impl Field for kvrpcpb::MvccInfo {
    fn decode_field(&mut self, ks: &KeyspaceCodec) -> Result<()> {
        if let Some(lock) = self.lock.as_mut() {
            // Empty keys stay empty (`decode_key` leaves them alone).
            lock.primary.decode_field(ks)?;
            ks.decode_keys(&mut lock.secondaries)?;
        }
        Ok(())
    }
}

/// Lists of fields. Regions are the exception: they are filtered, see below.
macro_rules! list_fields {
    ($($ty:ty),*) => {$(
        impl Field for Vec<$ty> {
            fn decode_field(&mut self, ks: &KeyspaceCodec) -> Result<()> {
                for item in self.iter_mut() {
                    item.decode_field(ks)?;
                }
                Ok(())
            }
        }
    )*};
}

list_fields!(kvrpcpb::KeyError, kvrpcpb::LockInfo, kvrpcpb::KvPair);

/// Regions of a split answer: those outside the keyspace are left out.
impl Field for Vec<metapb::Region> {
    fn decode_field(&mut self, ks: &KeyspaceCodec) -> Result<()> {
        *self = region::decode_regions(ks, std::mem::take(self))?;
        Ok(())
    }
}

/// The deprecated `left` / `right` of a split answer: `None` outside the keyspace.
impl Field for Option<metapb::Region> {
    fn decode_field(&mut self, ks: &KeyspaceCodec) -> Result<()> {
        if let Some(r) = self.take() {
            *self = region::decode_region(ks, r)?;
        }
        Ok(())
    }
}

/// Implements [`Decode`]: the region error, then the listed key-bearing fields.
macro_rules! responses {
    ($($resp:ident { $($field:ident),* };)*) => {$(
        impl Decode for kvrpcpb::$resp {
            fn decode_v2(&mut self, ks: &KeyspaceCodec) -> Result<()> {
                self.region_error.decode_field(ks)?;
                $(self.$field.decode_field(ks)?;)*
                Ok(())
            }

            fn region_error_mut(&mut self) -> Option<&mut errorpb::Error> {
                self.region_error.as_mut()
            }
        }
    )*};
}

responses! {
    GetResponse { error };
    ScanResponse { pairs, error };
    BatchGetResponse { pairs, error };
    ScanLockResponse { error, locks };
    BufferBatchGetResponse { pairs, error };
    PrewriteResponse { errors };
    CommitResponse { error };
    CleanupResponse { error };
    BatchRollbackResponse { error };
    ResolveLockResponse { error };
    DeleteRangeResponse {};
    PessimisticLockResponse { errors };
    PessimisticRollbackResponse { errors };
    CheckTxnStatusResponse { error, lock_info };
    TxnHeartBeatResponse { error };
    CheckSecondaryLocksResponse { error, locks };
    FlushResponse { errors };
    FlashbackToVersionResponse {};
    PrepareFlashbackToVersionResponse {};
    RawGetResponse {};
    RawBatchGetResponse { pairs };
    RawScanResponse { kvs };
    RawBatchScanResponse { kvs };
    RawPutResponse {};
    RawBatchPutResponse {};
    RawDeleteResponse {};
    RawBatchDeleteResponse {};
    RawDeleteRangeResponse {};
    RawGetKeyTtlResponse {};
    RawCasResponse {};
    RawChecksumResponse {};
    SplitRegionResponse { regions, left, right, errors };
    UnsafeDestroyRangeResponse {};
    MvccGetByKeyResponse { info };
    MvccGetByStartTsResponse { key, info };
}
