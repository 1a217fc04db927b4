//! Where a stream comes from: an HTTP(S) mirror or a local directory (a
//! mirror on disk, or a tree the builder wrote).

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::error::ImageError;
use crate::streams::{INDEX_PATH, SIGNED_INDEX_PATH};

/// Bytes read from a local source per chunk.
const LOCAL_CHUNK: usize = 1 << 20;

/// A stream's root.
#[derive(Debug, Clone)]
pub enum StreamSource {
    /// An HTTP(S) mirror; `base` ends with `/` and is the directory that
    /// holds `streams/`.
    Http {
        /// The root URL.
        base: String,
        /// The client (timeouts, TLS roots) every request uses.
        client: reqwest::Client,
    },
    /// A directory that holds `streams/`.
    Directory(PathBuf),
}

/// A file body being read, from some offset.
pub(crate) struct Opened {
    /// Whether the source honoured the offset (an HTTP server may answer a
    /// Range request with the whole file).
    pub(crate) from_offset: bool,
    pub(crate) chunks: Pin<Box<dyn Stream<Item = Result<Bytes, ImageError>> + Send>>,
}

impl StreamSource {
    /// `http://` and `https://` are mirrors, anything else a directory. A URL
    /// or path that names the index itself (`.../streams/v1/index.sjson`) is
    /// taken to mean its root.
    pub fn parse(location: &str) -> Result<Self, ImageError> {
        let trimmed = [SIGNED_INDEX_PATH, INDEX_PATH]
            .iter()
            .find_map(|idx| location.strip_suffix(idx))
            .unwrap_or(location);
        if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
            Self::http(trimmed)
        } else {
            Ok(Self::Directory(PathBuf::from(trimmed)))
        }
    }

    /// An HTTP(S) mirror with a default client: 30 s to connect, 60 s
    /// without a byte before a transfer counts as failed.
    pub fn http(base: &str) -> Result<Self, ImageError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| ImageError::Transfer {
                url: base.to_owned(),
                source,
            })?;
        Ok(Self::http_with_client(base, client))
    }

    /// An HTTP(S) mirror with the caller's client.
    pub fn http_with_client(base: &str, client: reqwest::Client) -> Self {
        let mut base = base.to_owned();
        if !base.ends_with('/') {
            base.push('/');
        }
        Self::Http { base, client }
    }

    /// A local directory.
    pub fn directory(root: impl Into<PathBuf>) -> Self {
        Self::Directory(root.into())
    }

    /// Where `path` is, for messages.
    pub fn describe(&self, path: &str) -> String {
        match self {
            Self::Http { base, .. } => format!("{base}{path}"),
            Self::Directory(root) => root.join(path).display().to_string(),
        }
    }

    /// A metadata document as text; `None` when the source does not have it
    /// (HTTP 404, no such file). `path` was checked by the caller.
    pub(crate) async fn read_text(&self, path: &str) -> Result<Option<String>, ImageError> {
        match self {
            Self::Directory(root) => {
                let p = root.join(path);
                match tokio::fs::read(&p).await {
                    Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(ImageError::io(p, e)),
                }
            }
            Self::Http { base, client } => {
                let url = format!("{base}{path}");
                let transfer = |source| ImageError::Transfer {
                    url: url.clone(),
                    source,
                };
                let resp = client.get(&url).send().await.map_err(transfer)?;
                let status = resp.status();
                if status == reqwest::StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                if !status.is_success() {
                    return Err(ImageError::HttpStatus {
                        url,
                        status: status.as_u16(),
                    });
                }
                let body = resp.bytes().await.map_err(transfer)?;
                Ok(Some(String::from_utf8_lossy(&body).into_owned()))
            }
        }
    }

    /// Opens a file to read from `offset`.
    pub(crate) async fn open(&self, path: &str, offset: u64) -> Result<Opened, ImageError> {
        match self {
            Self::Directory(root) => open_local(root.join(path), offset).await,
            Self::Http { base, client } => {
                let url = format!("{base}{path}");
                let transfer = |source| ImageError::Transfer {
                    url: url.clone(),
                    source,
                };
                let mut req = client.get(&url);
                if offset > 0 {
                    req = req.header(http::header::RANGE, format!("bytes={offset}-"));
                }
                let resp = req.send().await.map_err(transfer)?;
                let status = resp.status();
                let from_offset = if offset == 0 {
                    true
                } else if status == reqwest::StatusCode::PARTIAL_CONTENT {
                    // Only trust a 206 whose range starts where we asked.
                    content_range_start(resp.headers()) == Some(offset)
                } else {
                    false
                };
                if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
                    // The partial file is longer than the server's: start over.
                    return Box::pin(self.open(path, 0)).await;
                }
                if !status.is_success() {
                    return Err(ImageError::HttpStatus {
                        url,
                        status: status.as_u16(),
                    });
                }
                if offset > 0 && !from_offset && status == reqwest::StatusCode::PARTIAL_CONTENT {
                    // A 206 for some other range: ask for the whole file.
                    return Box::pin(self.open(path, 0)).await;
                }
                let url2 = url.clone();
                let chunks = resp.bytes_stream().map(move |r| {
                    r.map_err(|source| ImageError::Transfer {
                        url: url2.clone(),
                        source,
                    })
                });
                Ok(Opened {
                    from_offset,
                    chunks: Box::pin(chunks),
                })
            }
        }
    }
}

fn content_range_start(headers: &http::HeaderMap) -> Option<u64> {
    let v = headers.get(http::header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

async fn open_local(path: PathBuf, offset: u64) -> Result<Opened, ImageError> {
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ImageError::io(&path, e))?;
    if offset > 0 {
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| ImageError::io(&path, e))?;
    }
    let chunks = futures_util::stream::unfold(Some((file, path)), |state| async move {
        let (mut file, path) = state?;
        let mut buf = vec![0u8; LOCAL_CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some((file, path))))
            }
            Err(e) => Some((Err(ImageError::io(&path, e)), None)),
        }
    });
    Ok(Opened {
        from_offset: true,
        chunks: Box::pin(chunks),
    })
}

/// `path` with `.json` replaced by `.sjson` (the signed twin).
pub(crate) fn signed_twin(path: &str) -> String {
    match path.strip_suffix(".json") {
        Some(stem) => format!("{stem}.sjson"),
        None => path.to_owned(),
    }
}

/// `path` with `.sjson` replaced by `.json`.
pub(crate) fn unsigned_twin(path: &str) -> String {
    match path.strip_suffix(".sjson") {
        Some(stem) => format!("{stem}.json"),
        None => path.to_owned(),
    }
}
