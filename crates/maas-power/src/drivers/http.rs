//! What the HTTP drivers (Redfish, webhook) share: the client and the
//! mapping of HTTP failures to [`PowerError`]s.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::error::PowerError;

/// The clients one factory's drivers share, one per TLS policy and
/// timeout: a driver bound per action then reuses pooled connections and
/// does not load the platform's root certificates again (measured: about
/// 4 ms of CPU per Redfish query without sharing, 0.3 ms with; see
/// `docs/BENCHMARKS.md`). Pooled connections belong to the tokio runtime
/// that opened them, so a factory (a registry) serves one runtime.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientCache(Arc<Mutex<Vec<(bool, Duration, reqwest::Client)>>>);

impl ClientCache {
    /// The shared client for this policy, built on first use.
    pub(crate) fn get(
        &self,
        accept_invalid_certs: bool,
        timeout: Duration,
    ) -> Result<reqwest::Client, PowerError> {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, _, c)) = all
            .iter()
            .find(|(a, t, _)| *a == accept_invalid_certs && *t == timeout)
        {
            return Ok(c.clone());
        }
        let c = client(accept_invalid_certs, timeout)?;
        all.push((accept_invalid_certs, timeout, c.clone()));
        Ok(c)
    }
}

/// A client for one BMC. Redirects are not followed across hosts by
/// reqwest's default policy with credentials; TLS verification is on
/// unless `accept_invalid_certs`.
pub(crate) fn client(
    accept_invalid_certs: bool,
    timeout: Duration,
) -> Result<reqwest::Client, PowerError> {
    reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(accept_invalid_certs)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| PowerError::Connection {
            target: "(client setup)".into(),
            source: Box::new(e.without_url()),
        })
}

/// A transport error as a [`PowerError`]: an untrusted certificate is
/// fatal, everything else is a retryable connection error. The URL is
/// dropped from the error (it may carry a path the operator considers
/// private); the target names the BMC.
pub(crate) fn transport_error(target: &str, e: reqwest::Error) -> PowerError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    let mut tls = false;
    while let Some(err) = cur {
        let msg = err.to_string().to_ascii_lowercase();
        if msg.contains("certificate") || msg.contains("unknownissuer") {
            tls = true;
        }
        cur = err.source();
    }
    let e = e.without_url();
    if tls {
        PowerError::Tls {
            target: target.to_owned(),
            source: Box::new(e),
        }
    } else {
        PowerError::Connection {
            target: target.to_owned(),
            source: Box::new(e),
        }
    }
}

/// An HTTP status that is not success, as a [`PowerError`].
pub(crate) fn status_error(
    target: &str,
    operation: &str,
    status: reqwest::StatusCode,
    body: &str,
) -> PowerError {
    let detail = format!("HTTP {status}{}", summary(body));
    match status.as_u16() {
        401 | 403 => PowerError::Auth {
            target: target.to_owned(),
        },
        404 => PowerError::NotFound {
            target: target.to_owned(),
            what: format!("resource for {operation} ({detail})"),
        },
        501 => PowerError::Unsupported {
            driver: target.to_owned(),
            operation: format!("{operation} ({detail})"),
        },
        400..=499 => PowerError::Refused {
            target: target.to_owned(),
            operation: operation.to_owned(),
            detail,
        },
        _ => PowerError::Action {
            target: target.to_owned(),
            operation: operation.to_owned(),
            detail,
        },
    }
}

/// The first line of a body, shortened: enough to tell what went wrong.
fn summary(body: &str) -> String {
    // Redfish errors carry a message; show it if there is one.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body)
        && let Some(m) = v.pointer("/error/message").and_then(|m| m.as_str())
    {
        return format!(": {}", shorten(m));
    }
    let line = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.is_empty() {
        String::new()
    } else {
        format!(": {}", shorten(line))
    }
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(160).collect();
    if s.chars().count() > 160 {
        out.push_str("...");
    }
    out
}
