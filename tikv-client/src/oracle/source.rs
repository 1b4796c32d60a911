//! The seam between the oracle and PD: [`TimestampSource`].
//!
//! The PD client (`crate::pd`) implements this trait; the oracle only ever talks to PD through
//! it, so oracle tests run against an in-memory source and the PD client stays free of oracle
//! policy (caching, low-resolution refresh, read-ts validation).

use std::fmt::Debug;

use crate::Result;
use crate::oracle::Timestamp;
use crate::pd::BoxFuture;

/// What the timestamp oracle needs from PD.
///
/// Errors are transport failures, PD errors and timeouts, already retried within the PD
/// client's own budget; the oracle does not retry on top of them. This is a shared contract
/// with the PD client: keep the signatures stable.
pub(crate) trait TimestampSource: Send + Sync + Debug + 'static {
    /// A fresh timestamp from PD's TSO (the global TSO, or the keyspace group's TSO under API
    /// V2). Strictly greater than every timestamp returned before by this source.
    fn get_timestamp(&self) -> BoxFuture<'_, Result<Timestamp>>;

    /// The cluster's external timestamp (PD `GetExternalTimestamp`); 0 when never set.
    fn get_external_timestamp(&self) -> BoxFuture<'_, Result<u64>>;

    /// Sets the cluster's external timestamp (PD `SetExternalTimestamp`). PD rejects a value
    /// that is not above the current one or is above the global TSO.
    fn set_external_timestamp(&self, ts: u64) -> BoxFuture<'_, Result<()>>;

    /// The minimum of the current timestamps of all TSO keyspace groups (PD `GetMinTS`). With a
    /// single (non-microservice) TSO it is just a fresh timestamp.
    fn get_min_ts(&self) -> BoxFuture<'_, Result<Timestamp>>;
}
