//! `RawClient` through its public API against `tikv-mock`: every operation, batches and scans
//! across regions while regions split, API V2 keyspace isolation, TTLs on the mock's manual
//! clock, CAS races, and bad input refused before anything is sent.
//!
//! Ports client-go `rawkv/rawkv_test.go` and `integration_tests/raw/` cases (mapped in
//! docs/test-port.md), and checks that client-rust's raw bugs #455, #457, #500 and #527 do not
//! exist here.

// Test code: an unwrap that fails is a failed test (the workspace lints deny them elsewhere).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::StreamExt;
use std::future::IntoFuture;
use tikv_client::options::ColumnFamily;
use tikv_client::{ApiVersion, BoundRange, Cluster, Config, Error, Key, KvPair, RawClient, Value};

use tikv_mock::{
    Action, FaultRule, HangHandle, ManualClock, Matcher, MockCluster, RegionErrorSpec, Times,
};

async fn mock(split: &[&str]) -> MockCluster {
    MockCluster::builder()
        .stores(3)
        .split_keys(split.iter().map(|k| k.as_bytes()))
        .start()
        .await
        .unwrap()
}

async fn client(mock: &MockCluster) -> RawClient {
    RawClient::new(mock.pd_endpoints()).await.unwrap()
}

fn pairs(n: usize, prefix: &str) -> Vec<KvPair> {
    (0..n)
        .map(|i| KvPair::new(format!("{prefix}{i:05}"), format!("value{i}")))
        .collect()
}

fn keys_of(pairs: &[KvPair]) -> Vec<Vec<u8>> {
    pairs.iter().map(|p| p.key().to_vec()).collect()
}

fn count(mock: &MockCluster, command: &str) -> u64 {
    mock.store_ids()
        .into_iter()
        .map(|s| mock.rpc_count(s, command))
        .sum()
}

#[tokio::test]
async fn single_key_operations() {
    let mock = mock(&["m"]).await;
    let c = client(&mock).await;
    assert_eq!(c.get("a").await.unwrap(), None);
    c.put("a", "1").await.unwrap();
    c.put("z", "").await.unwrap();
    assert_eq!(c.get("a").await.unwrap().unwrap().as_ref(), b"1");
    // An empty value exists and is distinct from a missing key.
    assert_eq!(c.get("z").await.unwrap().unwrap().as_ref(), b"");
    c.delete("a").await.unwrap();
    assert_eq!(c.get("a").await.unwrap(), None);
    c.delete("never").await.unwrap();
}

#[tokio::test]
async fn batches_span_regions_and_keep_the_callers_order() {
    let mock = mock(&["k00100", "k00200", "k00300"]).await;
    let c = client(&mock).await;
    let all = pairs(400, "k");
    c.batch_put(all.clone()).await.unwrap();
    // Reversed, with a missing key and a duplicate in the middle.
    let mut want: Vec<Key> = all.iter().rev().map(|p| p.key().clone()).collect();
    want.insert(10, Key::from("missing"));
    want.insert(20, all[5].key().clone());
    let got = c.batch_get(want.clone()).await.unwrap();
    assert_eq!(got.len(), 401);
    let expected: Vec<Vec<u8>> = want
        .iter()
        .filter(|k| k.as_bytes() != b"missing")
        .map(|k| k.to_vec())
        .collect();
    assert_eq!(keys_of(&got), expected);
    assert!(got.iter().all(|p| {
        let i: usize = std::str::from_utf8(&p.key().as_bytes()[1..])
            .unwrap()
            .parse()
            .unwrap();
        p.value().as_ref() == format!("value{i}").as_bytes()
    }));
    c.batch_delete(all.iter().step_by(2).map(|p| p.key().clone()))
        .await
        .unwrap();
    let left = c
        .batch_get(all.iter().map(|p| p.key().clone()))
        .await
        .unwrap();
    assert_eq!(left.len(), 200);
    // Empty batches are no-ops.
    c.batch_put(Vec::<KvPair>::new()).await.unwrap();
    assert!(c.batch_get(Vec::<Key>::new()).await.unwrap().is_empty());
}

