//! Transactional writes end to end: plain tonic clients driving Percolator's commands against
//! the mock (prewrite, commit, rollback, cleanup, status checks, resolve lock, async commit and
//! one-phase commit) and checking the outcomes through the same RPCs, under API V1.

use std::time::Duration;

use bytes::Bytes;
use tikv_mock::proto::kvrpcpb::{self, Op};
use tikv_mock::proto::tikvpb::tikv_client::TikvClient;
use tikv_mock::{ManualClock, MockCluster};
use tonic::transport::Channel;

const START_MS: u64 = 1_700_000_000_000;

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

/// A TSO-like timestamp at `ms` physical milliseconds.
fn ts(ms: u64, logical: u64) -> u64 {
    (ms << 18) | logical
}

struct T {
    cluster: MockCluster,
    clock: ManualClock,
}

async fn start() -> T {
    let clock = ManualClock::new(START_MS);
    let cluster = MockCluster::builder()
        .manual_clock(clock.clone())
        .start()
        .await
        .unwrap();
    T { cluster, clock }
}

impl T {
    async fn client(&self, key: &[u8]) -> (TikvClient<Channel>, kvrpcpb::Context) {
        let (region, leader) = self.cluster.region_for_txn_key(key).unwrap();
        let leader = leader.unwrap();
        let addr = self.cluster.store_address(leader.store_id).unwrap();
        let client = TikvClient::connect(format!("http://{addr}")).await.unwrap();
        let ctx = kvrpcpb::Context {
            region_id: region.id,
            region_epoch: region.region_epoch,
            peer: Some(leader),
            // The tests make up timestamps ahead of the TSO (which nobody asks here). As TiDB,
            // they may move max_ts up to 60 s past it; other clients may not pass the TSO in
            // status checks (TiKV's max_ts update limit).
            request_origin: kvrpcpb::RequestOrigin::TiDb as i32,
            ..Default::default()
        };
        (client, ctx)
    }

    async fn prewrite(&self, req: kvrpcpb::PrewriteRequest) -> kvrpcpb::PrewriteResponse {
        let (mut c, ctx) = self.client(&req.primary_lock).await;
        c.kv_prewrite(kvrpcpb::PrewriteRequest {
            context: Some(ctx),
            ..req
        })
        .await
        .unwrap()
        .into_inner()
    }

