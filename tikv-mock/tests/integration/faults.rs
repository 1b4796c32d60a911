//! Every fault action end to end through gRPC: what the client sees (region errors filled from
//! live state, key errors, statuses, delays, dropped and held answers) and whether the write was
//! applied (read back once the rule is gone), unary and batched, before execution and after
//! apply; how often rules fire (once, N, always, seeded probability); what they match (store,
//! command, region, keys, start ts, transport, service); PD rules; removing rules under traffic;
//! and clearing rules releasing held requests.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use tikv_mock::proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tikv_mock::proto::{errorpb, kvrpcpb, pdpb};
use tikv_mock::{
    Action, ApiVersion, FaultRule, HangHandle, ManualClock, Matcher, MockCluster, Phase,
    RegionErrorSpec, Times,
};
use tokio::time::Instant;
use tokio_stream::StreamExt;

/// Where the manual clock starts: 2023-11-14T22:13:20Z.
const START_MS: u64 = 1_700_000_000_000;

/// How long a client waits for an answer that must not come.
const GIVE_UP: Duration = Duration::from_millis(300);

/// Three stores, regions ["", "m") and ["m", ""), with their leaders on different stores.
async fn two_regions() -> (MockCluster, Target, Target) {
    let cluster = MockCluster::builder()
        .split_keys([b"m"])
        .manual_clock(ManualClock::new(START_MS))
        .start()
        .await
        .unwrap();
    let left = target(&cluster, b"a", ApiVersion::V1).await;
    let (right_region, right_leader) = cluster.region_for_raw_key(b"z").unwrap();
    if right_leader.unwrap().store_id == left.store {
        let other = right_region
            .peers
            .iter()
            .find(|p| p.store_id != left.store)
            .unwrap();
        cluster
            .transfer_leader(right_region.id, other.store_id)
            .unwrap();
    }
    let right = target(&cluster, b"z", ApiVersion::V1).await;
    assert_ne!(left.store, right.store);
    (cluster, left, right)
}

fn rule(matcher: Matcher, action: Action) -> FaultRule {
    FaultRule::new(matcher, action)
}

fn busy() -> Action {
    Action::region_error(RegionErrorSpec::ServerIsBusy {
        reason: "scheduler is busy".to_owned(),
        estimated_wait_ms: 5,
    })
}

/// Whether a RawGet answer is the injected ServerIsBusy (anything else must be a clean read).
fn busy_answer(resp: &kvrpcpb::RawGetResponse) -> bool {
    match &resp.region_error {
        Some(e) => {
            assert!(e.server_is_busy.is_some(), "{e:?}");
            true
        }
        None => {
            assert!(resp.error.is_empty(), "{resp:?}");
            false
        }
    }
}