#[tokio::test]
async fn scans_forward_reverse_key_only_and_batched() {
    let mock = mock(&["k00050", "k00100", "k00150"]).await;
    let c = client(&mock).await;
    let all = pairs(200, "k");
    c.batch_put(all.clone()).await.unwrap();
    let got = c.scan("k00040".."k00160").limit(1000).await.unwrap();
    assert_eq!(keys_of(&got), keys_of(&all[40..160]));
    let got = c.scan("k00040"..).limit(30).await.unwrap();
    assert_eq!(keys_of(&got), keys_of(&all[40..70]));
    let keys = c.scan(.."k00010").keys_only().limit(100).await.unwrap();
    assert_eq!(keys.len(), 10);
    // Reverse across every region (client-rust #527).
    let got = c
        .scan("k00020".."k00180")
        .reverse()
        .limit(1000)
        .await
        .unwrap();
    let mut want = keys_of(&all[20..180]);
    want.reverse();
    assert_eq!(keys_of(&got), want);
    let got = c
        .scan("k00000"..="k00199")
        .keys_only()
        .reverse()
        .limit(5)
        .await
        .unwrap();
    assert_eq!(got[0].as_bytes(), b"k00199");
    assert_eq!(got.len(), 5);
    let got = c
        .batch_scan(["k00000".."k00003", "k00120".."k00122"])
        .each_limit(10)
        .await
        .unwrap();
    assert_eq!(
        keys_of(&got),
        [keys_of(&all[0..3]), keys_of(&all[120..122])].concat()
    );
    let got = c.scan("a".."b").limit(10).await.unwrap();
    assert!(got.is_empty());
}

#[tokio::test]
async fn the_stream_has_no_limit() {
    let mock = mock(&["k04000", "k08000", "k12000"]).await;
    let c = client(&mock).await;
    let all = pairs(12_500, "k");
    for chunk in all.chunks(2000) {
        c.batch_put(chunk.to_vec()).await.unwrap();
    }
    let mut stream = c.scan_stream("k".."l").into_stream();
    let mut n = 0;
    let mut last: Option<Key> = None;
    while let Some(pair) = stream.next().await {
        let pair = pair.unwrap();
        if let Some(prev) = &last {
            assert!(prev < pair.key());
        }
        last = Some(pair.key().clone());
        n += 1;
    }
    assert_eq!(n, 12_500);
}

#[tokio::test]
async fn scans_and_batches_survive_splits_in_the_middle() {
    let mock = mock(&[]).await;
    let c = client(&mock).await;
    let all = pairs(300, "k");
    c.batch_put(all.clone()).await.unwrap();
    // Warm the cache, then split under it (client-rust #455: no empty results).
    assert_eq!(c.scan("k"..).limit(1000).await.unwrap().len(), 300);
    mock.split_raw(["k00100", "k00200"]).unwrap();
    assert_eq!(
        keys_of(&c.scan("k"..).limit(1000).await.unwrap()),
        keys_of(&all)
    );
    mock.split_raw(["k00050", "k00250"]).unwrap();
    let mut want = keys_of(&all);
    want.reverse();
    assert_eq!(
        keys_of(&c.scan("k".."l").reverse().limit(1000).await.unwrap()),
        want
    );
    mock.split_raw(["k00025", "k00150"]).unwrap();
    assert_eq!(
        c.batch_get(all.iter().map(|p| p.key().clone()))
            .await
            .unwrap()
            .len(),
        300
    );
    mock.split_raw(["k00010", "k00280"]).unwrap();
    c.delete_range("k00000".."k00290").await.unwrap();
    let left = c.scan("k"..).limit(1000).await.unwrap();
    assert_eq!(keys_of(&left), keys_of(&all[290..]));

    // A stream consumed while its regions split.
    c.batch_put(all.clone()).await.unwrap();
    let mut stream = c.scan_stream("k".."l").into_stream();
    let mut n = 0;
    while let Some(pair) = stream.next().await {
        pair.unwrap();
        n += 1;
        if n == 10 {
            mock.split_raw(["k00005", "k00290"]).unwrap();
        }
    }
    assert_eq!(n, 300);
}

