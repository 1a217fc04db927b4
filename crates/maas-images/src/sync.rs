//! Syncing a stream into the store: read and check the metadata, download
//! what the store lacks (resuming partial files with `Range`), check every
//! byte, then publish one new generation.

use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::error::ImageError;
use crate::signing::{Keyring, clearsigned_text};
use crate::source::{StreamSource, signed_twin, unsigned_twin};
use crate::store::{ImageOrigin, ImageStore, StoredFile, StoredImage};
use crate::streams::{FileType, INDEX_PATH, Index, Products, SelectedImage, Selection, StreamFile};

/// What to sync and how.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Products to sync; empty means every product in the stream.
    pub selections: Vec<Selection>,
    /// File types to fetch (default: all of [`FileType::ALL`]).
    pub file_types: Vec<FileType>,
    /// When set, only signed documents (`.sjson`) are read and each must
    /// verify with this keyring; when `None`, `.json` is read (or the text of
    /// an `.sjson`, unchecked).
    pub keyring: Option<Keyring>,
    /// Further attempts per file after a transfer failure (each resumes
    /// where the last stopped).
    pub retries: u32,
    /// Files downloaded at once.
    pub concurrency: usize,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            selections: Vec::new(),
            file_types: FileType::ALL.to_vec(),
            keyring: None,
            retries: 3,
            concurrency: 2,
        }
    }
}

/// Progress of a sync, given to the callback as it happens (and logged
/// with `tracing`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncEvent {
    /// The metadata was read: what the new image set needs.
    Planned {
        /// Images in the new set.
        images: usize,
        /// Distinct files to download.
        files: usize,
        /// Their bytes.
        bytes: u64,
        /// Files the store already has (not downloaded again).
        present: usize,
    },
    /// A file transfer starts (again, on a retry).
    FileStarted {
        /// Its stream path.
        path: String,
        /// Its size.
        size: u64,
        /// Bytes already on disk from an earlier attempt.
        resume_from: u64,
    },
    /// Bytes arrived (the increment, not a total).
    Bytes {
        /// The file's stream path.
        path: String,
        /// How many.
        n: u64,
    },
    /// A transfer failed and will be tried again.
    Retrying {
        /// The file's stream path.
        path: String,
        /// Attempt number about to start (1 = first retry).
        attempt: u32,
        /// What went wrong.
        error: String,
    },
    /// A file was checked and is in the store.
    FileDone {
        /// Its stream path.
        path: String,
    },
    /// The new image set is in force.
    Published {
        /// Its generation.
        generation: u64,
    },
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The generation published.
    pub generation: u64,
    /// Images in it (synced and uploaded).
    pub images: usize,
    /// Files downloaded.
    pub files_downloaded: usize,
    /// Files that were already in the store.
    pub files_present: usize,
    /// Bytes received (not counting bytes a resume skipped).
    pub bytes_downloaded: u64,
    /// Transfers that resumed a partial file.
    pub resumed: usize,
}

/// Reads a stream's metadata (checking signatures as `config` says) and
/// returns the newest version of each selected product.
pub async fn read_stream(
    source: &StreamSource,
    config: &SyncConfig,
) -> Result<Vec<SelectedImage>, ImageError> {
    let keyring = config.keyring.as_ref();
    let index = Index::parse(
        &read_document(source, INDEX_PATH, keyring).await?,
        INDEX_PATH,
    )?;
    let mut out = Vec::new();
    for path in index.download_paths()? {
        let text = read_document(source, &path, keyring).await?;
        let products = Products::parse(&text, &path)?;
        out.extend(products.select(&config.selections, &config.file_types, &path)?);
    }
    if out.is_empty() {
        return Err(ImageError::NothingSelected);
    }
    Ok(out)
}

async fn read_document(
    source: &StreamSource,
    path: &str,
    keyring: Option<&Keyring>,
) -> Result<String, ImageError> {
    let json = unsigned_twin(path);
    let sjson = signed_twin(&json);
    match keyring {
        Some(ring) => match source.read_text(&sjson).await? {
            Some(text) => ring.verify(&text, &sjson),
            None => Err(ImageError::Unsigned { path: sjson }),
        },
        None => {
            if let Some(text) = source.read_text(&json).await? {
                return Ok(text);
            }
            match source.read_text(&sjson).await? {
                Some(text) => {
                    tracing::warn!(path = %sjson, "no keyring configured: signature not checked");
                    clearsigned_text(&text, &sjson)
                }
                None => Err(ImageError::NotFound {
                    location: source.describe(&json),
                }),
            }
        }
    }
}

