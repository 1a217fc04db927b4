//! An empty virtual machine PXE-boots through our TFTP server and a boot
//! config rendered by maas-boot, and its kernel runs our init.
//!
//! The lab (all inside a network namespace): a bridge with a tap for qemu;
//! dnsmasq answers DHCP only (its TFTP is off); this crate's `netboot`
//! binary serves the boot loaders (from `scripts/fetch-boot-loaders.sh`) and
//! renders the configs over TFTP; Python's `http.server` serves the kernel
//! (from `scripts/fetch-test-kernel.sh`) and an initramfs whose `/init`
//! prints a marker and powers off. qemu runs with TCG.
//!
//! Two firmware paths: SeaBIOS with the NIC's iPXE ROM loading lpxelinux.0
//! (pxelinux config), and OVMF's own PXE (no NIC ROM) loading shim and GRUB
//! (GRUB config). Slow tier: `MAAS_SLOW_TESTS=1`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn skip(why: &str) {
    let msg = format!(
        "SKIPPED {}: {why}",
        std::thread::current().name().unwrap_or("test")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}; under CI a skipped boot test is a failure");
    }
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

fn sh(args: &[&str]) -> Result<(), String> {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

fn home_cache(name: &str) -> PathBuf {
    Path::new(&std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
        .join(".cache")
        .join(name)
}

/// Everything the lab started; stopped (by PID) and removed on drop.
struct Lab {
    ns: String,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = sh(&["ip", "netns", "del", &self.ns]);
    }
}

impl Lab {
    fn spawn(&mut self, name: &str, args: &[&str]) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))
            .map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{name}: {e}"))?;
        self.children.push(child);
        Ok(())
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default()
    }
}

fn initramfs(dir: &Path) -> Result<PathBuf, String> {
    let root = dir.join("initramfs");
    std::fs::create_dir_all(root.join("bin")).map_err(|e| e.to_string())?;
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .map_err(|e| format!("busybox-static: {e}"))?;
    let init = root.join("init");
    std::fs::write(&init, "#!/bin/busybox sh\n/bin/busybox echo \"MAAS-NETBOOT-OK $(/bin/busybox uname -r)\"\n/bin/busybox poweroff -f\n").map_err(|e| e.to_string())?;
    sh(&["chmod", "755", init.to_str().unwrap_or_default()])?;
    let out = dir.join("http/initrd.gz");
    let cmd = format!(
        "cd {} && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -9 > {}",
        root.display(),
        out.display()
    );
    sh(&["sh", "-c", &cmd])?;
    Ok(out)
}

