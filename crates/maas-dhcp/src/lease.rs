//! Leases and where they are kept.
//!
//! API Boundary: [`LeaseStore::commit`] returns only once the lease is
//! durable; the server sends the ACK after it, so a crash or restart never
//! forgets an address it handed out.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use maas_core::MacAddress;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
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
    /// Records a lease (new, renewed, released or declined); durable on return.
    async fn commit(&self, lease: &Lease) -> Result<(), DhcpError>;
}

/// Leases in memory only (tests, or a server whose leases may be lost).
#[derive(Debug, Default)]
pub struct MemoryLeaseStore {
    leases: Mutex<Vec<Lease>>,
}

#[async_trait]
impl LeaseStore for MemoryLeaseStore {
    async fn load(&self) -> Result<Vec<Lease>, DhcpError> {
        Ok(self.leases.lock().await.clone())
    }

    async fn commit(&self, lease: &Lease) -> Result<(), DhcpError> {
        let mut v = self.leases.lock().await;
        v.retain(|l| l.ip != lease.ip);
        v.push(lease.clone());
        Ok(())
    }
}

/// Leases in an append-only file, one JSON record per line, each written
/// with `fdatasync` before `commit` returns. Loading replays the file; a torn
/// last line (a crash mid-write) is skipped.
#[derive(Debug)]
pub struct FileLeaseStore {
    path: PathBuf,
    file: Mutex<Option<tokio::fs::File>>,
}

impl FileLeaseStore {
    /// A store at `path` (created on first commit).
    pub fn new(path: impl AsRef<Path>) -> Self {
        FileLeaseStore {
            path: path.as_ref().to_path_buf(),
            file: Mutex::new(None),
        }
    }
}

#[async_trait]
impl LeaseStore for FileLeaseStore {
    async fn load(&self) -> Result<Vec<Lease>, DhcpError> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(DhcpError::LeaseStore {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let mut by_ip = std::collections::BTreeMap::new();
        for line in text.lines() {
            if let Ok(l) = serde_json::from_str::<Lease>(line) {
                by_ip.insert(l.ip, l);
            }
        }
        Ok(by_ip.into_values().collect())
    }

    async fn commit(&self, lease: &Lease) -> Result<(), DhcpError> {
        let err = |source| DhcpError::LeaseStore {
            path: self.path.clone(),
            source,
        };
        let mut guard = self.file.lock().await;
        if guard.is_none() {
            let f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
                .map_err(err)?;
            *guard = Some(f);
        }
        let f = guard
            .as_mut()
            .ok_or_else(|| err(std::io::Error::other("lease file is not open")))?;
        let mut line = serde_json::to_vec(lease).unwrap_or_default();
        line.push(b'\n');
        f.write_all(&line).await.map_err(err)?;
        f.sync_data().await.map_err(err)?;
        Ok(())
    }
}