#[tokio::test]
async fn big_batches_are_split_by_size_and_by_raft_entry_limit() {
    let mock = mock(&["m"]).await;
    let c = client(&mock).await;
    // 12 values of 1 MiB: 12 MiB in one call, over TiKV's 8 MiB entry limit (client-rust #500).
    let big: Vec<KvPair> = (0..12)
        .map(|i| KvPair::new(format!("big{i:02}"), vec![b'x'; 1 << 20]))
        .collect();
    c.batch_put(big.clone()).await.unwrap();
    assert_eq!(
        c.batch_get(big.iter().map(|p| p.key().clone()))
            .await
            .unwrap()
            .len(),
        12
    );
    // A batch TiKV rejects as too large for one Raft entry is halved and resent.
    mock.add_fault(
        FaultRule::new(
            Matcher::tikv().command("RawBatchPut"),
            Action::region_error(RegionErrorSpec::RaftEntryTooLarge),
        )
        .times(Times::Once),
    );
    mock.reset_rpc_counts();
    let small = pairs(50, "s");
    c.batch_put(small.clone()).await.unwrap();
    assert_eq!(count(&mock, "RawBatchPut"), 3, "one refused, two halves");
    assert_eq!(c.scan("s".."t").limit(100).await.unwrap().len(), 50);
}

#[tokio::test]
async fn checksum_matches_the_data() {
    let mock = mock(&["k00010"]).await;
    let c = client(&mock).await;
    c.batch_put(pairs(20, "k")).await.unwrap();
    let sum = c.checksum("k".."l").await.unwrap();
    assert_eq!(sum.total_kvs, 20);
    let bytes: u64 = pairs(20, "k")
        .iter()
        .map(|p| (p.key().len() + p.value().len()) as u64)
        .sum();
    assert_eq!(sum.total_bytes, bytes);
    assert_ne!(sum.crc64_xor, 0);
    let half = c.checksum("k".."k00010").await.unwrap();
    let other = c.checksum("k00010".."l").await.unwrap();
    assert_eq!(half.crc64_xor ^ other.crc64_xor, sum.crc64_xor);
}

