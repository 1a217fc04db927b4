//! `virsh`: libvirt domains through the `virsh` command.
//!
//! One interactive `virsh -q -c URI` process per driver, kept open across
//! calls (as MAAS's driver talks to an interactive virsh). Besides saving a
//! process start and a connection per call, this is what makes libvirt's
//! test driver (`test:///default`, whose state lasts one connection) behave
//! like a real hypervisor across on, query and off.
//!
//! Each command is framed by `echo` markers on stdout and `echo --err` on
//! stderr, so its output and its errors are told apart from the prompts
//! interactive virsh prints and from a previous command cut short. A
//! command cut short (timeout) leaves the session marked unclean and the
//! next call starts a new process.
//!
//! Where the URI needs a password (`qemu+ssh://`), it is handed to ssh by
//! an `SSH_ASKPASS` helper reading it from the environment of the virsh
//! process, never from a file or the command line. (Not tested here: no
//! SSH server runs in the tests.)

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;
use tracing::debug;

use crate::descriptor::{
    Capabilities, DriverDescriptor, FieldType, PowerParams, Scope, SettingField,
};
use crate::driver::{
    BootDevice, BootOverride, BootPersistence, DriverFactory, OffMode, PowerDriver, PowerState,
    ProbeReport,
};
use crate::error::PowerError;
use crate::secret::Secret;

/// The `virsh` driver's description.
pub static DESCRIPTOR: DriverDescriptor = DriverDescriptor {
    name: "virsh",
    description: "Virsh (virtual systems)",
    capabilities: Capabilities {
        queryable: true,
        boot_device: true,
        soft_off: true,
        chassis: true,
        probe: true,
    },
    settings: &[
        SettingField {
            required: true,
            ..SettingField::new("power_address", "Address (libvirt connection URI)")
        },
        SettingField {
            field_type: FieldType::Password,
            secret: true,
            ..SettingField::new("power_pass", "Password (optional)")
        },
        SettingField {
            required: true,
            scope: Scope::Machine,
            ..SettingField::new("power_id", "Virsh VM ID (domain name or UUID)")
        },
    ],
};

/// Builds [`VirshDriver`]s, running `program` (default `virsh` on `PATH`).
#[derive(Debug, Clone)]
pub struct VirshFactory {
    program: PathBuf,
}

impl Default for VirshFactory {
    fn default() -> Self {
        Self {
            program: PathBuf::from("virsh"),
        }
    }
}

impl VirshFactory {
    /// A factory running this virsh program.
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
        }
    }
}

impl DriverFactory for VirshFactory {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    fn build(&self, params: &PowerParams) -> Result<Box<dyn PowerDriver>, PowerError> {
        Ok(Box::new(VirshDriver::new(self.program.clone(), params)?))
    }
}

/// One libvirt domain, driven through an interactive virsh.
#[derive(Debug)]
pub struct VirshDriver {
    program: PathBuf,
    uri: String,
    domain: String,
    password: Option<Secret>,
    session: Mutex<Option<Session>>,
    seq: AtomicU64,
}

#[derive(Debug)]
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    stderr: BufReader<ChildStderr>,
    /// Unread stdout bytes.
    out_buf: Vec<u8>,
    /// False while a command is in flight; a session left unclean (the
    /// caller gave up mid-command) is replaced.
    clean: bool,
    _askpass: Option<tempfile::TempDir>,
}

/// A word virsh's shell takes as one argument without quoting or escapes.
fn plain_word(field: &str, v: &str) -> Result<(), PowerError> {
    let bad = v
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "'\"\\;#".contains(*c));
    match bad {
        Some(c) => Err(PowerError::InvalidParameter {
            field: field.to_owned(),
            reason: format!("{v:?} contains {c:?}, which virsh would not take as part of one word"),
        }),
        None => Ok(()),
    }
}

