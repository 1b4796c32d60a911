//! The optional TSO microservice: `n` TSO servers serving `tsopb.TSO` on their own addresses,
//! as PD's microservice ("API service") mode deploys them.
//!
//! Who uses it: `MockClusterBuilder::tso_microservice` starts the servers and turns the mode on;
//! PD's `GetClusterInfo` then reports `API_SVC_MODE` with the running servers' URLs, PD's own
//! `Tso` stream forwards to the default keyspace group's primary (PD's
//! `forwardToTSOService`) instead of allocating, and clients are expected to find their keyspace
//! group with `FindGroupByKeyspaceID` and stream to its primary. The `MockCluster` control API
//! moves primaries, stops and starts servers and assigns keyspaces to groups.
//!
//! Every keyspace group allocates from the cluster's one timestamp oracle: timestamps stay
//! strictly increasing across groups and across switches between PD mode and microservice mode
//! (PD guarantees the same across a split or a mode switch by syncing the oracle).
//!
//! Follows tikv/pd `pkg/mcs/tso/server/grpc_service.go` (`Tso`, `FindGroupByKeyspaceID`,
//! `GetMinTS`), `pkg/tso/keyspace_group_manager.go` (`HandleTSORequest`, the not-served error,
//! the keyspace-group-id limit) and `server/grpc_service.go` (`GetClusterInfo`, `Tso`'s
//! forwarding in microservice mode).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use tikv_proto::pdpb;
use tikv_proto::tsopb::{self, tso_server::TsoServer};
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};

use super::service::{Stream, answer_stream};
use super::{check_cluster_id, go_error};
use crate::{MockError, Shared, tso};

/// The keyspace group every keyspace belongs to unless assigned elsewhere.
pub(crate) const DEFAULT_KEYSPACE_GROUP_ID: u32 = 0;
/// The keyspace config key naming the keyspace's TSO keyspace group.
pub(crate) const TSO_KEYSPACE_GROUP_ID_KEY: &str = "tso_keyspace_group_id";
/// Keyspace group ids must stay below this (PD's `MaxKeyspaceGroupCountInUse`).
const MAX_KEYSPACE_GROUP_COUNT_IN_USE: u32 = 4096;
/// The user kind PD gives groups it creates for plain keyspaces.
const USER_KIND_BASIC: &str = "basic";

/// A keyspace group: its member servers (by index) and the one that is primary, if any.
#[derive(Debug, Clone)]
struct Group {
    members: Vec<usize>,
    primary: Option<usize>,
}

/// The TSO microservice's state, inside PD's state so it is read under the cluster lock.
#[derive(Debug)]
pub(crate) struct TsoServiceState {
    /// Where server `i` listens.
    pub(crate) addrs: Vec<SocketAddr>,
    /// Microservice mode is on: PD reports `API_SVC_MODE` and forwards its own `Tso`.
    pub(crate) enabled: bool,
    groups: BTreeMap<u32, Group>,
    /// Keyspace id -> keyspace group id, for keyspaces outside the default group.
    assignment: HashMap<u32, u32>,
    /// Bumped by every change of the keyspace group metadata (etcd's mod revision in PD).
    mod_revision: u64,
    down: HashSet<usize>,
    /// Requests served, by (server, method).
    handled: HashMap<(usize, &'static str), u64>,
    /// `Tso` requests PD forwarded to the service.
    forwarded_from_pd: u64,
    /// The (keyspace id, keyspace group id) of the last `Tso` request each server served.
    last_tso_header: HashMap<usize, (u32, u32)>,
}

impl TsoServiceState {
    /// `n` servers, all members of the default group, server 0 its primary.
    pub(crate) fn new(addrs: Vec<SocketAddr>) -> Self {
        let members: Vec<usize> = (0..addrs.len()).collect();
        let mut groups = BTreeMap::new();
        groups.insert(
            DEFAULT_KEYSPACE_GROUP_ID,
            Group {
                primary: members.first().copied(),
                members,
            },
        );
        TsoServiceState {
            addrs,
            enabled: true,
            groups,
            assignment: HashMap::new(),
            mod_revision: 1,
            down: HashSet::new(),
            handled: HashMap::new(),
            forwarded_from_pd: 0,
            last_tso_header: HashMap::new(),
        }
    }

    fn url(&self, server: usize) -> Option<String> {
        self.addrs.get(server).map(|a| format!("http://{a}"))
    }

    /// The URLs of the running servers, as PD's `GetClusterInfo` lists registered ones.
    pub(crate) fn running_urls(&self) -> Vec<String> {
        (0..self.addrs.len())
            .filter(|s| !self.down.contains(s))
            .filter_map(|s| self.url(s))
            .collect()
    }

