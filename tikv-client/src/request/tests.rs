//! The sender against `tikv-mock` over gRPC: every region error injected with a fault rule,
//! each asserting where the retries went, which backoffs were taken and the outcome; leader
//! changes, splits, a stopped store, the store limit, read-ts validation and the fan-out.
//!
//! Backoffers here account their sleeps without waiting (`without_sleeps`): paused tokio time
//! cannot be used against a live gRPC server (idle waits for the network would fire every
//! timeout), and the accounting is what the assertions read.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tikv_mock::{Action, FaultRule, HangHandle, Matcher, MockCluster, RegionErrorSpec, Times};
use tikv_proto::kvrpcpb;

use crate::error::RegionErrorKind;
use crate::locate::{LivenessState, RegionCache};
use crate::pd::{PdClient, RegionSource};
use crate::request::dispatch::{BatchLimit, FanOutLimit, LocateBy, ShardOutcome};
use crate::request::sender::{
    AttemptRecord, CallOptions, RegionOutcome, Reply, SendError, SenderCore, SenderParts,
};
use crate::request::{BackoffKind, Backoffer};
use crate::rpc::KvRequest;
use crate::transport::Transport;
use crate::{Config, Error, Result};

struct Fixture {
    mock: MockCluster,
    core: Arc<SenderCore>,
}

async fn fixture_with(split: &[&str], tweak: impl FnOnce(&mut Config)) -> Fixture {
    let mock = MockCluster::builder()
        .stores(3)
        .split_keys(split.iter().map(|k| k.as_bytes()))
        .start()
        .await
        .unwrap();
    let mut config = Config::default();
    tweak(&mut config);
    let pd = Arc::new(
        PdClient::connect(mock.pd_endpoints(), &config)
            .await
            .unwrap(),
    );
    let cache = Arc::new(RegionCache::new(
        pd.clone() as Arc<dyn RegionSource>,
        &config,
    ));
    let core = SenderCore::new(
        SenderParts {
            cache,
            transport: Transport::new(&config).unwrap(),
            cluster_id: mock.cluster_id(),
            read_ts_validator: None,
        },
        &config,
    );
    Fixture { mock, core }
}

async fn fixture(split: &[&str]) -> Fixture {
    fixture_with(split, |_| {}).await
}

fn bo() -> Backoffer {
    Backoffer::new(Duration::from_secs(20)).without_sleeps()
}

fn opts() -> CallOptions {
    CallOptions::new(Duration::from_secs(5))
}

impl Fixture {
    async fn put(&self, key: &str, value: &str) {
        let req = kvrpcpb::RawPutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        };
        let (reply, _) = self
            .core
            .send_by_key(&mut bo(), key.as_bytes(), LocateBy::Key, &opts(), |_| {
                Ok(req.clone())
            })
            .await
            .unwrap();
        assert!(reply.resp.error.is_empty());
    }

    async fn get_with(
        &self,
        bo: &mut Backoffer,
        key: &str,
    ) -> Result<Reply<kvrpcpb::RawGetResponse>> {
        let req = kvrpcpb::RawGetRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        };
        self.core
            .send_by_key(bo, key.as_bytes(), LocateBy::Key, &opts(), |_| {
                Ok(req.clone())
            })
            .await
            .map(|(reply, _)| reply)
            .map_err(Error::from)
    }

    fn leader_store(&self, key: &str) -> u64 {
        let (_, leader) = self.mock.region_for_raw_key(key.as_bytes()).unwrap();
        leader.unwrap().store_id
    }

    fn region_id(&self, key: &str) -> u64 {
        self.mock.region_for_raw_key(key.as_bytes()).unwrap().0.id
    }

    fn raw_gets(&self) -> u64 {
        self.mock
            .store_ids()
            .into_iter()
            .map(|s| self.mock.rpc_count(s, "RawGet"))
            .sum()
    }

    fn fail_once(&self, key: &str, spec: RegionErrorSpec) {
        self.mock.add_fault(
            FaultRule::new(
                Matcher::tikv().command("RawGet").key(key),
                Action::region_error(spec),
            )
            .times(Times::Once),
        );
    }
}

#[tokio::test]
async fn a_plain_request_takes_one_attempt() {
    let f = fixture(&["m"]).await;
    f.put("k", "v").await;
    let mut bo = bo();
    let reply = f.get_with(&mut bo, "k").await.unwrap();
    assert_eq!(reply.resp.value.as_ref(), b"v");
    assert_eq!(reply.attempts, 1);
    assert!(!reply.had_rpc_error);
    assert_eq!(reply.store_id, f.leader_store("k"));
    assert_eq!(bo.total_times(), 0);
}

