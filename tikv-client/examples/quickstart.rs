//! Quickstart: raw key-value operations with `tikv-client`.
//!
//! ```sh
//! cargo run -p tikv-client --example quickstart                    # an embedded tikv-mock
//! cargo run -p tikv-client --example quickstart -- --pd 127.0.0.1:2379   # a real cluster
//! PD_ADDRS=10.0.0.1:2379,10.0.0.2:2379 cargo run -p tikv-client --example quickstart
//! ```
//!
//! Without `--pd` (or `PD_ADDRS`) it starts `tikv-mock` in-process: 3 stores and 4 regions
//! serving the real gRPC protocol on loopback ports. Transactions join this example when the
//! transactional client lands.

use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use tikv_client::{Error, KvPair, RawClient};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("quickstart failed: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The PD endpoints from `--pd A,B` or `PD_ADDRS`, if any.
fn pd_from_args() -> Option<Vec<String>> {
    let mut args = std::env::args().skip(1);
    let mut pd = None;
    while let Some(arg) = args.next() {
        if arg == "--pd" {
            pd = args.next();
        } else if let Some(v) = arg.strip_prefix("--pd=") {
            pd = Some(v.to_owned());
        }
    }
    pd.or_else(|| std::env::var("PD_ADDRS").ok()).map(|s| {
        s.split(',')
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect()
    })
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the mock alive for the whole run when we start one.
    let (endpoints, _mock) = match pd_from_args() {
        Some(endpoints) => {
            println!("using the cluster at {}", endpoints.join(","));
            (endpoints, None)
        }
        None => {
            let mock = tikv_mock::MockCluster::builder()
                .stores(3)
                .split_keys(["quickstart/c", "quickstart/m", "quickstart/t"])
                .start()
                .await?;
            println!(
                "started an embedded tikv-mock: PD at {}, 3 stores, {} regions",
                mock.pd_endpoints().join(","),
                mock.regions().len()
            );
            (mock.pd_endpoints(), Some(mock))
        }
    };

    // Every call of this client gives up after 10 s unless it sets its own deadline.
    let client = RawClient::builder(&endpoints)
        .timeout(Duration::from_secs(10))
        .build()
        .await?;
    println!("connected to cluster {}", client.cluster().cluster_id());

    // Calls are builders: options are methods, `.await` sends.
    let greeting = String::from("world");
    client.put("quickstart/hello", greeting.as_str()).await?;
    let value = client
        .get("quickstart/hello")
        .timeout(Duration::from_secs(1))
        .await?;
    println!(
        "put quickstart/hello = world; get -> {:?}",
        value
            .as_ref()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
    );

    let fruits = ["apple", "banana", "cherry", "mango", "peach", "tomato"];
    client
        .batch_put(
            fruits
                .iter()
                .map(|f| KvPair::new(format!("quickstart/{f}"), f.len().to_string())),
        )
        .await?;
    println!("batch_put {} fruits across the regions", fruits.len());

    let found = client
        .batch_get(["quickstart/cherry", "quickstart/kiwi", "quickstart/apple"])
        .await?;
    for pair in &found {
        println!(
            "batch_get {} = {}",
            String::from_utf8_lossy(pair.key().as_bytes()),
            String::from_utf8_lossy(pair.value().as_bytes())
        );
    }

    let scanned = client
        .scan("quickstart/a".."quickstart/n")
        .limit(10)
        .await?;
    println!(
        "scan [quickstart/a, quickstart/n): {:?}",
        scanned
            .iter()
            .map(|p| String::from_utf8_lossy(p.key().as_bytes()).into_owned())
            .collect::<Vec<_>>()
    );
    let reversed = client
        .scan("quickstart/".."quickstart0")
        .reverse()
        .limit(3)
        .keys_only()
        .await?;
    println!(
        "scan reverse keys_only, last 3: {:?}",
        reversed
            .iter()
            .map(|k| String::from_utf8_lossy(k.as_bytes()).into_owned())
            .collect::<Vec<_>>()
    );

    let mut stream = client
        .scan_stream("quickstart/".."quickstart0")
        .into_stream();
    let mut streamed = 0;
    while let Some(pair) = stream.next().await {
        pair?;
        streamed += 1;
    }
    println!("scan_stream saw {streamed} pairs");

    let sum = client.checksum("quickstart/".."quickstart0").await?;
    println!(
        "checksum: {} pairs, {} bytes, crc64-xor {:#x}",
        sum.total_kvs, sum.total_bytes, sum.crc64_xor
    );

    let atomic = client.with_atomic_for_cas(true);
    let cas = atomic
        .compare_and_swap("quickstart/counter", None::<&str>, "1")
        .await?;
    println!(
        "compare_and_swap counter (absent -> 1): swapped={}, previous={:?}",
        cas.swapped, cas.previous
    );

    // Errors are typed: bad input is refused before anything is sent, a missed deadline is
    // `Error::Timeout`, and `is_retryable` says whether trying again may help.
    match client.scan("quickstart/z".."quickstart/a").await {
        Err(Error::InvalidArgument { message }) => println!("reversed range refused: {message}"),
        other => println!("reversed range: {other:?}"),
    }

    client.delete("quickstart/hello").await?;
    client.delete_range("quickstart/".."quickstart0").await?;
    let left = client.scan("quickstart/".."quickstart0").await?;
    println!("delete_range done; {} pairs left", left.len());
    println!("quickstart finished");
    Ok(())
}