    fn group_of(&self, keyspace_id: u32) -> u32 {
        self.assignment
            .get(&keyspace_id)
            .copied()
            .unwrap_or(DEFAULT_KEYSPACE_GROUP_ID)
    }

    fn is_primary(&self, server: usize, group: u32) -> bool {
        self.groups
            .get(&group)
            .is_some_and(|g| g.primary == Some(server))
    }

    pub(crate) fn count(&self, server: usize, method: &str) -> u64 {
        self.handled
            .iter()
            .filter(|((s, m), _)| *s == server && *m == method)
            .map(|(_, n)| *n)
            .sum()
    }

    pub(crate) fn forwarded_from_pd(&self) -> u64 {
        self.forwarded_from_pd
    }

    pub(crate) fn last_tso_header(&self, server: usize) -> Option<(u32, u32)> {
        self.last_tso_header.get(&server).copied()
    }

    pub(crate) fn primary(&self, group: u32) -> Option<usize> {
        self.groups.get(&group).and_then(|g| g.primary)
    }

    /// Makes `server` the primary of `group` (it becomes a member if it was not one).
    pub(crate) fn set_primary(&mut self, group: u32, server: usize) -> Result<(), MockError> {
        if server >= self.addrs.len() {
            return Err(MockError::Topology(format!("unknown TSO server {server}")));
        }
        if self.down.contains(&server) {
            return Err(MockError::Topology(format!(
                "TSO server {server} is not running"
            )));
        }
        let g = self
            .groups
            .get_mut(&group)
            .ok_or_else(|| MockError::Topology(format!("unknown keyspace group {group}")))?;
        if !g.members.contains(&server) {
            g.members.push(server);
            self.mod_revision += 1;
        }
        g.primary = Some(server);
        Ok(())
    }

    /// Marks a server stopped or running. A stopped primary hands its groups to the first
    /// running member (the election after its lease ends); with none left a group has no
    /// primary until a member starts again.
    pub(crate) fn set_down(&mut self, server: usize, down: bool) {
        if down {
            self.down.insert(server);
        } else {
            self.down.remove(&server);
        }
        for g in self.groups.values_mut() {
            let primary_down = g.primary.is_none_or(|p| self.down.contains(&p));
            if primary_down {
                g.primary = g.members.iter().copied().find(|m| !self.down.contains(m));
            }
        }
    }

    /// Puts `keyspace_id` in `group`, creating the group (every server a member, the primary
    /// chosen round-robin by group id) if it does not exist.
    pub(crate) fn assign(&mut self, keyspace_id: u32, group: u32) -> Result<(), MockError> {
        if group >= MAX_KEYSPACE_GROUP_COUNT_IN_USE {
            return Err(MockError::Config(format!(
                "keyspace group id {group} is not below {MAX_KEYSPACE_GROUP_COUNT_IN_USE}"
            )));
        }
        let n = self.addrs.len();
        let down = &self.down;
        self.groups.entry(group).or_insert_with(|| {
            let members: Vec<usize> = (0..n).collect();
            let preferred = (group as usize) % n.max(1);
            let primary = std::iter::once(preferred)
                .chain(members.iter().copied())
                .find(|m| *m < n && !down.contains(m));
            Group { members, primary }
        });
        if group == DEFAULT_KEYSPACE_GROUP_ID {
            self.assignment.remove(&keyspace_id);
        } else {
            self.assignment.insert(keyspace_id, group);
        }
        self.mod_revision += 1;
        Ok(())
    }

    /// PD's `GetMinTS` in microservice mode: the oracle's current timestamp when every
    /// group's primary is running (PD asks every server and needs all groups covered), else
    /// the reason PD gives.
    pub(crate) fn min_ts(&self, current: u64) -> Result<u64, String> {
        let running = self.running_urls();
        if running.is_empty() {
            return Err("no tso servers/pods discovered".to_owned());
        }
        let total = self.groups.len();
        let asked = self
            .groups
            .values()
            .filter(|g| g.primary.is_some_and(|p| !self.down.contains(&p)))
            .count();
        if asked != total {
            return Err(format!(
                "can't query all the tso keyspace groups. Asked {asked}, expected {total}"
            ));
        }
        Ok(current)
    }

