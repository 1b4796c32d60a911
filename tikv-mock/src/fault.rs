//! Fault rules: the rule types of the mock's public fault API, the engine every server asks
//! before and after executing a request, and the construction of realistic region errors.
//!
//! A [`FaultRule`] matches requests ([`Matcher`]), fires at a [`Phase`] (before execution, or
//! after the request was applied so that its outcome is ambiguous to the client), performs an
//! [`Action`], and fires a bounded number of times ([`Times`]).
//!
//! Who calls what: tests install rules through `MockCluster::add_fault` (server.rs); the PD and
//! TiKV services (pd.rs, tikv.rs) call [`FaultEngine::check`] for every request, unary or
//! BatchCommands sub-request, at [`Phase::Before`] and again at [`Phase::AfterApply`], and turn a
//! [`RegionErrorSpec`] into the wire error with [`materialize`] while holding the state lock.
//!
//! Region errors follow TiKV's raftstore (`components/raftstore/src/errors.rs`, the
//! `From<Error> for errorpb::Error` conversion) and storage (`src/storage/errors.rs`) for field
//! contents and message texts; `mock-cluster-spec.md` §4.2 lists when TiKV produces each one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::{errorpb, kvrpcpb};

use crate::cluster::{ClusterState, RegionState, region_not_found};

/// TiKV's default `raftstore.raft-entry-max-size` (8 MiB); an injected RaftEntryTooLarge
/// reports an entry one byte over it.
const RAFT_ENTRY_MAX_SIZE: u64 = 8 * 1024 * 1024;

/// How far behind the current time an injected DataIsNotReady puts the replica's safe ts.
const DATA_NOT_READY_LAG_MS: u64 = 1_000;

/// Identifies an installed rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultId(pub u64);

/// Which server a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Service {
    /// The PD server (`pdpb.PD`, `keyspacepb.Keyspace`).
    Pd,
    /// A TiKV store (`tikvpb.Tikv`).
    Tikv,
    /// A router server of PD's router microservice (`routerpb.Router`); a rule's store is the
    /// server's index.
    Router,
}

/// When a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Phase {
    /// Before the request executes: nothing is applied.
    #[default]
    Before,
    /// After the request was applied: the client's view of the outcome is ambiguous.
    AfterApply,
}

/// Which requests a rule applies to; every set field must match.
///
/// Build one with [`Matcher::any`], [`Matcher::pd`] or [`Matcher::tikv`] and narrow it:
///
/// ```
/// use tikv_mock::Matcher;
///
/// let m = Matcher::tikv().store(1).command("RawPut").keys("a", "c").batched(false);
/// assert_eq!(m.command.as_deref(), Some("RawPut"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Matcher {
    /// The server.
    pub service: Option<Service>,
    /// The store that handles the request: the one the client sent it to, or for a forwarded
    /// request (`tikv-forwarded-host`) the store it was forwarded to.
    pub store_id: Option<u64>,
    /// The gRPC method name, e.g. `RawGet`, `KvPrewrite`, `GetRegion`, `Tso`.
    pub command: Option<String>,
    /// The region in the request's context.
    pub region_id: Option<u64>,
    /// Wire keys: matches when any key of the request (or a range's start) is in
    /// `[start, end)`; an empty end is unbounded. A request without keys never matches.
    pub key_range: Option<(Bytes, Bytes)>,
    /// The transaction start timestamp of the request.
    pub start_ts: Option<u64>,
    /// Only BatchCommands sub-requests (`true`) or only unary calls (`false`).
    pub batched: Option<bool>,
    /// Only requests another store forwarded on the client's behalf (`true`), or only requests
    /// the client sent straight to the store that handles them (`false`).
    pub forwarded: Option<bool>,
    /// Only requests forwarded by this store (the one the client sent them to).
    pub via_store: Option<u64>,
}

impl Matcher {
    /// Matches every request to every server.
    pub fn any() -> Self {
        Self::default()
    }

    /// Matches every request to the PD server.
    pub fn pd() -> Self {
        Self::any().service(Service::Pd)
    }

    /// Matches every request to any TiKV store.
    pub fn tikv() -> Self {
        Self::any().service(Service::Tikv)
    }

    /// Matches every request to any router server
    /// ([`MockClusterBuilder::router_microservice`](crate::MockClusterBuilder::router_microservice)).
    pub fn router() -> Self {
        Self::any().service(Service::Router)
    }

    /// Matches every request to router server `index`.
    pub fn router_server(index: usize) -> Self {
        Self::router().store(index as u64)
    }

    /// Only requests to this server.
    pub fn service(mut self, service: Service) -> Self {
        self.service = Some(service);
        self
    }

    /// Only requests this store handles (never PD requests): those sent to it, and those
    /// another store forwarded to it. Combine with [`Matcher::forwarded`] or [`Matcher::via`]
    /// to tell them apart.
    pub fn store(mut self, store_id: u64) -> Self {
        self.store_id = Some(store_id);
        self
    }

    /// Only this gRPC method, by its exact name (`RawGet`, `KvCommit`, `GetRegion`, `Tso`, ...).
    pub fn command(mut self, name: impl Into<String>) -> Self {
        self.command = Some(name.into());
        self
    }

    /// Only requests whose context names this region.
    pub fn region(mut self, region_id: u64) -> Self {
        self.region_id = Some(region_id);
        self
    }

