//! `maas/?op=get_config|set_config`: the region's settings.
//!
//! The names are MAAS's (section 6.17 of the spec); each has a kind that
//! `set_config` checks the value against and a default that `get_config`
//! answers until it is set. Values are stored as JSON text, so every region
//! on one database reads the same settings.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Region;
use crate::api::Req;
use crate::error::ApiError;

/// What a setting holds.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Bool,
    /// A whole number, at least this.
    Int(i64),
    /// One of these words.
    Choice(&'static [&'static str]),
}

use Kind::{Bool, Choice, Int, Text};

/// Every setting: name, kind, default (as JSON), and, for the ones this
/// region reads itself, where it comes from.
const SETTINGS: &[(&str, Kind, &str)] = &[
    ("maas_name", Text, r#""maas""#),
    ("theme", Text, r#""""#),
    ("kernel_opts", Text, r#""""#),
    ("enable_http_proxy", Bool, "true"),
    ("maas_proxy_port", Int(1), "8000"),
    ("use_peer_proxy", Bool, "false"),
    ("http_proxy", Text, r#""""#),
    ("default_dns_ttl", Int(1), "30"),
    ("upstream_dns", Text, r#""""#),
    (
        "dnssec_validation",
        Choice(&["auto", "yes", "no"]),
        r#""auto""#,
    ),
    ("maas_internal_domain", Text, r#""maas-internal""#),
    ("dns_trusted_acl", Text, r#""""#),
    ("ntp_servers", Text, r#""ntp.ubuntu.com""#),
    ("ntp_external_only", Bool, "false"),
    ("allow_only_trusted_transfers", Bool, "false"),
    ("remote_syslog", Text, r#""""#),
    ("maas_syslog_port", Int(1), "5247"),
    (
        "network_discovery",
        Choice(&["enabled", "disabled"]),
        r#""enabled""#,
    ),
    ("active_discovery_interval", Int(0), "10800"),
    (
        "default_boot_interface_link_type",
        Choice(&["auto", "dhcp", "static", "link_up"]),
        r#""auto""#,
    ),
    ("default_osystem", Text, r#""ubuntu""#),
    ("default_distro_series", Text, r#""noble""#),
    ("default_min_hwe_kernel", Text, r#""""#),
    ("enable_kernel_crash_dump", Bool, "false"),
    (
        "default_storage_layout",
        Choice(&["flat", "lvm", "bcache", "blank", "custom", "vmfs6", "vmfs7"]),
        r#""flat""#,
    ),
    ("commissioning_distro_series", Text, r#""noble""#),
    ("enable_third_party_drivers", Bool, "true"),
    ("windows_kms_host", Text, r#""""#),
    ("enable_disk_erasing_on_release", Bool, "false"),
    ("disk_erase_with_secure_erase", Bool, "true"),
    ("disk_erase_with_quick_erase", Bool, "false"),
    ("boot_images_auto_import", Bool, "true"),
    ("boot_images_no_proxy", Bool, "false"),
    ("curtin_verbose", Bool, "true"),
    ("enable_analytics", Bool, "true"),
    ("experimental_switch_provisioning", Bool, "false"),
    ("completed_intro", Bool, "false"),
    ("max_node_commissioning_results", Int(1), "10"),
    ("max_node_testing_results", Int(1), "10"),
    ("max_node_installation_results", Int(1), "3"),
    ("max_node_release_results", Int(1), "3"),
    ("subnet_ip_exhaustion_threshold_count", Int(0), "50"),
    ("refresh_token_duration", Int(1), "86400"),
    ("release_notifications", Bool, "true"),
    ("use_rack_proxy", Bool, "true"),
    ("node_timeout", Int(1), "30"),
    ("prometheus_enabled", Bool, "false"),
    ("prometheus_push_gateway", Text, r#""""#),
    ("prometheus_push_interval", Int(1), "60"),
    ("promtail_enabled", Bool, "false"),
    ("promtail_port", Int(1), "5238"),
    ("enlist_commissioning", Bool, "true"),
    ("maas_auto_ipmi_user", Text, r#""maas""#),
    (
        "maas_auto_ipmi_user_privilege_level",
        Choice(&["ADMIN", "OPERATOR", "USER"]),
        r#""ADMIN""#,
    ),
    ("maas_auto_ipmi_k_g_bmc_key", Text, r#""""#),
    ("maas_auto_ipmi_cipher_suite_id", Text, r#""3""#),
    ("maas_auto_ipmi_workaround_flags", Text, r#""opensesspriv""#),
    ("vcenter_server", Text, r#""""#),
    ("vcenter_username", Text, r#""""#),
    ("vcenter_password", Text, r#""""#),
    ("vcenter_datacenter", Text, r#""""#),
    ("hardware_sync_interval", Text, r#""15m""#),
    ("tls_cert_expiration_notification_enabled", Bool, "false"),
    ("tls_cert_expiration_notification_interval", Int(1), "30"),
    ("session_length", Int(60), "1209600"),
    ("auto_vlan_creation", Bool, "true"),
];

/// Where the default domain is kept in the settings table.
pub(crate) const DEFAULT_DOMAIN_KEY: &str = "default_domain";

/// Settings whose values are secrets: readable by admins only (all of
/// `maas/` is), never logged.
const SECRET: &[&str] = &["vcenter_password", "maas_auto_ipmi_k_g_bmc_key"];

fn lookup(name: &str) -> Option<(&'static str, Kind, &'static str)> {
    // `ntp_server` is the old name of `ntp_servers`.
    let name = if name == "ntp_server" {
        "ntp_servers"
    } else {
        name
    };
    SETTINGS.iter().copied().find(|(n, _, _)| *n == name)
}

fn unknown(name: &str) -> ApiError {
    ApiError::invalid(
        "name",
        format!("{name:?} is not a valid config setting name."),
    )
}

/// The JSON a raw `set_config` value becomes for its kind.
fn parse(name: &str, kind: Kind, raw: &str) -> Result<Value, ApiError> {
    match kind {
        Text => Ok(json!(raw)),
        Bool => match raw.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(json!(true)),
            "false" | "no" | "off" | "0" | "" => Ok(json!(false)),
            _ => Err(ApiError::invalid(
                "value",
                format!("{raw:?} is not a boolean (true/false) for {name}."),
            )),
        },
        Int(min) => match raw.trim().parse::<i64>() {
            Ok(n) if n >= min => Ok(json!(n)),
            Ok(n) => Err(ApiError::invalid(
                "value",
                format!("{n} is below {min}, the least {name} takes."),
            )),
            Err(_) => Err(ApiError::invalid(
                "value",
                format!("{raw:?} is not a whole number for {name}."),
            )),
        },
        Choice(words) => words
            .iter()
            .find(|w| w.eq_ignore_ascii_case(raw))
            .map(|w| json!(w))
            .ok_or_else(|| {
                ApiError::invalid(
                    "value",
                    format!("{raw:?} is not one of {} for {name}.", words.join(", ")),
                )
            }),
    }
}

impl Region {
    /// A setting's value: what was set, else its default (the OS and series
    /// defaults come from the region's config file until set).
    pub(crate) async fn setting(&self, name: &str) -> Result<Value, ApiError> {
        let (name, _, default) = lookup(name).ok_or_else(|| unknown(name))?;
        let stored = self.store().config_list().await?;
        if let Some(v) = stored.get(name) {
            return serde_json::from_str(v)
                .map_err(|e| ApiError::Internal(format!("setting {name} is not JSON: {e}")));
        }
        Ok(match name {
            "default_osystem" => json!(self.config().default_osystem),
            "default_distro_series" => json!(self.config().default_distro_series),
            _ => serde_json::from_str(default)
                .map_err(|e| ApiError::Internal(format!("default of {name}: {e}")))?,
        })
    }

    /// The domain new machines go in (`domains/{id}/?op=set_default`; kept
    /// in the settings table under a name `get_config` does not serve).
    pub(crate) async fn default_domain(&self) -> Result<String, ApiError> {
        let stored = self.store().config_list().await?;
        Ok(stored
            .get(DEFAULT_DOMAIN_KEY)
            .and_then(|v| serde_json::from_str::<String>(v).ok())
            .unwrap_or_else(|| maas_core::types::DomainName::maas().to_string()))
    }

    /// [`Region::default_domain`] as a name.
    pub(crate) async fn default_domain_name(
        &self,
    ) -> Result<maas_core::types::DomainName, ApiError> {
        let d = self.default_domain().await?;
        maas_core::types::DomainName::parse(&d)
            .map_err(|e| ApiError::Internal(format!("default domain {d:?}: {e}")))
    }

    /// Whether a release that does not say erases the disks
    /// (`enable_disk_erasing_on_release`).
    pub(crate) async fn erase_on_release(&self) -> Result<bool, ApiError> {
        Ok(self
            .setting("enable_disk_erasing_on_release")
            .await?
            .as_bool()
            .unwrap_or(false))
    }

    /// `(osystem, series)` a deployment that names none gets.
    pub(crate) async fn default_release(&self) -> Result<(String, String), ApiError> {
        let text = |v: Value| v.as_str().unwrap_or_default().to_owned();
        Ok((
            text(self.setting("default_osystem").await?),
            text(self.setting("default_distro_series").await?),
        ))
    }
}

/// `GET maas/?op=get_config&name=...` and `POST maas/?op=set_config`.
pub(crate) async fn run(r: &Req<'_>, op: &str) -> Result<Response, ApiError> {
    r.admin()?;
    let name = r
        .params
        .get("name")
        .ok_or_else(|| ApiError::required("name"))?;
    let (canonical, kind, _) = lookup(name).ok_or_else(|| unknown(name))?;
    match op {
        "get_config" => {
            let v = r.region.setting(canonical).await?;
            Ok(([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response())
        }
        _ => {
            // `get` treats an empty value as absent; an empty value is a
            // legitimate setting (clearing `http_proxy`).
            let raw = r
                .params
                .pairs()
                .find(|(k, _)| *k == "value")
                .map(|(_, v)| v)
                .unwrap_or("");
            let v = parse(canonical, kind, raw)?;
            r.region
                .store()
                .config_set(canonical, &v.to_string())
                .await?;
            if SECRET.contains(&canonical) {
                tracing::info!(
                    name = canonical,
                    "setting changed (secret, value not logged)"
                );
            } else {
                tracing::info!(name = canonical, value = %v, "setting changed");
            }
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "OK").into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_is_json_of_its_kind() {
        for (name, kind, default) in SETTINGS {
            let v: Value = serde_json::from_str(default).unwrap();
            let fits = match kind {
                Text => v.is_string(),
                Bool => v.is_boolean(),
                Int(min) => v.as_i64().is_some_and(|n| n >= *min),
                Choice(words) => v.as_str().is_some_and(|s| words.contains(&s)),
            };
            assert!(fits, "{name}: {default}");
        }
    }

    #[test]
    fn values_are_checked_against_the_kind() {
        assert_eq!(parse("x", Bool, "Yes").unwrap(), json!(true));
        assert_eq!(parse("x", Int(1), " 42 ").unwrap(), json!(42));
        assert!(parse("x", Int(1), "0").is_err());
        assert!(parse("x", Int(1), "many").is_err());
        assert_eq!(
            parse("x", Choice(&["auto", "yes"]), "AUTO").unwrap(),
            json!("auto")
        );
        assert!(parse("x", Choice(&["auto", "yes"]), "maybe").is_err());
        assert!(lookup("ntp_server").is_some());
        assert!(lookup("no_such_thing").is_none());
    }
}
