//! GRUB configuration files.

use std::fmt::Write as _;

use crate::cmdline::{ConfigKind, KernelCommandLine, grub_quote};
use crate::error::BootConfigError;
use crate::params::{BootParams, RackPath};
use crate::purpose::BootPurpose;

/// EFI loaders a deployed disk may carry, most specific first: shim before
/// GRUB (so Secure Boot keeps working), the removable-media path last.
fn local_loaders(arch: &str) -> &'static [&'static str] {
    match arch {
        "amd64" => &[
            "/EFI/ubuntu/shimx64.efi",
            "/EFI/ubuntu/grubx64.efi",
            "/EFI/debian/shimx64.efi",
            "/EFI/debian/grubx64.efi",
            "/EFI/centos/shimx64.efi",
            "/EFI/redhat/shimx64.efi",
            "/EFI/rocky/shimx64.efi",
            "/EFI/Microsoft/Boot/bootmgfw.efi",
            "/EFI/BOOT/BOOTX64.EFI",
        ],
        "arm64" => &[
            "/EFI/ubuntu/shimaa64.efi",
            "/EFI/ubuntu/grubaa64.efi",
            "/EFI/debian/shimaa64.efi",
            "/EFI/debian/grubaa64.efi",
            "/EFI/centos/shimaa64.efi",
            "/EFI/redhat/shimaa64.efi",
            "/EFI/rocky/shimaa64.efi",
            "/EFI/BOOT/BOOTAA64.EFI",
        ],
        _ => &[],
    }
}

/// Where GRUB reads a file of the rack from.
///
/// GRUB's `(http,host)` device has no port: Debian's GRUB 2.06 answers
/// `disk 'http,10.0.2.2:15248' not found` to `(http,host:port)` and to
/// `(http,host,port)` alike (tried under OVMF). So GRUB uses HTTP only when
/// the rack serves on port 80; otherwise it reads the same path from the
/// server it was itself loaded from (`$root`: the rack's TFTP server, or its
/// HTTP server for UEFI HTTP boot), which must serve `images/...` too.
fn grub_file(params: &BootParams, path: &RackPath) -> String {
    match params.rack_url.port() {
        None | Some(80) => format!(
            "(http,{}){}",
            params.rack_url.host(),
            params.rack_url.path_of(path)
        ),
        Some(_) => format!("/{path}"),
    }
}

/// The GRUB configuration for `purpose`.
///
/// One menu entry, booted at once (`timeout=0`):
/// - Ephemeral purposes: `linux <kernel> <command line>` and
///   `initrd <initrd>`, read over HTTP as `(http,<rack>)/<path>` when the
///   rack's HTTP server is on port 80, and otherwise as `/<path>` from the
///   server GRUB was loaded from: Debian's GRUB 2.06 takes no port in
///   `(http,...)`. Words with punctuation GRUB's shell would interpret are
///   single-quoted.
/// - `LocalBoot`: looks for a known EFI loader on the local disks
///   (`search --file`), chainloads the first found, and otherwise `exit`s
///   to the firmware, which tries its next boot entry.
/// - `Poweroff`: `halt`, which powers an EFI machine off.
///
/// With [`BootParams::mac`] unset and `Enlist`, this is the default file
/// (`grub/grub.cfg`): it first loads `${prefix}/grub.cfg-${net_default_mac}`
/// (the machine's own file, colon form) and enlists only if that fails.
pub fn grub_cfg(purpose: BootPurpose, params: &BootParams) -> Result<String, BootConfigError> {
    let mut s = String::new();
    let who = match params.mac {
        Some(mac) => format!(" for {mac}"),
        None => String::new(),
    };
    let _ = writeln!(s, "# maas-rs: {purpose}{who}");
    s.push_str("set default=0\nset timeout=0\n");
    if purpose == BootPurpose::Enlist && params.mac.is_none() {
        s.push_str(concat!(
            "# Load this machine's own file if the rack has one; enlist otherwise.\n",
            "configfile ${prefix}/grub.cfg-${net_default_mac}\n",
        ));
    }
    let _ = writeln!(s, "\nmenuentry '{}' {{", purpose.title());
    let _ = writeln!(s, "\techo '{}...'", purpose.doing());
    match purpose {
        BootPurpose::LocalBoot => {
            let loaders = local_loaders(params.architecture.arch());
            if !loaders.is_empty() {
                let _ = writeln!(s, "\tfor loader in {}; do", loaders.join(" "));
                s.push_str(concat!(
                    "\t\tif search --no-floppy --set=root --file $loader; then\n",
                    "\t\t\tchainloader $loader\n",
                    "\t\t\tboot\n",
                    "\t\tfi\n",
                    "\tdone\n",
                ));
            }
            s.push_str("\techo 'No boot loader found on the local disks: back to the firmware.'\n");
            s.push_str("\texit\n");
        }
        BootPurpose::Poweroff => s.push_str("\thalt\n"),
        _ => {
            let cmdline = KernelCommandLine::ephemeral(purpose, params, ConfigKind::Grub)?;
            let kernel = grub_quote(&grub_file(params, &params.images.kernel));
            let initrd = grub_quote(&grub_file(params, &params.images.initrd));
            let _ = writeln!(s, "\tlinux {kernel} {}", cmdline.render(ConfigKind::Grub));
            let _ = writeln!(s, "\tinitrd {initrd}");
        }
    }
    s.push_str("}\n");
    Ok(s)
}
