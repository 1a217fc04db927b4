//! Workspace checks, run by `cargo test -p xtask` and `cargo run -p xtask -- tidy`.
//!
//! - [`architecture_paths`]: every repository path `ARCHITECTURE.md` names in
//!   backticks exists, so the map never points at something gone.
//! - [`dependency_violations`]: the layer rule of `ARCHITECTURE.md`, checked
//!   on the output of `cargo metadata --no-deps`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The layer of each `maas-*` crate. A new crate must be added here (and to
/// `ARCHITECTURE.md`) or the check fails: the map must stay complete.
pub const LAYERS: &[(&str, u8)] = &[
    ("maas-core", 0),
    ("maas-store", 1),
    ("maas-power", 1),
    ("maas-dhcp", 1),
    ("maas-tftp", 1),
    ("maas-boot", 1),
    ("maas-iscsi", 1),
    ("maas-images", 1),
    ("maas-curtin", 1),
    ("maas-region", 2),
    ("maas-rack", 2),
    ("maas-agent", 2),
    ("maas-sim", 3),
];

/// Third-party crates only some crates may name.
pub const RESTRICTED: &[(&str, &str)] = &[
    ("sea-orm", "only maas-store names sea-orm"),
    ("sea-orm-migration", "only maas-store names sea-orm"),
    ("sqlx", "only maas-store talks to a database"),
    ("anyhow", "only layer-3 programs use anyhow"),
    ("axum", "only layers 2 and 3 name HTTP frameworks"),
    ("hyper", "only layers 2 and 3 name HTTP frameworks"),
    ("tower-http", "only layers 2 and 3 name HTTP frameworks"),
];

/// The repository root (the parent of this crate's directory).
///
/// Taken from `CARGO_MANIFEST_DIR` as cargo sets it when it runs the
/// program or its tests, and only then from the path compiled in: with a
/// target directory shared between checkouts (as `.ci/run` does), the
/// binary cargo runs may have been built from another checkout, and the
/// compiled-in path would check that one instead.
pub fn repo_root() -> PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    Path::new(&dir)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Top-level directories of the repository: a backticked word starting with
/// one of these is a path (`amd64/generic` is not).
pub const TOP_DIRS: &[&str] = &["crates/", "examples/", "xtask", "docs/", "daemons/", ".ci/"];

/// Paths named in backticks in a Markdown text: words under a top-level
/// directory, or ending in a file extension; URLs, globs, placeholders and
/// paths outside the repository (`../shared/...`) are not checked.
pub fn named_paths(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, chunk) in markdown.split('`').enumerate() {
        if i % 2 == 0 {
            continue;
        }
        let p = chunk.trim();
        let has_ext = [".md", ".rs", ".toml", ".sh", ".json", ".yaml"]
            .iter()
            .any(|e| p.ends_with(e));
        let looks_like_path = (TOP_DIRS.iter().any(|d| p.starts_with(d)) || has_ext)
            && !p.contains(' ')
            && !p.contains("://")
            && !p.contains('*')
            && !p.contains('<')
            && !p.contains('{')
            && !p.starts_with("../")
            && !p.starts_with('/');
        if looks_like_path {
            out.push(p.trim_end_matches('/').to_owned());
        }
    }
    out
}

/// The paths `markdown` names that do not exist under `root`.
pub fn architecture_paths(root: &Path, markdown: &str) -> Vec<String> {
    named_paths(markdown)
        .into_iter()
        .filter(|p| !root.join(p).exists())
        .collect()
}

/// The layer of a workspace package: `maas-*` from [`LAYERS`], programs
/// under `daemons/` and `examples/` are layer 3, `xtask` is outside the rule.
pub fn layer_of(name: &str, manifest_path: &str) -> Result<Option<u8>, String> {
    if name == "xtask" {
        return Ok(None);
    }
    if manifest_path.contains("/daemons/") || manifest_path.contains("/examples/") {
        return Ok(Some(3));
    }
    match LAYERS.iter().find(|(n, _)| *n == name) {
        Some((_, l)) => Ok(Some(*l)),
        None => Err(format!(
            "{name}: not in xtask::LAYERS; add it there and to ARCHITECTURE.md"
        )),
    }
}

/// Every violation of the dependency rule in `cargo metadata --no-deps`
/// output (normal and build dependencies; dev-dependencies are the crate's
/// own tests and do not reach its users).
pub fn dependency_violations(metadata: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let empty = Vec::new();
    let packages = metadata["packages"].as_array().unwrap_or(&empty);
    let mut layer: BTreeMap<String, u8> = BTreeMap::new();
    // Mains (daemons and examples) sit on top of layer 3: they may use the
    // layer-3 libraries (maas-sim for `maas demo`), never another main.
    let mut mains: std::collections::BTreeSet<String> = Default::default();
    for p in packages {
        let name = p["name"].as_str().unwrap_or_default();
        let manifest = p["manifest_path"].as_str().unwrap_or_default();
        if manifest.contains("/daemons/") || manifest.contains("/examples/") {
            mains.insert(name.to_owned());
        }
        match layer_of(name, manifest) {
            Ok(Some(l)) => {
                layer.insert(name.to_owned(), l);
            }
            Ok(None) => {}
            Err(e) => out.push(e),
        }
    }
    for p in packages {
        let name = p["name"].as_str().unwrap_or_default();
        let Some(&from) = layer.get(name) else {
            continue;
        };
        for d in p["dependencies"].as_array().unwrap_or(&empty) {
            if d["kind"].as_str() == Some("dev") {
                continue;
            }
            let dep = d["name"].as_str().unwrap_or_default();
            if let Some(&to) = layer.get(dep) {
                let ok = match from {
                    0 => false,
                    1 => to == 0,
                    2 => to < 2,
                    _ if mains.contains(name) => !mains.contains(dep),
                    _ => to < 3,
                };
                if !ok {
                    out.push(format!("{name} (layer {from}) depends on {dep} (layer {to}): dependencies point down the layers, never up or sideways"));
                }
            }
            if let Some((_, rule)) = RESTRICTED.iter().find(|(c, _)| *c == dep) {
                let allowed = match dep {
                    "sea-orm" | "sea-orm-migration" | "sqlx" => name == "maas-store",
                    "anyhow" => from == 3,
                    _ => from >= 2,
                };
                if !allowed {
                    out.push(format!("{name} depends on {dep}: {rule}"));
                }
            }
        }
    }
    out
}

/// Runs `cargo metadata --no-deps` for the workspace.
pub fn cargo_metadata() -> Result<serde_json::Value, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(repo_root())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata printed bad JSON: {e}"))
}
