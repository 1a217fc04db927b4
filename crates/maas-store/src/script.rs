//! Script results (see `maas_core::script`).

use async_trait::async_trait;
use chrono::Utc;
use maas_core::ids::SystemId;
use maas_core::repo::{RepoResult, RepositoryError, ScriptRepository};
use maas_core::script::{OutputStream, RunKind, ScriptResult, ScriptSet};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::entity::{machine, script_result, script_set};
use crate::{SqlStore, db_err, is_unique_violation};

async fn machine_row<C: sea_orm::ConnectionTrait>(conn: &C, id: &SystemId) -> RepoResult<i64> {
    machine::Entity::find()
        .select_only()
        .column(machine::Column::Id)
        .filter(machine::Column::SystemId.eq(id.as_str()))
        .into_tuple::<i64>()
        .one(conn)
        .await
        .map_err(db_err)?
        .ok_or_else(|| RepositoryError::not_found("machine", id))
}

fn kind_of(s: &str, set: i64) -> RepoResult<RunKind> {
    RunKind::parse(s)
        .ok_or_else(|| crate::convert::corrupt("script_set", set, format!("kind {s:?}")))
}

#[async_trait]
impl ScriptRepository for SqlStore {
    async fn script_set_create(
        &self,
        machine: &SystemId,
        kind: RunKind,
        keep: usize,
    ) -> RepoResult<i64> {
        let txn = self.begin_write().await.map_err(db_err)?;
        let mid = machine_row(&txn, machine).await?;
        let made = script_set::ActiveModel {
            id: NotSet,
            machine_id: Set(mid),
            kind: Set(kind.as_str().to_owned()),
            created: Set(Utc::now()),
        }
        .insert(&txn)
        .await
        .map_err(db_err)?;
        let older: Vec<i64> = script_set::Entity::find()
            .select_only()
            .column(script_set::Column::Id)
            .filter(script_set::Column::MachineId.eq(mid))
            .filter(script_set::Column::Kind.eq(kind.as_str()))
            .order_by_desc(script_set::Column::Id)
            .into_tuple::<i64>()
            .all(&txn)
            .await
            .map_err(db_err)?
            .into_iter()
            // (SQLite takes no OFFSET without a LIMIT: skip here.)
            .skip(keep.max(1))
            .collect();
        if !older.is_empty() {
            // Results go with their set (ON DELETE CASCADE); deleting them
            // first keeps pruning independent of the foreign-key setting.
            script_result::Entity::delete_many()
                .filter(script_result::Column::ScriptSetId.is_in(older.iter().copied()))
                .exec(&txn)
                .await
                .map_err(db_err)?;
            script_set::Entity::delete_many()
                .filter(script_set::Column::Id.is_in(older))
                .exec(&txn)
                .await
                .map_err(db_err)?;
        }
        txn.commit().await.map_err(db_err)?;
        Ok(made.id)
    }

    async fn script_set_latest(
        &self,
        machine: &SystemId,
        kind: RunKind,
    ) -> RepoResult<Option<i64>> {
        let mid = machine_row(&self.db, machine).await?;
        script_set::Entity::find()
            .select_only()
            .column(script_set::Column::Id)
            .filter(script_set::Column::MachineId.eq(mid))
            .filter(script_set::Column::Kind.eq(kind.as_str()))
            .order_by_desc(script_set::Column::Id)
            .into_tuple::<i64>()
            .one(&self.db)
            .await
            .map_err(db_err)
    }

    async fn script_output_store(
        &self,
        set: i64,
        script: &str,
        stream: OutputStream,
        data: &[u8],
        exit_status: Option<i32>,
    ) -> RepoResult<()> {
        if script.is_empty() {
            return Err(maas_core::error::ValidationError::new(
                "script",
                script,
                "a script result needs a name",
            )
            .into());
        }
        // Twice at most: a concurrent first output of the same script makes
        // the insert lose; the second round updates the winner's row.
        for _ in 0..2 {
            let txn = self.begin_write().await.map_err(db_err)?;
            script_set::Entity::find_by_id(set)
                .one(&txn)
                .await
                .map_err(db_err)?
                .ok_or_else(|| RepositoryError::not_found("script set", set))?;
            let now = Utc::now();
            let existing = script_result::Entity::find()
                .filter(script_result::Column::ScriptSetId.eq(set))
                .filter(script_result::Column::Name.eq(script))
                .one(&txn)
                .await
                .map_err(db_err)?;
            let mut row: script_result::ActiveModel = match existing {
                Some(r) => r.into(),
                None => script_result::ActiveModel {
                    id: NotSet,
                    script_set_id: Set(set),
                    name: Set(script.to_owned()),
                    exit_status: Set(None),
                    output: Set(Vec::new()),
                    stdout: Set(Vec::new()),
                    stderr: Set(Vec::new()),
                    result: Set(Vec::new()),
                    created: Set(now),
                    updated: Set(now),
                },
            };
            let bytes = Set(data.to_vec());
            match stream {
                OutputStream::Combined => row.output = bytes,
                OutputStream::Stdout => row.stdout = bytes,
                OutputStream::Stderr => row.stderr = bytes,
                OutputStream::Result => row.result = bytes,
            }
            if exit_status.is_some() {
                row.exit_status = Set(exit_status);
            }
            row.updated = Set(now);
            let res = if row.id.is_not_set() {
                row.insert(&txn).await.map(|_| ())
            } else {
                row.update(&txn).await.map(|_| ())
            };
            match res {
                Ok(()) => {
                    txn.commit().await.map_err(db_err)?;
                    return Ok(());
                }
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(db_err(e)),
            }
        }
        Err(RepositoryError::Conflict {
            kind: "script result",
            key: script.to_owned(),
            reason: "written concurrently; retry".into(),
        })
    }

    async fn script_set_list(&self, machine: &SystemId) -> RepoResult<Vec<ScriptSet>> {
        let mid = machine_row(&self.db, machine).await?;
        let sets = script_set::Entity::find()
            .filter(script_set::Column::MachineId.eq(mid))
            .order_by_desc(script_set::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        let mut results = script_result::Entity::find()
            .filter(script_result::Column::ScriptSetId.is_in(sets.iter().map(|s| s.id)))
            .order_by_asc(script_result::Column::Name)
            .all(&self.db)
            .await
            .map_err(db_err)?;
        sets.into_iter()
            .map(|s| {
                let mine: Vec<ScriptResult> = results
                    .extract_if(.., |r| r.script_set_id == s.id)
                    .map(|r| ScriptResult {
                        id: r.id,
                        name: r.name,
                        exit_status: r.exit_status,
                        output: r.output,
                        stdout: r.stdout,
                        stderr: r.stderr,
                        result: r.result,
                        created: r.created,
                        updated: r.updated,
                    })
                    .collect();
                Ok(ScriptSet {
                    id: s.id,
                    system_id: machine.clone(),
                    kind: kind_of(&s.kind, s.id)?,
                    created: s.created,
                    results: mine,
                })
            })
            .collect()
    }
}
