//! RMCP, RMCP+ and IPMI LAN packets: building requests and parsing replies
//! (IPMI 2.0 specification, sections 13.6-13.32 and 22-28).
//!
//! Ours, not ipmi-rs: ipmi-rs has no cipher suite 17, no chassis commands
//! and a blocking socket layer; its packet code is tied to that layer. The
//! formats here are small, and owning them lets every parser be fuzzed
//! (`crates/maas-power/fuzz`, target `ipmi`).
//!
//! Every parser takes untrusted bytes and returns an [`IpmiPacketError`] on
//! anything short, inconsistent or unauthenticated; none indexes without a
//! bounds check, so none can panic.

use aes::Aes128;
use aes::cipher::{Array, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use hmac::{Hmac, Mac};

/// The RMCP header of every IPMI packet: version 6, no ACK, class IPMI.
pub const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xFF, 0x07];
/// The remote console's software id (requester address).
pub const CONSOLE_ADDR: u8 = 0x81;
/// The BMC's address (responder).
pub const BMC_ADDR: u8 = 0x20;

/// RMCP+ payload types (table 13-16).
pub mod payload {
    /// An IPMI message.
    pub const IPMI: u8 = 0x00;
    /// RMCP+ Open Session Request.
    pub const OPEN_SESSION_REQUEST: u8 = 0x10;
    /// RMCP+ Open Session Response.
    pub const OPEN_SESSION_RESPONSE: u8 = 0x11;
    /// RAKP Message 1.
    pub const RAKP1: u8 = 0x12;
    /// RAKP Message 2.
    pub const RAKP2: u8 = 0x13;
    /// RAKP Message 3.
    pub const RAKP3: u8 = 0x14;
    /// RAKP Message 4.
    pub const RAKP4: u8 = 0x15;
}

/// Why a packet from a BMC cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpmiPacketError {
    /// Fewer bytes than the format needs.
    #[error("{what} is truncated: {needed} bytes needed, {got} present")]
    Truncated {
        /// The part being read.
        what: &'static str,
        /// The bytes it needs.
        needed: usize,
        /// The bytes there are.
        got: usize,
    },
    /// A field with a value the format does not allow.
    #[error("{what}: {detail}")]
    Malformed {
        /// The part being read.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The integrity code (or an RAKP code) does not match.
    #[error("the {what} does not match")]
    Integrity {
        /// Which code.
        what: &'static str,
    },
}

fn need(what: &'static str, buf: &[u8], needed: usize) -> Result<(), IpmiPacketError> {
    if buf.len() < needed {
        Err(IpmiPacketError::Truncated {
            what,
            needed,
            got: buf.len(),
        })
    } else {
        Ok(())
    }
}

fn malformed(what: &'static str, detail: impl Into<String>) -> IpmiPacketError {
    IpmiPacketError::Malformed {
        what,
        detail: detail.into(),
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    // Callers check the length first; a short slice reads as zeros rather
    // than panicking.
    let mut b = [0u8; 4];
    if let Some(s) = buf.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

fn array16(buf: &[u8], at: usize) -> [u8; 16] {
    let mut b = [0u8; 16];
    if let Some(s) = buf.get(at..at + 16) {
        b.copy_from_slice(s);
    }
    b
}

/// The cipher suites we speak (IPMI 2.0 table 22-20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    Suite3,
    /// 17: RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    Suite17,
}

impl CipherSuite {
    /// The suite id.
    pub fn id(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 3,
            CipherSuite::Suite17 => 17,
        }
    }

    /// The suite with this id, if we speak it.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            3 => Some(CipherSuite::Suite3),
            17 => Some(CipherSuite::Suite17),
            _ => None,
        }
    }

    /// The authentication algorithm number (table 13-17).
    pub fn auth_alg(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 0x01,
            CipherSuite::Suite17 => 0x03,
        }
    }

    /// The integrity algorithm number (table 13-18).
    pub fn integrity_alg(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 0x01,
            CipherSuite::Suite17 => 0x04,
        }
    }

    /// The confidentiality algorithm number (table 13-19): AES-CBC-128.
    pub fn conf_alg(self) -> u8 {
        0x01
    }

    /// The length of a full HMAC (the RAKP 2 and 3 codes, the SIK).
    pub fn hmac_len(self) -> usize {
        match self {
            CipherSuite::Suite3 => 20,
            CipherSuite::Suite17 => 32,
        }
    }

    /// The length of the RAKP 4 integrity check value and of each
    /// packet's AuthCode (HMAC-SHA1-96, HMAC-SHA256-128).
    pub fn icv_len(self) -> usize {
        match self {
            CipherSuite::Suite3 => 12,
            CipherSuite::Suite17 => 16,
        }
    }

    /// HMAC over the concatenation of `parts`, full length.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            // HMAC takes keys of any length; this cannot fail.
            let Ok(mut m) = <M as KeyInit>::new_from_slice(key) else {
                return Vec::new();
            };
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        match self {
            CipherSuite::Suite3 => run::<Hmac<sha1::Sha1>>(key, parts),
            CipherSuite::Suite17 => run::<Hmac<sha2::Sha256>>(key, parts),
        }
    }
}

