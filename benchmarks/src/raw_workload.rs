//! The raw KV workloads of the client comparison (`docs/benchmarks.md`, "Raw KV vs client-rust
//! 0.4"), written once for both clients: this workspace's `tikv-client` (`src/bin/raw.rs`, through
//! `tikv_benchmarks::raw_workload`) and the published client-rust 0.4 (`benchmarks/peer`, which
//! includes this file with `#[path]` because it is a separate workspace). The module knows
//! neither client: each binary implements [`RawOps`] over its client and hands it to [`run`].
//! It depends on std and tokio only, so that it compiles in both workspaces.
//!
//! What both binaries therefore share: the command line ([`Settings::parse`]), the key set
//! ([`KEY_COUNT`] keys of [`KEY_LEN`] bytes, values of [`VALUE_LEN`] bytes), the preload, the key
//! choice (uniform random per operation, batches of [`BATCH`] distinct keys), the runtime
//! ([`runtime`]), the measurement (operations and process CPU over a window after a warm-up)
//! and the output line ([`Measurement::line`]).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Errors of the workload driver and of the clients under test.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Number of keys preloaded and then read or overwritten.
pub const KEY_COUNT: usize = 10_000;
/// Length of every key in bytes (`rawbench` and eight digits).
pub const KEY_LEN: usize = 16;
/// Length of every value in bytes.
pub const VALUE_LEN: usize = 64;
/// Keys per `batch_get`.
pub const BATCH: usize = 100;
/// Regions the mock is split into (see [`split_keys`]); leaders spread over its stores.
pub const REGIONS: usize = 6;
/// Concurrencies run when `--concurrency` is not given.
pub const DEFAULT_CONCURRENCY: [usize; 3] = [1, 64, 256];
/// Not measured: connections open, caches fill, the allocator warms up.
pub const WARM_UP: Duration = Duration::from_secs(1);
/// How long the tasks of one run may take to finish their last operation once told to stop.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// Tasks that write the preload.
const PRELOAD_TASKS: usize = 64;
/// Linux reports process CPU times in USER_HZ ticks, which is 100 on every architecture.
const TICKS_PER_SECOND: f64 = 100.0;

const USAGE: &str = "usage: BIN --pd HOST:PORT [--seconds 5] [--concurrency 1,64,256] \
     [--workloads get,put,batch_get] [--keys 10000] [--regions 6] | --print-split-keys \
     [--keys N] [--regions N]";

/// The raw operations a client under test offers. Keys and values are converted to the client's
/// own types once, before any run; each operation then gets owned clones, as a caller of either
/// client's API holds them.
pub trait RawOps: Send + Sync + 'static {
    /// A key as the client takes it.
    type Key: Clone + Send + Sync + 'static;
    /// A value as the client takes it.
    type Value: Clone + Send + Sync + 'static;

    /// Converts key bytes (done once per key, before the runs).
    fn key(bytes: &[u8]) -> Self::Key;
    /// Converts value bytes (done once, before the runs).
    fn value(bytes: &[u8]) -> Self::Value;
    /// Reads one key; `Ok(Some(len))` gives the length of the value found.
    fn get(&self, key: Self::Key) -> impl Future<Output = Result<Option<usize>, BoxError>> + Send;
    /// Writes one key.
    fn put(
        &self,
        key: Self::Key,
        value: Self::Value,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Reads many keys at once; `Ok(n)` is the number of keys found.
    fn batch_get(
        &self,
        keys: Vec<Self::Key>,
    ) -> impl Future<Output = Result<usize, BoxError>> + Send;
}

