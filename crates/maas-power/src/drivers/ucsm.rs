//! `ucsm`: Cisco UCS Manager's XML API (one POST of an XML document to
//! `/nuova` per method).
//!
//! `aaaLogin` gives a cookie (kept for the driver's calls, renewed once
//! when UCS Manager answers error 552, "authorization required");
//! `configResolveDn` resolves the service profile (`lsServer`, by its DN
//! such as `org-root/ls-node1`) and then the blade or rack unit it is
//! associated with (`pnDn`), whose `operPower` is the power state;
//! `configConfMo` sets the profile's `lsPower` child
//! (`<dn>/power`) to `up`, `down`, `soft-shut-down` or `cycle-immediate`,
//! and a `configResolveDn` of it reads the change back; `aaaLogout` ends
//! the session in [`PowerDriver::close`].
//!
//! No UCS Manager or emulator of one can run here: the driver is tested
//! against a fixture HTTP server (`tests/ucsm.rs`) whose requests and
//! replies follow the examples of Cisco's published "UCS Manager XML API
//! Programmer's Guide" (method names, attributes, error codes 551/552).
//! What real UCS Manager does beyond those examples is not tested.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::Url;
use tokio::sync::Mutex;
use tracing::debug;

use crate::descriptor::{
    Capabilities, DriverDescriptor, FieldType, PowerParams, Scope, SettingField,
};
use crate::driver::{DriverFactory, OffMode, PowerDriver, PowerState};
use crate::drivers::http;
use crate::error::PowerError;
use crate::secret::Secret;

/// The `ucsm` driver's description.
pub static DESCRIPTOR: DriverDescriptor = DriverDescriptor {
    name: "ucsm",
    description: "Cisco UCS Manager (XML API)",
    capabilities: Capabilities {
        queryable: true,
        boot_device: false,
        soft_off: true,
        chassis: true,
        probe: false,
    },
    settings: &[
        SettingField {
            required: true,
            ..SettingField::new(
                "power_address",
                "UCS Manager address (host, host:port or https://host:port)",
            )
        },
        SettingField {
            required: true,
            ..SettingField::new("power_user", "UCS Manager user")
        },
        SettingField {
            field_type: FieldType::Password,
            secret: true,
            required: true,
            ..SettingField::new("power_pass", "UCS Manager password")
        },
        SettingField {
            required: true,
            scope: Scope::Machine,
            ..SettingField::new("service_profile", "Service profile DN (org-root/ls-NAME)")
        },
        SettingField {
            field_type: FieldType::Choice,
            default: Some("y"),
            choices: &[("y", "Yes"), ("n", "No (accept self-signed certificates)")],
            ..SettingField::new("power_verify_ssl", "Verify the TLS certificate")
        },
    ],
};

/// Builds [`UcsmDriver`]s.
#[derive(Debug, Clone)]
pub struct UcsmFactory {
    /// The timeout of one HTTP request.
    pub request_timeout: Duration,
    /// HTTP clients shared by the drivers this factory builds.
    clients: http::ClientCache,
}

impl Default for UcsmFactory {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            clients: http::ClientCache::default(),
        }
    }
}

impl DriverFactory for UcsmFactory {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    fn build(&self, params: &PowerParams) -> Result<Box<dyn PowerDriver>, PowerError> {
        Ok(Box::new(UcsmDriver::new(self, params)?))
    }
}

/// One service profile on a UCS Manager.
#[derive(Debug)]
pub struct UcsmDriver {
    url: Url,
    target: String,
    user: String,
    pass: Secret,
    profile: String,
    client: reqwest::Client,
    cookie: Mutex<Option<Secret>>,
}

