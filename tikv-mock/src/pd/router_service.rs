//! The optional router microservice: `n` router servers serving `routerpb.Router` (region and
//! store reads) on their own addresses, registered in PD's meta storage, as PD's microservice
//! mode deploys them.
//!
//! Who uses it: `MockClusterBuilder::router_microservice` starts the servers and registers
//! them; PD clients find them by reading the registry prefix `/ms/{cluster_id}/router/registry/`
//! through `meta_storagepb.MetaStorage/Get` ([`super::meta_storage`]) and send them the reads
//! PD lets routers serve. The `MockCluster` control API stops and starts servers (a stopped
//! server's registry entry stays, as a crashed server's does until its lease ends), registers
//! and deregisters them, and stops a server's region sync.
//!
//! A router server answers from its copy of PD's region map, which is the live map while its
//! region syncer runs and a snapshot taken when the syncer stopped otherwise, so a stopped
//! syncer makes the server answer with regions as they were. Store metadata always comes from
//! the live state (PD syncs it through a separate watcher). A router answers as PD's leader
//! does: a missing region is an empty OK answer, not "region not found". The PD handlers'
//! answer builders are reused, so router and PD answers are the same for the same map.
//! Fault rules apply as to PD (`Matcher::router`, `Matcher::router_server`): before the answer
//! (a refused request is not counted) and after it; `QueryRegion` per message.
//!
//! Follows tikv/pd `pkg/mcs/router/server/grpc_service.go` (the seven RPCs over the basic
//! cluster, answered with `isFollower = false`, `QueryRegion` checking the cluster id of every
//! message), `pkg/mcs/utils/util.go` (`Register`: the `ServiceRegistryEntry` JSON written at
//! `keypath.RegistryPath`) and `pkg/mcs/discovery/registry_entry.go`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use tikv_proto::pdpb;
use tikv_proto::routerpb::router_server::{Router, RouterServer};
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};

use super::meta_storage::MetaStorageState;
use super::service::{
    Stream, all_stores_answer, answer_stream, batch_scan_answer, get_store_answer, query_regions,
    region_answer,
};
use super::{Role, check_cluster_id, fault_on, request_cluster_id};
use crate::Shared;
use crate::cluster::{ClusterState, RegionMap};
use crate::fault::{Phase, Service};

/// The service name router servers register under (PD's `constant.RouterServiceName`).
const SERVICE_NAME: &str = "router";
/// The version router servers put in their registry entries.
const VERSION: &str = "v9.0.0";

/// The registry key of the server at `url` (PD's `keypath.RegistryPath`).
pub(crate) fn registry_key(cluster_id: u64, url: &str) -> String {
    format!("/ms/{cluster_id}/{SERVICE_NAME}/registry/{url}")
}

/// The JSON registry entry a router server writes (PD's `ServiceRegistryEntry`, with its field
/// names).
#[derive(Debug, serde::Serialize)]
struct RegistryEntry<'a> {
    name: String,
    #[serde(rename = "service-addr")]
    service_addr: &'a str,
    version: &'a str,
    #[serde(rename = "git-hash")]
    git_hash: &'a str,
    #[serde(rename = "deploy-path")]
    deploy_path: &'a str,
    #[serde(rename = "start-timestamp")]
    start_timestamp: i64,
}

/// The router microservice's state, inside PD's state so it is read under the cluster lock.
#[derive(Debug)]
pub(crate) struct RouterServiceState {
    /// Where server `i` listens.
    pub(crate) addrs: Vec<SocketAddr>,
    /// Servers whose entry is in the registry.
    registered: HashSet<usize>,
    /// The region map of each server whose region syncer is stopped, as it was then.
    frozen: HashMap<usize, RegionMap>,
    /// Requests served, by (server, method); `QueryRegion` counts messages.
    handled: HashMap<(usize, &'static str), u64>,
    /// When the servers started, in seconds since the Unix epoch (for the registry entries).
    start_timestamp: i64,
}

impl RouterServiceState {
    /// `n` running servers at `addrs`, none registered yet (see [`Self::set_registered`]).
    pub(crate) fn new(addrs: Vec<SocketAddr>, start_timestamp: i64) -> Self {
        RouterServiceState {
            addrs,
            registered: HashSet::new(),
            frozen: HashMap::new(),
            handled: HashMap::new(),
            start_timestamp,
        }
    }

