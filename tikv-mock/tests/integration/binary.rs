//! The `tikv-mock` binary as another process sees it: the PD endpoint on the first stdout line,
//! a PD that answers, a clean exit on SIGTERM, and the exit codes of `--help` and bad flags.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tikv_proto::pdpb;

const BIN: &str = env!("CARGO_BIN_EXE_tikv-mock");

/// Bound on every wait for the child; generous because the machine may be busy compiling.
const WAIT: Duration = Duration::from_secs(30);

/// Kills the child if a test fails before it exited, so no server outlives the test.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Polls for the child's exit until `WAIT` has passed.
fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "tikv-mock did not exit within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the binary to completion and returns (exit status, stdout, stderr).
fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Running(
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let status = wait_exit(&mut child.0);
    let (mut out, mut err) = (String::new(), String::new());
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

#[test]
fn serves_pd_and_exits_cleanly_on_sigterm() {
    let mut child = Running(
        Command::new(BIN)
            .args([
                "--pd-addr",
                "127.0.0.1:0",
                "--stores",
                "2",
                "--split-keys",
                "b,m",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first_line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let endpoint = first_line.trim_end().to_owned();
    let addr: std::net::SocketAddr = endpoint
        .parse()
        .unwrap_or_else(|_| panic!("first stdout line {first_line:?} is not HOST:PORT"));
    assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_ne!(
        addr.port(),
        0,
        "the bound port is printed, not the requested 0"
    );

    // The endpoint is printed only once PD listens.
    std::net::TcpStream::connect(addr).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut pd = tikv_proto::pdpb::pd_client::PdClient::connect(format!("http://{endpoint}"))
            .await
            .unwrap();
        // GetMembers must name a leader whose client URL is the printed endpoint: every PD
        // client dials it next.
        let members = pd
            .get_members(pdpb::GetMembersRequest {
                header: Some(pdpb::RequestHeader::default()),
            })
            .await
            .unwrap()
            .into_inner();
        let leader = members.leader.expect("GetMembers names a leader");
        assert!(
            leader
                .client_urls
                .iter()
                .any(|url| url == &format!("http://{endpoint}")),
            "leader client URLs {:?} do not include the endpoint {endpoint}",
            leader.client_urls
        );
        assert!(!members.members.is_empty());
        let cluster_id = members.header.unwrap_or_default().cluster_id;
        assert_ne!(cluster_id, 0);
        let header = Some(pdpb::RequestHeader {
            cluster_id,
            ..Default::default()
        });

        // --stores 2.
        let stores = pd
            .get_all_stores(pdpb::GetAllStoresRequest {
                header: header.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .stores;
        assert_eq!(stores.len(), 2);

        // --split-keys b,m: the key "c" lies in ["b", "m").
        let region = pd
            .get_region(pdpb::GetRegionRequest {
                header,
                region_key: bytes::Bytes::from_static(b"c"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .region
            .expect("PD knows the region of \"c\"");
        assert_eq!(
            (region.start_key.as_ref(), region.end_key.as_ref()),
            (&b"b"[..], &b"m"[..])
        );
    });

    let pid = child.0.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let status = wait_exit(&mut child.0);
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
}

#[test]
fn help_exits_zero_with_usage_on_stdout() {
    let (status, out, _) = run_to_exit(&["--help"]);
    assert_eq!(status.code(), Some(0));
    assert!(out.starts_with("usage: tikv-mock"), "{out}");
    assert!(out.contains("--pd-addr"));
}

#[test]
fn version_exits_zero() {
    let (status, out, _) = run_to_exit(&["--version"]);
    assert_eq!(status.code(), Some(0));
    assert!(out.starts_with("tikv-mock "), "{out}");
}

#[test]
fn bad_flags_exit_two_with_usage_on_stderr() {
    for args in [
        &["--bogus"][..],
        &["--stores", "zero"],
        &["--api-version", "9"],
    ] {
        let (status, out, err) = run_to_exit(args);
        assert_eq!(status.code(), Some(2), "{args:?}");
        assert!(out.is_empty(), "{args:?} printed {out:?} on stdout");
        assert!(err.contains("usage: tikv-mock"), "{args:?}: {err}");
    }
}

#[test]
fn a_port_in_use_exits_one() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, out, err) = run_to_exit(&["--pd-addr", &addr, "--stores", "1"]);
    assert_eq!(status.code(), Some(1), "stderr: {err}");
    assert!(out.is_empty(), "nothing is announced: {out:?}");
    assert!(err.contains(&addr), "{err}");
}
