//! Template lookup in MAAS's preseed order, user overrides, and errors
//! that name the file and line.

mod common;

use common::*;
use maas_core::machine::FirmwareKind;
use maas_curtin::{
    CurtinError, DeployContext, DeployRequest, EphemeralPurpose, ImageFileType, ImageSource,
    NetworkInputs, NodeContext, TemplateStore, candidate_names, render_source,
};

#[test]
fn lookup_order_is_the_preseed_order() {
    let m = machine(FirmwareKind::Uefi);
    assert_eq!(
        candidate_names("curtin_userdata", "ubuntu", "noble", Some(&m)).unwrap(),
        [
            "curtin_userdata_ubuntu_amd64_generic_noble_node-1",
            "curtin_userdata_ubuntu_amd64_generic_noble",
            "curtin_userdata_ubuntu_amd64_generic",
            "curtin_userdata_ubuntu_amd64",
            "curtin_userdata_ubuntu",
            "curtin_userdata",
            "generic",
        ]
    );
    // An empty prefix drops its underscore.
    assert_eq!(
        candidate_names("", "ubuntu", "noble", Some(&m)).unwrap()[..2],
        [
            "ubuntu_amd64_generic_noble_node-1",
            "ubuntu_amd64_generic_noble"
        ]
    );
    // Enlistment has no machine.
    assert_eq!(
        candidate_names("enlist", "ubuntu", "noble", None).unwrap(),
        ["enlist_ubuntu", "enlist", "generic"]
    );
    assert_eq!(
        candidate_names("enlist", "", "", None).unwrap(),
        ["enlist", "generic"]
    );
    // Parts that would leave the directory are refused.
    assert!(candidate_names("curtin", "../x", "noble", Some(&m)).is_err());
}

fn deploy_ctx_render(templates: &TemplateStore) -> Result<maas_curtin::CurtinConfig, CurtinError> {
    let mut m = machine(FirmwareKind::Uefi);
    with_network(&mut m, Shape::Dhcp);
    let inputs: NetworkInputs = inputs();
    let (endpoint, credentials) = (endpoint(), credentials());
    let ctx = DeployContext {
        machine: &m,
        network: &inputs,
        endpoint: &endpoint,
        credentials: &credentials,
        templates,
    };
    let image = ImageSource {
        url: "http://10.0.0.2:5248/i/squashfs".into(),
        file_type: ImageFileType::Squashfs,
    };
    maas_curtin::render_curtin_config(&ctx, &DeployRequest::new("noble", image))
}

#[test]
fn a_user_file_overrides_the_builtin_and_the_most_specific_wins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("curtin_userdata_ubuntu"),
        "late_commands:\n  site: [touch, /etc/site-ubuntu]\n",
    )
    .unwrap();
    let store = TemplateStore::with_user_dir(dir.path());
    let c = deploy_ctx_render(&store).unwrap();
    assert!(
        c.template.ends_with("curtin_userdata_ubuntu"),
        "{}",
        c.template
    );
    let json = yaml_to_json(&c.yaml);
    assert_eq!(json["late_commands"]["site"][1], "/etc/site-ubuntu");
    assert!(
        json["late_commands"].get("maas").is_none(),
        "the built-in was replaced"
    );
    // A more specific name wins over it.
    std::fs::write(
        dir.path()
            .join("curtin_userdata_ubuntu_amd64_generic_noble_node-1"),
        "late_commands:\n  node: [echo, {{ node.hostname|tojson }}, {{ node.system_id|tojson }}]\n",
    )
    .unwrap();
    let c = deploy_ctx_render(&store).unwrap();
    assert!(c.template.ends_with("node-1"), "{}", c.template);
    assert_eq!(yaml_to_json(&c.yaml)["late_commands"]["node"][2], "abc123");
    // Without user files, the built-in.
    let c = deploy_ctx_render(&TemplateStore::builtin()).unwrap();
    assert_eq!(c.template, "builtin:curtin_userdata");
}

#[test]
fn a_broken_template_names_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curtin_userdata");
    std::fs::write(&path, "late_commands:\n  a: [echo]\n  b: {{ broken(\n").unwrap();
    let err = deploy_ctx_render(&TemplateStore::with_user_dir(dir.path())).unwrap_err();
    match &err {
        CurtinError::Template { file, line, .. } => {
            assert_eq!(file, &path.display().to_string());
            assert_eq!(*line, Some(3));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string()
            .contains(&format!("{} line 3: ", path.display())),
        "{err}"
    );

    // A misspelt variable is an error too, not an empty string.
    std::fs::write(&path, "late_commands:\n\n  a: [echo, {{ nod.hostname }}]\n").unwrap();
    let err = deploy_ctx_render(&TemplateStore::with_user_dir(dir.path())).unwrap_err();
    assert!(
        matches!(err, CurtinError::Template { line: Some(3), .. }),
        "{err:?}"
    );

    // Output that is not a YAML mapping.
    std::fs::write(&path, "- just\n- a list\n").unwrap();
    let err = deploy_ctx_render(&TemplateStore::with_user_dir(dir.path())).unwrap_err();
    assert!(matches!(err, CurtinError::TemplateOutput { .. }), "{err:?}");

    let err = render_source("builtin:x", "{% if %}", ()).unwrap_err();
    assert!(
        err.to_string().starts_with("template builtin:x line 1: "),
        "{err}"
    );
}

#[test]
fn a_user_preseed_template_must_stay_a_cloud_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("commissioning"),
        "{{ preseed_data }}\nruncmd:\n  - [echo, site]\n",
    )
    .unwrap();
    let store = TemplateStore::with_user_dir(dir.path());
    let m = machine(FirmwareKind::Bios);
    let (endpoint, credentials, apt) = (endpoint(), credentials(), Default::default());
    let ctx = NodeContext {
        machine: Some(&m),
        credentials: Some(&credentials),
        endpoint: &endpoint,
        templates: &store,
        osystem: "ubuntu",
        release: "noble",
        apt: &apt,
        ntp_servers: &[],
        agent_command: "/usr/bin/maas-agent",
    };
    let out = ctx.preseed(EphemeralPurpose::Test).unwrap();
    assert!(out.contains("- [echo, site]"));
    cloud_init_schema("user commissioning preseed", &out);
    std::fs::write(dir.path().join("commissioning"), "runcmd: [x]\n").unwrap();
    let err = ctx.preseed(EphemeralPurpose::Test).unwrap_err();
    assert!(
        err.to_string().contains("must start with #cloud-config"),
        "{err}"
    );
}