/// What the RAKP exchange shares: the values every code is computed from
/// (IPMI 2.0 section 13.31).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp {
    /// The suite.
    pub suite: CipherSuite,
    /// Our session id (SID_M).
    pub console_sid: u32,
    /// The BMC's session id (SID_C).
    pub bmc_sid: u32,
    /// Our random number (R_M).
    pub console_rand: [u8; 16],
    /// The BMC's random number (R_C).
    pub bmc_rand: [u8; 16],
    /// The BMC's GUID.
    pub bmc_guid: [u8; 16],
    /// The requested role byte as sent in RAKP 1 (privilege level and the
    /// name-only lookup bit).
    pub role: u8,
    /// The user name (at most 16 bytes).
    pub user: Vec<u8>,
}

impl Rakp {
    fn user_len(&self) -> [u8; 1] {
        [u8::try_from(self.user.len()).unwrap_or(u8::MAX)]
    }

    /// The key exchange code the BMC must send in RAKP 2:
    /// HMAC_Kuid(SID_M, SID_C, R_M, R_C, GUID_C, ROLE_M, ULENGTH_M, UNAME_M).
    pub fn rakp2_code(&self, password: &[u8]) -> Vec<u8> {
        self.suite.hmac(
            password,
            &[
                &self.console_sid.to_le_bytes(),
                &self.bmc_sid.to_le_bytes(),
                &self.console_rand,
                &self.bmc_rand,
                &self.bmc_guid,
                &[self.role],
                &self.user_len(),
                &self.user,
            ],
        )
    }

    /// The code we send in RAKP 3:
    /// HMAC_Kuid(R_C, SID_M, ROLE_M, ULENGTH_M, UNAME_M).
    pub fn rakp3_code(&self, password: &[u8]) -> Vec<u8> {
        self.suite.hmac(
            password,
            &[
                &self.bmc_rand,
                &self.console_sid.to_le_bytes(),
                &[self.role],
                &self.user_len(),
                &self.user,
            ],
        )
    }

    /// The session integrity key: HMAC_Kg(R_M, R_C, ROLE_M, ULENGTH_M,
    /// UNAME_M), with K_g the BMC key or, when none is set, the password.
    pub fn sik(&self, kg: &[u8]) -> Vec<u8> {
        self.suite.hmac(
            kg,
            &[
                &self.console_rand,
                &self.bmc_rand,
                &[self.role],
                &self.user_len(),
                &self.user,
            ],
        )
    }

    /// The integrity check value the BMC must send in RAKP 4:
    /// HMAC_SIK(R_M, SID_C, GUID_C), truncated to the suite's ICV length.
    pub fn rakp4_icv(&self, sik: &[u8]) -> Vec<u8> {
        let mut v = self.suite.hmac(
            sik,
            &[
                &self.console_rand,
                &self.bmc_sid.to_le_bytes(),
                &self.bmc_guid,
            ],
        );
        v.truncate(self.suite.icv_len());
        v
    }
}