/// Waits until a store has counted `n` requests of a command (the request reached the fault
/// engine).
async fn wait_for_count(cluster: &MockCluster, store: u64, command: &str, n: u64) {
    bounded("request to arrive", async {
        while cluster.rpc_count(store, command) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

// ----- RegionError ----------------------------------------------------------------------------

type Check = Box<dyn Fn(&errorpb::Error)>;

#[tokio::test]
async fn every_region_error_spec_is_filled_from_live_state() {
    let (cluster, mut left, mut right) = two_regions().await;
    assert!(left.put(b"a", b"1").await.error.is_empty());
    let l = left.region.clone();
    let leader = left.leader;
    let store = left.store;
    let version = l.region_epoch.unwrap().version;
    let right_id = right.region.id;
    let right_region = right.region.clone();
    let left_region = l.clone();
    let in_use: Vec<u64> = cluster
        .regions()
        .iter()
        .flat_map(|r| std::iter::once(r.id).chain(r.peers.iter().map(|p| p.id)))
        .chain(cluster.store_ids())
        .collect();
    let raw = errorpb::Error {
        message: "TiKV is Closing".to_owned(),
        ..Default::default()
    };
    let raw_expected = raw.clone();
    let id = l.id;

    let cases: Vec<(RegionErrorSpec, Check)> = vec![
        (
            RegionErrorSpec::NotLeader,
            Box::new(move |e| {
                let nl = e.not_leader.as_ref().unwrap();
                assert_eq!((nl.region_id, nl.leader), (id, Some(leader)));
                assert_eq!(
                    e.message,
                    format!(
                        "peer is not leader for region {id}, leader may Some(id: {} store_id: {})",
                        leader.id, leader.store_id
                    )
                );
            }),
        ),
        (
            RegionErrorSpec::NotLeaderNoLeader,
            Box::new(move |e| {
                let nl = e.not_leader.as_ref().unwrap();
                assert_eq!((nl.region_id, nl.leader), (id, None));
            }),
        ),
        (
            // The left region was split off: it lists only itself.
            RegionErrorSpec::EpochNotMatch,
            Box::new(move |e| {
                let current = &e.epoch_not_match.as_ref().unwrap().current_regions;
                assert_eq!(current, &vec![left_region.clone()]);
            }),
        ),
        (
            RegionErrorSpec::RegionNotFound,
            Box::new(move |e| {
                assert_eq!(e.region_not_found.as_ref().unwrap().region_id, id);
                assert_eq!(e.message, format!("region {id} not found"));
            }),
        ),
        (
            RegionErrorSpec::KeyNotInRegion,
            Box::new(move |e| {
                let k = e.key_not_in_region.as_ref().unwrap();
                assert_eq!(
                    (&k.key[..], k.region_id, &k.start_key[..], &k.end_key[..]),
                    (&b"m"[..], id, &b""[..], &b"m"[..])
                );
            }),
        ),
        (
            RegionErrorSpec::ServerIsBusy {
                reason: "raftstore is busy".to_owned(),
                estimated_wait_ms: 40,
            },
            Box::new(|e| {
                let busy = e.server_is_busy.as_ref().unwrap();
                assert_eq!(
                    (busy.reason.as_str(), busy.estimated_wait_ms),
                    ("raftstore is busy", 40)
                );
            }),
        ),
        (
            RegionErrorSpec::StaleCommand,
            Box::new(|e| {
                assert!(e.stale_command.is_some());
                assert_eq!(e.message, "stale command");
            }),
        ),
        (
            RegionErrorSpec::StoreNotMatch,
            Box::new(move |e| {
                let snm = e.store_not_match.as_ref().unwrap();
                assert_eq!(snm.actual_store_id, store);
            }),
        ),
        (
            RegionErrorSpec::RaftEntryTooLarge,
            Box::new(move |e| {
                let r = e.raft_entry_too_large.as_ref().unwrap();
                assert_eq!((r.region_id, r.entry_size), (id, 8 * 1024 * 1024 + 1));
            }),
        ),
        (
            RegionErrorSpec::MaxTimestampNotSynced,
            Box::new(|e| assert!(e.max_timestamp_not_synced.is_some())),
        ),
        (
            RegionErrorSpec::ReadIndexNotReady,
            Box::new(move |e| {
                let r = e.read_index_not_ready.as_ref().unwrap();
                assert_eq!(
                    (r.region_id, r.reason.as_str()),
                    (id, "can not read index due to split")
                );
            }),
        ),
        (
            RegionErrorSpec::ProposalInMergingMode,
            Box::new(move |e| {
                assert_eq!(e.proposal_in_merging_mode.as_ref().unwrap().region_id, id);
            }),
        ),
        (
            RegionErrorSpec::DataIsNotReady,
            Box::new(move |e| {
                let d = e.data_is_not_ready.as_ref().unwrap();
                assert_eq!((d.region_id, d.peer_id), (id, leader.id));
                assert_eq!(d.safe_ts, (START_MS - 1_000) << 18);
            }),
        ),
        (
            RegionErrorSpec::RegionNotInitialized,
            Box::new(move |e| {
                assert_eq!(e.region_not_initialized.as_ref().unwrap().region_id, id);
            }),
        ),
        (
            RegionErrorSpec::DiskFull,
            Box::new(move |e| {
                let d = e.disk_full.as_ref().unwrap();
                assert_eq!(d.store_id, vec![store]);
                assert!(d.reason.contains("disk full"), "{d:?}");
            }),
        ),
        (
            RegionErrorSpec::RecoveryInProgress,
            Box::new(move |e| {
                assert_eq!(e.recovery_in_progress.as_ref().unwrap().region_id, id);
            }),
        ),
        (
            RegionErrorSpec::FlashbackInProgress,
            Box::new(move |e| {
                let f = e.flashback_in_progress.as_ref().unwrap();
                assert_eq!(f.region_id, id);
                assert_eq!(f.flashback_start_ts >> 18, START_MS);
            }),
        ),
        (
            RegionErrorSpec::FlashbackNotPrepared,
            Box::new(move |e| {
                assert_eq!(e.flashback_not_prepared.as_ref().unwrap().region_id, id);
            }),
        ),
        (
            RegionErrorSpec::IsWitness,
            Box::new(move |e| assert_eq!(e.is_witness.as_ref().unwrap().region_id, id)),
        ),
        (
            RegionErrorSpec::MismatchPeerId,
            Box::new(move |e| {
                let m = e.mismatch_peer_id.as_ref().unwrap();
                assert_eq!(m.request_peer_id, leader.id);
                assert!(!in_use.contains(&m.store_peer_id), "{m:?}");
            }),
        ),
        (
            RegionErrorSpec::BucketVersionNotMatch,
            Box::new(move |e| {
                let bv = e.bucket_version_not_match.as_ref().unwrap();
                assert_eq!(bv.version, version);
                assert_eq!(bv.keys, vec![Bytes::new(), b(b"m")]);
            }),
        ),
        (
            RegionErrorSpec::UndeterminedResult,
            Box::new(|e| {
                let u = e.undetermined_result.as_ref().unwrap();
                assert_eq!(u.message, e.message);
            }),
        ),
        (
            RegionErrorSpec::Raw(raw),
            Box::new(move |e| assert_eq!(e, &raw_expected)),
        ),
    ];
    assert_eq!(cases.len(), 23, "one case per RegionErrorSpec variant");

    for (spec, check) in cases {
        cluster.add_fault(rule(
            Matcher::tikv().command("RawGet").region(id),
            Action::region_error(spec.clone()),
        ));
        let resp = left.get(b"a").await;
        let e = resp
            .region_error
            .as_ref()
            .unwrap_or_else(|| panic!("{spec:?}: no region error in {resp:?}"));
        assert!(!e.message.is_empty(), "{spec:?}: no message");
        check(e);
        // Nothing but the region error: no value, no "not found", no other error.
        assert!(
            resp.value.is_empty() && !resp.not_found && resp.error.is_empty(),
            "{spec:?}: {resp:?}"
        );
        // The rule fired once and is gone.
        assert_eq!(left.value(b"a").await, Some(b(b"1")), "{spec:?}");
    }

    // The original region lists itself first, then the region its split created.
    cluster.add_fault(rule(
        Matcher::tikv().command("RawGet").region(right_id),
        Action::region_error(RegionErrorSpec::EpochNotMatch),
    ));
    let resp = right.get(b"z").await;
    let current = resp
        .region_error
        .unwrap()
        .epoch_not_match
        .unwrap()
        .current_regions;
    assert_eq!(current, vec![right_region, l]);
    assert_eq!(right.value(b"z").await, None);
}

#[tokio::test]
async fn a_region_error_before_execution_writes_nothing_and_after_apply_writes() {
    let (cluster, mut t, _) = two_regions().await;
    cluster.add_fault(rule(
        Matcher::tikv().command("RawPut"),
        Action::region_error(RegionErrorSpec::NotLeader),
    ));
    let resp = t.put(b"a", b"before").await;
    assert_eq!(
        resp.region_error.unwrap().not_leader.unwrap().leader,
        Some(t.leader)
    );
    assert_eq!(t.value(b"a").await, None);

    cluster.add_fault(
        rule(
            Matcher::tikv().command("RawPut"),
            Action::region_error(RegionErrorSpec::NotLeader),
        )
        .phase(Phase::AfterApply),
    );
    let resp = t.put(b"a", b"after").await;
    assert!(resp.region_error.unwrap().not_leader.is_some());
    assert_eq!(t.value(b"a").await, Some(b(b"after")));
}

// ----- KeyError -------------------------------------------------------------------------------

#[tokio::test]
async fn a_key_error_on_a_raw_put_is_its_error_string() {
    let (cluster, mut t, _) = two_regions().await;
    cluster.add_fault(rule(
        Matcher::tikv().command("RawPut"),
        Action::key_error(kvrpcpb::KeyError {
            abort: "injected abort".to_owned(),
            ..Default::default()
        }),
    ));
    let resp = t.put(b"a", b"1").await;
    // Raw responses have a string error: the mock puts the abort text there.
    assert_eq!(resp.error, "injected abort");
    assert!(resp.region_error.is_none());
    assert_eq!(t.value(b"a").await, None);

    // Without an abort text, the retryable text.
    cluster.add_fault(
        rule(
            Matcher::tikv().command("RawPut"),
            Action::key_error(kvrpcpb::KeyError {
                retryable: "injected retryable".to_owned(),
                ..Default::default()
            }),
        )
        .after_apply(),
    );
    let resp = t.put(b"a", b"2").await;
    assert_eq!(resp.error, "injected retryable");
    // After apply: the write happened although the client was told it failed.
    assert_eq!(t.value(b"a").await, Some(b(b"2")));

    // Batched: the same string in the sub-response.
    cluster.add_fault(rule(
        Matcher::tikv().command("RawPut").batched(true),
        Action::key_error(kvrpcpb::KeyError {
            abort: "batched abort".to_owned(),
            ..Default::default()
        }),
    ));
    let mut stream = open_stream(&mut t.client).await;
    stream
        .send(vec![(1, batched_put(&t.ctx, b"a", b"3"))])
        .await;
    let (_, by_id) = stream.collect(&[1]).await;
    assert_eq!(raw_put_of(&by_id[&1]).error, "batched abort");
    assert_eq!(t.value(b"a").await, Some(b(b"2")));
}

// ----- Status ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_status_fails_the_call_or_the_whole_stream() {
    let (cluster, mut t, _) = two_regions().await;
    cluster.add_fault(rule(
        Matcher::tikv().command("RawPut"),
        Action::status(tonic::Code::Unavailable, "injected outage"),
    ));
    let req = t.put_req(b"a", b"1");
    let status = bounded("RawPut", t.client.raw_put(req)).await.unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, "injected outage")
    );
    assert_eq!(t.value(b"a").await, None);

    // After apply: failed for the client, written in the store.
    cluster.add_fault(
        rule(
            Matcher::tikv().command("RawPut"),
            Action::status(tonic::Code::DeadlineExceeded, "too late"),
        )
        .after_apply(),
    );
    let req = t.put_req(b"a", b"2");
    let status = bounded("RawPut", t.client.raw_put(req)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert_eq!(t.value(b"a").await, Some(b(b"2")));

    // Batched: the stream fails with the status, nothing of the failing request is applied.
    cluster.add_fault(rule(
        Matcher::tikv().command("RawPut").batched(true),
        Action::status(tonic::Code::Internal, "stream broken"),
    ));
    let mut stream = open_stream(&mut t.client).await;
    stream
        .send(vec![(1, batched_put(&t.ctx, b"a", b"3"))])
        .await;
    let status = bounded("BatchCommands", stream.recv.message())
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Internal, "stream broken")
    );
    assert_eq!(t.value(b"a").await, Some(b(b"2")));
}