/// Escapes text for an XML attribute value.
fn attr(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// A parsed reply: the root element's attributes and, for resolve/conf
/// methods, the first element inside `outConfig`.
#[derive(Debug, Default)]
struct Reply {
    root: Vec<(String, String)>,
    out: Option<(String, Vec<(String, String)>)>,
}

fn get<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn parse_reply(text: &str) -> Result<Reply, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    let attrs = |n: roxmltree::Node<'_, '_>| -> Vec<(String, String)> {
        n.attributes()
            .map(|a| (a.name().to_owned(), a.value().to_owned()))
            .collect()
    };
    let out = root
        .children()
        .find(|n| n.has_tag_name("outConfig"))
        .and_then(|oc| oc.children().find(roxmltree::Node::is_element))
        .map(|n| (n.tag_name().name().to_owned(), attrs(n)));
    Ok(Reply {
        root: attrs(root),
        out,
    })
}

impl UcsmDriver {
    /// A driver from validated parameters.
    pub fn new(factory: &UcsmFactory, params: &PowerParams) -> Result<Self, PowerError> {
        let addr = params.text("power_address").unwrap_or_default().trim();
        let with_scheme = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("https://{addr}")
        };
        let invalid = |reason: String| PowerError::InvalidParameter {
            field: "power_address".into(),
            reason,
        };
        let mut url = Url::parse(&with_scheme)
            .map_err(|e| invalid(format!("{addr:?} is not an address: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(format!("{addr:?} is not an http(s) address")));
        }
        url.set_path("/nuova");
        url.set_query(None);
        let target = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(443)
        );
        let profile = params
            .text("service_profile")
            .unwrap_or_default()
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if !profile.contains("ls-") {
            return Err(PowerError::InvalidParameter {
                field: "service_profile".into(),
                reason: format!("{profile:?} is not a service profile DN (org-root/ls-NAME)"),
            });
        }
        Ok(Self {
            url,
            target,
            user: params.text("power_user").unwrap_or_default().to_owned(),
            pass: params.secret("power_pass").cloned().unwrap_or_default(),
            profile,
            client: factory
                .clients
                .get(!params.flag("power_verify_ssl"), factory.request_timeout)?,
            cookie: Mutex::new(None),
        })
    }

    /// POSTs one XML method; maps transport, HTTP and XML API errors.
    async fn post(&self, body: String, operation: &str) -> Result<Reply, PowerError> {
        let resp = self
            .client
            .post(self.url.clone())
            .header("Content-Type", "application/xml")
            .body(body)
            .send()
            .await
            .map_err(|e| http::transport_error(&self.target, e))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| http::transport_error(&self.target, e))?;
        if !status.is_success() {
            return Err(http::status_error(&self.target, operation, status, &text));
        }
        let reply = parse_reply(&text).map_err(|e| PowerError::BadReply {
            target: self.target.clone(),
            detail: format!("{operation}: not XML: {e}"),
        })?;
        if let Some(code) = get(&reply.root, "errorCode") {
            let descr = get(&reply.root, "errorDescr").unwrap_or_default();
            return Err(match code {
                "551" | "552" | "572" => PowerError::Auth {
                    target: self.target.clone(),
                },
                _ => PowerError::Refused {
                    target: self.target.clone(),
                    operation: operation.into(),
                    detail: format!("error {code}: {descr}"),
                },
            });
        }
        Ok(reply)
    }

    async fn login(&self) -> Result<Secret, PowerError> {
        let body = format!(
            r#"<aaaLogin inName="{}" inPassword="{}" />"#,
            attr(&self.user),
            attr(self.pass.expose())
        );
        let reply = self.post(body, "log in").await?;
        let cookie = get(&reply.root, "outCookie")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| PowerError::BadReply {
                target: self.target.clone(),
                detail: "aaaLogin answered without outCookie".into(),
            })?;
        debug!(target = %self.target, "UCS Manager session opened");
        Ok(Secret::new(cookie))
    }

    /// A method that needs the cookie (`{cookie}` in `template` is
    /// replaced); logs in first if needed, and again once on 552.
    async fn call(&self, template: &str, operation: &str) -> Result<Reply, PowerError> {
        let mut guard = self.cookie.lock().await;
        let reused = guard.is_some();
        let cookie = match guard.clone() {
            Some(c) => c,
            None => {
                let c = self.login().await?;
                *guard = Some(c.clone());
                c
            }
        };
        let first = self
            .post(
                template.replace("{cookie}", &attr(cookie.expose())),
                operation,
            )
            .await;
        match first {
            Err(PowerError::Auth { .. }) if reused => {
                // The cookie expired: log in again once.
                let c = self.login().await?;
                *guard = Some(c.clone());
                self.post(template.replace("{cookie}", &attr(c.expose())), operation)
                    .await
            }
            other => other,
        }
    }

    async fn resolve(
        &self,
        dn: &str,
        operation: &str,
    ) -> Result<Option<(String, Vec<(String, String)>)>, PowerError> {
        let template = format!(
            r#"<configResolveDn cookie="{{cookie}}" dn="{}" inHierarchical="false" />"#,
            attr(dn)
        );
        Ok(self.call(&template, operation).await?.out)
    }

    async fn set_power(&self, state: &str, operation: &str) -> Result<(), PowerError> {
        // The profile must exist (a clear NotFound rather than UCS's own
        // error for a missing parent).
        self.server().await?;
        let dn = format!("{}/power", self.profile);
        let template = format!(
            r#"<configConfMo cookie="{{cookie}}" dn="{dn}" inHierarchical="false"><inConfig><lsPower dn="{dn}" state="{state}" /></inConfig></configConfMo>"#,
            dn = attr(&dn),
        );
        self.call(&template, operation).await?;
        let back = self.resolve(&dn, "read the power setting back").await?;
        let got = back
            .as_ref()
            .and_then(|(_, a)| get(a, "state"))
            .unwrap_or_default()
            .to_owned();
        if got != state {
            return Err(PowerError::Action {
                target: self.target.clone(),
                operation: operation.into(),
                detail: format!("lsPower state reads back as {got:?}, not {state:?}"),
            });
        }
        Ok(())
    }

    /// The service profile's attributes.
    async fn server(&self) -> Result<Vec<(String, String)>, PowerError> {
        match self
            .resolve(&self.profile, "resolve the service profile")
            .await?
        {
            Some((tag, attrs)) if tag == "lsServer" => Ok(attrs),
            Some((tag, _)) => Err(PowerError::BadReply {
                target: self.target.clone(),
                detail: format!("{:?} resolves to a {tag}, not an lsServer", self.profile),
            }),
            None => Err(PowerError::NotFound {
                target: self.target.clone(),
                what: format!("service profile {:?}", self.profile),
            }),
        }
    }
}

