//! cloud-init documents: the preseed the ephemeral environment's kernel
//! command line points at, the user data and vendor data the metadata
//! service serves, the files curtin writes into the target so the deployed
//! OS finds the metadata service, and the user's deploy user data.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use maas_core::SystemId;
use maas_core::account::{ApiToken, TokenKeys};
use maas_core::machine::Machine;
use serde::Serialize;

use crate::error::{CurtinError, invalid};
use crate::template::{TemplateStore, candidate_names};

/// The header every cloud-config document starts with.
pub const CLOUD_CONFIG_HEADER: &str = "#cloud-config\n";

/// The metadata service as machines reach it: `http://<rack>:5248`, with
/// MAAS's paths under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataEndpoint {
    base: String,
}

impl MetadataEndpoint {
    /// `base` is `http://host[:port]` or `https://...`, with no path (the
    /// rack's proxy, an IP literal in MAAS).
    pub fn new(base: &str) -> Result<Self, CurtinError> {
        let base = base.trim_end_matches('/');
        check_url("metadata endpoint", base)?;
        let rest = base.split_once("://").map_or("", |(_, r)| r);
        if rest.contains('/') {
            return Err(invalid(
                "metadata endpoint",
                base,
                "expected scheme://host[:port] with no path",
            ));
        }
        Ok(MetadataEndpoint {
            base: base.to_owned(),
        })
    }

    /// `…/MAAS/metadata/`, cloud-init's `metadata_url`.
    pub fn metadata_url(&self) -> String {
        format!("{}/MAAS/metadata/", self.base)
    }

    /// `…/MAAS/metadata/curtin`, the `metadata_url` of the install
    /// environment.
    pub fn curtin_metadata_url(&self) -> String {
        format!("{}/MAAS/metadata/curtin", self.base)
    }

    /// `…/MAAS/metadata/status/{system_id}`, the status webhook.
    pub fn status_url(&self, system_id: &SystemId) -> String {
        format!("{}/MAAS/metadata/status/{system_id}", self.base)
    }

    /// `…/MAAS/metadata/latest/by-id/{system_id}/`, posted `op=netboot_off`
    /// at the end of an install so the machine boots its disk next.
    pub fn by_id_url(&self, system_id: &SystemId) -> String {
        format!("{}/MAAS/metadata/latest/by-id/{system_id}/", self.base)
    }
}

/// Checks an http(s) URL that ends up in YAML and on command lines.
pub(crate) fn check_url(field: &'static str, url: &str) -> Result<(), CurtinError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| invalid(field, url, "expected an http:// or https:// URL"))?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    if host.is_empty() {
        return Err(invalid(field, url, "the URL has no host"));
    }
    if url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | '`'))
    {
        return Err(invalid(
            field,
            url,
            "the URL has spaces, quotes or control characters",
        ));
    }
    Ok(())
}

/// A machine's OAuth credentials for the metadata service. `Debug` hides
/// the secret.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct NodeCredentials {
    /// OAuth consumer key.
    pub consumer_key: String,
    /// OAuth token key.
    pub token_key: String,
    /// OAuth token secret.
    pub token_secret: String,
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("consumer_key", &self.consumer_key)
            .field("token_key", &self.token_key)
            .field("token_secret", &"<redacted>")
            .finish()
    }
}

impl From<&ApiToken> for NodeCredentials {
    fn from(t: &ApiToken) -> Self {
        NodeCredentials {
            consumer_key: t.consumer_key.clone(),
            token_key: t.token_key.clone(),
            token_secret: t.token_secret.clone(),
        }
    }
}

impl From<&TokenKeys> for NodeCredentials {
    fn from(t: &TokenKeys) -> Self {
        NodeCredentials {
            consumer_key: t.consumer_key.clone(),
            token_key: t.token_key.clone(),
            token_secret: t.token_secret.clone(),
        }
    }
}

/// Why the ephemeral environment boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EphemeralPurpose {
    /// An unknown machine reports itself (anonymous).
    Enlist,
    /// Inventory and commissioning scripts.
    Commission,
    /// Hardware tests.
    Test,
    /// Disk erasure on release.
    Erase,
    /// Rescue mode: stays up for the operator.
    Rescue,
    /// The install environment of a deployment (curtin runs in it).
    Deploy,
}

impl EphemeralPurpose {
    /// Every purpose.
    pub const ALL: [EphemeralPurpose; 6] = [
        EphemeralPurpose::Enlist,
        EphemeralPurpose::Commission,
        EphemeralPurpose::Test,
        EphemeralPurpose::Erase,
        EphemeralPurpose::Rescue,
        EphemeralPurpose::Deploy,
    ];

