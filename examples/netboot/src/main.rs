//! A network-boot TFTP server: boot loaders from a directory, boot configs
//! (`pxelinux.cfg/01-<mac>`, `grub/grub.cfg-<mac>`, `ipxe/...`) rendered by
//! maas-boot for each request. The kernel and initrd URLs point at the
//! address the request arrived on, so one server answers on every interface.
//!
//! ```text
//! netboot --root DIR --kernel PATH --initrd PATH [--listen 0.0.0.0:69]
//!         [--http-port 5248] [--purpose enlist] [--console ttyS0,115200]
//!         [--system-id ID] [--hostname NAME] [--extra "opt1 opt2"]
//! ```
//!
//! `--kernel` and `--initrd` are paths on the rack's HTTP server (port
//! `--http-port` of the same address). Every transfer is logged at info level
//! (`served` or `rendered`), which the network-boot test reads.

#![allow(clippy::print_stderr)] // usage errors

use std::net::SocketAddr;
use std::process::ExitCode;

use async_trait::async_trait;
use maas_boot::{
    BootConfigRequest, BootParams, BootPurpose, HttpUrl, ImagePaths, KernelParam, RackPath,
};
use maas_core::{Architecture, Hostname, SystemId};
use maas_tftp::{
    DirectoryProvider, FileProvider, FileRequest, FileSource, ProviderError, TftpConfig, TftpServer,
};
use tracing::info;

struct RackBootFiles {
    files: DirectoryProvider,
    purpose: BootPurpose,
    http_port: u16,
    template: BootParams,
}

#[async_trait]
impl FileProvider for RackBootFiles {
    async fn open(&self, r: &FileRequest<'_>) -> Result<FileSource, ProviderError> {
        let Some(req) = BootConfigRequest::parse(r.path) else {
            let f = self.files.open(r).await;
            info!(peer = %r.peer, path = r.path, ok = f.is_ok(), "served");
            return f;
        };
        let mut p = self.template.clone();
        p.mac = req.mac;
        let base = format!("http://{}/", SocketAddr::new(r.local.ip(), self.http_port));
        let refuse = |why: String| ProviderError::Failed {
            path: r.path.to_owned(),
            reason: why,
        };
        p.rack_url = HttpUrl::parse(&base).map_err(|e| refuse(e.to_string()))?;
        p.metadata_url = p
            .rack_url
            .with_path("/MAAS/metadata/")
            .map_err(|e| refuse(e.to_string()))?;
        let text = req
            .kind
            .render(self.purpose, &p)
            .map_err(|e| refuse(e.to_string()))?;
        info!(peer = %r.peer, path = r.path, kind = req.kind.as_str(), purpose = self.purpose.as_str(), "rendered");
        Ok(FileSource::from_bytes(text))
    }
}

fn usage(e: &str) -> ExitCode {
    eprintln!(
        "netboot: {e}\nusage: netboot --root DIR --kernel PATH --initrd PATH [--listen ADDR:PORT] [--http-port N] [--purpose P] [--console C] [--system-id ID] [--hostname NAME] [--extra OPTS]"
    );
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut listen: SocketAddr = "0.0.0.0:69".parse().expect("valid");
    let (mut root, mut kernel, mut initrd) = (None, None, None);
    let mut http_port = maas_boot::RACK_HTTP_PORT;
    let mut purpose = BootPurpose::Enlist;
    let (mut console, mut system_id, mut hostname, mut extra) = (None, None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(v) = it.next() else {
            return usage(&format!("{flag} needs a value"));
        };
        match flag.as_str() {
            "--listen" => match v.parse() {
                Ok(a) => listen = a,
                Err(e) => return usage(&format!("--listen {v}: {e}")),
            },
            "--root" => root = Some(v),
            "--kernel" => kernel = Some(v),
            "--initrd" => initrd = Some(v),
            "--http-port" => match v.parse() {
                Ok(p) => http_port = p,
                Err(e) => return usage(&format!("--http-port {v}: {e}")),
            },
            "--purpose" => match BootPurpose::ALL.into_iter().find(|p| p.as_str() == v) {
                Some(p) => purpose = p,
                None => return usage(&format!("--purpose {v}: unknown purpose")),
            },
            "--console" => console = Some(v),
            "--system-id" => system_id = Some(v),
            "--hostname" => hostname = Some(v),
            "--extra" => extra = Some(v),
            other => return usage(&format!("unknown flag {other}")),
        }
    }
    let (Some(root), Some(kernel), Some(initrd)) = (root, kernel, initrd) else {
        return usage("--root, --kernel and --initrd are required");
    };
    let images = match (RackPath::parse(&kernel), RackPath::parse(&initrd)) {
        (Ok(kernel), Ok(initrd)) => ImagePaths {
            kernel,
            initrd,
            squashfs: None,
        },
        (Err(e), _) | (_, Err(e)) => return usage(&e.to_string()),
    };
    let placeholder = HttpUrl::parse("http://127.0.0.1/").expect("valid");
    let mut template = BootParams::new(placeholder, Architecture::amd64(), images);
    let built: Result<(), String> = (|| {
        if let Some(c) = &console {
            template.console = Some(KernelParam::new(c).map_err(|e| e.to_string())?);
        }
        if let Some(s) = &system_id {
            template.system_id = Some(SystemId::parse(s).map_err(|e| e.to_string())?);
        }
        if let Some(h) = &hostname {
            template.hostname = Some(Hostname::parse(h).map_err(|e| e.to_string())?);
        }
        if let Some(x) = &extra {
            template.extra_options = KernelParam::split_options(x).map_err(|e| e.to_string())?;
        }
        Ok(())
    })();
    if let Err(e) = built {
        return usage(&e);
    }
    let files = match DirectoryProvider::new(&root) {
        Ok(f) => f,
        Err(e) => return usage(&format!("--root {root}: {e}")),
    };
    let provider = RackBootFiles {
        files,
        purpose,
        http_port,
        template,
    };
    let server = match TftpServer::bind(listen, provider, TftpConfig::default()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("netboot: cannot bind {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    info!(%listen, %root, purpose = purpose.as_str(), "serving");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match server.serve_until(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netboot: {e}");
            ExitCode::FAILURE
        }
    }
}