    /// Only requests with a wire key in `[start, end)`; an empty `end` is unbounded.
    pub fn keys(mut self, start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> Self {
        self.key_range = Some((
            Bytes::copy_from_slice(start.as_ref()),
            Bytes::copy_from_slice(end.as_ref()),
        ));
        self
    }

    /// Only requests that carry exactly this wire key (among others).
    pub fn key(self, key: impl AsRef<[u8]>) -> Self {
        let start = key.as_ref();
        // The smallest key after `start` in byte order is `start` followed by a zero byte.
        let mut end = Vec::with_capacity(start.len() + 1);
        end.extend_from_slice(start);
        end.push(0);
        self.keys(start, end)
    }

    /// Only requests of the transaction that started at `start_ts`.
    pub fn start_ts(mut self, start_ts: u64) -> Self {
        self.start_ts = Some(start_ts);
        self
    }

    /// Only BatchCommands sub-requests (`true`) or only unary calls (`false`).
    pub fn batched(mut self, batched: bool) -> Self {
        self.batched = Some(batched);
        self
    }

    /// Only forwarded requests (`true`) or only direct ones (`false`). A partition between the
    /// client and store T, with T still reachable from the other stores, is
    /// `Matcher::tikv().store(T).forwarded(false)` with a gRPC UNAVAILABLE status, fired
    /// [`Times::Always`]: the client's own requests to T fail, those forwarded to T succeed.
    pub fn forwarded(mut self, forwarded: bool) -> Self {
        self.forwarded = Some(forwarded);
        self
    }

    /// Only requests forwarded by this store, i.e. sent by the client to `store_id` with
    /// `tikv-forwarded-host` naming another store ([`Matcher::store`] names that other store).
    pub fn via(mut self, store_id: u64) -> Self {
        self.via_store = Some(store_id);
        self
    }

    /// Whether every field that is set matches the request. A field the request does not have
    /// (a store id for a PD request, a start ts for a raw request) does not match a set field.
    pub(crate) fn matches(&self, info: &RequestInfo<'_>) -> bool {
        self.service.is_none_or(|s| s == info.service)
            && self.store_id.is_none_or(|s| info.store_id == Some(s))
            && self.command.as_deref().is_none_or(|c| c == info.command)
            && self.region_id.is_none_or(|r| info.region_id == Some(r))
            && self.key_range.as_ref().is_none_or(|(start, end)| {
                info.keys
                    .iter()
                    .any(|k| k >= start && (end.is_empty() || k < end))
            })
            && self.start_ts.is_none_or(|ts| info.start_ts == Some(ts))
            && self.batched.is_none_or(|b| b == info.batched)
            && self
                .forwarded
                .is_none_or(|f| f == info.forwarded_via.is_some())
            && self.via_store.is_none_or(|v| info.forwarded_via == Some(v))
    }
}

/// A region error, filled from the cluster's live state when the rule fires.
///
/// [`RegionErrorSpec::Raw`] sends an error exactly as given; every other variant is built by the
/// mock from the region the request addressed, the way TiKV would report it (see each variant).
/// A request whose region is unknown gets the same error with the request's region id (0 when
/// the request names none) and no region data.
// Rules are built a handful of times per test, so boxing `Raw` to shrink the enum would only make
// the public API clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RegionErrorSpec {
    /// NotLeader naming the region's current leader.
    NotLeader,
    /// NotLeader without a leader (an election is in progress).
    NotLeaderNoLeader,
    /// EpochNotMatch with the current region and the regions split off it by its latest split
    /// (what TiKV answers a client whose cache predates that split).
    EpochNotMatch,
    /// RegionNotFound.
    RegionNotFound,
    /// KeyNotInRegion with the region's range; the key is the region's end key (the first key
    /// outside it), or the empty key for a region that is unbounded on the right.
    KeyNotInRegion,
    /// ServerIsBusy.
    ServerIsBusy {
        /// TiKV's reason text, e.g. `scheduler is busy`, `raftstore is busy`,
        /// `estimated wait time exceeds threshold`, `deadline is exceeded`.
        reason: String,
        /// Estimated wait in milliseconds.
        estimated_wait_ms: u32,
    },
    /// StaleCommand.
    StaleCommand,
    /// StoreNotMatch naming the receiving store as both the requested and the actual store.
    StoreNotMatch,
    /// RaftEntryTooLarge with an entry one byte over TiKV's default 8 MiB limit.
    RaftEntryTooLarge,
    /// MaxTimestampNotSynced.
    MaxTimestampNotSynced,
    /// ReadIndexNotReady with TiKV's "can not read index due to split" reason.
    ReadIndexNotReady,
    /// ProposalInMergingMode.
    ProposalInMergingMode,
    /// DataIsNotReady for the receiving store's peer, with a safe ts one second behind the
    /// cluster's current time.
    DataIsNotReady,
    /// RegionNotInitialized.
    RegionNotInitialized,
    /// DiskFull on the receiving store.
    DiskFull,
    /// RecoveryInProgress.
    RecoveryInProgress,
    /// FlashbackInProgress, with the TSO's current timestamp as the flashback's start ts.
    FlashbackInProgress,
    /// FlashbackNotPrepared.
    FlashbackNotPrepared,
    /// IsWitness.
    IsWitness,
    /// MismatchPeerId: the request's peer is the receiving store's current peer, and the store
    /// claims a newer peer id no region uses (as after the peer was removed and re-added).
    MismatchPeerId,
    /// BucketVersionNotMatch with one bucket covering the region.
    BucketVersionNotMatch,
    /// UndeterminedResult.
    UndeterminedResult,
    /// Exactly this error.
    Raw(errorpb::Error),
}

