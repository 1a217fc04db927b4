//! The item operations of zones, resource pools, fabrics, VLANs, subnets,
//! IP ranges and spaces (sections 6.6-6.11 of the spec) beyond read and
//! create, which `api` serves.

use std::net::IpAddr;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maas_core::network::IpAddressType;
use maas_core::network::{Subnet, Vlan, subnet_statistics, unreserved_ranges};
use maas_core::{FabricId, IpRangeId, SpaceId, VlanId};
use serde_json::{Value, json};

use crate::api::{Req, ok};
use crate::error::ApiError;
use crate::render::{self, Ctx};

fn no_content() -> Result<Response, ApiError> {
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn number(v: &str, field: &str) -> Result<i64, ApiError> {
    v.parse()
        .map_err(|_| ApiError::invalid(field, format!("{v:?} is not a number.")))
}

/// `PUT zones/{name}/`.
pub(crate) async fn zone_update(r: &Req<'_>) -> Result<Response, ApiError> {
    r.admin()?;
    let z = r
        .region
        .store()
        .zone_update(
            r.path("name"),
            r.params.get("name"),
            r.params
                .pairs()
                .find(|(k, _)| *k == "description")
                .map(|(_, v)| v),
        )
        .await?;
    ok(render::zone(&z))
}

/// The pool `resourcepool/{id}/` names (by id or name).
async fn pool(r: &Req<'_>) -> Result<maas_core::org::ResourcePool, ApiError> {
    let key = r.path("id");
    r.region
        .store()
        .pool_list()
        .await?
        .into_iter()
        .find(|p| p.id.0.to_string() == key || p.name == key)
        .ok_or_else(|| ApiError::NotFound("No ResourcePool matches the given query.".into()))
}

/// `PUT` and `DELETE resourcepool/{id}/`.
pub(crate) async fn pool_change(r: &Req<'_>, op: &str) -> Result<Response, ApiError> {
    r.admin()?;
    let p = pool(r).await?;
    let store = r.region.store();
    if op == "delete" {
        store.pool_delete(&p.name).await?;
        return no_content();
    }
    let p = store
        .pool_update(
            &p.name,
            r.params.get("name"),
            r.params
                .pairs()
                .find(|(k, _)| *k == "description")
                .map(|(_, v)| v),
        )
        .await?;
    ok(render::pool(&p))
}

/// `DELETE fabrics/{id}/`.
pub(crate) async fn fabric_delete(r: &Req<'_>) -> Result<Response, ApiError> {
    r.admin()?;
    let id = number(r.path("id"), "id")?;
    r.region.store().fabric_delete(FabricId(id)).await?;
    no_content()
}

/// `POST fabrics/{fabric_id}/vlans/`: a tagged VLAN.
pub(crate) async fn vlan_create(r: &Req<'_>) -> Result<Response, ApiError> {
    r.admin()?;
    let fabric = number(r.path("fabric_id"), "fabric_id")?;
    let vid = r
        .params
        .get("vid")
        .ok_or_else(|| ApiError::required("vid"))?;
    let vid = u16::try_from(number(vid, "vid")?)
        .ok()
        .filter(|v| (1..=4094).contains(v))
        .ok_or_else(|| ApiError::invalid("vid", format!("{vid} is not a VLAN tag (1 to 4094).")))?;
    let mtu = match r.params.get("mtu") {
        Some(m) => u32::try_from(number(m, "mtu")?)
            .map_err(|_| ApiError::invalid("mtu", format!("{m} is not an MTU.")))?,
        None => maas_core::network::DEFAULT_MTU,
    };
    let v = Vlan {
        id: VlanId(0),
        fabric: FabricId(fabric),
        vid,
        name: r.params.get("name").map(str::to_owned),
        mtu,
        dhcp_on: false,
        primary_rack: None,
        secondary_rack: None,
        relay_vlan: None,
        space: None,
        description: r.params.get("description").unwrap_or("").to_owned(),
    };
    let made = r.region.store().vlan_create(&v).await?;
    let ctx = Ctx::load(r.region).await?;
    ok(ctx.vlan(&made))
}

/// `PUT fabrics/{fabric_id}/vlans/{vid}/`: MAAS's VLAN settings, DHCP
/// among them (`dhcp_on` needs a primary rack, and a dynamic range on one
/// of the VLAN's subnets, as MAAS requires).
pub(crate) async fn vlan_update(r: &Req<'_>) -> Result<Response, ApiError> {
    r.admin()?;
    let fabric = number(r.path("fabric_id"), "fabric_id")?;
    let vid = number(r.path("vid"), "vid")?;
    let store = r.region.store();
    let mut v = store
        .vlan_list(Some(FabricId(fabric)))
        .await?
        .into_iter()
        .find(|v| i64::from(v.vid) == vid)
        .ok_or_else(|| ApiError::NotFound("No VLAN matches the given query.".into()))?;
    let p = &r.params;
    if let Some(n) = p.get("name") {
        v.name = Some(n.to_owned());
    }
    if let Some(d) = p.pairs().find(|(k, _)| *k == "description").map(|(_, v)| v) {
        v.description = d.to_owned();
    }
    if let Some(m) = p.get("mtu") {
        v.mtu = u32::try_from(number(m, "mtu")?)
            .map_err(|_| ApiError::invalid("mtu", format!("{m} is not an MTU.")))?;
    }
    for (field, slot) in [
        ("primary_rack", &mut v.primary_rack),
        ("secondary_rack", &mut v.secondary_rack),
    ] {
        if let Some((_, val)) = p.pairs().find(|(k, _)| *k == field) {
            *slot = (!val.is_empty()).then(|| val.to_owned());
        }
    }
    if let Some((_, relay)) = p.pairs().find(|(k, _)| *k == "relay_vlan") {
        v.relay_vlan = if relay.is_empty() {
            None
        } else {
            let id = VlanId(number(relay, "relay_vlan")?);
            store.vlan_get(id).await.map_err(|_| {
                ApiError::invalid("relay_vlan", format!("No VLAN with id {}.", id.0))
            })?;
            Some(id)
        };
    }
    if p.get("dhcp_on").is_some() {
        v.dhcp_on = p.flag("dhcp_on", false)?;
    }
    if v.dhcp_on {
        if v.primary_rack.is_none() && v.relay_vlan.is_none() {
            return Err(ApiError::invalid(
                "dhcp_on",
                "DHCP needs a primary rack controller (primary_rack).",
            ));
        }
        let subnets: Vec<Subnet> = store
            .subnet_list()
            .await?
            .into_iter()
            .filter(|s| s.vlan == v.id)
            .collect();
        let ranges = store.subnet_ip_range_list(None).await?;
        let dynamic = ranges.iter().any(|x| {
            x.kind == maas_core::network::IpRangeType::Dynamic
                && subnets.iter().any(|s| s.id == x.subnet)
        });
        if v.relay_vlan.is_none() && !dynamic {
            return Err(ApiError::invalid(
                "dhcp_on",
                "DHCP needs a dynamic IP range on one of the VLAN's subnets.",
            ));
        }
    }
    let saved = store.vlan_update(&v).await?;
    let ctx = Ctx::load(r.region).await?;
    ok(ctx.vlan(&saved))
}

/// The subnet `subnets/{id}/` names (id, CIDR or name).
async fn subnet(r: &Req<'_>) -> Result<Subnet, ApiError> {
    let key = r.path("id");
    r.region
        .store()
        .subnet_list()
        .await?
        .into_iter()
        .find(|s| s.id.0.to_string() == key || s.cidr.to_string() == key || s.name == key)
        .ok_or_else(|| ApiError::NotFound("No Subnet matches the given query.".into()))
}

/// The subnet's ranges and assigned addresses.
async fn usage(
    r: &Req<'_>,
    s: &Subnet,
) -> Result<
    (
        Vec<maas_core::network::IpRange>,
        Vec<maas_core::network::StaticAddress>,
    ),
    ApiError,
> {
    let store = r.region.store();
    Ok((
        store.subnet_ip_range_list(Some(s.id)).await?,
        store.subnet_address_list(s.id).await?,
    ))
}

fn range_json(first: IpAddr, last: IpAddr, purpose: Option<&str>) -> Value {
    let size = match (first, last) {
        (IpAddr::V4(a), IpAddr::V4(b)) => u128::from(u32::from(b)) - u128::from(u32::from(a)) + 1,
        (IpAddr::V6(a), IpAddr::V6(b)) => u128::from(b) - u128::from(a) + 1,
        _ => 0,
    };
    let mut v = json!({
        "start": first.to_string(),
        "end": last.to_string(),
        "num_addresses": u64::try_from(size).unwrap_or(u64::MAX),
    });
    if let Some(p) = purpose {
        v["purpose"] = json!([p]);
    }
    v
}

/// `subnets/{id}/`: update, delete and the read operations.
pub(crate) async fn subnet_op(r: &Req<'_>, op: &str) -> Result<Response, ApiError> {
    let s = subnet(r).await?;
    let store = r.region.store();
    match op {
        "delete" => {
            r.admin()?;
            store.subnet_delete(s.id).await?;
            no_content()
        }
        "update" => {
            r.admin()?;
            let p = &r.params;
            let mut s = s;
            if let Some(n) = p.get("name") {
                n.clone_into(&mut s.name);
            }
            if let Some((_, d)) = p.pairs().find(|(k, _)| *k == "description") {
                d.clone_into(&mut s.description);
            }
            if let Some((_, g)) = p.pairs().find(|(k, _)| *k == "gateway_ip") {
                s.gateway_ip = if g.is_empty() {
                    None
                } else {
                    Some(
                        g.parse()
                            .map_err(|e| ApiError::invalid("gateway_ip", format!("{g:?}: {e}")))?,
                    )
                };
            }
            if p.pairs().any(|(k, _)| k == "dns_servers") {
                s.dns_servers = p
                    .get_all("dns_servers")
                    .iter()
                    .flat_map(|d| d.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                    .map(|d| {
                        d.parse()
                            .map_err(|e| ApiError::invalid("dns_servers", format!("{d:?}: {e}")))
                    })
                    .collect::<Result<_, _>>()?;
            }
            s.managed = p.flag("managed", s.managed)?;
            s.allow_dns = p.flag("allow_dns", s.allow_dns)?;
            s.allow_proxy = p.flag("allow_proxy", s.allow_proxy)?;
            s.active_discovery = p.flag("active_discovery", s.active_discovery)?;
            if let Some(v) = p.get("vlan") {
                let id = VlanId(number(v, "vlan")?);
                store
                    .vlan_get(id)
                    .await
                    .map_err(|_| ApiError::invalid("vlan", format!("No VLAN with id {}.", id.0)))?;
                s.vlan = id;
            }
            s.validate()
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            let saved = store.subnet_update(&s).await?;
            let ctx = Ctx::load(r.region).await?;
            ok(ctx.subnet(&saved))
        }
        "statistics" => {
            let (ranges, addrs) = usage(r, &s).await?;
            let assigned: Vec<IpAddr> = addrs.iter().filter_map(|a| a.ip).collect();
            let st = subnet_statistics(&s, &ranges, &assigned);
            let free = unreserved_ranges(&s, &ranges, &assigned);
            let largest = free
                .iter()
                .map(|(a, b)| {
                    range_json(*a, *b, None)["num_addresses"]
                        .as_u64()
                        .unwrap_or(0)
                })
                .max()
                .unwrap_or(0);
            let mut v = json!({
                "num_available": u64::try_from(st.num_available).unwrap_or(u64::MAX),
                "largest_available": largest,
                "num_unavailable": u64::try_from(st.num_unavailable).unwrap_or(u64::MAX),
                "total_addresses": u64::try_from(st.total_addresses).unwrap_or(u64::MAX),
                "usage": st.usage,
                "usage_string": format!("{:.0}%", st.usage * 100.0),
                "available_string": format!("{:.0}%", (1.0 - st.usage) * 100.0),
                "first_address": s.cidr.network().to_string(),
                "last_address": s.cidr.broadcast().to_string(),
                "ip_version": if s.cidr.addr().is_ipv4() { 4 } else { 6 },
            });
            if r.params.flag("include_ranges", false)? {
                v["ranges"] = Value::Array(
                    free.iter()
                        .map(|(a, b)| range_json(*a, *b, Some("unused")))
                        .collect(),
                );
            }
            ok(v)
        }
        "unreserved_ip_ranges" => {
            let (ranges, addrs) = usage(r, &s).await?;
            let assigned: Vec<IpAddr> = addrs.iter().filter_map(|a| a.ip).collect();
            ok(Value::Array(
                unreserved_ranges(&s, &ranges, &assigned)
                    .into_iter()
                    .map(|(a, b)| range_json(a, b, None))
                    .collect(),
            ))
        }
        "reserved_ip_ranges" => {
            let (ranges, addrs) = usage(r, &s).await?;
            let mut out: Vec<Value> = ranges
                .iter()
                .map(|x| range_json(x.start, x.end, Some(x.kind.as_str())))
                .collect();
            out.extend(
                addrs
                    .iter()
                    .filter_map(|a| a.ip)
                    .map(|ip| range_json(ip, ip, Some("assigned-ip"))),
            );
            if let Some(g) = s.gateway_ip {
                out.push(range_json(g, g, Some("gateway-ip")));
            }
            ok(Value::Array(out))
        }
        "ip_addresses" => {
            let (_, addrs) = usage(r, &s).await?;
            ok(Value::Array(
                addrs
                    .iter()
                    .filter_map(|a| {
                        a.ip.map(|ip| {
                            json!({
                                "ip": ip.to_string(),
                                // MAAS's IPADDRESS_TYPE numbers.
                                "alloc_type": match a.alloc_type {
                                    IpAddressType::Auto => 0,
                                    IpAddressType::Sticky => 1,
                                    IpAddressType::UserReserved => 4,
                                    IpAddressType::Dhcp => 5,
                                    IpAddressType::Discovered => 6,
                                },
                                "alloc_type_name": a.alloc_type.as_str(),
                                "created": null,
                                "updated": null,
                                "node_summary": a.hostname.as_ref().map(|h| json!({"hostname": h})),
                            })
                        })
                    })
                    .collect(),
            ))
        }
        other => Err(ApiError::BadRequest(format!(
            "SubnetHandler has no operation {other}"
        ))),
    }
}

/// `ipranges/{id}/`: read and delete.
pub(crate) async fn ip_range_op(r: &Req<'_>, op: &str) -> Result<Response, ApiError> {
    let id = number(r.path("id"), "id")?;
    let store = r.region.store();
    let x = store
        .subnet_ip_range_list(None)
        .await?
        .into_iter()
        .find(|x| x.id.0 == id)
        .ok_or_else(|| ApiError::NotFound("No IPRange matches the given query.".into()))?;
    if op == "delete" {
        r.admin()?;
        store.subnet_ip_range_delete(IpRangeId(id)).await?;
        return no_content();
    }
    let ctx = Ctx::load(r.region).await?;
    ok(ctx.ip_range(&x))
}

/// `spaces/{id}/`: read and delete.
pub(crate) async fn space_op(r: &Req<'_>, op: &str) -> Result<Response, ApiError> {
    let key = r.path("id");
    let store = r.region.store();
    let s = store
        .space_list()
        .await?
        .into_iter()
        .find(|s| s.id.0.to_string() == key || s.name == key)
        .ok_or_else(|| ApiError::NotFound("No Space matches the given query.".into()))?;
    if op == "delete" {
        r.admin()?;
        store.space_delete(SpaceId(s.id.0)).await?;
        return no_content();
    }
    ok(render::space(&s))
}

/// `domains/{id}/`: read, update (name, authoritative, ttl), delete,
/// `set_default`.
pub(crate) async fn domain_op(r: &Req<'_>, op: &str) -> Result<Response, ApiError> {
    let key = r.path("id");
    let store = r.region.store();
    let d = store
        .domain_list()
        .await?
        .into_iter()
        .find(|d| d.id.0.to_string() == key || d.name == key)
        .ok_or_else(|| ApiError::NotFound("No Domain matches the given query.".into()))?;
    let default = r.region.default_domain().await?;
    match op {
        "read" => ok(render::domain(&d, &default)),
        "update" => {
            r.admin()?;
            let p = &r.params;
            let ttl = match p.pairs().find(|(k, _)| *k == "ttl") {
                None => None,
                Some((_, "")) => Some(None),
                Some((_, t)) => {
                    Some(Some(u32::try_from(number(t, "ttl")?).map_err(|_| {
                        ApiError::invalid("ttl", format!("{t} is not a TTL."))
                    })?))
                }
            };
            let authoritative = match p.get("authoritative") {
                Some(_) => Some(p.flag("authoritative", true)?),
                None => None,
            };
            let new_name = p.get("name");
            let saved = store
                .domain_update(&d.name, new_name, authoritative, ttl)
                .await?;
            if d.name == default && saved.name != default {
                store
                    .config_set(
                        crate::settings::DEFAULT_DOMAIN_KEY,
                        &json!(saved.name).to_string(),
                    )
                    .await?;
            }
            ok(render::domain(&saved, &r.region.default_domain().await?))
        }
        "delete" => {
            r.admin()?;
            if d.name == default {
                return Err(ApiError::Conflict(format!(
                    "{} is the default domain; make another the default first.",
                    d.name
                )));
            }
            store.domain_delete(&d.name).await?;
            no_content()
        }
        "set_default" => {
            r.admin()?;
            store
                .config_set(
                    crate::settings::DEFAULT_DOMAIN_KEY,
                    &json!(d.name).to_string(),
                )
                .await?;
            ok(render::domain(&d, &d.name))
        }
        other => Err(ApiError::BadRequest(format!(
            "DomainHandler has no operation {other}"
        ))),
    }
}

fn route_json(ctx: &Ctx, r: &maas_core::network::StaticRoute) -> Value {
    let subnet = |id: maas_core::SubnetId| ctx.subnet_by_id(id.0).map(|s| ctx.subnet(s));
    json!({
        "id": r.id.0,
        "source": subnet(r.source),
        "destination": subnet(r.destination),
        "gateway_ip": r.gateway_ip.to_string(),
        "metric": r.metric,
        "resource_uri": format!("/MAAS/api/2.0/static-routes/{}/", r.id.0),
    })
}

/// The route a create or update describes (`source`, `destination`: subnet
/// ids, CIDRs or names; `gateway_ip`; `metric`, default 0).
async fn route_from_params(
    r: &Req<'_>,
    base: Option<maas_core::network::StaticRoute>,
) -> Result<maas_core::network::StaticRoute, ApiError> {
    let subnets = r.region.store().subnet_list().await?;
    let find = |field: &str| -> Result<Option<maas_core::SubnetId>, ApiError> {
        match r.params.get(field) {
            None => Ok(None),
            Some(key) => subnets
                .iter()
                .find(|s| s.id.0.to_string() == key || s.cidr.to_string() == key || s.name == key)
                .map(|s| Some(s.id))
                .ok_or_else(|| ApiError::invalid(field, format!("No subnet {key:?}."))),
        }
    };
    let source = find("source")?;
    let destination = find("destination")?;
    let gateway = r
        .params
        .get("gateway_ip")
        .map(|g| {
            g.parse::<IpAddr>()
                .map_err(|e| ApiError::invalid("gateway_ip", format!("{g:?}: {e}")))
        })
        .transpose()?;
    let metric = r
        .params
        .get("metric")
        .map(|m| {
            u32::try_from(number(m, "metric")?)
                .map_err(|_| ApiError::invalid("metric", format!("{m} is not a metric.")))
        })
        .transpose()?;
    Ok(match base {
        Some(mut b) => {
            if let Some(s) = source {
                b.source = s;
            }
            if let Some(d) = destination {
                b.destination = d;
            }
            if let Some(g) = gateway {
                b.gateway_ip = g;
            }
            if let Some(m) = metric {
                b.metric = m;
            }
            b
        }
        None => maas_core::network::StaticRoute {
            id: maas_core::ids::StaticRouteId(0),
            source: source.ok_or_else(|| ApiError::required("source"))?,
            destination: destination.ok_or_else(|| ApiError::required("destination"))?,
            gateway_ip: gateway.ok_or_else(|| ApiError::required("gateway_ip"))?,
            metric: metric.unwrap_or(0),
        },
    })
}

/// `static-routes/` and `static-routes/{id}/`.
pub(crate) async fn static_routes(r: &Req<'_>, item: bool, op: &str) -> Result<Response, ApiError> {
    let store = r.region.store();
    if !item {
        if op == "create" {
            r.admin()?;
            let route = route_from_params(r, None).await?;
            let made = store.static_route_create(&route).await?;
            let ctx = Ctx::load(r.region).await?;
            return ok(route_json(&ctx, &made));
        }
        let ctx = Ctx::load(r.region).await?;
        return ok(Value::Array(
            store
                .static_route_list()
                .await?
                .iter()
                .map(|x| route_json(&ctx, x))
                .collect(),
        ));
    }
    let id = number(r.path("id"), "id")?;
    let route = store
        .static_route_list()
        .await?
        .into_iter()
        .find(|x| x.id.0 == id)
        .ok_or_else(|| ApiError::NotFound("No StaticRoute matches the given query.".into()))?;
    let route = match op {
        "read" => route,
        "delete" => {
            r.admin()?;
            store.static_route_delete(route.id).await?;
            return no_content();
        }
        _ => {
            r.admin()?;
            let changed = route_from_params(r, Some(route)).await?;
            store.static_route_update(&changed).await?
        }
    };
    let ctx = Ctx::load(r.region).await?;
    ok(route_json(&ctx, &route))
}
