//! maas-dhcp against DHCP clients nobody here wrote: busybox udhcpc and ISC
//! dhclient, each in its own network namespace, joined to the server's
//! namespace by a veth pair. The server runs in this process on a socket
//! opened inside its namespace.
//!
//! Needs root, `ip`, busybox and dhclient: skipped with a reason otherwise,
//! a failure under `CI=true`.

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use maas_core::MacAddress;
use maas_dhcp::{
    DhcpConfig, DhcpHandler, DhcpServer, FileLeaseStore, LeaseState, LeaseStore, NeighbourTable,
    Reservation, StaticHosts, SubnetConfig,
};

fn skip(why: &str) -> bool {
    let msg = format!(
        "SKIPPED {}: {why}",
        std::thread::current().name().unwrap_or("test")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}; under CI a skipped peer test is a failure");
    }
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
    true
}

fn sh(args: &[&str]) -> Result<String, String> {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim(),
            String::from_utf8_lossy(&o.stdout).trim()
        ))
    }
}

/// Server and client namespaces joined by a veth pair; removed on drop.
struct Lab {
    server_ns: String,
    client_ns: String,
    server_if: String,
    client_if: String,
    net: String,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.server_ns]);
        let _ = sh(&["ip", "netns", "del", &self.client_ns]);
    }
}

impl Lab {
    fn new(tag: u8, mac: &str) -> Result<Lab, String> {
        let id = std::process::id() % 200;
        let lab = Lab {
            server_ns: format!("dhs-{id}-{tag}"),
            client_ns: format!("dhc-{id}-{tag}"),
            server_if: format!("ds{id}x{tag}"),
            client_if: format!("dc{id}x{tag}"),
            net: format!("10.{}.{id}", 150 + tag),
        };
        for ns in [&lab.server_ns, &lab.client_ns] {
            let _ = sh(&["ip", "netns", "del", ns]);
            sh(&["ip", "netns", "add", ns])?;
            sh(&["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
        }
        sh(&[
            "ip",
            "link",
            "add",
            &lab.server_if,
            "netns",
            &lab.server_ns,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
            "netns",
            &lab.client_ns,
        ])?;
        sh(&[
            "ip",
            "netns",
            "exec",
            &lab.server_ns,
            "ip",
            "addr",
            "add",
            &format!("{}.1/24", lab.net),
            "dev",
            &lab.server_if,
        ])?;
        sh(&[
            "ip",
            "netns",
            "exec",
            &lab.server_ns,
            "ip",
            "link",
            "set",
            &lab.server_if,
            "up",
        ])?;
        sh(&[
            "ip",
            "netns",
            "exec",
            &lab.client_ns,
            "ip",
            "link",
            "set",
            &lab.client_if,
            "address",
            mac,
        ])?;
        sh(&[
            "ip",
            "netns",
            "exec",
            &lab.client_ns,
            "ip",
            "link",
            "set",
            &lab.client_if,
            "up",
        ])?;
        Ok(lab)
    }

    fn server_ip(&self) -> Ipv4Addr {
        format!("{}.1", self.net).parse().unwrap()
    }

    /// A UDP socket on 0.0.0.0:67, bound to the server's interface, opened
    /// from inside the server namespace (only this helper thread enters it).
    fn server_socket(&self) -> std::net::UdpSocket {
        let ns = format!("/var/run/netns/{}", self.server_ns);
        let iface = self.server_if.clone();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&ns).expect("namespace file");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            use socket2::{Domain, Protocol, Socket, Type};
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
            s.set_reuse_address(true).unwrap();
            s.set_broadcast(true).unwrap();
            s.bind_device(Some(iface.as_bytes())).unwrap();
            s.bind(&SocketAddr::from(([0, 0, 0, 0], 67)).into())
                .unwrap();
            s.set_nonblocking(true).unwrap();
            std::net::UdpSocket::from(s)
        })
        .join()
        .expect("socket thread")
    }

    /// Runs busybox udhcpc once (`-q`: quit with a lease) in the client
    /// namespace with `hook` as its script, asking for options 66 and 67.
    fn udhcpc(&self, hook: &Path, extra: &[&str]) -> Result<String, String> {
        let mut args = vec!["ip", "netns", "exec", &self.client_ns, "busybox", "udhcpc"];
        args.extend_from_slice(&[
            "-i",
            &self.client_if,
            "-f",
            "-q",
            "-n",
            "-t",
            "5",
            "-T",
            "1",
        ]);
        args.extend_from_slice(&["-s", hook.to_str().unwrap(), "-O", "tftp", "-O", "bootfile"]);
        args.extend_from_slice(extra);
        sh(&args)
    }

    /// The server interface's neighbour table, opened inside its namespace.
    fn neighbour_table(&self) -> NeighbourTable {
        let ns = format!("/var/run/netns/{}", self.server_ns);
        let iface = self.server_if.clone();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&ns).expect("namespace file");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            NeighbourTable::open(&iface).expect("neighbour table")
        })
        .join()
        .expect("neighbour thread")
    }

    fn subnet(&self) -> SubnetConfig {
        let mut s = SubnetConfig::new(
            format!("{}.0/24", self.net).parse().unwrap(),
            vec![(
                format!("{}.100", self.net).parse().unwrap(),
                format!("{}.199", self.net).parse().unwrap(),
            )],
        );
        s.router = Some(self.server_ip());
        s.dns = vec![self.server_ip()];
        s.domain = Some("maas".into());
        s.mtu = Some(1500);
        s.routes = vec![("192.168.77.0/24".parse().unwrap(), self.server_ip())];
        s
    }
}

