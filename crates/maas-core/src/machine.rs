//! The machine: identity, placement, power, interfaces, disks and inventory.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::ids::{BlockDeviceId, InterfaceId, StaticAddressId, SubnetId, SystemId, VlanId};
use crate::lifecycle::NodeStatus;
use crate::network::IpAddressType;
use crate::types::{Architecture, DomainName, Hostname, MacAddress};

/// A machine's power state as last seen through its BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// Powered on.
    On,
    /// Powered off.
    Off,
    /// Not known (never queried, or the BMC could not tell).
    #[default]
    Unknown,
    /// The last query failed.
    Error,
}

impl PowerState {
    /// The lowercase name clients see.
    pub const fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
            PowerState::Unknown => "unknown",
            PowerState::Error => "error",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" => Ok(PowerState::On),
            "off" => Ok(PowerState::Off),
            "unknown" => Ok(PowerState::Unknown),
            "error" => Ok(PowerState::Error),
            _ => Err(ValidationError::new(
                "power_state",
                s,
                "expected on, off, unknown or error",
            )),
        }
    }
}

/// Power parameters (`power_address`, `power_user`, `power_pass`, ...).
///
/// `Debug` prints the keys only: these maps carry BMC passwords, and a
/// `{:?}` in a log line must not leak them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PowerParameters(pub BTreeMap<String, String>);

impl PowerParameters {
    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

impl fmt::Debug for PowerParameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

/// Firmware kind the machine boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareKind {
    /// Legacy BIOS.
    Bios,
    /// UEFI.
    Uefi,
    /// Not yet known (before commissioning).
    #[default]
    Unknown,
}

/// CPU facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuInfo {
    /// Logical CPU count.
    pub count: u32,
    /// Model name.
    pub model: String,
    /// Speed in MHz.
    pub speed_mhz: u32,
}

/// A PCI (or USB) device; GPUs are PCI devices listed apart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PciDevice {
    /// Vendor id, hex without prefix (`10de`).
    pub vendor_id: String,
    /// Product id, hex without prefix.
    pub product_id: String,
    /// Vendor name.
    pub vendor_name: String,
    /// Product name.
    pub product_name: String,
    /// Kernel driver bound during commissioning.
    pub commissioning_driver: String,
    /// Bus address (`0000:00:1f.2`).
    pub pci_address: String,
}

/// The system as DMI describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SystemInfo {
    /// Manufacturer.
    pub vendor: String,
    /// Product name.
    pub product: String,
    /// Serial number.
    pub serial: String,
    /// System UUID (SMBIOS), also sent by PXE clients in DHCP option 97.
    pub uuid: Option<String>,
}

/// Firmware facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FirmwareInfo {
    /// BIOS or UEFI.
    pub kind: FirmwareKind,
    /// Vendor.
    pub vendor: String,
    /// Version.
    pub version: String,
    /// Release date as the firmware reports it.
    pub date: String,
}

/// Hardware inventory gathered by commissioning. Disks and NICs are the
/// machine's [`BlockDevice`]s and [`Interface`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HardwareInventory {
    /// CPUs.
    pub cpu: CpuInfo,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// GPUs.
    pub gpus: Vec<PciDevice>,
    /// Other PCI devices.
    pub pci_devices: Vec<PciDevice>,
    /// DMI system information.
    pub system: SystemInfo,
    /// Firmware.
    pub firmware: FirmwareInfo,
}

/// The kind of a network interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum InterfaceKind {
    Physical,
    Bond,
    Bridge,
    Vlan,
    Alias,
}

impl InterfaceKind {
    /// The lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            InterfaceKind::Physical => "physical",
            InterfaceKind::Bond => "bond",
            InterfaceKind::Bridge => "bridge",
            InterfaceKind::Vlan => "vlan",
            InterfaceKind::Alias => "alias",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Ok(match s {
            "physical" => InterfaceKind::Physical,
            "bond" => InterfaceKind::Bond,
            "bridge" => InterfaceKind::Bridge,
            "vlan" => InterfaceKind::Vlan,
            "alias" => InterfaceKind::Alias,
            _ => {
                return Err(ValidationError::new(
                    "type",
                    s,
                    "expected physical, bond, bridge, vlan or alias",
                ));
            }
        })
    }
}

/// How an interface gets an address on a subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkMode {
    /// An address picked by MAAS at deploy time.
    Auto,
    /// DHCP from the subnet.
    Dhcp,
    /// A fixed address.
    Static,
    /// Up, no address.
    LinkUp,
}

