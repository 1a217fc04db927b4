//! # maas-boot
//!
//! What a network-booting machine's firmware or loader fetches next, from
//! why it is booting and how. No I/O: a DHCP server asks
//! [`BootMethod::from_dhcp`] which boot file to hand out, a TFTP or HTTP
//! server asks [`BootConfigRequest::parse`] what a requested path is, and
//! the region's answer (the machine's status, through
//! [`BootPurpose::for_status`]) picks what [`ipxe_script`], [`grub_cfg`] or
//! [`pxelinux_cfg`] render.
//!
//! Every value that reaches a script is validated when it is made
//! ([`HttpUrl`], [`RackPath`], [`KernelParam`], and maas-core's
//! `Hostname`, `SystemId`, `MacAddress`), so nothing a user can set (a host
//! name, a tag's kernel options) can end a `kernel` line and start another
//! command.
//!
//! ```
//! use maas_boot::{
//!     BootConfigRequest, BootMethod, BootParams, BootPurpose, ConfigKind, HttpUrl, ImagePaths,
//!     KernelParam,
//! };
//! use maas_core::lifecycle::NodeStatus;
//! use maas_core::{Architecture, Hostname, MacAddress, SystemId};
//!
//! // DHCP: the BIOS iPXE ROM of a QEMU machine.
//! let method = BootMethod::from_dhcp(0, true, "PXEClient:Arch:00000:UNDI:002001").unwrap();
//! assert_eq!(method, BootMethod::Ipxe);
//! let rack = HttpUrl::parse("http://10.99.0.1:5248")?;
//! assert_eq!(method.dhcp_filename(&rack), "http://10.99.0.1:5248/ipxe/boot.ipxe");
//!
//! // HTTP: iPXE then asks for its own script.
//! let req = BootConfigRequest::parse("/ipxe/mac-525400990010.ipxe").unwrap();
//! assert_eq!(req.kind, ConfigKind::Ipxe);
//!
//! // The region knows this MAC: a machine being commissioned.
//! let purpose = BootPurpose::for_status(NodeStatus::Commissioning, true);
//! let images = ImagePaths::maas("ubuntu", "amd64", "ga-24.04", "noble", "stable")?;
//! let mut params = BootParams::new(rack, Architecture::amd64(), images);
//! params.mac = req.mac;
//! params.hostname = Some(Hostname::parse("node-1")?);
//! params.system_id = Some(SystemId::parse("abc123")?);
//! params.console = Some(KernelParam::new("ttyS0,115200")?);
//! let script = req.kind.render(purpose, &params)?;
//! assert!(script.starts_with("#!ipxe\n"));
//! assert!(script.contains(" BOOTIF=01-52-54-00-99-00-10 "));
//! assert!(script.contains(
//!     " cloud-config-url=http://10.99.0.1:5248/MAAS/metadata/latest/by-id/abc123/?op=get_preseed "
//! ));
//!
//! // A tag's kernel options cannot smuggle in a second iPXE command.
//! assert!(KernelParam::split_options("quiet || shell").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cmdline;
mod error;
mod grub;
mod ipxe;
mod method;
mod params;
mod purpose;
mod pxelinux;
mod request;

pub use cmdline::{
    ConfigKind, DATASOURCE_WORD, ENLIST_HOSTNAME, KernelCommandLine, KernelParam, MAX_COMMAND_LINE,
};
pub use error::BootConfigError;
pub use grub::grub_cfg;
pub use ipxe::ipxe_script;
pub use method::BootMethod;
pub use params::{BootParams, HttpUrl, ImagePaths, RACK_HTTP_PORT, RackPath, UrlHost};
pub use purpose::BootPurpose;
pub use pxelinux::pxelinux_cfg;
pub use request::BootConfigRequest;
