//! `rackcontrollers/`: the racks registered through the rack protocol
//! (nodes of type 2), with their version and whether they are in touch:
//! `service_set` holds `rackd` (running while the rack has called within
//! the last 90 seconds: its configuration long poll returns every 30) and
//! the services the rack last reported.

use std::time::Instant;

use axum::response::Response;
use maas_core::SystemId;
use maas_core::machine::{Machine, NodeType};
use maas_core::repo::{MachineFilter, RepositoryError};
use serde_json::{Value, json};

use crate::Region;
use crate::api::{Req, ok};
use crate::error::ApiError;
use crate::render::Ctx;

const API: &str = "/MAAS/api/2.0";

/// How long a rack may stay silent and still count as running.
const ALIVE_SECS: u64 = 90;

/// When a rack last called, and the services it last reported.
type Contact = (Instant, Vec<(String, bool)>);

/// What the region last heard from each rack (this process only).
#[derive(Default)]
pub(crate) struct RackContacts {
    seen: std::sync::Mutex<std::collections::HashMap<SystemId, Contact>>,
    answered: std::sync::Mutex<std::collections::HashMap<SystemId, Instant>>,
}

impl RackContacts {
    /// How long to wait before answering this rack's next configuration
    /// request, so that one rack gets at most one configuration per
    /// `every` however fast things change; records the answer as given now
    /// plus that wait.
    pub(crate) fn pace(&self, id: &SystemId, every: std::time::Duration) -> std::time::Duration {
        let mut a = self.answered.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let wait = a
            .get(id)
            .map(|last| (*last + every).saturating_duration_since(now))
            .unwrap_or_default();
        a.insert(id.clone(), now + wait);
        wait
    }

    pub(crate) fn touch(&self, id: &SystemId) {
        let mut s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        s.entry(id.clone())
            .and_modify(|e| e.0 = Instant::now())
            .or_insert_with(|| (Instant::now(), Vec::new()));
    }

    pub(crate) fn services(&self, id: &SystemId, services: Vec<(String, bool)>) {
        let mut s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        s.insert(id.clone(), (Instant::now(), services));
    }

    fn get(&self, id: &SystemId) -> Option<(u64, Vec<(String, bool)>)> {
        let s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        s.get(id).map(|(t, v)| (t.elapsed().as_secs(), v.clone()))
    }
}

fn render(region: &Region, ctx: &Ctx, m: &Machine) -> Value {
    let sid = m.system_id.to_string();
    let full = match ctx.machine(m) {
        Value::Object(o) => o,
        _ => Default::default(),
    };
    let keep = [
        "system_id",
        "hostname",
        "domain",
        "fqdn",
        "architecture",
        "cpu_count",
        "cpu_speed",
        "memory",
        "swap_size",
        "osystem",
        "distro_series",
        "power_type",
        "power_state",
        "ip_addresses",
        "interface_set",
        "zone",
        "tag_names",
        "hardware_info",
        "hardware_uuid",
    ];
    let mut out: serde_json::Map<String, Value> = full
        .into_iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .collect();
    let mut services = Vec::new();
    match region.inner.rack_contacts.get(&m.system_id) {
        Some((ago, reported)) => {
            let alive = ago <= ALIVE_SECS;
            services.push(json!({
                "name": "rackd",
                "status": if alive { "running" } else { "dead" },
                "status_info": format!("last contact {ago} s ago"),
            }));
            for (name, up) in reported {
                services.push(json!({
                    "name": name,
                    "status": if up && alive { "running" } else if alive { "off" } else { "unknown" },
                    "status_info": "",
                }));
            }
        }
        None => services.push(json!({
            "name": "rackd",
            "status": "unknown",
            "status_info": "no contact since this region started",
        })),
    }
    // The rack's software version is kept in the node's description.
    out.insert("version".into(), json!(m.description));
    out.insert("description".into(), json!(""));
    out.insert("service_set".into(), Value::Array(services));
    out.insert("status_action".into(), json!(""));
    out.insert("node_type".into(), json!(NodeType::RackController.code()));
    out.insert(
        "node_type_name".into(),
        json!(NodeType::RackController.label()),
    );
    out.insert(
        "resource_uri".into(),
        json!(format!("{API}/rackcontrollers/{sid}/")),
    );
    Value::Object(out)
}

/// `GET rackcontrollers/` (filters `id`, `hostname`).
pub(crate) async fn list(r: &Req<'_>) -> Result<Response, ApiError> {
    let p = &r.params;
    let mut filter = MachineFilter {
        racks: true,
        hostnames: p.get_all("hostname"),
        ..Default::default()
    };
    for id in p.get_all("id") {
        filter
            .system_ids
            .push(SystemId::parse(&id).map_err(|e| ApiError::invalid("id", e.to_string()))?);
    }
    let racks = r.region.store().machine_list(&filter).await?;
    let ctx = Ctx::load(r.region).await?;
    ok(Value::Array(
        racks.iter().map(|m| render(r.region, &ctx, m)).collect(),
    ))
}

/// `GET rackcontrollers/{system_id}/`.
pub(crate) async fn read(r: &Req<'_>) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("No RackController matches the given query.".into());
    let id = SystemId::parse(r.path("system_id")).map_err(|_| not_found())?;
    let m = match r.region.store().machine_get(&id).await {
        Ok(m) if m.node_type == NodeType::RackController => m,
        Ok(_) | Err(RepositoryError::NotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let ctx = Ctx::load(r.region).await?;
    ok(render(r.region, &ctx, &m))
}
