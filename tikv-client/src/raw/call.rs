//! The request builders of [`RawClient`]: one type per call, returned by the client's method
//! of the same name, holding the call's arguments and options until it is awaited.
//!
//! Each builder implements [`IntoFuture`]: `client.get(key).cf(cf).timeout(d).await`. The
//! options every builder has are `timeout` (the whole call's deadline) and `retry_budget`
//! (see [`CallOptions`]); those with a column family have `cf`; the rest are the call's own
//! (`ttl`, `limit`, `reverse`, `keys_only`). A call's option left unset takes its client's.
//!
//! Dropping a call's future before it finishes cancels it: the attempt in flight is
//! abandoned, nothing more is sent, and the client stays usable. A write whose request was
//! already sent may or may not have been applied.
//!
//! Awaiting a builder costs one allocation, the boxed future (stable Rust cannot name an
//! `async` block's type); it is measured with `benchmarks/raw.sh` (docs/benchmarks.md).
//!
//! Ports the option arguments of client-go `rawkv.Client`'s methods (`RawOption`,
//! `PutWithTTL`, `ScanKeyOnly`, `ReverseScan`).

use std::future::{Future, IntoFuture};
use std::time::Duration;

use super::scan::ScanShape;
use super::{Call, CasResult, Item, RawChecksum, RawClient, RawScanStream, Slot, Ttl, Ttls};
use crate::options::{CallFuture, CallOptions, ColumnFamily, with_deadline};
use crate::{BoundRange, Key, KvPair, Result, Value};

/// Boxes a call: merges its options with the client's, then runs `body` under the deadline.
fn start<'a, T, F>(
    client: &'a RawClient,
    cf: Option<ColumnFamily>,
    options: CallOptions,
    operation: &'static str,
    body: impl FnOnce(Call) -> F + Send + 'a,
) -> CallFuture<'a, T>
where
    F: Future<Output = Result<T>> + Send + 'a,
{
    Box::pin(async move {
        let call = client.call(cf, options)?;
        match call.timeout {
            // The common case holds the call's own future only: the deadline's timer (and the
            // room it takes in this boxed future, allocated for every call) only when asked.
            None => body(call).await,
            Some(_) => Box::pin(with_deadline(operation, call.timeout, body(call))).await,
        }
    })
}

/// `timeout` and `retry_budget`, with an example calling `$call`.
macro_rules! call_options {
    ($call:literal) => {
        /// The call's deadline (overrides the client's): when it passes, the call is
        /// cancelled and fails with [`Error::Timeout`](crate::Error::Timeout).
        ///
        /// ```no_run
        /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
        /// use std::time::Duration;
        #[doc = concat!("let _ = client.", $call, ".timeout(Duration::from_secs(1)).await?;")]
        /// # Ok(()) }
        /// ```
        pub fn timeout(mut self, timeout: Duration) -> Self {
            self.options.timeout = Some(timeout);
            self
        }

        /// The most the call may sleep between retries (overrides the client's); when it is
        /// spent the call fails with
        /// [`Error::BackoffExhausted`](crate::Error::BackoffExhausted).
        ///
        /// ```no_run
        /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
        /// use std::time::Duration;
        #[doc = concat!("let _ = client.", $call, ".retry_budget(Duration::from_secs(2)).await?;")]
        /// # Ok(()) }
        /// ```
        pub fn retry_budget(mut self, budget: Duration) -> Self {
            self.options.retry_budget = Some(budget);
            self
        }
    };
}

/// `cf`, with an example calling `$call`.
macro_rules! cf_option {
    ($call:literal) => {
        /// The column family of this call (overrides the client's).
        ///
        /// ```no_run
        /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
        /// use tikv_client::options::ColumnFamily;
        #[doc = concat!("let _ = client.", $call, ".cf(ColumnFamily::Write).await?;")]
        /// # Ok(()) }
        /// ```
        pub fn cf(mut self, cf: ColumnFamily) -> Self {
            self.cf = Some(cf);
            self
        }
    };
}

