//! Sending requests to regions: the retry machinery shared by every command.
//!
//! | file | owns | ports (client-go) |
//! |---|---|---|
//! | `backoff.rs` | [`Backoffer`]: typed backoff kinds, budgets, deadline, fork/merge | `config/retry/` |
//! | `selector.rs` | the replica (and proxy) of each attempt; what each answer teaches | `internal/locate/replica_selector.go` |
//! | `sender.rs` | one request to one region: the retry loop, every region error's reaction, send failures, liveness probes and the health loop, the store limit, read-ts validation | `internal/locate/region_request.go`, `store_cache.go` (liveness) |
//! | `dispatch.rs` | send by key, fan-out over regions with a client-wide limit, relocation | `rawkv/rawkv.go` (`sendReq`, `sendBatchReq`), `retry.MayBackoffForRegionError` |
//!
//! Who calls it: the raw and transactional clients. Data flows one way: this module uses
//! `locate` (where regions are) and `transport` (moving bytes); neither calls back up.

mod backoff;
pub(crate) mod dispatch;
pub(crate) mod selector;
pub(crate) mod sender;
#[cfg(test)]
mod tests;

pub(crate) use backoff::region_error_needs_backoff;
pub(crate) use backoff::{BackoffKind, BackoffVars, Backoffer, ForkReport};
