//! The table of API resources and their operations. The dispatcher routes
//! with it and `describe/` is generated from it, so the description never
//! names an operation that is not served.

use serde_json::{Value, json};
use sha1::{Digest, Sha1};

/// One operation: `(method, op)`; `op` None is the CRUD verb.
pub(crate) struct Op {
    pub(crate) name: &'static str,
    pub(crate) method: &'static str,
    pub(crate) op: Option<&'static str>,
    /// Callable without credentials.
    pub(crate) anon: bool,
    pub(crate) doc: &'static str,
}

/// A resource: a URI template relative to `/MAAS/api/2.0/` and its operations.
pub(crate) struct Resource {
    /// Handler class name (python-libmaas binds its classes by it).
    pub(crate) name: &'static str,
    pub(crate) doc: &'static str,
    /// e.g. `machines/{system_id}/`.
    pub(crate) path: &'static str,
    pub(crate) ops: &'static [Op],
}

const fn crud(name: &'static str, method: &'static str, doc: &'static str) -> Op {
    Op {
        name,
        method,
        op: None,
        anon: false,
        doc,
    }
}

const fn op(name: &'static str, method: &'static str, doc: &'static str) -> Op {
    Op {
        name,
        method,
        op: Some(name),
        anon: false,
        doc,
    }
}

const fn anon(mut o: Op) -> Op {
    o.anon = true;
    o
}

