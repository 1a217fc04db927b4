//! Writing a SimpleStreams tree from local files, signed with a given key:
//! for tests and for offline users who mirror their own kernels and roots.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::ImageError;
use crate::signing::StreamSigningKey;
use crate::streams::{
    FileType, INDEX_PATH, ImageKey, Index, IndexEntry, Item, Product, ProductVersion, Products,
};

/// One version of one image to put in the tree.
#[derive(Debug, Clone)]
pub struct BuildImage {
    /// Which image.
    pub key: ImageKey,
    /// The version name (sorts as a string: `20240423`, `20240423.1`).
    pub version: String,
    /// Its files.
    pub files: Vec<(FileType, PathBuf)>,
}

/// What [`StreamBuilder::write`] wrote.
#[derive(Debug, Clone)]
pub struct BuiltStream {
    /// The tree's root (holds `streams/`).
    pub root: PathBuf,
    /// The products document's path, relative to the root.
    pub products_path: String,
    /// Whether `.sjson` twins were written.
    pub signed: bool,
}

/// Builds a stream tree.
///
/// ```text
/// <out>/streams/v1/index.json, index.sjson
/// <out>/streams/v1/<content id>.json, .sjson
/// <out>/<os>/<release>/<arch>/<subarch>/<label>/<version>/<ftype>
/// ```
#[derive(Debug, Clone)]
pub struct StreamBuilder {
    content_id: String,
    images: Vec<BuildImage>,
}

impl StreamBuilder {
    /// A builder for a stream with this content id
    /// (`org.example:local:download`).
    pub fn new(content_id: &str) -> Self {
        Self {
            content_id: content_id.to_owned(),
            images: Vec::new(),
        }
    }

    /// Adds one version of an image (several versions of one image make one
    /// product with several versions).
    pub fn add(&mut self, image: BuildImage) -> &mut Self {
        self.images.push(image);
        self
    }

    /// Writes the tree into `out` (created if needed): files are hard-linked
    /// when possible, else copied; metadata as `.json`, and `.sjson` signed
    /// with `key` when given.
    pub fn write(
        &self,
        out: &Path,
        key: Option<&StreamSigningKey>,
    ) -> Result<BuiltStream, ImageError> {
        let now = chrono::Utc::now().to_rfc2822();
        let mut products: BTreeMap<String, Product> = BTreeMap::new();
        for image in &self.images {
            let k = &image.key;
            for (field, v) in [
                ("os", &k.os),
                ("release", &k.release),
                ("arch", &k.arch),
                ("subarch", &k.subarch),
                ("label", &k.label),
                ("version", &image.version),
            ] {
                crate::streams::check_stream_path(v, field)?;
            }
            let dir = format!(
                "{}/{}/{}/{}/{}/{}",
                k.os, k.release, k.arch, k.subarch, k.label, image.version
            );
            let mut items = BTreeMap::new();
            for (ftype, src) in &image.files {
                let rel = format!("{dir}/{ftype}");
                let dst = out.join(&rel);
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| ImageError::io(parent, e))?;
                }
                let (sha256, size) = hash_file(src)?;
                let _ = std::fs::remove_file(&dst);
                if std::fs::hard_link(src, &dst).is_err() {
                    std::fs::copy(src, &dst).map_err(|e| ImageError::io(&dst, e))?;
                }
                items.insert(
                    ftype.as_str().to_owned(),
                    Item {
                        ftype: ftype.as_str().to_owned(),
                        path: rel,
                        sha256: Some(sha256),
                        size: Some(size),
                        attrs: Map::new(),
                    },
                );
            }
            let id = format!(
                "{}:{}:{}:{}:{}:{}",
                self.content_id, k.os, k.release, k.arch, k.subarch, k.label
            );
            let product = products.entry(id).or_insert_with(|| {
                let mut attrs = Map::new();
                for (name, v) in [
                    ("os", &k.os),
                    ("release", &k.release),
                    ("arch", &k.arch),
                    ("subarch", &k.subarch),
                    ("label", &k.label),
                ] {
                    attrs.insert(name.into(), Value::String(v.clone()));
                }
                Product {
                    versions: BTreeMap::new(),
                    attrs,
                }
            });
            product.versions.insert(
                image.version.clone(),
                ProductVersion {
                    items,
                    attrs: Map::new(),
                },
            );
        }
        let products_path = format!("streams/v1/{}.json", self.content_id);
        crate::streams::check_stream_path(&products_path, "content id")?;
        let index = Index {
            format: "index:1.0".into(),
            updated: Some(now.clone()),
            index: [(
                self.content_id.clone(),
                IndexEntry {
                    datatype: Some("image-downloads".into()),
                    format: Some("products:1.0".into()),
                    path: products_path.clone(),
                    updated: Some(now.clone()),
                    products: products.keys().cloned().collect(),
                },
            )]
            .into_iter()
            .collect(),
        };
        let products = Products {
            content_id: self.content_id.clone(),
            datatype: Some("image-downloads".into()),
            format: "products:1.0".into(),
            updated: Some(now),
            products,
            attrs: Map::new(),
        };
        write_document(out, &products_path, &to_json(&products), key)?;
        write_document(out, INDEX_PATH, &to_json(&index), key)?;
        Ok(BuiltStream {
            root: out.to_owned(),
            products_path,
            signed: key.is_some(),
        })
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn write_document(
    root: &Path,
    path: &str,
    text: &str,
    key: Option<&StreamSigningKey>,
) -> Result<(), ImageError> {
    let p = root.join(path);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ImageError::io(parent, e))?;
    }
    std::fs::write(&p, text).map_err(|e| ImageError::io(&p, e))?;
    if let Some(key) = key {
        let spath = crate::source::signed_twin(path);
        let signed = key.clearsign(text, &spath)?;
        let sp = root.join(&spath);
        std::fs::write(&sp, signed).map_err(|e| ImageError::io(&sp, e))?;
    }
    Ok(())
}

/// The sha256 (hex) and size of a file.
pub fn hash_file(path: &Path) -> Result<(String, u64), ImageError> {
    let mut f = std::fs::File::open(path).map_err(|e| ImageError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| ImageError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}
