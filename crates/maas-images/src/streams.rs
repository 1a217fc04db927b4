//! The SimpleStreams data model: the index, products files, selections and
//! the file types MAAS boots from.
//!
//! A stream is a tree: `streams/v1/index.json` (or the signed
//! `index.sjson`) names products files by path; each products file maps a
//! product id to attributes (`os`, `release`, `arch`, `subarch`, `label`,
//! ...) and versions (`20240423`), each version to items (files with
//! `ftype`, `path`, `size`, `sha256`). Attributes are inherited downwards
//! (an item without `arch` has its product's), as simplestreams' condensed
//! form writes them. All paths are relative to the tree's root.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ImageError;

/// Where a stream's index lives, relative to its root.
pub const INDEX_PATH: &str = "streams/v1/index.json";
/// The signed index.
pub const SIGNED_INDEX_PATH: &str = "streams/v1/index.sjson";

/// `streams/v1/index.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Index {
    /// `index:1.0`.
    pub format: String,
    /// When the index was written (RFC 2822, as simplestreams writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    /// Content id to entry.
    pub index: BTreeMap<String, IndexEntry>,
}

/// One products file named by the index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexEntry {
    /// `image-downloads` for the files MAAS syncs (`image-ids` for
    /// cloud image ids, which this crate skips).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datatype: Option<String>,
    /// `products:1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The products file, relative to the root (`streams/v1/<id>.json`).
    pub path: String,
    /// When it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    /// The product ids it holds.
    #[serde(default)]
    pub products: Vec<String>,
}

/// A products file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Products {
    /// The content id (matches the index key).
    pub content_id: String,
    /// `image-downloads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datatype: Option<String>,
    /// `products:1.0`.
    pub format: String,
    /// When it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    /// Product id to product.
    pub products: BTreeMap<String, Product>,
    /// Attributes every product inherits.
    #[serde(flatten)]
    pub attrs: Map<String, Value>,
}

/// A product: one image line (`ubuntu noble amd64 ga-24.04`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Product {
    /// Version name (sortable, e.g. `20240423` or `20240423.1`) to version.
    pub versions: BTreeMap<String, ProductVersion>,
    /// `os`, `release`, `arch`, `subarch`, `label`, `kflavor`, ...
    #[serde(flatten)]
    pub attrs: Map<String, Value>,
}

/// One version of a product.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProductVersion {
    /// Item name to item.
    pub items: BTreeMap<String, Item>,
    /// Attributes its items inherit.
    #[serde(flatten)]
    pub attrs: Map<String, Value>,
}

/// A file of a product version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Item {
    /// `boot-kernel`, `squashfs`, ...
    pub ftype: String,
    /// Relative to the tree's root.
    pub path: String,
    /// Lower-case hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Anything else (`md5`, `kpackage`, ...).
    #[serde(flatten)]
    pub attrs: Map<String, Value>,
}

/// The file types MAAS boots or deploys from. Others in a stream (manifests,
/// `root-image.gz`, ...) are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
#[non_exhaustive]
pub enum FileType {
    /// `boot-kernel`.
    BootKernel,
    /// `boot-initrd`.
    BootInitrd,
    /// `boot-dtb` (device tree, some arm64 boards).
    BootDtb,
    /// `squashfs`: the ephemeral root the kernel mounts over HTTP.
    Squashfs,
    /// `root-tgz`: a root file system tarball (gzip).
    RootTgz,
    /// `root-tbz` (bzip2).
    RootTbz,
    /// `root-txz` (xz).
    RootTxz,
    /// `root-dd`: a raw disk image.
    RootDd,
    /// `root-dd.raw`.
    RootDdRaw,
    /// `root-dd.tar`: a tarball holding one disk image.
    RootDdTar,
    /// `root-dd.gz`.
    RootDdGz,
    /// `root-dd.bz2`.
    RootDdBz2,
    /// `root-dd.xz`.
    RootDdXz,
    /// `root-dd.tar.xz`.
    RootDdTarXz,
}

