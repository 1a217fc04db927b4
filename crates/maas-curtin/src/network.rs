//! Network config for the deployed machine: netplan (version 2) or
//! cloud-init's version 1, from the machine's interfaces and links.
//!
//! Interfaces come from maas-core; their type-specific parameters
//! (`bond_mode`, `bond_miimon`, `bridge_stp`, `mtu`...) are read from
//! `Interface::params` with MAAS's API names into [`BondParams`] and
//! [`BridgeParams`], so a bad value is refused with the key and the
//! interface named. The network around them (subnets, VLANs, ranges,
//! addresses already taken, static routes, DNS) is a [`NetworkInputs`].
//!
//! `auto` links get the lowest free address of their subnet here;
//! [`ResolvedNetwork::allocated`] lists them so the caller can record them.
//! Alias interfaces add their addresses to their parent (netplan and
//! cloud-init both model an alias as a second address).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use maas_core::SubnetId;
use maas_core::machine::{Interface, InterfaceKind, LinkMode, Machine};
use maas_core::network::{
    IpRange, IpamError, MAX_MTU, MIN_MTU, Subnet, Vlan, check_static_address, next_free_address,
};
use serde::{Deserialize, Serialize};

use crate::error::CurtinError;

/// A static route MAAS hands to machines with a link on `source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticRoute {
    /// Machines with an address on this subnet get the route.
    pub source: SubnetId,
    /// Where the route leads.
    pub destination: IpNet,
    /// The next hop (on the source subnet).
    pub gateway: IpAddr,
    /// Route metric.
    pub metric: u32,
}

/// The network around a machine, as the region knows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkInputs {
    /// Subnets the machine's links may name.
    pub subnets: Vec<Subnet>,
    /// VLANs of those subnets and of the machine's interfaces.
    pub vlans: Vec<Vlan>,
    /// IP ranges of those subnets (dynamic ranges are never picked for
    /// `auto` links).
    pub ranges: Vec<IpRange>,
    /// Addresses already taken on those subnets by anything else.
    pub assigned: Vec<IpAddr>,
    /// Static routes.
    pub routes: Vec<StaticRoute>,
    /// MAAS's own DNS servers (the rack or region), given to links on
    /// subnets that allow them (`allow_dns`).
    pub maas_dns: Vec<IpAddr>,
    /// DNS search domains (the machine's domain first).
    pub search_domains: Vec<String>,
    /// The subnet whose gateway is the default route; default: the first
    /// subnet with a gateway that the boot interface, then any interface,
    /// has a static or auto address on (one per address family).
    pub default_gateway: Option<SubnetId>,
}

/// Which network config format to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum NetworkVersion {
    /// cloud-init's version 1.
    V1,
    /// netplan (version 2), what Ubuntu since 18.04 gets.
    #[default]
    V2,
}

/// A bond mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum BondMode {
    #[serde(rename = "balance-rr")]
    BalanceRr,
    #[serde(rename = "active-backup")]
    ActiveBackup,
    #[serde(rename = "balance-xor")]
    BalanceXor,
    #[serde(rename = "broadcast")]
    Broadcast,
    #[serde(rename = "802.3ad")]
    Ieee8023ad,
    #[serde(rename = "balance-tlb")]
    BalanceTlb,
    #[serde(rename = "balance-alb")]
    BalanceAlb,
}

impl BondMode {
    /// Every mode, in MAAS's order.
    pub const ALL: [BondMode; 7] = [
        BondMode::BalanceRr,
        BondMode::ActiveBackup,
        BondMode::BalanceXor,
        BondMode::Broadcast,
        BondMode::Ieee8023ad,
        BondMode::BalanceTlb,
        BondMode::BalanceAlb,
    ];

    /// The name MAAS, the kernel and netplan use.
    pub const fn as_str(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Ieee8023ad => "802.3ad",
            BondMode::BalanceTlb => "balance-tlb",
            BondMode::BalanceAlb => "balance-alb",
        }
    }

    /// Whether the transmit hash policy applies.
    pub const fn uses_hash_policy(self) -> bool {
        matches!(
            self,
            BondMode::BalanceXor | BondMode::Ieee8023ad | BondMode::BalanceTlb
        )
    }
}

/// LACP rate (802.3ad).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum LacpRate {
    Slow,
    Fast,
}

impl LacpRate {
    const fn as_str(self) -> &'static str {
        match self {
            LacpRate::Slow => "slow",
            LacpRate::Fast => "fast",
        }
    }
}