/// One measured workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// `get` of one uniformly random key.
    Get,
    /// `put` of one uniformly random key (overwriting it with a value of the same size).
    Put,
    /// `batch_get` of [`BATCH`] distinct random keys, spread over every region.
    BatchGet,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Get => "get",
            Workload::Put => "put",
            Workload::BatchGet => "batch_get",
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to run, from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// PD endpoint `HOST:PORT`.
    pub pd: String,
    /// Measured seconds per (workload, concurrency), after [`WARM_UP`].
    pub seconds: f64,
    /// Concurrent tasks, one run each.
    pub concurrency: Vec<usize>,
    /// Workloads, in the order run.
    pub workloads: Vec<Workload>,
    /// Keys preloaded and used.
    pub keys: usize,
    /// Regions the mock was split into (only for `--print-split-keys`).
    pub regions: usize,
    /// Print the mock's `--split-keys` value and exit instead of running.
    pub print_split_keys: bool,
}

impl Settings {
    /// Parses the arguments after the program name. `--secs` is accepted for `--seconds`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Settings, String> {
        let mut settings = Settings {
            pd: String::new(),
            seconds: 5.0,
            concurrency: DEFAULT_CONCURRENCY.to_vec(),
            workloads: vec![Workload::Get, Workload::Put, Workload::BatchGet],
            keys: KEY_COUNT,
            regions: REGIONS,
            print_split_keys: false,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "--print-split-keys" {
                settings.print_split_keys = true;
                continue;
            }
            if flag == "-h" || flag == "--help" {
                return Err(USAGE.to_owned());
            }
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let positive = |v: &str| match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{flag} takes positive integers, not {v:?}")),
            };
            match flag.as_str() {
                "--pd" => settings.pd = value,
                "--seconds" | "--secs" => {
                    settings.seconds = match value.parse::<f64>() {
                        Ok(s) if s > 0.0 && s.is_finite() => s,
                        _ => return Err(format!("{flag} must be a positive number")),
                    }
                }
                "--concurrency" => {
                    settings.concurrency =
                        value.split(',').map(positive).collect::<Result<_, _>>()?;
                }
                "--workloads" => {
                    settings.workloads = value
                        .split(',')
                        .map(|w| match w {
                            "get" => Ok(Workload::Get),
                            "put" => Ok(Workload::Put),
                            "batch_get" => Ok(Workload::BatchGet),
                            other => Err(format!("unknown workload {other:?}")),
                        })
                        .collect::<Result<_, _>>()?;
                }
                "--keys" => settings.keys = positive(&value)?,
                "--regions" => settings.regions = positive(&value)?,
                other => return Err(format!("unknown flag {other}\n{USAGE}")),
            }
        }
        if settings.pd.is_empty() && !settings.print_split_keys {
            return Err(format!("--pd is required\n{USAGE}"));
        }
        Ok(settings)
    }
}

/// Key number `i`: `rawbench` and eight decimal digits, [`KEY_LEN`] bytes, so that key order is
/// number order.
pub fn key_bytes(i: usize) -> Vec<u8> {
    format!("rawbench{i:08}").into_bytes()
}

/// The value written to every key.
pub fn value_bytes() -> Vec<u8> {
    (0..VALUE_LEN).map(|i| b'a' + (i % 26) as u8).collect()
}

/// The mock's `--split-keys` value that cuts `keys` keys into `regions` regions of equal size.
pub fn split_keys(keys: usize, regions: usize) -> String {
    (1..regions.max(1))
        .map(|r| String::from_utf8_lossy(&key_bytes(r * keys / regions)).into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

/// The runtime both binaries run on: tokio's multi-threaded scheduler with its defaults (one
/// worker per core).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// The result of one (workload, concurrency) run.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Which client (printed as `client=`).
    pub client: String,
    /// The workload.
    pub workload: Workload,
    /// Concurrent tasks.
    pub concurrency: usize,
    /// Operations completed in the window (a `batch_get` of 100 keys is one operation).
    pub ops: u64,
    /// The window.
    pub elapsed: Duration,
    /// User plus system CPU time of this process in the window.
    pub cpu: Duration,
}

impl Measurement {
    /// Operations per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// Client CPU microseconds per operation.
    pub fn cpu_us_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.ops.max(1) as f64
    }

    /// The output line: `raw WORKLOAD c=N client=NAME ops/s=X cpu_us/op=Y ops=N secs=S`, one
    /// space-separated `key=value` field after the first two words.
    pub fn line(&self) -> String {
        format!(
            "raw {} c={} client={} ops/s={:.0} cpu_us/op={:.2} ops={} secs={:.2}",
            self.workload,
            self.concurrency,
            self.client,
            self.ops_per_sec(),
            self.cpu_us_per_op(),
            self.ops,
            self.elapsed.as_secs_f64(),
        )
    }
}