impl FileType {
    /// Every type, in a stable order.
    pub const ALL: [FileType; 14] = [
        Self::BootKernel,
        Self::BootInitrd,
        Self::BootDtb,
        Self::Squashfs,
        Self::RootTgz,
        Self::RootTbz,
        Self::RootTxz,
        Self::RootDd,
        Self::RootDdRaw,
        Self::RootDdTar,
        Self::RootDdGz,
        Self::RootDdBz2,
        Self::RootDdXz,
        Self::RootDdTarXz,
    ];

    /// The stream's name for it, also the last path segment the rack
    /// serves it under.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BootKernel => "boot-kernel",
            Self::BootInitrd => "boot-initrd",
            Self::BootDtb => "boot-dtb",
            Self::Squashfs => "squashfs",
            Self::RootTgz => "root-tgz",
            Self::RootTbz => "root-tbz",
            Self::RootTxz => "root-txz",
            Self::RootDd => "root-dd",
            Self::RootDdRaw => "root-dd.raw",
            Self::RootDdTar => "root-dd.tar",
            Self::RootDdGz => "root-dd.gz",
            Self::RootDdBz2 => "root-dd.bz2",
            Self::RootDdXz => "root-dd.xz",
            Self::RootDdTarXz => "root-dd.tar.xz",
        }
    }

    /// The `Content-Type` the boot-file server sends.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::RootTgz | Self::RootDdGz => "application/gzip",
            Self::RootTbz | Self::RootDdBz2 => "application/x-bzip2",
            Self::RootTxz | Self::RootDdXz | Self::RootDdTarXz => "application/x-xz",
            Self::RootDdTar => "application/x-tar",
            Self::BootKernel
            | Self::BootInitrd
            | Self::BootDtb
            | Self::Squashfs
            | Self::RootDd
            | Self::RootDdRaw => "application/octet-stream",
        }
    }
}

impl fmt::Display for FileType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FileType {
    type Err = ImageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| ImageError::InvalidName {
                field: "file type",
                value: s.to_owned(),
                reason: "not a file type MAAS boots or deploys from",
            })
    }
}

impl TryFrom<String> for FileType {
    type Error = ImageError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<FileType> for String {
    fn from(t: FileType) -> Self {
        t.as_str().to_owned()
    }
}

/// Which image an entry is: the five attributes a boot path is made of.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ImageKey {
    /// `ubuntu`, `centos`, `custom`, ...
    pub os: String,
    /// `noble`; a custom image's name.
    pub release: String,
    /// `amd64`.
    pub arch: String,
    /// `ga-24.04`, `hwe-24.04`, `generic`.
    pub subarch: String,
    /// `stable`, `candidate`, `uploaded`.
    pub label: String,
}

impl ImageKey {
    /// The directory a rack serves the image's files under, in the order
    /// the boot configs use: `<os>/<arch>/<subarch>/<release>/<label>`.
    pub fn boot_dir(&self) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            self.os, self.arch, self.subarch, self.release, self.label
        )
    }
}

impl fmt::Display for ImageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.boot_dir())
    }
}

/// Which products to sync. A field left `None` matches anything; a product
/// is synced when any one selection matches it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// `ubuntu`.
    pub os: Option<String>,
    /// `noble`.
    pub release: Option<String>,
    /// `amd64`.
    pub arch: Option<String>,
    /// `ga-24.04`.
    pub subarch: Option<String>,
    /// `stable`.
    pub label: Option<String>,
}

impl Selection {
    /// Whether a product with these attributes is selected.
    pub fn matches(&self, key: &ImageKey) -> bool {
        fn ok(want: &Option<String>, have: &str) -> bool {
            want.as_deref().is_none_or(|w| w == have)
        }
        ok(&self.os, &key.os)
            && ok(&self.release, &key.release)
            && ok(&self.arch, &key.arch)
            && ok(&self.subarch, &key.subarch)
            && ok(&self.label, &key.label)
    }
}

impl FromStr for Selection {
    type Err = ImageError;

