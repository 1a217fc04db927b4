//! The IPMI driver against real BMC emulators started on 127.0.0.1 by each
//! test and killed when it ends: OpenIPMI's `ipmi_sim` (cipher suite 3; it
//! refuses 17), pyghmi's `Bmc` (suite 3), and pyghmi's `Bmc` with its
//! server session switched to cipher suite 17 by the script below, which
//! the test first checks with `ipmitool -C 17` (an independent suite 17
//! client) before our driver talks to it.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maas_power::drivers::ipmi::wire;
use maas_power::{
    BootDevice, BootOverride, BootPersistence, Executor, ExecutorError, PowerAction, PowerError,
    PowerState, builtin_registry, testkit,
};

const USER: &str = "admin";
const PASSWORD: &str = "ipmi-pw-1";

/// A child process killed on drop, with its scratch directory.
struct Peer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn params<'a>(&'a self, port: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("power_address", "127.0.0.1"),
            ("power_port", port),
            ("power_user", USER),
            ("power_pass", PASSWORD),
        ]
    }
}

/// Waits until something answers Get Channel Authentication Capabilities
/// on `port`.
fn wait_for_bmc(port: u16, child: &mut Child, log: &Path) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let msg = wire::build_request(0x06, 0x38, 0, &[0x8E, 0x04]);
    let pkt = wire::build_v15_sessionless(&msg);
    let until = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 512];
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "the BMC exited ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        let _ = sock.send_to(&pkt, ("127.0.0.1", port));
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && wire::parse_packet(&buf[..n], None).is_ok()
        {
            return;
        }
        assert!(Instant::now() < until, "no BMC answered on port {port}");
    }
}

fn free_udp_port() -> u16 {
    loop {
        let p = common::free_port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

const CHASSIS_SCRIPT: &str = r#"#!/bin/sh
# ipmi_sim's chassis_control program: DEV get power|boot, DEV set KEY VALUE...
d=$(dirname "$0")
shift
op=$1; shift
echo "$op $*" >> "$d/calls.log"
case "$op" in
get)
  for p in "$@"; do
    case "$p" in
      power) echo "power:$(cat "$d/power" 2>/dev/null || echo 0)" ;;
      boot) echo "boot:$(cat "$d/boot" 2>/dev/null || echo none)" ;;
    esac
  done ;;
set)
  while [ $# -gt 1 ]; do
    k=$1; v=$2; shift 2
    case "$k" in
      power) echo "$v" > "$d/power" ;;
      boot) echo "$v" > "$d/boot" ;;
      shutdown) echo 0 > "$d/power" ;;
    esac
  done ;;
esac
"#;

fn start_ipmi_sim() -> Option<Peer> {
    if !common::require_tool("ipmi_sim", "openipmi") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let script = dir.path().join("chassis");
    std::fs::write(&script, CHASSIS_SCRIPT).unwrap();
    let st = Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        dir.path().join("lan.conf"),
        format!(
            "name \"bmc1\"\n\
             set_working_mc 0x20\n\
             \x20 startlan 1\n\
             \x20   addr 127.0.0.1 {port}\n\
             \x20   priv_limit admin\n\
             \x20   allowed_auths_callback none md2 md5 straight\n\
             \x20   allowed_auths_user none md2 md5 straight\n\
             \x20   allowed_auths_operator none md2 md5 straight\n\
             \x20   allowed_auths_admin none md2 md5 straight\n\
             \x20   guid a123456789abcdefa123456789abcdef\n\
             \x20 endlan\n\
             \x20 chassis_control \"{script} 0x20\"\n\
             \x20 user 2 true \"{USER}\" \"{PASSWORD}\" admin 10 none md2 md5 straight\n\
",
            script = script.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bmc.emu"),
        "mc_setbmc 0x20\n\
         mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
         sel_enable 0x20 1000 0x0a\n\
         mc_enable 0x20\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let child = spawn_ipmi_sim(dir.path(), port);
    Some(Peer { child, port, dir })
}

/// Starts ipmi_sim from the configuration in `dir` and waits until it
/// answers on `port`.
fn spawn_ipmi_sim(dir: &Path, port: u16) -> Child {
    let log = dir.join("sim.log");
    let mut child = Command::new("ipmi_sim")
        .arg("-c")
        .arg(dir.join("lan.conf"))
        .arg("-f")
        .arg(dir.join("bmc.emu"))
        .arg("-s")
        .arg(dir.join("state"))
        .arg("-n")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ipmi_sim");
    wait_for_bmc(port, &mut child, &log);
    child
}

/// pyghmi's BMC with the machine's state in files; with `suite17`, its
/// server session speaks cipher suite 17 instead of 3 (pyghmi's server
/// hard-codes suite 3 while its client speaks 17; the subclass swaps
/// SHA-1 for SHA-256 and 12-byte for 16-byte codes where the server
/// computes them, following pyghmi's own client code).
const PYGHMI_BMC: &str = r#"
import hashlib, hmac, os, struct, sys
import pyghmi.ipmi.bmc as bmc
import pyghmi.ipmi.private.serversession as ss

port, user, password, state_dir, suite = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]

