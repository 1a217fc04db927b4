//! The decision logic, driven with dhcproto-built packets (no sockets).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode, UnknownOption};
use dhcproto::{Decodable, Encodable};
use maas_dhcp::{
    DhcpConfig, DhcpHandler, LeaseState, MemoryLeaseStore, Reply, StaticHosts, SubnetConfig,
};

fn subnet(net: &str, lo: &str, hi: &str) -> SubnetConfig {
    let mut s = SubnetConfig::new(
        net.parse().unwrap(),
        vec![(lo.parse().unwrap(), hi.parse().unwrap())],
    );
    s.lease_time = Duration::from_secs(300);
    s
}

async fn handler(lo: &str, hi: &str) -> DhcpHandler<StaticHosts, MemoryLeaseStore> {
    let config = DhcpConfig::new(
        "10.0.0.1".parse().unwrap(),
        vec![
            subnet("10.0.0.0/24", lo, hi),
            subnet("10.9.0.0/24", "10.9.0.10", "10.9.0.20"),
        ],
    );
    DhcpHandler::new(config, StaticHosts::default(), MemoryLeaseStore::default())
        .await
        .unwrap()
}

fn msg(kind: MessageType, mac: u8, xid: u32) -> Message {
    let mut m = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &[0x52, 0x54, 0, 0, 0, mac],
    );
    m.set_opcode(Opcode::BootRequest);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m
}

const FROM: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));

async fn send(h: &mut DhcpHandler<StaticHosts, MemoryLeaseStore>, m: &Message) -> Option<Reply> {
    h.handle(&m.to_vec().unwrap(), FROM).await
}

fn parse(r: &Reply) -> Message {
    Message::from_bytes(&r.bytes).unwrap()
}

async fn lease(h: &mut DhcpHandler<StaticHosts, MemoryLeaseStore>, mac: u8) -> Ipv4Addr {
    let offer = send(h, &msg(MessageType::Discover, mac, 1))
        .await
        .expect("offer");
    let ip = parse(&offer).yiaddr();
    let mut req = msg(MessageType::Request, mac, 2);
    req.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    req.opts_mut()
        .insert(DhcpOption::ServerIdentifier("10.0.0.1".parse().unwrap()));
    let ack = send(h, &req).await.expect("ack");
    assert_eq!(ack.kind, MessageType::Ack);
    ip
}

#[tokio::test]
async fn replies_are_padded_unicast_to_the_new_address_and_carry_the_lease_times() {
    let mut h = handler("10.0.0.100", "10.0.0.110").await;
    let r = send(&mut h, &msg(MessageType::Discover, 1, 7))
        .await
        .unwrap();
    assert!(r.bytes.len() >= 300);
    // No address, no relay, no broadcast flag: to yiaddr at the client's MAC.
    assert_eq!(r.to, SocketAddrV4::new("10.0.0.100".parse().unwrap(), 68));
    assert_eq!(r.link_address, Some([0x52, 0x54, 0, 0, 0, 1]));
    let m = parse(&r);
    assert_eq!(
        (m.opcode(), m.xid(), m.yiaddr()),
        (Opcode::BootReply, 7, "10.0.0.100".parse().unwrap())
    );
    assert_eq!(
        m.opts().get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(300))
    );
    assert_eq!(
        m.opts().get(OptionCode::Renewal),
        Some(&DhcpOption::Renewal(150))
    );
    assert_eq!(
        m.opts().get(OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(259))
    );
}

