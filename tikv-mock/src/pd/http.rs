//! The subset of PD's HTTP API clients use, on the PD port (HTTP/1.1 beside gRPC):
//! `GET /pd/api/v1/regions`, `GET /pd/api/v1/stores` and `GET /pd/api/v1/min-resolved-ts`.
//!
//! Who calls it: client-go's PD HTTP client (`GetMinResolvedTSByStoresIDs` for stale reads),
//! tools and tests; [`super::routes`] merges this router with the gRPC services.
//!
//! JSON shapes follow tikv/pd `pkg/response/{region,store}.go` (field names, `omitempty`s,
//! upper-case hex region keys) and `server/api/{region,store,min_resolved_ts}.go` (query
//! parameters and error answers: a JSON string with the Go error text). The regions endpoint
//! takes no limit in PD and lists every region; the mock lists them in key order.
//!
//! Min resolved ts: a running store with region leaders reports a freshly allocated TSO, as a
//! TiKV whose resolved-ts worker just advanced with no lock pending; like TiKV's worker it also
//! lifts the store's max_ts to that timestamp. A stopped store keeps reporting its last value;
//! stores without leaders, removed stores and unknown ids report `u64::MAX`, as in PD. The mock
//! does not hold the value back for locks pending in its MVCC engine.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use tikv_proto::metapb;

use super::service::reported_store;
use super::{go_duration, rfc3339};
use crate::Shared;
use crate::cluster::{ClusterState, StoreState};

/// PD's default `min-resolved-ts-persistence-interval`.
const MIN_RESOLVED_TS_PERSIST_INTERVAL: &str = "1s";

/// The HTTP routes of the PD address.
pub(super) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/pd/api/v1/regions", get(regions))
        .route("/pd/api/v1/stores", get(stores))
        .route("/pd/api/v1/min-resolved-ts", get(min_resolved_ts))
        .with_state(shared)
}

type Params = Query<Vec<(String, String)>>;

/// A PD HTTP error: a JSON string body.
fn error(status: StatusCode, message: String) -> Response {
    (status, Json(Value::String(message))).into_response()
}

/// Go's `strconv` syntax error text.
fn parse_error(func: &str, input: &str) -> String {
    format!("strconv.{func}: parsing {input:?}: invalid syntax")
}

/// Region keys as PD prints them: upper-case hex of the storage bytes.
fn hex_key(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02X}")).collect()
}

/// PD's `MetaPeer` JSON: the role name always, every other field only when non-zero.
fn peer_json(peer: Option<&metapb::Peer>) -> Value {
    let mut m = Map::new();
    let Some(peer) = peer else {
        m.insert("role_name".to_owned(), json!(""));
        return Value::Object(m);
    };
    let role = metapb::PeerRole::try_from(peer.role).unwrap_or(metapb::PeerRole::Voter);
    m.insert("role_name".to_owned(), json!(role.as_str_name()));
    if role == metapb::PeerRole::Learner {
        m.insert("is_learner".to_owned(), json!(true));
    }
    if peer.id != 0 {
        m.insert("id".to_owned(), json!(peer.id));
    }
    if peer.store_id != 0 {
        m.insert("store_id".to_owned(), json!(peer.store_id));
    }
    if peer.role != 0 {
        m.insert("role".to_owned(), json!(peer.role));
    }
    if peer.is_witness {
        m.insert("is_witness".to_owned(), json!(true));
    }
    Value::Object(m)
}

fn region_json(region: &crate::cluster::RegionState) -> Value {
    let meta = &region.meta;
    let mut m = Map::new();
    m.insert("id".to_owned(), json!(meta.id));
    m.insert("start_key".to_owned(), json!(hex_key(&meta.start_key)));
    m.insert("end_key".to_owned(), json!(hex_key(&meta.end_key)));
    if let Some(epoch) = meta.region_epoch {
        let mut e = Map::new();
        if epoch.conf_ver != 0 {
            e.insert("conf_ver".to_owned(), json!(epoch.conf_ver));
        }
        if epoch.version != 0 {
            e.insert("version".to_owned(), json!(epoch.version));
        }
        m.insert("epoch".to_owned(), Value::Object(e));
    }
    if !meta.peers.is_empty() {
        let peers: Vec<Value> = meta.peers.iter().map(|p| peer_json(Some(p))).collect();
        m.insert("peers".to_owned(), Value::Array(peers));
    }
    m.insert("leader".to_owned(), peer_json(region.leader_peer()));
    for field in [
        "cpu_usage",
        "written_bytes",
        "read_bytes",
        "written_keys",
        "read_keys",
        "approximate_size",
        "approximate_keys",
        "approximate_kv_size",
        "approximate_columnar_kv_size",
    ] {
        m.insert(field.to_owned(), json!(0));
    }
    Value::Object(m)
}

