#!/usr/bin/env bash
# Side-by-side comparison of geerpc with its peers (a raw-TCP floor and
# tarpc, each speaking the load CLI of docs/BENCH.md), as issue 6 asks: each goal's two systems run alternately, point after point,
# ROUNDS times, and the table shows medians and their ratio. Not part of CI:
# timings are not tests.
#
#   benches/compare.sh            # everything (about 15 minutes)
#   ONLY="c1 mux" benches/compare.sh
#   BASELINE=/path/to/old/build benches/compare.sh   # this build against an older one
#
# The peers are not in this repository: they are the project's shared
# anchors (shared/anchors, next to a checkout as ../shared/anchors; see
# docs/BENCH.md, "The peers"). Point ANCHORS at their folder if it is
# elsewhere.
#
# Environment: ANCHORS (default ../shared/anchors), SECS per point (5),
# ROUNDS (3), ONLY (subset of: c1 mux payload xclient idle registry),
# IDLE_CONNS (10000).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
if [ ! -f "$ANCHORS/rawtcp/Cargo.toml" ] || [ ! -x "$ANCHORS/run-sweep.sh" ]; then
    echo "compare.sh: no peers in $ANCHORS (rawtcp/, tarpc/, run-sweep.sh);" \
        "set ANCHORS to the shared anchors' folder (docs/BENCH.md, \"The peers\")" >&2
    exit 2
fi
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-"c1 mux payload xclient idle registry"}
IDLE_CONNS=${IDLE_CONNS:-10000}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/geerpc-compare.XXXXXX")
trap 'jobs -p | xargs -r kill 2>/dev/null; rm -rf "$OUT"' EXIT
want() { [[ " $ONLY " == *" $1 "* ]]; }

echo "building geerpc and the peers..." >&2
cargo build --release --quiet --examples --features cli --bin geerpc
T=$ROOT/target/release
LOADGEN=$T/examples/loadgen
SWEEP="$ANCHORS/run-sweep.sh"

# point NAME "SERVER_CMD" "LOAD_CMD" CONNS:CONC:PAYLOAD -> appends one JSON line to $OUT/NAME
point() {
    SECS=$SECS PAUSE=0 SWEEP="$4" "$SWEEP" "$2" "$3" "$1" 2>>"$OUT/log" >>"$OUT/$1" || true
}

# median FILE FIELD
median() {
    python3 - "$1" "$2" <<'PY'
import json, statistics, sys
vals = [json.loads(l)[sys.argv[2]] for l in open(sys.argv[1]) if l.strip()]
print(statistics.median(vals) if vals else "nan")
PY
}

# wrk_json FILE: wrk --latency's output as one JSON line {"rps", "p99_ms"}
wrk_json() {
    python3 - "$1" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
if rps and p99:
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    print(json.dumps({"rps": float(rps.group(1)), "p99_ms": float(p99.group(1)) * scale}))
PY
}

ROWS=$OUT/rows
row() { printf '%-46s %12s %12s %8s %8s  %s\n' "$@" >>"$ROWS"; }
ratio() { python3 -c "a,b=float('$1'),float('$2'); print(f'{a/b:.2f}x' if b else 'nan')"; }
# compare GOAL FIELD A B TARGET: ratio of A over B for FIELD
compare() {
    local a b
    a=$(median "$OUT/$3" "$2"); b=$(median "$OUT/$4" "$2")
    row "$1" "$a" "$b" "$(ratio "$a" "$b")" "$5" "$3 vs $4 ($2)"
}

