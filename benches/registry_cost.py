#!/usr/bin/env python3
"""The registry's cost per request in instructions (callgrind), not time:
deterministic, so a before/after holds on a loaded machine (issue 23).

Starts `geerpc registry` under `valgrind --tool=callgrind` with
collection off, registers INSTANCES instances across SERVICES services
(keep-alive POSTs with geerpc's JSON body), then for each phase turns
collection on, sends N requests on one keep-alive connection, turns it
off, and reads the instruction count the registry's threads executed
(`callgrind_control`), divided by N:

  get       GET ?service=svc0 (100 instances at the defaults), plain answer
  get_json  the same with format=json
  post      heartbeat renewals (a POST that changes nothing)
  change    WATCHERS long polls parked on svc0's list (JSON), one change
            (a POST), the answers read: instructions per watcher answered

  python3 benches/registry_cost.py [--geerpc target/release/geerpc]
      [--instances 10000] [--services 100] [--n 2000] [--watchers 100]
      [--workers N]   (N > 0: requests queued for N workers, the old way)

Needs valgrind. Prints one JSON line. Not part of CI.
"""
import argparse, glob, json, os, re, socket, subprocess, sys, tempfile, time


def request(sock, method, target, headers=(), body=b""):
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    for h in headers:
        head += h + "\r\n"
    sock.sendall(head.encode() + b"\r\n" + body)


def read_answer(f):
    status = f.readline()
    if not status:
        raise RuntimeError("connection closed")
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
    body = f.read(length) if length else b""
    return int(status.split()[1]), body


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, s.makefile("rb")


def post(s, f, addr, service, weight=1):
    body = json.dumps({"services": [service], "weight": weight}).encode()
    request(s, "POST", "/_rpc_/registry", [f"X-rpc-Server: {addr}"], body)
    status, _ = read_answer(f)
    assert status == 200, status


def instructions(pid, out):
    """The total Ir of the registry's last dump."""
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    total = 0
    files = [p for p in glob.glob(out + "*") if not p.endswith(".done")]
    newest = max(files, key=os.path.getmtime)
    with open(newest) as fh:
        for line in fh:
            m = re.match(r"(?:summary|totals): (\d+)", line)
            if m:
                total = int(m.group(1))
    open(newest + ".done", "w").close()
    os.rename(newest, newest + ".read")
    return total


def phase(pid, out, fn, n):
    subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fn()
    subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return round(instructions(pid, out) / n)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--geerpc", default="target/release/geerpc")
    ap.add_argument("--instances", type=int, default=10000)
    ap.add_argument("--services", type=int, default=100)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--watchers", type=int, default=100)
    ap.add_argument("--workers", type=int, default=None,
                    help="the registry's --workers (default: its own, 0)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="registry_cost.")
    out = os.path.join(tmp, "cg.out")
    reg = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no",
         f"--callgrind-out-file={out}.%p", a.geerpc, "registry",
         "--addr", "127.0.0.1:0", "--ttl", "5m"]
        + ([] if a.workers is None else ["--workers", str(a.workers)]),
        stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "log"), "w"))
    try:
        url = reg.stdout.readline().decode().strip()
        port = int(re.search(r":(\d+)/", url).group(1))
        pid = reg.pid
        s, f = connect(port)
        t0 = time.time()
        for i in range(a.instances):
            post(s, f, f"tcp@127.0.0.1:{10000 + i}", f"svc{i % a.services}")
        sys.stderr.write(f"registered {a.instances} in {time.time() - t0:.1f}s\n")
        res = {"instances": a.instances, "services": a.services, "n": a.n}

        def gets(q):
            def run():
                for _ in range(a.n):
                    request(s, "GET", "/_rpc_/registry?" + q)
                    status, _ = read_answer(f)
                    assert status == 200
            return run
        res["get_ir"] = phase(pid, out, gets("service=svc0"), a.n)
        res["get_json_ir"] = phase(pid, out, gets("service=svc0&format=json"), a.n)

        def beats():
            for _ in range(a.n):
                post(s, f, "tcp@127.0.0.1:10000", "svc0")
        res["post_ir"] = phase(pid, out, beats, a.n)
        sys.stderr.write(json.dumps(res) + "\n")

        # Long polls on svc0's list, parked; then one change.
        request(s, "GET", "/_rpc_/registry?service=svc0&format=json")
        version = json.loads(read_answer(f)[1])["version"]
        ws = [connect(port) for _ in range(a.watchers)]
        for ws_, _ in ws:
            request(ws_, "GET", f"/_rpc_/registry?service=svc0&format=json&watch={version}&timeout=300s")
        time.sleep(3)

        def change():
            # A change within the instance cap: svc0's first instance's weight.
            post(s, f, "tcp@127.0.0.1:10000", "svc0", weight=2)
            for _, wf in ws:
                status, _ = read_answer(wf)
                assert status == 200
        res["change_ir_per_watcher"] = phase(pid, out, change, a.watchers)
        res["watchers"] = a.watchers
        print(json.dumps(res))
    finally:
        reg.terminate()
        reg.wait(timeout=60)


if __name__ == "__main__":
    main()
