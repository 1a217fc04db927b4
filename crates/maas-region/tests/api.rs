//! The region over a real socket (axum on 127.0.0.1, an in-memory SQLite
//! store), spoken to with raw HTTP/1.1: every denial with its status, the
//! error shapes clients rely on, and random bodies and headers that must
//! never produce a 500.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use maas_core::account::ApiToken;
use maas_core::lifecycle::{Action, ActionOptions, Actor, DeadlinePolicy, NodeStatus};
use maas_core::machine::{Interface, Machine};
use maas_core::repo::{MachineRepository, UserRepository};
use maas_core::{Architecture, Hostname, MacAddress, SystemId};
use maas_region::{Region, RegionConfig, hash_password};
use maas_store::SqlStore;

struct Lab {
    addr: SocketAddr,
    admin: ApiToken,
    bob: ApiToken,
    carol: ApiToken,
    store: Arc<SqlStore>,
    _rt: tokio::runtime::Runtime,
}

/// A region with users admin, bob and carol, and two machines: `ready`
/// (Ready) and `bobs` (allocated to bob).
fn lab() -> (Lab, SystemId, SystemId) {
    lab_with(Arc::new(maas_region::NoRack), DeadlinePolicy::default())
}

fn lab_with(
    rack: Arc<dyn maas_region::RackControl>,
    policy: DeadlinePolicy,
) -> (Lab, SystemId, SystemId) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (lab, ready, bobs) = rt.block_on(async {
        let store = Arc::new(
            SqlStore::open_sqlite_memory()
                .await
                .unwrap()
                .with_deadline_policy(policy),
        );
        store.migrate().await.unwrap();
        let mut tokens = Vec::new();
        for (name, admin) in [("admin", true), ("bob", false), ("carol", false)] {
            let u = store
                .user_create(name, "", admin, Some(&hash_password(&format!("{name}-pw"))))
                .await
                .unwrap();
            tokens.push(store.token_create(u.id, "test").await.unwrap());
        }
        let admin = Actor::user("admin", true);
        let mut ids = Vec::new();
        for n in 0..2u8 {
            let id = SystemId::random();
            let mut m = Machine::new(
                id.clone(),
                Hostname::parse(&format!("node-{n}")).unwrap(),
                Architecture::amd64(),
                chrono::Utc::now(),
            );
            m.interfaces
                .push(Interface::physical("eth0", MacAddress([2, 0, 0, 0, 0, n])));
            m.power_type = "manual".into();
            store.machine_create(&m, &admin).await.unwrap();
            store
                .machine_perform(&id, Action::Commission, &admin, &ActionOptions::default())
                .await
                .unwrap();
            store
                .machine_set_status(&id, NodeStatus::Ready, "commissioned")
                .await
                .unwrap();
            ids.push(id);
        }
        store
            .machine_perform(
                &ids[1],
                Action::Acquire,
                &Actor::user("bob", false),
                &ActionOptions::default(),
            )
            .await
            .unwrap();
        let region = Region::with_rack(store.clone(), RegionConfig::default(), rack)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, maas_region::router(region))
                .await
                .unwrap();
        });
        let carol = tokens.pop().unwrap();
        let bob = tokens.pop().unwrap();
        let admin = tokens.pop().unwrap();
        (
            (addr, admin, bob, carol, store),
            ids[0].clone(),
            ids[1].clone(),
        )
    });
    let (addr, admin, bob, carol, store) = lab;
    (
        Lab {
            addr,
            admin,
            bob,
            carol,
            store,
            _rt: rt,
        },
        ready,
        bobs,
    )
}

/// Makes a lab machine deployable, as commissioning would: a disk, known
/// firmware, and its eth0 linked (AUTO) to a subnet.
fn deployable(lab: &Lab, id: &SystemId) {
    use maas_core::repo::NetworkRepository;
    lab._rt.block_on(async {
        let cidr: ipnet::IpNet = "10.250.0.0/24".parse().unwrap();
        let subnet = match lab
            .store
            .subnet_list()
            .await
            .unwrap()
            .into_iter()
            .find(|s| s.cidr == cidr)
        {
            Some(s) => s,
            None => {
                let (_, vlan) = lab
                    .store
                    .fabric_create("fabric-deploy", None)
                    .await
                    .unwrap();
                lab.store
                    .subnet_create(&maas_core::network::Subnet {
                        id: maas_core::SubnetId(0),
                        name: String::new(),
                        cidr,
                        vlan: vlan.id,
                        gateway_ip: None,
                        dns_servers: Vec::new(),
                        managed: true,
                        allow_dns: true,
                        allow_proxy: true,
                        active_discovery: false,
                        description: String::new(),
                    })
                    .await
                    .unwrap()
            }
        };
        let mut m = lab.store.machine_get(id).await.unwrap();
        if m.block_devices.is_empty() {
            m.block_devices.push(maas_core::machine::BlockDevice::disk(
                "sda",
                100_000_000_000,
            ));
        }
        m.hardware.firmware.kind = maas_core::machine::FirmwareKind::Bios;
        m.interfaces[0].vlan = Some(subnet.vlan);
        m.interfaces[0].links = vec![maas_core::machine::InterfaceLink {
            id: None,
            mode: maas_core::machine::LinkMode::Auto,
            subnet: Some(subnet.id),
            ip: None,
        }];
        lab.store.machine_update(&m).await.unwrap();
    });
}

struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn oauth(t: &ApiToken) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NONCE: AtomicU64 = AtomicU64::new(0);
    format!(
        "OAuth realm=\"OAuth\", oauth_nonce=\"n{}\", oauth_timestamp=\"{}\", oauth_version=\"1.0\", oauth_signature_method=\"PLAINTEXT\", oauth_consumer_key=\"{}\", oauth_token=\"{}\", oauth_signature=\"%26{}\"",
        NONCE.fetch_add(1, Ordering::Relaxed),
        chrono::Utc::now().timestamp(),
        t.consumer_key,
        t.token_key,
        t.token_secret
    )
}

/// One request on its own connection.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Resp {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn get(lab: &Lab, who: Option<&ApiToken>, path: &str) -> Resp {
    get_at(lab.addr, who, path)
}

fn get_at(addr: SocketAddr, who: Option<&ApiToken>, path: &str) -> Resp {
    let auth = who.map(oauth);
    let h: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request(addr, "GET", path, &h, b"")
}

fn post(lab: &Lab, who: Option<&ApiToken>, path: &str, form: &str) -> Resp {
    post_at(lab.addr, who, path, form)
}

fn post_at(addr: SocketAddr, who: Option<&ApiToken>, path: &str, form: &str) -> Resp {
    let auth = who.map(oauth);
    let mut h: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    h.push(("Content-Type", "application/x-www-form-urlencoded"));
    request(addr, "POST", path, &h, form.as_bytes())
}

const API: &str = "/MAAS/api/2.0";

#[test]
fn authentication_failures_are_401_with_a_date_and_never_anonymous() {
    let (lab, _, _) = lab();
    let r = get(&lab, None, &format!("{API}/machines/"));
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        r.header("Date").is_some(),
        "clients correct clock skew from Date: {}",
        r.head
    );

    let mut forged = lab.bob.clone();
    forged.token_secret = "wrong".into();
    let r = get(&lab, Some(&forged), &format!("{API}/machines/"));
    assert_eq!(r.status, 401);
    assert!(r.body.starts_with("Authorization Error"), "{}", r.body);
    assert_eq!(r.header("WWW-Authenticate"), Some("OAuth realm=\"OAuth\""));

    let mut unknown = lab.bob.clone();
    unknown.token_key = "nosuchtoken".into();
    let r = get(&lab, Some(&unknown), &format!("{API}/machines/"));
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Invalid access token"), "{}", r.body);

    // A replayed nonce, and a timestamp past the window.
    let header = oauth(&lab.bob);
    let path = format!("{API}/users/?op=whoami");
    assert_eq!(
        request(lab.addr, "GET", &path, &[("Authorization", &header)], b"").status,
        200
    );
    let r = request(lab.addr, "GET", &path, &[("Authorization", &header)], b"");
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "Authorization Error: Nonce already used.")
    );
    let old = header.replace(
        &format!("oauth_timestamp=\"{}\"", chrono::Utc::now().timestamp()),
        "oauth_timestamp=\"1000\"",
    );
    let old = old.replace("oauth_nonce=\"n", "oauth_nonce=\"old");
    let r = request(lab.addr, "GET", &path, &[("Authorization", &old)], b"");
    assert_eq!(r.status, 401, "{}", r.body);

    // Anonymous endpoints stay open, with or without credentials.
    assert_eq!(get(&lab, None, &format!("{API}/version/")).status, 200);
    assert_eq!(
        get(&lab, Some(&lab.bob), &format!("{API}/version/")).status,
        200
    );
    let d = get(&lab, None, &format!("{API}/describe/"));
    assert_eq!(d.header("Content-Type"), Some("application/json"));
    assert_eq!(
        d.header("X-MAAS-API-Hash").map(str::len),
        Some(40),
        "{}",
        d.head
    );
}

#[test]
fn users_see_ready_machines_and_their_own_and_act_only_on_their_own() {
    let (lab, ready, bobs) = lab();
    let names = |r: &Resp| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["system_id"].as_str().unwrap().to_owned())
            .collect();
        n.sort();
        n
    };
    let mut both = vec![ready.to_string(), bobs.to_string()];
    both.sort();
    assert_eq!(
        names(&get(&lab, Some(&lab.admin), &format!("{API}/machines/"))),
        both
    );
    assert_eq!(
        names(&get(&lab, Some(&lab.bob), &format!("{API}/machines/"))),
        both
    );
    assert_eq!(
        names(&get(&lab, Some(&lab.carol), &format!("{API}/machines/"))),
        [ready.to_string()]
    );
    // carol cannot read, deploy, release or power bob's machine.
    let item = format!("{API}/machines/{bobs}/");
    assert_eq!(get(&lab, Some(&lab.carol), &item).status, 403);
    for op in [
        "deploy",
        "release",
        "power_on",
        "power_off",
        "abort",
        "lock",
        "mark_broken",
    ] {
        let r = post(&lab, Some(&lab.carol), &format!("{item}?op={op}"), "");
        assert_eq!(r.status, 403, "carol {op} on bob's machine: {}", r.body);
    }
    // Admin-only operations, refused to bob even on his own machine.
    for (method, path) in [
        ("POST", format!("{item}?op=commission")),
        ("POST", format!("{item}?op=mark_fixed")),
        ("GET", format!("{item}?op=get_token")),
        ("GET", format!("{item}?op=power_parameters")),
        ("GET", format!("{API}/machines/?op=power_parameters")),
        ("DELETE", item.clone()),
        ("PUT", item.clone()),
        ("POST", format!("{API}/machines/")),
        ("POST", format!("{API}/zones/")),
        ("POST", format!("{API}/fabrics/")),
        ("POST", format!("{API}/subnets/")),
        ("POST", format!("{API}/resourcepools/")),
        ("GET", format!("{API}/users/carol/")),
    ] {
        let r = if method == "GET" {
            get(&lab, Some(&lab.bob), &path)
        } else {
            let auth = oauth(&lab.bob);
            request(lab.addr, method, &path, &[("Authorization", &auth)], b"")
        };
        assert_eq!(
            r.status, 403,
            "bob {method} {path}: {} {}",
            r.status, r.body
        );
    }
    // A user lists only himself.
    let r = get(&lab, Some(&lab.bob), &format!("{API}/users/"));
    let users: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(users.as_array().unwrap().len(), 1);
    assert_eq!(users[0]["username"], "bob");
    // ...and bob may act on his own machine.
    let r = post(&lab, Some(&lab.bob), &format!("{item}?op=release"), "");
    assert_eq!(r.status, 200, "{}", r.body);
    let m: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (m["status_name"].as_str(), m["owner"].as_str()),
        (Some("Ready"), None)
    );
    // Events: bob sees his machine's history (created, commissioned,
    // allocated, released...); a bad level is a 400 naming it.
    let ev = get(
        &lab,
        Some(&lab.bob),
        &format!("{API}/events/?op=query&id={bobs}"),
    );
    assert_eq!(ev.status, 200, "{}", ev.body);
    let ev: serde_json::Value = serde_json::from_str(&ev.body).unwrap();
    let events = ev["events"].as_array().unwrap();
    assert!(events.len() >= 3, "{ev}");
    assert_eq!(ev["count"].as_u64(), Some(events.len() as u64));
    assert!(events.iter().all(|e| e["node"] == bobs.to_string()), "{ev}");
    let ids: Vec<i64> = events.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let r = get(
        &lab,
        Some(&lab.carol),
        &format!("{API}/events/?op=query&level=LOUD"),
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("level"), "{}", r.body);
    // A node token is for the metadata service, not the API.
    let node = lab._rt.block_on(async {
        let admin = lab.store.user_get("maas-init-node").await.unwrap();
        lab.store
            .token_create(admin.id, &format!("node:{ready}"))
            .await
            .unwrap()
    });
    assert_eq!(
        get(&lab, Some(&node), &format!("{API}/machines/")).status,
        403
    );
}

