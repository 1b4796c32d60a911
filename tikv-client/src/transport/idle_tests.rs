//! The idle recycler against a tikv-mock store: an idle pool is closed and reopened on the
//! next request; a pool with a request in flight, or used recently, is kept; the background
//! task ends with the transport.

use std::time::Duration;

use bytes::Bytes;
use tikv_mock::{Action, FaultRule, HangHandle, Matcher, MockCluster};
use tikv_proto::kvrpcpb;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd;

use super::*;
use crate::config::TikvClientConfig;

struct Env {
    cluster: MockCluster,
    transport: Transport,
    address: String,
    store_id: u64,
    ctx: kvrpcpb::Context,
}

async fn start() -> Env {
    let cluster = MockCluster::builder()
        .stores(1)
        .replicas(1)
        .start()
        .await
        .unwrap();
    let (region, leader) = cluster.region_for_raw_key(b"").unwrap();
    let leader = leader.unwrap();
    let address = cluster.store_address(leader.store_id).unwrap();
    let config = Config::default()
        .with_tikv_client(TikvClientConfig::default().with_grpc_connection_count(1));
    let transport = Transport::new(&config).unwrap();
    let ctx = kvrpcpb::Context {
        region_id: region.id,
        region_epoch: region.region_epoch,
        peer: Some(leader),
        ..Default::default()
    };
    Env {
        store_id: leader.store_id,
        cluster,
        transport,
        address,
        ctx,
    }
}

fn raw_get(ctx: &kvrpcpb::Context) -> Cmd {
    Cmd::RawGet(kvrpcpb::RawGetRequest {
        context: Some(ctx.clone()),
        key: Bytes::from_static(b"k"),
        ..Default::default()
    })
}

fn opts() -> SendOptions {
    SendOptions::new(Duration::from_secs(10))
}

#[tokio::test]
async fn an_idle_store_is_closed_and_reopened_on_next_use() {
    let env = start().await;
    let store = env.transport.store(&env.address).unwrap();
    store.send(raw_get(&env.ctx), opts()).await.unwrap();

    // Used within the timeout: kept.
    assert_eq!(env.transport.recycle_idle(IDLE_TIMEOUT), 0);
    assert!(store.is_open());

    // Idle for at least the (here zero) timeout: closed, and the kept handle says so.
    assert_eq!(env.transport.recycle_idle(Duration::ZERO), 1);
    assert!(!store.is_open());
    let err = store.send(raw_get(&env.ctx), opts()).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(
        env.transport.recycle_idle(Duration::ZERO),
        0,
        "nothing left"
    );

    // The next lookup opens fresh connections.
    let reopened = env.transport.store(&env.address).unwrap();
    assert!(reopened.is_open());
    reopened.send(raw_get(&env.ctx), opts()).await.unwrap();
    let unary = reopened
        .unary(UnaryRequest::Cmd(raw_get(&env.ctx)), opts())
        .await;
    assert!(unary.is_ok(), "{unary:?}");
}

#[tokio::test]
async fn a_store_with_a_request_in_flight_is_kept() {
    for batched in [true, false] {
        let env = start().await;
        let store = env.transport.store(&env.address).unwrap();
        let hang = HangHandle::new();
        let rule = env.cluster.add_fault(FaultRule::new(
            Matcher::tikv().command("RawGet"),
            Action::hang(&hang),
        ));
        let request = {
            let store = store.clone();
            let cmd = raw_get(&env.ctx);
            tokio::spawn(async move {
                if batched {
                    store.send(cmd, opts()).await.map(|_| ())
                } else {
                    store
                        .unary(UnaryRequest::Cmd(cmd), opts())
                        .await
                        .map(|_| ())
                }
            })
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while env.cluster.rpc_count(env.store_id, "RawGet") == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the request reached the store");

        assert_eq!(
            env.transport.recycle_idle(Duration::ZERO),
            0,
            "batched {batched}"
        );
        assert!(store.is_open());
        hang.release();
        env.cluster.remove_fault(rule);
        request.await.unwrap().unwrap();
        assert_eq!(
            env.transport.recycle_idle(Duration::ZERO),
            1,
            "batched {batched}"
        );
    }
}

#[tokio::test]
async fn the_recycler_task_ends_with_the_transport() {
    let env = start().await;
    let stop = env.transport.inner.shutdown.subscribe();
    assert!(!*stop.borrow());
    env.transport.close();
    assert!(*stop.borrow());
    assert!(env.transport.store(&env.address).is_err());
}
