//! Allocation by constraints (`op=allocate`).
//!
//! [`AllocationRequest::from_params`] reads the API's form parameters (unknown
//! ones are an error, as in MAAS); [`Constraints::failures`] says which
//! constraints a machine misses; [`select`] picks the cheapest match and, when
//! there is none, explains which constraint excluded how many machines.
//!
//! Storage backends may pre-filter in SQL, but the answer is always what
//! [`Constraints::matches`] says: a pre-filter must only drop machines this
//! module would drop too.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::ids::{FabricId, SpaceId, SubnetId, SystemId, VlanId};
use crate::lifecycle::NodeStatus;
use crate::machine::{Interface, Machine, PowerState};
use crate::network::{Fabric, Space, Subnet, Vlan};

/// One storage requirement: `label:size(tag,tag)`, size in GB (10^9 bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorageConstraint {
    /// The label the caller gave it (MAAS answers with label -> disk ids).
    pub label: String,
    /// Minimum size in bytes.
    pub min_bytes: u64,
    /// Tags the disk must have.
    pub tags: Vec<String>,
}

/// One interface requirement: `label:key=value,key=value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterfaceConstraint {
    /// The label.
    pub label: String,
    /// Conditions (key, value): fabric, fabric_class, ip, mode, name, subnet,
    /// space, type, vlan, vid, tag, link_speed.
    pub conditions: Vec<(String, String)>,
}

/// One device requirement: `key=value,...` over vendor_id, product_id,
/// vendor_name, product_name, commissioning_driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceConstraint {
    /// Conditions.
    pub conditions: Vec<(String, String)>,
}

/// The constraints of an allocation. Empty means "any Ready machine".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)] // each field is the API parameter of the same name
pub struct Constraints {
    pub name: Option<String>,
    pub system_id: Option<SystemId>,
    pub arch: Vec<String>,
    pub not_arch: Vec<String>,
    pub cpu_count: Option<u32>,
    pub cpu_speed: Option<u32>,
    /// MiB.
    pub mem: Option<u64>,
    pub tags: Vec<String>,
    pub not_tags: Vec<String>,
    pub zone: Option<String>,
    pub not_in_zone: Vec<String>,
    pub pool: Option<String>,
    pub not_in_pool: Vec<String>,
    pub subnets: Vec<String>,
    pub not_subnets: Vec<String>,
    pub vlans: Vec<String>,
    pub not_vlans: Vec<String>,
    pub fabrics: Vec<String>,
    pub not_fabrics: Vec<String>,
    pub fabric_classes: Vec<String>,
    pub not_fabric_classes: Vec<String>,
    /// Mbit/s.
    pub link_speed: Option<u32>,
    pub storage: Vec<StorageConstraint>,
    pub interfaces: Vec<InterfaceConstraint>,
    pub devices: Vec<DeviceConstraint>,
    pub owner: Option<String>,
    pub not_owner: Vec<String>,
    pub power_state: Option<PowerState>,
    pub not_power_state: Vec<PowerState>,
    pub deployment_target: Option<String>,
    pub not_deployment_target: Vec<String>,
}

/// Options of `op=allocate` that are not constraints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct AllocationOptions {
    pub agent_name: Option<String>,
    pub comment: Option<String>,
    pub bridge_all: bool,
    pub bridge_type: Option<String>,
    pub bridge_stp: bool,
    pub bridge_fd: Option<u32>,
    /// Find the machine but do not allocate it.
    pub dry_run: bool,
    pub verbose: bool,
}

/// A parsed `op=allocate` request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AllocationRequest {
    /// What the machine must satisfy.
    pub constraints: Constraints,
    /// Everything else.
    pub options: AllocationOptions,
}

fn split_list(v: &str) -> impl Iterator<Item = String> + '_ {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn parse_bool(key: &str, v: &str) -> Result<bool, ValidationError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ValidationError::new(key, v, "expected true or false")),
    }
}

