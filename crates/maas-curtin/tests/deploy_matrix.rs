//! Every layout x firmware x network shape, rendered to a curtin config,
//! snapshotted (`tests/snapshots/`, reviewed) and checked by the real
//! checkers: curtin's storage schema, cloud-init's network schema, netplan
//! read back, and `cloud-init schema` on the cloud-config files curtin
//! writes into the target.
//!
//! Update with `INSTA_UPDATE=always cargo test -p maas-curtin --test
//! deploy_matrix`, then read every changed file.

mod common;

use std::collections::BTreeSet;

use common::*;
use maas_core::machine::FirmwareKind;
use maas_curtin::network::{Netplan, ResolvedNetwork};
use maas_curtin::storage::{
    DiskPlan, EFI_PARTITION_SIZE, Filesystem, FilesystemPlan, GIB, LayoutOptions, PartitionFlag,
    PartitionPlan, PartitionTable, RaidLevel, RaidPlan, Size, StoragePlan, partition_id,
};
use maas_curtin::{
    CurtinError, DeployContext, DeployRequest, ImageFileType, ImageSource, NetworkVersion,
    StorageLayout, TemplateStore, render_curtin_config,
};
use serde_json::Value;

fn image() -> ImageSource {
    ImageSource {
        url: "http://10.0.0.2:5248/images/ubuntu/amd64/ga-24.04/noble/stable/squashfs".into(),
        file_type: ImageFileType::Squashfs,
    }
}

/// A custom plan: RAID 1 over a partition of each disk, root on it, plus
/// the boot partitions the firmware needs on sda.
fn custom(firmware: FirmwareKind) -> StoragePlan {
    let mut sda = DiskPlan {
        disk: "sda".into(),
        ptable: Some(PartitionTable::Gpt),
        boot: true,
        partitions: Vec::new(),
    };
    let mut filesystems = Vec::new();
    match firmware {
        FirmwareKind::Uefi => {
            sda.partitions.push(PartitionPlan {
                size: Size::Bytes(EFI_PARTITION_SIZE),
                flag: Some(PartitionFlag::Boot),
            });
            filesystems.push(FilesystemPlan {
                device: "sda-part1".into(),
                fstype: Filesystem::Fat32,
                mount: Some("/boot/efi".into()),
                mount_options: None,
                label: None,
            });
        }
        _ => sda.partitions.push(PartitionPlan {
            size: Size::Bytes(1 << 20),
            flag: Some(PartitionFlag::BiosGrub),
        }),
    }
    sda.partitions.push(PartitionPlan {
        size: Size::Bytes(8 * GIB),
        flag: None,
    });
    sda.partitions.push(PartitionPlan {
        size: Size::Bytes(2 * GIB),
        flag: None,
    });
    let sdb = DiskPlan {
        disk: "sdb".into(),
        ptable: Some(PartitionTable::Gpt),
        boot: false,
        partitions: vec![PartitionPlan {
            size: Size::Bytes(8 * GIB),
            flag: None,
        }],
    };
    filesystems.push(FilesystemPlan {
        device: "md0".into(),
        fstype: Filesystem::Xfs,
        mount: Some("/".into()),
        mount_options: Some("noatime".into()),
        label: Some("root".into()),
    });
    filesystems.push(FilesystemPlan {
        device: partition_id("sda", 3),
        fstype: Filesystem::Swap,
        mount: None,
        mount_options: None,
        label: None,
    });
    StoragePlan {
        disks: vec![sda, sdb],
        raids: vec![RaidPlan {
            name: "md0".into(),
            level: RaidLevel::Raid1,
            devices: vec!["sda-part2".into(), "sdb-part1".into()],
            spares: vec![],
        }],
        filesystems,
        ..StoragePlan::default()
    }
}

fn layouts(firmware: FirmwareKind) -> Vec<StorageLayout> {
    vec![
        StorageLayout::Flat(LayoutOptions::default()),
        StorageLayout::Lvm(Default::default()),
        StorageLayout::Bcache(Default::default()),
        StorageLayout::Blank(LayoutOptions::default()),
        StorageLayout::Custom(custom(firmware)),
    ]
}

