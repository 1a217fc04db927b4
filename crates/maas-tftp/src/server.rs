//! The server: one socket for requests, one task and one socket per transfer.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout_at};
use tracing::{Instrument, debug, info_span, warn};

use crate::packet::{self, ErrorCode, Mode, Packet, Request};
use crate::provider::{FileProvider, FileRequest, ProviderError};

/// The longest wait between retransmissions (clients commonly retransmit
/// their ACK after 5 s).
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Limits and timings. `Default` suits network boot on a LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpConfig {
    /// Largest block size granted (RFC 2348 allows up to 65464).
    pub max_block_size: u16,
    /// Largest window granted (RFC 7440); 1 = lock-step.
    pub max_window_size: u16,
    /// First retransmission timeout when the client does not ask for one.
    /// Each further timeout without progress doubles it, up to
    /// [`MAX_BACKOFF`]: clients that answer a duplicate only once (atftp)
    /// recover on their own timer, which the server must outlast.
    pub timeout: Duration,
    /// Retransmissions of one packet or window before the transfer is dropped.
    pub max_retries: u32,
    /// Concurrent transfers; further requests get "server busy".
    pub max_transfers: usize,
}

impl Default for TftpConfig {
    fn default() -> Self {
        TftpConfig {
            max_block_size: 65464,
            max_window_size: 64,
            timeout: Duration::from_secs(1),
            max_retries: 5,
            max_transfers: 1024,
        }
    }
}

/// Counters, readable while the server runs.
#[derive(Debug, Default)]
pub struct TftpMetrics {
    /// Read requests received.
    pub requests: AtomicU64,
    /// Transfers finished with the last block acknowledged.
    pub completed: AtomicU64,
    /// Transfers the client ended with an error packet (OVMF's size query).
    pub aborted_by_client: AtomicU64,
    /// Transfers given up after retries.
    pub timed_out: AtomicU64,
    /// Requests refused (not found, access violation, write request, busy).
    pub refused: AtomicU64,
    /// Datagrams that did not parse, counted and dropped.
    pub malformed: AtomicU64,
    /// Payload bytes sent (retransmissions included).
    pub bytes_sent: AtomicU64,
    /// Packets sent again after a timeout.
    pub retransmits: AtomicU64,
    /// Read requests ignored because the same client address and port has a
    /// transfer running (a client that resent its request when the first
    /// answer was lost); answering would start a second transfer.
    pub duplicate_requests: AtomicU64,
}

/// A client address with a transfer running; released on drop.
struct Running {
    active: Arc<Mutex<HashSet<SocketAddr>>>,
    peer: SocketAddr,
}

