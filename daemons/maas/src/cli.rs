//! The command line against the REST API: profiles (a URL and an API key)
//! saved per user, machines and the network and organisation objects as
//! tables (or JSON with `--json`), shell completions.
//!
//! ```text
//! maas login PROFILE URL API_KEY        (checks the key, saves the profile)
//! maas logout PROFILE
//! maas [--profile P] [--json] machines list|show ID|add ...|allocate [k=v ...]
//!                             |commission|deploy|release|power-on|power-off|abort ID
//! maas [--profile P] [--json] subnets|vlans|zones|fabrics list
//! maas [--profile P] [--json] events [--machine ID] [--limit N]
//! maas completions bash
//! ```
//!
//! Profiles live in `$XDG_CONFIG_HOME/maas-rs/profiles.json` (else
//! `~/.config/...`), readable by the user only: it holds API keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::client::ApiClient;

/// Where profiles are kept.
pub fn profiles_path() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("maas-rs").join("profiles.json")
}

type Profiles = BTreeMap<String, (String, String)>;

fn load() -> anyhow::Result<Profiles> {
    let path = profiles_path();
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} is not a profiles file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profiles::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn save(p: &Profiles) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = profiles_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, &serde_json::to_vec_pretty(p)?)?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The commands this module runs.
pub const COMMANDS: &[&str] = &[
    "login",
    "logout",
    "machines",
    "subnets",
    "vlans",
    "zones",
    "fabrics",
    "events",
    "completions",
];

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A table with a header row, columns as wide as their widest cell.
pub fn table(columns: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = columns.iter().map(|c| c.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(columns.iter().map(|c| c.to_uppercase()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

fn rows(list: &Value, fields: &[&str]) -> Vec<Vec<String>> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|item| {
                    fields
                        .iter()
                        .map(|f| text(item.pointer(f).unwrap_or(&Value::Null)))
                        .collect()
                })
                .collect()
        })
        .unwrap_or_default()
}

const BASH: &str = r#"# bash completion for maas (maas-rs): source it, or put it in
# /etc/bash_completion.d/maas
_maas() {
    local cur prev
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD-1]}"
    case "$prev" in
        maas) COMPREPLY=($(compgen -W "demo init run region login logout machines subnets vlans zones fabrics events completions help" -- "$cur")); return ;;
        machines) COMPREPLY=($(compgen -W "list show add allocate commission deploy release power-on power-off abort" -- "$cur")); return ;;
        subnets|vlans|zones|fabrics) COMPREPLY=($(compgen -W "list" -- "$cur")); return ;;
        completions) COMPREPLY=($(compgen -W "bash" -- "$cur")); return ;;
    esac
    COMPREPLY=($(compgen -W "--profile --json --machines --keep-running --data-dir --api-listen" -- "$cur"))
}
complete -F _maas maas
"#;

