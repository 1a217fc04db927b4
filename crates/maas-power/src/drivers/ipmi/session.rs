//! An RMCP+ session over tokio UDP: Get Channel Authentication
//! Capabilities, Open Session, RAKP 1-4, Set Session Privilege Level, then
//! encrypted and authenticated IPMI requests, and Close Session.
//!
//! Ours, not ipmi-rs: ipmi-rs is blocking, speaks suite 3 only and sends
//! an ASF presence ping first, which pyghmi and virtualbmc never answer.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tracing::debug;

use super::wire::{
    self, ChannelAuthCaps, CipherSuite, OpenSessionResponse, Rakp, Rakp2, Rakp4, SessionKeys,
    payload,
};
use crate::error::PowerError;
use crate::secret::Secret;

/// NetFn App.
pub(crate) const NETFN_APP: u8 = 0x06;
/// NetFn Chassis.
pub(crate) const NETFN_CHASSIS: u8 = 0x00;

/// How to reach and log in to one BMC.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    /// `host:port`, for messages.
    pub target: String,
    pub host: String,
    pub port: u16,
    pub user: Vec<u8>,
    pub password: Secret,
    pub kg: Option<Secret>,
    pub suite: CipherSuite,
    /// 2 user, 3 operator, 4 administrator.
    pub privilege: u8,
    /// How long to wait for one reply before sending again.
    pub timeout: Duration,
    /// Sends per request, the first included.
    pub tries: u32,
}

/// An open session.
pub(crate) struct Session {
    sock: UdpSocket,
    target: String,
    keys: SessionKeys,
    console_sid: u32,
    bmc_sid: u32,
    seq: u32,
    rq_seq: u8,
    timeout: Duration,
    tries: u32,
    closed: bool,
    /// The completion code of the last response.
    last_completion: Option<u8>,
    pub(crate) last_used: Instant,
}

/// What to make of a datagram while waiting for a reply.
enum Verdict<T> {
    Done(T),
    /// Not ours (a late reply to an earlier try, another session).
    Ignore,
    /// Ours but unusable; keep waiting, report it if nothing better comes.
    Bad(String),
    /// Ours and final.
    Fail(PowerError),
}

fn connection(target: &str, e: impl Into<crate::error::BoxError>) -> PowerError {
    PowerError::Connection {
        target: target.to_owned(),
        source: e.into(),
    }
}

/// Sends `make()` and waits for a datagram `accept` takes, sending again
/// after each `timeout`, at most `tries` times.
async fn exchange<T>(
    sock: &UdpSocket,
    target: &str,
    operation: &str,
    timeout: Duration,
    tries: u32,
    mut make: impl FnMut() -> Vec<u8>,
    mut accept: impl FnMut(&[u8]) -> Verdict<T>,
) -> Result<T, PowerError> {
    let mut buf = vec![0u8; 2048];
    let mut last_bad: Option<String> = None;
    for _ in 0..tries.max(1) {
        let pkt = make();
        sock.send(&pkt).await.map_err(|e| connection(target, e))?;
        let deadline = Instant::now() + timeout;
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => break,
                // ICMP port unreachable on loopback: nobody listens.
                Ok(Err(e)) => return Err(connection(target, e)),
                Ok(Ok(n)) => n,
            };
            match accept(buf.get(..n).unwrap_or_default()) {
                Verdict::Done(t) => return Ok(t),
                Verdict::Ignore => {}
                Verdict::Bad(d) => {
                    debug!(target, operation, detail = %d, "unusable reply");
                    last_bad = Some(d);
                }
                Verdict::Fail(e) => return Err(e),
            }
        }
    }
    match last_bad {
        Some(detail) => Err(PowerError::BadReply {
            target: target.to_owned(),
            detail: format!("{operation}: {detail}"),
        }),
        None => Err(connection(
            target,
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer to {operation} after {} tries of {timeout:?}",
                    tries.max(1)
                ),
            ),
        )),
    }
}

/// An RMCP+ status code (table 13-15) from Open Session or RAKP as an
/// error.
fn status_error(cfg: &SessionConfig, stage: &str, status: u8) -> PowerError {
    let target = cfg.target.clone();
    match status {
        // Out of session slots: may pass.
        0x01 | 0x0B => PowerError::Action {
            target,
            operation: stage.to_owned(),
            detail: format!("RMCP+ status {status:#04x}: insufficient resources"),
        },
        // Unauthorized name, role or privilege; invalid integrity check
        // value (wrong password or K_g).
        0x09 | 0x0A | 0x0D | 0x0F => PowerError::Auth { target },
        0x04..=0x07 | 0x10 | 0x11 => PowerError::Unsupported {
            driver: "ipmi".into(),
            operation: format!(
                "cipher suite {} at {target} (RMCP+ status {status:#04x} in {stage})",
                cfg.suite.id()
            ),
        },
        _ => PowerError::Refused {
            target,
            operation: stage.to_owned(),
            detail: format!("RMCP+ status {status:#04x}"),
        },
    }
}

