//! `maas run` refuses bad configuration naming the key, before binding
//! anything.

use std::process::Command;

fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_maas"));
    c.args(args)
        .env_remove("MAAS_DATA_DIR")
        .env_remove("MAAS_API_LISTEN")
        .env_remove("MAAS_RACK_ADDRESS")
        .env_remove("MAAS_LOG_FORMAT");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run maas");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("maas.toml");
    let f = f.to_str().expect("utf-8 path");
    std::fs::write(f, "api_listn = \"127.0.0.1:5240\"\n").expect("write");
    let (ok, err) = run(&["run", "--config", f], &[]);
    assert!(!ok && err.contains("api_listn"), "{err}");
    std::fs::write(f, "tftp_listen = \"nowhere\"\n").expect("write");
    let (ok, err) = run(&["run", "--config", f], &[]);
    assert!(!ok && err.contains("tftp_listen"), "{err}");
    let (ok, err) = run(&["run", "--config", "/nonexistent/maas.toml"], &[]);
    assert!(!ok && err.contains("/nonexistent/maas.toml"), "{err}");
    std::fs::write(f, "").expect("write");
    let (ok, err) = run(&["run", "--config", f], &[("MAAS_RACK_ADDRESS", "nope")]);
    assert!(!ok && err.contains("MAAS_RACK_ADDRESS"), "{err}");
    let (ok, err) = run(&["run", "--config", f, "--rack-address", "10.0.0"], &[]);
    assert!(!ok && err.contains("--rack-address"), "{err}");
    let (ok, err) = run(&["run", "--colour", "x"], &[]);
    assert!(!ok && err.contains("--colour"), "{err}");
}

/// The systemd units name programs and flags that exist.
#[test]
fn the_systemd_units_start_what_exists() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd");
    let (_, usage) = run(&["help-me"], &[]);
    for unit in ["maas.service", "maas-regiond.service", "maas-rackd.service"] {
        let text = std::fs::read_to_string(format!("{dir}/{unit}")).expect(unit);
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        let words: Vec<&str> = exec.split_whitespace().collect();
        let program = words[0].rsplit('/').next().unwrap_or_default();
        let crate_dir = match program {
            "maas" => "maas",
            "maas-regiond" => "maas-regiond",
            "maas-rackd" => "maas-rackd",
            other => panic!("{unit}: {other} is not one of our programs"),
        };
        let main = std::fs::read_to_string(format!(
            "{}/../{crate_dir}/src/main.rs",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("main.rs");
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            assert!(
                main.contains(&format!("\"{flag}\""))
                    || main.contains(&format!("{flag} "))
                    || main.contains(&format!("\"{}\"", &flag[2..])),
                "{unit}: {program} has no {flag}"
            );
        }
        if program == "maas" {
            assert!(
                usage.contains(words[1]),
                "maas has no command {}: {usage}",
                words[1]
            );
        }
    }
}
