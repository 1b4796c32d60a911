//! Options every client call can take: its deadline, its retry budget, its column family.
//!
//! What it owns: the option types the request builders of [`RawClient`](crate::RawClient)
//! take (and that the transactional client will take too), [`ColumnFamily`] and
//! [`CallOptions`], the deadline and retry budget of one call.
//!
//! Who calls it: applications, through the builder methods of each call
//! (`client.get(key).timeout(d)`) or of each client (`RawClientBuilder::timeout`,
//! `RawClient::with_timeout`); the clients, which turn a [`CallOptions`] into a backoffer and a
//! deadline.
//!
//! Ports the per-call knobs of client-go's `rawkv.RawOption` (`SetColumnFamily`) and the
//! `context.Context` deadline and `retry.Backoffer` budget every client-go call takes.
//!
//! ```
//! use std::time::Duration;
//! use tikv_client::options::{CallOptions, ColumnFamily};
//!
//! let opts = CallOptions::default()
//!     .with_timeout(Duration::from_secs(2))
//!     .with_retry_budget(Duration::from_secs(5));
//! assert_eq!(opts.timeout, Some(Duration::from_secs(2)));
//! assert_eq!("write".parse::<ColumnFamily>()?, ColumnFamily::Write);
//! # Ok::<(), tikv_client::Error>(())
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use crate::{Error, Result};

/// A column family of TiKV's storage engine: the raw API reads and writes one of the three
/// data column families TiKV keeps.
///
/// TiKV accepts exactly these names (`default`, `lock`, `write`; TiKV's `rawkv_cf`), so a name
/// is checked when it is parsed ([`FromStr`], [`TryFrom<&str>`]) rather than sent and refused.
/// Under API V2 only [`ColumnFamily::Default`] is allowed (TiKV refuses the others); the raw
/// client refuses them before sending.
///
/// ```
/// use tikv_client::options::ColumnFamily;
///
/// assert_eq!(ColumnFamily::default(), ColumnFamily::Default);
/// assert_eq!(ColumnFamily::try_from("lock")?, ColumnFamily::Lock);
/// assert_eq!(ColumnFamily::Write.name(), "write");
/// assert!("raft".parse::<ColumnFamily>().is_err());
/// # Ok::<(), tikv_client::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum ColumnFamily {
    /// `default`: where raw keys live unless told otherwise.
    #[default]
    Default,
    /// `lock`.
    Lock,
    /// `write`.
    Write,
}

impl ColumnFamily {
    /// The column family's name as TiKV spells it.
    ///
    /// ```
    /// # use tikv_client::options::ColumnFamily;
    /// assert_eq!(ColumnFamily::Lock.name(), "lock");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            ColumnFamily::Default => "default",
            ColumnFamily::Lock => "lock",
            ColumnFamily::Write => "write",
        }
    }

    /// The name a request carries: empty for `default`, which TiKV reads as `default` under
    /// every API version (API V2 refuses the spelled-out name).
    pub(crate) fn wire_name(self) -> &'static str {
        match self {
            ColumnFamily::Default => "",
            other => other.name(),
        }
    }
}

impl fmt::Display for ColumnFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ColumnFamily {
    type Err = Error;

    /// Parses `default`, `lock` or `write` (the empty name is `default`, as in TiKV); any other
    /// name is an [`Error::InvalidArgument`].
    fn from_str(name: &str) -> Result<ColumnFamily> {
        match name {
            "" | "default" => Ok(ColumnFamily::Default),
            "lock" => Ok(ColumnFamily::Lock),
            "write" => Ok(ColumnFamily::Write),
            other => Err(Error::invalid_argument(format!(
                "column family {other:?} does not exist: TiKV's raw API has `default`, `lock` \
                 and `write`"
            ))),
        }
    }
}

impl TryFrom<&str> for ColumnFamily {
    type Error = Error;

    fn try_from(name: &str) -> Result<ColumnFamily> {
        name.parse()
    }
}

/// The deadline and the retry budget of a call.
///
/// A client holds one (set with its builder or derived with `with_timeout` /
/// `with_retry_budget`); each call starts from its client's and may override either field with
/// its own `.timeout(..)` / `.retry_budget(..)`. A field left `None` falls back to the
/// client's setting, and the client's to its default.
///
/// - `timeout`: the whole call's deadline, every attempt and every backoff sleep included.
///   When it passes the call fails with [`Error::Timeout`] (and is cancelled, as a dropped
///   future is). Default: none; each attempt still waits at most 30 s for its answer
///   (client-go `ReadTimeoutShort`).
/// - `retry_budget`: the longest the call may sleep between retries (regions moving, stores
///   busy or down) before it fails with [`Error::BackoffExhausted`]; zero: no retry at all,
///   the first retryable error is returned as it is. Default for raw calls: 40 s, client-go's
///   `rawkvMaxBackoff` of 20 s scaled by its default backoff weight of 2.
///
/// ```
/// use std::time::Duration;
/// use tikv_client::options::CallOptions;
///
/// let client_wide = CallOptions::default().with_retry_budget(Duration::from_secs(10));
/// let this_call = CallOptions::default().with_timeout(Duration::from_millis(500));
/// let effective = this_call.or(client_wide);
/// assert_eq!(effective.timeout, Some(Duration::from_millis(500)));
/// assert_eq!(effective.retry_budget, Some(Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// The whole call's deadline; `None`: the client's (or no deadline).
    pub timeout: Option<Duration>,
    /// The most time spent sleeping between retries; `None`: the client's (or its default).
    pub retry_budget: Option<Duration>,
}

