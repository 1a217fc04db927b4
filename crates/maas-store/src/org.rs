//! Zones, resource pools, tags and domains.

use async_trait::async_trait;
use maas_core::ids::*;
use maas_core::org::{DEFAULT_POOL, DEFAULT_ZONE, Domain, ResourcePool, Tag, Zone, validate_name};
use maas_core::repo::{ConfigRepository, OrgRepository, RepoResult, RepositoryError};
use maas_core::types::DomainName;
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::entity::{config, domain, machine, machine_tag, resource_pool, tag, zone};
use crate::machine::bump_versions;
use crate::{SqlStore, db_err, unique_as};

#[async_trait]
impl OrgRepository for SqlStore {
    async fn zone_create(&self, name: &str, description: &str) -> RepoResult<Zone> {
        validate_name("name", name)?;
        let r = zone::ActiveModel {
            id: NotSet,
            name: Set(name.to_owned()),
            description: Set(description.to_owned()),
        }
        .insert(&self.db)
        .await
        .map_err(unique_as("zone", name))?;
        Ok(Zone {
            id: ZoneId(r.id),
            name: r.name,
            description: r.description,
        })
    }

    async fn zone_list(&self) -> RepoResult<Vec<Zone>> {
        Ok(zone::Entity::find()
            .order_by_asc(zone::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| Zone {
                id: ZoneId(r.id),
                name: r.name,
                description: r.description,
            })
            .collect())
    }

