//! `nodes/{system_id}/blockdevices/...`: a machine's disks, and the
//! partitions, filesystems and mounts on them (section 6.20 of the spec).
//!
//! What is on the disks is the machine's storage plan (maas-curtin's
//! `StoragePlan`): the plan of its layout (`set_storage_layout`, else the
//! `default_storage_layout` setting), rendered as MAAS renders partitions
//! and filesystems. An edit (a partition made or deleted, a device formatted
//! or mounted, the boot disk moved) turns the layout into a custom plan and
//! changes that, as MAAS moves a machine to a custom layout when its
//! storage is edited by hand. Edits are not validated as a whole (a layout
//! is built in steps); deploy and `get_curtin_config` validate it and name
//! what is wrong.
//!
//! Partition ids are their numbers on the disk (the URI names the disk);
//! deleting a partition renumbers the ones after it, as the kernel would.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maas_core::lifecycle::NodeStatus;
use maas_core::machine::{BlockDevice, Machine};
use maas_curtin::StorageLayout;
use maas_curtin::storage::{
    DiskPlan, Filesystem, FilesystemPlan, MIB, PARTITION_TABLE_OVERHEAD, PartitionFlag,
    PartitionPlan, PartitionTable, Size, StoragePlan, partition_id,
};
use serde_json::{Value, json};

use crate::api::{Req, ok};
use crate::error::ApiError;

const API: &str = "/MAAS/api/2.0";

/// The plan on `m`'s disks: its layout's, else `default`'s; `None` when
/// no plan can be made (firmware unknown before commissioning, no disks).
pub(crate) fn plan_of(m: &Machine, default: &StorageLayout) -> Option<StoragePlan> {
    let own: Option<StorageLayout> = m
        .storage_layout
        .as_deref()
        .and_then(|raw| serde_json::from_str(raw).ok());
    match own.as_ref().unwrap_or(default) {
        // A custom plan is what it is, firmware known or not.
        StorageLayout::Custom(plan) => Some(plan.clone()),
        layout => layout.plan(m).ok(),
    }
}

/// Sizes of a disk's partitions, as curtin will lay them out: fixed sizes
/// rounded up to whole MiB, the rest partition what is left.
fn partition_sizes(disk: &BlockDevice, d: &DiskPlan) -> Vec<u64> {
    let usable = disk.size_bytes.saturating_sub(PARTITION_TABLE_OVERHEAD);
    let fixed: u64 = d
        .partitions
        .iter()
        .map(|p| match p.size {
            Size::Bytes(n) => n.div_ceil(MIB) * MIB,
            Size::Rest => 0,
        })
        .sum();
    let rest = usable.saturating_sub(fixed) / MIB * MIB;
    d.partitions
        .iter()
        .map(|p| match p.size {
            Size::Bytes(n) => n.div_ceil(MIB) * MIB,
            Size::Rest => rest,
        })
        .collect()
}

fn filesystem_json(plan: &StoragePlan, device: &str) -> Value {
    match plan.filesystems.iter().find(|f| f.device == device) {
        Some(f) => json!({
            "fstype": f.fstype.curtin_name(),
            "label": f.label,
            "uuid": null,
            "mount_point": f.mount,
            "mount_options": f.mount_options,
        }),
        None => Value::Null,
    }
}

fn used_for(plan: &StoragePlan, device: &str) -> String {
    match plan.filesystems.iter().find(|f| f.device == device) {
        Some(f) => match &f.mount {
            Some(m) => format!(
                "{} formatted filesystem mounted at {m}",
                f.fstype.curtin_name()
            ),
            None => format!("Unmounted {} formatted filesystem", f.fstype.curtin_name()),
        },
        None => {
            // In a volume group, RAID or bcache?
            let in_vg = plan
                .volume_groups
                .iter()
                .find(|v| v.devices.iter().any(|x| x == device));
            match in_vg {
                Some(v) => format!("LVM volume for {}", v.name),
                None => "Unused".into(),
            }
        }
    }
}

