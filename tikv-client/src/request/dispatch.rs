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
//! Grouping costs one cache lookup per region, not per key: the regions found so far are kept
//! sorted by start key, and a key that falls in one of them joins its group after a binary
//! search of that short list. Only a key outside every known region is looked up in the
//! cache, and the region found then bounds every later key it holds.
//!
//! Ports the common shape of client-go `rawkv/rawkv.go` (`sendReq`, `sendBatchReq`,
//! `doBatchReq`) and `txnkv/transaction/2pc.go` (`doActionOnGroupMutations`, batches by region
//! and size), and `retry.MayBackoffForRegionError`.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::join_all;
use tikv_proto::errorpb;
use tokio::sync::Semaphore;

use crate::locate::KeyLocation;
use crate::request::region_error_needs_backoff;
use crate::request::sender::{CallOptions, RegionOutcome, Reply, SendError, SenderCore};
use crate::request::{BackoffKind, Backoffer, ForkReport};
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
    #[cfg(test)]
    pub(crate) const UNLIMITED: BatchLimit = BatchLimit {
        max_items: usize::MAX,
        max_bytes: usize::MAX,
    };
}

/// What one shard of a fan-out came back with. Items handed back for relocation keep
/// whether an RPC failed on the way ([`RegionOutcome::Relocate`]'s `had_rpc_error`), so that an
/// error that ends the call later still reports it.
#[derive(Debug)]
pub(crate) enum ShardOutcome<T, P> {
    /// Answered.
    Done(T),
    /// Part answered (`done`); the rest of the items must be relocated.
    Partial {
        done: T,
        items: Vec<P>,
        error: Box<errorpb::Error>,
        had_rpc_error: bool,
    },
    /// The region could not serve these items: relocate them.
    Relocate {
        items: Vec<P>,
        error: Box<errorpb::Error>,
        had_rpc_error: bool,
    },
}

/// Relocation rounds in a row that a fan-out may start without sleeping (TiKV sent the current
/// regions); the next one sleeps on `regionMiss`, so a region that keeps moving cannot keep a
/// call going without spending its budget.
const FREE_RELOCATION_ROUNDS: u32 = 1;

/// The fan-out's shared limit.
#[derive(Debug, Clone)]
pub(crate) struct FanOutLimit(Arc<Semaphore>);

impl FanOutLimit {
    pub(crate) fn new(permits: usize) -> FanOutLimit {
        FanOutLimit(Arc::new(Semaphore::new(permits.max(1))))
    }

    /// Permits not taken right now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.0.available_permits()
    }
}

/// Backs off before relocating, unless TiKV told us the current regions (client-go
/// `MayBackoffForRegionError`) and the previous relocation of the call did not go free too.
pub(crate) async fn backoff_for_relocation(
    bo: &mut Backoffer,
    region_id: Option<u64>,
    error: &errorpb::Error,
    free_rounds: &mut u32,
) -> Result<()> {
    // A relocation that needs no backoff (EpochNotMatch with the current regions) is free once
    // in a row; the next charges RegionMiss, so a cache that keeps disagreeing with TiKV (PD
    // behind a split) ends with the budget instead of looping without a sleep.
    if region_error_needs_backoff(error) || *free_rounds >= FREE_RELOCATION_ROUNDS {
        bo.backoff(
            BackoffKind::RegionMiss,
            Error::from_region_error(region_id, error.clone()),
        )
        .await?;
        *free_rounds = 0;
    } else {
        *free_rounds += 1;
    }
    Ok(())
}

