//! Region-routed sending for any command: to the region of one key, or fanned out over the
//! regions of many keys, relocating whatever a region could not serve until everything is
//! answered or the backoff budget runs out.
//!
//! Who calls it: the raw client (and the transactional one as it lands) builds the typed
//! requests; this module decides which region each goes to, sends through
//! [`SenderCore::send_to_region`], and on a relocation locates the keys again — after a
//! `regionMiss` backoff unless TiKV sent the current regions — and resends only what failed.
//!
//! The fan-out runs every shard of a call concurrently, but all calls of a client share one
//! semaphore: a single huge batch cannot flood the cluster, and many small calls cannot
//! multiply the limit. A call with one shard sends inline, without a permit.
//!
//! Ports the common shape of client-go `rawkv/rawkv.go` (`sendReq`, `sendBatchReq`,
//! `doBatchReq`) and `txnkv/transaction/2pc.go` (`doActionOnGroupMutations`, batches by region
//! and size), and `retry.MayBackoffForRegionError`.

use std::future::Future;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tikv_proto::errorpb;
use tokio::sync::Semaphore;

use crate::locate::KeyLocation;
use crate::request::region_error_needs_backoff;
use crate::request::sender::{CallOptions, RegionOutcome, Reply, SenderCore};
use crate::request::{BackoffKind, Backoffer};
use crate::rpc::KvRequest;
use crate::{Error, Result};

/// Which region a key selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocateBy {
    /// The region containing the key (`start <= key < end`).
    Key,
    /// The region whose range ends at or after the key, exclusive of its start (`start < key
    /// <= end`): what a reverse scan from an exclusive upper bound reads first.
    EndKey,
}

/// How a fan-out cuts one region's items into requests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimit {
    /// At most this many items per request.
    pub(crate) max_items: usize,
    /// At most about this many bytes per request (an item bigger than this goes alone).
    pub(crate) max_bytes: usize,
}

impl BatchLimit {
    /// At most `n` items per request, whatever their size.
    pub(crate) const fn keys(n: usize) -> BatchLimit {
        BatchLimit {
            max_items: n,
            max_bytes: usize::MAX,
        }
    }

    /// No cut: one request per region.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) const UNLIMITED: BatchLimit = BatchLimit {
        max_items: usize::MAX,
        max_bytes: usize::MAX,
    };
}

/// What one shard of a fan-out came back with.
#[derive(Debug)]
pub(crate) enum ShardOutcome<T, P> {
    /// Answered.
    Done(T),
    /// Part answered (`done`); the rest of the items must be relocated.
    Partial {
        done: T,
        items: Vec<P>,
        error: Box<errorpb::Error>,
    },
    /// The region could not serve these items: relocate them.
    Relocate {
        items: Vec<P>,
        error: Box<errorpb::Error>,
    },
}

/// The fan-out's shared limit.
#[derive(Debug, Clone)]
pub(crate) struct FanOutLimit(Arc<Semaphore>);

impl FanOutLimit {
    pub(crate) fn new(permits: usize) -> FanOutLimit {
        FanOutLimit(Arc::new(Semaphore::new(permits.max(1))))
    }

    /// Permits not taken right now.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// Backs off before relocating, unless TiKV told us the current regions (client-go
/// `MayBackoffForRegionError`).
pub(crate) async fn backoff_for_relocation(
    bo: &mut Backoffer,
    region_id: Option<u64>,
    error: &errorpb::Error,
) -> Result<()> {
    if region_error_needs_backoff(error) {
        bo.backoff(
            BackoffKind::RegionMiss,
            Error::from_region_error(region_id, error.clone()),
        )
        .await?;
    }
    Ok(())
}

impl SenderCore {
    /// Sends a request to the region `key` selects, building the request for the region found
    /// (`build` may clamp a range to it). Relocates and resends until an answer comes.
    pub(crate) async fn send_by_key<R: KvRequest>(
        &self,
        bo: &mut Backoffer,
        key: &[u8],
        by: LocateBy,
        opts: &CallOptions,
        mut build: impl FnMut(&KeyLocation) -> Result<R>,
    ) -> Result<(Reply<R::Response>, KeyLocation)> {
        loop {
            let location = match by {
                LocateBy::Key => self.cache.locate_key(key).await?,
                LocateBy::EndKey => self.cache.locate_end_key(key).await?,
            };
            let req = build(&location)?;
            match self
                .send_to_region(bo, &req, location.region(), opts)
                .await?
            {
                RegionOutcome::Done(reply) => return Ok((reply, location)),
                RegionOutcome::Relocate(error) => {
                    backoff_for_relocation(bo, Some(location.region_id()), &error).await?;
                }
            }
        }
    }

