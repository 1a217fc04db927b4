//! `webhook`: one HTTP request per action, to URLs the operator templates
//! (the shape of MAAS's webhook power driver).
//!
//! On, off and reset are `POST`s; the query is a `GET` whose body is
//! matched against `power_on_regex` and `power_off_regex`. A URL may contain
//! `{name}` placeholders for any non-secret setting (`{node_id}`,
//! `{power_user}`), filled in percent-encoded. Credentials go in headers
//! (Basic or Bearer), never in URLs.

use std::time::Duration;

use async_trait::async_trait;
use regex::Regex;

use crate::descriptor::{
    Capabilities, DriverDescriptor, FieldType, ParamValue, PowerParams, Scope, SettingField,
};
use crate::driver::{DriverFactory, OffMode, PowerDriver, PowerState};
use crate::drivers::http;
use crate::error::PowerError;
use crate::secret::Secret;

const YES_NO: &[(&str, &str)] = &[("y", "Yes"), ("n", "No")];

/// The `webhook` driver's description.
pub static DESCRIPTOR: DriverDescriptor = DriverDescriptor {
    name: "webhook",
    description: "Webhook: an HTTP request per power action",
    capabilities: Capabilities {
        queryable: true,
        boot_device: false,
        soft_off: false,
        chassis: false,
        probe: false,
    },
    settings: &[
        SettingField {
            required: true,
            ..SettingField::new("power_on_uri", "URI to power on the node (POST)")
        },
        SettingField {
            required: true,
            ..SettingField::new("power_off_uri", "URI to power off the node (POST)")
        },
        SettingField {
            required: true,
            ..SettingField::new("power_query_uri", "URI to query the power state (GET)")
        },
        SettingField::new(
            "power_reset_uri",
            "URI to reset the node (POST; off then on if empty)",
        ),
        SettingField {
            default: Some(r"status.*:.*running"),
            ..SettingField::new("power_on_regex", "Regex that confirms the node is on")
        },
        SettingField {
            default: Some(r"status.*:.*stopped"),
            ..SettingField::new("power_off_regex", "Regex that confirms the node is off")
        },
        SettingField::new("power_user", "Power user (Basic auth)"),
        SettingField {
            field_type: FieldType::Password,
            secret: true,
            ..SettingField::new("power_pass", "Power password (Basic auth)")
        },
        SettingField {
            field_type: FieldType::Password,
            secret: true,
            ..SettingField::new("power_token", "Power token (Bearer auth)")
        },
        SettingField {
            field_type: FieldType::Choice,
            default: Some("y"),
            choices: YES_NO,
            ..SettingField::new("power_verify_ssl", "Verify TLS certificates")
        },
        SettingField {
            scope: Scope::Machine,
            ..SettingField::new("node_id", "Node id (for {node_id} in the URIs)")
        },
    ],
};

/// Builds [`WebhookDriver`]s.
#[derive(Debug, Default, Clone, Copy)]
pub struct WebhookFactory;

impl DriverFactory for WebhookFactory {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    fn build(&self, params: &PowerParams) -> Result<Box<dyn PowerDriver>, PowerError> {
        Ok(Box::new(WebhookDriver::new(params)?))
    }
}

/// Calls the templated URLs.
#[derive(Debug)]
pub struct WebhookDriver {
    on: reqwest::Url,
    off: reqwest::Url,
    query: reqwest::Url,
    reset: Option<reqwest::Url>,
    on_regex: Regex,
    off_regex: Regex,
    user: Option<String>,
    pass: Option<Secret>,
    token: Option<Secret>,
    client: reqwest::Client,
    target: String,
}