/// A block device as MAAS renders it, with what the plan puts on it.
pub(crate) fn block_device(m: &Machine, d: &BlockDevice, plan: Option<&StoragePlan>) -> Value {
    let id = d.id.map_or(0, |x| x.0);
    let sid = m.system_id.to_string();
    let on_disk = plan.and_then(|p| p.disks.iter().find(|x| x.disk == d.name));
    let partitions: Vec<Value> = match (plan, on_disk) {
        (Some(plan), Some(dp)) => {
            let sizes = partition_sizes(d, dp);
            dp.partitions
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let n = i + 1;
                    let pid = partition_id(&d.name, n);
                    json!({
                        "id": n,
                        "uuid": null,
                        "size": sizes[i],
                        "bootable": p.flag == Some(PartitionFlag::Boot),
                        "tags": [],
                        "type": "partition",
                        "path": format!("/dev/disk/by-dname/{pid}"),
                        "system_id": sid,
                        "device_id": id,
                        "used_for": used_for(plan, &pid),
                        "filesystem": filesystem_json(plan, &pid),
                        "resource_uri": format!("{API}/nodes/{sid}/blockdevices/{id}/partition/{n}"),
                    })
                })
                .collect()
        }
        _ => Vec::new(),
    };
    let used: u64 = partitions.iter().filter_map(|p| p["size"].as_u64()).sum();
    let whole_fs = plan.map_or(Value::Null, |p| filesystem_json(p, &d.name));
    let used_for_text = match (plan, on_disk) {
        (Some(_), Some(dp)) if !dp.partitions.is_empty() => format!(
            "{} partitioned with {} partition{}",
            dp.ptable.map_or("GPT", |t| match t {
                PartitionTable::Gpt => "GPT",
                PartitionTable::Mbr => "MBR",
            }),
            dp.partitions.len(),
            if dp.partitions.len() == 1 { "" } else { "s" }
        ),
        (Some(p), _) => used_for(p, &d.name),
        _ => "Unused".into(),
    };
    let whole_used = !whole_fs.is_null() || used_for_text != "Unused";
    json!({
        "id": id,
        "system_id": sid,
        "name": d.name,
        "uuid": null,
        "type": "physical",
        "path": format!("/dev/disk/by-dname/{}", d.name),
        "model": d.model,
        "serial": d.serial,
        "id_path": d.id_path,
        "size": d.size_bytes,
        "block_size": d.block_size,
        "available_size": if whole_used && partitions.is_empty() { 0 } else { d.size_bytes.saturating_sub(used) },
        "used_size": if whole_used && partitions.is_empty() { d.size_bytes } else { used },
        "used_for": used_for_text,
        "tags": d.tags,
        "filesystem": whole_fs,
        "partition_table_type": on_disk.and_then(|dp| dp.ptable).map(|t| match t {
            PartitionTable::Gpt => "GPT",
            PartitionTable::Mbr => "MBR",
        }),
        "partitions": partitions,
        "storage_pool": null,
        "numa_node": 0,
        "resource_uri": format!("{API}/nodes/{sid}/blockdevices/{id}/"),
    })
}

/// The disk the URI names (`device_id` or `id`: its id or its name).
fn disk<'m>(m: &'m Machine, key: &str) -> Result<&'m BlockDevice, ApiError> {
    m.block_devices
        .iter()
        .find(|d| d.id.is_some_and(|x| x.0.to_string() == key) || d.name == key)
        .ok_or_else(|| ApiError::NotFound("No BlockDevice matches the given query.".into()))
}

