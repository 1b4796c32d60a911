//! The public error catalogue.
//!
//! Every fallible operation of the crate returns [`Error`]. Each variant carries the facts a
//! caller needs to act (keys, timestamps, the region, the store) instead of a formatted string,
//! and the enum classifies itself:
//!
//! - [`Error::is_retryable`]: retrying the whole operation (for a transaction, a fresh one) may
//!   succeed, because the failure came from a transient condition or a conflict.
//! - [`Error::is_undetermined`]: a write may or may not have been applied. Such errors are never
//!   retryable: the caller has to find out what happened before acting again.
//!
//! Who produces them: the request sender maps region errors ([`RegionErrorKind`]) and gRPC
//! failures, the transaction layer maps TiKV key errors (in client-go's `ExtractKeyErr` order),
//! and the config, codec and API layers reject bad input with
//! [`Error::InvalidArgument`], [`Error::Config`] and [`Error::Codec`]. The timestamp oracle
//! rejects read timestamps with [`Error::FutureTsRead`] and [`Error::LatestStaleRead`]
//! (client-go `oracle.ErrFutureTSRead`, `oracle.ErrLatestStaleRead`).
//!
//! Ports client-go `error/error.go` (sentinels, typed errors, `ExtractKeyErr`) and the error
//! classification spread over `internal/locate/region_request.go` and `config/retry`. Proto
//! types stay private: the public variants use [`Key`], [`Timestamp`] and plain integers.
//!
//! Error text TiKV or PD wrote itself travels in its own variants ([`Error::Server`] for
//! TiKV's, [`Error::Pd`] for PD's, [`Error::TxnAborted`] and [`Error::Retryable`] for key
//! errors); [`Error::Internal`] is kept for this client's own broken invariants. A failed gRPC
//! call or connection keeps the underlying failure as its [`source`](std::error::Error::source)
//! (an opaque [`ErrorSource`]: the transport library's types are not part of the API).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tikv_proto::{errorpb, kvrpcpb};

use crate::kv::Key;
use crate::oracle::Timestamp;