impl LinkMode {
    /// The name clients use.
    pub const fn as_str(self) -> &'static str {
        match self {
            LinkMode::Auto => "auto",
            LinkMode::Dhcp => "dhcp",
            LinkMode::Static => "static",
            LinkMode::LinkUp => "link_up",
        }
    }

    /// The IP address type a link of this mode is stored as (MAAS keeps
    /// `link_up` and `static` both as STICKY, told apart by having an address).
    pub const fn address_type(self) -> IpAddressType {
        match self {
            LinkMode::Auto => IpAddressType::Auto,
            LinkMode::Dhcp => IpAddressType::Dhcp,
            LinkMode::Static | LinkMode::LinkUp => IpAddressType::Sticky,
        }
    }

    /// The mode of a stored address.
    pub fn from_address(kind: IpAddressType, ip: Option<IpAddr>) -> Self {
        match kind {
            IpAddressType::Auto => LinkMode::Auto,
            IpAddressType::Dhcp | IpAddressType::Discovered => LinkMode::Dhcp,
            IpAddressType::Sticky | IpAddressType::UserReserved => {
                if ip.is_some() {
                    LinkMode::Static
                } else {
                    LinkMode::LinkUp
                }
            }
        }
    }
}

/// An interface's link to a subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceLink {
    /// The stored address row (assigned by the store).
    pub id: Option<StaticAddressId>,
    /// How the address is obtained.
    pub mode: LinkMode,
    /// The subnet (`None` only for `link_up` without a subnet).
    pub subnet: Option<SubnetId>,
    /// The address, when one is assigned.
    pub ip: Option<IpAddr>,
}

/// What a node is (MAAS `NODE_TYPE`): a machine MAAS provisions, or a
/// device it only tracks (addresses, DNS) and never powers or deploys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// A machine (0).
    #[default]
    Machine,
    /// A device (1).
    Device,
    /// A rack controller (2): registered through the rack protocol.
    RackController,
}

impl NodeType {
    /// MAAS's number.
    pub const fn code(self) -> u8 {
        match self {
            NodeType::Machine => 0,
            NodeType::Device => 1,
            NodeType::RackController => 2,
        }
    }

    /// By MAAS's number.
    pub fn from_code(code: i64) -> Option<NodeType> {
        match code {
            0 => Some(NodeType::Machine),
            1 => Some(NodeType::Device),
            2 => Some(NodeType::RackController),
            _ => None,
        }
    }

    /// MAAS's label (`Machine`, `Device`).
    pub const fn label(self) -> &'static str {
        match self {
            NodeType::Machine => "Machine",
            NodeType::Device => "Device",
            NodeType::RackController => "Rack controller",
        }
    }
}

/// The links (their stored address ids) a machine's default IPv4 and IPv6
/// routes go through; `None`: the first link whose subnet has a gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayLinks {
    /// The IPv4 default route's link.
    pub ipv4: Option<StaticAddressId>,
    /// The IPv6 default route's link.
    pub ipv6: Option<StaticAddressId>,
}

/// A network interface of a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Assigned by the store.
    pub id: Option<InterfaceId>,
    /// Name (`eth0`, `bond0`, `eth0.100`).
    pub name: String,
    /// Kind.
    pub kind: InterfaceKind,
    /// MAC address (physical interfaces always have one).
    pub mac: Option<MacAddress>,
    /// Parent interface names (bond members, bridge ports, VLAN parent).
    pub parents: Vec<String>,
    /// The VLAN the interface is attached to.
    pub vlan: Option<VlanId>,
    /// Administratively enabled.
    pub enabled: bool,
    /// Whether a cable is connected, as commissioning saw it.
    pub link_connected: bool,
    /// Negotiated link speed, Mbit/s (0 = unknown).
    pub link_speed_mbps: u32,
    /// Maximum interface speed, Mbit/s (0 = unknown).
    pub interface_speed_mbps: u32,
    /// NIC vendor.
    pub vendor: String,
    /// NIC product.
    pub product: String,
    /// Kernel driver.
    pub driver: String,
    /// Tags (`sriov`, ...).
    pub tags: Vec<String>,
    /// Type-specific parameters (`bond_mode`, `bond_miimon`, `bridge_stp`, `mtu`...).
    pub params: BTreeMap<String, String>,
    /// Subnet links.
    pub links: Vec<InterfaceLink>,
}

impl Interface {
    /// A physical interface with a MAC and nothing else set.
    pub fn physical(name: impl Into<String>, mac: MacAddress) -> Self {
        Interface {
            id: None,
            name: name.into(),
            kind: InterfaceKind::Physical,
            mac: Some(mac),
            parents: Vec::new(),
            vlan: None,
            enabled: true,
            link_connected: true,
            link_speed_mbps: 0,
            interface_speed_mbps: 0,
            vendor: String::new(),
            product: String::new(),
            driver: String::new(),
            tags: Vec::new(),
            params: BTreeMap::new(),
            links: Vec::new(),
        }
    }
}

