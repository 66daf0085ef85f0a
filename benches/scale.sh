#!/usr/bin/env bash
# The scale points of issue 23 (shared BENCH.md, "Scale points"): many
# connections with ONE caller each, as a server sees many client
# processes. geerpc's loadgen against rawtcp `--mode pingpong` (the
# thread-per-connection floor), tarpc and tonic, each point run by every
# system in turn (geerpc, then each peer, then the next point), ROUNDS
# times; the table shows medians, their ratios and the issue's goals
# (>= 0.95x the floor, >= 1.25x tarpc and tonic) marked met or NOT MET,
# and at the largest point the server's thread count and RSS per
# connection (from /proc/PID/status of the server process, read in the
# measured window once every connection is open; goal <= 64 KiB) and its
# context switches per call (all its threads). For every point and
# system it also shows the CPU a call costs (user and system time of the
# server and of the load over the same window, in microseconds), and the
# floor's own ratio to tarpc and tonic: the most a thread-per-connection
# server can reach against them. Not part of CI: timings are not
# tests, and they mean something only on a quiet machine.
#
#   benches/scale.sh                              # 3 points x 4 systems x 3 rounds, 5 s each (~4 min)
#   SECS=2 ROUNDS=1 POINTS=64 benches/scale.sh    # a smoke run
#   PEERS="rawtcp" POINTS="1000" benches/scale.sh
#
# Environment:
#   ANCHORS    the shared anchors' folder (default ../shared/anchors)
#   SECS       seconds per point (5), after the load's 0.5 s warm-up
#   ROUNDS     how many times each point runs per system (3; median shown)
#   POINTS     connection counts, one caller each ("64 256 1000")
#   PEERS      subset of "rawtcp tarpc tonic", plus "epoll" (not by
#              default): the rawtcp frames served by examples/epoll_floor.rs
#              (2 threads waiting on every connection with epoll) under
#              rawtcp's pingpong load: the floor of a readiness-based
#              server, with the same one-thread-per-connection clients
#   IDLE_WAIT  before each point, wait up to this many seconds for the
#              machine to be idle (under 10% of one core busy over 1 s);
#              0 skips the wait (60)
#   NO_BUILD   1: use the binaries already built
#   KEEP       a folder to keep the raw JSON lines in (one file per system
#              and point, plus "log"); a temporary folder otherwise
#   RECORDS    a file to append the results to as JSON records, one a line
#              (the form benches/compare_table.py prints; compare.sh's
#              `scale` section folds them into its table)
#
# The peers are built once into target/release/anchors (as compare.sh
# does; tonic's build needs `protoc`: apt-get install protobuf-compiler),
# only when their binary is not there yet.
#
# The script reads the server's /proc at set moments of each load. At 1000
# connections 2,000 busy threads share the cores, and a script at the
# normal priority got so small a share that its reads came seconds late,
# after the load had ended (context switches per call read 0.00). Run as
# root, it runs itself at a real-time priority (SCHED_FIFO 10; it sleeps
# nearly all the time) and starts builds, servers and loads at the normal
# one (SCHED_OTHER); SCALE_RT=0 turns that off.
set -euo pipefail
if [ -z "${SCALE_RT:-}" ] && [ "$(id -u)" = 0 ] && command -v chrt >/dev/null &&
    chrt -f 10 true 2>/dev/null; then
    export SCALE_RT=1
    exec chrt -f 10 bash "$0" "$@"
fi
AS_OTHER=()
[ "${SCALE_RT:-}" = 1 ] && AS_OTHER=(chrt -o 0)
cd "$(dirname "$0")/.."
ROOT=$PWD
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-3}
POINTS=${POINTS:-"64 256 1000"}
PEERS=${PEERS:-"rawtcp tarpc tonic"}
IDLE_WAIT=${IDLE_WAIT:-60}
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
if [ -n "${KEEP:-}" ]; then
    OUT=$KEEP; mkdir -p "$OUT"