/// Errors after which the same region is retried and the request succeeds: the backoff each
/// takes, and how many RawGet RPCs the whole request costs.
#[tokio::test]
async fn retried_region_errors_take_their_backoff_and_succeed() {
    let f = fixture(&["m"]).await;
    f.put("k", "v").await;
    let cases: Vec<(RegionErrorSpec, Option<BackoffKind>, u64)> = vec![
        (RegionErrorSpec::StaleCommand, None, 2),
        (
            RegionErrorSpec::MaxTimestampNotSynced,
            Some(BackoffKind::MaxTsNotSynced),
            2,
        ),
        (
            RegionErrorSpec::ReadIndexNotReady,
            Some(BackoffKind::RegionScheduling),
            2,
        ),
        (
            RegionErrorSpec::ProposalInMergingMode,
            Some(BackoffKind::RegionScheduling),
            2,
        ),
        (
            RegionErrorSpec::RegionNotInitialized,
            Some(BackoffKind::RegionNotInitialized),
            2,
        ),
        (RegionErrorSpec::DataIsNotReady, None, 2),
        (
            RegionErrorSpec::DiskFull,
            Some(BackoffKind::TikvDiskFull),
            2,
        ),
        (
            RegionErrorSpec::ServerIsBusy {
                reason: "scheduler is busy".into(),
                estimated_wait_ms: 0,
            },
            Some(BackoffKind::TikvServerBusy),
            2,
        ),
        // No leader known: back off, try a follower (which names the leader), then the leader.
        (
            RegionErrorSpec::NotLeaderNoLeader,
            Some(BackoffKind::RegionScheduling),
            3,
        ),
        // Relocations: the region is dropped from the cache and located again.
        (
            RegionErrorSpec::RegionNotFound,
            Some(BackoffKind::RegionMiss),
            2,
        ),
        (
            RegionErrorSpec::KeyNotInRegion,
            Some(BackoffKind::RegionMiss),
            2,
        ),
        (
            RegionErrorSpec::RecoveryInProgress,
            Some(BackoffKind::RegionRecoveryInProgress),
            2,
        ),
        (RegionErrorSpec::IsWitness, Some(BackoffKind::IsWitness), 2),
        (
            RegionErrorSpec::MismatchPeerId,
            Some(BackoffKind::RegionMiss),
            2,
        ),
        (
            RegionErrorSpec::BucketVersionNotMatch,
            Some(BackoffKind::RegionMiss),
            2,
        ),
        (
            RegionErrorSpec::StoreNotMatch,
            Some(BackoffKind::RegionMiss),
            2,
        ),
        // An EpochNotMatch with the current regions relocates at once, without a backoff.
        (RegionErrorSpec::EpochNotMatch, None, 2),
    ];
    for (spec, backoff, rpcs) in cases {
        let name = format!("{spec:?}");
        f.mock.reset_rpc_counts();
        f.fail_once("k", spec);
        let mut bo = bo();
        let reply = f
            .get_with(&mut bo, "k")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(reply.resp.value.as_ref(), b"v", "{name}");
        assert_eq!(f.raw_gets(), rpcs, "{name}: RawGet RPCs");
        match backoff {
            Some(kind) => assert!(
                bo.times_of(kind) >= 1,
                "{name}: expected a {kind:?} backoff, took {:?}",
                bo.kinds_used()
            ),
            None => assert_eq!(bo.total_times(), 0, "{name}: {:?}", bo.kinds_used()),
        }
        assert_eq!(
            reply.store_id,
            f.leader_store("k"),
            "{name}: answered by the leader"
        );
    }
}

#[tokio::test]
async fn final_region_errors_are_typed_and_not_retried() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    let cases = [
        (RegionErrorSpec::RaftEntryTooLarge, "RaftEntryTooLarge"),
        (RegionErrorSpec::FlashbackInProgress, "FlashbackInProgress"),
        (
            RegionErrorSpec::FlashbackNotPrepared,
            "FlashbackNotPrepared",
        ),
        (RegionErrorSpec::UndeterminedResult, "UndeterminedResult"),
    ];
    for (spec, name) in cases {
        f.mock.reset_rpc_counts();
        f.fail_once("k", spec);
        let err = f.get_with(&mut bo(), "k").await.unwrap_err();
        let Error::Region(region) = &err else {
            panic!("{name}: expected a region error, got {err}");
        };
        assert_eq!(region.region_id, Some(f.region_id("k")), "{name}");
        assert_eq!(f.raw_gets(), 1, "{name}: sent once");
        match (&region.kind, name) {
            (RegionErrorKind::RaftEntryTooLarge { entry_size }, _) => assert!(*entry_size > 0),
            (RegionErrorKind::UndeterminedResult, _) => assert!(err.is_undetermined()),
            (RegionErrorKind::FlashbackInProgress, _)
            | (RegionErrorKind::FlashbackNotPrepared, _) => assert!(!err.is_retryable()),
            (other, _) => panic!("{name}: unexpected kind {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unknown_region_error_is_retried_on_the_leader() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    f.mock.reset_rpc_counts();
    f.fail_once(
        "k",
        RegionErrorSpec::Raw(tikv_proto::errorpb::Error {
            message: "something new".into(),
            ..Default::default()
        }),
    );
    let mut bo = bo();
    let reply = f.get_with(&mut bo, "k").await.unwrap();
    assert_eq!(reply.attempts, 2);
    assert_eq!(f.raw_gets(), 2);
    assert_eq!(bo.total_times(), 0);
}

#[tokio::test]
async fn not_leader_with_a_hint_goes_straight_to_the_new_leader() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    let old = f.leader_store("k");
    let new = f.mock.store_ids().into_iter().find(|&s| s != old).unwrap();
    f.mock.transfer_leader(f.region_id("k"), new).unwrap();
    f.mock.reset_rpc_counts();
    let mut bo = bo();
    let reply = f.get_with(&mut bo, "k").await.unwrap();
    assert_eq!(reply.store_id, new);
    assert_eq!(reply.attempts, 2);
    assert_eq!(
        bo.total_times(),
        0,
        "a named leader is tried without a backoff"
    );
    assert_eq!(f.mock.rpc_count(old, "RawGet"), 1);
    assert_eq!(f.mock.rpc_count(new, "RawGet"), 1);
    // The cache learned the leader: the next request goes there directly.
    let reply = f.get_with(&mut bo, "k").await.unwrap();
    assert_eq!(reply.attempts, 1);
    assert_eq!(f.mock.rpc_count(new, "RawGet"), 2);
}

#[tokio::test]
async fn a_split_relocates_without_backoff() {
    let f = fixture(&[]).await;
    f.put("a", "1").await;
    f.put("z", "2").await;
    let before = f.region_id("z");
    f.mock.split_raw(["m"]).unwrap();
    assert_ne!(f.region_id("a"), f.region_id("z"));
    let mut bo = bo();
    let reply = f.get_with(&mut bo, "z").await.unwrap();
    assert_eq!(reply.resp.value.as_ref(), b"2");
    assert_eq!(bo.times_of(BackoffKind::RegionMiss), 0);
    let reply_a = f.get_with(&mut bo, "a").await.unwrap();
    assert_eq!(reply_a.resp.value.as_ref(), b"1");
    assert!(reply.region.id() == f.region_id("z") && reply_a.region.id() == f.region_id("a"));
    let _ = before;
}

#[tokio::test]
async fn server_busy_with_an_estimate_records_the_store_load() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    f.fail_once(
        "k",
        RegionErrorSpec::ServerIsBusy {
            reason: "estimated wait time exceeds threshold".into(),
            estimated_wait_ms: 30_000,
        },
    );
    let mut bo = bo();
    f.get_with(&mut bo, "k").await.unwrap();
    let store = f.core.cache.store_cache().get(f.leader_store("k")).unwrap();
    assert!(store.health().estimated_wait() > Duration::from_secs(20));
    assert_eq!(bo.times_of(BackoffKind::TikvServerBusy), 1);
}

