//! # maas-rack
//!
//! The rack controller as a library. A rack serves the machines of its
//! VLANs: DHCP (maas-dhcp) with reservations and boot answers from the
//! region's configuration, TFTP (maas-tftp) and HTTP boot on port 5248
//! (boot configs rendered by maas-boot for each machine's boot purpose,
//! images from the maas-images cache, boot loaders from a directory), a
//! pass-through of `/MAAS/...` to the region so machines only ever talk to
//! their rack, and power control (maas-power) for the region.
//!
//! The region is reached only through [`maas_core::rack::RegionLink`]: the
//! rack registers with the shared secret, long-polls its configuration and
//! reports leases and boot fetches. The configuration is written to the
//! rack's state directory each time it changes, so a rack that starts while
//! its region is away serves from the last copy, and a rack whose region
//! goes away keeps serving DHCP, TFTP and HTTP boot. The link reconnects
//! with a doubling backoff (100 ms to 10 s).
//!
//! ```no_run
//! # async fn demo(link: std::sync::Arc<dyn maas_core::rack::RegionLink>) -> Result<(), Box<dyn std::error::Error>> {
//! use maas_rack::{Rack, RackSettings};
//!
//! let settings = RackSettings::new("rack-1", "shared-secret", "10.0.0.2".parse()?, "/var/lib/maas-rack".into());
//! let rack = Rack::start(settings, link).await?;
//! println!("boot HTTP on {}", rack.http_addr());
//! # Ok(()) }
//! ```

mod boot;
mod dhcp;
mod http;
mod power;
mod remote;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use maas_core::rack::{
    LinkError, PROTOCOL_VERSION, RackConfig, RackCredentials, RackReport, RegionLink, Registration,
};
use maas_images::{BootFileService, ImageStore};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use power::RackPower;
pub use remote::{HttpRegionLink, serve_power};

/// How a rack is set up.
#[derive(Debug, Clone)]
pub struct RackSettings {
    /// The rack's name (its identity at the region).
    pub hostname: String,
    /// The region's shared secret.
    pub secret: String,
    /// The address machines reach the rack at: the DHCP server identifier,
    /// the next server, and the host of every URL handed out.
    pub address: Ipv4Addr,
    /// HTTP boot and the region pass-through (MAAS: port 5248).
    pub http_listen: SocketAddr,
    /// TFTP (port 69); `None`: no TFTP.
    pub tftp_listen: Option<SocketAddr>,
    /// DHCP (port 67); `None`: no DHCP.
    pub dhcp_listen: Option<SocketAddr>,
    /// Where DHCP replies to a relay go (67 unless the relay is a
    /// simulated one that cannot bind it).
    pub dhcp_relay_port: u16,
    /// The region's HTTP base (`http://10.0.0.1:5240`), for the
    /// pass-through of `/MAAS/`.
    pub region_url: String,
    /// The image cache (a maas-images store).
    pub images: PathBuf,
    /// Boot loaders (`lpxelinux.0`, `bootx64.efi`, ...), served over TFTP
    /// and HTTP; `None`: none.
    pub boot_loaders: Option<PathBuf>,
    /// The cached configuration and the DHCP leases.
    pub state_dir: PathBuf,
    /// How long one configuration long-poll waits for a change.
    pub poll_wait: Duration,
}

impl RackSettings {
    /// A rack at `address` with MAAS's ports (HTTP 5248, TFTP 69, DHCP
    /// 67), the region at `http://127.0.0.1:5240`, images and state under
    /// `state_dir`.
    pub fn new(hostname: &str, secret: &str, address: Ipv4Addr, state_dir: PathBuf) -> Self {
        RackSettings {
            hostname: hostname.to_owned(),
            secret: secret.to_owned(),
            address,
            http_listen: SocketAddr::from((address, maas_boot::RACK_HTTP_PORT)),
            tftp_listen: Some(SocketAddr::from((address, 69))),
            dhcp_listen: Some(SocketAddr::from(([0, 0, 0, 0], 67))),
            dhcp_relay_port: 67,
            region_url: "http://127.0.0.1:5240".into(),
            images: state_dir.join("images"),
            boot_loaders: None,
            state_dir,
            poll_wait: Duration::from_secs(30),
        }
    }
}

