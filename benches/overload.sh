#!/usr/bin/env bash
# The overload and long-tail points of issue 18 (docs/BENCH.md, "Context
# and overload"), each goal a ratio measured in one run against one
# `loadgen serve`:
#
#   overload  a capacity probe (closed loop, Arith.Work 200 us, 4 conns x
#             64 callers) gives C calls/s; then an open loop offers C and 2C
#             calls/s, each call with a 100 ms deadline. Goals: goodput at 2C
#             >= 0.9x goodput at C, and the successful calls' p99 at 2C
#             <= 100 ms.
#   tail      brpc's long-tail test: 4 conns x 64 callers of Arith.Sum, 1%
#             of the calls an Arith.Sleep 10 ms, against the same load
#             without them. Goal: p99 of the fast calls <= 1.5x the p99
#             without slow calls.
#
# Points run alternately, ROUNDS times, and the table shows medians. Not
# part of CI: timings are not tests.
#
#   benches/overload.sh
#   ONLY=tail ROUNDS=5 benches/overload.sh
#   SERVE_ARGS="--some-limit 8" benches/overload.sh    # server flags (the limiter's, once it has them)
#   BASELINE=/path/to/old/build benches/overload.sh    # this build against an older one
#
# BASELINE=DIR: DIR holds an older build's `loadgen` (one that has the
# flags of "Context and overload", i.e. from issue 18's benchmark commit
# on); each build serves and loads itself, alternately, and the table
# shows both and the ratio new/old. SERVE_ARGS go to this build's server
# only, OLD_SERVE_ARGS to the older one's.
#
# Environment: SECS per point (5), ROUNDS (3), ONLY (subset of: overload
# tail), SERVE_ARGS, OLD_SERVE_ARGS, BASELINE, WORK_US (200), TIMEOUT_MS
# (100), CONNS (4), CONCURRENCY (64), PIN (1).
#
# PIN=1 (the default, on a machine with 2 CPUs or more): for the overload
# points the server runs on CPU 0 and the load on the others (taskset), as
# if on two machines (the tail points run unpinned either way: they
# measure a slow call's effect on the others, not capacity). On
# one shared pair of CPUs the open loop's own cost grows with the rate it
# offers (at 2x on this 2-core VM it took ~0.7 of a core, against ~0.35 at
# 1x), so unpinned, "capacity" shrinks as the offered load grows and the
# 2x point measures the load generator as much as the server's shedding.
# PIN=0 runs unpinned (both figures are in docs/BENCH.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
ONLY=${ONLY:-"overload tail"}
WORK_US=${WORK_US:-200}
TIMEOUT_MS=${TIMEOUT_MS:-100}
CONNS=${CONNS:-4}
CONCURRENCY=${CONCURRENCY:-64}
PIN=${PIN:-1}
SERVER_CPUS=()
LOAD_CPUS=()
# pin on|off: where the servers started next and the loads run
pin() {
    SERVER_CPUS=()
    LOAD_CPUS=()
    if [ "$1" = on ] && [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
        SERVER_CPUS=(taskset -c 0)
        LOAD_CPUS=(taskset -c "1-$(($(nproc) - 1))")
        echo "pinned: server ${SERVER_CPUS[*]}, load ${LOAD_CPUS[*]} (PIN=0: unpinned)" >&2
    else
        echo "unpinned" >&2
    fi
}
read -ra NEW_SERVE_ARGS <<<"${SERVE_ARGS:-}"
read -ra OLD_SERVE_ARGS <<<"${OLD_SERVE_ARGS:-}"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/geerpc-overload.XXXXXX")
trap 'jobs -p | xargs -r kill 2>/dev/null; rm -rf "$OUT"' EXIT
want() { [[ " $ONLY " == *" $1 "* ]]; }

echo "building loadgen..." >&2
cargo build --release --quiet --example loadgen
BUILDS=(new)
declare -A LOADGEN=([new]=$ROOT/target/release/examples/loadgen)
if [ -n "${BASELINE:-}" ]; then
    [ -x "$BASELINE/loadgen" ] || { echo "BASELINE: $BASELINE/loadgen is missing or not executable" >&2; exit 2; }
    "$BASELINE/loadgen" load --addr 127.0.0.1:1 --method work --arg 1 --timeout 1 --rate 1 --secs 0.01 \
        >/dev/null 2>"$OUT/probe" || true
    if grep -q "unknown flag" "$OUT/probe"; then
        echo "BASELINE: $BASELINE/loadgen predates --method/--rate (docs/BENCH.md, \"Context and overload\")" >&2
        exit 2
    fi
    BUILDS=(new old)
    LOADGEN[old]=$BASELINE/loadgen
fi

# start_server BUILD: one `loadgen serve` on a free port; sets ADDR_<BUILD>
start_server() {
    local b=$1 args=()
    if [ "$b" = new ]; then args=(${NEW_SERVE_ARGS[@]+"${NEW_SERVE_ARGS[@]}"}); else args=(${OLD_SERVE_ARGS[@]+"${OLD_SERVE_ARGS[@]}"}); fi
    : >"$OUT/$b-serve.out"
    : >"$OUT/$b-serve.err"
    ${SERVER_CPUS[@]+"${SERVER_CPUS[@]}"} "${LOADGEN[$b]}" serve --addr 127.0.0.1:0 ${args[@]+"${args[@]}"} >"$OUT/$b-serve.out" 2>"$OUT/$b-serve.err" &
    eval "PID_$b=$!"
    for _ in $(seq 100); do   # until it says `ready` (10 s at most)
        grep -q ready "$OUT/$b-serve.out" 2>/dev/null && break
        sleep 0.1
    done
    local addr
    addr=$(sed -n 's/.*serving on tcp@\([^ ]*\).*/\1/p' "$OUT/$b-serve.err" | head -1)
    [ -n "$addr" ] || { echo "loadgen serve ($b) did not start:" >&2; cat "$OUT/$b-serve.err" >&2; exit 1; }
    eval "ADDR_$b=$addr"
}
# servers on|off: (re)starts every build's server, pinned or not
servers() {
    local b pid_var
    for b in "${BUILDS[@]}"; do
        pid_var="PID_$b"
        if [ -n "${!pid_var:-}" ]; then kill "${!pid_var}" 2>/dev/null || true; wait "${!pid_var}" 2>/dev/null || true; fi
    done
    pin "$1"
    for b in "${BUILDS[@]}"; do start_server "$b"; done
}

# point BUILD NAME LOAD_ARGS...: appends the load's JSON line to $OUT/BUILD-NAME
point() {
    local b=$1 name=$2 addr_var="ADDR_$1"
    shift 2
    ${LOAD_CPUS[@]+"${LOAD_CPUS[@]}"} "${LOADGEN[$b]}" load --addr "${!addr_var}" --secs "$SECS" "$@" >>"$OUT/$b-$name" 2>>"$OUT/log" || true
}

# median FILE FIELD
median() {
    python3 - "$1" "$2" <<'PY'
import json, statistics, sys
try:
    vals = [json.loads(l)[sys.argv[2]] for l in open(sys.argv[1]) if l.strip()]
except FileNotFoundError:
    vals = []
print(statistics.median(vals) if vals else "nan")
PY
}
ratio() { python3 -c "a,b=float('$1'),float('$2'); print(f'{a/b:.2f}x' if b else 'nan')"; }

echo "load before: $(uptime)" >&2
WORK=(--method work --arg "$WORK_US" --conns "$CONNS")
if want overload; then
    servers on
    echo "overload: capacity probe, Arith.Work $WORK_US us, $CONNS conns x $CONCURRENCY callers" >&2
    for _ in $(seq "$ROUNDS"); do
        for b in "${BUILDS[@]}"; do point "$b" capacity "${WORK[@]}" --concurrency "$CONCURRENCY"; done
    done
    declare -A CAP
    for b in "${BUILDS[@]}"; do
        CAP[$b]=$(median "$OUT/$b-capacity" goodput)
        echo "  $b: capacity C = ${CAP[$b]} calls/s" >&2
    done
    echo "overload: open loop at 1x and 2x C, deadline $TIMEOUT_MS ms" >&2
    for _ in $(seq "$ROUNDS"); do
        for x in 1 2; do
            for b in "${BUILDS[@]}"; do
                rate=$(python3 -c "print(max(1.0, $x * float('${CAP[$b]}')))")
                point "$b" "rate$x" "${WORK[@]}" --rate "$rate" --timeout "$TIMEOUT_MS"
            done
        done
    done
fi
if want tail; then
    servers off
    echo "tail: $CONNS conns x $CONCURRENCY callers, 1% Arith.Sleep 10 ms vs none" >&2
    for _ in $(seq "$ROUNDS"); do
        for b in "${BUILDS[@]}"; do
            point "$b" plain --conns "$CONNS" --concurrency "$CONCURRENCY"
            point "$b" slow --conns "$CONNS" --concurrency "$CONCURRENCY" --slow-ratio 0.01 --slow-ms 10
        done
    done
fi
echo "load after: $(uptime)" >&2

ROWS=$OUT/rows
: >"$ROWS"
row() { printf '%-52s %12s %12s %8s %8s\n' "$@" >>"$ROWS"; }
# value BUILD NAME FIELD / ratio of two medians of one build
m() { median "$OUT/$1-$2" "$3"; }
# line LABEL TARGET EXPR_PER_BUILD...: one row, this build's value, the older one's, new/old
line() {
    local label=$1 target=$2 fn=$3 new old="-" r="-"
    new=$($fn new)
    if [ ${#BUILDS[@]} = 2 ]; then old=$($fn old); r=$(ratio "$new" "$old"); fi
    row "$label" "$new" "$old" "$r" "$target"
}
row "point (median of $ROUNDS, ${SECS}s each)" "new" "old" "new/old" "goal"
if want overload; then
    cap() { m "$1" capacity goodput; }
    g1() { m "$1" rate1 goodput; }
    g2() { m "$1" rate2 goodput; }
    gr() { ratio "$(g2 "$1")" "$(g1 "$1")" | tr -d x; }
    p1() { m "$1" rate1 good_p99_us; }
    p2() { m "$1" rate2 good_p99_us; }
    t2() { m "$1" rate2 timeouts; }
    s2() { m "$1" rate2 shed; }
    line "capacity C: closed loop calls/s" "-" cap
    line "goodput at 1x C (calls/s within ${TIMEOUT_MS} ms)" "-" g1
    line "goodput at 2x C" "-" g2
    line "goodput 2x / 1x" ">=0.9" gr
    # Against capacity too: when 1x itself collapses, 2x / 1x means little.
    gc() { ratio "$(g2 "$1")" "$(cap "$1")" | tr -d x; }
    line "goodput 2x / capacity C" "-" gc
    line "good calls' p99 us at 1x C" "-" p1
    line "good calls' p99 us at 2x C" "<=100000" p2
    line "timeouts at 2x C (in the window)" "-" t2
    line "shed at 2x C" "-" s2
fi
if want tail; then
    pp() { m "$1" plain p99_us; }
    fp() { m "$1" slow fast_p99_us; }
    tr_() { ratio "$(fp "$1")" "$(pp "$1")" | tr -d x; }
    line "p99 us without slow calls" "-" pp
    line "fast calls' p99 us with 1% slow (10 ms)" "-" fp
    line "fast p99 with slow / p99 without" "<=1.5" tr_
fi
cat "$ROWS"
# Every round's figures too: at 1x capacity an unprotected server tips
# into timing everything out at some point of a run, or not, so the
# rounds can differ widely.
echo
echo "rounds (in order):"
for f in "$OUT"/*-capacity "$OUT"/*-rate1 "$OUT"/*-rate2 "$OUT"/*-plain "$OUT"/*-slow; do
    [ -s "$f" ] || continue
    python3 - "$f" <<'PY'
import json, os, sys
name = os.path.basename(sys.argv[1])
keys = ["calls_per_sec", "goodput", "good_p99_us", "timeouts", "shed", "p99_us", "fast_p99_us"]
for l in open(sys.argv[1]):
    if l.strip():
        d = json.loads(l)
        print(f"  {name:14s} " + " ".join(f"{k}={d[k]}" for k in keys if k in d))
PY
done
