//! `image-sync`: maas-images from the command line.
//!
//! ```text
//! image-sync keygen --secret stream.key --public stream.pub
//! image-sync build  --out mirror --signing-key stream.key --release noble \
//!                   --kernel vmlinuz --initrd initrd.img --squashfs root.squashfs
//! image-sync sync   --source http://127.0.0.1:8000/ --store store \
//!                   --keyring stream.pub --select os=ubuntu,release=noble
//! image-sync serve  --store store --listen 127.0.0.1:5248
//! image-sync upload --store store --name web --arch amd64 --type root-dd.xz web.img.xz
//! image-sync gc     --store store --keep 2
//! ```
//!
//! `sync` shows a progress bar (bytes and files) on a terminal and can go
//! on to serve the store (`--serve ADDR`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use maas_images::{
    BootFileService, BuildImage, CustomImage, FileType, ImageKey, ImageStore, Keyring, Selection,
    StreamBuilder, StreamSigningKey, StreamSource, SyncConfig, SyncEvent,
};

#[derive(Parser)]
#[command(about = "Sync, build and serve SimpleStreams boot images with maas-images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sync a stream (URL or directory) into a store.
    Sync {
        /// `http(s)://...` mirror root (or its `streams/v1/index.sjson`), or a directory.
        #[arg(long)]
        source: String,
        /// The store directory (created if needed).
        #[arg(long)]
        store: PathBuf,
        /// Trusted public keys (armored or binary); with it only signed
        /// streams are accepted.
        #[arg(long)]
        keyring: Option<PathBuf>,
        /// `os=ubuntu,release=noble,arch=amd64,subarch=ga-24.04,label=stable`
        /// (any subset; repeat for several). None: everything.
        #[arg(long = "select")]
        selections: Vec<String>,
        /// File types to fetch, comma-separated (default: all MAAS uses).
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
        /// Further attempts per file after a transfer failure.
        #[arg(long, default_value_t = 3)]
        retries: u32,
        /// Files downloaded at once.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// After the sync, collect garbage keeping this many generations.
        #[arg(long)]
        gc_keep: Option<usize>,
        /// After the sync, serve the store on this address.
        #[arg(long)]
        serve: Option<SocketAddr>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Serve a store's boot files over HTTP (under /images/).
    Serve {
        /// The store directory.
        #[arg(long)]
        store: PathBuf,
        /// Address to listen on (port 0 picks one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:5248")]
        listen: SocketAddr,
    },
    /// Write a stream tree from local files, signed when a key is given.
    Build {
        /// Output directory (the tree's root).
        #[arg(long)]
        out: PathBuf,
        /// Armored secret key (from `keygen`); without it the tree is unsigned.
        #[arg(long)]
        signing_key: Option<PathBuf>,
        /// Content id of the stream.
        #[arg(long, default_value = "org.maas-rs.local:v1:download")]
        content_id: String,
        #[arg(long, default_value = "ubuntu")]
        os: String,
        #[arg(long)]
        release: String,
        #[arg(long, default_value = "amd64")]
        arch: String,
        #[arg(long, default_value = "generic")]
        subarch: String,
        #[arg(long, default_value = "stable")]
        label: String,
        /// Version name (sorts as a string); default: today, `YYYYMMDD`.
        #[arg(long)]
        version: Option<String>,
        #[arg(long)]
        kernel: Option<PathBuf>,
        #[arg(long)]
        initrd: Option<PathBuf>,
        #[arg(long)]
        squashfs: Option<PathBuf>,
        /// Other files as `ftype=path` (`root-tgz=root.tar.gz`).
        #[arg(long = "file")]
        files: Vec<String>,
    },
    /// Generate a signing key (Ed25519, no passphrase).
    Keygen {
        /// Where to write the armored secret key.
        #[arg(long)]
        secret: PathBuf,
        /// Where to write the armored public key (a keyring for `sync`).
        #[arg(long)]
        public: PathBuf,
        #[arg(long, default_value = "maas-rs image stream <images@localhost>")]
        user_id: String,
    },
    /// Upload a custom image into a store.
    Upload {
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "amd64")]
        arch: String,
        /// `root-tgz`, `root-dd`, `root-dd.xz`, ...
        #[arg(long = "type")]
        ftype: String,
        /// The image file.
        file: PathBuf,
    },
    /// Remove old generations and the files only they name.
    Gc {
        #[arg(long)]
        store: PathBuf,
        #[arg(long, default_value_t = 2)]
        keep: usize,
    },
}