# BASELINE=DIR: this build against an older one instead of the peers. DIR
# holds the older build's `loadgen`, `idle_conns` and `geerpc` (copy them
# from its target/release and target/release/examples). Every point runs on
# both builds alternately, ROUNDS times; the table shows medians and the
# ratio new/old (within 0.9x-1.1x is the machine's noise; for latency rows a
# ratio under 1 is better).
if [ -n "${BASELINE:-}" ]; then
    OLD_LOADGEN=$BASELINE/loadgen
    OLD_GEERPC=$BASELINE/geerpc
    for b in "$OLD_LOADGEN" "$OLD_GEERPC"; do
        [ -x "$b" ] || { echo "BASELINE: $b is missing or not executable" >&2; exit 2; }
    done
    free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
    # registry_with_servers GEERPC LOADGEN -> prints the registry URL, after
    # both servers are listed (10 s at most)
    registry_with_servers() {
        local port url
        port=$(free_port)
        "$1" registry --addr "127.0.0.1:$port" --ttl 1m >/dev/null 2>>"$OUT/log" &
        url=http://127.0.0.1:$port/_rpc_/registry
        for _ in 1 2; do "$2" serve --addr 127.0.0.1:0 --registry "$url" >/dev/null 2>>"$OUT/log" & done
        for _ in $(seq 100); do
            [ "$("$1" list --registry "$url" 2>/dev/null | wc -l)" -ge 2 ] && break
            sleep 0.1
        done
        echo "$url"
    }
    for _ in $(seq "$ROUNDS"); do
        for b in new old; do
            L=$LOADGEN; [ $b = old ] && L=$OLD_LOADGEN
            if want c1; then
                point $b-pin "taskset -c 0 $L serve" "taskset -c 0 $L load" 1:1:0
                point $b-c1 "$L serve" "$L load" 1:1:0
            fi
            if want mux; then
                point $b-1x64 "$L serve" "$L load" 1:64:0
                point $b-4x64 "$L serve" "$L load" 4:64:0
                point $b-1x16 "$L serve" "$L load" 1:16:0
            fi
            if want payload; then
                point $b-4k-json "$L serve" "$L load --codec json" 1:16:4096
                point $b-4k-msgpack "$L serve" "$L load --codec msgpack" 1:16:4096
            fi
        done
    done
    if want xclient; then
        echo "xclient: registry discovery, 2 servers each build" >&2
        NEW_REG=$(registry_with_servers "$T/geerpc" "$LOADGEN")
        OLD_REG=$(registry_with_servers "$OLD_GEERPC" "$OLD_LOADGEN")
        for _ in $(seq "$ROUNDS"); do
            "$LOADGEN" load --registry "$NEW_REG" --select p2c --concurrency 64 --secs "$SECS" >>"$OUT/new-x" 2>>"$OUT/log" || true
            "$OLD_LOADGEN" load --registry "$OLD_REG" --select p2c --concurrency 64 --secs "$SECS" >>"$OUT/old-x" 2>>"$OUT/log" || true
        done
    fi
    if want idle && [ -x "$BASELINE/idle_conns" ]; then
        echo "idle: $IDLE_CONNS idle connections, each build" >&2
        for b in new old; do
            I=$T/examples/idle_conns; [ $b = old ] && I=$BASELINE/idle_conns
            (ulimit -n $((IDLE_CONNS + 1000)) 2>/dev/null || true
                "$I" --conns "$IDLE_CONNS") >>"$OUT/$b-idle" 2>>"$OUT/log" || true
        done
    fi
    if want registry && command -v wrk >/dev/null; then
        echo "registry: wrk heartbeats and lookups, each build" >&2
        printf 'wrk.method = "POST"\nwrk.headers["X-rpc-Server"] = "tcp@127.0.0.1:7001"\n' >"$OUT/post.lua"
        for b in new old; do
            G=$T/geerpc; [ $b = old ] && G=$OLD_GEERPC
            port=$(free_port)
            "$G" registry --addr "127.0.0.1:$port" --ttl 5m >/dev/null 2>>"$OUT/log" &
            eval "${b}_reg=http://127.0.0.1:$port/_rpc_/registry"
        done
        for _ in $(seq 100); do
            curl -s -o /dev/null "$new_reg" && curl -s -o /dev/null "$old_reg" && break
            sleep 0.1
        done
        for _ in $(seq "$ROUNDS"); do
            for f in post get; do
                for b in new old; do
                    url=$new_reg; [ $b = old ] && url=$old_reg
                    script=()
                    [ $f = post ] && script=(-s "$OUT/post.lua")
                    wrk -t2 -c32 -d"${SECS}s" --latency ${script[@]+"${script[@]}"} "$url" >"$OUT/wrk.txt" 2>&1 || true
                    wrk_json "$OUT/wrk.txt" >>"$OUT/$b-wrk-$f"
                done
            done
        done
    fi
    : >"$ROWS"
    row "goal" "new" "old" "new/old" "-" "what"
    pair() { compare "$1" "$2" "new-$3" "old-$3" "-"; }
    if want c1; then
        pair "c=1 pinned p50 us (lower is better)" p50_us pin
        pair "c=1 unpinned p50 us (lower is better)" p50_us c1
    fi
    if want mux; then
        pair "1 conn c=64 calls/s" calls_per_sec 1x64
        pair "4 conns c=64 calls/s" calls_per_sec 4x64
        pair "1 conn c=16 calls/s" calls_per_sec 1x16
        pair "1 conn c=64 p99 us (lower is better)" p99_us 1x64
    fi
    if want payload; then
        pair "4 KiB c=16 calls/s (json)" calls_per_sec 4k-json
        pair "4 KiB c=16 calls/s (msgpack)" calls_per_sec 4k-msgpack
    fi
    want xclient && pair "XClient+registry p2c c=64 calls/s" calls_per_sec x
    if want idle && [ -s "$OUT/new-idle" ]; then
        pair "idle conns: RSS KiB per connection" rss_kib_per_conn idle
        pair "idle conns: new call latency ms" new_call_ms idle
    fi
    if want registry && command -v wrk >/dev/null; then
        for f in post get; do
            pair "registry $f req/s" rps "wrk-$f"
            pair "registry $f p99 ms (lower is better)" p99_ms "wrk-$f"
        done
    fi
    cat "$ROWS"
    exit 0
