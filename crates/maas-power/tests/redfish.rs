//! The Redfish driver against sushy-tools' emulator (fake driver), started
//! on 127.0.0.1 by each test and killed when the test ends.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maas_power::{
    BootDevice, BootOverride, BootPersistence, Executor, ExecutorError, PowerAction, PowerError,
    PowerState, builtin_registry,
};

const UUID: &str = "27946b59-9e44-4fa7-8e91-f3527a1ef094";
const USER: &str = "admin";
const PASSWORD: &str = "redfish-pw";

/// A running sushy-emulator; killed on drop.
struct Sushy {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sushy(tls: bool) -> Sushy {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let htpasswd = dir.path().join("htpasswd");
    // bcrypt entry made by the bcrypt module sushy-tools itself depends on
    let out = Command::new("python3")
        .args(["-c", "import bcrypt,sys; print(sys.argv[1] + ':' + bcrypt.hashpw(sys.argv[2].encode(), bcrypt.gensalt(rounds=4)).decode())", USER, PASSWORD])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "bcrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&htpasswd, &out.stdout).unwrap();
    let conf = dir.path().join("emulator.conf");
    std::fs::write(
        &conf,
        format!(
            "SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n\
             SUSHY_EMULATOR_LISTEN_PORT = {port}\n\
             SUSHY_EMULATOR_FAKE_DRIVER = True\n\
             SUSHY_EMULATOR_STATE_DIR = '{state}'\n\
             SUSHY_EMULATOR_AUTH_FILE = '{auth}'\n\
             SUSHY_EMULATOR_FAKE_SYSTEMS = [{{'uuid': '{UUID}', 'name': 'node-1', 'power_state': 'Off', \
             'external_notifier': False, 'nics': [{{'mac': '52:54:00:99:00:10', 'ip': '10.99.0.115'}}]}}]\n",
            state = dir.path().join("state").display(),
            auth = htpasswd.display(),
        ),
    )
    .unwrap();
    let mut cmd = Command::new("sushy-emulator");
    cmd.arg("--config").arg(&conf);
    if tls {
        make_cert(dir.path());
        cmd.arg("--ssl-certificate")
            .arg(dir.path().join("cert.pem"))
            .arg("--ssl-key")
            .arg(dir.path().join("key.pem"));
    }
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start sushy-emulator");
    let s = Sushy {
        child,
        port,
        _dir: dir,
    };
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < until,
            "sushy-emulator did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

fn make_cert(dir: &Path) {
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success());
}

fn available() -> bool {
    common::require_tool("sushy-emulator", "PyPI sushy-tools")
}

#[tokio::test]
async fn redfish_basic_auth_power_and_boot_override() {
    if !available() {
        return;
    }
    let emu = start_sushy(false);
    let addr = format!("http://127.0.0.1:{}", emu.port);
    let registry = builtin_registry();
    let ex = Executor::new(common::fast_config());
    let node = registry
        .bind(
            "redfish",
            [
                ("power_address", addr.as_str()),
                ("power_user", USER),
                ("power_pass", PASSWORD),
            ],
        )
        .unwrap();

    let r = ex.run(&node, PowerAction::Query).await.unwrap();
    assert_eq!(r.state, PowerState::Off);
    let probe = ex
        .run(&node, PowerAction::Probe)
        .await
        .unwrap()
        .probe
        .unwrap();
    assert!(
        probe.details["reset_types"].contains("ForceOff"),
        "{probe:?}"
    );
    assert_eq!(probe.details["auth"], "basic");
    assert_eq!(
        probe.details["system"],
        format!("/redfish/v1/Systems/{UUID}")
    );

    let r = ex.run(&node, PowerAction::On).await.unwrap();
    assert_eq!(r.state, PowerState::On, "{r:#?}");
    let r = ex.run(&node, PowerAction::On).await.unwrap();
    assert!(r.already);
    let r = ex.run(&node, PowerAction::Cycle).await.unwrap();
    assert_eq!(r.state, PowerState::On);
    let r = ex.run(&node, PowerAction::Off).await.unwrap();
    assert_eq!(r.state, PowerState::Off, "{r:#?}");

    // Boot override with read-back. sushy-tools reports Once as Continuous;
    // the report says what the BMC says.
    let r = ex
        .run(
            &node,
            PowerAction::SetBootDevice(BootOverride::network(BootPersistence::Once)),
        )
        .await
        .unwrap();
    let applied = r.boot.unwrap();
    assert_eq!(applied.device, BootDevice::Network);
    let r = ex
        .run(
            &node,
            PowerAction::SetBootDevice(BootOverride::disk(BootPersistence::Persistent)),
        )
        .await
        .unwrap();
    assert_eq!(r.boot.unwrap().device, BootDevice::Disk);
    assert_eq!(r.boot.unwrap().persistence, BootPersistence::Persistent);

    // The system by name: sushy redirects to the UUID URL.
    let by_name = registry
        .bind(
            "redfish",
            [
                ("power_address", addr.as_str()),
                ("power_user", USER),
                ("power_pass", PASSWORD),
                ("node_id", "node-1"),
            ],
        )
        .unwrap();
    assert_eq!(
        ex.run(&by_name, PowerAction::Query).await.unwrap().state,
        PowerState::Off
    );
    let missing = registry
        .bind(
            "redfish",
            [
                ("power_address", addr.as_str()),
                ("power_user", USER),
                ("power_pass", PASSWORD),
                ("node_id", "nope"),
            ],
        )
        .unwrap();
    let err = ex.run(&missing, PowerAction::Query).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExecutorError::Fatal {
                source: PowerError::NotFound { .. },
                ..
            }
        ),
        "{err:?}"
    );

    // A wrong password: fatal, one call, no retries.
    let wrong = registry
        .bind(
            "redfish",
            [
                ("power_address", addr.as_str()),
                ("power_user", USER),
                ("power_pass", "wrong"),
            ],
        )
        .unwrap();
    let err = ex.run(&wrong, PowerAction::On).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExecutorError::Fatal {
                source: PowerError::Auth { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.steps().len(), 1);
}

