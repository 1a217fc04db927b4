//! The webhook driver against a small HTTP endpoint on loopback (a webhook
//! target is any HTTP server: this one keeps a power state and records the
//! requests), and the secret-in-logs check on a failing action.

mod common;

use std::sync::{Arc, Mutex};

use maas_power::{Executor, ExecutorError, PowerAction, PowerError, PowerState, builtin_registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PASSWORD: &str = "webhook-s3cret";
/// base64("admin:webhook-s3cret")
const BASIC: &str = "Basic YWRtaW46d2ViaG9vay1zM2NyZXQ=";

#[derive(Default)]
struct Endpoint {
    on: bool,
    /// (method, path) of every request
    seen: Vec<(String, String)>,
}

async fn serve() -> (u16, Arc<Mutex<Endpoint>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let ep = Arc::new(Mutex::new(Endpoint::default()));
    let shared = ep.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let ep = shared.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let mut words = head.split_whitespace();
                let method = words.next().unwrap_or("").to_owned();
                let path = words.next().unwrap_or("").to_owned();
                let authorized = head.lines().any(|l| {
                    l.to_ascii_lowercase().starts_with("authorization:") && l[14..].trim() == BASIC
                });
                let (status, body) = {
                    let mut ep = ep.lock().unwrap();
                    ep.seen.push((method.clone(), path.clone()));
                    if !authorized {
                        ("401 Unauthorized", String::new())
                    } else {
                        match (method.as_str(), path.as_str()) {
                            ("POST", "/machines/node-7/on") => {
                                ep.on = true;
                                ("200 OK", String::new())
                            }
                            ("POST", "/machines/node-7/off") => {
                                ep.on = false;
                                ("200 OK", String::new())
                            }
                            ("GET", "/machines/node-7/status") => (
                                "200 OK",
                                format!(
                                    "{{\"status\": \"{}\"}}",
                                    if ep.on { "running" } else { "stopped" }
                                ),
                            ),
                            ("GET", "/broken") => ("200 OK", "{\"status\": \"sideways\"}".into()),
                            _ => ("404 Not Found", String::new()),
                        }
                    }
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, ep)
}

fn params(port: u16, pass: &str, query: &str) -> Vec<(String, String)> {
    let base = format!("http://127.0.0.1:{port}");
    vec![
        (
            "power_on_uri".into(),
            format!("{base}/machines/{{node_id}}/on"),
        ),
        (
            "power_off_uri".into(),
            format!("{base}/machines/{{node_id}}/off"),
        ),
        ("power_query_uri".into(), format!("{base}{query}")),
        ("power_user".into(), "admin".into()),
        ("power_pass".into(), pass.into()),
        ("node_id".into(), "node-7".into()),
    ]
}

fn bind(p: &[(String, String)]) -> maas_power::BoundDriver {
    builtin_registry()
        .bind("webhook", p.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .unwrap()
}

#[tokio::test]
async fn webhook_on_off_query_through_templated_urls() {
    let (port, ep) = serve().await;
    let node = bind(&params(port, PASSWORD, "/machines/{node_id}/status"));
    let ex = Executor::new(common::fast_config());
    assert_eq!(
        ex.run(&node, PowerAction::Query).await.unwrap().state,
        PowerState::Off
    );
    let r = ex.run(&node, PowerAction::On).await.unwrap();
    assert_eq!(r.state, PowerState::On);
    assert!(ep.lock().unwrap().on);
    let r = ex.run(&node, PowerAction::Off).await.unwrap();
    assert_eq!(r.state, PowerState::Off);
    let seen = ep.lock().unwrap().seen.clone();
    let expect = [
        ("GET", "/machines/node-7/status"),
        ("GET", "/machines/node-7/status"),
        ("POST", "/machines/node-7/on"),
        ("GET", "/machines/node-7/status"),
        ("GET", "/machines/node-7/status"),
        ("POST", "/machines/node-7/off"),
        ("GET", "/machines/node-7/status"),
    ];
    let seen: Vec<(&str, &str)> = seen.iter().map(|(m, p)| (m.as_str(), p.as_str())).collect();
    assert_eq!(seen, expect);
}

#[tokio::test]
async fn webhook_reply_matching_no_regex_is_an_error_after_retries() {
    let (port, _ep) = serve().await;
    let node = bind(&params(port, PASSWORD, "/broken"));
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
}

/// A failing action with a password, with every tracing event at TRACE
/// captured (the bound driver's `Debug` logged on purpose): the password
/// and the Basic header built from it appear nowhere in the logs, the
/// error or the step record.
#[tokio::test]
async fn secrets_never_reach_the_logs_of_a_failing_action() {
    let captured = common::Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _g = tracing::subscriber::set_default(subscriber);

    let secret = "Tr0ub4dor-never-logged";
    let (port, _ep) = serve().await;
    let node = bind(&params(port, secret, "/machines/{node_id}/status"));
    tracing::info!(?node, "bound");
    let err = Executor::new(common::fast_config())
        .run(&node, PowerAction::On)
        .await
        .unwrap_err();
    maas_power::testkit::assert_fatal_auth(&err);
    tracing::error!(error = %err, debug = ?err, "action failed");

    let logs = captured.text();
    // The capture works: the failure and the parameter names are there.
    assert!(logs.contains("power action failed"), "{logs}");
    assert!(logs.contains("power_pass"), "{logs}");
    // base64("admin:" + secret) as reqwest would send it
    let basic = "YWRtaW46VHIwdWI0ZG9yLW5ldmVyLWxvZ2dlZA";
    for text in [
        &logs,
        &format!("{err:?} {err}"),
        &format!("{:?}", err.steps()),
    ] {
        assert!(!text.contains(secret), "secret leaked: {text}");
        assert!(!text.contains(basic), "auth header leaked: {text}");
    }
}
