//! The repository traits storage implements, and their error.
//!
//! API Boundary: these traits are what controllers program against; the
//! `maas-store` crate implements them on SQLite and PostgreSQL, and an
//! integrator may implement them on anything else. Methods are named resource
//! first (`machine_list`, `subnet_ip_range_create`) so all operations on one
//! resource sort together.
//!
//! Every status change and allocation is atomic, and every machine write is
//! checked against the version the writer read (optimistic concurrency):
//! implementations must never let two writers silently overwrite each other.

use std::net::IpAddr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::account::{ApiToken, SshKey, User};
use crate::constraints::{AllocationRequest, NoMatchExplanation};
use crate::error::ValidationError;
use crate::event::{Event, NewEvent};
use crate::ids::{
    EventId, FabricId, IpRangeId, SpaceId, SshKeyId, StaticAddressId, SubnetId, SystemId, TokenId,
    UserId, VlanId,
};
use crate::lifecycle::{Action, ActionOptions, Actor, LifecycleError, NodeStatus};
use crate::machine::Machine;
use crate::network::{
    Fabric, IpAddressType, IpRange, IpamError, Space, StaticAddress, StaticRoute, Subnet, Vlan,
};
use crate::org::{Domain, ResourcePool, Tag, Zone};
use crate::types::MacAddress;

/// Why a repository call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepositoryError {
    /// No such record.
    #[error("{kind} {key} not found")]
    NotFound {
        /// What was looked up (`machine`, `subnet`...).
        kind: &'static str,
        /// The key used.
        key: String,
    },
    /// A record with this unique key exists.
    #[error("{kind} {key} already exists")]
    AlreadyExists {
        /// What was created.
        kind: &'static str,
        /// The duplicate key.
        key: String,
    },
    /// The record changed since the caller read it (optimistic concurrency),
    /// or it is still in use.
    #[error("{kind} {key} was not written: {reason}")]
    Conflict {
        /// What was written.
        kind: &'static str,
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A lifecycle rule refused the change.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// Bad input.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// Address management refused.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// Allocation found no machine.
    #[error("{0}")]
    NoMatch(NoMatchExplanation),
    /// The database failed.
    #[error("storage backend error: {message}")]
    Backend {
        /// What failed (no secrets: queries are not included).
        message: String,
    },
}

impl RepositoryError {
    /// Whether trying again may succeed (a lost optimistic-concurrency race,
    /// a busy database).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            RepositoryError::Conflict { .. } | RepositoryError::Backend { .. }
        )
    }

    /// A not-found error.
    pub fn not_found(kind: &'static str, key: impl std::fmt::Display) -> Self {
        RepositoryError::NotFound {
            kind,
            key: key.to_string(),
        }
    }
}

/// Result of repository calls.
pub type RepoResult<T> = Result<T, RepositoryError>;

/// Filters for `machine_list`. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineFilter {
    /// Any of these system ids.
    pub system_ids: Vec<SystemId>,
    /// Any of these hostnames.
    pub hostnames: Vec<String>,
    /// Any of these statuses.
    pub statuses: Vec<NodeStatus>,
    /// Owned by this user.
    pub owner: Option<String>,
    /// Visible to this non-admin user: Ready machines and the user's own.
    pub visible_to: Option<String>,
    /// In this zone.
    pub zone: Option<String>,
    /// In this pool.
    pub pool: Option<String>,
    /// Having all these tags.
    pub tags: Vec<String>,
    /// Having an interface with one of these MACs.
    pub macs: Vec<MacAddress>,
    /// At most this many (ordered by system id).
    pub limit: Option<u64>,
    /// Devices instead of machines (lists hold one node type only).
    pub devices: bool,
    /// Rack controllers instead of machines (wins over `devices`).
    pub racks: bool,
}

/// What identifies one stored state of a machine: its `version` rises with
/// every write to the machine or its children (interfaces, links, disks,
/// tags), and `created` tells a re-created machine with the same system id
/// apart. Caches of rendered machines key on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MachineStamp {
    /// The machine.
    pub system_id: SystemId,
    /// Its version.
    pub version: i64,
    /// When the record was created.
    pub created: DateTime<Utc>,
}

/// What a successful allocation returns.
#[derive(Debug, Clone)]
pub struct Allocation {
    /// The machine, now Allocated to the caller (or untouched on a dry run).
    pub machine: Machine,
    /// Whether this was a dry run (nothing was changed).
    pub dry_run: bool,
}

