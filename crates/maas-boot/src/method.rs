//! Which boot loader a client gets, from the fields of its DHCP request.

use std::fmt;

use crate::cmdline::ConfigKind;
use crate::params::HttpUrl;

/// How a machine boots from the network, decided from its DHCP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum BootMethod {
    /// BIOS PXE: PXELINUX (`lpxelinux.0`, which can also fetch over HTTP)
    /// over TFTP, then `pxelinux.cfg/...`.
    PxeBios,
    /// UEFI x86-64 PXE: shim (`bootx64.efi`) then GRUB (`grubx64.efi`)
    /// over TFTP, then `grub/grub.cfg`.
    UefiAmd64Grub,
    /// iPXE on any firmware (DHCP user class `iPXE`): it fetches an iPXE
    /// script over HTTP.
    Ipxe,
    /// UEFI x86-64 HTTP boot (vendor class `HTTPClient`): the firmware gets
    /// shim by URL, shim and GRUB fetch the rest over HTTP.
    UefiAmd64Http,
    /// UEFI arm64 PXE: shim (`bootaa64.efi`) then GRUB over TFTP.
    UefiArm64Grub,
}

impl BootMethod {
    /// Every method.
    pub const ALL: [BootMethod; 5] = [
        BootMethod::PxeBios,
        BootMethod::UefiAmd64Grub,
        BootMethod::Ipxe,
        BootMethod::UefiAmd64Http,
        BootMethod::UefiArm64Grub,
    ];

    /// The method for a DHCP client: `arch_code` from option 93 (client
    /// system architecture), `user_class_ipxe` whether option 77 carries
    /// `iPXE`, `vendor_class` option 60.
    ///
    /// `None` when the client is not a network boot client (its vendor
    /// class starts with neither `PXEClient` nor `HTTPClient`: an
    /// installed OS renewing its lease) or asks for an architecture this
    /// crate has no loader for (IA32 EFI, arm64 HTTP, POWER...).
    ///
    /// iPXE wins over the firmware type: once iPXE runs, it fetches a script
    /// whatever the machine. Otherwise option 93 decides: `0` BIOS; `7` and
    /// `9` (EFI BC, x86-64 in practice) UEFI x86-64, over HTTP when the
    /// vendor class is `HTTPClient`; `16` UEFI x86-64 HTTP; `11` UEFI arm64.
    pub fn from_dhcp(
        arch_code: u16,
        user_class_ipxe: bool,
        vendor_class: &str,
    ) -> Option<BootMethod> {
        let http = vendor_class.starts_with("HTTPClient");
        if !http && !vendor_class.starts_with("PXEClient") {
            return None;
        }
        if user_class_ipxe {
            return Some(BootMethod::Ipxe);
        }
        match arch_code {
            0 if !http => Some(BootMethod::PxeBios),
            7 | 9 if http => Some(BootMethod::UefiAmd64Http),
            7 | 9 => Some(BootMethod::UefiAmd64Grub),
            16 => Some(BootMethod::UefiAmd64Http),
            11 if !http => Some(BootMethod::UefiArm64Grub),
            _ => None,
        }
    }

    /// The boot file this method hands out: a TFTP file name, or for the
    /// HTTP methods a path on the rack's HTTP server (see
    /// [`BootMethod::dhcp_filename`]). For iPXE it is the default script,
    /// `ipxe/boot.ipxe`, which asks for the machine's own
    /// `ipxe/mac-<12 hex digits>.ipxe` and enlists when there is none.
    pub fn boot_file(self) -> &'static str {
        match self {
            BootMethod::PxeBios => "lpxelinux.0",
            BootMethod::UefiAmd64Grub | BootMethod::UefiAmd64Http => "bootx64.efi",
            BootMethod::Ipxe => "ipxe/boot.ipxe",
            BootMethod::UefiArm64Grub => "bootaa64.efi",
        }
    }

    /// Whether the boot file is fetched over HTTP (so DHCP must hand out a
    /// whole URL) rather than TFTP.
    pub fn over_http(self) -> bool {
        matches!(self, BootMethod::Ipxe | BootMethod::UefiAmd64Http)
    }

    /// The DHCP boot file name (option 67 / `file`): [`BootMethod::boot_file`]
    /// for TFTP methods, its URL on `rack` for HTTP ones
    /// (`http://10.99.0.1:5248/ipxe/boot.ipxe`).
    pub fn dhcp_filename(self, rack: &HttpUrl) -> String {
        if self.over_http() {
            format!(
                "http://{}{}/{}",
                rack.authority(),
                rack.path().trim_end_matches('/'),
                self.boot_file()
            )
        } else {
            self.boot_file().to_owned()
        }
    }

    /// The configuration the loader reads next.
    pub fn config_kind(self) -> ConfigKind {
        match self {
            BootMethod::PxeBios => ConfigKind::Pxelinux,
            BootMethod::Ipxe => ConfigKind::Ipxe,
            BootMethod::UefiAmd64Grub | BootMethod::UefiAmd64Http | BootMethod::UefiArm64Grub => {
                ConfigKind::Grub
            }
        }
    }

    /// A short name (`pxe-bios`, `uefi-amd64-grub`...).
    pub fn as_str(self) -> &'static str {
        match self {
            BootMethod::PxeBios => "pxe-bios",
            BootMethod::UefiAmd64Grub => "uefi-amd64-grub",
            BootMethod::Ipxe => "ipxe",
            BootMethod::UefiAmd64Http => "uefi-amd64-http",
            BootMethod::UefiArm64Grub => "uefi-arm64-grub",
        }
    }
}

impl fmt::Display for BootMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