impl SenderCore {
    /// Sends the request `build` makes to the region holding `key`, locating the key again and
    /// resending after a relocation, until an answer comes. For requests that do not depend on
    /// the region: each attempt's request is built by `build`
    /// ([`send_built`](SenderCore::send_built)), and no [`KeyLocation`] is kept.
    ///
    /// Whether an RPC failed is kept over relocations, in the answer and in the error.
    pub(crate) async fn send_to_key<R: KvRequest>(
        &self,
        bo: &mut Backoffer,
        key: &[u8],
        opts: &CallOptions,
        build: impl Fn() -> R + Sync,
    ) -> std::result::Result<Reply<R::Response>, SendError> {
        let mut had_rpc_error = false;
        let mut free_rounds = 0u32;
        loop {
            let region = match self.cache.locate_key(key).await {
                Ok(location) => location.region(),
                Err(e) => return Err(SendError::new(e, had_rpc_error)),
            };
            // Unpacked in its own statement, so that the answer (about a kilobyte) is not kept
            // in this future across the backoff below.
            let error = match self.send_built(bo, region, opts, &build).await {
                Ok(RegionOutcome::Done(reply)) => return Ok(merge_reply(reply, had_rpc_error)),
                Ok(RegionOutcome::Relocate {
                    error,
                    had_rpc_error: failed,
                }) => {
                    had_rpc_error |= failed;
                    error
                }
                Err(e) => return Err(merge_error(e, had_rpc_error)),
            };
            if let Err(e) =
                backoff_for_relocation(bo, Some(region.id()), &error, &mut free_rounds).await
            {
                return Err(SendError::new(e, had_rpc_error));
            }
        }
    }

    /// Sends a request to the region `key` selects, building the request for the region found
    /// (`build` may clamp a range to it). Relocates and resends until an answer comes.
    pub(crate) async fn send_by_key<R: KvRequest>(
        &self,
        bo: &mut Backoffer,
        key: &[u8],
        by: LocateBy,
        opts: &CallOptions,
        mut build: impl FnMut(&KeyLocation) -> Result<R>,
    ) -> std::result::Result<(Reply<R::Response>, KeyLocation), SendError> {
        let mut had_rpc_error = false;
        let mut free_rounds = 0u32;
        loop {
            let located = match by {
                LocateBy::Key => self.cache.locate_key(key).await,
                LocateBy::EndKey => self.cache.locate_end_key(key).await,
            };
            let (location, req) = match located.and_then(|l| build(&l).map(|req| (l, req))) {
                Ok(built) => built,
                Err(e) => return Err(SendError::new(e, had_rpc_error)),
            };
            // The outcome is unpacked in its own statement so that the answer, about a
            // kilobyte, is not kept in this future across the backoff below.
            let error = match self.send_to_region(bo, &req, location.region(), opts).await {
                Ok(RegionOutcome::Done(reply)) => {
                    return Ok((merge_reply(reply, had_rpc_error), location));
                }
                Ok(RegionOutcome::Relocate {
                    error,
                    had_rpc_error: failed,
                }) => {
                    had_rpc_error |= failed;
                    error
                }
                Err(e) => return Err(merge_error(e, had_rpc_error)),
            };
            if let Err(e) =
                backoff_for_relocation(bo, Some(location.region_id()), &error, &mut free_rounds)
                    .await
            {
                return Err(SendError::new(e, had_rpc_error));
            }
        }
    }

