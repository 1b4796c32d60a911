//! `tikv-mock-compat`: drives the published `tikv-client` 0.4 crate (tikv/client-rust, a client
//! nobody on this project wrote) against a running `tikv-mock` binary and checks every answer.
//!
//! ```text
//! tikv-mock-compat --pd 127.0.0.1:2379 --api-version 1   # API V1 scenario (multi-region)
//! tikv-mock-compat --pd 127.0.0.1:2379 --api-version 2   # API V2, keyspace DEFAULT, with TTL
//! tikv-mock-compat --print-split-keys                    # split keys the V1 scenario expects
//! tikv-mock-compat --pd 127.0.0.1:2379 --txn             # transactions (API V1, see `txn`)
//! tikv-mock-compat --print-txn-split-keys                # split keys the --txn scenario expects
//! ```
//!
//! The PD endpoint may also come from `PD_ADDRS` (comma separated). Any failed check panics inside
//! the scenario task; `main` turns that into exit code 1. Every client call has a time limit, so a
//! server that never answers (or a client retry loop that never ends) fails instead of hanging.
//!
//! Two bugs of client-rust 0.4's raw scan shape the key layout (they would bite a real TiKV too):
//! * A forward scan that reaches the *last* region (empty end key) does not stop: the client takes
//!   the region's empty end key as the next start key and starts again at the first region,
//!   returning duplicates until the limit is used up (or looping forever when nothing matches).
//!   So every V1 scan here ends at or before the last split key (`k09`): no scan reaches the tail
//!   region `[k09, "")`. In V2 the client bounds scans by the keyspace end, so the region holding
//!   the keyspace must end at the keyspace boundary, as it does in a real API V2 cluster.
//! * `scan_reverse` sends each request to the region holding the *lower* bound, so a reverse scan
//!   is only correct inside one region. The reverse scans here stay inside one region.

use std::collections::BTreeMap;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tikv_client::{BoundRange, Config, Key, KvPair, RawClient, Value};

mod pd_admin;
mod txn;

/// Region split keys the V1 scenario is written for (`run.sh` passes them to the mock through
/// `--split-keys`). Test keys are `k00`..`k08`, so they span three regions,
/// `["", k03)`, `[k03, k06)`, `[k06, k09)`; the tail region `[k09, "")` only sees point
/// operations (see the module docs for why no scan may reach it).
const SPLIT_KEYS: &[&str] = &["k03", "k06", "k09"];

/// Upper bound for one client call, connection set-up included.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Upper bound for creating a client for a keyspace that does not exist (0.4 retries the PD call
/// ten times, reconnecting in between, before it gives up).
const BAD_KEYSPACE_TIMEOUT: Duration = Duration::from_secs(90);

const USAGE: &str = "\
usage: tikv-mock-compat --pd HOST:PORT --api-version 1|2
       tikv-mock-compat --pd HOST:PORT --txn [--with-pessimistic]
       tikv-mock-compat --print-split-keys | --print-txn-split-keys

  --pd HOST:PORT       PD endpoint of the running mock (repeatable; default: env PD_ADDRS,
                       comma separated)
  --api-version 1|2    1: raw KV over API V1 on a multi-region cluster (start the mock with
                       --split-keys $(tikv-mock-compat --print-split-keys));
                       2: raw KV over API V2 in keyspace DEFAULT, TTL included
  --print-split-keys   print the split keys the V1 scenario expects, comma separated, and exit
  --txn                transactions with TransactionClient over API V1 (start the mock with
                       --split-keys $(tikv-mock-compat --print-txn-split-keys))
  --with-pessimistic   with --txn: also run the pessimistic-transaction steps
  --print-txn-split-keys  print the split keys the --txn scenario expects and exit";

