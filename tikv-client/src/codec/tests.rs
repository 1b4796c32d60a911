//! Tests of the API codec.
//!
//! Ported from client-go `internal/apicodec/codec_test.go` and `codec_v2_test.go` (each test
//! names its case), then our own: every request and response type of `crate::rpc`, ranges at
//! keyspace edges, regions spanning keyspaces, isolation between keyspaces, API V1
//! transactional mode, and the region source and encoded requests against `tikv-mock`.

use bytes::Bytes;
use tikv_proto::deadlock::WaitForEntry;
use tikv_proto::{errorpb, kvrpcpb, metapb};

use super::*;
use crate::kv::codec::encode_bytes;
use crate::rpc::KvRequest;

// Keyspace 4242 in raw mode (client-go's test keyspace). In key order: before_prefix,
// prev_prefix, PREFIX, inside_left, inside_right, END, after_end; the keyspace is
// [PREFIX, END).
const PREV_PREFIX: &[u8] = &[b'r', 0, 16, 145];
const PREFIX: &[u8] = &[b'r', 0, 16, 146];
const END: &[u8] = &[b'r', 0, 16, 147];
const BEFORE_PREFIX: &[u8] = &[b'r', 0, 0, 1];
const AFTER_END: &[u8] = &[b'r', 1, 0, 0];
const INSIDE_LEFT: &[u8] = &[b'r', 0, 16, 146, 100];
const INSIDE_RIGHT: &[u8] = &[b'r', 0, 16, 146, 200];

fn b(key: &[u8]) -> Bytes {
    Bytes::copy_from_slice(key)
}

fn cat(a: &[u8], b: &[u8]) -> Bytes {
    Bytes::from([a, b].concat())
}

/// A key of keyspace 4242 as it travels.
fn p(key: &str) -> Bytes {
    cat(PREFIX, key.as_bytes())
}

/// A storage key in the memcomparable form of region boundaries.
fn mem(key: &[u8]) -> Bytes {
    Bytes::from(encode_bytes(key))
}

fn codec() -> ApiCodec {
    ApiCodec::v2(KeyMode::Raw, 4242, "ks").unwrap()
}

fn ks(codec: &ApiCodec) -> &KeyspaceCodec {
    codec.keyspace().unwrap()
}

fn region(id: u64, start: Bytes, end: Bytes) -> metapb::Region {
    metapb::Region {
        id,
        start_key: start,
        end_key: end,
        ..Default::default()
    }
}

fn keys(list: &[&str]) -> Vec<Bytes> {
    list.iter().map(|k| b(k.as_bytes())).collect()
}

fn prefixed(list: &[&str]) -> Vec<Bytes> {
    list.iter().map(|k| p(k)).collect()
}

// ----- client-go codec_test.go ----------------------------------------------------------------

// TestParseKeyspaceID
#[test]
fn parse_keyspace_id_of_v2_keys() {
    assert_eq!(
        parse_keyspace_id(&[b'x', 1, 2, 3, 1, 2, 3]).unwrap(),
        0x010203
    );
    assert_eq!(
        parse_keyspace_id(&[b'r', 1, 2, 3, 1, 2, 3, 4]).unwrap(),
        0x010203
    );
    assert!(matches!(
        parse_keyspace_id(&[b't', 0, 0]),
        Err(Error::Codec { .. })
    ));
    assert!(matches!(
        parse_keyspace_id(&[b't', 0, 0, 1, 1, 2, 3]),
        Err(Error::Codec { .. })
    ));
}

// TestDecodeKey
#[test]
fn split_prefix_by_api_version() {
    use kvrpcpb::ApiVersion::{V1, V1ttl, V2};
    let (prefix, key) = split_keyspace_prefix(&[b'r', 1, 2, 3, 1, 2, 3, 4], V2).unwrap();
    assert_eq!((prefix, key), (&[b'r', 1, 2, 3][..], &[1, 2, 3, 4][..]));
    let (prefix, key) = split_keyspace_prefix(&[b'x', 1, 2, 3, 1, 2, 3, 4], V2).unwrap();
    assert_eq!((prefix, key), (&[b'x', 1, 2, 3][..], &[1, 2, 3, 4][..]));
    let (prefix, key) = split_keyspace_prefix(&[b't', 1, 2, 3, 1, 2, 3, 4], V1).unwrap();
    assert!(prefix.is_empty());
    assert_eq!(key, &[b't', 1, 2, 3, 1, 2, 3, 4]);
    assert!(split_keyspace_prefix(&[b't', 1, 2, 3, 1, 2, 3, 4], V2).is_err());
    assert!(split_keyspace_prefix(b"k", V1ttl).is_err());
}

// TestEncodeUnknownRequest: under API V1 encoding accepts any request and changes nothing.
#[test]
fn v1_codecs_leave_every_request_alone() {
    for codec in [ApiCodec::v1(KeyMode::Raw), ApiCodec::v1(KeyMode::Txn)] {
        let original = kvrpcpb::ScanLockRequest {
            start_key: b(b"a"),
            end_key: Bytes::new(),
            ..Default::default()
        };
        let mut req = original.clone();
        req.encode(&codec).unwrap();
        assert_eq!(req, original);
        let original = kvrpcpb::PrewriteRequest {
            mutations: vec![kvrpcpb::Mutation {
                key: b(b"k"),
                ..Default::default()
            }],
            primary_lock: b(b"k"),
            ..Default::default()
        };
        let mut req = original.clone();
        req.encode(&codec).unwrap();
        assert_eq!(req, original);
    }
}

// TestCodecListUtilityFunctions
#[test]
fn v2_mode_prefixes_are_sorted() {
    assert!(V2_MODE_PREFIXES.is_sorted());
    assert_eq!(V2_MODE_PREFIXES, [b'r', b'x']);
}

// ----- client-go codec_v2_test.go -------------------------------------------------------------

// TestCodecV2 (its suite setup) and TestGetKeyspaceID
#[test]
fn keyspace_4242_prefix_and_id() {
    let codec = codec();
    let ks = ks(&codec);
    assert_eq!(ks.prefix(), PREFIX);
    assert_eq!(ks.end_key(), END);
    assert_eq!(ks.id(), 4242);
    assert_eq!(codec.keyspace_id(), 4242);
    assert_eq!(ks.name(), "ks");
    assert_eq!(ks.mode(), KeyMode::Raw);
    assert_eq!(codec.mode(), KeyMode::Raw);
    assert_eq!(codec.api_version(), kvrpcpb::ApiVersion::V2);
    assert_eq!(ApiCodec::v1(KeyMode::Txn).keyspace_id(), NULL_KEYSPACE_ID);
}

// TestEncodeRequest (CmdCompact is not ported: TiFlash only)
#[test]
fn encode_request_cases() {
    let codec = codec();

    let mut get = kvrpcpb::RawGetRequest {
        key: b(b"key"),
        ..Default::default()
    };
    get.encode(&codec).unwrap();
    assert_eq!(get.key, p("key"));

    let mut commit = kvrpcpb::CommitRequest {
        keys: keys(&["key1", "key2"]),
        ..Default::default()
    };
    commit.encode(&codec).unwrap();
    assert_eq!(commit.keys, prefixed(&["key1", "key2"]));
    assert!(commit.primary_key.is_empty());

    let mut commit = kvrpcpb::CommitRequest {
        keys: keys(&["key1", "key2"]),
        primary_key: b(b"key1"),
        ..Default::default()
    };
    commit.encode(&codec).unwrap();
    assert_eq!(commit.keys, prefixed(&["key1", "key2"]));
    assert_eq!(commit.primary_key, p("key1"));

    let mut flush = kvrpcpb::FlushRequest {
        mutations: vec![
            kvrpcpb::Mutation {
                op: kvrpcpb::Op::Put as i32,
                key: b(b"key1"),
                ..Default::default()
            },
            kvrpcpb::Mutation {
                op: kvrpcpb::Op::Del as i32,
                key: b(b"key2"),
                ..Default::default()
            },
        ],
        primary_key: b(b"primary"),
        ..Default::default()
    };
    flush.encode(&codec).unwrap();
    assert_eq!(flush.mutations.len(), 2);
    assert_eq!(flush.mutations[0].key, p("key1"));
    assert_eq!(flush.mutations[1].key, p("key2"));
    assert_eq!(flush.primary_key, p("primary"));

    let mut get = kvrpcpb::BufferBatchGetRequest {
        keys: keys(&["key1", "key2"]),
        ..Default::default()
    };
    get.encode(&codec).unwrap();
    assert_eq!(get.keys, prefixed(&["key1", "key2"]));

    let mut flashback = kvrpcpb::FlashbackToVersionRequest {
        start_key: b(b"start"),
        ..Default::default()
    };
    flashback.encode(&codec).unwrap();
    assert_eq!(flashback.start_key, p("start"));
    assert_eq!(flashback.end_key, END);

    let mut prepare = kvrpcpb::PrepareFlashbackToVersionRequest {
        start_key: b(b"prepare-start"),
        ..Default::default()
    };
    prepare.encode(&codec).unwrap();
    assert_eq!(prepare.start_key, p("prepare-start"));
    assert_eq!(prepare.end_key, END);
}