/// The machine, if the caller may change its storage (an admin, or the
/// owner of an allocated machine) and it is Ready or Allocated.
async fn editable(r: &Req<'_>) -> Result<Machine, ApiError> {
    let m = r.machine().await?;
    let me = r.user();
    if !me.is_admin && m.owner.as_deref() != Some(me.username.as_str()) {
        return Err(ApiError::Forbidden(
            "You do not have permission to change this machine's storage.".into(),
        ));
    }
    if !matches!(m.status, NodeStatus::Ready | NodeStatus::Allocated) {
        return Err(ApiError::Conflict(format!(
            "Cannot change the storage of {} while it is {}; it must be Ready or Allocated.",
            m.system_id,
            m.status.label()
        )));
    }
    Ok(m)
}

/// Runs `edit` on the machine's plan (as a custom layout) and stores it.
async fn edit_plan<F>(r: &Req<'_>, edit: F) -> Result<Machine, ApiError>
where
    F: FnOnce(&Machine, &mut StoragePlan) -> Result<(), ApiError>,
{
    let mut m = editable(r).await?;
    let mut plan = match r.region.storage_layout(&m).await? {
        StorageLayout::Custom(plan) => plan,
        // Before commissioning (firmware unknown) a layout has no plan yet:
        // the edits start from nothing.
        layout => layout.plan(&m).unwrap_or_default(),
    };
    edit(&m, &mut plan)?;
    m.storage_layout = Some(
        serde_json::to_string(&StorageLayout::Custom(plan))
            .map_err(|e| ApiError::Internal(format!("storing the plan: {e}")))?,
    );
    Ok(r.region.store().machine_update(&m).await?)
}

fn fstype(r: &Req<'_>) -> Result<Filesystem, ApiError> {
    let raw = r
        .params
        .get("fstype")
        .ok_or_else(|| ApiError::required("fstype"))?;
    serde_json::from_value(json!(raw.to_ascii_lowercase())).map_err(|_| {
        ApiError::invalid(
            "fstype",
            format!("{raw:?} is not one of ext2, ext4, xfs, fat32, vfat, swap, btrfs."),
        )
    })
}

/// Format, unformat, mount or unmount the device `id` (a disk's name or a
/// partition's id) in the plan.
fn filesystem_op(r: &Req<'_>, op: &str, plan: &mut StoragePlan, id: &str) -> Result<(), ApiError> {
    let pos = plan.filesystems.iter().position(|f| f.device == id);
    match op {
        "format" => {
            if pos.is_some_and(|i| plan.filesystems[i].mount.is_some()) {
                return Err(ApiError::Conflict(format!(
                    "{id} is mounted; unmount it before formatting."
                )));
            }
            if plan
                .disks
                .iter()
                .any(|d| d.disk == id && !d.partitions.is_empty())
            {
                return Err(ApiError::Conflict(format!(
                    "{id} has partitions; format them, or delete them first."
                )));
            }
            let fs = FilesystemPlan {
                device: id.to_owned(),
                fstype: fstype(r)?,
                mount: None,
                mount_options: None,
                label: r.params.get("label").map(str::to_owned),
            };
            match pos {
                Some(i) => plan.filesystems[i] = fs,
                None => plan.filesystems.push(fs),
            }
        }
        "unformat" => {
            let i = pos.ok_or_else(|| ApiError::Conflict(format!("{id} is not formatted.")))?;
            if plan.filesystems[i].mount.is_some() {
                return Err(ApiError::Conflict(format!(
                    "{id} is mounted; unmount it before unformatting."
                )));
            }
            plan.filesystems.remove(i);
        }
        "mount" => {
            let i = pos.ok_or_else(|| {
                ApiError::Conflict(format!("{id} is not formatted; format it before mounting."))
            })?;
            let point = r
                .params
                .get("mount_point")
                .ok_or_else(|| ApiError::required("mount_point"))?;
            let swap = plan.filesystems[i].fstype == Filesystem::Swap && point == "none";
            if !swap && !point.starts_with('/') {
                return Err(ApiError::invalid(
                    "mount_point",
                    format!("{point:?} is not an absolute path."),
                ));
            }
            if plan
                .filesystems
                .iter()
                .any(|f| f.device != id && f.mount.as_deref() == Some(point))
            {
                return Err(ApiError::invalid(
                    "mount_point",
                    format!("something else is already mounted at {point}."),
                ));
            }
            plan.filesystems[i].mount = Some(point.to_owned());
            plan.filesystems[i].mount_options = r.params.get("mount_options").map(str::to_owned);
        }
        "unmount" => {
            let i = pos
                .filter(|i| plan.filesystems[*i].mount.is_some())
                .ok_or_else(|| ApiError::Conflict(format!("{id} is not mounted.")))?;
            plan.filesystems[i].mount = None;
            plan.filesystems[i].mount_options = None;
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "no block device operation {other}"
            )));
        }
    }
    Ok(())
}

