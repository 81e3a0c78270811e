#!/usr/bin/env python3
"""Helper for bench/frontend/run (python3 stdlib only).

Subcommands:
  gen DIR N1K N64K              write DIR/1k/0..N1K-1 (1 KiB) and DIR/64k/0..N64K-1 (64 KiB)
  probe PORT URL SECONDS        GET URL through the proxy on 127.0.0.1:PORT until it answers 200
  warm PORT ORIGIN SETS...      fetch every object once through the proxy (SETS: prefix:count:size)
  verify PORT ORIGIN STEP SETS...  fetch every STEP-th object again; report parent-cache hits
  cpu PID                       print "UTIME STIME" clock ticks of PID and all its descendants
  conns FILE PORT...            first call: save connections to PORTS; second: print how many are new
  rates SPEC SIZES check        validate a --rate SPEC; print "absolute" or "needs-max"
  rates SPEC SIZES RESULTS FES  print "SIZE RATE WHY" per size: the fixed-rate phase's offered load
  report RESULTS OUT.md META... aggregate the runs (medians) into markdown tables
"""

import http.client
import json
import math
import os
import re
import statistics
import sys
import time


def gen(root, n1k, n64k):
    for prefix, count, size in (("1k", int(n1k), 1024), ("64k", int(n64k), 65536)):
        d = os.path.join(root, prefix)
        os.makedirs(d, exist_ok=True)
        for n in range(count):
            with open(os.path.join(d, str(n)), "wb") as f:
                f.write(os.urandom(size))


def _conn(port):
    return http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)


def probe(port, url, seconds):
    deadline = time.monotonic() + float(seconds)
    why = "never tried"
    tries = 0
    while True:
        tries += 1
        try:
            c = _conn(port)
            c.request("GET", url)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                print("probe ok after %d tries" % tries)
                return 0
            why = "HTTP %d %s" % (r.status, r.reason)
        except (OSError, http.client.HTTPException) as e:
            why = "%s: %s" % (type(e).__name__, e)
        if time.monotonic() >= deadline:
            print("no 200 within %ss (%d tries), last: %s" % (seconds, tries, why))
            return 1
        time.sleep(0.5)


def _parse_sets(sets):
    out = []
    for s in sets:
        prefix, count, size = s.split(":")
        out.append((prefix, int(count), int(size)))
    return out


def _fetch_all(port, origin, sets, step):
    """Fetches objects over one keep-alive connection (reconnecting when needed).
    Returns (ok, bad list, parent_hits, connections)."""
    conn = None
    conns = 0
    ok = 0
    hits = 0
    bad = []
    for prefix, count, size in sets:
        for n in range(0, count, step):
            url = "http://%s/%s/%d" % (origin, prefix, n)
            for attempt in (1, 2):
                if conn is None:
                    conn = _conn(port)
                    conns += 1
                try:
                    conn.request("GET", url)
                    r = conn.getresponse()
                    body = r.read()
                    xcache = r.headers.get_all("X-Cache") or []
                    if r.will_close:
                        conn.close()
                        conn = None
                    break
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    conn = None
                    if attempt == 2:
                        bad.append("%s: %s" % (url, e))
                        r = None
            if r is None:
                continue
            if r.status != 200 or len(body) != size:
                bad.append("%s: HTTP %d, %d bytes" % (url, r.status, len(body)))
                continue
            ok += 1
            # The parents are Squids named carpbench-p*: their X-Cache header
            # survives every frontend (Squid adds its own next to it).
            if any(v.startswith("HIT from carpbench-p") for v in xcache):
                hits += 1
    if conn is not None:
        conn.close()
    return ok, bad, hits, conns


def warm(port, origin, *sets):
    t = time.monotonic()
    ok, bad, hits, conns = _fetch_all(port, origin, _parse_sets(sets), 1)
    print("%d ok, %d bad, %d already parent hits, %d connection(s), %.1f s"
          % (ok, len(bad), hits, conns, time.monotonic() - t))
    for b in bad[:5]:
        print("  bad: " + b)
    return 1 if bad else 0


def verify(port, origin, step, *sets):
    ok, bad, hits, conns = _fetch_all(port, origin, _parse_sets(sets), int(step))
    total = ok + len(bad)
    print("%d/%d parent hits (%d bad, %d connection(s))" % (hits, total, len(bad), conns))
    for b in bad[:5]:
        print("  bad: " + b)
    return 0 if (not bad and hits == total) else 1


