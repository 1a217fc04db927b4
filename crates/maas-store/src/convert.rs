//! Rows to `maas-core` values and back. A row that does not convert (a
//! status number out of range, malformed JSON) is reported as a backend
//! error naming the table and row, never a panic.

use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use maas_core::ids::*;
use maas_core::lifecycle::NodeStatus;
use maas_core::machine::{
    BlockDevice, BlockDeviceKind, Interface, InterfaceKind, InterfaceLink, LinkMode, Machine,
    PowerParameters, PowerState,
};
use maas_core::network::IpAddressType;
use maas_core::repo::{RepoResult, RepositoryError};
use maas_core::{Architecture, DomainName, Hostname, MacAddress};
use sea_orm::ActiveValue::{NotSet, Set};

use crate::entity::{block_device, interface, ip_address, machine};

pub(crate) fn corrupt(table: &str, id: i64, what: impl std::fmt::Display) -> RepositoryError {
    RepositoryError::Backend {
        message: format!("stored {table} row {id} is invalid: {what}"),
    }
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(
    table: &str,
    id: i64,
    text: &str,
) -> RepoResult<T> {
    serde_json::from_str(text).map_err(|e| corrupt(table, id, e))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    // Serializing our own plain data types cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

pub(crate) fn parse<T: FromStr>(table: &str, id: i64, text: &str) -> RepoResult<T>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| corrupt(table, id, e))
}

fn status(id: i64, code: i32) -> RepoResult<NodeStatus> {
    NodeStatus::from_code(i64::from(code))
        .ok_or_else(|| corrupt("machine", id, format!("status {code}")))
}

/// A machine without interfaces, disks and tags (filled by the caller).
pub(crate) fn machine_from_row(r: &machine::Model) -> RepoResult<Machine> {
    let t = "machine";
    Ok(Machine {
        system_id: parse(t, r.id, &r.system_id)?,
        hostname: parse::<Hostname>(t, r.id, &r.hostname)?,
        domain: parse::<DomainName>(t, r.id, &r.domain)?,
        architecture: parse::<Architecture>(t, r.id, &r.architecture)?,
        status: status(r.id, r.status)?,
        previous_status: r.previous_status.map(|s| status(r.id, s)).transpose()?,
        owner: r.owner.clone(),
        zone: r.zone.clone(),
        pool: r.pool.clone(),
        tags: Default::default(),
        power_type: r.power_type.clone(),
        power_parameters: json::<PowerParameters>(t, r.id, &r.power_parameters)?,
        power_state: PowerState::parse(&r.power_state).map_err(|e| corrupt(t, r.id, e))?,
        boot_interface: r.boot_interface.clone(),
        interfaces: Vec::new(),
        block_devices: Vec::new(),
        hardware: json(t, r.id, &r.hardware)?,
        locked: r.locked,
        ephemeral_deploy: r.ephemeral_deploy,
        netboot: r.netboot,
        osystem: r.osystem.clone(),
        distro_series: r.distro_series.clone(),
        user_data: r.user_data.clone().map(maas_core::machine::UserData),
        owner_data: json(t, r.id, &r.owner_data)?,
        storage_layout: r.storage_layout.clone(),
        node_type: maas_core::machine::NodeType::from_code(i64::from(r.node_type))
            .ok_or_else(|| corrupt(t, r.id, format!("node type {}", r.node_type)))?,
        parent: r.parent.as_deref().map(|p| parse(t, r.id, p)).transpose()?,
        gateway_links: maas_core::machine::GatewayLinks {
            ipv4: r.gateway_link_ipv4.map(maas_core::ids::StaticAddressId),
            ipv6: r.gateway_link_ipv6.map(maas_core::ids::StaticAddressId),
        },
        description: r.description.clone(),
        error_description: r.error_description.clone(),
        status_deadline: r.status_deadline,
        created: r.created,
        updated: r.updated,
        version: r.version,
    })
}

/// The full row for `m` (id not set).
pub(crate) fn machine_to_active(
    m: &Machine,
    version: i64,
    now: DateTime<Utc>,
) -> machine::ActiveModel {
    machine::ActiveModel {
        id: NotSet,
        system_id: Set(m.system_id.to_string()),
        hostname: Set(m.hostname.to_string()),
        domain: Set(m.domain.to_string()),
        architecture: Set(m.architecture.to_string()),
        status: Set(i32::from(m.status.code())),
        previous_status: Set(m.previous_status.map(|s| i32::from(s.code()))),
        owner: Set(m.owner.clone()),
        zone: Set(m.zone.clone()),
        pool: Set(m.pool.clone()),
        power_type: Set(m.power_type.clone()),
        power_parameters: Set(to_json(&m.power_parameters)),
        power_state: Set(m.power_state.as_str().to_owned()),
        boot_interface: Set(m.boot_interface.clone()),
        hardware: Set(to_json(&m.hardware)),
        cpu_count: Set(clamp_i32(u64::from(m.hardware.cpu.count))),
        cpu_speed: Set(clamp_i32(u64::from(m.hardware.cpu.speed_mhz))),
        memory_mib: Set(clamp_i64(m.hardware.memory_mib)),
        allocation_cost: Set(m.allocation_cost()),
        locked: Set(m.locked),
        ephemeral_deploy: Set(m.ephemeral_deploy),
        netboot: Set(m.netboot),
        osystem: Set(m.osystem.clone()),
        distro_series: Set(m.distro_series.clone()),
        user_data: Set(m.user_data.as_ref().map(|u| u.0.clone())),
        owner_data: Set(to_json(&m.owner_data)),
        storage_layout: Set(m.storage_layout.clone()),
        gateway_link_ipv4: Set(m.gateway_links.ipv4.map(|x| x.0)),
        node_type: Set(i32::from(m.node_type.code())),
        parent: Set(m.parent.as_ref().map(ToString::to_string)),
        gateway_link_ipv6: Set(m.gateway_links.ipv6.map(|x| x.0)),
        description: Set(m.description.clone()),
        error_description: Set(m.error_description.clone()),
        status_deadline: Set(m.status_deadline),
        created: Set(m.created),
        updated: Set(now),
        version: Set(version),
    }
}

