//! The curtin config of a deployment: everything generated from the
//! machine and the request, merged over the `curtin_userdata` template.

use std::collections::BTreeMap;

use maas_core::machine::Machine;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use crate::cloudinit::{
    AptConfig, AptSection, MetadataEndpoint, NodeCredentials, TargetFile, Webhook, check_url,
    target_cloud_config, template_node, to_yaml, webhook,
};
use crate::error::{CurtinError, invalid};
use crate::network::{AutoAddress, NetworkConfig, NetworkInputs, NetworkVersion, ResolvedNetwork};
use crate::storage::{ResolvedPlan, StorageConfig, StorageLayout, dd_plan};
use crate::template::{TemplateStore, candidate_names, check_name_part};

/// Where the install log goes, posted back to MAAS with the final status.
pub const INSTALL_LOG: &str = "/tmp/install.log";
/// Curtin's error tarball, posted back on failure.
pub const ERROR_TARFILE: &str = "/tmp/curtin-logs.tar";
/// The grub.d file the kernel parameters are written to.
pub const KERNEL_PARAMS_FILE: &str = "/etc/default/grub.d/50-maas-kernel-params.cfg";

/// The file type of the image to install, as MAAS's boot resources name
/// them, and curtin's source type for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[allow(missing_docs)]
pub enum ImageFileType {
    RootTgz,
    RootTbz,
    RootTxz,
    Squashfs,
    RootDd,
    RootDdTar,
    RootDdRaw,
    RootDdBz2,
    RootDdGz,
    RootDdXz,
    RootDdTgz,
    RootDdTbz,
    RootDdTxz,
}

impl ImageFileType {
    /// curtin's `sources` type.
    pub const fn curtin_type(self) -> &'static str {
        match self {
            ImageFileType::RootTgz => "tgz",
            ImageFileType::RootTbz => "tbz",
            ImageFileType::RootTxz => "txz",
            ImageFileType::Squashfs => "fsimage",
            ImageFileType::RootDd | ImageFileType::RootDdTgz => "dd-tgz",
            ImageFileType::RootDdTar => "dd-tar",
            ImageFileType::RootDdRaw => "dd-raw",
            ImageFileType::RootDdBz2 => "dd-bz2",
            ImageFileType::RootDdGz => "dd-gz",
            ImageFileType::RootDdXz => "dd-xz",
            ImageFileType::RootDdTbz => "dd-tbz",
            ImageFileType::RootDdTxz => "dd-txz",
        }
    }

    /// A whole-disk image: curtin writes it over the boot disk, so no
    /// partitions are laid out.
    pub const fn is_disk_image(self) -> bool {
        !matches!(
            self,
            ImageFileType::RootTgz
                | ImageFileType::RootTbz
                | ImageFileType::RootTxz
                | ImageFileType::Squashfs
        )
    }
}

/// The image to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSource {
    /// Its URL (the rack's image cache).
    pub url: String,
    /// Its file type.
    pub file_type: ImageFileType,
}

/// What the user asked a deployment to do.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployRequest {
    /// OS name (`ubuntu`), for template lookup.
    pub osystem: String,
    /// Release (`noble`), for template lookup.
    pub release: String,
    /// The image.
    pub image: ImageSource,
    /// Storage layout.
    pub layout: StorageLayout,
    /// Network config format.
    pub network_version: NetworkVersion,
    /// Kernel package to install (`linux-generic-hwe-24.04`); default: the
    /// image's.
    pub kernel_package: Option<String>,
    /// Extra kernel parameters for the deployed OS.
    pub kernel_params: Vec<String>,
    /// Apt proxy and mirrors (curtin's `apt` and `proxy`).
    pub apt: AptConfig,
    /// Commands curtin runs before installing, by name (curtin runs them
    /// in name order), each an argv.
    pub early_commands: BTreeMap<String, Vec<String>>,
    /// Commands curtin runs after installing, by name.
    pub late_commands: BTreeMap<String, Vec<String>>,
}

impl DeployRequest {
    /// A request with the defaults: ubuntu, flat layout, netplan, nothing
    /// extra.
    pub fn new(release: &str, image: ImageSource) -> Self {
        DeployRequest {
            osystem: "ubuntu".to_owned(),
            release: release.to_owned(),
            image,
            layout: StorageLayout::Flat(Default::default()),
            network_version: NetworkVersion::V2,
            kernel_package: None,
            kernel_params: Vec::new(),
            apt: AptConfig::default(),
            early_commands: BTreeMap::new(),
            late_commands: BTreeMap::new(),
        }
    }
}

