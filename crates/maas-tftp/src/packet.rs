//! TFTP packets (RFC 1350) with options (RFC 2347): parsing never panics and
//! names what is wrong; encoding writes into a caller's buffer.

use std::fmt;

/// Opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Opcode {
    /// Read request.
    Rrq = 1,
    /// Write request.
    Wrq = 2,
    /// Data.
    Data = 3,
    /// Acknowledgement.
    Ack = 4,
    /// Error.
    Error = 5,
    /// Option acknowledgement (RFC 2347).
    Oack = 6,
}

/// Transfer mode of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes as they are.
    Octet,
    /// Text: LF becomes CR LF, CR becomes CR NUL.
    Netascii,
}

/// TFTP error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// See the message.
    NotDefined = 0,
    /// File not found.
    FileNotFound = 1,
    /// Access violation.
    AccessViolation = 2,
    /// Disk full or allocation exceeded.
    DiskFull = 3,
    /// Illegal TFTP operation.
    IllegalOperation = 4,
    /// Unknown transfer ID.
    UnknownTransferId = 5,
    /// File already exists.
    FileExists = 6,
    /// No such user.
    NoSuchUser = 7,
    /// Option negotiation refused (RFC 2347); OVMF sends it after a size query.
    OptionRefused = 8,
}

impl ErrorCode {
    fn from_u16(v: u16) -> Self {
        match v {
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionRefused,
            _ => ErrorCode::NotDefined,
        }
    }
}

/// A request (RRQ or WRQ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Write request (refused by this server).
    pub write: bool,
    /// The file name as sent.
    pub filename: String,
    /// Transfer mode.
    pub mode: Mode,
    /// Options in the order sent, names lowercased.
    pub options: Vec<(String, String)>,
}

/// A parsed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// RRQ or WRQ.
    Request(Request),
    /// DATA.
    Data {
        /// Block number.
        block: u16,
        /// Payload.
        data: &'a [u8],
    },
    /// ACK.
    Ack {
        /// Block number.
        block: u16,
    },
    /// ERROR.
    Error {
        /// Code.
        code: ErrorCode,
        /// Message.
        message: String,
    },
    /// OACK.
    Oack {
        /// Acknowledged options.
        options: Vec<(String, String)>,
    },
}

/// Why a packet could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    /// Fewer than the 2 or 4 bytes every packet starts with.
    #[error("packet too short ({len} bytes)")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// Not an opcode of RFC 1350 or 2347.
    #[error("unknown opcode {opcode}")]
    UnknownOpcode {
        /// The value.
        opcode: u16,
    },
    /// A string field was not NUL-terminated.
    #[error("{field} is not NUL-terminated")]
    Unterminated {
        /// Which field.
        field: &'static str,
    },
    /// A string field was not valid text.
    #[error("{field} is not valid UTF-8")]
    NotText {
        /// Which field.
        field: &'static str,
    },
    /// The mode is not octet or netascii.
    #[error("unsupported transfer mode {mode:?}")]
    BadMode {
        /// The mode.
        mode: String,
    },
    /// An option name without a value.
    #[error("option {name:?} has no value")]
    OptionWithoutValue {
        /// The option.
        name: String,
    },
}

/// The longest file name accepted (PXE firmware sends short ones; this only
/// bounds what a hostile client can make us carry around).
pub const MAX_FILENAME: usize = 1024;

fn cstr<'a>(buf: &'a [u8], field: &'static str) -> Result<(&'a str, &'a [u8]), PacketError> {
    let end = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(PacketError::Unterminated { field })?;
    let s = std::str::from_utf8(&buf[..end]).map_err(|_| PacketError::NotText { field })?;
    Ok((s, &buf[end + 1..]))
}

fn options(mut rest: &[u8]) -> Result<Vec<(String, String)>, PacketError> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        // Some clients pad requests with NULs; an empty name ends the list.
        if rest[0] == 0 {
            break;
        }
        let (name, r) = cstr(rest, "option name")?;
        if r.is_empty() {
            return Err(PacketError::OptionWithoutValue {
                name: name.to_owned(),
            });
        }
        let (value, r) = cstr(r, "option value")?;
        out.push((name.to_ascii_lowercase(), value.to_owned()));
        rest = r;
    }
    Ok(out)
}

impl<'a> Packet<'a> {
    /// Parses one datagram.
    pub fn parse(buf: &'a [u8]) -> Result<Self, PacketError> {
        if buf.len() < 2 {
            return Err(PacketError::TooShort { len: buf.len() });
        }
        let opcode = u16::from_be_bytes([buf[0], buf[1]]);
        let body = &buf[2..];
        let word = |b: &[u8]| -> Result<u16, PacketError> {
            if b.len() < 2 {
                Err(PacketError::TooShort { len: buf.len() })
            } else {
                Ok(u16::from_be_bytes([b[0], b[1]]))
            }
        };
        match opcode {
            1 | 2 => {
                let (filename, rest) = cstr(body, "file name")?;
                if filename.len() > MAX_FILENAME {
                    return Err(PacketError::NotText {
                        field: "file name (too long)",
                    });
                }
                let (mode, rest) = cstr(rest, "mode")?;
                let mode = match mode.to_ascii_lowercase().as_str() {
                    "octet" => Mode::Octet,
                    "netascii" => Mode::Netascii,
                    _ => {
                        return Err(PacketError::BadMode {
                            mode: mode.to_owned(),
                        });
                    }
                };
                Ok(Packet::Request(Request {
                    write: opcode == 2,
                    filename: filename.to_owned(),
                    mode,
                    options: options(rest)?,
                }))
            }
            3 => Ok(Packet::Data {
                block: word(body)?,
                data: &body[2..],
            }),
            4 => Ok(Packet::Ack { block: word(body)? }),
            5 => {
                let code = ErrorCode::from_u16(word(body)?);
                // Be lenient with the message: it is only ever logged.
                let msg = &body[2..];
                let end = msg.iter().position(|&b| b == 0).unwrap_or(msg.len());
                Ok(Packet::Error {
                    code,
                    message: String::from_utf8_lossy(&msg[..end]).into_owned(),
                })
            }
            6 => Ok(Packet::Oack {
                options: options(body)?,
            }),
            other => Err(PacketError::UnknownOpcode { opcode: other }),
        }
    }
}

