//! Tests of the API codec: the wire and route forms of every mode, keyspace edges, isolation
//! between keyspaces, and routing over a region cache in stored keys against `tikv-mock`.
//!
//! Ported from client-go `internal/apicodec/codec_v2_test.go` where the case still applies
//! (each test names it); the rest are our own.

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use super::*;
use crate::kv::codec::encode_bytes;

// Keyspace 4242 in raw mode (client-go's test keyspace); the keyspace is [PREFIX, END).
const PREFIX: &[u8] = &[b'r', 0, 16, 146];
const END: &[u8] = &[b'r', 0, 16, 147];

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

/// A wire key in the memcomparable form of region boundaries.
fn mem(key: &[u8]) -> Bytes {
    Bytes::from(encode_bytes(key))
}

fn codec() -> ApiCodec {
    ApiCodec::v2(KeyMode::Raw, 4242, "ks").unwrap()
}

fn ks(codec: &ApiCodec) -> &KeyspaceCodec {
    codec.keyspace().unwrap()
}

/// User keys that stress the memcomparable groups: empty, zero bytes, 0xFF bytes, lengths
/// around the 8-byte group size.
fn awkward_keys() -> Vec<Bytes> {
    vec![
        b(b""),
        b(b"\0"),
        b(b"a"),
        b(b"\0\0\0\0\0\0\0"),
        b(b"12345678"),
        b(b"123456789"),
        b(&[0xFF; 8]),
        b(&[0xFF; 17]),
        b(b"k\0\xff\0\xff"),
    ]
}

/// The user key → wire → route → wire → user round trip, and that routes sort as wire keys do
/// (what lets a cache in stored keys answer for wire keys).
fn check_round_trips(codec: &ApiCodec) {
    let mut keys = awkward_keys();
    keys.sort();
    let mut last_route: Option<Bytes> = None;
    for user in &keys {
        let wire = codec.encode_key(user);
        let route = codec
            .route_key(&wire)
            .expect("an encoding codec routes by another form");
        assert_eq!(route, mem(&wire), "{codec:?} {user:?}");
        let back = codec.wire_bound(&route).unwrap();
        assert_eq!(back, wire, "{codec:?} {user:?}");
        assert_eq!(&codec.decode_key(&back).unwrap(), user);
        if let Some(last) = &last_route {
            assert!(
                last < &route,
                "route order differs from key order at {user:?}"
            );
        }
        last_route = Some(route);
    }
    // The unbounded region boundary stays unbounded.
    assert_eq!(codec.wire_bound(&Bytes::new()).unwrap(), Bytes::new());
}

// ----- client-go codec_v2_test.go -------------------------------------------------------------

// TestCodecV2 (its suite setup) and TestGetKeyspace
#[test]
fn keyspace_4242_prefix_and_id() {
    let codec = codec();
    let ks = ks(&codec);
    assert_eq!(ks.prefix(), PREFIX);
    assert_eq!(ks.end_key(), END);
    assert_eq!(ks.id(), 4242);
    assert_eq!(ks.name(), "ks");
    assert_eq!(ks.mode(), KeyMode::Raw);
    assert_eq!(codec.api_version(), kvrpcpb::ApiVersion::V2);
    assert!(!codec.is_identity());
}

// TestEncodeRequest, the key-range cases: an empty end is the keyspace's end.
#[test]
fn encode_key_ranges_fill_the_keyspace_end() {
    let codec = codec();
    let range = |s: &[u8], e: &[u8]| codec.encode_range(&b(s), &b(e));
    assert_eq!(range(b"", b""), (b(PREFIX), b(END)));
    assert_eq!(range(b"", b"z"), (b(PREFIX), p("z")));
    assert_eq!(range(b"a", b""), (p("a"), b(END)));
    assert_eq!(range(b"a", b"z"), (p("a"), p("z")));
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
        assert_eq!((ks.id(), ks.mode()), (id, mode));
    }
}

// ----- route forms, mode by mode ----------------------------------------------------------------

