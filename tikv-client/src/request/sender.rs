//! The region request sender: sends one request to one region version and retries it, on
//! other replicas when that helps, until it gets an answer without a region error, a region
//! error that the caller must handle by locating the keys again, or a final error.
//!
//! Who calls it: `dispatch.rs` (send by key, fan-out over regions), which the raw and
//! transactional clients use. It uses the region cache (`locate/`) to learn and correct where
//! regions live, the transport to send, and the [`Backoffer`] to bound every retry.
//!
//! Ports client-go `internal/locate/region_request.go`: `SendReqCtx`/`sendReqState.next`
//! (the loop), `onSendFail`, `onRegionError` (one reaction per `errorpb.Error` field, in
//! errorpb's order), `validateReadTS`, the store token limit (`getStoreToken`), and from
//! `store_cache.go` the liveness probe (`requestLiveness`), the health-check loop
//! (`startHealthCheckLoop`) of a store found unreachable, and the periodic health tick of
//! every store (`checkAndUpdateStoreHealthStatus`, with `requestHealthFeedbackFromKVClient` for
//! TiKV slow scores gone stale).
//!
//! Each attempt's request gets everything the replica selector decided for it (the selector's
//! `AttemptContext`: region, epoch, peer, replica read, stale read, busy threshold; the proxy
//! goes to the transport), so a stale read that meets DataIsNotReady is retried on the leader
//! as a normal read. A failed send keeps whether an RPC failed on the way ([`SendError`]), as
//! an answer does ([`Reply::had_rpc_error`]).
//!
//! Differences from client-go, on purpose:
//! - `UndeterminedResult` is returned as a typed undetermined error instead of a response
//!   carrying the region error, so no caller can mistake it for "retry the write".
//! - Each attempt sends its own copy of the request (the transport consumes it), cloned or
//!   built afresh by the caller's builder; every key and value is a `Bytes`, so a copy
//!   copies pointers, not data.
//!
//! Cost on the hot path: the future of a send is embedded in every caller's future and copied
//! each time one moves, so the rare paths (a failed send with its liveness probe, a region
//! error with its reactions, unary commands) are boxed and only cost an allocation when they
//! happen; the common path (one attempt on the leader, answered) allocates nothing here. The
//! store's transport client is the one kept beside the cached store (`Store::with_client`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::Either;
use tikv_proto::errorpb;

use crate::config::Config;
use crate::error::RegionErrorKind;
use crate::locate::{InvalidReason, LivenessState, RegionCache, RegionVerId, Store, StoreType};
use crate::oracle::{Oracle, OracleFuture, Timestamp};
use crate::request::selector::{AttemptContext, MAX_REPLICA_ATTEMPTS, ReplicaSelector};
use crate::request::{BackoffKind, Backoffer};
use crate::rpc::{Access, KvRequest, KvResponse, Wire, WireResponse};
use crate::transport::{Liveness, SendOptions, StoreClient, Transport};
use crate::{Error, Result};

