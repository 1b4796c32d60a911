//! `keyspacepb.Keyspace`: keyspace metadata for API V2 clients, from the cluster's keyspaces.
//!
//! Who calls it: PD clients (client-go's `pd_codec` loads the keyspace by name when it opens an
//! API V2 client); [`super::routes`] registers it. Keyspaces are created through the mock's
//! builder or control API, not through PD.
//!
//! Follows tikv/pd `server/keyspace_service.go` and `pkg/keyspace` (`keyspace.go`, `util.go`):
//! unknown keyspaces are header errors ENTRY_NOT_FOUND; `LoadKeyspace` also answers
//! ENTRY_NOT_FOUND while the keyspace's txn region boundaries are not split yet (checked under
//! API V2 only: an API V1 mock never splits keyspace ranges); the name is used as given (mapping
//! "" to "DEFAULT" is the client's job); state changes follow PD's transition table and the
//! DEFAULT keyspace cannot change state. `WatchKeyspaces` sends every keyspace first, then each
//! keyspace whose metadata changed, until the client or the server goes away.

use std::collections::HashMap;
use std::sync::Arc;

use tikv_proto::keyspacepb::{self, keyspace_server::Keyspace};
use tikv_proto::pdpb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{check_cluster_id, check_leader, error_header, fault, ok_header, request_cluster_id};
use crate::ApiVersion;
use crate::Shared;
use crate::cluster::{ClusterState, DEFAULT_KEYSPACE_ID, KeyspaceState};
use crate::codec::encode_bytes;
use crate::fault::Phase;

/// The highest valid keyspace id (24 bits).
const MAX_VALID_KEYSPACE_ID: u32 = 0x00FF_FFFF;
/// PD's text for an unknown keyspace.
const NOT_FOUND: &str = "[PD:keyspace:ErrKeyspaceNotFound]keyspace does not exist";

/// The `keyspacepb.Keyspace` service.
#[derive(Debug, Clone)]
pub(crate) struct KeyspaceService {
    shared: Arc<Shared>,
    /// Which PD member this service answers as.
    member: usize,
}

impl KeyspaceService {
    pub(crate) fn new(shared: Arc<Shared>, member: usize) -> Self {
        KeyspaceService { shared, member }
    }

    async fn unary<T>(
        &self,
        command: &str,
        requested_cluster_id: u64,
        f: impl FnOnce(&mut ClusterState) -> T,
    ) -> Result<Response<T>, Status> {
        fault(&self.shared, Phase::Before, command, None, &[]).await?;
        check_leader(&self.shared, self.member)?;
        let out = {
            let mut state = self.shared.lock();
            check_cluster_id(requested_cluster_id, state.cluster_id)?;
            f(&mut state)
        };
        fault(&self.shared, Phase::AfterApply, command, None, &[]).await?;
        Ok(Response::new(out))
    }
}

/// PD's encoded keyspace boundary `[mode, id (3 bytes)]`; the id past the last one is the next
/// mode byte's first prefix.
fn keyspace_boundary(mode: u8, id: u32) -> Vec<u8> {
    let (mode, id) = if id > MAX_VALID_KEYSPACE_ID {
        (mode.wrapping_add(1), 0)
    } else {
        (mode, id)
    };
    encode_bytes(&[mode, (id >> 16) as u8, (id >> 8) as u8, id as u8])
}

/// Whether the keyspace's txn key range starts and ends at region boundaries (PD's
/// `CheckKeyspaceRegionBound` with the default txn bound type).
fn has_region_bound(state: &ClusterState, id: u32) -> bool {
    if state.api_version != ApiVersion::V2 {
        return true;
    }
    [keyspace_boundary(b'x', id), keyspace_boundary(b'x', id + 1)]
        .iter()
        .all(|bound| {
            state
                .region_by_key(bound)
                .is_some_and(|r| r.meta.start_key.as_ref() == bound.as_slice())
        })
}

fn not_found(cluster_id: u64) -> Option<pdpb::ResponseHeader> {
    error_header(cluster_id, pdpb::ErrorType::EntryNotFound, NOT_FOUND)
}

/// The id a request's keyspace oneof names (0 for the identity form, as Go's `GetId`).
fn requested_id(id: Option<u32>) -> u32 {
    id.unwrap_or(0)
}