/// The prepared keys and value in the client's own types.
struct Data<C: RawOps> {
    keys: Vec<C::Key>,
    value: C::Value,
}

/// Preloads the keys, then runs every workload at every concurrency, printing one
/// [`Measurement::line`] per run to stdout as soon as it ends. Any failed or wrong answer ends
/// the benchmark with an error: numbers from a client that is not doing the work are worthless.
pub async fn run<C: RawOps>(
    client: Arc<C>,
    client_name: &str,
    settings: &Settings,
) -> Result<Vec<Measurement>, BoxError> {
    let data = Arc::new(Data::<C> {
        keys: (0..settings.keys).map(|i| C::key(&key_bytes(i))).collect(),
        value: C::value(&value_bytes()),
    });
    preload(&client, &data).await?;
    eprintln!(
        "{client_name}: preloaded {} keys of {KEY_LEN} bytes with {VALUE_LEN}-byte values; \
         {:.1} s per run after a {} s warm-up",
        settings.keys,
        settings.seconds,
        WARM_UP.as_secs()
    );
    let mut results = Vec::new();
    for &workload in &settings.workloads {
        for &concurrency in &settings.concurrency {
            let m = measure(&client, &data, workload, concurrency, settings.seconds).await?;
            let m = Measurement {
                client: client_name.to_owned(),
                ..m
            };
            println!("{}", m.line());
            results.push(m);
        }
    }
    Ok(results)
}

