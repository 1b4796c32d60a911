//! Fault rules (interface; the engine is being completed).
//!
//! A [`FaultRule`] matches requests ([`Matcher`]), fires at a [`Phase`] (before execution, or
//! after the request was applied so that its outcome is ambiguous to the client), performs an
//! [`Action`], and fires a bounded number of times ([`Times`]).

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tikv_proto::{errorpb, kvrpcpb};

use crate::cluster::ClusterState;

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
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Matcher {
    /// The server.
    pub service: Option<Service>,
    /// The store that received the request.
    pub store_id: Option<u64>,
    /// The gRPC method name, e.g. `RawGet`, `KvPrewrite`, `GetRegion`, `Tso`.
    pub command: Option<String>,
    /// The region in the request's context.
    pub region_id: Option<u64>,
    /// Wire keys: matches when any key of the request (or a range's start) is in
    /// `[start, end)`; an empty end is unbounded.
    pub key_range: Option<(Bytes, Bytes)>,
    /// The transaction start timestamp of the request.
    pub start_ts: Option<u64>,
    /// Only BatchCommands sub-requests (`true`) or only unary calls (`false`).
    pub batched: Option<bool>,
}

/// A region error, filled from the cluster's live state when the rule fires.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RegionErrorSpec {
    /// NotLeader naming the region's current leader.
    NotLeader,
    /// NotLeader without a leader (an election is in progress).
    NotLeaderNoLeader,
    /// EpochNotMatch with the current region.
    EpochNotMatch,
    /// RegionNotFound.
    RegionNotFound,
    /// KeyNotInRegion with the region's range.
    KeyNotInRegion,
    /// ServerIsBusy.
    ServerIsBusy {
        /// TiKV's reason text.
        reason: String,
        /// Estimated wait in milliseconds.
        estimated_wait_ms: u32,
    },
    /// StaleCommand.
    StaleCommand,
    /// StoreNotMatch.
    StoreNotMatch,
    /// RaftEntryTooLarge.
    RaftEntryTooLarge,
    /// MaxTimestampNotSynced.
    MaxTimestampNotSynced,
    /// ReadIndexNotReady.
    ReadIndexNotReady,
    /// ProposalInMergingMode.
    ProposalInMergingMode,
    /// DataIsNotReady.
    DataIsNotReady,
    /// RegionNotInitialized.
    RegionNotInitialized,
    /// DiskFull on the receiving store.
    DiskFull,
    /// RecoveryInProgress.
    RecoveryInProgress,
    /// FlashbackInProgress.
    FlashbackInProgress,
    /// FlashbackNotPrepared.
    FlashbackNotPrepared,
    /// IsWitness.
    IsWitness,
    /// MismatchPeerId.
    MismatchPeerId,
    /// BucketVersionNotMatch.
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

    /// Waits until released.
    pub(crate) async fn wait(&self) {
        let mut rx = self.released.subscribe();
        let _ = rx.wait_for(|released| *released).await;
    }
}

/// What a rule does.
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

/// How often a rule fires.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Times {
    /// Once, then the rule is removed.
    Once,
    /// N times.
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

/// A fault rule.
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
}

/// The installed rules.
#[derive(Debug, Default)]
pub(crate) struct FaultEngine {
    rules: Mutex<Vec<(FaultId, FaultRule)>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl FaultEngine {
    pub(crate) fn add(&self, rule: FaultRule) -> FaultId {
        let id = FaultId(
            self.next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        self.rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, rule));
        id
    }

    pub(crate) fn remove(&self, id: FaultId) -> bool {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let before = rules.len();
        rules.retain(|(i, _)| *i != id);
        rules.len() != before
    }

    pub(crate) fn clear(&self) {
        self.rules.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The action of the first rule that matches `info` at `phase`, counting the firing.
    pub(crate) fn check(&self, _info: &RequestInfo<'_>, _phase: Phase) -> Option<Action> {
        None
    }
}

/// Builds the region error a spec describes from the live state of the region the request
/// addressed, as received by `store_id`.
pub(crate) fn materialize(
    spec: &RegionErrorSpec,
    _state: &ClusterState,
    _region_id: Option<u64>,
    _store_id: Option<u64>,
) -> errorpb::Error {
    match spec {
        RegionErrorSpec::Raw(e) => e.clone(),
        other => errorpb::Error {
            message: format!("{other:?}"),
            ..Default::default()
        },
    }
}
