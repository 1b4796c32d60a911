//! Router service discovery: the router servers of PD's microservice mode, which answer region
//! and store reads in place of PD, and which of them a read goes to.
//!
//! Who calls it: `PdClient::connect` builds one [`RouterDiscovery`] and asks PD for the router
//! servers once; one background task ([`RouterDiscovery::run`]) asks again every minute and
//! whenever a call asked for it, and probes every known server's gRPC health every second. The
//! region and store reads of `super::client` take a server from [`RouterDiscovery::pick`]; the
//! router dispatcher (`super::router`) takes one for its `routerpb.Router/QueryRegion` stream
//! from [`RouterDiscovery::pick_random`]. Both report failures back
//! ([`RouterDiscovery::report_failure`]).
//!
//! How the servers are found. Router servers register themselves in PD's meta storage (etcd)
//! under `/ms/{cluster_id}/router/registry/`, one JSON entry per server whose `service-addr`
//! is the URL clients dial. A prefix read of that path through `meta_storagepb.MetaStorage/Get`
//! on the PD leader lists them; the addresses are normalized to the client's TLS scheme,
//! sorted and deduplicated. A changed list replaces the known servers: a server that left is
//! dropped with its channel, a new one starts out healthy, one that stayed keeps its channel and
//! health. A PD without meta storage (UNIMPLEMENTED) or without registry entries means "no
//! router servers", and every read goes to PD as before; any other failure keeps the servers
//! known so far (the health checks still vet them) and is retried with a bounded backoff.
//!
//! Which server serves a read. The healthy servers in turn (PD's `serviceBalancer`), or one of
//! them at random for the `QueryRegion` stream (PD's `RandomlyPick`). A server whose call
//! failed to reach it is left out until a health probe finds it serving again, so the next read
//! does not pay for the same dead server; the failed read itself falls back to PD.
//!
//! Ports tikv/pd `client/servicediscovery/router_service_discovery.go` (`updateMember`,
//! `updateNodes`, `nodesChanged`, `startCheckMemberLoop`, `nodeHealthCheckLoop`,
//! `checkNodeHealth`, `ScheduleCheckMemberChanged`, the `serviceBalancer` it shares with
//! `service_discovery.go`), `client/clients/metastorage/client.go` (`DiscoveryMSAddrs`,
//! `ServiceRegistryEntry`) and the prefix range end of `client/meta_storage_client.go`
//! (`getPrefix`). Unlike PD's balancer, a refresh that finds no server anymore forgets the old
//! ones instead of keeping them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use tikv_proto::meta_storagepb::{self, meta_storage_client::MetaStorageClient};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tonic::transport::Channel;

use super::discovery::{Discovery, Health, probe};
use super::retry::{Failure, Retried, classify_status, retry_in_background};
use crate::{Error, Result};

/// How long one registry read may take (PD's `UpdateMemberTimeout`), within the PD timeout.
const REGISTRY_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// The meta-storage path under which router servers register (PD's `servicePathFormat`).
pub(crate) fn registry_prefix(cluster_id: u64) -> String {
    format!("/ms/{cluster_id}/router/registry/")
}

/// The end of the key range holding every key that starts with `prefix` (etcd's prefix range
/// end): the prefix with its last byte below 0xff incremented and the rest cut off; `\0`
/// (the whole key space) when every byte is 0xff.
pub(crate) fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// One registry entry as router servers write it (PD's `ServiceRegistryEntry`); only the
/// address matters here, the other fields (`name`, `version`, ...) are ignored.
#[derive(Debug, Deserialize)]
struct RegistryEntry {
    #[serde(rename = "service-addr", default)]
    service_addr: String,
}