    /// The lower-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            EphemeralPurpose::Enlist => "enlist",
            EphemeralPurpose::Commission => "commission",
            EphemeralPurpose::Test => "test",
            EphemeralPurpose::Erase => "erase",
            EphemeralPurpose::Rescue => "rescue",
            EphemeralPurpose::Deploy => "deploy",
        }
    }

    /// The preseed template prefix (MAAS's names).
    pub const fn preseed_prefix(self) -> &'static str {
        match self {
            EphemeralPurpose::Enlist => "enlist",
            EphemeralPurpose::Deploy => "curtin",
            _ => "commissioning",
        }
    }

    /// The user-data template prefix (`enlist_userdata`, else this crate's
    /// `commissioning_userdata`; a deployment's user data is curtin's).
    pub const fn user_data_prefix(self) -> &'static str {
        match self {
            EphemeralPurpose::Enlist => "enlist_userdata",
            _ => "commissioning_userdata",
        }
    }
}

/// Proxy and mirrors handed to machines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AptConfig {
    /// HTTP proxy for apt (and curtin), `http://host:port/`.
    pub proxy: Option<String>,
    /// Primary archive mirror.
    pub primary_mirror: Option<String>,
    /// Security archive mirror.
    pub security_mirror: Option<String>,
}

impl AptConfig {
    pub(crate) fn check(&self) -> Result<(), CurtinError> {
        for (field, v) in [
            ("apt proxy", &self.proxy),
            ("primary mirror", &self.primary_mirror),
            ("security mirror", &self.security_mirror),
        ] {
            if let Some(url) = v {
                check_url(field, url)?;
            }
        }
        Ok(())
    }

    /// cloud-init's and curtin's (same format) `apt` value, if anything is set.
    pub(crate) fn apt_value(&self) -> Option<AptSection> {
        let mirror = |uri: &Option<String>| {
            uri.as_ref().map(|u| {
                vec![AptMirror {
                    arches: vec!["default".to_owned()],
                    uri: u.clone(),
                }]
            })
        };
        let a = AptSection {
            proxy: self.proxy.clone(),
            primary: mirror(&self.primary_mirror),
            security: mirror(&self.security_mirror),
        };
        (a.proxy.is_some() || a.primary.is_some() || a.security.is_some()).then_some(a)
    }
}

/// The `apt` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct AptSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary: Option<Vec<AptMirror>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    security: Option<Vec<AptMirror>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct AptMirror {
    arches: Vec<String>,
    uri: String,
}

/// The pieces every ephemeral or deployed document needs.
#[derive(Debug, Clone)]
pub struct NodeContext<'a> {
    /// The machine; `None` while enlisting.
    pub machine: Option<&'a Machine>,
    /// Its credentials; `None` while enlisting (anonymous).
    pub credentials: Option<&'a NodeCredentials>,
    /// The metadata service.
    pub endpoint: &'a MetadataEndpoint,
    /// Where templates come from.
    pub templates: &'a TemplateStore,
    /// The OS the ephemeral environment runs (`ubuntu`), for template lookup.
    pub osystem: &'a str,
    /// Its release (`noble`), for template lookup.
    pub release: &'a str,
    /// Apt proxy and mirrors.
    pub apt: &'a AptConfig,
    /// NTP servers.
    pub ntp_servers: &'a [String],
    /// The program in the ephemeral image that does the purpose's work.
    pub agent_command: &'a str,
}

#[derive(Serialize)]
struct Datasource<'a> {
    #[serde(rename = "MAAS")]
    maas: DatasourceMaas<'a>,
}

#[derive(Serialize)]
struct DatasourceMaas<'a> {
    metadata_url: String,
    #[serde(flatten)]
    credentials: Option<&'a NodeCredentials>,
}

#[derive(Serialize)]
pub(crate) struct Webhook<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    endpoint: String,
    #[serde(flatten)]
    credentials: &'a NodeCredentials,
}

#[derive(Serialize)]
struct PowerState {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<u32>,
    condition: bool,
}

#[derive(Serialize)]
struct Preseed<'a> {
    datasource: Datasource<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reporting: Option<BTreeMap<&'static str, Webhook<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    apt: Option<AptSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    power_state: Option<PowerState>,
}

pub(crate) fn webhook<'a>(
    endpoint: &MetadataEndpoint,
    machine: &Machine,
    credentials: &'a NodeCredentials,
) -> BTreeMap<&'static str, Webhook<'a>> {
    BTreeMap::from([(
        "maas",
        Webhook {
            kind: "webhook",
            endpoint: endpoint.status_url(&machine.system_id),
            credentials,
        },
    )])
}

