//! Typed identifiers.
//!
//! Nodes are named by a MAAS-style `system_id` (a short lowercase string that
//! clients treat as opaque); every other resource has an integer id wrapped in
//! its own type, so a `SubnetId` can never be passed where a `VlanId` is meant.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// The alphabet of generated system ids: lowercase letters and digits without
/// the easily confused ones (`0/o`, `1/l/i`, `2/z`, `5/s`, `u/v`), as MAAS does.
const SYSTEM_ID_ALPHABET: &[u8] = b"3479abcdefghjkmnpqrtwxy8";

/// Length of a generated system id.
pub const SYSTEM_ID_LEN: usize = 6;

/// The identifier of a node (machine, device, controller): `system_id` in the API.
///
/// Parsing accepts 1 to 64 ASCII lowercase letters and digits (ids imported from
/// another MAAS keep their spelling); [`SystemId::generate`] makes six characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SystemId(String);

impl SystemId {
    /// A new random system id.
    pub fn generate<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let s = (0..SYSTEM_ID_LEN)
            .map(|_| SYSTEM_ID_ALPHABET[rng.random_range(0..SYSTEM_ID_ALPHABET.len())] as char)
            .collect();
        SystemId(s)
    }

    /// A new random system id from the thread-local generator.
    pub fn random() -> Self {
        Self::generate(&mut rand::rng())
    }

    /// Parses and validates a system id.
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if ok {
            Ok(SystemId(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "system_id",
                s,
                "expected 1 to 64 lowercase letters or digits",
            ))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SystemId({})", self.0)
    }
}

impl FromStr for SystemId {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SystemId::parse(s)
    }
}

impl TryFrom<String> for SystemId {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        SystemId::parse(&s)
    }
}

impl From<SystemId> for String {
    fn from(id: SystemId) -> String {
        id.0
    }
}

/// Declares an integer id newtype with the usual conversions.
macro_rules! int_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl $name {
            /// The raw integer value.
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl From<i64> for $name {
            fn from(v: i64) -> Self {
                $name(v)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.trim().parse::<i64>().map($name).map_err(|_| {
                    ValidationError::new(stringify!($name), s, "expected an integer id")
                })
            }
        }
    };
}

int_id!(
    /// Id of an availability zone.
    ZoneId
);
int_id!(
    /// Id of a resource pool.
    PoolId
);
int_id!(
    /// Id of a tag.
    TagId
);
int_id!(
    /// Id of a user.
    UserId
);
int_id!(
    /// Id of an SSH public key.
    SshKeyId
);
int_id!(
    /// Id of an API token.
    TokenId
);
int_id!(
    /// Id of a DNS domain.
    DomainId
);
int_id!(
    /// Id of a fabric (a set of VLANs joined at layer 2).
    FabricId
);
int_id!(
    /// Id of a VLAN (the database id, not the 802.1Q `vid`).
    VlanId
);
int_id!(
    /// Id of a subnet.
    SubnetId
);
int_id!(
    /// Id of an IP range.
    IpRangeId
);
int_id!(
    /// Id of a space.
    SpaceId
);
int_id!(
    /// Id of an assigned IP address.
    StaticAddressId
);
int_id!(
    /// Id of a static route.
    StaticRouteId
);
int_id!(
    /// Id of a network interface.
    InterfaceId
);
int_id!(
    /// Id of a block device.
    BlockDeviceId
);
int_id!(
    /// Id of an event.
    EventId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_system_ids_parse_back() {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let id = SystemId::generate(&mut rng);
            assert_eq!(id.as_str().len(), SYSTEM_ID_LEN);
            assert_eq!(SystemId::parse(id.as_str()).unwrap(), id);
        }
    }

    #[test]
    fn bad_system_ids_are_rejected_with_the_field_named() {
        for bad in ["", "ABC", "a b", "x/y", &"a".repeat(65)] {
            let err = SystemId::parse(bad).unwrap_err();
            assert_eq!(err.field, "system_id");
        }
    }

    #[test]
    fn system_id_serializes_as_a_plain_string() {
        let id = SystemId::parse("4y3h7n").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"4y3h7n\"");
        let back: SystemId = serde_json::from_str("\"4y3h7n\"").unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<SystemId>("\"NOPE\"").is_err());
    }

    #[test]
    fn int_ids_parse_and_display() {
        let id: SubnetId = " 42".parse().unwrap();
        assert_eq!(id, SubnetId(42));
        assert_eq!(id.to_string(), "42");
        assert_eq!(format!("{id:?}"), "SubnetId(42)");
        assert!("x".parse::<VlanId>().is_err());
    }
}
