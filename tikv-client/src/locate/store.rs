//! The store cache: every TiKV/TiFlash store the client has heard of, with its address, labels,
//! engine and state, resolved from PD on first use and refreshed in the background.
//!
//! Each [`Store`] lives as long as the process knows the store: regions hold `Arc<Store>`, and a
//! change PD reports (a new address, new labels, a tombstone) is applied to the same object, so
//! every region sees it at once. A store's *failure epoch* counts the times it was found broken;
//! a region remembers the epoch of each of its stores, and a region whose store moved on is
//! reloaded from PD on its next use.
//!
//! Ports client-go `internal/locate/store_cache.go`: `Store`, the resolve states
//! (`unresolved`, `resolved`, `needCheck`, `tombstone`), `initResolve`, `reResolve`,
//! `markStoreNeedCheck`, and the periodic `storeCacheUpdater`. Each store carries its
//! [`StoreHealth`] (liveness, slowness, load, tokens); the probes that update it are the
//! request sender's.
//!
//! Each store also keeps the transport's [`StoreClient`] for its current address
//! ([`Store::with_client`]), so that sending to a store is an atomic pointer load rather than a
//! lookup of the address in the transport's map; the client is replaced when the address
//! changes or the transport closed its connections to the store.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use arc_swap::{ArcSwap, ArcSwapOption};
use tikv_proto::metapb;
use tokio::sync::Notify;

use super::health::StoreHealth;
use crate::pd::RegionSource;
use crate::transport::{StoreClient, Transport};
use crate::{Error, Result};

/// The store label that names a store's engine (client-go `tikvrpc.EngineLabelKey`).
pub(crate) const ENGINE_LABEL_KEY: &str = "engine";
/// Its value on TiFlash stores (`tikvrpc.EngineLabelTiFlash`).
pub(crate) const ENGINE_LABEL_TIFLASH: &str = "tiflash";
/// Its value on TiFlash compute nodes (`tikvrpc.EngineLabelTiFlashCompute`).
pub(crate) const ENGINE_LABEL_TIFLASH_COMPUTE: &str = "tiflash_compute";

/// The engine a store runs, from its `engine` label (client-go `tikvrpc.EndpointType`).
///
/// ```no_run
/// # fn f(cluster: &tikv_client::Cluster) {
/// use tikv_client::StoreType;
///
/// let tiflash = cluster
///     .stores()
///     .into_iter()
///     .filter(|s| s.store_type == StoreType::TiFlash)
///     .count();
/// println!("{tiflash} TiFlash stores");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreType {
    /// TiKV (no `engine` label, or any other value).
    TiKv,
    /// TiFlash (`engine=tiflash`).
    TiFlash,
    /// A TiFlash compute node (`engine=tiflash_compute`).
    TiFlashCompute,
}

impl StoreType {
    pub(crate) fn from_labels(labels: &[metapb::StoreLabel]) -> StoreType {
        for label in labels {
            if label.key == ENGINE_LABEL_KEY {
                if label.value == ENGINE_LABEL_TIFLASH {
                    return StoreType::TiFlash;
                }
                if label.value == ENGINE_LABEL_TIFLASH_COMPUTE {
                    return StoreType::TiFlashCompute;
                }
            }
        }
        StoreType::TiKv
    }
}

/// A store's state in PD (`metapb.StoreState`).
///
/// ```no_run
/// # fn f(cluster: &tikv_client::Cluster) {
/// use tikv_client::StoreState;
///
/// for store in cluster.stores() {
///     match store.state {
///         StoreState::Up => {}
///         StoreState::Offline => println!("store {} is being removed", store.id),
///         _ => println!("store {} is gone", store.id),
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreState {
    /// Serving.
    Up,
    /// Being taken out of the cluster; it still serves its remaining peers.
    Offline,
    /// Removed from the cluster.
    Tombstone,
}

impl StoreState {
    fn from_proto(state: i32) -> StoreState {
        match metapb::StoreState::try_from(state) {
            Ok(metapb::StoreState::Offline) => StoreState::Offline,
            Ok(metapb::StoreState::Tombstone) => StoreState::Tombstone,
            _ => StoreState::Up,
        }
    }
}