/// Runs a CLI command; `args` are everything after the program name.
/// Returns what to print.
pub async fn run(args: &[String]) -> anyhow::Result<String> {
    let mut profile = std::env::var("MAAS_PROFILE").ok();
    let mut json = false;
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--profile" => profile = Some(it.next().context("--profile needs a name")?.clone()),
            "--json" => json = true,
            _ => words.push(a.as_str()),
        }
    }
    match words.as_slice() {
        ["completions", "bash"] => return Ok(BASH.to_owned()),
        ["completions", ..] => bail!("completions: only bash is written (maas completions bash)"),
        ["login", name, url, key] => {
            let api = ApiClient::new(url, key)?;
            let me = api
                .get("users/?op=whoami")
                .await
                .with_context(|| format!("logging in to {url}"))?;
            let mut p = load()?;
            p.insert((*name).to_owned(), ((*url).to_owned(), (*key).to_owned()));
            save(&p)?;
            return Ok(format!(
                "logged in to {url} as {} (profile {name})\n",
                text(&me["username"])
            ));
        }
        ["login", ..] => bail!("usage: maas login PROFILE URL API_KEY"),
        ["logout", name] => {
            let mut p = load()?;
            if p.remove(*name).is_none() {
                bail!("no profile {name:?}");
            }
            save(&p)?;
            return Ok(format!("profile {name} removed\n"));
        }
        _ => {}
    }
    let profiles = load()?;
    let (name, (url, key)) = match &profile {
        Some(n) => (
            n.clone(),
            profiles
                .get(n)
                .cloned()
                .with_context(|| format!("no profile {n:?}: maas login {n} URL API_KEY"))?,
        ),
        None => match profiles.len() {
            1 => profiles
                .iter()
                .next()
                .map(|(k, v)| (k.clone(), v.clone()))
                .context("a profile")?,
            0 => bail!("not logged in: maas login PROFILE URL API_KEY"),
            _ => bail!(
                "several profiles ({}): choose one with --profile or MAAS_PROFILE",
                profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        },
    };
    let _ = name;
    let api = ApiClient::new(&url, &key)?;
    let show = |v: Value, columns: &[&str], fields: &[&str]| -> String {
        if json {
            format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
        } else if v.is_array() {
            table(columns, &rows(&v, fields))
        } else {
            let mut out = String::new();
            for (c, f) in columns.iter().zip(fields) {
                out.push_str(&format!(
                    "{c:<12} {}\n",
                    text(v.pointer(f).unwrap_or(&Value::Null))
                ));
            }
            out
        }
    };
    const MCOLS: &[&str] = &[
        "hostname",
        "system_id",
        "status",
        "power",
        "owner",
        "cpus",
        "memory",
        "zone",
    ];
    const MFIELDS: &[&str] = &[
        "/hostname",
        "/system_id",
        "/status_name",
        "/power_state",
        "/owner",
        "/cpu_count",
        "/memory",
        "/zone/name",
    ];
    let out = match words.as_slice() {
        ["machines", "list"] | ["machines"] => show(api.get("machines/").await?, MCOLS, MFIELDS),
        ["machines", "show", id] => {
            show(api.get(&format!("machines/{id}/")).await?, MCOLS, MFIELDS)
        }
        ["machines", "add", rest @ ..] => {
            let pairs: Vec<(&str, &str)> = rest
                .iter()
                .map(|kv| kv.split_once('=').with_context(|| format!("{kv:?}: expected key=value (mac_addresses=..., architecture=..., power_type=...)")))
                .collect::<anyhow::Result<_>>()?;
            show(api.post("machines/", &pairs).await?, MCOLS, MFIELDS)
        }
        ["machines", "allocate", rest @ ..] => {
            let pairs: Vec<(&str, &str)> = rest
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .with_context(|| format!("{kv:?}: expected constraint=value"))
                })
                .collect::<anyhow::Result<_>>()?;
            show(
                api.post("machines/?op=allocate", &pairs).await?,
                MCOLS,
                MFIELDS,
            )
        }
        [
            "machines",
            op @ ("commission" | "deploy" | "release" | "power-on" | "power-off" | "abort"),
            id,
        ] => {
            let op = op.replace('-', "_");
            show(
                api.post(&format!("machines/{id}/?op={op}"), &[]).await?,
                MCOLS,
                MFIELDS,
            )
        }
        ["subnets", "list"] | ["subnets"] => show(
            api.get("subnets/").await?,
            &["name", "cidr", "vlan", "gateway", "id"],
            &["/name", "/cidr", "/vlan/name", "/gateway_ip", "/id"],
        ),
        ["fabrics", "list"] | ["fabrics"] => show(
            api.get("fabrics/").await?,
            &["name", "id", "vlans"],
            &["/name", "/id", "/vlans"],
        ),
        ["vlans", "list"] | ["vlans"] => {
            let fabrics = api.get("fabrics/").await?;
            let mut all = Vec::new();
            for f in fabrics.as_array().cloned().unwrap_or_default() {
                let id = text(&f["id"]);
                if let Value::Array(v) = api.get(&format!("fabrics/{id}/vlans/")).await? {
                    all.extend(v);
                }
            }
            show(
                Value::Array(all),
                &["fabric", "vid", "name", "mtu", "dhcp", "primary rack"],
                &[
                    "/fabric",
                    "/vid",
                    "/name",
                    "/mtu",
                    "/dhcp_on",
                    "/primary_rack",
                ],
            )
        }
        ["zones", "list"] | ["zones"] => show(
            api.get("zones/").await?,
            &["name", "description"],
            &["/name", "/description"],
        ),
        ["events", rest @ ..] => {
            let mut q = String::from("events/?op=query");
            let mut it = rest.iter();
            while let Some(flag) = it.next() {
                let v = it.next().with_context(|| format!("{flag} needs a value"))?;
                match *flag {
                    "--machine" => q.push_str(&format!("&id={v}")),
                    "--limit" => q.push_str(&format!("&limit={v}")),
                    other => bail!("events: unknown option {other}"),
                }
            }
            let ev = api.get(&q).await?;
            if json {
                format!(
                    "{}\n",
                    serde_json::to_string_pretty(&ev).unwrap_or_default()
                )
            } else {
                table(
                    &["created", "hostname", "type", "description"],
                    &rows(
                        &ev["events"],
                        &["/created", "/hostname", "/type", "/description"],
                    ),
                )
            }
        }
        other => bail!(
            "unknown command: maas {}\ncommands: {}",
            other.join(" "),
            COMMANDS.join(", ")
        ),
    };
    Ok(out)
}
