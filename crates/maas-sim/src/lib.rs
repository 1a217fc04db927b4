//! # maas-sim
//!
//! A simulated fleet that exercises a rack and region with the real
//! protocols only, unprivileged, on loopback:
//!
//! - one Redfish service for the whole fleet, a computer system per
//!   machine, which maas-power's Redfish driver (in the rack) controls;
//! - machines that, when powered on, network-boot: DHCP DISCOVER and
//!   REQUEST to the rack through a relay (`giaddr`, so no broadcast is
//!   needed), then the boot loader and its config over TFTP (PXE BIOS
//!   machines) or HTTP (iPXE machines), the kernel, initrd and squashfs
//!   over HTTP from the rack (bytes really move; nothing executes them),
//!   and the metadata API through the rack's pass-through, doing what the
//!   ephemeral environment's agent does: enlist, commission with a
//!   generated inventory, test, erase, deploy (curtin config, image,
//!   `netboot_off`, reboot), and, at the local boot that follows, the
//!   installed system's first user-data read.
//!
//! Each machine binds the address its lease gave it (all of 127.0.0.0/8 is
//! local on Linux), so the rack sees every machine at its own address.
//!
//! What is simulated (and so a fake): the BMCs and the machines' firmware
//! and OS. No real counterpart can run a thousand of them on one machine;
//! the BMC emulators and qemu are used where they can run (the maas-power
//! and network-boot tests).

mod bmc;
mod machine;
mod net;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use maas_core::MacAddress;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use bmc::Power;
pub use machine::{MachineSpec, MachineView};

/// What went wrong in the simulation (a protocol step that failed, named).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SimError(String);

impl SimError {
    pub(crate) fn new(s: impl Into<String>) -> Self {
        SimError(s.into())
    }
}

/// How the fleet is set up.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Machines.
    pub machines: usize,
    /// Where the BMC listens (`127.0.0.1:0` picks a port).
    pub bmc_listen: SocketAddr,
    /// The relay's address: it must be inside the subnet the rack serves.
    pub relay_ip: Ipv4Addr,
    /// The BMC's user name.
    pub bmc_user: String,
    /// The BMC's password.
    pub bmc_password: String,
    /// The first three bytes of every MAC.
    pub mac_prefix: [u8; 3],
    /// CPUs per machine.
    pub cpus: u32,
    /// Memory per machine, MiB.
    pub memory_mib: u64,
    /// Disk per machine, bytes.
    pub disk_bytes: u64,
    /// How long writing the image to disk takes (a real install takes
    /// minutes; the demo none).
    pub install_time: std::time::Duration,
}

impl Default for FleetSettings {
    fn default() -> Self {
        FleetSettings {
            machines: 10,
            bmc_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            relay_ip: Ipv4Addr::new(127, 77, 0, 2),
            bmc_user: "admin".into(),
            bmc_password: "sim-bmc-password".into(),
            mac_prefix: [0x52, 0x54, 0x00],
            cpus: 4,
            memory_mib: 8192,
            disk_bytes: 64 << 30,
            install_time: std::time::Duration::ZERO,
        }
    }
}

/// Counters of the fleet.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Network boots started.
    pub boots: AtomicU64,
    /// DHCP leases obtained.
    pub leases: AtomicU64,
    /// Files read over TFTP.
    pub tftp_files: AtomicU64,
    /// Files read over HTTP.
    pub http_files: AtomicU64,
    /// Bytes received (TFTP and HTTP).
    pub bytes: AtomicU64,
    /// Enlistments.
    pub enlisted: AtomicU64,
    /// Commissioning runs reported OK.
    pub commissioned: AtomicU64,
    /// Installs done.
    pub installed: AtomicU64,
    /// Boots that failed.
    pub errors: AtomicU64,
}