/// Transmit hash policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum XmitHashPolicy {
    #[serde(rename = "layer2")]
    Layer2,
    #[serde(rename = "layer2+3")]
    Layer2Plus3,
    #[serde(rename = "layer3+4")]
    Layer3Plus4,
    #[serde(rename = "encap2+3")]
    Encap2Plus3,
    #[serde(rename = "encap3+4")]
    Encap3Plus4,
}

impl XmitHashPolicy {
    const ALL: [XmitHashPolicy; 5] = [
        XmitHashPolicy::Layer2,
        XmitHashPolicy::Layer2Plus3,
        XmitHashPolicy::Layer3Plus4,
        XmitHashPolicy::Encap2Plus3,
        XmitHashPolicy::Encap3Plus4,
    ];

    const fn as_str(self) -> &'static str {
        match self {
            XmitHashPolicy::Layer2 => "layer2",
            XmitHashPolicy::Layer2Plus3 => "layer2+3",
            XmitHashPolicy::Layer3Plus4 => "layer3+4",
            XmitHashPolicy::Encap2Plus3 => "encap2+3",
            XmitHashPolicy::Encap3Plus4 => "encap3+4",
        }
    }
}

/// A bond's parameters, with MAAS's API defaults for the ones not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondParams {
    /// `bond_mode` (default balance-rr).
    pub mode: BondMode,
    /// `bond_miimon`, ms (default 100).
    pub miimon: u32,
    /// `bond_downdelay`, ms (default 0).
    pub downdelay: u32,
    /// `bond_updelay`, ms (default 0).
    pub updelay: u32,
    /// `bond_lacp_rate` (default slow; rendered for 802.3ad only).
    pub lacp_rate: LacpRate,
    /// `bond_xmit_hash_policy` (default layer2; rendered for balance-xor,
    /// 802.3ad and balance-tlb only).
    pub xmit_hash_policy: XmitHashPolicy,
    /// `bond_num_grat_arp`, 0 to 255 (default 1; rendered for
    /// active-backup only).
    pub num_grat_arp: u8,
}

impl Default for BondParams {
    fn default() -> Self {
        BondParams {
            mode: BondMode::BalanceRr,
            miimon: 100,
            downdelay: 0,
            updelay: 0,
            lacp_rate: LacpRate::Slow,
            xmit_hash_policy: XmitHashPolicy::Layer2,
            num_grat_arp: 1,
        }
    }
}

fn bad_param(iface: &Interface, key: &str, value: &str, reason: &'static str) -> CurtinError {
    CurtinError::InvalidInterfaceParam {
        interface: iface.name.clone(),
        key: key.to_owned(),
        value: crate::error::shown(value),
        reason,
    }
}

fn param_u32(iface: &Interface, key: &str, default: u32, max: u32) -> Result<u32, CurtinError> {
    match iface.params.get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| bad_param(iface, key, v, "expected a whole number in range")),
    }
}

impl BondParams {
    /// Reads `bond_*` parameters of `iface`.
    pub fn from_interface(iface: &Interface) -> Result<Self, CurtinError> {
        let d = BondParams::default();
        let get = |key: &str| iface.params.get(key).map(|v| v.trim().to_ascii_lowercase());
        let mode = match get("bond_mode") {
            None => d.mode,
            Some(v) => BondMode::ALL
                .into_iter()
                .find(|m| m.as_str() == v)
                .ok_or_else(|| {
                    bad_param(
                        iface,
                        "bond_mode",
                        &v,
                        "expected balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb or balance-alb",
                    )
                })?,
        };
        let lacp_rate = match get("bond_lacp_rate").as_deref() {
            None => d.lacp_rate,
            Some("slow") => LacpRate::Slow,
            Some("fast") => LacpRate::Fast,
            Some(v) => {
                return Err(bad_param(
                    iface,
                    "bond_lacp_rate",
                    v,
                    "expected slow or fast",
                ));
            }
        };
        let xmit_hash_policy = match get("bond_xmit_hash_policy") {
            None => d.xmit_hash_policy,
            Some(v) => XmitHashPolicy::ALL
                .into_iter()
                .find(|p| p.as_str() == v)
                .ok_or_else(|| {
                    bad_param(
                        iface,
                        "bond_xmit_hash_policy",
                        &v,
                        "expected layer2, layer2+3, layer3+4, encap2+3 or encap3+4",
                    )
                })?,
        };
        let num_grat_arp = param_u32(iface, "bond_num_grat_arp", 1, 255)?;
        Ok(BondParams {
            mode,
            miimon: param_u32(iface, "bond_miimon", d.miimon, i32::MAX as u32)?,
            downdelay: param_u32(iface, "bond_downdelay", d.downdelay, i32::MAX as u32)?,
            updelay: param_u32(iface, "bond_updelay", d.updelay, i32::MAX as u32)?,
            lacp_rate,
            xmit_hash_policy,
            num_grat_arp: u8::try_from(num_grat_arp).unwrap_or(u8::MAX),
        })
    }
}