fn parse_number(key: &str, v: &str) -> Result<f64, ValidationError> {
    match v.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
        _ => Err(ValidationError::new(
            key,
            v,
            "expected a non-negative number",
        )),
    }
}

/// Parses `label:size(tag,tag),label:size,...`; labels are optional (MAAS
/// numbers unlabelled entries).
fn parse_storage(v: &str) -> Result<Vec<StorageConstraint>, ValidationError> {
    let mut out = Vec::new();
    let mut rest = v.trim();
    let mut index = 0;
    while !rest.is_empty() {
        // An entry ends at the first comma outside parentheses.
        let mut depth = 0i32;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                c == ',' && depth == 0
            })
            .map_or(rest.len(), |(i, _)| i);
        let entry = rest[..end].trim();
        rest = rest.get(end + 1..).unwrap_or("").trim();
        if entry.is_empty() {
            continue;
        }
        let bad = |why: &str| ValidationError::new("storage", entry, why.to_owned());
        let (label, spec) = match entry.split_once(':') {
            Some((l, s)) => (l.trim().to_owned(), s.trim()),
            None => (index.to_string(), entry),
        };
        let (size, tags) = match spec.split_once('(') {
            Some((s, t)) => {
                let t = t.strip_suffix(')').ok_or_else(|| bad("unclosed '('"))?;
                (s.trim(), split_list(t).collect())
            }
            None => (spec, Vec::new()),
        };
        let gb = if size.is_empty() {
            0.0
        } else {
            parse_number("storage", size).map_err(|_| bad("size must be a number of GB"))?
        };
        out.push(StorageConstraint {
            label,
            min_bytes: (gb * 1e9) as u64,
            tags,
        });
        index += 1;
    }
    Ok(out)
}

const INTERFACE_KEYS: &[&str] = &[
    "fabric",
    "fabric_class",
    "ip",
    "mode",
    "name",
    "subnet",
    "space",
    "type",
    "vlan",
    "vid",
    "tag",
    "link_speed",
];
const DEVICE_KEYS: &[&str] = &[
    "vendor_id",
    "product_id",
    "vendor_name",
    "product_name",
    "commissioning_driver",
];

fn parse_conditions(
    field: &str,
    text: &str,
    keys: &[&str],
) -> Result<Vec<(String, String)>, ValidationError> {
    split_list(text)
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| ValidationError::new(field, &kv, "expected key=value"))?;
            let k = k.trim();
            if !keys.contains(&k) {
                return Err(ValidationError::new(
                    field,
                    &kv,
                    format!("unknown key '{k}' (known: {})", keys.join(", ")),
                ));
            }
            Ok((k.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Parses `label:key=value,key=value;label2:...`.
fn parse_interfaces(v: &str) -> Result<Vec<InterfaceConstraint>, ValidationError> {
    v.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            let (label, conds) = entry.split_once(':').ok_or_else(|| {
                ValidationError::new("interfaces", entry, "expected label:key=value,...")
            })?;
            Ok(InterfaceConstraint {
                label: label.trim().to_owned(),
                conditions: parse_conditions("interfaces", conds, INTERFACE_KEYS)?,
            })
        })
        .collect()
}

