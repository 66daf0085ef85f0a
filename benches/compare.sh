#!/usr/bin/env bash
# Side-by-side comparison of geerpc with its peers (a raw-TCP floor, tarpc
# and tonic, each speaking the load CLI of docs/BENCH.md), as issues 6 and
# 23 ask: at each point geerpc and every peer run in turn, point after
# point, ROUNDS times, and ONE table shows the medians, the ratios
# geerpc / peer and each goal marked met or NOT MET; then the command line
# and the same table in markdown, for the README's "Performance" section.
# Not part of CI: timings are not tests.
#
#   benches/compare.sh            # everything (see docs/BENCH.md for how long)
#   ONLY="c1 mux" benches/compare.sh
#   SECS=1 ROUNDS=1 ONLY="mux scale" SCALE_POINTS=64 IDLE_WAIT=0 benches/compare.sh   # a smoke run
#   BASELINE=/path/to/old/build benches/compare.sh   # this build against an older one
#
# The peers are not in this repository: they are the project's shared
# anchors (shared/anchors, next to a checkout as ../shared/anchors; see
# docs/BENCH.md, "The peers"). Point ANCHORS at their folder if it is
# elsewhere. They are built into target/release/anchors (tonic needs
# `protoc`: apt-get install protobuf-compiler).
#
# Environment:
#   ANCHORS       the shared anchors' folder (../shared/anchors)
#   SECS          seconds per point (5), after each load's 0.5 s warm-up
#   ROUNDS        runs of each point per system (3; the median is shown)
#   ONLY          sections, a subset of (all by default):
#                   c1 mux payload   the standard sweep, vs rawtcp, tarpc, tonic
#                   xclient idle registry
#                   scale            the scale points (benches/scale.sh)
#                   registry-scale   the registry at scale (benches/registry_scale.sh)
#   PEERS         RPC peers, a subset of "tarpc tonic" (both); rawtcp always runs
#   IDLE_CONNS    connections of the idle section (10000)
#   SCALE_POINTS  connection counts of the scale section ("64 256 1000");
#                 IDLE_WAIT goes to scale.sh as it is
#   INSTANCES SERVICES WATCHERS CHANGES SCOPE TTL WRK_SECS SMOKE
#                 go to registry_scale.sh as they are (10,000 / 100 / 1,000 ...)
#   NO_BUILD      1: use the binaries already built (target/release and
#                 target/release/anchors/release), build nothing
#   KEEP          a folder to keep the raw JSON lines, records and log in
#
# run-sweep.sh (the anchors') waits up to 300 s before each point for an
# idle machine and retries a point up to 3 times when other processes
# used more than 0.5 s of CPU in it (RETRIES, MAX_FOREIGN): on a busy
# machine a run takes longer than its points add up to.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
if [ ! -f "$ANCHORS/rawtcp/Cargo.toml" ] || [ ! -x "$ANCHORS/run-sweep.sh" ]; then
    echo "compare.sh: no peers in $ANCHORS (rawtcp/, tarpc/, tonic/, run-sweep.sh);" \
        "set ANCHORS to the shared anchors' folder (docs/BENCH.md, \"The peers\")" >&2
    exit 2
fi
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-"c1 mux payload xclient idle registry scale registry-scale"}
PEERS=${PEERS:-"tarpc tonic"}
IDLE_CONNS=${IDLE_CONNS:-10000}
SCALE_POINTS=${SCALE_POINTS:-"64 256 1000"}
for s in $ONLY; do
    case $s in
        c1 | mux | payload | xclient | idle | registry | scale | registry-scale) ;;
        *) echo "compare.sh: unknown section $s in ONLY" >&2; exit 2 ;;
    esac
done
for p in $PEERS; do
    case $p in
        tarpc | tonic) ;;
        *) echo "compare.sh: unknown peer $p in PEERS (tarpc tonic)" >&2; exit 2 ;;
    esac
done
if [ -n "${KEEP:-}" ]; then
    OUT=$KEEP; mkdir -p "$OUT"
else
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/geerpc-compare.XXXXXX")
fi
# Stops what this script started in the background (its own jobs, by PID).
trap 'jobs -p | xargs -r kill 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$OUT"' EXIT
trap 'exit 130' INT TERM
want() { [[ " $ONLY " == *" $1 "* ]]; }
START=$(date +%s)
LOAD0=$(cut -d" " -f1-3 /proc/loadavg)

T=$ROOT/target/release
if [ "${NO_BUILD:-0}" != 1 ]; then
    echo "building geerpc..." >&2
    cargo build --release --quiet --examples --features cli --bin geerpc
fi
LOADGEN=$T/examples/loadgen
RUN_SWEEP="$ANCHORS/run-sweep.sh"

