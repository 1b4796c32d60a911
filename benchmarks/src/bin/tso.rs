//! Timestamps per second from `tikv_client::unstable::PdClient::get_timestamp` (the `unstable-internals` feature), and how many TSO
//! messages the client sends per 1000 timestamps, with 1, 64 and 1024 concurrent callers
//! against a `tikv-mock` running in another process.
//!
//! Each concurrency level gets a fresh client; each caller is a task that asks for timestamps
//! one after another until the time is up. Messages are counted by the client
//! (`PdClient::tso_stats`), so the ratio shows how well concurrent callers are batched.
//!
//! Usage: `tso --pd 127.0.0.1:2379 [--seconds 5] [--concurrency 1,64,1024]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tikv_benchmarks::BoxError;
use tikv_client::Config;
use tikv_client::unstable::PdClient;

#[derive(Debug)]
struct Args {
    pd: String,
    seconds: u64,
    concurrency: Vec<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        pd: "127.0.0.1:2379".to_owned(),
        seconds: 5,
        concurrency: vec![1, 64, 1024],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--pd" => args.pd = value,
            "--seconds" => {
                args.seconds = value.parse().map_err(|e| format!("{flag}: {e}"))?;
            }
            "--concurrency" => {
                args.concurrency = value
                    .split(',')
                    .map(|c| c.trim().parse::<usize>().map(|c| c.max(1)))
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{flag}: {e}"))?;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args().map_err(|e| -> BoxError { e.into() })?;
    for &concurrency in &args.concurrency {
        run(&args.pd, concurrency, Duration::from_secs(args.seconds)).await?;
    }
    Ok(())
}

async fn run(pd: &str, concurrency: usize, duration: Duration) -> Result<(), BoxError> {
    let client = PdClient::connect([pd], &Config::default()).await?;
    // Warm up: the stream is open and the connection established before measuring.
    client.get_timestamp().await?;
    let before = client.tso_stats();
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = client.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = tikv_client::Timestamp::ZERO;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let ts = client.get_timestamp().await.map_err(|e| e.to_string())?;
                if ts <= last {
                    return Err(format!("timestamp went back: {ts:?} after {last:?}"));
                }
                last = ts;
                n += 1;
            }
            done.fetch_add(n, Ordering::Relaxed);
            Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = client.tso_stats();
    let timestamps = done.load(Ordering::Relaxed);
    let requests = after.requests - before.requests;
    println!(
        "concurrency={concurrency} timestamps={timestamps} seconds={elapsed:.2} \
         ts_per_sec={:.0} tso_requests={requests} requests_per_1000_ts={:.2} \
         mean_batch={:.1} streams={}",
        timestamps as f64 / elapsed,
        requests as f64 * 1000.0 / timestamps.max(1) as f64,
        (after.timestamps - before.timestamps) as f64 / requests.max(1) as f64,
        after.streams,
    );
    client.close();
    Ok(())
}
