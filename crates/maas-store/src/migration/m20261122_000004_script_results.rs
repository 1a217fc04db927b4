//! Script results: one set per commissioning, testing or installation run
//! of a machine, and each script's outputs in it.

#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

fn ts(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .take()
}

fn cascade(
    from: (&'static str, &'static str),
    to: (&'static str, &'static str),
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(ForeignKeyAction::Cascade)
        .on_update(ForeignKeyAction::Cascade)
        .take()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("script_set")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(big_integer("machine_id"))
                .col(text("kind"))
                .col(ts("created"))
                .foreign_key(&mut cascade(
                    ("script_set", "machine_id"),
                    ("machine", "id"),
                ))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("script_set_by_machine")
                .table("script_set")
                .col("machine_id")
                .col("kind")
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("script_result")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(big_integer("script_set_id"))
                .col(text("name"))
                .col(integer_null("exit_status"))
                .col(blob("output"))
                .col(blob("stdout"))
                .col(blob("stderr"))
                .col(blob("result"))
                .col(ts("created"))
                .col(ts("updated"))
                .foreign_key(&mut cascade(
                    ("script_result", "script_set_id"),
                    ("script_set", "id"),
                ))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("script_result_by_set_and_name")
                .table("script_result")
                .col("script_set_id")
                .col("name")
                .unique()
                .take(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("script_result").take())
            .await?;
        m.drop_table(Table::drop().table("script_set").take()).await
    }
}