    /// `os=ubuntu,release=noble,arch=amd64` (any subset of os, release,
    /// arch, subarch, label; empty matches everything).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut sel = Selection::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(ImageError::InvalidName {
                    field: "selection",
                    value: part.to_owned(),
                    reason: "expected key=value",
                });
            };
            let slot = match k.trim() {
                "os" => &mut sel.os,
                "release" => &mut sel.release,
                "arch" => &mut sel.arch,
                "subarch" => &mut sel.subarch,
                "label" => &mut sel.label,
                _ => {
                    return Err(ImageError::InvalidName {
                        field: "selection key",
                        value: k.to_owned(),
                        reason: "expected os, release, arch, subarch or label",
                    });
                }
            };
            *slot = Some(v.trim().to_owned());
        }
        Ok(sel)
    }
}

/// A file the sync must have in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamFile {
    /// What it is.
    pub ftype: FileType,
    /// Relative to the stream's root.
    pub path: String,
    /// Lower-case hex.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// The newest version of one selected product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectedImage {
    /// The product id.
    pub product: String,
    /// The version name.
    pub version: String,
    /// The image's identity.
    pub key: ImageKey,
    /// One file per type (the first item of each type, by item name).
    pub files: Vec<StreamFile>,
}

fn attr<'a>(maps: &[&'a Map<String, Value>], name: &str) -> Option<&'a str> {
    maps.iter()
        .find_map(|m| m.get(name).and_then(Value::as_str))
}

/// Checks a path a stream names: relative, no `..`, no empty segment, no
/// backslash or NUL. Keeps a hostile stream from reading or writing outside
/// its tree.
pub fn check_stream_path(path: &str, context: &str) -> Result<(), ImageError> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path.contains('\0')
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        return Err(ImageError::InvalidStream {
            path: context.to_owned(),
            reason: format!("refusing path {path:?}"),
        });
    }
    Ok(())
}

fn check_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Products {
    /// Parses a products document (`path` names it in errors).
    pub fn parse(text: &str, path: &str) -> Result<Self, ImageError> {
        serde_json::from_str(text).map_err(|source| ImageError::BadMetadata {
            path: path.to_owned(),
            source,
        })
    }

    /// The newest version of each product that a selection matches and that
    /// holds at least one of `types`, with its files of those types.
    pub fn select(
        &self,
        selections: &[Selection],
        types: &[FileType],
        path: &str,
    ) -> Result<Vec<SelectedImage>, ImageError> {
        let mut out = Vec::new();
        for (id, product) in &self.products {
            let maps = [&product.attrs, &self.attrs];
            let (Some(os), Some(release), Some(arch)) = (
                attr(&maps, "os"),
                attr(&maps, "release"),
                attr(&maps, "arch"),
            ) else {
                tracing::debug!(product = %id, "skipped: no os, release or arch");
                continue;
            };
            let key = ImageKey {
                os: os.to_owned(),
                release: release.to_owned(),
                arch: arch.to_owned(),
                subarch: attr(&maps, "subarch").unwrap_or("generic").to_owned(),
                label: attr(&maps, "label").unwrap_or("stable").to_owned(),
            };
            if !selections.is_empty() && !selections.iter().any(|s| s.matches(&key)) {
                continue;
            }
            // Version names sort as strings (simplestreams does the same).
            for (version, v) in product.versions.iter().rev() {
                let files = version_files(v, types, &format!("{path}: {id} {version}"))?;
                if !files.is_empty() {
                    out.push(SelectedImage {
                        product: id.clone(),
                        version: version.clone(),
                        key: key.clone(),
                        files,
                    });
                    break;
                }
            }
        }
        Ok(out)
    }
}

