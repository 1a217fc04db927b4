//! # maas-images
//!
//! Boot images for network-booting machines: where they come from, where
//! they are kept, and how racks serve them.
//!
//! - [`StreamSource`] + [`sync`]: read a SimpleStreams stream (an HTTP(S)
//!   mirror or a local directory), `index.json` or the OpenPGP
//!   cleartext-signed `index.sjson` checked against a [`Keyring`], select
//!   products by os, release, arch, subarch and label ([`Selection`]), take
//!   the newest version of each, and fetch its boot-kernel, boot-initrd,
//!   squashfs and root images ([`FileType`]).
//! - [`ImageStore`]: files kept by sha256, each checked against the stream's
//!   size and digest before it becomes visible; downloads resume with
//!   `Range`; a new image set is published in one atomic step, so readers
//!   see the old set or the new one and an interrupted sync leaves the old
//!   one in force; unreferenced files are collected; users' custom images
//!   ([`CustomImage`]) live beside synced ones.
//! - [`BootFileService`]: a `tower` service that serves the store over HTTP
//!   (GET, HEAD, byte ranges, ETags, `If-None-Match`), mounted by the rack
//!   on port 5248. It also publishes the store as a stream, so racks sync
//!   from the region with the same client, file by digest.
//! - [`StreamBuilder`]: writes a signed stream tree from local files.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use maas_images::{
//!     BuildImage, FileType, ImageKey, ImageStore, StreamBuilder, StreamSigningKey,
//!     StreamSource, SyncConfig, sync,
//! };
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("vmlinuz"), b"kernel")?;
//! std::fs::write(dir.path().join("initrd"), b"initrd")?;
//!
//! // A signed stream with one image.
//! let key = StreamSigningKey::generate("Example <images@example.com>")?;
//! let key_for_image = ImageKey {
//!     os: "ubuntu".into(), release: "noble".into(), arch: "amd64".into(),
//!     subarch: "ga-24.04".into(), label: "stable".into(),
//! };
//! StreamBuilder::new("org.example:local:download")
//!     .add(BuildImage {
//!         key: key_for_image,
//!         version: "20240423".into(),
//!         files: vec![
//!             (FileType::BootKernel, dir.path().join("vmlinuz")),
//!             (FileType::BootInitrd, dir.path().join("initrd")),
//!         ],
//!     })
//!     .write(&dir.path().join("mirror"), Some(&key))?;
//!
//! // Sync it, checking the signature.
//! let store = ImageStore::open(dir.path().join("store"))?;
//! let config = SyncConfig { keyring: Some(key.keyring()), ..SyncConfig::default() };
//! let source = StreamSource::directory(dir.path().join("mirror"));
//! let report = sync(&source, &store, &config, &|_event| {}).await?;
//! assert_eq!(report.files_downloaded, 2);
//!
//! let set = store.current()?;
//! let kernel = set.boot_file("ubuntu/amd64/ga-24.04/noble/stable/boot-kernel").unwrap();
//! assert_eq!(std::fs::read(store.blob_path(&kernel.sha256))?, b"kernel");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod builder;
mod error;
pub mod export;
mod serve;
mod signing;
mod source;
mod store;
pub mod streams;
mod sync;

pub use builder::{BuildImage, BuiltStream, StreamBuilder, hash_file};
pub use error::ImageError;
pub use serve::{BootFileService, DEFAULT_CHUNK, FileBody};
pub use signing::{Keyring, StreamSigningKey, clearsigned_text};
pub use source::StreamSource;
pub use store::{
    CustomImage, GcReport, ImageOrigin, ImageStore, Manifest, StoredFile, StoredImage,
};
pub use streams::{FileType, ImageKey, SelectedImage, Selection, StreamFile};
pub use sync::{SyncConfig, SyncEvent, SyncReport, read_stream, sync};
