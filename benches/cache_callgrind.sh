#!/usr/bin/env bash
# benches/cache_callgrind.sh [BIN] [CONNS]: the server's (or with
# SIDE=client, the client's) cache misses per call with CONNS connections
# of one caller each (default: target/release/examples/loadgen, 1000). That
# side runs under callgrind with its cache simulation set to this VM's
# per-core caches (L1d 48 KiB, L1i 64 KiB, and the 2 MiB L2 as the "last
# level": what does not stay in a core's L2 comes from the shared L3 or
# memory); the other side (loadgen's own, native) runs as usual, CONNS x
# CONNS. Collection is on for 10 s only, once every connection is open and
# 5 s have passed; the calls served in that window come from the server's
# debug page. Prints one JSON line: instructions, data reads and writes,
# and L1/L2 misses, each per call.
#
# Valgrind runs a process's threads one at a time, as if on one core, so
# the simulated cache sees what a core sees when it serves many
# connections in turn: each call finds little of its own connection's
# state (its thread's stack, its buffers) still cached. With 1 connection
# the misses per call are near 0; the difference at 1000 is the cost of
# serving many connections that a profile of one cannot show (issue 23).
# Deterministic counts, so a before/after holds on a noisy machine; add
# --profile profiling builds (line tables) to annotate the misses with
# `callgrind_annotate --sort=DLmw,DLmr --auto=yes FILE` (FILE is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
SIDE=${SIDE:-server}
case $SIDE in server | client) ;; *) echo "cache_callgrind.sh: SIDE is server or client" >&2; exit 2 ;; esac
BIN=${1:-target/release/examples/loadgen}
CONNS=${2:-1000}
[ -x "$BIN" ] || { echo "cache_callgrind.sh: build $BIN first (cargo build --release --example loadgen)" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "cache_callgrind.sh: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out=$(mktemp -d "${TMPDIR:-/tmp}/geerpc-cache.XXXXXX")
grind=(valgrind --tool=callgrind --cache-sim=yes --D1=49152,12,64 --I1=65536,8,64 --LL=2097152,16,64
    --instr-atstart=no --max-threads=$((CONNS + 200)) --callgrind-out-file="$out/$SIDE.cg")
serve_wrap=(); load_wrap=()
if [ "$SIDE" = server ]; then serve_wrap=("${grind[@]}"); else load_wrap=("${grind[@]}"); fi
${serve_wrap[@]+"${serve_wrap[@]}"} "$BIN" serve --addr "127.0.0.1:$port" >"$out/serve" 2>"$out/serve.err" &
server=$!
load=""
cleanup() {
    [ -z "$load" ] || kill "$load" 2>/dev/null || true
    kill -INT "$server" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 600); do grep -q ready "$out/serve" && break; sleep 0.1; done
${load_wrap[@]+"${load_wrap[@]}"} "$BIN" load --addr "127.0.0.1:$port" --conns "$CONNS" --concurrency "$CONNS" --secs 60 >"$out/load" 2>"$out/load.err" &
load=$!
grinding=$server
[ "$SIDE" = server ] || grinding=$load
calls() {
    python3 - "$port" <<'PY'
import json, sys, urllib.request
doc = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/debug/geerpc.json", timeout=30))
print(sum(m["calls"] for s in doc["services"] for m in s["methods"]))
PY
}
for _ in $(seq 600); do   # every connection open (60 s at most)
    [ "$(ss -Htn state established "( sport = :$port )" | wc -l)" -ge "$CONNS" ] && break
    sleep 0.1
done
sleep 5
c0=$(calls)
callgrind_control -i on "$grinding" >/dev/null 2>&1
sleep 10
callgrind_control -i off "$grinding" >/dev/null 2>&1
c1=$(calls)
kill "$load" 2>/dev/null || true
wait "$load" 2>/dev/null || true
load=""
kill -INT "$server"
wait "$server" || true
python3 - "$out/$SIDE.cg" "$((c1 - c0))" "$CONNS" <<'PY'
import json, sys
path, calls, conns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
events = totals = None
for line in open(path):
    if line.startswith("events:"):
        events = line.split()[1:]
    elif line.startswith("totals:"):
        totals = [int(x) for x in line.split()[1:]]
t = dict(zip(events, totals))
per = lambda k: round(t.get(k, 0) / max(calls, 1), 2)
print(json.dumps({"conns": conns, "calls": calls, "instructions": per("Ir"), "data_reads": per("Dr"),
                  "data_writes": per("Dw"), "l1_read_misses": per("D1mr"), "l1_write_misses": per("D1mw"),
                  "l2_read_misses": per("DLmr"), "l2_write_misses": per("DLmw"), "profile": path}))
PY
