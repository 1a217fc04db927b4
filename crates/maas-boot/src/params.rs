//! Everything a boot configuration is rendered from, each value validated
//! when it is made, so a rendered script can only contain what its
//! template says.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use maas_core::{Architecture, Hostname, MacAddress, SystemId};

use crate::cmdline::KernelParam;
use crate::error::{BootConfigError, shown};

/// The port MAAS racks serve boot files and proxy `/MAAS/` on.
pub const RACK_HTTP_PORT: u16 = 5248;

/// The longest path or URL accepted; boot loaders have small buffers.
const MAX_PATH_LEN: usize = 1024;

fn path_char_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'~')
}

/// Checks `/`-separated segments: none empty, none `.` or `..`, only
/// [`path_char_ok`] characters. `what` is the original text for the error.
fn check_segments(segments: &str, what: &str) -> Result<(), BootConfigError> {
    let err = |reason| BootConfigError::InvalidPath {
        value: shown(what),
        reason,
    };
    for seg in segments.split('/') {
        if seg.is_empty() {
            return Err(err("empty path segment"));
        }
        if seg == "." || seg == ".." {
            return Err(err("'.' and '..' segments are not allowed"));
        }
        if !seg.bytes().all(path_char_ok) {
            return Err(err(
                "only letters, digits and . _ - + ~ are allowed between slashes",
            ));
        }
    }
    Ok(())
}

/// A file on the rack's HTTP server, relative to its root
/// (`images/ubuntu/amd64/ga-24.04/noble/stable/boot-kernel`).
///
/// Segments are letters, digits and `. _ - + ~`; no `.` or `..` segment, no
/// empty one. One leading `/` is accepted and dropped.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RackPath(String);

impl RackPath {
    /// Parses and validates a path.
    pub fn parse(s: &str) -> Result<Self, BootConfigError> {
        let t = s.strip_prefix('/').unwrap_or(s);
        if t.is_empty() || t.len() > MAX_PATH_LEN {
            return Err(BootConfigError::InvalidPath {
                value: shown(s),
                reason: "expected 1 to 1024 characters",
            });
        }
        check_segments(t, s)?;
        Ok(RackPath(t.to_owned()))
    }

    /// The path, without a leading `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment (`boot-initrd`): the name iPXE gives the image it
    /// downloads from this path, which the EFI stub's `initrd=` must match.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for RackPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RackPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RackPath({})", self.0)
    }
}

impl FromStr for RackPath {
    type Err = BootConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RackPath::parse(s)
    }
}

/// The host part of an [`HttpUrl`].
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum UrlHost {
    /// An IPv4 literal.
    V4(Ipv4Addr),
    /// An IPv6 literal (written in brackets in the URL).
    V6(Ipv6Addr),
    /// A DNS name (RFC 1123 labels, stored lowercase).
    Name(String),
}

impl fmt::Display for UrlHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlHost::V4(a) => write!(f, "{a}"),
            UrlHost::V6(a) => write!(f, "[{a}]"),
            UrlHost::Name(n) => f.write_str(n),
        }
    }
}

fn dns_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A plain `http://host[:port][/path]` URL: the rack's boot server or the
/// metadata service.
///
/// Only `http`: GRUB and PXELINUX speak no TLS, and the rack's boot server
/// (port 5248 in MAAS) is plain HTTP. No user info, query or fragment; the
/// path follows the [`RackPath`] rules and may end with `/`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct HttpUrl {
    host: UrlHost,
    port: Option<u16>,
    /// Starts with `/`.
    path: String,
}

impl HttpUrl {
    /// Parses and validates a URL.
    pub fn parse(s: &str) -> Result<Self, BootConfigError> {
        let err = |reason| BootConfigError::InvalidUrl {
            value: shown(s),
            reason,
        };
        if s.len() > MAX_PATH_LEN {
            return Err(err("longer than 1024 characters"));
        }
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| err("expected http:// (boot loaders speak no TLS)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(err("user information is not allowed"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| err("unclosed '[' in the host"))?;
            let addr = Ipv6Addr::from_str(addr).map_err(|_| err("bad IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| err("junk after ']'"))?),
            };
            (UrlHost::V6(addr), port)
        } else {
            let (h, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            let host = if let Ok(a) = Ipv4Addr::from_str(h) {
                UrlHost::V4(a)
            } else if dns_name_ok(h) && !h.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                UrlHost::Name(h.to_ascii_lowercase())
            } else {
                return Err(err("bad host: expected an IP address or a DNS name"));
            };
            (host, port)
        };
        let port = match port {
            None => None,
            Some(p) => {
                let n = if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) {
                    p.parse::<u16>().ok()
                } else {
                    None
                };
                match n {
                    Some(n) if n > 0 => Some(n),
                    _ => return Err(err("bad port: expected 1 to 65535")),
                }
            }
        };
        // `path` is empty or starts with '/'; one trailing '/' is kept.
        let inner = path.strip_prefix('/').unwrap_or(path);
        let (inner, dir) = match inner.strip_suffix('/') {
            Some(i) => (i, true),
            None => (inner, false),
        };
        let path = if inner.is_empty() && !(dir && path.len() > 1) {
            "/".to_owned()
        } else {
            check_segments(inner, s).map_err(|_| {
                err("bad path: letters, digits and . _ - + ~ between single slashes, no '..', no query")
            })?;
            format!("/{inner}{}", if dir { "/" } else { "" })
        };
        Ok(HttpUrl { host, port, path })
    }