impl VirshDriver {
    /// A driver from validated parameters.
    pub fn new(program: PathBuf, params: &PowerParams) -> Result<Self, PowerError> {
        let uri = params.text("power_address").unwrap_or_default().to_owned();
        let domain = params.text("power_id").unwrap_or_default().to_owned();
        plain_word("power_address", &uri)?;
        plain_word("power_id", &domain)?;
        Ok(Self {
            program,
            uri,
            domain,
            password: params.secret("power_pass").cloned(),
            session: Mutex::new(None),
            seq: AtomicU64::new(1),
        })
    }

    fn spawn(&self) -> Result<Session, PowerError> {
        let mut cmd = Command::new(&self.program);
        cmd.arg("-q")
            .arg("-c")
            .arg(&self.uri)
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let askpass = match &self.password {
            Some(p) => {
                let dir = tempfile::tempdir().map_err(|e| self.io_error(e))?;
                let path = dir.path().join("askpass");
                write_askpass(&path).map_err(|e| self.io_error(e))?;
                cmd.env("SSH_ASKPASS", &path)
                    .env("SSH_ASKPASS_REQUIRE", "force")
                    .env("DISPLAY", ":0")
                    .env("MAAS_VIRSH_PASSWORD", p.expose());
                Some(dir)
            }
            None => None,
        };
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                PowerError::ToolMissing {
                    tool: self.program.display().to_string(),
                    source: e,
                }
            } else {
                self.io_error(e)
            }
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(self.io_error(std::io::Error::other("virsh pipes missing")));
        };
        debug!(uri = %self.uri, pid = child.id(), "virsh session started");
        Ok(Session {
            child,
            stdin,
            stdout,
            stderr: BufReader::new(stderr),
            out_buf: Vec::new(),
            clean: true,
            _askpass: askpass,
        })
    }

    fn io_error(&self, e: std::io::Error) -> PowerError {
        PowerError::Connection {
            target: self.uri.clone(),
            source: Box::new(e),
        }
    }

    /// Runs one virsh command in the session; returns its output lines
    /// (prompts removed) or the error it printed.
    async fn run(&self, command: &str, operation: &str) -> Result<String, PowerError> {
        let mut guard = self.session.lock().await;
        if guard.as_ref().is_some_and(|s| !s.clean) {
            *guard = None;
        }
        if guard.is_none() {
            *guard = Some(self.spawn()?);
        }
        let Some(session) = guard.as_mut() else {
            return Err(self.io_error(std::io::Error::other("no virsh session")));
        };
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let begin = format!("__MAAS _BEGIN_{n}__");
        let end = format!("__MAAS _END_{n}__");
        // The markers are written split in two words so that virsh's echo
        // of the command line never matches what `echo` prints.
        let script = format!(
            "echo \"__MAAS\" \"_BEGIN_{n}__\"\n{command}\necho \"__MAAS\" \"_END_{n}__\"\necho --err \"__MAAS\" \"_END_{n}__\"\n"
        );
        session.clean = false;
        let res = self.exchange(session, &script, &begin, &end).await;
        match res {
            Ok((out, errors)) => {
                session.clean = true;
                if errors.is_empty() {
                    Ok(out)
                } else {
                    Err(self.classify(operation, &errors.join("; ")))
                }
            }
            Err(Exit(stderr)) => {
                let _ = session.child.start_kill();
                *guard = None;
                let msg = stderr.trim();
                if msg.is_empty() {
                    Err(self.io_error(std::io::Error::other("virsh exited")))
                } else {
                    Err(match self.classify(operation, msg) {
                        PowerError::Action { detail, .. } => {
                            self.io_error(std::io::Error::other(detail))
                        }
                        other => other,
                    })
                }
            }
        }
    }

    async fn exchange(
        &self,
        s: &mut Session,
        script: &str,
        begin: &str,
        end: &str,
    ) -> Result<(String, Vec<String>), Exit> {
        if s.stdin.write_all(script.as_bytes()).await.is_err() || s.stdin.flush().await.is_err() {
            return Err(Exit(drain(&mut s.stderr).await));
        }
        // stdout up to the end marker
        let text = loop {
            let hay = String::from_utf8_lossy(&s.out_buf);
            if let Some(e) = hay.find(end) {
                let text = hay[..e].to_string();
                let consumed = e + end.len();
                s.out_buf.drain(..consumed.min(s.out_buf.len()));
                break text;
            }
            let mut chunk = [0u8; 8192];
            match s.stdout.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(Exit(drain(&mut s.stderr).await)),
                Ok(k) => s.out_buf.extend_from_slice(&chunk[..k]),
            }
        };
        let body = match text.rfind(begin) {
            Some(b) => &text[b + begin.len()..],
            None => "",
        };
        let out: Vec<&str> = body
            .lines()
            .map(|l| match l.find("virsh # ") {
                Some(p) => &l[..p],
                None => l,
            })
            .filter(|l| !l.trim().is_empty())
            .collect();
        // stderr up to the end marker; lines before an older marker belong
        // to a command cut short.
        let mut errors = Vec::new();
        loop {
            let mut line = String::new();
            match s.stderr.read_line(&mut line).await {
                Ok(0) | Err(_) => return Err(Exit(errors.join("\n"))),
                Ok(_) => {}
            }
            if line.contains(end) {
                break;
            }
            if line.contains("__MAAS _END_") {
                errors.clear();
                continue;
            }
            let l = line.trim();
            if !l.is_empty() {
                errors.push(l.strip_prefix("error: ").unwrap_or(l).to_owned());
            }
        }
        Ok((out.join("\n"), errors))
    }

    fn classify(&self, operation: &str, msg: &str) -> PowerError {
        let lower = msg.to_ascii_lowercase();
        if lower.contains("failed to get domain") || lower.contains("domain not found") {
            PowerError::NotFound {
                target: self.uri.clone(),
                what: format!("domain {:?}", self.domain),
            }
        } else if lower.contains("authentication") || lower.contains("permission denied") {
            PowerError::Auth {
                target: self.uri.clone(),
            }
        } else if lower.contains("failed to connect")
            || lower.contains("unable to connect")
            || lower.contains("cannot recv data")
            || lower.contains("end of file while reading")
            || lower.contains("no connection")
        {
            self.io_error(std::io::Error::other(msg.to_owned()))
        } else if lower.contains("no connection driver available") || lower.contains("unsupported")
        {
            PowerError::InvalidParameter {
                field: "power_address".into(),
                reason: msg.to_owned(),
            }
        } else {
            PowerError::Action {
                target: self.uri.clone(),
                operation: operation.to_owned(),
                detail: msg.to_owned(),
            }
        }
    }

    async fn inactive_xml(&self) -> Result<String, PowerError> {
        self.run(
            &format!("dumpxml --inactive {}", self.domain),
            "read the domain XML",
        )
        .await
    }
}

