//! [`RawClient`]: TiKV's raw key-value API — no transactions, no MVCC — with every operation
//! of client-go's `rawkv.Client`, plus batch scans and scans as a stream.
//!
//! Who calls it: applications. Below it: `request` (sending by key, fan-out over regions),
//! `codec` (API V2 keyspaces), `rpc` (the typed requests), all over a shared [`Cluster`].
//!
//! How keys travel: every user key is encoded once at the entry of a call (API V2: the keyspace
//! prefix), routed and sent in that form, and keys in answers are decoded before they are
//! returned. Batches are grouped by region and cut by client-go's limits (512 keys per
//! get/delete, 16 KiB per put), sent concurrently, and what a region cannot serve (split,
//! merge, leader moved) is located again and resent, so batches, scans, reverse scans and
//! range deletes stay correct while regions change under them. A put batch TiKV finds too
//! large for one Raft entry is halved until it fits.
//!
//! Every call is a request builder ([`call`]): its options (column family, TTL, limit,
//! deadline, retry budget) are methods, and awaiting it sends it. The deadline and retry
//! budget come from [`crate::options`], shared with the transactional client.
//!
//! Ports client-go `rawkv/rawkv.go`. Bad input (empty or oversized keys, oversized entries,
//! scan limits of 0, reversed ranges, batches of mismatched lengths, column families API V2
//! does not have) is refused with [`Error::InvalidArgument`], [`Error::KeyTooLarge`] or
//! [`Error::EntryTooLarge`] before anything is sent.

pub mod call;
mod scan;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::cluster::Cluster;
use crate::codec::{ApiCodec, KeyMode};
use crate::config::{ApiVersion, Config};
use crate::error::RegionErrorKind;
use crate::locate::KeyLocation;
use crate::options::{CallOptions, ColumnFamily};
use crate::request::dispatch::{BatchLimit, LocateBy, ShardOutcome};
use crate::request::sender::{CallOptions as SenderCallOptions, RegionOutcome, SendError};
use crate::request::{BackoffVars, Backoffer};
use crate::rpc::{ContextTemplate, KvRequest};
use crate::{BoundRange, Error, Key, KvPair, Result, Value};

pub use scan::RawScanStream;

/// The most pairs one RawScan request asks for (client-go `MaxRawKVScanLimit`). A scan with a
/// larger limit, or none, is sent as several requests.
///
/// ```
/// assert_eq!(tikv_client::raw::MAX_RAW_SCAN_LIMIT, 10240);
/// ```
pub const MAX_RAW_SCAN_LIMIT: u32 = 10240;
/// TiKV's default `storage.max-key-size`: longer keys are refused.
///
/// ```
/// assert_eq!(tikv_client::raw::MAX_KEY_SIZE, 8192);
/// ```
pub const MAX_KEY_SIZE: usize = 8 * 1024;
/// TiKV's default `raftstore.raft-entry-max-size`: a single key and value larger than this can
/// never be written.
///
/// ```
/// assert_eq!(tikv_client::raw::MAX_ENTRY_SIZE, 8 << 20);
/// ```
pub const MAX_ENTRY_SIZE: u64 = 8 * 1024 * 1024;
/// Keys per RawBatchGet / RawBatchDelete request (client-go `rawBatchPairCount`).
const RAW_BATCH_PAIR_COUNT: usize = 512;
/// Bytes per RawBatchPut request (client-go `rawBatchPutSize`).
const RAW_BATCH_PUT_SIZE: usize = 16 * 1024;
/// The default retry budget of one raw call: client-go's `rawkvMaxBackoff` (20 s) times its
/// default backoff weight (2), the sleep client-go's raw calls may actually take.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(tikv_client::raw::RAW_RETRY_BUDGET, Duration::from_secs(40));
/// ```
pub const RAW_RETRY_BUDGET: Duration = Duration::from_secs(40);
/// How long one attempt waits for its answer (client-go `ReadTimeoutShort`).
const RAW_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// What [`RawClient::checksum`] computes over a range (TiKV's CRC64-XOR checksum).
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let sum = client.checksum("a".."z").await?;
/// println!("{} pairs, {} bytes, crc {:x}", sum.total_kvs, sum.total_bytes, sum.crc64_xor);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RawChecksum {
    /// XOR of the CRC64 of every key-value pair.
    pub crc64_xor: u64,
    /// Number of pairs.
    pub total_kvs: u64,
    /// Bytes of keys and values.
    pub total_bytes: u64,
}

/// What [`RawClient::compare_and_swap`] found and did.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let cas = client.compare_and_swap("k", None::<&str>, "first").await?;
/// if !cas.swapped {
///     println!("someone else wrote {:?} first", cas.previous);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CasResult {
    /// Whether the new value was written (the key held the expected value).
    pub swapped: bool,
    /// The value the key held before the call (`None`: it did not exist). When `swapped` is
    /// true it is the expected value.
    pub previous: Option<Value>,
}

/// Builds a [`RawClient`]: [`RawClient::builder`] connects to a cluster of its own,
/// [`RawClient::builder_on`] shares a [`Cluster`].
///
/// The connection settings ([`config`](RawClientBuilder::config),
/// [`security`](RawClientBuilder::security)) exist only on the builder that connects
/// (`RawClientBuilder<Connect>`): a shared cluster was connected with its own configuration,
/// and a setting that could not take effect is not offered rather than silently dropped.
///
/// ```no_run
/// use std::time::Duration;
/// use tikv_client::{ApiVersion, Config, RawClient};
/// use tikv_client::options::ColumnFamily;
///
/// # async fn f() -> tikv_client::Result<()> {
/// let client = RawClient::builder(["127.0.0.1:2379"])
///     .config(Config::default())
///     .api_version(ApiVersion::V1)
///     .column_family(ColumnFamily::Default)
///     .timeout(Duration::from_secs(5))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
///
/// A builder on a shared cluster has no `config`:
///
/// ```compile_fail
/// # async fn f(cluster: tikv_client::Cluster) {
/// let client = tikv_client::RawClient::builder_on(&cluster)
///     .config(tikv_client::Config::default()) // error: no method `config`
///     .build()
///     .await;
/// # }
/// ```
#[derive(Debug)]
pub struct RawClientBuilder<T = Connect> {
    target: T,
    api_version: ApiVersion,
    keyspace: Option<String>,
    column_family: ColumnFamily,
    atomic: bool,
    options: CallOptions,
}