fi

# The anchors' folder may be read-only: build them into our target dir.
CARGO_TARGET_DIR=$T/anchors cargo build --release --quiet --manifest-path "$ANCHORS/rawtcp/Cargo.toml"
CARGO_TARGET_DIR=$T/anchors cargo build --release --quiet --manifest-path "$ANCHORS/tarpc/Cargo.toml"
RAWTCP=$T/anchors/release/rawtcp
TARPC=$T/anchors/release/tarpc-anchor

if want c1; then
    echo "c1: concurrency 1, pinned and unpinned" >&2
    for _ in $(seq "$ROUNDS"); do
        point g-pin "taskset -c 0 $LOADGEN serve" "taskset -c 0 $LOADGEN load" 1:1:0
        point raw-pin "taskset -c 0 $RAWTCP serve" "taskset -c 0 $RAWTCP load --mode pingpong" 1:1:0
        point g-c1 "$LOADGEN serve" "$LOADGEN load" 1:1:0
        point raw-c1 "$RAWTCP serve" "$RAWTCP load --mode pingpong" 1:1:0
    done
fi
if want mux; then
    echo "mux: 1 and 4 connections, concurrency 64" >&2
    for _ in $(seq "$ROUNDS"); do
        point g-1x64 "$LOADGEN serve" "$LOADGEN load" 1:64:0
        point t-1x64 "$TARPC serve" "$TARPC load" 1:64:0
        point g-4x64 "$LOADGEN serve" "$LOADGEN load" 4:64:0
        point t-4x64 "$TARPC serve" "$TARPC load" 4:64:0
        point g-1x16 "$LOADGEN serve" "$LOADGEN load" 1:16:0
        point t-1x16 "$TARPC serve" "$TARPC load" 1:16:0
    done
fi
if want payload; then
    echo "payload: 1 connection, concurrency 16, 4 KiB" >&2
    for _ in $(seq "$ROUNDS"); do
        point g-4k-json "$LOADGEN serve" "$LOADGEN load --codec json" 1:16:4096
        point g-4k-msgpack "$LOADGEN serve" "$LOADGEN load --codec msgpack" 1:16:4096
        point t-4k "$TARPC serve" "$TARPC load" 1:16:4096
        point raw-4k "$RAWTCP serve" "$RAWTCP load" 1:16:4096
    done
fi
if want xclient; then
    echo "xclient: registry discovery, 2 servers, concurrency 64" >&2
    REG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$T/geerpc" registry --addr "127.0.0.1:$REG_PORT" --ttl 1m >/dev/null 2>>"$OUT/log" &
    REG=http://127.0.0.1:$REG_PORT/_rpc_/registry
    for p in 1 2; do
        "$LOADGEN" serve --addr 127.0.0.1:0 --registry "$REG" >/dev/null 2>>"$OUT/log" &
    done
    for _ in $(seq 100); do   # until both servers are registered (10 s at most)
        [ "$("$T/geerpc" list --registry "$REG" 2>/dev/null | wc -l)" -ge 2 ] && break
        sleep 0.1
    done
    for _ in $(seq "$ROUNDS"); do
        "$LOADGEN" load --registry "$REG" --select p2c --concurrency 64 --secs "$SECS" >>"$OUT/x-registry" 2>>"$OUT/log" || true
        "$LOADGEN" load --registry "$REG" --select round_robin --concurrency 64 --secs "$SECS" >>"$OUT/x-registry-rr" 2>>"$OUT/log" || true
        point x-direct "$LOADGEN serve" "$LOADGEN load" 2:64:0
    done
