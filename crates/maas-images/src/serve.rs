//! Boot-file HTTP serving: a `tower` service over the store that a rack
//! mounts on its HTTP port (5248), in axum or any hyper-based server.
//!
//! Paths (under a prefix, `/images/` by default):
//!
//! - `<os>/<arch>/<subarch>/<release>/<label>/<ftype>`: the paths the boot
//!   configs of `maas-boot` reference, resolved against the current
//!   generation on every request. `Cache-Control: no-cache`: the name can
//!   move to new bytes, so clients revalidate with the `ETag`.
//! - `by-digest/<sha256>`: one file forever (`immutable`); any file in the
//!   store, so a boot that started on the previous generation finishes.
//! - `streams/v1/index.json` and `streams/v1/store.json`: the current
//!   generation as an (unsigned) SimpleStreams tree whose items point at
//!   `by-digest/...`, so a rack syncs from the region with the same client
//!   it uses for public mirrors.
//!
//! GET and HEAD; one byte range per request (`bytes=a-b`, `a-`, `-n`; a
//! multi-range request gets the whole file, as RFC 9110 allows); `ETag` is
//! the quoted sha256; `If-None-Match` answers 304; `If-Range` with another
//! tag gets the whole file.
//!
//! No sendfile: hyper owns the socket and takes the body as a stream of
//! buffers, and this workspace forbids `unsafe`, so zero-copy is not
//! reachable here. Files are read with positioned reads (`pread`) on the
//! blocking pool in large chunks (1 MiB by default), the next chunk read
//! while the previous one is written, which keeps a loopback client close to
//! a sendfile server (see `docs/BENCHMARKS.md`).

use std::convert::Infallible;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::store::{ImageStore, Manifest};

/// Default bytes per read.
pub const DEFAULT_CHUNK: usize = 1 << 20;

/// The boot-file service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BootFileService {
    store: ImageStore,
    prefix: Arc<str>,
    chunk: usize,
}

impl BootFileService {
    /// Serves `store` under `/images/`.
    pub fn new(store: ImageStore) -> Self {
        Self {
            store,
            prefix: Arc::from("/images/"),
            chunk: DEFAULT_CHUNK,
        }
    }

    /// Serves under another prefix (`/` for the root); it ends with `/`.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        let mut p = prefix.to_owned();
        if !p.starts_with('/') {
            p.insert(0, '/');
        }
        if !p.ends_with('/') {
            p.push('/');
        }
        self.prefix = Arc::from(p);
        self
    }

    /// Bytes read from disk per chunk (at least 4 KiB).
    pub fn with_chunk_size(mut self, chunk: usize) -> Self {
        self.chunk = chunk.max(4096);
        self
    }

    /// Answers one request.
    pub fn respond(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<FileBody> {
        let started = std::time::Instant::now();
        let resp = self.answer(method, path, headers);
        tracing::debug!(
            %method, path, status = resp.status().as_u16(),
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "boot file request"
        );
        resp
    }

    fn answer(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response<FileBody> {
        if method != Method::GET && method != Method::HEAD {
            let mut r = status(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let Some(rest) = path.strip_prefix(&*self.prefix) else {
            return status(StatusCode::NOT_FOUND, "not found\n");
        };
        let manifest = match self.store.current() {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the current image set");
                return status(StatusCode::SERVICE_UNAVAILABLE, "image store unavailable\n");
            }
        };
        if let Some(doc) = rest.strip_prefix("streams/v1/") {
            return stream_document(&manifest, doc, method);
        }
        let (sha256, content_type, immutable) = if let Some(d) = rest.strip_prefix("by-digest/") {
            let valid = d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit());
            if !valid || !self.store.has_blob(d) {
                return status(StatusCode::NOT_FOUND, "no such file\n");
            }
            let ct = manifest
                .by_digest(d)
                .map_or("application/octet-stream", |f| f.ftype.content_type());
            (d.to_owned(), ct, true)
        } else {
            match manifest.boot_file(rest) {
                Some(f) => (f.sha256.clone(), f.ftype.content_type(), false),
                None => return status(StatusCode::NOT_FOUND, "no such boot file\n"),
            }
        };
        let path = self.store.blob_path(&sha256);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "blob missing");
                return status(StatusCode::NOT_FOUND, "no such file\n");
            }
        };
        let len = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot stat blob");
                return status(StatusCode::INTERNAL_SERVER_ERROR, "cannot read file\n");
            }
        };
        let etag = format!("\"{sha256}\"");
        let mut builder = Response::builder()
            .header(header::ETAG, &etag)
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::CONTENT_TYPE, content_type)
            .header(
                header::CACHE_CONTROL,
                if immutable {
                    "public, max-age=31536000, immutable"
                } else {
                    "no-cache"
                },
            );
        if let Some(inm) = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            && etag_matches(inm, &etag)
        {
            return builder
                .status(StatusCode::NOT_MODIFIED)
                .body(FileBody::empty())
                .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR, ""));
        }
        let range_allowed = headers
            .get(header::IF_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim() == etag);
        let range = headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .filter(|_| range_allowed)
            .map_or(RangeDecision::Whole, |h| parse_range(h, len));
        let (code, start, count) = match range {
            RangeDecision::Whole => (StatusCode::OK, 0, len),
            RangeDecision::Part(a, b) => {
                builder = builder.header(header::CONTENT_RANGE, format!("bytes {a}-{b}/{len}"));
                (StatusCode::PARTIAL_CONTENT, a, b - a + 1)
            }
            RangeDecision::Unsatisfiable => {
                let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE, "");
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return r;
            }
        };
        let body = if method == Method::HEAD {
            FileBody::empty()
        } else {
            FileBody::file(file, start, count, self.chunk)
        };
        builder
            .status(code)
            .header(header::CONTENT_LENGTH, count)
            .body(body)
            .unwrap_or_else(|_| status(StatusCode::INTERNAL_SERVER_ERROR, ""))
    }
}

