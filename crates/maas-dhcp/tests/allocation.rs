//! Allocation, group commit, flood limits, shared networks, failover and the
//! lease file, driven with dhcproto-built packets (no sockets).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use maas_dhcp::{
    DhcpConfig, DhcpError, DhcpHandler, FailoverConfig, FailoverRole, FileLeaseStore, Lease,
    LeaseState, LeaseStore, MemoryLeaseStore, RateLimit, StaticHosts, SubnetConfig,
};

const FROM: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn subnet(net: &str, lo: &str, hi: &str) -> SubnetConfig {
    SubnetConfig::new(net.parse().unwrap(), vec![(ip(lo), ip(hi))])
}

fn mac(n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x52, 0x54, b[0], b[1], b[2], b[3]]
}

fn msg(kind: MessageType, n: u32) -> Message {
    let mut m = Message::new_with_id(
        n,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac(n),
    );
    m.set_opcode(Opcode::BootRequest);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m
}

fn request(n: u32, addr: Ipv4Addr, server: Ipv4Addr) -> Message {
    let mut m = msg(MessageType::Request, n);
    m.opts_mut().insert(DhcpOption::RequestedIpAddress(addr));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    m
}

async fn send<S: LeaseStore>(h: &mut DhcpHandler<StaticHosts, S>, m: &Message) -> Option<Message> {
    h.handle(&m.to_vec().unwrap(), FROM)
        .await
        .map(|r| Message::from_bytes(&r.bytes).unwrap())
}

fn kind(m: &Message) -> Option<MessageType> {
    m.opts().msg_type()
}

/// DISCOVER then REQUEST; the leased address, or `None` without an offer.
async fn dora<S: LeaseStore>(h: &mut DhcpHandler<StaticHosts, S>, n: u32) -> Option<Ipv4Addr> {
    let offer = send(h, &msg(MessageType::Discover, n)).await?;
    let ack = send(h, &request(n, offer.yiaddr(), SERVER)).await.unwrap();
    assert_eq!(kind(&ack), Some(MessageType::Ack));
    Some(ack.yiaddr())
}

#[tokio::test]
async fn a_shared_network_fills_its_second_subnet_when_the_first_is_full() {
    let mut a = subnet("10.0.0.0/24", "10.0.0.100", "10.0.0.101");
    let mut b = subnet("10.0.5.0/24", "10.0.5.10", "10.0.5.10");
    let mut unrelated = subnet("10.0.6.0/24", "10.0.6.10", "10.0.6.20");
    a.shared_network = Some("vlan-10".into());
    b.shared_network = Some("vlan-10".into());
    b.router = Some(ip("10.0.5.1"));
    unrelated.shared_network = Some("vlan-11".into());
    let config = DhcpConfig::new(SERVER, vec![a, b, unrelated]);
    let mut h = DhcpHandler::new(config, StaticHosts::default(), MemoryLeaseStore::default())
        .await
        .unwrap();
    let got: Vec<_> = [
        dora(&mut h, 1).await,
        dora(&mut h, 2).await,
        dora(&mut h, 3).await,
        dora(&mut h, 4).await,
    ]
    .into();
    assert_eq!(
        got,
        [
            Some(ip("10.0.0.100")),
            Some(ip("10.0.0.101")),
            Some(ip("10.0.5.10")),
            None
        ]
    );
    // The second subnet's options go with its address.
    let m = send(&mut h, &request(3, ip("10.0.5.10"), SERVER))
        .await
        .unwrap();
    assert_eq!(
        m.opts().get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![ip("10.0.5.1")]))
    );
    assert_eq!(
        m.opts().get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(ip("255.255.255.0")))
    );
}

