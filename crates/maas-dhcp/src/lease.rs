//! Leases and where they are kept.
//!
//! API Boundary: [`LeaseStore::commit`] returns only once the lease is
//! durable; the server sends the ACK after it, so a crash or restart never
//! forgets an address it handed out.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use maas_core::MacAddress;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::DhcpError;

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a lease record says about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Held by `mac` until `expires`.
    Active,
    /// Given back by the client (RELEASE).
    Released,
    /// The client found it in use (DECLINE): nobody gets it until `expires`.
    Declined,
}

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The address.
    pub ip: Ipv4Addr,
    /// The client's hardware address.
    pub mac: MacAddress,
    /// Host name the client sent or the reservation gave.
    pub hostname: Option<String>,
    /// The client's UUID (option 97) as hex, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uuid: Option<String>,
    /// When it ends (Unix seconds).
    pub expires: u64,
    /// State.
    pub state: LeaseState,
}

impl Lease {
    /// Whether the lease still binds its address at `now`.
    pub fn holds(&self, now: u64) -> bool {
        matches!(self.state, LeaseState::Active | LeaseState::Declined) && self.expires > now
    }
}

/// Where leases live.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Every lease known, latest state per address.
    async fn load(&self) -> Result<Vec<Lease>, DhcpError>;
    /// Records leases (new, renewed, released or declined), in order; all of
    /// them are durable when this returns `Ok`. The server passes every lease
    /// decided in one batch of datagrams at once.
    async fn commit(&self, leases: &[Lease]) -> Result<(), DhcpError>;
}

/// Leases in memory only (tests, or a server whose leases may be lost).
#[derive(Debug, Default)]
pub struct MemoryLeaseStore {
    leases: Mutex<BTreeMap<Ipv4Addr, Lease>>,
}

#[async_trait]
impl LeaseStore for MemoryLeaseStore {
    async fn load(&self) -> Result<Vec<Lease>, DhcpError> {
        Ok(self.leases.lock().await.values().cloned().collect())
    }

    async fn commit(&self, leases: &[Lease]) -> Result<(), DhcpError> {
        let mut v = self.leases.lock().await;
        for l in leases {
            v.insert(l.ip, l.clone());
        }
        Ok(())
    }
}

/// How far a [`FileLeaseStore`] commit goes before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `fdatasync`: the lease survives a power cut. One sync per batch.
    #[default]
    Sync,
    /// `write(2)` only: the lease survives the server crashing, not the
    /// machine (what Kea's memfile backend does).
    Write,
}

/// Released or declined records older than this are dropped at compaction.
const KEEP_ENDED_SECS: u64 = 24 * 3600;

struct FileState {
    file: Option<std::fs::File>,
    /// Latest record per address, mirrored for compaction.
    latest: BTreeMap<Ipv4Addr, Lease>,
    /// Records in the file now.
    records: usize,
}

/// Leases in an append-only file, one JSON record per line. A commit
/// appends its batch with one `write` and (by default) one `fdatasync`.
/// Loading replays the file, skips a torn last line (a crash mid-write) and
/// rewrites the file compacted; the file is compacted again whenever it
/// holds more than twice the records it needs (written to a temporary file,
/// synced, renamed over the old one, directory synced).
pub struct FileLeaseStore {
    path: PathBuf,
    durability: Durability,
    state: Arc<std::sync::Mutex<FileState>>,
}

impl std::fmt::Debug for FileLeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileLeaseStore")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl FileLeaseStore {
    /// A store at `path` (created on first commit) that syncs every batch.
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self::with_durability(path, Durability::Sync)
    }

    /// A store at `path` with the given durability.
    pub fn with_durability(path: impl AsRef<Path>, durability: Durability) -> Self {
        FileLeaseStore {
            path: path.as_ref().to_path_buf(),
            durability,
            state: Arc::new(std::sync::Mutex::new(FileState {
                file: None,
                latest: BTreeMap::new(),
                records: 0,
            })),
        }
    }

    fn io_err(&self) -> impl Fn(std::io::Error) -> DhcpError + use<> {
        let path = self.path.clone();
        move |source| DhcpError::LeaseStore {
            path: path.clone(),
            source,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path, &mut FileState) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, DhcpError> {
        let (path, state, err) = (self.path.clone(), self.state.clone(), self.io_err());
        tokio::task::spawn_blocking(move || {
            let mut st = state
                .lock()
                .map_err(|_| std::io::Error::other("lease store lock poisoned"))?;
            f(&path, &mut st)
        })
        .await
        .map_err(|e| err(std::io::Error::other(e)))?
        .map_err(err)
    }
}

fn append_to(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Rewrites the file with `latest` only, atomically.
fn compact(path: &Path, st: &mut FileState) -> std::io::Result<()> {
    use std::io::Write;
    let now = now_secs();
    st.latest
        .retain(|_, l| l.state == LeaseState::Active || l.expires + KEEP_ENDED_SECS > now);
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".compact");
    let tmp = PathBuf::from(tmp_name);
    let mut buf = Vec::with_capacity(st.latest.len() * 128);
    for l in st.latest.values() {
        serde_json::to_writer(&mut buf, l)?;
        buf.push(b'\n');
    }
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&buf)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    st.records = st.latest.len();
    st.file = Some(append_to(path)?);
    Ok(())
}

#[async_trait]
impl LeaseStore for FileLeaseStore {
    async fn load(&self) -> Result<Vec<Lease>, DhcpError> {
        self.blocking(|path, st| {
            let text = match std::fs::read(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            st.latest.clear();
            let mut records = 0;
            let mut bad = 0;
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                records += 1;
                match serde_json::from_slice::<Lease>(line) {
                    Ok(l) => {
                        st.latest.insert(l.ip, l);
                    }
                    Err(_) => bad += 1,
                }
            }
            if bad > 0 {
                tracing::warn!(path = %path.display(), bad, "unreadable lease records skipped");
            }
            st.records = records;
            // Rewriting also drops a torn tail, so the next append starts
            // on a fresh line.
            if records > st.latest.len() || !text.ends_with(b"\n") {
                compact(path, st)?;
            }
            Ok(st.latest.values().cloned().collect())
        })
        .await
    }

    async fn commit(&self, leases: &[Lease]) -> Result<(), DhcpError> {
        if leases.is_empty() {
            return Ok(());
        }
        let batch = leases.to_vec();
        let sync = self.durability == Durability::Sync;
        let append = move |path: &Path, st: &mut FileState| {
            use std::io::Write;
            let mut buf = Vec::with_capacity(batch.len() * 128);
            for l in &batch {
                serde_json::to_writer(&mut buf, l)?;
                buf.push(b'\n');
            }
            if st.file.is_none() {
                st.file = Some(append_to(path)?);
            }
            let f = st
                .file
                .as_mut()
                .ok_or_else(|| std::io::Error::other("lease file is not open"))?;
            f.write_all(&buf)?;
            if sync {
                f.sync_data()?;
            }
            st.records += batch.len();
            for l in batch {
                st.latest.insert(l.ip, l);
            }
            if st.records > 2 * st.latest.len() + 4096 {
                compact(path, st)?;
            }
            Ok(())
        };
        if sync {
            // fdatasync takes milliseconds: off the async threads.
            self.blocking(append).await
        } else {
            // A write into the page cache takes microseconds; handing it to
            // the blocking pool would cost more than it saves.
            let mut st = self
                .state
                .lock()
                .map_err(|_| self.io_err()(std::io::Error::other("lease store lock poisoned")))?;
            append(&self.path, &mut st).map_err(self.io_err())
        }
    }
}