/// TiKV's message for a `max_ts` update it refused (client-go `isInvalidMaxTsUpdate`).
const INVALID_MAX_TS_UPDATE: &str = "invalid max_ts update";
/// The longest TiKV may work on a write (client-go `MaxWriteExecutionTime`: its 30 s
/// `ReadTimeoutShort` less 10 s), so that TiKV gives up before the client does.
const MAX_WRITE_EXECUTION_TIME: Duration = Duration::from_secs(20);
/// How often the health loop probes an unreachable store (client-go's loop period).
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often the health loop asks PD whether the store still exists (client-go
/// `storeReResolveInterval`).
const STORE_RE_RESOLVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long an active health-feedback request may take (client-go
/// `getHealthFeedbackTimeout`).
const HEALTH_FEEDBACK_TIMEOUT: Duration = Duration::from_secs(2);

/// How a read asks to be served (client-go's `ReplicaReadType`, `StaleRead` and
/// `BusyThresholdMs` on a request). The default reads from the leader. Writes ignore it: they
/// always go to the leader. The replica selector turns it into each attempt's flags
/// ([`AttemptContext`]), which may differ from it (a stale read retried on the leader reads
/// normally).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReadMode {
    /// Replica read: followers may serve the read (after a read index with the leader).
    pub(crate) replica_read: bool,
    /// With `replica_read`, the leader competes with the followers (client-go `Mixed`);
    /// without, followers come first (client-go `Follower`).
    pub(crate) try_leader: bool,
    /// Stale read at the request's timestamp: any replica whose safe ts passed it serves it
    /// locally.
    pub(crate) stale_read: bool,
    /// A leader read whose leader is estimated busier than this many milliseconds goes to an
    /// idle follower as a replica read, and TiKV refuses rather than queue it longer (0: off).
    pub(crate) busy_threshold_ms: u32,
}

/// Per-call settings of a send.
#[derive(Debug, Clone)]
pub(crate) struct CallOptions {
    /// The longest one attempt may wait for its answer (client-go `ReadTimeoutShort` and
    /// friends); the backoffer's deadline shortens it further.
    pub(crate) timeout: Duration,
    /// Priority under the transport's concurrency limit.
    pub(crate) priority: u64,
    /// Never try a follower (for requests only the leader may serve even to answer NotLeader).
    pub(crate) leader_only: bool,
    /// How reads are served.
    pub(crate) read: ReadMode,
    /// Replica reads prefer these stores (client-go `WithMatchStores`; empty: any).
    pub(crate) match_stores: Vec<u64>,
    /// Replica reads prefer stores with all these labels (client-go `WithMatchLabels`).
    pub(crate) match_labels: Vec<(String, String)>,
}

impl CallOptions {
    pub(crate) fn new(timeout: Duration) -> CallOptions {
        CallOptions {
            timeout,
            priority: 0,
            leader_only: false,
            read: ReadMode::default(),
            match_stores: Vec::new(),
            match_labels: Vec::new(),
        }
    }
}

/// A successful answer and where it came from.
#[derive(Debug)]
pub(crate) struct Reply<T> {
    pub(crate) resp: T,
    /// The region version that answered.
    #[cfg(test)]
    pub(crate) region: RegionVerId,
    /// The store that answered.
    #[cfg(test)]
    pub(crate) store_id: u64,
    /// How many times the request was sent (1 when the first attempt answered).
    #[cfg(test)]
    pub(crate) attempts: u32,
    /// Whether some attempt failed in the transport: a write may then have been applied by
    /// an attempt whose answer was lost (client-go `rpcError`, which the committer turns into
    /// an undetermined result).
    pub(crate) had_rpc_error: bool,
}

/// What one region answered, in the end.
#[derive(Debug)]
pub(crate) enum RegionOutcome<T> {
    /// The region answered without a region error.
    Done(Reply<T>),
    /// The region could not serve the request as addressed (split, merge, moved, invalid in
    /// the cache): locate the keys again and resend. The cache has already been corrected. The
    /// error tells the caller whether to back off first
    /// ([`region_error_needs_backoff`](crate::request::backoff::region_error_needs_backoff)).
    Relocate {
        error: Box<errorpb::Error>,
        /// As [`Reply::had_rpc_error`]: kept for the answer that comes after relocating.
        had_rpc_error: bool,
    },
}

/// A failed send, with what the caller must know even then: whether some attempt failed in
/// the transport, so that a write may have been applied although no answer says so (client-go
/// `RegionRequestSender.rpcError`; the committer reports the primary's commit as undetermined).
#[derive(Debug)]
pub(crate) struct SendError {
    pub(crate) error: Error,
    pub(crate) had_rpc_error: bool,
}

impl SendError {
    pub(crate) fn new(error: Error, had_rpc_error: bool) -> SendError {
        SendError {
            error,
            had_rpc_error,
        }
    }
}

/// The API edge: callers that only need the error drop the fact.
impl From<SendError> for Error {
    fn from(e: SendError) -> Error {
        e.error
    }
}

/// What to do after a region error.
enum Reaction {
    /// Send again to the same region version (the selector picks the replica).
    Retry,
    /// Give the error back for relocation.
    Relocate,
}

/// The sender's shared state: one per cluster, used by every client built on it.
pub(crate) struct SenderCore {
    pub(crate) cache: Arc<RegionCache>,
    pub(crate) transport: Transport,
    enable_forwarding: bool,
    liveness_timeout: Duration,
    store_limit: u64,
    cluster_id: u64,
    read_ts_validator: Option<Arc<dyn ReadTsValidator>>,
    closed: AtomicBool,
    /// Every attempt's store and read flags, for tests that check what each attempt asked.
    #[cfg(test)]
    pub(crate) attempt_log: std::sync::Mutex<Vec<AttemptRecord>>,
    /// Handle to ourselves for the health loops, which must not keep the sender alive.
    me: Weak<SenderCore>,
}

impl std::fmt::Debug for SenderCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderCore")
            .field("cache", &self.cache)
            .field("enable_forwarding", &self.enable_forwarding)
            .field("store_limit", &self.store_limit)
            .finish_non_exhaustive()
    }
}

