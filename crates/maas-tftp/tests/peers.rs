//! maas-tftp against TFTP clients nobody here wrote: curl, tftp-hpa's `tftp`
//! and `atftp`, plus raw-socket clients for the behaviours firmware relies on.
//!
//! A missing client skips its test with a printed reason; under `CI=true` a
//! skip is a failure (`.ci/run` installs them).

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use maas_tftp::packet::{self, ErrorCode, Packet};
use maas_tftp::{
    DirectoryProvider, FileProvider, FileRequest, FileSource, ProviderError, TftpConfig,
    TftpMetrics, TftpServer,
};
use tokio::net::UdpSocket;
use tokio::process::Command;

fn skip_or_fail(what: &str) -> bool {
    let msg = format!(
        "SKIPPED {}: {what}",
        std::thread::current().name().unwrap_or("test")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}; under CI a skipped peer test is a failure");
    }
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
    true
}

fn tool(name: &str) -> Option<PathBuf> {
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Some(p);
        }
    }
    skip_or_fail(&format!("{name} is not installed"));
    None
}

struct Fixture {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    metrics: Arc<TftpMetrics>,
}

/// Waits (up to 3 s) for a counter to reach `want`: the server counts a
/// transfer when it reads the final ACK, which can be just after the client
/// has exited.
async fn eventually(counter: &std::sync::atomic::AtomicU64, want: u64) {
    for _ in 0..300 {
        if counter.load(Ordering::Relaxed) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counter.load(Ordering::Relaxed), want);
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn serve(ip: &str, config: TftpConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [
        ("empty", 0),
        ("b511", 511),
        ("b512", 512),
        ("b513", 513),
        ("b1468", 1468),
        ("one-mib", 1 << 20),
        ("three-mib", 3 << 20),
    ] {
        std::fs::write(dir.path().join(name), pattern(len, len as u64 + 7)).unwrap();
    }
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/kernel"), pattern(70_000, 3)).unwrap();
    let server = TftpServer::bind(
        SocketAddr::new(ip.parse().unwrap(), 0),
        DirectoryProvider::new(dir.path()).unwrap(),
        config,
    )
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let metrics = server.metrics();
    tokio::spawn(server.serve());
    Fixture { dir, addr, metrics }
}

async fn run(cmd: &mut Command) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(180), cmd.kill_on_drop(true).output())
        .await
        .expect("client finished within 180 s")
        .expect("client ran")
}

fn same(fx: &Fixture, name: &str, got: &Path) {
    let want = std::fs::read(fx.dir.path().join(name)).unwrap();
    let have = std::fs::read(got).unwrap_or_default();
    assert!(
        have == want,
        "{name}: {} bytes received, {} expected, contents differ",
        have.len(),
        want.len()
    );
}

