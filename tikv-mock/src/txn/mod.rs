//! Transactional KV commands (Kv* RPCs) over the MVCC store: the glue between the TiKV service's
//! dispatcher and the actions of `crate::mvcc`.
//!
//! Who calls it: `tikv::dispatch::execute`, with the cluster lock held; each handler validates the
//! request's context (region, epoch, key range) and API version, runs the action over a
//! `mvcc::Txn`, and applies the write batch only when the command succeeds.
//!
//! Follows TiKV `src/storage/mod.rs` (reads), `src/storage/txn/commands/*.rs` (writes) and
//! `src/server/service/kv.rs` (how errors land in each response).

pub(crate) mod common;
pub(crate) mod pessimistic;
pub(crate) mod read;
pub(crate) mod write;