def _stat(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): ppid = field 4, utime = 14, stime = 15
    return int(fields[1]), int(fields[11]), int(fields[12])


def cpu(pid):
    pid = int(pid)
    children = {}
    stats = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid, ut, st = _stat(int(d))
        except (OSError, ValueError):
            continue
        stats[int(d)] = (ut, st)
        children.setdefault(ppid, []).append(int(d))
    if pid not in stats:
        print("gone")
        return 1
    ut = st = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        ut += stats[p][0]
        st += stats[p][1]
        todo.extend(children.get(p, []))
    print("%d %d" % (ut, st))
    return 0


_TCP_CLOSED_LISTEN = ("07", "0A")  # /proc/net/tcp states not counted: CLOSE, LISTEN


def _conn_keys(ports):
    """Connections (either end on one of PORTS) as {frozenset of the two endpoints}.
    Loopback connections show up twice (one socket per end); the key merges them.
    TIME_WAIT entries keep a closed connection visible for 60 s."""
    keys = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote, st = parts[1], parts[2], parts[3]
            if st in _TCP_CLOSED_LISTEN:
                continue
            if int(local.split(":")[1], 16) in ports or int(remote.split(":")[1], 16) in ports:
                keys.add(frozenset((local, remote)))
    return keys


def conns(state, *ports):
    """conns FILE PORT...: with no FILE yet, saves the connections to PORTS in it;
    with FILE, prints how many connections to PORTS are new since then."""
    ports = {int(p) for p in ports}
    now = _conn_keys(ports)
    if not os.path.exists(state):
        with open(state, "w") as f:
            json.dump([sorted(k) for k in now], f)
        return 0
    with open(state) as f:
        before = {frozenset(k) for k in json.load(f)}
    os.unlink(state)
    print(len(now - before))
    return 0


# ---------------------------------------------------------------- rates

_RATE_ITEM = re.compile(r"^(?:([0-9a-z]+)=)?([0-9]+(?:\.[0-9]+)?)(%?)$")


def _parse_rate_spec(spec, sizes):
    """SPEC: comma-separated items [SIZE=]VALUE; VALUE is N (req/s) or F% (of the
    slowest frontend's median req/s at maximum rate). An item without SIZE is the
    default for every size. Returns {size: (number, is_percent)} or raises ValueError."""
    default = None
    per_size = {}
    for item in spec.split(","):
        m = _RATE_ITEM.match(item.strip())
        if not m:
            raise ValueError("--rate: cannot read %r (want N, F%%, or SIZE=N / SIZE=F%%, comma-separated)" % item)
        size, value, pct = m.group(1), float(m.group(2)), m.group(3) == "%"
        if value <= 0 or (pct and value > 100):
            raise ValueError("--rate: %r is out of range (N > 0, 0 < F%% <= 100)" % item)
        if size is None:
            default = (value, pct)
        elif size in sizes:
            per_size[size] = (value, pct)
        else:
            raise ValueError("--rate: unknown size %r in %r (sizes: %s)" % (size, item, ", ".join(sizes)))
    out = {}
    for size in sizes:
        v = per_size.get(size, default)
        if v is None:
            raise ValueError("--rate: no rate for size %s" % size)
        out[size] = v
    return out


def _two_digits(x):
    """x rounded to two significant digits (2,595 -> 2,600; 801 -> 800)."""
    if x <= 0:
        return 0
    step = 10 ** max(0, int(math.floor(math.log10(x))) - 1)
    return int(round(x / step) * step)


def rates(spec, sizes, results, frontends=""):
    sizes = [x for x in sizes.split(",") if x]
    try:
        parsed = _parse_rate_spec(spec, sizes)
    except ValueError as e:
        sys.stderr.write("%s\n" % e)
        return 64
    if results == "check":
        print("needs-max" if any(pct for _, pct in parsed.values()) else "absolute")
        return 0
    runs = []
    if results != "-" and os.path.exists(results):
        with open(results) as f:
            runs = [json.loads(line) for line in f if line.strip()]
    fes = [x for x in frontends.split(",") if x]
    rc = 0
    for size in sizes:
        value, pct = parsed[size]
        if not pct:
            print("%s %d set by --rate" % (size, round(value)))
            continue
        medians = {}
        for fe in fes:
            rps = [r["requests"] / (r["duration_us"] / 1e6) for r in runs
                   if r.get("phase", "max") == "max" and r["frontend"] == fe and r["size"] == size and r["duration_us"] > 0]
            if rps:
                medians[fe] = statistics.median(rps)
        if not medians:
            sys.stderr.write("no maximum-rate result for %s: cannot take %g%% of it\n" % (size, value))
            rc = 1
            continue
        slowest = min(medians, key=medians.get)
        rate = max(1, _two_digits(medians[slowest] * value / 100))
        print("%s %d %g%% of %s req/s, the median at maximum rate of the slowest frontend, %s" % (
            size, rate, value, "{:,.0f}".format(medians[slowest]), NAMES.get(slowest, slowest)))
    return rc


