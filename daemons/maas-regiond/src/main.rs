//! `maas-regiond`: the region controller daemon.
//!
//! ```text
//! maas-regiond init  --data-dir DIR --admin NAME --password PW   # prints the admin's API key
//! maas-regiond createuser --data-dir DIR --username NAME --password PW [--admin]
//! maas-regiond run   [--config regiond.toml] [--data-dir DIR] [--listen 127.0.0.1:5240]
//! ```
//!
//! Settings come from the TOML file (`regiond.toml` documents every key),
//! then `MAAS_DATA_DIR`, `MAAS_DATABASE_URL`, `MAAS_LISTEN`,
//! `MAAS_LOG_FORMAT`, then the flags. Storage is `DIR/maas.sqlite` unless a
//! database URL names PostgreSQL. `run` stops gracefully on SIGTERM or
//! Ctrl-C.

mod config;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use config::{Config, LogFormat};
use maas_core::repo::{RepositoryError, UserRepository};
use maas_region::{Region, RegionConfig, hash_password};
use maas_store::SqlStore;

const USAGE: &str = "usage: maas-regiond init --data-dir DIR --admin NAME --password PW [--email E]
       maas-regiond createuser --data-dir DIR --username NAME --password PW [--admin]
       maas-regiond run [--config FILE] [--data-dir DIR] [--listen ADDR] [--database-url URL]
       maas-regiond secret [--data-dir DIR] [--database-url URL]   (the rack secret maas-rackd registers with)";

#[derive(Default)]
struct Args {
    command: String,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    listen: Option<String>,
    username: Option<String>,
    password: Option<String>,
    email: Option<String>,
    admin: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    a.command = it.next().context(USAGE)?;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--config" => a.config = Some(value("--config")?.into()),
            "--data-dir" => a.data_dir = Some(value("--data-dir")?.into()),
            "--database-url" => a.database_url = Some(value("--database-url")?),
            "--listen" => a.listen = Some(value("--listen")?),
            "--admin" if a.command == "init" => a.username = Some(value("--admin")?),
            "--admin" => a.admin = true,
            "--username" => a.username = Some(value("--username")?),
            "--password" => a.password = Some(value("--password")?),
            "--email" => a.email = Some(value("--email")?),
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if a.command == "init" {
        a.admin = true;
    }
    Ok(a)
}

/// The file, then the environment, then the flags.
fn settings(a: &Args) -> anyhow::Result<Config> {
    let mut c = match &a.config {
        Some(path) => Config::load(path).map_err(anyhow::Error::msg)?,
        None => Config::default(),
    };
    c.apply_env(|k| std::env::var(k).ok())
        .map_err(anyhow::Error::msg)?;
    if let Some(d) = &a.data_dir {
        c.data_dir = Some(d.clone());
    }
    if let Some(u) = &a.database_url {
        c.database_url = Some(u.clone());
    }
    if let Some(l) = &a.listen {
        c.listen = Some(l.parse().context("--listen: expected ADDRESS:PORT")?);
    }
    Ok(c)
}

async fn open(c: &Config) -> anyhow::Result<SqlStore> {
    let store = match c.database_url.clone() {
        Some(url) => SqlStore::open(&url)
            .await
            .with_context(|| format!("opening {}", maas_store::redact_url(&url)))?,
        None => {
            let dir = c.data_dir.as_ref().context(
                "no data directory: give --data-dir, MAAS_DATA_DIR or data_dir in the config file",
            )?;
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the data directory {}", dir.display()))?;
            let path = dir.join("maas.sqlite");
            SqlStore::open_sqlite_file(&path)
                .await
                .with_context(|| format!("opening {}", path.display()))?
        }
    };
    store.migrate().await.context("migrating the database")?;
    Ok(store)
}

#[allow(clippy::print_stdout)] // the API key is the output
async fn create_user(a: &Args) -> anyhow::Result<()> {
    let store = open(&settings(a)?).await?;
    let name = a.username.as_deref().context("a username is required")?;
    let password = a.password.as_deref().context("--password is required")?;
    let user = match store
        .user_create(
            name,
            a.email.as_deref().unwrap_or(""),
            a.admin,
            Some(&hash_password(password)),
        )
        .await
    {
        Ok(u) => u,
        Err(RepositoryError::AlreadyExists { .. }) => bail!("user {name:?} already exists"),
        Err(e) => return Err(e.into()),
    };
    let token = store.token_create(user.id, "maas-regiond").await?;
    println!("{}", token.api_key());
    Ok(())
}

#[allow(clippy::print_stdout)] // the secret is the output
async fn print_secret(c: &Config) -> anyhow::Result<()> {
    let store = open(c).await?;
    let region = Region::new(Arc::new(store), RegionConfig::default()).await?;
    println!("{}", region.shared_secret().await?);
    Ok(())
}

async fn run(c: &Config) -> anyhow::Result<()> {
    let store = open(c).await?;
    let mut rc = RegionConfig {
        boot_server_url: c.boot_server_url.clone(),
        ..RegionConfig::default()
    };
    if let Some(o) = &c.default_osystem {
        rc.default_osystem = o.clone();
    }
    if let Some(s) = &c.default_distro_series {
        rc.default_distro_series = s.clone();
    }
    // Racks (maas-rackd) connect over /MAAS/rpc/rack/v1/ and carry out
    // power actions; with none connected, power actions fail at once.
    let region = Region::with_remote_racks(Arc::new(store), rc).await?;
    let listen: SocketAddr = c.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 5240)));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "region API listening");
    // Status deadlines (commissioning, deploying, ...): checked every 10 s.
    let deadlines = region.spawn_deadline_worker(std::time::Duration::from_secs(
        c.deadline_check_secs.unwrap_or(10),
    ));
    // Render every machine into the list cache while the first requests
    // come in, so the first `GET machines/` is as fast as the rest.
    let warm = {
        let region = region.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match region.warm_machine_cache().await {
                Ok(n) => tracing::info!(
                    machines = n,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "machine list cache warm"
                ),
                Err(e) => tracing::warn!(error = %e, "warming the machine list cache failed"),
            }
        })
    };
    let served = axum::serve(listener, maas_region::router(region))
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
            tracing::info!("shutting down");
        })
        .await;
    deadlines.abort();
    warm.abort();
    served?;
    Ok(())
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = match parse_args().and_then(|a| settings(&a).map(|c| (a, c))) {
        Ok((a, c)) => {
            init_logs(c.log_format.unwrap_or_default());
            match a.command.as_str() {
                "init" | "createuser" => create_user(&a).await,
                "secret" => print_secret(&c).await,
                "run" => run(&c).await,
                other => Err(anyhow::anyhow!("unknown command {other:?}\n{USAGE}")),
            }
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