/// The target of a [`RawClientBuilder`] that connects to the cluster itself, with its own
/// [`Config`] (made by [`RawClient::builder`]).
///
/// ```
/// use tikv_client::raw::{Connect, RawClientBuilder};
/// let builder: RawClientBuilder<Connect> = tikv_client::RawClient::builder(["pd:2379"]);
/// ```
#[derive(Debug)]
pub struct Connect {
    endpoints: Vec<String>,
    config: Config,
}

/// The target of a [`RawClientBuilder`] that shares an existing [`Cluster`] (made by
/// [`RawClient::builder_on`]).
///
/// ```no_run
/// # fn f(cluster: &tikv_client::Cluster) {
/// use tikv_client::raw::{OnCluster, RawClientBuilder};
/// let builder: RawClientBuilder<OnCluster> = tikv_client::RawClient::builder_on(cluster);
/// # }
/// ```
#[derive(Debug)]
pub struct OnCluster {
    cluster: Cluster,
}

impl RawClientBuilder<Connect> {
    /// The configuration of the connection this builder makes.
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// let config = tikv_client::Config::from_toml_file("tikv-client.toml")?;
    /// let client = tikv_client::RawClient::builder(["pd:2379"]).config(config).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn config(mut self, config: Config) -> Self {
        self.target.config = config;
        self
    }

    /// TLS settings (shorthand for setting `config.security`; applies to the configuration in
    /// place when it is called, so call it after [`config`](RawClientBuilder::config)).
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// use tikv_client::{RawClient, Security};
    /// let tls = Security::default().with_ca("ca.pem").with_client_identity("client.pem", "client-key.pem");
    /// let client = RawClient::builder(["pd:2379"]).security(tls).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn security(mut self, security: crate::Security) -> Self {
        self.target.config.security = security;
        self
    }

    /// Connects, resolves the keyspace and returns the client.
    ///
    /// Errors: [`Error::KeyspaceNotFound`] / [`Error::KeyspaceNotEnabled`] for an unknown or
    /// disabled keyspace; [`Error::InvalidArgument`] for a keyspace without API V2 or a column
    /// family other than `default` under API V2; [`Error::Config`] for an invalid
    /// configuration; PD's errors.
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// let client = tikv_client::RawClient::builder(["127.0.0.1:2379"]).build().await?;
    /// # Ok(()) }
    /// ```
    pub async fn build(self) -> Result<RawClient> {
        self.check()?;
        let Connect { endpoints, config } = self.target;
        let cluster = Cluster::connect(endpoints, config).await?;
        let settings = Settings {
            api_version: self.api_version,
            keyspace: self.keyspace,
            column_family: self.column_family,
            atomic: self.atomic,
            options: self.options,
        };
        settings.build(cluster, true).await
    }
}

impl RawClientBuilder<OnCluster> {
    /// Resolves the keyspace and returns a client on the shared cluster.
    ///
    /// Errors: as the connecting builder's `build`, without the connection's own.
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// use tikv_client::{Cluster, Config, RawClient};
    /// let cluster = Cluster::connect(["127.0.0.1:2379"], Config::default()).await?;
    /// let a = RawClient::builder_on(&cluster).build().await?;
    /// let b = RawClient::builder_on(&cluster).atomic(true).build().await?;
    /// # Ok(()) }
    /// ```
    pub async fn build(self) -> Result<RawClient> {
        self.check()?;
        let settings = Settings {
            api_version: self.api_version,
            keyspace: self.keyspace,
            column_family: self.column_family,
            atomic: self.atomic,
            options: self.options,
        };
        settings.build(self.target.cluster, false).await
    }
}

impl<T> RawClientBuilder<T> {
    /// The API version; V1 by default. V2 uses the keyspace given with
    /// [`keyspace`](RawClientBuilder::keyspace), or PD's default keyspace.
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// use tikv_client::{ApiVersion, RawClient};
    /// let client = RawClient::builder(["pd:2379"]).api_version(ApiVersion::V2).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn api_version(mut self, version: ApiVersion) -> Self {
        self.api_version = version;
        self
    }

    /// The keyspace (API V2 only): resolved through PD when the client is built.
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// use tikv_client::{ApiVersion, RawClient};
    /// let client = RawClient::builder(["pd:2379"])
    ///     .api_version(ApiVersion::V2)
    ///     .keyspace("tenant-a")
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn keyspace(mut self, name: impl Into<String>) -> Self {
        self.keyspace = Some(name.into());
        self
    }

    /// The column family every call uses unless it sets its own (`default` if unset). Under
    /// API V2 only `default` exists; another is refused by `build`.
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// use tikv_client::{options::ColumnFamily, RawClient};
    /// let client = RawClient::builder(["pd:2379"]).column_family(ColumnFamily::Write).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn column_family(mut self, cf: ColumnFamily) -> Self {
        self.column_family = cf;
        self
    }

    /// Atomic mode: writes go through TiKV's latches so they are atomic with
    /// [`RawClient::compare_and_swap`], which requires it. Every client writing the same keys
    /// must agree on it.
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// let client = tikv_client::RawClient::builder(["pd:2379"]).atomic(true).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn atomic(mut self, atomic: bool) -> Self {
        self.atomic = atomic;
        self
    }

    /// The deadline of every call of the client (each call may set its own); none by default.
    /// See [`CallOptions`].
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// let client = tikv_client::RawClient::builder(["pd:2379"])
    ///     .timeout(Duration::from_secs(3))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// The retry budget of every call of the client (each call may set its own); 40 s by
    /// default. See [`CallOptions`].
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// let client = tikv_client::RawClient::builder(["pd:2379"])
    ///     .retry_budget(Duration::from_secs(5))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.options.retry_budget = Some(budget);
        self
    }

    /// Refuses settings that cannot go together, before anything is connected.
    fn check(&self) -> Result<()> {
        if self.keyspace.is_some() && self.api_version != ApiVersion::V2 {
            return Err(Error::invalid_argument(
                "a keyspace needs API V2 (RawClientBuilder::api_version)",
            ));
        }
        check_cf(self.api_version, self.column_family)
    }
}

