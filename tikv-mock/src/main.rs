//! The `tikv-mock` binary: serves an in-memory TiKV + PD cluster ([`tikv_mock::MockCluster`])
//! to other processes, for testing any TiKV client (this workspace's, client-go, the published
//! client-rust through `tikv-mock/compat`) without a real cluster.
//!
//! Protocol with the parent process: the PD endpoint (`HOST:PORT`) is the first line on stdout,
//! written once every server is listening; a human summary goes to stderr; SIGINT or SIGTERM
//! shuts the cluster down and exits 0. Exit code 2 means bad flags, 1 a failure to start (a
//! port in use, for example).
//!
//! Flags are parsed by hand: the binary stays free of an argument-parsing dependency.

use std::ffi::OsString;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use tikv_mock::{ApiVersion, MockCluster, TIKV_VERSION};

const USAGE: &str = r"usage: tikv-mock [OPTIONS]

Serves an in-memory TiKV + PD cluster over the real gRPC protocol on loopback ports. Prints the
PD endpoint (HOST:PORT) as the first line on stdout, then serves until SIGINT or SIGTERM.

options:
  --pd-addr HOST:PORT       address of the PD server (default 127.0.0.1:2379; port 0 picks a
                            free port)
  --stores N                number of TiKV stores (default 3)
  --api-version 1|2         storage API version (default 1)
  --keyspace NAME           create an ENABLED keyspace (repeatable; DEFAULT always exists)
  --split-keys K1,K2,...    initial region boundaries, comma separated, as keys appear on the
                            wire (repeatable); \xNN writes any byte (API V2 keys start with
                            r or x and a 3-byte keyspace id: r\x00\x00\x00b), \\ a backslash
  --auto-split-keys N       split a region once it holds more than N keys
  -h, --help                print this help and exit
  -V, --version             print the version and exit";

/// Exit code for bad flags (as shells and most CLI tools use).
const EXIT_USAGE: u8 = 2;

/// How long shutdown waits for the runtime's remaining tasks before exiting anyway.
const RUNTIME_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    Serve(Options),
    Help,
    Version,
}

/// Settings of the served cluster.
#[derive(Debug, PartialEq)]
struct Options {
    pd_addr: SocketAddr,
    stores: usize,
    api_version: ApiVersion,
    keyspaces: Vec<String>,
    split_keys: Vec<Vec<u8>>,
    auto_split_keys: Option<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pd_addr: SocketAddr::from(([127, 0, 0, 1], 2379)),
            stores: 3,
            api_version: ApiVersion::V1,
            keyspaces: Vec::new(),
            split_keys: Vec::new(),
            auto_split_keys: None,
        }
    }
}

fn main() -> ExitCode {
    match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!(
                "tikv-mock {} (reports TiKV {TIKV_VERSION})",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(options)) => serve(options),
        Err(message) => {
            eprintln!("tikv-mock: {message}\n\n{USAGE}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Parses the arguments after the program name. Accepts `--flag value` and `--flag=value`.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .ok_or_else(|| format!("{flag} needs a value"))?
                    .into_string()
                    .map_err(|a| format!("the value {a:?} of {flag} is not valid UTF-8")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            "--pd-addr" => options.pd_addr = parse_addr(&value()?)?,
            "--stores" => options.stores = parse_positive("--stores", &value()?)?,
            "--api-version" => {
                options.api_version = match value()?.as_str() {
                    "1" => ApiVersion::V1,
                    "2" => ApiVersion::V2,
                    other => return Err(format!("--api-version must be 1 or 2, not {other:?}")),
                }
            }
            "--keyspace" => {
                let name = value()?;
                if name.is_empty() {
                    return Err("--keyspace needs a non-empty name".to_owned());
                }
                options.keyspaces.push(name);
            }
            "--split-keys" => {
                for key in value()?.split(',') {
                    // An empty key is where the first region already starts.
                    if !key.is_empty() {
                        options.split_keys.push(unescape_key(key)?);
                    }
                }
            }
            "--auto-split-keys" => {
                options.auto_split_keys = Some(parse_positive("--auto-split-keys", &value()?)?);
            }
            _ if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
            _ => return Err(format!("unexpected argument {flag:?}")),
        }
    }
    Ok(Command::Serve(options))
}

/// A split key: its UTF-8 bytes, except that `\xNN` is the byte NN (hex) and `\\` a backslash,
/// so that keys with bytes a command line cannot carry (NUL, in every API V2 key) or commas
/// can be given.
fn unescape_key(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            key.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => {
                key.push(b'\\');
                i += 2;
            }
            Some(b'x') => {
                let byte = bytes
                    .get(i + 2..i + 4)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| {
                        format!("bad escape in split key {text:?}: \\x needs two hex digits")
                    })?;
                key.push(byte);
                i += 4;
            }
            _ => {
                return Err(format!(
                    "bad escape in split key {text:?}: use \\xNN or \\\\"
                ));
            }
        }
    }
    Ok(key)
}

/// `HOST:PORT`, where HOST is an IP address or a name that resolves (e.g. `localhost`).
fn parse_addr(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| format!("--pd-addr must be HOST:PORT, not {value:?}"))
}

fn parse_positive(flag: &str, value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} must be a positive integer, not {value:?}")),
    }
}

/// Runs the cluster on a multi-threaded runtime until a shutdown signal.
fn serve(options: Options) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tikv-mock: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(options));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_GRACE);
    code
}

