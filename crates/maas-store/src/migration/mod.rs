//! Schema migrations. One migration per file: `DeriveMigrationName` names a
//! migration after its file stem, and that name is what `seaql_migrations`
//! records as applied.

use sea_orm_migration::prelude::*;

mod m20261122_000001_initial;
mod m20261122_000002_deployment;
mod m20261122_000003_settings;
mod m20261122_000004_script_results;
mod m20261122_000005_storage_layout;
mod m20261122_000006_default_gateways;
mod m20261122_000007_devices;
mod m20261122_000008_oauth_nonces;
mod m20261122_000009_static_routes;
mod m20261122_000010_netboot;

/// The list of migrations, oldest first.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_initial::Migration),
            Box::new(m20261122_000002_deployment::Migration),
            Box::new(m20261122_000003_settings::Migration),
            Box::new(m20261122_000004_script_results::Migration),
            Box::new(m20261122_000005_storage_layout::Migration),
            Box::new(m20261122_000006_default_gateways::Migration),
            Box::new(m20261122_000007_devices::Migration),
            Box::new(m20261122_000008_oauth_nonces::Migration),
            Box::new(m20261122_000009_static_routes::Migration),
            Box::new(m20261122_000010_netboot::Migration),
        ]
    }
}