/// YAML as PyYAML reads it back unchanged (see [`crate::yaml`]).
pub(crate) fn to_yaml<S: Serialize>(value: &S) -> Result<String, CurtinError> {
    let value =
        serde_yaml_ng::to_value(value).map_err(|e| CurtinError::Serialize(e.to_string()))?;
    Ok(crate::yaml::to_string(&value))
}

/// Checks that a rendered template is a `#cloud-config` document with a
/// YAML mapping.
pub(crate) fn check_cloud_config(origin: &str, text: &str) -> Result<(), CurtinError> {
    let bad = |detail: String| CurtinError::TemplateOutput {
        file: origin.to_owned(),
        detail,
    };
    if !text.starts_with("#cloud-config") {
        return Err(bad(
            "a cloud-config must start with #cloud-config".to_owned()
        ));
    }
    match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        Ok(serde_yaml_ng::Value::Mapping(_)) => Ok(()),
        Ok(_) => Err(bad("expected a YAML mapping".to_owned())),
        Err(e) => Err(bad(format!("not YAML: {e}"))),
    }
}

impl NodeContext<'_> {
    fn names(&self, prefix: &str) -> Result<Vec<String>, CurtinError> {
        candidate_names(prefix, self.osystem, self.release, self.machine)
    }

    fn node(&self, purpose: EphemeralPurpose) -> Result<(&Machine, &NodeCredentials), CurtinError> {
        match (self.machine, self.credentials) {
            (Some(m), Some(c)) => Ok((m, c)),
            _ => Err(invalid(
                "machine",
                purpose.as_str(),
                "this purpose needs the machine and its credentials",
            )),
        }
    }

    /// The `#cloud-config` the kernel command line's `cloud-config-url`
    /// fetches (`get_preseed`, `get_enlist_preseed`): the MAAS datasource
    /// (with the machine's credentials, except while enlisting), the status
    /// webhook, apt settings and what to do when done (power off; reboot
    /// after an install; nothing in rescue mode). Rendered through the
    /// purpose's preseed template (`{{ preseed_data }}` by default).
    pub fn preseed(&self, purpose: EphemeralPurpose) -> Result<String, CurtinError> {
        self.apt.check()?;
        let (credentials, reporting) = if purpose == EphemeralPurpose::Enlist {
            (None, None)
        } else {
            let (m, c) = self.node(purpose)?;
            (Some(c), Some(webhook(self.endpoint, m, c)))
        };
        let power_state = match purpose {
            EphemeralPurpose::Rescue => None,
            EphemeralPurpose::Deploy => Some(PowerState {
                mode: "reboot",
                delay: Some("now"),
                timeout: None,
                condition: true,
            }),
            EphemeralPurpose::Enlist => Some(PowerState {
                mode: "poweroff",
                delay: Some("now"),
                timeout: Some(1800),
                condition: true,
            }),
            _ => Some(PowerState {
                mode: "poweroff",
                delay: Some("now"),
                timeout: Some(3600),
                condition: true,
            }),
        };
        let metadata_url = if purpose == EphemeralPurpose::Deploy {
            self.endpoint.curtin_metadata_url()
        } else {
            self.endpoint.metadata_url()
        };
        let preseed = Preseed {
            datasource: Datasource {
                maas: DatasourceMaas {
                    metadata_url,
                    credentials,
                },
            },
            reporting,
            apt: self.apt.apt_value(),
            power_state,
        };
        let preseed_data = format!("{CLOUD_CONFIG_HEADER}{}", to_yaml(&preseed)?);
        let names = self.names(purpose.preseed_prefix())?;
        let (found, out) = self.templates.render(
            &names,
            serde_json::json!({
                "preseed_data": preseed_data,
                "purpose": purpose.as_str(),
                "node": self.machine.map(template_node),
                "metadata_url": self.endpoint.metadata_url(),
            }),
        )?;
        let out = with_newline(out);
        check_cloud_config(&found.origin, &out)?;
        Ok(out)
    }

    /// The user data the metadata service serves the ephemeral environment
    /// for `purpose` (not [`EphemeralPurpose::Deploy`], whose user data is
    /// the curtin config).
    pub fn user_data(&self, purpose: EphemeralPurpose) -> Result<String, CurtinError> {
        if purpose == EphemeralPurpose::Deploy {
            return Err(invalid(
                "purpose",
                purpose.as_str(),
                "a deployment's user data is the curtin config",
            ));
        }
        if purpose != EphemeralPurpose::Enlist {
            self.node(purpose)?;
        }
        if self.agent_command.is_empty()
            || self
                .agent_command
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "agent command",
                self.agent_command,
                "expected a path without spaces",
            ));
        }
        let names = self.names(purpose.user_data_prefix())?;
        let (found, out) = self.templates.render(
            &names,
            serde_json::json!({
                "purpose": purpose.as_str(),
                "agent_command": self.agent_command,
                "metadata_url": self.endpoint.metadata_url(),
                "node": self.machine.map(template_node),
            }),
        )?;
        let out = with_newline(out);
        check_cloud_config(&found.origin, &out)?;
        Ok(out)
    }

    /// The vendor data (`meta-data/vendor-data`): a cloud-config with NTP
    /// and apt settings, already wrapped as MAAS serves it
    /// (`{"cloud-init": "#cloud-config\n..."}` in YAML). [`Self::vendor_cloud_config`]
    /// is the inner document.
    pub fn vendor_data(&self) -> Result<String, CurtinError> {
        let inner = self.vendor_cloud_config()?;
        to_yaml(&BTreeMap::from([("cloud-init", inner)]))
    }

    /// The cloud-config inside the vendor data.
    pub fn vendor_cloud_config(&self) -> Result<String, CurtinError> {
        self.apt.check()?;
        #[derive(Serialize)]
        struct Ntp<'a> {
            enabled: bool,
            servers: &'a [String],
        }
        #[derive(Serialize)]
        struct Vendor<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            ntp: Option<Ntp<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            apt: Option<AptSection>,
        }
        for s in self.ntp_servers {
            if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid("ntp server", s, "expected a host name or address"));
            }
        }
        let v = Vendor {
            ntp: (!self.ntp_servers.is_empty()).then_some(Ntp {
                enabled: true,
                servers: self.ntp_servers,
            }),
            apt: self.apt.apt_value(),
        };
        Ok(format!("{CLOUD_CONFIG_HEADER}{}", to_yaml(&v)?))
    }
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// What templates see as `node`.
pub(crate) fn template_node(m: &Machine) -> serde_json::Value {
    serde_json::json!({
        "system_id": m.system_id.as_str(),
        "hostname": m.hostname.as_str(),
        "fqdn": m.fqdn(),
        "arch": m.architecture.arch(),
        "subarch": m.architecture.subarch(),
    })
}