/// Why a rack could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RackStartError {
    /// A port could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// `http`, `tftp` or `dhcp`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The image cache or state directory is unusable.
    #[error("{path}: {reason}")]
    Storage {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Counters of a running rack.
#[derive(Debug, Default)]
pub struct RackStats {
    /// Configurations received from the region (changes only).
    pub configs: AtomicU64,
    /// Whether the rack's last call to the region succeeded.
    pub connected: AtomicBool,
    /// Reports delivered to the region.
    pub reports_sent: AtomicU64,
    /// Reports dropped because the queue to the region was full.
    pub reports_dropped: AtomicU64,
    /// Boot configs rendered (TFTP and HTTP).
    pub boot_configs: AtomicU64,
    /// Boot configs that could not be rendered (no image, ...).
    pub boot_config_errors: AtomicU64,
    /// HTTP requests.
    pub http_requests: AtomicU64,
    /// Requests passed on to the region.
    pub proxied: AtomicU64,
    /// Requests the region did not answer.
    pub proxy_errors: AtomicU64,
    /// DHCP server (re)starts.
    pub dhcp_restarts: AtomicU64,
}

impl RackStats {
    pub(crate) fn bump(&self, c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// `(name, value)` of every counter, for metrics.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("configs", g(&self.configs)),
            (
                "connected",
                u64::from(self.connected.load(Ordering::Relaxed)),
            ),
            ("reports_sent", g(&self.reports_sent)),
            ("reports_dropped", g(&self.reports_dropped)),
            ("boot_configs", g(&self.boot_configs)),
            ("boot_config_errors", g(&self.boot_config_errors)),
            ("http_requests", g(&self.http_requests)),
            ("proxied", g(&self.proxied)),
            ("proxy_errors", g(&self.proxy_errors)),
            ("dhcp_restarts", g(&self.dhcp_restarts)),
        ]
    }
}

/// The counters of the servers a rack runs.
#[derive(Default)]
pub(crate) struct Metrics {
    /// Every DHCP server started (each restart starts from zero; the
    /// exposition sums them).
    pub(crate) dhcp: std::sync::Mutex<Vec<Arc<maas_dhcp::DhcpMetrics>>>,
    pub(crate) tftp: std::sync::Mutex<Option<Arc<maas_tftp::TftpMetrics>>>,
}

/// The queue of reports to the region (bounded: a region away for long
/// loses the oldest news, counted, never the rack's memory).
#[derive(Clone)]
pub(crate) struct Reporter {
    tx: mpsc::Sender<RackReport>,
    stats: Arc<RackStats>,
}

impl Reporter {
    pub(crate) fn send(&self, r: RackReport) {
        if self.tx.try_send(r).is_err() {
            self.stats.bump(&self.stats.reports_dropped);
        }
    }
}

const REPORT_QUEUE: usize = 8192;
const CONFIG_FILE: &str = "rack-config.json";

/// A running rack: its tasks stop when it is dropped.
pub struct Rack {
    metrics: Arc<Metrics>,
    http_addr: SocketAddr,
    tftp_addr: Option<SocketAddr>,
    dhcp_addr: Option<SocketAddr>,
    stats: Arc<RackStats>,
    config: watch::Receiver<Option<Arc<RackConfig>>>,
    credentials: watch::Receiver<Option<RackCredentials>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Rack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rack")
            .field("http_addr", &self.http_addr)
            .field("tftp_addr", &self.tftp_addr)
            .field("dhcp_addr", &self.dhcp_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Rack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn load_cached(dir: &Path) -> Option<RackConfig> {
    let bytes = std::fs::read(dir.join(CONFIG_FILE)).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "the cached rack configuration is unreadable; waiting for the region");
            None
        }
    }
}

async fn save_cached(dir: &Path, c: &RackConfig) {
    let tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    let res = async {
        let bytes = serde_json::to_vec(c).map_err(std::io::Error::other)?;
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, dir.join(CONFIG_FILE)).await
    }
    .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, "cannot cache the rack configuration");
    }
}

