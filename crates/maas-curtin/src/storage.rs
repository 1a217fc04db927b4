//! Storage: MAAS's layouts, the plan they produce, its validation, and
//! curtin's `storage` config.
//!
//! Every layout (flat, lvm, bcache, blank) is first turned into a
//! [`StoragePlan`], the same type a user's custom layout is given as, so one
//! validation and one renderer serve them all. Ids in a plan follow curtin's
//! MAAS naming: a disk is its kernel name (`sda`), its partitions
//! `sda-part1`, `sda-part2`..., a volume group, RAID or bcache its name
//! (`vgroot`, `md0`, `bcache0`), a logical volume `vgroot-lvroot`.
//!
//! Sizes are bytes. Fixed partition sizes are rounded up to whole MiB and
//! the partition that takes the rest is rounded down, so every partition
//! stays 1 MiB aligned, the alignment curtin places partitions on. Each disk
//! keeps [`PARTITION_TABLE_OVERHEAD`] free for the label and alignment.

use std::collections::{BTreeMap, BTreeSet};

use maas_core::machine::{BlockDevice, BlockDeviceKind, FirmwareKind, Machine};
use serde::{Deserialize, Serialize};

use crate::error::{CurtinError, invalid};

/// One mebibyte.
pub const MIB: u64 = 1 << 20;
/// One gibibyte.
pub const GIB: u64 = 1 << 30;
/// One tebibyte.
pub const TIB: u64 = 1 << 40;
/// The EFI system partition MAAS creates on UEFI machines.
pub const EFI_PARTITION_SIZE: u64 = 512 * MIB;
/// The BIOS boot partition GRUB embeds its core image in on a GPT disk of a
/// BIOS machine (there is no gap after a GPT label to put it in).
pub const BIOS_GRUB_PARTITION_SIZE: u64 = MIB;
/// The `/boot` partition the bcache layout adds (GRUB cannot read a bcache
/// device, so the kernel must live outside it) when no `boot_size` is given.
pub const DEFAULT_BOOT_PARTITION_SIZE: u64 = GIB;
/// Space on each partitioned disk no partition may use: 4 MiB before the
/// first partition, 1 MiB at the end for GPT's backup header.
pub const PARTITION_TABLE_OVERHEAD: u64 = 5 * MIB;
/// LVM metadata kept on each physical volume.
pub const LVM_PV_OVERHEAD: u64 = 4 * MIB;
/// The smallest root filesystem a layout may leave.
pub const MIN_ROOT_SIZE: u64 = 3 * GIB;
/// The largest disk an MBR label can address (2 TiB with 512-byte sectors).
pub const MBR_MAX_DISK_SIZE: u64 = 2 * TIB;
/// MAAS's volume group name for the lvm layout.
pub const DEFAULT_VG_NAME: &str = "vgroot";
/// MAAS's logical volume name for the lvm layout.
pub const DEFAULT_LV_NAME: &str = "lvroot";

/// A partition table type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionTable {
    /// GUID partition table.
    Gpt,
    /// DOS/MBR partition table.
    Mbr,
}

impl PartitionTable {
    /// The name curtin uses (`gpt`, `msdos`).
    pub const fn curtin_name(self) -> &'static str {
        match self {
            PartitionTable::Gpt => "gpt",
            PartitionTable::Mbr => "msdos",
        }
    }
}

/// A filesystem MAAS lets users format with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Filesystem {
    Ext2,
    #[default]
    Ext4,
    Xfs,
    Fat32,
    Vfat,
    Swap,
    Btrfs,
}

impl Filesystem {
    /// The name curtin's `format` action takes.
    pub const fn curtin_name(self) -> &'static str {
        match self {
            Filesystem::Ext2 => "ext2",
            Filesystem::Ext4 => "ext4",
            Filesystem::Xfs => "xfs",
            Filesystem::Fat32 => "fat32",
            Filesystem::Vfat => "vfat",
            Filesystem::Swap => "swap",
            Filesystem::Btrfs => "btrfs",
        }
    }

    fn is_fat(self) -> bool {
        matches!(self, Filesystem::Fat32 | Filesystem::Vfat)
    }
}

/// A partition's special role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionFlag {
    /// The EFI system partition on GPT, the active partition on MBR.
    Boot,
    /// GRUB's BIOS boot partition on GPT.
    BiosGrub,
}

impl PartitionFlag {
    const fn curtin_name(self) -> &'static str {
        match self {
            PartitionFlag::Boot => "boot",
            PartitionFlag::BiosGrub => "bios_grub",
        }
    }
}

