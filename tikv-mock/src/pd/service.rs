//! `pdpb.PD`: members, TSO, region and store queries, GC states, scatter/split and external
//! timestamps, answered from the cluster state.
//!
//! Who calls it: PD clients (this workspace's client, client-go's PD client, any other) over
//! gRPC; [`super::routes`] registers it.
//!
//! Follows tikv/pd `server/grpc_service.go`, `server/gc_service.go` and
//! `pkg/utils/grpcutil/cluster.go`. Error placement is PD's: business errors go into the
//! response header with gRPC OK; a wrong cluster id is a FAILED_PRECONDITION status; the legacy
//! GC APIs (`UpdateGCSafePoint`, `GetGCSafePoint`, `UpdateServiceGCSafePoint`) and scatter
//! failures return UNKNOWN statuses because PD returns plain Go errors there; TSO failures end
//! the stream. Region boundaries and request keys are storage keys, used as given.
//!
//! Every unary handler goes through [`PdService::handle`], which follows PD's middleware:
//! forwarding to the leader when `pd-forwarded-host` asks for it (the `Tso` stream does the same
//! per message), then the role check (leader only, or region reads a follower may answer with
//! `pd-allow-follower-handle`), then the request itself.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tikv_proto::pdpb::{self, pd_server::Pd};
use tikv_proto::{keyspacepb, metapb};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::gc::{self, GcError, NULL_KEYSPACE_ID};
use super::{
    Access, OPERATOR_STATUS_REMAIN_MS, OperatorRecord, Role, TSO_NOT_LEADER, check_cluster_id,
    check_leader, error_header, fault, follower_role, go_error, handler, members, ok_header,
    region_not_found_header, request_cluster_id, role, route,
};
use crate::Shared;
use crate::cluster::{ClusterState, RegionMap, RegionState};
use crate::fault::Phase;
use crate::tso;

/// Desc of the operator PD creates for a scatter (`AdminScatterOperatorDesc`).
const SCATTER_DESC: &str = "scatter-region";
/// Kind of a scatter operator that moved nothing (`OpAdmin`).
const SCATTER_KIND: &str = "admin";

/// The `pdpb.PD` service.
#[derive(Debug, Clone)]
pub(crate) struct PdService {
    shared: Arc<Shared>,
    /// Which PD member this service answers as.
    member: usize,
}

impl PdService {
    pub(crate) fn new(shared: Arc<Shared>, member: usize) -> Self {
        PdService { shared, member }
    }

    /// The common shape of a unary PD handler that only the leader serves: forwarding, fault
    /// hook, the leader check, then under the lock the cluster id check and `f`, then the
    /// after-apply fault hook.
    async fn unary<T>(
        &self,
        metadata: &MetadataMap,
        command: &'static str,
        requested_cluster_id: u64,
        region_id: Option<u64>,
        keys: &[Bytes],
        f: impl FnOnce(&mut ClusterState) -> Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        self.handle(
            metadata,
            Access::LeaderOnly,
            command,
            requested_cluster_id,
            region_id,
            keys,
            |state, _| f(state),
        )
        .await
    }

    /// Like [`PdService::unary`] for the region reads a follower may serve; `f` learns the role
    /// it answers in.
    #[allow(clippy::too_many_arguments)]
    async fn handle<T>(
        &self,
        metadata: &MetadataMap,
        access: Access,
        command: &'static str,
        requested_cluster_id: u64,
        region_id: Option<u64>,
        keys: &[Bytes],
        f: impl FnOnce(&mut ClusterState, Role) -> Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let route = route(&self.shared, self.member, metadata)?;
        let member = handler(&self.shared, self.member, route)?;
        fault(&self.shared, Phase::Before, command, region_id, keys).await?;
        let role = role(&self.shared, member, access, metadata)?;
        let out = {
            let mut state = self.shared.lock();
            check_cluster_id(requested_cluster_id, state.cluster_id)?;
            state.pd.count_handled(member, command);
            f(&mut state, role)?
        };
        fault(&self.shared, Phase::AfterApply, command, region_id, keys).await?;
        Ok(Response::new(out))
    }

    /// Like [`PdService::unary`] for the RPCs PD serves without checking the cluster id.
    async fn unchecked<T>(
        &self,
        command: &str,
        f: impl FnOnce(&mut ClusterState) -> T,
    ) -> Result<Response<T>, Status> {
        fault(&self.shared, Phase::Before, command, None, &[]).await?;
        let out = f(&mut self.shared.lock());
        fault(&self.shared, Phase::AfterApply, command, None, &[]).await?;
        Ok(Response::new(out))
    }
}

// ----- region and store helpers ---------------------------------------------------------------

/// A region as `GetRegion` returns it: the leader is absent when the region has none.
fn get_region_response(cluster_id: u64, region: Option<&RegionState>) -> pdpb::GetRegionResponse {
    pdpb::GetRegionResponse {
        header: ok_header(cluster_id),
        region: region.map(|r| r.meta.clone()),
        leader: region.and_then(|r| r.leader_peer().copied()),
        ..Default::default()
    }
}

/// A `GetRegion`-style answer in `role`: a follower reports a region it does not have (or
/// everything, with its syncer stopped) as "region not found" instead of an empty answer.
pub(super) fn region_answer(
    cluster_id: u64,
    region: Option<&RegionState>,
    role: Role,
) -> pdpb::GetRegionResponse {
    match (role, region) {
        (Role::Leader, _) | (Role::Follower, Some(_)) => get_region_response(cluster_id, region),
        (Role::Follower, None) | (Role::UnsyncedFollower, _) => pdpb::GetRegionResponse {
            header: region_not_found_header(cluster_id),
            ..Default::default()
        },
    }
}

/// A region as scans return it: a missing leader is an empty peer.
fn scanned_region(region: &RegionState) -> pdpb::Region {
    pdpb::Region {
        region: Some(region.meta.clone()),
        leader: Some(region.leader_peer().copied().unwrap_or_default()),
        ..Default::default()
    }
}

