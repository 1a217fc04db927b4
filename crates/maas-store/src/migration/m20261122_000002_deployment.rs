//! What a deployment was asked for, kept with the machine so a region
//! restart keeps it: the OS, the series and the user data (served once the
//! deployed OS boots).

#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for col in [
            text("osystem").default("").take(),
            text("distro_series").default("").take(),
            blob_null("user_data").take(),
        ] {
            let mut col = col;
            m.alter_table(Table::alter().table("machine").add_column(&mut col).take())
                .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for name in ["osystem", "distro_series", "user_data"] {
            m.alter_table(Table::alter().table("machine").drop_column(name).take())
                .await?;
        }
        Ok(())
    }
}
