//! The decision logic: decode, decide, persist in batches, reply. No socket.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dhcproto::v4::{self, DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use maas_core::MacAddress;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::DhcpError;
use crate::config::{DhcpConfig, RateLimit, SubnetConfig};
use crate::failover::{Peer, bucket};
use crate::host::{BootClient, HostLookup};
use crate::lease::{Lease, LeaseState, LeaseStore, now_secs};
use crate::pool::Pool;
use crate::probe::IcmpProbe;

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
    /// ACKs sent (INFORM answers included).
    pub ack: AtomicU64,
    /// NAKs sent.
    pub nak: AtomicU64,
    /// Datagrams that did not decode (or made the decoder panic), dropped.
    pub malformed: AtomicU64,
    /// Well-formed messages ignored (wrong op, not for us, no subnet...).
    pub ignored: AtomicU64,
    /// Messages dropped by the per-MAC rate limit.
    pub rate_limited: AtomicU64,
    /// Messages left to the failover peer (its bucket or its half of a range).
    pub peer_clients: AtomicU64,
    /// Offers that found no free address.
    pub exhausted: AtomicU64,
    /// Addresses the conflict probe found in use and set aside.
    pub conflicts: AtomicU64,
    /// ACKs not sent because the lease store failed.
    pub store_failed: AtomicU64,
    /// Replies unicast to a client's new address after writing its
    /// neighbour (ARP) entry.
    pub unicast_arp: AtomicU64,
    /// Replies broadcast because the neighbour entry could not be written
    /// (no capability, table full) or the server has no neighbour table.
    pub arp_fallback: AtomicU64,
    /// Leases that hold now (refreshed about once a second by the server).
    pub active_leases: AtomicU64,
    /// Addresses this server could still hand out (refreshed with `active_leases`).
    pub free_addresses: AtomicU64,
}

impl DhcpMetrics {
    /// `(name, value)` pairs in a stable order, for exporters and logs.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let f = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("discover", f(&self.discover)),
            ("request", f(&self.request)),
            ("release", f(&self.release)),
            ("decline", f(&self.decline)),
            ("inform", f(&self.inform)),
            ("offer", f(&self.offer)),
            ("ack", f(&self.ack)),
            ("nak", f(&self.nak)),
            ("malformed", f(&self.malformed)),
            ("ignored", f(&self.ignored)),
            ("rate_limited", f(&self.rate_limited)),
            ("peer_clients", f(&self.peer_clients)),
            ("exhausted", f(&self.exhausted)),
            ("conflicts", f(&self.conflicts)),
            ("store_failed", f(&self.store_failed)),
            ("unicast_arp", f(&self.unicast_arp)),
            ("arp_fallback", f(&self.arp_fallback)),
            ("active_leases", f(&self.active_leases)),
            ("free_addresses", f(&self.free_addresses)),
        ]
    }
}

struct Offer {
    ip: Ipv4Addr,
    until: u64,
}

struct Tokens {
    left: f64,
    at: Instant,
}

/// A reply and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The message, encoded and padded to at least 300 bytes.
    pub bytes: Vec<u8>,
    /// Destination per RFC 2131 section 4.1.
    pub to: SocketAddrV4,
    /// Set when `to` is the client's new address and the client holds none
    /// yet (no relay, no `ciaddr`, no broadcast flag): its Ethernet address.
    /// The sender must first map `to` to it in the neighbour (ARP) table, as
    /// the client cannot answer ARP for an address it does not have, or else
    /// send to 255.255.255.255 instead. [`crate::DhcpServer`] does one or the
    /// other.
    pub link_address: Option<[u8; 6]>,
    /// Message type (for tests and logs).
    pub kind: MessageType,
}

/// What one message led to: maybe a reply, maybe lease records that must be
/// durable before the reply leaves.
#[derive(Default)]
struct Decision {
    reply: Option<Reply>,
    commits: Vec<Lease>,
}