// ----- Delay ----------------------------------------------------------------------------------

#[tokio::test]
async fn a_delay_holds_the_answer_at_least_that_long() {
    let (cluster, mut t, _) = two_regions().await;
    let delay = Duration::from_millis(120);
    cluster.add_fault(rule(
        Matcher::tikv().command("RawGet"),
        Action::delay(delay),
    ));
    let started = Instant::now();
    assert_eq!(t.value(b"a").await, None);
    assert!(started.elapsed() >= delay);

    // After apply: written, then answered late.
    cluster.add_fault(
        rule(Matcher::tikv().command("RawPut"), Action::delay(delay)).phase(Phase::AfterApply),
    );
    let started = Instant::now();
    assert!(t.put(b"a", b"1").await.error.is_empty());
    assert!(started.elapsed() >= delay);
    assert_eq!(t.value(b"a").await, Some(b(b"1")));

    // Batched: the delayed sub-request does not hold up the other one.
    cluster.add_fault(rule(
        Matcher::tikv().command("RawGet").batched(true).key(b"c"),
        Action::delay(delay),
    ));
    let mut stream = open_stream(&mut t.client).await;
    let started = Instant::now();
    stream
        .send(vec![
            (1, batched_get(&t.ctx, b"c")),
            (2, batched_get(&t.ctx, b"a")),
        ])
        .await;
    let (order, by_id) = stream.collect(&[1, 2]).await;
    assert!(started.elapsed() >= delay);
    assert_eq!(order, [2, 1]);
    assert_eq!(raw_get_of(&by_id[&2]).value, b(b"1"));
    assert!(raw_get_of(&by_id[&1]).not_found);
}

