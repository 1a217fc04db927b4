//! PXELINUX configuration files.

use std::fmt::Write as _;

use crate::cmdline::{ConfigKind, KernelCommandLine};
use crate::error::BootConfigError;
use crate::params::BootParams;
use crate::purpose::BootPurpose;

/// The PXELINUX configuration for `purpose`.
///
/// One label, the default:
/// - Ephemeral purposes: `KERNEL` and `INITRD` as HTTP URLs (`lpxelinux.0`
///   fetches them over HTTP), `APPEND` the command line, and `IPAPPEND 2`
///   so PXELINUX appends `BOOTIF=01-<mac>` of the interface it booted
///   from: the command line itself carries no `BOOTIF`.
/// - `LocalBoot`: `LOCALBOOT 0`, the BIOS boots the next device.
/// - `Poweroff`: `COM32 poweroff.c32` (from syslinux-common, next to
///   `ldlinux.c32` in the TFTP root).
///
/// PXELINUX itself asks for `pxelinux.cfg/01-<mac>` before
/// `pxelinux.cfg/default`, so the default file is simply the enlistment.
pub fn pxelinux_cfg(purpose: BootPurpose, params: &BootParams) -> Result<String, BootConfigError> {
    let mut s = String::new();
    let who = match params.mac {
        Some(mac) => format!(" for {mac}"),
        None => String::new(),
    };
    let label = purpose.as_str();
    let _ = writeln!(s, "# maas-rs: {purpose}{who}");
    let _ = writeln!(s, "DEFAULT {label}");
    let _ = writeln!(s, "LABEL {label}");
    match purpose {
        BootPurpose::LocalBoot => s.push_str("  LOCALBOOT 0\n"),
        BootPurpose::Poweroff => s.push_str("  COM32 poweroff.c32\n"),
        _ => {
            let cmdline = KernelCommandLine::ephemeral(purpose, params, ConfigKind::Pxelinux)?;
            let _ = writeln!(
                s,
                "  KERNEL {}",
                params.rack_url.file_url(&params.images.kernel)
            );
            let _ = writeln!(
                s,
                "  INITRD {}",
                params.rack_url.file_url(&params.images.initrd)
            );
            let _ = writeln!(s, "  APPEND {}", cmdline.render(ConfigKind::Pxelinux));
            s.push_str("  IPAPPEND 2\n");
        }
    }
    Ok(s)
}
