//! The network model and IP address management (IPAM).
//!
//! Fabrics hold VLANs, VLANs hold subnets, subnets hold IP ranges (dynamic ones
//! served by DHCP, reserved ones kept away from MAAS) and assigned addresses.
//! Everything here is plain data plus validation and address selection; storing
//! and locking are the caller's business.
//!
//! Address arithmetic maps every address to a `u128` (an IPv4 address is its
//! 32-bit value widened), so IPv4 and IPv6 share one code path. The allocator
//! never walks addresses one by one: it sorts and merges the occupied intervals
//! (gateway, ranges, assigned addresses) and jumps over them, so finding a free
//! address in an IPv6 /64 costs O((ranges + assigned) log(ranges + assigned)).
//!
//! Which addresses of a subnet are never handed out:
//!
//! * IPv4 with a prefix shorter than /31: the network and broadcast addresses.
//! * IPv6 with a prefix shorter than /127: the network address (the subnet-router
//!   anycast address of RFC 4291; IPv6 has no broadcast).
//! * Point-to-point prefixes (IPv4 /31 and /32, RFC 3021; IPv6 /127 and /128,
//!   RFC 6164) reserve nothing, since otherwise they would have no usable address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::ids::{FabricId, InterfaceId, IpRangeId, SpaceId, StaticAddressId, SubnetId, VlanId};

/// The MTU a VLAN gets when none is given.
pub const DEFAULT_MTU: u32 = 1500;

/// The smallest MTU a VLAN may have (the IPv4 minimum MAAS enforces).
pub const MIN_MTU: u32 = 552;

/// The largest MTU a VLAN may have.
pub const MAX_MTU: u32 = 65535;

/// The highest 802.1Q VLAN tag; 4095 is reserved by the standard.
pub const MAX_VID: u16 = 4094;

/// The most runs [`unreserved_ranges`] returns, so a fragmented IPv6 subnet
/// cannot produce an unbounded answer.
pub const MAX_UNRESERVED_RANGES: usize = 10_000;

/// A set of VLANs joined at layer 2 (one physical switching domain).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fabric {
    /// The fabric's id.
    pub id: FabricId,
    /// Unique name, such as `fabric-0`.
    pub name: String,
    /// Free-form class of the fabric (for example `10g`), used by constraints.
    #[serde(default)]
    pub class_type: Option<String>,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
}

/// A named set of VLANs (and so of subnets) with the same purpose, used to
/// express "reachable on network X" in allocation constraints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Space {
    /// The space's id.
    pub id: SpaceId,
    /// Unique name.
    pub name: String,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
}

fn default_mtu() -> u32 {
    DEFAULT_MTU
}

/// A VLAN on a fabric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vlan {
    /// The VLAN's database id.
    pub id: VlanId,
    /// The fabric this VLAN belongs to.
    pub fabric: FabricId,
    /// The 802.1Q tag: 0 for the fabric's untagged VLAN, 1 to 4094 for tagged ones.
    pub vid: u16,
    /// Optional name.
    #[serde(default)]
    pub name: Option<String>,
    /// MTU of the VLAN, [`DEFAULT_MTU`] when not given.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Whether MAAS serves DHCP on this VLAN.
    #[serde(default)]
    pub dhcp_on: bool,
    /// `system_id` of the rack controller serving DHCP.
    #[serde(default)]
    pub primary_rack: Option<String>,
    /// `system_id` of the failover rack controller.
    #[serde(default)]
    pub secondary_rack: Option<String>,
    /// The VLAN whose DHCP server answers, relayed, for this VLAN.
    #[serde(default)]
    pub relay_vlan: Option<VlanId>,
    /// The space this VLAN belongs to.
    #[serde(default)]
    pub space: Option<SpaceId>,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
}

impl Vlan {
    /// Whether this is the fabric's untagged VLAN (`vid` 0).
    pub fn is_untagged(&self) -> bool {
        self.vid == 0
    }

    /// Checks the VLAN's own fields against the rules MAAS enforces.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.vid > MAX_VID {
            return Err(ValidationError::new(
                "vid",
                self.vid,
                "expected 0 (untagged) or a VLAN tag from 1 to 4094",
            ));
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(ValidationError::new(
                "mtu",
                self.mtu,
                format!("expected an MTU from {MIN_MTU} to {MAX_MTU}"),
            ));
        }
        match (&self.primary_rack, &self.secondary_rack) {
            (None, Some(secondary)) => {
                return Err(ValidationError::new(
                    "secondary_rack",
                    secondary,
                    "a secondary rack controller requires a primary rack controller",
                ));
            }
            (Some(primary), Some(secondary)) if primary == secondary => {
                return Err(ValidationError::new(
                    "secondary_rack",
                    secondary,
                    "the secondary rack controller must differ from the primary one",
                ));
            }
            _ => {}
        }
        if let Some(relay) = self.relay_vlan {
            // Two DHCP servers answering on one VLAN would hand out conflicting
            // leases, so relaying and serving are mutually exclusive.
            if self.dhcp_on {
                return Err(ValidationError::new(
                    "relay_vlan",
                    relay,
                    "a VLAN that relays DHCP cannot also serve DHCP itself (dhcp_on)",
                ));
            }
            if relay == self.id {
                return Err(ValidationError::new(
                    "relay_vlan",
                    relay,
                    "a VLAN cannot relay DHCP to itself",
                ));
            }
        }
        Ok(())
    }
}

/// An IP subnet on a VLAN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subnet {
    /// The subnet's id.
    pub id: SubnetId,
    /// Name, by default the CIDR.
    pub name: String,
    /// The network, such as `10.0.0.0/24`; host bits must be zero.
    pub cidr: IpNet,
    /// The VLAN the subnet lives on.
    pub vlan: VlanId,
    /// Default gateway handed to machines, inside the subnet.
    #[serde(default)]
    pub gateway_ip: Option<IpAddr>,
    /// DNS servers handed to machines (either family).
    #[serde(default)]
    pub dns_servers: Vec<IpAddr>,
    /// Whether MAAS manages allocation in this subnet (fully, rather than only
    /// inside reserved ranges).
    pub managed: bool,
    /// Whether MAAS DNS servers are handed to machines on this subnet.
    pub allow_dns: bool,
    /// Whether the MAAS proxy accepts clients from this subnet.
    pub allow_proxy: bool,
    /// Whether rack controllers actively scan this subnet for neighbours.
    pub active_discovery: bool,
    /// Free-form description.
    #[serde(default)]
    pub description: String,
}

impl Subnet {
    /// Checks that the CIDR is a network address and that the gateway, if any,
    /// is a usable address of the subnet.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let network = self.cidr.trunc();
        if self.cidr != network {
            return Err(ValidationError::new(
                "cidr",
                self.cidr,
                format!("host bits are set; the network is {network}"),
            ));
        }
        if let Some(gateway) = self.gateway_ip {
            let span = Span::of(&self.cidr);
            check_usable(&span, &self.cidr, gateway)
                .map_err(|reason| ValidationError::new("gateway_ip", gateway, reason))?;
        }
        Ok(())
    }
}

