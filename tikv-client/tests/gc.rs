//! PD's GC states and keyspaces through `Cluster`'s public methods, against `tikv-mock` (which
//! serves PD's GC states API with PD's rules and error codes).
//!
//! Ports the GC-worker sequence of client-go `tikv/gc.go` (`KVStore.GC`: advance the txn safe
//! point, take the value barriers left it at, then move the GC safe point there) and cases of
//! tikv/pd `tests/integrations/client/gc_client_test.go` (barriers block the txn safe point
//! until deleted or expired; the GC safe point cannot pass the txn safe point; keyspace-level
//! GC states are separate from the unified one, and advancing safe points on a keyspace
//! without keyspace-level GC is refused).

// Test code: an unwrap that fails is a failed test (the workspace lints deny them elsewhere).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tikv_client::gc::{GcRefusal, GcScope, NEVER_EXPIRES};
use tikv_client::{Cluster, Config, Error, KeyspaceState, Timestamp};
use tikv_mock::{ManualClock, MockCluster};

async fn connect(mock: &MockCluster) -> Cluster {
    Cluster::connect(mock.pd_endpoints(), Config::default())
        .await
        .unwrap()
}

fn ts(physical_ms: u64) -> Timestamp {
    Timestamp::compose(physical_ms, 0)
}

#[tokio::test]
async fn txn_then_gc_safe_point_and_the_gc_safe_point_cannot_pass() {
    let mock = MockCluster::builder().start().await.unwrap();
    let cluster = connect(&mock).await;
    let state = cluster.gc_state(GcScope::Unified).await.unwrap();
    assert_eq!(state.scope, GcScope::Unified);
    assert!(!state.is_keyspace_level);
    assert_eq!(
        (state.txn_safe_point, state.gc_safe_point),
        (Timestamp::ZERO, Timestamp::ZERO)
    );

    // Nothing above the txn safe point may be collected yet.
    let err = cluster
        .advance_gc_safe_point(GcScope::Unified, ts(10))
        .await
        .unwrap_err();
    assert_eq!(
        GcRefusal::of(&err),
        Some(GcRefusal::GcSafePointExceedsTxnSafePoint),
        "{err:?}"
    );

    let advance = cluster
        .advance_txn_safe_point(GcScope::Unified, ts(20))
        .await
        .unwrap();
    assert_eq!(
        (advance.old, advance.target, advance.new),
        (Timestamp::ZERO, ts(20), ts(20))
    );
    assert!(advance.blocker_description.is_empty(), "{advance:?}");

    let err = cluster
        .advance_gc_safe_point(GcScope::Unified, ts(30))
        .await
        .unwrap_err();
    assert_eq!(
        GcRefusal::of(&err),
        Some(GcRefusal::GcSafePointExceedsTxnSafePoint)
    );
    let gc = cluster
        .advance_gc_safe_point(GcScope::Unified, ts(20))
        .await
        .unwrap();
    assert_eq!(
        (gc.old, gc.target, gc.new),
        (Timestamp::ZERO, ts(20), ts(20))
    );

    // Both only grow.
    let err = cluster
        .advance_gc_safe_point(GcScope::Unified, ts(10))
        .await
        .unwrap_err();
    assert_eq!(GcRefusal::of(&err), Some(GcRefusal::DecreasingGcSafePoint));
    let err = cluster
        .advance_txn_safe_point(GcScope::Unified, ts(10))
        .await
        .unwrap_err();
    assert_eq!(GcRefusal::of(&err), Some(GcRefusal::DecreasingTxnSafePoint));

    let state = cluster.gc_state(GcScope::Unified).await.unwrap();
    assert_eq!(
        (state.txn_safe_point, state.gc_safe_point),
        (ts(20), ts(20))
    );
}

