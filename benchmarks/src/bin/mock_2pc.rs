//! How many two-phase commits per second `tikv-mock` serves, with the client in another process.
//!
//! Each task runs one-key transactions back to back: a start ts from PD's `Tso` stream,
//! `KvPrewrite`, a commit ts from the stream, `KvCommit`. Every task writes its own key, so
//! transactions never conflict and the number measures the mock's Percolator path plus its TSO,
//! not contention. The client is plain tonic stubs (one PD lookup, no routing logic).
//!
//! Usage: `mock_2pc --pd 127.0.0.1:2379 [--concurrency 16] [--connections 4] [--seconds 10]`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tikv_proto::kvrpcpb;
use tikv_proto::pdpb::{self, pd_client::PdClient};
use tikv_proto::tikvpb::tikv_client::TikvClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use tikv_benchmarks::BoxError;

#[derive(Debug)]
struct Args {
    pd: String,
    concurrency: usize,
    connections: usize,
    seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        pd: "127.0.0.1:2379".to_owned(),
        concurrency: 16,
        connections: 4,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || value.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--pd" => args.pd = value.clone(),
            "--concurrency" => args.concurrency = num()?.max(1),
            "--connections" => args.connections = num()?.max(1),
            "--seconds" => args.seconds = num()? as u64,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn key(task: usize) -> Bytes {
    Bytes::from(format!("2pc{task:06}"))
}

/// One task's TSO stream: a request in, one timestamp out.
struct Tso {
    header: Option<pdpb::RequestHeader>,
    tx: mpsc::Sender<pdpb::TsoRequest>,
    rx: Streaming<pdpb::TsoResponse>,
}

impl Tso {
    async fn open(
        pd: &mut PdClient<Channel>,
        header: Option<pdpb::RequestHeader>,
    ) -> Result<Self, BoxError> {
        let (tx, rx) = mpsc::channel(1);
        let rx = pd.tso(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Tso { header, tx, rx })
    }

    async fn next(&mut self) -> Result<u64, BoxError> {
        self.tx
            .send(pdpb::TsoRequest {
                header: self.header.clone(),
                count: 1,
                ..Default::default()
            })
            .await
            .map_err(|_| "TSO stream closed")?;
        let resp = self.rx.message().await?.ok_or("TSO stream ended")?;
        let ts = resp.timestamp.ok_or("TSO response without a timestamp")?;
        Ok(((ts.physical as u64) << 18) | ts.logical as u64)
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = parse_args().map_err(|e| -> BoxError { e.into() })?;
    let mut pd = PdClient::connect(format!("http://{}", args.pd)).await?;
    // Transactional keys are stored memcomparable-encoded; the single region covers them all.
    let located = tikv_benchmarks::locate(&mut pd, Bytes::new()).await?;
    if !located.region_end.is_empty() {
        return Err("mock_2pc expects a single-region cluster (no --split-keys)".into());
    }
    let (header, ctx, addr) = (located.header, located.context, located.address);
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
    }

    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.concurrency);
    for t in 0..args.concurrency {
        let kv = TikvClient::new(channels[t % channels.len()].clone());
        let tso = Tso::open(&mut pd, header.clone()).await?;
        let ctx = ctx.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(run(kv, tso, ctx, key(t), done, deadline)));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let commits = done.load(Ordering::Relaxed);
    println!(
        "concurrency={} connections={} commits={} seconds={:.2} commits_per_sec={:.0}",
        args.concurrency,
        args.connections,
        commits,
        elapsed,
        commits as f64 / elapsed
    );
    Ok(())
}

async fn run(
    mut kv: TikvClient<Channel>,
    mut tso: Tso,
    ctx: kvrpcpb::Context,
    key: Bytes,
    done: Arc<AtomicU64>,
    deadline: Instant,
) -> Result<(), BoxError> {
    let value = Bytes::from_static(b"value-of-sixteen");
    while Instant::now() < deadline {
        let start_ts = tso.next().await?;
        let prewrite = kv
            .kv_prewrite(kvrpcpb::PrewriteRequest {
                context: Some(ctx.clone()),
                mutations: vec![kvrpcpb::Mutation {
                    op: kvrpcpb::Op::Put as i32,
                    key: key.clone(),
                    value: value.clone(),
                    ..Default::default()
                }],
                primary_lock: key.clone(),
                start_version: start_ts,
                lock_ttl: 3000,
                txn_size: 1,
                ..Default::default()
            })
            .await?
            .into_inner();
        if prewrite.region_error.is_some() || !prewrite.errors.is_empty() {
            return Err(format!("prewrite failed: {prewrite:?}").into());
        }
        let commit_ts = tso.next().await?;
        let commit = kv
            .kv_commit(kvrpcpb::CommitRequest {
                context: Some(ctx.clone()),
                start_version: start_ts,
                keys: vec![key.clone()],
                commit_version: commit_ts,
                ..Default::default()
            })
            .await?
            .into_inner();
        if commit.region_error.is_some() || commit.error.is_some() {
            return Err(format!("commit failed: {commit:?}").into());
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
