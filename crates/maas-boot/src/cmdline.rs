//! Kernel command lines, validated word by word and written out for each
//! loader's syntax.
//!
//! A word reaches three parsers before the kernel: iPXE splits on
//! whitespace, expands `${...}`, treats a word starting with `#` as a
//! comment and `||`, `&&`, `;` as command separators; GRUB's shell also
//! splits on `{ } | & ; < >`, expands `$`, honours quotes and backslashes,
//! and expands `*` `?` `[` as wildcards; PXELINUX takes the rest of the
//! line. So a word is refused if it has whitespace, a control character, a
//! quote, a backslash or one of `$ ; | & < > #`, and GRUB gets every word
//! with any other punctuation single-quoted. A host name or an extra option
//! can therefore never end a `kernel` line and start a second command.

use std::fmt;
use std::str::FromStr;

use maas_core::MacAddress;

use crate::error::{BootConfigError, shown};
use crate::params::BootParams;
use crate::purpose::BootPurpose;

/// The longest command line the kernel accepts (`COMMAND_LINE_SIZE` on
/// x86 and arm64, terminating NUL included).
pub const MAX_COMMAND_LINE: usize = 2048;

/// The cloud-init configuration MAAS puts on the command line so the
/// ephemeral environment only looks for the MAAS datasource. MAAS writes it
/// with quotes and spaces; this spelling is the same YAML without them, so
/// it passes every loader unquoted (and PyYAML reads it as
/// `{'datasource_list': ['MAAS']}`).
pub const DATASOURCE_WORD: &str = "cc:{datasource_list:[MAAS]}end_cc";

/// The host name an enlisting machine gives the initramfs (`ip=`).
pub const ENLIST_HOSTNAME: &str = "maas-enlist";

/// Which loader's syntax a configuration is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ConfigKind {
    /// An iPXE script.
    Ipxe,
    /// A GRUB configuration file.
    Grub,
    /// A PXELINUX configuration file.
    Pxelinux,
}

impl ConfigKind {
    /// Every kind.
    pub const ALL: [ConfigKind; 3] = [ConfigKind::Ipxe, ConfigKind::Grub, ConfigKind::Pxelinux];

    /// Renders the configuration of this kind: [`crate::ipxe_script`],
    /// [`crate::grub_cfg`] or [`crate::pxelinux_cfg`].
    pub fn render(
        self,
        purpose: BootPurpose,
        params: &BootParams,
    ) -> Result<String, BootConfigError> {
        match self {
            ConfigKind::Ipxe => crate::ipxe::ipxe_script(purpose, params),
            ConfigKind::Grub => crate::grub::grub_cfg(purpose, params),
            ConfigKind::Pxelinux => crate::pxelinux::pxelinux_cfg(purpose, params),
        }
    }

    /// `ipxe`, `grub` or `pxelinux`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::Ipxe => "ipxe",
            ConfigKind::Grub => "grub",
            ConfigKind::Pxelinux => "pxelinux",
        }
    }
}

impl fmt::Display for ConfigKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why `s` cannot be a kernel command line word, if it cannot.
fn word_error(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        return Some("empty");
    }
    if s.len() >= MAX_COMMAND_LINE {
        return Some("longer than a whole kernel command line");
    }
    for b in s.bytes() {
        let reason = match b {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                "whitespace would split it into several words"
            }
            0..=0x1f | 0x7f => "control characters are not allowed",
            0x80..=0xff => "only ASCII is allowed",
            b'"' | b'\'' | b'`' => "quotes are not allowed",
            b'\\' => "backslashes are not allowed",
            b'$' => "'$' would be expanded by iPXE and GRUB",
            b';' | b'|' | b'&' => "';', '|' and '&' separate commands in iPXE and GRUB",
            b'<' | b'>' => "'<' and '>' are special to GRUB",
            b'#' => "'#' starts a comment in iPXE and GRUB",
            _ => continue,
        };
        return Some(reason);
    }
    None
}

/// One word of a kernel command line (`console=ttyS0,115200`, `nomodeset`),
/// or a value that becomes part of one: printable ASCII without whitespace,
/// quotes, backslashes or `$ ; | & < > #`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelParam(String);

