//! MVCC garbage collection end to end: versions written through Percolator's RPCs, the GC safe
//! point advanced through PD (legacy `UpdateGCSafePoint` and `AdvanceGCSafePoint`), and the
//! remaining versions checked through `MvccGetByKey` and snapshot reads, under API V1.

use bytes::Bytes;
use tikv_mock::MockCluster;
use tikv_mock::proto::kvrpcpb::{self, Op};
use tikv_mock::proto::pdpb::{self, pd_client::PdClient};
use tikv_mock::proto::tikvpb::tikv_client::TikvClient;
use tonic::transport::Channel;

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

struct T {
    cluster: MockCluster,
    kv: TikvClient<Channel>,
    ctx: kvrpcpb::Context,
    pd: PdClient<Channel>,
}

async fn start() -> T {
    let cluster = MockCluster::builder().start().await.unwrap();
    // One region: every key shares its context.
    let (region, leader) = cluster.region_for_txn_key(b"k").unwrap();
    let leader = leader.unwrap();
    let addr = cluster.store_address(leader.store_id).unwrap();
    let kv = TikvClient::connect(format!("http://{addr}")).await.unwrap();
    let pd = PdClient::connect(format!("http://{}", cluster.pd_endpoints()[0]))
        .await
        .unwrap();
    let ctx = kvrpcpb::Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: Some(leader),
        ..Default::default()
    };
    T {
        cluster,
        kv,
        ctx,
        pd,
    }
}

impl T {
    fn header(&self) -> Option<pdpb::RequestHeader> {
        Some(pdpb::RequestHeader {
            cluster_id: self.cluster.cluster_id(),
            ..Default::default()
        })
    }