/// `BatchScanRegions`: PD validates that ranges are sorted and do not overlap (a previous range
/// with an unbounded end is not caught, as in PD), merges adjacent ones, and scans each.
fn batch_scan(
    map: &RegionMap,
    ranges: &[pdpb::KeyRange],
    limit: i32,
    contain_all: bool,
) -> Result<Vec<pdpb::Region>, (pdpb::ErrorType, String)> {
    for (i, range) in ranges.iter().enumerate() {
        if i > 0 && range.start_key < ranges[i - 1].end_key {
            return Err((
                pdpb::ErrorType::Unknown,
                "invalid key range, ranges overlapped".to_owned(),
            ));
        }
        if !range.end_key.is_empty() && range.start_key > range.end_key {
            return Err((
                pdpb::ErrorType::Unknown,
                "invalid key range, start key > end key".to_owned(),
            ));
        }
    }
    let mut merged: Vec<(Bytes, Bytes)> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if last.1 == range.start_key => last.1 = range.end_key.clone(),
            _ => merged.push((range.start_key.clone(), range.end_key.clone())),
        }
    }
    let limit = usize::try_from(limit).unwrap_or(0);
    let mut out: Vec<&RegionState> = Vec::new();
    for (start, end) in &merged {
        let mut found = scan_range(map, start, end, limit, contain_all)?;
        if let (Some(last), Some(first)) = (out.last(), found.first())
            && last.id() == first.id()
        {
            found.remove(0);
        }
        out.extend(found);
        if limit > 0 && out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    Ok(out.into_iter().map(scanned_region).collect())
}

/// The regions covering one range, at most `limit` (0: all), detecting holes in the region map
/// as PD's `scanRegion` does (the mock's regions tile the key space, so holes do not occur).
fn scan_range<'a>(
    map: &'a RegionMap,
    start: &[u8],
    end: &[u8],
    limit: usize,
    contain_all: bool,
) -> Result<Vec<&'a RegionState>, (pdpb::ErrorType, String)> {
    let not_adjacent = |msg: String| {
        (
            pdpb::ErrorType::RegionsNotContainAllKeyRange,
            format!("[PD:region:ErrRegionNotAdjacent]{msg}"),
        )
    };
    let mut out = Vec::new();
    let mut last_end: Bytes = Bytes::copy_from_slice(start);
    let mut last_start = Bytes::new();
    for region in map.regions_in_range(start, end, 0) {
        if limit > 0 && out.len() >= limit {
            break;
        }
        let region_start = &region.meta.start_key;
        let hole = !last_end.is_empty() && !region_start.is_empty() && *region_start > last_end;
        if hole && contain_all {
            return Err(not_adjacent(format!(
                "key range[{}, {}) found a hole region between region[{}, {}) and region[{}, \
                 {})",
                hex(start),
                hex(end),
                hex(&last_start),
                hex(&last_end),
                hex(region_start),
                hex(&region.meta.end_key)
            )));
        }
        last_start = region.meta.start_key.clone();
        last_end = region.meta.end_key.clone();
        out.push(region);
    }
    let exceeded = limit > 0 && out.len() >= limit;
    if contain_all && !exceeded && !end.is_empty() && !last_end.is_empty() && *last_end < *end {
        return Err(not_adjacent(format!(
            "key range[{}, {}) found a hole region in the last, the last scanned region is \
             [{}, {}), [{}, {}) is missing",
            hex(start),
            hex(end),
            hex(&last_start),
            hex(&last_end),
            hex(&last_end),
            hex(end)
        )));
    }
    Ok(out)
}

/// Lower-case hex, as Go's `%x`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A store as PD reports it: a running store has just sent a heartbeat.
pub(super) fn reported_store(
    state: &ClusterState,
    store: &crate::cluster::StoreState,
) -> metapb::Store {
    let mut meta = store.meta.clone();
    if store.up {
        meta.last_heartbeat = (state.clock.now_ms() as i64).saturating_mul(1_000_000);
    }
    meta
}

/// `GetStore`: the store as PD reports it, or PD's "not found" header error.
pub(super) fn get_store_answer(state: &ClusterState, store_id: u64) -> pdpb::GetStoreResponse {
    let Some(store) = state.stores.get(&store_id) else {
        return pdpb::GetStoreResponse {
            header: error_header(
                state.cluster_id,
                pdpb::ErrorType::Unknown,
                format!("invalid store ID {store_id}, not found"),
            ),
            ..Default::default()
        };
    };
    pdpb::GetStoreResponse {
        header: ok_header(state.cluster_id),
        store: Some(reported_store(state, store)),
        stats: Some(store_stats(state, store_id)),
    }
}

/// `GetAllStores`. PD's filter is on node_state Removed, not on the Tombstone store state.
pub(super) fn all_stores_answer(
    state: &ClusterState,
    exclude_tombstone: bool,
) -> pdpb::GetAllStoresResponse {
    let stores = state
        .stores
        .values()
        .filter(|s| !exclude_tombstone || s.meta.node_state != metapb::NodeState::Removed as i32)
        .map(|s| reported_store(state, s))
        .collect();
    pdpb::GetAllStoresResponse {
        header: ok_header(state.cluster_id),
        stores,
    }
}

/// `BatchScanRegions` over `map` in `role`: a follower reports an empty result (or everything,
/// with its syncer stopped) as "region not found".
pub(super) fn batch_scan_answer(
    cluster_id: u64,
    map: &RegionMap,
    req: &pdpb::BatchScanRegionsRequest,
    role: Role,
) -> pdpb::BatchScanRegionsResponse {
    if role == Role::UnsyncedFollower {
        return pdpb::BatchScanRegionsResponse {
            header: region_not_found_header(cluster_id),
            regions: Vec::new(),
        };
    }
    match batch_scan(map, &req.ranges, req.limit, req.contain_all_key_range) {
        Ok(regions) if role == Role::Follower && regions.is_empty() => {
            pdpb::BatchScanRegionsResponse {
                header: region_not_found_header(cluster_id),
                regions,
            }
        }
        Ok(regions) => pdpb::BatchScanRegionsResponse {
            header: ok_header(cluster_id),
            regions,
        },
        Err((kind, message)) => pdpb::BatchScanRegionsResponse {
            header: error_header(cluster_id, kind, message),
            regions: Vec::new(),
        },
    }
}

