#!/usr/bin/env bash
# What the metrics cost the hot path (issue 21: the 1x1 and 1x64 loadgen
# points within 3% of the build before the issue): two loadgen binaries,
# OLD and NEW, each serving and loading itself, alternately, point after
# point, ROUNDS times; prints each round and the medians with their ratio.
# Not part of CI: timings are not tests.
#
#   benches/metrics_cost.sh OLD_LOADGEN NEW_LOADGEN
#
# Build each with `cargo build --release --example loadgen` (copy the first
# binary aside before building the second). Environment: SECS per point
# (4), ROUNDS (8), POINTS ("1:1 1:64", conns:concurrency).
set -euo pipefail
OLD=$1
NEW=$2
SECS=${SECS:-4}
ROUNDS=${ROUNDS:-8}
POINTS=${POINTS:-"1:1 1:64"}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/geerpc-metrics-cost.XXXXXX")
trap 'jobs -p | xargs -r kill 2>/dev/null; rm -rf "$OUT"' EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# once BIN CONNS CONC -> calls_per_sec, or nothing if the server did not
# start (the free port was taken meanwhile by another process)
once() {
    local port pid
    port=$(free_port)
    : >"$OUT/serve"
    "$1" serve --addr "127.0.0.1:$port" >"$OUT/serve" 2>/dev/null &
    pid=$!
    # Bounded wait for `ready`.
    for _ in $(seq 200); do
        grep -q ready "$OUT/serve" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if grep -q ready "$OUT/serve"; then
        "$1" load --addr "127.0.0.1:$port" --conns "$2" --concurrency "$3" --secs "$SECS" |
            python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["calls_per_sec"])' || true
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# run BIN CONNS CONC -> calls_per_sec (three tries at most)
run() {
    local rate
    for _ in 1 2 3; do
        rate=$(once "$@")
        [ -n "$rate" ] && break
    done
    echo "$rate"
}

for r in $(seq "$ROUNDS"); do
    for p in $POINTS; do
        c=${p%%:*}
        k=${p##*:}
        # Alternate which goes first, so that neither always warms the CPU.
        if ((r % 2)); then order="old new"; else order="new old"; fi
        for w in $order; do
            bin=$OLD
            [ "$w" = new ] && bin=$NEW
            v=$(run "$bin" "$c" "$k")
            # One line per round, empty if it failed: rounds stay paired.
            echo "$v" >>"$OUT/$w-$p"
            echo "round $r point ${c}x$k $w: $v calls/s" >&2
        done
    done
done

for p in $POINTS; do
    python3 - "$OUT/old-$p" "$OUT/new-$p" "$p" <<'PY'
import statistics, sys
pairs = [(float(o), float(n)) for o, n in zip(open(sys.argv[1]), open(sys.argv[2]))
         if o.strip() and n.strip()]
old = [o for o, _ in pairs]
new = [n for _, n in pairs]
mo, mn = statistics.median(old), statistics.median(new)
paired = statistics.median(n / o for o, n in pairs)
c, k = sys.argv[3].split(":")
print(f"{c}x{k} ({len(pairs)} rounds): old median {mo:,.0f}/s, new median {mn:,.0f}/s, "
      f"ratio of medians {mn / mo:.3f}, median of paired ratios {paired:.3f}")
PY
done
