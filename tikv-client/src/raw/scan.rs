//! Raw scans: forward and reverse, key-only, several ranges at once, and as a stream.
//!
//! Each scan walks the regions of its range in order (descending for reverse scans), sending
//! one RawScan per region with the range cut at the region's bounds, until the limit is reached
//! or the range ends. A region that splits or moves while being scanned is located again and
//! the same step is resent, so no key is skipped or repeated.
//!
//! Ports client-go `rawkv.Client.Scan` / `ReverseScan`; the stream has no client-go
//! counterpart (client-rust users rely on it) and has no limit.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{self, Stream, StreamExt};
use tikv_proto::kvrpcpb;

use super::{MAX_RAW_SCAN_LIMIT, RawClient, clamp_end};
use crate::request::dispatch::LocateBy;
use crate::{BoundRange, Error, Key, KvPair, Result};

/// Pairs per request of [`RawClient::scan_stream`].
const STREAM_PAGE: u32 = 1024;

/// The pairs of a range, fetched page by page as they are consumed
/// ([`RawClient::scan_stream`]).
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

fn check_limit(limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_RAW_SCAN_LIMIT {
        return Err(Error::invalid_argument(format!(
            "scan limit {limit} is outside 1..={MAX_RAW_SCAN_LIMIT}"
        )));
    }
    Ok(())
}

impl RawClient {
    /// Up to `limit` pairs of `range`, ascending.
    pub async fn scan(&self, range: impl Into<BoundRange>, limit: u32) -> Result<Vec<KvPair>> {
        check_limit(limit)?;
        let (start, end) = self.encode_range(range.into())?;
        let kvs = self.scan_encoded(start, end, limit, false).await?;
        self.to_pairs(kvs)
    }

    /// Up to `limit` keys of `range`, ascending (values are not read).
    pub async fn scan_keys(&self, range: impl Into<BoundRange>, limit: u32) -> Result<Vec<Key>> {
        check_limit(limit)?;
        let (start, end) = self.encode_range(range.into())?;
        let kvs = self.scan_encoded(start, end, limit, true).await?;
        kvs.into_iter().map(|kv| self.decode_key(kv.key)).collect()
    }

    /// Up to `limit` pairs of `range`, descending from its end. The range is given ascending,
    /// as for [`scan`](RawClient::scan). Under API V1 the range needs an end: TiKV cannot
    /// scan backwards from an unbounded end.
    pub async fn reverse_scan(
        &self,
        range: impl Into<BoundRange>,
        limit: u32,
    ) -> Result<Vec<KvPair>> {
        check_limit(limit)?;
        let (start, end) = self.encode_range(range.into())?;
        let kvs = self.reverse_scan_encoded(start, end, limit, false).await?;
        self.to_pairs(kvs)
    }

    /// Up to `limit` keys of `range`, descending; see [`reverse_scan`](RawClient::reverse_scan).
    pub async fn reverse_scan_keys(
        &self,
        range: impl Into<BoundRange>,
        limit: u32,
    ) -> Result<Vec<Key>> {
        check_limit(limit)?;
        let (start, end) = self.encode_range(range.into())?;
        let kvs = self.reverse_scan_encoded(start, end, limit, true).await?;
        kvs.into_iter().map(|kv| self.decode_key(kv.key)).collect()
    }

    /// Up to `each_limit` pairs of every range, ranges in the order given.
    pub async fn batch_scan(
        &self,
        ranges: impl IntoIterator<Item = impl Into<BoundRange>>,
        each_limit: u32,
    ) -> Result<Vec<KvPair>> {
        check_limit(each_limit)?;
        let ranges = ranges
            .into_iter()
            .map(|r| self.encode_range(r.into()))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::new();
        for (start, end) in ranges {
            let kvs = self.scan_encoded(start, end, each_limit, false).await?;
            out.extend(self.to_pairs(kvs)?);
        }
        Ok(out)
    }

    /// Every pair of `range`, ascending, fetched page by page as the stream is polled. No
    /// limit; errors end the stream.
    pub fn scan_stream(&self, range: impl Into<BoundRange>) -> RawScanStream {
        let start = self.encode_range(range.into());
        let client = self.clone();
        let pages = stream::unfold(Some(start), move |state| {
            let client = client.clone();
            async move {
                let (start, end) = match state? {
                    Ok(range) => range,
                    Err(e) => return Some((Err(e), None)),
                };
                if !end.is_empty() && start >= end {
                    return None;
                }
                match client
                    .scan_encoded(start, end.clone(), STREAM_PAGE, false)
                    .await
                {
                    Err(e) => Some((Err(e), None)),
                    Ok(kvs) => {
                        let next = if kvs.len() < STREAM_PAGE as usize {
                            None
                        } else {
                            kvs.last().map(|kv| Ok((successor(&kv.key), end)))
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

    fn to_pairs(&self, kvs: Vec<kvrpcpb::KvPair>) -> Result<Vec<KvPair>> {
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
    pub(super) async fn scan_encoded(
        &self,
        mut start: Bytes,
        end: Bytes,
        limit: u32,
        key_only: bool,
    ) -> Result<Vec<kvrpcpb::KvPair>> {
        let mut out: Vec<kvrpcpb::KvPair> = Vec::new();
        let mut bo = self.backoffer();
        let opts = self.call_options();
        while (out.len() as u32) < limit && (end.is_empty() || start < end) {
            let want = limit - out.len() as u32;
            let (reply, location) = self
                .cluster
                .sender()
                .send_by_key(
                    &mut bo,
                    &self.route_key(&start),
                    LocateBy::Key,
                    &opts,
                    |loc| {
                        Ok(kvrpcpb::RawScanRequest {
                            context: Some(self.inner.context.clone()),
                            start_key: start.clone(),
                            end_key: clamp_end(&end, &self.wire_bound(loc.end_key())?),
                            limit: want,
                            key_only,
                            cf: self.inner.cf.clone(),
                            reverse: false,
                        })
                    },
                )
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
        let mut bo = self.backoffer();
        let opts = self.call_options();
        while (out.len() as u32) < limit && upper > start {
            let want = limit - out.len() as u32;
            let (reply, location) = self
                .cluster
                .sender()
                .send_by_key(
                    &mut bo,
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
                            cf: self.inner.cf.clone(),
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
