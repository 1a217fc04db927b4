//! The network side of a simulated machine: a DHCP relay shared by the
//! fleet (machines on loopback cannot broadcast to the rack, so they reach
//! it as a relay agent would carry them: `giaddr` set, replies to the
//! relay's port), and a TFTP client.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use maas_core::MacAddress;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::SimError;

/// The fleet's relay agent: one socket, replies dispatched by MAC.
pub(crate) struct Relay {
    socket: Arc<UdpSocket>,
    giaddr: Ipv4Addr,
    server: SocketAddr,
    waiting: Arc<Mutex<HashMap<MacAddress, mpsc::Sender<Message>>>>,
}

/// What a DHCP exchange gave a machine.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    pub(crate) ip: Ipv4Addr,
    pub(crate) prefix: u8,
    pub(crate) next_server: Ipv4Addr,
    pub(crate) filename: String,
}

/// How a machine's firmware presents itself to DHCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Firmware {
    /// BIOS PXE ROM (architecture 0): `lpxelinux.0` over TFTP.
    PxeBios,
    /// iPXE (user class `iPXE`): a script over HTTP.
    Ipxe,
}

impl Relay {
    /// A relay on `socket` (bound at `giaddr`) towards the DHCP server.
    pub(crate) fn new(
        socket: std::net::UdpSocket,
        giaddr: Ipv4Addr,
        server: SocketAddr,
    ) -> Result<Relay, SimError> {
        let relay_err = |e: std::io::Error| SimError::new(format!("DHCP relay on {giaddr}: {e}"));
        socket.set_nonblocking(true).map_err(relay_err)?;
        let socket = Arc::new(UdpSocket::from_std(socket).map_err(relay_err)?);
        let waiting: Arc<Mutex<HashMap<MacAddress, mpsc::Sender<Message>>>> = Arc::default();
        let (s, w) = (socket.clone(), waiting.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok((n, _)) = s.recv_from(&mut buf).await else {
                    continue;
                };
                // Replies come from our rack; a reply that does not decode
                // is dropped as a real relay would.
                let Ok(m) = Message::from_bytes(&buf[..n]) else {
                    continue;
                };
                let Some(mac) = m
                    .chaddr()
                    .get(..6)
                    .and_then(|c| <[u8; 6]>::try_from(c).ok())
                else {
                    continue;
                };
                let tx = w
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&MacAddress(mac))
                    .cloned();
                if let Some(tx) = tx {
                    let _ = tx.try_send(m);
                }
            }
        });
        Ok(Relay {
            socket,
            giaddr,
            server,
            waiting,
        })
    }

    fn message(&self, xid: u32, mac: MacAddress, kind: MessageType, fw: Firmware) -> Message {
        let mut m = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            self.giaddr,
            &mac.0,
        );
        m.set_opcode(Opcode::BootRequest);
        m.set_hops(1);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
        ));
        o.insert(DhcpOption::ClientSystemArchitecture(0u16.into()));
        if fw == Firmware::Ipxe {
            o.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        }
        m
    }

    async fn exchange(
        &self,
        rx: &mut mpsc::Receiver<Message>,
        msg: &Message,
        want: MessageType,
        xid: u32,
    ) -> Result<Message, SimError> {
        let bytes = msg
            .to_vec()
            .map_err(|e| SimError::new(format!("DHCP encode: {e}")))?;
        let mut wait = Duration::from_millis(500);
        for _ in 0..6 {
            self.socket
                .send_to(&bytes, self.server)
                .await
                .map_err(|e| SimError::new(format!("DHCP send: {e}")))?;
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(m)) if m.xid() == xid => match m.opts().get(OptionCode::MessageType) {
                        Some(DhcpOption::MessageType(t)) if *t == want => return Ok(m),
                        Some(DhcpOption::MessageType(MessageType::Nak)) => {
                            return Err(SimError::new("DHCP NAK"));
                        }
                        _ => continue,
                    },
                    Ok(Some(_)) => continue,
                    Ok(None) => return Err(SimError::new("DHCP relay closed")),
                    Err(_) => break,
                }
            }
            wait = (wait * 2).min(Duration::from_secs(4));
        }
        Err(SimError::new(format!(
            "no DHCP {want:?} from {}",
            self.server
        )))
    }

    /// DISCOVER, OFFER, REQUEST, ACK.
    pub(crate) async fn lease(&self, mac: MacAddress, fw: Firmware) -> Result<Lease, SimError> {
        let (tx, mut rx) = mpsc::channel(8);
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mac, tx);
        let res = async {
            let xid: u32 = rand::random();
            let discover = self.message(xid, mac, MessageType::Discover, fw);
            let offer = self
                .exchange(&mut rx, &discover, MessageType::Offer, xid)
                .await?;
            let server_id = match offer.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(a)) => *a,
                _ => return Err(SimError::new("OFFER without a server identifier")),
            };
            let mut request = self.message(xid, mac, MessageType::Request, fw);
            request
                .opts_mut()
                .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
            request
                .opts_mut()
                .insert(DhcpOption::ServerIdentifier(server_id));
            let ack = self
                .exchange(&mut rx, &request, MessageType::Ack, xid)
                .await?;
            let prefix = match ack.opts().get(OptionCode::SubnetMask) {
                Some(DhcpOption::SubnetMask(m)) => u32::from(*m).count_ones() as u8,
                _ => 24,
            };
            let filename = match ack.opts().get(OptionCode::BootfileName) {
                Some(DhcpOption::BootfileName(f)) => String::from_utf8_lossy(f).into_owned(),
                _ => ack
                    .fname()
                    .map(|f| String::from_utf8_lossy(f).trim_end_matches('\0').to_owned())
                    .unwrap_or_default(),
            };
            Ok(Lease {
                ip: ack.yiaddr(),
                prefix,
                next_server: ack.siaddr(),
                filename,
            })
        }
        .await;
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&mac);
        res
    }
}