# point NAME "SERVER_CMD" "LOAD_CMD" CONNS:CONC:PAYLOAD -> appends one JSON line to $OUT/NAME
point() {
    SECS=$SECS PAUSE=0 SWEEP="$4" "$RUN_SWEEP" "$2" "$3" "$1" 2>>"$OUT/log" >>"$OUT/$1" || true
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
# both builds alternately, ROUNDS times (the scale section's points too, one
# caller per connection at each of SCALE_POINTS, by loadgen alone); the table shows medians and the
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
            # The scale points, one caller per connection, build against
            # build (against the peers, the scale section below runs scale.sh).
            if want scale; then
                for n in $SCALE_POINTS; do
                    (ulimit -n $((2 * n + 1000)) 2>/dev/null || true
                        point "$b-scale-$n" "$L serve" "$L load" "$n:$n:0")
                done
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
            if [ $b = new ]; then new_reg=http://127.0.0.1:$port/_rpc_/registry; else old_reg=http://127.0.0.1:$port/_rpc_/registry; fi
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
    if want scale; then
        for n in $SCALE_POINTS; do
            pair "${n}x$n calls/s (one caller per connection)" calls_per_sec "scale-$n"
            pair "${n}x$n p99 us (lower is better)" p99_us "scale-$n"
        done
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
A=$T/anchors/release
if [ "${NO_BUILD:-0}" != 1 ]; then
    for p in rawtcp $PEERS; do
        echo "building the $p anchor..." >&2
        CARGO_TARGET_DIR=$T/anchors cargo build --release --quiet --manifest-path "$ANCHORS/$p/Cargo.toml"
    done
fi
RAWTCP=$A/rawtcp
for b in "$LOADGEN" "$T/geerpc" "$RAWTCP"; do
    [ -x "$b" ] || { echo "compare.sh: $b is missing (NO_BUILD=1 without a build?)" >&2; exit 2; }
done
# the serve and load commands of a peer
bin_of() { case $1 in tarpc) echo "$A/tarpc-anchor" ;; tonic) echo "$A/tonic-anchor" ;; esac; }
for p in $PEERS; do
    [ -x "$(bin_of "$p")" ] || { echo "compare.sh: $(bin_of "$p") is missing" >&2; exit 2; }
done

