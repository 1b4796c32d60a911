//! [`PdClient`]: connecting, the call discipline every PD request follows, and the region,
//! store, timestamp, scatter and operator queries.
//!
//! Who calls it: applications (through the public methods), the region and store caches
//! (through [`RegionSource`]) and the oracle (through `TimestampSource`).
//!
//! Every call runs under one deadline, `pd-client.pd-server-timeout`: it goes to the leader the
//! discovery knows; if that member is not the leader or cannot be reached, the members are
//! refreshed and the call tries again with a bounded backoff, until the deadline. PD's answer
//! with an error header is [`Error::Pd`] carrying PD's text; running out of time is
//! [`Error::PdServerTimeout`].
//!
//! Three options shape where a call goes (see `discovery` for the routing itself):
//!
//! - forwarding (`enable-forwarding`): with the leader unreachable from here, leader-only calls
//!   go to a healthy follower that forwards them (`pd-forwarded-host`); a failed call probes the
//!   leader's health at once so that the next attempt already takes the detour, and calls go
//!   straight to the leader again once its health check passes.
//! - follower handle (`pd-client.enable-follower-handle`): region reads that client-go lets a
//!   follower serve go round-robin to any healthy member with `pd-allow-follower-handle`; a
//!   follower's error or "region not found" is retried on the leader path within the same call
//!   (PD's `NeedRetry`).
//! - router client (`pd-client.enable-router-client`): lookups by key, previous key and id are
//!   batched onto a `QueryRegion` stream (`router`), with the unary call as the fallback.
//!
//! And, with no option (PD's client does it whenever router servers are registered), PD's
//! microservice mode: reads that client-go lets any server answer (`GetRegion` and
//! `GetPrevRegion` of a first lookup, `BatchScanRegions` of a first scan, `GetStore`,
//! `GetAllStores`) go to a healthy router server (`router_discovery`) over
//! `routerpb.Router`, ahead of the follower choice. Its failure or error answer is retried
//! on PD within the same deadline, and the server is reported to the discovery. Leader-only
//! reads and `GetRegionByID` never go to a router server.
//!
//! Region metadata calls pass the region-meta circuit breaker (`circuit_breaker`) attempt by
//! attempt: an open breaker fails them at once with [`Error::PdCircuitBreakerOpen`].
//!
//! Ports tikv/pd `client/client.go` and `client/inner_client.go` (`NewClientWithContext`,
//! `GetRegion`/`GetPrevRegion`/`GetRegionByID`/`ScanRegions`/`BatchScanRegions`, `GetStore`,
//! `GetAllStores`, their `routerpb.NewRouterClient` branches, `ScatterRegions`, `GetOperator`,
//! `Get/SetExternalTimestamp`, `GetMinTS`, `respForErr`, `getServiceClient` with
//! `AllowRouterServiceHandle`, `UpdateOption`), with what client-go adds on top: the
//! store-not-found rule of `internal/locate/store_cache.go`, the `BatchScanRegions` →
//! `ScanRegions` fallback, the follower-handle choices and the region-meta breaker
//! (`ChangePDRegionMetaCircuitBreakerSettings`) of `internal/locate/region_cache.go`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::keyspacepb;
use tikv_proto::metapb;
use tikv_proto::pdpb::{self, pd_client::PdClient as PdGrpc};
use tikv_proto::routerpb::router_client::RouterClient;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

#[cfg(any(test, feature = "unstable-internals"))]
use super::circuit_breaker::CircuitBreakerState;
use super::circuit_breaker::{CircuitBreaker, is_overloaded, status_overloaded};
use super::conn::{Connector, PdChannel, TlsSettings};
use super::discovery::{Discovery, MEMBER_HEALTH_CHECK_INTERVAL};
use super::keyspace::KeyspaceMeta;
use super::retry::{Backoff, Failure, classify_status, is_leader_change, is_network_failure};
use super::router::{Query, Router, RouterDispatcher};
use super::router_discovery::RouterDiscovery;
#[cfg(any(test, feature = "unstable-internals"))]
use super::tso::TsoStats;
use super::tso::{Dispatcher, Tso};
use super::tso_discovery::{SERVICE_CHECK_INTERVAL, TSO_KEYSPACE_GROUP_ID_KEY, TsoDiscovery};
use super::{BoxFuture, RegionInfo, RegionSource};
#[cfg(any(test, feature = "unstable-internals"))]
use crate::config::CircuitBreakerSettings;
use crate::config::Config;
use crate::error::GrpcCode;
use crate::oracle::Timestamp;
use crate::{Error, Result};

/// How often the members are refreshed when nothing asks for it (PD's `MemberUpdateInterval`).
const DEFAULT_MEMBER_REFRESH: Duration = Duration::from_secs(60);
/// The longest max TSO batch wait PD's client accepts.
const MAX_TSO_BATCH_WAIT: Duration = Duration::from_millis(10);

/// The name of client-go's breaker on region metadata calls.
const REGION_META_BREAKER: &str = "region-meta";

/// The client's routing options: static forwarding, and the two PD lets change at run time
/// (`UpdateOption`).
#[derive(Debug)]
pub(crate) struct Options {
    /// Forward leader-only calls through a follower when the leader is unreachable.
    pub(crate) forwarding: bool,
    follower_handle: AtomicBool,
    router_client: AtomicBool,
}

impl Options {
    pub(crate) fn new(forwarding: bool, follower_handle: bool, router_client: bool) -> Self {
        Options {
            forwarding,
            follower_handle: AtomicBool::new(follower_handle),
            router_client: AtomicBool::new(router_client),
        }
    }

    pub(crate) fn follower_handle(&self) -> bool {
        self.follower_handle.load(Ordering::Relaxed)
    }

    pub(crate) fn router_client(&self) -> bool {
        self.router_client.load(Ordering::Relaxed)
    }
}

/// Where one call may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Only by the leader (directly, or forwarded through a follower).
    Leader,
    /// A region metadata read: it passes the region-meta circuit breaker, and with `follower`
    /// a PD follower may serve it when follower handling is on.
    RegionMeta {
        /// The caller accepts a follower's answer (client-go's `WithAllowFollowerHandle`).
        follower: bool,
    },
}

/// Which servers besides the PD leader may answer a region or store read (client-go's
/// `WithAllowFollowerHandle` and `WithAllowRouterServiceHandle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadFrom {
    /// A PD follower, when follower handling is on.
    pub(crate) follower: bool,
    /// A router server of PD's microservice mode, when one is known and healthy.
    pub(crate) router: bool,
}

impl ReadFrom {
    /// The PD leader only: retries, and reads client-go never lets anyone else serve.
    pub(crate) const LEADER: ReadFrom = ReadFrom {
        follower: false,
        router: false,
    };
    /// Any server: the first lookup of a cache miss, a first scan.
    pub(crate) const ANY: ReadFrom = ReadFrom {
        follower: true,
        router: true,
    };
}

