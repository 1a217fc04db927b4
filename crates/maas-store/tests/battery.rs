//! One storage battery, run on every backend: in-memory SQLite, a SQLite
//! file in WAL mode with a pool of connections, and PostgreSQL (each test in
//! its own schema) when `MAAS_TEST_DATABASE_URL` is set.
//!
//! Without that variable the PostgreSQL tests print why they were skipped
//! and pass; under CI (`CI=true`) a skip is a failure.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{Duration, Utc};
use maas_core::constraints::AllocationRequest;
use maas_core::event::NewEvent;
use maas_core::ids::*;
use maas_core::lifecycle::{Action, ActionOptions, Actor, LifecycleError, NodeStatus};
use maas_core::machine::{
    BlockDevice, Interface, InterfaceKind, InterfaceLink, LinkMode, Machine, PowerState,
};
use maas_core::network::{IpAddressType, IpRange, IpRangeType, IpamError, Subnet, Vlan};
use maas_core::repo::*;
use maas_core::{Architecture, Hostname, MacAddress};
use maas_store::SqlStore;

// ---------------------------------------------------------------- backends

struct Backend {
    store: SqlStore,
    /// PostgreSQL: the connection without a search path, and the schema to drop.
    schema: Option<(SqlStore, String)>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite_memory() -> Option<Backend> {
    let store = SqlStore::open_sqlite_memory()
        .await
        .expect("open in-memory sqlite");
    store.migrate().await.expect("migrate");
    Some(Backend {
        store,
        schema: None,
        _dir: None,
    })
}

async fn sqlite_file() -> Option<Backend> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqlStore::open_sqlite_file(&dir.path().join("maas.sqlite"))
        .await
        .expect("open sqlite file");
    store.migrate().await.expect("migrate");
    Some(Backend {
        store,
        schema: None,
        _dir: Some(dir),
    })
}

async fn postgres() -> Option<Backend> {
    let Ok(url) = std::env::var("MAAS_TEST_DATABASE_URL") else {
        let test = std::thread::current()
            .name()
            .unwrap_or("postgres test")
            .to_owned();
        let msg = format!(
            "SKIPPED {test}: MAAS_TEST_DATABASE_URL is not set \
             (e.g. postgres://postgres@127.0.0.1:5432/test)"
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}; under CI a skipped PostgreSQL test is a failure");
        }
        // Straight to the process's stderr: libtest captures `eprintln!` of
        // passing tests, and a skip must be seen.
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "{msg}");
        return None;
    };
    let schema = format!("t_{:016x}", rand_u64());
    let admin = SqlStore::open_postgres(&url, None)
        .await
        .expect("connect to MAAS_TEST_DATABASE_URL");
    use sea_orm::ConnectionTrait;
    admin
        .connection()
        .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    let store = SqlStore::open_postgres(&url, Some(&schema))
        .await
        .expect("connect with schema");
    store.migrate().await.expect("migrate");
    Some(Backend {
        store,
        schema: Some((admin, schema)),
        _dir: None,
    })
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

macro_rules! battery {
    ($($name:ident),* $(,)?) => {
        mod sqlite_memory { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::run(super::sqlite_memory().await, super::$name).await }
        )* }
        mod sqlite_file { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::run(super::sqlite_file().await, super::$name).await }
        )* }
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::run(super::postgres().await, super::$name).await }
        )* }
    };
}

async fn run<F, Fut>(backend: Option<Backend>, test: F)
where
    F: FnOnce(SqlStore) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(b) = backend else { return };
    test(b.store.clone()).await;
    if let Some((admin, schema)) = b.schema {
        use sea_orm::ConnectionTrait;
        let _ = admin
            .connection()
            .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
            .await;
    }
}

battery!(
    migrations_run_from_empty_and_again_as_a_no_op,
    machine_round_trips_with_everything_it_has,
    machine_create_names_what_was_wrong,
    machine_update_is_optimistic_and_keeps_child_ids,
    lifecycle_actions_are_checked_and_recorded,
    allocation_honours_constraints_cheapest_first,
    allocation_explains_why_nothing_matched,
    concurrent_allocations_never_share_a_machine,
    machine_list_filters_and_costs_a_fixed_number_of_queries,
    deadlines_move_machines_to_failed_states,
    network_model_validates_and_ipam_never_repeats,
    concurrent_address_assignment_never_repeats,
    zones_pools_tags_and_domains,
    users_keys_and_tokens,
    events_are_listed_newest_first,
);

// ---------------------------------------------------------------- fixtures

fn admin() -> Actor {
    Actor::user("admin", true)
}

fn mac(n: u32) -> MacAddress {
    let b = n.to_be_bytes();
    MacAddress([0x52, 0x54, 0x00, b[1], b[2], b[3]])
}

fn machine(n: u32, cpus: u32, mem: u64) -> Machine {
    let sid = SystemId::parse(&format!("m{n:05}")).unwrap();
    let mut m = Machine::new(
        sid,
        Hostname::parse(&format!("node-{n}")).unwrap(),
        Architecture::amd64(),
        Utc::now(),
    );
    m.hardware.cpu.count = cpus;
    m.hardware.cpu.speed_mhz = 2400;
    m.hardware.memory_mib = mem;
    let mut eth0 = Interface::physical("eth0", mac(n));
    eth0.link_speed_mbps = 1000;
    m.interfaces.push(eth0);
    m.block_devices
        .push(BlockDevice::disk("sda", 500_000_000_000));
    m
}

async fn users(s: &SqlStore) {
    s.user_create("admin", "admin@example.com", true, None)
        .await
        .unwrap();
    s.user_create("alice", "", false, None).await.unwrap();
    s.user_create("bob", "", false, None).await.unwrap();
}

