//! The region process killed in the middle of deployments and started
//! again: the deployments resume (the machines' requests through the rack
//! fail while it is gone and are retried, as cloud-init and curtin retry),
//! every machine ends Deployed, and each status change is recorded once.
//!
//! The region is a real process (`maas region`, SQLite in a data
//! directory), killed with SIGKILL; the rack (over the HTTP rack protocol)
//! and the simulated fleet run in this test.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use maas::allinone::{admin_key, open_store};
use maas::client::ApiClient;
use maas::demo::{Options, RACK, RELAY, images, setup_network, standin};
use maas_power::{Executor, ExecutorConfig, builtin_registry};
use maas_rack::{HttpRegionLink, Rack, RackPower, RackSettings};
use maas_sim::{Fleet, FleetSettings, RackTargets};
use serde_json::Value;

struct Region(Child);

impl Drop for Region {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_region(data: &std::path::Path, api: SocketAddr) -> Region {
    let child = Command::new(env!("CARGO_BIN_EXE_maas"))
        .args(["region", "--data-dir"])
        .arg(data)
        .args(["--api-listen", &api.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the region");
    Region(child)
}

async fn wait_up(api: &ApiClient) {
    for _ in 0..200 {
        if api.get("version/").await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the region did not come up");
}

async fn statuses(api: &ApiClient) -> Vec<(String, String)> {
    match api.get("machines/").await {
        Ok(Value::Array(v)) => v
            .iter()
            .map(|m| {
                (
                    m["system_id"].as_str().unwrap_or("").to_owned(),
                    m["status_name"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

async fn wait_all(
    api: &ApiClient,
    n: usize,
    status: &str,
    secs: u64,
    fleet: &Fleet,
) -> Vec<String> {
    for _ in 0..secs * 10 {
        let s = statuses(api).await;
        if s.len() == n && s.iter().all(|(_, st)| st == status) {
            return s.into_iter().map(|(id, _)| id).collect();
        }
        if let Some((id, st)) = s.iter().find(|(_, st)| st.starts_with("Failed")) {
            panic!("{id} is {st}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "not all {n} {status}: {:?}\nfleet: {:?}",
        statuses(api).await,
        fleet.views()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_resume_after_the_region_process_is_killed() {
    const N: usize = 8;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("region");
    let store = open_store(&data).await.expect("store");
    let key = admin_key(&store, "admin", "pw").await.expect("key");
    let secret = maas_region::Region::new(Arc::new(store), maas_region::RegionConfig::default())
        .await
        .expect("region")
        .shared_secret()
        .await
        .expect("secret");
    let api_addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr")
    };
    let mut region = start_region(&data, api_addr);
    let url = format!("http://{api_addr}/MAAS");
    let api = ApiClient::new(&url, &key).expect("client");
    wait_up(&api).await;

    // The rack, over HTTP, with the images and a stand-in loader.
    let rack_dir = dir.path().join("rack");
    images(dir.path(), &rack_dir.join("images"), &Options::default())
        .await
        .expect("images");
    let loaders = dir.path().join("loaders");
    std::fs::create_dir_all(&loaders).expect("loaders");
    standin(&loaders.join("lpxelinux.0"), 64 << 10, 4).expect("loader");
    let mut fleet = Fleet::bind(FleetSettings {
        machines: N,
        relay_ip: RELAY,
        // Long enough to kill the region while they install.
        install_time: Duration::from_secs(3),
        ..FleetSettings::default()
    })
    .await
    .expect("fleet");
    let mut rs = RackSettings::new("rack-1", &secret, RACK, rack_dir.clone());
    rs.http_listen = SocketAddr::from((RACK, 0));
    rs.tftp_listen = Some(SocketAddr::from((RACK, 0)));
    rs.dhcp_listen = Some(SocketAddr::from((RACK, 0)));
    rs.dhcp_relay_port = fleet.relay_port();
    rs.region_url = format!("http://{api_addr}");
    rs.boot_loaders = Some(loaders);
    let link = HttpRegionLink::new(&rs.region_url);
    let rack = Arc::new(Rack::start(rs, Arc::new(link.clone())).await.expect("rack"));
    let power = Arc::new(RackPower::new(
        builtin_registry(),
        Executor::new(ExecutorConfig {
            verify_interval: Duration::from_millis(100),
            ..ExecutorConfig::default()
        }),
    ));
    let _jobs = tokio::spawn(maas_rack::serve_power(link, rack.clone(), power));
    let rack_id = tokio::time::timeout(Duration::from_secs(30), rack.registered())
        .await
        .expect("registered")
        .expect("a system id");
    setup_network(&api, rack_id.as_str())
        .await
        .expect("network");
    tokio::time::timeout(
        Duration::from_secs(30),
        rack.wait_for_config(|c| !c.subnets.is_empty()),
    )
    .await
    .expect("the rack serves the subnet");
    fleet
        .start(RackTargets {
            dhcp: rack.dhcp_addr().expect("dhcp"),
            tftp_port: rack.tftp_addr().expect("tftp").port(),
        })
        .await
        .expect("fleet starts");

    // Enlist and commission.
    for s in fleet.specs() {
        fleet.power_on(&s.node_id);
    }
    let ids = wait_all(&api, N, "New", 120, &fleet).await;
    for id in &ids {
        api.post(&format!("machines/{id}/?op=commission"), &[])
            .await
            .expect("commission");
    }
    wait_all(&api, N, "Ready", 120, &fleet).await;

    // Deploy them all, and kill the region while they install.
    for id in &ids {
        api.post("machines/?op=allocate", &[("system_id", id)])
            .await
            .expect("allocate");
        api.post(&format!("machines/{id}/?op=deploy"), &[])
            .await
            .expect("deploy");
    }
    // Once every machine runs its installer (so each booted with its
    // current purpose: a machine network-booting while the region is away
    // gets the rack's cached purpose, which for a machine deployed a moment
    // ago is stale), kill the region mid-install.
    for _ in 0..600 {
        if fleet.views().iter().all(|v| {
            matches!(
                v.phase,
                "installing" | "rebooting" | "first-boot" | "deployed"
            )
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The rack's cached configuration has caught up with the deployments
    // (a machine rebooting while the region is away boots what the cache
    // says; a cache older than the deploy would power it off).
    tokio::time::timeout(
        Duration::from_secs(30),
        rack.wait_for_config(|c| {
            c.hosts.len() == N
                && c.hosts.iter().all(|h| {
                    matches!(
                        h.status,
                        maas_core::lifecycle::NodeStatus::Deploying
                            | maas_core::lifecycle::NodeStatus::Deployed
                    )
                })
        }),
    )
    .await
    .expect("the rack's cache shows the deployments");
    let deployed_at_kill = fleet
        .views()
        .iter()
        .filter(|v| v.phase == "deployed")
        .count();
    region.0.kill().expect("SIGKILL the region");
    assert!(
        deployed_at_kill < N,
        "the kill came after every install: the test proves nothing"
    );
    region.0.wait().expect("reaped");
    let before = maas_sim::FleetStats::get(&fleet.stats().installed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Meanwhile the rack keeps serving what it has.
    assert!(
        !rack
            .stats()
            .connected
            .load(std::sync::atomic::Ordering::SeqCst)
    );
    region = start_region(&data, api_addr);
    wait_up(&api).await;
    wait_all(&api, N, "Deployed", 90, &fleet).await;
    assert!(
        maas_sim::FleetStats::get(&fleet.stats().installed) >= before,
        "installs went on"
    );

    // Each machine's history holds each status change once.
    for id in &ids {
        let ev = api
            .get(&format!("events/?op=query&id={id}&limit=1000"))
            .await
            .expect("events");
        let mut transitions: Vec<String> = ev["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["type"] == "Status change")
            .filter_map(|e| e["description"].as_str())
            .map(|d| d.split(':').next().unwrap_or(d).trim().to_owned())
            .collect();
        transitions.reverse();
        assert_eq!(
            transitions,
            [
                "New -> Commissioning",
                "Commissioning -> Ready",
                "Ready -> Allocated",
                "Allocated -> Deploying",
                "Deploying -> Deployed",
            ],
            "{id}"
        );
    }
    assert_eq!(maas_sim::FleetStats::get(&fleet.stats().errors), 0);
    drop(region);
}
