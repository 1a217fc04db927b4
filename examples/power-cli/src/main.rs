//! Runs one power action with any built-in maas-power driver and prints the
//! result and the record of attempts.
//!
//! ```text
//! power-cli --driver redfish --param power_address=https://10.0.0.5 \
//!     --param power_user=admin --param power_pass=secret status
//! power-cli --driver virsh --param power_address=test:///default --param power_id=test off
//! power-cli --driver ipmi --param power_address=127.0.0.1 --param power_port=623 \
//!     --param power_user=admin --param power_pass=secret --param cipher_suite_id=17 boot-pxe
//! power-cli --driver ucsm --param power_address=https://ucsm.example \
//!     --param power_user=admin --param power_pass=secret \
//!     --param service_profile=org-root/ls-node1 status
//! power-cli --describe [--driver NAME]     # the settings schema as JSON
//! ```
//!
//! Actions: `on`, `off`, `soft-off`, `cycle`, `status`, `probe`,
//! `boot-pxe`, `boot-disk` (persistent unless `--once`). `--json` prints the
//! report as JSON. Logs go to stderr (`RUST_LOG`).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use maas_power::{
    BootOverride, BootPersistence, Executor, ExecutorConfig, PowerAction, StepOutcome, StepRecord,
    builtin_registry,
};

const USAGE: &str = "usage: power-cli --driver NAME [--param KEY=VALUE]... [--attempts N] [--timeout SECS] [--once] [--json] ACTION
       power-cli --describe [--driver NAME]
actions: on off soft-off cycle status probe boot-pxe boot-disk";

struct Args {
    driver: Option<String>,
    params: Vec<(String, String)>,
    action: Option<String>,
    attempts: Option<u32>,
    timeout: Option<u64>,
    once: bool,
    json: bool,
    describe: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        driver: None,
        params: Vec::new(),
        action: None,
        attempts: None,
        timeout: None,
        once: false,
        json: false,
        describe: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--driver" => a.driver = Some(value("--driver")?),
            "--param" => {
                let kv = value("--param")?;
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--param {kv:?}: expected KEY=VALUE"))?;
                a.params.push((k.to_owned(), v.to_owned()));
            }
            "--attempts" => a.attempts = Some(value("--attempts")?.parse().context("--attempts")?),
            "--timeout" => a.timeout = Some(value("--timeout")?.parse().context("--timeout")?),
            "--once" => a.once = true,
            "--json" => a.json = true,
            "--describe" => a.describe = true,
            "-h" | "--help" => bail!("{USAGE}"),
            s if s.starts_with('-') => bail!("unknown option {s:?}\n{USAGE}"),
            s => {
                if a.action.replace(s.to_owned()).is_some() {
                    bail!("one action only\n{USAGE}");
                }
            }
        }
    }
    Ok(a)
}

fn action(name: &str, once: bool) -> anyhow::Result<PowerAction> {
    let persistence = if once {
        BootPersistence::Once
    } else {
        BootPersistence::Persistent
    };
    Ok(match name {
        "on" => PowerAction::On,
        "off" => PowerAction::Off,
        "soft-off" => PowerAction::SoftOff,
        "cycle" => PowerAction::Cycle,
        "status" => PowerAction::Query,
        "probe" => PowerAction::Probe,
        "boot-pxe" => PowerAction::SetBootDevice(BootOverride::network(persistence)),
        "boot-disk" => PowerAction::SetBootDevice(BootOverride::disk(persistence)),
        other => bail!("unknown action {other:?}\n{USAGE}"),
    })
}

fn step_line(s: &StepRecord) -> String {
    let outcome = match &s.outcome {
        StepOutcome::Done => "done".to_owned(),
        StepOutcome::State { state } => format!("state {}", state.as_str()),
        StepOutcome::Boot { applied } => format!("boot {applied:?}"),
        StepOutcome::Failed {
            kind,
            message,
            retryable,
        } => format!(
            "failed ({kind}{}): {message}",
            if *retryable { ", retryable" } else { "" }
        ),
        _ => format!("{:?}", s.outcome),
    };
    format!(
        "  attempt {} {:>7} ms {:<16} {:>6} ms  {}",
        s.attempt,
        s.at.as_millis(),
        format!("{:?}", s.step),
        s.took.as_millis(),
        outcome
    )
}

#[allow(clippy::print_stdout)]
async fn run() -> anyhow::Result<bool> {
    let args = parse_args()?;
    let registry = builtin_registry();
    if args.describe {
        let json = match &args.driver {
            Some(d) => registry
                .descriptor(d)
                .with_context(|| format!("no driver {d:?}"))?
                .to_json(),
            None => registry.descriptors_json(),
        };
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(true);
    }
    let driver = args.driver.as_deref().context(USAGE)?;
    let action = action(args.action.as_deref().context(USAGE)?, args.once)?;
    let bound = registry
        .bind(
            driver,
            args.params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .with_context(|| format!("driver {driver:?}: bad parameters"))?;
    let mut config = ExecutorConfig::default();
    if let Some(n) = args.attempts {
        config.max_attempts = n;
    }
    if let Some(t) = args.timeout {
        config.overall_timeout = Duration::from_secs(t);
    }
    let executor = Executor::new(config);
    let result = executor.run(&bound, action).await;
    let _ = bound.driver().close().await;
    match result {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{action}: ok, power {}{} after {} attempt(s) in {} ms",
                    report.state.as_str(),
                    if report.already { " (already)" } else { "" },
                    report.attempts,
                    report.elapsed.as_millis()
                );
                if let Some(b) = report.boot {
                    println!("boot override now: {b:?}");
                }
                if let Some(p) = &report.probe {
                    for (k, v) in &p.details {
                        println!("  {k}: {v}");
                    }
                }
                for s in &report.steps {
                    println!("{}", step_line(s));
                }
            }
            Ok(true)
        }
        Err(e) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(e.steps())?);
            } else {
                for s in e.steps() {
                    println!("{}", step_line(s));
                }
            }
            Err(anyhow::Error::new(e))
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