else
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/geerpc-scale.XXXXXX")
fi
SERVER_PID=""
# Stops the server this script started (by its PID only): SIGTERM, then
# SIGKILL if it is still running 5 s later, then reaps it.
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do
        case $(awk '{print $3}' "/proc/$SERVER_PID/stat" 2>/dev/null) in "" | Z) break ;; esac
        sleep 0.1
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
cleanup() {
    stop_server
    [ -n "${KEEP:-}" ] || rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One descriptor per connection on each side, more at 1000 connections
# than the usual soft limit of 1024: raise it where the shell may.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
max_points=0
for p in $POINTS; do [ "$p" -gt "$max_points" ] && max_points=$p; done
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((2 * max_points + 100)) ]; then
    echo "scale.sh: open-files limit $(ulimit -n) is too low for $max_points connections" >&2
    exit 2
fi

T=$ROOT/target/release
A=$T/anchors/release
if [ "${NO_BUILD:-0}" != 1 ]; then
    echo "building loadgen..." >&2
    "${AS_OTHER[@]}" cargo build --release --quiet --example loadgen
    for p in $PEERS; do
        case $p in
            rawtcp) bin=$A/rawtcp ;;
            tarpc) bin=$A/tarpc-anchor ;;
            tonic) bin=$A/tonic-anchor ;;
            # Its own server, rawtcp's load (so the rawtcp anchor).
            epoll) "${AS_OTHER[@]}" cargo build --release --quiet --example epoll_floor; p=rawtcp; bin=$A/rawtcp ;;
            *) echo "scale.sh: unknown peer $p (rawtcp tarpc tonic epoll)" >&2; exit 2 ;;
        esac
        if [ ! -x "$bin" ]; then
            [ -f "$ANCHORS/$p/Cargo.toml" ] || {
                echo "scale.sh: no $p anchor in $ANCHORS; set ANCHORS (docs/BENCH.md, \"The peers\")" >&2
                exit 2
            }
            echo "building the $p anchor..." >&2
            CARGO_TARGET_DIR=$T/anchors "${AS_OTHER[@]}" cargo build --release --quiet --manifest-path "$ANCHORS/$p/Cargo.toml"
        fi
    done
fi
# server and load commands of each system
server_of() {
    case $1 in
        geerpc) echo "$T/examples/loadgen serve" ;;
        rawtcp) echo "$A/rawtcp serve" ;;
        tarpc) echo "$A/tarpc-anchor serve" ;;
        tonic) echo "$A/tonic-anchor serve" ;;
        epoll) echo "$T/examples/epoll_floor serve" ;;
    esac
}
load_of() {
    case $1 in
        geerpc) echo "$T/examples/loadgen load" ;;
        rawtcp) echo "$A/rawtcp load --mode pingpong" ;;
        tarpc) echo "$A/tarpc-anchor load" ;;
        tonic) echo "$A/tonic-anchor load" ;;
        epoll) echo "$A/rawtcp load --mode pingpong" ;;
    esac
}
for s in geerpc $PEERS; do
    bin=$(server_of "$s"); bin=${bin%% *}
    [ -x "$bin" ] || { echo "scale.sh: $bin is missing (NO_BUILD=1 without a build?)" >&2; exit 2; }
done

