//! `maas`: the all-in-one region + rack.
//!
//! ```text
//! maas demo [--machines N] [--keep-running]
//! maas init [--data-dir DIR] [--admin NAME] [--password PW]
//! maas run  [--data-dir DIR] [--api-listen ADDR:PORT] [--rack-address IP]
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use maas::allinone::{AllInOne, admin_key, open_store};
use maas::demo::{Demo, Options};

const USAGE: &str = "usage:
  maas demo [--machines N] [--keep-running] [--api-listen ADDR:PORT]
            [--kernel-kib K] [--initrd-kib K] [--squashfs-kib K]   (stand-in boot file sizes)
            [--network-rack]   (the rack speaks to the region over HTTP)
  maas init [--data-dir DIR] [--admin NAME] [--password PW]
  maas run  [--config FILE] [--data-dir DIR] [--api-listen ADDR:PORT] [--rack-address IP] [--no-dhcp]
  maas region [--data-dir DIR] [--api-listen ADDR:PORT]   (the region alone; racks: maas-rackd)
  maas login PROFILE URL API_KEY | logout PROFILE
  maas [--profile P] [--json] machines list|show ID|add k=v...|allocate k=v...|commission|deploy|release|power-on|power-off|abort ID
  maas [--profile P] [--json] subnets|vlans|zones|fabrics list | events [--machine ID] [--limit N]
  maas completions bash

Environment: MAAS_DATA_DIR, MAAS_API_LISTEN, MAAS_RACK_ADDRESS, MAAS_LOG_FORMAT
(override the config file; flags override both), RUST_LOG (log filter).
The config file's keys are documented in daemons/maas/maas.toml.";

struct Args {
    command: String,
    flags: Vec<(String, Option<String>)>,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut it = std::env::args().skip(1);
        let command = it.next().context(USAGE)?;
        let mut flags = Vec::new();
        let mut rest: Vec<String> = it.collect();
        rest.reverse();
        while let Some(f) = rest.pop() {
            let Some(name) = f.strip_prefix("--") else {
                bail!("unexpected argument {f:?}\n{USAGE}");
            };
            if matches!(name, "keep-running" | "no-dhcp" | "help" | "network-rack") {
                flags.push((name.to_owned(), None));
            } else {
                let v = rest
                    .pop()
                    .with_context(|| format!("--{name} needs a value"))?;
                flags.push((name.to_owned(), Some(v)));
            }
        }
        Ok(Args { command, flags })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(k, _)| k == name)
    }

    fn check(&self, known: &[&str]) -> anyhow::Result<()> {
        if let Some((k, _)) = self
            .flags
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            bail!("maas {}: unknown option --{k}\n{USAGE}", self.command);
        }
        Ok(())
    }

    fn data_dir(&self) -> PathBuf {
        self.get("data-dir")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("MAAS_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".local/share/maas-rs"))
                    .unwrap_or_else(|| PathBuf::from("maas-data"))
            })
    }

    fn api_listen(&self, default: SocketAddr) -> anyhow::Result<SocketAddr> {
        match self.get("api-listen") {
            Some(v) => v
                .parse()
                .with_context(|| format!("--api-listen {v:?}: expected ADDRESS:PORT")),
            None => Ok(default),
        }
    }
}

async fn demo(a: &Args) -> anyhow::Result<()> {
    a.check(&[
        "machines",
        "keep-running",
        "api-listen",
        "kernel-kib",
        "initrd-kib",
        "squashfs-kib",
        "network-rack",
    ])?;
    let mut o = Options {
        network_rack: a.has("network-rack"),
        ..Options::default()
    };
    if let Some(n) = a.get("machines") {
        o.machines = n
            .parse()
            .ok()
            .filter(|n| (1..=60000).contains(n))
            .with_context(|| format!("--machines {n:?}: expected a number from 1 to 60000"))?;
    }
    o.api_listen = a.api_listen(o.api_listen)?;
    for (flag, slot) in [
        ("kernel-kib", &mut o.kernel_bytes),
        ("initrd-kib", &mut o.initrd_bytes),
        ("squashfs-kib", &mut o.squashfs_bytes),
    ] {
        if let Some(v) = a.get(flag) {
            *slot = v
                .parse::<usize>()
                .ok()
                .filter(|k| (1..=4 << 20).contains(k))
                .with_context(|| format!("--{flag} {v:?}: expected KiB from 1 to 4194304"))?
                << 10;
        }
    }
    println!(
        "maas demo: {} simulated machines; setting up the region, the rack and the fleet...",
        o.machines
    );
    let d = Demo::start(&o).await?;
    println!(
        "region API at {} (rack {}: DHCP {}, TFTP {}, HTTP {})",
        d.url,
        maas::demo::RACK,
        d.all
            .rack
            .dhcp_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        d.all
            .rack
            .tftp_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        d.all.rack.http_addr(),
    );
    let r = d.run(&o).await?;
    println!(
        "\nsummary ({} machines, {:.1} s in all):",
        o.machines, r.total_secs
    );
    for (phase, secs) in &r.phases {
        let per_min = if *secs > 0.0 {
            o.machines as f64 * 60.0 / secs
        } else {
            0.0
        };
        println!("  {phase:<12} {secs:>8.1} s   {per_min:>8.0} machines/min");
    }
    let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in r.final_status.values() {
        *by.entry(s.as_str()).or_default() += 1;
    }
    println!("  final: {by:?} ({} released)", r.released.len());
    println!("  fleet: {:?}", r.fleet);
    println!("  rack:  {:?}", r.rack);
    println!(
        "  power: {} actions through the Redfish driver, {} failed",
        r.power.0, r.power.1
    );
    println!(
        "  process (region + rack + fleet together): peak RSS {} MiB, CPU {:.1} s",
        r.peak_rss_kib / 1024,
        r.cpu_secs
    );
    if a.has("keep-running") {
        println!(
            "\nthe API stays up (Ctrl-C stops it):\n  MAAS URL: {}\n  API key:  {}",
            d.url, d.api_key
        );
        println!(
            "  python-libmaas: maas.client.connect({:?}, apikey={:?})",
            d.url, d.api_key
        );
        shutdown_signal().await;
    }
    Ok(())
}

