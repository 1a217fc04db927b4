//! `/MAAS/metadata/...`: what a machine reads and reports with its node
//! token (section 9 of the spec): meta-data, user-data (fetching it ends a
//! deployment), and `op=signal` (ends commissioning, testing, erasing).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use maas_core::SystemId;
use maas_core::lifecycle::NodeStatus;

use crate::Region;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::Params;

impl Region {
    /// Where deploying machines reach the metadata service and the images:
    /// the configured boot server, else the address this request came to.
    pub(crate) fn boot_base(&self, headers: &HeaderMap) -> String {
        match &self.config().boot_server_url {
            Some(u) => u.clone(),
            None => format!(
                "http://{}",
                headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("localhost:5240")
            ),
        }
    }

    /// The machine's `(osystem, series)`, or the configured defaults when it
    /// has no deployment.
    pub(crate) fn os_release(&self, m: &maas_core::machine::Machine) -> (String, String) {
        if m.distro_series.is_empty() {
            (
                self.config().default_osystem.clone(),
                self.config().default_distro_series.clone(),
            )
        } else {
            (m.osystem.clone(), m.distro_series.clone())
        }
    }

    /// Records what a deployment was asked for on the machine itself (so a
    /// region restart keeps it).
    pub(crate) async fn remember_deployment(
        &self,
        id: &SystemId,
        osystem: String,
        series: String,
        user_data: Option<Vec<u8>>,
    ) -> Result<maas_core::machine::Machine, ApiError> {
        let mut m = self.store().machine_get(id).await?;
        m.osystem = osystem;
        m.distro_series = series;
        m.user_data = user_data.map(maas_core::machine::UserData);
        Ok(self.store().machine_update(&m).await?)
    }

    /// Turns the machine's network booting on or off (curtin's
    /// `netboot_off` before it reboots into the installed system).
    pub(crate) async fn set_netboot(&self, id: &SystemId, on: bool) -> Result<(), ApiError> {
        let mut m = self.store().machine_get(id).await?;
        if m.netboot != on {
            m.netboot = on;
            self.store().machine_update(&m).await?;
            tracing::info!(system_id = %id, netboot = on, "netboot changed");
        }
        Ok(())
    }

    /// Clears the deployment's OS, series and user data, and the owner's
    /// data (on release).
    pub(crate) async fn forget_deployment(&self, id: &SystemId) -> Result<(), ApiError> {
        let mut m = self.store().machine_get(id).await?;
        if m.osystem.is_empty()
            && m.distro_series.is_empty()
            && m.user_data.is_none()
            && m.owner_data.is_empty()
        {
            return Ok(());
        }
        m.osystem.clear();
        m.distro_series.clear();
        m.user_data = None;
        m.owner_data.clear();
        self.store().machine_update(&m).await?;
        Ok(())
    }
}