/// client-go `TestRegionCacheHandleHealthStatus` and the active refresh of
/// `updateTiKVServerSideSlowScoreOnTick`: TiKV's slow score arrives with answers; a stale one
/// is asked of the store on the next health tick (and confirmed, it stays); a store that cannot
/// be asked has its score decayed; a healthy report clears it. Other stores are not affected.
#[tokio::test]
async fn tikv_slow_scores_come_with_answers_and_stale_ones_are_refreshed_or_decayed() {
    let f = fixture(&[]).await;
    let leader = f.leader_store("k");
    f.mock.set_store_slow_score(leader, 90).unwrap();
    f.put("k", "v").await;
    let cache = &f.core.cache;
    let detail = cache.store_health(leader).unwrap();
    assert_eq!(detail.tikv_side_slow_score, 90);
    assert!(detail.is_slow());
    let store = cache.store_cache().get(leader).unwrap();
    let feedback_requests = || f.mock.rpc_count(leader, "GetHealthFeedback");

    // A fresh score needs nothing on a tick.
    f.core.tick_store_health().await;
    assert_eq!(feedback_requests(), 0);

    // Stale: the tick asks the store, which still says 90, so nothing decays.
    store.health().backdate_tikv_score(Duration::from_secs(20));
    f.core.tick_store_health().await;
    assert_eq!(feedback_requests(), 1);
    assert_eq!(cache.store_health(leader).unwrap().tikv_side_slow_score, 90);

    // Stale and not reachable: no request, and 20 s take 20/3 points off.
    store.health().set_liveness(LivenessState::Unknown);
    store.health().backdate_tikv_score(Duration::from_secs(20));
    f.core.tick_store_health().await;
    assert_eq!(feedback_requests(), 1);
    assert_eq!(cache.store_health(leader).unwrap().tikv_side_slow_score, 83);

    // Reachable again and healthy: the next stale tick learns the score 1.
    store.health().set_liveness(LivenessState::Reachable);
    f.mock.set_store_slow_score(leader, 1).unwrap();
    store.health().backdate_tikv_score(Duration::from_secs(20));
    f.core.tick_store_health().await;
    assert_eq!(feedback_requests(), 2);
    let detail = cache.store_health(leader).unwrap();
    assert_eq!(detail.tikv_side_slow_score, 1);
    assert!(!detail.is_slow());
    for other in f.mock.store_ids().into_iter().filter(|s| *s != leader) {
        if let Some(detail) = cache.store_health(other) {
            assert!(detail.tikv_side_slow_score <= 1, "store {other}");
        }
    }
    assert!(cache.store_health(999).is_none());
}

