//! Region cache lookups per second with 100k cached regions, on one thread and on two.
//!
//! The cache is filled through `RegionCache::new_for_benchmark` (not API: a cache built from a
//! list of split keys, without PD), so the number is the lookup alone: index search, TTL check
//! and building the `KeyLocation` (two key handles and the buckets, reference counts only).
//!
//! Keys look like TiDB row keys (`t` + table id + `_r` + handle); regions are 1000 handles wide.
//! Four key distributions:
//!
//! - `uniform`: any of the 100k regions, equally likely. Most lookups miss the CPU caches:
//!   this is the memory-latency-bound worst case;
//! - `spread1k`: 1000 regions (1%) spread evenly over the key space get every lookup;
//! - `hot1k`: 1000 neighbouring regions (a hot table) get every lookup: close to the CPU cost
//!   of a lookup, with the index and regions in the CPU caches;
//! - `sequential`: keys in order, about 8 per region, as when grouping sorted keys.
//!
//! Each lookup is timed as `locate_key(..).await` polled once (a hit completes immediately),
//! and as the synchronous `try_locate_key`; the answer is kept alive (`black_box` of a
//! reference) until it is dropped, as a caller would, and the first 1000 answers of each run are
//! checked to hold their key. Two threads run the same loop on their own key lists at once;
//! "speedup" is their combined rate over one thread's.
//!
//! Last in each round, `writes`: the mean time of one cache write (a PD load being cached) on
//! a cache of 100k regions, timed over random region splits, each cached as two writes
//! (`RegionCache::split_for_benchmark`, not API either).
//!
//! The first version of this harness dropped each `locate_key` answer through
//! `Result::ok()`, a copy into another layout that the compiler made with overlapping loads
//! and stores; with the hand-written `locate_key` future that copy was about 14 ns of each
//! `locate_key` figure (with the earlier `async fn` it made no measurable difference).
//!
//! The machine may be shared: each result line reports how busy the rest of the machine was
//! during the run (from `/proc/stat` minus this process's own CPU time); results taken while
//! it was above a few percent are not comparable.
//!
//! Usage: `region_cache [--regions 100000] [--lookups 2000000] [--rounds 3] [--writes 10000]
//! [--only uniform|spread1k|hot1k|sequential|writes] [--key-layout flat|vec]`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tikv_client::Key;
use tikv_client::unstable::RegionCache;

use tikv_benchmarks::BoxError;

const HANDLES_PER_REGION: u64 = 1000;

#[derive(Debug)]
struct Args {
    regions: u64,
    lookups: usize,
    rounds: usize,
    /// Cache writes timed after the lookups (each split of a region is two).
    writes: usize,
    only: Option<String>,
    /// Each key in its own `Vec` (the layout of the first version of this benchmark) instead of
    /// one flat buffer.
    vec_keys: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        regions: 100_000,
        lookups: 2_000_000,
        rounds: 3,
        writes: 10_000,
        only: None,
        vec_keys: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--regions" => args.regions = num()?.max(2),
            "--lookups" => args.lookups = num()?.max(1000) as usize,
            "--rounds" => args.rounds = num()?.max(1) as usize,
            "--writes" => args.writes = num()? as usize,
            "--only" => args.only = Some(value.clone()),
            "--key-layout" => match value.as_str() {
                "flat" => args.vec_keys = false,
                "vec" => args.vec_keys = true,
                other => return Err(format!("--key-layout: flat or vec, not {other}")),
            },
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// Length of a row key.
const KEY_LEN: usize = 19;

/// A TiDB-style row key of table 42.
fn row_key(handle: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(KEY_LEN);
    k.push(b't');
    k.extend_from_slice(&(42u64 | 1 << 63).to_be_bytes());
    k.extend_from_slice(b"_r");
    k.extend_from_slice(&handle.to_be_bytes());
    k
}

/// The keys one thread looks up, in order.
///
/// By default they sit back to back in one buffer, read front to back: the CPU's prefetcher
/// streams it and the loop's own memory traffic stays small. The first version of this
/// benchmark kept each key in its own `Vec` (`--key-layout vec`): reading a key then also
/// meant reading its `Vec` header and a separate allocation, 56 bytes of fresh memory per
/// lookup that competed with the cache's data for the CPU caches. With uniform keys that
/// added 5-10 ns per lookup on a quiet machine and 20-45 ns when the machine's shared caches
/// were busy: time that belongs to the benchmark, not to the cache.
enum Keys {
    Flat(Vec<u8>),
    Vecs(Vec<Vec<u8>>),
}

impl Keys {
    fn new(keys: Vec<Vec<u8>>, vec_keys: bool) -> Keys {
        if vec_keys {
            Keys::Vecs(keys)
        } else {
            Keys::Flat(keys.concat())
        }
    }