/// Releases requests held by an [`Action::Hang`].
#[derive(Debug, Clone)]
pub struct HangHandle {
    released: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for HangHandle {
    fn default() -> Self {
        HangHandle {
            released: std::sync::Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl HangHandle {
    /// A new handle; requests hang until [`HangHandle::release`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Releases every request held by this handle, now and later.
    pub fn release(&self) {
        self.released.send_replace(true);
    }

    /// Whether [`HangHandle::release`] was called (by the test, or by clearing the rules).
    pub fn is_released(&self) -> bool {
        *self.released.borrow()
    }

    /// Waits until released.
    pub(crate) async fn wait(&self) {
        let mut rx = self.released.subscribe();
        let _ = rx.wait_for(|released| *released).await;
    }
}

/// What a rule does.
// Large for the same reason as `RegionErrorSpec`, and cloned only when a rule fires.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Action {
    /// Answer with a region error.
    RegionError(RegionErrorSpec),
    /// Answer with a key error (in the response's error field).
    KeyError(kvrpcpb::KeyError),
    /// Fail the call with a gRPC status (for a BatchCommands sub-request: the whole stream).
    Status {
        /// The status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// Delay the response.
    Delay(Duration),
    /// Never answer (the client times out).
    Drop,
    /// Hold the request until the handle is released, then go on.
    Hang(HangHandle),
}

impl Action {
    /// Answer with a region error built from live state.
    pub fn region_error(spec: RegionErrorSpec) -> Self {
        Action::RegionError(spec)
    }

    /// Answer with a key error.
    pub fn key_error(error: kvrpcpb::KeyError) -> Self {
        Action::KeyError(error)
    }

    /// Fail the call with a gRPC status.
    pub fn status(code: tonic::Code, message: impl Into<String>) -> Self {
        Action::Status {
            code,
            message: message.into(),
        }
    }

    /// Delay the response.
    pub fn delay(by: Duration) -> Self {
        Action::Delay(by)
    }

    /// Hold matching requests until `handle` is released.
    pub fn hang(handle: &HangHandle) -> Self {
        Action::Hang(handle.clone())
    }
}

/// How often a rule fires.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Times {
    /// Once, then the rule is removed.
    Once,
    /// N times, then the rule is removed (`N(0)` never fires and is not kept).
    N(u64),
    /// Every match.
    Always,
    /// Each match with probability `p`, drawn from a generator seeded with `seed`.
    Probability {
        /// Probability in [0, 1].
        p: f64,
        /// Seed of the deterministic generator.
        seed: u64,
    },
}

impl Times {
    /// Each match with probability `p` (clamped to [0, 1]), deterministic for a `seed`.
    pub fn probability(p: f64, seed: u64) -> Self {
        Times::Probability { p, seed }
    }
}

/// A fault rule.
///
/// ```
/// use tikv_mock::{Action, FaultRule, Matcher, Phase, RegionErrorSpec, Times};
///
/// // The next two RawPut requests to store 1 are applied, then answered with NotLeader.
/// let rule = FaultRule::new(
///     Matcher::tikv().store(1).command("RawPut"),
///     Action::region_error(RegionErrorSpec::NotLeader),
/// )
/// .phase(Phase::AfterApply)
/// .times(Times::N(2));
/// # let _ = rule;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FaultRule {
    /// Which requests.
    pub matcher: Matcher,
    /// When.
    pub phase: Phase,
    /// What.
    pub action: Action,
    /// How often.
    pub times: Times,
}

impl FaultRule {
    /// A rule that fires once, before execution. A forgotten rule that fires forever turns a
    /// client's retries into a hang, so rules that should keep firing say so with
    /// [`FaultRule::times`].
    pub fn new(matcher: Matcher, action: Action) -> Self {
        FaultRule {
            matcher,
            phase: Phase::Before,
            action,
            times: Times::Once,
        }
    }

    /// Fires at this phase.
    pub fn phase(mut self, phase: Phase) -> Self {
        self.phase = phase;
        self
    }

    /// Fires after the request was applied ([`Phase::AfterApply`]).
    pub fn after_apply(self) -> Self {
        self.phase(Phase::AfterApply)
    }

    /// Fires this often.
    pub fn times(mut self, times: Times) -> Self {
        self.times = times;
        self
    }
}

/// What the server knows about a request when rules are checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestInfo<'a> {
    pub(crate) service: Service,
    pub(crate) store_id: Option<u64>,
    pub(crate) command: &'a str,
    pub(crate) region_id: Option<u64>,
    pub(crate) keys: &'a [Bytes],
    pub(crate) start_ts: Option<u64>,
    pub(crate) batched: bool,
    /// For a request forwarded to `store_id`: the store the client sent it to.
    pub(crate) forwarded_via: Option<u64>,
}

/// SplitMix64: a tiny generator with good statistical quality, enough for fault sampling and
/// fully determined by its seed (each rule has its own, so rules do not perturb each other).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1): the top 53 bits, the precision of an f64 mantissa.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A rule with its firing state.
#[derive(Debug)]
struct Installed {
    id: FaultId,
    rule: FaultRule,
    /// Firings left before the rule is removed; `None` for rules without a bound.
    remaining: Option<u64>,
    rng: SplitMix64,
}

impl Installed {
    /// Whether the rule fires for a request that matched it; draws for probabilistic rules.
    fn draw(&mut self) -> bool {
        match self.rule.times {
            Times::Probability { p, .. } => self.rng.next_unit() < p,
            Times::Once | Times::N(_) | Times::Always => true,
        }
    }
}

/// The installed rules, in installation order.
#[derive(Debug, Default)]
pub(crate) struct FaultEngine {
    rules: Mutex<Vec<Installed>>,
    /// Mirrors `rules.len()` (written under the mutex) so that [`FaultEngine::check`], which
    /// every request calls, costs one relaxed load when no rule is installed.
    installed: AtomicUsize,
    next_id: AtomicU64,
    /// Hangs of bounded rules that removed themselves by firing: the requests they hold are
    /// still held, and [`FaultEngine::clear`] must release them too.
    spent_hangs: Mutex<Vec<HangHandle>>,
}

impl FaultEngine {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Installed>> {
        // A panic elsewhere while holding the lock leaves the list itself consistent.
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs a rule after the existing ones.
    pub(crate) fn add(&self, rule: FaultRule) -> FaultId {
        let id = FaultId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let (remaining, seed) = match rule.times {
            Times::Once => (Some(1), 0),
            Times::N(0) => return id,
            Times::N(n) => (Some(n), 0),
            Times::Always => (None, 0),
            Times::Probability { seed, .. } => (None, seed),
        };
        let mut rules = self.lock();
        rules.push(Installed {
            id,
            rule,
            remaining,
            rng: SplitMix64(seed),
        });
        self.installed.store(rules.len(), Ordering::Relaxed);
        id
    }

    /// Removes a rule; requests it holds in a hang stay held until its handle is released.
    pub(crate) fn remove(&self, id: FaultId) -> bool {
        let mut rules = self.lock();
        let before = rules.len();
        rules.retain(|r| r.id != id);
        self.installed.store(rules.len(), Ordering::Relaxed);
        rules.len() != before
    }