/// Stdout ended: the process is gone. Carries what it said on stderr.
struct Exit(String);

async fn drain(stderr: &mut BufReader<ChildStderr>) -> String {
    let mut s = String::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        stderr.read_to_string(&mut s),
    )
    .await;
    s.lines()
        .map(|l| l.trim().strip_prefix("error: ").unwrap_or(l.trim()))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn write_askpass(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(path)?;
    f.write_all(b"#!/bin/sh\nprintf '%s\\n' \"$MAAS_VIRSH_PASSWORD\"\n")
}

/// libvirt's state names (`virsh domstate`) as power states.
pub fn parse_domstate(s: &str) -> PowerState {
    match s.trim() {
        "running" | "idle" | "paused" | "in shutdown" | "blocked" => PowerState::On,
        "shut off" | "shutdown" | "pmsuspended" => PowerState::Off,
        "crashed" => PowerState::Error,
        _ => PowerState::Unknown,
    }
}

/// The `<boot dev=.../>` devices of the `<os>` element, in order.
pub fn boot_devices(xml: &str) -> Vec<String> {
    let Some((start, end)) = os_section(xml) else {
        return Vec::new();
    };
    let mut devs = Vec::new();
    let mut rest = &xml[start..end];
    while let Some(p) = rest.find("<boot ") {
        let tail = &rest[p..];
        let close = tail.find("/>").unwrap_or(tail.len());
        let elem = &tail[..close];
        if let Some(d) = attr(elem, "dev") {
            devs.push(d.to_owned());
        }
        rest = &tail[close..];
    }
    devs
}

