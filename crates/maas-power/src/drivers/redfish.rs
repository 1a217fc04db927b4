//! `redfish`: DMTF Redfish over HTTP(S).
//!
//! Finds the computer system (the configured `node_id`, or the only member
//! of the Systems collection), reads `PowerState`, resets with
//! `ComputerSystem.Reset` using a `ResetType` the system advertises, and
//! polls `PowerState` after a reset until it settles (BMCs change state
//! seconds after answering). Boot overrides are PATCHed and read back: the
//! override as the BMC reports it is returned (sushy-tools, for one, turns
//! `Once` into `Continuous`).
//!
//! Authentication: an `X-Auth-Token` session where the service offers a
//! session service (`auth=auto` or `session`), else HTTP Basic. The session
//! is created on first use, renewed once on a 401, and deleted by
//! [`PowerDriver::close`]. TLS certificates are verified unless
//! `power_verify_ssl=n` (BMCs often have self-signed certificates; accepting
//! them is the operator's choice).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::debug;

use crate::descriptor::{
    Capabilities, DriverDescriptor, FieldType, PowerParams, Scope, SettingField,
};
use crate::driver::{
    BootDevice, BootMode, BootOverride, BootPersistence, DriverFactory, OffMode, PowerDriver,
    PowerState, ProbeReport,
};
use crate::drivers::http;
use crate::error::PowerError;
use crate::secret::Secret;

/// The `redfish` driver's description.
pub static DESCRIPTOR: DriverDescriptor = DriverDescriptor {
    name: "redfish",
    description: "Redfish",
    capabilities: Capabilities {
        queryable: true,
        boot_device: true,
        soft_off: true,
        chassis: false,
        probe: true,
    },
    settings: &[
        SettingField {
            required: true,
            ..SettingField::new(
                "power_address",
                "Redfish address (host, host:port or https://host:port)",
            )
        },
        SettingField::new("power_user", "Redfish user"),
        SettingField {
            field_type: FieldType::Password,
            secret: true,
            ..SettingField::new("power_pass", "Redfish password")
        },
        SettingField {
            scope: Scope::Machine,
            ..SettingField::new("node_id", "System id or path (empty: the only system)")
        },
        SettingField {
            field_type: FieldType::Choice,
            default: Some("y"),
            choices: &[("y", "Yes"), ("n", "No (accept self-signed certificates)")],
            ..SettingField::new("power_verify_ssl", "Verify the TLS certificate")
        },
        SettingField {
            field_type: FieldType::Choice,
            default: Some("auto"),
            choices: &[
                ("auto", "Session if offered, else Basic"),
                ("session", "Session (X-Auth-Token)"),
                ("basic", "HTTP Basic"),
            ],
            ..SettingField::new("auth", "Authentication")
        },
    ],
};

/// Builds [`RedfishDriver`]s.
#[derive(Debug, Clone)]
pub struct RedfishFactory {
    /// How long to poll `PowerState` after a reset.
    pub poll_timeout: Duration,
    /// The interval between polls.
    pub poll_interval: Duration,
    /// The timeout of one HTTP request.
    pub request_timeout: Duration,
    /// HTTP clients shared by the drivers this factory builds.
    clients: http::ClientCache,
}

impl Default for RedfishFactory {
    fn default() -> Self {
        Self {
            poll_timeout: Duration::from_secs(20),
            poll_interval: Duration::from_millis(500),
            request_timeout: Duration::from_secs(20),
            clients: http::ClientCache::default(),
        }
    }
}

