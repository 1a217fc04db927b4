//! Neighbour (ARP) entries for unicasting to a client that has no address yet.
//!
//! RFC 2131 4.1: a reply to a client with no address, no relay and no
//! broadcast flag goes to `yiaddr` at the client's hardware address. The
//! kernel can only send there if its neighbour table maps `yiaddr` to that
//! MAC, and the client cannot answer an ARP request for an address it does
//! not hold yet, so the server writes the entry itself first. ISC dhcpd does
//! it with the `SIOCSARP` ioctl; the workspace forbids `unsafe`, so this
//! module sends the equivalent `RTM_NEWNEIGH` request over rtnetlink (see
//! `rtnetlink(7)`), through a plain socket2 socket, and reads the kernel's
//! acknowledgement.
//!
//! The entry is written `NUD_STALE`, as `SIOCSARP` without `ATF_PERM` makes
//! it: usable at once, then verified or aged out by the kernel like any
//! learned entry, so the table does not fill with permanent entries.

use std::io::{self, Read};
use std::net::Ipv4Addr;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::DhcpError;

const AF_NETLINK: i32 = 16;
const NETLINK_ROUTE: i32 = 0;
const AF_INET: u8 = 2;
const RTM_NEWNEIGH: u16 = 28;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NUD_STALE: u16 = 0x04;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
/// `nlmsghdr` (16) + `ndmsg` (12) + `NDA_DST` (4 + 4) + `NDA_LLADDR` (4 + 6,
/// padded to 12).
const REQUEST_LEN: usize = 16 + 12 + 8 + 12;

/// A handle on one interface's neighbour table, in the network namespace the
/// handle was opened in.
#[derive(Debug)]
pub struct NeighbourTable {
    socket: Socket,
    interface: String,
    ifindex: u32,
    seq: u32,
}

impl NeighbourTable {
    /// Opens an rtnetlink socket for `interface`'s neighbour table. Both the
    /// socket and the interface index belong to the calling thread's network
    /// namespace: open it where the DHCP socket was opened.
    ///
    /// Writing entries needs `CAP_NET_ADMIN`; opening does not, so a missing
    /// capability shows at the first [`NeighbourTable::set`].
    pub fn open(interface: &str) -> Result<Self, DhcpError> {
        let io = |source| DhcpError::Socket {
            interface: interface.to_owned(),
            source,
        };
        let ifindex = nix::net::if_::if_nametoindex(interface)
            .map_err(|e| io(io::Error::from_raw_os_error(e as i32)))?;
        let socket = Socket::new(
            Domain::from(AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(NETLINK_ROUTE)),
        )
        .map_err(io)?;
        // The kernel answers inside our send call; the timeout only guards
        // against an answer that never comes.
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(io)?;
        Ok(NeighbourTable {
            socket,
            interface: interface.to_owned(),
            ifindex,
            seq: 0,
        })
    }

    /// The interface the entries are written for.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Maps `ip` to `mac` on the interface (creating or replacing the entry)
    /// and waits for the kernel's acknowledgement.
    pub fn set(&mut self, ip: Ipv4Addr, mac: [u8; 6]) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let request = encode_new_neighbour(self.seq, self.ifindex, ip, mac);
        let sent = self.socket.send(&request)?;
        if sent != request.len() {
            return Err(io::Error::other("short netlink send"));
        }
        let mut buf = [0u8; 512];
        loop {
            let n = (&self.socket).read(&mut buf)?;
            match parse_ack(&buf[..n], self.seq) {
                Some(0) => return Ok(()),
                Some(errno) => return Err(io::Error::from_raw_os_error(-errno)),
                // An answer to an earlier request that timed out: skip it.
                None => continue,
            }
        }
    }
}

/// The `RTM_NEWNEIGH` request: create or replace a `NUD_STALE` entry.
fn encode_new_neighbour(seq: u32, ifindex: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut b = Vec::with_capacity(REQUEST_LEN);
    // struct nlmsghdr
    b.extend_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    b.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    // struct ndmsg: family, 3 pad bytes, ifindex, state, flags, type
    b.extend_from_slice(&[AF_INET, 0, 0, 0]);
    b.extend_from_slice(&ifindex.to_ne_bytes());
    b.extend_from_slice(&NUD_STALE.to_ne_bytes());
    b.extend_from_slice(&[0, 0]);
    // struct rtattr NDA_DST, then NDA_LLADDR padded to 4 bytes
    b.extend_from_slice(&8u16.to_ne_bytes());
    b.extend_from_slice(&NDA_DST.to_ne_bytes());
    b.extend_from_slice(&ip.octets());
    b.extend_from_slice(&10u16.to_ne_bytes());
    b.extend_from_slice(&NDA_LLADDR.to_ne_bytes());
    b.extend_from_slice(&mac);
    b.extend_from_slice(&[0, 0]);
    debug_assert_eq!(b.len(), REQUEST_LEN);
    b
}

/// The error code of the `NLMSG_ERROR` answer to request `seq` (0 is
/// success), or `None` for anything else.
fn parse_ack(b: &[u8], seq: u32) -> Option<i32> {
    let u16_at = |i: usize| b.get(i..i + 2).map(|s| u16::from_ne_bytes([s[0], s[1]]));
    let u32_at = |i: usize| {
        b.get(i..i + 4)
            .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
    };
    if u16_at(4)? != NLMSG_ERROR || u32_at(8)? != seq {
        return None;
    }
    u32_at(16).map(|e| e as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_has_the_rtnetlink_layout() {
        let b = encode_new_neighbour(7, 3, Ipv4Addr::new(10, 0, 0, 5), [2, 0, 0, 0, 0, 9]);
        assert_eq!(b.len(), 48);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 48);
        assert_eq!(u16::from_ne_bytes(b[4..6].try_into().unwrap()), 28);
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        assert_eq!(b[16], AF_INET);
        assert_eq!(u32::from_ne_bytes(b[20..24].try_into().unwrap()), 3);
        assert_eq!(&b[32..36], &[10, 0, 0, 5]);
        assert_eq!(&b[40..46], &[2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn acks_are_matched_by_sequence_and_carry_the_errno() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack[8..12].copy_from_slice(&5u32.to_ne_bytes());
        ack[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(parse_ack(&ack, 5), Some(-1));
        assert_eq!(parse_ack(&ack, 6), None);
        assert_eq!(parse_ack(&ack[..10], 5), None, "truncated");
    }
}