impl Decision {
    fn reply(r: Reply) -> Self {
        Decision {
            reply: Some(r),
            commits: Vec::new(),
        }
    }
}

/// The lease table and decision logic, with no socket: tests drive it with
/// dhcproto-built messages.
///
/// Messages are handled in batches ([`DhcpHandler::handle_batch`]): every
/// decision of a batch is made in memory, the batch's lease records are made
/// durable with one [`LeaseStore::commit`] (one `fdatasync` for the file
/// store), and only then are the replies released. Group commit is what
/// lets a server that syncs every lease keep up with a flood of clients.
pub struct DhcpHandler<H: HostLookup, S: LeaseStore> {
    config: DhcpConfig,
    hosts: H,
    store: S,
    leases: HashMap<Ipv4Addr, Lease>,
    /// The last address each MAC held (kept after release or expiry, so a
    /// returning client gets its address back when it is still free).
    by_mac: HashMap<MacAddress, Ipv4Addr>,
    offers: HashMap<MacAddress, Offer>,
    offered: HashMap<Ipv4Addr, MacAddress>,
    pool: Pool,
    limiter: HashMap<MacAddress, Tokens>,
    peer: Option<Arc<Peer>>,
    probe: Option<IcmpProbe>,
    /// Addresses found in use by the probe, set aside until the time given.
    conflicts: HashMap<Ipv4Addr, u64>,
    last_sweep: u64,
    metrics: Arc<DhcpMetrics>,
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

fn client_uuid(m: &Message) -> Option<String> {
    match m.opts().get(OptionCode::ClientMachineIdentifier) {
        Some(DhcpOption::ClientMachineIdentifier(b)) => {
            Some(b.iter().map(|x| format!("{x:02x}")).collect())
        }
        _ => None,
    }
}

impl<H: HostLookup, S: LeaseStore> DhcpHandler<H, S> {
    /// A handler with the leases the store remembers.
    pub async fn new(config: DhcpConfig, hosts: H, store: S) -> Result<Self, DhcpError> {
        config.validate()?;
        let role = config.failover.as_ref().map(|f| f.role);
        let ranges: Vec<_> = config
            .subnets
            .iter()
            .flat_map(|s| s.ranges.iter().copied())
            .collect();
        let peer = config
            .failover
            .as_ref()
            .map(|f| Arc::new(Peer::new(f.peer_timeout)));
        let probe = match config.conflict_probe {
            Some(_) => Some(IcmpProbe::new().map_err(|source| DhcpError::Socket {
                interface: "ICMP conflict probe".into(),
                source,
            })?),
            None => None,
        };
        let mut h = DhcpHandler {
            probe,
            conflicts: HashMap::new(),
            pool: Pool::new(&ranges, role),
            config,
            hosts,
            store,
            leases: HashMap::new(),
            by_mac: HashMap::new(),
            offers: HashMap::new(),
            offered: HashMap::new(),
            limiter: HashMap::new(),
            peer,
            last_sweep: 0,
            metrics: Arc::default(),
        };
        let now = now_secs();
        for l in h.store.load().await? {
            if l.holds(now) {
                h.pool.take(l.ip);
            }
            h.by_mac.insert(l.mac, l.ip);
            h.leases.insert(l.ip, l);
        }
        h.pool.take(h.config.server_ip);
        h.refresh_gauges();
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

    pub(crate) fn failover_peer(&self) -> Option<(crate::FailoverConfig, Arc<Peer>)> {
        Some((self.config.failover.clone()?, self.peer.clone()?))
    }

    /// Recomputes the lease and free-address gauges (O(leases)).
    pub fn refresh_gauges(&self) {
        let now = now_secs();
        let active = self.leases.values().filter(|l| l.holds(now)).count();
        self.metrics
            .active_leases
            .store(active as u64, Ordering::Relaxed);
        self.metrics
            .free_addresses
            .store(self.pool.free_count() as u64, Ordering::Relaxed);
    }

    /// The subnets a message may be served from: the one holding its
    /// `giaddr` (or our address, for a local client) first, then those on the
    /// same shared network.
    fn network_for(&self, m: &Message) -> Vec<usize> {
        let key = if m.giaddr() != Ipv4Addr::UNSPECIFIED {
            m.giaddr()
        } else {
            self.config.server_ip
        };
        let subnets = &self.config.subnets;
        let Some(first) = subnets.iter().position(|s| s.cidr.contains(&key)) else {
            return Vec::new();
        };
        let mut v = vec![first];
        if let Some(name) = &subnets[first].shared_network {
            v.extend(
                (0..subnets.len())
                    .filter(|&i| i != first && subnets[i].shared_network.as_ref() == Some(name)),
            );
        }
        v
    }

    fn subnet_of(&self, net: &[usize], ip: Ipv4Addr) -> Option<usize> {
        net.iter()
            .copied()
            .find(|&i| self.config.subnets[i].cidr.contains(&ip))
    }

    fn in_ranges(s: &SubnetConfig, ip: Ipv4Addr) -> bool {
        s.ranges.iter().any(|&(a, b)| a <= ip && ip <= b)
    }

    fn taken(&self, ip: Ipv4Addr, mac: MacAddress, now: u64) -> bool {
        self.leases
            .get(&ip)
            .is_some_and(|l| l.holds(now) && (l.mac != mac || l.state == LeaseState::Declined))
            || self.offered.get(&ip).is_some_and(|m| {
                *m != mac
                    && self
                        .offers
                        .get(m)
                        .is_some_and(|o| o.ip == ip && o.until > now)
            })
            || ip == self.config.server_ip
            || self.conflicts.get(&ip).is_some_and(|&until| until > now)
    }

    /// Whether a dynamic address may go to `mac` now.
    fn available(&self, s: &SubnetConfig, ip: Ipv4Addr, mac: MacAddress, now: u64) -> bool {
        Self::in_ranges(s, ip) && self.pool.owns(ip) && !self.taken(ip, mac, now)
    }

    fn peer_alive(&self) -> bool {
        self.peer.as_ref().is_some_and(|p| p.alive())
    }

    /// Under failover, whether this server answers a new client.
    fn ours_to_answer(&self, mac: MacAddress, secs: u16) -> bool {
        let Some(f) = &self.config.failover else {
            return true;
        };
        let primary_bucket = bucket(mac) < f.split;
        let ours = primary_bucket == (f.role == crate::FailoverRole::Primary);
        ours || secs >= f.takeover_secs || !self.peer_alive()
    }

    /// Returns lapsed offers and leases to the pool, at most once a second.
    fn sweep(&mut self, now: u64) {
        if self.last_sweep == now {
            return;
        }
        self.last_sweep = now;
        self.offers.retain(|_, o| o.until > now);
        let offers = &self.offers;
        self.offered
            .retain(|ip, m| offers.get(m).is_some_and(|o| o.ip == *ip));
        let (leases, offered, server) = (&self.leases, &self.offered, self.config.server_ip);
        let n = self.pool.reclaim(|ip| {
            ip == server
                || offered.contains_key(&ip)
                || leases.get(&ip).is_some_and(|l| l.holds(now))
        });
        debug!(reclaimed = n, "address pool swept");
    }

    /// Picks an address for `mac`: its reservation, its live offer, its last
    /// lease, the one it asked for, or the lowest free one.
    async fn choose(
        &mut self,
        net: &[usize],
        mac: MacAddress,
        requested: Option<Ipv4Addr>,
        now: u64,
    ) -> Option<(Ipv4Addr, usize)> {
        if let Some(r) = self.hosts.reservation(mac).await
            && let Some(i) = self.subnet_of(net, r.ip)
        {
            return Some((r.ip, i));
        }
        let offered = self
            .offers
            .get(&mac)
            .filter(|o| o.until > now)
            .map(|o| o.ip);
        let previous = self.by_mac.get(&mac).copied();
        for ip in offered.into_iter().chain(previous).chain(requested) {
            if let Some(i) = self.subnet_of(net, ip)
                && self.available(&self.config.subnets[i], ip, mac, now)
                && !self.hosts.is_reserved(ip).await
            {
                return Some((ip, i));
            }
        }
        for pass in 0..2 {
            if pass == 1 {
                self.sweep(now);
            }
            for &i in net {
                for k in 0..self.config.subnets[i].ranges.len() {
                    let (a, b) = self.config.subnets[i].ranges[k];
                    while let Some(ip) = self.pool.first_free_in(a, b) {
                        // A free address can still be someone's reservation
                        // (a misconfiguration MAAS's IPAM forbids) or bound
                        // by a record the pool was not told of: skip it.
                        if self.taken(ip, mac, now) || self.hosts.is_reserved(ip).await {
                            self.pool.take(ip);
                            continue;
                        }
                        if let (Some(probe), Some(timeout)) =
                            (&self.probe, self.config.conflict_probe)
                            && probe.in_use(ip, timeout).await
                        {
                            warn!(%ip, "address in use by a host without a lease; set aside");
                            self.metrics.conflicts.fetch_add(1, Ordering::Relaxed);
                            let hold = self.config.subnets[i].lease_time.as_secs();
                            self.conflicts.insert(ip, now + hold);
                            self.pool.take(ip);
                            continue;
                        }
                        return Some((ip, i));
                    }
                }
            }
        }
        None
    }

    fn offer_to(&mut self, mac: MacAddress, ip: Ipv4Addr, now: u64) {
        let until = now + self.config.offer_hold.as_secs().max(1);
        if let Some(old) = self.offers.insert(mac, Offer { ip, until })
            && old.ip != ip
        {
            self.offered.remove(&old.ip);
            if !self.leases.get(&old.ip).is_some_and(|l| l.holds(now)) {
                self.pool.give_back(old.ip);
            }
        }
        self.offered.insert(ip, mac);
        self.pool.take(ip);
    }

    /// Spends one token of `mac`'s bucket; false when it has none left.
    fn admit(&mut self, mac: MacAddress, limit: RateLimit) -> bool {
        let now = Instant::now();
        if self.limiter.len() > 100_000 {
            // Forget MACs whose bucket has refilled: bounded memory under a
            // flood of random MACs.
            let full = f64::from(limit.burst);
            let rate = f64::from(limit.per_second);
            self.limiter
                .retain(|_, t| t.left + now.duration_since(t.at).as_secs_f64() * rate < full);
        }
        let t = self.limiter.entry(mac).or_insert(Tokens {
            left: f64::from(limit.burst),
            at: now,
        });
        let earned = now.duration_since(t.at).as_secs_f64() * f64::from(limit.per_second);
        t.left = (t.left + earned).min(f64::from(limit.burst));
        t.at = now;
        if t.left >= 1.0 {
            t.left -= 1.0;
            true
        } else {
            false
        }
    }

    /// Handles one datagram from `from`: decides, makes its lease durable,
    /// returns the reply. `None`: nothing to send.
    pub async fn handle(&mut self, bytes: &[u8], from: SocketAddr) -> Option<Reply> {
        self.handle_batch(&[(bytes, from)]).await.pop()
    }

    /// Handles datagrams received together: decides each in turn, commits
    /// all their lease records at once, and returns the replies to send
    /// (those whose records could not be stored are withheld).
    pub async fn handle_batch(&mut self, packets: &[(&[u8], SocketAddr)]) -> Vec<Reply> {
        let now = now_secs();
        let mut decisions = Vec::with_capacity(packets.len());
        for &(bytes, from) in packets {
            decisions.push(self.decide(bytes, from, now).await);
        }
        let commits: Vec<Lease> = decisions
            .iter()
            .flat_map(|d| d.commits.iter().cloned())
            .collect();
        let durable = commits.is_empty()
            || match self.store.commit(&commits).await {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, leases = commits.len(), "lease store failed; withholding ACKs");
                    false
                }
            };
        decisions
            .into_iter()
            .filter_map(|d| {
                if !durable && !d.commits.is_empty() {
                    if d.reply.is_some() {
                        self.metrics.store_failed.fetch_add(1, Ordering::Relaxed);
                    }
                    return None;
                }
                let r = d.reply?;
                let counter = match r.kind {
                    MessageType::Offer => &self.metrics.offer,
                    MessageType::Ack => &self.metrics.ack,
                    _ => &self.metrics.nak,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Some(r)
            })
            .collect()
    }