// ----- Drop -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_dropped_answer_never_arrives() {
    let (cluster, mut t, _) = two_regions().await;
    // Unary: the client gives up; nothing was written.
    cluster.add_fault(rule(Matcher::tikv().command("RawPut"), Action::Drop));
    let req = t.put_req(b"a", b"1");
    let mut client = t.client.clone();
    assert!(
        tokio::time::timeout(GIVE_UP, client.raw_put(req))
            .await
            .is_err(),
        "a dropped answer arrived"
    );
    assert_eq!(t.value(b"a").await, None);

    // Batched: no answer for that id, the others in the same message are answered. The
    // delayed Empty is answered after anything answered at once, so its arrival closes the
    // window in which the dropped one could have come.
    cluster.add_fault(rule(
        Matcher::tikv().command("RawPut").batched(true),
        Action::Drop,
    ));
    let mut stream = open_stream(&mut t.client).await;
    stream
        .send(vec![
            (1, batched_put(&t.ctx, b"a", b"2")),
            (2, batched_get(&t.ctx, b"a")),
            (3, batched_empty(3, 20)),
        ])
        .await;
    let (order, by_id) = stream.collect(&[2, 3]).await;
    assert_eq!(order, [2, 3]);
    assert!(!by_id.contains_key(&1));
    assert!(raw_get_of(&by_id[&2]).not_found);
    assert_eq!(t.value(b"a").await, None);
}

