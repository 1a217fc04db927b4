//! The rack protocol over HTTP: [`HttpRegionLink`] speaks to a region's
//! `/MAAS/rpc/rack/v1/` (see `maas-region`'s `rackrpc` module for the
//! calls), and [`serve_power`] carries out the power jobs the region
//! queues for racks.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use maas_core::MacAddress;
use maas_core::machine::{Machine, PowerState};
use maas_core::rack::{
    BootHost, LinkError, PowerRequest, RackConfig, RackControl, RackCredentials, RackReport,
    RegionLink, Registration,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A region reached over HTTP.
#[derive(Clone)]
pub struct HttpRegionLink {
    base: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpRegionLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRegionLink")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The longest a long poll is asked to wait (the region caps it at 60 s).
const POLL: Duration = Duration::from_secs(25);

impl HttpRegionLink {
    /// The region at `url` (`http://10.0.0.1:5240`).
    pub fn new(url: &str) -> Self {
        HttpRegionLink {
            base: format!("{}/MAAS/rpc/rack/v1/", url.trim_end_matches('/')),
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(POLL + Duration::from_secs(35))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        rack: Option<&RackCredentials>,
        body: Option<serde_json::Value>,
    ) -> Result<Option<T>, LinkError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.client.request(method, &url);
        if let Some(c) = rack {
            req = req.header("Authorization", format!("Rack {} {}", c.system_id, c.token));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| LinkError::Unavailable(format!("{url}: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let text = resp
            .text()
            .await
            .map_err(|e| LinkError::Unavailable(format!("{url}: {e}")))?;
        match status.as_u16() {
            200 => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| LinkError::Unavailable(format!("{url}: unreadable answer: {e}"))),
            401 | 403 => Err(LinkError::Unauthorized(text)),
            409 => Err(LinkError::Unavailable(format!("{url}: {text}"))),
            _ => Err(LinkError::Unavailable(format!("{url}: {status}: {text}"))),
        }
    }
}

#[async_trait]
impl RegionLink for HttpRegionLink {
    async fn register(&self, registration: &Registration) -> Result<RackCredentials, LinkError> {
        let body = serde_json::to_value(registration)
            .map_err(|e| LinkError::Unavailable(e.to_string()))?;
        self.call(reqwest::Method::POST, "register", None, Some(body))
            .await?
            .ok_or_else(|| LinkError::Unavailable("register: no answer".into()))
    }

    async fn config(
        &self,
        rack: &RackCredentials,
        known: Option<u64>,
        wait: Duration,
    ) -> Result<RackConfig, LinkError> {
        let wait = wait.min(POLL);
        let body = json!({"known": known, "wait_ms": wait.as_millis() as u64});
        self.call(reqwest::Method::POST, "config", Some(rack), Some(body))
            .await?
            .ok_or_else(|| LinkError::Unavailable("config: no answer".into()))
    }

    async fn boot_host(
        &self,
        rack: &RackCredentials,
        mac: MacAddress,
    ) -> Result<Option<BootHost>, LinkError> {
        Ok(self
            .call::<Option<BootHost>>(
                reqwest::Method::GET,
                &format!("boot-host/{mac}"),
                Some(rack),
                None,
            )
            .await?
            .flatten())
    }

    async fn report(
        &self,
        rack: &RackCredentials,
        reports: Vec<RackReport>,
    ) -> Result<(), LinkError> {
        let body =
            serde_json::to_value(reports).map_err(|e| LinkError::Unavailable(e.to_string()))?;
        self.call::<serde_json::Value>(reqwest::Method::POST, "report", Some(rack), Some(body))
            .await
            .map(|_| ())
    }
}

#[derive(Deserialize)]
struct PowerJob {
    id: u64,
    machine: Machine,
    request: PowerRequest,
}

#[derive(Serialize)]
struct PowerResult {
    id: u64,
    result: Result<PowerState, String>,
}

/// Takes the region's power jobs and carries them out with `power`, until
/// the task is dropped. Waits for the rack's credentials; reconnects with
/// backoff.
pub async fn serve_power(
    link: HttpRegionLink,
    rack: Arc<crate::Rack>,
    power: Arc<dyn RackControl>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut creds = rack.credentials.clone();
    loop {
        let me = match creds.wait_for(|c| c.is_some()).await {
            Ok(c) => c.clone(),
            Err(_) => return,
        };
        let Some(me) = me else { return };
        let job = link
            .call::<Option<PowerJob>>(
                reqwest::Method::POST,
                "power/next",
                Some(&me),
                Some(json!({"wait_ms": POLL.as_millis() as u64})),
            )
            .await;
        let job = match job {
            Ok(j) => {
                backoff = Duration::from_millis(100);
                j.flatten()
            }
            Err(e) => {
                tracing::debug!(error = %e, "power jobs: region unavailable");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        let Some(job) = job else { continue };
        let (link, power, me) = (link.clone(), power.clone(), me.clone());
        // Jobs run side by side; the executor limits concurrency per BMC.
        tokio::spawn(async move {
            let result = power
                .power(&job.machine, job.request)
                .await
                .map_err(|e| e.to_string());
            let body = serde_json::to_value(PowerResult { id: job.id, result }).unwrap_or_default();
            for _ in 0..5 {
                match link
                    .call::<serde_json::Value>(
                        reqwest::Method::POST,
                        "power/result",
                        Some(&me),
                        Some(body.clone()),
                    )
                    .await
                {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot report a power result; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
}