/// Result with this crate's [`Error`].
///
/// The error type defaults to [`Error`], so helpers in application code can use it too:
///
/// ```
/// fn parse_limit(text: &str) -> tikv_client::Result<u32> {
///     text.parse()
///         .map_err(|e| tikv_client::Error::invalid_argument(format!("limit {text:?}: {e}")))
/// }
/// assert!(parse_limit("128").is_ok());
/// assert!(parse_limit("many").is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by this crate.
///
/// The enum is `#[non_exhaustive]`: match the variants you act on and keep a fallback arm.
/// Large payloads are boxed so that `Result<T, Error>` stays small on hot paths.
///
/// Retry what [`is_retryable`](Error::is_retryable) allows, a bounded number of times, and
/// never blindly repeat a write that [`is_undetermined`](Error::is_undetermined):
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// use tikv_client::Error;
///
/// let mut attempts = 0;
/// let outcome = loop {
///     attempts += 1;
///     match client.put("k", "v").await {
///         Err(e) if e.is_retryable() && attempts < 3 => continue,
///         other => break other,
///     }
/// };
/// match outcome {
///     Ok(()) => {}
///     Err(Error::KeyTooLarge { size, limit }) => {
///         eprintln!("key of {size} bytes is over the {limit}-byte limit")
///     }
///     Err(Error::Timeout { operation, after }) => {
///         eprintln!("{operation} gave up after {after:?}")
///     }
///     Err(e) if e.is_undetermined() => eprintln!("the put may have been applied: read `k` back"),
///     Err(e) => return Err(e),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ----- bad input -------------------------------------------------------------------------
    /// A caller passed a value the operation cannot accept. Nothing was sent or written.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What was wrong and how to fix it.
        message: String,
    },
    /// Bytes could not be decoded (memcomparable codec, key encodings).
    #[error("codec error: {message}")]
    Codec {
        /// What could not be decoded.
        message: String,
    },
    /// A configuration value or file is invalid.
    #[error("invalid configuration: {message}")]
    Config {
        /// Which setting is wrong and why.
        message: String,
    },
    /// A key is larger than TiKV accepts.
    #[error("key of {size} bytes exceeds the limit of {limit} bytes")]
    KeyTooLarge {
        /// Size of the key in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A key-value entry is larger than the configured entry size limit.
    #[error("entry of {size} bytes exceeds the limit of {limit} bytes")]
    EntryTooLarge {
        /// Size of key plus value in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// A transaction's buffered mutations exceed the transaction size limit.
    #[error("transaction of {size} bytes is too large; split it into smaller transactions")]
    TxnTooLarge {
        /// Size of the buffered mutations in bytes.
        size: usize,
    },

    // ----- transaction conflicts and key errors (TiKV `KeyError`) -----------------------------
    /// Another transaction wrote the key after this one started (or after its `for_update_ts`).
    /// Retry the transaction with a new start timestamp.
    #[error("{0}")]
    WriteConflict(Box<WriteConflict>),
    /// A local latch found a conflicting transaction in this process before anything was sent.
    #[error("write conflict in local latch, start_ts {start_ts}; retry the transaction")]
    WriteConflictInLatch {
        /// Start timestamp of the transaction that lost.
        start_ts: Timestamp,
    },
    /// An insert met a key that already exists.
    #[error("key {key} already exists")]
    KeyExists {
        /// The existing key.
        key: Key,
    },
    /// Waiting for a pessimistic lock would deadlock.
    #[error("{0}")]
    Deadlock(Box<Deadlock>),
    /// A key assertion (must exist / must not exist) did not hold.
    #[error("{0}")]
    AssertionFailed(Box<AssertionFailed>),
    /// A key is locked by another transaction whose lock could not be resolved.
    #[error("{0}")]
    Locked(Box<LockedKey>),
    /// The commit timestamp is below the lock's `min_commit_ts`; commit again with a newer one.
    #[error(
        "commit_ts {attempted_commit_ts} of txn {start_ts} is below min_commit_ts \
         {min_commit_ts} of key {key}"
    )]
    CommitTsExpired {
        /// Start timestamp of the transaction.
        start_ts: Timestamp,
        /// The rejected commit timestamp.
        attempted_commit_ts: Timestamp,
        /// The key whose lock rejected it.
        key: Key,
        /// The lock's minimum commit timestamp.
        min_commit_ts: Timestamp,
    },
    /// The commit timestamp computed for async commit exceeds the allowed maximum.
    #[error("commit_ts {commit_ts} is too large for async commit")]
    CommitTsTooLarge {
        /// The rejected commit timestamp.
        commit_ts: Timestamp,
    },
    /// The transaction's primary lock was not found when its status was checked.
    #[error("txn {start_ts} not found (primary key {primary_key})")]
    TxnNotFound {
        /// Start timestamp of the transaction.
        start_ts: Timestamp,
        /// Its primary key.
        primary_key: Key,
    },
    /// Commit found no lock of this transaction: it was rolled back (for example by another
    /// transaction that resolved its expired lock) or never prewritten.
    #[error("lock of the transaction not found on key {key}; it was rolled back")]
    TxnLockNotFound {
        /// The key that had no lock.
        key: Key,
    },
    /// A status check reached a key that is not the lock's primary.
    #[error("key {key} is not the primary of txn {start_ts}")]
    PrimaryMismatch {
        /// Start timestamp of the lock's transaction.
        start_ts: Timestamp,
        /// The key that was wrongly taken as primary.
        key: Key,
    },
    /// A shared lock could not be upgraded to an exclusive lock.
    #[error("lock upgrade conflict on key {key} (txn {start_ts}, owner {owner_start_ts})")]
    LockUpgradeConflict {
        /// The key.
        key: Key,
        /// Start timestamp of the transaction that tried to upgrade.
        start_ts: Timestamp,
        /// Start timestamp of the transaction holding the conflicting lock.
        owner_start_ts: Timestamp,
    },
    /// A shared pessimistic lock disappeared before the transaction prewrote.
    #[error("shared lock of txn {start_ts} on key {key} was lost")]
    SharedLockLost {
        /// The key.
        key: Key,
        /// Start timestamp of the transaction.
        start_ts: Timestamp,
    },
    /// TiKV says the operation may succeed if retried (`KeyError.retryable`).
    #[error("retryable: {message}")]
    Retryable {
        /// TiKV's explanation.
        message: String,
    },
    /// TiKV aborted the transaction (`KeyError.abort`).
    #[error("transaction aborted by TiKV: {message}")]
    TxnAborted {
        /// TiKV's explanation.
        message: String,
    },
    /// Waiting for a pessimistic lock timed out.
    #[error("lock wait timeout")]
    LockWaitTimeout,
    /// A lock was held and the request asked not to wait.
    #[error("lock acquire failed and no-wait is set")]
    LockAcquireFailedNoWait,
    /// Resolving a lock did not finish within its backoff budget.
    #[error("resolve lock timeout")]
    ResolveLockTimeout,
    /// The transaction's start timestamp is below the txn safe point: GC may have removed the
    /// versions it reads.
    #[error(
        "transaction start_ts {start_ts} is below the txn safe point {txn_safe_point}: GC \
         life time is shorter than the transaction"
    )]
    TxnAbortedByGc {
        /// Start timestamp of the transaction.
        start_ts: Timestamp,
        /// The txn safe point it fell below.
        txn_safe_point: Timestamp,
    },
    /// The commit timestamp lags behind the one the caller required.
    #[error("commit timestamp {commit_ts} lags behind the required {required_ts}")]
    CommitTsLag {
        /// The timestamp obtained.
        commit_ts: Timestamp,
        /// The lower bound required.
        required_ts: Timestamp,
    },
    /// The operation is not valid for the transaction in its current state (for example, it
    /// was already committed or rolled back).
    #[error("invalid transaction: {message}")]
    InvalidTransaction {
        /// What was attempted and why it is not allowed.
        message: String,
    },
    /// A write may or may not have been applied (for example the connection broke after the
    /// commit request was sent). Never retry blindly: check the outcome first.
    #[error("result undetermined: {message}")]
    Undetermined {
        /// What was in flight when the outcome became unknown.
        message: String,
    },

    // ----- routing, replication and server state ----------------------------------------------
    /// TiKV refused a request with an error message of its own (a raw command's `error`
    /// text), which this client has no typed variant for. Not retried: TiKV gives no hint that
    /// the same request would succeed later.
    ///
    /// ```
    /// # use tikv_client::Error;
    /// fn describe(err: &Error) -> String {
    ///     match err {
    ///         Error::Server { message, .. } => format!("TiKV said: {message}"),
    ///         other => other.to_string(),
    ///     }
    /// }
    /// # let _ = describe;
    /// ```
    #[error("TiKV error: {message}")]
    #[non_exhaustive]
    Server {
        /// TiKV's text, verbatim.
        message: String,
    },
    /// TiKV refused a request for a routing or replication reason and retries did not help.
    #[error("{0}")]
    Region(Box<RegionError>),
    /// A store's request token limit is reached.
    #[error("store {store_id} token limit reached")]
    StoreTokenLimit {
        /// The store.
        store_id: u64,
    },

    // ----- PD ---------------------------------------------------------------------------------
    /// PD returned an error.
    #[error("PD error: {message}")]
    Pd {
        /// PD's error text.
        message: String,
    },
    /// PD did not answer in time or has no leader.
    #[error("PD server timeout: {message}")]
    PdServerTimeout {
        /// What was being asked.
        message: String,
    },
    /// A PD or TiKV server belongs to another cluster than the one the client joined.
    #[error("mismatch cluster id: expected {expected}, got {actual}")]
    ClusterIdMismatch {
        /// The cluster id the client joined.
        expected: u64,
        /// The cluster id the server reported.
        actual: u64,
    },
    /// The keyspace does not exist.
    #[error("keyspace {name:?} not found")]
    KeyspaceNotFound {
        /// Its name.
        name: String,
    },
    /// The keyspace exists but is not in the ENABLED state.
    #[error("keyspace {name:?} is not enabled (state {state})")]
    KeyspaceNotEnabled {
        /// Its name.
        name: String,
        /// Its current state as PD reports it.
        state: String,
    },
    /// A PD circuit breaker is open (PD's `ErrCircuitBreakerOpen`): PD looked overloaded, so
    /// requests of this kind fail at once, without being sent, until the breaker lets probe
    /// requests through again. Retryable after a backoff.
    #[error("circuit breaker is open ({name}): PD requests of this kind fail fast for now")]
    PdCircuitBreakerOpen {
        /// Which breaker (`region-meta`).
        name: String,
    },

    // ----- timestamps -------------------------------------------------------------------------
    /// A read timestamp is above every timestamp PD had allocated when it was checked: reading
    /// there could miss writes that commit later below it. Use a timestamp from the oracle.
    #[error(
        "cannot set read timestamp to a future time, readTS: {read_ts}, currentTS: {current_ts}"
    )]
    FutureTsRead {
        /// The rejected read timestamp.
        read_ts: Timestamp,
        /// A timestamp PD allocated after the check started.
        current_ts: Timestamp,
    },
    /// A stale read asked to read at [`Timestamp::MAX`] ("the latest"), which a stale read
    /// cannot do.
    #[error("cannot set read ts to max uint64 for stale read")]
    LatestStaleRead,

    // ----- transport --------------------------------------------------------------------------
    /// A gRPC call failed.
    #[error("gRPC call to {address} failed with {code}: {message}")]
    Grpc {
        /// The server address.
        address: String,
        /// The gRPC status code.
        code: GrpcCode,
        /// The status message.
        message: String,
        /// The failure underneath (the gRPC status, and through it the transport error), when
        /// the call got that far; `None` for failures this client detected itself (a broken
        /// stream, a store it knows is down).
        #[source]
        source: Option<ErrorSource>,
    },
    /// A connection could not be established.
    #[error("cannot connect to {address}: {message}")]
    Connect {
        /// The server address.
        address: String,
        /// Why.
        message: String,
        /// The last failure underneath, when there was one.
        #[source]
        source: Option<ErrorSource>,
    },
    /// An operation did not finish before its deadline.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        operation: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// A retry loop used up its backoff budget; `last` is the error that was being retried.
    #[error("backoff budget exhausted after {total_sleep:?} sleeping on {kind}: {last}")]
    BackoffExhausted {
        /// The backoff kind that ran out (for example `regionMiss`, `tikvRPC`).
        kind: String,
        /// Total time slept across all kinds.
        total_sleep: Duration,
        /// The last error before giving up.
        #[source]
        last: Box<Error>,
    },
    /// The client was closed.
    #[error("client is closed")]
    Closed,
    /// The operation was cancelled by the caller.
    #[error("operation cancelled")]
    Cancelled,
    /// An invariant of the client or the protocol did not hold; this is a bug to report.
    #[error("internal error: {message}")]
    Internal {
        /// What went wrong.
        message: String,
    },
}