/// Implements [`IntoFuture`] for a builder.
macro_rules! into_future {
    ($builder:ident, $out:ty, |$this:ident| $body:expr) => {
        impl<'a> IntoFuture for $builder<'a> {
            type Output = Result<$out>;
            type IntoFuture = CallFuture<'a, $out>;

            fn into_future(self) -> Self::IntoFuture {
                let $this = self;
                $body
            }
        }
    };
}

// ----- single keys ---------------------------------------------------------------------------

/// [`RawClient::get`]: the value of a key.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let v = client.get("k").await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct Get<'a> {
    client: &'a RawClient,
    key: Key,
    cf: Option<ColumnFamily>,
    options: CallOptions,
}

impl Get<'_> {
    cf_option!("get(\"k\")");
    call_options!("get(\"k\")");
}

into_future!(Get, Option<Value>, |b| start(
    b.client,
    b.cf,
    b.options,
    "raw get",
    move |call| b.client.do_get(call, b.key)
));

/// [`RawClient::get_key_ttl`]: the time to live left to a key.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let ttl = client.get_key_ttl("k").await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct GetKeyTtl<'a> {
    client: &'a RawClient,
    key: Key,
    cf: Option<ColumnFamily>,
    options: CallOptions,
}

impl GetKeyTtl<'_> {
    cf_option!("get_key_ttl(\"k\")");
    call_options!("get_key_ttl(\"k\")");
}

into_future!(GetKeyTtl, Option<Duration>, |b| start(
    b.client,
    b.cf,
    b.options,
    "raw get_key_ttl",
    move |call| b.client.do_get_key_ttl(call, b.key)
));

/// [`RawClient::put`]: stores a value, optionally with a TTL.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// client.put("k", "v").await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct Put<'a> {
    client: &'a RawClient,
    key: Key,
    value: Value,
    ttl: Ttl,
    cf: Option<ColumnFamily>,
    options: CallOptions,
}

impl Put<'_> {
    /// The time to live of the pair, rounded up to whole seconds; unset: it never expires.
    /// TiKV must have TTL enabled (`storage.enable-ttl`, always on under API V2). A zero TTL
    /// is refused with [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// client.put("session", "token").ttl(Duration::from_secs(900)).await?;
    /// # Ok(()) }
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Ttl(Some(ttl));
        self
    }

    cf_option!("put(\"k\", \"v\")");
    call_options!("put(\"k\", \"v\")");
}

into_future!(Put, (), |b| start(
    b.client,
    b.cf,
    b.options,
    "raw put",
    move |call| b.client.do_put(call, b.key, b.value, b.ttl)
));

/// [`RawClient::delete`]: deletes a key.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// client.delete("k").await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct Delete<'a> {
    client: &'a RawClient,
    key: Key,
    cf: Option<ColumnFamily>,
    options: CallOptions,
}

impl Delete<'_> {
    cf_option!("delete(\"k\")");
    call_options!("delete(\"k\")");
}

into_future!(Delete, (), |b| start(
    b.client,
    b.cf,
    b.options,
    "raw delete",
    move |call| b.client.do_delete(call, b.key)
));

/// [`RawClient::compare_and_swap`]: replaces a value if it is the one expected.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let cas = client.compare_and_swap("k", Some("old"), "new").await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct CompareAndSwap<'a> {
    client: &'a RawClient,
    key: Key,
    previous: Option<Value>,
    new: Value,
    ttl: Ttl,
    cf: Option<ColumnFamily>,
    options: CallOptions,
}

impl CompareAndSwap<'_> {
    /// The time to live of the new value, as [`Put::ttl`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// let lease = client
    ///     .compare_and_swap("leader", None::<&str>, "me")
    ///     .ttl(Duration::from_secs(10))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Ttl(Some(ttl));
        self
    }

    cf_option!("compare_and_swap(\"k\", Some(\"old\"), \"new\")");
    call_options!("compare_and_swap(\"k\", Some(\"old\"), \"new\")");
}

into_future!(CompareAndSwap, CasResult, |b| start(
    b.client,
    b.cf,
    b.options,
    "raw compare_and_swap",
    move |call| b
        .client
        .do_compare_and_swap(call, b.key, b.previous, b.new, b.ttl)
));

// ----- batches -------------------------------------------------------------------------------

