#!/usr/bin/env bash
# Shows, per acknowledged write, that the leader makes the Raft log durable
# (fdatasync of its write-ahead log) before the reply leaves.
#
#   tests/bench/trace_sync.sh            # 20 writes
#   N=50 tests/bench/trace_sync.sh
#   KEEP=1 ...                           # keep the work dir (trace, logs)
#   SKIP_BUILD=1 ...                     # use the binaries already built
#   BIN=/other/target/debug ...          # where rpool-controller, rpoolctl, rpool-bench are
#
# Starts a controller trio on 127.0.0.1 (mutual TLS, as run.sh does), finds
# the leader, attaches `strace -f -ttt -T -yy` to it (write, writev, sendto,
# sendmsg, fdatasync, fsync, accept4) and creates N bootstrap tokens through
# rpoolctl, one at a time, each with a description `trace-write-I`. Then,
# per write I:
#
# - the WAL write: the `write` to `raft/*.wal` whose bytes carry
#   `trace-write-I` (the entry holding the command);
# - the sync: the first `fdatasync` of that segment that ends after it;
# - the reply: the first bytes the leader sends on rpoolctl's connection
#   (the I-th connection it accepted) after the WAL write.
#
# A write passes when its rpoolctl exited 0 and sync end < reply start.
# Prints one line per write and a summary; exits 1 if any write fails.
# Needs strace and ptrace rights (root, or kernel.yama.ptrace_scope=0).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${N:-20}
BIN=${BIN:-$ROOT/target/debug}
WORK=$(mktemp -d /tmp/rpool-trace.XXXXXX)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

PIDS=()
cleanup() {
  local rc=$?
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ] || [ $rc != 0 ]; then
    log "work dir kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v strace >/dev/null || { log "strace is not installed (apt-get install strace)"; exit 69; }
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "building rpool-controller, rpoolctl, rpool-bench (debug)"
  (cd "$ROOT" && cargo build --quiet -p rpool-controller -p rpoolctl -p rpool-tests \
    --bin rpool-controller --bin rpoolctl --bin rpool-bench)
fi

# --- 1. a trio ---------------------------------------------------------------
read -r -a P <<<"$(python3 -c '
import socket
s = [socket.socket() for _ in range(3)]
for x in s: x.bind(("127.0.0.1", 0))
print(" ".join(str(x.getsockname()[1]) for x in s))')"
PKI=$WORK/pki
"$BIN/rpool-bench" tls-setup --dir "$PKI" \
  --peers "1=127.0.0.1:${P[0]},2=127.0.0.1:${P[1]},3=127.0.0.1:${P[2]}" >/dev/null
EPS=""
for i in 1 2 3; do
  d=$WORK/controller-$i
  mkdir -p "$d"
  {
    echo "id = $i"
    echo "listen = \"127.0.0.1:${P[$((i-1))]}\""
    echo "data_dir = \"$d/data\""
    printf '\n[tls]\nca = "%s"\ncert = "%s"\nkey = "%s"\nca_key = "%s"\n' \
      "$PKI/ca.crt" "$PKI/controller-$i.crt" "$PKI/controller-$i.key" "$PKI/ca.key"
    for j in 1 2 3; do
      printf '\n[[peers]]\nid = %s\naddress = "127.0.0.1:%s"\n' "$j" "${P[$((j-1))]}"
    done
  } >"$d/controller.toml"
  (cd "$d" && exec "$BIN/rpool-controller" --config "$d/controller.toml" >>"$d/log" 2>&1 </dev/null) &
  PIDS+=($!)
  EPS+="${EPS:+,}127.0.0.1:${P[$((i-1))]}"
done
ctl() {
  "$BIN/rpoolctl" --tls-ca "$PKI/ca.crt" --tls-cert "$PKI/admin.crt" --tls-key "$PKI/admin.key" "$@"
}

# --- 2. the leader -----------------------------------------------------------
LEADER=""
for _ in $(seq 1 150); do
  LEADER=$(ctl --controller "$EPS" status -o json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("leader_id",""))' 2>/dev/null || true)
  [ -n "$LEADER" ] && [ "$LEADER" != 0 ] && break
  sleep 0.2
done
[ -n "$LEADER" ] && [ "$LEADER" != 0 ] || { log "no leader within 30 s"; exit 1; }
LEADER_ADDR=127.0.0.1:${P[$((LEADER-1))]}
LEADER_PID=${PIDS[$((LEADER-1))]}
# The leader's first entry of its term is applied before we trace.
ctl --controller "$LEADER_ADDR" token create --description warm-up -o json >/dev/null
log "leader: controller $LEADER ($LEADER_ADDR, pid $LEADER_PID)"

# --- 3. trace N writes -------------------------------------------------------
TRACE=$WORK/strace.txt
strace -f -ttt -T -yy -s 65536 -o "$TRACE" \
  -e trace=write,writev,sendto,sendmsg,fdatasync,fsync,accept4 -p "$LEADER_PID" 2>"$WORK/strace.err" &