/// PD's legal state transitions (staying in the same state is always allowed).
fn transition_allowed(from: keyspacepb::KeyspaceState, to: keyspacepb::KeyspaceState) -> bool {
    use keyspacepb::KeyspaceState::{Archived, Disabled, Enabled, Tombstone};
    matches!(
        (from, to),
        (Enabled, Enabled | Disabled)
            | (Disabled, Disabled | Enabled | Archived)
            | (Archived, Archived | Tombstone)
            | (Tombstone, Tombstone)
    )
}

fn state_of(meta: &keyspacepb::KeyspaceMeta) -> keyspacepb::KeyspaceState {
    keyspacepb::KeyspaceState::try_from(meta.state).unwrap_or(keyspacepb::KeyspaceState::Enabled)
}

/// Applies a state change as PD's `UpdateKeyspaceStateByID`.
fn update_state(
    state: &mut ClusterState,
    id: u32,
    target: i32,
) -> Result<keyspacepb::KeyspaceMeta, (pdpb::ErrorType, String)> {
    if id == DEFAULT_KEYSPACE_ID {
        return Err((
            pdpb::ErrorType::Unknown,
            "[PD:keyspace:ErrModifyDefaultKeyspace]cannot modify default keyspace's state"
                .to_owned(),
        ));
    }
    let now_secs = i64::try_from(state.clock.now_ms() / 1000).unwrap_or(0);
    let Some(KeyspaceState { meta, .. }) = state.keyspaces.get_mut(&id) else {
        return Err((pdpb::ErrorType::EntryNotFound, NOT_FOUND.to_owned()));
    };
    let from = state_of(meta);
    let to = keyspacepb::KeyspaceState::try_from(target).map_err(|_| {
        (
            pdpb::ErrorType::Unknown,
            format!(
                "cannot change keyspace state from {} to {target}",
                from.as_str_name()
            ),
        )
    })?;
    if from == to {
        return Ok(meta.clone());
    }
    if !transition_allowed(from, to) {
        return Err((
            pdpb::ErrorType::Unknown,
            format!(
                "cannot change keyspace state from {} to {}",
                from.as_str_name(),
                to.as_str_name()
            ),
        ));
    }
    meta.state = to as i32;
    meta.state_changed_at = now_secs;
    let meta = meta.clone();
    state.pd.notify_keyspace_changed();
    Ok(meta)
}