/// A write conflict reported by TiKV, carried by [`Error::WriteConflict`].
///
/// ```
/// use tikv_client::Error;
///
/// fn describe(err: &Error) -> Option<String> {
///     match err {
///         Error::WriteConflict(c) => Some(format!(
///             "txn {} lost key {} to a write committed at {}",
///             c.start_ts, c.key, c.conflict_commit_ts
///         )),
///         _ => None,
///     }
/// }
/// # assert_eq!(describe(&Error::Closed), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteConflict {
    /// Start timestamp of the transaction that hit the conflict.
    pub start_ts: Timestamp,
    /// Start timestamp of the conflicting transaction.
    pub conflict_ts: Timestamp,
    /// Commit timestamp of the conflicting write ([`Timestamp::ZERO`] if unknown).
    pub conflict_commit_ts: Timestamp,
    /// The conflicting key.
    pub key: Key,
    /// Primary key of the transaction that hit the conflict.
    pub primary: Key,
    /// Why TiKV reported the conflict.
    pub reason: WriteConflictReason,
}

impl fmt::Display for WriteConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "write conflict on key {}: txn {} conflicts with txn {} committed at {} ({:?}); \
             retry the transaction",
            self.key, self.start_ts, self.conflict_ts, self.conflict_commit_ts, self.reason
        )
    }
}

/// Why TiKV reported a write conflict (`kvrpcpb.WriteConflict.Reason`).
///
/// ```
/// use tikv_client::error::WriteConflictReason;
///
/// fn hint(reason: WriteConflictReason) -> &'static str {
///     match reason {
///         WriteConflictReason::Optimistic => "another transaction committed first",
///         WriteConflictReason::SelfRolledBack => "this transaction was already rolled back",
///         _ => "retry the transaction",
///     }
/// }
/// # assert_eq!(hint(WriteConflictReason::Unknown), "retry the transaction");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WriteConflictReason {
    /// Not specified.
    Unknown,
    /// An optimistic transaction's prewrite found a newer write.
    Optimistic,
    /// A pessimistic lock request found a newer write than its `for_update_ts`.
    PessimisticRetry,
    /// The transaction's own rollback record was found.
    SelfRolledBack,
    /// An RCCheckTS read found a newer version.
    RcCheckTs,
    /// A lazily checked unique key turned out to conflict at prewrite.
    LazyUniquenessCheck,
    /// A key that was not pessimistically locked met a conflict.
    NotLockedKeyConflict,
}

impl WriteConflictReason {
    pub(crate) fn from_proto(value: i32) -> Self {
        use kvrpcpb::write_conflict::Reason as R;
        match R::try_from(value) {
            Ok(R::Optimistic) => Self::Optimistic,
            Ok(R::PessimisticRetry) => Self::PessimisticRetry,
            Ok(R::SelfRolledBack) => Self::SelfRolledBack,
            Ok(R::RcCheckTs) => Self::RcCheckTs,
            Ok(R::LazyUniquenessCheck) => Self::LazyUniquenessCheck,
            Ok(R::NotLockedKeyConflict) => Self::NotLockedKeyConflict,
            Ok(R::Unknown) | Err(_) => Self::Unknown,
        }
    }
}