async fn init(a: &Args) -> anyhow::Result<()> {
    a.check(&["data-dir", "admin", "password"])?;
    let dir = a.data_dir();
    let store = open_store(&dir).await?;
    let name = a.get("admin").unwrap_or("admin");
    let password = match a.get("password") {
        Some(p) => p.to_owned(),
        None => format!("{:024x}", rand::random::<u128>() >> 32),
    };
    let key = admin_key(&store, name, &password).await?;
    let region = maas_region::Region::new(
        std::sync::Arc::new(store),
        maas_region::RegionConfig::default(),
    )
    .await?;
    let secret = region.shared_secret().await?;
    println!("data directory: {}", dir.display());
    println!("admin user:     {name}");
    if a.get("password").is_none() {
        println!("admin password: {password}");
    }
    println!("API key:        {key}");
    println!("rack secret:    {secret}");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// The region alone (racks connect over HTTP, as `maas-rackd` does).
async fn region_only(a: &Args) -> anyhow::Result<()> {
    a.check(&["data-dir", "api-listen"])?;
    let store = open_store(&a.data_dir()).await?;
    let region = maas_region::Region::with_remote_racks(
        std::sync::Arc::new(store),
        maas_region::RegionConfig::default(),
    )
    .await?;
    let listen = a.api_listen(SocketAddr::from(([127, 0, 0, 1], 5240)))?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let deadlines = region.spawn_deadline_worker(std::time::Duration::from_secs(2));
    tracing::info!(%listen, "region listening");
    axum::serve(listener, maas_region::router(region))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    deadlines.abort();
    Ok(())
}

async fn run(a: &Args) -> anyhow::Result<()> {
    a.check(&[
        "config",
        "data-dir",
        "api-listen",
        "rack-address",
        "no-dhcp",
    ])?;
    let mut c = match a.get("config") {
        Some(path) => maas::config::Config::load(std::path::Path::new(path))
            .map_err(|e| anyhow::anyhow!(e))?,
        None => maas::config::Config::default(),
    };
    c.apply_env(|k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!(e))?;
    if let Some(v) = a.get("rack-address") {
        c.rack_address = Some(
            v.parse()
                .with_context(|| format!("--rack-address {v:?}: expected an IPv4 address"))?,
        );
    }
    init_logs(c.log_format.unwrap_or_default(), "info");
    let mut s = c.settings(a.data_dir());
    if a.get("data-dir").is_some() {
        s.data_dir = a.data_dir();
    }
    s.api_listen = a.api_listen(s.api_listen)?;
    if a.has("no-dhcp") {
        s.dhcp_listen = None;
    }
    let all = AllInOne::start(&s).await?;
    tracing::info!(api = %all.api_addr, http = %all.rack.http_addr(), "maas running");
    shutdown_signal().await;
    tracing::info!("shutting down");
    drop(all);
    Ok(())
}

fn init_logs(format: maas::config::LogFormat, default: &str) {
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        );
    match format {
        maas::config::LogFormat::Text => logs.init(),
        maas::config::LogFormat::Json => logs.json().init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // `run` sets its logs up from its configuration.
    if argv.first().map(String::as_str) != Some("run") {
        init_logs(maas::config::LogFormat::Text, "warn");
    }
    if argv
        .iter()
        .find(|a| !a.starts_with("--") && !matches!(argv.iter().position(|x| x == *a), Some(i) if i > 0 && argv[i - 1] == "--profile"))
        .is_some_and(|c| maas::cli::COMMANDS.contains(&c.as_str()))
    {
        return match maas::cli::run(&argv).await {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("maas: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = match Args::parse() {
        Ok(a) => match a.command.as_str() {
            "demo" => demo(&a).await,
            "init" => init(&a).await,
            "run" => run(&a).await,
            "region" => region_only(&a).await,
            "help" | "--help" | "-h" => {
                println!("{USAGE}");
                Ok(())
            }
            other => Err(anyhow::anyhow!("unknown command {other:?}\n{USAGE}")),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("maas: {e:#}");
            ExitCode::FAILURE
        }
    }
}
