#!/usr/bin/env python3
"""Seeds kelp's OpenStack test peer through the real APIs (run by peer.sh with the venv's python).

  seed.py identity STATE   Keystone: service users, catalogue, gpu-tenant + operator + app
                           credential, EGI federation (idp egi.eu, mapping, protocol openid, VO
                           project/group); writes STATE/standins-seed.json (images, networks) for
                           standins.py and STATE/seed-state.json (ids) for the next steps
  seed.py compute STATE    Nova: flavors + extra specs, quotas; waits for the compute host
  seed.py check STATE      Boots one server on `private`, waits ACTIVE, deletes it, waits gone,
                           checks no port is left, checks the EGI federation login; writes
                           STATE/peer.env
Uses plain HTTP (requests) against the APIs: no openstack CLI (~2.5 s a call).
"""
import base64
import json
import os
import sys
import time

import requests

KS = "http://127.0.0.1:5001/v3"
NOVA = "http://127.0.0.1:8774/v2.1"
NEUTRON = "http://127.0.0.1:9696"
GLANCE = "http://127.0.0.1:9292"
PLACEMENT = "http://127.0.0.1:8778"
REGION = "RegionOne"
EGI_VO = "vo.imagine-ai.eu"
EGI_ENTITLEMENT = "urn:mace:egi.eu:group:vo.imagine-ai.eu:role=member#aai.egi.eu"
EGI_ISSUER = "https://aai.egi.eu/auth/realms/egi"
NOVA_MV = {"OpenStack-API-Version": "compute 2.90", "X-OpenStack-Nova-API-Version": "2.90"}

# Fixed ids so that the fixtures are the same at every start.
IMG_2204 = "a1b2c3d4-2204-4000-8000-000000000001"
IMG_2404_OLD = "a1b2c3d4-2404-4000-8000-000000000002"
IMG_2404_NEW = "a1b2c3d4-2404-4000-8000-000000000003"
IMG_2404_QUEUED = "a1b2c3d4-2404-4000-8000-000000000004"
NET_PRIVATE = "b0000000-0000-4000-8000-00000000aa01"
SUBNET_PRIVATE = "b0000000-0000-4000-8000-00000000bb01"
NET_EGI_PRIVATE = "b0000000-0000-4000-8000-00000000aa02"
SUBNET_EGI_PRIVATE = "b0000000-0000-4000-8000-00000000bb02"
NET_PUBLIC = "b0000000-0000-4000-8000-00000000aa03"
SUBNET_PUBLIC = "b0000000-0000-4000-8000-00000000bb03"

ACCEL_T4 = {"Accelerator:Type": "GPU", "Accelerator:Number": "1", "Accelerator:Vendor": "NVIDIA",
            "Accelerator:Model": "Tesla T4", "Accelerator:Memory": "16GB"}
# name, vcpus, ram MB, disk GB, extra specs
FLAVORS = [
    ("m1.small", 2, 4096, 20, {}),
    ("m1.large", 8, 16384, 40, {}),
    ("gpu.t4", 8, 32768, 80, ACCEL_T4),
    ("gpu.a100x2", 16, 131072, 200, {"Accelerator:Type": "GPU", "Accelerator:Number": "2",
                                      "Accelerator:Vendor": "NVIDIA", "Accelerator:Model": "A100",
                                      "Accelerator:Memory": "80GB"}),
    ("gpu.v100-pci", 8, 65536, 80, {"pci_passthrough:alias": "V100:1"}),
    # Looks like gpu.t4 but asks Placement for 100000 VCPU (the fake host has 1000 x 16): every boot
    # ends in ERROR with fault "No valid host was found".
    ("gpu.huge-t4", 8, 32768, 80, dict(ACCEL_T4, **{"resources:VCPU": "100000"})),
]


def fail(msg):
    print("seed.py: " + msg, file=sys.stderr)
    sys.exit(1)


def check(r, *ok):
    if r.status_code not in (ok or (200, 201, 202, 204)):
        fail(f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:800]}")
    return r


