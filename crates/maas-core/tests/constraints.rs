//! Allocation constraints: parsing `op=allocate` parameters, matching each
//! constraint family against a small fleet, selecting the cheapest machine,
//! and explaining a miss.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::IpAddr;

use chrono::{DateTime, TimeZone, Utc};
use maas_core::constraints::{
    AllocationRequest, Constraints, DeviceConstraint, InterfaceConstraint, NetworkIndex,
    NoMatchExplanation, StorageConstraint, allocatable, select,
};
use maas_core::lifecycle::NodeStatus;
use maas_core::machine::{
    BlockDevice, Interface, InterfaceLink, LinkMode, Machine, PciDevice, PowerState,
};
use maas_core::network::{Fabric, Space, Subnet, Vlan};
use maas_core::{
    Architecture, FabricId, Hostname, MacAddress, SpaceId, SubnetId, SystemId, VlanId,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const GB: u64 = 1_000_000_000;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 9, 26, 53).unwrap()
}

fn req(params: &[(&str, &str)]) -> AllocationRequest {
    AllocationRequest::from_params(params.iter().copied())
        .unwrap_or_else(|e| panic!("{params:?}: {e}"))
}

fn constraints(params: &[(&str, &str)]) -> Constraints {
    req(params).constraints
}

fn parse_err(params: &[(&str, &str)]) -> maas_core::ValidationError {
    match AllocationRequest::from_params(params.iter().copied()) {
        Ok(r) => panic!("{params:?} parsed: {r:?}"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------
// Parsing.

#[test]
fn every_documented_parameter_parses() {
    let r = req(&[
        ("op", "allocate"),
        ("name", "node-a"),
        ("system_id", "aaa1"),
        ("arch", "amd64,arm64/generic"),
        ("not_arch", "ppc64el"),
        ("cpu_count", "4"),
        ("cpu_speed", "2000"),
        ("mem", "1024.5"),
        ("tags", "gpu, fast"),
        ("tags", "big"),
        ("not_tags", "virtual"),
        ("zone", "zone-b"),
        ("not_in_zone", "zone-x,zone-y"),
        ("pool", "gpu-pool"),
        ("not_in_pool", "scratch"),
        ("subnets", "lan,cidr:10.1.0.0/24"),
        ("not_subnets", "space:dmz"),
        ("vlans", "vid:100"),
        ("not_vlans", "name:storage"),
        ("fabrics", "fabric-1"),
        ("not_fabrics", "fabric-10g"),
        ("fabric_classes", "10g"),
        ("not_fabric_classes", "1g"),
        ("link_speed", "10000"),
        ("storage", "root:100(ssd)"),
        ("interfaces", "e0:fabric=fabric-1"),
        (
            "devices",
            "vendor_id=10de,product_name=GA100;commissioning_driver=i40e",
        ),
        ("owner", "alice"),
        ("not_owner", "bob,carol"),
        ("power_state", "on"),
        ("not_power_state", "error,unknown"),
        ("deployment_target", "Ephemeral"),
        ("not_deployment_target", "default"),
        ("agent_name", "juju"),
        ("comment", "for the demo"),
        ("bridge_all", "true"),
        ("bridge_type", "ovs"),
        ("bridge_stp", "1"),
        ("bridge_fd", "15"),
        ("dry_run", "yes"),
        ("verbose", "on"),
    ]);
    let c = &r.constraints;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(c.name.as_deref(), Some("node-a"));
    assert_eq!(c.system_id, Some(SystemId::parse("aaa1").unwrap()));
    assert_eq!(c.arch, s(&["amd64", "arm64/generic"]));
    assert_eq!(c.not_arch, s(&["ppc64el"]));
    assert_eq!(c.cpu_count, Some(4));
    assert_eq!(c.cpu_speed, Some(2000));
    assert_eq!(c.mem, Some(1025), "mem rounds up to whole MiB");
    assert_eq!(c.tags, s(&["gpu", "fast", "big"]), "repeated keys add up");
    assert_eq!(c.not_tags, s(&["virtual"]));
    assert_eq!(c.zone.as_deref(), Some("zone-b"));
    assert_eq!(c.not_in_zone, s(&["zone-x", "zone-y"]));
    assert_eq!(c.pool.as_deref(), Some("gpu-pool"));
    assert_eq!(c.not_in_pool, s(&["scratch"]));
    assert_eq!(c.subnets, s(&["lan", "cidr:10.1.0.0/24"]));
    assert_eq!(c.not_subnets, s(&["space:dmz"]));
    assert_eq!(c.vlans, s(&["vid:100"]));
    assert_eq!(c.not_vlans, s(&["name:storage"]));
    assert_eq!(c.fabrics, s(&["fabric-1"]));
    assert_eq!(c.not_fabrics, s(&["fabric-10g"]));
    assert_eq!(c.fabric_classes, s(&["10g"]));
    assert_eq!(c.not_fabric_classes, s(&["1g"]));
    assert_eq!(c.link_speed, Some(10000));
    assert_eq!(
        c.storage,
        [StorageConstraint {
            label: "root".into(),
            min_bytes: 100 * GB,
            tags: s(&["ssd"]),
        }]
    );
    assert_eq!(
        c.interfaces,
        [InterfaceConstraint {
            label: "e0".into(),
            conditions: vec![("fabric".into(), "fabric-1".into())],
        }]
    );
    assert_eq!(
        c.devices,
        [
            DeviceConstraint {
                conditions: vec![
                    ("vendor_id".into(), "10de".into()),
                    ("product_name".into(), "GA100".into()),
                ],
            },
            DeviceConstraint {
                conditions: vec![("commissioning_driver".into(), "i40e".into())],
            },
        ]
    );
    assert_eq!(c.owner.as_deref(), Some("alice"));
    assert_eq!(c.not_owner, s(&["bob", "carol"]));
    assert_eq!(c.power_state, Some(PowerState::On));
    assert_eq!(c.not_power_state, [PowerState::Error, PowerState::Unknown]);
    assert_eq!(c.deployment_target.as_deref(), Some("ephemeral"));
    assert_eq!(c.not_deployment_target, s(&["default"]));

    let o = &r.options;
    assert_eq!(o.agent_name.as_deref(), Some("juju"));
    assert_eq!(o.comment.as_deref(), Some("for the demo"));
    assert!(o.bridge_all && o.bridge_stp && o.dry_run && o.verbose);
    assert_eq!(o.bridge_type.as_deref(), Some("ovs"));
    assert_eq!(o.bridge_fd, Some(15));

    // No parameters: no constraints, default options.
    assert_eq!(req(&[]), AllocationRequest::default());
    let off = req(&[("dry_run", "false"), ("verbose", "0")]).options;
    assert!(!off.dry_run && !off.verbose);
}

#[test]
fn unknown_parameters_are_errors_naming_the_key() {
    for key in ["colour", "cpu", "tag", "zones", "Name", "storage_layout"] {
        let e = parse_err(&[("cpu_count", "2"), (key, "x")]);
        assert_eq!(e.field, key);
        assert!(e.to_string().contains(key), "{e}");
    }
}

#[test]
fn malformed_values_name_their_key() {
    let cases: &[(&str, &str)] = &[
        ("cpu_count", "abc"),
        ("cpu_count", "-2"),
        ("mem", "-1"),
        ("mem", "lots"),
        ("mem", "NaN"),
        ("cpu_speed", "fast"),
        ("link_speed", "1e999"),
        ("bridge_fd", "x"),
        ("dry_run", "maybe"),
        ("power_state", "sleeping"),
        ("deployment_target", "cloud"),
        ("not_deployment_target", "x"),
        ("system_id", "NOT AN ID"),
        ("storage", "root:abc"),
        ("storage", "root:10(ssd"),
        ("interfaces", "eth0"),
        ("devices", "vendor_id"),
        ("devices", "colour=red"),
    ];
    for (k, v) in cases {
        let e = parse_err(&[(k, v)]);
        assert_eq!(e.field, *k, "{k}={v}: {e}");
    }
    let e = parse_err(&[("cpu_count", "abc")]);
    assert_eq!(e.value, "abc");
    let e = parse_err(&[("mem", "-1")]);
    assert_eq!(e.value, "-1");
    assert!(e.to_string().contains("mem"), "{e}");
}

/// `from_params` promises errors naming the parameter; a bad entry of
/// `not_power_state` is reported under `power_state`, a different parameter.
#[test]
fn a_bad_not_power_state_names_not_power_state() {
    let e = parse_err(&[("not_power_state", "on,dozing")]);
    assert_eq!(e.value, "dozing");
    assert_eq!(e.field, "not_power_state", "{e}");
}

#[test]
fn storage_parses_labels_sizes_and_tags() {
    let c = constraints(&[("storage", "root:100(ssd),data:2000(rotary,sata)")]);
    assert_eq!(
        c.storage,
        [
            StorageConstraint {
                label: "root".into(),
                min_bytes: 100 * GB,
                tags: vec!["ssd".into()],
            },
            StorageConstraint {
                label: "data".into(),
                min_bytes: 2000 * GB,
                tags: vec!["rotary".into(), "sata".into()],
            },
        ]
    );

    let c = constraints(&[("storage", "50,100")]);
    assert_eq!(
        c.storage,
        [
            StorageConstraint {
                label: "0".into(),
                min_bytes: 50 * GB,
                tags: vec![],
            },
            StorageConstraint {
                label: "1".into(),
                min_bytes: 100 * GB,
                tags: vec![],
            },
        ]
    );

    let c = constraints(&[("storage", "boot:0.5, 10(nvme)")]);
    assert_eq!(c.storage[0].min_bytes, 500_000_000);
    assert_eq!(c.storage[1].label, "1");
    assert_eq!(c.storage[1].min_bytes, 10 * GB);
    assert_eq!(c.storage[1].tags, ["nvme"]);
}

#[test]
fn interfaces_parse_labels_and_conditions() {
    let c = constraints(&[(
        "interfaces",
        "eth0:subnet=cidr:10.0.0.0/24,space=dmz;eth1:fabric=f1",
    )]);
    assert_eq!(
        c.interfaces,
        [
            InterfaceConstraint {
                label: "eth0".into(),
                conditions: vec![
                    ("subnet".into(), "cidr:10.0.0.0/24".into()),
                    ("space".into(), "dmz".into()),
                ],
            },
            InterfaceConstraint {
                label: "eth1".into(),
                conditions: vec![("fabric".into(), "f1".into())],
            },
        ]
    );
    for key in [
        "fabric",
        "fabric_class",
        "ip",
        "mode",
        "name",
        "subnet",
        "space",
        "type",
        "vlan",
        "vid",
        "tag",
        "link_speed",
    ] {
        let c = constraints(&[("interfaces", &format!("x:{key}=1"))]);
        assert_eq!(c.interfaces[0].conditions, [(key.to_string(), "1".into())]);
    }
    let e = parse_err(&[("interfaces", "eth0:colour=blue")]);
    assert_eq!(e.field, "interfaces");
    assert!(e.to_string().contains("colour"), "{e}");
    let e = parse_err(&[("interfaces", "eth0:fabric=f1,speed=10")]);
    assert_eq!(e.field, "interfaces");
}

// ---------------------------------------------------------------------------
// The fleet.

fn fabrics() -> Vec<Fabric> {
    vec![
        Fabric {
            id: FabricId(1),
            name: "fabric-1".into(),
            class_type: None,
            description: String::new(),
        },
        Fabric {
            id: FabricId(2),
            name: "fabric-10g".into(),
            class_type: Some("10g".into()),
            description: String::new(),
        },
    ]
}

fn spaces() -> Vec<Space> {
    vec![Space {
        id: SpaceId(1),
        name: "dmz".into(),
        description: String::new(),
    }]
}

fn vlan(id: i64, fabric: i64, vid: u16, name: Option<&str>, space: Option<i64>) -> Vlan {
    Vlan {
        id: VlanId(id),
        fabric: FabricId(fabric),
        vid,
        name: name.map(str::to_owned),
        mtu: 1500,
        dhcp_on: false,
        primary_rack: None,
        secondary_rack: None,
        relay_vlan: None,
        space: space.map(SpaceId),
        description: String::new(),
    }
}

fn vlans() -> Vec<Vlan> {
    vec![
        // fabric-1 untagged
        vlan(10, 1, 0, Some("untagged"), None),
        // fabric-1 vid 100, in space dmz
        vlan(11, 1, 100, Some("storage"), Some(1)),
        // fabric-10g untagged
        vlan(20, 2, 0, None, None),
    ]
}

fn subnet(id: i64, name: &str, cidr: &str, vlan: i64) -> Subnet {
    Subnet {
        id: SubnetId(id),
        name: name.into(),
        cidr: cidr.parse().unwrap(),
        vlan: VlanId(vlan),
        gateway_ip: None,
        dns_servers: Vec::new(),
        managed: true,
        allow_dns: true,
        allow_proxy: true,
        active_discovery: false,
        description: String::new(),
    }
}

fn subnets() -> Vec<Subnet> {
    vec![
        subnet(100, "lan", "10.0.0.0/24", 10),
        subnet(101, "dmz-net", "10.1.0.0/24", 11),
        subnet(102, "fast", "10.2.0.0/24", 20),
    ]
}

fn net() -> NetworkIndex {
    NetworkIndex::new(&fabrics(), &vlans(), &subnets(), &spaces())
}

fn base(id: &str, host: &str, arch: &str, cpu: u32, mem_mib: u64) -> Machine {
    let mut m = Machine::new(
        SystemId::parse(id).unwrap(),
        Hostname::parse(host).unwrap(),
        Architecture::parse(arch).unwrap(),
        t0(),
    );
    m.status = NodeStatus::Ready;
    m.hardware.cpu.count = cpu;
    m.hardware.memory_mib = mem_mib;
    m
}

fn disk(name: &str, gb: u64, tags: &[&str]) -> BlockDevice {
    let mut d = BlockDevice::disk(name, gb * GB);
    d.tags = tags.iter().map(|t| t.to_string()).collect();
    d
}

fn nic(name: &str, n: u8, vlan: i64, subnet: Option<(i64, &str)>, speed: u32) -> Interface {
    let mut i = Interface::physical(name, MacAddress([0x52, 0x54, 0, 0, n, 1]));
    i.vlan = Some(VlanId(vlan));
    i.link_speed_mbps = speed;
    if let Some((s, ip)) = subnet {
        i.links.push(InterfaceLink {
            id: None,
            mode: LinkMode::Auto,
            subnet: Some(SubnetId(s)),
            ip: Some(ip.parse::<IpAddr>().unwrap()),
        });
    }
    i
}

fn tags(t: &[&str]) -> BTreeSet<String> {
    t.iter().map(|x| x.to_string()).collect()
}

/// Three allocatable machines (node-a, node-b, node-c) and three that are not
/// (deployed node-d, locked node-e, owned node-f). node-e and node-f are the
/// cheapest and match nearly everything, so a selection that looked at them
/// would show.
fn fleet() -> Vec<Machine> {
    // node-a: small amd64/generic on the LAN, one 100 GB SSD.
    let mut a = base("aaa1", "node-a", "amd64/generic", 4, 8192);
    a.tags = tags(&["virtual"]);
    a.block_devices = vec![disk("sda", 100, &["ssd"])];
    a.interfaces = vec![nic("eth0", 1, 10, Some((100, "10.0.0.5")), 1000)];
    a.power_state = PowerState::On;
    a.hardware.cpu.speed_mhz = 2400;

    // node-b: big amd64 (HWE subarch; see `a_release_subarchitecture_parses`
    // for why not `hwe-22.04`) with a GPU, LAN + 10g fabric, two disks.
    let mut b = base("bbb2", "node-b", "amd64/hwe-t", 16, 65536);
    b.tags = tags(&["gpu", "fast"]);
    b.zone = "zone-b".into();
    b.pool = "gpu-pool".into();
    b.block_devices = vec![
        disk("sda", 500, &["ssd"]),
        disk("sdb", 2000, &["rotary", "sata"]),
    ];
    let mut eth1 = nic("eth1", 12, 20, Some((102, "10.2.0.7")), 10000);
    eth1.tags = vec!["sriov".into()];
    b.interfaces = vec![nic("eth0", 2, 10, Some((100, "10.0.0.6")), 1000), eth1];
    b.hardware.gpus = vec![PciDevice {
        vendor_id: "10de".into(),
        product_id: "20b0".into(),
        vendor_name: "NVIDIA Corporation".into(),
        product_name: "GA100".into(),
        commissioning_driver: "nvidia".into(),
        pci_address: "0000:3b:00.0".into(),
    }];
    b.power_state = PowerState::Off;
    b.hardware.cpu.speed_mhz = 3000;

    // node-c: arm64 in the DMZ (VLAN 100 of fabric-1), a big SSD and a small
    // spinning disk, an Intel NIC as a PCI device, deploys to memory.
    let mut c = base("ccc3", "node-c", "arm64/generic", 8, 16384);
    c.tags = tags(&["arm"]);
    c.zone = "zone-b".into();
    c.block_devices = vec![disk("sda", 1000, &["ssd"]), disk("sdb", 200, &["rotary"])];
    // Attached to the VLAN only through its subnet link.
    let mut eth0 = nic("eth0", 3, 11, Some((101, "10.1.0.9")), 0);
    eth0.vlan = None;
    c.interfaces = vec![eth0];
    c.hardware.pci_devices = vec![PciDevice {
        vendor_id: "8086".into(),
        product_id: "1572".into(),
        vendor_name: "Intel Corporation".into(),
        product_name: "Ethernet Controller X710".into(),
        commissioning_driver: "i40e".into(),
        pci_address: "0000:5e:00.0".into(),
    }];
    c.ephemeral_deploy = true;
    c.hardware.cpu.speed_mhz = 2000;

    // node-d: deployed to alice.
    let mut d = base("ddd4", "node-d", "amd64/generic", 2, 4096);
    d.status = NodeStatus::Deployed;
    d.owner = Some("alice".into());
    d.tags = tags(&["gpu"]);

    // node-e: Ready but locked; node-f: Ready but owned by bob. Both cheap,
    // with every tag and plenty of CPUs.
    let mut e = base("eee5", "node-e", "amd64/generic", 64, 1024);
    e.locked = true;
    e.tags = tags(&["gpu", "fast", "virtual"]);
    let mut f = base("fff6", "node-f", "amd64/generic", 64, 512);
    f.owner = Some("bob".into());
    f.tags = tags(&["gpu", "fast", "virtual"]);
    for m in [&mut e, &mut f] {
        m.block_devices = vec![disk("sda", 5000, &["ssd"]), disk("sdb", 5000, &["ssd"])];
    }

    let fleet = vec![a, b, c, d, e, f];
    for m in &fleet {
        m.validate().unwrap();
    }
    fleet
}

/// Host names of the fleet machines that match (status ignored), sorted.
fn matching(params: &[(&str, &str)]) -> Vec<String> {
    let c = constraints(params);
    let net = net();
    let mut out: Vec<String> = fleet()
        .iter()
        .filter(|m| c.matches(m, &net))
        .map(|m| m.hostname.to_string())
        .collect();
    out.sort();
    out
}

/// Like `matching`, over the allocatable machines a, b and c only.
fn matching_abc(params: &[(&str, &str)]) -> Vec<String> {
    matching(params)
        .into_iter()
        .filter(|h| ["node-a", "node-b", "node-c"].contains(&h.as_str()))
        .collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn no_constraints_match_everything() {
    assert_eq!(
        matching(&[]),
        names(&["node-a", "node-b", "node-c", "node-d", "node-e", "node-f"])
    );
}

#[test]
fn name_and_system_id() {
    assert_eq!(matching(&[("name", "node-a")]), names(&["node-a"]));
    assert_eq!(matching(&[("name", "node-a.maas")]), names(&["node-a"]));
    assert_eq!(matching(&[("name", "node-a.example")]), names(&[]));
    assert_eq!(matching(&[("system_id", "ccc3")]), names(&["node-c"]));
    assert_eq!(matching(&[("system_id", "zzz9")]), names(&[]));
}

#[test]
fn arch_and_not_arch() {
    assert_eq!(
        matching_abc(&[("arch", "amd64")]),
        names(&["node-a", "node-b"])
    );
    assert_eq!(
        matching_abc(&[("arch", "amd64/generic")]),
        names(&["node-a"]),
        "amd64/generic excludes the hwe subarch"
    );
    assert_eq!(matching_abc(&[("arch", "amd64/hwe-t")]), names(&["node-b"]));
    assert_eq!(matching_abc(&[("arch", "arm64")]), names(&["node-c"]));
    assert_eq!(
        matching_abc(&[("arch", "arm64,amd64/generic")]),
        names(&["node-a", "node-c"]),
        "any listed architecture"
    );
    assert_eq!(matching_abc(&[("not_arch", "amd64")]), names(&["node-c"]));
    assert_eq!(
        matching_abc(&[("not_arch", "amd64/generic")]),
        names(&["node-b", "node-c"])
    );
}

/// MAAS sub-architectures carry releases (`amd64/hwe-22.04`,
/// `amd64/ga-22.04`), and `Architecture::subarch` itself documents
/// `hwe-22.04`; a machine with one must be constructible and matchable.
#[test]
fn a_release_subarchitecture_parses() {
    for s in ["amd64/hwe-22.04", "amd64/ga-22.04", "arm64/hwe-24.04-edge"] {
        let a = Architecture::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(a.to_string(), s);
        assert!(a.matches(s));
        assert!(a.matches(a.arch()));
        assert!(!a.matches(&format!("{}/generic", a.arch())));
    }
}

#[test]
fn cpu_speed_and_memory_are_minimums() {
    assert_eq!(
        matching_abc(&[("cpu_count", "8")]),
        names(&["node-b", "node-c"])
    );
    assert_eq!(
        matching_abc(&[("cpu_count", "4")]),
        names(&["node-a", "node-b", "node-c"])
    );
    assert_eq!(matching_abc(&[("cpu_count", "8.5")]), names(&["node-b"]));
    assert_eq!(
        matching_abc(&[("mem", "16384")]),
        names(&["node-b", "node-c"])
    );
    assert_eq!(matching_abc(&[("mem", "16385")]), names(&["node-b"]));
    assert_eq!(
        matching_abc(&[("cpu_speed", "2400")]),
        names(&["node-a", "node-b"])
    );
    assert_eq!(
        matching_abc(&[("cpu_count", "8"), ("mem", "32768")]),
        names(&["node-b"])
    );
}

#[test]
fn tags_all_and_not_tags_none() {
    assert_eq!(matching_abc(&[("tags", "gpu,fast")]), names(&["node-b"]));
    assert_eq!(matching_abc(&[("tags", "gpu,arm")]), names(&[]));
    assert_eq!(
        matching_abc(&[("not_tags", "gpu")]),
        names(&["node-a", "node-c"])
    );
    assert_eq!(matching_abc(&[("not_tags", "gpu,arm")]), names(&["node-a"]));
    assert_eq!(
        matching_abc(&[("tags", "fast"), ("not_tags", "gpu")]),
        names(&[])
    );
}

#[test]
fn zone_and_pool() {
    assert_eq!(
        matching_abc(&[("zone", "zone-b")]),
        names(&["node-b", "node-c"])
    );
    assert_eq!(matching_abc(&[("zone", "default")]), names(&["node-a"]));
    assert_eq!(
        matching_abc(&[("not_in_zone", "zone-b")]),
        names(&["node-a"])
    );
    assert_eq!(matching_abc(&[("pool", "gpu-pool")]), names(&["node-b"]));
    assert_eq!(
        matching_abc(&[("not_in_pool", "gpu-pool")]),
        names(&["node-a", "node-c"])
    );
    assert_eq!(
        matching_abc(&[("not_in_pool", "gpu-pool,default")]),
        names(&[])
    );
}

#[test]
fn subnets_and_not_subnets() {
    let lan = names(&["node-a", "node-b"]);
    for spec in [
        "lan",
        "name:lan",
        "cidr:10.0.0.0/24",
        "10.0.0.0/24",
        "100",
        "id:100",
    ] {
        assert_eq!(matching_abc(&[("subnets", spec)]), lan, "{spec}");
    }
    assert_eq!(
        matching_abc(&[("subnets", "ip:10.2.0.200")]),
        names(&["node-b"])
    );
    assert_eq!(
        matching_abc(&[("subnets", "space:dmz")]),
        names(&["node-c"])
    );
    assert_eq!(
        matching_abc(&[("subnets", "vlan:vid:100")]),
        names(&["node-c"])
    );
    assert_eq!(
        matching_abc(&[("subnets", "lan,fast")]),
        names(&["node-b"]),
        "every listed subnet"
    );
    assert_eq!(matching_abc(&[("subnets", "10.9.0.0/24")]), names(&[]));
    assert_eq!(matching_abc(&[("not_subnets", "lan")]), names(&["node-c"]));
    assert_eq!(
        matching_abc(&[("not_subnets", "fast,dmz-net")]),
        names(&["node-a"])
    );
}

#[test]
fn vlans_fabrics_and_fabric_classes() {
    assert_eq!(
        matching_abc(&[("vlans", "vid:100")]),
        names(&["node-c"]),
        "node-c reaches VLAN 100 through its subnet link"
    );
    assert_eq!(
        matching_abc(&[("vlans", "name:storage")]),
        names(&["node-c"])
    );
    assert_eq!(matching_abc(&[("vlans", "storage")]), names(&["node-c"]));
    assert_eq!(
        matching_abc(&[("vlans", "id:10")]),
        names(&["node-a", "node-b"])
    );
    assert_eq!(
        matching_abc(&[("vlans", "fabric:fabric-10g")]),
        names(&["node-b"])
    );
    assert_eq!(matching_abc(&[("not_vlans", "id:10")]), names(&["node-c"]));

    assert_eq!(
        matching_abc(&[("fabrics", "fabric-1")]),
        names(&["node-a", "node-b", "node-c"])
    );
    for spec in ["fabric-10g", "name:fabric-10g", "id:2", "2"] {
        assert_eq!(
            matching_abc(&[("fabrics", spec)]),
            names(&["node-b"]),
            "{spec}"
        );
    }
    assert_eq!(
        matching_abc(&[("fabrics", "fabric-1,fabric-10g")]),
        names(&["node-b"])
    );
    assert_eq!(
        matching_abc(&[("not_fabrics", "fabric-10g")]),
        names(&["node-a", "node-c"])
    );

    assert_eq!(
        matching_abc(&[("fabric_classes", "10g")]),
        names(&["node-b"])
    );
    assert_eq!(matching_abc(&[("fabric_classes", "1g")]), names(&[]));
    assert_eq!(
        matching_abc(&[("not_fabric_classes", "10g")]),
        names(&["node-a", "node-c"])
    );
}

#[test]
fn link_speed_is_a_minimum_over_any_interface() {
    assert_eq!(
        matching_abc(&[("link_speed", "1000")]),
        names(&["node-a", "node-b"])
    );
    assert_eq!(matching_abc(&[("link_speed", "10000")]), names(&["node-b"]));
    assert_eq!(matching_abc(&[("link_speed", "25000")]), names(&[]));
}

#[test]
fn storage_needs_distinct_disks() {
    assert_eq!(
        matching_abc(&[("storage", "root:100(ssd)")]),
        names(&["node-a", "node-b", "node-c"]),
        "100 GB is 10^9 * 100 bytes: node-a's disk is exactly that"
    );
    assert_eq!(
        matching_abc(&[("storage", "root:100.5(ssd)")]),
        names(&["node-b", "node-c"])
    );
    assert_eq!(
        matching_abc(&[("storage", "root:10(rotary)")]),
        names(&["node-b", "node-c"])
    );
    assert_eq!(
        matching_abc(&[("storage", "data:10(rotary,sata)")]),
        names(&["node-b"])
    );
    // node-c's single 1000 GB SSD satisfies each requirement alone, but not
    // both at once.
    assert!(matching_abc(&[("storage", "data:1000")]).contains(&"node-c".to_string()));
    assert_eq!(
        matching_abc(&[("storage", "root:100(ssd),data:1000")]),
        names(&["node-b"])
    );
    // Two constraints cannot both take node-a's only disk.
    assert_eq!(
        matching_abc(&[("storage", "1,1")]),
        names(&["node-b", "node-c"])
    );
    // A first-fit assignment would give the first requirement the SSD and
    // fail the second; a proper matching swaps them.
    assert_eq!(
        matching_abc(&[("storage", "x:100,y:500(ssd)")]),
        names(&["node-b", "node-c"])
    );
    assert_eq!(matching_abc(&[("storage", "1,1,1")]), names(&[]));
}

#[test]
fn interfaces_need_distinct_interfaces() {
    assert_eq!(
        matching_abc(&[("interfaces", "e0:subnet=lan")]),
        names(&["node-a", "node-b"])
    );
    assert_eq!(
        matching_abc(&[("interfaces", "e0:subnet=lan;e1:subnet=lan")]),
        names(&[]),
        "one LAN interface cannot serve two labels"
    );
    assert_eq!(
        matching_abc(&[("interfaces", "e0:fabric=fabric-1;e1:fabric_class=10g")]),
        names(&["node-b"])
    );
    assert_eq!(
        matching_abc(&[("interfaces", "e0:fabric=fabric-1,fabric_class=10g")]),
        names(&[]),
        "conditions of one label hold on the same interface"
    );
    assert_eq!(
        matching_abc(&[("interfaces", "e0:subnet=cidr:10.0.0.0/24,space=dmz")]),
        names(&[])
    );
    assert_eq!(
        matching_abc(&[("interfaces", "e0:space=dmz")]),
        names(&["node-c"])
    );
    assert_eq!(
        matching_abc(&[("interfaces", "e0:vid=100")]),
        names(&["node-c"])
    );
    assert_eq!(
        matching_abc(&[("interfaces", "e0:vlan=name:storage")]),
        names(&["node-c"])
    );
    assert_eq!(
        matching_abc(&[("interfaces", "e0:name=eth1")]),
        names(&["node-b"])
    );
    assert_eq!(
        matching_abc(&[("interfaces", "e0:ip=10.0.0.5")]),
        names(&["node-a"])
    );
    assert_eq!(
        matching_abc(&[("interfaces", "e0:mode=auto,type=physical")]),
        names(&["node-a", "node-b", "node-c"])
    );
    assert_eq!(matching_abc(&[("interfaces", "e0:mode=dhcp")]), names(&[]));
    assert_eq!(matching_abc(&[("interfaces", "e0:type=bond")]), names(&[]));
    assert_eq!(
        matching_abc(&[("interfaces", "e0:tag=sriov")]),
        names(&["node-b"])
    );
    assert_eq!(
        matching_abc(&[("interfaces", "e0:link_speed=10000")]),
        names(&["node-b"])
    );
    assert_eq!(
        matching_abc(&[("interfaces", "e0:link_speed=1000;e1:link_speed=1000")]),
        names(&["node-b"])
    );
}

#[test]
fn devices_match_gpus_and_pci_devices() {
    assert_eq!(
        matching_abc(&[("devices", "vendor_id=10de")]),
        names(&["node-b"])
    );
    assert_eq!(
        matching_abc(&[(
            "devices",
            "vendor_name=nvidia corporation,product_name=ga100"
        )]),
        names(&["node-b"]),
        "names compare without case"
    );
    assert_eq!(
        matching_abc(&[("devices", "vendor_id=10de,product_id=ffff")]),
        names(&[])
    );
    assert_eq!(
        matching_abc(&[("devices", "commissioning_driver=i40e")]),
        names(&["node-c"])
    );
    assert_eq!(
        matching_abc(&[("devices", "vendor_id=10de;vendor_id=10de")]),
        names(&[]),
        "two device constraints need two devices"
    );
}

#[test]
fn owner_power_state_and_deployment_target() {
    assert_eq!(matching(&[("owner", "alice")]), names(&["node-d"]));
    assert_eq!(
        matching(&[("not_owner", "alice,bob")]),
        names(&["node-a", "node-b", "node-c", "node-e"])
    );
    assert_eq!(matching_abc(&[("power_state", "on")]), names(&["node-a"]));
    assert_eq!(
        matching_abc(&[("not_power_state", "on")]),
        names(&["node-b", "node-c"])
    );
    assert_eq!(
        matching_abc(&[("not_power_state", "on,unknown")]),
        names(&["node-b"])
    );
    assert_eq!(
        matching_abc(&[("deployment_target", "ephemeral")]),
        names(&["node-c"])
    );
    assert_eq!(
        matching_abc(&[("deployment_target", "default")]),
        names(&["node-a", "node-b"])
    );
    assert_eq!(
        matching_abc(&[("not_deployment_target", "default")]),
        names(&["node-c"])
    );
}

#[test]
fn failures_name_every_missed_constraint() {
    let fleet = fleet();
    let c = constraints(&[
        ("cpu_count", "8"),
        ("tags", "gpu"),
        ("zone", "zone-b"),
        ("storage", "1000"),
    ]);
    let net = net();
    let a = &fleet[0];
    assert_eq!(
        c.failures(a, &net),
        ["cpu_count", "tags", "zone", "storage"]
    );
    assert!(c.failures(&fleet[1], &net).is_empty());
    assert_eq!(c.failures(&fleet[2], &net), ["tags"]);
}

// ---------------------------------------------------------------------------
// Selection.

#[test]
fn select_takes_the_cheapest_allocatable_match() {
    let fleet = fleet();
    let net = net();
    // d (cost 6), e (65) and f (64.5) are not allocatable; a costs 12,
    // c 24, b 80.
    assert_eq!(fleet[0].allocation_cost(), 12.0);
    assert_eq!(fleet[3].allocation_cost(), 6.0);
    let m = select(&Constraints::default(), &fleet, &net).unwrap();
    assert_eq!(m.hostname.as_str(), "node-a");

    let m = select(&constraints(&[("cpu_count", "8")]), &fleet, &net).unwrap();
    assert_eq!(m.hostname.as_str(), "node-c");

    // e and f are cheaper and have the tags but are locked / owned.
    let m = select(&constraints(&[("tags", "gpu,fast")]), &fleet, &net).unwrap();
    assert_eq!(m.hostname.as_str(), "node-b");

    let mut only_nonallocatable = fleet.clone();
    only_nonallocatable.retain(|m| !allocatable(m));
    assert_eq!(only_nonallocatable.len(), 3);
    let e = select(&Constraints::default(), &only_nonallocatable, &net).unwrap_err();
    assert_eq!(e.considered, 0);
    assert!(e.excluded_by.is_empty());
}

#[test]
fn equal_costs_are_broken_by_system_id() {
    let net = net();
    // 4 + 8192/1024 = 12 = 8 + 4096/1024.
    let x = base("zz9", "node-x", "amd64", 4, 8192);
    let y = base("aa1", "node-y", "amd64", 8, 4096);
    let z = base("mm5", "node-z", "amd64", 2, 10240);
    for fleet in [
        vec![x.clone(), y.clone(), z.clone()],
        vec![z.clone(), y.clone(), x.clone()],
        vec![y.clone(), x.clone(), z.clone()],
    ] {
        assert_eq!(
            select(&Constraints::default(), &fleet, &net)
                .unwrap()
                .system_id
                .as_str(),
            "aa1"
        );
    }
    // Without y, the tie is between zz9 and mm5.
    assert_eq!(
        select(&Constraints::default(), &[x, z], &net)
            .unwrap()
            .system_id
            .as_str(),
        "mm5"
    );
}

#[test]
fn no_match_explains_per_constraint_exclusions() {
    let fleet = fleet();
    let net = net();
    // Allocatable: a (4 cpu, virtual), b (16 cpu, gpu fast), c (8 cpu, arm).
    // cpu_count=32 excludes a, b, c; tags=gpu excludes a and c; zone=zone-b
    // excludes a; storage=1000 excludes a. e and f (64 cpu, gpu, big disks,
    // zone default) would pass cpu/tags/storage but are not considered.
    let c = constraints(&[
        ("cpu_count", "32"),
        ("tags", "gpu"),
        ("zone", "zone-b"),
        ("storage", "1000"),
    ]);
    let e = select(&c, &fleet, &net).unwrap_err();
    assert_eq!(e.considered, 3);
    let want: Vec<(String, usize)> = vec![
        ("cpu_count".into(), 3),
        ("storage".into(), 1),
        ("tags".into(), 2),
        ("zone".into(), 1),
    ];
    assert_eq!(e.excluded_by.into_iter().collect::<Vec<_>>(), want);

    let e = select(&c, &fleet, &net).unwrap_err();
    let text = e.to_string();
    for part in [
        "3 ready machine(s) considered",
        "cpu_count excluded 3",
        "tags excluded 2",
        "zone excluded 1",
        "storage excluded 1",
        "cpu_count=32",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    assert!(!text.contains("arch"), "{text}");

    // The same explanation built by hand over the allocatable machines.
    let built = NoMatchExplanation::build(&c, fleet.iter().filter(|m| allocatable(m)), &net);
    assert_eq!(built, e);

    // A constraint no considered machine misses is not named.
    let c = constraints(&[("tags", "gpu"), ("arch", "amd64"), ("mem", "100000")]);
    let e = select(&c, &fleet, &net).unwrap_err();
    assert_eq!(e.considered, 3);
    assert_eq!(
        e.excluded_by.into_iter().collect::<Vec<_>>(),
        vec![("arch".into(), 1), ("mem".into(), 3), ("tags".into(), 2)]
    );
}

// ---------------------------------------------------------------------------
// Random fleets.

const TAGS: [&str; 4] = ["gpu", "ssd", "fast", "big"];
const ZONES: [&str; 3] = ["default", "zone-b", "zone-c"];

#[derive(Debug, Clone)]
struct Spec {
    cpu: u32,
    mem: u64,
    tags: Vec<bool>,
    zone: usize,
    status: NodeStatus,
    owner: Option<&'static str>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        1u32..64,
        prop_oneof![512u64..262_144, (1u64..256).prop_map(|g| g * 1024)],
        proptest::collection::vec(any::<bool>(), 4),
        0usize..3,
        proptest::sample::select(vec![
            NodeStatus::Ready,
            NodeStatus::Deployed,
            NodeStatus::New,
        ]),
        proptest::sample::select(vec![None, None, Some("alice")]),
    )
        .prop_map(|(cpu, mem, tags, zone, status, owner)| Spec {
            cpu,
            mem,
            tags,
            zone,
            status,
            owner,
        })
}

fn tag_subset() -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(TAGS.to_vec(), 0..=2)
        .prop_map(|v| v.into_iter().map(str::to_owned).collect())
}

/// Each constraint present about a third of the time, so that both matches
/// and misses are common.
fn random_constraints() -> impl Strategy<Value = Constraints> {
    (
        proptest::option::weighted(0.35, 1u32..64),
        proptest::option::weighted(0.35, 512u64..262_144),
        prop_oneof![2 => Just(Vec::new()), 1 => tag_subset()],
        prop_oneof![2 => Just(Vec::new()), 1 => tag_subset()],
        proptest::option::weighted(0.3, proptest::sample::select(ZONES.to_vec())),
        prop_oneof![
            2 => Just(Vec::new()),
            1 => proptest::sample::subsequence(ZONES.to_vec(), 1..=2),
        ],
    )
        .prop_map(
            |(cpu, mem, tags, not_tags, zone, not_in_zone)| Constraints {
                cpu_count: cpu,
                mem,
                tags,
                not_tags,
                zone: zone.map(str::to_owned),
                not_in_zone: not_in_zone.into_iter().map(str::to_owned).collect(),
                ..Constraints::default()
            },
        )
}

fn build_fleet(specs: &[Spec]) -> Vec<Machine> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut m = base(
                &format!("m{i:02}"),
                &format!("node-{i}"),
                "amd64",
                s.cpu,
                s.mem,
            );
            m.status = s.status;
            m.owner = s.owner.map(str::to_owned);
            m.zone = ZONES[s.zone].to_owned();
            m.tags = TAGS
                .iter()
                .zip(&s.tags)
                .filter(|(_, on)| **on)
                .map(|(t, _)| t.to_string())
                .collect();
            m
        })
        .collect()
}