#[tokio::test]
async fn a_drop_after_apply_writes_but_answers_nothing() {
    let (cluster, mut t, _) = two_regions().await;
    cluster.add_fault(rule(Matcher::tikv().command("RawPut"), Action::Drop).after_apply());
    let req = t.put_req(b"a", b"1");
    let mut client = t.client.clone();
    assert!(
        tokio::time::timeout(GIVE_UP, client.raw_put(req))
            .await
            .is_err()
    );
    assert_eq!(t.value(b"a").await, Some(b(b"1")));

    cluster.add_fault(
        rule(
            Matcher::tikv().command("RawPut").batched(true),
            Action::Drop,
        )
        .after_apply(),
    );
    let mut stream = open_stream(&mut t.client).await;
    stream
        .send(vec![
            (1, batched_put(&t.ctx, b"a", b"2")),
            (2, batched_empty(2, 20)),
        ])
        .await;
    let (order, _) = stream.collect(&[2]).await;
    assert_eq!(order, [2]);
    assert_eq!(t.value(b"a").await, Some(b(b"2")));
}

// ----- Hang -----------------------------------------------------------------------------------

#[tokio::test]
async fn a_hang_holds_the_request_until_released() {
    let (cluster, mut t, _) = two_regions().await;
    assert!(t.put(b"a", b"1").await.error.is_empty());
    let hang = HangHandle::new();
    cluster.add_fault(rule(
        Matcher::tikv().command("RawPut").batched(false),
        Action::hang(&hang),
    ));
    let (done_tx, mut done) = tokio::sync::oneshot::channel();
    let mut client = t.client.clone();
    let req = t.put_req(b"a", b"2");
    tokio::spawn(async move {
        let resp = client.raw_put(req).await;
        let _ = done_tx.send(resp);
    });
    wait_for_count(&cluster, t.store, "RawPut", 2).await;
    // Other requests go through meanwhile; the held one is neither answered nor applied.
    assert_eq!(t.value(b"a").await, Some(b(b"1")));
    assert!(t.put(b"b", b"x").await.error.is_empty());
    assert_eq!(t.value(b"b").await, Some(b(b"x")));
    assert!(matches!(
        done.try_recv(),
        Err(tokio::sync::oneshot::error::TryRecvError::Empty)
    ));
    assert!(!hang.is_released());
    hang.release();
    let resp = bounded("released RawPut", done).await.unwrap().unwrap();
    assert!(resp.into_inner().error.is_empty());
    assert_eq!(t.value(b"a").await, Some(b(b"2")));

    // After apply, batched: applied at once, answered on release; the other sub-request first.
    let hang = HangHandle::new();
    cluster.add_fault(
        rule(
            Matcher::tikv().command("RawPut").batched(true),
            Action::hang(&hang),
        )
        .after_apply(),
    );
    let mut stream = open_stream(&mut t.client).await;
    stream
        .send(vec![
            (1, batched_put(&t.ctx, b"a", b"3")),
            (2, batched_get(&t.ctx, b"b")),
        ])
        .await;
    let (order, _) = stream.collect(&[2]).await;
    assert_eq!(order, [2]);
    assert_eq!(t.value(b"a").await, Some(b(b"3")));
    hang.release();
    let (order, by_id) = stream.collect(&[1]).await;
    assert_eq!(order, [1]);
    assert!(raw_put_of(&by_id[&1]).error.is_empty());
}

// ----- Times ----------------------------------------------------------------------------------

/// Sends `n` RawGets one after another; which of them got the injected ServerIsBusy.
async fn busy_pattern(t: &mut Target, n: usize) -> Vec<bool> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let resp = t.get(b"a").await;
        out.push(busy_answer(&resp));
    }
    out
}