fn status(code: StatusCode, text: &'static str) -> Response<FileBody> {
    let mut r = Response::new(FileBody::bytes(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn stream_document(manifest: &Manifest, doc: &str, method: &Method) -> Response<FileBody> {
    let value = match doc {
        "index.json" => crate::export::index_json(manifest),
        "store.json" => crate::export::products_json(manifest),
        _ => return status(StatusCode::NOT_FOUND, "no such stream document\n"),
    };
    let bytes = Bytes::from(serde_json::to_vec_pretty(&value).unwrap_or_default());
    let len = bytes.len();
    let body = if method == Method::HEAD {
        FileBody::empty()
    } else {
        FileBody::bytes(bytes)
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}

fn etag_matches(header_value: &str, etag: &str) -> bool {
    header_value
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

#[derive(Debug, PartialEq, Eq)]
enum RangeDecision {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// One `Range` header against a length. Syntax this server does not take
/// (other units, several ranges, garbage) means the whole file.
fn parse_range(h: &str, len: u64) -> RangeDecision {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeDecision::Whole;
    };
    if spec.contains(',') {
        return RangeDecision::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeDecision::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return RangeDecision::Whole;
        };
        if n == 0 || len == 0 {
            return RangeDecision::Unsatisfiable;
        }
        return RangeDecision::Part(len.saturating_sub(n), len - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeDecision::Whole;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeDecision::Whole,
        }
    };
    if start >= len {
        return RangeDecision::Unsatisfiable;
    }
    RangeDecision::Part(start, end.min(len - 1))
}

impl<B> tower_service::Service<http::Request<B>> for BootFileService {
    type Response = Response<FileBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let resp = self.respond(req.method(), req.uri().path(), req.headers());
        Box::pin(std::future::ready(Ok(resp)))
    }
}

/// A response body: nothing, a buffer, or a byte range of a file read in
/// chunks on the blocking pool.
#[derive(Debug)]
pub struct FileBody {
    state: BodyState,
}

#[derive(Debug)]
enum BodyState {
    Empty,
    Bytes(Option<Bytes>),
    File {
        file: Arc<std::fs::File>,
        /// Where the next read starts.
        offset: u64,
        /// Bytes not yet asked for.
        unread: u64,
        /// Bytes not yet handed out.
        remaining: u64,
        chunk: usize,
        pending: Option<tokio::task::JoinHandle<std::io::Result<Bytes>>>,
    },
}

impl FileBody {
    /// No body.
    pub fn empty() -> Self {
        Self {
            state: BodyState::Empty,
        }
    }

    /// A body from memory.
    pub fn bytes(b: Bytes) -> Self {
        Self {
            state: BodyState::Bytes(Some(b)),
        }
    }

    /// `count` bytes of `file` from `start`, read `chunk` bytes at a time.
    pub fn file(file: std::fs::File, start: u64, count: u64, chunk: usize) -> Self {
        Self {
            state: BodyState::File {
                file: Arc::new(file),
                offset: start,
                unread: count,
                remaining: count,
                chunk: chunk.max(4096),
                pending: None,
            },
        }
    }
}

fn start_read(
    file: &Arc<std::fs::File>,
    offset: &mut u64,
    unread: &mut u64,
    chunk: usize,
) -> tokio::task::JoinHandle<std::io::Result<Bytes>> {
    let n = usize::try_from(*unread).unwrap_or(usize::MAX).min(chunk);
    let f = file.clone();
    let at = *offset;
    *offset += n as u64;
    *unread -= n as u64;
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; n];
        f.read_exact_at(&mut buf, at)?;
        Ok(Bytes::from(buf))
    })
}

impl Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match &mut self.state {
            BodyState::Empty => Poll::Ready(None),
            BodyState::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            BodyState::File {
                file,
                offset,
                unread,
                remaining,
                chunk,
                pending,
            } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let handle =
                    pending.get_or_insert_with(|| start_read(file, offset, unread, *chunk));
                let result = match Pin::new(handle).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                *pending = None;
                let bytes = match result {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Err(e) => return Poll::Ready(Some(Err(std::io::Error::other(e)))),
                };
                *remaining -= bytes.len() as u64;
                // Read the next chunk while this one goes to the socket.
                if *unread > 0 {
                    *pending = Some(start_read(file, offset, unread, *chunk));
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            BodyState::Empty => true,
            BodyState::Bytes(b) => b.is_none(),
            BodyState::File { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            BodyState::Empty => SizeHint::with_exact(0),
            BodyState::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            BodyState::File { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

impl Drop for FileBody {
    fn drop(&mut self) {
        if let BodyState::File {
            pending: Some(h), ..
        } = &self.state
        {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeDecision::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=90-1000", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), Part(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 100), Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Whole);
        assert_eq!(parse_range("items=0-1", 100), Whole);
        assert_eq!(parse_range("bytes=x-", 100), Whole);
    }

    #[test]
    fn etags() {
        assert!(etag_matches("\"a\"", "\"a\""));
        assert!(etag_matches("\"b\", W/\"a\"", "\"a\""));
        assert!(etag_matches("*", "\"a\""));
        assert!(!etag_matches("\"b\"", "\"a\""));
    }
}