impl FleetStats {
    /// A counter's value.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Where the machines find their rack.
#[derive(Debug, Clone, Copy)]
pub struct RackTargets {
    /// The rack's DHCP server.
    pub dhcp: SocketAddr,
    /// The rack's TFTP port (69 on a real network).
    pub tftp_port: u16,
}

/// A running fleet: its BMC and relay are up from [`Fleet::bind`]; the
/// machines run from [`Fleet::start`]. Tasks stop when it is dropped.
pub struct Fleet {
    settings: FleetSettings,
    bmc: bmc::Bmc,
    bmc_addr: SocketAddr,
    relay_port: u16,
    relay: Option<Arc<net::Relay>>,
    relay_socket: Option<std::net::UdpSocket>,
    specs: Vec<MachineSpec>,
    views: Vec<watch::Receiver<MachineView>>,
    view_tx: Vec<watch::Sender<MachineView>>,
    stats: Arc<FleetStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("machines", &self.specs.len())
            .field("bmc", &self.bmc_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Fleet {
    /// Starts the BMC (every machine off) and binds the relay's port; the
    /// rack's DHCP must send relay replies to [`Fleet::relay_port`].
    pub async fn bind(settings: FleetSettings) -> Result<Fleet, SimError> {
        let listener = tokio::net::TcpListener::bind(settings.bmc_listen)
            .await
            .map_err(|e| SimError::new(format!("BMC on {}: {e}", settings.bmc_listen)))?;
        let bmc_addr = listener
            .local_addr()
            .map_err(|e| SimError::new(e.to_string()))?;
        let mut systems = BTreeMap::new();
        let mut specs = Vec::new();
        let mut views = Vec::new();
        let mut view_tx = Vec::new();
        for i in 0..settings.machines {
            let n = i + 1;
            let p = settings.mac_prefix;
            let mac = MacAddress([p[0], p[1], p[2], (n >> 16) as u8, (n >> 8) as u8, n as u8]);
            let spec = MachineSpec {
                node_id: format!("sim-{n:05}"),
                mac,
                hostname: format!("sim-{n:05}"),
                cpus: settings.cpus,
                memory_mib: settings.memory_mib,
                disk_bytes: settings.disk_bytes,
            };
            let (power, _) = watch::channel((Power::Off, 0u64));
            systems.insert(
                spec.node_id.clone(),
                bmc::System {
                    power,
                    boot_target: "Pxe".into(),
                },
            );
            let (tx, rx) = watch::channel(MachineView {
                phase: "off",
                ..Default::default()
            });
            views.push(rx);
            view_tx.push(tx);
            specs.push(spec);
        }
        let bmc = bmc::Bmc {
            systems: Arc::new(Mutex::new(systems)),
            user: settings.bmc_user.clone(),
            password: settings.bmc_password.clone(),
        };
        let mut tasks = vec![tokio::spawn(bmc::serve(listener, bmc.clone()))];
        // The relay socket is bound now so its port is known; it starts
        // relaying once the rack's address is known.
        let relay_socket = std::net::UdpSocket::bind((settings.relay_ip, 0))
            .map_err(|e| SimError::new(format!("DHCP relay on {}: {e}", settings.relay_ip)))?;
        let relay_port = relay_socket.local_addr().map(|a| a.port()).unwrap_or(0);
        tasks.shrink_to_fit();
        Ok(Fleet {
            relay_socket: Some(relay_socket),
            settings,
            bmc,
            bmc_addr,
            relay_port,
            relay: None,
            specs,
            views,
            view_tx,
            stats: Arc::new(FleetStats::default()),
            tasks,
        })
    }

    /// The port DHCP replies to the relay must go to.
    pub fn relay_port(&self) -> u16 {
        self.relay_port
    }

    /// The Redfish service's address (`power_address` is `http://<this>`).
    pub fn bmc_addr(&self) -> SocketAddr {
        self.bmc_addr
    }

    /// The machines.
    pub fn specs(&self) -> &[MachineSpec] {
        &self.specs
    }

    /// What each machine is doing, in [`Fleet::specs`] order.
    pub fn views(&self) -> Vec<MachineView> {
        self.views.iter().map(|v| v.borrow().clone()).collect()
    }

    /// The counters.
    pub fn stats(&self) -> Arc<FleetStats> {
        self.stats.clone()
    }

    /// A machine's power as its BMC holds it.
    pub fn power(&self, node_id: &str) -> Option<Power> {
        let systems = self.bmc.systems.lock().unwrap_or_else(|e| e.into_inner());
        systems.get(node_id).map(|s| s.power.borrow().0)
    }

    /// Presses a machine's power button (as a person in the data centre
    /// does to enlist a new machine).
    pub fn power_on(&self, node_id: &str) {
        self.bmc.set_power(node_id, Power::On);
    }

    /// Starts every machine's task (each waits for its power).
    pub async fn start(&mut self, rack: RackTargets) -> Result<(), SimError> {
        let socket = self
            .relay_socket
            .take()
            .ok_or_else(|| SimError::new("the fleet is already started"))?;
        let relay = Arc::new(net::Relay::new(socket, self.settings.relay_ip, rack.dhcp)?);
        self.relay = Some(relay.clone());
        let systems = self.bmc.systems.lock().unwrap_or_else(|e| e.into_inner());
        let mut tasks = Vec::new();
        for (i, spec) in self.specs.iter().enumerate() {
            let Some(sys) = systems.get(&spec.node_id) else {
                continue;
            };
            let m = Arc::new(machine::SimMachine {
                spec: spec.clone(),
                // Every other machine boots iPXE over HTTP; the rest PXE
                // over TFTP.
                firmware: if i % 2 == 0 {
                    net::Firmware::Ipxe
                } else {
                    net::Firmware::PxeBios
                },
                bmc: self.bmc.clone(),
                bmc_url: format!("http://{}", self.bmc_addr),
                relay: relay.clone(),
                tftp_port: rack.tftp_port,
                install_time: self.settings.install_time,
                stats: self.stats.clone(),
                view: self.view_tx[i].clone(),
                installed: Mutex::new(None),
            });
            tasks.push(tokio::spawn(machine::run(m, sys.power.subscribe())));
        }
        drop(systems);
        self.tasks.extend(tasks);
        Ok(())
    }

    /// The fleet's settings.
    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }
}
