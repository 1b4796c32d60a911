//! Wire-compatibility tests: a sample of messages is encoded with prost and compared, byte for
//! byte, with encodings written out here from kvproto's field numbers and wire types. A field
//! that is renumbered or given another type in `proto/` changes the bytes and fails these tests.
//!
//! Each expected encoding is built with the tiny encoder below, which knows nothing of prost:
//! `field(n, ...)` spells the tag `(n << 3) | wire_type` and the payload the way the protobuf
//! encoding spec defines them. Every test also decodes the hand-made bytes with prost and checks
//! it gets the same message back, which does not depend on the order fields are written in.

// Test code: an unwrap that fails is a failed test (the workspace lints deny them elsewhere).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use prost::Message;
use tikv_proto::{errorpb, kvrpcpb, meta_storagepb, metapb, pdpb, tikvpb, tsopb};

/// Protobuf base-128 varint.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

const VARINT: u64 = 0;
const LEN: u64 = 2;

/// A varint-typed field (uint64, uint32, int64 >= 0, bool, enum).
fn uint(field: u64, v: u64) -> Vec<u8> {
    let mut out = varint((field << 3) | VARINT);
    out.extend(varint(v));
    out
}

/// A length-delimited field (bytes, string, embedded message, packed repeated scalars).
fn len(field: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = varint((field << 3) | LEN);
    out.extend(varint(payload.len() as u64));
    out.extend_from_slice(payload);
    out
}

/// A packed repeated varint field.
fn packed(field: u64, values: &[u64]) -> Vec<u8> {
    let payload: Vec<u8> = values.iter().flat_map(|v| varint(*v)).collect();
    len(field, &payload)
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Asserts prost encodes `msg` to exactly `expected`, and decodes `expected` back to `msg`.
fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(msg: &M, expected: &[u8]) {
    assert_eq!(
        msg.encode_to_vec(),
        expected,
        "prost encoding differs from kvproto's layout"
    );
    let decoded = M::decode(expected).expect("hand-made bytes must decode");
    assert_eq!(
        &decoded, msg,
        "decoding the hand-made bytes gave another message"
    );
}

fn epoch_bytes() -> Vec<u8> {
    // metapb.RegionEpoch: conf_ver = 1, version = 2.
    cat(&[uint(1, 5), uint(2, 9)])
}

fn peer_bytes(id: u64, store_id: u64, role: u64) -> Vec<u8> {
    // metapb.Peer: id = 1, store_id = 2, role = 3 (PeerRole).
    let mut parts = vec![uint(1, id), uint(2, store_id)];
    if role != 0 {
        parts.push(uint(3, role));
    }
    cat(&parts)
}

fn sample_peer(id: u64, store_id: u64, role: metapb::PeerRole) -> metapb::Peer {
    metapb::Peer {
        id,
        store_id,
        role: role as i32,
        ..Default::default()
    }
}

fn sample_region() -> metapb::Region {
    metapb::Region {
        id: 42,
        start_key: Bytes::from_static(b"a"),
        end_key: Bytes::from_static(b"z"),
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 5,
            version: 9,
        }),
        peers: vec![
            sample_peer(7, 1, metapb::PeerRole::Voter),
            sample_peer(8, 2, metapb::PeerRole::Learner),
        ],
        ..Default::default()
    }
}

fn region_bytes() -> Vec<u8> {
    // metapb.Region: id = 1, start_key = 2, end_key = 3, region_epoch = 4, peers = 5.
    cat(&[
        uint(1, 42),
        len(2, b"a"),
        len(3, b"z"),
        len(4, &epoch_bytes()),
        len(5, &peer_bytes(7, 1, 0)),
        // PeerRole::Learner = 1.
        len(5, &peer_bytes(8, 2, 1)),
    ])
}

#[test]
fn metapb_region_with_epoch_and_peers() {
    assert_wire(&sample_region(), &region_bytes());
}

fn sample_context() -> kvrpcpb::Context {
    kvrpcpb::Context {
        region_id: 42,
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 5,
            version: 9,
        }),
        peer: Some(sample_peer(7, 1, metapb::PeerRole::Voter)),
        priority: kvrpcpb::CommandPri::High as i32,
        isolation_level: kvrpcpb::IsolationLevel::Rc as i32,
        not_fill_cache: true,
        resolved_locks: vec![100, 300],
        resource_group_tag: Bytes::from_static(b"tag"),
        api_version: kvrpcpb::ApiVersion::V2 as i32,
        request_source: "internal_gc".to_owned(),
        txn_source: 3,
        busy_threshold_ms: 50,
        cluster_id: 7,
        keyspace: Some(kvrpcpb::context::Keyspace::KeyspaceId(9)),
        ..Default::default()
    }
}