/// `POST nodes/{system_id}/blockdevices/`: an admin records a physical
/// disk by hand (name and size; model and serial, or id_path).
pub(crate) async fn create(r: &Req<'_>) -> Result<Response, ApiError> {
    r.admin()?;
    let mut m = r.machine().await?;
    let p = &r.params;
    let name = p.get("name").ok_or_else(|| ApiError::required("name"))?;
    if m.block_devices.iter().any(|d| d.name == name) {
        return Err(ApiError::invalid(
            "name",
            format!("The machine already has a block device named {name}."),
        ));
    }
    let size = p.get("size").ok_or_else(|| ApiError::required("size"))?;
    let size: u64 =
        size.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::invalid("size", format!("{size:?} is not a size in bytes."))
        })?;
    let block_size: u32 = match p.get("block_size") {
        Some(b) => b
            .parse()
            .ok()
            .filter(|n: &u32| n.is_power_of_two() && *n >= 512)
            .ok_or_else(|| {
                ApiError::invalid(
                    "block_size",
                    format!("{b:?} is not a block size (512, 4096...)."),
                )
            })?,
        None => 512,
    };
    let (model, serial, id_path) = (p.get("model"), p.get("serial"), p.get("id_path"));
    if model.is_some() != serial.is_some() || (model.is_none() && id_path.is_none()) {
        return Err(ApiError::invalid(
            "id_path",
            "give model and serial, or id_path",
        ));
    }
    let mut d = BlockDevice::disk(name, size);
    d.block_size = block_size;
    d.model = model.unwrap_or("").to_owned();
    d.serial = serial.unwrap_or("").to_owned();
    d.id_path = id_path.map(str::to_owned);
    d.tags = p.get_all("tags");
    m.block_devices.push(d);
    let m = r.region.store().machine_update(&m).await?;
    show_disk(r, &m, name).await
}

/// `nodes/{system_id}/blockdevices/`: list.
pub(crate) async fn list(r: &Req<'_>) -> Result<Response, ApiError> {
    let m = r.machine().await?;
    let plan = plan_of(&m, &r.region.storage_layout(&m).await?);
    ok(Value::Array(
        m.block_devices
            .iter()
            .map(|d| block_device(&m, d, plan.as_ref()))
            .collect(),
    ))
}

async fn show_disk(r: &Req<'_>, m: &Machine, name: &str) -> Result<Response, ApiError> {
    let plan = plan_of(m, &r.region.storage_layout(m).await?);
    let d = disk(m, name)?;
    ok(block_device(m, d, plan.as_ref()))
}

