//! `maas-rackd`: a rack controller that reaches its region over the
//! network rack protocol.
//!
//! ```text
//! maas-rackd --region-url http://10.0.0.1:5240 --secret SECRET --address 10.0.0.2
//!            [--state-dir DIR] [--http-listen ADDR:PORT] [--tftp-listen ADDR:PORT]
//!            [--dhcp-listen ADDR:PORT] [--boot-loaders DIR] [--hostname NAME] [--json-logs]
//! ```
//!
//! The secret is `maas init`'s "rack secret" (also `MAAS_RACK_SECRET`). Each
//! `--*-listen` takes `off` to turn that service off.

#![allow(clippy::print_stderr)] // usage errors

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use maas_power::{Executor, ExecutorConfig, builtin_registry};
use maas_rack::{HttpRegionLink, Rack, RackPower, RackSettings};

const USAGE: &str = "usage: maas-rackd --region-url URL --secret SECRET --address IPV4 [--state-dir DIR] [--http-listen ADDR:PORT|off] [--tftp-listen ADDR:PORT|off] [--dhcp-listen ADDR:PORT|off] [--boot-loaders DIR] [--hostname NAME] [--json-logs]";

fn listen(v: &str, flag: &str) -> anyhow::Result<Option<SocketAddr>> {
    if v == "off" {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .with_context(|| format!("--{flag} {v:?}: expected ADDRESS:PORT or off"))
}

async fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut region = None;
    let mut secret = std::env::var("MAAS_RACK_SECRET").ok();
    let mut address: Option<Ipv4Addr> = None;
    let mut state = PathBuf::from("/var/lib/maas-rs/rack");
    let (mut http, mut tftp, mut dhcp, mut loaders, mut hostname) = (None, None, None, None, None);
    let mut json = false;
    while let Some(flag) = args.next() {
        if flag == "--json-logs" {
            json = true;
            continue;
        }
        let v = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--region-url" => region = Some(v),
            "--secret" => secret = Some(v),
            "--address" => {
                address = Some(
                    v.parse()
                        .with_context(|| format!("--address {v:?}: expected an IPv4 address"))?,
                )
            }
            "--state-dir" => state = PathBuf::from(v),
            "--http-listen" => http = Some(listen(&v, "http-listen")?),
            "--tftp-listen" => tftp = Some(listen(&v, "tftp-listen")?),
            "--dhcp-listen" => dhcp = Some(listen(&v, "dhcp-listen")?),
            "--boot-loaders" => loaders = Some(PathBuf::from(v)),
            "--hostname" => hostname = Some(v),
            other => bail!("unknown option {other}\n{USAGE}"),
        }
    }
    init_logs(json);
    let region = region.with_context(|| format!("--region-url is required\n{USAGE}"))?;
    let secret =
        secret.with_context(|| format!("--secret (or MAAS_RACK_SECRET) is required\n{USAGE}"))?;
    let address = address.with_context(|| format!("--address is required\n{USAGE}"))?;
    let hostname = hostname.unwrap_or_else(|| format!("rack-{address}").replace('.', "-"));
    let mut s = RackSettings::new(&hostname, &secret, address, state.clone());
    s.region_url = region.clone();
    s.images = state.join("images");
    if let Some(h) = http.flatten() {
        s.http_listen = h;
    }
    if let Some(t) = tftp {
        s.tftp_listen = t;
    }
    if let Some(d) = dhcp {
        s.dhcp_listen = d;
    }
    s.boot_loaders = loaders;
    let link = HttpRegionLink::new(&region);
    let rack = Arc::new(
        Rack::start(s, Arc::new(link.clone()))
            .await
            .context("starting the rack")?,
    );
    let power = Arc::new(RackPower::new(
        builtin_registry(),
        Executor::new(ExecutorConfig::default()),
    ));
    let jobs = tokio::spawn(maas_rack::serve_power(link, rack.clone(), power));
    tracing::info!(%region, http = %rack.http_addr(), "rack running");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    jobs.abort();
    Ok(())
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maas-rackd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