#[tokio::test]
async fn the_broadcast_flag_makes_replies_broadcast() {
    let mut h = handler("10.0.0.100", "10.0.0.110").await;
    let mut m = msg(MessageType::Discover, 1, 7);
    m.set_flags(dhcproto::v4::Flags::default().set_broadcast());
    let r = send(&mut h, &m).await.unwrap();
    assert_eq!(r.to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert_eq!(r.link_address, None);
    // A hardware address that is not Ethernet cannot get a neighbour entry.
    let mut m = msg(MessageType::Discover, 2, 8);
    m.set_htype(dhcproto::v4::HType::IEEE802);
    let r = send(&mut h, &m).await.unwrap();
    assert_eq!((r.to.ip(), r.link_address), (&Ipv4Addr::BROADCAST, None));
}

#[tokio::test]
async fn never_the_same_address_to_two_clients_and_exhaustion_is_silent() {
    let mut h = handler("10.0.0.100", "10.0.0.104").await;
    let mut seen = HashSet::new();
    for mac in 1..=5 {
        assert!(
            seen.insert(lease(&mut h, mac).await),
            "an address was handed out twice"
        );
    }
    assert!(
        send(&mut h, &msg(MessageType::Discover, 9, 1))
            .await
            .is_none(),
        "no free address: no offer"
    );
    assert_eq!(
        h.metrics()
            .exhausted
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // A client asking for another's address is refused.
    let mut req = msg(MessageType::Request, 9, 3);
    req.opts_mut().insert(DhcpOption::RequestedIpAddress(
        "10.0.0.100".parse().unwrap(),
    ));
    req.opts_mut()
        .insert(DhcpOption::ServerIdentifier("10.0.0.1".parse().unwrap()));
    assert_eq!(send(&mut h, &req).await.unwrap().kind, MessageType::Nak);
}

#[tokio::test]
async fn a_request_for_another_subnet_is_naked() {
    let mut h = handler("10.0.0.100", "10.0.0.110").await;
    let mut req = msg(MessageType::Request, 1, 3);
    req.opts_mut().insert(DhcpOption::RequestedIpAddress(
        "192.168.1.50".parse().unwrap(),
    ));
    let r = send(&mut h, &req).await.unwrap();
    assert_eq!(r.kind, MessageType::Nak);
    assert_eq!(r.to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
}

#[tokio::test]
async fn a_declined_address_is_quarantined() {
    let mut h = handler("10.0.0.100", "10.0.0.101").await;
    let ip = lease(&mut h, 1).await;
    let mut d = msg(MessageType::Decline, 1, 4);
    d.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    assert!(send(&mut h, &d).await.is_none());
    assert_eq!(h.lease(ip).unwrap().state, LeaseState::Declined);
    // The same client now gets the other address, and a third gets nothing.
    assert_ne!(lease(&mut h, 1).await, ip);
    assert!(
        send(&mut h, &msg(MessageType::Discover, 3, 1))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn relayed_requests_are_served_from_the_relay_subnet_and_answered_to_the_relay() {
    let mut h = handler("10.0.0.100", "10.0.0.110").await;
    let mut m = msg(MessageType::Discover, 1, 5);
    m.set_giaddr(Ipv4Addr::new(10, 9, 0, 1)).set_hops(1);
    m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
        OptionCode::from(82),
        vec![1, 4, b'p', b'o', b'r', b't'],
    )));
    let r = send(&mut h, &m).await.unwrap();
    assert_eq!(r.to, SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 67));
    let reply = parse(&r);
    assert_eq!(reply.yiaddr(), Ipv4Addr::new(10, 9, 0, 10));
    assert_eq!(reply.giaddr(), Ipv4Addr::new(10, 9, 0, 1));
    assert!(
        reply
            .opts()
            .get(OptionCode::RelayAgentInformation)
            .is_some(),
        "option 82 is echoed"
    );
}

#[tokio::test]
async fn malformed_packets_are_counted_and_dropped_and_the_server_goes_on() {
    let mut h = handler("10.0.0.100", "10.0.0.110").await;
    let good = msg(MessageType::Discover, 1, 1).to_vec().unwrap();
    // Option 81 (client FQDN) shorter than its 3 fixed bytes: dhcproto
    // panics on it in debug builds.
    let mut fqdn = good.clone();
    let end = fqdn.len() - 1; // before the END option
    fqdn.splice(end..end, [81u8, 1, 0]);
    let mut bad_len = good.clone();
    bad_len.splice(end..end, [3u8, 200, 1, 2]);
    let mut reply_op = msg(MessageType::Discover, 1, 1);
    reply_op.set_opcode(Opcode::BootReply);
    // Options dhcproto reads with a fixed size whatever their declared
    // length (found by the fuzz target): it panics in debug builds and
    // reads the rest out of step in release builds.
    let with = |opts: &[u8]| {
        let mut b = good.clone();
        b.splice(end..end, opts.iter().copied());
        b
    };
    let inputs: Vec<Vec<u8>> = vec![
        vec![],
        vec![1, 1, 6],
        good[..100].to_vec(),
        fqdn,
        bad_len,
        vec![0xff; 400],
        // A bulk-leasequery time (155) of 0 bytes.
        with(&[155, 0]),
        // Two 4-byte base times (152) back to back: joined into 8 bytes.
        with(&[152, 4, 0, 0, 0, 0, 152, 4, 0, 0, 0, 0]),
        // A 4-byte client architecture (93).
        with(&[93, 4, 0, 7, 0, 9]),
        // Rapid commit (80) with a value; an empty status code (151).
        with(&[80, 1, 0]),
        with(&[151, 0]),
    ];
    for (n, i) in inputs.iter().enumerate() {
        assert!(h.handle(i, FROM).await.is_none(), "input {n} got a reply");
    }
    assert!(
        send(&mut h, &reply_op).await.is_none(),
        "BOOTREPLY from a client is ignored"
    );
    let m = h.metrics();
    let malformed = m.malformed.load(std::sync::atomic::Ordering::Relaxed);
    let ignored = m.ignored.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        malformed + ignored,
        inputs.len() as u64 + 1,
        "every bad input counted: {malformed} malformed, {ignored} ignored"
    );
    assert_eq!(
        malformed,
        inputs.len() as u64,
        "each bad packet is caught before decoding"
    );
    assert_eq!(ignored, 1);
    assert!(
        send(&mut h, &msg(MessageType::Discover, 1, 1))
            .await
            .is_some(),
        "still serving"
    );
}
