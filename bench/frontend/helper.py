#!/usr/bin/env python3
"""Helper for bench/frontend/run (python3 stdlib only).

Subcommands:
  gen DIR N1K N64K              write DIR/1k/0..N1K-1 (1 KiB) and DIR/64k/0..N64K-1 (64 KiB)
  probe PORT URL SECONDS        GET URL through the proxy on 127.0.0.1:PORT until it answers 200
  warm PORT ORIGIN SETS...      fetch every object once through the proxy (SETS: prefix:count:size)
  verify PORT ORIGIN STEP SETS...  fetch every STEP-th object again; report parent-cache hits
  cpu PID                       print "UTIME STIME" clock ticks of PID and all its descendants
  conns FILE PORT...            first call: save connections to PORTS; second: print how many are new
  report RESULTS OUT.md META... aggregate the runs (medians) into markdown tables
"""

import http.client
import json
import os
import socket
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


# ---------------------------------------------------------------- report

NAMES = {"squid": "Squid 5.7 CARP", "haproxy": "HAProxy (balance uri)", "carpool": "carpool frontend"}


def _ratio(a, b):
    if a is None or not b:
        return "–"
    return "%.2f×" % (a / b)


def _ms(us):
    return "%.2f ms" % (us / 1000.0)


def report(results, out, *meta):
    """RESULTS: one JSON object per line (one per wrk run). META: key=value."""
    m = dict(kv.split("=", 1) for kv in meta)
    tck = int(m["clk_tck"])
    runs = []
    with open(results) as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    frontends = [x for x in m["frontends"].split(",") if x]
    sizes = [x for x in m["sizes"].split(",") if x]
    lines = []
    w = lines.append
    w("# bench/frontend: CARP frontends side by side")
    w("")
    w("- date: %s" % m["date"])
    w("- machine: %s CPUs (%s), kernel %s" % (m["nproc"], m["cpu"], m["kernel"]))
    w("- versions: %s; %s; %s; %s; carpool %s" % (m["v_squid"], m["v_haproxy"], m["v_nginx"], m["v_wrk"], m["v_carpool"]))
    w("- load: wrk `%s` per run, %s round(s) interleaved (%s), medians reported" % (m["wrk_args"], m["rounds"], ", ".join(frontends) or "none"))
    w("- pinning: %s" % m["pinning"])
    w("- topology: wrk → frontend → 2 Squid 5.7 parents (memory cache, all objects hot) → nginx origin; all on 127.0.0.1")
    w("")
    errors_total = 0
    for size in sizes:
        w("## %s objects (%s objects at /%s/N)" % (size.replace("k", " KiB"), m["count_" + size], size))
        w("")
        w("| frontend | req/s | p50 | p99 | req per frontend CPU-s | user / sys CPU s per run | errors | req/s vs HAProxy | req/s vs Squid | req/CPU-s vs HAProxy | req/CPU-s vs Squid |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        med = {}
        for fe in frontends:
            rs = [r for r in runs if r["frontend"] == fe and r["size"] == size]
            if not rs:
                continue
            rps = [r["requests"] / (r["duration_us"] / 1e6) for r in rs]
            cpu_s = [(r["utime"] + r["stime"]) / tck for r in rs]
            rpc = [r["requests"] / c if c > 0 else 0.0 for r, c in zip(rs, cpu_s)]
            errs = sum(r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"] + (0 if r["alive"] else 1) for r in rs)
            errors_total += errs
            med[fe] = {
                "rps": statistics.median(rps),
                "p50": statistics.median(r["p50_us"] for r in rs),
                "p99": statistics.median(r["p99_us"] for r in rs),
                "rpc": statistics.median(rpc),
                "ut": statistics.median(r["utime"] / tck for r in rs),
                "st": statistics.median(r["stime"] / tck for r in rs),
                "errs": errs,
            }
        for fe in frontends:
            if fe not in med:
                continue
            x = med[fe]
            h = med.get("haproxy")
            s = med.get("squid")
            w("| %s | %s | %s | %s | %s | %.2f / %.2f | %s | %s | %s | %s | %s |" % (
                NAMES.get(fe, fe), "{:,.0f}".format(x["rps"]), _ms(x["p50"]), _ms(x["p99"]),
                "{:,.0f}".format(x["rpc"]), x["ut"], x["st"],
                ("**%d !!**" % x["errs"]) if x["errs"] else "0",
                _ratio(x["rps"], h and h["rps"]), _ratio(x["rps"], s and s["rps"]),
                _ratio(x["rpc"], h and h["rpc"]), _ratio(x["rpc"], s and s["rpc"])))
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
    w("| round | size | frontend | requests | req/s | p50 | p99 | user s | sys s | req/CPU-s | connect/read/write/status/timeout errors | parent conns opened | alive after |")
    w("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
    for r in runs:
        c = (r["utime"] + r["stime"]) / tck
        w("| %d | %s | %s | %d | %s | %s | %s | %.2f | %.2f | %s | %d/%d/%d/%d/%d | %s | %s |" % (
            r["round"], r["size"], r["frontend"], r["requests"],
            "{:,.0f}".format(r["requests"] / (r["duration_us"] / 1e6)), _ms(r["p50_us"]), _ms(r["p99_us"]),
            r["utime"] / tck, r["stime"] / tck, "{:,.0f}".format(r["requests"] / c) if c else "–",
            r["connect"], r["read"], r["write"], r["status"], r["timeout"], r.get("parent_conns", "?"),
            "yes" if r["alive"] else "**NO**"))
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
    cmds = {"gen": gen, "probe": probe, "warm": warm, "verify": verify, "cpu": cpu, "conns": conns, "report": report}
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
