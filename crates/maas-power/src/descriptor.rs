//! What a driver declares about itself: name, capabilities, settings.
//!
//! The API, the CLI and a UI are generated from a [`DriverDescriptor`]
//! (it serializes to JSON); [`DriverDescriptor::validate`] turns the raw
//! string parameters a machine carries into typed [`PowerParams`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use maas_core::MacAddress;
use serde::Serialize;

use crate::error::PowerError;
use crate::secret::Secret;

/// A driver's static description.
#[derive(Debug, Clone, Serialize)]
pub struct DriverDescriptor {
    /// The name machines refer to (`redfish`, `virsh`).
    pub name: &'static str,
    /// A one-line description for people.
    pub description: &'static str,
    /// What the driver can do.
    pub capabilities: Capabilities,
    /// Its settings, in display order.
    pub settings: &'static [SettingField],
}

/// What a driver can do, for the executor and for UIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// `query` reports the real state (so the executor verifies actions).
    pub queryable: bool,
    /// `set_boot_device` is implemented.
    pub boot_device: bool,
    /// A soft (graceful) power off is implemented.
    pub soft_off: bool,
    /// The BMC controls several machines (a chassis, a hypervisor).
    pub chassis: bool,
    /// `probe` tells more than a query.
    pub probe: bool,
}

/// The type of a setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Free text.
    String,
    /// A password (always secret).
    Password,
    /// One of the field's `choices`.
    Choice,
    /// A MAC address (normalized to lowercase with colons).
    Mac,
    /// An IPv4 or IPv6 address.
    IpAddress,
    /// A decimal integer.
    Integer,
}

/// Whether a setting belongs to the BMC (shared by the machines behind it)
/// or to one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// The BMC: address, credentials. These (less the secrets) identify the
    /// BMC for the executor's one-action-at-a-time rule.
    Bmc,
    /// The machine: a domain name, a system id.
    Machine,
}

/// One setting of a driver.
#[derive(Debug, Clone, Serialize)]
pub struct SettingField {
    /// The parameter name (`power_address`).
    pub name: &'static str,
    /// A label for people.
    pub label: &'static str,
    /// The value's type.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Whether a value (or a default) must be present.
    pub required: bool,
    /// The value used when none is given.
    pub default: Option<&'static str>,
    /// For `Choice`: `(value, label)` pairs.
    pub choices: &'static [(&'static str, &'static str)],
    /// BMC or machine.
    pub scope: Scope,
    /// Held as a [`Secret`] and never shown (always true for passwords).
    pub secret: bool,
}

impl SettingField {
    /// A field with the usual defaults: free text, optional, no default,
    /// BMC scope, not secret. Adjust with struct update syntax.
    pub const fn new(name: &'static str, label: &'static str) -> Self {
        Self {
            name,
            label,
            field_type: FieldType::String,
            required: false,
            default: None,
            choices: &[],
            scope: Scope::Bmc,
            secret: false,
        }
    }

    /// Whether values of this field are held as secrets.
    pub fn is_secret(&self) -> bool {
        self.secret || self.field_type == FieldType::Password
    }
}

/// A validated parameter value.
#[derive(Clone, PartialEq, Eq)]
pub enum ParamValue {
    /// Text (strings, choices, MAC and IP addresses, in normalized form).
    Text(String),
    /// An integer.
    Integer(i64),
    /// A secret.
    Secret(Secret),
}

impl fmt::Debug for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Text(s) => write!(f, "{s:?}"),
            ParamValue::Integer(i) => write!(f, "{i}"),
            ParamValue::Secret(s) => write!(f, "{s:?}"),
        }
    }
}

/// Parameters validated against a driver's settings, defaults applied.
///
/// `Debug` shows secrets as `***`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PowerParams {
    values: BTreeMap<String, ParamValue>,
    bmc_key: String,
}

