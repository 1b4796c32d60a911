//! PD's GC states and keyspace metadata for applications: the [`gc`] module's types and the
//! [`Cluster`] methods that read and move them.
//!
//! Who calls it: applications that hold data back from GC (backup, change-data capture, long
//! analytical reads: GC barriers), that run GC themselves (a GC worker advances the txn safe
//! point, resolves the locks below it, then advances the GC safe point), and that inspect a
//! keyspace before opening an API V2 client ([`Cluster::load_keyspace`]). Below it: the
//! crate-private PD client (`pd/gc.rs`, `pd/keyspace.rs`), whose `u64` timestamps and keyspace
//! ids become [`Timestamp`] and [`gc::GcScope`] here.
//!
//! A [`Cluster`] serves clients of every keyspace, so each call names its scope instead of
//! inheriting one, as tikv/pd's `GetGCStatesClient(keyspaceID)` and
//! `GetGCInternalController(keyspaceID)` do (`client/clients/gc/client.go`). client-go exposes
//! the same calls through `KVStore.GetPDClient()`; its `KVStore.GC` (`tikv/gc.go`) is the GC
//! worker sequence the safe-point methods are the steps of, and its txn-safe-point cache
//! (`tikv/kv.go`: `loadTxnSafePoint`, `UpdateTxnSafePointCache`) reads [`gc::GcState`].

use std::time::Duration;

use crate::pd::NULL_KEYSPACE_ID;
use crate::{Cluster, Error, Result, Timestamp};

pub use crate::pd::{KeyspaceMeta, KeyspaceState};

/// PD's GC states: safe points and GC barriers, per keyspace scope.
///
/// Two safe points order GC (tikv/pd `gc_state_manager.go`): no transaction may start or read
/// below the *txn safe point*; versions below the *GC safe point* may be removed. Both only
/// grow, and the GC safe point never passes the txn safe point. A *GC barrier* (set by whoever
/// must keep old versions readable) holds the txn safe point back at its timestamp until it is
/// deleted or its TTL runs out; a *global* GC barrier does so for every keyspace.
///
/// The calls are methods of [`Cluster`]; this module holds what they take and return.
///
/// ```no_run
/// # async fn example() -> tikv_client::Result<()> {
/// use std::time::{Duration, SystemTime};
/// use tikv_client::gc::GcScope;
/// use tikv_client::{Cluster, Config, Timestamp};
///
/// let cluster = Cluster::connect(["127.0.0.1:2379"], Config::default()).await?;
/// // Keep everything from now on readable for ten minutes.
/// let now = Timestamp::from_system_time(SystemTime::now());
/// cluster
///     .set_gc_barrier(GcScope::Unified, "my-backup", now, Duration::from_secs(600))
///     .await?;
/// let state = cluster.gc_state(GcScope::Unified).await?;
/// assert!(state.txn_safe_point <= now);
/// # Ok(())
/// # }
/// ```
pub mod gc {
    use std::time::Duration;

    use crate::pd;
    use crate::{Error, Timestamp};

    use crate::KeyspaceMeta;