def token(user, password, project, project_domain="Default", user_domain="Default"):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "password": password, "domain": {"name": user_domain}}}},
        "scope": {"project": {"name": project, "domain": {"name": project_domain}}}}}
    r = check(requests.post(KS + "/auth/tokens?nocatalog", json=body, timeout=60), 201)
    return r.headers["X-Subject-Token"], r.json()["token"]


class Api:
    def __init__(self, tok, base):
        self.h = {"X-Auth-Token": tok, "Accept": "application/json"}
        self.base = base

    def req(self, method, path, ok=(), headers=None, **kw):
        h = dict(self.h, **(headers or {}))
        r = requests.request(method, self.base + path, headers=h, timeout=60, **kw)
        return check(r, *ok) if ok is not None else r

    def get(self, path, **kw):
        return self.req("GET", path, **kw).json()

    def post(self, path, body, **kw):
        r = self.req("POST", path, json=body, **kw)
        return r.json() if r.content else {}

    def put(self, path, body, **kw):
        r = self.req("PUT", path, json=body, **kw)
        return r.json() if r.content else {}

    def delete(self, path, **kw):
        return self.req("DELETE", path, **kw)


def find(api, coll, name, key=None, **filters):
    key = key or coll
    q = dict(filters, name=name)
    items = api.get(f"/{coll}", params=q)[key]
    return items[0] if items else None


def ensure(api, coll, key, body, **filters):
    got = find(api, coll, body["name"], key=coll.split("/")[-1], **filters)
    if got:
        return got
    return api.post(f"/{coll}", {key: body})[key]


