//! Deployments refused before any machine is powered on, each with an
//! error that names what is wrong.

mod common;

use common::*;
use maas_core::machine::{FirmwareKind, InterfaceKind, LinkMode};
use maas_core::network::{IpRange, IpRangeType, IpamError};
use maas_core::{IpRangeId, SubnetId};
use maas_curtin::storage::{
    BcacheOptions, DiskPlan, GIB, LayoutOptions, PartitionFlag, PartitionPlan, PartitionTable,
    Size, StoragePlan,
};
use maas_curtin::{
    CurtinError, DeployContext, DeployRequest, ImageFileType, ImageSource, NetworkInputs,
    NetworkVersion, StorageLayout, TemplateStore, validate_deploy,
};

fn image() -> ImageSource {
    ImageSource {
        url: "http://10.0.0.2:5248/images/noble/squashfs".into(),
        file_type: ImageFileType::Squashfs,
    }
}

fn check(
    m: &maas_core::machine::Machine,
    inputs: &NetworkInputs,
    req: &DeployRequest,
) -> Result<(), CurtinError> {
    let (endpoint, credentials, templates) = (endpoint(), credentials(), TemplateStore::builtin());
    let ctx = DeployContext {
        machine: m,
        network: inputs,
        endpoint: &endpoint,
        credentials: &credentials,
        templates: &templates,
    };
    validate_deploy(&ctx, req).map(|_| ())
}

fn request(layout: StorageLayout) -> DeployRequest {
    let mut r = DeployRequest::new("noble", image());
    r.layout = layout;
    r
}

fn flat() -> StorageLayout {
    StorageLayout::Flat(LayoutOptions::default())
}

