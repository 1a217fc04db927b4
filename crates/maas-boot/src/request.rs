//! Recognising the configuration files loaders ask the rack for.

use std::fmt;

use maas_core::MacAddress;

use crate::cmdline::ConfigKind;

/// A request for a boot configuration, as a TFTP or HTTP server receives it.
///
/// | path | kind | MAC |
/// |---|---|---|
/// | `pxelinux.cfg/default` | PXELINUX | none |
/// | `pxelinux.cfg/01-52-54-00-12-34-56` | PXELINUX | yes |
/// | `grub/grub.cfg` | GRUB | none |
/// | `grub/grub.cfg-52:54:00:12:34:56` | GRUB | yes |
/// | `grub/grub.cfg-01-52-54-00-12-34-56` | GRUB | yes (the name GRUB's own network config search uses) |
/// | `ipxe/boot.ipxe` | iPXE | none |
/// | `ipxe/mac-525400123456.ipxe` | iPXE | yes |
///
/// The iPXE names are ours: `ipxe/boot.ipxe` is what DHCP hands out
/// ([`crate::BootMethod::boot_file`]); it fetches
/// `mac-${netX/mac:hexraw}.ipxe` next to itself. A DHCP server that knows
/// the MAC can hand out the per-MAC URL directly and save a round trip.
///
/// Hex digits may be in either case; leading slashes are ignored (GRUB asks
/// for `/grub/grub.cfg`, HTTP paths start with `/`). Anything else is
/// `None`, so the server answers "not found": PXELINUX's UUID and
/// hex-IP candidates, Debian GRUB's first try `grub/x86_64-efi/grub.cfg`,
/// other hardware types than Ethernet (`01-`), paths with `..`, `.`, `\`,
/// `%`, `?`, empty segments or non-ASCII.
///
/// A request without a MAC is for the default file, rendered with
/// [`crate::BootPurpose::Enlist`] and [`crate::BootParams::mac`] unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BootConfigRequest {
    /// Which loader asked.
    pub kind: ConfigKind,
    /// The MAC address in the file name; `None` for the default file.
    pub mac: Option<MacAddress>,
}

fn hex_pair(s: &str) -> Option<u8> {
    if s.len() == 2 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u8::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

/// Six hex pairs separated by `sep`, nothing else.
fn mac_with(s: &str, sep: char) -> Option<MacAddress> {
    if s.len() != 17 {
        return None;
    }
    let mut out = [0u8; 6];
    let mut parts = s.split(sep);
    for byte in out.iter_mut() {
        *byte = hex_pair(parts.next()?)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(MacAddress(out))
}

/// Twelve hex digits.
fn mac_raw(s: &str) -> Option<MacAddress> {
    if s.len() != 12 {
        return None;
    }
    let mut out = [0u8; 6];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = hex_pair(s.get(i * 2..i * 2 + 2)?)?;
    }
    Some(MacAddress(out))
}

impl BootConfigRequest {
    /// Recognises a requested path; `None` for anything else.
    pub fn parse(path: &str) -> Option<BootConfigRequest> {
        let p = path.trim_start_matches('/');
        if p.len() > 64
            || !p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b':' | b'_'))
        {
            return None;
        }
        let (dir, file) = p.split_once('/')?;
        let req = |kind, mac| Some(BootConfigRequest { kind, mac });
        match dir {
            "pxelinux.cfg" => match file {
                "default" => req(ConfigKind::Pxelinux, None),
                f => req(
                    ConfigKind::Pxelinux,
                    Some(mac_with(f.strip_prefix("01-")?, '-')?),
                ),
            },
            "grub" => match file {
                "grub.cfg" => req(ConfigKind::Grub, None),
                f => {
                    let m = f.strip_prefix("grub.cfg-")?;
                    let mac = match m.strip_prefix("01-") {
                        Some(h) => mac_with(h, '-'),
                        None => mac_with(m, ':'),
                    }?;
                    req(ConfigKind::Grub, Some(mac))
                }
            },
            "ipxe" => match file {
                "boot.ipxe" => req(ConfigKind::Ipxe, None),
                f => {
                    let hex = f.strip_prefix("mac-")?.strip_suffix(".ipxe")?;
                    req(ConfigKind::Ipxe, Some(mac_raw(hex)?))
                }
            },
            _ => None,
        }
    }

    /// The canonical path of this request, without a leading `/`
    /// (lowercase hex; GRUB's colon form).
    pub fn path(&self) -> String {
        match (self.kind, self.mac) {
            (ConfigKind::Pxelinux, None) => "pxelinux.cfg/default".to_owned(),
            (ConfigKind::Pxelinux, Some(m)) => format!("pxelinux.cfg/01-{}", m.to_hyphenated()),
            (ConfigKind::Grub, None) => "grub/grub.cfg".to_owned(),
            (ConfigKind::Grub, Some(m)) => format!("grub/grub.cfg-{m}"),
            (ConfigKind::Ipxe, None) => "ipxe/boot.ipxe".to_owned(),
            (ConfigKind::Ipxe, Some(m)) => {
                format!("ipxe/mac-{}.ipxe", m.to_string().replace(':', ""))
            }
        }
    }
}

impl fmt::Display for BootConfigRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}