impl AllocationRequest {
    /// Reads the parameters of `op=allocate` (form fields, repeated keys
    /// allowed). Unknown parameters and malformed values are errors naming
    /// the parameter.
    pub fn from_params<I, K, V>(params: I) -> Result<Self, ValidationError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut req = AllocationRequest::default();
        let c = &mut req.constraints;
        let o = &mut req.options;
        for (k, v) in params {
            let (k, v) = (k.as_ref(), v.as_ref());
            match k {
                "op" => {}
                "name" => c.name = Some(v.trim().to_owned()),
                "system_id" => c.system_id = Some(SystemId::parse(v.trim())?),
                "arch" => c.arch.extend(split_list(v)),
                "not_arch" => c.not_arch.extend(split_list(v)),
                "cpu_count" => c.cpu_count = Some(parse_number(k, v)?.ceil() as u32),
                "cpu_speed" => c.cpu_speed = Some(parse_number(k, v)?.ceil() as u32),
                "mem" => c.mem = Some(parse_number(k, v)?.ceil() as u64),
                "tags" => c.tags.extend(split_list(v)),
                "not_tags" => c.not_tags.extend(split_list(v)),
                "zone" => c.zone = Some(v.trim().to_owned()),
                "not_in_zone" => c.not_in_zone.extend(split_list(v)),
                "pool" => c.pool = Some(v.trim().to_owned()),
                "not_in_pool" => c.not_in_pool.extend(split_list(v)),
                "subnets" => c.subnets.extend(split_list(v)),
                "not_subnets" => c.not_subnets.extend(split_list(v)),
                "vlans" => c.vlans.extend(split_list(v)),
                "not_vlans" => c.not_vlans.extend(split_list(v)),
                "fabrics" => c.fabrics.extend(split_list(v)),
                "not_fabrics" => c.not_fabrics.extend(split_list(v)),
                "fabric_classes" => c.fabric_classes.extend(split_list(v)),
                "not_fabric_classes" => c.not_fabric_classes.extend(split_list(v)),
                "link_speed" => c.link_speed = Some(parse_number(k, v)?.ceil() as u32),
                "storage" => c.storage.extend(parse_storage(v)?),
                "interfaces" => c.interfaces.extend(parse_interfaces(v)?),
                "devices" => {
                    for d in v.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                        c.devices.push(DeviceConstraint {
                            conditions: parse_conditions(k, d, DEVICE_KEYS)?,
                        });
                    }
                }
                "owner" => c.owner = Some(v.trim().to_owned()),
                "not_owner" => c.not_owner.extend(split_list(v)),
                "power_state" => c.power_state = Some(PowerState::parse(v)?),
                "not_power_state" => {
                    for s in split_list(v) {
                        let state = PowerState::parse(&s).map_err(|e| ValidationError {
                            field: k.to_owned(),
                            ..e
                        })?;
                        c.not_power_state.push(state);
                    }
                }
                "deployment_target" | "not_deployment_target" => {
                    let t = v.trim().to_ascii_lowercase();
                    if t != "default" && t != "ephemeral" {
                        return Err(ValidationError::new(k, v, "expected default or ephemeral"));
                    }
                    if k == "deployment_target" {
                        c.deployment_target = Some(t);
                    } else {
                        c.not_deployment_target.push(t);
                    }
                }
                "agent_name" => o.agent_name = Some(v.to_owned()),
                "comment" => o.comment = Some(v.to_owned()),
                "bridge_all" => o.bridge_all = parse_bool(k, v)?,
                "bridge_type" => o.bridge_type = Some(v.trim().to_owned()),
                "bridge_stp" => o.bridge_stp = parse_bool(k, v)?,
                "bridge_fd" => o.bridge_fd = Some(parse_number(k, v)? as u32),
                "dry_run" => o.dry_run = parse_bool(k, v)?,
                "verbose" => o.verbose = parse_bool(k, v)?,
                _ => return Err(ValidationError::new(k, v, "unknown constraint")),
            }
        }
        Ok(req)
    }
}

/// What the matcher needs to know about the network: each VLAN's fabric and
/// each subnet's VLAN and space, by id and by name.
#[derive(Debug, Clone, Default)]
pub struct NetworkIndex {
    vlans: HashMap<VlanId, VlanFacts>,
    subnets: HashMap<SubnetId, SubnetFacts>,
}

#[derive(Debug, Clone)]
struct VlanFacts {
    vid: u16,
    name: Option<String>,
    fabric: FabricId,
    fabric_name: String,
    fabric_class: Option<String>,
    space: Option<String>,
}

#[derive(Debug, Clone)]
struct SubnetFacts {
    name: String,
    cidr: ipnet::IpNet,
    vlan: VlanId,
    space: Option<String>,
}

