//! GC states as PD keeps them: per keyspace scope a txn safe point, a GC safe point and GC
//! barriers, plus cluster-wide global GC barriers.
//!
//! Who calls it: the `pdpb.PD` GC handlers in [`super::service`], under the state lock. Every
//! function is synchronous and returns PD's error text; the handler decides whether the error
//! goes into the response header (the new GC API) or becomes a gRPC status (the legacy API).
//!
//! Follows tikv/pd `pkg/gc/gc_state_manager.go`, which keeps these invariants: both safe points
//! only grow; `gc_safe_point <= txn_safe_point`; advancing the txn safe point never passes a live
//! GC barrier or global GC barrier (but never moves backwards either). Barrier expiry is lazy, as
//! in PD: an expired barrier stops blocking at once and is deleted by the next txn safe point
//! advance. Expiration times are rounded up to whole seconds, as PD stores them. The "TiDB min
//! start ts" blockers of old TiDB versions live in etcd keys this mock does not have.
//!
//! Keyspaces: NullKeyspace (`0xFFFFFFFF`) holds the unified GC state; a keyspace whose config
//! says `gc_management_type = keyspace_level` has its own. User APIs (barriers, GetGCState) on
//! other keyspaces act on the unified state; internal APIs (advancing safe points) refuse them.

use std::collections::BTreeMap;

use tikv_proto::keyspacepb;

use crate::cluster::KeyspaceState;

/// The keyspace id meaning "no keyspace" (API V1, or unified GC).
pub(crate) const NULL_KEYSPACE_ID: u32 = 0xFFFF_FFFF;
/// Keyspace ids use 24 bits; an id with other bits set is treated as NullKeyspace.
const VALID_KEYSPACE_ID_MASK: u32 = 0x00FF_FFFF;
/// The service id of the GC worker in the legacy service safe point API.
pub(crate) const GC_WORKER_SERVICE_ID: &str = "gc_worker";
/// The service id BR uses; on NullKeyspace it maps to a global GC barrier.
pub(crate) const NATIVE_BR_SERVICE_ID: &str = "native_br";
/// Keyspace config key selecting the GC management type.
const GC_MANAGEMENT_TYPE: &str = "gc_management_type";
/// The config value enabling keyspace-level GC.
const KEYSPACE_LEVEL_GC: &str = "keyspace_level";

/// A failure of a GC operation, with PD's error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GcError {
    /// A GC barrier below the scope's txn safe point (the legacy service safe point API ignores
    /// this one).
    BarrierBehindTxnSafePoint(String),
    /// A global GC barrier below some keyspace's txn safe point (ignored by the legacy API too).
    GlobalBarrierBehindTxnSafePoint(String),
    /// Any other failure.
    Other(String),
}

impl GcError {
    /// PD's error text.
    pub(crate) fn message(&self) -> &str {
        match self {
            GcError::BarrierBehindTxnSafePoint(m)
            | GcError::GlobalBarrierBehindTxnSafePoint(m)
            | GcError::Other(m) => m,
        }
    }
}

/// PD's `ErrInvalidArgument` text. PD formats the rejected TTL as a Go duration, which for a
/// non-positive number of seconds is always `0s`.
fn invalid_argument(what: &str, value: &str) -> GcError {
    GcError::Other(format!(
        "[PD:common:ErrInvalidArgument]invalid argument for {what}: {value}"
    ))
}

/// A GC barrier (or global GC barrier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Barrier {
    pub(crate) id: String,
    pub(crate) ts: u64,
    /// Expiration in milliseconds since the epoch, rounded up to a whole second; `None` never
    /// expires.
    pub(crate) expires_at_ms: Option<u64>,
}

impl Barrier {
    fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| now_ms > at)
    }

    /// The remaining TTL in whole seconds as PD reports it: `i64::MAX` for "never", 0 once
    /// expired.
    pub(crate) fn ttl_seconds(&self, now_ms: u64) -> i64 {
        match self.expires_at_ms {
            None => i64::MAX,
            Some(at) => (at.saturating_sub(now_ms) / 1000) as i64,
        }
    }

    /// PD's description of a blocking barrier (`GCBarrier { ... }` / `GlobalGCBarrier { ... }`).
    fn describe(&self, kind: &str) -> String {
        let expiration = self
            .expires_at_ms
            .map_or_else(|| "<nil>".to_owned(), super::go_time_string);
        format!(
            "{kind} {{ BarrierID: {}, BarrierTS: {}, ExpirationTime: {} }}",
            go_quote(&self.id),
            self.ts,
            go_quote(&expiration)
        )
    }
}

