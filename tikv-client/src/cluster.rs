//! [`Cluster`]: one client's connection to a TiKV cluster — the PD client, the region and store
//! caches, the transport to every store and the request sender — shared by every raw or
//! transactional client built from it.
//!
//! Who calls it: applications (directly, to share one connection between clients of several
//! keyspaces or column families) and the client builders (`raw::RawClientBuilder`). Below it:
//! `pd`, `locate`, `transport`, `request`.
//!
//! The caches work in the keys TiKV stores (API V2 keys carry their keyspace prefix), so one
//! cluster serves clients of any keyspace; each client encodes its keys with its own codec
//! before routing them. client-go builds one region cache per client instead
//! (`tikv.NewKVStore`, `rawkv.NewClientWithOpts`), which is why its caches cannot be shared.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tikv_proto::kvrpcpb;

use crate::config::Config;
use crate::locate::{RegionCache, ResolveState};
use crate::oracle::{
    Oracle, OracleFuture, PdOracle, PdOracleOptions, TSO_MAX_BACKOFF, Timestamp,
    get_timestamp_with_retry, with_pd_retry,
};
use crate::pd::{BoxFuture, MinResolvedTs, PdClient, RegionSource};
use crate::request::Backoffer;
use crate::request::dispatch::FanOutLimit;
use crate::request::sender::{ReadTsValidator, SenderCore, SenderParts};
use crate::safe_ts::{DC_LABEL_KEY, SAFE_TS_UPDATE_INTERVAL, SafeTs, SafeTsSource, SafeTsStore};
use crate::timestamp_oracle::TimestampOracle;
use crate::transport::{SendOptions, Transport, UnaryRequest, UnaryResponse};
use crate::{Error, Result};

/// How long a store may take to report its safe ts (client-go `ReadTimeoutShort`).
const STORE_SAFE_TS_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Cluster::min_safe_ts`] waits for the refresh's first round before saying it
/// knows nothing.
const FIRST_SAFE_TS_WAIT: Duration = Duration::from_secs(10);

/// A connection to one TiKV cluster, shared by the clients built from it. Cheap to clone.
///
/// Dropping the last clone (and every client built from it) closes the connections and stops
/// the background tasks; [`Cluster::close`] does it at once.
///
/// ```no_run
/// # async fn f() -> tikv_client::Result<()> {
/// use tikv_client::{Cluster, Config, RawClient};
///
/// let cluster = Cluster::connect(["127.0.0.1:2379"], Config::default()).await?;
/// // Clients built on the cluster share its connections and caches.
/// let client = RawClient::builder_on(&cluster).build().await?;
/// client.put("k", "v").await?;
/// println!("{} stores known", cluster.stores().len());
/// cluster.close();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<ClusterInner>,
}

struct ClusterInner {
    config: Config,
    pd: Arc<PdClient>,
    sender: Arc<SenderCore>,
    fan_out: FanOutLimit,
    safe_ts: SafeTs,
    /// Whether the safe-ts refresh runs: it starts with the first question, so clients that
    /// never read stale (raw clients, as client-go's `rawkv.Client`) cost PD nothing.
    safe_ts_started: AtomicBool,
    /// Set once the refresh finished its first round: until then no answer is an answer.
    safe_ts_refreshed: tokio::sync::watch::Sender<bool>,
    /// The timestamp oracle, shared with the sender as its read-ts validator.
    oracle: Arc<ClusterOracle>,
    /// The runtime the cluster was connected on, for tasks started later.
    runtime: tokio::runtime::Handle,
}

impl Drop for ClusterInner {
    fn drop(&mut self) {
        self.sender.close();
        self.oracle.close();
    }
}

/// The cluster's PD oracle (client-go `KVStore.oracle`), made on first use: the first read that
/// carries a timestamp, or the first timestamp asked for. A raw-only client never makes one,
/// so it costs PD no timestamp and no refresh task, as client-go's `rawkv.Client`.
#[derive(Debug)]
pub(crate) struct ClusterOracle {
    pd: Arc<PdClient>,
    oracle: tokio::sync::OnceCell<PdOracle>,
}

impl ClusterOracle {
    /// The oracle, made now if it was not (one timestamp fetched, the refresh task started).
    async fn get(&self) -> Result<&PdOracle> {
        self.oracle
            .get_or_try_init(|| PdOracle::new(&self.pd, PdOracleOptions::default()))
            .await
    }

    /// The oracle, made now if it was not; a failed first fetch is retried on `bo` as any
    /// timestamp fetch (PD unreachable, leader changing).
    pub(crate) async fn get_with_retry(&self, bo: &mut Backoffer) -> Result<&PdOracle> {
        if let Some(oracle) = self.oracle.get() {
            return Ok(oracle);
        }
        with_pd_retry(bo, || self.get()).await
    }