/// The statistics a store's heartbeat would carry.
fn store_stats(state: &ClusterState, store_id: u64) -> pdpb::StoreStats {
    let region_count = state
        .all_regions()
        .filter(|r| r.peer_on_store(store_id).is_some())
        .count();
    let start_time = state
        .stores
        .get(&store_id)
        .map_or(0, |s| s.meta.start_timestamp);
    pdpb::StoreStats {
        store_id,
        region_count: u32::try_from(region_count).unwrap_or(u32::MAX),
        start_time: u32::try_from(start_time).unwrap_or(0),
        ..Default::default()
    }
}

// ----- split and scatter ----------------------------------------------------------------------

/// PD's region splitter: keys are grouped by the region containing them (keys already starting
/// a region, or in a region without a leader, are skipped and count as unprocessed); the result
/// is the percentage of processed keys and the ids of the regions now starting at them.
fn split_regions(state: &mut ClusterState, keys: &[Bytes]) -> (u64, Vec<u64>) {
    if keys.is_empty() {
        return (0, Vec::new());
    }
    let to_split: Vec<Bytes> = keys
        .iter()
        .filter(|k| {
            state
                .region_by_key(k)
                .is_some_and(|r| r.meta.start_key != **k && r.leader_peer().is_some())
        })
        .cloned()
        .collect();
    // Every key to split lies in some region of a tiled key space, so this cannot fail; if it
    // did, the keys would simply stay unprocessed.
    let _ = state.split(&to_split);
    let mut ids = Vec::new();
    let mut processed = 0usize;
    for key in keys {
        let starts_here = to_split.contains(key)
            && state
                .region_by_key(key)
                .is_some_and(|r| r.meta.start_key == *key);
        if starts_here {
            processed += 1;
            if let Some(r) = state.region_by_key(key)
                && !ids.contains(&r.id())
            {
                ids.push(r.id());
            }
        }
    }
    let unprocessed = keys.len() - processed;
    ((100 - unprocessed * 100 / keys.len()) as u64, ids)
}

/// PD's `ScatterRegionsByID`: one unknown region is an error; several regions report the
/// unknown ones as failures. The mock places nothing, so every known region's scatter finishes
/// at once with an operator record PD would keep.
fn scatter_regions(state: &mut ClusterState, ids: &[u64]) -> Result<(u64, Vec<u64>), Status> {
    if ids.is_empty() {
        return Err(go_error("[PD:scatter:ErrEmptyRegion]empty region"));
    }
    if ids.len() == 1 && state.region(ids[0]).is_none() {
        return Err(go_error("[PD:region:ErrRegionNotFound]region %v not found"));
    }
    let mut failed = Vec::new();
    let mut scattered = Vec::new();
    for &id in ids {
        if state.region(id).is_some() {
            if !scattered.contains(&id) {
                scattered.push(id);
            }
        } else if !failed.contains(&id) {
            failed.push(id);
        }
    }
    if scattered.is_empty() {
        return Err(go_error("[PD:scatter:ErrEmptyRegion]empty region"));
    }
    let now = state.clock.now_ms();
    for id in &scattered {
        record_scatter(state, *id, now);
    }
    let percentage = if failed.is_empty() {
        100
    } else {
        100 - 100 * failed.len() / (scattered.len() + failed.len())
    };
    Ok((percentage as u64, failed))
}

fn record_scatter(state: &mut ClusterState, region_id: u64, now_ms: u64) {
    state.pd.operators.insert(
        region_id,
        OperatorRecord {
            desc: SCATTER_DESC,
            kind: SCATTER_KIND,
            status: pdpb::OperatorStatus::Success,
            finished_at_ms: now_ms,
        },
    );
}

// ----- GC helpers -----------------------------------------------------------------------------

/// The keyspace a GC request names: NullKeyspace without a scope, as PD's `getKeyspaceID`.
fn scope_keyspace(scope: Option<&pdpb::KeyspaceScope>) -> u32 {
    match scope {
        None => NULL_KEYSPACE_ID,
        Some(s) => match s.keyspace {
            Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(id)) => id,
            _ => 0,
        },
    }
}

fn barrier_info(b: &gc::Barrier, now_ms: u64) -> pdpb::GcBarrierInfo {
    pdpb::GcBarrierInfo {
        barrier_id: b.id.clone(),
        barrier_ts: b.ts,
        ttl_seconds: b.ttl_seconds(now_ms),
    }
}

fn global_barrier_info(b: &gc::Barrier, now_ms: u64) -> pdpb::GlobalGcBarrierInfo {
    pdpb::GlobalGcBarrierInfo {
        barrier_id: b.id.clone(),
        barrier_ts: b.ts,
        ttl_seconds: b.ttl_seconds(now_ms),
    }
}

/// A scope's GC state on the wire.
fn gc_state_proto(
    state: &ClusterState,
    scope: u32,
    exclude_barriers: bool,
    now_ms: u64,
) -> pdpb::GcState {
    let s = state.pd.gc.scope(scope);
    pdpb::GcState {
        keyspace_scope: Some(pdpb::KeyspaceScope {
            keyspace: Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(scope)),
        }),
        is_keyspace_level_gc: scope != NULL_KEYSPACE_ID,
        txn_safe_point: s.txn_safe_point,
        gc_safe_point: s.gc_safe_point,
        gc_barriers: if exclude_barriers {
            Vec::new()
        } else {
            s.barriers
                .values()
                .map(|b| barrier_info(b, now_ms))
                .collect()
        },
    }
}

/// Runs a GC operation that reports failures in the response header.
fn in_header<T>(
    cluster_id: u64,
    result: Result<T, GcError>,
) -> (Option<pdpb::ResponseHeader>, Option<T>) {
    match result {
        Ok(v) => (ok_header(cluster_id), Some(v)),
        Err(e) => (
            error_header(cluster_id, pdpb::ErrorType::Unknown, e.message()),
            None,
        ),
    }
}

pub(super) type Stream<T> = ReceiverStream<Result<T, Status>>;