/// The purpose of an IP range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpRangeType {
    /// Addresses leased by the MAAS DHCP server (enlistment, commissioning, DHCP links).
    Dynamic,
    /// Addresses MAAS never assigns by itself (used by other equipment).
    Reserved,
}

impl IpRangeType {
    /// The name used in the API: `dynamic` or `reserved`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpRangeType::Dynamic => "dynamic",
            IpRangeType::Reserved => "reserved",
        }
    }
}

impl fmt::Display for IpRangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IpRangeType {
    type Err = ValidationError;

    /// Parses `dynamic` or `reserved`, ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [IpRangeType::Dynamic, IpRangeType::Reserved]
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ValidationError::new("type", s, "expected dynamic or reserved"))
    }
}

/// An inclusive range of addresses of a subnet set aside for a purpose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpRange {
    /// The range's id.
    pub id: IpRangeId,
    /// The subnet the range belongs to.
    pub subnet: SubnetId,
    /// What the range is for (`type` in the API).
    #[serde(rename = "type")]
    pub kind: IpRangeType,
    /// First address of the range.
    pub start: IpAddr,
    /// Last address of the range (inclusive).
    pub end: IpAddr,
    /// Free-form comment.
    #[serde(default)]
    pub comment: String,
}

impl IpRange {
    /// Whether `ip` lies between `start` and `end` inclusive (and is of their family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (family, value) = ip_to_u128(ip);
        let (start_family, start) = ip_to_u128(self.start);
        let (end_family, end) = ip_to_u128(self.end);
        family == start_family && family == end_family && start <= value && value <= end
    }

    /// The range as `(start, end)` numbers, when both ends share `family`.
    fn bounds(&self, family: Family) -> Option<Interval> {
        let (start_family, start) = ip_to_u128(self.start);
        let (end_family, end) = ip_to_u128(self.end);
        (start_family == family && end_family == family).then_some((start, end))
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} range {}-{}", self.kind, self.start, self.end)
    }
}

/// How an address came to be assigned, with the names MAAS uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IpAddressType {
    /// Picked by MAAS from the subnet when the machine deploys.
    Auto,
    /// Fixed to an interface, chosen by MAAS or by the user.
    Sticky,
    /// Reserved by a user, not tied to a machine.
    UserReserved,
    /// Leased by DHCP; the address is known only once observed.
    Dhcp,
    /// Seen on the network by a rack controller, not assigned by MAAS.
    Discovered,
}

impl IpAddressType {
    /// Every type, in MAAS order.
    pub const ALL: [IpAddressType; 5] = [
        IpAddressType::Auto,
        IpAddressType::Sticky,
        IpAddressType::UserReserved,
        IpAddressType::Dhcp,
        IpAddressType::Discovered,
    ];

    /// The name used in the API, such as `USER_RESERVED`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpAddressType::Auto => "AUTO",
            IpAddressType::Sticky => "STICKY",
            IpAddressType::UserReserved => "USER_RESERVED",
            IpAddressType::Dhcp => "DHCP",
            IpAddressType::Discovered => "DISCOVERED",
        }
    }
}

impl fmt::Display for IpAddressType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IpAddressType {
    type Err = ValidationError;

    /// Parses an API name such as `sticky` or `USER_RESERVED`, ignoring case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IpAddressType::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                ValidationError::new(
                    "alloc_type",
                    s,
                    "expected one of AUTO, STICKY, USER_RESERVED, DHCP, DISCOVERED",
                )
            })
    }
}

/// An address (or a pending link) on a subnet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaticAddress {
    /// The address's id.
    pub id: StaticAddressId,
    /// The subnet the address belongs to.
    pub subnet: SubnetId,
    /// The address; `None` for a link that has none yet (an AUTO link before
    /// deployment, a DHCP link before a lease is seen).
    #[serde(default)]
    pub ip: Option<IpAddr>,
    /// How the address was assigned.
    pub alloc_type: IpAddressType,
    /// The interface the address is linked to, if any.
    #[serde(default)]
    pub interface: Option<InterfaceId>,
    /// Hostname recorded for the address (DNS), if any.
    #[serde(default)]
    pub hostname: Option<String>,
}

/// Why an address could not be allocated or accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    /// Every usable address of the subnet (or of its dynamic ranges) is taken.
    #[error("no free address in subnet {subnet}")]
    Exhausted {
        /// The subnet searched.
        subnet: IpNet,
    },
    /// The address is IPv4 and the subnet IPv6, or the reverse.
    #[error("address {ip} is not of the same IP family as subnet {subnet}")]
    FamilyMismatch {
        /// The offending address.
        ip: IpAddr,
        /// The subnet.
        subnet: IpNet,
    },
    /// The address lies outside the subnet.
    #[error("address {ip} is not in subnet {subnet}")]
    NotInSubnet {
        /// The offending address.
        ip: IpAddr,
        /// The subnet.
        subnet: IpNet,
    },
    /// The address is the network or broadcast address of the subnet.
    #[error("address {ip} is the network or broadcast address of subnet {subnet}")]
    Reserved {
        /// The offending address.
        ip: IpAddr,
        /// The subnet.
        subnet: IpNet,
    },
    /// The address is the subnet's gateway.
    #[error("address {ip} is the subnet's gateway")]
    IsGateway {
        /// The offending address.
        ip: IpAddr,
    },
    /// The address lies inside a dynamic (DHCP) range.
    #[error("address {ip} is inside the dynamic range {range_start}-{range_end}")]
    InDynamicRange {
        /// The offending address.
        ip: IpAddr,
        /// First address of the dynamic range.
        range_start: IpAddr,
        /// Last address of the dynamic range.
        range_end: IpAddr,
    },
    /// The address is already assigned.
    #[error("address {ip} is already assigned")]
    AlreadyAssigned {
        /// The offending address.
        ip: IpAddr,
    },
}

/// Address usage of a subnet, as MAAS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SubnetStatistics {
    /// Addresses still free for static assignment.
    pub num_available: u128,
    /// Addresses that are not: network and broadcast, gateway, addresses in
    /// dynamic or reserved ranges, assigned addresses.
    pub num_unavailable: u128,
    /// Size of the subnet (saturating at `u128::MAX` for `::/0`).
    pub total_addresses: u128,
    /// `num_unavailable / total_addresses`, from 0.0 to 1.0.
    pub usage: f64,
}