type Stream<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl Keyspace for KeyspaceService {
    async fn load_keyspace(
        &self,
        request: Request<keyspacepb::LoadKeyspaceRequest>,
    ) -> Result<Response<keyspacepb::LoadKeyspaceResponse>, Status> {
        let req = request.into_inner();
        let cid = request_cluster_id(req.header.as_ref());
        self.unary("LoadKeyspace", cid, |state| {
            let found = state
                .keyspace_by_name(&req.name)
                .filter(|k| has_region_bound(state, k.id))
                .map(|k| k.meta.clone());
            match found {
                Some(meta) => keyspacepb::LoadKeyspaceResponse {
                    header: ok_header(state.cluster_id),
                    keyspace: Some(meta),
                },
                None => keyspacepb::LoadKeyspaceResponse {
                    header: not_found(state.cluster_id),
                    keyspace: None,
                },
            }
        })
        .await
    }

    async fn load_keyspace_by_id(
        &self,
        request: Request<keyspacepb::LoadKeyspaceByIdRequest>,
    ) -> Result<Response<keyspacepb::LoadKeyspaceResponse>, Status> {
        let req = request.into_inner();
        let cid = request_cluster_id(req.header.as_ref());
        let id = requested_id(match req.keyspace {
            Some(keyspacepb::load_keyspace_by_id_request::Keyspace::Id(id)) => Some(id),
            _ => None,
        });
        self.unary("LoadKeyspaceByID", cid, |state| {
            match state.keyspaces.get(&id) {
                // TiKV loads keyspaces by id before splitting their regions, so PD does not
                // check the region boundaries here.
                Some(k) => keyspacepb::LoadKeyspaceResponse {
                    header: ok_header(state.cluster_id),
                    keyspace: Some(k.meta.clone()),
                },
                None => keyspacepb::LoadKeyspaceResponse {
                    header: not_found(state.cluster_id),
                    keyspace: None,
                },
            }
        })
        .await
    }

    type WatchKeyspacesStream = Stream<keyspacepb::WatchKeyspacesResponse>;

    async fn watch_keyspaces(
        &self,
        request: Request<keyspacepb::WatchKeyspacesRequest>,
    ) -> Result<Response<Self::WatchKeyspacesStream>, Status> {
        let req = request.into_inner();
        let cid = request_cluster_id(req.header.as_ref());
        fault(&self.shared, Phase::Before, "WatchKeyspaces", None, &[]).await?;
        check_leader(&self.shared, self.member)?;
        let mut changed = {
            let state = self.shared.lock();
            check_cluster_id(cid, state.cluster_id)?;
            state.pd.keyspace_changed.subscribe()
        };
        let (tx, rx) = mpsc::channel(16);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut sent: HashMap<u32, keyspacepb::KeyspaceMeta> = HashMap::new();
            loop {
                let response = {
                    let state = shared.lock();
                    let keyspaces: Vec<keyspacepb::KeyspaceMeta> = state
                        .keyspaces
                        .values()
                        .filter(|k| sent.get(&k.id) != Some(&k.meta))
                        .map(|k| k.meta.clone())
                        .collect();
                    for k in state.keyspaces.values() {
                        sent.insert(k.id, k.meta.clone());
                    }
                    (!keyspaces.is_empty()).then(|| keyspacepb::WatchKeyspacesResponse {
                        header: ok_header(state.cluster_id),
                        keyspaces,
                    })
                };
                if let Some(response) = response
                    && tx.send(Ok(response)).await.is_err()
                {
                    return;
                }
                tokio::select! {
                    _ = changed.changed() => {}
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn update_keyspace_state(
        &self,
        request: Request<keyspacepb::UpdateKeyspaceStateRequest>,
    ) -> Result<Response<keyspacepb::UpdateKeyspaceStateResponse>, Status> {
        let req = request.into_inner();
        let cid = request_cluster_id(req.header.as_ref());
        let id = requested_id(match req.keyspace {
            Some(keyspacepb::update_keyspace_state_request::Keyspace::Id(id)) => Some(id),
            _ => None,
        });
        self.unary("UpdateKeyspaceState", cid, |state| {
            match update_state(state, id, req.state) {
                Ok(meta) => keyspacepb::UpdateKeyspaceStateResponse {
                    header: ok_header(state.cluster_id),
                    keyspace: Some(meta),
                },
                Err((kind, message)) => keyspacepb::UpdateKeyspaceStateResponse {
                    header: error_header(state.cluster_id, kind, message),
                    keyspace: None,
                },
            }
        })
        .await
    }

    async fn get_all_keyspaces(
        &self,
        request: Request<keyspacepb::GetAllKeyspacesRequest>,
    ) -> Result<Response<keyspacepb::GetAllKeyspacesResponse>, Status> {
        let req = request.into_inner();
        let cid = request_cluster_id(req.header.as_ref());
        let start = requested_id(match req.start_keyspace {
            Some(keyspacepb::get_all_keyspaces_request::StartKeyspace::StartId(id)) => Some(id),
            _ => None,
        });
        self.unary("GetAllKeyspaces", cid, |state| {
            if start > MAX_VALID_KEYSPACE_ID {
                return keyspacepb::GetAllKeyspacesResponse {
                    header: error_header(
                        state.cluster_id,
                        pdpb::ErrorType::Unknown,
                        format!(
                            "startID of the scan {start} exceeds spaceID Max \
                             {MAX_VALID_KEYSPACE_ID}"
                        ),
                    ),
                    keyspaces: Vec::new(),
                };
            }
            // A limit of 0 reads everything, as an etcd range read without a limit.
            let limit = if req.limit == 0 {
                usize::MAX
            } else {
                req.limit as usize
            };
            keyspacepb::GetAllKeyspacesResponse {
                header: ok_header(state.cluster_id),
                keyspaces: state
                    .keyspaces
                    .range(start..)
                    .take(limit)
                    .map(|(_, k)| k.meta.clone())
                    .collect(),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_and_transitions() {
        assert_eq!(keyspace_boundary(b'x', 1), encode_bytes(b"x\x00\x00\x01"));
        assert_eq!(
            keyspace_boundary(b'r', 0x0100_0000),
            encode_bytes(b"s\x00\x00\x00")
        );
        use keyspacepb::KeyspaceState::{Archived, Disabled, Enabled, Tombstone};
        assert!(transition_allowed(Enabled, Disabled));
        assert!(!transition_allowed(Enabled, Archived));
        assert!(transition_allowed(Disabled, Archived));
        assert!(transition_allowed(Archived, Tombstone));
        assert!(!transition_allowed(Tombstone, Enabled));
    }
}