/// The files curtin writes into the target's `/etc/cloud/cloud.cfg.d` so the
/// deployed OS's cloud-init uses the MAAS datasource with the machine's
/// credentials and reports to the status webhook (curtin's `cloudconfig`
/// key; name -> `{path, content}`).
pub fn target_cloud_config(
    machine: &Machine,
    endpoint: &MetadataEndpoint,
    credentials: &NodeCredentials,
) -> Result<BTreeMap<String, TargetFile>, CurtinError> {
    let datasource = Datasource {
        maas: DatasourceMaas {
            metadata_url: endpoint.metadata_url(),
            credentials: Some(credentials),
        },
    };
    #[derive(Serialize)]
    struct DatasourceDoc<'a> {
        datasource: Datasource<'a>,
    }
    #[derive(Serialize)]
    struct ReportingDoc<'a> {
        reporting: BTreeMap<&'static str, Webhook<'a>>,
    }
    let file = |name: &str, content: String| TargetFile {
        path: format!("/etc/cloud/cloud.cfg.d/{name}"),
        content,
    };
    Ok(BTreeMap::from([
        (
            "maas-datasource".to_owned(),
            file(
                "90_maas_datasource.cfg",
                format!("{CLOUD_CONFIG_HEADER}datasource_list: [MAAS]\n"),
            ),
        ),
        (
            "maas-cloud-config".to_owned(),
            file(
                "90_maas_cloud_config.cfg",
                format!(
                    "{CLOUD_CONFIG_HEADER}{}",
                    to_yaml(&DatasourceDoc { datasource })?
                ),
            ),
        ),
        (
            "maas-reporting".to_owned(),
            file(
                "90_maas_cloud_init_reporting.cfg",
                format!(
                    "{CLOUD_CONFIG_HEADER}{}",
                    to_yaml(&ReportingDoc {
                        reporting: webhook(endpoint, machine, credentials),
                    })?
                ),
            ),
        ),
    ]))
}

/// A file curtin writes into the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetFile {
    /// Absolute path in the target.
    pub path: String,
    /// Content.
    pub content: String,
}

/// The deployed OS's user data from what the user stored: base64 (with or
/// without whitespace, as python-libmaas, Terraform and gomaasapi send it)
/// is decoded; anything else is served as it is, as MAAS does.
pub fn deploy_user_data(stored: &[u8]) -> Vec<u8> {
    let compact: Vec<u8> = stored
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return stored.to_vec();
    }
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .unwrap_or_else(|_| stored.to_vec())
}