#[test]
fn errors_name_what_was_wrong() {
    let (lab, ready, _) = lab();
    let admin = Some(&lab.admin);
    let r = get(&lab, admin, &format!("{API}/machines/?op=frobnicate"));
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "Unrecognised signature: method=GET op=frobnicate")
    );
    let r = get(&lab, admin, &format!("{API}/nothing-here/"));
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "Unknown API endpoint: /MAAS/api/2.0/nothing-here/.");
    assert_eq!(
        get(&lab, admin, &format!("{API}/machines")).status,
        404,
        "no trailing slash"
    );
    let auth = oauth(&lab.admin);
    let r = request(
        lab.addr,
        "PUT",
        &format!("{API}/machines/"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 405);
    assert_eq!(get(&lab, None, "/MAAS/api/1.0/machines/").status, 410);

    // Allocation: an unknown constraint is a 400 naming it; no match is a 409.
    let r = post(
        &lab,
        admin,
        &format!("{API}/machines/?op=allocate"),
        "flavour=large",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("flavour"), "{}", r.body);
    let r = post(
        &lab,
        admin,
        &format!("{API}/machines/?op=allocate"),
        "cpu_count=banana",
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("cpu_count"), "{}", r.body);
    let r = post(
        &lab,
        admin,
        &format!("{API}/machines/?op=allocate"),
        "mem=99999999",
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body
            .starts_with("No available machine matches constraints"),
        "{}",
        r.body
    );

    // An action the status does not allow: 409 naming action and status.
    let r = post(
        &lab,
        admin,
        &format!("{API}/machines/{ready}/?op=mark_fixed"),
        "",
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.to_lowercase().contains("ready"), "{}", r.body);
    // Bad values name the field.
    let r = post(
        &lab,
        admin,
        &format!("{API}/machines/"),
        "architecture=amd64/generic",
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("mac_addresses"), "{}", r.body);
    let r = post(
        &lab,
        admin,
        &format!("{API}/machines/"),
        "architecture=amd64/generic&mac_addresses=not-a-mac",
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("mac_addresses"), "{}", r.body);
    let r = post(&lab, admin, &format!("{API}/subnets/"), "cidr=10.0.0.0/33");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("cidr"), "{}", r.body);
}

#[test]
fn anonymous_enlistment_creates_then_updates_by_mac() {
    let (lab, _, _) = lab();
    let form = "architecture=amd64%2Fgeneric&mac_addresses=52%3A54%3A00%3Acc%3A00%3A01&power_type=ipmi&power_parameters=%7B%22power_address%22%3A+%2210.0.0.9%22%7D";
    let r = post(&lab, None, &format!("{API}/machines/"), form);
    assert_eq!(r.status, 200, "{}", r.body);
    let first: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(first["status_name"], "New");
    assert_eq!(first["power_type"], "ipmi");
    assert!(first.get("owner").is_none(), "the anonymous view: {first}");
    // The same MAC again (the ephemeral environment retrying): the same machine.
    let r = post(&lab, None, &format!("{API}/machines/"), form);
    let again: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(again["system_id"], first["system_id"]);
    // The admin sees it with its power settings.
    let sid = first["system_id"].as_str().unwrap();
    let p = get(
        &lab,
        Some(&lab.admin),
        &format!("{API}/machines/{sid}/?op=power_parameters"),
    );
    assert_eq!(p.body, r#"{"power_address":"10.0.0.9"}"#);
    // A user's token on the same call is the admin-only create: 403.
    assert_eq!(
        post(&lab, Some(&lab.bob), &format!("{API}/machines/"), form).status,
        403
    );
    // Bad input still names the field.
    let r = post(
        &lab,
        None,
        &format!("{API}/machines/"),
        "architecture=amd64%2Fgeneric",
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("mac_addresses"), "{}", r.body);
}

#[test]
fn tags_are_made_applied_listed_and_used_by_allocation() {
    let (lab, ready, _) = lab();
    let admin = Some(&lab.admin);
    let r = post(
        &lab,
        admin,
        &format!("{API}/tags/"),
        "name=gpu&comment=has+a+GPU&kernel_opts=nomodeset",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let t: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (t["name"].as_str(), t["kernel_opts"].as_str()),
        (Some("gpu"), Some("nomodeset"))
    );
    assert_eq!(
        post(&lab, Some(&lab.bob), &format!("{API}/tags/"), "name=x").status,
        403
    );
    let r = post(
        &lab,
        admin,
        &format!("{API}/tags/gpu/?op=update_nodes"),
        &format!("add={ready}"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let nodes: serde_json::Value =
        serde_json::from_str(&get(&lab, Some(&lab.bob), &format!("{API}/tags/gpu/?op=nodes")).body)
            .unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    assert_eq!(nodes[0]["system_id"], ready.to_string());
    assert_eq!(nodes[0]["tag_names"], serde_json::json!(["gpu"]));
    // Allocation by tag finds it; an unknown tag names itself.
    let r = post(
        &lab,
        Some(&lab.bob),
        &format!("{API}/machines/?op=allocate"),
        "tags=gpu",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        &lab,
        Some(&lab.bob),
        &format!("{API}/machines/?op=allocate"),
        "tags=tpu",
    );
    assert!(
        r.status == 400 || r.status == 409,
        "{} {}",
        r.status,
        r.body
    );
    assert!(r.body.contains("tpu"), "{}", r.body);
    // Delete.
    let auth = oauth(&lab.admin);
    let r = request(
        lab.addr,
        "DELETE",
        &format!("{API}/tags/gpu/"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(get(&lab, admin, &format!("{API}/tags/gpu/")).status, 404);
}

#[test]
fn ip_ranges_spaces_and_domains() {
    let (lab, _, _) = lab();
    let admin = Some(&lab.admin);
    let r = post(
        &lab,
        admin,
        &format!("{API}/subnets/"),
        "cidr=10.55.0.0%2F24",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(
        &lab,
        admin,
        &format!("{API}/ipranges/"),
        "type=dynamic&start_ip=10.55.0.100&end_ip=10.55.0.199&comment=pxe",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let x: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (x["type"].as_str(), x["subnet"]["cidr"].as_str()),
        (Some("dynamic"), Some("10.55.0.0/24"))
    );
    // Overlapping, outside any subnet, or of an unknown type: 4xx naming why.
    let r = post(
        &lab,
        admin,
        &format!("{API}/ipranges/"),
        "type=reserved&start_ip=10.55.0.150&end_ip=10.55.0.160",
    );
    assert!(
        r.status == 400 || r.status == 409,
        "{} {}",
        r.status,
        r.body
    );
    let r = post(
        &lab,
        admin,
        &format!("{API}/ipranges/"),
        "type=dynamic&start_ip=192.0.2.1&end_ip=192.0.2.9",
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("start_ip"), "{}", r.body);
    let r = post(
        &lab,
        admin,
        &format!("{API}/ipranges/"),
        "type=weird&start_ip=10.55.0.1&end_ip=10.55.0.2",
    );
    assert!(r.body.contains("type"), "{}", r.body);
    let list: serde_json::Value =
        serde_json::from_str(&get(&lab, Some(&lab.bob), &format!("{API}/ipranges/")).body).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(
        post(
            &lab,
            Some(&lab.bob),
            &format!("{API}/ipranges/"),
            "type=dynamic"
        )
        .status,
        403
    );

    let r = post(&lab, admin, &format!("{API}/spaces/"), "name=storage");
    assert_eq!(r.status, 200, "{}", r.body);
    let spaces: serde_json::Value =
        serde_json::from_str(&get(&lab, admin, &format!("{API}/spaces/")).body).unwrap();
    assert!(
        spaces
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "storage"),
        "{spaces}"
    );
    let r = post(
        &lab,
        admin,
        &format!("{API}/domains/"),
        "name=lab.example&authoritative=false",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let domains: serde_json::Value =
        serde_json::from_str(&get(&lab, admin, &format!("{API}/domains/")).body).unwrap();
    let d = domains
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "lab.example")
        .unwrap();
    assert_eq!(d["authoritative"], false);
}

#[test]
fn login_with_username_and_password() {
    let (lab, _, _) = lab();
    let ok = request(
        lab.addr,
        "POST",
        "/MAAS/accounts/authenticate/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"username=bob&password=bob-pw&consumer=bob%40laptop",
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    let t: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(t["name"], "bob@laptop");
    // The same consumer gets the same token back.
    let again = request(
        lab.addr,
        "POST",
        "/MAAS/accounts/authenticate/",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"username=bob&password=bob-pw&consumer=bob%40laptop",
    );
    let t2: serde_json::Value = serde_json::from_str(&again.body).unwrap();
    assert_eq!(t["token_key"], t2["token_key"]);
    for body in [
        &b"username=bob&password=wrong"[..],
        b"username=nobody&password=x",
        b"username=maas-init-node&password=",
        b"",
    ] {
        let r = request(
            lab.addr,
            "POST",
            "/MAAS/accounts/authenticate/",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            body,
        );
        assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(body));
    }
    let r = request(lab.addr, "GET", "/MAAS/accounts/authenticate/", &[], b"");
    assert_eq!(r.status, 405);
}

#[test]
fn power_goes_through_the_rack_and_its_failures_fail_the_workflow() {
    let rack = Arc::new(maas_region::SimulatedRack::default());
    let (lab, ready, _) = lab_with(rack.clone(), DeadlinePolicy::default());
    let admin = Some(&lab.admin);
    // Give the Ready machine a BMC (any driver name but manual).
    let item = format!("{API}/machines/{ready}/");
    let auth = oauth(&lab.admin);
    let r = request(
        lab.addr,
        "PUT",
        &item,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"power_type=ipmi&power_parameters_power_address=10.0.0.9",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    deployable(&lab, &ready);
    // Deploy powers it on through the rack.
    let r = post(
        &lab,
        admin,
        &format!("{item}?op=deploy"),
        "distro_series=noble",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let m: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (m["status_name"].as_str(), m["power_state"].as_str()),
        (Some("Deploying"), Some("on"))
    );
    let r = get(&lab, admin, &format!("{item}?op=query_power_state"));
    assert_eq!(r.body, r#"{"state":"on"}"#);
    // Release powers it off, then it is Ready.
    let r = post(&lab, admin, &format!("{item}?op=release"), "");
    let m: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (m["status_name"].as_str(), m["power_state"].as_str()),
        (Some("Ready"), Some("off")),
        "{}",
        r.body
    );
    let log: Vec<maas_region::PowerRequest> = rack.requests().into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        log,
        [
            maas_region::PowerRequest::Cycle,
            maas_region::PowerRequest::Query,
            maas_region::PowerRequest::Off
        ]
    );
    // A BMC that refuses to switch on: 503, and the deployment has failed.
    let r = request(
        lab.addr,
        "PUT",
        &item,
        &[
            ("Authorization", &oauth(&lab.admin)),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"power_parameters_sim_fail=on",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post(&lab, admin, &format!("{item}?op=deploy"), "");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("refused"), "{}", r.body);
    let m: serde_json::Value = serde_json::from_str(&get(&lab, admin, &item).body).unwrap();
    assert_eq!(m["status_name"], "Failed deployment");
}

#[test]
fn the_curtin_config_comes_from_maas_curtin_with_the_node_token() {
    let (lab, ready, _) = lab();
    let admin = Some(&lab.admin);
    // The lab machines have no disk yet: not deployable, and the 400 says why.
    let item = format!("{API}/machines/{ready}/");
    let r = get(&lab, admin, &format!("{item}?op=get_curtin_config"));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("cannot deploy"), "{}", r.body);
    // Give it a disk and its firmware, as commissioning would (through the
    // store: block-device endpoints come later).
    lab._rt.block_on(async {
        let mut m = lab.store.machine_get(&ready).await.unwrap();
        m.block_devices
            .push(maas_core::machine::BlockDevice::disk("sda", 100 << 30));
        m.hardware.firmware.kind = maas_core::machine::FirmwareKind::Uefi;
        lab.store.machine_update(&m).await.unwrap();
    });
    let r = get(&lab, admin, &format!("{item}?op=get_curtin_config"));
    assert_eq!(r.status, 200, "{}", r.body);
    // The node's interfaces and disks, as their own resources.
    let nics: serde_json::Value =
        serde_json::from_str(&get(&lab, admin, &format!("{API}/nodes/{ready}/interfaces/")).body)
            .unwrap();
    assert_eq!(nics[0]["name"], "eth0");
    assert_eq!(nics[0]["mac_address"], "02:00:00:00:00:00");
    let uri = nics[0]["resource_uri"].as_str().unwrap().to_owned();
    let one: serde_json::Value = serde_json::from_str(&get(&lab, admin, &uri).body).unwrap();
    assert_eq!(one["name"], "eth0", "{one}");
    let disks: serde_json::Value =
        serde_json::from_str(&get(&lab, admin, &format!("{API}/nodes/{ready}/blockdevices/")).body)
            .unwrap();
    assert_eq!(
        (disks[0]["name"].as_str(), disks[0]["size"].as_u64()),
        (Some("sda"), Some(100 << 30))
    );
    let uri = disks[0]["resource_uri"].as_str().unwrap().to_owned();
    assert_eq!(get(&lab, admin, &uri).status, 200);
    assert_eq!(
        get(
            &lab,
            admin,
            &format!("{API}/nodes/{ready}/blockdevices/999/")
        )
        .status,
        404
    );
    let token: serde_json::Value =
        serde_json::from_str(&get(&lab, admin, &format!("{item}?op=get_token")).body).unwrap();
    let host = lab.addr.to_string();
    for want in [
        format!("endpoint: http://{host}/MAAS/metadata/status/{ready}"),
        "type: disk".to_owned(),
        "path: /".to_owned(),
        format!("http://{host}/images/ubuntu/amd64/generic/noble/stable/squashfs"),
    ] {
        assert!(r.body.contains(&want), "{want:?} missing from:\n{}", r.body);
    }
    // The node token's key, plain or quoted (the YAML writer quotes keys
    // that YAML 1.1 could misread, such as ones starting with a digit).
    let key = token["token_key"].as_str().unwrap();
    assert!(
        r.body.contains(&format!("token_key: {key}\n"))
            || r.body.contains(&format!("token_key: \"{key}\"\n")),
        "the node token {key} is missing from:\n{}",
        r.body
    );
}

#[test]
fn deployment_settings_survive_a_region_restart() {
    let (lab, ready, _) = lab();
    deployable(&lab, &ready);
    let item = format!("{API}/machines/{ready}/");
    // "#cloud-config\nruncmd: [true]\n", base64 as clients send it.
    let r = post(
        &lab,
        Some(&lab.admin),
        &format!("{item}?op=deploy"),
        "distro_series=ubuntu%2Fjammy&user_data=I2Nsb3VkLWNvbmZpZwpydW5jbWQ6IFt0cnVlXQo%3D",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let token: serde_json::Value =
        serde_json::from_str(&get(&lab, Some(&lab.admin), &format!("{item}?op=get_token")).body)
            .unwrap();
    // A second region process over the same database (the first one gone
    // or not: a region keeps no deployment state of its own).
    let addr = lab._rt.block_on(async {
        let region = Region::new(lab.store.clone(), RegionConfig::default())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, maas_region::router(region))
                .await
                .unwrap();
        });
        addr
    });
    let m: serde_json::Value =
        serde_json::from_str(&get_at(addr, Some(&lab.admin), &item).body).unwrap();
    assert_eq!(
        (m["osystem"].as_str(), m["distro_series"].as_str()),
        (Some("ubuntu"), Some("jammy"))
    );
    let node = ApiToken {
        consumer_key: token["consumer_key"].as_str().unwrap().into(),
        token_key: token["token_key"].as_str().unwrap().into(),
        token_secret: token["token_secret"].as_str().unwrap().into(),
        ..lab.admin.clone()
    };
    let r = get_at(addr, Some(&node), "/MAAS/metadata/2012-03-01/user-data");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "#cloud-config\nruncmd: [true]\n")
    );
    let m: serde_json::Value =
        serde_json::from_str(&get_at(addr, Some(&lab.admin), &item).body).unwrap();
    assert_eq!(m["status_name"], "Deployed");
    // Release forgets them.
    let r = post_at(addr, Some(&lab.admin), &format!("{item}?op=release"), "");
    let m: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (m["status_name"].as_str(), m["distro_series"].as_str()),
        (Some("Ready"), Some(""))
    );
}

