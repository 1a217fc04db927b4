//! `maas-regiond`: the region controller daemon.
//!
//! ```text
//! maas-regiond init  --data-dir DIR --admin NAME --password PW   # prints the admin's API key
//! maas-regiond createuser --data-dir DIR --username NAME --password PW [--admin]
//! maas-regiond run   --data-dir DIR [--listen 127.0.0.1:5240]
//! ```
//!
//! Storage is `DIR/maas.sqlite` unless `--database-url postgres://...`
//! (or `MAAS_DATABASE_URL`) names PostgreSQL. `run` stops gracefully on
//! SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use maas_core::repo::{RepositoryError, UserRepository};
use maas_region::{Region, RegionConfig, hash_password};
use maas_store::SqlStore;

const USAGE: &str = "usage: maas-regiond init --data-dir DIR --admin NAME --password PW [--email E]
       maas-regiond createuser --data-dir DIR --username NAME --password PW [--admin]
       maas-regiond run --data-dir DIR [--listen ADDR] [--database-url URL]";

#[derive(Default)]
struct Args {
    command: String,
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

async fn open(a: &Args) -> anyhow::Result<SqlStore> {
    let url = a
        .database_url
        .clone()
        .or_else(|| std::env::var("MAAS_DATABASE_URL").ok());
    let store = match url {
        Some(url) => SqlStore::open(&url)
            .await
            .with_context(|| format!("opening {}", maas_store::redact_url(&url)))?,
        None => {
            let dir = a.data_dir.as_ref().context("--data-dir is required")?;
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
    let store = open(a).await?;
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

async fn run(a: &Args) -> anyhow::Result<()> {
    let store = open(a).await?;
    let region = Region::new(Arc::new(store), RegionConfig::default()).await?;
    let listen: SocketAddr = a
        .listen
        .as_deref()
        .unwrap_or("127.0.0.1:5240")
        .parse()
        .context("--listen: expected ADDRESS:PORT")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "region API listening");
    // Status deadlines (commissioning, deploying, ...): checked every 10 s.
    let deadlines = region.spawn_deadline_worker(std::time::Duration::from_secs(10));
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
    served?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match parse_args() {
        Ok(a) => match a.command.as_str() {
            "init" | "createuser" => create_user(&a).await,
            "run" => run(&a).await,
            other => Err(anyhow::anyhow!("unknown command {other:?}\n{USAGE}")),
        },
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