# ---------------------------------------------------------------------------------------------
def identity(state):
    tok, _ = token("admin", "adminpw", "admin")
    ks = Api(tok, KS)
    default = "default"
    roles = {}
    for name in ("admin", "member", "reader", "service"):
        roles[name] = ensure(ks, "roles", "role", {"name": name})["id"]

    service = ensure(ks, "projects", "project", {"name": "service", "domain_id": default})
    for user in ("nova", "placement", "neutron", "glance"):
        u = ensure(ks, "users", "user", {"name": user, "password": "servicepw", "domain_id": default})
        for role in ("admin", "service"):
            ks.put(f"/projects/{service['id']}/users/{u['id']}/roles/{roles[role]}", None)

    for stype, name, url in (("compute", "nova", NOVA), ("placement", "placement", PLACEMENT),
                             ("image", "glance", GLANCE), ("network", "neutron", NEUTRON)):
        svc = ks.post("/services", {"service": {"type": stype, "name": name, "enabled": True}})["service"]
        for iface in ("public", "internal"):
            ks.post("/endpoints", {"endpoint": {"service_id": svc["id"], "interface": iface, "url": url,
                                                "region_id": REGION, "enabled": True}})

    tenant = ensure(ks, "projects", "project", {"name": "gpu-tenant", "domain_id": default,
                                                "description": "kelp test tenant"})
    op = ensure(ks, "users", "user", {"name": "operator", "password": "userpw", "domain_id": default,
                                      "default_project_id": tenant["id"]})
    ks.put(f"/projects/{tenant['id']}/users/{op['id']}/roles/{roles['member']}", None)

    optok, _ = token("operator", "userpw", "gpu-tenant")
    appcred = Api(optok, KS).post(f"/users/{op['id']}/application_credentials", {"application_credential": {
        "name": "kelp-tests", "description": "kelp's OpenStack driver tests", "unrestricted": False}})[
        "application_credential"]

    # EGI Check-in federation: idp egi.eu, mapping VO entitlement -> group -> member on VO project.
    vo = ensure(ks, "projects", "project", {"name": EGI_VO, "domain_id": default,
                                            "description": "EGI VO " + EGI_VO})
    group = ensure(ks, "groups", "group", {"name": EGI_VO + "-members", "domain_id": default})
    ks.put(f"/projects/{vo['id']}/groups/{group['id']}/roles/{roles['member']}", None)
    ks.put("/OS-FEDERATION/identity_providers/egi.eu", {"identity_provider": {
        "remote_ids": [EGI_ISSUER], "enabled": True, "description": "EGI Check-in"}}, ok=(201,))
    with open(os.path.join(state, "etc/keystone/egi-mapping.json")) as f:
        rules = json.load(f)
    ks.put("/OS-FEDERATION/mappings/egi-mapping", {"mapping": {"rules": rules}}, ok=(201,))
    ks.put("/OS-FEDERATION/identity_providers/egi.eu/protocols/openid",
           {"protocol": {"mapping_id": "egi-mapping"}}, ok=(201,))

    ids = {"tenant": tenant["id"], "operator": op["id"], "appcred_id": appcred["id"],
           "appcred_secret": appcred["secret"], "egi_project": vo["id"], "service": service["id"]}
    with open(os.path.join(state, "seed-state.json"), "w") as f:
        json.dump(ids, f, indent=1)

    ubuntu = {"os_distro": "ubuntu", "os_type": "linux", "architecture": "x86_64"}
    images = [
        dict(ubuntu, id=IMG_2204, name="ubuntu-22.04", os_version="22.04", created_at="2024-01-15T10:00:00Z"),
        dict(ubuntu, id=IMG_2404_OLD, name="ubuntu-24.04", os_version="24.04", created_at="2024-05-02T10:00:00Z"),
        dict(ubuntu, id=IMG_2404_NEW, name="ubuntu-24.04", os_version="24.04", created_at="2025-02-10T10:00:00Z"),
        dict(ubuntu, id=IMG_2404_QUEUED, name="ubuntu-24.04", os_version="24.04", status="queued",
             created_at="2025-06-20T10:00:00Z"),
    ]
    net = lambda i, name, pid, **kw: dict(id=i, name=name, project_id=pid, **kw)
    sub = lambda i, name, nid, pid, cidr, **kw: dict(id=i, name=name, network_id=nid, project_id=pid,
                                                     cidr=cidr, ip_version=4, **kw)
    seed = {"images": images,
            "networks": [net(NET_PRIVATE, "private", tenant["id"]),
                         net(NET_EGI_PRIVATE, "private", vo["id"]),
                         net(NET_PUBLIC, "public", ids["service"], shared=True, **{"router:external": True})],
            "subnets": [sub(SUBNET_PRIVATE, "private-subnet", NET_PRIVATE, tenant["id"], "10.0.0.0/24"),
                        sub(SUBNET_EGI_PRIVATE, "private-subnet", NET_EGI_PRIVATE, vo["id"], "10.0.0.0/24"),
                        sub(SUBNET_PUBLIC, "public-subnet", NET_PUBLIC, ids["service"], "203.0.113.0/24",
                            enable_dhcp=False)]}
    with open(os.path.join(state, "standins-seed.json"), "w") as f:
        json.dump(seed, f, indent=1)
    print("identity seeded:", json.dumps({k: v for k, v in ids.items() if k != "appcred_secret"}))


# ---------------------------------------------------------------------------------------------
def dead_daemons(state):
    dead = []
    run = os.path.join(state, "run")
    for f in os.listdir(run):
        if f.endswith(".pgid"):
            try:
                os.kill(int(open(os.path.join(run, f)).read()), 0)
            except (OSError, ValueError):
                dead.append(f[:-5])
    return dead


def host_mapped(state):
    """True once nova-scheduler's periodic discover_hosts has mapped the compute host to cell1."""
    import sqlite3
    db = sqlite3.connect(f"file:{state}/db/nova_api.db?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT count(*) FROM host_mappings").fetchone()[0] > 0
    finally:
        db.close()