/// Go's `%+q`: a double-quoted string with ASCII-only escapes.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// When a barrier set now with `ttl_seconds` expires: never if the TTL does not fit a Go
/// `time.Duration` (PD saturates it to "forever"), else rounded up to the next whole second.
fn expiration(now_ms: u64, ttl_seconds: i64) -> Option<u64> {
    let secs = u64::try_from(ttl_seconds).unwrap_or(0);
    if u128::from(secs) * 1_000_000_000 > i64::MAX as u128 {
        return None;
    }
    let at = now_ms + secs * 1000;
    Some(at.div_ceil(1000) * 1000)
}

/// The GC state of one scope (NullKeyspace or a keyspace with keyspace-level GC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ScopeState {
    pub(crate) txn_safe_point: u64,
    pub(crate) gc_safe_point: u64,
    /// Barriers by id (PD lists them in key order, i.e. by id).
    pub(crate) barriers: BTreeMap<String, Barrier>,
}

/// The result of advancing a txn safe point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxnAdvance {
    pub(crate) old: u64,
    pub(crate) new: u64,
    /// Non-empty when something held the txn safe point below the target.
    pub(crate) blocker_description: String,
    /// The id the legacy service safe point API reports for the blocker.
    pub(crate) blocker_id: String,
}

/// Every GC state of the cluster.
#[derive(Debug, Default)]
pub(crate) struct GcState {
    scopes: BTreeMap<u32, ScopeState>,
    global_barriers: BTreeMap<String, Barrier>,
}

/// Resolves the scope a GC request acts on, as PD's `redirectKeyspace`: ids outside the 24-bit
/// range are NullKeyspace; unknown keyspaces are an error; a keyspace without keyspace-level GC
/// is NullKeyspace for user APIs and an error for the internal ones (`user_api == false`).
pub(crate) fn redirect(
    keyspaces: &BTreeMap<u32, KeyspaceState>,
    keyspace_id: u32,
    user_api: bool,
) -> Result<u32, GcError> {
    if keyspace_id & !VALID_KEYSPACE_ID_MASK != 0 {
        return Ok(NULL_KEYSPACE_ID);
    }
    let Some(keyspace) = keyspaces.get(&keyspace_id) else {
        return Err(GcError::Other(
            "[PD:keyspace:ErrKeyspaceNotFound]keyspace does not exist".to_owned(),
        ));
    };
    if is_keyspace_level(&keyspace.meta) {
        return Ok(keyspace_id);
    }
    if user_api {
        return Ok(NULL_KEYSPACE_ID);
    }
    Err(GcError::Other(format!(
        "[PD:gc:ErrGCOnInvalidKeyspace]trying to manage GC in keyspace {} (id: {keyspace_id}) \
         where keyspace level GC is not enabled",
        keyspace.meta.name
    )))
}

/// Whether a keyspace manages its GC by itself.
pub(crate) fn is_keyspace_level(meta: &keyspacepb::KeyspaceMeta) -> bool {
    meta.config.get(GC_MANAGEMENT_TYPE).map(String::as_str) == Some(KEYSPACE_LEVEL_GC)
}

impl GcState {
    /// The state of a scope (all zero before anything was set).
    pub(crate) fn scope(&self, scope: u32) -> ScopeState {
        self.scopes.get(&scope).cloned().unwrap_or_default()
    }

    fn scope_mut(&mut self, scope: u32) -> &mut ScopeState {
        self.scopes.entry(scope).or_default()
    }

    /// Global GC barriers, by id.
    pub(crate) fn global_barriers(&self) -> impl Iterator<Item = &Barrier> {
        self.global_barriers.values()
    }

    /// Advances the GC safe point of a scope. A target below the current value is an error,
    /// unless `compatible` (the legacy `UpdateGCSafePoint`), which keeps and returns the current
    /// value instead. A target above the txn safe point is always an error.
    pub(crate) fn advance_gc_safe_point(
        &mut self,
        scope: u32,
        target: u64,
        compatible: bool,
    ) -> Result<(u64, u64), GcError> {
        let state = self.scope_mut(scope);
        let old = state.gc_safe_point;
        if target < old {
            if compatible {
                return Ok((old, old));
            }
            return Err(GcError::Other(format!(
                "[PD:gc:ErrDecreasingGCSafePoint]trying to update GC safe point to a smaller \
                 value, current value: {old}, given: {target}"
            )));
        }
        if target > state.txn_safe_point {
            return Err(GcError::Other(format!(
                "[PD:gc:ErrGCSafePointExceedsTxnSafePoint]trying to update GC safe point to a \
                 too large value that exceeds the txn safe point, current value: {old}, given: \
                 {target}, current txn safe point: {}",
                state.txn_safe_point
            )));
        }
        state.gc_safe_point = target;
        Ok((old, target))
    }

