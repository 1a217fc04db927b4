//! The boot-file service mounted in axum on loopback, checked with curl
//! (byte ranges, HEAD, ETags), and the region-to-rack path: custom uploads
//! on the region, racks syncing the region's store by digest.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::*;
use maas_images::{CustomImage, FileType, ImageOrigin, ImageStore, StreamSource, SyncConfig, sync};

async fn curl(curl: &Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(curl)
        .args(["-sS"])
        .args(args)
        .output()
        .await
        .unwrap()
}

/// Parses `curl -D -` output (headers then body) into the status line,
/// headers (lower-case names) and body.
fn split_response(out: &[u8]) -> (String, Vec<(String, String)>, Vec<u8>) {
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, out[end + 4..].to_vec())
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn synced_store(dir: &Path, img: &ImageFiles) -> (ImageStore, SocketAddr) {
    let tree = build_tree(dir, "mirror", &[img], None);
    let store = ImageStore::open(dir.join("store")).unwrap();
    sync(
        &StreamSource::directory(&tree),
        &store,
        &SyncConfig::default(),
        &|_| {},
    )
    .await
    .unwrap();
    let addr = serve_store(store.clone()).await;
    (store, addr)
}

#[tokio::test]
async fn byte_ranges_head_and_etags_checked_with_curl() {
    let Some(curl_bin) = tool("curl") else { return };
    let dir = tempfile::tempdir().unwrap();
    let img = ImageFiles::new(noble(), "20240423", 3 * 1024 * 1024 + 123);
    let (store, addr) = synced_store(dir.path(), &img).await;
    let url = format!("http://{addr}/images/ubuntu/amd64/ga-24.04/noble/stable/squashfs");
    let data = &img.squashfs;
    let len = data.len();
    let sha = store
        .current()
        .unwrap()
        .boot_file("ubuntu/amd64/ga-24.04/noble/stable/squashfs")
        .unwrap()
        .sha256
        .clone();

    // Ranges, byte-exact: first bytes, across the 1 MiB read chunks, an open
    // end, a suffix, a range past the end (clamped).
    let cases: Vec<(String, std::ops::Range<usize>)> = vec![
        ("0-0".into(), 0..1),
        ("0-99".into(), 0..100),
        ("1048570-2097160".into(), 1_048_570..2_097_161),
        (format!("{}-", len - 1000), len - 1000..len),
        ("-4097".into(), len - 4097..len),
        (format!("{}-{}", len - 10, len + 1000), len - 10..len),
    ];
    for (spec, want) in cases {
        let out = curl(&curl_bin, &["-D", "-", "-r", &spec, &url]).await;
        assert!(
            out.status.success(),
            "{spec}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (status, headers, body) = split_response(&out.stdout);
        assert!(status.contains(" 206"), "{spec}: {status}");
        assert_eq!(
            header(&headers, "content-range"),
            Some(format!("bytes {}-{}/{len}", want.start, want.end - 1).as_str())
        );
        assert!(body == data[want.clone()], "{spec}: body differs");
    }

    // The whole file, and the file saved by curl -o compares equal.
    let saved = dir.path().join("squashfs.out");
    let out = curl(&curl_bin, &["--fail", "-o", saved.to_str().unwrap(), &url]).await;
    assert!(out.status.success());
    assert!(std::fs::read(&saved).unwrap() == *data);

    // curl -C - resumes a partial download with a Range request of its own.
    std::fs::write(&saved, &data[..777_777]).unwrap();
    let out = curl(
        &curl_bin,
        &["--fail", "-C", "-", "-o", saved.to_str().unwrap(), &url],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&saved).unwrap() == *data);

    // HEAD: headers, no body.
    let out = curl(&curl_bin, &["-I", &url]).await;
    let (status, headers, body) = split_response(&out.stdout);
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(
        header(&headers, "content-length"),
        Some(len.to_string().as_str())
    );
    assert_eq!(header(&headers, "accept-ranges"), Some("bytes"));
    assert_eq!(
        header(&headers, "content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(
        header(&headers, "etag"),
        Some(format!("\"{sha}\"").as_str())
    );
    assert!(body.is_empty());

    // If-None-Match with the current tag: 304; with another: the file.
    let out = curl(
        &curl_bin,
        &["-D", "-", "-H", &format!("If-None-Match: \"{sha}\""), &url],
    )
    .await;
    let (status, _, body) = split_response(&out.stdout);
    assert!(status.contains(" 304"), "{status}");
    assert!(body.is_empty());
    let out = curl(
        &curl_bin,
        &[
            "-D",
            "-",
            "-H",
            "If-None-Match: \"other\"",
            "-r",
            "0-9",
            &url,
        ],
    )
    .await;
    let (status, _, body) = split_response(&out.stdout);
    assert!(status.contains(" 206"), "{status}");
    assert_eq!(body, data[..10]);

    // If-Range with a stale tag: the whole file instead of the range.
    let out = curl(
        &curl_bin,
        &["-D", "-", "-H", "If-Range: \"stale\"", "-r", "0-9", &url],
    )
    .await;
    let (status, _, body) = split_response(&out.stdout);
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(body.len(), len);

    // Unsatisfiable range.
    let out = curl(&curl_bin, &["-D", "-", "-r", &format!("{len}-"), &url]).await;
    let (status, headers, _) = split_response(&out.stdout);
    assert!(status.contains(" 416"), "{status}");
    assert_eq!(
        header(&headers, "content-range"),
        Some(format!("bytes */{len}").as_str())
    );

    // By digest: immutable.
    let durl = format!("http://{addr}/images/by-digest/{sha}");
    let out = curl(&curl_bin, &["-D", "-", "-r", "5-14", &durl]).await;
    let (status, headers, body) = split_response(&out.stdout);
    assert!(status.contains(" 206"), "{status}");
    assert!(
        header(&headers, "cache-control")
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(body, data[5..15]);

    // Not found, wrong method.
    for (args, code) in [
        (vec!["-D", "-", "-o", "/dev/null"], " 404"),
        (vec!["-D", "-", "-X", "DELETE"], " 405"),
    ] {
        let target = if code == " 404" {
            format!("http://{addr}/images/ubuntu/amd64/ga-24.04/noble/stable/boot-dtb")
        } else {
            url.clone()
        };
        let mut a = args.clone();
        a.push(&target);
        let out = curl(&curl_bin, &a).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.lines().next().unwrap().contains(code), "{text}");
    }
}

#[tokio::test]
async fn many_concurrent_clients_get_whole_files() {
    let dir = tempfile::tempdir().unwrap();
    let img = ImageFiles::new(noble(), "20240423", 2 * 1024 * 1024 + 1);
    let (_store, addr) = synced_store(dir.path(), &img).await;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..48 {
        let client = client.clone();
        let t = [
            FileType::BootKernel,
            FileType::BootInitrd,
            FileType::Squashfs,
        ][i % 3];
        tasks.push(tokio::spawn(async move {
            let b = client
                .get(format!(
                    "http://{addr}/images/ubuntu/amd64/ga-24.04/noble/stable/{t}"
                ))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            (t, b)
        }));
    }
    for t in tasks {
        let (ftype, body) = t.await.unwrap();
        assert!(body == img.get(ftype), "{ftype}");
    }
}

/// Users upload custom images to the region; a rack syncs the region's
/// store (published as a stream by the same service) into its own cache and
/// serves from it; a re-upload under the same name reaches the rack on its
/// next sync because files are known by digest.
#[tokio::test]
async fn rack_syncs_region_store_and_picks_up_a_reupload() {
    let dir = tempfile::tempdir().unwrap();
    let img = ImageFiles::new(noble(), "20240423", 100_000);
    let (region, region_addr) = synced_store(dir.path(), &img).await;

    let custom = CustomImage::new("web-server", "amd64", FileType::RootDdXz);
    let first = content("custom-image-first", 300_000);
    let f1 = region.upload(&custom, &first[..]).await.unwrap();
    assert_eq!(f1.size, first.len() as u64);

    let rack = ImageStore::open(dir.path().join("rack")).unwrap();
    let from_region = StreamSource::http(&format!("http://{region_addr}/images/")).unwrap();
    let r = sync(&from_region, &rack, &SyncConfig::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(r.images, 2);
    assert_eq!(r.files_downloaded, 4);
    let rack_addr = serve_store(rack.clone()).await;
    let client = reqwest::Client::new();
    let url =
        format!("http://{rack_addr}/images/custom/amd64/generic/web-server/uploaded/root-dd.xz");
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-xz");
    let etag1 = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag1, format!("\"{}\"", f1.sha256));
    assert!(resp.bytes().await.unwrap() == first);

    // Re-upload under the same name: new bytes, new digest.
    let second = content("custom-image-second", 250_000);
    let f2 = region.upload(&custom, &second[..]).await.unwrap();
    assert_ne!(f1.sha256, f2.sha256);
    let set = region.current().unwrap();
    assert_eq!(
        set.images
            .iter()
            .filter(|i| i.origin == ImageOrigin::Uploaded)
            .count(),
        1
    );

    // The rack's cached copy answers 304 until it syncs, then the new file.
    let r = sync(&from_region, &rack, &SyncConfig::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(r.files_downloaded, 1, "only the new upload moves");
    let resp = client
        .get(&url)
        .header("If-None-Match", &etag1)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["etag"].to_str().unwrap(),
        format!("\"{}\"", f2.sha256)
    );
    assert!(resp.bytes().await.unwrap() == second);
    let gc = rack.collect_garbage(1).await.unwrap();
    assert_eq!(gc.blobs_removed, 1);
    assert!(!rack.has_blob(&f1.sha256));

    // Bad names are refused before anything is written.
    let bad = CustomImage::new("../etc", "amd64", FileType::RootTgz);
    assert!(region.upload(&bad, &b"x"[..]).await.is_err());
}
