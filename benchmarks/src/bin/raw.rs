//! `raw`: the raw KV benchmark workloads (`benchmarks/src/raw_workload.rs`, shared with the
//! client-rust peer in `benchmarks/peer/`) run with this workspace's `RawClient` against a
//! tikv-mock in another process. `benchmarks/raw.sh` runs both and prints the ratios.
//!
//! ```text
//! raw --pd 127.0.0.1:2379 [--seconds 5] [--concurrency 1,64,256] [--workloads get,put,batch_get]
//! ```

use std::process::ExitCode;
use std::sync::Arc;

use tikv_benchmarks::raw_workload::{self, BoxError, RawOps, Settings};
use tikv_client::{Key, RawClient, Value};

/// The name printed as `client=` in every output line.
const CLIENT_NAME: &str = "tikv-client";

/// Our raw client behind the shared workload interface.
struct Ours(RawClient);

impl RawOps for Ours {
    type Key = Key;
    type Value = Value;

    fn key(bytes: &[u8]) -> Key {
        Key::copy_from_slice(bytes)
    }

    fn value(bytes: &[u8]) -> Value {
        Value::copy_from_slice(bytes)
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
            eprintln!("raw: {message}");
            return ExitCode::from(2);
        }
    };
    if settings.print_split_keys {
        println!(
            "{}",
            raw_workload::split_keys(settings.keys, settings.regions)
        );
        return ExitCode::SUCCESS;
    }
    let result = raw_workload::runtime()
        .map_err(BoxError::from)
        .and_then(|rt| {
            rt.block_on(async {
                let client = RawClient::new([settings.pd.as_str()]).await?;
                raw_workload::run(Arc::new(Ours(client)), CLIENT_NAME, &settings).await
            })
        });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("raw: {e}");
            ExitCode::FAILURE
        }
    }
}