    fn len(&self) -> usize {
        match self {
            Keys::Flat(flat) => flat.len() / KEY_LEN,
            Keys::Vecs(keys) => keys.len(),
        }
    }

    /// The first `n` keys, for the warm-up.
    fn head(&self, n: usize) -> Keys {
        match self {
            Keys::Flat(flat) => Keys::Flat(flat[..flat.len().min(n * KEY_LEN)].to_vec()),
            Keys::Vecs(keys) => Keys::Vecs(keys[..keys.len().min(n)].to_vec()),
        }
    }

    fn for_each(&self, mut f: impl FnMut(&[u8])) {
        match self {
            Keys::Flat(flat) => flat.chunks_exact(KEY_LEN).for_each(f),
            Keys::Vecs(keys) => keys.iter().for_each(|k| f(k)),
        }
    }
}

/// Polls a future once; a cache hit is ready at once.
#[inline(always)]
fn poll_ready<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        // The benchmark's own check: every key was preloaded, so a pending lookup means the
        // measurement is invalid and must stop (a benchmark binary, not library code).
        #[expect(
            clippy::panic,
            reason = "an invalid measurement must stop the benchmark"
        )]
        Poll::Pending => panic!("a cached lookup went to PD"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    LocateKey,
    TryLocateKey,
}

fn run(cache: &RegionCache, keys: &Keys, api: Api) {
    match api {
        Api::LocateKey => keys.for_each(|k| {
            black_box(&poll_ready(cache.locate_key(k)));
        }),
        Api::TryLocateKey => keys.for_each(|k| {
            black_box(&cache.try_locate_key(k));
        }),
    }
}

/// Busy and total jiffies of the whole machine, and this process's CPU jiffies.
fn cpu_sample() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let idle = cpu.get(3)? + cpu.get(4).unwrap_or(&0);
    let total: u64 = cpu.iter().take(8).sum();
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = own.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((total - idle, total, utime + stime))
}

/// Share of the machine's CPU used by other processes between two samples, in percent.
fn others_busy(before: Option<(u64, u64, u64)>, after: Option<(u64, u64, u64)>) -> String {
    match (before, after) {
        (Some((b0, t0, o0)), Some((b1, t1, o1))) if t1 > t0 => {
            let others = (b1 - b0).saturating_sub(o1 - o0);
            format!("{:.0}%", 100.0 * others as f64 / (t1 - t0) as f64)
        }
        _ => "n/a".to_owned(),
    }
}

/// The benchmark's own check: every key was preloaded, so each lookup must answer with the
/// region holding it (a lookup that failed or found nothing would be timed as a fast one).
fn check_hits(cache: &RegionCache, keys: &Keys, api: Api) {
    let mut wrong = 0;
    keys.for_each(|k| {
        let found = match api {
            Api::LocateKey => poll_ready(cache.locate_key(k)).ok(),
            Api::TryLocateKey => cache.try_locate_key(k),
        };
        wrong += usize::from(!found.is_some_and(|loc| loc.contains(k)));
    });
    assert_eq!(
        wrong, 0,
        "lookups that did not answer with their key's region"
    );
}