/// A builder's settings once its target is known.
struct Settings {
    api_version: ApiVersion,
    keyspace: Option<String>,
    column_family: ColumnFamily,
    atomic: bool,
    options: CallOptions,
}

impl Settings {
    async fn build(self, cluster: Cluster, owns_cluster: bool) -> Result<RawClient> {
        let codec = match self.api_version {
            ApiVersion::V1 => ApiCodec::v1(KeyMode::Raw),
            ApiVersion::V2 => {
                let name = self.keyspace.unwrap_or_default();
                let meta = cluster.pd_client().load_keyspace(&name).await?;
                meta.ensure_enabled()?;
                // A cluster of our own serves this keyspace only, so its TSO stream follows
                // the keyspace's TSO group; a shared cluster keeps what its owner set.
                if owns_cluster {
                    cluster.pd_client().set_tso_keyspace(&meta);
                }
                ApiCodec::for_keyspace(KeyMode::Raw, &meta)?
            }
        };
        let mut template = ContextTemplate {
            request_source: "external_rawkv".into(),
            ..Default::default()
        };
        codec.stamp(&mut template);
        Ok(RawClient {
            cluster,
            inner: Arc::new(RawInner {
                codec,
                context: template.to_context(),
                api_version: self.api_version,
                cf: self.column_family,
                atomic: self.atomic,
                options: self.options,
            }),
        })
    }
}

/// Under API V2 TiKV serves the `default` column family only.
fn check_cf(api_version: ApiVersion, cf: ColumnFamily) -> Result<()> {
    if api_version == ApiVersion::V2 && cf != ColumnFamily::Default {
        return Err(Error::invalid_argument(format!(
            "column family {cf} is not available under API V2, which has `default` only"
        )));
    }
    Ok(())
}

/// A raw key-value client. Cheap to clone; clones share everything.
///
/// Every call returns a request builder: set the call's options on it, then `.await` it
/// (each builder implements [`IntoFuture`]). Dropping the future
/// before it finishes cancels the call: nothing more is sent for it and the client stays
/// usable; a write already sent may or may not have been applied.
///
/// ```no_run
/// use std::time::Duration;
/// use tikv_client::RawClient;
///
/// # async fn f() -> tikv_client::Result<()> {
/// let client = RawClient::new(["127.0.0.1:2379"]).await?;
/// client.put("k", "v").ttl(Duration::from_secs(60)).await?;
/// let v = client.get("k").timeout(Duration::from_millis(500)).await?;
/// assert_eq!(v.as_ref().map(|v| v.as_bytes()), Some(&b"v"[..]));
/// let page = client.scan("a".."z").limit(100).reverse().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RawClient {
    cluster: Cluster,
    inner: Arc<RawInner>,
}

#[derive(Debug)]
struct RawInner {
    codec: ApiCodec,
    /// The request context every request starts from (API version, keyspace, source).
    context: kvrpcpb::Context,
    api_version: ApiVersion,
    cf: ColumnFamily,
    atomic: bool,
    /// The client's deadline and retry budget; each call's own override them.
    options: CallOptions,
}

/// What one call runs with, once its own options and its client's are merged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call {
    /// The column family as the request spells it.
    cf: &'static str,
    /// The sleep budget of the call's backoffer.
    budget: Duration,
    /// The whole call's deadline.
    timeout: Option<Duration>,
}

impl Call {
    fn cf(&self) -> String {
        // The default column family is the empty name: no allocation on the common path.
        String::from(self.cf)
    }
}

/// A key to send: its wire form (what the request carries), its region-key form (what the
/// region cache is searched with) and what goes with it.
#[derive(Debug, Clone)]
struct Item<V> {
    encoded: Bytes,
    /// The region-key form when it differs from the wire form (API V2); `None` under API V1,
    /// where routing uses `encoded` itself.
    route: Option<Bytes>,
    value: V,
}

impl<V> Item<V> {
    fn route(&self) -> &[u8] {
        self.route.as_ref().unwrap_or(&self.encoded)
    }
}

/// What a `batch_get` item carries: the key's position in the caller's list, where its value
/// goes back.
#[derive(Debug, Clone, Copy)]
struct Slot(usize);

impl RawClient {
    /// A builder connecting to the PD members `pd_endpoints`.
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// let client = tikv_client::RawClient::builder(["pd1:2379", "pd2:2379"]).build().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(
        pd_endpoints: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> RawClientBuilder<Connect> {
        RawClientBuilder {
            target: Connect {
                endpoints: pd_endpoints
                    .into_iter()
                    .map(|e| e.as_ref().to_owned())
                    .collect(),
                config: Config::default(),
            },
            api_version: ApiVersion::V1,
            keyspace: None,
            column_family: ColumnFamily::Default,
            atomic: false,
            options: CallOptions::default(),
        }
    }

    /// A builder for a client sharing `cluster` (its connections, caches and configuration)
    /// with other clients.
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// use tikv_client::{ApiVersion, Cluster, Config, RawClient};
    /// let cluster = Cluster::connect(["pd:2379"], Config::default()).await?;
    /// let tenant_a = RawClient::builder_on(&cluster)
    ///     .api_version(ApiVersion::V2)
    ///     .keyspace("a")
    ///     .build()
    ///     .await?;
    /// let tenant_b = RawClient::builder_on(&cluster)
    ///     .api_version(ApiVersion::V2)
    ///     .keyspace("b")
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder_on(cluster: &Cluster) -> RawClientBuilder<OnCluster> {
        RawClientBuilder {
            target: OnCluster {
                cluster: cluster.clone(),
            },
            api_version: ApiVersion::V1,
            keyspace: None,
            column_family: ColumnFamily::Default,
            atomic: false,
            options: CallOptions::default(),
        }
    }