fn context_bytes() -> Vec<u8> {
    cat(&[
        uint(1, 42),                  // region_id
        len(2, &epoch_bytes()),       // region_epoch
        len(3, &peer_bytes(7, 1, 0)), // peer
        uint(6, 2),                   // priority: CommandPri::High = 2
        uint(7, 1),                   // isolation_level: IsolationLevel::RC = 1
        uint(8, 1),                   // not_fill_cache
        packed(13, &[100, 300]),      // resolved_locks (packed, proto3 default)
        len(18, b"tag"),              // resource_group_tag
        uint(21, 2),                  // api_version: APIVersion::V2 = 2
        len(24, b"internal_gc"),      // request_source
        uint(25, 3),                  // txn_source
        uint(27, 50),                 // busy_threshold_ms
        uint(32, 9),                  // keyspace_id (oneof keyspace)
        uint(35, 7),                  // cluster_id
    ])
}

#[test]
fn kvrpcpb_context_with_several_fields() {
    assert_wire(&sample_context(), &context_bytes());
}

#[test]
fn kvrpcpb_prewrite_with_mutations() {
    let msg = kvrpcpb::PrewriteRequest {
        context: Some(sample_context()),
        mutations: vec![
            kvrpcpb::Mutation {
                op: kvrpcpb::Op::Put as i32,
                key: Bytes::from_static(b"k1"),
                value: Bytes::from_static(b"v1"),
                assertion: kvrpcpb::Assertion::NotExist as i32,
            },
            kvrpcpb::Mutation {
                op: kvrpcpb::Op::Del as i32,
                key: Bytes::from_static(b"k2"),
                ..Default::default()
            },
        ],
        primary_lock: Bytes::from_static(b"k1"),
        start_version: 400,
        lock_ttl: 3000,
        txn_size: 2,
        min_commit_ts: 401,
        use_async_commit: true,
        secondaries: vec![Bytes::from_static(b"k2")],
        max_commit_ts: 900,
        assertion_level: kvrpcpb::AssertionLevel::Strict as i32,
        ..Default::default()
    };
    let expected = cat(&[
        len(1, &context_bytes()),
        // Mutation: op = 1 (Put = 0 is the default and omitted), key = 2, value = 3,
        // assertion = 4 (NotExist = 2).
        len(2, &cat(&[len(2, b"k1"), len(3, b"v1"), uint(4, 2)])),
        // Op::Del = 1.
        len(2, &cat(&[uint(1, 1), len(2, b"k2")])),
        len(3, b"k1"),  // primary_lock
        uint(4, 400),   // start_version
        uint(5, 3000),  // lock_ttl
        uint(8, 2),     // txn_size
        uint(10, 401),  // min_commit_ts
        uint(11, 1),    // use_async_commit
        len(12, b"k2"), // secondaries
        uint(14, 900),  // max_commit_ts
        uint(15, 2),    // assertion_level: AssertionLevel::Strict = 2
    ]);
    assert_wire(&msg, &expected);
}

#[test]
fn tikvpb_batch_commands_with_two_requests() {
    use tikvpb::batch_commands_request::{Request, request::Cmd};
    let msg = tikvpb::BatchCommandsRequest {
        requests: vec![
            Request {
                cmd: Some(Cmd::Get(kvrpcpb::GetRequest {
                    key: Bytes::from_static(b"k"),
                    version: 77,
                    ..Default::default()
                })),
            },
            Request {
                cmd: Some(Cmd::RawPut(kvrpcpb::RawPutRequest {
                    key: Bytes::from_static(b"rk"),
                    value: Bytes::from_static(b"rv"),
                    cf: "default".to_owned(),
                    ttl: 10,
                    for_cas: true,
                    ..Default::default()
                })),
            },
        ],
        request_ids: vec![1, 2],
        client_send_time_ns: 1_000,
    };
    // GetRequest: key = 2, version = 3. Arm Get = 1 of oneof cmd.
    let get = cat(&[len(2, b"k"), uint(3, 77)]);
    // RawPutRequest: key = 2, value = 3, cf = 4, ttl = 5, for_cas = 6. Arm RawPut = 15.
    let raw_put = cat(&[
        len(2, b"rk"),
        len(3, b"rv"),
        len(4, b"default"),
        uint(5, 10),
        uint(6, 1),
    ]);
    let expected = cat(&[
        len(1, &len(1, &get)),
        len(1, &len(15, &raw_put)),
        packed(2, &[1, 2]), // request_ids
        uint(3, 1_000),     // client_send_time_ns
    ]);
    assert_wire(&msg, &expected);
}

