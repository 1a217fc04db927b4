//! The server: decode, decide, persist, reply.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dhcproto::v4::{self, DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use ipnet::Ipv4Net;
use maas_core::MacAddress;
use tokio::net::UdpSocket;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::DhcpError;
use crate::host::{BootClient, HostLookup};
use crate::lease::{Lease, LeaseState, LeaseStore, now_secs};

/// One subnet the server hands out addresses in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetConfig {
    /// The subnet.
    pub cidr: Ipv4Net,
    /// Dynamic ranges (inclusive) for clients without a reservation.
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
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
    /// Option 51; T1 and T2 are 1/2 and 7/8 of it.
    pub lease_time: Duration,
}

/// The server's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// Our address on the served segment: the server identifier.
    pub server_ip: Ipv4Addr,
    /// Subnets served. A relayed request is served from the subnet holding
    /// its `giaddr`; a local one from the subnet holding `server_ip`.
    pub subnets: Vec<SubnetConfig>,
    /// How long an offered address is held for the client that was offered it.
    pub offer_hold: Duration,
}

/// Counters, readable while the server runs.
#[derive(Debug, Default)]
pub struct DhcpMetrics {
    /// DISCOVERs handled.
    pub discover: AtomicU64,
    /// REQUESTs handled.
    pub request: AtomicU64,
    /// RELEASEs handled.
    pub release: AtomicU64,
    /// DECLINEs handled.
    pub decline: AtomicU64,
    /// INFORMs handled.
    pub inform: AtomicU64,
    /// OFFERs sent.
    pub offer: AtomicU64,
    /// ACKs sent.
    pub ack: AtomicU64,
    /// NAKs sent.
    pub nak: AtomicU64,
    /// Datagrams that did not decode (or made the decoder panic), dropped.
    pub malformed: AtomicU64,
    /// Well-formed messages ignored (wrong op, not for us, no subnet...).
    pub ignored: AtomicU64,
    /// Offers that found no free address.
    pub exhausted: AtomicU64,
}

struct Offer {
    ip: Ipv4Addr,
    until: u64,
}

/// The lease table and decision logic, with no socket: tests drive it with
/// dhcproto-built messages.
pub struct DhcpHandler<H: HostLookup, S: LeaseStore> {
    config: DhcpConfig,
    hosts: H,
    store: S,
    leases: HashMap<Ipv4Addr, Lease>,
    by_mac: HashMap<MacAddress, Ipv4Addr>,
    offers: HashMap<MacAddress, Offer>,
    metrics: Arc<DhcpMetrics>,
}

/// A reply and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The message, encoded and padded to at least 300 bytes.
    pub bytes: Vec<u8>,
    /// Destination per RFC 2131 section 4.1.
    pub to: SocketAddrV4,
    /// Message type (for tests and logs).
    pub kind: MessageType,
}

fn mac_of(m: &Message) -> Option<MacAddress> {
    let c = m.chaddr();
    (m.hlen() == 6 && c.len() >= 6).then(|| MacAddress([c[0], c[1], c[2], c[3], c[4], c[5]]))
}

fn text(opt: Option<&DhcpOption>) -> Option<String> {
    match opt {
        Some(DhcpOption::ClassIdentifier(b) | DhcpOption::UserClass(b)) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        _ => None,
    }
}

impl<H: HostLookup, S: LeaseStore> DhcpHandler<H, S> {
    /// A handler with the leases the store remembers.
    pub async fn new(config: DhcpConfig, hosts: H, store: S) -> Result<Self, DhcpError> {
        for s in &config.subnets {
            for &(a, b) in &s.ranges {
                if a > b || !s.cidr.contains(&a) || !s.cidr.contains(&b) {
                    return Err(DhcpError::Config {
                        reason: format!("range {a}-{b} is not inside {}", s.cidr),
                    });
                }
            }
        }
        let mut h = DhcpHandler {
            config,
            hosts,
            store,
            leases: HashMap::new(),
            by_mac: HashMap::new(),
            offers: HashMap::new(),
            metrics: Arc::default(),
        };
        for l in h.store.load().await? {
            if l.state == LeaseState::Active {
                h.by_mac.insert(l.mac, l.ip);
            }
            h.leases.insert(l.ip, l);
        }
        Ok(h)
    }

    /// The counters.
    pub fn metrics(&self) -> Arc<DhcpMetrics> {
        self.metrics.clone()
    }

    /// The current lease of an address.
    pub fn lease(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.leases.get(&ip)
    }