    /// Removes every rule and releases every request held by a hang of a removed rule.
    pub(crate) fn clear(&self) {
        let removed = {
            let mut rules = self.lock();
            // Under the lock, or a rule added right after could be hidden from the fast path.
            self.installed.store(0, Ordering::Relaxed);
            std::mem::take(&mut *rules)
        };
        for installed in removed {
            if let Action::Hang(handle) = &installed.rule.action {
                handle.release();
            }
        }
        let spent =
            std::mem::take(&mut *self.spent_hangs.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in spent {
            handle.release();
        }
    }

    /// The number of installed rules.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether any rule is installed: callers skip building request details otherwise.
    pub(crate) fn has_rules(&self) -> bool {
        self.installed.load(Ordering::Relaxed) != 0
    }

    /// The action of the first rule (in installation order) that matches `info` at `phase` and
    /// whose [`Times`] lets it fire, counting the firing; a bounded rule is removed by its last
    /// firing. A probabilistic rule that draws "no" lets later rules fire.
    pub(crate) fn check(&self, info: &RequestInfo<'_>, phase: Phase) -> Option<Action> {
        if self.installed.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut rules = self.lock();
        let index = rules.iter_mut().position(|r| {
            r.rule.phase == phase
                && r.remaining != Some(0)
                && r.rule.matcher.matches(info)
                && r.draw()
        })?;
        let fired = &mut rules[index];
        let action = fired.rule.action.clone();
        if let Some(remaining) = fired.remaining.as_mut() {
            *remaining -= 1;
            if *remaining == 0 {
                let spent = rules.remove(index);
                self.installed.store(rules.len(), Ordering::Relaxed);
                if let Action::Hang(handle) = spent.rule.action {
                    self.spent_hangs
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(handle);
                }
            }
        }
        Some(action)
    }
}

/// Builds the region error a spec describes from the live state of the region the request
/// addressed, as received by `store_id`.
pub(crate) fn materialize(
    spec: &RegionErrorSpec,
    state: &ClusterState,
    region_id: Option<u64>,
    store_id: Option<u64>,
) -> errorpb::Error {
    let region = region_id.and_then(|id| state.region(id));
    // An unknown region keeps the id the request named, so the client sees its own region.
    let id = region.map_or(region_id.unwrap_or(0), RegionState::id);
    let store = store_id.unwrap_or(0);
    let error = |message: String| errorpb::Error {
        message,
        ..Default::default()
    };
    match spec {
        RegionErrorSpec::Raw(e) => e.clone(),
        RegionErrorSpec::NotLeader => match region {
            Some(r) => {
                let mut e = state.not_leader(r);
                e.message = not_leader_message(id, r.leader_peer());
                e
            }
            None => no_leader(id),
        },
        RegionErrorSpec::NotLeaderNoLeader => no_leader(id),
        RegionErrorSpec::EpochNotMatch => match region {
            Some(r) => {
                let mut sent = r.meta.region_epoch.unwrap_or_default();
                // As answered to a request one version behind: the region plus the regions its
                // latest split created.
                sent.version = sent.version.saturating_sub(1);
                state.epoch_not_match(r, sent)
            }
            None => errorpb::Error {
                epoch_not_match: Some(errorpb::EpochNotMatch::default()),
                ..error(format!("EpochNotMatch region {id} is unknown"))
            },
        },
        RegionErrorSpec::RegionNotFound => region_not_found(id),
        RegionErrorSpec::KeyNotInRegion => {
            let (start_key, end_key) = region.map_or_else(Default::default, |r| {
                (r.meta.start_key.clone(), r.meta.end_key.clone())
            });
            let key = end_key.clone();
            errorpb::Error {
                key_not_in_region: Some(errorpb::KeyNotInRegion {
                    key: key.clone(),
                    region_id: id,
                    start_key: start_key.clone(),
                    end_key: end_key.clone(),
                }),
                ..error(format!(
                    "key {} is not in region key range [{}, {}) for region {id}",
                    hex(&key),
                    hex(&start_key),
                    hex(&end_key)
                ))
            }
        }
        RegionErrorSpec::ServerIsBusy {
            reason,
            estimated_wait_ms,
        } => errorpb::Error {
            server_is_busy: Some(errorpb::ServerIsBusy {
                reason: reason.clone(),
                estimated_wait_ms: *estimated_wait_ms,
                ..Default::default()
            }),
            ..error(format!("server is busy, reason: {reason}"))
        },
        RegionErrorSpec::StaleCommand => errorpb::Error {
            stale_command: Some(errorpb::StaleCommand {}),
            ..error("stale command".to_owned())
        },
        RegionErrorSpec::StoreNotMatch => errorpb::Error {
            store_not_match: Some(errorpb::StoreNotMatch {
                request_store_id: store,
                actual_store_id: store,
            }),
            ..error(format!("to store id {store}, mine {store}"))
        },
        RegionErrorSpec::RaftEntryTooLarge => {
            let entry_size = RAFT_ENTRY_MAX_SIZE + 1;
            errorpb::Error {
                raft_entry_too_large: Some(errorpb::RaftEntryTooLarge {
                    region_id: id,
                    entry_size,
                }),
                ..error(format!(
                    "raft entry is too large, region {id}, entry size {entry_size}"
                ))
            }
        }
        RegionErrorSpec::MaxTimestampNotSynced => errorpb::Error {
            max_timestamp_not_synced: Some(errorpb::MaxTimestampNotSynced {}),
            ..error(format!(
                "write fails due to potentially stale max timestamp, region_id: {id}"
            ))
        },
        RegionErrorSpec::ReadIndexNotReady => {
            let reason = "can not read index due to split";
            errorpb::Error {
                read_index_not_ready: Some(errorpb::ReadIndexNotReady {
                    reason: reason.to_owned(),
                    region_id: id,
                }),
                ..error(format!(
                    "read index not ready, reason {reason}, region {id}"
                ))
            }
        }
        RegionErrorSpec::ProposalInMergingMode => errorpb::Error {
            proposal_in_merging_mode: Some(errorpb::ProposalInMergingMode { region_id: id }),
            ..error(format!("{id} peer in merging mode, can't do proposal"))
        },
        RegionErrorSpec::DataIsNotReady => {
            let peer_id = region
                .and_then(|r| r.peer_on_store(store).or_else(|| r.leader_peer()))
                .map_or(0, |p| p.id);
            let now = state.tso.peek(state.clock.now_ms());
            let lagging = crate::tso::physical_of(now).saturating_sub(DATA_NOT_READY_LAG_MS);
            let safe_ts = crate::tso::compose(lagging, 0);
            errorpb::Error {
                data_is_not_ready: Some(errorpb::DataIsNotReady {
                    region_id: id,
                    peer_id,
                    safe_ts,
                }),
                ..error(format!(
                    "peer {peer_id} is not ready, safe_ts {safe_ts}, region {id}"
                ))
            }
        }
        RegionErrorSpec::RegionNotInitialized => errorpb::Error {
            region_not_initialized: Some(errorpb::RegionNotInitialized { region_id: id }),
            ..error(format!("region {id} not initialized yet"))
        },
        RegionErrorSpec::DiskFull => {
            let reason = "propose failed: tikv disk full, cmd diskFullOpt=NotAllowedOnFull, \
                          leader diskUsage=AlreadyFull";
            errorpb::Error {
                disk_full: Some(errorpb::DiskFull {
                    store_id: vec![store],
                    reason: reason.to_owned(),
                }),
                ..error(format!("store ids [{store}], errmsg {reason}"))
            }
        }
        RegionErrorSpec::RecoveryInProgress => errorpb::Error {
            recovery_in_progress: Some(errorpb::RecoveryInProgress { region_id: id }),
            ..error(format!("region {id} is in the recovery progress"))
        },
        RegionErrorSpec::FlashbackInProgress => {
            let flashback_start_ts = state.tso.peek(state.clock.now_ms());
            errorpb::Error {
                flashback_in_progress: Some(errorpb::FlashbackInProgress {
                    region_id: id,
                    flashback_start_ts,
                }),
                ..error(format!(
                    "region {id} is in the flashback progress with start_ts {flashback_start_ts}"
                ))
            }
        }
        RegionErrorSpec::FlashbackNotPrepared => errorpb::Error {
            flashback_not_prepared: Some(errorpb::FlashbackNotPrepared { region_id: id }),
            ..error(format!("region {id} not prepared the flashback"))
        },
        RegionErrorSpec::IsWitness => errorpb::Error {
            is_witness: Some(errorpb::IsWitness { region_id: id }),
            ..error(format!("peer is a witness of region {id}"))
        },
        RegionErrorSpec::MismatchPeerId => {
            let request_peer_id = region
                .and_then(|r| r.peer_on_store(store))
                .map_or(0, |p| p.id);
            let store_peer_id = unused_id(state);
            errorpb::Error {
                mismatch_peer_id: Some(errorpb::MismatchPeerId {
                    request_peer_id,
                    store_peer_id,
                }),
                ..error(format!(
                    "mismatch peer id {request_peer_id} != {store_peer_id}"
                ))
            }
        }
        RegionErrorSpec::BucketVersionNotMatch => {
            let (version, keys) = region.map_or_else(Default::default, |r| {
                (
                    r.meta.region_epoch.as_ref().map_or(0, |e| e.version),
                    vec![r.meta.start_key.clone(), r.meta.end_key.clone()],
                )
            });
            errorpb::Error {
                bucket_version_not_match: Some(errorpb::BucketVersionNotMatch { version, keys }),
                ..error(format!(
                    "bucket version not match for region {id}, current version {version}"
                ))
            }
        }
        RegionErrorSpec::UndeterminedResult => {
            let message = format!("the result of the request to region {id} is undetermined");
            errorpb::Error {
                undetermined_result: Some(errorpb::UndeterminedResult {
                    message: message.clone(),
                }),
                ..error(message)
            }
        }
    }
}

/// NotLeader without a leader, as a peer answers while an election is under way.
fn no_leader(region_id: u64) -> errorpb::Error {
    errorpb::Error {
        message: not_leader_message(region_id, None),
        not_leader: Some(errorpb::NotLeader {
            region_id,
            leader: None,
        }),
        ..Default::default()
    }
}

/// TiKV's NotLeader text, which names the leader it believes in (if any).
fn not_leader_message(region_id: u64, leader: Option<&tikv_proto::metapb::Peer>) -> String {
    match leader {
        Some(p) => format!(
            "peer is not leader for region {region_id}, leader may Some(id: {} store_id: {})",
            p.id, p.store_id
        ),
        None => format!("peer is not leader for region {region_id}, leader may None"),
    }
}

/// An id above every region, peer and store id in use: what a re-created peer would get.
fn unused_id(state: &ClusterState) -> u64 {
    let regions = state
        .all_regions()
        .flat_map(|r| std::iter::once(r.id()).chain(r.meta.peers.iter().map(|p| p.id)));
    regions
        .chain(state.stores.keys().copied())
        .max()
        .unwrap_or(0)
        .saturating_add(1)
}

/// Upper-case hex, as TiKV logs keys in error messages.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::ApiVersion;
    use crate::clock::ManualClock;

