//! `nodes/{system_id}/interfaces/`: a machine's network interfaces, their
//! subnet links, and the bonds, VLAN interfaces and bridges built on them
//! (section 6.19 of the spec).
//!
//! Every change is a read-modify-write of the machine through
//! `machine_update` (optimistic: a concurrent change makes it a 409), so
//! the interface tree is validated as a whole by `Machine::validate` and the
//! machine's version moves on.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maas_core::lifecycle::NodeStatus;
use maas_core::machine::{Interface, InterfaceKind, InterfaceLink, LinkMode, Machine};
use maas_core::network::{Subnet, check_static_address, next_free_address};
use maas_core::{MacAddress, VlanId};
use serde_json::Value;

use crate::api::{Req, ok};
use crate::error::ApiError;
use crate::render::Ctx;

/// Statuses in which a machine's interfaces may change (MAAS: New, Ready,
/// Allocated, Broken, Failed testing).
const EDITABLE: &[NodeStatus] = &[
    NodeStatus::New,
    NodeStatus::Ready,
    NodeStatus::Allocated,
    NodeStatus::Broken,
    NodeStatus::FailedTesting,
];

/// Parameters kept in an interface's `params`, by kind.
const BOND_PARAMS: &[&str] = &[
    "bond_mode",
    "bond_miimon",
    "bond_downdelay",
    "bond_updelay",
    "bond_lacp_rate",
    "bond_xmit_hash_policy",
    "bond_num_grat_arp",
];
const BRIDGE_PARAMS: &[&str] = &["bridge_type", "bridge_stp", "bridge_fd"];
const COMMON_PARAMS: &[&str] = &["mtu", "accept_ra"];

/// The machine, if the caller may change its interfaces (an admin, or the
/// owner of an allocated machine) and its status allows it.
async fn editable(r: &Req<'_>, what: &str) -> Result<Machine, ApiError> {
    let m = r.node().await?;
    let me = r.user();
    if !me.is_admin && m.owner.as_deref() != Some(me.username.as_str()) {
        return Err(ApiError::Forbidden(
            "You do not have permission to change this machine's interfaces.".into(),
        ));
    }
    if !EDITABLE.contains(&m.status) {
        return Err(ApiError::Conflict(format!(
            "Cannot {what} because the machine is {}; it must be New, Ready, Allocated, Broken or Failed testing.",
            m.status.label()
        )));
    }
    Ok(m)
}

/// The interface `key` (its id, or its name) names.
fn find<'m>(m: &'m Machine, key: &str) -> Option<&'m Interface> {
    m.interfaces
        .iter()
        .find(|i| i.id.is_some_and(|x| x.0.to_string() == key) || i.name == key)
}

fn position(m: &Machine, key: &str, field: &str) -> Result<usize, ApiError> {
    m.interfaces
        .iter()
        .position(|i| i.id.is_some_and(|x| x.0.to_string() == key) || i.name == key)
        .ok_or_else(|| ApiError::invalid(field, format!("No interface {key:?} on this machine.")))
}

/// Writes the machine and answers with the interface now named `name`.
async fn save_and_show(r: &Req<'_>, m: &Machine, name: &str) -> Result<Response, ApiError> {
    let saved = r.region.store().machine_update(m).await?;
    let ctx = Ctx::load(r.region).await?;
    let i = saved
        .interfaces
        .iter()
        .find(|i| i.name == name)
        .ok_or_else(|| ApiError::Internal(format!("interface {name} missing after the write")))?;
    ok(ctx.interface(&saved, i))
}

fn mac(r: &Req<'_>, field: &str) -> Result<Option<MacAddress>, ApiError> {
    r.params
        .get(field)
        .map(|v| MacAddress::parse(v).map_err(|e| ApiError::invalid(field, e.to_string())))
        .transpose()
}

async fn vlan(r: &Req<'_>, field: &str) -> Result<Option<VlanId>, ApiError> {
    let Some(v) = r.params.get(field).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let id: i64 = v
        .parse()
        .map_err(|_| ApiError::invalid(field, format!("{v:?} is not a VLAN id.")))?;
    r.region
        .store()
        .vlan_get(VlanId(id))
        .await
        .map(|v| Some(v.id))
        .map_err(|_| ApiError::invalid(field, format!("No VLAN with id {id}.")))
}