/// Checks a new or updated IP range against its subnet and the subnet's other
/// ranges.
///
/// `others` may contain the range itself (matched by id) and ranges of other
/// subnets; both are ignored.
pub fn validate_ip_range(
    subnet: &Subnet,
    range: &IpRange,
    others: &[IpRange],
) -> Result<(), ValidationError> {
    let cidr = subnet.cidr;
    if range.subnet != subnet.id {
        return Err(ValidationError::new(
            "subnet",
            range.subnet,
            format!(
                "{range} belongs to subnet {} but was checked against subnet {} ({cidr})",
                range.subnet, subnet.id
            ),
        ));
    }
    let span = Span::of(&cidr);
    for (field, ip) in [("start", range.start), ("end", range.end)] {
        check_usable(&span, &cidr, ip)
            .map_err(|reason| ValidationError::new(field, ip, format!("{range}: {reason}")))?;
    }
    let Some((start, end)) = range.bounds(span.family) else {
        // Unreachable after the per-address checks, but a plain error beats a panic.
        return Err(ValidationError::new(
            "start",
            range.start,
            "address family mismatch",
        ));
    };
    if start > end {
        return Err(ValidationError::new(
            "end",
            range.end,
            format!("{range}: the end address is before the start address"),
        ));
    }
    if range.kind == IpRangeType::Dynamic
        && let Some(gateway) = subnet.gateway_ip
        && range.contains(gateway)
    {
        return Err(ValidationError::new(
            "range",
            range,
            format!("the gateway {gateway} of subnet {cidr} lies inside {range}"),
        ));
    }
    let conflict = others.iter().find(|other| {
        other.subnet == subnet.id
            && other.id != range.id
            && other
                .bounds(span.family)
                .is_some_and(|(other_start, other_end)| other_start <= end && start <= other_end)
    });
    if let Some(other) = conflict {
        return Err(ValidationError::new(
            "range",
            range,
            format!("{range} overlaps {other} (id {})", other.id),
        ));
    }
    Ok(())
}

/// The lowest address of the subnet free for static assignment.
///
/// Skips the network and broadcast addresses, the gateway, every dynamic and
/// reserved range in `ranges`, and `assigned`. Entries of `ranges` and
/// `assigned` outside the subnet or of the other family are ignored, so callers
/// may pass unfiltered lists. Runs in O(n log n) for n ranges and assigned
/// addresses, whatever the subnet's size.
pub fn next_free_address(
    subnet: &Subnet,
    ranges: &[IpRange],
    assigned: &[IpAddr],
) -> Result<IpAddr, IpamError> {
    let span = Span::of(&subnet.cidr);
    let excluded = static_exclusions(&span, subnet, ranges, assigned);
    free_runs(&[span.usable()], &excluded, 1)
        .first()
        .map(|&(first, _)| span.ip(first))
        .ok_or(IpamError::Exhausted {
            subnet: subnet.cidr,
        })
}

/// The lowest address inside the subnet's dynamic ranges that is neither the
/// gateway nor assigned (nor inside a reserved range, should one overlap).
///
/// This is how a DHCP-style allocation picks a lease; the cost is the same as
/// [`next_free_address`].
pub fn next_free_dynamic_address(
    subnet: &Subnet,
    ranges: &[IpRange],
    assigned: &[IpAddr],
) -> Result<IpAddr, IpamError> {
    let span = Span::of(&subnet.cidr);
    let pool = merge(
        ranges
            .iter()
            .filter(|range| range.kind == IpRangeType::Dynamic)
            .filter_map(|range| span.clip(range))
            .collect(),
    );
    let excluded = merge(
        subnet
            .gateway_ip
            .iter()
            .chain(assigned)
            .filter_map(|&ip| span.value_in(ip))
            .map(|value| (value, value))
            .chain(
                ranges
                    .iter()
                    .filter(|range| range.kind == IpRangeType::Reserved)
                    .filter_map(|range| span.clip(range)),
            )
            .collect(),
    );
    free_runs(&pool, &excluded, 1)
        .first()
        .map(|&(first, _)| span.ip(first))
        .ok_or(IpamError::Exhausted {
            subnet: subnet.cidr,
        })
}

/// Checks an address a user picked for static assignment.
///
/// Unlike [`next_free_address`], an address inside a reserved range is
/// accepted: reserved ranges keep MAAS's own choices away, not the user's
/// (MAAS allows `USER_RESERVED` addresses there). Dynamic ranges belong to the
/// DHCP server and are refused.
pub fn check_static_address(
    subnet: &Subnet,
    ranges: &[IpRange],
    assigned: &[IpAddr],
    ip: IpAddr,
) -> Result<(), IpamError> {
    let cidr = subnet.cidr;
    let span = Span::of(&cidr);
    let (family, value) = ip_to_u128(ip);
    if family != span.family {
        return Err(IpamError::FamilyMismatch { ip, subnet: cidr });
    }
    if !span.contains(value) {
        return Err(IpamError::NotInSubnet { ip, subnet: cidr });
    }
    if span.is_reserved_edge(value) {
        return Err(IpamError::Reserved { ip, subnet: cidr });
    }
    if subnet.gateway_ip == Some(ip) {
        return Err(IpamError::IsGateway { ip });
    }
    if let Some(range) = ranges
        .iter()
        .find(|range| range.kind == IpRangeType::Dynamic && range.contains(ip))
    {
        return Err(IpamError::InDynamicRange {
            ip,
            range_start: range.start,
            range_end: range.end,
        });
    }
    if assigned.contains(&ip) {
        return Err(IpamError::AlreadyAssigned { ip });
    }
    Ok(())
}

/// Counts the subnet's free and used addresses (see [`SubnetStatistics`]).
pub fn subnet_statistics(
    subnet: &Subnet,
    ranges: &[IpRange],
    assigned: &[IpAddr],
) -> SubnetStatistics {
    let span = Span::of(&subnet.cidr);
    let excluded = static_exclusions(&span, subnet, ranges, assigned);
    let num_available = free_runs(&[span.usable()], &excluded, usize::MAX)
        .iter()
        .fold(0u128, |sum, &(first, last)| {
            sum.saturating_add((last - first).saturating_add(1))
        });
    let total_addresses = span.size();
    let num_unavailable = total_addresses.saturating_sub(num_available);
    // Precision loss is fine: this is a ratio for display.
    let usage = num_unavailable as f64 / total_addresses as f64;
    SubnetStatistics {
        num_available,
        num_unavailable,
        total_addresses,
        usage,
    }
}

/// The maximal runs `(first, last)` (inclusive) of addresses free for static
/// assignment, lowest first, at most [`MAX_UNRESERVED_RANGES`] of them.
pub fn unreserved_ranges(
    subnet: &Subnet,
    ranges: &[IpRange],
    assigned: &[IpAddr],
) -> Vec<(IpAddr, IpAddr)> {
    let span = Span::of(&subnet.cidr);
    let excluded = static_exclusions(&span, subnet, ranges, assigned);
    free_runs(&[span.usable()], &excluded, MAX_UNRESERVED_RANGES)
        .into_iter()
        .map(|(first, last)| (span.ip(first), span.ip(last)))
        .collect()
}

/// An inclusive interval of addresses as numbers.
type Interval = (u128, u128);

