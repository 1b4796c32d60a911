//! Safe-ts tracking: the newest timestamp at which every store of a scope can serve a stale
//! read, kept per store and summarised per transaction scope (`global`, and each value of the
//! stores' `zone` label).
//!
//! Who calls it: [`Cluster`](crate::Cluster) owns one [`SafeTs`] and, from the first
//! question on, refreshes it every [`SAFE_TS_UPDATE_INTERVAL`] from a [`SafeTsSource`] (PD's
//! min resolved ts, else each store's `GetStoreSafeTS`);
//! [`Cluster::min_safe_ts`](crate::Cluster::min_safe_ts) reads it, after the first round. Stale reads (checklist H3)
//! take their read timestamp from it.
//!
//! One refresh, as client-go's `updateSafeTS` does it:
//!
//! 1. Ask PD for the cluster's min resolved ts. A usable one (neither 0 nor `u64::MAX`) becomes
//!    the global min safe ts, unless it would move it back, and that is all.
//! 2. Otherwise ask PD for every store's, and each store whose value PD lacks (or all of them,
//!    when PD fails) for its own safe ts. A store's value never moves back either.
//! 3. Each scope's min safe ts is the smallest non-zero safe ts of its stores, 0 when a store
//!    has none yet, 0 when all are 0.
//!
//! Unlike client-go, step 3 runs after the stores have answered, not beside them, so a refresh
//! reports what it learned instead of what the previous one did.
//!
//! Ports client-go `tikv/kv.go` (`safeTSUpdater`, `updateSafeTS`, `updateMinSafeTS`,
//! `updateGlobalTxnScopeTSFromPD`, `GetMinSafeTS`, `setSafeTS`, `isValidSafeTS`).

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use crate::Result;
use crate::pd::{BoxFuture, MinResolvedTs};

/// How often the safe ts is refreshed (client-go `safeTSUpdateInterval`).
pub(crate) const SAFE_TS_UPDATE_INTERVAL: Duration = Duration::from_secs(2);

/// The scope of every store: pass it to [`Cluster::min_safe_ts`](crate::Cluster::min_safe_ts)
/// for the whole cluster, or a store `zone` label value for one zone.
///
/// ```no_run
/// # async fn f(cluster: tikv_client::Cluster) {
/// use tikv_client::GLOBAL_TXN_SCOPE;
///
/// let everywhere = cluster.min_safe_ts(GLOBAL_TXN_SCOPE).await;
/// let in_zone = cluster.min_safe_ts("zone-a").await;
/// println!("cluster-wide {everywhere:?}, zone-a {in_zone:?}");
/// # }
/// ```
pub const GLOBAL_TXN_SCOPE: &str = "global";

/// The store label naming a store's data center, and so its scope (client-go `DCLabelKey`).
pub(crate) const DC_LABEL_KEY: &str = "zone";

/// A store as the tracker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SafeTsStore {
    pub(crate) id: u64,
    pub(crate) address: String,
    /// The value of its `zone` label, if it has one.
    pub(crate) zone: Option<String>,
}

/// Where safe timestamps come from.
pub(crate) trait SafeTsSource: Send + Sync {
    /// PD's min resolved ts of the cluster (`store_ids` empty) or of those stores.
    fn min_resolved_ts<'a>(&'a self, store_ids: &'a [u64]) -> BoxFuture<'a, Result<MinResolvedTs>>;
    /// The store's own safe ts over the whole key space (`GetStoreSafeTS`).
    fn store_safe_ts<'a>(&'a self, store: &'a SafeTsStore) -> BoxFuture<'a, Result<u64>>;
}

/// Neither "nothing resolved yet" nor "no leader here" (client-go `isValidSafeTS`).
fn is_valid(ts: u64) -> bool {
    ts != 0 && ts != u64::MAX
}

