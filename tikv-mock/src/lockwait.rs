//! The lock manager of a store: the table of pessimistic-lock requests waiting for another
//! transaction's lock, and the wait-for graph that detects deadlocks among them.
//!
//! Who calls it: `txn::pessimistic` parks a KvPessimisticLock request here (outside the cluster
//! lock, since waiting is asynchronous), and `tikv::dispatch` calls [`LockWaits::notify_changed`]
//! after every executed request. A waiter does not need to be told which lock went away: on each
//! change it re-reads the store under the cluster lock and sees whether the lock it waits for is
//! still there, so every path that removes a lock (commit, rollback, cleanup, resolve, status
//! checks, pessimistic rollback, delete range) wakes it without those handlers knowing about it.
//!
//! A request blocked by a shared record waits for all its holders (one wait-for edge each) and
//! counts as released when none of them is left; the run of shared-lock requests at the head of
//! a key's queue is woken together (TiKV `lock_waiting_queue.rs` `pop_for_waking_up`).
//!
//! Follows TiKV `src/server/lock_manager/waiter_manager.rs` (queue per key, smaller start ts
//! first, the others woken after `wake-up-delay-duration`), `src/server/lock_manager/deadlock.rs`
//! (`DetectTable::detect`: a path from the lock's txn back to the waiter is a deadlock, the wait
//! chain runs from the lock's txn around to the waiter's own edge) and
//! `src/storage/lock_manager/` (timeouts). Key hashes are our own 64-bit hash of the raw key, not
//! TiKV's farmhash fingerprint: clients only compare them with each other.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tikv_proto::{deadlock::WaitForEntry, kvrpcpb};
use tokio::sync::watch;

/// TiKV's `pessimistic-txn.wait-for-lock-timeout` default: the wait when the request asks for
/// the default, and the ceiling of any wait it asks for.
pub(crate) const WAIT_FOR_LOCK_TIMEOUT: Duration = Duration::from_millis(1000);

/// TiKV's `pessimistic-txn.wake-up-delay-duration` default: how long the waiters behind the
/// head of a key's queue wait after the lock is released.
pub(crate) const WAKE_UP_DELAY: Duration = Duration::from_millis(20);

/// The wait a request's `wait_timeout` asks for: `None` means do not wait.
pub(crate) fn wait_timeout(requested_ms: i64) -> Option<Duration> {
    match requested_ms {
        ms if ms < 0 => None,
        0 => Some(WAIT_FOR_LOCK_TIMEOUT),
        ms => Some(Duration::from_millis(ms.unsigned_abs()).min(WAIT_FOR_LOCK_TIMEOUT)),
    }
}

/// The hash a lock's key is known by in the wait-for graph and in deadlock errors.
pub(crate) fn key_hash(raw_key: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    raw_key.hash(&mut h);
    h.finish()
}

/// One wait-for edge: a transaction waits for `lock_ts`'s lock on `key`.
#[derive(Debug, Clone)]
struct Edge {
    id: u64,
    lock_ts: u64,
    key: Bytes,
    key_hash: u64,
    since: Instant,
}

