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
use crate::pd::{BoxFuture, MinResolvedTs, PdClient, RegionSource};
use crate::request::dispatch::FanOutLimit;
use crate::request::sender::{SenderCore, SenderParts};
use crate::safe_ts::{DC_LABEL_KEY, SAFE_TS_UPDATE_INTERVAL, SafeTs, SafeTsSource, SafeTsStore};
use crate::transport::{SendOptions, Transport, UnaryRequest, UnaryResponse};
use crate::{Error, Result};

/// How long a store may take to report its safe ts (client-go `ReadTimeoutShort`).
const STORE_SAFE_TS_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to one TiKV cluster, shared by the clients built from it. Cheap to clone.
///
/// Dropping the last clone (and every client built from it) closes the connections and stops
/// the background tasks; [`Cluster::close`] does it at once.
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
    /// The runtime the cluster was connected on, for tasks started later.
    runtime: tokio::runtime::Handle,
}

impl Drop for ClusterInner {
    fn drop(&mut self) {
        self.sender.close();
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
        let sender = SenderCore::new(
            SenderParts {
                cache,
                transport,
                cluster_id: pd.cluster_id(),
                read_ts_validator: None,
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
            runtime,
        });
        Ok(Cluster { inner })
    }

    /// The newest timestamp every store of `txn_scope` can serve a stale read at (client-go
    /// `KVStore.GetMinSafeTS`): [`GLOBAL_TXN_SCOPE`](crate::GLOBAL_TXN_SCOPE) for the whole
    /// cluster, or a value of the stores' `zone` label. Refreshed every 2 s from PD's min
    /// resolved ts, or from the stores when PD cannot tell; 0 until known.
    ///
    /// The first call starts the refresh (its first round runs at once) and answers 0.
    pub fn min_safe_ts(&self, txn_scope: &str) -> u64 {
        if !self.inner.safe_ts_started.swap(true, Ordering::AcqRel) {
            let inner = Arc::downgrade(&self.inner);
            self.inner.runtime.spawn(update_safe_ts_periodically(inner));
        }
        self.inner.safe_ts.min_safe_ts(txn_scope)
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
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn store_safe_ts(&self, store_id: u64) -> Option<u64> {
        self.inner.safe_ts.store_safe_ts(store_id)
    }

    /// The configuration the cluster was connected with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The PD client.
    pub fn pd_client(&self) -> &PdClient {
        &self.inner.pd
    }

    /// The region cache (in the keys TiKV stores: API V2 keys include their keyspace prefix).
    pub fn region_cache(&self) -> &RegionCache {
        &self.inner.sender.cache
    }

    /// The cluster id PD reported.
    pub fn cluster_id(&self) -> u64 {
        self.inner.pd.cluster_id()
    }

    /// Closes the connections and stops the background tasks; requests in flight and later
    /// ones fail with [`Error::Closed`].
    pub fn close(&self) {
        self.inner.sender.close();
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
    }
}