    /// Connects with the default configuration and API V1.
    ///
    /// ```no_run
    /// # async fn f() -> tikv_client::Result<()> {
    /// let client = tikv_client::RawClient::new(["127.0.0.1:2379"]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn new(pd_endpoints: impl IntoIterator<Item = impl AsRef<str>>) -> Result<RawClient> {
        Self::builder(pd_endpoints).build().await
    }

    /// The cluster this client runs on.
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) {
    /// println!("cluster {}", client.cluster().cluster_id());
    /// # }
    /// ```
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The region holding `key`, with its bounds in this client's key space (client-go
    /// `RegionCache.LocateKey`): from the cluster's region cache, asking PD on a miss. Under API
    /// V2 a region reaching outside the keyspace is clamped to it.
    ///
    /// The empty key names the first region. Errors: [`Error::KeyTooLarge`] for a key no call
    /// takes;
    /// PD's errors when the region must be loaded and PD cannot answer.
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let region = client.locate_key("k").await?;
    /// assert!(region.start_key.as_bytes() <= b"k".as_slice());
    /// # Ok(()) }
    /// ```
    pub async fn locate_key(&self, key: impl Into<Key>) -> Result<crate::RegionLocation> {
        let key = key.into();
        // The empty key is the first key of the key space: no call takes it, but it has a
        // region (client-go's `LocateKey` accepts it too).
        let wire = if key.is_empty() {
            self.inner.codec.encode_key(key.as_bytes_ref())
        } else {
            self.encode_key(key)?
        };
        let route = self.route_key(&wire);
        let location = self.cluster.region_cache().locate_key(&route).await?;
        let start = self.wire_bound(location.start_key())?;
        let end = self.wire_bound(location.end_key())?;
        let (start, end) = self.inner.codec.user_bounds(&start, &end);
        let region = location.region();
        Ok(crate::RegionLocation {
            id: region.id(),
            conf_ver: region.conf_ver(),
            version: region.version(),
            start_key: Key::from(start),
            end_key: Key::from(end),
        })
    }

    /// A client like this one using column family `cf` (refused by its calls under API V2,
    /// which has `default` only).
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// use tikv_client::options::ColumnFamily;
    /// let writes = client.with_cf(ColumnFamily::Write);
    /// writes.put("k", "v").await?;
    /// # Ok(()) }
    /// ```
    pub fn with_cf(&self, cf: ColumnFamily) -> RawClient {
        self.derive(|inner| inner.cf = cf)
    }

    /// A client like this one in or out of atomic mode.
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let atomic = client.with_atomic_for_cas(true);
    /// atomic.compare_and_swap("k", None::<&str>, "v").await?;
    /// # Ok(()) }
    /// ```
    pub fn with_atomic_for_cas(&self, atomic: bool) -> RawClient {
        self.derive(|inner| inner.atomic = atomic)
    }

    /// A client like this one whose calls have deadline `timeout` unless they set their own.
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// let quick = client.with_timeout(Duration::from_millis(200));
    /// let v = quick.get("k").await?;
    /// # Ok(()) }
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> RawClient {
        self.derive(|inner| inner.options.timeout = Some(timeout))
    }

    /// A client like this one whose calls have retry budget `budget` unless they set their own.
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// let patient = client.with_retry_budget(Duration::from_secs(120));
    /// patient.put("k", "v").await?;
    /// # Ok(()) }
    /// ```
    pub fn with_retry_budget(&self, budget: Duration) -> RawClient {
        self.derive(|inner| inner.options.retry_budget = Some(budget))
    }

    fn derive(&self, change: impl FnOnce(&mut RawInner)) -> RawClient {
        let mut inner = RawInner {
            codec: self.inner.codec.clone(),
            context: self.inner.context.clone(),
            api_version: self.inner.api_version,
            cf: self.inner.cf,
            atomic: self.inner.atomic,
            options: self.inner.options,
        };
        change(&mut inner);
        RawClient {
            cluster: self.cluster.clone(),
            inner: Arc::new(inner),
        }
    }

    /// Merges a call's options with the client's.
    fn call(&self, cf: Option<ColumnFamily>, options: CallOptions) -> Result<Call> {
        let cf = cf.unwrap_or(self.inner.cf);
        check_cf(self.inner.api_version, cf)?;
        let options = options.or(self.inner.options);
        Ok(Call {
            cf: cf.wire_name(),
            budget: options.retry_budget.unwrap_or(RAW_RETRY_BUDGET),
            timeout: options.timeout,
        })
    }

    // ----- single keys -----------------------------------------------------------------------

    async fn do_get(&self, call: Call, key: Key) -> Result<Option<Value>> {
        let key = self.encode_key(key)?;
        let resp = self
            .send_single(call, &key, || kvrpcpb::RawGetRequest {
                context: Some(self.inner.context.clone()),
                key: key.clone(),
                cf: call.cf(),
            })
            .await?;
        raw_error(&resp.error)?;
        Ok((!resp.not_found).then_some(Value::from(resp.value)))
    }

    async fn do_get_key_ttl(&self, call: Call, key: Key) -> Result<Option<Duration>> {
        let key = self.encode_key(key)?;
        let req = kvrpcpb::RawGetKeyTtlRequest {
            context: Some(self.inner.context.clone()),
            key,
            cf: call.cf(),
        };
        let resp = self.send_single(call, &req.key, || req.clone()).await?;
        raw_error(&resp.error)?;
        Ok((!resp.not_found).then_some(Duration::from_secs(resp.ttl)))
    }

    async fn do_put(&self, call: Call, key: Key, value: Value, ttl: Ttl) -> Result<()> {
        check_entry(&key, &value)?;
        let ttl = ttl.secs()?;
        let key = self.encode_key(key)?;
        let value = value.into_bytes();
        let resp = self
            .send_single(call, &key, || kvrpcpb::RawPutRequest {
                context: Some(self.inner.context.clone()),
                key: key.clone(),
                value: value.clone(),
                cf: call.cf(),
                ttl,
                for_cas: self.inner.atomic,
            })
            .await?;
        raw_error(&resp.error)
    }

    async fn do_delete(&self, call: Call, key: Key) -> Result<()> {
        let key = self.encode_key(key)?;
        let resp = self
            .send_single(call, &key, || kvrpcpb::RawDeleteRequest {
                context: Some(self.inner.context.clone()),
                key: key.clone(),
                cf: call.cf(),
                for_cas: self.inner.atomic,
            })
            .await?;
        raw_error(&resp.error)
    }

    async fn do_compare_and_swap(
        &self,
        call: Call,
        key: Key,
        previous: Option<Value>,
        new: Value,
        ttl: Ttl,
    ) -> Result<CasResult> {
        if !self.inner.atomic {
            return Err(Error::invalid_argument(
                "compare_and_swap needs atomic mode (RawClientBuilder::atomic(true))",
            ));
        }
        check_entry(&key, &new)?;
        let ttl = ttl.secs()?;
        let key = self.encode_key(key)?;
        let req = kvrpcpb::RawCasRequest {
            context: Some(self.inner.context.clone()),
            key,
            value: new.into_bytes(),
            previous_not_exist: previous.is_none(),
            previous_value: previous.map(Value::into_bytes).unwrap_or_default(),
            cf: call.cf(),
            ttl,
            delete: false,
        };
        let resp = self.send_single(call, &req.key, || req.clone()).await?;
        raw_error(&resp.error)?;
        Ok(CasResult {
            swapped: resp.succeed,
            previous: (!resp.previous_not_exist).then(|| Value::from(resp.previous_value)),
        })
    }

    // ----- batches ---------------------------------------------------------------------------

    /// Encodes the keys of a `batch_get`, each with its position in the caller's list.
    fn batch_get_items(
        &self,
        keys: impl IntoIterator<Item = impl Into<Key>>,
    ) -> Result<(Vec<Item<Slot>>, usize)> {
        let mut count = 0;
        let items = self.encode_items(keys.into_iter().map(|key| {
            count += 1;
            (key.into(), Slot(count - 1))
        }))?;
        Ok((items, count))
    }

    /// Each key carries its position in the caller's list, and each answer is matched with
    /// the keys of the request it answers: TiKV answers the keys it found in the order they
    /// were asked for (a key asked twice, twice), so one forward walk pairs them; an answer
    /// out of that order is matched by a search of the request's keys instead. The keys
    /// returned are the request's, decoded (under API V1, the caller's own buffers).
    async fn do_batch_get(
        &self,
        call: Call,
        items: Vec<Item<Slot>>,
        count: usize,
    ) -> Result<Vec<KvPair>> {
        let answers = self
            .fan_out(
                call,
                items,
                BatchLimit::keys(RAW_BATCH_PAIR_COUNT),
                |items| kvrpcpb::RawBatchGetRequest {
                    context: Some(self.inner.context.clone()),
                    keys: items.iter().map(|i| i.encoded.clone()).collect(),
                    cf: call.cf(),
                },
            )
            .await?;
        // The answer of each key, at its position in the caller's list.
        let mut found: Vec<Option<KvPair>> = (0..count).map(|_| None).collect();
        let mut hits = 0;
        let mut answers = answers;
        for (asked, resp) in &mut answers {
            let pairs = std::mem::take(&mut resp.pairs);
            hits += place_answers(asked, pairs, &mut found, |k| self.decode_key(k))?;
        }
        let mut out = Vec::with_capacity(hits);
        out.extend(found.into_iter().flatten());
        Ok(out)
    }

    async fn do_batch_put(&self, call: Call, pairs: Vec<KvPair>, ttls: Ttls) -> Result<()> {
        let ttls = ttls.for_pairs(pairs.len())?;
        for pair in &pairs {
            check_entry(pair.key(), pair.value())?;
        }
        let with_ttl = ttls.iter().any(|ttl| *ttl != 0);
        let items = self.encode_items(pairs.into_iter().enumerate().map(|(i, pair)| {
            let (key, value) = pair.into_parts();
            (key, (value, ttls.get(i).copied().unwrap_or(0)))
        }))?;
        let atomic = self.inner.atomic;
        let answers = self
            .fan_out(
                call,
                items,
                BatchLimit {
                    max_items: usize::MAX,
                    max_bytes: RAW_BATCH_PUT_SIZE,
                },
                |items| kvrpcpb::RawBatchPutRequest {
                    context: Some(self.inner.context.clone()),
                    pairs: items
                        .iter()
                        .map(|i| kvrpcpb::KvPair {
                            key: i.encoded.clone(),
                            value: i.value.0.as_bytes_ref().clone(),
                            ..Default::default()
                        })
                        .collect(),
                    cf: call.cf(),
                    // One TTL per pair, aligned with this request's own pairs.
                    ttls: if with_ttl {
                        items.iter().map(|i| i.value.1).collect()
                    } else {
                        Vec::new()
                    },
                    for_cas: atomic,
                    ..Default::default()
                },
            )
            .await?;
        answers.iter().try_for_each(|(_, r)| raw_error(&r.error))
    }

    async fn do_batch_delete(&self, call: Call, items: Vec<Item<()>>) -> Result<()> {
        let atomic = self.inner.atomic;
        let answers = self
            .fan_out(
                call,
                items,
                BatchLimit::keys(RAW_BATCH_PAIR_COUNT),
                |items| kvrpcpb::RawBatchDeleteRequest {
                    context: Some(self.inner.context.clone()),
                    keys: items.iter().map(|i| i.encoded.clone()).collect(),
                    cf: call.cf(),
                    for_cas: atomic,
                },
            )
            .await?;
        answers.iter().try_for_each(|(_, r)| raw_error(&r.error))
    }

    async fn do_delete_range(&self, call: Call, range: BoundRange) -> Result<()> {
        let (mut start, end) = self.encode_range(range)?;
        let mut bo = backoffer(call);
        let opts = sender_options();
        while end.is_empty() || start < end {
            let (reply, location) = self
                .cluster
                .sender()
                .send_by_key(
                    &mut bo,
                    &self.route_key(&start),
                    LocateBy::Key,
                    &opts,
                    |loc| {
                        Ok(kvrpcpb::RawDeleteRangeRequest {
                            context: Some(self.inner.context.clone()),
                            start_key: start.clone(),
                            end_key: clamp_end(&end, &self.wire_bound(loc.end_key())?),
                            cf: call.cf(),
                        })
                    },
                )
                .await?;
            raw_error(&reply.resp.error)?;
            let next = self.wire_bound(location.end_key())?;
            if next.is_empty() {
                break;
            }
            start = next;
        }
        Ok(())
    }

    async fn do_checksum(&self, call: Call, range: BoundRange) -> Result<RawChecksum> {
        if call.cf != ColumnFamily::Default.wire_name() {
            // TiKV's RawChecksum has no column family: it always sums `default`. A client set
            // to another one would silently get the wrong family's checksum.
            return Err(Error::invalid_argument(format!(
                "checksum covers the default column family only; this call uses {:?}",
                call.cf
            )));
        }
        let (mut start, end) = self.encode_range(range)?;
        let mut bo = backoffer(call);
        let opts = sender_options();
        let mut sum = RawChecksum::default();
        while end.is_empty() || start < end {
            let (reply, location) = self
                .cluster
                .sender()
                .send_by_key(
                    &mut bo,
                    &self.route_key(&start),
                    LocateBy::Key,
                    &opts,
                    |loc| {
                        Ok(kvrpcpb::RawChecksumRequest {
                            context: Some(self.inner.context.clone()),
                            algorithm: kvrpcpb::ChecksumAlgorithm::Crc64Xor as i32,
                            ranges: vec![kvrpcpb::KeyRange {
                                start_key: start.clone(),
                                end_key: clamp_end(&end, &self.wire_bound(loc.end_key())?),
                            }],
                        })
                    },
                )
                .await?;
            raw_error(&reply.resp.error)?;
            sum.crc64_xor ^= reply.resp.checksum;
            sum.total_kvs += reply.resp.total_kvs;
            sum.total_bytes += reply.resp.total_bytes;
            let next = self.wire_bound(location.end_key())?;
            if next.is_empty() {
                break;
            }
            start = next;
        }
        Ok(sum)
    }

    // ----- internals -------------------------------------------------------------------------

    fn encode_key(&self, key: Key) -> Result<Bytes> {
        check_key(&key)?;
        if self.inner.codec.is_identity() {
            return Ok(key.into_bytes());
        }
        Ok(self.inner.codec.encode_key(key.as_bytes_ref()))
    }

    fn decode_key(&self, key: Bytes) -> Result<Key> {
        if self.inner.codec.is_identity() {
            return Ok(Key::from(key));
        }
        self.inner.codec.decode_key(&key).map(Key::from)
    }

    /// The encoded `[start, end)` of a user range; an empty end is unbounded (API V1) or the
    /// keyspace's end (API V2, where it is never empty).
    fn encode_range(&self, range: BoundRange) -> Result<(Bytes, Bytes)> {
        range.validate()?;
        let (start, end) = range.into_keys();
        for key in [Some(&start), end.as_ref()].into_iter().flatten() {
            if key.len() > MAX_KEY_SIZE {
                return Err(Error::KeyTooLarge {
                    size: key.len(),
                    limit: MAX_KEY_SIZE,
                });
            }
        }
        let end = end.map(Key::into_bytes).unwrap_or_default();
        Ok(self.inner.codec.encode_range(start.as_bytes_ref(), &end))
    }

    fn encode_items<V>(&self, items: impl IntoIterator<Item = (Key, V)>) -> Result<Vec<Item<V>>> {
        let items = items.into_iter();
        // Sized up front: collecting through `Result` would grow the vector step by step.
        let mut out = Vec::with_capacity(items.size_hint().0);
        for (key, value) in items {
            let encoded = self.encode_key(key)?;
            out.push(Item {
                route: self.inner.codec.route_key(&encoded),
                encoded,
                value,
            });
        }
        Ok(out)
    }

    /// The form of a wire key the region cache is searched with (`ApiCodec::route_key`).
    fn route_key(&self, wire: &Bytes) -> Bytes {
        self.inner
            .codec
            .route_key(wire)
            .unwrap_or_else(|| wire.clone())
    }

    /// A region boundary as a wire key (empty stays empty: unbounded).
    fn wire_bound(&self, boundary: &Key) -> Result<Bytes> {
        self.inner.codec.wire_bound(boundary.as_bytes_ref())
    }

    /// Sends a one-key request to the region of `key` (its wire form); `build` makes each
    /// attempt's request.
    async fn send_single<R: KvRequest>(
        &self,
        call: Call,
        key: &Bytes,
        build: impl Fn() -> R + Sync,
    ) -> Result<R::Response> {
        let mut bo = backoffer(call);
        let opts = sender_options();
        let sender = self.cluster.sender();
        let route = self.inner.codec.route_key(key);
        let reply = sender
            .send_to_key(&mut bo, route.as_ref().unwrap_or(key), &opts, build)
            .await?;
        Ok(reply.resp)
    }

    /// Sends `items` grouped by region and cut by `batch`, one request per shard built by
    /// `build`, and returns each request's items with its answer. A shard too large for one
    /// Raft entry is halved until it fits.
    async fn fan_out<V, R>(
        &self,
        call: Call,
        items: Vec<Item<V>>,
        batch: BatchLimit,
        build: impl Fn(&[Item<V>]) -> R + Sync,
    ) -> Result<Vec<(Vec<Item<V>>, R::Response)>>
    where
        V: Clone + Sync + ItemSize,
        R: KvRequest,
    {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let sender = self.cluster.sender();
        let opts = sender_options();
        let mut bo = backoffer(call);
        let shards = sender
            .fan_out(
                &mut bo,
                self.cluster.fan_out_limit(),
                items,
                |i| i.route(),
                |i| i.encoded.len() + i.value.size(),
                batch,
                |location: KeyLocation, items: Vec<Item<V>>, mut bo: Backoffer| {
                    let build = &build;
                    let opts = &opts;
                    async move {
                        let mut done = Vec::new();
                        // Halves of a part TiKV found too large; the first part needs no list.
                        let mut todo = Vec::new();
                        let mut first = Some(items);
                        let mut relocate = Vec::new();
                        let mut relocate_error = None;
                        let mut had_rpc_error = false;
                        while let Some(part) = first.take().or_else(|| todo.pop()) {
                            let outcome = sender
                                .send_built(&mut bo, location.region(), opts, || build(&part))
                                .await;
                            match outcome {
                                Ok(RegionOutcome::Done(reply)) => done.push((part, reply.resp)),
                                Ok(RegionOutcome::Relocate {
                                    error,
                                    had_rpc_error: failed,
                                }) => {
                                    relocate.extend(part);
                                    relocate_error = Some(error);
                                    had_rpc_error |= failed;
                                }
                                Err(SendError {
                                    error: Error::Region(e),
                                    had_rpc_error: failed,
                                }) if matches!(
                                    e.kind,
                                    RegionErrorKind::RaftEntryTooLarge { .. }
                                ) && part.len() > 1 =>
                                {
                                    had_rpc_error |= failed;
                                    let mut part = part;
                                    let tail = part.split_off(part.len() / 2);
                                    todo.push(tail);
                                    todo.push(part);
                                }
                                Err(mut e) => {
                                    e.had_rpc_error |= had_rpc_error;
                                    return Err(e);
                                }
                            }
                        }
                        Ok(match relocate_error {
                            // Answers already in `done` stay valid; only the rest moves.
                            Some(error) if done.is_empty() => ShardOutcome::Relocate {
                                items: relocate,
                                error,
                                had_rpc_error,
                            },
                            Some(error) => ShardOutcome::Partial {
                                done,
                                items: relocate,
                                error,
                                had_rpc_error,
                            },
                            None => ShardOutcome::Done(done),
                        })
                    }
                },
            )
            .await?;
        Ok(shards.into_iter().flatten().collect())
    }
}

