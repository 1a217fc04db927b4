//! A live `maas-regiond` on a fresh SQLite data directory, driven by
//! python-libmaas 0.6.8 (from a venv `.ci/run` makes) and by cloud-init's
//! MAAS datasource (Debian's cloud-init) as the deployed machine: the
//! script `tests/libmaas_flow.py` asserts every step.
//!
//! Skipped with a reason when the venv or cloud-init is missing; a failure
//! under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_maas-regiond");

fn skip(why: &str) -> bool {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{why} and CI=true: the test cannot be skipped"
    );
    eprintln!("SKIPPED: {why}");
    false
}

fn venv_python() -> Option<PathBuf> {
    let p = std::env::var_os("MAAS_LIBMAAS_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/maas-libmaas-venv/bin/python"))
        })?;
    p.is_file().then_some(p)
}

fn regiond(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).output().expect("maas-regiond");
    assert!(
        o.status.success(),
        "maas-regiond {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap().trim().to_owned()
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path) -> (Daemon, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join("regiond.log")).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start maas-regiond");
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "maas-regiond did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Daemon(child), port)
}

#[test]
fn python_libmaas_and_cloud_init_run_the_provisioning_cycle() {
    let Some(python) = venv_python() else {
        skip("no python-libmaas venv (~/.cache/maas-libmaas-venv; .ci/run makes it)");
        return;
    };
    let cloud_init = Command::new("/usr/bin/python3")
        .args(["-c", "import cloudinit.sources.DataSourceMAAS"])
        .status()
        .is_ok_and(|s| s.success());
    if !cloud_init {
        skip("Debian's cloud-init is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let admin_key = regiond(&[
        "init",
        "--data-dir",
        data,
        "--admin",
        "admin",
        "--password",
        "admin-pw",
    ]);
    assert_eq!(admin_key.split(':').count(), 3, "an API key: {admin_key}");
    regiond(&[
        "createuser",
        "--data-dir",
        data,
        "--username",
        "bob",
        "--password",
        "bob-pw",
    ]);
    let carol_key = regiond(&[
        "createuser",
        "--data-dir",
        data,
        "--username",
        "carol",
        "--password",
        "carol-pw",
    ]);

    let (mut daemon, port) = start(dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/libmaas_flow.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/MAAS/"))
        .args([&admin_key, "bob-pw", &carol_key])
        .output()
        .expect("run the python-libmaas script");
    let log = std::fs::read_to_string(dir.path().join("regiond.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "python-libmaas flow failed:\n{}\n{}\nregiond log:\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python-libmaas flow: OK"));
    for secret in [&admin_key, &carol_key] {
        let token_secret = secret.rsplit(':').next().unwrap();
        assert!(
            !log.contains(token_secret),
            "a token secret reached the log"
        );
    }

    // SIGTERM: a graceful exit.
    let st = Command::new("kill")
        .args(["-TERM", &daemon.0.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let until = Instant::now() + Duration::from_secs(20);
    let code = loop {
        if let Some(s) = daemon.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < until, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "exit after SIGTERM: {code:?}");
}