/// A bridge's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeKind {
    /// A Linux bridge.
    #[default]
    Standard,
    /// An Open vSwitch bridge (netplan only).
    Ovs,
}

/// A bridge's parameters, with MAAS's API defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeParams {
    /// `bridge_type` (default standard).
    pub kind: BridgeKind,
    /// `bridge_stp` (default false).
    pub stp: bool,
    /// `bridge_fd`, forward delay in seconds (default 15).
    pub forward_delay: u32,
}

impl BridgeParams {
    /// Reads `bridge_*` parameters of `iface`.
    pub fn from_interface(iface: &Interface) -> Result<Self, CurtinError> {
        let kind = match iface
            .params
            .get("bridge_type")
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => BridgeKind::Standard,
            Some(v) if v == "standard" => BridgeKind::Standard,
            Some(v) if v == "ovs" => BridgeKind::Ovs,
            Some(v) => {
                return Err(bad_param(
                    iface,
                    "bridge_type",
                    &v,
                    "expected standard or ovs",
                ));
            }
        };
        let stp = match iface
            .params
            .get("bridge_stp")
            .map(|v| v.trim().to_ascii_lowercase())
        {
            None => false,
            Some(v) => match v.as_str() {
                "true" | "1" | "on" | "yes" => true,
                "false" | "0" | "off" | "no" => false,
                _ => return Err(bad_param(iface, "bridge_stp", &v, "expected true or false")),
            },
        };
        Ok(BridgeParams {
            kind,
            stp,
            forward_delay: param_u32(iface, "bridge_fd", 15, 255)?,
        })
    }
}

/// An address an interface ends up with.
#[derive(Debug, Clone, PartialEq)]
enum Addr {
    Dhcp { v6: bool, subnet: Option<SubnetId> },
    Static { ip: IpAddr, subnet: Subnet },
}

/// An interface with its links resolved.
#[derive(Debug, Clone, PartialEq)]
struct Resolved {
    iface: Interface,
    addrs: Vec<Addr>,
    mtu: Option<u32>,
    vid: Option<u16>,
    bond: Option<BondParams>,
    bridge: Option<BridgeParams>,
    mac: Option<String>,
}

/// An address picked for an `auto` link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoAddress {
    /// The interface.
    pub interface: String,
    /// The subnet.
    pub subnet: SubnetId,
    /// The address picked.
    pub ip: IpAddr,
}

/// The machine's network, checked and with every address known.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedNetwork {
    interfaces: Vec<Resolved>,
    gateways: Vec<(String, IpAddr)>,
    routes: Vec<StaticRoute>,
    maas_dns: Vec<IpAddr>,
    search: Vec<String>,
    /// Addresses picked for `auto` links, for the caller to record.
    pub allocated: Vec<AutoAddress>,
}