/// Machines: CRUD, lifecycle actions, allocation, deadlines.
#[async_trait]
pub trait MachineRepository: Send + Sync {
    /// Stores a new machine (its interfaces, disks, links and tags too) and
    /// records a creation event. The status must be one a record may start in
    /// (`New`, `Missing`, `Retired`); see [`MachineRepository::machine_import`]
    /// for anything else.
    async fn machine_create(&self, machine: &Machine, actor: &Actor) -> RepoResult<Machine>;
    /// Stores machines as given, in any status, in a fixed number of
    /// statements per batch (imports from another MAAS, simulated fleets,
    /// fixtures). Each machine is validated; the whole batch is one transaction.
    async fn machine_import(&self, machines: &[Machine]) -> RepoResult<usize>;
    /// One machine with everything it has.
    async fn machine_get(&self, id: &SystemId) -> RepoResult<Machine>;
    /// The machine with an interface of this MAC, if any.
    async fn machine_get_by_mac(&self, mac: MacAddress) -> RepoResult<Option<Machine>>;
    /// Machines matching `filter`, each with interfaces, disks and tags, in a
    /// fixed number of queries whatever the count.
    async fn machine_list(&self, filter: &MachineFilter) -> RepoResult<Vec<Machine>>;
    /// The stamps of the machines `filter` matches, in `machine_list`'s
    /// order, without loading them: what a cache checks against. The default
    /// loads the machines; stores override it with a narrow query.
    async fn machine_stamps(&self, filter: &MachineFilter) -> RepoResult<Vec<MachineStamp>> {
        Ok(self
            .machine_list(filter)
            .await?
            .into_iter()
            .map(|m| MachineStamp {
                system_id: m.system_id,
                version: m.version,
                created: m.created,
            })
            .collect())
    }
    /// Writes `machine` (all fields but status, owner and deadline, which only
    /// lifecycle calls change) if its `version` is still the stored one;
    /// otherwise [`RepositoryError::Conflict`]. Returns the new version.
    async fn machine_update(&self, machine: &Machine) -> RepoResult<Machine>;
    /// Deletes a machine (admins only; never a locked one).
    async fn machine_delete(&self, id: &SystemId, actor: &Actor) -> RepoResult<()>;
    /// Runs a lifecycle action atomically, recording an event per status change.
    async fn machine_perform(
        &self,
        id: &SystemId,
        action: Action,
        actor: &Actor,
        options: &ActionOptions,
    ) -> RepoResult<Machine>;
    /// A workflow-driven status change (checked against the transition table).
    async fn machine_set_status(
        &self,
        id: &SystemId,
        to: NodeStatus,
        message: &str,
    ) -> RepoResult<Machine>;
    /// Finds the cheapest Ready machine matching the request and allocates it
    /// to `actor` atomically; concurrent callers never get the same machine.
    /// No match is [`RepositoryError::NoMatch`] with an explanation.
    async fn machine_allocate(
        &self,
        request: &AllocationRequest,
        actor: &Actor,
    ) -> RepoResult<Allocation>;
    /// Moves every machine whose deadline passed before `now` to its failed
    /// status; returns those machines.
    async fn machine_expire_deadlines(&self, now: DateTime<Utc>) -> RepoResult<Vec<Machine>>;
}

