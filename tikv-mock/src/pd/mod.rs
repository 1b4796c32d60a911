//! The PD server: `pdpb.PD`, `keyspacepb.Keyspace`, `meta_storagepb.MetaStorage` (`Get`), gRPC
//! health and the subset of PD's HTTP API that clients use, all on the one PD address (gRPC and
//! HTTP/1.1 share the port, as with PD).
//!
//! Who calls it: `server.rs` builds these routes with [`routes`] when the cluster starts and
//! again on `MockCluster::start_pd`, so every piece of PD state lives in the cluster state
//! ([`PdState`] inside `ClusterState`) and survives a PD restart, as PD's etcd-backed state does.
//!
//! With several PD members (`MockClusterBuilder::pd_members`) each member serves these routes
//! on its own address over the same state; followers answer `GetMembers` and `GetClusterInfo`
//! and refuse everything else as a PD follower does ([`check_leader`]), with PD's two
//! exceptions, both decided from the request's metadata ([`route`], [`Role`]):
//!
//! - forwarding: a request carrying `pd-forwarded-host` that names the leader is handled by the
//!   leader on the client's behalf (unary calls and every message of a `Tso` stream), as PD's
//!   `unaryFollowerMiddleware` and `Tso` proxy do. The mock forwards in process: the leader only
//!   has to be running, not reachable by the client, which is exactly the partition
//!   `MockCluster::isolate_pd_member` creates. Forwarded requests are counted per (receiving
//!   member, leader).
//! - follower handle: region reads (`GetRegion`, `GetPrevRegion`, `GetRegionByID`,
//!   `ScanRegions`, `BatchScanRegions`) carrying `pd-allow-follower-handle` are answered by a
//!   follower from its copy of the region map (the shared state: the mock's followers are never
//!   behind), and `QueryRegion` streams are answered by followers without asking, as PD does. A
//!   follower whose region syncer is stopped (`MockCluster::set_pd_region_sync`), or that finds
//!   no region, answers with PD's `REGION_NOT_FOUND` header. Store reads stay leader-only, as in
//!   PD.
//!
//! Every handler is short: it asks the fault engine (phase Before), takes the state lock,
//! validates the request header, computes the answer, releases the lock, and asks the fault
//! engine again (phase AfterApply). Nothing awaits while holding the lock.
//!
//! Behaviour follows tikv/pd: `server/grpc_service.go` (request validation, error placement in
//! the response header versus the gRPC status), `pkg/utils/grpcutil/cluster.go` (region and store
//! queries), `server/gc_service.go` + `pkg/gc/gc_state_manager.go` (GC states, see [`gc`]),
//! `server/keyspace_service.go` + `pkg/keyspace` (see [`keyspace`]) and `server/api` +
//! `pkg/response` (HTTP JSON, see [`http`]).
//!
//! Submodules: [`service`] implements `pdpb.PD`; [`gc`] holds the GC state machine; [`keyspace`]
//! implements `keyspacepb.Keyspace`; [`http`] serves the JSON endpoints; [`meta_storage`] is
//! PD's etcd key space as clients read it; [`tso_service`] and [`router_service`] are the
//! optional TSO and router microservices, served on addresses of their own.

mod gc;
mod http;
mod keyspace;
pub(crate) mod meta_storage;
pub(crate) mod router_service;
mod service;
pub(crate) mod tso_service;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use tikv_proto::keyspacepb::keyspace_server::KeyspaceServer;
use tikv_proto::meta_storagepb::meta_storage_server::MetaStorageServer;
use tikv_proto::pdpb::{self, pd_server::PdServer};
use tonic::Status;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::service::Routes;

use crate::Shared;
use crate::fault::{Action, Phase, RequestInfo, Service};

pub(crate) use gc::GcState;

