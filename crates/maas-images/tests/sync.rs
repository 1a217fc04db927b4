//! Syncing streams into the store: over HTTP from `python3 -m http.server`
//! and from a test server that cuts connections, from directories; signed
//! and tampered streams; resume; readers during a sync; garbage collection.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use maas_images::{
    FileType, ImageError, ImageOrigin, ImageStore, Selection, StreamSigningKey, StreamSource,
    SyncConfig, SyncEvent, sync,
};

fn signed_config(key: &StreamSigningKey) -> SyncConfig {
    SyncConfig {
        keyring: Some(key.keyring()),
        ..SyncConfig::default()
    }
}

fn test_key() -> StreamSigningKey {
    StreamSigningKey::generate("maas-rs test <images@example.com>").unwrap()
}

/// The first real path end to end: a signed tree served by python's
/// http.server, synced with the signature checked and progress reported,
/// then served by our boot-file service and fetched with curl.
#[tokio::test]
async fn sync_signed_stream_from_python_http_server_and_serve_it_to_curl() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key();
    let noble = ImageFiles::new(noble(), "20240423", 300 * 1024 + 5);
    let jammy = ImageFiles::new(jammy_arm(), "20240101", 100 * 1024);
    let tree = build_tree(dir.path(), "mirror", &[&noble, &jammy], Some(&key));
    let Some((_server, addr)) = python_http_server(&tree).await else {
        return;
    };

    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let source = StreamSource::parse(&format!("http://{addr}/streams/v1/index.sjson")).unwrap();
    let mut config = signed_config(&key);
    config.selections = vec!["os=ubuntu,release=noble,arch=amd64".parse().unwrap()];
    let events = Mutex::new(Vec::new());
    let report = sync(&source, &store, &config, &|e: &SyncEvent| {
        events.lock().unwrap().push(e.clone())
    })
    .await
    .unwrap();
    assert_eq!(report.generation, 1);
    assert_eq!(report.images, 1, "only the selected product");
    assert_eq!(report.files_downloaded, 3);
    let total = (noble.kernel.len() + noble.initrd.len() + noble.squashfs.len()) as u64;
    assert_eq!(report.bytes_downloaded, total);

    let events = events.into_inner().unwrap();
    assert!(
        matches!(events.first(), Some(SyncEvent::Planned { images: 1, files: 3, bytes, present: 0 }) if *bytes == total)
    );
    let bytes_seen: u64 = events
        .iter()
        .map(|e| match e {
            SyncEvent::Bytes { n, .. } => *n,
            _ => 0,
        })
        .sum();
    assert_eq!(bytes_seen, total);
    let done = events
        .iter()
        .filter(|e| matches!(e, SyncEvent::FileDone { .. }))
        .count();
    assert_eq!(done, 3);
    assert_eq!(events.last(), Some(&SyncEvent::Published { generation: 1 }));

    let set = store.current().unwrap();
    let img = set.image(&noble.key).unwrap();
    assert_eq!(
        img.origin,
        ImageOrigin::Synced {
            product: "org.maas-rs.test:v1:download:ubuntu:noble:amd64:ga-24.04:stable".into(),
            version: "20240423".into()
        }
    );
    assert!(set.image(&jammy.key).is_none());

    // A rack serves it; curl (not our client) fetches what the boot config names.
    let http = serve_store(store.clone()).await;
    let Some(curl) = tool("curl") else { return };
    for t in [
        FileType::BootKernel,
        FileType::BootInitrd,
        FileType::Squashfs,
    ] {
        let out = tokio::process::Command::new(&curl)
            .args(["-sS", "--fail"])
            .arg(format!(
                "http://{http}/images/ubuntu/amd64/ga-24.04/noble/stable/{t}"
            ))
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == noble.get(t), "{t} differs");
    }

    // A second sync downloads nothing and publishes the same images.
    let again = sync(&source, &store, &config, &|_| {}).await.unwrap();
    assert_eq!(again.files_downloaded, 0);
    assert_eq!(again.files_present, 3);
    assert_eq!(again.generation, 2);
}

