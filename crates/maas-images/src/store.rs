//! The image store: files kept by sha256, and generations of a manifest
//! that says which files make up which image.
//!
//! ```text
//! <root>/blobs/<sha256>            complete, verified files (read-only)
//! <root>/partial/<sha256>          downloads in progress (resumable)
//! <root>/staging/                  uploads in progress
//! <root>/manifests/<generation>.json   immutable manifests
//! <root>/current -> manifests/<generation>.json
//! <root>/lock                      the writer lock (one writer at a time)
//! ```
//!
//! Architecture Invariant: a file is renamed into `blobs/` only after its
//! size and sha256 were checked, and a manifest is published only after
//! every blob it names is in place. Publishing is one `rename(2)` of a new
//! symbolic link over `current`, so a reader that reads `current` once gets
//! one whole generation, old or new, never a mix; an interrupted sync never
//! gets that far and leaves the previous generation in force. Garbage
//! collection keeps the newest generations (two by default), so a reader
//! holding the previous manifest can still open its files.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::error::ImageError;
use crate::streams::{FileType, ImageKey};

/// One file of an image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// What it is (also its name in boot paths).
    pub ftype: FileType,
    /// Lower-case hex; the blob's name.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// Where an image came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ImageOrigin {
    /// A product version of a synced stream.
    Synced {
        /// The product id.
        product: String,
        /// The version name.
        version: String,
    },
    /// Uploaded by a user ([`ImageStore::upload`]).
    Uploaded,
}

/// An image: its key and files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    /// Which image.
    pub key: ImageKey,
    /// Where it came from.
    pub origin: ImageOrigin,
    /// Its files, one per type.
    pub files: Vec<StoredFile>,
}

impl StoredImage {
    /// The file of a type.
    pub fn file(&self, ftype: FileType) -> Option<&StoredFile> {
        self.files.iter().find(|f| f.ftype == ftype)
    }
}

/// One generation of the store's contents. Immutable once published.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Counts up from 1; 0 is the empty store.
    pub generation: u64,
    /// The images.
    pub images: Vec<StoredImage>,
}

impl Manifest {
    /// The image with this key.
    pub fn image(&self, key: &ImageKey) -> Option<&StoredImage> {
        self.images.iter().find(|i| &i.key == key)
    }

    /// The file a boot path names: `<os>/<arch>/<subarch>/<release>/<label>/<ftype>`
    /// (the part of `images/...` after `images/`).
    pub fn boot_file(&self, path: &str) -> Option<&StoredFile> {
        let (dir, name) = path.rsplit_once('/')?;
        let ftype: FileType = name.parse().ok()?;
        self.images
            .iter()
            .find(|i| i.key.boot_dir() == dir)
            .and_then(|i| i.file(ftype))
    }

    /// The file with this digest, if any image holds it.
    pub fn by_digest(&self, sha256: &str) -> Option<&StoredFile> {
        self.images
            .iter()
            .flat_map(|i| i.files.iter())
            .find(|f| f.sha256 == sha256)
    }

    /// Every digest the manifest names.
    pub fn digests(&self) -> BTreeSet<&str> {
        self.images
            .iter()
            .flat_map(|i| i.files.iter().map(|f| f.sha256.as_str()))
            .collect()
    }
}

/// A user's image to upload: it appears as
/// `custom/<arch>/<subarch>/<name>/uploaded/<ftype>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomImage {
    /// The image's name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// `amd64`, `arm64`, ...
    pub arch: String,
    /// `generic` unless told.
    pub subarch: String,
    /// `root-tgz`, `root-dd`, `root-dd.xz`, ...
    pub ftype: FileType,
}

impl CustomImage {
    /// A custom image with subarch `generic`.
    pub fn new(name: &str, arch: &str, ftype: FileType) -> Self {
        Self {
            name: name.to_owned(),
            arch: arch.to_owned(),
            subarch: "generic".to_owned(),
            ftype,
        }
    }

    /// The store key it is kept under.
    pub fn key(&self) -> ImageKey {
        ImageKey {
            os: "custom".into(),
            release: self.name.clone(),
            arch: self.arch.clone(),
            subarch: self.subarch.clone(),
            label: "uploaded".into(),
        }
    }
}

