//! The receive path, decode and handle, on one long-lived handler: no input
//! may panic (fuzz builds abort on panic, so dhcproto's own panics count
//! too), every reply decodes and is padded to 300 bytes, and no address is
//! ever acknowledged to two MACs.
//!
//! Each input is tried twice: as a raw datagram, and with its first six
//! bytes as a MAC behind a well-formed BOOTP header and magic cookie and the
//! rest as the options area, so the fuzzer reaches the decisions quickly.
#![no_main]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Mutex, OnceLock};

use dhcproto::Decodable;
use dhcproto::v4::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use maas_dhcp::{DhcpConfig, DhcpHandler, MemoryLeaseStore, StaticHosts, SubnetConfig};

struct State {
    rt: tokio::runtime::Runtime,
    handler: DhcpHandler<StaticHosts, MemoryLeaseStore>,
    acked: HashMap<Ipv4Addr, Vec<u8>>,
}

fn state() -> &'static Mutex<State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut a = SubnetConfig::new(
            "10.0.0.0/24".parse().expect("cidr"),
            vec![("10.0.0.10".parse().expect("ip"), "10.0.0.40".parse().expect("ip"))],
        );
        a.routes = vec![("192.168.0.0/16".parse().expect("cidr"), "10.0.0.1".parse().expect("ip"))];
        a.router = Some("10.0.0.1".parse().expect("ip"));
        let b = SubnetConfig::new(
            "10.9.0.0/24".parse().expect("cidr"),
            vec![("10.9.0.10".parse().expect("ip"), "10.9.0.20".parse().expect("ip"))],
        );
        let mut config = DhcpConfig::new("10.0.0.1".parse().expect("ip"), vec![a, b]);
        config.rate_limit = None;
        let mut hosts = StaticHosts {
            next_server: Some("10.0.0.1".parse().expect("ip")),
            ipxe_file: Some("http://10.0.0.1:5248/ipxe.cfg".into()),
            ..Default::default()
        };
        hosts.boot_files.insert(0, "lpxelinux.0".into());
        hosts.boot_files.insert(7, "bootx64.efi".into());
        let handler = rt
            .block_on(DhcpHandler::new(config, hosts, MemoryLeaseStore::default()))
            .expect("handler");
        Mutex::new(State {
            rt,
            handler,
            acked: HashMap::new(),
        })
    })
}

fn check(st: &mut State, bytes: &[u8]) {
    let from = SocketAddr::from(([10, 0, 0, 99], 68));
    let State { rt, handler, acked } = st;
    let Some(reply) = rt.block_on(handler.handle(bytes, from)) else {
        return;
    };
    assert!(reply.bytes.len() >= 300, "reply shorter than 300 bytes");
    let m = Message::from_bytes(&reply.bytes).expect("our reply decodes");
    assert_eq!(m.opts().msg_type(), Some(reply.kind));
    if reply.kind == MessageType::Ack && m.yiaddr() != Ipv4Addr::UNSPECIFIED {
        let mac = m.chaddr().to_vec();
        if let Some(other) = acked.insert(m.yiaddr(), mac.clone()) {
            let lease = handler.lease(m.yiaddr()).map(|l| l.mac.0.to_vec());
            // A new owner is fine only if the old lease ended (released).
            assert!(
                other == mac || lease == Some(mac.clone()),
                "{} acknowledged to two MACs",
                m.yiaddr()
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut st = state().lock().unwrap_or_else(|e| e.into_inner());
    check(&mut st, data);
    if data.len() >= 6 {
        let mut b = vec![0u8; 236];
        b[0] = 1; // BOOTREQUEST
        b[1] = 1; // Ethernet
        b[2] = 6;
        b[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        b[28..34].copy_from_slice(&data[..6]);
        b.extend_from_slice(&[99, 130, 83, 99]);
        b.extend_from_slice(&data[6..]);
        check(&mut st, &b);
    }
});
