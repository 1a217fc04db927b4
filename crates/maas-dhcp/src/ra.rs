//! IPv6 router advertisements (RFC 4861) for provisioning segments.
//!
//! Why a DHCPv4 crate sends them: iPXE waits about 15 seconds for IPv6
//! autoconfiguration on a segment where nothing advertises, on every boot.
//! An advertisement that says "not a default router, these prefixes, no
//! DHCPv6" lets it move on at once. They are sent every `interval` and
//! promptly in answer to a router solicitation.

use std::io::Read;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::path::Path;
use std::time::{Duration, Instant};

use ipnet::Ipv6Net;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

use crate::DhcpError;

const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
/// RFC 4861 MIN_DELAY_BETWEEN_RAS: answers to solicitations are no closer.
const MIN_DELAY: Duration = Duration::from_secs(3);

/// What to advertise, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterAdvertConfig {
    /// The interface.
    pub interface: String,
    /// Unsolicited advertisement interval.
    pub interval: Duration,
    /// Router lifetime in seconds; 0 says "not a default router".
    pub router_lifetime: u16,
    /// M flag: addresses from DHCPv6.
    pub managed: bool,
    /// O flag: other configuration from DHCPv6.
    pub other: bool,
    /// On-link prefixes, with whether hosts may autoconfigure (SLAAC) in them.
    pub prefixes: Vec<(Ipv6Net, bool)>,
    /// MTU option.
    pub mtu: Option<u32>,
}

impl RouterAdvertConfig {
    /// Advertises the global prefixes configured on `interface`, not as a
    /// default router, without SLAAC or DHCPv6; `None` when the interface
    /// has no global IPv6 address (then nothing is sent: the default is on
    /// only where IPv6 is configured).
    pub fn from_interface(interface: &str) -> Option<Self> {
        let text = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
        let prefixes = interface_prefixes(&text, interface);
        (!prefixes.is_empty()).then(|| RouterAdvertConfig {
            interface: interface.to_owned(),
            interval: Duration::from_secs(60),
            router_lifetime: 0,
            managed: false,
            other: false,
            prefixes: prefixes.into_iter().map(|p| (p, false)).collect(),
            mtu: None,
        })
    }
}

/// The global prefixes of `interface` in `/proc/net/if_inet6` text
/// (`address ifindex prefixlen scope flags name`, scope 0 = global).
pub fn interface_prefixes(if_inet6: &str, interface: &str) -> Vec<Ipv6Net> {
    let mut v: Vec<Ipv6Net> = if_inet6
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() != 6 || f[5] != interface || f[3] != "00" {
                return None;
            }
            let n = u128::from_str_radix(f[0], 16).ok()?;
            let len = u8::from_str_radix(f[2], 16).ok()?;
            Ipv6Net::new(Ipv6Addr::from(n), len).ok().map(|n| n.trunc())
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The advertisement's ICMPv6 message (the kernel fills in the checksum).
pub fn build_router_advert(cfg: &RouterAdvertConfig, mac: Option<[u8; 6]>) -> Vec<u8> {
    let mut b = vec![ROUTER_ADVERTISEMENT, 0, 0, 0, 64];
    b.push(if cfg.managed { 0x80 } else { 0 } | if cfg.other { 0x40 } else { 0 });
    b.extend_from_slice(&cfg.router_lifetime.to_be_bytes());
    b.extend_from_slice(&[0; 8]); // reachable time, retransmit timer: unspecified
    if let Some(mac) = mac {
        b.extend_from_slice(&[1, 1]);
        b.extend_from_slice(&mac);
    }
    if let Some(mtu) = cfg.mtu {
        b.extend_from_slice(&[5, 1, 0, 0]);
        b.extend_from_slice(&mtu.to_be_bytes());
    }
    for (p, autonomous) in &cfg.prefixes {
        b.extend_from_slice(&[3, 4, p.prefix_len()]);
        b.push(0x80 | if *autonomous { 0x40 } else { 0 });
        b.extend_from_slice(&86_400u32.to_be_bytes()); // valid lifetime
        b.extend_from_slice(&14_400u32.to_be_bytes()); // preferred lifetime
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&p.network().octets());
    }
    b
}

fn sys(interface: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/sys/class/net").join(interface).join(file))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    v.try_into().ok()
}