impl Running {
    fn claim(active: &Arc<Mutex<HashSet<SocketAddr>>>, peer: SocketAddr) -> Option<Self> {
        let mut set = active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.insert(peer).then(|| Running {
            active: active.clone(),
            peer,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.peer);
    }
}

/// A TFTP server over a [`FileProvider`].
pub struct TftpServer<P: FileProvider> {
    socket: UdpSocket,
    provider: Arc<P>,
    config: Arc<TftpConfig>,
    metrics: Arc<TftpMetrics>,
    pktinfo: bool,
}

impl<P: FileProvider> std::fmt::Debug for TftpServer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TftpServer")
            .field("local", &self.socket.local_addr().ok())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<P: FileProvider> TftpServer<P> {
    /// Binds `addr` and serves from `provider`.
    pub async fn bind(addr: SocketAddr, provider: P, config: TftpConfig) -> io::Result<Self> {
        Self::from_socket(UdpSocket::bind(addr).await?, provider, config)
    }

    /// Serves on an already-bound socket (tests bind port 0; a rack may get
    /// one from systemd). When it is bound to the unspecified address, the
    /// server asks the kernel for each request's destination address so
    /// replies leave from, and providers learn, the address the client used.
    pub fn from_socket(socket: UdpSocket, provider: P, config: TftpConfig) -> io::Result<Self> {
        let local = socket.local_addr()?;
        let pktinfo = local.ip() == IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        if pktinfo {
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv4PacketInfo, &true)
                .map_err(io::Error::from)?;
        }
        Ok(TftpServer {
            socket,
            provider: Arc::new(provider),
            config: Arc::new(config),
            metrics: Arc::default(),
            pktinfo,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The counters.
    pub fn metrics(&self) -> Arc<TftpMetrics> {
        self.metrics.clone()
    }

    /// Serves until the task is dropped.
    pub async fn serve(self) -> io::Result<()> {
        self.serve_until(std::future::pending()).await
    }

    /// Serves until `shutdown` completes, then lets running transfers finish.
    pub async fn serve_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> io::Result<()> {
        let listen = self.socket.local_addr()?;
        let slots = Arc::new(Semaphore::new(self.config.max_transfers));
        let mut transfers = JoinSet::new();
        let active = Arc::new(Mutex::new(HashSet::new()));
        let mut buf = vec![0u8; 2048];
        tokio::pin!(shutdown);
        loop {
            let (len, peer, local_ip) = tokio::select! {
                r = self.receive(&mut buf) => match r {
                    Ok(v) => v,
                    // ICMP errors from earlier replies surface here; keep serving.
                    Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) => continue,
                    Err(e) => return Err(e),
                },
                () = &mut shutdown => break,
            };
            while transfers.try_join_next().is_some() {}
            let local = SocketAddr::new(local_ip, listen.port());
            match Packet::parse(&buf[..len]) {
                Ok(Packet::Request(req)) if req.write => {
                    self.metrics.refused.fetch_add(1, Ordering::Relaxed);
                    let _ = self
                        .socket
                        .send_to(
                            &packet::error(
                                ErrorCode::AccessViolation,
                                "write requests are refused: this server is read-only",
                            ),
                            peer,
                        )
                        .await;
                }
                Ok(Packet::Request(req)) => {
                    let Some(running) = Running::claim(&active, peer) else {
                        self.metrics
                            .duplicate_requests
                            .fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    self.metrics.requests.fetch_add(1, Ordering::Relaxed);
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        self.metrics.refused.fetch_add(1, Ordering::Relaxed);
                        let _ = self
                            .socket
                            .send_to(
                                &packet::error(ErrorCode::NotDefined, "server busy, try again"),
                                peer,
                            )
                            .await;
                        continue;
                    };
                    let t = Transfer {
                        provider: self.provider.clone(),
                        config: self.config.clone(),
                        metrics: self.metrics.clone(),
                        peer,
                        local,
                    };
                    let span = info_span!("tftp", %peer, file = %req.filename);
                    transfers.spawn(
                        async move {
                            t.run(req).await;
                            drop(permit);
                            drop(running);
                        }
                        .instrument(span),
                    );
                }
                Ok(other) => {
                    // DATA/ACK/ERROR/OACK belong on a transfer's own port.
                    self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, ?other, "stray packet on the request port dropped");
                }
                Err(e) => {
                    self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, error = %e, "malformed packet dropped");
                    if matches!(buf[..len].get(..2), Some([0, 1 | 2])) {
                        let _ = self
                            .socket
                            .send_to(
                                &packet::error(ErrorCode::IllegalOperation, &e.to_string()),
                                peer,
                            )
                            .await;
                    }
                }
            }
        }
        while transfers.join_next().await.is_some() {}
        Ok(())
    }

    async fn receive(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, IpAddr)> {
        if !self.pktinfo {
            let (n, peer) = self.socket.recv_from(buf).await?;
            return Ok((n, peer, self.socket.local_addr()?.ip()));
        }
        loop {
            self.socket.readable().await?;
            match self.socket.try_io(tokio::io::Interest::READABLE, || {
                recv_with_destination(&self.socket, buf)
            }) {
                Ok(v) => return Ok(v),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// `recvmsg` with `IP_PKTINFO`: the datagram, its sender and the address it
/// was sent to.
fn recv_with_destination(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, IpAddr)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg};
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::libc::in_pktinfo);
    let msg = recvmsg::<SockaddrIn>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let peer = msg
        .address
        .map(|a| SocketAddr::from(std::net::SocketAddrV4::from(a)))
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let mut local = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
            local = IpAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
        }
    }
    Ok((msg.bytes, peer, local))
}

/// Reads blocks from a source, converting to netascii when asked.
struct BlockReader {
    reader: Box<dyn AsyncRead + Send + Unpin>,
    netascii: bool,
    pending: VecDeque<u8>,
    raw: Vec<u8>,
    eof: bool,
}

impl BlockReader {
    /// Fills `out` with up to `n` bytes; fewer only at the end.
    async fn fill(&mut self, out: &mut Vec<u8>, n: usize) -> io::Result<()> {
        if !self.netascii {
            let start = out.len();
            out.resize(start + n, 0);
            let mut got = 0;
            while got < n {
                let r = self.reader.read(&mut out[start + got..]).await?;
                if r == 0 {
                    break;
                }
                got += r;
            }
            out.truncate(start + got);
            return Ok(());
        }
        while self.pending.len() < n && !self.eof {
            self.raw.resize(8192, 0);
            let r = self.reader.read(&mut self.raw).await?;
            if r == 0 {
                self.eof = true;
            }
            for &b in &self.raw[..r] {
                match b {
                    b'\n' => self.pending.extend([b'\r', b'\n']),
                    b'\r' => self.pending.extend([b'\r', 0]),
                    other => self.pending.push_back(other),
                }
            }
        }
        let take = n.min(self.pending.len());
        out.extend(self.pending.drain(..take));
        Ok(())
    }
}