    const START_MS: u64 = 1_700_000_000_000;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    /// A raw request to store 1, region 2, keys `keys`, unary.
    fn req<'a>(command: &'a str, keys: &'a [Bytes]) -> RequestInfo<'a> {
        RequestInfo {
            service: Service::Tikv,
            store_id: Some(1),
            command,
            region_id: Some(2),
            keys,
            start_ts: None,
            batched: false,
            forwarded_via: None,
        }
    }

    fn any_rule(times: Times) -> FaultRule {
        FaultRule::new(Matcher::any(), Action::Drop).times(times)
    }

    fn fires(engine: &FaultEngine, info: &RequestInfo<'_>) -> bool {
        engine.check(info, Phase::Before).is_some()
    }

    fn cluster(stores: usize) -> ClusterState {
        let addrs: Vec<String> = (0..stores)
            .map(|i| format!("127.0.0.1:{}", 20160 + i))
            .collect();
        ClusterState::new(
            1,
            ApiVersion::V1,
            Arc::new(ManualClock::new(START_MS)),
            &addrs,
            3,
        )
    }

    // ----- Times ------------------------------------------------------------------------------

    #[test]
    fn once_fires_once_then_is_removed() {
        let engine = FaultEngine::default();
        engine.add(any_rule(Times::Once));
        let info = req("RawGet", &[]);
        assert!(fires(&engine, &info));
        assert!(!fires(&engine, &info));
        assert_eq!(engine.len(), 0);
    }

    #[test]
    fn n_fires_n_times_then_is_removed() {
        let engine = FaultEngine::default();
        let id = engine.add(any_rule(Times::N(3)));
        let info = req("RawGet", &[]);
        for _ in 0..3 {
            assert!(fires(&engine, &info));
        }
        assert!(!fires(&engine, &info));
        assert!(!engine.remove(id), "the rule removed itself");
        // N(0) never fires and is not kept.
        engine.add(any_rule(Times::N(0)));
        assert_eq!(engine.len(), 0);
        assert!(!fires(&engine, &info));
    }

    #[test]
    fn always_fires_until_removed() {
        let engine = FaultEngine::default();
        let id = engine.add(any_rule(Times::Always));
        let info = req("RawGet", &[]);
        for _ in 0..100 {
            assert!(fires(&engine, &info));
        }
        assert!(engine.remove(id));
        assert!(!engine.remove(id));
        assert!(!fires(&engine, &info));
    }

    fn sample(p: f64, seed: u64, n: usize) -> Vec<bool> {
        let engine = FaultEngine::default();
        engine.add(any_rule(Times::probability(p, seed)));
        let info = req("RawGet", &[]);
        (0..n).map(|_| fires(&engine, &info)).collect()
    }

    #[test]
    fn probability_is_deterministic_for_a_seed_and_close_to_p() {
        let a = sample(0.3, 42, 10_000);
        assert_eq!(a, sample(0.3, 42, 10_000), "same seed, same draws");
        assert_ne!(a, sample(0.3, 43, 10_000), "another seed, other draws");
        let hits = a.iter().filter(|f| **f).count();
        assert!((2_700..=3_300).contains(&hits), "{hits} of 10000 at p=0.3");
        assert!(sample(0.0, 1, 1_000).iter().all(|f| !f));
        assert!(sample(1.0, 1, 1_000).iter().all(|f| *f));
        assert!(sample(f64::NAN, 1, 100).iter().all(|f| !f));
    }

    #[test]
    fn a_probability_miss_falls_through_to_later_rules() {
        let engine = FaultEngine::default();
        engine.add(FaultRule::new(Matcher::any(), Action::Drop).times(Times::probability(0.0, 7)));
        engine.add(FaultRule::new(
            Matcher::any(),
            Action::delay(Duration::from_millis(5)),
        ));
        let action = engine.check(&req("RawGet", &[]), Phase::Before);
        assert!(matches!(action, Some(Action::Delay(d)) if d == Duration::from_millis(5)));
    }

    #[test]
    fn first_matching_rule_in_installation_order_wins() {
        let engine = FaultEngine::default();
        engine.add(FaultRule::new(
            Matcher::any().command("RawPut"),
            Action::status(tonic::Code::Unavailable, "first"),
        ));
        engine.add(FaultRule::new(
            Matcher::any(),
            Action::status(tonic::Code::Internal, "second"),
        ));
        engine.add(FaultRule::new(
            Matcher::any(),
            Action::status(tonic::Code::Aborted, "third"),
        ));
        let code = |command: &str| match engine.check(&req(command, &[]), Phase::Before) {
            Some(Action::Status { code, .. }) => Some(code),
            _ => None,
        };
        // The RawPut rule is skipped for RawGet; the second rule fires (and is spent).
        assert_eq!(code("RawGet"), Some(tonic::Code::Internal));
        assert_eq!(code("RawPut"), Some(tonic::Code::Unavailable));
        assert_eq!(code("RawPut"), Some(tonic::Code::Aborted));
        assert_eq!(code("RawPut"), None);
    }