/// ns per lookup on one thread, aggregate ns per lookup on two threads, and the load of the
/// rest of the machine during the two-thread run.
fn measure(cache: &RegionCache, a: &Keys, b: &Keys, api: Api) -> (f64, f64, String) {
    check_hits(cache, &a.head(1000), api);
    run(cache, &a.head(200_000), api); // warm up
    let start = Instant::now();
    run(cache, a, api);
    let one = start.elapsed().as_nanos() as f64 / a.len() as f64;
    let before = cpu_sample();
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| run(cache, a, api));
        s.spawn(|| run(cache, b, api));
    });
    let two = start.elapsed().as_nanos() as f64 / (a.len() + b.len()) as f64;
    (one, two, others_busy(before, cpu_sample()))
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let split_keys: Vec<Key> = (1..args.regions)
        .map(|i| Key::from(row_key(i * HANDLES_PER_REGION)))
        .collect();
    let started = Instant::now();
    let cache = RegionCache::new_for_benchmark(split_keys.clone());
    eprintln!(
        "built a cache of {} regions in {:.2?}",
        cache.region_count(),
        started.elapsed()
    );
    let handles = args.regions * HANDLES_PER_REGION;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let gen_keys = |rng: &mut Rng, dist: &str| -> Vec<Vec<u8>> {
        match dist {
            "uniform" => (0..args.lookups)
                .map(|_| row_key(rng.below(handles)))
                .collect(),
            "hot1k" | "spread1k" => {
                let hot_regions = 1000.min(args.regions);
                // hot1k: 1000 neighbouring regions (a hot table); spread1k: 1000 regions spread
                // evenly over the key space, each in its own part of the index.
                let stride = if dist == "hot1k" {
                    1
                } else {
                    args.regions / hot_regions
                };
                (0..args.lookups)
                    .map(|_| {
                        let region = rng.below(hot_regions) * stride;
                        row_key(region * HANDLES_PER_REGION + rng.below(HANDLES_PER_REGION))
                    })
                    .collect()
            }
            _ => {
                let step = (handles / args.lookups as u64).max(1);
                let offset = rng.below(handles);
                (0..args.lookups as u64)
                    .map(|i| row_key((offset + i * step) % handles))
                    .collect()
            }
        }
    };
    println!(
        "{:<11} {:<15} {:>10} {:>14} {:>8} {:>12}",
        "keys", "call", "1 thread", "2 threads", "speedup", "others busy"
    );
    for round in 0..args.rounds {
        for dist in ["uniform", "spread1k", "hot1k", "sequential"] {
            if args.only.as_deref().is_some_and(|o| o != dist) {
                continue;
            }
            let a = Keys::new(gen_keys(&mut rng, dist), args.vec_keys);
            let b = Keys::new(gen_keys(&mut rng, dist), args.vec_keys);
            for (api, name) in [
                (Api::LocateKey, "locate_key"),
                (Api::TryLocateKey, "try_locate_key"),
            ] {
                let (one, two, busy) = measure(&cache, &a, &b, api);
                println!(
                    "{:<11} {:<15} {:>7.1} ns {:>8.1} ns/op {:>7.2}x {:>12}",
                    dist,
                    name,
                    one,
                    two,
                    one / two,
                    busy
                );
            }
        }
        if args.writes > 0 && args.only.as_deref().is_none_or(|o| o == "writes") {
            // On a cache of its own, so that the lookups of every round see the same regions.
            let cache = RegionCache::new_for_benchmark(split_keys.clone());
            let (per_write, regions) = measure_writes(&cache, &mut rng, args.writes / 2, handles);
            println!(
                "{:<11} {:<15} {:>7.2} us/write ({} regions after)",
                "writes", "split", per_write, regions
            );
        }
        if round + 1 < args.rounds {
            println!();
        }
    }
    Ok(())
}

/// Splits `splits` random regions, each as two cache writes (the two halves, as PD loads would
/// cache them), and returns the mean time per write in microseconds and the regions after.
fn measure_writes(cache: &RegionCache, rng: &mut Rng, splits: usize, handles: u64) -> (f64, usize) {
    let keys: Vec<Vec<u8>> = (0..splits).map(|_| row_key(rng.below(handles))).collect();
    let mut writes = 0;
    let start = Instant::now();
    for (i, key) in keys.iter().enumerate() {
        // Ids above the preloaded regions'.
        if cache.split_for_benchmark(key, (1 << 40) + i as u64) {
            writes += 2;
        }
    }
    let elapsed = start.elapsed();
    (
        elapsed.as_secs_f64() * 1e6 / writes.max(1) as f64,
        cache.region_count(),
    )
}

/// A small xorshift generator: deterministic keys without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