/// Fabrics, VLANs, subnets, IP ranges, spaces and assigned addresses.
#[async_trait]
pub trait NetworkRepository: Send + Sync {
    /// Creates a fabric together with its untagged VLAN (vid 0), as MAAS does.
    async fn fabric_create(
        &self,
        name: &str,
        class_type: Option<&str>,
    ) -> RepoResult<(Fabric, Vlan)>;
    /// All fabrics.
    async fn fabric_list(&self) -> RepoResult<Vec<Fabric>>;
    /// Deletes a fabric and its VLANs (refused while a subnet uses them).
    async fn fabric_delete(&self, id: FabricId) -> RepoResult<()>;
    /// Creates a VLAN (the id in `vlan` is ignored).
    async fn vlan_create(&self, vlan: &Vlan) -> RepoResult<Vlan>;
    /// One VLAN.
    async fn vlan_get(&self, id: VlanId) -> RepoResult<Vlan>;
    /// All VLANs, or a fabric's.
    async fn vlan_list(&self, fabric: Option<FabricId>) -> RepoResult<Vec<Vlan>>;
    /// Updates a VLAN (dhcp_on, racks, relay, mtu...).
    async fn vlan_update(&self, vlan: &Vlan) -> RepoResult<Vlan>;
    /// Creates a subnet (validated; the id is ignored).
    async fn subnet_create(&self, subnet: &Subnet) -> RepoResult<Subnet>;
    /// One subnet.
    async fn subnet_get(&self, id: SubnetId) -> RepoResult<Subnet>;
    /// All subnets.
    async fn subnet_list(&self) -> RepoResult<Vec<Subnet>>;
    /// Updates a subnet (validated against its ranges).
    async fn subnet_update(&self, subnet: &Subnet) -> RepoResult<Subnet>;
    /// Deletes a subnet with its ranges and addresses.
    async fn subnet_delete(&self, id: SubnetId) -> RepoResult<()>;
    /// Creates an IP range, validated against the subnet and its other ranges.
    async fn subnet_ip_range_create(&self, range: &IpRange) -> RepoResult<IpRange>;
    /// A subnet's ranges, or all ranges.
    async fn subnet_ip_range_list(&self, subnet: Option<SubnetId>) -> RepoResult<Vec<IpRange>>;
    /// Deletes a range.
    async fn subnet_ip_range_delete(&self, id: IpRangeId) -> RepoResult<()>;
    /// Assigns the next free static address of the subnet (or `ip` if given,
    /// after checking it), atomically: never the same address twice.
    async fn subnet_address_allocate(
        &self,
        subnet: SubnetId,
        ip: Option<IpAddr>,
        alloc_type: IpAddressType,
        hostname: Option<&str>,
    ) -> RepoResult<StaticAddress>;
    /// A subnet's assigned addresses.
    async fn subnet_address_list(&self, subnet: SubnetId) -> RepoResult<Vec<StaticAddress>>;
    /// Releases an assigned address.
    async fn subnet_address_release(&self, id: StaticAddressId) -> RepoResult<()>;
    /// Stores a new static route (checked against its subnets).
    async fn static_route_create(&self, route: &StaticRoute) -> RepoResult<StaticRoute>;
    /// All static routes.
    async fn static_route_list(&self) -> RepoResult<Vec<StaticRoute>>;
    /// Rewrites a static route (checked against its subnets).
    async fn static_route_update(&self, route: &StaticRoute) -> RepoResult<StaticRoute>;
    /// Deletes a static route.
    async fn static_route_delete(&self, id: crate::ids::StaticRouteId) -> RepoResult<()>;
    /// Creates a space.
    async fn space_create(&self, name: &str, description: &str) -> RepoResult<Space>;
    /// All spaces.
    async fn space_list(&self) -> RepoResult<Vec<Space>>;
    /// Deletes a space (VLANs in it lose it).
    async fn space_delete(&self, id: SpaceId) -> RepoResult<()>;
}

/// Zones, resource pools, tags and domains.
#[async_trait]
pub trait OrgRepository: Send + Sync {
    /// Creates a zone.
    async fn zone_create(&self, name: &str, description: &str) -> RepoResult<Zone>;
    /// All zones (the default one included).
    async fn zone_list(&self) -> RepoResult<Vec<Zone>>;
    /// Deletes a zone; its machines move to the default zone.
    async fn zone_delete(&self, name: &str) -> RepoResult<()>;
    /// Creates a resource pool.
    async fn pool_create(&self, name: &str, description: &str) -> RepoResult<ResourcePool>;
    /// All pools.
    async fn pool_list(&self) -> RepoResult<Vec<ResourcePool>>;
    /// Deletes an empty pool.
    async fn pool_delete(&self, name: &str) -> RepoResult<()>;
    /// Renames and/or re-describes a zone (its machines follow a rename).
    async fn zone_update(
        &self,
        name: &str,
        new_name: Option<&str>,
        description: Option<&str>,
    ) -> RepoResult<Zone>;
    /// Renames and/or re-describes a resource pool (its machines follow).
    async fn pool_update(
        &self,
        name: &str,
        new_name: Option<&str>,
        description: Option<&str>,
    ) -> RepoResult<ResourcePool>;
    /// Creates a tag.
    async fn tag_create(
        &self,
        name: &str,
        comment: &str,
        definition: &str,
        kernel_opts: &str,
    ) -> RepoResult<Tag>;
    /// All tags.
    async fn tag_list(&self) -> RepoResult<Vec<Tag>>;
    /// Deletes a tag (and removes it from machines).
    async fn tag_delete(&self, name: &str) -> RepoResult<()>;
    /// Adds or removes a tag on machines (the tag must exist).
    async fn tag_update_machines(
        &self,
        name: &str,
        add: &[SystemId],
        remove: &[SystemId],
    ) -> RepoResult<()>;
    /// Creates a DNS domain.
    async fn domain_create(&self, name: &str, authoritative: bool) -> RepoResult<Domain>;
    /// All domains.
    async fn domain_list(&self) -> RepoResult<Vec<Domain>>;
    /// Renames a domain (its machines follow) or changes its settings.
    async fn domain_update(
        &self,
        name: &str,
        new_name: Option<&str>,
        authoritative: Option<bool>,
        ttl: Option<Option<u32>>,
    ) -> RepoResult<Domain>;
    /// Deletes a domain no machine is in.
    async fn domain_delete(&self, name: &str) -> RepoResult<()>;
}