/// The keys of an established session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    suite: CipherSuite,
    k1: Vec<u8>,
    aes_key: [u8; 16],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// K1 = HMAC_SIK(0x01 x 20) for integrity and K2 = HMAC_SIK(0x02 x
    /// 20), whose first 16 bytes are the AES key. The constants are 20
    /// bytes for SHA-256 too (section 13.32).
    pub fn derive(suite: CipherSuite, sik: &[u8]) -> Self {
        let k1 = suite.hmac(sik, &[&[0x01; 20]]);
        let k2 = suite.hmac(sik, &[&[0x02; 20]]);
        Self {
            suite,
            k1,
            aes_key: array16(&k2, 0),
        }
    }

    /// The suite.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// The integrity key K1.
    pub fn k1(&self) -> &[u8] {
        &self.k1
    }

    /// The AES-128 key (the first 16 bytes of K2).
    pub fn aes_key(&self) -> &[u8; 16] {
        &self.aes_key
    }

    /// AES-CBC-128 encryption of an IPMI payload (section 13.29): the IV,
    /// then the payload, pad bytes 1, 2, 3... and the pad length, encrypted
    /// in 16-byte blocks. CBC chaining is ours (eight lines) over the
    /// `aes` block cipher.
    pub fn encrypt(&self, iv: [u8; 16], plain: &[u8]) -> Vec<u8> {
        let pad = (16 - (plain.len() + 1) % 16) % 16;
        let mut data = plain.to_vec();
        data.extend((1..=pad).map(|i| i as u8));
        data.push(pad as u8);
        let cipher = Aes128::new(&Array::from(self.aes_key));
        let mut out = iv.to_vec();
        let mut prev = iv;
        for chunk in data.chunks(16) {
            let mut block = [0u8; 16];
            for (i, b) in block.iter_mut().enumerate() {
                *b = chunk.get(i).copied().unwrap_or(0) ^ prev[i];
            }
            let mut arr = Array::from(block);
            cipher.encrypt_block(&mut arr);
            prev = arr.into();
            out.extend_from_slice(&prev);
        }
        out
    }

    /// Decrypts what [`SessionKeys::encrypt`] makes, checking the padding.
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, IpmiPacketError> {
        const WHAT: &str = "the encrypted payload";
        need(WHAT, data, 32)?;
        if !data.len().is_multiple_of(16) {
            return Err(malformed(
                WHAT,
                format!("{} bytes is not a whole number of blocks", data.len()),
            ));
        }
        let cipher = Aes128::new(&Array::from(self.aes_key));
        let mut prev = array16(data, 0);
        let mut out = Vec::with_capacity(data.len() - 16);
        for chunk in data[16..].chunks(16) {
            let mut arr = Array::from(array16(chunk, 0));
            cipher.decrypt_block(&mut arr);
            let block: [u8; 16] = arr.into();
            out.extend(block.iter().zip(prev.iter()).map(|(a, b)| a ^ b));
            prev = array16(chunk, 0);
        }
        let pad = usize::from(out.last().copied().unwrap_or(0));
        if pad > 15 || pad + 1 > out.len() {
            return Err(malformed(WHAT, format!("pad length {pad}")));
        }
        let body_len = out.len() - pad - 1;
        if out[body_len..body_len + pad]
            .iter()
            .enumerate()
            .any(|(i, b)| usize::from(*b) != i + 1)
        {
            return Err(malformed(WHAT, "the confidentiality pad is not 1, 2, 3..."));
        }
        out.truncate(body_len);
        Ok(out)
    }
}

/// A packet from a BMC with its session wrapper removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The payload type ([`payload`]); IPMI 1.5 packets read as
    /// [`payload::IPMI`].
    pub payload_type: u8,
    /// The session id in the header (ours, for replies in a session).
    pub session_id: u32,
    /// The session sequence number.
    pub seq: u32,
    /// Whether it was authenticated (AuthCode checked) and encrypted.
    pub authenticated: bool,
    /// The payload, decrypted.
    pub payload: Vec<u8>,
}

