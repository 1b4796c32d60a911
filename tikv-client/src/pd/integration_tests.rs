//! The PD client against `tikv-mock`: connecting, timestamps, keyspaces, GC states,
//! scatter and operators, external timestamps, failover and restart, closing.
//!
//! Ported cases (tikv/pd `tests/integrations/client/client_test.go`, `gc_client_test.go`,
//! `keyspace_test.go`; client-go `tikv/gc.go`, `tikv/split_region.go`,
//! `internal/locate/pd_codec.go`): `TestCustomTimeout` (a call PD does not answer fails at the
//! deadline), `TestGetTSAfterTransferLeader` / `TestTSOFollowerProxy` (timestamps keep
//! increasing across leader moves and are distinct among concurrent callers),
//! `TestGCSafePoint`-style advancing and barriers, `TestLoadKeyspace` and `GetKeyspaceID`'s
//! "not ENABLED is refused", `TestScatterRegion` + `WaitScatterRegionFinish`'s operator check,
//! `TestExternalTimestamp`, `TestGetTsoByFollowerForwarding1` (a partitioned leader reached
//! through a follower, then directly again once its health check passes, driven by the
//! background probes), and PD's `TestDynamicOptionChange` / client-go's
//! `ChangePDRegionMetaCircuitBreakerSettings` for the options changed at run time.

use std::collections::HashSet;
use std::time::Duration;

use crate::config::CircuitBreakerSettings;
use crate::pd::gc::NULL_KEYSPACE_ID;
use crate::pd::{CircuitBreakerState, KeyspaceState, OperatorStatus, PdClient};
use crate::{Config, Error};
use tikv_mock::proto::keyspacepb::{self, keyspace_client::KeyspaceClient};
use tikv_mock::proto::pdpb;
use tikv_mock::{Action, FaultRule, Matcher, MockCluster, Times};

fn config() -> Config {
    let mut config = Config::default();
    config.pd_client.pd_server_timeout = Duration::from_secs(1);
    config
}

async fn connect(cluster: &MockCluster) -> PdClient {
    PdClient::connect(cluster.pd_endpoints(), &config())
        .await
        .unwrap()
}

#[tokio::test]
async fn timestamps_are_distinct_and_increasing() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let pd = connect(&cluster).await;
    assert_eq!(pd.cluster_id(), cluster.cluster_id());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let pd = pd.clone();
        tasks.spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..20 {
                seen.push(pd.get_timestamp().await.unwrap());
            }
            seen
        });
    }
    let mut all = HashSet::new();
    while let Some(seen) = tasks.join_next().await {
        let seen = seen.unwrap();
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        assert!(seen.into_iter().all(|ts| all.insert(ts)));
    }
    let stats = pd.tso_stats();
    assert_eq!(stats.timestamps, 32 * 20);
    assert!(stats.requests <= stats.timestamps);
}

#[tokio::test]
async fn urls_with_schemes_and_several_endpoints() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let endpoint = &cluster.pd_endpoints()[0];
    let pd = PdClient::connect([format!("http://{endpoint}/"), endpoint.clone()], &config())
        .await
        .unwrap();
    assert_eq!(pd.leader_url().unwrap(), format!("http://{endpoint}"));
    pd.get_timestamp().await.unwrap();
}