/// The kind of a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockDeviceKind {
    /// A disk the machine has.
    #[default]
    Physical,
    /// A device built on others (RAID, LVM, bcache).
    Virtual,
}

/// A block device (disk) of a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    /// Assigned by the store.
    pub id: Option<BlockDeviceId>,
    /// Kernel name (`sda`, `nvme0n1`).
    pub name: String,
    /// Physical or virtual.
    pub kind: BlockDeviceKind,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Serial number.
    pub serial: String,
    /// Model.
    pub model: String,
    /// Spinning disk.
    pub rotational: bool,
    /// Stable path (`/dev/disk/by-id/...`).
    pub id_path: Option<String>,
    /// Tags (`ssd`, `rotary`, `nvme`...), used by storage constraints.
    pub tags: Vec<String>,
}

impl BlockDevice {
    /// A physical disk with a name and size and nothing else set.
    pub fn disk(name: impl Into<String>, size_bytes: u64) -> Self {
        BlockDevice {
            id: None,
            name: name.into(),
            kind: BlockDeviceKind::Physical,
            size_bytes,
            block_size: 512,
            serial: String::new(),
            model: String::new(),
            rotational: false,
            id_path: None,
            tags: Vec::new(),
        }
    }
}

/// User data for a deployed OS: opaque bytes that may hold secrets, so
/// `Debug` shows only the length.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserData(pub Vec<u8>);

impl fmt::Debug for UserData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserData({} bytes)", self.0.len())
    }
}

fn yes() -> bool {
    true
}

/// A machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Identity.
    pub system_id: SystemId,
    /// Host name.
    pub hostname: Hostname,
    /// DNS domain (the zone's `name`, default `maas`).
    pub domain: DomainName,
    /// Architecture.
    pub architecture: Architecture,
    /// Lifecycle status.
    pub status: NodeStatus,
    /// The status before the current in-progress one (abort and mark-fixed
    /// return there).
    pub previous_status: Option<NodeStatus>,
    /// The owning user's name, when allocated.
    pub owner: Option<String>,
    /// Availability zone name.
    pub zone: String,
    /// Resource pool name.
    pub pool: String,
    /// Tag names.
    pub tags: BTreeSet<String>,
    /// Power driver name (`ipmi`, `redfish`, `virsh`, `manual`...); empty = unset.
    pub power_type: String,
    /// Power driver parameters (secret: redacted in `Debug`).
    pub power_parameters: PowerParameters,
    /// Last known power state.
    pub power_state: PowerState,
    /// Name of the interface the machine PXE-boots from.
    pub boot_interface: Option<String>,
    /// Network interfaces.
    pub interfaces: Vec<Interface>,
    /// Block devices.
    pub block_devices: Vec<BlockDevice>,
    /// Hardware inventory.
    pub hardware: HardwareInventory,
    /// Locked against changes.
    pub locked: bool,
    /// Deploy to memory only (`deployment_target=ephemeral`).
    pub ephemeral_deploy: bool,
    /// Whether the machine boots over the network (MAAS's `netboot`):
    /// curtin turns it off before rebooting into the installed system;
    /// deploying and releasing turn it on.
    #[serde(default = "yes")]
    pub netboot: bool,
    /// The OS of the current deployment (`ubuntu`), empty when none.
    pub osystem: String,
    /// The series of the current deployment (`noble`), empty when none.
    pub distro_series: String,
    /// The user data of the current deployment, served to the deployed OS.
    pub user_data: Option<UserData>,
    /// What the owner (or its workload) attached to the machine: MAAS's
    /// `owner_data`, later called `workload_annotations`. Cleared on release.
    #[serde(default)]
    pub owner_data: BTreeMap<String, String>,
    /// The storage layout chosen with `set_storage_layout`, as the JSON of
    /// maas-curtin's `StorageLayout` (kept as text here: the layouts are
    /// maas-curtin's, a layer above); `None`: the configured default.
    #[serde(default)]
    pub storage_layout: Option<String>,
    /// The links the default routes go through, chosen with
    /// `set_default_gateway`.
    #[serde(default)]
    pub gateway_links: GatewayLinks,
    /// A machine, or a device MAAS only tracks.
    #[serde(default)]
    pub node_type: NodeType,
    /// For a device: the machine it belongs to.
    #[serde(default)]
    pub parent: Option<SystemId>,
    /// Free text.
    pub description: String,
    /// Why the last operation failed, or the mark-broken comment.
    pub error_description: String,
    /// When the current in-progress status fails if nothing happens.
    pub status_deadline: Option<DateTime<Utc>>,
    /// Created.
    pub created: DateTime<Utc>,
    /// Last changed.
    pub updated: DateTime<Utc>,
    /// Optimistic-concurrency version; the store bumps it on every write and
    /// refuses a write made from a stale copy.
    pub version: i64,
}

