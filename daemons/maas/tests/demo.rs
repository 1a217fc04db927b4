//! The demo flow with 20 machines, as `maas demo --machines 20` runs it:
//! every machine enlists over the network, is commissioned, allocated and
//! deployed through the REST API and the rack; half are released. Checks
//! every machine's final status, power, and event history.

use std::time::Duration;

use maas::demo::{Demo, Options};
use maas_sim::Power;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_machines_enlist_commission_deploy_and_half_release() {
    let o = Options {
        machines: 20,
        progress: false,
        phase_timeout: Duration::from_secs(300),
        ..Options::default()
    };
    let demo = Demo::start(&o).await.expect("demo starts");
    let report = demo.run(&o).await.expect("the demo cycle completes");

    // Every machine: released ones Ready and off, the others Deployed and on.
    assert_eq!(report.final_status.len(), 20);
    assert_eq!(report.released.len(), 10);
    let by_host: std::collections::BTreeMap<String, Value> =
        match demo.api.get("machines/").await.expect("list") {
            Value::Array(v) => v
                .into_iter()
                .map(|m| (m["system_id"].as_str().unwrap_or("").to_owned(), m))
                .collect(),
            other => panic!("machines/: {other}"),
        };
    for (id, status) in &report.final_status {
        let released = report.released.contains(id);
        assert_eq!(status, if released { "Ready" } else { "Deployed" }, "{id}");
        let m = &by_host[id];
        let node = m["power_parameters"]["node_id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| m["hostname"].as_str().map(str::to_owned))
            .expect("a hostname");
        let want = if released { Power::Off } else { Power::On };
        assert_eq!(demo.fleet.power(&node), Some(want), "{id} ({node})");
        // Commissioning applied the simulated inventory.
        assert_eq!(m["cpu_count"], 4, "{id}");
        assert_eq!(m["memory"], 8192, "{id}");
    }

    // Event histories: exactly the transitions of the cycle, in order,
    // none lost or doubled; each network boot of a known machine is there.
    for id in report.final_status.keys() {
        let ev = demo
            .api
            .get(&format!("events/?op=query&id={id}&limit=1000"))
            .await
            .expect("events");
        let mut events: Vec<&Value> = ev["events"].as_array().expect("events").iter().collect();
        events.reverse();
        let transitions: Vec<String> = events
            .iter()
            .filter(|e| e["type"] == "Status change")
            .filter_map(|e| e["description"].as_str())
            .map(|d| d.split(':').next().unwrap_or(d).trim().to_owned())
            .collect();
        let mut want = vec![
            "New -> Commissioning",
            "Commissioning -> Ready",
            "Ready -> Allocated",
            "Allocated -> Deploying",
            "Deploying -> Deployed",
        ];
        if report.released.contains(id) {
            want.extend(["Deployed -> Releasing", "Releasing -> Ready"]);
        }
        assert_eq!(transitions, want, "{id}: {events:#?}");
        let pxe: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "PXE Request")
            .filter_map(|e| e["description"].as_str())
            .collect();
        // The commissioning boot, the install boot and the reboot into the
        // installed system, in that order.
        let purposes: Vec<&str> = pxe
            .iter()
            .filter_map(|d| d.strip_prefix("PXE Request - "))
            .filter_map(|d| d.split(" (").next())
            .collect();
        assert_eq!(
            purposes,
            ["commissioning", "installation", "local boot"],
            "{id}: {pxe:?}"
        );
    }

    // The protocols really carried the fleet.
    let get = |name: &str| {
        report
            .fleet
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    assert_eq!(get("enlisted"), 20);
    assert_eq!(get("commissioned"), 20);
    assert_eq!(get("installed"), 20);
    assert_eq!(get("errors"), 0);
    // Enlist, commission, install and the local boot: four leases each.
    assert!(get("dhcp_leases") >= 80, "{:?}", report.fleet);
    // Half the machines boot PXELINUX over TFTP (loader and config).
    assert!(get("tftp_files") >= 10 * 4 * 2, "{:?}", report.fleet);
    // Kernel, initrd and squashfs three times, the image once, each.
    let per_machine = 3 * ((1 << 20) + (4 << 20) + (8 << 20)) + (8 << 20);
    assert!(
        get("bytes") >= 20 * per_machine as u64,
        "{:?}",
        report.fleet
    );
    assert_eq!(report.power.1, 0, "no power action failed");

    // Prometheus metrics of the all-in-one program agree with the fleet.
    let text = reqwest::get(format!("http://{}/metrics", demo.all.api_addr))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    let metric = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    assert_eq!(metric("maas_machines{status=\"Deployed\"}"), 10);
    assert_eq!(metric("maas_machines{status=\"Ready\"}"), 10);
    assert_eq!(metric("maas_dhcp_ack"), get("dhcp_leases"));
    assert!(metric("maas_tftp_completed") >= get("tftp_files"));
    assert_eq!(metric("maas_power_actions"), report.power.0);
    assert_eq!(metric("maas_rack_boot_config_errors"), 0);
    assert!(metric("maas_http_requests") > 0);

    // The rack is listed, in touch.
    let racks = demo.api.get("rackcontrollers/").await.expect("racks");
    let racks = racks.as_array().expect("a list");
    assert_eq!(racks.len(), 1, "{racks:?}");
    assert_eq!(racks[0]["node_type"], 2);
    assert_eq!(racks[0]["service_set"][0]["name"], "rackd");
    assert_eq!(racks[0]["service_set"][0]["status"], "running");
    let id = racks[0]["system_id"].as_str().expect("system_id");
    let one = demo
        .api
        .get(&format!("rackcontrollers/{id}/"))
        .await
        .expect("one rack");
    assert_eq!(one["hostname"], racks[0]["hostname"]);
    // A machine is not a rack controller.
    let machine = report.final_status.keys().next().expect("a machine");
    let err = demo
        .api
        .get(&format!("rackcontrollers/{machine}/"))
        .await
        .expect_err("a machine is no rack");
    assert!(err.to_string().contains("404"), "{err}");
}

/// The same cycle with the rack reaching the region over HTTP, as a
/// separate `maas-rackd` would: registration, the configuration long poll,
/// boot lookups, reports and power jobs all cross the region's HTTP port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cycle_works_with_the_rack_protocol_over_http() {
    let o = Options {
        machines: 6,
        progress: false,
        phase_timeout: Duration::from_secs(300),
        network_rack: true,
        ..Options::default()
    };
    let demo = Demo::start(&o).await.expect("demo starts");
    let report = demo.run(&o).await.expect("the demo cycle completes");
    let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in report.final_status.values() {
        *by.entry(s.as_str()).or_default() += 1;
    }
    assert_eq!(by, [("Deployed", 3), ("Ready", 3)].into_iter().collect());
    // Power went region -> HTTP -> rack -> Redfish: enlisting powers off by
    // itself; commission and deploy power on, release powers off.
    assert_eq!(report.power, (6 + 6 + 3, 0), "{report:?}");
    let racks = demo.api.get("rackcontrollers/").await.expect("racks");
    assert_eq!(racks[0]["service_set"][0]["status"], "running");
}
