//! `set_storage_layout` and the layout a machine deploys with: maas-curtin's
//! layouts (flat, lvm, bcache, blank), chosen per machine and stored with it,
//! else the `default_storage_layout` setting.

use maas_core::lifecycle::NodeStatus;
use maas_core::machine::Machine;
use maas_curtin::StorageLayout;
use serde_json::{Map, Value, json};

use crate::Region;
use crate::api::Req;
use crate::error::ApiError;

/// A size as MAAS takes it: bytes, or a number with a K, M, G or T suffix
/// (powers of 1000, as MAAS's `human_readable_bytes` parser does), or a
/// percentage of the disk (not taken here: named as unsupported).
fn size(field: &str, raw: &str) -> Result<u64, ApiError> {
    let t = raw.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1_000,
                'M' => 1_000_000,
                'G' => 1_000_000_000,
                'T' => 1_000_000_000_000,
                _ => {
                    return Err(ApiError::invalid(
                        field,
                        format!("{raw:?}: the suffix is not K, M, G or T."),
                    ));
                }
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: f64 = digits
        .parse()
        .map_err(|_| ApiError::invalid(field, format!("{raw:?} is not a size.")))?;
    if !(n.is_finite() && n > 0.0) {
        return Err(ApiError::invalid(
            field,
            format!("{raw:?} is not a positive size."),
        ));
    }
    Ok((n * mult as f64) as u64)
}

/// The layout the request describes, checked against the machine.
fn layout_from(r: &Req<'_>, m: &Machine) -> Result<StorageLayout, ApiError> {
    let p = &r.params;
    let name = p
        .get("storage_layout")
        .ok_or_else(|| ApiError::required("storage_layout"))?
        .to_ascii_lowercase();
    if !matches!(name.as_str(), "flat" | "lvm" | "bcache" | "blank") {
        return Err(ApiError::invalid(
            "storage_layout",
            format!("{name:?} is not one of flat, lvm, bcache, blank."),
        ));
    }
    let mut o = Map::new();
    o.insert("layout".into(), json!(name));
    if let Some(dev) = p.get("root_device") {
        // A block device id or name.
        let d = m
            .block_devices
            .iter()
            .find(|d| d.id.is_some_and(|i| i.0.to_string() == dev) || d.name == dev)
            .ok_or_else(|| {
                ApiError::invalid(
                    "root_device",
                    format!("{dev:?} is not a disk of this machine."),
                )
            })?;
        o.insert("boot_disk".into(), json!(d.name));
    }
    for (param, key) in [
        ("boot_size", "boot_size"),
        ("root_size", "root_size"),
        ("lv_size", "root_size"),
    ] {
        if let Some(v) = p.get(param) {
            o.insert(key.into(), json!(size(param, v)?));
        }
    }
    let only = |param: &str, layout: &str| -> Result<(), ApiError> {
        if p.get(param).is_some() && name != layout {
            return Err(ApiError::invalid(
                param,
                format!("only the {layout} layout takes {param}."),
            ));
        }
        Ok(())
    };
    for param in ["vg_name", "lv_name", "lv_size"] {
        only(param, "lvm")?;
    }
    for param in ["cache_device", "cache_mode"] {
        only(param, "bcache")?;
    }
    for param in ["vg_name", "lv_name", "cache_mode"] {
        if let Some(v) = p.get(param) {
            o.insert(param.into(), json!(v.to_ascii_lowercase()));
        }
    }
    if let Some(dev) = p.get("cache_device") {
        let d = m
            .block_devices
            .iter()
            .find(|d| d.id.is_some_and(|i| i.0.to_string() == dev) || d.name == dev)
            .ok_or_else(|| {
                ApiError::invalid(
                    "cache_device",
                    format!("{dev:?} is not a disk of this machine."),
                )
            })?;
        o.insert("cache_device".into(), json!(d.name));
    }
    let layout: StorageLayout = serde_json::from_value(Value::Object(o))
        .map_err(|e| ApiError::BadRequest(format!("bad storage layout: {e}")))?;
    layout
        .plan(m)
        .and_then(|plan| plan.validate(m).map(|_| ()))
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "the {name} layout does not fit {}: {e}",
                m.system_id
            ))
        })?;
    Ok(layout)
}

/// `POST machines/{system_id}/?op=set_storage_layout` (admin; Ready or
/// Allocated machines, as MAAS).
pub(crate) async fn set_layout(r: &Req<'_>, m: Machine) -> Result<Machine, ApiError> {
    r.admin()?;
    if !matches!(m.status, NodeStatus::Ready | NodeStatus::Allocated) {
        return Err(ApiError::Conflict(format!(
            "Cannot change the storage layout of {} while it is {}; it must be Ready or Allocated.",
            m.system_id,
            m.status.label()
        )));
    }
    let layout = layout_from(r, &m)?;
    let mut m = m;
    m.storage_layout = Some(
        serde_json::to_string(&layout)
            .map_err(|e| ApiError::Internal(format!("storing the layout: {e}")))?,
    );
    Ok(r.region.store().machine_update(&m).await?)
}

impl Region {
    /// The layout `m` deploys with: its own, else the configured default.
    pub(crate) async fn storage_layout(&self, m: &Machine) -> Result<StorageLayout, ApiError> {
        if let Some(raw) = &m.storage_layout {
            return serde_json::from_str(raw).map_err(|e| {
                ApiError::Internal(format!(
                    "stored layout of {} is unreadable: {e}",
                    m.system_id
                ))
            });
        }
        self.default_layout().await
    }

    /// The `default_storage_layout` setting as a layout.
    pub(crate) async fn default_layout(&self) -> Result<StorageLayout, ApiError> {
        let name = self.setting("default_storage_layout").await?;
        let name = name.as_str().unwrap_or("flat");
        // vmfs and custom defaults have no generated form here: flat.
        let name = if matches!(name, "flat" | "lvm" | "bcache" | "blank") {
            name
        } else {
            "flat"
        };
        serde_json::from_value(json!({"layout": name}))
            .map_err(|e| ApiError::Internal(format!("default layout {name}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes_take_maas_suffixes() {
        assert_eq!(size("s", "1048576").unwrap(), 1_048_576);
        assert_eq!(size("s", "10G").unwrap(), 10_000_000_000);
        assert_eq!(size("s", "1.5T").unwrap(), 1_500_000_000_000);
        assert!(size("s", "10Q").is_err());
        assert!(size("s", "-5").is_err());
        assert!(size("s", "lots").is_err());
    }
}