/// A sessionless IPMI 1.5 packet (for Get Channel Authentication
/// Capabilities before any session).
pub fn build_v15_sessionless(message: &[u8]) -> Vec<u8> {
    let mut p = RMCP_HEADER.to_vec();
    p.push(0x00); // auth type none
    p.extend_from_slice(&[0; 8]); // sequence number, session id
    p.push(u8::try_from(message.len()).unwrap_or(u8::MAX));
    p.extend_from_slice(message);
    p
}

/// An IPMI 2.0 (RMCP+) packet. With `keys`, the payload is encrypted with
/// `iv` and the packet carries an AuthCode.
pub fn build_v20(
    payload_type: u8,
    session_id: u32,
    seq: u32,
    payload: &[u8],
    keys: Option<&SessionKeys>,
    iv: [u8; 16],
) -> Vec<u8> {
    let body = match keys {
        Some(k) => k.encrypt(iv, payload),
        None => payload.to_vec(),
    };
    let mut p = RMCP_HEADER.to_vec();
    let session_start = p.len();
    p.push(0x06);
    p.push(if keys.is_some() {
        0xC0 | payload_type
    } else {
        payload_type
    });
    p.extend_from_slice(&session_id.to_le_bytes());
    p.extend_from_slice(&seq.to_le_bytes());
    p.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_le_bytes());
    p.extend_from_slice(&body);
    if let Some(k) = keys {
        // Integrity pad: from the auth type through the next-header byte
        // is a multiple of 4.
        let pad = (4 - (p.len() - session_start + 2) % 4) % 4;
        p.extend(std::iter::repeat_n(0xFF, pad));
        p.push(pad as u8);
        p.push(0x07);
        let mut code = k.suite.hmac(&k.k1, &[&p[session_start..]]);
        code.truncate(k.suite.icv_len());
        p.extend_from_slice(&code);
    }
    p
}