#[tokio::test]
async fn newest_version_wins_and_gc_collects_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key();
    let old = ImageFiles::new(noble(), "20240101", 10_000);
    let new = ImageFiles::new(noble(), "20240423", 10_000);
    let store = ImageStore::open(dir.path().join("store")).unwrap();

    let t1 = build_tree(dir.path(), "m1", &[&old], Some(&key));
    sync(
        &StreamSource::directory(&t1),
        &store,
        &signed_config(&key),
        &|_| {},
    )
    .await
    .unwrap();
    let t2 = build_tree(dir.path(), "m2", &[&old, &new], Some(&key));
    let r = sync(
        &StreamSource::directory(&t2),
        &store,
        &signed_config(&key),
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(r.files_downloaded, 3);
    let set = store.current().unwrap();
    let img = set.image(&new.key).unwrap();
    assert!(matches!(&img.origin, ImageOrigin::Synced { version, .. } if version == "20240423"));
    let kernel = img.file(FileType::BootKernel).unwrap();
    assert_eq!(
        std::fs::read(store.blob_path(&kernel.sha256)).unwrap(),
        new.kernel
    );

    // Keeping two generations keeps the old files (a reader may hold
    // generation 1); keeping one removes them.
    let kept = store.collect_garbage(2).await.unwrap();
    assert_eq!(kept.blobs_removed, 0);
    let gc = store.collect_garbage(1).await.unwrap();
    assert_eq!(gc.manifests_removed, 1);
    assert_eq!(gc.blobs_removed, 3);
    let old_kernel = maas_images::hash_file(&tree_file(&t1, &old, FileType::BootKernel))
        .unwrap()
        .0;
    assert!(!store.has_blob(&old_kernel));
    assert!(store.has_blob(&kernel.sha256));
}

#[tokio::test]
async fn tampered_sha256_is_rejected_and_nothing_becomes_visible() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key();
    let img = ImageFiles::new(noble(), "20240423", 50_000);
    let tree = build_tree(dir.path(), "mirror", &[&img], Some(&key));
    // Same size, one byte different.
    let mut bad = img.initrd.clone();
    bad[1000] ^= 0xff;
    replace_file(&tree_file(&tree, &img, FileType::BootInitrd), &bad);

    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let err = sync(
        &StreamSource::directory(&tree),
        &store,
        &signed_config(&key),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ImageError::DigestMismatch { ref path, .. } if path.ends_with("boot-initrd")),
        "{err:?}"
    );
    assert_eq!(store.current().unwrap().generation, 0, "nothing published");
    let bad_digest = maas_images::hash_file(&tree_file(&tree, &img, FileType::BootInitrd))
        .unwrap()
        .0;
    assert!(!store.has_blob(&bad_digest));
    assert!(
        std::fs::read_dir(store.root().join("partial"))
            .unwrap()
            .all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(&bad_digest)),
    );
}

#[tokio::test]
async fn tampered_size_is_rejected_over_http_and_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key();
    let img = ImageFiles::new(noble(), "20240423", 50_000);
    let tree = build_tree(dir.path(), "mirror", &[&img], Some(&key));
    let mut longer = img.kernel.clone();
    longer.extend_from_slice(b"extra");
    replace_file(&tree_file(&tree, &img, FileType::BootKernel), &longer);
    let shorter = &img.squashfs[..img.squashfs.len() - 1];
    replace_file(&tree_file(&tree, &img, FileType::Squashfs), shorter);

    let server = CuttingServer::new(&tree, "never", 0, 0);
    let addr = server.start().await;
    let sources = [
        StreamSource::directory(&tree),
        StreamSource::http(&format!("http://{addr}/")).unwrap(),
    ];
    for (n, source) in sources.iter().enumerate() {
        for (ftype, sel) in [
            (FileType::BootKernel, "longer"),
            (FileType::Squashfs, "shorter"),
        ] {
            let store = ImageStore::open(dir.path().join(format!("store-{sel}-{n}"))).unwrap();
            let config = SyncConfig {
                file_types: vec![ftype],
                retries: 0,
                ..signed_config(&key)
            };
            let err = sync(source, &store, &config, &|_| {}).await.unwrap_err();
            match (&err, source) {
                (
                    ImageError::SizeMismatch {
                        expected, actual, ..
                    },
                    _,
                ) => {
                    assert_eq!(*expected, img.get(ftype).len() as u64);
                    assert_ne!(actual, expected);
                }
                // Over HTTP a body shorter than announced is a cut transfer.
                (ImageError::Truncated { .. }, StreamSource::Http { .. }) => {}
                _ => panic!("{sel} {}: {err:?}", source.describe("")),
            }
            assert_eq!(store.current().unwrap().generation, 0);
        }
    }
}

