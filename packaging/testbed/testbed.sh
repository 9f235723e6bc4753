#!/usr/bin/env bash
# A multi-host rpool testbed on Docker: 3 controllers and 6 agent hosts, each
# a container with its own address on a private network (172.31.250.0/24),
# agents with simulated hardware and kubesim, bootstrapped exactly as on
# servers: `rpoolctl pki init`, controllers started with their certificates,
# `rpoolctl token create`, agents enrolling with token + CA pin.
#
#   packaging/testbed/testbed.sh up [--compose]   # start (plain docker, or docker-compose)
#   packaging/testbed/testbed.sh status           # rpoolctl status + host list
#   packaging/testbed/testbed.sh ctl ARGS...      # rpoolctl against the testbed
#   packaging/testbed/testbed.sh replace-controller 2 4   # controller 2 dies, a new 4 replaces it
#   RPOOL_IMAGE=rpool:NEW packaging/testbed/testbed.sh upgrade ctl 2   # controller 2 (or: host 5)
#                                                 # restarted from another image, same volume
#   packaging/testbed/testbed.sh down             # remove containers, network, volumes, files
#
# Needs the image (packaging/image.sh). RPOOL_IMAGE (default rpool:VERSION)
# picks another; RPOOL_TESTBED_DIR (default target/testbed) holds the PKI,
# the configs and the ctl.toml that `rpoolctl --config` uses from this machine.
# Two testbeds can run side by side with their own names and subnets:
# RPOOL_TESTBED_NAME (default rpool: containers NAME-ctl-N and NAME-host-N,
# network and volumes NAME-testbed*) and RPOOL_TESTBED_SUBNET (default
# 172.31.250.0/24; a /24, controllers at .11-.13, hosts at .21-.26).
# RPOOL_TESTBED_CONTROLLER_TOML: TOML appended to every controller.toml
# (e.g. [liveness], [healing] or [metrics] settings for a test).
# RPOOL_CTL: the rpoolctl binary to use from this machine.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)"
export RPOOL_IMAGE="${RPOOL_IMAGE:-rpool:$version}"
export RPOOL_TESTBED_DIR="${RPOOL_TESTBED_DIR:-$repo/target/testbed}"
dir="$RPOOL_TESTBED_DIR"
name="${RPOOL_TESTBED_NAME:-rpool}"
case "$name" in
  ''|*[!a-z0-9-]*) echo "testbed: RPOOL_TESTBED_NAME must be lowercase letters, digits and '-' (got '$name')" >&2; exit 64 ;;
esac
net="$name-testbed"
subnet_cidr="${RPOOL_TESTBED_SUBNET:-172.31.250.0/24}"
subnet="${subnet_cidr%.0/24}"
if ! [[ "$subnet_cidr" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.0/24$ ]]; then
  echo "testbed: RPOOL_TESTBED_SUBNET must be a /24 written A.B.C.0/24 (got '$subnet_cidr')" >&2; exit 64
fi
controller_toml="${RPOOL_TESTBED_CONTROLLER_TOML:-}"
controllers=3
hosts=6
zones=(a b c)
compose_file="$repo/packaging/compose.yaml"
wait_s=60

ctl_addr() { echo "$subnet.$((10 + $1)):7443"; }
host_ip() { echo "$subnet.$((20 + $1))"; }
all_ctl() { local n out=(); for n in $(seq 1 $controllers); do out+=("\"$(ctl_addr "$n")\""); done; local IFS=,; echo "${out[*]}"; }

# rpoolctl from this machine: the built one if any, else the image's
# (on the testbed network).
rpoolctl() {
  local bin
  for bin in ${RPOOL_CTL:-} "$repo/target/release/rpoolctl" "$repo/target/debug/rpoolctl"; do
    if [ -x "$bin" ]; then "$bin" --config "$dir/ctl.toml" "$@"; return; fi
  done
  docker run --rm -i --network "$net" -v "$dir:$dir:ro" "$RPOOL_IMAGE" rpoolctl --config "$dir/ctl.toml" "$@"
}

# Waits up to wait_s for CMD to succeed.
wait_for() {
  local what="$1"; shift
  local deadline=$((SECONDS + wait_s))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "testbed: $what not reached in ${wait_s}s" >&2; "$@" || true; return 1; fi
    sleep 1
  done
}

