//! The cloud-init documents: preseeds and user data for every ephemeral
//! purpose, vendor data, the deployed OS's user data. Each cloud-config is
//! snapshotted and checked by `cloud-init schema` and read back by PyYAML.

mod common;

use common::*;
use maas_core::machine::FirmwareKind;
use maas_curtin::{AptConfig, EphemeralPurpose, NodeContext, TemplateStore, deploy_user_data};

fn apt() -> AptConfig {
    AptConfig {
        proxy: Some("http://10.0.0.2:8000/".into()),
        primary_mirror: Some("http://archive.ubuntu.com/ubuntu".into()),
        security_mirror: None,
    }
}

#[test]
fn preseeds_and_user_data_for_every_purpose() {
    let m = machine(FirmwareKind::Uefi);
    let (endpoint, credentials, templates, apt) =
        (endpoint(), credentials(), TemplateStore::builtin(), apt());
    let ntp = vec!["10.0.0.2".to_owned(), "ntp.ubuntu.com".to_owned()];
    for purpose in EphemeralPurpose::ALL {
        let enlisting = purpose == EphemeralPurpose::Enlist;
        let ctx = NodeContext {
            machine: (!enlisting).then_some(&m),
            credentials: (!enlisting).then_some(&credentials),
            endpoint: &endpoint,
            templates: &templates,
            osystem: "ubuntu",
            release: "noble",
            apt: &apt,
            ntp_servers: &ntp,
            agent_command: "/usr/bin/maas-agent",
        };
        let preseed = ctx.preseed(purpose).unwrap();
        cloud_init_schema(&format!("{} preseed", purpose.as_str()), &preseed);
        check_pyyaml_reads_the_same("preseed", &preseed);
        let json = yaml_to_json(&preseed);
        assert_eq!(
            json["datasource"]["MAAS"].get("token_key").is_some(),
            !enlisting
        );
        assert_eq!(
            json.get("power_state").is_some(),
            purpose != EphemeralPurpose::Rescue
        );
        insta::assert_snapshot!(format!("preseed_{}", purpose.as_str()), preseed);
        if purpose == EphemeralPurpose::Deploy {
            assert!(
                ctx.user_data(purpose).is_err(),
                "a deployment's user data is curtin's"
            );
            continue;
        }
        let user_data = ctx.user_data(purpose).unwrap();
        cloud_init_schema(&format!("{} user data", purpose.as_str()), &user_data);
        check_pyyaml_reads_the_same("user data", &user_data);
        insta::assert_snapshot!(format!("user_data_{}", purpose.as_str()), user_data);
    }
}

#[test]
fn vendor_data_is_wrapped_as_maas_serves_it() {
    let m = machine(FirmwareKind::Uefi);
    let (endpoint, credentials, templates, apt) =
        (endpoint(), credentials(), TemplateStore::builtin(), apt());
    let ntp = vec!["10.0.0.2".to_owned()];
    let ctx = NodeContext {
        machine: Some(&m),
        credentials: Some(&credentials),
        endpoint: &endpoint,
        templates: &templates,
        osystem: "ubuntu",
        release: "noble",
        apt: &apt,
        ntp_servers: &ntp,
        agent_command: "/usr/bin/maas-agent",
    };
    let inner = ctx.vendor_cloud_config().unwrap();
    cloud_init_schema("vendor data", &inner);
    let wrapped = ctx.vendor_data().unwrap();
    check_pyyaml_reads_the_same("vendor data", &wrapped);
    assert_eq!(yaml_to_json(&wrapped)["cloud-init"], inner.as_str());
    insta::assert_snapshot!("vendor_data", wrapped);
}

#[test]
fn deploy_user_data_is_decoded_when_base64() {
    let plain = b"#cloud-config\npackages: [htop]\n";
    // As python-libmaas sends it, and wrapped at 76 columns with CRLF.
    let encoded = "I2Nsb3VkLWNvbmZpZwpwYWNrYWdlczogW2h0b3BdCg==";
    assert_eq!(deploy_user_data(encoded.as_bytes()), plain);
    let wrapped = format!("{}\r\n{}\r\n", &encoded[..20], &encoded[20..]);
    assert_eq!(deploy_user_data(wrapped.as_bytes()), plain);
    // Not base64: served as stored.
    assert_eq!(deploy_user_data(plain), plain);
    assert_eq!(
        deploy_user_data(b"#!/bin/sh\necho hi\n"),
        b"#!/bin/sh\necho hi\n"
    );
    let decoded = String::from_utf8(deploy_user_data(encoded.as_bytes())).unwrap();
    cloud_init_schema("decoded deploy user data", &decoded);
}

#[test]
fn credentials_never_show_in_debug() {
    let c = credentials();
    assert!(!format!("{c:?}").contains(&c.token_secret));
}
