//! The conflict probe: a host squatting on the first address of the range
//! without a lease answers our ICMP echo, so busybox udhcpc is offered the
//! next address instead.
//!
//! Needs root (namespaces) and busybox; skipped with a reason otherwise, and
//! failing instead under `CI=true`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{dhcp_server, root, sh, skip, udhcpc};

struct Lab {
    tag: String,
}

impl Lab {
    fn ns(&self, role: &str) -> String {
        format!("cp{}{role}", self.tag)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for role in ["s", "q", "c", "br"] {
            let _ = sh(&["ip", "netns", "del", &self.ns(role)]);
        }
    }
}

#[test]
fn a_squatted_address_is_skipped_when_the_probe_is_on() {
    if !root() {
        skip("needs root for network namespaces");
        return;
    }
    if !Path::new("/bin/busybox").exists() {
        skip("/bin/busybox is not installed");
        return;
    }
    let lab = Lab {
        tag: format!("{}", std::process::id() % 100_000),
    };
    let br = lab.ns("br");
    sh(&["ip", "netns", "add", &br]).unwrap();
    sh(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"]).unwrap();
    sh(&["ip", "-n", &br, "link", "set", "br0", "up"]).unwrap();
    for (role, addr) in [
        ("s", Some("10.83.0.1/24")),
        ("q", Some("10.83.0.100/24")),
        ("c", None),
    ] {
        let ns = lab.ns(role);
        let (inner, outer) = (format!("{}{role}", lab.tag), format!("b{}{role}", lab.tag));
        for cmd in [
            vec!["ip", "netns", "add", &ns],
            vec![
                "ip", "link", "add", &inner, "type", "veth", "peer", "name", &outer,
            ],
            vec!["ip", "link", "set", &inner, "netns", &ns, "name", "eth0"],
            vec!["ip", "link", "set", &outer, "netns", &br],
            vec![
                "ip", "-n", &br, "link", "set", &outer, "master", "br0", "up",
            ],
            vec!["ip", "-n", &ns, "link", "set", "eth0", "up"],
        ] {
            sh(&cmd).unwrap();
        }
        if let Some(a) = addr {
            sh(&["ip", "-n", &ns, "addr", "add", a, "dev", "eth0"]).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cfg = dir.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"interface = "eth0"
server_ip = "10.83.0.1"
lease_file = "{d}/leases.jsonl"
conflict_probe_ms = 500
[[subnet]]
cidr = "10.83.0.0/24"
ranges = [["10.83.0.100", "10.83.0.110"]]
"#
        ),
    )
    .unwrap();
    let _server = dhcp_server(&lab.ns("s"), &cfg, &dir.path().join("server.log"));
    std::thread::sleep(Duration::from_millis(500));
    let got = udhcpc(&lab.ns("c"), dir.path(), 2);
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    let env = got.unwrap_or_else(|e| panic!("no lease: {e}\n{log}"));
    assert!(
        env.contains("ip='10.83.0.101'"),
        "expected the next address:\n{env}"
    );
    assert!(
        log.contains("10.83.0.100") && log.contains("set aside"),
        "{log}"
    );
}
