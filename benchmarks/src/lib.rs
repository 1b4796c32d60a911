//! End-to-end benchmarks. Each binary under `src/bin/` measures one thing against a `tikv-mock`
//! running in another process; `docs/benchmarks.md` records the numbers and the commands.

pub mod raw_workload;

use bytes::Bytes;
use tikv_proto::kvrpcpb;
use tikv_proto::pdpb::{self, pd_client::PdClient};
use tonic::transport::Channel;

/// Errors of the benchmark binaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where requests for one key go: the cluster's PD request header, the context addressing the
/// key's region at its leader, and the leader store's address.
#[derive(Debug, Clone)]
pub struct Located {
    /// PD request header carrying the cluster id.
    pub header: Option<pdpb::RequestHeader>,
    /// Context for requests to the region holding the key.
    pub context: kvrpcpb::Context,
    /// The leader store's `host:port`.
    pub address: String,
    /// The region's end key (empty when it is the last region).
    pub region_end: Bytes,
}

/// Asks PD for the cluster id and the region (with its leader store) holding `region_key`, a
/// storage key as PD sees it.
pub async fn locate(pd: &mut PdClient<Channel>, region_key: Bytes) -> Result<Located, BoxError> {
    let members = pd
        .get_members(pdpb::GetMembersRequest::default())
        .await?
        .into_inner();
    let cluster_id = members.header.map_or(0, |h| h.cluster_id);
    let header = Some(pdpb::RequestHeader {
        cluster_id,
        ..Default::default()
    });
    let region = pd
        .get_region(pdpb::GetRegionRequest {
            header: header.clone(),
            region_key,
            ..Default::default()
        })
        .await?
        .into_inner();
    let (Some(meta), Some(leader)) = (region.region, region.leader) else {
        return Err("PD returned no region or leader".into());
    };
    let store = pd
        .get_store(pdpb::GetStoreRequest {
            header: header.clone(),
            store_id: leader.store_id,
        })
        .await?
        .into_inner()
        .store
        .ok_or("PD returned no store for the leader")?;
    let context = kvrpcpb::Context {
        region_id: meta.id,
        region_epoch: meta.region_epoch,
        peer: Some(leader),
        ..Default::default()
    };
    Ok(Located {
        header,
        context,
        address: store.address,
        region_end: meta.end_key,
    })
}