fn prerequisites() -> bool {
    if !Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
    {
        return !skip("needs root for network namespaces");
    }
    for tool in ["/bin/busybox", "/usr/sbin/dhclient"] {
        if !Path::new(tool).exists() {
            return !skip(&format!("{tool} is not installed"));
        }
    }
    true
}

fn hosts(lab: &Lab) -> StaticHosts {
    let mut h = StaticHosts {
        next_server: Some(lab.server_ip()),
        ipxe_file: Some(format!("http://{}:5248/ipxe/boot.ipxe", lab.server_ip())),
        ..Default::default()
    };
    h.boot_files.insert(0, "lpxelinux.0".into());
    h.boot_files.insert(7, "bootx64.efi".into());
    h
}

/// A udhcpc script that saves the variables it sees on `bound` to
/// `dir/bound.env` (read back with [`env_of`]).
fn bound_hook(dir: &Path) -> std::path::PathBuf {
    let hook = dir.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && set > {}/bound.env\nexit 0\n",
            dir.display()
        ),
    )
    .unwrap();
    sh(&["chmod", "755", hook.to_str().unwrap()]).unwrap();
    hook
}

/// Runs a hook-driven client and returns the variables its hook saw on `bound`.
fn env_of(file: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udhcpc_gets_a_lease_with_pxe_boot_options_and_ipxe_gets_its_script() {
    if !prerequisites() {
        return;
    }
    let mac = "52:54:00:66:00:01";
    let lab = Lab::new(1, mac).expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let store = FileLeaseStore::new(dir.path().join("leases.jsonl"));
    let config = DhcpConfig::new(lab.server_ip(), vec![lab.subnet()]);
    let handler = DhcpHandler::new(config, hosts(&lab), store).await.unwrap();
    let server = DhcpServer::from_socket(
        tokio::net::UdpSocket::from_std(lab.server_socket()).unwrap(),
        handler,
    );
    let metrics = server.metrics();
    tokio::spawn(server.serve());

    let hook = bound_hook(dir.path());
    let run = |extra: &[&str]| lab.udhcpc(&hook, extra);
    // BIOS PXE fingerprint: vendor class and architecture 0.
    run(&[
        "-V",
        "PXEClient:Arch:00000:UNDI:002001",
        "-x",
        "93:0000",
        "-x",
        "97:0027946b599e444fa78e91f3527a1ef094",
    ])
    .expect("udhcpc got a lease");
    let env = env_of(&dir.path().join("bound.env"));
    let ip: Ipv4Addr = env["ip"].parse().unwrap();
    assert_eq!(
        ip,
        format!("{}.100", lab.net).parse::<Ipv4Addr>().unwrap(),
        "{env:?}"
    );
    assert_eq!(env["siaddr"], lab.server_ip().to_string());
    assert_eq!(env["boot_file"], "lpxelinux.0");
    assert_eq!(env["bootfile"], "lpxelinux.0");
    assert_eq!(env["tftp"], lab.server_ip().to_string());
    assert_eq!(env["router"], lab.server_ip().to_string());
    assert_eq!(env["subnet"], "255.255.255.0");
    assert_eq!(env["lease"], "600");
    assert_eq!(env["domain"], "maas");
    let server = lab.server_ip();
    assert_eq!(
        env.get("staticroutes").map(String::as_str),
        Some(format!("192.168.77.0/24 {server} 0.0.0.0/0 {server}").as_str()),
        "option 121 with the default route added: {env:?}"
    );
    // The lease was on disk before the ACK went out.
    let stored = FileLeaseStore::new(dir.path().join("leases.jsonl"))
        .load()
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].ip, stored[0].mac, stored[0].state),
        (ip, MacAddress::parse(mac).unwrap(), LeaseState::Active)
    );

    // The same machine's iPXE (user class iPXE) gets the script URL instead.
    let _ = std::fs::remove_file(dir.path().join("bound.env"));
    run(&[
        "-V",
        "PXEClient:Arch:00000:UNDI:002001",
        "-x",
        "93:0000",
        "-x",
        "77:69505845",
    ])
    .expect("iPXE-like client got a lease");
    let env = env_of(&dir.path().join("bound.env"));
    assert_eq!(env["ip"], ip.to_string(), "the same MAC keeps its address");
    assert_eq!(
        env["bootfile"],
        format!("http://{}:5248/ipxe/boot.ipxe", lab.server_ip())
    );

    // UEFI: architecture 7.
    let _ = std::fs::remove_file(dir.path().join("bound.env"));
    run(&["-V", "PXEClient:Arch:00007:UNDI:003000", "-x", "93:0007"])
        .expect("UEFI client got a lease");
    assert_eq!(
        env_of(&dir.path().join("bound.env"))["bootfile"],
        "bootx64.efi"
    );
    assert!(metrics.ack.load(Ordering::Relaxed) >= 3);
    assert_eq!(metrics.malformed.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dhclient_gets_its_reservation_renews_and_releases() {
    if !prerequisites() {
        return;
    }
    let mac = "52:54:00:66:00:02";
    let lab = Lab::new(2, mac).expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let leases = dir.path().join("leases.jsonl");
    let config = DhcpConfig::new(lab.server_ip(), vec![lab.subnet()]);
    let mut h = hosts(&lab);
    let reserved: Ipv4Addr = format!("{}.20", lab.net).parse().unwrap();
    h.reservations.insert(
        MacAddress::parse(mac).unwrap(),
        Reservation {
            ip: reserved,
            hostname: Some("node-2".into()),
        },
    );
    let handler = DhcpHandler::new(config, h, FileLeaseStore::new(&leases))
        .await
        .unwrap();
    let server = DhcpServer::from_socket(
        tokio::net::UdpSocket::from_std(lab.server_socket()).unwrap(),
        handler,
    );
    let metrics = server.metrics();
    tokio::spawn(server.serve());

    let conf = dir.path().join("dhclient.conf");
    std::fs::write(&conf, "option pxe-client-arch code 93 = unsigned integer 16;\nsend pxe-client-arch 7;\nsend vendor-class-identifier \"PXEClient:Arch:00007:UNDI:003000\";\nrequest subnet-mask, routers, domain-name-servers, domain-name, host-name;\ntimeout 20;\n").unwrap();
    let hook = dir.path().join("hook.sh");
    // Like dhclient-script, configure the address: the RELEASE is unicast
    // from it to the server.
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset > {}/$reason.env\ncase $reason in BOUND|REBOOT|RENEW) ip addr replace $new_ip_address/24 dev $interface;; esac\nexit 0\n",
            dir.path().display()
        ),
    )
    .unwrap();
    sh(&["chmod", "755", hook.to_str().unwrap()]).unwrap();
    let dhclient = |extra: &[&str]| {
        let (lf, pf) = (
            dir.path().join("client.leases"),
            dir.path().join("client.pid"),
        );
        let mut args = vec![
            "ip",
            "netns",
            "exec",
            &lab.client_ns,
            "dhclient",
            "-1",
            "-v",
            "-cf",
            conf.to_str().unwrap(),
            "-lf",
            lf.to_str().unwrap(),
            "-pf",
            pf.to_str().unwrap(),
            "-sf",
            hook.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        args.push(&lab.client_if);
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let v: Vec<&str> = owned.iter().map(String::as_str).collect();
            sh(&v)
        })
    };
    dhclient(&[]).await.unwrap().expect("dhclient got a lease");
    let env = env_of(&dir.path().join("BOUND.env"));
    assert_eq!(env["new_ip_address"], reserved.to_string(), "{env:?}");
    assert_eq!(env["new_host_name"], "node-2");
    assert_eq!(env["new_filename"], "bootx64.efi");
    assert_eq!(env["new_next_server"], lab.server_ip().to_string());

    // dhclient started again with its lease file asks for its address back
    // (INIT-REBOOT): the same address is confirmed.
    let _ = sh(&[
        "ip",
        "netns",
        "exec",
        &lab.client_ns,
        "ip",
        "addr",
        "flush",
        "dev",
        &lab.client_if,
    ]);
    dhclient(&[])
        .await
        .unwrap()
        .expect("dhclient got its lease back");
    let env = env_of(&dir.path().join("REBOOT.env"));
    assert_eq!(
        env.get("new_ip_address").map(String::as_str),
        Some(reserved.to_string().as_str()),
        "REBOOT: {env:?}"
    );

    // Release: the server records the address as given back.
    dhclient(&["-r"]).await.unwrap().expect("dhclient released");
    for _ in 0..50 {
        if metrics.release.load(Ordering::Relaxed) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics.release.load(Ordering::Relaxed), 1);
    let stored = FileLeaseStore::new(&leases).load().await.unwrap();
    assert_eq!(
        stored.iter().find(|l| l.ip == reserved).map(|l| l.state),
        Some(LeaseState::Released)
    );
}