    /// The TTL of a GC barrier that never expires (PD's `math.MaxInt64` duration), as given to
    /// [`Cluster::set_gc_barrier`](crate::Cluster::set_gc_barrier) and read in [`GcBarrier::ttl`].
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster, ts: tikv_client::Timestamp)
    /// # -> tikv_client::Result<()> {
    /// use tikv_client::gc::{GcScope, NEVER_EXPIRES};
    ///
    /// // Held until deleted.
    /// let barrier = cluster.set_gc_barrier(GcScope::Unified, "br", ts, NEVER_EXPIRES).await?;
    /// assert_eq!(barrier.ttl, NEVER_EXPIRES);
    /// cluster.delete_gc_barrier(GcScope::Unified, "br").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub const NEVER_EXPIRES: Duration = Duration::MAX;

    /// Whose GC state a call reads or moves.
    ///
    /// PD keeps one *unified* GC state for the whole cluster (its `NullKeyspace`), shared by
    /// every keyspace that does not run GC by itself; a keyspace whose PD config says
    /// `gc_management_type = keyspace_level` has a state of its own. Reading a state or setting
    /// a barrier on a keyspace of the first kind acts on the unified state; advancing its safe
    /// points is refused ([`GcRefusal::KeyspaceLevelGcNotEnabled`]).
    ///
    /// ```
    /// use tikv_client::gc::GcScope;
    ///
    /// assert_ne!(GcScope::Unified, GcScope::Keyspace(1));
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum GcScope {
        /// The unified GC state (PD's `NullKeyspace`, id `0xFFFFFFFF`): the whole cluster's
        /// under API V1, and every keyspace's without keyspace-level GC.
        Unified,
        /// The GC state of the keyspace with this id ([`KeyspaceMeta::id`]).
        Keyspace(u32),
    }

    impl GcScope {
        /// The scope of a keyspace loaded with
        /// [`Cluster::load_keyspace`](crate::Cluster::load_keyspace).
        ///
        /// ```no_run
        /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
        /// use tikv_client::gc::GcScope;
        ///
        /// let keyspace = cluster.load_keyspace("tenant-1").await?;
        /// let state = cluster.gc_state(GcScope::of(&keyspace)).await?;
        /// println!("{:?}: txn safe point {}", state.scope, state.txn_safe_point);
        /// # Ok(())
        /// # }
        /// ```
        pub fn of(keyspace: &KeyspaceMeta) -> GcScope {
            GcScope::Keyspace(keyspace.id)
        }

        /// PD's keyspace id of the scope.
        pub(crate) fn keyspace_id(self) -> u32 {
            match self {
                GcScope::Unified => super::NULL_KEYSPACE_ID,
                GcScope::Keyspace(id) => id,
            }
        }

        /// The scope of PD's keyspace id (ids outside the 24-bit range mean the unified state,
        /// as PD reads them).
        pub(crate) fn from_keyspace_id(id: u32) -> GcScope {
            if id > 0x00FF_FFFF {
                GcScope::Unified
            } else {
                GcScope::Keyspace(id)
            }
        }
    }

    /// The GC state of one scope ([`Cluster::gc_state`](crate::Cluster::gc_state)).
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// use tikv_client::gc::GcScope;
    ///
    /// let state = cluster.gc_state(GcScope::Unified).await?;
    /// assert!(state.gc_safe_point <= state.txn_safe_point);
    /// for barrier in state.barriers.iter().chain(&state.global_barriers) {
    ///     println!("{} holds GC at {}", barrier.id, barrier.ts);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug, Clone, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct GcState {
        /// The scope PD answered for: [`GcScope::Unified`] when the keyspace asked about shares
        /// the unified state.
        pub scope: GcScope,
        /// Whether the scope is a keyspace that runs GC by itself.
        pub is_keyspace_level: bool,
        /// No transaction may start or read below it.
        pub txn_safe_point: Timestamp,
        /// Versions below it may be removed; never above the txn safe point.
        pub gc_safe_point: Timestamp,
        /// The scope's GC barriers.
        pub barriers: Vec<GcBarrier>,
        /// The cluster-wide GC barriers, which hold back every keyspace.
        pub global_barriers: Vec<GcBarrier>,
    }

    impl From<pd::GcState> for GcState {
        fn from(s: pd::GcState) -> Self {
            GcState {
                scope: GcScope::from_keyspace_id(s.keyspace_id),
                is_keyspace_level: s.is_keyspace_level,
                txn_safe_point: Timestamp::from(s.txn_safe_point),
                gc_safe_point: Timestamp::from(s.gc_safe_point),
                barriers: s.barriers.into_iter().map(GcBarrier::from).collect(),
                global_barriers: s.global_barriers.into_iter().map(GcBarrier::from).collect(),
            }
        }
    }

    /// A GC barrier: versions at or after `ts` stay readable while it lives.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// use tikv_client::gc::{GcScope, NEVER_EXPIRES};
    ///
    /// let ts = cluster.gc_state(GcScope::Unified).await?.txn_safe_point;
    /// let barrier = cluster
    ///     .set_gc_barrier(GcScope::Unified, "cdc", ts, Duration::from_secs(60))
    ///     .await?;
    /// assert!(barrier.ttl <= Duration::from_secs(60) && barrier.ttl != NEVER_EXPIRES);
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug, Clone, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct GcBarrier {
        /// The barrier's id, chosen by whoever set it.
        pub id: String,
        /// The timestamp the txn safe point may not pass.
        pub ts: Timestamp,
        /// The time left before it expires, in whole seconds as PD reports it;
        /// [`NEVER_EXPIRES`] if it never does.
        pub ttl: Duration,
    }

    impl From<pd::GcBarrier> for GcBarrier {
        fn from(b: pd::GcBarrier) -> Self {
            GcBarrier {
                id: b.id,
                ts: Timestamp::from(b.ts),
                ttl: b.ttl.unwrap_or(NEVER_EXPIRES),
            }
        }
    }

    /// What [`Cluster::advance_txn_safe_point`](crate::Cluster::advance_txn_safe_point) did.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster, target: tikv_client::Timestamp)
    /// # -> tikv_client::Result<()> {
    /// use tikv_client::gc::GcScope;
    ///
    /// let advance = cluster.advance_txn_safe_point(GcScope::Unified, target).await?;
    /// if advance.new < advance.target {
    ///     println!("held back by {}", advance.blocker_description);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug, Clone, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct TxnSafePointAdvance {
        /// The txn safe point before the call.
        pub old: Timestamp,
        /// The value asked for.
        pub target: Timestamp,
        /// The txn safe point now: below `target` when a GC barrier held it back.
        pub new: Timestamp,
        /// What held it back, in PD's words; empty when it reached `target`.
        pub blocker_description: String,
    }

    impl From<pd::TxnSafePointAdvance> for TxnSafePointAdvance {
        fn from(a: pd::TxnSafePointAdvance) -> Self {
            TxnSafePointAdvance {
                old: Timestamp::from(a.old),
                target: Timestamp::from(a.target),
                new: Timestamp::from(a.new),
                blocker_description: a.blocker_description,
            }
        }
    }

    /// What [`Cluster::advance_gc_safe_point`](crate::Cluster::advance_gc_safe_point) did.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster, target: tikv_client::Timestamp)
    /// # -> tikv_client::Result<()> {
    /// use tikv_client::gc::GcScope;
    ///
    /// let advance = cluster.advance_gc_safe_point(GcScope::Unified, target).await?;
    /// assert_eq!(advance.new, target);
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug, Clone, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct GcSafePointAdvance {
        /// The GC safe point before the call.
        pub old: Timestamp,
        /// The value asked for.
        pub target: Timestamp,
        /// The GC safe point now.
        pub new: Timestamp,
    }

    impl From<pd::GcSafePointAdvance> for GcSafePointAdvance {
        fn from(a: pd::GcSafePointAdvance) -> Self {
            GcSafePointAdvance {
                old: Timestamp::from(a.old),
                target: Timestamp::from(a.target),
                new: Timestamp::from(a.new),
            }
        }
    }

    /// Why PD refused a GC call: the `PD:gc:` error code (or the keyspace lookup's) in the
    /// text of an [`Error::Pd`], read by [`GcRefusal::of`]. PD's own error codes
    /// (tikv/pd `errors.toml`), so that callers match a variant instead of PD's wording.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster, target: tikv_client::Timestamp)
    /// # -> tikv_client::Result<()> {
    /// use tikv_client::gc::{GcRefusal, GcScope};
    ///
    /// match cluster.advance_gc_safe_point(GcScope::Unified, target).await {
    ///     Ok(_) => {}
    ///     Err(e) if GcRefusal::of(&e) == Some(GcRefusal::GcSafePointExceedsTxnSafePoint) => {
    ///         // Advance the txn safe point (and resolve the locks below it) first.
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum GcRefusal {
        /// The GC safe point may not pass the txn safe point
        /// (`ErrGCSafePointExceedsTxnSafePoint`).
        GcSafePointExceedsTxnSafePoint,
        /// The GC safe point may not move backwards (`ErrDecreasingGCSafePoint`).
        DecreasingGcSafePoint,
        /// The txn safe point may not move backwards (`ErrDecreasingTxnSafePoint`).
        DecreasingTxnSafePoint,
        /// A GC barrier below the scope's txn safe point (`ErrGCBarrierTSBehindTxnSafePoint`).
        BarrierBehindTxnSafePoint,
        /// A global GC barrier below some keyspace's txn safe point
        /// (`ErrGlobalGCBarrierTSBehindTxnSafePoint`).
        GlobalBarrierBehindTxnSafePoint,
        /// Safe points advanced on a keyspace that shares the unified GC state
        /// (`ErrGCOnInvalidKeyspace`): use [`GcScope::Unified`].
        KeyspaceLevelGcNotEnabled,
        /// The barrier id is reserved for PD's own GC worker (`ErrReservedGCBarrierID`).
        ReservedBarrierId,
        /// PD does not know the keyspace (`ErrKeyspaceNotFound`).
        KeyspaceNotFound,
    }

    /// PD's error codes, in the `[PD:<component>:<code>]` prefix of its error text.
    const CODES: [(&str, GcRefusal); 8] = [
        (
            "[PD:gc:ErrGCSafePointExceedsTxnSafePoint]",
            GcRefusal::GcSafePointExceedsTxnSafePoint,
        ),
        (
            "[PD:gc:ErrDecreasingGCSafePoint]",
            GcRefusal::DecreasingGcSafePoint,
        ),
        (
            "[PD:gc:ErrDecreasingTxnSafePoint]",
            GcRefusal::DecreasingTxnSafePoint,
        ),
        (
            "[PD:gc:ErrGCBarrierTSBehindTxnSafePoint]",
            GcRefusal::BarrierBehindTxnSafePoint,
        ),
        (
            "[PD:gc:ErrGlobalGCBarrierTSBehindTxnSafePoint]",
            GcRefusal::GlobalBarrierBehindTxnSafePoint,
        ),
        (
            "[PD:gc:ErrGCOnInvalidKeyspace]",
            GcRefusal::KeyspaceLevelGcNotEnabled,
        ),
        (
            "[PD:gc:ErrReservedGCBarrierID]",
            GcRefusal::ReservedBarrierId,
        ),
        (
            "[PD:keyspace:ErrKeyspaceNotFound]",
            GcRefusal::KeyspaceNotFound,
        ),
    ];

    impl GcRefusal {
        /// The refusal an error of a GC call stands for; `None` for any other error (a
        /// timeout, a connection failure, PD's text without a GC code).
        ///
        /// ```
        /// use tikv_client::Error;
        /// use tikv_client::gc::GcRefusal;
        ///
        /// let err = Error::Pd {
        ///     message: "[PD:gc:ErrDecreasingTxnSafePoint]trying to update txn safe point to a \
        ///               smaller value, current value: 20, given: 10"
        ///         .to_owned(),
        /// };
        /// assert_eq!(GcRefusal::of(&err), Some(GcRefusal::DecreasingTxnSafePoint));
        /// assert_eq!(GcRefusal::of(&Error::Closed), None);
        /// ```
        pub fn of(err: &Error) -> Option<GcRefusal> {
            let Error::Pd { message } = err else {
                return None;
            };
            CODES
                .iter()
                .find(|(code, _)| message.contains(code))
                .map(|&(_, refusal)| refusal)
        }
    }
}