    fn url(&self, server: usize) -> Option<String> {
        self.addrs.get(server).map(|a| format!("http://{a}"))
    }

    /// Writes (`true`) or deletes server `server`'s registry entry in `storage`; an unknown
    /// server is left alone.
    pub(crate) fn set_registered(
        &mut self,
        storage: &mut MetaStorageState,
        cluster_id: u64,
        server: usize,
        registered: bool,
    ) {
        let Some(url) = self.url(server) else { return };
        let key = registry_key(cluster_id, &url);
        if registered {
            let entry = RegistryEntry {
                name: format!("{SERVICE_NAME}-{server}"),
                service_addr: &url,
                version: VERSION,
                git_hash: "",
                deploy_path: "",
                start_timestamp: self.start_timestamp,
            };
            // Serializing plain strings and numbers cannot fail.
            let json = serde_json::to_vec(&entry).unwrap_or_default();
            storage.put(key, json);
            self.registered.insert(server);
        } else {
            storage.delete(key.as_bytes());
            self.registered.remove(&server);
        }
    }

    /// Whether server `server` is in the registry.
    pub(crate) fn is_registered(&self, server: usize) -> bool {
        self.registered.contains(&server)
    }

    /// Runs server `server`'s region syncer (`None`), or stops it with `snapshot` as its last
    /// copy of the region map; stopping a stopped syncer keeps the older copy.
    pub(crate) fn set_region_sync(&mut self, server: usize, snapshot: Option<RegionMap>) {
        match snapshot {
            None => {
                self.frozen.remove(&server);
            }
            Some(map) => {
                self.frozen.entry(server).or_insert(map);
            }
        }
    }

    /// Requests of `method` server `server` served.
    pub(crate) fn count(&self, server: usize, method: &str) -> u64 {
        self.handled
            .iter()
            .filter(|((s, m), _)| *s == server && *m == method)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Forgets every request count.
    pub(crate) fn reset_counts(&mut self) {
        self.handled.clear();
    }
}

/// The gRPC service of router server `server`.
#[derive(Debug)]
struct RouterService {
    shared: Arc<Shared>,
    server: usize,
}

/// The routes served on router server `server`'s address: `routerpb.Router` and gRPC health
/// (always SERVING; a stopped server refuses connections instead).
pub(crate) fn routes(shared: Arc<Shared>, server: usize) -> Routes {
    let (_reporter, health) = tonic_health::server::health_reporter();
    Routes::new(RouterServer::new(RouterService { shared, server })).add_service(health)
}

/// [`serve`] between the fault checks before and after it.
async fn serve_with_faults<T>(
    shared: &Shared,
    server: usize,
    method: &'static str,
    keys: &[Bytes],
    f: impl FnOnce(&ClusterState, &RegionMap) -> T,
) -> Result<T, Status> {
    let index = Some(server as u64);
    fault_on(
        shared,
        Service::Router,
        index,
        Phase::Before,
        method,
        None,
        keys,
    )
    .await?;
    let out = serve(shared, server, method, f)?;
    fault_on(
        shared,
        Service::Router,
        index,
        Phase::AfterApply,
        method,
        None,
        keys,
    )
    .await?;
    Ok(out)
}

/// Runs `f` over the server's region map (its frozen copy, or the live one) and the state,
/// counting the request.
fn serve<T>(
    shared: &Shared,
    server: usize,
    method: &'static str,
    f: impl FnOnce(&ClusterState, &RegionMap) -> T,
) -> Result<T, Status> {
    let mut state = shared.lock();
    let svc = state
        .pd
        .router_service
        .as_mut()
        .ok_or_else(|| Status::unavailable("router service is not running"))?;
    *svc.handled.entry((server, method)).or_default() += 1;
    let state = &*state;
    let frozen = state
        .pd
        .router_service
        .as_ref()
        .and_then(|svc| svc.frozen.get(&server));
    let map = frozen.unwrap_or_else(|| state.region_map());
    Ok(f(state, map))
}

#[tonic::async_trait]
impl Router for RouterService {
    async fn get_region(
        &self,
        request: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let req = request.into_inner();
        let keys = [req.region_key.clone()];
        serve_with_faults(
            &self.shared,
            self.server,
            "GetRegion",
            &keys,
            |state, map| {
                region_answer(
                    state.cluster_id,
                    map.region_by_key(&req.region_key),
                    Role::Leader,
                )
            },
        )
        .await
        .map(Response::new)
    }

