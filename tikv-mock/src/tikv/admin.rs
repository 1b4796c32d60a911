//! Store-level commands that are not raw or transactional data access: SplitRegion,
//! UnsafeDestroyRange, GetStoreSafeTS and health feedback.
//!
//! Called by the dispatcher with the cluster state locked. Follows TiKV
//! `src/server/service/kv.rs` (`split_region`, `unsafe_destroy_range`, `get_store_safe_ts`,
//! `HealthFeedbackAttacher`) and raftstore's split validation
//! (`store/util.rs::validate_split_region`, `fsm/apply.rs::validate_batch_split`).

use std::ops::Bound;

use bytes::Bytes;
use tikv_proto::{errorpb, kvrpcpb};

use crate::cluster::ClusterState;
use crate::codec::encode_bytes;

fn message_error(message: String) -> errorpb::Error {
    errorpb::Error {
        message,
        ..Default::default()
    }
}

/// SplitRegion: splits the addressed region at the given keys (raw keys in their storage form
/// when `is_raw_kv`, otherwise memcomparable-encoded transactional keys) and answers every
/// resulting region in key order, plus `left`/`right` when there are exactly two.
///
/// TiKV routes the split to the region's peer by id; the mock validates the context as for any
/// other request (so a wrong store or peer answers StoreNotMatch / MismatchPeerId where TiKV
/// would not look), then checks the keys as raftstore does: at least one, none empty, each in
/// the region, strictly after its start and distinct.
pub(crate) fn split_region(
    state: &mut ClusterState,
    store_id: u64,
    req: kvrpcpb::SplitRegionRequest,
) -> kvrpcpb::SplitRegionResponse {
    let fail = |e: errorpb::Error| kvrpcpb::SplitRegionResponse {
        region_error: Some(e),
        ..Default::default()
    };
    let ctx = req.context.clone().unwrap_or_default();
    let wire_keys: Vec<&Bytes> = if req.split_key.is_empty() {
        req.split_keys.iter().collect()
    } else {
        vec![&req.split_key]
    };
    let mut keys: Vec<Bytes> = wire_keys
        .into_iter()
        .map(|k| {
            if req.is_raw_kv {
                state.raw_storage_key(k)
            } else {
                Bytes::from(encode_bytes(k))
            }
        })
        .collect();
    keys.sort();
    {
        let region = match state.validate(store_id, &ctx) {
            Ok(region) => region,
            Err(e) => return fail(e),
        };
        let peer_id = region.peer_on_store(store_id).map_or(0, |p| p.id);
        let tag = format!("[region {}] {peer_id}", region.id());
        if keys.is_empty() {
            return fail(message_error(format!("{tag} no split key is specified.")));
        }
        for key in &keys {
            if key.is_empty() {
                return fail(message_error(format!(
                    "{tag} split key should not be empty"
                )));
            }
            if let Err(e) = ClusterState::check_key(region, key) {
                return fail(e);
            }
        }
        let mut last = &region.meta.start_key;
        for key in &keys {
            if key <= last {
                let shown: Vec<&[u8]> = keys.iter().map(|k| k.as_ref()).collect();
                return fail(message_error(format!("invalid split request: {shown:?}")));
            }
            last = key;
        }
    }
    match state.split(&keys) {
        Ok(regions) => {
            let (left, right) = match regions.as_slice() {
                [l, r] => (Some(l.clone()), Some(r.clone())),
                _ => (None, None),
            };
            kvrpcpb::SplitRegionResponse {
                left,
                right,
                regions,
                ..Default::default()
            }
        }
        Err(e) => fail(message_error(format!("failed to split: {e}"))),
    }
}

/// UnsafeDestroyRange: deletes every key of the store in `[encode(start), encode(end))`,
/// ignoring regions, as TiKV's GC worker does. The bounds are encoded like transactional keys
/// (TiKV's `Key::from_raw`), so API V2 raw data (also stored encoded) in the range goes too,
/// and so do API V1 raw keys that happen to sort inside the encoded range.
///
/// TiKV asserts that both bounds are non-empty (and crashes otherwise); the mock answers with
/// an error instead.
pub(crate) fn unsafe_destroy_range(
    state: &mut ClusterState,
    req: kvrpcpb::UnsafeDestroyRangeRequest,
) -> kvrpcpb::UnsafeDestroyRangeResponse {
    if req.start_key.is_empty() || req.end_key.is_empty() {
        return kvrpcpb::UnsafeDestroyRangeResponse {
            error: "unsafe destroy range needs a non-empty start key and end key".to_owned(),
            ..Default::default()
        };
    }
    let start = encode_bytes(&req.start_key);
    let end = encode_bytes(&req.end_key);
    state.raw.destroy_range((
        Bound::Included(start.as_slice()),
        Bound::Excluded(end.as_slice()),
    ));
    kvrpcpb::UnsafeDestroyRangeResponse::default()
}

/// GetStoreSafeTS: the mock replicates nothing, so every store is as fresh as the TSO; it
/// answers the last timestamp the TSO allocated. Unlike TiKV's resolved ts this does not wait
/// for in-flight commits.
pub(crate) fn store_safe_ts(
    state: &mut ClusterState,
    _req: kvrpcpb::StoreSafeTsRequest,
) -> kvrpcpb::StoreSafeTsResponse {
    kvrpcpb::StoreSafeTsResponse {
        // With a clock reading of 0, `peek` is exactly the last allocated timestamp.
        safe_ts: state.tso.peek(0),
    }
}

/// The store's health feedback with the next sequence number. Sequence numbers start at the
/// clock's milliseconds, as TiKV's do, so they keep increasing across store restarts.
pub(crate) fn health_feedback(state: &mut ClusterState, store_id: u64) -> kvrpcpb::HealthFeedback {
    let now_ms = state.clock.now_ms();
    let (feedback_seq_no, slow_score) = match state.stores.get_mut(&store_id) {
        Some(store) => {
            if store.feedback_seq == 0 {
                store.feedback_seq = now_ms.max(1);
            }
            let seq = store.feedback_seq;
            store.feedback_seq += 1;
            (seq, store.slow_score)
        }
        // 1 is TiKV's "healthy" slow score.
        None => (0, 1),
    };
    kvrpcpb::HealthFeedback {
        store_id,
        feedback_seq_no,
        slow_score: i32::try_from(slow_score).unwrap_or(i32::MAX),
    }
}