#[test]
fn the_preseed_is_anonymous_and_carries_the_node_token_for_the_purpose() {
    let (lab, ready, _) = lab();
    let r = post(
        &lab,
        Some(&lab.admin),
        &format!("{API}/machines/{ready}/?op=commission"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let token: serde_json::Value = serde_json::from_str(
        &get(
            &lab,
            Some(&lab.admin),
            &format!("{API}/machines/{ready}/?op=get_token"),
        )
        .body,
    )
    .unwrap();
    let r = get(
        &lab,
        None,
        &format!("/MAAS/metadata/latest/by-id/{ready}/?op=get_preseed"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.starts_with("#cloud-config"), "{}", r.body);
    let key = token["token_key"].as_str().unwrap();
    assert!(
        r.body.contains(key),
        "the node token is in the preseed: {}",
        r.body
    );
    assert!(
        r.body
            .contains(&format!("http://{}/MAAS/metadata/", lab.addr)),
        "{}",
        r.body
    );
    let r = get(
        &lab,
        None,
        "/MAAS/metadata/latest/by-id/nosuch/?op=get_preseed",
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = get(
        &lab,
        None,
        &format!("/MAAS/metadata/latest/by-id/{ready}/?op=other"),
    );
    assert_eq!(r.status, 400, "{}", r.body);
}

#[test]
fn a_missed_deadline_moves_the_machine_to_its_failed_status() {
    let policy = DeadlinePolicy {
        commissioning: std::time::Duration::ZERO,
        ..DeadlinePolicy::default()
    };
    let (lab, ready, _) = lab_with(Arc::new(maas_region::NoRack), policy);
    let r = post(
        &lab,
        Some(&lab.admin),
        &format!("{API}/machines/{ready}/?op=commission"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let region = lab
        ._rt
        .block_on(Region::new(lab.store.clone(), RegionConfig::default()))
        .unwrap();
    let expired = lab._rt.block_on(region.expire_deadlines()).unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].system_id, ready);
    let m: serde_json::Value = serde_json::from_str(
        &get(&lab, Some(&lab.admin), &format!("{API}/machines/{ready}/")).body,
    )
    .unwrap();
    assert_eq!(m["status_name"], "Failed commissioning");
    // A second region running the same check finds nothing more to do.
    assert!(
        lab._rt
            .block_on(region.expire_deadlines())
            .unwrap()
            .is_empty()
    );
}

mod random_input {
    use super::*;
    use proptest::prelude::*;

    const PATHS: &[&str] = &[
        "machines/",
        "machines/SID/",
        "nodes/",
        "nodes/SID/interfaces/",
        "nodes/SID/interfaces/1/",
        "nodes/SID/blockdevices/",
        "nodes/SID/blockdevices/1/",
        "events/",
        "zones/",
        "zones/default/",
        "tags/",
        "tags/gpu/",
        "resourcepools/",
        "resourcepool/0/",
        "fabrics/",
        "fabrics/1/vlans/",
        "fabrics/1/vlans/0/",
        "subnets/",
        "subnets/1/",
        "users/",
        "users/bob/",
        "ipranges/",
        "spaces/",
        "domains/",
        "account/",
        "describe/",
        "version/",
    ];
    const OPS: &[&str] = &[
        "",
        "allocate",
        "deploy",
        "release",
        "commission",
        "abort",
        "power_on",
        "power_off",
        "query_power_state",
        "lock",
        "unlock",
        "mark_broken",
        "mark_fixed",
        "get_token",
        "power_parameters",
        "whoami",
        "create_authorisation_token",
        "list_authorisation_tokens",
        "list_allocated",
    ];
    const KEYS: &[&str] = &[
        "hostname",
        "architecture",
        "mac_addresses",
        "cpu_count",
        "mem",
        "tags",
        "zone",
        "pool",
        "storage",
        "interfaces",
        "user_data",
        "distro_series",
        "erase",
        "comment",
        "name",
        "cidr",
        "gateway_ip",
        "dns_servers",
        "fabric",
        "vlan",
        "status",
        "id",
        "power_parameters",
        "power_type",
        "system_id",
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        #[test]
        fn no_500_and_no_panic(
            path in 0..PATHS.len(),
            op in 0..OPS.len(),
            method in 0..4usize,
            fields in proptest::collection::vec((0..KEYS.len(), ".{0,12}"), 0..5),
            multipart in any::<bool>(),
            junk_body in proptest::collection::vec(any::<u8>(), 0..64),
            use_junk in any::<bool>(),
            auth in 0..4usize,
        ) {
            let (lab, ready, _) = LAB.get_or_init(lab_for_props);
            let path = format!("{API}/{}", PATHS[path].replace("SID", &ready.to_string()));
            let path = if OPS[op].is_empty() { path } else { format!("{path}?op={}", OPS[op]) };
            let method = ["GET", "POST", "PUT", "DELETE"][method];
            let header = match auth {
                0 => None,
                1 => Some(oauth(&lab.admin)),
                2 => Some(oauth(&lab.bob)),
                _ => Some("OAuth oauth_token=\"x\", oauth_timestamp=\"nan\", oauth_consumer_key, oauth_signature=\"%zz\", oauth_nonce=\"\", oauth_signature_method=\"PLAINTEXT\"".to_owned()),
            };
            let (ct, body): (String, Vec<u8>) = if use_junk {
                ("multipart/form-data; boundary=\"x\"".into(), junk_body)
            } else if multipart {
                let mut b = String::new();
                for (k, v) in &fields {
                    b.push_str(&format!("--BND\r\nContent-Disposition: form-data; name=\"{}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n", KEYS[*k], v));
                }
                b.push_str("--BND--\r\n");
                ("multipart/form-data; boundary=\"BND\"".into(), b.into_bytes())
            } else {
                let b: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", KEYS[*k], v.replace('&', "%26"))).collect();
                ("application/x-www-form-urlencoded".into(), b.join("&").into_bytes())
            };
            let mut headers = vec![("Content-Type", ct.as_str())];
            if let Some(h) = &header {
                headers.push(("Authorization", h.as_str()));
            }
            let r = request(lab.addr, method, &path, &headers, &body);
            prop_assert!(r.status >= 200 && r.status < 500, "{method} {path}: {} {}", r.status, r.body);
        }
    }

    static LAB: std::sync::OnceLock<(Lab, SystemId, SystemId)> = std::sync::OnceLock::new();

    fn lab_for_props() -> (Lab, SystemId, SystemId) {
        lab()
    }
}

/// The list answers from a cache of rendered machines; after every kind of
/// change (through the API, or straight in the store as another region
/// would write it) each listed machine must equal the machine read alone,
/// which is rendered fresh.
#[test]
fn the_machine_list_is_never_stale() {
    let (lab, ready, bobs) = lab();
    let admin = Some(&lab.admin);
    let listed = |lab: &Lab| -> Vec<serde_json::Value> {
        let r = get(lab, Some(&lab.admin), &format!("{API}/machines/"));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.header("Content-Length").and_then(|l| l.parse().ok()),
            Some(r.body.len()),
            "the declared length is the body's"
        );
        let all: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let all = all.as_array().unwrap().clone();
        for m in &all {
            let sid = m["system_id"].as_str().unwrap();
            let one = get(lab, Some(&lab.admin), &format!("{API}/machines/{sid}/"));
            let one: serde_json::Value = serde_json::from_str(&one.body).unwrap();
            assert_eq!(m, &one, "the listed {sid} differs from a fresh read");
        }
        all
    };
    let find = |all: &[serde_json::Value], id: &SystemId| -> serde_json::Value {
        all.iter()
            .find(|m| m["system_id"] == id.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed"))
    };
    assert_eq!(listed(&lab).len(), 2);
    // An update through the API.
    let auth = oauth(&lab.admin);
    let r = request(
        lab.addr,
        "PUT",
        &format!("{API}/machines/{ready}/"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"hostname=renamed",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(find(&listed(&lab), &ready)["hostname"], "renamed");
    // Tags set by name (machine_tag rows only), then the tag deleted.
    assert_eq!(
        post(&lab, admin, &format!("{API}/tags/"), "name=fast").status,
        200
    );
    let r = post(
        &lab,
        admin,
        &format!("{API}/tags/fast/?op=update_nodes"),
        &format!("add={ready}&add={bobs}"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        find(&listed(&lab), &bobs)["tag_names"],
        serde_json::json!(["fast"])
    );
    let r = request(
        lab.addr,
        "DELETE",
        &format!("{API}/tags/fast/"),
        &[("Authorization", &oauth(&lab.admin))],
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        find(&listed(&lab), &ready)["tag_names"],
        serde_json::json!([])
    );
    // The context: a zone the machine is in gets deleted; the machine moves
    // to the default zone.
    assert_eq!(
        post(
            &lab,
            admin,
            &format!("{API}/zones/"),
            "name=rack-9&description=ninth"
        )
        .status,
        200
    );
    let r = request(
        lab.addr,
        "PUT",
        &format!("{API}/machines/{ready}/"),
        &[
            ("Authorization", &oauth(&lab.admin)),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b"zone=rack-9",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(find(&listed(&lab), &ready)["zone"]["description"], "ninth");
    let r = request(
        lab.addr,
        "DELETE",
        &format!("{API}/zones/rack-9/"),
        &[("Authorization", &oauth(&lab.admin))],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(find(&listed(&lab), &ready)["zone"]["name"], "default");
    // A write another region makes: straight into the shared store.
    lab._rt.block_on(async {
        let mut m = lab.store.machine_get(&bobs).await.unwrap();
        m.description = "written by region two".into();
        lab.store.machine_update(&m).await.unwrap();
    });
    assert_eq!(
        find(&listed(&lab), &bobs)["description"],
        "written by region two"
    );
    // A lifecycle change, then a delete.
    let r = post(
        &lab,
        Some(&lab.bob),
        &format!("{API}/machines/{bobs}/?op=release"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(find(&listed(&lab), &bobs)["status_name"], "Ready");
    let r = request(
        lab.addr,
        "DELETE",
        &format!("{API}/machines/{bobs}/"),
        &[("Authorization", &oauth(&lab.admin))],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let all = listed(&lab);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["system_id"], ready.to_string());
    // Bob, not an admin, sees the Ready machine through the same cache.
    let r = get(&lab, Some(&lab.bob), &format!("{API}/machines/"));
    let mine: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(mine.as_array().map(Vec::len), Some(1));
}

fn put(lab: &Lab, who: &ApiToken, path: &str, form: &str) -> Resp {
    let auth = oauth(who);
    request(
        lab.addr,
        "PUT",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        form.as_bytes(),
    )
}

fn json_of(r: &Resp) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {} {}", r.status, r.body))
}

/// Interfaces: physical, bond, VLAN and bridge interfaces made and changed,
/// subnet links (static with and without an address, checked against the
/// subnet and the addresses taken), unlink, disconnect, and the refusals.
#[test]
fn interfaces_are_made_linked_and_refused_by_name() {
    use maas_core::repo::NetworkRepository;
    let (lab, ready, _) = lab();
    let admin = &lab.admin;
    let base = format!("{API}/nodes/{ready}/interfaces");
    let s = json_of(&post(
        &lab,
        Some(admin),
        &format!("{API}/subnets/"),
        "cidr=10.9.0.0/24&gateway_ip=10.9.0.1",
    ));
    let subnet = s["id"].as_i64().unwrap();
    let fabric = s["vlan"]["fabric_id"].as_i64().unwrap();
    let tagged = lab._rt.block_on(async {
        lab.store
            .vlan_create(&maas_core::network::Vlan {
                id: maas_core::VlanId(0),
                fabric: maas_core::FabricId(fabric),
                vid: 100,
                name: None,
                mtu: 1500,
                dhcp_on: false,
                primary_rack: None,
                secondary_rack: None,
                relay_vlan: None,
                space: None,
                description: String::new(),
            })
            .await
            .unwrap()
    });
    let eth0 = json_of(&get(&lab, Some(admin), &format!("{base}/eth0/")));
    let eth1 = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/?op=create_physical"),
        "mac_address=02:00:00:00:01:01",
    ));
    assert_eq!(eth1["name"], "eth1");
    let r = post(
        &lab,
        Some(admin),
        &format!("{base}/?op=create_physical"),
        "mac_address=02:00:00:00:01:01",
    );
    assert_eq!(r.status, 400, "a MAC used twice: {}", r.body);
    assert!(r.body.contains("mac_address"), "{}", r.body);
    let bond = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/?op=create_bond"),
        &format!(
            "name=bond0&parents={}&parents={}&bond_mode=802.3ad&mtu=9000",
            eth0["id"], eth1["id"]
        ),
    ));
    assert_eq!(bond["type"], "bond");
    assert_eq!(bond["parents"], serde_json::json!(["eth0", "eth1"]));
    assert_eq!(bond["params"]["bond_mode"], "802.3ad");
    assert_eq!(bond["mac_address"], eth0["mac_address"]);
    let r = post(
        &lab,
        Some(admin),
        &format!("{base}/?op=create_bond"),
        &format!("name=bond9&parents={}", eth0["id"]),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("already in use"), "{}", r.body);
    let r = post(
        &lab,
        Some(admin),
        &format!("{base}/?op=create_bond"),
        "name=bond9&parents=eth0&mtu=12",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    // Links: a static address asked for, then one picked.
    let linked = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/bond0/?op=link_subnet"),
        &format!("mode=static&subnet={subnet}&ip_address=10.9.0.50"),
    ));
    assert_eq!(linked["links"][0]["mode"], "static");
    assert_eq!(linked["links"][0]["ip_address"], "10.9.0.50");
    assert_eq!(linked["vlan"]["id"], s["vlan"]["id"]);
    let eth2 = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/?op=create_physical"),
        "mac_address=02:00:00:00:01:02&name=eth2",
    ));
    for (form, field) in [
        (
            format!("mode=STATIC&subnet={subnet}&ip_address=10.9.0.50"),
            "ip_address",
        ),
        (
            format!("mode=STATIC&subnet={subnet}&ip_address=10.8.0.5"),
            "ip_address",
        ),
        (format!("mode=sideways&subnet={subnet}"), "mode"),
        ("mode=AUTO&subnet=999".to_owned(), "subnet"),
        ("mode=DHCP".to_owned(), "subnet"),
    ] {
        let r = post(
            &lab,
            Some(admin),
            &format!("{base}/eth2/?op=link_subnet"),
            &form,
        );
        assert_eq!(r.status, 400, "{form}: {}", r.body);
        assert!(r.body.contains(field), "{form}: {}", r.body);
    }
    let picked = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/eth2/?op=link_subnet"),
        &format!("mode=STATIC&subnet={subnet}"),
    ));
    let ip = picked["links"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        ip.starts_with("10.9.0.") && ip != "10.9.0.50" && ip != "10.9.0.1",
        "{ip}"
    );
    // A VLAN interface on the bond; the bond cannot go while it is there.
    let v = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/?op=create_vlan"),
        &format!("parent={}&vlan={}", bond["id"], tagged.id.0),
    ));
    assert_eq!(v["name"], "bond0.100");
    assert_eq!(v["vlan"]["vid"], 100);
    let r = request(
        lab.addr,
        "DELETE",
        &format!("{base}/bond0/"),
        &[("Authorization", &oauth(admin))],
        b"",
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("bond0.100"), "{}", r.body);
    // Rename: the child follows.
    let renamed = json_of(&put(
        &lab,
        admin,
        &format!("{base}/bond0/"),
        "name=bond1&bond_miimon=100",
    ));
    assert_eq!(renamed["name"], "bond1");
    assert_eq!(renamed["params"]["bond_miimon"], "100");
    let v = json_of(&get(&lab, Some(admin), &format!("{base}/bond0.100/")));
    assert_eq!(v["parents"], serde_json::json!(["bond1"]));
    // Unlink and disconnect.
    let link = linked["links"][0]["id"].as_i64().unwrap();
    let r = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/bond1/?op=unlink_subnet"),
        &format!("id={link}"),
    ));
    assert_eq!(r["links"], serde_json::json!([]));
    let r = post(
        &lab,
        Some(admin),
        &format!("{base}/bond1/?op=unlink_subnet"),
        &format!("id={link}"),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let d = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/eth2/?op=disconnect"),
        "",
    ));
    assert_eq!(
        (d["links"].clone(), d["vlan"].clone()),
        (serde_json::json!([]), serde_json::Value::Null)
    );
    let br = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/?op=create_bridge"),
        &format!("parent={}", eth2["id"]),
    ));
    assert_eq!(
        (br["name"].as_str(), br["type"].as_str()),
        (Some("br-eth2"), Some("bridge"))
    );
    // The machine as listed carries all of it.
    let all = json_of(&get(&lab, Some(admin), &format!("{API}/machines/")));
    let m = all
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["system_id"] == ready.to_string())
        .unwrap();
    let mut names: Vec<&str> = m["interface_set"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["bond0.100", "bond1", "br-eth2", "eth0", "eth1", "eth2"]
    );
    // Bob may not change a machine he does not own; nobody may while it
    // commissions.
    let r = post(
        &lab,
        Some(&lab.bob),
        &format!("{base}/?op=create_physical"),
        "mac_address=02:00:00:00:01:09",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        post(
            &lab,
            Some(admin),
            &format!("{API}/machines/{ready}/?op=commission"),
            ""
        )
        .status,
        200
    );
    let r = post(
        &lab,
        Some(admin),
        &format!("{base}/?op=create_physical"),
        "mac_address=02:00:00:00:01:09",
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("Commissioning"), "{}", r.body);
}