/// Answers a bidirectional stream one request at a time, in order, as PD's TSO and router
/// streams do: the first error ends the stream after it is sent, and a client that goes away
/// ends the task even while a fault rule holds a request.
pub(super) fn answer_stream<Req, Resp, F, Fut>(
    shared: Arc<Shared>,
    mut inbound: Streaming<Req>,
    handle: F,
) -> Response<Stream<Resp>>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Arc<Shared>, Req) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Resp, Status>> + Send,
{
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = inbound.message() => next,
                () = tx.closed() => return,
            };
            let Ok(Some(request)) = next else { return };
            let response = tokio::select! {
                response = handle(shared.clone(), request) => response,
                () = tx.closed() => return,
            };
            let failed = response.is_err();
            if tx.send(response).await.is_err() || failed {
                return;
            }
        }
    });
    Response::new(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl Pd for PdService {
    async fn get_cluster_info(
        &self,
        _request: Request<pdpb::GetClusterInfoRequest>,
    ) -> Result<Response<pdpb::GetClusterInfoResponse>, Status> {
        self.unchecked("GetClusterInfo", |state| {
            // With the TSO microservice on, PD reports API mode and the registered TSO servers.
            let (mode, tso_urls) = match state.pd.tso_service.as_ref().filter(|s| s.enabled) {
                Some(svc) => (pdpb::ServiceMode::ApiSvcMode, svc.running_urls()),
                None => (pdpb::ServiceMode::PdSvcMode, Vec::new()),
            };
            pdpb::GetClusterInfoResponse {
                header: ok_header(state.cluster_id),
                service_modes: vec![mode as i32],
                tso_urls,
            }
        })
        .await
    }

    async fn get_members(
        &self,
        _request: Request<pdpb::GetMembersRequest>,
    ) -> Result<Response<pdpb::GetMembersResponse>, Status> {
        // Every member answers, followers included: this is how clients find the leader.
        let members = members(&self.shared);
        let leader = members
            .get(
                self.shared
                    .pd_leader
                    .load(std::sync::atomic::Ordering::SeqCst),
            )
            .cloned();
        self.unchecked("GetMembers", |state| pdpb::GetMembersResponse {
            header: ok_header(state.cluster_id),
            members,
            leader: leader.clone(),
            etcd_leader: leader,
            tso_allocator_leaders: HashMap::new(),
        })
        .await
    }

    type TsoStream = Stream<pdpb::TsoResponse>;

    async fn tso(
        &self,
        request: Request<Streaming<pdpb::TsoRequest>>,
    ) -> Result<Response<Self::TsoStream>, Status> {
        let member = self.member;
        let (metadata, _, inbound) = request.into_parts();
        let metadata = Arc::new(metadata);
        Ok(answer_stream(
            self.shared.clone(),
            inbound,
            move |shared, request| {
                let metadata = metadata.clone();
                async move {
                    // PD's TSO proxy: a stream opened with the forwarded host sends every request
                    // on to the leader it names.
                    let route = route(&shared, member, &metadata)?;
                    let handler = handler(&shared, member, route)?;
                    allocate_tso(&shared, handler, &request).await
                }
            },
        ))
    }

    async fn get_store(
        &self,
        request: Request<pdpb::GetStoreRequest>,
    ) -> Result<Response<pdpb::GetStoreResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "GetStore", cid, None, &[], |state| {
            Ok(get_store_answer(state, req.store_id))
        })
        .await
    }

    async fn get_all_stores(
        &self,
        request: Request<pdpb::GetAllStoresRequest>,
    ) -> Result<Response<pdpb::GetAllStoresResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "GetAllStores", cid, None, &[], |state| {
            Ok(all_stores_answer(state, req.exclude_tombstone_stores))
        })
        .await
    }

    async fn get_region(
        &self,
        request: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        let keys = [req.region_key.clone()];
        self.handle(
            &meta,
            Access::FollowerRead,
            "GetRegion",
            cid,
            None,
            &keys,
            |state, role| {
                Ok(region_answer(
                    state.cluster_id,
                    state.region_by_key(&req.region_key),
                    role,
                ))
            },
        )
        .await
    }

    async fn get_prev_region(
        &self,
        request: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        let keys = [req.region_key.clone()];
        self.handle(
            &meta,
            Access::FollowerRead,
            "GetPrevRegion",
            cid,
            None,
            &keys,
            |state, role| {
                Ok(region_answer(
                    state.cluster_id,
                    state.prev_region(&req.region_key),
                    role,
                ))
            },
        )
        .await
    }

    async fn get_region_by_id(
        &self,
        request: Request<pdpb::GetRegionByIdRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.handle(
            &meta,
            Access::FollowerRead,
            "GetRegionByID",
            cid,
            Some(req.region_id),
            &[],
            |state, role| {
                Ok(region_answer(
                    state.cluster_id,
                    state.region(req.region_id),
                    role,
                ))
            },
        )
        .await
    }

    type QueryRegionStream = Stream<pdpb::QueryRegionResponse>;

    async fn query_region(
        &self,
        request: Request<Streaming<pdpb::QueryRegionRequest>>,
    ) -> Result<Response<Self::QueryRegionStream>, Status> {
        let member = self.member;
        Ok(answer_stream(
            self.shared.clone(),
            request.into_inner(),
            move |shared, request| async move { query_region(&shared, member, &request).await },
        ))
    }

    async fn scan_regions(
        &self,
        request: Request<pdpb::ScanRegionsRequest>,
    ) -> Result<Response<pdpb::ScanRegionsResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        let keys = [req.start_key.clone()];
        self.handle(
            &meta,
            Access::FollowerRead,
            "ScanRegions",
            cid,
            None,
            &keys,
            |state, role| {
                let limit = usize::try_from(req.limit).unwrap_or(0);
                let regions = match role {
                    Role::UnsyncedFollower => Vec::new(),
                    Role::Leader | Role::Follower => {
                        state.regions_in_range(&req.start_key, &req.end_key, limit)
                    }
                };
                // A follower that finds nothing says so instead of answering an empty scan.
                if role != Role::Leader && regions.is_empty() {
                    return Ok(pdpb::ScanRegionsResponse {
                        header: region_not_found_header(state.cluster_id),
                        ..Default::default()
                    });
                }
                let mut resp = pdpb::ScanRegionsResponse {
                    header: ok_header(state.cluster_id),
                    ..Default::default()
                };
                for region in regions {
                    let scanned = scanned_region(region);
                    resp.region_metas.push(region.meta.clone());
                    resp.leaders.push(scanned.leader.unwrap_or_default());
                    resp.regions.push(scanned);
                }
                Ok(resp)
            },
        )
        .await
    }

    async fn batch_scan_regions(
        &self,
        request: Request<pdpb::BatchScanRegionsRequest>,
    ) -> Result<Response<pdpb::BatchScanRegionsResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        let keys: Vec<Bytes> = req.ranges.iter().map(|r| r.start_key.clone()).collect();
        self.handle(
            &meta,
            Access::FollowerRead,
            "BatchScanRegions",
            cid,
            None,
            &keys,
            |state, role| {
                Ok(batch_scan_answer(
                    state.cluster_id,
                    state.region_map(),
                    &req,
                    role,
                ))
            },
        )
        .await
    }

    async fn scatter_region(
        &self,
        request: Request<pdpb::ScatterRegionRequest>,
    ) -> Result<Response<pdpb::ScatterRegionResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        let legacy_id = req.region_id;
        let region = req.regions_id.first().copied().or(Some(legacy_id));
        self.unary(&meta, "ScatterRegion", cid, region, &[], |state| {
            if !req.regions_id.is_empty() {
                let (finished_percentage, failed_regions_id) =
                    scatter_regions(state, &req.regions_id)?;
                return Ok(pdpb::ScatterRegionResponse {
                    header: ok_header(state.cluster_id),
                    finished_percentage,
                    failed_regions_id,
                });
            }
            // The deprecated single-region form; PD's not-found text really has no id in it.
            if state.region(legacy_id).is_none() && req.region.is_none() {
                return Ok(pdpb::ScatterRegionResponse {
                    header: error_header(
                        state.cluster_id,
                        pdpb::ErrorType::RegionNotFound,
                        "region %d not found",
                    ),
                    ..Default::default()
                });
            }
            let id = if state.region(legacy_id).is_some() {
                legacy_id
            } else {
                req.region.as_ref().map_or(legacy_id, |r| r.id)
            };
            let now = state.clock.now_ms();
            record_scatter(state, id, now);
            Ok(pdpb::ScatterRegionResponse {
                header: ok_header(state.cluster_id),
                finished_percentage: 100,
                failed_regions_id: Vec::new(),
            })
        })
        .await
    }

    async fn get_gc_safe_point(
        &self,
        request: Request<pdpb::GetGcSafePointRequest>,
    ) -> Result<Response<pdpb::GetGcSafePointResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "GetGCSafePoint", cid, None, &[], |state| {
            Ok(pdpb::GetGcSafePointResponse {
                header: ok_header(state.cluster_id),
                safe_point: state.pd.gc.scope(NULL_KEYSPACE_ID).gc_safe_point,
            })
        })
        .await
    }

    async fn update_gc_safe_point(
        &self,
        request: Request<pdpb::UpdateGcSafePointRequest>,
    ) -> Result<Response<pdpb::UpdateGcSafePointResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "UpdateGCSafePoint", cid, None, &[], |state| {
            let (_, new) = state
                .pd
                .gc
                .advance_gc_safe_point(NULL_KEYSPACE_ID, req.safe_point, true)
                .map_err(|e| go_error(e.message()))?;
            // TiKV's GC workers follow the safe point; the mock collects at once.
            crate::mvcc::actions::gc::run(&mut state.mvcc, None, new);
            Ok(pdpb::UpdateGcSafePointResponse {
                header: ok_header(state.cluster_id),
                new_safe_point: new,
            })
        })
        .await
    }

    async fn update_service_gc_safe_point(
        &self,
        request: Request<pdpb::UpdateServiceGcSafePointRequest>,
    ) -> Result<Response<pdpb::UpdateServiceGcSafePointResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "UpdateServiceGCSafePoint", cid, None, &[], |state| {
            let now = state.clock.now_ms();
            let service_id = String::from_utf8_lossy(&req.service_id).into_owned();
            let st = &mut *state;
            let scope = NULL_KEYSPACE_ID;
            let (min_service, min_safe_point) = if service_id == gc::GC_WORKER_SERVICE_ID {
                if req.ttl != i64::MAX {
                    return Err(go_error(
                        "TTL of gc_worker's service safe point must be infinity",
                    ));
                }
                let r = st
                    .pd
                    .gc
                    .advance_txn_safe_point(scope, req.safe_point, now)
                    .map_err(|e| go_error(e.message()))?;
                if r.new == req.safe_point {
                    (gc::GC_WORKER_SERVICE_ID.to_owned(), r.new)
                } else {
                    (r.blocker_id, r.new)
                }
            } else if service_id == gc::NATIVE_BR_SERVICE_ID {
                let result = if req.ttl > 0 {
                    st.pd
                        .gc
                        .set_global_barrier(
                            &st.keyspaces,
                            &service_id,
                            req.safe_point,
                            req.ttl,
                            now,
                        )
                        .map(|_| ())
                } else {
                    st.pd.gc.delete_global_barrier(&service_id);
                    Ok(())
                };
                match result {
                    Ok(()) | Err(GcError::GlobalBarrierBehindTxnSafePoint(_)) => {}
                    Err(e) => return Err(go_error(e.message())),
                }
                let (max_txn, _) = st.pd.gc.max_txn_safe_point(&st.keyspaces);
                (gc::GC_WORKER_SERVICE_ID.to_owned(), max_txn)
            } else {
                let result = if req.ttl > 0 {
                    st.pd
                        .gc
                        .set_barrier(scope, &service_id, req.safe_point, req.ttl, now)
                        .map(|_| ())
                } else {
                    st.pd.gc.delete_barrier(scope, &service_id).map(|_| ())
                };
                match result {
                    Ok(()) | Err(GcError::BarrierBehindTxnSafePoint(_)) => {}
                    Err(e) => return Err(go_error(e.message())),
                }
                (
                    gc::GC_WORKER_SERVICE_ID.to_owned(),
                    st.pd.gc.scope(scope).txn_safe_point,
                )
            };
            // The simulated minimum never expires; PD reports "MaxInt64 - now" seconds.
            let now_secs = i64::try_from(now / 1000).unwrap_or(0);
            Ok(pdpb::UpdateServiceGcSafePointResponse {
                header: ok_header(st.cluster_id),
                service_id: Bytes::from(min_service),
                ttl: i64::MAX - now_secs,
                min_safe_point,
            })
        })
        .await
    }

    async fn advance_gc_safe_point(
        &self,
        request: Request<pdpb::AdvanceGcSafePointRequest>,
    ) -> Result<Response<pdpb::AdvanceGcSafePointResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "AdvanceGCSafePoint", cid, None, &[], |state| {
            let keyspace = scope_keyspace(req.keyspace_scope.as_ref());
            let st = &mut *state;
            let result = gc::redirect(&st.keyspaces, keyspace, false).and_then(|scope| {
                let moved = st.pd.gc.advance_gc_safe_point(scope, req.target, false)?;
                let keyspace = (scope != NULL_KEYSPACE_ID).then_some(scope);
                crate::mvcc::actions::gc::run(&mut st.mvcc, keyspace, moved.1);
                Ok(moved)
            });
            let (header, value) = in_header(st.cluster_id, result);
            let (old, new) = value.unwrap_or_default();
            Ok(pdpb::AdvanceGcSafePointResponse {
                header,
                old_gc_safe_point: old,
                new_gc_safe_point: new,
            })
        })
        .await
    }

    async fn advance_txn_safe_point(
        &self,
        request: Request<pdpb::AdvanceTxnSafePointRequest>,
    ) -> Result<Response<pdpb::AdvanceTxnSafePointResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "AdvanceTxnSafePoint", cid, None, &[], |state| {
            let keyspace = scope_keyspace(req.keyspace_scope.as_ref());
            let now = state.clock.now_ms();
            let st = &mut *state;
            let result = gc::redirect(&st.keyspaces, keyspace, false)
                .and_then(|scope| st.pd.gc.advance_txn_safe_point(scope, req.target, now));
            let (header, value) = in_header(st.cluster_id, result);
            Ok(match value {
                Some(r) => pdpb::AdvanceTxnSafePointResponse {
                    header,
                    old_txn_safe_point: r.old,
                    new_txn_safe_point: r.new,
                    blocker_description: r.blocker_description,
                },
                None => pdpb::AdvanceTxnSafePointResponse {
                    header,
                    ..Default::default()
                },
            })
        })
        .await
    }

    async fn set_gc_barrier(
        &self,
        request: Request<pdpb::SetGcBarrierRequest>,
    ) -> Result<Response<pdpb::SetGcBarrierResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "SetGCBarrier", cid, None, &[], |state| {
            let keyspace = scope_keyspace(req.keyspace_scope.as_ref());
            let now = state.clock.now_ms();
            let st = &mut *state;
            let result = gc::check_ttl(req.ttl_seconds)
                .and_then(|()| gc::redirect(&st.keyspaces, keyspace, true))
                .and_then(|scope| {
                    st.pd.gc.set_barrier(
                        scope,
                        &req.barrier_id,
                        req.barrier_ts,
                        req.ttl_seconds,
                        now,
                    )
                });
            let (header, value) = in_header(st.cluster_id, result);
            Ok(pdpb::SetGcBarrierResponse {
                header,
                new_barrier_info: value.map(|b| barrier_info(&b, now)),
            })
        })
        .await
    }

    async fn delete_gc_barrier(
        &self,
        request: Request<pdpb::DeleteGcBarrierRequest>,
    ) -> Result<Response<pdpb::DeleteGcBarrierResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "DeleteGCBarrier", cid, None, &[], |state| {
            let keyspace = scope_keyspace(req.keyspace_scope.as_ref());
            let now = state.clock.now_ms();
            let st = &mut *state;
            let result = gc::redirect(&st.keyspaces, keyspace, true)
                .and_then(|scope| st.pd.gc.delete_barrier(scope, &req.barrier_id));
            let (header, value) = in_header(st.cluster_id, result);
            Ok(pdpb::DeleteGcBarrierResponse {
                header,
                deleted_barrier_info: value.flatten().map(|b| barrier_info(&b, now)),
            })
        })
        .await
    }

    async fn set_global_gc_barrier(
        &self,
        request: Request<pdpb::SetGlobalGcBarrierRequest>,
    ) -> Result<Response<pdpb::SetGlobalGcBarrierResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "SetGlobalGCBarrier", cid, None, &[], |state| {
            let now = state.clock.now_ms();
            let st = &mut *state;
            let result = gc::check_ttl(req.ttl_seconds)
                .and_then(|()| gc::check_global_barrier_id(&req.barrier_id))
                .and_then(|()| {
                    st.pd.gc.set_global_barrier(
                        &st.keyspaces,
                        &req.barrier_id,
                        req.barrier_ts,
                        req.ttl_seconds,
                        now,
                    )
                });
            let (header, value) = in_header(st.cluster_id, result);
            Ok(pdpb::SetGlobalGcBarrierResponse {
                header,
                new_barrier_info: value.map(|b| global_barrier_info(&b, now)),
            })
        })
        .await
    }

    async fn delete_global_gc_barrier(
        &self,
        request: Request<pdpb::DeleteGlobalGcBarrierRequest>,
    ) -> Result<Response<pdpb::DeleteGlobalGcBarrierResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "DeleteGlobalGCBarrier", cid, None, &[], |state| {
            let now = state.clock.now_ms();
            let result = gc::check_global_barrier_id(&req.barrier_id)
                .map(|()| state.pd.gc.delete_global_barrier(&req.barrier_id));
            let (header, value) = in_header(state.cluster_id, result);
            Ok(pdpb::DeleteGlobalGcBarrierResponse {
                header,
                deleted_barrier_info: value.flatten().map(|b| global_barrier_info(&b, now)),
            })
        })
        .await
    }

    async fn get_gc_state(
        &self,
        request: Request<pdpb::GetGcStateRequest>,
    ) -> Result<Response<pdpb::GetGcStateResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "GetGCState", cid, None, &[], |state| {
            let keyspace = scope_keyspace(req.keyspace_scope.as_ref());
            let now = state.clock.now_ms();
            match gc::redirect(&state.keyspaces, keyspace, true) {
                Err(e) => Ok(pdpb::GetGcStateResponse {
                    header: error_header(state.cluster_id, pdpb::ErrorType::Unknown, e.message()),
                    ..Default::default()
                }),
                Ok(scope) => Ok(pdpb::GetGcStateResponse {
                    header: ok_header(state.cluster_id),
                    gc_state: Some(gc_state_proto(state, scope, req.exclude_gc_barriers, now)),
                    global_gc_barriers: req.include_global_gc_barriers.then(|| {
                        pdpb::GlobalGcBarriersInfo {
                            barriers: state
                                .pd
                                .gc
                                .global_barriers()
                                .map(|b| global_barrier_info(b, now))
                                .collect(),
                        }
                    }),
                }),
            }
        })
        .await
    }

    async fn get_all_keyspaces_gc_states(
        &self,
        request: Request<pdpb::GetAllKeyspacesGcStatesRequest>,
    ) -> Result<Response<pdpb::GetAllKeyspacesGcStatesResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "GetAllKeyspacesGCStates", cid, None, &[], |state| {
            let now = state.clock.now_ms();
            let mut gc_states = Vec::new();
            // PD answers from a Go map (no order); the mock lists keyspaces by id, NullKeyspace
            // last. Only ENABLED keyspaces are listed; unified ones carry no state of their own.
            for (id, keyspace) in &state.keyspaces {
                if keyspace.meta.state != keyspacepb::KeyspaceState::Enabled as i32 {
                    continue;
                }
                if gc::is_keyspace_level(&keyspace.meta) {
                    gc_states.push(gc_state_proto(state, *id, req.exclude_gc_barriers, now));
                } else {
                    gc_states.push(pdpb::GcState {
                        keyspace_scope: Some(pdpb::KeyspaceScope {
                            keyspace: Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(*id)),
                        }),
                        ..Default::default()
                    });
                }
            }
            gc_states.push(gc_state_proto(
                state,
                NULL_KEYSPACE_ID,
                req.exclude_gc_barriers,
                now,
            ));
            let global_gc_barriers = if req.exclude_global_gc_barriers {
                Vec::new()
            } else {
                state
                    .pd
                    .gc
                    .global_barriers()
                    .map(|b| global_barrier_info(b, now))
                    .collect()
            };
            Ok(pdpb::GetAllKeyspacesGcStatesResponse {
                header: ok_header(state.cluster_id),
                gc_states,
                global_gc_barriers,
            })
        })
        .await
    }

    async fn get_operator(
        &self,
        request: Request<pdpb::GetOperatorRequest>,
    ) -> Result<Response<pdpb::GetOperatorResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(
            &meta,
            "GetOperator",
            cid,
            Some(req.region_id),
            &[],
            |state| {
                let now = state.clock.now_ms();
                state.pd.operators.retain(|_, op| {
                    now.saturating_sub(op.finished_at_ms) < OPERATOR_STATUS_REMAIN_MS
                });
                Ok(match state.pd.operators.get(&req.region_id) {
                    None => pdpb::GetOperatorResponse {
                        header: error_header(
                            state.cluster_id,
                            pdpb::ErrorType::RegionNotFound,
                            "Not Found",
                        ),
                        ..Default::default()
                    },
                    Some(op) => pdpb::GetOperatorResponse {
                        header: ok_header(state.cluster_id),
                        region_id: req.region_id,
                        desc: Bytes::from_static(op.desc.as_bytes()),
                        status: op.status as i32,
                        kind: Bytes::from_static(op.kind.as_bytes()),
                    },
                })
            },
        )
        .await
    }

    async fn split_regions(
        &self,
        request: Request<pdpb::SplitRegionsRequest>,
    ) -> Result<Response<pdpb::SplitRegionsResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(
            &meta,
            "SplitRegions",
            cid,
            None,
            &req.split_keys.clone(),
            |state| {
                let (finished_percentage, regions_id) = split_regions(state, &req.split_keys);
                Ok(pdpb::SplitRegionsResponse {
                    header: ok_header(state.cluster_id),
                    finished_percentage,
                    regions_id,
                })
            },
        )
        .await
    }

    async fn split_and_scatter_regions(
        &self,
        request: Request<pdpb::SplitAndScatterRegionsRequest>,
    ) -> Result<Response<pdpb::SplitAndScatterRegionsResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(
            &meta,
            "SplitAndScatterRegions",
            cid,
            None,
            &req.split_keys.clone(),
            |state| {
                let (split_finished_percentage, regions_id) = split_regions(state, &req.split_keys);
                let (scatter_finished_percentage, _) = scatter_regions(state, &regions_id)?;
                Ok(pdpb::SplitAndScatterRegionsResponse {
                    header: ok_header(state.cluster_id),
                    split_finished_percentage,
                    scatter_finished_percentage,
                    regions_id,
                })
            },
        )
        .await
    }

    async fn set_external_timestamp(
        &self,
        request: Request<pdpb::SetExternalTimestampRequest>,
    ) -> Result<Response<pdpb::SetExternalTimestampResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "SetExternalTimestamp", cid, None, &[], |state| {
            // PD compares against a freshly allocated global timestamp.
            let now = state.clock.now_ms();
            let global = state.tso.next(now);
            let rejection = if req.timestamp > global {
                Some("the external timestamp should not be larger than global ts")
            } else if req.timestamp <= state.pd.external_ts {
                Some("the external timestamp should be larger than current external timestamp")
            } else {
                None
            };
            if let Some(message) = rejection {
                return Ok(pdpb::SetExternalTimestampResponse {
                    header: error_header(state.cluster_id, pdpb::ErrorType::InvalidValue, message),
                });
            }
            state.pd.external_ts = req.timestamp;
            Ok(pdpb::SetExternalTimestampResponse {
                header: ok_header(state.cluster_id),
            })
        })
        .await
    }

    async fn get_external_timestamp(
        &self,
        request: Request<pdpb::GetExternalTimestampRequest>,
    ) -> Result<Response<pdpb::GetExternalTimestampResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "GetExternalTimestamp", cid, None, &[], |state| {
            Ok(pdpb::GetExternalTimestampResponse {
                header: ok_header(state.cluster_id),
                timestamp: state.pd.external_ts,
            })
        })
        .await
    }

    async fn get_min_ts(
        &self,
        request: Request<pdpb::GetMinTsRequest>,
    ) -> Result<Response<pdpb::GetMinTsResponse>, Status> {
        let (meta, _, req) = request.into_parts();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary(&meta, "GetMinTS", cid, None, &[], |state| {
            let now = state.clock.now_ms();
            // In microservice mode PD asks every TSO server instead (`GetMinTSFromTSOService`).
            let peek = state.tso.peek(now);
            if let Some(svc) = state.pd.tso_service.as_ref().filter(|s| s.enabled) {
                return Ok(match svc.min_ts(peek) {
                    Ok(ts) => pdpb::GetMinTsResponse {
                        header: ok_header(state.cluster_id),
                        timestamp: Some(timestamp(
                            ts >> tso::LOGICAL_BITS,
                            ts & ((1 << tso::LOGICAL_BITS) - 1),
                        )),
                    },
                    Err(message) => pdpb::GetMinTsResponse {
                        header: error_header(
                            state.cluster_id,
                            pdpb::ErrorType::Unknown,
                            format!("[PD:tso:ErrGetMinTS]get min ts failed, {message}"),
                        ),
                        timestamp: Some(pdpb::Timestamp::default()),
                    },
                });
            }
            // Without TSO microservices, PD answers with a freshly allocated timestamp.
            let (physical, logical) = state.tso.allocate(now, 1);
            Ok(pdpb::GetMinTsResponse {
                header: ok_header(state.cluster_id),
                timestamp: Some(timestamp(physical, logical)),
            })
        })
        .await
    }
}