#[tokio::test]
async fn rules_fire_once_n_times_always_or_with_a_seeded_probability() {
    let (cluster, mut t, _) = two_regions().await;
    let m = || Matcher::tikv().command("RawGet");

    cluster.add_fault(rule(m(), busy()));
    assert_eq!(busy_pattern(&mut t, 3).await, [true, false, false]);

    cluster.add_fault(rule(m(), busy()).times(Times::N(3)));
    assert_eq!(
        busy_pattern(&mut t, 5).await,
        [true, true, true, false, false]
    );

    cluster.add_fault(rule(m(), busy()).times(Times::N(0)));
    assert_eq!(busy_pattern(&mut t, 2).await, [false, false]);

    let always = cluster.add_fault(rule(m(), busy()).times(Times::Always));
    assert!(busy_pattern(&mut t, 20).await.into_iter().all(|b| b));
    assert!(cluster.remove_fault(always));
    assert!(!cluster.remove_fault(always));
    assert_eq!(busy_pattern(&mut t, 2).await, [false, false]);

    // A seeded probability gives the same sequence every time, and a mix for p = 0.5.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let id = cluster.add_fault(rule(m(), busy()).times(Times::probability(0.5, 42)));
        runs.push(busy_pattern(&mut t, 64).await);
        assert!(cluster.remove_fault(id));
    }
    assert_eq!(runs[0], runs[1]);
    let fired = runs[0].iter().filter(|b| **b).count();
    assert!(fired > 0 && fired < 64, "{fired} of 64");
    let other_seed = cluster.add_fault(rule(m(), busy()).times(Times::probability(0.5, 43)));
    assert_ne!(busy_pattern(&mut t, 64).await, runs[0]);
    cluster.remove_fault(other_seed);

    let never = cluster.add_fault(rule(m(), busy()).times(Times::probability(0.0, 1)));
    assert!(busy_pattern(&mut t, 16).await.into_iter().all(|b| !b));
    cluster.remove_fault(never);
    let every = cluster.add_fault(rule(m(), busy()).times(Times::probability(1.0, 1)));
    assert!(busy_pattern(&mut t, 16).await.into_iter().all(|b| b));
    cluster.remove_fault(every);
}

// ----- matchers -------------------------------------------------------------------------------

#[tokio::test]
async fn matchers_select_by_store_command_region_and_keys() {
    let (cluster, mut left, mut right) = two_regions().await;
    assert!(left.put(b"a", b"1").await.error.is_empty());
    let always = |m: Matcher| rule(m, busy()).times(Times::Always);

    let id = cluster.add_fault(always(Matcher::tikv().store(left.store)));
    assert!(busy_answer(&left.get(b"a").await));
    assert!(!busy_answer(&right.get(b"z").await));
    cluster.remove_fault(id);

    let id = cluster.add_fault(always(Matcher::tikv().command("RawPut")));
    assert!(!busy_answer(&left.get(b"a").await));
    assert!(left.put(b"a", b"2").await.region_error.is_some());
    cluster.remove_fault(id);

    let id = cluster.add_fault(always(Matcher::tikv().region(right.region.id)));
    assert!(!busy_answer(&left.get(b"a").await));
    assert!(busy_answer(&right.get(b"z").await));
    cluster.remove_fault(id);

    // [b, d): b and c match, a and d do not; an empty end is unbounded.
    let id = cluster.add_fault(always(Matcher::tikv().keys(b"b", b"d")));
    let mut pattern = Vec::new();
    for k in [&b"a"[..], b"b", b"c", b"d"] {
        pattern.push(busy_answer(&left.get(k).await));
    }
    assert_eq!(pattern, [false, true, true, false]);
    cluster.remove_fault(id);
    let id = cluster.add_fault(always(Matcher::tikv().keys(b"x", b"")));
    assert!(busy_answer(&right.get(b"zzz").await));
    assert!(!busy_answer(&right.get(b"w").await));
    cluster.remove_fault(id);
    let id = cluster.add_fault(always(Matcher::tikv().key(b"k")));
    assert!(busy_answer(&left.get(b"k").await));
    assert!(!busy_answer(&left.get(b"k\0").await));
    assert!(!busy_answer(&left.get(b"j").await));
    cluster.remove_fault(id);

    // A PD rule never fires on a store, whatever else it names.
    let id = cluster.add_fault(always(Matcher::pd().command("RawGet")));
    assert!(!busy_answer(&left.get(b"a").await));
    cluster.remove_fault(id);
    assert_eq!(left.value(b"a").await, Some(b(b"1")));
}

