//! The storage layout a machine deploys with (`set_storage_layout`), as
//! maas-curtin's `StorageLayout` JSON; none means the configured default.

#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("machine")
                .add_column(text_null("storage_layout").take())
                .take(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("machine")
                .drop_column("storage_layout")
                .take(),
        )
        .await
    }
}
