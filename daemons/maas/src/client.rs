//! A small client of the REST API 2.0 (OAuth 1.0a PLAINTEXT with an API
//! key), as the CLI and the demo use it.

use anyhow::{Context, bail};
use serde_json::Value;

/// The REST API at one URL with one API key.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    consumer: String,
    token: String,
    secret: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `k=v&...`, percent-encoded.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl ApiClient {
    /// `url` is the MAAS URL (`http://host:5240/MAAS`), `key` the API key
    /// (`consumer:token:secret`).
    pub fn new(url: &str, key: &str) -> anyhow::Result<ApiClient> {
        let mut parts = key.splitn(3, ':');
        let (Some(consumer), Some(token), Some(secret)) =
            (parts.next(), parts.next(), parts.next())
        else {
            bail!("the API key must be consumer:token:secret");
        };
        Ok(ApiClient {
            base: format!("{}/api/2.0/", url.trim_end_matches('/')),
            consumer: consumer.to_owned(),
            token: token.to_owned(),
            secret: secret.to_owned(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(300))
                .build()
                .context("HTTP client")?,
        })
    }

    fn auth(&self) -> String {
        format!(
            "OAuth oauth_version=\"1.0\", oauth_signature_method=\"PLAINTEXT\", oauth_consumer_key=\"{}\", oauth_token=\"{}\", oauth_signature=\"%26{}\", oauth_nonce=\"{:016x}\", oauth_timestamp=\"{}\"",
            self.consumer,
            self.token,
            self.secret,
            rand::random::<u64>(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        )
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.base, path.trim_start_matches('/'));
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("Authorization", self.auth())
            .header("Accept", "application/json");
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {url}: {status}: {}", text.trim());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// `GET <path>` (relative to `api/2.0/`).
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// `POST <path>` with a form.
    pub async fn post(&self, path: &str, pairs: &[(&str, &str)]) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, Some(form(pairs)))
            .await
    }

    /// `PUT <path>` with a form.
    pub async fn put(&self, path: &str, pairs: &[(&str, &str)]) -> anyhow::Result<Value> {
        self.send(reqwest::Method::PUT, path, Some(form(pairs)))
            .await
    }
}
