//! sea-orm entities: one module per table, no relations declared (queries
//! join explicitly, so each one's cost is visible where it is written).
//!
//! JSON-shaped fields are TEXT holding serde_json, so SQLite and PostgreSQL
//! store them alike; anything a query filters on is a real column.

#![allow(missing_docs)]

macro_rules! no_relations {
    () => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}
        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod zone {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "zone")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub description: String,
    }
    no_relations!();
}

pub mod resource_pool {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "resource_pool")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub description: String,
    }
    no_relations!();
}

pub mod domain {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "domain")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub authoritative: bool,
        pub ttl: Option<i64>,
    }
    no_relations!();
}

pub mod tag {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tag")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub definition: String,
        pub comment: String,
        pub kernel_opts: String,
    }
    no_relations!();
}

pub mod app_user {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "app_user")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub username: String,
        pub email: String,
        pub is_admin: bool,
        pub password_hash: Option<String>,
        pub created: DateTimeUtc,
    }
    no_relations!();
}

pub mod ssh_key {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ssh_key")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        pub key: String,
    }
    no_relations!();
}

pub mod api_token {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_token")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        pub name: String,
        pub consumer_key: String,
        pub token_key: String,
        pub token_secret: String,
        pub created: DateTimeUtc,
    }
    // No derived Debug: the row holds a secret.
    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("api_token::Model")
                .field("id", &self.id)
                .field("token_key", &self.token_key)
                .finish_non_exhaustive()
        }
    }
    no_relations!();
}

pub mod space {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "space")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub description: String,
    }
    no_relations!();
}

pub mod fabric {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "fabric")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub class_type: Option<String>,
        pub description: String,
    }
    no_relations!();
}

pub mod vlan {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "vlan")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub fabric_id: i64,
        pub vid: i32,
        pub name: Option<String>,
        pub mtu: i32,
        pub dhcp_on: bool,
        pub primary_rack: Option<String>,
        pub secondary_rack: Option<String>,
        pub relay_vlan_id: Option<i64>,
        pub space_id: Option<i64>,
        pub description: String,
    }
    no_relations!();
}

pub mod subnet {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "subnet")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub cidr: String,
        pub vlan_id: i64,
        pub gateway_ip: Option<String>,
        /// JSON array of addresses.
        pub dns_servers: String,
        pub managed: bool,
        pub allow_dns: bool,
        pub allow_proxy: bool,
        pub active_discovery: bool,
        pub description: String,
    }
    no_relations!();
}

pub mod ip_range {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ip_range")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub subnet_id: i64,
        pub kind: String,
        pub start_ip: String,
        pub end_ip: String,
        pub comment: String,
    }
    no_relations!();
}

pub mod ip_address {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ip_address")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub subnet_id: Option<i64>,
        pub ip: Option<String>,
        pub alloc_type: String,
        pub interface_id: Option<i64>,
        pub hostname: Option<String>,
        pub created: DateTimeUtc,
    }
    no_relations!();
}

pub mod machine {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "machine")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub system_id: String,
        pub hostname: String,
        pub domain: String,
        pub architecture: String,
        pub status: i32,
        pub previous_status: Option<i32>,
        pub owner: Option<String>,
        pub zone: String,
        pub pool: String,
        pub power_type: String,
        /// JSON object. Secret: never logged.
        pub power_parameters: String,
        pub power_state: String,
        pub boot_interface: Option<String>,
        /// JSON of `HardwareInventory`.
        pub hardware: String,
        pub cpu_count: i32,
        pub cpu_speed: i32,
        pub memory_mib: i64,
        /// `cpu_count + memory_mib / 1024`, kept for ordering allocations.
        pub allocation_cost: f64,
        pub locked: bool,
        pub ephemeral_deploy: bool,
        pub netboot: bool,
        pub osystem: String,
        pub distro_series: String,
        pub user_data: Option<Vec<u8>>,
        /// JSON object of strings.
        pub owner_data: String,
        /// JSON of maas-curtin's `StorageLayout`.
        pub storage_layout: Option<String>,
        pub gateway_link_ipv4: Option<i64>,
        pub gateway_link_ipv6: Option<i64>,
        pub node_type: i32,
        pub parent: Option<String>,
        pub description: String,
        pub error_description: String,
        pub status_deadline: Option<DateTimeUtc>,
        pub created: DateTimeUtc,
        pub updated: DateTimeUtc,
        pub version: i64,
    }
    // No derived Debug: `power_parameters` holds BMC passwords.
    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("machine::Model")
                .field("id", &self.id)
                .field("system_id", &self.system_id)
                .field("status", &self.status)
                .field("version", &self.version)
                .finish_non_exhaustive()
        }
    }
    no_relations!();
}

pub mod config {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "config")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// JSON text.
        pub value: String,
    }
    no_relations!();
}

pub mod script_set {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "script_set")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub machine_id: i64,
        pub kind: String,
        pub created: DateTimeUtc,
    }
    no_relations!();
}

pub mod script_result {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "script_result")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub script_set_id: i64,
        pub name: String,
        pub exit_status: Option<i32>,
        pub output: Vec<u8>,
        pub stdout: Vec<u8>,
        pub stderr: Vec<u8>,
        pub result: Vec<u8>,
        pub created: DateTimeUtc,
        pub updated: DateTimeUtc,
    }
    no_relations!();
}

pub mod oauth_nonce {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oauth_nonce")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub token_key: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub nonce: String,
        pub seen_at: DateTimeUtc,
    }
    no_relations!();
}

pub mod static_route {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "static_route")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub source_id: i64,
        pub destination_id: i64,
        pub gateway_ip: String,
        pub metric: i64,
    }
    no_relations!();
}

pub mod machine_tag {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "machine_tag")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub machine_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub tag_name: String,
    }
    no_relations!();
}

pub mod interface {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "interface")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub machine_id: i64,
        pub name: String,
        pub kind: String,
        pub mac: Option<String>,
        /// JSON array of names.
        pub parents: String,
        pub vlan_id: Option<i64>,
        pub enabled: bool,
        pub link_connected: bool,
        pub link_speed: i32,
        pub interface_speed: i32,
        pub vendor: String,
        pub product: String,
        pub driver: String,
        /// JSON array.
        pub tags: String,
        /// JSON object.
        pub params: String,
    }
    no_relations!();
}

pub mod block_device {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "block_device")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub machine_id: i64,
        pub name: String,
        pub kind: String,
        pub size_bytes: i64,
        pub block_size: i32,
        pub serial: String,
        pub model: String,
        pub rotational: bool,
        pub id_path: Option<String>,
        /// JSON array.
        pub tags: String,
    }
    no_relations!();
}

pub mod event {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "event")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub created: DateTimeUtc,
        pub level: String,
        pub kind: String,
        pub actor: Option<String>,
        /// Not a foreign key: the record outlives the machine.
        pub system_id: Option<String>,
        pub status_from: Option<i32>,
        pub status_to: Option<i32>,
        pub message: String,
    }
    no_relations!();
}
