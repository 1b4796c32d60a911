//! PD's GC states API: txn safe point, GC safe point, GC barriers and global GC barriers.
//!
//! Who calls it: the transaction layer's GC (client-go `tikv/gc.go`: advance the txn safe
//! point, resolve locks below it, then move the GC safe point), the safe-point check of reads
//! (`tikv/kv.go` loads the txn safe point with `GetGCState`), and applications that hold data
//! back from GC with barriers (BR, CDC, long reads).
//!
//! Every call is scoped to the client's keyspace (the one given to
//! `PdClientBuilder::keyspace`), or to the whole cluster ([`NULL_KEYSPACE_ID`]) without one, as
//! client-go's `GetGCStatesClient(codec.GetKeyspaceID())`. PD keeps one unified GC state unless
//! a keyspace is configured for keyspace-level GC; user calls on other keyspaces act on the
//! unified state, the internal "advance" calls refuse them.
//!
//! Ports tikv/pd `client/gc_client.go` (`gcInternalController`, `gcStatesClient`, the TTL
//! rounding `roundUpDurationToSeconds` and `saturatingStdDurationFromSeconds`) and the legacy
//! `UpdateGCSafePoint` of `client/client.go` that client-go's `GC` still ends with.

use std::time::Duration;

use tikv_proto::pdpb::{self, pd_client::PdClient as PdGrpc};

use super::PdClient;
use super::keyspace::keyspace_scope;
use crate::Result;

/// The keyspace id meaning "no keyspace": the cluster-wide GC state (`constants.NullKeyspaceID`).
pub(crate) const NULL_KEYSPACE_ID: u32 = 0xFFFF_FFFF;

/// The outcome of [`PdClient::advance_txn_safe_point`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TxnSafePointAdvance {
    /// The txn safe point before the call.
    pub old: u64,
    /// The value asked for.
    pub target: u64,
    /// The txn safe point now; below `target` when a GC barrier held it back.
    pub new: u64,
    /// What held it back, in PD's words; empty when it reached `target`.
    pub blocker_description: String,
}

/// The outcome of [`PdClient::advance_gc_safe_point`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcSafePointAdvance {
    /// The GC safe point before the call.
    pub old: u64,
    /// The value asked for.
    pub target: u64,
    /// The GC safe point now.
    pub new: u64,
}

/// A GC barrier: data at or after `ts` is kept from GC while the barrier lives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcBarrier {
    /// The barrier's id, chosen by whoever set it.
    pub id: String,
    /// The timestamp GC must not pass.
    pub ts: u64,
    /// The time left before it expires as PD reported it (whole seconds); `None` never
    /// expires.
    pub ttl: Option<Duration>,
}

impl GcBarrier {
    fn new(id: String, ts: u64, ttl_seconds: i64) -> Self {
        GcBarrier {
            id,
            ts,
            ttl: ttl_from_seconds(ttl_seconds),
        }
    }
}

/// The GC state of the client's scope ([`PdClient::get_gc_state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcState {
    /// The keyspace the state belongs to (`NULL_KEYSPACE_ID`, `u32::MAX`, for the unified state).
    pub keyspace_id: u32,
    /// Whether the keyspace runs GC by itself.
    pub is_keyspace_level: bool,
    /// No transaction may start (or read) below it.
    pub txn_safe_point: u64,
    /// Versions below it may be removed.
    pub gc_safe_point: u64,
    /// The scope's GC barriers.
    pub barriers: Vec<GcBarrier>,
    /// Cluster-wide barriers, which hold every keyspace back.
    pub global_barriers: Vec<GcBarrier>,
}

