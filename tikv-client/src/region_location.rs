//! [`RegionLocation`]: where a key lives, in the user's key space, as a client answers
//! `locate_key` (client-go `KVStore.GetRegionCache().LocateKey`, whose `CodecPDClient` hands
//! back user keys).
//!
//! Who builds it: the clients (`RawClient::locate_key`), from the shared region cache's entry
//! (which speaks PD's region keys) turned back into the client's own key space with its
//! keyspace codec (`crate::codec`): the bounds of a region that reaches outside an API V2
//! keyspace are clamped to the keyspace. The type holds no proto type and no cache handle: it
//! is a snapshot, and a region can split, merge or move right after it was taken.

use crate::Key;

/// A region as the client's cache knows it: its id and epoch and its key range in the
/// caller's key space.
///
/// `start_key` is inclusive and `end_key` exclusive; an empty `end_key` means the end of the
/// key space (API V1) or of the client's keyspace (API V2), and an empty `start_key` its
/// beginning.
///
/// ```no_run
/// # async fn f(client: tikv_client::RawClient) -> tikv_client::Result<()> {
/// let region = client.locate_key("user/42").await?;
/// println!(
///     "region {} (version {}) holds [{:?}, {:?})",
///     region.id, region.version, region.start_key, region.end_key
/// );
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RegionLocation {
    /// The region id.
    pub id: u64,
    /// The region epoch's configuration version (changes with its peers).
    pub conf_ver: u64,
    /// The region epoch's version (changes with splits and merges).
    pub version: u64,
    /// The first key of the region, in the caller's key space (empty: the beginning).
    pub start_key: Key,
    /// The first key after the region, in the caller's key space (empty: the end).
    pub end_key: Key,
}