impl NetworkIndex {
    /// Builds the index from the network model.
    pub fn new(fabrics: &[Fabric], vlans: &[Vlan], subnets: &[Subnet], spaces: &[Space]) -> Self {
        let fabric: HashMap<FabricId, &Fabric> = fabrics.iter().map(|f| (f.id, f)).collect();
        let space: HashMap<SpaceId, &str> =
            spaces.iter().map(|s| (s.id, s.name.as_str())).collect();
        let vlans: HashMap<VlanId, VlanFacts> = vlans
            .iter()
            .map(|v| {
                let f = fabric.get(&v.fabric);
                let facts = VlanFacts {
                    vid: v.vid,
                    name: v.name.clone(),
                    fabric: v.fabric,
                    fabric_name: f.map(|f| f.name.clone()).unwrap_or_default(),
                    fabric_class: f.and_then(|f| f.class_type.clone()),
                    space: v.space.and_then(|s| space.get(&s)).map(|s| (*s).to_owned()),
                };
                (v.id, facts)
            })
            .collect();
        let subnets = subnets
            .iter()
            .map(|s| {
                let facts = SubnetFacts {
                    name: s.name.clone(),
                    cidr: s.cidr,
                    vlan: s.vlan,
                    space: vlans.get(&s.vlan).and_then(|v| v.space.clone()),
                };
                (s.id, facts)
            })
            .collect();
        NetworkIndex { vlans, subnets }
    }

    fn subnet_matches(&self, id: SubnetId, spec: &str) -> bool {
        let Some(s) = self.subnets.get(&id) else {
            return false;
        };
        match spec.split_once(':') {
            Some(("id", v)) => v.parse::<i64>() == Ok(id.0),
            Some(("name", v)) => s.name == v,
            Some(("cidr", v)) => s.cidr.to_string() == v,
            Some(("space", v)) => s.space.as_deref() == Some(v),
            Some(("vlan", v)) => self.vlan_matches(s.vlan, v),
            Some(("ip", v)) => v.parse::<IpAddr>().is_ok_and(|ip| s.cidr.contains(&ip)),
            _ => spec.parse::<i64>() == Ok(id.0) || s.name == spec || s.cidr.to_string() == spec,
        }
    }

    fn vlan_matches(&self, id: VlanId, spec: &str) -> bool {
        let Some(v) = self.vlans.get(&id) else {
            return false;
        };
        match spec.split_once(':') {
            Some(("id", x)) => x.parse::<i64>() == Ok(id.0),
            Some(("vid", x)) => x.parse::<u16>() == Ok(v.vid),
            Some(("name", x)) => v.name.as_deref() == Some(x),
            Some(("fabric", x)) => self.fabric_matches(id, x),
            _ => spec.parse::<i64>() == Ok(id.0) || v.name.as_deref() == Some(spec),
        }
    }

    fn fabric_matches(&self, vlan: VlanId, spec: &str) -> bool {
        let Some(v) = self.vlans.get(&vlan) else {
            return false;
        };
        match spec.split_once(':') {
            Some(("id", x)) => x.parse::<i64>() == Ok(v.fabric.0),
            Some(("name", x)) => v.fabric_name == x,
            _ => v.fabric_name == spec || spec.parse::<i64>() == Ok(v.fabric.0),
        }
    }

    fn fabric_class(&self, vlan: VlanId) -> Option<&str> {
        self.vlans
            .get(&vlan)
            .and_then(|v| v.fabric_class.as_deref())
    }
}

/// The VLANs an interface is on: its own, and those of its subnets' links.
fn interface_vlans(i: &Interface, net: &NetworkIndex) -> Vec<VlanId> {
    let mut out: Vec<VlanId> = i.vlan.into_iter().collect();
    for l in &i.links {
        if let Some(v) = l.subnet.and_then(|s| net.subnets.get(&s)).map(|s| s.vlan)
            && !out.contains(&v)
        {
            out.push(v);
        }
    }
    out
}