impl ResolvedNetwork {
    /// Checks the machine's interfaces and links against `inputs` and
    /// picks addresses for `auto` links.
    ///
    /// Errors: a bond without members or with members that are not enabled
    /// physical interfaces, a VLAN interface without a tagged VLAN, a bad
    /// parameter, a link to an unknown subnet, a static address outside its
    /// subnet (or its network, broadcast or gateway address, or inside a
    /// dynamic range), a subnet with no free address for an `auto` link.
    pub fn resolve(machine: &Machine, inputs: &NetworkInputs) -> Result<Self, CurtinError> {
        let by_name: BTreeMap<&str, &Interface> = machine
            .interfaces
            .iter()
            .map(|i| (i.name.as_str(), i))
            .collect();
        let mut assigned = inputs.assigned.clone();
        let mut allocated = Vec::new();
        let mut resolved = Vec::new();
        for iface in order_parents_first(machine) {
            if !iface.enabled {
                continue;
            }
            for p in &iface.parents {
                match by_name.get(p.as_str()) {
                    None => {
                        return Err(CurtinError::BadParent {
                            interface: iface.name.clone(),
                            parent: p.clone(),
                            reason: "no interface of that name",
                        });
                    }
                    Some(parent) if !parent.enabled => {
                        return Err(CurtinError::BadParent {
                            interface: iface.name.clone(),
                            parent: p.clone(),
                            reason: "the parent is disabled",
                        });
                    }
                    Some(_) => {}
                }
            }
            let mut r = Resolved {
                iface: iface.clone(),
                addrs: Vec::new(),
                mtu: None,
                vid: None,
                bond: None,
                bridge: None,
                mac: iface.mac.map(|m| m.to_string()),
            };
            let vlan = iface
                .vlan
                .and_then(|id| inputs.vlans.iter().find(|v| v.id == id));
            match iface.kind {
                InterfaceKind::Bond => {
                    if iface.parents.is_empty() {
                        return Err(CurtinError::BondWithoutMembers {
                            bond: iface.name.clone(),
                        });
                    }
                    for p in &iface.parents {
                        if by_name[p.as_str()].kind != InterfaceKind::Physical {
                            return Err(CurtinError::BadParent {
                                interface: iface.name.clone(),
                                parent: p.clone(),
                                reason: "bond members must be physical interfaces",
                            });
                        }
                    }
                    r.bond = Some(BondParams::from_interface(iface)?);
                }
                InterfaceKind::Bridge => {
                    r.bridge = Some(BridgeParams::from_interface(iface)?);
                }
                InterfaceKind::Vlan => {
                    if iface.parents.len() != 1 {
                        return Err(CurtinError::BadVlan {
                            interface: iface.name.clone(),
                            reason: "a VLAN interface needs exactly one parent",
                        });
                    }
                    let vlan = vlan.ok_or_else(|| CurtinError::BadVlan {
                        interface: iface.name.clone(),
                        reason: "a VLAN interface needs a known VLAN",
                    })?;
                    if vlan.is_untagged() {
                        return Err(CurtinError::BadVlan {
                            interface: iface.name.clone(),
                            reason: "a VLAN interface needs a tagged VLAN (vid 1 to 4094), not the untagged one",
                        });
                    }
                    r.vid = Some(vlan.vid);
                }
                InterfaceKind::Alias => {
                    if iface.parents.len() != 1 {
                        return Err(CurtinError::BadParent {
                            interface: iface.name.clone(),
                            parent: iface.parents.join(","),
                            reason: "an alias needs exactly one parent",
                        });
                    }
                }
                InterfaceKind::Physical => {}
            }
            if r.mac.is_none() && matches!(iface.kind, InterfaceKind::Bond | InterfaceKind::Bridge)
            {
                // MAAS gives a bond or bridge its first parent's MAC.
                // Parents are resolved first, so a bridge over a bond gets
                // the bond's (first member's) MAC.
                r.mac = iface.parents.first().and_then(|p| {
                    resolved
                        .iter()
                        .find(|x: &&Resolved| x.iface.name == *p)
                        .and_then(|x| x.mac.clone())
                });
            }
            r.mtu = match iface.params.get("mtu") {
                Some(v) => Some(
                    v.trim()
                        .parse::<u32>()
                        .ok()
                        .filter(|m| (MIN_MTU..=MAX_MTU).contains(m))
                        .ok_or_else(|| {
                            bad_param(iface, "mtu", v, "expected an MTU from 552 to 65535")
                        })?,
                ),
                None => vlan.map(|v| v.mtu),
            };
            if matches!(iface.kind, InterfaceKind::Vlan | InterfaceKind::Alias)
                && let Some(mtu) = r.mtu
            {
                for p in &iface.parents {
                    let parent_mtu = resolved
                        .iter()
                        .find(|x: &&Resolved| x.iface.name == *p)
                        .and_then(|x| x.mtu);
                    if let Some(parent_mtu) = parent_mtu
                        && mtu > parent_mtu
                    {
                        return Err(CurtinError::MtuAboveParent {
                            interface: iface.name.clone(),
                            mtu,
                            parent: p.clone(),
                            parent_mtu,
                        });
                    }
                }
            }
            for link in &iface.links {
                let subnet = match link.subnet {
                    None => None,
                    Some(id) => {
                        Some(inputs.subnets.iter().find(|s| s.id == id).ok_or_else(|| {
                            CurtinError::UnknownSubnet {
                                interface: iface.name.clone(),
                                subnet: id,
                            }
                        })?)
                    }
                };
                let incomplete = |what| CurtinError::IncompleteLink {
                    interface: iface.name.clone(),
                    mode: link.mode.as_str(),
                    what,
                };
                match link.mode {
                    LinkMode::LinkUp => {}
                    LinkMode::Dhcp => r.addrs.push(Addr::Dhcp {
                        v6: subnet.is_some_and(|s| matches!(s.cidr, IpNet::V6(_))),
                        subnet: subnet.map(|s| s.id),
                    }),
                    LinkMode::Static => {
                        let subnet = subnet.ok_or_else(|| incomplete("a subnet"))?;
                        let ip = link.ip.ok_or_else(|| incomplete("an address"))?;
                        check_static_address(subnet, &inputs.ranges, &[], ip).map_err(
                            |e| match e {
                                IpamError::NotInSubnet { .. }
                                | IpamError::FamilyMismatch { .. } => {
                                    CurtinError::StaticAddressOutsideSubnet {
                                        interface: iface.name.clone(),
                                        ip,
                                        subnet: subnet.cidr,
                                    }
                                }
                                source => CurtinError::UnusableStaticAddress {
                                    interface: iface.name.clone(),
                                    ip,
                                    source,
                                },
                            },
                        )?;
                        assigned.push(ip);
                        r.addrs.push(Addr::Static {
                            ip,
                            subnet: subnet.clone(),
                        });
                    }
                    LinkMode::Auto => {
                        let subnet = subnet.ok_or_else(|| incomplete("a subnet"))?;
                        let ip = match link.ip {
                            Some(ip) => ip,
                            None => {
                                let ip = next_free_address(subnet, &inputs.ranges, &assigned)
                                    .map_err(|_| CurtinError::NoFreeAddress {
                                        interface: iface.name.clone(),
                                        subnet: subnet.cidr,
                                    })?;
                                allocated.push(AutoAddress {
                                    interface: iface.name.clone(),
                                    subnet: subnet.id,
                                    ip,
                                });
                                ip
                            }
                        };
                        if !subnet.cidr.contains(&ip) {
                            return Err(CurtinError::StaticAddressOutsideSubnet {
                                interface: iface.name.clone(),
                                ip,
                                subnet: subnet.cidr,
                            });
                        }
                        assigned.push(ip);
                        r.addrs.push(Addr::Static {
                            ip,
                            subnet: subnet.clone(),
                        });
                    }
                }
            }
            resolved.push(r);
        }
        // Aliases give their addresses to their parent.
        let aliases: Vec<Resolved> = resolved
            .iter()
            .filter(|r| r.iface.kind == InterfaceKind::Alias)
            .cloned()
            .collect();
        resolved.retain(|r| r.iface.kind != InterfaceKind::Alias);
        for alias in aliases {
            if let Some(parent) = resolved
                .iter_mut()
                .find(|r| r.iface.name == alias.iface.parents[0])
            {
                parent.addrs.extend(alias.addrs);
            }
        }
        let gateways = pick_gateways(machine, &resolved, inputs.default_gateway);
        Ok(ResolvedNetwork {
            interfaces: resolved,
            gateways,
            routes: inputs.routes.clone(),
            maas_dns: inputs.maas_dns.clone(),
            search: inputs.search_domains.clone(),
            allocated,
        })
    }

