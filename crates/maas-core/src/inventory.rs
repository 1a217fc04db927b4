//! The hardware inventory commissioning reports, and how it updates a
//! machine.
//!
//! MAAS's own commissioning runs lshw, lsblk and friends and parses their
//! output on the region. Here the ephemeral environment's agent gathers the
//! inventory itself and uploads one JSON document, [`Inventory`], as the
//! output of the script named [`INVENTORY_SCRIPT`]; the region applies it
//! with [`Machine::apply_inventory`].

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::machine::{BlockDevice, HardwareInventory, Interface, Machine};
use crate::types::MacAddress;

/// The script name the inventory is uploaded under (`op=signal` file
/// `maas-inventory`, or `maas-inventory.yaml` as a structured result).
pub const INVENTORY_SCRIPT: &str = "maas-inventory";

/// A network interface as commissioning sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NicReport {
    /// Kernel name (`enp1s0`).
    pub name: String,
    /// MAC address.
    pub mac: String,
    /// Negotiated speed, Mbit/s.
    pub link_speed_mbps: u32,
    /// Maximum speed, Mbit/s.
    pub interface_speed_mbps: u32,
    /// Whether a link is up.
    pub link_connected: bool,
    /// Vendor.
    pub vendor: String,
    /// Product.
    pub product: String,
    /// Driver.
    pub driver: String,
    /// The addresses it had in the ephemeral environment (`10.0.0.5/24`
    /// or `10.0.0.5`): how the region tells which subnet it is on.
    pub addresses: Vec<String>,
}

/// A disk as commissioning sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiskReport {
    /// Kernel name (`sda`, `vda`, `nvme0n1`).
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Logical block size.
    pub block_size: u32,
    /// Serial.
    pub serial: String,
    /// Model.
    pub model: String,
    /// Spinning disk.
    pub rotational: bool,
    /// A stable path (`/dev/disk/by-id/...`).
    pub id_path: Option<String>,
}

/// What commissioning found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Inventory {
    /// CPU, memory, PCI devices, DMI system and firmware.
    pub hardware: HardwareInventory,
    /// Network interfaces.
    pub nics: Vec<NicReport>,
    /// Disks.
    pub disks: Vec<DiskReport>,
}

impl Inventory {
    /// Parses an uploaded inventory, naming what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Inventory, ValidationError> {
        let bad = |e: String| {
            ValidationError::new(
                INVENTORY_SCRIPT,
                "",
                format!("not an inventory document: {e}"),
            )
        };
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if !v.is_object() {
            return Err(bad("expected a JSON object".into()));
        }
        let inv: Inventory = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
        for n in &inv.nics {
            MacAddress::parse(&n.mac)
                .map_err(|e| ValidationError::new("nics.mac", &n.mac, e.to_string()))?;
        }
        for d in &inv.disks {
            if d.name.is_empty() || d.size_bytes == 0 {
                return Err(ValidationError::new(
                    "disks",
                    &d.name,
                    "a disk needs a name and a size",
                ));
            }
        }
        Ok(inv)
    }
}