/// `maas/?op=get_config|set_config`: JSON values, checked kinds, unknown
/// names refused, admins only, and the default series used by deploy.
#[test]
fn settings_are_checked_stored_and_used() {
    let (lab, ready, _) = lab();
    deployable(&lab, &ready);
    let admin = Some(&lab.admin);
    let cfg = |name: &str| {
        get(
            &lab,
            admin,
            &format!("{API}/maas/?op=get_config&name={name}"),
        )
    };
    let r = cfg("default_distro_series");
    assert_eq!((r.status, r.body.as_str()), (200, "\"noble\""));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(cfg("enable_http_proxy").body, "true");
    assert_eq!(cfg("node_timeout").body, "30");
    let r = post(
        &lab,
        admin,
        &format!("{API}/maas/?op=set_config"),
        "name=default_distro_series&value=jammy",
    );
    assert_eq!((r.status, r.body.as_str()), (200, "OK"));
    assert_eq!(cfg("default_distro_series").body, "\"jammy\"");
    let r = post(
        &lab,
        admin,
        &format!("{API}/maas/?op=set_config"),
        "name=node_timeout&value=soon",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("value"), "{}", r.body);
    let r = post(
        &lab,
        admin,
        &format!("{API}/maas/?op=set_config"),
        "name=no_such_setting&value=1",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("name"), "{}", r.body);
    assert_eq!(cfg("no_such_setting").status, 400);
    let r = post(
        &lab,
        admin,
        &format!("{API}/maas/?op=set_config"),
        "name=http_proxy&value=",
    );
    assert_eq!(r.status, 200, "an empty value is a value: {}", r.body);
    assert_eq!(cfg("http_proxy").body, "\"\"");
    assert_eq!(
        get(
            &lab,
            Some(&lab.bob),
            &format!("{API}/maas/?op=get_config&name=maas_name")
        )
        .status,
        403
    );
    // A deploy that names no series gets the configured one.
    let r = post(
        &lab,
        Some(&lab.bob),
        &format!("{API}/machines/{ready}/?op=deploy"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json_of(&r)["distro_series"], "jammy");
}

/// Owner data (workload annotations): set and cleared by the owner, not by
/// others, gone after release; test and rescue mode go and come back.
#[test]
fn owner_data_rescue_and_test() {
    let (lab, ready, bobs) = lab();
    let r = post(
        &lab,
        Some(&lab.bob),
        &format!("{API}/machines/{bobs}/?op=set_owner_data"),
        "purpose=ci&team=infra",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        json_of(&r)["owner_data"],
        serde_json::json!({"purpose": "ci", "team": "infra"})
    );
    let r = post(
        &lab,
        Some(&lab.bob),
        &format!("{API}/machines/{bobs}/?op=set_workload_annotations"),
        "purpose=",
    );
    assert_eq!(
        json_of(&r)["workload_annotations"],
        serde_json::json!({"team": "infra"})
    );
    assert_eq!(
        post(
            &lab,
            Some(&lab.carol),
            &format!("{API}/machines/{bobs}/?op=set_owner_data"),
            "x=y"
        )
        .status,
        403
    );
    let r = post(
        &lab,
        Some(&lab.admin),
        &format!("{API}/machines/{ready}/?op=set_owner_data"),
        "x=y",
    );
    assert_eq!(r.status, 409, "a Ready machine has no owner: {}", r.body);
    let r = post(
        &lab,
        Some(&lab.bob),
        &format!("{API}/machines/{bobs}/?op=release"),
        "",
    );
    assert_eq!(json_of(&r)["owner_data"], serde_json::json!({}));
    // Rescue mode from Ready and back.
    let admin = Some(&lab.admin);
    let r = post(
        &lab,
        admin,
        &format!("{API}/machines/{ready}/?op=rescue_mode"),
        "",
    );
    assert_eq!(json_of(&r)["status_name"], "Entering rescue mode");
    let r = post(
        &lab,
        admin,
        &format!("{API}/machines/{ready}/?op=exit_rescue_mode"),
        "",
    );
    assert_eq!(json_of(&r)["status_name"], "Ready");
    let r = post(
        &lab,
        admin,
        &format!("{API}/machines/{ready}/?op=exit_rescue_mode"),
        "",
    );
    assert_eq!(r.status, 409, "not in rescue mode: {}", r.body);
    let r = post(&lab, admin, &format!("{API}/machines/{ready}/?op=test"), "");
    assert_eq!(json_of(&r)["status_name"], "Testing");
}

/// A signal as MAAS's script runner sends it: multipart, base64 parts,
/// script output files named after the script with `.out`/`.err`/`.yaml`.
fn signal(lab: &Lab, node: &ApiToken, fields: &[(&str, &str)], files: &[(&str, &[u8])]) -> Resp {
    use base64::Engine;
    let b = "sig-boundary-42";
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend_from_slice(
            format!("--{b}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    for (name, data) in files {
        body.extend_from_slice(
            format!(
                "--{b}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
                base64::engine::general_purpose::STANDARD.encode(data)
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{b}--\r\n").as_bytes());
    let auth = oauth(node);
    let ct = format!("multipart/form-data; boundary=\"{b}\"");
    request(
        lab.addr,
        "POST",
        "/MAAS/metadata/2012-03-01/",
        &[("Authorization", &auth), ("Content-Type", &ct)],
        &body,
    )
}

/// Script results: stored per run from signal files (bytes, not text),
/// read back with their outputs, and a failed script fails the run.
#[test]
fn signal_files_become_script_results_and_a_failed_script_fails_the_run() {
    use base64::Engine;
    let (lab, ready, _) = lab();
    let admin = Some(&lab.admin);
    let item = format!("{API}/machines/{ready}/");
    assert_eq!(
        post(&lab, admin, &format!("{item}?op=commission"), "").status,
        200
    );
    let t = json_of(&get(&lab, admin, &format!("{item}?op=get_token")));
    let node = ApiToken {
        consumer_key: t["consumer_key"].as_str().unwrap().into(),
        token_key: t["token_key"].as_str().unwrap().into(),
        token_secret: t["token_secret"].as_str().unwrap().into(),
        ..lab.admin.clone()
    };
    let cpuinfo: &[u8] = b"model name: \xff\xfe not UTF-8\n";
    let r = signal(
        &lab,
        &node,
        &[
            ("op", "signal"),
            ("status", "WORKING"),
            ("name", "00-cpuinfo"),
            ("exit_status", "0"),
        ],
        &[("00-cpuinfo.out", cpuinfo), ("00-cpuinfo.err", b"")],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "OK"));
    let r = signal(
        &lab,
        &node,
        &[("op", "signal"), ("status", "OK"), ("exit_status", "2")],
        &[("10-disks", b"no disks found\n")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let m = json_of(&get(&lab, admin, &item));
    assert_eq!(
        m["status_name"], "Failed commissioning",
        "a failed script fails the run"
    );
    assert!(
        m["error_description"]
            .as_str()
            .unwrap()
            .contains("10-disks"),
        "{m}"
    );
    let sets = json_of(&get(
        &lab,
        admin,
        &format!("{API}/nodes/{ready}/results/?include_output=true"),
    ));
    let sets = sets.as_array().unwrap();
    assert_eq!(sets.len(), 1);
    assert_eq!(
        (
            sets[0]["type_name"].as_str(),
            sets[0]["status_name"].as_str()
        ),
        (Some("commissioning"), Some("Failed"))
    );
    let results = sets[0]["results"].as_array().unwrap();
    let names: Vec<&str> = results
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["00-cpuinfo", "10-disks"]);
    assert_eq!(results[0]["status_name"], "Passed");
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(results[0]["stdout"].as_str().unwrap())
            .unwrap(),
        cpuinfo
    );
    assert_eq!(
        (
            results[1]["exit_status"].as_i64(),
            results[1]["status_name"].as_str()
        ),
        (Some(2), Some("Failed"))
    );
    let one = json_of(&get(
        &lab,
        admin,
        &format!("{API}/nodes/{ready}/results/current-commissioning/?filters=10-disks"),
    ));
    assert_eq!(one["results"].as_array().map(Vec::len), Some(1));
    assert!(
        one["results"][0].get("output").is_none(),
        "output only when asked"
    );
    assert_eq!(
        get(&lab, admin, &format!("{API}/nodes/{ready}/results/999999/")).status,
        404
    );
    assert_eq!(
        get(
            &lab,
            admin,
            &format!("{API}/nodes/{ready}/results/?type=bogus")
        )
        .status,
        400
    );
    // Unknown statuses are refused, naming the field.
    let r = signal(&lab, &node, &[("op", "signal"), ("status", "MAYBE")], &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("status"), "{}", r.body);
    // Bob cannot read the results of a machine he cannot see.
    assert_eq!(
        get(
            &lab,
            Some(&lab.bob),
            &format!("{API}/nodes/{ready}/results/")
        )
        .status,
        403
    );
}

fn delete(lab: &Lab, who: &ApiToken, path: &str) -> Resp {
    request(
        lab.addr,
        "DELETE",
        path,
        &[("Authorization", &oauth(who))],
        b"",
    )
}

/// The item operations of the network and organisation objects: updates,
/// deletes, DHCP on a VLAN (refused without a rack or a dynamic range),
/// subnet statistics and free ranges, tokens, is_registered.
#[test]
fn network_and_organisation_items_change_and_refuse_by_name() {
    let (lab, _, _) = lab();
    let admin = &lab.admin;
    let s = json_of(&post(
        &lab,
        Some(admin),
        &format!("{API}/subnets/"),
        "cidr=10.20.0.0/24&gateway_ip=10.20.0.1",
    ));
    let (sid, fabric) = (
        s["id"].as_i64().unwrap(),
        s["vlan"]["fabric_id"].as_i64().unwrap(),
    );
    // A tagged VLAN, then DHCP on the untagged one.
    let v = json_of(&post(
        &lab,
        Some(admin),
        &format!("{API}/fabrics/{fabric}/vlans/"),
        "vid=42&name=storage&mtu=9000",
    ));
    assert_eq!(
        (v["vid"].as_i64(), v["mtu"].as_i64(), v["name"].as_str()),
        (Some(42), Some(9000), Some("storage"))
    );
    let r = post(
        &lab,
        Some(admin),
        &format!("{API}/fabrics/{fabric}/vlans/"),
        "vid=5000",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("vid"), "{}", r.body);
    let untagged = format!("{API}/fabrics/{fabric}/vlans/0/");
    let r = put(&lab, admin, &untagged, "dhcp_on=true");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("primary_rack"), "{}", r.body);
    let r = put(&lab, admin, &untagged, "dhcp_on=true&primary_rack=rack01");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("dynamic"), "{}", r.body);
    assert_eq!(
        post(
            &lab,
            Some(admin),
            &format!("{API}/ipranges/"),
            "type=dynamic&start_ip=10.20.0.100&end_ip=10.20.0.199"
        )
        .status,
        200
    );
    let on = json_of(&put(
        &lab,
        admin,
        &untagged,
        "dhcp_on=true&primary_rack=rack01",
    ));
    assert_eq!(
        (on["dhcp_on"].as_bool(), on["primary_rack"].as_str()),
        (Some(true), Some("rack01"))
    );
    // Subnet statistics and free ranges: 256 addresses; network, broadcast,
    // gateway and the 100 dynamic ones are not available.
    let st = json_of(&get(
        &lab,
        Some(admin),
        &format!("{API}/subnets/{sid}/?op=statistics&include_ranges=true"),
    ));
    assert_eq!(
        (st["total_addresses"].as_u64(), st["num_available"].as_u64()),
        (Some(256), Some(153))
    );
    assert_eq!(st["ranges"][0]["start"], "10.20.0.2");
    let free = json_of(&get(
        &lab,
        Some(admin),
        &format!("{API}/subnets/{sid}/?op=unreserved_ip_ranges"),
    ));
    assert_eq!(
        free,
        serde_json::json!([
            {"start": "10.20.0.2", "end": "10.20.0.99", "num_addresses": 98},
            {"start": "10.20.0.200", "end": "10.20.0.254", "num_addresses": 55},
        ])
    );
    let reserved = json_of(&get(
        &lab,
        Some(admin),
        &format!("{API}/subnets/{sid}/?op=reserved_ip_ranges"),
    ));
    assert!(
        reserved
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["purpose"] == serde_json::json!(["dynamic"])),
        "{reserved}"
    );
    let up = json_of(&put(
        &lab,
        admin,
        &format!("{API}/subnets/{sid}/"),
        "name=prov&dns_servers=10.20.0.2+10.20.0.3&gateway_ip=",
    ));
    assert_eq!(
        (up["name"].as_str(), up["gateway_ip"].clone()),
        (Some("prov"), serde_json::Value::Null)
    );
    assert_eq!(
        up["dns_servers"],
        serde_json::json!(["10.20.0.2", "10.20.0.3"])
    );
    let r = put(
        &lab,
        admin,
        &format!("{API}/subnets/{sid}/"),
        "gateway_ip=nowhere",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("gateway_ip"), "{}", r.body);
    assert_eq!(
        put(&lab, &lab.bob, &format!("{API}/subnets/{sid}/"), "name=x").status,
        403
    );
    // IP range and space items.
    let ranges = json_of(&get(&lab, Some(admin), &format!("{API}/ipranges/")));
    let rid = ranges[0]["id"].as_i64().unwrap();
    assert_eq!(
        json_of(&get(&lab, Some(admin), &format!("{API}/ipranges/{rid}/")))["start_ip"],
        "10.20.0.100"
    );
    let sp = json_of(&post(
        &lab,
        Some(admin),
        &format!("{API}/spaces/"),
        "name=dmz",
    ));
    assert_eq!(
        json_of(&get(&lab, Some(admin), &format!("{API}/spaces/dmz/")))["id"],
        sp["id"]
    );
    assert_eq!(
        delete(&lab, admin, &format!("{API}/spaces/{}/", sp["id"])).status,
        204
    );
    assert_eq!(
        get(&lab, Some(admin), &format!("{API}/spaces/dmz/")).status,
        404
    );
    // Zones and pools: rename, describe, delete; the defaults stay.
    assert_eq!(
        post(&lab, Some(admin), &format!("{API}/zones/"), "name=z1").status,
        200
    );
    let z = json_of(&put(
        &lab,
        admin,
        &format!("{API}/zones/z1/"),
        "name=z2&description=second",
    ));
    assert_eq!(
        (z["name"].as_str(), z["description"].as_str()),
        (Some("z2"), Some("second"))
    );
    assert_eq!(
        get(&lab, Some(admin), &format!("{API}/zones/z1/")).status,
        404
    );
    assert_eq!(
        put(&lab, admin, &format!("{API}/zones/default/"), "name=other").status,
        409
    );
    let p = json_of(&post(
        &lab,
        Some(admin),
        &format!("{API}/resourcepools/"),
        "name=gpu",
    ));
    let p2 = json_of(&put(
        &lab,
        admin,
        &format!("{API}/resourcepool/{}/", p["id"]),
        "description=GPUs",
    ));
    assert_eq!(p2["description"], "GPUs");
    assert_eq!(
        delete(&lab, admin, &format!("{API}/resourcepool/{}/", p["id"])).status,
        204
    );
    // Tokens: made, listed, deleted.
    let t = json_of(&post(
        &lab,
        Some(&lab.carol),
        &format!("{API}/account/?op=create_authorisation_token"),
        "name=ci",
    ));
    let key = t["token_key"].as_str().unwrap();
    let r = post(
        &lab,
        Some(&lab.carol),
        &format!("{API}/account/?op=delete_authorisation_token"),
        &format!("token_key={key}"),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let r = post(
        &lab,
        Some(&lab.carol),
        &format!("{API}/account/?op=delete_authorisation_token"),
        &format!("token_key={key}"),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // Enlistment's question, anonymously.
    let r = get(
        &lab,
        None,
        &format!("{API}/machines/?op=is_registered&mac_address=02:00:00:00:00:00"),
    );
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    let r = get(
        &lab,
        None,
        &format!("{API}/machines/?op=is_registered&mac_address=02:00:00:00:99:99"),
    );
    assert_eq!(r.body, "false");
    assert_eq!(
        get(
            &lab,
            None,
            &format!("{API}/machines/?op=is_registered&mac_address=zz")
        )
        .status,
        400
    );
}

/// `set_storage_layout`: checked against the machine's disks by
/// maas-curtin, stored with the machine, and what the curtin config
/// partitions.
#[test]
fn the_storage_layout_is_checked_stored_and_deployed() {
    let (lab, ready, _) = lab();
    let admin = &lab.admin;
    lab._rt.block_on(async {
        let mut m = lab.store.machine_get(&ready).await.unwrap();
        m.block_devices.push(maas_core::machine::BlockDevice::disk(
            "sda",
            100_000_000_000,
        ));
        m.block_devices.push(maas_core::machine::BlockDevice::disk(
            "sdb",
            200_000_000_000,
        ));
        m.hardware.firmware.kind = maas_core::machine::FirmwareKind::Uefi;
        lab.store.machine_update(&m).await.unwrap();
    });
    let item = format!("{API}/machines/{ready}/");
    let set = |form: &str| {
        post(
            &lab,
            Some(admin),
            &format!("{item}?op=set_storage_layout"),
            form,
        )
    };
    for (form, field) in [
        ("", "storage_layout"),
        ("storage_layout=zfs", "storage_layout"),
        ("storage_layout=flat&root_device=sdz", "root_device"),
        ("storage_layout=flat&vg_name=vg0", "vg_name"),
        ("storage_layout=lvm&root_size=10Q", "root_size"),
        ("storage_layout=flat&root_size=900G", "flat"),
    ] {
        let r = set(form);
        assert_eq!(r.status, 400, "{form}: {}", r.body);
        assert!(r.body.contains(field), "{form}: {}", r.body);
    }
    assert_eq!(
        post(
            &lab,
            Some(&lab.bob),
            &format!("{item}?op=set_storage_layout"),
            "storage_layout=lvm"
        )
        .status,
        403
    );
    let r = set("storage_layout=lvm&root_device=sdb&vg_name=vgdata&lv_size=50G");
    assert_eq!(r.status, 200, "{}", r.body);
    let curtin = get(&lab, Some(admin), &format!("{item}?op=get_curtin_config"));
    assert_eq!(curtin.status, 200, "{}", curtin.body);
    assert!(
        curtin.body.contains("vgdata"),
        "the lvm layout is what curtin gets: {}",
        curtin.body
    );
    assert!(curtin.body.contains("sdb"), "{}", curtin.body);
    // Not while the machine is busy.
    assert_eq!(
        post(&lab, Some(admin), &format!("{item}?op=commission"), "").status,
        200
    );
    let r = set("storage_layout=flat");
    assert_eq!(r.status, 409, "{}", r.body);
}

/// Block devices show what the layout puts on them; partitions, formats
/// and mounts edit the machine's plan (as a custom layout) and are what
/// the curtin config then partitions.
#[test]
fn partitions_filesystems_and_mounts_edit_the_plan() {
    let (lab, ready, _) = lab();
    let admin = &lab.admin;
    let (sda, sdb) = lab._rt.block_on(async {
        let mut m = lab.store.machine_get(&ready).await.unwrap();
        m.block_devices.push(maas_core::machine::BlockDevice::disk(
            "sda",
            100_000_000_000,
        ));
        m.block_devices
            .push(maas_core::machine::BlockDevice::disk("sdb", 50_000_000_000));
        m.hardware.firmware.kind = maas_core::machine::FirmwareKind::Uefi;
        let m = lab.store.machine_update(&m).await.unwrap();
        (
            m.block_devices[0].id.unwrap().0,
            m.block_devices[1].id.unwrap().0,
        )
    });
    let base = format!("{API}/nodes/{ready}/blockdevices");
    // The default (flat) layout: an EFI partition and root on sda.
    let d = json_of(&get(&lab, Some(admin), &format!("{base}/{sda}/")));
    assert_eq!(d["partition_table_type"], "GPT");
    let parts = d["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{d}");
    assert_eq!(parts[1]["filesystem"]["mount_point"], "/");
    assert_eq!(parts[1]["filesystem"]["fstype"], "ext4");
    let sum: u64 = parts.iter().map(|p| p["size"].as_u64().unwrap()).sum();
    assert!(sum <= 100_000_000_000 && sum > 99_000_000_000, "{sum}");
    // Two partitions on sdb: 10 GB, then the rest.
    let p1 = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/{sdb}/partitions/"),
        "size=10000000000",
    ));
    assert_eq!(
        (p1["id"].as_u64(), p1["size"].as_u64()),
        (Some(1), Some(10_000_000_000u64.div_ceil(1 << 20) << 20))
    );
    let p2 = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/{sdb}/partitions/"),
        "",
    ));
    assert_eq!(p2["id"], 2);
    let r = post(&lab, Some(admin), &format!("{base}/{sdb}/partitions/"), "");
    assert_eq!(r.status, 400, "a second rest partition: {}", r.body);
    let r = post(
        &lab,
        Some(admin),
        &format!("{base}/{sdb}/partitions/"),
        "size=90000000000",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("size"), "{}", r.body);
    let part = |n: u32| format!("{base}/{sdb}/partition/{n}");
    let f = json_of(&post(
        &lab,
        Some(admin),
        &format!("{}?op=format", part(1)),
        "fstype=xfs&label=srv",
    ));
    assert_eq!(
        (
            f["filesystem"]["fstype"].as_str(),
            f["filesystem"]["label"].as_str()
        ),
        (Some("xfs"), Some("srv"))
    );
    let r = post(
        &lab,
        Some(admin),
        &format!("{}?op=format", part(2)),
        "fstype=zfs",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("fstype"), "{}", r.body);
    let m = json_of(&post(
        &lab,
        Some(admin),
        &format!("{}?op=mount", part(1)),
        "mount_point=/srv&mount_options=noatime",
    ));
    assert_eq!(m["filesystem"]["mount_point"], "/srv");
    assert_eq!(m["used_for"], "xfs formatted filesystem mounted at /srv");
    assert_eq!(
        post(
            &lab,
            Some(admin),
            &format!("{}?op=format", part(2)),
            "fstype=ext4"
        )
        .status,
        200
    );
    let r = post(
        &lab,
        Some(admin),
        &format!("{}?op=mount", part(2)),
        "mount_point=/srv",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("mount_point"), "{}", r.body);
    assert_eq!(
        post(
            &lab,
            Some(admin),
            &format!("{}?op=mount", part(2)),
            "mount_point=/data"
        )
        .status,
        200
    );
    // The curtin config carries the edited plan.
    let curtin = get(
        &lab,
        Some(admin),
        &format!("{API}/machines/{ready}/?op=get_curtin_config"),
    );
    assert_eq!(curtin.status, 200, "{}", curtin.body);
    for want in ["/srv", "/data", "sdb-part2", "xfs"] {
        assert!(
            curtin.body.contains(want),
            "{want} missing: {}",
            curtin.body
        );
    }
    // Delete: refused while mounted; then the later partition moves down.
    assert_eq!(delete(&lab, admin, &part(1)).status, 409);
    assert_eq!(
        post(&lab, Some(admin), &format!("{}?op=unmount", part(1)), "").status,
        200
    );
    assert_eq!(delete(&lab, admin, &part(1)).status, 204);
    let moved = json_of(&get(&lab, Some(admin), &part(1)));
    assert_eq!(moved["filesystem"]["mount_point"], "/data");
    assert_eq!(get(&lab, Some(admin), &part(2)).status, 404);
    // A whole partitioned disk cannot be formatted; the machine list shows
    // the plan too.
    let r = post(
        &lab,
        Some(admin),
        &format!("{base}/{sdb}/?op=format"),
        "fstype=ext4",
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let listed = json_of(&get(&lab, Some(admin), &format!("{API}/machines/{ready}/")));
    assert_eq!(
        listed["blockdevice_set"][1]["partitions"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // Disks recorded by hand: checked, then listed.
    for (form, field) in [
        ("name=sdc", "size"),
        ("name=sdc&size=1000000000", "id_path"),
        ("name=sdc&size=1000000000&model=X", "id_path"),
        (
            "name=sdc&size=1000000000&id_path=/dev/disk/by-id/x&block_size=1000",
            "block_size",
        ),
        ("name=sda&size=1000000000&id_path=/dev/x", "name"),
    ] {
        let r = post(&lab, Some(admin), &format!("{base}/"), form);
        assert_eq!(r.status, 400, "{form}: {}", r.body);
        assert!(r.body.contains(field), "{form}: {}", r.body);
    }
    let sdc = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/"),
        "name=sdc&size=1000000000&model=QEMU&serial=Q1&tags=ssd",
    ));
    assert_eq!(
        (sdc["name"].as_str(), sdc["tags"][0].as_str()),
        (Some("sdc"), Some("ssd"))
    );
    assert_eq!(
        post(
            &lab,
            Some(&lab.bob),
            &format!("{base}/"),
            "name=sdd&size=1&id_path=/x"
        )
        .status,
        403
    );
    // Refusals: another user's machine, a busy machine.
    assert_eq!(
        post(
            &lab,
            Some(&lab.bob),
            &format!("{base}/{sdb}/partitions/"),
            ""
        )
        .status,
        403
    );
    assert_eq!(
        post(
            &lab,
            Some(admin),
            &format!("{API}/machines/{ready}/?op=commission"),
            ""
        )
        .status,
        200
    );
    assert_eq!(
        post(&lab, Some(admin), &format!("{base}/{sdb}/partitions/"), "").status,
        409
    );
}