/// Matches the pairs of one RawBatchGet answer with the items of its request, putting each
/// found key (decoded by `decode`) and its value at the item's slot in `found`. Returns how
/// many slots it filled; a pair with an error fails the call.
///
/// TiKV answers the keys it found in the order they were asked for, a key asked twice twice,
/// so a forward walk over the items pairs them with one comparison per item. A pair the walk
/// does not find (out of order, or not asked for) is matched with every item of an equal key
/// still unanswered. Matched items give up their key buffer to the answer.
fn place_answers(
    asked: &mut [Item<Slot>],
    mut pairs: Vec<kvrpcpb::KvPair>,
    found: &mut [Option<KvPair>],
    decode: impl Fn(Bytes) -> Result<Key>,
) -> Result<usize> {
    let mut filled = 0;
    let mut next = 0;
    // Walked in place: a pair is a kilobyte wide (its inline key error), and only its key and
    // value are needed.
    for pair in &mut pairs {
        if let Some(e) = pair.error.take() {
            return Err(crate::rpc::KeyErr::from(e).into_error());
        }
        if let Some(offset) = asked[next..].iter().position(|i| i.encoded == pair.key) {
            let item = &mut asked[next + offset];
            next += offset + 1;
            let slot = &mut found[item.value.0];
            filled += usize::from(slot.is_none());
            *slot = Some(KvPair::new(
                decode(std::mem::take(&mut item.encoded))?,
                std::mem::take(&mut pair.value),
            ));
            continue;
        }
        // A matched item's buffer was taken: an empty key equals no pair's key.
        for item in asked.iter().filter(|i| i.encoded == pair.key) {
            let slot = &mut found[item.value.0];
            if slot.is_none() {
                filled += 1;
                *slot = Some(KvPair::new(
                    decode(item.encoded.clone())?,
                    pair.value.clone(),
                ));
            }
        }
    }
    Ok(filled)
}

