//! Pipelined DML end to end: KvFlush (generations, foreign locks, assertions), KvBufferBatchGet
//! (a transaction reading back what it flushed), the resolution of flushed locks (commit,
//! status check, heartbeat, region-wide resolve lock), and BroadcastTxnStatus feeding the
//! stores' transaction status cache, over plain tonic clients under API V1.

use crate::common;

use bytes::Bytes;
use common::{b, bounded, ctx_for, store_client};
use tikv_mock::proto::kvrpcpb::{self, Op};
use tikv_mock::proto::tikvpb::tikv_client::TikvClient;
use tikv_mock::{ApiVersion, ManualClock, MockCluster};
use tonic::transport::Channel;

const START_MS: u64 = 1_700_000_000_000;

/// A TSO-like timestamp at `ms` physical milliseconds.
fn ts(ms: u64, logical: u64) -> u64 {
    (ms << 18) | logical
}

struct T {
    cluster: MockCluster,
    clock: ManualClock,
}

async fn start(split_keys: &[&str]) -> T {
    let clock = ManualClock::new(START_MS);
    let cluster = MockCluster::builder()
        .manual_clock(clock.clone())
        .split_keys(split_keys.iter().map(|k| k.as_bytes()))
        .start()
        .await
        .unwrap();
    T { cluster, clock }
}

fn put(key: &[u8], value: &[u8]) -> kvrpcpb::Mutation {
    kvrpcpb::Mutation {
        op: Op::Put as i32,
        key: b(key),
        value: b(value),
        ..Default::default()
    }
}

fn del(key: &[u8]) -> kvrpcpb::Mutation {
    kvrpcpb::Mutation {
        op: Op::Del as i32,
        key: b(key),
        ..Default::default()
    }
}

impl T {
    /// A client of the leader of `key`'s region, with a context addressing it. The tests make
    /// up timestamps a little ahead of the TSO, which TiKV accepts from TiDB.
    async fn client(&self, key: &[u8]) -> (TikvClient<Channel>, kvrpcpb::Context) {
        let (region, leader) = self.cluster.region_for_txn_key(key).unwrap();
        let leader = leader.unwrap();
        let client = store_client(&self.cluster, leader.store_id).await;
        let mut ctx = ctx_for(&region, leader, ApiVersion::V1);
        ctx.request_origin = kvrpcpb::RequestOrigin::TiDb as i32;
        (client, ctx)
    }

    async fn flush(
        &self,
        primary: &[u8],
        start_ts: u64,
        generation: u64,
        mutations: Vec<kvrpcpb::Mutation>,
    ) -> kvrpcpb::FlushResponse {
        let (mut c, ctx) = self.client(&mutations[0].key).await;
        bounded(
            "KvFlush",
            c.kv_flush(kvrpcpb::FlushRequest {
                context: Some(ctx),
                mutations,
                primary_key: b(primary),
                start_ts,
                min_commit_ts: start_ts + 1,
                generation,
                lock_ttl: 3000,
                assertion_level: kvrpcpb::AssertionLevel::Off as i32,
            }),
        )
        .await
        .unwrap()
        .into_inner()
    }

