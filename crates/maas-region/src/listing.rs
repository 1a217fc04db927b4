//! The machine list at scale.
//!
//! Rendering a machine (interfaces, disks, links, the zone and pool, the
//! network objects its links name) costs far more than reading whether it
//! changed. So the region keeps each machine's rendered JSON, keyed by its
//! [`MachineStamp`] (version and creation time, both in the store), next to
//! the rendering context it was made with (zones, pools, fabrics, VLANs,
//! subnets). A list asks the store only for the stamps of the machines the
//! filter matches, renders the machines whose stamp moved (one batched load
//! for all of them), and streams the kept bytes. Since the stamps live in the
//! store, every region behind one database sees every other region's writes:
//! there is nothing to invalidate across processes.
//!
//! Memory: one copy of each machine's JSON (about 3-6 KB for a machine with
//! two NICs and two disks). Entries of deleted machines go on the next
//! unfiltered list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use maas_core::SystemId;
use maas_core::repo::{MachineFilter, MachineStamp};

use crate::Region;
use crate::error::ApiError;
use crate::render::Ctx;

/// Machines loaded per store query while filling the cache.
const FILL_BATCH: usize = 2_000;

/// One machine's rendered JSON and the stamp it was rendered at.
struct Entry {
    version: i64,
    created: DateTime<Utc>,
    json: Bytes,
}

impl Entry {
    fn matches(&self, s: &MachineStamp) -> bool {
        self.version == s.version && self.created == s.created
    }
}

#[derive(Default)]
struct State {
    /// The context every entry was rendered with.
    ctx: Option<Arc<Ctx>>,
    entries: HashMap<SystemId, Entry>,
}

/// Rendered machines by stamp. One per region process.
#[derive(Default)]
pub(crate) struct MachineCache {
    state: Mutex<State>,
    /// One fill at a time: concurrent lists that miss wait for the first
    /// fill instead of each rendering the same machines.
    fill: tokio::sync::Mutex<()>,
}

/// How a list was answered (for tests and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ListStats {
    /// Machines in the answer.
    pub(crate) listed: usize,
    /// Machines rendered for it (not found current in the cache).
    pub(crate) rendered: usize,
}

impl MachineCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves only a partly filled map,
        // which is still correct to read: recover it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adopts `ctx` as the rendering context (dropping every entry if it
    /// differs from the one they were made with); returns the stamps whose
    /// entries are missing or stale.
    fn misses(&self, ctx: &Arc<Ctx>, stamps: &[MachineStamp]) -> Vec<SystemId> {
        let mut st = self.lock();
        if st.ctx.as_deref() != Some(ctx.as_ref()) {
            st.entries.clear();
            st.ctx = Some(ctx.clone());
        }
        stamps
            .iter()
            .filter(|s| !st.entries.get(&s.system_id).is_some_and(|e| e.matches(s)))
            .map(|s| s.system_id.clone())
            .collect()
    }

    /// The JSON of each machine in `stamps`, in order, rendering what the
    /// cache lacks.
    async fn machines(
        &self,
        region: &Region,
        stamps: &[MachineStamp],
        prune: bool,
    ) -> Result<(Vec<Bytes>, ListStats), ApiError> {
        let ctx = Arc::new(Ctx::load(region).await?);
        let mut rendered = 0;
        let mut local: HashMap<SystemId, Bytes> = HashMap::new();
        if !self.misses(&ctx, stamps).is_empty() {
            let _filling = self.fill.lock().await;
            // Another list may have filled them while this one waited.
            let missing = self.misses(&ctx, stamps);
            for chunk in missing.chunks(FILL_BATCH) {
                let machines = region
                    .store()
                    .machine_list(&MachineFilter {
                        system_ids: chunk.to_vec(),
                        ..Default::default()
                    })
                    .await?;
                let fresh: Vec<(SystemId, Entry)> = machines
                    .iter()
                    .map(|m| {
                        let json = serde_json::to_vec(&ctx.machine(m))
                            .map_err(|e| ApiError::Internal(format!("rendering a machine: {e}")))?;
                        Ok((
                            m.system_id.clone(),
                            Entry {
                                version: m.version,
                                created: m.created,
                                json: Bytes::from(json),
                            },
                        ))
                    })
                    .collect::<Result<_, ApiError>>()?;
                rendered += fresh.len();
                let mut st = self.lock();
                // If the context changed under this fill, these renderings
                // serve this answer only (consistent with its context) and
                // the next list renders against the new one.
                let current = st.ctx.as_deref() == Some(ctx.as_ref());
                for (id, e) in fresh {
                    local.insert(id.clone(), e.json.clone());
                    if !current {
                        continue;
                    }
                    // Never replace a newer rendering with an older one.
                    match st.entries.get(&id) {
                        Some(old) if old.version > e.version && old.created == e.created => {}
                        _ => {
                            st.entries.insert(id, e);
                        }
                    }
                }
            }
        }
        let mut st = self.lock();
        if prune {
            let keep: std::collections::HashSet<&SystemId> =
                stamps.iter().map(|s| &s.system_id).collect();
            st.entries.retain(|id, _| keep.contains(id));
        }
        // A machine deleted between the stamps and the load is left out.
        let parts: Vec<Bytes> = stamps
            .iter()
            .filter_map(|s| {
                local
                    .get(&s.system_id)
                    .cloned()
                    .or_else(|| st.entries.get(&s.system_id).map(|e| e.json.clone()))
            })
            .collect();
        let stats = ListStats {
            listed: parts.len(),
            rendered,
        };
        Ok((parts, stats))
    }
}

impl Region {
    /// The machines `filter` matches as the JSON array `GET machines/`
    /// answers, streamed from the rendered-machine cache.
    pub(crate) async fn machine_list_response(
        &self,
        filter: &MachineFilter,
    ) -> Result<(Response, ListStats), ApiError> {
        let stamps = self.store().machine_stamps(filter).await?;
        let prune = *filter == MachineFilter::default();
        let (parts, stats) = self.inner.machines.machines(self, &stamps, prune).await?;
        // `[`, the machines with a comma between each two, `]`.
        let len = 2 + parts.iter().map(Bytes::len).sum::<usize>() + parts.len().saturating_sub(1);
        let mut chunks = Vec::with_capacity(parts.len() * 2 + 2);
        chunks.push(Bytes::from_static(b"["));
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0 {
                chunks.push(Bytes::from_static(b","));
            }
            chunks.push(p);
        }
        chunks.push(Bytes::from_static(b"]"));
        let body = Body::from_stream(futures_util::stream::iter(
            chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
        ));
        let resp = (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    "application/json; charset=utf-8".to_owned(),
                ),
                (header::CONTENT_LENGTH, len.to_string()),
            ],
            body,
        )
            .into_response();
        Ok((resp, stats))
    }

    /// Renders every machine into the list cache, so the first `GET
    /// machines/` after a start is as fast as the rest. Returns how many
    /// were rendered.
    pub async fn warm_machine_cache(&self) -> Result<usize, ApiError> {
        let stamps = self
            .store()
            .machine_stamps(&MachineFilter::default())
            .await?;
        let (_, stats) = self.inner.machines.machines(self, &stamps, true).await?;
        Ok(stats.rendered)
    }
}