/// A completion code (table 5-2) as an error.
pub(crate) fn completion_error(target: &str, operation: &str, cc: u8) -> PowerError {
    let detail = format!("completion code {cc:#04x}");
    match cc {
        0xC1 | 0xC2 => PowerError::Unsupported {
            driver: "ipmi".into(),
            operation: format!("{operation} at {target} ({detail})"),
        },
        0xD4 => PowerError::Refused {
            target: target.to_owned(),
            operation: operation.to_owned(),
            detail: format!("{detail}: insufficient privilege level"),
        },
        0xC7..=0xCC | 0x80 => PowerError::Refused {
            target: target.to_owned(),
            operation: operation.to_owned(),
            detail,
        },
        _ => PowerError::Action {
            target: target.to_owned(),
            operation: operation.to_owned(),
            detail,
        },
    }
}

/// The datagram `accept` for a sessionless or session IPMI response.
fn accept_response(
    buf: &[u8],
    keys: Option<&SessionKeys>,
    console_sid: u32,
    rq_seq: u8,
    cmd: u8,
) -> Verdict<wire::Response> {
    let pkt = match wire::parse_packet(buf, keys) {
        Ok(p) => p,
        Err(e) => return Verdict::Bad(e.to_string()),
    };
    if pkt.payload_type != payload::IPMI || (keys.is_some() && pkt.session_id != console_sid) {
        return Verdict::Ignore;
    }
    if keys.is_some() && !pkt.authenticated {
        return Verdict::Bad("an unauthenticated reply inside the session".into());
    }
    match wire::parse_response(&pkt.payload) {
        Ok(r) if r.rq_seq == rq_seq && r.cmd == cmd => Verdict::Done(r),
        Ok(_) => Verdict::Ignore,
        Err(e) => Verdict::Bad(e.to_string()),
    }
}

