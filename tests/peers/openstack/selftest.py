#!/usr/bin/env python3
"""Exercises a running peer the way kelp does, and prints timings (not run by peer.sh start).

  $KELP_OS_VENV/bin/python tests/peers/openstack/selftest.py [--batch 20] [--state DIR]

Names and tags start with `peer-selftest`, and only its own servers' ports are counted, so
it can run beside other tests using the same peer (it does not look like kelp's resources).

Checks: app credential login; Glance stand-in filters; a kelp-style security group; one batch
request (min_count = max_count = N, gpu.t4, network `private`, that security group, tags,
metadata, user_data, no key_name) -> all ACTIVE with one port each; a floating IP on one of
them; delete all -> no port left and the floating IP's port_id null; gpu.huge-t4 -> ERROR
"No valid host"; an EGI federated login that boots a server in the VO project.
"""
import argparse
import base64
import os
import sys
import time

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seed  # noqa: E402

MV = seed.NOVA_MV


def env(state):
    out = {}
    with open(os.path.join(state, "peer.env")) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            out[k] = v
    return out


def expect(cond, msg):
    if not cond:
        print("FAIL:", msg)
        sys.exit(1)
    print("ok:", msg)


def app_cred_token(e):
    r = requests.post(e["OS_AUTH_URL"] + "/auth/tokens", json={"auth": {"identity": {
        "methods": ["application_credential"], "application_credential": {
            "id": e["OS_APP_CRED_ID"], "secret": e["OS_APP_CRED_SECRET"]}}}}, timeout=30)
    seed.check(r, 201)
    return r.headers["X-Subject-Token"], r.json()["token"]