    /// A fresh timestamp within client-go's 15 s TSO budget (client-go
    /// `KVStore.CurrentTimestamp`), the budget covering the oracle's creation too.
    pub(crate) async fn current_timestamp(&self) -> Result<Timestamp> {
        let mut bo = Backoffer::new(TSO_MAX_BACKOFF);
        let oracle = self.get_with_retry(&mut bo).await?;
        get_timestamp_with_retry(oracle, &mut bo).await
    }

    fn close(&self) {
        if let Some(oracle) = self.oracle.get() {
            oracle.close();
        }
    }
}

/// The sender's read-ts check (client-go `validateReadTS` with the store's oracle). Once the
/// oracle exists, the common case is answered from memory without allocating.
impl ReadTsValidator for ClusterOracle {
    fn validate_read_ts(
        &self,
        read_ts: Timestamp,
        is_stale_read: bool,
    ) -> OracleFuture<'_, Result<()>> {
        if let Some(oracle) = self.oracle.get() {
            return Oracle::validate_read_ts(oracle, read_ts, is_stale_read);
        }
        OracleFuture::boxed(async move {
            // Made as any first timestamp fetch is: a short PD outage is waited out within
            // the TSO budget rather than failing the first read that carries a timestamp.
            let oracle = self
                .get_with_retry(&mut Backoffer::new(TSO_MAX_BACKOFF))
                .await?;
            Oracle::validate_read_ts(oracle, read_ts, is_stale_read).await
        })
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("cluster_id", &self.cluster_id())
            .field("region_cache", &self.inner.sender.cache)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to the cluster whose PD members are `pd_endpoints` (`host:port`, or URLs), with
    /// `config` (TLS from `config.security`).
    ///
    /// Errors: [`Error::InvalidArgument`] for no endpoint, [`Error::Config`] for an invalid
    /// configuration, and PD's errors when no member answers.
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// use tikv_client::{Cluster, Config};
    ///
    /// let cluster = Cluster::connect(["pd-0:2379", "pd-1:2379"], Config::default()).await?;
    /// println!("joined cluster {}", cluster.cluster_id());
    /// # Ok(()) }
    /// ```
    pub async fn connect(
        pd_endpoints: impl IntoIterator<Item = impl AsRef<str>>,
        config: Config,
    ) -> Result<Cluster> {
        let endpoints: Vec<String> = pd_endpoints
            .into_iter()
            .map(|e| e.as_ref().to_owned())
            .collect();
        if endpoints.is_empty() {
            return Err(Error::invalid_argument("no PD endpoint given"));
        }
        config.validate()?;
        config.warn_unused_settings();
        let pd = Arc::new(PdClient::connect(&endpoints, &config).await?);
        let cache = Arc::new(RegionCache::new(
            pd.clone() as Arc<dyn RegionSource>,
            &config,
        ));
        let transport = Transport::new(&config)?;
        let oracle = Arc::new(ClusterOracle {
            pd: pd.clone(),
            oracle: tokio::sync::OnceCell::new(),
        });
        let sender = SenderCore::new(
            SenderParts {
                cache,
                transport,
                cluster_id: pd.cluster_id(),
                read_ts_validator: Some(oracle.clone() as Arc<dyn ReadTsValidator>),
            },
            &config,
        );
        let fan_out = FanOutLimit::new(config.raw_fan_out_concurrency);
        // Connecting needs tokio (the transport has already checked): its tasks run here.
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid_argument("a cluster must be connected inside a tokio runtime")
        })?;
        let inner = Arc::new(ClusterInner {
            config,
            pd,
            sender,
            fan_out,
            safe_ts: SafeTs::default(),
            safe_ts_started: AtomicBool::new(false),
            safe_ts_refreshed: tokio::sync::watch::Sender::new(false),
            oracle,
            runtime,
        });
        Ok(Cluster { inner })
    }

    /// The newest timestamp every store of `txn_scope` can serve a stale read at (client-go
    /// `KVStore.GetMinSafeTS`): [`GLOBAL_TXN_SCOPE`](crate::GLOBAL_TXN_SCOPE) for the whole
    /// cluster, or a value of the stores' `zone` label. Refreshed every 2 s from PD's min
    /// resolved ts, or from the stores when PD cannot tell.
    ///
    /// The first call starts the refresh and waits for its first round (at most 10 s), so an
    /// answer is never a placeholder. `None` means nothing is known for the scope: no store of
    /// it has reported a safe ts yet, or the first round did not finish in time.
    ///
    /// ```no_run
    /// # async fn f(cluster: tikv_client::Cluster) {
    /// use tikv_client::GLOBAL_TXN_SCOPE;
    ///
    /// match cluster.min_safe_ts(GLOBAL_TXN_SCOPE).await {
    ///     Some(ts) => println!("every store can serve stale reads at {ts}"),
    ///     None => println!("no safe ts known yet"),
    /// }
    /// # }
    /// ```
    pub async fn min_safe_ts(&self, txn_scope: &str) -> Option<Timestamp> {
        if !self.inner.safe_ts_started.swap(true, Ordering::AcqRel) {
            let inner = Arc::downgrade(&self.inner);
            self.inner.runtime.spawn(update_safe_ts_periodically(inner));
        }
        if !*self.inner.safe_ts_refreshed.borrow() {
            let mut refreshed = self.inner.safe_ts_refreshed.subscribe();
            // A timeout or a closed cluster leaves the answer to what is known (nothing).
            let _ =
                tokio::time::timeout(FIRST_SAFE_TS_WAIT, refreshed.wait_for(|done| *done)).await;
        }
        match self.inner.safe_ts.min_safe_ts(txn_scope) {
            0 => None,
            ts => Some(Timestamp::from_version(ts)),
        }
    }

    /// A fresh timestamp from PD, retried while PD may come back, within client-go's 15 s TSO
    /// budget (client-go `KVStore.CurrentTimestamp`).
    ///
    /// Errors: [`Error::BackoffExhausted`] with PD's last error when the budget runs out, and at
    /// once the errors waiting cannot cure ([`Error::Closed`], a cluster-id mismatch).
    ///
    /// ```no_run
    /// # async fn f(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// let ts = cluster.current_timestamp().await?;
    /// println!("physical {} ms, logical {}", ts.physical(), ts.logical());
    /// # Ok(()) }
    /// ```
    pub async fn current_timestamp(&self) -> Result<Timestamp> {
        self.inner.oracle.current_timestamp().await
    }

    /// The cluster's timestamp oracle (client-go `KVStore.GetOracle`): fresh and low-resolution
    /// timestamps, stale-read timestamps, lock expiry, read-ts validation, PD's external
    /// timestamp. It is the oracle the cluster's own reads are validated with; cheap to clone.
    ///
    /// ```no_run
    /// # async fn example() -> tikv_client::Result<()> {
    /// use tikv_client::{Cluster, Config};
    ///
    /// let cluster = Cluster::connect(["127.0.0.1:2379"], Config::default()).await?;
    /// let oracle = cluster.oracle();
    /// let start_ts = oracle.timestamp().await?;
    /// oracle.validate_read_ts(start_ts, false).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn oracle(&self) -> TimestampOracle {
        TimestampOracle::new(self.inner.oracle.clone())
    }

    /// Refreshes the safe timestamps now (what the background refresh does every 2 s).
    #[cfg(test)]
    pub(crate) async fn update_safe_ts(&self) {
        self.inner.update_safe_ts().await;
    }

    /// Refreshes the safe timestamps as when PD cannot answer: every store is asked.
    #[cfg(test)]
    pub(crate) async fn update_safe_ts_without_pd(&self) {
        struct NoPd<'a>(&'a ClusterInner);
        impl SafeTsSource for NoPd<'_> {
            fn min_resolved_ts<'a>(&'a self, _: &'a [u64]) -> BoxFuture<'a, Result<MinResolvedTs>> {
                Box::pin(async {
                    Err(Error::Pd {
                        message: "PD is not asked in this test".to_owned(),
                    })
                })
            }

            fn store_safe_ts<'a>(&'a self, store: &'a SafeTsStore) -> BoxFuture<'a, Result<u64>> {
                self.0.store_safe_ts(store)
            }
        }
        let stores = self.inner.safe_ts_stores();
        self.inner.safe_ts.update(&NoPd(&self.inner), &stores).await;
    }

    /// The safe ts last learned for one store.
    #[cfg(test)]
    pub(crate) fn store_safe_ts(&self, store_id: u64) -> Option<u64> {
        self.inner.safe_ts.store_safe_ts(store_id)
    }

    /// The configuration the cluster was connected with.
    ///
    /// ```no_run
    /// # fn f(cluster: &tikv_client::Cluster) {
    /// println!("regions refreshed every {:?}", cluster.config().regions_refresh_interval);
    /// # }
    /// ```
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The PD client (crate-private: PD is reached through the cluster's own methods).
    pub(crate) fn pd_client(&self) -> &PdClient {
        &self.inner.pd
    }

    /// The region cache (in the keys TiKV stores: API V2 keys include their keyspace prefix).
    /// Crate-private: users locate keys through their client (`RawClient::locate_key`), in
    /// their own key space.
    pub(crate) fn region_cache(&self) -> &RegionCache {
        &self.inner.sender.cache
    }

    /// What the client knows about every store it has seen, by id (client-go
    /// `RegionCache.GetAllStores`).
    ///
    /// ```no_run
    /// # async fn f(cluster: tikv_client::Cluster) {
    /// for store in cluster.stores() {
    ///     println!("store {} at {} ({:?})", store.id, store.address, store.state);
    /// }
    /// # }
    /// ```
    pub fn stores(&self) -> Vec<crate::StoreInfo> {
        self.inner.sender.cache.stores()
    }

    /// The client's view of a store's health: its own slow score and the one TiKV last
    /// reported (client-go `Store.GetHealthStatus().GetHealthStatusDetail()`); `None` for a
    /// store the cache does not know.
    ///
    /// ```no_run
    /// # async fn f(cluster: tikv_client::Cluster) {
    /// if let Some(health) = cluster.store_health(1) {
    ///     println!("store 1 slow: {}", health.is_slow());
    /// }
    /// # }
    /// ```
    pub fn store_health(&self, store_id: u64) -> Option<crate::StoreHealthDetail> {
        self.inner.sender.cache.store_health(store_id)
    }

    /// The cluster id PD reported.
    ///
    /// ```no_run
    /// # fn f(cluster: &tikv_client::Cluster) {
    /// println!("connected to cluster {}", cluster.cluster_id());
    /// # }
    /// ```
    pub fn cluster_id(&self) -> u64 {
        self.inner.pd.cluster_id()
    }

    /// Closes the connections and stops the background tasks; requests in flight and later
    /// ones fail with [`Error::Closed`].
    ///
    /// ```no_run
    /// # async fn f(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
    /// use tikv_client::{Error, RawClient};
    ///
    /// let client = RawClient::builder_on(&cluster).build().await?;
    /// cluster.close();
    /// // The clients built on the cluster stop with it.
    /// if let Err(Error::Closed) = client.get("k").await {
    ///     println!("closed");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn close(&self) {
        self.inner.sender.close();
        self.inner.oracle.close();
        self.inner.sender.transport.close();
        self.inner.sender.cache.close();
        self.inner.pd.close();
    }

    pub(crate) fn sender(&self) -> &Arc<SenderCore> {
        &self.inner.sender
    }

    pub(crate) fn fan_out_limit(&self) -> &FanOutLimit {
        &self.inner.fan_out
    }
}

