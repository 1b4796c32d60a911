//! PD's meta storage (`meta_storagepb.MetaStorage`, `Get`): the etcd key space PD exposes to
//! clients, here holding what microservices register under `/ms/{cluster_id}/...` (the router
//! servers of [`super::router_service`]).
//!
//! Who calls it: PD clients read the router registry through it (client-go's
//! `routerServiceDiscovery`); `super::routes` serves it on every PD member; the router service
//! state writes and deletes registry entries as servers register and deregister.
//!
//! The store is a small multi-version map with etcd's read rules: a revision counter bumped by
//! every write, `range_end` semantics (empty: the one key; `"\0"`: every key from `key` on;
//! otherwise `[key, range_end)`), `limit` with `more` and `count`, and reads at a past revision.
//! Nothing is ever compacted, so every past revision stays readable.
//!
//! Follows tikv/pd `pkg/mcs/metastorage/server/grpc_service.go` (`Get`: only the leader serves,
//! an etcd failure goes into the header as UNKNOWN with the revision, answers carry only keys
//! and values, the cluster id is not checked) and etcd's `mvcc` range reads.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use tikv_proto::meta_storagepb::{self, meta_storage_server::MetaStorage};
use tonic::{Request, Response, Status};

use super::{check_leader, fault};
use crate::Shared;
use crate::fault::Phase;

/// One version of a key: its value, or `None` for a deletion.
#[derive(Debug, Clone)]
struct Version {
    revision: i64,
    value: Option<Bytes>,
}

/// The meta storage's contents, inside PD's state.
#[derive(Debug)]
pub(crate) struct MetaStorageState {
    /// Every version of every key, oldest first.
    history: BTreeMap<Bytes, Vec<Version>>,
    /// The store's current revision (etcd starts at 1).
    revision: i64,
}

impl Default for MetaStorageState {
    fn default() -> Self {
        MetaStorageState {
            history: BTreeMap::new(),
            revision: 1,
        }
    }
}

/// Why a read failed (etcd's errors, which PD puts in the header as UNKNOWN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadError(String);

/// What a range read found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ReadResult {
    /// Keys and values in key order, at most `limit`.
    pub(crate) kvs: Vec<(Bytes, Bytes)>,
    /// Whether the range holds more keys than were returned.
    pub(crate) more: bool,
    /// How many keys the range holds.
    pub(crate) count: i64,
}

impl MetaStorageState {
    /// Writes `key`, bumping the revision.
    pub(crate) fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.write(key.into(), Some(value.into()));
    }

    /// Deletes `key` if it exists (etcd bumps the revision only when something was deleted).
    pub(crate) fn delete(&mut self, key: &[u8]) {
        let live = self
            .history
            .get(key)
            .and_then(|v| v.last())
            .is_some_and(|v| v.value.is_some());
        if live {
            self.write(Bytes::copy_from_slice(key), None);
        }
    }

    fn write(&mut self, key: Bytes, value: Option<Bytes>) {
        self.revision += 1;
        let revision = self.revision;
        self.history
            .entry(key)
            .or_default()
            .push(Version { revision, value });
    }

    /// The current revision.
    pub(crate) fn revision(&self) -> i64 {
        self.revision
    }

    /// etcd's range read of `[key, range_end)` at `revision` (0: the current one).
    pub(crate) fn range(
        &self,
        key: &[u8],
        range_end: &[u8],
        limit: i64,
        revision: i64,
    ) -> Result<ReadResult, ReadError> {
        if revision > self.revision {
            return Err(ReadError(
                "etcdserver: mvcc: required revision is a future revision".to_owned(),
            ));
        }
        let at = if revision <= 0 {
            self.revision
        } else {
            revision
        };
        let key = Bytes::copy_from_slice(key);
        let upper = match range_end {
            // A single key.
            [] => Bound::Included(key.clone()),
            // Every key from `key` on ("\0" as the range end is etcd's "to the end").
            [0] => Bound::Unbounded,
            end => Bound::Excluded(Bytes::copy_from_slice(end)),
        };
        // etcd reads `key = "\0", range_end = "\0"` as every key.
        let lower = if key.as_ref() == [0] && range_end == [0] {
            Bound::Unbounded
        } else {
            Bound::Included(key)
        };
        if let (Bound::Included(lo), Bound::Excluded(hi)) = (&lower, &upper)
            && lo >= hi
        {
            return Ok(ReadResult::default());
        }
        let limit = usize::try_from(limit).unwrap_or(0);
        let mut out = ReadResult::default();
        for (k, versions) in self.history.range((lower, upper)) {
            let value = versions
                .iter()
                .rev()
                .find(|v| v.revision <= at)
                .and_then(|v| v.value.clone());
            let Some(value) = value else { continue };
            out.count += 1;
            if limit == 0 || out.kvs.len() < limit {
                out.kvs.push((k.clone(), value));
            } else {
                out.more = true;
            }
        }
        Ok(out)
    }
}