/// A deadlock detected while waiting for a pessimistic lock, carried by [`Error::Deadlock`].
///
/// ```
/// use tikv_client::Error;
///
/// fn should_retry_statement(err: &Error) -> bool {
///     match err {
///         Error::Deadlock(d) => {
///             eprintln!("deadlock on key {}, cycle of {} waits", d.lock_key, d.wait_chain.len());
///             d.is_retryable
///         }
///         _ => false,
///     }
/// }
/// # assert!(!should_retry_statement(&Error::Closed));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Deadlock {
    /// Start timestamp of the transaction holding the lock that was waited for.
    pub lock_ts: Timestamp,
    /// The key that was waited for.
    pub lock_key: Key,
    /// Hash of the key that closes the cycle.
    pub deadlock_key_hash: u64,
    /// The key that closes the cycle, when TiKV reports it.
    pub deadlock_key: Key,
    /// The cycle, as (waiting txn, waited-for txn, key) entries.
    pub wait_chain: Vec<WaitForEntry>,
    /// Whether retrying the statement may succeed (client-go `ErrDeadlock.IsRetryable`): true
    /// when the deadlock involved only locks of the current statement.
    pub is_retryable: bool,
}

impl fmt::Display for Deadlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "deadlock: waiting for lock of txn {} on key {} (cycle of {} waits)",
            self.lock_ts,
            self.lock_key,
            self.wait_chain.len()
        )
    }
}

/// One edge of a deadlock's wait-for cycle ([`Deadlock::wait_chain`]).
///
/// ```
/// use tikv_client::error::Deadlock;
///
/// fn print_cycle(d: &Deadlock) {
///     for edge in &d.wait_chain {
///         println!(
///             "txn {} waits {} ms for txn {} on key {}",
///             edge.txn, edge.wait_time_ms, edge.wait_for_txn, edge.key
///         );
///     }
/// }
/// # let _ = print_cycle;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitForEntry {
    /// Start timestamp of the waiting transaction.
    pub txn: Timestamp,
    /// Start timestamp of the transaction it waits for.
    pub wait_for_txn: Timestamp,
    /// Hash of the key waited on.
    pub key_hash: u64,
    /// The key waited on.
    pub key: Key,
    /// How long it had waited, in milliseconds.
    pub wait_time_ms: u64,
}

/// A failed key assertion, carried by [`Error::AssertionFailed`].
///
/// ```
/// use tikv_client::Error;
///
/// fn existing_commit(err: &Error) -> Option<tikv_client::Timestamp> {
///     match err {
///         Error::AssertionFailed(a) => Some(a.existing_commit_ts),
///         _ => None,
///     }
/// }
/// # assert_eq!(existing_commit(&Error::Closed), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AssertionFailed {
    /// Start timestamp of the transaction.
    pub start_ts: Timestamp,
    /// The key.
    pub key: Key,
    /// What was asserted.
    pub assertion: Assertion,
    /// Start timestamp of the existing version ([`Timestamp::ZERO`] if none).
    pub existing_start_ts: Timestamp,
    /// Commit timestamp of the existing version ([`Timestamp::ZERO`] if none).
    pub existing_commit_ts: Timestamp,
}

impl fmt::Display for AssertionFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "assertion {:?} failed on key {} in txn {} (existing version start_ts {}, \
             commit_ts {})",
            self.assertion,
            self.key,
            self.start_ts,
            self.existing_start_ts,
            self.existing_commit_ts
        )
    }
}

/// A key assertion (`kvrpcpb.Assertion`), as reported in [`AssertionFailed::assertion`].
///
/// ```
/// use tikv_client::error::Assertion;
///
/// fn expected(assertion: Assertion) -> &'static str {
///     match assertion {
///         Assertion::Exist => "the key to exist",
///         Assertion::NotExist => "the key to be absent",
///         _ => "nothing",
///     }
/// }
/// # assert_eq!(expected(Assertion::None), "nothing");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Assertion {
    /// No assertion.
    None,
    /// The key must exist.
    Exist,
    /// The key must not exist.
    NotExist,
}

/// A lock held by another transaction, as reported by TiKV; carried by [`Error::Locked`].
///
/// ```
/// use tikv_client::Error;
///
/// fn lock_owner(err: &Error) -> Option<(tikv_client::Timestamp, u64)> {
///     match err {
///         Error::Locked(l) => Some((l.lock_ts, l.ttl_ms)),
///         _ => None,
///     }
/// }
/// # assert_eq!(lock_owner(&Error::Closed), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockedKey {
    /// The locked key.
    pub key: Key,
    /// Primary key of the lock's transaction.
    pub primary: Key,
    /// Start timestamp of the lock's transaction.
    pub lock_ts: Timestamp,
    /// Lock TTL in milliseconds.
    pub ttl_ms: u64,
    /// Number of keys the transaction writes (a hint for resolution).
    pub txn_size: u64,
    /// The lock's minimum commit timestamp (async commit).
    pub min_commit_ts: Timestamp,
    /// `for_update_ts` of a pessimistic lock, [`Timestamp::ZERO`] otherwise.
    pub for_update_ts: Timestamp,
    /// Whether the transaction uses async commit.
    pub use_async_commit: bool,
}

impl fmt::Display for LockedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "key {} is locked by txn {} (primary {}, ttl {} ms)",
            self.key, self.lock_ts, self.primary, self.ttl_ms
        )
    }
}

/// A region error that was not resolved by retrying, carried by [`Error::Region`].
///
/// ```
/// use tikv_client::Error;
///
/// fn failed_region(err: &Error) -> Option<u64> {
///     match err {
///         Error::Region(r) => {
///             eprintln!("{:?}: {}", r.kind, r.message);
///             r.region_id
///         }
///         _ => None,
///     }
/// }
/// # assert_eq!(failed_region(&Error::Closed), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegionError {
    /// The region the request addressed, when known.
    pub region_id: Option<u64>,
    /// What TiKV reported.
    pub kind: RegionErrorKind,
    /// TiKV's message.
    pub message: String,
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.region_id {
            Some(id) => write!(f, "region {id}: {:?}: {}", self.kind, self.message),
            None => write!(f, "region error {:?}: {}", self.kind, self.message),
        }
    }
}

