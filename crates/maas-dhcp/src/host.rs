//! What the server asks its owner: reservations and boot decisions.
//!
//! API Boundary: the rack implements [`HostLookup`] from region data;
//! [`StaticHosts`] serves people who run maas-dhcp alone.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use async_trait::async_trait;
use maas_core::MacAddress;

/// A fixed address for a MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The address.
    pub ip: Ipv4Addr,
    /// The host name given with it.
    pub hostname: Option<String>,
}

/// What a network-booting client told us about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootClient {
    /// Its MAC.
    pub mac: MacAddress,
    /// Option 93, the firmware's architecture code.
    pub arch: Option<u16>,
    /// Option 60 (`PXEClient:Arch:00007:UNDI:003000`, `HTTPClient...`).
    pub vendor_class: Option<String>,
    /// Option 77 says `iPXE`.
    pub ipxe: bool,
    /// Option 97, the client UUID, as hex.
    pub uuid: Option<String>,
}

/// Where a client boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootAnswer {
    /// `siaddr` and option 66: the TFTP server.
    pub next_server: Ipv4Addr,
    /// The boot file (option 67 and `file`): a TFTP path or, for HTTP boot
    /// and iPXE, a URL.
    pub filename: String,
}

/// Reservations and boot decisions.
#[async_trait]
pub trait HostLookup: Send + Sync + 'static {
    /// A reservation for this MAC, if any.
    async fn reservation(&self, mac: MacAddress) -> Option<Reservation>;
    /// The boot answer for a client that asked to network boot.
    async fn boot(&self, client: &BootClient) -> Option<BootAnswer>;
    /// Whether `ip` is reserved for some MAC, so it must not be handed out
    /// from a dynamic range. MAAS's IPAM keeps reservations out of dynamic
    /// ranges, so the default says no; implement it where they may overlap.
    async fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        let _ = ip;
        false
    }
}

/// Reservations from a table and boot files by architecture code.
#[derive(Debug, Clone, Default)]
pub struct StaticHosts {
    /// MAC -> reservation.
    pub reservations: HashMap<MacAddress, Reservation>,
    /// Option-93 code -> boot file.
    pub boot_files: HashMap<u16, String>,
    /// Boot file (usually a script URL) for clients whose user class is iPXE.
    pub ipxe_file: Option<String>,
    /// The TFTP server to name.
    pub next_server: Option<Ipv4Addr>,
}

#[async_trait]
impl HostLookup for StaticHosts {
    async fn reservation(&self, mac: MacAddress) -> Option<Reservation> {
        self.reservations.get(&mac).cloned()
    }

    async fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.reservations.values().any(|r| r.ip == ip)
    }

    async fn boot(&self, c: &BootClient) -> Option<BootAnswer> {
        let next_server = self.next_server?;
        let filename = if c.ipxe { self.ipxe_file.clone() } else { None }
            .or_else(|| c.arch.and_then(|a| self.boot_files.get(&a).cloned()))?;
        Some(BootAnswer {
            next_server,
            filename,
        })
    }
}
