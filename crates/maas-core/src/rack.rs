//! The rack protocol: what a rack controller and its region tell each other.
//!
//! A rack registers with the shared secret of the region and gets its own
//! credentials ([`RegionLink::register`]); it then long-polls its
//! configuration ([`RegionLink::config`]), which answers at once when the
//! rack's copy is stale and otherwise waits until something the rack serves
//! changes; it reports what it saw ([`RegionLink::report`]). The other
//! direction, power actions the region asks a rack to carry out, is
//! [`RackControl`].
//!
//! Both traits have an in-process implementation (the all-in-one `maas`
//! program: `maas-region` implements [`RegionLink`], `maas-rack`
//! implements [`RackControl`]); the network implementation carries the same
//! types as JSON over the region's HTTP port, which is why every type here
//! is serde-friendly and versioned by [`PROTOCOL_VERSION`].
//!
//! API Boundary: nothing here does I/O. The configuration is complete (a
//! rack never merges partial updates), so a rack that lost its region keeps
//! serving from the last copy it has.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use async_trait::async_trait;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::MacAddress;
use crate::SystemId;
use crate::lifecycle::NodeStatus;
use crate::machine::{Machine, PowerState};

/// The version of the messages below; a region refuses a rack that speaks
/// another one, naming both.
pub const PROTOCOL_VERSION: u32 = 1;

/// What a rack sends to register.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The rack's host name (its identity: registering again with the same
    /// name is the same rack, with fresh credentials).
    pub hostname: String,
    /// The region's shared secret (`maas init` writes it; MAAS keeps it in
    /// `/var/lib/maas/secret`). Secret: redacted in `Debug`.
    pub secret: String,
    /// [`PROTOCOL_VERSION`] of the rack.
    pub protocol: u32,
    /// The rack's software version, for `rackcontrollers/`.
    pub version: String,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("hostname", &self.hostname)
            .field("secret", &"<redacted>")
            .field("protocol", &self.protocol)
            .field("version", &self.version)
            .finish()
    }
}

/// What a registered rack uses from then on.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RackCredentials {
    /// The rack's system id (it is a node, as in MAAS).
    pub system_id: SystemId,
    /// Its token. Secret: redacted in `Debug`.
    pub token: String,
}

impl fmt::Debug for RackCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RackCredentials")
            .field("system_id", &self.system_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// The part a rack plays in a VLAN's DHCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DhcpRole {
    /// The VLAN's primary rack.
    Primary,
    /// The VLAN's secondary rack (takes over when the primary is gone).
    Secondary,
}

/// A subnet a rack serves DHCP on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedSubnet {
    /// The subnet.
    pub cidr: Ipv4Net,
    /// The VLAN's 802.1Q id.
    pub vid: u16,
    /// This rack's role on the VLAN.
    pub role: DhcpRole,
    /// The other rack of the VLAN, if it has two.
    pub peer: Option<SystemId>,
    /// The default gateway handed out.
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers handed out.
    pub dns: Vec<Ipv4Addr>,
    /// The DNS domain handed out.
    pub domain: String,
    /// The VLAN's MTU.
    pub mtu: u32,
    /// Dynamic ranges (first, last), inclusive.
    pub dynamic_ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
}

/// A known node that may network-boot through the rack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootHost {
    /// A MAC of one of its interfaces.
    pub mac: MacAddress,
    /// The machine.
    pub system_id: SystemId,
    /// Its host name.
    pub hostname: String,
    /// `amd64/generic`.
    pub architecture: String,
    /// Its status (which decides the boot purpose).
    pub status: NodeStatus,
    /// Whether it boots over the network; curtin turns it off before the
    /// reboot into the installed system.
    pub netboot: bool,
    /// A fixed address for this MAC (a sticky link), if any.
    pub ip: Option<Ipv4Addr>,
}

/// The operating system the ephemeral environment boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EphemeralImage {
    /// `ubuntu`.
    pub osystem: String,
    /// `noble`.
    pub release: String,
}

/// Everything a rack needs to serve: complete, never a delta.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RackConfig {
    /// Changes whenever anything below changes (a digest of the rest), so
    /// "is my copy current?" is one comparison.
    pub generation: u64,
    /// The subnets to serve DHCP on.
    pub subnets: Vec<ServedSubnet>,
    /// Known nodes by MAC.
    pub hosts: Vec<BootHost>,
    /// What the ephemeral environment boots.
    pub ephemeral: EphemeralImage,
}

impl RackConfig {
    /// A configuration whose `generation` is the digest of its content.
    pub fn sealed(
        subnets: Vec<ServedSubnet>,
        mut hosts: Vec<BootHost>,
        ephemeral: EphemeralImage,
    ) -> RackConfig {
        hosts.sort_by_key(|h| h.mac);
        let mut c = RackConfig {
            generation: 0,
            subnets,
            hosts,
            ephemeral,
        };
        // FNV-1a over the JSON: stable across processes and versions of
        // Rust (unlike `DefaultHasher`), so two regions agree.
        let bytes = serde_json::to_vec(&c).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        c.generation = h.max(1);
        c
    }

    /// The host with this MAC.
    pub fn host(&self, mac: MacAddress) -> Option<&BootHost> {
        self.hosts
            .binary_search_by(|h| h.mac.cmp(&mac))
            .ok()
            .map(|i| &self.hosts[i])
    }
}