    /// Sends `items` to the regions of their keys: groups them by region, cuts each group by
    /// `limit`, runs the shards concurrently under the client's shared limit, and relocates
    /// the items of any shard that comes back with [`ShardOutcome::Relocate`]. Returns every
    /// shard's answer, in no particular order.
    ///
    /// `send` gets the shard's region, its items (in input order) and a backoffer forked from
    /// `bo`; it builds the request and usually calls
    /// [`send_to_region`](SenderCore::send_to_region).
    pub(crate) async fn fan_out<P, T, F, Fut>(
        &self,
        bo: &mut Backoffer,
        limit: &FanOutLimit,
        items: Vec<P>,
        key_of: impl Fn(&P) -> &[u8],
        size_of: impl Fn(&P) -> usize,
        batch: BatchLimit,
        send: F,
    ) -> Result<Vec<T>>
    where
        F: Fn(KeyLocation, Vec<P>, Backoffer) -> Fut,
        Fut: Future<Output = Result<ShardOutcome<T, P>>>,
    {
        let mut answers = Vec::new();
        let mut pending = items;
        while !pending.is_empty() {
            let groups = self.cache.group_by_region(pending, &key_of).await?;
            let mut shards = Vec::with_capacity(groups.len());
            for (location, group) in groups {
                cut(location, group, &size_of, batch, &mut shards);
            }
            let mut relocate: Vec<P> = Vec::new();
            let mut relocate_error: Option<(u64, Box<errorpb::Error>)> = None;
            let mut record = |outcome: ShardOutcome<T, P>, region_id: u64| {
                let (done, moved) = match outcome {
                    ShardOutcome::Done(answer) => (Some(answer), None),
                    ShardOutcome::Partial { done, items, error } => {
                        (Some(done), Some((items, error)))
                    }
                    ShardOutcome::Relocate { items, error } => (None, Some((items, error))),
                };
                answers.extend(done);
                if let Some((items, error)) = moved {
                    relocate.extend(items);
                    // Prefer an error that asks for a backoff: one shard's real EpochNotMatch
                    // must not hide another's region miss.
                    if relocate_error
                        .as_ref()
                        .is_none_or(|(_, e)| !region_error_needs_backoff(e))
                    {
                        relocate_error = Some((region_id, error));
                    }
                }
            };
            if shards.len() == 1 {
                let Some((location, items)) = shards.pop() else {
                    break;
                };
                let id = location.region_id();
                let outcome = send(location, items, bo.fork()).await?;
                record(outcome, id);
            } else {
                let mut running: FuturesUnordered<_> = shards
                    .into_iter()
                    .map(|(location, items)| {
                        let id = location.region_id();
                        let forked = bo.fork();
                        let send = &send;
                        async move {
                            let _permit = limit.0.acquire().await.map_err(|_| Error::Closed)?;
                            send(location, items, forked).await.map(|o| (o, id))
                        }
                    })
                    .collect();
                let mut first_error = None;
                while let Some(result) = running.next().await {
                    match result {
                        Ok((outcome, id)) => record(outcome, id),
                        Err(err) => {
                            // Let the other shards finish: their writes are in flight anyway,
                            // and the caller gets one error, not a half-cancelled call.
                            first_error.get_or_insert(err);
                        }
                    }
                }
                if let Some(err) = first_error {
                    return Err(err);
                }
            }
            if let Some((region_id, error)) = relocate_error {
                backoff_for_relocation(bo, Some(region_id), &error).await?;
            }
            pending = relocate;
        }
        Ok(answers)
    }
}

/// Cuts one region's items into shards of at most `batch.max_items` items and about
/// `batch.max_bytes` bytes.
fn cut<P>(
    location: KeyLocation,
    items: Vec<P>,
    size_of: &impl Fn(&P) -> usize,
    batch: BatchLimit,
    out: &mut Vec<(KeyLocation, Vec<P>)>,
) {
    if items.len() <= batch.max_items
        && (batch.max_bytes == usize::MAX
            || items.iter().map(size_of).sum::<usize>() <= batch.max_bytes)
    {
        out.push((location, items));
        return;
    }
    let mut current = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        let size = size_of(&item);
        if !current.is_empty()
            && (current.len() >= batch.max_items || bytes.saturating_add(size) > batch.max_bytes)
        {
            out.push((location.clone(), std::mem::take(&mut current)));
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
        current.push(item);
    }
    if !current.is_empty() {
        out.push((location, current));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locate::RegionVerId;

    #[test]
    fn cut_respects_count_and_bytes() {
        let loc = KeyLocation::for_test(RegionVerId::new(1, 1, 1), b"", b"", None);
        let mut out = Vec::new();
        let items: Vec<u32> = (0..10).collect();
        cut(
            loc.clone(),
            items,
            &|_| 10,
            BatchLimit {
                max_items: 4,
                max_bytes: usize::MAX,
            },
            &mut out,
        );
        let sizes: Vec<usize> = out.iter().map(|(_, v)| v.len()).collect();
        assert_eq!(sizes, vec![4, 4, 2]);

        let mut out = Vec::new();
        cut(
            loc.clone(),
            vec![5usize, 5, 20, 1, 1],
            &|s| *s,
            BatchLimit {
                max_items: 100,
                max_bytes: 10,
            },
            &mut out,
        );
        let shards: Vec<Vec<usize>> = out.into_iter().map(|(_, v)| v).collect();
        // An item over the byte limit travels alone rather than being refused.
        assert_eq!(shards, vec![vec![5, 5], vec![20], vec![1, 1]]);
    }
}
