#!/usr/bin/env python3
"""Helper for bench/cache/run (python3 stdlib only): object generation, probes,
warm-up and hit checks through a cache, CPU accounting from /proc, and the report.
Adapted from bench/frontend/helper.py.

Subcommands:
  gen DIR N1K N64K                 write DIR/1k/0..N1K-1 (1 KiB) and DIR/64k/0..N64K-1 (64 KiB)
  probe PORT FORM ORIGIN PATH SECONDS
                                   GET PATH of ORIGIN through 127.0.0.1:PORT until it answers 200
  warm CACHE PORT FORM ORIGIN SETS...
                                   fetch every object once through the cache (SETS: prefix:count:size)
  verify CACHE PORT FORM ORIGIN STEP SETS...
                                   fetch every STEP-th object again; all must be cache hits
  cpu PID                          print "UTIME STIME" clock ticks of PID and all its descendants
  tree PID                         describe PID and its descendants: processes, threads, names
  report RESULTS OUT.md META...    aggregate the runs (medians) into markdown tables

FORM is `abs` (absolute-form request line, Host: ORIGIN) or `origin` (origin-form, Host: ORIGIN).
CACHE (squid, nginx, varnish, carpool) picks how a hit is recognised, see HIT_RULES.
"""

import http.client
import json
import os
import statistics
import sys
import time

# Socket timeout for the helper's own requests (probe, warm-up, verify), seconds.
REQUEST_TIMEOUT_S = 10
# Pause between two probe attempts, seconds.
PROBE_INTERVAL_S = 0.5
# How many bad responses warm/verify print.
SHOW_BAD = 5


def _squid_hit(h):
    return any(v.startswith("HIT from ") for v in h.get_all("X-Cache") or [])


def _nginx_hit(h):
    return h.get("X-Cache-Status") == "HIT"


def _varnish_hit(h):
    # X-Varnish: "<this request's id> <id of the request that stored the object>" on a hit,
    # one id on a miss or pass.
    return len((h.get("X-Varnish") or "").split()) == 2


def _carpool_hit(h):
    return any(v.upper().startswith("HIT") for v in h.get_all("X-Cache") or [])


# Per cache: (predicate on the response headers, the headers shown as evidence).
HIT_RULES = {
    "squid": (_squid_hit, ("X-Cache",)),
    "nginx": (_nginx_hit, ("X-Cache-Status",)),
    "varnish": (_varnish_hit, ("X-Varnish", "Age")),
    "carpool": (_carpool_hit, ("X-Cache",)),
}


def gen(root, n1k, n64k):
    for prefix, count, size in (("1k", int(n1k), 1024), ("64k", int(n64k), 65536)):
        d = os.path.join(root, prefix)
        os.makedirs(d, exist_ok=True)
        for n in range(count):
            with open(os.path.join(d, str(n)), "wb") as f:
                f.write(os.urandom(size))


def _conn(port):
    return http.client.HTTPConnection("127.0.0.1", int(port), timeout=REQUEST_TIMEOUT_S)


def _target(form, origin, path):
    if form == "abs":
        return "http://%s%s" % (origin, path)
    if form == "origin":
        return path
    raise ValueError("FORM must be abs or origin, not %r" % form)


def _get(conn, form, origin, path):
    # Host is given explicitly so that http.client does not add the proxy's address.
    conn.request("GET", _target(form, origin, path), headers={"Host": origin})
    r = conn.getresponse()
    body = r.read()
    return r, body


def probe(port, form, origin, path, seconds):
    deadline = time.monotonic() + float(seconds)
    why = "never tried"
    tries = 0
    while True:
        tries += 1
        try:
            c = _conn(port)
            r, _ = _get(c, form, origin, path)
            c.close()
            if r.status == 200:
                print("probe ok after %d tries" % tries)
                return 0
            why = "HTTP %d %s" % (r.status, r.reason)
        except (OSError, http.client.HTTPException, ValueError) as e:
            why = "%s: %s" % (type(e).__name__, e)
        if time.monotonic() >= deadline:
            print("no 200 within %ss (%d tries), last: %s" % (seconds, tries, why))
            return 1
        time.sleep(PROBE_INTERVAL_S)


def _parse_sets(sets):
    out = []
    for s in sets:
        prefix, count, size = s.split(":")
        out.append((prefix, int(count), int(size)))
    return out


def _fetch_all(cache, port, form, origin, sets, step):
    """Fetches objects over one keep-alive connection (reconnecting when needed).
    Returns (ok, bad list, hits, connections, evidence of the last hit or miss)."""
    is_hit, shown = HIT_RULES[cache]
    conn = None
    conns = ok = hits = 0
    bad = []
    evidence = {}
    for prefix, count, size in sets:
        for n in range(0, count, step):
            path = "/%s/%d" % (prefix, n)
            r = body = None
            for attempt in (1, 2):
                if conn is None:
                    conn = _conn(port)
                    conns += 1
                try:
                    r, body = _get(conn, form, origin, path)
                    if r.will_close:
                        conn.close()
                        conn = None
                    break
                except (OSError, http.client.HTTPException) as e:
                    conn.close()
                    conn = None
                    r = None
                    if attempt == 2:
                        bad.append("%s: %s" % (path, e))
            if r is None:
                continue
            if r.status != 200 or len(body) != size:
                bad.append("%s: HTTP %d, %d bytes" % (path, r.status, len(body)))
                continue
            ok += 1
            hit = is_hit(r.headers)
            hits += hit
            evidence["hit" if hit else "miss"] = ", ".join(
                "%s: %s" % (k, r.headers.get(k, "(none)")) for k in shown)
    if conn is not None:
        conn.close()
    return ok, bad, hits, conns, evidence