# ---------------------------------------------------------------- report

NAMES = {"squid": "Squid 5.7 CARP", "haproxy": "HAProxy (balance uri)", "carpool": "carpool frontend"}


def _ratio(a, b):
    if a is None or not b:
        return "–"
    return "%.2f×" % (a / b)


def _ms(us):
    return "%.2f ms" % (us / 1000.0)


def _ms_diff(a, b):
    """a - b (µs) as a signed millisecond difference with the relative change."""
    if a is None or b is None:
        return "–"
    rel = (" (%+.0f%%)" % (100.0 * (a - b) / b)) if b else ""
    return "%+.2f ms%s" % ((a - b) / 1000.0, rel)


def _num(x):
    return "{:,.0f}".format(x)


def _errs(r):
    return r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"] + (0 if r["alive"] else 1)


def _rps(r):
    return r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] > 0 else 0.0


def _rpc(r, tck):
    c = (r["utime"] + r["stime"]) / tck
    return r["requests"] / c if c > 0 else 0.0


# Fixed-rate runs outside this band of the offered rate, or with more late
# requests than LATE_WARN_PCT, did not see the offered load: flagged in the report.
RATE_TOLERANCE_PCT = 3.0
LATE_WARN_PCT = 1.0


def paired_ratios(w, frontends, by_round, tck):
    """Each frontend's req/CPU-s against HAProxy's in the same round, and their
    median: the runs of one round follow each other, so slow drifts of a noisy
    machine cancel out in these ratios, not in a ratio of medians."""
    if "haproxy" not in by_round or len(by_round["haproxy"]) < 2:
        return
    for fe in frontends:
        if fe == "haproxy" or fe not in by_round:
            continue
        ratios = [_rpc(by_round[fe][k], tck) / _rpc(by_round["haproxy"][k], tck)
                  for k in sorted(by_round[fe]) if k in by_round["haproxy"] and _rpc(by_round["haproxy"][k], tck)]
        if ratios:
            w("Per round, %s against HAProxy in the same round: req/CPU-s %s; **median %.2f×**." % (
                NAMES.get(fe, fe), ", ".join("%.2f×" % x for x in ratios), statistics.median(ratios)))
            w("")
    cpu_split(w, frontends, by_round, tck)


def _us_per_req(r, key, tck):
    return r[key] / tck / r["requests"] * 1e6 if r["requests"] else 0.0


def cpu_split(w, frontends, by_round, tck):
    """User and system CPU per request (medians of the rounds), and the ceiling
    of each frontend against HAProxy: HAProxy's CPU per request over the
    frontend's system time alone, the ratio it would reach if its own
    (user-space) work cost nothing while the kernel's stayed as measured."""
    if "haproxy" not in by_round:
        return
    parts = []
    for fe in frontends:
        rs = list(by_round.get(fe, {}).values())
        if not rs:
            continue
        parts.append("%s %.1f µs user + %.1f µs system" % (
            NAMES.get(fe, fe), statistics.median(_us_per_req(r, "utime", tck) for r in rs),
            statistics.median(_us_per_req(r, "stime", tck) for r in rs)))
    w("CPU per request (medians of the rounds): %s." % "; ".join(parts))
    h = by_round["haproxy"]
    for fe in frontends:
        if fe == "haproxy" or fe not in by_round:
            continue
        ceil = [(_us_per_req(h[k], "utime", tck) + _us_per_req(h[k], "stime", tck)) / _us_per_req(r, "stime", tck)
                for k, r in sorted(by_round[fe].items()) if k in h and _us_per_req(r, "stime", tck)]
        if ceil:
            w("Ceiling of %s against HAProxy with no user time at all (HAProxy's CPU per request over %s's "
              "system time alone): median %.2f×." % (NAMES.get(fe, fe), NAMES.get(fe, fe), statistics.median(ceil)))
    w("")


