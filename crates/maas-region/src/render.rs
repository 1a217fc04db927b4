//! JSON representations (section 4 of the spec): the keys and JSON types
//! strict clients check (gomaasapi's required keys, python-libmaas's types).

use std::collections::HashMap;

use maas_core::account::User;
use maas_core::machine::{Interface, Machine};
use maas_core::network::{Fabric, Subnet, Vlan};
use maas_core::org::{ResourcePool, Zone};
use serde_json::{Value, json};

use crate::Region;
use crate::error::ApiError;

const API: &str = "/MAAS/api/2.0";

/// What rendering machines needs besides the machines: zones, pools and the
/// network model, read once per request. Comparable, so cached renderings
/// know whether they are still current.
#[derive(PartialEq)]
pub(crate) struct Ctx {
    zones: HashMap<String, Zone>,
    pools: HashMap<String, ResourcePool>,
    vlans: HashMap<i64, Vlan>,
    fabrics: HashMap<i64, Fabric>,
    subnets: HashMap<i64, Subnet>,
    /// What machines without a layout of their own have on their disks.
    default_layout: maas_curtin::StorageLayout,
    domains: HashMap<String, maas_core::org::Domain>,
    default_domain: String,
}

impl Ctx {
    pub(crate) async fn load(region: &Region) -> Result<Ctx, ApiError> {
        let s = region.store();
        Ok(Ctx {
            zones: s
                .zone_list()
                .await?
                .into_iter()
                .map(|z| (z.name.clone(), z))
                .collect(),
            pools: s
                .pool_list()
                .await?
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
            vlans: s
                .vlan_list(None)
                .await?
                .into_iter()
                .map(|v| (v.id.0, v))
                .collect(),
            fabrics: s
                .fabric_list()
                .await?
                .into_iter()
                .map(|f| (f.id.0, f))
                .collect(),
            subnets: s
                .subnet_list()
                .await?
                .into_iter()
                .map(|n| (n.id.0, n))
                .collect(),
            default_layout: region.default_layout().await?,
            domains: s
                .domain_list()
                .await?
                .into_iter()
                .map(|d| (d.name.clone(), d))
                .collect(),
            default_domain: region.default_domain().await?,
        })
    }

    fn zone(&self, name: &str) -> Value {
        match self.zones.get(name) {
            Some(z) => zone(z),
            None => json!({"id": 0, "name": name, "description": "",
                "resource_uri": format!("{API}/zones/{name}/")}),
        }
    }

    fn pool(&self, name: &str) -> Value {
        match self.pools.get(name) {
            Some(p) => pool(p),
            None => json!({"id": 0, "name": name, "description": "",
                "resource_uri": format!("{API}/resourcepool/0/")}),
        }
    }

    pub(crate) fn vlan(&self, v: &Vlan) -> Value {
        let fabric = self
            .fabrics
            .get(&v.fabric.0)
            .map(|f| f.name.clone())
            .unwrap_or_default();
        json!({
            "id": v.id.0,
            "name": v.name.clone().unwrap_or_else(|| if v.vid == 0 { "untagged".into() } else { v.vid.to_string() }),
            "vid": v.vid,
            "fabric": fabric,
            "fabric_id": v.fabric.0,
            "mtu": v.mtu,
            "primary_rack": v.primary_rack,
            "secondary_rack": v.secondary_rack,
            "dhcp_on": v.dhcp_on,
            "external_dhcp": null,
            "relay_vlan": v.relay_vlan.and_then(|r| self.vlans.get(&r.0)).map(|r| json!({"id": r.id.0, "vid": r.vid})),
            "space": "undefined",
            "resource_uri": format!("{API}/vlans/{}/", v.id.0),
        })
    }

    pub(crate) fn subnet(&self, s: &Subnet) -> Value {
        json!({
            "id": s.id.0,
            "name": s.name,
            "description": s.description,
            "vlan": self.vlans.get(&s.vlan.0).map(|v| self.vlan(v)),
            "space": "undefined",
            "cidr": s.cidr.to_string(),
            "gateway_ip": s.gateway_ip.map(|g| g.to_string()),
            "dns_servers": s.dns_servers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "rdns_mode": 2,
            "active_discovery": s.active_discovery,
            "allow_dns": s.allow_dns,
            "allow_proxy": s.allow_proxy,
            "managed": s.managed,
            "disabled_boot_architectures": [],
            "resource_uri": format!("{API}/subnets/{}/", s.id.0),
        })
    }

