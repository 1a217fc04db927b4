//! Shared fixtures and the real checkers: cloud-init's own `cloud-init
//! schema`, curtin's storage schemas and cloud-init's network schemas (JSON
//! fixtures in `tests/fixtures/schemas`, see the README there).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use chrono::{TimeZone, Utc};
use maas_core::machine::{
    BlockDevice, FirmwareKind, Interface, InterfaceKind, InterfaceLink, LinkMode, Machine,
};
use maas_core::network::{IpRange, IpRangeType, Subnet, Vlan};
use maas_core::{
    Architecture, FabricId, Hostname, IpRangeId, MacAddress, SubnetId, SystemId, VlanId,
};
use maas_curtin::network::StaticRoute;
use maas_curtin::storage::GIB;
use maas_curtin::{MetadataEndpoint, NetworkInputs, NodeCredentials};
use serde_json::Value;

pub fn mac(s: &str) -> MacAddress {
    MacAddress::parse(s).unwrap()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A commissioned amd64 machine with two disks: a 100 GiB boot disk and a
/// 20 GiB SSD (the bcache layout's cache).
pub fn machine(firmware: FirmwareKind) -> Machine {
    let mut m = Machine::new(
        SystemId::parse("abc123").unwrap(),
        Hostname::parse("node-1").unwrap(),
        Architecture::parse("amd64/generic").unwrap(),
        Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap(),
    );
    m.hardware.firmware.kind = firmware;
    let mut sda = BlockDevice::disk("sda", 100 * GIB);
    sda.serial = "QM00001".into();
    sda.model = "QEMU HARDDISK".into();
    sda.rotational = true;
    m.block_devices.push(sda);
    let mut sdb = BlockDevice::disk("sdb", 20 * GIB);
    sdb.id_path = Some("/dev/disk/by-id/nvme-SSD-1".into());
    sdb.tags = vec!["ssd".into()];
    m.block_devices.push(sdb);
    m
}

pub const PXE_SUBNET: SubnetId = SubnetId(1);
pub const STORAGE_SUBNET: SubnetId = SubnetId(2);
pub const UNTAGGED: VlanId = VlanId(10);
pub const TAGGED: VlanId = VlanId(11);

pub fn inputs() -> NetworkInputs {
    let subnet = |id, cidr: &str, vlan, gw: Option<&str>, dns: &[&str]| Subnet {
        id,
        name: cidr.into(),
        cidr: cidr.parse().unwrap(),
        vlan,
        gateway_ip: gw.map(ip),
        dns_servers: dns.iter().map(|d| ip(d)).collect(),
        managed: true,
        allow_dns: true,
        allow_proxy: true,
        active_discovery: false,
        description: String::new(),
    };
    let vlan = |id, vid, mtu| Vlan {
        id,
        fabric: FabricId(1),
        vid,
        name: None,
        mtu,
        dhcp_on: vid == 0,
        primary_rack: None,
        secondary_rack: None,
        relay_vlan: None,
        space: None,
        description: String::new(),
    };
    NetworkInputs {
        subnets: vec![
            subnet(
                PXE_SUBNET,
                "10.0.0.0/24",
                UNTAGGED,
                Some("10.0.0.1"),
                &["10.0.0.53"],
            ),
            subnet(STORAGE_SUBNET, "192.168.100.0/24", TAGGED, None, &[]),
        ],
        vlans: vec![vlan(UNTAGGED, 0, 1500), vlan(TAGGED, 100, 1500)],
        ranges: vec![IpRange {
            id: IpRangeId(1),
            subnet: PXE_SUBNET,
            kind: IpRangeType::Dynamic,
            start: ip("10.0.0.100"),
            end: ip("10.0.0.200"),
            comment: String::new(),
        }],
        assigned: vec![ip("10.0.0.2")],
        routes: vec![StaticRoute {
            source: PXE_SUBNET,
            destination: "172.16.0.0/16".parse().unwrap(),
            gateway: ip("10.0.0.254"),
            metric: 10,
        }],
        maas_dns: vec![ip("10.0.0.2")],
        search_domains: vec!["maas".into()],
        default_gateway: None,
    }
}

pub fn link(mode: LinkMode, subnet: Option<SubnetId>, addr: Option<&str>) -> InterfaceLink {
    InterfaceLink {
        id: None,
        mode,
        subnet,
        ip: addr.map(ip),
    }
}

/// The network shapes of the snapshot matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Dhcp,
    Static,
    BondVlanBridge,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::Dhcp, Shape::Static, Shape::BondVlanBridge];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Dhcp => "dhcp",
            Shape::Static => "static",
            Shape::BondVlanBridge => "bond_vlan_bridge",
        }
    }
}