/// The safe timestamps learned so far.
#[derive(Debug, Default)]
pub(crate) struct SafeTs {
    per_store: RwLock<HashMap<u64, u64>>,
    min_by_scope: RwLock<HashMap<String, u64>>,
}

impl SafeTs {
    /// The min safe ts of a scope (client-go `GetMinSafeTS`); 0 when not known.
    pub(crate) fn min_safe_ts(&self, scope: &str) -> u64 {
        self.min_by_scope
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(scope)
            .copied()
            .unwrap_or(0)
    }

    /// A store's safe ts, if one was learned.
    pub(crate) fn store_safe_ts(&self, store_id: u64) -> Option<u64> {
        self.per_store
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&store_id)
            .copied()
    }

    /// Records a store's safe ts unless it would move back (or is the "no leader" value).
    fn advance_store(&self, store_id: u64, ts: u64) {
        if ts == u64::MAX {
            return;
        }
        let mut map = self
            .per_store
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(store_id).or_insert(0);
        if ts < *entry {
            tracing::debug!(
                store_id,
                ts,
                known = *entry,
                "store safe ts went back; kept"
            );
            return;
        }
        *entry = ts;
    }

    fn set_min(&self, scope: &str, ts: u64) {
        if ts == u64::MAX {
            return;
        }
        self.min_by_scope
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(scope.to_owned(), ts);
    }

    /// A scope's min from its stores' (client-go `updateMinSafeTS`).
    fn update_min(&self, scope: &str, store_ids: &[u64]) {
        if store_ids.is_empty() {
            self.set_min(scope, 0);
            return;
        }
        let mut min = u64::MAX;
        for &id in store_ids {
            match self.store_safe_ts(id) {
                Some(ts) if ts != 0 => min = min.min(ts),
                Some(_) => {}
                None => min = 0,
            }
        }
        self.set_min(scope, if min == u64::MAX { 0 } else { min });
    }

    /// One refresh over `stores` (see the module docs).
    pub(crate) async fn update(&self, source: &dyn SafeTsSource, stores: &[SafeTsStore]) {
        match source.min_resolved_ts(&[]).await {
            Ok(cluster) if is_valid(cluster.min) => {
                if self.min_safe_ts(GLOBAL_TXN_SCOPE) <= cluster.min {
                    self.set_min(GLOBAL_TXN_SCOPE, cluster.min);
                }
                return;
            }
            Ok(_) => {}
            Err(err) => tracing::debug!(%err, "PD's cluster min resolved ts is unavailable"),
        }
        let ids: Vec<u64> = stores.iter().map(|s| s.id).collect();
        let from_pd = match source.min_resolved_ts(&ids).await {
            Ok(answer) => Some(answer.stores),
            Err(err) => {
                tracing::debug!(%err, "PD's store min resolved ts is unavailable");
                None
            }
        };
        let asks = stores.iter().map(|store| {
            let known = from_pd
                .as_ref()
                .and_then(|m| m.get(&store.id).copied())
                .filter(|ts| is_valid(*ts));
            async move {
                let ts = match known {
                    Some(ts) => ts,
                    None => match source.store_safe_ts(store).await {
                        Ok(ts) => ts,
                        Err(err) => {
                            tracing::debug!(store = store.id, %err, "store safe ts unavailable");
                            return;
                        }
                    },
                };
                self.advance_store(store.id, ts);
            }
        });
        futures_util::future::join_all(asks).await;
        let mut scopes: HashMap<&str, Vec<u64>> = HashMap::new();
        for store in stores {
            scopes.entry(GLOBAL_TXN_SCOPE).or_default().push(store.id);
            if let Some(zone) = &store.zone {
                scopes.entry(zone.as_str()).or_default().push(store.id);
            }
        }
        for (scope, ids) in scopes {
            self.update_min(scope, &ids);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::Error;

    const TIKV: u64 = 1;
    const TIFLASH: u64 = 2;

    type PdAnswer = Box<dyn Fn(&[u64]) -> Result<MinResolvedTs> + Send + Sync>;

    /// client-go's `storeSafeTsMockClient` and `mockPDHTTPClient` in one.
    struct Fake {
        pd: Mutex<PdAnswer>,
        tikv_safe_ts: u64,
        tiflash_safe_ts: u64,
        store_requests: AtomicU32,
    }

    impl Fake {
        fn new(pd: PdAnswer) -> Self {
            Fake {
                pd: Mutex::new(pd),
                tikv_safe_ts: 100,
                tiflash_safe_ts: 80,
                store_requests: AtomicU32::new(0),
            }
        }

        /// PD answers 0 for the cluster and nothing per store, as in client-go's setup.
        fn pd_silent() -> Self {
            Fake::new(Box::new(|_| Ok(MinResolvedTs::default())))
        }
    }

    impl SafeTsSource for Fake {
        fn min_resolved_ts<'a>(
            &'a self,
            store_ids: &'a [u64],
        ) -> BoxFuture<'a, Result<MinResolvedTs>> {
            let answer = (self.pd.lock().unwrap())(store_ids);
            Box::pin(async move { answer })
        }

        fn store_safe_ts<'a>(&'a self, store: &'a SafeTsStore) -> BoxFuture<'a, Result<u64>> {
            self.store_requests.fetch_add(1, Ordering::SeqCst);
            let ts = if store.id == TIFLASH {
                self.tiflash_safe_ts
            } else {
                self.tikv_safe_ts
            };
            Box::pin(async move { Ok(ts) })
        }
    }

    fn stores() -> Vec<SafeTsStore> {
        vec![
            SafeTsStore {
                id: TIKV,
                address: "store1".into(),
                zone: Some("z1".into()),
            },
            SafeTsStore {
                id: TIFLASH,
                address: "store2".into(),
                zone: Some("z2".into()),
            },
        ]
    }

    fn per_store(f: impl Fn(u64) -> u64 + Send + Sync + 'static) -> PdAnswer {
        Box::new(move |ids| {
            Ok(MinResolvedTs {
                min: u64::MAX,
                stores: ids.iter().map(|&id| (id, f(id))).collect(),
            })
        })
    }

    #[tokio::test]
    async fn min_safe_ts_from_stores() {
        let fake = Fake::pd_silent();
        let safe = SafeTs::default();
        safe.update(&fake, &stores()).await;
        assert_eq!(safe.min_safe_ts(GLOBAL_TXN_SCOPE), fake.tiflash_safe_ts);
        assert!(fake.store_requests.load(Ordering::SeqCst) >= 2);
        assert_eq!(safe.store_safe_ts(TIKV), Some(fake.tikv_safe_ts));
        assert_eq!(safe.min_safe_ts("z1"), fake.tikv_safe_ts);
        assert_eq!(safe.min_safe_ts("z2"), fake.tiflash_safe_ts);
    }

    #[tokio::test]
    async fn min_safe_ts_from_stores_with_all_zeros() {
        let mut fake = Fake::pd_silent();
        fake.tikv_safe_ts = 0;
        fake.tiflash_safe_ts = 0;
        let safe = SafeTs::default();
        safe.update(&fake, &stores()).await;
        safe.update(&fake, &stores()).await;
        assert_eq!(fake.store_requests.load(Ordering::SeqCst), 4);
        assert_eq!(safe.min_safe_ts(GLOBAL_TXN_SCOPE), 0);
    }

    #[tokio::test]
    async fn min_safe_ts_from_stores_with_some_zeros() {
        let mut fake = Fake::pd_silent();
        fake.tiflash_safe_ts = 0;
        let safe = SafeTs::default();
        safe.update(&fake, &stores()).await;
        assert_eq!(safe.min_safe_ts(GLOBAL_TXN_SCOPE), fake.tikv_safe_ts);
    }

    #[tokio::test]
    async fn min_safe_ts_from_pd() {
        let fake = Fake::new(Box::new(|_| {
            Ok(MinResolvedTs {
                min: 90,
                stores: HashMap::new(),
            })
        }));
        let safe = SafeTs::default();
        safe.update(&fake, &stores()).await;
        assert_eq!(safe.min_safe_ts(GLOBAL_TXN_SCOPE), 90);
        assert_eq!(fake.store_requests.load(Ordering::SeqCst), 0);
        // PD going back does not move it back.
        *fake.pd.lock().unwrap() = Box::new(|_| {
            Ok(MinResolvedTs {
                min: 50,
                stores: HashMap::new(),
            })
        });
        safe.update(&fake, &stores()).await;
        assert_eq!(safe.min_safe_ts(GLOBAL_TXN_SCOPE), 90);
    }

    #[tokio::test]
    async fn min_safe_ts_from_pd_by_stores() {
        let fake = Fake::new(per_store(|id| 100 + id));
        let safe = SafeTs::default();
        safe.update(&fake, &stores()).await;
        assert_eq!(safe.min_safe_ts(GLOBAL_TXN_SCOPE), 100 + TIKV);
        assert_eq!(fake.store_requests.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn min_safe_ts_from_mixed_1() {
        let fake = Fake::new(per_store(|id| if id == TIFLASH { 0 } else { 10 }));
        let safe = SafeTs::default();
        safe.update(&fake, &stores()).await;
        assert!(fake.store_requests.load(Ordering::SeqCst) >= 1);
        assert_eq!(safe.min_safe_ts(GLOBAL_TXN_SCOPE), 10);
        assert_eq!(safe.min_safe_ts("z1"), 10);
        assert_eq!(safe.min_safe_ts("z2"), fake.tiflash_safe_ts);
    }

    #[tokio::test]
    async fn min_safe_ts_from_mixed_2() {
        let fake = Fake::new(per_store(|id| if id == TIFLASH { 10 } else { u64::MAX }));
        let safe = SafeTs::default();
        safe.update(&fake, &stores()).await;
        assert!(fake.store_requests.load(Ordering::SeqCst) >= 1);
        assert_eq!(safe.min_safe_ts(GLOBAL_TXN_SCOPE), 10);
        assert_eq!(safe.min_safe_ts("z1"), fake.tikv_safe_ts);
        assert_eq!(safe.min_safe_ts("z2"), 10);
    }

    #[tokio::test]
    async fn pd_failures_fall_back_to_the_stores_and_store_failures_keep_the_old_value() {
        let fake = Fake::new(Box::new(|_| {
            Err(Error::Pd {
                message: "unreachable".into(),
            })
        }));
        let safe = SafeTs::default();
        safe.update(&fake, &stores()).await;
        assert_eq!(fake.store_requests.load(Ordering::SeqCst), 2);
        assert_eq!(safe.min_safe_ts(GLOBAL_TXN_SCOPE), 80);
        // A store that has not answered yet keeps its scope at 0.
        let mut more = stores();
        more.push(SafeTsStore {
            id: 3,
            address: "store3".into(),
            zone: None,
        });
        let failing = FailingStore3(fake);
        safe.update(&failing, &more).await;
        assert_eq!(safe.min_safe_ts(GLOBAL_TXN_SCOPE), 0);
        assert_eq!(safe.min_safe_ts("z1"), 100);
        assert!(safe.store_safe_ts(3).is_none());
    }

    struct FailingStore3(Fake);

    impl SafeTsSource for FailingStore3 {
        fn min_resolved_ts<'a>(
            &'a self,
            store_ids: &'a [u64],
        ) -> BoxFuture<'a, Result<MinResolvedTs>> {
            self.0.min_resolved_ts(store_ids)
        }

        fn store_safe_ts<'a>(&'a self, store: &'a SafeTsStore) -> BoxFuture<'a, Result<u64>> {
            if store.id == 3 {
                return Box::pin(async {
                    Err(Error::Pd {
                        message: "store 3 is down".into(),
                    })
                });
            }
            self.0.store_safe_ts(store)
        }
    }

    #[test]
    fn no_scope_and_no_store_mean_zero() {
        let safe = SafeTs::default();
        assert_eq!(safe.min_safe_ts(GLOBAL_TXN_SCOPE), 0);
        safe.update_min("empty", &[]);
        assert_eq!(safe.min_safe_ts("empty"), 0);
        safe.advance_store(1, u64::MAX);
        assert_eq!(
            safe.store_safe_ts(1),
            None,
            "the no-leader value is not a safe ts"
        );
    }
}