#[derive(Debug)]
enum Action {
    Help,
    PrintSplitKeys,
    PrintTxnSplitKeys,
    Run { pd: Vec<String>, api_version: u8 },
    Txn { pd: Vec<String>, pessimistic: bool },
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Action, String> {
    let mut pd = Vec::new();
    let mut api_version = None;
    let mut txn = false;
    let mut pessimistic = false;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Action::Help),
            "--print-split-keys" => return Ok(Action::PrintSplitKeys),
            "--print-txn-split-keys" => return Ok(Action::PrintTxnSplitKeys),
            "--txn" => txn = true,
            "--with-pessimistic" => pessimistic = true,
            "--pd" => pd.extend(split_endpoints(&value("--pd")?)),
            "--api-version" => {
                api_version = Some(match value("--api-version")?.as_str() {
                    "1" => 1,
                    "2" => 2,
                    other => return Err(format!("--api-version must be 1 or 2, not {other:?}")),
                })
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if pd.is_empty() {
        if let Ok(env) = std::env::var("PD_ADDRS") {
            pd.extend(split_endpoints(&env));
        }
    }
    if pd.is_empty() {
        return Err("no PD endpoint: pass --pd HOST:PORT or set PD_ADDRS".to_owned());
    }
    if txn {
        if api_version.is_some_and(|v| v != 1) {
            return Err("--txn runs over API V1 only".to_owned());
        }
        return Ok(Action::Txn { pd, pessimistic });
    }
    if pessimistic {
        return Err("--with-pessimistic needs --txn".to_owned());
    }
    let api_version = api_version.ok_or("--api-version 1|2 is required")?;
    Ok(Action::Run { pd, api_version })
}

fn split_endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Which scenario a run executes.
#[derive(Debug)]
enum Scenario {
    Raw { api_version: u8 },
    Txn { pessimistic: bool },
}

impl Scenario {
    fn name(&self) -> String {
        match self {
            Scenario::Raw { api_version } => format!("API V{api_version}"),
            Scenario::Txn { .. } => "transactional (API V1)".to_owned(),
        }
    }
}

fn main() -> ExitCode {
    let (pd, scenario) = match parse_args(std::env::args().skip(1)) {
        Ok(Action::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Action::PrintSplitKeys) => {
            println!("{}", SPLIT_KEYS.join(","));
            return ExitCode::SUCCESS;
        }
        Ok(Action::PrintTxnSplitKeys) => {
            println!("{}", txn::TXN_SPLIT_KEYS);
            return ExitCode::SUCCESS;
        }
        Ok(Action::Run { pd, api_version }) => (pd, Scenario::Raw { api_version }),
        Ok(Action::Txn { pd, pessimistic }) => (pd, Scenario::Txn { pessimistic }),
        Err(e) => {
            eprintln!("tikv-mock-compat: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let name = scenario.name();

    // One line per failed check (where and what), without a backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("CHECK FAILED {info}")));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The scenario runs in its own task so that a failed assertion (a panic) ends up here as a
    // JoinError instead of unwinding through the runtime.
    let outcome = runtime.block_on(async move {
        tokio::spawn(async move {
            match scenario {
                Scenario::Raw { api_version: 1 } => scenario_v1(pd).await,
                Scenario::Raw { .. } => scenario_v2(pd).await,
                Scenario::Txn { pessimistic } => txn::scenario_txn(pd, pessimistic).await,
            }
        })
        .await
    });
    // Do not wait for the client's background tasks (its TSO stream) to wind down.
    runtime.shutdown_timeout(Duration::from_millis(100));

    match outcome {
        Ok(()) => {
            eprintln!("tikv-mock-compat: {name} scenario passed");
            ExitCode::SUCCESS
        }
        Err(_) => {
            // The panic hook has already printed the failed check.
            eprintln!("tikv-mock-compat: {name} scenario FAILED");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Awaits one client call with a time limit; panics with `what` on an error or a time-out.
async fn op<T>(what: &str, fut: impl Future<Output = tikv_client::Result<T>>) -> T {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what}: client error: {e:?}"),
        Err(_) => panic!("{what}: no result within {OP_TIMEOUT:?}"),
    }
}

fn step(name: &str) {
    eprintln!("  ok  {name}");
}

fn k(s: &str) -> String {
    s.to_owned()
}

fn v(s: &str) -> Value {
    s.as_bytes().to_vec()
}

fn range(start: &str, end: &str) -> BoundRange {
    (k(start)..k(end)).into()
}

fn range_incl(start: &str, end: &str) -> BoundRange {
    (k(start)..=k(end)).into()
}

fn text(bytes: impl Into<Vec<u8>>) -> String {
    let bytes = bytes.into();
    String::from_utf8(bytes.clone()).unwrap_or_else(|_| format!("{bytes:?}"))
}

fn key_text(key: Key) -> String {
    text(Vec::<u8>::from(key))
}

/// Pairs as `(key, value)` strings, in the order the client returned them.
fn pairs(kvs: Vec<KvPair>) -> Vec<(String, String)> {
    kvs.into_iter()
        .map(|KvPair(key, value)| (key_text(key), text(value)))
        .collect()
}

/// Pairs as a sorted map (for batch results, whose order across regions is not defined).
fn pair_map(kvs: Vec<KvPair>) -> BTreeMap<String, String> {
    let n = kvs.len();
    let map: BTreeMap<_, _> = pairs(kvs).into_iter().collect();
    assert_eq!(map.len(), n, "duplicate keys in a batch result: {map:?}");
    map
}

fn keys(ks: Vec<Key>) -> Vec<String> {
    ks.into_iter().map(key_text).collect()
}

/// `(kNN, vNN)` for every `NN` in `nums`, as strings.
fn expect_pairs(nums: impl IntoIterator<Item = u32>) -> Vec<(String, String)> {
    nums.into_iter()
        .map(|n| (format!("k{n:02}"), format!("v{n:02}")))
        .collect()
}

fn expect_keys(nums: impl IntoIterator<Item = u32>) -> Vec<String> {
    nums.into_iter().map(|n| format!("k{n:02}")).collect()
}

async fn connect(pd: &[String], config: Config) -> RawClient {
    op(
        "connect (PD GetMembers / LoadKeyspace)",
        RawClient::new_with_config(pd.to_vec(), config),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

/// API V1, three stores, regions split at [`SPLIT_KEYS`]. No TTL: a V1 TiKV rejects it.
async fn scenario_v1(pd: Vec<String>) {
    eprintln!("API V1 scenario against PD {pd:?}");
    let client = connect(&pd, Config::default().with_timeout(Duration::from_secs(5))).await;
    step("connect (API V1, no keyspace)");
    raw_kv(&client).await;
    cas(&client).await;
}

/// API V2, keyspace DEFAULT: the same operations (the client prefixes every key with
/// `'r' + keyspace id`), the keyspace-wide scans only API V2 has, TTL, and an unknown keyspace.
async fn scenario_v2(pd: Vec<String>) {
    eprintln!("API V2 scenario (keyspace DEFAULT) against PD {pd:?}");
    let config = Config::default()
        .with_timeout(Duration::from_secs(5))
        .with_default_keyspace();
    let client = connect(&pd, config).await;
    step("connect (API V2, keyspace DEFAULT via LoadKeyspace)");

    // `with_keyspace("DEFAULT")` is the same thing spelled out; a second client also checks
    // that the mock serves more than one connection set-up.
    let named = connect(
        &pd,
        Config::default()
            .with_timeout(Duration::from_secs(5))
            .with_keyspace("DEFAULT"),
    )
    .await;
    step("connect a second client with with_keyspace(\"DEFAULT\")");

    raw_kv(&client).await;
    keyspace_wide_scans(&client, &named).await;
    cas(&client).await;
    ttl(&client).await;
    unknown_keyspace(&pd).await;
}

/// Put, get, batch put/get, forward and reverse scans, delete, batch delete, delete range.
///
/// Uses the keys `k00`..`k08` (three regions in the V1 layout) and `zz-tail` (the V1 tail region).
/// Leaves `k00`..`k08` holding `v00`..`v08` when it returns, for the scans that follow.
async fn raw_kv(c: &RawClient) {
    // --- put / get -----------------------------------------------------------------------
    assert_eq!(op("get missing k00", c.get(k("k00"))).await, None);
    op("put k00", c.put(k("k00"), v("old"))).await;
    assert_eq!(op("get k00", c.get(k("k00"))).await, Some(v("old")));
    op("overwrite k00", c.put(k("k00"), v("v00"))).await;
    assert_eq!(op("get k00", c.get(k("k00"))).await, Some(v("v00")));
    op("put empty key value", c.put(k("k00-empty"), Vec::new())).await;
    assert_eq!(
        op("get empty value", c.get(k("k00-empty"))).await,
        Some(Vec::new()),
        "an empty value is a value, not a missing key"
    );
    op("delete k00-empty", c.delete(k("k00-empty"))).await;
    step("put / get / overwrite / empty value");

    // --- batch_put / batch_get across regions ----------------------------------------------
    let batch: Vec<KvPair> = (1..=8)
        .map(|n| KvPair::new(format!("k{n:02}"), format!("v{n:02}")))
        .collect();
    op("batch_put k01..k08", c.batch_put(batch)).await;
    let mut wanted: Vec<String> = (0..=8).map(|n| format!("k{n:02}")).collect();
    wanted.push(k("k045")); // missing: absent from the answer
    let got = op("batch_get k00..k08 + missing", c.batch_get(wanted)).await;
    assert_eq!(
        pair_map(got),
        expect_pairs(0..=8).into_iter().collect::<BTreeMap<_, _>>()
    );
    for n in [1u32, 4, 7] {
        let key = format!("k{n:02}");
        assert_eq!(
            op("get after batch_put", c.get(key.clone())).await,
            Some(v(&format!("v{n:02}"))),
            "{key}"
        );
    }
    step("batch_put / batch_get (all three regions in the V1 layout)");

    // --- forward scans ---------------------------------------------------------------------
    assert_eq!(
        pairs(op("scan k00..k09", c.scan(range("k00", "k09"), 100)).await),
        expect_pairs(0..=8),
        "scan over three regions"
    );
    assert_eq!(
        pairs(op("scan k01..k08 limit 4", c.scan(range("k01", "k08"), 4)).await),
        expect_pairs(1..=4),
        "limited scan crossing the k03 boundary"
    );
    assert_eq!(
        pairs(op("scan k02..=k07", c.scan(range_incl("k02", "k07"), 100)).await),
        expect_pairs(2..=7),
        "inclusive end"
    );
    assert_eq!(
        pairs(op("scan k05..k07 limit 1", c.scan(range("k05", "k07"), 1)).await),
        expect_pairs([5]),
    );
    assert_eq!(
        pairs(op("scan k045..k05", c.scan(range("k045", "k05"), 100)).await),
        vec![],
        "a range holding no key"
    );
    assert_eq!(
        keys(op("scan_keys k00..k09", c.scan_keys(range("k00", "k09"), 100)).await),
        expect_keys(0..=8),
        "key-only scan"
    );
    step("scan: forward, limit, inclusive end, empty range, key-only (crossing V1 regions)");

    // --- reverse scans (inside the region [k03, k06)) ---------------------------------------
    assert_eq!(
        pairs(
            op(
                "scan_reverse k03..=k05",
                c.scan_reverse(range_incl("k03", "k05"), 10)
            )
            .await
        ),
        expect_pairs([5, 4, 3]),
    );
    assert_eq!(
        pairs(
            op(
                "scan_reverse k03..=k05 limit 2",
                c.scan_reverse(range_incl("k03", "k05"), 2)
            )
            .await
        ),
        expect_pairs([5, 4]),
    );
    assert_eq!(
        pairs(
            op(
                "scan_reverse k03..k05",
                c.scan_reverse(range("k03", "k05"), 10)
            )
            .await
        ),
        expect_pairs([4, 3]),
        "exclusive upper bound"
    );
    assert_eq!(
        keys(
            op(
                "scan_keys_reverse k03..=k05",
                c.scan_keys_reverse(range_incl("k03", "k05"), 10)
            )
            .await
        ),
        expect_keys([5, 4, 3]),
    );
    step("scan_reverse / scan_keys_reverse (limit, both bound kinds)");

    // --- point ops in the tail region (V1: [k09, "")) -----------------------------------------
    op("put zz-tail", c.put(k("zz-tail"), v("tail"))).await;
    assert_eq!(
        op("get zz-tail", c.get(k("zz-tail"))).await,
        Some(v("tail"))
    );
    op("delete zz-tail", c.delete(k("zz-tail"))).await;
    assert_eq!(op("get zz-tail", c.get(k("zz-tail"))).await, None);
    step("put / get / delete in the tail region (V1 layout)");

    // --- delete / batch_delete / delete_range ------------------------------------------------
    op("delete k00", c.delete(k("k00"))).await;
    assert_eq!(op("get deleted k00", c.get(k("k00"))).await, None);
    op("delete a missing key", c.delete(k("no-such-key"))).await;
    op(
        "batch_delete k01,k04,k08",
        c.batch_delete(vec![k("k01"), k("k04"), k("k08")]),
    )
    .await;
    let all: Vec<String> = (0..=8).map(|n| format!("k{n:02}")).collect();
    assert_eq!(
        pair_map(op("batch_get after batch_delete", c.batch_get(all.clone())).await),
        expect_pairs([2, 3, 5, 6, 7])
            .into_iter()
            .collect::<BTreeMap<_, _>>()
    );
    op("delete_range k02..k07", c.delete_range(range("k02", "k07"))).await;
    assert_eq!(
        pairs(op("scan after delete_range", c.scan(range("k00", "k09"), 100)).await),
        expect_pairs([7]),
        "delete_range over three regions removes k02,k03,k05,k06 and keeps its end key k07"
    );
    op("delete_range k00..k09", c.delete_range(range("k00", "k09"))).await;
    assert_eq!(
        pairs(op("scan after clearing", c.scan(range("k00", "k09"), 100)).await),
        vec![]
    );
    step("delete / batch_delete / delete_range (crossing V1 regions)");

    // Leave k00..k08 in place for what follows.
    let batch: Vec<KvPair> = (0..=8)
        .map(|n| KvPair::new(format!("k{n:02}"), format!("v{n:02}")))
        .collect();
    op("batch_put k00..k08 again", c.batch_put(batch)).await;
}

/// `compare_and_swap` and atomic put/delete (`for_cas`) through `with_atomic_for_cas()`.
async fn cas(c: &RawClient) {
    let a = c.with_atomic_for_cas();
    let key = || k("cas-key");
    let none = || None::<Value>;

    assert_eq!(
        op("cas absent -> 1", a.compare_and_swap(key(), none(), v("1"))).await,
        (None, true)
    );
    assert_eq!(op("get after cas", a.get(key())).await, Some(v("1")));
    assert_eq!(
        op(
            "cas expects absent, is 1",
            a.compare_and_swap(key(), none(), v("2"))
        )
        .await,
        (Some(v("1")), false)
    );
    assert_eq!(
        op(
            "cas expects x, is 1",
            a.compare_and_swap(key(), Some(v("x")), v("3"))
        )
        .await,
        (Some(v("1")), false)
    );
    assert_eq!(op("get after failed cas", a.get(key())).await, Some(v("1")));
    assert_eq!(
        op(
            "cas 1 -> 2",
            a.compare_and_swap(key(), Some(v("1")), v("2"))
        )
        .await,
        (Some(v("1")), true)
    );
    assert_eq!(op("get after cas", a.get(key())).await, Some(v("2")));

    op("atomic put", a.put(key(), v("4"))).await;
    assert_eq!(op("get after atomic put", a.get(key())).await, Some(v("4")));
    assert_eq!(
        op(
            "cas 4 -> 5",
            a.compare_and_swap(key(), Some(v("4")), v("5"))
        )
        .await,
        (Some(v("4")), true)
    );
    op("atomic delete", a.delete(key())).await;
    assert_eq!(op("get after atomic delete", a.get(key())).await, None);
    assert_eq!(
        op(
            "cas absent -> 6 after delete",
            a.compare_and_swap(key(), none(), v("6"))
        )
        .await,
        (None, true)
    );
    op("atomic delete", a.delete(key())).await;
    step("compare_and_swap (absent, mismatch, match) / atomic put / atomic delete");
}

/// API V2 only: scans with no bounds, which the client bounds by the keyspace's own range.
/// Expects `k00`..`k08` to be the only keys in keyspace DEFAULT.
async fn keyspace_wide_scans(c: &RawClient, named: &RawClient) {
    assert_eq!(
        pairs(op("scan .. (whole keyspace)", c.scan(.., 100)).await),
        expect_pairs(0..=8),
        "an unbounded scan sees exactly the keyspace's keys"
    );
    assert_eq!(
        pairs(op("scan k05.. (open end)", c.scan(k("k05").., 100)).await),
        expect_pairs(5..=8),
    );
    assert_eq!(
        pairs(op("scan_reverse .. limit 3", c.scan_reverse(.., 3)).await),
        expect_pairs([8, 7, 6]),
    );
    assert_eq!(
        pairs(op("scan .. through the second client", named.scan(.., 100)).await),
        expect_pairs(0..=8),
        "with_keyspace(\"DEFAULT\") sees the same data"
    );
    step("keyspace-wide scans (unbounded, open end, reverse; second client)");
}

/// API V2 only: TTL on put, batch put, its read-back, and expiry.
async fn ttl(c: &RawClient) {
    // Remaining TTL of a long-lived key.
    op(
        "put_with_ttl 600",
        c.put_with_ttl(k("ttl-long"), v("l"), 600),
    )
    .await;
    assert_eq!(op("get ttl-long", c.get(k("ttl-long"))).await, Some(v("l")));
    let left = op(
        "get_key_ttl_secs ttl-long",
        c.get_key_ttl_secs(k("ttl-long")),
    )
    .await;
    assert!(
        matches!(left, Some(t) if (590..=600).contains(&t)),
        "remaining TTL of a 600 s key: {left:?}"
    );
    // No TTL reads back as Some(0); a missing key as None.
    op("put no ttl", c.put(k("ttl-none"), v("n"))).await;
    assert_eq!(
        op(
            "get_key_ttl_secs ttl-none",
            c.get_key_ttl_secs(k("ttl-none"))
        )
        .await,
        Some(0)
    );
    assert_eq!(
        op(
            "get_key_ttl_secs missing",
            c.get_key_ttl_secs(k("ttl-missing"))
        )
        .await,
        None
    );
    // Per-pair TTLs in one batch.
    op(
        "batch_put_with_ttl",
        c.batch_put_with_ttl(
            vec![
                KvPair::new(k("ttl-b-long"), v("bl")),
                KvPair::new(k("ttl-b-none"), v("bn")),
                KvPair::new(k("ttl-b-short"), v("bs")),
            ],
            vec![600, 0, 2],
        ),
    )
    .await;
    let left = op(
        "get_key_ttl_secs ttl-b-long",
        c.get_key_ttl_secs(k("ttl-b-long")),
    )
    .await;
    assert!(
        matches!(left, Some(t) if (590..=600).contains(&t)),
        "remaining TTL of a batch-put 600 s key: {left:?}"
    );
    assert_eq!(
        op(
            "get_key_ttl_secs ttl-b-none",
            c.get_key_ttl_secs(k("ttl-b-none"))
        )
        .await,
        Some(0)
    );
    step("put_with_ttl / batch_put_with_ttl / get_key_ttl_secs");

    // Expiry. TTLs count whole seconds, so a 2 s key is alive for at least one second after the
    // put and gone three seconds after it.
    op("put_with_ttl 2", c.put_with_ttl(k("ttl-short"), v("s"), 2)).await;
    assert_eq!(
        op("get ttl-short", c.get(k("ttl-short"))).await,
        Some(v("s"))
    );
    let left = op(
        "get_key_ttl_secs ttl-short",
        c.get_key_ttl_secs(k("ttl-short")),
    )
    .await;
    assert!(
        matches!(left, Some(1..=2)),
        "remaining TTL of a 2 s key: {left:?}"
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(
        op("get expired ttl-short", c.get(k("ttl-short"))).await,
        None
    );
    assert_eq!(
        op(
            "get_key_ttl_secs expired",
            c.get_key_ttl_secs(k("ttl-short"))
        )
        .await,
        None
    );
    assert_eq!(
        op("get expired ttl-b-short", c.get(k("ttl-b-short"))).await,
        None
    );
    let got = op(
        "batch_get with expired keys",
        c.batch_get(vec![
            k("ttl-short"),
            k("ttl-b-short"),
            k("ttl-long"),
            k("ttl-b-none"),
        ]),
    )
    .await;
    assert_eq!(
        pair_map(got),
        BTreeMap::from([(k("ttl-b-none"), k("bn")), (k("ttl-long"), k("l")),]),
        "batch_get skips expired keys"
    );
    assert_eq!(
        keys(
            op(
                "scan_keys ttl-..ttl.",
                c.scan_keys(range("ttl-", "ttl."), 100)
            )
            .await
        ),
        vec![
            k("ttl-b-long"),
            k("ttl-b-none"),
            k("ttl-long"),
            k("ttl-none")
        ],
        "scans skip expired keys"
    );
    step("TTL expiry (get, get_key_ttl_secs, batch_get, scan)");
}

/// API V2 only: a client for a keyspace PD does not know must fail to start (not hang, not
/// silently use some other keyspace).
async fn unknown_keyspace(pd: &[String]) {
    let config = Config::default()
        .with_timeout(Duration::from_secs(5))
        .with_keyspace("no_such_keyspace");
    let result = tokio::time::timeout(
        BAD_KEYSPACE_TIMEOUT,
        RawClient::new_with_config(pd.to_vec(), config),
    )
    .await;
    match result {
        Err(_) => {
            panic!("connect with an unknown keyspace: no answer within {BAD_KEYSPACE_TIMEOUT:?}")
        }
        Ok(Ok(_)) => panic!("connect with an unknown keyspace succeeded"),
        Ok(Err(e)) => eprintln!("      (unknown keyspace refused: {e})"),
    }
    step("connect with an unknown keyspace fails");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into_iter()
    }

    #[test]
    fn parses_flags() {
        match parse_args(args(&["--pd", "127.0.0.1:1", "--api-version", "2"])).unwrap() {
            Action::Run { pd, api_version } => {
                assert_eq!(pd, vec!["127.0.0.1:1"]);
                assert_eq!(api_version, 2);
            }
            other => panic!("{other:?}"),
        }
        match parse_args(args(&["--pd=a:1,b:2", "--api-version=1"])).unwrap() {
            Action::Run { pd, api_version } => {
                assert_eq!(pd, vec!["a:1", "b:2"]);
                assert_eq!(api_version, 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_args(args(&["--pd", "a:1", "--api-version", "3"])).is_err());
        assert!(parse_args(args(&["--pd", "a:1"])).is_err());
        assert!(matches!(
            parse_args(args(&["--print-split-keys"])).unwrap(),
            Action::PrintSplitKeys
        ));
    }

    #[test]
    fn split_keys_bracket_the_test_keys() {
        // Test keys k00..k08 must span three regions and leave the tail region empty.
        assert_eq!(SPLIT_KEYS, &["k03", "k06", "k09"]);
        assert!(expect_keys(0..=8)
            .iter()
            .all(|key| key.as_str() < SPLIT_KEYS[2]));
    }
}
