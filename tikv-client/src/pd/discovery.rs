//! PD member discovery: the cluster id, the member list, the current leader, the health of
//! every member, and where a request goes.
//!
//! Who calls it: [`super::client`] builds a [`Discovery`] in `PdClient::connect`, asks it where
//! to send every call ([`Discovery::leader_target`], [`Discovery::follower_read_member`]) and
//! asks it to refresh after a leader-change failure; the TSO dispatcher and the router do the
//! same for their streams. Two background tasks run until the client shuts down: `run_refresh`
//! refreshes the member list every minute and whenever a failure asked for it, and
//! `run_health_checks` probes every member's gRPC health service every second (PD's
//! `memberHealthCheckLoop`) while forwarding or follower reads need to know. The router-server
//! discovery (`super::router_discovery`) reuses [`Health`], [`probe`] and the client's
//! connector for the router servers of PD's microservice mode.
//!
//! Routing, as PD's `serviceDiscovery` does it. A leader-only call goes to the leader; with
//! forwarding on and the leader unreachable (its last health check failed) it goes to a healthy
//! follower, round-robin, carrying `pd-forwarded-host: <leader>` (`GetServiceClient`,
//! `ForwardAPIKind`). A region read that may be served by a follower goes round-robin to any
//! healthy member, leader included (`GetServiceClientByKind(UniversalAPIKind)`); a follower that
//! answered "region not found" is skipped for ten seconds (`serviceAPIClient.NeedRetry`). When
//! the leader's health check passes again, leader-only calls go straight to it again.
//!
//! Ports tikv/pd `client/servicediscovery/service_discovery.go`: `initClusterID` (every seed is
//! asked; seeds that disagree on the cluster id make the connection fail), `updateMember` (ask
//! the members in turn, skip one that reports another cluster id or knows no leader, switch to
//! the leader it names), `updateMemberLoop` (a minute's ticker plus on-demand checks with a
//! bounded backoff) and `ScheduleCheckMemberChanged`. Refreshes are single-flight: callers that
//! failed on the same view of the members wait for one refresh instead of each asking PD.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tikv_proto::pdpb::{self, pd_client::PdClient as PdGrpc};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::conn::{Connector, PdChannel};
use super::retry::{Backoff, Failure, Retried, classify_status, retry_in_background};
use crate::error::ErrorSource;
use crate::{Error, Result};

/// How long one `GetMembers` may take during a refresh (PD's `UpdateMemberTimeout`).
const UPDATE_MEMBER_TIMEOUT: Duration = Duration::from_secs(1);
/// How often every member's health is probed (PD's `MemberHealthCheckInterval`).
pub(crate) const MEMBER_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a follower that answered a region read with "region not found" is left out of
/// follower reads (PD's `serviceAPIClient` marks it unavailable for ten seconds).
const REGION_NOT_FOUND_COOLDOWN: Duration = Duration::from_secs(10);

/// What the client knows about one member's health; kept per URL across refreshes.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// The last probe (or a call) found the member unreachable (PD's `networkFailure`).
    network_failure: AtomicBool,
    /// Until when follower reads skip the member after it had no region to give.
    region_unavailable_until: Mutex<Option<Instant>>,
}

impl Health {
    /// Reachable, as far as the last probe knows (PD's `serviceClient.Available`).
    pub(crate) fn is_available(&self) -> bool {
        !self.network_failure.load(Ordering::Acquire)
    }

    pub(crate) fn set_network_failure(&self, failed: bool) {
        self.network_failure.store(failed, Ordering::Release);
    }

    /// Reachable and not cooling down after a "region not found" (PD's
    /// `serviceAPIClient.Available`, with `markAsAvailable` folded in).
    fn is_available_for_reads(&self, now: Instant) -> bool {
        if !self.is_available() {
            return false;
        }
        let mut until = self
            .region_unavailable_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match *until {
            Some(t) if now < t => false,
            Some(_) => {
                *until = None;
                true
            }
            None => true,
        }
    }

    /// Leaves the member out of follower reads for a while (a first mark sticks until it ends,
    /// as PD's compare-and-swap does).
    pub(crate) fn mark_region_unavailable(&self, now: Instant) {
        let mut until = self
            .region_unavailable_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if until.is_none_or(|t| now >= t) {
            *until = Some(now + REGION_NOT_FOUND_COOLDOWN);
        }
    }
}

/// One PD member: its URL, its channel, and its health.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) url: String,
    pub(crate) channel: Channel,
    pub(crate) health: Arc<Health>,
}

/// The PD leader as last discovered.
pub(crate) type Leader = Member;

