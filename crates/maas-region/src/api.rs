//! `/MAAS/api/2.0/...`: routing by the resource table, `op` dispatch,
//! authorisation, and the operations.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use maas_core::constraints::AllocationRequest;
use maas_core::lifecycle::{Action, ActionOptions, Actor, NodeStatus};
use maas_core::machine::{Interface, Machine, PowerParameters};
use maas_core::repo::{MachineFilter, RepositoryError};
use maas_core::{Architecture, Hostname, MacAddress, SystemId};
use serde_json::{Value, json};

use crate::Region;
use crate::auth::Caller;
use crate::describe::{self, Op, Resource};
use crate::error::ApiError;
use crate::params::{Params, form_pairs};
use crate::rack::PowerRequest;
use crate::render::{self, Ctx};

const CAPABILITIES: &[&str] = &[
    "networks-management",
    "static-ipaddresses",
    "ipv6-deployment-ubuntu",
    "devices-management",
    "storage-deployment-ubuntu",
    "network-deployment-ubuntu",
    "bridging-interface-ubuntu",
    "bridging-automatic-ubuntu",
    "authenticate-api",
];

/// `GET /MAAS/api/version/`: the text `2.0`.
pub(crate) async fn version_text() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "2.0").into_response()
}

/// `/MAAS/api/1.0/...`: gone.
pub(crate) async fn gone() -> Response {
    ApiError::Gone("The 1.0 API is no longer available. Please use API version 2.0.".into())
        .into_response()
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

pub(crate) fn ok(v: Value) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, &v))
}

/// `POST /MAAS/accounts/authenticate/`: username and password to an API
/// token (python-libmaas `login`).
pub(crate) async fn authenticate(State(region): State<Region>, body: Bytes) -> Response {
    let form: Vec<(String, String)> = form_pairs(&body);
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let (username, password, consumer) = (get("username"), get("password"), get("consumer"));
    let denied = || {
        ApiError::Forbidden("Username and password do not match or the user is inactive.".into())
            .into_response()
    };
    let user = match region.store().user_get(username).await {
        Ok(u) if u.username != crate::NODE_USER => u,
        _ => return denied(),
    };
    if !user
        .password_hash
        .as_deref()
        .is_some_and(|h| crate::auth::verify_password(password, h))
    {
        return denied();
    }
    let result = async {
        let tokens = region.store().token_list(user.id).await?;
        let existing = if consumer.is_empty() {
            tokens.into_iter().next()
        } else {
            tokens.into_iter().find(|t| t.name == consumer)
        };
        match existing {
            Some(t) => Ok(t),
            None => {
                let name = if consumer.is_empty() {
                    "MAAS consumer"
                } else {
                    consumer
                };
                region.store().token_create(user.id, name).await
            }
        }
    }
    .await;
    match result {
        Ok(t) => json_response(
            StatusCode::OK,
            &json!({"consumer_key": t.consumer_key, "token_key": t.token_key,
                    "token_secret": t.token_secret, "name": t.name}),
        ),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Every request under `/MAAS/api/2.0/`.
pub(crate) async fn dispatch(
    State(region): State<Region>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    use tracing::Instrument;
    let path = uri.path();
    let rel = path.strip_prefix("/MAAS/api/2.0/").unwrap_or("");
    // One span per request, carrying the machine's system_id where the
    // path names one (the span shared with the rack's logs for it).
    let system_id = rel
        .strip_prefix("machines/")
        .or_else(|| rel.strip_prefix("nodes/"))
        .and_then(|r| r.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("");
    let span = tracing::info_span!("api", %method, path = rel, system_id);
    let mut resp = match route_and_run(&region, &method, rel, uri.query(), &headers, body)
        .instrument(span.clone())
        .await
    {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "answered"));
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&describe::api_hash()) {
        h.insert("X-MAAS-API-Hash", v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Authorization"));
    resp
}

async fn route_and_run(
    region: &Region,
    method: &Method,
    rel: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some((resource, path_params)) = describe::route(rel) else {
        return Err(ApiError::NotFound(format!(
            "Unknown API endpoint: /MAAS/api/2.0/{rel}."
        )));
    };
    let params = Params::parse(method, query, headers, body).await?;
    let wanted = params.op();
    let op = resource
        .ops
        .iter()
        .find(|o| o.method == method.as_str() && o.op == wanted);
    let Some(op) = op else {
        if resource.ops.iter().any(|o| o.method == method.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "Unrecognised signature: method={} op={}",
                method,
                wanted.unwrap_or("")
            )));
        }
        return Err(ApiError::MethodNotAllowed);
    };
    let caller = region.authenticate(headers).await?;
    if !op.anon {
        match &caller {
            Caller::User(_) => {}
            Caller::Anonymous => return Err(ApiError::Unauthenticated),
            Caller::Node(_) => {
                return Err(ApiError::Forbidden(
                    "Node tokens are for the metadata service.".into(),
                ));
            }
        }
    }
    let req = Req {
        region,
        caller,
        params,
        path: path_params,
        headers,
    };
    run(resource, op, req).await
}

pub(crate) struct Req<'a> {
    pub(crate) region: &'a Region,
    pub(crate) caller: Caller,
    pub(crate) params: Params,
    pub(crate) path: Vec<(&'static str, String)>,
    pub(crate) headers: &'a HeaderMap,
}

impl Req<'_> {
    pub(crate) fn path(&self, name: &str) -> &str {
        self.path
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    pub(crate) fn user(&self) -> &maas_core::account::User {
        // `run` is only reached with a user for non-anonymous operations.
        self.caller.user().expect("an authenticated user")
    }

    pub(crate) fn actor(&self) -> Actor {
        let u = self.user();
        Actor::user(u.username.clone(), u.is_admin)
    }

    pub(crate) fn admin(&self) -> Result<(), ApiError> {
        if self.user().is_admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "You do not have permission to perform this action.".into(),
            ))
        }
    }

    pub(crate) fn system_id(&self) -> Result<SystemId, ApiError> {
        SystemId::parse(self.path("system_id"))
            .map_err(|_| ApiError::NotFound("No Machine matches the given query.".into()))
    }

    /// The machine, if the caller may see it (admins: all; users: Ready
    /// machines and their own). A device is not a machine: 404.
    pub(crate) async fn machine(&self) -> Result<Machine, ApiError> {
        let m = self.node().await?;
        if m.node_type != maas_core::machine::NodeType::Machine {
            return Err(ApiError::NotFound(
                "No Machine matches the given query.".into(),
            ));
        }
        Ok(m)
    }

    /// The node (machine or device) the path names, if the caller may see
    /// it.
    pub(crate) async fn node(&self) -> Result<Machine, ApiError> {
        let id = self.system_id()?;
        let m = self
            .region
            .store()
            .machine_get(&id)
            .await
            .map_err(|e| match e {
                RepositoryError::NotFound { .. } => {
                    ApiError::NotFound("No Machine matches the given query.".into())
                }
                other => other.into(),
            })?;
        let u = self.user();
        if u.is_admin || m.status == NodeStatus::Ready || m.owner.as_deref() == Some(&u.username) {
            Ok(m)
        } else {
            Err(ApiError::Forbidden(
                "You do not have permission to view this machine.".into(),
            ))
        }
    }
}

