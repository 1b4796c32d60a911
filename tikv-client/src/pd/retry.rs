//! How PD failures are classified and retried: an exponential backoff bounded by a deadline,
//! and the rule that tells a leader change (retry elsewhere) from an answer (return it).
//!
//! Who calls it: every PD call in [`super::client`], the member refresh in
//! [`super::discovery`] and the TSO dispatcher in [`super::tso`].
//!
//! Ports tikv/pd `client/pkg/retry/backoff.go` (the exponential backoffer) and the error
//! predicates of `client/errs/errs.go` (`IsLeaderChange`, `IsNetworkError`). PD reports a
//! request that reached a follower as an UNAVAILABLE status `not leader`, a TSO request on a
//! follower as an UNKNOWN status whose text contains `not leader`, and a cluster without leader
//! with `no leader` in the text; all of them mean "find the leader and try again".

use std::time::Duration;

use tokio::time::Instant;
use tonic::Code;

use crate::Error;
use crate::error::{ErrorSource, GrpcCode};

/// PD's markers of "ask the leader instead" in error texts (`errs.NoLeaderErr`,
/// `errs.NotLeaderErr`, `errs.NotServedErr`, `errs.NotPrimaryErr`).
const LEADER_CHANGE_MARKERS: [&str; 4] =
    ["no leader", "not leader", "is not served", "not primary"];

/// Whether a PD error text says the request should go to another member.
pub(crate) fn is_leader_change(message: &str) -> bool {
    LEADER_CHANGE_MARKERS.iter().any(|m| message.contains(m))
}

/// Exponential backoff: `base`, doubling up to `max`, never sleeping past a deadline.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// PD's member-update backoff (`UpdateMemberBackOffBaseTime`, `UpdateMemberMaxBackoffTime`).
    pub(crate) fn member_update() -> Self {
        Backoff::new(Duration::from_millis(20), Duration::from_millis(100))
    }

    /// The backoff between attempts of one call while PD changes leader.
    pub(crate) fn call() -> Self {
        Backoff::new(Duration::from_millis(20), Duration::from_millis(500))
    }

    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        let base = base.min(max);
        Backoff {
            base,
            max,
            next: base,
        }
    }

    /// The next interval, cut so that it ends at `deadline` at the latest; `None` when the
    /// deadline has passed.
    pub(crate) fn next_before(&mut self, deadline: Instant) -> Option<Duration> {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        let interval = self.next.min(left);
        self.next = (self.next * 2).min(self.max);
        Some(interval)
    }

    /// Sleeps the next interval; false when the deadline leaves no time for another attempt.
    pub(crate) async fn sleep_before(&mut self, deadline: Instant) -> bool {
        match self.next_before(deadline) {
            Some(interval) => {
                tokio::time::sleep(interval).await;
                Instant::now() < deadline
            }
            None => false,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.base;
    }
}

/// How a background task's retried step ended ([`retry_in_background`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retried {
    /// An attempt succeeded.
    Done,
    /// The deadline left no time for another attempt; the task tries again on its next turn.
    GaveUp,
    /// The client is shutting down: the task should end.
    Shutdown,
}

/// Runs `attempt` until it returns true or `deadline` leaves no time for another, sleeping the
/// member-update backoff between attempts; stops at once when `shutdown` changes. The shared
/// shape of the member refresh, the TSO service-mode check and the router registry read.
pub(crate) async fn retry_in_background<F, Fut>(
    deadline: Instant,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    mut attempt: F,
) -> Retried
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut backoff = Backoff::member_update();
    loop {
        let done = tokio::select! {
            done = attempt() => done,
            _ = shutdown.changed() => return Retried::Shutdown,
        };
        if done {
            return Retried::Done;
        }
        let slept = tokio::select! {
            more = backoff.sleep_before(deadline) => more,
            _ = shutdown.changed() => return Retried::Shutdown,
        };
        if !slept {
            return Retried::GaveUp;
        }
    }
}

/// What a failed attempt means for the call.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The member is not (or no longer) the leader, or could not be reached: refresh the
    /// members and try again while the deadline allows. Carries what to report if it does not.
    Retry(Error),
    /// A definite answer: return it.
    Fatal(Error),
}

/// Classifies a gRPC status from a PD member at `address`.
pub(crate) fn classify_status(address: &str, status: &tonic::Status) -> Failure {
    let message = status.message();
    match status.code() {
        // Connection failures surface as UNAVAILABLE, as do PD's `not leader` and
        // `server not started`; a server-side deadline is worth another attempt too.
        Code::Unavailable | Code::DeadlineExceeded => Failure::Retry(grpc_error(address, status)),
        // A TSO server at the address of the one the client meant: find the primary again.
        Code::FailedPrecondition if message.starts_with("mismatch callee id") => {
            Failure::Retry(grpc_error(address, status))
        }
        // PD in microservice mode with no TSO primary to forward to: one may be elected.
        Code::NotFound if message == "not found tso address" => {
            Failure::Retry(grpc_error(address, status))
        }
        Code::FailedPrecondition if message.starts_with("mismatch cluster id") => {
            Failure::Fatal(cluster_id_mismatch(message).unwrap_or_else(|| Error::Pd {
                message: message.to_owned(),
            }))
        }
        // The transport reports a connection reset mid-call as UNKNOWN or CANCELLED with
        // its own text; PD's own UNKNOWN errors carry Go error texts.
        _ if is_leader_change(message) => Failure::Retry(grpc_error(address, status)),
        Code::Unknown if is_transport_failure(status) => {
            Failure::Retry(grpc_error(address, status))
        }
        Code::Cancelled => Failure::Retry(grpc_error(address, status)),
        // PD returns plain Go errors (as UNKNOWN) for business failures of some RPCs.
        Code::Unknown => Failure::Fatal(Error::Pd {
            message: message.to_owned(),
        }),
        _ => Failure::Fatal(grpc_error(address, status)),
    }
}