/// A PD response: each carries PD's header.
pub(crate) trait PdResponse {
    fn header(&self) -> Option<&pdpb::ResponseHeader>;
}

macro_rules! pd_responses {
    ($($t:ty),* $(,)?) => {
        $(impl PdResponse for $t {
            fn header(&self) -> Option<&pdpb::ResponseHeader> {
                self.header.as_ref()
            }
        })*
    };
}

pd_responses!(
    pdpb::GetRegionResponse,
    pdpb::ScanRegionsResponse,
    pdpb::BatchScanRegionsResponse,
    pdpb::GetStoreResponse,
    pdpb::GetAllStoresResponse,
    pdpb::GetClusterInfoResponse,
    pdpb::ScatterRegionResponse,
    pdpb::GetOperatorResponse,
    pdpb::GetExternalTimestampResponse,
    pdpb::SetExternalTimestampResponse,
    pdpb::GetMinTsResponse,
    pdpb::UpdateGcSafePointResponse,
    pdpb::AdvanceTxnSafePointResponse,
    pdpb::AdvanceGcSafePointResponse,
    pdpb::SetGcBarrierResponse,
    pdpb::DeleteGcBarrierResponse,
    pdpb::SetGlobalGcBarrierResponse,
    pdpb::DeleteGlobalGcBarrierResponse,
    pdpb::GetGcStateResponse,
    keyspacepb::LoadKeyspaceResponse,
);

/// A client of one PD cluster: finds the leader among the members, follows it when it moves,
/// and answers timestamp, region, store, GC, keyspace and scheduling queries.
///
/// Cloning is cheap and every clone shares the connections, the TSO stream and the background
/// tasks. Those tasks stop when the last clone is dropped or [`close`](Self::close) is called.
///
/// (Not compiled as a doctest: the PD client is crate-private; the benchmarks reach it as
/// `tikv_client::unstable::PdClient`.)
///
/// ```ignore
/// # async fn demo() -> tikv_client::Result<()> {
/// use tikv_client::Config;
/// use tikv_client::pd::PdClient;
///
/// let pd = PdClient::connect(["127.0.0.1:2379"], &Config::default()).await?;
/// let ts = pd.get_timestamp().await?;
/// println!("cluster {} at {ts}", pd.cluster_id());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PdClient {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for PdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = &self.handle.core;
        f.debug_struct("PdClient")
            .field("cluster_id", &core.discovery.cluster_id())
            .field(
                "leader",
                &core.discovery.view().leader.as_ref().map(|l| &l.url),
            )
            .field("closed", &core.closed.load(Ordering::Relaxed))
            .finish()
    }
}

/// Owned by the clones; stopping the background tasks is its drop.
#[derive(Debug)]
struct Handle {
    core: Arc<Core>,
    shutdown: watch::Sender<bool>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        self.core.tso.close();
        self.core.router.close();
    }
}

/// What the background tasks share with the handle.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) discovery: Arc<Discovery>,
    pub(crate) tso: Arc<Tso>,
    pub(crate) router: Arc<Router>,
    pub(crate) options: Arc<Options>,
    pub(crate) region_meta_breaker: CircuitBreaker,
    pub(crate) timeout: Duration,
    /// PD mode or TSO microservice mode (`API_SVC_MODE`), and the keyspace group's primary;
    /// checked at connect and in the background.
    pub(crate) tso_service: Arc<TsoDiscovery>,
    /// The router servers of PD's microservice mode (none outside it); read at connect and
    /// in the background.
    pub(crate) router_service: Arc<RouterDiscovery>,
    keyspace: OnceLock<KeyspaceMeta>,
    closed: AtomicBool,
}

/// Builds a [`PdClient`] with options beyond the [`Config`].
#[derive(Debug, Clone)]
pub struct PdClientBuilder {
    endpoints: Vec<String>,
    config: Config,
    keyspace: Option<String>,
    tso_keyspace_id: Option<u32>,
    max_tso_batch_wait: Duration,
    member_refresh_interval: Duration,
    member_health_check_interval: Duration,
}

