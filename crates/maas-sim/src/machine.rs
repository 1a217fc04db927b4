//! One simulated machine: powered by its BMC, it network-boots through the
//! rack and does what the ephemeral environment's agent does, with the
//! real protocols: DHCP (through the relay), the boot loader and its
//! config over TFTP or HTTP, kernel, initrd and squashfs over HTTP (the
//! bytes really move; nothing runs them), then the metadata API through
//! the rack: enlist, commission with a generated inventory, erase, test,
//! deploy (curtin config, image, `netboot_off`, reboot), and on the local
//! boot that follows, the installed system's first user-data read.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use maas_core::MacAddress;
use maas_core::inventory::{DiskReport, Inventory, NicReport};
use maas_core::machine::{CpuInfo, FirmwareInfo, FirmwareKind, HardwareInventory, SystemInfo};
use serde_yaml_ng::Value as Yaml;
use tokio::sync::watch;

use crate::bmc::{Bmc, Power};
use crate::net::{Firmware, Lease, Relay, tftp_get};
use crate::{FleetStats, SimError};

/// Node credentials from the preseed (the MAAS datasource config).
#[derive(Clone)]
pub(crate) struct NodeCreds {
    metadata_url: String,
    consumer_key: String,
    token_key: String,
    token_secret: String,
}

impl NodeCreds {
    fn header(&self) -> String {
        format!(
            "OAuth oauth_version=\"1.0\", oauth_signature_method=\"PLAINTEXT\", oauth_consumer_key=\"{}\", oauth_token=\"{}\", oauth_signature=\"%26{}\", oauth_nonce=\"{:016x}\", oauth_timestamp=\"{}\"",
            self.consumer_key,
            self.token_key,
            self.token_secret,
            rand::random::<u64>(),
            chrono::Utc::now().timestamp()
        )
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/{rest}", self.metadata_url.trim_end_matches('/'))
    }
}

/// What the simulated hardware is.
#[derive(Debug, Clone)]
pub struct MachineSpec {
    /// The BMC's system id (`node_id`).
    pub node_id: String,
    /// The boot NIC's MAC.
    pub mac: MacAddress,
    /// The host name it enlists with.
    pub hostname: String,
    /// CPU count.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// The one disk's size.
    pub disk_bytes: u64,
}

/// What a machine is doing, for progress displays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineView {
    /// The phase (`off`, `dhcp`, `loading`, `enlisting`, ...).
    pub phase: &'static str,
    /// Network boots so far.
    pub boots: u32,
    /// The last error, if any.
    pub error: Option<String>,
}

pub(crate) struct SimMachine {
    pub(crate) spec: MachineSpec,
    pub(crate) firmware: Firmware,
    pub(crate) bmc: Bmc,
    pub(crate) bmc_url: String,
    pub(crate) relay: Arc<Relay>,
    pub(crate) tftp_port: u16,
    pub(crate) install_time: Duration,
    pub(crate) stats: Arc<FleetStats>,
    pub(crate) view: watch::Sender<MachineView>,
    /// The credentials curtin wrote into the installed system.
    pub(crate) installed: std::sync::Mutex<Option<NodeCreds>>,
}

enum BootConfig {
    Ephemeral {
        kernel: String,
        initrd: String,
        squashfs: Option<String>,
        cloud_config: String,
    },
    Local,
    Poweroff,
}

fn parse_config(text: &str) -> Result<BootConfig, SimError> {
    let mut kernel = None;
    let mut initrd = None;
    let mut cmdline = String::new();
    for line in text.lines().map(str::trim) {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "kernel" | "KERNEL" => {
                let (url, args) = rest.split_once(' ').unwrap_or((rest, ""));
                kernel = Some(url.to_owned());
                cmdline.push_str(args);
                cmdline.push(' ');
            }
            "initrd" | "INITRD" => initrd = Some(rest.trim().to_owned()),
            "APPEND" => {
                cmdline.push_str(rest);
                cmdline.push(' ');
            }
            "LOCALBOOT" => return Ok(BootConfig::Local),
            "COM32" if rest.contains("poweroff") => return Ok(BootConfig::Poweroff),
            "poweroff" => return Ok(BootConfig::Poweroff),
            _ if line.contains("sanboot") => return Ok(BootConfig::Local),
            _ => {}
        }
    }
    let (Some(kernel), Some(initrd)) = (kernel, initrd) else {
        return Err(SimError::new(format!(
            "boot config names no kernel and initrd:\n{text}"
        )));
    };
    let arg = |key: &str| {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_owned)
    };
    let cloud_config = arg("cloud-config-url=")
        .ok_or_else(|| SimError::new("the kernel command line has no cloud-config-url"))?;
    Ok(BootConfig::Ephemeral {
        kernel,
        initrd,
        squashfs: arg("root=squash:"),
        cloud_config,
    })
}