# stop_bg: stops the processes a section started in the background (their
# PIDs in BG), so that they do not run beside the next section's points.
BG=()
stop_bg() {
    [ ${#BG[@]} -gt 0 ] || return 0
    kill "${BG[@]}" 2>/dev/null || true
    wait "${BG[@]}" 2>/dev/null || true
    BG=()
}

# Every point: geerpc, then each peer, then the next point; ROUNDS times.
if want c1; then
    echo "c1: concurrency 1, pinned and unpinned" >&2
    for _ in $(seq "$ROUNDS"); do
        point g-pin "taskset -c 0 $LOADGEN serve" "taskset -c 0 $LOADGEN load" 1:1:0
        point raw-pin "taskset -c 0 $RAWTCP serve" "taskset -c 0 $RAWTCP load --mode pingpong" 1:1:0
        point g-c1 "$LOADGEN serve" "$LOADGEN load" 1:1:0
        point raw-c1 "$RAWTCP serve" "$RAWTCP load --mode pingpong" 1:1:0
        for p in $PEERS; do point "$p-c1" "$(bin_of "$p") serve" "$(bin_of "$p") load" 1:1:0; done
    done
fi
if want mux; then
    echo "mux: 1 and 4 connections, concurrency 64 and 16" >&2
    for _ in $(seq "$ROUNDS"); do
        for x in 1:64 4:64 1:16; do
            k=${x%%:*}; c=${x##*:}
            point "g-${k}x$c" "$LOADGEN serve" "$LOADGEN load" "$x:0"
            for p in $PEERS; do point "$p-${k}x$c" "$(bin_of "$p") serve" "$(bin_of "$p") load" "$x:0"; done
        done
    done
fi
if want payload; then
    echo "payload: 1 connection, concurrency 16, 4 KiB" >&2
    for _ in $(seq "$ROUNDS"); do
        point g-4k-json "$LOADGEN serve" "$LOADGEN load --codec json" 1:16:4096
        point g-4k-msgpack "$LOADGEN serve" "$LOADGEN load --codec msgpack" 1:16:4096
        for p in $PEERS; do point "$p-4k" "$(bin_of "$p") serve" "$(bin_of "$p") load" 1:16:4096; done
        point raw-4k "$RAWTCP serve" "$RAWTCP load" 1:16:4096
    done
fi
if want xclient; then
    echo "xclient: registry discovery, 2 servers, concurrency 64" >&2
    REG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$T/geerpc" registry --addr "127.0.0.1:$REG_PORT" --ttl 1m >/dev/null 2>>"$OUT/log" &
    BG=($!)
    REG=http://127.0.0.1:$REG_PORT/_rpc_/registry
    XADDRS=()
    for _ in 1 2; do
        XADDRS+=("127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')")
        "$LOADGEN" serve --addr "${XADDRS[-1]}" --registry "$REG" >/dev/null 2>>"$OUT/log" &
        BG+=($!)
    done
    for _ in $(seq 100); do   # until both servers are registered (10 s at most)
        [ "$("$T/geerpc" list --registry "$REG" 2>/dev/null | wc -l)" -ge 2 ] && break
        sleep 0.1
    done
    for _ in $(seq "$ROUNDS"); do
        "$LOADGEN" load --registry "$REG" --select p2c --concurrency 64 --secs "$SECS" >>"$OUT/x-registry" 2>>"$OUT/log" || true
        "$LOADGEN" load --registry "$REG" --select round_robin --concurrency 64 --secs "$SECS" >>"$OUT/x-registry-rr" 2>>"$OUT/log" || true
        # The goal's baseline: one direct connection to each of the same
        # two servers, so that the ratio is the XClient's own cost and not
        # also that of a second server process on 2 cores. The older
        # baseline, two connections to one server process of its own,
        # stays as a reference (the two came out within each other's noise
        # in issue 23's runs).
        "$LOADGEN" load --addr "${XADDRS[0]},${XADDRS[1]}" --conns 2 --concurrency 64 --secs "$SECS" \
            >>"$OUT/x-direct-same" 2>>"$OUT/log" || true
        point x-direct "$LOADGEN serve" "$LOADGEN load" 2:64:0
    done
    stop_bg
fi
if want idle; then
    echo "idle: $IDLE_CONNS idle connections" >&2
    # One descriptor per connection on each side; raise the limit where allowed.
    (ulimit -n $((IDLE_CONNS + 1000)) 2>/dev/null || true
        "$T/examples/idle_conns" --conns "$IDLE_CONNS") >"$OUT/idle" 2>>"$OUT/log" || true
fi
if want registry && command -v wrk >/dev/null; then
    echo "registry: wrk heartbeats and lookups" >&2
    REG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$T/geerpc" registry --addr "127.0.0.1:$REG_PORT" --ttl 5m >/dev/null 2>>"$OUT/log" &
    BG=($!)
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
    stop_bg
fi
if want scale; then
    echo "scale: $SCALE_POINTS connections, one caller each (benches/scale.sh)" >&2
    # Its own table goes to $OUT/scale/table.txt; its records into ours.
    KEEP=$OUT/scale RECORDS=$OUT/scale-records POINTS=$SCALE_POINTS PEERS="rawtcp $PEERS" \
        SECS=$SECS ROUNDS=$ROUNDS NO_BUILD=1 ANCHORS=$ANCHORS \
        benches/scale.sh >"$OUT/scale-table.txt" 2>>"$OUT/log" || echo "compare.sh: scale.sh failed (see $OUT/log)" >&2
fi
if want registry-scale; then
    echo "registry-scale: the registry at scale (benches/registry_scale.sh)" >&2
    NO_BUILD=1 ARGS="--json" benches/registry_scale.sh >"$OUT/registry-scale" 2>>"$OUT/log" ||
        echo "compare.sh: registry_scale.sh failed (see $OUT/log)" >&2
fi

# The records, one per row of the table (benches/compare_table.py).
REC=$OUT/records
: >"$REC"
tab() { python3 "$ROOT/benches/compare_table.py" "$@"; }
# peers_of NAME GOAL: --peer arguments for tarpc and tonic's files NAME
peers_of() { for p in $PEERS; do printf '%s\n' --peer "$p=$OUT/$p-$1:$2"; done; }
if want c1; then
    tab point --section c1 --point "1 x 1, both pinned to CPU 0" --metric "p50 us" --field p50_us --lower-better \
        --geerpc "$OUT/g-pin" --peer "rawtcp=$OUT/raw-pin:<=1.15" >>"$REC"
    tab point --section c1 --point "1 x 1" --metric "p50 us" --field p50_us --lower-better \
        --geerpc "$OUT/g-c1" --peer "rawtcp=$OUT/raw-c1:<=1.15" >>"$REC"
    mapfile -t pa < <(peers_of c1 '>=1.25')
    tab point --section c1 --point "1 x 1" --metric "calls/s" --field calls_per_sec \
        --geerpc "$OUT/g-c1" --peer "rawtcp=$OUT/raw-c1" ${pa[@]+"${pa[@]}"} >>"$REC"
fi
if want mux; then
    mapfile -t pa < <(peers_of 1x16 '>=1.25')
    tab point --section mux --point "1 x 16" --metric "calls/s" --field calls_per_sec --geerpc "$OUT/g-1x16" ${pa[@]+"${pa[@]}"} >>"$REC"
    mapfile -t pa < <(peers_of 1x64 '>=1.25')
    tab point --section mux --point "1 x 64" --metric "calls/s" --field calls_per_sec --geerpc "$OUT/g-1x64" ${pa[@]+"${pa[@]}"} >>"$REC"
    mapfile -t pa < <(peers_of 4x64 '>=1.25')
    tab point --section mux --point "4 x 64" --metric "calls/s" --field calls_per_sec --geerpc "$OUT/g-4x64" ${pa[@]+"${pa[@]}"} >>"$REC"
fi
if want payload; then
    mapfile -t pa < <(peers_of 4k '>=1.25')
    for codec in json msgpack; do
        tab point --section payload --point "1 x 16, 4 KiB, $codec (rawtcp: mux)" --metric "calls/s" --field calls_per_sec \
            --geerpc "$OUT/g-4k-$codec" --peer "rawtcp=$OUT/raw-4k:>=1.0" ${pa[@]+"${pa[@]}"} >>"$REC"
    done
fi
if want xclient; then
    tab point --section xclient --point "XClient + registry, 2 servers, c=64, p2c" --metric "calls/s" --field calls_per_sec \
        --geerpc "$OUT/x-registry" --peer "direct to the 2 servers=$OUT/x-direct-same:>=0.9" \
        --peer "2 conns to 1 server=$OUT/x-direct" >>"$REC"
    tab point --section xclient --point "XClient + registry, 2 servers, c=64, round robin" --metric "calls/s" --field calls_per_sec \
        --geerpc "$OUT/x-registry-rr" --peer "direct to the 2 servers=$OUT/x-direct-same" \
        --peer "2 conns to 1 server=$OUT/x-direct" >>"$REC"
fi
if want idle; then
    tab point --section idle --point "$IDLE_CONNS idle conns" --metric "server RSS KiB/conn" --field rss_kib_per_conn \
        --geerpc "$OUT/idle" --goal "<=64" --lower-better >>"$REC"
    tab point --section idle --point "$IDLE_CONNS idle conns" --metric "new call latency ms" --field new_call_ms \
        --geerpc "$OUT/idle" --goal "<=10" --lower-better --note "a call on a new connection" >>"$REC"
fi
if want registry && command -v wrk >/dev/null; then
    for f in post get; do
        goal='>=40000'; what="GET of 100 instances"
        [ $f = post ] && { goal='>=60000'; what="heartbeat POST"; }
        p99=$(python3 -c 'import json,statistics,sys; v=[json.loads(l)["p99_ms"] for l in open(sys.argv[1]) if l.strip()]; print(f"{statistics.median(v):.2f}" if v else "-")' "$OUT/wrk-$f")
        tab point --section registry --point "registry, $what, wrk -t2 -c32" --metric "req/s" --field rps \
            --geerpc "$OUT/wrk-$f" --goal "$goal" --note "p99 $p99 ms" >>"$REC"
    done
fi
want scale && [ -f "$OUT/scale-records" ] && cat "$OUT/scale-records" >>"$REC"
want registry-scale && tab registry-scale "$OUT/registry-scale" >>"$REC"

# The command that reproduces this run: the knobs in effect.
CMD="SECS=$SECS ROUNDS=$ROUNDS ONLY=\"$ONLY\""
[ "$PEERS" = "tarpc tonic" ] || CMD="$CMD PEERS=\"$PEERS\""
want idle && [ "$IDLE_CONNS" != 10000 ] && CMD="$CMD IDLE_CONNS=$IDLE_CONNS"
want scale && CMD="$CMD SCALE_POINTS=\"$SCALE_POINTS\""
for v in IDLE_WAIT INSTANCES SERVICES WATCHERS CHANGES SCOPE TTL WRK_SECS SMOKE; do
    [ -n "${!v:-}" ] && CMD="$CMD $v=\"${!v}\""
done
CMD="$CMD benches/compare.sh"
SETTINGS="$(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'), $(nproc) CPUs, load before/after: $LOAD0 / $(cut -d' ' -f1-3 /proc/loadavg), $(($(date +%s) - START)) s in all; medians of $ROUNDS round(s) of ${SECS} s points"
echo >&2
tab print "$REC" --command "$CMD" --settings "$SETTINGS"
[ -z "${KEEP:-}" ] || echo "raw JSON lines, records and log: $OUT"
