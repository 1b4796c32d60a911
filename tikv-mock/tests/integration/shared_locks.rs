//! Shared pessimistic locks end to end over gRPC: several transactions sharing a key and
//! committing, an exclusive lock request that first closes the record (shrink-only) and then
//! waits for every holder, the SharedLock prewrite, status checks and lock resolution of a
//! holder, lock scans, and reads, which ignore shared locks as TiKV's do.

use crate::common;

use bytes::Bytes;
use common::{b, bounded};
use tikv_mock::MockCluster;
use tikv_mock::proto::kvrpcpb::{self, Op};
use tikv_mock::proto::tikvpb::tikv_client::TikvClient;
use tonic::transport::Channel;

use kvrpcpb::prewrite_request::PessimisticAction;

/// A timestamp with the given physical milliseconds (TSO layout: 18 logical bits).
fn ts(physical_ms: u64) -> u64 {
    physical_ms << 18
}

#[derive(Clone)]
struct T {
    client: TikvClient<Channel>,
    ctx: kvrpcpb::Context,
}

async fn start() -> (MockCluster, T) {
    let cluster = MockCluster::builder().start().await.unwrap();
    let (region, leader) = cluster.region_for_txn_key(b"k").unwrap();
    let leader = leader.unwrap();
    let store = leader.store_id;
    let addr = cluster.store_address(store).unwrap();
    let client = TikvClient::connect(format!("http://{addr}")).await.unwrap();
    let ctx = kvrpcpb::Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: Some(leader),
        ..Default::default()
    };
    (cluster, T { client, ctx })
}

fn m(op: Op, key: &[u8], value: &[u8]) -> kvrpcpb::Mutation {
    kvrpcpb::Mutation {
        op: op as i32,
        key: b(key),
        value: b(value),
        ..Default::default()
    }
}

fn lock_req(
    mutations: Vec<kvrpcpb::Mutation>,
    primary: &[u8],
    start: u64,
    wait_timeout: i64,
) -> kvrpcpb::PessimisticLockRequest {
    kvrpcpb::PessimisticLockRequest {
        mutations,
        primary_lock: b(primary),
        start_version: start,
        lock_ttl: 3000,
        for_update_ts: start,
        wait_timeout,
        ..Default::default()
    }
}

impl T {
    async fn lock(&self, req: kvrpcpb::PessimisticLockRequest) -> kvrpcpb::PessimisticLockResponse {
        let mut c = self.client.clone();
        c.kv_pessimistic_lock(kvrpcpb::PessimisticLockRequest {
            context: Some(self.ctx.clone()),
            ..req
        })
        .await
        .unwrap()
        .into_inner()
    }

    /// Transaction `start` locks its primary exclusively and `shared` in shared mode.
    async fn lock_shared(&self, primary: &[u8], shared: &[u8], start: u64) {
        let req = lock_req(
            vec![
                m(Op::PessimisticLock, primary, b""),
                m(Op::SharedPessimisticLock, shared, b""),
            ],
            primary,
            start,
            -1,
        );
        let r = self.lock(req).await;
        assert!(r.errors.is_empty() && r.region_error.is_none(), "{r:?}");
    }