    async fn decide(&mut self, bytes: &[u8], from: SocketAddr, now: u64) -> Decision {
        if let Err(why) = precheck(bytes) {
            self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
            debug!(%from, len = bytes.len(), why, "malformed DHCP packet dropped");
            return Decision::default();
        }
        // Belt and braces: dhcproto has panicked on malformed options before
        // (option 81, see `precheck`); a hostile packet must not stop the server.
        let decoded = std::panic::catch_unwind(|| Message::from_bytes(bytes));
        let m = match decoded {
            Ok(Ok(m)) => m,
            _ => {
                self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                debug!(%from, len = bytes.len(), "malformed DHCP packet dropped");
                return Decision::default();
            }
        };
        let (Some(mac), Opcode::BootRequest, Some(kind)) =
            (mac_of(&m), m.opcode(), m.opts().msg_type())
        else {
            self.metrics.ignored.fetch_add(1, Ordering::Relaxed);
            return Decision::default();
        };
        if let Some(limit) = self.config.rate_limit
            && !self.admit(mac, limit)
        {
            self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            debug!(%mac, "over the per-MAC rate limit; dropped");
            return Decision::default();
        }
        let span = debug_span!("dhcp", %mac, xid = format_args!("{:08x}", m.xid()), ?kind);
        self.dispatch(&m, mac, kind, now).instrument(span).await
    }