impl KernelParam {
    /// Validates one word.
    pub fn new(s: &str) -> Result<KernelParam, BootConfigError> {
        match word_error(s) {
            Some(reason) => Err(BootConfigError::InvalidKernelParam {
                value: shown(s),
                reason,
            }),
            None => Ok(KernelParam(s.to_owned())),
        }
    }

    /// `key=value`, both validated together.
    pub fn key_value(key: &str, value: &str) -> Result<KernelParam, BootConfigError> {
        if key.is_empty() || key.contains('=') {
            return Err(BootConfigError::InvalidKernelParam {
                value: shown(key),
                reason: "a key must be non-empty and have no '='",
            });
        }
        if value.is_empty() {
            return Err(BootConfigError::InvalidKernelParam {
                value: shown(&format!("{key}=")),
                reason: "empty value",
            });
        }
        KernelParam::new(&format!("{key}={value}"))
    }

    /// Splits a space-separated option string (a tag's `kernel_opts`) into
    /// validated words; an empty string gives no words.
    pub fn split_options(s: &str) -> Result<Vec<KernelParam>, BootConfigError> {
        s.split_ascii_whitespace().map(KernelParam::new).collect()
    }

    /// The word.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KernelParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KernelParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KernelParam({})", self.0)
    }
}

impl FromStr for KernelParam {
    type Err = BootConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KernelParam::new(s)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Word {
    Param(KernelParam),
    /// `BOOTIF=01-<mac>`: a literal when the MAC is known, otherwise the
    /// loader's variable.
    BootIf(Option<MacAddress>),
}

/// `BOOTIF=01-aa-bb-cc-dd-ee-ff`: 10 + 17 bytes once expanded.
const BOOTIF_LEN: usize = 27;

/// A kernel command line: validated words in order, rendered for a loader
/// with [`KernelCommandLine::render`].
///
/// The boot interface is a word of its own: iPXE gets
/// `BOOTIF=01-${netX/mac:hexhyp}` and GRUB `BOOTIF=01-${net_default_mac}`
/// (colons: the initramfs strips the `01-` and splits on `-`, so a colon
/// MAC passes through whole) when the MAC is unknown, a literal otherwise;
/// PXELINUX gets none, because `IPAPPEND 2` makes it append its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelCommandLine {
    words: Vec<Word>,
}

impl KernelCommandLine {
    /// An empty command line.
    pub fn new() -> KernelCommandLine {
        KernelCommandLine::default()
    }

    /// Appends a validated word.
    pub fn param(&mut self, p: KernelParam) -> &mut Self {
        self.words.push(Word::Param(p));
        self
    }

    /// Validates and appends one word.
    pub fn push(&mut self, word: &str) -> Result<&mut Self, BootConfigError> {
        Ok(self.param(KernelParam::new(word)?))
    }

    /// Validates and appends `key=value`.
    pub fn key_value(&mut self, key: &str, value: &str) -> Result<&mut Self, BootConfigError> {
        Ok(self.param(KernelParam::key_value(key, value)?))
    }

    /// Appends the boot interface word (`BOOTIF=`).
    pub fn boot_interface(&mut self, mac: Option<MacAddress>) -> &mut Self {
        self.words.push(Word::BootIf(mac));
        self
    }

