#!/usr/bin/env bash
# kelp's OpenStack test peer: real Keystone + Nova (fake virt driver) + Placement + RabbitMQ on
# 127.0.0.1, with stand-ins for Glance and Neutron (standins.py). See README.md beside this file.
#
#   peer.sh start    install if needed (venv cached), start everything fresh, seed, prove a boot,
#                    write $KELP_OS_STATE/peer.env
#   peer.sh stop     stop everything started (the venv stays)
#   peer.sh status   say which service answers
#
# Env: KELP_OS_VENV (default /var/tmp/kelp-os-venv), KELP_OS_STATE (default /var/tmp/kelp-os-state).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${KELP_OS_VENV:-/var/tmp/kelp-os-venv}"
STATE="${KELP_OS_STATE:-/var/tmp/kelp-os-state}"
T0=$EPOCHREALTIME

elapsed() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[peer %6ss] %s\n' "$(elapsed)" "$*"; }
die() {
  echo "peer.sh: ERROR: $1" >&2
  shift
  for f in "$@"; do
    if [ -f "$f" ]; then
      echo "----- tail of $f" >&2
      tail -n 40 "$f" >&2
    fi
  done
  exit 1
}

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------
venv_ok() { # cheap: the stamp is written only after a complete install
  [ -x "$VENV/bin/uwsgi" ] && [ -x "$VENV/bin/nova-compute" ] && [ -x "$VENV/bin/keystone-manage" ] &&
    cmp -s "$HERE/requirements.lock" "$VENV/.kelp-requirements.lock"
}

install_venv() {
  if venv_ok; then return; fi
  local t=$(date +%s)
  log "installing OpenStack services into $VENV (cold install, a few minutes)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # uv installs the ~150 pinned wheels in seconds; plain pip (the fallback) takes minutes.
  if "$VENV/bin/pip" install -q 'uv==0.13.9' >"$VENV/.install.log" 2>&1; then
    "$VENV/bin/uv" pip install -q -p "$VENV/bin/python" -r "$HERE/requirements.lock" >>"$VENV/.install.log" 2>&1 ||
      die "uv pip install failed" "$VENV/.install.log"
  else
    "$VENV/bin/pip" install -q -r "$HERE/requirements.lock" >>"$VENV/.install.log" 2>&1 ||
      die "pip install failed" "$VENV/.install.log"
  fi
  "$VENV/bin/python" -c 'import keystone, nova, placement, keystoneauth1, requests' >>"$VENV/.install.log" 2>&1 ||
    die "the services do not import after the install" "$VENV/.install.log"
  cp "$HERE/requirements.lock" "$VENV/.kelp-requirements.lock"
  venv_ok || die "the venv at $VENV is still incomplete after installing" "$VENV/.install.log"
  log "installed in $(($(date +%s) - t)) s"
}

install_rabbitmq() {
  if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then return; fi
  log "installing rabbitmq-server (apt)"
  local SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! $SUDO apt-get install -y -qq --no-install-recommends rabbitmq-server >/tmp/kelp-os-apt.log 2>&1; then
    $SUDO apt-get update -qq >>/tmp/kelp-os-apt.log 2>&1 || true
    $SUDO apt-get install -y -qq --no-install-recommends rabbitmq-server >>/tmp/kelp-os-apt.log 2>&1 ||
      die "apt-get install rabbitmq-server failed" /tmp/kelp-os-apt.log
  fi
}

# ---------------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------------
# Every daemon runs in its own session (setsid), so stop can end it and all its children by
# process group; its id is in $STATE/run/NAME.pgid, its output in $STATE/log/NAME.out.
spawn() {
  local name=$1
  shift
  setsid "$@" >"$STATE/log/$name.out" 2>&1 </dev/null &
  echo $! >"$STATE/run/$name.pgid"
}

# A recorded process group is ours if its leader is gone (a pid is not reused while its group
# lives) or if the leader's command line is one of ours (after a reboot, the pid may be anyone's).
ours() {
  local pg=$1 cmd
  if [ -r "/proc/$pg/cmdline" ]; then
    cmd=$(tr '\0' ' ' <"/proc/$pg/cmdline")
    case "$cmd" in
    *"$VENV"* | *"$STATE"* | *"$HERE"* | */usr/lib/rabbitmq/bin/rabbitmq-server* | "epmd -address 127.0.0.1"*) return 0 ;;
    *) return 1 ;;
    esac
  fi
  return 0
}

