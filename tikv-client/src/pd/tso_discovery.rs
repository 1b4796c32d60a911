//! TSO service discovery: whether PD serves timestamps itself (PD mode) or runs them as a
//! separate TSO microservice (API service mode), and in the latter case which TSO server is the
//! primary of the client's keyspace group.
//!
//! Who calls it: `PdClient::connect` builds one [`TsoDiscovery`] and checks the service mode
//! once; a background task (`run`) checks it again every minute and whenever the TSO dispatcher
//! asks; the dispatcher in [`super::tso`] reads [`TsoDiscovery::route`] before every batch and
//! calls [`TsoDiscovery::update_member`] after a failed stream in microservice mode.
//!
//! How the primary is found. PD's `GetClusterInfo` names the mode and, in API mode, the URLs
//! of the registered TSO servers. One of them is asked `FindGroupByKeyspaceID` for the
//! client's keyspace (the null keyspace `0xFFFFFFFF` without one, which lands in the default
//! group 0); the answer is the keyspace group (its id goes in every `tsopb.TsoRequest` header)
//! with its members, one flagged primary, and the mod revision of the group metadata. An
//! answer older than one already applied is refused as stale. No TSO server listed: a keyspace
//! whose config names a non-default `tso_keyspace_group_id` must not fall back and fails with
//! "no TSO microservice available in microservice mode"; any other keyspace falls back to PD's
//! own `Tso` stream, which PD forwards to the default keyspace group (PD's client falls back to
//! discovering TSO servers in etcd, which a client outside the cluster cannot reach).
//!
//! Ports tikv/pd `client/servicediscovery/tso_service_discovery.go` (`updateMember`,
//! `updateMemberInner`, `findGroupByKeyspaceID`, `hasKeyspaceGroupIDConfig`,
//! `checkAndHandleFallbackInMicroserviceMode`, the keyspace group's `update` with its
//! mod-revision check) and the mode switch of `client/servicediscovery/service_discovery.go`
//! (`checkServiceModeChanged`, UNIMPLEMENTED meaning PD mode) and `client/client.go`
//! (`setServiceMode`: switching the TSO stream between PD and the microservice).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tikv_proto::pdpb::{self, pd_client::PdClient as PdGrpc};
use tikv_proto::tsopb::{self, tso_client::TsoClient};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tonic::transport::Channel;

use super::discovery::Discovery;
use super::retry::{Failure, Retried, classify_status, retry_in_background};
use crate::{Error, Result};

/// The keyspace id of a client without keyspace (PD's `NullKeyspaceID`).
pub(crate) const NULL_KEYSPACE_ID: u32 = 0xFFFF_FFFF;
/// The keyspace group of every keyspace not assigned elsewhere.
pub(crate) const DEFAULT_KEYSPACE_GROUP_ID: u32 = 0;
/// The keyspace config key naming the keyspace's TSO keyspace group.
pub(crate) const TSO_KEYSPACE_GROUP_ID_KEY: &str = "tso_keyspace_group_id";
/// How often the service mode and the keyspace group are checked in the background (PD's
/// member update interval).
pub(crate) const SERVICE_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// How long one `FindGroupByKeyspaceID` may take (PD's `UpdateMemberTimeout`).
const FIND_GROUP_TIMEOUT: Duration = Duration::from_secs(1);
/// The error text of a keyspace that must not fall back to the default group.
const NO_TSO_SERVER: &str = "no TSO microservice available in microservice mode";

/// The primary of the client's keyspace group.
#[derive(Debug)]
pub(crate) struct Primary {
    pub(crate) url: String,
    pub(crate) channel: Channel,
    pub(crate) keyspace_id: u32,
    pub(crate) keyspace_group_id: u32,
    /// `host:port` of the primary, sent as `callee_id` so a server at a reused address
    /// refuses the stream (PD's `GetCalleeID`).
    pub(crate) callee_id: String,
}

/// Where the TSO stream goes now.
#[derive(Debug, Clone)]
pub(crate) enum TsoRoute {
    /// PD's own `pdpb.PD/Tso` on the leader.
    Pd,
    /// `tsopb.TSO/Tso` on the keyspace group's primary.
    Microservice(Arc<Primary>),
    /// Microservice mode, primary not known yet: discover it first.
    Unknown,
}

#[derive(Debug, Default)]
struct State {
    microservice: bool,
    tso_urls: Vec<String>,
    primary: Option<Arc<Primary>>,
    /// No TSO server listed and the keyspace may fall back: PD's stream serves the default group.
    fallback: bool,
    mod_revision: u64,
}