/// The constraint names `m` misses, computed from the definitions.
fn oracle_failures(c: &Constraints, m: &Machine) -> Vec<&'static str> {
    let mut out = Vec::new();
    if c.cpu_count.is_some_and(|n| m.hardware.cpu.count < n) {
        out.push("cpu_count");
    }
    if c.mem.is_some_and(|n| m.hardware.memory_mib < n) {
        out.push("mem");
    }
    if !c.tags.iter().all(|t| m.tags.contains(t)) {
        out.push("tags");
    }
    if c.not_tags.iter().any(|t| m.tags.contains(t)) {
        out.push("not_tags");
    }
    if c.zone.as_ref().is_some_and(|z| *z != m.zone) {
        out.push("zone");
    }
    if c.not_in_zone.contains(&m.zone) {
        out.push("not_in_zone");
    }
    out
}

fn oracle_allocatable(m: &Machine) -> bool {
    m.status == NodeStatus::Ready && m.owner.is_none() && !m.locked
}

fn cost(m: &Machine) -> f64 {
    f64::from(m.hardware.cpu.count) + m.hardware.memory_mib as f64 / 1024.0
}

#[derive(Debug, Default)]
struct Outcomes {
    selected: usize,
    selected_among_several: usize,
    no_match: usize,
    no_match_with_candidates: usize,
}