    /// Advances the txn safe point of a scope towards `target`, held back by the lowest live
    /// GC barrier of the scope and the lowest live global barrier. Expired barriers are deleted.
    pub(crate) fn advance_txn_safe_point(
        &mut self,
        scope: u32,
        target: u64,
        now_ms: u64,
    ) -> Result<TxnAdvance, GcError> {
        let old = self.scope(scope).txn_safe_point;
        if target < old {
            return Err(GcError::Other(format!(
                "[PD:gc:ErrDecreasingTxnSafePoint]trying to update txn safe point to a smaller \
                 value, current value: {old}, given: {target}"
            )));
        }
        let mut min_blocker = target;
        let mut blocker: Option<(String, String)> = None;

        let state = self.scope_mut(scope);
        state.barriers.retain(|_, b| !b.is_expired(now_ms));
        for barrier in state.barriers.values() {
            if barrier.ts < min_blocker {
                min_blocker = barrier.ts;
                blocker = Some((barrier.id.clone(), barrier.describe("GCBarrier")));
            }
        }
        self.global_barriers.retain(|_, b| !b.is_expired(now_ms));
        for barrier in self.global_barriers.values() {
            if barrier.ts < min_blocker {
                min_blocker = barrier.ts;
                blocker = Some((barrier.id.clone(), barrier.describe("GlobalGCBarrier")));
            }
        }
        let new = old.max(min_blocker);
        self.scope_mut(scope).txn_safe_point = new;
        let (blocker_id, blocker_description) = blocker.unwrap_or_default();
        Ok(TxnAdvance {
            old,
            new,
            blocker_description,
            blocker_id,
        })
    }

    /// Sets (or replaces) a GC barrier of a scope. The TTL must already be known positive.
    pub(crate) fn set_barrier(
        &mut self,
        scope: u32,
        id: &str,
        ts: u64,
        ttl_seconds: i64,
        now_ms: u64,
    ) -> Result<Barrier, GcError> {
        check_barrier_id(id)?;
        let state = self.scope_mut(scope);
        if ts < state.txn_safe_point {
            return Err(GcError::BarrierBehindTxnSafePoint(format!(
                "[PD:gc:ErrGCBarrierTSBehindTxnSafePoint]trying to set a GC barrier on ts {ts} \
                 which is already behind the txn safe point {}",
                state.txn_safe_point
            )));
        }
        let barrier = Barrier {
            id: id.to_owned(),
            ts,
            expires_at_ms: expiration(now_ms, ttl_seconds),
        };
        state.barriers.insert(id.to_owned(), barrier.clone());
        Ok(barrier)
    }

    /// Deletes a GC barrier of a scope; returns it if it existed.
    pub(crate) fn delete_barrier(
        &mut self,
        scope: u32,
        id: &str,
    ) -> Result<Option<Barrier>, GcError> {
        check_barrier_id(id)?;
        Ok(self
            .scopes
            .get_mut(&scope)
            .and_then(|s| s.barriers.remove(id)))
    }

    /// Sets (or replaces) a global GC barrier. It must not be below the txn safe point of any
    /// enabled keyspace or of NullKeyspace. The TTL must already be known positive.
    pub(crate) fn set_global_barrier(
        &mut self,
        keyspaces: &BTreeMap<u32, KeyspaceState>,
        id: &str,
        ts: u64,
        ttl_seconds: i64,
        now_ms: u64,
    ) -> Result<Barrier, GcError> {
        let (max_txn, owner) = self.max_txn_safe_point(keyspaces);
        if ts < max_txn {
            let owner = match owner {
                None => "<null_keyspace>".to_owned(),
                Some((name, keyspace_id)) => format!("{{ name: {name:?}, id: {keyspace_id} }}"),
            };
            return Err(GcError::GlobalBarrierBehindTxnSafePoint(format!(
                "[PD:gc:ErrGlobalGCBarrierTSBehindTxnSafePoint]trying to set a global GC \
                 barrier on ts {ts} which is already behind the txn safe point {max_txn} of \
                 keyspace {owner}"
            )));
        }
        let barrier = Barrier {
            id: id.to_owned(),
            ts,
            expires_at_ms: expiration(now_ms, ttl_seconds),
        };
        self.global_barriers.insert(id.to_owned(), barrier.clone());
        Ok(barrier)
    }

