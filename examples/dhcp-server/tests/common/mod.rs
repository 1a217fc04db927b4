//! Helpers the namespace tests share.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::{Child, Command};

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