#[tokio::test]
async fn released_and_lapsed_addresses_return_to_the_pool() {
    let mut config = DhcpConfig::new(
        SERVER,
        vec![subnet("10.0.0.0/24", "10.0.0.100", "10.0.0.100")],
    );
    config.offer_hold = Duration::from_secs(1);
    let mut h = DhcpHandler::new(config, StaticHosts::default(), MemoryLeaseStore::default())
        .await
        .unwrap();
    assert_eq!(dora(&mut h, 1).await, Some(ip("10.0.0.100")));
    assert!(dora(&mut h, 2).await.is_none(), "the one address is leased");
    let mut rel = msg(MessageType::Release, 1);
    rel.set_ciaddr(ip("10.0.0.100"));
    assert!(send(&mut h, &rel).await.is_none());
    assert_eq!(
        h.lease(ip("10.0.0.100")).unwrap().state,
        LeaseState::Released
    );
    assert_eq!(
        dora(&mut h, 2).await,
        Some(ip("10.0.0.100")),
        "released: free again"
    );

    // An offer nobody takes up holds the address for `offer_hold` only.
    let mut rel = msg(MessageType::Release, 2);
    rel.set_ciaddr(ip("10.0.0.100"));
    send(&mut h, &rel).await;
    let offer = send(&mut h, &msg(MessageType::Discover, 3)).await.unwrap();
    assert_eq!(offer.yiaddr(), ip("10.0.0.100"));
    assert!(send(&mut h, &msg(MessageType::Discover, 4)).await.is_none());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let offer = send(&mut h, &msg(MessageType::Discover, 4)).await.unwrap();
    assert_eq!(
        offer.yiaddr(),
        ip("10.0.0.100"),
        "the lapsed offer was swept"
    );
}

#[tokio::test]
async fn a_flood_from_one_mac_is_limited_and_others_are_still_served() {
    let mut config = DhcpConfig::new(
        SERVER,
        vec![subnet("10.0.0.0/24", "10.0.0.100", "10.0.0.200")],
    );
    config.rate_limit = Some(RateLimit {
        burst: 5,
        per_second: 1,
    });
    let mut h = DhcpHandler::new(config, StaticHosts::default(), MemoryLeaseStore::default())
        .await
        .unwrap();
    let mut answered = 0;
    for _ in 0..200 {
        if send(&mut h, &msg(MessageType::Discover, 7)).await.is_some() {
            answered += 1;
        }
    }
    assert!((5..=6).contains(&answered), "{answered} answers to a flood");
    assert!(h.metrics().rate_limited.load(Ordering::Relaxed) >= 194);
    assert!(dora(&mut h, 8).await.is_some(), "another MAC is served");
}

/// A lease store that counts its commits (wrapping the real memory store).
#[derive(Default)]
struct Counting {
    inner: MemoryLeaseStore,
    commits: Arc<AtomicUsize>,
    fail: bool,
}

#[async_trait]
impl LeaseStore for Counting {
    async fn load(&self) -> Result<Vec<Lease>, DhcpError> {
        self.inner.load().await
    }
    async fn commit(&self, leases: &[Lease]) -> Result<(), DhcpError> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if self.fail {
            return Err(DhcpError::Config {
                reason: "disk on fire".into(),
            });
        }
        self.inner.commit(leases).await
    }
}

#[tokio::test]
async fn a_batch_of_requests_is_committed_once_and_no_ack_leaves_unstored() {
    let config = DhcpConfig::new(
        SERVER,
        vec![subnet("10.0.0.0/24", "10.0.0.100", "10.0.0.200")],
    );
    let store = Counting::default();
    let commits = store.commits.clone();
    let mut h = DhcpHandler::new(config.clone(), StaticHosts::default(), store)
        .await
        .unwrap();
    let mut requests = Vec::new();
    for n in 1..=10 {
        let offer = send(&mut h, &msg(MessageType::Discover, n)).await.unwrap();
        requests.push(request(n, offer.yiaddr(), SERVER).to_vec().unwrap());
    }
    assert_eq!(commits.load(Ordering::Relaxed), 0, "offers are not stored");
    let batch: Vec<(&[u8], SocketAddr)> = requests.iter().map(|b| (&b[..], FROM)).collect();
    let replies = h.handle_batch(&batch).await;
    assert_eq!(replies.len(), 10);
    assert!(replies.iter().all(|r| r.kind == MessageType::Ack));
    assert_eq!(
        commits.load(Ordering::Relaxed),
        1,
        "one commit for the batch"
    );

    let failing = Counting {
        fail: true,
        ..Counting::default()
    };
    let mut h = DhcpHandler::new(config, StaticHosts::default(), failing)
        .await
        .unwrap();
    let offer = send(&mut h, &msg(MessageType::Discover, 1)).await.unwrap();
    assert!(
        send(&mut h, &request(1, offer.yiaddr(), SERVER))
            .await
            .is_none(),
        "an ACK whose lease was not stored is withheld"
    );
    let m = h.metrics();
    assert_eq!(
        (
            m.store_failed.load(Ordering::Relaxed),
            m.ack.load(Ordering::Relaxed)
        ),
        (1, 0)
    );
}

