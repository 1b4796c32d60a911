//! PD member discovery: the cluster id, the member list, the current leader and its channel.
//!
//! Who calls it: [`super::client`] builds a [`Discovery`] in `PdClient::connect`, asks it for
//! the leader before every call and asks it to refresh after a leader-change failure; the TSO
//! dispatcher does the same for its stream. A background task (`run_refresh`) refreshes the
//! member list every minute and whenever a failure asked for it, until the client shuts down.
//!
//! Ports tikv/pd `client/servicediscovery/service_discovery.go`: `initClusterID` (every seed is
//! asked; seeds that disagree on the cluster id make the connection fail), `updateMember` (ask
//! the members in turn, skip one that reports another cluster id or knows no leader, switch to
//! the leader it names), `updateMemberLoop` (a minute's ticker plus on-demand checks with a
//! bounded backoff) and `ScheduleCheckMemberChanged`. Refreshes are single-flight: callers that
//! failed on the same view of the members wait for one refresh instead of each asking PD.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tikv_proto::pdpb::{self, pd_client::PdClient as PdGrpc};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::conn::Connector;
use super::retry::{Backoff, Failure, classify_status};
use crate::{Error, Result};

/// How long one `GetMembers` may take during a refresh (PD's `UpdateMemberTimeout`).
const UPDATE_MEMBER_TIMEOUT: Duration = Duration::from_secs(1);

/// The PD leader as last discovered.
#[derive(Debug, Clone)]
pub(crate) struct Leader {
    pub(crate) url: String,
    pub(crate) channel: Channel,
}

/// One consistent view of the PD members.
#[derive(Debug, Default)]
pub(crate) struct MemberView {
    /// Client URLs of every member, sorted (PD's `updateURLs`).
    pub(crate) urls: Vec<String>,
    pub(crate) leader: Option<Leader>,
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
}

impl Discovery {
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
                    },
                    (None, None) => Error::Connect {
                        address: seeds.join(","),
                        message: format!("no PD endpoint answered within {budget:?}"),
                    },
                });
            }
        }
    }

    pub(crate) fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub(crate) fn view(&self) -> Arc<MemberView> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The current generation and leader.
    pub(crate) fn leader(&self) -> (u64, Option<Leader>) {
        // Read the generation first: a refresh that lands in between makes the caller refresh
        // once more, never miss one.
        let generation = self.generation.load(Ordering::Acquire);
        (generation, self.view().leader.clone())
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
        let leader = match resp.leader.as_ref() {
            Some(member) => match tls.pick_url(&member.client_urls) {
                Some(url) => Some(Leader {
                    channel: self.connector.channel(&url)?,
                    url,
                }),
                None => None,
            },
            None => None,
        };
        let view = Arc::new(MemberView { urls, leader });
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
            let mut backoff = Backoff::member_update();
            loop {
                let seen = self.generation.load(Ordering::Acquire);
                let done = tokio::select! {
                    result = self.refresh(seen, deadline) => result.is_ok(),
                    _ = shutdown.changed() => return,
                };
                if done {
                    break;
                }
                let slept = tokio::select! {
                    more = backoff.sleep_before(deadline) => more,
                    _ = shutdown.changed() => return,
                };
                if !slept {
                    tracing::warn!(
                        cluster_id = self.cluster_id,
                        "PD member refresh failed; will retry on the next check"
                    );
                    break;
                }
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