/// The backoffer of one call: its budget is the call's retry budget as given (weight 1: the
/// public budget is already the total, client-go's 20 s times its default weight of 2). A zero
/// budget retries nothing (a backoffer's own zero would mean "no limit").
fn backoffer(call: Call) -> Backoffer {
    let bo = if call.budget.is_zero() {
        Backoffer::no_retry()
    } else {
        Backoffer::with_vars(call.budget, BackoffVars::default().with_weight(1))
    };
    // The call's deadline also bounds each attempt and each sleep, so a short deadline is not
    // spent waiting on one 30 s attempt (the sender cuts attempt timeouts to it).
    // A deadline too far to represent is no deadline.
    match call
        .timeout
        .and_then(|timeout| tokio::time::Instant::now().checked_add(timeout))
    {
        Some(deadline) => bo.with_deadline(deadline),
        None => bo,
    }
}

/// How the sender sends each attempt of a raw call.
fn sender_options() -> SenderCallOptions {
    SenderCallOptions::new(RAW_ATTEMPT_TIMEOUT)
}

/// A TTL as requests carry it: whole seconds, 0 for none. A TTL is rounded up to a whole
/// second (a shorter one would be 0, "never expires"), and a zero TTL is refused: leave the TTL
/// unset for a key that never expires.
#[derive(Debug, Clone, Copy, Default)]
struct Ttl(Option<Duration>);