fn timestamp(physical: u64, logical: u64) -> pdpb::Timestamp {
    pdpb::Timestamp {
        physical: i64::try_from(physical).unwrap_or(i64::MAX),
        logical: i64::try_from(logical).unwrap_or(i64::MAX),
        suffix_bits: 0,
    }
}

/// One TSO request: PD checks the cluster id (a header is required), then allocates `count`
/// timestamps (1 to 2^18 - 1); the response's logical part is the last of the batch.
async fn allocate_tso(
    shared: &Shared,
    member: usize,
    request: &pdpb::TsoRequest,
) -> Result<pdpb::TsoResponse, Status> {
    fault(shared, Phase::Before, "Tso", None, &[]).await?;
    let response = {
        let mut state = shared.lock();
        check_cluster_id(
            request_cluster_id(request.header.as_ref()),
            state.cluster_id,
        )?;
        // In microservice mode PD allocates nothing itself: the stream is forwarded to the
        // default keyspace group's primary (counted there, not as this member's).
        let forwarded = match state.pd.tso_service.as_mut().filter(|s| s.enabled) {
            Some(svc) => Some(svc.forward_from_pd()?),
            None => None,
        };
        // PD serves TSO streams on every member; a follower's allocator refuses to allocate.
        if forwarded.is_none() && check_leader(shared, member).is_err() {
            return Err(go_error(TSO_NOT_LEADER));
        }
        if request.count == 0 {
            return Err(go_error(
                "[PD:tso:ErrGenerateTimestamp]generate timestamp failed, tso count should be \
                 positive",
            ));
        }
        // A batch must fit the 18-bit logical part; PD retries such a request until it gives up.
        if request.count >= 1 << tso::LOGICAL_BITS {
            return Err(go_error(
                "[PD:tso:ErrGenerateTimestamp]generate timestamp failed, generate tso maximum \
                 number of retries exceeded",
            ));
        }
        if forwarded.is_none() {
            state.pd.count_handled(member, "Tso");
        }
        let now = state.clock.now_ms();
        let (physical, logical) = state.tso.allocate(now, request.count);
        pdpb::TsoResponse {
            header: ok_header(state.cluster_id),
            count: request.count,
            timestamp: Some(timestamp(physical, logical)),
        }
    };
    fault(shared, Phase::AfterApply, "Tso", None, &[]).await?;
    Ok(response)
}