/// Builds a [`SenderCore`].
#[derive(Debug)]
pub(crate) struct SenderParts {
    pub(crate) cache: Arc<RegionCache>,
    pub(crate) transport: Transport,
    /// The cluster id stamped on every request (0: not stamped).
    pub(crate) cluster_id: u64,
    /// Validates read timestamps before reads are sent; `None` skips the check.
    pub(crate) read_ts_validator: Option<Arc<dyn ReadTsValidator>>,
}

/// What checks a read timestamp before a read is sent (client-go `oracle.ReadTSValidator`):
/// any [`Oracle`], or the cluster's oracle created on first use.
pub(crate) trait ReadTsValidator: Send + Sync + std::fmt::Debug {
    /// See [`Oracle::validate_read_ts`].
    fn validate_read_ts(
        &self,
        read_ts: Timestamp,
        is_stale_read: bool,
    ) -> OracleFuture<'_, Result<()>>;
}

impl<O: Oracle + ?Sized> ReadTsValidator for O {
    fn validate_read_ts(
        &self,
        read_ts: Timestamp,
        is_stale_read: bool,
    ) -> OracleFuture<'_, Result<()>> {
        Oracle::validate_read_ts(self, read_ts, is_stale_read)
    }
}

/// One attempt as the sender addressed it (tests only).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttemptRecord {
    pub(crate) store_id: u64,
    pub(crate) replica_read: bool,
    pub(crate) stale_read: bool,
    pub(crate) max_execution_ms: u64,
}