/// The health tick runs by itself every quarter of `stores-refresh-interval`.
#[tokio::test]
async fn the_health_tick_runs_in_the_background() {
    let f = fixture_with(&[], |c| c.stores_refresh_interval = Duration::from_secs(1)).await;
    let leader = f.leader_store("k");
    f.mock.set_store_slow_score(leader, 90).unwrap();
    f.put("k", "v").await;
    let store = f.core.cache.store_cache().get(leader).unwrap();
    store.health().backdate_tikv_score(Duration::from_secs(20));
    tokio::time::timeout(Duration::from_secs(10), async {
        while f.mock.rpc_count(leader, "GetHealthFeedback") == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a background tick asked the store for feedback");
    // A mark from a failure is brought down by the ticks too (no traffic: within two).
    store.health().mark_slow();
    assert!(store.health().is_slow());
    tokio::time::timeout(Duration::from_secs(10), async {
        while store.health().detail().client_side_slow_score >= 80 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("background ticks decayed the mark");
}

#[tokio::test]
async fn a_stopped_leader_store_fails_over_to_the_new_leader_and_is_watched_until_back() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    let old = f.leader_store("k");
    let new = f.mock.store_ids().into_iter().find(|&s| s != old).unwrap();
    f.mock.stop_store(old).await.unwrap();
    f.mock.transfer_leader(f.region_id("k"), new).unwrap();
    let mut bo = bo();
    let reply = f.get_with(&mut bo, "k").await.unwrap();
    assert_eq!(reply.resp.value.as_ref(), b"v");
    assert_eq!(reply.store_id, new);
    assert!(reply.had_rpc_error);
    assert!(bo.times_of(BackoffKind::TikvRpc) >= 1);
    let store = f.core.cache.store_cache().get(old).unwrap();
    assert_eq!(store.health().liveness(), LivenessState::Unreachable);

    // The health loop notices the store is back.
    f.mock.start_store(old).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.health().liveness() != LivenessState::Reachable {
        assert!(
            tokio::time::Instant::now() < deadline,
            "store never seen back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn requests_in_flight_on_a_broken_stream_are_retried_elsewhere() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    let old = f.leader_store("k");
    let new = f.mock.store_ids().into_iter().find(|&s| s != old).unwrap();
    let hang = HangHandle::new();
    f.mock.add_fault(
        FaultRule::new(
            Matcher::tikv().store(old).command("RawGet"),
            Action::hang(&hang),
        )
        .times(Times::Always),
    );
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let core = f.core.clone();
        tasks.push(tokio::spawn(async move {
            let req = kvrpcpb::RawGetRequest {
                key: Bytes::from_static(b"k"),
                ..Default::default()
            };
            core.send_by_key(&mut bo(), b"k", LocateBy::Key, &opts(), |_| Ok(req.clone()))
                .await
                .map(|(r, _)| (r.resp.value, r.store_id))
        }));
    }
    // Every request is parked on the old leader before the store goes down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f.mock.rpc_count(old, "RawGet") < 16 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.mock.transfer_leader(f.region_id("k"), new).unwrap();
    f.mock.stop_store(old).await.unwrap();
    hang.release();
    for t in tasks {
        let (value, store) = t.await.unwrap().unwrap();
        assert_eq!(value.as_ref(), b"v");
        assert_eq!(store, new);
    }
}

#[tokio::test]
async fn the_store_limit_refuses_requests_over_it() {
    let f = fixture_with(&[], |c| c.tikv_client.store_limit = 1).await;
    f.put("k", "v").await;
    let hang = HangHandle::new();
    let id = f.mock.add_fault(
        FaultRule::new(Matcher::tikv().command("RawGet"), Action::hang(&hang)).times(Times::Once),
    );
    let core = f.core.clone();
    let first = tokio::spawn(async move {
        let req = kvrpcpb::RawGetRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        };
        core.send_by_key(&mut bo(), b"k", LocateBy::Key, &opts(), |_| Ok(req.clone()))
            .await
            .map(|(r, _)| r.resp.value)
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while f.raw_gets() < 1 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let err = f.get_with(&mut bo(), "k").await.unwrap_err();
    assert!(
        matches!(err, Error::StoreTokenLimit { store_id } if store_id == f.leader_store("k")),
        "{err}"
    );
    hang.release();
    f.mock.remove_fault(id);
    assert_eq!(first.await.unwrap().unwrap().as_ref(), b"v");
    // The token came back.
    f.get_with(&mut bo(), "k").await.unwrap();
}

/// Awaits `fut` for at most 10 s.
async fn bounded<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}"))
}

/// client-go's `RPCCanceller` (and its `RPCCancel` case): here a caller cancels by dropping
/// the call's future. The attempt in flight is abandoned at once: its store token comes back,
/// the transport sweeps its reply slot, nothing is retried, the region stays cached
/// (TestNoReloadRegionWhenCtxCanceled), and the store keeps serving.
#[tokio::test]
async fn dropping_a_call_cancels_its_attempt_and_frees_what_it_held() {
    let f = fixture_with(&[], |c| c.tikv_client.store_limit = 1).await;
    f.put("k", "v").await;
    let leader = f.leader_store("k");
    let hang = HangHandle::new();
    let rule = f.mock.add_fault(
        FaultRule::new(Matcher::tikv().command("RawGet"), Action::hang(&hang)).times(Times::Once),
    );
    let core = f.core.clone();
    let call = tokio::spawn(async move {
        let req = kvrpcpb::RawGetRequest {
            key: Bytes::from_static(b"k"),
            ..Default::default()
        };
        core.send_by_key(&mut bo(), b"k", LocateBy::Key, &opts(), |_| Ok(req.clone()))
            .await
            .map(|_| ())
    });
    bounded("the RawGet reached the store", async {
        while f.raw_gets() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let store = f.core.cache.store_cache().get(leader).unwrap();
    assert_eq!(
        store.health().tokens(),
        1,
        "the attempt holds the store's token"
    );
    let client = f
        .core
        .transport
        .store(&f.mock.store_address(leader).unwrap())
        .unwrap();
    assert_eq!(client.stats().inflight, 1);

    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    // A cancellation says nothing about the region: it stays cached and valid.
    let cached = f.core.cache.try_locate_key(b"k");
    assert_eq!(cached.map(|l| l.region_id()), Some(f.region_id("k")));
    assert_eq!(
        store.health().tokens(),
        0,
        "the token came back with the drop"
    );
    bounded("the transport swept the abandoned slot", async {
        while client.stats().inflight > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // The late answer goes nowhere, nothing was retried, and the store serves the next call.
    hang.release();
    f.mock.remove_fault(rule);
    let mut bo = bo();
    assert_eq!(
        f.get_with(&mut bo, "k").await.unwrap().resp.value.as_ref(),
        b"v"
    );
    assert_eq!(f.raw_gets(), 2, "the cancelled call plus the new one");
    assert_eq!(bo.total_sleep(), Duration::ZERO);
}

/// The cluster's own oracle validates every read that carries a timestamp (client-go
/// `validateReadTS`, checklist B5): a read above it fails before anything is sent.
#[tokio::test]
async fn a_read_above_the_clusters_oracle_is_refused_before_sending() {
    let mock = MockCluster::builder().stores(3).start().await.unwrap();
    let cluster = crate::Cluster::connect(mock.pd_endpoints(), Config::default())
        .await
        .unwrap();
    let now = cluster.current_timestamp().await.unwrap();
    let gets = || -> u64 {
        mock.store_ids()
            .into_iter()
            .map(|s| mock.rpc_count(s, "KvGet"))
            .sum()
    };
    let core = cluster.sender();
    let req = kvrpcpb::GetRequest {
        key: Bytes::from_static(b"k"),
        version: now.version() + (3_600_000 << 18),
        ..Default::default()
    };
    let err = core
        .send_by_key(&mut bo(), b"k", LocateBy::Key, &opts(), |_| Ok(req.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err.error, Error::FutureTsRead { .. }),
        "{:?}",
        err.error
    );
    assert!(!err.had_rpc_error);
    assert_eq!(gets(), 0, "nothing was sent");
    // "Read the latest" passes, as in client-go; a stale read of the latest does not.
    let latest = kvrpcpb::GetRequest {
        key: Bytes::from_static(b"k"),
        version: u64::MAX,
        ..Default::default()
    };
    let mut stale = opts();
    stale.read.stale_read = true;
    let err = core
        .send_by_key(&mut bo(), b"k", LocateBy::Key, &stale, |_| {
            let mut r = latest.clone();
            r.context_mut().stale_read = true;
            Ok(r)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.error, Error::LatestStaleRead),
        "{:?}",
        err.error
    );
    assert_eq!(gets(), 0);
    // A read at a timestamp the oracle has handed out goes through.
    let ok = kvrpcpb::GetRequest {
        key: Bytes::from_static(b"k"),
        version: now.version(),
        ..Default::default()
    };
    let (reply, _) = core
        .send_by_key(&mut bo(), b"k", LocateBy::Key, &opts(), |_| Ok(ok.clone()))
        .await
        .unwrap();
    assert!(reply.resp.not_found);
    assert_eq!(gets(), 1);
    // Timestamps keep coming from the same oracle.
    assert!(cluster.current_timestamp().await.unwrap() > now);
}

/// A stale read that meets DataIsNotReady is retried on the leader as a normal read (client-go
/// `onDataIsNotReady` and the stale read's second attempt in `nextForReplicaReadMixed`).
#[tokio::test]
async fn a_stale_read_not_ready_on_a_follower_is_retried_on_the_leader_as_a_normal_read() {
    let f = fixture(&[]).await;
    let pd = PdClient::connect(f.mock.pd_endpoints(), &Config::default())
        .await
        .unwrap();
    let ts = pd.get_timestamp().await.unwrap();
    let leader = f.leader_store("k");
    let follower = f
        .mock
        .store_ids()
        .into_iter()
        .find(|&s| s != leader)
        .unwrap();
    f.mock.add_fault(
        FaultRule::new(
            Matcher::tikv().store(follower).command("KvGet"),
            Action::region_error(RegionErrorSpec::DataIsNotReady),
        )
        .times(Times::Once),
    );
    let mut opts = opts();
    opts.read.stale_read = true;
    // The follower is the preferred replica, so the first attempt goes there.
    opts.match_stores = vec![follower];
    let req = kvrpcpb::GetRequest {
        key: Bytes::from_static(b"k"),
        version: ts.version(),
        ..Default::default()
    };
    let mut bo = bo();
    let (reply, _) = f
        .core
        .send_by_key(&mut bo, b"k", LocateBy::Key, &opts, |_| Ok(req.clone()))
        .await
        .unwrap();
    assert!(reply.resp.not_found);
    assert_eq!(reply.attempts, 2);
    assert_eq!(reply.store_id, leader);
    let log = f.core.attempt_log.lock().unwrap().clone();
    let first = AttemptRecord {
        store_id: follower,
        replica_read: false,
        stale_read: true,
        max_execution_ms: 5_000,
    };
    let second = AttemptRecord {
        store_id: leader,
        replica_read: false,
        stale_read: false,
        max_execution_ms: 5_000,
    };
    assert_eq!(log, vec![first, second]);
    assert_eq!(
        bo.total_sleep(),
        Duration::ZERO,
        "no backoff for DataIsNotReady"
    );
    // The follower's answer did not make it the leader.
    let cached = f.core.cache.try_locate_key(b"k").unwrap();
    let region = f.core.cache.cached_region(cached.region()).unwrap();
    assert_eq!(region.leader_peer().unwrap().store_id, leader);
}

/// A leader read with a busy threshold goes to an idle follower as a replica read while the
/// leader is estimated busier than the threshold (client-go `nextForReplicaReadLeader`).
#[tokio::test]
async fn a_busy_leader_sends_a_thresholded_read_to_an_idle_follower() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    f.core.attempt_log.lock().unwrap().clear();
    let leader = f.leader_store("k");
    f.core
        .cache
        .store_cache()
        .get(leader)
        .unwrap()
        .health()
        .update_estimated_wait(5_000);
    let mut opts = opts();
    opts.read.busy_threshold_ms = 100;
    let req = kvrpcpb::RawGetRequest {
        key: Bytes::from_static(b"k"),
        ..Default::default()
    };
    let (reply, _) = f
        .core
        .send_by_key(&mut bo(), b"k", LocateBy::Key, &opts, |_| Ok(req.clone()))
        .await
        .unwrap();
    assert_eq!(reply.resp.value.as_ref(), b"v");
    assert_ne!(reply.store_id, leader);
    let log = f.core.attempt_log.lock().unwrap().clone();
    assert_eq!(log.len(), 1);
    assert!(log[0].replica_read && !log[0].stale_read);
    // A write ignores the read mode: it goes to the leader.
    let put = kvrpcpb::RawPutRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"w"),
        ..Default::default()
    };
    let (reply, _) = f
        .core
        .send_by_key(&mut bo(), b"k", LocateBy::Key, &opts, |_| Ok(put.clone()))
        .await
        .unwrap();
    assert_eq!(reply.store_id, leader);
    let log = f.core.attempt_log.lock().unwrap().clone();
    assert!(!log[1].replica_read);
}

/// Whether an RPC failed is kept when the send fails in the end (client-go `rpcError`, needed
/// to report an undetermined primary commit), and over relocations.
#[tokio::test]
async fn a_send_failure_is_remembered_by_the_error_that_ends_the_request() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    let leader = f.leader_store("k");
    // A broken stream first, then a region error until the budget runs out.
    f.mock.add_fault(
        FaultRule::new(
            Matcher::tikv().store(leader).command("RawGet"),
            Action::status(tonic::Code::Unavailable, "broken"),
        )
        .times(Times::Once),
    );
    f.mock.add_fault(
        FaultRule::new(
            Matcher::tikv().command("RawGet"),
            Action::region_error(RegionErrorSpec::MaxTimestampNotSynced),
        )
        .times(Times::Always),
    );
    let req = kvrpcpb::RawGetRequest {
        key: Bytes::from_static(b"k"),
        ..Default::default()
    };
    let mut bo = Backoffer::new(Duration::from_millis(500)).without_sleeps();
    let err = f
        .core
        .send_to_key(&mut bo, b"k", &opts(), || req.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err.error, Error::BackoffExhausted { .. }),
        "{:?}",
        err.error
    );
    assert!(err.had_rpc_error);

    // Without a transport failure the same error says so.
    let mut bo = Backoffer::new(Duration::from_millis(500)).without_sleeps();
    let err = f
        .core
        .send_to_key(&mut bo, b"k", &opts(), || req.clone())
        .await
        .unwrap_err();
    assert!(!err.had_rpc_error);
}

/// A transport failure before a final region error, and before a relocation, is reported.
#[tokio::test]
async fn a_send_failure_before_a_final_region_error_or_a_relocation_is_reported() {
    let f = fixture(&["m"]).await;
    f.put("k", "v").await;
    let leader = f.leader_store("k");
    let broken = || {
        FaultRule::new(
            Matcher::tikv().store(leader).command("RawGet"),
            Action::status(tonic::Code::Unavailable, "broken"),
        )
        .times(Times::Once)
    };
    f.mock.add_fault(broken());
    f.mock.add_fault(
        FaultRule::new(
            Matcher::tikv().command("RawGet"),
            Action::region_error(RegionErrorSpec::RaftEntryTooLarge),
        )
        .times(Times::Once),
    );
    let req = kvrpcpb::RawGetRequest {
        key: Bytes::from_static(b"k"),
        ..Default::default()
    };
    let err = f
        .core
        .send_to_key(&mut bo(), b"k", &opts(), || req.clone())
        .await
        .unwrap_err();
    assert!(matches!(err.error, Error::Region(_)), "{:?}", err.error);
    assert!(err.had_rpc_error);

    // A failed send, then a split (relocation), then an answer: the answer carries the fact.
    f.mock.add_fault(broken());
    f.mock.add_fault(
        FaultRule::new(
            Matcher::tikv().command("RawGet"),
            Action::region_error(RegionErrorSpec::KeyNotInRegion),
        )
        .times(Times::Once),
    );
    let reply = f
        .core
        .send_to_key(&mut bo(), b"k", &opts(), || req.clone())
        .await
        .unwrap();
    assert_eq!(reply.resp.value.as_ref(), b"v");
    assert!(reply.had_rpc_error);
}

/// Sends a RawBatchGet per shard; relocations hand the keys back.
async fn batch_get(
    f: &Fixture,
    keys: Vec<Bytes>,
    limit: &FanOutLimit,
    batch: BatchLimit,
) -> Result<(Vec<kvrpcpb::KvPair>, usize)> {
    let core = &f.core;
    let mut bo = bo();
    let shards = std::sync::atomic::AtomicUsize::new(0);
    let answers = core
        .fan_out(
            &mut bo,
            limit,
            keys,
            |k| k.as_ref(),
            |k| k.len(),
            batch,
            |location, keys, mut bo| {
                let shards = &shards;
                async move {
                    shards.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let req = kvrpcpb::RawBatchGetRequest {
                        keys: keys.clone(),
                        ..Default::default()
                    };
                    match core
                        .send_to_region(&mut bo, &req, location.region(), &opts())
                        .await?
                    {
                        RegionOutcome::Done(reply) => Ok(ShardOutcome::Done(reply.resp.pairs)),
                        RegionOutcome::Relocate {
                            error,
                            had_rpc_error,
                        } => Ok(ShardOutcome::Relocate {
                            items: keys,
                            error,
                            had_rpc_error,
                        }),
                    }
                }
            },
        )
        .await?;
    let mut pairs: Vec<_> = answers.into_iter().flatten().collect();
    pairs.sort_by(|a, b| a.key.cmp(&b.key));
    Ok((pairs, shards.into_inner()))
}

#[tokio::test]
async fn fan_out_relocates_only_the_shard_that_moved() {
    let f = fixture(&["h", "p"]).await;
    let keys: Vec<String> = (b'a'..=b'z').map(|c| (c as char).to_string()).collect();
    for k in &keys {
        f.put(k, &format!("v{k}")).await;
    }
    let keys: Vec<Bytes> = keys.iter().map(|k| Bytes::from(k.clone())).collect();
    let limit = FanOutLimit::new(4);
    let (pairs, shards) = batch_get(&f, keys.clone(), &limit, BatchLimit::UNLIMITED)
        .await
        .unwrap();
    assert_eq!(pairs.len(), 26);
    assert_eq!(shards, 3);
    assert_eq!(limit.available(), 4, "permits returned");

    // The middle region splits: only its keys are sent again.
    f.mock.split_raw(["l"]).unwrap();
    f.mock.reset_rpc_counts();
    let (pairs, shards) = batch_get(&f, keys.clone(), &limit, BatchLimit::UNLIMITED)
        .await
        .unwrap();
    assert_eq!(pairs.len(), 26);
    assert!(pairs.iter().all(|p| p.value.as_ref() == format!("v{}", String::from_utf8_lossy(&p.key)).as_bytes()));
    // 3 shards first, then the two halves of the split region.
    assert_eq!(shards, 5);

    // Cut by count: 26 keys in 4 regions, at most 3 keys per request.
    let (pairs, shards) = batch_get(
        &f,
        keys,
        &limit,
        BatchLimit {
            max_items: 3,
            max_bytes: usize::MAX,
        },
    )
    .await
    .unwrap();
    assert_eq!(pairs.len(), 26);
    assert!(shards >= 9);
}

#[tokio::test]
async fn a_region_error_that_outlasts_the_budget_ends_the_request() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    f.mock.add_fault(
        FaultRule::new(
            Matcher::tikv().command("RawGet"),
            Action::region_error(RegionErrorSpec::MaxTimestampNotSynced),
        )
        .times(Times::Always),
    );
    let mut bo = Backoffer::new(Duration::from_millis(200)).without_sleeps();
    let err = f.get_with(&mut bo, "k").await.unwrap_err();
    assert!(matches!(err, Error::BackoffExhausted { .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_unreachable_leader_is_reached_through_a_follower_when_forwarding_is_on() {
    let f = fixture_with(&[], |c| c.enable_forwarding = true).await;
    f.put("k", "v").await;
    let leader = f.leader_store("k");
    // The client is cut off from the leader's store; the other stores still reach it.
    f.mock.add_fault(
        FaultRule::new(
            Matcher::tikv().store(leader).forwarded(false),
            Action::status(tonic::Code::Unavailable, "partitioned"),
        )
        .times(Times::Always),
    );
    f.mock.set_store_serving(leader, false).await.unwrap();
    f.mock.reset_rpc_counts();
    let mut bo = bo();
    let reply = f.get_with(&mut bo, "k").await.unwrap();
    assert_eq!(reply.resp.value.as_ref(), b"v");
    assert_eq!(reply.store_id, leader, "served by the leader itself");
    assert!(reply.had_rpc_error);
    let forwarded: u64 = f
        .mock
        .forwarded_counts()
        .iter()
        .filter(|((_, to), _)| *to == leader)
        .map(|(_, n)| *n)
        .sum();
    assert_eq!(forwarded, 1, "{:?}", f.mock.forwarded_counts());
    let store = f.core.cache.store_cache().get(leader).unwrap();
    assert_eq!(store.health().liveness(), LivenessState::Unreachable);
}

#[tokio::test]
async fn without_forwarding_an_unreachable_leader_is_not_proxied() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    let leader = f.leader_store("k");
    f.mock.add_fault(
        FaultRule::new(
            Matcher::tikv().store(leader).forwarded(false),
            Action::status(tonic::Code::Unavailable, "partitioned"),
        )
        .times(Times::Always),
    );
    f.mock.set_store_serving(leader, false).await.unwrap();
    let mut bo = Backoffer::new(Duration::from_millis(500)).without_sleeps();
    let err = f.get_with(&mut bo, "k").await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(f.mock.forwarded_counts().is_empty());
}

#[tokio::test]
async fn grouping_finds_each_region_once_and_keeps_the_input_order() {
    let f = fixture(&["h", "p"]).await;
    // Unsorted, duplicated, and on both sides of each boundary ("h" and "p" start regions).
    let keys = ["p", "a", "h", "g~", "zz", "a", "o", "h", "q", "b"];
    let items: Vec<(usize, Bytes)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (i, Bytes::copy_from_slice(k.as_bytes())))
        .collect();
    let groups = f
        .core
        .group_by_region(items, &|(_, k): &(usize, Bytes)| k.as_ref())
        .await
        .unwrap();
    let got: Vec<(Vec<u8>, Vec<usize>)> = groups
        .iter()
        .map(|(loc, items)| {
            assert!(items.iter().all(|(_, k)| loc.contains(k)), "{loc:?}");
            (
                loc.start_key().to_vec(),
                items.iter().map(|(i, _)| *i).collect(),
            )
        })
        .collect();
    // Groups in the order of their first key; keys in input order within each.
    assert_eq!(
        got,
        vec![
            (b"p".to_vec(), vec![0, 4, 8]),
            (b"".to_vec(), vec![1, 3, 5, 9]),
            (b"h".to_vec(), vec![2, 6, 7]),
        ]
    );

    // After a split the cache still holds the old region until a request finds out; the
    // grouping follows the cache, and the fan-out relocates what the split moved.
    f.mock.split_raw(["c"]).unwrap();
    let one = f
        .core
        .group_by_region(vec![Bytes::from_static(b"d")], &|k: &Bytes| k.as_ref())
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert!(one[0].0.contains(b"a") && one[0].0.contains(b"d"));
}

/// The sender keeps each store's transport client beside the cached store; when the store
/// comes back on another address (here, two stores swap addresses), the old address reaches
/// the wrong store, which answers StoreNotMatch, and the next send goes through a client made
/// for the new address.
#[tokio::test]
async fn a_store_on_a_new_address_is_sent_to_through_a_client_for_it() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    let leader = f.leader_store("k");
    let (region, _) = f.mock.region_for_raw_key(b"k").unwrap();
    let other = region
        .peers
        .iter()
        .map(|p| p.store_id)
        .find(|&s| s != leader)
        .unwrap();
    let store = f.core.cache.store_cache().get(leader).unwrap();
    let old = f.mock.store_address(leader).unwrap();
    let new = f.mock.store_address(other).unwrap();
    assert_eq!(store.kept_client_address(), Some(old.clone()));

    for s in [leader, other] {
        f.mock.stop_store(s).await.unwrap();
    }
    f.mock
        .set_store_address(leader, new.parse().unwrap())
        .unwrap();
    f.mock
        .set_store_address(other, old.parse().unwrap())
        .unwrap();
    for s in [leader, other] {
        f.mock.start_store(s).await.unwrap();
    }

    let reply = f.get_with(&mut bo(), "k").await.unwrap();
    assert_eq!(reply.resp.value.as_ref(), b"v");
    assert_eq!(reply.store_id, leader);
    assert_eq!(store.kept_client_address(), Some(new));
}

/// A leader that keeps answering NotLeader naming itself gets its attempts back each time, so
/// without a bound the request would retry forever without sleeping; the immediate retries
/// are charged to the budget, which ends the call.
#[tokio::test]
async fn not_leader_naming_the_same_leader_forever_ends_with_the_budget() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    f.mock.add_fault(
        FaultRule::new(
            Matcher::tikv().command("RawGet"),
            Action::region_error(RegionErrorSpec::NotLeader),
        )
        .times(Times::Always),
    );
    let mut bo = Backoffer::new(Duration::from_millis(100)).without_sleeps();
    let err = bounded("the NotLeader loop", f.get_with(&mut bo, "k"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BackoffExhausted { .. }), "{err}");
    assert!(bo.times_of(BackoffKind::RegionScheduling) > 0);
}

/// A stale read is validated as one from the call's read mode alone: the request as built
/// does not carry the flag (the selector writes it into each attempt), yet a stale read of
/// "the latest" is refused before anything is sent (client-go `validateReadTS` with
/// `req.StaleRead`).
#[tokio::test]
async fn a_stale_read_of_the_latest_is_refused_by_the_calls_read_mode() {
    let mock = MockCluster::builder().stores(3).start().await.unwrap();
    let cluster = crate::Cluster::connect(mock.pd_endpoints(), Config::default())
        .await
        .unwrap();
    let req = kvrpcpb::GetRequest {
        key: Bytes::from_static(b"k"),
        version: u64::MAX,
        ..Default::default()
    };
    let mut stale = opts();
    stale.read.stale_read = true;
    let err = cluster
        .sender()
        .send_by_key(&mut bo(), b"k", LocateBy::Key, &stale, |_| Ok(req.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err.error, Error::LatestStaleRead),
        "{:?}",
        err.error
    );
    let gets: u64 = mock
        .store_ids()
        .into_iter()
        .map(|s| mock.rpc_count(s, "KvGet"))
        .sum();
    assert_eq!(gets, 0, "nothing was sent");
}

impl Fixture {
    /// A store of `key`'s region other than its leader.
    fn follower_store(&self, key: &str) -> u64 {
        let leader = self.leader_store(key);
        let (region, _) = self.mock.region_for_raw_key(key.as_bytes()).unwrap();
        region
            .peers
            .iter()
            .map(|p| p.store_id)
            .find(|&s| s != leader)
            .unwrap()
    }

    /// A follower read of `key` whose first attempt goes to `follower`; the attempts made.
    async fn follower_read(
        &self,
        bo: &mut Backoffer,
        key: &str,
        follower: u64,
    ) -> (Reply<kvrpcpb::RawGetResponse>, Vec<AttemptRecord>) {
        self.core.attempt_log.lock().unwrap().clear();
        let mut opts = opts();
        opts.read.replica_read = true;
        opts.match_stores = vec![follower];
        let req = kvrpcpb::RawGetRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..Default::default()
        };
        let (reply, _) = self
            .core
            .send_by_key(
                bo,
                key.as_bytes(),
                LocateBy::Key,
                &opts,
                |_| Ok(req.clone()),
            )
            .await
            .unwrap();
        (reply, self.core.attempt_log.lock().unwrap().clone())
    }

    fn fail_on(&self, store: u64, spec: RegionErrorSpec) {
        self.mock.add_fault(
            FaultRule::new(
                Matcher::tikv().store(store).command("RawGet"),
                Action::region_error(spec),
            )
            .times(Times::Once),
        );
    }
}

