//! Every purpose through every renderer, as reviewed snapshots
//! (`tests/snapshots/`). Update with `INSTA_UPDATE=always cargo test -p
//! maas-boot --test snapshots`, then read every changed file.

use std::net::{IpAddr, Ipv4Addr};

use maas_boot::{
    BootParams, BootPurpose, ConfigKind, HttpUrl, ImagePaths, KernelParam, grub_cfg, ipxe_script,
    pxelinux_cfg,
};
use maas_core::{Architecture, Hostname, MacAddress, SystemId};

fn rack() -> HttpUrl {
    HttpUrl::parse("http://10.99.0.1:5248").unwrap()
}

fn images() -> ImagePaths {
    ImagePaths::maas("ubuntu", "amd64", "ga-24.04", "noble", "stable").unwrap()
}

/// A known machine, as the rack would describe it.
fn known() -> BootParams {
    let mut p = BootParams::new(rack(), Architecture::amd64(), images());
    p.mac = Some(MacAddress::parse("52:54:00:12:34:56").unwrap());
    p.hostname = Some(Hostname::parse("node-1").unwrap());
    p.system_id = Some(SystemId::parse("abc123").unwrap());
    p.console = Some(KernelParam::new("ttyS0,115200").unwrap());
    p.log_host = Some(IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1)));
    p.log_port = Some(5247);
    p.extra_options = KernelParam::split_options("nomodeset").unwrap();
    p
}

/// The parameters for `purpose`: an enlisting machine has a MAC and nothing else.
fn params_for(purpose: BootPurpose) -> BootParams {
    let mut p = known();
    if purpose == BootPurpose::Enlist {
        p.hostname = None;
        p.system_id = None;
    }
    p
}

fn render(kind: ConfigKind, purpose: BootPurpose, params: &BootParams) -> String {
    let out = match kind {
        ConfigKind::Ipxe => ipxe_script(purpose, params),
        ConfigKind::Grub => grub_cfg(purpose, params),
        ConfigKind::Pxelinux => pxelinux_cfg(purpose, params),
        _ => unreachable!("a new ConfigKind needs its snapshots"),
    };
    out.unwrap_or_else(|e| panic!("{kind} {purpose}: {e}"))
}

#[test]
fn every_purpose_with_every_renderer() {
    for kind in ConfigKind::ALL {
        for purpose in BootPurpose::ALL {
            let params = params_for(purpose);
            let out = render(kind, purpose, &params);
            assert_eq!(out, kind.render(purpose, &params).unwrap());
            insta::assert_snapshot!(format!("{kind}_{purpose}"), out);
        }
    }
}

#[test]
fn default_files_ask_for_the_machine_then_enlist() {
    for kind in ConfigKind::ALL {
        let mut params = params_for(BootPurpose::Enlist);
        params.mac = None;
        insta::assert_snapshot!(
            format!("{kind}_default"),
            render(kind, BootPurpose::Enlist, &params)
        );
    }
}

#[test]
fn grub_over_ipv6_quotes_the_device() {
    let mut params = known();
    let rack = HttpUrl::parse("http://[fd99::1]:5248").unwrap();
    params.metadata_url = rack.with_path("/MAAS/metadata/").unwrap();
    params.rack_url = rack;
    params.ipv6 = true;
    insta::assert_snapshot!(
        "grub_commission_ipv6",
        render(ConfigKind::Grub, BootPurpose::Commission, &params)
    );
}

#[test]
fn grub_reads_over_http_when_the_rack_is_on_port_80() {
    let mut params = known();
    params.rack_url = HttpUrl::parse("http://10.99.0.1/").unwrap();
    params.metadata_url = HttpUrl::parse("http://10.99.0.1:5248/MAAS/metadata/").unwrap();
    insta::assert_snapshot!(
        "grub_commission_port80",
        render(ConfigKind::Grub, BootPurpose::Commission, &params)
    );
}

#[test]
fn grub_local_boot_on_arm64() {
    let mut params = known();
    params.architecture = Architecture::parse("arm64/generic").unwrap();
    insta::assert_snapshot!(
        "grub_local_arm64",
        render(ConfigKind::Grub, BootPurpose::LocalBoot, &params)
    );
}

#[test]
fn an_image_without_squashfs_has_no_root() {
    let mut params = BootParams::new(
        rack(),
        Architecture::amd64(),
        ImagePaths {
            kernel: "vmlinuz".parse().unwrap(),
            initrd: "initrd.gz".parse().unwrap(),
            squashfs: None,
        },
    );
    params.system_id = Some(SystemId::parse("abc123").unwrap());
    insta::assert_snapshot!(
        "ipxe_commission_initrd_only",
        render(ConfigKind::Ipxe, BootPurpose::Commission, &params)
    );
}