/// How big a partition or logical volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    /// This many bytes (rounded up to whole MiB).
    Bytes(u64),
    /// Whatever the other partitions or volumes leave (at most one per
    /// disk or volume group).
    Rest,
}

/// A software RAID level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum RaidLevel {
    #[serde(rename = "raid-0")]
    Raid0,
    #[serde(rename = "raid-1")]
    Raid1,
    #[serde(rename = "raid-5")]
    Raid5,
    #[serde(rename = "raid-6")]
    Raid6,
    #[serde(rename = "raid-10")]
    Raid10,
}

impl RaidLevel {
    const fn number(self) -> u8 {
        match self {
            RaidLevel::Raid0 => 0,
            RaidLevel::Raid1 => 1,
            RaidLevel::Raid5 => 5,
            RaidLevel::Raid6 => 6,
            RaidLevel::Raid10 => 10,
        }
    }

    const fn min_devices(self) -> usize {
        match self {
            RaidLevel::Raid0 | RaidLevel::Raid1 => 2,
            RaidLevel::Raid5 => 3,
            RaidLevel::Raid6 | RaidLevel::Raid10 => 4,
        }
    }

    /// Usable size from `n` active members of `smallest` bytes each.
    fn usable(self, n: u64, smallest: u64) -> u64 {
        match self {
            RaidLevel::Raid0 => n * smallest,
            RaidLevel::Raid1 => smallest,
            RaidLevel::Raid5 => (n - 1) * smallest,
            RaidLevel::Raid6 => (n - 2) * smallest,
            RaidLevel::Raid10 => n * smallest / 2,
        }
    }
}

/// A bcache cache mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum CacheMode {
    Writeback,
    #[default]
    Writethrough,
    Writearound,
}

impl CacheMode {
    const fn as_str(self) -> &'static str {
        match self {
            CacheMode::Writeback => "writeback",
            CacheMode::Writethrough => "writethrough",
            CacheMode::Writearound => "writearound",
        }
    }
}

/// Options every generated layout takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LayoutOptions {
    /// The disk to install on (kernel name); default: the machine's first
    /// physical disk.
    pub boot_disk: Option<String>,
    /// The partition table; default: GPT on UEFI machines, on amd64 and on
    /// disks over 2 TiB, else MBR.
    pub ptable: Option<PartitionTable>,
    /// The root filesystem (ext4 by default).
    pub root_fs: Filesystem,
    /// The root partition's (or logical volume's) size; default: the rest.
    pub root_size: Option<u64>,
    /// A separate ext4 `/boot` partition of this size.
    pub boot_size: Option<u64>,
}

/// Options of the lvm layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LvmOptions {
    /// Common options (`root_size` is the logical volume's size).
    #[serde(flatten)]
    pub base: LayoutOptions,
    /// Volume group name.
    pub vg_name: String,
    /// Logical volume name.
    pub lv_name: String,
}

impl Default for LvmOptions {
    fn default() -> Self {
        LvmOptions {
            base: LayoutOptions::default(),
            vg_name: DEFAULT_VG_NAME.to_owned(),
            lv_name: DEFAULT_LV_NAME.to_owned(),
        }
    }
}

/// Options of the bcache layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BcacheOptions {
    /// Common options.
    #[serde(flatten)]
    pub base: LayoutOptions,
    /// The whole disk used as cache; default: the smallest disk tagged
    /// `ssd` other than the boot disk.
    pub cache_device: Option<String>,
    /// Cache mode.
    pub cache_mode: CacheMode,
}

/// A storage layout, as `set_storage_layout` and `deploy` name them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "layout", rename_all = "lowercase")]
pub enum StorageLayout {
    /// One root partition (plus boot partitions).
    Flat(LayoutOptions),
    /// Root on a logical volume (`vgroot`/`lvroot`).
    Lvm(LvmOptions),
    /// Root on a bcache device: a partition of the boot disk cached by an
    /// SSD.
    Bcache(BcacheOptions),
    /// Disks wiped and nothing else: not deployable until the user adds a
    /// root filesystem (validation says so).
    Blank(LayoutOptions),
    /// The user's own plan.
    Custom(StoragePlan),
}