#[test]
fn v1_raw_routes_by_the_wire_key_itself() {
    let codec = ApiCodec::v1(KeyMode::Raw);
    assert!(codec.is_identity());
    assert_eq!(codec.api_version(), kvrpcpb::ApiVersion::V1);
    for user in awkward_keys() {
        let wire = codec.encode_key(&user);
        assert_eq!(wire, user);
        assert_eq!(codec.route_key(&wire), None, "no copy: the wire key routes");
        assert_eq!(codec.decode_key(&wire).unwrap(), user);
    }
    assert_eq!(
        codec.encode_range(&b(b"a"), &Bytes::new()),
        (b(b"a"), Bytes::new())
    );
    // Region boundaries are raw keys: anything goes, nothing is decoded.
    let odd = b(b"not memcomparable");
    assert_eq!(codec.wire_bound(&odd).unwrap(), odd);
}

// client-go codecV1 in memcomparable mode: `EncodeRegionKey` / `DecodeRegionKey`.
#[test]
fn v1_txn_routes_by_the_memcomparable_key() {
    let codec = ApiCodec::v1(KeyMode::Txn);
    assert!(!codec.is_identity());
    assert_eq!(codec.api_version(), kvrpcpb::ApiVersion::V1);
    // Requests carry the user key; regions hold its encoding.
    assert_eq!(codec.encode_key(&b(b"k")), b(b"k"));
    assert_eq!(codec.route_key(b"k"), Some(mem(b"k")));
    // The empty key routes by its encoding, the smallest encoded key, as client-go does.
    assert_eq!(codec.route_key(b""), Some(mem(b"")));
    assert_eq!(
        codec.encode_range(&Bytes::new(), &Bytes::new()),
        (Bytes::new(), Bytes::new())
    );
    check_round_trips(&codec);
}

#[test]
fn v2_raw_and_txn_route_by_the_prefixed_memcomparable_key() {
    for mode in [KeyMode::Raw, KeyMode::Txn] {
        let codec = ApiCodec::v2(mode, 4242, "ks").unwrap();
        let prefix = *ks(&codec).prefix();
        assert_eq!(prefix[0], mode.prefix_byte());
        let wire = codec.encode_key(&b(b"k"));
        assert_eq!(wire, cat(&prefix, b"k"));
        assert_eq!(codec.route_key(&wire), Some(mem(&cat(&prefix, b"k"))));
        check_round_trips(&codec);
    }
    // Same id, other mode: another key space.
    let raw = ApiCodec::v2(KeyMode::Raw, 7, "ks").unwrap();
    let txn = ApiCodec::v2(KeyMode::Txn, 7, "ks").unwrap();
    assert_ne!(
        raw.route_key(&raw.encode_key(&b(b"k"))),
        txn.route_key(&txn.encode_key(&b(b"k")))
    );
}

#[test]
fn v2_keys_at_the_keyspace_edges_route_inside_it() {
    // The last keyspace: its end is the next mode byte.
    let last = ApiCodec::v2(KeyMode::Raw, MAX_KEYSPACE_ID, "last").unwrap();
    let (start, end) = last.encode_range(&b(b"a"), &Bytes::new());
    assert_eq!((&start, &end), (&b(b"r\xff\xff\xffa"), &b(b"s\0\0\0")));
    // The keyspace's end routes to the first region key past every key of the keyspace, and
    // comes back as the same wire key from a region boundary.
    let end_route = last.route_key(&end).unwrap();
    assert_eq!(end_route, mem(b"s\0\0\0"));
    assert_eq!(last.wire_bound(&end_route).unwrap(), end);
    let high = last.route_key(&last.encode_key(&b(&[0xFF; 32]))).unwrap();
    assert!(last.route_key(&start).unwrap() < high && high < end_route);
    // A region boundary beyond the keyspace decodes to a wire key past its end, which the
    // callers' clamp to the encoded range turns into the range's end.
    let beyond = last.wire_bound(&mem(b"s\0\0\0zz")).unwrap();
    assert!(beyond > end);
    assert!(last.decode_key(&beyond).is_err());
    let last_txn = ApiCodec::v2(KeyMode::Txn, MAX_KEYSPACE_ID, "last").unwrap();
    assert_eq!(ks(&last_txn).end_key(), b"y\0\0\0");

    // Keyspace 0, the first one: its first key is the prefix itself.
    let first = ApiCodec::v2(KeyMode::Txn, 0, "DEFAULT").unwrap();
    let (start, end) = first.encode_range(&Bytes::new(), &Bytes::new());
    assert_eq!((&start, &end), (&b(b"x\0\0\0"), &b(b"x\0\0\x01")));
    assert_eq!(first.route_key(&start), Some(mem(b"x\0\0\0")));
    assert_eq!(first.decode_key(&b(b"x\0\0\0k")).unwrap(), b(b"k"));
    assert!(first.decode_key(&b(b"x\0\0\x01k")).is_err());
}