impl Edge {
    fn entry(&self, txn: u64) -> WaitForEntry {
        WaitForEntry {
            txn,
            wait_for_txn: self.lock_ts,
            key_hash: self.key_hash,
            key: self.key.clone(),
            resource_group_tag: Bytes::new(),
            wait_time: u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Waiting transaction → the locks it waits for.
    wait_for: HashMap<u64, Vec<Edge>>,
    /// Storage key → waiters `(start_ts, waiter id)`, smallest start ts first, each with
    /// whether it asks for a shared lock.
    queues: HashMap<Bytes, BTreeMap<(u64, u64), bool>>,
}

impl Inner {
    /// A path of wait-for edges from `from` back to `to`, as the entries TiKV reports.
    fn path(&self, from: u64, to: u64) -> Option<Vec<WaitForEntry>> {
        let mut predecessor: HashMap<u64, (u64, usize)> = HashMap::new();
        let mut stack = vec![from];
        let mut seen = BTreeSet::from([from]);
        while let Some(cur) = stack.pop() {
            for (i, edge) in self.wait_for.get(&cur).into_iter().flatten().enumerate() {
                if edge.lock_ts == to {
                    let mut chain = vec![edge.entry(cur)];
                    let mut node = cur;
                    while let Some(&(prev, idx)) = predecessor.get(&node) {
                        chain.push(self.wait_for[&prev][idx].entry(prev));
                        node = prev;
                    }
                    chain.reverse();
                    return Some(chain);
                }
                if seen.insert(edge.lock_ts) {
                    predecessor.insert(edge.lock_ts, (cur, i));
                    stack.push(edge.lock_ts);
                }
            }
        }
        None
    }
}

/// The lock-wait table and deadlock detector, shared by every store of the cluster (TiKV runs
/// one detector for the whole cluster, on the leader of the first region).
#[derive(Debug)]
pub(crate) struct LockWaits {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

impl Default for LockWaits {
    fn default() -> Self {
        LockWaits {
            inner: Mutex::new(Inner::default()),
            changed: watch::Sender::new(0),
        }
    }
}

/// A parked request; dropping it leaves the queue and removes its wait-for edge.
#[derive(Debug)]
pub(crate) struct Waiter {
    waits: Arc<LockWaits>,
    id: u64,
    start_ts: u64,
    enc_key: Bytes,
    shared: bool,
}

impl LockWaits {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that fires on every later [`LockWaits::notify_changed`]; take it before
    /// reading the store, so a release right after the read is not missed.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// How many lock requests are parked right now, over every key of the cluster.
    pub(crate) fn parked(&self) -> usize {
        self.inner().queues.values().map(BTreeMap::len).sum()
    }

    /// Tells every waiter that the store may have changed.
    pub(crate) fn notify_changed(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Parks transaction `start_ts` on `enc_key`, waiting for the transactions `lock_ts`
    /// (one lock's, or every holder of a shared record: TiKV detects per holder). Unless it
    /// holds no lock yet (`is_first_lock`), a path from any of them back to it is a deadlock:
    /// the error is returned and nothing is registered. `shared` says the request asks for a
    /// shared lock.
    pub(crate) fn park(
        self: &Arc<Self>,
        start_ts: u64,
        lock_ts: &[u64],
        raw_key: &Bytes,
        enc_key: &Bytes,
        is_first_lock: bool,
        shared: bool,
    ) -> Result<Waiter, kvrpcpb::Deadlock> {
        let mut inner = self.inner();
        let hash = key_hash(raw_key);
        let id = inner.next_id;
        inner.next_id += 1;
        let edges: Vec<Edge> = lock_ts
            .iter()
            .map(|&lock_ts| Edge {
                id,
                lock_ts,
                key: raw_key.clone(),
                key_hash: hash,
                since: Instant::now(),
            })
            .collect();
        if !is_first_lock {
            for edge in &edges {
                if let Some(mut chain) = inner.path(edge.lock_ts, start_ts) {
                    let deadlock_key_hash = chain.last().map_or(0, |e| e.key_hash);
                    chain.push(edge.entry(start_ts));
                    return Err(kvrpcpb::Deadlock {
                        lock_ts: edge.lock_ts,
                        lock_key: raw_key.clone(),
                        deadlock_key_hash,
                        wait_chain: chain,
                        ..Default::default()
                    });
                }
            }
            if !edges.is_empty() {
                inner.wait_for.entry(start_ts).or_default().extend(edges);
            }
        }
        inner
            .queues
            .entry(enc_key.clone())
            .or_default()
            .insert((start_ts, id), shared);
        Ok(Waiter {
            waits: self.clone(),
            id,
            start_ts,
            enc_key: enc_key.clone(),
            shared,
        })
    }
}

impl Waiter {
    /// Whether this waiter is woken at once when the lock goes: no waiter with a smaller start
    /// ts is queued on the same key, or this is a shared request and every waiter before it is
    /// too (TiKV wakes the run of shared requests at the head of a queue together). The others
    /// are woken after [`WAKE_UP_DELAY`].
    pub(crate) fn is_head(&self) -> bool {
        let inner = self.waits.inner();
        let Some(queue) = inner.queues.get(&self.enc_key) else {
            return true;
        };
        let mut before = queue.range(..(self.start_ts, self.id));
        if self.shared {
            before.all(|(_, &shared)| shared)
        } else {
            before.next().is_none()
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut inner = self.waits.inner();
        if let Some(edges) = inner.wait_for.get_mut(&self.start_ts) {
            edges.retain(|e| e.id != self.id);
            if edges.is_empty() {
                inner.wait_for.remove(&self.start_ts);
            }
        }
        if let Some(q) = inner.queues.get_mut(&self.enc_key) {
            q.remove(&(self.start_ts, self.id));
            if q.is_empty() {
                inner.queues.remove(&self.enc_key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn timeouts_follow_tikv() {
        assert_eq!(wait_timeout(-1), None);
        assert_eq!(wait_timeout(0), Some(WAIT_FOR_LOCK_TIMEOUT));
        assert_eq!(wait_timeout(50), Some(Duration::from_millis(50)));
        assert_eq!(wait_timeout(5000), Some(WAIT_FOR_LOCK_TIMEOUT));
    }

    #[test]
    fn three_txn_cycle_is_a_deadlock_with_the_whole_chain() {
        let waits = Arc::new(LockWaits::default());
        let a = waits
            .park(10, &[20], &k("a"), &k("ea"), false, false)
            .unwrap();
        let _b = waits
            .park(20, &[30], &k("b"), &k("eb"), false, false)
            .unwrap();
        let dl = waits
            .park(30, &[10], &k("c"), &k("ec"), false, false)
            .unwrap_err();
        assert_eq!(dl.lock_ts, 10);
        assert_eq!(dl.lock_key, k("c"));
        let chain: Vec<(u64, u64)> = dl
            .wait_chain
            .iter()
            .map(|e| (e.txn, e.wait_for_txn))
            .collect();
        assert_eq!(chain, vec![(10, 20), (20, 30), (30, 10)]);
        assert_eq!(dl.deadlock_key_hash, key_hash(b"b"));
        // The first lock of a txn cannot close a cycle; dropping an edge breaks it.
        assert!(
            waits
                .park(30, &[10], &k("c"), &k("ec"), true, false)
                .is_ok()
        );
        drop(a);
        assert!(
            waits
                .park(30, &[10], &k("c"), &k("ec"), false, false)
                .is_ok()
        );
    }

    #[test]
    fn queue_head_is_the_smallest_start_ts() {
        let waits = Arc::new(LockWaits::default());
        let late = waits
            .park(50, &[1], &k("a"), &k("ea"), true, false)
            .unwrap();
        let early = waits
            .park(40, &[1], &k("a"), &k("ea"), true, false)
            .unwrap();
        assert!(early.is_head() && !late.is_head());
        drop(early);
        assert!(late.is_head());
    }

    /// TiKV `test_pop_shared_group`: the run of shared requests at the head of a queue is woken
    /// together, an exclusive one behind them waits its turn, and a shared one behind that
    /// exclusive one does too.
    #[test]
    fn shared_requests_at_the_head_are_woken_together() {
        let waits = Arc::new(LockWaits::default());
        let s10 = waits.park(10, &[5], &k("a"), &k("ea"), true, true).unwrap();
        let s11 = waits.park(11, &[5], &k("a"), &k("ea"), true, true).unwrap();
        let s12 = waits.park(12, &[5], &k("a"), &k("ea"), true, true).unwrap();
        let x20 = waits
            .park(20, &[5], &k("a"), &k("ea"), true, false)
            .unwrap();
        let s30 = waits.park(30, &[5], &k("a"), &k("ea"), true, true).unwrap();
        assert!(s10.is_head() && s11.is_head() && s12.is_head());
        assert!(!x20.is_head() && !s30.is_head());
        drop((s10, s11, s12));
        assert!(x20.is_head() && !s30.is_head());
    }

    /// A wait on a shared record has an edge to every holder: a cycle through any of them is
    /// a deadlock, reported against that holder.
    #[test]
    fn waiting_for_shared_holders_detects_a_cycle_through_any_of_them() {
        let waits = Arc::new(LockWaits::default());
        // Txn 7 (a shared holder) waits for txn 30's lock on b.
        let _w = waits
            .park(7, &[30], &k("b"), &k("eb"), false, false)
            .unwrap();
        // Txn 30 waits for the shared record of a held by 5 and 7: the edge to 7 closes a cycle.
        let dl = waits
            .park(30, &[5, 7], &k("a"), &k("ea"), false, false)
            .unwrap_err();
        assert_eq!(dl.lock_ts, 7);
        let chain: Vec<(u64, u64)> = dl
            .wait_chain
            .iter()
            .map(|e| (e.txn, e.wait_for_txn))
            .collect();
        assert_eq!(chain, vec![(7, 30), (30, 7)]);
        // Without the cycle, edges to both holders are registered.
        let _ok = waits
            .park(31, &[5, 7], &k("a"), &k("ea"), false, false)
            .unwrap();
        assert!(
            waits
                .park(5, &[31], &k("c"), &k("ec"), false, false)
                .is_err()
        );
    }
}