/// A snapshot of what the client knows about a store, as listed by
/// [`Cluster::stores`](crate::Cluster::stores).
///
/// ```no_run
/// # fn f(cluster: &tikv_client::Cluster) {
/// for store in cluster.stores() {
///     let zone = store.labels.iter().find(|(k, _)| k == "zone").map(|(_, v)| v.as_str());
///     println!("store {} at {} in zone {zone:?}", store.id, store.address);
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreInfo {
    /// The store id.
    pub id: u64,
    /// The address clients connect to.
    pub address: String,
    /// The store's labels, as `(key, value)` pairs.
    pub labels: Vec<(String, String)>,
    /// The engine, from the `engine` label.
    pub store_type: StoreType,
    /// The state PD last reported.
    pub state: StoreState,
}

/// How far the client got in learning a store's address (client-go `resolveState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ResolveState {
    /// Known by id only; the first use asks PD.
    Unresolved = 0,
    /// Address known.
    Resolved = 1,
    /// Address known, but something failed on the store: ask PD again soon.
    NeedCheck = 2,
    /// PD says the store is gone (tombstone, or no longer known).
    Tombstone = 3,
}

impl ResolveState {
    fn from_u8(v: u8) -> ResolveState {
        match v {
            1 => ResolveState::Resolved,
            2 => ResolveState::NeedCheck,
            3 => ResolveState::Tombstone,
            _ => ResolveState::Unresolved,
        }
    }
}

/// A store's metadata as PD last reported it. Replaced whole when it changes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoreMeta {
    pub(crate) address: Arc<str>,
    pub(crate) peer_address: String,
    pub(crate) status_address: String,
    pub(crate) labels: Vec<metapb::StoreLabel>,
    pub(crate) store_type: StoreType,
    pub(crate) state: StoreState,
}

impl StoreMeta {
    fn empty() -> StoreMeta {
        StoreMeta {
            address: Arc::from(""),
            peer_address: String::new(),
            status_address: String::new(),
            labels: Vec::new(),
            store_type: StoreType::TiKv,
            state: StoreState::Up,
        }
    }

    fn from_proto(store: &metapb::Store) -> StoreMeta {
        StoreMeta {
            address: Arc::from(store.address.as_str()),
            peer_address: store.peer_address.clone(),
            status_address: store.status_address.clone(),
            labels: store.labels.clone(),
            store_type: StoreType::from_labels(&store.labels),
            state: StoreState::from_proto(store.state),
        }
    }
}

/// The transport's client of a store, with what it was made for.
struct CachedClient {
    /// The transport it came from ([`Transport::id`]): a cache shared by two transports must
    /// not hand one's client to the other.
    transport: usize,
    addr: Arc<str>,
    client: StoreClient,
}

impl CachedClient {
    fn serves(&self, transport: &Transport, addr: &Arc<str>) -> bool {
        self.transport == transport.id()
            && (Arc::ptr_eq(&self.addr, addr) || *self.addr == **addr)
            && self.client.is_open()
    }
}

