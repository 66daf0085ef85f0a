#!/usr/bin/env python3
"""Measures the registry's HTTP bounds (issue 16) against a running registry.

    geerpc registry --addr 127.0.0.1:PORT &        # the registry to attack
    python3 scripts/registry_bounds.py PORT PID [header|loris|watchers]

header:   one 35 MiB header line, sent and held open; prints how much the
          registry's RSS grew and what it answered.
loris:    300 connections that send half a request line and then nothing;
          prints how many the registry closed within 11 s.
watchers: 1,000 long polls at once, then one change; prints how many were
          not answered within 10 s, in each of four runs.
Loopback only; every loop is bounded in count and time.
"""

import json
import select
import socket
import sys
import time
import urllib.request

PORT, PID = int(sys.argv[1]), int(sys.argv[2])
WHAT = sys.argv[3:] or ["header", "loris", "watchers"]
URL = f"http://127.0.0.1:{PORT}/_rpc_/registry"


def rss_kib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def version():
    with urllib.request.urlopen(URL, timeout=10) as r:
        return int(r.headers["X-Geerpc-Version"])


def register(addr):
    rq = urllib.request.Request(URL, method="POST", data=b"{}",
                                headers={"X-rpc-Server": addr})
    with urllib.request.urlopen(rq, timeout=10) as r:
        return r.status


def header():
    before = rss_kib()
    s = socket.create_connection(("127.0.0.1", PORT))
    s.sendall(b"GET /_rpc_/registry HTTP/1.1\r\nX-Big: ")
    chunk, sent = b"a" * (1 << 20), 0
    try:
        for _ in range(35):
            s.sendall(chunk)
            sent += 1
    except OSError as e:
        print(f"header: send stopped after {sent} MiB: {e}")
    time.sleep(1)  # let the registry read what it will
    grown = rss_kib() - before
    s.settimeout(2)
    try:
        answer = s.recv(200)
    except OSError as e:
        answer = repr(e).encode()
    print(f"header: sent {sent} MiB of one header line; registry RSS grew by "
          f"{grown / 1024:.1f} MiB; answer {answer[:40]!r}")
    s.close()


def loris():
    conns = []
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", PORT))
        s.sendall(b"GET /_rpc_/registry HT")
        conns.append(s)
    start = time.time()
    time.sleep(11)
    closed = 0
    for s in conns:
        p = select.poll()
        p.register(s, select.POLLIN)
        if p.poll(0):
            try:
                data = s.recv(4096)
                closed += data == b"" or data.startswith(b"HTTP/1.1 408")
            except ConnectionResetError:
                closed += 1
        s.close()
    print(f"loris: {closed} of 300 slow-loris connections closed after "
          f"{time.time() - start:.1f} s")


def watchers(runs=4, n=1000):
    for run in range(runs):
        v = version()
        polls = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
            s.sendall(f"GET /_rpc_/registry?watch={v}&timeout=60s HTTP/1.1\r\n"
                      f"Host: r\r\n\r\n".encode())
            polls.append(s)
        time.sleep(2)  # as the run: let them park
        register(f"tcp@127.0.0.1:{30000 + run}")
        deadline = time.time() + 10
        poller = select.poll()
        for s in polls:
            poller.register(s, select.POLLIN)
        waiting = {s.fileno() for s in polls}
        while waiting and time.time() < deadline:
            for fd, _ in poller.poll(200):
                waiting.discard(fd)
                poller.unregister(fd)
        print(f"watchers: run {run + 1}: {len(waiting)} of {n} long polls "
              f"not answered 10 s after the change")
        for s in polls:
            s.close()


for w in WHAT:
    {"header": header, "loris": loris, "watchers": watchers}[w]()