    /// Deletes a global GC barrier; returns it if it existed.
    pub(crate) fn delete_global_barrier(&mut self, id: &str) -> Option<Barrier> {
        self.global_barriers.remove(id)
    }

    /// The highest txn safe point among enabled keyspaces and NullKeyspace, and the keyspace
    /// holding it (`None` for NullKeyspace).
    pub(crate) fn max_txn_safe_point(
        &self,
        keyspaces: &BTreeMap<u32, KeyspaceState>,
    ) -> (u64, Option<(String, u32)>) {
        let mut max = 0;
        let mut owner = None;
        for (id, keyspace) in keyspaces {
            if keyspace.meta.state != keyspacepb::KeyspaceState::Enabled as i32 {
                continue;
            }
            let txn = self.scopes.get(id).map_or(0, |s| s.txn_safe_point);
            if txn > max {
                max = txn;
                owner = Some((keyspace.meta.name.clone(), *id));
            }
        }
        let null = self.scope(NULL_KEYSPACE_ID).txn_safe_point;
        if null > max {
            max = null;
            owner = None;
        }
        (max, owner)
    }
}

/// PD refuses empty barrier ids and the id reserved for the GC worker.
fn check_barrier_id(id: &str) -> Result<(), GcError> {
    if id == GC_WORKER_SERVICE_ID {
        return Err(GcError::Other(format!(
            "[PD:gc:ErrReservedGCBarrierID]trying to set a GC barrier with a barrier ID that is \
             reserved: {id}"
        )));
    }
    if id.is_empty() {
        return Err(invalid_argument("barrierID", ""));
    }
    Ok(())
}

/// PD's check of a requested TTL (`ttl <= 0` is refused by the barrier APIs).
pub(crate) fn check_ttl(ttl_seconds: i64) -> Result<(), GcError> {
    if ttl_seconds <= 0 {
        return Err(invalid_argument("ttl", "0s"));
    }
    Ok(())
}

