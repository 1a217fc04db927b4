//! OpenPGP interoperability with GnuPG: `gpg --verify` accepts what our
//! builder signs, and our keyring accepts streams `gpg --clearsign` signed
//! with RSA and Ed25519 keys `gpg` made (exported binary, as the Ubuntu
//! cloud image keyring is).

mod common;

use std::process::Output;

use common::*;
use maas_images::{
    ImageError, ImageStore, Keyring, StreamSigningKey, StreamSource, SyncConfig, sync,
};

struct GpgHome {
    gpg: std::path::PathBuf,
    home: tempfile::TempDir,
}

impl GpgHome {
    fn new() -> Option<Self> {
        let gpg = tool("gpg")?;
        let home = tempfile::Builder::new()
            .prefix("gpg")
            .tempdir_in("/tmp")
            .unwrap();
        Some(Self { gpg, home })
    }

    fn run(&self, args: &[&str]) -> Output {
        std::process::Command::new(&self.gpg)
            .arg("--homedir")
            .arg(self.home.path())
            .args([
                "--batch",
                "--no-tty",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        // gpg starts an agent for the home directory; stop it.
        let _ = std::process::Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn gpg_verifies_what_our_builder_signs() {
    let Some(gpg) = GpgHome::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = StreamSigningKey::generate("maas-rs test <images@example.com>").unwrap();
    let img = ImageFiles::new(noble(), "20240423", 1000);
    let tree = build_tree(dir.path(), "mirror", &[&img], Some(&key));
    let public = dir.path().join("public.asc");
    std::fs::write(&public, key.public_armored().unwrap()).unwrap();
    ok(&gpg.run(&["--import", public.to_str().unwrap()]), "import");

    for doc in [
        "streams/v1/index.sjson",
        "streams/v1/org.maas-rs.test:v1:download.sjson",
    ] {
        let out = gpg.run(&["--verify", tree.join(doc).to_str().unwrap()]);
        ok(&out, doc);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Good signature"), "{err}");
        assert!(
            err.contains(&key.fingerprint().to_uppercase()[24..]),
            "{err}"
        );
    }
    // gpg refuses a tampered copy too.
    let p = tree.join("streams/v1/index.sjson");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("image-downloads", "image-uploads")).unwrap();
    let out = gpg.run(&["--verify", p.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("BAD signature"));
}

fn gpg_signed_stream_verifies(algo: &str) {
    let Some(gpg) = GpgHome::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let img = ImageFiles::new(noble(), "20240423", 1000);
    // An unsigned tree, then gpg signs its documents.
    let tree = build_tree(dir.path(), "mirror", &[&img], None);
    let uid = format!("gpg {algo} <gpg-{algo}@example.com>");
    ok(
        &gpg.run(&["--quick-generate-key", &uid, algo, "sign", "never"]),
        "keygen",
    );
    for doc in [
        "streams/v1/index",
        "streams/v1/org.maas-rs.test:v1:download",
    ] {
        let json = tree.join(format!("{doc}.json"));
        let sjson = tree.join(format!("{doc}.sjson"));
        ok(
            &gpg.run(&[
                "--local-user",
                &uid,
                "--output",
                sjson.to_str().unwrap(),
                "--clearsign",
                json.to_str().unwrap(),
            ]),
            "clearsign",
        );
    }
    let out = gpg.run(&["--export", &uid]);
    ok(&out, "export");
    let keyring_file = dir.path().join("keyring.gpg");
    std::fs::write(&keyring_file, &out.stdout).unwrap();
    let keyring = Keyring::from_file(&keyring_file).unwrap();
    assert_eq!(keyring.len(), 1);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = ImageStore::open(dir.path().join("store")).unwrap();
        let config = SyncConfig {
            keyring: Some(keyring.clone()),
            ..SyncConfig::default()
        };
        let r = sync(&StreamSource::directory(&tree), &store, &config, &|_| {})
            .await
            .unwrap();
        assert_eq!(r.files_downloaded, 3);

        // A stream gpg signed with a key not in our keyring is refused.
        let other = StreamSigningKey::generate("other <o@example.com>").unwrap();
        let config = SyncConfig {
            keyring: Some(other.keyring()),
            ..SyncConfig::default()
        };
        let err = sync(&StreamSource::directory(&tree), &store, &config, &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::BadSignature { .. }), "{err:?}");
    });
}

#[test]
fn we_verify_streams_gpg_signed_with_rsa() {
    gpg_signed_stream_verifies("rsa2048");
}

#[test]
fn we_verify_streams_gpg_signed_with_ed25519() {
    gpg_signed_stream_verifies("ed25519");
}