impl Machine {
    /// Updates the machine from a commissioning inventory: the hardware is
    /// replaced; disks are replaced by name (a disk seen again keeps its id,
    /// and so its place in a storage layout); a NIC whose MAC the machine
    /// has updates that interface, a new MAC adds a physical interface. No
    /// interface is removed: links and bonds made by hand stay.
    pub fn apply_inventory(&mut self, inv: &Inventory) -> Result<(), ValidationError> {
        self.hardware = inv.hardware.clone();
        let old = std::mem::take(&mut self.block_devices);
        for d in &inv.disks {
            let mut b = BlockDevice::disk(&d.name, d.size_bytes);
            b.block_size = if d.block_size == 0 { 512 } else { d.block_size };
            b.serial.clone_from(&d.serial);
            b.model.clone_from(&d.model);
            b.rotational = d.rotational;
            b.id_path.clone_from(&d.id_path);
            if let Some(prev) = old.iter().find(|o| o.name == d.name) {
                b.id = prev.id;
                b.tags.clone_from(&prev.tags);
            }
            self.block_devices.push(b);
        }
        for n in &inv.nics {
            let mac = MacAddress::parse(&n.mac)
                .map_err(|e| ValidationError::new("nics.mac", &n.mac, e.to_string()))?;
            let i = match self.interfaces.iter_mut().find(|i| i.mac == Some(mac)) {
                Some(i) => i,
                None => {
                    let name =
                        if n.name.is_empty() || self.interfaces.iter().any(|i| i.name == n.name) {
                            (0..)
                                .map(|k| format!("eth{k}"))
                                .find(|c| !self.interfaces.iter().any(|i| &i.name == c))
                                .unwrap_or_default()
                        } else {
                            n.name.clone()
                        };
                    self.interfaces.push(Interface::physical(name, mac));
                    self.interfaces.last_mut().ok_or_else(|| {
                        ValidationError::new("nics", &n.mac, "the interface vanished")
                    })?
                }
            };
            i.link_speed_mbps = n.link_speed_mbps;
            i.interface_speed_mbps = n.interface_speed_mbps;
            i.link_connected = n.link_connected;
            i.vendor.clone_from(&n.vendor);
            i.product.clone_from(&n.product);
            i.driver.clone_from(&n.driver);
        }
        self.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::SystemId;
    use crate::machine::FirmwareKind;
    use crate::types::{Architecture, Hostname};

    fn machine() -> Machine {
        let mut m = Machine::new(
            SystemId::parse("abc123").unwrap(),
            Hostname::parse("n1").unwrap(),
            Architecture::amd64(),
            chrono::Utc::now(),
        );
        m.interfaces
            .push(Interface::physical("eth0", MacAddress([2, 0, 0, 0, 0, 1])));
        let mut sda = BlockDevice::disk("sda", 1);
        sda.id = Some(crate::ids::BlockDeviceId(7));
        m.block_devices.push(sda);
        m
    }

    #[test]
    fn an_inventory_updates_hardware_disks_and_nics() {
        let inv = Inventory::parse(
            br#"{"hardware": {"cpu": {"count": 4}, "memory_mib": 8192, "firmware": {"kind": "uefi"}},
                 "nics": [{"name": "enp1s0", "mac": "02:00:00:00:00:01", "link_speed_mbps": 1000},
                          {"name": "enp2s0", "mac": "02:00:00:00:00:02"}],
                 "disks": [{"name": "sda", "size_bytes": 1000000000}, {"name": "vdb", "size_bytes": 5}]}"#,
        )
        .unwrap();
        let mut m = machine();
        m.apply_inventory(&inv).unwrap();
        assert_eq!((m.hardware.cpu.count, m.hardware.memory_mib), (4, 8192));
        assert_eq!(m.hardware.firmware.kind, FirmwareKind::Uefi);
        assert_eq!(m.block_devices.len(), 2);
        assert_eq!(
            m.block_devices[0].id.map(|i| i.0),
            Some(7),
            "sda keeps its id"
        );
        assert_eq!(m.block_devices[0].size_bytes, 1_000_000_000);
        let names: Vec<&str> = m.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["eth0", "enp2s0"], "a known MAC keeps its interface");
        assert_eq!(m.interfaces[0].link_speed_mbps, 1000);
    }

    #[test]
    fn bad_inventories_name_what_is_wrong() {
        let e = Inventory::parse(b"{\"nics\": [{\"mac\": \"zz\"}]}").unwrap_err();
        assert!(e.to_string().contains("mac"), "{e}");
        let e = Inventory::parse(b"{\"disks\": [{\"name\": \"sda\"}]}").unwrap_err();
        assert!(e.to_string().contains("size"), "{e}");
        let e = Inventory::parse(b"[]").unwrap_err();
        assert!(e.to_string().contains("inventory"), "{e}");
    }
}