/// Prefix of the PD members' names (`pd-1`, `pd-2`, ...).
const MEMBER_NAME_PREFIX: &str = "pd-";
/// Member id of the first PD member; member `i` has `MEMBER_ID + i` (PD's ids are random
/// non-zero numbers).
const MEMBER_ID: u64 = 0x6d6f_636b_5044_0001;
/// What a PD follower answers to a request only the leader serves (PD's `ErrNotLeader`).
const NOT_LEADER: &str = "not leader";
/// What a PD follower answers to a region read that did not allow follower handling (PD's
/// `ErrFollowerHandlingNotAllowed`).
const FOLLOWER_HANDLING_NOT_ALLOWED: &str = "not leader and follower handling not allowed";
/// The metadata key naming the PD leader a follower should forward a request to (PD's
/// `ForwardMetadataKey`).
const FORWARDED_HOST: &str = "pd-forwarded-host";
/// The metadata key allowing a follower to answer a region read itself (PD's
/// `FollowerHandleMetadataKey`; its value is empty).
const FOLLOWER_HANDLE: &str = "pd-allow-follower-handle";
/// The header error text of PD's `grpcutil.RegionNotFound`.
const REGION_NOT_FOUND: &str = "region not found";
/// How a follower's TSO allocator fails a TSO request (PD's `ErrGenerateTimestamp`, which the
/// TSO stream returns as an UNKNOWN status).
const TSO_NOT_LEADER: &str =
    "[PD:tso:ErrGenerateTimestamp]generate timestamp failed, requested pd not leader of cluster";
/// The PD version the member reports.
const PD_VERSION: &str = "9.0.0";
/// How long PD keeps the status of a finished operator (`operatorStatusRemainTime`).
const OPERATOR_STATUS_REMAIN_MS: u64 = 10 * 60 * 1000;

/// PD's own state, kept inside the cluster state so that it survives a PD restart.
#[derive(Debug)]
pub(crate) struct PdState {
    /// GC safe points and barriers.
    pub(crate) gc: GcState,
    /// Operators PD ran, by region id, for `GetOperator`.
    operators: HashMap<u64, OperatorRecord>,
    /// The cluster's external timestamp (`SetExternalTimestamp`).
    external_ts: u64,
    /// The min resolved ts each store last reported, kept for stores that stopped reporting.
    store_resolved_ts: HashMap<u64, u64>,
    /// Bumped whenever a keyspace is created or changes, so keyspace watchers push the change at
    /// once.
    keyspace_changed: tokio::sync::watch::Sender<u64>,
    /// Members whose process is stopped: requests forwarded to them fail as a refused dial.
    down_members: HashSet<usize>,
    /// Members cut off from clients while their process runs (`isolate_pd_member`).
    isolated_members: HashSet<usize>,
    /// Followers whose region syncer is stopped (`set_pd_region_sync`).
    unsynced_members: HashSet<usize>,
    /// Requests forwarded, by (receiving member, member that handled them).
    forwarded: HashMap<(usize, usize), u64>,
    /// Requests a member handled itself (forwarded ones count for the member they were
    /// forwarded to; refusals are not counted), by (member, gRPC method).
    handled: HashMap<(usize, &'static str), u64>,
    /// The TSO microservice, when the cluster was built with one.
    pub(crate) tso_service: Option<tso_service::TsoServiceState>,
    /// PD's meta storage (the etcd key space microservices register in).
    pub(crate) meta_storage: meta_storage::MetaStorageState,
    /// The router microservice, when the cluster was built with one.
    pub(crate) router_service: Option<router_service::RouterServiceState>,
}

impl PdState {
    /// Wakes keyspace watchers; called by whatever changed a keyspace (PD or the control API).
    pub(crate) fn notify_keyspace_changed(&self) {
        self.keyspace_changed.send_modify(|v| *v += 1);
    }

    /// Records that a member's process stopped (`true`) or runs again (`false`).
    pub(crate) fn set_member_down(&mut self, member: usize, down: bool) {
        if down {
            self.down_members.insert(member);
            self.isolated_members.remove(&member);
        } else {
            self.down_members.remove(&member);
        }
    }

    /// Whether a member's process is stopped.
    pub(crate) fn is_member_down(&self, member: usize) -> bool {
        self.down_members.contains(&member)
    }

    /// Records that a running member is cut off from clients (`true`) or reachable again.
    pub(crate) fn set_member_isolated(&mut self, member: usize, isolated: bool) {
        if isolated {
            self.isolated_members.insert(member);
        } else {
            self.isolated_members.remove(&member);
        }
    }

    /// Whether a member is cut off from clients while it runs.
    pub(crate) fn is_member_isolated(&self, member: usize) -> bool {
        self.isolated_members.contains(&member)
    }

    /// Starts or stops a member's region syncer.
    pub(crate) fn set_region_sync(&mut self, member: usize, running: bool) {
        if running {
            self.unsynced_members.remove(&member);
        } else {
            self.unsynced_members.insert(member);
        }
    }