// client-go DecodeRegionRange: a region reaching outside the keyspace is clamped to it.
#[test]
fn region_bounds_are_clamped_to_the_keyspace_in_user_form() {
    let codec = codec();
    let end = Bytes::copy_from_slice(ks(&codec).end_key());
    // Inside on both sides.
    assert_eq!(codec.user_bounds(&p("a"), &p("m")), (b(b"a"), b(b"m")));
    // Starting in the keyspace before (or unbounded), ending at or after the keyspace's end.
    let before = cat(&[b'r', 0, 0x10, 0x91], b"z");
    assert_eq!(
        codec.user_bounds(&before, &end),
        (Bytes::new(), Bytes::new())
    );
    assert_eq!(
        codec.user_bounds(&Bytes::new(), &Bytes::new()),
        (Bytes::new(), Bytes::new())
    );
    assert_eq!(
        codec.user_bounds(&p("k"), &b(b"x")),
        (b(b"k"), Bytes::new())
    );
    // API V1 bounds are the user's keys already.
    let v1 = ApiCodec::v1(KeyMode::Raw);
    assert_eq!(v1.user_bounds(&b(b"a"), &b(b"b")), (b(b"a"), b(b"b")));
}

#[test]
fn keys_of_another_keyspace_never_decode() {
    let a = ApiCodec::v2(KeyMode::Raw, 1, "a").unwrap();
    let b_codec = ApiCodec::v2(KeyMode::Raw, 2, "b").unwrap();
    let a_txn = ApiCodec::v2(KeyMode::Txn, 1, "a").unwrap();
    let key_of_b = b_codec.encode_key(&b(b"k"));
    assert!(matches!(a.decode_key(&key_of_b), Err(Error::Codec { .. })));
    assert!(a_txn.decode_key(&a.encode_key(&b(b"k"))).is_err());
    assert_eq!(b_codec.decode_key(&key_of_b).unwrap(), b(b"k"));
    // TiKV leaves optional key fields empty: they stay empty.
    assert_eq!(a.decode_key(&Bytes::new()).unwrap(), Bytes::new());
}

