//! The initial schema.
//!
//! Zone, pool, domain, owner and tag references are by name, with
//! `ON UPDATE CASCADE`: a rename follows through without joins on read.

// async-trait declares `up`/`down` with an elided `SchemaManager` lifetime;
// spelling it `<'_>` makes the signatures differ.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

fn fk(
    from: (&'static str, &'static str),
    to: (&'static str, &'static str),
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(on_delete)
        .on_update(ForeignKeyAction::Cascade)
        .take()
}

fn ts(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .not_null()
        .take()
}

fn ts_null(name: &'static str) -> ColumnDef {
    ColumnDef::new(name)
        .timestamp_with_time_zone()
        .null()
        .take()
}

fn named_table(name: &'static str) -> TableCreateStatement {
    Table::create()
        .table(name)
        .if_not_exists()
        .col(big_pk_auto("id"))
        .col(string_uniq("name"))
        .col(text("description").default(""))
        .take()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::{Cascade, Restrict, SetNull};

        m.create_table(named_table("zone")).await?;
        m.create_table(named_table("resource_pool")).await?;
        m.create_table(
            Table::create()
                .table("domain")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(string_uniq("name"))
                .col(boolean("authoritative").default(true))
                .col(big_integer_null("ttl"))
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("tag")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(string_uniq("name"))
                .col(text("definition").default(""))
                .col(text("comment").default(""))
                .col(text("kernel_opts").default(""))
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("app_user")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(string_uniq("username"))
                .col(string("email").default(""))
                .col(boolean("is_admin").default(false))
                .col(text_null("password_hash"))
                .col(ts("created"))
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("ssh_key")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(big_integer("user_id"))
                .col(text("key"))
                .foreign_key(&mut fk(("ssh_key", "user_id"), ("app_user", "id"), Cascade))
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("api_token")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(big_integer("user_id"))
                .col(string("name").default(""))
                .col(string("consumer_key"))
                .col(string_uniq("token_key"))
                .col(string("token_secret"))
                .col(ts("created"))
                .foreign_key(&mut fk(
                    ("api_token", "user_id"),
                    ("app_user", "id"),
                    Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_table(named_table("space")).await?;
        m.create_table(
            Table::create()
                .table("fabric")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(string_uniq("name"))
                .col(string_null("class_type"))
                .col(text("description").default(""))
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("vlan")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(big_integer("fabric_id"))
                .col(integer("vid"))
                .col(string_null("name"))
                .col(integer("mtu").default(1500))
                .col(boolean("dhcp_on").default(false))
                .col(string_null("primary_rack"))
                .col(string_null("secondary_rack"))
                .col(big_integer_null("relay_vlan_id"))
                .col(big_integer_null("space_id"))
                .col(text("description").default(""))
                .foreign_key(&mut fk(("vlan", "fabric_id"), ("fabric", "id"), Cascade))
                .foreign_key(&mut fk(("vlan", "relay_vlan_id"), ("vlan", "id"), SetNull))
                .foreign_key(&mut fk(("vlan", "space_id"), ("space", "id"), SetNull))
                .index(
                    Index::create()
                        .unique()
                        .name("vlan_fabric_vid")
                        .col("fabric_id")
                        .col("vid"),
                )
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("subnet")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(string_uniq("name"))
                .col(string_uniq("cidr"))
                .col(big_integer("vlan_id"))
                .col(string_null("gateway_ip"))
                .col(text("dns_servers").default("[]"))
                .col(boolean("managed").default(true))
                .col(boolean("allow_dns").default(true))
                .col(boolean("allow_proxy").default(true))
                .col(boolean("active_discovery").default(false))
                .col(text("description").default(""))
                .foreign_key(&mut fk(("subnet", "vlan_id"), ("vlan", "id"), Restrict))
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("ip_range")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(big_integer("subnet_id"))
                .col(string("kind"))
                .col(string("start_ip"))
                .col(string("end_ip"))
                .col(text("comment").default(""))
                .foreign_key(&mut fk(
                    ("ip_range", "subnet_id"),
                    ("subnet", "id"),
                    Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("machine")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(string_uniq("system_id"))
                .col(string("hostname"))
                .col(string("domain"))
                .col(string("architecture"))
                .col(integer("status"))
                .col(integer_null("previous_status"))
                .col(string_null("owner"))
                .col(string("zone"))
                .col(string("pool"))
                .col(string("power_type").default(""))
                .col(text("power_parameters").default("{}"))
                .col(string("power_state").default("unknown"))
                .col(string_null("boot_interface"))
                .col(text("hardware").default("{}"))
                .col(integer("cpu_count").default(0))
                .col(integer("cpu_speed").default(0))
                .col(big_integer("memory_mib").default(0))
                .col(double("allocation_cost").default(0.0))
                .col(boolean("locked").default(false))
                .col(boolean("ephemeral_deploy").default(false))
                .col(text("description").default(""))
                .col(text("error_description").default(""))
                .col(ts_null("status_deadline"))
                .col(ts("created"))
                .col(ts("updated"))
                .col(big_integer("version").default(0))
                .foreign_key(&mut fk(
                    ("machine", "owner"),
                    ("app_user", "username"),
                    Restrict,
                ))
                .foreign_key(&mut fk(("machine", "zone"), ("zone", "name"), Restrict))
                .foreign_key(&mut fk(
                    ("machine", "pool"),
                    ("resource_pool", "name"),
                    Restrict,
                ))
                .foreign_key(&mut fk(("machine", "domain"), ("domain", "name"), Restrict))
                .index(
                    Index::create()
                        .unique()
                        .name("machine_fqdn")
                        .col("hostname")
                        .col("domain"),
                )
                .take(),
        )
        .await?;
        for (name, cols) in [
            (
                "machine_status_cost",
                &["status", "allocation_cost", "system_id"][..],
            ),
            ("machine_owner", &["owner"][..]),
            ("machine_deadline", &["status_deadline"][..]),
        ] {
            let mut idx = Index::create()
                .if_not_exists()
                .name(name)
                .table("machine")
                .take();
            for c in cols {
                idx.col(*c);
            }
            m.create_index(idx).await?;
        }
        m.create_table(
            Table::create()
                .table("machine_tag")
                .if_not_exists()
                .col(big_integer("machine_id"))
                .col(string("tag_name"))
                .primary_key(Index::create().col("machine_id").col("tag_name"))
                .foreign_key(&mut fk(
                    ("machine_tag", "machine_id"),
                    ("machine", "id"),
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    ("machine_tag", "tag_name"),
                    ("tag", "name"),
                    Cascade,
                ))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("machine_tag_by_tag")
                .table("machine_tag")
                .col("tag_name")
                .col("machine_id")
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("interface")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(big_integer("machine_id"))
                .col(string("name"))
                .col(string("kind"))
                .col(string_null("mac"))
                .col(text("parents").default("[]"))
                .col(big_integer_null("vlan_id"))
                .col(boolean("enabled").default(true))
                .col(boolean("link_connected").default(true))
                .col(integer("link_speed").default(0))
                .col(integer("interface_speed").default(0))
                .col(string("vendor").default(""))
                .col(string("product").default(""))
                .col(string("driver").default(""))
                .col(text("tags").default("[]"))
                .col(text("params").default("{}"))
                .foreign_key(&mut fk(
                    ("interface", "machine_id"),
                    ("machine", "id"),
                    Cascade,
                ))
                .foreign_key(&mut fk(("interface", "vlan_id"), ("vlan", "id"), SetNull))
                .index(
                    Index::create()
                        .unique()
                        .name("interface_machine_name")
                        .col("machine_id")
                        .col("name"),
                )
                .take(),
        )
        .await?;
        // A MAC identifies one physical NIC across the whole fleet (PXE boot
        // finds the machine by it); bonds and VLANs reuse their parent's MAC.
        m.get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX IF NOT EXISTS interface_physical_mac ON interface (mac) WHERE kind = 'physical'",
            )
            .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("interface_mac")
                .table("interface")
                .col("mac")
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("block_device")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(big_integer("machine_id"))
                .col(string("name"))
                .col(string("kind"))
                .col(big_integer("size_bytes"))
                .col(integer("block_size").default(512))
                .col(string("serial").default(""))
                .col(string("model").default(""))
                .col(boolean("rotational").default(false))
                .col(string_null("id_path"))
                .col(text("tags").default("[]"))
                .foreign_key(&mut fk(
                    ("block_device", "machine_id"),
                    ("machine", "id"),
                    Cascade,
                ))
                .index(
                    Index::create()
                        .unique()
                        .name("block_device_machine_name")
                        .col("machine_id")
                        .col("name"),
                )
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("ip_address")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(big_integer_null("subnet_id"))
                .col(string_null("ip"))
                .col(string("alloc_type"))
                .col(big_integer_null("interface_id"))
                .col(string_null("hostname"))
                .col(ts("created"))
                .foreign_key(&mut fk(
                    ("ip_address", "subnet_id"),
                    ("subnet", "id"),
                    Cascade,
                ))
                .foreign_key(&mut fk(
                    ("ip_address", "interface_id"),
                    ("interface", "id"),
                    Cascade,
                ))
                // Never the same address twice in a subnet (NULLs, links
                // without an address, do not collide).
                .index(
                    Index::create()
                        .unique()
                        .name("ip_address_subnet_ip")
                        .col("subnet_id")
                        .col("ip"),
                )
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("ip_address_interface")
                .table("ip_address")
                .col("interface_id")
                .take(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("event")
                .if_not_exists()
                .col(big_pk_auto("id"))
                .col(ts("created"))
                .col(string("level"))
                .col(string("kind"))
                .col(string_null("actor"))
                .col(string_null("system_id"))
                .col(integer_null("status_from"))
                .col(integer_null("status_to"))
                .col(text("message"))
                .take(),
        )
        .await?;
        m.create_index(
            Index::create()
                .if_not_exists()
                .name("event_system_id")
                .table("event")
                .col("system_id")
                .col("id")
                .take(),
        )
        .await?;
        // What every machine starts in (MAAS ships the same three).
        for (table, name) in [("zone", "default"), ("resource_pool", "default")] {
            m.exec_stmt(
                Query::insert()
                    .into_table(table)
                    .columns(["name", "description"])
                    .values_panic([name.into(), "".into()])
                    .take(),
            )
            .await?;
        }
        m.exec_stmt(
            Query::insert()
                .into_table("domain")
                .columns(["name", "authoritative"])
                .values_panic(["maas".into(), true.into()])
                .take(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "event",
            "ip_address",
            "block_device",
            "interface",
            "machine_tag",
            "machine",
            "ip_range",
            "subnet",
            "vlan",
            "fabric",
            "space",
            "api_token",
            "ssh_key",
            "app_user",
            "tag",
            "domain",
            "resource_pool",
            "zone",
        ] {
            m.drop_table(Table::drop().table(t).if_exists().take())
                .await?;
        }
        Ok(())
    }
}