impl PdClientBuilder {
    #[cfg(any(test, feature = "unstable-internals"))]
    /// Loads this keyspace when connecting (an empty name means `DEFAULT`) and scopes the GC
    /// calls to it. Connecting fails with [`Error::KeyspaceNotFound`] if PD does not know it,
    /// and with [`Error::KeyspaceNotEnabled`] unless it is ENABLED (client-go's
    /// `GetKeyspaceID` rule).
    pub fn keyspace(mut self, name: impl Into<String>) -> Self {
        self.keyspace = Some(name.into());
        self
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The keyspace id whose keyspace group serves this client's timestamps when PD runs TSO
    /// as a microservice (default: the null keyspace `0xFFFFFFFF`, served by the default
    /// keyspace group). [`keyspace`](Self::keyspace) sets it from the loaded keyspace.
    pub fn tso_keyspace_id(mut self, keyspace_id: u32) -> Self {
        self.tso_keyspace_id = Some(keyspace_id);
        self
    }

    #[cfg(feature = "unstable-internals")]
    /// How long the TSO dispatcher waits for more callers before sending a batch (PD's
    /// `MaxTSOBatchWaitInterval`, 0 to 10 ms, default 0: send what is queued as soon as the
    /// stream is free). A wait trades latency for fewer, larger requests.
    pub fn max_tso_batch_wait(mut self, wait: Duration) -> Self {
        self.max_tso_batch_wait = wait;
        self
    }

    #[cfg(feature = "unstable-internals")]
    /// How often the member list, and the router servers of PD's microservice mode, are
    /// refreshed in the background (default one minute, as PD's client). Failures trigger a
    /// refresh at once regardless.
    pub fn member_refresh_interval(mut self, interval: Duration) -> Self {
        self.member_refresh_interval = interval;
        self
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// How often every PD member's gRPC health service is probed while forwarding or follower
    /// reads are on, and every known router server's always (default one second, PD's
    /// `MemberHealthCheckInterval`). The probes decide when calls detour around an
    /// unreachable leader or router server and when they come back to it.
    pub fn member_health_check_interval(mut self, interval: Duration) -> Self {
        self.member_health_check_interval = interval;
        self
    }

    /// Connects: asks every endpoint for the members (they must agree on the cluster id),
    /// finds the leader, starts the background tasks and, if asked, loads the keyspace. Gives
    /// up after `pd-client.pd-server-timeout` with [`Error::Connect`] (nobody answered) or
    /// [`Error::PdServerTimeout`] (no leader).
    pub async fn connect(self) -> Result<PdClient> {
        self.config.validate()?;
        if self.max_tso_batch_wait > MAX_TSO_BATCH_WAIT {
            return Err(Error::invalid_argument(format!(
                "max TSO batch wait {:?} is above the 10ms PD allows",
                self.max_tso_batch_wait
            )));
        }
        if self.member_refresh_interval.is_zero() {
            return Err(Error::invalid_argument(
                "member refresh interval must be above zero",
            ));
        }
        if self.member_health_check_interval.is_zero() {
            return Err(Error::invalid_argument(
                "member health check interval must be above zero",
            ));
        }
        let raw: Vec<String> = self
            .endpoints
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        if raw.is_empty() {
            return Err(Error::invalid_argument("no PD endpoint given"));
        }
        let tls = TlsSettings::new(&self.config.security, &raw)?;
        let mut seeds = Vec::with_capacity(raw.len());
        for endpoint in &raw {
            let url = tls.url(endpoint)?;
            if !seeds.contains(&url) {
                seeds.push(url);
            }
        }
        let timeout = self.config.pd_client.pd_server_timeout;
        let connector = Connector::new(tls, &self.config);
        let discovery = Arc::new(Discovery::connect(seeds, connector, timeout).await?);
        let pd_config = &self.config.pd_client;
        let options = Arc::new(Options::new(
            self.config.enable_forwarding,
            pd_config.enable_follower_handle,
            pd_config.enable_router_client,
        ));
        let core = Core {
            discovery: discovery.clone(),
            tso: Arc::new(Tso::new(timeout)),
            router: Arc::new(Router::default()),
            options: options.clone(),
            region_meta_breaker: CircuitBreaker::new(
                REGION_META_BREAKER,
                pd_config.region_meta_circuit_breaker.clone(),
            ),
            timeout,
            tso_service: Arc::new(TsoDiscovery::new(discovery.clone())),
            router_service: Arc::new(RouterDiscovery::new(discovery.clone())),
            keyspace: OnceLock::new(),
            closed: AtomicBool::new(false),
        };
        if let Some(id) = self.tso_keyspace_id {
            core.tso_service.set_keyspace(id, None);
        }
        if let Err(e) = core
            .tso_service
            .check_service_mode(Instant::now() + timeout)
            .await
        {
            // The dispatcher finds the mode again on its first batch; PD mode until then.
            tracing::debug!(error = %e, "TSO service mode check failed at connect");
        }
        if let Err(e) = core.router_service.update(Instant::now() + timeout).await {
            // Reads go to PD until the background task finds the router servers.
            tracing::debug!(error = %e, "reading the router registry failed at connect");
            core.router_service.schedule_check();
        }
        let core = Arc::new(core);
        let (shutdown, _) = watch::channel(false);
        tokio::spawn(
            discovery
                .clone()
                .run_refresh(self.member_refresh_interval, shutdown.subscribe()),
        );
        let wanted = {
            let options = options.clone();
            move || options.forwarding || options.follower_handle()
        };
        tokio::spawn(discovery.clone().run_health_checks(
            self.member_health_check_interval,
            wanted,
            shutdown.subscribe(),
        ));
        let router = RouterDispatcher::new(
            core.router.clone(),
            discovery.clone(),
            core.router_service.clone(),
            options.clone(),
        );
        tokio::spawn(router.run(shutdown.subscribe()));
        tokio::spawn(core.router_service.clone().run(
            self.member_refresh_interval,
            self.member_health_check_interval,
            shutdown.subscribe(),
        ));
        tokio::spawn(
            core.tso_service
                .clone()
                .run(SERVICE_CHECK_INTERVAL, shutdown.subscribe()),
        );
        let dispatcher = Dispatcher::new(
            core.tso.clone(),
            discovery,
            core.tso_service.clone(),
            self.max_tso_batch_wait,
            options.forwarding,
        );
        tokio::spawn(dispatcher.run(shutdown.subscribe()));
        let client = PdClient {
            handle: Arc::new(Handle { core, shutdown }),
        };
        if let Some(name) = self.keyspace {
            // On failure the client is dropped here, which stops its tasks.
            let meta = client.load_keyspace(&name).await?;
            meta.ensure_enabled()?;
            client.set_tso_keyspace(&meta);
            let _ = client.core().keyspace.set(meta);
        }
        Ok(client)
    }
}

impl PdClient {
    /// Connects to the PD cluster behind `endpoints` (`host:port`, `http://host:port` or
    /// `https://host:port`; several members of one cluster). TLS is used when
    /// `config.security` has a CA or an endpoint is an `https://` URL. See
    /// [`PdClientBuilder::connect`].
    pub async fn connect(
        endpoints: impl IntoIterator<Item = impl AsRef<str>>,
        config: &Config,
    ) -> Result<PdClient> {
        Self::builder(endpoints, config).connect().await
    }

    /// A builder, for the options that are not part of [`Config`].
    pub fn builder(
        endpoints: impl IntoIterator<Item = impl AsRef<str>>,
        config: &Config,
    ) -> PdClientBuilder {
        PdClientBuilder {
            endpoints: endpoints
                .into_iter()
                .map(|e| e.as_ref().to_owned())
                .collect(),
            config: config.clone(),
            keyspace: None,
            tso_keyspace_id: None,
            max_tso_batch_wait: Duration::ZERO,
            member_refresh_interval: DEFAULT_MEMBER_REFRESH,
            member_health_check_interval: MEMBER_HEALTH_CHECK_INTERVAL,
        }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.handle.core
    }

    /// Stops the background tasks and fails pending and later calls with [`Error::Closed`].
    /// Dropping the last clone does the same.
    pub fn close(&self) {
        self.core().closed.store(true, Ordering::Release);
        self.handle.shutdown.send_replace(true);
        self.core().tso.close();
        self.core().router.close();
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Changes the settings of the circuit breaker on region metadata calls at run time
    /// (client-go's `ChangePDRegionMetaCircuitBreakerSettings`; the starting settings are
    /// `pd-client.region-meta-circuit-breaker`). As in PD, new values apply from the next
    /// counting window or cool-down; a threshold of 0 turns the breaker off at the next call.
    ///
    /// (Not compiled as a doctest: the PD client is crate-private; the benchmarks reach it as
    /// `tikv_client::unstable::PdClient`.)
    ///
    /// ```ignore
    /// # async fn demo(pd: tikv_client::pd::PdClient) {
    /// pd.change_region_meta_circuit_breaker_settings(|s| s.error_rate_threshold_pct = 50);
    /// # }
    /// ```
    pub fn change_region_meta_circuit_breaker_settings(
        &self,
        apply: impl FnOnce(&mut CircuitBreakerSettings),
    ) {
        self.core().region_meta_breaker.change_settings(apply);
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The region-meta circuit breaker's current settings.
    pub fn region_meta_circuit_breaker_settings(&self) -> CircuitBreakerSettings {
        self.core().region_meta_breaker.settings()
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Where the region-meta circuit breaker stands.
    pub fn region_meta_circuit_breaker_state(&self) -> CircuitBreakerState {
        self.core().region_meta_breaker.state()
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Lets PD followers answer region reads from now on, or stops it (PD's
    /// `UpdateOption(EnableFollowerHandle)`; the starting value is
    /// `pd-client.enable-follower-handle`).
    pub fn set_follower_handle(&self, enabled: bool) {
        self.core()
            .options
            .follower_handle
            .store(enabled, Ordering::Relaxed);
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Turns the batching router client on or off from now on (PD's
    /// `UpdateOption(EnableRouterClient)`; the starting value is
    /// `pd-client.enable-router-client`).
    pub fn set_router_client(&self, enabled: bool) {
        self.core()
            .options
            .router_client
            .store(enabled, Ordering::Relaxed);
    }

    /// The id of the cluster, as its members reported it when connecting.
    pub fn cluster_id(&self) -> u64 {
        self.core().discovery.cluster_id()
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The URL of the PD leader the client currently talks to.
    pub fn leader_url(&self) -> Option<String> {
        self.core()
            .discovery
            .view()
            .leader
            .as_ref()
            .map(|l| l.url.clone())
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The client URLs of every PD member, as last discovered.
    pub fn member_urls(&self) -> Vec<String> {
        self.core().discovery.view().urls.clone()
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The keyspace loaded by [`PdClientBuilder::keyspace`], if any.
    pub fn keyspace(&self) -> Option<&KeyspaceMeta> {
        self.core().keyspace.get()
    }

    /// A timestamp from PD's TSO, strictly greater than every timestamp this client returned
    /// before the call started. Concurrent callers share one request on the TSO stream.
    pub async fn get_timestamp(&self) -> Result<Timestamp> {
        self.core().tso.get_timestamp().await
    }

    /// Tells the TSO client which keyspace it serves, so that in TSO microservice mode its
    /// stream goes to that keyspace's keyspace group (and a keyspace pinned to a non-default
    /// group by its `tso_keyspace_group_id` config never falls back to the default group).
    /// Clients that open a keyspace call this once they loaded it. One `PdClient` has one TSO
    /// stream, so a client shared by several keyspaces serves the last one set (PD's own
    /// client is per keyspace too).
    pub fn set_tso_keyspace(&self, keyspace: &KeyspaceMeta) {
        self.core().tso_service.set_keyspace(
            keyspace.id,
            keyspace
                .config
                .get(TSO_KEYSPACE_GROUP_ID_KEY)
                .map(String::as_str),
        );
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Counters of the TSO stream: requests sent and timestamps received.
    pub fn tso_stats(&self) -> TsoStats {
        self.core().tso.stats()
    }

    /// The smallest current timestamp over every TSO serving the cluster (PD's `GetMinTS`).
    /// With PD serving TSO itself that is a fresh timestamp, taken from the TSO stream as
    /// PD's client does; with TSO microservices PD is asked.
    pub async fn get_min_ts(&self) -> Result<Timestamp> {
        if !self.core().tso_service.is_microservice() {
            return self.get_timestamp().await;
        }
        match self.core().get_min_ts_rpc().await {
            Err(Error::Grpc {
                code: GrpcCode::Unimplemented,
                ..
            }) => self.get_timestamp().await,
            other => other,
        }
    }

    /// The cluster's external timestamp (0 when never set).
    pub async fn get_external_timestamp(&self) -> Result<u64> {
        let header = self.core().header();
        let resp = self
            .core()
            .call("GetExternalTimestamp", |ch| {
                let req = pdpb::GetExternalTimestampRequest {
                    header: header.clone(),
                };
                async move { PdGrpc::new(ch).get_external_timestamp(req).await }
            })
            .await?;
        Ok(resp.timestamp)
    }

    /// Sets the cluster's external timestamp. PD refuses ([`Error::Pd`]) a value not above the
    /// current one or above its current TSO.
    pub async fn set_external_timestamp(&self, ts: u64) -> Result<()> {
        let header = self.core().header();
        self.core()
            .call("SetExternalTimestamp", |ch| {
                let req = pdpb::SetExternalTimestampRequest {
                    header: header.clone(),
                    timestamp: ts,
                };
                async move { PdGrpc::new(ch).set_external_timestamp(req).await }
            })
            .await?;
        Ok(())
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Asks PD to scatter regions over the stores (PD's `ScatterRegions`), optionally as one
    /// scatter group. Regions PD does not know are reported in the result, unless all are
    /// unknown, which is an error.
    pub async fn scatter_regions(
        &self,
        region_ids: &[u64],
        group: Option<&str>,
    ) -> Result<ScatterResult> {
        let header = self.core().header();
        let group = group.unwrap_or_default().to_owned();
        let resp = self
            .core()
            .call("ScatterRegion", |ch| {
                let req = pdpb::ScatterRegionRequest {
                    header: header.clone(),
                    regions_id: region_ids.to_vec(),
                    group: group.clone(),
                    ..Default::default()
                };
                async move { PdGrpc::new(ch).scatter_region(req).await }
            })
            .await?;
        Ok(ScatterResult {
            finished_percentage: resp.finished_percentage,
            failed_region_ids: resp.failed_regions_id,
        })
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The operator PD runs or last ran on a region (PD's `GetOperator`); `None` when PD has
    /// none on record. client-go's `WaitScatterRegionFinish` polls this until the status of a
    /// `scatter-region` operator is no longer [`OperatorStatus::Running`].
    pub async fn get_operator(&self, region_id: u64) -> Result<Option<Operator>> {
        let header = self.core().header();
        let result = self
            .core()
            .call("GetOperator", |ch| {
                let req = pdpb::GetOperatorRequest {
                    header: header.clone(),
                    region_id,
                };
                async move { PdGrpc::new(ch).get_operator(req).await }
            })
            .await;
        let resp = match result {
            Ok(resp) => resp,
            Err(Error::Pd { message }) if message == "Not Found" => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(Operator {
            region_id: resp.region_id,
            desc: String::from_utf8_lossy(&resp.desc).into_owned(),
            kind: String::from_utf8_lossy(&resp.kind).into_owned(),
            status: OperatorStatus::from_proto(resp.status),
        }))
    }
}

// The region and store caches call these through `RegionSource`.
impl PdClient {
    /// The region containing `key` (`GetRegion`). client-go lets a follower or a router
    /// server answer it.
    pub(crate) async fn region_by_key(
        &self,
        key: &[u8],
        need_buckets: bool,
    ) -> Result<Option<RegionInfo>> {
        let key = Bytes::copy_from_slice(key);
        self.region_lookup(Query::Key(key), need_buckets, true)
            .await
    }

    /// The region just before the one containing `key` (`GetPrevRegion`). client-go lets a
    /// follower or a router server answer it.
    pub(crate) async fn prev_region(
        &self,
        key: &[u8],
        need_buckets: bool,
    ) -> Result<Option<RegionInfo>> {
        let key = Bytes::copy_from_slice(key);
        self.region_lookup(Query::PrevKey(key), need_buckets, true)
            .await
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// The region with this id (`GetRegionByID`); the leader answers, as client-go asks
    /// (its `loadRegionByID` passes neither follower nor router handling).
    pub(crate) async fn region_by_id(
        &self,
        region_id: u64,
        need_buckets: bool,
    ) -> Result<Option<RegionInfo>> {
        self.region_lookup(Query::Id(region_id), need_buckets, false)
            .await
    }

    /// [`region_lookup_from`](Self::region_lookup_from) with `any`: a PD follower and a router
    /// server may both answer (client-go always allows the two together), or only the leader.
    pub(crate) async fn region_lookup(
        &self,
        query: Query,
        need_buckets: bool,
        any: bool,
    ) -> Result<Option<RegionInfo>> {
        let from = if any { ReadFrom::ANY } else { ReadFrom::LEADER };
        self.region_lookup_from(query, need_buckets, from).await
    }

    /// One lookup by key, previous key or id: on the router's `QueryRegion` stream when the
    /// router client is on, else (or if the stream fails while time remains) as a unary call.
    pub(crate) async fn region_lookup_from(
        &self,
        query: Query,
        need_buckets: bool,
        from: ReadFrom,
    ) -> Result<Option<RegionInfo>> {
        let core = self.core();
        if core.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let deadline = Instant::now() + core.timeout;
        if core.options.router_client() {
            let admission = core.region_meta_breaker.admit()?;
            let result = core
                .router
                .query(query.clone(), need_buckets, from, deadline)
                .await;
            let overloaded = result.as_ref().err().is_some_and(is_overloaded);
            core.region_meta_breaker.record(admission, overloaded);
            match result {
                Ok(region) => return Ok(region),
                Err(e) if matches!(e, Error::Closed) || Instant::now() >= deadline => {
                    return Err(e);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "QueryRegion lookup failed; trying a unary call");
                }
            }
        }
        self.unary_lookup(query, need_buckets, from, deadline).await
    }

    /// `GetRegion`, `GetPrevRegion` or `GetRegionByID` as a unary call, by `deadline`: on a
    /// router server first when `from` allows it and one is healthy, then on PD.
    async fn unary_lookup(
        &self,
        query: Query,
        need_buckets: bool,
        from: ReadFrom,
        deadline: Instant,
    ) -> Result<Option<RegionInfo>> {
        let core = self.core();
        let header = core.header();
        let route = Route::RegionMeta {
            follower: from.follower,
        };
        let resp = match query {
            Query::Key(region_key) => {
                let req = pdpb::GetRegionRequest {
                    header,
                    region_key,
                    need_buckets,
                };
                core.router_or_pd(
                    "GetRegion",
                    from.router,
                    route,
                    deadline,
                    &req,
                    |mut c, r| async move { c.get_region(r).await },
                    |mut c, r| async move { c.get_region(r).await },
                )
                .await?
            }
            Query::PrevKey(region_key) => {
                let req = pdpb::GetRegionRequest {
                    header,
                    region_key,
                    need_buckets,
                };
                core.router_or_pd(
                    "GetPrevRegion",
                    from.router,
                    route,
                    deadline,
                    &req,
                    |mut c, r| async move { c.get_prev_region(r).await },
                    |mut c, r| async move { c.get_prev_region(r).await },
                )
                .await?
            }
            #[cfg(any(test, feature = "unstable-internals"))]
            Query::Id(region_id) => {
                let req = pdpb::GetRegionByIdRequest {
                    header,
                    region_id,
                    need_buckets,
                };
                core.router_or_pd(
                    "GetRegionByID",
                    from.router,
                    route,
                    deadline,
                    &req,
                    |mut c, r| async move { c.get_region_by_id(r).await },
                    |mut c, r| async move { c.get_region_by_id(r).await },
                )
                .await?
            }
        };
        Ok(region_from_get(resp))
    }

    /// Regions overlapping `ranges`, at most `limit` (`BatchScanRegions`, or `ScanRegions` per
    /// range when PD does not implement it). `any`: a PD follower or a router server may
    /// answer (client-go allows both on a first scan, neither after an unusable answer).
    pub(crate) async fn scan_regions_batch(
        &self,
        ranges: &[(Bytes, Bytes)],
        limit: usize,
        need_buckets: bool,
        any: bool,
    ) -> Result<Vec<RegionInfo>> {
        if limit == 0 || ranges.is_empty() {
            return Ok(Vec::new());
        }
        let core = self.core();
        let req = pdpb::BatchScanRegionsRequest {
            header: core.header(),
            need_buckets,
            ranges: ranges
                .iter()
                .map(|(start, end)| pdpb::KeyRange {
                    start_key: start.clone(),
                    end_key: end.clone(),
                })
                .collect(),
            limit: i32::try_from(limit).unwrap_or(i32::MAX),
            // As client-go: PD reports holes in the region map instead of skipping them.
            contain_all_key_range: true,
        };
        let deadline = Instant::now() + core.timeout;
        let result = core
            .router_or_pd(
                "BatchScanRegions",
                any,
                Route::RegionMeta { follower: any },
                deadline,
                &req,
                |mut c, r| async move { c.batch_scan_regions(r).await },
                |mut c, r| async move { c.batch_scan_regions(r).await },
            )
            .await;
        match result {
            Ok(resp) => Ok(resp
                .regions
                .into_iter()
                .filter_map(region_from_pb)
                .collect()),
            Err(Error::Grpc {
                code: GrpcCode::Unimplemented,
                ..
            }) => self.scan_regions_fallback(ranges, limit, any).await,
            Err(e) => Err(e),
        }
    }

    /// client-go's `batchScanRegionsFallback`: `ScanRegions` range by range, skipping what
    /// the last region found already covers. An empty end key is the end of the key space.
    async fn scan_regions_fallback(
        &self,
        ranges: &[(Bytes, Bytes)],
        mut limit: usize,
        follower: bool,
    ) -> Result<Vec<RegionInfo>> {
        let mut out: Vec<RegionInfo> = Vec::new();
        for (start, end) in ranges {
            let mut start = start.clone();
            if let Some(last) = out.last() {
                let covered = &last.region.end_key;
                if covered.is_empty() {
                    break;
                }
                if !end.is_empty() && covered >= end {
                    continue;
                }
                if *covered > start {
                    start = covered.clone();
                }
            }
            let regions = self.scan_regions(&start, end, limit, follower).await?;
            let found = regions.len();
            out.extend(regions);
            if found >= limit {
                break;
            }
            limit -= found;
        }
        Ok(out)
    }

    /// `ScanRegions` over `[start, end)`, at most `limit` regions. Router servers do not serve
    /// it (PD's `ScanRegions` turns router handling off), so only PD is asked.
    pub(crate) async fn scan_regions(
        &self,
        start: &Bytes,
        end: &Bytes,
        limit: usize,
        follower: bool,
    ) -> Result<Vec<RegionInfo>> {
        let header = self.core().header();
        let pd_limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let resp = self
            .core()
            .call_with("ScanRegions", Route::RegionMeta { follower }, |ch| {
                let req = pdpb::ScanRegionsRequest {
                    header: header.clone(),
                    start_key: start.clone(),
                    end_key: end.clone(),
                    limit: pd_limit,
                };
                async move { PdGrpc::new(ch).scan_regions(req).await }
            })
            .await?;
        // Old PDs fill only the parallel `region_metas` / `leaders` lists.
        if resp.regions.is_empty() {
            let mut leaders = resp.leaders.into_iter();
            return Ok(resp
                .region_metas
                .into_iter()
                .map(|region| RegionInfo {
                    region,
                    leader: leaders.next().filter(|p| p.id != 0),
                    ..Default::default()
                })
                .collect());
        }
        Ok(resp
            .regions
            .into_iter()
            .filter_map(region_from_pb)
            .collect())
    }

    /// The store with this id (`GetStore`); `None` when PD does not know it or it was removed.
    /// A router server answers it when one is healthy (client-go's first `GetStore` of a
    /// store allows it); its failure, or its "not found", is asked of the PD leader.
    pub(crate) async fn store(&self, store_id: u64) -> Result<Option<metapb::Store>> {
        self.store_from(store_id, true).await
    }

    /// [`store`](Self::store), with `router` saying whether a router server may answer.
    pub(crate) async fn store_from(
        &self,
        store_id: u64,
        router: bool,
    ) -> Result<Option<metapb::Store>> {
        let core = self.core();
        let req = pdpb::GetStoreRequest {
            header: core.header(),
            store_id,
        };
        let deadline = Instant::now() + core.timeout;
        let result = core
            .router_or_pd(
                "GetStore",
                router,
                Route::Leader,
                deadline,
                &req,
                |mut c, r| async move { c.get_store(r).await },
                |mut c, r| async move { c.get_store(r).await },
            )
            .await;
        let resp = match result {
            Ok(resp) => resp,
            // client-go's `isStoreNotFoundError`.
            Err(Error::Pd { message })
                if message.contains("invalid store ID") && message.contains("not found") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let Some(store) = resp.store else {
            return Err(Error::Pd {
                message: "store field in rpc response not set".to_owned(),
            });
        };
        if store.node_state == metapb::NodeState::Removed as i32 {
            return Ok(None);
        }
        Ok(Some(store))
    }

    /// Every store PD knows (`GetAllStores`); a router server answers it when one is healthy
    /// (client-go's store cache refresh allows it).
    pub(crate) async fn all_stores(&self, exclude_tombstone: bool) -> Result<Vec<metapb::Store>> {
        self.all_stores_from(exclude_tombstone, true).await
    }

    /// [`all_stores`](Self::all_stores), with `router` saying whether a router server may
    /// answer.
    pub(crate) async fn all_stores_from(
        &self,
        exclude_tombstone: bool,
        router: bool,
    ) -> Result<Vec<metapb::Store>> {
        let core = self.core();
        let req = pdpb::GetAllStoresRequest {
            header: core.header(),
            exclude_tombstone_stores: exclude_tombstone,
        };
        let deadline = Instant::now() + core.timeout;
        let resp = core
            .router_or_pd(
                "GetAllStores",
                router,
                Route::Leader,
                deadline,
                &req,
                |mut c, r| async move { c.get_all_stores(r).await },
                |mut c, r| async move { c.get_all_stores(r).await },
            )
            .await?;
        Ok(resp.stores)
    }
}

impl Core {
    /// The request header every PD request carries.
    pub(crate) fn header(&self) -> Option<pdpb::RequestHeader> {
        Some(pdpb::RequestHeader {
            cluster_id: self.discovery.cluster_id(),
            ..Default::default()
        })
    }

    /// Runs one PD call against the leader under the client's deadline. `attempt` builds and
    /// sends the request on a channel to the leader; it runs again, on the new leader's
    /// channel, after a leader change or a connection failure, until the deadline.
    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, attempt: F) -> Result<T>
    where
        T: PdResponse,
        F: FnMut(PdChannel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_with(op, Route::Leader, attempt).await
    }

    /// [`Core::call`] for a call that may be served as `route` allows.
    pub(crate) async fn call_with<T, F, Fut>(
        &self,
        op: &'static str,
        route: Route,
        attempt: F,
    ) -> Result<T>
    where
        T: PdResponse,
        F: FnMut(PdChannel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        self.call_until(op, route, deadline, attempt).await
    }

    /// [`Core::call_with`] by an explicit deadline (the rest of a lookup that tried the router
    /// first).
    ///
    /// A follower-servable read first tries the member the follower-read balancer picks; if
    /// that is a follower and it fails or has no such region, the read goes on the leader path
    /// (PD's `NeedRetry`). The leader path sends to the leader, or through a healthy follower
    /// with `pd-forwarded-host` when forwarding is on and the leader is unreachable; a
    /// connection failure on the leader probes its health at once so the next attempt can take
    /// that detour.
    pub(crate) async fn call_until<T, F, Fut>(
        &self,
        op: &'static str,
        route: Route,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T>
    where
        T: PdResponse,
        F: FnMut(PdChannel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let breaker = matches!(route, Route::RegionMeta { .. });
        if let Route::RegionMeta { follower: true } = route
            && self.options.follower_handle()
            && let Some(resp) = self.follower_read(op, deadline, &mut attempt).await?
        {
            return Ok(resp);
        }
        let forwarding = self.options.forwarding;
        let mut backoff = Backoff::call();
        let mut last: Option<Error> = None;
        loop {
            let (generation, target) = self.discovery.leader_target(forwarding);
            let failed_route = target.as_ref().map(|t| {
                let leader = t.forwarded_to.clone().unwrap_or_else(|| t.url.clone());
                (leader, t.forwarded_to.is_some())
            });
            let failure = match target {
                None => Failure::Retry(Error::PdServerTimeout {
                    message: "no PD leader known".to_owned(),
                }),
                Some(target) => {
                    let admission = if breaker {
                        Some(self.region_meta_breaker.admit()?)
                    } else {
                        None
                    };
                    let outcome =
                        tokio::time::timeout_at(deadline, attempt(target.channel.clone())).await;
                    let (failure, overloaded) = match outcome {
                        Err(_) => {
                            if let Some(admission) = admission {
                                self.region_meta_breaker.record(admission, true);
                            }
                            self.discovery.schedule_check();
                            return Err(self.timed_out(op, last.as_ref()));
                        }
                        Ok(Err(status)) => {
                            if forwarding
                                && target.forwarded_to.is_none()
                                && is_network_failure(&status)
                            {
                                // Find out now whether the leader is reachable, so that the next
                                // attempt already goes through a follower if it is not.
                                self.discovery.check_leader_health(deadline).await;
                            }
                            let overloaded = status_overloaded(&status);
                            (classify_status(&target.url, &status), overloaded)
                        }
                        Ok(Ok(resp)) => {
                            let resp = resp.into_inner();
                            match resp.header().and_then(|h| h.error.as_ref()) {
                                None => {
                                    if let Some(admission) = admission {
                                        self.region_meta_breaker.record(admission, false);
                                    }
                                    return Ok(resp);
                                }
                                Some(err) => {
                                    let e = Error::Pd {
                                        message: err.message.clone(),
                                    };
                                    if is_leader_change(&err.message) {
                                        (Failure::Retry(e), false)
                                    } else {
                                        (Failure::Fatal(e), false)
                                    }
                                }
                            }
                        }
                    };
                    if let Some(admission) = admission {
                        self.region_meta_breaker.record(admission, overloaded);
                    }
                    failure
                }
            };
            match failure {
                Failure::Fatal(e) => return Err(e),
                Failure::Retry(e) => {
                    tracing::debug!(op, error = %e, "PD call failed; looking for the leader");
                    last = Some(e);
                }
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            // A refresh or a health probe that changes the route is tried at once; otherwise
            // back off.
            if let Err(e) = self.discovery.refresh(generation, deadline).await {
                last = Some(e);
            }
            let now_route = self.discovery.leader_route(forwarding);
            let moved = now_route.is_some() && now_route != failed_route;
            if !moved && !backoff.sleep_before(deadline).await {
                return Err(self.timed_out(op, last.as_ref()));
            }
        }
    }

    /// A read a router server may answer: on a healthy router server first when `router`
    /// allows it ([`router_read`](Self::router_read)), then on PD by `route` when the router
    /// had no answer, all by `deadline`. Region metadata routes pass the region-meta circuit
    /// breaker on both paths.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn router_or_pd<Q, T, R, RFut, P, PFut>(
        &self,
        op: &'static str,
        router: bool,
        route: Route,
        deadline: Instant,
        req: &Q,
        on_router: R,
        on_pd: P,
    ) -> Result<T>
    where
        Q: Clone,
        T: PdResponse,
        R: FnOnce(RouterClient<Channel>, Q) -> RFut,
        RFut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
        P: Fn(PdGrpc<PdChannel>, Q) -> PFut,
        PFut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let breaker = matches!(route, Route::RegionMeta { .. });
        let routed = self
            .router_read(op, router, breaker, deadline, |ch| {
                on_router(RouterClient::new(ch), req.clone())
            })
            .await?;
        match routed {
            Some(resp) => Ok(resp),
            None => {
                self.call_until(op, route, deadline, |ch| {
                    on_pd(PdGrpc::new(ch), req.clone())
                })
                .await
            }
        }
    }

    /// One attempt on a router server, when `allowed` and one is healthy (PD's
    /// `getServiceClient` with `AllowRouterServiceHandle`, and the `routerpb.Router` call of
    /// `client.go`). `Some` is its answer; `None` sends the caller on to PD: no server to ask,
    /// or the server failed or answered with an error (PD's `NeedRetry` on a router client),
    /// in which case the server is reported to the router discovery.
    ///
    /// The attempt may use half of the time left, so that a server that hangs still leaves
    /// PD time to answer within the caller's deadline. `breaker`: the call is region metadata
    /// and passes the region-meta circuit breaker, as its PD attempts do.
    async fn router_read<T, F, Fut>(
        &self,
        op: &'static str,
        allowed: bool,
        breaker: bool,
        deadline: Instant,
        attempt: F,
    ) -> Result<Option<T>>
    where
        T: PdResponse,
        F: FnOnce(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        if !allowed {
            return Ok(None);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let Some(node) = self.router_service.pick() else {
            return Ok(None);
        };
        let admission = if breaker {
            Some(self.region_meta_breaker.admit()?)
        } else {
            None
        };
        let now = Instant::now();
        let attempt_deadline = now + deadline.saturating_duration_since(now) / 2;
        let outcome =
            tokio::time::timeout_at(attempt_deadline, attempt(node.channel.clone())).await;
        let (answer, overloaded) = match outcome {
            Err(_) => {
                tracing::debug!(op, url = %node.url, "router server did not answer in time");
                self.router_service.report_failure(&node, true);
                (None, true)
            }
            Ok(Err(status)) => {
                tracing::debug!(op, url = %node.url, error = %status, "router server call failed");
                self.router_service
                    .report_failure(&node, is_network_failure(&status));
                (None, status_overloaded(&status))
            }
            Ok(Ok(resp)) => {
                let resp = resp.into_inner();
                match resp.header().and_then(|h| h.error.as_ref()) {
                    None => (Some(resp), false),
                    Some(err) => {
                        let url = &node.url;
                        tracing::debug!(op, url, error = %err.message, "router server had no answer");
                        self.router_service.report_failure(&node, false);
                        (None, false)
                    }
                }
            }
        };
        if let Some(admission) = admission {
            self.region_meta_breaker.record(admission, overloaded);
        }
        Ok(answer)
    }

    /// One attempt on the member the follower-read balancer picks, when that is a follower
    /// (PD's `getServiceClient` with `AllowFollowerHandle`). `Some` is the follower's answer;
    /// `None` sends the caller to the leader path: the balancer picked the leader or nobody, or
    /// the follower failed. A follower without the region is skipped for a while.
    async fn follower_read<T, F, Fut>(
        &self,
        op: &'static str,
        deadline: Instant,
        attempt: &mut F,
    ) -> Result<Option<T>>
    where
        T: PdResponse,
        F: FnMut(PdChannel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let Some((member, false)) = self.discovery.follower_read_member() else {
            return Ok(None);
        };
        let admission = self.region_meta_breaker.admit()?;
        let channel = PdChannel::follower_handle(member.channel.clone());
        let outcome = tokio::time::timeout_at(deadline, attempt(channel)).await;
        match outcome {
            Err(_) => {
                self.region_meta_breaker.record(admission, true);
                Err(self.timed_out(op, None))
            }
            Ok(Err(status)) => {
                self.region_meta_breaker
                    .record(admission, status_overloaded(&status));
                tracing::debug!(op, url = %member.url, error = %status, "follower read failed");
                Ok(None)
            }
            Ok(Ok(resp)) => {
                self.region_meta_breaker.record(admission, false);
                let resp = resp.into_inner();
                match resp.header().and_then(|h| h.error.as_ref()) {
                    None => Ok(Some(resp)),
                    Some(err) => {
                        if err.r#type == pdpb::ErrorType::RegionNotFound as i32 {
                            member.health.mark_region_unavailable(Instant::now());
                        }
                        let url = &member.url;
                        tracing::debug!(op, url, error = %err.message, "follower had no answer");
                        Ok(None)
                    }
                }
            }
        }
    }

    fn timed_out(&self, op: &str, last: Option<&Error>) -> Error {
        Error::PdServerTimeout {
            message: match last {
                Some(e) => format!(
                    "{op}: no answer from the PD leader within {:?}: {e}",
                    self.timeout
                ),
                None => format!(
                    "{op}: no answer from the PD leader within {:?}",
                    self.timeout
                ),
            },
        }
    }

    /// PD's `GetMinTS` RPC.
    pub(crate) async fn get_min_ts_rpc(&self) -> Result<Timestamp> {
        let header = self.header();
        let resp = self
            .call("GetMinTS", |ch| {
                let req = pdpb::GetMinTsRequest {
                    header: header.clone(),
                };
                async move { PdGrpc::new(ch).get_min_ts(req).await }
            })
            .await?;
        let Some(ts) = resp.timestamp else {
            return Err(Error::Pd {
                message: "no min ts info collected".to_owned(),
            });
        };
        Ok(Timestamp::compose(
            u64::try_from(ts.physical).unwrap_or(0),
            u64::try_from(ts.logical).unwrap_or(0),
        ))
    }
}

#[cfg(any(test, feature = "unstable-internals"))]
/// The result of [`PdClient::scatter_regions`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScatterResult {
    /// Percentage of the regions whose scatter was scheduled.
    pub finished_percentage: u64,
    /// Regions PD could not scatter (for example, unknown ids).
    pub failed_region_ids: Vec<u64>,
}

#[cfg(any(test, feature = "unstable-internals"))]
/// An operator PD runs or ran on a region ([`PdClient::get_operator`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Operator {
    /// The region.
    pub region_id: u64,
    /// What the operator does, e.g. `scatter-region`.
    pub desc: String,
    /// PD's operator kind, e.g. `admin`.
    pub kind: String,
    /// Where it stands.
    pub status: OperatorStatus,
}

#[cfg(any(test, feature = "unstable-internals"))]
/// The status of a PD operator (`pdpb.OperatorStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OperatorStatus {
    /// Finished successfully.
    Success,
    /// Gave up after its time limit.
    Timeout,
    /// Cancelled.
    Cancel,
    /// Replaced by another operator.
    Replace,
    /// Still running.
    Running,
}

#[cfg(any(test, feature = "unstable-internals"))]
impl OperatorStatus {
    #[cfg(any(test, feature = "unstable-internals"))]
    fn from_proto(value: i32) -> Self {
        use pdpb::OperatorStatus as S;
        match S::try_from(value) {
            Ok(S::Timeout) => OperatorStatus::Timeout,
            Ok(S::Cancel) => OperatorStatus::Cancel,
            Ok(S::Replace) => OperatorStatus::Replace,
            Ok(S::Running) => OperatorStatus::Running,
            Ok(S::Success) | Err(_) => OperatorStatus::Success,
        }
    }
}

/// A region as `GetRegion`-style answers carry it; `None` when PD knows no such region.
fn region_from_get(resp: pdpb::GetRegionResponse) -> Option<RegionInfo> {
    region_info(
        resp.region,
        resp.leader,
        resp.down_peers,
        resp.pending_peers,
        resp.buckets,
    )
}

fn region_from_pb(region: pdpb::Region) -> Option<RegionInfo> {
    region_info(
        region.region,
        region.leader,
        region.down_peers,
        region.pending_peers,
        region.buckets,
    )
}

/// A [`RegionInfo`] from the pieces every region answer carries; `None` without a region.
pub(crate) fn region_info(
    region: Option<metapb::Region>,
    leader: Option<metapb::Peer>,
    down_peers: Vec<pdpb::PeerStats>,
    pending_peers: Vec<metapb::Peer>,
    buckets: Option<metapb::Buckets>,
) -> Option<RegionInfo> {
    Some(RegionInfo {
        region: region?,
        // PD reports "no leader" as an absent or empty peer.
        leader: leader.filter(|p| p.id != 0),
        down_peers: down_peers.into_iter().filter_map(|s| s.peer).collect(),
        pending_peers,
        buckets,
    })
}

impl RegionSource for PdClient {
    fn get_region<'a>(
        &'a self,
        key: &'a [u8],
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        Box::pin(self.region_by_key(key, need_buckets))
    }

    fn get_region_from_leader<'a>(
        &'a self,
        key: &'a [u8],
        prev: bool,
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        let key = Bytes::copy_from_slice(key);
        let query = if prev {
            Query::PrevKey(key)
        } else {
            Query::Key(key)
        };
        Box::pin(self.region_lookup(query, need_buckets, false))
    }

    fn get_prev_region<'a>(
        &'a self,
        key: &'a [u8],
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        Box::pin(self.prev_region(key, need_buckets))
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    fn get_region_by_id(
        &self,
        region_id: u64,
        need_buckets: bool,
    ) -> BoxFuture<'_, Result<Option<RegionInfo>>> {
        Box::pin(self.region_by_id(region_id, need_buckets))
    }

    fn batch_scan_regions<'a>(
        &'a self,
        ranges: &'a [(Bytes, Bytes)],
        limit: usize,
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Vec<RegionInfo>>> {
        Box::pin(self.scan_regions_batch(ranges, limit, need_buckets, true))
    }

    fn batch_scan_regions_from_leader<'a>(
        &'a self,
        ranges: &'a [(Bytes, Bytes)],
        limit: usize,
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Vec<RegionInfo>>> {
        Box::pin(self.scan_regions_batch(ranges, limit, need_buckets, false))
    }

    fn get_store(&self, store_id: u64) -> BoxFuture<'_, Result<Option<metapb::Store>>> {
        Box::pin(self.store(store_id))
    }

    fn get_store_from_leader(&self, store_id: u64) -> BoxFuture<'_, Result<Option<metapb::Store>>> {
        Box::pin(self.store_from(store_id, false))
    }

    fn get_all_stores(&self, exclude_tombstone: bool) -> BoxFuture<'_, Result<Vec<metapb::Store>>> {
        Box::pin(self.all_stores(exclude_tombstone))
    }
}

impl crate::oracle::TimestampSource for PdClient {
    fn get_timestamp(&self) -> BoxFuture<'_, Result<Timestamp>> {
        Box::pin(PdClient::get_timestamp(self))
    }

    fn get_external_timestamp(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(PdClient::get_external_timestamp(self))
    }

    fn set_external_timestamp(&self, ts: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(PdClient::set_external_timestamp(self, ts))
    }

    fn get_min_ts(&self) -> BoxFuture<'_, Result<Timestamp>> {
        Box::pin(PdClient::get_min_ts(self))
    }
}
