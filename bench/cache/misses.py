#!/usr/bin/env python3
"""Helper for bench/cache/misses (python3 stdlib only): the origin's request
counter, memory/thread sampling and per-thread CPU from /proc, CPU busy time
per core, Squid's object count, a body check through a cache, and the report.
Uses bench/cache/helper.py for the process tree.

Subcommands:
  origin-count PORT                print the origin's request counter (nginx stub_status at /origin-status)
  mem PID                          print "RSS_KB PSS_KB THREADS PROCESSES" summed over PID and its descendants
  watch PID INTERVAL SECONDS OUT   append one JSON sample of `mem` to OUT every INTERVAL s, for at most
                                   SECONDS s or until PID is gone
  peak FILE                        print the largest "RSS_KB PSS_KB THREADS PROCESSES" sampled by `watch`
  pids PID                         print PID and its live descendants, one a line
  threads PID [BEFORE.json]        print {label: [clock ticks, threads]} of every thread of PID and its
                                   descendants, grouped by process and thread name (JSON); with BEFORE
                                   (an earlier output), the ticks since then
  cpustat                          print {"cpuN": [busy ticks, total ticks, steal ticks]} from /proc/stat (JSON)
  squid-entries PORT               print the objects in Squid's cache_dirs (cache manager `storedir`)
  check PORT ORIGIN COUNT SAMPLES  fetch SAMPLES random objects /s/N through the cache at PORT twice and
                                   check that each body is the one the origin sends for N
  report RESULTS OUT.md META...    the markdown report (medians over rounds)
"""

import http.client
import json
import os
import random
import re
import statistics
import sys
import time

import helper  # bench/cache/helper.py: _tree, _stat

REQUEST_TIMEOUT_S = 10


def _get(port, target, host):
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=REQUEST_TIMEOUT_S)
    try:
        c.request("GET", target, headers={"Host": host})
        r = c.getresponse()
        return r, r.read()
    finally:
        c.close()


def origin_count(port):
    # stub_status: "Active connections: N\nserver accepts handled requests\n A H R\n..."
    r, body = _get(port, "/origin-status", "127.0.0.1:%s" % port)
    nums = body.decode().splitlines()[2].split()
    print(int(nums[2]))
    return 0


def _status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def _pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _mem(pid):
    pids, _ = helper._tree(int(pid))
    if pids is None:
        return None
    rss = pss = threads = procs = 0
    for p in pids:
        try:
            st = _status(p)
            rss += int(st.get("VmRSS", "0 kB").split()[0])
            threads += int(st.get("Threads", "0"))
            pss += _pss_kb(p)
            procs += 1
        except (OSError, ValueError):
            pass
    return {"rss_kb": rss, "pss_kb": pss, "threads": threads, "procs": procs}


def mem(pid):
    m = _mem(pid)
    if m is None:
        print("gone")
        return 1
    print("%d %d %d %d" % (m["rss_kb"], m["pss_kb"], m["threads"], m["procs"]))
    return 0


def watch(pid, interval, seconds, out):
    t0 = time.monotonic()
    with open(out, "a") as f:
        while time.monotonic() - t0 < float(seconds):
            m = _mem(pid)
            if m is None:
                return 0
            m["t"] = round(time.monotonic() - t0, 2)
            f.write(json.dumps(m) + "\n")
            f.flush()
            time.sleep(float(interval))
    return 0


