//! Machines: bulk-capable inserts, list with children in a fixed number of
//! queries, optimistic updates, lifecycle actions and allocation.

use std::collections::{BTreeSet, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use maas_core::constraints::{
    AllocationRequest, Constraints, NetworkIndex, NoMatchExplanation, allocatable,
};
use maas_core::event::{EventLevel, NewEvent};
use maas_core::ids::SystemId;
use maas_core::lifecycle::{
    Action, ActionOptions, Actor, LifecycleError, NodeStatus, StatusChange, transition_allowed,
};
use maas_core::machine::{InterfaceLink, Machine};
use maas_core::repo::{
    Allocation, MachineFilter, MachineRepository, MachineStamp, NetworkRepository, RepoResult,
    RepositoryError,
};
use maas_core::types::MacAddress;
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use tracing::{Instrument, debug, info_span};

use crate::convert::*;
use crate::entity::{
    app_user, block_device, domain, interface, ip_address, machine, machine_tag, resource_pool,
    subnet, tag, vlan, zone,
};
use crate::event::insert_event;
use crate::{SqlStore, batch_rows, db_err};

/// Ids per `IN (...)` list.
const IN_CHUNK: usize = 5_000;
/// Candidates fetched per round while allocating.
const ALLOCATION_PAGE: u64 = 64;
/// The first key of the PostgreSQL advisory lock deadline expiry runs under
/// (the second is the schema's hash): "MAAS" in ASCII.
pub const DEADLINE_LOCK: i32 = 0x4D41_4153;
/// Optimistic-concurrency retries before giving up.
const MAX_ATTEMPTS: usize = 16;

/// A machine's children, grouped by machine row id.
#[derive(Default)]
struct Children {
    tags: HashMap<i64, BTreeSet<String>>,
    interfaces: HashMap<i64, Vec<maas_core::machine::Interface>>,
    disks: HashMap<i64, Vec<maas_core::machine::BlockDevice>>,
}

/// Loads tags, interfaces (with links) and disks of the given machines, or of
/// all machines: five queries per chunk of ids, whatever the count.
async fn load_children<C: ConnectionTrait>(conn: &C, ids: Option<&[i64]>) -> RepoResult<Children> {
    let mut out = Children::default();
    let chunks: Vec<Option<&[i64]>> = match ids {
        None => vec![None],
        Some([]) => vec![],
        Some(ids) => ids.chunks(IN_CHUNK).map(Some).collect(),
    };
    for chunk in chunks {
        let mut tq = machine_tag::Entity::find();
        let mut iq = interface::Entity::find().order_by_asc(interface::Column::Id);
        let mut dq = block_device::Entity::find().order_by_asc(block_device::Column::Id);
        let mut aq = ip_address::Entity::find().order_by_asc(ip_address::Column::Id);
        if let Some(ids) = chunk {
            tq = tq.filter(machine_tag::Column::MachineId.is_in(ids.iter().copied()));
            iq = iq.filter(interface::Column::MachineId.is_in(ids.iter().copied()));
            dq = dq.filter(block_device::Column::MachineId.is_in(ids.iter().copied()));
            aq = aq.filter(
                ip_address::Column::InterfaceId.in_subquery(
                    Query::select()
                        .column(interface::Column::Id)
                        .from(interface::Entity)
                        .and_where(interface::Column::MachineId.is_in(ids.iter().copied()))
                        .to_owned(),
                ),
            );
        } else {
            aq = aq.filter(ip_address::Column::InterfaceId.is_not_null());
        }
        for t in tq.all(conn).await.map_err(db_err)? {
            out.tags.entry(t.machine_id).or_default().insert(t.tag_name);
        }
        let mut links: HashMap<i64, Vec<InterfaceLink>> = HashMap::new();
        for a in aq.all(conn).await.map_err(db_err)? {
            if let Some(iface) = a.interface_id {
                links.entry(iface).or_default().push(link_from_row(&a)?);
            }
        }
        for i in iq.all(conn).await.map_err(db_err)? {
            let l = links.remove(&i.id).unwrap_or_default();
            out.interfaces
                .entry(i.machine_id)
                .or_default()
                .push(interface_from_row(&i, l)?);
        }
        for d in dq.all(conn).await.map_err(db_err)? {
            out.disks
                .entry(d.machine_id)
                .or_default()
                .push(block_device_from_row(&d)?);
        }
    }
    Ok(out)
}

fn assemble(rows: &[machine::Model], mut children: Children) -> RepoResult<Vec<Machine>> {
    rows.iter()
        .map(|r| {
            let mut m = machine_from_row(r)?;
            m.tags = children.tags.remove(&r.id).unwrap_or_default();
            m.interfaces = children.interfaces.remove(&r.id).unwrap_or_default();
            m.block_devices = children.disks.remove(&r.id).unwrap_or_default();
            Ok(m)
        })
        .collect()
}

async fn load_full<C: ConnectionTrait>(
    conn: &C,
    rows: &[machine::Model],
) -> RepoResult<Vec<Machine>> {
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let children = load_children(conn, Some(&ids)).await?;
    assemble(rows, children)
}

/// Bumps the version of machines whose children changed outside
/// `machine_update` (tags set by name, addresses released), so caches keyed
/// on [`MachineStamp`] see the change.
pub(crate) async fn bump_versions<C: ConnectionTrait>(conn: &C, ids: &[i64]) -> RepoResult<()> {
    for chunk in ids.chunks(IN_CHUNK) {
        machine::Entity::update_many()
            .col_expr(
                machine::Column::Version,
                Expr::col(machine::Column::Version).add(1),
            )
            .filter(machine::Column::Id.is_in(chunk.iter().copied()))
            .exec(conn)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

/// The `WHERE` of a machine filter (all of `f` but its limit).
fn filter_condition(f: &MachineFilter) -> Condition {
    use machine::Column as M;
    let node_type = if f.racks {
        maas_core::machine::NodeType::RackController
    } else if f.devices {
        maas_core::machine::NodeType::Device
    } else {
        maas_core::machine::NodeType::Machine
    };
    let mut cond = Condition::all().add(M::NodeType.eq(i32::from(node_type.code())));
    if !f.system_ids.is_empty() {
        cond = cond.add(M::SystemId.is_in(f.system_ids.iter().map(|s| s.to_string())));
    }
    if !f.hostnames.is_empty() {
        cond = cond.add(M::Hostname.is_in(f.hostnames.iter().cloned()));
    }
    if !f.statuses.is_empty() {
        cond = cond.add(M::Status.is_in(f.statuses.iter().map(|s| i32::from(s.code()))));
    }
    if let Some(o) = &f.owner {
        cond = cond.add(M::Owner.eq(o.as_str()));
    }
    if let Some(u) = &f.visible_to {
        cond = cond.add(
            Condition::any()
                .add(M::Status.eq(i32::from(NodeStatus::Ready.code())))
                .add(M::Owner.eq(u.as_str())),
        );
    }
    if let Some(z) = &f.zone {
        cond = cond.add(M::Zone.eq(z.as_str()));
    }
    if let Some(p) = &f.pool {
        cond = cond.add(M::Pool.eq(p.as_str()));
    }
    for t in &f.tags {
        cond = cond.add(
            M::Id.in_subquery(
                Query::select()
                    .column(machine_tag::Column::MachineId)
                    .from(machine_tag::Entity)
                    .and_where(machine_tag::Column::TagName.eq(t.as_str()))
                    .to_owned(),
            ),
        );
    }
    if !f.macs.is_empty() {
        cond = cond.add(
            M::Id.in_subquery(
                Query::select()
                    .column(interface::Column::MachineId)
                    .from(interface::Entity)
                    .and_where(interface::Column::Mac.is_in(f.macs.iter().map(ToString::to_string)))
                    .to_owned(),
            ),
        );
    }
    cond
}

async fn find_row<C: ConnectionTrait>(conn: &C, id: &SystemId) -> RepoResult<machine::Model> {
    machine::Entity::find()
        .filter(machine::Column::SystemId.eq(id.as_str()))
        .one(conn)
        .await
        .map_err(db_err)?
        .ok_or_else(|| RepositoryError::not_found("machine", id))
}

/// Checks that every name and id the machines refer to exists, so a typo
/// gives "zone 'rack-z' not found" rather than a foreign-key failure.
async fn check_references<C: ConnectionTrait>(conn: &C, machines: &[Machine]) -> RepoResult<()> {
    async fn names<C: ConnectionTrait, E: EntityTrait>(
        conn: &C,
        col: E::Column,
        wanted: BTreeSet<String>,
        kind: &'static str,
    ) -> RepoResult<()>
    where
        E::Column: ColumnTrait,
    {
        if wanted.is_empty() {
            return Ok(());
        }
        let found: HashSet<String> = E::find()
            .select_only()
            .column(col)
            .filter(col.is_in(wanted.iter().cloned()))
            .into_tuple::<String>()
            .all(conn)
            .await
            .map_err(db_err)?
            .into_iter()
            .collect();
        match wanted.into_iter().find(|w| !found.contains(w)) {
            Some(missing) => Err(RepositoryError::not_found(kind, format!("'{missing}'"))),
            None => Ok(()),
        }
    }
    async fn ids<C: ConnectionTrait, E: EntityTrait>(
        conn: &C,
        col: E::Column,
        wanted: BTreeSet<i64>,
        kind: &'static str,
    ) -> RepoResult<()>
    where
        E::Column: ColumnTrait,
    {
        if wanted.is_empty() {
            return Ok(());
        }
        let found: HashSet<i64> = E::find()
            .select_only()
            .column(col)
            .filter(col.is_in(wanted.iter().copied()))
            .into_tuple::<i64>()
            .all(conn)
            .await
            .map_err(db_err)?
            .into_iter()
            .collect();
        match wanted.into_iter().find(|w| !found.contains(w)) {
            Some(missing) => Err(RepositoryError::not_found(kind, missing)),
            None => Ok(()),
        }
    }
    let collect = |f: &dyn Fn(&Machine) -> Vec<String>| {
        machines.iter().flat_map(f).collect::<BTreeSet<String>>()
    };
    names::<_, zone::Entity>(
        conn,
        zone::Column::Name,
        collect(&|m| vec![m.zone.clone()]),
        "zone",
    )
    .await?;
    names::<_, resource_pool::Entity>(
        conn,
        resource_pool::Column::Name,
        collect(&|m| vec![m.pool.clone()]),
        "resource pool",
    )
    .await?;
    names::<_, domain::Entity>(
        conn,
        domain::Column::Name,
        collect(&|m| vec![m.domain.to_string()]),
        "domain",
    )
    .await?;
    names::<_, app_user::Entity>(
        conn,
        app_user::Column::Username,
        collect(&|m| m.owner.iter().cloned().collect()),
        "user",
    )
    .await?;
    names::<_, tag::Entity>(
        conn,
        tag::Column::Name,
        collect(&|m| m.tags.iter().cloned().collect()),
        "tag",
    )
    .await?;
    let vlans = machines
        .iter()
        .flat_map(|m| m.interfaces.iter().filter_map(|i| i.vlan.map(|v| v.0)))
        .collect();
    ids::<_, vlan::Entity>(conn, vlan::Column::Id, vlans, "vlan").await?;
    let subnets = machines
        .iter()
        .flat_map(|m| {
            m.interfaces
                .iter()
                .flat_map(|i| i.links.iter().filter_map(|l| l.subnet.map(|s| s.0)))
        })
        .collect();
    ids::<_, subnet::Entity>(conn, subnet::Column::Id, subnets, "subnet").await?;
    Ok(())
}

/// Inserts machines and all their children with a fixed number of statements
/// per batch. Ids inside the machines are ignored (fresh rows).
async fn insert_machines<C: ConnectionTrait>(
    conn: &C,
    machines: &[Machine],
    now: DateTime<Utc>,
) -> RepoResult<HashMap<String, i64>> {
    for chunk in machines.chunks(batch_rows(27)) {
        machine::Entity::insert_many(chunk.iter().map(|m| machine_to_active(m, 1, now)))
            .exec_without_returning(conn)
            .await
            .map_err(|e| {
                if crate::is_unique_violation(&e) {
                    RepositoryError::AlreadyExists {
                        kind: "machine",
                        key: "(system_id or hostname.domain already in use)".into(),
                    }
                } else {
                    db_err(e)
                }
            })?;
    }
    let mut row_ids: HashMap<String, i64> = HashMap::with_capacity(machines.len());
    for chunk in machines.chunks(IN_CHUNK) {
        let pairs: Vec<(i64, String)> = machine::Entity::find()
            .select_only()
            .column(machine::Column::Id)
            .column(machine::Column::SystemId)
            .filter(machine::Column::SystemId.is_in(chunk.iter().map(|m| m.system_id.to_string())))
            .into_tuple()
            .all(conn)
            .await
            .map_err(db_err)?;
        row_ids.extend(pairs.into_iter().map(|(id, sid)| (sid, id)));
    }
    let rid = |m: &Machine| {
        row_ids
            .get(m.system_id.as_str())
            .copied()
            .unwrap_or_default()
    };

    let tag_rows: Vec<machine_tag::ActiveModel> = machines
        .iter()
        .flat_map(|m| {
            m.tags.iter().map(move |t| machine_tag::ActiveModel {
                machine_id: sea_orm::ActiveValue::Set(rid(m)),
                tag_name: sea_orm::ActiveValue::Set(t.clone()),
            })
        })
        .collect();
    for chunk in tag_rows.chunks(batch_rows(2)) {
        machine_tag::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(conn)
            .await
            .map_err(db_err)?;
    }

    let iface_rows: Vec<interface::ActiveModel> = machines
        .iter()
        .flat_map(|m| {
            m.interfaces.iter().map(move |i| {
                let mut i = i.clone();
                i.id = None;
                interface_to_active(&i, rid(m))
            })
        })
        .collect();
    for chunk in iface_rows.chunks(batch_rows(16)) {
        interface::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(conn)
            .await
            .map_err(crate::unique_as(
                "interface",
                "(MAC address already used by another machine's physical interface)",
            ))?;
    }

    let machine_ids: Vec<i64> = row_ids.values().copied().collect();
    let mut iface_ids: HashMap<(i64, String), i64> = HashMap::new();
    for chunk in machine_ids.chunks(IN_CHUNK) {
        let triples: Vec<(i64, i64, String)> = interface::Entity::find()
            .select_only()
            .column(interface::Column::Id)
            .column(interface::Column::MachineId)
            .column(interface::Column::Name)
            .filter(interface::Column::MachineId.is_in(chunk.iter().copied()))
            .into_tuple()
            .all(conn)
            .await
            .map_err(db_err)?;
        iface_ids.extend(triples.into_iter().map(|(id, mid, name)| ((mid, name), id)));
    }
    let mut link_rows = Vec::new();
    for m in machines {
        for i in &m.interfaces {
            let Some(&iid) = iface_ids.get(&(rid(m), i.name.clone())) else {
                continue;
            };
            for l in &i.links {
                let l = InterfaceLink {
                    id: None,
                    ..l.clone()
                };
                link_rows.push(link_to_active(&l, iid, m.hostname.as_str(), now));
            }
        }
    }
    for chunk in link_rows.chunks(batch_rows(7)) {
        ip_address::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(conn)
            .await
            .map_err(crate::unique_as(
                "ip address",
                "(an address linked to an interface is already assigned in its subnet)",
            ))?;
    }

    let disk_rows: Vec<block_device::ActiveModel> = machines
        .iter()
        .flat_map(|m| {
            m.block_devices.iter().map(move |d| {
                let mut d = d.clone();
                d.id = None;
                block_device_to_active(&d, rid(m))
            })
        })
        .collect();
    for chunk in disk_rows.chunks(batch_rows(11)) {
        block_device::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(conn)
            .await
            .map_err(db_err)?;
    }
    Ok(row_ids)
}

/// Writes the lifecycle fields of `m` if the row still has `version`.
/// Returns whether the write happened.
async fn write_lifecycle<C: ConnectionTrait>(
    conn: &C,
    row_id: i64,
    version: i64,
    m: &Machine,
    extra: Option<Condition>,
    now: DateTime<Utc>,
) -> RepoResult<bool> {
    let mut q = machine::Entity::update_many()
        .col_expr(
            machine::Column::Status,
            Expr::value(i32::from(m.status.code())),
        )
        .col_expr(
            machine::Column::PreviousStatus,
            Expr::value(m.previous_status.map(|s| i32::from(s.code()))),
        )
        .col_expr(machine::Column::Owner, Expr::value(m.owner.clone()))
        .col_expr(machine::Column::Locked, Expr::value(m.locked))
        .col_expr(
            machine::Column::ErrorDescription,
            Expr::value(m.error_description.clone()),
        )
        .col_expr(
            machine::Column::StatusDeadline,
            Expr::value(m.status_deadline),
        )
        .col_expr(machine::Column::Updated, Expr::value(now))
        .col_expr(
            machine::Column::Version,
            Expr::col(machine::Column::Version).add(1),
        )
        .filter(machine::Column::Id.eq(row_id))
        .filter(machine::Column::Version.eq(version));
    if let Some(c) = extra {
        q = q.filter(c);
    }
    Ok(q.exec(conn).await.map_err(db_err)?.rows_affected == 1)
}

fn status_events(m: &Machine, actor: &Actor, changes: &[StatusChange], why: &str) -> Vec<NewEvent> {
    changes
        .iter()
        .map(|c| NewEvent {
            level: if c.to.failure_status().is_none() && c.from.failure_status() == Some(c.to) {
                EventLevel::Error
            } else {
                EventLevel::Info
            },
            kind: "Status change".into(),
            actor: actor.username().map(str::to_owned),
            system_id: Some(m.system_id.clone()),
            status_from: Some(c.from),
            status_to: Some(c.to),
            message: format!(
                "{} -> {}{}",
                c.from.label(),
                c.to.label(),
                if why.is_empty() {
                    String::new()
                } else {
                    format!(": {why}")
                }
            ),
        })
        .collect()
}

/// The SQL part of a constraint match: only conditions that [`Constraints`]
/// itself enforces, so no machine the matcher would accept is dropped.
fn prefilter(c: &Constraints) -> Condition {
    use machine::Column as M;
    let mut cond = Condition::all()
        .add(M::Status.eq(i32::from(NodeStatus::Ready.code())))
        .add(M::Owner.is_null())
        .add(M::Locked.eq(false));
    if let Some(name) = &c.name {
        cond =
            cond.add(M::Hostname.eq(name.split('.').next().unwrap_or(name).to_ascii_lowercase()));
    }
    if let Some(id) = &c.system_id {
        cond = cond.add(M::SystemId.eq(id.as_str()));
    }
    if !c.arch.is_empty() {
        let mut any = Condition::any();
        for a in &c.arch {
            any = any.add(if a.contains('/') {
                M::Architecture.eq(a.as_str())
            } else {
                M::Architecture.like(format!("{a}/%"))
            });
        }
        cond = cond.add(any);
    }
    for a in c.not_arch.iter().filter(|a| a.contains('/')) {
        cond = cond.add(M::Architecture.ne(a.as_str()));
    }
    if let Some(n) = c.cpu_count {
        cond = cond.add(M::CpuCount.gte(clamp_i32(u64::from(n))));
    }
    if let Some(n) = c.cpu_speed {
        cond = cond.add(M::CpuSpeed.gte(clamp_i32(u64::from(n))));
    }
    if let Some(n) = c.mem {
        cond = cond.add(M::MemoryMib.gte(clamp_i64(n)));
    }
    let tagged = |t: &String| {
        Query::select()
            .column(machine_tag::Column::MachineId)
            .from(machine_tag::Entity)
            .and_where(machine_tag::Column::TagName.eq(t.as_str()))
            .to_owned()
    };
    for t in &c.tags {
        cond = cond.add(M::Id.in_subquery(tagged(t)));
    }
    for t in &c.not_tags {
        cond = cond.add(M::Id.not_in_subquery(tagged(t)));
    }
    if let Some(z) = &c.zone {
        cond = cond.add(M::Zone.eq(z.as_str()));
    }
    if !c.not_in_zone.is_empty() {
        cond = cond.add(M::Zone.is_not_in(c.not_in_zone.iter().cloned()));
    }
    if let Some(p) = &c.pool {
        cond = cond.add(M::Pool.eq(p.as_str()));
    }
    if !c.not_in_pool.is_empty() {
        cond = cond.add(M::Pool.is_not_in(c.not_in_pool.iter().cloned()));
    }
    if let Some(p) = c.power_state {
        cond = cond.add(M::PowerState.eq(p.as_str()));
    }
    cond
}

impl SqlStore {
    async fn network_index(&self, c: &Constraints) -> RepoResult<NetworkIndex> {
        let needs = !(c.subnets.is_empty()
            && c.not_subnets.is_empty()
            && c.vlans.is_empty()
            && c.not_vlans.is_empty()
            && c.fabrics.is_empty()
            && c.not_fabrics.is_empty()
            && c.fabric_classes.is_empty()
            && c.not_fabric_classes.is_empty()
            && c.interfaces.is_empty());
        if !needs {
            return Ok(NetworkIndex::default());
        }
        let fabrics = self.fabric_list().await?;
        let vlans = self.vlan_list(None).await?;
        let subnets = self.subnet_list().await?;
        let spaces = self.space_list().await?;
        Ok(NetworkIndex::new(&fabrics, &vlans, &subnets, &spaces))
    }

    /// Loads, changes with `f`, and writes back the lifecycle fields of one
    /// machine, retrying when another writer got there first.
    async fn change_lifecycle<F>(
        &self,
        id: &SystemId,
        actor: &Actor,
        why: &str,
        mut f: F,
    ) -> RepoResult<Machine>
    where
        F: FnMut(&mut Machine, DateTime<Utc>) -> Result<Vec<StatusChange>, RepositoryError> + Send,
    {
        for _ in 0..MAX_ATTEMPTS {
            let row = find_row(&self.db, id).await?;
            let mut m = machine_from_row(&row)?;
            let now = Utc::now();
            let changes = f(&mut m, now)?;
            let txn = self.begin_write().await.map_err(db_err)?;
            if !write_lifecycle(&txn, row.id, row.version, &m, None, now).await? {
                txn.rollback().await.map_err(db_err)?;
                debug!(system_id = %id, "lost a write race; retrying");
                continue;
            }
            for e in status_events(&m, actor, &changes, why) {
                insert_event(&txn, &e, now).await?;
            }
            txn.commit().await.map_err(db_err)?;
            return self.machine_get(id).await;
        }
        Err(RepositoryError::Conflict {
            kind: "machine",
            key: id.to_string(),
            reason: format!("changed by others {MAX_ATTEMPTS} times in a row"),
        })
    }

    async fn explain_no_match(
        &self,
        c: &Constraints,
        net: &NetworkIndex,
    ) -> RepoResult<NoMatchExplanation> {
        use machine::Column as M;
        let rows = machine::Entity::find()
            .filter(M::Status.eq(i32::from(NodeStatus::Ready.code())))
            .filter(M::Owner.is_null())
            .filter(M::Locked.eq(false))
            .all(&self.db)
            .await
            .map_err(db_err)?;
        let machines = load_full(&self.db, &rows).await?;
        Ok(NoMatchExplanation::build(
            c,
            machines.iter().filter(|m| allocatable(m)),
            net,
        ))
    }
}

#[async_trait]
impl MachineRepository for SqlStore {
    async fn machine_create(&self, m: &Machine, actor: &Actor) -> RepoResult<Machine> {
        if !transition_allowed(None, m.status) {
            return Err(LifecycleError::InvalidTransition {
                from: None,
                to: m.status,
            }
            .into());
        }
        m.validate()?;
        let now = Utc::now();
        let txn = self.begin_write().await.map_err(db_err)?;
        check_references(&txn, std::slice::from_ref(m)).await?;
        insert_machines(&txn, std::slice::from_ref(m), now)
            .await
            .map_err(|e| match e {
                RepositoryError::AlreadyExists {
                    kind: "machine", ..
                } => RepositoryError::AlreadyExists {
                    kind: "machine",
                    key: format!("{} ({})", m.system_id, m.fqdn()),
                },
                other => other,
            })?;
        let mut ev = NewEvent::machine(
            &m.system_id,
            "Created",
            format!("created {} as {}", m.fqdn(), m.status.label()),
        );
        ev.actor = actor.username().map(str::to_owned);
        ev.status_to = Some(m.status);
        insert_event(&txn, &ev, now).await?;
        txn.commit().await.map_err(db_err)?;
        self.machine_get(&m.system_id).await
    }

    async fn machine_import(&self, machines: &[Machine]) -> RepoResult<usize> {
        for m in machines {
            m.validate()?;
        }
        let txn = self.begin_write().await.map_err(db_err)?;
        check_references(&txn, machines).await?;
        insert_machines(&txn, machines, Utc::now()).await?;
        txn.commit().await.map_err(db_err)?;
        Ok(machines.len())
    }

    async fn machine_get(&self, id: &SystemId) -> RepoResult<Machine> {
        let row = find_row(&self.db, id).await?;
        let mut v = load_full(&self.db, std::slice::from_ref(&row)).await?;
        v.pop()
            .ok_or_else(|| RepositoryError::not_found("machine", id))
    }

    async fn machine_get_by_mac(&self, mac: MacAddress) -> RepoResult<Option<Machine>> {
        let row = machine::Entity::find()
            .filter(
                machine::Column::Id.in_subquery(
                    Query::select()
                        .column(interface::Column::MachineId)
                        .from(interface::Entity)
                        .and_where(interface::Column::Mac.eq(mac.to_string()))
                        .to_owned(),
                ),
            )
            .order_by_asc(machine::Column::Id)
            .one(&self.db)
            .await
            .map_err(db_err)?;
        match row {
            Some(r) => Ok(load_full(&self.db, std::slice::from_ref(&r)).await?.pop()),
            None => Ok(None),
        }
    }

    async fn machine_list(&self, f: &MachineFilter) -> RepoResult<Vec<Machine>> {
        use machine::Column as M;
        let span = info_span!("machine_list");
        async move {
            let cond = filter_condition(f);
            // Every node of the type: children are loaded without id lists.
            let unfiltered = *f
                == MachineFilter {
                    devices: f.devices,
                    ..Default::default()
                };
            let mut q = machine::Entity::find()
                .filter(cond)
                .order_by_asc(M::SystemId);
            if let Some(n) = f.limit {
                q = q.limit(n);
            }
            let rows = q.all(&self.db).await.map_err(db_err)?;
            if unfiltered {
                let children = load_children(&self.db, None).await?;
                assemble(&rows, children)
            } else {
                load_full(&self.db, &rows).await
            }
        }
        .instrument(span)
        .await
    }

    async fn machine_stamps(&self, f: &MachineFilter) -> RepoResult<Vec<MachineStamp>> {
        use machine::Column as M;
        let mut q = machine::Entity::find()
            .select_only()
            .column(M::SystemId)
            .column(M::Version)
            .column(M::Created)
            .filter(filter_condition(f))
            .order_by_asc(M::SystemId);
        if let Some(n) = f.limit {
            q = q.limit(n);
        }
        q.into_tuple::<(String, i64, DateTime<Utc>)>()
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|(id, version, created)| {
                Ok(MachineStamp {
                    system_id: SystemId::parse(&id)?,
                    version,
                    created,
                })
            })
            .collect()
    }

    async fn machine_update(&self, m: &Machine) -> RepoResult<Machine> {
        m.validate()?;
        let now = Utc::now();
        let txn = self.begin_write().await.map_err(db_err)?;
        let row = find_row(&txn, &m.system_id).await?;
        check_references(&txn, std::slice::from_ref(m)).await?;
        let mut am = machine_to_active(m, row.version + 1, now);
        // Lifecycle fields belong to lifecycle calls; keep the stored ones.
        am.status = sea_orm::ActiveValue::NotSet;
        am.previous_status = sea_orm::ActiveValue::NotSet;
        am.owner = sea_orm::ActiveValue::NotSet;
        am.status_deadline = sea_orm::ActiveValue::NotSet;
        am.locked = sea_orm::ActiveValue::NotSet;
        am.created = sea_orm::ActiveValue::NotSet;
        let res = machine::Entity::update_many()
            .set(am)
            .filter(machine::Column::Id.eq(row.id))
            .filter(machine::Column::Version.eq(m.version))
            .exec(&txn)
            .await
            .map_err(crate::unique_as("machine", m.fqdn()))?;
        if res.rows_affected != 1 {
            txn.rollback().await.map_err(db_err)?;
            return Err(RepositoryError::Conflict {
                kind: "machine",
                key: m.system_id.to_string(),
                reason: format!(
                    "it changed since it was read (version {} read, {} stored)",
                    m.version, row.version
                ),
            });
        }
        sync_children(&txn, row.id, m, now).await?;
        txn.commit().await.map_err(db_err)?;
        self.machine_get(&m.system_id).await
    }

    async fn machine_delete(&self, id: &SystemId, actor: &Actor) -> RepoResult<()> {
        let row = find_row(&self.db, id).await?;
        let m = machine_from_row(&row)?;
        m.check_action(Action::Delete, actor)?;
        let now = Utc::now();
        let txn = self.begin_write().await.map_err(db_err)?;
        let res = machine::Entity::delete_many()
            .filter(machine::Column::Id.eq(row.id))
            .filter(machine::Column::Version.eq(row.version))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected != 1 {
            return Err(RepositoryError::Conflict {
                kind: "machine",
                key: id.to_string(),
                reason: "it changed while being deleted".into(),
            });
        }
        let mut ev = NewEvent::machine(id, "Deleted", format!("deleted {}", m.fqdn()));
        ev.actor = actor.username().map(str::to_owned);
        ev.status_from = Some(m.status);
        insert_event(&txn, &ev, now).await?;
        txn.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn machine_perform(
        &self,
        id: &SystemId,
        action: Action,
        actor: &Actor,
        options: &ActionOptions,
    ) -> RepoResult<Machine> {
        let policy = self.policy.clone();
        let why = options
            .comment
            .clone()
            .unwrap_or_else(|| format!("{action} by {actor}"));
        self.change_lifecycle(id, actor, &why, |m, now| {
            Ok(m.perform(action, actor, options, now, &policy)?)
        })
        .await
    }

    async fn machine_set_status(
        &self,
        id: &SystemId,
        to: NodeStatus,
        message: &str,
    ) -> RepoResult<Machine> {
        let policy = self.policy.clone();
        // A move to a failed status records why on the machine (what
        // `error_description` shows).
        let failed = NodeStatus::ALL
            .iter()
            .any(|s| s.failure_status() == Some(to));
        self.change_lifecycle(id, &Actor::System, message, |m, now| {
            let change = m.transition(to, now, &policy)?;
            if failed {
                m.error_description = message.to_owned();
            }
            Ok(vec![change])
        })
        .await
    }

    async fn machine_allocate(
        &self,
        req: &AllocationRequest,
        actor: &Actor,
    ) -> RepoResult<Allocation> {
        use machine::Column as M;
        let c = &req.constraints;
        let net = self.network_index(c).await?;
        let base = prefilter(c);
        let mut last: Option<(f64, String)> = None;
        loop {
            let mut q = machine::Entity::find().filter(base.clone());
            if let Some((cost, sid)) = &last {
                q = q.filter(
                    Condition::any().add(M::AllocationCost.gt(*cost)).add(
                        Condition::all()
                            .add(M::AllocationCost.eq(*cost))
                            .add(M::SystemId.gt(sid.as_str())),
                    ),
                );
            }
            let rows = q
                .order_by_asc(M::AllocationCost)
                .order_by_asc(M::SystemId)
                .limit(ALLOCATION_PAGE)
                .all(&self.db)
                .await
                .map_err(db_err)?;
            let Some(tail) = rows.last() else { break };
            last = Some((tail.allocation_cost, tail.system_id.clone()));
            let machines = load_full(&self.db, &rows).await?;
            for (row, m) in rows.iter().zip(machines) {
                if !allocatable(&m) || !c.matches(&m, &net) {
                    continue;
                }
                if req.options.dry_run {
                    return Ok(Allocation {
                        machine: m,
                        dry_run: true,
                    });
                }
                let mut claimed = m.clone();
                let now = Utc::now();
                let changes = claimed.perform(
                    Action::Acquire,
                    actor,
                    &ActionOptions::default(),
                    now,
                    &self.policy,
                )?;
                let txn = self.begin_write().await.map_err(db_err)?;
                let still_ready = Condition::all()
                    .add(M::Status.eq(i32::from(NodeStatus::Ready.code())))
                    .add(M::Owner.is_null());
                if !write_lifecycle(&txn, row.id, row.version, &claimed, Some(still_ready), now)
                    .await?
                {
                    // Somebody else took it between our read and our write.
                    txn.rollback().await.map_err(db_err)?;
                    continue;
                }
                let why = req
                    .options
                    .comment
                    .clone()
                    .unwrap_or_else(|| format!("allocated to {actor}"));
                for e in status_events(&claimed, actor, &changes, &why) {
                    insert_event(&txn, &e, now).await?;
                }
                txn.commit().await.map_err(db_err)?;
                // The claimed copy is what is stored now: no need to read it back.
                claimed.version = row.version + 1;
                claimed.updated = now;
                return Ok(Allocation {
                    machine: claimed,
                    dry_run: false,
                });
            }
        }
        Err(RepositoryError::NoMatch(
            self.explain_no_match(c, &net).await?,
        ))
    }

    async fn machine_expire_deadlines(&self, now: DateTime<Utc>) -> RepoResult<Vec<Machine>> {
        // On PostgreSQL, regions sharing the database take turns: the one
        // holding the advisory lock expires, the others skip this round
        // (each expiry is its own checked transaction anyway; the lock saves
        // the repeated work). Scoped to the schema, so separate deployments
        // (and test schemas) on one server do not exclude each other.
        let guard = if self.backend() == sea_orm::DbBackend::Postgres {
            let txn = self.begin_write().await.map_err(db_err)?;
            let row = txn
                .query_one_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    format!(
                        "SELECT pg_try_advisory_xact_lock({DEADLINE_LOCK}, hashtext(current_schema())) AS got"
                    ),
                ))
                .await
                .map_err(db_err)?;
            let got: bool = row
                .map(|r| r.try_get("", "got"))
                .transpose()
                .map_err(db_err)?
                .unwrap_or(false);
            if !got {
                txn.rollback().await.map_err(db_err)?;
                debug!("another region is expiring deadlines");
                return Ok(Vec::new());
            }
            Some(txn)
        } else {
            None
        };
        let out = self.expire_all(now).await;
        if let Some(txn) = guard {
            txn.commit().await.map_err(db_err)?;
        }
        out
    }
}

impl SqlStore {
    async fn expire_all(&self, now: DateTime<Utc>) -> RepoResult<Vec<Machine>> {
        let monitored: Vec<i32> = NodeStatus::ALL
            .into_iter()
            .filter(|s| s.is_monitored())
            .map(|s| i32::from(s.code()))
            .collect();
        let ids: Vec<String> = machine::Entity::find()
            .select_only()
            .column(machine::Column::SystemId)
            .filter(machine::Column::StatusDeadline.lte(now))
            .filter(machine::Column::Status.is_in(monitored))
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(db_err)?;
        let mut out = Vec::new();
        for sid in ids {
            let id = SystemId::parse(&sid)?;
            let policy = self.policy.clone();
            let res = self
                .change_lifecycle(&id, &Actor::System, "deadline passed", |m, _| {
                    Ok(m.expire(now, &policy).into_iter().collect())
                })
                .await;
            match res {
                Ok(m) if m.status.failure_status().is_none() => out.push(m),
                Ok(_) => {}
                // Deleted or changed meanwhile: nothing to expire.
                Err(RepositoryError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Deletes the rows of `E` under `parent` (by `parent_col`) whose id is not
/// in `wanted`, and returns the ids that remain: the rows to update in place.
async fn prune_children<C, E>(
    conn: &C,
    parent_col: E::Column,
    parent: i64,
    id_col: E::Column,
    wanted: impl Iterator<Item = i64>,
) -> RepoResult<HashSet<i64>>
where
    C: ConnectionTrait,
    E: EntityTrait,
    E::Column: ColumnTrait,
{
    let existing: HashSet<i64> = E::find()
        .select_only()
        .column(id_col)
        .filter(parent_col.eq(parent))
        .into_tuple::<i64>()
        .all(conn)
        .await
        .map_err(db_err)?
        .into_iter()
        .collect();
    let keep: HashSet<i64> = wanted.filter(|x| existing.contains(x)).collect();
    let gone: Vec<i64> = existing.difference(&keep).copied().collect();
    if !gone.is_empty() {
        E::delete_many()
            .filter(id_col.is_in(gone))
            .exec(conn)
            .await
            .map_err(db_err)?;
    }
    Ok(keep)
}

/// Brings the stored interfaces, links, disks and tags of machine `row_id`
/// in line with `m`: rows with a known id are updated in place (ids stay
/// stable for API clients), new ones inserted, missing ones deleted.
async fn sync_children<C: ConnectionTrait>(
    conn: &C,
    row_id: i64,
    m: &Machine,
    now: DateTime<Utc>,
) -> RepoResult<()> {
    machine_tag::Entity::delete_many()
        .filter(machine_tag::Column::MachineId.eq(row_id))
        .exec(conn)
        .await
        .map_err(db_err)?;
    if !m.tags.is_empty() {
        machine_tag::Entity::insert_many(m.tags.iter().map(|t| machine_tag::ActiveModel {
            machine_id: sea_orm::ActiveValue::Set(row_id),
            tag_name: sea_orm::ActiveValue::Set(t.clone()),
        }))
        .exec_without_returning(conn)
        .await
        .map_err(db_err)?;
    }

    let keep = prune_children::<_, interface::Entity>(
        conn,
        interface::Column::MachineId,
        row_id,
        interface::Column::Id,
        m.interfaces.iter().filter_map(|i| i.id.map(|x| x.0)),
    )
    .await?;
    for i in &m.interfaces {
        let iid = match i.id.map(|x| x.0).filter(|x| keep.contains(x)) {
            Some(iid) => {
                interface::Entity::update(interface_to_active(i, row_id))
                    .exec(conn)
                    .await
                    .map_err(crate::unique_as("interface", &i.name))?;
                iid
            }
            None => {
                let mut fresh = i.clone();
                fresh.id = None;
                interface::Entity::insert(interface_to_active(&fresh, row_id))
                    .exec(conn)
                    .await
                    .map_err(crate::unique_as("interface", &i.name))?
                    .last_insert_id
            }
        };
        let kept = prune_children::<_, ip_address::Entity>(
            conn,
            ip_address::Column::InterfaceId,
            iid,
            ip_address::Column::Id,
            i.links.iter().filter_map(|l| l.id.map(|x| x.0)),
        )
        .await?;
        for l in &i.links {
            let key =
                l.ip.map_or_else(|| "(link)".to_owned(), |ip| ip.to_string());
            if l.id.is_some_and(|x| kept.contains(&x.0)) {
                ip_address::Entity::update(link_to_active(l, iid, m.hostname.as_str(), now))
                    .exec(conn)
                    .await
                    .map_err(crate::unique_as("ip address", key))?;
            } else {
                let fresh = InterfaceLink {
                    id: None,
                    ..l.clone()
                };
                ip_address::Entity::insert(link_to_active(&fresh, iid, m.hostname.as_str(), now))
                    .exec_without_returning(conn)
                    .await
                    .map_err(crate::unique_as("ip address", key))?;
            }
        }
    }

    let keep = prune_children::<_, block_device::Entity>(
        conn,
        block_device::Column::MachineId,
        row_id,
        block_device::Column::Id,
        m.block_devices.iter().filter_map(|d| d.id.map(|x| x.0)),
    )
    .await?;
    for d in &m.block_devices {
        if d.id.is_some_and(|x| keep.contains(&x.0)) {
            block_device::Entity::update(block_device_to_active(d, row_id))
                .exec(conn)
                .await
                .map_err(crate::unique_as("block device", &d.name))?;
        } else {
            let mut fresh = d.clone();
            fresh.id = None;
            block_device::Entity::insert(block_device_to_active(&fresh, row_id))
                .exec_without_returning(conn)
                .await
                .map_err(crate::unique_as("block device", &d.name))?;
        }
    }
    Ok(())
}
