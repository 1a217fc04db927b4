//! Fabrics, VLANs, subnets, IP ranges, spaces and assigned addresses.

use std::net::IpAddr;

use async_trait::async_trait;
use chrono::Utc;
use maas_core::ids::*;
use maas_core::network::{
    Fabric, IpAddressType, IpRange, IpRangeType, IpamError, Space, StaticAddress, StaticRoute,
    Subnet, Vlan, check_static_address, next_free_address, validate_ip_range,
};
use maas_core::org::validate_name;
use maas_core::repo::{NetworkRepository, RepoResult, RepositoryError};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::convert::{corrupt, json, parse, to_json};
use crate::entity::{fabric, interface, ip_address, ip_range, space, static_route, subnet, vlan};
use crate::{SqlStore, db_err, is_unique_violation, unique_as};

/// Attempts at picking a free address before giving up (each failure means
/// a concurrent caller took the address we picked).
const ADDRESS_ATTEMPTS: usize = 32;

fn fabric_from(r: fabric::Model) -> Fabric {
    Fabric {
        id: FabricId(r.id),
        name: r.name,
        class_type: r.class_type,
        description: r.description,
    }
}

fn vlan_from(r: vlan::Model) -> RepoResult<Vlan> {
    Ok(Vlan {
        id: VlanId(r.id),
        fabric: FabricId(r.fabric_id),
        vid: u16::try_from(r.vid).map_err(|e| corrupt("vlan", r.id, e))?,
        name: r.name,
        mtu: u32::try_from(r.mtu).map_err(|e| corrupt("vlan", r.id, e))?,
        dhcp_on: r.dhcp_on,
        primary_rack: r.primary_rack,
        secondary_rack: r.secondary_rack,
        relay_vlan: r.relay_vlan_id.map(VlanId),
        space: r.space_id.map(SpaceId),
        description: r.description,
    })
}

fn vlan_to(v: &Vlan) -> vlan::ActiveModel {
    vlan::ActiveModel {
        id: NotSet,
        fabric_id: Set(v.fabric.0),
        vid: Set(i32::from(v.vid)),
        name: Set(v.name.clone()),
        mtu: Set(i32::try_from(v.mtu).unwrap_or(i32::MAX)),
        dhcp_on: Set(v.dhcp_on),
        primary_rack: Set(v.primary_rack.clone()),
        secondary_rack: Set(v.secondary_rack.clone()),
        relay_vlan_id: Set(v.relay_vlan.map(|x| x.0)),
        space_id: Set(v.space.map(|x| x.0)),
        description: Set(v.description.clone()),
    }
}

fn subnet_from(r: subnet::Model) -> RepoResult<Subnet> {
    let t = "subnet";
    Ok(Subnet {
        id: SubnetId(r.id),
        cidr: parse(t, r.id, &r.cidr)?,
        vlan: VlanId(r.vlan_id),
        gateway_ip: r
            .gateway_ip
            .as_deref()
            .map(|g| parse(t, r.id, g))
            .transpose()?,
        dns_servers: json(t, r.id, &r.dns_servers)?,
        name: r.name,
        managed: r.managed,
        allow_dns: r.allow_dns,
        allow_proxy: r.allow_proxy,
        active_discovery: r.active_discovery,
        description: r.description,
    })
}

fn subnet_to(s: &Subnet) -> subnet::ActiveModel {
    let name = if s.name.is_empty() {
        s.cidr.to_string()
    } else {
        s.name.clone()
    };
    subnet::ActiveModel {
        id: NotSet,
        name: Set(name),
        cidr: Set(s.cidr.to_string()),
        vlan_id: Set(s.vlan.0),
        gateway_ip: Set(s.gateway_ip.map(|g| g.to_string())),
        dns_servers: Set(to_json(&s.dns_servers)),
        managed: Set(s.managed),
        allow_dns: Set(s.allow_dns),
        allow_proxy: Set(s.allow_proxy),
        active_discovery: Set(s.active_discovery),
        description: Set(s.description.clone()),
    }
}