    /// The config in `version`, as the value of curtin's `network` key.
    pub fn render(&self, version: NetworkVersion) -> Result<NetworkConfig, CurtinError> {
        match version {
            NetworkVersion::V2 => Ok(NetworkConfig::V2(self.netplan())),
            NetworkVersion::V1 => self.v1().map(NetworkConfig::V1),
        }
    }

    fn dns_for(&self, r: &Resolved) -> (Vec<String>, Vec<String>) {
        let mut seen = BTreeSet::new();
        let mut servers = Vec::new();
        for a in &r.addrs {
            if let Addr::Static { subnet, .. } = a {
                let maas = if subnet.allow_dns {
                    &self.maas_dns[..]
                } else {
                    &[]
                };
                for ip in subnet.dns_servers.iter().chain(maas) {
                    if seen.insert(*ip) {
                        servers.push(ip.to_string());
                    }
                }
            }
        }
        let search = if servers.is_empty() {
            Vec::new()
        } else {
            self.search.clone()
        };
        (servers, search)
    }

    /// Static routes whose source subnet this interface has an address on.
    fn routes_for(&self, r: &Resolved) -> Vec<&StaticRoute> {
        let subnets: BTreeSet<SubnetId> = r
            .addrs
            .iter()
            .filter_map(|a| match a {
                Addr::Static { subnet, .. } => Some(subnet.id),
                Addr::Dhcp { subnet, .. } => *subnet,
            })
            .collect();
        self.routes
            .iter()
            .filter(|route| subnets.contains(&route.source))
            .collect()
    }