pub(crate) fn clamp_i32(v: u64) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

pub(crate) fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn interface_from_row(
    r: &interface::Model,
    links: Vec<InterfaceLink>,
) -> RepoResult<Interface> {
    let t = "interface";
    Ok(Interface {
        id: Some(InterfaceId(r.id)),
        name: r.name.clone(),
        kind: InterfaceKind::parse(&r.kind).map_err(|e| corrupt(t, r.id, e))?,
        mac: r
            .mac
            .as_deref()
            .map(|m| parse::<MacAddress>(t, r.id, m))
            .transpose()?,
        parents: json(t, r.id, &r.parents)?,
        vlan: r.vlan_id.map(VlanId),
        enabled: r.enabled,
        link_connected: r.link_connected,
        link_speed_mbps: u32::try_from(r.link_speed).unwrap_or(0),
        interface_speed_mbps: u32::try_from(r.interface_speed).unwrap_or(0),
        vendor: r.vendor.clone(),
        product: r.product.clone(),
        driver: r.driver.clone(),
        tags: json(t, r.id, &r.tags)?,
        params: json(t, r.id, &r.params)?,
        links,
    })
}

pub(crate) fn interface_to_active(i: &Interface, machine_id: i64) -> interface::ActiveModel {
    interface::ActiveModel {
        id: i.id.map_or(NotSet, |id| Set(id.0)),
        machine_id: Set(machine_id),
        name: Set(i.name.clone()),
        kind: Set(i.kind.as_str().to_owned()),
        mac: Set(i.mac.map(|m| m.to_string())),
        parents: Set(to_json(&i.parents)),
        vlan_id: Set(i.vlan.map(|v| v.0)),
        enabled: Set(i.enabled),
        link_connected: Set(i.link_connected),
        link_speed: Set(clamp_i32(u64::from(i.link_speed_mbps))),
        interface_speed: Set(clamp_i32(u64::from(i.interface_speed_mbps))),
        vendor: Set(i.vendor.clone()),
        product: Set(i.product.clone()),
        driver: Set(i.driver.clone()),
        tags: Set(to_json(&i.tags)),
        params: Set(to_json(&i.params)),
    }
}

pub(crate) fn link_from_row(r: &ip_address::Model) -> RepoResult<InterfaceLink> {
    let t = "ip_address";
    let ip =
        r.ip.as_deref()
            .map(|s| parse::<IpAddr>(t, r.id, s))
            .transpose()?;
    let kind = parse::<IpAddressType>(t, r.id, &r.alloc_type)?;
    Ok(InterfaceLink {
        id: Some(StaticAddressId(r.id)),
        mode: LinkMode::from_address(kind, ip),
        subnet: r.subnet_id.map(SubnetId),
        ip,
    })
}

pub(crate) fn link_to_active(
    l: &InterfaceLink,
    interface_id: i64,
    hostname: &str,
    now: DateTime<Utc>,
) -> ip_address::ActiveModel {
    ip_address::ActiveModel {
        id: l.id.map_or(NotSet, |id| Set(id.0)),
        subnet_id: Set(l.subnet.map(|s| s.0)),
        // A link_up link has no address even if one was given.
        ip: Set(if l.mode == LinkMode::LinkUp {
            None
        } else {
            l.ip.map(|ip| ip.to_string())
        }),
        alloc_type: Set(l.mode.address_type().as_str().to_owned()),
        interface_id: Set(Some(interface_id)),
        hostname: Set(Some(hostname.to_owned())),
        created: Set(now),
    }
}

pub(crate) fn block_device_from_row(r: &block_device::Model) -> RepoResult<BlockDevice> {
    let t = "block_device";
    Ok(BlockDevice {
        id: Some(BlockDeviceId(r.id)),
        name: r.name.clone(),
        kind: match r.kind.as_str() {
            "physical" => BlockDeviceKind::Physical,
            "virtual" => BlockDeviceKind::Virtual,
            other => return Err(corrupt(t, r.id, format!("kind {other:?}"))),
        },
        size_bytes: u64::try_from(r.size_bytes).map_err(|e| corrupt(t, r.id, e))?,
        block_size: u32::try_from(r.block_size).map_err(|e| corrupt(t, r.id, e))?,
        serial: r.serial.clone(),
        model: r.model.clone(),
        rotational: r.rotational,
        id_path: r.id_path.clone(),
        tags: json(t, r.id, &r.tags)?,
    })
}

pub(crate) fn block_device_to_active(
    d: &BlockDevice,
    machine_id: i64,
) -> block_device::ActiveModel {
    block_device::ActiveModel {
        id: d.id.map_or(NotSet, |id| Set(id.0)),
        machine_id: Set(machine_id),
        name: Set(d.name.clone()),
        kind: Set(match d.kind {
            BlockDeviceKind::Physical => "physical",
            BlockDeviceKind::Virtual => "virtual",
        }
        .to_owned()),
        size_bytes: Set(clamp_i64(d.size_bytes)),
        block_size: Set(i32::try_from(d.block_size).unwrap_or(512)),
        serial: Set(d.serial.clone()),
        model: Set(d.model.clone()),
        rotational: Set(d.rotational),
        id_path: Set(d.id_path.clone()),
        tags: Set(to_json(&d.tags)),
    }
}
