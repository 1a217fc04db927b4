//! The rack protocol over the region's HTTP port: JSON under
//! `/MAAS/rpc/rack/v1/`, the same calls as `RegionLink` (and power jobs
//! the other way, long-polled by the rack).
//!
//! | call | request | answer |
//! |---|---|---|
//! | `POST register` | `Registration` | `RackCredentials`; 401 wrong secret, 409 other protocol version |
//! | `POST config` | `{"known": generation or null, "wait_ms": n}` | `RackConfig` (long poll) |
//! | `GET boot-host/{mac}` | | `BootHost` or `null` |
//! | `POST report` | `[RackReport]` | 204 |
//! | `POST power/next` | `{"wait_ms": n}` | a `PowerJob` or `null` (long poll) |
//! | `POST power/result` | `PowerResult` | 204 |
//!
//! Every call but `register` carries `Authorization: Rack <system_id>
//! <token>`; a refused token is a 401 and the rack registers again.
//! [`RemoteRacks`] is the region's `RackControl` when racks are remote: a
//! power action becomes a job the next polling rack takes, and its result
//! comes back through `power/result`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maas_core::MacAddress;
use maas_core::machine::{Machine, PowerState};
use maas_core::rack::{
    LinkError, PowerRequest, RackControl, RackCredentials, RackError, RegionLink, Registration,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

use crate::Region;

/// A power action for a rack to carry out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PowerJob {
    /// Identifies the result.
    pub id: u64,
    /// The machine (its power type and parameters name the driver).
    pub machine: Machine,
    /// What to do.
    pub request: PowerRequest,
}

/// How a power job went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PowerResult {
    /// The job.
    pub id: u64,
    /// The power state afterwards, or why it failed.
    pub result: Result<PowerState, String>,
}

/// Power actions waiting for, or being carried out by, remote racks.
#[derive(Default)]
pub struct RemoteRacks {
    next_id: AtomicU64,
    queue: Mutex<std::collections::VecDeque<PowerJob>>,
    queued: Notify,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Result<PowerState, String>>>>,
    /// When a rack last asked for work.
    last_poll: Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for RemoteRacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRacks").finish_non_exhaustive()
    }
}

/// A rack silent for this long is gone (its job poll returns every 25 s).
const RACK_GONE: Duration = Duration::from_secs(90);

/// How long a power action waits for a rack to take and finish it.
const POWER_TIMEOUT: Duration = Duration::from_secs(300);

impl RemoteRacks {
    async fn next_job(&self, wait: Duration) -> Option<PowerJob> {
        *self.last_poll.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
        let until = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.queued.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(j) = self
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            {
                return Some(j);
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return None;
            }
        }
    }

    fn finish(&self, r: PowerResult) -> bool {
        let tx = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&r.id);
        match tx {
            Some(tx) => tx.send(r.result).is_ok(),
            None => false,
        }
    }
}

#[async_trait]
impl RackControl for RemoteRacks {
    async fn power(
        &self,
        machine: &Machine,
        request: PowerRequest,
    ) -> Result<PowerState, RackError> {
        // No rack has asked for work lately: fail now rather than wait.
        let polled = *self.last_poll.lock().unwrap_or_else(|e| e.into_inner());
        if polled.is_none_or(|t| t.elapsed() > RACK_GONE) {
            return Err(RackError::NoRack(machine.system_id.clone()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(PowerJob {
                id,
                machine: machine.clone(),
                request,
            });
        self.queued.notify_one();
        let res = tokio::time::timeout(POWER_TIMEOUT, rx).await;
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|j| j.id != id);
        match res {
            Ok(Ok(Ok(state))) => Ok(state),
            Ok(Ok(Err(message))) => Err(RackError::Failed {
                system_id: machine.system_id.clone(),
                action: request.as_str(),
                message,
            }),
            Ok(Err(_)) | Err(_) => Err(RackError::NoRack(machine.system_id.clone())),
        }
    }
}

/// A refused call: its status and why.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn refusal(e: LinkError) -> Refusal {
    let status = match e {
        LinkError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        LinkError::Version { .. } => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    Refusal(status, e.to_string())
}

fn refuse(e: LinkError) -> Response {
    refusal(e).into_response()
}

fn credentials(headers: &HeaderMap) -> Result<RackCredentials, Refusal> {
    let bad = || refusal(LinkError::Unauthorized("no rack credentials".into()));
    let v = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(bad)?;
    let mut words = v.split_whitespace();
    let (Some("Rack"), Some(id), Some(token)) = (words.next(), words.next(), words.next()) else {
        return Err(bad());
    };
    Ok(RackCredentials {
        system_id: maas_core::SystemId::parse(id).map_err(|_| bad())?,
        token: token.to_owned(),
    })
}

fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("the request body is not what this call takes: {e}"),
        )
    })
}