impl Session {
    /// Resolves the BMC, logs in and raises the session to the configured
    /// privilege level.
    pub(crate) async fn open(cfg: &SessionConfig) -> Result<Self, PowerError> {
        let target = cfg.target.as_str();
        let addr: SocketAddr = tokio::net::lookup_host((cfg.host.as_str(), cfg.port))
            .await
            .map_err(|e| connection(target, e))?
            .next()
            .ok_or_else(|| connection(target, "the address resolves to nothing"))?;
        let local: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let sock = UdpSocket::bind(local)
            .await
            .map_err(|e| connection(target, e))?;
        sock.connect(addr)
            .await
            .map_err(|e| connection(target, e))?;
        let (timeout, tries) = (cfg.timeout, cfg.tries);

        // Get Channel Authentication Capabilities, sessionless: is RMCP+
        // there at all?
        let caps_req = wire::build_request(NETFN_APP, 0x38, 0, &[0x8E, cfg.privilege]);
        let caps = exchange(
            &sock,
            target,
            "get channel authentication capabilities",
            timeout,
            tries,
            || wire::build_v15_sessionless(&caps_req),
            |b| match accept_response(b, None, 0, 0, 0x38) {
                Verdict::Done(r) if r.completion != 0 => Verdict::Fail(completion_error(
                    target,
                    "get channel authentication capabilities",
                    r.completion,
                )),
                Verdict::Done(r) => match ChannelAuthCaps::parse(&r.data) {
                    Ok(c) => Verdict::Done(c),
                    Err(e) => Verdict::Bad(e.to_string()),
                },
                Verdict::Ignore => Verdict::Ignore,
                Verdict::Bad(d) => Verdict::Bad(d),
                Verdict::Fail(e) => Verdict::Fail(e),
            },
        )
        .await?;
        if !caps.ipmi20 {
            return Err(PowerError::Unsupported {
                driver: "ipmi".into(),
                operation: format!("IPMI 2.0 (RMCP+) at {target}: the BMC offers IPMI 1.5 only"),
            });
        }

        // Open Session.
        let console_sid = rand::random::<u32>() | 1;
        let tag = rand::random::<u8>() & 0x3F;
        let open_req = wire::build_open_session_request(tag, cfg.privilege, console_sid, cfg.suite);
        let open = exchange(
            &sock,
            target,
            "open session",
            timeout,
            tries,
            || {
                wire::build_v20(
                    payload::OPEN_SESSION_REQUEST,
                    0,
                    0,
                    &open_req,
                    None,
                    [0; 16],
                )
            },
            |b| {
                let pkt = match wire::parse_packet(b, None) {
                    Ok(p) => p,
                    Err(e) => return Verdict::Bad(e.to_string()),
                };
                if pkt.payload_type != payload::OPEN_SESSION_RESPONSE {
                    return Verdict::Ignore;
                }
                match OpenSessionResponse::parse(&pkt.payload) {
                    Ok(r) if r.tag != tag => Verdict::Ignore,
                    Ok(r) if r.status != 0 => {
                        Verdict::Fail(status_error(cfg, "open session", r.status))
                    }
                    Ok(r) if r.console_sid != console_sid => Verdict::Ignore,
                    Ok(r) => Verdict::Done(r),
                    Err(e) => Verdict::Bad(e.to_string()),
                }
            },
        )
        .await?;
        let wanted = [
            cfg.suite.auth_alg(),
            cfg.suite.integrity_alg(),
            cfg.suite.conf_alg(),
        ];
        if open.algorithms != wanted {
            return Err(PowerError::Unsupported {
                driver: "ipmi".into(),
                operation: format!(
                    "cipher suite {} at {target} (the BMC chose algorithms {:?})",
                    cfg.suite.id(),
                    open.algorithms
                ),
            });
        }

        // RAKP 1 and 2. Name-only lookup (bit 4): the user's privilege
        // limit comes from the name, as ipmitool and pyghmi ask.
        let mut rakp = Rakp {
            suite: cfg.suite,
            console_sid,
            bmc_sid: open.bmc_sid,
            console_rand: rand::random(),
            bmc_rand: [0; 16],
            bmc_guid: [0; 16],
            role: 0x10 | cfg.privilege,
            user: cfg.user.clone(),
        };
        let tag1 = tag.wrapping_add(1) & 0x3F;
        let rakp1 = wire::build_rakp1(
            tag1,
            rakp.bmc_sid,
            &rakp.console_rand,
            rakp.role,
            &rakp.user,
        );
        let rakp2 = exchange(
            &sock,
            target,
            "RAKP 1",
            timeout,
            tries,
            || wire::build_v20(payload::RAKP1, 0, 0, &rakp1, None, [0; 16]),
            |b| {
                let pkt = match wire::parse_packet(b, None) {
                    Ok(p) => p,
                    Err(e) => return Verdict::Bad(e.to_string()),
                };
                if pkt.payload_type != payload::RAKP2 {
                    return Verdict::Ignore;
                }
                match Rakp2::parse(&pkt.payload, cfg.suite) {
                    Ok(r) if r.tag != tag1 => Verdict::Ignore,
                    Ok(r) if r.status != 0 => Verdict::Fail(status_error(cfg, "RAKP 2", r.status)),
                    Ok(r) if r.console_sid != console_sid => Verdict::Ignore,
                    Ok(r) => Verdict::Done(r),
                    Err(e) => Verdict::Bad(e.to_string()),
                }
            },
        )
        .await?;
        rakp.bmc_rand = rakp2.bmc_rand;
        rakp.bmc_guid = rakp2.bmc_guid;
        let password = cfg.password.expose().as_bytes();
        if rakp.rakp2_code(password) != rakp2.code {
            // The BMC proved it knows a different password: ours is wrong.
            // Fatal, and never retried (retries lock accounts on some BMCs).
            debug!(target, "RAKP 2 code mismatch: wrong password");
            return Err(PowerError::Auth {
                target: target.to_owned(),
            });
        }

        // RAKP 3 and 4.
        let kg = match &cfg.kg {
            Some(k) if !k.is_empty() => k.expose().as_bytes().to_vec(),
            _ => password.to_vec(),
        };
        let sik = rakp.sik(&kg);
        let tag3 = tag1.wrapping_add(1) & 0x3F;
        let rakp3 = wire::build_rakp3(tag3, 0, rakp.bmc_sid, &rakp.rakp3_code(password));
        let rakp4 = exchange(
            &sock,
            target,
            "RAKP 3",
            timeout,
            tries,
            || wire::build_v20(payload::RAKP3, 0, 0, &rakp3, None, [0; 16]),
            |b| {
                let pkt = match wire::parse_packet(b, None) {
                    Ok(p) => p,
                    Err(e) => return Verdict::Bad(e.to_string()),
                };
                if pkt.payload_type != payload::RAKP4 {
                    return Verdict::Ignore;
                }
                match Rakp4::parse(&pkt.payload, cfg.suite) {
                    Ok(r) if r.tag != tag3 => Verdict::Ignore,
                    Ok(r) if r.status != 0 => Verdict::Fail(status_error(cfg, "RAKP 4", r.status)),
                    Ok(r) if r.console_sid != console_sid => Verdict::Ignore,
                    Ok(r) => Verdict::Done(r),
                    Err(e) => Verdict::Bad(e.to_string()),
                }
            },
        )
        .await?;
        if rakp.rakp4_icv(&sik) != rakp4.icv {
            debug!(
                target,
                kg_set = caps.kg_set,
                "RAKP 4 check value mismatch: wrong K_g"
            );
            return Err(PowerError::Auth {
                target: target.to_owned(),
            });
        }

        let mut session = Session {
            sock,
            target: target.to_owned(),
            keys: SessionKeys::derive(cfg.suite, &sik),
            console_sid,
            bmc_sid: rakp.bmc_sid,
            seq: 0,
            rq_seq: 0,
            timeout,
            tries,
            closed: false,
            last_completion: None,
            last_used: Instant::now(),
        };
        // Sessions start at User level; chassis control needs Operator
        // (ipmi_sim answers 0xD4 without this).
        match session
            .command(
                NETFN_APP,
                0x3B,
                &[cfg.privilege],
                "set session privilege level",
            )
            .await
        {
            // 0x80-0x82: the level is above what this user or channel may
            // have: a credentials problem, not worth retrying.
            Err(PowerError::Refused { .. }) | Err(PowerError::Action { .. })
                if session
                    .last_completion
                    .is_some_and(|cc| (0x80..=0x82).contains(&cc)) =>
            {
                return Err(PowerError::Auth {
                    target: target.to_owned(),
                });
            }
            other => other?,
        };
        debug!(target, suite = cfg.suite.id(), "IPMI session open");
        Ok(session)
    }

