//! The one error type of this crate.

use std::net::IpAddr;

use ipnet::IpNet;
use maas_core::SubnetId;
use maas_core::machine::FirmwareKind;
use maas_core::network::IpamError;

/// Why a configuration could not be rendered, or a machine cannot be
/// deployed as asked.
///
/// Every variant is a problem with the input (the machine, its network, the
/// deploy request or a template): retrying with the same input gives the
/// same answer. Each names the disk, interface, subnet, field or template
/// file at fault, so the message can go to the user as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CurtinError {
    /// A value from the request (a URL, a kernel parameter, an OS name...)
    /// is not acceptable.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidValue {
        /// The field, as a user would write it.
        field: &'static str,
        /// The rejected value (at most 128 characters of it).
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    // ---- storage ----
    /// The machine has no disk to install on.
    #[error("the machine has no disk to install on")]
    NoDisks,
    /// A disk named in the request or a storage plan is not one of the
    /// machine's.
    #[error("the machine has no disk named {disk:?}")]
    UnknownDisk {
        /// The name given.
        disk: String,
    },
    /// A storage plan refers to a device id nothing defines.
    #[error(
        "{item} refers to {reference:?}, which no disk, partition or volume of the plan defines"
    )]
    UnknownDevice {
        /// The referring item.
        item: String,
        /// The missing id.
        reference: String,
    },
    /// Two items of a storage plan have the same id, or one device is used
    /// twice.
    #[error("storage id {id:?} is defined or used twice")]
    DuplicateDevice {
        /// The id.
        id: String,
    },
    /// The layout's partitions or volumes need more space than there is.
    #[error("the layout does not fit {device}: it needs {needed} bytes and {available} are usable")]
    LayoutDoesNotFit {
        /// The disk or volume group.
        device: String,
        /// Bytes the layout asks for (fixed sizes plus minimum for the rest).
        needed: u64,
        /// Bytes usable on the device.
        available: u64,
    },
    /// The boot disk has no partition the firmware can boot from.
    #[error("no boot partition for {firmware:?} firmware on boot disk {disk}: {needed}")]
    NoBootPartition {
        /// The machine's firmware.
        firmware: FirmwareKind,
        /// The boot disk.
        disk: String,
        /// What is missing.
        needed: &'static str,
    },
    /// The machine's firmware is not known (it was never commissioned), so
    /// the boot partitions cannot be chosen.
    #[error("the machine's firmware (BIOS or UEFI) is not known; commission it first")]
    FirmwareUnknown,
    /// An MBR partition table cannot hold this.
    #[error("disk {disk} cannot use an MBR partition table: {reason}")]
    MbrLimit {
        /// The disk.
        disk: String,
        /// Which limit.
        reason: &'static str,
    },
    /// Nothing is mounted at `/`.
    #[error("the storage layout has no root filesystem (nothing is mounted at /)")]
    NoRootFilesystem,
    /// The bcache layout found no disk to cache with.
    #[error(
        "the bcache layout needs a cache device: no disk other than the boot disk {boot_disk} is tagged ssd"
    )]
    NoCacheDevice {
        /// The boot disk, which cannot also be the cache.
        boot_disk: String,
    },

    /// A VLAN or alias asks for a larger MTU than its parent carries: the
    /// kernel refuses it when the network comes up.
    #[error("interface {interface}: MTU {mtu} is larger than its parent {parent}'s {parent_mtu}")]
    MtuAboveParent {
        /// The child interface.
        interface: String,
        /// Its MTU.
        mtu: u32,
        /// The parent.
        parent: String,
        /// The parent's MTU.
        parent_mtu: u32,
    },

    // ---- network ----
    /// A bond has no member interfaces.
    #[error("bond {bond} has no member interfaces")]
    BondWithoutMembers {
        /// The bond.
        bond: String,
    },
    /// An interface's parent cannot be used the way the interface needs.
    #[error("interface {interface}: parent {parent}: {reason}")]
    BadParent {
        /// The child interface.
        interface: String,
        /// The parent.
        parent: String,
        /// Why.
        reason: &'static str,
    },
    /// A type-specific interface parameter (`bond_mode`, `mtu`...) has a
    /// value that is not allowed.
    #[error("interface {interface}: invalid {key} {value:?}: {reason}")]
    InvalidInterfaceParam {
        /// The interface.
        interface: String,
        /// The parameter name, as MAAS's API spells it.
        key: String,
        /// The rejected value.
        value: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// An interface is linked to a subnet the network inputs do not have.
    #[error("interface {interface} is linked to subnet {subnet}, which is not known")]
    UnknownSubnet {
        /// The interface.
        interface: String,
        /// The subnet id.
        subnet: SubnetId,
    },
    /// A VLAN interface without a tagged VLAN.
    #[error("interface {interface}: {reason}")]
    BadVlan {
        /// The interface.
        interface: String,
        /// Why.
        reason: &'static str,
    },
    /// An `auto` link cannot get an address: the subnet is full.
    #[error("interface {interface}: no free address on subnet {subnet}")]
    NoFreeAddress {
        /// The interface.
        interface: String,
        /// The subnet.
        subnet: IpNet,
    },
    /// A `static` link without an address, or an `auto`/`static` link
    /// without a subnet.
    #[error("interface {interface}: a {mode} link needs {what}")]
    IncompleteLink {
        /// The interface.
        interface: String,
        /// The link mode.
        mode: &'static str,
        /// What is missing.
        what: &'static str,
    },
    /// A static address is outside the subnet it is linked to.
    #[error("interface {interface}: static address {ip} is outside its subnet {subnet}")]
    StaticAddressOutsideSubnet {
        /// The interface.
        interface: String,
        /// The address.
        ip: IpAddr,
        /// The subnet.
        subnet: IpNet,
    },
    /// A static address is inside its subnet but cannot be used (network or
    /// broadcast address, the gateway, a dynamic range).
    #[error("interface {interface}: static address {ip} cannot be used: {source}")]
    UnusableStaticAddress {
        /// The interface.
        interface: String,
        /// The address.
        ip: IpAddr,
        /// What IPAM said.
        source: IpamError,
    },

    // ---- templates ----
    /// No template of any candidate name exists (not even a built-in one).
    #[error("no template found; tried {}", tried.join(", "))]
    TemplateNotFound {
        /// The names tried, in lookup order.
        tried: Vec<String>,
    },
    /// A template could not be read, parsed or rendered.
    #[error("template {file}{}: {detail}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Template {
        /// The template's file (a path for user templates, `builtin:NAME`
        /// for built-in ones).
        file: String,
        /// The line the error is on, when known.
        line: Option<usize>,
        /// What went wrong.
        detail: String,
    },
    /// A template rendered, but not to what its use needs (a YAML mapping,
    /// a `#cloud-config` document...).
    #[error("template {file} rendered invalid output: {detail}")]
    TemplateOutput {
        /// The template's file.
        file: String,
        /// What is wrong with the output.
        detail: String,
    },
    /// Serializing the config failed (a bug, not an input problem).
    #[error("could not serialize the config: {0}")]
    Serialize(String),
}

/// Cuts a rejected value to 128 characters for an error message.
pub(crate) fn shown(value: &str) -> String {
    if value.chars().count() > 128 {
        value.chars().take(128).collect::<String>() + "..."
    } else {
        value.to_owned()
    }
}

/// An [`CurtinError::InvalidValue`].
pub(crate) fn invalid(field: &'static str, value: &str, reason: impl Into<String>) -> CurtinError {
    CurtinError::InvalidValue {
        field,
        value: shown(value),
        reason: reason.into(),
    }
}
