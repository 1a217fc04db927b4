//! One Redfish service for the whole fleet: a computer system per machine
//! (`/redfish/v1/Systems/<id>`), with the parts of the standard the Redfish
//! power driver uses: the service root, the systems collection, a system's
//! `PowerState` and `Boot` override, and the `ComputerSystem.Reset` action
//! with its allowable values. HTTP Basic authentication; no sessions
//! (the driver falls back to Basic when the root offers none).
//!
//! A fake of a BMC: no real BMC can run per simulated machine here (the
//! maas-power tests drive sushy-tools and ipmi_sim, which are real).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::watch;

/// The power of one simulated machine, as its BMC holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// On: the machine runs (and boots, if it just came on).
    On,
    /// Off.
    Off,
}

/// One system behind the BMC.
pub(crate) struct System {
    pub(crate) power: watch::Sender<(Power, u64)>,
    pub(crate) boot_target: String,
}

/// The fleet's BMC.
#[derive(Clone)]
pub(crate) struct Bmc {
    pub(crate) systems: Arc<Mutex<BTreeMap<String, System>>>,
    pub(crate) user: String,
    pub(crate) password: String,
}

impl Bmc {
    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some(b64) = v.strip_prefix("Basic ") else {
            return false;
        };
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        raw == format!("{}:{}", self.user, self.password).as_bytes()
    }

    /// Sets a system's power (the machine's own `poweroff` comes here
    /// too); each change bumps a counter, so a machine told "on" twice
    /// sees both.
    pub(crate) fn set_power(&self, id: &str, p: Power) {
        let systems = self.systems.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = systems.get(id) {
            s.power.send_modify(|(power, n)| {
                *power = p;
                *n += 1;
            });
        }
    }

    fn power_of(&self, id: &str) -> Option<Power> {
        let systems = self.systems.lock().unwrap_or_else(|e| e.into_inner());
        systems.get(id).map(|s| s.power.borrow().0)
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": "Base.1.0.GeneralError", "message": message}})),
    )
        .into_response()
}

pub(crate) fn router(bmc: Bmc) -> Router {
    Router::new()
        .route("/redfish/v1/", get(root))
        .route("/redfish/v1", get(root))
        .route("/redfish/v1/Systems", get(systems))
        .route("/redfish/v1/Systems/", get(systems))
        .route("/redfish/v1/Systems/{id}", get(system).patch(patch_system))
        .route(
            "/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset",
            post(reset),
        )
        .with_state(bmc)
}

async fn root() -> Json<Value> {
    Json(json!({
        "@odata.id": "/redfish/v1/",
        "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
        "Id": "RootService",
        "Name": "maas-sim Redfish service",
        "RedfishVersion": "1.6.0",
        "Systems": {"@odata.id": "/redfish/v1/Systems"},
    }))
}

async fn systems(State(bmc): State<Bmc>, headers: HeaderMap) -> Response {
    if !bmc.authorised(&headers) {
        return error(StatusCode::UNAUTHORIZED, "authentication required");
    }
    let ids: Vec<String> = bmc
        .systems
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .keys()
        .cloned()
        .collect();
    Json(json!({
        "@odata.id": "/redfish/v1/Systems",
        "Name": "Computer System Collection",
        "Members@odata.count": ids.len(),
        "Members": ids.iter().map(|i| json!({"@odata.id": format!("/redfish/v1/Systems/{i}")})).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn system(State(bmc): State<Bmc>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !bmc.authorised(&headers) {
        return error(StatusCode::UNAUTHORIZED, "authentication required");
    }
    let systems = bmc.systems.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = systems.get(&id) else {
        return error(StatusCode::NOT_FOUND, "no such system");
    };
    let power = match s.power.borrow().0 {
        Power::On => "On",
        Power::Off => "Off",
    };
    Json(json!({
        "@odata.id": format!("/redfish/v1/Systems/{id}"),
        "@odata.type": "#ComputerSystem.v1_10_0.ComputerSystem",
        "Id": id,
        "Name": id,
        "PowerState": power,
        "Boot": {
            "BootSourceOverrideEnabled": "Continuous",
            "BootSourceOverrideTarget": s.boot_target,
            "BootSourceOverrideMode": "Legacy",
            "BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", "Hdd"],
        },
        "Actions": {
            "#ComputerSystem.Reset": {
                "target": format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset"),
                "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "GracefulShutdown", "ForceRestart"],
            }
        },
    }))
    .into_response()
}

async fn patch_system(
    State(bmc): State<Bmc>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if !bmc.authorised(&headers) {
        return error(StatusCode::UNAUTHORIZED, "authentication required");
    }
    let mut systems = bmc.systems.lock().unwrap_or_else(|e| e.into_inner());
    let Some(s) = systems.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "no such system");
    };
    match body
        .pointer("/Boot/BootSourceOverrideTarget")
        .and_then(Value::as_str)
    {
        Some(t @ ("Pxe" | "Hdd")) => {
            s.boot_target = t.to_owned();
            StatusCode::NO_CONTENT.into_response()
        }
        Some(other) => error(
            StatusCode::BAD_REQUEST,
            &format!("BootSourceOverrideTarget {other:?} is not one of Pxe, Hdd"),
        ),
        None => error(StatusCode::BAD_REQUEST, "nothing to change"),
    }
}

async fn reset(
    State(bmc): State<Bmc>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if !bmc.authorised(&headers) {
        return error(StatusCode::UNAUTHORIZED, "authentication required");
    }
    let Some(current) = bmc.power_of(&id) else {
        return error(StatusCode::NOT_FOUND, "no such system");
    };
    let kind = body.get("ResetType").and_then(Value::as_str).unwrap_or("");
    match kind {
        "On" if current == Power::On => {}
        "On" => bmc.set_power(&id, Power::On),
        "ForceOff" | "GracefulShutdown" => bmc.set_power(&id, Power::Off),
        "ForceRestart" => {
            bmc.set_power(&id, Power::Off);
            bmc.set_power(&id, Power::On);
        }
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("ResetType {other:?} is not allowed"),
            );
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Serves the BMC on `listener`.
pub(crate) async fn serve(listener: tokio::net::TcpListener, bmc: Bmc) {
    let _: Option<SocketAddr> = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, router(bmc)).await {
        tracing::error!(error = %e, "simulated BMC stopped");
    }
}