STRACE=$!
PIDS+=($STRACE)
for _ in $(seq 1 50); do [ -s "$TRACE" ] || grep -q attached "$WORK/strace.err" 2>/dev/null && break; sleep 0.1; done
sleep 0.5
: >"$WORK/exits"
for i in $(seq 1 "$N"); do
  rc=0
  ctl --controller "$LEADER_ADDR" token create --description "trace-write-$i" -o json >/dev/null 2>>"$WORK/ctl.err" || rc=$?
  echo "$i $rc" >>"$WORK/exits"
done
sleep 0.5
kill -INT "$STRACE" 2>/dev/null || true
wait "$STRACE" 2>/dev/null || true

# --- 4. per write: WAL write < fdatasync end < reply ------------------------
python3 - "$TRACE" "$WORK/exits" "${P[$((LEADER-1))]}" <<'PY'
import re, sys, statistics
trace, exits_file, port = sys.argv[1], sys.argv[2], sys.argv[3]
exits = dict(line.split() for line in open(exits_file))
line_re = re.compile(r'^(\d+)\s+(\d+\.\d+)\s+(.*)$')
# fd decorations: <path> or <TCP:[a:p->b:q]> (whose "->" holds a '>').
call_re = re.compile(r'^(\w+)\((\d+)<([A-Za-z0-9]+:\[[^\]]*\]|[^>]*)>(.*)$')
dur_re = re.compile(r'<(\d+\.\d+)>\s*$')
events = []           # (start, end, syscall, fd target, text)
pending = {}          # pid -> (start, syscall, target, text)
for raw in open(trace, errors="replace"):
    m = line_re.match(raw.rstrip("\n"))
    if not m:
        continue
    pid, ts, rest = m.group(1), float(m.group(2)), m.group(3)
    if rest.startswith("<..."):
        if pid in pending:
            start, call, target, text = pending.pop(pid)
            d = dur_re.search(rest)
            events.append((start, start + float(d.group(1)) if d else ts, call, target, text + rest))
        continue
    c = call_re.match(rest)
    if not c:
        continue
    call, target, text = c.group(1), c.group(3), c.group(4)
    if rest.endswith("<unfinished ...>"):
        pending[pid] = (ts, call, target, text)
        continue
    d = dur_re.search(rest)
    events.append((ts, ts + float(d.group(1)) if d else ts, call, target, text))
events.sort()

# Connections the leader accepted on its listen port while tracing, in order.
accepted = []
for start, end, call, target, text in events:
    if call == "accept4":
        m = re.search(r'=\s*\d+<TCP(?:v6)?:\[(.*?)\]>', text)
        if m and m.group(1) not in accepted:
            accepted.append(m.group(1))
sends = ("write", "writev", "sendto", "sendmsg")
rows, failures, gaps = [], 0, []
for i in range(1, len(exits) + 1):
    marker = re.compile(rf"trace-write-{i}(?!\d)")
    wal = [e for e in events if e[2] == "write" and e[3].endswith(".wal") and marker.search(e[4])]
    ok_exit = exits.get(str(i)) == "0"
    if not wal:
        rows.append(f"write {i:3}: exit {exits.get(str(i))}, no WAL write carrying it found  FAIL")
        failures += 1
        continue
    w = wal[0]
    segment = w[3]
    sync = next((e for e in events if e[2] == "fdatasync" and e[3] == segment and e[1] >= w[1]), None)
    conn = accepted[i - 1] if i - 1 < len(accepted) else None
    reply = None
    if conn:
        reply = next((e for e in events if e[2] in sends and conn in e[3] and e[0] >= w[0]), None)
    if not (sync and reply and ok_exit):
        what = "no fdatasync" if not sync else "no reply found" if not reply else f"rpoolctl exit {exits.get(str(i))}"
        rows.append(f"write {i:3}: {what}  FAIL")
        failures += 1
        continue
    good = sync[1] <= reply[0]
    gaps.append((reply[0] - sync[1]) * 1e6)
    rows.append(
        f"write {i:3}: WAL write {w[0]:.6f}, fdatasync {sync[0]:.6f}..{sync[1]:.6f} "
        f"({(sync[1]-sync[0])*1e3:.3f} ms), reply {reply[0]:.6f} on {conn}: "
        f"sync ends {(reply[0]-sync[1])*1e3:.3f} ms before the reply  {'OK' if good else 'FAIL'}")
    failures += 0 if good else 1
print("\n".join(rows))
n = len(exits)
print(f"\n{n - failures} of {n} acknowledged writes: the leader's fdatasync of the Raft log "
      f"ended before the reply left" + (f" (sync end -> reply: median {statistics.median(gaps)/1e3:.3f} ms, "
      f"min {min(gaps)/1e3:.3f} ms)" if gaps else ""))
syncs = sum(1 for e in events if e[2] == "fdatasync")
print(f"leader syscalls traced: {syncs} fdatasync, {sum(1 for e in events if e[2] == 'fsync')} fsync, "
      f"{len(events)} in all")
sys.exit(1 if failures else 0)
PY