/// The variants of TiKV's `errorpb.Error`, one per detail field.
///
/// ```
/// use tikv_client::error::RegionErrorKind;
///
/// fn advice(kind: &RegionErrorKind) -> String {
///     match kind {
///         RegionErrorKind::RaftEntryTooLarge { entry_size } => {
///             format!("split the batch: {entry_size} bytes do not fit one Raft entry")
///         }
///         RegionErrorKind::ServerIsBusy { estimated_wait, .. } => {
///             format!("back off for about {estimated_wait:?}")
///         }
///         RegionErrorKind::DiskFull { store_ids } => format!("stores {store_ids:?} are full"),
///         other if other.is_transient() => "retry later".to_owned(),
///         _ => "report it".to_owned(),
///     }
/// }
/// # assert_eq!(advice(&RegionErrorKind::EpochNotMatch), "retry later");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegionErrorKind {
    /// The peer is not the leader; the new leader's store when known.
    NotLeader {
        /// Store of the new leader, when TiKV knows it.
        leader_store_id: Option<u64>,
    },
    /// The store has no peer of the region.
    RegionNotFound,
    /// A key is outside the region.
    KeyNotInRegion,
    /// The region's epoch changed (split, merge, membership change).
    EpochNotMatch,
    /// The store is overloaded.
    ServerIsBusy {
        /// TiKV's reason.
        reason: String,
        /// TiKV's estimate of the queueing delay.
        estimated_wait: Duration,
    },
    /// The proposal was dropped on a leader change.
    StaleCommand,
    /// The request reached a store other than the peer's.
    StoreNotMatch,
    /// The request is too large for one Raft entry: split the batch.
    RaftEntryTooLarge {
        /// Size of the entry TiKV would have proposed.
        entry_size: u64,
    },
    /// A new leader has not yet synced its max timestamp.
    MaxTimestampNotSynced,
    /// A follower has no read index yet.
    ReadIndexNotReady,
    /// The region is merging.
    ProposalInMergingMode,
    /// A stale read asked for a timestamp above the replica's safe ts.
    DataIsNotReady {
        /// The replica's safe ts.
        safe_ts: Timestamp,
    },
    /// The peer has no data yet.
    RegionNotInitialized,
    /// Stores are out of disk space.
    DiskFull {
        /// The full stores.
        store_ids: Vec<u64>,
    },
    /// Online unsafe recovery is running on the region.
    RecoveryInProgress,
    /// The region is in flashback.
    FlashbackInProgress,
    /// The region is not prepared for flashback.
    FlashbackNotPrepared,
    /// The peer is a witness and holds no data.
    IsWitness,
    /// The request's peer id does not match the store's peer.
    MismatchPeerId,
    /// The request's bucket version is stale.
    BucketVersionNotMatch,
    /// The write may or may not have been applied.
    UndeterminedResult,
    /// An error with no known detail field.
    Other,
}

impl RegionErrorKind {
    /// Whether the condition is transient, so that a later attempt may succeed.
    ///
    /// ```
    /// use tikv_client::error::RegionErrorKind;
    ///
    /// assert!(RegionErrorKind::EpochNotMatch.is_transient());
    /// assert!(!RegionErrorKind::UndeterminedResult.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            RegionErrorKind::RaftEntryTooLarge { .. }
                | RegionErrorKind::DiskFull { .. }
                | RegionErrorKind::FlashbackInProgress
                | RegionErrorKind::FlashbackNotPrepared
                | RegionErrorKind::UndeterminedResult
                | RegionErrorKind::Other
        )
    }
}

/// gRPC status codes, as defined by the gRPC protocol; carried by [`Error::Grpc`].
///
/// ```
/// use tikv_client::Error;
/// use tikv_client::error::GrpcCode;
///
/// fn is_auth_failure(err: &Error) -> bool {
///     matches!(
///         err,
///         Error::Grpc {
///             code: GrpcCode::Unauthenticated | GrpcCode::PermissionDenied,
///             ..
///         }
///     )
/// }
/// # assert!(!is_auth_failure(&Error::Closed));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GrpcCode {
    /// Not an error.
    Ok,
    /// The operation was cancelled.
    Cancelled,
    /// Unknown error.
    Unknown,
    /// The client specified an invalid argument.
    InvalidArgument,
    /// The deadline expired before the operation could complete.
    DeadlineExceeded,
    /// Some requested entity was not found.
    NotFound,
    /// Some entity already exists.
    AlreadyExists,
    /// The caller lacks permission.
    PermissionDenied,
    /// Some resource has been exhausted.
    ResourceExhausted,
    /// The system is not in a state required for the operation.
    FailedPrecondition,
    /// The operation was aborted.
    Aborted,
    /// The operation was attempted past the valid range.
    OutOfRange,
    /// The operation is not implemented or not supported by the server.
    Unimplemented,
    /// Internal server error.
    Internal,
    /// The service is currently unavailable.
    Unavailable,
    /// Unrecoverable data loss or corruption.
    DataLoss,
    /// The request lacks valid authentication credentials.
    Unauthenticated,
}