    pub(crate) fn fabric(&self, f: &Fabric) -> Value {
        let mut vlans: Vec<&Vlan> = self.vlans.values().filter(|v| v.fabric == f.id).collect();
        vlans.sort_by_key(|v| v.vid);
        json!({
            "id": f.id.0,
            "name": f.name,
            "class_type": f.class_type,
            "vlans": vlans.into_iter().map(|v| self.vlan(v)).collect::<Vec<_>>(),
            "resource_uri": format!("{API}/fabrics/{}/", f.id.0),
        })
    }

    pub(crate) fn vlans_of(&self, fabric: i64) -> Vec<&Vlan> {
        let mut v: Vec<&Vlan> = self
            .vlans
            .values()
            .filter(|v| v.fabric.0 == fabric)
            .collect();
        v.sort_by_key(|v| v.vid);
        v
    }

    pub(crate) fn fabrics(&self) -> Vec<&Fabric> {
        let mut f: Vec<&Fabric> = self.fabrics.values().collect();
        f.sort_by_key(|f| f.id.0);
        f
    }

    pub(crate) fn subnets(&self) -> Vec<&Subnet> {
        let mut s: Vec<&Subnet> = self.subnets.values().collect();
        s.sort_by_key(|s| s.id.0);
        s
    }

    pub(crate) fn ip_range(&self, x: &maas_core::network::IpRange) -> Value {
        json!({
            "id": x.id.0,
            "type": x.kind.as_str(),
            "start_ip": x.start.to_string(),
            "end_ip": x.end.to_string(),
            "comment": x.comment,
            "user": null,
            "subnet": self.subnets.get(&x.subnet.0).map(|s| self.subnet(s)),
            "resource_uri": format!("{API}/ipranges/{}/", x.id.0),
        })
    }

    pub(crate) fn subnet_by_id(&self, id: i64) -> Option<&Subnet> {
        self.subnets.get(&id)
    }

    pub(crate) fn interface(&self, m: &Machine, i: &Interface) -> Value {
        let id = i.id.map_or(0, |x| x.0);
        let mut children: Vec<&str> = m
            .interfaces
            .iter()
            .filter(|c| c.parents.contains(&i.name))
            .map(|c| c.name.as_str())
            .collect();
        children.sort_unstable();
        let mut parents = i.parents.clone();
        parents.sort();
        let links: Vec<Value> = i
            .links
            .iter()
            .map(|l| {
                let mut v = json!({
                    "id": l.id.map_or(0, |x| x.0),
                    "mode": l.mode.as_str(),
                });
                if let Some(ip) = l.ip {
                    v["ip_address"] = json!(ip.to_string());
                }
                if let Some(s) = l.subnet.and_then(|s| self.subnets.get(&s.0)) {
                    v["subnet"] = self.subnet(s);
                }
                v
            })
            .collect();
        json!({
            "id": id,
            "system_id": m.system_id.to_string(),
            "name": i.name,
            "type": i.kind.as_str(),
            "vlan": i.vlan.and_then(|v| self.vlans.get(&v.0)).map(|v| self.vlan(v)),
            "mac_address": i.mac.map(|m| m.to_string()),
            "parents": parents,
            "children": children,
            "tags": i.tags,
            "enabled": i.enabled,
            "links": links,
            "params": if i.params.is_empty() { json!("") } else { json!(i.params) },
            "discovered": null,
            "effective_mtu": i.vlan.and_then(|v| self.vlans.get(&v.0)).map_or(1500, |v| v.mtu),
            "vendor": i.vendor,
            "product": i.product,
            "firmware_version": null,
            "link_connected": i.link_connected,
            "interface_speed": i.interface_speed_mbps,
            "link_speed": i.link_speed_mbps,
            "numa_node": 0,
            "sriov_max_vf": 0,
            "resource_uri": format!("{API}/nodes/{}/interfaces/{id}/", m.system_id),
        })
    }

