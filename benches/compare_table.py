#!/usr/bin/env python3
"""The one table of benches/compare.sh: results as JSON records, one a line,
and the table printed from them (for the console, then as markdown for the
README's "Performance" section).

    compare_table.py point --section S --point LABEL --metric UNIT --field F
                     --geerpc FILE [--peer NAME=FILE[:GOAL]]... [--goal GOAL]
                     [--lower-better] [--digits D] [--note TEXT]
        medians of field F over the JSON lines of each FILE (a loadgen-CLI
        line each, or any line with that field); prints one record.
        GOAL is OP THRESHOLD, e.g. ">=1.25": with a peer, on geerpc / peer;
        with --goal, on geerpc's own value.
    compare_table.py registry-scale FILE
        the records of `registry_scale --json`'s line (the last line of
        FILE that starts with "{").
    compare_table.py print RECORDS --command CMD [--settings TEXT]

A record: {"section", "point", "metric", "lower_better", "geerpc": value,
"peers": {name: value}, "goals": {name: [op, ratio]}, "goal": [op, value]
or null, "n", "errors", "note", "digits"?}; or {"section", "warning"}.
Values are medians; null means no data (the verdict then says so). The
scripts that make records: compare.sh (through `point` and
`registry-scale`) and benches/scale.sh (RECORDS=FILE).
"""

import argparse
import json
import statistics
import sys

# Columns of the table; any other peer (e.g. "2 direct conns") shows in the
# ratios column with its value.
PEERS = ["rawtcp", "tarpc", "tonic"]
OPS = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b}


def parse_goal(text):
    text = text.strip()
    if not text or text == "-":
        return None
    op, thr = text[:2], text[2:]
    if op not in OPS:
        sys.exit(f"compare_table: bad goal {text!r} (want >=X or <=X)")
    return [op, float(thr.rstrip("x"))]


