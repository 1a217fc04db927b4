//! The rack while its region is away: it keeps answering DHCP and serving
//! boot configs and files from its cached configuration; when the region is
//! back it catches up; a rack started while the region is away serves the
//! configuration it cached on disk.
//!
//! "Away" is the rack's link to the region failing as an unreachable region
//! would (the region and the rack share this process; the rack protocol
//! over the network is not written yet).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use maas::demo::{Demo, Options};
use maas_core::MacAddress;
use maas_core::rack::{
    BootHost, LinkError, RackConfig, RackCredentials, RackReport, RegionLink, Registration,
};
use maas_region::LocalRegionLink;
use maas_sim::{FleetStats, Power};

/// The region's link, with a switch that makes it unreachable.
struct Gated {
    inner: LocalRegionLink,
    up: Arc<AtomicBool>,
}

impl Gated {
    async fn check(&self) -> Result<(), LinkError> {
        if self.up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            // As a connection attempt to a dead region would, after a while.
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(LinkError::Unavailable("connection refused".into()))
        }
    }
}

#[async_trait]
impl RegionLink for Gated {
    async fn register(&self, r: &Registration) -> Result<RackCredentials, LinkError> {
        self.check().await?;
        self.inner.register(r).await
    }
    async fn config(
        &self,
        rack: &RackCredentials,
        known: Option<u64>,
        wait: Duration,
    ) -> Result<RackConfig, LinkError> {
        self.check().await?;
        // A long poll in flight when the region goes away ends with an error.
        let up = self.up.clone();
        tokio::select! {
            r = self.inner.config(rack, known, wait) => {
                self.check().await?;
                r
            }
            _ = async move { while up.load(Ordering::SeqCst) { tokio::time::sleep(Duration::from_millis(20)).await } } => {
                Err(LinkError::Unavailable("connection reset".into()))
            }
        }
    }
    async fn boot_host(
        &self,
        rack: &RackCredentials,
        mac: MacAddress,
    ) -> Result<Option<BootHost>, LinkError> {
        self.check().await?;
        self.inner.boot_host(rack, mac).await
    }
    async fn report(&self, rack: &RackCredentials, r: Vec<RackReport>) -> Result<(), LinkError> {
        self.check().await?;
        self.inner.report(rack, r).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rack_serves_while_the_region_is_away_and_catches_up() {
    let up = Arc::new(AtomicBool::new(true));
    let gate = up.clone();
    let o = Options {
        machines: 2,
        progress: false,
        ..Options::default()
    };
    let demo = Demo::start_with(&o, move |inner| Arc::new(Gated { inner, up: gate }))
        .await
        .expect("demo starts");
    let report = demo.run(&o).await.expect("the cycle completes");
    let released = &report.released[0];
    let m = demo
        .api
        .get(&format!("machines/{released}/"))
        .await
        .expect("read");
    let node = m["hostname"].as_str().expect("hostname").to_owned();
    assert_eq!(demo.fleet.power(&node), Some(Power::Off));
    let spec = demo
        .fleet
        .specs()
        .iter()
        .find(|s| s.node_id == node)
        .expect("spec")
        .clone();
    // The rack has heard of the release before the region goes.
    tokio::time::timeout(
        Duration::from_secs(30),
        demo.all.rack.wait_for_config(|c| {
            c.host(spec.mac)
                .is_some_and(|h| h.status == maas_core::lifecycle::NodeStatus::Ready)
        }),
    )
    .await
    .expect("the rack sees the released machine Ready");
    let generation = demo.all.rack.config().expect("a configuration").generation;

    // The region goes away.
    up.store(false, Ordering::SeqCst);
    let stats = demo.all.rack.stats();
    for _ in 0..100 {
        if !stats.connected.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!stats.connected.load(Ordering::SeqCst), "the rack noticed");

    // A machine switched on by hand still gets an address and its boot
    // config (Ready: power off) from the rack, and powers itself off.
    let fleet = demo.fleet.stats();
    let leases = FleetStats::get(&fleet.leases);
    let configs = stats.boot_configs.load(Ordering::SeqCst);
    demo.fleet.power_on(&node);
    for _ in 0..200 {
        if FleetStats::get(&fleet.leases) > leases && demo.fleet.power(&node) == Some(Power::Off) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        FleetStats::get(&fleet.leases) > leases,
        "a lease while away"
    );
    assert!(stats.boot_configs.load(Ordering::SeqCst) > configs);
    assert_eq!(
        demo.fleet.power(&node),
        Some(Power::Off),
        "powered itself off: {:?}",
        demo.fleet.views()
    );
    assert_eq!(FleetStats::get(&fleet.errors), 0);

    // Meanwhile the region changes (a machine is added by hand).
    let mac = "52:54:00:aa:bb:cc";
    demo.api
        .post(
            "machines/",
            &[
                ("architecture", "amd64/generic"),
                ("mac_addresses", mac),
                ("hostname", "added-while-away"),
                ("power_type", "manual"),
                ("commission", "false"),
            ],
        )
        .await
        .expect("add a machine");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mac = MacAddress::parse(mac).expect("mac");
    let cfg = demo.all.rack.config().expect("still a configuration");
    assert_eq!(cfg.generation, generation, "nothing new while away");
    assert!(cfg.host(mac).is_none());

    // The region is back: the rack catches up.
    up.store(true, Ordering::SeqCst);
    tokio::time::timeout(
        Duration::from_secs(30),
        demo.all.rack.wait_for_config(|c| c.host(mac).is_some()),
    )
    .await
    .expect("the rack catches up");
    assert!(stats.connected.load(Ordering::SeqCst));

    // A rack started from the same state directory while the region is
    // away serves the configuration it cached.
    up.store(false, Ordering::SeqCst);
    let state = demo.dir.path().join("data/rack");
    let mut rs = maas_rack::RackSettings::new(
        "rack-restarted",
        "wrong-secret-does-not-matter-offline",
        maas::demo::RACK,
        state,
    );
    rs.http_listen = std::net::SocketAddr::from((maas::demo::RACK, 0));
    rs.tftp_listen = None;
    rs.dhcp_listen = None;
    rs.images = demo.dir.path().join("data/images");
    let down: Arc<AtomicBool> = Arc::new(AtomicBool::new(false));
    let link = Arc::new(Gated {
        inner: demo.all.region.rack_link(),
        up: down,
    });
    let rack = maas_rack::Rack::start(rs, link)
        .await
        .expect("starts offline");
    let cached = rack.config().expect("the cached configuration");
    assert!(
        cached.host(mac).is_some(),
        "the latest configuration was cached"
    );
    let hex: String = spec.mac.0.iter().map(|b| format!("{b:02x}")).collect();
    let script = reqwest::get(format!("http://{}/ipxe/mac-{hex}.ipxe", rack.http_addr()))
        .await
        .expect("GET")
        .text()
        .await
        .expect("text");
    assert!(
        script.contains("poweroff"),
        "a Ready machine powers off:\n{script}"
    );
    let kernel = reqwest::get(format!(
        "http://{}/images/ubuntu/amd64/generic/noble/stable/boot-kernel",
        rack.http_addr()
    ))
    .await
    .expect("GET kernel");
    assert_eq!(kernel.status(), 200);
    assert_eq!(kernel.bytes().await.expect("bytes").len(), 1 << 20);
}