impl Rack {
    /// Binds the rack's ports, loads its cached configuration and starts
    /// serving; registering with the region and following its
    /// configuration go on in the background.
    pub async fn start(
        settings: RackSettings,
        link: Arc<dyn RegionLink>,
    ) -> Result<Rack, RackStartError> {
        let storage = |path: &Path, e: &dyn std::fmt::Display| RackStartError::Storage {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(&settings.state_dir)
            .map_err(|e| storage(&settings.state_dir, &e))?;
        let images =
            ImageStore::open(&settings.images).map_err(|e| storage(&settings.images, &e))?;
        let loaders = match &settings.boot_loaders {
            Some(p) => Some(Arc::new(
                maas_tftp::DirectoryProvider::new(p).map_err(|e| storage(p, &e))?,
            )),
            None => None,
        };
        let stats = Arc::new(RackStats::default());
        let metrics = Arc::new(Metrics::default());
        let cached = load_cached(&settings.state_dir).map(Arc::new);
        if let Some(c) = &cached {
            tracing::info!(
                generation = c.generation,
                "serving the cached configuration until the region answers"
            );
        }
        let (config_tx, config_rx) = watch::channel(cached);
        let (report_tx, report_rx) = mpsc::channel(REPORT_QUEUE);
        let reporter = Reporter {
            tx: report_tx,
            stats: stats.clone(),
        };
        let http_listener = tokio::net::TcpListener::bind(settings.http_listen)
            .await
            .map_err(|source| RackStartError::Bind {
                what: "http",
                addr: settings.http_listen,
                source,
            })?;
        let http_addr = http_listener.local_addr().unwrap_or(settings.http_listen);
        let (creds_tx, creds_rx) = watch::channel(None);
        let boot = boot::BootFiles {
            config: config_rx.clone(),
            link: link.clone(),
            credentials: creds_rx.clone(),
            images: images.clone(),
            loaders,
            http_port: http_addr.port(),
            reports: reporter.clone(),
            stats: stats.clone(),
        };
        let mut tasks = Vec::new();

        let app = http::router(http::HttpState {
            boot: boot.clone(),
            files: BootFileService::new(images),
            region: settings.region_url.clone(),
            client: http::client(),
            stats: stats.clone(),
        });
        tasks.push(tokio::spawn(async move {
            let svc = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(e) = axum::serve(http_listener, svc).await {
                tracing::error!(error = %e, "rack HTTP server stopped");
            }
        }));

        let mut tftp_addr = None;
        if let Some(addr) = settings.tftp_listen {
            let server =
                maas_tftp::TftpServer::bind(addr, boot.clone(), maas_tftp::TftpConfig::default())
                    .await
                    .map_err(|source| RackStartError::Bind {
                        what: "tftp",
                        addr,
                        source,
                    })?;
            tftp_addr = server.local_addr().ok();
            *metrics.tftp.lock().unwrap_or_else(|e| e.into_inner()) = Some(server.metrics());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = server.serve().await {
                    tracing::error!(error = %e, "rack TFTP server stopped");
                }
            }));
        }

        let mut dhcp_addr = None;
        if let Some(addr) = settings.dhcp_listen {
            let bind = |what| move |source| RackStartError::Bind { what, addr, source };
            let sock = StdUdpSocket::bind(addr).map_err(bind("dhcp"))?;
            sock.set_broadcast(true).map_err(bind("dhcp"))?;
            sock.set_nonblocking(true).map_err(bind("dhcp"))?;
            dhcp_addr = sock.local_addr().ok();
            tasks.push(tokio::spawn(dhcp::supervise(dhcp::DhcpSetup {
                socket: sock,
                config: config_rx.clone(),
                address: settings.address,
                relay_port: settings.dhcp_relay_port,
                http_port: http_addr.port(),
                lease_file: settings.state_dir.join("dhcp-leases"),
                reports: reporter.clone(),
                stats: stats.clone(),
                metrics: metrics.clone(),
            })));
        }

        tasks.push(tokio::spawn(follow_region(
            link.clone(),
            settings.clone(),
            config_tx,
            creds_tx,
            stats.clone(),
        )));
        {
            let (reporter, stats, metrics) = (reporter.clone(), stats.clone(), metrics.clone());
            let (tftp_on, dhcp_on) = (tftp_addr.is_some(), dhcp_addr.is_some());
            tasks.push(tokio::spawn(async move {
                let every = Duration::from_secs(30);
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    let dhcp_serving = dhcp_on
                        && !metrics
                            .dhcp
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .is_empty();
                    let _ = &stats;
                    reporter.send(RackReport::Health {
                        services: vec![
                            ("http".into(), true),
                            ("tftp".into(), tftp_on),
                            ("dhcpd".into(), dhcp_serving),
                        ],
                    });
                }
            }));
        }
        tasks.push(tokio::spawn(send_reports(
            link,
            report_rx,
            creds_rx.clone(),
            stats.clone(),
        )));
        Ok(Rack {
            metrics,
            http_addr,
            tftp_addr,
            dhcp_addr,
            stats,
            config: config_rx,
            credentials: creds_rx,
            tasks,
        })
    }

    /// Where HTTP boot listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where TFTP listens, if it runs.
    pub fn tftp_addr(&self) -> Option<SocketAddr> {
        self.tftp_addr
    }

    /// Where DHCP listens, if it runs.
    pub fn dhcp_addr(&self) -> Option<SocketAddr> {
        self.dhcp_addr
    }

    /// The counters.
    pub fn stats(&self) -> Arc<RackStats> {
        self.stats.clone()
    }

    /// The rack's counters in the Prometheus text format: `maas_rack_*`,
    /// `maas_dhcp_*` (summed over DHCP restarts) and `maas_tftp_*`.
    pub fn metrics_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut put = |name: String, v: u64| {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
        };
        for (k, v) in self.stats.snapshot() {
            put(format!("maas_rack_{k}"), v);
        }
        let dhcp = self.metrics.dhcp.lock().unwrap_or_else(|e| e.into_inner());
        let mut sums: Vec<(&'static str, u64)> = Vec::new();
        for m in dhcp.iter() {
            for (k, v) in m.snapshot() {
                match sums.iter_mut().find(|(n, _)| *n == k) {
                    Some(e) => e.1 += v,
                    None => sums.push((k, v)),
                }
            }
        }
        drop(dhcp);
        for (k, v) in sums {
            put(format!("maas_dhcp_{k}"), v);
        }
        if let Some(t) = self
            .metrics
            .tftp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
            for (k, v) in [
                ("requests", g(&t.requests)),
                ("completed", g(&t.completed)),
                ("aborted_by_client", g(&t.aborted_by_client)),
                ("timed_out", g(&t.timed_out)),
                ("refused", g(&t.refused)),
                ("malformed", g(&t.malformed)),
                ("bytes_sent", g(&t.bytes_sent)),
                ("retransmits", g(&t.retransmits)),
                ("duplicate_requests", g(&t.duplicate_requests)),
            ] {
                put(format!("maas_tftp_{k}"), v);
            }
        }
        out
    }

    /// The configuration being served (`None` before the first one).
    pub fn config(&self) -> Option<Arc<RackConfig>> {
        self.config.borrow().clone()
    }

    /// The rack's system id at the region, once registered.
    pub fn system_id(&self) -> Option<maas_core::SystemId> {
        self.credentials
            .borrow()
            .as_ref()
            .map(|c| c.system_id.clone())
    }

    /// Waits until the rack serves a configuration that satisfies `ok`.
    pub async fn wait_for_config(&self, ok: impl Fn(&RackConfig) -> bool) {
        let mut rx = self.config.clone();
        let _ = rx.wait_for(|c| c.as_deref().is_some_and(&ok)).await;
    }

    /// Waits until the rack is registered and returns its system id
    /// (`None` only if the rack stopped).
    pub async fn registered(&self) -> Option<maas_core::SystemId> {
        let mut rx = self.credentials.clone();
        let c = rx.wait_for(|c| c.is_some()).await.ok()?;
        c.as_ref().map(|c| c.system_id.clone())
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

async fn follow_region(
    link: Arc<dyn RegionLink>,
    settings: RackSettings,
    config: watch::Sender<Option<Arc<RackConfig>>>,
    creds: watch::Sender<Option<RackCredentials>>,
    stats: Arc<RackStats>,
) {
    let registration = Registration {
        hostname: settings.hostname.clone(),
        secret: settings.secret.clone(),
        protocol: PROTOCOL_VERSION,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let mut backoff = BACKOFF_MIN;
    let wait = |backoff: &mut Duration| {
        let d = *backoff;
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        tokio::time::sleep(d)
    };
    loop {
        let me = match link.register(&registration).await {
            Ok(c) => c,
            Err(e) => {
                stats.connected.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot register with the region; retrying");
                wait(&mut backoff).await;
                continue;
            }
        };
        stats.connected.store(true, Ordering::Relaxed);
        creds.send_replace(Some(me.clone()));
        backoff = BACKOFF_MIN;
        loop {
            let known = config.borrow().as_ref().map(|c| c.generation);
            match link.config(&me, known, settings.poll_wait).await {
                Ok(c) => {
                    stats.connected.store(true, Ordering::Relaxed);
                    backoff = BACKOFF_MIN;
                    if Some(c.generation) != known {
                        save_cached(&settings.state_dir, &c).await;
                        stats.bump(&stats.configs);
                        tracing::debug!(
                            generation = c.generation,
                            hosts = c.hosts.len(),
                            subnets = c.subnets.len(),
                            "configuration"
                        );
                        config.send_replace(Some(Arc::new(c)));
                    }
                }
                Err(LinkError::Unauthorized(why)) => {
                    tracing::warn!(%why, "the region no longer knows this rack; registering again");
                    break;
                }
                Err(e) => {
                    stats.connected.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "lost the region; serving the cached configuration");
                    wait(&mut backoff).await;
                }
            }
        }
    }
}

async fn send_reports(
    link: Arc<dyn RegionLink>,
    mut rx: mpsc::Receiver<RackReport>,
    mut creds: watch::Receiver<Option<RackCredentials>>,
    stats: Arc<RackStats>,
) {
    let mut backoff = BACKOFF_MIN;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        loop {
            let me = match creds.wait_for(|c| c.is_some()).await {
                Ok(c) => c.clone(),
                Err(_) => return,
            };
            let Some(me) = me else { return };
            match link.report(&me, batch.clone()).await {
                Ok(()) => {
                    stats
                        .reports_sent
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    backoff = BACKOFF_MIN;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, pending = batch.len(), "reports not delivered; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}
