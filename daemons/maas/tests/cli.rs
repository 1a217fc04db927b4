//! The command line against a live region: login saves a profile readable
//! by the user only, tables and `--json` show what the API holds, actions
//! change it, errors name what was wrong.

use std::process::Command;
use std::time::Duration;

use maas::demo::{Demo, Options};

fn maas(config: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_maas"))
        .args(args)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("MAAS_PROFILE")
        .output()
        .expect("run maas");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_logs_in_lists_acts_and_names_errors() {
    let o = Options {
        machines: 2,
        progress: false,
        phase_timeout: Duration::from_secs(120),
        ..Options::default()
    };
    let demo = Demo::start(&o).await.expect("demo starts");
    let report = demo.run(&o).await.expect("cycle");
    let config = tempfile::tempdir().expect("tempdir");
    let cfg = config.path().to_owned();
    let (url, key) = (demo.url.clone(), demo.api_key.clone());
    let run = move |args: Vec<String>| {
        let cfg = cfg.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                maas(&cfg, &a)
            })
            .await
            .expect("join")
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();

    // A wrong key is refused and nothing is saved.
    let (ok, _, err) = run(s(&["login", "lab", &url, "a:b:c"])).await;
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, out, err) = run(s(&["login", "lab", &url, &key])).await;
    assert!(ok, "{err}");
    assert!(out.contains("as admin"), "{out}");
    let file = config.path().join("maas-rs/profiles.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("saved").permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the profile file holds API keys: {mode:o}");

    // Tables and JSON agree with the API.
    let (ok, out, err) = run(s(&["machines", "list"])).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("HOSTNAME"), "{out}");
    for (id, status) in &report.final_status {
        let line = out
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("{id} in\n{out}"));
        assert!(line.contains(status.as_str()), "{line}");
    }
    let (ok, out, _) = run(s(&["--json", "machines", "list"])).await;
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    let (ok, out, _) = run(s(&["subnets", "list"])).await;
    assert!(ok && out.contains("127.77.0.0/16"), "{out}");
    let (ok, out, _) = run(s(&["vlans"])).await;
    assert!(ok && out.contains("true"), "DHCP on: {out}");

    // An action: release the deployed machine.
    let deployed = report
        .final_status
        .iter()
        .find(|(_, st)| *st == "Deployed")
        .map(|(id, _)| id.clone())
        .expect("a deployed machine");
    let (ok, out, err) = run(s(&["machines", "release", &deployed])).await;
    assert!(ok, "{err}");
    assert!(out.contains("Ready"), "{out}");
    let (ok, out, _) = run(s(&["events", "--machine", &deployed, "--limit", "5"])).await;
    assert!(ok && out.contains("Releasing -> Ready"), "{out}");

    // Errors name what was wrong.
    let (ok, _, err) = run(s(&["machines", "deploy", "nosuch"])).await;
    assert!(!ok && err.contains("404"), "{err}");
    let (ok, _, err) = run(s(&["machines", "frobnicate"])).await;
    assert!(!ok && err.contains("unknown command"), "{err}");
    let (ok, _, err) = run(s(&["--profile", "other", "zones"])).await;
    assert!(!ok && err.contains("no profile \"other\""), "{err}");
    let (ok, out, _) = run(s(&["completions", "bash"])).await;
    assert!(ok && out.contains("complete -F _maas maas"));
    let (ok, _, _) = run(s(&["logout", "lab"])).await;
    assert!(ok);
    let (ok, _, err) = run(s(&["machines", "list"])).await;
    assert!(!ok && err.contains("not logged in"), "{err}");
}