/// Syncs the selected products of `source` into `store`: downloads the
/// files the store lacks, checks each against the stream's size and sha256,
/// and publishes one generation holding the newest version of every
/// selected product plus the uploaded images already there. Synced images
/// no longer selected leave the set (their files go at the next garbage
/// collection).
///
/// On any error nothing is published: the previous generation stays in
/// force, and partial downloads stay on disk for the next sync to resume.
/// A selection that matches nothing is an error rather than an empty set.
pub async fn sync(
    source: &StreamSource,
    store: &ImageStore,
    config: &SyncConfig,
    progress: &(dyn Fn(&SyncEvent) + Send + Sync),
) -> Result<SyncReport, ImageError> {
    let span = tracing::info_span!("image_sync", source = %source.describe(""));
    async move {
        let selected = read_stream(source, config).await?;
        let guard = store.lock_writer().await?;

        let mut wanted: Vec<&StreamFile> = Vec::new();
        for f in selected.iter().flat_map(|i| &i.files) {
            if !wanted.iter().any(|w| w.sha256 == f.sha256) {
                wanted.push(f);
            }
        }
        let (present, missing): (Vec<&StreamFile>, Vec<&StreamFile>) =
            wanted.into_iter().partition(|f| store.has_blob(&f.sha256));
        let planned = SyncEvent::Planned {
            images: selected.len(),
            files: missing.len(),
            bytes: missing.iter().map(|f| f.size).sum(),
            present: present.len(),
        };
        tracing::info!(
            images = selected.len(),
            files = missing.len(),
            present = present.len(),
            "sync planned"
        );
        progress(&planned);

        let outcomes: Vec<Outcome> = futures_util::stream::iter(
            missing
                .iter()
                .map(|f| download(source, store, f, config.retries, progress)),
        )
        .buffer_unordered(config.concurrency.max(1))
        .try_collect()
        .await?;

        let mut images: Vec<StoredImage> = store
            .current()?
            .images
            .iter()
            .filter(|i| i.origin == ImageOrigin::Uploaded)
            .cloned()
            .collect();
        for s in &selected {
            images.retain(|i| i.key != s.key);
            images.push(StoredImage {
                key: s.key.clone(),
                origin: ImageOrigin::Synced {
                    product: s.product.clone(),
                    version: s.version.clone(),
                },
                files: s
                    .files
                    .iter()
                    .map(|f| StoredFile {
                        ftype: f.ftype,
                        sha256: f.sha256.clone(),
                        size: f.size,
                    })
                    .collect(),
            });
        }
        images.sort_by(|a, b| a.key.cmp(&b.key));
        let manifest = store.publish(&guard, images)?;
        progress(&SyncEvent::Published {
            generation: manifest.generation,
        });
        Ok(SyncReport {
            generation: manifest.generation,
            images: manifest.images.len(),
            files_downloaded: outcomes.len(),
            files_present: present.len(),
            bytes_downloaded: outcomes.iter().map(|o| o.bytes).sum(),
            resumed: outcomes.iter().filter(|o| o.resumed).count(),
        })
    }
    .instrument(span)
    .await
}

struct Outcome {
    bytes: u64,
    resumed: bool,
}