impl Ttl {
    fn secs(self) -> Result<u64> {
        let Some(ttl) = self.0 else {
            return Ok(0);
        };
        if ttl.is_zero() {
            return Err(Error::invalid_argument(
                "a TTL of zero would mean no expiry: leave the TTL unset instead",
            ));
        }
        // Rounded up to whole seconds (TiKV's unit), never down to "no expiry".
        ttl.as_secs()
            .checked_add(u64::from(ttl.subsec_nanos() > 0))
            .ok_or_else(|| Error::invalid_argument("a TTL must fit in u64 seconds"))
    }
}

/// The TTLs of a batch put: none, one for every pair, or one per pair.
#[derive(Debug, Clone, Default)]
enum Ttls {
    #[default]
    None,
    All(Duration),
    Each(Vec<Duration>),
}

impl Ttls {
    /// The TTL of each of `pairs` pairs in seconds (empty: none has one).
    fn for_pairs(self, pairs: usize) -> Result<Vec<u64>> {
        match self {
            Ttls::None => Ok(Vec::new()),
            Ttls::All(ttl) => Ok(vec![Ttl(Some(ttl)).secs()?; pairs]),
            Ttls::Each(ttls) => {
                if ttls.len() != pairs {
                    return Err(Error::invalid_argument(format!(
                        "{pairs} pairs but {} TTLs",
                        ttls.len()
                    )));
                }
                ttls.into_iter().map(|t| Ttl(Some(t)).secs()).collect()
            }
        }
    }
}