fn interface_satisfies(i: &Interface, c: &InterfaceConstraint, net: &NetworkIndex) -> bool {
    let vlans = interface_vlans(i, net);
    let subnets: Vec<SubnetId> = i.links.iter().filter_map(|l| l.subnet).collect();
    c.conditions.iter().all(|(k, v)| match k.as_str() {
        "name" => i.name == *v,
        "type" => i.kind.as_str() == v,
        "tag" => i.tags.iter().any(|t| t == v),
        "link_speed" => v.parse::<u32>().is_ok_and(|s| i.link_speed_mbps >= s),
        "mode" => i.links.iter().any(|l| l.mode.as_str() == v),
        "ip" => i
            .links
            .iter()
            .any(|l| l.ip.map(|ip| ip.to_string()).as_deref() == Some(v.as_str())),
        "subnet" => subnets.iter().any(|s| net.subnet_matches(*s, v)),
        "space" => {
            subnets.iter().any(|s| {
                net.subnets
                    .get(s)
                    .is_some_and(|f| f.space.as_deref() == Some(v.as_str()))
            }) || vlans.iter().any(|x| {
                net.vlans
                    .get(x)
                    .is_some_and(|f| f.space.as_deref() == Some(v.as_str()))
            })
        }
        "vlan" => vlans.iter().any(|x| net.vlan_matches(*x, v)),
        "vid" => vlans.iter().any(|x| {
            net.vlans
                .get(x)
                .is_some_and(|f| v.parse::<u16>() == Ok(f.vid))
        }),
        "fabric" => vlans.iter().any(|x| net.fabric_matches(*x, v)),
        "fabric_class" => vlans
            .iter()
            .any(|x| net.fabric_class(*x) == Some(v.as_str())),
        _ => false,
    })
}

/// Whether each requirement can be given its own distinct item (a small
/// bipartite matching by backtracking; machines have few disks and NICs).
fn assign_distinct<T>(items: &[T], needs: usize, fits: &dyn Fn(usize, &T) -> bool) -> bool {
    fn go<T>(
        need: usize,
        needs: usize,
        items: &[T],
        used: &mut Vec<bool>,
        fits: &dyn Fn(usize, &T) -> bool,
    ) -> bool {
        if need == needs {
            return true;
        }
        for (j, item) in items.iter().enumerate() {
            if !used[j] && fits(need, item) {
                used[j] = true;
                if go(need + 1, needs, items, used, fits) {
                    return true;
                }
                used[j] = false;
            }
        }
        false
    }
    let mut used = vec![false; items.len()];
    go(0, needs, items, &mut used, fits)
}

