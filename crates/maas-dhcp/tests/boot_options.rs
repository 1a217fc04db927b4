//! The option set of an OFFER for each kind of network-booting client, as
//! reviewed snapshots (`tests/snapshots`): BIOS PXE, UEFI x64 PXE, UEFI x64
//! HTTP boot, UEFI arm64 PXE, iPXE, and a client that does not network boot.

use std::fmt::Write;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Decodable, Encodable};
use maas_dhcp::{DhcpConfig, DhcpHandler, MemoryLeaseStore, StaticHosts, SubnetConfig};

const FROM: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));

async fn handler() -> DhcpHandler<StaticHosts, MemoryLeaseStore> {
    let mut s = SubnetConfig::new(
        "10.70.0.0/24".parse().unwrap(),
        vec![(
            "10.70.0.100".parse().unwrap(),
            "10.70.0.199".parse().unwrap(),
        )],
    );
    s.router = Some("10.70.0.1".parse().unwrap());
    s.dns = vec!["10.70.0.1".parse().unwrap()];
    s.domain = Some("maas".into());
    s.ntp = vec!["10.70.0.1".parse().unwrap()];
    s.mtu = Some(1500);
    let config = DhcpConfig::new("10.70.0.1".parse().unwrap(), vec![s]);
    let mut hosts = StaticHosts {
        next_server: Some("10.70.0.1".parse().unwrap()),
        ipxe_file: Some("http://10.70.0.1:5248/ipxe.cfg".into()),
        ..Default::default()
    };
    hosts.boot_files.insert(0, "lpxelinux.0".into());
    hosts.boot_files.insert(7, "bootx64.efi".into());
    hosts.boot_files.insert(11, "grubaa64.efi".into());
    hosts
        .boot_files
        .insert(16, "http://10.70.0.1:5248/images/bootx64.efi".into());
    DhcpHandler::new(config, hosts, MemoryLeaseStore::default())
        .await
        .unwrap()
}

fn discover(n: u8, vendor: Option<&str>, arch: Option<u16>, user_class: Option<&str>) -> Vec<u8> {
    let mut m = Message::new_with_id(
        u32::from(n),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &[0x52, 0x54, 0, 0x70, 0, n],
    );
    m.set_opcode(Opcode::BootRequest);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(MessageType::Discover));
    if let Some(v) = vendor {
        o.insert(DhcpOption::ClassIdentifier(v.as_bytes().to_vec()));
    }
    if let Some(a) = arch {
        o.insert(DhcpOption::ClientSystemArchitecture(a.into()));
    }
    if let Some(u) = user_class {
        o.insert(DhcpOption::UserClass(u.as_bytes().to_vec()));
    }
    m.to_vec().unwrap()
}

/// The reply as stable text: header fields that matter, then every option.
fn render(bytes: &[u8]) -> String {
    let m = Message::from_bytes(bytes).unwrap();
    let mut out = String::new();
    writeln!(out, "yiaddr {}", m.yiaddr()).unwrap();
    writeln!(out, "siaddr {}", m.siaddr()).unwrap();
    let fname = m
        .fname()
        .map(|f| String::from_utf8_lossy(f).trim_end_matches('\0').to_owned())
        .unwrap_or_default();
    writeln!(out, "file {fname:?}").unwrap();
    writeln!(out, "length {}", bytes.len()).unwrap();
    for (code, opt) in m.opts().iter() {
        let text = match opt {
            DhcpOption::ClassIdentifier(b)
            | DhcpOption::TFTPServerName(b)
            | DhcpOption::BootfileName(b) => format!("{:?}", String::from_utf8_lossy(b)),
            other => format!("{other:?}"),
        };
        writeln!(out, "option {:>3} {text}", u8::from(*code)).unwrap();
    }
    out
}

/// Name, vendor class (60), architecture (93), user class (77).
type Case = (
    &'static str,
    Option<&'static str>,
    Option<u16>,
    Option<&'static str>,
);

#[tokio::test]
async fn offers_per_boot_method() {
    let mut h = handler().await;
    let cases: [Case; 6] = [
        (
            "bios_pxe",
            Some("PXEClient:Arch:00000:UNDI:002001"),
            Some(0),
            None,
        ),
        (
            "uefi_x64_pxe",
            Some("PXEClient:Arch:00007:UNDI:003016"),
            Some(7),
            None,
        ),
        (
            "uefi_x64_http",
            Some("HTTPClient:Arch:00016:UNDI:003001"),
            Some(16),
            None,
        ),
        (
            "uefi_arm64_pxe",
            Some("PXEClient:Arch:00011:UNDI:003000"),
            Some(11),
            None,
        ),
        (
            "ipxe",
            Some("PXEClient:Arch:00000:UNDI:002001"),
            Some(0),
            Some("iPXE"),
        ),
        ("no_netboot", None, None, None),
    ];
    for (n, (name, vendor, arch, user)) in (1u8..).zip(cases) {
        let reply = h
            .handle(&discover(n, vendor, arch, user), FROM)
            .await
            .unwrap_or_else(|| panic!("{name}: no offer"));
        insta::assert_snapshot!(name, render(&reply.bytes));
    }
}