/// Every resource served.
pub(crate) static RESOURCES: &[Resource] = &[
    Resource {
        name: "VersionHandler",
        doc: "Information about this MAAS: version and capabilities.",
        path: "version/",
        ops: &[anon(crud("read", "GET", "Version and capabilities."))],
    },
    Resource {
        name: "DescribeHandler",
        doc: "The description of this API.",
        path: "describe/",
        ops: &[anon(crud("read", "GET", "This document."))],
    },
    Resource {
        name: "MaasHandler",
        doc: "Manage the MAAS server's settings.",
        path: "maas/",
        ops: &[
            op("get_config", "GET", "A setting's value, as JSON (admin)."),
            op("set_config", "POST", "Set a setting (name, value; admin)."),
        ],
    },
    Resource {
        name: "MachinesHandler",
        doc: "Manage the collection of all the machines in the MAAS.",
        path: "machines/",
        ops: &[
            crud(
                "read",
                "GET",
                "List machines visible to the user, optionally filtered.",
            ),
            anon(crud(
                "create",
                "POST",
                "Create a new machine (admin); anonymously, enlist one (as the ephemeral environment does).",
            )),
            op(
                "allocate",
                "POST",
                "Allocate an available machine matching constraints.",
            ),
            op("release", "POST", "Release machines in bulk."),
            anon(op(
                "is_registered",
                "GET",
                "Whether a machine with this MAC exists (mac_address; anonymous, for enlistment).",
            )),
            op(
                "list_allocated",
                "GET",
                "List the machines allocated to the user.",
            ),
            op(
                "power_parameters",
                "GET",
                "Power parameters of machines (admin).",
            ),
        ],
    },
    Resource {
        name: "MachineHandler",
        doc: "Manage an individual machine.",
        path: "machines/{system_id}/",
        ops: &[
            crud("read", "GET", "Read a machine."),
            crud("update", "PUT", "Update a machine (admin)."),
            crud("delete", "DELETE", "Delete a machine (admin)."),
            op(
                "deploy",
                "POST",
                "Deploy an operating system to the machine.",
            ),
            op("release", "POST", "Release the machine."),
            op("commission", "POST", "Begin commissioning (admin)."),
            op("abort", "POST", "Abort the machine's current operation."),
            op("power_on", "POST", "Turn on the machine."),
            op("power_off", "POST", "Turn off the machine."),
            op("query_power_state", "GET", "The machine's power state."),
            op(
                "test",
                "POST",
                "Boot the ephemeral environment and run tests.",
            ),
            op(
                "rescue_mode",
                "POST",
                "Boot the ephemeral environment for rescue.",
            ),
            op(
                "exit_rescue_mode",
                "POST",
                "Leave rescue mode, back to the previous status.",
            ),
            op(
                "set_storage_layout",
                "POST",
                "Choose the storage layout (admin; storage_layout flat, lvm, bcache or blank; boot_size, root_size, root_device, vg_name, lv_name, lv_size, cache_device, cache_mode).",
            ),
            op(
                "clear_default_gateways",
                "POST",
                "Forget the chosen default gateways (the first links with a gateway serve).",
            ),
            op(
                "set_owner_data",
                "POST",
                "Set (key=value) or clear (key=) the owner's data.",
            ),
            op(
                "set_workload_annotations",
                "POST",
                "Set (key=value) or clear (key=) workload annotations.",
            ),
            op("mark_broken", "POST", "Mark the machine broken."),
            op("mark_fixed", "POST", "Mark a broken machine fixed (admin)."),
            op("lock", "POST", "Lock the machine against changes."),
            op("unlock", "POST", "Unlock the machine."),
            op("get_token", "GET", "The machine's node token (admin)."),
            op(
                "get_curtin_config",
                "GET",
                "The curtin config the machine deploys with.",
            ),
            op(
                "power_parameters",
                "GET",
                "The machine's power parameters (admin).",
            ),
        ],
    },
    Resource {
        name: "RackControllersHandler",
        doc: "Rack controllers registered with this region (read only).",
        path: "rackcontrollers/",
        ops: &[crud(
            "read",
            "GET",
            "List rack controllers (filters id, hostname), with their version and services.",
        )],
    },
    Resource {
        name: "RackControllerHandler",
        doc: "A rack controller (read only).",
        path: "rackcontrollers/{system_id}/",
        ops: &[crud("read", "GET", "Read a rack controller.")],
    },
    Resource {
        name: "DevicesHandler",
        doc: "Manage devices: nodes MAAS tracks addresses and DNS for, without provisioning them.",
        path: "devices/",
        ops: &[
            crud(
                "read",
                "GET",
                "List devices visible to the user (filters id, hostname, mac_address).",
            ),
            crud(
                "create",
                "POST",
                "Create a device (mac_addresses; hostname, domain, parent, zone, description).",
            ),
        ],
    },
    Resource {
        name: "DeviceHandler",
        doc: "Manage a device.",
        path: "devices/{system_id}/",
        ops: &[
            crud("read", "GET", "Read a device."),
            crud(
                "update",
                "PUT",
                "Update a device (hostname, domain, parent, zone, description).",
            ),
            crud("delete", "DELETE", "Delete a device."),
            op(
                "set_owner_data",
                "POST",
                "Set (key=value) or clear (key=) the owner's data.",
            ),
        ],
    },
    Resource {
        name: "NodesHandler",
        doc: "Manage the collection of all nodes.",
        path: "nodes/",
        ops: &[crud("read", "GET", "List nodes visible to the user.")],
    },
    Resource {
        name: "NodeHandler",
        doc: "Manage an individual node.",
        path: "nodes/{system_id}/",
        ops: &[crud("read", "GET", "Read a node.")],
    },
    Resource {
        name: "InterfacesHandler",
        doc: "Manage the interfaces of a node.",
        path: "nodes/{system_id}/interfaces/",
        ops: &[
            crud("read", "GET", "List the node's interfaces."),
            op(
                "create_physical",
                "POST",
                "Add a physical interface (mac_address; name, vlan, tags, mtu).",
            ),
            op(
                "create_bond",
                "POST",
                "Bond physical interfaces (name, parents; bond_mode, bond_miimon, ...).",
            ),
            op(
                "create_vlan",
                "POST",
                "A VLAN interface on a parent (vlan, parent).",
            ),
            op(
                "create_bridge",
                "POST",
                "A bridge over a parent (name or parent; bridge_type, bridge_stp, bridge_fd).",
            ),
        ],
    },
    Resource {
        name: "InterfaceHandler",
        doc: "Manage an interface of a node.",
        path: "nodes/{system_id}/interfaces/{id}/",
        ops: &[
            crud("read", "GET", "Read an interface."),
            crud(
                "update",
                "PUT",
                "Update an interface (name, mac_address, vlan, tags, mtu, bond_*, bridge_*, link state and speeds).",
            ),
            crud(
                "delete",
                "DELETE",
                "Delete an interface no other interface uses.",
            ),
            op(
                "link_subnet",
                "POST",
                "Link to a subnet (mode AUTO, DHCP, STATIC or LINK_UP; subnet; ip_address for STATIC).",
            ),
            op("unlink_subnet", "POST", "Remove a link (id)."),
            op(
                "set_default_gateway",
                "POST",
                "Route the machine's default traffic through this interface's link (link_id; default: its first link with a gateway).",
            ),
            op("disconnect", "POST", "Remove every link and the VLAN."),
        ],
    },
    Resource {
        name: "NodeScriptResultsHandler",
        doc: "The script results of a node, one set per commissioning, testing or installation run.",
        path: "nodes/{system_id}/results/",
        ops: &[crud(
            "read",
            "GET",
            "List result sets (type, include_output, filters).",
        )],
    },
    Resource {
        name: "NodeScriptResultHandler",
        doc: "One result set of a node (an id, or current-commissioning, current-testing, current-installation).",
        path: "nodes/{system_id}/results/{id}/",
        ops: &[crud(
            "read",
            "GET",
            "Read a result set (include_output, filters).",
        )],
    },
    Resource {
        name: "BlockDevicesHandler",
        doc: "Manage the block devices of a node.",
        path: "nodes/{system_id}/blockdevices/",
        ops: &[
            crud("read", "GET", "List the node's block devices."),
            crud(
                "create",
                "POST",
                "Record a physical disk (admin; name, size; model and serial, or id_path; block_size, tags).",
            ),
        ],
    },
    Resource {
        name: "BlockDeviceHandler",
        doc: "Manage a block device of a node.",
        path: "nodes/{system_id}/blockdevices/{id}/",
        ops: &[
            crud("read", "GET", "Read a block device."),
            op("format", "POST", "Format the whole device (fstype, label)."),
            op("unformat", "POST", "Remove the filesystem."),
            op(
                "mount",
                "POST",
                "Mount the device's filesystem (mount_point, mount_options).",
            ),
            op("unmount", "POST", "Unmount the device's filesystem."),
            op(
                "set_boot_disk",
                "POST",
                "Install the boot loader on this disk.",
            ),
            op("add_tag", "POST", "Tag the device (tag)."),
            op("remove_tag", "POST", "Untag the device (tag)."),
        ],
    },
    Resource {
        name: "PartitionsHandler",
        doc: "Manage the partitions of a block device.",
        path: "nodes/{system_id}/blockdevices/{device_id}/partitions/",
        ops: &[
            crud("read", "GET", "List the device's partitions."),
            crud(
                "create",
                "POST",
                "Add a partition (size in bytes, or the rest; bootable).",
            ),
        ],
    },
    Resource {
        name: "PartitionHandler",
        doc: "Manage a partition (no trailing slash, as MAAS).",
        path: "nodes/{system_id}/blockdevices/{device_id}/partition/{id}",
        ops: &[
            crud("read", "GET", "Read a partition."),
            crud(
                "delete",
                "DELETE",
                "Delete a partition (the later ones move down a number).",
            ),
            op("format", "POST", "Format the partition (fstype, label)."),
            op("unformat", "POST", "Remove the filesystem."),
            op(
                "mount",
                "POST",
                "Mount the partition's filesystem (mount_point, mount_options).",
            ),
            op("unmount", "POST", "Unmount the partition's filesystem."),
        ],
    },
    Resource {
        name: "TagsHandler",
        doc: "Manage the tags machines carry (constraints and kernel options).",
        path: "tags/",
        ops: &[
            crud("read", "GET", "List tags."),
            crud("create", "POST", "Create a tag (admin)."),
        ],
    },
    Resource {
        name: "TagHandler",
        doc: "Manage a tag.",
        path: "tags/{name}/",
        ops: &[
            crud("read", "GET", "Read a tag."),
            crud("delete", "DELETE", "Delete a tag (admin)."),
            op("nodes", "GET", "The machines carrying the tag."),
            op("machines", "GET", "The machines carrying the tag."),
            op(
                "update_nodes",
                "POST",
                "Add (add) and remove (remove) machines by system id (admin).",
            ),
        ],
    },
    Resource {
        name: "ZonesHandler",
        doc: "Manage availability zones.",
        path: "zones/",
        ops: &[
            crud("read", "GET", "List zones."),
            crud("create", "POST", "Create a zone (admin)."),
        ],
    },
    Resource {
        name: "ZoneHandler",
        doc: "Manage an availability zone.",
        path: "zones/{name}/",
        ops: &[
            crud("read", "GET", "Read a zone."),
            crud(
                "update",
                "PUT",
                "Rename or describe a zone (admin; name, description).",
            ),
            crud("delete", "DELETE", "Delete a zone (admin)."),
        ],
    },
    Resource {
        name: "ResourcePoolsHandler",
        doc: "Manage resource pools.",
        path: "resourcepools/",
        ops: &[
            crud("read", "GET", "List resource pools."),
            crud("create", "POST", "Create a resource pool (admin)."),
        ],
    },
    Resource {
        name: "ResourcePoolHandler",
        doc: "Manage a resource pool.",
        path: "resourcepool/{id}/",
        ops: &[
            crud("read", "GET", "Read a resource pool."),
            crud(
                "update",
                "PUT",
                "Rename or describe a resource pool (admin; name, description).",
            ),
            crud("delete", "DELETE", "Delete an empty resource pool (admin)."),
        ],
    },
    Resource {
        name: "FabricsHandler",
        doc: "Manage fabrics.",
        path: "fabrics/",
        ops: &[
            crud("read", "GET", "List fabrics."),
            crud(
                "create",
                "POST",
                "Create a fabric with its untagged VLAN (admin).",
            ),
        ],
    },
    Resource {
        name: "FabricHandler",
        doc: "Manage a fabric.",
        path: "fabrics/{id}/",
        ops: &[
            crud("read", "GET", "Read a fabric."),
            crud(
                "delete",
                "DELETE",
                "Delete a fabric with nothing on it (admin).",
            ),
        ],
    },
    Resource {
        name: "VlansHandler",
        doc: "Manage the VLANs of a fabric.",
        path: "fabrics/{fabric_id}/vlans/",
        ops: &[
            crud("read", "GET", "List the fabric's VLANs."),
            crud(
                "create",
                "POST",
                "Create a tagged VLAN (admin; vid, name, mtu, description).",
            ),
        ],
    },
    Resource {
        name: "VlanHandler",
        doc: "Manage a VLAN of a fabric.",
        path: "fabrics/{fabric_id}/vlans/{vid}/",
        ops: &[
            crud("read", "GET", "Read a VLAN."),
            crud(
                "update",
                "PUT",
                "Update a VLAN (admin; name, mtu, description, dhcp_on, primary_rack, secondary_rack, relay_vlan).",
            ),
        ],
    },
    Resource {
        name: "SubnetsHandler",
        doc: "Manage subnets.",
        path: "subnets/",
        ops: &[
            crud("read", "GET", "List subnets."),
            crud("create", "POST", "Create a subnet (admin)."),
        ],
    },
    Resource {
        name: "SubnetHandler",
        doc: "Manage a subnet.",
        path: "subnets/{id}/",
        ops: &[
            crud("read", "GET", "Read a subnet."),
            crud(
                "update",
                "PUT",
                "Update a subnet (admin; name, description, gateway_ip, dns_servers, managed, allow_dns, allow_proxy, active_discovery).",
            ),
            crud(
                "delete",
                "DELETE",
                "Delete a subnet no address is assigned in (admin).",
            ),
            op(
                "statistics",
                "GET",
                "Address usage (include_ranges for the free ranges).",
            ),
            op(
                "unreserved_ip_ranges",
                "GET",
                "The ranges free for static assignment.",
            ),
            op(
                "reserved_ip_ranges",
                "GET",
                "The dynamic and reserved ranges and the assigned addresses.",
            ),
            op(
                "ip_addresses",
                "GET",
                "The addresses assigned in the subnet.",
            ),
        ],
    },
    Resource {
        name: "IPRangesHandler",
        doc: "Manage the dynamic and reserved IP ranges of subnets.",
        path: "ipranges/",
        ops: &[
            crud("read", "GET", "List IP ranges."),
            crud(
                "create",
                "POST",
                "Create an IP range (admin): type, start_ip, end_ip, subnet, comment.",
            ),
        ],
    },
    Resource {
        name: "IPRangeHandler",
        doc: "Manage an IP range.",
        path: "ipranges/{id}/",
        ops: &[
            crud("read", "GET", "Read an IP range."),
            crud("delete", "DELETE", "Delete an IP range (admin)."),
        ],
    },
    Resource {
        name: "StaticRoutesHandler",
        doc: "Manage static routes.",
        path: "static-routes/",
        ops: &[
            crud("read", "GET", "List static routes."),
            crud(
                "create",
                "POST",
                "Create a static route (admin; source, destination, gateway_ip, metric).",
            ),
        ],
    },
    Resource {
        name: "StaticRouteHandler",
        doc: "Manage a static route.",
        path: "static-routes/{id}/",
        ops: &[
            crud("read", "GET", "Read a static route."),
            crud(
                "update",
                "PUT",
                "Update a static route (admin; source, destination, gateway_ip, metric).",
            ),
            crud("delete", "DELETE", "Delete a static route (admin)."),
        ],
    },
    Resource {
        name: "SpacesHandler",
        doc: "Manage spaces.",
        path: "spaces/",
        ops: &[
            crud("read", "GET", "List spaces."),
            crud("create", "POST", "Create a space (admin)."),
        ],
    },
    Resource {
        name: "SpaceHandler",
        doc: "Manage a space.",
        path: "spaces/{id}/",
        ops: &[
            crud("read", "GET", "Read a space."),
            crud("delete", "DELETE", "Delete a space (admin)."),
        ],
    },
    Resource {
        name: "DomainsHandler",
        doc: "Manage DNS domains.",
        path: "domains/",
        ops: &[
            crud("read", "GET", "List domains."),
            crud("create", "POST", "Create a domain (admin)."),
        ],
    },
    Resource {
        name: "DomainHandler",
        doc: "Manage a DNS domain.",
        path: "domains/{id}/",
        ops: &[
            crud("read", "GET", "Read a domain."),
            crud(
                "update",
                "PUT",
                "Update a domain (admin; name, authoritative, ttl).",
            ),
            crud(
                "delete",
                "DELETE",
                "Delete a domain no machine is in (admin; not the default).",
            ),
            op(
                "set_default",
                "POST",
                "Make this the domain new machines go in (admin).",
            ),
        ],
    },
    Resource {
        name: "UsersHandler",
        doc: "Manage the user accounts of this MAAS.",
        path: "users/",
        ops: &[
            crud("read", "GET", "List users."),
            op("whoami", "GET", "The user making the request."),
        ],
    },
    Resource {
        name: "UserHandler",
        doc: "Manage a user account.",
        path: "users/{username}/",
        ops: &[crud("read", "GET", "Read a user.")],
    },
    Resource {
        name: "EventsHandler",
        doc: "Retrieve filtered node events.",
        path: "events/",
        ops: &[op(
            "query",
            "GET",
            "List node events, newest first, optionally filtered.",
        )],
    },
    Resource {
        name: "AccountHandler",
        doc: "Manage the current logged-in user.",
        path: "account/",
        ops: &[
            op("create_authorisation_token", "POST", "Create an API token."),
            op(
                "list_authorisation_tokens",
                "GET",
                "List the user's API tokens.",
            ),
            op(
                "delete_authorisation_token",
                "POST",
                "Delete one of the user's API tokens (token_key).",
            ),
        ],
    },
];