fn text(body: impl Into<String>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// Every request under `/MAAS/metadata/`.
pub(crate) async fn dispatch(
    State(region): State<Region>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match serve(&region, &method, &uri, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn serve(
    region: &Region,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // cloud-init adds redundant slashes.
    let rel = uri
        .path()
        .strip_prefix("/MAAS/metadata")
        .unwrap_or("")
        .trim_start_matches('/');
    let caller = region.authenticate(headers).await?;
    let node = match &caller {
        Caller::Node(id) => Some(id.clone()),
        _ => None,
    };
    if let Some(id) = rel.strip_prefix("status/") {
        // The cloud-init/curtin reporting webhook: authenticated, JSON.
        if headers.get(header::AUTHORIZATION).is_none() {
            return Err(ApiError::Unauthenticated);
        }
        let Some(node) = node else {
            // MAAS drops reports with an unknown token silently.
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        if node.as_str() != id {
            return Err(ApiError::Forbidden(
                "Not authenticated as this node.".into(),
            ));
        }
        return crate::webhook::report(region, &node, &body).await;
    }
    // The curtin (installation environment) variant: the same tree, but
    // user-data is the curtin config; no anonymous fallback.
    let (rel, curtin) = match rel.strip_prefix("curtin/") {
        Some(rest) => (rest, true),
        None if rel == "curtin" => ("", true),
        None => (rel, false),
    };
    if curtin && node.is_none() {
        return Err(ApiError::Unauthenticated);
    }
    if rel.is_empty() {
        return match node {
            Some(_) => Ok(text("2012-03-01\nlatest")),
            None => Err(ApiError::Unauthenticated),
        };
    }
    let (ver, rest) = rel.split_once('/').unwrap_or((rel, ""));
    if ver != "latest" && ver != "2012-03-01" {
        return Err(ApiError::NotFound("Unknown metadata version".into()));
    }
    match (method, rest.trim_end_matches('/')) {
        // The kernel command line of an unknown machine names this
        // (`cloud-config-url`): the enlistment preseed, anonymous.
        (&Method::GET, "enlist-preseed") => {
            let params = Params::parse(method, uri.query(), headers, body).await?;
            if params.op() != Some("get_enlist_preseed") {
                return Err(ApiError::BadRequest(format!(
                    "Unrecognised signature: method=GET op={}",
                    params.op().unwrap_or("")
                )));
            }
            enlist_preseed(region, headers)
        }
        // curtin's late command: `op=netboot_off` posted to the machine's
        // own by-id URL with its token, just before the reboot.
        (&Method::POST, path) if path.starts_with("by-id/") => {
            let params = Params::parse(method, uri.query(), headers, body).await?;
            let Some(node) = node else {
                return Err(ApiError::Unauthenticated);
            };
            if path["by-id/".len()..].trim_end_matches('/') != node.as_str() {
                return Err(ApiError::Forbidden(
                    "Not authenticated as this node.".into(),
                ));
            }
            match params.op() {
                Some(op @ ("netboot_off" | "netboot_on")) => {
                    region.set_netboot(&node, op == "netboot_on").await?;
                    Ok(text("OK"))
                }
                other => Err(ApiError::BadRequest(format!(
                    "Unrecognised signature: method=POST op={}",
                    other.unwrap_or("")
                ))),
            }
        }
        (&Method::GET, path) if path.starts_with("by-id/") => {
            let params = Params::parse(method, uri.query(), headers, body).await?;
            if params.op() != Some("get_preseed") {
                return Err(ApiError::BadRequest(format!(
                    "Unrecognised signature: method=GET op={}",
                    params.op().unwrap_or("")
                )));
            }
            let id = SystemId::parse(&path["by-id/".len()..])
                .map_err(|_| ApiError::NotFound("No Node matches the given query.".into()))?;
            preseed(region, &id, headers).await
        }
        (&Method::GET, "curtin-installer") => Err(ApiError::NotFound(
            "curtin comes with the ephemeral image; there is no installer to download".into(),
        )),
        (&Method::GET, "") => Ok(text(match node {
            Some(_) => "maas-commissioning-scripts\nmeta-data\nuser-data",
            None => "meta-data\nuser-data",
        })),
        (&Method::POST, "") => {
            let params = Params::parse(method, uri.query(), headers, body).await?;
            let Some(node) = node else {
                return Err(ApiError::Unauthenticated);
            };
            match params.op() {
                Some("signal") => signal(region, &node, &params).await,
                Some(op @ ("netboot_off" | "netboot_on")) => {
                    region.set_netboot(&node, op == "netboot_on").await?;
                    Ok(text("OK"))
                }
                other => Err(ApiError::BadRequest(format!(
                    "Unrecognised signature: method=POST op={}",
                    other.unwrap_or("")
                ))),
            }
        }
        (&Method::GET, "meta-data") => Ok(text(match node {
            Some(_) => "instance-id\nlocal-hostname\nvendor-data",
            None => "instance-id\nlocal-hostname",
        })),
        (&Method::GET, item) if item.starts_with("meta-data/") => {
            let item = &item["meta-data/".len()..];
            let Some(node) = node else {
                return match item {
                    "instance-id" => Ok(text("i-maas-enlistment")),
                    "local-hostname" => Ok(text("maas-enlisting-node")),
                    "public-keys" => Ok(text("")),
                    _ => Err(ApiError::NotFound("Unknown metadata attribute".into())),
                };
            };
            let m = region.store().machine_get(&node).await?;
            match item {
                "instance-id" => Ok(text(m.system_id.to_string())),
                "local-hostname" => Ok(text(m.fqdn())),
                "public-keys" => Ok(text("")),
                "vendor-data" => Ok((
                    [(header::CONTENT_TYPE, "application/x-yaml; charset=utf-8")],
                    "cloud-init: \"#cloud-config\\n{}\\n\"\n",
                )
                    .into_response()),
                _ => Err(ApiError::NotFound("Unknown metadata attribute".into())),
            }
        }
        (&Method::GET, "user-data") => {
            let Some(node) = node else {
                return Ok(text("#cloud-config\n{}\n"));
            };
            let m = region.store().machine_get(&node).await?;
            if curtin {
                // What curtin installs with: the machine's curtin config.
                let yaml = region.curtin_yaml(&m, headers).await?;
                return Ok(
                    ([(header::CONTENT_TYPE, "application/octet-stream")], yaml).into_response()
                );
            }
            // The ephemeral environment asks what to do (commissioning,
            // testing, erasing, rescue).
            if let Some(p) =
                ephemeral_purpose(m.status).filter(|p| *p != maas_curtin::EphemeralPurpose::Deploy)
            {
                return ephemeral_doc(region, &m, headers, p, true).await;
            }
            if m.status == NodeStatus::Deploying {
                // The deployed OS's first boot: the deployment is done.
                region
                    .store()
                    .machine_set_status(
                        &node,
                        NodeStatus::Deployed,
                        "user data fetched at first boot",
                    )
                    .await?;
            }
            match m.user_data {
                Some(d) => {
                    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], d.0).into_response())
                }
                None => Err(ApiError::NotFound(
                    "No user data available for this node.".into(),
                )),
            }
        }
        _ => Err(ApiError::NotFound(format!(
            "Unknown metadata path: {}",
            uri.path()
        ))),
    }
}

/// `by-id/{system_id}/?op=get_preseed` (anonymous, as the kernel command
/// line's `cloud-config-url` fetches it): the cloud-config for why the
/// machine boots now, with its node token.
async fn preseed(
    region: &Region,
    id: &SystemId,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let m = region.store().machine_get(id).await.map_err(|e| match e {
        maas_core::repo::RepositoryError::NotFound { .. } => {
            ApiError::NotFound("No Node matches the given query.".into())
        }
        other => other.into(),
    })?;
    let purpose = ephemeral_purpose(m.status).unwrap_or(maas_curtin::EphemeralPurpose::Enlist);
    ephemeral_doc(region, &m, headers, purpose, false).await
}

/// Why a machine in `status` runs the ephemeral environment, if it does.
fn ephemeral_purpose(status: NodeStatus) -> Option<maas_curtin::EphemeralPurpose> {
    use maas_curtin::EphemeralPurpose as P;
    Some(match status {
        NodeStatus::Commissioning => P::Commission,
        NodeStatus::Testing => P::Test,
        NodeStatus::DiskErasing => P::Erase,
        NodeStatus::EnteringRescueMode | NodeStatus::RescueMode => P::Rescue,
        NodeStatus::Deploying => P::Deploy,
        _ => return None,
    })
}

/// The preseed (cloud-config with the datasource and the node token) or
/// the user data (what the agent is to do) of `purpose` for `m`.
async fn ephemeral_doc(
    region: &Region,
    m: &maas_core::machine::Machine,
    headers: &HeaderMap,
    purpose: maas_curtin::EphemeralPurpose,
    user_data: bool,
) -> Result<Response, ApiError> {
    let id = &m.system_id;
    let base = region.boot_base(headers);
    let endpoint = maas_curtin::MetadataEndpoint::new(&base)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let token = region.node_token(id).await?;
    let credentials = maas_curtin::NodeCredentials::from(&token);
    let templates = maas_curtin::TemplateStore::builtin();
    let apt = maas_curtin::AptConfig::default();
    let (osystem, release) = region.os_release(m);
    let ctx = maas_curtin::NodeContext {
        machine: Some(m),
        credentials: Some(&credentials),
        endpoint: &endpoint,
        templates: &templates,
        osystem: &osystem,
        release: &release,
        apt: &apt,
        ntp_servers: &[],
        agent_command: "/usr/bin/maas-agent",
    };
    let doc = if user_data {
        ctx.user_data(purpose)
    } else {
        ctx.preseed(purpose)
    }
    .map_err(|e| ApiError::BadRequest(format!("no {} for {id}: {e}", purpose.as_str())))?;
    Ok(text(doc))
}

/// `enlist-preseed/?op=get_enlist_preseed`: the cloud-config an unknown
/// machine's ephemeral environment starts from (no credentials: it enlists
/// anonymously, then powers off).
fn enlist_preseed(region: &Region, headers: &HeaderMap) -> Result<Response, ApiError> {
    let base = region.boot_base(headers);
    let endpoint = maas_curtin::MetadataEndpoint::new(&base)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let templates = maas_curtin::TemplateStore::builtin();
    let apt = maas_curtin::AptConfig::default();
    let cfg = region.config();
    let ctx = maas_curtin::NodeContext {
        machine: None,
        credentials: None,
        endpoint: &endpoint,
        templates: &templates,
        osystem: &cfg.default_osystem,
        release: &cfg.default_distro_series,
        apt: &apt,
        ntp_servers: &[],
        agent_command: "/usr/bin/maas-agent",
    };
    let doc = ctx
        .preseed(maas_curtin::EphemeralPurpose::Enlist)
        .map_err(|e| ApiError::BadRequest(format!("no enlistment preseed: {e}")))?;
    Ok(text(doc))
}

/// `op=signal`: the ephemeral environment reports how its work went.
async fn signal(region: &Region, node: &SystemId, params: &Params) -> Result<Response, ApiError> {
    let status = params
        .get("status")
        .ok_or_else(|| ApiError::required("status"))?;
    let m = region.store().machine_get(node).await?;
    if !matches!(
        status,
        "OK" | "FAILED"
            | "WORKING"
            | "TESTING"
            | "COMMISSIONING"
            | "INSTALLING"
            | "APPLYING_NETCONF"
    ) {
        return Err(ApiError::invalid(
            "status",
            format!("Unknown status {status:?}: not one of OK, FAILED, WORKING."),
        ));
    }
    let failed_scripts = region.store_signal_files(node, m.status, params).await?;
    // The agent's inventory updates the machine (hardware, disks, NICs).
    if m.status == NodeStatus::Commissioning
        && let Some(f) = params.files().iter().find(|f| {
            maas_core::script::OutputStream::split(&f.file_name).0
                == maas_core::inventory::INVENTORY_SCRIPT
        })
    {
        let inv = maas_core::inventory::Inventory::parse(&f.data)
            .map_err(|e| ApiError::BadRequest(format!("{}: {e}", f.file_name)))?;
        let mut fresh = region.store().machine_get(node).await?;
        fresh
            .apply_inventory(&inv)
            .map_err(|e| ApiError::BadRequest(format!("{}: {e}", f.file_name)))?;
        region.link_boot_interface(&mut fresh, &inv).await?;
        region.store().machine_update(&fresh).await?;
    }
    // BMC detection during commissioning reports the power settings found.
    if m.status == NodeStatus::Commissioning
        && let Some(power_type) = params.get("power_type")
    {
        let mut fresh = region.store().machine_get(node).await?;
        fresh.power_type = power_type.to_owned();
        if let Some(raw) = params.get("power_parameters") {
            let v: std::collections::BTreeMap<String, serde_json::Value> =
                serde_json::from_str(raw).map_err(|e| {
                    ApiError::invalid("power_parameters", format!("not a JSON object: {e}"))
                })?;
            fresh.power_parameters = maas_core::machine::PowerParameters(
                v.into_iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => (k, s),
                        other => (k, other.to_string()),
                    })
                    .collect(),
            );
        }
        region.store().machine_update(&fresh).await?;
    }
    // A run that reports OK with a failed script failed (MAAS: any failed
    // script result fails commissioning and testing).
    let status = if status == "OK" && !failed_scripts.is_empty() {
        "FAILED"
    } else {
        status
    };
    let next = match (m.status, status) {
        (_, "WORKING") => None,
        (NodeStatus::Commissioning, "OK") => Some(NodeStatus::Ready),
        // Tests passed: back to what the machine was (a deployed machine
        // stays deployed), Ready for a machine not yet in service.
        (NodeStatus::Testing, "OK") => Some(
            m.previous_status
                .filter(|s| {
                    matches!(
                        s,
                        NodeStatus::Ready
                            | NodeStatus::Allocated
                            | NodeStatus::Deployed
                            | NodeStatus::Broken
                            | NodeStatus::Reserved
                    )
                })
                .unwrap_or(NodeStatus::Ready),
        ),
        (NodeStatus::EnteringRescueMode, "OK") => Some(NodeStatus::RescueMode),
        (NodeStatus::EnteringRescueMode, "FAILED") => Some(NodeStatus::FailedEnteringRescueMode),
        (NodeStatus::Commissioning, "FAILED") => Some(NodeStatus::FailedCommissioning),
        (NodeStatus::Testing, "FAILED") => Some(NodeStatus::FailedTesting),
        (NodeStatus::DiskErasing, "OK") => Some(NodeStatus::Ready),
        (NodeStatus::DiskErasing, "FAILED") => Some(NodeStatus::FailedDiskErasing),
        (NodeStatus::Deploying, "FAILED") => Some(NodeStatus::FailedDeployment),
        (NodeStatus::Deploying, "OK") => None, // installed; Deployed at first boot
        (NodeStatus::Commissioning, "TESTING") => Some(NodeStatus::Testing),
        // Progress reports (INSTALLING, APPLYING_NETCONF, ...) and signals
        // that change nothing in this status.
        _ => None,
    };
    if let Some(to) = next {
        let failed_note;
        let why = match params.get("error") {
            Some(e) => e,
            None if !failed_scripts.is_empty() => {
                failed_note = format!("failed scripts: {}", failed_scripts.join(", "));
                failed_note.as_str()
            }
            None => status,
        };
        region.store().machine_set_status(node, to, why).await?;
    }
    Ok((StatusCode::OK, text("OK")).into_response())
}