/// Release with erase: Disk erasing until the ephemeral environment
/// signals; the `enable_disk_erasing_on_release` setting makes it the
/// default.
#[test]
fn release_with_erase_waits_for_the_erase_signal() {
    let (lab, ready, bobs) = lab();
    let admin = Some(&lab.admin);
    let token_of = |id: &SystemId| {
        let t = json_of(&get(
            &lab,
            admin,
            &format!("{API}/machines/{id}/?op=get_token"),
        ));
        ApiToken {
            consumer_key: t["consumer_key"].as_str().unwrap().into(),
            token_key: t["token_key"].as_str().unwrap().into(),
            token_secret: t["token_secret"].as_str().unwrap().into(),
            ..lab.admin.clone()
        }
    };
    let r = post(
        &lab,
        Some(&lab.bob),
        &format!("{API}/machines/{bobs}/?op=release"),
        "erase=true",
    );
    assert_eq!(json_of(&r)["status_name"], "Disk erasing");
    let node = token_of(&bobs);
    assert_eq!(
        signal(&lab, &node, &[("op", "signal"), ("status", "OK")], &[]).status,
        200
    );
    assert_eq!(
        json_of(&get(&lab, admin, &format!("{API}/machines/{bobs}/")))["status_name"],
        "Ready"
    );
    // Erasing by default.
    assert_eq!(
        post(
            &lab,
            admin,
            &format!("{API}/maas/?op=set_config"),
            "name=enable_disk_erasing_on_release&value=true"
        )
        .status,
        200
    );
    assert_eq!(
        post(
            &lab,
            Some(&lab.bob),
            &format!("{API}/machines/?op=allocate"),
            &format!("system_id={ready}")
        )
        .status,
        200
    );
    let r = post(
        &lab,
        Some(&lab.bob),
        &format!("{API}/machines/{ready}/?op=release"),
        "",
    );
    assert_eq!(json_of(&r)["status_name"], "Disk erasing");
    let node = token_of(&ready);
    let r = signal(
        &lab,
        &node,
        &[
            ("op", "signal"),
            ("status", "FAILED"),
            ("error", "sdb: write error"),
        ],
        &[],
    );
    assert_eq!(r.status, 200);
    let m = json_of(&get(&lab, admin, &format!("{API}/machines/{ready}/")));
    assert_eq!(
        (m["status_name"].as_str(), m["error_description"].as_str()),
        (Some("Failed disk erasing"), Some("sdb: write error"))
    );
}

