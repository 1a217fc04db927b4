//! Static routes between subnets.

#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

fn cascade(col: &'static str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from("static_route", col)
        .to("subnet", "id")
        .on_delete(ForeignKeyAction::Cascade)
        .on_update(ForeignKeyAction::Cascade)
        .take()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("static_route")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(big_integer("source_id"))
                .col(big_integer("destination_id"))
                .col(text("gateway_ip"))
                .col(big_integer("metric"))
                .foreign_key(&mut cascade("source_id"))
                .foreign_key(&mut cascade("destination_id"))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("static_route_unique")
                .table("static_route")
                .col("source_id")
                .col("destination_id")
                .col("gateway_ip")
                .unique()
                .take(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("static_route").take())
            .await
    }
}