/// The byte range inside `<os ...>` and `</os>`.
fn os_section(xml: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    let open = loop {
        let p = from + xml[from..].find("<os")?;
        let next = xml[p + 3..].chars().next()?;
        if next == '>' || next.is_whitespace() {
            break p;
        }
        from = p + 3;
    };
    let body = open + xml[open..].find('>')? + 1;
    let close = body + xml[body..].find("</os>")?;
    Some((body, close))
}

fn attr<'a>(elem: &'a str, name: &str) -> Option<&'a str> {
    for q in ['\'', '"'] {
        let key = format!("{name}={q}");
        if let Some(p) = elem.find(&key) {
            let v = &elem[p + key.len()..];
            return v.find(q).map(|e| &v[..e]);
        }
    }
    None
}

/// The domain XML with the `<os>` boot order set to `first`, then the
/// other of network and disk.
pub fn with_boot_order(xml: &str, device: BootDevice) -> Option<String> {
    let (start, end) = os_section(xml)?;
    let mut kept = String::new();
    let mut rest = &xml[start..end];
    while let Some(p) = rest.find("<boot ") {
        let close = p + rest[p..].find("/>")? + 2;
        kept.push_str(&rest[..p]);
        rest = &rest[close..];
    }
    kept.push_str(rest);
    let mut os = String::from("\n");
    for line in kept.lines().filter(|l| !l.trim().is_empty()) {
        os.push_str(line);
        os.push('\n');
    }
    os.push_str(match device {
        BootDevice::Network => "    <boot dev='network'/>\n    <boot dev='hd'/>\n  ",
        BootDevice::Disk => "    <boot dev='hd'/>\n    <boot dev='network'/>\n  ",
    });
    Some(format!("{}{}{}", &xml[..start], os, &xml[end..]))
}

