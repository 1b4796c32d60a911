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
//! Ports tikv/pd `client/client.go` and `client/inner_client.go` (`NewClientWithContext`,
//! `GetRegion`/`GetPrevRegion`/`GetRegionByID`/`ScanRegions`/`BatchScanRegions`, `GetStore`,
//! `GetAllStores`, `ScatterRegions`, `GetOperator`, `Get/SetExternalTimestamp`, `GetMinTS`,
//! `respForErr`), with what client-go adds on top: the store-not-found rule of
//! `internal/locate/store_cache.go` and the `BatchScanRegions` → `ScanRegions` fallback of
//! `internal/locate/region_cache.go`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::keyspacepb;
use tikv_proto::metapb;
use tikv_proto::pdpb::{self, pd_client::PdClient as PdGrpc};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::conn::{Connector, TlsSettings};
use super::discovery::Discovery;
use super::keyspace::KeyspaceMeta;
use super::retry::{Backoff, Failure, classify_status, is_leader_change};
use super::tso::{Dispatcher, Tso, TsoStats};
use super::{BoxFuture, RegionInfo, RegionSource};
use crate::config::Config;
use crate::error::GrpcCode;
use crate::oracle::Timestamp;
use crate::{Error, Result};

/// How often the members are refreshed when nothing asks for it (PD's `MemberUpdateInterval`).
const DEFAULT_MEMBER_REFRESH: Duration = Duration::from_secs(60);
/// The longest max TSO batch wait PD's client accepts.
const MAX_TSO_BATCH_WAIT: Duration = Duration::from_millis(10);

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
/// ```no_run
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
    }
}

/// What the background tasks share with the handle.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) discovery: Arc<Discovery>,
    pub(crate) tso: Arc<Tso>,
    timeout: Duration,
    /// Whether PD runs TSO as a separate service (`API_SVC_MODE`), learned at connect.
    microservices: bool,
    keyspace: OnceLock<KeyspaceMeta>,
    closed: AtomicBool,
}

/// Builds a [`PdClient`] with options beyond the [`Config`].
#[derive(Debug, Clone)]
pub struct PdClientBuilder {
    endpoints: Vec<String>,
    config: Config,
    keyspace: Option<String>,
    max_tso_batch_wait: Duration,
    member_refresh_interval: Duration,
}

impl PdClientBuilder {
    /// Loads this keyspace when connecting (an empty name means `DEFAULT`) and scopes the GC
    /// calls to it. Connecting fails with [`Error::KeyspaceNotFound`] if PD does not know it,
    /// and with [`Error::KeyspaceNotEnabled`] unless it is ENABLED (client-go's
    /// `GetKeyspaceID` rule).
    pub fn keyspace(mut self, name: impl Into<String>) -> Self {
        self.keyspace = Some(name.into());
        self
    }

    /// How long the TSO dispatcher waits for more callers before sending a batch (PD's
    /// `MaxTSOBatchWaitInterval`, 0 to 10 ms, default 0: send what is queued as soon as the
    /// stream is free). A wait trades latency for fewer, larger requests.
    pub fn max_tso_batch_wait(mut self, wait: Duration) -> Self {
        self.max_tso_batch_wait = wait;
        self
    }