    /// PD's `Tso` in microservice mode: the request goes to the default group's primary.
    pub(crate) fn forward_from_pd(&mut self) -> Result<usize, Status> {
        let primary = self
            .primary(DEFAULT_KEYSPACE_GROUP_ID)
            .filter(|p| !self.down.contains(p))
            .ok_or_else(|| Status::not_found("not found tso address"))?;
        self.forwarded_from_pd += 1;
        *self.handled.entry((primary, "Tso")).or_default() += 1;
        Ok(primary)
    }
}

/// The gRPC service of TSO server `server`.
#[derive(Debug)]
struct TsoService {
    shared: Arc<Shared>,
    server: usize,
}

/// The routes served on TSO server `server`'s address.
pub(crate) fn routes(shared: Arc<Shared>, server: usize) -> Routes {
    let (_reporter, health) = tonic_health::server::health_reporter();
    Routes::new(TsoServer::new(TsoService { shared, server })).add_service(health)
}

fn ok_header(cluster_id: u64, group: u32) -> Option<tsopb::ResponseHeader> {
    Some(tsopb::ResponseHeader {
        cluster_id,
        keyspace_group_id: group,
        ..Default::default()
    })
}

fn error_header(
    cluster_id: u64,
    kind: tsopb::ErrorType,
    message: impl Into<String>,
    group: u32,
) -> Option<tsopb::ResponseHeader> {
    Some(tsopb::ResponseHeader {
        cluster_id,
        error: Some(tsopb::Error {
            r#type: kind as i32,
            message: message.into(),
        }),
        keyspace_group_id: group,
        ..Default::default()
    })
}

fn header_keyspace(header: Option<&tsopb::RequestHeader>) -> u32 {
    match header.and_then(|h| h.keyspace.as_ref()) {
        Some(tsopb::request_header::Keyspace::KeyspaceId(id)) => *id,
        _ => 0,
    }
}

/// The error a server gives for a group it is not the primary of; clients treat the
/// "is not served" text as a primary change.
fn not_served(group: u32) -> Status {
    go_error(format!(
        "[PD:common:ErrUnknown]unknown error [PD:tso:ErrGetAllocator]get allocator failed, \
         requested keyspace group with id {group} is not served by this host/pod"
    ))
}

fn timestamp(physical: u64, logical: u64) -> pdpb::Timestamp {
    pdpb::Timestamp {
        physical: i64::try_from(physical).unwrap_or(i64::MAX),
        logical: i64::try_from(logical).unwrap_or(i64::MAX),
        suffix_bits: 0,
    }
}

/// One `TsoRequest` on server `server`: `HandleTSORequest` with the primary check.
fn handle_tso(
    shared: &Shared,
    server: usize,
    request: &tsopb::TsoRequest,
) -> Result<tsopb::TsoResponse, Status> {
    let mut state = shared.lock();
    let cluster_id = state.cluster_id;
    let header = request.header.as_ref();
    check_cluster_id(header.map_or(0, |h| h.cluster_id), cluster_id)?;
    // A client that names another server than this one (a stale address reused) is refused.
    if let Some(callee) = header
        .map(|h| h.callee_id.as_str())
        .filter(|c| !c.is_empty())
        && let Some(addr) = state
            .pd
            .tso_service
            .as_ref()
            .and_then(|svc| svc.addrs.get(server))
        && callee != addr.to_string()
    {
        return Err(Status::failed_precondition(format!(
            "mismatch callee id, need http://{addr} but got {callee}"
        )));
    }
    let keyspace_id = header_keyspace(header);
    let requested_group = header.map_or(0, |h| h.keyspace_group_id);
    if requested_group >= MAX_KEYSPACE_GROUP_COUNT_IN_USE {
        return Err(go_error(format!(
            "[PD:common:ErrUnknown]unknown error invalid keyspace group id: {requested_group}"
        )));
    }
    let Some(svc) = state.pd.tso_service.as_mut() else {
        return Err(Status::unavailable("TSO service is not running"));
    };
    // A request naming a group the keyspace has left is still served when this server is the
    // primary of the keyspace's current group; the response header names that group.
    let actual_group = svc.group_of(keyspace_id);
    let group = if svc.is_primary(server, actual_group) {
        actual_group
    } else if svc.is_primary(server, requested_group) && actual_group == requested_group {
        requested_group
    } else {
        return Err(not_served(if svc.is_primary(server, requested_group) {
            actual_group
        } else {
            requested_group
        }));
    };
    if request.count == 0 {
        return Err(go_error(
            "[PD:common:ErrUnknown]unknown error [PD:tso:ErrGenerateTimestamp]generate timestamp \
             failed, tso count should be positive",
        ));
    }
    if request.count >= 1 << tso::LOGICAL_BITS {
        return Err(go_error(
            "[PD:common:ErrUnknown]unknown error [PD:tso:ErrGenerateTimestamp]generate timestamp \
             failed, generate tso maximum number of retries exceeded",
        ));
    }
    *svc.handled.entry((server, "Tso")).or_default() += 1;
    svc.last_tso_header
        .insert(server, (keyspace_id, requested_group));
    let now = state.clock.now_ms();
    let (physical, logical) = state.tso.allocate(now, request.count);
    Ok(tsopb::TsoResponse {
        header: ok_header(cluster_id, group),
        count: request.count,
        timestamp: Some(timestamp(physical, logical)),
    })
}

#[tonic::async_trait]
impl tsopb::tso_server::Tso for TsoService {
    type TsoStream = Stream<tsopb::TsoResponse>;

