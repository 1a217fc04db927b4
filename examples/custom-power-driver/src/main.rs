//! Demo: a program that registers the built-in drivers plus `lineproto`,
//! starts a simulated controller and switches a node on through the
//! executor, printing the report.

#![allow(clippy::print_stdout)] // a demo program: stdout is its output

use std::sync::Arc;

use custom_power_driver::{LineFactory, sim::SimBmc};
use maas_power::{Executor, PowerAction, builtin_registry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bmc = SimBmc::start("s3cret", &["node-1"]).await?;
    // Explicit registration: the program lists the drivers it uses.
    let mut registry = builtin_registry();
    registry.register(Arc::new(LineFactory::default()))?;
    let port = bmc.addr().port().to_string();
    let node = registry.bind(
        "lineproto",
        [
            ("power_address", "127.0.0.1"),
            ("power_port", port.as_str()),
            ("power_pass", "s3cret"),
            ("node", "node-1"),
        ],
    )?;
    let report = Executor::default().run(&node, PowerAction::On).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
