//! `devices/`: nodes MAAS tracks (interfaces, static addresses, DNS names)
//! but never powers, commissions or deploys: MAAS node type 1. They live
//! in the machine table with their node type, so interfaces and links
//! (`nodes/{system_id}/interfaces/`) work for them as for machines; machine
//! lists, allocation and every machine operation leave them out.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maas_core::lifecycle::Actor;
use maas_core::machine::{Interface, Machine, NodeType};
use maas_core::repo::MachineFilter;
use maas_core::{Architecture, Hostname, MacAddress, SystemId};
use serde_json::{Value, json};

use crate::api::{Req, ok};
use crate::error::ApiError;
use crate::render::Ctx;

const API: &str = "/MAAS/api/2.0";

/// A device as MAAS renders it (`DISPLAYED_DEVICE_FIELDS`).
pub(crate) fn render(ctx: &Ctx, m: &Machine) -> Value {
    let sid = m.system_id.to_string();
    let mut v = ctx.machine(m);
    let full = v.as_object_mut().map(std::mem::take).unwrap_or_default();
    let keep = [
        "system_id",
        "hostname",
        "description",
        "domain",
        "fqdn",
        "owner",
        "owner_data",
        "tag_names",
        "address_ttl",
        "ip_addresses",
        "interface_set",
        "zone",
    ];
    let mut out: serde_json::Map<String, Value> = full
        .into_iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .collect();
    out.insert(
        "parent".into(),
        json!(m.parent.as_ref().map(ToString::to_string)),
    );
    out.insert("node_type".into(), json!(NodeType::Device.code()));
    out.insert("node_type_name".into(), json!(NodeType::Device.label()));
    out.insert(
        "resource_uri".into(),
        json!(format!("{API}/devices/{sid}/")),
    );
    Value::Object(out)
}

/// The settings a create or update names: hostname, domain, parent, zone,
/// description.
async fn apply(r: &Req<'_>, m: &mut Machine) -> Result<(), ApiError> {
    let p = &r.params;
    if let Some(h) = p.get("hostname") {
        m.hostname =
            Hostname::parse(h).map_err(|e| ApiError::invalid("hostname", e.to_string()))?;
    }
    if let Some(d) = p.get("domain") {
        let found = r
            .region
            .store()
            .domain_list()
            .await?
            .into_iter()
            .find(|x| x.id.0.to_string() == d || x.name == d)
            .ok_or_else(|| ApiError::invalid("domain", format!("No domain {d:?}.")))?;
        m.domain = maas_core::types::DomainName::parse(&found.name)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    if let Some((_, parent)) = p.pairs().find(|(k, _)| *k == "parent") {
        m.parent =
            if parent.is_empty() {
                None
            } else {
                let id = SystemId::parse(parent)
                    .map_err(|e| ApiError::invalid("parent", e.to_string()))?;
                let pm =
                    r.region.store().machine_get(&id).await.map_err(|_| {
                        ApiError::invalid("parent", format!("No machine {parent:?}."))
                    })?;
                if pm.node_type != NodeType::Machine {
                    return Err(ApiError::invalid(
                        "parent",
                        format!("{parent} is not a machine."),
                    ));
                }
                Some(id)
            };
    }
    if let Some(z) = p.get("zone") {
        z.clone_into(&mut m.zone);
    }
    if let Some((_, d)) = p.pairs().find(|(k, _)| *k == "description") {
        d.clone_into(&mut m.description);
    }
    Ok(())
}

/// `GET devices/` and `POST devices/`.
pub(crate) async fn collection(r: &Req<'_>, op: &str) -> Result<Response, ApiError> {
    let me = r.user();
    let store = r.region.store();
    if op == "read" {
        let p = &r.params;
        let mut filter = MachineFilter {
            devices: true,
            hostnames: p.get_all("hostname"),
            visible_to: (!me.is_admin).then(|| me.username.clone()),
            ..Default::default()
        };
        for id in p.get_all("id") {
            filter
                .system_ids
                .push(SystemId::parse(&id).map_err(|e| ApiError::invalid("id", e.to_string()))?);
        }
        for mac in p.get_all("mac_address") {
            filter.macs.push(
                MacAddress::parse(&mac)
                    .map_err(|e| ApiError::invalid("mac_address", e.to_string()))?,
            );
        }
        let devices = store.machine_list(&filter).await?;
        let ctx = Ctx::load(r.region).await?;
        return ok(Value::Array(
            devices.iter().map(|d| render(&ctx, d)).collect(),
        ));
    }
    let macs = r.params.get_all("mac_addresses");
    if macs.is_empty() {
        return Err(ApiError::required("mac_addresses"));
    }
    let id = SystemId::random();
    let hostname =
        Hostname::parse(&format!("device-{id}")).map_err(|e| ApiError::Internal(e.to_string()))?;
    // Devices have no architecture of their own; the column wants one.
    let mut m = Machine::new(
        id.clone(),
        hostname,
        Architecture::amd64(),
        chrono::Utc::now(),
    );
    m.node_type = NodeType::Device;
    m.domain = r.region.default_domain_name().await?;
    m.owner = Some(me.username.clone());
    m.power_type = String::new();
    for (n, mac) in macs.iter().enumerate() {
        let mac = MacAddress::parse(mac)
            .map_err(|e| ApiError::invalid("mac_addresses", e.to_string()))?;
        m.interfaces
            .push(Interface::physical(format!("eth{n}"), mac));
    }
    apply(r, &mut m).await?;
    let m = store
        .machine_create(&m, &Actor::user(me.username.clone(), me.is_admin))
        .await?;
    let ctx = Ctx::load(r.region).await?;
    ok(render(&ctx, &m))
}

/// `devices/{system_id}/`: read, update, delete, set_owner_data. Owners
/// and admins change a device; others do not see it.
pub(crate) async fn item(r: &Req<'_>, op: &str) -> Result<Response, ApiError> {
    let m = r.node().await?;
    if m.node_type != NodeType::Device {
        return Err(ApiError::NotFound(
            "No Device matches the given query.".into(),
        ));
    }
    let me = r.user();
    if op != "read" && !me.is_admin && m.owner.as_deref() != Some(me.username.as_str()) {
        return Err(ApiError::Forbidden(
            "Only the device's owner or an admin may change it.".into(),
        ));
    }
    let store = r.region.store();
    let m = match op {
        "read" => m,
        "update" => {
            let mut m = m;
            apply(r, &mut m).await?;
            store.machine_update(&m).await?
        }
        "set_owner_data" => {
            let mut m = m;
            for (k, v) in r.params.pairs() {
                if v.is_empty() {
                    m.owner_data.remove(k);
                } else {
                    m.owner_data.insert(k.to_owned(), v.to_owned());
                }
            }
            store.machine_update(&m).await?
        }
        "delete" => {
            // Permission was checked above; the store's own admin check is
            // for machines.
            store.machine_delete(&m.system_id, &Actor::System).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "DeviceHandler has no operation {other}"
            )));
        }
    };
    let ctx = Ctx::load(r.region).await?;
    ok(render(&ctx, &m))
}
