//! Any requested path: the directory provider either refuses it or resolves
//! it to a path under its root, never outside.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use maas_tftp::DirectoryProvider;

fn provider() -> &'static DirectoryProvider {
    static P: OnceLock<DirectoryProvider> = OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::temp_dir().join("maas-tftp-fuzz-root");
        std::fs::create_dir_all(&dir).expect("fuzz root");
        DirectoryProvider::new(&dir).expect("fuzz root")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    let p = provider();
    if let Ok(resolved) = p.resolve(path) {
        assert!(resolved.starts_with(p.root()), "{path:?} resolved to {resolved:?}");
        assert!(!resolved.components().any(|c| c == std::path::Component::ParentDir));
    }
});
