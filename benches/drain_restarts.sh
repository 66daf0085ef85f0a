#!/bin/bash
# Zero-loss drain, end to end (issue 16): three `loadgen serve` behind a
# `geerpc registry`, each restarted with SIGTERM in turn, ROUNDS times,
# under a failfast `loadgen load` of 16 callers. Prints the load's JSON
# line ("errors" counts lost calls) and the load's warnings.
#
#   cargo build --all-features --example loadgen --bin geerpc
#   benches/drain_restarts.sh target/debug 3
T=$1; ROUNDS=${2:-2}
W=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null; }
trap cleanup EXIT
$T/geerpc registry --addr 127.0.0.1:0 > $W/reg.url 2>$W/reg.log &
for i in $(seq 100); do [ -s $W/reg.url ] && break; sleep 0.1; done
URL=$(head -1 $W/reg.url)
n=0
start() { n=$((n+1)); $T/examples/loadgen serve --addr 127.0.0.1:0 --registry $URL > $W/s$n.out 2>$W/s$n.log & PID=$!
  for i in $(seq 200); do grep -qs ready $W/s$n.out && break; sleep 0.05; done; }
pids=()
for k in 0 1 2; do start; pids[$k]=$PID; done
SECS=$((ROUNDS*3*2+6))
$T/examples/loadgen load --registry $URL --fail failfast --concurrency 16 --secs $SECS > $W/load.json 2>$W/load.log &
LOAD=$!
sleep 3
for r in $(seq $ROUNDS); do for k in 0 1 2; do
  sleep 1.5
  kill -TERM ${pids[$k]}; wait ${pids[$k]}
  start; pids[$k]=$PID
done; done
wait $LOAD
cat $W/load.json
grep -c . $W/load.log | sed 's/^/load log lines: /'
grep -v '^$' $W/load.log | sort | uniq -c | sort -rn | head -5