/// Gives `m` the interfaces of `shape`.
pub fn with_network(m: &mut Machine, shape: Shape) {
    m.interfaces.clear();
    match shape {
        Shape::Dhcp => {
            let mut eth0 = Interface::physical("eth0", mac("52:54:00:00:00:01"));
            eth0.vlan = Some(UNTAGGED);
            eth0.links
                .push(link(LinkMode::Dhcp, Some(PXE_SUBNET), None));
            m.interfaces.push(eth0);
            m.boot_interface = Some("eth0".into());
        }
        Shape::Static => {
            let mut eth0 = Interface::physical("eth0", mac("52:54:00:00:00:01"));
            eth0.vlan = Some(UNTAGGED);
            eth0.links
                .push(link(LinkMode::Static, Some(PXE_SUBNET), Some("10.0.0.10")));
            m.interfaces.push(eth0);
            // A second NIC whose address MAAS picks, and a third left unconfigured.
            let mut eth1 = Interface::physical("eth1", mac("52:54:00:00:00:02"));
            eth1.vlan = Some(UNTAGGED);
            eth1.links
                .push(link(LinkMode::Auto, Some(PXE_SUBNET), None));
            m.interfaces.push(eth1);
            let mut eth2 = Interface::physical("eth2", mac("52:54:00:00:00:03"));
            eth2.links.push(link(LinkMode::LinkUp, None, None));
            m.interfaces.push(eth2);
            m.boot_interface = Some("eth0".into());
        }
        Shape::BondVlanBridge => {
            for (n, mac_s) in [("eth0", "52:54:00:00:00:01"), ("eth1", "52:54:00:00:00:02")] {
                let mut e = Interface::physical(n, mac(mac_s));
                e.vlan = Some(UNTAGGED);
                m.interfaces.push(e);
            }
            let mut bond = Interface::physical("bond0", mac("52:54:00:00:00:01"));
            bond.kind = InterfaceKind::Bond;
            bond.mac = None;
            bond.parents = vec!["eth0".into(), "eth1".into()];
            bond.vlan = Some(UNTAGGED);
            bond.params = BTreeMap::from([
                ("bond_mode".into(), "802.3ad".into()),
                ("bond_miimon".into(), "100".into()),
                ("bond_lacp_rate".into(), "fast".into()),
                ("bond_xmit_hash_policy".into(), "layer3+4".into()),
                ("bond_updelay".into(), "200".into()),
                ("bond_downdelay".into(), "200".into()),
            ]);
            m.interfaces.push(bond);
            let mut br = Interface::physical("br0", mac("52:54:00:00:00:01"));
            br.kind = InterfaceKind::Bridge;
            br.mac = None;
            br.parents = vec!["bond0".into()];
            br.vlan = Some(UNTAGGED);
            br.params = BTreeMap::from([
                ("bridge_stp".into(), "true".into()),
                ("bridge_fd".into(), "4".into()),
            ]);
            br.links
                .push(link(LinkMode::Static, Some(PXE_SUBNET), Some("10.0.0.10")));
            m.interfaces.push(br);
            let mut vlan = Interface::physical("bond0.100", mac("52:54:00:00:00:01"));
            vlan.kind = InterfaceKind::Vlan;
            vlan.mac = None;
            vlan.parents = vec!["bond0".into()];
            vlan.vlan = Some(TAGGED);
            vlan.links
                .push(link(LinkMode::Auto, Some(STORAGE_SUBNET), None));
            m.interfaces.push(vlan);
            let mut alias = Interface::physical("br0:1", mac("52:54:00:00:00:01"));
            alias.kind = InterfaceKind::Alias;
            alias.mac = None;
            alias.parents = vec!["br0".into()];
            alias
                .links
                .push(link(LinkMode::Static, Some(PXE_SUBNET), Some("10.0.0.11")));
            m.interfaces.push(alias);
            m.boot_interface = Some("eth0".into());
        }
    }
}