    async fn commit(&self, keys: &[&[u8]], start: u64, commit: u64) -> kvrpcpb::CommitResponse {
        let (mut c, ctx) = self.client(keys[0]).await;
        c.kv_commit(kvrpcpb::CommitRequest {
            context: Some(ctx),
            start_version: start,
            keys: keys.iter().map(|k| b(k)).collect(),
            commit_version: commit,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    }

    async fn rollback(&self, keys: &[&[u8]], start: u64) -> kvrpcpb::BatchRollbackResponse {
        let (mut c, ctx) = self.client(keys[0]).await;
        c.kv_batch_rollback(kvrpcpb::BatchRollbackRequest {
            context: Some(ctx),
            start_version: start,
            keys: keys.iter().map(|k| b(k)).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    }

    async fn check_status(
        &self,
        primary: &[u8],
        lock_ts: u64,
        caller: u64,
        current: u64,
    ) -> kvrpcpb::CheckTxnStatusResponse {
        let (mut c, ctx) = self.client(primary).await;
        c.kv_check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            context: Some(ctx),
            primary_key: b(primary),
            lock_ts,
            caller_start_ts: caller,
            current_ts: current,
            rollback_if_not_exist: true,
            verify_is_primary: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    }

    /// Everything the store holds for `key` (lock, writes, values), from the MVCC dump.
    async fn mvcc(&self, key: &[u8]) -> kvrpcpb::MvccInfo {
        let (mut c, ctx) = self.client(key).await;
        c.mvcc_get_by_key(kvrpcpb::MvccGetByKeyRequest {
            context: Some(ctx),
            key: b(key),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap_or_default()
    }

    async fn get(&self, key: &[u8], version: u64) -> kvrpcpb::GetResponse {
        let (mut c, ctx) = self.client(key).await;
        c.kv_get(kvrpcpb::GetRequest {
            context: Some(ctx),
            key: b(key),
            version,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    }
}

fn put(key: &[u8], value: &[u8]) -> kvrpcpb::Mutation {
    kvrpcpb::Mutation {
        op: Op::Put as i32,
        key: b(key),
        value: b(value),
        ..Default::default()
    }
}

fn prewrite_req(
    primary: &[u8],
    start: u64,
    muts: Vec<kvrpcpb::Mutation>,
) -> kvrpcpb::PrewriteRequest {
    kvrpcpb::PrewriteRequest {
        mutations: muts,
        primary_lock: b(primary),
        start_version: start,
        lock_ttl: 3000,
        txn_size: 2,
        ..Default::default()
    }
}

fn ok_prewrite(r: &kvrpcpb::PrewriteResponse) {
    assert!(r.region_error.is_none() && r.errors.is_empty(), "{r:?}");
}

#[tokio::test]
async fn prewrite_commit_then_read() {
    let t = start().await;
    let s = ts(START_MS, 1);
    let long = vec![b'x'; 300];
    let r = t
        .prewrite(prewrite_req(
            b"a",
            s,
            vec![put(b"a", b"1"), put(b"b", &long)],
        ))
        .await;
    ok_prewrite(&r);
    assert_eq!((r.min_commit_ts, r.one_pc_commit_ts), (0, 0));
    // Retrying the prewrite is harmless.
    ok_prewrite(
        &t.prewrite(prewrite_req(
            b"a",
            s,
            vec![put(b"a", b"1"), put(b"b", &long)],
        ))
        .await,
    );
    let c = t.commit(&[b"a", b"b"], s, s + 10).await;
    assert!(c.error.is_none() && c.region_error.is_none(), "{c:?}");
    assert_eq!(c.commit_version, s + 10);
    // Committing again is idempotent.
    assert!(t.commit(&[b"a", b"b"], s, s + 10).await.error.is_none());
    let g = t.get(b"b", s + 20).await;
    assert_eq!(g.value.as_ref(), &long[..]);
    assert!(!g.not_found && g.error.is_none());
    assert!(t.get(b"a", s + 9).await.not_found);
    assert_eq!(t.get(b"a", s + 10).await.value.as_ref(), b"1");
    let info = t.mvcc(b"a").await;
    assert_eq!(info.writes[0].commit_ts, s + 10);
    assert!(info.lock.is_none());
    // The status check sees the committed primary.
    let st = t.check_status(b"a", s, 0, ts(START_MS, 100)).await;
    assert_eq!(st.commit_version, s + 10);
}

#[tokio::test]
async fn prewrite_conflict_reports_every_lock_and_writes_nothing() {
    let t = start().await;
    let s1 = ts(START_MS, 1);
    ok_prewrite(
        &t.prewrite(prewrite_req(
            b"a",
            s1,
            vec![put(b"a", b"1"), put(b"c", b"1")],
        ))
        .await,
    );
    let s2 = ts(START_MS, 2);
    let r = t
        .prewrite(prewrite_req(
            b"a",
            s2,
            vec![put(b"a", b"2"), put(b"b", b"2"), put(b"c", b"2")],
        ))
        .await;
    let locked: Vec<_> = r.errors.iter().filter_map(|e| e.locked.clone()).collect();
    assert_eq!(locked.len(), 2, "{r:?}");
    assert_eq!(locked[0].key.as_ref(), b"a");
    assert_eq!(locked[1].key.as_ref(), b"c");
    assert!(
        locked
            .iter()
            .all(|l| l.lock_version == s1 && l.primary_lock.as_ref() == b"a")
    );
    let g = t.get(b"c", s2).await;
    assert_eq!(g.error.unwrap().locked.unwrap().lock_version, s1);
    // "b" was not locked by the failed request: committing s2 on it finds no lock.
    let c = t.commit(&[b"b"], s2, s2 + 1).await;
    assert!(c.error.unwrap().txn_lock_not_found.is_some());
    // A write conflict after s1 commits.
    assert!(t.commit(&[b"a", b"c"], s1, s1 + 5).await.error.is_none());
    let r = t
        .prewrite(prewrite_req(b"c", s2, vec![put(b"c", b"2")]))
        .await;
    let conflict = r.errors[0].conflict.clone().unwrap();
    assert_eq!(
        (conflict.conflict_ts, conflict.conflict_commit_ts),
        (s1, s1 + 5)
    );
    assert!(!r.errors[0].retryable.is_empty());
    // Insert of an existing key.
    let s3 = ts(START_MS, 50);
    let mut ins = put(b"a", b"3");
    ins.op = Op::Insert as i32;
    let r = t.prewrite(prewrite_req(b"a", s3, vec![ins])).await;
    assert_eq!(
        r.errors[0].already_exist.as_ref().unwrap().key.as_ref(),
        b"a"
    );
}

#[tokio::test]
async fn commit_after_rollback_is_txn_lock_not_found() {
    let t = start().await;
    let s = ts(START_MS, 1);
    ok_prewrite(
        &t.prewrite(prewrite_req(b"a", s, vec![put(b"a", b"1")]))
            .await,
    );
    let r = t.rollback(&[b"a"], s).await;
    assert!(r.error.is_none(), "{r:?}");
    let c = t.commit(&[b"a"], s, s + 1).await;
    let e = c.error.unwrap();
    assert!(e.txn_lock_not_found.is_some() && !e.retryable.is_empty());
    // Rolling back a committed transaction is refused.
    let s2 = ts(START_MS, 10);
    ok_prewrite(
        &t.prewrite(prewrite_req(b"b", s2, vec![put(b"b", b"1")]))
            .await,
    );
    assert!(t.commit(&[b"b"], s2, s2 + 1).await.error.is_none());
    assert!(
        !t.rollback(&[b"b"], s2)
            .await
            .error
            .unwrap()
            .abort
            .is_empty()
    );
    // Commit ts must exceed start ts.
    assert!(
        !t.commit(&[b"b"], s2, s2)
            .await
            .error
            .unwrap()
            .abort
            .is_empty()
    );
}

#[tokio::test]
async fn check_txn_status_expires_lock_by_manual_clock() {
    let t = start().await;
    let s = ts(START_MS, 1);
    ok_prewrite(
        &t.prewrite(prewrite_req(b"p", s, vec![put(b"p", b"1")]))
            .await,
    );
    let now = |clock: &ManualClock| {
        use tikv_mock::Clock;
        ts(clock.now_ms(), 0)
    };
    let st = t.check_status(b"p", s, 0, now(&t.clock)).await;
    assert_eq!(st.lock_ttl, 3000);
    assert_eq!(st.lock_info.as_ref().unwrap().key.as_ref(), b"p");
    assert_eq!(st.action, kvrpcpb::Action::NoAction as i32);
    // Cleanup of a live lock reports it.
    let (mut c, ctx) = t.client(b"p").await;
    let cl = c
        .kv_cleanup(kvrpcpb::CleanupRequest {
            context: Some(ctx.clone()),
            key: b(b"p"),
            start_version: s,
            current_ts: now(&t.clock),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cl.error.unwrap().locked.is_some());
    // Heartbeat extends the TTL.
    let hb = c
        .kv_txn_heart_beat(kvrpcpb::TxnHeartBeatRequest {
            context: Some(ctx.clone()),
            primary_lock: b(b"p"),
            start_version: s,
            advise_lock_ttl: 5000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.lock_ttl, 5000);
    t.clock.advance(Duration::from_millis(4000));
    assert_eq!(
        t.check_status(b"p", s, 0, now(&t.clock)).await.lock_ttl,
        5000
    );
    t.clock.advance(Duration::from_millis(2000));
    let st = t.check_status(b"p", s, 0, now(&t.clock)).await;
    assert_eq!(st.action, kvrpcpb::Action::TtlExpireRollback as i32);
    assert_eq!((st.lock_ttl, st.commit_version), (0, 0));
    // Now rolled back for good.
    let st = t.check_status(b"p", s, 0, now(&t.clock)).await;
    assert_eq!((st.lock_ttl, st.commit_version, st.action), (0, 0, 0));
    assert!(
        t.commit(&[b"p"], s, s + 1)
            .await
            .error
            .unwrap()
            .txn_lock_not_found
            .is_some()
    );
    // Heartbeat on a gone lock: TxnNotFound.
    let hb = c
        .kv_txn_heart_beat(kvrpcpb::TxnHeartBeatRequest {
            context: Some(ctx),
            primary_lock: b(b"p"),
            start_version: s,
            advise_lock_ttl: 5000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.error.unwrap().txn_not_found.is_some());
    // An unknown transaction is rolled back when asked to.
    let st = t.check_status(b"q", s + 7, 0, now(&t.clock)).await;
    assert_eq!(st.action, kvrpcpb::Action::LockNotExistRollback as i32);
}

#[tokio::test]
async fn resolve_lock_commits_and_rolls_back() {
    let t = start().await;
    let s1 = ts(START_MS, 1);
    let s2 = ts(START_MS, 2);
    ok_prewrite(
        &t.prewrite(prewrite_req(
            b"a",
            s1,
            vec![put(b"a", b"1"), put(b"b", b"1")],
        ))
        .await,
    );
    ok_prewrite(
        &t.prewrite(prewrite_req(
            b"c",
            s2,
            vec![put(b"c", b"2"), put(b"d", b"2")],
        ))
        .await,
    );
    let (mut c, ctx) = t.client(b"a").await;
    // Whole region, two transactions at once: s1 committed, s2 rolled back.
    let r = c
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: Some(ctx.clone()),
            txn_infos: vec![
                kvrpcpb::TxnInfo {
                    txn: s1,
                    status: s1 + 10,
                    ..Default::default()
                },
                kvrpcpb::TxnInfo {
                    txn: s2,
                    status: 0,
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
    assert_eq!(t.check_status(b"a", s1, 0, 0).await.commit_version, s1 + 10);
    assert!(t.commit(&[b"b"], s1, s1 + 10).await.error.is_none());
    assert!(
        t.commit(&[b"d"], s2, s2 + 10)
            .await
            .error
            .unwrap()
            .txn_lock_not_found
            .is_some()
    );
    // Lite: only the listed key.
    let s3 = ts(START_MS, 30);
    ok_prewrite(
        &t.prewrite(prewrite_req(
            b"e",
            s3,
            vec![put(b"e", b"3"), put(b"f", b"3")],
        ))
        .await,
    );
    let r = c
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: Some(ctx.clone()),
            start_version: s3,
            commit_version: s3 + 1,
            keys: vec![b(b"f")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none());
    assert!(t.commit(&[b"f"], s3, s3 + 1).await.error.is_none());
    // "e" is still locked: a rollback of it is refused only once committed.
    assert!(t.rollback(&[b"e"], s3).await.error.is_none());
    // Secondary-lock check: a missing lock is rolled back and decides the transaction.
    let cs = c
        .kv_check_secondary_locks(kvrpcpb::CheckSecondaryLocksRequest {
            context: Some(ctx),
            keys: vec![b(b"b"), b(b"g")],
            start_version: s1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cs.commit_ts, s1 + 10);
}

#[tokio::test]
async fn async_commit_min_commit_ts_exceeds_max_ts_and_one_pc_commits() {
    let t = start().await;
    // Push the store's max_ts with a status check at a later ts.
    let seen = ts(START_MS + 500, 0);
    t.check_status(b"zz", ts(START_MS, 3), seen, seen).await;
    let s = ts(START_MS, 1);
    let mut req = prewrite_req(b"a", s, vec![put(b"a", b"1"), put(b"b", b"1")]);
    req.use_async_commit = true;
    req.secondaries = vec![b(b"b")];
    let r = t.prewrite(req).await;
    ok_prewrite(&r);
    assert!(r.min_commit_ts > seen, "{r:?}");
    // Committing below min_commit_ts is refused.
    let c = t.commit(&[b"a", b"b"], s, seen).await;
    let exp = c.error.unwrap().commit_ts_expired.unwrap();
    assert_eq!(exp.min_commit_ts, r.min_commit_ts);
    // Async-commit locks never expire through CheckTxnStatus.
    let st = t.check_status(b"a", s, 0, ts(START_MS + 50_000, 0)).await;
    assert!(st.lock_ttl > 0 && st.lock_info.unwrap().use_async_commit);
    assert!(
        t.commit(&[b"a", b"b"], s, r.min_commit_ts)
            .await
            .error
            .is_none()
    );

    // A max_commit_ts below the computed ts falls back to 2PC.
    let s2 = ts(START_MS, 5);
    let mut req = prewrite_req(b"c", s2, vec![put(b"c", b"1")]);
    req.use_async_commit = true;
    req.max_commit_ts = seen;
    let r = t.prewrite(req).await;
    ok_prewrite(&r);
    assert_eq!(r.min_commit_ts, 0);

    // 1PC: committed directly, no lock left.
    let s3 = ts(START_MS, 7);
    let mut req = prewrite_req(b"d", s3, vec![put(b"d", b"1")]);
    req.try_one_pc = true;
    let r = t.prewrite(req).await;
    ok_prewrite(&r);
    assert!(r.one_pc_commit_ts > seen);
    let st = t.check_status(b"d", s3, 0, 0).await;
    assert_eq!(st.commit_version, r.one_pc_commit_ts);
}

#[tokio::test]
async fn delete_range_clears_txn_data() {
    let t = start().await;
    let s = ts(START_MS, 1);
    ok_prewrite(
        &t.prewrite(prewrite_req(
            b"a",
            s,
            vec![put(b"a", b"1"), put(b"b", b"1")],
        ))
        .await,
    );
    assert!(t.commit(&[b"a", b"b"], s, s + 1).await.error.is_none());
    assert_eq!(t.get(b"a", s + 2).await.value.as_ref(), b"1");
    let (mut c, ctx) = t.client(b"a").await;
    let r = c
        .kv_delete_range(kvrpcpb::DeleteRangeRequest {
            context: Some(ctx),
            start_key: b(b"a"),
            end_key: b(b"b"),
            notify_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_empty() && r.region_error.is_none(), "{r:?}");
    // "a" lost its record; "b" kept it.
    assert!(t.get(b"a", s + 2).await.not_found);
    assert_eq!(t.get(b"b", s + 2).await.value.as_ref(), b"1");
    let st = t.check_status(b"a", s, 0, 0).await;
    assert_eq!(st.action, kvrpcpb::Action::LockNotExistRollback as i32);
    assert_eq!(t.check_status(b"b", s, 0, 0).await.commit_version, s + 1);
}

#[tokio::test]
async fn pessimistic_prewrite_amends_missing_locks_and_zips_actions() {
    use kvrpcpb::prewrite_request::PessimisticAction;
    let t = start().await;
    let s = ts(START_MS, 1);
    let mut req = prewrite_req(b"a", s, vec![put(b"a", b"1"), put(b"b", b"1")]);
    req.for_update_ts = s + 1;
    // Only one action: "b" is silently dropped, as TiKV zips the two lists.
    req.pessimistic_actions = vec![PessimisticAction::DoPessimisticCheck as i32];
    ok_prewrite(&t.prewrite(req).await);
    assert!(t.commit(&[b"a"], s, s + 5).await.error.is_none());
    let c = t.commit(&[b"b"], s, s + 5).await;
    assert!(c.error.unwrap().txn_lock_not_found.is_some());
    // A missing pessimistic lock cannot be amended after a newer commit.
    let s2 = ts(START_MS, 2);
    let mut req = prewrite_req(b"a", s2, vec![put(b"a", b"2")]);
    req.for_update_ts = s2;
    req.pessimistic_actions = vec![PessimisticAction::DoPessimisticCheck as i32];
    let r = t.prewrite(req).await;
    assert!(r.errors[0].abort.contains("LockMissingAmendFail"), "{r:?}");
}

#[tokio::test]
async fn new_leader_refuses_async_commit_until_max_ts_synced() {
    let t = start().await;
    t.cluster.defer_max_ts_sync(true);
    let (region, leader) = t.cluster.region_for_txn_key(b"a").unwrap();
    let leader_store = leader.unwrap().store_id;
    let target = t
        .cluster
        .store_ids()
        .into_iter()
        .find(|&id| id != leader_store)
        .unwrap();
    t.cluster.transfer_leader(region.id, target).unwrap();
    assert_eq!(t.cluster.is_max_ts_synced(region.id), Some(false));
    let s = ts(START_MS, 1);
    let mut async_req = prewrite_req(b"a", s, vec![put(b"a", b"1"), put(b"b", b"1")]);
    async_req.use_async_commit = true;
    async_req.secondaries = vec![b(b"b")];
    let r = t.prewrite(async_req.clone()).await;
    let e = r.region_error.expect("MaxTimestampNotSynced");
    assert!(
        e.max_timestamp_not_synced.is_some() && e.message.is_empty(),
        "{e:?}"
    );
    assert!(t.mvcc(b"a").await.lock.is_none());
    let mut one_pc = prewrite_req(b"c", ts(START_MS, 2), vec![put(b"c", b"1")]);
    one_pc.try_one_pc = true;
    let r = t.prewrite(one_pc.clone()).await;
    assert!(r.region_error.unwrap().max_timestamp_not_synced.is_some());
    // Plain 2PC does not need max_ts.
    ok_prewrite(
        &t.prewrite(prewrite_req(b"d", ts(START_MS, 3), vec![put(b"d", b"1")]))
            .await,
    );
    t.cluster.sync_max_ts(region.id).unwrap();
    assert_eq!(t.cluster.is_max_ts_synced(region.id), Some(true));
    let r = t.prewrite(async_req).await;
    ok_prewrite(&r);
    assert!(r.min_commit_ts > s);
    let r = t.prewrite(one_pc).await;
    ok_prewrite(&r);
    assert!(r.one_pc_commit_ts > ts(START_MS, 2));

    // A merge makes the target's leader sync again; turning deferral off syncs everything.
    let clock = ManualClock::new(START_MS);
    let split = MockCluster::builder()
        .manual_clock(clock)
        .split_keys(["m"])
        .start()
        .await
        .unwrap();
    split.defer_max_ts_sync(true);
    let (left, _) = split.region_for_txn_key(b"a").unwrap();
    let (right, _) = split.region_for_txn_key(b"z").unwrap();
    split.merge(left.id, right.id).unwrap();
    assert_eq!(split.is_max_ts_synced(right.id), Some(false));
    split.defer_max_ts_sync(false);
    assert_eq!(split.is_max_ts_synced(right.id), Some(true));
}

#[tokio::test]
async fn far_future_timestamps_are_invalid_max_ts_updates() {
    let clock = ManualClock::new(START_MS);
    let cluster = MockCluster::builder()
        .manual_clock(clock.clone())
        .invalid_max_ts_action(tikv_mock::InvalidMaxTsAction::Error)
        .start()
        .await
        .unwrap();
    let t = T { cluster, clock };
    // Reads may move max_ts up to 60 s past the TSO.
    let ok = t.get(b"a", ts(START_MS + 59_000, 0)).await;
    assert!(ok.region_error.is_none() && ok.not_found, "{ok:?}");
    let far = ts(START_MS + 61_000, 0);
    let bad = t.get(b"a", far).await;
    assert_eq!(
        bad.region_error.unwrap().message,
        format!(
            "invalid max_ts update: {far} exceeds the limit {}",
            ts(START_MS + 60_000, 0)
        )
    );
    // Status checks of a client that is not TiDB may not pass the TSO at all.
    let (mut c, mut ctx) = t.client(b"a").await;
    ctx.request_origin = kvrpcpb::RequestOrigin::Unknown as i32;
    let ahead = ts(START_MS, 5);
    let st = c
        .kv_check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            context: Some(ctx.clone()),
            primary_key: b(b"a"),
            lock_ts: ts(START_MS, 1),
            caller_start_ts: ahead,
            current_ts: ahead,
            rollback_if_not_exist: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        st.region_error.unwrap().message,
        format!(
            "invalid max_ts update: {ahead} exceeds the limit {}",
            ts(START_MS, 0)
        )
    );
    // u64::MAX (an autocommit point get) never moves max_ts.
    assert!(t.get(b"a", u64::MAX).await.region_error.is_none());

    // TiKV's default action aborts the process: the store goes away without answering, and
    // comes back when restarted.
    t.cluster
        .set_invalid_max_ts_action(tikv_mock::InvalidMaxTsAction::Panic);
    let (region, leader) = t.cluster.region_for_txn_key(b"a").unwrap();
    let store = leader.unwrap().store_id;
    let (mut c, ctx) = t.client(b"a").await;
    let crashed = c
        .kv_get(kvrpcpb::GetRequest {
            context: Some(ctx),
            key: b(b"a"),
            version: far,
            ..Default::default()
        })
        .await;
    assert!(crashed.is_err(), "{crashed:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while t.cluster.start_store(store).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "store {store} never stopped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let again = t.get(b"a", ts(START_MS, 0)).await;
    assert!(again.region_error.is_none() && again.not_found, "{again:?}");
    assert_eq!(region.id, t.cluster.region_for_txn_key(b"a").unwrap().0.id);
}

#[tokio::test]
async fn large_optimistic_prewrite_sorts_keys_and_skips_constraint_check_on_empty_range() {
    let t = start().await;
    let key = |p: &str, i: usize| format!("{p}{i:02}").into_bytes();
    let asserting = |p: &str, n: usize| {
        (0..n)
            .rev()
            .map(|i| {
                let mut m = put(&key(p, i), b"v");
                m.assertion = kvrpcpb::Assertion::Exist as i32;
                m
            })
            .collect::<Vec<_>>()
    };
    // Thirteen mutations over a range without any write: no constraint check, so a Fast
    // assertion has nothing loaded to check.
    let s = ts(START_MS, 1);
    let mut req = prewrite_req(&key("k", 0), s, asserting("k", 13));
    req.assertion_level = kvrpcpb::AssertionLevel::Fast as i32;
    ok_prewrite(&t.prewrite(req).await);
    // Twelve are checked one by one.
    let mut req = prewrite_req(&key("j", 0), ts(START_MS, 2), asserting("j", 12));
    req.assertion_level = kvrpcpb::AssertionLevel::Fast as i32;
    let r = t.prewrite(req).await;
    assert!(r.errors[0].assertion_failed.is_some(), "{r:?}");
    // Locks met are reported in key order once the mutations are sorted, in request order
    // otherwise.
    let lock_keys = |r: &kvrpcpb::PrewriteResponse| {
        r.errors
            .iter()
            .map(|e| e.locked.as_ref().unwrap().key.clone())
            .collect::<Vec<_>>()
    };
    let reversed = |n: usize| (0..n).rev().map(|i| put(&key("k", i), b"x")).collect();
    let r = t
        .prewrite(prewrite_req(&key("k", 0), ts(START_MS, 3), reversed(13)))
        .await;
    let mut sorted: Vec<Bytes> = (0..13).map(|i| b(&key("k", i))).collect();
    assert_eq!(lock_keys(&r), sorted);
    let r = t
        .prewrite(prewrite_req(&key("k", 0), ts(START_MS, 4), reversed(12)))
        .await;
    sorted.truncate(12);
    sorted.reverse();
    assert_eq!(lock_keys(&r), sorted);
    // Once a write record lies in the range, the check runs: a later commit conflicts.
    let keys: Vec<Vec<u8>> = (0..13).map(|i| key("k", i)).collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    assert!(t.commit(&refs, s, ts(START_MS, 10)).await.error.is_none());
    let r = t
        .prewrite(prewrite_req(&key("k", 0), ts(START_MS, 5), reversed(13)))
        .await;
    let conflict = r.errors[0].conflict.as_ref().expect("a write conflict");
    assert_eq!(conflict.conflict_commit_ts, ts(START_MS, 10));
}

#[tokio::test]
async fn region_resolve_lock_keeps_earlier_batches_when_a_later_one_fails() {
    let t = start().await;
    let s = ts(START_MS, 1);
    let key = |i: usize| format!("r{i:03}").into_bytes();
    let muts = |range: std::ops::Range<usize>| range.map(|i| put(&key(i), b"v")).collect();
    ok_prewrite(&t.prewrite(prewrite_req(&key(0), s, muts(0..256))).await);
    // The last locks cannot be committed below their min_commit_ts.
    let mut late = prewrite_req(&key(0), s, muts(256..260));
    late.min_commit_ts = ts(START_MS, 100);
    ok_prewrite(&t.prewrite(late).await);
    let (mut c, ctx) = t.client(&key(0)).await;
    let r = c
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: Some(ctx),
            start_version: s,
            commit_version: ts(START_MS, 50),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.unwrap().commit_ts_expired.is_some());
    // The first round of 256 locks was committed; the failing round wrote nothing.
    assert_eq!(
        t.get(&key(255), ts(START_MS, 60)).await.value.as_ref(),
        b"v"
    );
    assert!(t.mvcc(&key(255)).await.lock.is_none());
    assert!(t.mvcc(&key(256)).await.lock.is_some());
}