/// [`RawClient::batch_get`]: the values of several keys.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let pairs = client.batch_get(["a", "b"]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct BatchGet<'a> {
    client: &'a RawClient,
    /// The keys encoded when the builder was made (no copy of the caller's list is kept).
    items: Result<(Vec<Item<Slot>>, usize)>,
    cf: Option<ColumnFamily>,
    options: CallOptions,
}

impl BatchGet<'_> {
    cf_option!("batch_get([\"a\", \"b\"])");
    call_options!("batch_get([\"a\", \"b\"])");
}

into_future!(BatchGet, Vec<KvPair>, |b| start(
    b.client,
    b.cf,
    b.options,
    "raw batch_get",
    move |call| async move {
        let (items, count) = b.items?;
        b.client.do_batch_get(call, items, count).await
    }
));

/// [`RawClient::batch_put`]: stores several pairs.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// client.batch_put([("a", "1")]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct BatchPut<'a> {
    client: &'a RawClient,
    pairs: Vec<KvPair>,
    ttls: Ttls,
    cf: Option<ColumnFamily>,
    options: CallOptions,
}

impl BatchPut<'_> {
    /// One time to live for every pair, as [`Put::ttl`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// client.batch_put([("a", "1"), ("b", "2")]).ttl(Duration::from_secs(60)).await?;
    /// # Ok(()) }
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttls = Ttls::All(ttl);
        self
    }

    /// A time to live per pair, in the order of the pairs; a count that differs from the
    /// pairs' is refused with [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// client
    ///     .batch_put([("a", "1"), ("b", "2")])
    ///     .ttls([Duration::from_secs(60), Duration::from_secs(3600)])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn ttls(mut self, ttls: impl IntoIterator<Item = Duration>) -> Self {
        self.ttls = Ttls::Each(ttls.into_iter().collect());
        self
    }

    cf_option!("batch_put([(\"a\", \"1\")])");
    call_options!("batch_put([(\"a\", \"1\")])");
}

into_future!(BatchPut, (), |b| start(
    b.client,
    b.cf,
    b.options,
    "raw batch_put",
    move |call| b.client.do_batch_put(call, b.pairs, b.ttls)
));

/// [`RawClient::batch_delete`]: deletes several keys.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// client.batch_delete(["a", "b"]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct BatchDelete<'a> {
    client: &'a RawClient,
    items: Result<Vec<Item<()>>>,
    cf: Option<ColumnFamily>,
    options: CallOptions,
}

impl BatchDelete<'_> {
    cf_option!("batch_delete([\"a\", \"b\"])");
    call_options!("batch_delete([\"a\", \"b\"])");
}

into_future!(BatchDelete, (), |b| start(
    b.client,
    b.cf,
    b.options,
    "raw batch_delete",
    move |call| async move { b.client.do_batch_delete(call, b.items?).await }
));

// ----- ranges --------------------------------------------------------------------------------

/// [`RawClient::delete_range`]: deletes every key of a range.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// client.delete_range("a".."m").await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct DeleteRange<'a> {
    client: &'a RawClient,
    range: BoundRange,
    cf: Option<ColumnFamily>,
    options: CallOptions,
}

impl DeleteRange<'_> {
    cf_option!("delete_range(\"a\"..\"m\")");
    call_options!("delete_range(\"a\"..\"m\")");
}

into_future!(DeleteRange, (), |b| start(
    b.client,
    b.cf,
    b.options,
    "raw delete_range",
    move |call| b.client.do_delete_range(call, b.range)
));

/// [`RawClient::checksum`]: the checksum of a range (of the `default` column family: TiKV's
/// checksum request has no column family).
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let sum = client.checksum("a".."m").await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct Checksum<'a> {
    client: &'a RawClient,
    range: BoundRange,
    options: CallOptions,
}

impl Checksum<'_> {
    call_options!("checksum(\"a\"..\"m\")");
}

into_future!(Checksum, RawChecksum, |b| start(
    b.client,
    None,
    b.options,
    "raw checksum",
    move |call| b.client.do_checksum(call, b.range)
));