/// A disk of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskPlan {
    /// The machine's disk (kernel name).
    pub disk: String,
    /// Partition table, if the disk is partitioned.
    #[serde(default)]
    pub ptable: Option<PartitionTable>,
    /// GRUB is installed on this disk.
    #[serde(default)]
    pub boot: bool,
    /// Partitions, numbered from 1 in this order.
    #[serde(default)]
    pub partitions: Vec<PartitionPlan>,
}

/// A partition of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionPlan {
    /// Size.
    pub size: Size,
    /// Special role.
    #[serde(default)]
    pub flag: Option<PartitionFlag>,
}

/// An LVM volume group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeGroupPlan {
    /// Name (and id).
    pub name: String,
    /// Physical volumes (ids).
    pub devices: Vec<String>,
}

/// An LVM logical volume; its id is `{volume_group}-{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalVolumePlan {
    /// The volume group's name.
    pub volume_group: String,
    /// Name.
    pub name: String,
    /// Size.
    pub size: Size,
}

/// A software RAID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaidPlan {
    /// Name (and id), such as `md0`.
    pub name: String,
    /// Level.
    pub level: RaidLevel,
    /// Active members (ids).
    pub devices: Vec<String>,
    /// Spare members (ids).
    #[serde(default)]
    pub spares: Vec<String>,
}

/// A bcache device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BcachePlan {
    /// Name (and id), such as `bcache0`.
    pub name: String,
    /// The backing device (id).
    pub backing: String,
    /// The cache device (id).
    pub cache: String,
    /// Cache mode.
    #[serde(default)]
    pub mode: CacheMode,
}

/// A filesystem on a device, optionally mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemPlan {
    /// The device (id).
    pub device: String,
    /// Filesystem type.
    pub fstype: Filesystem,
    /// Mount point (absolute path); `None` for swap or an unmounted
    /// filesystem.
    #[serde(default)]
    pub mount: Option<String>,
    /// Mount options (`noatime,errors=remount-ro`).
    #[serde(default)]
    pub mount_options: Option<String>,
    /// Filesystem label.
    #[serde(default)]
    pub label: Option<String>,
}

/// What goes on a machine's disks: the common form of every layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoragePlan {
    /// Disks used (others are left alone).
    pub disks: Vec<DiskPlan>,
    /// Software RAIDs.
    pub raids: Vec<RaidPlan>,
    /// bcache devices.
    pub bcaches: Vec<BcachePlan>,
    /// LVM volume groups.
    pub volume_groups: Vec<VolumeGroupPlan>,
    /// LVM logical volumes.
    pub logical_volumes: Vec<LogicalVolumePlan>,
    /// Filesystems and mounts.
    pub filesystems: Vec<FilesystemPlan>,
}

/// The id of partition `number` (from 1) of `disk`.
pub fn partition_id(disk: &str, number: usize) -> String {
    format!("{disk}-part{number}")
}

/// The id of logical volume `lv` of `vg`.
pub fn logical_volume_id(vg: &str, lv: &str) -> String {
    format!("{vg}-{lv}")
}