/// A barrier TTL for PD: rounded up to seconds there, [`gc::NEVER_EXPIRES`] as forever; zero
/// is refused here, as PD would.
fn barrier_ttl(ttl: Duration) -> Result<Option<Duration>> {
    if ttl.is_zero() {
        return Err(Error::invalid_argument(
            "a GC barrier's TTL must be positive (NEVER_EXPIRES keeps it until deleted)",
        ));
    }
    // Anything PD cannot tell from "forever" (`i64::MAX` seconds or more) is forever.
    let forever = Duration::from_secs(i64::MAX.unsigned_abs());
    Ok((ttl < forever).then_some(ttl))
}

/// The cluster's GC states and keyspaces (PD's GC states API and `LoadKeyspace`).
impl Cluster {
    /// The GC state of `scope`: both safe points, the scope's GC barriers and the global ones
    /// (PD `GetGCState`, what client-go's txn-safe-point cache loads).
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster, start_ts: tikv_client::Timestamp) {
    /// use tikv_client::gc::GcScope;
    ///
    /// let state = cluster.gc_state(GcScope::Unified).await.unwrap();
    /// if start_ts < state.txn_safe_point {
    ///     println!("a read at {start_ts} may miss versions GC removed");
    /// }
    /// # }
    /// ```
    pub async fn gc_state(&self, scope: gc::GcScope) -> Result<gc::GcState> {
        let state = self
            .pd_client()
            .get_gc_state_in(scope.keyspace_id())
            .await?;
        Ok(state.into())
    }

    /// Moves the txn safe point of `scope` towards `target`, as far as the GC barriers allow
    /// (PD `AdvanceTxnSafePoint`). The first step of a GC run; only the one GC worker of the
    /// cluster (or of a keyspace with keyspace-level GC) should call it.
    ///
    /// Errors: [`gc::GcRefusal::DecreasingTxnSafePoint`] for a target below the current value,
    /// [`gc::GcRefusal::KeyspaceLevelGcNotEnabled`] for a keyspace that shares the unified
    /// state (read through [`gc::GcRefusal::of`]).
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// use std::time::{Duration, SystemTime};
    /// use tikv_client::Timestamp;
    /// use tikv_client::gc::GcScope;
    ///
    /// // Keep ten minutes of history (PD's GC life time).
    /// let target = Timestamp::from_system_time(SystemTime::now() - Duration::from_secs(600));
    /// let advance = cluster.advance_txn_safe_point(GcScope::Unified, target).await?;
    /// // Resolve the locks below `advance.new`, then:
    /// cluster.advance_gc_safe_point(GcScope::Unified, advance.new).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn advance_txn_safe_point(
        &self,
        scope: gc::GcScope,
        target: Timestamp,
    ) -> Result<gc::TxnSafePointAdvance> {
        let advance = self
            .pd_client()
            .advance_txn_safe_point_in(scope.keyspace_id(), target.version())
            .await?;
        Ok(advance.into())
    }

    /// Moves the GC safe point of `scope` to `target` (PD `AdvanceGCSafePoint`), after which
    /// TiKV may remove the versions below it. The last step of a GC run, once every lock below
    /// the txn safe point is resolved.
    ///
    /// Errors: [`gc::GcRefusal::GcSafePointExceedsTxnSafePoint`] for a target above the txn
    /// safe point, [`gc::GcRefusal::DecreasingGcSafePoint`] for one below the current value,
    /// [`gc::GcRefusal::KeyspaceLevelGcNotEnabled`] as for
    /// [`advance_txn_safe_point`](Self::advance_txn_safe_point).
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// use tikv_client::gc::GcScope;
    ///
    /// // Catch the GC safe point up with the txn safe point.
    /// let state = cluster.gc_state(GcScope::Unified).await?;
    /// let advance = cluster
    ///     .advance_gc_safe_point(GcScope::Unified, state.txn_safe_point)
    ///     .await?;
    /// assert_eq!(advance.new, state.txn_safe_point);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn advance_gc_safe_point(
        &self,
        scope: gc::GcScope,
        target: Timestamp,
    ) -> Result<gc::GcSafePointAdvance> {
        let advance = self
            .pd_client()
            .advance_gc_safe_point_in(scope.keyspace_id(), target.version())
            .await?;
        Ok(advance.into())
    }

    /// Sets (or replaces) the GC barrier `id` of `scope` at `ts` for `ttl` (PD `SetGCBarrier`):
    /// the txn safe point will not pass `ts` until the barrier is deleted or expires. PD rounds
    /// the TTL up to whole seconds; [`NEVER_EXPIRES`](gc::NEVER_EXPIRES) keeps the barrier
    /// until deleted. Setting it again renews it.
    ///
    /// Errors: [`Error::InvalidArgument`] for a zero TTL (nothing sent);
    /// [`gc::GcRefusal::BarrierBehindTxnSafePoint`] for a `ts` below the txn safe point,
    /// [`gc::GcRefusal::ReservedBarrierId`] for PD's own id `gc_worker`.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster, backup_ts: tikv_client::Timestamp)
    /// # -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// use tikv_client::gc::GcScope;
    ///
    /// cluster
    ///     .set_gc_barrier(GcScope::Unified, "backup-42", backup_ts, Duration::from_secs(300))
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_gc_barrier(
        &self,
        scope: gc::GcScope,
        id: &str,
        ts: Timestamp,
        ttl: Duration,
    ) -> Result<gc::GcBarrier> {
        let ttl = barrier_ttl(ttl)?;
        let barrier = self
            .pd_client()
            .set_gc_barrier_in(scope.keyspace_id(), id, ts.version(), ttl)
            .await?;
        Ok(barrier.into())
    }

    /// Deletes the GC barrier `id` of `scope` (PD `DeleteGCBarrier`); returns it, or `None` if
    /// there was none.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// use tikv_client::gc::GcScope;
    ///
    /// if let Some(barrier) = cluster.delete_gc_barrier(GcScope::Unified, "backup-42").await? {
    ///     println!("released GC at {}", barrier.ts);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_gc_barrier(
        &self,
        scope: gc::GcScope,
        id: &str,
    ) -> Result<Option<gc::GcBarrier>> {
        let deleted = self
            .pd_client()
            .delete_gc_barrier_in(scope.keyspace_id(), id)
            .await?;
        Ok(deleted.map(gc::GcBarrier::from))
    }

    /// Sets (or replaces) the global GC barrier `id` at `ts` for `ttl` (PD
    /// `SetGlobalGCBarrier`): it holds back the txn safe point of every keyspace. Global and
    /// per-scope barriers are separate: [`delete_gc_barrier`](Self::delete_gc_barrier) does
    /// not remove a global one. TTL rules as [`set_gc_barrier`](Self::set_gc_barrier).
    ///
    /// Errors: [`Error::InvalidArgument`] for a zero TTL;
    /// [`gc::GcRefusal::GlobalBarrierBehindTxnSafePoint`] for a `ts` below some keyspace's txn
    /// safe point.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster, ts: tikv_client::Timestamp)
    /// # -> tikv_client::Result<()> {
    /// use std::time::Duration;
    ///
    /// cluster.set_global_gc_barrier("br-all", ts, Duration::from_secs(3600)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set_global_gc_barrier(
        &self,
        id: &str,
        ts: Timestamp,
        ttl: Duration,
    ) -> Result<gc::GcBarrier> {
        let ttl = barrier_ttl(ttl)?;
        let barrier = self
            .pd_client()
            .set_global_gc_barrier(id, ts.version(), ttl)
            .await?;
        Ok(barrier.into())
    }

    /// Deletes the global GC barrier `id` (PD `DeleteGlobalGCBarrier`); returns it, or `None`
    /// if there was none.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// let deleted = cluster.delete_global_gc_barrier("br-all").await?;
    /// println!("{deleted:?}");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn delete_global_gc_barrier(&self, id: &str) -> Result<Option<gc::GcBarrier>> {
        let deleted = self.pd_client().delete_global_gc_barrier(id).await?;
        Ok(deleted.map(gc::GcBarrier::from))
    }

    /// Loads the keyspace `name` (PD `LoadKeyspace`; an empty name is `DEFAULT`), whatever its
    /// state: its id for [`gc::GcScope::of`], its state and PD's settings for it.
    ///
    /// Errors: [`Error::KeyspaceNotFound`] if PD does not know it.
    ///
    /// ```no_run
    /// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// use tikv_client::KeyspaceState;
    ///
    /// let keyspace = cluster.load_keyspace("tenant-1").await?;
    /// if keyspace.state != KeyspaceState::Enabled {
    ///     println!("keyspace {} (id {}) is {}", keyspace.name, keyspace.id, keyspace.state);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn load_keyspace(&self, name: &str) -> Result<KeyspaceMeta> {
        self.pd_client().load_keyspace(name).await
    }
}