/// Tags as MAAS takes them: repeated, or comma-separated.
fn tags(r: &Req<'_>) -> Option<Vec<String>> {
    let all = r.params.get_all("tags");
    if all.is_empty() {
        return None;
    }
    Some(
        all.iter()
            .flat_map(|t| t.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
    )
}

/// Copies the type's parameters the request sets into `params`; numbers
/// and booleans are checked so a typo is a 400 rather than a bad
/// deployment later.
fn take_params(
    r: &Req<'_>,
    names: &[&str],
    params: &mut BTreeMap<String, String>,
) -> Result<(), ApiError> {
    for name in names.iter().chain(COMMON_PARAMS) {
        if let Some(v) = r.params.get(name) {
            let numeric = matches!(
                *name,
                "mtu"
                    | "bond_miimon"
                    | "bond_downdelay"
                    | "bond_updelay"
                    | "bond_num_grat_arp"
                    | "bridge_fd"
            );
            if numeric && v.parse::<u32>().is_err() {
                return Err(ApiError::invalid(name, format!("{v:?} is not a number.")));
            }
            if *name == "mtu" && !(552..=65535).contains(&v.parse::<u32>().unwrap_or(0)) {
                return Err(ApiError::invalid(
                    name,
                    format!("{v} is outside 552 to 65535."),
                ));
            }
            if matches!(*name, "bridge_stp" | "accept_ra") {
                r.params.flag(name, false)?;
            }
            params.insert((*name).to_owned(), v.to_owned());
        }
    }
    Ok(())
}

fn new_interface(name: String, kind: InterfaceKind, mac: Option<MacAddress>) -> Interface {
    let mut i = match mac {
        Some(m) => Interface::physical(name, m),
        None => Interface::physical(name, MacAddress([0; 6])),
    };
    i.kind = kind;
    i.mac = mac;
    i
}

/// `POST nodes/{system_id}/interfaces/?op=...`: the create operations.
pub(crate) async fn create(r: &Req<'_>, op: &str) -> Result<Response, ApiError> {
    let mut m = editable(r, &format!("{op} on the machine")).await?;
    let iface = match op {
        "create_physical" => {
            let mac = mac(r, "mac_address")?.ok_or_else(|| ApiError::required("mac_address"))?;
            let name = match r.params.get("name") {
                Some(n) => n.to_owned(),
                None => (0..)
                    .map(|n| format!("eth{n}"))
                    .find(|n| find(&m, n).is_none())
                    .unwrap_or_default(),
            };
            let mut i = new_interface(name, InterfaceKind::Physical, Some(mac));
            i.vlan = vlan(r, "vlan").await?;
            take_params(r, &[], &mut i.params)?;
            i
        }
        "create_bond" => {
            let name = r
                .params
                .get("name")
                .ok_or_else(|| ApiError::required("name"))?
                .to_owned();
            let keys = r.params.get_all("parents");
            if keys.is_empty() {
                return Err(ApiError::required("parents"));
            }
            let mut parents = Vec::new();
            for k in &keys {
                let p = &m.interfaces[position(&m, k, "parents")?];
                if p.kind != InterfaceKind::Physical {
                    return Err(ApiError::invalid(
                        "parents",
                        format!(
                            "{} is a {}; a bond is made of physical interfaces.",
                            p.name,
                            p.kind.as_str()
                        ),
                    ));
                }
                if m.interfaces.iter().any(|c| c.parents.contains(&p.name)) {
                    return Err(ApiError::invalid(
                        "parents",
                        format!("{} is already in use by another interface.", p.name),
                    ));
                }
                parents.push(p.name.clone());
            }
            let first = find(&m, &parents[0])
                .cloned()
                .ok_or_else(|| ApiError::Internal("the bond's first parent vanished".into()))?;
            let mut i = new_interface(
                name,
                InterfaceKind::Bond,
                mac(r, "mac_address")?.or(first.mac),
            );
            i.vlan = vlan(r, "vlan").await?.or(first.vlan);
            i.parents = parents.clone();
            take_params(r, BOND_PARAMS, &mut i.params)?;
            i.params
                .entry("bond_mode".into())
                .or_insert_with(|| "balance-rr".into());
            // Members carry no addresses of their own (MAAS moves them to
            // the bond).
            for p in m
                .interfaces
                .iter_mut()
                .filter(|x| parents.contains(&x.name))
            {
                p.links.clear();
            }
            i
        }
        "create_vlan" => {
            let parent_key = r
                .params
                .get("parent")
                .ok_or_else(|| ApiError::required("parent"))?;
            let parent = m.interfaces[position(&m, parent_key, "parent")?].clone();
            let vlan_id = vlan(r, "vlan")
                .await?
                .ok_or_else(|| ApiError::required("vlan"))?;
            let store = r.region.store();
            let tagged = store.vlan_get(vlan_id).await?;
            if tagged.vid == 0 {
                return Err(ApiError::invalid(
                    "vlan",
                    "a VLAN interface needs a tagged VLAN, not the untagged one",
                ));
            }
            if let Some(pv) = parent.vlan {
                let untagged = store.vlan_get(pv).await?;
                if untagged.fabric != tagged.fabric {
                    return Err(ApiError::invalid(
                        "vlan",
                        format!(
                            "VLAN {} is on another fabric than {}'s.",
                            tagged.vid, parent.name
                        ),
                    ));
                }
            }
            let mut i = new_interface(
                format!("{}.{}", parent.name, tagged.vid),
                InterfaceKind::Vlan,
                parent.mac,
            );
            i.vlan = Some(vlan_id);
            i.parents = vec![parent.name.clone()];
            take_params(r, &[], &mut i.params)?;
            i
        }
        "create_bridge" => {
            let parent = match r.params.get("parent") {
                Some(k) => Some(m.interfaces[position(&m, k, "parent")?].clone()),
                None => None,
            };
            let name = match (r.params.get("name"), &parent) {
                (Some(n), _) => n.to_owned(),
                (None, Some(p)) => format!("br-{}", p.name),
                (None, None) => return Err(ApiError::required("name")),
            };
            let mac = mac(r, "mac_address")?.or(parent.as_ref().and_then(|p| p.mac));
            let mut i = new_interface(name, InterfaceKind::Bridge, mac);
            i.vlan = vlan(r, "vlan")
                .await?
                .or(parent.as_ref().and_then(|p| p.vlan));
            if let Some(p) = &parent {
                i.parents = vec![p.name.clone()];
                // The bridge takes over the port's addresses.
                if let Some(port) = m.interfaces.iter_mut().find(|x| x.name == p.name) {
                    i.links = std::mem::take(&mut port.links);
                }
            }
            take_params(r, BRIDGE_PARAMS, &mut i.params)?;
            i.params
                .entry("bridge_type".into())
                .or_insert_with(|| "standard".into());
            i
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "InterfacesHandler has no operation {other}"
            )));
        }
    };
    let mut iface = iface;
    if let Some(t) = tags(r) {
        iface.tags = t;
    }
    if find(&m, &iface.name).is_some() {
        return Err(ApiError::invalid(
            "name",
            format!("The machine already has an interface named {}.", iface.name),
        ));
    }
    let name = iface.name.clone();
    m.interfaces.push(iface);
    m.validate()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    save_and_show(r, &m, &name).await
}