async fn regions(State(shared): State<Arc<Shared>>) -> Response {
    let regions: Vec<Value> = {
        let state = shared.lock();
        state.all_regions().map(region_json).collect()
    };
    Json(json!({ "count": regions.len(), "regions": regions })).into_response()
}

/// `metapb.Store` as Go's `encoding/json` writes it (every field `omitempty`), plus PD's
/// `state_name`.
fn store_meta_json(meta: &metapb::Store, state_name: &str) -> Value {
    let mut m = Map::new();
    let mut put = |key: &str, value: Value, empty: bool| {
        if !empty {
            m.insert(key.to_owned(), value);
        }
    };
    put("id", json!(meta.id), meta.id == 0);
    put("address", json!(meta.address), meta.address.is_empty());
    put("state", json!(meta.state), meta.state == 0);
    let labels: Vec<Value> = meta
        .labels
        .iter()
        .map(|l| json!({ "key": l.key, "value": l.value }))
        .collect();
    put("labels", Value::Array(labels), meta.labels.is_empty());
    put("version", json!(meta.version), meta.version.is_empty());
    put(
        "peer_address",
        json!(meta.peer_address),
        meta.peer_address.is_empty(),
    );
    put(
        "status_address",
        json!(meta.status_address),
        meta.status_address.is_empty(),
    );
    put("git_hash", json!(meta.git_hash), meta.git_hash.is_empty());
    put(
        "start_timestamp",
        json!(meta.start_timestamp),
        meta.start_timestamp == 0,
    );
    put(
        "deploy_path",
        json!(meta.deploy_path),
        meta.deploy_path.is_empty(),
    );
    put(
        "last_heartbeat",
        json!(meta.last_heartbeat),
        meta.last_heartbeat == 0,
    );
    put(
        "physically_destroyed",
        json!(true),
        !meta.physically_destroyed,
    );
    put("node_state", json!(meta.node_state), meta.node_state == 0);
    m.insert("state_name".to_owned(), json!(state_name));
    Value::Object(m)
}

/// PD's `StoreInfo` JSON for one store.
fn store_json(state: &ClusterState, store: &StoreState) -> Value {
    let id = store.meta.id;
    let meta = reported_store(state, store);
    let store_state = metapb::StoreState::try_from(meta.state).unwrap_or(metapb::StoreState::Up);
    // PD calls an Up store that stopped sending heartbeats "Disconnected" (after 20 s; "Down"
    // after 30 min); a stopped mock store is reported as disconnected at once.
    let state_name = if store_state == metapb::StoreState::Up && !store.up {
        "Disconnected"
    } else {
        store_state.as_str_name()
    };
    let leader_count = state
        .all_regions()
        .filter(|r| r.leader_peer().is_some_and(|p| p.store_id == id))
        .count();
    let region_count = state
        .all_regions()
        .filter(|r| r.peer_on_store(id).is_some())
        .count();
    let learner_count = state
        .all_regions()
        .filter(|r| {
            r.peer_on_store(id)
                .is_some_and(|p| p.role == metapb::PeerRole::Learner as i32)
        })
        .count();
    let start_ms = u64::try_from(meta.start_timestamp).unwrap_or(0) * 1000;
    let heartbeat_ms = u64::try_from(meta.last_heartbeat).unwrap_or(0) / 1_000_000;
    let mut status = json!({
        "capacity": "0B",
        "available": "0B",
        "used_size": "0B",
        "leader_count": leader_count,
        "leader_weight": 1.0,
        "leader_score": leader_count as f64,
        "leader_size": 0,
        "region_count": region_count,
        "region_weight": 1.0,
        "region_score": region_count as f64,
        "region_size": 0,
        "start_ts": rfc3339(start_ms),
        "last_heartbeat_ts": rfc3339(heartbeat_ms),
    });
    if let Some(obj) = status.as_object_mut() {
        if learner_count > 0 {
            obj.insert("learner_count".to_owned(), json!(learner_count));
        }
        if heartbeat_ms > start_ms {
            obj.insert(
                "uptime".to_owned(),
                json!(go_duration(heartbeat_ms - start_ms)),
            );
        }
    }
    json!({ "store": store_meta_json(&meta, state_name), "status": status })
}