#[tokio::test]
async fn compare_and_swap_needs_atomic_mode_and_is_atomic_under_races() {
    let mock = mock(&[]).await;
    let c = client(&mock).await;
    assert!(matches!(
        c.compare_and_swap("cas", None::<&str>, "1").await,
        Err(Error::InvalidArgument { .. })
    ));
    let c = c.with_atomic_for_cas(true);
    let cas = c.compare_and_swap("cas", None::<&str>, "0").await.unwrap();
    assert_eq!(
        (cas.swapped, cas.previous),
        (true, None),
        "the key did not exist"
    );
    let cas = c.compare_and_swap("cas", None::<&str>, "x").await.unwrap();
    assert!(!cas.swapped);
    assert_eq!(cas.previous.unwrap(), "0");

    // 16 tasks increment one counter 10 times each with CAS: no lost update.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 10 {
                let cur = c.get("cas").await.unwrap().unwrap();
                let n: u64 = std::str::from_utf8(&cur).unwrap().parse().unwrap();
                let cas = c
                    .compare_and_swap("cas", Some(cur), (n + 1).to_string())
                    .await
                    .unwrap();
                if cas.swapped {
                    done += 1;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(c.get("cas").await.unwrap().unwrap().as_ref(), b"160");
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_sent() {
    let mock = mock(&[]).await;
    let c = client(&mock).await;
    mock.reset_rpc_counts();
    assert!(matches!(
        c.put("", "v").await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        c.get("").await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        c.put(vec![b'k'; 8 * 1024 + 1], "v").await,
        Err(Error::KeyTooLarge { .. })
    ));
    assert!(matches!(
        c.put("k", vec![0u8; 8 * 1024 * 1024]).await,
        Err(Error::EntryTooLarge { .. })
    ));
    // One bad pair refuses the whole batch: nothing is written.
    let mut batch = pairs(10, "b");
    batch.push(KvPair::new("", "v"));
    assert!(matches!(
        c.batch_put(batch).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        c.batch_put(pairs(3, "t"))
            .ttls([Duration::from_secs(1), Duration::from_secs(2)])
            .await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        c.put("t", "v").ttl(Duration::ZERO).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        c.scan("a".."b").limit(0).await,
        Err(Error::InvalidArgument { .. })
    ));
    let reversed: BoundRange = ("b".."a").into();
    assert!(matches!(
        c.scan(reversed.clone()).limit(10).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        c.delete_range(reversed).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        c.scan("a"..).reverse().limit(10).await,
        Err(Error::InvalidArgument { .. })
    ));
    let sent: u64 = mock.rpc_counts().values().sum();
    assert_eq!(sent, 0, "{:?}", mock.rpc_counts());
}

async fn v2_mock(clock: Option<ManualClock>) -> (MockCluster, u32, u32) {
    let mut builder = MockCluster::builder()
        .stores(3)
        .api_version(tikv_mock::ApiVersion::V2);
    if let Some(clock) = clock {
        builder = builder.manual_clock(clock);
    }
    let mock = builder.start().await.unwrap();
    let a = mock.create_keyspace("alpha").unwrap();
    let b = mock.create_keyspace("beta").unwrap();
    (mock, a, b)
}

fn v2_key(id: u32, key: &str) -> Vec<u8> {
    let mut k = vec![b'r'];
    k.extend_from_slice(&id.to_be_bytes()[1..]);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Settings a call cannot honour are refused before anything is sent, never ignored: a TTL
/// too long for TiKV's seconds, and a checksum on a client set to another column family
/// (TiKV's RawChecksum always sums `default`).
#[tokio::test]
async fn settings_a_call_cannot_honour_are_refused() {
    let mock = mock(&[]).await;
    let c = client(&mock).await;
    let huge = c.put("k", "v").ttl(Duration::MAX).await;
    assert!(
        matches!(huge, Err(Error::InvalidArgument { .. })),
        "{huge:?}"
    );
    let writes = c.with_cf(ColumnFamily::Write);
    let sum = writes.checksum(..).await;
    assert!(matches!(sum, Err(Error::InvalidArgument { .. })), "{sum:?}");
    assert_eq!(count(&mock, "RawPut") + count(&mock, "RawChecksum"), 0);
    // The default column family still sums, and a far deadline is no deadline.
    c.put("k", "v").await.unwrap();
    let sum = c.checksum(..).timeout(Duration::MAX).await.unwrap();
    assert_eq!(sum.total_kvs, 1);
}

/// Region lookups answer in the caller's key space: API V1 keys as they are, API V2 regions
/// clamped to the keyspace with the prefix taken off (client-go `LocateKey` over its codec).
#[tokio::test]
async fn regions_are_located_in_the_callers_key_space() {
    let mock = mock(&["g", "p"]).await;
    let c = client(&mock).await;
    let first = c.locate_key("a").await.unwrap();
    assert_eq!(
        (first.start_key.as_bytes(), first.end_key.as_bytes()),
        (&b""[..], &b"g"[..])
    );
    let middle = c.locate_key("g").await.unwrap();
    assert_eq!(
        (middle.start_key.as_bytes(), middle.end_key.as_bytes()),
        (&b"g"[..], &b"p"[..])
    );
    assert_ne!(first.id, middle.id);
    // A split moves the version on; the next lookup after the cache learns it sees it.
    mock.split_raw(["j"]).unwrap();
    c.put("h", "1").await.unwrap();
    let after = c.locate_key("h").await.unwrap();
    assert_eq!(after.end_key.as_bytes(), b"j");
    assert!(after.version > middle.version);
    assert_eq!(c.locate_key("").await.unwrap().id, first.id);

    let (mock, a, b) = v2_mock(None).await;
    mock.split_raw([v2_key(a, "m"), v2_key(b, "")]).unwrap();
    let ca = RawClient::builder(mock.pd_endpoints())
        .api_version(ApiVersion::V2)
        .keyspace("alpha")
        .build()
        .await
        .unwrap();
    // The region before `m` starts outside the keyspace: clamped to its beginning.
    let low = ca.locate_key("c").await.unwrap();
    assert_eq!(
        (low.start_key.as_bytes(), low.end_key.as_bytes()),
        (&b""[..], &b"m"[..])
    );
    // The region from `m` ends where keyspace beta begins: the keyspace's end.
    let high = ca.locate_key("x").await.unwrap();
    assert_eq!(
        (high.start_key.as_bytes(), high.end_key.as_bytes()),
        (&b"m"[..], &b""[..])
    );
}

#[tokio::test]
async fn keyspaces_are_isolated() {
    let (mock, a, b) = v2_mock(None).await;
    // Regions cut inside both keyspaces and between them.
    mock.split_raw([v2_key(a, "m"), v2_key(b, ""), v2_key(b, "m")])
        .unwrap();
    let cluster = Cluster::connect(mock.pd_endpoints(), Config::default())
        .await
        .unwrap();
    let build = |ks: &str| {
        RawClient::builder_on(&cluster)
            .api_version(ApiVersion::V2)
            .keyspace(ks)
            .build()
    };
    let ca = build("alpha").await.unwrap();
    let cb = build("beta").await.unwrap();
    ca.batch_put(pairs(30, "k")).await.unwrap();
    cb.put("k00001", "from beta").await.unwrap();
    assert_eq!(ca.get("k00001").await.unwrap().unwrap().as_ref(), b"value1");
    assert_eq!(
        cb.get("k00001").await.unwrap().unwrap().as_ref(),
        b"from beta"
    );
    assert_eq!(cb.get("k00002").await.unwrap(), None);
    // Unbounded scans stay inside the keyspace.
    assert_eq!(ca.scan(..).limit(1000).await.unwrap().len(), 30);
    assert_eq!(
        keys_of(&cb.scan(..).limit(1000).await.unwrap()),
        vec![b"k00001".to_vec()]
    );
    assert_eq!(ca.scan(..).reverse().limit(1000).await.unwrap().len(), 30);
    cb.delete_range(..).await.unwrap();
    assert_eq!(ca.scan(..).limit(1000).await.unwrap().len(), 30);
    assert!(cb.scan(..).limit(10).await.unwrap().is_empty());
    assert_eq!(ca.checksum(..).await.unwrap().total_kvs, 30);

    // Unknown and disabled keyspaces are typed errors; a keyspace needs API V2.
    assert!(matches!(
        build("nope").await,
        Err(Error::KeyspaceNotFound { .. })
    ));
    assert!(matches!(
        RawClient::builder_on(&cluster)
            .keyspace("alpha")
            .build()
            .await,
        Err(Error::InvalidArgument { .. })
    ));
}

#[tokio::test]
async fn ttls_expire_on_the_mock_clock_and_stay_aligned_across_regions() {
    let clock = ManualClock::starting_now();
    let (mock, a, _) = v2_mock(Some(clock.clone())).await;
    mock.split_raw([v2_key(a, "k00005")]).unwrap();
    let c = RawClient::builder(mock.pd_endpoints())
        .api_version(ApiVersion::V2)
        .keyspace("alpha")
        .build()
        .await
        .unwrap();
    c.put("short", "v")
        .ttl(Duration::from_secs(10))
        .await
        .unwrap();
    // A TTL under a second is rounded up, not down to 0 ("forever").
    c.put("blink", "v")
        .ttl(Duration::from_millis(300))
        .await
        .unwrap();
    c.put("forever", "v").await.unwrap();
    let ttl = c.get_key_ttl("short").await.unwrap().unwrap();
    assert!(ttl > Duration::ZERO && ttl <= Duration::from_secs(10));
    assert_eq!(
        c.get_key_ttl("blink").await.unwrap(),
        Some(Duration::from_secs(1))
    );
    assert_eq!(
        c.get_key_ttl("forever").await.unwrap(),
        Some(Duration::ZERO)
    );
    assert_eq!(c.get_key_ttl("missing").await.unwrap(), None);
    // Per-key TTLs across two regions land on their own keys (client-rust #457).
    let batch = pairs(10, "k");
    let ttls: Vec<Duration> = (0..10).map(|i| Duration::from_secs(100 + i)).collect();
    c.batch_put(batch.clone()).ttls(ttls.clone()).await.unwrap();
    for (pair, ttl) in batch.iter().zip(&ttls) {
        let got = c.get_key_ttl(pair.key().clone()).await.unwrap().unwrap();
        assert!(
            got <= *ttl && got + Duration::from_secs(2) >= *ttl,
            "{:?}: {got:?} vs {ttl:?}",
            pair.key()
        );
    }
    // One TTL for a whole batch.
    c.batch_put(pairs(3, "all"))
        .ttl(Duration::from_secs(50))
        .await
        .unwrap();
    let got = c.get_key_ttl("all00002").await.unwrap().unwrap();
    assert!(
        got <= Duration::from_secs(50) && got >= Duration::from_secs(48),
        "{got:?}"
    );
    clock.advance(Duration::from_secs(11));
    assert_eq!(c.get("short").await.unwrap(), None);
    assert!(c.get("forever").await.unwrap().is_some());
    assert_eq!(
        c.batch_get(batch.iter().map(|p| p.key().clone()))
            .await
            .unwrap()
            .len(),
        10
    );
    clock.advance(Duration::from_secs(94));
    let left = c
        .batch_get(batch.iter().map(|p| p.key().clone()))
        .await
        .unwrap();
    assert!(left.len() < 10 && !left.is_empty(), "{}", left.len());
}

#[tokio::test]
async fn column_families_are_separate() {
    let mock = mock(&[]).await;
    let c = client(&mock).await;
    let write = c.with_cf(ColumnFamily::Write);
    write.put("k", "in write").await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), None);
    assert_eq!(write.get("k").await.unwrap().unwrap(), "in write");
    // Per call, overriding the client's.
    assert_eq!(
        c.get("k").cf(ColumnFamily::Write).await.unwrap().unwrap(),
        "in write"
    );
    assert_eq!(
        write.get("k").cf(ColumnFamily::Default).await.unwrap(),
        None
    );
    c.put("l", "in lock").cf(ColumnFamily::Lock).await.unwrap();
    assert_eq!(
        c.scan(..).cf(ColumnFamily::Lock).keys_only().await.unwrap(),
        vec![Key::from("l")]
    );
    // An unknown name never becomes a column family.
    assert!("no-such-cf".parse::<ColumnFamily>().is_err());
    // API V2 has `default` only: refused before anything is sent.
    let (v2, _, _) = v2_mock(None).await;
    let c2 = RawClient::builder(v2.pd_endpoints())
        .api_version(ApiVersion::V2)
        .keyspace("alpha")
        .build()
        .await
        .unwrap();
    v2.reset_rpc_counts();
    assert!(matches!(
        c2.get("k").cf(ColumnFamily::Write).await,
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        c2.with_cf(ColumnFamily::Lock).put("k", "v").await,
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(count(&v2, "RawGet") + count(&v2, "RawPut"), 0);
    assert!(matches!(
        RawClient::builder(v2.pd_endpoints())
            .api_version(ApiVersion::V2)
            .column_family(ColumnFamily::Write)
            .build()
            .await,
        Err(Error::InvalidArgument { .. })
    ));
}

/// The keys of a batch_get in the order the raw benchmark asks for them: a stride over the
/// whole key set, so consecutive keys land in different regions.
fn strided(n: usize, count: usize, start: usize, stride: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("k{:05}", (start + i * stride) % n))
        .collect()
}

/// batch_get groups its keys with one cache lookup per region and puts each answer back at its
/// key's position: keys unsorted over every region, straddling each boundary, asked twice, and
/// missing keep the caller's order, before and after the regions split under the cache, and
/// under API V2 (where the keys come back decoded from the keyspace).
#[tokio::test]
async fn batch_get_keeps_the_callers_order_across_regions_and_splits() {
    let mock = mock(&["k00100", "k00200", "k00300"]).await;
    let c = client(&mock).await;
    c.batch_put(pairs(400, "k")).await.unwrap();
    let check = |want: &[String], got: &[KvPair]| {
        let expected: Vec<Vec<u8>> = want
            .iter()
            .filter(|k| k.as_str() < "k00400")
            .map(|k| k.as_bytes().to_vec())
            .collect();
        assert_eq!(keys_of(got), expected);
        for p in got {
            let i: usize = std::str::from_utf8(&p.key().as_bytes()[1..])
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(p.value().as_ref(), format!("value{i}").as_bytes());
        }
    };
    let mut want = strided(400, 100, 7, 37);
    // Both sides of every boundary, a key asked three times, and keys that do not exist.
    want.extend(["k00099", "k00100", "k00199", "k00200", "k00299", "k00300"].map(String::from));
    want.extend(["k00150", "k00500", "k00150", "k00999", "k00150"].map(String::from));
    let got = c.batch_get(want.clone()).await.unwrap();
    assert_eq!(got.len(), want.len() - 2);
    check(&want, &got);

    // Every region splits again: the cached regions are stale until the answers say so.
    mock.split_raw(["k00050", "k00150", "k00250", "k00350"])
        .unwrap();
    let got = c.batch_get(want.clone()).await.unwrap();
    check(&want, &got);
    // One key, and no key.
    assert_eq!(
        keys_of(&c.batch_get(["k00042"]).await.unwrap()),
        vec![b"k00042".to_vec()]
    );
    assert!(c.batch_get(Vec::<Key>::new()).await.unwrap().is_empty());

    let (mock, a, _) = v2_mock(None).await;
    mock.split_raw([v2_key(a, "k00100"), v2_key(a, "k00300")])
        .unwrap();
    let c = RawClient::builder(mock.pd_endpoints())
        .api_version(ApiVersion::V2)
        .keyspace("alpha")
        .build()
        .await
        .unwrap();
    c.batch_put(pairs(400, "k")).await.unwrap();
    let got = c.batch_get(want.clone()).await.unwrap();
    check(&want, &got);
}

/// Values take what keys take: borrowed `&str` and `&[u8]` of any lifetime, `String`,
/// `Vec<u8>` and `Bytes`.
#[tokio::test]
async fn values_accept_every_byte_type() {
    let mock = mock(&[]).await;
    let c = client(&mock).await;
    let owned = String::from("borrowed str");
    let bytes = vec![1u8, 2, 3];
    c.put("a", owned.as_str()).await.unwrap();
    c.put("b", bytes.as_slice()).await.unwrap();
    c.put("c", owned.clone()).await.unwrap();
    c.put("d", bytes.clone()).await.unwrap();
    c.put("e", bytes::Bytes::from_static(b"bytes"))
        .await
        .unwrap();
    c.put("f", Value::from("value")).await.unwrap();
    assert_eq!(c.get("a").await.unwrap().unwrap(), "borrowed str");
    assert_eq!(c.get("b").await.unwrap().unwrap(), [1u8, 2, 3]);
    assert_eq!(c.get("c").await.unwrap().unwrap(), owned.as_str());
    assert_eq!(c.get("d").await.unwrap().unwrap(), bytes);
    assert_eq!(c.get("e").await.unwrap().unwrap(), "bytes");
    assert_eq!(c.get("f").await.unwrap().unwrap(), "value");
    c.batch_put([("g", owned.as_str())]).await.unwrap();
    let c = c.with_atomic_for_cas(true);
    let cas = c
        .compare_and_swap("g", Some(owned.as_str()), bytes.as_slice())
        .await
        .unwrap();
    assert!(cas.swapped);
    assert_eq!(cas.previous.unwrap(), owned.as_str());
}

/// Without a limit a scan returns the whole range, in pages of MAX_RAW_SCAN_LIMIT; a limit
/// above one page is served by several.
#[tokio::test]
async fn unlimited_and_large_scans_are_paged() {
    let mock = mock(&["k04000"]).await;
    let c = client(&mock).await;
    let all = pairs(12_000, "k");
    for chunk in all.chunks(2000) {
        c.batch_put(chunk.to_vec()).await.unwrap();
    }
    let got = c.scan("k".."l").await.unwrap();
    assert_eq!(keys_of(&got), keys_of(&all));
    let got = c.scan("k".."l").limit(11_000).await.unwrap();
    assert_eq!(keys_of(&got), keys_of(&all[..11_000]));
    let got = c.scan("k".."l").reverse().keys_only().await.unwrap();
    assert_eq!(got.len(), 12_000);
    assert_eq!(got[0], Key::from("k11999"));
    assert_eq!(got[11_999], Key::from("k00000"));
    let got = c.scan("k".."l").reverse().limit(10_300).await.unwrap();
    assert_eq!(got.len(), 10_300);
    assert_eq!(got[10_299].key(), &Key::from("k01700"));
    let got = c.batch_scan(["k".."k00005", "k11998".."l"]).await.unwrap();
    assert_eq!(got.len(), 7);
}

/// A call's deadline: a call held by the server fails with a typed timeout, the client's own
/// deadline applies to calls that set none, and the client is usable afterwards.
#[tokio::test]
async fn a_call_past_its_deadline_fails_with_a_timeout() {
    let mock = mock(&[]).await;
    let c = client(&mock).await;
    c.put("k", "v").await.unwrap();
    let hang = HangHandle::new();
    mock.add_fault(
        FaultRule::new(Matcher::tikv().command("RawGet"), Action::hang(&hang)).times(Times::Always),
    );
    let err = c
        .get("k")
        .timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Timeout { after, .. } if *after == Duration::from_millis(50)),
        "{err:?}"
    );
    let quick = c.with_timeout(Duration::from_millis(50));
    assert!(matches!(quick.get("k").await, Err(Error::Timeout { .. })));
    // The call's own deadline wins over the client's.
    let patient = c.with_timeout(Duration::from_secs(3600));
    let call = patient.get("k").timeout(Duration::from_millis(20));
    assert!(matches!(call.await, Err(Error::Timeout { .. })));
    hang.release();
    mock.clear_faults();
    assert_eq!(quick.get("k").await.unwrap().unwrap(), "v");
    assert_eq!(
        c.batch_get(["k"])
            .timeout(Duration::from_secs(10))
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Dropping a call's future cancels it: it yields nothing, and the client keeps working.
#[tokio::test]
async fn dropping_a_pending_call_cancels_it() {
    let mock = mock(&[]).await;
    let c = client(&mock).await;
    c.put("k", "v").await.unwrap();
    let hang = HangHandle::new();
    mock.add_fault(FaultRule::new(
        Matcher::tikv().command("RawGet"),
        Action::hang(&hang),
    ));
    mock.reset_rpc_counts();
    // The call's future is boxed (and so `Unpin`): polled in place, then really dropped.
    let mut pending = c.get("k").into_future();
    // Drive the call until the server holds its request.
    while count(&mock, "RawGet") == 0 {
        tokio::select! {
            biased;
            answer = &mut pending => panic!("a held call answered: {answer:?}"),
            _ = tokio::task::yield_now() => {}
        }
    }
    // Nothing came back, and nothing will: the future is gone.
    drop(pending);
    hang.release();
    mock.clear_faults();
    assert_eq!(c.get("k").await.unwrap().unwrap(), "v");
    c.put("k", "w").await.unwrap();
    assert_eq!(c.get("k").await.unwrap().unwrap(), "w");
}

/// A zero retry budget retries nothing: the first retryable error comes back as it is.
#[tokio::test]
async fn a_zero_retry_budget_does_not_retry() {
    let mock = mock(&[]).await;
    let c = client(&mock).await;
    c.put("k", "v").await.unwrap();
    mock.add_fault(
        FaultRule::new(
            Matcher::tikv().command("RawGet"),
            Action::region_error(RegionErrorSpec::NotLeaderNoLeader),
        )
        .times(Times::Always),
    );
    mock.reset_rpc_counts();
    let err = c.get("k").retry_budget(Duration::ZERO).await.unwrap_err();
    assert!(
        !matches!(err, Error::BackoffExhausted { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
    assert_eq!(count(&mock, "RawGet"), 1);
    let err = c
        .with_retry_budget(Duration::ZERO)
        .get("k")
        .await
        .unwrap_err();
    assert!(!matches!(err, Error::BackoffExhausted { .. }), "{err:?}");
    mock.clear_faults();
    assert_eq!(c.get("k").await.unwrap().unwrap(), "v");
}