/// Something a rack saw and tells its region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RackReport {
    /// A lease was given (or renewed).
    Lease {
        /// The client.
        mac: MacAddress,
        /// The address.
        ip: Ipv4Addr,
        /// The host name it sent, if any.
        hostname: Option<String>,
    },
    /// A client fetched a boot file or config.
    BootFetch {
        /// The client's MAC, when the path names it.
        mac: Option<MacAddress>,
        /// The client's address.
        peer: String,
        /// The path.
        path: String,
        /// `tftp` or `http`.
        protocol: String,
        /// What the config told the machine to do (`commissioning`,
        /// `installation`, `local boot`...), when it was a boot config.
        #[serde(default)]
        purpose: Option<String>,
    },
    /// The rack's health, sent now and then.
    Health {
        /// Services and whether they run (`dhcp`, `tftp`, `http`).
        services: Vec<(String, bool)>,
    },
}

/// Why the link to the region failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The shared secret or the rack's token was refused.
    #[error("the region refused the rack's credentials: {0}")]
    Unauthorized(String),
    /// The rack speaks another protocol version.
    #[error("protocol version {rack} is not spoken by this region (it speaks {region})")]
    Version {
        /// The rack's.
        rack: u32,
        /// The region's.
        region: u32,
    },
    /// The region cannot be reached or failed; try again later.
    #[error("the region is unavailable: {0}")]
    Unavailable(String),
}

/// What a rack asks of its region.
#[async_trait]
pub trait RegionLink: Send + Sync {
    /// Registers (or re-registers) the rack.
    async fn register(&self, registration: &Registration) -> Result<RackCredentials, LinkError>;

    /// The rack's configuration. With `known` the generation the rack
    /// holds, waits up to `wait` for a different one and returns the
    /// current configuration either way (a long poll).
    async fn config(
        &self,
        rack: &RackCredentials,
        known: Option<u64>,
        wait: Duration,
    ) -> Result<RackConfig, LinkError>;

    /// The node a MAC belongs to, as the region knows it now (`None`: an
    /// unknown MAC, which enlists). A rack asks this when it renders a boot
    /// config, as MAAS racks ask for each boot, so a machine rebooting
    /// right after a change (curtin's `netboot_off`) never gets a stale
    /// purpose; when the region does not answer, the rack uses its cached
    /// configuration.
    async fn boot_host(
        &self,
        rack: &RackCredentials,
        mac: MacAddress,
    ) -> Result<Option<BootHost>, LinkError>;

    /// Tells the region what the rack saw.
    async fn report(
        &self,
        rack: &RackCredentials,
        reports: Vec<RackReport>,
    ) -> Result<(), LinkError>;
}

/// A power action the region asks a rack to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerRequest {
    /// Switch on; a machine already on is left alone (the `power_on`
    /// operation).
    On,
    /// Start a network boot now: switch on, or power-cycle a machine that
    /// is already on (MAAS's drivers do the same when a workflow starts, so
    /// whatever the machine was running, an ephemeral environment about to
    /// power off included, cannot swallow the boot).
    Cycle,
    /// Switch off (hard).
    Off,
    /// Read the state.
    Query,
}

impl PowerRequest {
    /// `on`, `off`, `query`.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerRequest::On => "on",
            PowerRequest::Cycle => "cycle",
            PowerRequest::Off => "off",
            PowerRequest::Query => "query",
        }
    }
}

/// Why a rack could not carry out a power action.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RackError {
    /// No rack controller reaches this machine's BMC.
    #[error("no rack controller can reach the BMC of {0}")]
    NoRack(SystemId),
    /// The rack tried and the BMC or its driver failed.
    #[error("power {action} on {system_id} failed: {message}")]
    Failed {
        /// The machine.
        system_id: SystemId,
        /// The action.
        action: &'static str,
        /// What the rack reported.
        message: String,
    },
}

/// Power control through rack controllers: what a region asks of a rack.
#[async_trait]
pub trait RackControl: Send + Sync {
    /// Carries out `request` on `machine`'s BMC (its `power_type` and
    /// `power_parameters` name the driver and its settings) and returns the
    /// power state afterwards.
    async fn power(
        &self,
        machine: &Machine,
        request: PowerRequest,
    ) -> Result<PowerState, RackError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(mac: &str, status: NodeStatus) -> BootHost {
        BootHost {
            mac: MacAddress::parse(mac).expect("mac"),
            system_id: SystemId::parse("abc123").expect("id"),
            hostname: "n".into(),
            architecture: "amd64/generic".into(),
            status,
            netboot: true,
            ip: None,
        }
    }

    fn image() -> EphemeralImage {
        EphemeralImage {
            osystem: "ubuntu".into(),
            release: "noble".into(),
        }
    }

    #[test]
    fn the_generation_follows_the_content_and_not_the_order_of_hosts() {
        let a = host("52:54:00:00:00:01", NodeStatus::New);
        let b = host("52:54:00:00:00:02", NodeStatus::Ready);
        let one = RackConfig::sealed(vec![], vec![a.clone(), b.clone()], image());
        let two = RackConfig::sealed(vec![], vec![b.clone(), a.clone()], image());
        assert_eq!(one, two);
        let mut b2 = b;
        b2.status = NodeStatus::Deploying;
        let three = RackConfig::sealed(vec![], vec![a, b2], image());
        assert_ne!(one.generation, three.generation);
        assert_eq!(
            three
                .host(MacAddress::parse("52:54:00:00:00:02").expect("mac"))
                .map(|h| h.status),
            Some(NodeStatus::Deploying)
        );
        assert!(
            three
                .host(MacAddress::parse("52:54:00:00:00:03").expect("mac"))
                .is_none()
        );
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let r = Registration {
            hostname: "rack".into(),
            secret: "s3cr3t".into(),
            protocol: PROTOCOL_VERSION,
            version: "0.1".into(),
        };
        let c = RackCredentials {
            system_id: SystemId::parse("abc123").expect("id"),
            token: "t0k3n".into(),
        };
        let shown = format!("{r:?} {c:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("t0k3n"),
            "{shown}"
        );
    }
}