impl GrpcCode {
    /// Whether a later attempt of the same call may succeed.
    ///
    /// ```
    /// use tikv_client::error::GrpcCode;
    ///
    /// assert!(GrpcCode::Unavailable.is_transient());
    /// assert!(!GrpcCode::Unimplemented.is_transient());
    /// ```
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            GrpcCode::Unavailable
                | GrpcCode::DeadlineExceeded
                | GrpcCode::ResourceExhausted
                | GrpcCode::Aborted
                | GrpcCode::Cancelled
        )
    }

    /// Maps a tonic status code.
    pub(crate) fn from_tonic(code: tonic::Code) -> Self {
        use tonic::Code as C;
        match code {
            C::Ok => GrpcCode::Ok,
            C::Cancelled => GrpcCode::Cancelled,
            C::Unknown => GrpcCode::Unknown,
            C::InvalidArgument => GrpcCode::InvalidArgument,
            C::DeadlineExceeded => GrpcCode::DeadlineExceeded,
            C::NotFound => GrpcCode::NotFound,
            C::AlreadyExists => GrpcCode::AlreadyExists,
            C::PermissionDenied => GrpcCode::PermissionDenied,
            C::ResourceExhausted => GrpcCode::ResourceExhausted,
            C::FailedPrecondition => GrpcCode::FailedPrecondition,
            C::Aborted => GrpcCode::Aborted,
            C::OutOfRange => GrpcCode::OutOfRange,
            C::Unimplemented => GrpcCode::Unimplemented,
            C::Internal => GrpcCode::Internal,
            C::Unavailable => GrpcCode::Unavailable,
            C::DataLoss => GrpcCode::DataLoss,
            C::Unauthenticated => GrpcCode::Unauthenticated,
        }
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The failure underneath an [`Error::Grpc`] or [`Error::Connect`]: the gRPC status or the
/// transport error, kept so that error reporters can walk the whole chain.
///
/// Opaque on purpose: the gRPC library's types are not part of this crate's API. What it
/// offers is its text ([`Display`](fmt::Display)) and its own
/// [`source`](std::error::Error::source) chain. Cheap to clone (shared), so [`Error`] stays
/// `Clone`.
///
/// ```
/// use std::error::Error as _;
///
/// fn chain(err: &tikv_client::Error) -> Vec<String> {
///     let mut texts = vec![err.to_string()];
///     let mut next = err.source();
///     while let Some(e) = next {
///         texts.push(e.to_string());
///         next = e.source();
///     }
///     texts
/// }
/// # assert_eq!(chain(&tikv_client::Error::Closed), ["client is closed"]);
/// ```
#[derive(Clone)]
pub struct ErrorSource(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl ErrorSource {
    pub(crate) fn new(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        ErrorSource(Arc::new(err))
    }
}

impl fmt::Debug for ErrorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ErrorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for ErrorSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl Error {
    /// An [`Error::InvalidArgument`].
    ///
    /// ```
    /// use tikv_client::Error;
    ///
    /// let err = Error::invalid_argument("batch size must be > 0");
    /// assert!(matches!(err, Error::InvalidArgument { .. }));
    /// assert!(!err.is_retryable());
    /// ```
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            message: message.into(),
        }
    }

    /// An [`Error::Codec`].
    ///
    /// ```
    /// use tikv_client::Error;
    ///
    /// let err = Error::codec("key ends inside an encoded group");
    /// assert_eq!(err.to_string(), "codec error: key ends inside an encoded group");
    /// ```
    pub fn codec(message: impl Into<String>) -> Self {
        Error::Codec {
            message: message.into(),
        }
    }

    /// An [`Error::Config`].
    ///
    /// ```
    /// use tikv_client::Error;
    ///
    /// let err = Error::config("grpc-connection-count: must be > 0");
    /// assert!(matches!(err, Error::Config { ref message } if message.contains("grpc")));
    /// ```
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }

    /// An [`Error::Internal`]: an invariant of this crate did not hold (crate-private: users
    /// and servers never cause one).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Error::Internal {
            message: message.into(),
        }
    }

    /// An [`Error::Server`]: TiKV's own error text.
    pub(crate) fn server(message: impl Into<String>) -> Self {
        Error::Server {
            message: message.into(),
        }
    }

    /// Whether retrying the whole operation may succeed: a conflict (retry the transaction with
    /// a new timestamp) or a transient condition of the cluster. Undetermined errors are never
    /// retryable.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tikv_client::Error;
    ///
    /// let timeout = Error::Timeout {
    ///     operation: "raw get".to_owned(),
    ///     after: Duration::from_secs(1),
    /// };
    /// assert!(timeout.is_retryable());
    /// assert!(!Error::invalid_argument("empty key").is_retryable());
    /// // A spent backoff is as retryable as the error it gave up on.
    /// let exhausted = Error::BackoffExhausted {
    ///     kind: "tikvRPC".to_owned(),
    ///     total_sleep: Duration::from_secs(20),
    ///     last: Box::new(timeout),
    /// };
    /// assert!(exhausted.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::WriteConflict(_)
            | Error::WriteConflictInLatch { .. }
            | Error::Retryable { .. }
            | Error::LockWaitTimeout
            | Error::ResolveLockTimeout
            | Error::Locked(_)
            | Error::CommitTsExpired { .. }
            | Error::StoreTokenLimit { .. }
            | Error::PdServerTimeout { .. }
            | Error::PdCircuitBreakerOpen { .. }
            | Error::Connect { .. }
            | Error::Timeout { .. } => true,
            Error::Deadlock(d) => d.is_retryable,
            Error::Region(r) => r.kind.is_transient(),
            Error::Grpc { code, .. } => code.is_transient(),
            Error::BackoffExhausted { last, .. } => last.is_retryable(),
            // The caller chose a bad read timestamp: the same read fails the same way again.
            Error::FutureTsRead { .. } | Error::LatestStaleRead => false,
            _ => false,
        }
    }

    /// Whether a write may or may not have been applied. The caller must find out (for a
    /// transaction: read back, or check the primary's status) before acting again.
    ///
    /// ```
    /// use tikv_client::Error;
    ///
    /// let err = Error::Undetermined {
    ///     message: "connection lost after the commit was sent".to_owned(),
    /// };
    /// assert!(err.is_undetermined());
    /// assert!(!err.is_retryable());
    /// assert!(!Error::Closed.is_undetermined());
    /// ```
    pub fn is_undetermined(&self) -> bool {
        match self {
            Error::Undetermined { .. } => true,
            Error::Region(r) => r.kind == RegionErrorKind::UndeterminedResult,
            Error::BackoffExhausted { last, .. } => last.is_undetermined(),
            _ => false,
        }
    }

    /// Whether this is a write conflict (client-go `IsErrWriteConflict`).
    ///
    /// ```
    /// use tikv_client::{Error, Timestamp};
    ///
    /// let err = Error::WriteConflictInLatch {
    ///     start_ts: Timestamp::compose(1_700_000_000_000, 0),
    /// };
    /// assert!(err.is_write_conflict());
    /// assert!(!Error::LockWaitTimeout.is_write_conflict());
    /// ```
    pub fn is_write_conflict(&self) -> bool {
        matches!(
            self,
            Error::WriteConflict(_) | Error::WriteConflictInLatch { .. }
        )
    }

    /// Whether an insert found the key already present (client-go `IsErrKeyExist`).
    ///
    /// ```
    /// use tikv_client::{Error, Key};
    ///
    /// let err = Error::KeyExists { key: Key::from("user/1") };
    /// assert!(err.is_key_exists());
    /// assert!(!err.is_retryable());
    /// ```
    pub fn is_key_exists(&self) -> bool {
        matches!(self, Error::KeyExists { .. })
    }

    /// Maps a gRPC status from a call to `address`.
    pub(crate) fn from_status(address: &str, status: &tonic::Status) -> Self {
        Error::Grpc {
            address: address.to_owned(),
            code: GrpcCode::from_tonic(status.code()),
            message: status.message().to_owned(),
            source: Some(ErrorSource::new(status.clone())),
        }
    }

    /// Maps a TiKV region error for `region_id`.
    pub(crate) fn from_region_error(region_id: Option<u64>, err: errorpb::Error) -> Self {
        let kind = RegionErrorKind::from_proto(&err);
        Error::Region(Box::new(RegionError {
            region_id,
            kind,
            message: err.message,
        }))
    }
}

