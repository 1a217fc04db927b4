//! Storage benchmark: allocation with constraints among many machines, and
//! listing machines with their interfaces, on SQLite (a WAL file) and, when a
//! URL is given, PostgreSQL.
//!
//! ```text
//! cargo run --release -p maas-store --example store-bench -- \
//!     [--machines 100000] [--list 10000] [--iterations 30] [--postgres postgres://postgres@127.0.0.1/test]
//! ```
//!
//! Prints a Markdown table (the format of `docs/BENCHMARKS.md`).

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line report

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use maas_core::constraints::AllocationRequest;
use maas_core::lifecycle::{Actor, NodeStatus};
use maas_core::machine::{BlockDevice, Interface, Machine};
use maas_core::repo::{
    MachineFilter, MachineRepository, OrgRepository, RepositoryError, UserRepository,
};
use maas_core::{Architecture, Hostname, MacAddress, SystemId};
use maas_store::SqlStore;
use sea_orm::ConnectionTrait;

struct Args {
    machines: u32,
    list: u32,
    iterations: usize,
    postgres: Option<String>,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        machines: 100_000,
        list: 10_000,
        iterations: 30,
        postgres: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--machines" => a.machines = value()?.parse()?,
            "--list" => a.list = value()?.parse()?,
            "--iterations" => a.iterations = value()?.parse()?,
            "--postgres" => a.postgres = Some(value()?),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(a)
}

/// A deterministic pseudo-random fleet (xorshift; no dependency needed).
fn fleet(n: u32, offset: u32) -> Vec<Machine> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ u64::from(offset);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let k = i + offset;
            let sid = SystemId::parse(&format!("b{k:07}")).expect("valid id");
            let arch = if next() % 10 == 0 {
                "arm64/generic"
            } else {
                "amd64/generic"
            };
            let mut m = Machine::new(
                sid,
                Hostname::parse(&format!("n{k}")).expect("valid"),
                Architecture::parse(arch).expect("valid"),
                Utc::now(),
            );
            m.status = NodeStatus::Ready;
            m.hardware.cpu.count = [2, 4, 8, 16, 32, 64][(next() % 6) as usize];
            m.hardware.cpu.speed_mhz = 2000 + (next() % 1500) as u32;
            m.hardware.memory_mib =
                [4096, 8192, 16384, 32768, 65536, 131072, 262144][(next() % 7) as usize];
            m.zone = format!("zone-{}", next() % 4);
            if next() % 10 == 0 {
                m.tags.insert("gpu".into());
            }
            let b = k.to_be_bytes();
            for (j, name) in ["eth0", "eth1"].iter().enumerate() {
                let mut i =
                    Interface::physical(*name, MacAddress([0x52, 0x54, j as u8, b[1], b[2], b[3]]));
                i.link_speed_mbps = if next() % 3 == 0 { 25_000 } else { 10_000 };
                m.interfaces.push(i);
            }
            let mut root = BlockDevice::disk("sda", (200 + next() % 1800) * 1_000_000_000);
            if next() % 3 == 0 {
                root.tags.push("ssd".into());
            }
            m.block_devices.push(root);
            m.block_devices
                .push(BlockDevice::disk("sdb", 4_000_000_000_000));
            m
        })
        .collect()
}

async fn populate(s: &SqlStore, n: u32) -> Result<Duration, Box<dyn Error>> {
    for z in 0..4 {
        s.zone_create(&format!("zone-{z}"), "").await?;
    }
    s.tag_create("gpu", "", "", "").await?;
    s.user_create("bench", "", false, None).await?;
    let t = Instant::now();
    let batch = 5_000;
    let mut done = 0;
    while done < n {
        let size = batch.min(n - done);
        s.machine_import(&fleet(size, done)).await?;
        done += size;
    }
    Ok(t.elapsed())
}

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = v[v.len() / 2];
    let p95 = v[(v.len() * 95 / 100).min(v.len() - 1)];
    format!("{:.2} | {:.2} | {:.2}", ms(v[0]), ms(median), ms(p95))
}