async fn run(options: Options) -> ExitCode {
    // Listen for signals before announcing the endpoint: a parent that signals as soon as it
    // has read the line must get a clean shutdown, not the default action of the signal.
    let mut shutdown = match ShutdownSignal::install() {
        Ok(signal) => signal,
        Err(e) => {
            eprintln!("tikv-mock: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mut builder = MockCluster::builder()
        .pd_addr(options.pd_addr)
        .stores(options.stores)
        .api_version(options.api_version)
        .split_keys(&options.split_keys);
    for name in &options.keyspaces {
        builder = builder.keyspace(name.clone());
    }
    if let Some(n) = options.auto_split_keys {
        builder = builder.auto_split_keys(n);
    }
    let cluster = match builder.start().await {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("tikv-mock: cannot start the cluster: {e}");
            return ExitCode::FAILURE;
        }
    };

    let Some(pd) = cluster.pd_endpoints().into_iter().next() else {
        eprintln!("tikv-mock: the cluster has no PD endpoint");
        cluster.shutdown().await;
        return ExitCode::FAILURE;
    };
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{pd}").and_then(|()| stdout.flush()) {
        // The parent may have closed the pipe; it can still find PD at the address it chose.
        eprintln!("tikv-mock: cannot write the PD endpoint to stdout: {e}");
    }
    drop(stdout);
    eprintln!("{}", summary(&cluster, &pd, options.api_version));

    let signal = shutdown.recv().await;
    eprintln!("tikv-mock: {signal}, shutting down");
    cluster.shutdown().await;
    ExitCode::SUCCESS
}

/// What the operator sees on stderr: where everything listens and how the key space is split.
fn summary(cluster: &MockCluster, pd: &str, api_version: ApiVersion) -> String {
    let mut out = format!(
        "tikv-mock {} serving (TiKV {TIKV_VERSION}, API {api_version:?}, cluster id {})\n  PD     {pd}",
        env!("CARGO_PKG_VERSION"),
        cluster.cluster_id()
    );
    for id in cluster.store_ids() {
        let addr = cluster.store_address(id).unwrap_or_default();
        out.push_str(&format!("\n  store  {id:<4} {addr}"));
    }
    for region in cluster.regions() {
        let epoch = region.region_epoch.unwrap_or_default();
        let stores: Vec<String> = region
            .peers
            .iter()
            .map(|p| p.store_id.to_string())
            .collect();
        out.push_str(&format!(
            "\n  region {:<4} [\"{}\", \"{}\") version {} conf_ver {} stores {}",
            region.id,
            region.start_key.escape_ascii(),
            region.end_key.escape_ascii(),
            epoch.version,
            epoch.conf_ver,
            stores.join(",")
        ));
    }
    out
}

/// SIGINT or SIGTERM (Ctrl-C elsewhere).
#[derive(Debug)]
struct ShutdownSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignal {
    #[cfg(unix)]
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignal {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Self> {
        Ok(ShutdownSignal {})
    }

    /// Waits for the first signal and names it.
    #[cfg(unix)]
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults() {
        assert_eq!(parse(&[]), Ok(Command::Serve(Options::default())));
    }

    #[test]
    fn every_flag_in_both_forms() {
        let expected = Options {
            pd_addr: "127.0.0.1:0".parse().unwrap(),
            stores: 2,
            api_version: ApiVersion::V2,
            keyspaces: vec!["a".to_owned(), "b".to_owned()],
            split_keys: vec![b"b".to_vec(), b"m".to_vec(), b"x".to_vec()],
            auto_split_keys: Some(100),
        };
        let spaced = parse(&[
            "--pd-addr",
            "127.0.0.1:0",
            "--stores",
            "2",
            "--api-version",
            "2",
            "--keyspace",
            "a",
            "--keyspace",
            "b",
            "--split-keys",
            "b,m",
            "--split-keys",
            "x,",
            "--auto-split-keys",
            "100",
        ]);
        assert_eq!(spaced, Ok(Command::Serve(expected)));
        let inline = parse(&["--stores=5", "--split-keys=a=b,c"]);
        let Ok(Command::Serve(o)) = inline else {
            panic!("{inline:?}");
        };
        assert_eq!(o.stores, 5);
        assert_eq!(o.split_keys, vec![b"a=b".to_vec(), b"c".to_vec()]);
        let Ok(Command::Serve(o)) = parse(&["--pd-addr", "localhost:2379"]) else {
            panic!("localhost resolves");
        };
        assert_eq!(o.pd_addr.port(), 2379);
    }

    #[test]
    fn split_keys_take_escapes() {
        let Ok(Command::Serve(o)) = parse(&[r"--split-keys=r\x00\x00\x01a,a\x2Cb,c\\d,\xff"])
        else {
            panic!("escapes parse");
        };
        assert_eq!(
            o.split_keys,
            vec![
                b"r\x00\x00\x01a".to_vec(),
                b"a,b".to_vec(),
                b"c\\d".to_vec(),
                vec![0xff]
            ]
        );
        for bad in [r"a\", r"a\q", r"\x0", r"\xzz"] {
            assert!(unescape_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn help_and_version_win() {
        assert_eq!(parse(&["--stores", "2", "--help"]), Ok(Command::Help));
        assert_eq!(parse(&["-h"]), Ok(Command::Help));
        assert_eq!(parse(&["--version"]), Ok(Command::Version));
        assert_eq!(parse(&["-V"]), Ok(Command::Version));
    }

    #[test]
    fn bad_flags_are_rejected() {
        for bad in [
            &["--bogus"][..],
            &["extra"],
            &["--stores"],
            &["--stores", "0"],
            &["--stores", "-1"],
            &["--stores", "three"],
            &["--api-version", "3"],
            &["--pd-addr", "nonsense"],
            &["--pd-addr", "127.0.0.1"],
            &["--keyspace", ""],
            &["--auto-split-keys", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }
}
