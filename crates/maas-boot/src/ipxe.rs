//! iPXE scripts.

use std::fmt::Write as _;

use crate::cmdline::{ConfigKind, KernelCommandLine};
use crate::error::BootConfigError;
use crate::params::BootParams;
use crate::purpose::BootPurpose;

/// The iPXE script for `purpose`.
///
/// - Ephemeral purposes: `imgfree` (so the scripts that led here are not
///   handed to a BIOS kernel as extra initrds), `kernel <url> <command
///   line>`, `initrd <url>`, `boot`.
/// - `LocalBoot`: on BIOS, `sanboot --no-describe --drive 0x80` boots the
///   first disk; on UEFI (or if that fails), `exit` hands back to the
///   firmware, which tries the next boot entry: the disk.
/// - `Poweroff`: `poweroff`. It only exists in iPXE builds with
///   `POWEROFF_CMD` (Debian's has not), so without it the script waits
///   forever instead of exiting, which would boot whatever a previous owner
///   left on the disk.
///
/// With [`BootParams::mac`] unset and `Enlist`, this is the default script
/// (`ipxe/boot.ipxe`): it first fetches `mac-${netX/mac:hexraw}.ipxe` from
/// where it came from and runs it; only if that fetch fails does it enlist.
pub fn ipxe_script(purpose: BootPurpose, params: &BootParams) -> Result<String, BootConfigError> {
    let mut s = String::from("#!ipxe\n");
    let who = match params.mac {
        Some(mac) => format!(" for {mac}"),
        None => String::new(),
    };
    let _ = writeln!(s, "# maas-rs: {purpose}{who}");
    if purpose == BootPurpose::Enlist && params.mac.is_none() {
        s.push_str(concat!(
            "# Run this machine's own script if the rack has one; enlist otherwise.\n",
            "imgfetch --name maas-machine mac-${netX/mac:hexraw}.ipxe || goto enlist\n",
            "imgexec maas-machine\n",
            "exit\n",
            ":enlist\n",
        ));
    }
    let _ = writeln!(s, "echo {}", purpose.doing());
    match purpose {
        BootPurpose::LocalBoot => {
            s.push_str("iseq ${platform} pcbios && sanboot --no-describe --drive 0x80 ||\n");
            s.push_str("exit\n");
        }
        BootPurpose::Poweroff => {
            s.push_str(concat!(
                "poweroff ||\n",
                "echo This iPXE cannot power off: waiting here\n",
                ":wait\n",
                "sleep 3600\n",
                "goto wait\n",
            ));
        }
        _ => {
            let cmdline = KernelCommandLine::ephemeral(purpose, params, ConfigKind::Ipxe)?;
            let kernel = params.rack_url.file_url(&params.images.kernel);
            let initrd = params.rack_url.file_url(&params.images.initrd);
            let _ = writeln!(s, "imgfree");
            let _ = writeln!(s, "kernel {kernel} {}", cmdline.render(ConfigKind::Ipxe));
            let _ = writeln!(s, "initrd {initrd}");
            let _ = writeln!(s, "boot");
        }
    }
    Ok(s)
}
