#!/usr/bin/env bash
# Heartbeat scale: a controller trio on 127.0.0.1 (mutual TLS) and
# `rpool-loadgen` simulating AGENTS agents heartbeating every second, each on
# its own connection; then one real `rpool-agent` (simulated hardware) for its
# RSS and idle CPU.
#
#   tests/bench/heartbeats.sh                  # 10,000 agents, 60 s, kill 20
#   DURATION=600s tests/bench/heartbeats.sh    # the 10-minute false-positive run
#   AGENTS=2000 DURATION=30s RAMP=10s KILL=5 tests/bench/heartbeats.sh
#   STORM=1 ...         # also kill -9 the leader STORM_AT (default ramp + 20 s)
#                       # into the run: a reconnect storm (DURATION default 80s)
#   SKIP_BUILD=1 ...    # use the release binaries already built
#   SKIP_AGENT=1 ...    # skip the real-agent measurement
#   AGENT_SECONDS=60    # how long the real agent is measured
#   KEEP=1 ...          # keep the work dir (logs, samples) afterwards
#   RELAY=0 ...         # [liveness] relay_sessions = false: every agent keeps
#                       # its connection to the leader (default: the
#                       # followers hold them and relay the sessions)
#   FIRST=leader ...    # where each simulated agent connects first: agent
#                       # (default: the controller its host id hashes to, as
#                       # rpool-agent does), leader, round-robin
#   BIN=/other/target/release ...
#   HEAPTRACK=1 ...     # attach heaptrack to the leader (profile kept in the
#                       # work dir; use with KEEP=1 and fewer AGENTS)
#
# Measured: heartbeat RTT (send → HeartbeatAck) p50/p90/p99/max, acks/s,
# errors, reconnects, detection time of killed agents (controller's
# state_since minus kill time), false positives (non-killed hosts seen
# suspect/down after the ramp); the leader's CPU (utime+stime from
# /proc/<pid>/stat over the steady window, % of one core) and RSS (peak of
# 1 s samples and VmHWM); load average before and after. With STORM=1: the
# time from the leader's kill -9 until every live agent is in session with
# the new leader (the load generator's 100 ms timeline, by the controller id
# of each Welcome), the leaders seen by the survivors (sampled every 200 ms:
# one change is the failover, any more is a second election), false
# suspect/down hosts, and the new leader's RSS once the fleet is back. Every loop is
# bounded; every process started is recorded in a pid file and stopped on
# exit (SIGTERM, then SIGKILL after 10 s). Only loopback is used.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGENTS=${AGENTS:-10000}
INTERVAL=${INTERVAL:-1s}
if [ "${STORM:-0}" = 1 ]; then DURATION=${DURATION:-80s}; else DURATION=${DURATION:-60s}; fi
RAMP=${RAMP:-20s}
KILL=${KILL:-20}
AGENT_SECONDS=${AGENT_SECONDS:-60}
BIN=${BIN:-$ROOT/target/release}
WORK=$(mktemp -d /tmp/rpool-heartbeats.XXXXXX)
LOADGEN=$BIN/rpool-loadgen

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
secs() { # 60s / 10m / 500ms -> seconds (integer, rounded up)
  python3 -c "import re,sys,math; m=re.fullmatch(r'(\d+)(ms|s|m|h)', sys.argv[1]); n=int(m[1]); print(math.ceil(n*{'ms':0.001,'s':1,'m':60,'h':3600}[m[2]]))" "$1"
}

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

