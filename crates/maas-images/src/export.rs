//! A store's current generation as a SimpleStreams tree (what the boot-file
//! service answers under `streams/v1/`): the region publishes its images
//! this way and racks sync them with the ordinary client, file by digest.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::store::Manifest;
use crate::streams::{Index, IndexEntry, Item, Product, ProductVersion, Products};

/// The content id of an exported store.
pub const STORE_CONTENT_ID: &str = "org.maas-rs:store:download";
/// Where the exported products document is, relative to the tree.
pub const STORE_PRODUCTS_PATH: &str = "streams/v1/store.json";

/// The products document for a manifest: one product per image, one
/// version (the generation), items at `by-digest/<sha256>`.
pub fn products(manifest: &Manifest) -> Products {
    let mut products = BTreeMap::new();
    for image in &manifest.images {
        let k = &image.key;
        let id = format!(
            "{STORE_CONTENT_ID}:{}:{}:{}:{}:{}",
            k.os, k.arch, k.subarch, k.release, k.label
        );
        let items = image
            .files
            .iter()
            .map(|f| {
                (
                    f.ftype.as_str().to_owned(),
                    Item {
                        ftype: f.ftype.as_str().to_owned(),
                        path: format!("by-digest/{}", f.sha256),
                        sha256: Some(f.sha256.clone()),
                        size: Some(f.size),
                        attrs: Map::new(),
                    },
                )
            })
            .collect();
        let mut attrs = Map::new();
        for (name, v) in [
            ("os", &k.os),
            ("release", &k.release),
            ("arch", &k.arch),
            ("subarch", &k.subarch),
            ("label", &k.label),
        ] {
            attrs.insert(name.into(), Value::String(v.clone()));
        }
        let mut versions = BTreeMap::new();
        versions.insert(
            format!("{:020}", manifest.generation),
            ProductVersion {
                items,
                attrs: Map::new(),
            },
        );
        products.insert(id, Product { versions, attrs });
    }
    Products {
        content_id: STORE_CONTENT_ID.into(),
        datatype: Some("image-downloads".into()),
        format: "products:1.0".into(),
        updated: None,
        products,
        attrs: Map::new(),
    }
}

/// The index naming [`products`].
pub fn index(manifest: &Manifest) -> Index {
    let mut index = BTreeMap::new();
    index.insert(
        STORE_CONTENT_ID.to_owned(),
        IndexEntry {
            datatype: Some("image-downloads".into()),
            format: Some("products:1.0".into()),
            path: STORE_PRODUCTS_PATH.into(),
            updated: None,
            products: products(manifest).products.into_keys().collect(),
        },
    );
    Index {
        format: "index:1.0".into(),
        updated: None,
        index,
    }
}

pub(crate) fn index_json(manifest: &Manifest) -> Value {
    serde_json::to_value(index(manifest)).unwrap_or(Value::Null)
}

pub(crate) fn products_json(manifest: &Manifest) -> Value {
    serde_json::to_value(products(manifest)).unwrap_or(Value::Null)
}
