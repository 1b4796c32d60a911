//! The transactional scenario (`--txn`, API V1): tikv-client 0.4's `TransactionClient` against
//! the mock's Percolator implementation on a two-region cluster (`t00..t04` | `t05..`).
//!
//! Covered: optimistic put/get/delete/commit read back through a new snapshot; a write conflict
//! between two optimistic transactions (the later commit fails, the loser is rolled back); a
//! transaction spanning both regions; async commit and one-phase commit; lock cleanup after a
//! failed commit (read-path resolution and `cleanup_locks`); GC through PD (`gc()`), checked by
//! snapshot reads below and above the safe point. Pessimistic transactions (`get_for_update`,
//! pessimistic lock cleanup, one transaction's lock request waiting for another's lock) run only
//! with `--with-pessimistic`.

use std::time::Duration;

use tikv_client::transaction::ResolveLocksOptions;
use tikv_client::{
    CheckLevel, Config, Timestamp, TimestampExt, Transaction, TransactionClient,
    TransactionOptions, Value,
};

use crate::{op, step, v};

/// Region split keys of the transactional scenario, as the mock's `--split-keys` takes them:
/// the memcomparable encoding of `t05`, so `t00..t04` and `t05..` live in different regions.
pub const TXN_SPLIT_KEYS: &str = r"t05\x00\x00\x00\x00\x00\xfa";

/// Lock TTL 0.4 gives a small transaction (its `DEFAULT_LOCK_TTL`), plus slack.
const LOCK_TTL_WAIT: Duration = Duration::from_millis(3_500);

async fn begin(c: &TransactionClient, options: TransactionOptions) -> Transaction {
    op("begin", c.begin_with_options(options)).await
}

fn optimistic() -> TransactionOptions {
    TransactionOptions::new_optimistic()
}

async fn now(c: &TransactionClient) -> Timestamp {
    op("current_timestamp (PD Tso)", c.current_timestamp()).await
}

/// Reads `key` through a fresh read-only snapshot at `ts`.
async fn read_at(c: &TransactionClient, ts: Timestamp, key: &str) -> Option<Value> {
    let mut snap = c.snapshot(ts, optimistic().read_only());
    op(&format!("snapshot get {key}"), snap.get(key.to_owned())).await
}

async fn read_now(c: &TransactionClient, key: &str) -> Option<Value> {
    let ts = now(c).await;
    read_at(c, ts, key).await
}

/// Commits one optimistic transaction putting `pairs` and returns its commit ts.
async fn put_all(c: &TransactionClient, pairs: &[(&str, &str)]) -> Timestamp {
    let mut t = begin(c, optimistic()).await;
    for (key, value) in pairs {
        op("put", t.put(key.to_string(), v(value))).await;
    }
    let ts = op("commit", t.commit()).await;
    ts.expect("a transaction with writes has a commit ts")
}

/// The transactional scenario. `pessimistic` adds the pessimistic-transaction steps.
pub async fn scenario_txn(pd: Vec<String>, pessimistic: bool) {
    eprintln!("transactional scenario (API V1) against PD {pd:?}");
    let config = Config::default().with_timeout(Duration::from_secs(5));
    let c = op(
        "connect (TransactionClient)",
        TransactionClient::new_with_config(pd.clone(), config),
    )
    .await;
    step("connect (TransactionClient, API V1)");

    optimistic_basics(&c).await;
    write_conflict(&c).await;
    async_commit_and_one_pc(&c).await;
    if pessimistic {
        pessimistic_txn(&c).await;
        pessimistic_lock_wait(&c).await;
    } else {
        eprintln!("  --  pessimistic steps skipped (run with --with-pessimistic)");
    }
    gc(&c, &pd[0]).await;
}