impl Constraints {
    /// The names of the constraints `m` misses (empty = it matches). Status
    /// is not checked here: [`select`] only offers Ready machines.
    pub fn failures(&self, m: &Machine, net: &NetworkIndex) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |ok: bool, name: &'static str| {
            if !ok {
                out.push(name);
            }
        };
        if let Some(n) = &self.name {
            check(m.hostname.as_str() == n || m.fqdn() == *n, "name");
        }
        if let Some(id) = &self.system_id {
            check(&m.system_id == id, "system_id");
        }
        if !self.arch.is_empty() {
            check(self.arch.iter().any(|a| m.architecture.matches(a)), "arch");
        }
        if !self.not_arch.is_empty() {
            check(
                !self.not_arch.iter().any(|a| m.architecture.matches(a)),
                "not_arch",
            );
        }
        if let Some(n) = self.cpu_count {
            check(m.hardware.cpu.count >= n, "cpu_count");
        }
        if let Some(n) = self.cpu_speed {
            check(m.hardware.cpu.speed_mhz >= n, "cpu_speed");
        }
        if let Some(n) = self.mem {
            check(m.hardware.memory_mib >= n, "mem");
        }
        if !self.tags.is_empty() {
            check(self.tags.iter().all(|t| m.tags.contains(t)), "tags");
        }
        if !self.not_tags.is_empty() {
            check(
                !self.not_tags.iter().any(|t| m.tags.contains(t)),
                "not_tags",
            );
        }
        if let Some(z) = &self.zone {
            check(&m.zone == z, "zone");
        }
        if !self.not_in_zone.is_empty() {
            check(!self.not_in_zone.contains(&m.zone), "not_in_zone");
        }
        if let Some(p) = &self.pool {
            check(&m.pool == p, "pool");
        }
        if !self.not_in_pool.is_empty() {
            check(!self.not_in_pool.contains(&m.pool), "not_in_pool");
        }
        let vlans: Vec<VlanId> = m
            .interfaces
            .iter()
            .flat_map(|i| interface_vlans(i, net))
            .collect();
        let subnets: Vec<SubnetId> = m
            .interfaces
            .iter()
            .flat_map(|i| i.links.iter().filter_map(|l| l.subnet))
            .collect();
        let on_subnet = |spec: &String| subnets.iter().any(|s| net.subnet_matches(*s, spec));
        let on_vlan = |spec: &String| vlans.iter().any(|v| net.vlan_matches(*v, spec));
        let on_fabric = |spec: &String| vlans.iter().any(|v| net.fabric_matches(*v, spec));
        let on_class = |spec: &String| {
            vlans
                .iter()
                .any(|v| net.fabric_class(*v) == Some(spec.as_str()))
        };
        if !self.subnets.is_empty() {
            check(self.subnets.iter().all(on_subnet), "subnets");
        }
        if !self.not_subnets.is_empty() {
            check(!self.not_subnets.iter().any(on_subnet), "not_subnets");
        }
        if !self.vlans.is_empty() {
            check(self.vlans.iter().all(on_vlan), "vlans");
        }
        if !self.not_vlans.is_empty() {
            check(!self.not_vlans.iter().any(on_vlan), "not_vlans");
        }
        if !self.fabrics.is_empty() {
            check(self.fabrics.iter().all(on_fabric), "fabrics");
        }
        if !self.not_fabrics.is_empty() {
            check(!self.not_fabrics.iter().any(on_fabric), "not_fabrics");
        }
        if !self.fabric_classes.is_empty() {
            check(self.fabric_classes.iter().all(on_class), "fabric_classes");
        }
        if !self.not_fabric_classes.is_empty() {
            check(
                !self.not_fabric_classes.iter().any(on_class),
                "not_fabric_classes",
            );
        }
        if let Some(s) = self.link_speed {
            check(
                m.interfaces.iter().any(|i| i.link_speed_mbps >= s),
                "link_speed",
            );
        }
        if !self.storage.is_empty() {
            let ok = assign_distinct(&m.block_devices, self.storage.len(), &|n, d| {
                let c = &self.storage[n];
                d.size_bytes >= c.min_bytes && c.tags.iter().all(|t| d.tags.contains(t))
            });
            check(ok, "storage");
        }
        if !self.interfaces.is_empty() {
            let ok = assign_distinct(&m.interfaces, self.interfaces.len(), &|n, i| {
                interface_satisfies(i, &self.interfaces[n], net)
            });
            check(ok, "interfaces");
        }
        if !self.devices.is_empty() {
            let devices: Vec<_> = m
                .hardware
                .gpus
                .iter()
                .chain(&m.hardware.pci_devices)
                .collect();
            let ok = assign_distinct(&devices, self.devices.len(), &|n, d| {
                self.devices[n].conditions.iter().all(|(k, v)| {
                    let have = match k.as_str() {
                        "vendor_id" => &d.vendor_id,
                        "product_id" => &d.product_id,
                        "vendor_name" => &d.vendor_name,
                        "product_name" => &d.product_name,
                        _ => &d.commissioning_driver,
                    };
                    have.eq_ignore_ascii_case(v)
                })
            });
            check(ok, "devices");
        }
        if let Some(o) = &self.owner {
            check(m.owner.as_ref() == Some(o), "owner");
        }
        if !self.not_owner.is_empty() {
            check(
                m.owner.as_ref().is_none_or(|o| !self.not_owner.contains(o)),
                "not_owner",
            );
        }
        if let Some(p) = self.power_state {
            check(m.power_state == p, "power_state");
        }
        if !self.not_power_state.is_empty() {
            check(
                !self.not_power_state.contains(&m.power_state),
                "not_power_state",
            );
        }
        let target = if m.ephemeral_deploy {
            "ephemeral"
        } else {
            "default"
        };
        if let Some(t) = &self.deployment_target {
            check(t == target, "deployment_target");
        }
        if !self.not_deployment_target.is_empty() {
            check(
                !self.not_deployment_target.iter().any(|t| t == target),
                "not_deployment_target",
            );
        }
        out
    }

    /// Whether `m` satisfies every constraint.
    pub fn matches(&self, m: &Machine, net: &NetworkIndex) -> bool {
        self.failures(m, net).is_empty()
    }

    /// The constraints as `key=value` text, for messages.
    pub fn describe(&self) -> String {
        let v = serde_json::to_value(self).unwrap_or_default();
        let mut parts = Vec::new();
        if let serde_json::Value::Object(map) = v {
            for (k, v) in map {
                let shown = match &v {
                    serde_json::Value::Null => continue,
                    serde_json::Value::Array(a) if a.is_empty() => continue,
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(a) if a.iter().all(serde_json::Value::is_string) => a
                        .iter()
                        .filter_map(serde_json::Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                parts.push(format!("{k}={shown}"));
            }
        }
        if parts.is_empty() {
            "(none)".to_owned()
        } else {
            parts.join(" ")
        }
    }
}

/// Why no machine matched: how many allocatable machines were considered,
/// and how many each constraint excluded (a machine missing two constraints
/// counts under both).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoMatchExplanation {
    /// The constraints, as `key=value` text.
    pub constraints: String,
    /// Ready machines considered.
    pub considered: usize,
    /// Constraint name -> machines it excluded.
    pub excluded_by: BTreeMap<String, usize>,
}

