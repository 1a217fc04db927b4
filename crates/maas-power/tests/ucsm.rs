//! The ucsm driver against a fixture UCS Manager.
//!
//! No UCS Manager, nor an emulator of one, can run here. The fixture is a
//! small HTTP server (real TCP on 127.0.0.1) answering the XML API methods
//! the driver uses — aaaLogin, configResolveDn, configConfMo, aaaLogout —
//! with documents shaped after the examples in Cisco's published "UCS
//! Manager XML API Programmer's Guide", including its error replies (551
//! authentication failed, 552 authorization required for a stale cookie).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use maas_power::{
    Executor, ExecutorError, PowerAction, PowerError, PowerState, builtin_registry, testkit,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const USER: &str = "ucs-admin";
const PASSWORD: &str = "ucs&<pw>";

#[derive(Default)]
struct Ucs {
    cookies: BTreeSet<String>,
    next_cookie: u32,
    /// Service profile DN -> associated blade DN ("" when unassociated).
    profiles: BTreeMap<String, String>,
    /// Blade DN -> powered on.
    blades: BTreeMap<String, bool>,
    /// lsPower DN -> state.
    power: BTreeMap<String, String>,
    /// Method names in order.
    log: Vec<String>,
    /// lsPower states set, in order.
    states: Vec<String>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

impl Ucs {
    fn handle(&mut self, body: &str) -> String {
        let doc = match roxmltree::Document::parse(body) {
            Ok(d) => d,
            Err(_) => return r#"<error errorCode="101" errorDescr="malformed XML" />"#.into(),
        };
        let root = doc.root_element();
        let method = root.tag_name().name().to_owned();
        self.log.push(method.clone());
        let a = |n: &str| root.attribute(n).unwrap_or_default().to_owned();
        match method.as_str() {
            "aaaLogin" => {
                if a("inName") == USER && a("inPassword") == PASSWORD {
                    self.next_cookie += 1;
                    let c = format!("1700000000/7a9b-{:04}", self.next_cookie);
                    self.cookies.insert(c.clone());
                    format!(
                        r#"<aaaLogin cookie="" response="yes" outCookie="{c}" outRefreshPeriod="600" outPriv="admin,read-only" outDomains="" outChannel="noencssl" outEvtChannel="noencssl" outSessionId="" outVersion="2.2(1b)"> </aaaLogin>"#
                    )
                } else {
                    r#"<aaaLogin cookie="" response="yes" errorCode="551" invocationResult="unidentified-fail" errorDescr="Authentication failed"> </aaaLogin>"#.into()
                }
            }
            "aaaLogout" => {
                self.cookies.remove(&a("inCookie"));
                r#"<aaaLogout cookie="" response="yes" outStatus="success"> </aaaLogout>"#.into()
            }
            m @ ("configResolveDn" | "configConfMo") => {
                let (cookie, dn) = (a("cookie"), a("dn"));
                if !self.cookies.contains(&cookie) {
                    return format!(
                        r#"<{m} dn="{}" cookie="{}" response="yes" errorCode="552" invocationResult="unidentified-fail" errorDescr="Authorization required"> </{m}>"#,
                        esc(&dn),
                        esc(&cookie)
                    );
                }
                if m == "configConfMo" {
                    let state = root
                        .descendants()
                        .find(|n| n.has_tag_name("lsPower"))
                        .and_then(|n| n.attribute("state"))
                        .unwrap_or_default()
                        .to_owned();
                    let profile = dn.trim_end_matches("/power").to_owned();
                    let Some(blade) = self.profiles.get(&profile).cloned() else {
                        return format!(
                            r#"<configConfMo dn="{}" cookie="{}" response="yes" errorCode="103" invocationResult="unidentified-fail" errorDescr="can't create; object's parent does not exist"> </configConfMo>"#,
                            esc(&dn),
                            esc(&cookie)
                        );
                    };
                    if let Some(on) = self.blades.get_mut(&blade) {
                        match state.as_str() {
                            "up" | "cycle-immediate" => *on = true,
                            "down" | "soft-shut-down" => *on = false,
                            _ => {}
                        }
                    }
                    self.power.insert(dn.clone(), state.clone());
                    self.states.push(state.clone());
                    return format!(
                        r#"<configConfMo dn="{d}" cookie="{c}" response="yes"> <outConfig> <lsPower dn="{d}" state="{state}" status="modified"/> </outConfig> </configConfMo>"#,
                        d = esc(&dn),
                        c = esc(&cookie)
                    );
                }
                let inner = if let Some(pn) = self.profiles.get(&dn) {
                    format!(
                        r#"<lsServer dn="{}" name="{}" assocState="{}" operState="ok" pnDn="{}" type="instance" uuid="27946b59-9e44-4fa7-8e91-f3527a1ef094"/>"#,
                        esc(&dn),
                        esc(dn.rsplit("ls-").next().unwrap_or_default()),
                        if pn.is_empty() {
                            "unassociated"
                        } else {
                            "associated"
                        },
                        esc(pn)
                    )
                } else if let Some(on) = self.blades.get(&dn) {
                    format!(
                        r#"<computeBlade dn="{}" operPower="{}" operState="ok" presence="equipped" model="UCSB-B200-M4"/>"#,
                        esc(&dn),
                        if *on { "on" } else { "off" }
                    )
                } else if let Some(state) = self.power.get(&dn) {
                    format!(r#"<lsPower dn="{}" state="{}"/>"#, esc(&dn), esc(state))
                } else {
                    String::new()
                };
                format!(
                    r#"<configResolveDn dn="{}" cookie="{}" response="yes"> <outConfig> {inner} </outConfig> </configResolveDn>"#,
                    esc(&dn),
                    esc(&cookie)
                )
            }
            other => format!(
                r#"<{other} response="yes" errorCode="101" errorDescr="unknown method"> </{other}>"#
            ),
        }
    }
}

/// Serves POST /nuova with keep-alive; returns the address.
async fn start_fixture(ucs: Arc<Mutex<Ucs>>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let ucs = ucs.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut request_line = String::new();
                    if r.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let (status, reply) = if request_line.starts_with("POST /nuova ") {
                        let body = String::from_utf8_lossy(&body).into_owned();
                        ("200 OK", ucs.lock().unwrap().handle(&body))
                    } else {
                        ("404 Not Found", String::new())
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                    if w.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

fn fixture() -> Arc<Mutex<Ucs>> {
    let mut u = Ucs::default();
    u.profiles
        .insert("org-root/ls-node1".into(), "sys/chassis-1/blade-1".into());
    u.profiles.insert("org-root/ls-spare".into(), String::new());
    u.blades.insert("sys/chassis-1/blade-1".into(), false);
    Arc::new(Mutex::new(u))
}

#[tokio::test]
async fn ucsm_fixture_passes_the_battery() {
    let ucs = fixture();
    let (addr, task) = start_fixture(ucs.clone()).await;
    let params = [
        ("power_address", addr.as_str()),
        ("power_user", USER),
        ("power_pass", PASSWORD),
        ("service_profile", "org-root/ls-node1"),
    ];
    testkit::run_battery(
        &builtin_registry(),
        "ucsm",
        &params,
        &Executor::new(common::fast_config()),
    )
    .await;
    let u = ucs.lock().unwrap();
    for want in ["up", "down", "cycle-immediate", "soft-shut-down"] {
        assert!(
            u.states.iter().any(|s| s == want),
            "{want:?} never set: {:?}",
            u.states
        );
    }
    assert!(!u.blades["sys/chassis-1/blade-1"]);
    // One login for the whole battery, and the session was closed.
    assert_eq!(
        u.log.iter().filter(|m| *m == "aaaLogin").count(),
        1,
        "{:?}",
        u.log
    );
    assert_eq!(u.log.last().map(String::as_str), Some("aaaLogout"));
    assert!(u.cookies.is_empty());
    assert!(u.log.iter().any(|m| m == "configConfMo"));
    drop(u);
    task.abort();
}

#[tokio::test]
async fn ucsm_errors_and_cookie_renewal() {
    let ucs = fixture();
    let (addr, task) = start_fixture(ucs.clone()).await;
    let registry = builtin_registry();
    let ex = Executor::new(common::fast_config());
    let bind = |profile: &'static str, pass: &'static str| {
        registry
            .bind(
                "ucsm",
                [
                    ("power_address", addr.as_str()),
                    ("power_user", USER),
                    ("power_pass", pass),
                    ("service_profile", profile),
                ],
            )
            .unwrap()
    };

    let node = bind("org-root/ls-node1", PASSWORD);
    assert_eq!(
        ex.run(&node, PowerAction::On).await.unwrap().state,
        PowerState::On
    );
    // UCS Manager forgets the session (refresh period passed): the driver
    // logs in again once and carries on.
    ucs.lock().unwrap().cookies.clear();
    assert_eq!(
        ex.run(&node, PowerAction::Query).await.unwrap().state,
        PowerState::On
    );
    assert_eq!(
        ucs.lock()
            .unwrap()
            .log
            .iter()
            .filter(|m| *m == "aaaLogin")
            .count(),
        2
    );
    node.driver().close().await.unwrap();

    // Wrong password: error 551, fatal after one call.
    let wrong = bind("org-root/ls-node1", "nope");
    let err = ex.run(&wrong, PowerAction::Off).await.unwrap_err();
    maas_power::testkit::assert_fatal_auth(&err);
    assert_eq!(err.steps().len(), 1);

    // An unknown profile, and one with no blade: settings problems.
    let err = ex
        .run(&bind("org-root/ls-ghost", PASSWORD), PowerAction::Query)
        .await
        .unwrap_err();
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
    let err = ex
        .run(&bind("org-root/ls-spare", PASSWORD), PowerAction::Query)
        .await
        .unwrap_err();
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
    let err = registry
        .bind(
            "ucsm",
            [
                ("power_address", addr.as_str()),
                ("power_user", USER),
                ("power_pass", PASSWORD),
                ("service_profile", "sys/chassis-1"),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(err, PowerError::InvalidParameter { ref field, .. } if field == "service_profile"),
        "{err:?}"
    );
    task.abort();

    // Nobody listening: retryable connection errors, bounded.
    let port = common::free_port();
    let gone = format!("http://127.0.0.1:{port}");
    let node = registry
        .bind(
            "ucsm",
            [
                ("power_address", gone.as_str()),
                ("power_user", USER),
                ("power_pass", PASSWORD),
                ("service_profile", "org-root/ls-node1"),
            ],
        )
        .unwrap();
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
}