struct Transfer<P: FileProvider> {
    provider: Arc<P>,
    config: Arc<TftpConfig>,
    metrics: Arc<TftpMetrics>,
    peer: SocketAddr,
    local: SocketAddr,
}

/// How a transfer ended.
enum End {
    Done,
    ClientError,
    TimedOut,
}

impl<P: FileProvider> Transfer<P> {
    async fn run(self, req: Request) {
        let socket = match UdpSocket::bind(SocketAddr::new(self.local.ip(), 0)).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot open a transfer socket");
                return;
            }
        };
        let request = FileRequest {
            peer: self.peer,
            local: self.local,
            path: &req.filename,
        };
        let source = match self.provider.open(&request).await {
            Ok(s) => s,
            Err(e) => {
                self.metrics.refused.fetch_add(1, Ordering::Relaxed);
                let code = match &e {
                    ProviderError::NotFound { .. } => ErrorCode::FileNotFound,
                    ProviderError::AccessDenied { .. } => ErrorCode::AccessViolation,
                    _ => ErrorCode::NotDefined,
                };
                debug!(error = %e, "request refused");
                let _ = socket
                    .send_to(&packet::error(code, &e.to_string()), self.peer)
                    .await;
                return;
            }
        };
        let netascii = req.mode == Mode::Netascii;
        let mut block_size = 512usize;
        let mut window = 1usize;
        let mut wait = self.config.timeout;
        let mut acked_options = Vec::new();
        for (name, value) in &req.options {
            match name.as_str() {
                "blksize" => {
                    if let Ok(v) = value.parse::<usize>()
                        && v >= 8
                    {
                        block_size = v.min(usize::from(self.config.max_block_size)).min(65464);
                        acked_options.push((name.clone(), block_size.to_string()));
                    }
                }
                "windowsize" => {
                    if let Ok(v) = value.parse::<usize>()
                        && (1..=65535).contains(&v)
                    {
                        window = v.min(usize::from(self.config.max_window_size.max(1)));
                        acked_options.push((name.clone(), window.to_string()));
                    }
                }
                "timeout" => {
                    if let Ok(v) = value.parse::<u64>()
                        && (1..=255).contains(&v)
                    {
                        wait = Duration::from_secs(v);
                        acked_options.push((name.clone(), v.to_string()));
                    }
                }
                "tsize" => {
                    // Netascii changes the size on the wire: do not promise
                    // one. An empty file gets none either: curl (7.88) and
                    // so tftpd-hpa's users reject "tsize 0" in an OACK, and
                    // RFC 2347 lets a server leave an option out.
                    if let (Some(size @ 1..), false) = (source.size, netascii) {
                        acked_options.push((name.clone(), size.to_string()));
                    }
                }
                _ => {}
            }
        }
        // Bound the memory one transfer can hold for retransmission.
        window = window.min((16 << 20) / block_size).max(1);
        // tokio reads files on its blocking pool: one hand-off per 512-byte
        // block would cost more than the block. Read ahead in large chunks.
        let reader = BlockReader {
            reader: Box::new(tokio::io::BufReader::with_capacity(
                256 << 10,
                source.reader,
            )),
            netascii,
            pending: VecDeque::new(),
            raw: Vec::new(),
            eof: false,
        };
        let mut sender = Sender {
            socket,
            peer: self.peer,
            metrics: &self.metrics,
            wait,
            retries: self.config.max_retries,
        };
        let end = if acked_options.is_empty() {
            sender.send_file(reader, block_size, window).await
        } else {
            match sender.negotiate(&packet::oack(&acked_options)).await {
                Ok(true) => sender.send_file(reader, block_size, window).await,
                Ok(false) => Ok(End::ClientError),
                Err(e) => Err(e),
            }
        };
        match end {
            Ok(End::Done) => {
                self.metrics.completed.fetch_add(1, Ordering::Relaxed);
                debug!(block_size, window, "transfer complete");
            }
            Ok(End::ClientError) => {
                self.metrics
                    .aborted_by_client
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(End::TimedOut) => {
                self.metrics.timed_out.fetch_add(1, Ordering::Relaxed);
                debug!("transfer timed out");
            }
            Err(e) => {
                self.metrics.timed_out.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "transfer failed");
                let _ = sender
                    .socket
                    .send_to(
                        &packet::error(ErrorCode::NotDefined, "read error"),
                        self.peer,
                    )
                    .await;
            }
        }
    }
}

struct Sender<'a> {
    socket: UdpSocket,
    peer: SocketAddr,
    metrics: &'a TftpMetrics,
    wait: Duration,
    retries: u32,
}

/// What arrived while waiting for an acknowledgement.
enum Reply {
    Ack(u16),
    ClientError,
    Timeout,
}