/// Domains: read, update, the default (new machines go in it), delete
/// refused for the default and for a domain with machines.
#[test]
fn domains_change_and_the_default_is_used() {
    let (lab, _, _) = lab();
    let admin = &lab.admin;
    let d = json_of(&post(
        &lab,
        Some(admin),
        &format!("{API}/domains/"),
        "name=lab.example",
    ));
    let id = d["id"].as_i64().unwrap();
    assert_eq!(d["is_default"], false);
    let up = json_of(&put(
        &lab,
        admin,
        &format!("{API}/domains/{id}/"),
        "ttl=300&authoritative=false",
    ));
    assert_eq!(
        (up["ttl"].as_i64(), up["authoritative"].as_bool()),
        (Some(300), Some(false))
    );
    let r = put(&lab, admin, &format!("{API}/domains/{id}/"), "ttl=forever");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("ttl"), "{}", r.body);
    let def = json_of(&post(
        &lab,
        Some(admin),
        &format!("{API}/domains/{id}/?op=set_default"),
        "",
    ));
    assert_eq!(def["is_default"], true);
    let all = json_of(&get(&lab, Some(admin), &format!("{API}/domains/")));
    let defaults: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["is_default"] == true)
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(defaults, ["lab.example"]);
    let m = json_of(&post(
        &lab,
        Some(admin),
        &format!("{API}/machines/"),
        "architecture=amd64/generic&mac_addresses=02:00:00:00:07:01&hostname=web1&commission=false",
    ));
    assert_eq!(
        (m["fqdn"].as_str(), m["domain"]["name"].as_str()),
        (Some("web1.lab.example"), Some("lab.example"))
    );
    assert_eq!(
        delete(&lab, admin, &format!("{API}/domains/{id}/")).status,
        409,
        "the default"
    );
    let maas = all
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "maas")
        .unwrap()["id"]
        .clone();
    assert_eq!(
        post(
            &lab,
            Some(admin),
            &format!("{API}/domains/{maas}/?op=set_default"),
            ""
        )
        .status,
        200
    );
    let r = delete(&lab, admin, &format!("{API}/domains/{id}/"));
    assert_eq!(r.status, 409, "a machine is in it: {}", r.body);
    assert_eq!(
        put(&lab, &lab.bob, &format!("{API}/domains/{id}/"), "ttl=1").status,
        403
    );
}