/// [`RawClient::scan`]: the pairs of a range, ascending (or descending with
/// [`reverse`](Scan::reverse)). Without a [`limit`](Scan::limit) it returns every pair of
/// the range.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let pairs = client.scan("a".."m").limit(10).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct Scan<'a> {
    client: &'a RawClient,
    range: BoundRange,
    shape: ScanShape,
    cf: Option<ColumnFamily>,
    options: CallOptions,
}

impl<'a> Scan<'a> {
    /// Returns at most `limit` pairs (at least 1; a larger limit than one request takes,
    /// [`MAX_RAW_SCAN_LIMIT`](super::MAX_RAW_SCAN_LIMIT), is sent as several requests).
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let first_ten = client.scan("user/"..).limit(10).await?;
    /// # Ok(()) }
    /// ```
    pub fn limit(mut self, limit: u32) -> Self {
        self.shape.limit = Some(limit);
        self
    }

    /// Scans from the end of the range down. The range is still given ascending; under API
    /// V1 it needs an end (TiKV cannot scan backwards from an unbounded end).
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let last_ten = client.scan("a".."z").reverse().limit(10).await?;
    /// # Ok(()) }
    /// ```
    pub fn reverse(mut self) -> Self {
        self.shape.reverse = true;
        self
    }

    /// Returns keys only: TiKV does not read the values, and the call's output becomes
    /// `Vec<Key>`, so no empty value can be mistaken for a stored one.
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let keys: Vec<tikv_client::Key> = client.scan("a".."z").keys_only().await?;
    /// # Ok(()) }
    /// ```
    pub fn keys_only(self) -> ScanKeys<'a> {
        ScanKeys {
            inner: Scan {
                shape: ScanShape {
                    key_only: true,
                    ..self.shape
                },
                ..self
            },
        }
    }

    cf_option!("scan(\"a\"..\"m\")");
    call_options!("scan(\"a\"..\"m\")");
}

into_future!(Scan, Vec<KvPair>, |b| start(
    b.client,
    b.cf,
    b.options,
    "raw scan",
    move |call| b.client.do_scan(call, b.range, b.shape)
));

/// [`Scan::keys_only`]: the keys of a range, values not read.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let keys = client.scan("a".."m").keys_only().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct ScanKeys<'a> {
    inner: Scan<'a>,
}

impl ScanKeys<'_> {
    /// As [`Scan::limit`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let keys = client.scan("a"..).keys_only().limit(10).await?;
    /// # Ok(()) }
    /// ```
    pub fn limit(mut self, limit: u32) -> Self {
        self.inner.shape.limit = Some(limit);
        self
    }

    /// As [`Scan::reverse`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let keys = client.scan("a".."z").keys_only().reverse().await?;
    /// # Ok(()) }
    /// ```
    pub fn reverse(mut self) -> Self {
        self.inner.shape.reverse = true;
        self
    }

    /// As [`Scan::cf`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// use tikv_client::options::ColumnFamily;
    /// let keys = client.scan(..).keys_only().cf(ColumnFamily::Lock).await?;
    /// # Ok(()) }
    /// ```
    pub fn cf(mut self, cf: ColumnFamily) -> Self {
        self.inner.cf = Some(cf);
        self
    }

    /// As [`Scan::timeout`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// let keys = client.scan(..).keys_only().timeout(Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.inner.options.timeout = Some(timeout);
        self
    }

    /// As [`Scan::retry_budget`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// let keys = client.scan(..).keys_only().retry_budget(Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.inner.options.retry_budget = Some(budget);
        self
    }
}

into_future!(ScanKeys, Vec<Key>, |b| {
    let b = b.inner;
    start(b.client, b.cf, b.options, "raw scan", move |call| {
        b.client.do_scan_keys(call, b.range, b.shape)
    })
});

/// [`RawClient::batch_scan`]: the pairs of several ranges, ranges in the order given.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let pairs = client.batch_scan(["a".."b", "x".."y"]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct BatchScan<'a> {
    client: &'a RawClient,
    ranges: Vec<BoundRange>,
    shape: ScanShape,
    cf: Option<ColumnFamily>,
    options: CallOptions,
}