#[tokio::test]
async fn redfish_self_signed_tls_is_refused_unless_accepted() {
    if !available() || !common::require_tool("openssl", "openssl") {
        return;
    }
    let emu = start_sushy(true);
    let addr = format!("127.0.0.1:{}", emu.port); // no scheme: https
    let registry = builtin_registry();
    let ex = Executor::new(common::fast_config());
    let strict = registry
        .bind(
            "redfish",
            [
                ("power_address", addr.as_str()),
                ("power_user", USER),
                ("power_pass", PASSWORD),
            ],
        )
        .unwrap();
    let err = ex.run(&strict, PowerAction::Query).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExecutorError::Fatal {
                source: PowerError::Tls { .. },
                ..
            }
        ),
        "{err:?}"
    );

    let lax = registry
        .bind(
            "redfish",
            [
                ("power_address", addr.as_str()),
                ("power_user", USER),
                ("power_pass", PASSWORD),
                ("power_verify_ssl", "n"),
            ],
        )
        .unwrap();
    assert_eq!(
        ex.run(&lax, PowerAction::Query).await.unwrap().state,
        PowerState::Off
    );
    let r = ex.run(&lax, PowerAction::On).await.unwrap();
    assert_eq!(r.state, PowerState::On);
}

#[tokio::test]
async fn redfish_unreachable_bmc_fails_in_bounded_time() {
    let port = common::free_port();
    let addr = format!("http://127.0.0.1:{port}");
    let node = builtin_registry()
        .bind("redfish", [("power_address", addr.as_str())])
        .unwrap();
    let t = Instant::now();
    let err = Executor::new(common::fast_config())
        .run(&node, PowerAction::On)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecutorError::Exhausted {
                attempts: 3,
                last: PowerError::Connection { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn redfish_sushy_passes_the_battery() {
    if !available() {
        return;
    }
    let emu = start_sushy(false);
    let addr = format!("http://127.0.0.1:{}", emu.port);
    maas_power::testkit::run_battery(
        &builtin_registry(),
        "redfish",
        &[
            ("power_address", addr.as_str()),
            ("power_user", USER),
            ("power_pass", PASSWORD),
        ],
        &Executor::new(common::fast_config()),
    )
    .await;
}