#[test]
fn tikvpb_batch_commands_response_arms_and_feedback() {
    use tikvpb::batch_commands_response::{Response, response::Cmd};
    let msg = tikvpb::BatchCommandsResponse {
        responses: vec![Response {
            cmd: Some(Cmd::Empty(tikvpb::BatchCommandsEmptyResponse {
                test_id: 5,
            })),
        }],
        request_ids: vec![9],
        transport_layer_load: 3,
        health_feedback: Some(kvrpcpb::HealthFeedback {
            store_id: 1,
            feedback_seq_no: 2,
            slow_score: 1,
        }),
        tikv_send_time_ns: 0,
    };
    // The Empty arm is field 255: its tag needs two varint bytes.
    let expected = cat(&[
        len(1, &len(255, &uint(1, 5))),
        packed(2, &[9]),
        uint(3, 3),
        // HealthFeedback: store_id = 1, feedback_seq_no = 2, slow_score = 3.
        len(4, &cat(&[uint(1, 1), uint(2, 2), uint(3, 1)])),
    ]);
    assert_wire(&msg, &expected);
}

#[test]
fn pdpb_tso_response() {
    let msg = pdpb::TsoResponse {
        header: Some(pdpb::ResponseHeader {
            cluster_id: 0x1234,
            error: None,
        }),
        count: 10,
        timestamp: Some(pdpb::Timestamp {
            physical: 1_700_000_000_000,
            logical: 42,
            suffix_bits: 0,
        }),
    };
    let expected = cat(&[
        len(1, &uint(1, 0x1234)),
        uint(2, 10),
        len(3, &cat(&[uint(1, 1_700_000_000_000), uint(2, 42)])),
    ]);
    assert_wire(&msg, &expected);

    // The same bytes spelled out literally, as a check on the tiny encoder itself.
    let literal: &[u8] = &[
        0x0a, 0x03, 0x08, 0xb4, 0x24, // header { cluster_id: 0x1234 }
        0x10, 0x0a, // count: 10
        0x1a, 0x09, 0x08, 0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31, 0x10, 0x2a, // timestamp
    ];
    assert_eq!(expected, literal);
}

#[test]
fn errorpb_not_leader_and_epoch_not_match() {
    let not_leader = errorpb::Error {
        message: "peer is not leader".to_owned(),
        not_leader: Some(errorpb::NotLeader {
            region_id: 42,
            leader: Some(sample_peer(8, 2, metapb::PeerRole::Voter)),
        }),
        ..Default::default()
    };
    let expected = cat(&[
        len(1, b"peer is not leader"),
        // NotLeader: region_id = 1, leader = 2.
        len(2, &cat(&[uint(1, 42), len(2, &peer_bytes(8, 2, 0))])),
    ]);
    assert_wire(&not_leader, &expected);

    let epoch = errorpb::Error {
        message: "epoch not match".to_owned(),
        epoch_not_match: Some(errorpb::EpochNotMatch {
            current_regions: vec![sample_region()],
        }),
        ..Default::default()
    };
    let expected = cat(&[
        len(1, b"epoch not match"),
        // epoch_not_match = 5; EpochNotMatch.current_regions = 1.
        len(5, &len(1, &region_bytes())),
    ]);
    assert_wire(&epoch, &expected);
}