/// The router-server addresses of a registry read, in key order, skipping entries that are
/// not valid JSON or have no address (PD's `DiscoveryMSAddrs` logs and skips them too).
pub(crate) fn parse_registry(kvs: &[meta_storagepb::KeyValue]) -> Vec<String> {
    kvs.iter()
        .filter_map(
            |kv| match serde_json::from_slice::<RegistryEntry>(&kv.value) {
                Ok(entry) if !entry.service_addr.is_empty() => Some(entry.service_addr),
                Ok(_) => None,
                Err(e) => {
                    let key = String::from_utf8_lossy(&kv.key);
                    tracing::warn!(%key, error = %e, "unreadable router registry entry");
                    None
                }
            },
        )
        .collect()
}

/// One router server: its URL, a channel of its own, and its health.
#[derive(Debug, Clone)]
pub(crate) struct RouterNode {
    pub(crate) url: String,
    pub(crate) channel: Channel,
    pub(crate) health: Arc<Health>,
}

/// The router servers as last read from the registry, sorted by URL.
#[derive(Debug, Default)]
pub(crate) struct RouterView {
    pub(crate) nodes: Vec<RouterNode>,
}

impl RouterView {
    pub(crate) fn contains(&self, url: &str) -> bool {
        self.nodes.iter().any(|n| n.url == url)
    }
}

/// The router discovery shared by the client's reads, the router dispatcher and the
/// background task.
#[derive(Debug)]
pub(crate) struct RouterDiscovery {
    discovery: Arc<Discovery>,
    view: RwLock<Arc<RouterView>>,
    /// Round-robin position of [`RouterDiscovery::pick`].
    cursor: AtomicUsize,
    /// Registry reads are single-flight: a read asked for during one waits for it.
    update: tokio::sync::Mutex<()>,
    check_requested: Notify,
    /// Counts finished registry reads (successful or not), so that tests can await one.
    updates: watch::Sender<u64>,
}

impl RouterDiscovery {
    pub(crate) fn new(discovery: Arc<Discovery>) -> Self {
        RouterDiscovery {
            discovery,
            view: RwLock::new(Arc::new(RouterView::default())),
            cursor: AtomicUsize::new(0),
            update: tokio::sync::Mutex::new(()),
            check_requested: Notify::new(),
            updates: watch::Sender::new(0),
        }
    }