/// Default gateways: the first link with a gateway serves until a link is
/// chosen (set_default_gateway, or link_subnet with default_gateway);
/// unlinking or clearing falls back.
#[test]
fn default_gateways_follow_the_chosen_link() {
    let (lab, ready, _) = lab();
    let admin = &lab.admin;
    let a = json_of(&post(
        &lab,
        Some(admin),
        &format!("{API}/subnets/"),
        "cidr=10.30.0.0/24&gateway_ip=10.30.0.1",
    ));
    let b = json_of(&post(
        &lab,
        Some(admin),
        &format!("{API}/subnets/"),
        "cidr=10.31.0.0/24&gateway_ip=10.31.0.1",
    ));
    let c = json_of(&post(
        &lab,
        Some(admin),
        &format!("{API}/subnets/"),
        "cidr=10.32.0.0/24",
    ));
    let base = format!("{API}/nodes/{ready}/interfaces");
    let item = format!("{API}/machines/{ready}/");
    let gw = || json_of(&get(&lab, Some(admin), &item))["default_gateways"]["ipv4"].clone();
    assert_eq!(
        gw(),
        serde_json::json!({"gateway_ip": null, "link_id": null})
    );
    let e0 = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/eth0/?op=link_subnet"),
        &format!("mode=STATIC&subnet={}", a["id"]),
    ));
    let e0_link = e0["links"][0]["id"].clone();
    assert_eq!(
        gw(),
        serde_json::json!({"gateway_ip": "10.30.0.1", "link_id": e0_link})
    );
    assert_eq!(
        post(
            &lab,
            Some(admin),
            &format!("{base}/?op=create_physical"),
            "mac_address=02:00:00:00:08:01&name=eth1"
        )
        .status,
        200
    );
    let e1 = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/eth1/?op=link_subnet"),
        &format!("mode=AUTO&subnet={}", b["id"]),
    ));
    assert_eq!(
        gw()["gateway_ip"],
        "10.30.0.1",
        "the first link still serves"
    );
    assert_eq!(
        post(
            &lab,
            Some(admin),
            &format!("{base}/eth1/?op=set_default_gateway"),
            ""
        )
        .status,
        200
    );
    assert_eq!(
        gw(),
        serde_json::json!({"gateway_ip": "10.31.0.1", "link_id": e1["links"][0]["id"]})
    );
    assert_eq!(
        post(
            &lab,
            Some(admin),
            &format!("{item}?op=clear_default_gateways"),
            ""
        )
        .status,
        200
    );
    assert_eq!(gw()["gateway_ip"], "10.30.0.1");
    // Chosen while linking; unlinking it falls back.
    let e1 = json_of(&post(
        &lab,
        Some(admin),
        &format!("{base}/eth1/?op=link_subnet"),
        &format!("mode=STATIC&subnet={}&default_gateway=true", b["id"]),
    ));
    let chosen = e1["links"][1]["id"].clone();
    assert_eq!(
        gw(),
        serde_json::json!({"gateway_ip": "10.31.0.1", "link_id": chosen})
    );
    assert_eq!(
        post(
            &lab,
            Some(admin),
            &format!("{base}/eth1/?op=unlink_subnet"),
            &format!("id={chosen}")
        )
        .status,
        200
    );
    assert_eq!(
        gw()["gateway_ip"],
        "10.30.0.1",
        "back to the first link with a gateway, eth0's"
    );
    // Refusals name the field.
    let r = post(
        &lab,
        Some(admin),
        &format!("{base}/eth1/?op=link_subnet"),
        &format!("mode=DHCP&subnet={}&default_gateway=true", b["id"]),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("default_gateway"), "{}", r.body);
    assert_eq!(
        post(
            &lab,
            Some(admin),
            &format!("{base}/?op=create_physical"),
            "mac_address=02:00:00:00:08:02&name=eth2"
        )
        .status,
        200
    );
    assert_eq!(
        post(
            &lab,
            Some(admin),
            &format!("{base}/eth2/?op=link_subnet"),
            &format!("mode=STATIC&subnet={}", c["id"])
        )
        .status,
        200
    );
    let r = post(
        &lab,
        Some(admin),
        &format!("{base}/eth2/?op=set_default_gateway"),
        "",
    );
    assert_eq!(r.status, 400, "a subnet without a gateway: {}", r.body);
}

/// Devices: made by a user, seen by their owner and admins, kept out of
/// machine lists and operations, with interfaces and links like machines.
#[test]
fn devices_are_tracked_apart_from_machines() {
    let (lab, _, bobs) = lab();
    let bob = &lab.bob;
    let d = json_of(&post(
        &lab,
        Some(bob),
        &format!("{API}/devices/"),
        &format!("mac_addresses=02:00:00:00:09:01&hostname=printer&parent={bobs}"),
    ));
    let did = d["system_id"].as_str().unwrap().to_owned();
    assert_eq!(
        (d["node_type"].as_i64(), d["node_type_name"].as_str()),
        (Some(1), Some("Device"))
    );
    assert_eq!(
        (d["owner"].as_str(), d["fqdn"].as_str()),
        (Some("bob"), Some("printer.maas"))
    );
    assert_eq!(d["parent"], bobs.to_string());
    assert_eq!(d["resource_uri"], format!("{API}/devices/{did}/"));
    assert!(d.get("status").is_none(), "no machine fields: {d}");
    let count = |who: &ApiToken, path: &str| {
        json_of(&get(&lab, Some(who), path))
            .as_array()
            .map(Vec::len)
    };
    assert_eq!(count(bob, &format!("{API}/devices/")), Some(1));
    assert_eq!(count(&lab.carol, &format!("{API}/devices/")), Some(0));
    assert_eq!(count(&lab.admin, &format!("{API}/devices/")), Some(1));
    assert_eq!(
        count(&lab.admin, &format!("{API}/machines/")),
        Some(2),
        "devices are not machines"
    );
    assert_eq!(
        get(&lab, Some(&lab.admin), &format!("{API}/machines/{did}/")).status,
        404
    );
    assert_eq!(
        post(
            &lab,
            Some(&lab.admin),
            &format!("{API}/machines/{did}/?op=commission"),
            ""
        )
        .status,
        404
    );
    assert_eq!(
        json_of(&get(&lab, Some(bob), &format!("{API}/nodes/{did}/")))["node_type"],
        1
    );
    // Interfaces and a static address, as for machines.
    let s = json_of(&post(
        &lab,
        Some(&lab.admin),
        &format!("{API}/subnets/"),
        "cidr=10.40.0.0/24",
    ));
    let l = json_of(&post(
        &lab,
        Some(bob),
        &format!("{API}/nodes/{did}/interfaces/eth0/?op=link_subnet"),
        &format!("mode=STATIC&subnet={}&ip_address=10.40.0.9", s["id"]),
    ));
    assert_eq!(l["links"][0]["ip_address"], "10.40.0.9");
    assert_eq!(
        json_of(&get(&lab, Some(bob), &format!("{API}/devices/{did}/")))["ip_addresses"],
        serde_json::json!(["10.40.0.9"])
    );
    // Changes: the owner yes, others no; a bad parent names itself.
    let up = json_of(&put(
        &lab,
        bob,
        &format!("{API}/devices/{did}/"),
        "hostname=printer2&description=2nd+floor",
    ));
    assert_eq!(
        (up["hostname"].as_str(), up["description"].as_str()),
        (Some("printer2"), Some("2nd floor"))
    );
    assert_eq!(
        put(
            &lab,
            &lab.carol,
            &format!("{API}/devices/{did}/"),
            "hostname=x"
        )
        .status,
        403
    );
    let r = put(&lab, bob, &format!("{API}/devices/{did}/"), "parent=zzzzzz");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("parent"), "{}", r.body);
    let r = post(
        &lab,
        Some(bob),
        &format!("{API}/devices/"),
        "hostname=nomac",
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("mac_addresses"), "{}", r.body);
    assert_eq!(
        get(
            &lab,
            None,
            &format!("{API}/machines/?op=is_registered&mac_address=02:00:00:00:09:01")
        )
        .body,
        "true"
    );
    assert_eq!(
        delete(&lab, bob, &format!("{API}/devices/{did}/")).status,
        204
    );
    assert_eq!(count(bob, &format!("{API}/devices/")), Some(0));
}