    /// Requests `via` forwarded to `to`.
    pub(crate) fn forwarded_count(&self, via: usize, to: usize) -> u64 {
        self.forwarded.get(&(via, to)).copied().unwrap_or(0)
    }

    /// Every forwarded-request count, by (receiving member, handling member).
    pub(crate) fn forwarded_counts(&self) -> BTreeMap<(usize, usize), u64> {
        self.forwarded.iter().map(|(k, n)| (*k, *n)).collect()
    }

    /// Requests of one method a member handled itself.
    pub(crate) fn request_count(&self, member: usize, command: &str) -> u64 {
        self.handled
            .iter()
            .filter(|((m, c), _)| *m == member && *c == command)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Forgets the forwarded and handled request counts, router servers' included.
    pub(crate) fn reset_counts(&mut self) {
        self.forwarded.clear();
        self.handled.clear();
        if let Some(router) = self.router_service.as_mut() {
            router.reset_counts();
        }
    }

    fn count_handled(&mut self, member: usize, command: &'static str) {
        *self.handled.entry((member, command)).or_default() += 1;
    }
}

impl Default for PdState {
    fn default() -> Self {
        PdState {
            gc: GcState::default(),
            operators: HashMap::new(),
            external_ts: 0,
            store_resolved_ts: HashMap::new(),
            keyspace_changed: tokio::sync::watch::Sender::new(0),
            down_members: HashSet::new(),
            isolated_members: HashSet::new(),
            unsynced_members: HashSet::new(),
            forwarded: HashMap::new(),
            handled: HashMap::new(),
            tso_service: None,
            meta_storage: meta_storage::MetaStorageState::default(),
            router_service: None,
        }
    }
}

/// A finished operator, as PD's operator controller remembers it.
#[derive(Debug, Clone)]
struct OperatorRecord {
    desc: &'static str,
    kind: &'static str,
    status: pdpb::OperatorStatus,
    finished_at_ms: u64,
}

/// The gRPC services and HTTP routes served on the address of PD member `member`.
pub(crate) fn routes(shared: Arc<Shared>, member: usize) -> Routes {
    // Gzip requests are accepted and answers compressed for clients that accept it. PD's own
    // grpc-go server decompresses gzip only when the codec is linked in; being lenient here
    // lets clients that compress every channel use the mock.
    let pd = PdServer::new(service::PdService::new(shared.clone(), member))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let keyspace = KeyspaceServer::new(keyspace::KeyspaceService::new(shared.clone(), member))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    // The reporter starts with "" SERVING, which is all clients probe; it is not kept because
    // the mock's PD never reports itself unhealthy (a stopped PD refuses connections instead).
    let meta_storage = MetaStorageServer::new(meta_storage::MetaStorageService::new(
        shared.clone(),
        member,
    ));
    let (_reporter, health) = tonic_health::server::health_reporter();
    let grpc = Routes::new(pd)
        .add_service(keyspace)
        .add_service(meta_storage)
        .add_service(health);
    let router = grpc
        .into_axum_router()
        .merge(http::router(shared))
        .fallback(not_found);
    Routes::from(router)
}

/// Anything else: gRPC calls to services PD-the-mock does not serve get UNIMPLEMENTED (clients
/// fall back on it), other HTTP requests get Go's `404 page not found`.
async fn not_found(request: axum::extract::Request) -> axum::response::Response {
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return Status::unimplemented("").into_http();
    }
    let mut response =
        axum::response::Response::new(axum::body::Body::from("404 page not found\n"));
    *response.status_mut() = axum::http::StatusCode::NOT_FOUND;
    response
}

// ----- helpers shared by the services --------------------------------------------------------

/// PD's leader check (`validateRequest`): a follower refuses what only the leader serves with
/// an UNAVAILABLE status, which clients take as a cue to look for the new leader.
fn check_leader(shared: &Shared, member: usize) -> Result<(), Status> {
    if shared.pd_leader.load(std::sync::atomic::Ordering::SeqCst) == member {
        Ok(())
    } else {
        Err(Status::unavailable(NOT_LEADER))
    }
}

/// Which requests a follower may answer itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Only the leader serves it (PD's `unaryMiddleware`).
    LeaderOnly,
    /// A follower serves it when the request allows follower handling (PD's
    /// `unaryFollowerMiddleware` with `allowFollower`).
    FollowerRead,
}

