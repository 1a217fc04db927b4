//! Zones, resource pools, tags and DNS domains.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::ids::{DomainId, PoolId, TagId, ZoneId};

/// The zone every machine starts in; it cannot be deleted.
pub const DEFAULT_ZONE: &str = "default";
/// The pool every machine starts in; it cannot be deleted.
pub const DEFAULT_POOL: &str = "default";

/// Validates a zone, pool or tag name: 1 to 256 characters of letters,
/// digits, `-`, `_` and `.`, not starting with `-`.
pub fn validate_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            name,
            "expected letters, digits, '-', '_' or '.' (not starting with '-')",
        ))
    }
}

/// An availability zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// Id.
    pub id: ZoneId,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
}

/// A resource pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourcePool {
    /// Id.
    pub id: PoolId,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
}

/// A tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// Id.
    pub id: TagId,
    /// Unique name.
    pub name: String,
    /// XPath definition over commissioning data (empty = manual tag).
    pub definition: String,
    /// Free text.
    pub comment: String,
    /// Kernel options added when a tagged machine boots.
    pub kernel_opts: String,
}

/// A DNS domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    /// Id.
    pub id: DomainId,
    /// Unique name.
    pub name: String,
    /// Whether MAAS is authoritative for it.
    pub authoritative: bool,
    /// Default TTL, seconds.
    pub ttl: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("name", "rack-1_a.b").is_ok());
        for bad in ["", "-x", "a b", "a/b"] {
            assert_eq!(validate_name("name", bad).unwrap_err().field, "name");
        }
    }
}