/// Sends advertisements on `cfg.interface` until the task is dropped.
pub async fn run_router_adverts(cfg: RouterAdvertConfig) -> Result<(), DhcpError> {
    let io = |source| DhcpError::Socket {
        interface: cfg.interface.clone(),
        source,
    };
    let index: u32 = sys(&cfg.interface, "ifindex")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io(std::io::Error::other("no such interface")))?;
    let mac = sys(&cfg.interface, "address").and_then(|s| parse_mac(&s));
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).map_err(io)?;
    s.bind_device(Some(cfg.interface.as_bytes())).map_err(io)?;
    // RFC 4861 6.1.2: hosts drop advertisements whose hop limit is not 255.
    s.set_multicast_hops_v6(255).map_err(io)?;
    s.set_unicast_hops_v6(255).map_err(io)?;
    s.set_multicast_if_v6(index).map_err(io)?;
    s.set_multicast_loop_v6(false).map_err(io)?;
    s.join_multicast_v6(&ALL_ROUTERS, index).map_err(io)?;
    s.set_nonblocking(true).map_err(io)?;
    // The AsyncFd owns the socket, so nothing else can close the fd under
    // it (the I/O-safety gap that deprecated `new`); `register` is unsafe,
    // and this crate forbids unsafe code.
    #[allow(deprecated)]
    let fd = AsyncFd::new(s).map_err(io)?;
    let packet = build_router_advert(&cfg, mac);
    let to = SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, index));
    let send = |why: &str| {
        if let Err(e) = fd.get_ref().send_to(&packet, &to) {
            warn!(interface = %cfg.interface, error = %e, "router advertisement not sent");
        } else {
            debug!(interface = %cfg.interface, why, "router advertisement sent");
        }
    };
    info!(interface = %cfg.interface, prefixes = ?cfg.prefixes, "sending router advertisements");
    let mut tick = tokio::time::interval(cfg.interval);
    let mut last = Instant::now() - MIN_DELAY;
    let mut pending_answer = false;
    let mut buf = [0u8; 1500];
    loop {
        let delay = MIN_DELAY.saturating_sub(last.elapsed());
        tokio::select! {
            _ = tick.tick() => {
                send("periodic");
                last = Instant::now();
            }
            () = tokio::time::sleep(delay), if pending_answer => {
                send("solicited");
                last = Instant::now();
                pending_answer = false;
            }
            r = fd.readable() => {
                let mut guard = r.map_err(io)?;
                loop {
                    match guard.try_io(|s| {
                        // `Read for &Socket`: no uninitialised buffer needed.
                        let mut r: &Socket = s.get_ref();
                        r.read(&mut buf)
                    }) {
                        Ok(Ok(n)) => {
                            if n >= 8 && buf[0] == ROUTER_SOLICITATION && buf[1] == 0 {
                                pending_answer = true;
                            }
                        }
                        Ok(Err(e)) => return Err(io(e)),
                        Err(_would_block) => break,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_come_from_the_global_addresses_of_the_interface() {
        let text = "\
fd007700000000000000000000000001 03 40 00 80     eth0
fe80000000000000b4a1c2fffe0d0e0f 03 40 20 80     eth0
20010db8000000010000000000000005 04 40 00 80     eth1
fd007700000000000000000000000099 03 40 00 80     eth0
";
        let got = interface_prefixes(text, "eth0");
        assert_eq!(got, vec!["fd00:7700::/64".parse::<Ipv6Net>().unwrap()]);
    }

    #[test]
    fn the_advert_says_not_a_router_and_carries_the_options() {
        let cfg = RouterAdvertConfig {
            interface: "eth0".into(),
            interval: Duration::from_secs(60),
            router_lifetime: 0,
            managed: true,
            other: false,
            prefixes: vec![("fd00:77::/64".parse().unwrap(), true)],
            mtu: Some(1500),
        };
        let b = build_router_advert(&cfg, Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(&b[..8], &[134, 0, 0, 0, 64, 0x80, 0, 0]);
        assert_eq!(&b[16..24], &[1, 1, 2, 0, 0, 0, 0, 1]);
        assert_eq!(&b[24..32], &[5, 1, 0, 0, 0, 0, 0x05, 0xdc]);
        assert_eq!(&b[32..36], &[3, 4, 64, 0xc0]);
        assert_eq!(
            &b[48..64],
            &"fd00:77::".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(b.len(), 64);
    }
}