impl Sender<'_> {
    async fn next_reply(&self, deadline: Instant, buf: &mut [u8]) -> io::Result<Reply> {
        loop {
            let (n, from) = match timeout_at(deadline, self.socket.recv_from(buf)).await {
                Err(_) => return Ok(Reply::Timeout),
                Ok(Err(e))
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return Ok(Reply::ClientError);
                }
                Ok(r) => r?,
            };
            if from != self.peer {
                // RFC 1350: a packet from another transfer ID gets an error,
                // and this transfer goes on.
                let _ = self
                    .socket
                    .send_to(
                        &packet::error(ErrorCode::UnknownTransferId, "unknown transfer ID"),
                        from,
                    )
                    .await;
                continue;
            }
            match Packet::parse(&buf[..n]) {
                Ok(Packet::Ack { block }) => return Ok(Reply::Ack(block)),
                Ok(Packet::Error { code, message }) => {
                    debug!(?code, %message, "client ended the transfer");
                    return Ok(Reply::ClientError);
                }
                _ => {
                    self.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Sends the OACK until the client acknowledges block 0. `Ok(false)`:
    /// the client declined (OVMF's "error 8" after learning the size).
    /// The wait after `retries` consecutive timeouts.
    fn backoff(&self, retries: u32) -> Duration {
        self.wait
            .saturating_mul(1 << retries.min(16))
            .min(MAX_BACKOFF.max(self.wait))
    }

    async fn negotiate(&mut self, oack: &[u8]) -> io::Result<bool> {
        let mut buf = [0u8; 1024];
        for attempt in 0..=self.retries {
            if attempt > 0 {
                self.metrics.retransmits.fetch_add(1, Ordering::Relaxed);
            }
            self.socket.send_to(oack, self.peer).await?;
            let deadline = Instant::now() + self.backoff(attempt);
            loop {
                match self.next_reply(deadline, &mut buf).await? {
                    Reply::Ack(0) => return Ok(true),
                    Reply::Ack(_) => continue,
                    Reply::ClientError => return Ok(false),
                    Reply::Timeout => break,
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no acknowledgement of the option negotiation",
        ))
    }

    /// Sends the file in windows. Only a timeout causes a retransmission: a
    /// duplicate ACK is ignored (the sorcerer's apprentice bug is answering
    /// each duplicate with a duplicate). An ACK inside the window means the
    /// client got blocks up to it; the window restarts after it (RFC 7440).
    async fn send_file(
        &mut self,
        mut reader: BlockReader,
        block_size: usize,
        window: usize,
    ) -> io::Result<End> {
        let mut inflight: VecDeque<(u64, Vec<u8>)> = VecDeque::with_capacity(window);
        let mut acked: u64 = 0;
        let mut next: u64 = 1;
        let mut last: Option<u64> = None;
        let mut sent_upto: u64 = 0;
        let mut retries = 0;
        let mut buf = [0u8; 1024];
        loop {
            while inflight.len() < window && last.is_none() {
                let mut pkt = Vec::with_capacity(4 + block_size);
                packet::data_header(&mut pkt, next as u16);
                reader.fill(&mut pkt, block_size).await?;
                if pkt.len() - 4 < block_size {
                    last = Some(next);
                }
                inflight.push_back((next, pkt));
                next += 1;
            }
            let from = sent_upto;
            for (n, pkt) in inflight.iter().filter(|(n, _)| *n > from) {
                self.socket.send_to(pkt, self.peer).await?;
                self.metrics
                    .bytes_sent
                    .fetch_add((pkt.len() - 4) as u64, Ordering::Relaxed);
                sent_upto = *n;
            }
            let deadline = Instant::now() + self.backoff(retries);
            loop {
                match self.next_reply(deadline, &mut buf).await? {
                    Reply::Ack(wire) => {
                        let delta = u64::from(wire.wrapping_sub(acked as u16));
                        let abs = acked + delta;
                        if delta == 0 || abs > sent_upto {
                            continue; // duplicate or bogus: wait on
                        }
                        acked = abs;
                        retries = 0;
                        while inflight.front().is_some_and(|(n, _)| *n <= acked) {
                            inflight.pop_front();
                        }
                        if last == Some(acked) {
                            return Ok(End::Done);
                        }
                        // Blocks after the ACK that were already sent are
                        // sent again: the client asked to restart there.
                        sent_upto = acked;
                        break;
                    }
                    Reply::ClientError => return Ok(End::ClientError),
                    Reply::Timeout => {
                        retries += 1;
                        if retries > self.retries {
                            return Ok(End::TimedOut);
                        }
                        self.metrics
                            .retransmits
                            .fetch_add(inflight.len() as u64, Ordering::Relaxed);
                        sent_upto = acked;
                        break;
                    }
                }
            }
        }
    }
}