    /// Sends `items` to the regions of their keys: groups them by region
    /// ([`group_by_region`](SenderCore::group_by_region)), cuts each group by `limit`, runs the
    /// shards concurrently under the client's shared limit, and relocates the items of any
    /// shard that comes back with [`ShardOutcome::Relocate`]. Returns every shard's answer, in
    /// no particular order.
    ///
    /// `send` gets the shard's region, its items (in input order) and a backoffer forked from
    /// `bo`; it builds the request and usually calls
    /// [`send_to_region`](SenderCore::send_to_region). After each round the sleeps of the
    /// shard that slept most are merged into `bo` (client-go `UpdateUsingForked`), so the
    /// budget bounds the whole call.
    ///
    /// The error says whether an RPC failed in any shard, in any round, as
    /// [`SendError`] does for one region.
    pub(crate) async fn fan_out<P, T, F, Fut>(
        &self,
        bo: &mut Backoffer,
        limit: &FanOutLimit,
        items: Vec<P>,
        key_of: impl Fn(&P) -> &[u8],
        size_of: impl Fn(&P) -> usize,
        batch: BatchLimit,
        send: F,
    ) -> std::result::Result<Vec<T>, SendError>
    where
        F: Fn(KeyLocation, Vec<P>, Backoffer) -> Fut,
        Fut: Future<Output = std::result::Result<ShardOutcome<T, P>, SendError>>,
    {
        let mut answers = Vec::new();
        let mut pending = items;
        let mut had_rpc_error = false;
        let mut free_rounds = 0u32;
        while !pending.is_empty() {
            let groups = match self.group_by_region(pending, &key_of).await {
                Ok(groups) => groups,
                Err(e) => return Err(SendError::new(e, had_rpc_error)),
            };
            let mut shards = Vec::with_capacity(groups.len());
            for (location, group) in groups {
                cut(location, group, &size_of, batch, &mut shards);
            }
            let mut relocate: Vec<P> = Vec::new();
            let mut relocate_error: Option<(u64, Box<errorpb::Error>)> = None;
            let mut record = |outcome: ShardOutcome<T, P>, region_id: u64| {
                let (done, moved) = match outcome {
                    ShardOutcome::Done(answer) => (Some(answer), None),
                    ShardOutcome::Partial {
                        done,
                        items,
                        error,
                        had_rpc_error: failed,
                    } => {
                        had_rpc_error |= failed;
                        (Some(done), Some((items, error)))
                    }
                    ShardOutcome::Relocate {
                        items,
                        error,
                        had_rpc_error: failed,
                    } => {
                        had_rpc_error |= failed;
                        (None, Some((items, error)))
                    }
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
            let report = ForkReport::default();
            let mut first_error: Option<SendError> = None;
            let mut shard_rpc_error = false;
            if shards.len() == 1 {
                let Some((location, items)) = shards.pop() else {
                    break;
                };
                let id = location.region_id();
                match send(location, items, bo.fork_reporting(&report)).await {
                    Ok(outcome) => record(outcome, id),
                    Err(err) => first_error = Some(err),
                }
            } else {
                // All shards in one allocation, polled together on each wake-up: cheaper than
                // a task per shard for the handful of regions a call usually spans.
                let running = shards.into_iter().map(|(location, items)| {
                    let id = location.region_id();
                    let forked = bo.fork_reporting(&report);
                    let send = &send;
                    async move {
                        let _permit = limit
                            .0
                            .acquire()
                            .await
                            .map_err(|_| SendError::new(Error::Closed, false))?;
                        send(location, items, forked).await.map(|o| (o, id))
                    }
                });
                for result in join_all(running).await {
                    match result {
                        Ok((outcome, id)) => record(outcome, id),
                        Err(err) => {
                            // Let the other shards finish: their writes are in flight anyway,
                            // and the caller gets one error, not a half-cancelled call. Any
                            // shard's failed RPC makes the call's result undetermined.
                            shard_rpc_error |= err.had_rpc_error;
                            first_error.get_or_insert(err);
                        }
                    }
                }
            }
            bo.merge_reported(&report);
            had_rpc_error |= shard_rpc_error;
            if let Some(err) = first_error {
                return Err(merge_error(err, had_rpc_error));
            }
            if let Some((region_id, error)) = relocate_error {
                let slept = bo.total_sleep();
                let result = if region_error_needs_backoff(&error)
                    || free_rounds >= FREE_RELOCATION_ROUNDS
                {
                    bo.backoff(
                        BackoffKind::RegionMiss,
                        Error::from_region_error(Some(region_id), *error),
                    )
                    .await
                } else {
                    Ok(())
                };
                if let Err(e) = result {
                    return Err(SendError::new(e, had_rpc_error));
                }
                if bo.total_sleep() == slept {
                    free_rounds += 1;
                } else {
                    free_rounds = 0;
                }
            }
            pending = relocate;
        }
        Ok(answers)
    }
}

impl SenderCore {
    /// Groups items by the region holding each one's key (client-go `GroupKeysByRegion`), with
    /// one cache lookup per region (see the module docs).
    ///
    /// Groups come in the order their first item appears, and items keep their input order
    /// within a group, as the cache's own grouping does. A region that changes while the items
    /// are grouped may leave a stale group; sending it gets a region error, which relocates
    /// its items.
    pub(crate) async fn group_by_region<P>(
        &self,
        items: Vec<P>,
        key_of: &impl Fn(&P) -> &[u8],
    ) -> Result<Vec<(KeyLocation, Vec<P>)>> {
        // `regions[g]` is group g's region and `heads[g]` the heads of its start and end keys;
        // `by_start` lists the groups by region start key.
        let mut regions: Vec<KeyLocation> = Vec::new();
        let mut heads: Vec<(u128, u128)> = Vec::new();
        let mut by_start: Vec<usize> = Vec::new();
        let mut group_of: Vec<usize> = Vec::with_capacity(items.len());
        let mut sizes: Vec<usize> = Vec::new();
        for item in &items {
            let key = key_of(item);
            let head = key_head(key);
            // The last region starting at or before the key holds it if the key is below its
            // end: one comparison per halving of the list, then one against the end.
            let i = by_start.partition_point(|&g| {
                key_le(heads[g].0, regions[g].start_key().as_bytes(), head, key)
            });
            let known = i.checked_sub(1).map(|i| by_start[i]).filter(|&g| {
                let end = regions[g].end_key().as_bytes();
                end.is_empty() || !key_le(heads[g].1, end, head, key)
            });
            let g = match known {
                Some(g) => g,
                None => {
                    let location = self.cache.locate_key(key).await?;
                    let g = regions.len();
                    let start = location.start_key().as_bytes();
                    let start_head = key_head(start);
                    let at = by_start.partition_point(|&h| {
                        key_le(
                            heads[h].0,
                            regions[h].start_key().as_bytes(),
                            start_head,
                            start,
                        )
                    });
                    by_start.insert(at, g);
                    heads.push((start_head, key_head(location.end_key().as_bytes())));
                    regions.push(location);
                    sizes.push(0);
                    g
                }
            };
            sizes[g] += 1;
            group_of.push(g);
        }
        if regions.len() == 1 {
            // Everything in one region: the items go as they are.
            let mut groups = Vec::with_capacity(1);
            groups.extend(regions.pop().map(|r| (r, items)));
            return Ok(groups);
        }
        let mut groups: Vec<(KeyLocation, Vec<P>)> = regions
            .into_iter()
            .zip(sizes)
            .map(|(r, n)| (r, Vec::with_capacity(n)))
            .collect();
        for (item, g) in items.into_iter().zip(group_of) {
            groups[g].1.push(item);
        }
        Ok(groups)
    }
}

/// An answer after relocations: an RPC error before them counts too.
fn merge_reply<T>(mut reply: Reply<T>, had_rpc_error: bool) -> Reply<T> {
    reply.had_rpc_error |= had_rpc_error;
    reply
}

/// A failure after relocations: an RPC error before them counts too.
fn merge_error(mut error: SendError, had_rpc_error: bool) -> SendError {
    error.had_rpc_error |= had_rpc_error;
    error
}

/// The first 16 bytes of a key as a big-endian number, zero-padded. Heads order keys: a smaller
/// head means a smaller key (a zero pad sorts before any byte, as a shorter key does), so only
/// keys with equal heads need their bytes compared.
fn key_head(key: &[u8]) -> u128 {
    let mut head = [0u8; 16];
    let n = key.len().min(16);
    head[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(head)
}

/// `a <= b`, given their heads.
fn key_le(a_head: u128, a: &[u8], b_head: u128, b: &[u8]) -> bool {
    a_head < b_head || (a_head == b_head && a <= b)
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
    fn key_heads_order_keys_as_their_bytes_do() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"a\0",
            b"a\0\x01",
            b"ab",
            b"rawbench0000999",
            b"rawbench00009999",
            b"rawbench00009999\0",
            b"rawbench000099990",
            b"rawbench00010000",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ];
        for a in &keys {
            for b in &keys {
                assert_eq!(
                    key_le(key_head(a), a, key_head(b), b),
                    a <= b,
                    "{a:?} <= {b:?}"
                );
            }
        }
    }

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