def warm(cache, port, form, origin, *sets):
    t = time.monotonic()
    ok, bad, hits, conns, ev = _fetch_all(cache, port, form, origin, _parse_sets(sets), 1)
    print("%d ok, %d bad, %d already hits, %d connection(s), %.1f s%s"
          % (ok, len(bad), hits, conns, time.monotonic() - t,
             ("; a miss: " + ev["miss"]) if "miss" in ev else ""))
    for b in bad[:SHOW_BAD]:
        print("  bad: " + b)
    return 1 if bad else 0


def verify(cache, port, form, origin, step, *sets):
    ok, bad, hits, conns, ev = _fetch_all(cache, port, form, origin, _parse_sets(sets), int(step))
    total = ok + len(bad)
    print("%d/%d hits (%d bad, %d connection(s))%s%s"
          % (hits, total, len(bad), conns,
             ("; a hit: " + ev["hit"]) if "hit" in ev else "",
             ("; a MISS: " + ev["miss"]) if "miss" in ev else ""))
    for b in bad[:SHOW_BAD]:
        print("  bad: " + b)
    return 0 if (not bad and hits == total) else 1


def _stat(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    fields = s[s.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): ppid = field 4, utime = 14, stime = 15
    return int(fields[1]), int(fields[11]), int(fields[12])


def _tree(pid):
    """PID and its live descendants, as a list of pids (PID first); None when PID is gone."""
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
        return None, stats
    out = []
    todo = [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out, stats


def cpu(pid):
    """Prints user and system clock ticks of PID plus all its live descendants
    (nginx master + workers, Varnish manager + child), all threads included."""
    pids, stats = _tree(int(pid))
    if pids is None:
        print("gone")
        return 1
    print("%d %d" % (sum(stats[p][0] for p in pids), sum(stats[p][1] for p in pids)))
    return 0


def tree(pid):
    pids, _ = _tree(int(pid))
    if pids is None:
        print("gone")
        return 1
    names = []
    threads = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                st = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
            names.append(st.get("Name", "?"))
            threads += int(st.get("Threads", "0"))
        except (OSError, ValueError):
            names.append("?")
    print("%d process(es), %d thread(s): %s" % (len(pids), threads, ", ".join(names)))
    return 0


# ---------------------------------------------------------------- report

NAMES = {"squid": "Squid 5.7", "nginx": "nginx proxy_cache", "varnish": "Varnish", "carpool": "carpool cache"}
# Columns "vs X": ratios against these systems, in this order.
BASELINES = ("squid", "nginx", "varnish")


def _ratio(a, b):
    if a is None or not b:
        return "–"
    return "%.2f×" % (a / b)


def _ms(us):
    return "%.2f ms" % (us / 1000.0)


def _flag(n):
    return ("**%d !!**" % n) if n else "0"


def report(results, out, *meta):
    """RESULTS: one JSON object per line (one per wrk run). META: key=value."""
    m = dict(kv.split("=", 1) for kv in meta)
    tck = int(m["clk_tck"])
    runs = []
    with open(results) as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    caches = [x for x in m["caches"].split(",") if x]
    # below this many connections served (req/s x mean latency), a run starved connections
    starved_below = int(m["connections"]) * int(m["starved_pct"]) / 100.0
    sizes = [x for x in m["sizes"].split(",") if x]
    lines = []
    w = lines.append
    w("# bench/cache: HTTP caches side by side, hit path")
    w("")
    w("- date: %s" % m["date"])
    w("- machine: %s CPUs (%s), kernel %s" % (m["nproc"], m["cpu"], m["kernel"]))
    w("- versions: %s; %s; %s; %s; %s" % (m["v_squid"], m["v_nginx"], m["v_varnish"], m["v_wrk"], m["v_carpool"]))
    w("- load: wrk `%s` per run, %s round(s) interleaved (%s), medians reported"
      % (m["wrk_args"], m["rounds"], ", ".join(caches) or "none"))
    w("- pinning: %s" % m["pinning"])
    w("- topology: wrk → cache under test → nginx origin (`Cache-Control: max-age=3600`, Last-Modified, ETag); "
      "all on 127.0.0.1; every object fetched once through each cache before measuring")
    w("")
    w("| cache | setup | request form | processes counted |")
    w("|---|---|---|---|")
    for c in caches:
        w("| %s | %s | %s | %s |" % (NAMES.get(c, c), m.get("setup_" + c, "?"), m.get("form_" + c, "?"),
                                     m.get("procs_" + c, "?")))
    w("")
    errors_total = 0
    for size in sizes:
        w("## %s objects (%s objects at /%s/N)" % (size.replace("k", " KiB"), m["count_" + size], size))
        w("")
        w("| cache | req/s | p50 | p99 | req per cache CPU-s | user / sys CPU s per run | errors | origin requests | "
          + " | ".join("req/s vs %s" % NAMES[b] for b in BASELINES) + " | "
          + " | ".join("req/CPU-s vs %s" % NAMES[b] for b in BASELINES) + " |")
        w("|---|" + "---:|" * (7 + 2 * len(BASELINES)))
        med = {}
        for c in caches:
            rs = [r for r in runs if r["cache"] == c and r["size"] == size]
            if not rs:
                continue
            rps = [r["requests"] / (r["duration_us"] / 1e6) for r in rs]
            cpu_s = [(r["utime"] + r["stime"]) / tck for r in rs]
            rpc = [r["requests"] / s if s > 0 else 0.0 for r, s in zip(rs, cpu_s)]
            errs = sum(r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"] + (0 if r["alive"] else 1)
                       + (1 if r["served"] < starved_below else 0) for r in rs)
            origin = sum(r["origin_reqs"] for r in rs)
            errors_total += errs + origin
            med[c] = {
                "rps": statistics.median(rps),
                "p50": statistics.median(r["p50_us"] for r in rs),
                "p99": statistics.median(r["p99_us"] for r in rs),
                "rpc": statistics.median(rpc),
                "ut": statistics.median(r["utime"] / tck for r in rs),
                "st": statistics.median(r["stime"] / tck for r in rs),
                "errs": errs,
                "origin": origin,
            }
        for c in caches:
            if c not in med:
                continue
            x = med[c]
            base = [med.get(b) for b in BASELINES]
            w("| %s | %s | %s | %s | %s | %.2f / %.2f | %s | %s | %s | %s |" % (
                NAMES.get(c, c), "{:,.0f}".format(x["rps"]), _ms(x["p50"]), _ms(x["p99"]),
                "{:,.0f}".format(x["rpc"]), x["ut"], x["st"], _flag(x["errs"]), _flag(x["origin"]),
                " | ".join(_ratio(x["rps"], b and b["rps"]) for b in base),
                " | ".join(_ratio(x["rpc"], b and b["rpc"]) for b in base)))
        w("")
    w("## Warm-up and hit check")
    w("")
    w("| cache | warm-up (every object once) | origin requests during warm-up | hit check (every %s-th object) |" % m["step"])
    w("|---|---|---:|---|")
    for c in caches:
        w("| %s | %s | %s | %s |" % (NAMES.get(c, c), m.get("warm_" + c, "?"), m.get("warm_origin_" + c, "?"),
                                     m.get("verify_" + c, "?")))
    w("")
    notes = [n for n in m.get("notes", "").split("\x1f") if n.strip()]
    if notes:
        w("## Notes")
        w("")
        for n in notes:
            w("- " + n)
        w("")
    w("## Every run")
    w("")
    w("| round | size | cache | requests | req/s | p50 | p99 | user s | sys s | req/CPU-s | bytes per response "
      "| connections served | connect/read/write/status/timeout errors | origin requests | alive after |")
    w("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
    for r in runs:
        s = (r["utime"] + r["stime"]) / tck
        served = ("**%.1f !!**" if r["served"] < starved_below else "%.1f") % r["served"]
        w("| %d | %s | %s | %d | %s | %s | %s | %.2f | %.2f | %s | %s | %s | %d/%d/%d/%d/%d | %s | %s |" % (
            r["round"], r["size"], r["cache"], r["requests"],
            "{:,.0f}".format(r["requests"] / (r["duration_us"] / 1e6)), _ms(r["p50_us"]), _ms(r["p99_us"]),
            r["utime"] / tck, r["stime"] / tck, "{:,.0f}".format(r["requests"] / s) if s else "–",
            "{:,.0f}".format(r["bytes"] / r["requests"]) if r["requests"] else "–", served,
            r["connect"], r["read"], r["write"], r["status"], r["timeout"], _flag(r["origin_reqs"]),
            "yes" if r["alive"] else "**NO**"))
    w("")
    w("Origin requests: lines added to the origin's access log during the run. Every measured "
      "request should be a hit, so anything but 0 is flagged and makes the run exit 2. "
      "Bytes per response: wrk's bytes read / requests (body plus the cache's response headers). "
      "Connections served: req/s × mean latency (Little's law), about how many of the %s connections had a "
      "request being answered; wrk reports no error for a connection that is never answered, so a value "
      "below %s%% of them is flagged and counted as an error. It can exceed %s: wrk's latency figures include "
      "its coordinated-omission correction, which adds samples when latencies have a long tail." % (
          m["connections"], m["starved_pct"], m["connections"]))
    w("")
    w("Rerun: `%s`" % m["rerun"])
    text = "\n".join(lines) + "\n"
    with open(out, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    return 2 if errors_total else 0


def main(argv):
    cmds = {"gen": gen, "probe": probe, "warm": warm, "verify": verify, "cpu": cpu, "tree": tree, "report": report}
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
