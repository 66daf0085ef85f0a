#!/usr/bin/env bash
# The registry at scale (issue 23): `examples/registry_scale.rs` against a
# `geerpc registry` it starts: INSTANCES instances across SERVICES
# services heartbeating at their normal rate (a third of the TTL), WATCHERS
# long polls (WATCHERS / SERVICES per service); while they wait, `wrk
# -t2 -c32` GETs one service's list and then POSTs heartbeats
# (benches/registry_post.lua), WRK_SECS each; then CHANGES changes, each
# seen by every watcher, and the time from each change's POST answer to
# each watcher's answer. Prints one table against the issue's goals
# (propagation p99 <= 100 ms, registry RSS <= 256 MiB, GET and POST
# >= 60k/s under wrk). Not part of CI: timings are not tests.
#
#   benches/registry_scale.sh                     # 10,000 / 100 / 1,000, wrk 5 s each (~1 min)
#   SMOKE=1 benches/registry_scale.sh             # 500 instances / 50 watchers, wrk 2 s
#   CHANGES=100 SCOPE=service benches/registry_scale.sh
#   ARGS="--json" benches/registry_scale.sh       # one JSON line instead of the table
#
# Environment: INSTANCES (10000), SERVICES (100), WATCHERS (1000),
# CHANGES (40), SCOPE (all | service), TTL (5m: the registry's, and so the
# heartbeat rate), WRK_SECS (5; 0 skips wrk), NO_BUILD (1: use the
# binaries already built), ARGS (more flags for the driver, see its
# header). wrk: `apt-get install wrk` (without it the wrk rows are left out).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SMOKE:-0}" = 1 ]; then
    : "${INSTANCES:=500}" "${SERVICES:=50}" "${WATCHERS:=50}" "${CHANGES:=10}" "${WRK_SECS:=2}"
fi
INSTANCES=${INSTANCES:-10000}
SERVICES=${SERVICES:-100}
WATCHERS=${WATCHERS:-1000}
CHANGES=${CHANGES:-40}
SCOPE=${SCOPE:-all}
TTL=${TTL:-5m}
WRK_SECS=${WRK_SECS:-5}
if ! command -v wrk >/dev/null; then
    echo "registry_scale.sh: no wrk on PATH (apt-get install wrk): the wrk rows are left out" >&2
    WRK_SECS=0
fi
# A descriptor per watcher on both sides; the driver raises its own soft
# limit to the hard one, and the registry it starts inherits it.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "${NO_BUILD:-0}" != 1 ]; then
    echo "building geerpc (cli) and the driver..." >&2
    cargo build --release --quiet --features cli --bin geerpc --example registry_scale
fi
# shellcheck disable=SC2086
exec target/release/examples/registry_scale --geerpc target/release/geerpc --ttl "$TTL" \
    --instances "$INSTANCES" --services "$SERVICES" --watchers "$WATCHERS" \
    --changes "$CHANGES" --scope "$SCOPE" --wrk-secs "$WRK_SECS" \
    --lua benches/registry_post.lua ${ARGS:-}