fn check_name(field: &'static str, value: &str) -> Result<(), ImageError> {
    let bad = |reason| {
        Err(ImageError::InvalidName {
            field,
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() || value.len() > 64 {
        return bad("must be 1 to 64 characters");
    }
    if value.starts_with('.') {
        return bad("must not start with a dot");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// What [`ImageStore::collect_garbage`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Old manifest generations removed.
    pub manifests_removed: usize,
    /// Files no kept generation names, removed.
    pub blobs_removed: usize,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Partial downloads kept for a later resume.
    pub partials_kept: usize,
}

/// A content-addressed image store in a directory. Cheap to clone; clones
/// share the manifest cache and the in-process writer lock.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cached: Mutex<Option<(PathBuf, Arc<Manifest>)>>,
    writer: tokio::sync::Mutex<()>,
    staging_seq: AtomicU64,
}

/// Held by the one writer (sync, upload, garbage collection): an in-process
/// mutex and an advisory lock on `<root>/lock` for other processes.
pub(crate) struct WriteGuard<'a> {
    _mem: tokio::sync::MutexGuard<'a, ()>,
    _file: std::fs::File,
}

impl ImageStore {
    /// Opens (creating if needed) a store in `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let root = root.into();
        for d in ["blobs", "partial", "staging", "manifests"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| ImageError::io(&p, e))?;
        }
        Ok(Self {
            root,
            inner: Arc::new(Inner {
                cached: Mutex::new(None),
                writer: tokio::sync::Mutex::new(()),
                staging_seq: AtomicU64::new(0),
            }),
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a verified file (it exists if a published manifest
    /// names it).
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(sha256)
    }

    pub(crate) fn partial_path(&self, sha256: &str) -> PathBuf {
        self.root.join("partial").join(sha256)
    }

    /// Whether a verified file with this digest is in the store.
    pub fn has_blob(&self, sha256: &str) -> bool {
        self.blob_path(sha256).is_file()
    }

    /// The generation in force: read once, it is a consistent snapshot
    /// (every file it names stays until two newer generations exist and the
    /// garbage is collected).
    pub fn current(&self) -> Result<Arc<Manifest>, ImageError> {
        let link = self.root.join("current");
        // The target can vanish between readlink and open if a collector
        // removes it; the link has moved on by then, so read it again.
        for _ in 0..8 {
            let target = match std::fs::read_link(&link) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Arc::new(Manifest::default()));
                }
                Err(e) => return Err(ImageError::io(&link, e)),
            };
            if let Some((t, m)) = self.lock_cache().as_ref()
                && *t == target
            {
                return Ok(m.clone());
            }
            let path = self.root.join(&target);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let m: Manifest = serde_json::from_slice(&bytes).map_err(|source| {
                        ImageError::BadMetadata {
                            path: path.display().to_string(),
                            source,
                        }
                    })?;
                    let m = Arc::new(m);
                    *self.lock_cache() = Some((target, m.clone()));
                    return Ok(m);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ImageError::io(path, e)),
            }
        }
        Err(ImageError::io(
            link,
            std::io::Error::other("the current manifest kept moving"),
        ))
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<(PathBuf, Arc<Manifest>)>> {
        self.inner
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for the writer lock (in this process, then across processes).
    pub(crate) async fn lock_writer(&self) -> Result<WriteGuard<'_>, ImageError> {
        let mem = self.inner.writer.lock().await;
        let path = self.root.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ImageError::io(&path, e))?;
        let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| ImageError::io(&path, std::io::Error::other(e)))?
            .map_err(|e| ImageError::io(&path, e))?;
        Ok(WriteGuard {
            _mem: mem,
            _file: file,
        })
    }

    /// Moves a checked file into `blobs/` under its digest (read-only).
    pub(crate) fn install_blob(&self, from: &Path, sha256: &str) -> Result<(), ImageError> {
        let to = self.blob_path(sha256);
        let _ = std::fs::set_permissions(from, std::fs::Permissions::from_mode(0o444));
        std::fs::rename(from, &to).map_err(|e| ImageError::io(&to, e))?;
        sync_dir(&self.root.join("blobs"))
    }

    /// Publishes a new generation holding `images` (writer lock held).
    pub(crate) fn publish(
        &self,
        _guard: &WriteGuard<'_>,
        images: Vec<StoredImage>,
    ) -> Result<Arc<Manifest>, ImageError> {
        for f in images.iter().flat_map(|i| &i.files) {
            if !self.has_blob(&f.sha256) {
                return Err(ImageError::io(
                    self.blob_path(&f.sha256),
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "a manifest may only name files already in the store",
                    ),
                ));
            }
        }
        let generation = self.current()?.generation + 1;
        let manifest = Manifest { generation, images };
        let name = format!("manifests/{generation:020}.json");
        let final_path = self.root.join(&name);
        let tmp = self.root.join(format!("{name}.tmp"));
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| {
            ImageError::io(
                &tmp,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        write_synced(&tmp, &json)?;
        std::fs::rename(&tmp, &final_path).map_err(|e| ImageError::io(&final_path, e))?;
        sync_dir(&self.root.join("manifests"))?;

        let link_tmp = self.root.join("current.tmp");
        let _ = std::fs::remove_file(&link_tmp);
        std::os::unix::fs::symlink(&name, &link_tmp).map_err(|e| ImageError::io(&link_tmp, e))?;
        let link = self.root.join("current");
        std::fs::rename(&link_tmp, &link).map_err(|e| ImageError::io(&link, e))?;
        sync_dir(&self.root)?;
        let manifest = Arc::new(manifest);
        *self.lock_cache() = Some((PathBuf::from(name), manifest.clone()));
        tracing::info!(
            generation,
            images = manifest.images.len(),
            "image set published"
        );
        Ok(manifest)
    }

    /// Stores a user's image from `reader` (its digest and size are
    /// computed here) and publishes a generation with it; a second upload
    /// under the same name, arch and type replaces the first, and since
    /// boot files are known by digest, racks see the new bytes.
    pub async fn upload<R: AsyncRead + Unpin>(
        &self,
        image: &CustomImage,
        mut reader: R,
    ) -> Result<StoredFile, ImageError> {
        check_name("image name", &image.name)?;
        check_name("architecture", &image.arch)?;
        check_name("subarchitecture", &image.subarch)?;
        let guard = self.lock_writer().await?;
        let seq = self.inner.staging_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("staging")
            .join(format!("upload-{}-{seq}", std::process::id()));
        let result = async {
            let mut out = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| ImageError::io(&tmp, e))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader
                    .read(&mut buf)
                    .await
                    .map_err(|e| ImageError::io(&tmp, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .await
                    .map_err(|e| ImageError::io(&tmp, e))?;
                size += n as u64;
            }
            out.sync_all().await.map_err(|e| ImageError::io(&tmp, e))?;
            Ok::<_, ImageError>((hex::encode(hasher.finalize()), size))
        }
        .await;
        let (sha256, size) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if self.has_blob(&sha256) {
            let _ = std::fs::remove_file(&tmp);
        } else {
            self.install_blob(&tmp, &sha256)?;
        }
        let file = StoredFile {
            ftype: image.ftype,
            sha256,
            size,
        };
        let key = image.key();
        let mut images = self.current()?.images.clone();
        match images.iter_mut().find(|i| i.key == key) {
            Some(existing) => {
                existing.files.retain(|f| f.ftype != image.ftype);
                existing.files.push(file.clone());
                existing.files.sort_by_key(|f| f.ftype);
                existing.origin = ImageOrigin::Uploaded;
            }
            None => images.push(StoredImage {
                key,
                origin: ImageOrigin::Uploaded,
                files: vec![file.clone()],
            }),
        }
        self.publish(&guard, images)?;
        Ok(file)
    }

    /// Publishes a generation without the image `key` (its files go at the
    /// next garbage collection that no longer keeps this generation).
    /// Returns whether it was there.
    pub async fn remove_image(&self, key: &ImageKey) -> Result<bool, ImageError> {
        let guard = self.lock_writer().await?;
        let mut images = self.current()?.images.clone();
        let before = images.len();
        images.retain(|i| &i.key != key);
        if images.len() == before {
            return Ok(false);
        }
        self.publish(&guard, images)?;
        Ok(true)
    }

    /// Removes manifests older than the newest `keep_generations` (at
    /// least 1), then every file none of the kept ones names, and leftover
    /// uploads. Partial downloads of files not yet in the store are kept,
    /// so the next sync resumes them.
    pub async fn collect_garbage(&self, keep_generations: usize) -> Result<GcReport, ImageError> {
        let _guard = self.lock_writer().await?;
        let mut report = GcReport::default();
        let current = self.current()?;
        let mdir = self.root.join("manifests");
        let mut gens: Vec<(u64, PathBuf)> = Vec::new();
        for entry in read_dir(&mdir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            match name
                .strip_suffix(".json")
                .and_then(|g| g.parse::<u64>().ok())
            {
                Some(g) => gens.push((g, entry.path())),
                // An unfinished manifest from a crashed writer.
                None => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        gens.sort_by_key(|g| std::cmp::Reverse(g.0));
        let keep = keep_generations.max(1);
        let mut referenced: BTreeSet<String> =
            current.digests().into_iter().map(str::to_owned).collect();
        for (i, (g, path)) in gens.iter().enumerate() {
            if i < keep || *g == current.generation {
                let bytes = std::fs::read(path).map_err(|e| ImageError::io(path, e))?;
                let m: Manifest =
                    serde_json::from_slice(&bytes).map_err(|source| ImageError::BadMetadata {
                        path: path.display().to_string(),
                        source,
                    })?;
                referenced.extend(m.digests().into_iter().map(str::to_owned));
            } else {
                std::fs::remove_file(path).map_err(|e| ImageError::io(path, e))?;
                report.manifests_removed += 1;
            }
        }
        for entry in read_dir(&self.root.join("blobs"))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !referenced.contains(&name) {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(entry.path()).map_err(|e| ImageError::io(entry.path(), e))?;
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }
        for entry in read_dir(&self.root.join("staging"))? {
            let _ = std::fs::remove_file(entry.path());
        }
        for entry in read_dir(&self.root.join("partial"))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if self.has_blob(&name) {
                let _ = std::fs::remove_file(entry.path());
            } else {
                report.partials_kept += 1;
            }
        }
        tracing::info!(
            manifests = report.manifests_removed,
            blobs = report.blobs_removed,
            bytes = report.bytes_freed,
            "image store garbage collected"
        );
        Ok(report)
    }
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, ImageError> {
    std::fs::read_dir(dir)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ImageError::io(dir, e))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut f = std::fs::File::create(path).map_err(|e| ImageError::io(path, e))?;
    f.write_all(bytes).map_err(|e| ImageError::io(path, e))?;
    f.sync_all().map_err(|e| ImageError::io(path, e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ImageError::io(dir, e))
}
