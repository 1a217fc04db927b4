//! DHCP from the region's configuration: reservations and boot answers from
//! the cached [`RackConfig`], leases kept in a file (so a restarted rack
//! hands out nothing twice) and reported to the region, and the server
//! restarted with the new subnets when the subnets it serves change.

use std::net::{Ipv4Addr, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use maas_boot::{BootMethod, HttpUrl};
use maas_core::MacAddress;
use maas_core::rack::{DhcpRole, RackConfig, RackReport, ServedSubnet};
use maas_dhcp::{
    BootAnswer, BootClient, DhcpConfig, DhcpError, DhcpHandler, DhcpServer, FileLeaseStore,
    HostLookup, Lease, LeaseState, LeaseStore, Reservation, SubnetConfig,
};
use tokio::sync::watch;

use crate::{RackStats, Reporter};

/// Reservations and boot answers from the cached configuration.
pub(crate) struct RackHosts {
    pub(crate) config: watch::Receiver<Option<Arc<RackConfig>>>,
    pub(crate) address: Ipv4Addr,
    pub(crate) http_port: u16,
}

#[async_trait]
impl HostLookup for RackHosts {
    async fn reservation(&self, mac: MacAddress) -> Option<Reservation> {
        let c = self.config.borrow().clone()?;
        let h = c.host(mac)?;
        Some(Reservation {
            ip: h.ip?,
            hostname: Some(h.hostname.clone()),
        })
    }

    async fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        let c = self.config.borrow().clone();
        c.is_some_and(|c| c.hosts.iter().any(|h| h.ip == Some(ip)))
    }

    async fn boot(&self, client: &BootClient) -> Option<BootAnswer> {
        let method = BootMethod::from_dhcp(
            client.arch.unwrap_or(0),
            client.ipxe,
            client.vendor_class.as_deref().unwrap_or(""),
        )?;
        let rack = HttpUrl::parse(&format!("http://{}:{}/", self.address, self.http_port)).ok()?;
        Some(BootAnswer {
            next_server: self.address,
            filename: method.dhcp_filename(&rack),
        })
    }
}

/// A lease store that tells the region about every lease it keeps.
pub(crate) struct ReportingLeases {
    pub(crate) inner: FileLeaseStore,
    pub(crate) reports: Reporter,
}

#[async_trait]
impl LeaseStore for ReportingLeases {
    async fn load(&self) -> Result<Vec<Lease>, DhcpError> {
        self.inner.load().await
    }

    async fn commit(&self, leases: &[Lease]) -> Result<(), DhcpError> {
        self.inner.commit(leases).await?;
        for l in leases.iter().filter(|l| l.state == LeaseState::Active) {
            self.reports.send(RackReport::Lease {
                mac: l.mac,
                ip: l.ip,
                hostname: l.hostname.clone(),
            });
        }
        Ok(())
    }
}

/// The subnets this rack serves as primary (a secondary waits: failover
/// between racks is not wired yet).
fn served(c: &RackConfig) -> Vec<ServedSubnet> {
    c.subnets
        .iter()
        .filter(|s| s.role == DhcpRole::Primary && !s.dynamic_ranges.is_empty())
        .cloned()
        .collect()
}

fn dhcp_config(address: Ipv4Addr, relay_port: u16, subnets: &[ServedSubnet]) -> DhcpConfig {
    let subnets = subnets
        .iter()
        .map(|s| {
            let mut c = SubnetConfig::new(s.cidr, s.dynamic_ranges.clone());
            c.router = s.gateway;
            c.dns = s.dns.clone();
            c.domain = Some(s.domain.clone());
            c.mtu = u16::try_from(s.mtu).ok();
            c
        })
        .collect();
    let mut c = DhcpConfig::new(address, subnets);
    c.relay_port = relay_port;
    c
}

/// What the DHCP supervisor needs.
pub(crate) struct DhcpSetup {
    pub(crate) socket: StdUdpSocket,
    pub(crate) config: watch::Receiver<Option<Arc<RackConfig>>>,
    pub(crate) address: Ipv4Addr,
    pub(crate) relay_port: u16,
    pub(crate) http_port: u16,
    pub(crate) lease_file: PathBuf,
    pub(crate) reports: Reporter,
    pub(crate) stats: Arc<RackStats>,
    pub(crate) metrics: Arc<crate::Metrics>,
}

/// Runs DHCP on the socket for as long as the task lives, restarting the
/// server whenever the served subnets change.
pub(crate) async fn supervise(setup: DhcpSetup) {
    let DhcpSetup {
        socket,
        mut config,
        address,
        relay_port,
        http_port,
        lease_file,
        reports,
        stats,
        metrics,
    } = setup;
    let mut running: Option<(Vec<ServedSubnet>, tokio::task::JoinHandle<()>)> = None;
    loop {
        let want = config.borrow_and_update().as_deref().map(served);
        let same = match (&running, &want) {
            (Some((have, _)), Some(want)) => have == want,
            (None, None) => true,
            _ => false,
        };
        if !same {
            if let Some((_, task)) = running.take() {
                task.abort();
                let _ = task.await;
            }
            if let Some(subnets) = want.filter(|w| !w.is_empty()) {
                let cfg = dhcp_config(address, relay_port, &subnets);
                let hosts = RackHosts {
                    config: config.clone(),
                    address,
                    http_port,
                };
                let leases = ReportingLeases {
                    inner: FileLeaseStore::new(&lease_file),
                    reports: reports.clone(),
                };
                let started = async {
                    let handler = DhcpHandler::new(cfg, hosts, leases).await?;
                    let sock = socket
                        .try_clone()
                        .and_then(tokio::net::UdpSocket::from_std)
                        .map_err(|e| DhcpError::Socket {
                            interface: "rack".into(),
                            source: e,
                        })?;
                    Ok::<_, DhcpError>(DhcpServer::from_socket(sock, handler))
                }
                .await;
                match started {
                    Ok(server) => {
                        metrics
                            .dhcp
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(server.metrics());
                        tracing::info!(subnets = subnets.len(), "DHCP serving");
                        stats.bump(&stats.dhcp_restarts);
                        let task = tokio::spawn(async move {
                            if let Err(e) = server.serve().await {
                                tracing::error!(error = %e, "DHCP server stopped");
                            }
                        });
                        running = Some((subnets, task));
                    }
                    Err(e) => tracing::error!(error = %e, "cannot start DHCP with the new subnets"),
                }
            }
        }
        if config.changed().await.is_err() {
            break;
        }
    }
    if let Some((_, task)) = running {
        task.abort();
    }
}
