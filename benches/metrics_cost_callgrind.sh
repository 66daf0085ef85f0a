#!/usr/bin/env bash
# benches/metrics_cost_callgrind.sh BIN NAME (a loadgen built --release): the server under callgrind, 1x1 load for 5 s; prints
# instructions, calls served (from the debug page's JSON) and their ratio.
set -euo pipefail
BIN=$1; NAME=$2
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out=/tmp/cg-$NAME
rm -f $out.*
valgrind --tool=callgrind --callgrind-out-file=$out.cg "$BIN" serve --addr 127.0.0.1:$port > $out.serve 2>$out.vg &
pid=$!
for _ in $(seq 600); do grep -q ready $out.serve && break; sleep 0.1; done
"$BIN" load --addr 127.0.0.1:$port --conns 1 --concurrency 1 --secs 5 > $out.load
calls=$(python3 - $port <<'PY'
import json, sys, urllib.request
doc = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/debug/geerpc.json"))
print(sum(m["calls"] for s in doc["services"] for m in s["methods"]))
PY
)
kill -INT $pid; wait $pid || true
ir=$(grep -E "^summary:|^totals:" $out.cg | head -1 | awk '{print $2}')
echo "$NAME instructions=$ir calls=$calls per_call=$(python3 -c "print(round($ir/$calls))")"