impl<'a> BatchScan<'a> {
    /// Returns at most `limit` pairs of each range (unset: all of them).
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let pairs = client.batch_scan(["a".."b", "x".."y"]).each_limit(5).await?;
    /// # Ok(()) }
    /// ```
    pub fn each_limit(mut self, limit: u32) -> Self {
        self.shape.limit = Some(limit);
        self
    }

    /// Returns keys only; the output becomes `Vec<Key>` (see [`Scan::keys_only`]).
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let keys = client.batch_scan(["a".."b", "x".."y"]).keys_only().await?;
    /// # Ok(()) }
    /// ```
    pub fn keys_only(mut self) -> BatchScanKeys<'a> {
        self.shape.key_only = true;
        BatchScanKeys { inner: self }
    }

    cf_option!("batch_scan([\"a\"..\"b\"])");
    call_options!("batch_scan([\"a\"..\"b\"])");
}

into_future!(BatchScan, Vec<KvPair>, |b| start(
    b.client,
    b.cf,
    b.options,
    "raw batch_scan",
    move |call| async move {
        let kvs = b.client.do_batch_scan(call, b.ranges, b.shape).await?;
        b.client.to_pairs(kvs)
    }
));

/// [`BatchScan::keys_only`]: the keys of several ranges.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let keys = client.batch_scan(["a".."b"]).keys_only().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a call does nothing until it is awaited"]
pub struct BatchScanKeys<'a> {
    inner: BatchScan<'a>,
}

impl BatchScanKeys<'_> {
    /// As [`BatchScan::each_limit`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let keys = client.batch_scan(["a".."b"]).keys_only().each_limit(3).await?;
    /// # Ok(()) }
    /// ```
    pub fn each_limit(mut self, limit: u32) -> Self {
        self.inner.shape.limit = Some(limit);
        self
    }

    /// As [`BatchScan::cf`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// use tikv_client::options::ColumnFamily;
    /// let keys = client.batch_scan(["a".."b"]).keys_only().cf(ColumnFamily::Write).await?;
    /// # Ok(()) }
    /// ```
    pub fn cf(mut self, cf: ColumnFamily) -> Self {
        self.inner.cf = Some(cf);
        self
    }

    /// As [`BatchScan::timeout`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// let keys = client.batch_scan(["a".."b"]).keys_only().timeout(Duration::from_secs(1)).await?;
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.inner.options.timeout = Some(timeout);
        self
    }

    /// As [`BatchScan::retry_budget`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// use std::time::Duration;
    /// let keys = client
    ///     .batch_scan(["a".."b"])
    ///     .keys_only()
    ///     .retry_budget(Duration::from_secs(1))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.inner.options.retry_budget = Some(budget);
        self
    }
}

into_future!(BatchScanKeys, Vec<Key>, |b| {
    let b = b.inner;
    start(
        b.client,
        b.cf,
        b.options,
        "raw batch_scan",
        move |call| async move {
            let kvs = b.client.do_batch_scan(call, b.ranges, b.shape).await?;
            kvs.into_iter()
                .map(|kv| b.client.decode_key(kv.key))
                .collect()
        },
    )
});

/// [`RawClient::scan_stream`]: every pair of a range as a stream
/// ([`into_stream`](ScanStream::into_stream)). Its `timeout` and `retry_budget` apply to each
/// page of the stream, not to the whole scan.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) {
/// let stream = client.scan_stream("a"..).into_stream();
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a stream does nothing until it is made and polled"]
pub struct ScanStream<'a> {
    client: &'a RawClient,
    range: BoundRange,
    cf: Option<ColumnFamily>,
    options: CallOptions,
}

