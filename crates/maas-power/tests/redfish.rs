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
    maas_power::testkit::assert_fatal_auth(&err);
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

/// What the session front end saw.
#[derive(Default)]
struct SessionLog {
    /// Tokens the front end accepts now.
    tokens: std::collections::HashSet<String>,
    created: u32,
    deleted: u32,
    /// Requests that carried an `Authorization` (Basic) header.
    basic: u32,
    /// Requests let through on a valid `X-Auth-Token`.
    on_token: u32,
}

type Shared = std::sync::Arc<std::sync::Mutex<SessionLog>>;

/// A Redfish session service in front of sushy-emulator, which has none.
///
/// This is a fake, on purpose and only for the part that cannot run here:
/// no Redfish emulator with a session service installs from this project's
/// registries (sushy-tools has none; DMTF's emulators are not packaged).
/// It offers `Links.Sessions` in the service root, creates sessions
/// (`POST`, 201 with `X-Auth-Token` and `Location`), deletes them, refuses
/// anything else without a valid token with 401, and forwards the rest to
/// sushy with Basic credentials, so power state and resets stay real.
async fn session_front(upstream: u16) -> (u16, Shared) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Shared::default();
    let shared = log.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let log = shared.clone();
            tokio::spawn(async move {
                let Some((head, body)) = read_message(&mut sock).await else {
                    return;
                };
                let mut words = head.split_whitespace();
                let method = words.next().unwrap_or("").to_owned();
                let path = words.next().unwrap_or("").to_owned();
                let header = |name: &str| {
                    head.lines().skip(1).find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case(name)
                            .then(|| v.trim().to_owned())
                    })
                };
                let token = header("X-Auth-Token");
                let valid = {
                    let mut l = log.lock().unwrap();
                    if header("Authorization").is_some() {
                        l.basic += 1;
                    }
                    token.as_ref().is_some_and(|t| l.tokens.contains(t))
                };
                let sessions = "/redfish/v1/SessionService/Sessions";
                let (status, extra, body): (u16, String, Vec<u8>) =
                    if method == "GET" && (path == "/redfish/v1/" || path == "/redfish/v1") {
                        let (status, _, raw) = forward(upstream, &method, &path, None, &[]).await;
                        let mut root: serde_json::Value = serde_json::from_slice(&raw).unwrap();
                        root["Links"]["Sessions"] = serde_json::json!({ "@odata.id": sessions });
                        (status, String::new(), root.to_string().into_bytes())
                    } else if method == "POST" && path == sessions {
                        let creds: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        if creds["UserName"] == USER && creds["Password"] == PASSWORD {
                            let mut l = log.lock().unwrap();
                            l.created += 1;
                            let id = l.created;
                            let token = format!("token-{id}-{port}");
                            l.tokens.insert(token.clone());
                            (
                                201,
                                format!("X-Auth-Token: {token}\r\nLocation: {sessions}/{id}\r\n"),
                                format!("{{\"@odata.id\": \"{sessions}/{id}\", \"Id\": \"{id}\"}}")
                                    .into_bytes(),
                            )
                        } else {
                            (401, String::new(), b"{}".to_vec())
                        }
                    } else if !valid {
                        (401, String::new(), b"{}".to_vec())
                    } else if method == "DELETE" && path.starts_with(sessions) {
                        let mut l = log.lock().unwrap();
                        l.tokens.remove(token.as_deref().unwrap_or_default());
                        l.deleted += 1;
                        (204, String::new(), Vec::new())
                    } else {
                        log.lock().unwrap().on_token += 1;
                        let if_match = header("If-Match");
                        let (status, etag, raw) =
                            forward(upstream, &method, &path, if_match.as_deref(), &body).await;
                        let extra = etag.map(|e| format!("ETag: {e}\r\n")).unwrap_or_default();
                        (status, extra, raw)
                    };
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            });
        }
    });

    /// One HTTP message: the head as text and a `Content-Length` body.
    async fn read_message(sock: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = buf[end..].to_vec();
        while body.len() < len {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
        Some((head, body))
    }

    /// Sends one request to sushy with Basic credentials; (status, ETag, body).
    async fn forward(
        port: u16,
        method: &str,
        path: &str,
        if_match: Option<&str>,
        body: &[u8],
    ) -> (u16, Option<String>, Vec<u8>) {
        let mut up = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let basic = base64(format!("{USER}:{PASSWORD}").as_bytes());
        let if_match = if_match
            .map(|e| format!("If-Match: {e}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Basic {basic}\r\nContent-Type: application/json\r\n{if_match}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        up.write_all(head.as_bytes()).await.unwrap();
        up.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        up.read_to_end(&mut raw).await.unwrap();
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a reply head")
            + 4;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        assert!(
            !head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "sushy answered chunked: {head}"
        );
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(502);
        let etag = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("etag")
                .then(|| v.trim().to_owned())
        });
        (status, etag, raw[end..].to_vec())
    }

    fn base64(b: &[u8]) -> String {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    (port, log)
}

#[tokio::test]
async fn redfish_sessions_where_offered_renewed_after_a_401_and_deleted_on_close() {
    if !available() {
        return;
    }
    let sushy = start_sushy(false);
    let (port, log) = session_front(sushy.port).await;
    let addr = format!("http://127.0.0.1:{port}");
    let registry = builtin_registry();
    let ex = Executor::new(common::fast_config());
    let params = |pass: &'static str| {
        vec![
            ("power_address", addr.clone()),
            ("power_user", USER.to_owned()),
            ("power_pass", pass.to_owned()),
        ]
    };
    let bind = |pass: &'static str| {
        registry
            .bind(
                "redfish",
                params(pass).iter().map(|(k, v)| (*k, v.as_str())),
            )
            .unwrap()
    };
    // auth=auto (the default): the service offers sessions, so one is made
    // and every request after it carries the token, never the password.
    let node = bind(PASSWORD);
    let r = ex.run(&node, PowerAction::On).await.unwrap();
    assert_eq!(r.state, PowerState::On);
    let r = ex.run(&node, PowerAction::Query).await.unwrap();
    assert_eq!(r.state, PowerState::On);
    {
        let l = log.lock().unwrap();
        assert_eq!((l.created, l.basic), (1, 0));
        assert!(l.on_token >= 3, "requests went through on the token");
    }

    // The BMC forgets every session (timed out, or rebooted): the next
    // action gets a 401, makes a new session and succeeds in one attempt.
    log.lock().unwrap().tokens.clear();
    let r = ex.run(&node, PowerAction::Off).await.unwrap();
    assert_eq!((r.state, r.attempts), (PowerState::Off, 1), "{:?}", r.steps);
    assert_eq!(log.lock().unwrap().created, 2);

    // Closing the driver deletes its session.
    node.driver().close().await.unwrap();
    {
        let l = log.lock().unwrap();
        assert_eq!(l.deleted, 1);
        assert!(l.tokens.is_empty(), "the session is gone");
        assert_eq!(l.basic, 0);
    }

    // A wrong password: the session is refused; fatal, no retries.
    let wrong = bind("wrong");
    let err = ex.run(&wrong, PowerAction::Query).await.unwrap_err();
    maas_power::testkit::assert_fatal_auth(&err);
    assert_eq!(err.steps().len(), 1);
    assert_eq!(log.lock().unwrap().created, 2);
}