fn version_files(
    v: &ProductVersion,
    types: &[FileType],
    context: &str,
) -> Result<Vec<StreamFile>, ImageError> {
    let mut files: Vec<StreamFile> = Vec::new();
    for (name, item) in &v.items {
        let Ok(ftype) = item.ftype.parse::<FileType>() else {
            continue;
        };
        if !types.contains(&ftype) || files.iter().any(|f| f.ftype == ftype) {
            continue;
        }
        let where_ = format!("{context} item {name}");
        check_stream_path(&item.path, &where_)?;
        let sha256 = item
            .sha256
            .as_deref()
            .map(str::to_ascii_lowercase)
            .filter(|s| check_sha256(s))
            .ok_or_else(|| ImageError::InvalidStream {
                path: where_.clone(),
                reason: "no valid sha256".into(),
            })?;
        let size = item.size.ok_or_else(|| ImageError::InvalidStream {
            path: where_.clone(),
            reason: "no size".into(),
        })?;
        files.push(StreamFile {
            ftype,
            path: item.path.clone(),
            sha256,
            size,
        });
    }
    files.sort_by_key(|f| f.ftype);
    Ok(files)
}

impl Index {
    /// Parses an index document.
    pub fn parse(text: &str, path: &str) -> Result<Self, ImageError> {
        serde_json::from_str(text).map_err(|source| ImageError::BadMetadata {
            path: path.to_owned(),
            source,
        })
    }

    /// The products files to read: entries whose datatype is
    /// `image-downloads` (or unset).
    pub fn download_paths(&self) -> Result<Vec<String>, ImageError> {
        let mut out = Vec::new();
        for (id, e) in &self.index {
            if e.datatype
                .as_deref()
                .is_some_and(|d| d != "image-downloads")
            {
                continue;
            }
            check_stream_path(&e.path, &format!("index entry {id}"))?;
            out.push(e.path.clone());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_parses_and_matches() {
        let s: Selection = "os=ubuntu, arch=amd64".parse().unwrap();
        let mut k = ImageKey {
            os: "ubuntu".into(),
            release: "noble".into(),
            arch: "amd64".into(),
            subarch: "ga-24.04".into(),
            label: "stable".into(),
        };
        assert!(s.matches(&k));
        k.arch = "arm64".into();
        assert!(!s.matches(&k));
        assert!("colour=blue".parse::<Selection>().is_err());
        assert!("os".parse::<Selection>().is_err());
        assert_eq!("".parse::<Selection>().unwrap(), Selection::default());
    }

    #[test]
    fn inherited_attributes_and_newest_version() {
        let sha = "a".repeat(64);
        let doc = serde_json::json!({
            "content_id": "c", "format": "products:1.0", "os": "ubuntu", "label": "stable",
            "products": {
                "p1": {"release": "noble", "arch": "amd64", "subarch": "ga-24.04", "versions": {
                    "20240101": {"items": {"k": {"ftype": "boot-kernel", "path": "a/k", "sha256": sha, "size": 1}}},
                    "20240301": {"items": {
                        "k": {"ftype": "boot-kernel", "path": "b/k", "sha256": sha, "size": 2},
                        "m": {"ftype": "manifest", "path": "b/m"}
                    }},
                    "20240401": {"items": {"m": {"ftype": "manifest", "path": "c/m"}}}
                }},
                "p2": {"release": "jammy", "arch": "amd64", "versions": {}}
            }
        });
        let p = Products::parse(&doc.to_string(), "x").unwrap();
        let sel = p.select(&[], &FileType::ALL, "x").unwrap();
        assert_eq!(sel.len(), 1);
        assert_eq!(sel[0].version, "20240301");
        assert_eq!(sel[0].key.os, "ubuntu");
        assert_eq!(sel[0].key.boot_dir(), "ubuntu/amd64/ga-24.04/noble/stable");
        assert_eq!(sel[0].files[0].path, "b/k");
        let none = p
            .select(&["release=jammy".parse().unwrap()], &FileType::ALL, "x")
            .unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn hostile_paths_refused() {
        for p in ["../x", "/etc/passwd", "a/../../b", "a//b", "a\\b", ""] {
            assert!(check_stream_path(p, "t").is_err(), "{p}");
        }
        assert!(check_stream_path("a/b.c/d", "t").is_ok());
    }

    #[test]
    fn file_types_round_trip() {
        for t in FileType::ALL {
            assert_eq!(t.as_str().parse::<FileType>().unwrap(), t);
        }
        assert!("manifest".parse::<FileType>().is_err());
    }
}