#[test]
fn malformed_region_keys_are_codec_errors() {
    let bad = b(b"not memcomparable");
    for codec in [codec(), ApiCodec::v1(KeyMode::Txn)] {
        assert!(matches!(codec.wire_bound(&bad), Err(Error::Codec { .. })));
    }
    // Bytes after a complete encoding are ignored, as client-go does.
    let mut trailing = encode_bytes(&p("k"));
    trailing.extend_from_slice(b"\x01\x02");
    assert_eq!(codec().wire_bound(&Bytes::from(trailing)).unwrap(), p("k"));
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

/// Routing by the route form over a region cache filled from PD in stored keys, as the clients
/// do over the shared `Cluster` cache.
mod mock {
    use std::sync::Arc;

    use bytes::Bytes;
    use tikv_mock::MockCluster;

    use super::super::*;
    use super::{b, cat, ks};
    use crate::Config;
    use crate::locate::{KeyLocation, RegionCache};
    use crate::pd::{PdClient, RegionSource};

    async fn cache_of(mock: &MockCluster) -> RegionCache {
        let pd = PdClient::connect(mock.pd_endpoints(), &Config::default())
            .await
            .unwrap();
        let source: Arc<dyn RegionSource> = Arc::new(pd);
        RegionCache::new(source, &Config::default())
    }

    /// The region of a user key, located as a client does.
    async fn locate(cache: &RegionCache, codec: &ApiCodec, user: &[u8]) -> KeyLocation {
        let wire = codec.encode_key(&b(user));
        let route = codec.route_key(&wire);
        cache
            .locate_key(route.as_deref().unwrap_or(&wire))
            .await
            .unwrap()
    }

    /// A location's boundaries as wire keys.
    fn wire_range(codec: &ApiCodec, loc: &KeyLocation) -> (Bytes, Bytes) {
        (
            codec.wire_bound(loc.start_key().as_bytes_ref()).unwrap(),
            codec.wire_bound(loc.end_key().as_bytes_ref()).unwrap(),
        )
    }

    #[tokio::test]
    async fn v1_txn_keys_find_their_memcomparable_regions() {
        let mock = MockCluster::builder().start().await.unwrap();
        mock.split_txn(["m"]).unwrap();
        let cache = cache_of(&mock).await;
        let codec = ApiCodec::v1(KeyMode::Txn);

        let left = locate(&cache, &codec, b"a").await;
        assert_eq!(wire_range(&codec, &left), (Bytes::new(), b(b"m")));
        // "l\xff..." sorts before "m" as a key and as an encoding.
        let also_left = locate(&cache, &codec, b"l\xff\xff\xff\xff\xff\xff\xff\xff").await;
        assert_eq!(also_left.region_id(), left.region_id());
        let right = locate(&cache, &codec, b"m").await;
        assert_ne!(right.region_id(), left.region_id());
        assert_eq!(wire_range(&codec, &right), (b(b"m"), Bytes::new()));
        // The empty key routes to the first region.
        assert_eq!(
            locate(&cache, &codec, b"").await.region_id(),
            left.region_id()
        );
    }

    #[tokio::test]
    async fn v2_keys_find_their_regions_inside_and_across_keyspaces() {
        let mock = MockCluster::builder()
            .api_version(tikv_mock::ApiVersion::V2)
            .keyspace("ks1")
            .keyspace("ks2")
            .start()
            .await
            .unwrap();
        let cache = cache_of(&mock).await;
        let pd = PdClient::connect(mock.pd_endpoints(), &Config::default())
            .await
            .unwrap();
        let codec_of = async |name: &str| {
            let meta = pd.load_keyspace(name).await.unwrap();
            ApiCodec::for_keyspace(KeyMode::Raw, &meta).unwrap()
        };
        let ks1 = codec_of("ks1").await;
        let ks2 = codec_of("ks2").await;
        let prefix = *ks(&ks1).prefix();
        mock.split_raw([cat(&prefix, b"m")]).unwrap();

        let left = locate(&cache, &ks1, b"k").await;
        let (start, end) = wire_range(&ks1, &left);
        assert_eq!(end, cat(&prefix, b"m"));
        assert!(start.as_ref() <= prefix.as_slice());
        let right = locate(&cache, &ks1, b"\xff\xff").await;
        assert_ne!(right.region_id(), left.region_id());
        assert_eq!(wire_range(&ks1, &right).0, cat(&prefix, b"m"));
        // The last key of ks1 and the first of ks2 share no region boundary inside ks1: the
        // region's end, back in wire form, is at or past ks1's end.
        let (_, right_end) = wire_range(&ks1, &right);
        let (_, ks1_end) = ks1.encode_range(&Bytes::new(), &Bytes::new());
        assert!(right_end.is_empty() || right_end >= ks1_end);
        // A key of ks2 is never in ks1's split-off left region.
        let other = locate(&cache, &ks2, b"k").await;
        assert_ne!(other.region_id(), left.region_id());
    }
}
