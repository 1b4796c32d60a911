//! Keyspace metadata from PD: [`KeyspaceMeta`], [`KeyspaceState`] and
//! [`PdClient::load_keyspace`].
//!
//! Who calls it: `PdClientBuilder::keyspace` when an API V2 client opens (the keyspace must be
//! ENABLED), and applications that want to inspect a keyspace. The codec that prefixes keys
//! with the keyspace id reads [`KeyspaceMeta::id`].
//!
//! Ports tikv/pd `client/keyspace_client.go` (`LoadKeyspace`) and client-go
//! `internal/locate/pd_codec.go` (`GetKeyspaceID`: the empty name means `DEFAULT`; a keyspace
//! that is not ENABLED is refused; an API V3 keyspace identity is not supported).

use std::collections::HashMap;
use std::fmt;

use tikv_proto::keyspacepb::{self, keyspace_client::KeyspaceClient};
use tikv_proto::pdpb;

use super::PdClient;
use crate::{Error, Result};

/// The name PD gives the keyspace of API V1-style data (`constants.DefaultKeyspaceName`).
pub(crate) const DEFAULT_KEYSPACE_NAME: &str = "DEFAULT";

/// A keyspace as PD describes it ([`Cluster::load_keyspace`](crate::Cluster::load_keyspace)).
///
/// ```no_run
/// # async fn example(cluster: tikv_client::Cluster) -> tikv_client::Result<()> {
/// use tikv_client::KeyspaceState;
///
/// let keyspace = cluster.load_keyspace("tenant-1").await?;
/// assert_eq!(keyspace.name, "tenant-1");
/// let level_gc = keyspace.config.get("gc_management_type").map(String::as_str);
/// println!("id {}, {}, GC: {level_gc:?}", keyspace.id, keyspace.state);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyspaceMeta {
    /// The 24-bit keyspace id that prefixes every key of the keyspace.
    pub id: u32,
    /// The keyspace name.
    pub name: String,
    /// Its state.
    pub state: KeyspaceState,
    /// PD's per-keyspace settings (for example `gc_management_type`).
    pub config: HashMap<String, String>,
}

impl KeyspaceMeta {
    fn from_proto(meta: keyspacepb::KeyspaceMeta) -> Result<Self> {
        let id = match meta.keyspace {
            Some(keyspacepb::keyspace_meta::Keyspace::Id(id)) => id,
            Some(keyspacepb::keyspace_meta::Keyspace::KeyspaceIdentity(_)) => {
                return Err(Error::config(format!(
                    "keyspace {:?} uses an API V3 keyspace identity, which is not supported",
                    meta.name
                )));
            }
            // proto3 leaves a zero id unset on the wire: that is the DEFAULT keyspace.
            None => 0,
        };
        Ok(KeyspaceMeta {
            id,
            name: meta.name,
            state: KeyspaceState::from_proto(meta.state),
            config: meta.config,
        })
    }

    /// [`Error::KeyspaceNotEnabled`] unless the keyspace is ENABLED (what opening an API V2
    /// client on it checks).
    pub(crate) fn ensure_enabled(&self) -> Result<()> {
        if self.state == KeyspaceState::Enabled {
            return Ok(());
        }
        Err(Error::KeyspaceNotEnabled {
            name: self.name.clone(),
            state: self.state.to_string(),
        })
    }
}

/// The lifecycle state of a keyspace (`keyspacepb.KeyspaceState`); displays as PD names it.
///
/// ```
/// use tikv_client::KeyspaceState;
///
/// assert_eq!(KeyspaceState::Enabled.to_string(), "ENABLED");
/// assert_ne!(KeyspaceState::Disabled, KeyspaceState::Archived);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyspaceState {
    /// In use.
    Enabled,
    /// Refuses new clients; may be enabled again.
    Disabled,
    /// Disabled for good; its data awaits removal.
    Archived,
    /// Its data is gone.
    Tombstone,
}

impl KeyspaceState {
    fn from_proto(value: i32) -> Self {
        use keyspacepb::KeyspaceState as S;
        match S::try_from(value) {
            Ok(S::Disabled) => KeyspaceState::Disabled,
            Ok(S::Archived) => KeyspaceState::Archived,
            Ok(S::Tombstone) => KeyspaceState::Tombstone,
            Ok(S::Enabled) | Err(_) => KeyspaceState::Enabled,
        }
    }
}