impl ClusterInner {
    async fn update_safe_ts(&self) {
        let stores = self.safe_ts_stores();
        self.safe_ts.update(self, &stores).await;
    }

    /// The resolved stores of the cache, as the safe-ts tracker sees them.
    fn safe_ts_stores(&self) -> Vec<SafeTsStore> {
        self.sender
            .cache
            .store_cache()
            .all()
            .iter()
            .filter(|s| s.resolve_state() == ResolveState::Resolved)
            .filter(|s| !s.address().is_empty())
            .map(|s| SafeTsStore {
                id: s.id(),
                address: s.address().to_string(),
                zone: s
                    .labels()
                    .into_iter()
                    .find(|l| l.key == DC_LABEL_KEY)
                    .map(|l| l.value),
            })
            .collect()
    }
}

/// PD's min resolved ts, and each store's `GetStoreSafeTS`.
impl SafeTsSource for ClusterInner {
    fn min_resolved_ts<'a>(&'a self, store_ids: &'a [u64]) -> BoxFuture<'a, Result<MinResolvedTs>> {
        Box::pin(self.pd.min_resolved_ts(store_ids))
    }

    fn store_safe_ts<'a>(&'a self, store: &'a SafeTsStore) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let client = self.sender.transport.store(&store.address)?;
            // The whole key space.
            let request = kvrpcpb::StoreSafeTsRequest {
                key_range: Some(kvrpcpb::KeyRange::default()),
            };
            let opts = SendOptions::new(STORE_SAFE_TS_TIMEOUT);
            match client
                .unary(UnaryRequest::GetStoreSafeTs(request), opts)
                .await?
            {
                UnaryResponse::GetStoreSafeTs(resp) => Ok(resp.safe_ts),
                other => Err(Error::internal(format!(
                    "GetStoreSafeTS answered with {other:?}"
                ))),
            }
        })
    }
}

/// The background safe-ts refresh: every 2 s until the cluster closes or is dropped (it holds
/// the cluster weakly).
async fn update_safe_ts_periodically(inner: Weak<ClusterInner>) {
    let mut ticker = tokio::time::interval(SAFE_TS_UPDATE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // The first tick completes at once: the first round runs when the refresh starts.
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.sender.is_closed() {
            return;
        }
        inner.update_safe_ts().await;
        inner.safe_ts_refreshed.send_replace(true);
    }
}