    async fn buffer_get(&self, keys: &[&[u8]], version: u64) -> kvrpcpb::BufferBatchGetResponse {
        let (mut c, ctx) = self.client(keys[0]).await;
        bounded(
            "KvBufferBatchGet",
            c.kv_buffer_batch_get(kvrpcpb::BufferBatchGetRequest {
                context: Some(ctx),
                keys: keys.iter().map(|k| b(k)).collect(),
                version,
            }),
        )
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

    async fn lock_of(&self, key: &[u8]) -> Option<kvrpcpb::MvccLock> {
        let (mut c, ctx) = self.client(key).await;
        c.mvcc_get_by_key(kvrpcpb::MvccGetByKeyRequest {
            context: Some(ctx),
            key: b(key),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .and_then(|i| i.lock)
    }
}

fn pairs(r: &kvrpcpb::BufferBatchGetResponse) -> Vec<(Bytes, Bytes)> {
    assert!(r.region_error.is_none() && r.error.is_none(), "{r:?}");
    r.pairs
        .iter()
        .map(|p| {
            assert!(p.error.is_none(), "{p:?}");
            (p.key.clone(), p.value.clone())
        })
        .collect()
}

#[tokio::test]
async fn flushed_values_are_read_back_then_committed() {
    let t = start(&[]).await;
    let s = ts(START_MS, 1);
    let long = vec![b'x'; 300];
    let r = t
        .flush(
            b"a",
            s,
            1,
            vec![put(b"a", b"1"), del(b"b"), put(b"c", &long)],
        )
        .await;
    assert!(r.region_error.is_none() && r.errors.is_empty(), "{r:?}");
    let lock = t.lock_of(b"a").await.unwrap();
    assert_eq!(lock.start_ts, s);
    // The transaction's own view: sorted, deduplicated, a Delete reads as an empty value,
    // keys it did not write are left out.
    let got = t.buffer_get(&[b"c", b"a", b"x", b"b", b"a"], s).await;
    assert_eq!(
        pairs(&got),
        vec![
            (b(b"a"), b(b"1")),
            (b(b"b"), Bytes::new()),
            (b(b"c"), Bytes::from(long.clone())),
        ]
    );
    // Another transaction's view of the buffer is empty, and ordinary readers are blocked.
    assert!(pairs(&t.buffer_get(&[b"a"], s + 1).await).is_empty());
    assert!(
        t.get(b"a", ts(START_MS, 10))
            .await
            .error
            .unwrap()
            .locked
            .is_some()
    );
    // Readers below the flushed locks' min_commit_ts (start_ts + 1) are not.
    let below = t.get(b"a", s).await;
    assert!(below.error.is_none() && below.not_found, "{below:?}");
    let c = t.commit(&[b"a", b"b", b"c"], s, ts(START_MS, 20)).await;
    assert!(c.error.is_none() && c.region_error.is_none(), "{c:?}");
    assert_eq!(
        t.get(b"c", ts(START_MS, 21)).await.value.as_ref(),
        &long[..]
    );
    assert!(t.get(b"b", ts(START_MS, 21)).await.not_found);
    assert!(pairs(&t.buffer_get(&[b"a", b"c"], s).await).is_empty());
}

#[tokio::test]
async fn generations_overwrite_forward_only() {
    let t = start(&[]).await;
    let s = ts(START_MS, 1);
    let r = t.flush(b"k", s, 0, vec![put(b"k", b"v")]).await;
    assert_eq!(r.errors.len(), 1);
    assert!(
        r.errors[0]
            .abort
            .contains("generation should be greater than 0 for Flush requests"),
        "{r:?}"
    );
    assert!(t.lock_of(b"k").await.is_none());
    assert!(
        t.flush(b"k", s, 2, vec![put(b"k", b"v2")])
            .await
            .errors
            .is_empty()
    );
    // An older (or the same) generation arriving late changes nothing and is no error.
    assert!(
        t.flush(b"k", s, 1, vec![put(b"k", b"v1")])
            .await
            .errors
            .is_empty()
    );
    assert!(
        t.flush(b"k", s, 2, vec![put(b"k", b"v1")])
            .await
            .errors
            .is_empty()
    );
    assert_eq!(
        pairs(&t.buffer_get(&[b"k"], s).await),
        vec![(b(b"k"), b(b"v2"))]
    );
    // A newer one replaces the value; an insert over a flushed value is AlreadyExist.
    assert!(
        t.flush(b"k", s, 3, vec![put(b"k", b"v3")])
            .await
            .errors
            .is_empty()
    );
    assert_eq!(
        pairs(&t.buffer_get(&[b"k"], s).await),
        vec![(b(b"k"), b(b"v3"))]
    );
    let mut insert = put(b"k", b"v4");
    insert.op = Op::Insert as i32;
    let r = t.flush(b"k", s, 4, vec![insert]).await;
    assert!(r.errors[0].already_exist.is_some(), "{r:?}");
    assert!(t.commit(&[b"k"], s, ts(START_MS, 5)).await.error.is_none());
    assert_eq!(t.get(b"k", ts(START_MS, 6)).await.value.as_ref(), b"v3");
}

#[tokio::test]
async fn a_foreign_lock_is_reported_while_the_other_keys_are_flushed() {
    let t = start(&[]).await;
    let other = ts(START_MS, 1);
    let (mut c, ctx) = t.client(b"k1").await;
    let r = c
        .kv_prewrite(kvrpcpb::PrewriteRequest {
            context: Some(ctx),
            mutations: vec![put(b"k1", b"other")],
            primary_lock: b(b"k1"),
            start_version: other,
            lock_ttl: 3000,
            txn_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.errors.is_empty(), "{r:?}");
    let s = ts(START_MS, 2);
    let r = t
        .flush(b"k2", s, 1, vec![put(b"k1", b"mine"), put(b"k2", b"mine")])
        .await;
    assert_eq!(r.errors.len(), 1, "{r:?}");
    let locked = r.errors[0].locked.as_ref().unwrap();
    assert_eq!(
        (locked.lock_version, locked.key.as_ref()),
        (other, &b"k1"[..])
    );
    // Unlike a prewrite, the free key was written.
    assert_eq!(
        pairs(&t.buffer_get(&[b"k1", b"k2"], s).await),
        vec![(b(b"k2"), b(b"mine"))]
    );
    // A flush of a transaction that already committed the key is a harmless late request.
    assert!(t.commit(&[b"k2"], s, ts(START_MS, 3)).await.error.is_none());
    let late = t.flush(b"k2", s, 2, vec![put(b"k2", b"late")]).await;
    assert!(
        late.errors.is_empty() && late.region_error.is_none(),
        "{late:?}"
    );
    assert!(t.lock_of(b"k2").await.is_none());
}

#[tokio::test]
async fn flushed_locks_are_resolved_like_prewritten_ones() {
    let t = start(&[]).await;
    let s = ts(START_MS, 1);
    assert!(
        t.flush(
            b"p",
            s,
            1,
            vec![put(b"p", b"1"), put(b"s1", b"1"), put(b"s2", b"1")]
        )
        .await
        .errors
        .is_empty()
    );
    let (mut c, ctx) = t.client(b"p").await;
    // The heartbeat of a pipelined transaction may push its min_commit_ts.
    let hb = c
        .kv_txn_heart_beat(kvrpcpb::TxnHeartBeatRequest {
            context: Some(ctx.clone()),
            primary_lock: b(b"p"),
            start_version: s,
            advise_lock_ttl: 5000,
            min_commit_ts: ts(START_MS, 50),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hb.lock_ttl, 5000);
    // Readers below the pushed min_commit_ts are no longer blocked; later ones are.
    assert!(t.get(b"p", ts(START_MS, 45)).await.not_found);
    let after = t.get(b"p", ts(START_MS, 55)).await.error.unwrap();
    assert_eq!(after.locked.unwrap().min_commit_ts, ts(START_MS, 50));
    // Committing below it is refused.
    let c1 = t.commit(&[b"p"], s, ts(START_MS, 40)).await;
    assert!(c1.error.unwrap().commit_ts_expired.is_some());
    // Region-wide resolve lock commits the secondaries once the primary is committed.
    assert!(t.commit(&[b"p"], s, ts(START_MS, 60)).await.error.is_none());
    let r = c
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: Some(ctx.clone()),
            start_version: s,
            commit_version: ts(START_MS, 60),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none() && r.region_error.is_none(), "{r:?}");
    assert!(t.lock_of(b"s2").await.is_none());
    assert_eq!(t.get(b"s1", ts(START_MS, 61)).await.value.as_ref(), b"1");

    // An abandoned pipelined transaction: its primary expires and is rolled back.
    let s2 = ts(START_MS, 100);
    assert!(
        t.flush(b"q", s2, 1, vec![put(b"q", b"2"), put(b"r", b"2")])
            .await
            .errors
            .is_empty()
    );
    t.clock.advance(std::time::Duration::from_secs(10));
    let now = ts(START_MS + 10_000, 0);
    let st = c
        .kv_check_txn_status(kvrpcpb::CheckTxnStatusRequest {
            context: Some(ctx.clone()),
            primary_key: b(b"q"),
            lock_ts: s2,
            caller_start_ts: now,
            current_ts: now,
            rollback_if_not_exist: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        st.action,
        kvrpcpb::Action::TtlExpireRollback as i32,
        "{st:?}"
    );
    // A secondary flushed lock rolled back by resolve lock gets a protected rollback record,
    // so a late flush of it cannot succeed.
    let r = c
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: Some(ctx),
            start_version: s2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none(), "{r:?}");
    let late = t.flush(b"q", s2, 2, vec![put(b"r", b"late")]).await;
    assert!(
        late.errors[0]
            .conflict
            .as_ref()
            .is_some_and(|c| c.reason == kvrpcpb::write_conflict::Reason::SelfRolledBack as i32),
        "{late:?}"
    );
}

/// TiKV treats a pessimistic prewrite of a transaction it knows committed as a retry, which
/// makes a late duplicate of a prewrite harmless on keys that had no pessimistic lock. A store
/// learns it from the commits it executes, and from BroadcastTxnStatus for the others.
#[tokio::test]
async fn broadcast_txn_status_protects_a_store_from_late_prewrites() {
    // One region: only its leader's store executes (and learns of) the commit.
    let t = start(&[]).await;
    let s = ts(START_MS, 1);
    let f = ts(START_MS, 2);
    let commit_ts = ts(START_MS, 10);
    let (mut ca, cta) = t.client(b"a").await;
    let (mut cz, ctz) = t.client(b"z").await;
    // Primary "a" pessimistic-locked; secondary "z" (an index key) is not.
    let lock = ca
        .kv_pessimistic_lock(kvrpcpb::PessimisticLockRequest {
            context: Some(cta.clone()),
            mutations: vec![kvrpcpb::Mutation {
                op: Op::PessimisticLock as i32,
                key: b(b"a"),
                ..Default::default()
            }],
            primary_lock: b(b"a"),
            start_version: s,
            for_update_ts: f,
            lock_ttl: 3000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(lock.errors.is_empty(), "{lock:?}");
    let prewrite = |ctx: kvrpcpb::Context, key: &[u8], action| kvrpcpb::PrewriteRequest {
        context: Some(ctx),
        mutations: vec![put(key, b"v")],
        primary_lock: b(b"a"),
        start_version: s,
        for_update_ts: f,
        lock_ttl: 3000,
        txn_size: 2,
        pessimistic_actions: vec![action as i32],
        ..Default::default()
    };
    use kvrpcpb::prewrite_request::PessimisticAction;
    let pa = ca
        .kv_prewrite(prewrite(
            cta.clone(),
            b"a",
            PessimisticAction::DoPessimisticCheck,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(pa.errors.is_empty(), "{pa:?}");
    let late_z = prewrite(ctz.clone(), b"z", PessimisticAction::SkipPessimisticCheck);
    let pz = cz.kv_prewrite(late_z.clone()).await.unwrap().into_inner();
    assert!(pz.errors.is_empty(), "{pz:?}");
    assert!(t.commit(&[b"a"], s, commit_ts).await.error.is_none());
    assert!(t.commit(&[b"z"], s, commit_ts).await.error.is_none());

    // The store that committed "z" knows: a late duplicate prewrite there writes nothing.
    let again = cz.kv_prewrite(late_z.clone()).await.unwrap().into_inner();
    assert!(
        again.errors.is_empty() && again.region_error.is_none(),
        "{again:?}"
    );
    assert!(t.lock_of(b"z").await.is_none());

    // Leadership of "z" moves to a store that never saw the transaction: there the late
    // prewrite locks the committed key again, as in TiKV.
    let (region, leader) = t.cluster.region_for_txn_key(b"z").unwrap();
    let other_store = t
        .cluster
        .store_ids()
        .into_iter()
        .find(|&id| id != leader.unwrap().store_id)
        .unwrap();
    t.cluster.transfer_leader(region.id, other_store).unwrap();
    let (mut cz2, ctz2) = t.client(b"z").await;
    let stale = cz2
        .kv_prewrite(prewrite(
            ctz2.clone(),
            b"z",
            PessimisticAction::SkipPessimisticCheck,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(stale.errors.is_empty(), "{stale:?}");
    assert_eq!(t.lock_of(b"z").await.unwrap().start_ts, s);
    // Clean the stray lock the way a resolver would: the transaction is committed.
    let r = cz2
        .kv_resolve_lock(kvrpcpb::ResolveLockRequest {
            context: Some(ctz2.clone()),
            start_version: s,
            commit_version: commit_ts,
            keys: vec![b(b"z")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.error.is_none(), "{r:?}");
    assert!(t.lock_of(b"z").await.is_none());

    // Told by BroadcastTxnStatus (which needs no region), the store refuses the next one.
    let third = t
        .cluster
        .store_ids()
        .into_iter()
        .find(|&id| id != other_store && id != leader.unwrap().store_id)
        .unwrap();
    let mut c3 = store_client(&t.cluster, third).await;
    c3.broadcast_txn_status(kvrpcpb::BroadcastTxnStatusRequest {
        context: None,
        txn_status: vec![kvrpcpb::TxnStatus {
            start_ts: s,
            min_commit_ts: 0,
            commit_ts,
            rolled_back: false,
            is_completed: true,
        }],
    })
    .await
    .unwrap();
    t.cluster.transfer_leader(region.id, third).unwrap();
    let (mut cz3, ctz3) = t.client(b"z").await;
    let refused = cz3
        .kv_prewrite(prewrite(
            ctz3,
            b"z",
            PessimisticAction::SkipPessimisticCheck,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(refused.errors.is_empty(), "{refused:?}");
    assert!(t.lock_of(b"z").await.is_none());
}