    #[allow(clippy::too_many_lines)]
    async fn dispatch(
        &mut self,
        m: &Message,
        mac: MacAddress,
        kind: MessageType,
        now: u64,
    ) -> Decision {
        let net = self.network_for(m);
        if net.is_empty() {
            self.metrics.ignored.fetch_add(1, Ordering::Relaxed);
            debug!(giaddr = %m.giaddr(), "no subnet for this request");
            return Decision::default();
        }
        let requested = match m.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        };
        let server_id = match m.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        };
        match kind {
            MessageType::Discover => {
                self.metrics.discover.fetch_add(1, Ordering::Relaxed);
                if !self.ours_to_answer(mac, m.secs()) {
                    self.metrics.peer_clients.fetch_add(1, Ordering::Relaxed);
                    return Decision::default();
                }
                let Some((ip, i)) = self.choose(&net, mac, requested, now).await else {
                    self.metrics.exhausted.fetch_add(1, Ordering::Relaxed);
                    warn!(subnet = %self.config.subnets[net[0]].cidr, "no free address to offer");
                    return Decision::default();
                };
                self.offer_to(mac, ip, now);
                Decision::reply(self.reply(m, i, MessageType::Offer, ip, mac).await)
            }
            MessageType::Request => {
                self.metrics.request.fetch_add(1, Ordering::Relaxed);
                self.request(m, &net, mac, requested, server_id, now).await
            }
            MessageType::Release | MessageType::Decline => {
                let declined = kind == MessageType::Decline;
                let counter = if declined {
                    &self.metrics.decline
                } else {
                    &self.metrics.release
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let ip = if declined {
                    requested
                } else {
                    Some(m.ciaddr())
                };
                let Some(ip) = ip else {
                    return Decision::default();
                };
                if self.leases.get(&ip).is_none_or(|l| l.mac != mac) {
                    // Declining an address only offered is fine too.
                    if !(declined && self.offered.get(&ip) == Some(&mac)) {
                        return Decision::default();
                    }
                }
                let lease_time = self
                    .subnet_of(&net, ip)
                    .map_or(600, |i| self.config.subnets[i].lease_time.as_secs());
                let lease = Lease {
                    ip,
                    mac,
                    hostname: None,
                    client_uuid: None,
                    expires: if declined { now + lease_time } else { now },
                    state: if declined {
                        LeaseState::Declined
                    } else {
                        LeaseState::Released
                    },
                };
                self.offers.remove(&mac);
                self.offered.remove(&ip);
                if declined {
                    self.pool.take(ip);
                } else {
                    self.pool.give_back(ip);
                }
                info!(%ip, state = ?lease.state, "lease ended");
                self.leases.insert(ip, lease.clone());
                Decision {
                    reply: None,
                    commits: vec![lease],
                }
            }
            MessageType::Inform => {
                self.metrics.inform.fetch_add(1, Ordering::Relaxed);
                let i = self.subnet_of(&net, m.ciaddr()).unwrap_or(net[0]);
                let mut r = self
                    .reply(m, i, MessageType::Ack, Ipv4Addr::UNSPECIFIED, mac)
                    .await;
                if m.giaddr() == Ipv4Addr::UNSPECIFIED {
                    r.to = SocketAddrV4::new(m.ciaddr(), 68);
                }
                Decision::reply(r)
            }
            _ => {
                self.metrics.ignored.fetch_add(1, Ordering::Relaxed);
                Decision::default()
            }
        }
    }

