//! # maas-dhcp
//!
//! A DHCPv4 server for provisioning networks: leases from dynamic ranges,
//! reservations and boot decisions from a [`HostLookup`], leases made durable
//! through a [`LeaseStore`] before the ACK, PXE / iPXE / UEFI boot options,
//! relayed requests (`giaddr`, option 82 echoed), replies addressed per
//! RFC 2131 section 4.1 and padded to 300 bytes.
//!
//! Malformed packets (including those that make dhcproto panic) are counted
//! and dropped; the server keeps serving.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use maas_dhcp::{DhcpConfig, DhcpHandler, MemoryLeaseStore, StaticHosts, SubnetConfig};
//!
//! let mut subnet = SubnetConfig::new(
//!     "10.99.0.0/24".parse()?,
//!     vec![("10.99.0.100".parse()?, "10.99.0.199".parse()?)],
//! );
//! subnet.router = Some("10.99.0.1".parse()?);
//! subnet.domain = Some("maas".into());
//! subnet.lease_time = Duration::from_secs(600);
//! let config = DhcpConfig::new("10.99.0.1".parse()?, vec![subnet]);
//! let handler = DhcpHandler::new(config, StaticHosts::default(), MemoryLeaseStore::default()).await?;
//! // Serve it: DhcpServer::bind_interface("br0", 67, handler)?.serve().await
//! # let _ = handler;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod config;
mod failover;
mod handler;
mod host;
mod lease;
mod neigh;
mod pool;
mod probe;
mod ra;
mod server;

use std::path::PathBuf;

pub use config::{DhcpConfig, FailoverConfig, FailoverRole, RateLimit, SubnetConfig};
pub use handler::{DhcpHandler, DhcpMetrics, Reply, precheck};
pub use host::{BootAnswer, BootClient, HostLookup, Reservation, StaticHosts};
pub use lease::{
    Durability, FileLeaseStore, Lease, LeaseState, LeaseStore, MemoryLeaseStore, now_secs,
};
pub use neigh::NeighbourTable;
pub use ra::{RouterAdvertConfig, build_router_advert, interface_prefixes, run_router_adverts};
pub use server::DhcpServer;

/// Why the DHCP server could not start or store a lease.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DhcpError {
    /// The configuration is inconsistent.
    #[error("invalid DHCP configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The socket could not be set up or failed.
    #[error("DHCP socket on {interface:?} failed")]
    Socket {
        /// The interface.
        interface: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The lease store failed.
    #[error("lease store {path} failed")]
    LeaseStore {
        /// Its file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