    /// Prewrites and commits one mutation of `key` in its own transaction.
    async fn write(&mut self, key: &[u8], op: Op, value: &[u8], start: u64, commit: u64) {
        let r = self
            .kv
            .kv_prewrite(kvrpcpb::PrewriteRequest {
                context: Some(self.ctx.clone()),
                mutations: vec![kvrpcpb::Mutation {
                    op: op as i32,
                    key: b(key),
                    value: b(value),
                    ..Default::default()
                }],
                primary_lock: b(key),
                start_version: start,
                lock_ttl: 3000,
                txn_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.errors.is_empty() && r.region_error.is_none(), "{r:?}");
        let c = self
            .kv
            .kv_commit(kvrpcpb::CommitRequest {
                context: Some(self.ctx.clone()),
                start_version: start,
                keys: vec![b(key)],
                commit_version: commit,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(c.error.is_none() && c.region_error.is_none(), "{c:?}");
    }

    async fn rollback(&mut self, key: &[u8], start: u64) {
        let r = self
            .kv
            .kv_batch_rollback(kvrpcpb::BatchRollbackRequest {
                context: Some(self.ctx.clone()),
                start_version: start,
                keys: vec![b(key)],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.error.is_none(), "{r:?}");
    }

    /// Commit timestamps of the write records `key` still has, newest first.
    async fn versions(&mut self, key: &[u8]) -> Vec<u64> {
        let info = self
            .kv
            .mvcc_get_by_key(kvrpcpb::MvccGetByKeyRequest {
                context: Some(self.ctx.clone()),
                key: b(key),
            })
            .await
            .unwrap()
            .into_inner()
            .info
            .unwrap_or_default();
        info.writes.iter().map(|w| w.commit_ts).collect()
    }

    async fn get(&mut self, key: &[u8], version: u64) -> Option<Bytes> {
        let g = self
            .kv
            .kv_get(kvrpcpb::GetRequest {
                context: Some(self.ctx.clone()),
                key: b(key),
                version,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(g.error.is_none() && g.region_error.is_none(), "{g:?}");
        (!g.not_found).then_some(g.value)
    }

    /// Moves the txn safe point as TiDB's GC worker does, then the GC safe point with the
    /// legacy RPC, returning the new GC safe point.
    async fn update_gc_safe_point(&mut self, safe_point: u64) -> u64 {
        let h = self.header();
        let r = self
            .pd
            .update_service_gc_safe_point(pdpb::UpdateServiceGcSafePointRequest {
                header: h.clone(),
                service_id: b(b"gc_worker"),
                ttl: i64::MAX,
                safe_point,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.min_safe_point, safe_point);
        let r = self
            .pd
            .update_gc_safe_point(pdpb::UpdateGcSafePointRequest {
                header: h,
                safe_point,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.header.as_ref().unwrap().error.is_none(), "{r:?}");
        r.new_safe_point
    }
}

#[tokio::test]
async fn update_gc_safe_point_collects_old_versions() {
    let mut t = start().await;
    t.write(b"k", Op::Put, b"v1", 10, 11).await;
    t.write(b"k", Op::Put, &[b'x'; 300], 20, 21).await;
    t.rollback(b"k", 25).await;
    t.write(b"k", Op::Put, b"v3", 30, 31).await;
    t.write(b"k", Op::Put, b"v4", 40, 41).await;
    t.write(b"d", Op::Put, b"gone", 10, 11).await;
    t.write(b"d", Op::Del, b"", 20, 21).await;
    assert_eq!(t.versions(b"k").await, vec![41, 31, 25, 21, 11]);

    assert_eq!(t.update_gc_safe_point(35).await, 35);
    // The Put at 31 is what a read at 35 sees; older records are gone, the newer Put stays.
    assert_eq!(t.versions(b"k").await, vec![41, 31]);
    assert_eq!(t.get(b"k", 36).await, Some(b(b"v3")));
    assert_eq!(t.get(b"k", 50).await, Some(b(b"v4")));
    // A deleted key loses its whole history.
    assert!(t.versions(b"d").await.is_empty());
    assert_eq!(t.get(b"d", 50).await, None);

    // The legacy RPC keeps a higher current value and does not collect below it again.
    assert_eq!(t.update_gc_safe_point(35).await, 35);
    assert_eq!(t.versions(b"k").await, vec![41, 31]);
}

#[tokio::test]
async fn advance_gc_safe_point_collects_and_run_gc_matches() {
    let mut t = start().await;
    t.write(b"a", Op::Put, b"1", 10, 11).await;
    t.write(b"a", Op::Lock, b"", 20, 21).await;
    t.write(b"a", Op::Put, b"2", 30, 31).await;
    t.write(b"b", Op::Put, b"1", 10, 11).await;
    t.write(b"b", Op::Put, b"2", 30, 31).await;
    let h = t.header();
    t.pd.advance_txn_safe_point(pdpb::AdvanceTxnSafePointRequest {
        header: h.clone(),
        target: 25,
        ..Default::default()
    })
    .await
    .unwrap();
    let r =
        t.pd.advance_gc_safe_point(pdpb::AdvanceGcSafePointRequest {
            header: h,
            target: 25,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.header.as_ref().unwrap().error.is_none(), "{r:?}");
    assert_eq!(r.new_gc_safe_point, 25);
    // The Lock record at 21 goes; the Put at 11 is still what a read at 25 sees.
    assert_eq!(t.versions(b"a").await, vec![31, 11]);
    assert_eq!(t.get(b"a", 25).await, Some(b(b"1")));

    // The control method collects without PD.
    assert_eq!(t.cluster.run_gc(40), 2);
    assert_eq!(t.versions(b"a").await, vec![31]);
    assert_eq!(t.versions(b"b").await, vec![31]);
    assert_eq!(t.get(b"b", 40).await, Some(b(b"2")));
}

#[tokio::test]
async fn locks_survive_gc() {
    let mut t = start().await;
    t.write(b"k", Op::Put, b"1", 10, 11).await;
    let r =
        t.kv.kv_prewrite(kvrpcpb::PrewriteRequest {
            context: Some(t.ctx.clone()),
            mutations: vec![kvrpcpb::Mutation {
                op: Op::Put as i32,
                key: b(b"k"),
                value: b(b"2"),
                ..Default::default()
            }],
            primary_lock: b(b"k"),
            start_version: 20,
            lock_ttl: 3000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.errors.is_empty());
    assert_eq!(t.cluster.run_gc(100), 0);
    let scan =
        t.kv.kv_scan_lock(kvrpcpb::ScanLockRequest {
            context: Some(t.ctx.clone()),
            max_version: 100,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scan.locks.len(), 1);
    assert_eq!(t.versions(b"k").await, vec![11]);
}