fn firmware_name(f: FirmwareKind) -> &'static str {
    match f {
        FirmwareKind::Bios => "bios",
        FirmwareKind::Uefi => "uefi",
        FirmwareKind::Unknown => "unknown",
    }
}

/// Checks one rendered config with every checker; returns the cloud-config
/// files it writes into the target.
fn check_config(
    label: &str,
    yaml: &str,
    resolved: &ResolvedNetwork,
    version: NetworkVersion,
) -> Vec<String> {
    let json = yaml_to_json(yaml);
    check_pyyaml_reads_the_same(label, yaml);
    check_curtin_storage(&json["storage"]);
    check_network(&json["network"]);
    // netplan read back into its type equals what was rendered.
    if version == NetworkVersion::V2 {
        let net_yaml = serde_yaml_ng::to_string(
            &serde_yaml_ng::from_str::<serde_yaml_ng::Value>(yaml).unwrap()["network"],
        )
        .unwrap();
        let back: Netplan = serde_yaml_ng::from_str(&net_yaml)
            .unwrap_or_else(|e| panic!("{label}: netplan does not read back: {e}\n{net_yaml}"));
        match resolved.render(version).unwrap() {
            maas_curtin::network::NetworkConfig::V2(np) => assert_eq!(back, np, "{label}"),
            other => panic!("{label}: expected netplan, got {other:?}"),
        }
    }
    for key in [
        "sources",
        "storage",
        "network",
        "reporting",
        "install",
        "cloudconfig",
        "power_state",
        "late_commands",
    ] {
        assert!(json.get(key).is_some(), "{label}: no {key}");
    }
    assert_eq!(
        json["reporting"]["maas"]["endpoint"],
        "http://10.0.0.2:5248/MAAS/metadata/status/abc123"
    );
    json["cloudconfig"]
        .as_object()
        .unwrap()
        .values()
        .map(|f| f["content"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_layout_firmware_and_network_shape() {
    let inputs = inputs();
    let endpoint = endpoint();
    let credentials = credentials();
    let templates = TemplateStore::builtin();
    let mut target_files = BTreeSet::new();
    let mut rendered = 0;
    for firmware in [FirmwareKind::Bios, FirmwareKind::Uefi] {
        for layout in layouts(firmware) {
            for shape in Shape::ALL {
                let mut m = machine(firmware);
                with_network(&mut m, shape);
                let ctx = DeployContext {
                    machine: &m,
                    network: &inputs,
                    endpoint: &endpoint,
                    credentials: &credentials,
                    templates: &templates,
                };
                let mut req = DeployRequest::new("noble", image());
                req.layout = layout.clone();
                // The bond shape also exercises cloud-init's version 1.
                let version = if shape == Shape::BondVlanBridge {
                    NetworkVersion::V1
                } else {
                    NetworkVersion::V2
                };
                let name = format!(
                    "{}_{}_{}",
                    layout.name(),
                    firmware_name(firmware),
                    shape.name()
                );
                req.network_version = version;
                match render_curtin_config(&ctx, &req) {
                    Ok(c) => {
                        let resolved = ResolvedNetwork::resolve(&m, &inputs).unwrap();
                        target_files.extend(check_config(&name, &c.yaml, &resolved, version));
                        insta::assert_snapshot!(name.clone(), c.yaml);
                        // The same machine in the other network version checks too.
                        let other = match version {
                            NetworkVersion::V1 => NetworkVersion::V2,
                            NetworkVersion::V2 => NetworkVersion::V1,
                        };
                        req.network_version = other;
                        let c2 = render_curtin_config(&ctx, &req).unwrap();
                        check_config(&name, &c2.yaml, &resolved, other);
                        rendered += 1;
                    }
                    Err(e) => {
                        assert!(matches!(layout, StorageLayout::Blank(_)), "{name}: {e}");
                        assert_eq!(e, CurtinError::NoRootFilesystem);
                        // What the blank layout puts on the disks, for the record.
                        let plan = layout.plan(&m).unwrap();
                        insta::assert_snapshot!(
                            name.clone(),
                            format!(
                                "error: {e}\nplan: {}",
                                serde_json::to_string_pretty(&plan).unwrap()
                            )
                        );
                    }
                }
            }
        }
    }
    assert_eq!(rendered, 2 * 4 * 3);
    // The files for the deployed OS's cloud-init, through cloud-init's checker.
    assert_eq!(target_files.len(), 3, "{target_files:#?}");
    for doc in &target_files {
        cloud_init_schema("a file curtin writes to /etc/cloud/cloud.cfg.d", doc);
    }
}

#[test]
fn mbr_on_bios_marks_the_root_partition_active_and_has_no_bios_grub() {
    let mut m = machine(FirmwareKind::Bios);
    with_network(&mut m, Shape::Dhcp);
    let inputs = inputs();
    let (endpoint, credentials, templates) = (endpoint(), credentials(), TemplateStore::builtin());
    let ctx = DeployContext {
        machine: &m,
        network: &inputs,
        endpoint: &endpoint,
        credentials: &credentials,
        templates: &templates,
    };
    let mut req = DeployRequest::new("noble", image());
    req.layout = StorageLayout::Flat(LayoutOptions {
        ptable: Some(PartitionTable::Mbr),
        ..LayoutOptions::default()
    });
    let c = render_curtin_config(&ctx, &req).unwrap();
    let json = yaml_to_json(&c.yaml);
    check_curtin_storage(&json["storage"]);
    let items = json["storage"]["config"].as_array().unwrap();
    assert_eq!(items[0]["ptable"], "msdos");
    let parts: Vec<&Value> = items.iter().filter(|i| i["type"] == "partition").collect();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["flag"], "boot");
    assert_eq!(parts[0]["size"], format!("{}B", 100 * GIB - 5 * (1 << 20)));
}

#[test]
fn request_extras_reach_the_config() {
    let mut m = machine(FirmwareKind::Uefi);
    with_network(&mut m, Shape::Static);
    let inputs = inputs();
    let (endpoint, credentials, templates) = (endpoint(), credentials(), TemplateStore::builtin());
    let ctx = DeployContext {
        machine: &m,
        network: &inputs,
        endpoint: &endpoint,
        credentials: &credentials,
        templates: &templates,
    };
    let mut req = DeployRequest::new("noble", image());
    req.kernel_package = Some("linux-generic-hwe-24.04".into());
    req.kernel_params = vec!["console=ttyS0,115200".into(), "nomodeset".into()];
    req.apt.proxy = Some("http://10.0.0.2:8000/".into());
    req.apt.primary_mirror = Some("http://archive.example.com/ubuntu".into());
    req.early_commands
        .insert("10_hello".into(), vec!["echo".into(), "early".into()]);
    req.late_commands
        .insert("90_bye".into(), vec!["echo".into(), "late".into()]);
    let c = render_curtin_config(&ctx, &req).unwrap();
    assert_eq!(c.template, "builtin:curtin_userdata");
    assert_eq!(c.allocated.len(), 1);
    assert_eq!(
        c.allocated[0].ip,
        ip("10.0.0.3"),
        "the lowest free address, after the taken .2"
    );
    let json = yaml_to_json(&c.yaml);
    check_curtin_storage(&json["storage"]);
    check_network(&json["network"]);
    insta::assert_snapshot!("uefi_flat_static_with_extras", c.yaml);
    // Generated late commands join the template's.
    let late = json["late_commands"].as_object().unwrap();
    assert!(late.contains_key("maas") && late.contains_key("90_bye"));
}

#[test]
fn network_shapes_in_both_versions() {
    let inputs = inputs();
    for shape in Shape::ALL {
        let mut m = machine(FirmwareKind::Uefi);
        with_network(&mut m, shape);
        let resolved = ResolvedNetwork::resolve(&m, &inputs).unwrap();
        for (version, v) in [(NetworkVersion::V1, "v1"), (NetworkVersion::V2, "v2")] {
            let net = resolved.render(version).unwrap();
            let yaml = net.to_yaml().unwrap();
            check_pyyaml_reads_the_same("network", &yaml);
            check_network(&yaml_to_json(&yaml));
            insta::assert_snapshot!(format!("network_{}_{v}", shape.name()), yaml);
        }
    }
}
