//! Validated value types: MAC addresses, architectures, hostnames, domains.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// An Ethernet MAC address, shown as lowercase colon-separated hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// Parses `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff`, `aabb.ccdd.eeff` or
    /// `aabbccddeeff`, any case.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let err = || {
            ValidationError::new(
                "mac_address",
                s,
                "expected six hex octets like 52:54:00:12:34:56",
            )
        };
        let t = s.trim();
        let hex: String = match t.len() {
            17 if t.split([':', '-']).count() == 6 => {
                let parts: Vec<&str> = t.split([':', '-']).collect();
                if parts.iter().any(|p| p.len() != 2) {
                    return Err(err());
                }
                parts.concat()
            }
            14 if t.split('.').count() == 3 => {
                let parts: Vec<&str> = t.split('.').collect();
                if parts.iter().any(|p| p.len() != 4) {
                    return Err(err());
                }
                parts.concat()
            }
            12 => t.to_owned(),
            _ => return Err(err()),
        };
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = hex.get(i * 2..i * 2 + 2).ok_or_else(err)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| err())?;
        }
        Ok(MacAddress(out))
    }

    /// The octets.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// iPXE's `hexhyp` form (`52-54-00-12-34-56`), used in boot file names.
    pub fn to_hyphenated(self) -> String {
        self.to_string().replace(':', "-")
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddress({self})")
    }
}

impl FromStr for MacAddress {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MacAddress::parse(s)
    }
}

impl TryFrom<String> for MacAddress {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        MacAddress::parse(&s)
    }
}

impl From<MacAddress> for String {
    fn from(m: MacAddress) -> String {
        m.to_string()
    }
}

/// Sub-architectures carry release numbers (`hwe-22.04`, `ga-24.04`), so dots
/// are allowed, but not a leading dot: these words end up in boot file paths.
fn is_arch_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('.')
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
        })
}

/// A machine architecture in MAAS's `arch/subarch` form (`amd64/generic`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Architecture {
    arch: String,
    subarch: String,
}

impl Architecture {
    /// Parses `amd64/generic`; a bare `amd64` means `amd64/generic`.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let t = s.trim();
        let (arch, subarch) = t.split_once('/').unwrap_or((t, "generic"));
        if !is_arch_word(arch) || !is_arch_word(subarch) {
            return Err(ValidationError::new(
                "architecture",
                s,
                "expected arch/subarch like amd64/generic (lowercase letters, digits, _, - or ., not starting with .)",
            ));
        }
        Ok(Architecture {
            arch: arch.to_owned(),
            subarch: subarch.to_owned(),
        })
    }

    /// `amd64/generic`.
    pub fn amd64() -> Self {
        Architecture {
            arch: "amd64".into(),
            subarch: "generic".into(),
        }
    }

    /// The architecture (`amd64`).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// The sub-architecture (`generic`, `hwe-22.04`, `xgene-uboot`...).
    pub fn subarch(&self) -> &str {
        &self.subarch
    }

    /// Whether this architecture matches a constraint spelled `amd64` (any
    /// subarch) or `amd64/generic` (exactly).
    pub fn matches(&self, spec: &str) -> bool {
        match spec.split_once('/') {
            Some((a, s)) => a == self.arch && s == self.subarch,
            None => spec == self.arch,
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.arch, self.subarch)
    }
}

impl fmt::Debug for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Architecture({self})")
    }
}

impl FromStr for Architecture {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Architecture::parse(s)
    }
}

impl TryFrom<String> for Architecture {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Architecture::parse(&s)
    }
}

impl From<Architecture> for String {
    fn from(a: Architecture) -> String {
        a.to_string()
    }
}

fn label_error(label: &str) -> Option<&'static str> {
    if label.is_empty() {
        Some("empty label")
    } else if label.len() > 63 {
        Some("a label is longer than 63 characters")
    } else if label.starts_with('-') || label.ends_with('-') {
        Some("a label starts or ends with '-'")
    } else if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        Some("only letters, digits and '-' are allowed")
    } else {
        None
    }
}

/// A host name: one DNS label (RFC 1123), stored lowercase.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Hostname(String);

impl Hostname {
    /// Parses a single-label host name.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        match label_error(s) {
            Some(reason) => Err(ValidationError::new("hostname", s, reason)),
            None => Ok(Hostname(s.to_ascii_lowercase())),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A DNS domain name (dot-separated RFC 1123 labels, at most 253 characters),
/// stored lowercase without a trailing dot.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DomainName(String);

impl DomainName {
    /// Parses a domain name; a trailing dot is dropped.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let t = s.strip_suffix('.').unwrap_or(s);
        if t.is_empty() || t.len() > 253 {
            return Err(ValidationError::new(
                "domain",
                s,
                "expected 1 to 253 characters",
            ));
        }
        if let Some(reason) = t.split('.').find_map(label_error) {
            return Err(ValidationError::new("domain", s, reason));
        }
        Ok(DomainName(t.to_ascii_lowercase()))
    }

    /// MAAS's default domain.
    pub fn maas() -> Self {
        DomainName("maas".into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($t:ident) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($t), "({})"), self.0)
            }
        }
        impl FromStr for $t {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $t::parse(s)
            }
        }
        impl TryFrom<String> for $t {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                $t::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
    };
}
string_newtype_impls!(Hostname);
string_newtype_impls!(DomainName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_forms() {
        let want = MacAddress([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
        for s in [
            "52:54:00:ab:cd:ef",
            "52-54-00-AB-CD-EF",
            "5254.00ab.cdef",
            "525400abcdef",
        ] {
            assert_eq!(MacAddress::parse(s).unwrap(), want, "{s}");
        }
        assert_eq!(want.to_string(), "52:54:00:ab:cd:ef");
        assert_eq!(want.to_hyphenated(), "52-54-00-ab-cd-ef");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:eg",
            "5:254:00:ab:cd:ef",
            "52:54:00:ab:cd:ef:00",
            "ü2:54:00:ab:cd:e",
        ] {
            assert_eq!(
                MacAddress::parse(bad).unwrap_err().field,
                "mac_address",
                "{bad}"
            );
        }
    }

    #[test]
    fn architectures() {
        let a = Architecture::parse("amd64").unwrap();
        assert_eq!(a.to_string(), "amd64/generic");
        assert!(a.matches("amd64") && a.matches("amd64/generic") && !a.matches("amd64/hwe-22.04"));
        assert!(Architecture::parse("arm64/xgene-uboot").is_ok());
        assert_eq!(
            Architecture::parse("amd64/hwe-22.04").unwrap().subarch(),
            "hwe-22.04"
        );
        for bad in [
            "",
            "/",
            "amd64/",
            "AMD64/generic",
            "a b/c",
            "amd64/..",
            "amd64/.x",
        ] {
            assert!(Architecture::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostnames_and_domains() {
        assert_eq!(Hostname::parse("Node-1").unwrap().as_str(), "node-1");
        for bad in ["", "-a", "a-", "a.b", "a_b", &"x".repeat(64)] {
            assert_eq!(Hostname::parse(bad).unwrap_err().field, "hostname", "{bad}");
        }
        assert_eq!(
            DomainName::parse("Lab.Example.").unwrap().as_str(),
            "lab.example"
        );
        for bad in [
            "",
            ".",
            "a..b",
            "a.-b",
            &format!("{}.com", "a.".repeat(130)),
        ] {
            assert_eq!(DomainName::parse(bad).unwrap_err().field, "domain", "{bad}");
        }
    }
}