/// The resource whose template matches `path` (relative to the API root),
/// with the template's parameters.
pub(crate) fn route(path: &str) -> Option<(&'static Resource, Vec<(&'static str, String)>)> {
    let segs: Vec<&str> = path.split('/').collect();
    'res: for r in RESOURCES {
        let tpl: Vec<&str> = r.path.split('/').collect();
        if tpl.len() != segs.len() {
            continue;
        }
        let mut params = Vec::new();
        for (t, s) in tpl.iter().zip(&segs) {
            if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                if s.is_empty() {
                    continue 'res;
                }
                let value = percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned();
                params.push((name, value));
            } else if t != s {
                continue 'res;
            }
        }
        return Some((r, params));
    }
    None
}

fn handler_json(r: &Resource, base: &str) -> Value {
    let params: Vec<&str> = r
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect();
    let mut actions: Vec<Value> = r
        .ops
        .iter()
        .map(|o| {
            json!({
                "name": o.name,
                "method": o.method,
                "op": o.op,
                "restful": o.op.is_none(),
                "doc": o.doc,
            })
        })
        .collect();
    actions.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({
        "name": r.name,
        "doc": r.doc,
        "params": params,
        "path": format!("/MAAS/api/2.0/{}", r.path),
        "uri": format!("{base}/MAAS/api/2.0/{}", r.path),
        "actions": actions,
    })
}