    /// The host.
    pub fn host(&self) -> &UrlHost {
        &self.host
    }

    /// The port written in the URL, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The path, starting with `/` (`/` when the URL has none).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `host` or `host:port`.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }

    /// The same server with another path (`/MAAS/metadata/`).
    pub fn with_path(&self, path: &str) -> Result<HttpUrl, BootConfigError> {
        HttpUrl::parse(&format!("http://{}{}", self.authority(), path))
    }

    /// The URL of a file on this server: this URL's path, then `path`.
    pub fn file_url(&self, path: &RackPath) -> String {
        format!(
            "http://{}{}/{}",
            self.authority(),
            self.path.trim_end_matches('/'),
            path
        )
    }

    /// This URL's path joined with `path`, starting with `/`, for GRUB's
    /// `(http,host)/path` device syntax.
    pub(crate) fn path_of(&self, path: &RackPath) -> String {
        format!("{}/{}", self.path.trim_end_matches('/'), path)
    }

    /// Whether the host is an IPv6 literal.
    pub fn is_ipv6(&self) -> bool {
        matches!(self.host, UrlHost::V6(_))
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

impl fmt::Debug for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HttpUrl({self})")
    }
}

impl FromStr for HttpUrl {
    type Err = BootConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HttpUrl::parse(s)
    }
}

/// Where the ephemeral environment's files are on the rack.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImagePaths {
    /// The kernel.
    pub kernel: RackPath,
    /// The initrd.
    pub initrd: RackPath,
    /// The squashfs root (`root=squash:<url>`); `None` for an image whose
    /// initrd is the whole system and needs no `root=`.
    pub squashfs: Option<RackPath>,
}

impl ImagePaths {
    /// MAAS's layout:
    /// `images/<osystem>/<arch>/<subarch>/<release>/<label>/{boot-kernel,boot-initrd,squashfs}`,
    /// e.g. `("ubuntu", "amd64", "ga-24.04", "noble", "stable")`. The
    /// subarch here is the kernel flavour (`ga-24.04`, `hwe-22.04`).
    pub fn maas(
        osystem: &str,
        arch: &str,
        subarch: &str,
        release: &str,
        label: &str,
    ) -> Result<ImagePaths, BootConfigError> {
        let dir = [osystem, arch, subarch, release, label];
        if let Some(bad) = dir.iter().find(|p| p.contains('/')) {
            return Err(BootConfigError::InvalidPath {
                value: shown(bad),
                reason: "an image path component cannot contain '/'",
            });
        }
        let base = format!("images/{}", dir.join("/"));
        Ok(ImagePaths {
            kernel: RackPath::parse(&format!("{base}/boot-kernel"))?,
            initrd: RackPath::parse(&format!("{base}/boot-initrd"))?,
            squashfs: Some(RackPath::parse(&format!("{base}/squashfs"))?),
        })
    }
}