def compute(state):
    with open(os.path.join(state, "seed-state.json")) as f:
        ids = json.load(f)
    tok, _ = token("admin", "adminpw", "admin")
    nova = Api(tok, NOVA)
    nova.h.update(NOVA_MV)
    for name, vcpus, ram, disk, specs in FLAVORS:
        fl = nova.post("/flavors", {"flavor": {"name": name, "vcpus": vcpus, "ram": ram, "disk": disk,
                                               "os-flavor-access:is_public": True}})["flavor"]
        if specs:
            nova.post(f"/flavors/{fl['id']}/os-extra_specs", {"extra_specs": specs})
    for pid in (ids["tenant"], ids["egi_project"]):
        nova.put(f"/os-quota-sets/{pid}", {"quota_set": {"instances": 200, "cores": 10000, "ram": 100000000}})
    # The compute service must be up and have reported its resources to Placement.
    pl = Api(tok, PLACEMENT)
    pl.h["OpenStack-API-Version"] = "placement 1.39"
    end = time.time() + 120
    while True:
        svcs = nova.get("/os-services", params={"binary": "nova-compute"})["services"]
        rps = pl.get("/resource_providers")["resource_providers"]
        inv = pl.get(f"/resource_providers/{rps[0]['uuid']}/inventories")["inventories"] if rps else {}
        if any(s["state"] == "up" for s in svcs) and "VCPU" in inv and host_mapped(state):
            break
        dead = dead_daemons(state)
        if dead:
            fail(f"daemons exited: {dead} (see {state}/log/)")
        if time.time() > end:
            fail(f"nova-compute did not come up with inventory: services={svcs} rps={rps}")
        time.sleep(0.5)
    print("compute seeded: flavors", [f[0] for f in FLAVORS], "inventory", json.dumps(inv))


# ---------------------------------------------------------------------------------------------
def wait_servers(nova, ids, want, timeout=180):
    """want: 'ACTIVE' (or ERROR) for all, or 'gone'."""
    end = time.time() + timeout
    while True:
        if want == "gone":
            left = [s["id"] for s in nova.get("/servers", params={"all_tenants": 0})["servers"] if s["id"] in ids]
            if not left:
                return {}
        else:
            st = {s["id"]: s for s in nova.get("/servers/detail")["servers"] if s["id"] in ids}
            if len(st) == len(ids) and all(s["status"] in ("ACTIVE", "ERROR") for s in st.values()):
                return st
        if time.time() > end:
            fail(f"servers {ids} not {want} after {timeout}s")
        time.sleep(0.3)


def federation_check(vo_id):
    r = requests.post(KS + "/OS-FEDERATION/identity_providers/egi.eu/protocols/openid/auth",
                      headers={"Authorization": "Bearer fake:alice:" + EGI_ENTITLEMENT}, timeout=60)
    check(r, 201)
    unscoped = r.headers["X-Subject-Token"]
    projects = check(requests.get(KS + "/auth/projects", headers={"X-Auth-Token": unscoped}, timeout=60)).json()
    if vo_id not in [p["id"] for p in projects["projects"]]:
        fail(f"EGI: VO project not in /auth/projects: {projects}")
    r = requests.post(KS + "/auth/tokens", json={"auth": {"identity": {"methods": ["token"], "token": {
        "id": unscoped}}, "scope": {"project": {"id": vo_id}}}}, timeout=60)
    check(r, 201)
    cat = {e["type"] for e in r.json()["token"]["catalog"]}
    if not {"compute", "network", "image"} <= cat:
        fail(f"EGI scoped token lacks catalogue entries: {cat}")
    bad = requests.post(KS + "/OS-FEDERATION/identity_providers/egi.eu/protocols/openid/auth",
                        headers={"Authorization": "Bearer fake:bob:urn:mace:egi.eu:group:other.vo:role=member#aai.egi.eu"},
                        timeout=60)
    if bad.status_code != 401:
        fail(f"EGI: an unmapped entitlement gave {bad.status_code}, not 401")
    return r.headers["X-Subject-Token"]


