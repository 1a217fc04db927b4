//! Boot configs per machine (over TFTP and HTTP) and boot loaders.
//!
//! The purpose of a boot comes from the machine's status and netboot flag
//! in the rack's cached configuration ([`BootPurpose::for_status_netboot`]);
//! an unknown MAC enlists. The kernel and initrd come from the image store:
//! the ephemeral image the region names, for the machine's architecture.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use maas_boot::{BootConfigRequest, BootParams, BootPurpose, HttpUrl, ImagePaths, RackPath};
use maas_core::rack::{
    BootHost, EphemeralImage, RackConfig, RackCredentials, RackReport, RegionLink,
};
use maas_core::{Architecture, Hostname};
use maas_images::ImageStore;
use maas_images::streams::FileType;
use maas_tftp::{DirectoryProvider, FileProvider, FileRequest, FileSource, ProviderError};
use tokio::sync::watch;

use crate::{RackStats, Reporter};

/// Renders boot configs and serves boot loaders, for TFTP and HTTP alike.
#[derive(Clone)]
pub(crate) struct BootFiles {
    pub(crate) config: watch::Receiver<Option<Arc<RackConfig>>>,
    pub(crate) link: Arc<dyn RegionLink>,
    pub(crate) credentials: watch::Receiver<Option<RackCredentials>>,
    pub(crate) images: ImageStore,
    pub(crate) loaders: Option<Arc<DirectoryProvider>>,
    pub(crate) http_port: u16,
    pub(crate) reports: Reporter,
    pub(crate) stats: Arc<RackStats>,
}

/// The kernel, initrd and squashfs of the ephemeral image for `arch`.
fn ephemeral_paths(
    store: &ImageStore,
    eph: &EphemeralImage,
    arch: &Architecture,
) -> Result<ImagePaths, String> {
    let manifest = store.current().map_err(|e| e.to_string())?;
    let candidates = manifest.images.iter().filter(|i| {
        i.key.os == eph.osystem
            && i.key.release == eph.release
            && i.key.arch == arch.arch()
            && i.file(FileType::BootKernel).is_some()
            && i.file(FileType::BootInitrd).is_some()
    });
    // The machine's own subarch first, then any; `stable` before others.
    let image = candidates
        .min_by_key(|i| {
            (
                i.key.subarch != arch.subarch() && i.key.subarch != "generic",
                i.key.label != "stable",
            )
        })
        .ok_or_else(|| {
            format!(
                "no {}/{} boot image for {} in the image cache",
                eph.osystem, eph.release, arch
            )
        })?;
    let k = &image.key;
    let mut paths = ImagePaths::maas(&k.os, &k.arch, &k.subarch, &k.release, &k.label)
        .map_err(|e| e.to_string())?;
    if image.file(FileType::Squashfs).is_none() {
        paths.squashfs = None;
    }
    Ok(paths)
}

impl BootFiles {
    /// The node of `mac`: asked of the region (a second at most), else
    /// from the cached configuration.
    async fn host(
        &self,
        mac: maas_core::MacAddress,
        cached: Option<&RackConfig>,
    ) -> Option<BootHost> {
        let me = self.credentials.borrow().clone();
        if let Some(me) = me {
            let asked = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                self.link.boot_host(&me, mac),
            )
            .await;
            match asked {
                Ok(Ok(h)) => return h,
                Ok(Err(e)) => tracing::debug!(error = %e, "boot lookup failed; using the cache"),
                Err(_) => tracing::debug!("boot lookup timed out; using the cache"),
            }
        }
        cached.and_then(|c| c.host(mac).cloned())
    }

    /// The boot config `path` names, rendered for the machine it names, or
    /// `None` when `path` is not a boot config. `local` is the address the
    /// request came to (the URLs in the config point there).
    pub(crate) async fn render(
        &self,
        path: &str,
        local: IpAddr,
        peer: SocketAddr,
        protocol: &'static str,
    ) -> Option<Result<String, String>> {
        let req = BootConfigRequest::parse(path)?;
        let config = self.config.borrow().clone();
        let host = match req.mac {
            Some(mac) => self.host(mac, config.as_deref()).await,
            None => None,
        };
        let purpose = match &host {
            Some(h) => BootPurpose::for_status_netboot(h.status, true, h.netboot),
            None => BootPurpose::Enlist,
        };
        let arch = host
            .as_ref()
            .and_then(|h| Architecture::parse(&h.architecture).ok())
            .unwrap_or_else(Architecture::amd64);
        let eph = config
            .as_ref()
            .map(|c| c.ephemeral.clone())
            .unwrap_or(EphemeralImage {
                osystem: "ubuntu".into(),
                release: "noble".into(),
            });
        let result = (|| {
            let images = match ephemeral_paths(&self.images, &eph, &arch) {
                Ok(p) => p,
                // Booting the disk or powering off loads no kernel.
                Err(_) if !purpose.is_ephemeral() => ImagePaths {
                    kernel: RackPath::parse("images/none/boot-kernel")
                        .map_err(|e| e.to_string())?,
                    initrd: RackPath::parse("images/none/boot-initrd")
                        .map_err(|e| e.to_string())?,
                    squashfs: None,
                },
                Err(e) => return Err(e),
            };
            let rack_url = HttpUrl::parse(&format!(
                "http://{}/",
                SocketAddr::new(local, self.http_port)
            ))
            .map_err(|e| e.to_string())?;
            let mut p = BootParams::new(rack_url, arch, images);
            p.mac = req.mac;
            if let Some(h) = &host {
                p.system_id = Some(h.system_id.clone());
                p.hostname = Hostname::parse(&h.hostname).ok();
            }
            req.kind.render(purpose, &p).map_err(|e| e.to_string())
        })();
        self.stats.bump(&self.stats.boot_configs);
        if result.is_err() {
            self.stats.bump(&self.stats.boot_config_errors);
        }
        tracing::info!(%peer, path, protocol, purpose = purpose.as_str(), ok = result.is_ok(), "boot config");
        self.reports.send(RackReport::BootFetch {
            mac: req.mac,
            peer: peer.ip().to_string(),
            path: path.trim_start_matches('/').to_owned(),
            protocol: protocol.to_owned(),
            purpose: Some(
                match purpose {
                    BootPurpose::Enlist => "enlistment",
                    BootPurpose::Commission => "commissioning",
                    BootPurpose::Deploy => "installation",
                    BootPurpose::LocalBoot => "local boot",
                    BootPurpose::Rescue => "rescue",
                    BootPurpose::Erase => "erasure",
                    BootPurpose::Poweroff => "power off",
                    _ => purpose.as_str(),
                }
                .to_owned(),
            ),
        });
        Some(result)
    }
}

#[async_trait]
impl FileProvider for BootFiles {
    async fn open(&self, r: &FileRequest<'_>) -> Result<FileSource, ProviderError> {
        if let Some(rendered) = self.render(r.path, r.local.ip(), r.peer, "tftp").await {
            return rendered
                .map(FileSource::from_bytes)
                .map_err(|reason| ProviderError::Failed {
                    path: r.path.to_owned(),
                    reason,
                });
        }
        match &self.loaders {
            Some(dir) => {
                let f = dir.open(r).await;
                tracing::info!(peer = %r.peer, path = r.path, ok = f.is_ok(), "tftp file");
                f
            }
            None => Err(ProviderError::NotFound {
                path: r.path.to_owned(),
            }),
        }
    }
}