    async fn request(
        &mut self,
        m: &Message,
        net: &[usize],
        mac: MacAddress,
        requested: Option<Ipv4Addr>,
        server_id: Option<Ipv4Addr>,
        now: u64,
    ) -> Decision {
        if let Some(id) = server_id
            && id != self.config.server_ip
        {
            // The client chose another server's offer.
            if let Some(o) = self.offers.remove(&mac) {
                self.offered.remove(&o.ip);
                if !self.leases.get(&o.ip).is_some_and(|l| l.holds(now)) {
                    self.pool.give_back(o.ip);
                }
            }
            return Decision::default();
        }
        let wanted = if m.ciaddr() != Ipv4Addr::UNSPECIFIED {
            Some(m.ciaddr())
        } else {
            requested
        };
        let Some(wanted) = wanted else {
            return Decision::reply(self.nak(m, "no address requested"));
        };
        let Some(i) = self.subnet_of(net, wanted) else {
            return Decision::reply(self.nak(m, "address is not on this network"));
        };
        let reservation = self.hosts.reservation(mac).await;
        let s = &self.config.subnets[i];
        let ok = match &reservation {
            Some(r) => r.ip == wanted,
            None => self.available(s, wanted, mac, now),
        };
        if !ok {
            let peers_address = reservation.is_none()
                && Self::in_ranges(s, wanted)
                && !self.pool.owns(wanted)
                && self.config.failover.is_some();
            if peers_address && self.peer_alive() {
                // The peer's half of the range: the peer answers.
                self.metrics.peer_clients.fetch_add(1, Ordering::Relaxed);
                return Decision::default();
            }
            // Init-reboot for an address we know nothing of: stay silent so
            // another server may answer (RFC 2131 4.3.2).
            if !peers_address
                && server_id.is_none()
                && m.ciaddr() == Ipv4Addr::UNSPECIFIED
                && !self.leases.contains_key(&wanted)
                && reservation.is_none()
            {
                self.metrics.ignored.fetch_add(1, Ordering::Relaxed);
                return Decision::default();
            }
            return Decision::reply(self.nak(m, "address not available"));
        }
        let hostname = match m.opts().get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) => Some(h.clone()),
            _ => None,
        };
        // A renewal need not repeat what the client said before.
        let before = self.leases.get(&wanted).filter(|l| l.mac == mac);
        let lease = Lease {
            ip: wanted,
            mac,
            hostname: reservation
                .and_then(|r| r.hostname)
                .or(hostname)
                .or_else(|| before.and_then(|l| l.hostname.clone())),
            client_uuid: client_uuid(m).or_else(|| before.and_then(|l| l.client_uuid.clone())),
            expires: now + s.lease_time.as_secs(),
            state: LeaseState::Active,
        };
        let mut commits = Vec::with_capacity(2);
        if let Some(old) = self.by_mac.insert(mac, wanted)
            && old != wanted
            && let Some(l) = self.leases.get_mut(&old)
            && l.mac == mac
            && l.state == LeaseState::Active
        {
            // The client moved: its old address is free again.
            l.state = LeaseState::Released;
            l.expires = now;
            commits.push(l.clone());
            self.pool.give_back(old);
        }
        self.leases.insert(wanted, lease.clone());
        self.pool.take(wanted);
        if self.offers.get(&mac).is_some_and(|o| o.ip == wanted) {
            self.offers.remove(&mac);
        }
        self.offered.remove(&wanted);
        commits.push(lease);
        debug!(ip = %wanted, "lease");
        Decision {
            reply: Some(self.reply(m, i, MessageType::Ack, wanted, mac).await),
            commits,
        }
    }

    /// RFC 2131 4.1: to the relay; else to `ciaddr`; else broadcast if the
    /// client asked for it (or its hardware address is not Ethernet); else
    /// to `yiaddr` at the client's MAC.
    fn destination(
        m: &Message,
        yiaddr: Ipv4Addr,
        relay_port: u16,
    ) -> (SocketAddrV4, Option<[u8; 6]>) {
        let broadcast = (SocketAddrV4::new(Ipv4Addr::BROADCAST, 68), None);
        if m.giaddr() != Ipv4Addr::UNSPECIFIED {
            (SocketAddrV4::new(m.giaddr(), relay_port), None)
        } else if m.ciaddr() != Ipv4Addr::UNSPECIFIED {
            (SocketAddrV4::new(m.ciaddr(), 68), None)
        } else if m.flags().broadcast()
            || yiaddr == Ipv4Addr::UNSPECIFIED
            || m.htype() != HType::Eth
            || m.hlen() != 6
        {
            broadcast
        } else {
            match <[u8; 6]>::try_from(&m.chaddr()[..6]) {
                Ok(mac) => (SocketAddrV4::new(yiaddr, 68), Some(mac)),
                Err(_) => broadcast,
            }
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
        debug!(why, "NAK");
        let mut r = self.base(m, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
        r.opts_mut().insert(DhcpOption::Message(why.to_owned()));
        // A NAK is broadcast unless relayed (RFC 2131 4.1).
        let to = if m.giaddr() != Ipv4Addr::UNSPECIFIED {
            SocketAddrV4::new(m.giaddr(), self.config.relay_port)
        } else {
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
        };
        Reply {
            bytes: encode(&r),
            to,
            link_address: None,
            kind: MessageType::Nak,
        }
    }

    async fn reply(
        &self,
        m: &Message,
        subnet: usize,
        kind: MessageType,
        ip: Ipv4Addr,
        mac: MacAddress,
    ) -> Reply {
        let s = &self.config.subnets[subnet];
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
        if !s.routes.is_empty() {
            // A client honouring option 121 ignores option 3 (RFC 3442), so
            // the default route goes in here too.
            let mut routes = s.routes.clone();
            if let Some(gw) = s.router
                && !routes.iter().any(|(d, _)| d.prefix_len() == 0)
            {
                routes.push((ipnet::Ipv4Net::default(), gw));
            }
            o.insert(DhcpOption::ClasslessStaticRoute(routes));
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
                uuid: client_uuid(m),
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
                let http = vendor
                    .as_deref()
                    .is_some_and(|v| v.starts_with("HTTPClient"));
                let pxe = vendor
                    .as_deref()
                    .is_some_and(|v| v.starts_with("PXEClient"));
                if http {
                    o.insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
                } else if pxe {
                    o.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
                }
                if ipxe {
                    // iPXE encapsulated options: no-pxedhcp (176) = 1, so iPXE
                    // does not wait for ProxyDHCP offers.
                    o.insert(DhcpOption::Unknown(v4::UnknownOption::new(
                        OptionCode::from(175),
                        vec![176, 1, 1],
                    )));
                } else if pxe {
                    // PXE vendor options: discovery control (6) = 8, "boot the
                    // file named, no boot-server discovery", for PXE ROMs
                    // that wait for option 43 before taking a boot file.
                    o.insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
                }
            }
        }
        let (to, link_address) = Self::destination(m, ip, self.config.relay_port);
        Reply {
            bytes: encode(&r),
            to,
            link_address,
            kind,
        }
    }
}