impl SenderCore {
    /// Also starts the health tick of every store, every quarter of
    /// `stores-refresh-interval` (client-go's schedule), when called inside a tokio runtime.
    pub(crate) fn new(parts: SenderParts, config: &Config) -> Arc<SenderCore> {
        let core = Arc::new_cyclic(|me| SenderCore {
            cache: parts.cache,
            transport: parts.transport,
            enable_forwarding: config.enable_forwarding,
            liveness_timeout: config.tikv_client.store_liveness_timeout,
            store_limit: config.tikv_client.store_limit,
            cluster_id: parts.cluster_id,
            read_ts_validator: parts.read_ts_validator,
            closed: AtomicBool::new(false),
            #[cfg(test)]
            attempt_log: std::sync::Mutex::new(Vec::new()),
            me: me.clone(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let period = (config.stores_refresh_interval / 4).max(Duration::from_millis(100));
            runtime.spawn(health_ticks(Arc::downgrade(&core), period));
        }
        core
    }

    /// Stops sending: later sends fail with [`Error::Closed`] and health loops end.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Checks a read's timestamp with the oracle (client-go `validateReadTS`): reading above
    /// the newest timestamp PD has handed out could miss writes committed later below it.
    /// The request comes from `build`, called only for commands that carry a read ts and only
    /// when a validator is set: nothing of it is kept across the await.
    /// Whether it is a stale read is the call's read mode (client-go's request-level
    /// `StaleRead`), not the built request's context: the selector writes the flag into each
    /// attempt only later.
    async fn validate_read_ts<R: KvRequest>(
        &self,
        opts: &CallOptions,
        build: impl FnOnce() -> R,
    ) -> Result<()> {
        if !R::HAS_READ_TS {
            return Ok(());
        }
        let Some(validator) = &self.read_ts_validator else {
            return Ok(());
        };
        // Whether the read is stale is the call's read mode: each attempt's context flag is
        // written from it (`start_attempt`), whatever the built request says.
        let Some(ts) = build().read_ts() else {
            return Ok(());
        };
        let stale = opts.read.stale_read && R::ACCESS == Access::Read;
        validator
            .validate_read_ts(Timestamp::from_version(ts), stale)
            .await
    }

    /// Sends `req` to region `region`, retrying as the answers direct, within `bo`'s budget.
    /// Each attempt sends a copy.
    pub(crate) async fn send_to_region<R: KvRequest>(
        &self,
        bo: &mut Backoffer,
        req: &R,
        region: RegionVerId,
        opts: &CallOptions,
    ) -> std::result::Result<RegionOutcome<R::Response>, SendError> {
        self.send_built(bo, region, opts, || req.clone()).await
    }

    /// [`send_to_region`](SenderCore::send_to_region) with each attempt's request made by
    /// `build` instead of copied from one made beforehand: a caller that can build the request
    /// from what it holds anyway saves one whole request per call.
    pub(crate) async fn send_built<R: KvRequest>(
        &self,
        bo: &mut Backoffer,
        region: RegionVerId,
        opts: &CallOptions,
        build: impl Fn() -> R + Sync,
    ) -> std::result::Result<RegionOutcome<R::Response>, SendError> {
        let mut had_rpc_error = false;
        match self
            .send_attempts(bo, region, opts, build, &mut had_rpc_error)
            .await
        {
            Ok(outcome) => Ok(outcome),
            Err(error) => Err(SendError::new(error, had_rpc_error)),
        }
    }

    /// The retry loop of [`send_built`](SenderCore::send_built); `had_rpc_error` is set as
    /// soon as an attempt fails in the transport, whatever happens next.
    async fn send_attempts<R: KvRequest>(
        &self,
        bo: &mut Backoffer,
        region: RegionVerId,
        opts: &CallOptions,
        build: impl Fn() -> R + Sync,
        had_rpc_error: &mut bool,
    ) -> Result<RegionOutcome<R::Response>> {
        self.validate_read_ts(opts, &build).await?;
        let Some(mut selector) =
            ReplicaSelector::new(&self.cache, region, self.enable_forwarding, opts, R::ACCESS)
        else {
            return Ok(relocate(no_replica_error(), *had_rpc_error));
        };
        let mut attempts = 0u32;
        // Retries that slept nothing since the last sleep (see `IMMEDIATE_RETRIES_PER_REPLICA`).
        let mut immediate_retries = 0u32;
        let mut slept_mark = bo.total_sleep();
        loop {
            if self.is_closed() {
                return Err(Error::Closed);
            }
            let Some(route) = selector.next(&self.cache, opts).await? else {
                if let Some((kind, err)) = selector.take_largest_pending_backoff() {
                    bo.backoff(kind, err).await?;
                }
                return Ok(relocate(no_replica_error(), *had_rpc_error));
            };
            // Busy answers are booked on the target's store, also when forwarded.
            let target_store_id = selector.store(route.target).id();
            if let Some((kind, err)) = selector.take_pending_backoff(target_store_id) {
                bo.backoff(kind, err).await?;
            }
            let result = self
                .send_once(
                    &build,
                    &route,
                    selector.send_store(&route),
                    attempts,
                    opts,
                    bo,
                )
                .await;
            attempts += 1;
            let (wire, took) = match result {
                Ok(answer) => answer,
                Err(Attempt::Fatal(err)) => return Err(err),
                Err(Attempt::Lost(err)) => {
                    *had_rpc_error = true;
                    return Err(err);
                }
                Err(Attempt::Failed(err, took)) => {
                    selector.record_attempt_time(took);
                    *had_rpc_error = true;
                    Box::pin(self.on_send_fail(bo, &mut selector, &route, err)).await?;
                    continue;
                }
            };
            selector.record_attempt_time(took);
            // Neither the answer nor the unboxed error may stay in this future across the await
            // below: both are about a kilobyte, and this future is copied whenever its callers'
            // move. Their bindings live in this block only (a binding moved from before an await
            // still takes room in the future while its scope lasts).
            let region_err = {
                let mut resp = R::response_from(wire)?;
                match resp.take_region_error() {
                    Some(region_err) => Box::new(region_err),
                    None => {
                        selector.on_send_success(&route);
                        return Ok(RegionOutcome::Done(Reply {
                            resp,
                            #[cfg(test)]
                            region: route.region,
                            #[cfg(test)]
                            store_id: selector.store(route.target).id(),
                            #[cfg(test)]
                            attempts,
                            had_rpc_error: *had_rpc_error,
                        }));
                    }
                }
            };
            match Box::pin(self.on_region_error(bo, &mut selector, &route, &region_err)).await? {
                Reaction::Retry => {
                    if bo.total_sleep() == slept_mark {
                        immediate_retries += 1;
                    } else {
                        immediate_retries = 0;
                        slept_mark = bo.total_sleep();
                    }
                    if immediate_retries >= immediate_retry_cap(&selector) {
                        // Replicas that keep naming each other (or themselves) leader, or keep
                        // answering StaleCommand, would be retried forever without a sleep:
                        // charge the budget so it ends such a loop.
                        immediate_retries = 0;
                        let typed = Error::from_region_error(Some(region.id()), *region_err);
                        bo.backoff(BackoffKind::RegionScheduling, typed).await?;
                        slept_mark = bo.total_sleep();
                    }
                    continue;
                }
                Reaction::Relocate => {
                    return Ok(RegionOutcome::Relocate {
                        error: region_err,
                        had_rpc_error: *had_rpc_error,
                    });
                }
            }
        }
    }

    /// One attempt: addresses a request from `build` to `route` and sends it to `send_store`
    /// (the target's store, or the proxy's when forwarding).
    async fn send_once<R: KvRequest>(
        &self,
        build: &(impl Fn() -> R + Sync),
        route: &AttemptContext,
        send_store: &Store,
        attempts: u32,
        opts: &CallOptions,
        bo: &Backoffer,
    ) -> std::result::Result<(WireResponse, Duration), Attempt> {
        let timeout = attempt_timeout::<R>(route, opts, bo).map_err(Attempt::Fatal)?;
        let _token = match self.store_limit {
            0 => None,
            limit => Some(StoreToken::acquire(send_store, limit).ok_or(Attempt::Fatal(
                Error::StoreTokenLimit {
                    store_id: send_store.id(),
                },
            ))?),
        };
        let started = Instant::now();
        let in_flight = match self.start_attempt(build, route, send_store, attempts, timeout, opts)
        {
            Ok(in_flight) => in_flight,
            Err(err) => return Err(Attempt::Fatal(err)),
        };
        let result = in_flight.await;
        let took = started.elapsed();
        match result {
            Ok(wire) => {
                if let Some(score) = send_store.client_slow_score() {
                    send_store.health().update_tikv_slow_score(score);
                }
                Ok((wire, took))
            }
            // The request went out: it may have been applied (client-go sets `rpcError` for
            // every send error).
            Err(err @ (Error::Closed | Error::Cancelled)) => Err(Attempt::Lost(err)),
            Err(err) => Err(Attempt::Failed(err, took)),
        }
    }

    /// Addresses a request from `build` to `route` and hands it to the transport, returning the
    /// answer's future. Not async on purpose: the request and the command it becomes (each
    /// over half a kilobyte) live only in this frame, never in the caller's future.
    fn start_attempt<R: KvRequest, F: Fn() -> R>(
        &self,
        build: &F,
        route: &AttemptContext,
        send_store: &Store,
        attempts: u32,
        timeout: Duration,
        opts: &CallOptions,
    ) -> Result<impl Future<Output = Result<WireResponse>> + Send + use<R, F>> {
        let mut attempt = build();
        {
            // Everything the selector decided for this attempt, copied in.
            let ctx = attempt.context_mut();
            ctx.region_id = route.region.id();
            ctx.region_epoch = Some(route.region.epoch());
            ctx.peer = Some(route.peer);
            ctx.replica_read = route.replica_read;
            ctx.stale_read = route.stale_read;
            ctx.busy_threshold_ms = route.busy_threshold_ms;
            ctx.is_retry_request = attempts > 0;
            if ctx.max_execution_duration_ms == 0 {
                // TiKV gives up on work whose answer nobody waits for any more; a write gives
                // up well before the client's timeout, so a late apply cannot follow an answer
                // the client already took as lost.
                let limit = match R::ACCESS {
                    Access::Write => timeout.min(MAX_WRITE_EXECUTION_TIME),
                    Access::Read => timeout,
                };
                ctx.max_execution_duration_ms =
                    u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
            }
            if self.cluster_id != 0 {
                ctx.cluster_id = self.cluster_id;
            }
            #[cfg(test)]
            self.attempt_log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(AttemptRecord {
                    store_id: route.peer.store_id,
                    replica_read: ctx.replica_read,
                    stale_read: ctx.stale_read,
                    max_execution_ms: ctx.max_execution_duration_ms,
                });
        }
        let mut send_opts = SendOptions::new(timeout).with_priority(opts.priority);
        if route.proxy.is_some() {
            send_opts = send_opts.with_forwarded_host(route.addr.clone());
        }
        let addr = route.send_addr();
        Ok(match attempt.into_wire() {
            Wire::Batch(cmd) => Either::Left(
                send_store
                    .with_client(&self.transport, addr, |client| client.send(cmd, send_opts))?
                    .map(|r| r.map(WireResponse::Batch)),
            ),
            Wire::Unary(unary) => {
                let client = send_store.with_client(&self.transport, addr, StoreClient::clone)?;
                // Boxed: a unary call's future is over 10 kB, and this path is rare.
                Either::Right(Box::pin(async move {
                    client
                        .unary(unary, send_opts)
                        .await
                        .map(|r| WireResponse::Unary(Box::new(r)))
                }))
            }
        })
    }

    /// The transport failed (client-go `onSendFail`): probe the store, let the selector move
    /// on, and back off before the next attempt.
    async fn on_send_fail(
        &self,
        bo: &mut Backoffer,
        selector: &mut ReplicaSelector,
        route: &AttemptContext,
        err: Error,
    ) -> Result<()> {
        tracing::debug!(region = %route.region, addr = %route.send_addr(), %err, "send failed");
        let store = selector.send_store(route).clone();
        let liveness = self.check_liveness(&store).await;
        selector.on_send_failure(self.cache.store_cache(), route, liveness);
        bo.backoff(BackoffKind::TikvRpc, err).await
    }

    /// The reaction to each region error (client-go `onRegionError`), in errorpb's order.
    async fn on_region_error(
        &self,
        bo: &mut Backoffer,
        selector: &mut ReplicaSelector,
        route: &AttemptContext,
        err: &errorpb::Error,
    ) -> Result<Reaction> {
        let region = route.region;
        let typed = || Error::from_region_error(Some(region.id()), err.clone());
        tracing::debug!(%region, store = selector.store(route.target).id(), error = ?RegionErrorKind::from_proto(err), "region error");

        if err.undetermined_result.is_some() {
            return Err(typed());
        }
        if let Some(not_leader) = &err.not_leader {
            selector.on_not_leader(not_leader.leader.as_ref());
            if not_leader.leader.is_none() {
                // An election is probably under way: give it time.
                bo.backoff(BackoffKind::RegionScheduling, typed()).await?;
            }
            return Ok(Reaction::Retry);
        }
        if err.disk_full.is_some() {
            bo.backoff(BackoffKind::TikvDiskFull, typed())
                .await
                .map_err(|_| typed())?;
            return Ok(Reaction::Retry);
        }
        if err.recovery_in_progress.is_some() {
            self.cache.invalidate_region(region, InvalidReason::Other);
            bo.backoff(BackoffKind::RegionRecoveryInProgress, typed())
                .await?;
            return Ok(Reaction::Relocate);
        }
        if err.is_witness.is_some() {
            self.cache.invalidate_region(region, InvalidReason::Other);
            bo.backoff(BackoffKind::IsWitness, typed()).await?;
            return Ok(Reaction::Relocate);
        }
        // The workload is expected to stop during a flashback: fail at once.
        if err.flashback_in_progress.is_some() || err.flashback_not_prepared.is_some() {
            return Err(typed());
        }
        if err.region_not_found.is_some() {
            return Ok(if selector.on_region_not_found() {
                Reaction::Retry
            } else {
                Reaction::Relocate
            });
        }
        if err.key_not_in_region.is_some() {
            tracing::warn!(%region, "TiKV reports KeyNotInRegion");
            self.cache.invalidate_region(region, InvalidReason::Other);
            return Ok(Reaction::Relocate);
        }
        if let Some(e) = &err.epoch_not_match {
            if self
                .cache
                .on_region_epoch_not_match(
                    selector.region(),
                    selector.store(route.target),
                    &e.current_regions,
                )
                .await?
            {
                return Ok(Reaction::Retry);
            }
            selector.invalidate_region();
            return Ok(Reaction::Relocate);
        }
        if let Some(e) = &err.bucket_version_not_match {
            self.cache
                .on_bucket_version_not_match(region, e.version, &e.keys);
            return Ok(Reaction::Relocate);
        }
        if let Some(busy) = &err.server_is_busy {
            if let Some((kind, e)) =
                selector.on_server_is_busy(route, busy.estimated_wait_ms, typed())
            {
                bo.backoff(kind, e).await?;
            }
            return Ok(Reaction::Retry);
        }
        if err.stale_command.is_some() {
            // The new leader should be elected soon; the selector tries the next peer.
            return Ok(Reaction::Retry);
        }
        if err.store_not_match.is_some() {
            self.cache
                .store_cache()
                .mark_need_check(selector.store(route.target));
            self.cache.invalidate_region(region, InvalidReason::Other);
            // The address may resolve elsewhere now (a moved pod keeps its name).
            self.transport.close_store(route.send_addr());
            return Ok(Reaction::Relocate);
        }
        if err.raft_entry_too_large.is_some() {
            return Err(typed());
        }
        if err.max_timestamp_not_synced.is_some() {
            bo.backoff(BackoffKind::MaxTsNotSynced, typed()).await?;
            return Ok(Reaction::Retry);
        }
        if err.region_not_initialized.is_some() {
            bo.backoff(BackoffKind::RegionNotInitialized, typed())
                .await?;
            return Ok(Reaction::Retry);
        }
        if err.read_index_not_ready.is_some() || err.proposal_in_merging_mode.is_some() {
            // Split or merge in progress: the region serves again when it ends.
            bo.backoff(BackoffKind::RegionScheduling, typed()).await?;
            return Ok(Reaction::Retry);
        }
        if err.data_is_not_ready.is_some() {
            // A stale read's replica is behind: no backoff, the selector sends the next attempt
            // as a normal read (to the leader when it was not tried yet).
            selector.on_data_is_not_ready();
            return Ok(Reaction::Retry);
        }
        if err.mismatch_peer_id.is_some() {
            selector.invalidate_region();
            return Ok(Reaction::Relocate);
        }
        if err.message.contains(INVALID_MAX_TS_UPDATE) {
            return Err(typed());
        }
        // Unknown to this client: the selector tries the next replica; each is tried a bounded
        // number of times, then the region is invalidated and relocated.
        tracing::debug!(%region, error = ?err, "unrecognised region error; trying another replica");
        Ok(Reaction::Retry)
    }

    /// Probes a store after a failure (client-go `requestLivenessAndStartHealthCheckLoopIfNeeded`):
    /// a store found unreachable is watched by a background loop until it answers again.
    pub(crate) async fn check_liveness(&self, store: &Arc<Store>) -> LivenessState {
        let liveness = self.request_liveness(store).await;
        if liveness == LivenessState::Reachable || store.store_type() != StoreType::TiKv {
            return liveness;
        }
        if store.health().leave_reachable(liveness) {
            self.start_health_loop(store.clone());
        }
        liveness
    }

    /// One probe of the store with the gRPC health service, shared by concurrent callers
    /// (client-go `requestLiveness`).
    async fn request_liveness(&self, store: &Arc<Store>) -> LivenessState {
        if self.liveness_timeout.is_zero() {
            return LivenessState::Unreachable;
        }
        let addr = store.address();
        if addr.is_empty() {
            return LivenessState::Unknown;
        }
        let health = store.health();
        let asked_at = Instant::now();
        let mut last = health.probe_slot().lock().await;
        // Someone probed while we waited: their answer is as fresh as ours would be.
        if let Some((at, state)) = *last
            && at >= asked_at
        {
            return state;
        }
        let state = match store.with_client(&self.transport, &addr, StoreClient::clone) {
            Ok(client) => match client.check_liveness(self.liveness_timeout).await {
                Liveness::Reachable => LivenessState::Reachable,
                Liveness::Unreachable => LivenessState::Unreachable,
                _ => LivenessState::Unknown,
            },
            Err(_) => LivenessState::Unknown,
        };
        *last = Some((Instant::now(), state));
        state
    }

    /// One health tick over every known store (client-go `checkAndUpdateStoreHealthStatus` and
    /// `StoreHealthStatus.tick`): the client score takes in the interval's latencies, a TiKV
    /// score gone stale is asked of the reachable store again, and one still stale decays.
    pub(crate) async fn tick_store_health(&self) {
        let now = Instant::now();
        for store in self.cache.store_cache().all() {
            let health = store.health();
            health.tick_client_score();
            if health.tikv_score_needs_refresh(now)
                && health.liveness() == LivenessState::Reachable
                && store.store_type() == StoreType::TiKv
            {
                self.request_health_feedback(&store).await;
            }
            health.decay_tikv_score(now);
        }
    }

    /// Asks a store for fresh health feedback (client-go `requestHealthFeedbackFromKVClient`):
    /// a `GetHealthFeedback` command, whose batch answer carries the feedback the transport
    /// records, copied here into the store's health. Batching off, TiKV has no stream to attach
    /// feedback to, so nothing is learned, as in client-go.
    async fn request_health_feedback(&self, store: &Arc<Store>) {
        let addr = store.address();
        if addr.is_empty() {
            return;
        }
        let Ok(client) = store.with_client(&self.transport, &addr, StoreClient::clone) else {
            return;
        };
        let cmd = tikv_proto::tikvpb::batch_commands_request::request::Cmd::GetHealthFeedback(
            Default::default(),
        );
        match client
            .send(cmd, SendOptions::new(HEALTH_FEEDBACK_TIMEOUT))
            .await
        {
            Ok(_) => {
                if let Some(score) = client.slow_score() {
                    store.health().update_tikv_slow_score(score);
                }
            }
            Err(err) => {
                tracing::warn!(store = store.id(), %err, "asking the store for health feedback failed");
            }
        }
    }

    /// Watches an unreachable store (client-go `startHealthCheckLoop`): probes it every second,
    /// asks PD about it every 30 s, and ends when it answers, when PD says it is gone, or when
    /// the sender closes.
    fn start_health_loop(&self, store: Arc<Store>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = self.me.clone();
        tracing::info!(store = store.id(), addr = %store.address(), "store unreachable; watching it");
        runtime.spawn(async move {
            let mut ticker = tokio::time::interval(HEALTH_CHECK_INTERVAL);
            ticker.tick().await;
            let mut last_pd_check = tokio::time::Instant::now();
            loop {
                ticker.tick().await;
                let Some(core) = me.upgrade() else { return };
                if core.is_closed() || core.cache.is_closed() {
                    return;
                }
                if last_pd_check.elapsed() >= STORE_RE_RESOLVE_INTERVAL {
                    last_pd_check = tokio::time::Instant::now();
                    match core.cache.store_cache().re_resolve(&store).await {
                        Ok(false) => {
                            tracing::info!(store = store.id(), "store removed; stop watching it");
                            return;
                        }
                        Ok(true) => {}
                        Err(err) => tracing::warn!(store = store.id(), %err, "re-resolving unreachable store failed"),
                    }
                }
                let state = core.request_liveness(&store).await;
                store.health().set_liveness(state);
                if state == LivenessState::Reachable {
                    tracing::info!(store = store.id(), "store reachable again");
                    return;
                }
            }
        });
    }
}

/// The health tick task: runs [`SenderCore::tick_store_health`] every `period` until the
/// sender or its cache closes, or the sender is dropped (it holds the sender weakly).
async fn health_ticks(me: Weak<SenderCore>, period: Duration) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(core) = me.upgrade() else { return };
        if core.is_closed() || core.cache.is_closed() {
            return;
        }
        core.tick_store_health().await;
    }
}

