//! The sample file parses; broken files are refused with the key named.

use std::path::Path;
use std::process::Command;

fn check(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dhcp-server"))
        .arg("--check")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sample() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dhcp-server.toml")).unwrap()
}

#[test]
fn the_sample_file_is_valid() {
    let (ok, err) = check(&sample());
    assert!(ok, "{err}");
    let with_failover = sample()
        .replace("# [failover]", "[failover]")
        .replace("# role = \"primary\"", "role = \"primary\"")
        .replace(
            "# listen = \"10.77.0.1:8647\"",
            "listen = \"10.77.0.1:8647\"",
        )
        .replace("# peer = \"10.77.0.2:8647\"", "peer = \"10.77.0.2:8647\"");
    let (ok, err) = check(&with_failover);
    assert!(ok, "{err}");
}

#[test]
fn bad_files_name_the_key() {
    let cases = [
        (
            sample().replace("server_ip =", "server_address ="),
            "server_address",
        ),
        (
            sample().replace("\"10.77.0.20\"", "\"10.99.0.20\""),
            "reservation[0].ip",
        ),
        (
            sample().replace("52:54:00:12:34:56", "52:54:00:12:34"),
            "reservation[0].mac",
        ),
        (
            sample().replace(
                "[\"10.78.0.100\", \"10.78.0.199\"]",
                "[\"10.78.0.100\", \"10.79.0.199\"]",
            ),
            "10.78.0.100-10.79.0.199 is not inside 10.78.0.0/24",
        ),
        (
            sample().replace("durability = \"sync\"", "durability = \"maybe\""),
            "durability",
        ),
        (sample().replace("\"16\" =", "\"sixteen\" ="), "boot.files"),
        (
            sample().replace(
                "\ninterface = \"br-prov\"",
                "\ninterface = \"a\"\nlisten = \"0.0.0.0:67\"",
            ),
            "exactly one of `interface` and `listen`",
        ),
        (sample().replace("mtu = 1500", "mtu = 150000"), "mtu"),
    ];
    for (text, key) in cases {
        let (ok, err) = check(&text);
        assert!(!ok, "accepted a file with a bad {key}");
        assert!(err.contains(key), "error does not name {key:?}: {err}");
    }
}
