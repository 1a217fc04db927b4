//! The failover pair's liveness: heartbeats between peers and the client
//! buckets. The address split itself is in `pool.rs`; the scheme is
//! described on [`crate::FailoverConfig`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use maas_core::MacAddress;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use crate::DhcpError;
use crate::config::{FailoverConfig, FailoverRole};

const MAGIC: &[u8] = b"MAAS-DHCP-HEARTBEAT/1 ";

/// The client's bucket, 0..=255: FNV-1a over the MAC. Both servers compute
/// the same bucket for a client, so exactly one of them answers it while
/// both are up.
pub(crate) fn bucket(mac: MacAddress) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in mac.0 {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // Fold all four bytes so every MAC byte moves the bucket.
    let [a, b, c, d] = h.to_be_bytes();
    a ^ b ^ c ^ d
}

fn role_name(r: FailoverRole) -> &'static str {
    match r {
        FailoverRole::Primary => "primary",
        FailoverRole::Secondary => "secondary",
    }
}

/// What this server knows of its peer.
#[derive(Debug)]
pub(crate) struct Peer {
    started: Instant,
    /// Milliseconds after `started` when the peer was last heard.
    heard_ms: AtomicU64,
    timeout: Duration,
}

impl Peer {
    pub(crate) fn new(timeout: Duration) -> Self {
        // Counted as heard at start: a server that comes up beside a live
        // peer must not grab the peer's clients before the first heartbeat.
        Peer {
            started: Instant::now(),
            heard_ms: AtomicU64::new(0),
            timeout,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn heard(&self) {
        self.heard_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn alive(&self) -> bool {
        let silent = self
            .now_ms()
            .saturating_sub(self.heard_ms.load(Ordering::Relaxed));
        u128::from(silent) < self.timeout.as_millis()
    }
}

/// Sends heartbeats to the peer and listens for its own, until dropped.
///
/// The heartbeat is not authenticated: a forged one can only keep a dead
/// peer looking alive (its clients then wait for `takeover_secs`), never make
/// two servers hand out one address, since the pools are disjoint.
pub(crate) async fn run_heartbeat(cfg: FailoverConfig, peer: Arc<Peer>) -> Result<(), DhcpError> {
    let socket = UdpSocket::bind(cfg.listen)
        .await
        .map_err(|source| DhcpError::Socket {
            interface: format!("failover heartbeat {}", cfg.listen),
            source,
        })?;
    let ours = [MAGIC, role_name(cfg.role).as_bytes()].concat();
    let theirs = [
        MAGIC,
        role_name(match cfg.role {
            FailoverRole::Primary => FailoverRole::Secondary,
            FailoverRole::Secondary => FailoverRole::Primary,
        })
        .as_bytes(),
    ]
    .concat();
    let mut tick = tokio::time::interval(cfg.heartbeat);
    let mut buf = [0u8; 64];
    let mut was_alive = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = socket.send_to(&ours, cfg.peer).await {
                    debug!(peer = %cfg.peer, error = %e, "heartbeat not sent");
                }
                let alive = peer.alive();
                if alive != was_alive {
                    if alive {
                        info!(peer = %cfg.peer, "failover peer is back; serving own buckets only");
                    } else {
                        warn!(peer = %cfg.peer, "failover peer silent; serving all clients from own pool");
                    }
                    was_alive = alive;
                }
            }
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, _)) = r
                    && buf[..n] == theirs[..]
                {
                    peer.heard();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_spread_evenly() {
        let mut low = 0;
        for i in 0..10_000u32 {
            let b = i.to_be_bytes();
            if bucket(MacAddress([0x52, 0x54, b[0], b[1], b[2], b[3]])) < 128 {
                low += 1;
            }
        }
        assert!(
            (4_500..5_500).contains(&low),
            "{low} of 10000 in the lower half"
        );
    }

    #[test]
    fn a_silent_peer_is_down_after_the_timeout() {
        let p = Peer::new(Duration::from_millis(50));
        assert!(p.alive());
        std::thread::sleep(Duration::from_millis(80));
        assert!(!p.alive());
        p.heard();
        assert!(p.alive());
    }
}