impl DriverFactory for RedfishFactory {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    fn build(&self, params: &PowerParams) -> Result<Box<dyn PowerDriver>, PowerError> {
        Ok(Box::new(RedfishDriver::new(self, params)?))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthMode {
    Auto,
    Session,
    Basic,
}

/// One Redfish computer system.
#[derive(Debug)]
pub struct RedfishDriver {
    base: Url,
    target: String,
    user: Option<String>,
    pass: Option<Secret>,
    node_id: Option<String>,
    auth: AuthMode,
    client: reqwest::Client,
    poll_timeout: Duration,
    poll_interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    system: Option<String>,
    session: Option<Session>,
    /// Set once the auth mode has been settled (session made, or Basic).
    auth_settled: bool,
}

/// How one request authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    /// No credentials: the service root and session creation (the
    /// password goes in the body there, not in a header as well).
    Anonymous,
    /// HTTP Basic with the configured user and password (if any).
    Basic,
    /// The session's `X-Auth-Token`.
    Token(&'a Session),
}

impl<'a> Auth<'a> {
    /// The session's token if there is one, else Basic.
    fn of(session: Option<&'a Session>) -> Self {
        session.map_or(Auth::Basic, Auth::Token)
    }
}

#[derive(Debug, Clone)]
struct Session {
    token: Secret,
    location: Option<String>,
}

struct Reply {
    status: StatusCode,
    etag: Option<String>,
    body: Value,
    location: Option<String>,
    token: Option<Secret>,
}

impl RedfishDriver {
    /// A driver from validated parameters.
    pub fn new(factory: &RedfishFactory, params: &PowerParams) -> Result<Self, PowerError> {
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
        let url = Url::parse(&with_scheme)
            .map_err(|e| invalid(format!("{addr:?} is not an address: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(format!("{addr:?} is not an http(s) address")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials belong in power_user/power_pass".into(),
            ));
        }
        let mut base = url.clone();
        base.set_path("/");
        base.set_query(None);
        let target = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(443)
        );
        let auth = match params.text("auth") {
            Some("session") => AuthMode::Session,
            Some("basic") => AuthMode::Basic,
            _ => AuthMode::Auto,
        };
        Ok(Self {
            base,
            target,
            user: params.text("power_user").map(str::to_owned),
            pass: params.secret("power_pass").cloned(),
            node_id: params.text("node_id").map(str::to_owned),
            auth,
            client: factory
                .clients
                .get(!params.flag("power_verify_ssl"), factory.request_timeout)?,
            poll_timeout: factory.poll_timeout,
            poll_interval: factory.poll_interval,
            state: Mutex::new(State::default()),
        })
    }

    fn url(&self, path: &str) -> Result<Url, PowerError> {
        self.base.join(path).map_err(|e| PowerError::BadReply {
            target: self.target.clone(),
            detail: format!("the link {path:?} is not a path: {e}"),
        })
    }