cpu_busy() {
    local _c u n s _i _w q sq st _rest
    read -r _c u n s _i _w q sq st _rest </proc/stat
    echo $((u + n + s + q + sq + st))
}
proc_cpu() {   # utime+stime of a live process, jiffies
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    # shellcheck disable=SC2086
    set -- ${stat##*) }
    echo $((${12} + ${13}))
}
proc_split() {   # "utime stime" of a live process, jiffies ("0 0" once it is gone)
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo "0 0"; return; }
    # shellcheck disable=SC2086
    set -- ${stat##*) }
    echo "${12} ${13}"
}
# The load process itself: the child of `timeout` (its PID is $!).
# A load that ended already has none: not an error (set -e would end the script).
load_child() { { cat "/proc/$1/task/$1/children" 2>/dev/null || true; } | awk '{print $1}'; }
children_cpu() {   # cutime+cstime of this shell (reaped children), jiffies
    local stat
    stat=$(cat "/proc/$$/stat")
    # shellcheck disable=SC2086
    set -- ${stat##*) }
    echo $((${14} + ${15}))
}
status_field() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || true; }
# Context switches of every thread of a process (a thread's own status
# file counts only its own; the process's is its main thread's). A thread
# that ends between the glob and the read fails cat, which with pipefail
# and set -e ended the whole script silently: hence the `|| true`.
switches() {
    { cat /proc/"$1"/task/*/status 2>/dev/null || true; } |
        awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ {n += $2} END {print n + 0}'
}
# Established connections accepted on loopback port $1 (the server's side:
# local port $1, state 01), from /proc/net/tcp and tcp6.
established() {
    awk -v p="$(printf '%04X' "$1")" '$4 == "01" { split($2, a, ":"); if (a[2] == p) n++ } END { print n + 0 }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
now() { date +%s.%N; }
# sleep_until T: sleeps until `now` reaches T (at once if past), so that
# the time the commands in between take does not add up.
sleep_until() { sleep "$(awk -v t="$1" -v n="$(now)" 'BEGIN { d = t - n; print (d > 0 ? d : 0) }')"; }
plus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a + b }'; }
wait_idle() {
    [ "$IDLE_WAIT" -gt 0 ] || return 0
    local b0 b1
    for _ in $(seq 1 "$IDLE_WAIT"); do
        b0=$(cpu_busy); sleep 1; b1=$(cpu_busy)
        [ $(((b1 - b0) * 10)) -lt "$HZ" ] && return 0
    done
    echo "scale.sh: machine still busy after $IDLE_WAIT s, measuring anyway" >&2
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# point SYSTEM CONNS: one run, appends one JSON line to $OUT/SYSTEM-CONNS
point() {
    local sys=$1 n=$2 port base_rss rss threads conns_now cs0 cs1 t0 t1 s0 s1 l0 l1 b0 b1 line load_pid hwm ref
    local lc sw0 sw1 lw0 lw1
    wait_idle
    port=$(free_port)
    # Emptied here, not by the server's redirection, which may come after
    # the first look for `ready` and would then find the last point's.
    : >"$OUT/server.out"
    # shellcheck disable=SC2086
    "${AS_OTHER[@]}" $(server_of "$sys") --addr "127.0.0.1:$port" >>"$OUT/server.out" 2>>"$OUT/log" &
    SERVER_PID=$!
    for _ in $(seq 300); do   # 30 s at most (a loaded machine is slow to start one)
        grep -qx ready "$OUT/server.out" 2>/dev/null && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -qx ready "$OUT/server.out" 2>/dev/null; then
        echo "scale.sh: $sys server did not start (see $OUT/log)" >&2
        stop_server
        return 0
    fi
    base_rss=$(status_field "$SERVER_PID" VmRSS)
    echo "scale.sh: $sys ${n}x$n, $SECS s" >&2
    b0=$(cpu_busy); s0=$(proc_cpu "$SERVER_PID"); l0=$(children_cpu)
    # shellcheck disable=SC2086,SC2046
    "${AS_OTHER[@]}" timeout $((3 * ${SECS%.*} + 120)) $(load_of "$sys") --addr "127.0.0.1:$port" --conns "$n" \
        --concurrency "$n" --secs "$SECS" --payload 0 >"$OUT/load.out" 2>>"$OUT/log" &
    load_pid=$!
    # Every load opens all its connections first, then starts its clock
    # (0.5 s of warm-up, then SECS measured): wait for the server to hold
    # them all (60 s at most), then read the server in the measured
    # window: threads and RSS at its first fifth, context switches of all
    # its threads between its first and third fifths.
    for _ in $(seq 600); do
        [ "$(established "$port")" -ge "$n" ] && break
        kill -0 "$load_pid" 2>/dev/null || break
        sleep 0.1
    done
    ref=$(now)
    sleep_until "$(plus "$ref" "$(awk -v s="$SECS" 'BEGIN { print 0.5 + s / 5 }')")"
    rss=$(status_field "$SERVER_PID" VmRSS); threads=$(status_field "$SERVER_PID" Threads)
    conns_now=$(established "$port")
    # A load that ended already (it never had all its connections open
    # at once) leaves nothing to read.
    kill -0 "$load_pid" 2>/dev/null || { rss=0; threads=0; conns_now=0; }
    lc=$(load_child "$load_pid")
    t0=$(now); cs0=$(switches "$SERVER_PID"); sw0=$(proc_split "$SERVER_PID"); lw0=$(proc_split "${lc:-0}")
    sleep_until "$(plus "$ref" "$(awk -v s="$SECS" 'BEGIN { print 0.5 + s * 3 / 5 }')")"
    t1=$(now); cs1=$(switches "$SERVER_PID"); sw1=$(proc_split "$SERVER_PID"); lw1=$(proc_split "${lc:-0}")
    # Counted over connections that were all still open, or not at all.
    kill -0 "$load_pid" 2>/dev/null || cs1=-1
    wait "$load_pid" || true
    b1=$(cpu_busy); s1=$(proc_cpu "$SERVER_PID"); l1=$(children_cpu)
    hwm=$(status_field "$SERVER_PID" VmHWM)
    stop_server
    line=$(tail -n 1 "$OUT/load.out")
    case $line in
        "{"*"}") ;;
        *) echo "scale.sh: no JSON line from $sys load at ${n}x$n (see $OUT/log)" >&2; return 0 ;;
    esac
    python3 - "$line" "$sys" "${base_rss:-0}" "${rss:-0}" "${hwm:-0}" "${threads:-0}" "$conns_now" \
        "$([ "$cs1" -ge 0 ] && echo $((cs1 - cs0)) || echo -1)" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
        $((s1 - s0)) $((l1 - l0)) $((b1 - b0)) "$HZ" "$sw0" "$sw1" "$lw0" "$lw1" >>"$OUT/$sys-$n" <<'PY'
import json, os, sys
line = json.loads(sys.argv[1])
sysname, base, rss, hwm, threads, held, cs, window, s, l, b, hz, sw0, sw1, lw0, lw1 = sys.argv[2:]
hz = float(hz)
conns = max(1, int(line.get("conns", 1)))
ok = int(rss) > 0   # read while the load ran
# The calls made while the switches were counted, at the run's mean rate.
calls_window = max(1.0, line.get("calls_per_sec", 0) * float(window))
line.update({
    "scale_system": sysname,
    "server_rss_base_kib": int(base), "server_rss_kib": int(rss) if ok else None,
    "server_hwm_kib": int(hwm), "server_threads": int(threads) if ok else None,
    # Connections the server held (established, its side) when read: fewer
    # than "conns" means some were still waiting in the listen backlog.
    "server_conns": int(held),
    "server_rss_kib_per_conn": (int(rss) - int(base)) / int(held) if ok and int(held) else None,
    "server_peak_rss_kib_per_conn": (int(hwm) - int(base)) / conns,
    "server_switches_per_call": int(cs) / calls_window if int(cs) >= 0 else None,
    "server_cpu_s": int(s) / hz, "load_cpu_s": int(l) / hz,
    "foreign_cpu_s": (int(b) - int(s) - int(l)) / hz,
})
# CPU per call in the same window, user and system, of the server and of
# the load (microseconds): where a call's time goes, and how much of it is
# the kernel's rather than the software's own. Every point is CPU-bound,
# so calls/s is about the cores over this.
(su0, ss0), (su1, ss1), (lu0, ls0), (lu1, ls1) = (map(int, x.split()) for x in (sw0, sw1, lw0, lw1))
# Only from a window in which the two kept the cores busy: a window that
# came late (a load that starts its clock as soon as its own connects
# return, before the server has accepted them all, ends before the script
# expects) would divide a tail's CPU by calls made before it.
busy = (su1 - su0 + ss1 - ss0 + lu1 - lu0 + ls1 - ls0) / hz / max(float(window), 1e-3)
line["cpu_window_busy_cores"] = busy
if int(cs) >= 0 and lu1 + ls1 > 0 and busy >= 0.75 * (os.cpu_count() or 1):
    us = lambda j: j / hz / calls_window * 1e6
    line.update({"server_user_us_per_call": us(su1 - su0), "server_sys_us_per_call": us(ss1 - ss0),
                 "load_user_us_per_call": us(lu1 - lu0), "load_sys_us_per_call": us(ls1 - ls0),
                 "cpu_us_per_call": us(su1 - su0 + ss1 - ss0 + lu1 - lu0 + ls1 - ls0)})
print(json.dumps(line))
PY
}

for _ in $(seq "$ROUNDS"); do
    for n in $POINTS; do
        for s in geerpc $PEERS; do
            point "$s" "$n"
        done
    done
done

python3 - "$OUT" "$POINTS" "$PEERS" "$SECS" "$ROUNDS" "${RECORDS:-}" <<'PY'
import json, os, statistics, sys
out, points, peers, secs, rounds, records = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], sys.argv[5], sys.argv[6]
def lines(sysname, n):
    p = os.path.join(out, f"{sysname}-{n}")
    return [json.loads(l) for l in open(p) if l.strip()] if os.path.exists(p) else []
def med(sysname, n, field):
    v = [l[field] for l in lines(sysname, n) if l.get(field) is not None]
    return statistics.median(v) if v else None
rows = []
def row(goal, g, peer, ratio, target, verdict, what):
    rows.append((goal, g, peer, ratio, target, verdict, what))
fmt = lambda v, d=0: "-" if v is None else f"{v:,.{d}f}"
goals = {"rawtcp": 0.95, "tarpc": 1.25, "tonic": 1.25, "epoll": None}
names = {"rawtcp": "rawtcp pingpong (floor)", "tarpc": "tarpc", "tonic": "tonic",
         "epoll": "epoll floor (rawtcp frames)"}
target = lambda p: "-" if goals[p] is None else f">={goals[p]:.2f}x"
errors = []
for n in points:
    g = med("geerpc", n, "calls_per_sec")
    for s in ["geerpc"] + peers:
        e = sum(l.get("errors", 0) for l in lines(s, n))
        if e:
            errors.append(f"{s} {n}x{n}: {e} errors")
    for p in peers:
        v = med(p, n, "calls_per_sec")
        if g is None or not v:
            row(f"{n}x{n} calls/s vs {names[p]}", fmt(g), fmt(v), "-", target(p), "no data", "")
            continue
        r = g / v
        verdict = "" if goals[p] is None else ("met" if r >= goals[p] else "NOT MET")
        row(f"{n}x{n} calls/s vs {names[p]}", fmt(g), fmt(v), f"{r:.2f}x", target(p),
            verdict, f"median of {len(lines('geerpc', n))}/{len(lines(p, n))}")
    for p in ["geerpc"] + peers:
        p99 = med(p, n, "p99_us")
        if p99 is not None:
            row(f"{n}x{n} p99 us: {p}", fmt(p99), "-", "-", "-", "", "latency, for reference")
top = str(max(int(n) for n in points))
per = med("geerpc", top, "server_rss_kib_per_conn")
row(f"{top} conns: geerpc server RSS KiB/conn", fmt(per, 1), "-", "-", "<=64",
    "-" if per is None else ("met" if per <= 64 else "NOT MET"), "(RSS in the run - RSS before) / conns held")
peak = med("geerpc", top, "server_peak_rss_kib_per_conn")
row(f"{top} conns: geerpc peak RSS KiB/conn", fmt(peak, 1), "-", "-", "-", "", "(VmHWM at the end - RSS before) / conns")
for p in ["geerpc"] + peers:
    t, rss, sw = med(p, top, "server_threads"), med(p, top, "server_rss_kib"), med(p, top, "server_switches_per_call")
    if t is not None:
        row(f"{top} conns: {p} server threads / RSS MiB", f"{fmt(t)} / {fmt(rss / 1024, 1)}", "-", "-", "-", "",
            f"ctx switches/call {sw:.2f}" if sw is not None else "")
for n in points:
    for p in ["geerpc"] + peers:
        f = [med(p, n, k) for k in ("server_user_us_per_call", "server_sys_us_per_call",
                                    "load_user_us_per_call", "load_sys_us_per_call")]
        if None not in f:
            row(f"{n}x{n} CPU us/call: {p}", f"{sum(f):.1f}", "-", "-", "-", "",
                f"server user {f[0]:.2f} sys {f[1]:.2f}, load user {f[2]:.2f} sys {f[3]:.2f}")
    # What a thread-per-connection server can reach at best: the floor's
    # own ratio to the peers that serve many connections per thread; and
    # the same for a readiness-based server (the epoll floor), if it ran.
    for floor, kind in (("rawtcp", "thread-per-connection"), ("epoll", "readiness-based")):
        raw = med(floor, n, "calls_per_sec")
        for p in (p for p in peers if p in ("tarpc", "tonic")):
            v = med(p, n, "calls_per_sec")
            if raw and v:
                row(f"{n}x{n} floor ({floor}) vs {p}", fmt(raw), fmt(v), f"{raw / v:.2f}x", "-", "",
                    f"the ceiling of geerpc/{p} for a {kind} server")
foreign = [l.get("foreign_cpu_s", 0) for s in ["geerpc"] + peers for n in points for l in lines(s, n)]
w = [max(len(str(r[i])) for r in rows + [("goal", "geerpc", "peer", "ratio", "target", "verdict", "")]) for i in range(6)]
print(f"scale points: one caller per connection, {secs} s each, {rounds} round(s), systems alternating point by point")
print("  ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(["goal", "geerpc", "peer", "ratio", "target", "verdict"])) + "  what")
for r in rows:
    print("  ".join(str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i]) for i, c in enumerate(r[:6])) + "  " + r[6])
if foreign:
    print(f"foreign CPU per run (s, other processes): max {max(foreign):.2f}, median {statistics.median(foreign):.2f}"
          " (over ~0.3 s the figures are not trustworthy)")
for n in points:
    for s in ["geerpc"] + peers:
        for l in lines(s, n):
            if l.get("server_conns", int(n)) < int(n):
                print(f"WARNING: the {s} server held {l['server_conns']} of {n} connections when read"
                      " (the rest were still in its listen backlog, or the load had ended): that run was"
                      " not a {n}-connection run".replace("{n}", n))
for e in errors:
    print("ERRORS: " + e)
# The same results as records for compare.sh's one table (benches/compare_table.py).
if records:
    def rec(point, metric, field, goals=None, goal=None, only=None, digits=None, lower=False, note=""):
        systems = only or ["geerpc"] + peers
        n = point.split()[0]
        vals = {s: med(s, n, field) for s in systems}
        r = {"section": "scale", "point": point, "metric": metric, "lower_better": lower,
             "geerpc": vals.pop("geerpc", None), "peers": vals, "goals": goals or {}, "goal": goal,
             "n": "/".join(str(len(lines(s, n))) for s in systems),
             "errors": sum(l.get("errors", 0) for s in systems for l in lines(s, n)), "note": note}
        if digits is not None:
            r["digits"] = digits
        return r
    ratio_goals = {p: [">=", goals[p]] for p in peers if goals[p] is not None}
    with open(records, "a") as f:
        for n in points:
            f.write(json.dumps(rec(f"{n} x {n}", "calls/s", "calls_per_sec", ratio_goals)) + "\n")
        for n in points:
            f.write(json.dumps(rec(f"{n} x {n}", "p99 us", "p99_us", lower=True, note="for reference")) + "\n")
        f.write(json.dumps(rec(f"{top} x {top}", "server RSS KiB/conn", "server_rss_kib_per_conn", only=["geerpc"],
                               goal=["<=", 64], digits=1, note="(RSS in the run - RSS before) / conns held")) + "\n")
        f.write(json.dumps(rec(f"{top} x {top}", "server threads", "server_threads", digits=0)) + "\n")
        f.write(json.dumps(rec(f"{top} x {top}", "server RSS KiB", "server_rss_kib")) + "\n")
        for n in points:
            f.write(json.dumps(rec(f"{n} x {n}", "CPU us/call (server + load)", "cpu_us_per_call", digits=1,
                                   lower=True, note="user + system, both processes")) + "\n")
        f.write(json.dumps(rec(f"{top} x {top}", "server ctx switches/call", "server_switches_per_call", digits=2,
                               lower=True)) + "\n")
        warn = [f"{s} {n}x{n}: server held {l['server_conns']} of {n} conns" for n in points
                for s in ["geerpc"] + peers for l in lines(s, n) if l.get("server_conns", int(n)) < int(n)]
        if warn:
            f.write(json.dumps({"section": "scale", "warning": "; ".join(warn)}) + "\n")
PY