#[tokio::test]
async fn bad_signature_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key();
    let img = ImageFiles::new(noble(), "20240423", 1000);
    let tree = build_tree(dir.path(), "mirror", &[&img], Some(&key));
    let store = ImageStore::open(dir.path().join("store")).unwrap();

    // Signed by a key the keyring does not hold.
    let stranger = test_key();
    let err = sync(
        &StreamSource::directory(&tree),
        &store,
        &signed_config(&stranger),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ImageError::BadSignature { ref path } if path == "streams/v1/index.sjson"),
        "{err:?}"
    );

    // The right key, but the signed products text changed: a digest swapped
    // for one of the attacker's choosing.
    let products = tree.join("streams/v1/org.maas-rs.test:v1:download.sjson");
    let text = std::fs::read_to_string(&products).unwrap();
    let (real, _) = maas_images::hash_file(&tree_file(&tree, &img, FileType::BootKernel)).unwrap();
    assert!(text.contains(&real));
    std::fs::write(&products, text.replace(&real, &"0".repeat(64))).unwrap();
    let err = sync(
        &StreamSource::directory(&tree),
        &store,
        &signed_config(&key),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ImageError::BadSignature { ref path } if path.ends_with("download.sjson")),
        "{err:?}"
    );
    assert_eq!(store.current().unwrap().generation, 0);
}

#[tokio::test]
async fn unsigned_stream_is_rejected_when_a_keyring_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key();
    let img = ImageFiles::new(noble(), "20240423", 1000);
    let tree = build_tree(dir.path(), "mirror", &[&img], None);
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let err = sync(
        &StreamSource::directory(&tree),
        &store,
        &signed_config(&key),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ImageError::Unsigned { ref path } if path == "streams/v1/index.sjson"),
        "{err:?}"
    );

    // A ".sjson" that is plain JSON is no better.
    std::fs::copy(
        tree.join("streams/v1/index.json"),
        tree.join("streams/v1/index.sjson"),
    )
    .unwrap();
    let err = sync(
        &StreamSource::directory(&tree),
        &store,
        &signed_config(&key),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ImageError::Unsigned { .. }), "{err:?}");

    // Without a keyring the same stream syncs.
    let r = sync(
        &StreamSource::directory(&tree),
        &store,
        &SyncConfig::default(),
        &|_| {},
    )
    .await
    .unwrap();
    assert_eq!(r.files_downloaded, 3);
}

#[tokio::test]
async fn selection_matching_nothing_is_an_error_not_an_empty_set() {
    let dir = tempfile::tempdir().unwrap();
    let img = ImageFiles::new(noble(), "20240423", 1000);
    let tree = build_tree(dir.path(), "mirror", &[&img], None);
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    sync(
        &StreamSource::directory(&tree),
        &store,
        &SyncConfig::default(),
        &|_| {},
    )
    .await
    .unwrap();
    let config = SyncConfig {
        selections: vec![Selection {
            release: Some("plucky".into()),
            ..Selection::default()
        }],
        ..SyncConfig::default()
    };
    let err = sync(&StreamSource::directory(&tree), &store, &config, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NothingSelected));
    assert_eq!(store.current().unwrap().images.len(), 1);
}

/// A transfer killed mid-file fails the sync (no retries), the previous
/// image set stays in force and readable, and the next sync resumes the
/// file with a Range request from where the bytes on disk end.
#[tokio::test]
async fn killed_transfer_leaves_old_set_and_next_sync_resumes_with_range() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key();
    let v1 = ImageFiles::new(noble(), "20240101", 100_000);
    let v2 = ImageFiles::new(noble(), "20240423", 3 * 1024 * 1024 + 11);
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let t1 = build_tree(dir.path(), "m1", &[&v1], Some(&key));
    sync(
        &StreamSource::directory(&t1),
        &store,
        &signed_config(&key),
        &|_| {},
    )
    .await
    .unwrap();

    let t2 = build_tree(dir.path(), "m2", &[&v2], Some(&key));
    let cut_after = 1024 * 1024 + 7;
    let server = CuttingServer::new(&t2, "/squashfs", cut_after, 1);
    let addr = server.start().await;
    let source = StreamSource::http(&format!("http://{addr}")).unwrap();
    let config = SyncConfig {
        retries: 0,
        concurrency: 1,
        ..signed_config(&key)
    };
    let err = sync(&source, &store, &config, &|_| {}).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let set = store.current().unwrap();
    assert_eq!(set.generation, 1, "the old set is still in force");
    let k = set
        .boot_file("ubuntu/amd64/ga-24.04/noble/stable/boot-kernel")
        .unwrap();
    assert_eq!(
        std::fs::read(store.blob_path(&k.sha256)).unwrap(),
        v1.kernel
    );

    let (sq_sha, sq_size) =
        maas_images::hash_file(&tree_file(&t2, &v2, FileType::Squashfs)).unwrap();
    let partial_len = std::fs::metadata(store.root().join("partial").join(&sq_sha))
        .unwrap()
        .len();
    assert!(
        partial_len > 0 && partial_len <= cut_after as u64,
        "{partial_len}"
    );

    let events = Mutex::new(Vec::new());
    let r = sync(&source, &store, &config, &|e: &SyncEvent| {
        events.lock().unwrap().push(e.clone())
    })
    .await
    .unwrap();
    assert_eq!(r.resumed, 1);
    assert_eq!(r.generation, 2);
    let ranges = server.ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    assert!(ranges[0].0.ends_with("/squashfs"));
    assert_eq!(ranges[0].1, format!("bytes={partial_len}-"));
    assert!(events.lock().unwrap().iter().any(|e| matches!(
        e,
        SyncEvent::FileStarted { resume_from, .. } if *resume_from == partial_len
    )));
    let set = store.current().unwrap();
    let sq = set
        .boot_file("ubuntu/amd64/ga-24.04/noble/stable/squashfs")
        .unwrap();
    assert_eq!(sq.sha256, sq_sha);
    assert_eq!(sq.size, sq_size);
    assert_eq!(
        std::fs::read(store.blob_path(&sq_sha)).unwrap(),
        v2.squashfs
    );
}