free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# Value of an unlabelled sample on a /metrics endpoint ("" if unreachable).
metric() {
  curl -s --max-time 2 "http://$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}

# Samples utime+stime (ticks) and VmRSS (kB) of every pid file matching the
# globs in $1 (space-separated)
# once a second, for at most $2 seconds, into $3.
sample() {
  local globs=$1 limit=$2 out=$3 i f g pid
  for i in $(seq 1 "$limit"); do
    for f in $(for g in $globs; do echo $WORK/$g; done); do
      pid=$(cat "$f" 2>/dev/null) || continue
      [ -r /proc/$pid/stat ] || continue
      local ticks rss
      ticks=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' /proc/$pid/stat)
      rss=$(awk '/^VmRSS:/ { print $2 }' /proc/$pid/status)
      echo "$(date +%s.%N) $(basename "$f" .pid) $ticks $rss" >>"$out"
    done
    sleep 1
  done
}

# --- 1. build, PKI -----------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building release binaries"
  (cd "$ROOT" && cargo build --release --quiet -p rpool-controller -p rpool-agent -p rpool-tests --bin rpool-controller --bin rpool-agent --bin rpool-loadgen)
fi
AGENT_ID=$(python3 -c 'import uuid; print(uuid.uuid4())')
"$LOADGEN" pki --dir "$WORK/pki" --controllers 3 --agent "$AGENT_ID"
log "machine: $(nproc) cores, $(free -h | awk '/Mem:/{print $2}') RAM, kernel $(uname -r); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# --- 2. controller trio ------------------------------------------------------
read -r -a P <<<"$(free_ports 6)"
EPS=""
for i in 1 2 3; do
  d=$WORK/controller-$i
  mkdir -p "$d"
  {
    echo "id = $i"
    echo "listen = \"127.0.0.1:${P[$((i-1))]}\""
    echo "data_dir = \"$d/data\""
    printf '\n[tls]\nca = "%s"\ncert = "%s"\nkey = "%s"\nca_key = "%s"\n' \
      "$WORK/pki/ca.crt" "$WORK/pki/controller-$i.crt" "$WORK/pki/controller-$i.key" "$WORK/pki/ca.key"
    printf '\n[metrics]\nlisten = "127.0.0.1:%s"\n' "${P[$((i+2))]}"
    [ "${RELAY:-1}" = 0 ] && printf '\n[liveness]\nrelay_sessions = false\n'
    for j in 1 2 3; do
      printf '\n[[peers]]\nid = %s\naddress = "127.0.0.1:%s"\n' "$j" "${P[$((j-1))]}"
    done
  } >"$d/controller.toml"
  (cd "$d" || exit 1; RPOOL_LOG=${RPOOL_LOG:-warn} nohup "$BIN/rpool-controller" --config "$d/controller.toml" \
     >>"$d/log" 2>&1 </dev/null & echo $! >"$WORK/controller-$i.pid")
  EPS+="${EPS:+,}127.0.0.1:${P[$((i-1))]}"
done
log "controllers: $EPS (metrics on ${P[3]}, ${P[4]}, ${P[5]})"

LEADER=""
for t in $(seq 1 150); do
  for i in 1 2 3; do
    if [ "$(metric "127.0.0.1:${P[$((i+2))]}" rpool_raft_is_leader)" = 1 ]; then LEADER=$i; break; fi
  done
  [ -n "$LEADER" ] && break
  sleep 0.2
done
[ -n "$LEADER" ] || { log "no leader after 30 s"; tail -20 "$WORK"/controller-*/log; exit 1; }
LEADER_METRICS="127.0.0.1:${P[$((LEADER+2))]}"
LEADER_PID=$(cat "$WORK/controller-$LEADER.pid")
log "leader: controller $LEADER (pid $LEADER_PID)"

if [ "${HEAPTRACK:-0}" = 1 ] && command -v heaptrack >/dev/null; then
  # Allocation profile of the leader for the whole run (attached; slows it).
  heaptrack -p "$LEADER_PID" -o "$WORK/leader.heaptrack" >"$WORK/heaptrack.log" 2>&1 &
  sleep 3
fi

# --- 3. load -------------------------------------------------------------------
RUN_S=$(secs "$DURATION")
sample 'controller-*.pid loadgen.pid' $((RUN_S + 30)) "$WORK/samples.txt" &
echo $! >"$WORK/sampler.pid"
leaders() { # every 200 ms: unix ms and each controller's leader id ("-" if unreachable)
  local limit=$1 out=$2 i n v line
  for n in $(seq 1 $((limit * 5))); do
    line="$(date +%s%3N)"
    for i in 1 2 3; do
      v=$(metric "127.0.0.1:${P[$((i+2))]}" rpool_raft_leader_id || true)
      line+=" ${v:--}"
    done
    echo "$line" >>"$out"
    sleep 0.2
  done
}
if [ "${STORM:-0}" = 1 ]; then
  leaders $(( $(secs "$DURATION") + 30 )) "$WORK/leaders.txt" &
  echo $! >"$WORK/leaders.pid"
fi
T0=$(date +%s.%N)
# The load generator runs at a lower priority (LOADGEN_NICE, default 10):
# it stands for agents on other machines, so it must not starve the
# controllers of the two cores they share with it here.
nice -n "${LOADGEN_NICE:-10}" "$LOADGEN" run --controllers "$EPS" --agents "$AGENTS" --interval "$INTERVAL" \
  --duration "$DURATION" --ramp "$RAMP" --kill "$KILL" --first "${FIRST:-agent}" \
  --ca-cert "$WORK/pki/ca.crt" --ca-key "$WORK/pki/ca.key" \
  --admin-cert "$WORK/pki/admin.crt" --admin-key "$WORK/pki/admin.key" \
  --json "$WORK/loadgen.json" --timeline "$WORK/timeline.txt" >/dev/null &
echo $! >"$WORK/loadgen.pid"
LOADGEN_PID=$(cat "$WORK/loadgen.pid")
if [ "${STORM:-0}" = 1 ]; then
  STORM_AT=${STORM_AT:-$(( $(secs "$RAMP") + 20 ))s}
  (
    sleep "$(secs "$STORM_AT")"
    echo "$(date +%s%3N) $(awk '/^VmRSS:/ { print $2 }' /proc/$LEADER_PID/status)" >"$WORK/storm.txt"
    kill -KILL "$LEADER_PID"
  ) &
  echo $! >"$WORK/storm.pid"
fi
if [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then
  # 15 s CPU profile of the leader from 5 s after the ramp.
  sleep $(( $(secs "$RAMP") + 5 ))
  perf record -F 499 ${PERF_CALLGRAPH:--g} -p "$LEADER_PID" -o "$WORK/leader.perf.data" -- sleep 15 >/dev/null 2>&1 || true
  perf report -i "$WORK/leader.perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -60 >"$WORK/leader.perf.txt" || true
  log "leader profile: $WORK/leader.perf.txt"
fi
wait "$LOADGEN_PID" || { log "loadgen failed"; exit 1; }
rm -f "$WORK/loadgen.pid"
LEADER_NOW=""
for i in 1 2 3; do
  [ "$(metric "127.0.0.1:${P[$((i+2))]}" rpool_raft_is_leader)" = 1 ] && LEADER_NOW=$i
done
if [ "${STORM:-0}" = 1 ]; then
  stop_pids 'leaders.pid'
  # The old leader is gone: the peak is the new leader's.
  [ -n "$LEADER_NOW" ] && HWM_PID=$(cat "$WORK/controller-$LEADER_NOW.pid") || HWM_PID=""
  HWM=$(awk '/^VmHWM:/ { print $2 }' /proc/${HWM_PID:-0}/status 2>/dev/null || echo 0)
  NEW_RSS=$(awk '/^VmRSS:/ { print $2 }' /proc/${HWM_PID:-0}/status 2>/dev/null || echo 0)
  python3 - "$WORK/storm.txt" "$WORK/timeline.txt" "$WORK/leaders.txt" "$LEADER" "${LEADER_NOW:-0}" "$AGENTS" "$KILL" "$NEW_RSS" "$HWM" >"$WORK/storm.json" <<'PY'
import json, sys
storm, timeline, leaders, old, new, agents, killed, new_rss, new_hwm = sys.argv[1:]
kill_ms, old_rss = (int(x) for x in open(storm).read().split())
old, new, expected = int(old), int(new), int(agents) - int(killed)
rows = [[int(x) for x in l.split()] for l in open(timeline) if l.strip()]
after = [r for r in rows if r[0] >= kill_ms]
# First sample where every live agent is in session with the new leader.
attached = next((r[0] for r in after if new and r[1 + new] >= expected), None)
low = min((r[1] for r in after), default=None)
seen = []  # leader ids named by the survivors after the kill, in order
for l in open(leaders):
    f = l.split()
    if int(f[0]) < kill_ms: continue
    for i, v in enumerate(f[1:], start=1):
        # The dead leader's own column, and survivors still naming it in
        # the first samples after the kill: not an election.
        if i == old or v in ("-", "0") or int(v) == old: continue
        if not seen or seen[-1] != int(v): seen.append(int(v))
print(json.dumps({
    "killed_leader": old, "new_leader": new,
    "all_attached_after_s": None if attached is None else round((attached - kill_ms) / 1000, 2),
    "expected_sessions": expected, "lowest_in_session": low,
    "leaders_after_kill": seen, "leader_changes_after_failover": max(len(seen) - 1, 0),
    "old_leader_rss_at_kill_mib": round(old_rss / 1024, 1),
    "new_leader_rss_after_mib": round(int(new_rss) / 1024, 1), "new_leader_vmhwm_mib": round(int(new_hwm) / 1024, 1),
}))
PY
else
  HWM=$(awk '/^VmHWM:/ { print $2 }' /proc/$LEADER_PID/status)
fi
curl -s --max-time 5 "http://$LEADER_METRICS/metrics" >"$WORK/leader-metrics.txt" || true
stop_pids 'sampler.pid'
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$WORK/samples.txt" "$T0" "$(secs "$RAMP")" "$RUN_S" "controller-$LEADER" "$HWM" "$WORK/loadgen.json" "$LOAD_AFTER" "$LEADER" "$LEADER_NOW" "$WORK/leader-metrics.txt" >"$WORK/controller.json" <<'PY'
import json, sys
samples, t0, ramp, run, leader, hwm, lg, load_after, lid, lnow, lm = sys.argv[1:]
t0, ramp, run = float(t0), float(ramp), float(run)
rows = [r for r in (l.split() for l in open(samples)) if len(r) == 4]
def window(name, a, b):
    pts = [(float(t), int(tk), int(rss)) for t, n, tk, rss in rows if n == name and a <= float(t) - t0 <= b]
    if len(pts) < 2: return None
    cpu = (pts[-1][1] - pts[0][1]) / 100.0 / (pts[-1][0] - pts[0][0]) * 100.0
    return {"cpu_percent_of_one_core": round(cpu, 1), "rss_peak_mib": round(max(p[2] for p in pts) / 1024, 1)}
out = {"leader": int(lid), "leader_at_end": int(lnow or 0), "leader_vmhwm_mib": round(int(hwm) / 1024, 1), "load_average_after": load_after}
# Steady window: from 5 s after the ramp to the end of the run.
for n in sorted({r[1] for r in rows}):
    out[n] = {"steady": window(n, ramp + 5, run), "whole_run": window(n, 0, run)}
def quantiles(name):
    """p50/p99 upper bounds (ms) from a Prometheus histogram on the leader."""
    buckets = []
    for line in open(lm):
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    if not buckets or buckets[-1][1] == 0: return None
    total = buckets[-1][1]
    res = {"count": int(total)}
    for q in (0.5, 0.9, 0.99):
        res[f"p{int(q*100)}_le_ms"] = next(le * 1000 for le, c in buckets if c >= q * total)
    return res
out["leader_processing"] = quantiles("rpool_heartbeat_processing_seconds")
out["leader_lag"] = quantiles("rpool_heartbeat_lag_seconds")
print(json.dumps(out))
PY

# --- 4. one real agent ---------------------------------------------------------
if [ "${SKIP_AGENT:-0}" != 1 ]; then
  A=$WORK/agent
  mkdir -p "$A/state/tls"
  echo "$AGENT_ID" >"$A/state/host_id"
  cp "$WORK/pki/ca.crt" "$A/state/tls/ca.crt"
  cp "$WORK/pki/agent-$AGENT_ID.crt" "$A/state/tls/agent.crt"
  cp "$WORK/pki/agent-$AGENT_ID.key" "$A/state/tls/agent.key"
  chmod 700 "$A/state" "$A/state/tls"; chmod 600 "$A/state/tls/agent.key"
  printf 'hostname = "bench-agent"\nzone = "a"\nlogical_cores = 8\nphysical_cores = 4\nmemory = "32GiB"\ncpu_percent = 10.0\nmemory_used = "8GiB"\nload_average = 0.5\n' >"$A/hardware.toml"
  AGENT_EPS=$(echo "$EPS" | sed 's/\([^,]*\)/"\1"/g; s/,/, /g')
  printf 'controllers = [%s]\nstate_dir = "%s"\n\n[simulate]\nfile = "%s"\n' "$AGENT_EPS" "$A/state" "$A/hardware.toml" >"$A/agent.toml"
  (cd "$A" || exit 1; RPOOL_LOG=${RPOOL_LOG:-warn} nohup "$BIN/rpool-agent" --config "$A/agent.toml" >>"$A/log" 2>&1 </dev/null & echo $! >"$WORK/agent.pid")
  sleep 5  # connect, register, settle
  sample 'agent.pid' "$AGENT_SECONDS" "$WORK/agent-samples.txt"
  AGENT_PID=$(cat "$WORK/agent.pid")
  AGENT_HWM=$(awk '/^VmHWM:/ { print $2 }' /proc/$AGENT_PID/status)
  python3 - "$WORK/agent-samples.txt" "$AGENT_HWM" >"$WORK/agent.json" <<'PY'
import json, sys
rows = [r for r in (l.split() for l in open(sys.argv[1])) if len(r) == 4]
pts = [(float(t), int(tk), int(rss)) for t, n, tk, rss in rows]
cpu = (pts[-1][1] - pts[0][1]) / 100.0 / (pts[-1][0] - pts[0][0]) * 100.0 if len(pts) > 1 else None
print(json.dumps({"agent_idle_cpu_percent": round(cpu, 3) if cpu is not None else None,
                  "agent_rss_mib_last": round(pts[-1][2] / 1024, 2), "agent_rss_mib_max": round(max(p[2] for p in pts) / 1024, 2),
                  "agent_vmhwm_mib": round(int(sys.argv[2]) / 1024, 2), "seconds": round(pts[-1][0] - pts[0][0], 1)}))
PY
fi

# --- 5. summary ------------------------------------------------------------------
log "results (JSON):"
cat "$WORK/loadgen.json" "$WORK/controller.json"
[ -f "$WORK/agent.json" ] && cat "$WORK/agent.json"
[ -f "$WORK/storm.json" ] && cat "$WORK/storm.json"
python3 - "$WORK/loadgen.json" "$WORK/controller.json" "$WORK/agent.json" "controller-$LEADER" "$WORK/storm.json" <<'PY'
import json, os, sys
lg = json.load(open(sys.argv[1])); c = json.load(open(sys.argv[2]))
ag = json.load(open(sys.argv[3])) if os.path.exists(sys.argv[3]) else {}
st = json.load(open(sys.argv[5])) if os.path.exists(sys.argv[5]) else None
L = c.get(sys.argv[4], {}).get("steady") or {}
P = c.get("leader_processing") or {}
G = c.get("leader_lag") or {}
LG = c.get("loadgen", {}).get("steady") or {}
r = lg["rtt_ms"]; d = lg["detection_ms"]
F = "; ".join(f"{n}: {(v.get('steady') or {}).get('rss_peak_mib')} MiB / {(v.get('steady') or {}).get('cpu_percent_of_one_core')} %"
              for n, v in sorted(c.items()) if n.startswith("controller-") and n != sys.argv[4] and isinstance(v, dict))
print(f"""
| what | measured | target |
|---|---|---|
| agents (welcomed / simulated) | {lg['welcomed']} / {lg['agents']} | 10,000 |
| heartbeat RTT p50 / p90 / p99 / max | {r['p50']:.2f} / {r['p90']:.2f} / {r['p99']:.2f} / {r['max']:.2f} ms | p99 < 50 ms |
| acks/s (steady) | {lg['acks_per_s_steady']:.0f} | 10,000 |
| leader-side processing p50 / p90 / p99 (histogram bucket bounds) | ≤ {P.get('p50_le_ms')} / ≤ {P.get('p90_le_ms')} / ≤ {P.get('p99_le_ms')} ms | |
| arrival lag (leader clock − sent_at) p50 / p90 / p99 | ≤ {G.get('p50_le_ms')} / ≤ {G.get('p90_le_ms')} / ≤ {G.get('p99_le_ms')} ms | |
| leader CPU (steady) | {L.get('cpu_percent_of_one_core')} % of one core | < 100 % |
| leader RSS (peak sample / VmHWM) | {L.get('rss_peak_mib')} / {c['leader_vmhwm_mib']} MiB | |
| followers (relaying the sessions): RSS peak / CPU, steady | {F} | |
| loadgen CPU (steady, nice {os.environ.get('LOADGEN_NICE', '10')}) | {LG.get('cpu_percent_of_one_core')} % of one core | |
| errors / reconnects / redirects | {lg['errors']} / {lg['reconnects']} / {lg['redirects']} | |
| killed agents detected down (min / median / max) | {d['detected']}/{lg['killed']}: {d['min']} / {d['median']} / {d['max']} ms | ≤ down_after (5,000 ms) |
| false positives | {lg['false_positives']} | 0 |
| real agent RSS / idle CPU | {ag.get('agent_rss_mib_max')} MiB / {ag.get('agent_idle_cpu_percent')} % | ≤ 10 MiB / ≤ 0.5 % |
| load average after | {c['load_average_after']} | |
""")
if st:
    print(f"""| storm: leader {st['killed_leader']} killed -9 at {st['old_leader_rss_at_kill_mib']} MiB RSS | new leader {st['new_leader']} | |
| storm: every live agent ({st['expected_sessions']}) in session with the new leader | {st['all_attached_after_s']} s after the kill | ≤ 15 s |
| storm: leader changes after the failover (leaders seen: {st['leaders_after_kill']}) | {st['leader_changes_after_failover']} | 0 |
| storm: false suspect/down (whole run) | {lg['false_positives']} | 0 |
| storm: sessions refused busy (retry hint) | {lg.get('busy_refusals')} | |
| storm: new leader RSS after / VmHWM | {st['new_leader_rss_after_mib']} / {st['new_leader_vmhwm_mib']} MiB | ≤ 250 MiB |
""")
PY
