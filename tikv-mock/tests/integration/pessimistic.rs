//! Pessimistic transactions end to end: plain tonic clients locking keys with
//! KvPessimisticLock (no wait, waiting, deadlocks, ForceLock, values and existence), rolling
//! them back with KVPessimisticRollback, and many transactions contending on a few keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tikv_mock::MockCluster;
use tikv_mock::proto::kvrpcpb::{self, Op};
use tikv_mock::proto::tikvpb::tikv_client::TikvClient;
use tonic::transport::Channel;

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

/// A handle on the store serving every key (the cluster has one region).
#[derive(Clone)]
struct T {
    client: TikvClient<Channel>,
    ctx: kvrpcpb::Context,
}

async fn start() -> (MockCluster, T) {
    let cluster = MockCluster::builder().start().await.unwrap();
    let (region, leader) = cluster.region_for_txn_key(b"k").unwrap();
    let leader = leader.unwrap();
    let addr = cluster.store_address(leader.store_id).unwrap();
    let client = TikvClient::connect(format!("http://{addr}")).await.unwrap();
    let ctx = kvrpcpb::Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: Some(leader),
        ..Default::default()
    };
    (cluster, T { client, ctx })
}

fn lock_req(keys: &[&[u8]], start: u64, for_update: u64) -> kvrpcpb::PessimisticLockRequest {
    kvrpcpb::PessimisticLockRequest {
        mutations: keys
            .iter()
            .map(|k| kvrpcpb::Mutation {
                op: Op::PessimisticLock as i32,
                key: b(k),
                ..Default::default()
            })
            .collect(),
        primary_lock: b(keys[0]),
        start_version: start,
        lock_ttl: 3000,
        for_update_ts: for_update,
        wait_timeout: -1,
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

    async fn prewrite(
        &self,
        kvs: &[(&[u8], Bytes)],
        start: u64,
        for_update: u64,
    ) -> kvrpcpb::PrewriteResponse {
        let mut c = self.client.clone();
        c.kv_prewrite(kvrpcpb::PrewriteRequest {
            context: Some(self.ctx.clone()),
            mutations: kvs
                .iter()
                .map(|(k, v)| kvrpcpb::Mutation {
                    op: Op::Put as i32,
                    key: b(k),
                    value: v.clone(),
                    ..Default::default()
                })
                .collect(),
            pessimistic_actions: kvs
                .iter()
                .map(|_| kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck as i32)
                .collect(),
            primary_lock: b(kvs[0].0),
            start_version: start,
            for_update_ts: for_update,
            lock_ttl: 3000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
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

    async fn rollback(
        &self,
        keys: &[&[u8]],
        start: u64,
        for_update: u64,
    ) -> kvrpcpb::PessimisticRollbackResponse {
        let mut c = self.client.clone();
        c.kv_pessimistic_rollback(kvrpcpb::PessimisticRollbackRequest {
            context: Some(self.ctx.clone()),
            start_version: start,
            for_update_ts: for_update,
            keys: keys.iter().map(|k| b(k)).collect(),
        })
        .await
        .unwrap()
        .into_inner()
    }

    async fn get(&self, key: &[u8], version: u64) -> Option<Bytes> {
        let mut c = self.client.clone();
        let r = c
            .kv_get(kvrpcpb::GetRequest {
                context: Some(self.ctx.clone()),
                key: b(key),
                version,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
        (!r.not_found).then_some(r.value)
    }

    async fn lock_of(&self, key: &[u8]) -> Option<kvrpcpb::MvccLock> {
        let mut c = self.client.clone();
        c.mvcc_get_by_key(kvrpcpb::MvccGetByKeyRequest {
            context: Some(self.ctx.clone()),
            key: b(key),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .and_then(|i| i.lock)
    }

    /// Locks, prewrites and commits `kvs` as one pessimistic transaction.
    async fn write(&self, kvs: &[(&[u8], Bytes)], start: u64, commit: u64) {
        let keys: Vec<&[u8]> = kvs.iter().map(|(k, _)| *k).collect();
        let r = self.lock(lock_req(&keys, start, start)).await;
        assert!(r.errors.is_empty() && r.region_error.is_none(), "{r:?}");
        let r = self.prewrite(kvs, start, start).await;
        assert!(r.errors.is_empty() && r.region_error.is_none(), "{r:?}");
        let r = self.commit(&keys, start, commit).await;
        assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
    }
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("test did not finish in time")
}

#[tokio::test]
async fn lock_prewrite_commit() {
    let (_cluster, t) = start().await;
    let r = t.lock(lock_req(&[b"k1", b"k2"], 10, 10)).await;
    assert!(r.errors.is_empty() && r.values.is_empty() && r.results.is_empty());
    let lock = t.lock_of(b"k1").await.unwrap();
    assert_eq!(lock.r#type, Op::PessimisticLock as i32);
    assert_eq!(lock.start_ts, 10);
    // Retrying the same lock is idempotent.
    let r = t.lock(lock_req(&[b"k1", b"k2"], 10, 10)).await;
    assert!(r.errors.is_empty(), "{r:?}");
    let r = t
        .prewrite(&[(b"k1", b(b"v1")), (b"k2", b(b"v2"))], 10, 10)
        .await;
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(t.lock_of(b"k1").await.unwrap().r#type, Op::Put as i32);
    let r = t.commit(&[b"k1", b"k2"], 10, 20).await;
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(t.get(b"k1", 30).await, Some(b(b"v1")));
    assert_eq!(t.get(b"k2", 30).await, Some(b(b"v2")));
    assert!(t.lock_of(b"k1").await.is_none());
    // A later lock with an old for_update_ts conflicts with that commit.
    let r = t.lock(lock_req(&[b"k1"], 15, 15)).await;
    let c = r.errors[0].conflict.clone().unwrap();
    assert_eq!(
        (c.start_ts, c.conflict_ts, c.conflict_commit_ts),
        (15, 10, 20)
    );
    assert_eq!(
        c.reason,
        kvrpcpb::write_conflict::Reason::PessimisticRetry as i32
    );
}

#[tokio::test]
async fn conflict_without_waiting_is_locked_and_discards_the_request() {
    let (_cluster, t) = start().await;
    assert!(t.lock(lock_req(&[b"b"], 10, 10)).await.errors.is_empty());
    let r = t.lock(lock_req(&[b"a", b"b", b"c"], 20, 20)).await;
    assert_eq!(r.errors.len(), 1);
    let locked = r.errors[0].locked.clone().unwrap();
    assert_eq!((locked.lock_version, locked.key), (10, b(b"b")));
    assert_eq!(locked.lock_type, Op::PessimisticLock as i32);
    // Nothing of the failed request stays locked.
    assert!(t.lock_of(b"a").await.is_none());
    assert!(t.lock_of(b"c").await.is_none());
}

#[tokio::test]
async fn waiter_is_woken_by_commit_with_a_write_conflict() {
    let (cluster, t) = start().await;
    assert!(t.lock(lock_req(&[b"k"], 10, 10)).await.errors.is_empty());
    let waiter = {
        let t = t.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            let mut req = lock_req(&[b"k"], 20, 20);
            req.wait_timeout = 5000;
            (t.lock(req).await, began.elapsed())
        })
    };
    // Release only once the waiter is parked in the lock-wait queue.
    bounded(async {
        while cluster.parked_lock_requests() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        t.prewrite(&[(b"k", b(b"v"))], 10, 10)
            .await
            .errors
            .is_empty()
    );
    assert!(t.commit(&[b"k"], 10, 30).await.error.is_none());
    let (r, waited) = bounded(waiter).await.unwrap();
    // Woken by the release, well before the (capped) 1 s timeout.
    assert!(waited < Duration::from_millis(900), "{waited:?}");
    let c = r.errors[0].conflict.clone().unwrap();
    assert_eq!(
        (c.start_ts, c.conflict_ts, c.conflict_commit_ts),
        (20, 10, 30)
    );
    assert_eq!(c.key, b(b"k"));
    assert_eq!(
        c.reason,
        kvrpcpb::write_conflict::Reason::PessimisticRetry as i32
    );
    assert!(t.lock_of(b"k").await.is_none());
}

#[tokio::test]
async fn wait_timeout_answers_key_is_locked() {
    let (_cluster, t) = start().await;
    assert!(t.lock(lock_req(&[b"k"], 10, 10)).await.errors.is_empty());
    let mut req = lock_req(&[b"k"], 20, 20);
    req.wait_timeout = 100;
    let began = Instant::now();
    let r = bounded(t.lock(req)).await;
    assert!(began.elapsed() >= Duration::from_millis(100));
    let locked = r.errors[0].locked.clone().unwrap();
    assert_eq!(locked.lock_version, 10);
    // The waiter is gone: a rollback of the holder wakes nobody and the key is free.
    assert!(t.rollback(&[b"k"], 10, 10).await.errors.is_empty());
    assert!(t.lock(lock_req(&[b"k"], 30, 30)).await.errors.is_empty());
}

#[tokio::test]
async fn deadlock_between_two_txns_reports_the_wait_chain() {
    let (_cluster, t) = start().await;
    assert!(t.lock(lock_req(&[b"a"], 10, 10)).await.errors.is_empty());
    assert!(t.lock(lock_req(&[b"b"], 20, 20)).await.errors.is_empty());
    let spawn = |primary: &'static [u8], key: &'static [u8], start: u64| {
        let t = t.clone();
        tokio::spawn(async move {
            let mut req = lock_req(&[key], start, start);
            req.primary_lock = b(primary);
            req.wait_timeout = 5000;
            (start, t.lock(req).await)
        })
    };
    // 10 (holding a) waits for b; 20 (holding b) waits for a.
    let mut first = spawn(b"a", b"b", 10);
    let mut second = spawn(b"b", b"a", 20);
    // Whichever parks second closes the cycle and is the victim; the other keeps waiting.
    let ((victim, r), survivor) = bounded(async {
        tokio::select! {
            r = &mut first => (r.unwrap(), second),
            r = &mut second => (r.unwrap(), first),
        }
    })
    .await;
    let dl = r.errors[0]
        .deadlock
        .clone()
        .unwrap_or_else(|| panic!("{r:?}"));
    let other = if victim == 10 { 20 } else { 10 };
    let (victim_key, other_key): (&[u8], &[u8]) = if victim == 10 {
        (b"a", b"b")
    } else {
        (b"b", b"a")
    };
    assert_eq!(dl.lock_ts, other);
    assert_eq!(dl.lock_key, b(other_key));
    let chain: Vec<(u64, u64, Bytes)> = dl
        .wait_chain
        .iter()
        .map(|e| (e.txn, e.wait_for_txn, e.key.clone()))
        .collect();
    assert_eq!(
        chain,
        vec![
            (other, victim, b(victim_key)),
            (victim, other, b(other_key))
        ]
    );
    assert_eq!(dl.deadlock_key_hash, dl.wait_chain[0].key_hash);
    // The victim gives up its lock: the survivor is woken with a write conflict.
    assert!(
        t.rollback(&[victim_key], victim, victim)
            .await
            .errors
            .is_empty()
    );
    let (_, r) = bounded(survivor).await.unwrap();
    let c = r.errors[0]
        .conflict
        .clone()
        .unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(
        (c.start_ts, c.conflict_ts, c.conflict_commit_ts),
        (other, victim, 0)
    );
}

#[tokio::test]
async fn return_values_check_existence_and_lock_only_if_exists() {
    let (_cluster, t) = start().await;
    t.write(&[(b"x", b(b"vx"))], 10, 11).await;
    let mut req = lock_req(&[b"x", b"y"], 20, 20);
    req.return_values = true;
    let r = t.lock(req).await;
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(r.values, vec![b(b"vx"), Bytes::new()]);
    assert_eq!(r.not_founds, vec![false, true]);
    assert!(t.rollback(&[], 20, 20).await.errors.is_empty());

    let mut req = lock_req(&[b"x", b"y"], 30, 30);
    req.check_existence = true;
    let r = t.lock(req).await;
    assert!(r.values.is_empty());
    assert_eq!(r.not_founds, vec![false, true]);
    assert!(t.rollback(&[b"x", b"y"], 30, 30).await.errors.is_empty());

    // lock_only_if_exists needs return_values, then locks only existing keys.
    let mut req = lock_req(&[b"y"], 40, 40);
    req.lock_only_if_exists = true;
    let r = t.lock(req.clone()).await;
    assert!(r.errors[0].abort.contains("LockIfExistsFailed"), "{r:?}");
    req.return_values = true;
    req.mutations
        .push(lock_req(&[b"x"], 0, 0).mutations.remove(0));
    let r = t.lock(req).await;
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(r.not_founds, vec![true, false]);
    assert!(t.lock_of(b"y").await.is_none());
    assert!(t.lock_of(b"x").await.is_some());

    // should_not_exist on an existing key.
    let mut req = lock_req(&[b"z"], 50, 50);
    t.write(&[(b"z", b(b"vz"))], 45, 46).await;
    req.mutations[0].assertion = kvrpcpb::Assertion::NotExist as i32;
    let r = t.lock(req).await;
    assert_eq!(r.errors[0].already_exist.clone().unwrap().key, b(b"z"));
}

#[tokio::test]
async fn force_lock_locks_with_conflict() {
    let (_cluster, t) = start().await;
    t.write(&[(b"k", b(b"v"))], 10, 20).await;
    let mut req = lock_req(&[b"k"], 15, 15);
    req.wake_up_mode = kvrpcpb::PessimisticLockWakeUpMode::WakeUpModeForceLock as i32;
    let r = t.lock(req.clone()).await;
    assert!(r.errors.is_empty(), "{r:?}");
    let res = &r.results[0];
    assert_eq!(
        res.r#type,
        kvrpcpb::PessimisticLockKeyResultType::LockResultLockedWithConflict as i32
    );
    assert_eq!((res.value.clone(), res.existence), (b(b"v"), true));
    assert_eq!(res.locked_with_conflict_ts, 20);
    // Retried with the old for_update_ts, the lock (now at 20) reports the same conflict.
    let r = t.lock(req.clone()).await;
    assert_eq!(r.results[0].locked_with_conflict_ts, 20, "{r:?}");

    // Another txn in ForceLock without waiting: a failed result plus the locked error.
    let mut other = req.clone();
    other.start_version = 30;
    other.for_update_ts = 30;
    let r = t.lock(other.clone()).await;
    assert_eq!(
        r.results[0].r#type,
        kvrpcpb::PessimisticLockKeyResultType::LockResultFailed as i32
    );
    assert_eq!(r.errors[0].locked.clone().unwrap().lock_version, 15);

    // Waiting in ForceLock: after the holder commits the request is run again and locks.
    other.wait_timeout = 5000;
    let waiter = {
        let t = t.clone();
        tokio::spawn(async move { t.lock(other).await })
    };
    assert!(
        t.prewrite(&[(b"k", b(b"v2"))], 15, 20)
            .await
            .errors
            .is_empty()
    );
    assert!(t.commit(&[b"k"], 15, 40).await.error.is_none());
    let r = bounded(waiter).await.unwrap();
    assert!(r.errors.is_empty(), "{r:?}");
    assert_eq!(r.results[0].locked_with_conflict_ts, 40);
    assert_eq!(r.results[0].value, b(b"v2"));

    // More than one key is refused in ForceLock.
    let mut multi = lock_req(&[b"p", b"q"], 50, 50);
    multi.wake_up_mode = req.wake_up_mode;
    let r = t.lock(multi).await;
    assert!(r.errors[0].abort.contains("multiple keys"), "{r:?}");
}

#[tokio::test]
async fn pessimistic_rollback_by_keys_and_by_region() {
    let (_cluster, t) = start().await;
    assert!(
        t.lock(lock_req(&[b"a", b"b", b"c"], 10, 12))
            .await
            .errors
            .is_empty()
    );
    // A smaller for_update_ts does not remove the locks.
    assert!(t.rollback(&[b"a"], 10, 11).await.errors.is_empty());
    assert!(t.lock_of(b"a").await.is_some());
    assert!(t.rollback(&[b"a"], 10, 12).await.errors.is_empty());
    assert!(t.lock_of(b"a").await.is_none());
    // Another txn's rollback does nothing; no keys means the whole region.
    assert!(t.rollback(&[], 99, 99).await.errors.is_empty());
    assert!(t.lock_of(b"b").await.is_some());
    assert!(t.rollback(&[], 10, 12).await.errors.is_empty());
    assert!(t.lock_of(b"b").await.is_none() && t.lock_of(b"c").await.is_none());
    // No write record was left: the txn may lock again.
    assert!(t.lock(lock_req(&[b"a"], 10, 13)).await.errors.is_empty());
}

/// A small seeded generator, so the contention test is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contending_txns_finish_without_hanging() {
    let (_cluster, t) = start().await;
    const KEYS: [&[u8]; 4] = [b"c0", b"c1", b"c2", b"c3"];
    let tso = Arc::new(AtomicU64::new(100));
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut order = KEYS.to_vec();
        rng.shuffle(&mut order);
        let (t, tso) = (t.clone(), tso.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for _attempt in 0..20 {
                let start = tso.fetch_add(1, Ordering::SeqCst);
                let mut values = Vec::new();
                let mut failed = None;
                let mut for_update = start;
                let mut conflict_retries = 0;
                // Like a client: a write conflict retries the key with a newer for_update_ts
                // (keeping the locks held); a deadlock or a timeout restarts the transaction.
                while values.len() < order.len() {
                    let key = order[values.len()];
                    let mut req = lock_req(&[key], start, for_update);
                    req.primary_lock = b(order[0]);
                    req.is_first_lock = values.is_empty();
                    req.wait_timeout = 300;
                    req.return_values = true;
                    let r = t.lock(req).await;
                    for_update = tso.fetch_add(1, Ordering::SeqCst);
                    match r.errors.first() {
                        None => values.push(r.values[0].clone()),
                        Some(e) if e.conflict.is_some() && conflict_retries < 10 => {
                            conflict_retries += 1;
                            errors.push(e.clone());
                        }
                        Some(e) => {
                            failed = Some(e.clone());
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    assert!(
                        e.deadlock.is_some() || e.conflict.is_some() || e.locked.is_some(),
                        "{e:?}"
                    );
                    errors.push(e);
                    let r = t.rollback(&order, start, u64::MAX).await;
                    assert!(r.errors.is_empty(), "{r:?}");
                    tokio::time::sleep(Duration::from_millis(1 + start % 13)).await;
                    continue;
                }
                // Every key holds a counter; a committed txn adds one to each.
                let kvs: Vec<(&[u8], Bytes)> = order
                    .iter()
                    .zip(&values)
                    .map(|(k, v)| {
                        let n: u64 = std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .unwrap_or(0);
                        (*k, Bytes::from((n + 1).to_string()))
                    })
                    .collect();
                let r = t.prewrite(&kvs, start, for_update).await;
                assert!(r.errors.is_empty(), "{r:?}");
                let commit = tso.fetch_add(1, Ordering::SeqCst);
                let r = t.commit(&order, start, commit).await;
                assert!(r.error.is_none(), "{r:?}");
                return (true, errors);
            }
            (false, errors)
        }));
    }
    let outcomes = tokio::time::timeout(Duration::from_secs(60), async {
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.unwrap());
        }
        out
    })
    .await
    .expect("contending transactions hung");
    let committed = outcomes.iter().filter(|(ok, _)| *ok).count() as u64;
    assert!(committed > 0, "{outcomes:?}");
    let errors = outcomes.iter().flat_map(|(_, e)| e);
    let (mut deadlocks, mut conflicts, mut timeouts) = (0, 0, 0);
    for e in errors {
        if e.deadlock.is_some() {
            deadlocks += 1;
        } else if e.conflict.is_some() {
            conflicts += 1;
        } else {
            timeouts += 1;
        }
    }
    eprintln!(
        "committed {committed}/8; deadlocks {deadlocks}, conflicts {conflicts}, timeouts {timeouts}"
    );
    let read_ts = tso.fetch_add(1, Ordering::SeqCst);
    for key in KEYS {
        assert!(t.lock_of(key).await.is_none());
        let v = t.get(key, read_ts).await.unwrap_or_default();
        assert_eq!(v, Bytes::from(committed.to_string()), "{outcomes:?}");
    }
}