impl fmt::Display for NoMatchExplanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no machine matches the constraints {}: {} ready machine(s) considered",
            self.constraints, self.considered
        )?;
        if !self.excluded_by.is_empty() {
            let parts: Vec<String> = self
                .excluded_by
                .iter()
                .map(|(k, n)| format!("{k} excluded {n}"))
                .collect();
            write!(f, "; {}", parts.join(", "))?;
        }
        Ok(())
    }
}

impl NoMatchExplanation {
    /// Builds the explanation over the allocatable machines.
    pub fn build<'a>(
        constraints: &Constraints,
        candidates: impl IntoIterator<Item = &'a Machine>,
        net: &NetworkIndex,
    ) -> Self {
        let mut e = NoMatchExplanation {
            constraints: constraints.describe(),
            ..Default::default()
        };
        for m in candidates {
            e.considered += 1;
            for name in constraints.failures(m, net) {
                *e.excluded_by.entry(name.to_owned()).or_default() += 1;
            }
        }
        e
    }
}

/// Whether a machine may be allocated at all (Ready, unowned, unlocked).
pub fn allocatable(m: &Machine) -> bool {
    m.status == NodeStatus::Ready && m.owner.is_none() && !m.locked
}

/// Orders matches the way MAAS does: cheapest first, then by system id so
/// the order is stable.
pub fn cost_order(a: &Machine, b: &Machine) -> std::cmp::Ordering {
    a.allocation_cost()
        .total_cmp(&b.allocation_cost())
        .then_with(|| a.system_id.cmp(&b.system_id))
}

/// The cheapest allocatable machine among `machines` that matches, or why
/// none does.
pub fn select<'a>(
    constraints: &Constraints,
    machines: &'a [Machine],
    net: &NetworkIndex,
) -> Result<&'a Machine, NoMatchExplanation> {
    machines
        .iter()
        .filter(|m| allocatable(m) && constraints.matches(m, net))
        .min_by(|a, b| cost_order(a, b))
        .ok_or_else(|| {
            NoMatchExplanation::build(constraints, machines.iter().filter(|m| allocatable(m)), net)
        })
}
