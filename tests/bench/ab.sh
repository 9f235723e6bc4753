#!/usr/bin/env bash
# A/B of two controller builds on rpool's own rows, alternating them in one
# sitting so that the machine's drift falls on both: ROUNDS pairs of
# `SYSTEMS=rpool TRIALS=1 PERF=1 tests/bench/run.sh`, old then new.
#
#   tests/bench/ab.sh OLD_BIN NEW_BIN            # 3 pairs
#   ROUNDS=5 N_SEQ=2000 N_CONC=20000 tests/bench/ab.sh /tmp/old /tmp/new
#
# OLD_BIN and NEW_BIN are directories holding rpool-controller,
# rpool-agent and rpool-bench (`cargo build --release` of each revision,
# copied aside). Prints one row per run (sequential and concurrent writes/s,
# concurrent p99, CPU ms per write of the three members together) and the
# medians of each side. Each run.sh stops every process it starts; the
# logs stay in the work dir printed at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
[ $# = 2 ] || { echo "usage: $0 OLD_BIN NEW_BIN" >&2; exit 64; }
OLD=$1
NEW=$2
ROUNDS=${ROUNDS:-3}
for d in "$OLD" "$NEW"; do
  for b in rpool-controller rpool-agent rpool-bench; do
    [ -x "$d/$b" ] || { echo "$d/$b: not an executable (want OLD_BIN and NEW_BIN holding rpool-controller, rpool-agent, rpool-bench)" >&2; exit 64; }
  done
done
case $ROUNDS in '' | *[!0-9]*) echo "ROUNDS=$ROUNDS: want a whole number 1..20" >&2; exit 64 ;; esac
[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || { echo "ROUNDS=$ROUNDS: want 1..20" >&2; exit 64; }

WORK=$(mktemp -d /tmp/rpool-ab.XXXXXX)
for i in $(seq 1 "$ROUNDS"); do
  for side in old new; do
    bin=$OLD
    [ $side = new ] && bin=$NEW
    printf '[%s] pair %s, %s (%s)\n' "$(date +%H:%M:%S)" "$i" "$side" "$bin" >&2
    SKIP_BUILD=1 SYSTEMS=rpool TRIALS=1 PERF=1 N_SEQ="${N_SEQ:-2000}" N_CONC="${N_CONC:-20000}" \
      BIN="$bin" "$ROOT/tests/bench/run.sh" >"$WORK/$side-$i.log" 2>&1
  done
done

python3 - "$WORK" "$ROUNDS" <<'PY'
import json, re, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
keys = ["seq", "conc", "conc_p99", "seq_cpu", "conc_cpu"]
def row(path):
    r = {}
    for line in open(path):
        if line.startswith("{"):
            j = json.loads(line)
            if j.get("bench") in ("seq", "conc"):
                r[j["bench"]] = j["writes_per_s"]
                r[j["bench"] + "_p99"] = j["latency_ms"]["p99"]
        m = re.match(r"\| rpool (conc|seq) \| ([0-9.]+) ", line)
        if m:
            r[m[1] + "_cpu"] = float(m[2])
    return r
sides = {"old": [], "new": []}
print("| pair | side | seq/s | conc/s | conc p99 ms | seq CPU ms | conc CPU ms |")
print("|---|---|---|---|---|---|---|")
for i in range(1, rounds + 1):
    for side in ("old", "new"):
        r = row(f"{work}/{side}-{i}.log")
        sides[side].append(r)
        print(f"| {i} | {side} | " + " | ".join(str(r.get(k, "n/a")) for k in keys) + " |")
for side, rs in sides.items():
    med = {k: statistics.median([r[k] for r in rs if k in r]) for k in keys if any(k in r for r in rs)}
    print(f"| median | {side} | " + " | ".join(str(med.get(k, "n/a")) for k in keys) + " |")
PY
echo "logs: $WORK" >&2
