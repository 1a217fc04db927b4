//! The TOML file, with every key documented in `dhcp-server.toml`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;
use maas_core::MacAddress;
use maas_dhcp::{
    DhcpConfig, Durability, FailoverConfig, FailoverRole, RateLimit, Reservation, StaticHosts,
    SubnetConfig,
};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    /// Serve on this interface (`SO_BINDTODEVICE`, 0.0.0.0:67).
    pub(crate) interface: Option<String>,
    /// Or on this address (relayed traffic only, unless 0.0.0.0).
    pub(crate) listen: Option<SocketAddr>,
    /// The server identifier: our address on the served segment.
    pub(crate) server_ip: Ipv4Addr,
    /// The lease file.
    pub(crate) lease_file: PathBuf,
    #[serde(default)]
    durability: DurabilityName,
    #[serde(default = "default_offer_hold")]
    offer_hold_secs: u64,
    conflict_probe_ms: Option<u64>,
    rate_limit: Option<RateLimitSection>,
    #[serde(default, rename = "subnet")]
    subnets: Vec<SubnetSection>,
    #[serde(default, rename = "reservation")]
    reservations: Vec<ReservationSection>,
    boot: Option<BootSection>,
    failover: Option<FailoverSection>,
    pub(crate) router_advertisements: Option<RaSection>,
}

/// `[router_advertisements]`: on by default in interface mode where the
/// interface has a global IPv6 address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RaSection {
    pub(crate) enabled: Option<bool>,
    pub(crate) interval_secs: Option<u64>,
    pub(crate) router_lifetime_secs: Option<u16>,
    pub(crate) managed: Option<bool>,
    pub(crate) other: Option<bool>,
    pub(crate) autonomous: Option<bool>,
    pub(crate) mtu: Option<u32>,
}

fn default_offer_hold() -> u64 {
    30
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum DurabilityName {
    #[default]
    Sync,
    Write,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitSection {
    enabled: Option<bool>,
    burst: Option<u32>,
    per_second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubnetSection {
    cidr: Ipv4Net,
    #[serde(default)]
    ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    shared_network: Option<String>,
    router: Option<Ipv4Addr>,
    #[serde(default)]
    dns: Vec<Ipv4Addr>,
    domain: Option<String>,
    #[serde(default)]
    ntp: Vec<Ipv4Addr>,
    mtu: Option<u16>,
    #[serde(default)]
    routes: Vec<(Ipv4Net, Ipv4Addr)>,
    #[serde(default = "default_lease_time")]
    lease_time_secs: u64,
}

fn default_lease_time() -> u64 {
    600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReservationSection {
    mac: String,
    ip: Ipv4Addr,
    hostname: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BootSection {
    next_server: Ipv4Addr,
    ipxe_script: Option<String>,
    /// Option-93 architecture code (as a string key) -> boot file or URL.
    #[serde(default)]
    files: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailoverSection {
    role: RoleName,
    listen: SocketAddr,
    peer: SocketAddr,
    split: Option<u8>,
    heartbeat_ms: Option<u64>,
    peer_timeout_ms: Option<u64>,
    takeover_secs: Option<u16>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RoleName {
    Primary,
    Secondary,
}

/// What the file turns into.
pub(crate) struct Loaded {
    pub(crate) file: File,
    pub(crate) config: DhcpConfig,
    pub(crate) hosts: StaticHosts,
    pub(crate) durability: Durability,
}

/// Reads and checks the file; errors name the file and the key.
pub(crate) fn load(path: &std::path::Path) -> Result<Loaded, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn parse(text: &str) -> Result<Loaded, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    if file.interface.is_some() == file.listen.is_some() {
        return Err("set exactly one of `interface` and `listen`".into());
    }
    if file.subnets.is_empty() {
        return Err("no `[[subnet]]`: nothing to serve".into());
    }
    let subnets = file
        .subnets
        .iter()
        .map(|s| SubnetConfig {
            cidr: s.cidr.trunc(),
            ranges: s.ranges.clone(),
            shared_network: s.shared_network.clone(),
            router: s.router,
            dns: s.dns.clone(),
            domain: s.domain.clone(),
            ntp: s.ntp.clone(),
            mtu: s.mtu,
            routes: s.routes.clone(),
            lease_time: Duration::from_secs(s.lease_time_secs),
        })
        .collect();
    let mut config = DhcpConfig::new(file.server_ip, subnets);
    config.offer_hold = Duration::from_secs(file.offer_hold_secs);
    config.conflict_probe = file
        .conflict_probe_ms
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis);
    if let Some(r) = &file.rate_limit {
        let d = RateLimit::default();
        config.rate_limit = (r.enabled != Some(false)).then(|| RateLimit {
            burst: r.burst.unwrap_or(d.burst),
            per_second: r.per_second.unwrap_or(d.per_second),
        });
    }
    if let Some(f) = &file.failover {
        let role = match f.role {
            RoleName::Primary => FailoverRole::Primary,
            RoleName::Secondary => FailoverRole::Secondary,
        };
        let mut fc = FailoverConfig::new(role, f.listen, f.peer);
        if let Some(s) = f.split {
            fc.split = s;
        }
        if let Some(ms) = f.heartbeat_ms {
            fc.heartbeat = Duration::from_millis(ms.max(10));
        }
        if let Some(ms) = f.peer_timeout_ms {
            fc.peer_timeout = Duration::from_millis(ms);
        }
        if let Some(s) = f.takeover_secs {
            fc.takeover_secs = s;
        }
        config.failover = Some(fc);
    }
    config.validate().map_err(|e| e.to_string())?;
    let mut hosts = StaticHosts::default();
    for (i, r) in file.reservations.iter().enumerate() {
        let mac = MacAddress::parse(&r.mac).map_err(|e| format!("reservation[{i}].mac: {e}"))?;
        if !config.subnets.iter().any(|s| s.cidr.contains(&r.ip)) {
            return Err(format!("reservation[{i}].ip: {} is in no subnet", r.ip));
        }
        hosts.reservations.insert(
            mac,
            Reservation {
                ip: r.ip,
                hostname: r.hostname.clone(),
            },
        );
    }
    if let Some(b) = &file.boot {
        hosts.next_server = Some(b.next_server);
        hosts.ipxe_file.clone_from(&b.ipxe_script);
        for (arch, f) in &b.files {
            let code: u16 = arch
                .parse()
                .map_err(|_| format!("boot.files: key {arch:?} is not an option-93 code"))?;
            hosts.boot_files.insert(code, f.clone());
        }
    }
    let durability = match file.durability {
        DurabilityName::Sync => Durability::Sync,
        DurabilityName::Write => Durability::Write,
    };
    Ok(Loaded {
        file,
        config,
        hosts,
        durability,
    })
}