/// The longest long poll a rack may ask for.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct ConfigAsk {
    known: Option<u64>,
    wait_ms: u64,
}

#[derive(Deserialize)]
struct JobAsk {
    wait_ms: u64,
}

async fn register(State(region): State<Region>, body: Bytes) -> Response {
    let reg: Registration = match json_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match region.rack_link().register(&reg).await {
        Ok(c) => Json(c).into_response(),
        Err(e) => refuse(e),
    }
}

async fn config(State(region): State<Region>, headers: HeaderMap, body: Bytes) -> Response {
    let (c, ask) = match (credentials(&headers), json_body::<ConfigAsk>(&body)) {
        (Ok(c), Ok(a)) => (c, a),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    let wait = Duration::from_millis(ask.wait_ms).min(MAX_WAIT);
    match region.rack_link().config(&c, ask.known, wait).await {
        Ok(cfg) => Json(cfg).into_response(),
        Err(e) => refuse(e),
    }
}

async fn boot_host(
    State(region): State<Region>,
    headers: HeaderMap,
    Path(mac): Path<String>,
) -> Response {
    let c = match credentials(&headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let Ok(mac) = MacAddress::parse(&mac) else {
        return (
            StatusCode::BAD_REQUEST,
            format!("{mac:?} is not a MAC address"),
        )
            .into_response();
    };
    match region.rack_link().boot_host(&c, mac).await {
        Ok(h) => Json(h).into_response(),
        Err(e) => refuse(e),
    }
}

async fn report(State(region): State<Region>, headers: HeaderMap, body: Bytes) -> Response {
    let (c, reports) = match (credentials(&headers), json_body(&body)) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    match region.rack_link().report(&c, reports).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => refuse(e),
    }
}

async fn power_next(State(region): State<Region>, headers: HeaderMap, body: Bytes) -> Response {
    let (c, ask) = match (credentials(&headers), json_body::<JobAsk>(&body)) {
        (Ok(c), Ok(a)) => (c, a),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    if let Err(e) = region.check_rack(&c).await {
        return refuse(e);
    }
    let Some(remote) = region.inner.remote.clone() else {
        return Json(None::<PowerJob>).into_response();
    };
    let wait = Duration::from_millis(ask.wait_ms).min(MAX_WAIT);
    Json(remote.next_job(wait).await).into_response()
}

async fn power_result(State(region): State<Region>, headers: HeaderMap, body: Bytes) -> Response {
    let (c, r) = match (credentials(&headers), json_body::<PowerResult>(&body)) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => return e.into_response(),
    };
    if let Err(e) = region.check_rack(&c).await {
        return refuse(e);
    }
    if let Some(remote) = &region.inner.remote {
        remote.finish(r);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The routes, mounted by [`crate::router`].
pub(crate) fn routes() -> axum::Router<Region> {
    axum::Router::new()
        .route("/MAAS/rpc/rack/v1/register", post(register))
        .route("/MAAS/rpc/rack/v1/config", post(config))
        .route("/MAAS/rpc/rack/v1/boot-host/{mac}", get(boot_host))
        .route("/MAAS/rpc/rack/v1/report", post(report))
        .route("/MAAS/rpc/rack/v1/power/next", post(power_next))
        .route("/MAAS/rpc/rack/v1/power/result", post(power_result))
}
