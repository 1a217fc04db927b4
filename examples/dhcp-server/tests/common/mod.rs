//! Helpers the namespace tests share.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Skips a test with a printed reason; fails instead under `CI=true`.
pub fn skip(why: &str) -> bool {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "required in CI but unavailable: {why}"
    );
    eprintln!("SKIPPED: {why}");
    true
}

/// Runs a command; its stdout, or an error naming it and its stderr.
pub fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A child process killed on drop.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The records of a JSON-lines lease file.
pub fn leases(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Whether we are root (namespaces need it).
pub fn root() -> bool {
    sh(&["id", "-u"]).is_ok_and(|o| o.trim() == "0")
}

/// Runs this example's `dhcp-server` in namespace `ns` with `config`, its
/// log (at debug level) in `log`.
pub fn dhcp_server(ns: &str, config: &Path, log: &Path) -> Server {
    let child = Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_dhcp-server")])
        .arg(config)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Server(child)
}

/// busybox udhcpc on `eth0` in namespace `ns`: one lease, then exit, with
/// `retry_secs` between its 5 tries. On `bound` its hook saves the
/// variables it was given; their text (`name='value'` lines) is returned.
pub fn udhcpc(ns: &str, dir: &Path, retry_secs: u32) -> Result<String, String> {
    let hook = dir.join("hook.sh");
    let env = dir.join("bound.env");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && set > {}\nexit 0\n",
            env.display()
        ),
    )
    .unwrap();
    sh(&["chmod", "755", hook.to_str().unwrap()])?;
    let retry = retry_secs.to_string();
    sh(&[
        "ip",
        "netns",
        "exec",
        ns,
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-f",
        "-t",
        "5",
        "-T",
        &retry,
        "-s",
        hook.to_str().unwrap(),
    ])?;
    std::fs::read_to_string(&env).map_err(|e| format!("{}: {e}", env.display()))
}