#[tokio::test]
async fn the_lease_file_survives_a_torn_write_and_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases.jsonl");
    let config = DhcpConfig::new(
        SERVER,
        vec![subnet("10.0.0.0/24", "10.0.0.100", "10.0.0.200")],
    );
    let mut h = DhcpHandler::new(
        config.clone(),
        StaticHosts::default(),
        FileLeaseStore::new(&path),
    )
    .await
    .unwrap();
    let mut uuid_req = request(1, ip("10.0.0.100"), SERVER);
    uuid_req
        .opts_mut()
        .insert(DhcpOption::ClientMachineIdentifier(vec![0, 0xab, 0xcd]));
    send(&mut h, &msg(MessageType::Discover, 1)).await.unwrap();
    send(&mut h, &uuid_req).await.unwrap();
    // Renew the same lease many times: many records, one live lease.
    for _ in 0..10 {
        send(&mut h, &request(1, ip("10.0.0.100"), SERVER))
            .await
            .unwrap();
    }
    dora(&mut h, 2).await.unwrap();
    drop(h);
    let before = std::fs::read_to_string(&path).unwrap();
    assert_eq!(before.lines().count(), 12);
    // A crash mid-write leaves half a record at the end.
    std::fs::write(&path, format!("{before}{{\"ip\":\"10.0.0.1")).unwrap();

    let store = FileLeaseStore::new(&path);
    let loaded = store.load().await.unwrap();
    assert_eq!(loaded.len(), 2);
    let first = loaded.iter().find(|l| l.ip == ip("10.0.0.100")).unwrap();
    assert_eq!(
        first.client_uuid.as_deref(),
        Some("00abcd"),
        "option 97 is recorded"
    );
    let after = std::fs::read_to_string(&path).unwrap();
    assert_eq!(after.lines().count(), 2, "compacted on load:\n{after}");
    assert!(after.ends_with('\n'), "the torn tail is gone");
    // Appends after compaction land on their own line and load back.
    let mut h = DhcpHandler::new(config, StaticHosts::default(), store)
        .await
        .unwrap();
    assert_eq!(dora(&mut h, 3).await, Some(ip("10.0.0.102")));
    let again = FileLeaseStore::new(&path).load().await.unwrap();
    let by_ip: HashMap<_, _> = again.iter().map(|l| (l.ip, l.mac)).collect();
    assert_eq!(by_ip.len(), 3);
}

#[tokio::test]
async fn pxe_clients_get_option_43_and_http_clients_a_url() {
    let config = DhcpConfig::new(
        SERVER,
        vec![subnet("10.0.0.0/24", "10.0.0.100", "10.0.0.200")],
    );
    let mut hosts = StaticHosts {
        next_server: Some(SERVER),
        ..Default::default()
    };
    hosts.boot_files.insert(0, "lpxelinux.0".into());
    hosts
        .boot_files
        .insert(16, "http://10.0.0.1:5248/images/bootx64.efi".into());
    let mut h = DhcpHandler::new(config, hosts, MemoryLeaseStore::default())
        .await
        .unwrap();
    let mut pxe = msg(MessageType::Discover, 1);
    pxe.opts_mut().insert(DhcpOption::ClassIdentifier(
        b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
    ));
    pxe.opts_mut()
        .insert(DhcpOption::ClientSystemArchitecture(0.into()));
    let r = send(&mut h, &pxe).await.unwrap();
    assert_eq!(
        r.opts().get(OptionCode::VendorExtensions),
        Some(&DhcpOption::VendorExtensions(vec![6, 1, 8, 255]))
    );
    assert_eq!(
        r.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"PXEClient".to_vec()))
    );
    let mut http = msg(MessageType::Discover, 2);
    http.opts_mut().insert(DhcpOption::ClassIdentifier(
        b"HTTPClient:Arch:00016:UNDI:003001".to_vec(),
    ));
    http.opts_mut()
        .insert(DhcpOption::ClientSystemArchitecture(16.into()));
    let r = send(&mut h, &http).await.unwrap();
    assert_eq!(r.opts().get(OptionCode::VendorExtensions), None);
    assert_eq!(
        r.opts().get(OptionCode::ClassIdentifier),
        Some(&DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()))
    );
    assert_eq!(
        r.opts().get(OptionCode::BootfileName),
        Some(&DhcpOption::BootfileName(
            b"http://10.0.0.1:5248/images/bootx64.efi".to_vec()
        ))
    );
}

fn pair_config(role: FailoverRole, peer_timeout: Duration) -> DhcpConfig {
    let mut c = DhcpConfig::new(
        SERVER,
        vec![subnet("10.0.0.0/24", "10.0.0.10", "10.0.0.209")],
    );
    let mut f = FailoverConfig::new(
        role,
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:9".parse().unwrap(),
    );
    f.peer_timeout = peer_timeout;
    c.failover = Some(f);
    c
}

