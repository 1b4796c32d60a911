//! tikv-mock's integration tests: one binary, one module per area, each against mock clusters
//! started on port 0 (and `binary`, against the `tikv-mock` executable).

// Everything in this crate is test code: an unwrap that fails is a failed test, which is what
// the workspace's unwrap/expect/panic lints leave to tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod batch;
mod binary;
mod common;
mod faults;
mod forwarding;
mod garbage;
mod gc;
mod pd;
mod pd_forwarding;
mod pessimistic;
mod pipelined;
mod raw;
mod router_microservice;
mod shared_locks;
mod topology;
mod tso_microservice;
mod txn;