fn parse_creds(preseed: &str) -> Result<Option<NodeCreds>, SimError> {
    let doc: Yaml = serde_yaml_ng::from_str(preseed)
        .map_err(|e| SimError::new(format!("the preseed is not YAML: {e}")))?;
    let ds = &doc["datasource"]["MAAS"];
    let text = |k: &str| ds[k].as_str().map(str::to_owned);
    let Some(metadata_url) = text("metadata_url") else {
        return Err(SimError::new(
            "the preseed has no datasource.MAAS.metadata_url",
        ));
    };
    Ok(
        match (
            text("consumer_key"),
            text("token_key"),
            text("token_secret"),
        ) {
            (Some(consumer_key), Some(token_key), Some(token_secret)) => Some(NodeCreds {
                metadata_url,
                consumer_key,
                token_key,
                token_secret,
            }),
            _ => None,
        },
    )
}

impl SimMachine {
    fn phase(&self, phase: &'static str) {
        self.view.send_modify(|v| v.phase = phase);
    }

    fn client(&self, ip: Ipv4Addr) -> Result<reqwest::Client, SimError> {
        reqwest::Client::builder()
            .local_address(IpAddr::V4(ip))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| SimError::new(format!("HTTP client: {e}")))
    }

    /// GETs `url` and returns the body, counting the bytes.
    async fn fetch(
        &self,
        http: &reqwest::Client,
        url: &str,
        auth: Option<&NodeCreds>,
    ) -> Result<Vec<u8>, SimError> {
        self.get(http, url, auth, true).await
    }

    /// GETs a boot file or image: the bytes are counted as they arrive and
    /// dropped (nothing here runs them), so a large fleet holds no copies.
    async fn download(&self, http: &reqwest::Client, url: &str) -> Result<(), SimError> {
        self.get(http, url, None, false).await.map(|_| ())
    }

    async fn get(
        &self,
        http: &reqwest::Client,
        url: &str,
        auth: Option<&NodeCreds>,
        keep: bool,
    ) -> Result<Vec<u8>, SimError> {
        let mut resp = retrying(url, || {
            let mut req = http.get(url);
            if let Some(c) = auth {
                req = req.header("Authorization", c.header());
            }
            req
        })
        .await?;
        let status = resp.status();
        let mut body = Vec::new();
        let mut total = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| SimError::new(format!("GET {url}: {e}")))?
        {
            total += chunk.len() as u64;
            if keep || !status.is_success() {
                body.extend_from_slice(&chunk);
            }
        }
        if !status.is_success() {
            return Err(SimError::new(format!(
                "GET {url}: {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            )));
        }
        self.stats.http_files.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(total, Ordering::Relaxed);
        Ok(body)
    }

    async fn post(
        &self,
        http: &reqwest::Client,
        url: &str,
        auth: Option<&NodeCreds>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<String, SimError> {
        let resp = retrying(url, || {
            let mut req = http
                .post(url)
                .header("Content-Type", content_type)
                .body(body.clone());
            if let Some(c) = auth {
                req = req.header("Authorization", c.header());
            }
            req
        })
        .await?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(SimError::new(format!("POST {url}: {status}: {text}")));
        }
        Ok(text)
    }

    /// `op=signal` as the agent sends it: multipart, files base64-encoded
    /// (as python-libmaas and MAAS's own scripts do).
    async fn signal(
        &self,
        http: &reqwest::Client,
        c: &NodeCreds,
        status: &str,
        files: &[(&str, Vec<u8>)],
    ) -> Result<(), SimError> {
        let b = format!("maas-sim-{:016x}", rand::random::<u64>());
        let mut body = Vec::new();
        for (k, v) in [("op", "signal"), ("status", status)] {
            body.extend_from_slice(
                format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                    .as_bytes(),
            );
        }
        for (name, data) in files {
            body.extend_from_slice(
                format!(
                    "--{b}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                    base64::engine::general_purpose::STANDARD.encode(data)
                )
                .as_bytes(),
            );
        }
        body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
        self.post(
            http,
            &c.url("latest/"),
            Some(c),
            &format!("multipart/form-data; boundary={b}"),
            body,
        )
        .await
        .map(|_| ())
    }

    fn inventory(&self, lease: &Lease) -> Vec<u8> {
        let s = &self.spec;
        let inv = Inventory {
            hardware: HardwareInventory {
                cpu: CpuInfo {
                    count: s.cpus,
                    model: "maas-sim virtual CPU".into(),
                    speed_mhz: 2400,
                },
                memory_mib: s.memory_mib,
                system: SystemInfo {
                    vendor: "maas-sim".into(),
                    product: "Simulated machine".into(),
                    serial: s.node_id.clone(),
                    ..Default::default()
                },
                firmware: FirmwareInfo {
                    kind: FirmwareKind::Bios,
                    vendor: "maas-sim".into(),
                    ..Default::default()
                },
                ..Default::default()
            },
            nics: vec![NicReport {
                name: "eth0".into(),
                mac: s.mac.to_string(),
                link_speed_mbps: 10000,
                interface_speed_mbps: 10000,
                link_connected: true,
                vendor: "maas-sim".into(),
                product: "virtual NIC".into(),
                driver: "sim".into(),
                addresses: vec![format!("{}/{}", lease.ip, lease.prefix)],
            }],
            disks: vec![DiskReport {
                name: "sda".into(),
                size_bytes: s.disk_bytes,
                block_size: 512,
                serial: format!("{}-disk0", s.node_id),
                model: "maas-sim disk".into(),
                rotational: false,
                id_path: None,
            }],
        };
        serde_json::to_vec(&inv).unwrap_or_default()
    }

    fn power_off(&self) {
        self.phase("off");
        self.bmc.set_power(&self.spec.node_id, Power::Off);
    }

    /// From power-on to the machine powering itself off (`Ok(true)`) or
    /// running an installed system or rescue environment until its BMC
    /// turns it off (never returns then).
    pub(crate) async fn boot(&self) -> Result<(), SimError> {
        loop {
            self.view.send_modify(|v| {
                v.boots += 1;
                v.phase = "dhcp";
            });
            self.stats.boots.fetch_add(1, Ordering::Relaxed);
            let lease = self.relay.lease(self.spec.mac, self.firmware).await?;
            self.stats.leases.fetch_add(1, Ordering::Relaxed);
            let http = self.client(lease.ip)?;
            self.phase("loader");
            let config = match self.firmware {
                Firmware::Ipxe => {
                    // The script DHCP named, then the machine's own.
                    self.fetch(&http, &lease.filename, None).await?;
                    let base = lease
                        .filename
                        .rsplit_once('/')
                        .map(|(b, _)| b.to_owned())
                        .unwrap_or_default();
                    let hex: String = self.spec.mac.0.iter().map(|b| format!("{b:02x}")).collect();
                    self.fetch(&http, &format!("{base}/mac-{hex}.ipxe"), None)
                        .await?
                }
                Firmware::PxeBios => {
                    let tftp = SocketAddr::from((lease.next_server, self.tftp_port));
                    let loader = tftp_get(lease.ip, tftp, &lease.filename).await?;
                    self.stats.tftp_files.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .bytes
                        .fetch_add(loader.len() as u64, Ordering::Relaxed);
                    let name = format!("pxelinux.cfg/01-{}", self.spec.mac.to_hyphenated());
                    let cfg = tftp_get(lease.ip, tftp, &name).await?;
                    self.stats.tftp_files.fetch_add(1, Ordering::Relaxed);
                    cfg
                }
            };
            let config = String::from_utf8_lossy(&config).into_owned();
            match parse_config(&config)? {
                BootConfig::Poweroff => {
                    self.power_off();
                    return Ok(());
                }
                BootConfig::Local => {
                    let creds = self
                        .installed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    let Some(c) = creds else {
                        self.phase("no-os");
                        return std::future::pending().await;
                    };
                    // The installed system's cloud-init, first boot.
                    self.phase("first-boot");
                    match self
                        .fetch(&http, &c.url("latest/user-data"), Some(&c))
                        .await
                    {
                        Ok(_) => {}
                        // No user data given: cloud-init carries on.
                        Err(e) if e.to_string().contains(": 404 Not Found") => {}
                        Err(e) => return Err(e),
                    }
                    self.phase("deployed");
                    return std::future::pending().await;
                }
                BootConfig::Ephemeral {
                    kernel,
                    initrd,
                    squashfs,
                    cloud_config,
                } => {
                    self.phase("loading");
                    self.download(&http, &kernel).await?;
                    self.download(&http, &initrd).await?;
                    if let Some(sq) = &squashfs {
                        self.download(&http, sq).await?;
                    }
                    let preseed = self.fetch(&http, &cloud_config, None).await?;
                    let preseed = String::from_utf8_lossy(&preseed).into_owned();
                    match parse_creds(&preseed)? {
                        None => {
                            self.enlist(&http, &cloud_config).await?;
                            self.power_off();
                            return Ok(());
                        }
                        Some(c) if c.metadata_url.trim_end_matches('/').ends_with("/curtin") => {
                            self.deploy(&http, &c).await?;
                            // Reboot into the installed system.
                            continue;
                        }
                        Some(c) => {
                            let stay = self.ephemeral_work(&http, &c, &lease).await?;
                            if stay {
                                return std::future::pending().await;
                            }
                            self.power_off();
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    async fn enlist(&self, http: &reqwest::Client, cloud_config: &str) -> Result<(), SimError> {
        self.phase("enlisting");
        // The API is where the metadata service is: through the rack.
        let base = cloud_config
            .split_once("/MAAS/")
            .map(|(b, _)| b.to_owned())
            .ok_or_else(|| SimError::new(format!("{cloud_config}: not a MAAS URL")))?;
        let params = serde_json::json!({
            "power_address": self.bmc_url,
            "power_user": self.bmc.user,
            "power_pass": self.bmc.password,
            "node_id": self.spec.node_id,
        });
        let form = [
            ("architecture", "amd64/generic".to_owned()),
            ("mac_addresses", self.spec.mac.to_string()),
            ("hostname", self.spec.hostname.clone()),
            ("power_type", "redfish".to_owned()),
            ("power_parameters", params.to_string()),
        ];
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.post(
            http,
            &format!("{base}/MAAS/api/2.0/machines/"),
            None,
            "application/x-www-form-urlencoded",
            body.into_bytes(),
        )
        .await?;
        self.stats.enlisted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Commissioning, testing, erasing, rescue: what the user-data's
    /// `runcmd` asks of the agent. Returns whether the machine stays on.
    async fn ephemeral_work(
        &self,
        http: &reqwest::Client,
        c: &NodeCreds,
        lease: &Lease,
    ) -> Result<bool, SimError> {
        let ud = self
            .fetch(http, &c.url("latest/user-data"), Some(c))
            .await?;
        let ud = String::from_utf8_lossy(&ud).into_owned();
        let doc: Yaml = serde_yaml_ng::from_str(&ud)
            .map_err(|e| SimError::new(format!("user-data is not YAML: {e}")))?;
        let purpose = doc["runcmd"][0][1].as_str().unwrap_or("").to_owned();
        match purpose.as_str() {
            "commission" => {
                self.phase("commissioning");
                self.signal(http, c, "WORKING", &[]).await?;
                let inv = self.inventory(lease);
                self.signal(
                    http,
                    c,
                    "OK",
                    &[(maas_core::inventory::INVENTORY_SCRIPT, inv)],
                )
                .await?;
                self.stats.commissioned.fetch_add(1, Ordering::Relaxed);
                Ok(false)
            }
            "test" | "erase" => {
                self.phase(if purpose == "test" {
                    "testing"
                } else {
                    "erasing"
                });
                self.signal(http, c, "OK", &[]).await?;
                Ok(false)
            }
            "rescue" => {
                self.phase("rescue");
                self.signal(http, c, "OK", &[]).await?;
                Ok(true)
            }
            other => Err(SimError::new(format!(
                "user-data asks the agent for {other:?}, which this simulation does not do"
            ))),
        }
    }

    async fn deploy(&self, http: &reqwest::Client, c: &NodeCreds) -> Result<(), SimError> {
        self.phase("installing");
        let cfg = self
            .fetch(http, &c.url("latest/user-data"), Some(c))
            .await?;
        let cfg = String::from_utf8_lossy(&cfg).into_owned();
        let doc: Yaml = serde_yaml_ng::from_str(&cfg)
            .map_err(|e| SimError::new(format!("the curtin config is not YAML: {e}")))?;
        let Some(sources) = doc["sources"].as_mapping() else {
            return Err(SimError::new("the curtin config has no sources"));
        };
        for (_, src) in sources {
            let Some(uri) = src["uri"].as_str() else {
                continue;
            };
            // curtin writes the image to disk; here the bytes are counted.
            self.download(http, uri).await?;
        }
        tokio::time::sleep(self.install_time).await;
        self.signal(http, c, "OK", &[]).await?;
        // curtin's last step: boot from disk from now on.
        let by_id = c
            .metadata_url
            .trim_end_matches('/')
            .trim_end_matches("/curtin")
            .to_owned()
            + &format!("/latest/by-id/{}/", self.system_id_of(http, c).await?);
        self.post(
            http,
            &by_id,
            Some(c),
            "application/x-www-form-urlencoded",
            b"op=netboot_off".to_vec(),
        )
        .await?;
        // The installed system's cloud-init reads the plain metadata tree.
        let installed = NodeCreds {
            metadata_url: c
                .metadata_url
                .trim_end_matches('/')
                .trim_end_matches("/curtin")
                .to_owned(),
            ..c.clone()
        };
        *self.installed.lock().unwrap_or_else(|e| e.into_inner()) = Some(installed);
        self.stats.installed.fetch_add(1, Ordering::Relaxed);
        self.phase("rebooting");
        Ok(())
    }

    /// The system id, from the metadata service's `meta-data/instance-id`.
    async fn system_id_of(
        &self,
        http: &reqwest::Client,
        c: &NodeCreds,
    ) -> Result<String, SimError> {
        let plain = c
            .metadata_url
            .trim_end_matches('/')
            .trim_end_matches("/curtin")
            .to_owned();
        let id = self
            .fetch(
                http,
                &format!("{plain}/latest/meta-data/instance-id"),
                Some(c),
            )
            .await?;
        Ok(String::from_utf8_lossy(&id).trim().to_owned())
    }
}

/// Sends a request again while the rack cannot reach its region (502) or
/// is not there, for about a minute, as cloud-init's and curtin's URL
/// helpers retry: a region restarting under a deploying machine delays the
/// machine, it does not fail it.
async fn retrying(
    url: &str,
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, SimError> {
    let mut wait = Duration::from_millis(250);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let outcome = make().send().await;
        let retry = match &outcome {
            Ok(r) => matches!(r.status().as_u16(), 502 | 503),
            Err(e) => e.is_connect() || e.is_timeout(),
        };
        if !retry || tokio::time::Instant::now() + wait > deadline {
            return outcome.map_err(|e| SimError::new(format!("{url}: {e}")));
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(4));
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Waits until the power is `want`; false when the BMC is gone.
async fn wait_power(rx: &mut watch::Receiver<(Power, u64)>, want: Power) -> bool {
    rx.wait_for(|(p, _)| *p == want).await.is_ok()
}

/// Waits until the BMC has been told anything since `generation`.
async fn wait_change(rx: &mut watch::Receiver<(Power, u64)>, generation: u64) -> bool {
    rx.wait_for(|(_, n)| *n != generation).await.is_ok()
}

/// Runs a machine for as long as the task lives: every power-on boots it;
/// any later BMC action (off, restart) stops whatever it was doing, and a
/// restart boots it again.
pub(crate) async fn run(m: Arc<SimMachine>, mut power: watch::Receiver<(Power, u64)>) {
    loop {
        if !wait_power(&mut power, Power::On).await {
            return;
        }
        let generation = power.borrow().1;
        let mut changed = power.clone();
        tokio::select! {
            r = m.boot() => {
                if let Err(e) = r {
                    m.stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node = %m.spec.node_id, error = %e, "simulated machine failed");
                    m.view.send_modify(|v| {
                        v.error = Some(e.to_string());
                        v.phase = "failed";
                    });
                    // A machine whose boot failed sits there until its BMC
                    // is told something (the region's deadline does that).
                    let mut until = power.clone();
                    wait_change(&mut until, generation).await;
                }
            }
            _ = wait_change(&mut changed, generation) => {
                m.phase("off");
            }
        }
    }
}