/// PD's reading of a TTL in seconds: `i64::MAX` is forever, below zero is expired.
fn ttl_from_seconds(seconds: i64) -> Option<Duration> {
    if seconds == i64::MAX {
        return None;
    }
    Some(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

/// A TTL in whole seconds, rounded up (PD's `roundUpDurationToSeconds`); `None` is forever.
fn ttl_to_seconds(ttl: Option<Duration>) -> i64 {
    match ttl {
        None => i64::MAX,
        Some(d) => {
            let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
            i64::try_from(secs).unwrap_or(i64::MAX)
        }
    }
}

impl PdClient {
    #[cfg(any(test, feature = "unstable-internals"))]
    /// The GC scope of this client: its keyspace, or the whole cluster.
    fn gc_keyspace_id(&self) -> u32 {
        self.keyspace().map_or(NULL_KEYSPACE_ID, |k| k.id)
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Moves the txn safe point towards `target` as far as the GC barriers allow (never
    /// backwards). The first step of a GC run.
    pub async fn advance_txn_safe_point(&self, target: u64) -> Result<TxnSafePointAdvance> {
        self.advance_txn_safe_point_in(self.gc_keyspace_id(), target)
            .await
    }

    /// [`advance_txn_safe_point`](Self::advance_txn_safe_point) on the GC state of keyspace `keyspace_id`
    /// ([`NULL_KEYSPACE_ID`] for the unified state), whatever the client's keyspace: what
    /// `Cluster`, which serves clients of every keyspace, calls.
    pub(crate) async fn advance_txn_safe_point_in(
        &self,
        keyspace_id: u32,
        target: u64,
    ) -> Result<TxnSafePointAdvance> {
        let (header, scope) = (self.core().header(), keyspace_scope(keyspace_id));
        let resp = self
            .core()
            .call("AdvanceTxnSafePoint", |ch| {
                let req = pdpb::AdvanceTxnSafePointRequest {
                    header: header.clone(),
                    keyspace_scope: scope,
                    target,
                };
                async move { PdGrpc::new(ch).advance_txn_safe_point(req).await }
            })
            .await?;
        Ok(TxnSafePointAdvance {
            old: resp.old_txn_safe_point,
            target,
            new: resp.new_txn_safe_point,
            blocker_description: resp.blocker_description,
        })
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Moves the GC safe point to `target`, which must not pass the txn safe point. The last
    /// step of a GC run, once every lock below the txn safe point is resolved.
    pub async fn advance_gc_safe_point(&self, target: u64) -> Result<GcSafePointAdvance> {
        self.advance_gc_safe_point_in(self.gc_keyspace_id(), target)
            .await
    }

    /// [`advance_gc_safe_point`](Self::advance_gc_safe_point) on the GC state of keyspace `keyspace_id`
    /// ([`NULL_KEYSPACE_ID`] for the unified state), whatever the client's keyspace: what
    /// `Cluster`, which serves clients of every keyspace, calls.
    pub(crate) async fn advance_gc_safe_point_in(
        &self,
        keyspace_id: u32,
        target: u64,
    ) -> Result<GcSafePointAdvance> {
        let (header, scope) = (self.core().header(), keyspace_scope(keyspace_id));
        let resp = self
            .core()
            .call("AdvanceGCSafePoint", |ch| {
                let req = pdpb::AdvanceGcSafePointRequest {
                    header: header.clone(),
                    keyspace_scope: scope,
                    target,
                };
                async move { PdGrpc::new(ch).advance_gc_safe_point(req).await }
            })
            .await?;
        Ok(GcSafePointAdvance {
            old: resp.old_gc_safe_point,
            target,
            new: resp.new_gc_safe_point,
        })
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The legacy `UpdateGCSafePoint` on the cluster-wide state, which client-go's `GC` still
    /// uses as its last step; returns the GC safe point after the call.
    pub async fn update_gc_safe_point(&self, safe_point: u64) -> Result<u64> {
        let header = self.core().header();
        let resp = self
            .core()
            .call("UpdateGCSafePoint", |ch| {
                let req = pdpb::UpdateGcSafePointRequest {
                    header: header.clone(),
                    safe_point,
                };
                async move { PdGrpc::new(ch).update_gc_safe_point(req).await }
            })
            .await?;
        Ok(resp.new_safe_point)
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Sets (or replaces) a GC barrier at `ts` for `ttl` (rounded up to whole seconds; `None`
    /// never expires). PD refuses a barrier below the current txn safe point.
    pub async fn set_gc_barrier(
        &self,
        id: &str,
        ts: u64,
        ttl: Option<Duration>,
    ) -> Result<GcBarrier> {
        self.set_gc_barrier_in(self.gc_keyspace_id(), id, ts, ttl)
            .await
    }

    /// [`set_gc_barrier`](Self::set_gc_barrier) on the GC state of keyspace `keyspace_id`.
    pub(crate) async fn set_gc_barrier_in(
        &self,
        keyspace_id: u32,
        id: &str,
        ts: u64,
        ttl: Option<Duration>,
    ) -> Result<GcBarrier> {
        let (header, scope) = (self.core().header(), keyspace_scope(keyspace_id));
        let resp = self
            .core()
            .call("SetGCBarrier", |ch| {
                let req = pdpb::SetGcBarrierRequest {
                    header: header.clone(),
                    keyspace_scope: scope,
                    barrier_id: id.to_owned(),
                    barrier_ts: ts,
                    ttl_seconds: ttl_to_seconds(ttl),
                };
                async move { PdGrpc::new(ch).set_gc_barrier(req).await }
            })
            .await?;
        Ok(resp.new_barrier_info.map_or_else(
            || GcBarrier {
                id: id.to_owned(),
                ts,
                ttl,
            },
            |b| GcBarrier::new(b.barrier_id, b.barrier_ts, b.ttl_seconds),
        ))
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Deletes a GC barrier; returns it, or `None` if there was none with this id.
    pub async fn delete_gc_barrier(&self, id: &str) -> Result<Option<GcBarrier>> {
        self.delete_gc_barrier_in(self.gc_keyspace_id(), id).await
    }

    /// [`delete_gc_barrier`](Self::delete_gc_barrier) on the GC state of keyspace `keyspace_id`
    /// ([`NULL_KEYSPACE_ID`] for the unified state), whatever the client's keyspace: what
    /// `Cluster`, which serves clients of every keyspace, calls.
    pub(crate) async fn delete_gc_barrier_in(
        &self,
        keyspace_id: u32,
        id: &str,
    ) -> Result<Option<GcBarrier>> {
        let (header, scope) = (self.core().header(), keyspace_scope(keyspace_id));
        let resp = self
            .core()
            .call("DeleteGCBarrier", |ch| {
                let req = pdpb::DeleteGcBarrierRequest {
                    header: header.clone(),
                    keyspace_scope: scope,
                    barrier_id: id.to_owned(),
                };
                async move { PdGrpc::new(ch).delete_gc_barrier(req).await }
            })
            .await?;
        Ok(resp
            .deleted_barrier_info
            .map(|b| GcBarrier::new(b.barrier_id, b.barrier_ts, b.ttl_seconds)))
    }

    /// Sets a cluster-wide GC barrier, which holds back every keyspace's GC.
    pub async fn set_global_gc_barrier(
        &self,
        id: &str,
        ts: u64,
        ttl: Option<Duration>,
    ) -> Result<GcBarrier> {
        let header = self.core().header();
        let resp = self
            .core()
            .call("SetGlobalGCBarrier", |ch| {
                let req = pdpb::SetGlobalGcBarrierRequest {
                    header: header.clone(),
                    barrier_id: id.to_owned(),
                    barrier_ts: ts,
                    ttl_seconds: ttl_to_seconds(ttl),
                };
                async move { PdGrpc::new(ch).set_global_gc_barrier(req).await }
            })
            .await?;
        Ok(resp.new_barrier_info.map_or_else(
            || GcBarrier {
                id: id.to_owned(),
                ts,
                ttl,
            },
            |b| GcBarrier::new(b.barrier_id, b.barrier_ts, b.ttl_seconds),
        ))
    }

    /// Deletes a cluster-wide GC barrier; returns it, or `None` if there was none.
    pub async fn delete_global_gc_barrier(&self, id: &str) -> Result<Option<GcBarrier>> {
        let header = self.core().header();
        let resp = self
            .core()
            .call("DeleteGlobalGCBarrier", |ch| {
                let req = pdpb::DeleteGlobalGcBarrierRequest {
                    header: header.clone(),
                    barrier_id: id.to_owned(),
                };
                async move { PdGrpc::new(ch).delete_global_gc_barrier(req).await }
            })
            .await?;
        Ok(resp
            .deleted_barrier_info
            .map(|b| GcBarrier::new(b.barrier_id, b.barrier_ts, b.ttl_seconds)))
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The GC state of the client's scope, with its barriers and the global barriers.
    pub async fn get_gc_state(&self) -> Result<GcState> {
        self.get_gc_state_in(self.gc_keyspace_id()).await
    }

    /// [`get_gc_state`](Self::get_gc_state) of keyspace `keyspace_id`.
    pub(crate) async fn get_gc_state_in(&self, keyspace_id: u32) -> Result<GcState> {
        let (header, scope) = (self.core().header(), keyspace_scope(keyspace_id));
        let resp = self
            .core()
            .call("GetGCState", |ch| {
                let req = pdpb::GetGcStateRequest {
                    header: header.clone(),
                    keyspace_scope: scope,
                    exclude_gc_barriers: false,
                    include_global_gc_barriers: true,
                };
                async move { PdGrpc::new(ch).get_gc_state(req).await }
            })
            .await?;
        let state = resp.gc_state.unwrap_or_default();
        let keyspace_id = match state.keyspace_scope.and_then(|s| s.keyspace) {
            Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(id)) => id,
            _ => NULL_KEYSPACE_ID,
        };
        Ok(GcState {
            keyspace_id,
            is_keyspace_level: state.is_keyspace_level_gc,
            txn_safe_point: state.txn_safe_point,
            gc_safe_point: state.gc_safe_point,
            barriers: state
                .gc_barriers
                .into_iter()
                .map(|b| GcBarrier::new(b.barrier_id, b.barrier_ts, b.ttl_seconds))
                .collect(),
            global_barriers: resp
                .global_gc_barriers
                .map(|g| g.barriers)
                .unwrap_or_default()
                .into_iter()
                .map(|b| GcBarrier::new(b.barrier_id, b.barrier_ts, b.ttl_seconds))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounding_follows_pd_client() {
        assert_eq!(ttl_to_seconds(None), i64::MAX);
        assert_eq!(ttl_to_seconds(Some(Duration::from_millis(1500))), 2);
        assert_eq!(ttl_to_seconds(Some(Duration::from_secs(3))), 3);
        assert_eq!(ttl_to_seconds(Some(Duration::ZERO)), 0);
        assert_eq!(ttl_to_seconds(Some(Duration::MAX)), i64::MAX);
        assert_eq!(ttl_from_seconds(i64::MAX), None);
        assert_eq!(ttl_from_seconds(-5), Some(Duration::ZERO));
        assert_eq!(ttl_from_seconds(7), Some(Duration::from_secs(7)));
    }
}