impl StorageLayout {
    /// The layout's name as MAAS spells it.
    pub const fn name(&self) -> &'static str {
        match self {
            StorageLayout::Flat(_) => "flat",
            StorageLayout::Lvm(_) => "lvm",
            StorageLayout::Bcache(_) => "bcache",
            StorageLayout::Blank(_) => "blank",
            StorageLayout::Custom(_) => "custom",
        }
    }

    /// The plan this layout gives on `machine`. Custom plans are returned
    /// as they are; nothing is validated here (see [`StoragePlan::validate`]).
    pub fn plan(&self, machine: &Machine) -> Result<StoragePlan, CurtinError> {
        let firmware = firmware_of(machine)?;
        let base = match self {
            StorageLayout::Custom(plan) => return Ok(plan.clone()),
            StorageLayout::Flat(o) | StorageLayout::Blank(o) => o,
            StorageLayout::Lvm(o) => &o.base,
            StorageLayout::Bcache(o) => &o.base,
        };
        let boot = boot_disk(machine, base.boot_disk.as_deref())?;
        let ptable = base
            .ptable
            .unwrap_or_else(|| default_ptable(firmware, machine.architecture.arch(), boot));
        let mut disk = DiskPlan {
            disk: boot.name.clone(),
            ptable: Some(ptable),
            boot: true,
            partitions: Vec::new(),
        };
        let mut plan = StoragePlan::default();
        if let StorageLayout::Blank(_) = self {
            disk.ptable = None;
            plan.disks.push(disk);
            return Ok(plan);
        }
        let part = |disk: &mut DiskPlan, size: Size, flag: Option<PartitionFlag>| -> String {
            disk.partitions.push(PartitionPlan { size, flag });
            partition_id(&disk.disk, disk.partitions.len())
        };
        if firmware == FirmwareKind::Bios && ptable == PartitionTable::Gpt {
            part(
                &mut disk,
                Size::Bytes(BIOS_GRUB_PARTITION_SIZE),
                Some(PartitionFlag::BiosGrub),
            );
        }
        if firmware == FirmwareKind::Uefi {
            let esp = part(
                &mut disk,
                Size::Bytes(EFI_PARTITION_SIZE),
                Some(PartitionFlag::Boot),
            );
            plan.filesystems.push(FilesystemPlan {
                device: esp,
                fstype: Filesystem::Fat32,
                mount: Some("/boot/efi".to_owned()),
                mount_options: None,
                label: Some("efi".to_owned()),
            });
        }
        let boot_size = match self {
            StorageLayout::Bcache(_) => Some(base.boot_size.unwrap_or(DEFAULT_BOOT_PARTITION_SIZE)),
            _ => base.boot_size,
        };
        // On MBR with BIOS the partition holding the kernel is marked active:
        // some BIOSes refuse to boot a disk with no active partition.
        let mbr_active = |holds_kernel: bool| {
            (firmware == FirmwareKind::Bios && ptable == PartitionTable::Mbr && holds_kernel)
                .then_some(PartitionFlag::Boot)
        };
        if let Some(size) = boot_size {
            let id = part(&mut disk, Size::Bytes(size), mbr_active(true));
            plan.filesystems.push(FilesystemPlan {
                device: id,
                fstype: Filesystem::Ext4,
                mount: Some("/boot".to_owned()),
                mount_options: None,
                label: Some("boot".to_owned()),
            });
        }
        let root_size = base.root_size.map_or(Size::Rest, Size::Bytes);
        let root_fs = |device: String| FilesystemPlan {
            device,
            fstype: base.root_fs,
            mount: Some("/".to_owned()),
            mount_options: None,
            label: Some("root".to_owned()),
        };
        match self {
            StorageLayout::Flat(_) => {
                let root = part(&mut disk, root_size, mbr_active(boot_size.is_none()));
                plan.filesystems.insert(0, root_fs(root));
                plan.disks.push(disk);
            }
            StorageLayout::Lvm(o) => {
                let pv = part(&mut disk, Size::Rest, mbr_active(boot_size.is_none()));
                plan.disks.push(disk);
                plan.volume_groups.push(VolumeGroupPlan {
                    name: o.vg_name.clone(),
                    devices: vec![pv],
                });
                plan.logical_volumes.push(LogicalVolumePlan {
                    volume_group: o.vg_name.clone(),
                    name: o.lv_name.clone(),
                    size: root_size,
                });
                plan.filesystems
                    .insert(0, root_fs(logical_volume_id(&o.vg_name, &o.lv_name)));
            }
            StorageLayout::Bcache(o) => {
                let cache = match &o.cache_device {
                    Some(name) => find_disk(machine, name)?,
                    None => machine
                        .block_devices
                        .iter()
                        .filter(|d| d.kind == BlockDeviceKind::Physical && d.name != boot.name)
                        .filter(|d| d.tags.iter().any(|t| t == "ssd"))
                        .min_by_key(|d| (d.size_bytes, d.name.clone()))
                        .ok_or_else(|| CurtinError::NoCacheDevice {
                            boot_disk: boot.name.clone(),
                        })?,
                };
                let backing = part(&mut disk, root_size, None);
                plan.disks.push(disk);
                plan.disks.push(DiskPlan {
                    disk: cache.name.clone(),
                    ptable: None,
                    boot: false,
                    partitions: Vec::new(),
                });
                plan.bcaches.push(BcachePlan {
                    name: "bcache0".to_owned(),
                    backing,
                    cache: cache.name.clone(),
                    mode: o.cache_mode,
                });
                plan.filesystems.insert(0, root_fs("bcache0".to_owned()));
            }
            StorageLayout::Blank(_) | StorageLayout::Custom(_) => {}
        }
        Ok(plan)
    }
}

/// The plan for a disk image written whole (`dd-*` sources): the boot disk
/// named, untouched otherwise, so curtin knows where to write.
pub fn dd_plan(machine: &Machine, boot: Option<&str>) -> Result<StoragePlan, CurtinError> {
    let boot = boot_disk(machine, boot)?;
    Ok(StoragePlan {
        disks: vec![DiskPlan {
            disk: boot.name.clone(),
            ptable: None,
            boot: true,
            partitions: Vec::new(),
        }],
        ..StoragePlan::default()
    })
}