/// One consistent view of the PD members.
#[derive(Debug, Default)]
pub(crate) struct MemberView {
    /// Client URLs of every member, sorted (PD's `updateURLs`).
    pub(crate) urls: Vec<String>,
    pub(crate) leader: Option<Leader>,
    /// Every other member with a client URL, in member order.
    pub(crate) followers: Vec<Member>,
}

/// Where one attempt of a leader-only call goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The member contacted.
    pub(crate) url: String,
    /// Its channel, with `pd-forwarded-host` when `forwarded_to` is set.
    pub(crate) channel: PdChannel,
    /// The leader the contacted follower forwards to, if the leader is not contacted directly.
    pub(crate) forwarded_to: Option<String>,
}

impl Target {
    /// The same route: same member contacted, same forwarding.
    pub(crate) fn same_route(&self, url: &str, forwarded_to: Option<&str>) -> bool {
        self.url == url && self.forwarded_to.as_deref() == forwarded_to
    }
}

/// Member discovery state shared by the client's calls and background tasks.
#[derive(Debug)]
pub(crate) struct Discovery {
    cluster_id: u64,
    connector: Connector,
    /// The endpoints the client was given, normalized; asked when no known member answers.
    seeds: Vec<String>,
    view: RwLock<Arc<MemberView>>,
    /// Bumped by every successful refresh, so that callers can tell whether the view changed
    /// since they read it.
    generation: AtomicU64,
    refresh: tokio::sync::Mutex<()>,
    check_requested: Notify,
    timeout: Duration,
    /// Health per member URL, kept across refreshes.
    health: Mutex<HashMap<String, Arc<Health>>>,
    /// Round-robin positions of forwarding and of follower reads (PD's two balancers).
    forward_cursor: AtomicUsize,
    read_cursor: AtomicUsize,
}

impl Discovery {
    /// How this client connects to PD members.
    pub(crate) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// Asks every seed for the members, fixes the cluster id and finds the leader, retrying
    /// within `budget`.
    pub(crate) async fn connect(
        seeds: Vec<String>,
        connector: Connector,
        budget: Duration,
    ) -> Result<Discovery> {
        let deadline = Instant::now() + budget;
        let mut backoff = Backoff::call();
        loop {
            let answers = ask_all(&connector, &seeds, deadline).await;
            let mut cluster_id = None;
            let mut last_error = None;
            let mut with_leader = None;
            for (url, answer) in answers {
                match answer {
                    Ok(resp) => {
                        let id = resp.header.as_ref().map_or(0, |h| h.cluster_id);
                        match cluster_id {
                            None => cluster_id = Some(id),
                            Some(expected) if expected != id => {
                                return Err(Error::ClusterIdMismatch {
                                    expected,
                                    actual: id,
                                });
                            }
                            Some(_) => {}
                        }
                        if with_leader.is_none() && leader_urls(&resp).is_some() {
                            with_leader = Some(resp);
                        }
                    }
                    Err(e) => last_error = Some((url, e)),
                }
            }
            if let (Some(cluster_id), Some(resp)) = (cluster_id, &with_leader) {
                let discovery = Discovery {
                    cluster_id,
                    connector,
                    seeds,
                    view: RwLock::new(Arc::new(MemberView::default())),
                    generation: AtomicU64::new(0),
                    refresh: tokio::sync::Mutex::new(()),
                    check_requested: Notify::new(),
                    timeout: budget,
                    health: Mutex::new(HashMap::new()),
                    forward_cursor: AtomicUsize::new(0),
                    read_cursor: AtomicUsize::new(0),
                };
                discovery.apply(resp)?;
                return Ok(discovery);
            }
            if !backoff.sleep_before(deadline).await {
                return Err(match (cluster_id, last_error) {
                    (Some(_), _) => Error::PdServerTimeout {
                        message: format!("no PD member knows a leader after {budget:?}"),
                    },
                    (None, Some((url, e))) => Error::Connect {
                        address: url,
                        message: format!("no PD endpoint answered within {budget:?}: {e}"),
                        source: Some(ErrorSource::new(e)),
                    },
                    (None, None) => Error::Connect {
                        address: seeds.join(","),
                        message: format!("no PD endpoint answered within {budget:?}"),
                        source: None,
                    },
                });
            }
        }
    }

    pub(crate) fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// A (lazily connected, cached) channel to `url` with the client's TLS and timeouts; the
    /// TSO service discovery reaches TSO servers through it.
    pub(crate) fn channel(&self, url: &str) -> Result<Channel> {
        self.connector.channel(url)
    }

    /// A channel of its own to a server discovered outside the member list (a router
    /// server): not cached, so that it closes once the server is forgotten.
    pub(crate) fn open_channel(&self, url: &str) -> Result<Channel> {
        self.connector.open(url)
    }