async fn download(
    source: &StreamSource,
    store: &ImageStore,
    file: &StreamFile,
    retries: u32,
    progress: &(dyn Fn(&SyncEvent) + Send + Sync),
) -> Result<Outcome, ImageError> {
    let mut total = Outcome {
        bytes: 0,
        resumed: false,
    };
    let mut attempt = 0;
    loop {
        match fetch_once(source, store, file, progress, &mut total).await {
            Ok(()) => {
                tracing::info!(path = %file.path, sha256 = %file.sha256, size = file.size, "file verified");
                progress(&SyncEvent::FileDone {
                    path: file.path.clone(),
                });
                return Ok(total);
            }
            Err(e) if e.is_retryable() && attempt < retries => {
                attempt += 1;
                tracing::warn!(path = %file.path, attempt, error = %e, "transfer failed; resuming");
                progress(&SyncEvent::Retrying {
                    path: file.path.clone(),
                    attempt,
                    error: e.to_string(),
                });
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10)))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One attempt: resume the partial file if the source honours the offset,
/// stream into it (writes and hashing on a blocking thread, so the network
/// side never waits on the disk), then check and install.
async fn fetch_once(
    source: &StreamSource,
    store: &ImageStore,
    file: &StreamFile,
    progress: &(dyn Fn(&SyncEvent) + Send + Sync),
    total: &mut Outcome,
) -> Result<(), ImageError> {
    let partial = store.partial_path(&file.sha256);
    let mut have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    if have > file.size {
        let _ = std::fs::remove_file(&partial);
        have = 0;
    }
    let mut opened = source.open(&file.path, have).await?;
    let start = if opened.from_offset { have } else { 0 };
    if start > 0 {
        total.resumed = true;
    }
    tracing::debug!(path = %file.path, size = file.size, resume_from = start, "transfer started");
    progress(&SyncEvent::FileStarted {
        path: file.path.clone(),
        size: file.size,
        resume_from: start,
    });
    let (tx, writer) = spawn_writer(partial.clone(), start);
    let mut received = start;
    let mut failure = None;
    while let Some(chunk) = opened.chunks.next().await {
        match chunk {
            Ok(bytes) => {
                let n = bytes.len() as u64;
                received += n;
                if received > file.size {
                    failure = Some(ImageError::SizeMismatch {
                        path: file.path.clone(),
                        expected: file.size,
                        actual: received,
                    });
                    break;
                }
                if tx.send(bytes).await.is_err() {
                    // The writer stopped: its error is reported below.
                    break;
                }
                total.bytes += n;
                progress(&SyncEvent::Bytes {
                    path: file.path.clone(),
                    n,
                });
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| ImageError::io(&partial, std::io::Error::other(e)))?;
    if let Some(e) = failure {
        if matches!(e, ImageError::SizeMismatch { .. }) {
            let _ = std::fs::remove_file(&partial);
        }
        return Err(e);
    }
    let hasher = written?;
    if received < file.size {
        return Err(match source {
            StreamSource::Http { .. } => ImageError::Truncated {
                path: file.path.clone(),
                expected: file.size,
                actual: received,
            },
            StreamSource::Directory(_) => {
                let _ = std::fs::remove_file(&partial);
                ImageError::SizeMismatch {
                    path: file.path.clone(),
                    expected: file.size,
                    actual: received,
                }
            }
        });
    }
    let digest = hex::encode(hasher.finalize());
    if digest != file.sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(ImageError::DigestMismatch {
            path: file.path.clone(),
            expected: file.sha256.clone(),
            actual: digest,
        });
    }
    store.install_blob(&partial, &file.sha256)
}

/// A blocking thread that hashes the first `start` bytes already in `path`
/// (a resume), then appends and hashes every chunk it is sent, and syncs
/// the file when the sender is dropped.
fn spawn_writer(
    path: PathBuf,
    start: u64,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<Result<Sha256, ImageError>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(32);
    let handle = tokio::task::spawn_blocking(move || {
        let io = |e| ImageError::io(&path, e);
        let mut hasher = Sha256::new();
        let file = if start > 0 {
            let mut f = std::fs::File::open(&path).map_err(io)?;
            let mut left = start;
            let mut buf = vec![0u8; 1 << 20];
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                f.read_exact(&mut buf[..want]).map_err(io)?;
                hasher.update(&buf[..want]);
                left -= want as u64;
            }
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io)?
        } else {
            std::fs::File::create(&path).map_err(io)?
        };
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut result = Ok(());
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
            if let Err(e) = out.write_all(&chunk) {
                result = Err(io(e));
                break;
            }
        }
        // Keep what arrived even after a failure: the next attempt resumes.
        let flushed = out.flush().map_err(io);
        result?;
        flushed?;
        out.get_ref().sync_data().map_err(io)?;
        Ok(hasher)
    });
    (tx, handle)
}