/// `nodes/{system_id}/blockdevices/{id}/`: read and the operations.
pub(crate) async fn item(r: &Req<'_>, op: &str) -> Result<Response, ApiError> {
    if op == "read" {
        let m = r.machine().await?;
        return show_disk(r, &m, r.path("id")).await;
    }
    let key = r.path("id").to_owned();
    match op {
        "add_tag" | "remove_tag" => {
            let mut m = editable(r).await?;
            let tag = r
                .params
                .get("tag")
                .ok_or_else(|| ApiError::required("tag"))?;
            let name = disk(&m, &key)?.name.clone();
            let d = m
                .block_devices
                .iter_mut()
                .find(|d| d.name == name)
                .ok_or_else(|| ApiError::Internal("the disk vanished".into()))?;
            if op == "add_tag" {
                if !d.tags.iter().any(|t| t == tag) {
                    d.tags.push(tag.to_owned());
                }
            } else {
                d.tags.retain(|t| t != tag);
            }
            let m = r.region.store().machine_update(&m).await?;
            show_disk(r, &m, &name).await
        }
        "set_boot_disk" => {
            let m = edit_plan(r, |m, plan| {
                let name = disk(m, &key)?.name.clone();
                if !plan.disks.iter().any(|d| d.disk == name) {
                    plan.disks.push(DiskPlan {
                        disk: name.clone(),
                        ptable: Some(PartitionTable::Gpt),
                        boot: false,
                        partitions: Vec::new(),
                    });
                }
                for d in &mut plan.disks {
                    d.boot = d.disk == name;
                }
                Ok(())
            })
            .await?;
            let name = disk(&m, &key)?.name.clone();
            show_disk(r, &m, &name).await
        }
        "format" | "unformat" | "mount" | "unmount" => {
            let m = edit_plan(r, |m, plan| {
                let name = disk(m, &key)?.name.clone();
                filesystem_op(r, op, plan, &name)
            })
            .await?;
            let name = disk(&m, &key)?.name.clone();
            show_disk(r, &m, &name).await
        }
        other => Err(ApiError::BadRequest(format!(
            "BlockDeviceHandler has no operation {other}"
        ))),
    }
}

/// `nodes/{system_id}/blockdevices/{device_id}/partitions/`: list, create.
pub(crate) async fn partitions(r: &Req<'_>, op: &str) -> Result<Response, ApiError> {
    let key = r.path("device_id").to_owned();
    let m = if op == "read" {
        r.machine().await?
    } else {
        let size = match r.params.get("size") {
            Some(s) => Size::Bytes(
                s.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n >= MIB)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            "size",
                            format!("{s:?} is not a size in bytes of at least 1 MiB."),
                        )
                    })?,
            ),
            None => Size::Rest,
        };
        let bootable = r.params.flag("bootable", false)?;
        edit_plan(r, |m, plan| {
            let d = disk(m, &key)?;
            if plan.filesystems.iter().any(|f| f.device == d.name) {
                return Err(ApiError::Conflict(format!(
                    "{} is formatted as a whole; unformat it before partitioning.",
                    d.name
                )));
            }
            let idx = match plan.disks.iter().position(|x| x.disk == d.name) {
                Some(i) => i,
                None => {
                    plan.disks.push(DiskPlan {
                        disk: d.name.clone(),
                        ptable: Some(PartitionTable::Gpt),
                        boot: plan.disks.is_empty(),
                        partitions: Vec::new(),
                    });
                    plan.disks.len() - 1
                }
            };
            let dp = &mut plan.disks[idx];
            if dp.ptable.is_none() {
                dp.ptable = Some(PartitionTable::Gpt);
            }
            if size == Size::Rest && dp.partitions.iter().any(|p| p.size == Size::Rest) {
                return Err(ApiError::invalid(
                    "size",
                    format!(
                        "{} already has a partition taking the rest; give a size.",
                        d.name
                    ),
                ));
            }
            dp.partitions.push(PartitionPlan {
                size,
                flag: bootable.then_some(PartitionFlag::Boot),
            });
            let sizes = partition_sizes(d, dp);
            let fixed: u64 = dp
                .partitions
                .iter()
                .zip(&sizes)
                .filter(|(p, _)| p.size != Size::Rest)
                .map(|(_, s)| *s)
                .sum();
            let usable = d.size_bytes.saturating_sub(PARTITION_TABLE_OVERHEAD);
            let rest_empty = dp
                .partitions
                .iter()
                .zip(&sizes)
                .any(|(p, s)| p.size == Size::Rest && *s < MIB);
            if fixed > usable || rest_empty {
                return Err(ApiError::invalid(
                    "size",
                    format!(
                        "the partitions of {} would need {} MiB; it has {} MiB.",
                        d.name,
                        fixed / MIB,
                        usable / MIB
                    ),
                ));
            }
            Ok(())
        })
        .await?
    };
    let plan = plan_of(&m, &r.region.storage_layout(&m).await?);
    let d = disk(&m, &key)?;
    let v = block_device(&m, d, plan.as_ref());
    let parts = v["partitions"].as_array().cloned().unwrap_or_default();
    if op == "read" {
        ok(Value::Array(parts))
    } else {
        ok(parts.last().cloned().unwrap_or(Value::Null))
    }
}

