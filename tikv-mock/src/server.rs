//! Starting and stopping the mock's gRPC servers, and the [`MockCluster`] handle with its
//! control and fault API.
//!
//! Each server (PD, and one per store) runs an accept loop of its own so that stopping it can
//! do what a crashed process does to its clients: the listener closes (new connections are
//! refused) and every open connection is shut down, including long-lived BatchCommands and TSO
//! streams. A graceful gRPC shutdown would instead wait for those streams forever.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::metapb;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::service::Routes;

use crate::clock::{Clock, ManualClock, SystemClock};
use crate::cluster::{ClusterState, DEFAULT_KEYSPACE_ID};
use crate::codec::encode_bytes;
use crate::fault::{FaultEngine, FaultId, FaultRule};
use crate::pd::router_service::RouterServiceState;
use crate::tikv::StoreLinks;
use crate::{ApiVersion, MockError, Shared};

/// The cluster id the mock reports unless told otherwise (PD's ids are large random numbers).
const DEFAULT_CLUSTER_ID: u64 = 7_130_000_000_000_000_001;

/// Builds a [`MockCluster`].
#[derive(Debug, Clone)]
pub struct MockClusterBuilder {
    stores: usize,
    replicas: usize,
    split_keys: Vec<Bytes>,
    api_version: ApiVersion,
    keyspaces: Vec<String>,
    clock: Option<Arc<dyn Clock>>,
    manual_clock: Option<ManualClock>,
    auto_split_keys: Option<usize>,
    pd_addr: Option<SocketAddr>,
    cluster_id: u64,
    pd_members: usize,
    invalid_max_ts_action: crate::InvalidMaxTsAction,
    tso_servers: usize,
    router_servers: usize,
}

impl Default for MockClusterBuilder {
    fn default() -> Self {
        MockClusterBuilder {
            stores: 3,
            replicas: 3,
            split_keys: Vec::new(),
            api_version: ApiVersion::V1,
            keyspaces: Vec::new(),
            clock: None,
            manual_clock: None,
            auto_split_keys: None,
            pd_addr: None,
            cluster_id: DEFAULT_CLUSTER_ID,
            pd_members: 1,
            invalid_max_ts_action: crate::InvalidMaxTsAction::default(),
            tso_servers: 0,
            router_servers: 0,
        }
    }
}

impl MockClusterBuilder {
    /// Number of TiKV stores (default 3).
    pub fn stores(mut self, n: usize) -> Self {
        self.stores = n;
        self
    }