#[async_trait]
impl PowerDriver for VirshDriver {
    fn descriptor(&self) -> &'static DriverDescriptor {
        &DESCRIPTOR
    }

    async fn power_on(&self) -> Result<(), PowerError> {
        match self
            .run(&format!("start {}", self.domain), "power on")
            .await
        {
            Err(PowerError::Action { detail, .. })
                if detail.contains("already active") || detail.contains("already running") =>
            {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    async fn power_off(&self, mode: OffMode) -> Result<(), PowerError> {
        let cmd = match mode {
            OffMode::Hard => "destroy",
            OffMode::Soft => "shutdown",
        };
        match self
            .run(&format!("{cmd} {}", self.domain), "power off")
            .await
        {
            Err(PowerError::Action { detail, .. }) if detail.contains("not running") => Ok(()),
            other => other.map(drop),
        }
    }

    async fn power_cycle(&self) -> Result<(), PowerError> {
        self.run(&format!("reset {}", self.domain), "reset")
            .await
            .map(drop)
    }

    async fn query(&self) -> Result<PowerState, PowerError> {
        let out = self
            .run(&format!("domstate {}", self.domain), "query")
            .await?;
        let line = out.lines().next().unwrap_or("").trim();
        match parse_domstate(line) {
            PowerState::Unknown => Err(PowerError::BadReply {
                target: self.uri.clone(),
                detail: format!("unknown domain state {line:?}"),
            }),
            s => Ok(s),
        }
    }

    async fn set_boot_device(&self, boot: BootOverride) -> Result<BootOverride, PowerError> {
        if boot.mode.is_some() {
            return Err(PowerError::Unsupported {
                driver: DESCRIPTOR.name.into(),
                operation: "changing the firmware mode".into(),
            });
        }
        let xml = self.inactive_xml().await?;
        if xml.contains("<boot order=") {
            return Err(PowerError::Unsupported {
                driver: DESCRIPTOR.name.into(),
                operation: "setting the boot device of a domain with per-device boot order".into(),
            });
        }
        let new = with_boot_order(&xml, boot.device).ok_or_else(|| PowerError::BadReply {
            target: self.uri.clone(),
            detail: "the domain XML has no <os> element".into(),
        })?;
        let mut file = tempfile::Builder::new()
            .prefix("maas-virsh-")
            .suffix(".xml")
            .tempfile()
            .map_err(|e| self.io_error(e))?;
        file.write_all(new.as_bytes())
            .map_err(|e| self.io_error(e))?;
        let path = file.path().to_string_lossy().into_owned();
        plain_word("(temporary file)", &path)?;
        self.run(&format!("define {path}"), "set the boot device")
            .await?;
        drop(file);
        let back = boot_devices(&self.inactive_xml().await?);
        let device = match back.first().map(String::as_str) {
            Some("network") => BootDevice::Network,
            Some("hd") => BootDevice::Disk,
            other => {
                return Err(PowerError::Action {
                    target: self.uri.clone(),
                    operation: "set the boot device".into(),
                    detail: format!("the first boot device reads back as {other:?}"),
                });
            }
        };
        if device != boot.device {
            return Err(PowerError::Action {
                target: self.uri.clone(),
                operation: "set the boot device".into(),
                detail: format!("the boot order reads back as {back:?}"),
            });
        }
        // libvirt has no one-time boot device: the order holds until changed.
        Ok(BootOverride {
            device,
            persistence: BootPersistence::Persistent,
            mode: None,
        })
    }

    async fn probe(&self) -> Result<ProbeReport, PowerError> {
        let state = self.query().await?;
        let info = self
            .run(&format!("dominfo {}", self.domain), "probe")
            .await?;
        let mut details = BTreeMap::new();
        for line in info.lines() {
            if let Some((k, v)) = line.split_once(':') {
                details.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
        details.insert(
            "boot_order".into(),
            boot_devices(&self.inactive_xml().await?).join(","),
        );
        Ok(ProbeReport { state, details })
    }

    async fn close(&self) -> Result<(), PowerError> {
        if let Some(mut s) = self.session.lock().await.take() {
            let _ = s.stdin.write_all(b"quit\n").await;
            let _ = s.child.start_kill();
            let _ = s.child.wait().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<domain type='test'>\n  <name>test</name>\n  <os>\n    <type arch='i686'>hvm</type>\n    <boot dev='hd'/>\n  </os>\n  <clock offset='utc'/>\n</domain>\n";

    #[test]
    fn boot_order_is_rewritten_inside_os_only() {
        let net = with_boot_order(XML, BootDevice::Network).unwrap();
        assert_eq!(boot_devices(&net), ["network", "hd"]);
        assert!(net.contains("<clock offset='utc'/>"));
        assert!(net.contains("<type arch='i686'>hvm</type>"));
        let disk = with_boot_order(&net, BootDevice::Disk).unwrap();
        assert_eq!(boot_devices(&disk), ["hd", "network"]);
        assert_eq!(disk.matches("<boot ").count(), 2);
    }

    #[test]
    fn no_os_section_is_none() {
        assert_eq!(
            with_boot_order("<domain><ostype/></domain>", BootDevice::Disk),
            None
        );
        assert!(boot_devices("<domain/>").is_empty());
    }

    #[test]
    fn states_map() {
        assert_eq!(parse_domstate("running"), PowerState::On);
        assert_eq!(parse_domstate("shut off\n"), PowerState::Off);
        assert_eq!(parse_domstate("crashed"), PowerState::Error);
        assert_eq!(parse_domstate("weird"), PowerState::Unknown);
    }
}