    fn netplan(&self) -> Netplan {
        let mut np = Netplan {
            version: 2,
            ..Netplan::default()
        };
        for r in &self.interfaces {
            let mut dev = NetplanDevice {
                mtu: r.mtu,
                ..NetplanDevice::default()
            };
            for a in &r.addrs {
                match a {
                    Addr::Dhcp { v6: false, .. } => dev.dhcp4 = Some(true),
                    Addr::Dhcp { v6: true, .. } => dev.dhcp6 = Some(true),
                    Addr::Static { ip, subnet } => {
                        dev.addresses
                            .push(format!("{ip}/{}", subnet.cidr.prefix_len()));
                    }
                }
            }
            for (name, gw) in &self.gateways {
                if *name == r.iface.name {
                    dev.routes.push(NetplanRoute {
                        to: if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" }.to_owned(),
                        via: gw.to_string(),
                        metric: None,
                    });
                }
            }
            for route in self.routes_for(r) {
                dev.routes.push(NetplanRoute {
                    to: route.destination.to_string(),
                    via: route.gateway.to_string(),
                    metric: Some(route.metric),
                });
            }
            let (addresses, search) = self.dns_for(r);
            if !addresses.is_empty() {
                dev.nameservers = Some(NetplanNameservers { addresses, search });
            }
            let name = r.iface.name.clone();
            match r.iface.kind {
                InterfaceKind::Physical => {
                    dev.matches = r.mac.clone().map(|macaddress| NetplanMatch { macaddress });
                    dev.set_name = Some(name.clone());
                    np.ethernets.insert(name, dev);
                }
                InterfaceKind::Bond => {
                    dev.macaddress = r.mac.clone();
                    dev.interfaces = r.iface.parents.clone();
                    if let Some(b) = r.bond {
                        dev.parameters = Some(NetplanParameters::Bond(NetplanBondParameters {
                            mode: b.mode.as_str().to_owned(),
                            mii_monitor_interval: Some(b.miimon.to_string()),
                            down_delay: Some(b.downdelay),
                            up_delay: Some(b.updelay),
                            lacp_rate: (b.mode == BondMode::Ieee8023ad)
                                .then(|| b.lacp_rate.as_str().to_owned()),
                            transmit_hash_policy: b
                                .mode
                                .uses_hash_policy()
                                .then(|| b.xmit_hash_policy.as_str().to_owned()),
                            gratuitous_arp: (b.mode == BondMode::ActiveBackup)
                                .then_some(b.num_grat_arp),
                        }));
                    }
                    np.bonds.insert(name, dev);
                }
                InterfaceKind::Bridge => {
                    dev.macaddress = r.mac.clone();
                    dev.interfaces = r.iface.parents.clone();
                    if let Some(b) = r.bridge {
                        dev.parameters = Some(NetplanParameters::Bridge(NetplanBridgeParameters {
                            stp: b.stp,
                            forward_delay: b.forward_delay,
                        }));
                        if b.kind == BridgeKind::Ovs {
                            dev.openvswitch = Some(BTreeMap::new());
                        }
                    }
                    np.bridges.insert(name, dev);
                }
                InterfaceKind::Vlan => {
                    dev.id = r.vid;
                    dev.link = r.iface.parents.first().cloned();
                    np.vlans.insert(name, dev);
                }
                InterfaceKind::Alias => {}
            }
        }
        np
    }

