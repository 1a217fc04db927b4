//! `POST /MAAS/metadata/status/{system_id}`: the reporting webhook
//! cloud-init and curtin post their progress to (section 9.7 of the spec).
//!
//! The body is one JSON event: `event_type` (start, progress, finish),
//! `origin`, `name` (a slash-separated activity such as `cmd-install` or
//! `modules-final`), `description`, and optionally `result`, `timestamp`
//! and `files`. Start events and failures go to the event log; a failed
//! top-level activity fails the machine's current operation; `modules-final`
//! finishing while the machine is erasing or releasing completes the
//! release; attached files are kept as script results of the current run.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use maas_core::SystemId;
use maas_core::event::{EventLevel, NewEvent};
use maas_core::lifecycle::NodeStatus;
use maas_core::script::{OutputStream, RunKind};
use serde::Deserialize;

use crate::Region;
use crate::error::ApiError;

#[derive(Deserialize)]
struct Report {
    event_type: String,
    origin: String,
    name: String,
    description: String,
    #[serde(default)]
    result: Option<String>,
    #[serde(default)]
    files: Vec<File>,
}

#[derive(Deserialize)]
struct File {
    path: String,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    compression: Option<String>,
    content: String,
}

/// Handles one report; 204 when taken.
pub(crate) async fn report(
    region: &Region,
    node: &SystemId,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if !body.is_ascii() {
        return Err(ApiError::BadRequest(
            "Status payload must be ASCII-only.".into(),
        ));
    }
    let r: Report = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("Status payload is not a valid event: {e}")))?;
    if !matches!(r.event_type.as_str(), "start" | "progress" | "finish") {
        return Err(ApiError::invalid(
            "event_type",
            format!("{:?} is not start, progress or finish.", r.event_type),
        ));
    }
    let failed = matches!(
        r.result.as_deref().map(str::to_ascii_uppercase).as_deref(),
        Some("FAIL" | "FAILURE")
    );
    let store = region.store();
    let m = store.machine_get(node).await?;
    if r.event_type == "start" || failed {
        let mut e = NewEvent::machine(
            node,
            if failed { "Failure" } else { "Progress" },
            format!("{} {}: {}", r.origin, r.name, r.description),
        );
        if failed {
            e.level = EventLevel::Error;
        }
        store.event_append(&e).await?;
    }
    // Files: kept with the current run's results.
    if !r.files.is_empty()
        && let Some(kind) = crate::scripts::run_of(m.status).or(match m.status {
            NodeStatus::Deployed => Some(RunKind::Installation),
            _ => None,
        })
    {
        let set = match store.script_set_latest(node, kind).await? {
            Some(s) => s,
            None => region.begin_run(node, kind).await?,
        };
        for f in &r.files {
            let data = match f.encoding.as_deref() {
                Some("base64") => base64::engine::general_purpose::STANDARD
                    .decode(f.content.trim())
                    .map_err(|e| {
                        ApiError::invalid("files", format!("{}: not base64: {e}", f.path))
                    })?,
                _ => f.content.clone().into_bytes(),
            };
            let base = f.path.rsplit('/').next().unwrap_or(&f.path);
            // bzip2 content is kept as sent, under a name that says so.
            let name = match f.compression.as_deref() {
                Some(c) => format!("{base}.{c}"),
                None => base.to_owned(),
            };
            let (script, stream) = OutputStream::split(&name);
            store
                .script_output_store(set, script, stream, &data, None)
                .await?;
        }
    }
    let top_level = !r.name.contains('/');
    if r.event_type == "finish" && top_level {
        let next = match (m.status, failed, r.name.as_str()) {
            (NodeStatus::Commissioning, true, _) => Some(NodeStatus::FailedCommissioning),
            (NodeStatus::Deploying, true, _) => Some(NodeStatus::FailedDeployment),
            (NodeStatus::DiskErasing, true, _) => Some(NodeStatus::FailedDiskErasing),
            (NodeStatus::Releasing, true, _) => Some(NodeStatus::FailedReleasing),
            (NodeStatus::DiskErasing | NodeStatus::Releasing, false, "modules-final") => {
                Some(NodeStatus::Ready)
            }
            _ => None,
        };
        if let Some(to) = next {
            let why = format!("{} {}: {}", r.origin, r.name, r.description);
            store.machine_set_status(node, to, &why).await?;
        }
    }
    tracing::debug!(system_id = %node, event = %r.event_type, name = %r.name, failed, "status report");
    Ok(StatusCode::NO_CONTENT.into_response())
}