    /// Peers per region (default 3, at most one per store).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Initial region boundaries, as keys appear on the wire: raw bytes under API V1, full
    /// prefixed keys (`r` + keyspace id + key) under API V2, where they are encoded the way TiKV
    /// stores them.
    pub fn split_keys<K: AsRef<[u8]>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.split_keys
            .extend(keys.into_iter().map(|k| Bytes::copy_from_slice(k.as_ref())));
        self
    }

    /// Storage API version (default V1).
    pub fn api_version(mut self, version: ApiVersion) -> Self {
        self.api_version = version;
        self
    }

    /// Creates an ENABLED keyspace (the DEFAULT keyspace, id 0, always exists).
    pub fn keyspace(mut self, name: impl Into<String>) -> Self {
        self.keyspaces.push(name.into());
        self
    }

    /// Uses a manual clock for the TSO, lock TTLs and raw TTLs; advance it through
    /// [`MockCluster::advance_clock`] or the clock itself.
    pub fn manual_clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(Arc::new(clock.clone()));
        self.manual_clock = Some(clock);
        self
    }

    /// Uses any clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self.manual_clock = None;
        self
    }

    /// Splits a region automatically once it holds more than `n` keys, as TiKV splits regions
    /// by size.
    pub fn auto_split_keys(mut self, n: usize) -> Self {
        self.auto_split_keys = Some(n);
        self
    }

    /// Address of the PD server (default `127.0.0.1:0`, a free port).
    pub fn pd_addr(mut self, addr: SocketAddr) -> Self {
        self.pd_addr = Some(addr);
        self
    }

    /// The cluster id PD and the stores report.
    pub fn cluster_id(mut self, id: u64) -> Self {
        self.cluster_id = id;
        self
    }

    /// Number of PD members (default 1). The first listens on [`pd_addr`](Self::pd_addr), the
    /// others on free ports; member 0 starts as the leader. Followers answer as PD followers
    /// do (`GetMembers` and `GetClusterInfo` are served, other calls fail with UNAVAILABLE
    /// `not leader`, TSO streams end with PD's not-leader error); move the leadership with
    /// [`MockCluster::transfer_pd_leader`].
    pub fn pd_members(mut self, n: usize) -> Self {
        self.pd_members = n;
        self
    }

    /// What stores do when a request would move max_ts past what the TSO allows (default:
    /// [`InvalidMaxTsAction::Panic`](crate::InvalidMaxTsAction::Panic), as TiKV).
    pub fn invalid_max_ts_action(mut self, action: crate::InvalidMaxTsAction) -> Self {
        self.invalid_max_ts_action = action;
        self
    }

    /// Runs PD in microservice mode with `n` TSO servers serving `tsopb.TSO` (0, the default,
    /// keeps PD serving timestamps itself). All servers are members of the default keyspace
    /// group, server 0 its primary; `GetClusterInfo` reports `API_SVC_MODE` and their URLs.
    pub fn tso_microservice(mut self, n: usize) -> Self {
        self.tso_servers = n;
        self
    }

    /// Runs `n` router servers (PD's router microservice) serving `routerpb.Router` on their
    /// own addresses, each registered in PD's meta storage under
    /// `/ms/{cluster_id}/router/registry/` (0, the default, runs none). They answer region and
    /// store reads from PD's maps; see [`MockCluster::router_server_addrs`] and the controls
    /// after it.
    pub fn router_microservice(mut self, n: usize) -> Self {
        self.router_servers = n;
        self
    }

    /// Binds every listener and starts serving.
    pub async fn start(self) -> Result<MockCluster, MockError> {
        if self.stores == 0 {
            return Err(MockError::Config(
                "a cluster needs at least one store".to_owned(),
            ));
        }
        if self.pd_members == 0 {
            return Err(MockError::Config(
                "a cluster needs at least one PD member".to_owned(),
            ));
        }
        if matches!(self.auto_split_keys, Some(0)) {
            return Err(MockError::Config(
                "auto split needs a threshold above 0".to_owned(),
            ));
        }
        let pd_addr = self
            .pd_addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut pd_listeners = vec![bind(pd_addr).await?];
        for _ in 1..self.pd_members {
            pd_listeners.push(bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?);
        }
        let pd_addrs: Vec<SocketAddr> = pd_listeners
            .iter()
            .map(local_addr)
            .collect::<Result<_, _>>()?;

        let mut store_listeners = Vec::with_capacity(self.stores);
        for _ in 0..self.stores {
            let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            store_listeners.push(listener);
        }
        let store_addrs: Vec<String> = store_listeners
            .iter()
            .map(|l| local_addr(l).map(|a| a.to_string()))
            .collect::<Result<_, _>>()?;

        let mut tso_listeners = Vec::with_capacity(self.tso_servers);
        for _ in 0..self.tso_servers {
            tso_listeners.push(bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?);
        }
        let tso_addrs: Vec<SocketAddr> = tso_listeners
            .iter()
            .map(local_addr)
            .collect::<Result<_, _>>()?;

        let mut router_listeners = Vec::with_capacity(self.router_servers);
        for _ in 0..self.router_servers {
            router_listeners.push(bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?);
        }
        let router_addrs: Vec<SocketAddr> = router_listeners
            .iter()
            .map(local_addr)
            .collect::<Result<_, _>>()?;

        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let mut state = ClusterState::new(
            self.cluster_id,
            self.api_version,
            clock,
            &store_addrs,
            self.replicas,
        );
        state.auto_split_keys = self.auto_split_keys;
        state.split_keyspace(DEFAULT_KEYSPACE_ID)?;
        for name in &self.keyspaces {
            state.create_keyspace(name)?;
        }
        let storage_keys: Vec<Bytes> = self
            .split_keys
            .iter()
            .map(|k| storage_split_key(self.api_version, k))
            .collect();
        state.split(&storage_keys)?;
        spread_leaders(&mut state);

        state.invalid_max_ts_action = self.invalid_max_ts_action;
        if !tso_addrs.is_empty() {
            state.pd.tso_service = Some(crate::pd::tso_service::TsoServiceState::new(tso_addrs));
        }
        if !router_addrs.is_empty() {
            let started = i64::try_from(state.clock.now_ms() / 1000).unwrap_or(i64::MAX);
            let n = router_addrs.len();
            let mut svc = RouterServiceState::new(router_addrs, started);
            let cluster_id = state.cluster_id;
            for server in 0..n {
                svc.set_registered(&mut state.pd.meta_storage, cluster_id, server, true);
            }
            state.pd.router_service = Some(svc);
        }
        let (crashes, mut crashed) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            faults: FaultEngine::default(),
            pd_addrs,
            pd_leader: AtomicUsize::new(0),
            lock_waits: Default::default(),
            crashes,
        });
        let links = Arc::new(StoreLinks::default());
        let servers = Arc::new(Servers {
            tasks: Mutex::new(HashMap::new()),
            links: links.clone(),
        });
        // Stops the servers of stores that panicked. It must not keep the servers alive: the
        // last cluster handle dropping them is what shuts the cluster down.
        let weak_servers = Arc::downgrade(&servers);
        tokio::spawn(async move {
            while let Some(store_id) = crashed.recv().await {
                let Some(servers) = weak_servers.upgrade() else {
                    return;
                };
                servers.stop(ServerKey::Store(store_id)).await;
            }
        });
        for (member, listener) in pd_listeners.into_iter().enumerate() {
            servers.spawn(
                ServerKey::Pd(member),
                listener,
                crate::pd::routes(shared.clone(), member),
                None,
            );
        }
        for (server, listener) in tso_listeners.into_iter().enumerate() {
            servers.spawn(
                ServerKey::Tso(server),
                listener,
                crate::pd::tso_service::routes(shared.clone(), server),
                None,
            );
        }
        for (server, listener) in router_listeners.into_iter().enumerate() {
            servers.spawn(
                ServerKey::Router(server),
                listener,
                crate::pd::router_service::routes(shared.clone(), server),
                None,
            );
        }
        let store_ids: Vec<u64> = shared.lock().stores.keys().copied().collect();
        for (store_id, listener) in store_ids.into_iter().zip(store_listeners) {
            let (routes, health) =
                crate::tikv::routes_with_health(shared.clone(), store_id, links.clone());
            servers.spawn(ServerKey::Store(store_id), listener, routes, Some(health));
        }
        Ok(MockCluster {
            shared,
            servers,
            manual_clock: self.manual_clock,
        })
    }
}

/// Moves region leaders round-robin over the stores, so that a multi-region cluster exercises
/// requests to several stores as a balanced real cluster would.
fn spread_leaders(state: &mut ClusterState) {
    let regions: Vec<(u64, Vec<u64>)> = state
        .all_regions()
        .map(|r| (r.id(), r.meta.peers.iter().map(|p| p.store_id).collect()))
        .collect();
    for (i, (region_id, stores)) in regions.into_iter().enumerate() {
        if let Some(&store) = stores.get(i % stores.len().max(1)) {
            // The store holds a voter of the region by construction, so this cannot fail.
            let _ = state.transfer_leader(region_id, store);
        }
    }
}