/// The time one attempt may wait for its answer: the call's timeout, cut to what is left
/// before the backoffer's deadline. A passed deadline is a timeout error.
fn attempt_timeout<R: KvRequest>(
    route: &AttemptContext,
    opts: &CallOptions,
    bo: &Backoffer,
) -> Result<Duration> {
    let Some(deadline) = bo.deadline() else {
        return Ok(opts.timeout);
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout {
            operation: format!("{} to region {}", R::NAME, route.region),
            after: opts.timeout,
        });
    }
    Ok(opts.timeout.min(left))
}

/// How many retries in a row one request may make without any sleep, per replica of the
/// region, before one is charged to the budget. client-go has no such bound (a replica named
/// leader gets its attempts back, so NotLeader naming a replica that refuses, or StaleCommand,
/// retries forever); this is generous enough never to fire on a real leader change.
const IMMEDIATE_RETRIES_PER_REPLICA: u32 = MAX_REPLICA_ATTEMPTS;

/// The number of immediate retries after which the request sleeps (a RegionScheduling
/// backoff): [`IMMEDIATE_RETRIES_PER_REPLICA`] for each replica of the region.
fn immediate_retry_cap(selector: &ReplicaSelector) -> u32 {
    let replicas = u32::try_from(selector.region().tikv_peer_indexes().len()).unwrap_or(u32::MAX);
    IMMEDIATE_RETRIES_PER_REPLICA.saturating_mul(replicas.max(1))
}