#[tokio::test]
async fn a_failover_pair_splits_clients_and_addresses_and_the_survivor_serves_all() {
    let long = Duration::from_secs(3600);
    let mut primary = DhcpHandler::new(
        pair_config(FailoverRole::Primary, long),
        StaticHosts::default(),
        MemoryLeaseStore::default(),
    )
    .await
    .unwrap();
    let mut secondary = DhcpHandler::new(
        pair_config(FailoverRole::Secondary, long),
        StaticHosts::default(),
        MemoryLeaseStore::default(),
    )
    .await
    .unwrap();
    // Both up: each DISCOVER is answered by exactly one server, and the
    // addresses come from disjoint halves.
    let mut owner = HashMap::new();
    let mut from_primary = 0;
    for n in 1..=100u32 {
        let p = send(&mut primary, &msg(MessageType::Discover, n)).await;
        let s = send(&mut secondary, &msg(MessageType::Discover, n)).await;
        match (p, s) {
            (Some(o), None) => {
                from_primary += 1;
                assert!(
                    o.yiaddr() <= ip("10.0.0.109"),
                    "primary gave {}",
                    o.yiaddr()
                );
                assert!(owner.insert(o.yiaddr(), n).is_none());
            }
            (None, Some(o)) => {
                assert!(
                    o.yiaddr() >= ip("10.0.0.110"),
                    "secondary gave {}",
                    o.yiaddr()
                );
                assert!(owner.insert(o.yiaddr(), n).is_none());
            }
            other => panic!("client {n}: answers {other:?}"),
        }
    }
    assert!(
        (30..=70).contains(&from_primary),
        "{from_primary} of 100 to the primary"
    );
    // A client of the primary's bucket whose `secs` passed the takeover
    // threshold is answered by the secondary too.
    let n = (1..=100)
        .find(|&n| owner.iter().any(|(a, &m)| m == n && *a <= ip("10.0.0.109")))
        .unwrap();
    let mut late = msg(MessageType::Discover, n);
    late.set_secs(30);
    let o = send(&mut secondary, &late).await.expect("takeover by secs");
    assert!(o.yiaddr() >= ip("10.0.0.110"));

    // The peer silent: the secondary answers every client, from its half.
    let mut alone = DhcpHandler::new(
        pair_config(FailoverRole::Secondary, Duration::ZERO),
        StaticHosts::default(),
        MemoryLeaseStore::default(),
    )
    .await
    .unwrap();
    let mut mine = HashSet::new();
    for n in 1..=100u32 {
        let a = dora(&mut alone, n)
            .await
            .expect("the survivor answers everyone");
        assert!(a >= ip("10.0.0.110") && mine.insert(a));
    }
    assert!(
        dora(&mut alone, 101).await.is_none(),
        "its half is used up, never the peer's"
    );
    // A client rebinding with the dead peer's address is NAKed, so it starts
    // over and gets one of ours.
    let mut rebind = msg(MessageType::Request, 500);
    rebind.set_ciaddr(ip("10.0.0.20"));
    let r = send(&mut alone, &rebind).await.unwrap();
    assert_eq!(kind(&r), Some(MessageType::Nak));
    // While the peer is alive, that request is left to it.
    let mut rebind = msg(MessageType::Request, 501);
    rebind.set_ciaddr(ip("10.0.0.20"));
    assert!(send(&mut secondary, &rebind).await.is_none());
    assert!(primary.metrics().peer_clients.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn bad_config_names_what_is_wrong() {
    let overlapping = DhcpConfig::new(
        SERVER,
        vec![
            subnet("10.0.0.0/24", "10.0.0.10", "10.0.0.20"),
            subnet("10.0.0.0/24", "10.0.0.15", "10.0.0.30"),
        ],
    );
    let err = DhcpHandler::new(
        overlapping,
        StaticHosts::default(),
        MemoryLeaseStore::default(),
    )
    .await
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("ranges overlap at 10.0.0.15"),
        "{err}"
    );
    let outside = DhcpConfig::new(
        SERVER,
        vec![subnet("10.0.0.0/24", "10.0.1.10", "10.0.1.20")],
    );
    let err = DhcpHandler::new(outside, StaticHosts::default(), MemoryLeaseStore::default())
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("10.0.1.10-10.0.1.20 is not inside 10.0.0.0/24"),
        "{err}"
    );
}