impl ScanStream<'_> {
    /// The column family of the scan (overrides the client's).
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) {
    /// use tikv_client::options::ColumnFamily;
    /// let stream = client.scan_stream(..).cf(ColumnFamily::Write).into_stream();
    /// # }
    /// ```
    pub fn cf(mut self, cf: ColumnFamily) -> Self {
        self.cf = Some(cf);
        self
    }

    /// The deadline of each page (overrides the client's): a page that takes longer ends the
    /// stream with [`Error::Timeout`](crate::Error::Timeout).
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) {
    /// use std::time::Duration;
    /// let stream = client.scan_stream(..).timeout(Duration::from_secs(1)).into_stream();
    /// # }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// The retry budget of each page (overrides the client's).
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) {
    /// use std::time::Duration;
    /// let stream = client.scan_stream(..).retry_budget(Duration::from_secs(5)).into_stream();
    /// # }
    /// ```
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.options.retry_budget = Some(budget);
        self
    }

    /// The stream: pairs ascending, fetched page by page as it is polled; an error ends it.
    /// It owns a clone of the client, so it may outlive the builder's borrow.
    ///
    /// ```no_run
    /// use futures_util::StreamExt;
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let pairs: Vec<_> = client.scan_stream("a"..).into_stream().collect().await;
    /// # Ok(()) }
    /// ```
    pub fn into_stream(self) -> RawScanStream {
        let call = self.client.call(self.cf, self.options);
        self.client.do_scan_stream(call, self.range)
    }
}

// ----- the client's methods ------------------------------------------------------------------