def report(results, out, *meta):
    """RESULTS: one JSON object per line (one per wrk run). META: key=value."""
    m = dict(kv.split("=", 1) for kv in meta)
    tck = int(m["clk_tck"])
    runs = []
    with open(results) as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    for r in runs:
        r.setdefault("phase", "max")
    frontends = [x for x in m["frontends"].split(",") if x]
    sizes = [x for x in m["sizes"].split(",") if x]
    phases = [x for x in m.get("phases", "max").split(",") if x]
    lines = []
    w = lines.append
    w("# bench/frontend: CARP frontends side by side")
    w("")
    w("- date: %s" % m["date"])
    w("- machine: %s CPUs (%s), kernel %s" % (m["nproc"], m["cpu"], m["kernel"]))
    w("- versions: %s; %s; %s; %s; carpool %s" % (m["v_squid"], m["v_haproxy"], m["v_nginx"], m["v_wrk"], m["v_carpool"]))
    if "max" in phases:
        w("- load at maximum rate: wrk `%s` per run, %s round(s) interleaved (%s), medians reported" % (
            m["wrk_args"], m["rounds"], ", ".join(frontends) or "none"))
    if "rate" in phases:
        offered = "; ".join("%s %s req/s (%s)" % (s.replace("k", " KiB"), _num(float(m["rate_" + s])), m["rate_why_" + s])
                            for s in sizes if m.get("rate_" + s))
        w("- load at the same offered rate: wrk `%s -s paced.lua` per run, %s round(s) interleaved, medians reported; "
          "offered: %s" % (m.get("rate_wrk_args", m["wrk_args"]), m["rounds"], offered or "none"))
    w("- pinning: %s" % m["pinning"])
    w("- topology: wrk → frontend → 2 Squid 5.7 parents (memory cache, all objects hot) → nginx origin; all on 127.0.0.1")
    w("")
    errors_total = 0
    warnings = []
    for size in sizes:
        w("## %s objects (%s objects at /%s/N)" % (size.replace("k", " KiB"), m["count_" + size], size))
        w("")
        # ---- maximum rate
        if "max" in phases:
            if "rate" in phases:
                w("At maximum rate (closed loop: each of the %s connections sends its next request when "
                  "the previous one is answered):" % m["connections"])
                w("")
            w("| frontend | req/s | p50 | p99 | p99.9 | req per frontend CPU-s | user / sys CPU s per run | errors | req/s vs HAProxy | req/s vs Squid | req/CPU-s vs HAProxy | req/CPU-s vs Squid |")
            w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            med = {}
            max_rounds = {}
            for fe in frontends:
                rs = [r for r in runs if r["phase"] == "max" and r["frontend"] == fe and r["size"] == size]
                if not rs:
                    continue
                errs = sum(_errs(r) for r in rs)
                errors_total += errs
                med[fe] = {
                    "rps": statistics.median(_rps(r) for r in rs),
                    "p50": statistics.median(r["p50_us"] for r in rs),
                    "p99": statistics.median(r["p99_us"] for r in rs),
                    "p999": statistics.median(r.get("p999_us", 0) for r in rs),
                    "rpc": statistics.median(_rpc(r, tck) for r in rs),
                    "ut": statistics.median(r["utime"] / tck for r in rs),
                    "st": statistics.median(r["stime"] / tck for r in rs),
                    "errs": errs,
                }
                max_rounds[fe] = {r["round"]: r for r in rs}
            for fe in frontends:
                if fe not in med:
                    continue
                x = med[fe]
                h = med.get("haproxy")
                s = med.get("squid")
                w("| %s | %s | %s | %s | %s | %s | %.2f / %.2f | %s | %s | %s | %s | %s |" % (
                    NAMES.get(fe, fe), _num(x["rps"]), _ms(x["p50"]), _ms(x["p99"]), _ms(x["p999"]),
                    _num(x["rpc"]), x["ut"], x["st"],
                    ("**%d !!**" % x["errs"]) if x["errs"] else "0",
                    _ratio(x["rps"], h and h["rps"]), _ratio(x["rps"], s and s["rps"]),
                    _ratio(x["rpc"], h and h["rpc"]), _ratio(x["rpc"], s and s["rpc"])))
            w("")
            paired_ratios(w, frontends, max_rounds, tck)
        # ---- same offered load
        if "rate" in phases:
            rate = m.get("rate_" + size)
            rs_all = [r for r in runs if r["phase"] == "rate" and r["size"] == size]
            if not rate:
                w("At the same offered load: not measured (%s)." % m.get("rate_why_" + size, "no rate"))
                w("")
                continue
            rate = float(rate)
            w("At the same offered load: **%s req/s** for every frontend (%s). Latencies of the requests "
              "actually sent (wrk's closed-loop correction undone, see paced.lua):" % (_num(rate), m["rate_why_" + size]))
            w("")
            w("| frontend | achieved req/s | late | p50 | p99 | p99.9 | req per frontend CPU-s | user / sys CPU s per run | errors | req/CPU-s vs HAProxy | req/CPU-s vs Squid | p99 vs HAProxy | p99.9 vs HAProxy |")
            w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            med = {}
            per_round = {}
            for fe in frontends:
                rs = [r for r in rs_all if r["frontend"] == fe]
                if not rs:
                    continue
                errs = sum(_errs(r) for r in rs)
                errors_total += errs
                slots = sum(r.get("slots", 0) for r in rs)
                med[fe] = {
                    "rps": statistics.median(_rps(r) for r in rs),
                    "late": 100.0 * sum(r.get("late", 0) for r in rs) / slots if slots else 0.0,
                    "p50": statistics.median(r["raw_p50_us"] for r in rs),
                    "p99": statistics.median(r["raw_p99_us"] for r in rs),
                    "p999": statistics.median(r["raw_p999_us"] for r in rs),
                    "rpc": statistics.median(_rpc(r, tck) for r in rs),
                    "ut": statistics.median(r["utime"] / tck for r in rs),
                    "st": statistics.median(r["stime"] / tck for r in rs),
                    "errs": errs,
                }
                per_round[fe] = {r["round"]: r for r in rs}
            for fe in frontends:
                if fe not in med:
                    continue
                x = med[fe]
                h = med.get("haproxy")
                s = med.get("squid")
                late = "%.2f%%" % x["late"]
                if x["late"] > LATE_WARN_PCT:
                    late = "**%s !**" % late
                achieved = "%s (%.1f%%)" % (_num(x["rps"]), 100.0 * x["rps"] / rate)
                if abs(100.0 * x["rps"] / rate - 100.0) > RATE_TOLERANCE_PCT:
                    achieved = "**%s !**" % achieved
                w("| %s | %s | %s | %s | %s | %s | %s | %.2f / %.2f | %s | %s | %s | %s | %s |" % (
                    NAMES.get(fe, fe), achieved, late, _ms(x["p50"]), _ms(x["p99"]), _ms(x["p999"]),
                    _num(x["rpc"]), x["ut"], x["st"],
                    ("**%d !!**" % x["errs"]) if x["errs"] else "0",
                    _ratio(x["rpc"], h and h["rpc"]), _ratio(x["rpc"], s and s["rpc"]),
                    _ms_diff(x["p99"], h["p99"]) if h and fe != "haproxy" else "–",
                    _ms_diff(x["p999"], h["p999"]) if h and fe != "haproxy" else "–"))
            w("")
            if "haproxy" in per_round and len(per_round["haproxy"]) > 1:
                for fe in frontends:
                    if fe == "haproxy" or fe not in per_round:
                        continue
                    pairs = [(per_round[fe][k], per_round["haproxy"][k]) for k in sorted(per_round[fe]) if k in per_round["haproxy"]]
                    if not pairs:
                        continue
                    w("Per round, %s against HAProxy: req/CPU-s %s (median %.2f×); p99 %s (median %+.2f ms)." % (
                        NAMES.get(fe, fe),
                        ", ".join(_ratio(_rpc(a, tck), _rpc(b, tck)) for a, b in pairs),
                        statistics.median(_rpc(a, tck) / _rpc(b, tck) for a, b in pairs if _rpc(b, tck)),
                        ", ".join(_ms_diff(a["raw_p99_us"], b["raw_p99_us"]).split(" (")[0] for a, b in pairs),
                        statistics.median((a["raw_p99_us"] - b["raw_p99_us"]) / 1000.0 for a, b in pairs)))
                w("")
            for r in rs_all:
                where = "%s, %s, round %d" % (r["frontend"], size, r["round"])
                pct = 100.0 * _rps(r) / rate
                if abs(pct - 100.0) > RATE_TOLERANCE_PCT:
                    warnings.append("WARNING: %s: achieved %s req/s = %.1f%% of the offered %s: not the same load "
                                    "(beyond ±%g%%)" % (where, _num(_rps(r)), pct, _num(rate), RATE_TOLERANCE_PCT))
                slots = r.get("slots", 0)
                if slots and 100.0 * r.get("late", 0) / slots > LATE_WARN_PCT:
                    warnings.append("WARNING: %s: %.1f%% of the requests went out more than 1 ms behind their slot "
                                    "(up to %s): every connection was busy, the offered load was burstier than "
                                    "planned (raise --rate-connections or lower --rate)" % (
                                        where, 100.0 * r["late"] / slots, _ms(r.get("max_lag_us", 0))))
                if not r.get("hist_ok", 0):
                    warnings.append("NOTE: %s: wrk's histogram could not be read, the latencies are wrk's "
                                    "corrected ones" % where)
    notes = [n for n in m.get("notes", "").split("\x1f") if n.strip()] + warnings
    if notes:
        w("## Notes")
        w("")
        for n in notes:
            w("- " + n)
        w("")
    max_runs = [r for r in runs if r["phase"] == "max"]
    if max_runs:
        w("## Every run" + (": maximum rate" if "rate" in phases else ""))
        w("")
        w("| round | size | frontend | requests | req/s | p50 | p99 | p99.9 | user s | sys s | req/CPU-s | connect/read/write/status/timeout errors | parent conns opened | alive after |")
        w("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
        for r in max_runs:
            c = (r["utime"] + r["stime"]) / tck
            w("| %d | %s | %s | %d | %s | %s | %s | %s | %.2f | %.2f | %s | %d/%d/%d/%d/%d | %s | %s |" % (
                r["round"], r["size"], r["frontend"], r["requests"],
                _num(_rps(r)), _ms(r["p50_us"]), _ms(r["p99_us"]), _ms(r.get("p999_us", 0)),
                r["utime"] / tck, r["stime"] / tck, _num(r["requests"] / c) if c else "–",
                r["connect"], r["read"], r["write"], r["status"], r["timeout"], r.get("parent_conns", "?"),
                "yes" if r["alive"] else "**NO**"))
        w("")
    rate_runs = [r for r in runs if r["phase"] == "rate"]
    if rate_runs:
        w("## Every run: same offered load")
        w("")
        w("| round | size | frontend | offered req/s | achieved req/s | late (max lag) | p50 | p99 | p99.9 | wrk's p99 / p99.9 | user s | sys s | req/CPU-s | connect/read/write/status/timeout errors | parent conns opened | alive after |")
        w("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
        for r in rate_runs:
            c = (r["utime"] + r["stime"]) / tck
            slots = r.get("slots", 0)
            w("| %d | %s | %s | %s | %s | %d of %d (%s) | %s | %s | %s | %s / %s | %.2f | %.2f | %s | %d/%d/%d/%d/%d | %s | %s |" % (
                r["round"], r["size"], r["frontend"], _num(r.get("rate", 0)), _num(_rps(r)),
                r.get("late", 0), slots, _ms(r.get("max_lag_us", 0)),
                _ms(r["raw_p50_us"]), _ms(r["raw_p99_us"]), _ms(r["raw_p999_us"]),
                _ms(r["p99_us"]), _ms(r.get("p999_us", 0)),
                r["utime"] / tck, r["stime"] / tck, _num(r["requests"] / c) if c else "–",
                r["connect"], r["read"], r["write"], r["status"], r["timeout"], r.get("parent_conns", "?"),
                "yes" if r["alive"] else "**NO**"))
        w("")
        w("Late: requests sent more than 1 ms after their slot in the schedule (all connections were busy); "
          "max lag: the latest one. wrk's p99 / p99.9: wrk's own figures, which include the copies its "
          "closed-loop correction adds for every response slower than twice connections/rate.")
        w("")
    w("Parent conns opened: TCP connections to the parents' ports that appeared during the run "
      "(from /proc/net/tcp, TIME_WAIT included); about one per request would mean parent connections are not reused.")
    w("")
    w("Rerun: `%s`" % m["rerun"])
    text = "\n".join(lines) + "\n"
    with open(out, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    return 2 if errors_total else 0


def main(argv):
    cmds = {"gen": gen, "probe": probe, "warm": warm, "verify": verify, "cpu": cpu, "conns": conns,
            "rates": rates, "report": report}
    if len(argv) < 2 or argv[1] not in cmds:
        sys.stderr.write(__doc__)
        return 64
    return cmds[argv[1]](*argv[2:]) or 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KeyboardInterrupt:
        # die of SIGINT (no traceback) so that the calling shell sees the interrupt
        import signal
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
