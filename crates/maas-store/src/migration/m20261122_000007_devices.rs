//! Devices (MAAS node type 1): nodes MAAS tracks addresses and DNS for but
//! does not provision, kept in the machine table with their type and,
//! optionally, the machine they belong to.

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
                .add_column(integer("node_type").default(0).take())
                .take(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table("machine")
                .add_column(text_null("parent").take())
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("machine_by_node_type")
                .table("machine")
                .col("node_type")
                .col("system_id")
                .take(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("machine_by_node_type")
                .table("machine")
                .to_owned(),
        )
        .await?;
        for col in ["node_type", "parent"] {
            m.alter_table(Table::alter().table("machine").drop_column(col).take())
                .await?;
        }
        Ok(())
    }
}