/// The tracker of a real [`Cluster`](crate::Cluster) against tikv-mock: PD's HTTP answer first,
/// the stores' `GetStoreSafeTS` when PD cannot tell.
#[cfg(test)]
mod cluster_tests {
    use tikv_mock::MockCluster;

    use super::GLOBAL_TXN_SCOPE;
    use crate::{Cluster, Config, RawClient};

    #[tokio::test]
    async fn the_cluster_learns_safe_ts_from_pd_and_it_only_moves_forward() {
        let mock = MockCluster::builder().start().await.unwrap();
        let cluster = Cluster::connect(mock.pd_endpoints(), Config::default())
            .await
            .unwrap();
        let raw = RawClient::builder_on(&cluster).build().await.unwrap();
        raw.put("k", "v").await.unwrap();

        cluster.update_safe_ts().await;
        let first = cluster
            .min_safe_ts(GLOBAL_TXN_SCOPE)
            .await
            .unwrap()
            .version();
        assert!(first > 0 && first != u64::MAX, "{first}");
        // PD's cluster answer is enough: no store was asked.
        let asked: u64 = mock
            .store_ids()
            .into_iter()
            .map(|s| mock.rpc_count(s, "GetStoreSafeTS"))
            .sum();
        assert_eq!(asked, 0);
        cluster.update_safe_ts().await;
        assert!(
            cluster
                .min_safe_ts(GLOBAL_TXN_SCOPE)
                .await
                .unwrap()
                .version()
                >= first
        );
    }