    fn subnet_for(&self, m: &Message) -> Option<&SubnetConfig> {
        let key = if m.giaddr() != Ipv4Addr::UNSPECIFIED {
            m.giaddr()
        } else {
            self.config.server_ip
        };
        self.config.subnets.iter().find(|s| s.cidr.contains(&key))
    }

    fn taken(&self, ip: Ipv4Addr, mac: MacAddress, now: u64) -> bool {
        self.leases
            .get(&ip)
            .is_some_and(|l| l.holds(now) && (l.mac != mac || l.state == LeaseState::Declined))
            || self
                .offers
                .iter()
                .any(|(m, o)| *m != mac && o.ip == ip && o.until > now)
            || ip == self.config.server_ip
    }

    fn in_ranges(s: &SubnetConfig, ip: Ipv4Addr) -> bool {
        s.ranges.iter().any(|&(a, b)| a <= ip && ip <= b)
    }

    /// Picks an address for `mac`: its reservation, its current or last
    /// lease, the one it asked for, or the lowest free one.
    async fn choose(
        &self,
        s: &SubnetConfig,
        mac: MacAddress,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<(Ipv4Addr, Option<String>)> {
        if let Some(r) = self.hosts.reservation(mac).await
            && s.cidr.contains(&r.ip)
        {
            return Some((r.ip, r.hostname));
        }
        if let Some(o) = self
            .offers
            .get(&mac)
            .filter(|o| o.until > now && Self::in_ranges(s, o.ip))
        {
            return Some((o.ip, None));
        }
        let previous = self.by_mac.get(&mac).copied().or_else(|| {
            self.leases
                .values()
                .filter(|l| l.mac == mac)
                .max_by_key(|l| l.expires)
                .map(|l| l.ip)
        });
        for ip in previous.into_iter().chain(requested) {
            if Self::in_ranges(s, ip) && !self.taken(ip, mac, now) {
                return Some((ip, None));
            }
        }
        for &(a, b) in &s.ranges {
            let (a, b) = (u32::from(a), u32::from(b));
            for n in a..=b {
                let ip = Ipv4Addr::from(n);
                if !self.taken(ip, mac, now) && !self.leases.get(&ip).is_some_and(|l| l.holds(now))
                {
                    return Some((ip, None));
                }
            }
        }
        None
    }

    /// Handles one datagram from `from`. `None`: nothing to send.
    pub async fn handle(&mut self, bytes: &[u8], from: SocketAddr) -> Option<Reply> {
        if let Err(why) = precheck(bytes) {
            self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
            debug!(%from, len = bytes.len(), why, "malformed DHCP packet dropped");
            return None;
        }
        // Belt and braces: dhcproto has panicked on malformed options before
        // (option 81, see `precheck`); a hostile packet must not stop the server.
        let decoded = std::panic::catch_unwind(|| Message::from_bytes(bytes));
        let m = match decoded {
            Ok(Ok(m)) => m,
            _ => {
                self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                debug!(%from, len = bytes.len(), "malformed DHCP packet dropped");
                return None;
            }
        };
        let (Some(mac), Opcode::BootRequest, Some(kind)) =
            (mac_of(&m), m.opcode(), m.opts().msg_type())
        else {
            self.metrics.ignored.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let span = info_span!("dhcp", %mac, xid = format_args!("{:08x}", m.xid()), ?kind);
        self.dispatch(&m, mac, kind).instrument(span).await
    }

    async fn dispatch(&mut self, m: &Message, mac: MacAddress, kind: MessageType) -> Option<Reply> {
        let now = now_secs();
        let Some(s) = self.subnet_for(m).cloned() else {
            self.metrics.ignored.fetch_add(1, Ordering::Relaxed);
            debug!(giaddr = %m.giaddr(), "no subnet for this request");
            return None;
        };
        let requested = match m.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        };
        let server_id = match m.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        };
        let hostname = match m.opts().get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) => Some(h.clone()),
            _ => None,
        };
        match kind {
            MessageType::Discover => {
                self.metrics.discover.fetch_add(1, Ordering::Relaxed);
                let Some((ip, _)) = self.choose(&s, mac, requested, now).await else {
                    self.metrics.exhausted.fetch_add(1, Ordering::Relaxed);
                    warn!(subnet = %s.cidr, "no free address to offer");
                    return None;
                };
                self.offers.insert(
                    mac,
                    Offer {
                        ip,
                        until: now + self.config.offer_hold.as_secs().max(1),
                    },
                );
                self.metrics.offer.fetch_add(1, Ordering::Relaxed);
                Some(self.reply(m, &s, MessageType::Offer, ip, mac).await)
            }
            MessageType::Request => {
                self.metrics.request.fetch_add(1, Ordering::Relaxed);
                if let Some(id) = server_id
                    && id != self.config.server_ip
                {
                    // The client chose another server's offer.
                    self.offers.remove(&mac);
                    return None;
                }
                let wanted = if m.ciaddr() != Ipv4Addr::UNSPECIFIED {
                    Some(m.ciaddr())
                } else {
                    requested
                };
                let Some(wanted) = wanted else {
                    return Some(self.nak(m, "no address requested"));
                };
                if !s.cidr.contains(&wanted) {
                    return Some(self.nak(m, "address is not on this subnet"));
                }
                let reservation = self.hosts.reservation(mac).await;
                let ok = match &reservation {
                    Some(r) => r.ip == wanted,
                    None => Self::in_ranges(&s, wanted) && !self.taken(wanted, mac, now),
                };
                if !ok {
                    // Init-reboot for an address we know nothing of: stay
                    // silent so another server may answer (RFC 2131 4.3.2).
                    if server_id.is_none()
                        && m.ciaddr() == Ipv4Addr::UNSPECIFIED
                        && !self.leases.contains_key(&wanted)
                        && reservation.is_none()
                    {
                        self.metrics.ignored.fetch_add(1, Ordering::Relaxed);
                        return None;
                    }
                    return Some(self.nak(m, "address not available"));
                }
                let lease = Lease {
                    ip: wanted,
                    mac,
                    hostname: reservation.and_then(|r| r.hostname).or(hostname),
                    expires: now + s.lease_time.as_secs(),
                    state: LeaseState::Active,
                };
                if let Err(e) = self.store.commit(&lease).await {
                    // No durable lease, no ACK: the client retries.
                    warn!(error = %e, "lease not stored; not acknowledging");
                    return None;
                }
                if let Some(old) = self.by_mac.insert(mac, wanted)
                    && old != wanted
                {
                    self.leases.remove(&old);
                }
                self.leases.insert(wanted, lease);
                self.offers.remove(&mac);
                self.metrics.ack.fetch_add(1, Ordering::Relaxed);
                info!(ip = %wanted, "lease");
                Some(self.reply(m, &s, MessageType::Ack, wanted, mac).await)
            }
            MessageType::Release | MessageType::Decline => {
                let declined = kind == MessageType::Decline;
                let ip = if declined {
                    requested
                } else {
                    Some(m.ciaddr())
                };
                let (counter, state, until) = if declined {
                    (
                        &self.metrics.decline,
                        LeaseState::Declined,
                        now + s.lease_time.as_secs(),
                    )
                } else {
                    (&self.metrics.release, LeaseState::Released, now)
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let ip = ip?;
                if self.leases.get(&ip).is_none_or(|l| l.mac != mac) {
                    return None;
                }
                let lease = Lease {
                    ip,
                    mac,
                    hostname: None,
                    expires: until,
                    state,
                };
                if self.store.commit(&lease).await.is_ok() {
                    self.leases.insert(ip, lease);
                    self.by_mac.remove(&mac);
                }
                info!(%ip, ?state, "lease ended");
                None
            }
            MessageType::Inform => {
                self.metrics.inform.fetch_add(1, Ordering::Relaxed);
                let mut r = self
                    .reply(m, &s, MessageType::Ack, Ipv4Addr::UNSPECIFIED, mac)
                    .await;
                r.to = SocketAddrV4::new(m.ciaddr(), 68);
                Some(r)
            }
            _ => {
                self.metrics.ignored.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn destination(m: &Message) -> SocketAddrV4 {
        if m.giaddr() != Ipv4Addr::UNSPECIFIED {
            SocketAddrV4::new(m.giaddr(), 67)
        } else if m.ciaddr() != Ipv4Addr::UNSPECIFIED {
            SocketAddrV4::new(m.ciaddr(), 68)
        } else {
            // A client without an address: broadcast (unicasting to yiaddr
            // would need an ARP entry written with an ioctl).
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
        }
    }

    fn base(&self, m: &Message, kind: MessageType, yiaddr: Ipv4Addr) -> Message {
        let mut r = Message::new_with_id(
            m.xid(),
            Ipv4Addr::UNSPECIFIED,
            yiaddr,
            Ipv4Addr::UNSPECIFIED,
            m.giaddr(),
            &m.chaddr()[..usize::from(m.hlen().min(16))],
        );
        r.set_opcode(Opcode::BootReply)
            .set_flags(m.flags())
            .set_hops(0);
        if kind == MessageType::Ack && m.ciaddr() != Ipv4Addr::UNSPECIFIED {
            r.set_ciaddr(m.ciaddr());
        }
        r.opts_mut().insert(DhcpOption::MessageType(kind));
        r.opts_mut()
            .insert(DhcpOption::ServerIdentifier(self.config.server_ip));
        if let Some(opt82 @ DhcpOption::RelayAgentInformation(_)) =
            m.opts().get(OptionCode::RelayAgentInformation)
        {
            r.opts_mut().insert(opt82.clone());
        }
        r
    }

    fn nak(&self, m: &Message, why: &str) -> Reply {
        self.metrics.nak.fetch_add(1, Ordering::Relaxed);
        debug!(why, "NAK");
        let mut r = self.base(m, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
        r.opts_mut().insert(DhcpOption::Message(why.to_owned()));
        // A NAK is broadcast unless relayed (RFC 2131 4.1).
        let to = if m.giaddr() != Ipv4Addr::UNSPECIFIED {
            SocketAddrV4::new(m.giaddr(), 67)
        } else {
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
        };
        Reply {
            bytes: encode(&r),
            to,
            kind: MessageType::Nak,
        }
    }

    async fn reply(
        &self,
        m: &Message,
        s: &SubnetConfig,
        kind: MessageType,
        ip: Ipv4Addr,
        mac: MacAddress,
    ) -> Reply {
        let mut r = self.base(m, kind, ip);
        let o = r.opts_mut();
        if kind != MessageType::Ack || ip != Ipv4Addr::UNSPECIFIED {
            let t = u32::try_from(s.lease_time.as_secs()).unwrap_or(u32::MAX);
            o.insert(DhcpOption::AddressLeaseTime(t));
            o.insert(DhcpOption::Renewal(t / 2));
            o.insert(DhcpOption::Rebinding(t / 8 * 7));
        }
        o.insert(DhcpOption::SubnetMask(s.cidr.netmask()));
        o.insert(DhcpOption::BroadcastAddr(s.cidr.broadcast()));
        if let Some(gw) = s.router {
            o.insert(DhcpOption::Router(vec![gw]));
        }
        if !s.dns.is_empty() {
            o.insert(DhcpOption::DomainNameServer(s.dns.clone()));
        }
        if let Some(d) = &s.domain {
            o.insert(DhcpOption::DomainName(d.clone()));
        }
        if !s.ntp.is_empty() {
            o.insert(DhcpOption::NtpServers(s.ntp.clone()));
        }
        if let Some(mtu) = s.mtu {
            o.insert(DhcpOption::InterfaceMtu(mtu));
        }
        if let Some(h) = self
            .leases
            .get(&ip)
            .and_then(|l| l.hostname.clone())
            .filter(|_| kind == MessageType::Ack)
        {
            o.insert(DhcpOption::Hostname(h));
        }
        let vendor = text(m.opts().get(OptionCode::ClassIdentifier));
        let ipxe = text(m.opts().get(OptionCode::UserClass)).is_some_and(|u| u.contains("iPXE"));
        let arch = match m.opts().get(OptionCode::ClientSystemArchitecture) {
            Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
            _ => None,
        };
        let uuid = match m.opts().get(OptionCode::ClientMachineIdentifier) {
            Some(DhcpOption::ClientMachineIdentifier(b)) => {
                Some(b.iter().map(|x| format!("{x:02x}")).collect())
            }
            _ => None,
        };
        let netboot = arch.is_some()
            || ipxe
            || vendor
                .as_deref()
                .is_some_and(|v| v.starts_with("PXEClient") || v.starts_with("HTTPClient"));
        if netboot {
            let client = BootClient {
                mac,
                arch,
                vendor_class: vendor.clone(),
                ipxe,
                uuid,
            };
            if let Some(b) = self.hosts.boot(&client).await {
                r.set_siaddr(b.next_server);
                if b.filename.len() < 128 {
                    r.set_fname_str(&b.filename);
                }
                let o = r.opts_mut();
                o.insert(DhcpOption::TFTPServerName(
                    b.next_server.to_string().into_bytes(),
                ));
                o.insert(DhcpOption::BootfileName(b.filename.into_bytes()));
                if let Some(v) =
                    vendor.filter(|v| v.starts_with("PXEClient") || v.starts_with("HTTPClient"))
                {
                    let class = if v.starts_with("HTTPClient") {
                        "HTTPClient"
                    } else {
                        "PXEClient"
                    };
                    o.insert(DhcpOption::ClassIdentifier(class.as_bytes().to_vec()));
                }
                if ipxe {
                    // iPXE encapsulated options: no-pxedhcp (176) = 1, so iPXE
                    // does not wait for ProxyDHCP offers.
                    o.insert(DhcpOption::Unknown(v4::UnknownOption::new(
                        OptionCode::from(175),
                        vec![176, 1, 1],
                    )));
                }
            }
        }
        Reply {
            bytes: encode(&r),
            to: Self::destination(m),
            kind,
        }
    }
}

/// Checks the framing dhcproto trusts: the fixed header, the magic cookie,
/// and every option's length within the packet. dhcproto 0.15 panics on a
/// client-FQDN option (81) shorter than 3 bytes in debug builds and misparses
/// it in release builds, so that length is checked here too.
pub fn precheck(b: &[u8]) -> Result<(), &'static str> {
    const HEADER: usize = 236;
    if b.len() < HEADER + 4 {
        return Err("shorter than the BOOTP header and magic cookie");
    }
    if b[HEADER..HEADER + 4] != [99, 130, 83, 99] {
        return Err("no DHCP magic cookie");
    }
    if b[2] > 16 {
        return Err("hardware address length over 16");
    }
    let mut i = HEADER + 4;
    while i < b.len() {
        match b[i] {
            0 => i += 1,
            255 => return Ok(()),
            code => {
                let Some(&len) = b.get(i + 1) else {
                    return Err("option without a length");
                };
                let len = usize::from(len);
                if i + 2 + len > b.len() {
                    return Err("option longer than the packet");
                }
                if code == 81 && len < 3 {
                    return Err("client FQDN option shorter than 3 bytes");
                }
                i += 2 + len;
            }
        }
    }
    Err("no END option")
}

/// Encodes a reply, padded to the 300-byte BOOTP minimum some clients need.
fn encode(m: &Message) -> Vec<u8> {
    let mut b = m.to_vec().unwrap_or_default();
    if b.len() < 300 {
        b.resize(300, 0);
    }
    b
}

/// Serves DHCP on a socket bound to port 67.
pub struct DhcpServer<H: HostLookup, S: LeaseStore> {
    socket: UdpSocket,
    handler: DhcpHandler<H, S>,
}

impl<H: HostLookup, S: LeaseStore> DhcpServer<H, S> {
    /// Binds `0.0.0.0:port` on `interface` (`SO_BINDTODEVICE`) with
    /// broadcast allowed.
    pub fn bind_interface(
        interface: &str,
        port: u16,
        handler: DhcpHandler<H, S>,
    ) -> Result<Self, DhcpError> {
        use socket2::{Domain, Protocol, Socket, Type};
        let io = |source| DhcpError::Socket {
            interface: interface.to_owned(),
            source,
        };
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(io)?;
        s.set_reuse_address(true).map_err(io)?;
        s.set_broadcast(true).map_err(io)?;
        s.bind_device(Some(interface.as_bytes())).map_err(io)?;
        s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())
            .map_err(io)?;
        s.set_nonblocking(true).map_err(io)?;
        let socket = UdpSocket::from_std(s.into()).map_err(io)?;
        Ok(DhcpServer { socket, handler })
    }

    /// Serves on an already-bound socket (broadcast must be enabled on it).
    pub fn from_socket(socket: UdpSocket, handler: DhcpHandler<H, S>) -> Self {
        DhcpServer { socket, handler }
    }

    /// The counters.
    pub fn metrics(&self) -> Arc<DhcpMetrics> {
        self.handler.metrics()
    }

    /// Serves until the task is dropped.
    pub async fn serve(mut self) -> Result<(), DhcpError> {
        let mut buf = vec![0u8; 1500];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(v) => v,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(source) => {
                    return Err(DhcpError::Socket {
                        interface: String::new(),
                        source,
                    });
                }
            };
            if let Some(r) = self.handler.handle(&buf[..n], from).await
                && let Err(e) = self.socket.send_to(&r.bytes, r.to).await
            {
                warn!(to = %r.to, error = %e, "reply not sent");
            }
        }
    }
}