/// Everything a curtin config is made from besides the request.
#[derive(Debug, Clone)]
pub struct DeployContext<'a> {
    /// The machine.
    pub machine: &'a Machine,
    /// Its network.
    pub network: &'a NetworkInputs,
    /// The metadata service.
    pub endpoint: &'a MetadataEndpoint,
    /// The machine's credentials.
    pub credentials: &'a NodeCredentials,
    /// Templates.
    pub templates: &'a TemplateStore,
}

/// A deployment checked before anything is powered on.
#[derive(Debug, Clone)]
pub struct ValidatedDeploy {
    /// The storage plan, sizes resolved.
    pub storage: ResolvedPlan,
    /// The network, addresses resolved.
    pub network: ResolvedNetwork,
}

/// A rendered curtin config.
#[derive(Debug, Clone, PartialEq)]
pub struct CurtinConfig {
    /// The YAML curtin reads.
    pub yaml: String,
    /// The template it was merged over (path or `builtin:NAME`).
    pub template: String,
    /// Addresses picked for `auto` links, to record.
    pub allocated: Vec<AutoAddress>,
}

/// Checks a deployment: request values, the storage layout on the disks
/// and firmware, the network and its addresses. The first problem found is
/// returned.
pub fn validate_deploy(
    ctx: &DeployContext<'_>,
    req: &DeployRequest,
) -> Result<ValidatedDeploy, CurtinError> {
    ctx.machine
        .validate()
        .map_err(|e| invalid("machine", &e.field, e.to_string()))?;
    check_name_part("osystem", &req.osystem)?;
    check_name_part("release", &req.release)?;
    check_url("image url", &req.image.url)?;
    req.apt.check()?;
    if let Some(k) = &req.kernel_package {
        check_name_part("kernel", k)?;
    }
    for p in &req.kernel_params {
        check_kernel_param(p)?;
    }
    for (name, argv) in req.early_commands.iter().chain(&req.late_commands) {
        if name.is_empty() || argv.is_empty() {
            return Err(invalid(
                "command",
                name,
                "a command needs a name and an argv",
            ));
        }
    }
    let storage = if req.image.file_type.is_disk_image() {
        let boot = match &req.layout {
            StorageLayout::Flat(o) | StorageLayout::Blank(o) => o.boot_disk.as_deref(),
            StorageLayout::Lvm(o) => o.base.boot_disk.as_deref(),
            StorageLayout::Bcache(o) => o.base.boot_disk.as_deref(),
            StorageLayout::Custom(p) => p.disks.iter().find(|d| d.boot).map(|d| d.disk.as_str()),
        };
        let plan = dd_plan(ctx.machine, boot)?;
        ResolvedPlan {
            sizes: BTreeMap::from([(plan.disks[0].disk.clone(), 0)]),
            plan,
        }
    } else {
        req.layout.plan(ctx.machine)?.validate(ctx.machine)?
    };
    let network = ResolvedNetwork::resolve(ctx.machine, ctx.network)?;
    // Rendering can still refuse (an OVS bridge in version 1).
    network.render(req.network_version)?;
    Ok(ValidatedDeploy { storage, network })
}

