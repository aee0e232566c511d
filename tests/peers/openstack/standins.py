#!/usr/bin/env python3
"""STAND-INS for OpenStack Glance (image, :9292) and Neutron (network, :9696) in kelp's test peer.

These are NOT the real Glance and Neutron. They are small, thread-safe, in-memory HTTP servers
(Python stdlib only) that implement the parts of the Image v2 and Networking v2.0 APIs that Nova
(real, fake virt driver) and kelp's OpenStack driver use, with the same URLs, JSON shapes, status
codes and error bodies as the real services. Real Keystone checks every token.

Glance stand-in (read-only, images seeded at start):
  GET /, /versions, /v2/schemas/image(s), /v2/images (filters: name, status, visibility, id,
  any property such as os_distro=ubuntu, `in:` lists; sort=key:dir[,...] or sort_key/sort_dir;
  limit/marker with a `next` link), GET /v2/images/{id}.

Neutron stand-in: a generic in-memory REST store. Every collection under /v2.0/ (networks,
subnets, ports, floatingips, security-groups, security-group-rules, and any other plural name)
supports
  GET list      filters from the query string (repeated keys = any of), fields=, tags=,
                tags-any=, not-tags=, not-tags-any=, id= (repeated), fixed_ips=ip_address=...,
                sort_key/sort_dir, limit/marker
  GET one, POST (single or bulk: {"ports": [...]}), PUT (merge), DELETE (404 for unknown ids)
  tags          PUT /v2.0/{coll}/{id}/tags/{tag}, PUT /v2.0/{coll}/{id}/tags {"tags": [...]},
                GET .../tags, GET/DELETE .../tags/{tag}, DELETE .../tags; `tags` in POST bodies
plus what real Neutron does for these collections:
  ports         id, mac_address (fa:16:3e:..), fixed_ips from the network's first subnet
                (lowest free address, 10.0.0.2 upwards), status ACTIVE, binding:vif_type
                `unbound` until binding:host_id is set then `ovs`, device_id/device_owner stored,
                the project's `default` security group when none is given
  floatingips   floating_network_id must be an external network; floating_ip_address from that
                network's subnet (203.0.113.0/24); port_id sets fixed_ip_address; PUT
                associates/disassociates; deleting a port sets its floating IPs' port_id to null
  security-groups  every project gets a `default` group (with neutron's default rules) on first
                access; new groups get the two default egress rules; rules are objects in
                security-group-rules and embedded in their group; deleting a group that a port
                uses -> 409 SecurityGroupInUse; duplicate rule -> 409 SecurityGroupRuleExists
  networks/subnets  delete a network with compute ports -> 409 NetworkInUse
  quotas        GET/PUT/DELETE /v2.0/quotas/{project_id}, .../details, GET /v2.0/quotas;
                generous defaults, enforced on create (409 OverQuota)
  extensions    GET /v2.0/extensions: the few aliases Nova and kelp look for
  auth          X-Auth-Token is validated against Keystone (GET /v3/auth/tokens, result cached
                60 s per token); unknown/expired token -> 401. Objects get project_id/tenant_id of
                the token's project (admins may pass another). Lists show the caller's project's
                objects plus shared/external networks (and their subnets); admins see everything.
Both stand-ins: GET /kelp-stats -> {"GET /v2.0/ports": 3, "PUT /v2.0/ports/{id}": 1, ...}
(request counts, ids collapsed to {id}, tags to {tag}); DELETE /kelp-stats resets them.
No persistence, no real networking, no DHCP/router/agents, no RBAC policies, no pagination
links unless limit= is given.

Usage: standins.py --seed seed.json [--keystone http://127.0.0.1:5001/v3]
       (seed.json: {"images": [...], "networks": [...], "subnets": [...]}; written by seed.py)
"""
import argparse
import copy
import ipaddress
import json
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEYSTONE = "http://127.0.0.1:5001/v3"
LOCK = threading.RLock()


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------------------------------------
# Keystone token validation (shared)
# ---------------------------------------------------------------------------------------------
class Auth:
    def __init__(self, keystone):
        self.keystone = keystone.rstrip("/")
        self.cache = {}
        self.lock = threading.Lock()

    def validate(self, token):
        """Returns {"project_id", "user_id", "roles", "is_admin"} or None for a bad token."""
        if not token:
            return None
        t = time.time()
        with self.lock:
            hit = self.cache.get(token)
            if hit and hit[0] > t:
                return hit[1]
        req = urllib.request.Request(self.keystone + "/auth/tokens?nocatalog",
                                     headers={"X-Auth-Token": token, "X-Subject-Token": token,
                                              "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            if e.code in (401, 403, 404):
                return None
            raise
        tok = body["token"]
        roles = sorted({r["name"] for r in tok.get("roles", [])})
        proj = (tok.get("project") or {}).get("id")
        info = {"project_id": proj, "user_id": tok["user"]["id"], "roles": roles,
                "is_admin": "admin" in roles}
        ttl = 60.0
        try:
            exp = time.mktime(time.strptime(tok["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            ttl = max(0.0, min(ttl, exp - t))
        except Exception:
            pass
        with self.lock:
            self.cache[token] = (t + ttl, info)
        return info


class Stats:
    def __init__(self):
        self.counts = {}
        self.lock = threading.Lock()

    def hit(self, key):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def snapshot(self):
        with self.lock:
            return dict(sorted(self.counts.items()))

    def reset(self):
        with self.lock:
            self.counts.clear()


class HttpError(Exception):
    def __init__(self, code, etype, message):
        super().__init__(message)
        self.code, self.etype, self.message = code, etype, message


class JsonHandler(BaseHTTPRequestHandler):
    server_version = "kelp-standin/1"
    stats = None  # set per subclass
    auth = None

    def log_message(self, fmt, *args):
        pass  # one line per request from handle_any instead

    def log_request_done(self, t0):
        sys.stderr.write("%s.%03d %s %s %s %s %.1fms\n" % (
            time.strftime("%H:%M:%S", time.localtime(t0)), int(t0 * 1000) % 1000, self.__class__.__name__,
            self.command, self.path, getattr(self, "_status", "-"), (time.time() - t0) * 1000))
        sys.stderr.flush()

    def send_response(self, code, message=None):
        self._status = code
        super().send_response(code, message)

    def send_json(self, code, obj=None, headers=None):
        body = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(code)
        if obj is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if not n:
            return None
        raw = self.rfile.read(n)
        try:
            return json.loads(raw)
        except ValueError:
            raise HttpError(400, "BadRequest", "malformed JSON request body")

    def split_path(self):
        u = urllib.parse.urlsplit(self.path)
        return u.path.rstrip("/") or "/", urllib.parse.parse_qs(u.query, keep_blank_values=True)

    def stats_key(self, path):
        return None

    def handle_any(self):
        t0 = time.time()
        try:
            self.handle_request()
        finally:
            self.log_request_done(t0)

    def handle_request(self):
        path, query = self.split_path()
        if path == "/kelp-stats":
            if self.command == "DELETE":
                self.stats.reset()
                return self.send_json(204)
            return self.send_json(200, self.stats.snapshot())
        key = self.stats_key(path)
        if key:
            self.stats.hit(f"{self.command} {key}")
        try:
            self.route(path, query)
        except HttpError as e:
            self.send_error_body(e)
        except Exception as e:  # keep serving; say what broke
            import traceback
            traceback.print_exc()
            self.send_error_body(HttpError(500, "InternalError", f"stand-in error: {e!r}"))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = handle_any

    def send_error_body(self, e):
        self.send_json(e.code, {"error": {"code": e.code, "title": e.etype, "message": e.message}})

    def ctx(self):
        info = self.auth.validate(self.headers.get("X-Auth-Token"))
        if info is None:
            raise HttpError(401, "Unauthorized", "The request you have made requires authentication.")
        return info


# ---------------------------------------------------------------------------------------------
# Glance stand-in
# ---------------------------------------------------------------------------------------------
IMAGE_BASE = {"disk_format": "qcow2", "container_format": "bare", "min_disk": 0, "min_ram": 0,
              "size": 1073741824, "virtual_size": 10737418240, "checksum": "0" * 32,
              "os_hash_algo": "sha512", "os_hash_value": "0" * 128, "protected": False,
              "os_hidden": False, "tags": [], "visibility": "public", "status": "active",
              "owner": None, "hw_machine_type": "q35"}


class Glance(JsonHandler):
    images = []  # list of dicts, filled at start

    def stats_key(self, path):
        if path.startswith("/v2/images/"):
            return "/v2/images/{id}" + ("/file" if path.endswith("/file") else "")
        return path

    def route(self, path, query):
        if path in ("/", "/versions"):
            return self.send_json(300 if path == "/" else 200, {"versions": [
                {"id": "v2.16", "status": "CURRENT",
                 "links": [{"rel": "self", "href": "http://127.0.0.1:9292/v2/"}]}]})
        if path == "/v2/schemas/image":
            return self.send_json(200, image_schema())
        if path == "/v2/schemas/images":
            return self.send_json(200, {"name": "images", "properties": {
                "images": {"type": "array", "items": image_schema()}, "schema": {"type": "string"},
                "first": {"type": "string"}, "next": {"type": "string"}},
                "links": [{"href": "{first}", "rel": "first"}, {"href": "{next}", "rel": "next"},
                          {"href": "{schema}", "rel": "describedby"}]})
        ctx = self.ctx()
        if self.command not in ("GET", "HEAD"):
            raise HttpError(405, "MethodNotAllowed", "the image stand-in is read-only")
        if path == "/v2/images":
            return self.send_json(200, self.list_images(ctx, query))
        m = re.fullmatch(r"/v2/images/([^/]+)", path)
        if m:
            for img in self.images:
                if img["id"] == m.group(1) and visible_image(ctx, img):
                    return self.send_json(200, img)
            raise HttpError(404, "NotFound", f"No image found with ID {m.group(1)}")
        raise HttpError(404, "NotFound", f"no route for {path}")

    def list_images(self, ctx, query):
        q = {k: v for k, v in query.items()}
        limit = int(q.pop("limit", ["25"])[-1] or 25)
        marker = q.pop("marker", [None])[-1]
        sorts = []
        for s in q.pop("sort", []):
            for part in s.split(","):
                k, _, d = part.partition(":")
                sorts.append((k.strip(), (d or "desc").strip()))
        keys, dirs = q.pop("sort_key", []), q.pop("sort_dir", [])
        for i, k in enumerate(keys):
            sorts.append((k, dirs[i] if i < len(dirs) else (dirs[-1] if dirs else "desc")))
        if not sorts:
            sorts = [("created_at", "desc")]
        if sorts[-1][0] != "id":
            sorts.append(("id", sorts[-1][1]))
        vis = q.pop("visibility", [None])[-1]
        q.pop("member_status", None)
        out = []
        for img in self.images:
            if not visible_image(ctx, img):
                continue
            if vis and vis != "all" and img.get("visibility") != vis:
                continue
            if img.get("os_hidden") and q.get("os_hidden", ["false"])[-1] != "true":
                continue
            ok = True
            for k, vals in q.items():
                if k == "os_hidden":
                    continue
                for want in vals:
                    if k == "tag":
                        ok = ok and want in img.get("tags", [])
                        continue
                    choices = want[3:].split(",") if want.startswith("in:") else [want]
                    have = img.get(k)
                    if have is None or not any(match_value(have, c) for c in choices):
                        ok = False
            if ok:
                out.append(img)
        for k, d in reversed(sorts):
            out.sort(key=lambda i, k=k: (i.get(k) is None, str(i.get(k) or "")), reverse=(d == "desc"))
        if marker:
            ids = [i["id"] for i in out]
            if marker not in ids:
                raise HttpError(400, "BadRequest", f"marker {marker} not found")
            out = out[ids.index(marker) + 1:]
        body = {"images": out[:limit], "first": "/v2/images", "schema": "/v2/schemas/images"}
        if len(out) > limit:
            nq = dict((k, v[-1]) for k, v in query.items() if k != "marker")
            nq["marker"] = out[limit - 1]["id"]
            body["next"] = "/v2/images?" + urllib.parse.urlencode(nq)
        return body


def visible_image(ctx, img):
    return ctx["is_admin"] or img.get("visibility") in ("public", "community") or img.get("owner") == ctx["project_id"]


def image_schema():
    props = {k: {} for k in list(IMAGE_BASE) + ["id", "name", "created_at", "updated_at", "self", "file", "schema",
                                                "os_distro", "os_version", "architecture", "locations"]}
    props["name"] = {"type": ["null", "string"]}
    props["tags"] = {"type": "array", "items": {"type": "string"}}
    return {"name": "image", "properties": props, "additionalProperties": {"type": "string"},
            "links": [{"href": "{self}", "rel": "self"}, {"href": "{file}", "rel": "enclosure"},
                      {"href": "{schema}", "rel": "describedby"}]}


def make_image(spec):
    img = dict(IMAGE_BASE)
    img.update(spec)
    img.setdefault("updated_at", img["created_at"])
    i = img["id"]
    img.update({"self": f"/v2/images/{i}", "file": f"/v2/images/{i}/file", "schema": "/v2/schemas/image"})
    if img["status"] != "active":
        for k in ("size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value"):
            img[k] = None
    return img


# ---------------------------------------------------------------------------------------------
# Neutron stand-in
# ---------------------------------------------------------------------------------------------
EXTENSIONS = [
    ("binding", "Port Binding"), ("external-net", "Neutron external network"),
    ("security-group", "security-group"), ("quotas", "Quota management support"),
    ("quota_details", "Quota details extension"), ("standard-attr-tag", "Tag support for resources"),
    ("standard-attr-description", "standard-attr-description"), ("router", "Neutron L3 Router"),
    ("port-security", "Port Security"), ("net-mtu", "Network MTU"),
    ("allowed-address-pairs", "Allowed Address Pairs"), ("extra_dhcp_opt", "Neutron Extra DHCP options"),
    ("fip-port-details", "Floating IP Port Details Extension"),
]
# Per project, per resource (neutron's names); -1 = unlimited.
DEFAULT_QUOTA = {"network": 100, "subnet": 100, "port": 10000, "router": 100, "floatingip": 1000,
                 "security_group": 1000, "security_group_rule": 10000, "rbac_policy": 100,
                 "subnetpool": -1, "trunk": -1}
NOT_FOUND_TYPE = {"networks": "NetworkNotFound", "subnets": "SubnetNotFound", "ports": "PortNotFound",
                  "floatingips": "FloatingIPNotFound", "security-groups": "SecurityGroupNotFound",
                  "security-group-rules": "SecurityGroupRuleNotFound", "routers": "RouterNotFound"}
RESERVED_QUERY = {"fields", "tags", "tags-any", "not-tags", "not-tags-any", "limit", "marker",
                  "sort_key", "sort_dir", "page_reverse", "verbose"}
PROJECT_KEYS = ("project_id", "tenant_id")


def singular(coll):
    name = coll.replace("-", "_")
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith("s"):
        return name[:-1]
    return name


class Store:
    """All Neutron objects, by collection ("ports", "security-groups", ...), then id."""

    def __init__(self):
        self.data = {}
        self.quotas = {}  # project_id -> overrides
        self.default_sg = {}  # project_id -> sg id

    def coll(self, name):
        return self.data.setdefault(name, {})


STORE = Store()


class Ctx(dict):
    pass


class Neutron(JsonHandler):
    def stats_key(self, path):
        parts = path.strip("/").split("/")
        if not parts or parts[0] != "v2.0":
            return path
        out = ["", "v2.0"]
        for i, p in enumerate(parts[1:], start=1):
            if i == 1:
                out.append(p)
            elif i == 2:
                out.append("{id}")
            elif i == 3:
                out.append(p)
            else:
                out.append("{tag}" if parts[3] == "tags" else "{id}")
        return "/".join(out)

    # ---- routing -----------------------------------------------------------------------------
    def route(self, path, query):
        if path in ("/", "/v2.0") and self.command == "GET":
            return self.send_json(200, {"versions": [{"id": "v2.0", "status": "CURRENT", "links": [
                {"rel": "self", "href": "http://127.0.0.1:9696/v2.0/"}]}]} if path == "/" else {"resources": []})
        parts = path.strip("/").split("/")
        if parts[0] != "v2.0" or len(parts) < 2:
            raise HttpError(404, "HTTPNotFound", f"The resource could not be found: {path}")
        ctx = self.ctx()
        coll = parts[1]
        rest = parts[2:]
        if coll.endswith(".json"):
            coll = coll[:-5]
        if rest and rest[-1].endswith(".json"):
            rest[-1] = rest[-1][:-5]
        m = self.command
        with LOCK:
            if coll == "extensions":
                return self.extensions(rest)
            if coll == "quotas":
                return self.quotas(ctx, m, rest)
            ensure_default_sg(ctx["project_id"])
            for k in PROJECT_KEYS:
                for p in query.get(k, []):
                    if p and (ctx["is_admin"] or p == ctx["project_id"]):
                        ensure_default_sg(p)
            if not rest:
                if m == "GET":
                    return self.send_json(200, list_objects(ctx, coll, query))
                if m == "POST":
                    return self.create(ctx, coll, self.read_body())
                raise HttpError(405, "HTTPMethodNotAllowed", f"{m} not allowed on {coll}")
            obj = get_visible(ctx, coll, rest[0])
            if len(rest) == 1:
                if m == "GET":
                    return self.send_json(200, {singular(coll): select_fields(obj, query.get("fields"))})
                if m == "PUT":
                    body = self.read_body() or {}
                    if singular(coll) not in body:
                        raise HttpError(400, "BadRequest", f"Resource body required: {singular(coll)}")
                    return self.send_json(200, {singular(coll): update_object(ctx, coll, obj, body[singular(coll)])})
                if m == "DELETE":
                    delete_object(ctx, coll, obj)
                    return self.send_json(204)
                raise HttpError(405, "HTTPMethodNotAllowed", f"{m} not allowed")
            if rest[1] == "tags":
                return self.tags(ctx, obj, m, rest[2:])
            raise HttpError(404, "HTTPNotFound", f"The resource could not be found: {path}")

    def extensions(self, rest):
        exts = [{"alias": a, "name": n, "description": n, "updated": "2024-01-01T00:00:00-00:00",
                 "links": []} for a, n in EXTENSIONS]
        if not rest:
            return self.send_json(200, {"extensions": exts})
        for e in exts:
            if e["alias"] == rest[0]:
                return self.send_json(200, {"extension": e})
        raise HttpError(404, "HTTPNotFound", f"Extension with alias {rest[0]} does not exist")

    def quotas(self, ctx, m, rest):
        if not rest:
            if not ctx["is_admin"]:
                raise HttpError(403, "Forbidden", "only admins may list quotas")
            return self.send_json(200, {"quotas": [dict(quota_for(p), project_id=p, tenant_id=p)
                                                   for p in STORE.quotas]})
        pid = rest[0]
        if pid == "tenant":  # GET /v2.0/quotas/tenant: the caller's project id
            return self.send_json(200, {"tenant": {"tenant_id": ctx["project_id"]}})
        if pid != ctx["project_id"] and not ctx["is_admin"]:
            raise HttpError(403, "Forbidden", "not allowed to see another project's quotas")
        if len(rest) == 2 and rest[1] == "details" and m == "GET":
            used = usage(pid)
            return self.send_json(200, {"quota": {r: {"limit": lim, "used": used.get(r, 0), "reserved": 0}
                                                  for r, lim in quota_for(pid).items()}})
        if len(rest) == 2 and rest[1] == "default" and m == "GET":
            return self.send_json(200, {"quota": dict(DEFAULT_QUOTA)})
        if m == "GET":
            return self.send_json(200, {"quota": quota_for(pid)})
        if not ctx["is_admin"]:
            raise HttpError(403, "Forbidden", "only admins may change quotas")
        if m == "PUT":
            body = (self.read_body() or {}).get("quota") or {}
            cur = STORE.quotas.setdefault(pid, {})
            for k, v in body.items():
                if k not in DEFAULT_QUOTA:
                    raise HttpError(400, "BadRequest", f"Unrecognized attribute(s) '{k}'")
                cur[k] = int(v)
            return self.send_json(200, {"quota": quota_for(pid)})
        if m == "DELETE":
            STORE.quotas.pop(pid, None)
            return self.send_json(204)
        raise HttpError(405, "HTTPMethodNotAllowed", f"{m} not allowed")

    def create(self, ctx, coll, body):
        one, many = singular(coll), coll.replace("-", "_")
        if not isinstance(body, dict) or (one not in body and many not in body):
            raise HttpError(400, "BadRequest", f"Resource body required: {one}")
        if many in body and one not in body:
            items = body[many]
            if not isinstance(items, list):
                raise HttpError(400, "BadRequest", f"{many} must be a list")
            snapshot = copy.deepcopy(STORE.data), copy.deepcopy(STORE.default_sg)
            try:
                made = [create_object(ctx, coll, dict(i)) for i in items]
            except HttpError:
                STORE.data, STORE.default_sg = snapshot  # bulk create is atomic
                raise
            return self.send_json(201, {many: made})
        return self.send_json(201, {one: create_object(ctx, coll, dict(body[one] or {}))})

    def tags(self, ctx, obj, m, rest):
        tags = obj.setdefault("tags", [])
        if not rest:
            if m == "GET":
                return self.send_json(200, {"tags": list(tags)})
            if m == "PUT":
                new = (self.read_body() or {}).get("tags")
                if not isinstance(new, list) or not all(isinstance(t, str) and t for t in new):
                    raise HttpError(400, "BadRequest", "Invalid tags body")
                obj["tags"] = sorted(set(new))
                touch(obj)
                return self.send_json(200, {"tags": list(obj["tags"])})
            if m == "DELETE":
                obj["tags"] = []
                touch(obj)
                return self.send_json(204)
        else:
            tag = urllib.parse.unquote(rest[0])
            if m == "GET":
                if tag in tags:
                    return self.send_json(204)
                raise HttpError(404, "TagNotFound", f"Tag {tag} could not be found for resource {obj['id']}")
            if m == "PUT":
                if tag not in tags:
                    tags.append(tag)
                    tags.sort()
                    touch(obj)
                return self.send_json(201)
            if m == "DELETE":
                if tag not in tags:
                    raise HttpError(404, "TagNotFound", f"Tag {tag} could not be found for resource {obj['id']}")
                tags.remove(tag)
                touch(obj)
                return self.send_json(204)
        raise HttpError(405, "HTTPMethodNotAllowed", f"{m} not allowed on tags")

    def send_error_body(self, e):
        self.send_json(e.code, {"NeutronError": {"type": e.etype, "message": e.message, "detail": ""}})


def touch(obj):
    obj["updated_at"] = now()
    obj["revision_number"] = obj.get("revision_number", 0) + 1


def quota_for(pid):
    q = dict(DEFAULT_QUOTA)
    q.update(STORE.quotas.get(pid, {}))
    return q


def usage(pid):
    used = {}
    for coll, objs in STORE.data.items():
        r = singular(coll)
        used[r] = sum(1 for o in objs.values() if o.get("project_id") == pid)
    return used


def visible(ctx, coll, obj):
    if ctx["is_admin"] or obj.get("project_id") == ctx["project_id"]:
        return True
    if coll == "networks":
        return bool(obj.get("shared") or obj.get("router:external"))
    if coll == "subnets":
        net = STORE.coll("networks").get(obj.get("network_id"))
        return bool(net and (net.get("shared") or net.get("router:external")))
    return False


def get_visible(ctx, coll, oid):
    obj = STORE.coll(coll).get(oid)
    if obj is None or not visible(ctx, coll, obj):
        what = singular(coll).replace("_", " ")
        raise HttpError(404, NOT_FOUND_TYPE.get(coll, "NotFound"),
                        f"{what[0].upper() + what[1:]} {oid} could not be found.")
    return obj


def match_value(have, want):
    if isinstance(have, bool):
        return want.lower() == str(have).lower()
    if have is None:
        return want in ("", "None", "null")
    if isinstance(have, list):
        return want in [str(x) for x in have]
    return str(have) == want


def match_fixed_ips(fixed_ips, want):
    k, _, v = want.partition("=")
    for ip in fixed_ips or []:
        if k == "ip_address" and ip.get("ip_address") == v:
            return True
        if k == "ip_address_substr" and v in ip.get("ip_address", ""):
            return True
        if k == "subnet_id" and ip.get("subnet_id") == v:
            return True
    return False


def split_tags(vals):
    out = []
    for v in vals:
        out += [t for t in v.split(",") if t]
    return out


def matches(obj, query):
    for k, vals in query.items():
        if k in RESERVED_QUERY:
            continue
        if k == "fixed_ips":
            if not all(match_fixed_ips(obj.get("fixed_ips"), w) for w in vals):
                return False
            continue
        if k not in obj:
            return False
        if not any(match_value(obj[k], w) for w in vals):
            return False
    tags = set(obj.get("tags", []))
    if "tags" in query and not set(split_tags(query["tags"])) <= tags:
        return False
    if "tags-any" in query and not set(split_tags(query["tags-any"])) & tags:
        return False
    if "not-tags" in query and set(split_tags(query["not-tags"])) <= tags:
        return False
    if "not-tags-any" in query and set(split_tags(query["not-tags-any"])) & tags:
        return False
    return True


def select_fields(obj, fields):
    fields = [f for fs in (fields or []) for f in fs.split(",") if f]
    if not fields:
        return copy.deepcopy(obj)
    return {f: copy.deepcopy(obj[f]) for f in fields if f in obj}


def list_objects(ctx, coll, query):
    objs = [o for o in STORE.coll(coll).values() if visible(ctx, coll, o) and matches(o, query)]
    keys, dirs = query.get("sort_key", []), query.get("sort_dir", [])
    for i in reversed(range(len(keys))):
        d = dirs[i] if i < len(dirs) else "asc"
        objs.sort(key=lambda o, k=keys[i]: str(o.get(k, "")), reverse=(d == "desc"))
    links = []
    marker = (query.get("marker") or [None])[-1]
    if marker:
        ids = [o["id"] for o in objs]
        objs = objs[ids.index(marker) + 1:] if marker in ids else []
    limit = (query.get("limit") or [None])[-1]
    if limit and int(limit) > 0 and len(objs) > int(limit):
        objs = objs[:int(limit)]
        nq = [(k, v) for k, vs in query.items() if k != "marker" for v in vs] + [("marker", objs[-1]["id"])]
        links.append({"rel": "next", "href": f"http://127.0.0.1:9696/v2.0/{coll}?" + urllib.parse.urlencode(nq)})
    key = coll.replace("-", "_")
    body = {key: [select_fields(o, query.get("fields")) for o in objs]}
    if links:
        body[key + "_links"] = links
    return body


def base_object(ctx, coll, body):
    pid = ctx["project_id"]
    for k in PROJECT_KEYS:
        if body.get(k):
            if body[k] != pid and not ctx["is_admin"]:
                raise HttpError(403, "PolicyNotAuthorized", f"not allowed to create {coll} for project {body[k]}")
            pid = body[k]
    lim = quota_for(pid).get(singular(coll))
    if lim is not None and lim >= 0 and usage(pid).get(singular(coll), 0) >= lim:
        raise HttpError(409, "OverQuota", f"Quota exceeded for resources: ['{singular(coll)}'].")
    tags = body.pop("tags", []) or []
    if not isinstance(tags, list):
        raise HttpError(400, "BadRequest", "tags must be a list")
    t = now()
    obj = {"id": str(uuid.uuid4()), "name": "", "description": "", "project_id": pid, "tenant_id": pid,
           "tags": sorted(set(tags)), "created_at": t, "updated_at": t, "revision_number": 0}
    obj.update({k: v for k, v in body.items() if k not in ("id", "tenant_id", "project_id")})
    return obj


def create_object(ctx, coll, body):
    obj = base_object(ctx, coll, body)
    if coll == "networks":
        obj.setdefault("admin_state_up", True)
        obj.setdefault("shared", False)
        obj.setdefault("router:external", False)
        obj.setdefault("port_security_enabled", True)
        obj.setdefault("mtu", 1450)
        obj.update({"status": "ACTIVE", "subnets": [], "availability_zones": ["nova"],
                    "availability_zone_hints": [], "ipv4_address_scope": None, "ipv6_address_scope": None,
                    "is_default": False, "l2_adjacency": True})
    elif coll == "subnets":
        net = get_visible(ctx, "networks", body.get("network_id") or "")
        try:
            cidr = ipaddress.ip_network(body.get("cidr", ""), strict=False)
        except ValueError:
            raise HttpError(400, "BadRequest", f"Invalid input for cidr: {body.get('cidr')!r}")
        hosts = cidr.hosts()
        first = next(hosts)
        obj["cidr"] = str(cidr)
        obj.setdefault("ip_version", cidr.version)
        obj.setdefault("gateway_ip", str(first))
        obj.setdefault("allocation_pools", [{"start": str(first + 1), "end": str(cidr.broadcast_address - 1)}])
        obj.setdefault("enable_dhcp", True)
        obj.setdefault("dns_nameservers", [])
        obj.setdefault("host_routes", [])
        obj.update({"ipv6_ra_mode": None, "ipv6_address_mode": None, "subnetpool_id": None,
                    "service_types": [], "segment_id": None})
        net["subnets"].append(obj["id"])
    elif coll == "ports":
        net = get_visible(ctx, "networks", body.get("network_id") or "")
        obj.setdefault("admin_state_up", True)
        obj.setdefault("device_id", "")
        obj.setdefault("device_owner", "")
        obj.setdefault("mac_address", "fa:16:3e:%02x:%02x:%02x" % tuple(random.randrange(256) for _ in range(3)))
        obj.setdefault("port_security_enabled", net.get("port_security_enabled", True))
        obj.setdefault("allowed_address_pairs", [])
        obj.setdefault("extra_dhcp_opts", [])
        obj.setdefault("binding:host_id", "")
        obj.setdefault("binding:profile", {})
        obj.setdefault("binding:vnic_type", "normal")
        obj.update({"status": "ACTIVE", "dns_name": obj.get("dns_name", ""), "dns_assignment": [],
                    "qos_policy_id": None, "qos_network_policy_id": None, "resource_request": None,
                    "propagate_uplink_status": False})
        if "security_groups" not in body:
            obj["security_groups"] = [ensure_default_sg(obj["project_id"])] if obj["port_security_enabled"] else []
        check_sgs(ctx, obj["security_groups"])
        obj["fixed_ips"] = allocate_ips(net, body.get("fixed_ips"), None)
        set_binding(obj)
    elif coll == "floatingips":
        net = STORE.coll("networks").get(body.get("floating_network_id") or "")
        if net is None:
            raise HttpError(404, "NetworkNotFound", f"Network {body.get('floating_network_id')} could not be found.")
        if not net.get("router:external"):
            raise HttpError(400, "BadRequest", f"Bad floatingip request: Network {net['id']} is not a valid external network.")
        obj.setdefault("floating_ip_address", None)
        obj["floating_ip_address"] = allocate_fip(net, obj["floating_ip_address"])
        obj.update({"router_id": None, "port_details": None, "qos_policy_id": None,
                    "dns_domain": "", "dns_name": "", "port_forwardings": []})
        obj.setdefault("port_id", None)
        obj.setdefault("fixed_ip_address", None)
        associate_fip(ctx, obj, obj["port_id"], obj["fixed_ip_address"])
    elif coll == "security-groups":
        if obj.get("name") == "default" and STORE.default_sg.get(obj["project_id"]):
            raise HttpError(409, "SecurityGroupDefaultAlreadyExists", "Default security group already exists.")
        obj.setdefault("stateful", True)
        obj["shared"] = False
        obj["security_group_rules"] = []
        STORE.coll(coll)[obj["id"]] = obj
        for eth in ("IPv4", "IPv6"):
            add_rule(obj, {"direction": "egress", "ethertype": eth})
        return copy.deepcopy(obj)
    elif coll == "security-group-rules":
        sg = get_visible(ctx, "security-groups", body.get("security_group_id") or "")
        rule = add_rule(sg, body, obj)
        return copy.deepcopy(rule)
    STORE.coll(coll)[obj["id"]] = obj
    return copy.deepcopy(obj)


def add_rule(sg, body, obj=None):
    direction = body.get("direction")
    if direction not in ("ingress", "egress"):
        raise HttpError(400, "BadRequest", f"Invalid input for direction: {direction!r}")
    rule = obj or {"id": str(uuid.uuid4()), "project_id": sg["project_id"], "tenant_id": sg["project_id"],
                   "description": "", "tags": [], "created_at": now(), "updated_at": now(), "revision_number": 0}
    rule.pop("name", None)
    proto = body.get("protocol")
    rule.update({"security_group_id": sg["id"], "direction": direction,
                 "ethertype": body.get("ethertype") or "IPv4",
                 "protocol": None if proto is None else str(proto),
                 "port_range_min": body.get("port_range_min"), "port_range_max": body.get("port_range_max"),
                 "remote_ip_prefix": body.get("remote_ip_prefix"), "remote_group_id": body.get("remote_group_id"),
                 "remote_address_group_id": None, "belongs_to_default_sg": sg.get("name") == "default"})
    if rule["remote_ip_prefix"]:
        try:
            net = ipaddress.ip_network(rule["remote_ip_prefix"], strict=False)
        except ValueError:
            raise HttpError(400, "BadRequest", f"Invalid input for remote_ip_prefix: {rule['remote_ip_prefix']!r}")
        rule["normalized_cidr"] = str(net)
    else:
        rule["normalized_cidr"] = None
    sig = lambda r: tuple(r.get(k) for k in ("direction", "ethertype", "protocol", "port_range_min",
                                             "port_range_max", "normalized_cidr", "remote_group_id"))
    for other in STORE.coll("security-group-rules").values():
        if other["security_group_id"] == sg["id"] and sig(other) == sig(rule):
            raise HttpError(409, "SecurityGroupRuleExists", f"Security group rule already exists. Rule id is {other['id']}.")
    STORE.coll("security-group-rules")[rule["id"]] = rule
    sg["security_group_rules"].append(rule)
    return rule


def ensure_default_sg(pid):
    if not pid:
        return None
    sid = STORE.default_sg.get(pid)
    if sid and sid in STORE.coll("security-groups"):
        return sid
    t = now()
    sg = {"id": str(uuid.uuid4()), "name": "default", "description": "Default security group",
          "project_id": pid, "tenant_id": pid, "tags": [], "created_at": t, "updated_at": t,
          "revision_number": 0, "stateful": True, "shared": False, "security_group_rules": []}
    STORE.coll("security-groups")[sg["id"]] = sg
    STORE.default_sg[pid] = sg["id"]
    for eth in ("IPv4", "IPv6"):
        add_rule(sg, {"direction": "egress", "ethertype": eth})
        add_rule(sg, {"direction": "ingress", "ethertype": eth, "remote_group_id": sg["id"]})
    return sg["id"]


def check_sgs(ctx, sgs):
    if not isinstance(sgs, list):
        raise HttpError(400, "BadRequest", "security_groups must be a list")
    for s in sgs:
        sg = STORE.coll("security-groups").get(s)
        if sg is None or not visible(ctx, "security-groups", sg):
            raise HttpError(404, "SecurityGroupNotFound", f"Security group {s} does not exist")


def used_ips(subnet_id, skip_port=None):
    out = set()
    for p in STORE.coll("ports").values():
        if p["id"] == skip_port:
            continue
        for ip in p.get("fixed_ips", []):
            if ip.get("subnet_id") == subnet_id:
                out.add(ip["ip_address"])
    return out


def allocate_ips(net, requested, port_id):
    subnets = [STORE.coll("subnets")[s] for s in net.get("subnets", []) if s in STORE.coll("subnets")]
    if requested is None:
        if not subnets:
            return []
        requested = [{"subnet_id": subnets[0]["id"]}]
    out = []
    for req in requested:
        sub = None
        if req.get("subnet_id"):
            sub = next((s for s in subnets if s["id"] == req["subnet_id"]), None)
            if sub is None:
                raise HttpError(400, "BadRequest", f"Invalid input for fixed_ips: subnet {req['subnet_id']} is not on network {net['id']}")
        elif req.get("ip_address"):
            for s in subnets:
                if ipaddress.ip_address(req["ip_address"]) in ipaddress.ip_network(s["cidr"]):
                    sub = s
        if sub is None:
            raise HttpError(400, "BadRequest", "Invalid input for fixed_ips: no subnet for the requested address")
        used = used_ips(sub["id"], port_id)
        if req.get("ip_address"):
            if req["ip_address"] in used:
                raise HttpError(409, "IpAddressAlreadyAllocated",
                                f"IP address {req['ip_address']} already allocated in subnet {sub['id']}")
            out.append({"subnet_id": sub["id"], "ip_address": req["ip_address"]})
            continue
        pool = sub["allocation_pools"][0]
        a, b = ipaddress.ip_address(pool["start"]), ipaddress.ip_address(pool["end"])
        while a <= b and str(a) in used:
            a += 1
        if a > b:
            raise HttpError(409, "IpAddressGenerationFailure", f"No more IP addresses available on network {net['id']}.")
        out.append({"subnet_id": sub["id"], "ip_address": str(a)})
    return out


def allocate_fip(net, wanted):
    subnets = [STORE.coll("subnets")[s] for s in net.get("subnets", []) if s in STORE.coll("subnets")]
    cidr = ipaddress.ip_network(subnets[0]["cidr"]) if subnets else ipaddress.ip_network("203.0.113.0/24")
    used = {f["floating_ip_address"] for f in STORE.coll("floatingips").values()}
    used |= {ip["ip_address"] for p in STORE.coll("ports").values() for ip in p.get("fixed_ips", [])}
    if wanted:
        if wanted in used:
            raise HttpError(409, "IpAddressInUse", f"Unable to complete operation for network {net['id']}. The IP address {wanted} is in use.")
        return wanted
    for a in list(cidr.hosts())[9:]:  # .10 upwards
        if str(a) not in used:
            return str(a)
    raise HttpError(409, "IpAddressGenerationFailure", f"No more IP addresses available on network {net['id']}.")


def associate_fip(ctx, fip, port_id, fixed_ip):
    if not port_id:
        fip.update({"port_id": None, "fixed_ip_address": None, "status": "DOWN", "port_details": None})
        return
    port = get_visible(ctx, "ports", port_id)
    ips = [i["ip_address"] for i in port.get("fixed_ips", []) if ":" not in i["ip_address"]]
    if not ips:
        raise HttpError(400, "BadRequest", f"Port {port_id} does not have fixed ip")
    if fixed_ip and fixed_ip not in ips:
        raise HttpError(400, "BadRequest", f"Port {port_id} does not have fixed ip {fixed_ip}")
    for other in STORE.coll("floatingips").values():
        if other["id"] != fip["id"] and other.get("port_id") == port_id and other.get("fixed_ip_address") == (fixed_ip or ips[0]):
            raise HttpError(409, "FloatingIPPortAlreadyAssociated",
                            f"Cannot associate floating IP {fip['floating_ip_address']} with port {port_id} "
                            f"using fixed IP {fixed_ip or ips[0]}, as that fixed IP already has a floating IP "
                            f"on external network {other['floating_network_id']}.")
    fip.update({"port_id": port_id, "fixed_ip_address": fixed_ip or ips[0], "status": "ACTIVE",
                "port_details": {k: port.get(k) for k in ("name", "network_id", "mac_address", "admin_state_up",
                                                           "status", "device_id", "device_owner")}})


def set_binding(port):
    if port.get("binding:host_id"):
        port["binding:vif_type"] = "ovs"
        port["binding:vif_details"] = {"port_filter": True, "ovs_hybrid_plug": False, "datapath_type": "system",
                                       "bridge_name": "br-int", "connectivity": "l2"}
    else:
        port["binding:vif_type"] = "unbound"
        port["binding:vif_details"] = {}


READ_ONLY = {"id", "project_id", "tenant_id", "created_at", "updated_at", "revision_number", "status",
             "security_group_rules", "subnets", "mac_address_", "network_id", "floating_network_id",
             "floating_ip_address", "cidr", "security_group_id", "direction"}


def update_object(ctx, coll, obj, body):
    if not isinstance(body, dict):
        raise HttpError(400, "BadRequest", "body must be an object")
    for k in body:
        if k in READ_ONLY and body[k] != obj.get(k):
            raise HttpError(400, "BadRequest", f"Cannot update read-only attribute {k}")
    body = {k: v for k, v in body.items() if k not in READ_ONLY}
    if coll == "ports":
        if "security_groups" in body:
            check_sgs(ctx, body["security_groups"] or [])
            body["security_groups"] = body["security_groups"] or []
        if "fixed_ips" in body:
            net = STORE.coll("networks")[obj["network_id"]]
            body["fixed_ips"] = allocate_ips(net, body["fixed_ips"], obj["id"])
        obj.update(body)
        if obj.get("binding:profile") is None:
            obj["binding:profile"] = {}
        set_binding(obj)
    elif coll == "floatingips":
        if "port_id" in body or "fixed_ip_address" in body:
            associate_fip(ctx, obj, body.get("port_id", obj.get("port_id")), body.get("fixed_ip_address"))
        for k in ("description", "tags", "name"):
            if k in body:
                obj[k] = body[k]
    elif coll == "tags":
        raise HttpError(400, "BadRequest", "use the tag API")
    else:
        if "tags" in body:
            body["tags"] = sorted(set(body["tags"] or []))
        obj.update(body)
    touch(obj)
    return copy.deepcopy(obj)


def delete_object(ctx, coll, obj):
    oid = obj["id"]
    if coll == "ports":
        for f in STORE.coll("floatingips").values():
            if f.get("port_id") == oid:
                f.update({"port_id": None, "fixed_ip_address": None, "status": "DOWN", "port_details": None})
                touch(f)
    elif coll == "security-groups":
        users = [p["id"] for p in STORE.coll("ports").values() if oid in (p.get("security_groups") or [])]
        if users:
            raise HttpError(409, "SecurityGroupInUse", f"Security Group {oid} in use.")
        if obj.get("name") == "default" and STORE.default_sg.get(obj["project_id"]) == oid and not ctx["is_admin"]:
            raise HttpError(409, "SecurityGroupCannotRemoveDefault", "Insufficient rights for removing default security group.")
        for r in list(obj.get("security_group_rules", [])):
            STORE.coll("security-group-rules").pop(r["id"], None)
        for r in list(STORE.coll("security-group-rules").values()):
            if r.get("remote_group_id") == oid:
                raise HttpError(409, "SecurityGroupInUse", f"Security Group {oid} in use.")
        if STORE.default_sg.get(obj["project_id"]) == oid:
            STORE.default_sg.pop(obj["project_id"])
    elif coll == "security-group-rules":
        sg = STORE.coll("security-groups").get(obj["security_group_id"])
        if sg:
            sg["security_group_rules"] = [r for r in sg["security_group_rules"] if r["id"] != oid]
    elif coll == "networks":
        ports = [p for p in STORE.coll("ports").values() if p["network_id"] == oid]
        if any(not p.get("device_owner", "").startswith("network:") for p in ports):
            raise HttpError(409, "NetworkInUse", f"Unable to complete operation on network {oid}. There are one or more ports still in use on the network.")
        for p in ports:
            STORE.coll("ports").pop(p["id"], None)
        for s in obj.get("subnets", []):
            STORE.coll("subnets").pop(s, None)
    elif coll == "subnets":
        if used_ips(oid):
            raise HttpError(409, "SubnetInUse", f"Unable to complete operation on subnet {oid}: One or more ports have an IP allocation from this subnet.")
        net = STORE.coll("networks").get(obj["network_id"])
        if net:
            net["subnets"] = [s for s in net["subnets"] if s != oid]
    STORE.coll(coll).pop(oid, None)


def seed_neutron(spec):
    """Networks and subnets with fixed ids, created as admin on behalf of their projects."""
    admin = {"project_id": None, "is_admin": True, "roles": ["admin"], "user_id": "seed"}
    with LOCK:
        for n in spec.get("networks", []):
            obj = create_object(admin, "networks", dict(n))
            real = STORE.coll("networks").pop(obj["id"])
            real["id"] = n["id"]
            STORE.coll("networks")[n["id"]] = real
        for s in spec.get("subnets", []):
            obj = create_object(admin, "subnets", dict(s))
            real = STORE.coll("subnets").pop(obj["id"])
            net = STORE.coll("networks")[real["network_id"]]
            net["subnets"] = [s["id"] if x == obj["id"] else x for x in net["subnets"]]
            real["id"] = s["id"]
            STORE.coll("subnets")[s["id"]] = real


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", required=True, help="JSON file with images, networks and subnets")
    ap.add_argument("--keystone", default=KEYSTONE)
    ap.add_argument("--glance-port", type=int, default=9292)
    ap.add_argument("--neutron-port", type=int, default=9696)
    args = ap.parse_args()
    with open(args.seed) as f:
        spec = json.load(f)
    auth = Auth(args.keystone)
    Glance.auth = Neutron.auth = auth
    Glance.stats, Neutron.stats = Stats(), Stats()
    Glance.images = [make_image(i) for i in spec.get("images", [])]
    seed_neutron(spec)
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 128
    g = ThreadingHTTPServer(("127.0.0.1", args.glance_port), Glance)
    n = ThreadingHTTPServer(("127.0.0.1", args.neutron_port), Neutron)
    threading.Thread(target=g.serve_forever, daemon=True).start()
    print(f"stand-ins: glance on :{args.glance_port}, neutron on :{args.neutron_port}", flush=True)
    n.serve_forever()


if __name__ == "__main__":
    main()
