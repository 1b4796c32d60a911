//! Timestamps and the timestamp oracle.
//!
//! (Module docs to be completed by the oracle's author.)

mod timestamp;

pub use timestamp::{LOGICAL_BITS, Timestamp};
