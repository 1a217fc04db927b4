"""The provisioning cycle driven by python-libmaas 0.6.8 (and cloud-init's
MAAS datasource as the deployed machine) against a live maas-regiond.

Run by tests/python_libmaas.rs with: URL ADMIN_KEY BOB_PASSWORD CAROL_KEY.
Every check is an assert; the first failure exits non-zero with its message.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from maas.client import connect, login
from maas.client.enum import NodeStatus

URL, ADMIN_KEY, BOB_PASSWORD, CAROL_KEY = sys.argv[1:5]
ROOT = URL.rstrip("/")  # http://host:port/MAAS


def raw(method, path, key, data=None):
    """One request signed the way MAAS's in-image helper signs it (OAuth
    PLAINTEXT in the header), for what python-libmaas has no call for."""
    consumer, token, secret = key.split(":")
    header = (
        'OAuth oauth_version="1.0", oauth_signature_method="PLAINTEXT", '
        f'oauth_consumer_key="{consumer}", oauth_token="{token}", '
        f'oauth_signature="%26{secret}", oauth_nonce="{uuid.uuid4().hex}", '
        f'oauth_timestamp="{int(time.time())}"'
    )
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(ROOT + path, data=body, method=method)
    req.add_header("Authorization", header)
    if body is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    with urllib.request.urlopen(req) as r:
        return r.status, r.read()


admin = connect(URL, apikey=ADMIN_KEY)

# Networks: a fabric and a subnet, read back through python-libmaas.
st, _ = raw("POST", "/api/2.0/fabrics/", ADMIN_KEY, {"name": "fabric-lab"})
assert st == 200, st
st, body = raw(
    "POST",
    "/api/2.0/subnets/",
    ADMIN_KEY,
    {"cidr": "10.99.0.0/24", "fabric": "fabric-lab", "gateway_ip": "10.99.0.1",
     "dns_servers": "10.99.0.2"},
)
assert st == 200, (st, body)
subnets = admin.subnets.list()
assert [s.cidr for s in subnets] == ["10.99.0.0/24"], subnets
assert str(subnets[0].gateway_ip) == "10.99.0.1"
fabrics = admin.fabrics.list()
lab = [f for f in fabrics if f.name == "fabric-lab"]
assert lab and [v.vid for v in lab[0].vlans] == [0], fabrics
zones = [z.name for z in admin.zones.list()]
assert zones == ["default"], zones
st, body = raw("POST", "/api/2.0/ipranges/", ADMIN_KEY,
               {"type": "dynamic", "start_ip": "10.99.0.100", "end_ip": "10.99.0.199"})
assert st == 200, (st, body)
ranges = admin.ip_ranges.list()
assert [(str(r.start_ip), str(r.end_ip)) for r in ranges] == [("10.99.0.100", "10.99.0.199")], ranges
raw("POST", "/api/2.0/spaces/", ADMIN_KEY, {"name": "storage"})
assert "storage" in [sp.name for sp in admin.spaces.list()]
raw("POST", "/api/2.0/domains/", ADMIN_KEY, {"name": "lab.example"})
assert "lab.example" in [d.name for d in admin.domains.list()]

# Enlist three machines as an admin; each starts commissioning.
machines = []
for n in range(3):
    m = admin.machines.create(
        "amd64/generic",
        [f"52:54:00:aa:00:0{n}"],
        "manual",
        hostname=f"lab-node-{n}",
    )
    assert m.status == NodeStatus.COMMISSIONING, (m.hostname, m.status)
    machines.append(m)

def signal_with_files(node_key, fields, files):
    """op=signal as MAAS's script runner sends it: multipart, files as
    parts with a file name."""
    consumer, token, secret = node_key.split(":")
    boundary = uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for name, data in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    header = (
        'OAuth oauth_version="1.0", oauth_signature_method="PLAINTEXT", '
        f'oauth_consumer_key="{consumer}", oauth_token="{token}", '
        f'oauth_signature="%26{secret}", oauth_nonce="{uuid.uuid4().hex}", '
        f'oauth_timestamp="{int(time.time())}"'
    )
    req = urllib.request.Request(ROOT + "/metadata/2012-03-01/", data=body, method="POST")
    req.add_header("Authorization", header)
    req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    with urllib.request.urlopen(req) as r:
        return r.status, r.read()


# Each machine, as its ephemeral environment would, reports commissioning
# done with its node token (op=signal) and its inventory: Ready, with its
# disk and firmware known and its boot NIC linked to the subnet it booted on.
for n, m in enumerate(machines):
    st, body = raw("GET", f"/api/2.0/machines/{m.system_id}/?op=get_token", ADMIN_KEY)
    t = json.loads(body)
    node_key = f"{t['consumer_key']}:{t['token_key']}:{t['token_secret']}"
    inventory = {
        "hardware": {"cpu": {"count": 2}, "memory_mib": 4096, "firmware": {"kind": "bios"}},
        "nics": [{"name": "ens3", "mac": f"52:54:00:aa:00:0{n}", "addresses": [f"10.99.0.{50 + n}/24"]}],
        "disks": [{"name": "vda", "size_bytes": 20 * 1000**3}],
    }
    st, body = signal_with_files(node_key, {"op": "signal", "status": "OK", "exit_status": "0"},
                                 {"maas-inventory": json.dumps(inventory).encode()})
    assert st == 200, (st, body)
for m in machines:
    m.refresh()
    assert m.status == NodeStatus.READY, (m.hostname, m.status_name)

# A user logs in with username and password and sees the Ready machines.
bob = login(URL, username="bob", password=BOB_PASSWORD)
assert sorted(m.hostname for m in bob.machines.list()) == [
    "lab-node-0", "lab-node-1", "lab-node-2"]

# Allocation by constraints: a hostname and a zone.
mine = bob.machines.allocate(hostname="lab-node-1", zone="default")
assert mine.hostname == "lab-node-1" and mine.status == NodeStatus.ALLOCATED
assert mine.owner.username == "bob", mine.owner
# Nothing matches: python-libmaas turns the 409 into MachineNotFound.
try:
    bob.machines.allocate(hostname="no-such-node")
    raise AssertionError("allocating a missing machine succeeded")
except Exception as e:  # noqa: BLE001 - the exact class is python-libmaas's
    assert type(e).__name__ == "MachineNotFound", repr(e)

# Deploy with user data.
mine.deploy(distro_series="noble", user_data=b"#cloud-config\nruncmd: [echo hi]\n")
mine.refresh()
assert mine.status == NodeStatus.DEPLOYING, mine.status_name
assert mine.distro_series == "noble" and mine.osystem == "ubuntu"

# Another user does not see bob's machine, and cannot read it.
carol = connect(URL, apikey=CAROL_KEY)
visible = sorted(m.hostname for m in carol.machines.list())
assert visible == ["lab-node-0", "lab-node-2"], visible
try:
    carol.machines.get(mine.system_id)
    raise AssertionError("carol read bob's machine")
except Exception as e:  # noqa: BLE001
    assert "403" in str(e) or "permission" in str(e).lower(), repr(e)

# The deployed OS boots: cloud-init's MAAS datasource reads its meta-data
# and user-data with the node token, which ends the deployment.
st, body = raw("GET", f"/api/2.0/machines/{mine.system_id}/?op=get_token", ADMIN_KEY)
t = json.loads(body)
with tempfile.TemporaryDirectory() as d:
    cfg = os.path.join(d, "ds.cfg")
    with open(cfg, "w") as f:
        f.write(
            "datasource:\n  MAAS:\n"
            f"    metadata_url: {ROOT}/metadata/\n"
            f"    consumer_key: {t['consumer_key']}\n"
            f"    token_key: {t['token_key']}\n"
            f"    token_secret: {t['token_secret']}\n"
        )
    out = subprocess.run(
        ["/usr/bin/python3", "-m", "cloudinit.sources.DataSourceMAAS",
         "--config", cfg, "check-seed"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert mine.system_id in out.stdout, out.stdout
    assert "runcmd" in out.stdout, out.stdout
mine.refresh()
assert mine.status == NodeStatus.DEPLOYED, mine.status_name

# Release: manual power, so straight back to Ready, and the token changes.
mine.release(wait=True, wait_interval=1, comment="done")
assert mine.status == NodeStatus.READY, mine.status_name
assert mine.owner is None
st, body = raw("GET", f"/api/2.0/machines/{mine.system_id}/?op=get_token", ADMIN_KEY)
assert json.loads(body)["token_key"] != t["token_key"], "node token not rotated"

# Settings, through python-libmaas's MAAS object.
assert admin.maas.get_default_distro_series() == "noble"
admin.maas.set_default_distro_series("jammy")
assert admin.maas.get_default_distro_series() == "jammy"
admin.maas.set_default_distro_series("noble")

# A device with a MAC, listed apart from the machines.
dev = admin.devices.create(["52:54:00:dd:00:01"], hostname="switch-1")
assert dev.hostname == "switch-1", dev
assert [d.hostname for d in admin.devices.list()] == ["switch-1"]
assert "switch-1" not in [m.hostname for m in admin.machines.list()]

# Storage and interfaces of a Ready machine, with python-libmaas's objects.
from maas.client.enum import InterfaceType, LinkMode  # noqa: E402

spare = admin.machines.get(machines[2].system_id)
disk = spare.block_devices.create("sdb", model="QEMU", serial="QM0001",
                                  size=20 * 1000**3)
assert disk.name == "sdb" and disk.size == 20 * 1000**3, disk
part = disk.partitions.create(5 * 1000**3)
part.format("xfs")
part.mount("/srv")
spare.refresh()
sdb = [d for d in spare.block_devices if d.name == "sdb"][0]
assert [p.filesystem.mount_point for p in sdb.partitions] == ["/srv"], sdb.partitions
eth0 = spare.interfaces.get_by_name("eth0")
bond = spare.interfaces.create(InterfaceType.BOND, name="bond0", parents=[eth0],
                               bond_mode="active-backup")
assert bond.type == InterfaceType.BOND and [p.name for p in bond.parents] == ["eth0"]
subnet = [s for s in admin.subnets.list() if s.cidr == "10.99.0.0/24"][0]
link = bond.links.create(LinkMode.STATIC, subnet=subnet, ip_address="10.99.0.20",
                         default_gateway=True)
spare.refresh()
assert "10.99.0.20" in [str(ip) for ip in spare.ip_addresses], spare.ip_addresses

# Abort: commission again, then abort back to Ready... MAAS puts an aborted
# commissioning back where it came from.
other = admin.machines.get(machines[0].system_id)
st, _ = raw("POST", f"/api/2.0/machines/{other.system_id}/", ADMIN_KEY,
            {"op": "commission"})
other.refresh()
assert other.status == NodeStatus.COMMISSIONING, other.status_name
other.abort(comment="changed my mind")
assert other.status != NodeStatus.COMMISSIONING, other.status_name

print("python-libmaas flow: OK")
