//! The links a machine's default routes go through
//! (`set_default_gateway`), one per IP family; none means the first link
//! with a gateway.

#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in ["gateway_link_ipv4", "gateway_link_ipv6"] {
            m.alter_table(
                Table::alter()
                    .table("machine")
                    .add_column(big_integer_null(col).take())
                    .take(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in ["gateway_link_ipv4", "gateway_link_ipv6"] {
            m.alter_table(Table::alter().table("machine").drop_column(col).take())
                .await?;
        }
        Ok(())
    }
}