    async fn prewrite(
        &self,
        mutations: Vec<kvrpcpb::Mutation>,
        primary: &[u8],
        start: u64,
    ) -> kvrpcpb::PrewriteResponse {
        let mut c = self.client.clone();
        let actions = mutations
            .iter()
            .map(|_| PessimisticAction::DoPessimisticCheck as i32)
            .collect();
        c.kv_prewrite(kvrpcpb::PrewriteRequest {
            context: Some(self.ctx.clone()),
            mutations,
            pessimistic_actions: actions,
            primary_lock: b(primary),
            start_version: start,
            for_update_ts: start,
            lock_ttl: 3000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    }

    /// Prewrites `start`'s primary with a value and its shared key with `SharedLock`.
    async fn prewrite_shared(&self, primary: &[u8], shared: &[u8], start: u64) {
        let r = self
            .prewrite(
                vec![m(Op::Put, primary, b"v"), m(Op::SharedLock, shared, b"")],
                primary,
                start,
            )
            .await;
        assert!(r.errors.is_empty() && r.region_error.is_none(), "{r:?}");
    }

    async fn commit(&self, keys: &[&[u8]], start: u64, commit: u64) -> kvrpcpb::CommitResponse {
        let mut c = self.client.clone();
        c.kv_commit(kvrpcpb::CommitRequest {
            context: Some(self.ctx.clone()),
            start_version: start,
            keys: keys.iter().map(|k| b(k)).collect(),
            commit_version: commit,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    }

    async fn mvcc(&self, key: &[u8]) -> kvrpcpb::MvccInfo {
        let mut c = self.client.clone();
        c.mvcc_get_by_key(kvrpcpb::MvccGetByKeyRequest {
            context: Some(self.ctx.clone()),
            key: b(key),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap_or_default()
    }

    async fn scan_lock(&self, max_version: u64, limit: u32) -> Vec<kvrpcpb::LockInfo> {
        let mut c = self.client.clone();
        let r = c
            .kv_scan_lock(kvrpcpb::ScanLockRequest {
                context: Some(self.ctx.clone()),
                max_version,
                limit,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
        r.locks
    }

    async fn get(&self, key: &[u8], version: u64) -> kvrpcpb::GetResponse {
        let mut c = self.client.clone();
        c.kv_get(kvrpcpb::GetRequest {
            context: Some(self.ctx.clone()),
            key: b(key),
            version,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
    }
}

/// The holders a shared `LockInfo` lists, by start ts.
fn holders(info: &kvrpcpb::LockInfo) -> Vec<u64> {
    assert_eq!(info.lock_type, Op::SharedLock as i32, "{info:?}");
    let mut v: Vec<u64> = info
        .shared_lock_infos
        .iter()
        .map(|l| l.lock_version)
        .collect();
    v.sort_unstable();
    v
}

#[tokio::test]
async fn two_txns_share_a_key_and_both_commit() {
    let (_cluster, t) = start().await;
    t.lock_shared(b"p10", b"s", 10).await;
    t.lock_shared(b"p20", b"s", 20).await;
    // Lock scans report the record once, with both holders, each naming its own primary.
    let locks = t.scan_lock(100, 0).await;
    let shared = locks.iter().find(|l| l.key == b(b"s")).unwrap();
    assert_eq!(holders(shared), vec![10, 20]);
    for sub in &shared.shared_lock_infos {
        assert_eq!(sub.lock_type, Op::PessimisticLock as i32);
        assert_eq!(
            sub.primary_lock,
            b(format!("p{}", sub.lock_version).as_bytes())
        );
        assert_eq!(sub.key, b(b"s"));
    }
    // Prewrite and commit both; the second prewrite does not disturb the first's sub-lock.
    t.prewrite_shared(b"p10", b"s", 10).await;
    t.prewrite_shared(b"p20", b"s", 20).await;
    let locks = t.scan_lock(100, 0).await;
    let shared = locks.iter().find(|l| l.key == b(b"s")).unwrap();
    assert!(
        shared
            .shared_lock_infos
            .iter()
            .all(|l| l.lock_type == Op::Lock as i32)
    );
    let r = t.commit(&[b"p10", b"s"], 10, 30).await;
    assert!(r.error.is_none(), "{r:?}");
    assert!(t.mvcc(b"s").await.lock.is_some(), "txn 20 still holds s");
    let r = t.commit(&[b"p20", b"s"], 20, 40).await;
    assert!(r.error.is_none(), "{r:?}");
    let info = t.mvcc(b"s").await;
    assert!(info.lock.is_none());
    let writes: Vec<(u64, u64, i32)> = info
        .writes
        .iter()
        .map(|w| (w.commit_ts, w.start_ts, w.r#type))
        .collect();
    assert_eq!(
        writes,
        vec![(40, 20, Op::Lock as i32), (30, 10, Op::Lock as i32)]
    );
}

#[tokio::test]
async fn lock_scan_counts_sub_locks_and_filters_them_by_version() {
    let (_cluster, t) = start().await;
    for start in [10, 20, 30] {
        t.lock_shared(format!("p{start}").as_bytes(), b"s", start)
            .await;
    }
    // max_version 25 keeps holders 10 and 20 of s. A limit of 4 is used up by the three
    // primaries and one sub-lock of s (which sorts after them): the smallest start ts.
    let locks = t.scan_lock(25, 0).await;
    let shared = locks.iter().find(|l| l.key == b(b"s")).unwrap();
    assert_eq!(holders(shared), vec![10, 20]);
    let locks = t.scan_lock(100, 4).await;
    assert_eq!(locks.len(), 4);
    let shared = locks.iter().find(|l| l.key == b(b"s")).unwrap();
    assert_eq!(holders(shared), vec![10]);
}

#[tokio::test]
async fn exclusive_lock_waits_for_all_shared_holders() {
    let (cluster, t) = start().await;
    t.lock_shared(b"p10", b"s", 10).await;
    t.lock_shared(b"p20", b"s", 20).await;
    // First meeting: the record becomes shrink-only and the request fails at once, waiting or
    // not, with the whole record.
    let x = || lock_req(vec![m(Op::PessimisticLock, b"s", b"")], b"s", 30, 5000);
    let r = bounded("first exclusive attempt", t.lock(x())).await;
    let locked = r.errors[0].locked.clone().unwrap();
    assert_eq!(holders(&locked), vec![10, 20]);
    // No one joins a shrink-only record.
    let join = lock_req(
        vec![m(Op::SharedPessimisticLock, b"s", b"")],
        b"p25",
        25,
        -1,
    );
    let r = t.lock(join).await;
    assert_eq!(holders(r.errors[0].locked.as_ref().unwrap()), vec![10, 20]);
    // The retry waits for both holders.
    let waiter = {
        let t = t.clone();
        tokio::spawn(async move { t.lock(x()).await })
    };
    bounded("waiter parks", async {
        while cluster.parked_lock_requests() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Holder 20 rolls back its shared lock: holder 10 still holds the key.
    let mut c = t.client.clone();
    let r = c
        .kv_pessimistic_rollback(kvrpcpb::PessimisticRollbackRequest {
            context: Some(t.ctx.clone()),
            start_version: 20,
            for_update_ts: 20,
            keys: vec![b(b"p20"), b(b"s")],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.errors.is_empty(), "{r:?}");
    // The release notifies the waiter; let it run and re-check, then it must still be parked.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!waiter.is_finished(), "woken while a holder remains");
    assert_eq!(cluster.parked_lock_requests(), 1);
    // Holder 10 commits: the last holder is gone, the waiter is woken with a write conflict
    // naming it.
    t.prewrite_shared(b"p10", b"s", 10).await;
    assert!(t.commit(&[b"p10", b"s"], 10, 35).await.error.is_none());
    let r = bounded("woken waiter", waiter).await.unwrap();
    let c = r.errors[0].conflict.clone().unwrap();
    assert_eq!(
        (c.start_ts, c.conflict_ts, c.conflict_commit_ts),
        (30, 10, 35)
    );
    // Retried with a newer for_update_ts, the exclusive lock is granted.
    let mut req = x();
    req.for_update_ts = 36;
    let r = t.lock(req).await;
    assert!(r.errors.is_empty(), "{r:?}");
    let lock = t.mvcc(b"s").await.lock.unwrap();
    assert_eq!(
        (lock.r#type, lock.start_ts),
        (Op::PessimisticLock as i32, 30)
    );
}

#[tokio::test]
async fn shared_request_waits_for_an_exclusive_lock() {
    let (cluster, t) = start().await;
    let r = t
        .lock(lock_req(
            vec![m(Op::PessimisticLock, b"s", b"")],
            b"s",
            10,
            -1,
        ))
        .await;
    assert!(r.errors.is_empty());
    let waiter = {
        let t = t.clone();
        tokio::spawn(async move {
            let req = lock_req(
                vec![m(Op::SharedPessimisticLock, b"s", b"")],
                b"p20",
                20,
                5000,
            );
            t.lock(req).await
        })
    };
    bounded("waiter parks", async {
        while cluster.parked_lock_requests() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let r = t.prewrite(vec![m(Op::Put, b"s", b"v")], b"s", 10).await;
    assert!(r.errors.is_empty(), "{r:?}");
    assert!(t.commit(&[b"s"], 10, 15).await.error.is_none());
    let r = bounded("woken waiter", waiter).await.unwrap();
    let c = r.errors[0].conflict.clone().unwrap();
    assert_eq!((c.conflict_ts, c.conflict_commit_ts), (10, 15));
}

#[tokio::test]
async fn shared_prewrite_needs_its_own_shared_lock() {
    let (_cluster, t) = start().await;
    // No shared lock of this transaction: the pessimistic lock cannot be amended.
    let r = t
        .prewrite(vec![m(Op::SharedLock, b"s", b"")], b"p10", 10)
        .await;
    assert!(
        r.errors[0].abort.contains("PessimisticLockNotFound"),
        "{r:?}"
    );
    // On its own shared lock only SharedLock may be prewritten.
    t.lock_shared(b"p10", b"s", 10).await;
    let r = t.prewrite(vec![m(Op::Put, b"s", b"v")], b"p10", 10).await;
    assert!(r.errors[0].abort.contains("use Op::SharedLock"), "{r:?}");
    // Async commit is refused for a shared lock.
    let mut c = t.client.clone();
    let r = c
        .kv_prewrite(kvrpcpb::PrewriteRequest {
            context: Some(t.ctx.clone()),
            mutations: vec![m(Op::SharedLock, b"s", b"")],
            pessimistic_actions: vec![PessimisticAction::DoPessimisticCheck as i32],
            primary_lock: b(b"p10"),
            start_version: 10,
            for_update_ts: 10,
            lock_ttl: 3000,
            use_async_commit: true,
            secondaries: vec![b(b"s")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.errors[0].abort.contains("async-commit"), "{r:?}");
    // Another transaction's ordinary prewrite is KeyIsLocked by the record.
    let mut c = t.client.clone();
    let r = c
        .kv_prewrite(kvrpcpb::PrewriteRequest {
            context: Some(t.ctx.clone()),
            mutations: vec![m(Op::Put, b"s", b"v")],
            primary_lock: b(b"s"),
            start_version: 40,
            lock_ttl: 3000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(holders(r.errors[0].locked.as_ref().unwrap()), vec![10]);
}

#[tokio::test]
async fn status_check_and_resolve_of_a_shared_holder() {
    let (_cluster, t) = start().await;
    let (old, young) = (ts(1000), ts(2000));
    t.lock_shared(b"p-old", b"s", old).await;
    t.lock_shared(b"p-young", b"s", young).await;
    let mut c = t.client.clone();
    let check = |primary: &'static [u8], lock_ts: u64| kvrpcpb::CheckTxnStatusRequest {
        context: Some(t.ctx.clone()),
        primary_key: b(primary),
        lock_ts,
        caller_start_ts: ts(100_000),
        current_ts: ts(100_000),
        rollback_if_not_exist: true,
        verify_is_primary: true,
        ..Default::default()
    };
    // The shared key is never a primary.
    let r = c
        .kv_check_txn_status(check(b"s", old))
        .await
        .unwrap()
        .into_inner();
    let mismatch = r.error.unwrap().primary_mismatch.unwrap();
    assert_eq!(
        holders(mismatch.lock_info.as_ref().unwrap()),
        vec![old, young]
    );
    // The holder's primary expired long ago: rolled back.
    let r = c
        .kv_check_txn_status(check(b"p-old", old))
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(r.action, kvrpcpb::Action::TtlExpireRollback as i32);
    // Resolving the holder (region-wide) removes only its sub-lock.
    let r = c
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: Some(t.ctx.clone()),
            start_version: old,
            commit_version: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none(), "{r:?}");
    let locks = t.scan_lock(u64::MAX, 0).await;
    let shared = locks.iter().find(|l| l.key == b(b"s")).unwrap();
    assert_eq!(holders(shared), vec![young]);
    // The young holder commits through resolve-lock by key.
    t.prewrite_shared(b"p-young", b"s", young).await;
    let r = c
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: Some(t.ctx.clone()),
            start_version: young,
            commit_version: young + 10,
            keys: vec![b(b"s")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none(), "{r:?}");
    let info = t.mvcc(b"s").await;
    assert!(info.lock.is_none());
    assert_eq!(info.writes[0].start_ts, young);
    assert_eq!(info.writes[0].r#type, Op::Lock as i32);
}

#[tokio::test]
async fn reads_ignore_shared_locks() {
    let (_cluster, t) = start().await;
    // s has a committed value.
    let r = t
        .lock(lock_req(
            vec![m(Op::PessimisticLock, b"s", b"")],
            b"s",
            5,
            -1,
        ))
        .await;
    assert!(r.errors.is_empty());
    assert!(
        t.prewrite(vec![m(Op::Put, b"s", b"v")], b"s", 5)
            .await
            .errors
            .is_empty()
    );
    assert!(t.commit(&[b"s"], 5, 6).await.error.is_none());
    t.lock_shared(b"p10", b"s", 10).await;
    t.lock_shared(b"p20", b"s", 20).await;
    t.prewrite_shared(b"p20", b"s", 20).await;
    // Neither a pessimistic nor a prewritten sub-lock blocks a read, even at the max ts.
    for version in [30, u64::MAX] {
        let r = t.get(b"s", version).await;
        assert!(r.error.is_none(), "{r:?}");
        assert_eq!(r.value, Bytes::from_static(b"v"));
    }
    let mut c = t.client.clone();
    let r = c
        .kv_scan(kvrpcpb::ScanRequest {
            context: Some(t.ctx.clone()),
            start_key: b(b"s"),
            end_key: b(b"t"),
            limit: 10,
            version: 30,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none(), "{r:?}");
    let found: Vec<(Bytes, Bytes)> = r
        .pairs
        .into_iter()
        .map(|p| {
            assert!(p.error.is_none(), "{p:?}");
            (p.key, p.value)
        })
        .collect();
    assert_eq!(found, vec![(b(b"s"), b(b"v"))]);
    let r = c
        .kv_batch_get(kvrpcpb::BatchGetRequest {
            context: Some(t.ctx.clone()),
            keys: vec![b(b"s")],
            version: 30,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.error.is_none() && r.pairs.len() == 1 && r.pairs[0].error.is_none(),
        "{r:?}"
    );
}
