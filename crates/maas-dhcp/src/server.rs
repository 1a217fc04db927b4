//! The socket loop: receive in batches, hand to the handler, send replies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tracing::warn;

use crate::DhcpError;
use crate::handler::{DhcpHandler, DhcpMetrics};
use crate::host::HostLookup;
use crate::lease::LeaseStore;

/// Datagrams taken off the socket per batch at most.
const BATCH: usize = 64;

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
                let sent = match self.socket.try_send_to(&r.bytes, r.to.into()) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        self.socket.send_to(&r.bytes, r.to).await.map(|_| ())
                    }
                    other => other.map(|_| ()),
                };
                if let Err(e) = sent {
                    warn!(to = %r.to, error = %e, "reply not sent");
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