async fn run(resource: &Resource, op: &Op, r: Req<'_>) -> Result<Response, ApiError> {
    match (resource.name, op.name) {
        ("VersionHandler", _) => ok(json!({
            "capabilities": CAPABILITIES,
            "version": r.region.config().version,
            "subversion": "",
        })),
        ("DescribeHandler", _) => {
            let host = r
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost:5240");
            let doc = describe::describe(&format!("http://{host}"));
            Ok((
                [(header::CONTENT_TYPE, "application/json")],
                doc.to_string(),
            )
                .into_response())
        }
        ("MachinesHandler" | "NodesHandler", "read") => machines_read(&r, false).await,
        ("MachinesHandler", "list_allocated") => machines_read(&r, true).await,
        ("MachinesHandler", "create") => match r.caller {
            Caller::User(_) => machines_create(&r).await,
            _ => machines_enlist(&r).await,
        },
        ("MachinesHandler", "allocate") => machines_allocate(&r).await,
        ("MachinesHandler", "release") => machines_release(&r).await,
        ("MachinesHandler", "power_parameters") => {
            r.admin()?;
            let filter = MachineFilter {
                system_ids: ids(&r.params.get_all("id"))?,
                ..Default::default()
            };
            let all = r.region.store().machine_list(&filter).await?;
            let map: serde_json::Map<String, Value> = all
                .into_iter()
                .map(|m| (m.system_id.to_string(), json!(m.power_parameters.0)))
                .collect();
            ok(Value::Object(map))
        }
        ("NodeHandler", "read") => {
            let m = r.node().await?;
            if m.node_type == maas_core::machine::NodeType::Device {
                let ctx = Ctx::load(r.region).await?;
                return ok(crate::devices::render(&ctx, &m));
            }
            render_one(&r, &m).await
        }
        ("MachineHandler", "read") => {
            let m = r.machine().await?;
            render_one(&r, &m).await
        }
        ("MachineHandler", name) => machine_op(&r, name).await,
        ("RackControllersHandler", _) => crate::racks::list(&r).await,
        ("RackControllerHandler", _) => crate::racks::read(&r).await,
        ("DevicesHandler", name) => crate::devices::collection(&r, name).await,
        ("DeviceHandler", name) => crate::devices::item(&r, name).await,
        ("InterfacesHandler", "read") => {
            let m = r.node().await?;
            let ctx = Ctx::load(r.region).await?;
            ok(crate::interfaces::list(&ctx, &m))
        }
        ("InterfacesHandler", name) => crate::interfaces::create(&r, name).await,
        ("InterfaceHandler", name) => crate::interfaces::item(&r, name).await,
        ("NodeScriptResultsHandler", _) => crate::scripts::read(&r, false).await,
        ("NodeScriptResultHandler", _) => crate::scripts::read(&r, true).await,
        ("BlockDevicesHandler", "create") => crate::blockdevs::create(&r).await,
        ("BlockDevicesHandler", _) => crate::blockdevs::list(&r).await,
        ("BlockDeviceHandler", name) => crate::blockdevs::item(&r, name).await,
        ("PartitionsHandler", name) => crate::blockdevs::partitions(&r, name).await,
        ("PartitionHandler", name) => crate::blockdevs::partition(&r, name).await,
        ("TagsHandler", "read") => {
            let tags = r.region.store().tag_list().await?;
            ok(Value::Array(tags.iter().map(render::tag).collect()))
        }
        ("TagsHandler", "create") => {
            r.admin()?;
            let p = &r.params;
            let name = p.get("name").ok_or_else(|| ApiError::required("name"))?;
            let t = r
                .region
                .store()
                .tag_create(
                    name,
                    p.get("comment").unwrap_or(""),
                    p.get("definition").unwrap_or(""),
                    p.get("kernel_opts").unwrap_or(""),
                )
                .await?;
            ok(render::tag(&t))
        }
        ("TagHandler", name) => {
            let tag = r.path("name").to_owned();
            let tags = r.region.store().tag_list().await?;
            let t = tags
                .iter()
                .find(|t| t.name == tag)
                .ok_or_else(|| ApiError::NotFound("No Tag matches the given query.".into()))?;
            match name {
                "read" => ok(render::tag(t)),
                "delete" => {
                    r.admin()?;
                    r.region.store().tag_delete(&tag).await?;
                    Ok(StatusCode::NO_CONTENT.into_response())
                }
                "nodes" | "machines" => {
                    let me = r.user();
                    let machines = r
                        .region
                        .store()
                        .machine_list(&MachineFilter {
                            tags: vec![tag.clone()],
                            visible_to: (!me.is_admin).then(|| me.username.clone()),
                            ..Default::default()
                        })
                        .await?;
                    let ctx = Ctx::load(r.region).await?;
                    ok(Value::Array(
                        machines.iter().map(|m| ctx.machine(m)).collect(),
                    ))
                }
                _ => {
                    r.admin()?;
                    let add = ids(&r.params.get_all("add"))?;
                    let remove = ids(&r.params.get_all("remove"))?;
                    r.region
                        .store()
                        .tag_update_machines(&tag, &add, &remove)
                        .await?;
                    ok(json!({"added": add.len(), "removed": remove.len()}))
                }
            }
        }
        ("ZonesHandler", "read") => {
            let zones = r.region.store().zone_list().await?;
            ok(Value::Array(zones.iter().map(render::zone).collect()))
        }
        ("ZonesHandler", "create") => {
            r.admin()?;
            let name = r
                .params
                .get("name")
                .ok_or_else(|| ApiError::required("name"))?;
            let z = r
                .region
                .store()
                .zone_create(name, r.params.get("description").unwrap_or(""))
                .await?;
            ok(render::zone(&z))
        }
        ("ZoneHandler", "read") => {
            let name = r.path("name");
            let zones = r.region.store().zone_list().await?;
            let z = zones
                .iter()
                .find(|z| z.name == name)
                .ok_or_else(|| ApiError::NotFound("No Zone matches the given query.".into()))?;
            ok(render::zone(z))
        }
        ("ZoneHandler", "update") => crate::netapi::zone_update(&r).await,
        ("ResourcePoolHandler", "update" | "delete") => {
            crate::netapi::pool_change(&r, op.name).await
        }
        ("FabricHandler", "delete") => crate::netapi::fabric_delete(&r).await,
        ("VlansHandler", "create") => crate::netapi::vlan_create(&r).await,
        ("VlanHandler", "update") => crate::netapi::vlan_update(&r).await,
        ("SubnetHandler", name) if name != "read" => crate::netapi::subnet_op(&r, name).await,
        ("IPRangeHandler", name) => crate::netapi::ip_range_op(&r, name).await,
        ("StaticRoutesHandler", name) => crate::netapi::static_routes(&r, false, name).await,
        ("StaticRouteHandler", name) => crate::netapi::static_routes(&r, true, name).await,
        ("SpaceHandler", name) => crate::netapi::space_op(&r, name).await,
        ("MachinesHandler", "is_registered") => {
            let mac = r
                .params
                .get("mac_address")
                .ok_or_else(|| ApiError::required("mac_address"))?;
            let mac = MacAddress::parse(mac)
                .map_err(|e| ApiError::invalid("mac_address", e.to_string()))?;
            let found = r.region.store().machine_get_by_mac(mac).await?;
            ok(json!(found.is_some()))
        }
        ("AccountHandler", "delete_authorisation_token") => {
            let key = r
                .params
                .get("token_key")
                .ok_or_else(|| ApiError::required("token_key"))?;
            let store = r.region.store();
            let t = store
                .token_list(r.user().id)
                .await?
                .into_iter()
                .find(|t| t.token_key == key)
                .ok_or_else(|| ApiError::NotFound(format!("No token {key:?} of yours.")))?;
            store.token_delete(t.id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        ("ZoneHandler", "delete") => {
            r.admin()?;
            r.region.store().zone_delete(r.path("name")).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        ("ResourcePoolsHandler", "read") => {
            let pools = r.region.store().pool_list().await?;
            ok(Value::Array(pools.iter().map(render::pool).collect()))
        }
        ("ResourcePoolsHandler", "create") => {
            r.admin()?;
            let name = r
                .params
                .get("name")
                .ok_or_else(|| ApiError::required("name"))?;
            let p = r
                .region
                .store()
                .pool_create(name, r.params.get("description").unwrap_or(""))
                .await?;
            ok(render::pool(&p))
        }
        ("ResourcePoolHandler", "read") => {
            let key = r.path("id");
            let pools = r.region.store().pool_list().await?;
            let p = pools
                .iter()
                .find(|p| p.id.0.to_string() == key || p.name == key)
                .ok_or_else(|| {
                    ApiError::NotFound("No ResourcePool matches the given query.".into())
                })?;
            ok(render::pool(p))
        }
        ("FabricsHandler", "read") => {
            let ctx = Ctx::load(r.region).await?;
            ok(Value::Array(
                ctx.fabrics().into_iter().map(|f| ctx.fabric(f)).collect(),
            ))
        }
        ("FabricsHandler", "create") => {
            r.admin()?;
            let name = r
                .params
                .get("name")
                .ok_or_else(|| ApiError::required("name"))?;
            r.region
                .store()
                .fabric_create(name, r.params.get("class_type"))
                .await?;
            let ctx = Ctx::load(r.region).await?;
            let f = ctx
                .fabrics()
                .into_iter()
                .find(|f| f.name == name)
                .ok_or_else(|| ApiError::Internal("the new fabric is missing".into()))?;
            ok(ctx.fabric(f))
        }
        ("SubnetsHandler", "create") => subnets_create(&r).await,
        ("FabricHandler", "read") => {
            let ctx = Ctx::load(r.region).await?;
            let key = r.path("id");
            let f = ctx
                .fabrics()
                .into_iter()
                .find(|f| f.id.0.to_string() == key || f.name == key)
                .ok_or_else(|| ApiError::NotFound("No Fabric matches the given query.".into()))?;
            ok(ctx.fabric(f))
        }
        ("VlansHandler", "read") => {
            let ctx = Ctx::load(r.region).await?;
            let fabric = int(r.path("fabric_id"), "fabric_id")?;
            ok(Value::Array(
                ctx.vlans_of(fabric)
                    .into_iter()
                    .map(|v| ctx.vlan(v))
                    .collect(),
            ))
        }
        ("VlanHandler", "read") => {
            let ctx = Ctx::load(r.region).await?;
            let fabric = int(r.path("fabric_id"), "fabric_id")?;
            let vid = int(r.path("vid"), "vid")?;
            let v = ctx
                .vlans_of(fabric)
                .into_iter()
                .find(|v| i64::from(v.vid) == vid)
                .ok_or_else(|| ApiError::NotFound("No VLAN matches the given query.".into()))?;
            ok(ctx.vlan(v))
        }
        ("SubnetsHandler", "read") => {
            let ctx = Ctx::load(r.region).await?;
            ok(Value::Array(
                ctx.subnets().into_iter().map(|s| ctx.subnet(s)).collect(),
            ))
        }
        ("SubnetHandler", "read") => {
            let ctx = Ctx::load(r.region).await?;
            let key = r.path("id");
            let s = key
                .parse::<i64>()
                .ok()
                .and_then(|id| ctx.subnet_by_id(id))
                .or_else(|| {
                    ctx.subnets()
                        .into_iter()
                        .find(|s| s.name == key || s.cidr.to_string() == key)
                })
                .ok_or_else(|| ApiError::NotFound("No Subnet matches the given query.".into()))?;
            ok(ctx.subnet(s))
        }
        ("IPRangesHandler", "read") => {
            let ctx = Ctx::load(r.region).await?;
            let ranges = r.region.store().subnet_ip_range_list(None).await?;
            ok(Value::Array(
                ranges.iter().map(|x| ctx.ip_range(x)).collect(),
            ))
        }
        ("IPRangesHandler", "create") => {
            r.admin()?;
            let p = &r.params;
            let kind = match p.get("type") {
                Some("dynamic") => maas_core::network::IpRangeType::Dynamic,
                Some("reserved") => maas_core::network::IpRangeType::Reserved,
                Some(other) => {
                    return Err(ApiError::invalid(
                        "type",
                        format!("{other:?} is not dynamic or reserved."),
                    ));
                }
                None => return Err(ApiError::required("type")),
            };
            let ip = |field: &str| -> Result<std::net::IpAddr, ApiError> {
                let v = p.get(field).ok_or_else(|| ApiError::required(field))?;
                v.parse()
                    .map_err(|e| ApiError::invalid(field, format!("{v:?}: {e}")))
            };
            let (start, end) = (ip("start_ip")?, ip("end_ip")?);
            let ctx = Ctx::load(r.region).await?;
            let subnet = match p.get("subnet") {
                Some(key) => ctx
                    .subnets()
                    .into_iter()
                    .find(|s| {
                        s.id.0.to_string() == key || s.cidr.to_string() == key || s.name == key
                    })
                    .map(|s| s.id)
                    .ok_or_else(|| ApiError::invalid("subnet", format!("No subnet {key:?}.")))?,
                None => ctx
                    .subnets()
                    .into_iter()
                    .find(|s| s.cidr.contains(&start))
                    .map(|s| s.id)
                    .ok_or_else(|| ApiError::invalid("start_ip", "no subnet contains it"))?,
            };
            let range = maas_core::network::IpRange {
                id: maas_core::IpRangeId(0),
                subnet,
                kind,
                start,
                end,
                comment: p.get("comment").unwrap_or("").to_owned(),
            };
            let made = r.region.store().subnet_ip_range_create(&range).await?;
            let ctx = Ctx::load(r.region).await?;
            ok(ctx.ip_range(&made))
        }
        ("SpacesHandler", "read") => {
            let spaces = r.region.store().space_list().await?;
            ok(Value::Array(spaces.iter().map(render::space).collect()))
        }
        ("SpacesHandler", "create") => {
            r.admin()?;
            let name = r
                .params
                .get("name")
                .ok_or_else(|| ApiError::required("name"))?;
            let s = r
                .region
                .store()
                .space_create(name, r.params.get("description").unwrap_or(""))
                .await?;
            ok(render::space(&s))
        }
        ("DomainsHandler", "read") => {
            let domains = r.region.store().domain_list().await?;
            let default = r.region.default_domain().await?;
            ok(Value::Array(
                domains
                    .iter()
                    .map(|d| render::domain(d, &default))
                    .collect(),
            ))
        }
        ("DomainHandler", name) => crate::netapi::domain_op(&r, name).await,
        ("DomainsHandler", "create") => {
            r.admin()?;
            let name = r
                .params
                .get("name")
                .ok_or_else(|| ApiError::required("name"))?;
            let d = r
                .region
                .store()
                .domain_create(name, r.params.flag("authoritative", true)?)
                .await?;
            ok(render::domain(&d, &r.region.default_domain().await?))
        }
        ("UsersHandler", "read") => {
            let me = r.user();
            let users = r.region.store().user_list().await?;
            ok(Value::Array(
                users
                    .iter()
                    .filter(|u| u.username != crate::NODE_USER)
                    .filter(|u| me.is_admin || u.id == me.id)
                    .map(render::user)
                    .collect(),
            ))
        }
        ("UsersHandler", "whoami") => ok(render::user(r.user())),
        ("UserHandler", "read") => {
            let me = r.user();
            let name = r.path("username");
            if !me.is_admin && me.username != name {
                return Err(ApiError::Forbidden(
                    "You do not have permission to view this user.".into(),
                ));
            }
            let u = r.region.store().user_get(name).await?;
            ok(render::user(&u))
        }
        ("EventsHandler", "query") => events_query(&r).await,
        ("MaasHandler", name) => crate::settings::run(&r, name).await,
        ("AccountHandler", "create_authorisation_token") => {
            let name = r.params.get("name").unwrap_or("MAAS consumer");
            let t = r.region.store().token_create(r.user().id, name).await?;
            ok(
                json!({"token_key": t.token_key, "token_secret": t.token_secret,
                      "consumer_key": t.consumer_key, "name": t.name}),
            )
        }
        ("AccountHandler", "list_authorisation_tokens") => {
            let tokens = r.region.store().token_list(r.user().id).await?;
            ok(Value::Array(
                tokens
                    .iter()
                    .map(|t| json!({"name": t.name, "token": t.api_key()}))
                    .collect(),
            ))
        }
        (res, name) => Err(ApiError::BadRequest(format!(
            "{res} has no operation {name}"
        ))),
    }
}

async fn subnets_create(r: &Req<'_>) -> Result<Response, ApiError> {
    r.admin()?;
    let p = &r.params;
    let cidr: ipnet::IpNet = p
        .get("cidr")
        .ok_or_else(|| ApiError::required("cidr"))?
        .parse()
        .map_err(|e| ApiError::invalid("cidr", format!("{e}")))?;
    let ctx = Ctx::load(r.region).await?;
    // The VLAN: by id, else the untagged VLAN of the named fabric, else of
    // the first fabric (made if there is none), as MAAS does.
    let vlan = if let Some(v) = p.get("vlan") {
        maas_core::VlanId(int(v, "vlan")?)
    } else {
        let fabric = match p.get("fabric") {
            Some(f) => ctx
                .fabrics()
                .into_iter()
                .find(|x| x.id.0.to_string() == f || x.name == f)
                .map(|x| x.id)
                .ok_or_else(|| ApiError::invalid("fabric", format!("No fabric {f:?}.")))?,
            None => match ctx.fabrics().first() {
                Some(f) => f.id,
                None => r.region.store().fabric_create("fabric-0", None).await?.0.id,
            },
        };
        r.region
            .store()
            .vlan_list(Some(fabric))
            .await?
            .into_iter()
            .find(|v| v.vid == 0)
            .map(|v| v.id)
            .ok_or_else(|| ApiError::invalid("fabric", "the fabric has no untagged VLAN"))?
    };
    let ip = |field: &str, v: &str| {
        v.parse::<std::net::IpAddr>()
            .map_err(|e| ApiError::invalid(field, format!("{v:?}: {e}")))
    };
    let subnet = maas_core::network::Subnet {
        id: maas_core::SubnetId(0),
        name: p
            .get("name")
            .map_or_else(|| cidr.to_string(), str::to_owned),
        cidr,
        vlan,
        gateway_ip: p
            .get("gateway_ip")
            .map(|g| ip("gateway_ip", g))
            .transpose()?,
        dns_servers: p
            .get_all("dns_servers")
            .iter()
            .flat_map(|s| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .map(|d| ip("dns_servers", &d))
            .collect::<Result<_, _>>()?,
        managed: p.flag("managed", true)?,
        allow_dns: p.flag("allow_dns", true)?,
        allow_proxy: p.flag("allow_proxy", true)?,
        active_discovery: p.flag("active_discovery", false)?,
        description: p.get("description").unwrap_or("").to_owned(),
    };
    let s = r.region.store().subnet_create(&subnet).await?;
    let ctx = Ctx::load(r.region).await?;
    ok(ctx.subnet(&s))
}

/// `events/?op=query`: newest first; filters `id` (system ids), `hostname`,
/// `level` (the minimum), `after` (an event id), `limit` (default 100, at
/// most 1000). Users see the events of the machines they can see.
async fn events_query(r: &Req<'_>) -> Result<Response, ApiError> {
    use maas_core::event::EventLevel;
    use maas_core::repo::EventFilter;
    let p = &r.params;
    let limit = match p.get("limit") {
        Some(l) => int(l, "limit")?.clamp(1, 1000) as u64,
        None => 100,
    };
    let after = p.get("after").map(|a| int(a, "after")).transpose()?;
    let level_rank = |l: EventLevel| l as u8;
    let min_level = match p.get("level").map(str::to_ascii_uppercase).as_deref() {
        None => EventLevel::Debug,
        Some("DEBUG") => EventLevel::Debug,
        Some("INFO") => EventLevel::Info,
        Some("WARNING") => EventLevel::Warning,
        Some("ERROR") => EventLevel::Error,
        Some("CRITICAL") => EventLevel::Critical,
        Some(other) => {
            return Err(ApiError::invalid(
                "level",
                format!("{other:?} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL."),
            ));
        }
    };
    let me = r.user();
    let store = r.region.store();
    let visible: Vec<Machine> = store
        .machine_list(&MachineFilter {
            visible_to: (!me.is_admin).then(|| me.username.clone()),
            ..Default::default()
        })
        .await?;
    let hostnames: std::collections::HashMap<SystemId, String> = visible
        .iter()
        .map(|m| (m.system_id.clone(), m.hostname.to_string()))
        .collect();
    let mut wanted: Vec<SystemId> = ids(&p.get_all("id"))?;
    for h in p.get_all("hostname") {
        wanted.extend(
            hostnames
                .iter()
                .filter(|(_, name)| **name == h)
                .map(|(id, _)| id.clone()),
        );
    }
    let filter = EventFilter {
        system_id: (wanted.len() == 1).then(|| wanted[0].clone()),
        after: after.map(maas_core::EventId),
        limit: None,
    };
    let events = store.event_list(&filter).await?;
    let shown: Vec<Value> = events
        .iter()
        .filter(|e| level_rank(e.event.level) >= level_rank(min_level))
        .filter(|e| match &e.event.system_id {
            Some(id) => hostnames.contains_key(id) && (wanted.is_empty() || wanted.contains(id)),
            None => me.is_admin && wanted.is_empty(),
        })
        .take(limit as usize)
        .map(|e| {
            json!({
                "id": e.id.0,
                "username": e.event.actor,
                "node": e.event.system_id.as_ref().map(ToString::to_string),
                "hostname": e.event.system_id.as_ref().and_then(|id| hostnames.get(id)),
                "level": e.event.level.as_str(),
                "created": e.created.format("%a, %d %b. %Y %H:%M:%S").to_string(),
                "type": e.event.kind,
                "description": e.event.message,
            })
        })
        .collect();
    ok(json!({
        "count": shown.len(),
        "events": shown,
        "next_uri": null,
        "prev_uri": null,
    }))
}

fn int(s: &str, field: &str) -> Result<i64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::invalid(field, format!("{s:?} is not a number.")))
}

fn ids(raw: &[String]) -> Result<Vec<SystemId>, ApiError> {
    raw.iter()
        .map(|s| SystemId::parse(s).map_err(|e| ApiError::invalid("id", e.to_string())))
        .collect()
}

fn status_by_name(name: &str) -> Option<NodeStatus> {
    NodeStatus::ALL
        .into_iter()
        .find(|s| s.name().eq_ignore_ascii_case(name))
}

async fn render_one(r: &Req<'_>, m: &Machine) -> Result<Response, ApiError> {
    let ctx = Ctx::load(r.region).await?;
    ok(ctx.machine(m))
}

async fn machines_read(r: &Req<'_>, allocated_only: bool) -> Result<Response, ApiError> {
    let p = &r.params;
    let me = r.user();
    let mut filter = MachineFilter {
        system_ids: ids(&[p.get_all("id"), p.get_all("system_id")].concat())?,
        hostnames: p.get_all("hostname"),
        zone: p.get("zone").map(str::to_owned),
        pool: p.get("pool").map(str::to_owned),
        tags: p.get_all("tags"),
        owner: p.get("owner").map(str::to_owned),
        ..Default::default()
    };
    for s in p.get_all("status") {
        filter.statuses.push(
            status_by_name(&s)
                .ok_or_else(|| ApiError::invalid("status", format!("Invalid status {s:?}.")))?,
        );
    }
    for mac in p.get_all("mac_address") {
        filter.macs.push(
            MacAddress::parse(&mac).map_err(|e| ApiError::invalid("mac_address", e.to_string()))?,
        );
    }
    if allocated_only {
        filter.owner = Some(me.username.clone());
        filter.statuses = vec![NodeStatus::Allocated];
    }
    if !me.is_admin {
        filter.visible_to = Some(me.username.clone());
    }
    let (resp, stats) = r.region.machine_list_response(&filter).await?;
    tracing::debug!(
        listed = stats.listed,
        rendered = stats.rendered,
        "machine list"
    );
    Ok(resp)
}

/// The machine a create or an enlistment describes: the architecture
/// (`arch/subarch`, or `arch` plus `subarchitecture`), the MACs (each an
/// `ethN`, the first one booting), the hostname (default `node-<system_id>`),
/// the power type (default `manual`) and its parameters.
fn machine_from_form(p: &Params) -> Result<Machine, ApiError> {
    let arch = p
        .get("architecture")
        .ok_or_else(|| ApiError::required("architecture"))?;
    let arch = match p.get("subarchitecture") {
        Some(sub) if !arch.contains('/') => format!("{arch}/{sub}"),
        _ => arch.to_owned(),
    };
    let architecture =
        Architecture::parse(&arch).map_err(|e| ApiError::invalid("architecture", e.to_string()))?;
    let macs = p.get_all("mac_addresses");
    if macs.is_empty() {
        return Err(ApiError::required("mac_addresses"));
    }
    let id = SystemId::random();
    let hostname = match p.get("hostname") {
        Some(h) => Hostname::parse(h).map_err(|e| ApiError::invalid("hostname", e.to_string()))?,
        None => {
            Hostname::parse(&format!("node-{id}")).map_err(|e| ApiError::Internal(e.to_string()))?
        }
    };
    let mut m = Machine::new(id, hostname, architecture, chrono::Utc::now());
    for (n, mac) in macs.iter().enumerate() {
        let mac = MacAddress::parse(mac)
            .map_err(|e| ApiError::invalid("mac_addresses", e.to_string()))?;
        m.interfaces
            .push(Interface::physical(format!("eth{n}"), mac));
    }
    m.boot_interface = Some("eth0".into());
    m.power_type = p.get("power_type").unwrap_or("manual").to_owned();
    m.power_parameters = power_parameters(p)?;
    Ok(m)
}

async fn machines_create(r: &Req<'_>) -> Result<Response, ApiError> {
    r.admin()?;
    let p = &r.params;
    let mut m = machine_from_form(p)?;
    m.domain = r.region.default_domain_name().await?;
    let id = m.system_id.clone();
    if let Some(d) = p.get("description") {
        m.description = d.to_owned();
    }
    if let Some(z) = p.get("zone") {
        m.zone = z.to_owned();
    }
    if let Some(pool) = p.get("pool") {
        m.pool = pool.to_owned();
    }
    let actor = r.actor();
    let store = r.region.store();
    let mut m = store.machine_create(&m, &actor).await?;
    if p.flag("commission", true)? {
        m = store
            .machine_perform(&id, Action::Commission, &actor, &ActionOptions::default())
            .await?;
        r.region
            .begin_run(&id, maas_core::script::RunKind::Commissioning)
            .await?;
        m = power_or_fail(r, &m, PowerRequest::Cycle, NodeStatus::FailedCommissioning).await?;
    }
    render_one(r, &m).await
}

/// Anonymous `POST machines/`: enlistment. A machine in New or
/// Commissioning that has one of the MACs is updated (its power settings);
/// otherwise a New machine is created. The answer is the anonymous view.
async fn machines_enlist(r: &Req<'_>) -> Result<Response, ApiError> {
    let p = &r.params;
    let mut new = machine_from_form(p)?;
    new.domain = r.region.default_domain_name().await?;
    let store = r.region.store();
    for mac in new.interfaces.iter().filter_map(|i| i.mac) {
        if let Some(mut m) = store.machine_get_by_mac(mac).await?
            && matches!(m.status, NodeStatus::New | NodeStatus::Commissioning)
        {
            if p.get("power_type").is_some() {
                m.power_type = new.power_type.clone();
            }
            if !new.power_parameters.0.is_empty() {
                m.power_parameters = new.power_parameters.clone();
            }
            let m = store.machine_update(&m).await?;
            return ok(anon_view(&m));
        }
    }
    let m = store.machine_create(&new, &Actor::System).await?;
    ok(anon_view(&m))
}

/// What an anonymous caller is told about a machine (MAAS's
/// `DISPLAYED_ANON_MACHINE_FIELDS`).
fn anon_view(m: &Machine) -> Value {
    let sid = m.system_id.to_string();
    json!({
        "system_id": sid,
        "hostname": m.hostname.to_string(),
        "domain": {"id": 0, "name": m.domain.to_string()},
        "fqdn": m.fqdn(),
        "architecture": m.architecture.to_string(),
        "status": m.status.code(),
        "status_name": m.status.label(),
        "status_action": null,
        "status_message": null,
        "power_type": m.power_type,
        "power_state": m.power_state.as_str(),
        "zone": {"name": m.zone, "resource_uri": format!("/MAAS/api/2.0/zones/{}/", m.zone)},
        "node_type": 0,
        "resource_uri": format!("/MAAS/api/2.0/machines/{sid}/"),
    })
}

/// `power_parameters` as a JSON object string (python-libmaas) or flattened
/// `power_parameters_<name>` fields (terraform, the CLI).
fn power_parameters(p: &Params) -> Result<PowerParameters, ApiError> {
    let mut out = std::collections::BTreeMap::new();
    if let Some(raw) = p.get("power_parameters") {
        let v: Value = serde_json::from_str(raw).map_err(|e| {
            ApiError::invalid("power_parameters", format!("not a JSON object: {e}"))
        })?;
        let obj = v
            .as_object()
            .ok_or_else(|| ApiError::invalid("power_parameters", "not a JSON object"))?;
        for (k, v) in obj {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.insert(k.clone(), s);
        }
    }
    for (k, v) in p.pairs() {
        if let Some(name) = k.strip_prefix("power_parameters_")
            && name != "skip_check"
        {
            out.insert(name.to_owned(), v.to_owned());
        }
    }
    Ok(PowerParameters(out))
}

/// Parameters of `op=allocate` that are options, not constraints.
const ALLOCATE_IGNORED: &[&str] = &[
    "comment",
    "bridge_all",
    "bridge_type",
    "bridge_stp",
    "bridge_fd",
    "agent_name",
];

async fn machines_allocate(r: &Req<'_>) -> Result<Response, ApiError> {
    let pairs = r
        .params
        .pairs()
        .filter(|(k, v)| !ALLOCATE_IGNORED.contains(k) && !v.is_empty());
    let req = AllocationRequest::from_params(pairs)
        .map_err(|e| ApiError::invalid(&e.field.clone(), e.to_string()))?;
    let allocation = r.region.store().machine_allocate(&req, &r.actor()).await?;
    let m = allocation.machine;
    if !allocation.dry_run {
        r.region.rotate_node_token(&m.system_id).await?;
    }
    let ctx = Ctx::load(r.region).await?;
    let mut v = ctx.machine(&m);
    v["constraints_by_type"] = json!({});
    ok(v)
}

async fn machines_release(r: &Req<'_>) -> Result<Response, ApiError> {
    let wanted = ids(&r.params.get_all("machines"))?;
    if wanted.is_empty() {
        return Err(ApiError::required("machines"));
    }
    let mut released = Vec::new();
    for id in wanted {
        let m = r
            .region
            .store()
            .machine_get(&id)
            .await
            .map_err(|e| match e {
                RepositoryError::NotFound { .. } => {
                    ApiError::BadRequest(format!("Unknown machine(s): {id}."))
                }
                other => other.into(),
            })?;
        if m.status == NodeStatus::Ready {
            continue;
        }
        let erase = r.params.flag("erase", r.region.erase_on_release().await?)?;
        r.region.release(&m, &r.actor(), erase).await?;
        released.push(id.to_string());
    }
    ok(json!(released))
}

impl Region {
    /// Starts a release; a machine whose power cannot be switched off by a
    /// BMC (manual, or none) completes it at once, as MAAS does.
    async fn release(&self, m: &Machine, actor: &Actor, erase: bool) -> Result<Machine, ApiError> {
        let id = &m.system_id;
        let store = self.store();
        store
            .machine_perform(
                id,
                Action::Release,
                actor,
                &ActionOptions {
                    erase,
                    comment: None,
                },
            )
            .await?;
        self.rotate_node_token(id).await?;
        self.forget_deployment(id).await?;
        let mut m = store.machine_get(id).await?;
        if m.status == NodeStatus::DiskErasing {
            // The ephemeral environment boots with the erase purpose, wipes
            // the disks and signals OK (-> Ready) or FAILED.
            if let Err(e) = self.power(&m, PowerRequest::Cycle).await {
                store
                    .machine_set_status(id, NodeStatus::FailedDiskErasing, &e.to_string())
                    .await?;
                return Err(e);
            }
            return Ok(store.machine_get(id).await?);
        }
        if m.status != NodeStatus::Releasing {
            return Ok(m);
        }
        match self.power(&m, PowerRequest::Off).await {
            Ok(state) => {
                let why = match state {
                    None => "released (manual power: nothing to switch off)",
                    Some(_) => "released and powered off",
                };
                m = store.machine_set_status(id, NodeStatus::Ready, why).await?;
            }
            Err(e) => {
                store
                    .machine_set_status(id, NodeStatus::FailedReleasing, &e.to_string())
                    .await?;
                return Err(e);
            }
        }
        Ok(m)
    }
}

/// `get_curtin_config`: the curtin YAML for the machine's deployment (its
/// series, or the default), rendered by maas-curtin after its checks; a
/// machine that cannot be deployed as it stands is a 400 naming why.
async fn curtin_config(r: &Req<'_>, m: &Machine) -> Result<Response, ApiError> {
    let yaml = r.region.curtin_yaml(m, r.headers).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], yaml).into_response())
}