/// How the member that handles a request serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// As the leader, from the cluster state.
    Leader,
    /// As a follower whose region syncer runs: from its region map, "region not found" when the
    /// region is missing.
    Follower,
    /// As a follower whose region syncer is stopped: "region not found" for everything.
    UnsyncedFollower,
}

/// Where a request that reached a member is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// By the member it reached.
    Local,
    /// By the leader, on the client's behalf.
    Forward {
        /// The leader.
        to: usize,
    },
}

/// PD's forwarding decision (`unaryFollowerMiddleware`, `validatePDForwardedHost`,
/// `isLocalRequest`): without `pd-forwarded-host` (or with an empty one) the request is local;
/// otherwise the host must be a client URL of the leader (the scheme may differ), and the
/// request goes to the leader unless this member is the leader.
fn route(shared: &Shared, member: usize, metadata: &MetadataMap) -> Result<Route, Status> {
    let host = metadata
        .get(FORWARDED_HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if host.is_empty() {
        return Ok(Route::Local);
    }
    let leader = shared.pd_leader.load(std::sync::atomic::Ordering::SeqCst);
    let leader_url = shared
        .pd_addrs
        .get(leader)
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    if !same_client_url(&leader_url, host) {
        // PD keeps the not-leader marker so that clients refresh their member list.
        return Err(Status::invalid_argument(format!(
            "forwarded host {host:?} is not a client URL of the PD leader: pd {NOT_LEADER} of \
             cluster"
        )));
    }
    Ok(if leader == member {
        Route::Local
    } else {
        Route::Forward { to: leader }
    })
}

/// PD's `isSamePDClientURL`: both must be http(s) URLs that differ at most in the scheme.
fn same_client_url(a: &str, b: &str) -> bool {
    fn base(url: &str) -> Option<&str> {
        url.strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
    }
    matches!((base(a), base(b)), (Some(x), Some(y)) if x == y)
}

/// The member that handles a request routed `route` from `member`, counting a forward. A
/// forward to a member whose process is stopped fails as grpc-go's dial to it would.
fn handler(shared: &Shared, member: usize, route: Route) -> Result<usize, Status> {
    let Route::Forward { to } = route else {
        return Ok(member);
    };
    let mut state = shared.lock();
    if state.pd.is_member_down(to) {
        let addr = shared
            .pd_addrs
            .get(to)
            .map(ToString::to_string)
            .unwrap_or_default();
        return Err(Status::unavailable(format!(
            "connection error: desc = \"transport: Error while dialing: dial tcp {addr}: connect: \
             connection refused\""
        )));
    }
    *state.pd.forwarded.entry((member, to)).or_default() += 1;
    Ok(to)
}

/// PD's `validateRoleInRequest`: the leader serves everything; a follower serves a region read
/// that carries `pd-allow-follower-handle`, and refuses everything else.
fn role(
    shared: &Shared,
    member: usize,
    access: Access,
    metadata: &MetadataMap,
) -> Result<Role, Status> {
    if check_leader(shared, member).is_ok() {
        return Ok(Role::Leader);
    }
    match access {
        Access::LeaderOnly => Err(Status::unavailable(NOT_LEADER)),
        Access::FollowerRead if metadata.get(FOLLOWER_HANDLE).is_none() => {
            Err(Status::unavailable(FOLLOWER_HANDLING_NOT_ALLOWED))
        }
        Access::FollowerRead => Ok(follower_role(shared, member)),
    }
}

/// A follower's role for reads it serves: synced unless its region syncer was stopped.
fn follower_role(shared: &Shared, member: usize) -> Role {
    if shared.lock().pd.unsynced_members.contains(&member) {
        Role::UnsyncedFollower
    } else {
        Role::Follower
    }
}

/// The header of PD's `grpcutil.RegionNotFound`.
fn region_not_found_header(cluster_id: u64) -> Option<pdpb::ResponseHeader> {
    error_header(
        cluster_id,
        pdpb::ErrorType::RegionNotFound,
        REGION_NOT_FOUND,
    )
}

/// Every PD member as `GetMembers` lists it.
fn members(shared: &Shared) -> Vec<pdpb::Member> {
    shared
        .pd_addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let url = format!("http://{addr}");
            pdpb::Member {
                name: format!("{MEMBER_NAME_PREFIX}{}", i + 1),
                member_id: MEMBER_ID + i as u64,
                peer_urls: vec![url.clone()],
                client_urls: vec![url],
                binary_version: PD_VERSION.to_owned(),
                ..Default::default()
            }
        })
        .collect()
}