    fn v1(&self) -> Result<NetworkV1, CurtinError> {
        let mut config = Vec::new();
        for r in &self.interfaces {
            let (dns, search) = self.dns_for(r);
            let routes: Vec<V1Route> = self
                .routes_for(r)
                .into_iter()
                .map(|route| V1Route {
                    destination: route.destination.to_string(),
                    gateway: route.gateway.to_string(),
                    metric: Some(route.metric),
                })
                .collect();
            // The default gateway goes on the first address of its subnet
            // only: two would be two default routes.
            let mut gateway_given = false;
            let mut subnets: Vec<V1Subnet> = r
                .addrs
                .iter()
                .map(|a| match a {
                    Addr::Dhcp { v6, .. } => V1Subnet {
                        kind: if *v6 { "dhcp6" } else { "dhcp4" },
                        ..V1Subnet::default()
                    },
                    Addr::Static { ip, subnet } => V1Subnet {
                        kind: if ip.is_ipv4() { "static" } else { "static6" },
                        address: Some(format!("{ip}/{}", subnet.cidr.prefix_len())),
                        gateway: self
                            .gateways
                            .iter()
                            .find(|(name, gw)| {
                                !gateway_given
                                    && *name == r.iface.name
                                    && subnet.gateway_ip == Some(*gw)
                            })
                            .map(|(_, gw)| {
                                gateway_given = true;
                                gw.to_string()
                            }),
                        dns_nameservers: dns.clone(),
                        dns_search: search.clone(),
                        routes: routes.clone(),
                    },
                })
                .collect();
            // Addresses claim the routes; an interface with DHCP only gets
            // them on its first subnet.
            if !subnets.iter().any(|s| !s.routes.is_empty())
                && let Some(first) = subnets.first_mut()
            {
                first.routes = routes.clone();
            }
            if subnets.is_empty() {
                subnets.push(V1Subnet {
                    kind: "manual",
                    ..V1Subnet::default()
                });
            }
            let name = r.iface.name.clone();
            config.push(match r.iface.kind {
                InterfaceKind::Physical => V1Item::Physical {
                    name,
                    mac_address: r.mac.clone(),
                    mtu: r.mtu,
                    subnets,
                },
                InterfaceKind::Bond => {
                    let b = r.bond.unwrap_or_default();
                    V1Item::Bond {
                        name,
                        mac_address: r.mac.clone(),
                        bond_interfaces: r.iface.parents.clone(),
                        mtu: r.mtu,
                        params: V1BondParams {
                            mode: b.mode.as_str(),
                            miimon: b.miimon,
                            downdelay: b.downdelay,
                            // cloud-init's v1 schema types bond-updelay as a string.
                            updelay: b.updelay.to_string(),
                            lacp_rate: (b.mode == BondMode::Ieee8023ad)
                                .then_some(b.lacp_rate.as_str()),
                            xmit_hash_policy: b
                                .mode
                                .uses_hash_policy()
                                .then_some(b.xmit_hash_policy.as_str()),
                            num_grat_arp: (b.mode == BondMode::ActiveBackup)
                                .then_some(b.num_grat_arp),
                        },
                        subnets,
                    }
                }
                InterfaceKind::Bridge => {
                    let b = r.bridge.unwrap_or(BridgeParams {
                        kind: BridgeKind::Standard,
                        stp: false,
                        forward_delay: 15,
                    });
                    if b.kind == BridgeKind::Ovs {
                        return Err(CurtinError::InvalidInterfaceParam {
                            interface: name,
                            key: "bridge_type".to_owned(),
                            value: "ovs".to_owned(),
                            reason: "Open vSwitch bridges need netplan (network version 2)",
                        });
                    }
                    V1Item::Bridge {
                        name,
                        bridge_interfaces: r.iface.parents.clone(),
                        params: V1BridgeParams {
                            bridge_stp: if b.stp { "on" } else { "off" },
                            bridge_fd: b.forward_delay,
                        },
                        subnets,
                    }
                }
                InterfaceKind::Vlan => V1Item::Vlan {
                    name,
                    vlan_link: r.iface.parents.first().cloned().unwrap_or_default(),
                    vlan_id: r.vid.unwrap_or_default(),
                    mtu: r.mtu,
                    subnets,
                },
                InterfaceKind::Alias => continue,
            });
        }
        Ok(NetworkV1 { version: 1, config })
    }
}

/// Interfaces ordered so that every parent comes before its children,
/// otherwise in the machine's order.
fn order_parents_first(machine: &Machine) -> Vec<&Interface> {
    let mut out: Vec<&Interface> = Vec::new();
    let mut done = BTreeSet::new();
    fn visit<'m>(
        m: &'m Machine,
        i: &'m Interface,
        done: &mut BTreeSet<&'m str>,
        out: &mut Vec<&'m Interface>,
        depth: usize,
    ) {
        if depth > m.interfaces.len() || done.contains(i.name.as_str()) {
            return;
        }
        for p in &i.parents {
            if let Some(parent) = m.interfaces.iter().find(|x| &x.name == p) {
                visit(m, parent, done, out, depth + 1);
            }
        }
        if done.insert(i.name.as_str()) {
            out.push(i);
        }
    }
    for i in &machine.interfaces {
        visit(machine, i, &mut done, &mut out, 0);
    }
    out
}

/// One default gateway per address family: `(interface, gateway)`.
fn pick_gateways(
    machine: &Machine,
    resolved: &[Resolved],
    preferred: Option<SubnetId>,
) -> Vec<(String, IpAddr)> {
    let boot = machine.boot_interface.as_deref();
    let mut candidates: Vec<(bool, &str, &Subnet)> = Vec::new();
    for r in resolved {
        for a in &r.addrs {
            if let Addr::Static { subnet, .. } = a
                && subnet.gateway_ip.is_some()
            {
                // Boot interface first; a bond or bridge over it counts too.
                let on_boot = boot
                    .is_some_and(|b| r.iface.name == b || r.iface.parents.iter().any(|p| p == b));
                candidates.push((!on_boot, &r.iface.name, subnet));
            }
        }
    }
    candidates.sort_by_key(|(not_boot, _, _)| *not_boot);
    let mut out: Vec<(String, IpAddr)> = Vec::new();
    for v4 in [true, false] {
        let of_family = candidates
            .iter()
            .filter(|(_, _, s)| s.gateway_ip.is_some_and(|g| g.is_ipv4() == v4));
        let chosen = of_family
            .clone()
            .find(|(_, _, s)| Some(s.id) == preferred)
            .or_else(|| of_family.clone().next());
        if let Some((_, name, s)) = chosen
            && let Some(gw) = s.gateway_ip
        {
            out.push(((*name).to_owned(), gw));
        }
    }
    out
}