/// A failed attempt: `Fatal` ends the request, `Lost` ends it after the request went out (its
/// effect unknown), `Failed` is a transport failure to handle.
enum Attempt {
    Fatal(Error),
    Lost(Error),
    Failed(Error, Duration),
}

/// A store-limit token, returned on drop.
struct StoreToken<'a>(&'a Store);

impl<'a> StoreToken<'a> {
    fn acquire(store: &'a Store, limit: u64) -> Option<StoreToken<'a>> {
        store
            .health()
            .try_acquire_token(limit)
            .then_some(StoreToken(store))
    }
}

impl Drop for StoreToken<'_> {
    fn drop(&mut self) {
        self.0.health().release_token();
    }
}

fn relocate<T>(error: errorpb::Error, had_rpc_error: bool) -> RegionOutcome<T> {
    RegionOutcome::Relocate {
        error: Box::new(error),
        had_rpc_error,
    }
}

/// The error given back when the cache has no usable replica of the region (client-go's
/// pseudo EpochNotMatch): the caller relocates after a backoff, as for any EpochNotMatch
/// without the current regions.
fn no_replica_error() -> errorpb::Error {
    errorpb::Error {
        message: "no replica of the region is available in the cache".into(),
        epoch_not_match: Some(errorpb::EpochNotMatch::default()),
        ..Default::default()
    }
}