#[test]
fn errorpb_variant_field_numbers() {
    // Each variant alone, empty, is `tag(n, LEN) 0x00`: this pins all 21 variant numbers.
    let cases: Vec<(errorpb::Error, u64)> = vec![
        (
            errorpb::Error {
                region_not_found: Some(Default::default()),
                ..Default::default()
            },
            3,
        ),
        (
            errorpb::Error {
                key_not_in_region: Some(Default::default()),
                ..Default::default()
            },
            4,
        ),
        (
            errorpb::Error {
                server_is_busy: Some(Default::default()),
                ..Default::default()
            },
            6,
        ),
        (
            errorpb::Error {
                stale_command: Some(Default::default()),
                ..Default::default()
            },
            7,
        ),
        (
            errorpb::Error {
                store_not_match: Some(Default::default()),
                ..Default::default()
            },
            8,
        ),
        (
            errorpb::Error {
                raft_entry_too_large: Some(Default::default()),
                ..Default::default()
            },
            9,
        ),
        (
            errorpb::Error {
                max_timestamp_not_synced: Some(Default::default()),
                ..Default::default()
            },
            10,
        ),
        (
            errorpb::Error {
                read_index_not_ready: Some(Default::default()),
                ..Default::default()
            },
            11,
        ),
        (
            errorpb::Error {
                proposal_in_merging_mode: Some(Default::default()),
                ..Default::default()
            },
            12,
        ),
        (
            errorpb::Error {
                data_is_not_ready: Some(Default::default()),
                ..Default::default()
            },
            13,
        ),
        (
            errorpb::Error {
                region_not_initialized: Some(Default::default()),
                ..Default::default()
            },
            14,
        ),
        (
            errorpb::Error {
                disk_full: Some(Default::default()),
                ..Default::default()
            },
            15,
        ),
        (
            errorpb::Error {
                recovery_in_progress: Some(Default::default()),
                ..Default::default()
            },
            16,
        ),
        (
            errorpb::Error {
                flashback_in_progress: Some(Default::default()),
                ..Default::default()
            },
            17,
        ),
        (
            errorpb::Error {
                flashback_not_prepared: Some(Default::default()),
                ..Default::default()
            },
            18,
        ),
        (
            errorpb::Error {
                is_witness: Some(Default::default()),
                ..Default::default()
            },
            19,
        ),
        (
            errorpb::Error {
                mismatch_peer_id: Some(Default::default()),
                ..Default::default()
            },
            20,
        ),
        (
            errorpb::Error {
                bucket_version_not_match: Some(Default::default()),
                ..Default::default()
            },
            21,
        ),
        (
            errorpb::Error {
                undetermined_result: Some(Default::default()),
                ..Default::default()
            },
            22,
        ),
    ];
    for (msg, field) in cases {
        assert_wire(&msg, &len(field, &[]));
    }
}

#[test]
fn tsopb_tso_request_and_find_group() {
    let request = tsopb::TsoRequest {
        header: Some(tsopb::RequestHeader {
            cluster_id: 7,
            sender_id: 0,
            keyspace: Some(tsopb::request_header::Keyspace::KeyspaceId(5)),
            keyspace_group_id: 2,
            callee_id: String::new(),
        }),
        count: 3,
        dc_location: String::new(),
    };
    let header = cat(&[uint(1, 7), uint(3, 5), uint(4, 2)]);
    assert_wire(&request, &cat(&[len(1, &header), uint(2, 3)]));

    let response = tsopb::FindGroupByKeyspaceIdResponse {
        header: Some(tsopb::ResponseHeader {
            cluster_id: 7,
            error: None,
            keyspace: None,
            keyspace_group_id: 2,
        }),
        keyspace_group: Some(tsopb::KeyspaceGroup {
            id: 2,
            user_kind: "basic".to_owned(),
            split_state: None,
            members: vec![tsopb::KeyspaceGroupMember {
                address: "a".to_owned(),
                is_primary: true,
            }],
        }),
        mod_revision: 9,
    };
    let member = cat(&[len(1, b"a"), uint(2, 1)]);
    let group = cat(&[uint(1, 2), len(2, b"basic"), len(4, &member)]);
    let header = cat(&[uint(1, 7), uint(4, 2)]);
    assert_wire(
        &response,
        &cat(&[len(1, &header), len(2, &group), uint(3, 9)]),
    );
}

#[test]
fn meta_storage_prefix_get() {
    let request = meta_storagepb::GetRequest {
        header: Some(meta_storagepb::RequestHeader {
            cluster_id: 7,
            source: "c".into(),
        }),
        key: Bytes::from_static(b"/ms/7/router/registry/"),
        range_end: Bytes::from_static(b"/ms/7/router/registry0"),
        limit: 0,
        revision: 0,
    };
    let header = cat(&[uint(1, 7), len(2, b"c")]);
    assert_wire(
        &request,
        &cat(&[
            len(1, &header),
            len(2, b"/ms/7/router/registry/"),
            len(3, b"/ms/7/router/registry0"),
        ]),
    );
    let response = meta_storagepb::GetResponse {
        header: Some(meta_storagepb::ResponseHeader {
            cluster_id: 7,
            error: None,
            revision: 9,
        }),
        kvs: vec![meta_storagepb::KeyValue {
            key: Bytes::from_static(b"k"),
            create_revision: 2,
            mod_revision: 3,
            version: 1,
            value: Bytes::from_static(b"v"),
            lease: 0,
        }],
        more: false,
        count: 1,
    };
    let kv = cat(&[
        len(1, b"k"),
        uint(2, 2),
        uint(3, 3),
        uint(4, 1),
        len(5, b"v"),
    ]);
    assert_wire(
        &response,
        &cat(&[
            len(1, &cat(&[uint(1, 7), uint(3, 9)])),
            len(2, &kv),
            uint(4, 1),
        ]),
    );
}