/// Checks the framing dhcproto trusts: the fixed header, the magic cookie,
/// every option's length within the packet, and the exact length of every
/// option dhcproto 0.15 decodes with a fixed-size read. dhcproto reads those
/// (a u32 lease time, a u16 architecture...) whatever length the option
/// declares, and only `debug_assert`s some of them: in debug builds a wrong
/// length panics, in release builds the rest of the options are read out of
/// step. The fuzz target (`crates/maas-dhcp/fuzz`) found the cases beyond
/// option 81.
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
    // dhcproto joins an option repeated back to back into one (RFC 3396),
    // so the length to check is that of each run of one code.
    let mut run: Option<(u8, usize)> = None;
    let end_run = |run: Option<(u8, usize)>| match run {
        Some((code, len)) => bad_fixed_length(code, len).map_or(Ok(()), Err),
        None => Ok(()),
    };
    let mut i = HEADER + 4;
    while i < b.len() {
        match b[i] {
            0 => {
                end_run(run.take())?;
                i += 1;
            }
            255 => return end_run(run),
            code => {
                let Some(&len) = b.get(i + 1) else {
                    return Err("option without a length");
                };
                let len = usize::from(len);
                if i + 2 + len > b.len() {
                    return Err("option longer than the packet");
                }
                run = match run {
                    Some((c, total)) if c == code => Some((c, total + len)),
                    other => {
                        end_run(other)?;
                        Some((code, len))
                    }
                };
                i += 2 + len;
            }
        }
    }
    Err("no END option")
}