    async fn get_prev_region(
        &self,
        request: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let req = request.into_inner();
        let keys = [req.region_key.clone()];
        serve_with_faults(
            &self.shared,
            self.server,
            "GetPrevRegion",
            &keys,
            |state, map| {
                region_answer(
                    state.cluster_id,
                    map.prev_region(&req.region_key),
                    Role::Leader,
                )
            },
        )
        .await
        .map(Response::new)
    }

    async fn get_region_by_id(
        &self,
        request: Request<pdpb::GetRegionByIdRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let req = request.into_inner();
        serve_with_faults(
            &self.shared,
            self.server,
            "GetRegionByID",
            &[],
            |state, map| region_answer(state.cluster_id, map.region(req.region_id), Role::Leader),
        )
        .await
        .map(Response::new)
    }

    type QueryRegionStream = Stream<pdpb::QueryRegionResponse>;

    async fn query_region(
        &self,
        request: Request<Streaming<pdpb::QueryRegionRequest>>,
    ) -> Result<Response<Self::QueryRegionStream>, Status> {
        let server = self.server;
        Ok(answer_stream(
            self.shared.clone(),
            request.into_inner(),
            move |shared, request| async move {
                let requested = request_cluster_id(request.header.as_ref());
                check_cluster_id(requested, shared.lock().cluster_id)?;
                let mut keys = request.keys.clone();
                keys.extend(request.prev_keys.iter().cloned());
                serve_with_faults(&shared, server, "QueryRegion", &keys, |state, map| {
                    query_regions(state.cluster_id, map, &request)
                })
                .await
            },
        ))
    }

    async fn batch_scan_regions(
        &self,
        request: Request<pdpb::BatchScanRegionsRequest>,
    ) -> Result<Response<pdpb::BatchScanRegionsResponse>, Status> {
        let req = request.into_inner();
        let keys: Vec<Bytes> = req.ranges.iter().map(|r| r.start_key.clone()).collect();
        serve_with_faults(
            &self.shared,
            self.server,
            "BatchScanRegions",
            &keys,
            |state, map| batch_scan_answer(state.cluster_id, map, &req, Role::Leader),
        )
        .await
        .map(Response::new)
    }

    async fn get_store(
        &self,
        request: Request<pdpb::GetStoreRequest>,
    ) -> Result<Response<pdpb::GetStoreResponse>, Status> {
        let req = request.into_inner();
        serve_with_faults(&self.shared, self.server, "GetStore", &[], |state, _| {
            get_store_answer(state, req.store_id)
        })
        .await
        .map(Response::new)
    }

    async fn get_all_stores(
        &self,
        request: Request<pdpb::GetAllStoresRequest>,
    ) -> Result<Response<pdpb::GetAllStoresResponse>, Status> {
        let req = request.into_inner();
        serve_with_faults(
            &self.shared,
            self.server,
            "GetAllStores",
            &[],
            |state, _| all_stores_answer(state, req.exclude_tombstone_stores),
        )
        .await
        .map(Response::new)
    }
}