const FILES: &[&str] = &[
    "empty",
    "b511",
    "b512",
    "b513",
    "b1468",
    "one-mib",
    "sub/kernel",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_downloads_byte_exact_at_every_block_size() {
    let Some(curl) = tool("curl") else { return };
    let fx = serve("127.0.0.1", TftpConfig::default()).await;
    let out = tempfile::tempdir().unwrap();
    for blksize in [None, Some(512), Some(1468), Some(8192), Some(65464)] {
        for name in FILES {
            let dest = out.path().join("got");
            let mut cmd = Command::new(&curl);
            cmd.args(["-sS", "--fail", "-o"]).arg(&dest);
            if let Some(b) = blksize {
                cmd.args(["--tftp-blksize", &b.to_string()]);
            }
            cmd.arg(format!("tftp://{}/{}", fx.addr, name));
            let o = run(&mut cmd).await;
            assert!(
                o.status.success(),
                "curl {name} blksize {blksize:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            same(&fx, name, &dest);
        }
    }
    eventually(&fx.metrics.completed, (5 * FILES.len()) as u64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tftp_hpa_downloads_byte_exact_in_octet_and_netascii() {
    let Some(tftp) = tool("tftp") else { return };
    let fx = serve("127.0.0.1", TftpConfig::default()).await;
    let out = tempfile::tempdir().unwrap();
    for name in FILES {
        let dest = out.path().join("got");
        let o = run(Command::new(&tftp)
            .args([
                &fx.addr.ip().to_string(),
                &fx.addr.port().to_string(),
                "-m",
                "binary",
                "-c",
                "get",
                name,
            ])
            .arg(&dest))
        .await;
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        same(&fx, name, &dest);
    }
    // Netascii: the client turns CR LF back into LF and CR NUL into CR, so a
    // text file survives the round trip unchanged.
    let text = b"#!ipxe\nkernel http://10.0.0.1/vmlinuz\r\nboot\n\rlast line without newline";
    std::fs::write(fx.dir.path().join("text.cfg"), text).unwrap();
    let dest = out.path().join("text");
    let o = run(Command::new(&tftp)
        .args([
            &fx.addr.ip().to_string(),
            &fx.addr.port().to_string(),
            "-m",
            "ascii",
            "-c",
            "get",
            "text.cfg",
        ])
        .arg(&dest))
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&dest).unwrap(), text);
    // A write request is refused with a clear error.
    std::fs::write(out.path().join("up"), b"data").unwrap();
    let o = run(Command::new(&tftp).current_dir(out.path()).args([
        &fx.addr.ip().to_string(),
        &fx.addr.port().to_string(),
        "-c",
        "put",
        "up",
    ]))
    .await;
    let said = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("read-only"), "tftp put said: {said}");
    assert!(!fx.dir.path().join("up").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atftp_downloads_byte_exact_with_each_option_combination() {
    let Some(atftp) = tool("atftp") else { return };
    let fx = serve("127.0.0.1", TftpConfig::default()).await;
    let out = tempfile::tempdir().unwrap();
    let mut runs = 0;
    for blksize in [None, Some(512), Some(1468), Some(65464)] {
        for window in [None, Some(1), Some(4), Some(16), Some(64)] {
            for tsize in [false, true] {
                for name in ["empty", "b1468", "three-mib"] {
                    let dest = out.path().join("got");
                    let _ = std::fs::remove_file(&dest);
                    let mut cmd = Command::new(&atftp);
                    if let Some(b) = blksize {
                        cmd.args(["--option", &format!("blksize {b}")]);
                    }
                    if let Some(w) = window {
                        cmd.args(["--option", &format!("windowsize {w}")]);
                    }
                    if tsize {
                        cmd.args(["--option", "tsize 0"]);
                    }
                    cmd.args(["-g", "-r", name, "-l"])
                        .arg(&dest)
                        .args([fx.addr.ip().to_string(), fx.addr.port().to_string()]);
                    let o = run(&mut cmd).await;
                    assert!(
                        o.status.success(),
                        "atftp {name} blksize {blksize:?} window {window:?} tsize {tsize}: {}",
                        String::from_utf8_lossy(&o.stderr)
                    );
                    same(&fx, name, &dest);
                    runs += 1;
                }
            }
        }
    }
    eventually(&fx.metrics.completed, runs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_numbers_roll_over_past_32_mib_at_512_byte_blocks() {
    let Some(tftp) = tool("tftp") else { return };
    let Some(curl) = tool("curl") else { return };
    let fx = serve("127.0.0.1", TftpConfig::default()).await;
    // 65,536 blocks of 512 bytes is 32 MiB; this file needs 69,633.
    std::fs::write(fx.dir.path().join("big"), pattern(34 << 20, 11)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("big");
    let o = run(Command::new(&tftp)
        .args([
            &fx.addr.ip().to_string(),
            &fx.addr.port().to_string(),
            "-m",
            "binary",
            "-c",
            "get",
            "big",
        ])
        .arg(&dest))
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    same(&fx, "big", &dest);
    let dest2 = out.path().join("big2");
    let o = run(Command::new(&curl)
        .args(["-sS", "--fail", "--tftp-blksize", "512", "-o"])
        .arg(&dest2)
        .arg(format!("tftp://{}/big", fx.addr)))
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    same(&fx, "big", &dest2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_clients_all_get_exact_copies() {
    let Some(curl) = tool("curl") else { return };
    let fx = serve("127.0.0.1", TftpConfig::default()).await;
    let out = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..16)
        .map(|i| {
            let dest = out.path().join(format!("got{i}"));
            let mut cmd = Command::new(&curl);
            cmd.args(["-sS", "--fail", "--tftp-blksize", "1468", "-o"])
                .arg(&dest)
                .arg(format!("tftp://{}/three-mib", fx.addr));
            async move { (run(&mut cmd).await, dest) }
        })
        .collect();
    for (o, dest) in futures_join(children).await {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        same(&fx, "three-mib", &dest);
    }
}

async fn futures_join<F>(fs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

// ---------------------------------------------------------------- raw clients

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

async fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 70_000];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
        .await
        .expect("a reply within 5 s")
        .unwrap();
    buf.truncate(n);
    (buf, from)
}

async fn expect_error(s: &UdpSocket, code: ErrorCode) -> String {
    let (b, _) = recv(s).await;
    match Packet::parse(&b).unwrap() {
        Packet::Error { code: c, message } => {
            assert_eq!(c, code, "{message}");
            message
        }
        other => panic!("expected error {code:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn refusals_are_clear_error_packets_and_malformed_packets_are_counted() {
    let fx = serve("127.0.0.1", TftpConfig::default()).await;
    let outside = fx
        .dir
        .path()
        .parent()
        .unwrap()
        .join(format!("outside-{}", std::process::id()));
    std::fs::write(&outside, b"secret").unwrap();
    std::os::unix::fs::symlink(&outside, fx.dir.path().join("link")).unwrap();
    let c = client().await;
    for (path, code, says) in [
        (
            "../etc/passwd",
            ErrorCode::AccessViolation,
            "'..' is not allowed",
        ),
        (
            "sub/../../x",
            ErrorCode::AccessViolation,
            "'..' is not allowed",
        ),
        ("link", ErrorCode::AccessViolation, "outside the root"),
        ("sub", ErrorCode::AccessViolation, "not a regular file"),
        ("no-such-file", ErrorCode::FileNotFound, "file not found"),
    ] {
        c.send_to(&packet::request(false, path, "octet", &[]), fx.addr)
            .await
            .unwrap();
        let msg = expect_error(&c, code).await;
        assert!(msg.contains(says), "{path}: {msg}");
    }
    c.send_to(&packet::request(true, "b512", "octet", &[]), fx.addr)
        .await
        .unwrap();
    assert!(
        expect_error(&c, ErrorCode::AccessViolation)
            .await
            .contains("read-only")
    );
    c.send_to(b"\x00\x01b512\x00mail\x00", fx.addr)
        .await
        .unwrap();
    assert!(
        expect_error(&c, ErrorCode::IllegalOperation)
            .await
            .contains("mail")
    );
    // A request that does not parse gets an error naming why...
    c.send_to(b"\x00\x01no-terminator", fx.addr).await.unwrap();
    assert!(
        expect_error(&c, ErrorCode::IllegalOperation)
            .await
            .contains("not NUL-terminated")
    );
    // ...anything else is dropped without a word.
    for junk in [
        &b""[..],
        b"\x00",
        b"\x00\x09junk",
        b"\xff\xff\xff\xff",
        b"\x00\x04\x00\x01",
    ] {
        c.send_to(junk, fx.addr).await.unwrap();
    }
    // The server is still serving, and counted what it dropped.
    c.send_to(&packet::request(false, "b511", "octet", &[]), fx.addr)
        .await
        .unwrap();
    let (b, from) = recv(&c).await;
    assert_eq!(
        Packet::parse(&b).unwrap(),
        Packet::Data {
            block: 1,
            data: &pattern(511, 518)[..]
        }
    );
    c.send_to(&packet::ack(1), from).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        fx.metrics.malformed.load(Ordering::Relaxed),
        7,
        "the bad mode, the unterminated request and five junk datagrams"
    );
    eventually(&fx.metrics.completed, 1).await;
    let _ = std::fs::remove_file(outside);
}

#[tokio::test]
async fn an_error_8_after_the_option_ack_is_taken_calmly_and_the_retry_works() {
    // What OVMF does: ask with tsize, read the size from the OACK, abort with
    // error 8, then ask again for real.
    let fx = serve("127.0.0.1", TftpConfig::default()).await;
    let c = client().await;
    c.send_to(
        &packet::request(
            false,
            "one-mib",
            "octet",
            &[("tsize", "0"), ("blksize", "1468")],
        ),
        fx.addr,
    )
    .await
    .unwrap();
    let (b, from) = recv(&c).await;
    let Packet::Oack { options } = Packet::parse(&b).unwrap() else {
        panic!("expected OACK")
    };
    assert!(options.contains(&("tsize".into(), (1u64 << 20).to_string())));
    assert!(options.contains(&("blksize".into(), "1468".into())));
    c.send_to(
        &packet::error(ErrorCode::OptionRefused, "tsize query only"),
        from,
    )
    .await
    .unwrap();

    c.send_to(
        &packet::request(false, "one-mib", "octet", &[("blksize", "1468")]),
        fx.addr,
    )
    .await
    .unwrap();
    let (b, from) = recv(&c).await;
    assert!(matches!(Packet::parse(&b).unwrap(), Packet::Oack { .. }));
    c.send_to(&packet::ack(0), from).await.unwrap();
    let mut got = Vec::new();
    loop {
        let (b, _) = recv(&c).await;
        let Packet::Data { block, data } = Packet::parse(&b).unwrap() else {
            panic!()
        };
        got.extend_from_slice(data);
        c.send_to(&packet::ack(block), from).await.unwrap();
        if data.len() < 1468 {
            break;
        }
    }
    assert_eq!(got, pattern(1 << 20, (1 << 20) + 7));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fx.metrics.aborted_by_client.load(Ordering::Relaxed), 1);
    eventually(&fx.metrics.completed, 1).await;
    assert_eq!(fx.metrics.retransmits.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn duplicate_acks_do_not_multiply_data_packets() {
    let fx = serve(
        "127.0.0.1",
        TftpConfig {
            timeout: Duration::from_secs(2),
            ..TftpConfig::default()
        },
    )
    .await;
    let c = client().await;
    c.send_to(&packet::request(false, "b1468", "octet", &[]), fx.addr)
        .await
        .unwrap();
    let (_, from) = recv(&c).await; // DATA 1
    for _ in 0..3 {
        c.send_to(&packet::ack(1), from).await.unwrap();
    }
    // Exactly one DATA 2 must come, however many ACK 1 arrived.
    let (b, _) = recv(&c).await;
    assert!(matches!(
        Packet::parse(&b).unwrap(),
        Packet::Data { block: 2, .. }
    ));
    let mut buf = [0u8; 2048];
    let extra = tokio::time::timeout(Duration::from_millis(500), c.recv_from(&mut buf)).await;
    assert!(
        extra.is_err(),
        "a duplicate ACK caused a duplicate DATA packet"
    );
    // A stranger on the transfer port gets "unknown transfer ID"; the transfer goes on.
    let stranger = client().await;
    stranger.send_to(&packet::ack(2), from).await.unwrap();
    expect_error(&stranger, ErrorCode::UnknownTransferId).await;
    c.send_to(&packet::ack(2), from).await.unwrap();
    let (b, _) = recv(&c).await;
    assert!(
        matches!(Packet::parse(&b).unwrap(), Packet::Data { block: 3, data } if data.len() == 1468 - 1024)
    );
}

#[tokio::test]
async fn a_resent_request_does_not_start_a_second_transfer() {
    let fx = serve(
        "127.0.0.1",
        TftpConfig {
            timeout: Duration::from_secs(2),
            ..TftpConfig::default()
        },
    )
    .await;
    let c = client().await;
    // A client whose first DATA was lost sends its request again.
    for _ in 0..2 {
        c.send_to(&packet::request(false, "b1468", "octet", &[]), fx.addr)
            .await
            .unwrap();
    }
    let (_, from) = recv(&c).await; // DATA 1
    let mut buf = [0u8; 2048];
    let extra = tokio::time::timeout(Duration::from_millis(500), c.recv_from(&mut buf)).await;
    assert!(
        extra.is_err(),
        "a second transfer answered the resent request"
    );
    eventually(&fx.metrics.duplicate_requests, 1).await;
    assert_eq!(fx.metrics.requests.load(Ordering::Relaxed), 1);
    // Once the transfer is over, the same address and port may ask again.
    for block in 1..=3 {
        c.send_to(&packet::ack(block), from).await.unwrap();
        if block < 3 {
            recv(&c).await;
        }
    }
    eventually(&fx.metrics.completed, 1).await;
    c.send_to(&packet::request(false, "b1468", "octet", &[]), fx.addr)
        .await
        .unwrap();
    let (b, _) = recv(&c).await;
    assert!(matches!(
        Packet::parse(&b).unwrap(),
        Packet::Data { block: 1, .. }
    ));
    assert_eq!(fx.metrics.requests.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn lost_acks_are_recovered_by_retransmission_then_given_up() {
    let fx = serve(
        "127.0.0.1",
        TftpConfig {
            timeout: Duration::from_millis(100),
            max_retries: 3,
            ..TftpConfig::default()
        },
    )
    .await;
    let c = client().await;
    c.send_to(&packet::request(false, "b1468", "octet", &[]), fx.addr)
        .await
        .unwrap();
    // Never acknowledge: the same block 1 comes back 1 + 3 times, each wait
    // twice the one before (100, 200, 400 ms), then nothing after 800 ms.
    let start = std::time::Instant::now();
    let mut at = Vec::new();
    for _ in 0..4 {
        let (b, _) = recv(&c).await;
        assert!(matches!(
            Packet::parse(&b).unwrap(),
            Packet::Data { block: 1, .. }
        ));
        at.push(start.elapsed());
    }
    let mut buf = [0u8; 2048];
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), c.recv_from(&mut buf))
            .await
            .is_err()
    );
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[1] > gaps[0] && gaps[2] > gaps[1],
        "retransmissions back off: {gaps:?}"
    );
    eventually(&fx.metrics.timed_out, 1).await;
    assert_eq!(fx.metrics.retransmits.load(Ordering::Relaxed), 3);
}

/// Records the local address each request arrived on.
struct Recorder(Arc<Mutex<Vec<(SocketAddr, String)>>>);

#[async_trait]
impl FileProvider for Recorder {
    async fn open(&self, r: &FileRequest<'_>) -> Result<FileSource, ProviderError> {
        self.0.lock().unwrap().push((r.local, r.path.to_owned()));
        Ok(FileSource::from_bytes(format!(
            "rendered for {}\n",
            r.local.ip()
        )))
    }
}

#[tokio::test]
async fn providers_learn_the_local_address_and_replies_come_from_it() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = TftpServer::bind(
        "0.0.0.0:0".parse().unwrap(),
        Recorder(seen.clone()),
        TftpConfig::default(),
    )
    .await
    .unwrap();
    let port = server.local_addr().unwrap().port();
    tokio::spawn(server.serve());
    for ip in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        let c = client().await;
        c.send_to(
            &packet::request(false, "grub/grub.cfg-52:54:00:12:34:56", "octet", &[]),
            (ip, port),
        )
        .await
        .unwrap();
        let (b, from) = recv(&c).await;
        assert_eq!(
            from.ip(),
            ip.parse::<IpAddr>().unwrap(),
            "the reply leaves from the address the client used"
        );
        let Packet::Data { data, .. } = Packet::parse(&b).unwrap() else {
            panic!()
        };
        assert_eq!(data, format!("rendered for {ip}\n").as_bytes());
        c.send_to(&packet::ack(1), from).await.unwrap();
    }
    let seen: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(l, _)| l.to_string())
        .collect();
    assert_eq!(
        seen,
        [
            format!("127.0.0.1:{port}"),
            format!("127.0.0.2:{port}"),
            format!("127.0.0.3:{port}")
        ]
    );
}