    async fn zone_delete(&self, name: &str) -> RepoResult<()> {
        if name == DEFAULT_ZONE {
            return Err(RepositoryError::Conflict {
                kind: "zone",
                key: name.into(),
                reason: "the default zone cannot be deleted".into(),
            });
        }
        let txn = self.begin_write().await.map_err(db_err)?;
        // MAAS moves a deleted zone's machines to the default zone.
        machine::Entity::update_many()
            .col_expr(machine::Column::Zone, Expr::value(DEFAULT_ZONE))
            .col_expr(
                machine::Column::Version,
                Expr::col(machine::Column::Version).add(1),
            )
            .filter(machine::Column::Zone.eq(name))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        let res = zone::Entity::delete_many()
            .filter(zone::Column::Name.eq(name))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("zone", name));
        }
        txn.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn pool_create(&self, name: &str, description: &str) -> RepoResult<ResourcePool> {
        validate_name("name", name)?;
        let r = resource_pool::ActiveModel {
            id: NotSet,
            name: Set(name.to_owned()),
            description: Set(description.to_owned()),
        }
        .insert(&self.db)
        .await
        .map_err(unique_as("resource pool", name))?;
        Ok(ResourcePool {
            id: PoolId(r.id),
            name: r.name,
            description: r.description,
        })
    }

    async fn pool_list(&self) -> RepoResult<Vec<ResourcePool>> {
        Ok(resource_pool::Entity::find()
            .order_by_asc(resource_pool::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| ResourcePool {
                id: PoolId(r.id),
                name: r.name,
                description: r.description,
            })
            .collect())
    }

    async fn pool_delete(&self, name: &str) -> RepoResult<()> {
        if name == DEFAULT_POOL {
            return Err(RepositoryError::Conflict {
                kind: "resource pool",
                key: name.into(),
                reason: "the default pool cannot be deleted".into(),
            });
        }
        let used = machine::Entity::find()
            .select_only()
            .column(machine::Column::Id)
            .filter(machine::Column::Pool.eq(name))
            .limit(1)
            .into_tuple::<i64>()
            .one(&self.db)
            .await
            .map_err(db_err)?;
        if used.is_some() {
            return Err(RepositoryError::Conflict {
                kind: "resource pool",
                key: name.into(),
                reason: "it still has machines".into(),
            });
        }
        let res = resource_pool::Entity::delete_many()
            .filter(resource_pool::Column::Name.eq(name))
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("resource pool", name));
        }
        Ok(())
    }

    async fn zone_update(
        &self,
        name: &str,
        new_name: Option<&str>,
        description: Option<&str>,
    ) -> RepoResult<Zone> {
        if let Some(n) = new_name {
            validate_name("name", n)?;
            if name == DEFAULT_ZONE && n != name {
                return Err(RepositoryError::Conflict {
                    kind: "zone",
                    key: name.into(),
                    reason: "the default zone cannot be renamed".into(),
                });
            }
        }
        let mut q = zone::Entity::update_many().filter(zone::Column::Name.eq(name));
        if let Some(n) = new_name {
            q = q.col_expr(zone::Column::Name, Expr::value(n));
        }
        if let Some(d) = description {
            q = q.col_expr(zone::Column::Description, Expr::value(d));
        }
        if new_name.is_some() || description.is_some() {
            // Machines refer to zones by name with ON UPDATE CASCADE.
            let res = q
                .exec(&self.db)
                .await
                .map_err(unique_as("zone", new_name.unwrap_or(name)))?;
            if res.rows_affected == 0 {
                return Err(RepositoryError::not_found("zone", name));
            }
        }
        let wanted = new_name.unwrap_or(name);
        self.zone_list()
            .await?
            .into_iter()
            .find(|z| z.name == wanted)
            .ok_or_else(|| RepositoryError::not_found("zone", wanted))
    }

    async fn pool_update(
        &self,
        name: &str,
        new_name: Option<&str>,
        description: Option<&str>,
    ) -> RepoResult<ResourcePool> {
        if let Some(n) = new_name {
            validate_name("name", n)?;
            if name == DEFAULT_POOL && n != name {
                return Err(RepositoryError::Conflict {
                    kind: "resource pool",
                    key: name.into(),
                    reason: "the default pool cannot be renamed".into(),
                });
            }
        }
        let mut q =
            resource_pool::Entity::update_many().filter(resource_pool::Column::Name.eq(name));
        if let Some(n) = new_name {
            q = q.col_expr(resource_pool::Column::Name, Expr::value(n));
        }
        if let Some(d) = description {
            q = q.col_expr(resource_pool::Column::Description, Expr::value(d));
        }
        if new_name.is_some() || description.is_some() {
            let res = q
                .exec(&self.db)
                .await
                .map_err(unique_as("resource pool", new_name.unwrap_or(name)))?;
            if res.rows_affected == 0 {
                return Err(RepositoryError::not_found("resource pool", name));
            }
        }
        let wanted = new_name.unwrap_or(name);
        self.pool_list()
            .await?
            .into_iter()
            .find(|p| p.name == wanted)
            .ok_or_else(|| RepositoryError::not_found("resource pool", wanted))
    }

    async fn tag_create(
        &self,
        name: &str,
        comment: &str,
        definition: &str,
        kernel_opts: &str,
    ) -> RepoResult<Tag> {
        validate_name("name", name)?;
        let r = tag::ActiveModel {
            id: NotSet,
            name: Set(name.to_owned()),
            definition: Set(definition.to_owned()),
            comment: Set(comment.to_owned()),
            kernel_opts: Set(kernel_opts.to_owned()),
        }
        .insert(&self.db)
        .await
        .map_err(unique_as("tag", name))?;
        Ok(Tag {
            id: TagId(r.id),
            name: r.name,
            definition: r.definition,
            comment: r.comment,
            kernel_opts: r.kernel_opts,
        })
    }

    async fn tag_list(&self) -> RepoResult<Vec<Tag>> {
        Ok(tag::Entity::find()
            .order_by_asc(tag::Column::Name)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| Tag {
                id: TagId(r.id),
                name: r.name,
                definition: r.definition,
                comment: r.comment,
                kernel_opts: r.kernel_opts,
            })
            .collect())
    }

    async fn tag_delete(&self, name: &str) -> RepoResult<()> {
        let txn = self.begin_write().await.map_err(db_err)?;
        let tagged: Vec<i64> = machine_tag::Entity::find()
            .select_only()
            .column(machine_tag::Column::MachineId)
            .filter(machine_tag::Column::TagName.eq(name))
            .into_tuple()
            .all(&txn)
            .await
            .map_err(db_err)?;
        machine_tag::Entity::delete_many()
            .filter(machine_tag::Column::TagName.eq(name))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        bump_versions(&txn, &tagged).await?;
        let res = tag::Entity::delete_many()
            .filter(tag::Column::Name.eq(name))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("tag", name));
        }
        txn.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn tag_update_machines(
        &self,
        name: &str,
        add: &[SystemId],
        remove: &[SystemId],
    ) -> RepoResult<()> {
        let txn = self.begin_write().await.map_err(db_err)?;
        tag::Entity::find()
            .filter(tag::Column::Name.eq(name))
            .one(&txn)
            .await
            .map_err(db_err)?
            .ok_or_else(|| RepositoryError::not_found("tag", name))?;
        let ids = |list: &[SystemId]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
        let lookup = |list: Vec<String>| {
            machine::Entity::find()
                .select_only()
                .column(machine::Column::Id)
                .column(machine::Column::SystemId)
                .filter(machine::Column::SystemId.is_in(list))
                .into_tuple::<(i64, String)>()
        };
        let found = lookup(ids(add)).all(&txn).await.map_err(db_err)?;
        if let Some(missing) = add
            .iter()
            .find(|s| !found.iter().any(|(_, f)| f == s.as_str()))
        {
            return Err(RepositoryError::not_found("machine", missing));
        }
        if !found.is_empty() {
            machine_tag::Entity::insert_many(found.iter().map(|(id, _)| {
                machine_tag::ActiveModel {
                    machine_id: Set(*id),
                    tag_name: Set(name.to_owned()),
                }
            }))
            .on_conflict(
                OnConflict::columns([machine_tag::Column::MachineId, machine_tag::Column::TagName])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await
            .map_err(db_err)?;
        }
        let gone = lookup(ids(remove)).all(&txn).await.map_err(db_err)?;
        if !gone.is_empty() {
            machine_tag::Entity::delete_many()
                .filter(machine_tag::Column::TagName.eq(name))
                .filter(machine_tag::Column::MachineId.is_in(gone.iter().map(|(id, _)| *id)))
                .exec(&txn)
                .await
                .map_err(db_err)?;
        }
        let touched: Vec<i64> = found.iter().chain(&gone).map(|(id, _)| *id).collect();
        bump_versions(&txn, &touched).await?;
        txn.commit().await.map_err(db_err)?;
        Ok(())
    }

    async fn domain_create(&self, name: &str, authoritative: bool) -> RepoResult<Domain> {
        let name = DomainName::parse(name)?;
        let r = domain::ActiveModel {
            id: NotSet,
            name: Set(name.to_string()),
            authoritative: Set(authoritative),
            ttl: Set(None),
        }
        .insert(&self.db)
        .await
        .map_err(unique_as("domain", &name))?;
        Ok(Domain {
            id: DomainId(r.id),
            name: r.name,
            authoritative: r.authoritative,
            ttl: r.ttl.and_then(|t| u32::try_from(t).ok()),
        })
    }

    async fn domain_list(&self) -> RepoResult<Vec<Domain>> {
        Ok(domain::Entity::find()
            .order_by_asc(domain::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| Domain {
                id: DomainId(r.id),
                name: r.name,
                authoritative: r.authoritative,
                ttl: r.ttl.and_then(|t| u32::try_from(t).ok()),
            })
            .collect())
    }

    async fn domain_update(
        &self,
        name: &str,
        new_name: Option<&str>,
        authoritative: Option<bool>,
        ttl: Option<Option<u32>>,
    ) -> RepoResult<Domain> {
        let new_name = new_name.map(DomainName::parse).transpose()?;
        let mut q = domain::Entity::update_many().filter(domain::Column::Name.eq(name));
        let mut any = false;
        if let Some(n) = &new_name {
            q = q.col_expr(domain::Column::Name, Expr::value(n.to_string()));
            any = true;
        }
        if let Some(a) = authoritative {
            q = q.col_expr(domain::Column::Authoritative, Expr::value(a));
            any = true;
        }
        if let Some(t) = ttl {
            q = q.col_expr(domain::Column::Ttl, Expr::value(t.map(i64::from)));
            any = true;
        }
        let wanted = new_name
            .as_ref()
            .map_or(name.to_owned(), ToString::to_string);
        if any {
            // Machines refer to domains by name with ON UPDATE CASCADE.
            let res = q
                .exec(&self.db)
                .await
                .map_err(unique_as("domain", &wanted))?;
            if res.rows_affected == 0 {
                return Err(RepositoryError::not_found("domain", name));
            }
        }
        self.domain_list()
            .await?
            .into_iter()
            .find(|d| d.name == wanted)
            .ok_or_else(|| RepositoryError::not_found("domain", wanted))
    }

    async fn domain_delete(&self, name: &str) -> RepoResult<()> {
        let used = machine::Entity::find()
            .select_only()
            .column(machine::Column::Id)
            .filter(machine::Column::Domain.eq(name))
            .limit(1)
            .into_tuple::<i64>()
            .one(&self.db)
            .await
            .map_err(db_err)?;
        if used.is_some() {
            return Err(RepositoryError::Conflict {
                kind: "domain",
                key: name.into(),
                reason: "machines are still in it".into(),
            });
        }
        let res = domain::Entity::delete_many()
            .filter(domain::Column::Name.eq(name))
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        if res.rows_affected == 0 {
            return Err(RepositoryError::not_found("domain", name));
        }
        Ok(())
    }
}

#[async_trait]
impl ConfigRepository for SqlStore {
    async fn config_list(&self) -> RepoResult<std::collections::BTreeMap<String, String>> {
        Ok(config::Entity::find()
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(|r| (r.name, r.value))
            .collect())
    }

    async fn config_set(&self, name: &str, json_value: &str) -> RepoResult<()> {
        config::Entity::insert(config::ActiveModel {
            name: Set(name.to_owned()),
            value: Set(json_value.to_owned()),
        })
        .on_conflict(
            OnConflict::column(config::Column::Name)
                .update_column(config::Column::Value)
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await
        .map_err(db_err)?;
        Ok(())
    }
}
