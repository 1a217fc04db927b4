//! The conflict probe: before offering an address nobody held, ask whether
//! something already answers on it (an ICMP echo, as ISC dhcpd does). Off by
//! default: it costs up to its timeout per fresh address.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;

/// Sends ICMP echo requests on a raw socket (the server already needs the
/// privileges for port 67) and waits for the matching reply.
pub(crate) struct IcmpProbe {
    fd: AsyncFd<Socket>,
    id: u16,
    seq: AtomicU16,
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request with `id` and `seq`.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut b = vec![ECHO_REQUEST, 0, 0, 0];
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(b"maas-dhcp conflict probe");
    let c = checksum(&b);
    b[2..4].copy_from_slice(&c.to_be_bytes());
    b
}

/// Whether a raw IPv4 datagram is the echo reply from `from` to our request.
fn is_reply(datagram: &[u8], from: Ipv4Addr, id: u16, seq: u16) -> bool {
    let Some(&first) = datagram.first() else {
        return false;
    };
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || datagram.len() < ihl + 8 {
        return false;
    }
    let src = Ipv4Addr::new(datagram[12], datagram[13], datagram[14], datagram[15]);
    let icmp = &datagram[ihl..];
    src == from
        && icmp[0] == ECHO_REPLY
        && icmp[4..6] == id.to_be_bytes()
        && icmp[6..8] == seq.to_be_bytes()
}

impl IcmpProbe {
    pub(crate) fn new() -> std::io::Result<Self> {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
        s.set_nonblocking(true)?;
        // Owned by the AsyncFd, so nothing else can close the fd under it
        // (the I/O-safety gap that deprecated `new`); `register` is unsafe,
        // and this crate forbids unsafe code.
        #[allow(deprecated)]
        let fd = AsyncFd::new(s)?;
        Ok(IcmpProbe {
            fd,
            id: (std::process::id() & 0xffff) as u16,
            seq: AtomicU16::new(0),
        })
    }

    /// Whether `ip` answers an echo request within `timeout`.
    pub(crate) async fn in_use(&self, ip: Ipv4Addr, timeout: Duration) -> bool {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let to = SockAddr::from(SocketAddrV4::new(ip, 0));
        if self
            .fd
            .get_ref()
            .send_to(&echo_request(self.id, seq), &to)
            .is_err()
        {
            return false;
        }
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let Ok(Ok(mut guard)) = tokio::time::timeout(left, self.fd.readable()).await else {
                return false;
            };
            loop {
                match guard.try_io(|s| {
                    let mut r: &Socket = s.get_ref();
                    r.read(&mut buf)
                }) {
                    Ok(Ok(n)) => {
                        if is_reply(&buf[..n], ip, self.id, seq) {
                            return true;
                        }
                    }
                    Ok(Err(_)) => return false,
                    Err(_would_block) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_checksums_to_zero_and_replies_are_matched() {
        let req = echo_request(0x1234, 7);
        assert_eq!(checksum(&req), 0, "a valid ICMP message sums to zero");
        let mut reply = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 5, 10, 0, 0, 1,
        ];
        reply.extend_from_slice(&req);
        reply[20] = ECHO_REPLY;
        let from = Ipv4Addr::new(10, 0, 0, 5);
        assert!(is_reply(&reply, from, 0x1234, 7));
        assert!(!is_reply(&reply, from, 0x1234, 8));
        assert!(!is_reply(&reply, Ipv4Addr::new(10, 0, 0, 6), 0x1234, 7));
        assert!(!is_reply(&reply[..24], from, 0x1234, 7));
        assert!(!is_reply(&[], from, 0x1234, 7));
    }
}