/// The length rule of the options dhcproto decodes with fixed-size reads.
fn bad_fixed_length(code: u8, len: usize) -> Option<&'static str> {
    let want = match code {
        80 => 0,
        19 | 20 | 23 | 27 | 29 | 30 | 31 | 34 | 36 | 37 | 39 | 46 | 52 | 53 | 116 | 156 | 157 => 1,
        13 | 22 | 26 | 57 | 93 => 2,
        94 => 3,
        2 | 24 | 35 | 38 | 51 | 58 | 59 | 91 | 108 | 152..=155 => 4,
        81 if len < 3 => return Some("client FQDN option (81) shorter than 3 bytes"),
        151 if len < 1 => return Some("empty bulk-leasequery status option (151)"),
        _ => return None,
    };
    (len != want).then_some(match code {
        53 => "message type option (53) is not 1 byte",
        93 => "client architecture option (93) is not 2 bytes (lists of architectures are not supported)",
        51 | 58 | 59 => "lease time option (51, 58 or 59) is not 4 bytes",
        _ => "fixed-size option with the wrong length",
    })
}

/// Encodes a reply, padded to the 300-byte BOOTP minimum some clients need.
fn encode(m: &Message) -> Vec<u8> {
    let mut b = m.to_vec().unwrap_or_default();
    if b.len() < 300 {
        b.resize(300, 0);
    }
    b
}
