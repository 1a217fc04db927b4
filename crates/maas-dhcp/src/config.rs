//! What the server serves: subnets, their ranges and options, failover and
//! flood limits.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ipnet::Ipv4Net;

use crate::DhcpError;

/// One subnet the server hands out addresses in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetConfig {
    /// The subnet.
    pub cidr: Ipv4Net,
    /// Dynamic ranges (inclusive) for clients without a reservation.
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Subnets with the same name here share one link (one VLAN with several
    /// subnets, ISC's `shared-network`): a client on the link gets an address
    /// from the first of them with one free.
    pub shared_network: Option<String>,
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 42.
    pub ntp: Vec<Ipv4Addr>,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 121, classless static routes (destination, gateway).
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Option 51; T1 and T2 are 1/2 and 7/8 of it.
    pub lease_time: Duration,
}

impl SubnetConfig {
    /// A subnet with `ranges`, a ten-minute lease and no options.
    pub fn new(cidr: Ipv4Net, ranges: Vec<(Ipv4Addr, Ipv4Addr)>) -> Self {
        SubnetConfig {
            cidr,
            ranges,
            shared_network: None,
            router: None,
            dns: Vec::new(),
            domain: None,
            ntp: Vec::new(),
            mtu: None,
            routes: Vec::new(),
            lease_time: Duration::from_secs(600),
        }
    }
}

/// Which half of a failover pair this server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverRole {
    /// Owns the lower half of every dynamic range.
    Primary,
    /// Owns the upper half of every dynamic range.
    Secondary,
}

/// Two servers for one VLAN that never hand out the same address.
///
/// The scheme: every dynamic range is split in two at its midpoint and each
/// server allocates only from its own half, so no address can be given by
/// both. Clients are load-balanced by a hash of their MAC into 256 buckets,
/// in the manner of RFC 3074: the primary answers DISCOVERs in buckets below
/// `split`, the secondary the rest. Each server sends a heartbeat datagram
/// to its peer every `heartbeat`; when nothing has come from the peer for
/// `peer_timeout`, or a client's `secs` field reaches `takeover_secs`, a
/// server answers every client, still from its own half. Renewals are
/// answered by the server whose half holds the address; with that server
/// down, rebinding clients are NAKed and come back with a DISCOVER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// This server's role.
    pub role: FailoverRole,
    /// Where this server listens for its peer's heartbeats.
    pub listen: SocketAddr,
    /// Where the peer listens.
    pub peer: SocketAddr,
    /// Buckets `0..split` belong to the primary (128 balances the load).
    pub split: u8,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Silence after which the peer is taken to be down.
    pub peer_timeout: Duration,
    /// A client whose `secs` field reaches this is answered whatever its
    /// bucket (RFC 3074 section 6).
    pub takeover_secs: u16,
}

impl FailoverConfig {
    /// Defaults: even split, heartbeat every second, peer down after three.
    pub fn new(role: FailoverRole, listen: SocketAddr, peer: SocketAddr) -> Self {
        FailoverConfig {
            role,
            listen,
            peer,
            split: 128,
            heartbeat: Duration::from_secs(1),
            peer_timeout: Duration::from_secs(3),
            takeover_secs: 10,
        }
    }
}

/// A token bucket per client MAC: a flood from one MAC is dropped and
/// counted instead of starving everybody else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages a MAC may send at once.
    pub burst: u32,
    /// Messages per second it earns back.
    pub per_second: u32,
}

impl Default for RateLimit {
    /// 20 at once, 10 per second: far above what a booting machine sends.
    fn default() -> Self {
        RateLimit {
            burst: 20,
            per_second: 10,
        }
    }
}

/// The server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// Our address on the served segment: the server identifier.
    pub server_ip: Ipv4Addr,
    /// Subnets served. A relayed request is served from the subnet holding
    /// its `giaddr` (and the subnets sharing its network); a local one from
    /// the subnet holding `server_ip` (and those sharing its network).
    pub subnets: Vec<SubnetConfig>,
    /// How long an offered address is held for the client that was offered it.
    pub offer_hold: Duration,
    /// Per-MAC flood limit; `None` turns it off.
    pub rate_limit: Option<RateLimit>,
    /// Failover with a peer; `None` for a lone server.
    pub failover: Option<FailoverConfig>,
    /// Before offering an address nobody held, send it an ICMP echo and wait
    /// this long for an answer; one that answers is set aside for a lease
    /// time and another is offered. `None` (the default) skips the probe.
    pub conflict_probe: Option<Duration>,
    /// The port replies to a relay (`giaddr`) go to: 67 on a real network;
    /// another for a relay that cannot bind 67 (an unprivileged simulated
    /// fleet on loopback).
    pub relay_port: u16,
}

impl DhcpConfig {
    /// A lone server with the default offer hold and rate limit.
    pub fn new(server_ip: Ipv4Addr, subnets: Vec<SubnetConfig>) -> Self {
        DhcpConfig {
            server_ip,
            subnets,
            offer_hold: Duration::from_secs(30),
            rate_limit: Some(RateLimit::default()),
            failover: None,
            conflict_probe: None,
            relay_port: 67,
        }
    }

    /// Checks what can be checked without the network: ranges inside their
    /// subnets and not overlapping, lease times, failover split.
    pub fn validate(&self) -> Result<(), DhcpError> {
        let bad = |reason: String| Err(DhcpError::Config { reason });
        let mut all: Vec<(u32, u32)> = Vec::new();
        for s in &self.subnets {
            if s.lease_time.as_secs() < 10 {
                return bad(format!("subnet {}: lease time under 10 seconds", s.cidr));
            }
            for &(a, b) in &s.ranges {
                if a > b || !s.cidr.contains(&a) || !s.cidr.contains(&b) {
                    return bad(format!("range {a}-{b} is not inside {}", s.cidr));
                }
                all.push((u32::from(a), u32::from(b)));
            }
        }
        all.sort_unstable();
        for w in all.windows(2) {
            if w[1].0 <= w[0].1 {
                return bad(format!(
                    "ranges overlap at {}",
                    Ipv4Addr::from(w[1].0.max(w[0].0))
                ));
            }
        }
        if let Some(f) = &self.failover
            && f.split == 0
        {
            return bad("failover split 0 gives the primary no clients".to_owned());
        }
        Ok(())
    }
}