stop_all() {
  local dir="$STATE/run" f pg
  [ -d "$dir" ] || return 0
  local groups=()
  for f in "$dir"/*.pgid; do
    [ -e "$f" ] || continue
    pg=$(cat "$f")
    if kill -0 -- "-$pg" 2>/dev/null && ours "$pg"; then
      kill -TERM -- "-$pg" 2>/dev/null || true
      groups+=("$pg")
    fi
  done
  if [ ${#groups[@]} -gt 0 ]; then
    # The state is thrown away at the next start: no need to wait long for a graceful exit.
    for _ in $(seq 15); do
      local alive=0
      for pg in "${groups[@]}"; do
        kill -0 -- "-$pg" 2>/dev/null && alive=1
      done
      [ $alive = 0 ] && break
      sleep 0.2
    done
    for pg in "${groups[@]}"; do
      kill -KILL -- "-$pg" 2>/dev/null || true
    done
  fi
  rm -f "$dir"/*.pgid
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_http NAME URL SECONDS LOGS...: until URL answers with any HTTP status
wait_http() {
  local name=$1 url=$2 secs=$3
  shift 3
  local end=$(($(date +%s) + secs))
  while [ "$(date +%s)" -lt $end ]; do
    if curl -s -o /dev/null --max-time 5 "$url"; then return 0; fi
    check_all_alive "$@"
    sleep 0.2
  done
  die "$name did not answer at $url within ${secs}s" "$@"
}

check_alive() {
  local name=$1
  shift
  local f="$STATE/run/$name.pgid"
  if [ -f "$f" ] && ! kill -0 "$(cat "$f")" 2>/dev/null; then
    die "$name exited" "$STATE/log/$name.out" "$@"
  fi
}

check_all_alive() {
  local f
  for f in "$STATE"/run/*.pgid; do
    [ -e "$f" ] || continue
    f=$(basename "$f" .pgid)
    check_alive "$f" "$STATE/log/$f.log" "$@"
  done
}

# Runs a setup step in the background with its output in $STATE/log/setup-NAME.log.
step() {
  local name=$1
  shift
  ("$@") >"$STATE/log/setup-$name.log" 2>&1 &
  STEP_PIDS+=("$!:$name")
}
wait_steps() {
  local p
  for p in "${STEP_PIDS[@]}"; do
    wait "${p%%:*}" || die "setup step ${p#*:} failed" "$STATE/log/setup-${p#*:}.log"
  done
  STEP_PIDS=()
}

render() { # render SRC DEST
  sed -e "s|@STATE@|$STATE|g" -e "s|@VENV@|$VENV|g" -e "s|@HERE@|$HERE|g" -e "s|@PYVER@|$PYVER|g" "$1" >"$2"
}

# ---------------------------------------------------------------------------------------------
# setup steps (each runs in the background)
# ---------------------------------------------------------------------------------------------
ks() { "$VENV/bin/keystone-manage" --config-file "$STATE/etc/keystone/keystone.conf" "$@"; }
nm() { "$VENV/bin/nova-manage" --config-file "$STATE/etc/nova/nova.conf" "$@"; }

setup_keystone_db() {
  ks db_sync
  ks bootstrap --bootstrap-password adminpw --bootstrap-username admin --bootstrap-project-name admin \
    --bootstrap-role-name admin --bootstrap-admin-url http://127.0.0.1:5001/v3/ \
    --bootstrap-internal-url http://127.0.0.1:5001/v3/ --bootstrap-public-url http://127.0.0.1:5001/v3/ \
    --bootstrap-region-id RegionOne
}

setup_nova_db() {
  nm api_db sync
  nm cell_v2 map_cell0 --database_connection "sqlite:///$STATE/db/nova_cell0.db?timeout=30"
  nm db sync
  nm cell_v2 create_cell --name cell1 --verbose
}

setup_placement_db() {
  "$VENV/bin/placement-manage" --config-file "$STATE/etc/placement/placement.conf" db sync
}

start_rabbitmq() {
  mkdir -p "$STATE/rabbit/conf.d" "$STATE/rabbit/mnesia" "$STATE/rabbit/log"
  echo "[]." >"$STATE/rabbit/enabled_plugins"
  cat >"$STATE/rabbit/conf.d/10-kelp.conf" <<'EOF'
listeners.tcp.1 = 127.0.0.1:5672
loopback_users = none
management_agent.disable_metrics_collector = true
EOF
  render "$HERE/conf/rabbitmq-env.sh" "$STATE/etc/rabbitmq-env.sh"
  (
    # shellcheck disable=SC1091
    . "$STATE/etc/rabbitmq-env.sh"
    # An epmd that is already there (another Erlang node) serves rabbit as well.
    port_open 4369 || spawn epmd epmd -address 127.0.0.1 -port 4369
    spawn rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server
  )
}

# ---------------------------------------------------------------------------------------------
# The freshly synced, empty databases (schemas + Keystone bootstrap + Nova cell mappings) are kept
# beside the venv, keyed by the pins, the config templates and the state path: a warm start
# copies them instead of running the ~1 min of migrations again. Everything else is new per start.
db_template_key() {
  {
    cat "$HERE/requirements.lock"
    grep -h -E '^(connection|transport_url) *=' "$HERE"/conf/*.conf
    declare -f setup_keystone_db setup_nova_db setup_placement_db
    echo "$STATE" "$VENV"
  } | sha256sum | cut -c1-16
}

make_databases() {
  local cache
  cache="$VENV/kelp-db-cache/$(db_template_key)"
  local dbs="keystone.db nova_api.db nova.db nova_cell0.db placement.db"
  if [ -f "$cache/complete" ]; then
    for db in $dbs; do cp "$cache/$db" "$STATE/db/$db"; done
    wal_mode $dbs
    log "databases copied from $cache"
    return
  fi
  log "creating the databases (first start with these pins: ~1-2 min)"
  STEP_PIDS=()
  step keystone-db setup_keystone_db
  step nova-db setup_nova_db
  step placement-db setup_placement_db
  wait_steps
  rm -rf "$VENV/kelp-db-cache"
  mkdir -p "$cache"
  for db in $dbs; do cp "$STATE/db/$db" "$cache/$db"; done
  touch "$cache/complete"
  wal_mode $dbs
  log "databases created"
}

# Write-ahead logging: readers never block the writer, and a writer waits (timeout=30 in the
# URLs) instead of failing at once with "database is locked" when a reader holds the file.
wal_mode() {
  "$VENV/bin/python" -c '
import sqlite3, sys
for db in sys.argv[2:]:
    c = sqlite3.connect(sys.argv[1] + "/" + db)
    assert c.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal", db
    c.close()
' "$STATE/db" "$@"
}

# Fernet and credential key repositories as keystone-manage fernet_setup/credential_setup make them
# (key 0 staged, key 1 primary), without paying for two more keystone-manage runs.
make_keys() {
  "$VENV/bin/python" -c '
import base64, os, sys
for repo in ("fernet-keys", "credential-keys"):
    d = os.path.join(sys.argv[1], repo)
    os.makedirs(d, mode=0o700, exist_ok=True)
    for n in ("0", "1"):
        fd = os.open(os.path.join(d, n), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, base64.urlsafe_b64encode(os.urandom(32)))
        os.close(fd)
' "$STATE/keystone"
}

wait_port() { # wait_port NAME PORT SECONDS LOGS...
  local name=$1 port=$2 secs=$3
  shift 3
  local end=$(($(date +%s) + secs))
  until port_open "$port"; do
    check_all_alive "$@"
    [ "$(date +%s)" -lt $end ] || die "$name did not listen on 127.0.0.1:$port within ${secs}s" "$@"
    sleep 0.2
  done
}

cmd_start() {
  install_rabbitmq
  install_venv
  PYVER=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

  stop_all
  for p in 5001 8774 8778 9292 9696 5672 25672; do
    port_open $p && die "port $p on 127.0.0.1 is already in use (another peer? try: peer.sh stop)"
  done
  rm -rf "$STATE"
  mkdir -p "$STATE"/{etc/keystone,etc/nova,etc/placement,log,run,db,keystone,nova-state/lock,nova-state/instances}
  render "$HERE/conf/keystone.conf" "$STATE/etc/keystone/keystone.conf"
  render "$HERE/conf/keystone-uwsgi.ini" "$STATE/etc/keystone/uwsgi.ini"
  render "$HERE/conf/nova.conf" "$STATE/etc/nova/nova.conf"
  render "$HERE/conf/nova-api-uwsgi.ini" "$STATE/etc/nova/uwsgi.ini"
  cp "$VENV/etc/nova/api-paste.ini" "$STATE/etc/nova/api-paste.ini"
  render "$HERE/conf/placement.conf" "$STATE/etc/placement/placement.conf"
  render "$HERE/conf/placement-uwsgi.ini" "$STATE/etc/placement/uwsgi.ini"
  cp "$HERE/conf/egi-mapping.json" "$STATE/etc/keystone/egi-mapping.json"
  # The fake driver's stable node identity (FakeDriverWithoutFakeNodes reads it).
  "$VENV/bin/python" -c 'import uuid; print(uuid.uuid4())' >"$STATE/nova-state/compute_id"
  make_keys

  start_rabbitmq
  make_databases
  log "starting keystone"
  spawn keystone "$VENV/bin/uwsgi" --ini "$STATE/etc/keystone/uwsgi.ini"
  wait_http keystone http://127.0.0.1:5001/v3 90 "$STATE/log/keystone-uwsgi.log" "$STATE/log/keystone.log"
  log "keystone up; seeding identity; starting placement and nova-api"
  # Keystone is on the critical path: the other API servers start once it answers (2 cores).
  spawn placement "$VENV/bin/uwsgi" --ini "$STATE/etc/placement/uwsgi.ini"
  spawn nova-api "$VENV/bin/uwsgi" --ini "$STATE/etc/nova/uwsgi.ini"
  "$VENV/bin/python" "$HERE/seed.py" identity "$STATE" >"$STATE/log/seed-identity.log" 2>&1 ||
    die "seeding keystone failed" "$STATE/log/seed-identity.log" "$STATE/log/keystone.log"
  # nova-conductor and nova-scheduler log in to Keystone as they start: after the service users.
  log "starting the stand-ins, nova-conductor, nova-scheduler"
  spawn standins "$VENV/bin/python" "$HERE/standins.py" --seed "$STATE/standins-seed.json"
  for svc in conductor scheduler; do
    PYTHONPATH="$HERE/pylib" spawn "nova-$svc" "$VENV/bin/nova-$svc" --config-file "$STATE/etc/nova/nova.conf"
  done
  # nova-compute registers its resource provider when it starts: Placement must answer by then.
  wait_http placement http://127.0.0.1:8778/ 90 "$STATE/log/placement-uwsgi.log" "$STATE/log/placement.log"
  wait_port rabbitmq 5672 90 "$STATE/log/rabbitmq.out" "$STATE/rabbit/log/rabbit@localhost.log"
  log "placement and rabbitmq up; starting nova-compute"
  PYTHONPATH="$HERE/pylib" spawn nova-compute "$VENV/bin/nova-compute" --config-file "$STATE/etc/nova/nova.conf"
  wait_http standins http://127.0.0.1:9696/ 30
  wait_http nova-api http://127.0.0.1:8774/ 90 "$STATE/log/nova-api-uwsgi.log"
  log "APIs answer; seeding flavors and quotas, waiting for the compute host"
  "$VENV/bin/python" "$HERE/seed.py" compute "$STATE" >"$STATE/log/seed-compute.log" 2>&1 ||
    die "seeding nova failed" "$STATE/log/seed-compute.log" "$STATE/log/nova-compute.log" \
      "$STATE/log/nova-scheduler.log" "$STATE/log/nova-api-uwsgi.log"
  log "compute host up and mapped; proving a boot end to end"
  "$VENV/bin/python" "$HERE/seed.py" check "$STATE" >"$STATE/log/seed-check.log" 2>&1 ||
    die "the end-to-end boot check failed" "$STATE/log/seed-check.log" "$STATE/log/nova-conductor.log" \
      "$STATE/log/nova-compute.log" "$STATE/log/nova-scheduler.log" "$STATE/log/standins.out"
  cat "$STATE/log/seed-check.log"
  log "peer ready in $(elapsed) s: $STATE/peer.env"
}

cmd_status() {
  local rc=0
  check() { # name url
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$2" || true)
    if [ -n "$code" ] && [ "$code" != 000 ]; then
      printf '%-16s up    %s (HTTP %s)\n' "$1" "$2" "$code"
    else
      printf '%-16s DOWN  %s\n' "$1" "$2"
      rc=1
    fi
  }
  check keystone http://127.0.0.1:5001/v3
  check nova-api http://127.0.0.1:8774/
  check placement http://127.0.0.1:8778/
  check glance-standin http://127.0.0.1:9292/versions
  check neutron-standin http://127.0.0.1:9696/
  if port_open 5672; then printf '%-16s up    amqp://127.0.0.1:5672\n' rabbitmq; else
    printf '%-16s DOWN  amqp://127.0.0.1:5672\n' rabbitmq
    rc=1
  fi
  for svc in conductor scheduler compute; do
    local f="$STATE/run/nova-$svc.pgid"
    if [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then
      printf '%-16s up    pid %s\n' "nova-$svc" "$(cat "$f")"
    else
      printf '%-16s DOWN\n' "nova-$svc"
      rc=1
    fi
  done
  return $rc
}

case "${1:-}" in
start) cmd_start ;;
stop)
  stop_all
  echo "peer stopped (state in $STATE, venv in $VENV kept)"
  ;;
status) cmd_status ;;
*)
  echo "usage: $0 start|stop|status" >&2
  exit 2
  ;;
esac
