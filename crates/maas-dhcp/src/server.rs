//! The socket loop: receive in batches, hand to the handler, send replies.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::DhcpError;
use crate::handler::{DhcpHandler, DhcpMetrics, Reply};
use crate::host::HostLookup;
use crate::lease::LeaseStore;
use crate::neigh::NeighbourTable;

/// Datagrams taken off the socket per batch at most.
const BATCH: usize = 64;

/// Serves DHCP on a socket bound to port 67.
pub struct DhcpServer<H: HostLookup, S: LeaseStore> {
    socket: UdpSocket,
    handler: DhcpHandler<H, S>,
    neighbours: Option<NeighbourTable>,
    warned_arp: bool,
}

impl<H: HostLookup, S: LeaseStore> DhcpServer<H, S> {
    /// Binds `0.0.0.0:port` on `interface` (`SO_BINDTODEVICE`) with
    /// broadcast allowed, and opens the interface's neighbour table so
    /// replies to clients without an address can be unicast (RFC 2131 4.1).
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
        let neighbours = Some(NeighbourTable::open(interface)?);
        Ok(DhcpServer {
            socket,
            handler,
            neighbours,
            warned_arp: false,
        })
    }

    /// Serves on an already-bound socket (broadcast must be enabled on it).
    /// Without [`DhcpServer::with_neighbours`], replies that RFC 2131 would
    /// unicast to a client without an address are broadcast instead.
    pub fn from_socket(socket: UdpSocket, handler: DhcpHandler<H, S>) -> Self {
        DhcpServer {
            socket,
            handler,
            neighbours: None,
            warned_arp: false,
        }
    }

    /// Writes neighbour entries in `table` (opened for the socket's
    /// interface, in its namespace) to unicast replies to clients without
    /// an address.
    pub fn with_neighbours(mut self, table: NeighbourTable) -> Self {
        self.neighbours = Some(table);
        self
    }

    /// The counters.
    pub fn metrics(&self) -> Arc<DhcpMetrics> {
        self.handler.metrics()
    }

    /// Serves until the task is dropped (and, under failover, exchanges
    /// heartbeats with the peer).
    ///
    /// Each round waits for a datagram, then takes whatever else is already
    /// queued (up to 64), so the handler decides them together and makes
    /// their leases durable with one commit before any ACK leaves.
    pub async fn serve(mut self) -> Result<(), DhcpError> {
        let heartbeat = self
            .handler
            .failover_peer()
            .map(|(cfg, peer)| tokio::spawn(crate::failover::run_heartbeat(cfg, peer)));
        let _abort = heartbeat.as_ref().map(|h| AbortOnDrop(h.abort_handle()));
        let mut bufs = vec![[0u8; 1536]; BATCH];
        let mut got: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
        let mut gauges = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                r = self.socket.readable() => r.map_err(sock_err)?,
                _ = gauges.tick() => {
                    self.handler.refresh_gauges();
                    continue;
                }
            }
            got.clear();
            while got.len() < BATCH {
                match self.socket.try_recv_from(&mut bufs[got.len()]) {
                    Ok((n, from)) => got.push((n, from)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(e) => return Err(sock_err(e)),
                }
            }
            if got.is_empty() {
                continue;
            }
            let packets: Vec<(&[u8], SocketAddr)> = got
                .iter()
                .zip(&bufs)
                .map(|(&(n, from), b)| (&b[..n], from))
                .collect();
            let replies = self.handler.handle_batch(&packets).await;
            for r in replies {
                let to = self.link_destination(&r);
                let sent = match self.socket.try_send_to(&r.bytes, to.into()) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        self.socket.send_to(&r.bytes, to).await.map(|_| ())
                    }
                    other => other.map(|_| ()),
                };
                if let Err(e) = sent {
                    warn!(%to, error = %e, "reply not sent");
                }
            }
            if let Some(h) = &heartbeat
                && h.is_finished()
            {
                return Err(DhcpError::Config {
                    reason: "failover heartbeat stopped (is its listen address free?)".into(),
                });
            }
        }
    }
}

impl<H: HostLookup, S: LeaseStore> DhcpServer<H, S> {
    /// Where `r` goes on the wire: its RFC 2131 destination once the
    /// client's neighbour entry is written, else the broadcast address.
    fn link_destination(&mut self, r: &Reply) -> SocketAddrV4 {
        let Some(mac) = r.link_address else {
            return r.to;
        };
        let metrics = self.handler.metrics();
        let written = match &mut self.neighbours {
            Some(table) => table.set(*r.to.ip(), mac),
            None => {
                metrics.arp_fallback.fetch_add(1, Ordering::Relaxed);
                return SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);
            }
        };
        match written {
            Ok(()) => {
                metrics.unicast_arp.fetch_add(1, Ordering::Relaxed);
                r.to
            }
            Err(e) => {
                metrics.arp_fallback.fetch_add(1, Ordering::Relaxed);
                if !std::mem::replace(&mut self.warned_arp, true) {
                    warn!(ip = %r.to.ip(), error = %e,
                        "cannot write neighbour entries; broadcasting to clients without an address");
                } else {
                    debug!(ip = %r.to.ip(), error = %e, "neighbour entry not written");
                }
                SocketAddrV4::new(Ipv4Addr::BROADCAST, 68)
            }
        }
    }
}

fn sock_err(source: std::io::Error) -> DhcpError {
    DhcpError::Socket {
        interface: String::new(),
        source,
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