/// A response header carrying the cluster id and no error.
fn ok_header(cluster_id: u64) -> Option<pdpb::ResponseHeader> {
    Some(pdpb::ResponseHeader {
        cluster_id,
        error: None,
    })
}

/// A response header carrying an error, as PD's `grpcutil.WrapErrorToHeader`.
fn error_header(
    cluster_id: u64,
    kind: pdpb::ErrorType,
    message: impl Into<String>,
) -> Option<pdpb::ResponseHeader> {
    Some(pdpb::ResponseHeader {
        cluster_id,
        error: Some(pdpb::Error {
            r#type: kind as i32,
            message: message.into(),
        }),
    })
}

/// The cluster id a request header carries (0 without a header).
fn request_cluster_id(header: Option<&pdpb::RequestHeader>) -> u64 {
    header.map_or(0, |h| h.cluster_id)
}

/// PD's request validation: the header must carry exactly this cluster's id (PD rejects 0 too,
/// except in `GetMembers` and `GetClusterInfo`, which is how clients learn the id).
fn check_cluster_id(requested: u64, cluster_id: u64) -> Result<(), Status> {
    if requested == cluster_id {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "mismatch cluster id, need {cluster_id} but got {requested}"
    )))
}

/// A Go error returned from a PD gRPC handler: grpc-go turns it into an UNKNOWN status
/// carrying the error text.
fn go_error(message: impl Into<String>) -> Status {
    Status::unknown(message.into())
}

/// Runs the fault engine for a PD request and performs what the matching rule says. Region and
/// key errors mean nothing to PD and are ignored.
async fn fault(
    shared: &Shared,
    phase: Phase,
    command: &str,
    region_id: Option<u64>,
    keys: &[Bytes],
) -> Result<(), Status> {
    fault_on(shared, Service::Pd, None, phase, command, region_id, keys).await
}

/// [`fault`] for any PD-side server: PD itself, or a microservice server (`server`: its index,
/// matched as the rule's store).
async fn fault_on(
    shared: &Shared,
    service: Service,
    server: Option<u64>,
    phase: Phase,
    command: &str,
    region_id: Option<u64>,
    keys: &[Bytes],
) -> Result<(), Status> {
    let info = RequestInfo {
        service,
        store_id: server,
        command,
        region_id,
        keys,
        start_ts: None,
        batched: false,
        forwarded_via: None,
    };
    match shared.faults.check(&info, phase) {
        None | Some(Action::RegionError(_) | Action::KeyError(_)) => Ok(()),
        Some(Action::Status { code, message }) => Err(Status::new(code, message)),
        Some(Action::Delay(by)) => {
            tokio::time::sleep(by).await;
            Ok(())
        }
        Some(Action::Drop) => std::future::pending().await,
        Some(Action::Hang(handle)) => {
            handle.wait().await;
            Ok(())
        }
    }
}

/// Formats milliseconds since the Unix epoch as Go's `time.Time.String()` does in UTC, e.g.
/// `2024-05-01 08:00:00 +0000 UTC` (PD prints GC barrier expirations this way).
fn go_time_string(ms: u64) -> String {
    let (date, time, frac) = utc_parts(ms);
    let frac = if frac == 0 {
        String::new()
    } else {
        format!(".{}", format!("{frac:03}").trim_end_matches('0'))
    };
    format!("{date} {time}{frac} +0000 UTC")
}

/// Formats milliseconds since the Unix epoch as RFC 3339 in UTC, as Go marshals `time.Time`.
fn rfc3339(ms: u64) -> String {
    let (date, time, frac) = utc_parts(ms);
    let frac = if frac == 0 {
        String::new()
    } else {
        format!(".{}", format!("{frac:03}").trim_end_matches('0'))
    };
    format!("{date}T{time}{frac}Z")
}

