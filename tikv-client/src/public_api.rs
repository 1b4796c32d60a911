//! Checks of the public surface, run as doctests (`cargo test -p tikv-client --doc`): the
//! internal modules stay out of reach of applications, and what they hand out goes through
//! the crate root. `scripts/check-public-api.sh` checks the rendered documentation for
//! `tikv-proto` and `prost` types on top of this.
//!
//! The PD client, the transport and the oracle are internals:
//!
//! ```compile_fail,E0603
//! use tikv_client::pd::PdClient;
//! ```
//!
//! ```compile_fail,E0603
//! use tikv_client::transport::{StoreClient, Transport};
//! ```
//!
//! ```compile_fail,E0603
//! use tikv_client::oracle::Oracle;
//! ```
//!
//! The region cache and the request sender are internals too:
//!
//! ```compile_fail,E0603
//! use tikv_client::locate::RegionCache;
//! ```
//!
//! ```compile_fail,E0603
//! use tikv_client::request::Backoffer;
//! ```
//!
//! ```compile_fail,E0603
//! // The oracle's timestamp is at the crate root, not in the module.
//! let _ = tikv_client::oracle::Timestamp::ZERO;
//! ```
//!
//! What applications get instead:
//!
//! ```
//! use tikv_client::{Error, Timestamp};
//!
//! let ts = Timestamp::compose(1_700_000_000_000, 3);
//! let err = Error::FutureTsRead { read_ts: ts, current_ts: Timestamp::from(ts.version() - 1) };
//! assert!(!err.is_retryable());
//! ```
#![cfg_attr(
    not(feature = "unstable-internals"),
    doc = r#"
Without the `unstable-internals` feature the benchmarks' hooks do not exist. (The feature is
on when the whole workspace is tested, as the benchmarks turn it on; this case is checked by
`cargo test -p tikv-client --doc`.)

```compile_fail,E0432
use tikv_client::unstable::PdClient;
```
"#
)]