/// With retries, one sync survives two cut connections by resuming twice.
#[tokio::test]
async fn retries_resume_within_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let img = ImageFiles::new(noble(), "20240423", 2 * 1024 * 1024);
    let tree = build_tree(dir.path(), "m", &[&img], None);
    let server = CuttingServer::new(&tree, "/squashfs", 700_000, 2);
    let addr = server.start().await;
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let retries = AtomicU64::new(0);
    let r = sync(
        &StreamSource::http(&format!("http://{addr}/")).unwrap(),
        &store,
        &SyncConfig::default(),
        &|e| {
            if matches!(e, SyncEvent::Retrying { .. }) {
                retries.fetch_add(1, Ordering::Relaxed);
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(retries.load(Ordering::Relaxed), 2);
    assert_eq!(server.ranges.lock().unwrap().len(), 2);
    assert_eq!(r.resumed, 1);
    let set = store.current().unwrap();
    let sq = set
        .boot_file("ubuntu/amd64/ga-24.04/noble/stable/squashfs")
        .unwrap();
    assert_eq!(
        std::fs::read(store.blob_path(&sq.sha256)).unwrap(),
        img.squashfs
    );
}

/// Readers take the current set while a sync replaces it and garbage is
/// collected: every reader sees one whole set (kernel, initrd and squashfs
/// of the same version), and HTTP clients always get a whole file of one
/// version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_during_a_sync_see_the_old_set_or_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key();
    let v1 = ImageFiles::new(noble(), "20240101", 512 * 1024);
    let v2 = ImageFiles::new(noble(), "20240423", 4 * 1024 * 1024);
    let store = ImageStore::open(dir.path().join("store")).unwrap();
    let t1 = build_tree(dir.path(), "m1", &[&v1], Some(&key));
    sync(
        &StreamSource::directory(&t1),
        &store,
        &signed_config(&key),
        &|_| {},
    )
    .await
    .unwrap();
    let http = serve_store(store.clone()).await;
    let t2 = build_tree(dir.path(), "m2", &[&v2], Some(&key));

    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let store = store.clone();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                // Read the flag first: the last round's set is taken after
                // the sync published.
                let last = stop.load(Ordering::SeqCst);
                let set = store.current().unwrap();
                let mut tags = Vec::new();
                for t in [
                    FileType::BootKernel,
                    FileType::BootInitrd,
                    FileType::Squashfs,
                ] {
                    let f = set
                        .boot_file(&format!("ubuntu/amd64/ga-24.04/noble/stable/{t}"))
                        .unwrap();
                    let bytes = tokio::fs::read(store.blob_path(&f.sha256)).await.unwrap();
                    assert_eq!(bytes.len() as u64, f.size);
                    tags.push(String::from_utf8_lossy(&bytes[..14]).into_owned());
                }
                let version = &tags[0][..14];
                assert!(tags.iter().all(|t| t == version), "mixed set: {tags:?}");
                seen.push(version.to_owned());
                if last {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let client = reqwest::Client::new();
    let (k1, k2) = (v1.kernel.clone(), v2.kernel.clone());
    let stop2 = stop.clone();
    let http_reader = tokio::spawn(async move {
        let mut n = 0;
        loop {
            let last = stop2.load(Ordering::SeqCst);
            let body = client
                .get(format!(
                    "http://{http}/images/ubuntu/amd64/ga-24.04/noble/stable/boot-kernel"
                ))
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert!(body == k1 || body == k2, "a kernel of neither version");
            n += 1;
            if last {
                return n;
            }
        }
    });

    sync(
        &StreamSource::directory(&t2),
        &store,
        &signed_config(&key),
        &|_| {},
    )
    .await
    .unwrap();
    store.collect_garbage(2).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        let seen = r.await.unwrap();
        assert!(
            seen.last().unwrap().starts_with("noble-20240423"),
            "{seen:?}"
        );
    }
    assert!(http_reader.await.unwrap() > 0);
}