/// The bytes an item adds to a request beyond its key.
trait ItemSize {
    fn size(&self) -> usize;
}

impl ItemSize for () {
    fn size(&self) -> usize {
        0
    }
}

impl ItemSize for Slot {
    fn size(&self) -> usize {
        0
    }
}

impl ItemSize for (Value, u64) {
    fn size(&self) -> usize {
        self.0.len()
    }
}

/// TiKV's raw errors come as text.
fn raw_error(error: &str) -> Result<()> {
    if error.is_empty() {
        Ok(())
    } else {
        Err(Error::server(error))
    }
}

fn check_key(key: &Key) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid_argument(
            "an empty key cannot be stored in TiKV",
        ));
    }
    if key.len() > MAX_KEY_SIZE {
        return Err(Error::KeyTooLarge {
            size: key.len(),
            limit: MAX_KEY_SIZE,
        });
    }
    Ok(())
}

fn check_entry(key: &Key, value: &Value) -> Result<()> {
    check_key(key)?;
    let size = (key.len() + value.len()) as u64;
    if size > MAX_ENTRY_SIZE {
        return Err(Error::EntryTooLarge {
            size,
            limit: MAX_ENTRY_SIZE,
        });
    }
    Ok(())
}

/// The end of a range request to one region: the range's end or the region's (as a wire
/// key), whichever comes first (an empty end is unbounded).
fn clamp_end(end: &Bytes, region_end: &Bytes) -> Bytes {
    if region_end.is_empty() {
        return end.clone();
    }
    if end.is_empty() || region_end < end {
        return region_end.clone();
    }
    end.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(keys: &[&str]) -> Vec<Item<Slot>> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| Item {
                encoded: Bytes::copy_from_slice(k.as_bytes()),
                route: None,
                value: Slot(i),
            })
            .collect()
    }

    fn pair(key: &str, value: &str) -> kvrpcpb::KvPair {
        kvrpcpb::KvPair {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..Default::default()
        }
    }

    fn place(
        asked: &[&str],
        pairs: Vec<kvrpcpb::KvPair>,
    ) -> (usize, Vec<Option<(String, String)>>) {
        let mut asked = items(asked);
        let mut found: Vec<Option<KvPair>> = (0..asked.len()).map(|_| None).collect();
        let filled = place_answers(&mut asked, pairs, &mut found, |k| Ok(Key::from(k))).unwrap();
        let found = found
            .into_iter()
            .map(|p| {
                p.map(|p| {
                    let (k, v) = p.into();
                    (
                        String::from_utf8(k.to_vec()).unwrap(),
                        String::from_utf8(v.to_vec()).unwrap(),
                    )
                })
            })
            .collect();
        (filled, found)
    }

    fn kv(k: &str, v: &str) -> Option<(String, String)> {
        Some((k.to_owned(), v.to_owned()))
    }

    #[test]
    fn answers_in_request_order_fill_their_own_slots() {
        // Unsorted, a duplicate, and keys TiKV did not find.
        let (filled, found) = place(
            &["q", "b", "missing", "q", "a"],
            vec![
                pair("q", "1"),
                pair("b", "2"),
                pair("q", "1"),
                pair("a", "3"),
            ],
        );
        assert_eq!(filled, 4);
        assert_eq!(
            found,
            vec![kv("q", "1"), kv("b", "2"), None, kv("q", "1"), kv("a", "3")]
        );
    }

    #[test]
    fn answers_out_of_order_fill_every_slot_of_their_key() {
        // A server answering in another order (here also once for the key asked twice): every
        // unanswered slot of an answered key is filled, as a lookup by key would.
        let (filled, found) = place(
            &["a", "b", "a", "c"],
            vec![pair("c", "3"), pair("a", "1"), pair("b", "2")],
        );
        assert_eq!(filled, 4);
        assert_eq!(
            found,
            vec![kv("a", "1"), kv("b", "2"), kv("a", "1"), kv("c", "3")]
        );
        // A pair nobody asked for is ignored.
        let (filled, found) = place(&["a"], vec![pair("zz", "9"), pair("a", "1")]);
        assert_eq!((filled, found), (1, vec![kv("a", "1")]));
    }

    #[test]
    fn a_key_error_in_an_answer_fails_the_call() {
        let mut asked = items(&["a"]);
        let mut found = vec![None];
        let bad = kvrpcpb::KvPair {
            error: Some(kvrpcpb::KeyError {
                abort: "boom".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(place_answers(&mut asked, vec![bad], &mut found, |k| Ok(Key::from(k))).is_err());
    }
}