#[allow(clippy::print_stdout)]
fn say(line: &str) {
    println!("{line}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Sync {
            source,
            store,
            keyring,
            selections,
            types,
            retries,
            concurrency,
            gc_keep,
            serve,
            quiet,
        } => {
            let store = ImageStore::open(&store)?;
            let mut config = SyncConfig {
                retries,
                concurrency,
                ..SyncConfig::default()
            };
            if let Some(k) = keyring {
                config.keyring = Some(Keyring::from_file(&k)?);
            }
            for s in &selections {
                config.selections.push(s.parse::<Selection>()?);
            }
            if !types.is_empty() {
                config.file_types = types
                    .iter()
                    .map(|t| t.parse::<FileType>())
                    .collect::<Result<_, _>>()?;
            }
            let source = StreamSource::parse(&source)?;
            let report = run_sync(&source, &store, &config, quiet).await?;
            say(&format!(
                "generation {}: {} images, {} files downloaded ({} bytes, {} resumed), {} already present",
                report.generation,
                report.images,
                report.files_downloaded,
                report.bytes_downloaded,
                report.resumed,
                report.files_present
            ));
            if let Some(keep) = gc_keep {
                let gc = store.collect_garbage(keep).await?;
                say(&format!(
                    "gc: {} files ({} bytes) and {} generations removed",
                    gc.blobs_removed, gc.bytes_freed, gc.manifests_removed
                ));
            }
            if let Some(addr) = serve {
                serve_store(store, addr).await?;
            }
        }
        Command::Serve { store, listen } => {
            serve_store(ImageStore::open(&store)?, listen).await?;
        }
        Command::Build {
            out,
            signing_key,
            content_id,
            os,
            release,
            arch,
            subarch,
            label,
            version,
            kernel,
            initrd,
            squashfs,
            files,
        } => {
            let key = match signing_key {
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    Some(StreamSigningKey::from_armored(
                        &text,
                        &p.display().to_string(),
                    )?)
                }
                None => None,
            };
            let mut list = Vec::new();
            for (t, p) in [
                (FileType::BootKernel, kernel),
                (FileType::BootInitrd, initrd),
                (FileType::Squashfs, squashfs),
            ] {
                if let Some(p) = p {
                    list.push((t, p));
                }
            }
            for f in &files {
                let Some((t, p)) = f.split_once('=') else {
                    bail!("--file wants ftype=path, got {f:?}");
                };
                list.push((t.parse::<FileType>()?, PathBuf::from(p)));
            }
            if list.is_empty() {
                bail!("no files given (--kernel, --initrd, --squashfs, --file)");
            }
            let version = version.unwrap_or_else(today);
            let built = StreamBuilder::new(&content_id)
                .add(BuildImage {
                    key: ImageKey {
                        os,
                        release,
                        arch,
                        subarch,
                        label,
                    },
                    version,
                    files: list,
                })
                .write(&out, key.as_ref())?;
            say(&format!(
                "wrote {} ({})",
                built.root.display(),
                if built.signed { "signed" } else { "unsigned" }
            ));
        }
        Command::Keygen {
            secret,
            public,
            user_id,
        } => {
            let key = StreamSigningKey::generate(&user_id)?;
            std::fs::write(&secret, key.to_armored()?)
                .with_context(|| format!("writing {}", secret.display()))?;
            std::fs::write(&public, key.public_armored()?)
                .with_context(|| format!("writing {}", public.display()))?;
            say(&format!("key {}", key.fingerprint()));
        }
        Command::Upload {
            store,
            name,
            arch,
            ftype,
            file,
        } => {
            let store = ImageStore::open(&store)?;
            let image = CustomImage::new(&name, &arch, ftype.parse()?);
            let reader = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("opening {}", file.display()))?;
            let stored = store.upload(&image, reader).await?;
            say(&format!(
                "images/{}/{} sha256 {} ({} bytes)",
                image.key().boot_dir(),
                stored.ftype,
                stored.sha256,
                stored.size
            ));
        }
        Command::Gc { store, keep } => {
            let gc = ImageStore::open(&store)?.collect_garbage(keep).await?;
            say(&format!(
                "{} files ({} bytes) and {} generations removed; {} partial downloads kept",
                gc.blobs_removed, gc.bytes_freed, gc.manifests_removed, gc.partials_kept
            ));
        }
    }
    Ok(())
}

fn today() -> String {
    // Days since the epoch to a civil date (proleptic Gregorian).
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let z = i64::try_from(secs / 86_400).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

async fn run_sync(
    source: &StreamSource,
    store: &ImageStore,
    config: &SyncConfig,
    quiet: bool,
) -> anyhow::Result<maas_images::SyncReport> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )?
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let counted = std::sync::Mutex::new(std::collections::HashMap::<String, u64>::new());
    fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    let files = std::sync::atomic::AtomicUsize::new(0);
    let total_files = std::sync::atomic::AtomicUsize::new(0);
    let progress = |e: &SyncEvent| match e {
        SyncEvent::Planned {
            files: n,
            bytes,
            present,
            ..
        } => {
            bar.set_length(*bytes);
            total_files.store(*n, std::sync::atomic::Ordering::Relaxed);
            bar.set_message(format!("0/{n} files ({present} already here)"));
        }
        SyncEvent::Bytes { path, n } => {
            *lock(&counted).entry(path.clone()).or_default() += n;
            bar.inc(*n);
        }
        SyncEvent::FileStarted {
            path, resume_from, ..
        } => {
            // Bytes a resume skips count as done, once.
            let mut counted = lock(&counted);
            let seen = counted.entry(path.clone()).or_default();
            if *resume_from > *seen {
                bar.inc(*resume_from - *seen);
                *seen = *resume_from;
            }
        }
        SyncEvent::FileDone { .. } => {
            let done = files.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let total = total_files.load(std::sync::atomic::Ordering::Relaxed);
            bar.set_message(format!("{done}/{total} files"));
        }
        SyncEvent::Retrying {
            path,
            attempt,
            error,
        } => {
            bar.println(format!("retry {attempt} of {path}: {error}"));
        }
        _ => {}
    };
    let result = maas_images::sync(source, store, config, &progress).await;
    bar.finish_and_clear();
    Ok(result?)
}

async fn serve_store(store: ImageStore, addr: SocketAddr) -> anyhow::Result<()> {
    let app = axum::Router::new().route_service("/images/{*path}", BootFileService::new(store));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    say(&format!(
        "serving on http://{}/images/",
        listener.local_addr()?
    ));
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
