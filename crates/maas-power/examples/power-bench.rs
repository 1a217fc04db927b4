//! Power-state queries against many BMCs at once through the executor
//! (used by `scripts/bench-power.sh`).
//!
//! ```text
//! power-bench [--driver ipmi|redfish] --ports 16230,16231,... --queries 500 \
//!     --mode cold|fresh|kept [--user admin] [--password password] [--suite 3]
//! ```
//!
//! `cold` builds a new registry and binds a new driver per query (for IPMI
//! a new RMCP+ session, for Redfish a new HTTP client, root store and
//! connection: what a program running a tool per query pays); `fresh`
//! binds a new driver per query from one registry (IPMI: a new session;
//! Redfish: the factory's pooled client, as a region binding per action
//! gets); `kept` binds one driver per BMC and reuses its session or
//! connection. Redfish BMCs are `http://127.0.0.1:PORT`. Prints one line:
//! queries, errors, wall seconds. CPU time is measured by the caller.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use maas_power::{BoundDriver, Executor, ExecutorConfig, PowerAction, builtin_registry};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut ports: Vec<String> = Vec::new();
    let mut queries = 500usize;
    let mut mode = "fresh".to_owned();
    let mut user = "admin".to_owned();
    let mut password = "password".to_owned();
    let mut suite = "3".to_owned();
    let mut driver = "ipmi".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--ports" => ports = value()?.split(',').map(str::to_owned).collect(),
            "--queries" => queries = value()?.parse()?,
            "--mode" => mode = value()?,
            "--user" => user = value()?,
            "--password" => password = value()?,
            "--suite" => suite = value()?,
            "--driver" => driver = value()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if ports.is_empty() {
        return Err("--ports is required".into());
    }
    let shared = builtin_registry();
    let bind = |port: &str, cold: bool| -> Result<BoundDriver, maas_power::PowerError> {
        let own;
        let registry = if cold {
            own = builtin_registry();
            &own
        } else {
            &shared
        };
        match driver.as_str() {
            "redfish" => registry.bind(
                "redfish",
                [
                    ("power_address", format!("http://127.0.0.1:{port}").as_str()),
                    ("power_user", user.as_str()),
                    ("power_pass", password.as_str()),
                ],
            ),
            _ => registry.bind(
                "ipmi",
                [
                    ("power_address", "127.0.0.1"),
                    ("power_port", port),
                    ("power_user", user.as_str()),
                    ("power_pass", password.as_str()),
                    ("cipher_suite_id", suite.as_str()),
                ],
            ),
        }
    };
    if !["cold", "fresh", "kept"].contains(&mode.as_str()) {
        return Err(format!("--mode {mode:?}: expected cold, fresh or kept").into());
    }
    let fresh = mode != "kept";
    let kept: Vec<BoundDriver> = ports
        .iter()
        .map(|p| bind(p, false))
        .collect::<Result<_, _>>()?;
    let executor = Arc::new(Executor::new(ExecutorConfig {
        max_concurrent: ports.len(),
        ..ExecutorConfig::default()
    }));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(queries);
    for i in 0..queries {
        let node = if fresh {
            bind(&ports[i % ports.len()], mode == "cold")?
        } else {
            kept[i % kept.len()].clone()
        };
        let ex = executor.clone();
        tasks.push(tokio::spawn(async move {
            let r = ex.run(&node, PowerAction::Query).await;
            if fresh {
                let _ = node.driver().close().await;
            }
            r.is_ok()
        }));
    }
    let mut errors = 0;
    for t in tasks {
        if !t.await.unwrap_or(false) {
            errors += 1;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    for k in &kept {
        let _ = k.driver().close().await;
    }
    println!("queries={queries} errors={errors} wall_s={wall:.3}");
    Ok(())
}