// TestEncodeV2KeyRanges
#[test]
fn encode_key_ranges_fill_the_keyspace_end() {
    let range = |s: &[u8], e: &[u8]| kvrpcpb::KeyRange {
        start_key: b(s),
        end_key: b(e),
    };
    let mut req = kvrpcpb::RawChecksumRequest {
        ranges: vec![
            range(b"", b""),
            range(b"", b"z"),
            range(b"a", b""),
            range(b"a", b"z"),
        ],
        ..Default::default()
    };
    req.encode(&codec()).unwrap();
    assert_eq!(
        req.ranges,
        vec![
            range(PREFIX, END),
            range(PREFIX, &p("z")),
            range(&p("a"), END),
            range(&p("a"), &p("z")),
        ]
    );
}

// TestNewCodecV2 (the bad-mode case is n/a: `KeyMode` has two variants)
#[test]
fn new_codec_id_limits_and_end_key_carry() {
    assert!(matches!(
        ApiCodec::v2(KeyMode::Raw, u32::MAX, "x"),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(ApiCodec::v2(KeyMode::Raw, MAX_KEYSPACE_ID + 1, "x").is_err());
    let cases: [(KeyMode, u32, [u8; 4], [u8; 4]); 5] = [
        (
            KeyMode::Raw,
            (1 << 24) - 2,
            *b"r\xff\xff\xfe",
            *b"r\xff\xff\xff",
        ),
        // The end key carries over from the lower bytes.
        (
            KeyMode::Txn,
            (1 << 8) - 1,
            *b"x\x00\x00\xff",
            *b"x\x00\x01\x00",
        ),
        (
            KeyMode::Txn,
            (1 << 16) - 1,
            *b"x\x00\xff\xff",
            *b"x\x01\x00\x00",
        ),
        // The last keyspace ends at the next mode byte.
        (
            KeyMode::Raw,
            (1 << 24) - 1,
            *b"r\xff\xff\xff",
            *b"s\x00\x00\x00",
        ),
        (KeyMode::Txn, 0, *b"x\x00\x00\x00", *b"x\x00\x00\x01"),
    ];
    for (mode, id, prefix, end) in cases {
        let codec = ApiCodec::v2(mode, id, "x").unwrap();
        let ks = ks(&codec);
        assert_eq!((ks.prefix(), ks.end_key()), (&prefix, &end), "id {id}");
        assert_eq!(ks.id(), id);
    }
}

// TestDecodeEpochNotMatch
#[test]
fn epoch_not_match_regions_are_clamped_or_dropped() {
    let codec = codec();
    let mut err = errorpb::Error {
        epoch_not_match: Some(errorpb::EpochNotMatch {
            current_regions: vec![
                // Exactly the keyspace.
                region(1, mem(PREFIX), mem(END)),
                // Covers the keyspace and more on both sides.
                region(2, mem(BEFORE_PREFIX), mem(AFTER_END)),
                // Starts before, ends inside.
                region(3, mem(BEFORE_PREFIX), mem(INSIDE_LEFT)),
                // Inside.
                region(4, mem(INSIDE_LEFT), mem(INSIDE_RIGHT)),
                // Ends where the keyspace starts: outside.
                region(5, mem(BEFORE_PREFIX), mem(PREFIX)),
                // Starts where the keyspace ends: outside.
                region(6, mem(END), mem(AFTER_END)),
            ],
        }),
        ..Default::default()
    };
    codec.decode_region_error(&mut err).unwrap();
    let inside_left = b(&INSIDE_LEFT[4..]);
    let inside_right = b(&INSIDE_RIGHT[4..]);
    assert_eq!(
        err.epoch_not_match.unwrap().current_regions,
        vec![
            region(1, Bytes::new(), Bytes::new()),
            region(2, Bytes::new(), Bytes::new()),
            region(3, Bytes::new(), inside_left.clone()),
            region(4, inside_left, inside_right),
        ]
    );
}

fn lock(tag: &str, encode: impl Fn(&str) -> Bytes) -> kvrpcpb::LockInfo {
    kvrpcpb::LockInfo {
        key: encode(&format!("{tag}-key")),
        primary_lock: encode(&format!("{tag}-primary")),
        secondaries: vec![encode(&format!("{tag}-secondary"))],
        ..Default::default()
    }
}

fn check_lock(lock: &kvrpcpb::LockInfo, tag: &str) {
    assert_eq!(lock.key, format!("{tag}-key").as_bytes());
    assert_eq!(lock.primary_lock, format!("{tag}-primary").as_bytes());
    assert_eq!(lock.secondaries, keys(&[&format!("{tag}-secondary")]));
}

fn mvcc_info(encode: impl Fn(&str) -> Bytes) -> kvrpcpb::MvccInfo {
    kvrpcpb::MvccInfo {
        lock: Some(kvrpcpb::MvccLock {
            primary: encode("mvcc-primary"),
            secondaries: vec![encode("mvcc-secondary-1"), encode("mvcc-secondary-2")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn check_mvcc_info(info: &kvrpcpb::MvccInfo) {
    let lock = info.lock.as_ref().unwrap();
    assert_eq!(lock.primary, "mvcc-primary".as_bytes());
    assert_eq!(
        lock.secondaries,
        keys(&["mvcc-secondary-1", "mvcc-secondary-2"])
    );
}

/// A key error with every key-bearing member set.
fn full_key_error() -> kvrpcpb::KeyError {
    let mut outer = lock("outer", p);
    outer.lock_type = kvrpcpb::Op::SharedLock as i32;
    outer.shared_lock_infos = vec![lock("inner", p)];
    kvrpcpb::KeyError {
        locked: Some(outer),
        conflict: Some(kvrpcpb::WriteConflict {
            key: p("conflict-key"),
            primary: p("conflict-primary"),
            ..Default::default()
        }),
        already_exist: Some(kvrpcpb::AlreadyExist {
            key: p("exist-key"),
        }),
        deadlock: Some(kvrpcpb::Deadlock {
            lock_key: p("lock-key"),
            deadlock_key: p("deadlock-key"),
            wait_chain: vec![WaitForEntry {
                key: p("wait-key"),
                ..Default::default()
            }],
            ..Default::default()
        }),
        commit_ts_expired: Some(kvrpcpb::CommitTsExpired {
            key: p("expired-key"),
            ..Default::default()
        }),
        txn_not_found: Some(kvrpcpb::TxnNotFound {
            primary_key: p("txn-primary"),
            ..Default::default()
        }),
        assertion_failed: Some(kvrpcpb::AssertionFailed {
            key: p("assert-key"),
            ..Default::default()
        }),
        primary_mismatch: Some(kvrpcpb::PrimaryMismatch {
            lock_info: Some(lock("mismatch", p)),
        }),
        txn_lock_not_found: Some(kvrpcpb::TxnLockNotFound { key: p("key1") }),
        lock_upgrade_conflict: Some(kvrpcpb::LockUpgradeConflict {
            key: p("upgrade-key"),
            ..Default::default()
        }),
        shared_lock_lost: Some(kvrpcpb::SharedLockLost {
            key: p("lost-key"),
            ..Default::default()
        }),
        debug_info: Some(kvrpcpb::DebugInfo {
            mvcc_info: vec![kvrpcpb::MvccDebugInfo {
                key: p("key1"),
                mvcc: Some(mvcc_info(p)),
            }],
        }),
        ..Default::default()
    }
}

fn check_full_key_error(e: &kvrpcpb::KeyError) {
    let locked = e.locked.as_ref().unwrap();
    check_lock(locked, "outer");
    assert_eq!(locked.shared_lock_infos.len(), 1);
    check_lock(&locked.shared_lock_infos[0], "inner");
    let conflict = e.conflict.as_ref().unwrap();
    assert_eq!(conflict.key, "conflict-key".as_bytes());
    assert_eq!(conflict.primary, "conflict-primary".as_bytes());
    assert_eq!(
        e.already_exist.as_ref().unwrap().key,
        "exist-key".as_bytes()
    );
    let deadlock = e.deadlock.as_ref().unwrap();
    assert_eq!(deadlock.lock_key, "lock-key".as_bytes());
    assert_eq!(deadlock.deadlock_key, "deadlock-key".as_bytes());
    assert_eq!(deadlock.wait_chain.len(), 1);
    assert_eq!(deadlock.wait_chain[0].key, "wait-key".as_bytes());
    assert_eq!(
        e.commit_ts_expired.as_ref().unwrap().key,
        "expired-key".as_bytes()
    );
    assert_eq!(
        e.txn_not_found.as_ref().unwrap().primary_key,
        "txn-primary".as_bytes()
    );
    assert_eq!(
        e.assertion_failed.as_ref().unwrap().key,
        "assert-key".as_bytes()
    );
    check_lock(
        e.primary_mismatch
            .as_ref()
            .unwrap()
            .lock_info
            .as_ref()
            .unwrap(),
        "mismatch",
    );
    assert_eq!(
        e.txn_lock_not_found.as_ref().unwrap().key,
        "key1".as_bytes()
    );
    assert_eq!(
        e.lock_upgrade_conflict.as_ref().unwrap().key,
        "upgrade-key".as_bytes()
    );
    assert_eq!(
        e.shared_lock_lost.as_ref().unwrap().key,
        "lost-key".as_bytes()
    );
    let debug = &e.debug_info.as_ref().unwrap().mvcc_info;
    assert_eq!(debug.len(), 1);
    assert_eq!(debug[0].key, "key1".as_bytes());
    check_mvcc_info(debug[0].mvcc.as_ref().unwrap());
}

// TestDecodeKeyError: TxnLockNotFound, LockedSharedLockInfos, PrimaryMismatchLockInfo,
// DeadlockDeadlockKey, MvccDebugInfo — all in one key error here, plus the members client-go's
// cases leave out.
#[test]
fn key_error_cases() {
    let mut resp = kvrpcpb::CommitResponse {
        error: Some(full_key_error()),
        ..Default::default()
    };
    resp.decode(&codec()).unwrap();
    check_full_key_error(resp.error.as_ref().unwrap());
}

/// A region error with every key-bearing member, as TiKV sends it for keyspace 4242.
fn region_error(codec: &ApiCodec) -> errorpb::Error {
    let (start, end) = codec.encode_region_range(b"range-start", b"range-end");
    errorpb::Error {
        key_not_in_region: Some(errorpb::KeyNotInRegion {
            key: p("region-key"),
            start_key: start,
            end_key: end,
            region_id: 3,
        }),
        epoch_not_match: Some(errorpb::EpochNotMatch {
            current_regions: vec![
                region(7, mem(&p("a")), mem(&p("m"))),
                region(8, mem(END), Bytes::new()),
            ],
        }),
        ..Default::default()
    }
}

fn check_region_error(err: Option<&errorpb::Error>) {
    let err = err.unwrap();
    let info = err.key_not_in_region.as_ref().unwrap();
    assert_eq!(info.key, "region-key".as_bytes());
    assert_eq!(info.start_key, "range-start".as_bytes());
    assert_eq!(info.end_key, "range-end".as_bytes());
    assert_eq!(
        err.epoch_not_match.as_ref().unwrap().current_regions,
        vec![region(7, b(b"a"), b(b"m"))]
    );
}

// TestDecodeResponseHotPathCommands
#[test]
fn decode_response_hot_path_commands() {
    let codec = codec();
    let mut flush = kvrpcpb::FlushResponse {
        region_error: Some(region_error(&codec)),
        errors: vec![kvrpcpb::KeyError {
            txn_lock_not_found: Some(kvrpcpb::TxnLockNotFound { key: p("lock-key") }),
            ..Default::default()
        }],
        ..Default::default()
    };
    flush.decode(&codec).unwrap();
    check_region_error(flush.region_error.as_ref());
    assert_eq!(flush.errors.len(), 1);
    assert_eq!(
        flush.errors[0].txn_lock_not_found.as_ref().unwrap().key,
        "lock-key".as_bytes()
    );

    let mut get = kvrpcpb::BufferBatchGetResponse {
        region_error: Some(region_error(&codec)),
        error: Some(kvrpcpb::KeyError {
            txn_lock_not_found: Some(kvrpcpb::TxnLockNotFound {
                key: p("response-lock"),
            }),
            ..Default::default()
        }),
        pairs: vec![kvrpcpb::KvPair {
            key: p("pair-key"),
            error: Some(kvrpcpb::KeyError {
                txn_lock_not_found: Some(kvrpcpb::TxnLockNotFound {
                    key: p("pair-lock"),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    get.decode(&codec).unwrap();
    check_region_error(get.region_error.as_ref());
    let lock_key = |e: &Option<kvrpcpb::KeyError>| {
        e.as_ref()
            .unwrap()
            .txn_lock_not_found
            .as_ref()
            .unwrap()
            .key
            .clone()
    };
    assert_eq!(lock_key(&get.error), "response-lock".as_bytes());
    assert_eq!(get.pairs.len(), 1);
    assert_eq!(get.pairs[0].key, "pair-key".as_bytes());
    assert_eq!(lock_key(&get.pairs[0].error), "pair-lock".as_bytes());
}

// TestDecodeResponseSecondWaveCommands (CmdCheckLockObserver, CmdLockWaitInfo and CmdCompact
// are not ported commands)
#[test]
fn decode_response_second_wave_commands() {
    let codec = codec();
    let mut by_ts = kvrpcpb::MvccGetByStartTsResponse {
        region_error: Some(region_error(&codec)),
        key: p("mvcc-key"),
        info: Some(mvcc_info(p)),
        ..Default::default()
    };
    by_ts.decode(&codec).unwrap();
    check_region_error(by_ts.region_error.as_ref());
    assert_eq!(by_ts.key, "mvcc-key".as_bytes());
    check_mvcc_info(by_ts.info.as_ref().unwrap());

    let mut by_key = kvrpcpb::MvccGetByKeyResponse {
        region_error: Some(region_error(&codec)),
        info: Some(mvcc_info(p)),
        ..Default::default()
    };
    by_key.decode(&codec).unwrap();
    check_region_error(by_key.region_error.as_ref());
    check_mvcc_info(by_key.info.as_ref().unwrap());

    let mut flashback = kvrpcpb::FlashbackToVersionResponse {
        region_error: Some(region_error(&codec)),
        ..Default::default()
    };
    flashback.decode(&codec).unwrap();
    check_region_error(flashback.region_error.as_ref());

    let mut prepare = kvrpcpb::PrepareFlashbackToVersionResponse {
        region_error: Some(region_error(&codec)),
        ..Default::default()
    };
    prepare.decode(&codec).unwrap();
    check_region_error(prepare.region_error.as_ref());
}

// TestDecodeMvccInfoPreservesEmptyLockKeys
#[test]
fn mvcc_info_keeps_empty_lock_keys() {
    let mut resp = kvrpcpb::MvccGetByKeyResponse {
        info: Some(kvrpcpb::MvccInfo {
            lock: Some(kvrpcpb::MvccLock {
                primary: Bytes::new(),
                secondaries: vec![Bytes::new(), p("mvcc-secondary")],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    resp.decode(&codec()).unwrap();
    let lock = resp.info.unwrap().lock.unwrap();
    assert!(lock.primary.is_empty());
    assert_eq!(lock.secondaries, vec![Bytes::new(), b(b"mvcc-secondary")]);
}

// TestDecodeBucketKeys
#[test]
fn bucket_keys_cases() {
    let codec = codec();
    let other = |prefix: &[u8], key: &[u8]| mem(&cat(prefix, key));
    let own = |key: &[u8]| codec.encode_region_key(key);
    let expected = keys(&["", "a", "b", "c", ""]);

    let buckets = vec![
        other(PREV_PREFIX, b"a"),
        other(PREV_PREFIX, b"b"),
        other(PREV_PREFIX, b"c"),
        own(b"a"),
        own(b"b"),
        own(b"c"),
        other(END, b""),
        other(END, b"a"),
        other(END, b"b"),
        other(END, b"c"),
    ];
    assert_eq!(codec.decode_bucket_keys(&buckets).unwrap(), expected);

    let buckets = vec![
        other(PREV_PREFIX, b"a"),
        other(PREV_PREFIX, b"b"),
        other(PREV_PREFIX, b"c"),
        own(b""),
        own(b"a"),
        own(b"b"),
        own(b"c"),
        Bytes::new(),
    ];
    assert_eq!(codec.decode_bucket_keys(&buckets).unwrap(), expected);

    let buckets = vec![
        Bytes::new(),
        other(PREV_PREFIX, b"a"),
        other(PREV_PREFIX, b"b"),
        other(PREV_PREFIX, b"c"),
        own(b""),
        own(b"a"),
        own(b"b"),
        own(b"c"),
        Bytes::new(),
    ];
    assert_eq!(codec.decode_bucket_keys(&buckets).unwrap(), expected);
}

// ----- every command of crate::rpc ------------------------------------------------------------

/// Compiles only if the command and its answer both have a codec.
fn has_codec<R: KvRequest + Encode>()
where
    R::Response: Decode,
{
}

/// The two command lists of `crate::rpc` (`batch_requests!` and `unary_requests!`).
#[test]
fn every_rpc_command_has_a_codec() {
    use kvrpcpb::*;
    has_codec::<GetRequest>();
    has_codec::<ScanRequest>();
    has_codec::<BatchGetRequest>();
    has_codec::<ScanLockRequest>();
    has_codec::<BufferBatchGetRequest>();
    has_codec::<PrewriteRequest>();
    has_codec::<CommitRequest>();
    has_codec::<CleanupRequest>();
    has_codec::<BatchRollbackRequest>();
    has_codec::<ResolveLockRequest>();
    has_codec::<DeleteRangeRequest>();
    has_codec::<PessimisticLockRequest>();
    has_codec::<PessimisticRollbackRequest>();
    has_codec::<CheckTxnStatusRequest>();
    has_codec::<TxnHeartBeatRequest>();
    has_codec::<CheckSecondaryLocksRequest>();
    has_codec::<FlushRequest>();
    has_codec::<FlashbackToVersionRequest>();
    has_codec::<PrepareFlashbackToVersionRequest>();
    has_codec::<RawGetRequest>();
    has_codec::<RawBatchGetRequest>();
    has_codec::<RawScanRequest>();
    has_codec::<RawBatchScanRequest>();
    has_codec::<RawPutRequest>();
    has_codec::<RawBatchPutRequest>();
    has_codec::<RawDeleteRequest>();
    has_codec::<RawBatchDeleteRequest>();
    has_codec::<RawDeleteRangeRequest>();
    has_codec::<RawGetKeyTtlRequest>();
    has_codec::<RawCasRequest>();
    has_codec::<RawChecksumRequest>();
    has_codec::<SplitRegionRequest>();
    has_codec::<UnsafeDestroyRangeRequest>();
    has_codec::<MvccGetByKeyRequest>();
    has_codec::<MvccGetByStartTsRequest>();
}

/// Encodes a request for keyspace 4242.
fn enc<R: Encode>(mut req: R) -> R {
    req.encode(&codec()).unwrap();
    req
}

fn mutation(key: &str) -> kvrpcpb::Mutation {
    kvrpcpb::Mutation {
        key: b(key.as_bytes()),
        value: b(b"v"),
        ..Default::default()
    }
}

#[test]
fn every_request_key_field_is_prefixed() {
    use kvrpcpb::*;
    // One `key`.
    macro_rules! one_key {
        ($($ty:ident),*) => {$({
            let r = enc($ty { key: b(b"k"), ..Default::default() });
            assert_eq!(r.key, p("k"), stringify!($ty));
        })*};
    }
    one_key!(
        GetRequest,
        CleanupRequest,
        RawGetRequest,
        RawDeleteRequest,
        RawGetKeyTtlRequest,
        MvccGetByKeyRequest
    );
    let put = enc(RawPutRequest {
        key: b(b"k"),
        value: b(b"v"),
        ..Default::default()
    });
    assert_eq!((put.key, put.value), (p("k"), b(b"v")));
    let cas = enc(RawCasRequest {
        key: b(b"k"),
        value: b(b"new"),
        previous_value: b(b"old"),
        ..Default::default()
    });
    assert_eq!(
        (cas.key, cas.value, cas.previous_value),
        (p("k"), b(b"new"), b(b"old"))
    );

    // Lists of `keys`.
    let two = || keys(&["a", "b"]);
    let want = prefixed(&["a", "b"]);
    macro_rules! key_list {
        ($($ty:ident),*) => {$({
            let r = enc($ty { keys: two(), ..Default::default() });
            assert_eq!(r.keys, want, stringify!($ty));
        })*};
    }
    key_list!(
        BatchGetRequest,
        BufferBatchGetRequest,
        BatchRollbackRequest,
        ResolveLockRequest,
        PessimisticRollbackRequest,
        CheckSecondaryLocksRequest,
        RawBatchGetRequest,
        RawBatchDeleteRequest
    );
    let commit = enc(CommitRequest {
        keys: two(),
        primary_key: b(b"a"),
        ..Default::default()
    });
    assert_eq!((commit.keys, commit.primary_key), (want.clone(), p("a")));

    // Forward ranges: an empty end is the keyspace's end.
    macro_rules! range {
        ($ty:ident) => {{
            let r = enc($ty {
                start_key: b(b"a"),
                end_key: Bytes::new(),
                ..Default::default()
            });
            assert_eq!((r.start_key, r.end_key), (p("a"), b(END)), stringify!($ty));
            let r = enc($ty {
                start_key: Bytes::new(),
                end_key: b(b"z"),
                ..Default::default()
            });
            assert_eq!(
                (r.start_key, r.end_key),
                (b(PREFIX), p("z")),
                stringify!($ty)
            );
        }};
    }
    range!(ScanLockRequest);
    range!(DeleteRangeRequest);
    range!(FlashbackToVersionRequest);
    range!(PrepareFlashbackToVersionRequest);
    range!(RawDeleteRangeRequest);
    range!(UnsafeDestroyRangeRequest);
    range!(ScanRequest);
    range!(RawScanRequest);

    // Transactions.
    let prewrite = enc(PrewriteRequest {
        mutations: vec![mutation("a"), mutation("b")],
        primary_lock: b(b"a"),
        secondaries: keys(&["b"]),
        ..Default::default()
    });
    assert_eq!(
        prewrite
            .mutations
            .iter()
            .map(|m| m.key.clone())
            .collect::<Vec<_>>(),
        want
    );
    assert!(prewrite.mutations.iter().all(|m| m.value == "v".as_bytes()));
    assert_eq!(prewrite.primary_lock, p("a"));
    assert_eq!(prewrite.secondaries, prefixed(&["b"]));
    let lock = enc(PessimisticLockRequest {
        mutations: vec![mutation("a")],
        primary_lock: b(b"a"),
        ..Default::default()
    });
    assert_eq!(
        (lock.mutations[0].key.clone(), lock.primary_lock),
        (p("a"), p("a"))
    );
    let flush = enc(FlushRequest {
        mutations: vec![mutation("a")],
        ..Default::default()
    });
    assert_eq!(flush.mutations[0].key, p("a"));
    assert!(flush.primary_key.is_empty());
    let heartbeat = enc(TxnHeartBeatRequest {
        primary_lock: b(b"a"),
        ..Default::default()
    });
    assert_eq!(heartbeat.primary_lock, p("a"));
    let status = enc(CheckTxnStatusRequest {
        primary_key: b(b"a"),
        ..Default::default()
    });
    assert_eq!(status.primary_key, p("a"));

    // Raw batches and checksums.
    let put = enc(RawBatchPutRequest {
        pairs: vec![
            KvPair {
                key: b(b"a"),
                value: b(b"1"),
                ..Default::default()
            },
            KvPair {
                key: b(b"b"),
                value: b(b"2"),
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    assert_eq!(
        put.pairs
            .iter()
            .map(|kv| (kv.key.clone(), kv.value.clone()))
            .collect::<Vec<_>>(),
        vec![(p("a"), b(b"1")), (p("b"), b(b"2"))]
    );
    let checksum = enc(RawChecksumRequest {
        ranges: vec![KeyRange {
            start_key: b(b"a"),
            end_key: Bytes::new(),
        }],
        ..Default::default()
    });
    assert_eq!(
        (
            checksum.ranges[0].start_key.clone(),
            checksum.ranges[0].end_key.clone()
        ),
        (p("a"), b(END))
    );

    // Admin and debugging.
    let split = enc(SplitRegionRequest {
        split_keys: two(),
        split_key: b(b"c"),
        ..Default::default()
    });
    assert_eq!((split.split_keys, split.split_key), (want, p("c")));
    let split = enc(SplitRegionRequest {
        split_keys: two(),
        ..Default::default()
    });
    assert!(split.split_key.is_empty());
    let by_ts = enc(MvccGetByStartTsRequest {
        start_ts: 7,
        ..Default::default()
    });
    assert_eq!(by_ts.start_ts, 7);
}

#[test]
fn reverse_scans_swap_the_bound_roles() {
    // In a reverse scan `start_key` is the upper bound and `end_key` the lower one.
    let scan = enc(kvrpcpb::RawScanRequest {
        reverse: true,
        ..Default::default()
    });
    assert_eq!((scan.start_key, scan.end_key), (b(END), b(PREFIX)));
    let scan = enc(kvrpcpb::RawScanRequest {
        start_key: b(b"z"),
        end_key: b(b"a"),
        reverse: true,
        ..Default::default()
    });
    assert_eq!((scan.start_key, scan.end_key), (p("z"), p("a")));
    let scan = enc(kvrpcpb::ScanRequest {
        start_key: b(b"z"),
        reverse: true,
        ..Default::default()
    });
    assert_eq!((scan.start_key, scan.end_key), (p("z"), b(PREFIX)));
    let scan = enc(kvrpcpb::ScanRequest {
        end_key: b(b"a"),
        reverse: true,
        ..Default::default()
    });
    assert_eq!((scan.start_key, scan.end_key), (b(END), p("a")));
}

#[test]
fn raw_batch_scan_writes_out_empty_ends() {
    let range = |s: &[u8], e: &[u8]| kvrpcpb::KeyRange {
        start_key: b(s),
        end_key: b(e),
    };
    // Forward: an inner empty end is the next start, the last one the keyspace's end.
    let scan = enc(kvrpcpb::RawBatchScanRequest {
        ranges: vec![range(b"a", b""), range(b"c", b"d"), range(b"f", b"")],
        ..Default::default()
    });
    assert_eq!(
        scan.ranges,
        vec![
            range(&p("a"), &p("c")),
            range(&p("c"), &p("d")),
            range(&p("f"), END),
        ]
    );
    // Reverse: ranges run downwards, ends are lower bounds, the last empty one is the
    // keyspace's first key.
    let scan = enc(kvrpcpb::RawBatchScanRequest {
        ranges: vec![range(b"", b""), range(b"m", b"c"), range(b"b", b"")],
        reverse: true,
        ..Default::default()
    });
    assert_eq!(
        scan.ranges,
        vec![
            range(END, &p("m")),
            range(&p("m"), &p("c")),
            range(&p("b"), PREFIX),
        ]
    );
}

#[test]
fn many_keys_share_one_buffer_and_keep_their_order() {
    let codec = codec();
    let user: Vec<Bytes> = (0..1000u32).map(|i| Bytes::from(i.to_string())).collect();
    let mut req = kvrpcpb::RawBatchGetRequest {
        keys: user.clone(),
        ..Default::default()
    };
    req.encode(&codec).unwrap();
    for (got, want) in req.keys.iter().zip(&user) {
        assert_eq!(got, &ks(&codec).encode_key(want));
    }
    // Empty keys in a batch stay addressable: the bare prefix.
    let mut req = kvrpcpb::RawBatchGetRequest {
        keys: vec![Bytes::new(), b(b"x"), Bytes::new()],
        ..Default::default()
    };
    req.encode(&codec).unwrap();
    assert_eq!(req.keys, vec![b(PREFIX), p("x"), b(PREFIX)]);
}

/// Every response with only a region error to decode.
#[test]
fn every_region_error_only_response_is_decoded() {
    macro_rules! check {
        ($($ty:ident),*) => {$({
            let codec = codec();
            let mut resp = kvrpcpb::$ty {
                region_error: Some(region_error(&codec)),
                ..Default::default()
            };
            resp.decode(&codec).unwrap();
            check_region_error(resp.region_error.as_ref());
            // `take_region_error` sees the decoded error.
            assert!(resp.region_error_mut().is_some(), stringify!($ty));
        })*};
    }
    check!(
        DeleteRangeResponse,
        FlashbackToVersionResponse,
        PrepareFlashbackToVersionResponse,
        RawGetResponse,
        RawPutResponse,
        RawBatchPutResponse,
        RawDeleteResponse,
        RawBatchDeleteResponse,
        RawDeleteRangeResponse,
        RawGetKeyTtlResponse,
        RawCasResponse,
        RawChecksumResponse,
        UnsafeDestroyRangeResponse,
        GetResponse,
        CommitResponse,
        CleanupResponse,
        BatchRollbackResponse,
        ResolveLockResponse,
        TxnHeartBeatResponse,
        PrewriteResponse,
        PessimisticLockResponse,
        PessimisticRollbackResponse,
        FlushResponse,
        ScanResponse,
        BatchGetResponse,
        BufferBatchGetResponse,
        ScanLockResponse,
        CheckTxnStatusResponse,
        CheckSecondaryLocksResponse,
        RawBatchGetResponse,
        RawScanResponse,
        RawBatchScanResponse,
        SplitRegionResponse,
        MvccGetByKeyResponse,
        MvccGetByStartTsResponse
    );
}

fn full_pair(key: &str) -> kvrpcpb::KvPair {
    kvrpcpb::KvPair {
        key: p(key),
        value: b(b"v"),
        error: Some(full_key_error()),
        ..Default::default()
    }
}

fn check_pairs(pairs: &[kvrpcpb::KvPair]) {
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs[0].key, "a".as_bytes());
    assert_eq!(pairs[1].key, "b".as_bytes());
    assert!(pairs.iter().all(|kv| kv.value == "v".as_bytes()));
    for pair in pairs {
        check_full_key_error(pair.error.as_ref().unwrap());
    }
}

#[test]
fn every_response_key_field_is_stripped() {
    use kvrpcpb::*;
    let codec = codec();
    let err = || Some(full_key_error());
    let errs = || vec![full_key_error(), full_key_error()];
    let pairs = || vec![full_pair("a"), full_pair("b")];
    let locks = || vec![lock("l1", p), lock("l2", p)];
    let check_locks = |locks: &[LockInfo]| {
        assert_eq!(locks.len(), 2);
        check_lock(&locks[0], "l1");
        check_lock(&locks[1], "l2");
    };

    // A single key error.
    macro_rules! one_error {
        ($($ty:ident),*) => {$({
            let mut r = $ty { error: err(), ..Default::default() };
            r.decode(&codec).unwrap();
            check_full_key_error(r.error.as_ref().unwrap());
        })*};
    }
    one_error!(
        GetResponse,
        CommitResponse,
        CleanupResponse,
        BatchRollbackResponse,
        ResolveLockResponse,
        TxnHeartBeatResponse
    );
    // Key errors per key.
    macro_rules! many_errors {
        ($($ty:ident),*) => {$({
            let mut r = $ty { errors: errs(), ..Default::default() };
            r.decode(&codec).unwrap();
            r.errors.iter().for_each(check_full_key_error);
        })*};
    }
    many_errors!(
        PrewriteResponse,
        PessimisticLockResponse,
        PessimisticRollbackResponse,
        FlushResponse
    );
    // Pairs and a key error.
    macro_rules! pairs_and_error {
        ($($ty:ident),*) => {$({
            let mut r = $ty { pairs: pairs(), error: err(), ..Default::default() };
            r.decode(&codec).unwrap();
            check_pairs(&r.pairs);
            check_full_key_error(r.error.as_ref().unwrap());
        })*};
    }
    pairs_and_error!(ScanResponse, BatchGetResponse, BufferBatchGetResponse);
    let mut r = RawBatchGetResponse {
        pairs: pairs(),
        ..Default::default()
    };
    r.decode(&codec).unwrap();
    check_pairs(&r.pairs);
    let mut r = RawScanResponse {
        kvs: pairs(),
        ..Default::default()
    };
    r.decode(&codec).unwrap();
    check_pairs(&r.kvs);
    let mut r = RawBatchScanResponse {
        kvs: pairs(),
        ..Default::default()
    };
    r.decode(&codec).unwrap();
    check_pairs(&r.kvs);
    // Locks.
    let mut r = ScanLockResponse {
        error: err(),
        locks: locks(),
        ..Default::default()
    };
    r.decode(&codec).unwrap();
    check_full_key_error(r.error.as_ref().unwrap());
    check_locks(&r.locks);
    let mut r = CheckSecondaryLocksResponse {
        error: err(),
        locks: locks(),
        ..Default::default()
    };
    r.decode(&codec).unwrap();
    check_full_key_error(r.error.as_ref().unwrap());
    check_locks(&r.locks);
    let mut r = CheckTxnStatusResponse {
        error: err(),
        lock_info: Some(lock("status", p)),
        ..Default::default()
    };
    r.decode(&codec).unwrap();
    check_full_key_error(r.error.as_ref().unwrap());
    check_lock(r.lock_info.as_ref().unwrap(), "status");
    // Split: regions in the keyspace's view, those outside it left out.
    let mut r = SplitRegionResponse {
        regions: vec![
            region(1, mem(BEFORE_PREFIX), mem(&p("m"))),
            region(2, mem(&p("m")), mem(AFTER_END)),
            region(3, mem(END), mem(AFTER_END)),
        ],
        left: Some(region(1, mem(BEFORE_PREFIX), mem(&p("m")))),
        right: Some(region(3, mem(END), mem(AFTER_END))),
        errors: errs(),
        ..Default::default()
    };
    r.decode(&codec).unwrap();
    assert_eq!(
        r.regions,
        vec![
            region(1, Bytes::new(), b(b"m")),
            region(2, b(b"m"), Bytes::new())
        ]
    );
    assert_eq!(r.left, Some(region(1, Bytes::new(), b(b"m"))));
    assert_eq!(r.right, None);
    r.errors.iter().for_each(check_full_key_error);
}

// ----- ranges, regions and keyspace edges -----------------------------------------------------

#[test]
fn ranges_at_keyspace_edges() {
    // Keyspace 0, the first one.
    let first = ApiCodec::v2(KeyMode::Txn, 0, "DEFAULT").unwrap();
    assert_eq!(
        first.encode_range(&Bytes::new(), &Bytes::new()),
        (b(b"x\0\0\0"), b(b"x\0\0\x01"))
    );
    assert_eq!(first.decode_key(&b(b"x\0\0\0k")).unwrap(), b(b"k"));
    assert!(first.decode_key(&b(b"x\0\0\x01k")).is_err());
    assert_eq!(
        first.decode_range(&b(b""), &b(b"")),
        Some((Bytes::new(), Bytes::new()))
    );
    // The region before every keyspace does not touch it.
    assert_eq!(first.decode_range(&b(b""), &b(b"x\0\0\0")), None);

    // The last keyspace ends at the next mode byte.
    let last = ApiCodec::v2(KeyMode::Raw, MAX_KEYSPACE_ID, "last").unwrap();
    assert_eq!(
        last.encode_range(&b(b"a"), &Bytes::new()),
        (b(b"r\xff\xff\xffa"), b(b"s\0\0\0"))
    );
    assert_eq!(
        last.encode_region_range(b"", b""),
        (mem(b"r\xff\xff\xff"), mem(b"s\0\0\0"))
    );
    // A region from inside the last keyspace to +inf is clamped to its end.
    assert_eq!(
        last.decode_region_range(&mem(b"r\xff\xff\xffm"), &Bytes::new())
            .unwrap(),
        Some((b(b"m"), Bytes::new()))
    );
    assert_eq!(
        last.decode_region_range(&mem(b"s\0\0\0"), &Bytes::new())
            .unwrap(),
        None
    );
    let last_txn = ApiCodec::v2(KeyMode::Txn, MAX_KEYSPACE_ID, "last").unwrap();
    assert_eq!(ks(&last_txn).end_key(), b"y\0\0\0");

    // Empty ends in region queries, and the probe key of the region cache's "last region"
    // lookup, stay inside the keyspace.
    let codec = codec();
    assert_eq!(
        codec.encode_region_range(b"a", b""),
        (mem(&p("a")), mem(END))
    );
    let probe = codec.encode_region_key(&[0xFF; 32]);
    assert!(probe.as_ref() < mem(END).as_ref());
    assert!(probe.as_ref() > mem(PREFIX).as_ref());
}

#[test]
fn regions_spanning_several_keyspaces_are_clamped() {
    let codec = codec();
    // (storage start, storage end, the keyspace's view)
    type Case = (Bytes, Bytes, Option<(&'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        // The whole key space.
        (Bytes::new(), Bytes::new(), Some(("", ""))),
        // From the previous keyspace into this one.
        (mem(&cat(PREV_PREFIX, b"q")), mem(&p("m")), Some(("", "m"))),
        // From this one into the next one.
        (mem(&p("m")), mem(&cat(END, b"q")), Some(("m", ""))),
        // From this one to +inf.
        (mem(&p("m")), Bytes::new(), Some(("m", ""))),
        // From the raw keyspaces into the txn ones.
        (mem(BEFORE_PREFIX), mem(b"x\0\0\0"), Some(("", ""))),
        // Starting exactly at the keyspace, ending exactly at its end.
        (mem(PREFIX), mem(END), Some(("", ""))),
        // Wholly in another keyspace, or touching this one only at a bound.
        (mem(PREV_PREFIX), mem(PREFIX), None),
        (mem(END), Bytes::new(), None),
        (mem(b"x\0\0\0"), mem(b"x\0\0\x01"), None),
        (Bytes::new(), mem(BEFORE_PREFIX), None),
    ];
    for (start, end, want) in cases {
        let got = codec.decode_region_range(&start, &end).unwrap();
        let want = want.map(|(s, e)| (b(s.as_bytes()), b(e.as_bytes())));
        assert_eq!(got, want, "{:?}..{:?}", start, end);
        let info = RegionInfo {
            region: region(9, start, end),
            ..Default::default()
        };
        let decoded = codec.decode_region_info(info).unwrap();
        assert_eq!(
            decoded.map(|i| (i.region.start_key, i.region.end_key)),
            want
        );
    }
}

#[test]
fn keys_and_regions_of_another_keyspace_never_decode() {
    let a = ApiCodec::v2(KeyMode::Raw, 1, "a").unwrap();
    let b_codec = ApiCodec::v2(KeyMode::Raw, 2, "b").unwrap();
    let a_txn = ApiCodec::v2(KeyMode::Txn, 1, "a").unwrap();
    let key_of_b = b_codec.encode_key(&b(b"k"));
    assert!(matches!(a.decode_key(&key_of_b), Err(Error::Codec { .. })));
    // Same id, other mode: another key space too.
    assert!(a_txn.decode_key(&a.encode_key(&b(b"k"))).is_err());
    // A keyspace's own key round-trips.
    assert_eq!(b_codec.decode_key(&key_of_b).unwrap(), b(b"k"));

    // A response carrying a key of B fails as a whole in A.
    let mut resp = kvrpcpb::RawScanResponse {
        kvs: vec![kvrpcpb::KvPair {
            key: key_of_b.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(matches!(resp.decode(&a), Err(Error::Codec { .. })));
    let mut resp = kvrpcpb::GetResponse {
        error: Some(kvrpcpb::KeyError {
            locked: Some(kvrpcpb::LockInfo {
                key: key_of_b,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(resp.decode(&a).is_err());

    // B's regions are not A's.
    let (start, end) = b_codec.encode_region_range(b"", b"");
    assert_eq!(a.decode_region_range(&start, &end).unwrap(), None);
    assert_eq!(
        a.decode_region(region(1, start.clone(), end.clone()))
            .unwrap(),
        None
    );
    let mut err = errorpb::Error {
        epoch_not_match: Some(errorpb::EpochNotMatch {
            current_regions: vec![region(1, start, end)],
        }),
        ..Default::default()
    };
    a.decode_region_error(&mut err).unwrap();
    assert!(err.epoch_not_match.unwrap().current_regions.is_empty());
}

#[test]
fn key_not_in_region_outside_the_keyspace_is_an_error() {
    let codec = codec();
    let mut err = errorpb::Error {
        key_not_in_region: Some(errorpb::KeyNotInRegion {
            key: p("k"),
            start_key: mem(END),
            end_key: Bytes::new(),
            region_id: 4,
        }),
        ..Default::default()
    };
    assert!(matches!(
        codec.decode_region_error(&mut err),
        Err(Error::Codec { .. })
    ));
}

#[test]
fn malformed_region_keys_are_codec_errors() {
    let bad = b(b"not memcomparable");
    for codec in [codec(), ApiCodec::v1(KeyMode::Txn)] {
        assert!(matches!(
            codec.decode_region_range(&bad, &Bytes::new()),
            Err(Error::Codec { .. })
        ));
        assert!(
            codec
                .decode_bucket_keys(std::slice::from_ref(&bad))
                .is_err()
        );
    }
    // API V1 raw region keys are not encoded: anything goes.
    let raw = ApiCodec::v1(KeyMode::Raw);
    assert_eq!(
        raw.decode_region_range(&bad, &Bytes::new()).unwrap(),
        Some((bad, Bytes::new()))
    );
}

#[test]
fn region_info_buckets_and_bucket_errors_are_decoded() {
    let codec = codec();
    let info = RegionInfo {
        region: region(1, mem(BEFORE_PREFIX), mem(&p("m"))),
        buckets: Some(metapb::Buckets {
            region_id: 1,
            version: 3,
            keys: vec![mem(BEFORE_PREFIX), mem(&p("c")), mem(&p("m"))],
            ..Default::default()
        }),
        ..Default::default()
    };
    let info = codec.decode_region_info(info).unwrap().unwrap();
    assert_eq!(info.buckets.unwrap().keys, keys(&["", "c", "m"]));

    let mut err = errorpb::Error {
        bucket_version_not_match: Some(errorpb::BucketVersionNotMatch {
            version: 4,
            keys: vec![mem(&p("a")), mem(&p("c")), mem(AFTER_END)],
        }),
        ..Default::default()
    };
    codec.decode_region_error(&mut err).unwrap();
    assert_eq!(
        err.bucket_version_not_match.unwrap().keys,
        keys(&["a", "c", ""])
    );
}

// ----- API V1 ----------------------------------------------------------------------------------

#[test]
fn v1_raw_changes_nothing() {
    let codec = ApiCodec::v1(KeyMode::Raw);
    assert!(codec.is_identity());
    assert_eq!(codec.api_version(), kvrpcpb::ApiVersion::V1);
    assert_eq!(codec.encode_region_key(b"k"), b(b"k"));
    assert_eq!(
        codec.encode_region_range(b"a", b""),
        (b(b"a"), Bytes::new())
    );
    let mut resp = kvrpcpb::RawScanResponse {
        region_error: Some(errorpb::Error {
            epoch_not_match: Some(errorpb::EpochNotMatch {
                current_regions: vec![region(1, b(b"a"), b(b"b"))],
            }),
            ..Default::default()
        }),
        kvs: vec![kvrpcpb::KvPair {
            key: b(b"a"),
            ..Default::default()
        }],
    };
    let before = resp.clone();
    resp.decode(&codec).unwrap();
    assert_eq!(resp, before);
    let region = region(1, b(b"a"), b(b"b"));
    assert_eq!(codec.decode_region(region.clone()).unwrap(), Some(region));
}

#[test]
fn v1_txn_recodes_region_keys_only() {
    let codec = ApiCodec::v1(KeyMode::Txn);
    assert!(!codec.is_identity());
    assert_eq!(codec.encode_key(&b(b"k")), b(b"k"));
    assert_eq!(codec.encode_region_key(b"k"), mem(b"k"));
    // client-go encodes an empty start (the smallest encoded key) and keeps an empty end.
    assert_eq!(
        codec.encode_region_range(b"", b""),
        (mem(b""), Bytes::new())
    );
    let mut resp = kvrpcpb::PrewriteResponse {
        region_error: Some(errorpb::Error {
            key_not_in_region: Some(errorpb::KeyNotInRegion {
                key: b(b"k"),
                start_key: mem(b"a"),
                end_key: Bytes::new(),
                region_id: 1,
            }),
            epoch_not_match: Some(errorpb::EpochNotMatch {
                current_regions: vec![
                    region(1, Bytes::new(), mem(b"m")),
                    region(2, mem(b"m"), Bytes::new()),
                ],
            }),
            ..Default::default()
        }),
        errors: vec![kvrpcpb::KeyError {
            locked: Some(kvrpcpb::LockInfo {
                key: b(b"k"),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    resp.decode(&codec).unwrap();
    let err = resp.region_error.as_ref().unwrap();
    let info = err.key_not_in_region.as_ref().unwrap();
    assert_eq!(
        (&info.key, &info.start_key, &info.end_key),
        (&b(b"k"), &b(b"a"), &Bytes::new())
    );
    assert_eq!(
        err.epoch_not_match.as_ref().unwrap().current_regions,
        vec![
            region(1, Bytes::new(), b(b"m")),
            region(2, b(b"m"), Bytes::new())
        ]
    );
    // Keys in answers travel unencoded.
    assert_eq!(resp.errors[0].locked.as_ref().unwrap().key, b(b"k"));
    assert_eq!(
        codec
            .decode_bucket_keys(&[Bytes::new(), mem(b"c"), Bytes::new()])
            .unwrap(),
        keys(&["", "c", ""])
    );
}

#[test]
fn stamp_sets_version_and_keyspace() {
    let mut template = ContextTemplate::default();
    codec().stamp(&mut template);
    assert_eq!(template.api_version, kvrpcpb::ApiVersion::V2 as i32);
    assert_eq!(template.keyspace_id, Some(4242));
    assert_eq!(template.keyspace_name, "ks");
    let ctx = template.to_context();
    assert_eq!(
        ctx.keyspace,
        Some(kvrpcpb::context::Keyspace::KeyspaceId(4242))
    );

    ApiCodec::v1(KeyMode::Txn).stamp(&mut template);
    assert_eq!(template.api_version, kvrpcpb::ApiVersion::V1 as i32);
    assert_eq!(template.keyspace_id, None);
    assert!(template.keyspace_name.is_empty());
}

#[test]
fn codec_from_pd_keyspace_meta() {
    let meta = crate::pd::KeyspaceMeta {
        id: 7,
        name: "ks7".to_owned(),
        state: crate::pd::KeyspaceState::Enabled,
        config: Default::default(),
    };
    let codec = ApiCodec::for_keyspace(KeyMode::Txn, &meta).unwrap();
    let ks = ks(&codec);
    assert_eq!((ks.prefix(), ks.name()), (b"x\0\0\x07", "ks7"));
}

// ----- against tikv-mock ----------------------------------------------------------------------

mod mock {
    use std::sync::Arc;

    use bytes::Bytes;
    use tikv_mock::MockCluster;
    use tikv_proto::kvrpcpb;
    use tikv_proto::tikvpb::tikv_client::TikvClient;

    use super::super::*;
    use super::{b, cat, keys, ks};
    use crate::Config;
    use crate::locate::RegionCache;
    use crate::pd::PdClient;
    use crate::rpc::KvRequest;

    async fn v2_cluster() -> (MockCluster, Arc<PdClient>) {
        let mock = MockCluster::builder()
            .api_version(tikv_mock::ApiVersion::V2)
            .keyspace("ks1")
            .keyspace("ks2")
            .start()
            .await
            .unwrap();
        let pd = PdClient::connect(mock.pd_endpoints(), &Config::default())
            .await
            .unwrap();
        (mock, Arc::new(pd))
    }

    async fn raw_codec(pd: &PdClient, name: &str) -> ApiCodec {
        let meta = pd.load_keyspace(name).await.unwrap();
        meta.ensure_enabled().unwrap();
        ApiCodec::for_keyspace(KeyMode::Raw, &meta).unwrap()
    }

    fn range_of(info: &RegionInfo) -> (Bytes, Bytes) {
        (info.region.start_key.clone(), info.region.end_key.clone())
    }

    #[tokio::test]
    async fn region_source_speaks_keyspace_keys() {
        let (mock, pd) = v2_cluster().await;
        let codec = raw_codec(&pd, "ks1").await;
        let prefix = *ks(&codec).prefix();
        mock.split_raw([cat(&prefix, b"m")]).unwrap();
        let source = codec.region_source(pd.clone());

        let left = source.get_region(b"a", false).await.unwrap().unwrap();
        assert_eq!(range_of(&left), (Bytes::new(), b(b"m")));
        let right = source.get_region(b"z", false).await.unwrap().unwrap();
        assert_eq!(range_of(&right), (b(b"m"), Bytes::new()));
        // The storage view of the same region: the codec only changed its keys.
        let (storage, _) = mock.region_for_raw_key(&cat(&prefix, b"a")).unwrap();
        assert_eq!(storage.id, left.region.id);
        assert_eq!(storage.region_epoch, left.region.region_epoch);

        let prev = source.get_prev_region(b"m", false).await.unwrap().unwrap();
        assert_eq!(prev.region.id, left.region.id);
        // Before the keyspace's first region there is nothing of the keyspace.
        assert!(source.get_prev_region(b"", false).await.unwrap().is_none());

        let all = source
            .batch_scan_regions(&[(Bytes::new(), Bytes::new())], 16, false)
            .await
            .unwrap();
        assert_eq!(
            all.iter().map(range_of).collect::<Vec<_>>(),
            vec![(Bytes::new(), b(b"m")), (b(b"m"), Bytes::new())]
        );
        // The leader-only variants (client-go's retry path) speak keyspace keys too.
        let from_leader = source
            .get_region_from_leader(b"z", false, false)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(range_of(&from_leader), (b(b"m"), Bytes::new()));
        let prev_from_leader = source
            .get_region_from_leader(b"m", true, false)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(prev_from_leader.region.id, left.region.id);
        let all_from_leader = source
            .batch_scan_regions_from_leader(&[(Bytes::new(), Bytes::new())], 16, false)
            .await
            .unwrap();
        assert_eq!(
            all_from_leader.iter().map(range_of).collect::<Vec<_>>(),
            all.iter().map(range_of).collect::<Vec<_>>()
        );
        let by_id = source
            .get_region_by_id(right.region.id, false)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(range_of(&by_id), (b(b"m"), Bytes::new()));

        // Keyspace 2's region exists for PD but not for keyspace 1.
        let ks2 = raw_codec(&pd, "ks2").await;
        let (other, _) = mock.region_for_raw_key(&ks(&ks2).encode_key(b"a")).unwrap();
        assert!(
            source
                .get_region_by_id(other.id, false)
                .await
                .unwrap()
                .is_none()
        );
        // Stores pass through.
        let leader = left.leader.unwrap();
        let store = source.get_store(leader.store_id).await.unwrap().unwrap();
        assert_eq!(store.id, leader.store_id);
        assert_eq!(
            source.get_all_stores(true).await.unwrap().len(),
            mock.store_ids().len()
        );
    }

    #[tokio::test]
    async fn region_cache_over_the_codec_lives_in_user_space() {
        let (mock, pd) = v2_cluster().await;
        let codec = raw_codec(&pd, "ks1").await;
        let prefix = *ks(&codec).prefix();
        mock.split_raw([cat(&prefix, b"m")]).unwrap();
        let cache = RegionCache::new(codec.region_source(pd.clone()), &Config::default());

        let left = cache.locate_key(b"k").await.unwrap();
        assert_eq!(
            (left.start_key().as_bytes(), left.end_key().as_bytes()),
            (&b""[..], &b"m"[..])
        );
        let right = cache.locate_key(b"\xff\xff").await.unwrap();
        assert_eq!(right.start_key().as_bytes(), b"m");
        assert!(right.end_key().is_empty());
        // +inf of the keyspace is its own last region, not the cluster's.
        let last = cache.locate_end_key(b"").await.unwrap();
        assert_eq!(last.region_id(), right.region_id());
        assert_eq!(
            cache.locate_end_key(b"m").await.unwrap().region_id(),
            left.region_id()
        );
        let ranges = cache.locate_key_range(b"", b"").await.unwrap();
        assert_eq!(
            ranges.iter().map(|l| l.region_id()).collect::<Vec<_>>(),
            vec![left.region_id(), right.region_id()]
        );
    }

    #[tokio::test]
    async fn v1_txn_region_source_decodes_memcomparable_boundaries() {
        let mock = MockCluster::builder().start().await.unwrap();
        mock.split_txn(["m"]).unwrap();
        let pd = Arc::new(
            PdClient::connect(mock.pd_endpoints(), &Config::default())
                .await
                .unwrap(),
        );
        let source = ApiCodec::v1(KeyMode::Txn).region_source(pd);
        let left = source.get_region(b"a", false).await.unwrap().unwrap();
        assert_eq!(range_of(&left), (Bytes::new(), b(b"m")));
        let right = source.get_region(b"m", false).await.unwrap().unwrap();
        assert_eq!(range_of(&right), (b(b"m"), Bytes::new()));
        let all = source
            .batch_scan_regions(&[(b(b"b"), Bytes::new())], 16, false)
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
    }

    /// Sends a request to the leader of `info`, the way the sender will: route, encode once,
    /// send, decode.
    async fn call<R, F, Fut>(
        codec: &ApiCodec,
        info: &RegionInfo,
        addr: &str,
        mut req: R,
        send: F,
    ) -> Result<R::Response>
    where
        R: KvRequest + Encode,
        R::Response: Decode,
        F: FnOnce(TikvClient<tonic::transport::Channel>, R) -> Fut,
        Fut: std::future::Future<
                Output = std::result::Result<tonic::Response<R::Response>, tonic::Status>,
            >,
    {
        let mut template = crate::rpc::ContextTemplate::default();
        codec.stamp(&mut template);
        template.apply(&mut req);
        req.set_route(
            info.region.id,
            info.region.region_epoch,
            info.leader.unwrap(),
        );
        req.encode(codec).unwrap();
        let client = TikvClient::connect(format!("http://{addr}")).await.unwrap();
        let mut resp = send(client, req).await.unwrap().into_inner();
        resp.decode(codec)?;
        Ok(resp)
    }

    #[tokio::test]
    async fn encoded_raw_requests_round_trip_through_the_mock() {
        let (mock, pd) = v2_cluster().await;
        let ks1 = raw_codec(&pd, "ks1").await;
        let ks2 = raw_codec(&pd, "ks2").await;
        let source = ks1.region_source(pd.clone());
        let info = source.get_region(b"a", false).await.unwrap().unwrap();
        mock.sync_max_ts(info.region.id).unwrap();
        let leader = info.leader.unwrap();
        let addr = mock.store_address(leader.store_id).unwrap();

        let put = kvrpcpb::RawBatchPutRequest {
            pairs: ["a", "b", "c"]
                .iter()
                .map(|k| kvrpcpb::KvPair {
                    key: b(k.as_bytes()),
                    value: b(b"v"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let resp = call(&ks1, &info, &addr, put, |mut c, r| async move {
            c.raw_batch_put(r).await
        })
        .await
        .unwrap();
        assert!(
            resp.region_error.is_none() && resp.error.is_empty(),
            "{resp:?}"
        );

        // Every key lies in keyspace 1 on the wire.
        let (_, storage_leader) = mock.region_for_raw_key(&ks(&ks1).encode_key(b"b")).unwrap();
        assert_eq!(storage_leader.unwrap().store_id, leader.store_id);

        let scan = |reverse| kvrpcpb::RawScanRequest {
            limit: 10,
            reverse,
            ..Default::default()
        };
        let keys_of =
            |kvs: &[kvrpcpb::KvPair]| kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();
        let resp = call(&ks1, &info, &addr, scan(false), |mut c, r| async move {
            c.raw_scan(r).await
        })
        .await
        .unwrap();
        assert_eq!(keys_of(&resp.kvs), keys(&["a", "b", "c"]));
        let resp = call(&ks1, &info, &addr, scan(true), |mut c, r| async move {
            c.raw_scan(r).await
        })
        .await
        .unwrap();
        assert_eq!(keys_of(&resp.kvs), keys(&["c", "b", "a"]));

        let batch = kvrpcpb::RawBatchScanRequest {
            ranges: vec![
                kvrpcpb::KeyRange {
                    start_key: b(b"a"),
                    end_key: Bytes::new(),
                },
                kvrpcpb::KeyRange {
                    start_key: b(b"c"),
                    end_key: Bytes::new(),
                },
            ],
            each_limit: 10,
            ..Default::default()
        };
        let resp = call(&ks1, &info, &addr, batch, |mut c, r| async move {
            c.raw_batch_scan(r).await
        })
        .await
        .unwrap();
        // The first range stops at the second's start: TiKV's meaning of its empty end.
        assert_eq!(keys_of(&resp.kvs), keys(&["a", "b", "c"]));

        // Keyspace 2 sees none of it.
        let info2 = ks2
            .region_source(pd.clone())
            .get_region(b"a", false)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(info2.region.id, info.region.id);
        let addr2 = mock.store_address(info2.leader.unwrap().store_id).unwrap();
        let resp = call(&ks2, &info2, &addr2, scan(false), |mut c, r| async move {
            c.raw_scan(r).await
        })
        .await
        .unwrap();
        assert!(resp.kvs.is_empty());

        // Keyspace 2's key sent to keyspace 1's region is refused: it is out of the region.
        let get = kvrpcpb::RawGetRequest {
            key: b(b"a"),
            ..Default::default()
        };
        let resp = call(&ks2, &info, &addr, get, |mut c, r| async move {
            c.raw_get(r).await
        })
        .await
        .unwrap();
        assert!(resp.error.contains("is out of"), "{resp:?}");
    }
}