    // ----- Matcher ----------------------------------------------------------------------------

    #[test]
    fn every_matcher_field_narrows() {
        let keys = [b("d"), b("q")];
        let base = req("RawBatchGet", &keys);
        let pd = RequestInfo {
            service: Service::Pd,
            store_id: None,
            command: "GetRegion",
            region_id: None,
            keys: &[],
            start_ts: None,
            batched: false,
            forwarded_via: None,
        };
        let txn = RequestInfo {
            start_ts: Some(400),
            batched: true,
            ..base
        };
        // `base` as forwarded to store 1 by store 3.
        let fwd = RequestInfo {
            forwarded_via: Some(3),
            ..base
        };
        let cases: Vec<(Matcher, Vec<(&RequestInfo<'_>, bool)>)> = vec![
            (Matcher::any(), vec![(&base, true), (&pd, true)]),
            (Matcher::pd(), vec![(&base, false), (&pd, true)]),
            (Matcher::tikv(), vec![(&base, true), (&pd, false)]),
            (Matcher::any().store(1), vec![(&base, true), (&pd, false)]),
            (Matcher::any().store(2), vec![(&base, false)]),
            (
                Matcher::any().command("RawBatchGet"),
                vec![(&base, true), (&pd, false)],
            ),
            (Matcher::any().command("RawBatch"), vec![(&base, false)]),
            (Matcher::any().region(2), vec![(&base, true), (&pd, false)]),
            (Matcher::any().region(3), vec![(&base, false)]),
            // Any key in [start, end).
            (Matcher::any().keys("a", "e"), vec![(&base, true)]),
            (Matcher::any().keys("e", "q"), vec![(&base, false)]),
            (Matcher::any().keys("q", "r"), vec![(&base, true)]),
            (Matcher::any().keys("r", ""), vec![(&base, false)]),
            (Matcher::any().keys("p", ""), vec![(&base, true)]),
            (Matcher::any().key("d"), vec![(&base, true)]),
            (Matcher::any().key("dd"), vec![(&base, false)]),
            // No keys never matches a key range.
            (
                Matcher::any().keys("", ""),
                vec![(&base, true), (&pd, false)],
            ),
            (
                Matcher::any().start_ts(400),
                vec![(&base, false), (&txn, true)],
            ),
            (Matcher::any().start_ts(401), vec![(&txn, false)]),
            (
                Matcher::any().batched(true),
                vec![(&base, false), (&txn, true)],
            ),
            (
                Matcher::any().batched(false),
                vec![(&base, true), (&txn, false)],
            ),
            // The handling store matches direct and forwarded requests alike.
            (Matcher::any().store(1), vec![(&fwd, true)]),
            (Matcher::any().store(3), vec![(&fwd, false)]),
            (
                Matcher::any().forwarded(true),
                vec![(&base, false), (&fwd, true), (&pd, false)],
            ),
            (
                Matcher::any().forwarded(false),
                vec![(&base, true), (&fwd, false), (&pd, true)],
            ),
            (
                Matcher::tikv().store(1).via(3),
                vec![(&base, false), (&fwd, true)],
            ),
            (Matcher::any().via(2), vec![(&fwd, false), (&pd, false)]),
            // Fields combine with AND.
            (
                Matcher::tikv()
                    .store(1)
                    .region(2)
                    .command("RawBatchGet")
                    .keys("c", "e")
                    .start_ts(400)
                    .batched(true),
                vec![(&base, false), (&txn, true)],
            ),
        ];
        for (matcher, expectations) in cases {
            for (info, expected) in expectations {
                assert_eq!(
                    matcher.matches(info),
                    expected,
                    "{matcher:?} against {info:?}"
                );
                // And through the engine.
                let engine = FaultEngine::default();
                engine.add(FaultRule::new(matcher.clone(), Action::Drop));
                assert_eq!(fires(&engine, info), expected);
            }
        }
    }

    #[test]
    fn phases_are_separate() {
        let engine = FaultEngine::default();
        engine.add(FaultRule::new(Matcher::any(), Action::Drop).after_apply());
        let info = req("RawPut", &[]);
        assert!(engine.check(&info, Phase::Before).is_none());
        assert!(engine.check(&info, Phase::AfterApply).is_some());
        assert!(engine.check(&info, Phase::AfterApply).is_none());

        engine.add(FaultRule::new(Matcher::any(), Action::Drop).phase(Phase::Before));
        assert!(engine.check(&info, Phase::AfterApply).is_none());
        assert!(engine.check(&info, Phase::Before).is_some());
    }

    // ----- Concurrency ------------------------------------------------------------------------

    #[test]
    fn bounded_rules_fire_exactly_their_count_under_concurrent_traffic() {
        let engine = Arc::new(FaultEngine::default());
        engine.add(any_rule(Times::N(500)));
        engine.add(FaultRule::new(
            Matcher::any(),
            Action::status(tonic::Code::Internal, "x"),
        ));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let engine = engine.clone();
                std::thread::spawn(move || {
                    let keys = [b("k")];
                    let info = req("RawGet", &keys);
                    let (mut drops, mut statuses) = (0, 0);
                    for _ in 0..1_000 {
                        match engine.check(&info, Phase::Before) {
                            Some(Action::Drop) => drops += 1,
                            Some(Action::Status { .. }) => statuses += 1,
                            _ => {}
                        }
                    }
                    (drops, statuses)
                })
            })
            .collect();
        let (drops, statuses) = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        assert_eq!(drops, 500);
        assert_eq!(statuses, 1);
        assert_eq!(engine.len(), 0);
    }

