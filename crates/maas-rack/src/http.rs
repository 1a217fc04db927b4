//! The rack's HTTP server (port 5248 in MAAS): boot images from the image
//! cache, boot configs for HTTP-booting loaders (iPXE, UEFI HTTP), boot
//! loaders, and `/MAAS/...` passed through to the region, so machines only
//! ever talk to their rack.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use maas_images::BootFileService;

use crate::RackStats;
use crate::boot::BootFiles;

/// The largest request body passed on to the region (a commissioning
/// upload of script output).
const MAX_PROXY_BODY: usize = 64 << 20;

#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) boot: BootFiles,
    pub(crate) files: BootFileService,
    pub(crate) region: String,
    pub(crate) client: reqwest::Client,
    pub(crate) stats: Arc<RackStats>,
}

pub(crate) fn router(state: HttpState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

fn plain(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Body::from(text.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response<Body> {
    s.stats.bump(&s.stats.http_requests);
    let path = req.uri().path().to_owned();
    if path.starts_with("/MAAS/") {
        return proxy(&s, peer, req).await;
    }
    if path.starts_with("/images/") {
        let resp = s.files.respond(req.method(), &path, req.headers());
        let (parts, body) = resp.into_parts();
        return Response::from_parts(parts, Body::new(body));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD here\n");
    }
    let local = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.parse::<SocketAddr>()
                .ok()
                .map(|a| a.ip())
                .or_else(|| h.parse().ok())
        })
        .unwrap_or(peer.ip());
    if let Some(rendered) = s.boot.render(&path, local, peer, "http").await {
        return match rendered {
            Ok(text) => plain(StatusCode::OK, text),
            Err(e) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        };
    }
    if let Some(dir) = &s.boot.loaders {
        let fr = maas_tftp::FileRequest {
            peer,
            local: SocketAddr::new(local, 0),
            path: path.trim_start_matches('/'),
        };
        if let Ok(f) = maas_tftp::FileProvider::open(dir.as_ref(), &fr).await {
            let mut bytes = Vec::new();
            let mut reader = f.reader;
            if tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut bytes)
                .await
                .is_ok()
            {
                let mut r = Response::new(Body::from(bytes));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/octet-stream"),
                );
                return r;
            }
        }
    }
    plain(StatusCode::NOT_FOUND, format!("{path}: not found\n"))
}

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
    )
}

async fn proxy(s: &HttpState, peer: SocketAddr, req: Request<Body>) -> Response<Body> {
    s.stats.bump(&s.stats.proxied);
    let (parts, body) = req.into_parts();
    let target = format!(
        "{}{}",
        s.region.trim_end_matches('/'),
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let body = match http_body_util::Limited::new(body, MAX_PROXY_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body: {e}\n"),
            );
        }
    };
    let mut headers = HeaderMap::new();
    for (k, v) in &parts.headers {
        if !hop_by_hop(k) {
            headers.append(k.clone(), v.clone());
        }
    }
    // The region builds the URLs it hands out from the Host header: keep
    // the rack's, so machines keep talking to their rack.
    if let Ok(v) = peer.ip().to_string().parse() {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    let sent = s
        .client
        .request(parts.method, &target)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(r) => r,
        Err(e) => {
            s.stats.bump(&s.stats.proxy_errors);
            tracing::warn!(%target, error = %e, "region unreachable");
            return plain(
                StatusCode::BAD_GATEWAY,
                "the region controller cannot be reached\n",
            );
        }
    };
    let status = upstream.status();
    let mut out = HeaderMap::new();
    for (k, v) in upstream.headers() {
        if !hop_by_hop(k) {
            out.append(k.clone(), v.clone());
        }
    }
    let bytes = match upstream.bytes().await {
        Ok(b) => b,
        Err(e) => {
            s.stats.bump(&s.stats.proxy_errors);
            return plain(StatusCode::BAD_GATEWAY, format!("region reply: {e}\n"));
        }
    };
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    *r.headers_mut() = out;
    r
}
