//! `raw-peer`: the raw KV benchmark workloads (`benchmarks/src/raw_workload.rs`, shared with this
//! workspace's `raw` binary) run with the published client-rust 0.4 (`tikv_client::RawClient` from
//! crates.io) against a tikv-mock in another process, for the comparison in
//! `docs/benchmarks.md` ("Raw KV vs client-rust 0.4"). `benchmarks/raw.sh` runs it.
//!
//! ```text
//! raw-peer --pd 127.0.0.1:2379 [--seconds 5] [--concurrency 1,64,256] [--workloads get,put,batch_get]
//! raw-peer --print-split-keys        # the mock's --split-keys value for the key set
//! ```
//!
//! The client is used as its documentation shows: `RawClient::new` with the default config, keys
//! and values as `Vec<u8>`, one client shared by every task.

use std::process::ExitCode;
use std::sync::Arc;

use tikv_client::{Key, RawClient, Value};

#[path = "../../src/raw_workload.rs"]
mod workload;

use workload::{BoxError, RawOps, Settings};

/// The name printed as `client=` in every output line.
const CLIENT_NAME: &str = "client-rust-0.4.0";

/// client-rust's raw client behind the shared workload interface.
struct Peer(RawClient);

impl RawOps for Peer {
    type Key = Key;
    type Value = Value;

    fn key(bytes: &[u8]) -> Key {
        Key::from(bytes.to_vec())
    }

    fn value(bytes: &[u8]) -> Value {
        bytes.to_vec()
    }

    async fn get(&self, key: Key) -> Result<Option<usize>, BoxError> {
        Ok(self.0.get(key).await?.map(|v| v.len()))
    }

    async fn put(&self, key: Key, value: Value) -> Result<(), BoxError> {
        Ok(self.0.put(key, value).await?)
    }

    async fn batch_get(&self, keys: Vec<Key>) -> Result<usize, BoxError> {
        Ok(self.0.batch_get(keys).await?.len())
    }
}

fn main() -> ExitCode {
    let settings = match Settings::parse(std::env::args().skip(1)) {
        Ok(s) => s,
        Err(message) => {
            eprintln!("raw-peer: {message}");
            return ExitCode::from(2);
        }
    };
    if settings.print_split_keys {
        println!("{}", workload::split_keys(settings.keys, settings.regions));
        return ExitCode::SUCCESS;
    }
    let result = workload::runtime().map_err(BoxError::from).and_then(|rt| {
        rt.block_on(async {
            let client = RawClient::new(vec![settings.pd.clone()]).await?;
            workload::run(Arc::new(Peer(client)), CLIENT_NAME, &settings).await
        })
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raw-peer: {e}");
            ExitCode::FAILURE
        }
    }
}