/// Parses a packet from a BMC. `keys` are needed for authenticated
/// packets: their AuthCode is checked and their payload decrypted;
/// without keys an authenticated packet is refused.
pub fn parse_packet(buf: &[u8], keys: Option<&SessionKeys>) -> Result<Packet, IpmiPacketError> {
    need("the RMCP header", buf, 5)?;
    if buf[0] != 0x06 || buf[3] & 0x1F != 0x07 {
        return Err(malformed(
            "the RMCP header",
            format!("{:02x?} is not an IPMI class RMCP header", &buf[..4]),
        ));
    }
    let s = &buf[4..];
    match s[0] {
        0x06 => {
            need("the RMCP+ session header", s, 12)?;
            let ptype = s[1];
            let encrypted = ptype & 0x80 != 0;
            let authenticated = ptype & 0x40 != 0;
            let payload_type = ptype & 0x3F;
            if payload_type == 0x02 {
                return Err(malformed(
                    "the RMCP+ session header",
                    "OEM payloads are not spoken",
                ));
            }
            let session_id = u32_at(s, 2);
            let seq = u32_at(s, 6);
            let len = usize::from(u16::from_le_bytes([s[10], s[11]]));
            need("the RMCP+ payload", s, 12 + len)?;
            let body = &s[12..12 + len];
            if authenticated != encrypted {
                // We only ever open sessions with both; anything else is
                // not a reply to us.
                return Err(malformed(
                    "the RMCP+ session header",
                    "integrity without confidentiality (or the reverse)",
                ));
            }
            if !authenticated {
                return Ok(Packet {
                    payload_type,
                    session_id,
                    seq,
                    authenticated,
                    payload: body.to_vec(),
                });
            }
            let Some(keys) = keys else {
                return Err(malformed(
                    "the RMCP+ session header",
                    "an authenticated packet outside a session",
                ));
            };
            let icv = keys.suite.icv_len();
            let trailer = &s[12 + len..];
            need("the integrity trailer", trailer, 2 + icv)?;
            let pad = usize::from(trailer[trailer.len() - icv - 2]);
            let next = trailer[trailer.len() - icv - 1];
            if next != 0x07 || trailer.len() != pad + 2 + icv {
                return Err(malformed(
                    "the integrity trailer",
                    format!(
                        "pad length {pad}, next header {next:#04x}, {} bytes",
                        trailer.len()
                    ),
                ));
            }
            let signed_len = s.len() - icv;
            let expected = keys.suite.hmac(&keys.k1, &[&s[..signed_len]]);
            // Not constant time: the code is checked on our side only, an
            // attacker learns nothing about a key from our timing of a
            // reply we then drop.
            if expected.get(..icv) != Some(&s[signed_len..]) {
                return Err(IpmiPacketError::Integrity {
                    what: "packet AuthCode",
                });
            }
            Ok(Packet {
                payload_type,
                session_id,
                seq,
                authenticated,
                payload: keys.decrypt(body)?,
            })
        }
        0x00 => {
            need("the IPMI 1.5 session header", s, 10)?;
            let len = usize::from(s[9]);
            need("the IPMI 1.5 payload", s, 10 + len)?;
            Ok(Packet {
                payload_type: payload::IPMI,
                session_id: u32_at(s, 5),
                seq: u32_at(s, 1),
                authenticated: false,
                payload: s[10..10 + len].to_vec(),
            })
        }
        other => Err(malformed(
            "the session header",
            format!("auth type {other:#04x} is not spoken (only none and RMCP+)"),
        )),
    }
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// An IPMI LAN request message (section 13.8): responder address,
/// NetFn/LUN, checksum, requester address, sequence/LUN, command, data,
/// checksum.
pub fn build_request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![BMC_ADDR, netfn << 2];
    m.push(checksum(&m));
    m.extend_from_slice(&[CONSOLE_ADDR, (rq_seq & 0x3F) << 2, cmd]);
    m.extend_from_slice(data);
    m.push(checksum(&m[3..]));
    m
}

/// An IPMI response message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The response NetFn (request NetFn + 1).
    pub netfn: u8,
    /// The requester sequence number it answers.
    pub rq_seq: u8,
    /// The command.
    pub cmd: u8,
    /// The completion code (0 is success).
    pub completion: u8,
    /// The data after the completion code.
    pub data: Vec<u8>,
}

/// Parses an IPMI LAN response message, checking both checksums.
pub fn parse_response(m: &[u8]) -> Result<Response, IpmiPacketError> {
    const WHAT: &str = "the IPMI response";
    need(WHAT, m, 8)?;
    if checksum(&m[..2]) != m[2] {
        return Err(malformed(WHAT, "bad header checksum"));
    }
    let last = m.len() - 1;
    if checksum(&m[3..last]) != m[last] {
        return Err(malformed(WHAT, "bad data checksum"));
    }
    let netfn = m[1] >> 2;
    if netfn & 1 == 0 {
        return Err(malformed(WHAT, format!("NetFn {netfn:#04x} is a request")));
    }
    Ok(Response {
        netfn,
        rq_seq: m[4] >> 2,
        cmd: m[5],
        completion: m[6],
        data: m[7..last].to_vec(),
    })
}

/// An RMCP+ Open Session Request (section 13.17).
pub fn build_open_session_request(
    tag: u8,
    max_priv: u8,
    console_sid: u32,
    suite: CipherSuite,
) -> Vec<u8> {
    let mut p = vec![tag, max_priv, 0, 0];
    p.extend_from_slice(&console_sid.to_le_bytes());
    for (kind, alg) in [
        (0u8, suite.auth_alg()),
        (1, suite.integrity_alg()),
        (2, suite.conf_alg()),
    ] {
        p.extend_from_slice(&[kind, 0, 0, 8, alg, 0, 0, 0]);
    }
    p
}