fi

: >"$ROWS"
row "goal" "geerpc" "peer" "ratio" "target" "what"
if want c1; then
    compare "c=1 pinned p50 (lower is better)" p50_us g-pin raw-pin "<=1.30x"
    compare "c=1 unpinned p50 (lower is better)" p50_us g-c1 raw-c1 "<=1.15x"
fi
if want mux; then
    compare "1 conn c=64 calls/s" calls_per_sec g-1x64 t-1x64 ">=1.25x"
    compare "4 conns c=64 calls/s" calls_per_sec g-4x64 t-4x64 ">=1.25x"
    compare "1 conn c=16 calls/s" calls_per_sec g-1x16 t-1x16 "-"
fi
if want payload; then
    compare "4 KiB c=16 vs tarpc (json)" calls_per_sec g-4k-json t-4k ">=1.2x"
    compare "4 KiB c=16 vs tarpc (msgpack)" calls_per_sec g-4k-msgpack t-4k ">=1.2x"
    compare "4 KiB c=16 vs rawtcp mux (json)" calls_per_sec g-4k-json raw-4k ">=1.0x"
    compare "4 KiB c=16 vs rawtcp mux (msgpack)" calls_per_sec g-4k-msgpack raw-4k ">=1.0x"
fi
if want xclient; then
    compare "XClient+registry (p2c) vs direct 2 conns" calls_per_sec x-registry x-direct ">=0.9x"
    compare "XClient+registry (round robin) vs direct" calls_per_sec x-registry-rr x-direct "-"
fi
if want idle; then
    echo "idle: $IDLE_CONNS idle connections" >&2
    # One descriptor per connection on each side; raise the limit where allowed.
    (ulimit -n $((IDLE_CONNS + 1000)) 2>/dev/null || true
        "$T/examples/idle_conns" --conns "$IDLE_CONNS") >"$OUT/idle" 2>>"$OUT/log" || true
    row "idle conns: RSS KiB per connection" "$(median "$OUT/idle" rss_kib_per_conn)" "-" "-" "<=64" "server RSS growth / connections"
    row "idle conns: new call latency ms" "$(median "$OUT/idle" new_call_ms)" "-" "-" "<=10" "a call on a new connection"
fi
if want registry && command -v wrk >/dev/null; then
    echo "registry: wrk heartbeats and lookups" >&2
    REG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$T/geerpc" registry --addr "127.0.0.1:$REG_PORT" --ttl 5m >/dev/null 2>>"$OUT/log" &
    REG=http://127.0.0.1:$REG_PORT/_rpc_/registry
    for i in $(seq 100); do curl -s -X POST -H "X-rpc-Server: tcp@127.0.0.1:$((20000 + i))" "$REG" >/dev/null || true; done
    printf 'wrk.method = "POST"\nwrk.headers["X-rpc-Server"] = "tcp@127.0.0.1:7001"\n' >"$OUT/post.lua"
    # ROUNDS alternations of POST and GET; the medians are reported.
    for _ in $(seq "$ROUNDS"); do
        for f in post get; do
            script=()
            [ $f = post ] && script=(-s "$OUT/post.lua")
            wrk -t2 -c32 -d"${SECS}s" --latency ${script[@]+"${script[@]}"} "$REG" >"$OUT/wrk-$f.txt" 2>&1 || true
            wrk_json "$OUT/wrk-$f.txt" >>"$OUT/wrk-$f"
        done
    done
    for f in post get; do
        rps=$(median "$OUT/wrk-$f" rps)
        p99=$(printf "%.2f" "$(median "$OUT/wrk-$f" p99_ms)")
        row "registry $f req/s (p99 ${p99} ms)" "$rps" "-" "-" "$([ $f = post ] && echo '>=60k' || echo '>=40k')" "wrk -t2 -c32 -d${SECS}s, median of $ROUNDS"
    done
fi
cat "$ROWS"
