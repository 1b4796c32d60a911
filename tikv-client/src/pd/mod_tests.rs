//! Tests of the `RegionSource` contract's provided methods: a source without PD followers or
//! router servers (an in-memory one, as the cache tests use) answers the leader-only questions
//! exactly as the plain ones, so the region cache may ask either of any source.

use std::sync::Mutex;

use bytes::Bytes;
use tikv_proto::metapb;

use super::{BoxFuture, RegionInfo, RegionSource};
use crate::Result;

/// Two regions split at `m` on store 1, and a log of the required methods called.
#[derive(Debug, Default)]
struct TwoRegions {
    calls: Mutex<Vec<&'static str>>,
}

impl TwoRegions {
    fn log(&self, call: &'static str) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    fn region(id: u64) -> RegionInfo {
        let (start, end) = if id == 1 {
            (Bytes::new(), Bytes::from_static(b"m"))
        } else {
            (Bytes::from_static(b"m"), Bytes::new())
        };
        RegionInfo {
            region: metapb::Region {
                id,
                start_key: start,
                end_key: end,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn id_of(key: &[u8]) -> u64 {
        if key < b"m".as_slice() { 1 } else { 2 }
    }
}

impl RegionSource for TwoRegions {
    fn get_region<'a>(
        &'a self,
        key: &'a [u8],
        _: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        self.log("get_region");
        Box::pin(async move { Ok(Some(Self::region(Self::id_of(key)))) })
    }

    fn get_prev_region<'a>(
        &'a self,
        key: &'a [u8],
        _: bool,
    ) -> BoxFuture<'a, Result<Option<RegionInfo>>> {
        self.log("get_prev_region");
        // The region before the one holding `key`: none before the first.
        Box::pin(async move { Ok((Self::id_of(key) == 2).then(|| Self::region(1))) })
    }

    fn get_region_by_id(&self, id: u64, _: bool) -> BoxFuture<'_, Result<Option<RegionInfo>>> {
        self.log("get_region_by_id");
        Box::pin(async move { Ok((id == 1 || id == 2).then(|| Self::region(id))) })
    }

    fn batch_scan_regions<'a>(
        &'a self,
        ranges: &'a [(Bytes, Bytes)],
        limit: usize,
        _: bool,
    ) -> BoxFuture<'a, Result<Vec<RegionInfo>>> {
        self.log("batch_scan_regions");
        Box::pin(async move {
            let mut ids: Vec<u64> = Vec::new();
            for (start, end) in ranges {
                ids.push(Self::id_of(start));
                if end.is_empty() || end.as_ref() > b"m".as_slice() {
                    ids.push(2);
                }
            }
            ids.dedup();
            Ok(ids.into_iter().take(limit).map(Self::region).collect())
        })
    }

    fn get_store(&self, id: u64) -> BoxFuture<'_, Result<Option<metapb::Store>>> {
        self.log("get_store");
        Box::pin(async move {
            Ok((id == 1).then(|| metapb::Store {
                id,
                address: "store1:20160".into(),
                ..Default::default()
            }))
        })
    }

    fn get_all_stores(&self, _: bool) -> BoxFuture<'_, Result<Vec<metapb::Store>>> {
        self.log("get_all_stores");
        Box::pin(async { Ok(Vec::new()) })
    }
}

#[tokio::test]
async fn leader_only_region_lookups_default_to_the_plain_ones() {
    let source = TwoRegions::default();
    let found = source
        .get_region_from_leader(b"z", false, false)
        .await
        .unwrap();
    assert_eq!(found.map(|r| r.region.id), Some(2));
    assert_eq!(source.calls(), ["get_region"]);

    // `prev` asks for the region ending where the key's region starts.
    let prev = source
        .get_region_from_leader(b"z", true, true)
        .await
        .unwrap();
    assert_eq!(prev.map(|r| r.region.id), Some(1));
    assert_eq!(source.calls(), ["get_prev_region"]);
    let none = source
        .get_region_from_leader(b"a", true, false)
        .await
        .unwrap();
    assert_eq!(none, None, "nothing before the first region");
    assert_eq!(source.calls(), ["get_prev_region"]);
}

#[tokio::test]
async fn leader_only_scans_and_store_lookups_default_to_the_plain_ones() {
    let source = TwoRegions::default();
    let ranges = [(Bytes::from_static(b"a"), Bytes::new())];
    let regions = source
        .batch_scan_regions_from_leader(&ranges, 16, false)
        .await
        .unwrap();
    assert_eq!(
        regions.iter().map(|r| r.region.id).collect::<Vec<_>>(),
        [1, 2]
    );
    // The limit passes through unchanged.
    let one = source
        .batch_scan_regions_from_leader(&ranges, 1, false)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(source.calls(), ["batch_scan_regions", "batch_scan_regions"]);

    let store = source.get_store_from_leader(1).await.unwrap();
    assert_eq!(store.map(|s| s.address), Some("store1:20160".to_owned()));
    assert_eq!(source.get_store_from_leader(9).await.unwrap(), None);
    assert_eq!(source.calls(), ["get_store", "get_store"]);
}