impl Machine {
    /// A new machine in status `New` with the default zone, pool and domain.
    pub fn new(
        system_id: SystemId,
        hostname: Hostname,
        architecture: Architecture,
        now: DateTime<Utc>,
    ) -> Self {
        Machine {
            system_id,
            hostname,
            domain: DomainName::maas(),
            architecture,
            status: NodeStatus::New,
            previous_status: None,
            owner: None,
            zone: crate::org::DEFAULT_ZONE.to_owned(),
            pool: crate::org::DEFAULT_POOL.to_owned(),
            tags: BTreeSet::new(),
            power_type: String::new(),
            power_parameters: PowerParameters::default(),
            power_state: PowerState::Unknown,
            boot_interface: None,
            interfaces: Vec::new(),
            block_devices: Vec::new(),
            hardware: HardwareInventory::default(),
            locked: false,
            ephemeral_deploy: false,
            netboot: true,
            osystem: String::new(),
            distro_series: String::new(),
            user_data: None,
            owner_data: BTreeMap::new(),
            storage_layout: None,
            gateway_links: GatewayLinks::default(),
            node_type: NodeType::Machine,
            parent: None,
            description: String::new(),
            error_description: String::new(),
            status_deadline: None,
            created: now,
            updated: now,
            version: 0,
        }
    }

    /// `hostname.domain`.
    pub fn fqdn(&self) -> String {
        format!("{}.{}", self.hostname, self.domain)
    }

    /// The allocation cost MAAS orders matches by: `cpu_count + memory_MiB / 1024`.
    pub fn allocation_cost(&self) -> f64 {
        f64::from(self.hardware.cpu.count) + self.hardware.memory_mib as f64 / 1024.0
    }

    /// The boot interface's MAC (the named one, else the first physical).
    pub fn boot_mac(&self) -> Option<MacAddress> {
        let by_name = self
            .boot_interface
            .as_ref()
            .and_then(|n| self.interfaces.iter().find(|i| &i.name == n));
        by_name
            .or_else(|| {
                self.interfaces
                    .iter()
                    .find(|i| i.kind == InterfaceKind::Physical)
            })
            .and_then(|i| i.mac)
    }

    /// Checks the machine's internal consistency: unique interface and disk
    /// names, unique MACs, parents that exist, a boot interface that exists.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut names = BTreeSet::new();
        let mut macs = BTreeSet::new();
        for i in &self.interfaces {
            if i.name.is_empty() || i.name.len() > 15 || i.name.contains(['/', ' ']) {
                return Err(ValidationError::new(
                    "interface name",
                    &i.name,
                    "expected 1 to 15 characters without '/' or spaces",
                ));
            }
            if !names.insert(i.name.as_str()) {
                return Err(ValidationError::new(
                    "interface name",
                    &i.name,
                    "used twice",
                ));
            }
            if i.kind == InterfaceKind::Physical && i.mac.is_none() {
                return Err(ValidationError::new(
                    "mac_address",
                    &i.name,
                    "a physical interface needs a MAC",
                ));
            }
            if i.kind == InterfaceKind::Physical
                && let Some(mac) = i.mac
                && !macs.insert(mac)
            {
                return Err(ValidationError::new(
                    "mac_address",
                    mac,
                    "used by two interfaces",
                ));
            }
        }
        for i in &self.interfaces {
            if let Some(p) = i.parents.iter().find(|p| !names.contains(p.as_str())) {
                return Err(ValidationError::new(
                    "parents",
                    p,
                    format!("no interface of that name (parent of {})", i.name),
                ));
            }
            if matches!(i.kind, InterfaceKind::Bond | InterfaceKind::Vlan) && i.parents.is_empty() {
                return Err(ValidationError::new(
                    "parents",
                    &i.name,
                    format!("a {} needs a parent interface", i.kind.as_str()),
                ));
            }
        }
        if let Some(b) = &self.boot_interface
            && !names.contains(b.as_str())
        {
            return Err(ValidationError::new(
                "boot_interface",
                b,
                "no interface of that name",
            ));
        }
        let mut disks = BTreeSet::new();
        for d in &self.block_devices {
            if d.name.is_empty() || !disks.insert(d.name.as_str()) {
                return Err(ValidationError::new(
                    "block device name",
                    &d.name,
                    "empty or used twice",
                ));
            }
        }
        Ok(())
    }
}