async fn preload<C: RawOps>(client: &Arc<C>, data: &Arc<Data<C>>) -> Result<(), BoxError> {
    let mut tasks = Vec::with_capacity(PRELOAD_TASKS);
    for t in 0..PRELOAD_TASKS {
        let (client, data) = (client.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            for i in (t..data.keys.len()).step_by(PRELOAD_TASKS) {
                client.put(data.keys[i].clone(), data.value.clone()).await?;
            }
            Ok::<(), BoxError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn measure<C: RawOps>(
    client: &Arc<C>,
    data: &Arc<Data<C>>,
    workload: Workload,
    concurrency: usize,
    seconds: f64,
) -> Result<Measurement, BoxError> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(concurrency);
    for t in 0..concurrency {
        let (client, data, done, stop) = (client.clone(), data.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let result = drive(&*client, &data, workload, t as u64, &done, &stop).await;
            if result.is_err() {
                // Stop the others too: this run's numbers are void.
                stop.store(true, Ordering::Relaxed);
            }
            result
        }));
    }

    tokio::time::sleep(WARM_UP).await;
    let (ops0, cpu0, started) = (done.load(Ordering::Relaxed), process_cpu()?, Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let (ops1, cpu1, elapsed) = (
        done.load(Ordering::Relaxed),
        process_cpu()?,
        started.elapsed(),
    );
    stop.store(true, Ordering::Relaxed);

    let drained = tokio::time::timeout(DRAIN_LIMIT, async {
        for task in tasks {
            task.await??;
        }
        Ok::<(), BoxError>(())
    })
    .await;
    match drained {
        Ok(result) => result.map_err(|e| -> BoxError {
            format!("{workload} at concurrency {concurrency} failed: {e}").into()
        })?,
        Err(_) => {
            return Err(format!(
                "{workload} at concurrency {concurrency}: operations still pending {} s after \
                 the run ended",
                DRAIN_LIMIT.as_secs()
            )
            .into());
        }
    }
    Ok(Measurement {
        client: String::new(),
        workload,
        concurrency,
        ops: ops1 - ops0,
        elapsed,
        cpu: cpu1.saturating_sub(cpu0),
    })
}

/// One task: operations back to back until `stop`, each checked.
async fn drive<C: RawOps>(
    client: &C,
    data: &Data<C>,
    workload: Workload,
    seed: u64,
    done: &AtomicU64,
    stop: &AtomicBool,
) -> Result<(), BoxError> {
    let n = data.keys.len();
    let mut rng = Rng::new(seed);
    let batch = BATCH.min(n);
    while !stop.load(Ordering::Relaxed) {
        match workload {
            Workload::Get => {
                let i = rng.below(n);
                match client.get(data.keys[i].clone()).await? {
                    Some(VALUE_LEN) => {}
                    other => {
                        return Err(format!("get of key {i}: value length {other:?}").into());
                    }
                }
            }
            Workload::Put => {
                let i = rng.below(n);
                client.put(data.keys[i].clone(), data.value.clone()).await?;
            }
            Workload::BatchGet => {
                // An arithmetic progression modulo n with a stride coprime to n: distinct keys,
                // spread over the whole key range (so over every region), cheap to draw.
                let start = rng.below(n);
                let stride = loop {
                    let s = 1 + rng.below(n.max(2) - 1);
                    if gcd(s, n) == 1 {
                        break s;
                    }
                };
                let keys = (0..batch)
                    .map(|j| data.keys[(start + j * stride) % n].clone())
                    .collect();
                let found = client.batch_get(keys).await?;
                if found != batch {
                    return Err(format!("batch_get found {found} of {batch} keys").into());
                }
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// xorshift64*: a few instructions per draw, so key choice costs both clients next to nothing.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Any non-zero state works; spread small seeds apart.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

/// User plus system CPU time of this process so far (all threads), from `/proc/self/stat`, the
/// same source as the transport benchmark's.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_values_and_splits() {
        assert_eq!(key_bytes(42), b"rawbench00000042");
        assert_eq!(key_bytes(KEY_COUNT - 1).len(), KEY_LEN);
        assert_eq!(value_bytes().len(), VALUE_LEN);
        assert_eq!(
            split_keys(10_000, 4),
            "rawbench00002500,rawbench00005000,rawbench00007500"
        );
        assert_eq!(split_keys(10, 1), "");
    }

    #[test]
    fn batches_are_distinct() {
        let mut rng = Rng::new(7);
        for n in [100, 101, 10_000] {
            for _ in 0..100 {
                let start = rng.below(n);
                let stride = loop {
                    let s = 1 + rng.below(n - 1);
                    if gcd(s, n) == 1 {
                        break s;
                    }
                };
                let mut picked: Vec<usize> = (0..BATCH).map(|j| (start + j * stride) % n).collect();
                picked.sort_unstable();
                picked.dedup();
                assert_eq!(picked.len(), BATCH);
            }
        }
    }

    #[test]
    fn parses_flags() {
        let args = |a: &[&str]| Settings::parse(a.iter().map(|s| s.to_string()));
        let s = args(&["--pd", "h:1", "--secs", "2", "--concurrency", "1,8"]).unwrap();
        assert_eq!(
            (s.pd.as_str(), s.seconds, s.concurrency),
            ("h:1", 2.0, vec![1, 8])
        );
        assert_eq!(
            s.workloads,
            [Workload::Get, Workload::Put, Workload::BatchGet]
        );
        let s = args(&["--pd", "h:1", "--workloads", "batch_get"]).unwrap();
        assert_eq!(s.workloads, [Workload::BatchGet]);
        assert!(args(&["--print-split-keys"]).is_ok());
        for bad in [
            &[][..],
            &["--pd"],
            &["--pd", "h:1", "--concurrency", "0"],
            &["--x", "1"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }
}