    /// `addr` as this client dials it: the scheme TLS calls for, no trailing slash (PD's
    /// `PickMatchedURL` on one URL).
    pub(crate) fn normalize_url(&self, addr: &str) -> Result<String> {
        self.connector.tls().url(addr)
    }

    /// How long one member-discovery round may take (`pd-server-timeout`).
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn view(&self) -> Arc<MemberView> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Where a leader-only call goes now (PD's `GetServiceClient` + `BuildGRPCTargetContext`
    /// with `mustLeader`): the leader, or with `forwarding` and an unreachable leader a healthy
    /// follower that forwards to it. Also returns the generation the choice was made in.
    pub(crate) fn leader_target(&self, forwarding: bool) -> (u64, Option<Target>) {
        let generation = self.generation.load(Ordering::Acquire);
        let view = self.view();
        let Some(leader) = view.leader.as_ref() else {
            return (generation, None);
        };
        if forwarding && !leader.health.is_available() {
            let healthy: Vec<&Member> = view
                .followers
                .iter()
                .filter(|f| f.health.is_available())
                .collect();
            if !healthy.is_empty() {
                let i = self.forward_cursor.fetch_add(1, Ordering::Relaxed) % healthy.len();
                let via = healthy[i];
                match PdChannel::forwarded(via.channel.clone(), &leader.url) {
                    Ok(channel) => {
                        return (
                            generation,
                            Some(Target {
                                url: via.url.clone(),
                                channel,
                                forwarded_to: Some(leader.url.clone()),
                            }),
                        );
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot forward through a follower"),
                }
            }
        }
        let target = Target {
            url: leader.url.clone(),
            channel: PdChannel::direct(leader.channel.clone()),
            forwarded_to: None,
        };
        (generation, Some(target))
    }

    /// The leader's URL and whether leader-only calls would now be forwarded to it through a
    /// follower (what [`Discovery::leader_target`] would choose, without moving its
    /// round-robin).
    pub(crate) fn leader_route(&self, forwarding: bool) -> Option<(String, bool)> {
        let view = self.view();
        let leader = view.leader.as_ref()?;
        let forwarded = forwarding
            && !leader.health.is_available()
            && view.followers.iter().any(|f| f.health.is_available());
        Some((leader.url.clone(), forwarded))
    }

    /// The member a follower-handled region read goes to (PD's `UniversalAPIKind` balancer):
    /// round-robin over the leader and the followers that are healthy and not cooling down
    /// after a "region not found". `None` when none qualifies. The flag says whether it is the
    /// leader.
    pub(crate) fn follower_read_member(&self) -> Option<(Member, bool)> {
        let view = self.view();
        let now = Instant::now();
        let mut all: Vec<(&Member, bool)> = Vec::with_capacity(view.followers.len() + 1);
        if let Some(leader) = view.leader.as_ref() {
            all.push((leader, true));
        }
        all.extend(view.followers.iter().map(|f| (f, false)));
        if all.is_empty() {
            return None;
        }
        // Like PD's balancer, the next pick starts after the member just picked, so members
        // that are skipped do not shift the load onto their neighbour.
        let start = self.read_cursor.load(Ordering::Relaxed);
        let n = all.len();
        let picked = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| all[i].0.health.is_available_for_reads(now))?;
        self.read_cursor.store(picked + 1, Ordering::Relaxed);
        let (member, is_leader) = all[picked];
        Some((member.clone(), is_leader))
    }

    /// The healthy members, leader first (for the router's follower-handled streams).
    pub(crate) fn healthy_members(&self) -> Vec<(Member, bool)> {
        let view = self.view();
        let now = Instant::now();
        view.leader
            .iter()
            .map(|l| (l, true))
            .chain(view.followers.iter().map(|f| (f, false)))
            .filter(|(m, _)| m.health.is_available_for_reads(now))
            .map(|(m, is_leader)| (m.clone(), is_leader))
            .collect()
    }

    /// Probes the leader's health now, bounded by `deadline` and the call timeout (PD's
    /// `checkLeaderHealth`, run at once after a call found the leader unreachable instead of
    /// waiting for the next tick). Returns whether it is healthy.
    pub(crate) async fn check_leader_health(&self, deadline: Instant) -> bool {
        let Some(leader) = self.view().leader.clone() else {
            return false;
        };
        let deadline = deadline.min(Instant::now() + self.timeout);
        let healthy = probe(&leader.channel, deadline).await;
        leader.health.set_network_failure(!healthy);
        healthy
    }

    /// Probes every member once: the leader within the call timeout, followers within a third
    /// of `interval` (PD's `checkLeaderHealth` + `checkFollowerHealth`), all at once.
    pub(crate) async fn check_health(&self, interval: Duration) {
        let view = self.view();
        let now = Instant::now();
        let follower_deadline = now + (interval / 3).max(Duration::from_millis(10));
        let leader = view.leader.clone();
        let leader_check = async move {
            if let Some(leader) = leader {
                let healthy = probe(&leader.channel, now + self.timeout).await;
                leader.health.set_network_failure(!healthy);
            }
        };
        let followers = view.followers.iter().map(|f| async move {
            let healthy = probe(&f.channel, follower_deadline).await;
            f.health.set_network_failure(!healthy);
        });
        tokio::join!(leader_check, futures_util::future::join_all(followers));
    }

    /// The background health checks: every `interval` while `wanted()` says someone uses the
    /// results (forwarding, follower reads). Ends when `shutdown` fires or its sender is
    /// dropped.
    pub(crate) async fn run_health_checks(
        self: Arc<Self>,
        interval: Duration,
        wanted: impl Fn() -> bool + Send,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
            if !wanted() {
                continue;
            }
            tokio::select! {
                () = self.check_health(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Asks the background task to refresh the members soon (PD's
    /// `ScheduleCheckMemberChanged`).
    pub(crate) fn schedule_check(&self) {
        self.check_requested.notify_one();
    }

    /// Refreshes the members unless a refresh finished since the caller read `seen`
    /// generation; returns once a view newer than `seen` is in place or every member failed.
    pub(crate) async fn refresh(&self, seen: u64, deadline: Instant) -> Result<()> {
        let _single = match tokio::time::timeout_at(deadline, self.refresh.lock()).await {
            Ok(guard) => guard,
            Err(_) => return Err(self.no_leader("refreshing PD members")),
        };
        if self.generation.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        let view = self.view();
        let mut candidates: Vec<&String> = view.urls.iter().collect();
        for seed in &self.seeds {
            if !candidates.contains(&seed) {
                candidates.push(seed);
            }
        }
        // Members the probes found unreachable are asked last: a partitioned leader must not
        // cost every refresh a timeout before a follower is asked.
        {
            let health = self.health.lock().unwrap_or_else(|p| p.into_inner());
            candidates.sort_by_key(|url| health.get(*url).is_some_and(|h| !h.is_available()));
        }
        let mut last = None;
        for url in candidates {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            let call_deadline = Instant::now() + left.min(UPDATE_MEMBER_TIMEOUT);
            match get_members(&self.connector, url, call_deadline).await {
                Err(e) => last = Some(e),
                Ok(resp) => {
                    let id = resp.header.as_ref().map_or(0, |h| h.cluster_id);
                    if id != self.cluster_id {
                        // A member of another cluster is never used.
                        last = Some(Error::ClusterIdMismatch {
                            expected: self.cluster_id,
                            actual: id,
                        });
                        continue;
                    }
                    if leader_urls(&resp).is_none() {
                        last = Some(Error::PdServerTimeout {
                            message: format!("PD member {url} knows no leader"),
                        });
                        continue;
                    }
                    self.apply(&resp)?;
                    return Ok(());
                }
            }
        }
        Err(last.unwrap_or_else(|| self.no_leader("refreshing PD members")))
    }

    fn no_leader(&self, what: &str) -> Error {
        Error::PdServerTimeout {
            message: format!("{what}: no PD leader within {:?}", self.timeout),
        }
    }

    /// Installs the members and leader of a `GetMembers` answer.
    fn apply(&self, resp: &pdpb::GetMembersResponse) -> Result<()> {
        let tls = self.connector.tls();
        let mut urls: Vec<String> = resp
            .members
            .iter()
            .flat_map(|m| m.client_urls.iter())
            .filter_map(|u| tls.url(u).ok())
            .collect();
        urls.sort();
        urls.dedup();
        let leader_id = resp.leader.as_ref().map(|l| l.member_id);
        let old_leader = self.view().leader.as_ref().map(|l| l.url.clone());
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept: HashMap<String, Arc<Health>> = HashMap::new();
        let mut member = |url: String| -> Result<Member> {
            let h = health.get(&url).cloned().unwrap_or_default();
            kept.insert(url.clone(), h.clone());
            Ok(Member {
                channel: self.connector.channel(&url)?,
                url,
                health: h,
            })
        };
        let leader = match resp.leader.as_ref() {
            Some(m) => match tls.pick_url(&m.client_urls) {
                Some(url) => Some(member(url)?),
                None => None,
            },
            None => None,
        };
        let mut followers = Vec::new();
        for m in &resp.members {
            if Some(m.member_id) == leader_id {
                continue;
            }
            if let Some(url) = tls.pick_url(&m.client_urls)
                && leader.as_ref().is_none_or(|l| l.url != url)
            {
                followers.push(member(url)?);
            }
        }
        // A new leader starts out reachable, as PD's freshly made leader client does.
        if let Some(l) = leader.as_ref()
            && old_leader.as_deref() != Some(l.url.as_str())
        {
            l.health.set_network_failure(false);
        }
        *health = kept;
        drop(health);
        let view = Arc::new(MemberView {
            urls,
            leader,
            followers,
        });
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = view;
        self.generation.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The background refresh: every `interval`, and whenever a failure asked for it, refresh
    /// the members with PD's bounded member-update backoff. Ends when `shutdown` fires or its
    /// sender is dropped.
    pub(crate) async fn run_refresh(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = self.check_requested.notified() => {}
                _ = shutdown.changed() => return,
            }
            let deadline = Instant::now() + UPDATE_MEMBER_TIMEOUT;
            let refreshed = retry_in_background(deadline, &mut shutdown, || async {
                // Read per attempt: a refresh that another caller completed meanwhile counts.
                let seen = self.generation.load(Ordering::Acquire);
                self.refresh(seen, deadline).await.is_ok()
            });
            match refreshed.await {
                Retried::Done => {}
                Retried::GaveUp => tracing::warn!(
                    cluster_id = self.cluster_id,
                    "PD member refresh failed; will retry on the next check"
                ),
                Retried::Shutdown => return,
            }
        }
    }
}

/// The leader's client URLs, when the answer names a leader that has some.
fn leader_urls(resp: &pdpb::GetMembersResponse) -> Option<&[String]> {
    resp.leader
        .as_ref()
        .map(|l| l.client_urls.as_slice())
        .filter(|u| !u.is_empty())
}

/// A gRPC health probe (PD's `checkNetworkAvailable`): healthy only if the member answers
/// SERVING by `deadline`; any error counts as unreachable.
pub(crate) async fn probe(channel: &Channel, deadline: Instant) -> bool {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let mut client = HealthClient::new(channel.clone());
    match tokio::time::timeout_at(deadline, client.check(request)).await {
        Ok(Ok(resp)) => resp.into_inner().status == ServingStatus::Serving as i32,
        _ => false,
    }
}

/// `GetMembers` on one URL, by `deadline`.
async fn get_members(
    connector: &Connector,
    url: &str,
    deadline: Instant,
) -> Result<pdpb::GetMembersResponse> {
    get_members_on(connector.channel(url)?, url, deadline).await
}

async fn get_members_on(
    channel: Channel,
    url: &str,
    deadline: Instant,
) -> Result<pdpb::GetMembersResponse> {
    let mut grpc = PdGrpc::new(channel);
    let call = grpc.get_members(pdpb::GetMembersRequest::default());
    let resp = match tokio::time::timeout_at(deadline, call).await {
        Err(_) => {
            return Err(Error::PdServerTimeout {
                message: format!("GetMembers on {url} got no answer in time"),
            });
        }
        Ok(Err(status)) => {
            return Err(match classify_status(url, &status) {
                Failure::Retry(e) | Failure::Fatal(e) => e,
            });
        }
        Ok(Ok(resp)) => resp.into_inner(),
    };
    if let Some(err) = resp.header.as_ref().and_then(|h| h.error.as_ref()) {
        return Err(Error::Pd {
            message: err.message.clone(),
        });
    }
    Ok(resp)
}

/// `GetMembers` on every URL at once (a dead or black-holed seed must not delay the others).
async fn ask_all(
    connector: &Connector,
    urls: &[String],
    deadline: Instant,
) -> Vec<(String, Result<pdpb::GetMembersResponse>)> {
    let mut tasks = JoinSet::new();
    for (i, url) in urls.iter().enumerate() {
        let channel = connector.channel(url);
        let url = url.clone();
        tasks.spawn(async move {
            let answer = match channel {
                Err(e) => Err(e),
                Ok(channel) => get_members_on(channel, &url, deadline).await,
            };
            (i, url, answer)
        });
    }
    let mut answers = Vec::with_capacity(urls.len());
    while let Some(joined) = tasks.join_next().await {
        if let Ok(answer) = joined {
            answers.push(answer);
        }
    }
    // Seed order decides whose cluster id is "the" id, as PD's init walks its URLs in order.
    answers.sort_by_key(|(i, _, _)| *i);
    answers.into_iter().map(|(_, url, a)| (url, a)).collect()
}