/// A store known to the client.
pub(crate) struct Store {
    id: u64,
    /// Read on every request (the address): a lock-free load, replaced whole on a change.
    meta: ArcSwap<StoreMeta>,
    /// The transport's client for the address last sent to (see [`Store::with_client`]).
    client: ArcSwapOption<CachedClient>,
    resolve_state: AtomicU8,
    epoch: AtomicU32,
    /// Serializes PD lookups of this store, so that concurrent first uses make one `GetStore`.
    resolve_lock: tokio::sync::Mutex<()>,
    /// Liveness, slowness, load and in-flight tokens, as the request sender saw them.
    health: StoreHealth,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("id", &self.id)
            .field("address", &self.address())
            .field("state", &self.resolve_state())
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

impl Store {
    fn new(id: u64) -> Store {
        Store {
            id,
            meta: ArcSwap::from_pointee(StoreMeta::empty()),
            client: ArcSwapOption::empty(),
            resolve_state: AtomicU8::new(ResolveState::Unresolved as u8),
            epoch: AtomicU32::new(0),
            resolve_lock: tokio::sync::Mutex::new(()),
            health: StoreHealth::default(),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// What the request sender has learned about the store's health.
    pub(crate) fn health(&self) -> &StoreHealth {
        &self.health
    }

    pub(crate) fn meta(&self) -> Arc<StoreMeta> {
        self.meta.load_full()
    }

    /// The address to connect to; empty until resolved.
    pub(crate) fn address(&self) -> Arc<str> {
        self.meta.load().address.clone()
    }

    pub(crate) fn store_type(&self) -> StoreType {
        self.meta.load().store_type
    }

    /// Calls `f` with the transport's client for this store at `addr`: the one kept from an
    /// earlier call when it was made by the same transport for the same address and is still
    /// open, otherwise a fresh one from [`Transport::store`], which is kept in its place. A
    /// store that moved therefore gets a client for its new address on the first send there,
    /// and one whose connections the transport closed (`close_store`) gets new connections.
    ///
    /// `f` runs synchronously: what it returns (a send future holds its own handle) may
    /// outlive the call, the borrowed client may not.
    pub(crate) fn with_client<T>(
        &self,
        transport: &Transport,
        addr: &Arc<str>,
        f: impl FnOnce(&StoreClient) -> T,
    ) -> Result<T> {
        {
            let cached = self.client.load();
            if let Some(cached) = cached.as_deref()
                && cached.serves(transport, addr)
            {
                return Ok(f(&cached.client));
            }
        }
        let client = transport.store(addr)?;
        let out = f(&client);
        self.client.store(Some(Arc::new(CachedClient {
            transport: transport.id(),
            addr: addr.clone(),
            client,
        })));
        Ok(out)
    }

    /// The slow score the store last reported to the kept client, if any (see
    /// [`StoreClient::slow_score`]).
    pub(crate) fn client_slow_score(&self) -> Option<i64> {
        self.client
            .load()
            .as_deref()
            .and_then(|c| c.client.slow_score())
    }

    /// The address of the kept transport client, if one is kept.
    #[cfg(test)]
    pub(crate) fn kept_client_address(&self) -> Option<String> {
        self.client
            .load()
            .as_deref()
            .map(|c| c.client.address().to_owned())
    }

    pub(crate) fn labels(&self) -> Vec<metapb::StoreLabel> {
        self.meta().labels.clone()
    }

    /// Whether the store has every one of `labels` (client-go `IsLabelsMatch`).
    pub(crate) fn matches_labels(&self, labels: &[(String, String)]) -> bool {
        let meta = self.meta();
        labels
            .iter()
            .all(|(k, v)| meta.labels.iter().any(|l| &l.key == k && &l.value == v))
    }

    pub(crate) fn resolve_state(&self) -> ResolveState {
        ResolveState::from_u8(self.resolve_state.load(Ordering::Acquire))
    }

    fn set_resolve_state(&self, state: ResolveState) {
        self.resolve_state.store(state as u8, Ordering::Release);
    }

    /// Moves `from` to `to`; true if the state is `to` afterwards.
    fn change_resolve_state(&self, from: ResolveState, to: ResolveState) -> bool {
        match self.resolve_state.compare_exchange(
            from as u8,
            to as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            Err(current) => current == to as u8,
        }
    }

    /// The failure epoch: how many times the store was found broken or moved.
    pub(crate) fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Bumps the epoch if it is still `seen`; true if this call bumped it (client-go
    /// `markRegionNeedBeRefill`).
    pub(crate) fn bump_epoch_from(&self, seen: u32) -> bool {
        self.epoch
            .compare_exchange(
                seen,
                seen.wrapping_add(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn set_meta(&self, meta: StoreMeta) {
        self.meta.store(Arc::new(meta));
    }

    pub(crate) fn info(&self) -> StoreInfo {
        let meta = self.meta();
        StoreInfo {
            id: self.id,
            address: meta.address.to_string(),
            labels: meta
                .labels
                .iter()
                .map(|l| (l.key.clone(), l.value.clone()))
                .collect(),
            store_type: meta.store_type,
            state: if self.resolve_state() == ResolveState::Tombstone {
                StoreState::Tombstone
            } else {
                meta.state
            },
        }
    }

    /// Applies what PD says about this store. Returns whether the store is still usable.
    ///
    /// A tombstone, or a store PD no longer knows, bumps the epoch (its regions reload) and
    /// becomes `Tombstone`. A new address also bumps the epoch, so regions on the store are
    /// reloaded rather than trusted at the old location. New labels or state are taken as is.
    fn apply(&self, store: Option<&metapb::Store>) -> Result<bool> {
        let Some(store) = store
            .filter(|s| metapb::StoreState::try_from(s.state) != Ok(metapb::StoreState::Tombstone))
        else {
            if self.resolve_state() != ResolveState::Tombstone {
                tracing::info!(
                    store = self.id,
                    "store removed from the cluster; invalidating its regions"
                );
                self.bump_epoch();
                self.set_resolve_state(ResolveState::Tombstone);
            }
            return Ok(false);
        };
        if store.address.is_empty() {
            return Err(Error::Pd {
                message: format!("PD reported an empty address for store {}", self.id),
            });
        }
        let new_meta = StoreMeta::from_proto(store);
        let old_meta = self.meta();
        if *old_meta != new_meta {
            let moved = old_meta.address != new_meta.address && !old_meta.address.is_empty();
            if moved {
                tracing::info!(
                    store = self.id,
                    old = %old_meta.address,
                    new = %new_meta.address,
                    "store address changed; its regions will be reloaded"
                );
            }
            self.set_meta(new_meta);
            if moved {
                self.bump_epoch();
            }
        }
        self.set_resolve_state(ResolveState::Resolved);
        Ok(true)
    }
}

/// All stores the client knows, by id.
pub(crate) struct StoreCache {
    source: Arc<dyn RegionSource>,
    stores: RwLock<HashMap<u64, Arc<Store>>>,
    /// Woken when a store is marked `NeedCheck`, so the background task re-resolves it soon.
    check_needed: Arc<Notify>,
}

impl fmt::Debug for StoreCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreCache")
            .field("stores", &self.len())
            .finish_non_exhaustive()
    }
}

impl StoreCache {
    pub(crate) fn new(source: Arc<dyn RegionSource>) -> StoreCache {
        StoreCache {
            source,
            stores: RwLock::new(HashMap::new()),
            check_needed: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn check_needed(&self) -> Arc<Notify> {
        self.check_needed.clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.stores
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub(crate) fn get(&self, id: u64) -> Option<Arc<Store>> {
        self.stores
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// The store with this id, created unresolved if it is new.
    pub(crate) fn get_or_insert(&self, id: u64) -> Arc<Store> {
        if let Some(store) = self.get(id) {
            return store;
        }
        self.stores
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_insert_with(|| Arc::new(Store::new(id)))
            .clone()
    }

    /// Every known store.
    pub(crate) fn all(&self) -> Vec<Arc<Store>> {
        self.stores
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn clear(&self) {
        self.stores
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    #[cfg(any(test, feature = "unstable-internals"))]
    /// Inserts a store already resolved, replacing any previous one (for tests and benchmarks
    /// that build a cache without PD).
    pub(crate) fn put_resolved(&self, store: &metapb::Store) -> Arc<Store> {
        let s = Arc::new(Store::new(store.id));
        s.set_meta(StoreMeta::from_proto(store));
        s.set_resolve_state(ResolveState::Resolved);
        self.stores
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(store.id, s.clone());
        s
    }

    /// The store's address, asking PD on first use (client-go `initResolve`). `None` means PD
    /// says the store is gone. Concurrent first uses share one `GetStore`.
    pub(crate) async fn resolve(&self, store: &Store) -> Result<Option<Arc<str>>> {
        if let Some(addr) = Self::resolved_address(store) {
            return Ok(addr);
        }
        let _guard = store.resolve_lock.lock().await;
        if let Some(addr) = Self::resolved_address(store) {
            return Ok(addr);
        }
        let meta = self.source.get_store(store.id).await?;
        if store.apply(meta.as_ref())? {
            Ok(Some(store.address()))
        } else {
            Ok(None)
        }
    }

    /// The address of a store whose state is settled; `None` while it is unresolved.
    fn resolved_address(store: &Store) -> Option<Option<Arc<str>>> {
        match store.resolve_state() {
            ResolveState::Resolved | ResolveState::NeedCheck => Some(Some(store.address())),
            ResolveState::Tombstone => Some(None),
            ResolveState::Unresolved => None,
        }
    }

    /// Asks PD about a known store again (client-go `reResolve`). Returns whether the store is
    /// still part of the cluster. Only the PD leader is asked: the cached view is suspect, and a
    /// lagging router server could hand back the same stale address.
    pub(crate) async fn re_resolve(&self, store: &Store) -> Result<bool> {
        let _guard = store.resolve_lock.lock().await;
        let meta = self.source.get_store_from_leader(store.id).await?;
        store.apply(meta.as_ref())
    }

    /// Schedules a check of a store something failed on (client-go `markStoreNeedCheck`).
    pub(crate) fn mark_need_check(&self, store: &Store) {
        if store.change_resolve_state(ResolveState::Resolved, ResolveState::NeedCheck) {
            self.check_needed.notify_one();
        }
    }

    /// Re-resolves every store marked `NeedCheck`.
    pub(crate) async fn check_marked(&self) {
        let marked: Vec<_> = self
            .all()
            .into_iter()
            .filter(|s| s.resolve_state() == ResolveState::NeedCheck)
            .collect();
        for store in marked {
            if let Err(err) = self.re_resolve(&store).await {
                tracing::warn!(store = store.id, %err, "re-resolving store failed");
            }
        }
    }

    /// Refreshes every store from one `GetAllStores` (the periodic task; client-go's
    /// `storeCacheUpdater` plus the periodic `checkAndResolve`). Stores PD lists that the cache
    /// does not know are added resolved; known stores take PD's address, labels and state; a
    /// known store that PD reports as tombstone, or no longer lists, becomes `Tombstone` and its
    /// regions are invalidated.
    pub(crate) async fn refresh_all(&self) -> Result<()> {
        let listed = self.source.get_all_stores(false).await?;
        let by_id: HashMap<u64, &metapb::Store> = listed.iter().map(|s| (s.id, s)).collect();
        for store in self.all() {
            if store.resolve_state() == ResolveState::Tombstone {
                continue;
            }
            // A store being resolved right now gets PD's answer from that call instead.
            let Ok(_guard) = store.resolve_lock.try_lock() else {
                continue;
            };
            if let Err(err) = store.apply(by_id.get(&store.id).copied()) {
                tracing::warn!(store = store.id, %err, "refreshing store failed");
            }
        }
        for meta in listed.iter().filter(|s| {
            metapb::StoreState::try_from(s.state) != Ok(metapb::StoreState::Tombstone)
                && !s.address.is_empty()
        }) {
            if self.get(meta.id).is_none() {
                let store = self.get_or_insert(meta.id);
                if let Ok(_guard) = store.resolve_lock.try_lock()
                    && store.resolve_state() == ResolveState::Unresolved
                {
                    let _ = store.apply(Some(meta));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn kept(store: &Store) -> Option<Arc<CachedClient>> {
        store.client.load_full()
    }

    #[tokio::test]
    async fn the_kept_client_follows_the_address_the_transport_and_closes() {
        let transport = Transport::new(&Config::default()).unwrap();
        let store = Store::new(1);
        let a: Arc<str> = Arc::from("127.0.0.1:1");
        let b: Arc<str> = Arc::from("127.0.0.1:2");
        let address = |t: &Transport, addr: &Arc<str>| {
            store
                .with_client(t, addr, |c| c.address().to_owned())
                .unwrap()
        };

        assert_eq!(address(&transport, &a), "127.0.0.1:1");
        let first = kept(&store).unwrap();
        // The same address, even in another buffer, is served by the kept client.
        assert_eq!(
            address(&transport, &Arc::from("127.0.0.1:1")),
            "127.0.0.1:1"
        );
        assert!(Arc::ptr_eq(&first, &kept(&store).unwrap()));

        // The store moved: the next send gets (and keeps) a client for the new address.
        assert_eq!(address(&transport, &b), "127.0.0.1:2");
        assert_eq!(store.kept_client_address().as_deref(), Some("127.0.0.1:2"));

        // The transport closed the connections to it: a fresh, open client replaces the kept
        // one.
        let closed = store
            .with_client(&transport, &b, StoreClient::clone)
            .unwrap();
        transport.close_store(&b);
        assert!(!closed.is_open());
        assert!(
            store
                .with_client(&transport, &b, StoreClient::is_open)
                .unwrap()
        );
        assert!(!Arc::ptr_eq(&first, &kept(&store).unwrap()));

        // Another transport never gets this one's client.
        let other = Transport::new(&Config::default()).unwrap();
        let before = kept(&store).unwrap();
        assert!(store.with_client(&other, &b, StoreClient::is_open).unwrap());
        assert!(!Arc::ptr_eq(&before, &kept(&store).unwrap()));
        assert_eq!(kept(&store).unwrap().transport, other.id());

        // A closed transport refuses, and the store keeps nothing new from it.
        other.close();
        assert!(matches!(
            store.with_client(&other, &b, |_| ()),
            Err(Error::Closed)
        ));
    }
}