    /// How often the member list is refreshed in the background (default one minute, as
    /// PD's client). Failures trigger a refresh at once regardless.
    pub fn member_refresh_interval(mut self, interval: Duration) -> Self {
        self.member_refresh_interval = interval;
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
        let mut core = Core {
            discovery: discovery.clone(),
            tso: Arc::new(Tso::new(timeout)),
            timeout,
            microservices: false,
            keyspace: OnceLock::new(),
            closed: AtomicBool::new(false),
        };
        core.microservices = core.service_mode_is_microservices().await;
        let core = Arc::new(core);
        let (shutdown, _) = watch::channel(false);
        tokio::spawn(
            discovery
                .clone()
                .run_refresh(self.member_refresh_interval, shutdown.subscribe()),
        );
        let dispatcher = Dispatcher::new(core.tso.clone(), discovery, self.max_tso_batch_wait);
        tokio::spawn(dispatcher.run(shutdown.subscribe()));
        let client = PdClient {
            handle: Arc::new(Handle { core, shutdown }),
        };
        if let Some(name) = self.keyspace {
            // On failure the client is dropped here, which stops its tasks.
            let meta = client.load_keyspace(&name).await?;
            meta.ensure_enabled()?;
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
            max_tso_batch_wait: Duration::ZERO,
            member_refresh_interval: DEFAULT_MEMBER_REFRESH,
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
    }

    /// The id of the cluster, as its members reported it when connecting.
    pub fn cluster_id(&self) -> u64 {
        self.core().discovery.cluster_id()
    }

    /// The URL of the PD leader the client currently talks to.
    pub fn leader_url(&self) -> Option<String> {
        self.core()
            .discovery
            .view()
            .leader
            .as_ref()
            .map(|l| l.url.clone())
    }

    /// The client URLs of every PD member, as last discovered.
    pub fn member_urls(&self) -> Vec<String> {
        self.core().discovery.view().urls.clone()
    }

    /// The keyspace loaded by [`PdClientBuilder::keyspace`], if any.
    pub fn keyspace(&self) -> Option<&KeyspaceMeta> {
        self.core().keyspace.get()
    }

    /// A timestamp from PD's TSO, strictly greater than every timestamp this client returned
    /// before the call started. Concurrent callers share one request on the TSO stream.
    pub async fn get_timestamp(&self) -> Result<Timestamp> {
        self.core().tso.get_timestamp().await
    }

    /// Counters of the TSO stream: requests sent and timestamps received.
    pub fn tso_stats(&self) -> TsoStats {
        self.core().tso.stats()
    }

    /// The smallest current timestamp over every TSO serving the cluster (PD's `GetMinTS`).
    /// With PD serving TSO itself that is a fresh timestamp, taken from the TSO stream as
    /// PD's client does; with TSO microservices PD is asked.
    pub async fn get_min_ts(&self) -> Result<Timestamp> {
        if !self.core().microservices {
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
    /// The region containing `key` (`GetRegion`).
    pub(crate) async fn region_by_key(
        &self,
        key: &[u8],
        need_buckets: bool,
    ) -> Result<Option<RegionInfo>> {
        self.region_at(key, need_buckets, false).await
    }

    /// The region just before the one containing `key` (`GetPrevRegion`).
    pub(crate) async fn prev_region(
        &self,
        key: &[u8],
        need_buckets: bool,
    ) -> Result<Option<RegionInfo>> {
        self.region_at(key, need_buckets, true).await
    }

    /// `GetRegion`, or `GetPrevRegion` with `prev`: both take the same request.
    async fn region_at(
        &self,
        key: &[u8],
        need_buckets: bool,
        prev: bool,
    ) -> Result<Option<RegionInfo>> {
        let header = self.core().header();
        let key = Bytes::copy_from_slice(key);
        let name = if prev { "GetPrevRegion" } else { "GetRegion" };
        let resp = self
            .core()
            .call(name, |ch| {
                let req = pdpb::GetRegionRequest {
                    header: header.clone(),
                    region_key: key.clone(),
                    need_buckets,
                };
                async move {
                    let mut pd = PdGrpc::new(ch);
                    if prev {
                        pd.get_prev_region(req).await
                    } else {
                        pd.get_region(req).await
                    }
                }
            })
            .await?;
        Ok(region_from_get(resp))
    }

    /// The region with this id (`GetRegionByID`).
    pub(crate) async fn region_by_id(
        &self,
        region_id: u64,
        need_buckets: bool,
    ) -> Result<Option<RegionInfo>> {
        let header = self.core().header();
        let resp = self
            .core()
            .call("GetRegionByID", |ch| {
                let req = pdpb::GetRegionByIdRequest {
                    header: header.clone(),
                    region_id,
                    need_buckets,
                };
                async move { PdGrpc::new(ch).get_region_by_id(req).await }
            })
            .await?;
        Ok(region_from_get(resp))
    }

    /// Regions overlapping `ranges`, at most `limit` (`BatchScanRegions`, or `ScanRegions` per
    /// range when PD does not implement it).
    pub(crate) async fn scan_regions_batch(
        &self,
        ranges: &[(Bytes, Bytes)],
        limit: usize,
        need_buckets: bool,
    ) -> Result<Vec<RegionInfo>> {
        if limit == 0 || ranges.is_empty() {
            return Ok(Vec::new());
        }
        let header = self.core().header();
        let pb_ranges: Vec<pdpb::KeyRange> = ranges
            .iter()
            .map(|(start, end)| pdpb::KeyRange {
                start_key: start.clone(),
                end_key: end.clone(),
            })
            .collect();
        let pd_limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let result = self
            .core()
            .call("BatchScanRegions", |ch| {
                let req = pdpb::BatchScanRegionsRequest {
                    header: header.clone(),
                    need_buckets,
                    ranges: pb_ranges.clone(),
                    limit: pd_limit,
                    // As client-go: PD reports holes in the region map instead of skipping them.
                    contain_all_key_range: true,
                };
                async move { PdGrpc::new(ch).batch_scan_regions(req).await }
            })
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
            }) => self.scan_regions_fallback(ranges, limit).await,
            Err(e) => Err(e),
        }
    }