fn boot(tag: u8, uefi: bool) {
    if std::env::var("MAAS_SLOW_TESTS").as_deref() != Ok("1") {
        return skip("slow tier: set MAAS_SLOW_TESTS=1");
    }
    let loaders = home_cache("maas-boot-loaders");
    let kernel = home_cache("maas-test-kernel/vmlinuz");
    for need in [
        loaders.join("lpxelinux.0"),
        loaders.join("ldlinux.c32"),
        loaders.join("bootx64.efi"),
        loaders.join("grubx64.efi"),
    ] {
        if !need.exists() {
            return skip(&format!(
                "{} is missing: run scripts/fetch-boot-loaders.sh {}",
                need.display(),
                loaders.display()
            ));
        }
    }
    if !kernel.exists() {
        return skip("no test kernel: run scripts/fetch-test-kernel.sh");
    }
    for tool in [
        "/usr/bin/qemu-system-x86_64",
        "/usr/sbin/dnsmasq",
        "/bin/busybox",
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
    ] {
        if !Path::new(tool).exists() {
            return skip(&format!("{tool} is not installed"));
        }
    }
    let id = std::process::id() % 200;
    let ns = format!("netboot-{id}-{tag}");
    let _ = sh(&["ip", "netns", "del", &ns]);
    let mut lab = Lab {
        ns: ns.clone(),
        children: Vec::new(),
        dir: tempfile::tempdir().unwrap(),
    };
    let net = format!("10.{}.{}", 170 + tag, id);
    let server = format!("{net}.1");
    let setup = (|| -> Result<(), String> {
        sh(&["ip", "netns", "add", &ns])?;
        let ns_sh = |args: &[&str]| -> Result<(), String> {
            let mut v = vec!["ip", "netns", "exec", &ns];
            v.extend_from_slice(args);
            sh(&v)
        };
        ns_sh(&["ip", "link", "set", "lo", "up"])?;
        ns_sh(&["ip", "link", "add", "br0", "type", "bridge"])?;
        ns_sh(&["ip", "addr", "add", &format!("{server}/24"), "dev", "br0"])?;
        ns_sh(&["ip", "link", "set", "br0", "up"])?;
        ns_sh(&["ip", "tuntap", "add", "dev", "tap0", "mode", "tap"])?;
        ns_sh(&["ip", "link", "set", "tap0", "master", "br0"])?;
        ns_sh(&["ip", "link", "set", "tap0", "up"])?;
        Ok(())
    })();
    if let Err(e) = setup {
        return skip(&format!("cannot build the lab (needs root): {e}"));
    }
    let d = lab.dir.path().to_path_buf();
    let tftp_root = d.join("tftp");
    std::fs::create_dir_all(&tftp_root).unwrap();
    for f in ["lpxelinux.0", "ldlinux.c32", "bootx64.efi", "grubx64.efi"] {
        std::fs::copy(loaders.join(f), tftp_root.join(f)).unwrap();
    }
    std::fs::create_dir_all(d.join("http")).unwrap();
    std::fs::copy(&kernel, d.join("http/vmlinuz")).unwrap();
    let initrd = initramfs(&d).expect("initramfs built");
    // GRUB reads the kernel and initrd from the server it came from (TFTP)
    // when the rack's HTTP is not on port 80: serve them there too.
    std::fs::copy(&kernel, tftp_root.join("vmlinuz")).unwrap();
    std::fs::copy(&initrd, tftp_root.join("initrd.gz")).unwrap();

    let lease = d.join("leases").display().to_string();
    let log = d.join("dnsmasq-dhcp.log").display().to_string();
    lab.spawn(
        "dnsmasq",
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--port=0",
            "--user=root",
            "--interface=br0",
            "--bind-interfaces",
            &format!("--dhcp-range={net}.100,{net}.150,255.255.255.0,1h"),
            &format!("--dhcp-leasefile={lease}"),
            "--pid-file=",
            &format!("--log-facility={log}"),
            "--log-dhcp",
            "--dhcp-match=set:efi64,option:client-arch,7",
            &format!("--dhcp-boot=tag:efi64,bootx64.efi,,{server}"),
            &format!("--dhcp-boot=tag:!efi64,lpxelinux.0,,{server}"),
        ],
    )
    .unwrap();
    let http_root = d.join("http").display().to_string();
    lab.spawn(
        "http",
        &[
            "python3",
            "-m",
            "http.server",
            "5248",
            "--bind",
            &server,
            "--directory",
            &http_root,
        ],
    )
    .unwrap();
    lab.spawn(
        "netboot",
        &[
            env!("CARGO_BIN_EXE_netboot"),
            "--listen",
            "0.0.0.0:69",
            "--root",
            tftp_root.to_str().unwrap(),
            "--kernel",
            "vmlinuz",
            "--initrd",
            "initrd.gz",
            "--http-port",
            "5248",
            "--purpose",
            "enlist",
            "--console",
            "ttyS0,115200",
            "--extra",
            "panic=-1",
        ],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(700));

    let serial = d.join("serial.log");
    let mac = format!("52:54:00:77:{tag:02x}:10");
    let mut args: Vec<String> = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-m",
        "512",
        "-smp",
        "1",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend(["-serial".into(), format!("file:{}", serial.display())]);
    args.extend([
        "-netdev".into(),
        "tap,id=n0,ifname=tap0,script=no,downscript=no".into(),
    ]);
    if uefi {
        let vars = d.join("OVMF_VARS.fd");
        std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars).unwrap();
        args.extend(["-machine".into(), "q35".into()]);
        args.extend([
            "-drive".into(),
            "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
        ]);
        args.extend([
            "-drive".into(),
            format!("if=pflash,format=raw,file={}", vars.display()),
        ]);
        // No NIC option ROM: OVMF's own PXE client does DHCP and TFTP.
        args.extend([
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1"),
        ]);
    } else {
        args.extend(["-machine".into(), "pc".into(), "-boot".into(), "n".into()]);
        args.extend([
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac={mac},bootindex=1"),
        ]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn("qemu", &argv).unwrap();

    let start = Instant::now();
    let mut out = String::new();
    while start.elapsed() < Duration::from_secs(420) {
        out = std::fs::read_to_string(&serial).unwrap_or_default();
        if out.contains("MAAS-NETBOOT-OK") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let took = start.elapsed();
    let tftp = lab.log("netboot");
    let report = format!(
        "serial (last 3000 chars):\n{}\n--- netboot:\n{}\n--- dnsmasq:\n{}\n--- http:\n{}",
        &out[out.len().saturating_sub(3000)..],
        tftp,
        std::fs::read_to_string(d.join("dnsmasq-dhcp.log")).unwrap_or_default(),
        lab.log("http")
    );
    assert!(
        out.contains("Linux version"),
        "the kernel did not start\n{report}"
    );
    assert!(
        out.contains("MAAS-NETBOOT-OK"),
        "our init did not run\n{report}"
    );
    let (loader, config) = if uefi {
        ("bootx64.efi", "kind=\"grub\"")
    } else {
        ("lpxelinux.0", "kind=\"pxelinux\"")
    };
    assert!(
        tftp.contains(loader),
        "{loader} was not served by our TFTP\n{report}"
    );
    assert!(
        tftp.contains("rendered") && tftp.contains(config),
        "no {config} config was rendered\n{report}"
    );
    assert!(
        tftp.contains(&mac.replace(':', "-")) || tftp.contains(&mac),
        "the config asked for was not this machine's\n{report}"
    );
    let _ = writeln!(
        std::io::stderr().lock(),
        "{} booted in {:.1} s",
        if uefi {
            "UEFI (OVMF PXE)"
        } else {
            "BIOS (SeaBIOS + iPXE)"
        },
        took.as_secs_f64()
    );
}

#[test]
fn seabios_ipxe_boots_pxelinux_then_the_kernel_through_our_tftp() {
    boot(1, false);
}

#[test]
fn ovmf_pxe_boots_shim_grub_then_the_kernel_through_our_tftp() {
    boot(2, true);
}