async fn stores(State(shared): State<Arc<Shared>>, Query(params): Params) -> Response {
    // PD filters by `state` (numeric store states, repeatable); Up and Offline by default.
    let mut accepted = Vec::new();
    for (key, value) in &params {
        if key != "state" {
            continue;
        }
        let Ok(n) = value.parse::<i64>() else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                parse_error("Atoi", value),
            );
        };
        match i32::try_from(n)
            .ok()
            .and_then(|n| metapb::StoreState::try_from(n).ok())
        {
            Some(s) => accepted.push(s as i32),
            None => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("unknown StoreState: {n}"),
                );
            }
        }
    }
    if accepted.is_empty() {
        accepted = vec![
            metapb::StoreState::Up as i32,
            metapb::StoreState::Offline as i32,
        ];
    }
    let stores: Vec<Value> = {
        let state = shared.lock();
        state
            .stores
            .values()
            .filter(|s| accepted.contains(&s.meta.state))
            .map(|s| store_json(&state, s))
            .collect()
    };
    Json(json!({ "count": stores.len(), "stores": stores })).into_response()
}

/// The min resolved ts of each requested store (see the module docs), updating what stores
/// last reported.
fn stores_min_resolved_ts(state: &mut ClusterState, ids: &[u64]) -> Vec<(u64, u64)> {
    let now = state.clock.now_ms();
    let fresh = state.tso.next(now);
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        let has_leader = state
            .all_regions()
            .any(|r| r.leader_peer().is_some_and(|p| p.store_id == id));
        let ts = match state.stores.get_mut(&id) {
            Some(store)
                if has_leader && store.meta.node_state != metapb::NodeState::Removed as i32 =>
            {
                if store.up {
                    store.max_ts = store.max_ts.max(fresh);
                    state.pd.store_resolved_ts.insert(id, fresh);
                    fresh
                } else {
                    state.pd.store_resolved_ts.get(&id).copied().unwrap_or(0)
                }
            }
            _ => u64::MAX,
        };
        out.push((id, ts));
    }
    out
}

async fn min_resolved_ts(State(shared): State<Arc<Shared>>, Query(params): Params) -> Response {
    let scope = params
        .iter()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let requested: Option<Vec<u64>> = if scope.is_empty() || scope == "cluster" {
        None
    } else {
        let mut ids = Vec::new();
        for part in scope.split(',') {
            match part.parse::<u64>() {
                Ok(id) => ids.push(id),
                Err(_) => {
                    return error(StatusCode::BAD_REQUEST, parse_error("ParseUint", part));
                }
            }
        }
        Some(ids)
    };
    let (min, per_store) = {
        let mut state = shared.lock();
        let all: Vec<u64> = state.stores.keys().copied().collect();
        let cluster = stores_min_resolved_ts(&mut state, &all);
        let cluster_min = cluster.iter().map(|(_, ts)| *ts).min().unwrap_or(u64::MAX);
        match (&requested, scope.as_str()) {
            (Some(ids), _) => {
                let scoped: Vec<(u64, u64)> = ids
                    .iter()
                    .map(|id| {
                        let ts = cluster
                            .iter()
                            .find(|(s, _)| s == id)
                            .map_or(u64::MAX, |p| p.1);
                        (*id, ts)
                    })
                    .collect();
                let min = scoped.iter().map(|(_, ts)| *ts).min().unwrap_or(u64::MAX);
                (min, Some(scoped))
            }
            (None, "cluster") => (cluster_min, Some(cluster)),
            (None, _) => (cluster_min, None),
        }
    };
    let stores = per_store.map_or(Value::Null, |list| {
        Value::Object(
            list.into_iter()
                .map(|(id, ts)| (id.to_string(), json!(ts)))
                .collect(),
        )
    });
    Json(json!({
        "is_real_time": true,
        "min_resolved_ts": min,
        "persist_interval": MIN_RESOLVED_TS_PERSIST_INTERVAL,
        "stores_min_resolved_ts": stores,
    }))
    .into_response()
}