fn check_select(specs: &[Spec], c: &Constraints, seen: &mut Outcomes) -> Result<(), TestCaseError> {
    let net = NetworkIndex::default();
    let fleet = build_fleet(specs);
    let candidates: Vec<&Machine> = fleet
        .iter()
        .filter(|m| oracle_allocatable(m) && oracle_failures(c, m).is_empty())
        .collect();
    for m in &fleet {
        let mut lib = c.failures(m, &net);
        lib.sort_unstable();
        let mut want = oracle_failures(c, m);
        want.sort_unstable();
        prop_assert_eq!(lib, want, "{:?}", m.system_id);
        prop_assert_eq!(allocatable(m), oracle_allocatable(m));
    }
    match select(c, &fleet, &net) {
        Ok(chosen) => {
            seen.selected += 1;
            if candidates.len() > 1 {
                seen.selected_among_several += 1;
            }
            prop_assert!(oracle_allocatable(chosen));
            prop_assert!(c.matches(chosen, &net));
            for other in &candidates {
                prop_assert!(
                    cost(other) >= cost(chosen),
                    "{:?} ({}) is cheaper than {:?} ({})",
                    other.system_id,
                    cost(other),
                    chosen.system_id,
                    cost(chosen)
                );
                if cost(other) == cost(chosen) {
                    prop_assert!(other.system_id >= chosen.system_id);
                }
            }
        }
        Err(e) => {
            seen.no_match += 1;
            prop_assert!(
                candidates.is_empty(),
                "missed {:?}",
                candidates[0].system_id
            );
            let allocatable: Vec<&Machine> =
                fleet.iter().filter(|m| oracle_allocatable(m)).collect();
            if !allocatable.is_empty() {
                seen.no_match_with_candidates += 1;
            }
            prop_assert_eq!(e.considered, allocatable.len());
            let text = e.to_string();
            prop_assert!(
                text.contains(&format!(
                    "{} ready machine(s) considered",
                    allocatable.len()
                )),
                "{}",
                text
            );
            for name in [
                "cpu_count",
                "mem",
                "tags",
                "not_tags",
                "zone",
                "not_in_zone",
            ] {
                let n = allocatable
                    .iter()
                    .filter(|m| oracle_failures(c, m).contains(&name))
                    .count();
                prop_assert_eq!(e.excluded_by.get(name).copied().unwrap_or(0), n, "{}", name);
                if n > 0 {
                    let part = format!("{name} excluded {n}");
                    prop_assert!(text.contains(&part), "{}", text);
                }
            }
            prop_assert!(e.excluded_by.values().all(|n| *n > 0));
        }
    }
    Ok(())
}

#[test]
fn select_picks_the_cheapest_allocatable_match() {
    let mut runner = TestRunner::new(Config {
        cases: 1024,
        failure_persistence: None,
        ..Config::default()
    });
    let seen = RefCell::new(Outcomes::default());
    let strategy = (
        proptest::collection::vec(spec(), 0..=30),
        random_constraints(),
    );
    let result = runner.run(&strategy, |(specs, c)| {
        check_select(&specs, &c, &mut seen.borrow_mut())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner();
    assert!(
        seen.selected >= 100
            && seen.selected_among_several >= 100
            && seen.no_match >= 100
            && seen.no_match_with_candidates >= 100,
        "{seen:?}"
    );
}