/// An RMCP+ Open Session Response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenSessionResponse {
    /// The message tag echoed.
    pub tag: u8,
    /// The RMCP+ status code (0 is success; table 13-15).
    pub status: u8,
    /// The maximum privilege level granted.
    pub max_priv: u8,
    /// Our session id echoed.
    pub console_sid: u32,
    /// The BMC's session id.
    pub bmc_sid: u32,
    /// The algorithms chosen: authentication, integrity, confidentiality.
    pub algorithms: [u8; 3],
}

impl OpenSessionResponse {
    /// Parses one; an error status may come with the rest cut off.
    pub fn parse(p: &[u8]) -> Result<Self, IpmiPacketError> {
        const WHAT: &str = "the Open Session Response";
        need(WHAT, p, 2)?;
        let (tag, status) = (p[0], p[1]);
        if status != 0 {
            return Ok(Self {
                tag,
                status,
                max_priv: 0,
                console_sid: if p.len() >= 8 { u32_at(p, 4) } else { 0 },
                bmc_sid: 0,
                algorithms: [0; 3],
            });
        }
        need(WHAT, p, 36)?;
        let mut algorithms = [0u8; 3];
        for (i, alg) in algorithms.iter_mut().enumerate() {
            let rec = &p[12 + i * 8..20 + i * 8];
            if usize::from(rec[0]) != i || rec[3] != 8 {
                return Err(malformed(
                    WHAT,
                    format!("algorithm record {i} is {rec:02x?}"),
                ));
            }
            *alg = rec[4] & 0x3F;
        }
        Ok(Self {
            tag,
            status,
            max_priv: p[2] & 0x0F,
            console_sid: u32_at(p, 4),
            bmc_sid: u32_at(p, 8),
            algorithms,
        })
    }
}

/// RAKP Message 1 (section 13.20).
pub fn build_rakp1(
    tag: u8,
    bmc_sid: u32,
    console_rand: &[u8; 16],
    role: u8,
    user: &[u8],
) -> Vec<u8> {
    let mut p = vec![tag, 0, 0, 0];
    p.extend_from_slice(&bmc_sid.to_le_bytes());
    p.extend_from_slice(console_rand);
    p.extend_from_slice(&[role, 0, 0, u8::try_from(user.len()).unwrap_or(u8::MAX)]);
    p.extend_from_slice(user);
    p
}

/// RAKP Message 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp2 {
    /// The message tag echoed.
    pub tag: u8,
    /// The RMCP+ status code.
    pub status: u8,
    /// Our session id echoed.
    pub console_sid: u32,
    /// The BMC's random number.
    pub bmc_rand: [u8; 16],
    /// The BMC's GUID.
    pub bmc_guid: [u8; 16],
    /// The key exchange authentication code.
    pub code: Vec<u8>,
}

impl Rakp2 {
    /// Parses one for `suite` (the code length depends on it).
    pub fn parse(p: &[u8], suite: CipherSuite) -> Result<Self, IpmiPacketError> {
        const WHAT: &str = "RAKP message 2";
        need(WHAT, p, 2)?;
        if p[1] != 0 {
            return Ok(Self {
                tag: p[0],
                status: p[1],
                console_sid: 0,
                bmc_rand: [0; 16],
                bmc_guid: [0; 16],
                code: Vec::new(),
            });
        }
        need(WHAT, p, 40 + suite.hmac_len())?;
        Ok(Self {
            tag: p[0],
            status: p[1],
            console_sid: u32_at(p, 4),
            bmc_rand: array16(p, 8),
            bmc_guid: array16(p, 24),
            code: p[40..40 + suite.hmac_len()].to_vec(),
        })
    }
}

/// RAKP Message 3 (section 13.22).
pub fn build_rakp3(tag: u8, status: u8, bmc_sid: u32, code: &[u8]) -> Vec<u8> {
    let mut p = vec![tag, status, 0, 0];
    p.extend_from_slice(&bmc_sid.to_le_bytes());
    p.extend_from_slice(code);
    p
}

