//! Serves the region over a store seeded with a fleet, for
//! `scripts/bench-region.sh` (wrk drives it).
//!
//! ```text
//! region-bench --database-url sqlite:/tmp/b.sqlite?mode=rwc --machines 10000 --listen 127.0.0.1:5250
//! ```
//!
//! Seeds `--machines` Ready machines (two NICs, two disks each) unless the
//! store has them, creates the admin user `bench` and prints one line,
//! `READY <api key>`, then serves until killed.

#![allow(clippy::print_stdout)]

use std::error::Error;
use std::sync::Arc;

use chrono::Utc;
use maas_core::lifecycle::NodeStatus;
use maas_core::machine::{BlockDevice, Interface, Machine};
use maas_core::repo::{MachineFilter, MachineRepository, UserRepository};
use maas_core::{Architecture, Hostname, MacAddress, SystemId};
use maas_region::{Region, RegionConfig};
use maas_store::SqlStore;

fn fleet(n: u32, offset: u32) -> Vec<Machine> {
    (0..n)
        .map(|i| {
            let k = i + offset;
            let mut m = Machine::new(
                SystemId::parse(&format!("r{k:07}")).expect("valid id"),
                Hostname::parse(&format!("n{k}")).expect("valid"),
                Architecture::amd64(),
                Utc::now(),
            );
            m.status = NodeStatus::Ready;
            m.hardware.cpu.count = [4, 8, 16, 32][(k % 4) as usize];
            m.hardware.memory_mib = [8192, 16384, 65536][(k % 3) as usize];
            m.power_type = "manual".into();
            let b = k.to_be_bytes();
            for (j, name) in ["eth0", "eth1"].iter().enumerate() {
                m.interfaces.push(Interface::physical(
                    *name,
                    MacAddress([0x52, 0x55, j as u8, b[1], b[2], b[3]]),
                ));
            }
            m.block_devices
                .push(BlockDevice::disk("sda", 500_000_000_000));
            m.block_devices
                .push(BlockDevice::disk("sdb", 4_000_000_000_000));
            m
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut url = None;
    let mut machines = 10_000u32;
    let mut listen = "127.0.0.1:5250".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--database-url" => url = Some(value()?),
            "--machines" => machines = value()?.parse()?,
            "--listen" => listen = value()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let store = SqlStore::open(url.as_deref().ok_or("--database-url is required")?).await?;
    store.migrate().await?;
    let have = store.machine_list(&MachineFilter::default()).await?.len() as u32;
    let mut done = have;
    while done < machines {
        let size = 2_000.min(machines - done);
        store.machine_import(&fleet(size, done)).await?;
        done += size;
    }
    let user = match store.user_get("bench").await {
        Ok(u) => u,
        Err(_) => store.user_create("bench", "", true, None).await?,
    };
    let token = store.token_create(user.id, "bench").await?;
    let region = Region::new(Arc::new(store), RegionConfig::default()).await?;
    let started = std::time::Instant::now();
    let rendered = region.warm_machine_cache().await?;
    println!(
        "# list cache warmed: {rendered} machines rendered in {} ms",
        started.elapsed().as_millis()
    );
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("READY {}", token.api_key());
    axum::serve(listener, maas_region::router(region)).await?;
    Ok(())
}