def boot_batch(nova, neutron, flavor_name, n, net, sg_name, label):
    flavor = next(f["id"] for f in nova.get("/flavors")["flavors"] if f["name"] == flavor_name)
    t0 = time.time()
    body = {"server": {"name": f"peer-selftest-{label}", "flavorRef": flavor, "imageRef": seed.IMG_2404_NEW,
                       "networks": [{"uuid": net}], "min_count": n, "max_count": n,
                       "metadata": {"selftest-pool": label}, "tags": ["peer-selftest", "peer-selftest-" + label],
                       "user_data": base64.b64encode(b"#cloud-config\nruncmd: [true]\n").decode()}}
    if sg_name:
        body["server"]["security_groups"] = [{"name": sg_name}]
    nova.post("/servers", body, headers={"Accept": "application/json"})
    servers = []
    for _ in range(100):
        servers = [s for s in nova.get("/servers/detail", params={"tags": "peer-selftest-" + label})["servers"]]
        if len(servers) == n:
            break
        time.sleep(0.2)
    expect(len(servers) == n, f"{n} servers listed after the batch request")
    ids = [s["id"] for s in servers]
    st = seed.wait_servers(nova, ids, "ACTIVE", timeout=300)
    return ids, st, time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--state", default=os.environ.get("KELP_OS_STATE", "/var/tmp/kelp-os-state"))
    args = ap.parse_args()
    e = env(args.state)
    run = "%x" % (int(time.time() * 1000) % 0xffffff)  # unique names: runs may overlap

    tok, body = app_cred_token(e)
    expect(body["project"]["id"] == e["OS_PROJECT_ID"], "application credential gives a gpu-tenant token")
    nova = seed.Api(tok, e["NOVA_URL"])
    nova.h.update(MV)
    neutron = seed.Api(tok, e["NEUTRON_URL"])
    glance = seed.Api(tok, e["GLANCE_URL"])
    adm, _ = seed.token("admin", "adminpw", "admin")
    neutron_admin = seed.Api(adm, e["NEUTRON_URL"])

    imgs = glance.get("/v2/images", params={"name": "ubuntu-24.04", "status": "active",
                                            "sort": "created_at:desc", "limit": 1})["images"]
    expect([i["id"] for i in imgs] == [e["IMAGE_UBUNTU_2404_NEWEST_ID"]], "glance: newest active ubuntu-24.04")
    imgs = glance.get("/v2/images", params={"os_distro": "ubuntu"})["images"]
    expect(len(imgs) == 4, "glance: property filter os_distro=ubuntu lists all 4")
    r = requests.get(e["GLANCE_URL"] + "/v2/images", timeout=10)
    expect(r.status_code == 401, "glance: no token -> 401")

    # Nova resolves a server's security groups by *name* when it builds the ports (even when
    # the request gave an id): two groups of one name in a project fail every build.
    sg = neutron.post("/v2.0/security-groups", {"security_group": {"name": "peer-selftest-" + run,
                                                                   "tags": ["peer-selftest"]}})[
        "security_group"]
    neutron.post("/v2.0/security-group-rules", {"security_group_rule": {
        "security_group_id": sg["id"], "direction": "ingress", "protocol": "tcp", "port_range_min": 22,
        "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0", "ethertype": "IPv4"}})
    requests.delete(e["NEUTRON_URL"] + "/kelp-stats", timeout=10)

    n = args.batch
    ids, st, t_active = boot_batch(nova, neutron, "gpu.t4", n, e["OS_PRIVATE_NETWORK_ID"], sg["id"], "batch-" + run)
    errors = {i: s.get("fault") for i, s in st.items() if s["status"] != "ACTIVE"}
    expect(not errors, f"batch of {n} gpu.t4: all ACTIVE in {t_active:.1f}s (errors: {errors})")
    ports = [p for p in neutron_admin.get("/v2.0/ports")["ports"] if p["device_id"] in ids]
    expect(len(ports) == n and all(p["security_groups"] == [sg["id"]] for p in ports),
           f"{n} ports on the stand-in, each with the kelp security group")
    expect(all(p["binding:vif_type"] == "ovs" and p["binding:host_id"] for p in ports), "ports bound (ovs)")
    one = st[ids[0]]
    expect(one["metadata"].get("selftest-pool") == "batch-" + run and "peer-selftest" in one.get("tags", []),
           "metadata and tags on the server")
    fip = neutron.post("/v2.0/floatingips", {"floatingip": {
        "floating_network_id": e["OS_PUBLIC_NETWORK_ID"],
        "port_id": next(p["id"] for p in ports if p["device_id"] == ids[0])}})["floatingip"]
    expect(fip["floating_ip_address"].startswith("203.0.113.") and fip["fixed_ip_address"].startswith("10.0.0."),
           f"floating IP {fip['floating_ip_address']} -> {fip['fixed_ip_address']}")
    r = neutron.req("DELETE", f"/v2.0/security-groups/{sg['id']}", ok=None)
    expect(r.status_code == 409 and "SecurityGroupInUse" in r.text, "deleting an SG in use -> 409")
    print("neutron calls for the batch:", requests.get(e["NEUTRON_URL"] + "/kelp-stats", timeout=10).json())

    t0 = time.time()
    for i in ids:
        nova.delete(f"/servers/{i}")
    seed.wait_servers(nova, ids, "gone", timeout=300)
    t_gone = time.time() - t0
    left = [p for p in neutron_admin.get("/v2.0/ports")["ports"] if p["device_id"] in ids]
    expect(not left, f"all {n} deleted in {t_gone:.1f}s, none of their ports left")
    fip = neutron.get(f"/v2.0/floatingips/{fip['id']}")["floatingip"]
    expect(fip["port_id"] is None, "floating IP's port_id is null after its server is gone")
    neutron.delete(f"/v2.0/floatingips/{fip['id']}")
    neutron.delete(f"/v2.0/security-groups/{sg['id']}")

    ids, st, _ = boot_batch(nova, neutron, "gpu.huge-t4", 1, e["OS_PRIVATE_NETWORK_ID"], None, "huge-" + run)
    s = nova.get(f"/servers/{ids[0]}")["server"]  # the list view carries no fault
    expect(s["status"] == "ERROR" and "No valid host" in (s.get("fault") or {}).get("message", ""),
           f"gpu.huge-t4 -> ERROR, fault {s.get('fault', {}).get('message')!r}")
    nova.delete(f"/servers/{ids[0]}")
    seed.wait_servers(nova, ids, "gone")

    vo_tok = seed.federation_check(e["EGI_PROJECT_ID"])
    vo_nova = seed.Api(vo_tok, e["NOVA_URL"])
    vo_nova.h.update(MV)
    ids, st, t = boot_batch(vo_nova, None, "m1.small", 1, e["EGI_PRIVATE_NETWORK_ID"], None, "egi-" + run)
    expect(st[ids[0]]["status"] == "ACTIVE", f"EGI federated token boots in the VO project ({t:.1f}s)")
    vo_nova.delete(f"/servers/{ids[0]}")
    seed.wait_servers(vo_nova, ids, "gone")
    expect(not [p for p in neutron_admin.get("/v2.0/ports")["ports"] if p["device_id"] in ids], "its port is gone")
    print("selftest passed")


if __name__ == "__main__":
    main()
