//! Runs maas-dhcp alone from a small TOML file (see `dhcp-server.toml`).
//!
//! ```text
//! dhcp-server [--check] CONFIG.toml
//! ```
//!
//! `--check` parses and validates the file and exits. Otherwise the server
//! runs until SIGTERM or Ctrl-C, then logs its counters. `RUST_LOG=debug`
//! shows every decision.

mod config;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use maas_dhcp::{DhcpHandler, DhcpServer, FileLeaseStore};
use tracing::{error, info};

fn usage() -> ExitCode {
    let _ = writeln!(
        std::io::stderr(),
        "usage: dhcp-server [--check] CONFIG.toml"
    );
    ExitCode::from(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.first().is_some_and(|a| a == "--check");
    if check {
        args.remove(0);
    }
    let [path] = args.as_slice() else {
        return usage();
    };
    let loaded = match config::load(&PathBuf::from(path)) {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if check {
        let _ = writeln!(std::io::stdout(), "{path}: ok");
        return ExitCode::SUCCESS;
    }
    let store = FileLeaseStore::with_durability(&loaded.file.lease_file, loaded.durability);
    let handler = match DhcpHandler::new(loaded.config, loaded.hosts, store).await {
        Ok(h) => h,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = if let Some(ifname) = &loaded.file.interface {
        DhcpServer::bind_interface(ifname, 67, handler)
    } else {
        bind(loaded.file.listen, handler)
    };
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: {e}: {:?}",
                std::error::Error::source(&e)
            );
            return ExitCode::FAILURE;
        }
    };
    let metrics = server.metrics();
    let _adverts = router_adverts(&loaded.file).map(tokio::spawn);
    info!(
        interface = loaded.file.interface.as_deref().unwrap_or(""),
        listen = ?loaded.file.listen,
        leases = %loaded.file.lease_file.display(),
        "serving DHCP"
    );
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: SIGTERM handler: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = tokio::select! {
        r = server.serve() => match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = %e, "server stopped");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        _ = term.recv() => ExitCode::SUCCESS,
    };
    let counters: Vec<String> = metrics
        .snapshot()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    info!(counters = counters.join(" "), "stopped");
    code
}

fn bind<H: maas_dhcp::HostLookup, S: maas_dhcp::LeaseStore>(
    listen: Option<std::net::SocketAddr>,
    handler: DhcpHandler<H, S>,
) -> Result<DhcpServer<H, S>, maas_dhcp::DhcpError> {
    let addr = listen.unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 67)));
    let io = |source| maas_dhcp::DhcpError::Socket {
        interface: addr.to_string(),
        source,
    };
    let s = std::net::UdpSocket::bind(addr).map_err(io)?;
    s.set_broadcast(true).map_err(io)?;
    s.set_nonblocking(true).map_err(io)?;
    Ok(DhcpServer::from_socket(
        tokio::net::UdpSocket::from_std(s).map_err(io)?,
        handler,
    ))
}

/// The router-advertisement task, when the file and the interface call
/// for one.
fn router_adverts(
    file: &config::File,
) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
    let ifname = file.interface.as_deref()?;
    let ra = file.router_advertisements.as_ref();
    if ra.and_then(|r| r.enabled) == Some(false) {
        return None;
    }
    let Some(mut cfg) = maas_dhcp::RouterAdvertConfig::from_interface(ifname) else {
        info!(
            interface = ifname,
            "no global IPv6 address: no router advertisements"
        );
        return None;
    };
    if let Some(r) = ra {
        if let Some(s) = r.interval_secs {
            cfg.interval = std::time::Duration::from_secs(s.max(4));
        }
        cfg.router_lifetime = r.router_lifetime_secs.unwrap_or(0);
        cfg.managed = r.managed.unwrap_or(false);
        cfg.other = r.other.unwrap_or(false);
        cfg.mtu = r.mtu;
        let auto = r.autonomous.unwrap_or(false);
        for p in &mut cfg.prefixes {
            p.1 = auto;
        }
    }
    Some(async move {
        if let Err(e) = maas_dhcp::run_router_adverts(cfg).await {
            error!(error = %e, source = ?std::error::Error::source(&e), "router advertisements stopped");
        }
    })
}