async fn optimistic_basics(c: &TransactionClient) {
    let mut t = begin(c, optimistic()).await;
    op("put t01", t.put("t01".to_owned(), v("a1"))).await;
    op("put t02", t.put("t02".to_owned(), v("a2"))).await;
    op("put t07", t.put("t07".to_owned(), v("a7"))).await;
    // A transaction reads its own buffered writes.
    assert_eq!(
        op("get own write", t.get("t01".to_owned())).await,
        Some(v("a1"))
    );
    assert_eq!(op("get missing", t.get("t03".to_owned())).await, None);
    let commit_ts = op("commit", t.commit()).await.expect("commit ts");
    assert!(commit_ts.version() > 0);
    step("optimistic txn over two regions: put, read own writes, commit");

    assert_eq!(read_now(c, "t01").await, Some(v("a1")));
    assert_eq!(read_now(c, "t07").await, Some(v("a7")));
    let snap_keys: Vec<String> = {
        let ts = now(c).await;
        let mut snap = c.snapshot(ts, optimistic().read_only());
        let pairs = op(
            "snapshot scan",
            snap.scan("t00".to_owned().."t05".to_owned(), 10),
        )
        .await;
        pairs.map(|p| crate::key_text(p.0)).collect()
    };
    assert_eq!(snap_keys, vec!["t01", "t02"]);
    step("new snapshot sees the commit (get, scan inside a region)");

    let mut t = begin(c, optimistic()).await;
    op("delete t02", t.delete("t02".to_owned())).await;
    op("put t01", t.put("t01".to_owned(), v("b1"))).await;
    op("commit", t.commit()).await;
    assert_eq!(read_now(c, "t02").await, None);
    assert_eq!(read_now(c, "t01").await, Some(v("b1")));
    // The old version is still readable at the old commit ts.
    assert_eq!(read_at(c, commit_ts, "t02").await, Some(v("a2")));
    step("delete + overwrite, old snapshot still sees old versions");

    // Rolling back discards the buffered writes.
    let mut t = begin(c, optimistic()).await;
    op("put t03", t.put("t03".to_owned(), v("never"))).await;
    op("rollback", t.rollback()).await;
    assert_eq!(read_now(c, "t03").await, None);
    step("rollback of an uncommitted txn");
}

async fn write_conflict(c: &TransactionClient) {
    let mut first = begin(c, optimistic()).await;
    let mut second = begin(c, optimistic()).await;
    op("first put t04", first.put("t04".to_owned(), v("first"))).await;
    // `second` spans both regions; its primary t00 is in the other region than the conflict.
    op("second put t00", second.put("t00".to_owned(), v("second"))).await;
    op("second put t04", second.put("t04".to_owned(), v("second"))).await;
    op("second put t08", second.put("t08".to_owned(), v("second"))).await;
    op("first commit", first.commit()).await;
    let err = tokio::time::timeout(Duration::from_secs(30), second.commit())
        .await
        .expect("second commit answers");
    assert!(err.is_err(), "the later commit must fail: {err:?}");
    let text = format!("{:?}", err.unwrap_err());
    assert!(
        text.contains("WriteConflict") || text.contains("conflict"),
        "expected a write conflict, got {text}"
    );
    assert_eq!(read_now(c, "t04").await, Some(v("first")));
    step("write conflict: the later optimistic commit fails, the first one stands");

    // The loser's prewrite may have left locks in the region without the conflict; rolling it
    // back clears them.
    op("rollback the loser", second.rollback()).await;
    let ts = now(c).await;
    let locks = op("scan_locks", c.scan_locks(&ts, .., 100)).await;
    assert!(locks.is_empty(), "locks after rollback: {locks:?}");
    assert_eq!(read_now(c, "t00").await, None);
    assert_eq!(read_now(c, "t08").await, None);
    step("rollback after a failed commit leaves no locks");

    // A loser dropped without rollback: its locks (if its prewrite got that far) are resolved by
    // readers once the TTL passes, and by cleanup_locks.
    let mut first = begin(c, optimistic()).await;
    let mut third = begin(c, optimistic().drop_check(CheckLevel::None)).await;
    op("first put t08", first.put("t08".to_owned(), v("first"))).await;
    op("third put t01", third.put("t01".to_owned(), v("third"))).await;
    op("third put t08", third.put("t08".to_owned(), v("third"))).await;
    op("first commit", first.commit()).await;
    let res = tokio::time::timeout(Duration::from_secs(30), third.commit())
        .await
        .expect("third commit answers");
    assert!(res.is_err(), "the later commit must fail: {res:?}");
    drop(third);
    let ts = now(c).await;
    let left = op("scan_locks", c.scan_locks(&ts, .., 100)).await.len();
    tokio::time::sleep(LOCK_TTL_WAIT).await;
    // A reader meets any leftover lock on t01, finds it expired and rolls it back.
    assert_eq!(read_now(c, "t01").await, Some(v("b1")));
    let ts = now(c).await;
    op(
        "cleanup_locks",
        c.cleanup_locks(.., &ts, ResolveLocksOptions::default()),
    )
    .await;
    let locks = op("scan_locks", c.scan_locks(&ts, .., 100)).await;
    assert!(locks.is_empty(), "locks after cleanup: {locks:?}");
    step(&format!(
        "dropped loser: {left} leftover lock(s) resolved by a reader / cleanup_locks"
    ));
}