/// NotLeader naming a leader that can take the next attempt turns the rest of a follower read
/// into a leader read (client-go `onNotLeader` sets `ReplicaReadLeader`): the retry goes to
/// the leader without the replica-read flag, not to another follower.
#[tokio::test]
async fn not_leader_on_a_follower_read_retries_on_the_leader_as_a_leader_read() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    let (leader, follower) = (f.leader_store("k"), f.follower_store("k"));
    f.fail_on(follower, RegionErrorSpec::NotLeader);
    let (reply, log) = f.follower_read(&mut bo(), "k", follower).await;
    assert_eq!(reply.resp.value.as_ref(), b"v");
    let stores: Vec<(u64, bool)> = log.iter().map(|a| (a.store_id, a.replica_read)).collect();
    assert_eq!(stores, vec![(follower, true), (leader, false)]);
}

/// RegionNotFound from a follower: the one retry goes to the leader as a leader read
/// (client-go `onRegionNotFound` sets `ReplicaReadLeader`).
#[tokio::test]
async fn region_not_found_on_a_follower_read_retries_on_the_leader_as_a_leader_read() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    let (leader, follower) = (f.leader_store("k"), f.follower_store("k"));
    f.fail_on(follower, RegionErrorSpec::RegionNotFound);
    let (reply, log) = f.follower_read(&mut bo(), "k", follower).await;
    assert_eq!(reply.resp.value.as_ref(), b"v");
    let stores: Vec<(u64, bool)> = log.iter().map(|a| (a.store_id, a.replica_read)).collect();
    assert_eq!(stores, vec![(follower, true), (leader, false)]);
}