#[test]
fn a_layout_that_does_not_fit_names_the_disk_and_the_sizes() {
    let mut m = machine(FirmwareKind::Uefi);
    with_network(&mut m, Shape::Dhcp);
    m.block_devices[0].size_bytes = 2 * GIB;
    let err = check(&m, &inputs(), &request(flat())).unwrap_err();
    assert!(
        matches!(&err, CurtinError::LayoutDoesNotFit { device, .. } if device == "sda-part2"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the layout does not fit sda-part2: it needs 3221225472 bytes and 1605369856 are usable"
    );
    // A root size larger than the disk.
    m.block_devices[0].size_bytes = 100 * GIB;
    let big = StorageLayout::Flat(LayoutOptions {
        root_size: Some(200 * GIB),
        ..LayoutOptions::default()
    });
    let err = check(&m, &inputs(), &request(big)).unwrap_err();
    assert!(
        matches!(&err, CurtinError::LayoutDoesNotFit { device, .. } if device == "sda"),
        "{err:?}"
    );
}

#[test]
fn uefi_without_an_efi_system_partition_is_refused() {
    let mut m = machine(FirmwareKind::Uefi);
    with_network(&mut m, Shape::Dhcp);
    let plan = StoragePlan {
        disks: vec![DiskPlan {
            disk: "sda".into(),
            ptable: Some(PartitionTable::Gpt),
            boot: true,
            partitions: vec![PartitionPlan {
                size: Size::Rest,
                flag: None,
            }],
        }],
        filesystems: vec![maas_curtin::storage::FilesystemPlan {
            device: "sda-part1".into(),
            fstype: maas_curtin::storage::Filesystem::Ext4,
            mount: Some("/".into()),
            mount_options: None,
            label: None,
        }],
        ..StoragePlan::default()
    };
    let err = check(&m, &inputs(), &request(StorageLayout::Custom(plan.clone()))).unwrap_err();
    assert!(
        matches!(
            err,
            CurtinError::NoBootPartition {
                firmware: FirmwareKind::Uefi,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("EFI system partition"), "{err}");

    // The same plan on a BIOS machine lacks the bios_grub partition.
    let mut bios = machine(FirmwareKind::Bios);
    with_network(&mut bios, Shape::Dhcp);
    let err = check(
        &bios,
        &inputs(),
        &request(StorageLayout::Custom(plan.clone())),
    )
    .unwrap_err();
    assert!(err.to_string().contains("bios_grub"), "{err}");
    // ...and is fine once it has one.
    let mut fixed = plan;
    fixed.disks[0].partitions.insert(
        0,
        PartitionPlan {
            size: Size::Bytes(1 << 20),
            flag: Some(PartitionFlag::BiosGrub),
        },
    );
    fixed.filesystems[0].device = "sda-part2".into();
    check(&bios, &inputs(), &request(StorageLayout::Custom(fixed))).unwrap();

    // UEFI with a forced MBR table.
    let mbr = StorageLayout::Flat(LayoutOptions {
        ptable: Some(PartitionTable::Mbr),
        ..LayoutOptions::default()
    });
    let err = check(&m, &inputs(), &request(mbr)).unwrap_err();
    assert!(err.to_string().contains("GPT"), "{err}");
}

#[test]
fn storage_input_errors_name_the_device() {
    let mut m = machine(FirmwareKind::Bios);
    with_network(&mut m, Shape::Dhcp);
    let on_sdz = StorageLayout::Flat(LayoutOptions {
        boot_disk: Some("sdz".into()),
        ..LayoutOptions::default()
    });
    assert_eq!(
        check(&m, &inputs(), &request(on_sdz)).unwrap_err(),
        CurtinError::UnknownDisk { disk: "sdz".into() }
    );
    assert_eq!(
        check(
            &m,
            &inputs(),
            &request(StorageLayout::Blank(LayoutOptions::default()))
        )
        .unwrap_err(),
        CurtinError::NoRootFilesystem
    );
    m.block_devices[1].tags.clear();
    assert_eq!(
        check(
            &m,
            &inputs(),
            &request(StorageLayout::Bcache(BcacheOptions::default()))
        )
        .unwrap_err(),
        CurtinError::NoCacheDevice {
            boot_disk: "sda".into()
        }
    );
    let mut unknown = machine(FirmwareKind::Unknown);
    with_network(&mut unknown, Shape::Dhcp);
    assert_eq!(
        check(&unknown, &inputs(), &request(flat())).unwrap_err(),
        CurtinError::FirmwareUnknown
    );
    // Five partitions on MBR.
    let mut plan = StoragePlan {
        disks: vec![DiskPlan {
            disk: "sda".into(),
            ptable: Some(PartitionTable::Mbr),
            boot: true,
            partitions: vec![
                PartitionPlan {
                    size: Size::Bytes(GIB),
                    flag: None
                };
                5
            ],
        }],
        ..StoragePlan::default()
    };
    plan.filesystems.push(maas_curtin::storage::FilesystemPlan {
        device: "sda-part1".into(),
        fstype: maas_curtin::storage::Filesystem::Ext4,
        mount: Some("/".into()),
        mount_options: None,
        label: None,
    });
    let err = check(&m, &inputs(), &request(StorageLayout::Custom(plan.clone()))).unwrap_err();
    assert!(
        matches!(err, CurtinError::MbrLimit { ref disk, .. } if disk == "sda"),
        "{err:?}"
    );
    // A filesystem on something the plan does not define.
    plan.disks[0].partitions.truncate(1);
    plan.disks[0].partitions[0].size = Size::Rest;
    plan.filesystems[0].device = "sda-part9".into();
    assert_eq!(
        check(&m, &inputs(), &request(StorageLayout::Custom(plan))).unwrap_err(),
        CurtinError::UnknownDevice {
            item: "ext4 filesystem".into(),
            reference: "sda-part9".into()
        }
    );
}

#[test]
fn a_bond_without_members_is_refused() {
    let mut m = machine(FirmwareKind::Uefi);
    with_network(&mut m, Shape::BondVlanBridge);
    // maas-core's own check would catch an empty parent list first; the
    // bond's members all disabled is what reaches us.
    for i in m
        .interfaces
        .iter_mut()
        .filter(|i| i.kind == InterfaceKind::Physical)
    {
        i.enabled = false;
    }
    let err = check(&m, &inputs(), &request(flat())).unwrap_err();
    assert!(
        matches!(&err, CurtinError::BadParent { interface, .. } if interface == "bond0"),
        "{err:?}"
    );
    // An empty parent list, past maas-core's check (the machine is checked
    // first and says so).
    let mut m = machine(FirmwareKind::Uefi);
    with_network(&mut m, Shape::BondVlanBridge);
    m.interfaces[2].parents.clear();
    let err = maas_curtin::network::ResolvedNetwork::resolve(&m, &inputs()).unwrap_err();
    assert_eq!(
        err,
        CurtinError::BondWithoutMembers {
            bond: "bond0".into()
        }
    );
    assert_eq!(err.to_string(), "bond bond0 has no member interfaces");
}

#[test]
fn a_vlan_with_a_larger_mtu_than_its_parent_is_refused() {
    let mut m = machine(FirmwareKind::Uefi);
    with_network(&mut m, Shape::BondVlanBridge);
    let mut net = inputs();
    for v in net.vlans.iter_mut().filter(|v| v.vid == 100) {
        v.mtu = 9000;
    }
    let err = check(&m, &net, &request(flat())).unwrap_err();
    assert!(
        matches!(&err, CurtinError::MtuAboveParent { interface, mtu: 9000, parent, parent_mtu: 1500 }
            if interface == "bond0.100" && parent == "bond0"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "interface bond0.100: MTU 9000 is larger than its parent bond0's 1500"
    );
}

#[test]
fn bad_bond_and_bridge_parameters_name_the_key() {
    let mut m = machine(FirmwareKind::Uefi);
    with_network(&mut m, Shape::BondVlanBridge);
    m.interfaces[2]
        .params
        .insert("bond_mode".into(), "802.3az".into());
    let err = check(&m, &inputs(), &request(flat())).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("interface bond0: invalid bond_mode \"802.3az\""),
        "{err}"
    );
    let mut m = machine(FirmwareKind::Uefi);
    with_network(&mut m, Shape::BondVlanBridge);
    m.interfaces[3]
        .params
        .insert("bridge_type".into(), "ovs".into());
    // Netplan can have an OVS bridge, cloud-init's v1 cannot.
    check(&m, &inputs(), &request(flat())).unwrap();
    let mut v1 = request(flat());
    v1.network_version = NetworkVersion::V1;
    let err = check(&m, &inputs(), &v1).unwrap_err();
    assert!(
        matches!(&err, CurtinError::InvalidInterfaceParam { key, .. } if key == "bridge_type"),
        "{err:?}"
    );
}

#[test]
fn an_auto_link_on_a_full_subnet_is_refused() {
    let mut m = machine(FirmwareKind::Uefi);
    with_network(&mut m, Shape::Static);
    let mut inputs = inputs();
    // Everything but the dynamic range is taken.
    inputs.ranges.push(IpRange {
        id: IpRangeId(2),
        subnet: PXE_SUBNET,
        kind: IpRangeType::Reserved,
        start: ip("10.0.0.3"),
        end: ip("10.0.0.99"),
        comment: String::new(),
    });
    inputs.ranges.push(IpRange {
        id: IpRangeId(3),
        subnet: PXE_SUBNET,
        kind: IpRangeType::Reserved,
        start: ip("10.0.0.201"),
        end: ip("10.0.0.254"),
        comment: String::new(),
    });
    let err = check(&m, &inputs, &request(flat())).unwrap_err();
    assert_eq!(
        err,
        CurtinError::NoFreeAddress {
            interface: "eth1".into(),
            subnet: "10.0.0.0/24".parse().unwrap()
        }
    );
    assert_eq!(
        err.to_string(),
        "interface eth1: no free address on subnet 10.0.0.0/24"
    );
}

#[test]
fn static_addresses_outside_or_unusable_are_refused() {
    let mut m = machine(FirmwareKind::Uefi);
    with_network(&mut m, Shape::Static);
    m.interfaces[0].links[0].ip = Some(ip("10.0.1.10"));
    let err = check(&m, &inputs(), &request(flat())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "interface eth0: static address 10.0.1.10 is outside its subnet 10.0.0.0/24"
    );
    m.interfaces[0].links[0].ip = Some(ip("10.0.0.150"));
    let err = check(&m, &inputs(), &request(flat())).unwrap_err();
    assert!(
        matches!(
            err,
            CurtinError::UnusableStaticAddress {
                source: IpamError::InDynamicRange { .. },
                ..
            }
        ),
        "{err:?}"
    );
    m.interfaces[0].links[0].ip = None;
    let err = check(&m, &inputs(), &request(flat())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "interface eth0: a static link needs an address"
    );
    m.interfaces[0].links[0] = link(LinkMode::Static, Some(SubnetId(99)), Some("10.0.0.10"));
    let err = check(&m, &inputs(), &request(flat())).unwrap_err();
    assert_eq!(
        err,
        CurtinError::UnknownSubnet {
            interface: "eth0".into(),
            subnet: SubnetId(99)
        }
    );
}

#[test]
fn request_values_are_checked() {
    let mut m = machine(FirmwareKind::Uefi);
    with_network(&mut m, Shape::Dhcp);
    let mut r = request(flat());
    r.kernel_params = vec!["quiet\"; reboot".into()];
    assert!(matches!(
        check(&m, &inputs(), &r).unwrap_err(),
        CurtinError::InvalidValue {
            field: "kernel parameter",
            ..
        }
    ));
    let mut r = request(flat());
    r.release = "../etc".into();
    assert!(matches!(
        check(&m, &inputs(), &r).unwrap_err(),
        CurtinError::InvalidValue {
            field: "release",
            ..
        }
    ));
    let mut r = request(flat());
    r.image.url = "ftp://x/y".into();
    assert!(matches!(
        check(&m, &inputs(), &r).unwrap_err(),
        CurtinError::InvalidValue {
            field: "image url",
            ..
        }
    ));
}

#[test]
fn a_disk_image_lays_out_nothing_but_names_the_boot_disk() {
    let mut m = machine(FirmwareKind::Uefi);
    with_network(&mut m, Shape::Dhcp);
    let mut r = request(flat());
    r.image = ImageSource {
        url: "http://10.0.0.2:5248/images/custom/root-dd.xz".into(),
        file_type: ImageFileType::RootDdXz,
    };
    let (endpoint, credentials, templates) = (endpoint(), credentials(), TemplateStore::builtin());
    let ctx = DeployContext {
        machine: &m,
        network: &inputs(),
        endpoint: &endpoint,
        credentials: &credentials,
        templates: &templates,
    };
    let c = maas_curtin::render_curtin_config(&ctx, &r).unwrap();
    let json = yaml_to_json(&c.yaml);
    check_curtin_storage(&json["storage"]);
    assert_eq!(json["sources"]["00_maas"]["type"], "dd-xz");
    let items = json["storage"]["config"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["grub_device"], true);
}
