//! A region and a rack in one process: the region over SQLite in a data
//! directory, the rack linked to it in process (`LocalRegionLink`), the
//! region's power actions carried out by the rack's drivers.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use maas_core::rack::RegionLink;
use maas_core::repo::{MachineRepository, RepositoryError, UserRepository};
use maas_power::{Executor, ExecutorConfig, builtin_registry};
use maas_rack::{Rack, RackPower, RackSettings};
use maas_region::{LocalRegionLink, Region, RegionConfig, hash_password};
use maas_store::SqlStore;

/// How the all-in-one program is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The SQLite database, the rack's state and the image cache.
    pub data_dir: PathBuf,
    /// The REST API and metadata service.
    pub api_listen: SocketAddr,
    /// The rack's address on the machines' network.
    pub rack_address: Ipv4Addr,
    /// The rack's HTTP boot (5248).
    pub http_listen: SocketAddr,
    /// TFTP (69); `None`: off.
    pub tftp_listen: Option<SocketAddr>,
    /// DHCP (67); `None`: off.
    pub dhcp_listen: Option<SocketAddr>,
    /// Where DHCP replies to relays go.
    pub dhcp_relay_port: u16,
    /// Boot loaders served over TFTP and HTTP.
    pub boot_loaders: Option<PathBuf>,
    /// How often status deadlines are checked.
    pub deadline_check: Duration,
    /// The rack talks to the region over HTTP (`/MAAS/rpc/rack/v1/`) as a
    /// separate `maas-rackd` would, instead of in process.
    pub network_rack: bool,
}

impl Settings {
    /// MAAS's ports on `rack_address`, the API on 127.0.0.1:5240.
    pub fn new(data_dir: PathBuf, rack_address: Ipv4Addr) -> Self {
        Settings {
            data_dir,
            api_listen: SocketAddr::from(([127, 0, 0, 1], 5240)),
            rack_address,
            http_listen: SocketAddr::from((rack_address, 5248)),
            tftp_listen: Some(SocketAddr::from((rack_address, 69))),
            dhcp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 67))),
            dhcp_relay_port: 67,
            boot_loaders: None,
            deadline_check: Duration::from_secs(10),
            network_rack: false,
        }
    }
}

/// The store of a data directory (created and migrated if needed).
pub async fn open_store(data_dir: &Path) -> anyhow::Result<SqlStore> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let path = data_dir.join("maas.sqlite");
    let store = SqlStore::open_sqlite_file(&path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    store.migrate().await.context("migrating the database")?;
    Ok(store)
}

/// Creates an admin user (or finds it) and a new API key for it.
pub async fn admin_key(store: &SqlStore, name: &str, password: &str) -> anyhow::Result<String> {
    let user = match store
        .user_create(name, "", true, Some(&hash_password(password)))
        .await
    {
        Ok(u) => u,
        Err(RepositoryError::AlreadyExists { .. }) => store.user_get(name).await?,
        Err(e) => return Err(e.into()),
    };
    let token = store.token_create(user.id, "maas init").await?;
    Ok(token.api_key())
}

/// Requests to the region's HTTP port.
#[derive(Default)]
struct ApiCounters {
    requests: AtomicU64,
    server_errors: AtomicU64,
    micros: AtomicU64,
}

/// What `GET /metrics` shows (Prometheus text format).
#[derive(Clone)]
struct Metrics {
    store: SqlStore,
    power: Arc<RackPower>,
    rack: Arc<OnceLock<Arc<Rack>>>,
    api: Arc<ApiCounters>,
}

impl Metrics {
    async fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# TYPE maas_http_requests counter\nmaas_http_requests {}\n# TYPE maas_http_server_errors counter\nmaas_http_server_errors {}\n# TYPE maas_http_request_seconds_sum counter\nmaas_http_request_seconds_sum {:.6}",
            g(&self.api.requests),
            g(&self.api.server_errors),
            g(&self.api.micros) as f64 / 1e6
        );
        let (actions, failures) = self.power.counts();
        let _ = writeln!(
            out,
            "# TYPE maas_power_actions counter\nmaas_power_actions {actions}\n# TYPE maas_power_failures counter\nmaas_power_failures {failures}"
        );
        if let Ok(list) = self
            .store
            .machine_list(&maas_core::repo::MachineFilter::default())
            .await
        {
            let mut by: std::collections::BTreeMap<&str, u64> = Default::default();
            for m in &list {
                *by.entry(m.status.label()).or_default() += 1;
            }
            let _ = writeln!(out, "# TYPE maas_machines gauge");
            for (status, n) in by {
                let _ = writeln!(out, "maas_machines{{status=\"{status}\"}} {n}");
            }
        }
        if let Some(rack) = self.rack.get() {
            out.push_str(&rack.metrics_text());
        }
        out
    }
}