def check_boot(state):
    with open(os.path.join(state, "seed-state.json")) as f:
        ids = json.load(f)
    t0 = time.time()
    optok, _ = token("operator", "userpw", "gpu-tenant")
    nova = Api(optok, NOVA)
    nova.h.update(NOVA_MV)
    flavor = next(f["id"] for f in nova.get("/flavors")["flavors"] if f["name"] == "m1.small")
    srv = nova.post("/servers", {"server": {
        "name": "peer-selfcheck", "flavorRef": flavor, "imageRef": IMG_2404_NEW,
        "networks": [{"uuid": NET_PRIVATE}], "metadata": {"kelp": "peer-check"},
        "user_data": base64.b64encode(b"#cloud-config\n{}\n").decode(), "tags": ["kelp-peer-check"]}})["server"]
    st = wait_servers(nova, [srv["id"]], "ACTIVE")[srv["id"]]
    if st["status"] != "ACTIVE":
        fail(f"check server ended in {st['status']}: {st.get('fault')}")
    addrs = st.get("addresses", {}).get("private", [])
    if not addrs:
        fail(f"check server has no address on private: {st.get('addresses')}")
    t_active = time.time() - t0
    nova.delete(f"/servers/{srv['id']}")
    wait_servers(nova, [srv["id"]], "gone")
    admtok, _ = token("admin", "adminpw", "admin")
    left = Api(admtok, NEUTRON).get("/v2.0/ports")["ports"]
    if left:
        fail(f"ports left after deleting the check server: {left}")
    t_gone = time.time() - t0
    federation_check(ids["egi_project"])
    for api in (NEUTRON, GLANCE):  # tests start from zero counts
        requests.delete(api + "/kelp-stats", timeout=10)
    env = {
        "OS_AUTH_URL": KS, "OS_REGION": REGION, "OS_REGION_NAME": REGION, "OS_PROJECT_ID": ids["tenant"],
        "OS_PROJECT_NAME": "gpu-tenant", "OS_USERNAME": "operator", "OS_PASSWORD": "userpw",
        "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_APP_CRED_ID": ids["appcred_id"], "OS_APP_CRED_SECRET": ids["appcred_secret"],
        "OS_ADMIN_USERNAME": "admin", "OS_ADMIN_PASSWORD": "adminpw", "OS_ADMIN_PROJECT_NAME": "admin",
        "OS_PRIVATE_NETWORK_ID": NET_PRIVATE, "OS_PRIVATE_SUBNET_ID": SUBNET_PRIVATE,
        "OS_PUBLIC_NETWORK_ID": NET_PUBLIC,
        "EGI_PROJECT_ID": ids["egi_project"], "EGI_PROJECT_NAME": EGI_VO, "EGI_ENTITLEMENT": EGI_ENTITLEMENT,
        "EGI_IDP": "egi.eu", "EGI_PROTOCOL": "openid", "EGI_PRIVATE_NETWORK_ID": NET_EGI_PRIVATE,
        "NEUTRON_URL": NEUTRON, "GLANCE_URL": GLANCE, "NOVA_URL": NOVA, "PLACEMENT_URL": PLACEMENT,
        "IMAGE_UBUNTU_2404_NEWEST_ID": IMG_2404_NEW, "IMAGE_UBUNTU_2404_OLDER_ID": IMG_2404_OLD,
        "IMAGE_UBUNTU_2404_QUEUED_ID": IMG_2404_QUEUED, "IMAGE_UBUNTU_2204_ID": IMG_2204,
        "FLAVOR_NO_VALID_HOST": "gpu.huge-t4",
    }
    with open(os.path.join(state, "peer.env.tmp"), "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in env.items())
    os.rename(os.path.join(state, "peer.env.tmp"), os.path.join(state, "peer.env"))
    print(f"boot check: server ACTIVE in {t_active:.1f}s, deleted and ports gone at {t_gone:.1f}s; "
          f"EGI federation login ok")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("identity", "compute", "check"):
        fail(__doc__)
    {"identity": identity, "compute": compute, "check": check_boot}[sys.argv[1]](sys.argv[2])