/// A busy follower on a follower read is left for another replica at once, without a backoff
/// (client-go `canFastRetry` refuses only leader reads).
#[tokio::test]
async fn a_busy_follower_on_a_follower_read_is_fast_retried_elsewhere() {
    let f = fixture(&[]).await;
    f.put("k", "v").await;
    let follower = f.follower_store("k");
    f.fail_on(
        follower,
        RegionErrorSpec::ServerIsBusy {
            reason: "scheduler is busy".into(),
            estimated_wait_ms: 0,
        },
    );
    let mut bo = bo();
    let (reply, log) = f.follower_read(&mut bo, "k", follower).await;
    assert_eq!(reply.resp.value.as_ref(), b"v");
    assert_eq!(log.len(), 2);
    assert_ne!(log[1].store_id, follower);
    assert_eq!(bo.total_times(), 0, "no backoff before the fast retry");
}

/// TiKV bounds a write's execution by client-go's `MaxWriteExecutionTime` (20 s), below the
/// client's 30 s timeout; a read's bound is the attempt's timeout.
#[tokio::test]
async fn writes_are_bounded_in_tikv_below_the_clients_timeout() {
    let f = fixture(&[]).await;
    f.core.attempt_log.lock().unwrap().clear();
    let opts = CallOptions::new(Duration::from_secs(30));
    let put = kvrpcpb::RawPutRequest {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        ..Default::default()
    };
    f.core
        .send_by_key(&mut bo(), b"k", LocateBy::Key, &opts, |_| Ok(put.clone()))
        .await
        .unwrap();
    let get = kvrpcpb::RawGetRequest {
        key: Bytes::from_static(b"k"),
        ..Default::default()
    };
    f.core
        .send_by_key(&mut bo(), b"k", LocateBy::Key, &opts, |_| Ok(get.clone()))
        .await
        .unwrap();
    let log = f.core.attempt_log.lock().unwrap().clone();
    let limits: Vec<u64> = log.iter().map(|a| a.max_execution_ms).collect();
    assert_eq!(limits, vec![20_000, 30_000]);
}

