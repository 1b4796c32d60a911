//! Collapsing of duplicate region-wide ResolveLock requests: while one is in flight for a
//! (region, start_ts, async) triple, identical requests wait for its answer instead of being
//! sent again. Many readers that meet locks of the same transaction in the same region would
//! otherwise each ask TiKV to resolve the whole region.
//!
//! Ports client-go `internal/client/client_collapse.go` (`reqCollapse`, a singleflight keyed by
//! region id, start version and `is_async`). Requests that name keys (ResolveLockLite) or carry
//! `txn_infos` (the GC worker's batch resolve) are never collapsed, as in client-go. The
//! collapse is per store pool rather than process-wide, and the first caller sends the request
//! itself instead of handing it to a background goroutine: if that caller goes away, the
//! waiting ones notice and one of them sends its own copy.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tikv_proto::kvrpcpb;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tokio::sync::watch;

use crate::Result;

/// Region id, start ts and `is_async` of a region-wide ResolveLock.
pub(crate) type Key = (u64, u64, bool);

type Outcome = Option<Result<Box<RespCmd>>>;

/// The calls in flight, by key.
#[derive(Debug, Default)]
pub(crate) struct Collapse {
    calls: Mutex<HashMap<Key, watch::Receiver<Outcome>>>,
}

/// What a caller does with its request.
#[derive(Debug)]
pub(crate) enum Role<'a> {
    /// Send it, then publish the answer with [`Leader::finish`].
    Leader(Leader<'a>),
    /// Wait for the leader's answer; `None` means the leader went away without one.
    Follower(watch::Receiver<Outcome>),
}

/// The right (and duty) to send the request for a key. Dropping it without
/// [`Leader::finish`] releases the followers to try themselves.
#[derive(Debug)]
pub(crate) struct Leader<'a> {
    collapse: &'a Collapse,
    key: Key,
    publish: Option<watch::Sender<Outcome>>,
}

/// The collapse key of a request, or `None` when it must not be collapsed.
pub(crate) fn key_of(req: &kvrpcpb::ResolveLockRequest) -> Option<Key> {
    if !req.keys.is_empty() || !req.txn_infos.is_empty() {
        return None;
    }
    let region_id = req.context.as_ref().map_or(0, |c| c.region_id);
    // `is_txn_file` follows from the start ts, so it needs no place in the key.
    Some((region_id, req.start_version, req.is_async))
}

impl Collapse {
    /// Joins the call for `key`, or starts one.
    pub(crate) fn join(&self, key: Key) -> Role<'_> {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(outcome) = calls.get(&key) {
            return Role::Follower(outcome.clone());
        }
        let (publish, outcome) = watch::channel(None);
        calls.insert(key, outcome);
        Role::Leader(Leader {
            collapse: self,
            key,
            publish: Some(publish),
        })
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Leader<'_> {
    /// Publishes the answer to every follower.
    pub(crate) fn finish(mut self, result: &Result<Box<RespCmd>>) {
        self.retire();
        if let Some(publish) = self.publish.take() {
            publish.send_replace(Some(result.clone()));
        }
    }

    /// Removes the call, so that later requests start a new one.
    fn retire(&self) {
        self.collapse
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if self.publish.is_some() {
            // Gone without an answer: dropping the sender tells the followers.
            self.retire();
        }
    }
}

/// Waits for a leader's answer; `None` when the leader went away without one.
pub(crate) async fn follow(mut outcome: watch::Receiver<Outcome>) -> Option<Result<Box<RespCmd>>> {
    let answer = outcome.wait_for(Option::is_some).await.ok()?;
    answer.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(
        region: u64,
        start: u64,
        keys: usize,
        is_async: bool,
    ) -> kvrpcpb::ResolveLockRequest {
        kvrpcpb::ResolveLockRequest {
            context: Some(kvrpcpb::Context {
                region_id: region,
                ..Default::default()
            }),
            start_version: start,
            commit_version: start + 10,
            keys: (0..keys).map(|i| vec![i as u8].into()).collect(),
            is_async,
            ..Default::default()
        }
    }

    // Ported from client-go internal/client/client_test.go TestCollapseResolveLock (which
    // requests share a key); the end-to-end behaviour is in tests/transport.rs.
    #[test]
    fn only_region_wide_resolves_collapse() {
        assert_eq!(key_of(&resolve(1, 10, 0, false)), Some((1, 10, false)));
        assert_eq!(key_of(&resolve(1, 10, 0, true)), Some((1, 10, true)));
        assert_eq!(key_of(&resolve(1, 10, 1, false)), None, "lite resolve");
        let batch = kvrpcpb::ResolveLockRequest {
            txn_infos: vec![kvrpcpb::TxnInfo {
                txn: 10,
                status: 20,
                ..Default::default()
            }],
            ..resolve(1, 0, 0, false)
        };
        assert_eq!(key_of(&batch), None, "batch resolve");
    }

    #[tokio::test]
    async fn followers_get_the_leaders_answer() {
        let collapse = Collapse::default();
        let Role::Leader(leader) = collapse.join((1, 10, false)) else {
            panic!("first caller leads")
        };
        let Role::Follower(follower) = collapse.join((1, 10, false)) else {
            panic!("second caller follows")
        };
        assert!(matches!(collapse.join((1, 10, true)), Role::Leader(_)));
        leader.finish(&Ok(Box::new(RespCmd::ResolveLock(Default::default()))));
        assert_eq!(collapse.in_flight(), 0);
        let answer = follow(follower).await;
        assert!(matches!(
            answer.map(|a| a.map(|r| *r)),
            Some(Ok(RespCmd::ResolveLock(_)))
        ));
    }

    #[tokio::test]
    async fn a_vanished_leader_releases_followers() {
        let collapse = Collapse::default();
        let leader = collapse.join((1, 10, false));
        let Role::Follower(follower) = collapse.join((1, 10, false)) else {
            panic!("second caller follows")
        };
        drop(leader);
        assert_eq!(collapse.in_flight(), 0);
        assert!(follow(follower).await.is_none());
        assert!(matches!(collapse.join((1, 10, false)), Role::Leader(_)));
    }
}