init_files() {
  rm -rf "$dir"
  mkdir -p "$dir"
  local peers=() n i
  for n in $(seq 1 $controllers); do peers+=(--peer "$n=$(ctl_addr "$n")"); done
  docker run --rm -v "$dir:/testbed" "$RPOOL_IMAGE" rpoolctl pki init --dir /testbed/pki "${peers[@]}" >/dev/null
  for n in $(seq 1 $controllers); do
    local c="$dir/ctl-$n"
    mkdir -p "$c/pki"
    cp "$dir/pki/ca.crt" "$dir/pki/ca.key" "$c/pki/"
    cp "$dir/pki/controller-$n.crt" "$c/pki/controller.crt"
    cp "$dir/pki/controller-$n.key" "$c/pki/controller.key"
    {
      echo "# controller $n of the rpool Docker testbed"
      echo "id = $n"
      echo "listen = \"0.0.0.0:7443\""
      echo "advertise = \"$(ctl_addr "$n")\""
      echo "data_dir = \"/var/lib/rpool/controller\""
      for i in $(seq 1 $controllers); do printf '\n[[peers]]\nid = %s\naddress = "%s"\n' "$i" "$(ctl_addr "$i")"; done
      printf '\n[tls]\nca = "/etc/rpool/pki/ca.crt"\ncert = "/etc/rpool/pki/controller.crt"\n'
      printf 'key = "/etc/rpool/pki/controller.key"\nca_key = "/etc/rpool/pki/ca.key"\n'
      [ -z "$controller_toml" ] || printf '\n%s\n' "$controller_toml"
    } >"$c/controller.toml"
  done
  printf 'controllers = [%s]\n\n[tls]\nca = "pki/ca.crt"\ncert = "pki/admin.crt"\nkey = "pki/admin.key"\n' \
    "$(all_ctl)" >"$dir/ctl.toml"
}

agent_files() {
  local token="$1" pin="$2" i
  for i in $(seq 1 $hosts); do
    local h="$dir/host-$i" zone="${zones[$(((i - 1) % ${#zones[@]}))]}"
    mkdir -p "$h"
    ( umask 077; printf '%s\n' "$token" >"$h/enroll-token" )
    # The container runtime's socket, as containerd leaves it on a server
    # (nothing listens: kubesim's CRI preflight only needs it to exist),
    # bind-mounted at <host_root>/run/containerd.
    rm -rf "$h/containerd"
    mkdir -p "$h/containerd"
    python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$h/containerd/containerd.sock"
    cat >"$h/agent.toml" <<TOML
# host $i of the rpool Docker testbed
controllers = [$(all_ctl)]
state_dir = "/var/lib/rpool/agent"
zone = "$zone"

[kube]
kubeadm_path = "/usr/libexec/kubesim/kubeadm"
kubectl_path = "/usr/libexec/kubesim/kubectl"
# kubesim keeps this simulated host's /etc/kubernetes under KUBESIM_NODE_ROOT.
host_root = "/var/lib/rpool/node"

[simulate]
file = "/etc/rpool/simulated-host.toml"

[enroll]
token_file = "/etc/rpool/enroll-token"
ca_pin = "$pin"
TOML
    cat >"$h/simulated-host.toml" <<TOML
logical_cores = $((16 * (1 + i % 2)))
memory = "$((64 * (1 + i % 2)))GiB"
zone = "$zone"
hostname = "host-$i"
cpu_percent = 10.0
memory_used = "4GiB"
TOML
  done
}

start_controller() {
  local n="$1"
  docker run -d --name "$name-ctl-$n" --hostname "ctl-$n" --network "$net" --ip "$subnet.$((10 + n))" \
    -v "$net-ctl-$n:/var/lib/rpool/controller" -v "$dir/ctl-$n:/etc/rpool:ro" \
    "$RPOOL_IMAGE" rpool-controller --config /etc/rpool/controller.toml >/dev/null
}

start_controllers_docker() {
  docker network inspect "$net" >/dev/null 2>&1 || docker network create --subnet "$subnet_cidr" "$net" >/dev/null
  local n
  for n in $(seq 1 $controllers); do start_controller "$n"; done
}

# Replaces controller OLD (its container is removed, as if the host died)
# by a new controller NEW (id and address SUBNET.(10+NEW)), with rpool's
# own tools: `pki controller-cert`, a config whose id is not among the
# initial [[peers]] (it starts empty), `controller remove OLD`,
# `controller add NEW ADDR`.
replace_controller() {
  local old="${1:?usage: testbed.sh replace-controller OLD NEW}" new="${2:?usage: testbed.sh replace-controller OLD NEW}"
  case "$new" in ''|*[!0-9]*) echo "testbed: NEW must be a number in 4..=99 (got $new)" >&2; exit 64 ;; esac
  [ "$new" -ge 4 ] && [ "$new" -le 99 ] || { echo "testbed: NEW must be in 4..=99 (got $new)" >&2; exit 64; }
  local c="$dir/ctl-$new"
  docker run --rm -v "$dir:/testbed" "$RPOOL_IMAGE" \
    rpoolctl pki controller-cert "$new" "$(ctl_addr "$new")" --dir /testbed/pki >/dev/null
  mkdir -p "$c/pki"
  cp "$dir/pki/ca.crt" "$dir/pki/ca.key" "$c/pki/"
  cp "$dir/pki/controller-$new.crt" "$c/pki/controller.crt"
  cp "$dir/pki/controller-$new.key" "$c/pki/controller.key"
  sed -e "0,/^id = .*/s//id = $new/" -e "s/^advertise = .*/advertise = \"$(ctl_addr "$new")\"/" \
    -e "s/^# controller 1 of/# controller $new of/" "$dir/ctl-1/controller.toml" >"$c/controller.toml"
  docker rm -f "$name-ctl-$old" >/dev/null
  start_controller "$new"
  rpoolctl controller remove "$old" --yes
  rpoolctl controller add "$new" "$(ctl_addr "$new")"
}