def _label(pid):
    """A process's name as it shows itself: nginx and Squid rename their processes
    ("nginx: worker process", "(squid-disk-2)"); otherwise the program's base name."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv0 = f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        argv0 = "?"
    if argv0.startswith("nginx:"):
        return argv0.replace(" process", "").strip()
    if argv0.startswith("("):
        return argv0
    return os.path.basename(argv0.split()[0]) if argv0 else "?"


def peak(path):
    best = {"rss_kb": 0, "pss_kb": 0, "threads": 0, "procs": 0}
    with open(path) as f:
        for line in f:
            if line.strip():
                m = json.loads(line)
                for k in best:
                    best[k] = max(best[k], m[k])
    print("%d %d %d %d" % (best["rss_kb"], best["pss_kb"], best["threads"], best["procs"]))
    return 0


def pids(pid):
    ps, _ = helper._tree(int(pid))
    for p in ps or []:
        print(p)
    return 0


def threads(pid, before=None):
    pids, _ = helper._tree(int(pid))
    if pids is None:
        print("{}")
        return 1
    out = {}
    for p in pids:
        plabel = _label(p)
        try:
            tids = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/stat" % (p, tid)) as f:
                    s = f.read()
                with open("/proc/%d/task/%s/comm" % (p, tid)) as f:
                    comm = f.read().strip()
            except OSError:
                continue
            fields = s[s.rindex(")") + 2:].split()
            ticks = int(fields[11]) + int(fields[12])
            if int(tid) == p:
                label = "%s (main thread)" % plabel if len(tids) > 1 else plabel
            else:
                label = "%s / %s" % (plabel, re.sub(r"\d+$", "N", comm))
            t = out.setdefault(label, [0, 0])
            t[0] += ticks
            t[1] += 1
    if before:
        with open(before) as f:
            b = json.load(f)
        for k, v in out.items():
            v[0] -= b.get(k, [0, 0])[0]
    print(json.dumps(out, sort_keys=True))
    return 0


def cpustat():
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"^(cpu\d+) (.*)", line)
            if not m:
                continue
            v = [int(x) for x in m.group(2).split()]
            # user nice system idle iowait irq softirq steal guest guest_nice
            idle = v[3] + v[4]
            total = sum(v[:8])
            out[m.group(1)] = [total - idle, total, v[7]]
    print(json.dumps(out))
    return 0


def squid_entries(port):
    # The cache manager answers requests for /squid-internal-mgr/ACTION sent to Squid itself.
    r, body = _get(port, "/squid-internal-mgr/storedir", "127.0.0.1:%s" % port)
    if r.status != 200:
        print("HTTP %d" % r.status)
        return 1
    n = 0
    in_dir = False
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("Store Directory #"):
            in_dir = True
        elif in_dir and line.startswith("Current entries:"):
            n += int(line.split()[2])
            in_dir = False
    print(n)
    return 0


def check(port, origin, count, samples):
    """Every answer must be the origin's body for that N: it starts with "/s/N "."""
    rnd = random.Random(1)
    bad = []
    for n in [rnd.randrange(int(count)) for _ in range(int(samples))] * 2:
        path = "/s/%d" % n
        try:
            r, body = _get(port, "http://%s%s" % (origin, path), origin)
        except (OSError, http.client.HTTPException) as e:
            bad.append("%s: %s" % (path, e))
            continue
        if r.status != 200 or not body.startswith((path + " ").encode()):
            bad.append("%s: HTTP %d, %d bytes: %r" % (path, r.status, len(body), body[:30]))
    total = 2 * int(samples)
    print("%d/%d right bodies%s" % (total - len(bad), total, "".join("; bad: " + b for b in bad[:3])))
    return 1 if bad else 0


# ---------------------------------------------------------------- report

NAMES = {"carpool": "carpool cache", "carpool-mem": "carpool cache, no disk tier", "nginx": "nginx `proxy_cache`",
         "squid": "Squid 5.7 rock"}


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _k(x):
    return "–" if x is None else "{:,.0f}".format(x)


def _kreq(x):
    return "–" if x is None else "%.1fk" % (x / 1000.0)


def _mb(kb):
    return "–" if kb is None else "%.0f MB" % (kb / 1024.0)


def _pct(x):
    return "–" if x is None else "%.0f%%" % (100.0 * x)