fn firmware_of(machine: &Machine) -> Result<FirmwareKind, CurtinError> {
    match machine.hardware.firmware.kind {
        FirmwareKind::Unknown => Err(CurtinError::FirmwareUnknown),
        kind => Ok(kind),
    }
}

fn find_disk<'m>(machine: &'m Machine, name: &str) -> Result<&'m BlockDevice, CurtinError> {
    machine
        .block_devices
        .iter()
        .find(|d| d.name == name && d.kind == BlockDeviceKind::Physical)
        .ok_or_else(|| CurtinError::UnknownDisk {
            disk: name.to_owned(),
        })
}

fn boot_disk<'m>(machine: &'m Machine, name: Option<&str>) -> Result<&'m BlockDevice, CurtinError> {
    match name {
        Some(name) => find_disk(machine, name),
        None => machine
            .block_devices
            .iter()
            .find(|d| d.kind == BlockDeviceKind::Physical)
            .ok_or(CurtinError::NoDisks),
    }
}

fn default_ptable(firmware: FirmwareKind, arch: &str, disk: &BlockDevice) -> PartitionTable {
    if firmware == FirmwareKind::Uefi || arch == "amd64" || disk.size_bytes > MBR_MAX_DISK_SIZE {
        PartitionTable::Gpt
    } else {
        PartitionTable::Mbr
    }
}

fn round_up_mib(n: u64) -> u64 {
    n.div_ceil(MIB).saturating_mul(MIB)
}

fn round_down_mib(n: u64) -> u64 {
    n / MIB * MIB
}

/// A plan checked against its machine, with every device's size resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPlan {
    /// The plan.
    pub plan: StoragePlan,
    /// Size in bytes of every device id of the plan (partitions and
    /// volumes with [`Size::Rest`] resolved).
    pub sizes: BTreeMap<String, u64>,
}

