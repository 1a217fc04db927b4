//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, clippy::print_stdout)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use maas_power::ExecutorConfig;

/// Whether `tool` is on PATH. Missing: prints why the test is skipped, or
/// panics under CI=true (where every peer must be installed).
pub fn require_tool(tool: &str, package: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "{tool} is not installed (package {package}) and CI=true: the test cannot be skipped"
            );
        }
        println!("SKIPPED: {tool} is not installed (install {package})");
    }
    found
}

/// Whether python3 can import `module`; like [`require_tool`] otherwise.
pub fn require_python_module(module: &str, package: &str) -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "python module {module} is not installed ({package}) and CI=true: the test cannot be skipped"
            );
        }
        println!("SKIPPED: python module {module} is not installed (install {package})");
    }
    found
}

/// Executor limits short enough for tests.
pub fn fast_config() -> ExecutorConfig {
    ExecutorConfig {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        attempt_timeout: Duration::from_secs(40),
        overall_timeout: Duration::from_secs(120),
        verify_timeout: Duration::from_secs(20),
        verify_interval: Duration::from_millis(200),
        max_concurrent: 8,
    }
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// A `MakeWriter` that keeps everything tracing writes.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