impl CallOptions {
    /// Sets the deadline.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tikv_client::options::CallOptions;
    /// let o = CallOptions::default().with_timeout(Duration::from_secs(1));
    /// assert_eq!(o.timeout, Some(Duration::from_secs(1)));
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the retry budget.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tikv_client::options::CallOptions;
    /// let o = CallOptions::default().with_retry_budget(Duration::from_secs(3));
    /// assert_eq!(o.retry_budget, Some(Duration::from_secs(3)));
    /// ```
    pub fn with_retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = Some(budget);
        self
    }

    /// These options, with each field left `None` taken from `fallback`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tikv_client::options::CallOptions;
    /// let base = CallOptions::default().with_timeout(Duration::from_secs(9));
    /// assert_eq!(CallOptions::default().or(base).timeout, Some(Duration::from_secs(9)));
    /// ```
    pub fn or(self, fallback: CallOptions) -> CallOptions {
        CallOptions {
            timeout: self.timeout.or(fallback.timeout),
            retry_budget: self.retry_budget.or(fallback.retry_budget),
        }
    }
}

/// The future of an awaited request builder: its output is the call's result. Boxed because
/// stable Rust cannot name the type of the `async` code that runs a call.
///
/// ```no_run
/// use std::future::IntoFuture;
/// use tikv_client::{Value, options::CallFuture};
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let pending: CallFuture<'_, Option<Value>> = client.get("k").into_future();
/// let value = pending.await?;
/// # Ok(()) }
/// ```
pub type CallFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Runs `call` under `timeout`: without one the call runs as it is (no timer is armed); with
/// one it is dropped when the deadline passes and the caller gets [`Error::Timeout`] naming
/// `operation`.
pub(crate) async fn with_deadline<T>(
    operation: &'static str,
    timeout: Option<Duration>,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    let Some(after) = timeout else {
        return call.await;
    };
    let started = tokio::time::Instant::now();
    let timed_out = || Error::Timeout {
        operation: operation.to_owned(),
        after,
    };
    match tokio::time::timeout(after, call).await {
        // The call's backoffer carries the same deadline and may notice it first (both fire
        // in one timer tick): the caller still hears of its own deadline, not of an attempt's.
        Ok(Err(Error::Timeout { .. })) if started.elapsed() >= after => Err(timed_out()),
        Ok(result) => result,
        Err(_) => Err(timed_out()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_family_names_round_trip_and_unknown_names_are_refused() {
        for cf in [
            ColumnFamily::Default,
            ColumnFamily::Lock,
            ColumnFamily::Write,
        ] {
            assert_eq!(cf.name().parse::<ColumnFamily>().unwrap(), cf);
            assert_eq!(cf.to_string(), cf.name());
        }
        assert_eq!("".parse::<ColumnFamily>().unwrap(), ColumnFamily::Default);
        assert_eq!(ColumnFamily::Default.wire_name(), "");
        assert_eq!(ColumnFamily::Lock.wire_name(), "lock");
        for bad in ["raft", "Default", "LOCK", " write"] {
            assert!(matches!(
                ColumnFamily::try_from(bad),
                Err(Error::InvalidArgument { .. })
            ));
        }
    }

    #[test]
    fn call_options_fall_back_field_by_field() {
        let s = Duration::from_secs;
        let client = CallOptions::default()
            .with_timeout(s(1))
            .with_retry_budget(s(2));
        let call = CallOptions::default().with_retry_budget(s(3));
        assert_eq!(
            call.or(client),
            CallOptions {
                timeout: Some(s(1)),
                retry_budget: Some(s(3))
            }
        );
        assert_eq!(
            CallOptions::default().or(CallOptions::default()),
            CallOptions::default()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_is_a_typed_timeout() {
        let slow = std::future::pending::<Result<()>>();
        let err = with_deadline("raw get", Some(Duration::from_millis(5)), slow)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Timeout { operation, after } if operation == "raw get" && *after == Duration::from_millis(5)),
            "{err:?}"
        );
        assert_eq!(with_deadline("x", None, async { Ok(7) }).await.unwrap(), 7);
    }

    /// The call's own deadline noticed inside (by its backoffer or an attempt cut to it) is
    /// reported as the call's timeout; an attempt's timeout well before the deadline is not.
    #[tokio::test(start_paused = true)]
    async fn the_calls_deadline_noticed_inside_is_the_calls_timeout() {
        let deadline = Duration::from_millis(50);
        let inner = || Error::Timeout {
            operation: "retrying a request".to_owned(),
            after: Duration::from_millis(3),
        };
        let late = async {
            tokio::time::sleep(deadline).await;
            Err::<(), _>(inner())
        };
        let err = with_deadline("raw put", Some(deadline), late)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Timeout { operation, after } if operation == "raw put" && *after == deadline),
            "{err:?}"
        );
        let early = async { Err::<(), _>(inner()) };
        let err = with_deadline("raw put", Some(deadline), early)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Timeout { operation, .. } if operation == "retrying a request"),
            "{err:?}"
        );
    }
}
