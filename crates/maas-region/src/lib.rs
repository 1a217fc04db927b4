//! # maas-region
//!
//! The region controller as a library: an axum [`Router`] that speaks the
//! MAAS REST API 2.0 and the metadata API the way existing clients
//! (python-libmaas, the maas CLI, gomaasapi, Terraform, cloud-init) expect
//! them (`shared/spec/maas-api-2.0.md`), over any storage that implements the
//! `maas-core` repository traits.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn maas_region::RegionStore>) -> Result<(), Box<dyn std::error::Error>> {
//! use maas_region::{Region, RegionConfig};
//!
//! let region = Region::new(store, RegionConfig::default()).await?;
//! let app = maas_region::router(region); // mount it in your own axum app
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5240").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! What is served: OAuth 1.0a PLAINTEXT authentication with a nonce cache
//! and timestamp window, username/password login (`/MAAS/accounts/authenticate/`),
//! `describe/` built from the same table the dispatcher uses (so it never
//! lists an operation that is not there), `version/`, machines (list with
//! filters, create, read, allocate with constraints, deploy, release, abort,
//! commission, power, lock, tokens), zones, resource pools, fabrics, VLANs,
//! subnets, users, and the metadata endpoints a machine uses with its node
//! token (meta-data, user-data, `op=signal`).

#![recursion_limit = "1024"]

mod api;
mod auth;
mod blockdevs;
mod describe;
mod devices;
mod error;
mod interfaces;
mod listing;
mod metadata;
mod netapi;
mod params;
mod rack;
mod racklink;
mod rackrpc;
mod racks;
mod render;
mod scripts;
mod settings;
mod storage;
mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, post};
use maas_core::account::User;
use maas_core::repo::{
    ConfigRepository, EventRepository, MachineRepository, NetworkRepository, OrgRepository,
    RepositoryError, ScriptRepository, UserRepository,
};

pub use auth::{hash_password, verify_password};
pub use error::ApiError;
pub use rack::{NoRack, PowerRequest, RackControl, RackError, SimulatedRack};
pub use racklink::LocalRegionLink;
pub use rackrpc::{PowerJob, PowerResult, RemoteRacks};

/// Everything the region needs from storage: the `maas-core` repository
/// traits (implemented by `maas-store` for SQLite and PostgreSQL).
pub trait RegionStore:
    MachineRepository
    + UserRepository
    + OrgRepository
    + NetworkRepository
    + EventRepository
    + ConfigRepository
    + ScriptRepository
{
}

impl<T> RegionStore for T where
    T: MachineRepository
        + UserRepository
        + OrgRepository
        + NetworkRepository
        + EventRepository
        + ConfigRepository
        + ScriptRepository
{
}

/// Settings of a region.
#[derive(Debug, Clone)]
pub struct RegionConfig {
    /// The version string `version/` reports.
    pub version: String,
    /// The OS deployed when a deploy names none.
    pub default_osystem: String,
    /// The series deployed when a deploy names none.
    pub default_distro_series: String,
    /// How old an OAuth timestamp may be, in seconds (MAAS: 300).
    pub timestamp_window_secs: i64,
    /// Where deploying machines reach the metadata service and the images
    /// (`http://<rack>:5248`); `None`: the address the request came to.
    pub boot_server_url: Option<String>,
}

impl Default for RegionConfig {
    fn default() -> Self {
        RegionConfig {
            version: format!("{} (maas-rs)", env!("CARGO_PKG_VERSION")),
            default_osystem: "ubuntu".into(),
            default_distro_series: "noble".into(),
            timestamp_window_secs: 300,
            boot_server_url: None,
        }
    }
}

/// Why a region could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// The store failed.
    #[error("the region's store failed")]
    Store(#[from] RepositoryError),
}

/// The username of the inactive system user that owns node tokens, as in
/// MAAS.
pub const NODE_USER: &str = "maas-init-node";

/// A region: its store, settings and the in-memory state of one process
/// (the OAuth nonce cache). Cheap to clone.
#[derive(Clone)]
pub struct Region {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn RegionStore>,
    config: RegionConfig,
    nonces: auth::NonceCache,
    node_user: User,
    rack: Arc<dyn RackControl>,
    machines: listing::MachineCache,
    /// Woken after every request that may have changed what racks serve.
    changes: tokio::sync::Notify,
    /// When each rack last called (this process).
    rack_contacts: racks::RackContacts,
    /// Power jobs for racks that reach the region over the network.
    remote: Option<Arc<RemoteRacks>>,
}

impl Region {
    /// A region over `store` (already migrated) with no rack connected:
    /// only machines with `manual` power can go through their life. Creates
    /// the node-token system user if it is missing.
    pub async fn new(
        store: Arc<dyn RegionStore>,
        config: RegionConfig,
    ) -> Result<Self, RegionError> {
        Self::with_rack(store, config, Arc::new(NoRack)).await
    }