/// RAKP Message 4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp4 {
    /// The message tag echoed.
    pub tag: u8,
    /// The RMCP+ status code.
    pub status: u8,
    /// Our session id echoed.
    pub console_sid: u32,
    /// The integrity check value.
    pub icv: Vec<u8>,
}

impl Rakp4 {
    /// Parses one for `suite`.
    pub fn parse(p: &[u8], suite: CipherSuite) -> Result<Self, IpmiPacketError> {
        const WHAT: &str = "RAKP message 4";
        need(WHAT, p, 2)?;
        if p[1] != 0 {
            return Ok(Self {
                tag: p[0],
                status: p[1],
                console_sid: 0,
                icv: Vec::new(),
            });
        }
        need(WHAT, p, 8 + suite.icv_len())?;
        Ok(Self {
            tag: p[0],
            status: p[1],
            console_sid: u32_at(p, 4),
            icv: p[8..8 + suite.icv_len()].to_vec(),
        })
    }
}

/// What Get Channel Authentication Capabilities tells (section 22.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelAuthCaps {
    /// The channel number.
    pub channel: u8,
    /// IPMI 2.0 (RMCP+) sessions are supported.
    pub ipmi20: bool,
    /// K_g is set to something other than zeros (a BMC key is needed).
    pub kg_set: bool,
    /// Non-null user names are enabled.
    pub named_users: bool,
}

impl ChannelAuthCaps {
    /// Parses the response data (after the completion code).
    pub fn parse(d: &[u8]) -> Result<Self, IpmiPacketError> {
        need("the channel authentication capabilities", d, 8)?;
        let extended = d[1] & 0x80 != 0;
        Ok(Self {
            channel: d[0] & 0x0F,
            ipmi20: extended && d[3] & 0x02 != 0,
            kg_set: d[2] & 0x20 != 0,
            named_users: d[2] & 0x04 != 0,
        })
    }
}

/// Get Chassis Status: whether the power is on (section 28.2).
pub fn parse_chassis_power(d: &[u8]) -> Result<bool, IpmiPacketError> {
    need("the chassis status", d, 3)?;
    Ok(d[0] & 0x01 != 0)
}

/// The boot flags parameter (Set/Get System Boot Options parameter 5,
/// section 28.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags {
    /// The flags are valid.
    pub valid: bool,
    /// Every boot, not only the next.
    pub persistent: bool,
    /// EFI boot rather than legacy.
    pub efi: bool,
    /// The boot device selector (bits 5:2 of data byte 2): 1 PXE, 2 disk.
    pub device: u8,
}

impl BootFlags {
    /// The five data bytes of parameter 5.
    pub fn encode(self) -> [u8; 5] {
        let mut b1 = 0u8;
        if self.valid {
            b1 |= 0x80;
        }
        if self.persistent {
            b1 |= 0x40;
        }
        if self.efi {
            b1 |= 0x20;
        }
        [b1, (self.device & 0x0F) << 2, 0, 0, 0]
    }

    /// Parses Get System Boot Options response data for parameter 5:
    /// parameter version, parameter selector, then the five data bytes.
    pub fn parse_get_response(d: &[u8]) -> Result<Self, IpmiPacketError> {
        const WHAT: &str = "the boot flags";
        need(WHAT, d, 4)?;
        if d[1] & 0x7F != 5 {
            return Err(malformed(
                WHAT,
                format!("parameter {} instead of 5", d[1] & 0x7F),
            ));
        }
        Ok(Self {
            valid: d[2] & 0x80 != 0,
            persistent: d[2] & 0x40 != 0,
            efi: d[2] & 0x20 != 0,
            device: (d[3] >> 2) & 0x0F,
        })
    }
}

/// What Get Device ID tells (section 20.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceId {
    /// The device id.
    pub device_id: u8,
    /// Firmware revision, major.
    pub firmware_major: u8,
    /// Firmware revision, minor (BCD).
    pub firmware_minor: u8,
    /// The IPMI version (BCD: 0x02 is 2.0, 0x51 is 1.5).
    pub ipmi_version: u8,
    /// The IANA manufacturer id.
    pub manufacturer: u32,
    /// The product id.
    pub product: u16,
}