/// Drops gateway choices whose link is gone.
fn forget_gateways(m: &mut Machine) {
    let links: Vec<_> = m
        .interfaces
        .iter()
        .flat_map(|i| i.links.iter().filter_map(|l| l.id))
        .collect();
    if m.gateway_links.ipv4.is_some_and(|id| !links.contains(&id)) {
        m.gateway_links.ipv4 = None;
    }
    if m.gateway_links.ipv6.is_some_and(|id| !links.contains(&id)) {
        m.gateway_links.ipv6 = None;
    }
}

/// The operations on one interface.
pub(crate) async fn item(r: &Req<'_>, op: &str) -> Result<Response, ApiError> {
    if op == "read" {
        let m = r.node().await?;
        let i = find(&m, r.path("id"))
            .ok_or_else(|| ApiError::NotFound("No Interface matches the given query.".into()))?;
        let ctx = Ctx::load(r.region).await?;
        return ok(ctx.interface(&m, i));
    }
    let what = match op {
        "update" => "update the interface".to_owned(),
        "delete" => "delete the interface".to_owned(),
        other => format!("{other} the interface"),
    };
    let mut m = editable(r, &what).await?;
    let idx = m
        .interfaces
        .iter()
        .position(|i| {
            i.id.is_some_and(|x| x.0.to_string() == r.path("id")) || i.name == r.path("id")
        })
        .ok_or_else(|| ApiError::NotFound("No Interface matches the given query.".into()))?;
    let name = m.interfaces[idx].name.clone();
    match op {
        "delete" => {
            let children: Vec<&str> = m
                .interfaces
                .iter()
                .filter(|c| c.parents.contains(&name))
                .map(|c| c.name.as_str())
                .collect();
            if !children.is_empty() {
                return Err(ApiError::Conflict(format!(
                    "Cannot delete {name}: {} use it; delete them first.",
                    children.join(", ")
                )));
            }
            m.interfaces.remove(idx);
            if m.boot_interface.as_deref() == Some(name.as_str()) {
                m.boot_interface = m.interfaces.first().map(|i| i.name.clone());
            }
            r.region.store().machine_update(&m).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "update" => {
            let new_vlan = vlan(r, "vlan").await?;
            let new_mac = mac(r, "mac_address")?;
            let tags = tags(r);
            let kind = m.interfaces[idx].kind;
            let extra: &[&str] = match kind {
                InterfaceKind::Bond => BOND_PARAMS,
                InterfaceKind::Bridge => BRIDGE_PARAMS,
                _ => &[],
            };
            let mut params = m.interfaces[idx].params.clone();
            take_params(r, extra, &mut params)?;
            let mut renamed = name.clone();
            if let Some(n) = r.params.get("name") {
                renamed = n.to_owned();
            }
            let p = &r.params;
            let i = &mut m.interfaces[idx];
            i.params = params;
            if let Some(v) = new_vlan {
                i.vlan = Some(v);
            }
            if let Some(mac) = new_mac {
                i.mac = Some(mac);
            }
            if let Some(t) = tags {
                i.tags = t;
            }
            if p.get("link_connected").is_some() {
                i.link_connected = p.flag("link_connected", true)?;
            }
            for (field, slot) in [
                ("link_speed", &mut i.link_speed_mbps),
                ("interface_speed", &mut i.interface_speed_mbps),
            ] {
                if let Some(v) = p.get(field) {
                    *slot = v
                        .parse()
                        .map_err(|_| ApiError::invalid(field, format!("{v:?} is not a number.")))?;
                }
            }
            i.name = renamed.clone();
            if renamed != name {
                for c in &mut m.interfaces {
                    for parent in &mut c.parents {
                        if *parent == name {
                            parent.clone_from(&renamed);
                        }
                    }
                }
                if m.boot_interface.as_deref() == Some(name.as_str()) {
                    m.boot_interface = Some(renamed.clone());
                }
            }
            m.validate()
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            save_and_show(r, &m, &renamed).await
        }
        "link_subnet" => {
            let mode = r
                .params
                .get("mode")
                .ok_or_else(|| ApiError::required("mode"))?;
            let mode = match mode.to_ascii_uppercase().as_str() {
                "AUTO" => LinkMode::Auto,
                "DHCP" => LinkMode::Dhcp,
                "STATIC" => LinkMode::Static,
                "LINK_UP" => LinkMode::LinkUp,
                _ => {
                    return Err(ApiError::invalid(
                        "mode",
                        format!("{mode:?} is not one of AUTO, DHCP, STATIC, LINK_UP."),
                    ));
                }
            };
            let subnet = match r.params.get("subnet").filter(|s| !s.is_empty()) {
                Some(key) => Some(subnet(r, key).await?),
                None if mode == LinkMode::LinkUp => None,
                None => return Err(ApiError::required("subnet")),
            };
            let ip = match (mode, &subnet) {
                (LinkMode::Static, Some(s)) => Some(static_ip(r, &m, s).await?),
                (_, _) if r.params.get("ip_address").is_some() => {
                    return Err(ApiError::invalid(
                        "ip_address",
                        "only a STATIC link takes an address",
                    ));
                }
                _ => None,
            };
            let i = &mut m.interfaces[idx];
            if let Some(s) = &subnet {
                // The interface joins the subnet's VLAN.
                i.vlan = Some(s.vlan);
            }
            if mode == LinkMode::LinkUp {
                // LINK_UP replaces any other link-up link.
                i.links.retain(|l| l.mode != LinkMode::LinkUp);
            }
            i.links.push(InterfaceLink {
                id: None,
                mode,
                subnet: subnet.as_ref().map(|s| s.id),
                ip,
            });
            let wants_gateway = r.params.flag("default_gateway", false)?;
            if !wants_gateway {
                return save_and_show(r, &m, &name).await;
            }
            let s = subnet
                .as_ref()
                .filter(|s| s.gateway_ip.is_some() && matches!(mode, LinkMode::Auto | LinkMode::Static))
                .ok_or_else(|| {
                    ApiError::invalid(
                        "default_gateway",
                        "only an AUTO or STATIC link to a subnet with a gateway can be the default gateway",
                    )
                })?;
            let ipv4 = s.cidr.addr().is_ipv4();
            let mut saved = r.region.store().machine_update(&m).await?;
            // The new link is the last one on the interface.
            let link = saved
                .interfaces
                .iter()
                .find(|i| i.name == name)
                .and_then(|i| i.links.last())
                .and_then(|l| l.id);
            if ipv4 {
                saved.gateway_links.ipv4 = link;
            } else {
                saved.gateway_links.ipv6 = link;
            }
            save_and_show(r, &saved, &name).await
        }
        "unlink_subnet" => {
            let id = r.params.get("id").ok_or_else(|| ApiError::required("id"))?;
            let i = &mut m.interfaces[idx];
            let before = i.links.len();
            i.links
                .retain(|l| l.id.is_none_or(|x| x.0.to_string() != id));
            if i.links.len() == before {
                return Err(ApiError::invalid("id", format!("No link {id} on {name}.")));
            }
            forget_gateways(&mut m);
            save_and_show(r, &m, &name).await
        }
        "disconnect" => {
            let i = &mut m.interfaces[idx];
            i.links.clear();
            i.vlan = None;
            forget_gateways(&mut m);
            save_and_show(r, &m, &name).await
        }
        "set_default_gateway" => {
            let subnets = r.region.store().subnet_list().await?;
            let gateway_of = |l: &InterfaceLink| {
                l.subnet
                    .and_then(|s| subnets.iter().find(|x| x.id == s))
                    .and_then(|s| s.gateway_ip)
            };
            let i = &m.interfaces[idx];
            let wanted = r.params.get("link_id");
            let candidates: Vec<&InterfaceLink> = i
                .links
                .iter()
                .filter(|l| wanted.is_none_or(|w| l.id.is_some_and(|x| x.0.to_string() == w)))
                .filter(|l| matches!(l.mode, LinkMode::Auto | LinkMode::Static))
                .filter(|l| gateway_of(l).is_some())
                .collect();
            if candidates.is_empty() {
                return Err(ApiError::invalid(
                    if wanted.is_some() { "link_id" } else { "id" },
                    format!(
                        "{name} has no AUTO or STATIC link{} to a subnet with a gateway.",
                        wanted.map(|w| format!(" {w}")).unwrap_or_default()
                    ),
                ));
            }
            // One per family: the first candidate of each.
            let pick = |ipv4: bool| {
                candidates
                    .iter()
                    .find(|l| gateway_of(l).is_some_and(|g| g.is_ipv4() == ipv4))
                    .and_then(|l| l.id)
            };
            let (v4, v6) = (pick(true), pick(false));
            if v4.is_some() {
                m.gateway_links.ipv4 = v4;
            }
            if v6.is_some() {
                m.gateway_links.ipv6 = v6;
            }
            save_and_show(r, &m, &name).await
        }
        other => Err(ApiError::BadRequest(format!(
            "InterfaceHandler has no operation {other}"
        ))),
    }
}

/// A subnet by id, CIDR or name.
async fn subnet(r: &Req<'_>, key: &str) -> Result<Subnet, ApiError> {
    r.region
        .store()
        .subnet_list()
        .await?
        .into_iter()
        .find(|s| s.id.0.to_string() == key || s.cidr.to_string() == key || s.name == key)
        .ok_or_else(|| ApiError::invalid("subnet", format!("No subnet {key:?}.")))
}

/// The address of a STATIC link: the one asked for, checked against the
/// subnet (inside it, not in a dynamic range, not taken), or the lowest
/// free one.
async fn static_ip(r: &Req<'_>, m: &Machine, s: &Subnet) -> Result<IpAddr, ApiError> {
    let store = r.region.store();
    let ranges = store.subnet_ip_range_list(Some(s.id)).await?;
    let mut assigned: Vec<IpAddr> = store
        .subnet_address_list(s.id)
        .await?
        .into_iter()
        .filter_map(|a| a.ip)
        .collect();
    // Links of this machine not yet stored count too.
    assigned.extend(
        m.interfaces
            .iter()
            .flat_map(|i| i.links.iter().filter_map(|l| l.ip)),
    );
    match r.params.get("ip_address").filter(|v| !v.is_empty()) {
        Some(v) => {
            let ip: IpAddr = v
                .parse()
                .map_err(|e| ApiError::invalid("ip_address", format!("{v:?}: {e}")))?;
            check_static_address(s, &ranges, &assigned, ip)
                .map_err(|e| ApiError::invalid("ip_address", e.to_string()))?;
            Ok(ip)
        }
        None => {
            next_free_address(s, &ranges, &assigned).map_err(|e| ApiError::Conflict(e.to_string()))
        }
    }
}

/// Renders the interfaces of `m` (the list operation).
pub(crate) fn list(ctx: &Ctx, m: &Machine) -> Value {
    Value::Array(m.interfaces.iter().map(|i| ctx.interface(m, i)).collect())
}