fn storage_split_key(api: ApiVersion, key: &[u8]) -> Bytes {
    match api {
        ApiVersion::V1 => Bytes::copy_from_slice(key),
        ApiVersion::V2 => Bytes::from(encode_bytes(key)),
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, MockError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| MockError::Io(format!("cannot bind {addr}: {e}")))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, MockError> {
    listener
        .local_addr()
        .map_err(|e| MockError::Io(format!("no local address: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ServerKey {
    /// A PD member, by index.
    Pd(usize),
    Store(u64),
    /// A TSO microservice server, by index.
    Tso(usize),
    /// A router microservice server, by index.
    Router(usize),
}

/// One running server: its accept loop, its gRPC server, and a duplicate handle of every
/// connection it accepted, used to shut them down when the server is stopped.
#[derive(Debug)]
struct RunningServer {
    addr: SocketAddr,
    /// The server's gRPC health reporter, for stores.
    health: Option<tonic_health::server::HealthReporter>,
    accept: JoinHandle<()>,
    serve: JoinHandle<()>,
    connections: Arc<Mutex<Vec<StdTcpStream>>>,
}

impl RunningServer {
    /// Aborts the server's tasks and shuts its connections; the listener is closed once the
    /// returned tasks have finished, which callers that rebind the address await.
    fn kill(self) -> [JoinHandle<()>; 2] {
        self.accept.abort();
        self.serve.abort();
        let conns =
            std::mem::take(&mut *self.connections.lock().unwrap_or_else(|p| p.into_inner()));
        for conn in conns {
            // Shutting down the socket (through the duplicate) wakes the connection's reader
            // with EOF and fails its writes, so hyper drops the connection and every stream on it.
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        [self.accept, self.serve]
    }
}

/// Waits until aborted server tasks are gone, and with them their listeners.
async fn reap(tasks: impl IntoIterator<Item = JoinHandle<()>>) {
    for task in tasks {
        // The error is the cancellation we asked for.
        let _ = task.await;
    }
}

#[derive(Debug)]
struct Servers {
    tasks: Mutex<HashMap<ServerKey, RunningServer>>,
    /// Which stores' servers run, for stores that forward requests to them; kept in step with
    /// `tasks` by `spawn` and the stop paths.
    links: Arc<StoreLinks>,
}

impl Servers {
    fn spawn(
        &self,
        key: ServerKey,
        listener: TcpListener,
        routes: Routes,
        health: Option<tonic_health::server::HealthReporter>,
    ) {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let connections: Arc<Mutex<Vec<StdTcpStream>>> = Arc::default();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<TcpStream, std::io::Error>>(64);
        let conns = connections.clone();
        let accept = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of file descriptors and the like: pause instead of spinning, as
                        // a server's accept loop does, and try again.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Ok(std_stream) = stream.into_std() else {
                    continue;
                };
                if let Ok(dup) = std_stream.try_clone() {
                    let mut guard = conns.lock().unwrap_or_else(|p| p.into_inner());
                    // Forget connections the peer already closed, so the list stays small.
                    guard.retain(|c| c.peer_addr().is_ok());
                    guard.push(dup);
                }
                let Ok(stream) = TcpStream::from_std(std_stream) else {
                    continue;
                };
                if tx.send(Ok(stream)).await.is_err() {
                    return;
                }
            }
        });
        let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
        let serve = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .accept_http1(true)
                .add_routes(routes)
                .serve_with_incoming(incoming)
                .await;
        });
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let ServerKey::Store(store_id) = key {
            self.links.set_running(store_id, true);
        }
        if let Some(old) = tasks.insert(
            key,
            RunningServer {
                addr,
                health,
                accept,
                serve,
                connections,
            },
        ) {
            // Replaced only by a restart, which bound the address already: nothing to wait for.
            let _ = old.kill();
        }
    }

    fn is_running(&self, key: ServerKey) -> bool {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.contains_key(&key)
    }

    fn health(&self, key: ServerKey) -> Option<tonic_health::server::HealthReporter> {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.get(&key).and_then(|s| s.health.clone())
    }

    async fn stop(&self, key: ServerKey) -> Option<SocketAddr> {
        let server = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)?;
        if let ServerKey::Store(store_id) = key {
            // Before the connections go, so forwarded traffic breaks along with direct traffic.
            self.links.set_running(store_id, false);
        }
        let addr = server.addr;
        reap(server.kill()).await;
        Some(addr)
    }

    /// Stops every server; the listeners close as soon as the runtime drops the aborted tasks,
    /// which the returned handles let an async caller wait for.
    fn stop_all(&self) -> Vec<JoinHandle<()>> {
        let all: Vec<RunningServer> = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(key, s)| {
                if let ServerKey::Store(store_id) = key {
                    self.links.set_running(store_id, false);
                }
                s
            })
            .collect();
        all.into_iter().flat_map(RunningServer::kill).collect()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        // Drop cannot wait: the listeners close as soon as the runtime drops the aborted tasks.
        let _ = self.stop_all();
    }
}

/// A running mock cluster. Clones share the cluster; dropping the last clone (or calling
/// [`MockCluster::shutdown`]) stops every server and frees every port.
#[derive(Debug, Clone)]
pub struct MockCluster {
    shared: Arc<Shared>,
    servers: Arc<Servers>,
    manual_clock: Option<ManualClock>,
}

impl MockCluster {
    /// A builder with the defaults: 3 stores, 3 replicas, one region, API V1, system clock.
    pub fn builder() -> MockClusterBuilder {
        MockClusterBuilder::default()
    }