#[async_trait]
impl PowerDriver for UcsmDriver {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    async fn power_on(&self) -> Result<(), PowerError> {
        self.set_power("up", "power on").await
    }

    async fn power_off(&self, mode: OffMode) -> Result<(), PowerError> {
        match mode {
            OffMode::Hard => self.set_power("down", "power off").await,
            OffMode::Soft => self.set_power("soft-shut-down", "soft power off").await,
        }
    }

    async fn power_cycle(&self) -> Result<(), PowerError> {
        self.set_power("cycle-immediate", "power cycle").await
    }

    async fn query(&self) -> Result<PowerState, PowerError> {
        let server = self.server().await?;
        let pn = get(&server, "pnDn").unwrap_or_default().to_owned();
        if pn.is_empty() {
            return Err(PowerError::NotFound {
                target: self.target.clone(),
                what: format!("blade or rack unit associated with {:?}", self.profile),
            });
        }
        let unit = self
            .resolve(&pn, "resolve the associated server")
            .await?
            .ok_or_else(|| PowerError::NotFound {
                target: self.target.clone(),
                what: format!("server {pn:?}"),
            })?;
        match get(&unit.1, "operPower") {
            Some("on") => Ok(PowerState::On),
            Some("off") => Ok(PowerState::Off),
            other => Err(PowerError::BadReply {
                target: self.target.clone(),
                detail: format!("{pn:?} has operPower {other:?}"),
            }),
        }
    }

    async fn close(&self) -> Result<(), PowerError> {
        let cookie = self.cookie.lock().await.take();
        if let Some(c) = cookie {
            let body = format!(r#"<aaaLogout inCookie="{}" />"#, attr(c.expose()));
            self.post(body, "log out").await?;
            debug!(target = %self.target, "UCS Manager session closed");
        }
        Ok(())
    }
}