/// The TSO service discovery shared by the dispatcher, the client and the background check.
#[derive(Debug)]
pub(crate) struct TsoDiscovery {
    discovery: Arc<Discovery>,
    keyspace_id: AtomicU32,
    /// The keyspace's `tso_keyspace_group_id`, when set and not the default group (such a
    /// keyspace never falls back to the default group).
    configured_group: AtomicU32,
    state: Mutex<State>,
    /// Rotates which listed TSO server is asked first.
    cursor: AtomicUsize,
    check_requested: Notify,
}

impl TsoDiscovery {
    pub(crate) fn new(discovery: Arc<Discovery>) -> Self {
        TsoDiscovery {
            discovery,
            keyspace_id: AtomicU32::new(NULL_KEYSPACE_ID),
            configured_group: AtomicU32::new(DEFAULT_KEYSPACE_GROUP_ID),
            state: Mutex::new(State::default()),
            cursor: AtomicUsize::new(0),
            check_requested: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tells the discovery the client's keyspace (and its config, for the fallback rule). A
    /// change of keyspace drops the known primary so the next batch finds the right group.
    pub(crate) fn set_keyspace(&self, keyspace_id: u32, config_group: Option<&str>) {
        let group = config_group
            .and_then(|g| g.parse::<u32>().ok())
            .unwrap_or(DEFAULT_KEYSPACE_GROUP_ID);
        self.configured_group.store(group, Ordering::Release);
        let old = self.keyspace_id.swap(keyspace_id, Ordering::AcqRel);
        if old != keyspace_id {
            let mut state = self.lock();
            state.primary = None;
            state.mod_revision = 0;
        }
    }

    pub(crate) fn keyspace_id(&self) -> u32 {
        self.keyspace_id.load(Ordering::Acquire)
    }

    /// Whether PD runs TSO as a microservice, as last checked.
    pub(crate) fn is_microservice(&self) -> bool {
        self.lock().microservice
    }

    pub(crate) fn route(&self) -> TsoRoute {
        let state = self.lock();
        if !state.microservice || state.fallback {
            return TsoRoute::Pd;
        }
        match &state.primary {
            Some(p) => TsoRoute::Microservice(p.clone()),
            None => TsoRoute::Unknown,
        }
    }

    /// Asks for a service-mode check by the background task.
    pub(crate) fn schedule_check(&self) {
        self.check_requested.notify_one();
    }

    /// Asks the PD leader for the service mode (`GetClusterInfo`); in microservice mode also
    /// finds the keyspace group's primary. A PD without `GetClusterInfo` is in PD mode.
    pub(crate) async fn check_service_mode(&self, deadline: Instant) -> Result<()> {
        let (_, target) = self.discovery.leader_target(false);
        let Some(target) = target else {
            return Err(Error::PdServerTimeout {
                message: "no PD leader known to ask for the service mode".to_owned(),
            });
        };
        // PD checks no cluster id here (clients call it before they know one).
        let mut grpc = PdGrpc::new(target.channel);
        let call = grpc.get_cluster_info(pdpb::GetClusterInfoRequest::default());
        let info = match tokio::time::timeout_at(deadline, call).await {
            Err(_) => {
                return Err(Error::PdServerTimeout {
                    message: format!("GetClusterInfo on {} timed out", target.url),
                });
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                self.apply_mode(false, Vec::new());
                return Ok(());
            }
            Ok(Err(status)) => {
                return Err(match classify_status(&target.url, &status) {
                    Failure::Retry(e) | Failure::Fatal(e) => e,
                });
            }
            Ok(Ok(resp)) => resp.into_inner(),
        };
        let Some(&mode) = info.service_modes.first() else {
            return Err(Error::Pd {
                message: "[PD:client:ErrNoServiceModeReturned]no service mode is returned"
                    .to_owned(),
            });
        };
        let microservice = mode == pdpb::ServiceMode::ApiSvcMode as i32;
        self.apply_mode(microservice, info.tso_urls);
        if microservice {
            self.update_member(deadline).await?;
        }
        Ok(())
    }

    fn apply_mode(&self, microservice: bool, tso_urls: Vec<String>) {
        let mut state = self.lock();
        if state.microservice != microservice {
            tracing::info!(microservice, "PD TSO service mode changed");
            state.microservice = microservice;
            state.primary = None;
            state.fallback = false;
            state.mod_revision = 0;
        }
        state.tso_urls = tso_urls;
    }

    /// Finds the keyspace group's primary from the listed TSO servers (each asked in turn
    /// until one answers with a primary), or applies the fallback rule when none is listed.
    pub(crate) async fn update_member(&self, deadline: Instant) -> Result<()> {
        let urls = self.lock().tso_urls.clone();
        if urls.is_empty() {
            if self.configured_group.load(Ordering::Acquire) != DEFAULT_KEYSPACE_GROUP_ID {
                return Err(Error::PdServerTimeout {
                    message: NO_TSO_SERVER.to_owned(),
                });
            }
            let mut state = self.lock();
            if !state.fallback {
                tracing::warn!("no TSO server listed; falling back to PD's TSO stream");
                state.fallback = true;
                state.primary = None;
            }
            return Ok(());
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut last_error = None;
        for i in 0..urls.len() {
            let url = &urls[(start + i) % urls.len()];
            let attempt_deadline = deadline.min(Instant::now() + FIND_GROUP_TIMEOUT);
            match self.find_group(url, attempt_deadline).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(url = %url, error = %e, "FindGroupByKeyspaceID failed");
                    last_error = Some(e);
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        Err(last_error.unwrap_or_else(|| Error::PdServerTimeout {
            message: "no TSO server answered FindGroupByKeyspaceID".to_owned(),
        }))
    }

    async fn find_group(&self, url: &str, deadline: Instant) -> Result<()> {
        let keyspace_id = self.keyspace_id();
        let mod_revision = self.lock().mod_revision;
        let channel = self.discovery.channel(url)?;
        let request = tsopb::FindGroupByKeyspaceIdRequest {
            header: Some(tsopb::RequestHeader {
                cluster_id: self.discovery.cluster_id(),
                keyspace: Some(tsopb::request_header::Keyspace::KeyspaceId(keyspace_id)),
                ..Default::default()
            }),
            keyspace: Some(
                tsopb::find_group_by_keyspace_id_request::Keyspace::KeyspaceId(keyspace_id),
            ),
            mod_revision,
        };
        let mut grpc = TsoClient::new(channel);
        let call = grpc.find_group_by_keyspace_id(request);
        let resp = match tokio::time::timeout_at(deadline, call).await {
            Err(_) => {
                return Err(Error::PdServerTimeout {
                    message: format!("FindGroupByKeyspaceID on {url} timed out"),
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
        let Some(group) = resp.keyspace_group else {
            return Err(Error::Pd {
                message: format!("TSO server {url} returned no keyspace group"),
            });
        };
        let Some(primary_url) = group
            .members
            .iter()
            .find(|m| m.is_primary)
            .map(|m| m.address.clone())
        else {
            return Err(Error::PdServerTimeout {
                message: format!("keyspace group {} has no primary", group.id),
            });
        };
        let channel = self.discovery.channel(&primary_url)?;
        let mut state = self.lock();
        if resp.mod_revision < state.mod_revision {
            return Err(Error::Pd {
                message: format!(
                    "keyspace group modRevision is stale, current modRevision: {}, new \
                     modRevision: {}",
                    state.mod_revision, resp.mod_revision
                ),
            });
        }
        if self.keyspace_id() != keyspace_id {
            // The keyspace changed while asking: this answer is for the old one.
            return Err(Error::Pd {
                message: "keyspace changed during TSO discovery".to_owned(),
            });
        }
        state.mod_revision = resp.mod_revision;
        state.fallback = false;
        let same = state.primary.as_ref().is_some_and(|p| {
            p.url.eq_ignore_ascii_case(&primary_url) && p.keyspace_group_id == group.id
        });
        if !same {
            tracing::info!(primary = %primary_url, group = group.id, "TSO primary switched");
            state.primary = Some(Arc::new(Primary {
                channel,
                keyspace_id,
                keyspace_group_id: group.id,
                callee_id: callee_id(&primary_url),
                url: primary_url,
            }));
        }
        Ok(())
    }

    /// The background check: every `interval` and whenever asked, check the service mode
    /// (and the primary) with a bounded backoff. Ends when `shutdown` fires or is dropped.
    pub(crate) async fn run(
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
            let deadline = Instant::now() + self.discovery.timeout();
            let checked = retry_in_background(deadline, &mut shutdown, || async {
                self.check_service_mode(deadline).await.is_ok()
            });
            if checked.await == Retried::Shutdown {
                return;
            }
        }
    }
}

/// The `host:port` part of a server URL (the whole string when it has no scheme).
pub(crate) fn callee_id(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest).to_owned()
}
