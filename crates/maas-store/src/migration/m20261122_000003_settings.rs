//! The region's settings (`maas/?op=set_config`), and what a machine's
//! owner or workload attached to it (`owner_data`, `workload_annotations`:
//! one map, as in MAAS where the first is the old name of the second).

#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("config")
                .if_not_exists()
                .col(text("name").primary_key())
                .col(text("value"))
                .take(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("machine")
                .add_column(text("owner_data").default("{}").take())
                .take(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("machine")
                .drop_column("owner_data")
                .take(),
        )
        .await?;
        m.drop_table(Table::drop().table("config").take()).await
    }
}