/// The `describe/` document, URIs built on `base` (`http://host:port`).
pub(crate) fn describe(base: &str) -> Value {
    let mut resources: Vec<&Resource> = RESOURCES.iter().collect();
    resources.sort_by_key(|r| r.name);
    let anon_only = |r: &Resource| r.ops.iter().all(|o| o.anon);
    let res: Vec<Value> = resources
        .iter()
        .map(|r| {
            let h = handler_json(r, base);
            if anon_only(r) {
                json!({ "name": r.name, "anon": h, "auth": null })
            } else {
                json!({ "name": r.name, "anon": null, "auth": h })
            }
        })
        .collect();
    let handlers: Vec<Value> = res
        .iter()
        .filter_map(|r| r.get("anon").filter(|v| !v.is_null()).cloned())
        .chain(
            res.iter()
                .filter_map(|r| r.get("auth").filter(|v| !v.is_null()).cloned()),
        )
        .collect();
    json!({
        "doc": "MAAS API",
        "hash": api_hash(),
        "resources": res,
        "handlers": handlers,
    })
}

/// A stable hash of the resource table (sent as `X-MAAS-API-Hash`).
pub(crate) fn api_hash() -> String {
    let mut h = Sha1::new();
    for r in RESOURCES {
        h.update(r.name.as_bytes());
        h.update(r.path.as_bytes());
        for o in r.ops {
            h.update(o.method.as_bytes());
            h.update(o.op.unwrap_or("").as_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_route_and_keep_their_parameters() {
        let (r, p) = route("machines/abc123/").unwrap();
        assert_eq!(r.name, "MachineHandler");
        assert_eq!(p, [("system_id", "abc123".to_owned())]);
        assert_eq!(route("machines/").unwrap().0.name, "MachinesHandler");
        let (r, p) = route("fabrics/1/vlans/0/").unwrap();
        assert_eq!(r.name, "VlanHandler");
        assert_eq!(p.len(), 2);
        assert!(route("machines").is_none(), "no trailing slash: 404");
        assert!(route("machines//").is_none());
        assert!(route("nope/").is_none());
    }

    #[test]
    fn describe_lists_sorted_resources_with_absolute_uris() {
        let d = describe("http://10.0.0.2:5240");
        let names: Vec<&str> = d["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let machine = d["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "MachineHandler")
            .unwrap();
        assert_eq!(machine["auth"]["params"], json!(["system_id"]));
        assert_eq!(
            machine["auth"]["uri"],
            "http://10.0.0.2:5240/MAAS/api/2.0/machines/{system_id}/"
        );
        let read = machine["auth"]["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "read")
            .unwrap();
        assert_eq!(read["restful"], true);
        assert_eq!(read["op"], Value::Null);
        assert_eq!(d["hash"].as_str().unwrap().len(), 40);
    }
}
