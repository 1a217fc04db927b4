//! Serves a directory over TFTP.
//!
//! ```text
//! tftp-server [--address 0.0.0.0] [--port 69] --root DIR
//!             [--max-transfers 1024] [--max-blksize 65464] [--max-window 64]
//!             [--timeout-ms 1000] [--retries 5]
//! ```
//!
//! Logs go to stderr (`RUST_LOG=maas_tftp=debug` for one line per transfer).
//! SIGINT or SIGTERM stop accepting requests and let running transfers end.

#![allow(clippy::print_stderr)] // usage errors

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use maas_tftp::{DirectoryProvider, TftpConfig, TftpServer};

struct Args {
    address: IpAddr,
    port: u16,
    root: Option<String>,
    config: TftpConfig,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        address: IpAddr::from([0, 0, 0, 0]),
        port: 69,
        root: None,
        config: TftpConfig::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--address" => a.address = value.parse().map_err(|e| bad(&e))?,
            "--port" => a.port = value.parse().map_err(|e| bad(&e))?,
            "--root" => a.root = Some(value),
            "--max-transfers" => a.config.max_transfers = value.parse().map_err(|e| bad(&e))?,
            "--max-blksize" => a.config.max_block_size = value.parse().map_err(|e| bad(&e))?,
            "--max-window" => a.config.max_window_size = value.parse().map_err(|e| bad(&e))?,
            "--timeout-ms" => {
                a.config.timeout = Duration::from_millis(value.parse().map_err(|e| bad(&e))?)
            }
            "--retries" => a.config.max_retries = value.parse().map_err(|e| bad(&e))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "tftp-server: {e}\nusage: tftp-server [--address IP] [--port N] --root DIR [--max-transfers N] [--max-blksize N] [--max-window N] [--timeout-ms N] [--retries N]"
            );
            return ExitCode::from(2);
        }
    };
    let Some(root) = args.root else {
        eprintln!("tftp-server: --root DIR is required");
        return ExitCode::from(2);
    };
    let provider = match DirectoryProvider::new(&root) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tftp-server: --root {root}: {e}");
            return ExitCode::from(2);
        }
    };
    let addr = SocketAddr::new(args.address, args.port);
    let server = match TftpServer::bind(addr, provider, args.config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tftp-server: cannot bind {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%addr, %root, "serving");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match server.serve_until(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tftp-server: {e}");
            ExitCode::FAILURE
        }
    }
}