def lines(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def median(ls, field):
    vals = [l[field] for l in ls if isinstance(l.get(field), (int, float))]
    return statistics.median(vals) if vals else None


def cmd_point(a):
    g = lines(a.geerpc)
    rec = {"section": a.section, "point": a.point, "metric": a.metric,
           "lower_better": a.lower_better, "geerpc": median(g, a.field),
           "peers": {}, "goals": {}, "goal": parse_goal(a.goal or ""),
           "note": a.note or ""}
    counts, errors = [str(len(g))], sum(l.get("errors", 0) or 0 for l in g)
    for spec in a.peer:
        name, _, rest = spec.partition("=")
        # FILE[:GOAL]; a goal starts with > or <, a path need not be split
        path, goal = rest, ""
        for op in OPS:
            i = rest.rfind(":" + op)
            if i >= 0:
                path, goal = rest[:i], rest[i + 1:]
        p = lines(path)
        rec["peers"][name] = median(p, a.field)
        counts.append(str(len(p)))
        errors += sum(l.get("errors", 0) or 0 for l in p)
        if parse_goal(goal):
            rec["goals"][name] = parse_goal(goal)
    rec["n"] = "/".join(counts)
    rec["errors"] = errors
    if a.digits is not None:
        rec["digits"] = a.digits
    print(json.dumps(rec))


def cmd_registry_scale(a):
    """Reads registry_scale --json's fields: instances, services, watchers,
    propagation_ms.{p50,p99,max,n}, missed, registry.<stage>.{hwm_kib,
    threads} (stages idle, registered, parked, under_wrk, end),
    wrk_get.{rps,p99_ms,errors}, wrk_post.{rps,p99_ms,errors}."""
    ls = lines(a.file)
    j = ls[-1] if ls else {}
    where = "registry at scale"
    if j:
        where += f" ({j.get('instances', 0):,} inst, {j.get('services', 0)} svc, {j.get('watchers', 0):,} watchers)"

    def rec(metric, value, goal, note="", digits=None, errors=0, lower=False):
        r = {"section": "registry-scale", "point": where, "metric": metric,
             "lower_better": lower, "geerpc": value, "peers": {}, "goals": {},
             "goal": goal, "n": "1" if j else "0", "errors": errors, "note": note}
        if digits is not None:
            r["digits"] = digits
        print(json.dumps(r))

    prop = j.get("propagation_ms") or {}
    p99 = prop.get("p99")
    rec("propagation p99 ms", p99 if isinstance(p99, (int, float)) else None, ["<=", 100],
        f"p50 {prop.get('p50', float('nan')):.1f}, max {prop.get('max', float('nan')):.1f}, "
        f"n {prop.get('n', 0)}; POST answer -> watcher answer", lower=True)
    missed = j.get("missed")
    rec("watcher answers missed", missed, ["<=", 0], "not seen within the wait", digits=0, lower=True)
    reg = j.get("registry") or {}
    stages = [(k, reg[k]) for k in ("idle", "registered", "parked", "under_wrk", "end") if reg.get(k)]
    hwm = max((s.get("hwm_kib", 0) for _, s in stages), default=None)
    threads = ", ".join(f"{k} {s.get('threads')}" for k, s in stages)
    rec("peak RSS MiB", hwm / 1024 if hwm is not None else None, ["<=", 256],
        f"VmHWM; threads: {threads}" if threads else "VmHWM", lower=True)
    for key, what in (("wrk_get", "GET one service req/s"), ("wrk_post", "heartbeat POST req/s")):
        w = j.get(key) or {}
        rec(what, w.get("rps"), [">=", 60000],
            f"wrk -t2 -c32 while the watchers wait; p99 {w['p99_ms']:.2f} ms"
            if w.get("p99_ms") is not None else "no wrk run",
            digits=0, errors=w.get("errors", 0) or 0)


def fmt(v, digits):
    """v with thousands separators; digits None: none for rates and from
    100 up, one below."""
    if v is None:
        return "-"
    if digits is None:
        digits = 0 if abs(v) >= 100 else 1
    return f"{v:,.{digits}f}"


def digits_of(r):
    if "digits" in r:
        return r["digits"]
    return 0 if r["metric"].endswith("/s") else None


def judge(r):
    """(ratios text, goals text, verdict) of one record."""
    g, ratios, goals, misses, nodata = r["geerpc"], [], [], [], False
    for name, v in r["peers"].items():
        ratio = g / v if g is not None and v else None
        shown = name if name in PEERS else f"{name} {fmt(v, digits_of(r))}"
        goal = r["goals"].get(name)
        if ratio is not None or goal:
            ratios.append(f"{shown} {ratio:.2f}x" if ratio is not None else f"{shown} -")
        if goal:
            goals.append(f"{name} {goal[0]}{goal[1]:g}x")
            if ratio is None:
                nodata = True
            elif not OPS[goal[0]](ratio, goal[1]):
                misses.append(name)
    if r.get("goal"):
        op, thr = r["goal"]
        goals.append(f"{op}{thr:,g}")
        if g is None:
            nodata = True
        elif not OPS[op](g, thr):
            misses.append("value")
    verdict = "-"
    if goals:
        verdict = ("NOT MET" + (f" ({', '.join(m for m in misses if m != 'value')})"
                                if any(m != "value" for m in misses) else "")
                   if misses else ("no data" if nodata else "met"))
    if r.get("errors"):
        verdict = (verdict if verdict != "met" else "NOT MET") + f", {r['errors']} errors"
    return "  ".join(ratios) or "-", ", ".join(goals) or "-", verdict


def cmd_print(a):
    recs, warnings = [], []
    for r in lines(a.records):
        (warnings.append(f"{r['section']}: {r['warning']}") if "warning" in r else recs.append(r))
    rows = []
    for r in recs:
        d = digits_of(r)
        ratios, goals, verdict = judge(r)
        point = f"{r['point']}: {r['metric']}"
        rows.append([point, fmt(r["geerpc"], d)] + [fmt(r["peers"].get(p), d) if p in r["peers"] else ""
                                                    for p in PEERS]
                    + [ratios, goals, verdict, r.get("note", "")])
    head = ["point", "geerpc"] + PEERS + ["ratios (geerpc / peer)", "goal", "verdict", "note"]
    w = [max(len(x[i]) for x in rows + [head]) for i in range(len(head) - 1)]
    right = {1, 2, 3, 4}

    def line(cells):
        return "  ".join(c.rjust(w[i]) if i in right else c.ljust(w[i])
                         for i, c in enumerate(cells[:-1])) + "  " + cells[-1]
    print(line(head).rstrip())
    for x in rows:
        print(line(x).rstrip())
    for wn in warnings:
        print("WARNING: " + wn)
    met = sum(1 for x in rows if x[7] == "met")
    judged = sum(1 for x in rows if x[7] != "-")
    print(f"goals met: {met} of {judged}; ratios are geerpc / peer (for us and ms rows lower is better)")
    # markdown, ready to paste
    print()
    print("Command (from the checkout's root):")
    print()
    print(f"    {a.command}")
    if a.settings:
        print()
        print(a.settings)
    print()
    print("| point | geerpc | rawtcp | tarpc | tonic | ratios | goal |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for x in rows:
        cells = [x[0], x[1]] + [c or "–" for c in x[2:5]]
        cells = [c if c != "-" else "–" for c in cells]
        goal = "–" if x[6] == "-" else f"{x[6]}: {x[7]}"
        ratios = x[5].replace("  ", ", ") if x[5] != "-" else "–"
        print("| " + " | ".join(cells + [ratios, goal]).replace("<=", "≤").replace(">=", "≥") + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("point")
    p.add_argument("--section", required=True)
    p.add_argument("--point", required=True)
    p.add_argument("--metric", required=True)
    p.add_argument("--field", required=True)
    p.add_argument("--geerpc", required=True)
    p.add_argument("--peer", action="append", default=[])
    p.add_argument("--goal")
    p.add_argument("--lower-better", action="store_true")
    p.add_argument("--digits", type=int)
    p.add_argument("--note")
    p = sub.add_parser("registry-scale")
    p.add_argument("file")
    p = sub.add_parser("print")
    p.add_argument("records")
    p.add_argument("--command", required=True)
    p.add_argument("--settings")
    a = ap.parse_args()
    {"point": cmd_point, "registry-scale": cmd_registry_scale, "print": cmd_print}[a.cmd](a)


if __name__ == "__main__":
    main()