#[tokio::test]
async fn barriers_hold_the_txn_safe_point_until_deleted_or_expired() {
    let clock = ManualClock::new(1_700_000_000_000);
    let mock = MockCluster::builder()
        .manual_clock(clock.clone())
        .start()
        .await
        .unwrap();
    let cluster = connect(&mock).await;

    let barrier = cluster
        .set_gc_barrier(GcScope::Unified, "backup", ts(10), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!((barrier.id.as_str(), barrier.ts), ("backup", ts(10)));
    assert_eq!(barrier.ttl, Duration::from_secs(60));
    // A zero TTL is refused before anything is sent.
    let err = cluster
        .set_gc_barrier(GcScope::Unified, "zero", ts(10), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");

    // The GC worker's step 1-2 (client-go `KVStore.GC`): the barrier holds the txn safe point.
    let advance = cluster
        .advance_txn_safe_point(GcScope::Unified, ts(20))
        .await
        .unwrap();
    assert_eq!((advance.target, advance.new), (ts(20), ts(10)));
    assert!(
        advance.blocker_description.contains("backup"),
        "{advance:?}"
    );
    let state = cluster.gc_state(GcScope::Unified).await.unwrap();
    assert_eq!(state.txn_safe_point, ts(10));
    assert_eq!(state.barriers, vec![barrier.clone()]);
    // Step 4: the GC safe point follows the value the barrier left.
    let gc = cluster
        .advance_gc_safe_point(GcScope::Unified, advance.new)
        .await
        .unwrap();
    assert_eq!(gc.new, ts(10));

    // A barrier below the txn safe point is refused; the reserved id too.
    let err = cluster
        .set_gc_barrier(GcScope::Unified, "late", ts(5), NEVER_EXPIRES)
        .await
        .unwrap_err();
    assert_eq!(
        GcRefusal::of(&err),
        Some(GcRefusal::BarrierBehindTxnSafePoint)
    );
    let err = cluster
        .set_gc_barrier(GcScope::Unified, "gc_worker", ts(15), NEVER_EXPIRES)
        .await
        .unwrap_err();
    assert_eq!(GcRefusal::of(&err), Some(GcRefusal::ReservedBarrierId));

    // Deleting the barrier frees the txn safe point.
    let deleted = cluster
        .delete_gc_barrier(GcScope::Unified, "backup")
        .await
        .unwrap();
    assert_eq!(deleted.map(|b| b.ts), Some(ts(10)));
    assert_eq!(
        cluster
            .delete_gc_barrier(GcScope::Unified, "backup")
            .await
            .unwrap(),
        None
    );
    let advance = cluster
        .advance_txn_safe_point(GcScope::Unified, ts(20))
        .await
        .unwrap();
    assert_eq!(advance.new, ts(20));

    // A barrier that never expires holds until deleted; one with a TTL stops holding once the
    // TTL is over (the mock's manual clock, rounded up to whole seconds as PD does).
    let forever = cluster
        .set_gc_barrier(GcScope::Unified, "forever", ts(25), NEVER_EXPIRES)
        .await
        .unwrap();
    assert_eq!(forever.ttl, NEVER_EXPIRES);
    let short = cluster
        .set_gc_barrier(
            GcScope::Unified,
            "short",
            ts(22),
            Duration::from_millis(1500),
        )
        .await
        .unwrap();
    assert_eq!(short.ttl, Duration::from_secs(2));
    let advance = cluster
        .advance_txn_safe_point(GcScope::Unified, ts(30))
        .await
        .unwrap();
    assert_eq!(advance.new, ts(22));
    // PD keeps a barrier through its last millisecond.
    mock.advance_clock(Duration::from_secs(2)).unwrap();
    let advance = cluster
        .advance_txn_safe_point(GcScope::Unified, ts(30))
        .await
        .unwrap();
    assert_eq!(advance.new, ts(22));
    mock.advance_clock(Duration::from_millis(1)).unwrap();
    let advance = cluster
        .advance_txn_safe_point(GcScope::Unified, ts(30))
        .await
        .unwrap();
    assert_eq!(advance.new, ts(25), "the expired barrier stops holding");
    let state = cluster.gc_state(GcScope::Unified).await.unwrap();
    assert_eq!(state.barriers, vec![forever]);
    cluster
        .delete_gc_barrier(GcScope::Unified, "forever")
        .await
        .unwrap();

    // A global barrier holds every scope and is separate from the scope's barriers.
    let global = cluster
        .set_global_gc_barrier("everything", ts(40), Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(global.ts, ts(40));
    assert_eq!(
        cluster
            .delete_gc_barrier(GcScope::Unified, "everything")
            .await
            .unwrap(),
        None
    );
    let advance = cluster
        .advance_txn_safe_point(GcScope::Unified, ts(50))
        .await
        .unwrap();
    assert_eq!(advance.new, ts(40));
    let state = cluster.gc_state(GcScope::Unified).await.unwrap();
    assert_eq!(state.global_barriers, vec![global]);
    let err = cluster
        .set_global_gc_barrier("late", ts(30), NEVER_EXPIRES)
        .await
        .unwrap_err();
    assert_eq!(
        GcRefusal::of(&err),
        Some(GcRefusal::GlobalBarrierBehindTxnSafePoint)
    );
    let deleted = cluster
        .delete_global_gc_barrier("everything")
        .await
        .unwrap();
    assert_eq!(deleted.map(|b| b.id), Some("everything".to_owned()));
    assert_eq!(
        cluster
            .delete_global_gc_barrier("everything")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn keyspace_scoped_gc_states_under_api_v2() {
    let mock = MockCluster::builder()
        .api_version(tikv_mock::ApiVersion::V2)
        .keyspace("shared")
        .keyspace("own")
        .start()
        .await
        .unwrap();
    let cluster = connect(&mock).await;
    let shared = cluster.load_keyspace("shared").await.unwrap();
    let own = cluster.load_keyspace("own").await.unwrap();
    assert_eq!(shared.state, KeyspaceState::Enabled);
    assert_ne!(shared.id, own.id);
    mock.set_keyspace_config(own.id, "gc_management_type", "keyspace_level")
        .unwrap();
    let own = cluster.load_keyspace("own").await.unwrap();
    assert_eq!(own.config["gc_management_type"], "keyspace_level");
    let (shared_scope, own_scope) = (GcScope::of(&shared), GcScope::of(&own));
    assert_eq!(own_scope, GcScope::Keyspace(own.id));

    // A keyspace without keyspace-level GC shares the unified state: reads and barriers act
    // on it, advancing its safe points is refused.
    let state = cluster.gc_state(shared_scope).await.unwrap();
    assert_eq!(state.scope, GcScope::Unified);
    let err = cluster
        .advance_txn_safe_point(shared_scope, ts(10))
        .await
        .unwrap_err();
    assert_eq!(
        GcRefusal::of(&err),
        Some(GcRefusal::KeyspaceLevelGcNotEnabled)
    );
    cluster
        .set_gc_barrier(shared_scope, "unified-barrier", ts(5), NEVER_EXPIRES)
        .await
        .unwrap();
    let unified = cluster.gc_state(GcScope::Unified).await.unwrap();
    assert_eq!(unified.barriers.len(), 1);

    // A keyspace-level keyspace has its own safe points and barriers.
    let state = cluster.gc_state(own_scope).await.unwrap();
    assert_eq!(state.scope, own_scope);
    assert!(state.is_keyspace_level);
    assert!(state.barriers.is_empty());
    cluster
        .set_gc_barrier(own_scope, "tenant", ts(15), Duration::from_secs(600))
        .await
        .unwrap();
    let advance = cluster
        .advance_txn_safe_point(own_scope, ts(20))
        .await
        .unwrap();
    assert_eq!(advance.new, ts(15));
    cluster
        .advance_gc_safe_point(own_scope, ts(15))
        .await
        .unwrap();
    let state = cluster.gc_state(own_scope).await.unwrap();
    assert_eq!(
        (state.txn_safe_point, state.gc_safe_point),
        (ts(15), ts(15))
    );
    assert_eq!(state.barriers.len(), 1);
    // The unified state did not move.
    let unified = cluster.gc_state(GcScope::Unified).await.unwrap();
    assert_eq!(
        (unified.txn_safe_point, unified.gc_safe_point),
        (Timestamp::ZERO, Timestamp::ZERO)
    );
    assert_eq!(unified.barriers.len(), 1);

    // Unknown keyspaces and names.
    let err = cluster
        .gc_state(GcScope::Keyspace(0x00AB_CDEF))
        .await
        .unwrap_err();
    assert_eq!(
        GcRefusal::of(&err),
        Some(GcRefusal::KeyspaceNotFound),
        "{err:?}"
    );
    let err = cluster.load_keyspace("missing").await.unwrap_err();
    assert!(matches!(err, Error::KeyspaceNotFound { .. }), "{err:?}");
    // The empty name is the DEFAULT keyspace.
    assert_eq!(cluster.load_keyspace("").await.unwrap().id, 0);
}