/// PD's check of a global barrier id.
pub(crate) fn check_global_barrier_id(id: &str) -> Result<(), GcError> {
    if id.is_empty() {
        return Err(invalid_argument("barrierID", ""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn keyspaces() -> BTreeMap<u32, KeyspaceState> {
        let mut map = BTreeMap::new();
        for (id, name, level) in [(0, "DEFAULT", false), (1, "ks1", true)] {
            let mut meta = keyspacepb::KeyspaceMeta {
                keyspace: Some(keyspacepb::keyspace_meta::Keyspace::Id(id)),
                name: name.to_owned(),
                ..Default::default()
            };
            if level {
                meta.config
                    .insert(GC_MANAGEMENT_TYPE.to_owned(), KEYSPACE_LEVEL_GC.to_owned());
            }
            map.insert(id, KeyspaceState { id, meta });
        }
        map
    }

    #[test]
    fn scopes_redirect_like_pd() {
        let ks = keyspaces();
        assert_eq!(redirect(&ks, NULL_KEYSPACE_ID, false), Ok(NULL_KEYSPACE_ID));
        assert_eq!(redirect(&ks, 0x0100_0000, false), Ok(NULL_KEYSPACE_ID));
        assert_eq!(redirect(&ks, 0, true), Ok(NULL_KEYSPACE_ID));
        assert!(
            redirect(&ks, 0, false)
                .unwrap_err()
                .message()
                .contains("ErrGCOnInvalidKeyspace]trying to manage GC in keyspace DEFAULT (id: 0)")
        );
        assert_eq!(redirect(&ks, 1, false), Ok(1));
        assert!(
            redirect(&ks, 7, true)
                .unwrap_err()
                .message()
                .ends_with("keyspace does not exist")
        );
    }

    #[test]
    fn txn_safe_point_is_held_by_live_barriers_only() {
        let mut gc = GcState::default();
        let s = NULL_KEYSPACE_ID;
        gc.set_barrier(s, "br", 100, 10, NOW).unwrap();
        let r = gc.advance_txn_safe_point(s, 200, NOW).unwrap();
        assert_eq!((r.old, r.new), (0, 100));
        assert_eq!(r.blocker_id, "br");
        assert!(
            r.blocker_description
                .starts_with("GCBarrier { BarrierID: \"br\", BarrierTS: 100, ExpirationTime: \""),
            "{}",
            r.blocker_description
        );
        // Decreasing is an error; equal is fine.
        assert!(gc.advance_txn_safe_point(s, 99, NOW).is_err());
        // The barrier expires strictly after its (rounded) expiration time.
        assert_eq!(
            gc.advance_txn_safe_point(s, 200, NOW + 10_000).unwrap().new,
            100
        );
        let r = gc.advance_txn_safe_point(s, 200, NOW + 10_001).unwrap();
        assert_eq!(r.new, 200);
        assert!(r.blocker_description.is_empty());
        assert!(gc.scope(s).barriers.is_empty());
    }

    #[test]
    fn global_barriers_block_and_are_checked_against_every_keyspace() {
        let ks = keyspaces();
        let mut gc = GcState::default();
        gc.advance_txn_safe_point(1, 50, NOW).unwrap();
        let e = gc
            .set_global_barrier(&ks, "g", 40, i64::MAX, NOW)
            .unwrap_err();
        assert!(matches!(e, GcError::GlobalBarrierBehindTxnSafePoint(_)));
        assert!(
            e.message()
                .ends_with("of keyspace { name: \"ks1\", id: 1 }")
        );
        let g = gc.set_global_barrier(&ks, "g", 60, i64::MAX, NOW).unwrap();
        assert_eq!(g.ttl_seconds(NOW), i64::MAX);
        let r = gc
            .advance_txn_safe_point(NULL_KEYSPACE_ID, 100, NOW)
            .unwrap();
        assert_eq!(r.new, 60);
        assert!(r.blocker_description.starts_with("GlobalGCBarrier {"));
        assert!(
            r.blocker_description
                .ends_with("ExpirationTime: \"<nil>\" }")
        );
        assert!(gc.delete_global_barrier("g").is_some());
        assert_eq!(
            gc.advance_txn_safe_point(NULL_KEYSPACE_ID, 100, NOW)
                .unwrap()
                .new,
            100
        );
    }

    #[test]
    fn gc_safe_point_rules_strict_and_compatible() {
        let mut gc = GcState::default();
        let s = NULL_KEYSPACE_ID;
        gc.advance_txn_safe_point(s, 100, NOW).unwrap();
        assert_eq!(gc.advance_gc_safe_point(s, 80, false), Ok((0, 80)));
        assert!(
            gc.advance_gc_safe_point(s, 70, false)
                .unwrap_err()
                .message()
                .contains("ErrDecreasingGCSafePoint")
        );
        assert_eq!(gc.advance_gc_safe_point(s, 70, true), Ok((80, 80)));
        assert!(
            gc.advance_gc_safe_point(s, 101, true)
                .unwrap_err()
                .message()
                .contains("exceeds the txn safe point, current value: 80, given: 101, current txn safe point: 100")
        );
    }

    #[test]
    fn barrier_ids_ttls_and_expiration_rounding() {
        let mut gc = GcState::default();
        let s = NULL_KEYSPACE_ID;
        assert!(gc.set_barrier(s, "", 1, 1, NOW).is_err());
        assert!(
            gc.set_barrier(s, GC_WORKER_SERVICE_ID, 1, 1, NOW)
                .unwrap_err()
                .message()
                .contains("reserved: gc_worker")
        );
        assert_eq!(
            check_ttl(0).unwrap_err().message(),
            "[PD:common:ErrInvalidArgument]invalid argument for ttl: 0s"
        );
        let b = gc.set_barrier(s, "x", 5, 3, NOW + 1).unwrap();
        assert_eq!(b.expires_at_ms, Some(NOW + 4_000));
        assert_eq!(b.ttl_seconds(NOW + 1), 3);
        assert_eq!(b.ttl_seconds(NOW + 5_000), 0);
        assert_eq!(expiration(NOW, 9_300_000_000), None);
        gc.advance_txn_safe_point(s, 5, NOW).unwrap();
        assert!(matches!(
            gc.set_barrier(s, "y", 4, 3, NOW),
            Err(GcError::BarrierBehindTxnSafePoint(_))
        ));
        assert_eq!(gc.delete_barrier(s, "x").unwrap().map(|b| b.ts), Some(5));
        assert_eq!(gc.delete_barrier(s, "x").unwrap(), None);
    }
}