fn range_from(r: ip_range::Model) -> RepoResult<IpRange> {
    let t = "ip_range";
    Ok(IpRange {
        id: IpRangeId(r.id),
        subnet: SubnetId(r.subnet_id),
        kind: parse::<IpRangeType>(t, r.id, &r.kind)?,
        start: parse(t, r.id, &r.start_ip)?,
        end: parse(t, r.id, &r.end_ip)?,
        comment: r.comment,
    })
}

fn route_from(r: static_route::Model) -> RepoResult<StaticRoute> {
    let t = "static_route";
    Ok(StaticRoute {
        id: StaticRouteId(r.id),
        source: SubnetId(r.source_id),
        destination: SubnetId(r.destination_id),
        gateway_ip: parse(t, r.id, &r.gateway_ip)?,
        metric: u32::try_from(r.metric).map_err(|e| corrupt(t, r.id, e))?,
    })
}

fn address_from(r: ip_address::Model) -> RepoResult<StaticAddress> {
    let t = "ip_address";
    Ok(StaticAddress {
        id: StaticAddressId(r.id),
        subnet: SubnetId(r.subnet_id.ok_or_else(|| corrupt(t, r.id, "no subnet"))?),
        ip: r.ip.as_deref().map(|s| parse(t, r.id, s)).transpose()?,
        alloc_type: parse(t, r.id, &r.alloc_type)?,
        interface: r.interface_id.map(InterfaceId),
        hostname: r.hostname,
    })
}

impl SqlStore {
    async fn assigned_ips(&self, subnet: SubnetId) -> RepoResult<Vec<IpAddr>> {
        let ips: Vec<Option<String>> = ip_address::Entity::find()
            .select_only()
            .column(ip_address::Column::Ip)
            .filter(ip_address::Column::SubnetId.eq(subnet.0))
            .filter(ip_address::Column::Ip.is_not_null())
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(db_err)?;
        ips.into_iter()
            .flatten()
            .map(|s| s.parse().map_err(|e| corrupt("ip_address", subnet.0, e)))
            .collect()
    }

    async fn check_vlan(&self, v: &Vlan) -> RepoResult<()> {
        v.validate()?;
        if let Some(relay) = v.relay_vlan {
            self.vlan_get(relay).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl NetworkRepository for SqlStore {
    async fn fabric_create(
        &self,
        name: &str,
        class_type: Option<&str>,
    ) -> RepoResult<(Fabric, Vlan)> {
        validate_name("name", name)?;
        let txn = self.begin_write().await.map_err(db_err)?;
        let f = fabric::ActiveModel {
            id: NotSet,
            name: Set(name.to_owned()),
            class_type: Set(class_type.map(str::to_owned)),
            description: Set(String::new()),
        }
        .insert(&txn)
        .await
        .map_err(unique_as("fabric", name))?;
        let untagged = Vlan {
            id: VlanId(0),
            fabric: FabricId(f.id),
            vid: 0,
            name: Some("untagged".into()),
            mtu: 1500,
            dhcp_on: false,
            primary_rack: None,
            secondary_rack: None,
            relay_vlan: None,
            space: None,
            description: String::new(),
        };
        let v = vlan_to(&untagged).insert(&txn).await.map_err(db_err)?;
        txn.commit().await.map_err(db_err)?;
        Ok((fabric_from(f), vlan_from(v)?))
    }

    async fn fabric_list(&self) -> RepoResult<Vec<Fabric>> {
        Ok(fabric::Entity::find()
            .order_by_asc(fabric::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(fabric_from)
            .collect())
    }

    async fn fabric_delete(&self, id: FabricId) -> RepoResult<()> {
        let res = fabric::Entity::delete_by_id(id.0)
            .exec(&self.db)
            .await
            .map_err(|e| in_use(e, "fabric", id))?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("fabric", id));
        }
        Ok(())
    }

    async fn vlan_create(&self, v: &Vlan) -> RepoResult<Vlan> {
        self.check_vlan(v).await?;
        let row = vlan_to(v).insert(&self.db).await.map_err(|e| {
            if is_unique_violation(&e) {
                RepositoryError::AlreadyExists {
                    kind: "vlan",
                    key: format!("vid {} on fabric {}", v.vid, v.fabric),
                }
            } else {
                in_use(e, "fabric", v.fabric)
            }
        })?;
        vlan_from(row)
    }

    async fn vlan_get(&self, id: VlanId) -> RepoResult<Vlan> {
        let row = vlan::Entity::find_by_id(id.0)
            .one(&self.db)
            .await
            .map_err(db_err)?
            .ok_or_else(|| RepositoryError::not_found("vlan", id))?;
        vlan_from(row)
    }

    async fn vlan_list(&self, fabric: Option<FabricId>) -> RepoResult<Vec<Vlan>> {
        let mut q = vlan::Entity::find().order_by_asc(vlan::Column::Id);
        if let Some(f) = fabric {
            q = q.filter(vlan::Column::FabricId.eq(f.0));
        }
        q.all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(vlan_from)
            .collect()
    }

    async fn vlan_update(&self, v: &Vlan) -> RepoResult<Vlan> {
        self.check_vlan(v).await?;
        let mut am = vlan_to(v);
        am.id = Set(v.id.0);
        let res = vlan::Entity::update_many()
            .set(am)
            .filter(vlan::Column::Id.eq(v.id.0))
            .exec(&self.db)
            .await
            .map_err(unique_as("vlan", format!("vid {}", v.vid)))?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("vlan", v.id));
        }
        self.vlan_get(v.id).await
    }

