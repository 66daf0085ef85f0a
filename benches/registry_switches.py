#!/usr/bin/env python3
"""The registry's context switches per request under `wrk` (issue 23):
a count, not a time, so a before/after holds on a loaded machine better
than the rate does (the rate is printed too, with the load average).

Starts `geerpc registry` (the CLI; `--workers N` passed through, so the
old queue-to-workers way, N > 0, can be compared with the default, 0:
answered on the connection's thread), registers INSTANCES instances of
service svc0, parks WATCHERS long polls on it, then for GET of svc0's
list and for heartbeat POSTs (benches/registry_post.lua) runs
`wrk -t2 -cCONNS -dSECS` and reads the voluntary and involuntary context
switches of all the registry's threads (/proc/PID/task/*/status) before
and after, divided by the requests wrk counted.

  python3 benches/registry_switches.py [--geerpc target/release/geerpc]
      [--workers N] [--instances 100] [--watchers 1000] [--conns 32] [--secs 5]

Needs wrk. Prints one JSON line. Not part of CI.
"""
import argparse, glob, json, os, re, socket, subprocess


def switches(pid):
    total = 0
    for st in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            for line in open(st):
                if "ctxt_switches" in line:
                    total += int(line.split()[1])
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def post(s, f, addr):
    body = b'{"services":["svc0"]}'
    head = (f"POST /_rpc_/registry HTTP/1.1\r\nHost: x\r\nX-rpc-Server: {addr}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    s.sendall(head.encode() + body)
    status = f.readline()
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.lower() == "content-length":
            length = int(v)
    f.read(length)
    assert b" 200 " in status, status


def wrk(url, secs, conns, lua=None, env=None):
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{secs}s"] + (["-s", lua] if lua else []) + [url]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=secs + 60).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return n, rate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--geerpc", default="target/release/geerpc")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--secs", type=int, default=5)
    a = ap.parse_args()
    cmd = [a.geerpc, "registry", "--addr", "127.0.0.1:0", "--ttl", "5m"]
    if a.workers is not None:
        cmd += ["--workers", str(a.workers)]
    reg = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    watchers = []
    try:
        url = reg.stdout.readline().decode().strip()
        port = int(re.search(r":(\d+)/", url).group(1))
        s = socket.create_connection(("127.0.0.1", port))
        f = s.makefile("rb")
        for i in range(a.instances):
            post(s, f, f"tcp@127.0.0.1:{10000 + i}")
        # Long polls on svc0's list as it is (version from a GET).
        s.sendall(b"GET /_rpc_/registry?service=svc0 HTTP/1.1\r\nHost: x\r\n\r\n")
        version = None
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            if k.lower() == "x-geerpc-version":
                version = int(v)
        for _ in range(a.watchers):
            w = socket.create_connection(("127.0.0.1", port))
            w.sendall(f"GET /_rpc_/registry?service=svc0&watch={version}&timeout=600s "
                      "HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            watchers.append(w)
        base = f"http://127.0.0.1:{port}/_rpc_/registry"
        env = dict(os.environ, GEERPC_SCALE_ADDR="tcp@127.0.0.1:10000",
                   GEERPC_SCALE_BODY='{"services":["svc0"]}')
        lua = os.path.join(os.path.dirname(os.path.abspath(__file__)), "registry_post.lua")
        res = {"workers": a.workers, "instances": a.instances, "watchers": a.watchers,
               "conns": a.conns, "secs": a.secs}
        for name, target, script in [("get", base + "?service=svc0", None), ("post", base, lua)]:
            before = switches(reg.pid)
            n, rate = wrk(target, a.secs, a.conns, script, env)
            res[f"{name}_rate"] = round(rate)
            res[f"{name}_switches_per_req"] = round((switches(reg.pid) - before) / max(n, 1), 3)
        res["load"] = open("/proc/loadavg").read().split()[:3]
        print(json.dumps(res))
    finally:
        for w in watchers:
            w.close()
        reg.kill()
        reg.wait()


if __name__ == "__main__":
    main()