start_agent() {
  local i="$1"
  docker run -d --name "$name-host-$i" --hostname "host-$i" --network "$net" --ip "$(host_ip "$i")" \
    -e KUBESIM_STATE_DIR=/kubesim -e KUBESIM_NODE_ROOT=/var/lib/rpool/node \
    -e KUBESIM_HOSTNAME="host-$i" -e KUBESIM_NODE_IP="$(host_ip "$i")" \
    -v "$net-kubesim:/kubesim" -v "$net-host-$i:/var/lib/rpool" -v "$dir/host-$i:/etc/rpool:ro" \
    -v "$dir/host-$i/containerd:/var/lib/rpool/node/run/containerd" \
    "$RPOOL_IMAGE" rpool-agent --config /etc/rpool/agent.toml >/dev/null
}

start_agents_docker() {
  local i
  for i in $(seq 1 $hosts); do start_agent "$i"; done
}

# Replaces the container of controller N (`upgrade ctl N`) or agent host N
# (`upgrade host N`) by one of $RPOOL_IMAGE: stopped with SIGTERM (10 s
# grace), removed, started again on the same data volume, config and
# address, as a package upgrade restarts the service on a server. Waiting
# for it to rejoin is the caller's (the fault suite's rolling-upgrade).
upgrade() {
  local kind="${1:-}" n="${2:-}"
  case "$n" in ''|*[!0-9]*) echo "testbed: upgrade ctl|host N: N must be a number (got '$n')" >&2; exit 64 ;; esac
  case "$kind" in
    ctl) docker stop -t 10 "$name-ctl-$n" >/dev/null; docker rm "$name-ctl-$n" >/dev/null; start_controller "$n" ;;
    host) docker stop -t 10 "$name-host-$n" >/dev/null; docker rm "$name-host-$n" >/dev/null; start_agent "$n" ;;
    *) echo "testbed: upgrade ctl|host N (got '$kind')" >&2; exit 64 ;;
  esac
  echo "$kind-$n now runs $RPOOL_IMAGE"
}

hosts_ready() {
  [ "$(rpoolctl host list -o json | grep -o '"state": *"ready"' | wc -l)" -ge "$hosts" ]
}

up() {
  docker image inspect "$RPOOL_IMAGE" >/dev/null 2>&1 || { echo "testbed: no image $RPOOL_IMAGE (run packaging/image.sh)" >&2; exit 69; }
  init_files
  if [ "${1:-}" = "--compose" ]; then
    if [ "$name" != rpool ] || [ "$subnet_cidr" != 172.31.250.0/24 ] || [ -n "$controller_toml" ]; then
      echo "testbed: --compose runs packaging/compose.yaml as written: only the default RPOOL_TESTBED_NAME and RPOOL_TESTBED_SUBNET, no RPOOL_TESTBED_CONTROLLER_TOML" >&2; exit 64
    fi
    docker-compose -f "$compose_file" -p rpool-testbed up -d ctl-1 ctl-2 ctl-3
  else
    start_controllers_docker
  fi
  wait_for "a controller leader" rpoolctl status
  local created token pin
  created="$(rpoolctl token create --uses "$hosts" --ttl 1h --description testbed -o json)"
  token="$(printf '%s' "$created" | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')"
  pin="$(printf '%s' "$created" | sed -n 's/.*"ca_pin": *"\([^"]*\)".*/\1/p')"
  agent_files "$token" "$pin"
  if [ "${1:-}" = "--compose" ]; then
    docker-compose -f "$compose_file" -p rpool-testbed up -d
  else
    start_agents_docker
  fi
  wait_for "$hosts hosts ready" hosts_ready
  rpoolctl host list
  echo "testbed up: rpoolctl --config $dir/ctl.toml ... (or: $0 ctl ...)"
}

down() {
  local names
  names="$(docker ps -aq --filter name="^$name-(ctl|host)-[0-9]+\$")"
  [ -z "$names" ] || docker rm -f $names >/dev/null
  if [ "$name" = rpool ] && [ -f "$compose_file" ] && command -v docker-compose >/dev/null; then
    docker-compose -f "$compose_file" -p rpool-testbed down -v >/dev/null 2>&1 || true
  fi
  docker network rm "$net" >/dev/null 2>&1 || true
  local vols
  vols="$(docker volume ls -q --filter name="^$net")"
  [ -z "$vols" ] || docker volume rm $vols >/dev/null
  rm -rf "$dir"
  echo "testbed down"
}

case "${1:-}" in
  up) shift; up "$@" ;;
  down) down ;;
  status) rpoolctl status; rpoolctl host list ;;
  ctl) shift; rpoolctl "$@" ;;
  replace-controller) shift; replace_controller "$@" ;;
  upgrade) shift; upgrade "$@" ;;
  *) sed -n '2,24p' "$0"; exit 64 ;;
esac
