//! `tikv-mock`: an in-memory TiKV + PD cluster that serves the real gRPC protocol on loopback
//! ports, so clients can be tested without a real cluster.
//!
//! This crate is a placeholder in the workspace foundation; the cluster itself (PD service, TiKV
//! service per store, raw KV, regions, fault rules, then transactional MVCC) lands with the
//! tikv-mock issues. Server semantics follow TiKV and PD (`mock-cluster-spec.md`).