async fn ready(s: &SqlStore, machines: Vec<Machine>) {
    let machines: Vec<Machine> = machines
        .into_iter()
        .map(|mut m| {
            m.status = NodeStatus::Ready;
            m
        })
        .collect();
    assert_eq!(s.machine_import(&machines).await.unwrap(), machines.len());
}

async fn lab_subnet(s: &SqlStore) -> (Vlan, Subnet) {
    let (_, vlan) = s.fabric_create("fabric-0", None).await.unwrap();
    let subnet = s
        .subnet_create(&Subnet {
            id: SubnetId(0),
            name: "lab".into(),
            cidr: "10.99.0.0/24".parse().unwrap(),
            vlan: vlan.id,
            gateway_ip: Some("10.99.0.1".parse().unwrap()),
            dns_servers: vec!["10.99.0.1".parse().unwrap()],
            managed: true,
            allow_dns: true,
            allow_proxy: true,
            active_discovery: false,
            description: String::new(),
        })
        .await
        .unwrap();
    (vlan, subnet)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// ---------------------------------------------------------------- tests

async fn migrations_run_from_empty_and_again_as_a_no_op(s: SqlStore) {
    s.migrate().await.expect("second migration run is a no-op");
    s.migrate().await.expect("third too");
    let zones: Vec<String> = s
        .zone_list()
        .await
        .unwrap()
        .into_iter()
        .map(|z| z.name)
        .collect();
    assert_eq!(zones, ["default"]);
    let pools: Vec<String> = s
        .pool_list()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(pools, ["default"]);
    let domains: Vec<String> = s
        .domain_list()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(domains, ["maas"]);
}

async fn machine_round_trips_with_everything_it_has(s: SqlStore) {
    users(&s).await;
    let (vlan, subnet) = lab_subnet(&s).await;
    s.tag_create("gpu", "", "", "").await.unwrap();
    s.zone_create("rack-a", "").await.unwrap();
    let mut m = machine(1, 8, 16384);
    m.zone = "rack-a".into();
    m.tags.insert("gpu".into());
    m.power_type = "ipmi".into();
    m.power_parameters
        .0
        .insert("power_address".into(), "10.0.0.5".into());
    m.power_parameters
        .0
        .insert("power_pass".into(), "s3cret".into());
    m.hardware.cpu.model = "Xeon".into();
    m.hardware.system.uuid = Some("27946b59-9e44-4fa7-8e91-f3527a1ef094".into());
    m.hardware.firmware.kind = maas_core::machine::FirmwareKind::Uefi;
    m.hardware.gpus.push(maas_core::machine::PciDevice {
        vendor_id: "10de".into(),
        product_id: "1db6".into(),
        ..Default::default()
    });
    m.interfaces[0].vlan = Some(vlan.id);
    m.interfaces[0].links.push(InterfaceLink {
        id: None,
        mode: LinkMode::Static,
        subnet: Some(subnet.id),
        ip: Some(ip("10.99.0.50")),
    });
    m.interfaces.push(Interface::physical("eth1", mac(1001)));
    let mut bond = Interface::physical("bond0", mac(1));
    bond.kind = InterfaceKind::Bond;
    bond.parents = vec!["eth1".into()];
    bond.params.insert("bond_mode".into(), "802.3ad".into());
    bond.links.push(InterfaceLink {
        id: None,
        mode: LinkMode::Dhcp,
        subnet: Some(subnet.id),
        ip: None,
    });
    bond.links.push(InterfaceLink {
        id: None,
        mode: LinkMode::LinkUp,
        subnet: None,
        ip: None,
    });
    m.interfaces.push(bond);
    m.boot_interface = Some("eth0".into());
    let mut disk = BlockDevice::disk("nvme0n1", 1_000_000_000_000);
    disk.serial = "S1".into();
    disk.rotational = false;
    disk.id_path = Some("/dev/disk/by-id/nvme-S1".into());
    disk.tags = vec!["ssd".into()];
    m.block_devices.push(disk);

    let stored = s.machine_create(&m, &admin()).await.unwrap();
    let got = s.machine_get(&m.system_id).await.unwrap();
    assert_eq!(stored, got);
    assert_eq!(got.version, 1);
    assert_eq!(got.zone, "rack-a");
    assert_eq!(got.tags, BTreeSet::from(["gpu".to_string()]));
    assert_eq!(got.power_parameters, m.power_parameters);
    assert_eq!(got.hardware, m.hardware);
    assert_eq!(got.boot_mac(), Some(mac(1)));
    let names: Vec<&str> = got.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["eth0", "eth1", "bond0"]);
    assert!(got.interfaces.iter().all(|i| i.id.is_some()));
    assert_eq!(got.interfaces[0].links[0].ip, Some(ip("10.99.0.50")));
    assert_eq!(got.interfaces[0].links[0].mode, LinkMode::Static);
    let modes: Vec<LinkMode> = got.interfaces[2].links.iter().map(|l| l.mode).collect();
    assert_eq!(modes, [LinkMode::Dhcp, LinkMode::LinkUp]);
    assert_eq!(
        got.interfaces[2]
            .params
            .get("bond_mode")
            .map(String::as_str),
        Some("802.3ad")
    );
    assert_eq!(got.block_devices.len(), 2);
    assert_eq!(
        got.block_devices[1].id_path.as_deref(),
        Some("/dev/disk/by-id/nvme-S1")
    );
    // Secrets never show in Debug output.
    assert!(!format!("{got:?}").contains("s3cret"));
    // By MAC.
    assert_eq!(
        s.machine_get_by_mac(mac(1001))
            .await
            .unwrap()
            .unwrap()
            .system_id,
        m.system_id
    );
    assert!(s.machine_get_by_mac(mac(9999)).await.unwrap().is_none());
    // The static address is taken in the subnet.
    let taken: Vec<_> = s
        .subnet_address_list(subnet.id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|a| a.ip)
        .collect();
    assert!(taken.contains(&ip("10.99.0.50")));
    // Creation was recorded.
    let ev = s
        .event_list(&EventFilter {
            system_id: Some(m.system_id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].event.status_to, Some(NodeStatus::New));
    assert_eq!(ev[0].event.actor.as_deref(), Some("admin"));
}

async fn machine_create_names_what_was_wrong(s: SqlStore) {
    users(&s).await;
    s.machine_create(&machine(1, 4, 4096), &admin())
        .await
        .unwrap();

    let dup = s
        .machine_create(&machine(1, 4, 4096), &admin())
        .await
        .unwrap_err();
    assert!(
        matches!(
            dup,
            RepositoryError::AlreadyExists {
                kind: "machine",
                ..
            }
        ),
        "{dup}"
    );
    assert!(dup.to_string().contains("m00001"), "{dup}");

    let mut other = machine(2, 4, 4096);
    other.interfaces[0].mac = Some(mac(1));
    let e = s.machine_create(&other, &admin()).await.unwrap_err();
    assert!(
        matches!(
            e,
            RepositoryError::AlreadyExists {
                kind: "interface",
                ..
            }
        ),
        "{e}"
    );

    let mut bad_zone = machine(3, 4, 4096);
    bad_zone.zone = "nowhere".into();
    let e = s.machine_create(&bad_zone, &admin()).await.unwrap_err();
    assert_eq!(e.to_string(), "zone 'nowhere' not found");

    let mut bad_tag = machine(4, 4, 4096);
    bad_tag.tags.insert("missing-tag".into());
    assert_eq!(
        s.machine_create(&bad_tag, &admin())
            .await
            .unwrap_err()
            .to_string(),
        "tag 'missing-tag' not found"
    );

    let mut ready = machine(5, 4, 4096);
    ready.status = NodeStatus::Ready;
    let e = s.machine_create(&ready, &admin()).await.unwrap_err();
    assert!(
        matches!(
            e,
            RepositoryError::Lifecycle(LifecycleError::InvalidTransition {
                from: None,
                to: NodeStatus::Ready
            })
        ),
        "{e}"
    );

    let mut orphan = machine(6, 4, 4096);
    let mut vlan_if = Interface::physical("eth0.100", mac(6));
    vlan_if.kind = InterfaceKind::Vlan;
    vlan_if.parents = vec!["eth9".into()];
    orphan.interfaces.push(vlan_if);
    let e = s.machine_create(&orphan, &admin()).await.unwrap_err();
    match e {
        RepositoryError::Validation(v) => {
            assert_eq!((v.field.as_str(), v.value.as_str()), ("parents", "eth9"))
        }
        other => panic!("expected a validation error, got {other}"),
    }

    let mut bad_subnet = machine(7, 4, 4096);
    bad_subnet.interfaces[0].links.push(InterfaceLink {
        id: None,
        mode: LinkMode::Dhcp,
        subnet: Some(SubnetId(4242)),
        ip: None,
    });
    assert_eq!(
        s.machine_create(&bad_subnet, &admin())
            .await
            .unwrap_err()
            .to_string(),
        "subnet 4242 not found"
    );

    // Nothing of the failed attempts was stored.
    let all = s.machine_list(&MachineFilter::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(matches!(
        s.machine_get(&SystemId::parse("m00003").unwrap()).await,
        Err(RepositoryError::NotFound {
            kind: "machine",
            ..
        })
    ));
}

async fn machine_update_is_optimistic_and_keeps_child_ids(s: SqlStore) {
    users(&s).await;
    let m = s
        .machine_create(&machine(1, 4, 4096), &admin())
        .await
        .unwrap();
    let mut a = s.machine_get(&m.system_id).await.unwrap();
    let mut b = a.clone();
    let eth0_id = a.interfaces[0].id;
    let sda_id = a.block_devices[0].id;

    a.description = "first writer".into();
    a.interfaces.push(Interface::physical("eth1", mac(500)));
    a.block_devices[0].serial = "SERIAL-A".into();
    a.block_devices
        .push(BlockDevice::disk("sdb", 1_000_000_000));
    let a2 = s.machine_update(&a).await.unwrap();
    assert_eq!(a2.version, a.version + 1);
    assert_eq!(a2.description, "first writer");
    assert_eq!(
        a2.interfaces[0].id, eth0_id,
        "interface ids survive an update"
    );
    assert_eq!(a2.block_devices[0].id, sda_id);
    assert_eq!(a2.block_devices[0].serial, "SERIAL-A");
    assert_eq!(a2.interfaces.len(), 2);
    assert_eq!(a2.block_devices.len(), 2);

    b.description = "second writer".into();
    let e = s.machine_update(&b).await.unwrap_err();
    assert!(
        matches!(
            e,
            RepositoryError::Conflict {
                kind: "machine",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.is_retryable());
    assert_eq!(
        s.machine_get(&m.system_id).await.unwrap().description,
        "first writer"
    );

    // Removing children deletes them.
    let mut c = a2.clone();
    c.interfaces.retain(|i| i.name == "eth0");
    c.block_devices.retain(|d| d.name == "sdb");
    let c2 = s.machine_update(&c).await.unwrap();
    assert_eq!(c2.interfaces.len(), 1);
    assert_eq!(
        c2.block_devices
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        ["sdb"]
    );
    assert!(s.machine_get_by_mac(mac(500)).await.unwrap().is_none());

    // Status is not writable through update.
    let mut d = c2.clone();
    d.status = NodeStatus::Deployed;
    let d2 = s.machine_update(&d).await.unwrap();
    assert_eq!(d2.status, NodeStatus::New);
}

async fn lifecycle_actions_are_checked_and_recorded(s: SqlStore) {
    users(&s).await;
    ready(&s, vec![machine(1, 4, 4096)]).await;
    let id = SystemId::parse("m00001").unwrap();
    let alice = Actor::user("alice", false);
    let bob = Actor::user("bob", false);
    let none = ActionOptions::default();

    let e = s
        .machine_perform(&id, Action::Commission, &alice, &none)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RepositoryError::Lifecycle(LifecycleError::PermissionDenied {
                action: Action::Commission,
                ..
            })
        ),
        "{e}"
    );

    let m = s
        .machine_perform(&id, Action::Deploy, &alice, &none)
        .await
        .unwrap();
    assert_eq!(m.status, NodeStatus::Deploying);
    assert_eq!(m.owner.as_deref(), Some("alice"));
    assert!(m.status_deadline.is_some());

    let e = s
        .machine_perform(&id, Action::Release, &bob, &none)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RepositoryError::Lifecycle(LifecycleError::PermissionDenied { .. })
        ),
        "{e}"
    );
    let e = s
        .machine_perform(&id, Action::MarkFixed, &admin(), &none)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "action 'mark-fixed' is not allowed when the machine is Deploying (status 9)"
    );

    let m = s
        .machine_set_status(&id, NodeStatus::Deployed, "deployed OS reported in")
        .await
        .unwrap();
    assert_eq!(m.status, NodeStatus::Deployed);
    assert_eq!(m.status_deadline, None);
    let e = s
        .machine_set_status(&id, NodeStatus::Commissioning, "nope")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RepositoryError::Lifecycle(LifecycleError::InvalidTransition { .. })
        ),
        "{e}"
    );

    s.machine_perform(&id, Action::Lock, &alice, &none)
        .await
        .unwrap();
    let e = s
        .machine_perform(&id, Action::Release, &alice, &none)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RepositoryError::Lifecycle(LifecycleError::Locked {
                action: Action::Release
            })
        ),
        "{e}"
    );
    s.machine_perform(&id, Action::Unlock, &alice, &none)
        .await
        .unwrap();
    let m = s
        .machine_perform(
            &id,
            Action::Release,
            &alice,
            &ActionOptions {
                erase: true,
                comment: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(m.status, NodeStatus::DiskErasing);
    let m = s
        .machine_set_status(&id, NodeStatus::Ready, "erased")
        .await
        .unwrap();
    assert_eq!((m.status, m.owner), (NodeStatus::Ready, None));

    let e = s.machine_delete(&id, &alice).await.unwrap_err();
    assert!(matches!(
        e,
        RepositoryError::Lifecycle(LifecycleError::PermissionDenied {
            action: Action::Delete,
            ..
        })
    ));

    let events = s
        .event_list(&EventFilter {
            system_id: Some(id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let path: Vec<(NodeStatus, NodeStatus)> = events
        .iter()
        .rev()
        .filter_map(|e| Some((e.event.status_from?, e.event.status_to?)))
        .collect();
    use NodeStatus::*;
    assert_eq!(
        path,
        [
            (Ready, Allocated),
            (Allocated, Deploying),
            (Deploying, Deployed),
            (Deployed, DiskErasing),
            (DiskErasing, Ready)
        ]
    );
    for (from, to) in path {
        assert!(from.can_transition_to(to));
    }
    s.machine_delete(&id, &admin()).await.unwrap();
    assert!(matches!(
        s.machine_get(&id).await,
        Err(RepositoryError::NotFound { .. })
    ));
    let after = s
        .event_list(&EventFilter {
            system_id: Some(id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        after[0].event.kind, "Deleted",
        "the audit record outlives the machine"
    );
}

async fn allocation_honours_constraints_cheapest_first(s: SqlStore) {
    users(&s).await;
    let (vlan, subnet) = lab_subnet(&s).await;
    s.tag_create("gpu", "", "", "").await.unwrap();
    s.zone_create("rack-b", "").await.unwrap();
    let mut fleet = vec![
        machine(1, 4, 8192),
        machine(2, 16, 65536),
        machine(3, 8, 16384),
        machine(4, 32, 131072),
    ];
    fleet[1].tags.insert("gpu".into());
    fleet[3].tags.insert("gpu".into());
    fleet[2].zone = "rack-b".into();
    fleet[3].block_devices.push(BlockDevice {
        tags: vec!["ssd".into()],
        ..BlockDevice::disk("nvme0n1", 2_000_000_000_000)
    });
    fleet[3].interfaces[0].vlan = Some(vlan.id);
    fleet[3].interfaces[0].links.push(InterfaceLink {
        id: None,
        mode: LinkMode::Auto,
        subnet: Some(subnet.id),
        ip: None,
    });
    fleet[0].architecture = Architecture::parse("arm64/generic").unwrap();
    ready(&s, fleet).await;
    let alice = Actor::user("alice", false);
    let alloc =
        |params: &[(&str, &str)]| AllocationRequest::from_params(params.iter().copied()).unwrap();

    // Cheapest amd64 first: m00003 (8 + 16) beats m00002 (16 + 64) and m00004.
    let a = s
        .machine_allocate(&alloc(&[("arch", "amd64")]), &alice)
        .await
        .unwrap();
    assert_eq!(a.machine.system_id.as_str(), "m00003");
    assert_eq!(
        (a.machine.status, a.machine.owner.as_deref()),
        (NodeStatus::Allocated, Some("alice"))
    );

    // Dry run finds but changes nothing.
    let d = s
        .machine_allocate(&alloc(&[("tags", "gpu"), ("dry_run", "true")]), &alice)
        .await
        .unwrap();
    assert!(d.dry_run);
    assert_eq!(d.machine.system_id.as_str(), "m00002");
    assert_eq!(
        s.machine_get(&d.machine.system_id).await.unwrap().status,
        NodeStatus::Ready
    );

    let g = s
        .machine_allocate(&alloc(&[("storage", "root:100,fast:1000(ssd)")]), &alice)
        .await
        .unwrap();
    assert_eq!(g.machine.system_id.as_str(), "m00004");
    // Now only m00001 (arm64) and m00002 are Ready.
    let e = s
        .machine_allocate(&alloc(&[("subnets", "lab")]), &alice)
        .await
        .unwrap_err();
    assert!(
        matches!(e, RepositoryError::NoMatch(_)),
        "m00004 with the subnet is taken: {e}"
    );
    let n = s
        .machine_allocate(
            &alloc(&[("not_arch", "amd64"), ("cpu_count", "2"), ("mem", "4096")]),
            &alice,
        )
        .await
        .unwrap();
    assert_eq!(n.machine.system_id.as_str(), "m00001");
    let z = s
        .machine_allocate(
            &alloc(&[
                ("name", "node-2.maas"),
                ("not_in_zone", "rack-b"),
                ("not_tags", "ssd"),
            ]),
            &alice,
        )
        .await
        .unwrap();
    assert_eq!(z.machine.system_id.as_str(), "m00002");
    let e = s.machine_allocate(&alloc(&[]), &alice).await.unwrap_err();
    assert!(
        matches!(e, RepositoryError::NoMatch(ref x) if x.considered == 0),
        "{e}"
    );
}

async fn allocation_explains_why_nothing_matched(s: SqlStore) {
    users(&s).await;
    s.tag_create("gpu", "", "", "").await.unwrap();
    let mut fleet = vec![
        machine(1, 4, 8192),
        machine(2, 8, 8192),
        machine(3, 16, 4096),
    ];
    fleet[2].tags.insert("gpu".into());
    ready(&s, fleet).await;
    let req =
        AllocationRequest::from_params([("cpu_count", "8"), ("mem", "8000"), ("tags", "gpu")])
            .unwrap();
    let e = s
        .machine_allocate(&req, &Actor::user("alice", false))
        .await
        .unwrap_err();
    let RepositoryError::NoMatch(x) = &e else {
        panic!("expected NoMatch, got {e}")
    };
    assert_eq!(x.considered, 3);
    // cpu_count excludes m1; mem excludes m3; tags exclude m1 and m2.
    assert_eq!(x.excluded_by.get("cpu_count"), Some(&1));
    assert_eq!(x.excluded_by.get("mem"), Some(&1));
    assert_eq!(x.excluded_by.get("tags"), Some(&2));
    let msg = e.to_string();
    assert!(
        msg.contains("3 ready machine(s) considered") && msg.contains("tags excluded 2"),
        "{msg}"
    );
}

async fn concurrent_allocations_never_share_a_machine(s: SqlStore) {
    users(&s).await;
    let mut fleet: Vec<Machine> = (1..=10).map(|n| machine(n, 8, 16384)).collect();
    fleet.extend((11..=20).map(|n| machine(n, 2, 2048))); // too small
    ready(&s, fleet).await;
    let req =
        Arc::new(AllocationRequest::from_params([("cpu_count", "4"), ("mem", "8192")]).unwrap());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let s = s.clone();
            let req = req.clone();
            tokio::spawn(async move {
                s.machine_allocate(
                    &req,
                    &Actor::user(if i % 2 == 0 { "alice" } else { "bob" }, false),
                )
                .await
            })
        })
        .collect();
    let mut won = BTreeSet::new();
    let mut lost = 0;
    for t in futures::future::join_all(tasks).await {
        match t.unwrap() {
            Ok(a) => assert!(
                won.insert(a.machine.system_id.clone()),
                "{} allocated twice",
                a.machine.system_id
            ),
            Err(RepositoryError::NoMatch(x)) => {
                assert!(x.to_string().contains("no machine matches"));
                lost += 1;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!((won.len(), lost), (10, 54));
    let allocated = s
        .machine_list(&MachineFilter {
            statuses: vec![NodeStatus::Allocated],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        allocated
            .iter()
            .map(|m| m.system_id.clone())
            .collect::<BTreeSet<_>>(),
        won
    );
    assert!(
        allocated
            .iter()
            .all(|m| m.owner.is_some() && m.hardware.cpu.count == 8)
    );
    for m in &allocated {
        let ev = s
            .event_list(&EventFilter {
                system_id: Some(m.system_id.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            ev.iter()
                .filter(|e| e.event.status_to == Some(NodeStatus::Allocated))
                .count(),
            1,
            "one allocation event per machine"
        );
    }
}

async fn machine_list_filters_and_costs_a_fixed_number_of_queries(mut s: SqlStore) {
    let counter = Arc::new(AtomicUsize::new(0));
    let c = counter.clone();
    s.set_statement_observer(move |_, _| {
        c.fetch_add(1, Ordering::SeqCst);
    });
    users(&s).await;
    s.tag_create("gpu", "", "", "").await.unwrap();
    let mut fleet: Vec<Machine> = (1..=60).map(|n| machine(n, 4, 4096)).collect();
    for m in fleet.iter_mut().take(20) {
        m.tags.insert("gpu".into());
        m.interfaces.push(Interface::physical(
            "eth1",
            mac(100_000 + m.system_id.as_str()[1..].parse::<u32>().unwrap()),
        ));
    }
    ready(&s, fleet).await;
    let count = |f: MachineFilter| {
        let s = s.clone();
        let counter = counter.clone();
        async move {
            let before = counter.load(Ordering::SeqCst);
            let got = s.machine_list(&f).await.unwrap();
            (got, counter.load(Ordering::SeqCst) - before)
        }
    };
    let (all, q_all) = count(MachineFilter::default()).await;
    assert_eq!(all.len(), 60);
    assert_eq!(all.iter().map(|m| m.interfaces.len()).sum::<usize>(), 80);
    let (some, q_some) = count(MachineFilter {
        limit: Some(5),
        ..Default::default()
    })
    .await;
    assert_eq!(some.len(), 5);
    assert!(
        q_all <= 6 && q_all == q_some,
        "a list costs a fixed number of queries: {q_all} for 60, {q_some} for 5"
    );

    let (gpu, _) = count(MachineFilter {
        tags: vec!["gpu".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(gpu.len(), 20);
    let (by_mac, _) = count(MachineFilter {
        macs: vec![mac(100_007)],
        ..Default::default()
    })
    .await;
    assert_eq!(
        by_mac
            .iter()
            .map(|m| m.system_id.as_str())
            .collect::<Vec<_>>(),
        ["m00007"]
    );
    let (by_id, _) = count(MachineFilter {
        system_ids: vec![SystemId::parse("m00042").unwrap()],
        ..Default::default()
    })
    .await;
    assert_eq!(by_id.len(), 1);

    let alice = Actor::user("alice", false);
    s.machine_allocate(
        &AllocationRequest::from_params([("system_id", "m00001")]).unwrap(),
        &alice,
    )
    .await
    .unwrap();
    s.machine_allocate(
        &AllocationRequest::from_params([("system_id", "m00002")]).unwrap(),
        &Actor::user("bob", false),
    )
    .await
    .unwrap();
    let (mine, _) = count(MachineFilter {
        owner: Some("alice".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(mine.len(), 1);
    let (visible, _) = count(MachineFilter {
        visible_to: Some("alice".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(visible.len(), 59, "58 Ready + alice's own; not bob's");
    let (ready_only, _) = count(MachineFilter {
        statuses: vec![NodeStatus::Ready],
        zone: Some("default".into()),
        pool: Some("default".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(ready_only.len(), 58);
}

async fn deadlines_move_machines_to_failed_states(s: SqlStore) {
    users(&s).await;
    s.machine_import(&[machine(1, 4, 4096), machine(2, 4, 4096)])
        .await
        .unwrap();
    let one = SystemId::parse("m00001").unwrap();
    let m = s
        .machine_perform(
            &one,
            Action::Commission,
            &admin(),
            &ActionOptions::default(),
        )
        .await
        .unwrap();
    let deadline = m.status_deadline.expect("commissioning has a deadline");
    assert!(
        deadline > Utc::now() + Duration::minutes(19)
            && deadline <= Utc::now() + Duration::minutes(20)
    );
    assert!(
        s.machine_expire_deadlines(Utc::now())
            .await
            .unwrap()
            .is_empty()
    );
    if s.backend() == sea_orm::DbBackend::Postgres {
        // Another region holds the deadline lock (this schema's): this one
        // skips the round, and expires once the lock is free.
        use sea_orm::{ConnectionTrait, TransactionTrait};
        let holder = s.connection().begin().await.unwrap();
        holder
            .execute_unprepared(&format!(
                "SELECT pg_advisory_xact_lock({}, hashtext(current_schema()))",
                maas_store::DEADLINE_LOCK
            ))
            .await
            .unwrap();
        assert!(
            s.machine_expire_deadlines(deadline + Duration::seconds(1))
                .await
                .unwrap()
                .is_empty(),
            "the lock's holder does the round"
        );
        holder.commit().await.unwrap();
    }
    let failed = s
        .machine_expire_deadlines(deadline + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].status, NodeStatus::FailedCommissioning);
    assert!(failed[0].error_description.contains("timed out"));
    let m2 = s
        .machine_get(&SystemId::parse("m00002").unwrap())
        .await
        .unwrap();
    assert_eq!(
        m2.status,
        NodeStatus::New,
        "a machine without a deadline is untouched"
    );
    assert!(
        s.machine_expire_deadlines(deadline + Duration::hours(5))
            .await
            .unwrap()
            .is_empty(),
        "expiry happens once"
    );
}

async fn network_model_validates_and_ipam_never_repeats(s: SqlStore) {
    let (fabric, untagged) = s.fabric_create("fabric-a", Some("10g")).await.unwrap();
    assert_eq!((untagged.vid, untagged.fabric), (0, fabric.id));
    let v100 = s
        .vlan_create(&Vlan {
            id: VlanId(0),
            vid: 100,
            name: Some("storage".into()),
            ..untagged.clone()
        })
        .await
        .unwrap();
    let e = s
        .vlan_create(&Vlan {
            id: VlanId(0),
            vid: 100,
            ..untagged.clone()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e, RepositoryError::AlreadyExists { kind: "vlan", .. }),
        "{e}"
    );
    let e = s
        .vlan_create(&Vlan {
            id: VlanId(0),
            vid: 5000,
            ..untagged.clone()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e, RepositoryError::Validation(ref v) if v.field == "vid"),
        "{e}"
    );
    let mut on = v100.clone();
    on.dhcp_on = true;
    on.primary_rack = Some("rack01".into());
    assert!(s.vlan_update(&on).await.unwrap().dhcp_on);

    let base = Subnet {
        id: SubnetId(0),
        name: "s1".into(),
        cidr: "10.0.0.0/24".parse().unwrap(),
        vlan: v100.id,
        gateway_ip: Some(ip("10.0.1.1")),
        dns_servers: vec![],
        managed: true,
        allow_dns: true,
        allow_proxy: true,
        active_discovery: false,
        description: String::new(),
    };
    let e = s.subnet_create(&base).await.unwrap_err();
    assert!(
        matches!(e, RepositoryError::Validation(ref v) if v.field.contains("gateway")),
        "{e}"
    );
    let subnet = s
        .subnet_create(&Subnet {
            gateway_ip: Some(ip("10.0.0.1")),
            ..base.clone()
        })
        .await
        .unwrap();
    let v6 = s
        .subnet_create(&Subnet {
            name: "v6".into(),
            cidr: "fd00:1::/64".parse().unwrap(),
            gateway_ip: Some(ip("fd00:1::1")),
            ..base.clone()
        })
        .await
        .unwrap();

    let range = |kind, a: &str, b: &str| IpRange {
        id: IpRangeId(0),
        subnet: subnet.id,
        kind,
        start: ip(a),
        end: ip(b),
        comment: "lab".into(),
    };
    s.subnet_ip_range_create(&range(IpRangeType::Dynamic, "10.0.0.100", "10.0.0.199"))
        .await
        .unwrap();
    s.subnet_ip_range_create(&range(IpRangeType::Reserved, "10.0.0.2", "10.0.0.9"))
        .await
        .unwrap();
    let e = s
        .subnet_ip_range_create(&range(IpRangeType::Reserved, "10.0.0.150", "10.0.0.210"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("10.0.0.100"),
        "the overlap error names the other range: {e}"
    );
    let e = s
        .subnet_ip_range_create(&range(IpRangeType::Reserved, "10.0.0.250", "10.0.1.3"))
        .await
        .unwrap_err();
    assert!(matches!(e, RepositoryError::Validation(_)), "{e}");
    assert_eq!(
        s.subnet_ip_range_list(Some(subnet.id)).await.unwrap().len(),
        2
    );

    let first = s
        .subnet_address_allocate(subnet.id, None, IpAddressType::Sticky, Some("node-1"))
        .await
        .unwrap();
    assert_eq!(first.ip, Some(ip("10.0.0.10")));
    let second = s
        .subnet_address_allocate(subnet.id, None, IpAddressType::Auto, None)
        .await
        .unwrap();
    assert_eq!(second.ip, Some(ip("10.0.0.11")));
    let e = s
        .subnet_address_allocate(
            subnet.id,
            Some(ip("10.0.0.11")),
            IpAddressType::UserReserved,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, RepositoryError::Ipam(IpamError::AlreadyAssigned { .. })),
        "{e}"
    );
    let e = s
        .subnet_address_allocate(
            subnet.id,
            Some(ip("10.0.0.150")),
            IpAddressType::UserReserved,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, RepositoryError::Ipam(IpamError::InDynamicRange { .. })),
        "{e}"
    );
    s.subnet_address_release(first.id).await.unwrap();
    let again = s
        .subnet_address_allocate(subnet.id, None, IpAddressType::Sticky, None)
        .await
        .unwrap();
    assert_eq!(
        again.ip,
        Some(ip("10.0.0.10")),
        "a released address is reused"
    );
    let six = s
        .subnet_address_allocate(v6.id, None, IpAddressType::Sticky, None)
        .await
        .unwrap();
    assert_eq!(six.ip, Some(ip("fd00:1::2")));

    let e = s.fabric_delete(fabric.id).await.unwrap_err();
    assert!(
        matches!(e, RepositoryError::Conflict { kind: "fabric", .. }),
        "a fabric with subnets stays: {e}"
    );
    s.subnet_delete(subnet.id).await.unwrap();
    s.subnet_delete(v6.id).await.unwrap();
    s.fabric_delete(fabric.id).await.unwrap();
    assert!(s.vlan_list(None).await.unwrap().is_empty());
    let sp = s.space_create("dmz", "").await.unwrap();
    assert_eq!(s.space_list().await.unwrap(), vec![sp.clone()]);
    s.space_delete(sp.id).await.unwrap();
}

async fn concurrent_address_assignment_never_repeats(s: SqlStore) {
    let (_, vlan) = s.fabric_create("f", None).await.unwrap();
    let subnet = s
        .subnet_create(&Subnet {
            id: SubnetId(0),
            name: "small".into(),
            cidr: "192.168.5.0/27".parse().unwrap(),
            vlan: vlan.id,
            gateway_ip: Some(ip("192.168.5.1")),
            dns_servers: vec![],
            managed: true,
            allow_dns: true,
            allow_proxy: true,
            active_discovery: false,
            description: String::new(),
        })
        .await
        .unwrap();
    // 30 usable hosts minus the gateway = 29 free addresses; 40 callers.
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                s.subnet_address_allocate(subnet.id, None, IpAddressType::Auto, None)
                    .await
            })
        })
        .collect();
    let mut got = BTreeSet::new();
    let mut exhausted = 0;
    for t in futures::future::join_all(tasks).await {
        match t.unwrap() {
            Ok(a) => assert!(got.insert(a.ip.unwrap()), "address handed out twice"),
            Err(RepositoryError::Ipam(IpamError::Exhausted { .. })) => exhausted += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!((got.len(), exhausted), (29, 11));
    assert!(!got.contains(&ip("192.168.5.1")));
}

async fn zones_pools_tags_and_domains(s: SqlStore) {
    users(&s).await;
    s.zone_create("rack-a", "row 1").await.unwrap();
    assert!(matches!(
        s.zone_create("rack-a", "").await,
        Err(RepositoryError::AlreadyExists { kind: "zone", .. })
    ));
    assert!(matches!(
        s.zone_create("bad name", "").await,
        Err(RepositoryError::Validation(_))
    ));
    s.pool_create("gpu-pool", "").await.unwrap();
    s.tag_create("fast", "", "", "").await.unwrap();
    let mut m = machine(1, 4, 4096);
    m.zone = "rack-a".into();
    m.pool = "gpu-pool".into();
    s.machine_create(&m, &admin()).await.unwrap();
    s.machine_create(&machine(2, 4, 4096), &admin())
        .await
        .unwrap();

    assert!(matches!(
        s.pool_delete("gpu-pool").await,
        Err(RepositoryError::Conflict { .. })
    ));
    assert!(matches!(
        s.pool_delete("default").await,
        Err(RepositoryError::Conflict { .. })
    ));
    assert!(matches!(
        s.zone_delete("default").await,
        Err(RepositoryError::Conflict { .. })
    ));
    s.zone_delete("rack-a").await.unwrap();
    assert_eq!(s.machine_get(&m.system_id).await.unwrap().zone, "default");

    let ids = [
        SystemId::parse("m00001").unwrap(),
        SystemId::parse("m00002").unwrap(),
    ];
    s.tag_update_machines("fast", &ids, &[]).await.unwrap();
    s.tag_update_machines("fast", &ids[..1], &[]).await.unwrap(); // idempotent
    assert_eq!(
        s.machine_list(&MachineFilter {
            tags: vec!["fast".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        2
    );
    s.tag_update_machines("fast", &[], &ids[1..]).await.unwrap();
    assert_eq!(
        s.machine_list(&MachineFilter {
            tags: vec!["fast".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        1
    );
    assert!(matches!(
        s.tag_update_machines("nope", &ids, &[]).await,
        Err(RepositoryError::NotFound { kind: "tag", .. })
    ));
    assert!(matches!(
        s.tag_update_machines("fast", &[SystemId::parse("zzzzzz").unwrap()], &[])
            .await,
        Err(RepositoryError::NotFound {
            kind: "machine",
            ..
        })
    ));
    s.tag_delete("fast").await.unwrap();
    assert!(s.machine_get(&ids[0]).await.unwrap().tags.is_empty());

    let d = s.domain_create("Lab.Example", true).await.unwrap();
    assert_eq!(d.name, "lab.example");
    assert!(matches!(
        s.domain_create("-bad", true).await,
        Err(RepositoryError::Validation(_))
    ));
}

async fn users_keys_and_tokens(s: SqlStore) {
    let u = s
        .user_create(
            "carol",
            "carol@example.com",
            false,
            Some("$argon2id$v=19$..."),
        )
        .await
        .unwrap();
    assert!(matches!(
        s.user_create("carol", "", false, None).await,
        Err(RepositoryError::AlreadyExists { kind: "user", .. })
    ));
    assert!(matches!(
        s.user_create("bad user", "", false, None).await,
        Err(RepositoryError::Validation(_))
    ));
    assert_eq!(
        s.user_get("carol").await.unwrap().password_hash.as_deref(),
        Some("$argon2id$v=19$...")
    );

    let k = s
        .ssh_key_create(
            u.id,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH8s carol@laptop",
        )
        .await
        .unwrap();
    assert!(
        matches!(s.ssh_key_create(u.id, "not a key").await, Err(RepositoryError::Validation(ref v)) if v.field == "key")
    );
    assert_eq!(s.ssh_key_list(u.id).await.unwrap(), vec![k.clone()]);
    s.ssh_key_delete(k.id).await.unwrap();

    let t = s.token_create(u.id, "cli").await.unwrap();
    assert_eq!(
        t.api_key().split(':').map(str::len).collect::<Vec<_>>(),
        [18, 18, 32]
    );
    let found = s.token_get_by_key(&t.token_key).await.unwrap();
    assert_eq!(found.token_secret, t.token_secret);
    assert!(!format!("{found:?}").contains(&t.token_secret));
    let t2 = s.token_create(u.id, "ci").await.unwrap();
    assert_ne!(t2.token_key, t.token_key);
    assert_eq!(s.token_list(u.id).await.unwrap().len(), 2);
    s.token_delete(t.id).await.unwrap();
    assert!(matches!(
        s.token_get_by_key(&t.token_key).await,
        Err(RepositoryError::NotFound { .. })
    ));

    // A user who owns a machine cannot be deleted.
    users(&s).await;
    ready(&s, vec![machine(1, 4, 4096)]).await;
    s.machine_allocate(&AllocationRequest::default(), &Actor::user("carol", false))
        .await
        .unwrap();
    let e = s.user_delete("carol").await.unwrap_err();
    assert!(
        matches!(e, RepositoryError::Conflict { kind: "user", .. }),
        "{e}"
    );
    s.user_delete("bob").await.unwrap();
    assert!(matches!(
        s.user_get("bob").await,
        Err(RepositoryError::NotFound { .. })
    ));
}

async fn events_are_listed_newest_first(s: SqlStore) {
    let id = SystemId::parse("abc123").unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            s.event_append(&NewEvent::machine(&id, "Note", format!("n{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    s.event_append(&NewEvent::machine(
        &SystemId::parse("other1").unwrap(),
        "Note",
        "x",
    ))
    .await
    .unwrap();
    let all = s
        .event_list(&EventFilter {
            system_id: Some(id.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        all.iter()
            .map(|e| e.event.message.as_str())
            .collect::<Vec<_>>(),
        ["n4", "n3", "n2", "n1", "n0"]
    );
    let after = s
        .event_list(&EventFilter {
            system_id: Some(id.clone()),
            after: Some(ids[2]),
            limit: Some(1),
        })
        .await
        .unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].event.message, "n4");
    assert_eq!(
        s.event_list(&EventFilter::default()).await.unwrap().len(),
        6
    );
    let _ = PowerState::Unknown;
}