    fn next_packet(&mut self, message: &[u8]) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1).max(1);
        wire::build_v20(
            payload::IPMI,
            self.bmc_sid,
            self.seq,
            message,
            Some(&self.keys),
            rand::random(),
        )
    }

    /// One request in the session; returns the response data after a zero
    /// completion code, or the completion code as an error.
    pub(crate) async fn command(
        &mut self,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        operation: &str,
    ) -> Result<Vec<u8>, PowerError> {
        self.rq_seq = (self.rq_seq + 1) & 0x3F;
        let rq_seq = self.rq_seq;
        let message = wire::build_request(netfn, cmd, rq_seq, data);
        let mut packets = Vec::new();
        for _ in 0..self.tries.max(1) {
            packets.push(self.next_packet(&message));
        }
        let keys = self.keys.clone();
        let console_sid = self.console_sid;
        let (sock, target, timeout, tries) =
            (&self.sock, self.target.clone(), self.timeout, self.tries);
        let mut it = packets.into_iter();
        let resp = exchange(
            sock,
            &target,
            operation,
            timeout,
            tries,
            || it.next().unwrap_or_default(),
            |b| accept_response(b, Some(&keys), console_sid, rq_seq, cmd),
        )
        .await?;
        self.last_used = Instant::now();
        self.last_completion = Some(resp.completion);
        if resp.completion != 0 {
            return Err(completion_error(&self.target, operation, resp.completion));
        }
        Ok(resp.data)
    }

    /// Closes the session (one try, errors ignored: the BMC times it out).
    pub(crate) async fn close(mut self) {
        let id = self.bmc_sid.to_le_bytes();
        self.tries = 1;
        self.timeout = self.timeout.min(Duration::from_millis(500));
        let _ = self.command(NETFN_APP, 0x3C, &id, "close session").await;
        self.closed = true;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A session dropped without close() (a timed-out attempt, a dropped
        // driver): send Close Session without waiting, so BMCs with few
        // session slots do not fill up.
        if !self.closed {
            self.rq_seq = (self.rq_seq + 1) & 0x3F;
            let message =
                wire::build_request(NETFN_APP, 0x3C, self.rq_seq, &self.bmc_sid.to_le_bytes());
            let pkt = self.next_packet(&message);
            let _ = self.sock.try_send(&pkt);
        }
    }
}