def log(line):
    with open(os.path.join(state_dir, "calls.log"), "a") as f:
        f.write(line + "\n")

class Sha256Session(ss.ServerSession):
    def create_open_session_response(self, request):
        self.currhashlib = hashlib.sha256
        self.currhashlen = 16
        resp = super().create_open_session_response(request)
        resp[16] = 3   # RAKP-HMAC-SHA256
        resp[24] = 4   # HMAC-SHA256-128
        return resp

    def _got_rakp1(self, data):
        self.Rm = data[8:24]
        self.rolem = data[24]
        self.maxpriv = self.rolem & 0b111
        self.username = bytes(data[28:])
        pw = self.authdata.get(self.username.decode('utf-8'))
        if pw is None:
            return
        self.uuiddata = self.uuid.bytes
        self.Rc = os.urandom(16)
        self.kuid = pw.encode('utf-8')
        if self.kg is None:
            self.kg = self.kuid
        hmacdata = (self.clientsessionid + self.managedsessionid + self.Rm + self.Rc
                    + self.uuiddata + bytearray([self.rolem, len(self.username)]) + self.username)
        code = hmac.new(self.kuid, bytes(hmacdata), hashlib.sha256).digest()
        msg = bytearray([data[0], 0, 0, 0]) + self.clientsessionid + self.Rc + self.uuiddata + code
        self.send_payload(msg, 0x13, retry=False)

    def _got_rakp3(self, data):
        self.sik = hmac.new(self.kg, bytes(self.Rm + self.Rc)
                            + struct.pack("2B", self.rolem, len(self.username)) + self.username,
                            hashlib.sha256).digest()
        self.k1 = hmac.new(self.sik, b'\x01' * 20, hashlib.sha256).digest()
        self.k2 = hmac.new(self.sik, b'\x02' * 20, hashlib.sha256).digest()
        self.aeskey = self.k2[0:16]
        expected = hmac.new(self.kuid, bytes(self.Rc + self.clientsessionid
                            + struct.pack("2B", self.rolem, len(self.username)) + self.username),
                            hashlib.sha256).digest()
        if bytes(data[8:]) != expected or data[1] != 0:
            return
        self.localsid = struct.unpack('<I', self.managedsessionid)[0]
        self.ipmicallback = self.handle_client_request
        payload = bytearray([data[0], 0, 0, 0]) + self.clientsessionid
        payload += hmac.new(self.sik, bytes(self.Rm + self.managedsessionid + self.uuiddata),
                            hashlib.sha256).digest()[:16]
        self.send_payload(payload, 0x15, retry=False)
        self.confalgo = 'aes'
        self.integrityalgo = 'sha256'
        self.sequencenumber = 1
        self.sessionid = struct.unpack('<I', bytes(self.clientsessionid))[0]

if suite == "17":
    ss.ServerSession = Sha256Session

class Node(bmc.Bmc):
    power = "off"
    boot = "default"

    def get_power_state(self):
        return self.power

    def power_on(self):
        self.power = "on"; log("on")

    def power_off(self):
        self.power = "off"; log("off")

    def power_shutdown(self):
        self.power = "off"; log("shutdown")

    def power_cycle(self):
        self.power = "on"; log("cycle")

    def power_reset(self):
        log("reset")

    def get_boot_device(self):
        return self.boot

    def set_boot_device(self, dev):
        self.boot = dev; log("boot " + str(dev))

node = Node({user: password}, port=int(port), address="127.0.0.1")
node.listen()
"#;

fn pyghmi_available() -> bool {
    common::require_python_module("pyghmi.ipmi.bmc", "PyPI pyghmi")
}

