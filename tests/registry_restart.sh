#!/bin/bash
# The figure for issue 16 "a registry restart costs nothing": a registry
# (default 5 min TTL) and two `loadgen serve` heartbeating to it; kill -9 the
# registry, restart it on the same port after DOWN_SECS, and time until
# `geerpc list` shows both servers again (gives up after 30 s).
# BINDIR holds `geerpc` and `loadgen`, e.g. after
#   cargo build --features cli --bin geerpc --example loadgen
# run: tests/registry_restart.sh target/debug 0
set -u
BIN=$1; DOWN=${2:-0}
free() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
PORT=$(free); P1=$(free); P2=$(free)
URL=http://127.0.0.1:$PORT/_rpc_/registry
LOG=$(mktemp -d)
$BIN/geerpc registry --addr 127.0.0.1:$PORT >/dev/null 2>$LOG/reg1 & REG=$!
sleep 0.3
$BIN/loadgen serve --addr 127.0.0.1:$P1 --registry $URL >/dev/null 2>$LOG/s1 & S1=$!
$BIN/loadgen serve --addr 127.0.0.1:$P2 --registry $URL >/dev/null 2>$LOG/s2 & S2=$!
count() { $BIN/geerpc list --registry $URL 2>/dev/null | grep -c tcp@; }
for i in $(seq 100); do [ "$(count)" = 2 ] && break; sleep 0.1; done
echo "before kill: $(count) listed"
kill -9 $REG; wait $REG 2>/dev/null
sleep $DOWN
$BIN/geerpc registry --addr 127.0.0.1:$PORT >/dev/null 2>$LOG/reg2 & REG=$!
T0=$(date +%s.%N)
n=0; at2=""
while :; do
  n=$(count); now=$(date +%s.%N); el=$(echo "$now - $T0" | bc)
  if [ -z "$at2" ] && (( $(echo "$el >= 2" | bc) )); then at2=$n; echo "2 s after restart: $n of 2 listed"; fi
  if [ "$n" = 2 ]; then echo "both listed $(printf %.2f $el) s after restart"; break; fi
  if (( $(echo "$el >= 30" | bc) )); then echo "30 s after restart: $n of 2 listed"; break; fi
  sleep 0.05
done
kill $S1 $S2 $REG 2>/dev/null; wait 2>/dev/null
