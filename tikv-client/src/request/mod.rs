//! Sending requests to regions: the retry machinery shared by every command.
//!
//! Today this holds the [`Backoffer`] (client-go `config/retry`); the region request sender
//! (client-go `internal/locate/region_request.go`) joins it here.

mod backoff;

pub use backoff::{BackoffKind, BackoffVars, Backoffer, Jitter, Schedule};