/// Whether a failed call says the member could not be reached (PD's `IsNetworkError`:
/// UNAVAILABLE or DEADLINE_EXCEEDED, plus a connection broken mid-call), as opposed to a member
/// that answered "not leader" (also UNAVAILABLE, but with PD's marker in the text).
pub(crate) fn is_network_failure(status: &tonic::Status) -> bool {
    if is_leader_change(status.message()) {
        return false;
    }
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => true,
        Code::Unknown => is_transport_failure(status),
        _ => false,
    }
}

/// Whether an UNKNOWN status was made by the client's transport (the connection broke) rather
/// than returned by PD.
fn is_transport_failure(status: &tonic::Status) -> bool {
    use std::error::Error as _;
    let mut source = status.source();
    while let Some(err) = source {
        if err.is::<tonic::transport::Error>() || err.is::<std::io::Error>() {
            return true;
        }
        source = err.source();
    }
    let message = status.message();
    message.contains("transport error")
        || message.contains("connection")
        || message.contains("broken pipe")
        || message.contains("stream closed")
}

pub(crate) fn grpc_error(address: &str, status: &tonic::Status) -> Error {
    Error::Grpc {
        address: address.to_owned(),
        code: GrpcCode::from_tonic(status.code()),
        message: status.message().to_owned(),
        source: Some(ErrorSource::new(status.clone())),
    }
}

/// Parses PD's `mismatch cluster id, need X but got Y` (X is the server's id, Y the one the
/// request carried, i.e. ours).
fn cluster_id_mismatch(message: &str) -> Option<Error> {
    let rest = message.strip_prefix("mismatch cluster id, need ")?;
    let (need, got) = rest.split_once(" but got ")?;
    Some(Error::ClusterIdMismatch {
        expected: got.trim().parse().ok()?,
        actual: need.trim().parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_and_respects_the_deadline() {
        let mut b = Backoff::new(Duration::from_millis(20), Duration::from_millis(100));
        let far = Instant::now() + Duration::from_secs(10);
        let intervals: Vec<_> = (0..5).map(|_| b.next_before(far).unwrap()).collect();
        assert_eq!(
            intervals,
            [20, 40, 80, 100, 100].map(Duration::from_millis).to_vec()
        );
        b.reset();
        let near = Instant::now() + Duration::from_millis(5);
        assert_eq!(b.next_before(near), Some(Duration::from_millis(5)));
        tokio::time::advance(Duration::from_millis(6)).await;
        assert_eq!(b.next_before(near), None);
        assert!(!b.sleep_before(near).await);
        // A sleep that reaches the deadline leaves no time for another attempt.
        let start = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        assert!(!b.sleep_before(start + Duration::from_millis(300)).await);
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[test]
    fn statuses_classify_like_pd_client() {
        let retry = |s: tonic::Status| matches!(classify_status("a", &s), Failure::Retry(_));
        assert!(retry(tonic::Status::unavailable("not leader")));
        assert!(retry(tonic::Status::unavailable("tcp connect error")));
        assert!(retry(tonic::Status::unknown(
            "[PD:tso:ErrGenerateTimestamp]generate timestamp failed, requested pd not leader of \
             cluster"
        )));
        assert!(retry(tonic::Status::deadline_exceeded("slow")));
        assert!(retry(tonic::Status::unknown("transport error")));
        assert!(!retry(tonic::Status::unimplemented("")));
        match classify_status("a", &tonic::Status::unknown("[PD:gc:ErrX]boom")) {
            Failure::Fatal(Error::Pd { message }) => assert_eq!(message, "[PD:gc:ErrX]boom"),
            other => panic!("{other:?}"),
        }
        match classify_status(
            "a",
            &tonic::Status::failed_precondition("mismatch cluster id, need 7 but got 9"),
        ) {
            Failure::Fatal(Error::ClusterIdMismatch { expected, actual }) => {
                assert_eq!((expected, actual), (9, 7));
            }
            other => panic!("{other:?}"),
        }
        assert!(is_leader_change("no leader"));
        assert!(!is_leader_change("region not found"));

        // A refused connection is a network failure; PD's not-leader answers are not.
        assert!(is_network_failure(&tonic::Status::unavailable(
            "tcp connect error: Connection refused"
        )));
        assert!(is_network_failure(&tonic::Status::deadline_exceeded("")));
        assert!(!is_network_failure(&tonic::Status::unavailable(
            "not leader"
        )));
        assert!(!is_network_failure(&tonic::Status::unavailable(
            "not leader and follower handling not allowed"
        )));
        assert!(!is_network_failure(&tonic::Status::invalid_argument(
            "forwarded host \"x\" is not a client URL of the PD leader: pd not leader of cluster"
        )));
        assert!(!is_network_failure(&tonic::Status::unknown(
            "[PD:gc:ErrX]boom"
        )));
    }
}