/// The IP version an address number belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// An address as a number, tagged with its family.
fn ip_to_u128(ip: IpAddr) -> (Family, u128) {
    match ip {
        IpAddr::V4(v4) => (Family::V4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (Family::V6, u128::from(v6)),
    }
}

/// The address a number stands for in `family`.
fn u128_to_ip(family: Family, value: u128) -> IpAddr {
    match family {
        // IPv4 numbers come from IPv4 subnets and always fit; saturate rather
        // than panic should that ever change.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(value).unwrap_or(u32::MAX))),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// A subnet as a numeric interval, with which of its edges are reserved.
#[derive(Debug, Clone, Copy)]
struct Span {
    family: Family,
    first: u128,
    last: u128,
    network_reserved: bool,
    broadcast_reserved: bool,
}

impl Span {
    fn of(cidr: &IpNet) -> Span {
        let (family, first) = ip_to_u128(cidr.network());
        let (_, last) = ip_to_u128(cidr.broadcast());
        let prefix = cidr.prefix_len();
        let (network_reserved, broadcast_reserved) = match family {
            Family::V4 => (prefix < 31, prefix < 31),
            Family::V6 => (prefix < 127, false),
        };
        Span {
            family,
            first,
            last,
            network_reserved,
            broadcast_reserved,
        }
    }

    fn contains(&self, value: u128) -> bool {
        self.first <= value && value <= self.last
    }

    /// The number of `ip` if it is of this family and inside the subnet.
    fn value_in(&self, ip: IpAddr) -> Option<u128> {
        let (family, value) = ip_to_u128(ip);
        (family == self.family && self.contains(value)).then_some(value)
    }

    fn is_network(&self, value: u128) -> bool {
        self.network_reserved && value == self.first
    }

    fn is_broadcast(&self, value: u128) -> bool {
        self.broadcast_reserved && value == self.last
    }

    fn is_reserved_edge(&self, value: u128) -> bool {
        self.is_network(value) || self.is_broadcast(value)
    }

    /// The addresses that may ever be assigned. Never empty: edges are only
    /// reserved for prefixes that leave at least two addresses between them.
    fn usable(&self) -> Interval {
        (
            self.first + u128::from(self.network_reserved),
            self.last - u128::from(self.broadcast_reserved),
        )
    }

    fn size(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }

    /// The part of `range` inside the usable addresses, if any.
    fn clip(&self, range: &IpRange) -> Option<Interval> {
        let (start, end) = range.bounds(self.family)?;
        let (usable_first, usable_last) = self.usable();
        let (start, end) = (start.max(usable_first), end.min(usable_last));
        (start <= end).then_some((start, end))
    }

    fn ip(&self, value: u128) -> IpAddr {
        u128_to_ip(self.family, value)
    }
}

/// Why `ip` cannot be an endpoint or gateway of the subnet, as a message.
fn check_usable(span: &Span, cidr: &IpNet, ip: IpAddr) -> Result<(), String> {
    let (family, value) = ip_to_u128(ip);
    if family != span.family {
        Err(format!("not of the same IP family as subnet {cidr}"))
    } else if !span.contains(value) {
        Err(format!("not inside subnet {cidr}"))
    } else if span.is_network(value) {
        Err(format!("the network address of subnet {cidr}"))
    } else if span.is_broadcast(value) {
        Err(format!("the broadcast address of subnet {cidr}"))
    } else {
        Ok(())
    }
}

/// Everything static assignment must skip, apart from the reserved edges
/// (which [`Span::usable`] already leaves out), sorted and merged.
fn static_exclusions(
    span: &Span,
    subnet: &Subnet,
    ranges: &[IpRange],
    assigned: &[IpAddr],
) -> Vec<Interval> {
    merge(
        subnet
            .gateway_ip
            .iter()
            .chain(assigned)
            .filter_map(|&ip| span.value_in(ip))
            .map(|value| (value, value))
            .chain(ranges.iter().filter_map(|range| span.clip(range)))
            .collect(),
    )
}

/// Sorts intervals and joins the overlapping or adjacent ones, so walkers can
/// assume a gap of at least one address between consecutive intervals.
fn merge(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.sort_unstable();
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for (start, end) in intervals {
        if let Some(last) = merged.last_mut()
            && start <= last.1.saturating_add(1)
        {
            last.1 = last.1.max(end);
        } else {
            merged.push((start, end));
        }
    }
    merged
}

/// The maximal runs of `candidates` not covered by `excluded`, lowest first,
/// at most `limit` of them. Both inputs must be sorted and merged.
///
/// Each interval is visited once, so the cost is linear in the inputs however
/// many addresses they span.
fn free_runs(candidates: &[Interval], excluded: &[Interval], limit: usize) -> Vec<Interval> {
    let mut runs = Vec::new();
    let mut next_excluded = 0;
    'candidates: for &(start, end) in candidates {
        while excluded
            .get(next_excluded)
            .is_some_and(|&(_, excluded_end)| excluded_end < start)
        {
            next_excluded += 1;
        }
        let mut cursor = start;
        loop {
            if runs.len() >= limit {
                break 'candidates;
            }
            match excluded.get(next_excluded) {
                Some(&(excluded_start, excluded_end)) if excluded_start <= end => {
                    if excluded_start > cursor {
                        runs.push((cursor, excluded_start - 1));
                    }
                    match excluded_end.checked_add(1) {
                        Some(after) if after <= end => {
                            cursor = after;
                            next_excluded += 1;
                        }
                        // This exclusion covers the rest of the candidate and may
                        // reach into the next one, so it stays current.
                        _ => continue 'candidates,
                    }
                }
                _ => {
                    runs.push((cursor, end));
                    continue 'candidates;
                }
            }
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn subnet(cidr: &str, gateway: Option<&str>) -> Subnet {
        Subnet {
            id: SubnetId(1),
            name: cidr.to_owned(),
            cidr: cidr.parse().unwrap(),
            vlan: VlanId(1),
            gateway_ip: gateway.map(ip),
            dns_servers: Vec::new(),
            managed: true,
            allow_dns: true,
            allow_proxy: true,
            active_discovery: false,
            description: String::new(),
        }
    }

    fn range(id: i64, kind: IpRangeType, start: &str, end: &str) -> IpRange {
        IpRange {
            id: IpRangeId(id),
            subnet: SubnetId(1),
            kind,
            start: ip(start),
            end: ip(end),
            comment: String::new(),
        }
    }

    fn vlan() -> Vlan {
        Vlan {
            id: VlanId(5001),
            fabric: FabricId(1),
            vid: 0,
            name: None,
            mtu: DEFAULT_MTU,
            dhcp_on: false,
            primary_rack: None,
            secondary_rack: None,
            relay_vlan: None,
            space: None,
            description: String::new(),
        }
    }

    /// The usual test network: gateway .1, reserved .2-.9, dynamic .100-.199.
    fn v4_setup() -> (Subnet, Vec<IpRange>) {
        (
            subnet("10.0.0.0/24", Some("10.0.0.1")),
            vec![
                range(1, IpRangeType::Reserved, "10.0.0.2", "10.0.0.9"),
                range(2, IpRangeType::Dynamic, "10.0.0.100", "10.0.0.199"),
            ],
        )
    }

    #[test]
    fn next_free_skips_gateway_and_ranges() {
        let (subnet, ranges) = v4_setup();
        assert_eq!(
            next_free_address(&subnet, &ranges, &[]),
            Ok(ip("10.0.0.10"))
        );
        let assigned = [ip("10.0.0.10"), ip("10.0.0.11"), ip("10.0.0.13")];
        assert_eq!(
            next_free_address(&subnet, &ranges, &assigned),
            Ok(ip("10.0.0.12"))
        );
    }

    #[test]
    fn next_free_jumps_dynamic_range_and_skips_broadcast() {
        let (subnet, ranges) = v4_setup();
        let mut assigned: Vec<IpAddr> = (10..100).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        assert_eq!(
            next_free_address(&subnet, &ranges, &assigned),
            Ok(ip("10.0.0.200"))
        );
        assigned.extend((200..255).map(|i| ip(&format!("10.0.0.{i}"))));
        assert_eq!(
            next_free_address(&subnet, &ranges, &assigned),
            Err(IpamError::Exhausted {
                subnet: subnet.cidr
            })
        );
    }

    #[test]
    fn assigned_of_other_family_or_subnet_is_ignored() {
        let (subnet, ranges) = v4_setup();
        let assigned = [ip("2001:db8::10"), ip("10.0.1.10"), ip("10.0.0.10")];
        assert_eq!(
            next_free_address(&subnet, &ranges, &assigned),
            Ok(ip("10.0.0.11"))
        );
    }

    #[test]
    fn exhausted_slash_30() {
        let subnet = subnet("192.168.7.0/30", Some("192.168.7.1"));
        assert_eq!(next_free_address(&subnet, &[], &[]), Ok(ip("192.168.7.2")));
        assert_eq!(
            next_free_address(&subnet, &[], &[ip("192.168.7.2")]),
            Err(IpamError::Exhausted {
                subnet: subnet.cidr
            })
        );
        assert_eq!(
            next_free_address(&subnet, &[], &[ip("192.168.7.2")])
                .unwrap_err()
                .to_string(),
            "no free address in subnet 192.168.7.0/30"
        );
    }

    #[test]
    fn point_to_point_prefixes_use_every_address() {
        let p2p = subnet("10.9.9.0/31", None);
        assert_eq!(next_free_address(&p2p, &[], &[]), Ok(ip("10.9.9.0")));
        assert_eq!(
            next_free_address(&p2p, &[], &[ip("10.9.9.0")]),
            Ok(ip("10.9.9.1"))
        );
        let host = subnet("10.9.9.7/32", None);
        assert_eq!(next_free_address(&host, &[], &[]), Ok(ip("10.9.9.7")));
        let v6 = subnet("2001:db8::/127", None);
        assert_eq!(next_free_address(&v6, &[], &[]), Ok(ip("2001:db8::")));
    }

    #[test]
    fn ipv6_slash_64_is_fast() {
        let subnet = subnet("2001:db8:1:2::/64", Some("2001:db8:1:2::1"));
        let ranges = vec![
            range(
                1,
                IpRangeType::Reserved,
                "2001:db8:1:2::2",
                "2001:db8:1:2:ffff:ffff:ffff:0",
            ),
            range(
                2,
                IpRangeType::Dynamic,
                "2001:db8:1:2:ffff:ffff:ffff:1",
                "2001:db8:1:2:ffff:ffff:ffff:fffd",
            ),
        ];
        // The network address is the subnet-router anycast address.
        assert_eq!(
            next_free_address(&subnet, &[], &[]),
            Ok(ip("2001:db8:1:2::2"))
        );
        assert_eq!(
            next_free_address(&subnet, &ranges, &[]),
            Ok(ip("2001:db8:1:2:ffff:ffff:ffff:fffe"))
        );
        // IPv6 has no broadcast: the last address is usable.
        let assigned = [ip("2001:db8:1:2:ffff:ffff:ffff:fffe")];
        assert_eq!(
            next_free_address(&subnet, &ranges, &assigned),
            Ok(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        let assigned = [assigned[0], ip("2001:db8:1:2:ffff:ffff:ffff:ffff")];
        assert_eq!(
            next_free_address(&subnet, &ranges, &assigned),
            Err(IpamError::Exhausted {
                subnet: subnet.cidr
            })
        );

        // Many consecutive assigned addresses are jumped over as one interval.
        let base = u128::from(Ipv6Addr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, 0]));
        let assigned: Vec<IpAddr> = (2..20_002u128)
            .rev()
            .map(|i| IpAddr::V6(Ipv6Addr::from(base + i)))
            .collect();
        assert_eq!(
            next_free_address(&subnet, &[], &assigned),
            Ok(IpAddr::V6(Ipv6Addr::from(base + 20_002)))
        );

        let stats = subnet_statistics(&subnet, &ranges, &[]);
        assert_eq!(stats.total_addresses, 1u128 << 64);
        assert_eq!(stats.num_available, 2);
        assert_eq!(stats.num_unavailable, (1u128 << 64) - 2);
    }

    #[test]
    fn ipv6_slash_0_does_not_overflow() {
        let subnet = subnet("::/0", None);
        let ranges = [range(
            1,
            IpRangeType::Reserved,
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        )];
        assert_eq!(
            next_free_address(&subnet, &ranges, &[]),
            Err(IpamError::Exhausted {
                subnet: subnet.cidr
            })
        );
        let stats = subnet_statistics(&subnet, &[], &[]);
        assert_eq!(stats.total_addresses, u128::MAX);
        assert_eq!(
            unreserved_ranges(&subnet, &[], &[]),
            vec![(ip("::1"), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))]
        );
    }

    #[test]
    fn next_free_dynamic_stays_inside_dynamic_ranges() {
        let (subnet, ranges) = v4_setup();
        assert_eq!(
            next_free_dynamic_address(&subnet, &ranges, &[]),
            Ok(ip("10.0.0.100"))
        );
        let assigned = [ip("10.0.0.100"), ip("10.0.0.10")];
        assert_eq!(
            next_free_dynamic_address(&subnet, &ranges, &assigned),
            Ok(ip("10.0.0.101"))
        );
        let all: Vec<IpAddr> = (100..200).map(|i| ip(&format!("10.0.0.{i}"))).collect();
        assert_eq!(
            next_free_dynamic_address(&subnet, &ranges, &all),
            Err(IpamError::Exhausted {
                subnet: subnet.cidr
            })
        );
        assert_eq!(
            next_free_dynamic_address(&subnet, &ranges[..1], &[]),
            Err(IpamError::Exhausted {
                subnet: subnet.cidr
            })
        );
    }

    #[test]
    fn statistics_and_unreserved_ranges() {
        let (subnet, ranges) = v4_setup();
        let assigned = [ip("10.0.0.20")];
        let runs = unreserved_ranges(&subnet, &ranges, &assigned);
        assert_eq!(
            runs,
            vec![
                (ip("10.0.0.10"), ip("10.0.0.19")),
                (ip("10.0.0.21"), ip("10.0.0.99")),
                (ip("10.0.0.200"), ip("10.0.0.254")),
            ]
        );
        let stats = subnet_statistics(&subnet, &ranges, &assigned);
        assert_eq!(stats.total_addresses, 256);
        assert_eq!(stats.num_available, 10 + 79 + 55);
        assert_eq!(stats.num_unavailable, 256 - 144);
        assert!((stats.usage - 112.0 / 256.0).abs() < 1e-12);
    }

    #[test]
    fn unreserved_ranges_are_capped() {
        let subnet = subnet("2001:db8::/64", None);
        let base = ip_to_u128(ip("2001:db8::")).1;
        let assigned: Vec<IpAddr> = (1..=20_000u128)
            .map(|i| IpAddr::V6(Ipv6Addr::from(base + 2 * i)))
            .collect();
        assert_eq!(
            unreserved_ranges(&subnet, &[], &assigned).len(),
            MAX_UNRESERVED_RANGES
        );
        let stats = subnet_statistics(&subnet, &[], &assigned);
        assert_eq!(stats.num_unavailable, 20_001);
    }

    #[test]
    fn check_static_address_cases() {
        let (subnet, ranges) = v4_setup();
        let assigned = [ip("10.0.0.50")];
        let check = |s: &str| check_static_address(&subnet, &ranges, &assigned, ip(s));
        assert_eq!(check("10.0.0.10"), Ok(()));
        // Reserved ranges are open to user-chosen addresses.
        assert_eq!(check("10.0.0.5"), Ok(()));
        assert_eq!(
            check("10.0.0.1"),
            Err(IpamError::IsGateway { ip: ip("10.0.0.1") })
        );
        assert_eq!(
            check("10.0.0.50"),
            Err(IpamError::AlreadyAssigned {
                ip: ip("10.0.0.50")
            })
        );
        assert_eq!(
            check("10.0.0.150"),
            Err(IpamError::InDynamicRange {
                ip: ip("10.0.0.150"),
                range_start: ip("10.0.0.100"),
                range_end: ip("10.0.0.199"),
            })
        );
        assert_eq!(
            check("10.0.0.0"),
            Err(IpamError::Reserved {
                ip: ip("10.0.0.0"),
                subnet: subnet.cidr
            })
        );
        assert_eq!(
            check("10.0.0.255"),
            Err(IpamError::Reserved {
                ip: ip("10.0.0.255"),
                subnet: subnet.cidr
            })
        );
        assert_eq!(
            check("10.0.1.5"),
            Err(IpamError::NotInSubnet {
                ip: ip("10.0.1.5"),
                subnet: subnet.cidr
            })
        );
        assert_eq!(
            check("::1"),
            Err(IpamError::FamilyMismatch {
                ip: ip("::1"),
                subnet: subnet.cidr
            })
        );
    }

    #[test]
    fn range_overlap_names_both_ranges() {
        let (subnet, ranges) = v4_setup();
        let new = range(3, IpRangeType::Reserved, "10.0.0.150", "10.0.0.160");
        let err = validate_ip_range(&subnet, &new, &ranges).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("reserved range 10.0.0.150-10.0.0.160"),
            "{message}"
        );
        assert!(
            message.contains("dynamic range 10.0.0.100-10.0.0.199 (id 2)"),
            "{message}"
        );

        // Updating a range in place does not conflict with its old self.
        let grown = range(2, IpRangeType::Dynamic, "10.0.0.90", "10.0.0.210");
        assert_eq!(validate_ip_range(&subnet, &grown, &ranges), Ok(()));
        // Ranges of other subnets are not compared.
        let mut elsewhere = ranges.clone();
        for r in &mut elsewhere {
            r.subnet = SubnetId(99);
        }
        assert_eq!(validate_ip_range(&subnet, &new, &elsewhere), Ok(()));
    }

    #[test]
    fn range_bounds_are_checked() {
        let (subnet, ranges) = v4_setup();
        let bad = [
            (
                "start",
                range(3, IpRangeType::Reserved, "10.0.0.0", "10.0.0.20"),
            ),
            (
                "end",
                range(3, IpRangeType::Reserved, "10.0.0.200", "10.0.0.255"),
            ),
            (
                "end",
                range(3, IpRangeType::Reserved, "10.0.0.220", "10.0.1.5"),
            ),
            (
                "start",
                range(3, IpRangeType::Reserved, "2001:db8::1", "10.0.0.20"),
            ),
            (
                "end",
                range(3, IpRangeType::Reserved, "10.0.0.30", "10.0.0.20"),
            ),
            (
                "range",
                range(3, IpRangeType::Dynamic, "10.0.0.1", "10.0.0.1"),
            ),
        ];
        for (field, r) in bad {
            let err = validate_ip_range(&subnet, &r, &ranges).unwrap_err();
            assert_eq!(err.field, field, "{r}: {err}");
        }
        // The gateway may sit in a reserved range.
        let around_gateway = range(3, IpRangeType::Reserved, "10.0.0.1", "10.0.0.1");
        assert_eq!(validate_ip_range(&subnet, &around_gateway, &ranges), Ok(()));
        // A range checked against the wrong subnet is refused.
        let mut wrong = range(3, IpRangeType::Reserved, "10.0.0.30", "10.0.0.40");
        wrong.subnet = SubnetId(2);
        assert_eq!(
            validate_ip_range(&subnet, &wrong, &ranges)
                .unwrap_err()
                .field,
            "subnet"
        );
    }

    #[test]
    fn subnet_validation() {
        assert_eq!(subnet("10.0.0.0/24", Some("10.0.0.1")).validate(), Ok(()));
        assert_eq!(
            subnet("2001:db8::/64", Some("2001:db8::1")).validate(),
            Ok(())
        );
        assert_eq!(subnet("10.0.0.0/24", None).validate(), Ok(()));
        let cases = [
            ("cidr", subnet("10.0.0.5/24", None)),
            ("gateway_ip", subnet("10.0.0.0/24", Some("10.0.1.1"))),
            ("gateway_ip", subnet("10.0.0.0/24", Some("10.0.0.0"))),
            ("gateway_ip", subnet("10.0.0.0/24", Some("10.0.0.255"))),
            ("gateway_ip", subnet("10.0.0.0/24", Some("2001:db8::1"))),
            ("gateway_ip", subnet("2001:db8::/64", Some("2001:db8::"))),
        ];
        for (field, s) in cases {
            let err = s.validate().unwrap_err();
            assert_eq!(err.field, field, "{}: {err}", s.cidr);
        }
        let err = subnet("10.0.0.0/24", Some("10.0.1.1"))
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("not inside subnet 10.0.0.0/24"),
            "{err}"
        );
        // DNS servers may be of either family.
        let mut mixed = subnet("10.0.0.0/24", None);
        mixed.dns_servers = vec![ip("2001:db8::53"), ip("8.8.8.8")];
        assert_eq!(mixed.validate(), Ok(()));
        // RFC 3021: a /31 has no network or broadcast address.
        assert_eq!(subnet("10.0.0.0/31", Some("10.0.0.0")).validate(), Ok(()));
    }

    #[test]
    fn vlan_validation() {
        assert_eq!(vlan().validate(), Ok(()));
        let ok = Vlan {
            vid: 4094,
            mtu: 9000,
            dhcp_on: true,
            primary_rack: Some("abc123".into()),
            secondary_rack: Some("def456".into()),
            ..vlan()
        };
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            (
                "vid",
                Vlan {
                    vid: 4095,
                    ..vlan()
                },
            ),
            ("mtu", Vlan { mtu: 551, ..vlan() }),
            (
                "mtu",
                Vlan {
                    mtu: 65536,
                    ..vlan()
                },
            ),
            (
                "secondary_rack",
                Vlan {
                    secondary_rack: Some("abc123".into()),
                    ..vlan()
                },
            ),
            (
                "secondary_rack",
                Vlan {
                    primary_rack: Some("abc123".into()),
                    secondary_rack: Some("abc123".into()),
                    ..vlan()
                },
            ),
            (
                "relay_vlan",
                Vlan {
                    dhcp_on: true,
                    relay_vlan: Some(VlanId(7)),
                    ..vlan()
                },
            ),
            (
                "relay_vlan",
                Vlan {
                    relay_vlan: Some(VlanId(5001)),
                    ..vlan()
                },
            ),
        ];
        for (field, v) in cases {
            assert_eq!(v.validate().unwrap_err().field, field, "{v:?}");
        }
        assert_eq!(
            Vlan {
                relay_vlan: Some(VlanId(7)),
                ..vlan()
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn enum_names() {
        assert_eq!(
            serde_json::to_string(&IpAddressType::UserReserved).unwrap(),
            "\"USER_RESERVED\""
        );
        for kind in IpAddressType::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(
                kind.as_str().to_lowercase().parse::<IpAddressType>(),
                Ok(kind)
            );
        }
        assert_eq!("Sticky".parse::<IpAddressType>(), Ok(IpAddressType::Sticky));
        assert!("STATIC".parse::<IpAddressType>().is_err());
        assert_eq!(
            serde_json::to_string(&IpRangeType::Dynamic).unwrap(),
            "\"dynamic\""
        );
        assert_eq!(
            serde_json::from_str::<IpRangeType>("\"reserved\"").unwrap(),
            IpRangeType::Reserved
        );
        assert_eq!("DYNAMIC".parse::<IpRangeType>(), Ok(IpRangeType::Dynamic));
    }

    #[test]
    fn serde_round_trips() {
        let (subnet, ranges) = v4_setup();
        let json = serde_json::to_value(&subnet).unwrap();
        assert_eq!(json["cidr"], "10.0.0.0/24");
        assert_eq!(serde_json::from_value::<Subnet>(json).unwrap(), subnet);
        let json = serde_json::to_value(&ranges[1]).unwrap();
        assert_eq!(json["type"], "dynamic");
        assert_eq!(serde_json::from_value::<IpRange>(json).unwrap(), ranges[1]);

        let vlan: Vlan = serde_json::from_str(r#"{"id": 1, "fabric": 2, "vid": 10}"#).unwrap();
        assert_eq!(vlan.mtu, DEFAULT_MTU);
        assert!(!vlan.dhcp_on);

        let address = StaticAddress {
            id: StaticAddressId(3),
            subnet: SubnetId(1),
            ip: None,
            alloc_type: IpAddressType::Auto,
            interface: Some(InterfaceId(4)),
            hostname: None,
        };
        let json = serde_json::to_string(&address).unwrap();
        assert_eq!(
            serde_json::from_str::<StaticAddress>(&json).unwrap(),
            address
        );
    }

    /// A random small subnet with random disjoint ranges, all valid.
    #[derive(Debug, Clone)]
    struct Case {
        subnet: Subnet,
        ranges: Vec<IpRange>,
    }

    fn arb_case() -> impl Strategy<Value = Case> {
        (
            any::<bool>(),
            any::<u128>(),
            22u8..=30,
            112u8..=126,
            proptest::option::of(any::<u64>()),
            proptest::collection::vec(any::<u64>(), 0..10),
            proptest::collection::vec(any::<bool>(), 5),
        )
            .prop_map(|(v6, base, prefix4, prefix6, gateway, points, kinds)| {
                let cidr = if v6 {
                    IpNet::new(IpAddr::V6(Ipv6Addr::from(base)), prefix6)
                } else {
                    IpNet::new(IpAddr::V4(Ipv4Addr::from(base as u32)), prefix4)
                }
                .unwrap()
                .trunc();
                let span = Span::of(&cidr);
                let (first, last) = span.usable();
                let width = last - first + 1;
                let gateway_ip = gateway.map(|g| span.ip(first + u128::from(g) % width));
                let mut offsets: Vec<u128> = points
                    .iter()
                    .map(|&p| first + u128::from(p) % width)
                    .collect();
                offsets.sort_unstable();
                offsets.dedup();
                let ranges = offsets
                    .chunks_exact(2)
                    .enumerate()
                    .map(|(i, pair)| {
                        let mut range = IpRange {
                            id: IpRangeId(i as i64 + 1),
                            subnet: SubnetId(1),
                            kind: if kinds[i] {
                                IpRangeType::Dynamic
                            } else {
                                IpRangeType::Reserved
                            },
                            start: span.ip(pair[0]),
                            end: span.ip(pair[1]),
                            comment: String::new(),
                        };
                        if range.kind == IpRangeType::Dynamic
                            && gateway_ip.is_some_and(|g| range.contains(g))
                        {
                            range.kind = IpRangeType::Reserved;
                        }
                        range
                    })
                    .collect();
                let mut subnet = subnet(&cidr.to_string(), None);
                subnet.gateway_ip = gateway_ip;
                Case { subnet, ranges }
            })
    }

    fn addresses(subnet: &Subnet) -> impl Iterator<Item = IpAddr> {
        let span = Span::of(&subnet.cidr);
        (span.first..=span.last).map(move |v| span.ip(v))
    }

    /// The definition of "free for static assignment", address by address.
    fn statically_free(case: &Case, assigned: &HashSet<IpAddr>, ip: IpAddr) -> bool {
        let cidr = case.subnet.cidr;
        ip != cidr.network()
            && !(ip.is_ipv4() && ip == cidr.broadcast())
            && case.subnet.gateway_ip != Some(ip)
            && !case.ranges.iter().any(|r| r.contains(ip))
            && !assigned.contains(&ip)
    }

    fn dynamically_free(case: &Case, assigned: &HashSet<IpAddr>, ip: IpAddr) -> bool {
        case.ranges
            .iter()
            .any(|r| r.kind == IpRangeType::Dynamic && r.contains(ip))
            && case.subnet.gateway_ip != Some(ip)
            && !assigned.contains(&ip)
    }

    /// Brute-force lowest dynamic address: walks only the dynamic ranges, which
    /// stays cheap because the walk stops at the first free address.
    fn brute_dynamic(case: &Case, assigned: &HashSet<IpAddr>) -> Option<IpAddr> {
        let span = Span::of(&case.subnet.cidr);
        let mut dynamic: Vec<Interval> = case
            .ranges
            .iter()
            .filter(|r| r.kind == IpRangeType::Dynamic)
            .filter_map(|r| r.bounds(span.family))
            .collect();
        dynamic.sort_unstable();
        dynamic
            .into_iter()
            .flat_map(|(s, e)| s..=e)
            .map(|v| span.ip(v))
            .find(|&ip| dynamically_free(case, assigned, ip))
    }

    proptest! {
        #[test]
        fn allocation_never_collides(
            case in arb_case(),
            ops in proptest::collection::vec((0u8..4, any::<usize>()), 1..100),
        ) {
            prop_assert_eq!(case.subnet.validate(), Ok(()));
            for r in &case.ranges {
                prop_assert_eq!(validate_ip_range(&case.subnet, r, &case.ranges), Ok(()));
            }
            let small = Span::of(&case.subnet.cidr).size() <= 1024;
            let mut assigned: Vec<IpAddr> = Vec::new();
            let mut set: HashSet<IpAddr> = HashSet::new();
            for (op, index) in ops {
                if op == 0 {
                    if !assigned.is_empty() {
                        let released = assigned.swap_remove(index % assigned.len());
                        set.remove(&released);
                    }
                    continue;
                }
                match next_free_address(&case.subnet, &case.ranges, &assigned) {
                    Ok(ip) => {
                        prop_assert!(case.subnet.cidr.contains(&ip));
                        prop_assert!(statically_free(&case, &set, ip), "{} is not free", ip);
                        prop_assert_eq!(
                            check_static_address(&case.subnet, &case.ranges, &assigned, ip),
                            Ok(())
                        );
                        if small {
                            let lowest = addresses(&case.subnet)
                                .find(|&a| statically_free(&case, &set, a));
                            prop_assert_eq!(Some(ip), lowest);
                        }
                        assigned.push(ip);
                        set.insert(ip);
                    }
                    Err(IpamError::Exhausted { subnet }) => {
                        prop_assert_eq!(subnet, case.subnet.cidr);
                        prop_assert!(
                            !addresses(&case.subnet).any(|a| statically_free(&case, &set, a)),
                            "Exhausted although a free address exists"
                        );
                        let stats = subnet_statistics(&case.subnet, &case.ranges, &assigned);
                        prop_assert_eq!(stats.num_available, 0);
                    }
                    Err(other) => prop_assert!(false, "unexpected error {}", other),
                }
            }
        }

        #[test]
        fn dynamic_allocation_never_collides(
            case in arb_case(),
            ops in proptest::collection::vec((0u8..4, any::<usize>()), 1..100),
        ) {
            let mut assigned: Vec<IpAddr> = Vec::new();
            let mut set: HashSet<IpAddr> = HashSet::new();
            for (op, index) in ops {
                if op == 0 {
                    if !assigned.is_empty() {
                        let released = assigned.swap_remove(index % assigned.len());
                        set.remove(&released);
                    }
                    continue;
                }
                let expected = brute_dynamic(&case, &set);
                match next_free_dynamic_address(&case.subnet, &case.ranges, &assigned) {
                    Ok(ip) => {
                        prop_assert!(case.subnet.cidr.contains(&ip));
                        prop_assert!(dynamically_free(&case, &set, ip), "{} is not free", ip);
                        prop_assert!(!case
                            .ranges
                            .iter()
                            .any(|r| r.kind == IpRangeType::Reserved && r.contains(ip)));
                        prop_assert_eq!(Some(ip), expected);
                        assigned.push(ip);
                        set.insert(ip);
                    }
                    Err(IpamError::Exhausted { .. }) => prop_assert_eq!(expected, None),
                    Err(other) => prop_assert!(false, "unexpected error {}", other),
                }
            }
        }

        #[test]
        fn unreserved_ranges_match_brute_force(
            case in arb_case(),
            picks in proptest::collection::vec(any::<u64>(), 0..40),
        ) {
            let span = Span::of(&case.subnet.cidr);
            prop_assume!(span.size() <= 1024);
            let assigned: Vec<IpAddr> =
                picks.iter().map(|&p| span.ip(span.first + u128::from(p) % span.size())).collect();
            let set: HashSet<IpAddr> = assigned.iter().copied().collect();

            let mut expected: Vec<(IpAddr, IpAddr)> = Vec::new();
            let mut run: Option<(IpAddr, IpAddr)> = None;
            for a in addresses(&case.subnet) {
                if statically_free(&case, &set, a) {
                    run = Some(run.map_or((a, a), |(s, _)| (s, a)));
                } else if let Some(r) = run.take() {
                    expected.push(r);
                }
            }
            expected.extend(run);
            prop_assert_eq!(unreserved_ranges(&case.subnet, &case.ranges, &assigned), expected);

            let free = addresses(&case.subnet).filter(|&a| statically_free(&case, &set, a)).count();
            let stats = subnet_statistics(&case.subnet, &case.ranges, &assigned);
            prop_assert_eq!(stats.num_available, free as u128);
            prop_assert_eq!(stats.num_available + stats.num_unavailable, span.size());
        }
    }
}

/// A static route: machines with an address on `source` reach
/// `destination` through `gateway_ip` (an address on `source`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticRoute {
    /// Assigned by the store.
    pub id: crate::ids::StaticRouteId,
    /// The subnet the route is for.
    pub source: SubnetId,
    /// The subnet it leads to.
    pub destination: SubnetId,
    /// The next hop, inside `source`.
    pub gateway_ip: IpAddr,
    /// Route metric.
    pub metric: u32,
}

impl StaticRoute {
    /// Checks the route against its two subnets: different subnets of one
    /// IP family, the gateway inside the source.
    pub fn validate(&self, source: &Subnet, destination: &Subnet) -> Result<(), ValidationError> {
        if source.id == destination.id {
            return Err(ValidationError::new(
                "destination",
                destination.cidr.to_string(),
                "a route leads to another subnet than its source",
            ));
        }
        if source.cidr.addr().is_ipv4() != destination.cidr.addr().is_ipv4() {
            return Err(ValidationError::new(
                "destination",
                destination.cidr.to_string(),
                "the source and destination are of different IP families",
            ));
        }
        if !source.cidr.contains(&self.gateway_ip) {
            return Err(ValidationError::new(
                "gateway_ip",
                self.gateway_ip.to_string(),
                format!("not inside the source subnet {}", source.cidr),
            ));
        }
        Ok(())
    }
}