pub fn endpoint() -> MetadataEndpoint {
    MetadataEndpoint::new("http://10.0.0.2:5248").unwrap()
}

pub fn credentials() -> NodeCredentials {
    NodeCredentials {
        consumer_key: "CKEY0000000000000a".into(),
        token_key: "TKEY0000000000000b".into(),
        token_secret: "TSECRET00000000000000000000000c".into(),
    }
}

// ---- the checkers ----

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/schemas")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn schema_errors(schema: &Value, instance: &Value) -> Vec<String> {
    let validator = jsonschema::draft7::new(schema).expect("the fixture schema compiles");
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

/// Checks every action of a curtin `storage` value against curtin's
/// schema for its type; panics with the errors.
pub fn check_curtin_storage(storage: &Value) {
    static SCHEMAS: OnceLock<Value> = OnceLock::new();
    let schemas = SCHEMAS.get_or_init(|| fixture("curtin-storage.json"));
    assert_eq!(storage["version"], 1, "storage version");
    let items = storage["config"]
        .as_array()
        .expect("storage.config is a list");
    assert!(!items.is_empty());
    for item in items {
        let kind = item["type"].as_str().expect("every action has a type");
        let schema = schemas
            .get(kind)
            .unwrap_or_else(|| panic!("curtin has no storage action {kind:?}"));
        let errors = schema_errors(schema, item);
        assert!(
            errors.is_empty(),
            "curtin schema rejects {item}: {errors:#?}"
        );
    }
}

/// Checks a `network` value against cloud-init's schema for its version.
pub fn check_network(network: &Value) {
    static V1: OnceLock<Value> = OnceLock::new();
    static V2: OnceLock<Value> = OnceLock::new();
    let schema = match network["version"].as_u64() {
        Some(1) => V1.get_or_init(|| fixture("cloud-init-network-config-v1.json")),
        Some(2) => V2.get_or_init(|| fixture("cloud-init-network-config-v2.json")),
        v => panic!("unknown network version {v:?}"),
    };
    let errors = schema_errors(schema, network);
    assert!(
        errors.is_empty(),
        "cloud-init network schema rejects {network}: {errors:#?}"
    );
}

/// YAML text to JSON for the schema checks.
pub fn yaml_to_json(yaml: &str) -> Value {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).expect("valid YAML");
    serde_json::to_value(v).expect("YAML that maps to JSON")
}

/// Runs `cloud-init schema --config-file` on `doc`. Skips (printing why)
/// when cloud-init is not installed, except under CI=true where that
/// fails. Returns whether the tool ran.
pub fn cloud_init_schema(label: &str, doc: &str) -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    let available = *AVAILABLE.get_or_init(|| {
        let ok = Command::new("cloud-init")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cloud-init is not installed and CI=true: install Debian's cloud-init package"
            );
            eprintln!("SKIP cloud-init schema checks: `cloud-init` is not installed (apt-get install cloud-init)");
        }
        ok
    });
    if !available {
        return false;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user-data.yaml");
    std::fs::write(&path, doc).unwrap();
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(&path)
        .output()
        .expect("cloud-init runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("Valid cloud-config"),
        "cloud-init schema rejects {label}:\n{stdout}\n{}\n--- document ---\n{doc}",
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// Reads `doc` with PyYAML (YAML 1.1, what curtin and cloud-init use) and
/// checks it means the same as when read as YAML 1.2: no MAC address taken
/// for a base-60 number, no `on` taken for a boolean. Uses the system
/// Python that Debian's cloud-init package brings (python3-yaml); skips
/// like [`cloud_init_schema`] when it is missing.
pub fn check_pyyaml_reads_the_same(label: &str, doc: &str) -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    const SCRIPT: &str =
        "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))";
    let available = *AVAILABLE.get_or_init(|| {
        let ok = Command::new("/usr/bin/python3")
            .args(["-c", "import yaml"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "/usr/bin/python3 with yaml is missing and CI=true: install Debian's cloud-init (brings python3-yaml)"
            );
            eprintln!("SKIP PyYAML read-back: /usr/bin/python3 has no yaml module (apt-get install python3-yaml)");
        }
        ok
    });
    if !available {
        return false;
    }
    use std::io::Write as _;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyYAML cannot read {label}: {}\n{doc}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        py,
        yaml_to_json(doc),
        "{label}: PyYAML reads it differently\n{doc}"
    );
    true
}