    /// The PD endpoints clients connect to (`host:port`), one per member in member order.
    pub fn pd_endpoints(&self) -> Vec<String> {
        self.shared.pd_addrs.iter().map(|a| a.to_string()).collect()
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> u64 {
        self.shared.lock().cluster_id
    }

    /// Store ids in ascending order.
    pub fn store_ids(&self) -> Vec<u64> {
        self.shared.lock().stores.keys().copied().collect()
    }

    /// The address a store serves on.
    pub fn store_address(&self, store_id: u64) -> Option<String> {
        self.shared
            .lock()
            .stores
            .get(&store_id)
            .map(|s| s.meta.address.clone())
    }

    /// Every region in key order.
    pub fn regions(&self) -> Vec<metapb::Region> {
        self.shared
            .lock()
            .all_regions()
            .map(|r| r.meta.clone())
            .collect()
    }

    /// The region containing a key as it appears on the wire (raw bytes under V1 raw, prefixed
    /// under V2), and its leader.
    pub fn region_for_raw_key(&self, key: &[u8]) -> Option<(metapb::Region, Option<metapb::Peer>)> {
        let state = self.shared.lock();
        let storage = state.raw_storage_key(key);
        state
            .region_by_key(&storage)
            .map(|r| (r.meta.clone(), r.leader_peer().cloned()))
    }

    /// The region containing a transactional key (memcomparable-encoded in storage).
    pub fn region_for_txn_key(&self, key: &[u8]) -> Option<(metapb::Region, Option<metapb::Peer>)> {
        let state = self.shared.lock();
        state
            .region_by_key(&encode_bytes(key))
            .map(|r| (r.meta.clone(), r.leader_peer().cloned()))
    }

    /// Splits so that each key starts a region; keys as they appear on the wire for raw KV.
    pub fn split_raw<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<metapb::Region>, MockError> {
        let mut state = self.shared.lock();
        let api = state.api_version;
        let keys: Vec<Bytes> = keys
            .into_iter()
            .map(|k| storage_split_key(api, k.as_ref()))
            .collect();
        state.split(&keys)
    }

    /// Splits at transactional keys (encoded as TiKV stores them).
    pub fn split_txn<K: AsRef<[u8]>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<metapb::Region>, MockError> {
        let keys: Vec<Bytes> = keys
            .into_iter()
            .map(|k| Bytes::from(encode_bytes(k.as_ref())))
            .collect();
        self.shared.lock().split(&keys)
    }

    /// Splits at storage keys exactly as given.
    pub fn split_storage_keys(&self, keys: &[Bytes]) -> Result<Vec<metapb::Region>, MockError> {
        self.shared.lock().split(keys)
    }

    /// Merges `source` into the adjacent `target`.
    pub fn merge(&self, source: u64, target: u64) -> Result<metapb::Region, MockError> {
        self.shared.lock().merge(source, target)
    }

    /// Makes the region's peer on `store_id` its leader.
    pub fn transfer_leader(&self, region_id: u64, store_id: u64) -> Result<(), MockError> {
        self.shared.lock().transfer_leader(region_id, store_id)
    }

    /// Adds a voter on `store_id`; returns the new peer id.
    pub fn add_peer(&self, region_id: u64, store_id: u64) -> Result<u64, MockError> {
        self.shared.lock().add_peer(region_id, store_id, false)
    }

    /// Adds a learner on `store_id`; returns the new peer id.
    pub fn add_learner(&self, region_id: u64, store_id: u64) -> Result<u64, MockError> {
        self.shared.lock().add_peer(region_id, store_id, true)
    }

    /// Removes the region's peer on `store_id`.
    pub fn remove_peer(&self, region_id: u64, store_id: u64) -> Result<(), MockError> {
        self.shared.lock().remove_peer(region_id, store_id)
    }

    /// Creates an ENABLED keyspace; returns its id.
    pub fn create_keyspace(&self, name: &str) -> Result<u32, MockError> {
        self.shared.lock().create_keyspace(name)
    }

    /// Sets one entry of a keyspace's config, as PD's `UpdateKeyspaceConfig` does (for example
    /// `gc_management_type = keyspace_level`, which gives the keyspace a GC state of its own).
    pub fn set_keyspace_config(
        &self,
        keyspace_id: u32,
        key: &str,
        value: &str,
    ) -> Result<(), MockError> {
        let mut state = self.shared.lock();
        let keyspace = state
            .keyspaces
            .get_mut(&keyspace_id)
            .ok_or_else(|| MockError::Config(format!("no keyspace with id {keyspace_id}")))?;
        keyspace
            .meta
            .config
            .insert(key.to_owned(), value.to_owned());
        state.pd.notify_keyspace_changed();
        Ok(())
    }

    /// Stops a store: its listener closes (connections are refused) and every open connection
    /// to it is shut down. PD keeps reporting the store, as it would for a crashed TiKV.
    pub async fn stop_store(&self, store_id: u64) -> Result<(), MockError> {
        self.servers
            .stop(ServerKey::Store(store_id))
            .await
            .ok_or_else(|| MockError::Topology(format!("store {store_id} is not running")))?;
        if let Some(store) = self.shared.lock().stores.get_mut(&store_id) {
            store.up = false;
        }
        Ok(())
    }

    /// Starts a stopped store again on the same address.
    pub async fn start_store(&self, store_id: u64) -> Result<(), MockError> {
        let addr = self
            .store_address(store_id)
            .ok_or_else(|| MockError::Topology(format!("unknown store {store_id}")))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| MockError::Io(format!("bad store address {addr}: {e}")))?;
        let listener = bind(addr).await?;
        let (routes, health) = crate::tikv::routes_with_health(
            self.shared.clone(),
            store_id,
            self.servers.links.clone(),
        );
        self.servers
            .spawn(ServerKey::Store(store_id), listener, routes, Some(health));
        if let Some(store) = self.shared.lock().stores.get_mut(&store_id) {
            store.up = true;
        }
        Ok(())
    }