    #[test]
    fn rules_can_be_added_removed_and_cleared_while_traffic_runs() {
        let engine = Arc::new(FaultEngine::default());
        let stop = Arc::new(AtomicBool::new(false));
        let checks = Arc::new(AtomicU64::new(0));
        let traffic: Vec<_> = (0..3)
            .map(|_| {
                let (engine, stop, checks) = (engine.clone(), stop.clone(), checks.clone());
                std::thread::spawn(move || {
                    let keys = [b("k")];
                    let info = req("RawGet", &keys);
                    while !stop.load(Ordering::Relaxed) {
                        let _ = engine.check(&info, Phase::Before);
                        let _ = engine.check(&info, Phase::AfterApply);
                        checks.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // Churn until the traffic has demonstrably run alongside (however the threads were
        // scheduled), and for at least a fixed number of rounds.
        let mut round = 0u64;
        while round < 200 || checks.load(Ordering::Relaxed) < 1_000 {
            let always = engine.add(any_rule(Times::Always));
            let other = engine.add(
                FaultRule::new(Matcher::any().command("RawPut"), Action::Drop).times(Times::Always),
            );
            assert!(engine.remove(always));
            if round.is_multiple_of(2) {
                assert!(engine.remove(other));
            } else {
                engine.clear();
            }
            assert_eq!(engine.len(), 0);
            round += 1;
            std::thread::yield_now();
        }
        // With nothing installed, nothing fires, whatever the traffic did meanwhile.
        assert!(!fires(&engine, &req("RawGet", &[])));
        stop.store(true, Ordering::Relaxed);
        for t in traffic {
            t.join().unwrap();
        }
    }

    // ----- Hang -------------------------------------------------------------------------------

    #[tokio::test]
    async fn hang_holds_until_released() {
        let engine = FaultEngine::default();
        let handle = HangHandle::new();
        engine.add(FaultRule::new(Matcher::any(), Action::hang(&handle)).times(Times::Always));
        let Some(Action::Hang(held)) = engine.check(&req("RawGet", &[]), Phase::Before) else {
            panic!("the hang rule must fire");
        };
        let waiter = tokio::spawn(async move { held.wait().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(!handle.is_released());
        handle.release();
        waiter.await.unwrap();
        // Released handles let later requests through at once.
        handle.wait().await;
    }

    #[tokio::test]
    async fn clear_releases_hangs_but_remove_does_not() {
        let engine = FaultEngine::default();
        let (kept, cleared) = (HangHandle::new(), HangHandle::new());
        let id = engine.add(FaultRule::new(Matcher::any(), Action::hang(&kept)));
        engine.add(FaultRule::new(Matcher::any(), Action::hang(&cleared)));
        assert!(engine.remove(id));
        assert!(!kept.is_released());
        let waiter = {
            let cleared = cleared.clone();
            tokio::spawn(async move { cleared.wait().await })
        };
        engine.clear();
        assert!(cleared.is_released());
        waiter.await.unwrap();
        assert!(!kept.is_released());
    }

    #[test]
    fn no_rules_is_the_fast_path() {
        let engine = FaultEngine::default();
        assert_eq!(engine.installed.load(Ordering::Relaxed), 0);
        assert!(!fires(&engine, &req("RawGet", &[])));
        let id = engine.add(any_rule(Times::Always));
        assert_eq!(engine.installed.load(Ordering::Relaxed), 1);
        engine.remove(id);
        assert_eq!(engine.installed.load(Ordering::Relaxed), 0);
    }

    // ----- materialize ------------------------------------------------------------------------

    /// Three stores, regions ["", "m") and ["m", ""), the right one (the original id) at
    /// version 2.
    fn split_cluster() -> (ClusterState, u64, u64) {
        let mut c = cluster(3);
        c.split(&[b("m")]).unwrap();
        let left = c.region_by_key(b"a").unwrap().id();
        let right = c.region_by_key(b"z").unwrap().id();
        (c, left, right)
    }

    fn leader_store(c: &ClusterState, region: u64) -> u64 {
        c.region(region).unwrap().leader_peer().unwrap().store_id
    }

    fn m(spec: RegionErrorSpec, c: &ClusterState, region: u64, store: u64) -> errorpb::Error {
        let e = materialize(&spec, c, Some(region), Some(store));
        assert!(!e.message.is_empty(), "{spec:?} needs a message");
        e
    }

    #[test]
    fn materialize_leader_and_epoch_errors() {
        let (c, left, right) = split_cluster();
        let store = leader_store(&c, right);

        let e = m(RegionErrorSpec::NotLeader, &c, right, store);
        let nl = e.not_leader.unwrap();
        assert_eq!(nl.region_id, right);
        assert_eq!(nl.leader.as_ref(), c.region(right).unwrap().leader_peer());
        assert!(e.message.starts_with(&format!(
            "peer is not leader for region {right}, leader may Some("
        )));

        let e = m(RegionErrorSpec::NotLeaderNoLeader, &c, right, store);
        assert_eq!(
            e.not_leader,
            Some(errorpb::NotLeader {
                region_id: right,
                leader: None
            })
        );

        // The original region lists itself first, then the region its split created.
        let e = m(RegionErrorSpec::EpochNotMatch, &c, right, store);
        let current = e.epoch_not_match.unwrap().current_regions;
        let ids: Vec<u64> = current.iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![right, left]);
        assert_eq!(current[0], c.region(right).unwrap().meta);
        // The split-off region has no children: only itself.
        let e = m(RegionErrorSpec::EpochNotMatch, &c, left, store);
        let ids: Vec<u64> = e
            .epoch_not_match
            .unwrap()
            .current_regions
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![left]);

        let e = m(RegionErrorSpec::RegionNotFound, &c, left, store);
        assert_eq!(e.region_not_found.unwrap().region_id, left);
    }

    #[test]
    fn materialize_key_and_store_errors() {
        let (c, left, right) = split_cluster();
        let store = leader_store(&c, left);

        let e = m(RegionErrorSpec::KeyNotInRegion, &c, left, store);
        assert_eq!(
            e.key_not_in_region.unwrap(),
            errorpb::KeyNotInRegion {
                key: b("m"),
                region_id: left,
                start_key: b(""),
                end_key: b("m"),
            }
        );
        assert_eq!(
            e.message,
            format!("key 6D is not in region key range [, 6D) for region {left}")
        );
        let e = m(RegionErrorSpec::KeyNotInRegion, &c, right, store);
        let k = e.key_not_in_region.unwrap();
        assert_eq!((k.key, k.start_key, k.end_key), (b(""), b("m"), b("")));

        let e = m(RegionErrorSpec::StoreNotMatch, &c, left, store);
        assert_eq!(
            e.store_not_match,
            Some(errorpb::StoreNotMatch {
                request_store_id: store,
                actual_store_id: store
            })
        );

        let e = m(RegionErrorSpec::DiskFull, &c, left, store);
        let d = e.disk_full.unwrap();
        assert_eq!(d.store_id, vec![store]);
        assert!(d.reason.contains("disk full"));

        let e = m(RegionErrorSpec::MismatchPeerId, &c, left, store);
        let mp = e.mismatch_peer_id.unwrap();
        let local = c.region(left).unwrap().peer_on_store(store).unwrap().id;
        assert_eq!(mp.request_peer_id, local);
        assert_ne!(mp.store_peer_id, local);
        let in_use = c
            .all_regions()
            .flat_map(|r| r.meta.peers.iter().map(|p| p.id).chain([r.id()]))
            .any(|id| id == mp.store_peer_id);
        assert!(!in_use, "a re-created peer has a fresh id");
    }

    #[test]
    fn materialize_busy_and_transient_errors() {
        let (c, left, _) = split_cluster();
        let store = leader_store(&c, left);

        let e = m(
            RegionErrorSpec::ServerIsBusy {
                reason: "scheduler is busy".to_owned(),
                estimated_wait_ms: 30,
            },
            &c,
            left,
            store,
        );
        assert_eq!(
            e.server_is_busy,
            Some(errorpb::ServerIsBusy {
                reason: "scheduler is busy".to_owned(),
                estimated_wait_ms: 30,
                ..Default::default()
            })
        );

        let e = m(RegionErrorSpec::StaleCommand, &c, left, store);
        assert!(e.stale_command.is_some());
        assert_eq!(e.message, "stale command");

        let e = m(RegionErrorSpec::RaftEntryTooLarge, &c, left, store);
        assert_eq!(
            e.raft_entry_too_large,
            Some(errorpb::RaftEntryTooLarge {
                region_id: left,
                entry_size: 8 * 1024 * 1024 + 1
            })
        );

        let e = m(RegionErrorSpec::MaxTimestampNotSynced, &c, left, store);
        assert!(e.max_timestamp_not_synced.is_some());

        let e = m(RegionErrorSpec::ReadIndexNotReady, &c, left, store);
        let r = e.read_index_not_ready.unwrap();
        assert_eq!(r.region_id, left);
        assert_eq!(r.reason, "can not read index due to split");

        let e = m(RegionErrorSpec::ProposalInMergingMode, &c, left, store);
        assert_eq!(e.proposal_in_merging_mode.unwrap().region_id, left);

        let e = m(RegionErrorSpec::RegionNotInitialized, &c, left, store);
        assert_eq!(e.region_not_initialized.unwrap().region_id, left);

        let e = m(RegionErrorSpec::RecoveryInProgress, &c, left, store);
        assert_eq!(e.recovery_in_progress.unwrap().region_id, left);

        let e = m(RegionErrorSpec::IsWitness, &c, left, store);
        assert_eq!(e.is_witness.unwrap().region_id, left);

        let e = m(RegionErrorSpec::UndeterminedResult, &c, left, store);
        assert_eq!(e.undetermined_result.unwrap().message, e.message);
    }

    #[test]
    fn materialize_stale_read_flashback_and_bucket_errors() {
        let (c, left, _) = split_cluster();
        let region = c.region(left).unwrap().clone();
        let follower = region
            .meta
            .peers
            .iter()
            .find(|p| p.id != region.leader)
            .copied()
            .unwrap();

        let e = m(RegionErrorSpec::DataIsNotReady, &c, left, follower.store_id);
        let d = e.data_is_not_ready.unwrap();
        assert_eq!((d.region_id, d.peer_id), (left, follower.id));
        assert_eq!(d.safe_ts, crate::tso::compose(START_MS - 1_000, 0));

        let e = m(
            RegionErrorSpec::FlashbackInProgress,
            &c,
            left,
            follower.store_id,
        );
        let f = e.flashback_in_progress.unwrap();
        assert_eq!(f.region_id, left);
        assert_eq!(f.flashback_start_ts, crate::tso::compose(START_MS, 0));

        let e = m(
            RegionErrorSpec::FlashbackNotPrepared,
            &c,
            left,
            follower.store_id,
        );
        assert_eq!(e.flashback_not_prepared.unwrap().region_id, left);

        let e = m(
            RegionErrorSpec::BucketVersionNotMatch,
            &c,
            left,
            follower.store_id,
        );
        let bv = e.bucket_version_not_match.unwrap();
        assert_eq!(bv.version, 2);
        assert_eq!(bv.keys, vec![b(""), b("m")]);
    }

    #[test]
    fn materialize_raw_is_exact() {
        let (c, left, _) = split_cluster();
        let raw = errorpb::Error {
            message: "TiKV is Closing".to_owned(),
            ..Default::default()
        };
        let e = materialize(&RegionErrorSpec::Raw(raw.clone()), &c, Some(left), Some(1));
        assert_eq!(e, raw);
    }

    #[test]
    fn materialize_unknown_region_is_sensible() {
        let c = cluster(1);
        let specs = [
            RegionErrorSpec::NotLeader,
            RegionErrorSpec::NotLeaderNoLeader,
            RegionErrorSpec::EpochNotMatch,
            RegionErrorSpec::RegionNotFound,
            RegionErrorSpec::KeyNotInRegion,
            RegionErrorSpec::StoreNotMatch,
            RegionErrorSpec::RaftEntryTooLarge,
            RegionErrorSpec::ReadIndexNotReady,
            RegionErrorSpec::ProposalInMergingMode,
            RegionErrorSpec::DataIsNotReady,
            RegionErrorSpec::RegionNotInitialized,
            RegionErrorSpec::DiskFull,
            RegionErrorSpec::RecoveryInProgress,
            RegionErrorSpec::FlashbackInProgress,
            RegionErrorSpec::FlashbackNotPrepared,
            RegionErrorSpec::IsWitness,
            RegionErrorSpec::MismatchPeerId,
            RegionErrorSpec::BucketVersionNotMatch,
            RegionErrorSpec::UndeterminedResult,
        ];
        for spec in &specs {
            for (region, store) in [(None, None), (Some(999), Some(1))] {
                let e = materialize(spec, &c, region, store);
                assert!(!e.message.is_empty(), "{spec:?}");
                assert_ne!(e, errorpb::Error::default());
            }
        }
        let e = materialize(&RegionErrorSpec::NotLeader, &c, Some(999), Some(1));
        assert_eq!(
            e.not_leader,
            Some(errorpb::NotLeader {
                region_id: 999,
                leader: None
            })
        );
        let e = materialize(&RegionErrorSpec::RegionNotFound, &c, None, None);
        assert_eq!(e.region_not_found.unwrap().region_id, 0);
        let e = materialize(&RegionErrorSpec::EpochNotMatch, &c, Some(999), None);
        assert!(e.epoch_not_match.unwrap().current_regions.is_empty());
        let e = materialize(&RegionErrorSpec::DiskFull, &c, None, None);
        assert_eq!(e.disk_full.unwrap().store_id, vec![0]);
    }

    #[test]
    fn builders_fill_every_field() {
        let rule = FaultRule::new(
            Matcher::tikv()
                .store(4)
                .command("KvCommit")
                .region(9)
                .start_ts(77),
            Action::region_error(RegionErrorSpec::EpochNotMatch),
        )
        .after_apply()
        .times(Times::Always);
        assert_eq!(rule.phase, Phase::AfterApply);
        assert_eq!(rule.times, Times::Always);
        assert_eq!(
            rule.matcher,
            Matcher {
                service: Some(Service::Tikv),
                store_id: Some(4),
                command: Some("KvCommit".to_owned()),
                region_id: Some(9),
                key_range: None,
                start_ts: Some(77),
                batched: None,
                forwarded: None,
                via_store: None,
            }
        );
        let default = FaultRule::new(Matcher::any(), Action::Drop);
        assert_eq!((default.phase, default.times), (Phase::Before, Times::Once));
        assert_eq!(
            Matcher::any().key("ab").key_range,
            Some((b("ab"), Bytes::from_static(b"ab\0")))
        );
    }
}