    #[tokio::test]
    async fn without_pd_the_stores_are_asked() {
        let mock = MockCluster::builder().start().await.unwrap();
        let cluster = Cluster::connect(mock.pd_endpoints(), Config::default())
            .await
            .unwrap();
        let raw = RawClient::builder_on(&cluster).build().await.unwrap();
        raw.put("k", "v").await.unwrap();
        // The mock's stores are as fresh as the last timestamp PD handed out.
        let ts = cluster.pd_client().get_timestamp().await.unwrap();
        let known = cluster.region_cache().stores();
        assert!(!known.is_empty());
        cluster.update_safe_ts_without_pd().await;
        for store in &known {
            assert!(
                cluster.store_safe_ts(store.id) >= Some(ts.version()),
                "store {}",
                store.id
            );
        }
        for store in &known {
            let ts = cluster.store_safe_ts(store.id);
            assert!(ts.is_some_and(|ts| ts > 0), "store {}: {ts:?}", store.id);
        }
        assert!(cluster.min_safe_ts(GLOBAL_TXN_SCOPE).await.is_some());
    }

    /// The refresh starts with the first question, which waits for its first round instead of
    /// answering a placeholder; a scope no store is in is unknown, not 0.
    #[tokio::test]
    async fn the_first_question_waits_for_the_first_refresh() {
        let mock = MockCluster::builder().start().await.unwrap();
        let cluster = Cluster::connect(mock.pd_endpoints(), Config::default())
            .await
            .unwrap();
        let ts = cluster
            .min_safe_ts(GLOBAL_TXN_SCOPE)
            .await
            .expect("known after the first round");
        assert!(ts.version() > 0 && ts.version() != u64::MAX, "{ts:?}");
        assert_eq!(cluster.min_safe_ts("no-such-zone").await, None);
        cluster.close();
    }
}
