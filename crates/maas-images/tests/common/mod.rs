//! Shared test helpers: stream fixtures, HTTP servers on loopback, peers.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use maas_images::{
    BootFileService, BuildImage, FileType, ImageKey, ImageStore, StreamBuilder, StreamSigningKey,
};

/// A missing tool skips its test with a printed reason, except under
/// `CI=true`, where `.ci/run` installs it and a skip is a failure.
pub fn skip_or_fail(what: &str) {
    let msg = format!(
        "SKIPPED {}: {what}",
        std::thread::current().name().unwrap_or("test")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}; under CI a skipped peer test is a failure");
    }
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// The path of a program, or `None` (after [`skip_or_fail`]).
pub fn tool(name: &str) -> Option<PathBuf> {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Some(p);
        }
    }
    skip_or_fail(&format!("{name} is not installed"));
    None
}

/// Deterministic bytes: `tag` then a xorshift sequence seeded by it.
pub fn content(tag: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(tag.as_bytes());
    let mut x: u64 = tag.bytes().fold(0x9e37_79b9_7f4a_7c15, |a, b| {
        a.rotate_left(5) ^ u64::from(b)
    });
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn noble() -> ImageKey {
    ImageKey {
        os: "ubuntu".into(),
        release: "noble".into(),
        arch: "amd64".into(),
        subarch: "ga-24.04".into(),
        label: "stable".into(),
    }
}

pub fn jammy_arm() -> ImageKey {
    ImageKey {
        os: "ubuntu".into(),
        release: "jammy".into(),
        arch: "arm64".into(),
        subarch: "ga-22.04".into(),
        label: "stable".into(),
    }
}

/// Source files for one version of an image: kernel, initrd, squashfs
/// whose contents start with `<version>-<ftype>`.
pub struct ImageFiles {
    pub key: ImageKey,
    pub version: String,
    pub kernel: Vec<u8>,
    pub initrd: Vec<u8>,
    pub squashfs: Vec<u8>,
}

impl ImageFiles {
    pub fn new(key: ImageKey, version: &str, squashfs_len: usize) -> Self {
        let tag = format!("{}-{}", key.release, version);
        Self {
            kernel: content(&format!("{tag}-kernel"), 64 * 1024 + 17),
            initrd: content(&format!("{tag}-initrd"), 200 * 1024 + 3),
            squashfs: content(&format!("{tag}-squashfs"), squashfs_len),
            key,
            version: version.to_owned(),
        }
    }

    pub fn get(&self, t: FileType) -> &[u8] {
        match t {
            FileType::BootKernel => &self.kernel,
            FileType::BootInitrd => &self.initrd,
            _ => &self.squashfs,
        }
    }

    /// Writes the source files under `dir` and returns the builder entry.
    pub fn write_sources(&self, dir: &Path) -> BuildImage {
        let d = dir.join(format!("src-{}-{}", self.key.release, self.version));
        std::fs::create_dir_all(&d).unwrap();
        let mut files = Vec::new();
        for (t, bytes) in [
            (FileType::BootKernel, &self.kernel),
            (FileType::BootInitrd, &self.initrd),
            (FileType::Squashfs, &self.squashfs),
        ] {
            let p = d.join(t.as_str());
            std::fs::write(&p, bytes).unwrap();
            files.push((t, p));
        }
        BuildImage {
            key: self.key.clone(),
            version: self.version.clone(),
            files,
        }
    }
}

/// Builds a stream tree in `dir/<name>` from `images`, signed with `key`
/// when given.
pub fn build_tree(
    dir: &Path,
    name: &str,
    images: &[&ImageFiles],
    key: Option<&StreamSigningKey>,
) -> PathBuf {
    let mut b = StreamBuilder::new("org.maas-rs.test:v1:download");
    for i in images {
        b.add(i.write_sources(dir));
    }
    let out = dir.join(name);
    b.write(&out, key).unwrap();
    out
}

/// The tree path of a file of an image version (as the builder lays it out).
pub fn tree_file(root: &Path, img: &ImageFiles, t: FileType) -> PathBuf {
    let k = &img.key;
    root.join(format!(
        "{}/{}/{}/{}/{}/{}/{}",
        k.os, k.release, k.arch, k.subarch, k.label, img.version, t
    ))
}

/// Replaces a file in a tree (a new inode: the builder hard-links sources).
pub fn replace_file(path: &Path, bytes: &[u8]) {
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Serves `store` with the boot-file service mounted in axum, as a rack
/// would, on a loopback port.
pub async fn serve_store(store: ImageStore) -> SocketAddr {
    let app = axum::Router::new().route_service("/images/{*path}", BootFileService::new(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// `python3 -m http.server` serving `root` on a loopback port: an HTTP
/// server nobody here wrote. Killed when the handle drops.
pub async fn python_http_server(root: &Path) -> Option<(tokio::process::Child, SocketAddr)> {
    use tokio::io::AsyncBufReadExt;
    let python = tool("python3")?;
    let mut child = tokio::process::Command::new(python)
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn python3");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
        .await
        .expect("python http.server did not start")
        .unwrap()
        .expect("python http.server printed nothing");
    // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
    let port: u16 = line
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected python output {line:?}"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Some((child, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// A static file server over a tree that records every `Range` header and
/// can cut the connection mid-file: the first `cuts` GETs of a path ending
/// in `cut_suffix` send `cut_after` bytes (of a body announced whole), then
/// fail, so the client sees the connection drop.
#[derive(Clone)]
pub struct CuttingServer {
    pub root: PathBuf,
    pub cut_suffix: String,
    pub cut_after: usize,
    pub cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub ranges: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl CuttingServer {
    pub fn new(root: &Path, cut_suffix: &str, cut_after: usize, cuts: usize) -> Self {
        Self {
            root: root.to_owned(),
            cut_suffix: cut_suffix.to_owned(),
            cut_after,
            cuts: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(cuts)),
            ranges: Default::default(),
        }
    }

    pub async fn start(&self) -> SocketAddr {
        let me = self.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let me = me.clone();
            async move { me.handle(req) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    fn handle(&self, req: axum::extract::Request) -> axum::response::Response {
        use axum::http::{StatusCode, header};
        use axum::response::IntoResponse;
        use std::sync::atomic::Ordering;
        let path = req.uri().path().trim_start_matches('/').to_owned();
        let Ok(bytes) = std::fs::read(self.root.join(&path)) else {
            return (StatusCode::NOT_FOUND, "no").into_response();
        };
        let mut start = 0usize;
        if let Some(r) = req
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
        {
            self.ranges
                .lock()
                .unwrap()
                .push((path.clone(), r.to_owned()));
            start = r
                .strip_prefix("bytes=")
                .and_then(|s| s.strip_suffix('-'))
                .and_then(|s| s.parse().ok())
                .expect("the client asks for bytes=N-");
        }
        let total = bytes.len();
        let body_bytes = bytes[start..].to_vec();
        let cut = path.ends_with(&self.cut_suffix)
            && self
                .cuts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
                .is_ok();
        let mut resp = axum::response::Response::builder()
            .header(header::CONTENT_LENGTH, body_bytes.len())
            .header(header::ACCEPT_RANGES, "bytes");
        resp = if start > 0 {
            resp.status(StatusCode::PARTIAL_CONTENT).header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{total}", total - 1),
            )
        } else {
            resp.status(StatusCode::OK)
        };
        let body = if cut {
            let first =
                bytes::Bytes::from(body_bytes[..self.cut_after.min(body_bytes.len())].to_vec());
            let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
                Ok(first),
                Err(std::io::Error::other("connection cut by the test server")),
            ];
            axum::body::Body::from_stream(futures_util::stream::iter(chunks))
        } else {
            axum::body::Body::from(body_bytes)
        };
        resp.body(body).unwrap()
    }
}
