//! Raw scans: forward and reverse, key-only, several ranges at once, and as a stream.
//!
//! A scan is sent in pages of at most [`MAX_RAW_SCAN_LIMIT`] pairs, so its limit may be larger
//! or unset (the whole range). Each page walks the regions of its range in order (descending for reverse scans), sending
//! one RawScan per region with the range cut at the region's bounds, until the limit is reached
//! or the range ends. A region that splits or moves while being scanned is located again and
//! the same step is resent, so no key is skipped or repeated.
//!
//! Ports client-go `rawkv.Client.Scan` / `ReverseScan` (whose limit is capped at
//! `MaxRawKVScanLimit`; here it is the page size); the stream has no client-go counterpart
//! (client-rust users rely on it) and has no limit.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{self, Stream, StreamExt};
use tikv_proto::kvrpcpb;

use super::{Call, MAX_RAW_SCAN_LIMIT, RawClient, backoffer, clamp_end, sender_options};
use crate::options::with_deadline;
use crate::request::Backoffer;
use crate::request::dispatch::LocateBy;
use crate::{BoundRange, Error, Key, KvPair, Result};

/// Pairs per request of [`RawClient::scan_stream`].
const STREAM_PAGE: u32 = 1024;

/// The pairs of a range, fetched page by page as they are consumed
/// ([`RawClient::scan_stream`]). Dropping it stops the scan.
///
/// ```no_run
/// use futures_util::TryStreamExt;
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let mut pairs = client.scan_stream("a".."z").into_stream();
/// while let Some(pair) = pairs.try_next().await? {
///     println!("{:?}", pair.key());
/// }
/// # Ok(()) }
/// ```
pub struct RawScanStream {
    inner: Pin<Box<dyn Stream<Item = Result<KvPair>> + Send>>,
}

impl std::fmt::Debug for RawScanStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawScanStream").finish_non_exhaustive()
    }
}

impl Stream for RawScanStream {
    type Item = Result<KvPair>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// What one scan asks for; the scan builders fill it.
#[derive(Debug, Clone, Copy)]
pub(super) struct ScanShape {
    /// The most pairs to return; `None`: every pair of the range.
    pub(super) limit: Option<u32>,
    pub(super) reverse: bool,
    pub(super) key_only: bool,
}

fn check_limit(limit: Option<u32>) -> Result<()> {
    if limit == Some(0) {
        return Err(Error::invalid_argument(
            "a scan limit of 0 asks for nothing; leave the limit unset to scan the whole range",
        ));
    }
    Ok(())
}

impl RawClient {
    /// The pairs of `range` as `shape` asks, keys decoded.
    pub(super) async fn do_scan(
        &self,
        call: Call,
        range: BoundRange,
        shape: ScanShape,
    ) -> Result<Vec<KvPair>> {
        check_limit(shape.limit)?;
        let (start, end) = self.encode_range(range)?;
        let mut bo = backoffer(call);
        let kvs = self.scan_pages(call, &mut bo, start, end, shape).await?;
        self.to_pairs(kvs)
    }

    /// The keys of `range` as `shape` asks (values are not read).
    pub(super) async fn do_scan_keys(
        &self,
        call: Call,
        range: BoundRange,
        shape: ScanShape,
    ) -> Result<Vec<Key>> {
        check_limit(shape.limit)?;
        let (start, end) = self.encode_range(range)?;
        let mut bo = backoffer(call);
        let kvs = self.scan_pages(call, &mut bo, start, end, shape).await?;
        kvs.into_iter().map(|kv| self.decode_key(kv.key)).collect()
    }

    /// Up to `shape.limit` pairs of every range, ranges in the order given.
    pub(super) async fn do_batch_scan(
        &self,
        call: Call,
        ranges: Vec<BoundRange>,
        shape: ScanShape,
    ) -> Result<Vec<kvrpcpb::KvPair>> {
        check_limit(shape.limit)?;
        let ranges = ranges
            .into_iter()
            .map(|r| self.encode_range(r))
            .collect::<Result<Vec<_>>>()?;
        let mut bo = backoffer(call);
        let mut out = Vec::new();
        for (start, end) in ranges {
            out.extend(self.scan_pages(call, &mut bo, start, end, shape).await?);
        }
        Ok(out)
    }

