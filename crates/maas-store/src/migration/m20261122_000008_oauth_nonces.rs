//! OAuth nonces seen, shared by every region on the database, so a request
//! replayed to another region within the timestamp window is refused too.

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
                .table("oauth_nonce")
                .if_not_exists()
                .col(text("token_key"))
                .col(text("nonce"))
                .col(
                    ColumnDef::new("seen_at")
                        .timestamp_with_time_zone()
                        .not_null()
                        .take(),
                )
                .primary_key(Index::create().col("token_key").col("nonce"))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("oauth_nonce_by_age")
                .table("oauth_nonce")
                .col("seen_at")
                .take(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("oauth_nonce").take())
            .await
    }
}