fn check_kernel_param(p: &str) -> Result<(), CurtinError> {
    // The parameters end up inside a double-quoted shell string in grub.d.
    if p.is_empty()
        || p.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '$' | '\\' | '`' | ';')
        })
    {
        return Err(invalid(
            "kernel parameter",
            p,
            "expected one word without quotes, '$', '\\', '`' or ';'",
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct Source {
    #[serde(rename = "type")]
    kind: &'static str,
    uri: String,
}

#[derive(Serialize)]
struct Kernel {
    package: String,
}

#[derive(Serialize)]
struct Proxy {
    http_proxy: String,
    https_proxy: String,
}

#[derive(Serialize)]
struct WriteFile {
    path: &'static str,
    content: String,
    permissions: &'static str,
}

#[derive(Serialize)]
struct Install {
    log_file: &'static str,
    error_tarfile: &'static str,
    post_files: [&'static str; 2],
}

#[derive(Serialize)]
struct CurtinPowerState {
    mode: &'static str,
}

#[derive(Serialize)]
struct Generated<'a> {
    sources: BTreeMap<&'static str, Source>,
    storage: StorageConfig,
    network: NetworkConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    kernel: Option<Kernel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    apt: Option<AptSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<Proxy>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    write_files: BTreeMap<&'static str, WriteFile>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    early_commands: &'a BTreeMap<String, Vec<String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    late_commands: &'a BTreeMap<String, Vec<String>>,
    reporting: BTreeMap<&'static str, Webhook<'a>>,
    install: Install,
    cloudconfig: BTreeMap<String, TargetFile>,
    power_state: CurtinPowerState,
}

/// Validates the deployment ([`validate_deploy`]) and renders its curtin
/// config: `sources`, `storage`, `network`, `kernel`, `apt` and `proxy`,
/// kernel parameters (a grub.d file in `write_files`), the request's early
/// and late commands, `reporting` to the status webhook with the install
/// log, the `cloudconfig` files for the deployed OS, and `power_state`
/// (reboot). The `curtin_userdata` template's output is merged under it:
/// its mappings are kept and extended, the generated values win on
/// conflicts.
pub fn render_curtin_config(
    ctx: &DeployContext<'_>,
    req: &DeployRequest,
) -> Result<CurtinConfig, CurtinError> {
    let v = validate_deploy(ctx, req)?;
    let m = ctx.machine;
    let generated = Generated {
        sources: BTreeMap::from([(
            "00_maas",
            Source {
                kind: req.image.file_type.curtin_type(),
                uri: req.image.url.clone(),
            },
        )]),
        storage: v.storage.to_curtin(m),
        network: v.network.render(req.network_version)?,
        kernel: req.kernel_package.clone().map(|package| Kernel { package }),
        apt: req.apt.apt_value(),
        proxy: req.apt.proxy.clone().map(|p| Proxy {
            http_proxy: p.clone(),
            https_proxy: p,
        }),
        write_files: if req.kernel_params.is_empty() {
            BTreeMap::new()
        } else {
            BTreeMap::from([(
                "maas_kernel_params",
                WriteFile {
                    path: KERNEL_PARAMS_FILE,
                    content: format!(
                        "GRUB_CMDLINE_LINUX_DEFAULT=\"$GRUB_CMDLINE_LINUX_DEFAULT {}\"\n",
                        req.kernel_params.join(" ")
                    ),
                    permissions: "0644",
                },
            )])
        },
        early_commands: &req.early_commands,
        late_commands: &req.late_commands,
        reporting: webhook(ctx.endpoint, m, ctx.credentials),
        install: Install {
            log_file: INSTALL_LOG,
            error_tarfile: ERROR_TARFILE,
            post_files: [INSTALL_LOG, ERROR_TARFILE],
        },
        cloudconfig: target_cloud_config(m, ctx.endpoint, ctx.credentials)?,
        power_state: CurtinPowerState { mode: "reboot" },
    };
    let names = candidate_names("curtin_userdata", &req.osystem, &req.release, Some(m))?;
    let (found, rendered) = ctx.templates.render(
        &names,
        serde_json::json!({
            "node": template_node(m),
            "osystem": req.osystem,
            "release": req.release,
            "metadata_url": ctx.endpoint.metadata_url(),
            "node_disable_pxe_url": ctx.endpoint.by_id_url(&m.system_id),
            "node_disable_pxe_data": "op=netboot_off",
        }),
    )?;
    let bad = |detail: String| CurtinError::TemplateOutput {
        file: found.origin.clone(),
        detail,
    };
    let template = match serde_yaml_ng::from_str::<Value>(&rendered) {
        Ok(Value::Mapping(map)) => map,
        Ok(Value::Null) => Mapping::new(),
        Ok(_) => return Err(bad("expected a YAML mapping".to_owned())),
        Err(e) => return Err(bad(format!("not YAML: {e}"))),
    };
    let Value::Mapping(mut merged) =
        serde_yaml_ng::to_value(&generated).map_err(|e| CurtinError::Serialize(e.to_string()))?
    else {
        return Err(CurtinError::Serialize(
            "the config is not a mapping".to_owned(),
        ));
    };
    merge_under(&mut merged, template);
    Ok(CurtinConfig {
        yaml: to_yaml(&merged)?,
        template: found.origin,
        allocated: v.network.allocated,
    })
}

/// Merges `under` into `base`: mappings key by key, recursively; where
/// both have a value that is not a mapping, `base`'s stays. Keys only in
/// `under` come after `base`'s.
fn merge_under(base: &mut Mapping, under: Mapping) {
    for (k, v) in under {
        match (base.get_mut(&k), v) {
            (Some(Value::Mapping(b)), Value::Mapping(u)) => merge_under(b, u),
            (Some(_), _) => {}
            (None, v) => {
                base.insert(k, v);
            }
        }
    }
}
