//! # maas-curtin
//!
//! What a deploying machine is told to do, and what the ephemeral
//! environment is told: the curtin config (image source, storage layout,
//! network config, kernel, apt, commands, reporting, the cloud-init files
//! for the deployed OS), cloud-init preseeds, user data and vendor data, and
//! MAAS's preseed template lookup. No sockets; templates are read from a
//! user directory when one is given.
//!
//! Everything is checked before it is rendered ([`validate_deploy`]), so a
//! layout that does not fit, a missing boot partition, a bond without
//! members, a full subnet or a static address outside its subnet is a
//! [`CurtinError`] naming the disk, interface or subnet, before any machine
//! is powered on.
//!
//! ```
//! use chrono::Utc;
//! use maas_core::machine::{BlockDevice, FirmwareKind, Interface, InterfaceLink, LinkMode, Machine};
//! use maas_core::{Architecture, Hostname, MacAddress, SystemId};
//! use maas_curtin::{
//!     DeployContext, DeployRequest, ImageFileType, ImageSource, MetadataEndpoint,
//!     NetworkInputs, NodeCredentials, TemplateStore, render_curtin_config,
//! };
//!
//! let mut m = Machine::new(
//!     SystemId::parse("abc123")?,
//!     Hostname::parse("node-1")?,
//!     Architecture::amd64(),
//!     Utc::now(),
//! );
//! m.hardware.firmware.kind = FirmwareKind::Uefi;
//! m.block_devices.push(BlockDevice::disk("sda", 100 << 30));
//! let mut eth0 = Interface::physical("eth0", MacAddress::parse("52:54:00:12:34:56")?);
//! eth0.links.push(InterfaceLink { id: None, mode: LinkMode::Dhcp, subnet: None, ip: None });
//! m.interfaces.push(eth0);
//!
//! let endpoint = MetadataEndpoint::new("http://10.0.0.2:5248")?;
//! let credentials = NodeCredentials {
//!     consumer_key: "ck".into(),
//!     token_key: "tk".into(),
//!     token_secret: "ts".into(),
//! };
//! let ctx = DeployContext {
//!     machine: &m,
//!     network: &NetworkInputs::default(),
//!     endpoint: &endpoint,
//!     credentials: &credentials,
//!     templates: &TemplateStore::builtin(),
//! };
//! let image = ImageSource {
//!     url: "http://10.0.0.2:5248/images/ubuntu/amd64/ga-24.04/noble/stable/squashfs".into(),
//!     file_type: ImageFileType::Squashfs,
//! };
//! let config = render_curtin_config(&ctx, &DeployRequest::new("noble", image))?;
//! assert!(config.yaml.contains("flag: boot")); // the EFI system partition
//! assert!(config.yaml.contains("endpoint: http://10.0.0.2:5248/MAAS/metadata/status/abc123"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cloudinit;
mod curtin;
mod error;
pub mod network;
pub mod storage;
mod template;
mod yaml;

pub use cloudinit::{
    AptConfig, CLOUD_CONFIG_HEADER, EphemeralPurpose, MetadataEndpoint, NodeContext,
    NodeCredentials, TargetFile, deploy_user_data, target_cloud_config,
};
pub use curtin::{
    CurtinConfig, DeployContext, DeployRequest, ERROR_TARFILE, INSTALL_LOG, ImageFileType,
    ImageSource, KERNEL_PARAMS_FILE, ValidatedDeploy, render_curtin_config, validate_deploy,
};
pub use error::CurtinError;
pub use network::{NetworkInputs, NetworkVersion, StaticRoute};
pub use storage::{StorageLayout, StoragePlan};
pub use template::{FoundTemplate, GENERIC, TemplateStore, candidate_names, render_source};
