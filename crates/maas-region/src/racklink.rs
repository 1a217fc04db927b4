//! The region's side of the rack protocol ([`maas_core::rack`]), in
//! process: [`LocalRegionLink`] is what the all-in-one program's rack talks
//! to. The network variant carries the same calls over HTTP and ends in the
//! same [`Region`] methods.
//!
//! Racks are nodes of type 2 (as in MAAS) registered with the region's
//! shared secret; each gets a token named `rack:<system_id>` that a new
//! registration replaces. A rack's configuration is computed from the store
//! (the VLANs it is primary or secondary rack for, with DHCP on; every
//! machine's MACs, status and netboot flag) and long-polled: every request
//! that may change state wakes the waiting racks, which get an answer only
//! if their configuration's digest changed.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use maas_core::SystemId;
use maas_core::event::NewEvent;
use maas_core::machine::{LinkMode, Machine, NodeType};
use maas_core::network::IpRangeType;
use maas_core::rack::{
    BootHost, DhcpRole, EphemeralImage, LinkError, PROTOCOL_VERSION, RackConfig, RackCredentials,
    RackReport, RegionLink, Registration, ServedSubnet,
};
use maas_core::repo::{MachineFilter, RepositoryError};
use rand::RngCore;

use crate::{ApiError, Region, RegionError};

/// The settings-table name of the shared secret (not served by
/// `get_config`).
const SECRET_KEY: &str = "rpc_shared_secret";

/// How long a rack's configuration waits for more changes after one.
const CONFIG_SETTLE: Duration = Duration::from_millis(500);

fn unavailable(e: impl std::fmt::Display) -> LinkError {
    LinkError::Unavailable(e.to_string())
}

impl Region {
    /// The shared secret racks register with; made (64 hex digits) the
    /// first time it is asked for. `maas init` prints it for remote racks.
    pub async fn shared_secret(&self) -> Result<String, RegionError> {
        let stored = self.store().config_list().await?;
        if let Some(v) = stored.get(SECRET_KEY)
            && let Ok(s) = serde_json::from_str::<String>(v)
        {
            return Ok(s);
        }
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.store()
            .config_set(
                SECRET_KEY,
                &serde_json::to_string(&secret).unwrap_or_default(),
            )
            .await?;
        // Two regions starting at once: whichever write landed last wins,
        // and both read it back.
        let stored = self.store().config_list().await?;
        Ok(stored
            .get(SECRET_KEY)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or(secret))
    }

    /// Wakes every rack waiting for a configuration change (they recompute
    /// and answer only if their configuration changed).
    pub fn notify_change(&self) {
        self.inner.changes.notify_waiters();
    }

    /// The rack protocol, in process.
    pub fn rack_link(&self) -> LocalRegionLink {
        LocalRegionLink {
            region: self.clone(),
        }
    }