/// Writes a DATA header followed by nothing; the caller appends the payload.
pub fn data_header(out: &mut Vec<u8>, block: u16) {
    out.clear();
    out.extend_from_slice(&(Opcode::Data as u16).to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

/// Encodes an ACK.
pub fn ack(block: u16) -> [u8; 4] {
    let [a, b] = (Opcode::Ack as u16).to_be_bytes();
    let [c, d] = block.to_be_bytes();
    [a, b, c, d]
}

/// Encodes an ERROR (the message is cut at 255 bytes and stripped of NULs).
pub fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len().min(255));
    out.extend_from_slice(&(Opcode::Error as u16).to_be_bytes());
    out.extend_from_slice(&(code as u16).to_be_bytes());
    out.extend(message.bytes().filter(|&b| b != 0).take(255));
    out.push(0);
    out
}

/// Encodes an OACK.
pub fn oack(options: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&(Opcode::Oack as u16).to_be_bytes());
    for (k, v) in options {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Encodes a request (for tests and clients).
pub fn request(write: bool, filename: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(if write { 2u16 } else { 1u16 }).to_be_bytes());
    for s in [filename, mode] {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    for (k, v) in options {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_parse_with_options() {
        let raw = request(
            false,
            "pxelinux.0",
            "OCTET",
            &[("BLKSIZE", "1468"), ("tsize", "0")],
        );
        let Packet::Request(r) = Packet::parse(&raw).unwrap() else {
            panic!()
        };
        assert_eq!(r.filename, "pxelinux.0");
        assert_eq!(r.mode, Mode::Octet);
        assert!(!r.write);
        assert_eq!(
            r.options,
            [
                ("blksize".to_string(), "1468".to_string()),
                ("tsize".into(), "0".into())
            ]
        );
    }

    #[test]
    fn malformed_packets_name_the_problem() {
        assert_eq!(Packet::parse(&[0]), Err(PacketError::TooShort { len: 1 }));
        assert_eq!(
            Packet::parse(&[0, 9, 1]),
            Err(PacketError::UnknownOpcode { opcode: 9 })
        );
        assert_eq!(
            Packet::parse(b"\x00\x01file"),
            Err(PacketError::Unterminated { field: "file name" })
        );
        assert_eq!(
            Packet::parse(b"\x00\x01file\x00mail\x00"),
            Err(PacketError::BadMode {
                mode: "mail".into()
            })
        );
        assert_eq!(
            Packet::parse(b"\x00\x01f\x00octet\x00blksize\x00"),
            Err(PacketError::OptionWithoutValue {
                name: "blksize".into()
            })
        );
        assert_eq!(
            Packet::parse(b"\x00\x01\xff\xfe\x00octet\x00"),
            Err(PacketError::NotText { field: "file name" })
        );
        assert_eq!(
            Packet::parse(b"\x00\x04\x00"),
            Err(PacketError::TooShort { len: 3 })
        );
    }

    #[test]
    fn encodings_round_trip() {
        assert_eq!(
            Packet::parse(&ack(65535)).unwrap(),
            Packet::Ack { block: 65535 }
        );
        assert_eq!(
            Packet::parse(&error(ErrorCode::OptionRefused, "no\0thanks")).unwrap(),
            Packet::Error {
                code: ErrorCode::OptionRefused,
                message: "nothanks".into()
            }
        );
        let o = vec![("tsize".to_string(), "42".to_string())];
        assert_eq!(
            Packet::parse(&oack(&o)).unwrap(),
            Packet::Oack { options: o }
        );
        let mut d = Vec::new();
        data_header(&mut d, 7);
        d.extend_from_slice(b"abc");
        assert_eq!(
            Packet::parse(&d).unwrap(),
            Packet::Data {
                block: 7,
                data: b"abc"
            }
        );
    }

    proptest! {
        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Packet::parse(&bytes);
        }

        #[test]
        fn requests_round_trip(name in "[a-zA-Z0-9/._-]{1,100}", blk in 8u16..65464) {
            let raw = request(false, &name, "octet", &[("blksize", &blk.to_string())]);
            let Packet::Request(r) = Packet::parse(&raw).unwrap() else { panic!() };
            prop_assert_eq!(r.filename, name);
            prop_assert_eq!(r.options[0].1.parse::<u16>().unwrap(), blk);
        }
    }
}