/// (`YYYY-MM-DD`, `hh:mm:ss`, milliseconds) of a UTC instant.
fn utc_parts(ms: u64) -> (String, String, u64) {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!("{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60),
        ms % 1000,
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (eras of 400 years keep the
/// arithmetic exact).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days since 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Formats a duration in milliseconds as Go's `time.Duration.String()` does (`1h2m3.5s`).
fn go_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let hours = ms / 3_600_000;
    let minutes = ms / 60_000 % 60;
    let secs = ms / 1000 % 60;
    let frac = ms % 1000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&secs.to_string());
    if frac > 0 {
        out.push('.');
        out.push_str(format!("{frac:03}").trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_time_and_duration_formats() {
        assert_eq!(go_time_string(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(
            go_time_string(1_714_550_400_000),
            "2024-05-01 08:00:00 +0000 UTC"
        );
        assert_eq!(
            go_time_string(951_782_400_500),
            "2000-02-29 00:00:00.5 +0000 UTC"
        );
        assert_eq!(rfc3339(1_709_164_800_123), "2024-02-29T00:00:00.123Z");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(250), "250ms");
        assert_eq!(go_duration(1_500), "1.5s");
        assert_eq!(go_duration(90_000), "1m30s");
        assert_eq!(go_duration(3_600_000), "1h0m0s");
    }

    #[test]
    fn cluster_id_check_is_exact() {
        assert!(check_cluster_id(7, 7).is_ok());
        let e = check_cluster_id(0, 7).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(e.message(), "mismatch cluster id, need 7 but got 0");
    }
}

#[cfg(test)]
mod member_tests {
    use tikv_proto::pdpb::pd_client::PdClient;
    use tokio_stream::StreamExt;

    use super::*;
    use crate::MockCluster;

    async fn client(cluster: &MockCluster, member: usize) -> PdClient<tonic::transport::Channel> {
        PdClient::connect(format!("http://{}", cluster.pd_endpoints()[member]))
            .await
            .unwrap()
    }

    fn header(cluster: &MockCluster) -> Option<pdpb::RequestHeader> {
        Some(pdpb::RequestHeader {
            cluster_id: cluster.cluster_id(),
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn followers_answer_as_pd_followers_do() {
        let cluster = MockCluster::builder().pd_members(3).start().await.unwrap();
        assert_eq!(cluster.pd_endpoints().len(), 3);
        assert_eq!(cluster.pd_leader(), 0);

        // Every member lists every member and names the leader.
        let mut follower = client(&cluster, 1).await;
        let members = follower
            .get_members(pdpb::GetMembersRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(members.members.len(), 3);
        let leader = members.leader.unwrap();
        assert_eq!(leader.name, "pd-1");
        assert_eq!(
            leader.client_urls,
            vec![format!("http://{}", cluster.pd_endpoints()[0])]
        );

        // A follower refuses what only the leader serves.
        let status = follower
            .get_all_stores(pdpb::GetAllStoresRequest {
                header: header(&cluster),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), NOT_LEADER);
        let request = pdpb::TsoRequest {
            header: header(&cluster),
            count: 1,
            dc_location: String::new(),
        };
        let mut stream = follower
            .tso(tokio_stream::iter(vec![request.clone()]))
            .await
            .unwrap()
            .into_inner();
        let status = stream.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unknown);
        assert_eq!(status.message(), TSO_NOT_LEADER);

        // Leadership moves; the former leader becomes a follower at once.
        cluster.transfer_pd_leader(1).unwrap();
        follower
            .get_all_stores(pdpb::GetAllStoresRequest {
                header: header(&cluster),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut former = client(&cluster, 0).await;
        let status = former
            .get_region(pdpb::GetRegionRequest {
                header: header(&cluster),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(cluster.transfer_pd_leader(3).is_err());

        // Stopping the leader elects the first member still running; restarting brings the
        // member back as a follower.
        cluster.stop_pd_member(1).await.unwrap();
        assert_eq!(cluster.pd_leader(), 0);
        assert!(cluster.stop_pd_member(1).await.is_err());
        cluster.start_pd_member(1).await.unwrap();
        assert_eq!(cluster.pd_leader(), 0);
        let mut again = client(&cluster, 1).await;
        let members = again
            .get_members(pdpb::GetMembersRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(members.leader.unwrap().member_id, MEMBER_ID);

        // stop_pd / start_pd act on every member.
        cluster.stop_pd().await;
        cluster.start_pd().await.unwrap();
        client(&cluster, 2)
            .await
            .get_members(pdpb::GetMembersRequest::default())
            .await
            .unwrap();

        assert!(MockCluster::builder().pd_members(0).start().await.is_err());
    }
}
