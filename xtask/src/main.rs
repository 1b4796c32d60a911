//! Developer tasks for the workspace.
//!
//! `cargo xtask codegen` regenerates `tikv-proto/src/generated/` from the `.proto` files in
//! `proto/`. It uses protox (a pure-Rust protobuf compiler), so no system `protoc` is needed, and
//! its output is deterministic: CI regenerates and fails on any diff.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("codegen") => codegen(),
        _ => {
            eprintln!("usage: cargo xtask codegen");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn codegen() -> Result<(), Box<dyn std::error::Error>> {
    let root = workspace_root();
    let proto_dir = root.join("proto");
    let out_dir = root.join("tikv-proto/src/generated");

    let mut files: Vec<String> = std::fs::read_dir(&proto_dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".proto"))
        .collect();
    // Sorted input keeps the descriptor set, and so the output, independent of directory order.
    files.sort();

    let fds = protox::compile(&files, [&proto_dir])?;

    if out_dir.exists() {
        std::fs::remove_dir_all(&out_dir)?;
    }
    std::fs::create_dir_all(&out_dir)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(true)
        .out_dir(&out_dir)
        // Every `bytes` field becomes `bytes::Bytes`; see tikv-proto's crate docs for why.
        .bytes(".")
        .compile_fds(fds)?;

    println!(
        "regenerated {} from {} proto files",
        out_dir.display(),
        files.len()
    );
    Ok(())
}
