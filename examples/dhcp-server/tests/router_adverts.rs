//! Router advertisements on an interface with IPv6: ndisc6's rdisc6 sends a
//! router solicitation and reads our answer (not a default router, the
//! interface's prefix, no DHCPv6), as iPXE would before giving up waiting.
//!
//! Needs root (namespaces) and rdisc6 (Debian's ndisc6); skipped with a
//! reason otherwise, and failing instead under `CI=true`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{dhcp_server, root, sh, skip};

struct Lab {
    tag: String,
}

impl Lab {
    fn ns(&self, role: &str) -> String {
        format!("ra{}{role}", self.tag)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for role in ["s", "c"] {
            let _ = sh(&["ip", "netns", "del", &self.ns(role)]);
        }
    }
}

fn wait_for_link_local(ns: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let out = sh(&["ip", "-n", ns, "-6", "addr", "show", "dev", "eth0"]).unwrap_or_default();
        if out.contains("fe80") && !out.contains("tentative") {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no usable link-local address in {ns}");
}

#[test]
fn rdisc6_gets_an_advert_with_the_prefix_and_no_default_router() {
    if !root() {
        skip("needs root for network namespaces");
        return;
    }
    if !Path::new("/usr/bin/rdisc6").exists() {
        skip("/usr/bin/rdisc6 is not installed (package ndisc6)");
        return;
    }
    let lab = Lab {
        tag: format!("{}", std::process::id() % 100_000),
    };
    let (s, c) = (lab.ns("s"), lab.ns("c"));
    let a = format!("a{}", lab.tag);
    for cmd in [
        vec!["ip", "netns", "add", &s],
        vec!["ip", "netns", "add", &c],
        vec![
            "ip",
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            "tmp-ra-peer",
        ],
        vec!["ip", "link", "set", &a, "netns", &s, "name", "eth0"],
        vec![
            "ip",
            "link",
            "set",
            "tmp-ra-peer",
            "netns",
            &c,
            "name",
            "eth0",
        ],
        vec!["ip", "-n", &s, "addr", "add", "10.82.0.1/24", "dev", "eth0"],
        vec![
            "ip",
            "-n",
            &s,
            "-6",
            "addr",
            "add",
            "fd00:82::1/64",
            "dev",
            "eth0",
            "nodad",
        ],
        vec!["ip", "-n", &s, "link", "set", "eth0", "up"],
        vec!["ip", "-n", &c, "link", "set", "eth0", "up"],
    ] {
        sh(&cmd).expect("lab");
    }
    wait_for_link_local(&s);
    wait_for_link_local(&c);

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"interface = "eth0"
server_ip = "10.82.0.1"
lease_file = "{}/leases.jsonl"
[[subnet]]
cidr = "10.82.0.0/24"
ranges = [["10.82.0.100", "10.82.0.199"]]
[router_advertisements]
interval_secs = 600
mtu = 1400
"#,
            dir.path().display()
        ),
    )
    .unwrap();
    let _server = dhcp_server(&s, &cfg, &dir.path().join("server.log"));
    std::thread::sleep(Duration::from_millis(500));
    // The periodic advert went out at start; rdisc6 solicits a fresh one,
    // answered after at most MIN_DELAY_BETWEEN_RAS (3 s).
    let out = sh(&[
        "ip", "netns", "exec", &c, "rdisc6", "-1", "-w", "4000", "-r", "2", "eth0",
    ]);
    let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    let out = out.unwrap_or_else(|e| panic!("rdisc6 saw no advert: {e}\nserver:\n{log}"));
    let line = |key: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key:?} in:\n{out}"))
            .to_owned()
    };
    assert!(line("Prefix").contains("fd00:82::/64"), "{out}");
    assert!(line("Router lifetime").contains(" 0 ("), "{out}");
    assert!(line("Stateful address conf.").contains("No"), "{out}");
    assert!(line("MTU").contains("1400"), "{out}");
    assert!(line("Autonomous address conf.").contains("No"), "{out}");
}
