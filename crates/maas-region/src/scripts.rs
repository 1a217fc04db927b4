//! Script results: a set per commissioning, testing or installation run,
//! filled by the files `op=signal` uploads, and read back through
//! `nodes/{system_id}/results/` (MAAS's `NodeScriptResultsHandler`).

use base64::Engine;
use maas_core::SystemId;
use maas_core::lifecycle::NodeStatus;
use maas_core::script::{OutputStream, RunKind, ScriptSet};
use serde_json::{Value, json};

use crate::Region;
use crate::api::{Req, ok};
use crate::error::ApiError;
use crate::params::Params;

const API: &str = "/MAAS/api/2.0";

/// The run a status belongs to, if any.
pub(crate) fn run_of(status: NodeStatus) -> Option<RunKind> {
    match status {
        NodeStatus::Commissioning => Some(RunKind::Commissioning),
        NodeStatus::Testing => Some(RunKind::Testing),
        NodeStatus::Deploying => Some(RunKind::Installation),
        _ => None,
    }
}

impl Region {
    /// Starts a new result set for a run, keeping as many old ones as the
    /// `max_node_*_results` setting says.
    pub(crate) async fn begin_run(&self, id: &SystemId, kind: RunKind) -> Result<i64, ApiError> {
        let setting = match kind {
            RunKind::Commissioning => "max_node_commissioning_results",
            RunKind::Testing => "max_node_testing_results",
            RunKind::Installation => "max_node_installation_results",
        };
        let keep = self.setting(setting).await?.as_u64().unwrap_or(10) as usize;
        Ok(self.store().script_set_create(id, kind, keep).await?)
    }

    /// Stores the files of a signal in the machine's current run. Returns
    /// the names of the scripts that reported a non-zero exit status.
    pub(crate) async fn store_signal_files(
        &self,
        id: &SystemId,
        status: NodeStatus,
        params: &Params,
    ) -> Result<Vec<String>, ApiError> {
        let Some(kind) = run_of(status) else {
            return Ok(Vec::new());
        };
        let exit_status = ["exit_status", "script_result", "result"]
            .iter()
            .find_map(|k| params.get(k))
            .map(|v| {
                v.trim().parse::<i32>().map_err(|_| {
                    ApiError::invalid("exit_status", format!("{v:?} is not a number."))
                })
            })
            .transpose()?;
        let named = params.get("name");
        if params.files().is_empty() {
            // An exit status for a named script with no output.
            if let (Some(name), Some(code)) = (named, exit_status) {
                let set = self.current_run(id, kind).await?;
                self.store()
                    .script_output_store(set, name, OutputStream::Combined, b"", Some(code))
                    .await?;
                return Ok(if code == 0 {
                    vec![]
                } else {
                    vec![name.to_owned()]
                });
            }
            return Ok(Vec::new());
        }
        let set = self.current_run(id, kind).await?;
        let mut failed = Vec::new();
        for f in params.files() {
            let (script, stream) = OutputStream::split(&f.file_name);
            // The exit status belongs to the script the signal names, or,
            // when it names none, to every script whose output it carries.
            let code = match named {
                Some(n) if n != script => None,
                _ => exit_status,
            };
            self.store()
                .script_output_store(set, script, stream, &f.data, code)
                .await?;
            if code.is_some_and(|c| c != 0) && !failed.iter().any(|x| x == script) {
                failed.push(script.to_owned());
            }
        }
        Ok(failed)
    }

    /// As MAAS after commissioning: the boot interface, if it has no link
    /// yet, is linked to the subnet its address was on in the ephemeral
    /// environment, in the `default_boot_interface_link_type` mode.
    pub(crate) async fn link_boot_interface(
        &self,
        m: &mut maas_core::machine::Machine,
        inv: &maas_core::inventory::Inventory,
    ) -> Result<(), ApiError> {
        use maas_core::machine::{InterfaceLink, LinkMode};
        let boot = m
            .boot_interface
            .clone()
            .or_else(|| m.interfaces.first().map(|i| i.name.clone()));
        let Some(iface) = m
            .interfaces
            .iter_mut()
            .find(|i| Some(&i.name) == boot.as_ref() && i.links.is_empty())
        else {
            return Ok(());
        };
        let Some(nic) = inv
            .nics
            .iter()
            .find(|n| maas_core::MacAddress::parse(&n.mac).ok() == iface.mac)
        else {
            return Ok(());
        };
        let subnets = self.store().subnet_list().await?;
        let found = nic.addresses.iter().find_map(|a| {
            let ip: std::net::IpAddr = a.split('/').next()?.parse().ok()?;
            subnets.iter().find(|s| s.cidr.contains(&ip))
        });
        let Some(s) = found else {
            return Ok(());
        };
        let mode = match self
            .setting("default_boot_interface_link_type")
            .await?
            .as_str()
        {
            Some("dhcp") => LinkMode::Dhcp,
            Some("static") => LinkMode::Static,
            Some("link_up") => LinkMode::LinkUp,
            _ => LinkMode::Auto,
        };
        let ip = if mode == LinkMode::Static {
            let store = self.store();
            let ranges = store.subnet_ip_range_list(Some(s.id)).await?;
            let assigned: Vec<std::net::IpAddr> = store
                .subnet_address_list(s.id)
                .await?
                .into_iter()
                .filter_map(|a| a.ip)
                .collect();
            Some(
                maas_core::network::next_free_address(s, &ranges, &assigned)
                    .map_err(|e| ApiError::Conflict(e.to_string()))?,
            )
        } else {
            None
        };
        iface.vlan = Some(s.vlan);
        iface.links.push(InterfaceLink {
            id: None,
            mode,
            subnet: Some(s.id),
            ip,
        });
        Ok(())
    }

