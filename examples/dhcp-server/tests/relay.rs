//! A VLAN the server is not attached to, served through ISC's dhcrelay:
//! busybox udhcpc, two hops away, gets an address from the relayed subnet
//! with that subnet's router (the relay adds agent options, option 82; the
//! handler tests check they are echoed).
//!
//! Needs root (namespaces), dhcrelay (Debian's isc-dhcp-relay) and busybox;
//! skipped with a reason otherwise, and failing instead under `CI=true`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Server, dhcp_server, leases, root, sh, skip, udhcpc};

struct Lab {
    tag: String,
}

impl Lab {
    fn ns(&self, role: &str) -> String {
        format!("rl{}{role}", self.tag)
    }

    /// server (10.80.0.1) -- (10.80.0.2) relay (10.81.0.1) -- client
    fn new() -> Result<Self, String> {
        let lab = Lab {
            tag: format!("{}", std::process::id() % 100_000),
        };
        let (s, r, c) = (lab.ns("s"), lab.ns("r"), lab.ns("c"));
        for ns in [&s, &r, &c] {
            sh(&["ip", "netns", "add", ns])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        let up = format!("u{}", lab.tag);
        let down = format!("d{}", lab.tag);
        sh(&[
            "ip",
            "link",
            "add",
            &up,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{up}p"),
        ])?;
        sh(&[
            "ip",
            "link",
            "add",
            &down,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{down}p"),
        ])?;
        sh(&["ip", "link", "set", &up, "netns", &s, "name", "eth0"])?;
        sh(&[
            "ip",
            "link",
            "set",
            &format!("{up}p"),
            "netns",
            &r,
            "name",
            "up0",
        ])?;
        sh(&[
            "ip",
            "link",
            "set",
            &format!("{down}p"),
            "netns",
            &r,
            "name",
            "down0",
        ])?;
        sh(&["ip", "link", "set", &down, "netns", &c, "name", "eth0"])?;
        sh(&["ip", "-n", &s, "addr", "add", "10.80.0.1/24", "dev", "eth0"])?;
        sh(&["ip", "-n", &r, "addr", "add", "10.80.0.2/24", "dev", "up0"])?;
        sh(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            "10.81.0.1/24",
            "dev",
            "down0",
        ])?;
        for (ns, dev) in [(&s, "eth0"), (&r, "up0"), (&r, "down0"), (&c, "eth0")] {
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        sh(&[
            "ip",
            "-n",
            &s,
            "route",
            "add",
            "10.81.0.0/24",
            "via",
            "10.80.0.2",
        ])?;
        Ok(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for role in ["s", "r", "c"] {
            let _ = sh(&["ip", "netns", "del", &self.ns(role)]);
        }
    }
}

#[test]
fn a_client_behind_dhcrelay_gets_an_address_on_the_relayed_vlan() {
    if !root() {
        skip("needs root for network namespaces");
        return;
    }
    for tool in ["/usr/sbin/dhcrelay", "/bin/busybox"] {
        if !Path::new(tool).exists() {
            skip(&format!("{tool} is not installed"));
            return;
        }
    }
    let lab = Lab::new().expect("lab");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = dir.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"interface = "eth0"
server_ip = "10.80.0.1"
lease_file = "{d}/leases.jsonl"
[[subnet]]
cidr = "10.80.0.0/24"
[[subnet]]
cidr = "10.81.0.0/24"
ranges = [["10.81.0.100", "10.81.0.199"]]
router = "10.81.0.1"
domain = "relayed.maas"
"#
        ),
    )
    .unwrap();
    let _server = dhcp_server(&lab.ns("s"), &cfg, &dir.path().join("server.log"));
    // -a: add agent options (82) and strip them from replies; dhcrelay
    // drops a reply whose circuit id does not match one of its interfaces.
    let _relay = Server(
        Command::new("ip")
            .args(["netns", "exec", &lab.ns("r"), "dhcrelay", "-4", "-d", "-a"])
            .args(["-pf", &format!("{d}/dhcrelay.pid")])
            .args(["-iu", "up0", "-id", "down0", "10.80.0.1"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("relay.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(1000));
    let got = udhcpc(&lab.ns("c"), dir.path(), 1);
    let log = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    let env = got.unwrap_or_else(|e| {
        panic!(
            "no lease through the relay: {e}\nserver:\n{}\nrelay:\n{}",
            log("server.log"),
            log("relay.log")
        )
    });
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('\'').to_owned())
            .unwrap_or_default()
    };
    let ip = var("ip");
    let last: u8 = ip.rsplit('.').next().unwrap().parse().unwrap();
    assert!(
        ip.starts_with("10.81.0.") && (100..=199).contains(&last),
        "{env}"
    );
    assert_eq!(var("router"), "10.81.0.1");
    assert_eq!(var("domain"), "relayed.maas");
    assert_eq!(var("serverid"), "10.80.0.1");
    let stored = leases(&dir.path().join("leases.jsonl"));
    assert!(
        stored
            .iter()
            .any(|l| l["ip"] == ip.as_str() && l["state"] == "active"),
        "{stored:?}"
    );
}