/// Reads `path` from the TFTP server at `server`, from `local` (the
/// machine's address): RRQ with `blksize 1408` and `tsize`, DATA and ACK
/// until a short block. Returns the bytes.
pub(crate) async fn tftp_get(
    local: Ipv4Addr,
    server: SocketAddr,
    path: &str,
) -> Result<Vec<u8>, SimError> {
    let fail = |what: String| SimError::new(format!("TFTP {path}: {what}"));
    let sock = UdpSocket::bind(SocketAddrV4::new(local, 0))
        .await
        .map_err(|e| fail(format!("bind {local}: {e}")))?;
    let mut rrq = vec![0u8, 1];
    for part in [path, "octet", "blksize", "1408", "tsize", "0"] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    let mut out = Vec::new();
    let mut blksize = 512usize;
    let mut expected: u16 = 1;
    let mut peer: Option<SocketAddr> = None;
    let mut last_sent = rrq.clone();
    let mut buf = vec![0u8; 65536];
    let mut tries = 0;
    sock.send_to(&rrq, server)
        .await
        .map_err(|e| fail(e.to_string()))?;
    loop {
        let got = tokio::time::timeout(Duration::from_secs(1), sock.recv_from(&mut buf)).await;
        let (n, from) = match got {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => {
                tries += 1;
                if tries > 5 {
                    return Err(fail("timed out".into()));
                }
                sock.send_to(&last_sent, peer.unwrap_or(server))
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                continue;
            }
        };
        if peer.is_some_and(|p| p != from) || n < 4 {
            continue;
        }
        peer = Some(from);
        let op = u16::from_be_bytes([buf[0], buf[1]]);
        match op {
            // OACK: the options the server took.
            6 => {
                let fields: Vec<&[u8]> = buf[2..n].split(|b| *b == 0).collect();
                for pair in fields.chunks(2) {
                    if let [k, v] = pair
                        && k.eq_ignore_ascii_case(b"blksize")
                    {
                        blksize = std::str::from_utf8(v)
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(512);
                    }
                }
                last_sent = vec![0, 4, 0, 0];
            }
            3 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                if block == expected {
                    out.extend_from_slice(&buf[4..n]);
                    last_sent = vec![0, 4, buf[2], buf[3]];
                    sock.send_to(&last_sent, from)
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                    expected = expected.wrapping_add(1);
                    tries = 0;
                    if n - 4 < blksize {
                        return Ok(out);
                    }
                }
                continue;
            }
            5 => {
                let msg = String::from_utf8_lossy(&buf[4..n])
                    .trim_end_matches('\0')
                    .to_owned();
                return Err(fail(format!(
                    "error {}: {msg}",
                    u16::from_be_bytes([buf[2], buf[3]])
                )));
            }
            _ => continue,
        }
        sock.send_to(&last_sent, from)
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
}
