//! Raw KV end to end: plain tonic clients against the mock's stores, checking every raw RPC
//! under API V1 and V2 against TiKV's semantics, plus the region errors a raw client must
//! handle and the store-level RPCs (SplitRegion, UnsafeDestroyRange, GetStoreSafeTS, health).

use std::time::Duration;

use bytes::Bytes;
use tikv_mock::proto::kvrpcpb;
use tikv_mock::proto::tikvpb::tikv_client::TikvClient;
use tikv_mock::{ApiVersion, ManualClock, MockCluster};
use tonic::transport::Channel;

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

async fn connect(cluster: &MockCluster, store_id: u64) -> TikvClient<Channel> {
    let addr = cluster.store_address(store_id).unwrap();
    TikvClient::connect(format!("http://{addr}")).await.unwrap()
}

/// A client connected to the leader of the region holding `key` (wire form), and a context
/// addressing that region.
struct Target {
    client: TikvClient<Channel>,
    ctx: kvrpcpb::Context,
    store: u64,
}

async fn target(cluster: &MockCluster, key: &[u8], api: ApiVersion) -> Target {
    let (region, leader) = cluster.region_for_raw_key(key).unwrap();
    let leader = leader.unwrap();
    let ctx = kvrpcpb::Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: Some(leader),
        api_version: api.to_proto() as i32,
        ..Default::default()
    };
    Target {
        client: connect(cluster, leader.store_id).await,
        ctx,
        store: leader.store_id,
    }
}