    /// A region whose power actions go to racks that connect over the
    /// network (`/MAAS/rpc/rack/v1/`): each becomes a job the next polling
    /// rack carries out.
    pub async fn with_remote_racks(
        store: Arc<dyn RegionStore>,
        config: RegionConfig,
    ) -> Result<Self, RegionError> {
        let remote = Arc::new(RemoteRacks::default());
        Self::build(store, config, remote.clone(), Some(remote)).await
    }

    /// A region whose power actions go through `rack`.
    pub async fn with_rack(
        store: Arc<dyn RegionStore>,
        config: RegionConfig,
        rack: Arc<dyn RackControl>,
    ) -> Result<Self, RegionError> {
        Self::build(store, config, rack, None).await
    }

    async fn build(
        store: Arc<dyn RegionStore>,
        config: RegionConfig,
        rack: Arc<dyn RackControl>,
        remote: Option<Arc<RemoteRacks>>,
    ) -> Result<Self, RegionError> {
        let node_user = match store.user_get(NODE_USER).await {
            Ok(u) => u,
            Err(RepositoryError::NotFound { .. }) => {
                match store.user_create(NODE_USER, "", false, None).await {
                    Ok(u) => u,
                    // Another region made it first.
                    Err(RepositoryError::AlreadyExists { .. }) => store.user_get(NODE_USER).await?,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Region {
            inner: Arc::new(Inner {
                store,
                config,
                nonces: auth::NonceCache::default(),
                node_user,
                rack,
                machines: listing::MachineCache::default(),
                changes: tokio::sync::Notify::new(),
                rack_contacts: racks::RackContacts::default(),
                remote,
            }),
        })
    }

    pub(crate) fn store(&self) -> &dyn RegionStore {
        self.inner.store.as_ref()
    }

    pub(crate) fn config(&self) -> &RegionConfig {
        &self.inner.config
    }

    /// Moves every machine whose status deadline has passed to its failed
    /// status (Commissioning -> Failed commissioning, ...); returns them.
    ///
    /// Safe to run in every region at once: each machine is expired in its
    /// own transaction that re-reads its status, so two regions never
    /// expire it twice (they only repeat the query).
    pub async fn expire_deadlines(&self) -> Result<Vec<maas_core::machine::Machine>, RegionError> {
        let expired = self
            .store()
            .machine_expire_deadlines(chrono::Utc::now())
            .await?;
        for m in &expired {
            tracing::warn!(system_id = %m.system_id, status = %m.status, "deadline passed");
        }
        if !expired.is_empty() {
            self.notify_change();
        }
        Ok(expired)
    }

    /// Runs [`Region::expire_deadlines`] every `every` until the task is
    /// dropped or aborted.
    pub fn spawn_deadline_worker(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let region = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = region.expire_deadlines().await {
                    tracing::error!(error = %e, "deadline check failed");
                }
            }
        })
    }

    /// A power action through the rack; machines with `manual` (or no)
    /// power need none and get `None`. The state read back is stored.
    pub(crate) async fn power(
        &self,
        m: &maas_core::machine::Machine,
        request: PowerRequest,
    ) -> Result<Option<maas_core::machine::PowerState>, ApiError> {
        if matches!(m.power_type.as_str(), "" | "manual") {
            return Ok(None);
        }
        let state = self
            .inner
            .rack
            .power(m, request)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let mut fresh = self.store().machine_get(&m.system_id).await?;
        if fresh.power_state != state {
            fresh.power_state = state;
            self.store().machine_update(&fresh).await?;
        }
        Ok(Some(state))
    }
}

/// The region's HTTP API: `/MAAS/api/2.0/...`, `/MAAS/api/version/`,
/// `/MAAS/accounts/authenticate/` and `/MAAS/metadata/...`.
pub fn router(region: Region) -> Router {
    let notifier = region.clone();
    Router::new()
        .route("/MAAS/api/version/", get(api::version_text))
        .route("/MAAS/api/1.0/{*rest}", any(api::gone))
        .route("/MAAS/api/2.0/", any(api::dispatch))
        .route("/MAAS/api/2.0/{*rest}", any(api::dispatch))
        .route("/MAAS/accounts/authenticate/", post(api::authenticate))
        .route("/MAAS/metadata/", any(metadata::dispatch))
        .route("/MAAS/metadata/{*rest}", any(metadata::dispatch))
        .merge(rackrpc::routes())
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let region = notifier.clone();
                async move {
                    // Writes, and metadata reads (a deployed system's first
                    // user-data read ends its deployment), may change what
                    // racks serve.
                    let path = req.uri().path();
                    let wakes = !path.starts_with("/MAAS/rpc/")
                        && (req.method() != axum::http::Method::GET
                            || path.starts_with("/MAAS/metadata/"));
                    let res = next.run(req).await;
                    if wakes && res.status().is_success() {
                        region.notify_change();
                    }
                    res
                }
            },
        ))
        .with_state(region)
}