async fn async_commit_and_one_pc(c: &TransactionClient) {
    let mut t = begin(c, optimistic().use_async_commit()).await;
    op("put t02", t.put("t02".to_owned(), v("async2"))).await;
    op("put t06", t.put("t06".to_owned(), v("async6"))).await;
    let commit_ts = op("async commit", t.commit()).await.expect("commit ts");
    assert!(commit_ts.version() > t.start_timestamp().version());
    // Secondaries are committed in the background; readers resolve what is still locked.
    assert_eq!(read_now(c, "t02").await, Some(v("async2")));
    assert_eq!(read_now(c, "t06").await, Some(v("async6")));
    step("async commit over two regions, read back");

    let mut t = begin(c, optimistic().try_one_pc()).await;
    op("put t03", t.put("t03".to_owned(), v("onepc"))).await;
    op("1pc commit", t.commit()).await;
    assert_eq!(read_now(c, "t03").await, Some(v("onepc")));
    step("one-phase commit (single region), read back");
}

async fn pessimistic_txn(c: &TransactionClient) {
    put_all(c, &[("t09", "p0")]).await;
    let mut t = begin(c, TransactionOptions::new_pessimistic()).await;
    let got = op("get_for_update t09", t.get_for_update("t09".to_owned())).await;
    assert_eq!(got, Some(v("p0")));
    op("put t09", t.put("t09".to_owned(), v("p1"))).await;
    op("put t04", t.put("t04".to_owned(), v("p4"))).await;
    op("pessimistic commit", t.commit()).await;
    assert_eq!(read_now(c, "t09").await, Some(v("p1")));
    assert_eq!(read_now(c, "t04").await, Some(v("p4")));
    step("pessimistic txn: get_for_update, put, commit");

    // A pessimistic lock held by a dropped transaction: cleanup after its TTL.
    let mut t = begin(
        c,
        TransactionOptions::new_pessimistic().drop_check(CheckLevel::None),
    )
    .await;
    op("get_for_update t09", t.get_for_update("t09".to_owned())).await;
    drop(t);
    let ts = now(c).await;
    let locks = op("scan_locks", c.scan_locks(&ts, .., 100)).await;
    assert_eq!(
        locks.len(),
        1,
        "the dropped txn's pessimistic lock: {locks:?}"
    );
    tokio::time::sleep(LOCK_TTL_WAIT).await;
    let ts = now(c).await;
    op(
        "cleanup_locks",
        c.cleanup_locks(.., &ts, ResolveLocksOptions::default()),
    )
    .await;
    assert!(op("scan_locks", c.scan_locks(&ts, .., 100))
        .await
        .is_empty());
    step("pessimistic lock of a dropped txn cleaned up");
}