fn start_pyghmi(suite: u8) -> Option<Peer> {
    if !pyghmi_available() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let script = dir.path().join("bmc.py");
    std::fs::write(&script, PYGHMI_BMC).unwrap();
    let log = dir.path().join("bmc.log");
    let mut child = Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .arg(USER)
        .arg(PASSWORD)
        .arg(dir.path())
        .arg(suite.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start python3");
    wait_for_bmc(port, &mut child, &log);
    Some(Peer { child, port, dir })
}

fn ipmitool(peer: &Peer, suite: u8, args: &[&str]) -> std::process::Output {
    Command::new("ipmitool")
        .args([
            "-I",
            "lanplus",
            "-H",
            "127.0.0.1",
            "-U",
            USER,
            "-P",
            PASSWORD,
            "-C",
        ])
        .arg(suite.to_string())
        .arg("-p")
        .arg(peer.port.to_string())
        .args(["-R", "2", "-N", "2"])
        .args(args)
        .output()
        .expect("ipmitool")
}

fn fatal_kind(err: &ExecutorError) -> &'static str {
    match err {
        ExecutorError::Fatal { source, .. } => source.kind(),
        other => panic!("expected a fatal error, got {other:?}"),
    }
}

#[tokio::test]
async fn ipmi_sim_passes_the_battery_and_drives_its_chassis() {
    let Some(sim) = start_ipmi_sim() else { return };
    let port = sim.port.to_string();
    let params = sim.params(&port);
    let registry = builtin_registry();
    let ex = Executor::new(common::fast_config());

    testkit::run_battery(&registry, "ipmi", &params, &ex).await;
    let calls = sim.read("calls.log");
    for want in [
        "set power 1",
        "set power 0",
        "set shutdown 1",
        "set boot pxe",
        "set boot default",
    ] {
        assert!(
            calls.contains(want),
            "ipmi_sim was never asked to {want:?}: {calls}"
        );
    }
    assert_eq!(sim.read("power").trim(), "0");

    let node = registry.bind("ipmi", params.clone()).unwrap();
    let r = ex.run(&node, PowerAction::On).await.unwrap();
    assert_eq!(r.state, PowerState::On);
    assert_eq!(
        sim.read("power").trim(),
        "1",
        "the chassis program saw the change"
    );
    let probe = ex
        .run(&node, PowerAction::Probe)
        .await
        .unwrap()
        .probe
        .unwrap();
    assert_eq!(probe.details["ipmi_version"], "2.0", "{probe:?}");
    assert_eq!(probe.details["manufacturer_id"], "4753", "{probe:?}"); // 0x1291
    node.driver().close().await.unwrap();

    // EFI + persistent on the wire; ipmi_sim keeps only the device and
    // reports it back, and the report says what the BMC says.
    let efi = registry
        .bind(
            "ipmi",
            params.iter().copied().chain([("power_boot_type", "efi")]),
        )
        .unwrap();
    let r = ex
        .run(
            &efi,
            PowerAction::SetBootDevice(BootOverride::network(BootPersistence::Persistent)),
        )
        .await
        .unwrap();
    assert_eq!(r.boot.unwrap().device, BootDevice::Network);
    assert_eq!(sim.read("boot").trim(), "pxe");

    // A wrong password: fatal auth error, one call, no retries.
    let wrong = registry
        .bind(
            "ipmi",
            params
                .iter()
                .copied()
                .filter(|(k, _)| *k != "power_pass")
                .chain([("power_pass", "nope")]),
        )
        .unwrap();
    let t = Instant::now();
    let err = ex.run(&wrong, PowerAction::On).await.unwrap_err();
    assert_eq!(fatal_kind(&err), "auth", "{err:?}");
    assert_eq!(err.steps().len(), 1);
    assert!(t.elapsed() < Duration::from_secs(2));
    // An unknown user: refused by the BMC in RAKP 2.
    let stranger = registry
        .bind(
            "ipmi",
            params
                .iter()
                .copied()
                .filter(|(k, _)| *k != "power_user")
                .chain([("power_user", "nobody")]),
        )
        .unwrap();
    let err = ex.run(&stranger, PowerAction::Query).await.unwrap_err();
    assert_eq!(fatal_kind(&err), "auth", "{err:?}");

    // A session at User level may read the state but not switch power:
    // ipmi_sim answers 0xD4 (insufficient privilege), refused at once.
    let user_level = registry
        .bind(
            "ipmi",
            params.iter().copied().chain([("privilege_level", "USER")]),
        )
        .unwrap();
    let r = ex.run(&user_level, PowerAction::Query).await.unwrap();
    assert_eq!(r.state, PowerState::On);
    let err = ex.run(&user_level, PowerAction::Off).await.unwrap_err();
    assert_eq!(fatal_kind(&err), "refused", "{err:?}");
    assert!(
        err.to_string().contains("0xd4") || format!("{err:?}").contains("0xd4"),
        "{err:?}"
    );
    assert_eq!(sim.read("power").trim(), "1");

    // ipmi_sim refuses cipher suite 17: unsupported, not retried.
    let s17 = registry
        .bind(
            "ipmi",
            params.iter().copied().chain([("cipher_suite_id", "17")]),
        )
        .unwrap();
    let err = ex.run(&s17, PowerAction::Query).await.unwrap_err();
    assert_eq!(fatal_kind(&err), "unsupported", "{err:?}");
}