impl Region {
    /// The curtin config `m` deploys with (also the curtin variant of the
    /// metadata service's user-data).
    pub(crate) async fn curtin_yaml(
        &self,
        m: &Machine,
        headers: &HeaderMap,
    ) -> Result<String, ApiError> {
        let store = self.store();
        let mut network = maas_curtin::NetworkInputs {
            subnets: store.subnet_list().await?,
            vlans: store.vlan_list(None).await?,
            ranges: store.subnet_ip_range_list(None).await?,
            search_domains: vec![m.domain.to_string()],
            ..Default::default()
        };
        network.routes = store
            .static_route_list()
            .await?
            .into_iter()
            .filter_map(|x| {
                let dst = network.subnets.iter().find(|s| s.id == x.destination)?;
                Some(maas_curtin::StaticRoute {
                    source: x.source,
                    destination: dst.cidr,
                    gateway: x.gateway_ip,
                    metric: x.metric,
                })
            })
            .collect();
        // The chosen default gateway's subnet (set_default_gateway).
        network.default_gateway = m.gateway_links.ipv4.and_then(|id| {
            m.interfaces
                .iter()
                .flat_map(|i| i.links.iter())
                .find(|l| l.id == Some(id))
                .and_then(|l| l.subnet)
        });
        for s in &network.subnets {
            network.assigned.extend(
                store
                    .subnet_address_list(s.id)
                    .await?
                    .into_iter()
                    .filter_map(|a| a.ip),
            );
        }
        let base = self.boot_base(headers);
        let endpoint = maas_curtin::MetadataEndpoint::new(&base)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let token = self.node_token(&m.system_id).await?;
        let credentials = maas_curtin::NodeCredentials::from(&token);
        let (osystem, series) = self.os_release(m);
        let arch = m.architecture.to_string();
        let (arch, sub) = arch.split_once('/').unwrap_or((arch.as_str(), "generic"));
        let image = maas_curtin::ImageSource {
            url: format!("{base}/images/{osystem}/{arch}/{sub}/{series}/stable/squashfs"),
            file_type: maas_curtin::ImageFileType::Squashfs,
        };
        let mut request = maas_curtin::DeployRequest::new(&series, image);
        request.osystem = osystem;
        request.layout = self.storage_layout(m).await?;
        let templates = maas_curtin::TemplateStore::builtin();
        let ctx = maas_curtin::DeployContext {
            machine: m,
            network: &network,
            endpoint: &endpoint,
            credentials: &credentials,
            templates: &templates,
        };
        let config = maas_curtin::render_curtin_config(&ctx, &request)
            .map_err(|e| ApiError::BadRequest(format!("cannot deploy {}: {e}", m.system_id)))?;
        Ok(config.yaml)
    }
}