impl StoragePlan {
    /// Checks the plan against the machine: disks exist, the layout fits,
    /// the boot disk has what the firmware boots from, references resolve,
    /// no device is used twice, MBR limits hold, and something is mounted at
    /// `/`. Returns the plan with every size resolved.
    pub fn validate(&self, machine: &Machine) -> Result<ResolvedPlan, CurtinError> {
        let firmware = firmware_of(machine)?;
        if !self
            .filesystems
            .iter()
            .any(|f| f.mount.as_deref() == Some("/"))
        {
            return Err(CurtinError::NoRootFilesystem);
        }
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        let define = |sizes: &mut BTreeMap<String, u64>, id: &str, size: u64| {
            if sizes.insert(id.to_owned(), size).is_some() {
                Err(CurtinError::DuplicateDevice { id: id.to_owned() })
            } else {
                Ok(())
            }
        };
        // Disks and their partitions.
        let boot_disks: Vec<&DiskPlan> = self.disks.iter().filter(|d| d.boot).collect();
        if boot_disks.len() != 1 {
            return Err(invalid(
                "boot disk",
                &boot_disks
                    .iter()
                    .map(|d| d.disk.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                "a storage plan needs exactly one disk marked boot",
            ));
        }
        for d in &self.disks {
            let disk = find_disk(machine, &d.disk)?;
            define(&mut sizes, &d.disk, disk.size_bytes)?;
            if d.partitions.is_empty() {
                continue;
            }
            let Some(ptable) = d.ptable else {
                return Err(invalid(
                    "ptable",
                    &d.disk,
                    "a disk with partitions needs a partition table",
                ));
            };
            if ptable == PartitionTable::Mbr {
                if d.partitions.len() > 4 {
                    return Err(CurtinError::MbrLimit {
                        disk: d.disk.clone(),
                        reason: "more than 4 partitions (logical partitions are not supported)",
                    });
                }
                if disk.size_bytes > MBR_MAX_DISK_SIZE {
                    return Err(CurtinError::MbrLimit {
                        disk: d.disk.clone(),
                        reason: "the disk is larger than 2 TiB",
                    });
                }
            }
            let available = disk.size_bytes.saturating_sub(PARTITION_TABLE_OVERHEAD);
            let fixed: u64 = d
                .partitions
                .iter()
                .map(|p| match p.size {
                    Size::Bytes(n) => round_up_mib(n),
                    Size::Rest => 0,
                })
                .sum();
            let rests = d.partitions.iter().filter(|p| p.size == Size::Rest).count();
            if rests > 1 {
                return Err(invalid(
                    "size",
                    &d.disk,
                    "only one partition of a disk can take the rest of it",
                ));
            }
            // The partition taking the rest must get at least 1 MiB.
            let needed = fixed + if rests == 1 { MIB } else { 0 };
            if needed > available {
                return Err(CurtinError::LayoutDoesNotFit {
                    device: d.disk.clone(),
                    needed,
                    available,
                });
            }
            for (i, p) in d.partitions.iter().enumerate() {
                if p.size == Size::Bytes(0) {
                    return Err(invalid(
                        "size",
                        &partition_id(&d.disk, i + 1),
                        "a partition cannot be empty",
                    ));
                }
                let size = match p.size {
                    Size::Bytes(n) => round_up_mib(n),
                    Size::Rest => round_down_mib(available - fixed),
                };
                define(&mut sizes, &partition_id(&d.disk, i + 1), size)?;
            }
        }
        self.check_boot(machine, firmware, &sizes)?;

        // Every device may be consumed once: by a RAID, a bcache, a volume
        // group or a filesystem.
        let mut used: BTreeSet<String> = BTreeSet::new();
        let mut consume =
            |sizes: &BTreeMap<String, u64>, item: &str, id: &str| -> Result<u64, CurtinError> {
                let size = *sizes.get(id).ok_or_else(|| CurtinError::UnknownDevice {
                    item: item.to_owned(),
                    reference: id.to_owned(),
                })?;
                if !used.insert(id.to_owned()) {
                    return Err(CurtinError::DuplicateDevice { id: id.to_owned() });
                }
                Ok(size)
            };
        for r in &self.raids {
            let item = format!("raid {}", r.name);
            if r.devices.len() < r.level.min_devices() {
                return Err(invalid(
                    "raid devices",
                    &r.name,
                    format!(
                        "raid-{} needs at least {} devices, {} given",
                        r.level.number(),
                        r.level.min_devices(),
                        r.devices.len()
                    ),
                ));
            }
            let mut smallest = u64::MAX;
            for id in r.devices.iter().chain(&r.spares) {
                smallest = smallest.min(consume(&sizes, &item, id)?);
            }
            let size = r.level.usable(r.devices.len() as u64, smallest);
            define(&mut sizes, &r.name, size)?;
        }
        for b in &self.bcaches {
            let item = format!("bcache {}", b.name);
            let size = consume(&sizes, &item, &b.backing)?;
            consume(&sizes, &item, &b.cache)?;
            define(&mut sizes, &b.name, size)?;
        }
        let mut vg_free: BTreeMap<&str, u64> = BTreeMap::new();
        for vg in &self.volume_groups {
            let item = format!("volume group {}", vg.name);
            if vg.devices.is_empty() {
                return Err(invalid(
                    "volume group devices",
                    &vg.name,
                    "a volume group needs a physical volume",
                ));
            }
            let mut total = 0u64;
            for id in &vg.devices {
                total += consume(&sizes, &item, id)?.saturating_sub(LVM_PV_OVERHEAD);
            }
            define(&mut sizes, &vg.name, total)?;
            vg_free.insert(&vg.name, total);
        }
        for vg in &self.volume_groups {
            let lvs: Vec<&LogicalVolumePlan> = self
                .logical_volumes
                .iter()
                .filter(|lv| lv.volume_group == vg.name)
                .collect();
            let available = vg_free.get(vg.name.as_str()).copied().unwrap_or(0);
            let fixed: u64 = lvs
                .iter()
                .map(|lv| match lv.size {
                    Size::Bytes(n) => round_up_mib(n),
                    Size::Rest => 0,
                })
                .sum();
            let rests = lvs.iter().filter(|lv| lv.size == Size::Rest).count();
            if rests > 1 {
                return Err(invalid(
                    "size",
                    &vg.name,
                    "only one logical volume can take the rest of its volume group",
                ));
            }
            let needed = fixed + if rests == 1 { MIB } else { 0 };
            if needed > available {
                return Err(CurtinError::LayoutDoesNotFit {
                    device: vg.name.clone(),
                    needed,
                    available,
                });
            }
            for lv in lvs {
                let size = match lv.size {
                    Size::Bytes(n) => round_up_mib(n),
                    Size::Rest => round_down_mib(available - fixed),
                };
                define(&mut sizes, &logical_volume_id(&vg.name, &lv.name), size)?;
            }
        }
        if let Some(lv) = self
            .logical_volumes
            .iter()
            .find(|lv| !vg_free.contains_key(lv.volume_group.as_str()))
        {
            return Err(CurtinError::UnknownDevice {
                item: format!("logical volume {}", lv.name),
                reference: lv.volume_group.clone(),
            });
        }
        let mut mounts = BTreeSet::new();
        for f in &self.filesystems {
            let item = format!("{} filesystem", f.fstype.curtin_name());
            let size = consume(&sizes, &item, &f.device)?;
            if let Some(path) = &f.mount {
                if !path.starts_with('/')
                    || path.contains("//")
                    || path.contains(char::is_whitespace)
                {
                    return Err(invalid(
                        "mount point",
                        path,
                        "expected an absolute path without spaces",
                    ));
                }
                if !mounts.insert(path.as_str()) {
                    return Err(invalid("mount point", path, "mounted twice"));
                }
                if path == "/" && size < MIN_ROOT_SIZE {
                    return Err(CurtinError::LayoutDoesNotFit {
                        device: f.device.clone(),
                        needed: MIN_ROOT_SIZE,
                        available: size,
                    });
                }
            }
            if let Some(opts) = &f.mount_options
                && (opts.is_empty() || opts.contains(char::is_whitespace))
            {
                return Err(invalid(
                    "mount options",
                    opts,
                    "expected comma-separated options without spaces",
                ));
            }
        }
        Ok(ResolvedPlan {
            plan: self.clone(),
            sizes,
        })
    }

    fn check_boot(
        &self,
        machine: &Machine,
        firmware: FirmwareKind,
        sizes: &BTreeMap<String, u64>,
    ) -> Result<(), CurtinError> {
        let Some(disk) = self.disks.iter().find(|d| d.boot) else {
            return Ok(());
        };
        let missing = |needed| CurtinError::NoBootPartition {
            firmware,
            disk: disk.disk.clone(),
            needed,
        };
        let Some(ptable) = disk.ptable else {
            return Err(missing("the boot disk needs a partition table"));
        };
        let flagged = |flag| {
            disk.partitions
                .iter()
                .enumerate()
                .filter(move |(_, p)| p.flag == Some(flag))
                .map(|(i, _)| partition_id(&disk.disk, i + 1))
        };
        match firmware {
            FirmwareKind::Uefi => {
                if ptable != PartitionTable::Gpt {
                    return Err(missing(
                        "UEFI boots from an EFI system partition on a GPT disk; the boot disk is MBR",
                    ));
                }
                let esp = flagged(PartitionFlag::Boot).any(|id| {
                    self.filesystems.iter().any(|f| {
                        f.device == id
                            && f.fstype.is_fat()
                            && f.mount.as_deref() == Some("/boot/efi")
                    }) && sizes.get(&id).is_some_and(|&s| s >= 100 * MIB)
                });
                if !esp {
                    return Err(missing(
                        "an EFI system partition (flag boot, at least 100 MiB, fat32 mounted at /boot/efi)",
                    ));
                }
            }
            FirmwareKind::Bios => {
                if ptable == PartitionTable::Gpt
                    && machine.architecture.arch() == "amd64"
                    && flagged(PartitionFlag::BiosGrub).next().is_none()
                {
                    return Err(missing(
                        "GRUB on a GPT disk of a BIOS machine needs a bios_grub partition",
                    ));
                }
            }
            FirmwareKind::Unknown => return Err(CurtinError::FirmwareUnknown),
        }
        Ok(())
    }
}

/// One action of curtin's `storage.config` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum StorageAction {
    Disk {
        id: String,
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        ptable: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        serial: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        wipe: &'static str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        grub_device: bool,
    },
    Partition {
        id: String,
        device: String,
        number: usize,
        size: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        flag: Option<&'static str>,
        wipe: &'static str,
    },
    Raid {
        id: String,
        name: String,
        raidlevel: u8,
        devices: Vec<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        spare_devices: Vec<String>,
    },
    Bcache {
        id: String,
        name: String,
        backing_device: String,
        cache_device: String,
        cache_mode: &'static str,
    },
    LvmVolgroup {
        id: String,
        name: String,
        devices: Vec<String>,
    },
    LvmPartition {
        id: String,
        name: String,
        volgroup: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        size: Option<String>,
    },
    Format {
        id: String,
        volume: String,
        fstype: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    Mount {
        id: String,
        device: String,
        path: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        options: Option<String>,
    },
}

/// Curtin's `storage` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageConfig {
    /// Always 1.
    pub version: u8,
    /// The actions, in an order where each comes after what it uses.
    pub config: Vec<StorageAction>,
}

