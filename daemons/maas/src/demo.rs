//! `maas demo`: the all-in-one program on SQLite in a temporary directory
//! and a simulated fleet on loopback; every machine is enlisted (by
//! pressing its power button), commissioned, allocated and deployed, and
//! half are released, all through the REST API, the rack and the real
//! protocols.
//!
//! The boot files are stand-ins (a pattern of bytes of the sizes given):
//! the simulated machines move them but run nothing.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use maas_images::streams::{FileType, ImageKey};
use maas_images::{
    BuildImage, ImageStore, StreamBuilder, StreamSigningKey, StreamSource, SyncConfig,
};
use maas_sim::{Fleet, FleetSettings, Power, RackTargets};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::allinone::{AllInOne, Settings, admin_key, open_store};
use crate::client::ApiClient;

/// The demo's network: the rack, the relay and the machines on loopback.
pub const SUBNET: &str = "127.77.0.0/16";
/// The rack's address.
pub const RACK: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 1);
/// The simulated relay's address (`giaddr`).
pub const RELAY: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 2);

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Machines in the fleet.
    pub machines: usize,
    /// Sizes of the stand-in kernel, initrd and squashfs, bytes.
    pub kernel_bytes: usize,
    /// See `kernel_bytes`.
    pub initrd_bytes: usize,
    /// See `kernel_bytes`.
    pub squashfs_bytes: usize,
    /// Where the API listens (`127.0.0.1:0` picks a port).
    pub api_listen: SocketAddr,
    /// Print progress lines every second.
    pub progress: bool,
    /// The longest a phase may take.
    pub phase_timeout: Duration,
    /// The rack reaches the region over HTTP (the network rack protocol)
    /// rather than in process.
    pub network_rack: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            machines: 10,
            kernel_bytes: 1 << 20,
            initrd_bytes: 4 << 20,
            squashfs_bytes: 8 << 20,
            api_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            progress: true,
            phase_timeout: Duration::from_secs(600),
            network_rack: false,
        }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Report {
    /// `(phase, seconds)` in order.
    pub phases: Vec<(&'static str, f64)>,
    /// Every machine's system id and final status name.
    pub final_status: BTreeMap<String, String>,
    /// The machines released.
    pub released: Vec<String>,
    /// Fleet counters: `(name, value)`.
    pub fleet: Vec<(&'static str, u64)>,
    /// Rack counters.
    pub rack: Vec<(&'static str, u64)>,
    /// Power actions and failures the rack carried out.
    pub power: (u64, u64),
    /// Total seconds.
    pub total_secs: f64,
    /// Peak resident memory of the process (region, rack and fleet), KiB.
    pub peak_rss_kib: u64,
    /// CPU seconds the process used (user + system).
    pub cpu_secs: f64,
}

/// `(peak RSS KiB, CPU seconds)` of this process, from `/proc/self`.
pub fn process_usage() -> (u64, f64) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    // Fields 14 and 15 of /proc/self/stat (after the command name).
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0);
    (rss, cpu)
}

/// A running demo (the API stays up while this lives).
pub struct Demo {
    /// The region and rack.
    pub all: AllInOne,
    /// The fleet.
    pub fleet: Fleet,
    /// An admin client.
    pub api: ApiClient,
    /// The admin's API key.
    pub api_key: String,
    /// The MAAS URL (`http://127.0.0.1:port/MAAS`).
    pub url: String,
    /// The temporary directory everything lives in.
    pub dir: tempfile::TempDir,
}

/// Writes a stand-in file of `len` bytes (a repeating pattern).
pub fn standin(path: &Path, len: usize, seed: u8) -> anyhow::Result<()> {
    let chunk: Vec<u8> = (0..=255u8)
        .map(|b| b.wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let n = (len - out.len()).min(chunk.len());
        out.extend_from_slice(&chunk[..n]);
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// A signed SimpleStreams mirror with one ubuntu/noble image, synced into
/// the image cache as a region's import would.
pub async fn images(dir: &Path, store: &Path, o: &Options) -> anyhow::Result<()> {
    let files = dir.join("files");
    std::fs::create_dir_all(&files)?;
    standin(&files.join("boot-kernel"), o.kernel_bytes, 1)?;
    standin(&files.join("boot-initrd"), o.initrd_bytes, 2)?;
    standin(&files.join("squashfs"), o.squashfs_bytes, 3)?;
    let key = StreamSigningKey::generate("maas demo <demo@maas.invalid>")?;
    let mirror = dir.join("mirror");
    StreamBuilder::new("io.maas-rs:demo:download")
        .add(BuildImage {
            key: ImageKey {
                os: "ubuntu".into(),
                release: "noble".into(),
                arch: "amd64".into(),
                subarch: "generic".into(),
                label: "stable".into(),
            },
            version: "20260101".into(),
            files: vec![
                (FileType::BootKernel, files.join("boot-kernel")),
                (FileType::BootInitrd, files.join("boot-initrd")),
                (FileType::Squashfs, files.join("squashfs")),
            ],
        })
        .write(&mirror, Some(&key))?;
    let store = ImageStore::open(store)?;
    let config = SyncConfig {
        keyring: Some(key.keyring()),
        ..SyncConfig::default()
    };
    maas_images::sync(&StreamSource::directory(mirror), &store, &config, &|_| {}).await?;
    Ok(())
}

/// The machines' network, set up through the REST API as an admin would:
/// the subnet, the rack's own addresses reserved, a dynamic range for
/// enlisting and commissioning, DHCP on with `rack_id` as primary rack.
pub async fn setup_network(api: &ApiClient, rack_id: &str) -> anyhow::Result<()> {
    // The machines' network: a subnet, a dynamic range for enlisting
    // and commissioning, the rack's own addresses reserved, DHCP on.
    let subnet = api.post("subnets/", &[("cidr", SUBNET)]).await?;
    let sid = subnet["id"].to_string();
    api.post(
        "ipranges/",
        &[
            ("type", "reserved"),
            ("start_ip", "127.77.0.1"),
            ("end_ip", "127.77.0.255"),
            ("subnet", &sid),
            ("comment", "rack and relay"),
        ],
    )
    .await?;
    api.post(
        "ipranges/",
        &[
            ("type", "dynamic"),
            ("start_ip", "127.77.1.1"),
            ("end_ip", "127.77.127.254"),
            ("subnet", &sid),
        ],
    )
    .await?;
    let fabric = subnet["vlan"]["fabric_id"].to_string();
    let vid = subnet["vlan"]["vid"].to_string();
    api.put(
        &format!("fabrics/{fabric}/vlans/{vid}/"),
        &[("dhcp_on", "true"), ("primary_rack", rack_id)],
    )
    .await?;
    Ok(())
}

impl Demo {
    /// Sets everything up: data directory, admin key, images, the
    /// all-in-one program, the subnet with DHCP on the rack, the fleet.
    pub async fn start(o: &Options) -> anyhow::Result<Demo> {
        Self::start_with(o, |l| Arc::new(l)).await
    }

    /// [`Demo::start`] with the rack's link to the region passed through
    /// `wrap`.
    pub async fn start_with(
        o: &Options,
        wrap: impl FnOnce(maas_region::LocalRegionLink) -> Arc<dyn maas_core::rack::RegionLink>,
    ) -> anyhow::Result<Demo> {
        let dir = tempfile::Builder::new().prefix("maas-demo-").tempdir()?;
        let data = dir.path().join("data");
        let store = open_store(&data).await?;
        let api_key =
            admin_key(&store, "admin", &format!("{:032x}", rand::random::<u128>())).await?;
        drop(store);
        images(dir.path(), &data.join("images"), o).await?;
        let loaders = dir.path().join("loaders");
        std::fs::create_dir_all(&loaders)?;
        // A stand-in for syslinux's loader: PXE machines fetch it over TFTP.
        standin(&loaders.join("lpxelinux.0"), 64 << 10, 4)?;

        let fleet = Fleet::bind(FleetSettings {
            machines: o.machines,
            relay_ip: RELAY,
            ..FleetSettings::default()
        })
        .await?;
        let mut s = Settings::new(data, RACK);
        s.api_listen = o.api_listen;
        s.http_listen = SocketAddr::from((RACK, 0));
        s.tftp_listen = Some(SocketAddr::from((RACK, 0)));
        s.dhcp_listen = Some(SocketAddr::from((RACK, 0)));
        s.dhcp_relay_port = fleet.relay_port();
        s.boot_loaders = Some(loaders);
        s.deadline_check = Duration::from_secs(2);
        s.network_rack = o.network_rack;
        let all = AllInOne::start_with(&s, wrap).await?;
        let url = format!("http://{}/MAAS", all.api_addr);
        let api = ApiClient::new(&url, &api_key)?;
        let rack_id = tokio::time::timeout(Duration::from_secs(30), all.rack.registered())
            .await
            .context("the rack did not register")?
            .context("the rack stopped")?;

        setup_network(&api, rack_id.as_str()).await?;
        tokio::time::timeout(
            Duration::from_secs(30),
            all.rack
                .wait_for_config(|c| c.subnets.iter().any(|s| s.cidr.to_string() == SUBNET)),
        )
        .await
        .context("the rack did not get the subnet")?;
        let mut fleet = fleet;
        fleet
            .start(RackTargets {
                dhcp: all.rack.dhcp_addr().context("the rack runs no DHCP")?,
                tftp_port: all.rack.tftp_addr().map(|a| a.port()).unwrap_or(69),
            })
            .await?;
        Ok(Demo {
            all,
            fleet,
            api,
            api_key,
            url,
            dir,
        })
    }

    async fn machines(&self) -> anyhow::Result<Vec<Value>> {
        match self.api.get("machines/").await? {
            Value::Array(v) => Ok(v),
            other => bail!("machines/ answered {other}"),
        }
    }

    /// Waits until `ok` holds for the machine list, printing progress.
    async fn wait(
        &self,
        what: &str,
        o: &Options,
        started: Instant,
        ok: impl Fn(&[Value]) -> bool,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + o.phase_timeout;
        let mut last_print = Instant::now() - Duration::from_secs(10);
        loop {
            let list = self.machines().await?;
            if ok(&list) {
                if o.progress {
                    self.progress(what, started, &list);
                }
                return Ok(list);
            }
            if let Some(bad) = list.iter().find(|m| {
                m["status_name"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("Failed"))
            }) {
                bail!(
                    "{what}: {} is {}: {}",
                    bad["hostname"],
                    bad["status_name"],
                    bad["error_description"]
                );
            }
            if Instant::now() > deadline {
                self.progress(what, started, &list);
                bail!("{what}: not done after {:?}", o.phase_timeout);
            }
            if o.progress && last_print.elapsed() >= Duration::from_secs(1) {
                self.progress(what, started, &list);
                last_print = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    #[allow(clippy::print_stdout)] // progress is the demo's output
    fn progress(&self, what: &str, started: Instant, list: &[Value]) {
        let mut by: BTreeMap<String, usize> = BTreeMap::new();
        for m in list {
            *by.entry(m["status_name"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
        for v in self.fleet.views() {
            *phases.entry(v.phase).or_default() += 1;
        }
        let statuses: Vec<String> = by.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let fleet: Vec<String> = phases.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "[{:>6.1}s] {what:<12} machines: {:<50} fleet: {}",
            started.elapsed().as_secs_f64(),
            statuses.join(", "),
            fleet.join(", ")
        );
    }

    /// Runs `op` on every machine in `ids`, 32 at a time.
    async fn each(&self, ids: &[String], op: &'static str) -> anyhow::Result<()> {
        let mut set = JoinSet::new();
        let limit = Arc::new(tokio::sync::Semaphore::new(32));
        for id in ids {
            let (api, id, limit) = (self.api.clone(), id.clone(), limit.clone());
            set.spawn(async move {
                let _permit = limit.acquire_owned().await;
                match op {
                    "deploy" => {
                        api.post("machines/?op=allocate", &[("system_id", &id)])
                            .await?;
                        api.post(&format!("machines/{id}/?op=deploy"), &[]).await
                    }
                    op => api.post(&format!("machines/{id}/?op={op}"), &[]).await,
                }
                .with_context(|| format!("{op} {id}"))
            });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
        Ok(())
    }

    /// The whole cycle.
    pub async fn run(&self, o: &Options) -> anyhow::Result<Report> {
        let started = Instant::now();
        let mut phases = Vec::new();
        let n = o.machines;
        let status_is = |s: &'static str| {
            move |l: &[Value]| l.len() == n && l.iter().all(|m| m["status_name"] == s)
        };

        // Enlist: press every power button.
        let t = Instant::now();
        for s in self.fleet.specs() {
            self.fleet.power_on(&s.node_id);
        }
        let list = self.wait("enlisting", o, started, status_is("New")).await?;
        // Each enlisting machine powers itself off when done.
        while self
            .fleet
            .specs()
            .iter()
            .any(|s| self.fleet.power(&s.node_id) != Some(Power::Off))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        phases.push(("enlist", t.elapsed().as_secs_f64()));
        let ids: Vec<String> = list
            .iter()
            .filter_map(|m| m["system_id"].as_str().map(str::to_owned))
            .collect();

        let t = Instant::now();
        self.each(&ids, "commission").await?;
        self.wait("commissioning", o, started, status_is("Ready"))
            .await?;
        phases.push(("commission", t.elapsed().as_secs_f64()));

        let t = Instant::now();
        self.each(&ids, "deploy").await?;
        self.wait("deploying", o, started, status_is("Deployed"))
            .await?;
        phases.push(("deploy", t.elapsed().as_secs_f64()));

        let t = Instant::now();
        let released: Vec<String> = ids.iter().step_by(2).cloned().collect();
        self.each(&released, "release").await?;
        let want_ready = released.clone();
        let list = self
            .wait("releasing", o, started, move |l| {
                l.iter()
                    .filter(|m| {
                        m["system_id"]
                            .as_str()
                            .is_some_and(|id| want_ready.iter().any(|r| r == id))
                    })
                    .all(|m| m["status_name"] == "Ready")
            })
            .await?;
        phases.push(("release", t.elapsed().as_secs_f64()));

        let st = self.fleet.stats();
        let g = maas_sim::FleetStats::get;
        Ok(Report {
            phases,
            final_status: list
                .iter()
                .map(|m| {
                    (
                        m["system_id"].as_str().unwrap_or("").to_owned(),
                        m["status_name"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect(),
            released,
            fleet: vec![
                ("boots", g(&st.boots)),
                ("dhcp_leases", g(&st.leases)),
                ("tftp_files", g(&st.tftp_files)),
                ("http_files", g(&st.http_files)),
                ("bytes", g(&st.bytes)),
                ("enlisted", g(&st.enlisted)),
                ("commissioned", g(&st.commissioned)),
                ("installed", g(&st.installed)),
                ("errors", g(&st.errors)),
            ],
            rack: self.all.rack.stats().snapshot(),
            power: self.all.power.counts(),
            total_secs: started.elapsed().as_secs_f64(),
            peak_rss_kib: process_usage().0,
            cpu_secs: process_usage().1,
        })
    }
}