    async fn subnet_create(&self, s: &Subnet) -> RepoResult<Subnet> {
        s.validate()?;
        self.vlan_get(s.vlan).await?;
        let row = subnet_to(s)
            .insert(&self.db)
            .await
            .map_err(unique_as("subnet", s.cidr))?;
        subnet_from(row)
    }

    async fn subnet_get(&self, id: SubnetId) -> RepoResult<Subnet> {
        let row = subnet::Entity::find_by_id(id.0)
            .one(&self.db)
            .await
            .map_err(db_err)?
            .ok_or_else(|| RepositoryError::not_found("subnet", id))?;
        subnet_from(row)
    }

    async fn subnet_list(&self) -> RepoResult<Vec<Subnet>> {
        subnet::Entity::find()
            .order_by_asc(subnet::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(subnet_from)
            .collect()
    }

    async fn subnet_update(&self, s: &Subnet) -> RepoResult<Subnet> {
        s.validate()?;
        let old = self.subnet_get(s.id).await?;
        if old.cidr != s.cidr {
            // Ranges and addresses were checked against the old CIDR.
            let ranges = self.subnet_ip_range_list(Some(s.id)).await?;
            for r in &ranges {
                validate_ip_range(s, r, &ranges)?;
            }
            if let Some(ip) = self
                .assigned_ips(s.id)
                .await?
                .into_iter()
                .find(|ip| !s.cidr.contains(ip))
            {
                return Err(IpamError::NotInSubnet { ip, subnet: s.cidr }.into());
            }
        }
        self.vlan_get(s.vlan).await?;
        let mut am = subnet_to(s);
        am.id = Set(s.id.0);
        subnet::Entity::update_many()
            .set(am)
            .filter(subnet::Column::Id.eq(s.id.0))
            .exec(&self.db)
            .await
            .map_err(unique_as("subnet", s.cidr))?;
        self.subnet_get(s.id).await
    }

    async fn subnet_delete(&self, id: SubnetId) -> RepoResult<()> {
        let res = subnet::Entity::delete_by_id(id.0)
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("subnet", id));
        }
        Ok(())
    }

    async fn subnet_ip_range_create(&self, r: &IpRange) -> RepoResult<IpRange> {
        let subnet = self.subnet_get(r.subnet).await?;
        // Two concurrent creations could each pass the overlap check; the
        // transaction plus re-check after insert closes that window.
        let txn = self.begin_write().await.map_err(db_err)?;
        let row = ip_range::ActiveModel {
            id: NotSet,
            subnet_id: Set(r.subnet.0),
            kind: Set(r.kind.as_str().to_owned()),
            start_ip: Set(r.start.to_string()),
            end_ip: Set(r.end.to_string()),
            comment: Set(r.comment.clone()),
        }
        .insert(&txn)
        .await
        .map_err(db_err)?;
        let created = range_from(row)?;
        let all: Vec<IpRange> = ip_range::Entity::find()
            .filter(ip_range::Column::SubnetId.eq(r.subnet.0))
            .all(&txn)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(range_from)
            .collect::<RepoResult<_>>()?;
        if let Err(e) = validate_ip_range(&subnet, &created, &all) {
            txn.rollback().await.map_err(db_err)?;
            return Err(e.into());
        }
        txn.commit().await.map_err(db_err)?;
        Ok(created)
    }

    async fn subnet_ip_range_list(&self, subnet: Option<SubnetId>) -> RepoResult<Vec<IpRange>> {
        let mut q = ip_range::Entity::find().order_by_asc(ip_range::Column::Id);
        if let Some(s) = subnet {
            q = q.filter(ip_range::Column::SubnetId.eq(s.0));
        }
        q.all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(range_from)
            .collect()
    }

    async fn subnet_ip_range_delete(&self, id: IpRangeId) -> RepoResult<()> {
        let res = ip_range::Entity::delete_by_id(id.0)
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("ip range", id));
        }
        Ok(())
    }

    async fn subnet_address_allocate(
        &self,
        subnet: SubnetId,
        ip: Option<IpAddr>,
        alloc_type: IpAddressType,
        hostname: Option<&str>,
    ) -> RepoResult<StaticAddress> {
        let s = self.subnet_get(subnet).await?;
        for _ in 0..ADDRESS_ATTEMPTS {
            let ranges = self.subnet_ip_range_list(Some(subnet)).await?;
            let assigned = self.assigned_ips(subnet).await?;
            let chosen = match ip {
                Some(ip) => {
                    check_static_address(&s, &ranges, &assigned, ip)?;
                    ip
                }
                None => next_free_address(&s, &ranges, &assigned)?,
            };
            let res = ip_address::ActiveModel {
                id: NotSet,
                subnet_id: Set(Some(subnet.0)),
                ip: Set(Some(chosen.to_string())),
                alloc_type: Set(alloc_type.as_str().to_owned()),
                interface_id: Set(None),
                hostname: Set(hostname.map(str::to_owned)),
                created: Set(Utc::now()),
            }
            .insert(&self.db)
            .await;
            match res {
                Ok(row) => return address_from(row),
                Err(e) if is_unique_violation(&e) => {
                    if ip.is_some() {
                        return Err(IpamError::AlreadyAssigned { ip: chosen }.into());
                    }
                    // A concurrent caller took it; pick again.
                }
                Err(e) => return Err(db_err(e)),
            }
        }
        Err(RepositoryError::Conflict {
            kind: "subnet",
            key: s.cidr.to_string(),
            reason: "too many concurrent address assignments".into(),
        })
    }

    async fn subnet_address_list(&self, subnet: SubnetId) -> RepoResult<Vec<StaticAddress>> {
        ip_address::Entity::find()
            .filter(ip_address::Column::SubnetId.eq(subnet.0))
            .order_by_asc(ip_address::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(address_from)
            .collect()
    }

    async fn subnet_address_release(&self, id: StaticAddressId) -> RepoResult<()> {
        let txn = self.begin_write().await.map_err(db_err)?;
        // An address linked to a machine's interface changes how the machine
        // reads: its version moves on.
        let iface = ip_address::Entity::find_by_id(id.0)
            .one(&txn)
            .await
            .map_err(db_err)?
            .and_then(|a| a.interface_id);
        let owner = match iface {
            Some(i) => interface::Entity::find_by_id(i)
                .one(&txn)
                .await
                .map_err(db_err)?
                .map(|i| i.machine_id),
            None => None,
        };
        let res = ip_address::Entity::delete_by_id(id.0)
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("ip address", id));
        }
        if let Some(m) = owner {
            crate::machine::bump_versions(&txn, &[m]).await?;
        }
        txn.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn static_route_create(&self, r: &StaticRoute) -> RepoResult<StaticRoute> {
        let (src, dst) = (
            self.subnet_get(r.source).await?,
            self.subnet_get(r.destination).await?,
        );
        r.validate(&src, &dst)?;
        let row = static_route::ActiveModel {
            id: NotSet,
            source_id: Set(r.source.0),
            destination_id: Set(r.destination.0),
            gateway_ip: Set(r.gateway_ip.to_string()),
            metric: Set(i64::from(r.metric)),
        }
        .insert(&self.db)
        .await
        .map_err(unique_as(
            "static route",
            format!("{} via {}", dst.cidr, r.gateway_ip),
        ))?;
        route_from(row)
    }

    async fn static_route_list(&self) -> RepoResult<Vec<StaticRoute>> {
        static_route::Entity::find()
            .order_by_asc(static_route::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(route_from)
            .collect()
    }

    async fn static_route_update(&self, r: &StaticRoute) -> RepoResult<StaticRoute> {
        let (src, dst) = (
            self.subnet_get(r.source).await?,
            self.subnet_get(r.destination).await?,
        );
        r.validate(&src, &dst)?;
        let res = static_route::Entity::update_many()
            .col_expr(static_route::Column::SourceId, Expr::value(r.source.0))
            .col_expr(
                static_route::Column::DestinationId,
                Expr::value(r.destination.0),
            )
            .col_expr(
                static_route::Column::GatewayIp,
                Expr::value(r.gateway_ip.to_string()),
            )
            .col_expr(
                static_route::Column::Metric,
                Expr::value(i64::from(r.metric)),
            )
            .filter(static_route::Column::Id.eq(r.id.0))
            .exec(&self.db)
            .await
            .map_err(unique_as(
                "static route",
                format!("{} via {}", dst.cidr, r.gateway_ip),
            ))?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("static route", r.id));
        }
        Ok(r.clone())
    }

    async fn static_route_delete(&self, id: StaticRouteId) -> RepoResult<()> {
        let res = static_route::Entity::delete_by_id(id.0)
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("static route", id));
        }
        Ok(())
    }

    async fn space_create(&self, name: &str, description: &str) -> RepoResult<Space> {
        validate_name("name", name)?;
        let r = space::ActiveModel {
            id: NotSet,
            name: Set(name.to_owned()),
            description: Set(description.to_owned()),
        }
        .insert(&self.db)
        .await
        .map_err(unique_as("space", name))?;
        Ok(Space {
            id: SpaceId(r.id),
            name: r.name,
            description: r.description,
        })
    }

    async fn space_list(&self) -> RepoResult<Vec<Space>> {
        Ok(space::Entity::find()
            .order_by_asc(space::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| Space {
                id: SpaceId(r.id),
                name: r.name,
                description: r.description,
            })
            .collect())
    }

    async fn space_delete(&self, id: SpaceId) -> RepoResult<()> {
        let res = space::Entity::delete_by_id(id.0)
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("space", id));
        }
        Ok(())
    }
}

/// A foreign-key failure on delete means something still uses the record.
fn in_use(e: sea_orm::DbErr, kind: &'static str, id: impl std::fmt::Display) -> RepositoryError {
    match db_err(e) {
        RepositoryError::Conflict { .. } => RepositoryError::Conflict {
            kind,
            key: id.to_string(),
            reason: "it is missing or still in use".into(),
        },
        other => other,
    }
}