/// Users, SSH keys and API tokens.
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Creates a user.
    async fn user_create(
        &self,
        username: &str,
        email: &str,
        is_admin: bool,
        password_hash: Option<&str>,
    ) -> RepoResult<User>;
    /// A user by name.
    async fn user_get(&self, username: &str) -> RepoResult<User>;
    /// All users.
    async fn user_list(&self) -> RepoResult<Vec<User>>;
    /// Deletes a user (refused while they own machines).
    async fn user_delete(&self, username: &str) -> RepoResult<()>;
    /// Adds a validated SSH key.
    async fn ssh_key_create(&self, user: UserId, key: &str) -> RepoResult<SshKey>;
    /// A user's keys.
    async fn ssh_key_list(&self, user: UserId) -> RepoResult<Vec<SshKey>>;
    /// Deletes a key.
    async fn ssh_key_delete(&self, id: SshKeyId) -> RepoResult<()>;
    /// Creates a token with fresh random keys.
    async fn token_create(&self, user: UserId, name: &str) -> RepoResult<ApiToken>;
    /// Records an OAuth nonce of a token; false if it was recorded before
    /// (a replay). Entries older than `window_secs` may be forgotten: the
    /// timestamp window refuses those requests anyway. The default keeps
    /// nothing (every nonce is new), for stores one process owns.
    async fn nonce_claim(
        &self,
        token_key: &str,
        nonce: &str,
        at: DateTime<Utc>,
        window_secs: i64,
    ) -> RepoResult<bool> {
        let _ = (token_key, nonce, at, window_secs);
        Ok(true)
    }
    /// A token by its token key (the OAuth `oauth_token`).
    async fn token_get_by_key(&self, token_key: &str) -> RepoResult<ApiToken>;
    /// A user's tokens.
    async fn token_list(&self, user: UserId) -> RepoResult<Vec<ApiToken>>;
    /// Deletes a token.
    async fn token_delete(&self, id: TokenId) -> RepoResult<()>;
}

/// The audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Events of this machine.
    pub system_id: Option<SystemId>,
    /// Events with an id greater than this.
    pub after: Option<EventId>,
    /// At most this many (newest first).
    pub limit: Option<u64>,
}

/// Events: append and read, never change.
#[async_trait]
pub trait EventRepository: Send + Sync {
    /// Appends an event.
    async fn event_append(&self, event: &NewEvent) -> RepoResult<Event>;
    /// Events matching the filter, newest first.
    async fn event_list(&self, filter: &EventFilter) -> RepoResult<Vec<Event>>;
}

/// Everything a controller stores.
pub trait Store:
    MachineRepository + NetworkRepository + OrgRepository + UserRepository + EventRepository
{
}

impl<T> Store for T where
    T: MachineRepository + NetworkRepository + OrgRepository + UserRepository + EventRepository
{
}

/// The region's settings (`maas/?op=get_config|set_config`): names and
/// their values as JSON text. Which names exist and what they hold is the
/// region's business; the store keeps what was set.
#[async_trait]
pub trait ConfigRepository: Send + Sync {
    /// Every setting that was set, name to JSON text.
    async fn config_list(&self) -> RepoResult<std::collections::BTreeMap<String, String>>;
    /// Sets (or replaces) one setting.
    async fn config_set(&self, name: &str, json_value: &str) -> RepoResult<()>;
}

/// Script results, one set per run (see [`crate::script`]).
#[async_trait]
pub trait ScriptRepository: Send + Sync {
    /// Starts a run of `kind` on the machine; keeps at most `keep` sets of
    /// that kind (the oldest go). Returns the new set's id.
    async fn script_set_create(
        &self,
        machine: &SystemId,
        kind: crate::script::RunKind,
        keep: usize,
    ) -> RepoResult<i64>;
    /// The id of the machine's newest set of `kind`, if any.
    async fn script_set_latest(
        &self,
        machine: &SystemId,
        kind: crate::script::RunKind,
    ) -> RepoResult<Option<i64>>;
    /// Stores one output of a script in a set (creating the result on its
    /// first output; later outputs of other streams join it). An exit
    /// status, when given, is recorded.
    async fn script_output_store(
        &self,
        set: i64,
        script: &str,
        stream: crate::script::OutputStream,
        data: &[u8],
        exit_status: Option<i32>,
    ) -> RepoResult<()>;
    /// The machine's sets, newest first, with their results.
    async fn script_set_list(
        &self,
        machine: &SystemId,
    ) -> RepoResult<Vec<crate::script::ScriptSet>>;
}