def _hits(r):
    """Share of the window's answered requests that did not reach the origin. The origin also
    counts requests still in flight when wrk stops (up to one per connection), so an all-miss
    window can come out a little below 0: shown as 0."""
    return max(0.0, 1.0 - r["origin_reqs"] / r["requests"]) if r["requests"] else None


def _flag(n):
    return ("**%d !!**" % n) if n else "0"


def report(results, out, *meta):
    m = dict(kv.split("=", 1) for kv in meta)
    tck = int(m["clk_tck"])
    windows, servers = [], []
    with open(results) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                (windows if r["kind"] == "window" else servers).append(r)
    order = [x for x in m["servers"].split(",") if x]
    nwin = int(m["windows"])
    rounds = sorted({r["round"] for r in servers} | {r["round"] for r in windows})
    lines = []
    w = lines.append
    w("# bench/cache/misses: many small objects, mostly misses, with the disk tier")
    w("")
    w("- date: %s" % m["date"])
    w("- machine: %s CPUs (%s), kernel %s, cache directories on %s" % (m["nproc"], m["cpu"], m["kernel"], m["fs"]))
    w("- versions: %s" % m["versions"])
    w("- objects: %s distinct URLs `/s/N`, %s-byte bodies, `Cache-Control: max-age=3600`, from an nginx origin "
      "(`return 200`, no files)" % ("{:,}".format(int(m["objects"])), m["body"]))
    w("- load: wrk `%s`, URLs drawn uniformly at random (misses.lua), %d consecutive windows per server "
      "(seeds 1..%d, the same for every server); servers one after the other, each from an empty cache; %s round(s)"
      % (m["wrk_args"], nwin, nwin, len(rounds)))
    w("- pinning: %s" % m["pinning"])
    w("")
    w("| server | setup |")
    w("|---|---|")
    for s in order:
        w("| %s | %s |" % (NAMES.get(s, s), m.get("setup_" + s, "?")))
    w("")

    def per_server(s):
        ws = [r for r in windows if r["server"] == s]
        ss = [r for r in servers if r["server"] == s]
        rps = [_med(r["requests"] / (r["duration_us"] / 1e6) for r in ws if r["window"] == i)
               for i in range(1, nwin + 1)]
        hit = [_med(_hits(r) for r in ws if r["window"] == i) for i in range(1, nwin + 1)]
        by_round = {}
        for r in ws:
            x = by_round.setdefault(r["round"], {"req": 0, "us": 0, "ut": 0, "st": 0, "err": 0, "c0": 0, "c0t": 0,
                                                 "steal": 0, "org": 0, "p99": []})
            x["req"] += r["requests"]
            x["us"] += r["duration_us"]
            x["ut"] += r["utime"]
            x["st"] += r["stime"]
            x["err"] += r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"] + (0 if r["alive"] else 1)
            x["c0"] += r["cpu0_busy"]
            x["c0t"] += r["cpu0_total"]
            x["steal"] += r["cpu0_steal"]
            x["org"] += r["origin_ticks"]
            x["p99"].append(r["p99_us"])
        rr = list(by_round.values())
        return {
            "rps": rps,
            "hit": hit,
            "all_rps": _med(x["req"] / (x["us"] / 1e6) for x in rr),
            "rpc": _med(x["req"] / ((x["ut"] + x["st"]) / tck) if x["ut"] + x["st"] else None for x in rr),
            "cpu_s": _med((x["ut"] + x["st"]) / tck for x in rr),
            "ut": _med(x["ut"] / tck for x in rr),
            "st": _med(x["st"] / tck for x in rr),
            "cpu0": _med(x["c0"] / x["c0t"] if x["c0t"] else None for x in rr),
            "steal": _med(x["steal"] / x["c0t"] if x["c0t"] else None for x in rr),
            "share": _med((x["ut"] + x["st"]) / x["c0t"] if x["c0t"] else None for x in rr),
            "origin_cpu": _med(x["org"] / tck for x in rr),
            "p99": _med(_med(x["p99"]) for x in rr),
            "errors": sum(x["err"] for x in rr) + sum(0 if r.get("check_ok", True) else 1 for r in ss),
            "idle_rss": _med(r.get("idle_rss_kb") for r in ss),
            "rss": _med(r.get("peak_rss_kb") for r in ss),
            "pss": _med(r.get("peak_pss_kb") for r in ss),
            "threads": _med(r.get("peak_threads") for r in ss),
            "procs": _med(r.get("procs") for r in ss),
            "objects": _med(r.get("objects") for r in ss),
            "du": _med(r.get("du_kb") for r in ss),
            "apparent": _med(r.get("apparent_kb") for r in ss),
            "rounds": len(rr),
        }

    agg = {s: per_server(s) for s in order}
    med_note = " (medians of %d rounds)" % len(rounds) if len(rounds) > 1 else ""
    w("## Throughput%s" % med_note)
    w("")
    w("| server | req/s in %d windows of %s s | req/s, whole run | share of requests that were hits, per window "
      "| req per cache CPU-s | cache CPU s (user / sys) | CPU 0 busy: all / the server's | p99 | errors |"
      % (nwin, m["window_s"]))
    w("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for s in order:
        a = agg[s]
        w("| %s | %s | %s | %s | %s | %.1f (%.1f / %.1f) | %s (%s) | %s | %s |" % (
            NAMES.get(s, s), ", ".join(_kreq(x) for x in a["rps"]), _k(a["all_rps"]),
            ", ".join(_pct(x) for x in a["hit"]), _k(a["rpc"]), a["cpu_s"] or 0, a["ut"] or 0, a["st"] or 0,
            _pct(a["cpu0"]), _pct(a["share"]), "–" if a["p99"] is None else "%.0f ms" % (a["p99"] / 1000.0),
            _flag(a["errors"])))
    w("")
    if "carpool" in agg and agg["carpool"]["all_rps"]:
        c = agg["carpool"]
        for b in ("nginx", "squid"):
            if b in agg and agg[b]["all_rps"]:
                x = agg[b]
                w("- carpool / %s: req/s %s (last window %s), req per CPU-s %s" % (
                    NAMES[b], "%.2f×" % (c["all_rps"] / x["all_rps"]),
                    "%.2f×" % (c["rps"][-1] / x["rps"][-1]) if c["rps"][-1] and x["rps"][-1] else "–",
                    "%.2f×" % (c["rpc"] / x["rpc"]) if c["rpc"] and x["rpc"] else "–"))
        w("")
    w("## Resources%s" % med_note)
    w("")
    w("| server | RSS idle → peak (sum over processes) | peak PSS (sum) | peak threads | processes "
      "| objects kept | disk used (`du`) | per object kept | apparent size |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in order:
        a = agg[s]
        per = (a["du"] * 1024.0 / a["objects"]) if a["du"] is not None and a["objects"] else None
        w("| %s | %s → %s | %s | %s | %s | %s | %s | %s | %s |" % (
            NAMES.get(s, s), _mb(a["idle_rss"]), _mb(a["rss"]), _mb(a["pss"]), _k(a["threads"]), _k(a["procs"]),
            _k(a["objects"]), _mb(a["du"]), "–" if per is None else "{:,.0f} B".format(per), _mb(a["apparent"])))
    w("")
    w("Objects kept and disk use %s s after the load stopped (the values right at the end are under "
      "\"Every run\"). Objects: carpool the `disk_objects` it reports when its store is reopened after the run "
      "(which also times the index rebuild), nginx the cache files (32-hex names), Squid `Current entries` of "
      "its rock `cache_dir` (cache manager `storedir`). Disk used: `du -sk` of the cache directory, what the "
      "file system allocates (Squid's rock database is a sparse file of the full size: `du` counts the slots "
      "written). Apparent size: `du --apparent-size`." % m["settle_s"])
    w("")
    # Where the CPU went (last round)
    w("## Where each server's CPU went (CPU s per thread group over the windows, last round)")
    w("")
    for s in order:
        ss = [r for r in servers if r["server"] == s]
        if not ss or not ss[-1].get("thread_cpu"):
            continue
        tc = ss[-1]["thread_cpu"]
        parts = ["%s%s: %.1f" % (k, (" ×%d" % v[1]) if v[1] > 1 else "", v[0] / tck)
                 for k, v in sorted(tc.items(), key=lambda kv: -kv[1][0]) if v[0] > 0]
        w("- %s: %s" % (NAMES.get(s, s), "; ".join(parts) or "–"))
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
    w("| round | server | window | requests | req/s | hits | p50 | p99 | cache user / sys s | req/CPU-s "
      "| CPU 0 / CPU 1 busy | origin CPU s | bytes per response | errors (c/r/w/status/timeout) |")
    w("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in windows:
        cpu = (r["utime"] + r["stime"]) / tck
        w("| %d | %s | %d | %s | %s | %s | %.1f ms | %.1f ms | %.2f / %.2f | %s | %s | %.2f | %s | %d/%d/%d/%d/%d%s |" % (
            r["round"], r["server"], r["window"], _k(r["requests"]), _k(r["requests"] / (r["duration_us"] / 1e6)),
            _pct(_hits(r)), r["p50_us"] / 1000.0,
            r["p99_us"] / 1000.0, r["utime"] / tck, r["stime"] / tck, _k(r["requests"] / cpu) if cpu else "–",
            ("%s / %s" % (_pct(r["cpu0_busy"] / r["cpu0_total"]), _pct(r["cpu1_busy"] / r["cpu1_total"])))
            if r["cpu0_total"] and r.get("cpu1_total") else "–", r["origin_ticks"] / tck,
            _k(r["bytes"] / r["requests"]) if r["requests"] else "–",
            r["connect"], r["read"], r["write"], r["status"], r["timeout"], "" if r["alive"] else ", **DIED**"))
    w("")
    w("| round | server | RSS idle / peak | PSS peak | threads idle / peak | objects at end → later | du at end → later "
      "| body check | more |")
    w("|---:|---|---:|---:|---:|---:|---:|---|---|")
    for r in servers:
        w("| %d | %s | %s / %s | %s | %s / %s | %s → %s | %s → %s | %s | %s |" % (
            r["round"], r["server"], _mb(r.get("idle_rss_kb")), _mb(r.get("peak_rss_kb")), _mb(r.get("peak_pss_kb")),
            _k(r.get("idle_threads")), _k(r.get("peak_threads")), _k(r.get("objects_end")), _k(r.get("objects")),
            _mb(r.get("du_kb_end")), _mb(r.get("du_kb")), r.get("check", "–"), r.get("more", "")))
    w("")
    w("Hits: 1 − (requests that reached the origin / requests answered) in the window, from the origin's "
      "request counter (which also counts the requests still in flight when wrk stops: an all-miss window "
      "shows 0%). req/CPU-s: requests / (user + sys CPU of the server's processes, all threads, "
      "from /proc). CPU 0 busy: the share of CPU 0 (the server's core) that was not idle, whoever used it "
      "(the machine is shared), and the part of it the server's processes used; CPU 1 is wrk's and the origin's: when it is "
      "near 100% the load, not the server, may be the limit. Origin CPU: the origin nginx.")
    w("")
    w("Rerun: `%s`" % m["rerun"])
    text = "\n".join(lines) + "\n"
    with open(out, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    return 0


def main(argv):
    cmds = {"origin-count": origin_count, "mem": mem, "watch": watch, "peak": peak, "pids": pids, "threads": threads, "cpustat": cpustat,
            "squid-entries": squid_entries, "check": check, "report": report}
    if len(argv) < 2 or argv[1] not in cmds:
        sys.stderr.write(__doc__)
        return 64
    return cmds[argv[1]](*argv[2:]) or 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except KeyboardInterrupt:
        import signal
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
