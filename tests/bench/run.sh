#!/usr/bin/env bash
# Side-by-side committed-write benchmarks: a three-member etcd 3.4 (Debian's
# etcd-server) and an rpool controller trio, on 127.0.0.1, in one run.
#
#   tests/bench/run.sh            # full run (~5-8 min on 2 cores)
#   N_SEQ=2000 N_CONC=20000 CONC=128 CHANNELS=4 TRIALS=10 tests/bench/run.sh
#   KEEP=1 tests/bench/run.sh     # keep the work dir (logs, data) afterwards
#   SKIP_BUILD=1 ...              # use the release binaries already built
#   RPOOL_RAFT='election_ticks = 6' ...   # extra keys for controller.toml [raft]
#   SYSTEMS=rpool ...             # only these systems (etcd, etcd-tls, rpool;
#                                 # default all three)
#   PERF=1 ...                    # also count CPU time, context switches and
#                                 # sync syscalls of the three members per bench
#   TRACE=1 ...                   # also record 1 s of the three members' I/O
#                                 # syscalls (perf trace) during each sequential
#                                 # bench: $WORK/trace-NAME.txt, with the
#                                 # descriptors and sockets in trace-NAME.fds
#                                 # (implies KEEP=1)
#   BIN=/other/target/release ... # binaries to benchmark (default target/release)
#
# rpool runs with mutual TLS (as in production): `rpool-bench tls-setup`
# makes a CA, the three controllers' certificates, an admin certificate
# (--tls-dir of the rpool subcommands) and the agent's identity under $WORK/pki.
#
# Prints each result as a JSON line, then a Markdown table. Every process it
# starts is recorded in a pid file under the work dir and stopped on exit
# (SIGTERM, then SIGKILL after 10 s).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N_SEQ=${N_SEQ:-3000}
N_CONC=${N_CONC:-30000}
CONC=${CONC:-128}
CHANNELS=${CHANNELS:-4}
TRIALS=${TRIALS:-10}
ETCD=${ETCD:-/usr/bin/etcd}
SYSTEMS=${SYSTEMS:-etcd etcd-tls rpool}
RPOOL_RAFT=${RPOOL_RAFT:-}
WORK=$(mktemp -d /tmp/rpool-bench.XXXXXX)
RESULTS=$WORK/results.jsonl
BIN=${BIN:-$ROOT/target/release}  # where rpool-controller, rpool-agent, rpool-bench are
BENCH=$BIN/rpool-bench

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Stops every process whose pid file matches $1 (a glob under $WORK).
stop_pids() {
  local pattern=$1 f pid
  local pids=()
  for f in $WORK/$pattern; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$f"
  done
  local i
  for i in $(seq 1 100); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

cleanup() {
  local rc=$?
  stop_pids '*.pid'
  if [ "${KEEP:-0}" = 1 ] || [ "${TRACE:-0}" = 1 ] || [ $rc != 0 ]; then
    log "work dir kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# N free loopback ports, space-separated.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# Waits (bounded) until `cmd...` succeeds.
retry() {
  local tries=$1; shift
  local i
  for i in $(seq 1 "$tries"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "gave up waiting for: $*"
  return 1
}

# PERF_GLOB: pid files (under $WORK) of the members perf stat attaches to.
PERF_GLOB=""
run_bench() {
  local name=$1; shift
  log "$name: uptime:$(uptime)"
  echo "{\"uptime_before\": \"$(uptime | sed 's/.*load average: //')\", \"run\": \"$name\"}" >>"$RESULTS"
  local perf_pid=""
  if [ "${PERF:-0}" = 1 ] && [ -n "$PERF_GLOB" ] && command -v perf >/dev/null; then
    local pids
    pids=$(cat $WORK/$PERF_GLOB | paste -sd,)
    perf stat -x, -o "$WORK/perf-$name.csv" -p "$pids" -e task-clock,context-switches \
      -e syscalls:sys_enter_sync_file_range,syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync &
    perf_pid=$!
    echo $perf_pid >"$WORK/perf.pid"
    sleep 0.3
  fi
  local trace_pid=""
  if [ "${TRACE:-0}" = 1 ] && [ -n "$PERF_GLOB" ] && [[ $name == *-seq ]] && command -v perf >/dev/null; then
    local pids
    pids=$(cat $WORK/$PERF_GLOB | paste -sd,)
    # Start 1 s in, trace 1 s: a steady stretch of one write at a time.
    (sleep 1; exec timeout -s INT 1 perf trace -p "$pids" -o "$WORK/trace-$name.txt" \
      -e read,readv,recvfrom,recvmsg,write,writev,sendto,sendmsg,pwrite64,fdatasync,fsync,futex,epoll_wait,epoll_pwait) &
    trace_pid=$!
  fi
  "$BENCH" "$@" 2> >(sed "s/^/  [$name] /" >&2) | tee -a "$RESULTS"
  if [ -n "$trace_pid" ]; then
    wait "$trace_pid" 2>/dev/null || true
    # What the descriptors and threads were: the summary needs them.
    local pid
    for pid in $(cat $WORK/$PERF_GLOB); do
      { echo "pid $pid tasks $(ls /proc/$pid/task | paste -sd,)"
        for fd in /proc/$pid/fd/*; do echo "fd $pid ${fd##*/} $(readlink "$fd")"; done
      } >>"$WORK/trace-$name.fds" 2>/dev/null || true
    done
    ss -tnpei >>"$WORK/trace-$name.fds" 2>/dev/null || true
    log "$name: syscall trace in $WORK/trace-$name.txt (descriptors: trace-$name.fds)"
  fi
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    rm -f "$WORK/perf.pid"
    python3 - "$WORK/perf-$name.csv" "$name" >>"$RESULTS" <<'PY'
import json, sys
out = {"perf": sys.argv[2]}
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 3 and f[0] and not line.startswith("#"):
        try:
            out[f[2].replace("syscalls:sys_enter_", "")] = float(f[0])
        except ValueError:
            pass
print(json.dumps(out))
PY
  fi
}

# --- 1. etcd and the rpool binaries ------------------------------------------
if ! [ -x "$ETCD" ]; then
  log "installing etcd-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  # The package may start a default member (systemd); this script does not use it.
fi
log "etcd: $("$ETCD" --version | head -1)"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building rpool (release)"
  (cd "$ROOT" && cargo build --release --quiet -p rpool-controller -p rpool-agent -p rpool-tests --bins)
fi

log "machine: $(nproc) cores, $(free -h | awk '/Mem:/{print $2}') RAM, kernel $(uname -r), work dir $WORK on $(df -T "$WORK" | awk 'NR==2{print $1" "$2}')"
run_bench disk-sync disk-sync --dir "$WORK/flush" --n 1000
rm -rf "$WORK/flush"

# --- 2. etcd ------------------------------------------------------------------
# run_etcd etcd|etcd-tls: three fresh members, the etcd benches, stop.
# etcd-tls is mutual TLS on clients and peers, as kubeadm runs etcd
# (certificates from `rpool-bench tls-setup`, the client uses admin.crt).
run_etcd() {
  local variant=$1 scheme=http tls_flags="" client_tls=() i c p
  local dir=$WORK/$variant
  mkdir -p "$dir"
  read -r -a P <<<"$(free_ports 6)"
  if [ "$variant" = etcd-tls ]; then
    scheme=https
    "$BENCH" tls-setup --dir "$dir/pki" \
      --peers "1=127.0.0.1:${P[0]},2=127.0.0.1:${P[1]},3=127.0.0.1:${P[2]}" >/dev/null
    client_tls=(--tls-dir "$dir/pki")
  fi
  local cluster="m1=$scheme://127.0.0.1:${P[3]},m2=$scheme://127.0.0.1:${P[4]},m3=$scheme://127.0.0.1:${P[5]}"
  ETCD_EPS=""
  for i in 1 2 3; do
    c=${P[$((i-1))]}; p=${P[$((i+2))]}
    if [ "$variant" = etcd-tls ]; then
      tls_flags="--cert-file $dir/pki/controller-$i.crt --key-file $dir/pki/controller-$i.key \\
  --trusted-ca-file $dir/pki/ca.crt --client-cert-auth \\
  --peer-cert-file $dir/pki/controller-$i.crt --peer-key-file $dir/pki/controller-$i.key \\
  --peer-trusted-ca-file $dir/pki/ca.crt --peer-client-cert-auth"
    fi
    cat >"$WORK/$variant-$i.start.sh" <<SH
# Starts $variant member m$i in the background and records its pid.
cd "$WORK"
nohup "$ETCD" --name m$i --data-dir "$dir/data-$i" \\
  --listen-client-urls $scheme://127.0.0.1:$c --advertise-client-urls $scheme://127.0.0.1:$c \\
  --listen-peer-urls $scheme://127.0.0.1:$p --initial-advertise-peer-urls $scheme://127.0.0.1:$p \\
  --initial-cluster $cluster --initial-cluster-state new --initial-cluster-token rpool-bench \\
  $tls_flags \\
  --logger zap --log-level warn \\
  >>"$dir/log-$i" 2>&1 </dev/null &
echo \$! >"$WORK/$variant-$i.pid"
SH
    ETCD_EPS+="${ETCD_EPS:+,}127.0.0.1:$c"
  done
  log "$variant member 1 command: $(sed -n '/nohup/,/warn/p' "$WORK/$variant-1.start.sh" | tr -d '\\\n' | tr -s ' ')"
  for i in 1 2 3; do bash "$WORK/$variant-$i.start.sh"; done
  retry 100 "$BENCH" "${client_tls[@]}" etcd-seq --endpoints "$ETCD_EPS" --n 1 --warmup 0
  PERF_GLOB="$variant-*.pid"
  run_bench "$variant-seq" "${client_tls[@]}" etcd-seq --endpoints "$ETCD_EPS" --n "$N_SEQ"
  run_bench "$variant-conc" "${client_tls[@]}" etcd-conc --endpoints "$ETCD_EPS" --n "$N_CONC" \
    --concurrency "$CONC" --channels "$CHANNELS"
  PERF_GLOB=""
  run_bench "$variant-failover" "${client_tls[@]}" etcd-failover --endpoints "$ETCD_EPS" --trials "$TRIALS" \
    --pidfiles "$WORK/$variant-1.pid,$WORK/$variant-2.pid,$WORK/$variant-3.pid" \
    --start-scripts "$WORK/$variant-1.start.sh,$WORK/$variant-2.start.sh,$WORK/$variant-3.start.sh"
  log "stopping $variant"
  stop_pids "$variant-*.pid"
  # The next system must not pay for this one's writeback: its data goes
  # and the disk is synced before anything else is measured.
  rm -rf "$dir"/data-*
  sync
}
for variant in etcd etcd-tls; do
  if [[ " $SYSTEMS " == *" $variant "* ]]; then run_etcd "$variant"; fi
done

# --- 3. rpool trio + one simulated agent -------------------------------------
if [[ " $SYSTEMS " == *" rpool "* ]]; then
read -r -a P <<<"$(free_ports 3)"
A=$WORK/agent
PKI=$WORK/pki
export RPOOL_BENCH_TLS_DIR=$PKI
"$BENCH" tls-setup --dir "$PKI" --agent-state "$A/state" \
  --peers "1=127.0.0.1:${P[0]},2=127.0.0.1:${P[1]},3=127.0.0.1:${P[2]}" >/dev/null
RPOOL_EPS=""
for i in 1 2 3; do
  d=$WORK/controller-$i
  mkdir -p "$d"
  {
    echo "id = $i"
    echo "listen = \"127.0.0.1:${P[$((i-1))]}\""
    echo "data_dir = \"$d/data\""
    printf '\n[tls]\nca = "%s"\ncert = "%s"\nkey = "%s"\nca_key = "%s"\n' \
      "$PKI/ca.crt" "$PKI/controller-$i.crt" "$PKI/controller-$i.key" "$PKI/ca.key"
    [ -n "$RPOOL_RAFT" ] && printf '\n[raft]\n%s\n' "$RPOOL_RAFT"
    for j in 1 2 3; do
      printf '\n[[peers]]\nid = %s\naddress = "127.0.0.1:%s"\n' "$j" "${P[$((j-1))]}"
    done
  } >"$d/controller.toml"
  cat >"$WORK/controller-$i.start.sh" <<SH
# Starts rpool controller $i in the background and records its pid.
cd "$d"
RPOOL_LOG=\${RPOOL_LOG:-info} nohup "$BIN/rpool-controller" --config "$d/controller.toml" \\
  >>"$d/log" 2>&1 </dev/null &
echo \$! >"$WORK/controller-$i.pid"
SH
  RPOOL_EPS+="${RPOOL_EPS:+,}127.0.0.1:${P[$((i-1))]}"
done
for i in 1 2 3; do bash "$WORK/controller-$i.start.sh"; done

mkdir -p "$A"
cat >"$A/hardware.toml" <<T
hostname = "bench-1"
zone = "a"
logical_cores = 8
physical_cores = 4
memory = "32GiB"
cpu_percent = 10.0
memory_used = "1GiB"
load_average = 0.5
T
cat >"$A/agent.toml" <<T
controllers = [$(echo "$RPOOL_EPS" | sed 's/[^,]*/"&"/g; s/,/, /g')]
state_dir = "$A/state"

[simulate]
file = "$A/hardware.toml"
T
# exec: the pid recorded is the agent's own, not a subshell's.
(cd "$A" && exec "$BIN/rpool-agent" --config "$A/agent.toml" >>"$A/log" 2>&1 </dev/null) &
echo $! >"$WORK/agent.pid"
retry 150 test -s "$A/state/host_id"
HOST_ID=$(cat "$A/state/host_id")
# Registered (GetHost answers) through the leader.
retry 150 "$BENCH" rpool-read --endpoints "$RPOOL_EPS" --host-id "$HOST_ID" --n 1 --warmup 0
PERF_GLOB='controller-*.pid'
log "rpool trio on $RPOOL_EPS, host $HOST_ID, controller.toml [raft]: ${RPOOL_RAFT:-defaults}"

run_bench rpool-seq rpool-seq --endpoints "$RPOOL_EPS" --host-id "$HOST_ID" --n "$N_SEQ"
run_bench rpool-conc rpool-conc --endpoints "$RPOOL_EPS" --host-id "$HOST_ID" --n "$N_CONC" --concurrency "$CONC" --channels "$CHANNELS"
run_bench rpool-read rpool-read --endpoints "$RPOOL_EPS" --host-id "$HOST_ID" --n "$N_SEQ"
PERF_GLOB=""
run_bench rpool-failover rpool-failover --endpoints "$RPOOL_EPS" --host-id "$HOST_ID" --trials "$TRIALS" \
  --pidfiles "$WORK/controller-1.pid,$WORK/controller-2.pid,$WORK/controller-3.pid" \
  --start-scripts "$WORK/controller-1.start.sh,$WORK/controller-2.start.sh,$WORK/controller-3.start.sh"
log "stopping rpool"
stop_pids '*.pid'
fi

# --- 4. table -----------------------------------------------------------------
python3 - "$RESULTS" <<'PY'
import json, sys
r = {}
perf = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    j = json.loads(line)
    if "bench" in j:
        r[(j.get("system", ""), j["bench"])] = j
    if "perf" in j:
        s, b = j["perf"].rsplit("-", 1)
        perf[(s, b)] = j
def w(s, b):
    j = r.get((s, b))
    if not j: return "n/a"
    return f'{j["writes_per_s"]:,.0f}/s (p50 {j["latency_ms"]["p50"]} ms, p99 {j["latency_ms"]["p99"]} ms)'
def f(s):
    j = r.get((s, "failover"))
    if not j: return "n/a"
    return f'median {j["median_ms"]/1000:.2f} s, worst {j["worst_ms"]/1000:.2f} s ({j["trials"]} trials)'
conc = r.get(("etcd", "conc")) or r.get(("etcd-tls", "conc")) or r.get(("rpool", "conc")) or {}
print()
def ratio(e, b):
    e, p = r.get((e, b)), r.get(("rpool", b))
    if not e or not p: return "n/a"
    return f'{p["writes_per_s"] / e["writes_per_s"]:.2f}×'
print("| what | etcd 3.4, plaintext (this run) | etcd 3.4, mutual TLS (this run) | rpool, mutual TLS (this run) | rpool ÷ etcd plaintext | rpool ÷ etcd TLS | target |")
print("|---|---|---|---|---|---|---|")
print(f'| sequential committed writes/s, 3 nodes | {w("etcd","seq")} | {w("etcd-tls","seq")} | {w("rpool","seq")} | {ratio("etcd","seq")} | {ratio("etcd-tls","seq")} | ≥ 1.2× etcd |')
print(f'| concurrent committed writes/s, 3 nodes ({conc.get("concurrency","?")} in flight, {conc.get("channels","?")} conns) | {w("etcd","conc")} | {w("etcd-tls","conc")} | {w("rpool","conc")} | {ratio("etcd","conc")} | {ratio("etcd-tls","conc")} | ≥ 1.5× etcd |')
print(f'| leader kill -9 → next committed write | {f("etcd")} | {f("etcd-tls")} | {f("rpool")} | | | median ≤ 0.5 s, worst ≤ 1.0 s |')
s = r.get(("", "disk-sync"))
if s:
    print()
    print(f'the disk: file write+fdatasync p50 {s["file_write_fdatasync_ms"]["p50"]} ms (p99 {s["file_write_fdatasync_ms"]["p99"]})')
if perf:
    print()
    print("| per write (per read for rpool read), 3 members together, incl. 200 warm-up | CPU ms | context switches | sync_file_range | fdatasync | fsync |")
    print("|---|---|---|---|---|---|")
    for (s, b), p in sorted(perf.items()):
        j = r.get((s, b))
        if not j: continue
        n = j.get("acknowledged", j.get("reads", 0)) + 200
        g = lambda k: p.get(k, 0) / n
        print(f"| {s} {b} | {g('task-clock'):.3f} | {g('context-switches'):.1f} | {g('sync_file_range'):.2f} | {g('fdatasync'):.2f} | {g('fsync'):.2f} |")
rd = r.get(("rpool", "read"))
if rd:
    print(f'rpool GetHost on the leader (ReadIndex barrier): {rd["reads_per_s"]:,.0f}/s, p50 {rd["latency_ms"]["p50"]} ms')
PY