/// The `meta_storagepb.MetaStorage` service of PD member `member`.
#[derive(Debug, Clone)]
pub(crate) struct MetaStorageService {
    shared: Arc<Shared>,
    member: usize,
}

impl MetaStorageService {
    pub(crate) fn new(shared: Arc<Shared>, member: usize) -> Self {
        MetaStorageService { shared, member }
    }
}

#[tonic::async_trait]
impl MetaStorage for MetaStorageService {
    async fn get(
        &self,
        request: Request<meta_storagepb::GetRequest>,
    ) -> Result<Response<meta_storagepb::GetResponse>, Status> {
        let req = request.into_inner();
        let keys = [req.key.clone()];
        fault(&self.shared, Phase::Before, "Get", None, &keys).await?;
        // Only the member serving as leader answers (PD's `checkServing`).
        check_leader(&self.shared, self.member)?;
        let response = {
            let mut state = self.shared.lock();
            let cluster_id = state.cluster_id;
            state.pd.count_handled(self.member, "Get");
            let storage = &state.pd.meta_storage;
            let revision = storage.revision();
            match storage.range(&req.key, &req.range_end, req.limit, req.revision) {
                Ok(read) => meta_storagepb::GetResponse {
                    header: Some(meta_storagepb::ResponseHeader {
                        cluster_id,
                        error: None,
                        revision,
                    }),
                    kvs: read
                        .kvs
                        .into_iter()
                        .map(|(key, value)| meta_storagepb::KeyValue {
                            key,
                            value,
                            ..Default::default()
                        })
                        .collect(),
                    more: read.more,
                    count: read.count,
                },
                Err(ReadError(message)) => meta_storagepb::GetResponse {
                    header: Some(meta_storagepb::ResponseHeader {
                        cluster_id,
                        error: Some(meta_storagepb::Error {
                            r#type: meta_storagepb::ErrorType::Unknown as i32,
                            message,
                        }),
                        revision,
                    }),
                    ..Default::default()
                },
            }
        };
        fault(&self.shared, Phase::AfterApply, "Get", None, &keys).await?;
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(read: &ReadResult) -> Vec<&[u8]> {
        read.kvs.iter().map(|(k, _)| k.as_ref()).collect()
    }

    fn storage() -> MetaStorageState {
        let mut s = MetaStorageState::default();
        s.put("/a/1", "one");
        s.put("/a/2", "two");
        s.put("/b/1", "three");
        s
    }

    #[test]
    fn single_key_prefix_and_open_ranges_follow_etcd() {
        let s = storage();
        assert_eq!(keys(&s.range(b"/a/1", b"", 0, 0).unwrap()), [b"/a/1"]);
        assert!(s.range(b"/a", b"", 0, 0).unwrap().kvs.is_empty());
        assert_eq!(
            keys(&s.range(b"/a/", b"/a0", 0, 0).unwrap()),
            [b"/a/1", b"/a/2"]
        );
        assert_eq!(
            keys(&s.range(b"/a/2", b"\0", 0, 0).unwrap()),
            [b"/a/2", b"/b/1"]
        );
        assert_eq!(s.range(b"\0", b"\0", 0, 0).unwrap().count, 3);
        assert!(s.range(b"/b", b"/a", 0, 0).unwrap().kvs.is_empty());
    }

    #[test]
    fn a_limit_reports_more_and_the_full_count() {
        let s = storage();
        let read = s.range(b"/", b"\0", 2, 0).unwrap();
        assert_eq!(keys(&read), [b"/a/1", b"/a/2"]);
        assert!(read.more);
        assert_eq!(read.count, 3);
        let read = s.range(b"/", b"\0", 3, 0).unwrap();
        assert!(!read.more);
    }

    #[test]
    fn past_revisions_stay_readable_and_future_ones_are_refused() {
        let mut s = storage();
        let before = s.revision();
        s.delete(b"/a/1");
        s.put("/a/2", "changed");
        s.delete(b"/missing");
        assert_eq!(s.revision(), before + 2, "deleting nothing is not a write");
        let now = s.range(b"/a/", b"/a0", 0, 0).unwrap();
        assert_eq!(now.kvs, vec![(Bytes::from("/a/2"), Bytes::from("changed"))]);
        let then = s.range(b"/a/", b"/a0", 0, before).unwrap();
        assert_eq!(keys(&then), [b"/a/1", b"/a/2"]);
        assert_eq!(then.kvs[1].1, Bytes::from("two"));
        assert!(s.range(b"/a/", b"/a0", 0, s.revision() + 1).is_err());
    }
}