/// One `QueryRegion` batch: regions by key, by previous key and by id, deduplicated by id.
/// Followers answer too, without being asked to (PD's `QueryRegion` has no forwarding and no
/// follower-handle check); one whose region syncer is stopped answers "region not found".
async fn query_region(
    shared: &Shared,
    member: usize,
    request: &pdpb::QueryRegionRequest,
) -> Result<pdpb::QueryRegionResponse, Status> {
    let mut keys = request.keys.clone();
    keys.extend(request.prev_keys.iter().cloned());
    fault(shared, Phase::Before, "QueryRegion", None, &keys).await?;
    let role = if check_leader(shared, member).is_ok() {
        Role::Leader
    } else {
        follower_role(shared, member)
    };
    let response = {
        let mut state = shared.lock();
        check_cluster_id(
            request_cluster_id(request.header.as_ref()),
            state.cluster_id,
        )?;
        state.pd.count_handled(member, "QueryRegion");
        if role == Role::UnsyncedFollower {
            return Ok(pdpb::QueryRegionResponse {
                header: region_not_found_header(state.cluster_id),
                ..Default::default()
            });
        }
        query_regions(state.cluster_id, state.region_map(), request)
    };
    fault(shared, Phase::AfterApply, "QueryRegion", None, &keys).await?;
    Ok(response)
}