#[tokio::test]
async fn a_start_ts_matcher_fires_only_for_that_transaction() {
    let (cluster, mut t, _) = two_regions().await;
    cluster.add_fault(
        rule(
            Matcher::tikv().command("KvGet").start_ts(100),
            Action::region_error(RegionErrorSpec::NotLeader),
        )
        .times(Times::Always),
    );
    let kv_get = |version: u64| kvrpcpb::GetRequest {
        context: Some(t.ctx.clone()),
        key: b(b"a"),
        version,
        ..Default::default()
    };
    // The matching transaction gets the rule's region error instead of its answer...
    let resp = bounded("KvGet", t.client.clone().kv_get(kv_get(100)))
        .await
        .unwrap()
        .into_inner();
    let nl = resp.region_error.unwrap().not_leader.unwrap();
    assert_eq!(nl.leader, Some(t.leader));
    // ...another transaction reaches execution and gets an ordinary answer.
    let resp = bounded("KvGet", t.client.clone().kv_get(kv_get(200)))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region_error.is_none() && resp.error.is_none());
    assert!(resp.not_found);
    // Raw requests have no start ts, so they never match.
    assert_eq!(t.value(b"a").await, None);
}

#[tokio::test]
async fn batched_and_unary_matchers_select_the_transport() {
    let (cluster, mut t, _) = two_regions().await;
    assert!(t.put(b"a", b"1").await.error.is_empty());
    let mut stream = open_stream(&mut t.client).await;
    let batched_busy = |cmd: &RespCmd| {
        let r = raw_get_of(cmd);
        r.region_error.is_some()
    };

    let id = cluster.add_fault(rule(Matcher::tikv().batched(true), busy()).times(Times::Always));
    assert!(!busy_answer(&t.get(b"a").await));
    stream.send(vec![(1, batched_get(&t.ctx, b"a"))]).await;
    let (_, by_id) = stream.collect(&[1]).await;
    assert!(batched_busy(&by_id[&1]));
    cluster.remove_fault(id);

    let id = cluster.add_fault(rule(Matcher::tikv().batched(false), busy()).times(Times::Always));
    assert!(busy_answer(&t.get(b"a").await));
    stream.send(vec![(2, batched_get(&t.ctx, b"a"))]).await;
    let (_, by_id) = stream.collect(&[2]).await;
    assert!(!batched_busy(&by_id[&2]));
    assert_eq!(raw_get_of(&by_id[&2]).value, b(b"1"));
    cluster.remove_fault(id);
}

// ----- PD -------------------------------------------------------------------------------------