    async fn tso(
        &self,
        request: Request<Streaming<tsopb::TsoRequest>>,
    ) -> Result<Response<Self::TsoStream>, Status> {
        let server = self.server;
        Ok(answer_stream(
            self.shared.clone(),
            request.into_inner(),
            move |shared, request| async move { handle_tso(&shared, server, &request) },
        ))
    }

    async fn find_group_by_keyspace_id(
        &self,
        request: Request<tsopb::FindGroupByKeyspaceIdRequest>,
    ) -> Result<Response<tsopb::FindGroupByKeyspaceIdResponse>, Status> {
        let req = request.into_inner();
        let mut state = self.shared.lock();
        let cluster_id = state.cluster_id;
        let requested_group = req.header.as_ref().map_or(0, |h| h.keyspace_group_id);
        let requested_cluster = req.header.as_ref().map_or(0, |h| h.cluster_id);
        if requested_cluster != cluster_id {
            return Ok(Response::new(tsopb::FindGroupByKeyspaceIdResponse {
                header: error_header(
                    cluster_id,
                    tsopb::ErrorType::ClusterMismatched,
                    "cluster is mismatched",
                    requested_group,
                ),
                ..Default::default()
            }));
        }
        let keyspace_id = match req.keyspace {
            Some(tsopb::find_group_by_keyspace_id_request::Keyspace::KeyspaceId(id)) => id,
            _ => 0,
        };
        let Some(svc) = state.pd.tso_service.as_mut() else {
            return Err(Status::unavailable("TSO service is not running"));
        };
        *svc.handled
            .entry((self.server, "FindGroupByKeyspaceID"))
            .or_default() += 1;
        let mod_revision = svc.mod_revision;
        if req.mod_revision > mod_revision {
            return Ok(Response::new(tsopb::FindGroupByKeyspaceIdResponse {
                header: error_header(
                    cluster_id,
                    tsopb::ErrorType::InvalidValue,
                    "[PD:keyspace:ErrKeyspaceGroupModRevisionStale]keyspace group mod revision \
                     is stale",
                    requested_group,
                ),
                ..Default::default()
            }));
        }
        let group_id = svc.group_of(keyspace_id);
        let Some(group) = svc.groups.get(&group_id) else {
            return Ok(Response::new(tsopb::FindGroupByKeyspaceIdResponse {
                header: error_header(
                    cluster_id,
                    tsopb::ErrorType::Unknown,
                    "keyspace group not found",
                    group_id,
                ),
                ..Default::default()
            }));
        };
        let members = group
            .members
            .iter()
            .filter_map(|&m| {
                Some(tsopb::KeyspaceGroupMember {
                    address: svc.url(m)?,
                    is_primary: group.primary == Some(m),
                })
            })
            .collect();
        Ok(Response::new(tsopb::FindGroupByKeyspaceIdResponse {
            header: ok_header(cluster_id, group_id),
            keyspace_group: Some(tsopb::KeyspaceGroup {
                id: group_id,
                user_kind: USER_KIND_BASIC.to_owned(),
                split_state: None,
                members,
            }),
            mod_revision,
        }))
    }

    async fn get_min_ts(
        &self,
        request: Request<tsopb::GetMinTsRequest>,
    ) -> Result<Response<tsopb::GetMinTsResponse>, Status> {
        let req = request.into_inner();
        let mut state = self.shared.lock();
        let cluster_id = state.cluster_id;
        check_cluster_id(req.header.as_ref().map_or(0, |h| h.cluster_id), cluster_id)?;
        let now = state.clock.now_ms();
        let peek = state.tso.peek(now);
        let Some(svc) = state.pd.tso_service.as_mut() else {
            return Err(Status::unavailable("TSO service is not running"));
        };
        *svc.handled.entry((self.server, "GetMinTS")).or_default() += 1;
        let total = u32::try_from(svc.groups.len()).unwrap_or(u32::MAX);
        let serving = svc
            .groups
            .values()
            .filter(|g| g.primary == Some(self.server))
            .count();
        let serving = u32::try_from(serving).unwrap_or(u32::MAX);
        // A server that is no group's primary answers an empty timestamp, which callers skip.
        let timestamp = if serving == 0 {
            pdpb::Timestamp::default()
        } else {
            let physical = peek >> tso::LOGICAL_BITS;
            let logical = peek & ((1 << tso::LOGICAL_BITS) - 1);
            self::timestamp(physical, logical)
        };
        Ok(Response::new(tsopb::GetMinTsResponse {
            header: ok_header(cluster_id, 0),
            timestamp: Some(timestamp),
            keyspace_groups_serving: serving,
            keyspace_groups_total: total,
        }))
    }
}