impl ResolvedPlan {
    /// Curtin's storage config: disks each followed by their partitions,
    /// then RAIDs, bcaches, volume groups, logical volumes, filesystems, and
    /// mounts parents first (`/` before `/boot` before `/boot/efi`).
    pub fn to_curtin(&self, machine: &Machine) -> StorageConfig {
        let plan = &self.plan;
        let mut config = Vec::new();
        // curtin matches a disk by serial (with model) when that is
        // unambiguous, else by path.
        let serial_count = |serial: &str| {
            machine
                .block_devices
                .iter()
                .filter(|d| d.serial == serial)
                .count()
        };
        for d in &plan.disks {
            let Some(disk) = machine.block_devices.iter().find(|b| b.name == d.disk) else {
                continue;
            };
            let by_serial = !disk.serial.is_empty() && serial_count(&disk.serial) == 1;
            config.push(StorageAction::Disk {
                id: d.disk.clone(),
                name: d.disk.clone(),
                ptable: d.ptable.map(PartitionTable::curtin_name),
                model: (by_serial && !disk.model.is_empty()).then(|| disk.model.clone()),
                serial: by_serial.then(|| disk.serial.clone()),
                path: (!by_serial).then(|| {
                    disk.id_path
                        .clone()
                        .unwrap_or_else(|| format!("/dev/{}", disk.name))
                }),
                wipe: "superblock",
                grub_device: d.boot,
            });
            for (i, p) in d.partitions.iter().enumerate() {
                let id = partition_id(&d.disk, i + 1);
                let size = self.sizes.get(&id).copied().unwrap_or(0);
                config.push(StorageAction::Partition {
                    device: d.disk.clone(),
                    number: i + 1,
                    size: format!("{size}B"),
                    flag: p.flag.map(PartitionFlag::curtin_name),
                    // GRUB's core image is written into bios_grub raw: zero it.
                    wipe: if p.flag == Some(PartitionFlag::BiosGrub) {
                        "zero"
                    } else {
                        "superblock"
                    },
                    id,
                });
            }
        }
        for r in &plan.raids {
            config.push(StorageAction::Raid {
                id: r.name.clone(),
                name: r.name.clone(),
                raidlevel: r.level.number(),
                devices: r.devices.clone(),
                spare_devices: r.spares.clone(),
            });
        }
        for b in &plan.bcaches {
            config.push(StorageAction::Bcache {
                id: b.name.clone(),
                name: b.name.clone(),
                backing_device: b.backing.clone(),
                cache_device: b.cache.clone(),
                cache_mode: b.mode.as_str(),
            });
        }
        for vg in &plan.volume_groups {
            config.push(StorageAction::LvmVolgroup {
                id: vg.name.clone(),
                name: vg.name.clone(),
                devices: vg.devices.clone(),
            });
        }
        for lv in &plan.logical_volumes {
            let id = logical_volume_id(&lv.volume_group, &lv.name);
            config.push(StorageAction::LvmPartition {
                size: match lv.size {
                    Size::Bytes(_) => self.sizes.get(&id).map(|s| format!("{s}B")),
                    Size::Rest => None,
                },
                id,
                name: lv.name.clone(),
                volgroup: lv.volume_group.clone(),
            });
        }
        for f in &plan.filesystems {
            config.push(StorageAction::Format {
                id: format!("{}_format", f.device),
                volume: f.device.clone(),
                fstype: f.fstype.curtin_name(),
                label: f.label.clone(),
            });
        }
        let mut mounted: Vec<&FilesystemPlan> = plan
            .filesystems
            .iter()
            .filter(|f| f.mount.is_some() || f.fstype == Filesystem::Swap)
            .collect();
        mounted.sort_by_key(|f| {
            f.mount.as_deref().map_or(usize::MAX, |m| {
                m.split('/').filter(|s| !s.is_empty()).count()
            })
        });
        for f in mounted {
            config.push(StorageAction::Mount {
                id: format!("{}_mount", f.device),
                device: format!("{}_format", f.device),
                path: f.mount.clone().unwrap_or_else(|| "none".to_owned()),
                options: f.mount_options.clone(),
            });
        }
        StorageConfig { version: 1, config }
    }
}