/// Curtin's `network` value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum NetworkConfig {
    /// cloud-init version 1.
    V1(NetworkV1),
    /// netplan.
    V2(Netplan),
}

impl NetworkConfig {
    /// The config as YAML that PyYAML (netplan's and cloud-init's reader)
    /// reads back unchanged.
    pub fn to_yaml(&self) -> Result<String, CurtinError> {
        crate::cloudinit::to_yaml(self)
    }
}

/// A netplan document (`network:` content).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Netplan {
    /// Always 2.
    pub version: u8,
    /// Physical interfaces.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ethernets: BTreeMap<String, NetplanDevice>,
    /// Bonds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bonds: BTreeMap<String, NetplanDevice>,
    /// VLANs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vlans: BTreeMap<String, NetplanDevice>,
    /// Bridges.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bridges: BTreeMap<String, NetplanDevice>,
}

/// One netplan device definition (the keys used by any kind).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct NetplanDevice {
    #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
    pub matches: Option<NetplanMatch>,
    #[serde(rename = "set-name", default, skip_serializing_if = "Option::is_none")]
    pub set_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macaddress: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp4: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp6: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<NetplanRoute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameservers: Option<NetplanNameservers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<NetplanParameters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openvswitch: Option<BTreeMap<String, String>>,
}

/// netplan `match`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetplanMatch {
    /// MAC address, lower case.
    pub macaddress: String,
}

/// A netplan route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct NetplanRoute {
    pub to: String,
    pub via: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

/// netplan `nameservers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct NetplanNameservers {
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
}

/// netplan `parameters` of a bond or a bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
#[allow(missing_docs)]
pub enum NetplanParameters {
    Bond(NetplanBondParameters),
    Bridge(NetplanBridgeParameters),
}

/// netplan bond parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct NetplanBondParameters {
    pub mode: String,
    /// A string: cloud-init's netplan schema types it so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mii_monitor_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_delay: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_delay: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lacp_rate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit_hash_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gratuitous_arp: Option<u8>,
}

/// netplan bridge parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct NetplanBridgeParameters {
    pub stp: bool,
    pub forward_delay: u32,
}

/// cloud-init network config version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkV1 {
    /// Always 1.
    pub version: u8,
    /// Interfaces, parents first.
    pub config: Vec<V1Item>,
}

/// A version 1 config entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum V1Item {
    Physical {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        mac_address: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        mtu: Option<u32>,
        subnets: Vec<V1Subnet>,
    },
    Bond {
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        mac_address: Option<String>,
        bond_interfaces: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        mtu: Option<u32>,
        params: V1BondParams,
        subnets: Vec<V1Subnet>,
    },
    Vlan {
        name: String,
        vlan_link: String,
        vlan_id: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        mtu: Option<u32>,
        subnets: Vec<V1Subnet>,
    },
    Bridge {
        name: String,
        bridge_interfaces: Vec<String>,
        params: V1BridgeParams,
        subnets: Vec<V1Subnet>,
    },
}

/// Version 1 bond parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct V1BondParams {
    #[serde(rename = "bond-mode")]
    pub mode: &'static str,
    #[serde(rename = "bond-miimon")]
    pub miimon: u32,
    #[serde(rename = "bond-downdelay")]
    pub downdelay: u32,
    #[serde(rename = "bond-updelay")]
    pub updelay: String,
    #[serde(rename = "bond-lacp_rate", skip_serializing_if = "Option::is_none")]
    pub lacp_rate: Option<&'static str>,
    #[serde(
        rename = "bond-xmit_hash_policy",
        skip_serializing_if = "Option::is_none"
    )]
    pub xmit_hash_policy: Option<&'static str>,
    #[serde(rename = "bond-num_grat_arp", skip_serializing_if = "Option::is_none")]
    pub num_grat_arp: Option<u8>,
}

/// Version 1 bridge parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct V1BridgeParams {
    pub bridge_stp: &'static str,
    pub bridge_fd: u32,
}

/// A version 1 subnet (an address of an interface).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct V1Subnet {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_nameservers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<V1Route>,
}

/// A version 1 route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct V1Route {
    pub destination: String,
    pub gateway: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}