/// The sleeps a shard takes are merged back into the call's backoffer (client-go
/// `UpdateUsingForked`), so the budget bounds a fan-out; a shard's failed RPC is reported by
/// the error that ends the call.
#[tokio::test]
async fn fan_out_spends_the_calls_budget_and_reports_failed_rpcs() {
    let f = fixture(&["m"]).await;
    let keys = vec![Bytes::from_static(b"a"), Bytes::from_static(b"z")];
    let leader = f.leader_store("a");
    async fn run(
        core: &SenderCore,
        keys: Vec<Bytes>,
    ) -> (
        std::result::Result<Vec<Vec<kvrpcpb::KvPair>>, SendError>,
        Backoffer,
    ) {
        let mut bo = bo();
        let limit = FanOutLimit::new(4);
        let result = core
            .fan_out(
                &mut bo,
                &limit,
                keys,
                |k| k.as_ref(),
                |k| k.len(),
                BatchLimit::UNLIMITED,
                |location, keys, mut bo| async move {
                    let req = kvrpcpb::RawBatchGetRequest {
                        keys: keys.clone(),
                        ..Default::default()
                    };
                    match core
                        .send_to_region(&mut bo, &req, location.region(), &opts())
                        .await?
                    {
                        RegionOutcome::Done(reply) => Ok(ShardOutcome::Done(reply.resp.pairs)),
                        RegionOutcome::Relocate {
                            error,
                            had_rpc_error,
                        } => Ok(ShardOutcome::Relocate {
                            items: keys,
                            error,
                            had_rpc_error,
                        }),
                    }
                },
            )
            .await;
        (result, bo)
    }
    // One shard backs off once: the call's backoffer has the sleep.
    f.mock.add_fault(
        FaultRule::new(
            Matcher::tikv().command("RawBatchGet").key("a"),
            Action::region_error(RegionErrorSpec::MaxTimestampNotSynced),
        )
        .times(Times::Once),
    );
    let (result, bo) = run(&f.core, keys.clone()).await;
    result.unwrap();
    assert_eq!(bo.times_of(BackoffKind::MaxTsNotSynced), 1);
    assert!(bo.total_sleep() > Duration::ZERO);

    // A failed send then a final error in one shard: the call's error says an RPC failed.
    f.mock.add_fault(
        FaultRule::new(
            Matcher::tikv()
                .store(leader)
                .command("RawBatchGet")
                .key("a"),
            Action::status(tonic::Code::Unavailable, "broken"),
        )
        .times(Times::Once),
    );
    f.mock.add_fault(
        FaultRule::new(
            Matcher::tikv().command("RawBatchGet").key("a"),
            Action::region_error(RegionErrorSpec::RaftEntryTooLarge),
        )
        .times(Times::Once),
    );
    let (result, _) = run(&f.core, keys).await;
    let err = result.unwrap_err();
    assert!(matches!(err.error, Error::Region(_)), "{:?}", err.error);
    assert!(err.had_rpc_error);
}