impl PowerParams {
    /// A non-secret text value (strings, choices, addresses) or an integer
    /// as text; `None` for absent and secret fields.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.values.get(name)? {
            ParamValue::Text(s) => Some(s),
            _ => None,
        }
    }

    /// An integer value.
    pub fn integer(&self, name: &str) -> Option<i64> {
        match self.values.get(name)? {
            ParamValue::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// A secret value.
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        match self.values.get(name)? {
            ParamValue::Secret(s) => Some(s),
            _ => None,
        }
    }

    /// A value of any kind.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.get(name)
    }

    /// A choice field read as a yes/no flag (`y`, `yes`, `true`, `1`).
    pub fn flag(&self, name: &str) -> bool {
        matches!(
            self.text(name).map(str::to_ascii_lowercase).as_deref(),
            Some("y" | "yes" | "true" | "1")
        )
    }

    /// Identifies the BMC: the driver name and its non-secret BMC-scoped
    /// values (choices, which are options rather than identity, left out). The executor runs one action at a time per key.
    pub fn bmc_key(&self) -> &str {
        &self.bmc_key
    }
}

impl DriverDescriptor {
    /// A setting by name.
    pub fn setting(&self, name: &str) -> Option<&SettingField> {
        self.settings.iter().find(|f| f.name == name)
    }

    /// Checks raw string parameters against the settings: unknown names,
    /// missing required values and malformed values are refused with an
    /// error naming the field; defaults are applied; empty strings count as
    /// absent.
    pub fn validate<'a, I>(&self, raw: I) -> Result<PowerParams, PowerError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut given: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in raw {
            if self.setting(k).is_none() {
                return Err(PowerError::UnknownParameter {
                    driver: self.name.to_owned(),
                    field: k.to_owned(),
                });
            }
            given.insert(k, v);
        }
        let mut values = BTreeMap::new();
        for field in self.settings {
            let raw = match given.get(field.name).copied().filter(|v| !v.is_empty()) {
                Some(v) => v,
                None => match field.default {
                    Some(d) => d,
                    None if field.required => {
                        return Err(PowerError::MissingParameter {
                            driver: self.name.to_owned(),
                            field: field.name.to_owned(),
                        });
                    }
                    None => continue,
                },
            };
            values.insert(field.name.to_owned(), parse_value(field, raw)?);
        }
        let mut bmc_key = self.name.to_owned();
        for field in self.settings {
            if field.scope == Scope::Bmc
                && !field.is_secret()
                && field.field_type != FieldType::Choice
            {
                if let Some(ParamValue::Text(v)) = values.get(field.name) {
                    bmc_key.push('|');
                    bmc_key.push_str(v);
                } else if let Some(ParamValue::Integer(i)) = values.get(field.name) {
                    bmc_key.push('|');
                    bmc_key.push_str(&i.to_string());
                }
            }
        }
        Ok(PowerParams { values, bmc_key })
    }

    /// The descriptor as a JSON value (for APIs and UIs).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

fn parse_value(field: &SettingField, raw: &str) -> Result<ParamValue, PowerError> {
    let invalid = |reason: String| PowerError::InvalidParameter {
        field: field.name.to_owned(),
        reason,
    };
    if field.is_secret() {
        if field.field_type == FieldType::Choice && !field.choices.iter().any(|(v, _)| *v == raw) {
            return Err(invalid("not one of the allowed choices".into()));
        }
        return Ok(ParamValue::Secret(Secret::new(raw)));
    }
    if raw.chars().any(char::is_control) {
        return Err(invalid(format!("{raw:?} contains control characters")));
    }
    match field.field_type {
        FieldType::String | FieldType::Password => Ok(ParamValue::Text(raw.to_owned())),
        FieldType::Choice => {
            if field.choices.iter().any(|(v, _)| *v == raw) {
                Ok(ParamValue::Text(raw.to_owned()))
            } else {
                let allowed: Vec<&str> = field.choices.iter().map(|(v, _)| *v).collect();
                Err(invalid(format!("{raw:?} is not one of {allowed:?}")))
            }
        }
        FieldType::Mac => MacAddress::parse(raw)
            .map(|m| ParamValue::Text(m.to_string()))
            .map_err(|_| invalid(format!("{raw:?} is not a MAC address"))),
        FieldType::IpAddress => raw
            .trim()
            .parse::<IpAddr>()
            .map(|ip| ParamValue::Text(ip.to_string()))
            .map_err(|_| invalid(format!("{raw:?} is not an IP address"))),
        FieldType::Integer => raw
            .trim()
            .parse::<i64>()
            .map(ParamValue::Integer)
            .map_err(|_| invalid(format!("{raw:?} is not an integer"))),
    }
}
