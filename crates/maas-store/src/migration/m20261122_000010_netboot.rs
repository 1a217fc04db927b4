//! A machine's netboot flag: curtin turns it off (`op=netboot_off`) before
//! the reboot into the installed system, so the rack tells the machine to
//! boot its disk; deploying and releasing turn it back on.

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
                .add_column(boolean("netboot").default(true).take())
                .take(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("machine")
                .drop_column("netboot")
                .take(),
        )
        .await
        .map(|_| ())
    }
}