    /// Every pair of `range`, ascending, fetched page by page as the stream is polled; each
    /// page has the call's deadline and retry budget. Errors end the stream.
    pub(super) fn do_scan_stream(&self, call: Result<Call>, range: BoundRange) -> RawScanStream {
        let start = call.and_then(|call| Ok((call, self.encode_range(range)?)));
        let client = self.clone();
        let pages = stream::unfold(Some(start), move |state| {
            let client = client.clone();
            async move {
                let (call, (start, end)) = match state? {
                    Ok(state) => state,
                    Err(e) => return Some((Err(e), None)),
                };
                if !end.is_empty() && start >= end {
                    return None;
                }
                let mut bo = backoffer(call);
                let page =
                    client.scan_encoded(call, &mut bo, start, end.clone(), STREAM_PAGE, false);
                match with_deadline("raw scan_stream page", call.timeout, page).await {
                    Err(e) => Some((Err(e), None)),
                    Ok(kvs) => {
                        let next = if kvs.len() < STREAM_PAGE as usize {
                            None
                        } else {
                            kvs.last().map(|kv| Ok((call, (successor(&kv.key), end))))
                        };
                        if kvs.is_empty() {
                            return None;
                        }
                        Some((client.to_pairs(kvs), next))
                    }
                }
            }
        });
        let pairs = pages.flat_map(|page| match page {
            Ok(pairs) => stream::iter(pairs.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(e) => stream::iter(vec![Err(e)]),
        });
        RawScanStream {
            inner: Box::pin(pairs),
        }
    }

    /// Scans encoded `[start, end)` as `shape` asks, in requests of at most
    /// [`MAX_RAW_SCAN_LIMIT`] pairs: a full page continues after its last key (before it, in
    /// reverse), a short one ends the range.
    async fn scan_pages(
        &self,
        call: Call,
        bo: &mut Backoffer,
        mut start: Bytes,
        mut end: Bytes,
        shape: ScanShape,
    ) -> Result<Vec<kvrpcpb::KvPair>> {
        let mut out: Vec<kvrpcpb::KvPair> = Vec::new();
        loop {
            let left = match shape.limit {
                Some(limit) => limit.saturating_sub(u32::try_from(out.len()).unwrap_or(u32::MAX)),
                None => MAX_RAW_SCAN_LIMIT,
            };
            let want = left.min(MAX_RAW_SCAN_LIMIT);
            if want == 0 {
                break;
            }
            let page = if shape.reverse {
                self.reverse_scan_encoded(
                    call,
                    bo,
                    start.clone(),
                    end.clone(),
                    want,
                    shape.key_only,
                )
                .await?
            } else {
                self.scan_encoded(call, bo, start.clone(), end.clone(), want, shape.key_only)
                    .await?
            };
            let full = page.len() == want as usize;
            if full && let Some(last) = page.last() {
                if shape.reverse {
                    end = last.key.clone();
                } else {
                    start = successor(&last.key);
                }
            }
            out.extend(page);
            if !full {
                break;
            }
        }
        Ok(out)
    }

    pub(super) fn to_pairs(&self, kvs: Vec<kvrpcpb::KvPair>) -> Result<Vec<KvPair>> {
        kvs.into_iter()
            .map(|kv| {
                if let Some(e) = kv.error {
                    return Err(crate::rpc::KeyErr::from(e).into_error());
                }
                Ok(KvPair::new(self.decode_key(kv.key)?, kv.value))
            })
            .collect()
    }

    /// Forward scan of encoded `[start, end)` (empty end: unbounded).
    async fn scan_encoded(
        &self,
        call: Call,
        bo: &mut Backoffer,
        mut start: Bytes,
        end: Bytes,
        limit: u32,
        key_only: bool,
    ) -> Result<Vec<kvrpcpb::KvPair>> {
        let mut out: Vec<kvrpcpb::KvPair> = Vec::new();
        let opts = sender_options();
        while (out.len() as u32) < limit && (end.is_empty() || start < end) {
            let want = limit - out.len() as u32;
            let (reply, location) = self
                .cluster
                .sender()
                .send_by_key(bo, &self.route_key(&start), LocateBy::Key, &opts, |loc| {
                    Ok(kvrpcpb::RawScanRequest {
                        context: Some(self.inner.context.clone()),
                        start_key: start.clone(),
                        end_key: clamp_end(&end, &self.wire_bound(loc.end_key())?),
                        limit: want,
                        key_only,
                        cf: call.cf(),
                        reverse: false,
                    })
                })
                .await?;
            out.extend(reply.resp.kvs);
            let next = self.wire_bound(location.end_key())?;
            if next.is_empty() {
                break;
            }
            start = next;
        }
        out.truncate(limit as usize);
        Ok(out)
    }

    /// Reverse scan of encoded `[start, end)`, from `end` down.
    async fn reverse_scan_encoded(
        &self,
        call: Call,
        bo: &mut Backoffer,
        start: Bytes,
        mut upper: Bytes,
        limit: u32,
        key_only: bool,
    ) -> Result<Vec<kvrpcpb::KvPair>> {
        if upper.is_empty() {
            return Err(Error::invalid_argument(
                "a reverse scan needs an end key: TiKV cannot scan backwards from an unbounded end",
            ));
        }
        let mut out: Vec<kvrpcpb::KvPair> = Vec::new();
        let opts = sender_options();
        while (out.len() as u32) < limit && upper > start {
            let want = limit - out.len() as u32;
            let (reply, location) = self
                .cluster
                .sender()
                .send_by_key(
                    bo,
                    &self.route_key(&upper),
                    LocateBy::EndKey,
                    &opts,
                    |loc| {
                        let region_start = self.wire_bound(loc.start_key())?;
                        Ok(kvrpcpb::RawScanRequest {
                            context: Some(self.inner.context.clone()),
                            start_key: upper.clone(),
                            end_key: if region_start > start {
                                region_start
                            } else {
                                start.clone()
                            },
                            limit: want,
                            key_only,
                            cf: call.cf(),
                            reverse: true,
                        })
                    },
                )
                .await?;
            out.extend(reply.resp.kvs);
            let region_start = self.wire_bound(location.start_key())?;
            if region_start.is_empty() || region_start <= start {
                break;
            }
            upper = region_start;
        }
        out.truncate(limit as usize);
        Ok(out)
    }
}

/// The smallest key after `key`.
fn successor(key: &Bytes) -> Bytes {
    let mut next = BytesMut::with_capacity(key.len() + 1);
    next.put_slice(key);
    next.put_u8(0);
    next.freeze()
}
