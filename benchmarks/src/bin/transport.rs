//! What the client's TiKV transport costs: raw get round trips through `tikv_client`'s
//! BatchCommands transport against a plain unary tonic call, with `tikv-mock` in another process.
//!
//! Two modes:
//!
//! - `transport`: each task sends `RawGet` commands one after another through
//!   `tikv_client::unstable::StoreClient::send` (BatchCommands, coalesced across tasks, over
//!   `--connections` connections);
//! - `unary`: each task sends `RawGet` unary RPCs on plain tonic stubs over `--connections`
//!   channels.
//!
//! Prints ops/s, client CPU microseconds per op (user + system time of this process, from
//! `/proc/self/stat`, over the measured window) and, for `transport`, the mean requests per
//! BatchCommands message counted on the client side.
//!
//! Usage: `transport --pd 127.0.0.1:2379 [--mode transport|unary] [--concurrency 64]
//! [--connections 4] [--seconds 10] [--keys 1000] [--policy standard]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tikv_client::Config;
use tikv_client::config::{BatchPolicy, TikvClientConfig};
use tikv_client::unstable::{SendOptions, StoreClient, Transport};
use tikv_proto::kvrpcpb;
use tikv_proto::pdpb::pd_client::PdClient;
use tikv_proto::tikvpb::batch_commands_request::request::Cmd;
use tikv_proto::tikvpb::batch_commands_response::response::Cmd as RespCmd;
use tikv_proto::tikvpb::tikv_client::TikvClient;
use tonic::transport::Channel;

use tikv_benchmarks::BoxError;

/// Linux reports process CPU times in USER_HZ ticks, which is 100 on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// Not measured: connections open, streams start, the allocator warms up.
const WARM_UP: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Args {
    pd: String,
    mode: String,
    concurrency: usize,
    connections: usize,
    seconds: u64,
    keys: usize,
    policy: String,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        pd: "127.0.0.1:2379".to_owned(),
        mode: "transport".to_owned(),
        concurrency: 64,
        connections: 4,
        seconds: 10,
        keys: 1000,
        policy: "standard".to_owned(),
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
            "--seconds" => args.seconds = num()? as u64,
            "--keys" => args.keys = num()?.max(1),
            "--policy" => args.policy = value.clone(),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.mode != "transport" && args.mode != "unary" {
        return Err(format!(
            "--mode must be transport or unary, got {}",
            args.mode
        ));
    }
    Ok(args)
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("bench{i:08}"))
}

/// User plus system CPU time of this process so far.
fn process_cpu() -> Result<Duration, BoxError> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the parenthesised command name, which may itself contain spaces.
    let rest = stat
        .rsplit_once(')')
        .ok_or("unexpected /proc/self/stat format")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| -> Result<f64, BoxError> {
        Ok(fields
            .get(i)
            .ok_or("short /proc/self/stat")?
            .parse::<f64>()?)
    };
    Ok(Duration::from_secs_f64(
        (ticks(11)? + ticks(12)?) / TICKS_PER_SECOND,
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args().map_err(|e| -> BoxError { e.into() })?;
    let mut pd = PdClient::connect(format!("http://{}", args.pd)).await?;
    let located = tikv_benchmarks::locate(&mut pd, key(0)).await?;
    let (ctx, addr) = (located.context, located.address);

    let policy: BatchPolicy = args.policy.parse()?;
    let config = Config::default().with_tikv_client(
        TikvClientConfig::default()
            .with_grpc_connection_count(args.connections)
            .with_batch_policy(policy),
    );
    let transport = Transport::new(&config)?;
    let store = transport.store(&addr)?;
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
    }

    // Prefill so that every get finds a value.
    for i in 0..args.keys {
        let put = Cmd::RawPut(kvrpcpb::RawPutRequest {
            context: Some(ctx.clone()),
            key: key(i),
            value: Bytes::from_static(b"value-of-sixteen"),
            ..Default::default()
        });
        match *store
            .send(put, SendOptions::new(Duration::from_secs(10)))
            .await?
        {
            RespCmd::RawPut(r) if r.region_error.is_none() && r.error.is_empty() => {}
            other => return Err(format!("prefill failed: {other:?}").into()),
        }
    }

    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(args.concurrency);
    for t in 0..args.concurrency {
        let (done, stop, ctx, keys) = (done.clone(), stop.clone(), ctx.clone(), args.keys);
        if args.mode == "transport" {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                run_transport(store, ctx, done, stop, keys, t).await
            }));
        } else {
            let channel = channels[t % channels.len()].clone();
            tasks.push(tokio::spawn(async move {
                run_unary(channel, ctx, done, stop, keys, t).await
            }));
        }
    }

    tokio::time::sleep(WARM_UP).await;
    let (ops0, stats0, cpu0, started) = (
        done.load(Ordering::Relaxed),
        store.stats(),
        process_cpu()?,
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (ops1, stats1, cpu1, elapsed) = (
        done.load(Ordering::Relaxed),
        store.stats(),
        process_cpu()?,
        started.elapsed(),
    );
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }

    let ops = ops1 - ops0;
    let seconds = elapsed.as_secs_f64();
    let cpu_us_per_op = (cpu1 - cpu0).as_secs_f64() * 1e6 / ops.max(1) as f64;
    let messages = stats1.batch_messages - stats0.batch_messages;
    let requests = stats1.batched_requests - stats0.batched_requests;
    let per_message = if messages == 0 {
        "-".to_owned()
    } else {
        format!("{:.2}", requests as f64 / messages as f64)
    };
    println!(
        "mode={} policy={} concurrency={} connections={} ops={} seconds={:.2} ops_per_sec={:.0} \
         requests_per_message={} cpu_us_per_op={:.2}",
        args.mode,
        args.policy,
        args.concurrency,
        args.connections,
        ops,
        seconds,
        ops as f64 / seconds,
        per_message,
        cpu_us_per_op,
    );
    transport.close();
    Ok(())
}

fn raw_get(ctx: &kvrpcpb::Context, i: usize) -> kvrpcpb::RawGetRequest {
    kvrpcpb::RawGetRequest {
        context: Some(ctx.clone()),
        key: key(i),
        ..Default::default()
    }
}

async fn run_transport(
    store: StoreClient,
    ctx: kvrpcpb::Context,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    keys: usize,
    seed: usize,
) -> Result<(), BoxError> {
    let opts = SendOptions::new(Duration::from_secs(10));
    let mut i = seed;
    while !stop.load(Ordering::Relaxed) {
        i = (i * 31 + 7) % keys;
        match *store
            .send(Cmd::RawGet(raw_get(&ctx, i)), opts.clone())
            .await?
        {
            RespCmd::RawGet(r) if !r.not_found && r.region_error.is_none() => {}
            other => return Err(format!("unexpected response {other:?}").into()),
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

async fn run_unary(
    channel: Channel,
    ctx: kvrpcpb::Context,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    keys: usize,
    seed: usize,
) -> Result<(), BoxError> {
    let mut client = TikvClient::new(channel);
    let mut i = seed;
    while !stop.load(Ordering::Relaxed) {
        i = (i * 31 + 7) % keys;
        let resp = client.raw_get(raw_get(&ctx, i)).await?.into_inner();
        if resp.not_found || resp.region_error.is_some() {
            return Err(format!("unexpected response {resp:?}").into());
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
