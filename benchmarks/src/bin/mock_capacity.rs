//! How many raw gets per second `tikv-mock` serves, with the client in another process.
//!
//! The client is deliberately thin (plain tonic stubs, no routing logic beyond one PD lookup)
//! so that the number measures the mock, not a client. Two modes:
//!
//! - `unary`: each task sends `RawGet` calls one after another;
//! - `batch`: each task sends BatchCommands messages of `--batch` `RawGet`s on its own stream.
//!
//! Usage: `mock_capacity --pd 127.0.0.1:2379 [--mode unary|batch] [--concurrency 64]
//! [--connections 4] [--batch 16] [--seconds 10] [--keys 1000]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tikv_proto::kvrpcpb;
use tikv_proto::pdpb::pd_client::PdClient;
use tikv_proto::tikvpb::{self, tikv_client::TikvClient};
use tonic::transport::Channel;

use tikv_benchmarks::BoxError;

#[derive(Debug)]
struct Args {
    pd: String,
    mode: String,
    concurrency: usize,
    connections: usize,
    batch: usize,
    seconds: u64,
    keys: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        pd: "127.0.0.1:2379".to_owned(),
        mode: "unary".to_owned(),
        concurrency: 64,
        connections: 4,
        batch: 16,
        seconds: 10,
        keys: 1000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--pd" => args.pd = value.clone(),
            "--mode" => args.mode = value.clone(),
            "--concurrency" => args.concurrency = num()?.max(1),
            "--connections" => args.connections = num()?.max(1),
            "--batch" => args.batch = num()?.max(1),
            "--seconds" => args.seconds = num()? as u64,
            "--keys" => args.keys = num()?.max(1),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("bench{i:08}"))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args().map_err(|e| -> BoxError { e.into() })?;
    let mut pd = PdClient::connect(format!("http://{}", args.pd)).await?;
    let located = tikv_benchmarks::locate(&mut pd, key(0)).await?;
    let (ctx, addr) = (located.context, located.address);
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
    }

    // Prefill so that every get finds a value.
    let mut client = TikvClient::new(channels[0].clone());
    for i in 0..args.keys {
        let resp = client
            .raw_put(kvrpcpb::RawPutRequest {
                context: Some(ctx.clone()),
                key: key(i),
                value: Bytes::from_static(b"value-of-sixteen"),
                ..Default::default()
            })
            .await?
            .into_inner();
        if resp.region_error.is_some() || !resp.error.is_empty() {
            return Err(format!("prefill failed: {resp:?}").into());
        }
    }

    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.concurrency);
    for t in 0..args.concurrency {
        let channel = channels[t % channels.len()].clone();
        let ctx = ctx.clone();
        let done = done.clone();
        let keys = args.keys;
        let batch = args.batch;
        let batched = args.mode == "batch";
        tasks.push(tokio::spawn(async move {
            if batched {
                run_batch(channel, ctx, done, deadline, keys, batch, t).await
            } else {
                run_unary(channel, ctx, done, deadline, keys, t).await
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ops = done.load(Ordering::Relaxed);
    println!(
        "mode={} concurrency={} connections={} batch={} ops={} seconds={:.2} ops_per_sec={:.0}",
        args.mode,
        args.concurrency,
        args.connections,
        if args.mode == "batch" { args.batch } else { 1 },
        ops,
        elapsed,
        ops as f64 / elapsed
    );
    Ok(())
}

async fn run_unary(
    channel: Channel,
    ctx: kvrpcpb::Context,
    done: Arc<AtomicU64>,
    deadline: Instant,
    keys: usize,
    seed: usize,
) -> Result<(), BoxError> {
    let mut client = TikvClient::new(channel);
    let mut i = seed;
    while Instant::now() < deadline {
        i = (i * 31 + 7) % keys;
        let resp = client
            .raw_get(kvrpcpb::RawGetRequest {
                context: Some(ctx.clone()),
                key: key(i),
                ..Default::default()
            })
            .await?
            .into_inner();
        if resp.not_found || resp.region_error.is_some() {
            return Err(format!("unexpected response {resp:?}").into());
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

async fn run_batch(
    channel: Channel,
    ctx: kvrpcpb::Context,
    done: Arc<AtomicU64>,
    deadline: Instant,
    keys: usize,
    batch: usize,
    seed: usize,
) -> Result<(), BoxError> {
    use tikvpb::batch_commands_request::{Request, request::Cmd};
    let mut client = TikvClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses = client
        .batch_commands(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut next_id = 0u64;
    let mut i = seed;
    while Instant::now() < deadline {
        let mut requests = Vec::with_capacity(batch);
        let mut ids = Vec::with_capacity(batch);
        for _ in 0..batch {
            i = (i * 31 + 7) % keys;
            requests.push(Request {
                cmd: Some(Cmd::RawGet(kvrpcpb::RawGetRequest {
                    context: Some(ctx.clone()),
                    key: key(i),
                    ..Default::default()
                })),
            });
            ids.push(next_id);
            next_id += 1;
        }
        tx.send(tikvpb::BatchCommandsRequest {
            requests,
            request_ids: ids,
            client_send_time_ns: 0,
        })
        .await
        .map_err(|_| "batch stream closed")?;
        let mut outstanding = batch;
        while outstanding > 0 {
            let msg = responses.message().await?.ok_or("batch stream ended")?;
            outstanding = outstanding.saturating_sub(msg.request_ids.len());
            done.fetch_add(msg.request_ids.len() as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}
