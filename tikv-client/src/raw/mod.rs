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
//! Ports client-go `rawkv/rawkv.go`. Bad input (empty or oversized keys, oversized entries,
//! scan limits of 0 or over [`MAX_RAW_SCAN_LIMIT`], reversed ranges, batches of mismatched
//! lengths) is refused with [`Error::InvalidArgument`], [`Error::KeyTooLarge`] or
//! [`Error::EntryTooLarge`] before anything is sent.

mod scan;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::kvrpcpb;

use crate::cluster::Cluster;
use crate::codec::{ApiCodec, KeyMode};
use crate::config::Config;
use crate::error::RegionErrorKind;
use crate::locate::KeyLocation;
use crate::request::Backoffer;
use crate::request::dispatch::{BatchLimit, LocateBy, ShardOutcome};
use crate::request::sender::{CallOptions, RegionOutcome, SendError};
use crate::rpc::{ContextTemplate, KvRequest};
use crate::{BoundRange, Error, Key, KvPair, Result, Value};

pub use scan::RawScanStream;

/// The largest `limit` a raw scan takes in one call (client-go `MaxRawKVScanLimit`);
/// [`RawClient::scan_stream`] has no limit.
pub const MAX_RAW_SCAN_LIMIT: u32 = 10240;
/// TiKV's default `storage.max-key-size`: longer keys are refused.
pub const MAX_KEY_SIZE: usize = 8 * 1024;
/// TiKV's default `raftstore.raft-entry-max-size`: a single key and value larger than this can
/// never be written.
pub const MAX_ENTRY_SIZE: u64 = 8 * 1024 * 1024;
/// Keys per RawBatchGet / RawBatchDelete request (client-go `rawBatchPairCount`).
const RAW_BATCH_PAIR_COUNT: usize = 512;
/// Bytes per RawBatchPut request (client-go `rawBatchPutSize`).
const RAW_BATCH_PUT_SIZE: usize = 16 * 1024;
/// The backoff budget of one raw call (client-go `rawkvMaxBackoff`).
const RAW_MAX_BACKOFF: Duration = Duration::from_secs(20);
/// How long one attempt waits for its answer (client-go `ReadTimeoutShort`).
const RAW_TIMEOUT: Duration = Duration::from_secs(30);

/// The key format of a client (TiKV's `storage.api-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ApiVersion {
    /// Keys are stored as given; no keyspaces.
    #[default]
    V1,
    /// Keys are stored inside a keyspace (prefix `r` + 3-byte keyspace id for raw keys).
    V2,
}

/// What [`RawClient::checksum`] computes over a range (TiKV's CRC64-XOR checksum).
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

/// Builds a [`RawClient`].
#[derive(Debug)]
pub struct RawClientBuilder {
    target: Target,
    config: Config,
    api_version: ApiVersion,
    keyspace: Option<String>,
    column_family: String,
    atomic: bool,
}

#[derive(Debug)]
enum Target {
    Endpoints(Vec<String>),
    Cluster(Cluster),
}

impl RawClientBuilder {
    /// The configuration (ignored when building on an existing [`Cluster`], which has its own).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// TLS settings (shorthand for setting `config.security`).
    pub fn security(mut self, security: crate::Security) -> Self {
        self.config.security = security;
        self
    }

    /// The API version; V1 by default. V2 uses the keyspace given with
    /// [`keyspace`](RawClientBuilder::keyspace), or PD's default keyspace.
    pub fn api_version(mut self, version: ApiVersion) -> Self {
        self.api_version = version;
        self
    }

    /// The keyspace (API V2 only): resolved through PD when the client is built.
    pub fn keyspace(mut self, name: impl Into<String>) -> Self {
        self.keyspace = Some(name.into());
        self
    }

    /// The column family every call uses unless told otherwise (`default` if unset).
    pub fn column_family(mut self, cf: impl Into<String>) -> Self {
        self.column_family = cf.into();
        self
    }

    /// Atomic mode: writes go through TiKV's latches so they are atomic with
    /// [`RawClient::compare_and_swap`], which requires it. Every client writing the same keys
    /// must agree on it.
    pub fn atomic(mut self, atomic: bool) -> Self {
        self.atomic = atomic;
        self
    }