#[tokio::test]
async fn pd_rules_fail_tso_streams_and_delay_or_hold_region_queries() {
    let (cluster, _, _) = two_regions().await;
    let mut pd = pd_client(&cluster).await;
    let tso = |cluster: &MockCluster| pdpb::TsoRequest {
        header: pd_header(cluster),
        count: 1,
        dc_location: String::new(),
    };

    cluster.add_fault(rule(
        Matcher::pd().command("Tso"),
        Action::status(tonic::Code::Unavailable, "tso unavailable"),
    ));
    let mut stream = bounded("Tso", pd.tso(tokio_stream::iter(vec![tso(&cluster)])))
        .await
        .unwrap()
        .into_inner();
    let status = bounded("Tso response", stream.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::Unavailable, "tso unavailable")
    );
    // The rule fired once: a new stream gets timestamps.
    let mut stream = bounded("Tso", pd.tso(tokio_stream::iter(vec![tso(&cluster)])))
        .await
        .unwrap()
        .into_inner();
    let ts = bounded("Tso response", stream.next())
        .await
        .unwrap()
        .unwrap()
        .timestamp
        .unwrap();
    assert_eq!(ts.physical as u64, START_MS);

    let get_region = pdpb::GetRegionRequest {
        header: pd_header(&cluster),
        region_key: b(b"a"),
        need_buckets: false,
    };
    let delay = Duration::from_millis(100);
    cluster.add_fault(rule(
        Matcher::pd().command("GetRegion"),
        Action::delay(delay),
    ));
    let started = Instant::now();
    let resp = bounded("GetRegion", pd.get_region(get_region.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(started.elapsed() >= delay);
    assert!(resp.region.unwrap().end_key == b(b"m"));

    // A PD rule never fires on a store request, nor a store rule on PD.
    let store_rule = cluster
        .add_fault(rule(Matcher::tikv().command("GetRegion"), Action::Drop).times(Times::Always));
    assert!(
        bounded("GetRegion", pd.get_region(get_region.clone()))
            .await
            .is_ok()
    );
    cluster.remove_fault(store_rule);

    // Dropped: the client gives up. Held: answered on release.
    cluster.add_fault(rule(Matcher::pd().command("GetMembers"), Action::Drop));
    let mut client = pd.clone();
    assert!(
        tokio::time::timeout(
            GIVE_UP,
            client.get_members(pdpb::GetMembersRequest::default())
        )
        .await
        .is_err()
    );
    let hang = HangHandle::new();
    cluster.add_fault(rule(
        Matcher::pd().command("GetRegion"),
        Action::hang(&hang),
    ));
    let mut client = pd.clone();
    let held = tokio::spawn(async move { client.get_region(get_region).await });
    // Another PD call completes meanwhile.
    assert!(
        bounded(
            "GetMembers",
            pd.get_members(pdpb::GetMembersRequest::default())
        )
        .await
        .is_ok()
    );
    assert!(!held.is_finished());
    hang.release();
    assert!(bounded("held GetRegion", held).await.unwrap().is_ok());
}

// ----- rule lifecycle -------------------------------------------------------------------------

#[tokio::test]
async fn removing_a_rule_under_traffic_switches_cleanly() {
    let (cluster, t, _) = two_regions().await;
    let id =
        cluster.add_fault(rule(Matcher::tikv().command("RawGet"), busy()).times(Times::Always));
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut traffic = Vec::new();
    for _ in 0..2 {
        let (mut t, tx, stop) = (t.clone(), tx.clone(), stop.clone());
        traffic.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let busy = busy_answer(&t.get(b"a").await);
                seen.push(busy);
                let _ = tx.send(busy);
            }
            seen
        }));
    }
    drop(tx);
    // Enough traffic under the rule, then remove it and wait for traffic without it.
    let mut faulted = 0;
    while faulted < 10 {
        if bounded("traffic", outcomes.recv()).await.unwrap() {
            faulted += 1;
        }
    }
    assert!(cluster.remove_fault(id));
    let mut clean = 0;
    while clean < 10 {
        if !bounded("traffic", outcomes.recv()).await.unwrap() {
            clean += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in traffic {
        // Each sender saw the rule, then no rule: once clean, never faulted again.
        let seen = bounded("traffic end", task).await.unwrap();
        let first_clean = seen.iter().position(|b| !b).unwrap_or(seen.len());
        assert!(seen[first_clean..].iter().all(|b| !b), "{seen:?}");
    }
}

#[tokio::test]
async fn clear_faults_releases_held_requests_and_removes_every_rule() {
    let (cluster, mut t, _) = two_regions().await;
    let unary_hang = HangHandle::new();
    let batched_hang = HangHandle::new();
    // Installed for good, so the rules are still there to clear (the next test covers hangs
    // whose rule already fired its last time).
    cluster.add_fault(
        rule(
            Matcher::tikv().command("RawGet").batched(false),
            Action::hang(&unary_hang),
        )
        .times(Times::Always),
    );
    cluster.add_fault(
        rule(
            Matcher::tikv().command("RawGet").batched(true),
            Action::hang(&batched_hang),
        )
        .times(Times::Always),
    );
    cluster.add_fault(rule(Matcher::tikv().command("RawPut"), busy()).times(Times::Always));

    let mut client = t.client.clone();
    let req = t.get_req(b"a");
    let unary = tokio::spawn(async move { client.raw_get(req).await });
    let mut stream = open_stream(&mut t.client).await;
    stream.send(vec![(1, batched_get(&t.ctx, b"a"))]).await;
    wait_for_count(&cluster, t.store, "RawGet", 2).await;
    assert!(!unary.is_finished());

    cluster.clear_faults();
    assert!(unary_hang.is_released() && batched_hang.is_released());
    let resp = bounded("released RawGet", unary)
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    assert!(resp.not_found && resp.region_error.is_none());
    let (_, by_id) = stream.collect(&[1]).await;
    assert!(raw_get_of(&by_id[&1]).not_found);
    // The Always rule is gone too.
    assert!(t.put(b"a", b"1").await.region_error.is_none());
    assert_eq!(t.value(b"a").await, Some(b(b"1")));
}

/// `MockCluster::clear_faults` promises to release every request held by a hang. A hang rule
/// with the default `Times::Once` is removed by the firing that holds its request, so
/// `FaultEngine::clear` no longer sees it and the request stays held for good.
#[tokio::test]
async fn clear_faults_releases_requests_held_by_a_hang_that_already_fired() {
    let (cluster, t, _) = two_regions().await;
    let hang = HangHandle::new();
    cluster.add_fault(rule(Matcher::tikv().command("RawGet"), Action::hang(&hang)));
    let mut client = t.client.clone();
    let req = t.get_req(b"a");
    let held = tokio::spawn(async move { client.raw_get(req).await });
    wait_for_count(&cluster, t.store, "RawGet", 1).await;
    cluster.clear_faults();
    let resp = bounded("RawGet held by a fired Once hang", held)
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    assert!(resp.not_found);
}
