//! The `power-cli` program itself, run as a process: the schema it
//! describes, actions through libvirt's test driver with the real `virsh`,
//! the JSON report, errors that name the bad parameter, an unreachable BMC,
//! and no secret in anything it prints, logs at debug level included.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_power-cli");

fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "debug")
        .output()
        .expect("run power-cli")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn have_virsh() -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("virsh").is_file()));
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "virsh is not installed (package libvirt-clients) and CI=true"
        );
        eprintln!("SKIPPED: virsh is not installed (install libvirt-clients)");
    }
    found
}

#[test]
fn describe_prints_every_builtin_schema_with_secrets_marked() {
    let o = cli(&["--describe"]);
    assert!(o.status.success(), "{:?}", text(&o));
    let all: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let names: Vec<&str> = all
        .as_array()
        .expect("an array of descriptors")
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    for want in ["ipmi", "redfish", "virsh", "ucsm", "webhook", "manual"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let o = cli(&["--describe", "--driver", "ipmi"]);
    assert!(o.status.success());
    let ipmi: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let fields = ipmi["settings"].as_array().expect("settings");
    let pass = fields
        .iter()
        .find(|f| f["name"] == "power_pass")
        .expect("power_pass field");
    assert_eq!(pass["secret"], true, "{pass}");
    assert_eq!(pass["type"], "password", "{pass}");

    let o = cli(&["--describe", "--driver", "no-such-driver"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("no-such-driver"), "{:?}", text(&o));
}

#[test]
fn virsh_actions_through_libvirts_test_driver() {
    if !have_virsh() {
        return;
    }
    let base = [
        "--driver",
        "virsh",
        "--param",
        "power_address=test:///default",
        "--param",
        "power_id=test",
    ];
    // The test driver's domain "test" is running in every new connection.
    let o = cli(&[&base[..], &["status"]].concat());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.starts_with("query: ok, power on after 1 attempt(s)"),
        "{out}"
    );
    assert!(out.contains("attempt 1"), "the attempt record: {out}");

    // Off, verified by a query in the same connection.
    let o = cli(&[&base[..], &["--json", "off"]].concat());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(report["state"], "off", "{report}");
    let steps = report["steps"].as_array().expect("steps");
    assert!(
        steps.len() >= 2,
        "the action and its verifying query: {report}"
    );

    // A domain that does not exist: a failure naming it, non-zero exit.
    let o = cli(&[
        "--driver",
        "virsh",
        "--param",
        "power_address=test:///default",
        "--param",
        "power_id=no-such-vm",
        "on",
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(err.contains("no-such-vm"), "{err}");
}

#[test]
fn bad_parameters_and_usage_errors_name_what_is_wrong() {
    let o = cli(&[
        "--driver",
        "ipmi",
        "--param",
        "power_address=127.0.0.1",
        "--param",
        "power_port=not-a-port",
        "status",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("power_port"), "{:?}", text(&o));

    let o = cli(&["--driver", "ipmi", "--param", "power_port=623", "status"]);
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("power_address"),
        "a missing required field is named: {:?}",
        text(&o)
    );

    let o = cli(&["--driver", "virsh", "--param", "oops", "status"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("KEY=VALUE"), "{:?}", text(&o));

    let o = cli(&[
        "--driver",
        "virsh",
        "--param",
        "power_address=test:///default",
        "--param",
        "power_id=test",
        "explode",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("explode"), "{:?}", text(&o));
}

#[test]
fn an_unreachable_bmc_fails_after_its_attempts_and_no_secret_is_printed() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = "hunter2-do-not-print";
    let o = cli(&[
        "--driver",
        "redfish",
        "--param",
        &format!("power_address=http://127.0.0.1:{port}"),
        "--param",
        "power_user=admin",
        "--param",
        &format!("power_pass={secret}"),
        "--attempts",
        "2",
        "--timeout",
        "20",
        "status",
    ]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("attempt 1") && out.contains("attempt 2"),
        "both attempts recorded: {out}"
    );
    assert!(out.contains("retryable"), "{out}");
    assert!(
        !out.contains(secret) && !err.contains(secret),
        "the password leaked:\n{out}\n{err}"
    );
}