    /// Connects (unless built on a cluster), resolves the keyspace and returns the client.
    ///
    /// Errors: [`Error::KeyspaceNotFound`] / [`Error::KeyspaceNotEnabled`] for an unknown or
    /// disabled keyspace; [`Error::InvalidArgument`] for a keyspace without API V2; PD's errors.
    pub async fn build(self) -> Result<RawClient> {
        if self.keyspace.is_some() && self.api_version != ApiVersion::V2 {
            return Err(Error::invalid_argument(
                "a keyspace needs API V2 (RawClientBuilder::api_version)",
            ));
        }
        let owns_cluster = matches!(self.target, Target::Endpoints(_));
        let cluster = match self.target {
            Target::Cluster(cluster) => cluster,
            Target::Endpoints(endpoints) => Cluster::connect(endpoints, self.config).await?,
        };
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
                cf: self.column_family,
                atomic: self.atomic,
            }),
        })
    }
}

/// A raw key-value client. Cheap to clone; clones share everything.
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
    cf: String,
    atomic: bool,
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
    pub fn builder(pd_endpoints: impl IntoIterator<Item = impl AsRef<str>>) -> RawClientBuilder {
        RawClientBuilder {
            target: Target::Endpoints(
                pd_endpoints
                    .into_iter()
                    .map(|e| e.as_ref().to_owned())
                    .collect(),
            ),
            config: Config::default(),
            api_version: ApiVersion::V1,
            keyspace: None,
            column_family: String::new(),
            atomic: false,
        }
    }

    /// A builder for a client sharing `cluster` with other clients.
    pub fn builder_on(cluster: &Cluster) -> RawClientBuilder {
        RawClientBuilder {
            target: Target::Cluster(cluster.clone()),
            config: cluster.config().clone(),
            api_version: ApiVersion::V1,
            keyspace: None,
            column_family: String::new(),
            atomic: false,
        }
    }

    /// Connects with the default configuration and API V1.
    pub async fn new(pd_endpoints: impl IntoIterator<Item = impl AsRef<str>>) -> Result<RawClient> {
        Self::builder(pd_endpoints).build().await
    }

    /// The cluster this client runs on.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// A client like this one using column family `cf`.
    pub fn with_cf(&self, cf: impl Into<String>) -> RawClient {
        self.derive(|inner| inner.cf = cf.into())
    }

    /// A client like this one in or out of atomic mode.
    pub fn with_atomic_for_cas(&self, atomic: bool) -> RawClient {
        self.derive(|inner| inner.atomic = atomic)
    }

    fn derive(&self, change: impl FnOnce(&mut RawInner)) -> RawClient {
        let mut inner = RawInner {
            codec: self.inner.codec.clone(),
            context: self.inner.context.clone(),
            cf: self.inner.cf.clone(),
            atomic: self.inner.atomic,
        };
        change(&mut inner);
        RawClient {
            cluster: self.cluster.clone(),
            inner: Arc::new(inner),
        }
    }

    // ----- single keys -----------------------------------------------------------------------

    /// The value of `key`, or `None`.
    pub async fn get(&self, key: impl Into<Key>) -> Result<Option<Value>> {
        let key = self.encode_key(key.into())?;
        let resp = self
            .send_single(&key, || kvrpcpb::RawGetRequest {
                context: Some(self.inner.context.clone()),
                key: key.clone(),
                cf: self.inner.cf.clone(),
            })
            .await?;
        raw_error(&resp.error)?;
        Ok((!resp.not_found).then_some(resp.value))
    }

    /// The remaining time to live of `key` in seconds (0: no TTL), or `None` if it does not
    /// exist.
    pub async fn get_key_ttl(&self, key: impl Into<Key>) -> Result<Option<u64>> {
        let key = self.encode_key(key.into())?;
        let req = kvrpcpb::RawGetKeyTtlRequest {
            context: Some(self.inner.context.clone()),
            key,
            cf: self.inner.cf.clone(),
        };
        let resp = self.send_single(&req.key, || req.clone()).await?;
        raw_error(&resp.error)?;
        Ok((!resp.not_found).then_some(resp.ttl))
    }

    /// Stores `value` under `key`.
    pub async fn put(&self, key: impl Into<Key>, value: impl Into<Value>) -> Result<()> {
        self.put_with_ttl(key, value, 0).await
    }

    /// Stores `value` under `key` for `ttl_secs` seconds (0: forever). TiKV must have TTL
    /// enabled (`storage.enable-ttl`) for a non-zero TTL.
    pub async fn put_with_ttl(
        &self,
        key: impl Into<Key>,
        value: impl Into<Value>,
        ttl_secs: u64,
    ) -> Result<()> {
        let key = key.into();
        let value = value.into();
        check_entry(&key, &value)?;
        let key = self.encode_key(key)?;
        let resp = self
            .send_single(&key, || kvrpcpb::RawPutRequest {
                context: Some(self.inner.context.clone()),
                key: key.clone(),
                value: value.clone(),
                cf: self.inner.cf.clone(),
                ttl: ttl_secs,
                for_cas: self.inner.atomic,
            })
            .await?;
        raw_error(&resp.error)
    }

    /// Deletes `key` (no error if it does not exist).
    pub async fn delete(&self, key: impl Into<Key>) -> Result<()> {
        let key = self.encode_key(key.into())?;
        let resp = self
            .send_single(&key, || kvrpcpb::RawDeleteRequest {
                context: Some(self.inner.context.clone()),
                key: key.clone(),
                cf: self.inner.cf.clone(),
                for_cas: self.inner.atomic,
            })
            .await?;
        raw_error(&resp.error)
    }

    /// Atomically replaces the value of `key` with `new` if its current value is `previous`
    /// (`None`: the key must not exist). Returns the value found and whether the swap happened.
    /// Requires atomic mode ([`RawClientBuilder::atomic`]).
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Key>,
        previous: Option<Value>,
        new: impl Into<Value>,
    ) -> Result<(Option<Value>, bool)> {
        if !self.inner.atomic {
            return Err(Error::invalid_argument(
                "compare_and_swap needs atomic mode (RawClientBuilder::atomic(true))",
            ));
        }
        let key = key.into();
        let new = new.into();
        check_entry(&key, &new)?;
        let key = self.encode_key(key)?;
        let req = kvrpcpb::RawCasRequest {
            context: Some(self.inner.context.clone()),
            key,
            value: new,
            previous_not_exist: previous.is_none(),
            previous_value: previous.unwrap_or_default(),
            cf: self.inner.cf.clone(),
            ttl: 0,
            delete: false,
        };
        let resp = self.send_single(&req.key, || req.clone()).await?;
        raw_error(&resp.error)?;
        let found = (!resp.previous_not_exist).then_some(resp.previous_value);
        Ok((found, resp.succeed))
    }

    // ----- batches ---------------------------------------------------------------------------

    /// The pairs of the keys that exist, in the order of `keys` (a key given twice appears
    /// twice).
    ///
    /// Each key carries its position in `keys`, and each answer is matched with the keys of
    /// the request it answers: TiKV answers the keys it found in the order they were asked
    /// for (a key asked twice, twice), so one forward walk pairs them; an answer out of that
    /// order is matched by a search of the request's keys instead. The keys returned are the
    /// request's, decoded (under API V1, the caller's own buffers).
    pub async fn batch_get(
        &self,
        keys: impl IntoIterator<Item = impl Into<Key>>,
    ) -> Result<Vec<KvPair>> {
        let keys = keys.into_iter();
        let mut count = 0;
        let items = self.encode_items(keys.map(|key| {
            count += 1;
            (key.into(), Slot(count - 1))
        }))?;
        let cf = &self.inner.cf;
        let answers = self
            .fan_out(items, BatchLimit::keys(RAW_BATCH_PAIR_COUNT), |items| {
                kvrpcpb::RawBatchGetRequest {
                    context: Some(self.inner.context.clone()),
                    keys: items.iter().map(|i| i.encoded.clone()).collect(),
                    cf: cf.clone(),
                }
            })
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

    /// Stores every pair.
    pub async fn batch_put(
        &self,
        pairs: impl IntoIterator<Item = impl Into<KvPair>>,
    ) -> Result<()> {
        self.batch_put_inner(pairs.into_iter().map(|p| (p.into(), 0)).collect())
            .await
    }

    /// Stores every pair with its own TTL in seconds (`ttls` aligned with `pairs`).
    pub async fn batch_put_with_ttl(
        &self,
        pairs: impl IntoIterator<Item = impl Into<KvPair>>,
        ttls: impl IntoIterator<Item = u64>,
    ) -> Result<()> {
        let pairs: Vec<KvPair> = pairs.into_iter().map(Into::into).collect();
        let ttls: Vec<u64> = ttls.into_iter().collect();
        if pairs.len() != ttls.len() {
            return Err(Error::invalid_argument(format!(
                "{} pairs but {} TTLs",
                pairs.len(),
                ttls.len()
            )));
        }
        self.batch_put_inner(pairs.into_iter().zip(ttls).collect())
            .await
    }

    async fn batch_put_inner(&self, pairs: Vec<(KvPair, u64)>) -> Result<()> {
        for (pair, _) in &pairs {
            check_entry(pair.key(), pair.value())?;
        }
        let with_ttl = pairs.iter().any(|(_, ttl)| *ttl != 0);
        let items = self.encode_items(pairs.into_iter().map(|(pair, ttl)| {
            let (key, value) = pair.into_parts();
            (key, (value, ttl))
        }))?;
        let cf = &self.inner.cf;
        let atomic = self.inner.atomic;
        let answers = self
            .fan_out(
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
                            value: i.value.0.clone(),
                            ..Default::default()
                        })
                        .collect(),
                    cf: cf.clone(),
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

    /// Deletes every key.
    pub async fn batch_delete(&self, keys: impl IntoIterator<Item = impl Into<Key>>) -> Result<()> {
        let items = self.encode_items(keys.into_iter().map(|k| (k.into(), ())))?;
        let cf = &self.inner.cf;
        let atomic = self.inner.atomic;
        let answers = self
            .fan_out(items, BatchLimit::keys(RAW_BATCH_PAIR_COUNT), |items| {
                kvrpcpb::RawBatchDeleteRequest {
                    context: Some(self.inner.context.clone()),
                    keys: items.iter().map(|i| i.encoded.clone()).collect(),
                    cf: cf.clone(),
                    for_cas: atomic,
                }
            })
            .await?;
        answers.iter().try_for_each(|(_, r)| raw_error(&r.error))
    }

    /// Deletes every key in `range`, region by region.
    pub async fn delete_range(&self, range: impl Into<BoundRange>) -> Result<()> {
        let (mut start, end) = self.encode_range(range.into())?;
        let mut bo = self.backoffer();
        while end.is_empty() || start < end {
            let (reply, location) = self
                .cluster
                .sender()
                .send_by_key(
                    &mut bo,
                    &self.route_key(&start),
                    LocateBy::Key,
                    &self.call_options(),
                    |loc| {
                        Ok(kvrpcpb::RawDeleteRangeRequest {
                            context: Some(self.inner.context.clone()),
                            start_key: start.clone(),
                            end_key: clamp_end(&end, &self.wire_bound(loc.end_key())?),
                            cf: self.inner.cf.clone(),
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

    /// The checksum of every pair in `range`.
    pub async fn checksum(&self, range: impl Into<BoundRange>) -> Result<RawChecksum> {
        let (mut start, end) = self.encode_range(range.into())?;
        let mut bo = self.backoffer();
        let mut sum = RawChecksum::default();
        while end.is_empty() || start < end {
            let (reply, location) = self
                .cluster
                .sender()
                .send_by_key(
                    &mut bo,
                    &self.route_key(&start),
                    LocateBy::Key,
                    &self.call_options(),
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

    fn backoffer(&self) -> Backoffer {
        Backoffer::new(RAW_MAX_BACKOFF)
    }

    fn call_options(&self) -> CallOptions {
        CallOptions::new(RAW_TIMEOUT)
    }

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
        key: &Bytes,
        build: impl Fn() -> R + Sync,
    ) -> Result<R::Response> {
        let mut bo = self.backoffer();
        let opts = self.call_options();
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
        let opts = self.call_options();
        let mut bo = self.backoffer();
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
                        while let Some(part) = first.take().or_else(|| todo.pop()) {
                            let outcome = sender
                                .send_built(&mut bo, location.region(), opts, || build(&part))
                                .await;
                            match outcome {
                                Ok(RegionOutcome::Done(reply)) => done.push((part, reply.resp)),
                                Ok(RegionOutcome::Relocate { error, .. }) => {
                                    relocate.extend(part);
                                    relocate_error = Some(error);
                                }
                                Err(SendError {
                                    error: Error::Region(e),
                                    ..
                                }) if matches!(
                                    e.kind,
                                    RegionErrorKind::RaftEntryTooLarge { .. }
                                ) && part.len() > 1 =>
                                {
                                    let mut part = part;
                                    let tail = part.split_off(part.len() / 2);
                                    todo.push(tail);
                                    todo.push(part);
                                }
                                Err(e) => return Err(e.into()),
                            }
                        }
                        Ok(match relocate_error {
                            // Answers already in `done` stay valid; only the rest moves.
                            Some(error) if done.is_empty() => ShardOutcome::Relocate {
                                items: relocate,
                                error,
                            },
                            Some(error) => ShardOutcome::Partial {
                                done,
                                items: relocate,
                                error,
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