/// Captures `count` DHCP replies (UDP from port 67) on the client's side of
/// the link with tcpdump, while `client` runs; returns tcpdump's lines
/// (`src-mac > dst-mac, ..., src-ip.67 > dst-ip.68: ...`).
fn capture_replies(lab: &Lab, count: usize, client: impl FnOnce()) -> String {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut dump = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.client_ns,
            "tcpdump",
            "-i",
            &lab.client_if,
        ])
        .args([
            "-n",
            "-e",
            "-t",
            "-l",
            "-c",
            &count.to_string(),
            "udp src port 67",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump");
    // tcpdump says "listening on ..." once its filter is in place; its
    // stderr is drained to the end so it never blocks on a full pipe.
    let (ready, listening) = std::sync::mpsc::channel();
    let stderr = BufReader::new(dump.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("listening on") {
                let _ = ready.send(());
            }
        }
    });
    listening
        .recv_timeout(Duration::from_secs(10))
        .expect("tcpdump started listening");
    client();
    for _ in 0..100 {
        if dump.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = dump.kill();
    let out = dump.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_an_address_gets_unicast_replies_through_a_neighbour_entry() {
    if !prerequisites() {
        return;
    }
    if !Path::new("/usr/bin/tcpdump").exists() {
        assert!(skip("tcpdump is not installed"));
        return;
    }
    let mac = "52:54:00:66:00:03";
    let lab = Lab::new(3, mac).expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let config = DhcpConfig::new(lab.server_ip(), vec![lab.subnet()]);
    let store = FileLeaseStore::new(dir.path().join("leases.jsonl"));
    let handler = DhcpHandler::new(config, hosts(&lab), store).await.unwrap();
    let server = DhcpServer::from_socket(
        tokio::net::UdpSocket::from_std(lab.server_socket()).unwrap(),
        handler,
    )
    .with_neighbours(lab.neighbour_table());
    let metrics = server.metrics();
    tokio::spawn(server.serve());

    let hook = bound_hook(dir.path());
    let udhcpc = |extra: &[&str]| {
        lab.udhcpc(&hook, extra).expect("udhcpc got a lease");
    };

    // udhcpc sets no broadcast flag: OFFER and ACK go to the new address
    // at the client's MAC.
    let seen = capture_replies(&lab, 2, || udhcpc(&[]));
    let ip = env_of(&dir.path().join("bound.env"))["ip"].clone();
    let ip = ip.as_str();
    let replies: Vec<&str> = seen.lines().filter(|l| l.contains(".67 > ")).collect();
    assert_eq!(replies.len(), 2, "{seen}");
    for r in &replies {
        assert!(
            r.contains(&format!("> {mac},")) && r.contains(&format!(".67 > {ip}.68:")),
            "not unicast to {ip} at {mac}: {r}"
        );
    }
    assert_eq!(metrics.unicast_arp.load(Ordering::Relaxed), 2);
    assert_eq!(metrics.arp_fallback.load(Ordering::Relaxed), 0);
    let neigh = sh(&[
        "ip",
        "-n",
        &lab.server_ns,
        "neigh",
        "show",
        ip,
        "dev",
        &lab.server_if,
    ])
    .unwrap();
    assert!(neigh.contains(&format!("lladdr {mac}")), "{neigh}");

    // With the broadcast flag (-B) the replies are broadcast.
    let seen = capture_replies(&lab, 2, || udhcpc(&["-B"]));
    let replies: Vec<&str> = seen.lines().filter(|l| l.contains(".67 > ")).collect();
    assert_eq!(replies.len(), 2, "{seen}");
    for r in &replies {
        assert!(
            r.contains("> ff:ff:ff:ff:ff:ff,") && r.contains(".67 > 255.255.255.255.68:"),
            "not broadcast: {r}"
        );
    }
    assert_eq!(metrics.unicast_arp.load(Ordering::Relaxed), 2);
}