impl DeviceId {
    /// Parses the response data (after the completion code).
    pub fn parse(d: &[u8]) -> Result<Self, IpmiPacketError> {
        need("the device id", d, 11)?;
        Ok(Self {
            device_id: d[0],
            firmware_major: d[2] & 0x7F,
            firmware_minor: d[3],
            ipmi_version: d[4],
            manufacturer: u32::from_le_bytes([d[6], d[7], d[8] & 0x0F, 0]),
            product: u16::from_le_bytes([d[9], d[10]]),
        })
    }
}

/// Runs every parser on `data` (the fuzz target's body): must return,
/// never panic, whatever the bytes.
///
/// # Panics
///
/// Only on a bug: when a packet built around `data` with session keys does
/// not parse back to `data` (the property the fuzzer checks).
pub fn parse_everything(data: &[u8]) {
    let keys3 = SessionKeys::derive(CipherSuite::Suite3, b"sik");
    let keys17 = SessionKeys::derive(CipherSuite::Suite17, b"sik");
    let _ = parse_packet(data, None);
    let _ = parse_packet(data, Some(&keys3));
    let _ = parse_packet(data, Some(&keys17));
    let _ = keys3.decrypt(data);
    let _ = parse_response(data);
    let _ = OpenSessionResponse::parse(data);
    for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
        let _ = Rakp2::parse(data, suite);
        let _ = Rakp4::parse(data, suite);
    }
    let _ = ChannelAuthCaps::parse(data);
    let _ = parse_chassis_power(data);
    let _ = BootFlags::parse_get_response(data);
    let _ = DeviceId::parse(data);
    // An authenticated packet that verifies, whose payload is the input:
    // drives the decrypt-and-parse path past the AuthCode check.
    if data.len() > 1024 {
        return;
    }
    let iv = array16(data, 0);
    let built = build_v20(payload::IPMI, 1, 1, data, Some(&keys17), iv);
    if let Ok(p) = parse_packet(&built, Some(&keys17)) {
        assert_eq!(p.payload, data, "encrypt/decrypt round trip");
        let _ = parse_response(&p.payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip_with_both_suites() {
        for suite in [CipherSuite::Suite3, CipherSuite::Suite17] {
            let keys = SessionKeys::derive(suite, b"some sik");
            for len in 0..40 {
                let payload: Vec<u8> = (0..len as u8).collect();
                let pkt = build_v20(payload::IPMI, 7, 9, &payload, Some(&keys), [3; 16]);
                assert_eq!((pkt.len() - 4 - suite.icv_len()) % 4, 0);
                let back = parse_packet(&pkt, Some(&keys)).unwrap();
                assert_eq!(back.payload, payload);
                assert_eq!((back.session_id, back.seq), (7, 9));
                // Any flipped bit is caught.
                for i in 4..pkt.len() {
                    let mut bad = pkt.clone();
                    bad[i] ^= 0x10;
                    assert!(parse_packet(&bad, Some(&keys)).is_err(), "byte {i}");
                }
                // Any truncation is an error, not a panic.
                for cut in 0..pkt.len() {
                    assert!(parse_packet(&pkt[..cut], Some(&keys)).is_err());
                }
            }
        }
    }

    #[test]
    fn request_checksums() {
        // Get Channel Authentication Capabilities as ipmitool sends it
        // (Figure 13-4's example layout).
        let m = build_request(0x06, 0x38, 0, &[0x8E, 0x04]);
        assert_eq!(m, [0x20, 0x18, 0xC8, 0x81, 0x00, 0x38, 0x8E, 0x04, 0xB5]);
    }

    #[test]
    fn parsers_refuse_short_input() {
        for n in 0..64 {
            let data = vec![0u8; n];
            parse_everything(&data);
            let ff = vec![0xFFu8; n];
            parse_everything(&ff);
        }
    }
}