async fn bench(name: &str, mut s: SqlStore, a: &Args) -> Result<(), Box<dyn Error>> {
    let queries = Arc::new(AtomicUsize::new(0));
    let q = queries.clone();
    s.set_statement_observer(move |_, _| {
        q.fetch_add(1, Ordering::Relaxed);
    });
    s.migrate().await?;
    let load = populate(&s, a.machines).await?;
    eprintln!(
        "{name}: imported {} machines in {:.1} s",
        a.machines,
        load.as_secs_f64()
    );
    let actor = Actor::user("bench", false);
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "cpu_count=8 mem=16384",
            &[("cpu_count", "8"), ("mem", "16384")],
        ),
        (
            "tags=gpu zone=zone-2 arch=amd64",
            &[("tags", "gpu"), ("zone", "zone-2"), ("arch", "amd64")],
        ),
        (
            "storage=root:1500(ssd) (checked outside SQL)",
            &[("storage", "root:1500(ssd)")],
        ),
        (
            "interfaces=a:link_speed=25000;b:link_speed=25000 (outside SQL)",
            &[("interfaces", "a:link_speed=25000;b:link_speed=25000")],
        ),
    ];
    for (label, params) in cases {
        let req = AllocationRequest::from_params(params.iter().copied())?;
        let mut times = Vec::new();
        let before = queries.load(Ordering::Relaxed);
        for _ in 0..a.iterations {
            let t = Instant::now();
            match s.machine_allocate(&req, &actor).await {
                Ok(_) => times.push(t.elapsed()),
                Err(RepositoryError::NoMatch(x)) => return Err(format!("{label}: {x}").into()),
                Err(e) => return Err(e.into()),
            }
        }
        let per = (queries.load(Ordering::Relaxed) - before) as f64 / a.iterations as f64;
        println!(
            "| {name} | allocate `{label}` among {} | {} | {per:.1} |",
            a.machines,
            summary(times)
        );
    }

    // Listing: a separate set of `list` machines in its own pool so the
    // filter returns exactly those.
    s.pool_create("listed", "").await?;
    let mut listed = fleet(a.list, 50_000_000);
    for m in &mut listed {
        m.pool = "listed".into();
    }
    for chunk in listed.chunks(5_000) {
        s.machine_import(chunk).await?;
    }
    let filter = MachineFilter {
        pool: Some("listed".into()),
        ..Default::default()
    };
    let mut times = Vec::new();
    let mut per = 0;
    for _ in 0..a.iterations.min(10) {
        let before = queries.load(Ordering::Relaxed);
        let t = Instant::now();
        let got = s.machine_list(&filter).await?;
        times.push(t.elapsed());
        per = queries.load(Ordering::Relaxed) - before;
        assert_eq!(got.len(), a.list as usize);
        assert_eq!(
            got.iter().map(|m| m.interfaces.len()).sum::<usize>(),
            2 * a.list as usize
        );
    }
    println!(
        "| {name} | list {} machines with interfaces and disks (of {}) | {} | {per} |",
        a.list,
        a.machines + a.list,
        summary(times)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let a = args()?;
    println!("| backend | operation | min ms | median ms | p95 ms | queries/op |");
    println!("|---|---|---|---|---|---|");
    let dir = std::env::temp_dir().join(format!("maas-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sqlite = SqlStore::open_sqlite_file(&dir.join("bench.sqlite")).await?;
    let res = bench("SQLite (WAL file)", sqlite, &a).await;
    std::fs::remove_dir_all(&dir)?;
    res?;
    if let Some(url) = &a.postgres {
        let schema = format!("bench_{}", std::process::id());
        let admin = SqlStore::open_postgres(url, None).await?;
        admin
            .connection()
            .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
            .await?;
        let pg = SqlStore::open_postgres(url, Some(&schema)).await?;
        let res = bench("PostgreSQL 15", pg, &a).await;
        admin
            .connection()
            .execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
            .await?;
        res?;
    }
    Ok(())
}