    /// The default route of one family: the chosen link, else the first
    /// link whose subnet has a gateway of that family.
    pub(crate) fn gateway(&self, m: &Machine, ipv4: bool) -> Value {
        let chosen = if ipv4 {
            m.gateway_links.ipv4
        } else {
            m.gateway_links.ipv6
        };
        let links = m.interfaces.iter().flat_map(|i| i.links.iter());
        let with_gateway = |l: &&maas_core::machine::InterfaceLink| {
            l.subnet
                .and_then(|s| self.subnets.get(&s.0))
                .and_then(|s| s.gateway_ip)
                .is_some_and(|g| g.is_ipv4() == ipv4)
        };
        let link = match chosen {
            Some(id) => links
                .clone()
                .find(|l| l.id == Some(id))
                .filter(with_gateway),
            None => None,
        }
        .or_else(|| links.clone().find(with_gateway));
        match link {
            Some(l) => json!({
                "gateway_ip": l.subnet.and_then(|s| self.subnets.get(&s.0)).and_then(|s| s.gateway_ip).map(|g| g.to_string()),
                "link_id": l.id.map(|x| x.0),
            }),
            None => json!({"gateway_ip": null, "link_id": null}),
        }
    }

    /// A machine as `MachineHandler` renders it.
    pub(crate) fn machine(&self, m: &Machine) -> Value {
        let sid = m.system_id.to_string();
        let interfaces: Vec<Value> = m.interfaces.iter().map(|i| self.interface(m, i)).collect();
        let boot = m
            .boot_interface
            .as_ref()
            .and_then(|b| m.interfaces.iter().find(|i| &i.name == b))
            .or_else(|| m.interfaces.first())
            .map(|i| self.interface(m, i));
        let plan = crate::blockdevs::plan_of(m, &self.default_layout);
        let disks: Vec<Value> = m
            .block_devices
            .iter()
            .map(|d| crate::blockdevs::block_device(m, d, plan.as_ref()))
            .collect();
        let ips: Vec<String> = m
            .interfaces
            .iter()
            .flat_map(|i| i.links.iter().filter_map(|l| l.ip.map(|ip| ip.to_string())))
            .collect();
        let storage_mb: f64 = m
            .block_devices
            .iter()
            .map(|d| d.size_bytes as f64 / 1e6)
            .sum();
        let hw = &m.hardware;
        let unknown = |s: &str| {
            if s.is_empty() {
                "Unknown".to_owned()
            } else {
                s.to_owned()
            }
        };
        json!({
            "resource_uri": format!("{API}/machines/{sid}/"),
            "system_id": sid,
            "hostname": m.hostname.to_string(),
            "description": m.description,
            "domain": match self.domains.get(m.domain.as_str()) {
                Some(d) => domain(d, &self.default_domain),
                None => json!({"id": 0, "name": m.domain.to_string(), "ttl": null, "authoritative": true,
                    "resource_record_count": 0, "is_default": false, "resource_uri": format!("{API}/domains/0/")}),
            },
            "fqdn": m.fqdn(),
            "owner": m.owner,
            "owner_data": m.owner_data,
            "workload_annotations": m.owner_data,
            "locked": m.locked,
            "architecture": m.architecture.to_string(),
            "min_hwe_kernel": "",
            "hwe_kernel": null,
            "cpu_count": hw.cpu.count,
            "cpu_speed": hw.cpu.speed_mhz,
            "memory": hw.memory_mib,
            "swap_size": null,
            "storage": storage_mb,
            "status": m.status.code(),
            "status_name": m.status.label(),
            "status_action": null,
            "status_message": null,
            "osystem": m.osystem,
            "distro_series": m.distro_series,
            "ephemeral_deploy": m.ephemeral_deploy,
            "error_description": m.error_description,
            "netboot": m.netboot,
            "power_type": m.power_type,
            "power_state": m.power_state.as_str(),
            "tag_names": m.tags.iter().collect::<Vec<_>>(),
            "address_ttl": null,
            "ip_addresses": ips,
            "interface_set": interfaces,
            "boot_interface": boot,
            "zone": self.zone(&m.zone),
            "pool": self.pool(&m.pool),
            "disable_ipv4": false,
            "boot_disk": disks.first().cloned(),
            "blockdevice_set": disks.clone(),
            "physicalblockdevice_set": disks,
            "virtualblockdevice_set": [],
            "volume_groups": [], "raids": [], "bcaches": [], "cache_sets": [],
            "special_filesystems": [],
            "node_type": 0,
            "node_type_name": "Machine",
            "parent": null,
            "default_gateways": {"ipv4": self.gateway(m, true), "ipv6": self.gateway(m, false)},
            "current_commissioning_result_id": null,
            "current_testing_result_id": null,
            "current_installation_result_id": null,
            "commissioning_status": -1, "commissioning_status_name": "Unknown",
            "testing_status": -1, "testing_status_name": "Unknown",
            "cpu_test_status": -1, "cpu_test_status_name": "Unknown",
            "memory_test_status": -1, "memory_test_status_name": "Unknown",
            "network_test_status": -1, "network_test_status_name": "Unknown",
            "storage_test_status": -1, "storage_test_status_name": "Unknown",
            "other_test_status": -1, "other_test_status_name": "Unknown",
            "interface_test_status": -1, "interface_test_status_name": "Unknown",
            "hardware_info": {
                "system_vendor": unknown(&hw.system.vendor),
                "system_product": unknown(&hw.system.product),
                "system_family": "Unknown",
                "system_version": "Unknown",
                "system_sku": "Unknown",
                "system_serial": unknown(&hw.system.serial),
                "cpu_model": unknown(&hw.cpu.model),
                "mainboard_vendor": "Unknown",
                "mainboard_product": "Unknown",
                "mainboard_serial": "Unknown",
                "mainboard_version": "Unknown",
                "mainboard_firmware_vendor": "Unknown",
                "mainboard_firmware_date": "Unknown",
                "mainboard_firmware_version": "Unknown",
                "chassis_vendor": "Unknown",
                "chassis_type": "Unknown",
                "chassis_serial": "Unknown",
                "chassis_version": "Unknown",
            },
            "numanode_set": [{"index": 0, "cores": (0..hw.cpu.count).collect::<Vec<_>>(),
                              "memory": hw.memory_mib, "hugepages_set": []}],
            "bios_boot_method": null,
            "hardware_uuid": null,
            "last_sync": null,
            "next_sync": null,
            "sync_interval": null,
            "enable_hw_sync": false,
        })
    }
}

