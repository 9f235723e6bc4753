#!/usr/bin/env bash
# Side-by-side committed-write benchmarks: a three-member etcd 3.4 (Debian's
# etcd-server) and an rpool controller trio, on 127.0.0.1, in one run.
#
#   tests/bench/run.sh            # full run (~5-8 min on 2 cores)
#   N_SEQ=2000 N_CONC=20000 CONC=128 CHANNELS=4 TRIALS=10 tests/bench/run.sh
#   KEEP=1 tests/bench/run.sh     # keep the work dir (logs, data) afterwards
#   SKIP_BUILD=1 ...              # use the release binaries already built
#   RPOOL_RAFT='election_ticks = 6' ...   # extra keys for controller.toml [raft]
#   SYSTEMS=rpool ...             # only one system (etcd, rpool; default both)
#   PERF=1 ...                    # also count CPU time, context switches and
#                                 # sync syscalls of the three members per bench
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
SYSTEMS=${SYSTEMS:-etcd rpool}
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
  if [ "${KEEP:-0}" = 1 ] || [ $rc != 0 ]; then
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
  "$BENCH" "$@" 2> >(sed "s/^/  [$name] /" >&2) | tee -a "$RESULTS"
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
run_bench sled-flush sled-flush --dir "$WORK/flush" --n 1000
rm -rf "$WORK/flush"

# --- 2. etcd ------------------------------------------------------------------
read -r -a P <<<"$(free_ports 6)"
CLUSTER="m1=http://127.0.0.1:${P[3]},m2=http://127.0.0.1:${P[4]},m3=http://127.0.0.1:${P[5]}"
ETCD_EPS=""
for i in 1 2 3; do
  c=${P[$((i-1))]}; p=${P[$((i+2))]}
  cat >"$WORK/etcd-$i.start.sh" <<SH
# Starts etcd member m$i in the background and records its pid.
cd "$WORK"
nohup "$ETCD" --name m$i --data-dir "$WORK/etcd-$i" \\
  --listen-client-urls http://127.0.0.1:$c --advertise-client-urls http://127.0.0.1:$c \\
  --listen-peer-urls http://127.0.0.1:$p --initial-advertise-peer-urls http://127.0.0.1:$p \\
  --initial-cluster $CLUSTER --initial-cluster-state new --initial-cluster-token rpool-bench \\
  --logger zap --log-level warn \\
  >>"$WORK/etcd-$i.log" 2>&1 </dev/null &
echo \$! >"$WORK/etcd-$i.pid"
SH
  ETCD_EPS+="${ETCD_EPS:+,}127.0.0.1:$c"
done
log "etcd member 1 command: $(sed -n '/nohup/,/warn/p' "$WORK/etcd-1.start.sh" | tr -d '\\\n' | tr -s ' ')"
if [[ " $SYSTEMS " == *" etcd "* ]]; then
for i in 1 2 3; do bash "$WORK/etcd-$i.start.sh"; done
retry 100 "$BENCH" etcd-seq --endpoints "$ETCD_EPS" --n 1 --warmup 0
PERF_GLOB='etcd-*.pid'
run_bench etcd-seq etcd-seq --endpoints "$ETCD_EPS" --n "$N_SEQ"
run_bench etcd-conc etcd-conc --endpoints "$ETCD_EPS" --n "$N_CONC" --concurrency "$CONC" --channels "$CHANNELS"
PERF_GLOB=""
run_bench etcd-failover etcd-failover --endpoints "$ETCD_EPS" --trials "$TRIALS" \
  --pidfiles "$WORK/etcd-1.pid,$WORK/etcd-2.pid,$WORK/etcd-3.pid" \
  --start-scripts "$WORK/etcd-1.start.sh,$WORK/etcd-2.start.sh,$WORK/etcd-3.start.sh"
log "stopping etcd"
stop_pids 'etcd-*.pid'
fi

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
        s, b = j["perf"].split("-", 1)
        perf[(s, b)] = j
def w(s, b):
    j = r.get((s, b))
    if not j: return "n/a"
    return f'{j["writes_per_s"]:,.0f}/s (p50 {j["latency_ms"]["p50"]} ms, p99 {j["latency_ms"]["p99"]} ms)'
def f(s):
    j = r.get((s, "failover"))
    if not j: return "n/a"
    return f'median {j["median_ms"]/1000:.2f} s, worst {j["worst_ms"]/1000:.2f} s ({j["trials"]} trials)'
conc = r.get(("etcd", "conc")) or r.get(("rpool", "conc")) or {}
print()
def ratio(b):
    e, p = r.get(("etcd", b)), r.get(("rpool", b))
    if not e or not p: return "n/a"
    return f'{p["writes_per_s"] / e["writes_per_s"]:.2f}×'
print("| what | etcd 3.4 (this run) | rpool (this run) | rpool ÷ etcd | target |")
print("|---|---|---|---|---|")
print(f'| sequential committed writes/s, 3 nodes | {w("etcd","seq")} | {w("rpool","seq")} | {ratio("seq")} | ≥ 1.2× etcd |')
print(f'| concurrent committed writes/s, 3 nodes ({conc.get("concurrency","?")} in flight, {conc.get("channels","?")} conns) | {w("etcd","conc")} | {w("rpool","conc")} | {ratio("conc")} | ≥ 1.5× etcd |')
print(f'| leader kill -9 → next committed write | {f("etcd")} | {f("rpool")} | | median ≤ 0.5 s, worst ≤ 1.0 s |')
s = r.get(("", "sled-flush"))
if s:
    print()
    print(f'sled insert+flush p50 {s["sled_insert_flush_ms"]["p50"]} ms (p99 {s["sled_insert_flush_ms"]["p99"]}), '
          f'idle flush p50 {s["sled_idle_flush_ms"]["p50"]} ms, file write+fdatasync p50 {s["file_write_fdatasync_ms"]["p50"]} ms')
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
