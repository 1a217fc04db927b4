//! A machine's life through the storage layer, on the embedded default.
//!
//! ```text
//! cargo run -p lifecycle -- [DATABASE_FILE]     (default: ./maas-lifecycle.sqlite)
//! ```
//!
//! Creates (or reopens) a SQLite database, enlists three machines with their
//! hardware, commissions them, allocates one by constraints, deploys it,
//! releases it, and prints each status change from the audit log. This is
//! the region's bookkeeping only: no DHCP, TFTP, BMC or agent takes part yet
//! (those are the maas-dhcp, maas-tftp, maas-power and maas-agent issues).

#![allow(clippy::print_stdout)] // the output is the point

use std::error::Error;

use chrono::Utc;
use maas_core::constraints::AllocationRequest;
use maas_core::lifecycle::{Action, ActionOptions, Actor, NodeStatus};
use maas_core::machine::{BlockDevice, Interface, Machine};
use maas_core::repo::{
    EventFilter, EventRepository, MachineRepository, OrgRepository, RepositoryError, UserRepository,
};
use maas_core::{Architecture, Hostname, MacAddress, SystemId};
use maas_store::SqlStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "maas-lifecycle.sqlite".into());
    let store = SqlStore::open_sqlite_file(std::path::Path::new(&path)).await?;
    store.migrate().await?;
    println!("database: {path} (migrated)");

    let admin = Actor::user("admin", true);
    let alice = Actor::user("alice", false);
    for (name, is_admin) in [("admin", true), ("alice", false)] {
        match store.user_create(name, "", is_admin, None).await {
            Ok(_) | Err(RepositoryError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !store.tag_list().await?.iter().any(|t| t.name == "gpu") {
        store
            .tag_create("gpu", "machines with a GPU", "", "")
            .await?;
    }

    // Enlist: what a PXE-booted machine's agent reports.
    let run = Utc::now().timestamp() as u32 & 0xffff;
    let mut ids = Vec::new();
    for (n, (cpus, mem, gpu)) in [(4, 8192, false), (16, 65536, true), (32, 131072, true)]
        .into_iter()
        .enumerate()
    {
        let id = SystemId::random();
        let mut m = Machine::new(
            id.clone(),
            Hostname::parse(&format!("node-{run:04x}-{n}"))?,
            Architecture::amd64(),
            Utc::now(),
        );
        m.hardware.cpu.count = cpus;
        m.hardware.memory_mib = mem;
        let b = run.to_be_bytes();
        m.interfaces.push(Interface::physical(
            "eth0",
            MacAddress([0x52, 0x54, 0x00, b[2], b[3], n as u8]),
        ));
        m.block_devices
            .push(BlockDevice::disk("sda", 500_000_000_000));
        m.power_type = "manual".into();
        store.machine_create(&m, &admin).await?;
        if gpu {
            store
                .tag_update_machines("gpu", std::slice::from_ref(&id), &[])
                .await?;
        }
        println!(
            "enlisted {} ({cpus} CPUs, {mem} MiB{})",
            m.fqdn(),
            if gpu { ", gpu" } else { "" }
        );
        ids.push(id);
    }

    // Commission: the agent's inventory arrives, the machine becomes Ready.
    for id in &ids {
        store
            .machine_perform(id, Action::Commission, &admin, &ActionOptions::default())
            .await?;
        store
            .machine_set_status(id, NodeStatus::Ready, "commissioning scripts passed")
            .await?;
    }

    // Allocate by constraints: the cheapest machine with a GPU and 8+ CPUs.
    let req = AllocationRequest::from_params([("tags", "gpu"), ("cpu_count", "8")])?;
    let got = store.machine_allocate(&req, &alice).await?.machine;
    println!(
        "allocated {} to alice (cheapest match for tags=gpu cpu_count=8)",
        got.fqdn()
    );

    // An impossible request is explained, not just refused.
    let impossible = AllocationRequest::from_params([("tags", "gpu"), ("mem", "1000000")])?;
    if let Err(RepositoryError::NoMatch(why)) = store.machine_allocate(&impossible, &alice).await {
        println!("refused: {why}");
    }

    // Deploy, the deployed OS reports in, release.
    store
        .machine_perform(
            &got.system_id,
            Action::Deploy,
            &alice,
            &ActionOptions::default(),
        )
        .await?;
    store
        .machine_set_status(&got.system_id, NodeStatus::Deployed, "first boot reported")
        .await?;
    store
        .machine_perform(
            &got.system_id,
            Action::Release,
            &alice,
            &ActionOptions::default(),
        )
        .await?;
    let released = store
        .machine_set_status(&got.system_id, NodeStatus::Ready, "powered off")
        .await?;
    println!(
        "released {}: {} (owner {:?})",
        released.fqdn(),
        released.status,
        released.owner
    );

    println!("\naudit log of {}:", got.system_id);
    let mut events = store
        .event_list(&EventFilter {
            system_id: Some(got.system_id.clone()),
            ..Default::default()
        })
        .await?;
    events.reverse();
    for e in events {
        println!(
            "  {} {:<14} {}",
            e.created.format("%H:%M:%S%.3f"),
            e.event.kind,
            e.event.message
        );
    }
    Ok(())
}