/// `nodes/{system_id}/blockdevices/{device_id}/partition/{id}`: read,
/// delete and the filesystem operations.
pub(crate) async fn partition(r: &Req<'_>, op: &str) -> Result<Response, ApiError> {
    let key = r.path("device_id").to_owned();
    let n: usize = r
        .path("id")
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| ApiError::NotFound("No Partition matches the given query.".into()))?;
    let check = |m: &Machine, plan: &StoragePlan| -> Result<String, ApiError> {
        let d = disk(m, &key)?;
        let has = plan
            .disks
            .iter()
            .find(|x| x.disk == d.name)
            .is_some_and(|x| x.partitions.len() >= n);
        if has {
            Ok(d.name.clone())
        } else {
            Err(ApiError::NotFound(
                "No Partition matches the given query.".into(),
            ))
        }
    };
    let m = match op {
        "read" => r.machine().await?,
        "delete" => {
            edit_plan(r, |m, plan| {
                let name = check(m, plan)?;
                let pid = partition_id(&name, n);
                if plan
                    .filesystems
                    .iter()
                    .any(|f| f.device == pid && f.mount.is_some())
                {
                    return Err(ApiError::Conflict(format!(
                        "{pid} is mounted; unmount it before deleting."
                    )));
                }
                if let Some(v) = plan.volume_groups.iter().find(|v| v.devices.contains(&pid)) {
                    return Err(ApiError::Conflict(format!(
                        "{pid} is in volume group {}.",
                        v.name
                    )));
                }
                plan.filesystems.retain(|f| f.device != pid);
                let dp = plan
                    .disks
                    .iter_mut()
                    .find(|x| x.disk == name)
                    .ok_or_else(|| ApiError::Internal("the disk plan vanished".into()))?;
                let count = dp.partitions.len();
                dp.partitions.remove(n - 1);
                // The partitions after it move down one number.
                for k in n + 1..=count {
                    let (from, to) = (partition_id(&name, k), partition_id(&name, k - 1));
                    for f in &mut plan.filesystems {
                        if f.device == from {
                            f.device.clone_from(&to);
                        }
                    }
                    for v in &mut plan.volume_groups {
                        for dev in &mut v.devices {
                            if *dev == from {
                                dev.clone_from(&to);
                            }
                        }
                    }
                }
                Ok(())
            })
            .await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        "format" | "unformat" | "mount" | "unmount" => {
            edit_plan(r, |m, plan| {
                let name = check(m, plan)?;
                filesystem_op(r, op, plan, &partition_id(&name, n))
            })
            .await?
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "PartitionHandler has no operation {other}"
            )));
        }
    };
    let plan = plan_of(&m, &r.region.storage_layout(&m).await?);
    let d = disk(&m, &key)?;
    let v = block_device(&m, d, plan.as_ref());
    v["partitions"]
        .as_array()
        .and_then(|p| p.get(n - 1))
        .cloned()
        .map_or_else(
            || {
                Err(ApiError::NotFound(
                    "No Partition matches the given query.".into(),
                ))
            },
            ok,
        )
}