async fn pyghmi_round_trip(suite: u8) {
    let Some(bmc) = start_pyghmi(suite) else {
        return;
    };
    if suite == 17 && common::require_tool("ipmitool", "ipmitool") {
        // The suite 17 BMC must satisfy an independent client first.
        let out = ipmitool(&bmc, 17, &["chassis", "power", "on"]);
        assert!(
            out.status.success(),
            "ipmitool -C 17 against the suite 17 pyghmi BMC: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(bmc.read("calls.log"), "on\n");
        let out = ipmitool(&bmc, 3, &["chassis", "power", "status"]);
        assert!(!out.status.success(), "the suite 17 BMC accepted suite 3");
    }
    let port = bmc.port.to_string();
    let suite_s = suite.to_string();
    let mut params = bmc.params(&port);
    params.push(("cipher_suite_id", &suite_s));
    let registry = builtin_registry();
    let ex = Executor::new(common::fast_config());
    testkit::run_battery(&registry, "ipmi", &params, &ex).await;
    let calls = bmc.read("calls.log");
    for want in ["on", "off", "cycle", "shutdown", "boot network", "boot hd"] {
        assert!(
            calls.lines().any(|l| l == want),
            "pyghmi never saw {want:?}: {calls}"
        );
    }

    // The wrong suite for this BMC is refused, not retried.
    let other = if suite == 3 { "17" } else { "3" };
    let mut wrong_suite = bmc.params(&port);
    wrong_suite.push(("cipher_suite_id", other));
    let node = registry.bind("ipmi", wrong_suite).unwrap();
    let err = ex.run(&node, PowerAction::Query).await.unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");

    // A wrong password: the BMC's RAKP 2 code does not verify. Fatal.
    let mut wrong = vec![
        ("power_address", "127.0.0.1"),
        ("power_port", port.as_str()),
        ("power_user", USER),
        ("power_pass", "not-it"),
    ];
    wrong.push(("cipher_suite_id", &suite_s));
    let node = registry.bind("ipmi", wrong).unwrap();
    let t = Instant::now();
    let err = ex.run(&node, PowerAction::On).await.unwrap_err();
    assert_eq!(fatal_kind(&err), "auth", "{err:?}");
    assert_eq!(err.steps().len(), 1);
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn pyghmi_bmc_suite_3_passes_the_battery() {
    pyghmi_round_trip(3).await;
}

#[tokio::test]
async fn pyghmi_bmc_suite_17_passes_the_battery() {
    pyghmi_round_trip(17).await;
}

/// A BMC that forgets the driver's kept session (it timed the session out,
/// or restarted, as here): the next action still succeeds in its first
/// attempt, because the driver opens a new session when the kept one stops
/// answering.
#[tokio::test]
async fn a_session_the_bmc_forgot_is_replaced_within_the_attempt() {
    let Some(mut sim) = start_ipmi_sim() else {
        return;
    };
    let port = sim.port.to_string();
    let node = builtin_registry().bind("ipmi", sim.params(&port)).unwrap();
    let ex = Executor::new(common::fast_config());
    let r = ex.run(&node, PowerAction::Query).await.unwrap();
    assert_eq!(r.attempts, 1);

    // The BMC restarts: every session it knew is gone.
    let _ = sim.child.kill();
    let _ = sim.child.wait();
    sim.child = spawn_ipmi_sim(sim.dir.path(), sim.port);

    let r = ex.run(&node, PowerAction::On).await.unwrap();
    assert_eq!(r.state, PowerState::On);
    assert_eq!(
        r.attempts, 1,
        "the driver replaced its session inside the attempt: {:?}",
        r.steps
    );
    assert_eq!(sim.read("power").trim(), "1");
    // (Without the replacement the first attempt would fail on the dead
    // session and the executor would need a second.)
    let _ = node.driver().close().await;
}

#[tokio::test]
async fn unreachable_bmc_is_a_connection_error_in_bounded_time() {
    let registry = builtin_registry();
    let ex = Executor::new(common::fast_config());
    // Nobody on the port: ICMP port unreachable.
    let port = free_udp_port().to_string();
    let node = registry
        .bind(
            "ipmi",
            [
                ("power_address", "127.0.0.1"),
                ("power_port", port.as_str()),
                ("power_user", USER),
                ("power_pass", PASSWORD),
            ],
        )
        .unwrap();
    let t = Instant::now();
    let err = ex.run(&node, PowerAction::On).await.unwrap_err();
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
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    // A socket that takes packets and never answers: timeouts, then the
    // same retryable connection error, bounded by tries x timeout.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let factory = maas_power::drivers::ipmi::IpmiFactory {
        request_timeout: Duration::from_millis(200),
        tries: 2,
        ..Default::default()
    };
    let mut reg = maas_power::Registry::new();
    reg.register(std::sync::Arc::new(factory)).unwrap();
    let node = reg
        .bind(
            "ipmi",
            [
                ("power_address", "127.0.0.1"),
                ("power_port", port.as_str()),
            ],
        )
        .unwrap();
    let t = Instant::now();
    let err = ex.run(&node, PowerAction::Query).await.unwrap_err();
    assert!(
        matches!(
            err,
            ExecutorError::Exhausted {
                last: PowerError::Connection { .. },
                ..
            }
        ),
        "{err:?}"
    );
    // 3 attempts x 2 tries x 200 ms, plus backoff.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

/// A hostile "BMC" that answers every packet with garbage derived from the
/// request (truncations, flipped bits): the driver must fail with an
/// error, never panic or hang.
#[tokio::test]
async fn malformed_replies_are_errors() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port().to_string();
    let server = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        let mut n_seen = 0usize;
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            n_seen += 1;
            let reply: Vec<u8> = match n_seen % 4 {
                0 => buf[..n / 2].to_vec(),
                1 => {
                    // A v1.5 reply to the capabilities request with a
                    // payload length past the end.
                    let mut r = wire::RMCP_HEADER.to_vec();
                    r.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 200, 0x81]);
                    r
                }
                2 => {
                    let mut r = buf[..n].to_vec();
                    for b in r.iter_mut().skip(4) {
                        *b ^= 0x5A;
                    }
                    r
                }
                _ => vec![0x06],
            };
            let _ = sock.send_to(&reply, from).await;
        }
    });
    let factory = maas_power::drivers::ipmi::IpmiFactory {
        request_timeout: Duration::from_millis(200),
        tries: 2,
        ..Default::default()
    };
    let mut reg = maas_power::Registry::new();
    reg.register(std::sync::Arc::new(factory)).unwrap();
    let node = reg
        .bind(
            "ipmi",
            [
                ("power_address", "127.0.0.1"),
                ("power_port", port.as_str()),
            ],
        )
        .unwrap();
    let err = Executor::new(common::fast_config())
        .run(&node, PowerAction::Query)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ExecutorError::Exhausted {
                last: PowerError::BadReply { .. },
                ..
            }
        ),
        "{err:?}"
    );
    server.abort();
}