impl RegionErrorKind {
    /// Classifies a region error by the detail field TiKV set.
    pub(crate) fn from_proto(err: &errorpb::Error) -> Self {
        if let Some(nl) = &err.not_leader {
            return RegionErrorKind::NotLeader {
                leader_store_id: nl.leader.as_ref().map(|p| p.store_id),
            };
        }
        if err.region_not_found.is_some() {
            return RegionErrorKind::RegionNotFound;
        }
        if err.key_not_in_region.is_some() {
            return RegionErrorKind::KeyNotInRegion;
        }
        if err.epoch_not_match.is_some() {
            return RegionErrorKind::EpochNotMatch;
        }
        if let Some(b) = &err.server_is_busy {
            return RegionErrorKind::ServerIsBusy {
                reason: b.reason.clone(),
                estimated_wait: Duration::from_millis(u64::from(b.estimated_wait_ms)),
            };
        }
        if err.stale_command.is_some() {
            return RegionErrorKind::StaleCommand;
        }
        if err.store_not_match.is_some() {
            return RegionErrorKind::StoreNotMatch;
        }
        if let Some(r) = &err.raft_entry_too_large {
            return RegionErrorKind::RaftEntryTooLarge {
                entry_size: r.entry_size,
            };
        }
        if err.max_timestamp_not_synced.is_some() {
            return RegionErrorKind::MaxTimestampNotSynced;
        }
        if err.read_index_not_ready.is_some() {
            return RegionErrorKind::ReadIndexNotReady;
        }
        if err.proposal_in_merging_mode.is_some() {
            return RegionErrorKind::ProposalInMergingMode;
        }
        if let Some(d) = &err.data_is_not_ready {
            return RegionErrorKind::DataIsNotReady {
                safe_ts: d.safe_ts.into(),
            };
        }
        if err.region_not_initialized.is_some() {
            return RegionErrorKind::RegionNotInitialized;
        }
        if let Some(d) = &err.disk_full {
            return RegionErrorKind::DiskFull {
                store_ids: d.store_id.clone(),
            };
        }
        if err.recovery_in_progress.is_some() {
            return RegionErrorKind::RecoveryInProgress;
        }
        if err.flashback_in_progress.is_some() {
            return RegionErrorKind::FlashbackInProgress;
        }
        if err.flashback_not_prepared.is_some() {
            return RegionErrorKind::FlashbackNotPrepared;
        }
        if err.is_witness.is_some() {
            return RegionErrorKind::IsWitness;
        }
        if err.mismatch_peer_id.is_some() {
            return RegionErrorKind::MismatchPeerId;
        }
        if err.bucket_version_not_match.is_some() {
            return RegionErrorKind::BucketVersionNotMatch;
        }
        if err.undetermined_result.is_some() {
            return RegionErrorKind::UndeterminedResult;
        }
        RegionErrorKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small() {
        // Boxed payloads keep Result<T, Error> cheap to move on hot paths; the gRPC source is
        // one shared pointer.
        assert!(
            std::mem::size_of::<Error>() <= 80,
            "size {}",
            std::mem::size_of::<Error>()
        );
    }

    #[test]
    fn region_errors_classify() {
        let busy = errorpb::Error {
            message: "busy".to_owned(),
            server_is_busy: Some(errorpb::ServerIsBusy {
                reason: "scheduler".to_owned(),
                estimated_wait_ms: 40,
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = Error::from_region_error(Some(3), busy);
        let Error::Region(r) = &err else { panic!() };
        assert_eq!(r.region_id, Some(3));
        assert_eq!(
            r.kind,
            RegionErrorKind::ServerIsBusy {
                reason: "scheduler".to_owned(),
                estimated_wait: Duration::from_millis(40)
            }
        );
        assert!(err.is_retryable());

        let too_large = errorpb::Error {
            raft_entry_too_large: Some(errorpb::RaftEntryTooLarge {
                region_id: 3,
                entry_size: 9 << 20,
            }),
            ..Default::default()
        };
        let err = Error::from_region_error(None, too_large);
        assert!(
            !err.is_retryable(),
            "the batch must be split, not retried as is"
        );

        let undetermined = errorpb::Error {
            undetermined_result: Some(Default::default()),
            ..Default::default()
        };
        let err = Error::from_region_error(None, undetermined);
        assert!(err.is_undetermined());
        assert!(!err.is_retryable());

        let not_leader = errorpb::Error {
            not_leader: Some(errorpb::NotLeader {
                region_id: 3,
                leader: Some(tikv_proto::metapb::Peer {
                    id: 1,
                    store_id: 4,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        assert_eq!(
            RegionErrorKind::from_proto(&not_leader),
            RegionErrorKind::NotLeader {
                leader_store_id: Some(4)
            }
        );
        assert_eq!(
            RegionErrorKind::from_proto(&Default::default()),
            RegionErrorKind::Other
        );
    }

    #[test]
    fn grpc_and_backoff_classification() {
        let unavailable = Error::from_status("127.0.0.1:1", &tonic::Status::unavailable("down"));
        assert!(unavailable.is_retryable());
        assert!(unavailable.to_string().contains("127.0.0.1:1"));
        let unimplemented = Error::from_status("a", &tonic::Status::unimplemented("no"));
        assert!(!unimplemented.is_retryable());

        let exhausted = Error::BackoffExhausted {
            kind: "regionMiss".to_owned(),
            total_sleep: Duration::from_secs(2),
            last: Box::new(unavailable),
        };
        assert!(exhausted.is_retryable());
        let exhausted_undetermined = Error::BackoffExhausted {
            kind: "tikvRPC".to_owned(),
            total_sleep: Duration::from_secs(2),
            last: Box::new(Error::Undetermined {
                message: "commit".to_owned(),
            }),
        };
        assert!(exhausted_undetermined.is_undetermined());
        assert!(!exhausted_undetermined.is_retryable());
    }

    #[test]
    fn server_text_has_its_own_variant() {
        let err = Error::server("raft: proposal dropped");
        assert!(
            matches!(err, Error::Server { ref message } if message == "raft: proposal dropped")
        );
        assert_eq!(err.to_string(), "TiKV error: raft: proposal dropped");
        assert!(!err.is_retryable());
        assert!(!err.is_undetermined());
    }

    #[test]
    fn grpc_failures_chain_their_source_and_stay_clone() {
        use std::error::Error as _;

        let status = tonic::Status::unavailable("store down");
        let err = Error::from_status("127.0.0.1:1", &status);
        let source = err.source().expect("a gRPC failure keeps the status");
        assert!(source.to_string().contains("store down"), "{source}");
        // Cloning shares the source instead of dropping it.
        let copy = err.clone();
        assert_eq!(
            copy.source().map(|s| s.to_string()),
            Some(source.to_string())
        );

        // A failure the client detected itself has no source.
        let own = Error::Grpc {
            address: "a".to_owned(),
            code: GrpcCode::Unavailable,
            message: "stream closed".to_owned(),
            source: None,
        };
        assert!(own.source().is_none());

        // A connection failure chains the error of the last attempt, and the backoff's last
        // error is its source in turn.
        let connect = Error::Connect {
            address: "pd:2379".to_owned(),
            message: "no PD endpoint answered".to_owned(),
            source: Some(ErrorSource::new(err.clone())),
        };
        let exhausted = Error::BackoffExhausted {
            kind: "pdRPC".to_owned(),
            total_sleep: Duration::from_secs(1),
            last: Box::new(connect),
        };
        let mut chain = Vec::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&exhausted);
        while let Some(e) = next {
            chain.push(e.to_string());
            next = e.source();
        }
        assert_eq!(chain.len(), 4, "{chain:#?}");
        assert!(chain[3].contains("store down"), "{chain:#?}");
    }

    #[test]
    fn timestamps_in_errors_are_typed() {
        let err = crate::rpc::key_error::KeyErr::from(kvrpcpb::KeyError {
            commit_ts_expired: Some(kvrpcpb::CommitTsExpired {
                start_ts: Timestamp::compose(100, 1).version(),
                attempted_commit_ts: Timestamp::compose(101, 0).version(),
                key: bytes::Bytes::from_static(b"k"),
                min_commit_ts: Timestamp::compose(102, 0).version(),
            }),
            ..Default::default()
        })
        .into_error();
        let Error::CommitTsExpired {
            start_ts,
            min_commit_ts,
            ..
        } = err
        else {
            panic!("got {err:?}")
        };
        assert_eq!((start_ts.physical(), start_ts.logical()), (100, 1));
        assert_eq!(min_commit_ts.physical(), 102);
        // The text shows the wire value, as TiKV's logs do.
        assert!(
            err_text(start_ts).contains(&start_ts.version().to_string()),
            "{start_ts:?}"
        );

        let locked = crate::rpc::key_error::KeyErr::from(kvrpcpb::KeyError {
            locked: Some(kvrpcpb::LockInfo {
                lock_version: 7,
                min_commit_ts: 8,
                lock_for_update_ts: 9,
                ..Default::default()
            }),
            ..Default::default()
        })
        .into_error();
        let Error::Locked(l) = locked else {
            panic!("got {locked:?}")
        };
        assert_eq!(
            (l.lock_ts, l.min_commit_ts, l.for_update_ts),
            (7.into(), 8.into(), 9.into())
        );
    }

    fn err_text(ts: Timestamp) -> String {
        Error::TxnAbortedByGc {
            start_ts: ts,
            txn_safe_point: Timestamp::ZERO,
        }
        .to_string()
    }

    #[test]
    fn read_ts_errors_are_not_retryable() {
        let future = Error::FutureTsRead {
            read_ts: Timestamp::from(10),
            current_ts: Timestamp::from(9),
        };
        assert_eq!(
            future.to_string(),
            "cannot set read timestamp to a future time, readTS: 10, currentTS: 9"
        );
        assert_eq!(
            Error::LatestStaleRead.to_string(),
            "cannot set read ts to max uint64 for stale read"
        );
        for e in [future, Error::LatestStaleRead] {
            assert!(!e.is_retryable(), "{e}");
            assert!(!e.is_undetermined(), "{e}");
        }
    }

    #[test]
    fn bad_input_is_not_retryable() {
        for e in [
            Error::invalid_argument("empty key"),
            Error::codec("truncated"),
            Error::config("grpc-connection-count: must be > 0"),
            Error::KeyTooLarge { size: 10, limit: 5 },
        ] {
            assert!(!e.is_retryable(), "{e}");
            assert!(!e.is_undetermined(), "{e}");
        }
    }
}