/// The reporting webhook (cloud-init and curtin): 204, events for starts
/// and failures, a failed top-level step fails the deployment, files become
/// installation results; and the curtin variant of user-data is the curtin
/// config.
#[test]
fn the_status_webhook_and_the_curtin_variant() {
    use base64::Engine;
    let (lab, ready, _) = lab();
    deployable(&lab, &ready);
    let admin = Some(&lab.admin);
    let item = format!("{API}/machines/{ready}/");
    assert_eq!(
        post(&lab, Some(&lab.bob), &format!("{item}?op=deploy"), "").status,
        200
    );
    let t = json_of(&get(&lab, admin, &format!("{item}?op=get_token")));
    let node = ApiToken {
        consumer_key: t["consumer_key"].as_str().unwrap().into(),
        token_key: t["token_key"].as_str().unwrap().into(),
        token_secret: t["token_secret"].as_str().unwrap().into(),
        ..lab.admin.clone()
    };
    let hook = format!("/MAAS/metadata/status/{ready}");
    let send = |who: Option<&ApiToken>, body: &str| {
        let auth = who.map(oauth);
        let h: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        request(lab.addr, "POST", &hook, &h, body.as_bytes())
    };
    assert_eq!(send(None, "{}").status, 401);
    assert_eq!(send(Some(&node), "not json").status, 400);
    assert_eq!(send(Some(&node), "{\"event_type\": \"start\", \"origin\": \"curtin\", \"name\": \"x\", \"description\": \"caf\u{e9}\"}").status, 400);
    assert_eq!(
        send(Some(&node), "{\"event_type\": \"start\"}").status,
        400,
        "required fields"
    );
    let r = send(
        Some(&node),
        r#"{"event_type": "start", "origin": "curtin", "name": "cmd-install", "description": "curtin command install"}"#,
    );
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let log = base64::engine::general_purpose::STANDARD.encode(b"partitioning sda\n");
    let r = send(
        Some(&node),
        &format!(
            r#"{{"event_type": "finish", "origin": "curtin", "name": "cmd-install/stage-partitioning", "description": "done", "result": "SUCCESS", "files": [{{"path": "/tmp/install.log", "encoding": "base64", "content": "{log}"}}]}}"#
        ),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let sets = json_of(&get(
        &lab,
        admin,
        &format!("{API}/nodes/{ready}/results/?type=installation&include_output=true"),
    ));
    let result = &sets[0]["results"][0];
    assert_eq!(result["name"], "install.log");
    assert_eq!(result["output"], log);
    assert_eq!(
        json_of(&get(&lab, admin, &item))["status_name"],
        "Deploying",
        "a sub-step's success changes nothing"
    );
    // The curtin variant of user-data is the curtin config; not anonymous.
    let c = get(
        &lab,
        Some(&node),
        "/MAAS/metadata/curtin/2012-03-01/user-data",
    );
    assert_eq!(c.status, 200, "{}", c.body);
    assert!(
        c.body.contains("storage:") && c.body.contains("reporting:"),
        "{}",
        c.body
    );
    assert_eq!(
        get(&lab, None, "/MAAS/metadata/curtin/2012-03-01/user-data").status,
        401
    );
    // A failed top-level step fails the deployment, and says why.
    let r = send(
        Some(&node),
        r#"{"event_type": "finish", "origin": "curtin", "name": "cmd-install", "description": "curtin command install", "result": "FAIL"}"#,
    );
    assert_eq!(r.status, 204);
    let m = json_of(&get(&lab, admin, &item));
    assert_eq!(m["status_name"], "Failed deployment");
    assert!(
        m["error_description"]
            .as_str()
            .unwrap()
            .contains("cmd-install"),
        "{m}"
    );
    let ev = json_of(&get(
        &lab,
        admin,
        &format!("{API}/events/?op=query&id={ready}&level=ERROR"),
    ));
    assert!(
        ev["events"][0]["description"]
            .as_str()
            .unwrap()
            .contains("cmd-install"),
        "{ev}"
    );
}

/// Commissioning's inventory (the agent's `maas-inventory` document)
/// updates the machine: CPU, memory, firmware, disks, NICs; a bad one is
/// refused naming the field; afterwards the machine deploys.
#[test]
fn the_commissioning_inventory_updates_the_machine() {
    let (lab, ready, _) = lab();
    let admin = Some(&lab.admin);
    let item = format!("{API}/machines/{ready}/");
    // Not commissioned yet: no network link, no storage; deploy says so.
    let r = post(&lab, Some(&lab.bob), &format!("{item}?op=deploy"), "");
    assert_eq!(
        (r.status, json_of(&r)["network"][0].as_str()),
        (400, Some("Node must be configured to use a network"))
    );
    let s = json_of(&post(
        &lab,
        admin,
        &format!("{API}/subnets/"),
        "cidr=192.168.122.0/24",
    ));
    assert_eq!(
        post(&lab, admin, &format!("{item}?op=commission"), "").status,
        200
    );
    let t = json_of(&get(&lab, admin, &format!("{item}?op=get_token")));
    let node = ApiToken {
        consumer_key: t["consumer_key"].as_str().unwrap().into(),
        token_key: t["token_key"].as_str().unwrap().into(),
        token_secret: t["token_secret"].as_str().unwrap().into(),
        ..lab.admin.clone()
    };
    let bad = br#"{"nics": [{"name": "eth9", "mac": "not-a-mac"}]}"#;
    let r = signal(
        &lab,
        &node,
        &[("op", "signal"), ("status", "WORKING")],
        &[("maas-inventory", bad)],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("mac"), "{}", r.body);
    let inv = br#"{"hardware": {"cpu": {"count": 2, "model": "QEMU Virtual CPU", "speed_mhz": 2400},
                               "memory_mib": 2048, "firmware": {"kind": "bios"},
                               "system": {"vendor": "QEMU", "product": "Standard PC"}},
                  "nics": [{"name": "ens3", "mac": "02:00:00:00:00:00", "link_speed_mbps": 1000, "link_connected": true,
                            "addresses": ["192.168.122.40/24"]}],
                  "disks": [{"name": "vda", "size_bytes": 8589934592, "serial": "disk0", "model": "QEMU HARDDISK"}]}"#;
    let r = signal(
        &lab,
        &node,
        &[("op", "signal"), ("status", "OK"), ("exit_status", "0")],
        &[("maas-inventory", inv)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let m = json_of(&get(&lab, admin, &item));
    assert_eq!(m["status_name"], "Ready");
    assert_eq!(
        (m["cpu_count"].as_u64(), m["memory"].as_u64()),
        (Some(2), Some(2048))
    );
    assert_eq!(m["hardware_info"]["system_vendor"], "QEMU");
    assert_eq!(m["blockdevice_set"][0]["name"], "vda");
    assert_eq!(m["blockdevice_set"][0]["size"], 8589934592u64);
    assert_eq!(m["interface_set"][0]["link_speed"], 1000);
    // Known firmware and a disk: the flat layout partitions vda.
    let parts = m["blockdevice_set"][0]["partitions"].as_array().unwrap();
    assert_eq!(
        parts.len(),
        2,
        "GRUB's BIOS boot partition, then root: {parts:?}"
    );
    assert_eq!(parts[1]["filesystem"]["mount_point"], "/");
    let c = get(&lab, admin, &format!("{item}?op=get_curtin_config"));
    assert_eq!(c.status, 200, "{}", c.body);
    assert!(c.body.contains("vda"), "{}", c.body);
    // The boot interface was linked (AUTO) to the subnet it booted on.
    let link = &m["interface_set"][0]["links"][0];
    assert_eq!(
        (link["mode"].as_str(), link["subnet"]["id"].clone()),
        (Some("auto"), s["id"].clone())
    );
    let r = post(&lab, Some(&lab.bob), &format!("{item}?op=deploy"), "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(json_of(&r)["status_name"], "Deploying");
}

/// Two regions on one database: a request replayed to the other region
/// (same nonce, within the timestamp window) is refused there too.
#[test]
fn a_nonce_used_at_one_region_is_refused_at_another() {
    let (lab, _, _) = lab();
    let other = lab._rt.block_on(async {
        let region = Region::new(lab.store.clone(), RegionConfig::default())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, maas_region::router(region))
                .await
                .unwrap();
        });
        addr
    });
    let header = oauth(&lab.admin);
    let h = [("Authorization", header.as_str())];
    let path = format!("{API}/users/?op=whoami");
    assert_eq!(request(lab.addr, "GET", &path, &h, b"").status, 200);
    let replay = request(other, "GET", &path, &h, b"");
    assert_eq!(replay.status, 401, "{}", replay.body);
    assert!(replay.body.contains("Nonce"), "{}", replay.body);
    // A fresh nonce is fine at either.
    let h2 = oauth(&lab.admin);
    assert_eq!(
        request(other, "GET", &path, &[("Authorization", h2.as_str())], b"").status,
        200
    );
}

/// Static routes: checked against their subnets, listed, changed, and
/// carried into the curtin config of machines on the source subnet.
#[test]
fn static_routes_are_checked_and_deployed() {
    let (lab, ready, _) = lab();
    deployable(&lab, &ready);
    let admin = &lab.admin;
    let dst = json_of(&post(
        &lab,
        Some(admin),
        &format!("{API}/subnets/"),
        "cidr=10.61.0.0/24",
    ));
    let base = format!("{API}/static-routes/");
    for (form, field) in [
        (
            format!(
                "source=10.250.0.0/24&destination={}&gateway_ip=10.9.9.9",
                dst["id"]
            ),
            "gateway_ip",
        ),
        (
            "source=10.250.0.0/24&destination=10.250.0.0/24&gateway_ip=10.250.0.254".to_owned(),
            "destination",
        ),
        (
            "source=nowhere&destination=10.61.0.0/24&gateway_ip=10.250.0.254".to_owned(),
            "source",
        ),
        (
            "source=10.250.0.0/24&gateway_ip=10.250.0.254".to_owned(),
            "destination",
        ),
    ] {
        let r = post(&lab, Some(admin), &base, &form);
        assert_eq!(r.status, 400, "{form}: {}", r.body);
        assert!(r.body.contains(field), "{form}: {}", r.body);
    }
    let route = json_of(&post(
        &lab,
        Some(admin),
        &base,
        "source=10.250.0.0/24&destination=10.61.0.0/24&gateway_ip=10.250.0.254&metric=5",
    ));
    assert_eq!(
        (route["gateway_ip"].as_str(), route["metric"].as_u64()),
        (Some("10.250.0.254"), Some(5))
    );
    assert_eq!(route["destination"]["cidr"], "10.61.0.0/24");
    assert_eq!(
        post(
            &lab,
            Some(&lab.bob),
            &base,
            "source=10.250.0.0/24&destination=10.61.0.0/24&gateway_ip=10.250.0.253"
        )
        .status,
        403
    );
    let id = route["id"].as_i64().unwrap();
    let up = json_of(&put(&lab, admin, &format!("{base}{id}/"), "metric=10"));
    assert_eq!(up["metric"], 10);
    assert_eq!(
        json_of(&get(&lab, Some(&lab.bob), &base))
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let curtin = get(
        &lab,
        Some(admin),
        &format!("{API}/machines/{ready}/?op=get_curtin_config"),
    );
    assert_eq!(curtin.status, 200, "{}", curtin.body);
    assert!(
        curtin.body.contains("10.61.0.0"),
        "the route reaches curtin: {}",
        curtin.body
    );
    assert_eq!(delete(&lab, admin, &format!("{base}{id}/")).status, 204);
    assert_eq!(get(&lab, Some(admin), &format!("{base}{id}/")).status, 404);
}