/// A running region and rack.
pub struct AllInOne {
    /// The region.
    pub region: Region,
    /// The rack.
    pub rack: Arc<Rack>,
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// The rack's power control (its counters).
    pub power: Arc<RackPower>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for AllInOne {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl AllInOne {
    /// Opens the data directory and starts the region's API and the rack.
    pub async fn start(s: &Settings) -> anyhow::Result<AllInOne> {
        Self::start_with(s, |l| Arc::new(l)).await
    }

    /// [`AllInOne::start`] with the rack's link to the region passed
    /// through `wrap` (tests cut it to play a region that is away).
    pub async fn start_with(
        s: &Settings,
        wrap: impl FnOnce(LocalRegionLink) -> Arc<dyn RegionLink>,
    ) -> anyhow::Result<AllInOne> {
        let store = open_store(&s.data_dir).await?;
        let power = Arc::new(RackPower::new(
            builtin_registry(),
            Executor::new(ExecutorConfig {
                verify_interval: Duration::from_millis(100),
                max_concurrent: 256,
                ..ExecutorConfig::default()
            }),
        ));
        let region = if s.network_rack {
            Region::with_remote_racks(Arc::new(store.clone()), RegionConfig::default()).await
        } else {
            Region::with_rack(
                Arc::new(store.clone()),
                RegionConfig::default(),
                power.clone(),
            )
            .await
        }
        .context("starting the region")?;
        let secret = region.shared_secret().await?;
        let listener = tokio::net::TcpListener::bind(s.api_listen)
            .await
            .with_context(|| format!("binding the API on {}", s.api_listen))?;
        let api_addr = listener.local_addr()?;
        let rack_slot: Arc<OnceLock<Arc<Rack>>> = Arc::default();
        let api = Arc::new(ApiCounters::default());
        let metrics = Metrics {
            store,
            power: power.clone(),
            rack: rack_slot.clone(),
            api: api.clone(),
        };
        let app = maas_region::router(region.clone())
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let m = metrics.clone();
                    async move { m.render().await }
                }),
            )
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let api = api.clone();
                    async move {
                        let t = std::time::Instant::now();
                        let res = next.run(req).await;
                        api.requests.fetch_add(1, Ordering::Relaxed);
                        if res.status().is_server_error() {
                            api.server_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        api.micros
                            .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                        res
                    }
                },
            ));
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "region API stopped");
            }
        })];
        tasks.push(region.spawn_deadline_worker(s.deadline_check));
        let mut rs = RackSettings::new(
            &format!("rack-{}", s.rack_address).replace('.', "-"),
            &secret,
            s.rack_address,
            s.data_dir.join("rack"),
        );
        rs.http_listen = s.http_listen;
        rs.tftp_listen = s.tftp_listen;
        rs.dhcp_listen = s.dhcp_listen;
        rs.dhcp_relay_port = s.dhcp_relay_port;
        rs.region_url = format!("http://{api_addr}");
        rs.images = s.data_dir.join("images");
        rs.boot_loaders = s.boot_loaders.clone();
        let http_link = maas_rack::HttpRegionLink::new(&format!("http://{api_addr}"));
        let link: Arc<dyn RegionLink> = if s.network_rack {
            Arc::new(http_link.clone())
        } else {
            wrap(region.rack_link())
        };
        let rack = Arc::new(Rack::start(rs, link).await.context("starting the rack")?);
        let _ = rack_slot.set(rack.clone());
        if s.network_rack {
            tasks.push(tokio::spawn(maas_rack::serve_power(
                http_link,
                rack.clone(),
                power.clone(),
            )));
        }
        Ok(AllInOne {
            region,
            rack,
            api_addr,
            power,
            tasks,
        })
    }
}