/// Everything the renderers need about one boot.
///
/// Made with [`BootParams::new`]; the fields are public and each has a
/// validated type, so changing one cannot make a script unsafe.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BootParams {
    /// The rack's boot HTTP server (`http://10.99.0.1:5248`).
    pub rack_url: HttpUrl,
    /// The metadata service as the machine reaches it, through the rack
    /// (`http://10.99.0.1:5248/MAAS/metadata/`).
    pub metadata_url: HttpUrl,
    /// The booting interface, when known; `None` renders the default file a
    /// loader reads before anyone knows which machine it is.
    pub mac: Option<MacAddress>,
    /// The machine's host name (`ip=::::<hostname>:BOOTIF`); enlisting
    /// machines use `maas-enlist`.
    pub hostname: Option<Hostname>,
    /// The machine's system id; needed by every ephemeral purpose but
    /// `Enlist`.
    pub system_id: Option<SystemId>,
    /// The machine's architecture: picks the EFI loader names for a local
    /// boot through GRUB (`x64`, `aa64`).
    pub architecture: Architecture,
    /// The ephemeral environment.
    pub images: ImagePaths,
    /// The value of `console=` (`ttyS0,115200`), if any.
    pub console: Option<KernelParam>,
    /// Whether the ephemeral environment configures IPv6; when false the
    /// command line carries `ip6=off`. [`BootParams::new`] turns it on when
    /// the rack is reached over IPv6.
    pub ipv6: bool,
    /// Where the ephemeral environment sends syslog (`log_host=`).
    pub log_host: Option<IpAddr>,
    /// Its port (`log_port=`).
    pub log_port: Option<u16>,
    /// Extra kernel options (from tags and settings), appended last, in
    /// this order.
    pub extra_options: Vec<KernelParam>,
}

impl BootParams {
    /// Parameters with no machine identity, no console, no syslog and no
    /// extra options; the metadata service is the rack's `/MAAS/metadata/`.
    pub fn new(rack_url: HttpUrl, architecture: Architecture, images: ImagePaths) -> BootParams {
        let metadata_url = HttpUrl {
            host: rack_url.host.clone(),
            port: rack_url.port,
            path: "/MAAS/metadata/".to_owned(),
        };
        BootParams {
            ipv6: rack_url.is_ipv6(),
            rack_url,
            metadata_url,
            mac: None,
            hostname: None,
            system_id: None,
            architecture,
            images,
            console: None,
            log_host: None,
            log_port: None,
            extra_options: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = HttpUrl::parse("http://10.99.0.1:5248").unwrap();
        assert_eq!(u.to_string(), "http://10.99.0.1:5248/");
        assert_eq!(u.authority(), "10.99.0.1:5248");
        let p = RackPath::parse("images/a/boot-kernel").unwrap();
        assert_eq!(u.file_url(&p), "http://10.99.0.1:5248/images/a/boot-kernel");
        let v6 = HttpUrl::parse("http://[fd99::1]:5248/MAAS/metadata/").unwrap();
        assert!(v6.is_ipv6());
        assert_eq!(v6.to_string(), "http://[fd99::1]:5248/MAAS/metadata/");
        let n = HttpUrl::parse("http://Rack-1.Example.com/boot").unwrap();
        assert_eq!(
            n.file_url(&p),
            "http://rack-1.example.com/boot/images/a/boot-kernel"
        );
        for bad in [
            "https://10.0.0.1/",
            "http://",
            "http://10.0.0.1:0/",
            "http://10.0.0.1:65536/",
            "http://10.0.0.1:/",
            "http://user@10.0.0.1/",
            "http://10.0.0.1/a/../b",
            "http://10.0.0.1/a?x=1",
            "http://10.0.0.1/a b",
            "http://10.0.0.1/a//b",
            "http://10.0.0.1//a",
            "http://10.0.0.1\n/",
            "http://[fd99::1/",
            "http://[nope]/",
            "http://999.1.1.1/",
            "http://-bad-.com/",
            "http://10.0.0.1/$x",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rack_paths() {
        assert_eq!(RackPath::parse("/a/b.c").unwrap().as_str(), "a/b.c");
        assert_eq!(
            RackPath::parse("a/boot-initrd").unwrap().file_name(),
            "boot-initrd"
        );
        for bad in [
            "", "/", "a//b", "../a", "a/./b", "a/", "a b", "a\\b", "a;b", "//a", "é",
        ] {
            assert!(RackPath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn maas_image_paths() {
        let p = ImagePaths::maas("ubuntu", "amd64", "ga-24.04", "noble", "stable").unwrap();
        assert_eq!(
            p.kernel.as_str(),
            "images/ubuntu/amd64/ga-24.04/noble/stable/boot-kernel"
        );
        assert_eq!(
            p.initrd.as_str(),
            "images/ubuntu/amd64/ga-24.04/noble/stable/boot-initrd"
        );
        assert_eq!(
            p.squashfs.as_ref().map(RackPath::as_str),
            Some("images/ubuntu/amd64/ga-24.04/noble/stable/squashfs")
        );
        assert!(ImagePaths::maas("ubuntu", "amd64/x", "ga", "noble", "stable").is_err());
        assert!(ImagePaths::maas("ubuntu", "..", "ga", "noble", "stable").is_err());
        assert!(ImagePaths::maas("ubuntu", "amd64", "", "noble", "stable").is_err());
    }
}