impl RawClient {
    /// The value of `key`, or `None`. Options: [`Get`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// if let Some(value) = client.get("user/42").await? {
    ///     println!("{value:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn get(&self, key: impl Into<Key>) -> Get<'_> {
        Get {
            client: self,
            key: key.into(),
            cf: None,
            options: CallOptions::default(),
        }
    }

    /// The time to live left to `key` (rounded to seconds by TiKV; `Duration::ZERO` for a
    /// key stored without a TTL), or `None` if it does not exist. Options: [`GetKeyTtl`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// match client.get_key_ttl("session").await? {
    ///     None => println!("gone"),
    ///     Some(ttl) if ttl.is_zero() => println!("never expires"),
    ///     Some(ttl) => println!("expires in {ttl:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn get_key_ttl(&self, key: impl Into<Key>) -> GetKeyTtl<'_> {
        GetKeyTtl {
            client: self,
            key: key.into(),
            cf: None,
            options: CallOptions::default(),
        }
    }

    /// Stores `value` under `key`. Options: [`Put`] (a TTL with [`Put::ttl`]).
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let name = String::from("Ada");
    /// client.put("user/1", name.as_str()).await?;
    /// client.put(b"bin".to_vec(), vec![0u8, 1, 2]).await?;
    /// # Ok(()) }
    /// ```
    pub fn put(&self, key: impl Into<Key>, value: impl Into<Value>) -> Put<'_> {
        Put {
            client: self,
            key: key.into(),
            value: value.into(),
            ttl: Ttl::default(),
            cf: None,
            options: CallOptions::default(),
        }
    }

    /// Deletes `key` (no error if it does not exist). Options: [`Delete`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// client.delete("user/1").await?;
    /// # Ok(()) }
    /// ```
    pub fn delete(&self, key: impl Into<Key>) -> Delete<'_> {
        Delete {
            client: self,
            key: key.into(),
            cf: None,
            options: CallOptions::default(),
        }
    }

    /// Atomically replaces the value of `key` with `new` if its current value is `previous`
    /// (`None`: the key must not exist), and says what it found and whether it swapped.
    /// Requires atomic mode ([`RawClientBuilder::atomic`](super::RawClientBuilder::atomic)).
    /// Options: [`CompareAndSwap`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let cas = client.compare_and_swap("counter", Some("1"), "2").await?;
    /// if cas.swapped {
    ///     println!("1 -> 2");
    /// } else {
    ///     println!("it was {:?}", cas.previous);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn compare_and_swap(
        &self,
        key: impl Into<Key>,
        previous: Option<impl Into<Value>>,
        new: impl Into<Value>,
    ) -> CompareAndSwap<'_> {
        CompareAndSwap {
            client: self,
            key: key.into(),
            previous: previous.map(Into::into),
            new: new.into(),
            ttl: Ttl::default(),
            cf: None,
            options: CallOptions::default(),
        }
    }

    /// The pairs of the keys that exist, in the order of `keys` (a key given twice appears
    /// twice). Options: [`BatchGet`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// for pair in client.batch_get(["a", "b", "c"]).await? {
    ///     println!("{:?} = {:?}", pair.key(), pair.value());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn batch_get(&self, keys: impl IntoIterator<Item = impl Into<Key>>) -> BatchGet<'_> {
        BatchGet {
            client: self,
            items: self.batch_get_items(keys),
            cf: None,
            options: CallOptions::default(),
        }
    }

    /// Stores every pair. Options: [`BatchPut`] (TTLs with [`BatchPut::ttl`] or
    /// [`BatchPut::ttls`]).
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// client.batch_put([("a", "1"), ("b", "2")]).await?;
    /// # Ok(()) }
    /// ```
    pub fn batch_put(&self, pairs: impl IntoIterator<Item = impl Into<KvPair>>) -> BatchPut<'_> {
        BatchPut {
            client: self,
            pairs: pairs.into_iter().map(Into::into).collect(),
            ttls: Ttls::None,
            cf: None,
            options: CallOptions::default(),
        }
    }

    /// Deletes every key. Options: [`BatchDelete`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// client.batch_delete(["a", "b"]).await?;
    /// # Ok(()) }
    /// ```
    pub fn batch_delete(&self, keys: impl IntoIterator<Item = impl Into<Key>>) -> BatchDelete<'_> {
        BatchDelete {
            client: self,
            items: self.encode_items(keys.into_iter().map(|k| (k.into(), ()))),
            cf: None,
            options: CallOptions::default(),
        }
    }

    /// Deletes every key in `range`, region by region. Options: [`DeleteRange`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// client.delete_range("tmp/".."tmp0").await?;
    /// # Ok(()) }
    /// ```
    pub fn delete_range(&self, range: impl Into<BoundRange>) -> DeleteRange<'_> {
        DeleteRange {
            client: self,
            range: range.into(),
            cf: None,
            options: CallOptions::default(),
        }
    }

    /// The checksum of every pair in `range`. Options: [`Checksum`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let sum = client.checksum(..).await?;
    /// # Ok(()) }
    /// ```
    pub fn checksum(&self, range: impl Into<BoundRange>) -> Checksum<'_> {
        Checksum {
            client: self,
            range: range.into(),
            options: CallOptions::default(),
        }
    }

    /// The pairs of `range`, ascending: all of them unless limited. Options: [`Scan`]
    /// (`limit`, `reverse`, `keys_only`, `cf`, `timeout`, `retry_budget`).
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let pairs = client.scan("a".."m").limit(100).await?;
    /// let newest_keys = client.scan("a".."m").reverse().limit(5).keys_only().await?;
    /// # Ok(()) }
    /// ```
    pub fn scan(&self, range: impl Into<BoundRange>) -> Scan<'_> {
        Scan {
            client: self,
            range: range.into(),
            shape: ScanShape {
                limit: None,
                reverse: false,
                key_only: false,
            },
            cf: None,
            options: CallOptions::default(),
        }
    }

    /// The pairs of every range, ranges in the order given. Options: [`BatchScan`].
    ///
    /// ```no_run
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let pairs = client.batch_scan(["a".."c", "x".."z"]).each_limit(10).await?;
    /// # Ok(()) }
    /// ```
    pub fn batch_scan(
        &self,
        ranges: impl IntoIterator<Item = impl Into<BoundRange>>,
    ) -> BatchScan<'_> {
        BatchScan {
            client: self,
            ranges: ranges.into_iter().map(Into::into).collect(),
            shape: ScanShape {
                limit: None,
                reverse: false,
                key_only: false,
            },
            cf: None,
            options: CallOptions::default(),
        }
    }

    /// Every pair of `range`, ascending, as a stream fetched page by page
    /// ([`ScanStream::into_stream`]); no limit. Options: [`ScanStream`].
    ///
    /// ```no_run
    /// use futures_util::TryStreamExt;
    /// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
    /// let mut stream = client.scan_stream(..).into_stream();
    /// while let Some(pair) = stream.try_next().await? {
    ///     println!("{:?}", pair.key());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn scan_stream(&self, range: impl Into<BoundRange>) -> ScanStream<'_> {
        ScanStream {
            client: self,
            range: range.into(),
            cf: None,
            options: CallOptions::default(),
        }
    }
}