#[tokio::test]
async fn keyspaces_load_by_name_and_must_be_enabled() {
    let cluster = MockCluster::builder()
        .keyspace("ks1")
        .keyspace("ks2")
        .start()
        .await
        .unwrap();
    let pd = PdClient::builder(cluster.pd_endpoints(), &config())
        .keyspace("ks1")
        .connect()
        .await
        .unwrap();
    let meta = pd.keyspace().unwrap();
    assert_eq!(meta.name, "ks1");
    assert_eq!(meta.state, KeyspaceState::Enabled);
    assert!(meta.id > 0);
    let default = pd.load_keyspace("").await.unwrap();
    assert_eq!((default.id, default.name.as_str()), (0, "DEFAULT"));

    match PdClient::builder(cluster.pd_endpoints(), &config())
        .keyspace("missing")
        .connect()
        .await
    {
        Err(Error::KeyspaceNotFound { name }) => assert_eq!(name, "missing"),
        other => panic!("{other:?}"),
    }

    // Disable ks2 through PD's own API: loading still works, opening a client on it does not.
    let ks2 = pd.load_keyspace("ks2").await.unwrap();
    let mut admin = KeyspaceClient::connect(format!("http://{}", cluster.pd_endpoints()[0]))
        .await
        .unwrap();
    let resp = admin
        .update_keyspace_state(keyspacepb::UpdateKeyspaceStateRequest {
            header: Some(pdpb::RequestHeader {
                cluster_id: cluster.cluster_id(),
                ..Default::default()
            }),
            keyspace: Some(keyspacepb::update_keyspace_state_request::Keyspace::Id(
                ks2.id,
            )),
            state: keyspacepb::KeyspaceState::Disabled as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.header.unwrap().error.is_none());
    assert_eq!(
        pd.load_keyspace("ks2").await.unwrap().state,
        KeyspaceState::Disabled
    );
    match PdClient::builder(cluster.pd_endpoints(), &config())
        .keyspace("ks2")
        .connect()
        .await
    {
        Err(Error::KeyspaceNotEnabled { name, state }) => {
            assert_eq!((name.as_str(), state.as_str()), ("ks2", "DISABLED"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn gc_safe_points_and_barriers() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let pd = connect(&cluster).await;
    let state = pd.get_gc_state().await.unwrap();
    assert_eq!(state.keyspace_id, NULL_KEYSPACE_ID);
    assert_eq!((state.txn_safe_point, state.gc_safe_point), (0, 0));

    let t10 = pd.get_timestamp().await.unwrap().version();
    let t20 = pd.get_timestamp().await.unwrap().version();
    let barrier = pd
        .set_gc_barrier("br", t10, Some(Duration::from_secs(600)))
        .await
        .unwrap();
    assert_eq!((barrier.id.as_str(), barrier.ts), ("br", t10));
    assert!(barrier.ttl.unwrap() <= Duration::from_secs(600));

    // The barrier holds the txn safe point back (client-go's GC takes the new value).
    let advance = pd.advance_txn_safe_point(t20).await.unwrap();
    assert_eq!((advance.old, advance.target, advance.new), (0, t20, t10));
    assert!(advance.blocker_description.contains("br"), "{advance:?}");
    let state = pd.get_gc_state().await.unwrap();
    assert_eq!(state.txn_safe_point, t10);
    assert_eq!(state.barriers.len(), 1);

    // The GC safe point may not pass the txn safe point.
    let err = pd.advance_gc_safe_point(t20).await.unwrap_err();
    assert!(matches!(err, Error::Pd { .. }), "{err:?}");
    let gc = pd.advance_gc_safe_point(t10).await.unwrap();
    assert_eq!((gc.old, gc.new), (0, t10));

    assert_eq!(pd.delete_gc_barrier("br").await.unwrap().unwrap().ts, t10);
    assert!(pd.delete_gc_barrier("br").await.unwrap().is_none());
    assert_eq!(pd.advance_txn_safe_point(t20).await.unwrap().new, t20);
    // A barrier below the txn safe point is refused.
    let err = pd.set_gc_barrier("late", t10, None).await.unwrap_err();
    assert!(matches!(err, Error::Pd { .. }), "{err:?}");

    let t30 = pd.get_timestamp().await.unwrap().version();
    let global = pd.set_global_gc_barrier("g", t30, None).await.unwrap();
    assert_eq!(global.ttl, None, "no TTL never expires");
    let state = pd.get_gc_state().await.unwrap();
    assert_eq!(state.global_barriers.len(), 1);
    assert_eq!(
        pd.delete_global_gc_barrier("g").await.unwrap().unwrap().id,
        "g"
    );

    // The legacy call client-go's GC ends with.
    assert_eq!(pd.update_gc_safe_point(t20).await.unwrap(), t20);
}

#[tokio::test]
async fn scatter_and_operator_status() {
    let cluster = MockCluster::builder().start().await.unwrap();
    cluster.split_raw(["m"]).unwrap();
    let pd = connect(&cluster).await;
    let region_id = cluster.regions()[1].id;
    assert!(pd.get_operator(region_id).await.unwrap().is_none());
    let result = pd.scatter_regions(&[region_id], Some("t1")).await.unwrap();
    assert_eq!(result.finished_percentage, 100);
    assert!(result.failed_region_ids.is_empty());
    let op = pd.get_operator(region_id).await.unwrap().unwrap();
    assert_eq!(op.desc, "scatter-region");
    assert_eq!(op.status, OperatorStatus::Success);
    let result = pd
        .scatter_regions(&[region_id, 987_654], None)
        .await
        .unwrap();
    assert_eq!(result.failed_region_ids, vec![987_654]);
    let err = pd.scatter_regions(&[987_654], None).await.unwrap_err();
    assert!(matches!(err, Error::Pd { .. }), "{err:?}");
}

#[tokio::test]
async fn external_and_min_timestamps() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let pd = connect(&cluster).await;
    assert_eq!(pd.get_external_timestamp().await.unwrap(), 0);
    let ts = pd.get_timestamp().await.unwrap();
    pd.set_external_timestamp(ts.version()).await.unwrap();
    assert_eq!(pd.get_external_timestamp().await.unwrap(), ts.version());
    let err = pd.set_external_timestamp(u64::MAX >> 1).await.unwrap_err();
    assert!(matches!(err, Error::Pd { .. }), "{err:?}");
    assert!(pd.get_min_ts().await.unwrap() > ts);
}

#[tokio::test]
async fn unanswered_call_fails_at_the_deadline() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let pd = connect(&cluster).await;
    cluster.add_fault(
        FaultRule::new(Matcher::pd().command("GetExternalTimestamp"), Action::Drop)
            .times(Times::Once),
    );
    let err = pd.get_external_timestamp().await.unwrap_err();
    assert!(matches!(err, Error::PdServerTimeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(pd.get_external_timestamp().await.unwrap(), 0);
}

#[tokio::test]
async fn failover_between_pd_members_keeps_time_moving() {
    let cluster = MockCluster::builder().pd_members(3).start().await.unwrap();
    let mut config = config();
    config.pd_client.pd_server_timeout = Duration::from_secs(2);
    let pd = PdClient::connect(cluster.pd_endpoints(), &config)
        .await
        .unwrap();
    let mut last = pd.get_timestamp().await.unwrap();
    for leader in [1, 2, 0, 2] {
        cluster.transfer_pd_leader(leader).unwrap();
        let ts = pd.get_timestamp().await.unwrap();
        assert!(ts > last);
        last = ts;
        assert_eq!(pd.get_external_timestamp().await.unwrap(), 0);
        assert_eq!(
            pd.leader_url().unwrap(),
            format!("http://{}", cluster.pd_endpoints()[leader])
        );
    }
}

#[tokio::test]
async fn pd_down_then_back() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let pd = connect(&cluster).await;
    let before = pd.get_timestamp().await.unwrap();
    cluster.stop_pd().await;
    assert!(matches!(
        pd.get_timestamp().await,
        Err(Error::PdServerTimeout { .. })
    ));
    assert!(matches!(
        pd.get_external_timestamp().await,
        Err(Error::PdServerTimeout { .. })
    ));
    cluster.start_pd().await.unwrap();
    assert!(pd.get_timestamp().await.unwrap() > before);
    pd.close();
    assert!(matches!(pd.get_timestamp().await, Err(Error::Closed)));
}

/// Requests the followers forwarded to member 0.
fn forwarded_to_first(cluster: &MockCluster) -> u64 {
    cluster.pd_forwarded_count(1, 0) + cluster.pd_forwarded_count(2, 0)
}

#[tokio::test]
async fn a_partitioned_leader_is_reached_through_followers_until_it_is_back() {
    let cluster = MockCluster::builder().pd_members(3).start().await.unwrap();
    let config =
        Config::from_toml_str("enable-forwarding = true\n[pd-client]\npd-server-timeout = 2\n")
            .unwrap();
    let pd = PdClient::builder(cluster.pd_endpoints(), &config)
        .member_health_check_interval(Duration::from_millis(50))
        .connect()
        .await
        .unwrap();
    let mut last = pd.get_timestamp().await.unwrap();

    // The client loses the leader; the followers still reach it.
    cluster.isolate_pd_member(0).await.unwrap();
    for _ in 0..10 {
        let ts = pd.get_timestamp().await.unwrap();
        assert!(ts > last);
        last = ts;
    }
    assert_eq!(pd.get_external_timestamp().await.unwrap(), 0);
    pd.set_external_timestamp(last.version()).await.unwrap();
    assert!(
        forwarded_to_first(&cluster) >= 12,
        "{:?}",
        cluster.pd_forwarded_counts()
    );
    assert_eq!(
        pd.leader_url().unwrap(),
        format!("http://{}", cluster.pd_endpoints()[0])
    );

    // Back: the background probes notice, and calls go straight to the leader again.
    cluster.heal_pd_member(0).await.unwrap();
    let direct = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            cluster.reset_pd_request_counts();
            let ts = pd.get_timestamp().await.unwrap();
            assert!(ts > last);
            last = ts;
            pd.get_external_timestamp().await.unwrap();
            if cluster.pd_forwarded_counts().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(direct.is_ok(), "calls never came back to the leader");
    assert_eq!(cluster.pd_request_count(0, "GetExternalTimestamp"), 1);
    assert_eq!(cluster.pd_request_count(0, "Tso"), 1);
}

#[tokio::test]
async fn pd_options_load_from_config_and_change_at_run_time() {
    let cluster = MockCluster::builder().pd_members(2).start().await.unwrap();
    let config = Config::from_toml_str(
        "[pd-client]\n\
         pd-server-timeout = 1\n\
         enable-follower-handle = true\n\
         enable-router-client = false\n\
         [pd-client.region-meta-circuit-breaker]\n\
         error-rate-threshold-pct = 60\n\
         cool-down-interval = \"5s\"\n",
    )
    .unwrap();
    let pd = PdClient::connect(cluster.pd_endpoints(), &config)
        .await
        .unwrap();
    let settings = pd.region_meta_circuit_breaker_settings();
    assert_eq!(settings.error_rate_threshold_pct, 60);
    assert_eq!(settings.cool_down_interval, Duration::from_secs(5));
    assert_eq!(settings.error_rate_window, Duration::from_secs(30));
    assert_eq!(
        pd.region_meta_circuit_breaker_state(),
        CircuitBreakerState::Closed
    );
    pd.change_region_meta_circuit_breaker_settings(|s| {
        *s = CircuitBreakerSettings::always_closed().with_min_qps_for_open(3);
    });
    let settings = pd.region_meta_circuit_breaker_settings();
    assert!(!settings.is_enabled());
    assert_eq!(settings.min_qps_for_open, 3);
    pd.set_follower_handle(false);
    pd.set_router_client(true);
    assert!(pd.get_timestamp().await.is_ok());
}