#[cfg(test)]
mod tests {
    use super::gc::{GcBarrier, GcScope, NEVER_EXPIRES};
    use super::*;
    use crate::pd;

    #[test]
    fn scopes_and_ttls_convert_like_pd() {
        assert_eq!(GcScope::Unified.keyspace_id(), NULL_KEYSPACE_ID);
        assert_eq!(
            GcScope::from_keyspace_id(NULL_KEYSPACE_ID),
            GcScope::Unified
        );
        assert_eq!(GcScope::from_keyspace_id(7), GcScope::Keyspace(7));
        assert_eq!(GcScope::Keyspace(7).keyspace_id(), 7);

        assert!(matches!(
            barrier_ttl(Duration::ZERO),
            Err(Error::InvalidArgument { .. })
        ));
        let ttl = Duration::from_millis(1500);
        assert_eq!(barrier_ttl(ttl).unwrap(), Some(ttl));
        assert_eq!(barrier_ttl(NEVER_EXPIRES).unwrap(), None);
        let forever = GcBarrier::from(pd::GcBarrier {
            id: "b".to_owned(),
            ts: 5,
            ttl: None,
        });
        assert_eq!(
            (forever.ts, forever.ttl),
            (Timestamp::from(5), NEVER_EXPIRES)
        );
    }
}