impl WebhookDriver {
    /// A driver from validated parameters; URLs and regexes are checked
    /// here, naming the bad field.
    pub fn new(params: &PowerParams) -> Result<Self, PowerError> {
        let url = |field: &str| -> Result<Option<reqwest::Url>, PowerError> {
            let Some(t) = params.text(field) else {
                return Ok(None);
            };
            let filled = fill_template(field, t, params)?;
            let u = reqwest::Url::parse(&filled).map_err(|e| PowerError::InvalidParameter {
                field: field.to_owned(),
                reason: format!("{filled:?} is not a URL: {e}"),
            })?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(PowerError::InvalidParameter {
                    field: field.to_owned(),
                    reason: format!("{filled:?} is not an http or https URL"),
                });
            }
            if !u.username().is_empty() || u.password().is_some() {
                return Err(PowerError::InvalidParameter {
                    field: field.to_owned(),
                    reason: "credentials belong in power_user/power_pass, not in the URL".into(),
                });
            }
            Ok(Some(u))
        };
        let required = |field: &str| -> Result<reqwest::Url, PowerError> {
            url(field)?.ok_or_else(|| PowerError::MissingParameter {
                driver: DESCRIPTOR.name.to_owned(),
                field: field.to_owned(),
            })
        };
        let regex = |field: &str| -> Result<Regex, PowerError> {
            let r = params.text(field).unwrap_or_default();
            Regex::new(r).map_err(|e| PowerError::InvalidParameter {
                field: field.to_owned(),
                reason: format!("{r:?} is not a regular expression: {e}"),
            })
        };
        let on = required("power_on_uri")?;
        let target = match (on.host_str(), on.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => "webhook".to_owned(),
        };
        Ok(Self {
            off: required("power_off_uri")?,
            query: required("power_query_uri")?,
            reset: url("power_reset_uri")?,
            on,
            on_regex: regex("power_on_regex")?,
            off_regex: regex("power_off_regex")?,
            user: params.text("power_user").map(str::to_owned),
            pass: params.secret("power_pass").cloned(),
            token: params.secret("power_token").cloned(),
            client: http::client(!params.flag("power_verify_ssl"), Duration::from_secs(30))?,
            target,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: &reqwest::Url,
        operation: &str,
    ) -> Result<String, PowerError> {
        let mut req = self.client.request(method, url.clone());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        } else if self.user.is_some() || self.pass.is_some() {
            req = req.basic_auth(
                self.user.as_deref().unwrap_or_default(),
                self.pass.as_ref().map(Secret::expose),
            );
        }
        let resp = req
            .send()
            .await
            .map_err(|e| http::transport_error(&self.target, e))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| http::transport_error(&self.target, e))?;
        if !status.is_success() {
            return Err(http::status_error(&self.target, operation, status, &body));
        }
        Ok(body)
    }
}

/// Replaces `{name}` with the percent-encoded value of the non-secret
/// setting `name`. A placeholder naming a secret, an unknown setting or a
/// setting with no value is an error naming the template's field.
fn fill_template(field: &str, template: &str, params: &PowerParams) -> Result<String, PowerError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(PowerError::InvalidParameter {
                field: field.to_owned(),
                reason: "a '{' has no closing '}'".into(),
            });
        };
        let name = &after[..close];
        let value = match params.get(name) {
            Some(ParamValue::Text(v)) => v.clone(),
            Some(ParamValue::Integer(i)) => i.to_string(),
            Some(ParamValue::Secret(_)) => {
                return Err(PowerError::InvalidParameter {
                    field: field.to_owned(),
                    reason: format!("placeholder {{{name}}} names a secret setting"),
                });
            }
            None => {
                return Err(PowerError::InvalidParameter {
                    field: field.to_owned(),
                    reason: format!("placeholder {{{name}}} names no setting with a value"),
                });
            }
        };
        out.push_str(&percent_encode(&value));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl PowerDriver for WebhookDriver {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    async fn power_on(&self) -> Result<(), PowerError> {
        self.send(reqwest::Method::POST, &self.on, "power on")
            .await
            .map(drop)
    }

    async fn power_off(&self, mode: OffMode) -> Result<(), PowerError> {
        if mode == OffMode::Soft {
            return Err(PowerError::Unsupported {
                driver: DESCRIPTOR.name.to_owned(),
                operation: "soft power off".into(),
            });
        }
        self.send(reqwest::Method::POST, &self.off, "power off")
            .await
            .map(drop)
    }

    async fn power_cycle(&self) -> Result<(), PowerError> {
        match &self.reset {
            Some(u) => self.send(reqwest::Method::POST, u, "reset").await.map(drop),
            None => {
                self.power_off(OffMode::Hard).await?;
                self.power_on().await
            }
        }
    }

    async fn query(&self) -> Result<PowerState, PowerError> {
        let body = self
            .send(reqwest::Method::GET, &self.query, "query")
            .await?;
        if self.on_regex.is_match(&body) {
            Ok(PowerState::On)
        } else if self.off_regex.is_match(&body) {
            Ok(PowerState::Off)
        } else {
            Err(PowerError::BadReply {
                target: self.target.clone(),
                detail: "the query reply matches neither power_on_regex nor power_off_regex".into(),
            })
        }
    }
}