    /// The command line that boots the ephemeral environment for `purpose`,
    /// in this order: `ro root=squash:<url> overlayroot=tmpfs
    /// overlayroot_cfgdisk=disabled` (when the image has a squashfs),
    /// `ip=::::<hostname>:BOOTIF`, `ip6=off` (unless IPv6), the datasource
    /// word, `cloud-config-url=`, `apparmor=0`, `log_host=`/`log_port=`,
    /// `console=`, `BOOTIF=`, `initrd=<initrd file name>` (iPXE only: the
    /// EFI stub loads the initrd by that name from iPXE's image list; GRUB
    /// and PXELINUX hand the initrd over themselves, and under GRUB an
    /// `initrd=` would make the stub look for a file that is not there),
    /// then the extra options.
    ///
    /// `cloud-config-url` is `<metadata>latest/enlist-preseed/?op=get_enlist_preseed`
    /// for `Enlist` and `<metadata>latest/by-id/<system_id>/?op=get_preseed`
    /// for the others, which is how the machine's credentials reach
    /// cloud-init. Fails for a purpose that loads no kernel, without a
    /// system id where one is needed, or when the line is too long.
    pub fn ephemeral(
        purpose: BootPurpose,
        params: &BootParams,
        kind: ConfigKind,
    ) -> Result<KernelCommandLine, BootConfigError> {
        let preseed = match purpose {
            BootPurpose::Enlist => "latest/enlist-preseed/?op=get_enlist_preseed".to_owned(),
            BootPurpose::Commission
            | BootPurpose::Deploy
            | BootPurpose::Rescue
            | BootPurpose::Erase => {
                let id = params
                    .system_id
                    .as_ref()
                    .ok_or(BootConfigError::MissingSystemId { purpose })?;
                format!("latest/by-id/{id}/?op=get_preseed")
            }
            BootPurpose::LocalBoot | BootPurpose::Poweroff => {
                return Err(BootConfigError::InvalidKernelParam {
                    value: purpose.as_str().to_owned(),
                    reason: "this purpose loads no kernel",
                });
            }
        };
        let mut c = KernelCommandLine::new();
        if let Some(squashfs) = &params.images.squashfs {
            c.push("ro")?;
            c.key_value(
                "root",
                &format!("squash:{}", params.rack_url.file_url(squashfs)),
            )?;
            c.push("overlayroot=tmpfs")?;
            // A disk labelled for overlayroot must not reconfigure the
            // ephemeral root of a machine we are about to inspect or erase.
            c.push("overlayroot_cfgdisk=disabled")?;
        }
        let host = params
            .hostname
            .as_ref()
            .map_or(ENLIST_HOSTNAME, |h| h.as_str());
        c.key_value("ip", &format!("::::{host}:BOOTIF"))?;
        if !params.ipv6 {
            c.push("ip6=off")?;
        }
        c.push(DATASOURCE_WORD)?;
        c.key_value(
            "cloud-config-url",
            &format!("{}{preseed}", params.metadata_url),
        )?;
        c.push("apparmor=0")?;
        if let Some(ip) = params.log_host {
            c.key_value("log_host", &ip.to_string())?;
        }
        if let Some(port) = params.log_port {
            c.key_value("log_port", &port.to_string())?;
        }
        if let Some(console) = &params.console {
            c.key_value("console", console.as_str())?;
        }
        c.boot_interface(params.mac);
        if kind == ConfigKind::Ipxe {
            c.key_value("initrd", params.images.initrd.file_name())?;
        }
        for opt in &params.extra_options {
            c.param(opt.clone());
        }
        c.check_len()?;
        Ok(c)
    }

    /// The length the kernel sees, loader variables counted at their
    /// expanded size (without the terminating NUL).
    pub fn kernel_len(&self) -> usize {
        let words: usize = self
            .words
            .iter()
            .map(|w| match w {
                Word::Param(p) => p.as_str().len(),
                Word::BootIf(_) => BOOTIF_LEN,
            })
            .sum();
        words + self.words.len().saturating_sub(1)
    }

    /// Fails if the line does not fit the kernel's buffer.
    pub fn check_len(&self) -> Result<(), BootConfigError> {
        let len = self.kernel_len();
        if len >= MAX_COMMAND_LINE {
            return Err(BootConfigError::CommandLineTooLong {
                len,
                max: MAX_COMMAND_LINE - 1,
            });
        }
        Ok(())
    }

    /// The words joined by single spaces in `kind`'s syntax.
    pub fn render(&self, kind: ConfigKind) -> String {
        let mut out: Vec<String> = Vec::with_capacity(self.words.len());
        for w in &self.words {
            match (w, kind) {
                (Word::Param(p), ConfigKind::Grub) => out.push(grub_quote(p.as_str())),
                (Word::Param(p), _) => out.push(p.as_str().to_owned()),
                (Word::BootIf(Some(mac)), ConfigKind::Ipxe | ConfigKind::Grub) => {
                    out.push(format!("BOOTIF=01-{}", mac.to_hyphenated()));
                }
                (Word::BootIf(None), ConfigKind::Ipxe) => {
                    out.push("BOOTIF=01-${netX/mac:hexhyp}".to_owned());
                }
                (Word::BootIf(None), ConfigKind::Grub) => {
                    out.push("BOOTIF=01-${net_default_mac}".to_owned());
                }
                (Word::BootIf(_), ConfigKind::Pxelinux) => {}
            }
        }
        out.join(" ")
    }
}