pub(crate) fn zone(z: &Zone) -> Value {
    json!({
        "id": z.id.0,
        "name": z.name,
        "description": z.description,
        "resource_uri": format!("{API}/zones/{}/", z.name),
    })
}

pub(crate) fn pool(p: &ResourcePool) -> Value {
    json!({
        "id": p.id.0,
        "name": p.name,
        "description": p.description,
        "resource_uri": format!("{API}/resourcepool/{}/", p.id.0),
    })
}

pub(crate) fn space(s: &maas_core::network::Space) -> Value {
    json!({
        "id": s.id.0,
        "name": s.name,
        "description": s.description,
        "vlans": [],
        "subnets": [],
        "resource_uri": format!("{API}/spaces/{}/", s.id.0),
    })
}

pub(crate) fn domain(d: &maas_core::org::Domain, default: &str) -> Value {
    json!({
        "id": d.id.0,
        "name": d.name,
        "ttl": d.ttl,
        "authoritative": d.authoritative,
        "resource_record_count": 0,
        "is_default": d.name == default,
        "resource_uri": format!("{API}/domains/{}/", d.id.0),
    })
}

pub(crate) fn tag(t: &maas_core::org::Tag) -> Value {
    json!({
        "name": t.name,
        "definition": t.definition,
        "comment": t.comment,
        "kernel_opts": t.kernel_opts,
        "resource_uri": format!("{API}/tags/{}/", t.name),
    })
}

pub(crate) fn user(u: &User) -> Value {
    json!({
        "username": u.username,
        "email": u.email,
        "is_local": true,
        "is_superuser": u.is_admin,
        "resource_uri": format!("{API}/users/{}/", u.username),
    })
}