impl Target {
    async fn put(&mut self, key: &[u8], value: &[u8]) -> kvrpcpb::RawPutResponse {
        self.client
            .raw_put(kvrpcpb::RawPutRequest {
                context: Some(self.ctx.clone()),
                key: b(key),
                value: b(value),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn put_ttl(&mut self, key: &[u8], value: &[u8], ttl: u64) -> kvrpcpb::RawPutResponse {
        self.client
            .raw_put(kvrpcpb::RawPutRequest {
                context: Some(self.ctx.clone()),
                key: b(key),
                value: b(value),
                ttl,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn get(&mut self, key: &[u8]) -> kvrpcpb::RawGetResponse {
        self.client
            .raw_get(kvrpcpb::RawGetRequest {
                context: Some(self.ctx.clone()),
                key: b(key),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn batch_put(
        &mut self,
        pairs: &[(&[u8], &[u8])],
        ttls: Vec<u64>,
    ) -> kvrpcpb::RawBatchPutResponse {
        self.client
            .raw_batch_put(kvrpcpb::RawBatchPutRequest {
                context: Some(self.ctx.clone()),
                pairs: pairs
                    .iter()
                    .map(|(k, v)| kvrpcpb::KvPair {
                        key: b(k),
                        value: b(v),
                        ..Default::default()
                    })
                    .collect(),
                ttls,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        reverse: bool,
    ) -> kvrpcpb::RawScanResponse {
        self.client
            .raw_scan(kvrpcpb::RawScanRequest {
                context: Some(self.ctx.clone()),
                start_key: b(start),
                end_key: b(end),
                limit,
                reverse,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn ttl(&mut self, key: &[u8]) -> kvrpcpb::RawGetKeyTtlResponse {
        self.client
            .raw_get_key_ttl(kvrpcpb::RawGetKeyTtlRequest {
                context: Some(self.ctx.clone()),
                key: b(key),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    async fn cas(
        &mut self,
        key: &[u8],
        previous: Option<&[u8]>,
        value: &[u8],
        delete: bool,
    ) -> kvrpcpb::RawCasResponse {
        self.client
            .raw_compare_and_swap(kvrpcpb::RawCasRequest {
                context: Some(self.ctx.clone()),
                key: b(key),
                value: b(value),
                previous_not_exist: previous.is_none(),
                previous_value: previous.map(b).unwrap_or_default(),
                delete,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }
}

fn keys(pairs: &[kvrpcpb::KvPair]) -> Vec<&[u8]> {
    pairs.iter().map(|p| p.key.as_ref()).collect()
}

/// CRC-64/XZ computed bit by bit, independently of the mock's table-driven one.
fn crc64_xz(parts: &[&[u8]]) -> u64 {
    let mut crc = !0u64;
    for part in parts {
        for &byte in *part {
            crc ^= u64::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xC96C_5795_D787_0F42
                } else {
                    crc >> 1
                };
            }
        }
    }
    !crc
}

#[tokio::test]
async fn put_get_delete_round_trip() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    let put = t.put(b"k", b"v").await;
    assert!(
        put.region_error.is_none() && put.error.is_empty(),
        "{put:?}"
    );
    let got = t.get(b"k").await;
    assert_eq!(got.value, b(b"v"));
    assert!(!got.not_found);
    assert!(t.get(b"missing").await.not_found);

    let del = t
        .client
        .raw_delete(kvrpcpb::RawDeleteRequest {
            context: Some(t.ctx.clone()),
            key: b(b"k"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(del.region_error.is_none() && del.error.is_empty());
    assert!(t.get(b"k").await.not_found);
    assert_eq!(cluster.rpc_count(t.store, "RawGet"), 3);
    assert_eq!(cluster.rpc_count(t.store, "RawPut"), 1);
}

#[tokio::test]
async fn batch_get_returns_found_keys_only_and_batch_delete() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"a", ApiVersion::V1).await;
    let put = t
        .batch_put(&[(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], vec![])
        .await;
    assert!(put.error.is_empty() && put.region_error.is_none());
    let got = t
        .client
        .raw_batch_get(kvrpcpb::RawBatchGetRequest {
            context: Some(t.ctx.clone()),
            keys: vec![b(b"a"), b(b"x"), b(b"c"), b(b"b")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&got.pairs), [&b"a"[..], b"c", b"b"]);
    assert_eq!(got.pairs[1].value, b(b"3"));

    let del = t
        .client
        .raw_batch_delete(kvrpcpb::RawBatchDeleteRequest {
            context: Some(t.ctx.clone()),
            keys: vec![b(b"a"), b(b"c")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(del.error.is_empty());
    let scan = t.scan(b"", b"", 10, false).await;
    assert_eq!(keys(&scan.kvs), [b"b"]);
}

#[tokio::test]
async fn scan_forward_reverse_limit_and_key_only() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"a", ApiVersion::V1).await;
    for k in [b"a", b"b", b"c", b"d", b"e", b"f"] {
        t.put(k, &k.to_ascii_uppercase()).await;
    }
    let fwd = t.scan(b"b", b"e", 10, false).await;
    assert_eq!(keys(&fwd.kvs), [b"b", b"c", b"d"]);
    assert_eq!(fwd.kvs[0].value, b(b"B"));
    assert_eq!(keys(&t.scan(b"b", b"", 2, false).await.kvs), [b"b", b"c"]);
    assert!(t.scan(b"b", b"", 0, false).await.kvs.is_empty());

    // Reverse: strictly below start_key, down to end_key inclusive.
    let rev = t.scan(b"e", b"b", 10, true).await;
    assert_eq!(keys(&rev.kvs), [b"d", b"c", b"b"]);
    assert_eq!(keys(&t.scan(b"e", b"", 2, true).await.kvs), [b"d", b"c"]);
    // An empty start key is below everything, so a reverse scan from it finds nothing.
    assert!(t.scan(b"", b"", 10, true).await.kvs.is_empty());

    let key_only = t
        .client
        .raw_scan(kvrpcpb::RawScanRequest {
            context: Some(t.ctx.clone()),
            start_key: b(b"a"),
            limit: 3,
            key_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&key_only.kvs), [b"a", b"b", b"c"]);
    assert!(key_only.kvs.iter().all(|p| p.value.is_empty()));
}

#[tokio::test]
async fn scans_are_clamped_at_region_ends() {
    let cluster = MockCluster::builder()
        .split_keys([b"m"])
        .start()
        .await
        .unwrap();
    let mut left = target(&cluster, b"a", ApiVersion::V1).await;
    let mut right = target(&cluster, b"m", ApiVersion::V1).await;
    for k in [&b"a"[..], b"l"] {
        assert!(left.put(k, b"v").await.error.is_empty());
    }
    for k in [&b"m"[..], b"z"] {
        assert!(right.put(k, b"v").await.error.is_empty());
    }
    // Forward from the left region with no end stops at the region end.
    assert_eq!(
        keys(&left.scan(b"a", b"", 10, false).await.kvs),
        [b"a", b"l"]
    );
    assert_eq!(
        keys(&left.scan(b"a", b"zz", 10, false).await.kvs),
        [b"a", b"l"]
    );
    // Reverse from the region's end key covers the region.
    assert_eq!(
        keys(&left.scan(b"m", b"", 10, true).await.kvs),
        [b"l", b"a"]
    );
    // A reverse scan of the right region with a low end is cut at the region start.
    assert_eq!(
        keys(&right.scan(b"zz", b"a", 10, true).await.kvs),
        [b"z", b"m"]
    );
    // Starting exactly at the region end is allowed and finds nothing.
    assert!(left.scan(b"m", b"", 10, false).await.kvs.is_empty());
    // Starting beyond the region fails with KeyNotInRegion.
    let out = left.scan(b"n", b"", 10, false).await;
    let e = out.region_error.unwrap().key_not_in_region.unwrap();
    assert_eq!(e.key, b(b"n"));
    assert_eq!(e.end_key, b(b"m"));
    let out = right.scan(b"a", b"", 10, false).await;
    assert!(out.region_error.unwrap().key_not_in_region.is_some());
}

#[tokio::test]
async fn batch_scan_takes_the_next_start_for_an_empty_end() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"a", ApiVersion::V1).await;
    for k in [b"a", b"b", b"c", b"d", b"e", b"f", b"g"] {
        t.put(k, b"v").await;
    }
    let range = |s: &[u8], e: &[u8]| kvrpcpb::KeyRange {
        start_key: b(s),
        end_key: b(e),
    };
    let resp = t
        .client
        .raw_batch_scan(kvrpcpb::RawBatchScanRequest {
            context: Some(t.ctx.clone()),
            ranges: vec![range(b"a", b""), range(b"c", b"e"), range(b"f", b"")],
            each_limit: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&resp.kvs), [b"a", b"b", b"c", b"d", b"f", b"g"]);

    let limited = t
        .client
        .raw_batch_scan(kvrpcpb::RawBatchScanRequest {
            context: Some(t.ctx.clone()),
            ranges: vec![range(b"a", b"d"), range(b"e", b"")],
            each_limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys(&limited.kvs), [b"a", b"e"]);

    // Ranges that run backwards are refused as a whole.
    let bad = t
        .client
        .raw_batch_scan(kvrpcpb::RawBatchScanRequest {
            context: Some(t.ctx.clone()),
            ranges: vec![range(b"d", b"b")],
            each_limit: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bad.kvs.len(), 1);
    assert!(
        bad.kvs[0]
            .error
            .as_ref()
            .unwrap()
            .abort
            .contains("Invalid KeyRanges")
    );
}

#[tokio::test]
async fn delete_range_within_and_beyond_the_region() {
    let cluster = MockCluster::builder()
        .split_keys([b"m"])
        .start()
        .await
        .unwrap();
    let mut t = target(&cluster, b"a", ApiVersion::V1).await;
    for k in [b"a", b"b", b"c", b"d"] {
        t.put(k, b"v").await;
    }
    let delete_range = |t: &Target, s: &[u8], e: &[u8]| kvrpcpb::RawDeleteRangeRequest {
        context: Some(t.ctx.clone()),
        start_key: b(s),
        end_key: b(e),
        ..Default::default()
    };
    let req = delete_range(&t, b"b", b"d");
    let ok = t.client.raw_delete_range(req).await.unwrap().into_inner();
    assert!(ok.error.is_empty() && ok.region_error.is_none());
    assert_eq!(keys(&t.scan(b"", b"", 10, false).await.kvs), [b"a", b"d"]);

    // The region's own end key is a valid end; beyond it is not, nor is "to the end".
    let req = delete_range(&t, b"a", b"m");
    assert!(
        t.client
            .raw_delete_range(req)
            .await
            .unwrap()
            .into_inner()
            .region_error
            .is_none()
    );
    for end in [&b"n"[..], b""] {
        let req = delete_range(&t, b"a", end);
        let resp = t.client.raw_delete_range(req).await.unwrap().into_inner();
        assert!(
            resp.region_error.unwrap().key_not_in_region.is_some(),
            "end {end:?}"
        );
    }
    let req = delete_range(&t, b"c", b"b");
    let resp = t.client.raw_delete_range(req).await.unwrap().into_inner();
    assert!(
        resp.region_error
            .unwrap()
            .message
            .starts_with("invalid delete range command")
    );
}

#[tokio::test]
async fn api_v1_refuses_ttl() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    const TTL_ERROR: &str = "ttl is not enabled, but get put request with ttl";
    assert_eq!(t.put_ttl(b"k", b"v", 10).await.error, TTL_ERROR);
    assert_eq!(t.batch_put(&[(b"k", b"v")], vec![5]).await.error, TTL_ERROR);
    let cas = t
        .client
        .raw_compare_and_swap(kvrpcpb::RawCasRequest {
            context: Some(t.ctx.clone()),
            key: b(b"k"),
            value: b(b"v"),
            previous_not_exist: true,
            ttl: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cas.error, TTL_ERROR);
    assert!(t.get(b"k").await.not_found);
    // TiKV without TTL cannot answer RawGetKeyTTL (it would crash); the mock says why.
    let ttl = t.ttl(b"k").await;
    assert_eq!(ttl.error, "get ttl on non-ttl store");
    // Zero TTLs are fine.
    assert!(t.batch_put(&[(b"k", b"v")], vec![0]).await.error.is_empty());
}

#[tokio::test]
async fn api_v1_column_families() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    let put_cf = |t: &Target, cf: &str| kvrpcpb::RawPutRequest {
        context: Some(t.ctx.clone()),
        key: b(b"k"),
        value: b(b"w"),
        cf: cf.to_owned(),
        ..Default::default()
    };
    let req = put_cf(&t, "write");
    assert!(
        t.client
            .raw_put(req)
            .await
            .unwrap()
            .into_inner()
            .error
            .is_empty()
    );
    assert!(t.get(b"k").await.not_found);
    let got = t
        .client
        .raw_get(kvrpcpb::RawGetRequest {
            context: Some(t.ctx.clone()),
            key: b(b"k"),
            cf: "write".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.value, b(b"w"));
    let req = put_cf(&t, "bogus");
    let bad = t.client.raw_put(req).await.unwrap().into_inner();
    assert_eq!(bad.error, "invalid cf name: bogus");
}

#[tokio::test]
async fn keys_over_8_kib_are_refused() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    let big = vec![b'k'; 8 * 1024 + 1];
    assert_eq!(
        t.put(&big, b"v").await.error,
        "max key size exceeded, size: 8193, limit: 8192"
    );
    assert!(t.put(&big[..8 * 1024], b"v").await.error.is_empty());
}

#[tokio::test]
async fn api_version_mismatch_is_refused() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"r\0\0\0k", ApiVersion::V2).await;
    assert_eq!(
        t.put(b"r\0\0\0k", b"v").await.error,
        "Api version in request does not match with TiKV storage, cmd: raw_put, storage: V1, \
         request: V2"
    );
    // Responses without a string error carry it in a pair.
    let scan = t.scan(b"r", b"s", 10, false).await;
    let abort = &scan.kvs[0].error.as_ref().unwrap().abort;
    assert!(abort.contains("ApiVersionNotMatched"), "{abort}");
}

#[tokio::test]
async fn not_leader_from_a_follower_names_the_leader() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let (region, leader) = cluster.region_for_raw_key(b"k").unwrap();
    let leader = leader.unwrap();
    let follower = region
        .peers
        .iter()
        .find(|p| p.id != leader.id)
        .copied()
        .unwrap();
    let mut client = connect(&cluster, follower.store_id).await;
    let resp = client
        .raw_get(kvrpcpb::RawGetRequest {
            context: Some(kvrpcpb::Context {
                region_id: region.id,
                region_epoch: region.region_epoch,
                peer: Some(follower),
                ..Default::default()
            }),
            key: b(b"k"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let not_leader = resp.region_error.unwrap().not_leader.unwrap();
    assert_eq!(not_leader.region_id, region.id);
    assert_eq!(not_leader.leader, Some(leader));
}

#[tokio::test]
async fn epoch_not_match_after_a_split_lists_the_current_regions() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"a", ApiVersion::V1).await;
    let before = t.ctx.region_id;
    cluster.split_raw([b"m"]).unwrap();
    let resp = t.put(b"a", b"v").await;
    let current = resp
        .region_error
        .unwrap()
        .epoch_not_match
        .unwrap()
        .current_regions;
    assert_eq!(current.len(), 2);
    assert_eq!(current[0].id, before);
    let mut ids: Vec<u64> = current.iter().map(|r| r.id).collect();
    ids.sort();
    let mut expected: Vec<u64> = cluster.regions().iter().map(|r| r.id).collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn region_not_found_and_store_not_match() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    let ctx = t.ctx.clone();
    t.ctx.region_id = 9999;
    let resp = t.get(b"k").await;
    assert_eq!(
        resp.region_error
            .unwrap()
            .region_not_found
            .unwrap()
            .region_id,
        9999
    );

    // A request for the leader's peer sent to another store.
    let other = cluster
        .store_ids()
        .into_iter()
        .find(|s| *s != t.store)
        .unwrap();
    let mut client = connect(&cluster, other).await;
    let resp = client
        .raw_get(kvrpcpb::RawGetRequest {
            context: Some(ctx),
            key: b(b"k"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let e = resp.region_error.unwrap().store_not_match.unwrap();
    assert_eq!((e.request_store_id, e.actual_store_id), (t.store, other));
}

#[tokio::test]
async fn batch_put_across_two_regions_is_key_not_in_region_and_writes_nothing() {
    let cluster = MockCluster::builder()
        .split_keys([b"m"])
        .start()
        .await
        .unwrap();
    let mut t = target(&cluster, b"a", ApiVersion::V1).await;
    let resp = t.batch_put(&[(b"a", b"1"), (b"z", b"2")], vec![]).await;
    let e = resp.region_error.unwrap().key_not_in_region.unwrap();
    assert_eq!(e.key, b(b"z"));
    assert_eq!(e.region_id, t.ctx.region_id);
    assert!(t.get(b"a").await.not_found);
}

#[tokio::test]
async fn writes_over_8_mib_are_raft_entry_too_large() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"a", ApiVersion::V1).await;
    let value = vec![7u8; 1024 * 1024];
    let keys: Vec<[u8; 2]> = (0..9u8).map(|i| [b'a', i]).collect();
    let pairs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (&k[..], &value[..])).collect();
    let resp = t.batch_put(&pairs, vec![]).await;
    let e = resp.region_error.unwrap().raft_entry_too_large.unwrap();
    assert_eq!(e.region_id, t.ctx.region_id);
    assert!(e.entry_size > 8 * 1024 * 1024);
    assert!(t.get(&keys[0]).await.not_found);
}

#[tokio::test]
async fn compare_and_swap_semantics() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    // Expecting absence on an absent key: written.
    let r = t.cas(b"k", None, b"v1", false).await;
    assert!(r.succeed && r.previous_not_exist && r.previous_value.is_empty());
    // Expecting absence on a present key: refused, and the current value comes back.
    let r = t.cas(b"k", None, b"v2", false).await;
    assert!(!r.succeed && !r.previous_not_exist);
    assert_eq!(r.previous_value, b(b"v1"));
    // A wrong expectation: refused.
    let r = t.cas(b"k", Some(b"nope"), b"v2", false).await;
    assert!(!r.succeed);
    assert_eq!(t.get(b"k").await.value, b(b"v1"));
    // The right expectation: swapped, previous value returned on success too.
    let r = t.cas(b"k", Some(b"v1"), b"v2", false).await;
    assert!(r.succeed);
    assert_eq!(r.previous_value, b(b"v1"));
    assert_eq!(t.get(b"k").await.value, b(b"v2"));
    // Delete when matching.
    let r = t.cas(b"k", Some(b"v2"), b"", true).await;
    assert!(r.succeed);
    assert!(t.get(b"k").await.not_found);
    // Delete expecting absence on an absent key succeeds without writing.
    let r = t.cas(b"k", None, b"", true).await;
    assert!(r.succeed && r.previous_not_exist);
}

#[tokio::test]
async fn checksum_matches_a_local_crc64_xor() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"a", ApiVersion::V1).await;
    let data: [(&[u8], &[u8]); 4] = [(b"a", b"1"), (b"bb", b"22"), (b"c", b""), (b"x", b"9")];
    assert!(t.batch_put(&data, vec![]).await.error.is_empty());
    let range = |s: &[u8], e: &[u8]| kvrpcpb::KeyRange {
        start_key: b(s),
        end_key: b(e),
    };
    let resp = t
        .client
        .raw_checksum(kvrpcpb::RawChecksumRequest {
            context: Some(t.ctx.clone()),
            algorithm: kvrpcpb::ChecksumAlgorithm::Crc64Xor as i32,
            ranges: vec![range(b"a", b"c"), range(b"c", b"")],
        })
        .await
        .unwrap()
        .into_inner();
    let expected = data.iter().fold(0, |acc, (k, v)| acc ^ crc64_xz(&[k, v]));
    assert_eq!(resp.checksum, expected);
    assert_eq!(resp.total_kvs, 4);
    assert_eq!(resp.total_bytes, 9);

    let bad = t
        .client
        .raw_checksum(kvrpcpb::RawChecksumRequest {
            context: Some(t.ctx.clone()),
            algorithm: 1,
            ranges: vec![range(b"a", b"")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bad.error, "unknown checksum algorithm 1");
}

#[tokio::test]
async fn split_region_rpc() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"a", ApiVersion::V1).await;
    let split = |t: &Target, keys: &[&[u8]]| kvrpcpb::SplitRegionRequest {
        context: Some(t.ctx.clone()),
        split_keys: keys.iter().map(|k| b(k)).collect(),
        is_raw_kv: true,
        ..Default::default()
    };
    let req = split(&t, &[b"m", b"c"]);
    let resp = t.client.split_region(req).await.unwrap().into_inner();
    assert!(resp.region_error.is_none(), "{resp:?}");
    let starts: Vec<&[u8]> = resp.regions.iter().map(|r| r.start_key.as_ref()).collect();
    assert_eq!(starts, [&b""[..], b"c", b"m"]);
    assert!(resp.left.is_none() && resp.right.is_none());
    // Right-derive: the original region keeps the rightmost part.
    assert_eq!(resp.regions[2].id, t.ctx.region_id);
    assert_eq!(cluster.regions().len(), 3);

    // The old epoch is stale now; a fresh context splits the left region in two.
    let mut t = target(&cluster, b"a", ApiVersion::V1).await;
    let req = split(&t, &[b"b"]);
    let resp = t.client.split_region(req).await.unwrap().into_inner();
    assert_eq!(resp.left.unwrap().end_key, b(b"b"));
    assert_eq!(resp.right.unwrap().start_key, b(b"b"));

    // A key outside the region, and the region's own start key, are refused.
    let mut t = target(&cluster, b"c", ApiVersion::V1).await;
    let req = split(&t, &[b"z"]);
    let resp = t.client.split_region(req).await.unwrap().into_inner();
    assert!(resp.region_error.unwrap().key_not_in_region.is_some());
    let req = split(&t, &[b"c"]);
    let resp = t.client.split_region(req).await.unwrap().into_inner();
    assert!(
        resp.region_error
            .unwrap()
            .message
            .starts_with("invalid split request")
    );
    let req = split(&t, &[]);
    let resp = t.client.split_region(req).await.unwrap().into_inner();
    assert!(resp.region_error.unwrap().message.contains("no split key"));
    let total: u64 = cluster
        .store_ids()
        .into_iter()
        .map(|s| cluster.rpc_count(s, "SplitRegion"))
        .sum();
    assert_eq!(total, 5);
}

#[tokio::test]
async fn api_v2_keys_ttl_and_checks() {
    let clock = ManualClock::starting_now();
    let cluster = MockCluster::builder()
        .api_version(ApiVersion::V2)
        .manual_clock(clock.clone())
        .start()
        .await
        .unwrap();
    let mut t = target(&cluster, b"r\0\0\0a", ApiVersion::V2).await;
    assert!(t.put_ttl(b"r\0\0\0a", b"1", 10).await.error.is_empty());
    assert!(t.put(b"r\0\0\0b", b"2").await.error.is_empty());
    assert_eq!(t.get(b"r\0\0\0a").await.value, b(b"1"));
    assert_eq!(t.ttl(b"r\0\0\0a").await.ttl, 10);
    let no_ttl = t.ttl(b"r\0\0\0b").await;
    assert_eq!((no_ttl.ttl, no_ttl.not_found), (0, false));
    assert!(t.ttl(b"r\0\0\0zz").await.not_found);

    clock.advance(Duration::from_secs(4));
    assert_eq!(t.ttl(b"r\0\0\0a").await.ttl, 6);
    clock.advance(Duration::from_secs(6));
    assert!(t.get(b"r\0\0\0a").await.not_found);
    assert!(t.ttl(b"r\0\0\0a").await.not_found);
    let scan = t.scan(b"r\0\0\0", b"r\0\0\x01", 10, false).await;
    assert_eq!(keys(&scan.kvs), [b"r\0\0\0b"]);

    // A deleted V2 key is a tombstone that TiKV's TTL lookup still reports (TTL 0).
    let del = t
        .client
        .raw_delete(kvrpcpb::RawDeleteRequest {
            context: Some(t.ctx.clone()),
            key: b(b"r\0\0\0b"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(del.error.is_empty());
    assert!(t.get(b"r\0\0\0b").await.not_found);
    let ttl = t.ttl(b"r\0\0\0b").await;
    assert_eq!((ttl.ttl, ttl.not_found), (0, false));

    // Batch TTLs: one for all, one per pair, or a length error.
    let pairs: [(&[u8], &[u8]); 2] = [(b"r\0\0\0c", b"3"), (b"r\0\0\0d", b"4")];
    assert!(t.batch_put(&pairs, vec![7]).await.error.is_empty());
    assert_eq!(t.ttl(b"r\0\0\0d").await.ttl, 7);
    assert!(t.batch_put(&pairs, vec![1, 2]).await.error.is_empty());
    assert_eq!(t.ttl(b"r\0\0\0d").await.ttl, 2);
    assert_eq!(
        t.batch_put(&[pairs[0], pairs[1], (b"r\0\0\0e", b"5")], vec![1, 2])
            .await
            .error,
        "The length of ttls does not equal to the length of pairs"
    );

    // Key mode, ranges, column families and the request's API version are checked.
    let e = t.put(b"x\0\0\0a", b"v").await.error;
    assert!(
        e.starts_with("Key mode mismatched with the request mode, cmd: raw_put"),
        "{e}"
    );
    assert!(e.ends_with("key: 7800000061"), "{e}");
    let open_end = t.scan(b"r\0\0\0", b"", 10, false).await;
    let abort = &open_end.kvs[0].error.as_ref().unwrap().abort;
    assert!(abort.contains("InvalidKeyRangeMode"), "{abort}");
    let cf = t
        .client
        .raw_get(kvrpcpb::RawGetRequest {
            context: Some(t.ctx.clone()),
            key: b(b"r\0\0\0c"),
            cf: "default".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cf.error, "cf is deprecated in API V2, cf name: default");
    t.ctx.api_version = ApiVersion::V1.to_proto() as i32;
    assert_eq!(
        t.put(b"r\0\0\0a", b"v").await.error,
        "Api version in request does not match with TiKV storage, cmd: raw_put, storage: V2, \
         request: V1"
    );
}

#[tokio::test]
async fn api_v2_checksum_delete_range_and_unsafe_destroy_range() {
    let cluster = MockCluster::builder()
        .api_version(ApiVersion::V2)
        .split_keys([b"r\0\0\0m"])
        .start()
        .await
        .unwrap();
    let mut left = target(&cluster, b"r\0\0\0a", ApiVersion::V2).await;
    let mut right = target(&cluster, b"r\0\0\0x", ApiVersion::V2).await;
    assert_ne!(left.ctx.region_id, right.ctx.region_id);
    let l: [(&[u8], &[u8]); 2] = [(b"r\0\0\0a", b"1"), (b"r\0\0\0b", b"2")];
    let r: [(&[u8], &[u8]); 2] = [(b"r\0\0\0x", b"3"), (b"r\0\0\0y", b"4")];
    assert!(left.batch_put(&l, vec![]).await.error.is_empty());
    assert!(right.batch_put(&r, vec![]).await.error.is_empty());

    // The checksum covers the region's part of the range, over wire keys (prefix included).
    let resp = left
        .client
        .raw_checksum(kvrpcpb::RawChecksumRequest {
            context: Some(left.ctx.clone()),
            algorithm: 0,
            ranges: vec![kvrpcpb::KeyRange {
                start_key: b(b"r\0\0\0"),
                end_key: b(b"r\0\0\x01"),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        resp.error.is_empty() && resp.region_error.is_none(),
        "{resp:?}"
    );
    assert_eq!(
        resp.checksum,
        crc64_xz(&[l[0].0, l[0].1]) ^ crc64_xz(&[l[1].0, l[1].1])
    );
    assert_eq!(resp.total_kvs, 2);

    let dr = left
        .client
        .raw_delete_range(kvrpcpb::RawDeleteRangeRequest {
            context: Some(left.ctx.clone()),
            start_key: b(b"r\0\0\0b"),
            end_key: b(b"r\0\0\0c"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dr.error.is_empty() && dr.region_error.is_none(), "{dr:?}");
    assert!(left.get(b"r\0\0\0b").await.not_found);

    // UnsafeDestroyRange goes to a store and ignores regions.
    let mut any = connect(&cluster, cluster.store_ids()[0]).await;
    let resp = any
        .unsafe_destroy_range(kvrpcpb::UnsafeDestroyRangeRequest {
            context: None,
            start_key: b(b"r\0\0\0"),
            end_key: b(b"r\0\0\x01"),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.error.is_empty());
    assert!(left.get(b"r\0\0\0a").await.not_found);
    assert!(right.get(b"r\0\0\0y").await.not_found);
    let empty = any
        .unsafe_destroy_range(kvrpcpb::UnsafeDestroyRangeRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(!empty.error.is_empty());
}

#[tokio::test]
async fn store_safe_ts_and_health_feedback() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let store = cluster.store_ids()[0];
    let mut client = connect(&cluster, store).await;
    let safe = client
        .get_store_safe_ts(kvrpcpb::StoreSafeTsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let again = client
        .get_store_safe_ts(kvrpcpb::StoreSafeTsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(again.safe_ts >= safe.safe_ts);

    let mut seqs = Vec::new();
    for _ in 0..3 {
        let resp = client
            .get_health_feedback(kvrpcpb::GetHealthFeedbackRequest::default())
            .await
            .unwrap()
            .into_inner();
        let feedback = resp.health_feedback.unwrap();
        assert_eq!((feedback.store_id, feedback.slow_score), (store, 1));
        seqs.push(feedback.feedback_seq_no);
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn cluster_id_mismatch_is_invalid_argument() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    t.ctx.cluster_id = cluster.cluster_id() + 1;
    let err = t
        .client
        .raw_get(kvrpcpb::RawGetRequest {
            context: Some(t.ctx.clone()),
            key: b(b"k"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // The right id (or none) is accepted.
    t.ctx.cluster_id = cluster.cluster_id();
    assert!(t.get(b"k").await.not_found);
}

#[tokio::test]
async fn gc_and_unserved_commands_are_unimplemented() {
    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    let gc = t
        .client
        .kv_gc(kvrpcpb::GcRequest {
            context: Some(t.ctx.clone()),
            safe_point: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(gc.code(), tonic::Code::Unimplemented);
    let read_index = t
        .client
        .read_index(kvrpcpb::ReadIndexRequest::default())
        .await
        .unwrap_err();
    assert_eq!(read_index.code(), tonic::Code::Unimplemented);
    assert_eq!(cluster.rpc_count(t.store, "KvGC"), 1);
    assert_eq!(cluster.rpc_count(t.store, "ReadIndex"), 1);
}

#[tokio::test]
async fn regions_split_automatically_past_the_key_threshold() {
    let cluster = MockCluster::builder()
        .auto_split_keys(4)
        .start()
        .await
        .unwrap();
    let mut t = target(&cluster, b"a", ApiVersion::V1).await;
    for k in [b"a", b"b", b"c", b"d"] {
        assert!(t.put(k, b"v").await.region_error.is_none());
    }
    assert_eq!(cluster.regions().len(), 1);
    assert!(t.put(b"e", b"v").await.region_error.is_none());
    let regions = cluster.regions();
    assert_eq!(regions.len(), 2);
    assert_eq!(regions[1].start_key, b(b"c"));
    // The client's epoch is stale now, as after any split.
    assert!(
        t.put(b"f", b"v")
            .await
            .region_error
            .unwrap()
            .epoch_not_match
            .is_some()
    );
}

#[tokio::test]
async fn health_service_reports_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let cluster = MockCluster::builder().stores(1).start().await.unwrap();
    let addr = cluster.store_address(cluster.store_ids()[0]).unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let resp = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status, ServingStatus::Serving as i32);
}

// ----- fault rules on unary calls ---------------------------------------------------------------

#[tokio::test]
async fn faults_before_answer_without_applying() {
    use tikv_mock::{Action, FaultRule, Matcher, RegionErrorSpec};

    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    cluster.add_fault(FaultRule::new(
        Matcher::tikv().command("RawPut").key(b"k"),
        Action::region_error(RegionErrorSpec::NotLeader),
    ));
    let resp = t.put(b"k", b"v").await;
    assert!(resp.region_error.unwrap().not_leader.is_some());
    assert!(t.get(b"k").await.not_found);

    cluster.add_fault(FaultRule::new(
        Matcher::tikv().command("RawGet"),
        Action::key_error(kvrpcpb::KeyError {
            abort: "injected".to_owned(),
            ..Default::default()
        }),
    ));
    assert_eq!(t.get(b"k").await.error, "injected");

    cluster.add_fault(FaultRule::new(
        Matcher::tikv().command("RawGet"),
        Action::status(tonic::Code::Unavailable, "injected outage"),
    ));
    let err = t
        .client
        .raw_get(kvrpcpb::RawGetRequest {
            context: Some(t.ctx.clone()),
            key: b(b"k"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    // Each rule fired once; the store serves normally again.
    assert!(t.put(b"k", b"v").await.region_error.is_none());
    assert_eq!(t.get(b"k").await.value, b(b"v"));
}

#[tokio::test]
async fn faults_after_apply_lose_the_answer_of_an_applied_write() {
    use tikv_mock::{Action, FaultRule, HangHandle, Matcher, RegionErrorSpec};

    let cluster = MockCluster::builder().start().await.unwrap();
    let mut t = target(&cluster, b"k", ApiVersion::V1).await;
    cluster.add_fault(
        FaultRule::new(
            Matcher::tikv().command("RawPut"),
            Action::region_error(RegionErrorSpec::EpochNotMatch),
        )
        .after_apply(),
    );
    let resp = t.put(b"k", b"1").await;
    assert!(resp.region_error.unwrap().epoch_not_match.is_some());
    assert_eq!(t.get(b"k").await.value, b(b"1"));

    // A dropped answer: the client gives up, the write happened.
    cluster
        .add_fault(FaultRule::new(Matcher::tikv().command("RawPut"), Action::Drop).after_apply());
    let mut client = t.client.clone();
    let ctx = t.ctx.clone();
    let dropped = tokio::time::timeout(
        Duration::from_millis(200),
        client.raw_put(kvrpcpb::RawPutRequest {
            context: Some(ctx),
            key: b(b"k"),
            value: b(b"2"),
            ..Default::default()
        }),
    )
    .await;
    assert!(dropped.is_err(), "a dropped response must not arrive");
    assert_eq!(t.get(b"k").await.value, b(b"2"));

    // A hang holds the request before it applies, until released.
    let hang = HangHandle::new();
    cluster.add_fault(FaultRule::new(
        Matcher::tikv().command("RawPut"),
        Action::hang(&hang),
    ));
    let mut client = t.client.clone();
    let ctx = t.ctx.clone();
    let held = tokio::spawn(async move {
        client
            .raw_put(kvrpcpb::RawPutRequest {
                context: Some(ctx),
                key: b(b"k"),
                value: b(b"3"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    });
    while cluster.rpc_count(t.store, "RawPut") < 3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(t.get(b"k").await.value, b(b"2"));
    hang.release();
    assert!(held.await.unwrap().error.is_empty());
    assert_eq!(t.get(b"k").await.value, b(b"3"));
}

#[tokio::test]
async fn v2_writes_wait_for_a_new_leaders_max_ts_sync() {
    let cluster = MockCluster::builder()
        .api_version(ApiVersion::V2)
        .start()
        .await
        .unwrap();
    cluster.defer_max_ts_sync(true);
    let t = target(&cluster, b"r\0\0\0a", ApiVersion::V2).await;
    let other = cluster
        .store_ids()
        .into_iter()
        .find(|&id| id != t.store)
        .unwrap();
    cluster.transfer_leader(t.ctx.region_id, other).unwrap();
    let mut t = target(&cluster, b"r\0\0\0a", ApiVersion::V2).await;
    let e = t.put(b"r\0\0\0a", b"1").await.region_error.unwrap();
    assert!(e.max_timestamp_not_synced.is_some());
    assert_eq!(
        e.message,
        format!(
            "RawKV write fails due to potentially stale max timestamp, region_id: {}",
            t.ctx.region_id
        )
    );
    // Reads do not need it.
    assert!(t.get(b"r\0\0\0a").await.region_error.is_none());
    cluster.sync_max_ts(t.ctx.region_id).unwrap();
    assert!(t.put(b"r\0\0\0a", b"1").await.error.is_empty());
    assert_eq!(t.get(b"r\0\0\0a").await.value, b(b"1"));
}