/// How long a lock request is watched before it must still be waiting: well under TiKV's
/// wait-for-lock timeout (1 s), which is what would end the wait otherwise.
const STILL_WAITING: Duration = Duration::from_millis(300);

/// Client B's pessimistic lock request waits in the store for client A's lock. 0.4 asks for
/// TiKV's default wait (`wait_timeout` 0) in the legacy wake-up mode, so when A commits, B's
/// request is woken with a write conflict (reason PessimisticRetry, A's commit ts): B locks
/// again with a new for_update_ts, which is granted and reads A's value.
async fn pessimistic_lock_wait(c: &TransactionClient) {
    put_all(c, &[("t10", "w0")]).await;
    let mut a = begin(c, TransactionOptions::new_pessimistic()).await;
    let got = op("A get_for_update t10", a.get_for_update("t10".to_owned())).await;
    assert_eq!(got, Some(v("w0")));

    let mut b = begin(c, TransactionOptions::new_pessimistic()).await;
    let waiting = tokio::spawn(async move {
        let first = b.get_for_update("t10".to_owned()).await;
        (b, first)
    });
    tokio::time::sleep(STILL_WAITING).await;
    assert!(
        !waiting.is_finished(),
        "B's lock request did not wait for A's lock"
    );
    step("pessimistic lock wait: B waits for A's lock");

    op("A put t10", a.put("t10".to_owned(), v("wa"))).await;
    let a_commit = op("A commit", a.commit())
        .await
        .expect("A wrote, so it has a commit ts");
    let (mut b, first) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("B's lock request was not answered after A committed")
        .expect("B's task");
    let err = match first {
        Ok(v) => panic!("B's woken lock request succeeded ({v:?}); TiKV answers a write conflict"),
        Err(e) => format!("{e:?}"),
    };
    assert!(
        err.contains("WriteConflict")
            && err.contains(&format!("conflict_commit_ts: {}", a_commit.version())),
        "B's woken lock request: {err}"
    );
    step("pessimistic lock wait: A's commit wakes B with a write conflict at A's commit ts");

    let got = op(
        "B get_for_update t10 (again)",
        b.get_for_update("t10".to_owned()),
    )
    .await;
    assert_eq!(got, Some(v("wa")));
    op("B put t10", b.put("t10".to_owned(), v("wb"))).await;
    op("B commit", b.commit()).await;
    assert_eq!(read_now(c, "t10").await, Some(v("wb")));
    step("pessimistic lock wait: B locks again, reads A's value, commits");
}

async fn gc(c: &TransactionClient, pd: &str) {
    let old = put_all(c, &[("t05", "old")]).await;
    let new = put_all(c, &[("t05", "new")]).await;
    assert_eq!(read_at(c, old.clone(), "t05").await, Some(v("old")));
    let safe_point = now(c).await;
    assert!(safe_point.version() > new.version());

    // PD refuses a GC safe point above the txn safe point; move that first, as TiDB does.
    let min = crate::pd_admin::advance_txn_safe_point(pd, safe_point.version())
        .await
        .unwrap_or_else(|e| panic!("advance txn safe point: {e}"));
    assert_eq!(min, safe_point.version());
    let advanced = op(
        "gc (resolve locks + UpdateGCSafePoint)",
        c.gc(safe_point.clone()),
    )
    .await;
    assert!(advanced, "PD took the safe point as given");
    step("gc(): resolve locks, UpdateGCSafePoint accepted");

    // The version only a reader below the safe point could see is gone; the newest stays.
    assert_eq!(read_at(c, old, "t05").await, None);
    assert_eq!(read_at(c, safe_point, "t05").await, Some(v("new")));
    assert_eq!(read_now(c, "t05").await, Some(v("new")));
    assert_eq!(read_now(c, "t01").await, Some(v("b1")));
    step("after GC: old version collected, newest version readable");
}