    async fn register_rack(&self, reg: &Registration) -> Result<RackCredentials, LinkError> {
        if reg.protocol != PROTOCOL_VERSION {
            return Err(LinkError::Version {
                rack: reg.protocol,
                region: PROTOCOL_VERSION,
            });
        }
        let secret = self.shared_secret().await.map_err(unavailable)?;
        if !crate::auth::constant_time_eq(secret.as_bytes(), reg.secret.as_bytes()) {
            tracing::warn!(rack = %reg.hostname, "rack registration with a wrong shared secret");
            return Err(LinkError::Unauthorized(
                "the shared secret does not match the region's".into(),
            ));
        }
        let hostname = maas_core::Hostname::parse(&reg.hostname)
            .map_err(|e| LinkError::Unauthorized(format!("hostname: {e}")))?;
        let existing = self
            .store()
            .machine_list(&MachineFilter {
                hostnames: vec![reg.hostname.clone()],
                racks: true,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let rack = match existing.into_iter().next() {
            Some(mut r) => {
                if r.description != reg.version {
                    r.description = reg.version.clone();
                    r = self.store().machine_update(&r).await.map_err(unavailable)?;
                }
                r
            }
            None => {
                let mut m = Machine::new(
                    SystemId::generate(&mut rand::rng()),
                    hostname,
                    maas_core::Architecture::amd64(),
                    chrono::Utc::now(),
                );
                m.node_type = NodeType::RackController;
                m.description = reg.version.clone();
                m.status = maas_core::lifecycle::NodeStatus::Deployed;
                // A controller has no machine lifecycle: stored as
                // Deployed, as MAAS shows its controllers.
                self.store()
                    .machine_import(std::slice::from_ref(&m))
                    .await
                    .map_err(unavailable)?;
                self.store()
                    .machine_get(&m.system_id)
                    .await
                    .map_err(unavailable)?
            }
        };
        let name = format!("rack:{}", rack.system_id);
        let node_user = self.inner.node_user.id;
        for t in self
            .store()
            .token_list(node_user)
            .await
            .map_err(unavailable)?
        {
            if t.name == name {
                self.store().token_delete(t.id).await.map_err(unavailable)?;
            }
        }
        let t = self
            .store()
            .token_create(node_user, &name)
            .await
            .map_err(unavailable)?;
        let _ = self
            .store()
            .event_append(&NewEvent::machine(
                &rack.system_id,
                "Rack registered",
                format!("rack {} registered (version {})", reg.hostname, reg.version),
            ))
            .await;
        self.inner.rack_contacts.touch(&rack.system_id);
        tracing::info!(rack = %reg.hostname, system_id = %rack.system_id, "rack registered");
        Ok(RackCredentials {
            system_id: rack.system_id,
            token: format!("{}:{}:{}", t.consumer_key, t.token_key, t.token_secret),
        })
    }

    pub(crate) async fn check_rack(&self, c: &RackCredentials) -> Result<(), LinkError> {
        let refused = || LinkError::Unauthorized("unknown rack token".into());
        let mut parts = c.token.splitn(3, ':');
        let (_, Some(key), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(refused());
        };
        let t = match self.store().token_get_by_key(key).await {
            Ok(t) => t,
            Err(RepositoryError::NotFound { .. }) => return Err(refused()),
            Err(e) => return Err(unavailable(e)),
        };
        if t.name != format!("rack:{}", c.system_id)
            || !crate::auth::constant_time_eq(t.token_secret.as_bytes(), secret.as_bytes())
        {
            return Err(refused());
        }
        self.inner.rack_contacts.touch(&c.system_id);
        Ok(())
    }

    /// The configuration of the rack `rack` as it stands.
    pub async fn rack_config(&self, rack: &SystemId) -> Result<RackConfig, ApiError> {
        let store = self.store();
        let me = rack.to_string();
        let vlans = store.vlan_list(None).await?;
        let subnets = store.subnet_list().await?;
        let ranges = store.subnet_ip_range_list(None).await?;
        let domain = self
            .default_domain()
            .await
            .unwrap_or_else(|_| "maas".into());
        let mut served = Vec::new();
        for v in vlans.iter().filter(|v| v.dhcp_on) {
            let role = if v.primary_rack.as_deref() == Some(me.as_str()) {
                DhcpRole::Primary
            } else if v.secondary_rack.as_deref() == Some(me.as_str()) {
                DhcpRole::Secondary
            } else {
                continue;
            };
            let peer = match role {
                DhcpRole::Primary => v.secondary_rack.as_deref(),
                DhcpRole::Secondary => v.primary_rack.as_deref(),
            }
            .and_then(|s| SystemId::parse(s).ok());
            for s in subnets.iter().filter(|s| s.vlan == v.id) {
                let IpNet::V4(cidr) = s.cidr else { continue };
                let v4 = |ip: &IpAddr| match ip {
                    IpAddr::V4(a) => Some(*a),
                    IpAddr::V6(_) => None,
                };
                let dynamic_ranges: Vec<(Ipv4Addr, Ipv4Addr)> = ranges
                    .iter()
                    .filter(|r| r.subnet == s.id && r.kind == IpRangeType::Dynamic)
                    .filter_map(|r| Some((v4(&r.start)?, v4(&r.end)?)))
                    .collect();
                served.push(ServedSubnet {
                    cidr,
                    vid: v.vid,
                    role,
                    peer: peer.clone(),
                    gateway: s.gateway_ip.as_ref().and_then(v4),
                    dns: s.dns_servers.iter().filter_map(v4).collect(),
                    domain: domain.clone(),
                    mtu: v.mtu,
                    dynamic_ranges,
                });
            }
        }
        let machines = store.machine_list(&MachineFilter::default()).await?;
        let hosts = machines.iter().flat_map(boot_hosts).collect();
        let text = |v: serde_json::Value, default: &str| {
            v.as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or(default)
                .to_owned()
        };
        let ephemeral = EphemeralImage {
            osystem: text(
                self.setting("commissioning_osystem")
                    .await
                    .unwrap_or_default(),
                "ubuntu",
            ),
            release: text(
                self.setting("commissioning_distro_series")
                    .await
                    .unwrap_or_default(),
                "noble",
            ),
        };
        Ok(RackConfig::sealed(served, hosts, ephemeral))
    }

    async fn record_reports(&self, rack: &SystemId, reports: Vec<RackReport>) {
        for r in reports {
            match r {
                RackReport::BootFetch {
                    mac: Some(mac),
                    path,
                    protocol,
                    purpose,
                    ..
                } => {
                    // A machine's boot config: MAAS's "PXE Request" event.
                    let Ok(Some(m)) = self.store().machine_get_by_mac(mac).await else {
                        continue;
                    };
                    let purpose = purpose.unwrap_or_else(|| m.status.label().to_owned());
                    let _ = self
                        .store()
                        .event_append(&NewEvent::machine(
                            &m.system_id,
                            "PXE Request",
                            format!("PXE Request - {purpose} ({protocol} {path} via rack {rack})"),
                        ))
                        .await;
                }
                RackReport::Lease { mac, ip, .. } => {
                    tracing::debug!(%rack, %mac, %ip, "lease reported");
                }
                RackReport::Health { services } => {
                    self.inner.rack_contacts.services(rack, services.clone());
                    for (name, up) in services {
                        if !up {
                            tracing::warn!(%rack, service = %name, "rack service down");
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// A machine's MACs as the rack sees them.
fn boot_hosts(m: &Machine) -> Vec<BootHost> {
    m.interfaces
        .iter()
        .filter_map(|i| {
            let mac = i.mac?;
            let ip = i.links.iter().find_map(|l| match (l.mode, l.ip) {
                (LinkMode::Static | LinkMode::Auto, Some(IpAddr::V4(a))) => Some(a),
                _ => None,
            });
            Some(BootHost {
                mac,
                system_id: m.system_id.clone(),
                hostname: m.hostname.to_string(),
                architecture: m.architecture.to_string(),
                status: m.status,
                netboot: m.netboot,
                ip,
            })
        })
        .collect()
}

/// [`RegionLink`] over a [`Region`] in the same process.
#[derive(Clone)]
pub struct LocalRegionLink {
    region: Region,
}

#[async_trait]
impl RegionLink for LocalRegionLink {
    async fn register(&self, registration: &Registration) -> Result<RackCredentials, LinkError> {
        self.region.register_rack(registration).await
    }

    async fn config(
        &self,
        rack: &RackCredentials,
        known: Option<u64>,
        wait: Duration,
    ) -> Result<RackConfig, LinkError> {
        self.region.check_rack(rack).await?;
        let until = tokio::time::Instant::now() + wait;
        // One configuration per rack per CONFIG_SETTLE at most: under
        // constant change a rack would otherwise get a fresh pass over every
        // machine as fast as it can ask.
        let pause = self
            .region
            .inner
            .rack_contacts
            .pace(&rack.system_id, CONFIG_SETTLE);
        tokio::time::sleep(pause).await;
        loop {
            // Listen before computing, so a change in between is not lost.
            let changed = self.region.inner.changes.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let config = self
                .region
                .rack_config(&rack.system_id)
                .await
                .map_err(unavailable)?;
            if Some(config.generation) != known {
                return Ok(config);
            }
            if tokio::time::timeout_at(until, changed).await.is_err() {
                return Ok(config);
            }
            // Let a burst of changes settle before recomputing: a
            // configuration is a pass over every machine, and boot decisions
            // do not wait for it (`boot_host` is asked live).
            tokio::time::sleep(CONFIG_SETTLE).await;
        }
    }

    async fn boot_host(
        &self,
        rack: &RackCredentials,
        mac: maas_core::MacAddress,
    ) -> Result<Option<BootHost>, LinkError> {
        self.region.check_rack(rack).await?;
        let Some(m) = self
            .region
            .store()
            .machine_get_by_mac(mac)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        if m.node_type != NodeType::Machine {
            return Ok(None);
        }
        Ok(boot_hosts(&m).into_iter().find(|h| h.mac == mac))
    }

    async fn report(
        &self,
        rack: &RackCredentials,
        reports: Vec<RackReport>,
    ) -> Result<(), LinkError> {
        self.region.check_rack(rack).await?;
        self.region.record_reports(&rack.system_id, reports).await;
        Ok(())
    }
}