/// Powers the machine through its rack; on failure the machine moves to
/// `failed` (with the error as the reason) and the caller gets a 503.
async fn power_or_fail(
    r: &Req<'_>,
    m: &Machine,
    request: PowerRequest,
    failed: NodeStatus,
) -> Result<Machine, ApiError> {
    let store = r.region.store();
    match r.region.power(m, request).await {
        Ok(_) => Ok(store.machine_get(&m.system_id).await?),
        Err(e) => {
            store
                .machine_set_status(&m.system_id, failed, &e.to_string())
                .await?;
            Err(e)
        }
    }
}

async fn machine_op(r: &Req<'_>, name: &str) -> Result<Response, ApiError> {
    let store = r.region.store();
    let actor = r.actor();
    let opts = ActionOptions {
        erase: r.params.flag("erase", r.region.erase_on_release().await?)?,
        comment: r.params.get("comment").map(str::to_owned),
    };
    let m = r.machine().await?;
    let id = m.system_id.clone();
    let perform = |action| store.machine_perform(&id, action, &actor, &opts);
    let m = match name {
        "deploy" => {
            // As MAAS: a machine deploys only linked to a network and with
            // a storage layout that fits its disks.
            if !m.interfaces.iter().any(|i| !i.links.is_empty()) {
                return Err(ApiError::invalid(
                    "network",
                    "Node must be configured to use a network",
                ));
            }
            let layout = r.region.storage_layout(&m).await?;
            layout
                .plan(&m)
                .and_then(|p| p.validate(&m))
                .map_err(|e| ApiError::invalid("storage", e.to_string()))?;
            let mut m = m;
            if m.status == NodeStatus::Ready {
                m = perform(Action::Acquire).await?;
                r.region.rotate_node_token(&id).await?;
            } else if m.owner.as_deref() != Some(&r.user().username) && !r.user().is_admin {
                return Err(ApiError::Conflict(format!(
                    "Machine {id} is allocated to another user."
                )));
            }
            let user_data = match r.params.get("user_data") {
                Some(b64) => Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64.trim())
                        .map_err(|e| ApiError::invalid("user_data", format!("not base64: {e}")))?,
                ),
                None => None,
            };
            let (default_os, default_series) = r.region.default_release().await?;
            let series = r.params.get("distro_series").unwrap_or(&default_series);
            let (osystem, series) = match series.split_once('/') {
                Some((o, s)) => (o.to_owned(), s.to_owned()),
                None => (
                    r.params
                        .get("osystem")
                        .map_or(default_os.clone(), str::to_owned),
                    series.to_owned(),
                ),
            };
            let _ = m;
            perform(Action::Deploy).await?;
            r.region
                .begin_run(&id, maas_core::script::RunKind::Installation)
                .await?;
            let m = r
                .region
                .remember_deployment(&id, osystem, series, user_data)
                .await?;
            power_or_fail(r, &m, PowerRequest::Cycle, NodeStatus::FailedDeployment).await?
        }
        "release" => {
            if m.status == NodeStatus::Ready || m.status == NodeStatus::Releasing {
                m
            } else {
                r.region.release(&m, &actor, opts.erase).await?
            }
        }
        "commission" => {
            r.admin()?;
            let m = perform(Action::Commission).await?;
            r.region
                .begin_run(&id, maas_core::script::RunKind::Commissioning)
                .await?;
            power_or_fail(r, &m, PowerRequest::Cycle, NodeStatus::FailedCommissioning).await?
        }
        "abort" => {
            let m = perform(Action::Abort).await?;
            if let Err(e) = r.region.power(&m, PowerRequest::Off).await {
                tracing::warn!(system_id = %id, error = %e, "power off after abort failed");
            }
            store.machine_get(&id).await?
        }
        "test" => {
            let m = perform(Action::Test).await?;
            r.region
                .begin_run(&id, maas_core::script::RunKind::Testing)
                .await?;
            power_or_fail(r, &m, PowerRequest::Cycle, NodeStatus::FailedTesting).await?
        }
        "rescue_mode" => {
            // The ephemeral environment boots with the rescue purpose and
            // signals OK once it is up (-> Rescue mode).
            let m = perform(Action::RescueMode).await?;
            power_or_fail(
                r,
                &m,
                PowerRequest::Cycle,
                NodeStatus::FailedEnteringRescueMode,
            )
            .await?
        }
        "exit_rescue_mode" => {
            let m = perform(Action::ExitRescueMode).await?;
            // Back to where it came from: a deployed machine boots its own
            // disk again, anything else is switched off.
            let back = m.previous_status.unwrap_or(NodeStatus::Ready);
            let power = if back == NodeStatus::Deployed {
                PowerRequest::Cycle
            } else {
                PowerRequest::Off
            };
            power_or_fail(r, &m, power, NodeStatus::FailedExitingRescueMode).await?;
            store
                .machine_set_status(&id, back, "exited rescue mode")
                .await?
        }
        "set_storage_layout" => crate::storage::set_layout(r, m).await?,
        "clear_default_gateways" => {
            let me = r.user();
            if !me.is_admin && m.owner.as_deref() != Some(me.username.as_str()) {
                return Err(ApiError::Forbidden(
                    "Only the machine's owner or an admin may change its gateways.".into(),
                ));
            }
            let mut m = m;
            m.gateway_links = maas_core::machine::GatewayLinks::default();
            store.machine_update(&m).await?
        }
        "set_owner_data" | "set_workload_annotations" => {
            let me = r.user();
            if m.owner.is_none() {
                return Err(ApiError::Conflict(format!(
                    "Cannot set {name} on {id}: it is not allocated to anyone."
                )));
            }
            if !me.is_admin && m.owner.as_deref() != Some(me.username.as_str()) {
                return Err(ApiError::Forbidden(
                    "Only the machine's owner or an admin may set this.".into(),
                ));
            }
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
        "mark_broken" => {
            let mut opts = opts.clone();
            if opts.comment.is_none() {
                opts.comment = r.params.get("error_description").map(str::to_owned);
            }
            store
                .machine_perform(&id, Action::MarkBroken, &actor, &opts)
                .await?
        }
        "mark_fixed" => {
            r.admin()?;
            perform(Action::MarkFixed).await?
        }
        "lock" => perform(Action::Lock).await?,
        "unlock" => perform(Action::Unlock).await?,
        "power_on" => {
            if m.owner.is_none() {
                return Err(ApiError::Conflict(
                    "Can't start node: it hasn't been allocated.".into(),
                ));
            }
            let m = perform(Action::On).await?;
            r.region.power(&m, PowerRequest::On).await?;
            store.machine_get(&id).await?
        }
        "power_off" => {
            let m = perform(Action::Off).await?;
            r.region.power(&m, PowerRequest::Off).await?;
            store.machine_get(&id).await?
        }
        "query_power_state" => {
            let state = r
                .region
                .power(&m, PowerRequest::Query)
                .await?
                .unwrap_or(m.power_state);
            return ok(json!({"state": state.as_str()}));
        }
        "get_curtin_config" => return curtin_config(r, &m).await,
        "get_token" => {
            r.admin()?;
            let t = r.region.node_token(&id).await?;
            return ok(
                json!({"token_key": t.token_key, "token_secret": t.token_secret,
                             "consumer_key": t.consumer_key}),
            );
        }
        "power_parameters" => {
            r.admin()?;
            return ok(json!(m.power_parameters.0));
        }
        "update" => {
            r.admin()?;
            let mut m = m;
            let p = &r.params;
            if let Some(h) = p.get("hostname") {
                m.hostname =
                    Hostname::parse(h).map_err(|e| ApiError::invalid("hostname", e.to_string()))?;
            }
            if let Some(d) = p.get("description") {
                m.description = d.to_owned();
            }
            if let Some(z) = p.get("zone") {
                m.zone = z.to_owned();
            }
            if let Some(pool) = p.get("pool") {
                m.pool = pool.to_owned();
            }
            if let Some(t) = p.get("power_type") {
                m.power_type = t.to_owned();
            }
            let pp = power_parameters(p)?;
            if !pp.0.is_empty() {
                m.power_parameters = pp;
            }
            store.machine_update(&m).await?
        }
        "delete" => {
            r.admin()?;
            store.machine_delete(&id, &actor).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "MachineHandler has no operation {other}"
            )));
        }
    };
    render_one(r, &m).await
}
