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
use std::sync::Arc;

use crate::config::Config;
use crate::locate::RegionCache;
use crate::pd::{PdClient, RegionSource};
use crate::request::dispatch::FanOutLimit;
use crate::request::sender::{SenderCore, SenderParts};
use crate::transport::Transport;
use crate::{Error, Result};

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
        let fan_out = FanOutLimit::new(config.committer_concurrency);
        Ok(Cluster {
            inner: Arc::new(ClusterInner {
                config,
                pd,
                sender,
                fan_out,
            }),
        })
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