    /// Adds a new store, Up and serving on a fresh loopback port, and returns its id. It holds
    /// no region until [`MockCluster::add_peer`] puts one there.
    pub async fn add_store(&self) -> Result<u64, MockError> {
        self.add_store_at(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
    }

    /// Adds a new store serving at `addr` (port 0 picks a free one), for example the address
    /// a stopped or removed store used to have, as when a machine is replaced.
    pub async fn add_store_at(&self, addr: SocketAddr) -> Result<u64, MockError> {
        let listener = bind(addr).await?;
        let addr = local_addr(&listener)?.to_string();
        let store_id = self.shared.lock().add_store(addr);
        let (routes, health) = crate::tikv::routes_with_health(
            self.shared.clone(),
            store_id,
            self.servers.links.clone(),
        );
        self.servers
            .spawn(ServerKey::Store(store_id), listener, routes, Some(health));
        Ok(store_id)
    }

    /// Changes the address a stopped store advertises through PD; [`MockCluster::start_store`]
    /// then serves it there. Swapping the addresses of two stopped stores and starting them
    /// again is the "store restarted on another machine's address" case, where clients that
    /// still use the old address reach the other store and get `StoreNotMatch`.
    pub fn set_store_address(&self, store_id: u64, addr: SocketAddr) -> Result<(), MockError> {
        if self.servers.is_running(ServerKey::Store(store_id)) {
            return Err(MockError::Topology(format!(
                "store {store_id} is running; stop it before moving it"
            )));
        }
        self.shared
            .lock()
            .set_store_address(store_id, addr.to_string())
    }

    /// Sets the state PD reports for a store: `Offline` (being removed), `Tombstone` (removed;
    /// refused while the store still holds region peers, as PD only buries empty stores) or
    /// `Up`. The store's server keeps running: stop it too for a store that is really gone.
    pub fn set_store_state(
        &self,
        store_id: u64,
        state: metapb::StoreState,
    ) -> Result<(), MockError> {
        self.shared.lock().set_store_state(store_id, state)
    }

    /// Stops a store if it runs and forgets it, so PD answers `GetStore` with "not found" (PD
    /// after `remove-tombstone`). Refused while the store still holds region peers.
    pub async fn remove_store(&self, store_id: u64) -> Result<(), MockError> {
        let peers = self.shared.lock().peers_on_store(store_id);
        if peers > 0 {
            return Err(MockError::Topology(format!(
                "store {store_id} still holds {peers} region peers"
            )));
        }
        self.servers.stop(ServerKey::Store(store_id)).await;
        self.shared.lock().remove_store(store_id)
    }

    /// Sets the slow score (TiKV's: 1 healthy .. 100) a store reports in its health feedback
    /// from now on (every BatchCommands answer and `GetHealthFeedback`); 1 by default.
    pub fn set_store_slow_score(&self, store_id: u64, score: u64) -> Result<(), MockError> {
        if !(1..=100).contains(&score) {
            return Err(MockError::Config(format!(
                "a slow score is between 1 and 100, not {score}"
            )));
        }
        let mut state = self.shared.lock();
        let store = state
            .stores
            .get_mut(&store_id)
            .ok_or_else(|| MockError::Topology(format!("unknown store {store_id}")))?;
        store.slow_score = score;
        Ok(())
    }

    /// Sets what a running store's gRPC health service reports (`""`): SERVING or NOT_SERVING.
    /// The store keeps serving KV requests, direct and forwarded; clients that probe liveness
    /// (`grpc.health.v1.Health/Check`) see it as unhealthy. A restarted store reports SERVING
    /// again. To also fail the client's own requests while other stores still reach the store,
    /// add a rule matching `Matcher::tikv().store(id).forwarded(false)`.
    pub async fn set_store_serving(&self, store_id: u64, serving: bool) -> Result<(), MockError> {
        let reporter = self
            .servers
            .health(ServerKey::Store(store_id))
            .ok_or_else(|| MockError::Topology(format!("store {store_id} is not running")))?;
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        Ok(())
    }

    /// Stops the PD server (every member: listeners and connections), as a PD crash would.
    pub async fn stop_pd(&self) {
        for member in 0..self.shared.pd_addrs.len() {
            self.servers.stop(ServerKey::Pd(member)).await;
            self.shared.lock().pd.set_member_down(member, true);
        }
    }

    /// Starts the PD server again on the same address (every stopped member, and every member
    /// cut off by [`isolate_pd_member`](Self::isolate_pd_member)).
    pub async fn start_pd(&self) -> Result<(), MockError> {
        for member in 0..self.shared.pd_addrs.len() {
            if !self.servers.is_running(ServerKey::Pd(member)) {
                self.start_pd_member(member).await?;
            }
        }
        Ok(())
    }

    /// Stops one PD member, as its crash would. Stopping the leader moves the leadership to the
    /// first member still running (a real PD cluster elects one after the leader's lease ends);
    /// with none left the cluster has no reachable leader.
    pub async fn stop_pd_member(&self, member: usize) -> Result<(), MockError> {
        let stopped = self.servers.stop(ServerKey::Pd(member)).await.is_some();
        let mut state = self.shared.lock();
        // An isolated member has no server to stop, but its process still runs.
        if !stopped && !state.pd.is_member_isolated(member) {
            return Err(MockError::Topology(format!(
                "PD member {member} is not running"
            )));
        }
        state.pd.set_member_down(member, true);
        if self.pd_leader() == member
            && let Some(next) = (0..self.shared.pd_addrs.len())
                .find(|&m| m != member && !state.pd.is_member_down(m))
        {
            self.shared.pd_leader.store(next, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Starts a stopped PD member again on its address.
    pub async fn start_pd_member(&self, member: usize) -> Result<(), MockError> {
        let addr = *self
            .shared
            .pd_addrs
            .get(member)
            .ok_or_else(|| MockError::Topology(format!("unknown PD member {member}")))?;
        let listener = bind(addr).await?;
        self.servers.spawn(
            ServerKey::Pd(member),
            listener,
            crate::pd::routes(self.shared.clone(), member),
            None,
        );
        let mut state = self.shared.lock();
        state.pd.set_member_down(member, false);
        state.pd.set_member_isolated(member, false);
        Ok(())
    }

    /// Cuts PD member `member` off from clients while it keeps running: its listener closes and
    /// every client connection to it is shut down (clients see it as unreachable, its health
    /// check fails), but it stays in the cluster (a leader stays the leader) and the other
    /// members still reach it, so requests they forward to it (`pd-forwarded-host`) succeed.
    /// This is the network partition PD's client forwarding is for. [`heal_pd_member`] ends it.
    ///
    /// [`heal_pd_member`]: Self::heal_pd_member
    pub async fn isolate_pd_member(&self, member: usize) -> Result<(), MockError> {
        if member >= self.shared.pd_addrs.len() {
            return Err(MockError::Topology(format!("unknown PD member {member}")));
        }
        self.servers
            .stop(ServerKey::Pd(member))
            .await
            .ok_or_else(|| MockError::Topology(format!("PD member {member} is not running")))?;
        self.shared.lock().pd.set_member_isolated(member, true);
        Ok(())
    }

    /// Makes an isolated PD member reachable by clients again, on its address.
    pub async fn heal_pd_member(&self, member: usize) -> Result<(), MockError> {
        if !self.shared.lock().pd.is_member_isolated(member) {
            return Err(MockError::Topology(format!(
                "PD member {member} is not isolated"
            )));
        }
        self.start_pd_member(member).await
    }

    /// Starts (`true`, the default) or stops a PD follower's region syncer. With it stopped, the
    /// follower answers the region reads it serves itself (follower-handled `GetRegion`-style
    /// calls and `QueryRegion` messages) with PD's `REGION_NOT_FOUND` header ("region not
    /// found"), as a PD follower that has not synced the region map yet does. The leader is not
    /// affected.
    pub fn set_pd_region_sync(&self, member: usize, running: bool) -> Result<(), MockError> {
        if member >= self.shared.pd_addrs.len() {
            return Err(MockError::Topology(format!("unknown PD member {member}")));
        }
        self.shared.lock().pd.set_region_sync(member, running);
        Ok(())
    }

    /// Requests PD member `via` received with `pd-forwarded-host` and forwarded to the leader
    /// `to` (unary calls and `Tso` stream messages). Those `to` handled are also in its
    /// [`pd_request_count`](Self::pd_request_count).
    pub fn pd_forwarded_count(&self, via: usize, to: usize) -> u64 {
        self.shared.lock().pd.forwarded_count(via, to)
    }

    /// Every PD forwarded-request count, by (receiving member, leader).
    pub fn pd_forwarded_counts(&self) -> BTreeMap<(usize, usize), u64> {
        self.shared.lock().pd.forwarded_counts()
    }

    /// Requests of one gRPC method (`GetRegion`, `Tso` messages, `QueryRegion` messages, ...)
    /// that PD member `member` served itself: as the leader, or as a follower answering a
    /// region read. Requests it forwarded count for the leader; refused ones are not counted.
    pub fn pd_request_count(&self, member: usize, command: &str) -> u64 {
        self.shared.lock().pd.request_count(member, command)
    }

    /// Forgets the PD request and forwarded-request counts.
    pub fn reset_pd_request_counts(&self) {
        self.shared.lock().pd.reset_counts();
    }

    /// Makes a PD member the leader; the previous leader becomes a follower at once.
    pub fn transfer_pd_leader(&self, member: usize) -> Result<(), MockError> {
        if member >= self.shared.pd_addrs.len() {
            return Err(MockError::Topology(format!("unknown PD member {member}")));
        }
        self.shared.pd_leader.store(member, Ordering::SeqCst);
        Ok(())
    }

    /// The index (into [`pd_endpoints`](Self::pd_endpoints)) of the PD leader.
    pub fn pd_leader(&self) -> usize {
        self.shared.pd_leader.load(Ordering::SeqCst)
    }

    /// Runs MVCC garbage collection over the whole transactional store at `safe_point`, as the
    /// GC path does after PD's GC safe point advances, without moving PD's safe points. Returns
    /// how many write records were removed.
    pub fn run_gc(&self, safe_point: u64) -> usize {
        let mut state = self.shared.lock();
        crate::mvcc::actions::gc::run(&mut state.mvcc, None, safe_point).writes
    }

    /// Defers the max_ts sync a region's new leader performs (after a leader transfer, a merge,
    /// or a split that elects new leaders): while deferred, such a region answers async-commit
    /// and one-phase-commit prewrites with `MaxTimestampNotSynced` until
    /// [`MockCluster::sync_max_ts`] is called for it. Turning deferral off syncs every waiting
    /// region. Off by default: the sync completes before the next request, as it usually does
    /// in TiKV, whose PD worker fetches a timestamp right after the election.
    pub fn defer_max_ts_sync(&self, defer: bool) {
        let mut state = self.shared.lock();
        state.defer_max_ts_sync = defer;
        if !defer {
            state.sync_all_max_ts();
        }
    }

    /// Completes a region leader's max_ts sync: its store's max_ts catches up with the TSO.
    pub fn sync_max_ts(&self, region_id: u64) -> Result<(), MockError> {
        self.shared.lock().sync_max_ts(region_id)
    }

    /// Whether a region's leader has synced max_ts (`None` for an unknown region).
    pub fn is_max_ts_synced(&self, region_id: u64) -> Option<bool> {
        self.shared
            .lock()
            .region(region_id)
            .map(|r| r.max_ts_synced)
    }

    /// Changes what stores do on an invalid max_ts update from now on.
    pub fn set_invalid_max_ts_action(&self, action: crate::InvalidMaxTsAction) {
        self.shared.lock().invalid_max_ts_action = action;
    }

    /// Advances the manual clock. Fails if the cluster runs on another clock.
    pub fn advance_clock(&self, by: Duration) -> Result<(), MockError> {
        let clock = self.manual_clock.as_ref().ok_or_else(|| {
            MockError::Config("advance_clock needs a cluster built with manual_clock".to_owned())
        })?;
        clock.advance(by);
        Ok(())
    }

    /// How many pessimistic lock requests are parked in the lock-wait queue right now. Tests
    /// use it to know that a request is waiting before they release the lock it waits for,
    /// instead of sleeping and hoping.
    pub fn parked_lock_requests(&self) -> usize {
        self.shared.lock_waits.parked()
    }

    /// Requests received by a store for a command (gRPC method name such as `RawGet`, counted
    /// for unary calls and for BatchCommands sub-requests alike). A forwarded request counts for
    /// the store that handled it, not the one that forwarded it (see
    /// [`forwarded_count`](Self::forwarded_count)).
    pub fn rpc_count(&self, store_id: u64, command: &str) -> u64 {
        let state = self.shared.lock();
        state
            .rpc_counts
            .iter()
            .filter(|((s, c), _)| *s == store_id && *c == command)
            .map(|(_, n)| *n)
            .sum()
    }

    /// Every request count, by (store id, command).
    pub fn rpc_counts(&self) -> BTreeMap<(u64, String), u64> {
        let state = self.shared.lock();
        state
            .rpc_counts
            .iter()
            .map(|((s, c), n)| ((*s, (*c).to_owned()), *n))
            .collect()
    }

    /// Forgets every request count, forwarded-request counts included.
    pub fn reset_rpc_counts(&self) {
        self.shared.lock().rpc_counts.clear();
        self.servers.links.reset_counts();
    }

    /// Requests that `via_store` received with `tikv-forwarded-host` naming `to_store`'s address
    /// and forwarded to it: unary calls and BatchCommands sub-requests, counted whether or not
    /// `to_store` was running. Those `to_store` handled are also in its
    /// [`rpc_count`](Self::rpc_count); `via_store`'s counts do not include them.
    pub fn forwarded_count(&self, via_store: u64, to_store: u64) -> u64 {
        self.servers.links.forwarded_count(via_store, to_store)
    }

    /// Every forwarded-request count, by (receiving store, target store).
    pub fn forwarded_counts(&self) -> BTreeMap<(u64, u64), u64> {
        self.servers.links.forwarded_counts()
    }

    /// Installs a fault rule; it applies to requests that arrive from now on.
    pub fn add_fault(&self, rule: FaultRule) -> FaultId {
        self.shared.faults.add(rule)
    }

    /// Removes a fault rule; returns whether it was installed.
    pub fn remove_fault(&self, id: FaultId) -> bool {
        self.shared.faults.remove(id)
    }

    /// Removes every fault rule and releases every request held by a hang.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Stops every server and frees every port. Other clones become inert.
    pub async fn shutdown(self) {
        reap(self.servers.stop_all()).await;
    }
}

/// Control of the TSO microservice ([`MockClusterBuilder::tso_microservice`]).
impl MockCluster {
    fn with_tso_service<T>(
        &self,
        f: impl FnOnce(&mut crate::pd::tso_service::TsoServiceState) -> Result<T, MockError>,
    ) -> Result<T, MockError> {
        let mut state = self.shared.lock();
        let svc = state.pd.tso_service.as_mut().ok_or_else(|| {
            MockError::Config("the cluster was built without a TSO microservice".to_owned())
        })?;
        f(svc)
    }

    /// The addresses of the TSO servers, by index (empty without a TSO microservice).
    pub fn tso_server_addrs(&self) -> Vec<SocketAddr> {
        self.with_tso_service(|svc| Ok(svc.addrs.clone()))
            .unwrap_or_default()
    }

    /// Turns microservice mode on (PD reports `API_SVC_MODE` and forwards its `Tso`) or off
    /// (PD reports `PD_SVC_MODE` and allocates itself; the TSO servers keep running).
    pub fn set_tso_microservice_mode(&self, enabled: bool) -> Result<(), MockError> {
        self.with_tso_service(|svc| {
            svc.enabled = enabled;
            Ok(())
        })
    }

    /// Makes TSO server `server` the primary of keyspace group `group`, as a primary election
    /// would; streams to the former primary get "not served" errors from then on.
    pub fn transfer_tso_primary(&self, group: u32, server: usize) -> Result<(), MockError> {
        self.with_tso_service(|svc| svc.set_primary(group, server))
    }

    /// The TSO server that is primary of keyspace group `group`, if any.
    pub fn tso_primary(&self, group: u32) -> Option<usize> {
        self.with_tso_service(|svc| Ok(svc.primary(group)))
            .ok()
            .flatten()
    }

    /// Stops TSO server `server` (listener and connections). Groups it was primary of elect
    /// the first running member; it disappears from `GetClusterInfo`'s `tso_urls`.
    pub async fn stop_tso_server(&self, server: usize) -> Result<(), MockError> {
        self.servers
            .stop(ServerKey::Tso(server))
            .await
            .ok_or_else(|| MockError::Topology(format!("TSO server {server} is not running")))?;
        self.with_tso_service(|svc| {
            svc.set_down(server, true);
            Ok(())
        })
    }

    /// Starts a stopped TSO server again on its address.
    pub async fn start_tso_server(&self, server: usize) -> Result<(), MockError> {
        let addr = self
            .tso_server_addrs()
            .get(server)
            .copied()
            .ok_or_else(|| MockError::Topology(format!("unknown TSO server {server}")))?;
        let listener = bind(addr).await?;
        self.servers.spawn(
            ServerKey::Tso(server),
            listener,
            crate::pd::tso_service::routes(self.shared.clone(), server),
            None,
        );
        self.with_tso_service(|svc| {
            svc.set_down(server, false);
            Ok(())
        })
    }

    /// Assigns keyspace `keyspace_id` to TSO keyspace group `group` (created if new) and
    /// records it in the keyspace's config as `tso_keyspace_group_id`, as PD does.
    pub fn assign_keyspace_to_tso_group(
        &self,
        keyspace_id: u32,
        group: u32,
    ) -> Result<(), MockError> {
        let mut state = self.shared.lock();
        let svc = state.pd.tso_service.as_mut().ok_or_else(|| {
            MockError::Config("the cluster was built without a TSO microservice".to_owned())
        })?;
        svc.assign(keyspace_id, group)?;
        if let Some(keyspace) = state.keyspaces.get_mut(&keyspace_id) {
            keyspace.meta.config.insert(
                crate::pd::tso_service::TSO_KEYSPACE_GROUP_ID_KEY.to_owned(),
                group.to_string(),
            );
        }
        state.pd.notify_keyspace_changed();
        Ok(())
    }

    /// Requests TSO server `server` served, by gRPC method (`"Tso"`, `"FindGroupByKeyspaceID"`,
    /// `"GetMinTS"`); `Tso` requests PD forwarded count for the primary that served them.
    pub fn tso_server_request_count(&self, server: usize, method: &str) -> u64 {
        self.with_tso_service(|svc| Ok(svc.count(server, method)))
            .unwrap_or(0)
    }

    /// `Tso` requests PD received in microservice mode and forwarded to the TSO service.
    pub fn tso_forwarded_from_pd(&self) -> u64 {
        self.with_tso_service(|svc| Ok(svc.forwarded_from_pd()))
            .unwrap_or(0)
    }

    /// The `(keyspace_id, keyspace_group_id)` header of the last `Tso` request TSO server
    /// `server` served.
    pub fn tso_last_request_header(&self, server: usize) -> Option<(u32, u32)> {
        self.with_tso_service(|svc| Ok(svc.last_tso_header(server)))
            .ok()
            .flatten()
    }
}

/// Control of the router microservice ([`MockClusterBuilder::router_microservice`]).
impl MockCluster {
    fn router_server_addr(&self, server: usize) -> Result<SocketAddr, MockError> {
        self.router_server_addrs()
            .get(server)
            .copied()
            .ok_or_else(|| MockError::Topology(format!("unknown router server {server}")))
    }

    /// The addresses of the router servers, by index (empty without a router microservice).
    pub fn router_server_addrs(&self) -> Vec<SocketAddr> {
        self.shared
            .lock()
            .pd
            .router_service
            .as_ref()
            .map(|svc| svc.addrs.clone())
            .unwrap_or_default()
    }

    /// Stops router server `server` (listener and connections), as a crash does: its registry
    /// entry stays, as a crashed server's does until its lease expires.
    pub async fn stop_router_server(&self, server: usize) -> Result<(), MockError> {
        self.router_server_addr(server)?;
        self.servers
            .stop(ServerKey::Router(server))
            .await
            .ok_or_else(|| MockError::Topology(format!("router server {server} is not running")))?;
        Ok(())
    }

    /// Starts a stopped router server again on its address.
    pub async fn start_router_server(&self, server: usize) -> Result<(), MockError> {
        let addr = self.router_server_addr(server)?;
        if self.servers.is_running(ServerKey::Router(server)) {
            return Err(MockError::Topology(format!(
                "router server {server} is running"
            )));
        }
        let listener = bind(addr).await?;
        self.servers.spawn(
            ServerKey::Router(server),
            listener,
            crate::pd::router_service::routes(self.shared.clone(), server),
            None,
        );
        Ok(())
    }

    /// Writes (`true`) or deletes router server `server`'s entry in the registry PD's meta
    /// storage holds; whether the server runs is unaffected.
    pub fn set_router_registered(&self, server: usize, registered: bool) -> Result<(), MockError> {
        self.router_server_addr(server)?;
        let mut state = self.shared.lock();
        let cluster_id = state.cluster_id;
        let pd = &mut state.pd;
        if let Some(svc) = pd.router_service.as_mut() {
            svc.set_registered(&mut pd.meta_storage, cluster_id, server, registered);
        }
        Ok(())
    }

    /// Whether router server `server` is in the registry.
    pub fn is_router_registered(&self, server: usize) -> bool {
        self.shared
            .lock()
            .pd
            .router_service
            .as_ref()
            .is_some_and(|svc| svc.is_registered(server))
    }

    /// Starts (`true`, the default) or stops router server `server`'s region syncer. Stopped,
    /// the server keeps answering region reads from the region map as it was at that moment
    /// (splits, merges and leader changes after it are not seen); started again, it answers
    /// from the current map. Store reads are not affected.
    pub fn set_router_region_sync(&self, server: usize, running: bool) -> Result<(), MockError> {
        self.router_server_addr(server)?;
        let mut state = self.shared.lock();
        // The snapshot is the map now; taking it only when the syncer stops.
        let snapshot = (!running).then(|| state.region_map().clone());
        if let Some(svc) = state.pd.router_service.as_mut() {
            svc.set_region_sync(server, snapshot);
        }
        Ok(())
    }

    /// Requests router server `server` served, by gRPC method (`"GetRegion"`,
    /// `"GetPrevRegion"`, `"GetRegionByID"`, `"BatchScanRegions"`, `"GetStore"`,
    /// `"GetAllStores"`, and `"QueryRegion"` counted per stream message). Reset with
    /// [`reset_pd_request_counts`](Self::reset_pd_request_counts).
    pub fn router_server_request_count(&self, server: usize, method: &str) -> u64 {
        self.shared
            .lock()
            .pd
            .router_service
            .as_ref()
            .map_or(0, |svc| svc.count(server, method))
    }
}