/// The answer to one `QueryRegion` batch from `map`: regions by key, by previous key and by id,
/// deduplicated by id; an unknown id gets an empty entry, as in PD.
pub(super) fn query_regions(
    cluster_id: u64,
    map: &RegionMap,
    request: &pdpb::QueryRegionRequest,
) -> pdpb::QueryRegionResponse {
    let mut by_id: HashMap<u64, pdpb::RegionResponse> = HashMap::new();
    let mut add = |region: Option<&RegionState>| -> u64 {
        let Some(region) = region else { return 0 };
        by_id.insert(region.id(), region_response(region));
        region.id()
    };
    let key_id_map = request
        .keys
        .iter()
        .map(|k| add(map.region_by_key(k)))
        .collect();
    let prev_key_id_map = request
        .prev_keys
        .iter()
        .map(|k| add(map.prev_region(k)))
        .collect();
    for &id in &request.ids {
        if id == 0 || by_id.contains_key(&id) {
            continue;
        }
        let entry = map.region(id).map(region_response).unwrap_or_default();
        by_id.insert(id, entry);
    }
    pdpb::QueryRegionResponse {
        header: ok_header(cluster_id),
        key_id_map,
        prev_key_id_map,
        regions_by_id: by_id,
    }
}

fn region_response(region: &RegionState) -> pdpb::RegionResponse {
    pdpb::RegionResponse {
        region: Some(region.meta.clone()),
        leader: region.leader_peer().copied(),
        ..Default::default()
    }
}