/// A failing IPMI action (wrong K_g against pyghmi: RAKP 4 does not
/// verify) logs at TRACE level without the password or K_g anywhere.
#[tokio::test]
async fn ipmi_secrets_never_reach_the_logs() {
    let Some(bmc) = start_pyghmi(3) else { return };
    let captured = common::Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _g = tracing::subscriber::set_default(subscriber);
    let port = bmc.port.to_string();
    let mut params = bmc.params(&port);
    params.push(("k_g", "kg-never-logged-1"));
    let node = builtin_registry().bind("ipmi", params).unwrap();
    tracing::info!(?node, "bound");
    let err = Executor::new(common::fast_config())
        .run(&node, PowerAction::On)
        .await
        .unwrap_err();
    // pyghmi has no K_g set: its SIK differs from ours, RAKP 4 fails.
    assert_eq!(fatal_kind(&err), "auth", "{err:?}");
    tracing::error!(error = %err, debug = ?err, "action failed");
    let logs = captured.text();
    assert!(logs.contains("power action failed"), "{logs}");
    assert!(logs.contains("RAKP 4"), "{logs}");
    for text in [
        &logs,
        &format!("{err:?} {err}"),
        &format!("{:?}", err.steps()),
    ] {
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
        assert!(!text.contains("kg-never-logged-1"), "K_g leaked: {text}");
    }
}