    /// One request with whatever credentials are settled; no retries.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        etag: Option<&str>,
        auth: Auth<'_>,
        operation: &str,
    ) -> Result<Reply, PowerError> {
        let mut req = self
            .client
            .request(method, self.url(path)?)
            .header("Accept", "application/json");
        match auth {
            Auth::Token(s) => req = req.header("X-Auth-Token", s.token.expose()),
            Auth::Basic if self.user.is_some() || self.pass.is_some() => {
                req = req.basic_auth(
                    self.user.as_deref().unwrap_or_default(),
                    self.pass.as_ref().map(Secret::expose),
                );
            }
            Auth::Basic | Auth::Anonymous => {}
        }
        if let Some(e) = etag {
            req = req.header("If-Match", e);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| http::transport_error(&self.target, e))?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header("ETag");
        let location = header("Location");
        let token = header("X-Auth-Token").map(Secret::new);
        let text = resp
            .text()
            .await
            .map_err(|e| http::transport_error(&self.target, e))?;
        if !status.is_success() {
            return Err(http::status_error(&self.target, operation, status, &text));
        }
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| PowerError::BadReply {
                target: self.target.clone(),
                detail: format!("{operation}: the body is not JSON: {e}"),
            })?
        };
        Ok(Reply {
            status,
            etag,
            body,
            location,
            token,
        })
    }

    /// Settles authentication once: a session where offered (and not
    /// `auth=basic`), else Basic.
    async fn ensure_auth(&self, st: &mut State) -> Result<(), PowerError> {
        if st.auth_settled || self.auth == AuthMode::Basic || self.user.is_none() {
            st.auth_settled = true;
            return Ok(());
        }
        // The service root is readable without credentials (Redfish spec);
        // a BMC that refuses it anonymously gets Basic.
        let root = match self
            .send(
                Method::GET,
                "/redfish/v1/",
                None,
                None,
                Auth::Anonymous,
                "read the service root",
            )
            .await
        {
            Ok(root) => root,
            Err(PowerError::Auth { .. }) => {
                debug!(target = %self.target, "service root needs credentials: HTTP Basic");
                st.auth_settled = true;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let link = root
            .body
            .pointer("/Links/Sessions/@odata.id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let path = match (link, self.auth) {
            (Some(p), _) => p,
            (None, AuthMode::Session) => "/redfish/v1/SessionService/Sessions".to_owned(),
            (None, _) => {
                debug!(target = %self.target, "no session service: HTTP Basic");
                st.auth_settled = true;
                return Ok(());
            }
        };
        let body = json!({
            "UserName": self.user.as_deref().unwrap_or_default(),
            "Password": self.pass.as_ref().map(Secret::expose).unwrap_or_default(),
        });
        let reply = self
            .send(
                Method::POST,
                &path,
                Some(&body),
                None,
                Auth::Anonymous,
                "create a session",
            )
            .await?;
        let token = reply.token.ok_or_else(|| PowerError::BadReply {
            target: self.target.clone(),
            detail: "the session reply has no X-Auth-Token".into(),
        })?;
        let location = reply.location.or_else(|| {
            reply
                .body
                .get("@odata.id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        debug!(target = %self.target, "session created");
        st.session = Some(Session { token, location });
        st.auth_settled = true;
        Ok(())
    }

    /// A request with authentication settled; a 401 on a session renews it
    /// once.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        etag: Option<&str>,
        operation: &str,
    ) -> Result<Reply, PowerError> {
        let session = {
            let mut st = self.state.lock().await;
            self.ensure_auth(&mut st).await?;
            st.session.clone()
        };
        match self
            .send(
                method.clone(),
                path,
                body,
                etag,
                Auth::of(session.as_ref()),
                operation,
            )
            .await
        {
            Err(PowerError::Auth { .. }) if session.is_some() => {
                let session = {
                    let mut st = self.state.lock().await;
                    st.session = None;
                    st.auth_settled = false;
                    self.ensure_auth(&mut st).await?;
                    st.session.clone()
                };
                self.send(
                    method,
                    path,
                    body,
                    etag,
                    Auth::of(session.as_ref()),
                    operation,
                )
                .await
            }
            other => other,
        }
    }

    async fn get(&self, path: &str, operation: &str) -> Result<Reply, PowerError> {
        self.request(Method::GET, path, None, None, operation).await
    }

    /// The system's path, found once.
    async fn system(&self) -> Result<String, PowerError> {
        if let Some(s) = self.state.lock().await.system.clone() {
            return Ok(s);
        }
        let root = self.get("/redfish/v1/", "read the service root").await?;
        let systems = root
            .body
            .pointer("/Systems/@odata.id")
            .and_then(Value::as_str)
            .unwrap_or("/redfish/v1/Systems")
            .trim_end_matches('/')
            .to_owned();
        let path = match &self.node_id {
            Some(id) => {
                let p = if id.starts_with('/') {
                    id.clone()
                } else {
                    format!("{systems}/{id}")
                };
                let sys = match self.get(&p, "read the system").await {
                    Err(PowerError::NotFound { target, .. }) => {
                        return Err(PowerError::NotFound {
                            target,
                            what: format!("system {id:?} (node_id)"),
                        });
                    }
                    other => other?,
                };
                // Names may redirect to the UUID URL: keep the canonical one.
                sys.body
                    .get("@odata.id")
                    .and_then(Value::as_str)
                    .map_or(p, str::to_owned)
            }
            None => {
                let coll = self.get(&systems, "list the systems").await?;
                let members: Vec<String> = coll
                    .body
                    .get("Members")
                    .and_then(Value::as_array)
                    .map(|m| {
                        m.iter()
                            .filter_map(|x| x.get("@odata.id").and_then(Value::as_str))
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                match members.as_slice() {
                    [one] => one.clone(),
                    [] => {
                        return Err(PowerError::NotFound {
                            target: self.target.clone(),
                            what: "computer system".into(),
                        });
                    }
                    many => {
                        return Err(PowerError::InvalidParameter {
                            field: "node_id".into(),
                            reason: format!(
                                "required: the BMC has {} systems ({})",
                                many.len(),
                                many.join(", ")
                            ),
                        });
                    }
                }
            }
        };
        self.state.lock().await.system = Some(path.clone());
        Ok(path)
    }

    async fn read_system(&self) -> Result<(String, Reply), PowerError> {
        let path = self.system().await?;
        let reply = self.get(&path, "read the system").await?;
        Ok((path, reply))
    }

    fn state_of(&self, system: &Value) -> Result<PowerState, PowerError> {
        match system.get("PowerState").and_then(Value::as_str) {
            Some("On" | "PoweringOff" | "Paused") => Ok(PowerState::On),
            Some("Off" | "PoweringOn") => Ok(PowerState::Off),
            Some(other) => Err(PowerError::BadReply {
                target: self.target.clone(),
                detail: format!("unknown PowerState {other:?}"),
            }),
            None => Err(PowerError::BadReply {
                target: self.target.clone(),
                detail: "the system has no PowerState".into(),
            }),
        }
    }

    /// The reset action's target and the reset types it advertises (empty
    /// when it does not say).
    async fn reset_action(&self, system: &Value) -> Result<(String, Vec<String>), PowerError> {
        let action = system
            .pointer("/Actions/#ComputerSystem.Reset")
            .ok_or_else(|| PowerError::Unsupported {
                driver: DESCRIPTOR.name.into(),
                operation: "ComputerSystem.Reset (not offered by the system)".into(),
            })?;
        let target = action
            .get("target")
            .and_then(Value::as_str)
            .ok_or_else(|| PowerError::BadReply {
                target: self.target.clone(),
                detail: "ComputerSystem.Reset has no target".into(),
            })?
            .to_owned();
        let strings = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut allowed = strings(action.get("ResetType@Redfish.AllowableValues"));
        if allowed.is_empty()
            && let Some(info) = action.get("@Redfish.ActionInfo").and_then(Value::as_str)
        {
            let info = self.get(info, "read the reset action info").await?;
            if let Some(params) = info.body.get("Parameters").and_then(Value::as_array) {
                for p in params {
                    if p.get("Name").and_then(Value::as_str) == Some("ResetType") {
                        allowed = strings(p.get("AllowableValues"));
                    }
                }
            }
        }
        Ok((target, allowed))
    }

    /// Resets with the first of `preferred` the system allows, then polls
    /// until `expect`.
    async fn reset(
        &self,
        preferred: &[&str],
        expect: PowerState,
        operation: &str,
    ) -> Result<(), PowerError> {
        let (_, sys) = self.read_system().await?;
        let (target, allowed) = self.reset_action(&sys.body).await?;
        let chosen = if allowed.is_empty() {
            preferred.first().copied()
        } else {
            preferred
                .iter()
                .copied()
                .find(|p| allowed.iter().any(|a| a == p))
        };
        let Some(reset_type) = chosen else {
            return Err(PowerError::Unsupported {
                driver: DESCRIPTOR.name.into(),
                operation: format!(
                    "{operation} (the system offers ResetType {allowed:?}, none of {preferred:?})"
                ),
            });
        };
        debug!(target = %self.target, reset_type, "ComputerSystem.Reset");
        self.request(
            Method::POST,
            &target,
            Some(&json!({ "ResetType": reset_type })),
            None,
            operation,
        )
        .await?;
        self.poll(expect).await
    }

    /// Polls `PowerState` until `expect` or the poll timeout; the executor
    /// verifies afterwards, so running out is not an error here.
    async fn poll(&self, expect: PowerState) -> Result<(), PowerError> {
        let until = Instant::now() + self.poll_timeout;
        loop {
            match self.query().await {
                Ok(s) if s == expect => return Ok(()),
                Err(e) if !e.is_retryable() => return Err(e),
                _ => {}
            }
            if Instant::now() + self.poll_interval > until {
                return Ok(());
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    fn read_boot(&self, system: &Value) -> Result<BootOverride, PowerError> {
        let boot = system.get("Boot").cloned().unwrap_or(Value::Null);
        let s = |k: &str| boot.get(k).and_then(Value::as_str).unwrap_or("");
        let bad = |what: &str, v: &str| PowerError::Action {
            target: self.target.clone(),
            operation: "set the boot device".into(),
            detail: format!("{what} reads back as {v:?}"),
        };
        let device = match s("BootSourceOverrideTarget") {
            "Pxe" => BootDevice::Network,
            "Hdd" => BootDevice::Disk,
            v => return Err(bad("BootSourceOverrideTarget", v)),
        };
        let persistence = match s("BootSourceOverrideEnabled") {
            "Once" => BootPersistence::Once,
            "Continuous" => BootPersistence::Persistent,
            v => return Err(bad("BootSourceOverrideEnabled", v)),
        };
        let mode = match s("BootSourceOverrideMode") {
            "UEFI" => Some(BootMode::Uefi),
            "Legacy" => Some(BootMode::Legacy),
            _ => None,
        };
        Ok(BootOverride {
            device,
            persistence,
            mode,
        })
    }
}

#[async_trait]
impl PowerDriver for RedfishDriver {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    async fn power_on(&self) -> Result<(), PowerError> {
        self.reset(&["On", "ForceOn"], PowerState::On, "power on")
            .await
    }

    async fn power_off(&self, mode: OffMode) -> Result<(), PowerError> {
        match mode {
            OffMode::Hard => {
                self.reset(&["ForceOff"], PowerState::Off, "power off")
                    .await
            }
            OffMode::Soft => {
                self.reset(&["GracefulShutdown"], PowerState::Off, "soft power off")
                    .await
            }
        }
    }

    async fn power_cycle(&self) -> Result<(), PowerError> {
        self.reset(
            &["PowerCycle", "ForceRestart", "GracefulRestart"],
            PowerState::On,
            "power cycle",
        )
        .await
    }

    async fn query(&self) -> Result<PowerState, PowerError> {
        let (_, sys) = self.read_system().await?;
        self.state_of(&sys.body)
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<BootOverride, PowerError> {
        let (path, sys) = self.read_system().await?;
        let target = match boot.device {
            BootDevice::Network => "Pxe",
            BootDevice::Disk => "Hdd",
        };
        if let Some(allowed) = sys
            .body
            .pointer("/Boot/BootSourceOverrideTarget@Redfish.AllowableValues")
            .and_then(Value::as_array)
            && !allowed.iter().any(|a| a.as_str() == Some(target))
        {
            return Err(PowerError::Unsupported {
                driver: DESCRIPTOR.name.into(),
                operation: format!("boot override target {target} (offered: {allowed:?})"),
            });
        }
        let mut patch = json!({
            "BootSourceOverrideTarget": target,
            "BootSourceOverrideEnabled": match boot.persistence {
                BootPersistence::Once => "Once",
                BootPersistence::Persistent => "Continuous",
            },
        });
        if let Some(mode) = boot.mode {
            patch["BootSourceOverrideMode"] = json!(match mode {
                BootMode::Uefi => "UEFI",
                BootMode::Legacy => "Legacy",
            });
        }
        self.request(
            Method::PATCH,
            &path,
            Some(&json!({ "Boot": patch })),
            sys.etag.as_deref(),
            "set the boot device",
        )
        .await?;
        let back = self.get(&path, "read the boot override").await?;
        let applied = self.read_boot(&back.body)?;
        if applied.device != boot.device {
            return Err(PowerError::Action {
                target: self.target.clone(),
                operation: "set the boot device".into(),
                detail: format!("the target reads back as {:?}", applied.device),
            });
        }
        if boot.mode.is_some() && applied.mode != boot.mode {
            return Err(PowerError::Action {
                target: self.target.clone(),
                operation: "set the boot device".into(),
                detail: format!("the boot mode reads back as {:?}", applied.mode),
            });
        }
        if applied.persistence != boot.persistence {
            debug!(
                target = %self.target,
                asked = ?boot.persistence,
                got = ?applied.persistence,
                "the BMC changed the boot override's persistence"
            );
        }
        Ok(applied)
    }

    async fn probe(&self) -> Result<ProbeReport, PowerError> {
        let root = self.get("/redfish/v1/", "read the service root").await?;
        let (path, sys) = self.read_system().await?;
        let state = self.state_of(&sys.body)?;
        let mut details = BTreeMap::new();
        let mut put = |k: &str, v: Option<&Value>| {
            if let Some(v) = v {
                let s = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                details.insert(k.to_owned(), s);
            }
        };
        put("redfish_version", root.body.get("RedfishVersion"));
        put("vendor", root.body.get("Vendor"));
        put("manufacturer", sys.body.get("Manufacturer"));
        put("model", sys.body.get("Model"));
        put("uuid", sys.body.get("UUID"));
        put(
            "boot_targets",
            sys.body
                .pointer("/Boot/BootSourceOverrideTarget@Redfish.AllowableValues"),
        );
        let (_, resets) = self.reset_action(&sys.body).await?;
        details.insert("reset_types".into(), resets.join(","));
        details.insert("system".into(), path);
        let session = self.state.lock().await.session.is_some();
        details.insert(
            "auth".into(),
            if session {
                "session"
            } else if self.user.is_some() {
                "basic"
            } else {
                "none"
            }
            .into(),
        );
        let _ = root.status;
        Ok(ProbeReport { state, details })
    }

    async fn close(&self) -> Result<(), PowerError> {
        let session = {
            let mut st = self.state.lock().await;
            st.auth_settled = false;
            st.session.take()
        };
        if let Some(s) = session
            && let Some(loc) = &s.location
        {
            self.send(
                Method::DELETE,
                loc,
                None,
                None,
                Auth::Token(&s),
                "delete the session",
            )
            .await?;
        }
        Ok(())
    }
}