    pub(crate) fn view(&self) -> Arc<RouterView> {
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The URLs of the known router servers, sorted.
    #[cfg(test)]
    pub(crate) fn urls(&self) -> Vec<String> {
        self.view().nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// The next healthy router server in turn (PD's `serviceBalancer.get`); `None` when no
    /// server is known or none is healthy, and the read goes to PD.
    pub(crate) fn pick(&self) -> Option<RouterNode> {
        let view = self.view();
        let n = view.nodes.len();
        if n == 0 {
            return None;
        }
        // As PD's balancer: the next pick starts after the server just picked.
        let start = self.cursor.load(Ordering::Relaxed);
        let picked = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| view.nodes[i].health.is_available())?;
        self.cursor.store(picked + 1, Ordering::Relaxed);
        Some(view.nodes[picked].clone())
    }

    /// A healthy router server chosen at random (PD's `RandomlyPick` of a router stream).
    pub(crate) fn pick_random(&self) -> Option<RouterNode> {
        let view = self.view();
        let healthy: Vec<&RouterNode> = view
            .nodes
            .iter()
            .filter(|n| n.health.is_available())
            .collect();
        if healthy.is_empty() {
            return None;
        }
        Some(healthy[fastrand::usize(..healthy.len())].clone())
    }

    /// A call to `node` failed. `unreachable`: the server could not be reached (or did not
    /// answer in time), so it is left out until a health probe finds it serving. Either way
    /// the registry is read again soon (PD's `ScheduleCheckMemberChanged`).
    pub(crate) fn report_failure(&self, node: &RouterNode, unreachable: bool) {
        if unreachable {
            node.health.set_network_failure(true);
        }
        self.schedule_check();
    }

    /// Asks the background task to read the registry soon.
    pub(crate) fn schedule_check(&self) {
        self.check_requested.notify_one();
    }

    /// A receiver of the number of finished registry reads.
    #[cfg(test)]
    pub(crate) fn subscribe_updates(&self) -> watch::Receiver<u64> {
        self.updates.subscribe()
    }

    /// Reads the registry from the PD leader by `deadline` and applies what it lists.
    pub(crate) async fn update(&self, deadline: Instant) -> Result<()> {
        let result = self.update_inner(deadline).await;
        self.updates.send_modify(|n| *n += 1);
        result
    }

    async fn update_inner(&self, deadline: Instant) -> Result<()> {
        let _single = match tokio::time::timeout_at(deadline, self.update.lock()).await {
            Ok(guard) => guard,
            Err(_) => {
                return Err(Error::PdServerTimeout {
                    message: "reading the router registry timed out".to_owned(),
                });
            }
        };
        let (_, target) = self.discovery.leader_target(false);
        let Some(target) = target else {
            return Err(Error::PdServerTimeout {
                message: "no PD leader known to read the router registry from".to_owned(),
            });
        };
        let cluster_id = self.discovery.cluster_id();
        let prefix = registry_prefix(cluster_id).into_bytes();
        let request = meta_storagepb::GetRequest {
            header: Some(meta_storagepb::RequestHeader {
                cluster_id,
                ..Default::default()
            }),
            range_end: Bytes::from(prefix_range_end(&prefix)),
            key: Bytes::from(prefix),
            ..Default::default()
        };
        let deadline = deadline.min(Instant::now() + REGISTRY_READ_TIMEOUT);
        let mut grpc = MetaStorageClient::new(target.channel);
        let resp = match tokio::time::timeout_at(deadline, grpc.get(request)).await {
            Err(_) => {
                return Err(Error::PdServerTimeout {
                    message: format!("reading the router registry on {} timed out", target.url),
                });
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                // A PD without meta storage has no router service.
                self.apply(Vec::new());
                return Ok(());
            }
            Ok(Err(status)) => {
                return Err(match classify_status(&target.url, &status) {
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
        let mut urls = Vec::new();
        for addr in parse_registry(&resp.kvs) {
            match self.discovery.normalize_url(&addr) {
                Ok(url) => urls.push(url),
                Err(e) => tracing::warn!(%addr, error = %e, "unusable router server address"),
            }
        }
        urls.sort();
        urls.dedup();
        self.apply(urls);
        Ok(())
    }

    /// Installs the servers at `urls` (sorted, deduplicated) unless they are the ones known.
    fn apply(&self, urls: Vec<String>) {
        let old = self.view();
        if old.nodes.len() == urls.len() && old.nodes.iter().zip(&urls).all(|(n, u)| &n.url == u) {
            return;
        }
        let mut nodes = Vec::with_capacity(urls.len());
        for url in urls {
            if let Some(kept) = old.nodes.iter().find(|n| n.url == url) {
                nodes.push(kept.clone());
                continue;
            }
            match self.discovery.open_channel(&url) {
                Ok(channel) => nodes.push(RouterNode {
                    url,
                    channel,
                    health: Arc::default(),
                }),
                Err(e) => tracing::warn!(%url, error = %e, "cannot connect to a router server"),
            }
        }
        let listed: Vec<&str> = nodes.iter().map(|n| n.url.as_str()).collect();
        tracing::info!(servers = ?listed, "router servers changed");
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(RouterView { nodes });
    }

    /// Probes every known server once, each by a third of `interval` (PD's
    /// `checkNodeHealth`), all at once.
    pub(crate) async fn check_health(&self, interval: Duration) {
        let view = self.view();
        if view.nodes.is_empty() {
            return;
        }
        let deadline = Instant::now() + (interval / 3).max(Duration::from_millis(10));
        let probes = view.nodes.iter().map(|node| async move {
            let healthy = probe(&node.channel, deadline).await;
            node.health.set_network_failure(!healthy);
        });
        futures_util::future::join_all(probes).await;
    }

    /// The background task: reads the registry every `update_interval` and whenever asked
    /// (with PD's bounded member-update backoff), and probes the servers every
    /// `health_interval`. Ends when `shutdown` fires or its sender is dropped.
    pub(crate) async fn run(
        self: Arc<Self>,
        update_interval: Duration,
        health_interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut next_update = Instant::now() + update_interval;
        let mut next_probe = Instant::now() + health_interval;
        loop {
            let update = tokio::select! {
                () = tokio::time::sleep_until(next_update) => true,
                () = self.check_requested.notified() => true,
                () = tokio::time::sleep_until(next_probe) => false,
                _ = shutdown.changed() => return,
            };
            if !update {
                tokio::select! {
                    () = self.check_health(health_interval) => {}
                    _ = shutdown.changed() => return,
                }
                next_probe = Instant::now() + health_interval;
                continue;
            }
            next_update = Instant::now() + update_interval;
            let deadline = Instant::now() + self.discovery.timeout();
            let read = retry_in_background(deadline, &mut shutdown, || async {
                self.update(deadline).await.is_ok()
            });
            match read.await {
                Retried::Done => {}
                Retried::GaveUp => {
                    tracing::debug!("reading the router registry failed; will retry later");
                }
                Retried::Shutdown => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pd::{PdClient, RegionSource};

    #[tokio::test]
    async fn a_pd_without_router_servers_serves_every_read() {
        // A PD whose meta storage lists no router server, or that has no meta storage at all
        // (UNIMPLEMENTED): no router server, no error, and PD answers the reads.
        let cluster = tikv_mock::MockCluster::builder().start().await.unwrap();
        let mut config = crate::Config::default();
        config.pd_client.pd_server_timeout = Duration::from_secs(2);
        let pd = PdClient::connect(cluster.pd_endpoints(), &config)
            .await
            .unwrap();
        let routers = &pd.core().router_service;
        assert!(routers.urls().is_empty());
        let mut updates = routers.subscribe_updates();
        updates.borrow_and_update();
        routers
            .update(Instant::now() + Duration::from_secs(2))
            .await
            .unwrap();
        assert!(updates.has_changed().unwrap(), "the read is counted");
        assert!(routers.urls().is_empty());
        assert!(routers.pick().is_none());
        assert!(routers.pick_random().is_none());

        let store_id = cluster.store_ids()[0];
        let store = pd.get_store(store_id).await.unwrap().unwrap();
        let again = pd.get_store_from_leader(store_id).await.unwrap().unwrap();
        // The heartbeat time moves; the store is the same.
        assert_eq!((again.id, again.address), (store.id, store.address));
        pd.get_region(b"a", false).await.unwrap().unwrap();
        assert_eq!(cluster.pd_request_count(0, "GetStore"), 2);
    }

    #[test]
    fn the_registry_path_and_its_range_end() {
        assert_eq!(registry_prefix(7), "/ms/7/router/registry/");
        assert_eq!(
            prefix_range_end(b"/ms/7/router/registry/"),
            b"/ms/7/router/registry0".to_vec()
        );
        assert_eq!(prefix_range_end(b"a\xff\xff"), b"b".to_vec());
        assert_eq!(prefix_range_end(b"\xff"), vec![0]);
        assert_eq!(prefix_range_end(b""), vec![0]);
    }

    #[test]
    fn registry_entries_yield_their_service_addr() {
        let kv = |key: &str, value: &str| meta_storagepb::KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        };
        let kvs = [
            kv(
                "/ms/1/router/registry/http://a:1",
                r#"{"name":"router-0","service-addr":"http://a:1","version":"v9","git-hash":"x",
                   "deploy-path":"/d","start-timestamp":1}"#,
            ),
            kv("/ms/1/router/registry/bad", "not json"),
            kv("/ms/1/router/registry/empty", r#"{"name":"no address"}"#),
            kv(
                "/ms/1/router/registry/http://b:2",
                r#"{"service-addr":"http://b:2"}"#,
            ),
        ];
        assert_eq!(parse_registry(&kvs), vec!["http://a:1", "http://b:2"]);
    }
}
