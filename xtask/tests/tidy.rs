//! The workspace obeys its own map.

use serde_json::json;

#[test]
fn every_path_architecture_md_names_exists() {
    let root = xtask::repo_root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md at the repository root");
    let named = xtask::named_paths(&text);
    assert!(
        named.len() >= 10,
        "the map names the code it describes (found {named:?})"
    );
    let missing = xtask::architecture_paths(&root, &text);
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn the_crate_dependency_rule_holds() {
    let meta = xtask::cargo_metadata().expect("cargo metadata");
    let names: Vec<&str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"maas-core") && names.contains(&"maas-store"),
        "{names:?}"
    );
    let v = xtask::dependency_violations(&meta);
    assert!(v.is_empty(), "dependency rule broken:\n{}", v.join("\n"));
}

fn pkg(name: &str, deps: &[(&str, Option<&str>)]) -> serde_json::Value {
    json!({
        "name": name,
        "manifest_path": format!("/w/crates/{name}/Cargo.toml"),
        "dependencies": deps.iter().map(|(d, kind)| json!({"name": d, "kind": kind})).collect::<Vec<_>>(),
    })
}

#[test]
fn the_rule_catches_upward_sideways_and_restricted_edges() {
    let meta = json!({ "packages": [
        pkg("maas-core", &[("maas-store", None)]),
        pkg("maas-store", &[("maas-core", None), ("sea-orm", None)]),
        pkg("maas-dhcp", &[("maas-core", None), ("maas-tftp", None), ("sea-orm", None), ("maas-store", Some("dev"))]),
        pkg("maas-tftp", &[("anyhow", None)]),
        pkg("maas-region", &[("maas-store", None), ("axum", None), ("maas-rack", None)]),
        pkg("maas-rack", &[("maas-dhcp", None)]),
        pkg("maas-surprise", &[]),
    ]});
    let v = xtask::dependency_violations(&meta);
    let has = |s: &str| v.iter().any(|x| x.contains(s));
    assert!(has("maas-core (layer 0) depends on maas-store"), "{v:?}");
    assert!(has("maas-dhcp (layer 1) depends on maas-tftp"), "{v:?}");
    assert!(has("maas-dhcp depends on sea-orm"), "{v:?}");
    assert!(has("maas-tftp depends on anyhow"), "{v:?}");
    assert!(has("maas-region (layer 2) depends on maas-rack"), "{v:?}");
    assert!(has("maas-surprise: not in xtask::LAYERS"), "{v:?}");
    assert!(
        !has("maas-store depends on sea-orm"),
        "maas-store may: {v:?}"
    );
    assert!(
        !has("maas-dhcp (layer 1) depends on maas-store"),
        "dev-dependencies are allowed: {v:?}"
    );
    assert!(!has("maas-rack (layer 2) depends on maas-dhcp"), "{v:?}");
    assert_eq!(v.len(), 6, "{v:?}");
}

#[test]
fn missing_paths_are_reported() {
    let root = xtask::repo_root();
    let text = "see `crates/maas-core/src/lib.rs`, `crates/nope/src/gone.rs` and `GONE.md`, \
                not `https://x/y`, `amd64/generic`, `../shared/x.md` or `maas-*`";
    assert_eq!(
        xtask::architecture_paths(&root, text),
        ["crates/nope/src/gone.rs", "GONE.md"]
    );
}