    async fn current_run(&self, id: &SystemId, kind: RunKind) -> Result<i64, ApiError> {
        match self.store().script_set_latest(id, kind).await? {
            Some(set) => Ok(set),
            // A run begun before this region kept sets (or an enlistment's
            // commissioning): start one now.
            None => self.begin_run(id, kind).await,
        }
    }
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a, %d %b. %Y %H:%M:%S").to_string()
}

fn render(set: &ScriptSet, with_output: bool, filters: &[String]) -> Value {
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let results: Vec<Value> = set
        .results
        .iter()
        .filter(|r| filters.is_empty() || filters.contains(&r.name))
        .map(|r| {
            let (status, status_name) = r.status();
            let runtime = (r.updated - r.created).num_seconds();
            let mut v = json!({
                "id": r.id,
                "name": r.name,
                "created": time(r.created),
                "updated": time(r.updated),
                "status": status,
                "status_name": status_name,
                "exit_status": r.exit_status,
                "started": time(r.created),
                "ended": r.exit_status.map(|_| time(r.updated)),
                "runtime": format!("0:{:02}:{:02}", runtime / 60, runtime % 60),
                "starttime": r.created.timestamp() as f64,
                "endtime": r.exit_status.map(|_| r.updated.timestamp() as f64),
                "estimated_runtime": "0:00:00",
                "parameters": {},
                "script_id": null,
                "script_revision_id": null,
                "suppressed": false,
            });
            if with_output {
                v["output"] = json!(b64(&r.output));
                v["stdout"] = json!(b64(&r.stdout));
                v["stderr"] = json!(b64(&r.stderr));
                v["result"] = json!(b64(&r.result));
            }
            v
        })
        .collect();
    let failed = set.results.iter().any(|r| r.status().0 == 3);
    let running = set.results.iter().any(|r| r.exit_status.is_none());
    let (status, status_name) = match (set.results.is_empty(), failed, running) {
        (true, _, _) => (0, "Pending"),
        (_, true, _) => (3, "Failed"),
        (_, _, true) => (1, "Running"),
        _ => (2, "Passed"),
    };
    let ended = set.results.iter().map(|r| r.updated).max();
    json!({
        "id": set.id,
        "system_id": set.system_id.to_string(),
        "type": set.kind.code(),
        "type_name": set.kind.as_str(),
        "last_ping": ended.map(time),
        "status": status,
        "status_name": status_name,
        "started": time(set.created),
        "ended": if running { None } else { ended.map(time) },
        "runtime": "",
        "results": results,
        "resource_uri": format!("{API}/nodes/{}/results/{}/", set.system_id, set.id),
    })
}

/// `GET nodes/{system_id}/results/` (filters `type`, `hardware_type` is
/// accepted and ignored, `include_output`, `filters` = script names) and
/// `GET nodes/{system_id}/results/{id}/` (`id` a number, or
/// `current-commissioning`, `current-testing`, `current-installation`).
pub(crate) async fn read(r: &Req<'_>, one: bool) -> Result<axum::response::Response, ApiError> {
    let m = r.machine().await?;
    let sets = r.region.store().script_set_list(&m.system_id).await?;
    let with_output = r.params.flag("include_output", false)?;
    let filters = r.params.get_all("filters");
    if one {
        let key = r.path("id");
        let set = match key.strip_prefix("current-") {
            Some(kind) => {
                let kind = RunKind::parse(kind)
                    .ok_or_else(|| ApiError::NotFound(format!("No script result set {key:?}.")))?;
                sets.iter().find(|s| s.kind == kind)
            }
            None => sets.iter().find(|s| s.id.to_string() == key),
        }
        .ok_or_else(|| ApiError::NotFound("No ScriptSet matches the given query.".into()))?;
        return ok(render(set, with_output, &filters));
    }
    let kinds: Vec<RunKind> = r
        .params
        .get_all("type")
        .iter()
        .map(|t| {
            RunKind::parse(t).ok_or_else(|| {
                ApiError::invalid(
                    "type",
                    format!("{t:?} is not commissioning, testing or installation."),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    ok(Value::Array(
        sets.iter()
            .filter(|s| kinds.is_empty() || kinds.contains(&s.kind))
            .map(|s| render(s, with_output, &filters))
            .collect(),
    ))
}