impl fmt::Display for KeyspaceState {
    /// PD's name of the state (`ENABLED`, `DISABLED`, ...).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyspaceState::Enabled => "ENABLED",
            KeyspaceState::Disabled => "DISABLED",
            KeyspaceState::Archived => "ARCHIVED",
            KeyspaceState::Tombstone => "TOMBSTONE",
        })
    }
}

impl PdClient {
    /// Loads a keyspace by name (an empty name means [`DEFAULT_KEYSPACE_NAME`]), whatever its
    /// state; [`Error::KeyspaceNotFound`] if PD does not know it.
    pub async fn load_keyspace(&self, name: &str) -> Result<KeyspaceMeta> {
        let name = if name.is_empty() {
            DEFAULT_KEYSPACE_NAME
        } else {
            name
        };
        let header = self.core().header();
        let result = self
            .core()
            .call("LoadKeyspace", |ch| {
                let req = keyspacepb::LoadKeyspaceRequest {
                    header: header.clone(),
                    name: name.to_owned(),
                    ..Default::default()
                };
                async move { KeyspaceClient::new(ch).load_keyspace(req).await }
            })
            .await;
        match result {
            Ok(resp) => match resp.keyspace {
                Some(meta) => KeyspaceMeta::from_proto(meta),
                None => Err(Error::KeyspaceNotFound {
                    name: name.to_owned(),
                }),
            },
            Err(Error::Pd { message }) if is_not_found(&message) => Err(Error::KeyspaceNotFound {
                name: name.to_owned(),
            }),
            Err(e) => Err(e),
        }
    }
}

/// PD's "keyspace does not exist" (`ErrKeyspaceNotFound`, sent with ENTRY_NOT_FOUND).
fn is_not_found(message: &str) -> bool {
    message.contains("ErrKeyspaceNotFound") || message.contains("keyspace does not exist")
}

/// The GC scope of a keyspace id, as PD's GC API names it.
pub(crate) fn keyspace_scope(id: u32) -> Option<pdpb::KeyspaceScope> {
    Some(pdpb::KeyspaceScope {
        keyspace: Some(pdpb::keyspace_scope::Keyspace::KeyspaceId(id)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_conversion_and_enabled_check() {
        let meta = KeyspaceMeta::from_proto(keyspacepb::KeyspaceMeta {
            name: "ks".to_owned(),
            state: keyspacepb::KeyspaceState::Disabled as i32,
            keyspace: Some(keyspacepb::keyspace_meta::Keyspace::Id(7)),
            config: HashMap::from([("k".to_owned(), "v".to_owned())]),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(meta.id, 7);
        assert_eq!(meta.state, KeyspaceState::Disabled);
        assert_eq!(meta.config["k"], "v");
        match meta.ensure_enabled() {
            Err(Error::KeyspaceNotEnabled { name, state }) => {
                assert_eq!((name.as_str(), state.as_str()), ("ks", "DISABLED"));
            }
            other => panic!("{other:?}"),
        }
        let default = KeyspaceMeta::from_proto(keyspacepb::KeyspaceMeta {
            name: "DEFAULT".to_owned(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(default.id, 0);
        assert!(default.ensure_enabled().is_ok());
        assert!(is_not_found(
            "[PD:keyspace:ErrKeyspaceNotFound]keyspace does not exist"
        ));
    }

    // client-go TestGetKeyspaceIDRejectsV3Identity: an enabled keyspace that PD describes with
    // an API V3 identity (namespace and keyspace) instead of a plain id is refused.
    #[test]
    fn an_api_v3_keyspace_identity_is_refused() {
        let err = KeyspaceMeta::from_proto(keyspacepb::KeyspaceMeta {
            name: "foo".to_owned(),
            state: keyspacepb::KeyspaceState::Enabled as i32,
            keyspace: Some(keyspacepb::keyspace_meta::Keyspace::KeyspaceIdentity(
                tikv_proto::apipb::KeyspaceIdentity {
                    namespace_id: 1,
                    keyspace_id: 2,
                },
            )),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        assert!(err.to_string().contains("API V3"), "{err}");
    }
}