/// Characters GRUB's shell takes literally outside quotes.
fn grub_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'_' | b'.' | b',' | b':' | b'/' | b'=' | b'+' | b'@' | b'%' | b'-' | b'(' | b')'
        )
}

/// A word for GRUB's shell: as is when every character is plain, otherwise
/// single-quoted. Single quotes take everything literally, and a
/// [`KernelParam`] (or anything else this crate quotes) never contains one.
pub(crate) fn grub_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(grub_plain) {
        s.to_owned()
    } else {
        format!("'{s}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_refused_when_a_loader_would_interpret_them() {
        for bad in [
            "",
            "a b",
            "a\tb",
            "host\nshell",
            "x\r",
            "a\"b",
            "a'b",
            "a`b",
            "a\\b",
            "${net0/ip}",
            "a;b",
            ";",
            "||",
            "&&",
            "a<b",
            "a>b",
            "#x",
            "é",
            "\u{7f}",
        ] {
            assert!(KernelParam::new(bad).is_err(), "{bad:?}");
        }
        for good in [
            "nomodeset",
            "console=ttyS0,115200n8",
            "root=squash:http://10.0.0.1:5248/images/x/squashfs",
            "cloud-config-url=http://10.0.0.1:5248/MAAS/metadata/latest/by-id/abc/?op=get_preseed",
            DATASOURCE_WORD,
            "acpi_osi=!",
            "hugepagesz=1G",
            "a%20b",
        ] {
            assert!(KernelParam::new(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn split_options_validates_each_word() {
        let v = KernelParam::split_options("  nomodeset  console=tty0 ").unwrap();
        assert_eq!(v.len(), 2);
        assert!(KernelParam::split_options("").unwrap().is_empty());
        assert!(KernelParam::split_options("a || shell").is_err());
    }

    #[test]
    fn grub_quoting() {
        assert_eq!(grub_quote("ro"), "ro");
        assert_eq!(grub_quote("console=ttyS0,115200"), "console=ttyS0,115200");
        assert_eq!(grub_quote("a?b=c"), "'a?b=c'");
        assert_eq!(grub_quote(DATASOURCE_WORD), format!("'{DATASOURCE_WORD}'"));
    }

    #[test]
    fn boot_interface_per_loader() {
        let mut c = KernelCommandLine::new();
        c.push("quiet").unwrap().boot_interface(None);
        assert_eq!(
            c.render(ConfigKind::Ipxe),
            "quiet BOOTIF=01-${netX/mac:hexhyp}"
        );
        assert_eq!(
            c.render(ConfigKind::Grub),
            "quiet BOOTIF=01-${net_default_mac}"
        );
        assert_eq!(c.render(ConfigKind::Pxelinux), "quiet");
        assert_eq!(c.kernel_len(), 5 + 1 + BOOTIF_LEN);
        let mac = MacAddress::parse("52:54:00:12:34:56").unwrap();
        let mut c = KernelCommandLine::new();
        c.boot_interface(Some(mac));
        assert_eq!(c.render(ConfigKind::Grub), "BOOTIF=01-52-54-00-12-34-56");
        assert_eq!(c.kernel_len(), "BOOTIF=01-52-54-00-12-34-56".len());
    }

    #[test]
    fn too_long_is_an_error() {
        let mut c = KernelCommandLine::new();
        for _ in 0..90 {
            c.push("0123456789abcdefghij").unwrap();
        }
        assert!(c.check_len().is_ok());
        for _ in 0..8 {
            c.push("0123456789abcdefghij").unwrap();
        }
        assert!(matches!(
            c.check_len(),
            Err(BootConfigError::CommandLineTooLong { .. })
        ));
    }
}