    /// client-go's `batchScanRegionsFallback`: `ScanRegions` range by range, skipping what
    /// the last region found already covers. An empty end key is the end of the key space.
    async fn scan_regions_fallback(
        &self,
        ranges: &[(Bytes, Bytes)],
        mut limit: usize,
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
            let regions = self.scan_regions(&start, end, limit).await?;
            let found = regions.len();
            out.extend(regions);
            if found >= limit {
                break;
            }
            limit -= found;
        }
        Ok(out)
    }

    /// `ScanRegions` over `[start, end)`, at most `limit` regions.
    pub(crate) async fn scan_regions(
        &self,
        start: &Bytes,
        end: &Bytes,
        limit: usize,
    ) -> Result<Vec<RegionInfo>> {
        let header = self.core().header();
        let pd_limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let resp = self
            .core()
            .call("ScanRegions", |ch| {
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
    pub(crate) async fn store(&self, store_id: u64) -> Result<Option<metapb::Store>> {
        let header = self.core().header();
        let result = self
            .core()
            .call("GetStore", |ch| {
                let req = pdpb::GetStoreRequest {
                    header: header.clone(),
                    store_id,
                };
                async move { PdGrpc::new(ch).get_store(req).await }
            })
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

    /// Every store PD knows (`GetAllStores`).
    pub(crate) async fn all_stores(&self, exclude_tombstone: bool) -> Result<Vec<metapb::Store>> {
        let header = self.core().header();
        let resp = self
            .core()
            .call("GetAllStores", |ch| {
                let req = pdpb::GetAllStoresRequest {
                    header: header.clone(),
                    exclude_tombstone_stores: exclude_tombstone,
                };
                async move { PdGrpc::new(ch).get_all_stores(req).await }
            })
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
    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, mut attempt: F) -> Result<T>
    where
        T: PdResponse,
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Backoff::call();
        let mut last: Option<Error> = None;
        loop {
            let (generation, leader) = self.discovery.leader();
            let failed_url = leader.as_ref().map(|l| l.url.clone());
            let failure = match leader {
                None => Failure::Retry(Error::PdServerTimeout {
                    message: "no PD leader known".to_owned(),
                }),
                Some(leader) => {
                    match tokio::time::timeout_at(deadline, attempt(leader.channel)).await {
                        Err(_) => {
                            self.discovery.schedule_check();
                            return Err(self.timed_out(op, last.as_ref()));
                        }
                        Ok(Err(status)) => classify_status(&leader.url, &status),
                        Ok(Ok(resp)) => {
                            let resp = resp.into_inner();
                            match resp.header().and_then(|h| h.error.as_ref()) {
                                None => return Ok(resp),
                                Some(err) => {
                                    let e = Error::Pd {
                                        message: err.message.clone(),
                                    };
                                    if !is_leader_change(&err.message) {
                                        return Err(e);
                                    }
                                    Failure::Retry(e)
                                }
                            }
                        }
                    }
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
            // A refresh that names another leader is tried at once; otherwise back off.
            let moved = match self.discovery.refresh(generation, deadline).await {
                Ok(()) => {
                    self.discovery.view().leader.as_ref().map(|l| &l.url) != failed_url.as_ref()
                }
                Err(e) => {
                    last = Some(e);
                    false
                }
            };
            if !moved && !backoff.sleep_before(deadline).await {
                return Err(self.timed_out(op, last.as_ref()));
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

    /// Whether PD serves TSO as a separate service (PD's `checkServiceModeChanged`; a PD
    /// without `GetClusterInfo` runs everything itself).
    async fn service_mode_is_microservices(&self) -> bool {
        let result = self
            .call("GetClusterInfo", |ch| async move {
                PdGrpc::new(ch)
                    .get_cluster_info(pdpb::GetClusterInfoRequest::default())
                    .await
            })
            .await;
        match result {
            Ok(info) => {
                info.service_modes.first().copied() == Some(pdpb::ServiceMode::ApiSvcMode as i32)
            }
            Err(e) => {
                tracing::debug!(error = %e, "GetClusterInfo failed; assuming PD serves TSO");
                false
            }
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

/// The result of [`PdClient::scatter_regions`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScatterResult {
    /// Percentage of the regions whose scatter was scheduled.
    pub finished_percentage: u64,
    /// Regions PD could not scatter (for example, unknown ids).
    pub failed_region_ids: Vec<u64>,
}

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

impl OperatorStatus {
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
#[cfg_attr(not(test), allow(dead_code))]
fn region_from_get(resp: pdpb::GetRegionResponse) -> Option<RegionInfo> {
    region_info(
        resp.region,
        resp.leader,
        resp.down_peers,
        resp.pending_peers,
        resp.buckets,
    )
}

#[cfg_attr(not(test), allow(dead_code))]
fn region_from_pb(region: pdpb::Region) -> Option<RegionInfo> {
    region_info(
        region.region,
        region.leader,
        region.down_peers,
        region.pending_peers,
        region.buckets,
    )
}

#[cfg_attr(not(test), allow(dead_code))]
fn region_info(
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

    fn get_prev_region<'a>(
        &'a self,
        key: &'a [u8],
        need_buckets: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        Box::pin(self.prev_region(key, need_buckets))
    }

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
        Box::pin(self.scan_regions_batch(ranges, limit, need_buckets))
    }

    fn get_store(&self, store_id: u64) -> BoxFuture<'_, Result<Option<metapb::Store>>> {
        Box::pin(self.store(store_id))
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
