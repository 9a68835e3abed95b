"""Turns a results dict into the printed summary, docs/BENCHMARKS.md and the PNG plots."""

import os
import statistics
import subprocess

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PROXIES_FOR_RATIOS = ["haproxy-tcp", "nginx-stream", "nginx-http", "direct"]
# The headline's rows (setups.L4_PROXIES / L7_PROXIES; repeated so --render needs no setups).
L4_ROWS = ["remora", "remora-uring", "remora-auto", "remora-ebpf", "nginx-stream", "haproxy-tcp"]
L4_REF = "haproxy-tcp"
L7_ROWS, L7_REF = ["remora-l7", "nginx-http", "haproxy-http"], "haproxy-http"
L7_SECOND_REF = "nginx-http"
MTLS_A, MTLS_B = "remora-mtls", "haproxy-mtls"  # setups.MTLS_PROXIES
MTLS_GOAL = 1.2
CAP_KA, CAP_CL = ("cap_keepalive", "rps"), ("cap_close", "rps")
MACHINE_KA, MACHINE_CL = ("keepalive", "machine_per_1k"), ("close", "machine_per_1k")


# -- aggregation ------------------------------------------------------------------------------
def _get(d, path):
    for key in path:
        if not isinstance(d, dict) or key not in d or d[key] is None:
            return None
        d = d[key]
    return d


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Results:
    def __init__(self, data):
        self.data = data
        self.rounds = data.get("rounds", [])
        self.setups = data.get("setups", [])

    def label(self, name):
        for s in self.setups:
            if s["name"] == name:
                return s["label"]
        return name

    def values(self, setup, path):
        return [_get(r.get(setup, {}), path) for r in self.rounds]

    def median(self, setup, path):
        return med(self.values(setup, path))

    def added(self, setup, path):
        """Median over rounds of (setup − direct) for a latency, within each round."""
        diffs = []
        for r in self.rounds:
            a, d = _get(r.get(setup, {}), path), _get(r.get("direct", {}), path)
            if a is not None and d is not None:
                diffs.append(a - d)
        return med(diffs)

    def ratio(self, a, b, path):
        """Median over rounds of a/b, both taken from the same round."""
        out = []
        for r in self.rounds:
            x, y = _get(r.get(a, {}), path), _get(r.get(b, {}), path)
            if x is not None and y:
                out.append(x / y)
        return med(out)

    def added_ratio(self, a, b, path):
        out = []
        for r in self.rounds:
            x, y, d = (_get(r.get(s, {}), path) for s in (a, b, "direct"))
            if None not in (x, y, d) and (y - d) > 0:
                out.append((x - d) / (y - d))
        return med(out)

    def available(self):
        return [s for s in self.setups if s["available"]]


# -- formatting -------------------------------------------------------------------------------
def fmt(v, digits=2, unit=""):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if abs(v) >= 1000 and digits <= 2:
        return f"{v:,.0f}{unit}"
    return f"{v:.{digits}f}{unit}"


def table(headers, rows, markdown=False, text_cols=1):
    """A fixed-width text table, or a Markdown one; the first text_cols columns are left-aligned
    text, the rest numbers."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |",
                 "|" + "|".join("---" if i < text_cols else "---:" for i in range(len(headers))) + "|"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in [h] + [r[i] for r in rows]) for i, h in enumerate(headers)]
    out = ["  ".join(str(h).ljust(w) if i == 0 else str(h).rjust(w)
                     for i, (h, w) in enumerate(zip(headers, widths)))]
    out.append("  ".join("-" * w for w in widths))
    for row in rows:
        out.append("  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(out)


def _setup(res, name):
    for s in res.setups:
        if s["name"] == name:
            return s
    return None


def _with_ratio(value, ratio, digits):
    if value is None:
        return "–"
    return f"{fmt(value, digits)} ({fmt(ratio, 2, '×')})"


def headline_rows(res, names, ref, markdown=False):
    """One row per setup in names (those in this run): the capped req/s and the machine-wide
    CPU per 1k requests over direct's, each with its ratio to `ref`, taken within each run."""
    rows = []
    for n in names:
        s = _setup(res, n)
        if s is None:
            continue
        if not s["available"]:
            # The printed summary lists the reasons above its tables; the page says them here.
            rows.append([s["label"], f"not available: {s['reason']}" if markdown
                         else "not available", "", "", ""])
            continue
        rows.append([s["label"],
                     _with_ratio(res.median(n, CAP_KA), res.ratio(n, ref, CAP_KA), 0),
                     _with_ratio(res.median(n, CAP_CL), res.ratio(n, ref, CAP_CL), 0),
                     _with_ratio(res.added(n, MACHINE_KA), res.added_ratio(n, ref, MACHINE_KA), 4),
                     _with_ratio(res.added(n, MACHINE_CL), res.added_ratio(n, ref, MACHINE_CL), 4)])
    return rows


HEADLINE_HDR = ["setup", "capped keep-alive req/s", "capped Connection: close req/s",
                "machine CPU s/1k keep-alive req, − direct", "machine CPU s/1k close req, − direct"]


def headline_tables(res, markdown=False):
    """[(title, table)]: the L4 proxies against HAProxy tcp, the L7 ones against HAProxy http
    (and Remora's L7 row against nginx http too). Empty before any perf run."""
    measured = any(_get(r.get(n, {}), path) is not None for r in res.rounds for n in r
                   for path in (CAP_KA, MACHINE_KA))
    if not measured:
        return []
    out = []
    rows = headline_rows(res, L4_ROWS, L4_REF, markdown)
    if rows:
        out.append((f"L4 proxies; ratios to {res.label(L4_REF)}", table(HEADLINE_HDR, rows, markdown)))
    rows = headline_rows(res, L7_ROWS, L7_REF, markdown)
    if rows:
        t = table(HEADLINE_HDR, rows, markdown)
        a, b = L7_ROWS[0], L7_SECOND_REF
        if _setup(res, a) and _setup(res, b):
            if _avail(res, a) and _avail(res, b):
                cells = [fmt(res.ratio(a, b, CAP_KA), 2, "×"), fmt(res.ratio(a, b, CAP_CL), 2, "×"),
                         fmt(res.added_ratio(a, b, MACHINE_KA), 2, "×"),
                         fmt(res.added_ratio(a, b, MACHINE_CL), 2, "×")]
            else:
                cells = ["not available"] * 4
            t += "\n\n" + table(
                [f"{res.label(a)} ÷ {res.label(b)}"] + HEADLINE_HDR[1:], [["ratio"] + cells],
                markdown)
        out.append((f"L7 (HTTP) proxies; ratios to {res.label(L7_REF)}", t))
    return out


def capped_table(res, markdown=False):
    """Absolute figures of the capped runs, with the evidence that the cap bit."""
    rows = []
    for s in res.setups:
        if not s.get("has_proxy"):
            continue
        n = s["name"]
        if not s["available"]:
            rows.append([s["label"], "not available"] + [""] * 7)
            continue
        procs = res.median(n, ("cap_procs",))
        rows.append([s["label"], fmt(res.median(n, CAP_KA), 0),
                     fmt(res.median(n, ("cap_keepalive", "p99_ms")), 2),
                     fmt(res.median(n, ("cap_keepalive", "throttled_pct")), 0, " %"),
                     fmt(res.median(n, ("cap_keepalive", "cpu_cores")), 3),
                     fmt(res.median(n, CAP_CL), 0), fmt(res.median(n, ("cap_close", "p99_ms")), 2),
                     fmt(res.median(n, ("cap_close", "throttled_pct")), 0, " %"),
                     "–" if procs is None else
                     f"{procs:.0f} of {res.median(n, ('proxy_procs',)) or 0:.0f}"])
    if not any(res.median(s["name"], CAP_KA) is not None for s in res.setups):
        return None
    return table(["setup", "keep-alive req/s", "p99 ms", "periods throttled", "proxy CPUs used",
                  "close req/s", "p99 ms", "periods throttled", "processes in the cgroup"],
                 rows, markdown)


def cap_notes(res):
    """Capped setups whose cap did not bind (throttled in under half the CFS periods): there
    the proxy was not the bottleneck, and the capped req/s says little about it."""
    out = []
    for s in res.setups:
        if not s.get("capped") or not s["available"]:
            continue
        v = res.median(s["name"], ("cap_keepalive", "throttled_pct"))
        if v is not None and v < 50:
            out.append(f"{s['label']}: the cap bit in only {v:.0f} % of CFS periods in the capped "
                       "keep-alive run, so something other than the proxy (the load generator, "
                       "the backends, or other work on the machine) limited it")
    return out


def machine_table(res, markdown=False):
    rows = []
    for s in res.setups:
        n = s["name"]
        if not s["available"]:
            rows.append([s["label"], "not available", "", "", ""])
            continue
        direct = n == "direct"
        rows.append([s["label"], fmt(res.median(n, MACHINE_KA), 4),
                     "0" if direct else fmt(res.added(n, MACHINE_KA), 4),
                     fmt(res.median(n, MACHINE_CL), 4),
                     "0" if direct else fmt(res.added(n, MACHINE_CL), 4)])
    if not any(res.median(s["name"], MACHINE_KA) is not None for s in res.setups):
        return None
    return table(["setup", "keep-alive s/1k req", "− direct", "close s/1k req", "− direct"],
                 rows, markdown)


def perf_tables(res, markdown=False):
    """Keep-alive, Connection: close, and one-connection latency + bulk tables."""
    out = []
    if not res.rounds:
        return out
    rows_ka, rows_cl, rows_lat = [], [], []
    for s in res.setups:
        n, label = s["name"], s["label"]
        if not s["available"]:
            na = "not available"
            rows_ka.append([label, na] + [""] * 4)
            rows_cl.append([label, na] + [""] * 4)
            rows_lat.append([label, na] + [""] * 6)
            continue
        for rows, wl in ((rows_ka, "keepalive"), (rows_cl, "close")):
            rows.append([label, fmt(res.median(n, (wl, "rps")), 0),
                         fmt(res.median(n, (wl, "p50_ms")), 3), fmt(res.median(n, (wl, "p99_ms")), 3),
                         fmt(res.median(n, (wl, "cpu_per_1k")), 4),
                         fmt(_kb_to_mb(res.median(n, ("peak_rss_kb",))), 1)])
        rows_lat.append([label, fmt(res.median(n, ("c1", "p50_ms")), 3),
                         fmt(res.median(n, ("c1", "p99_ms")), 3),
                         fmt(res.added(n, ("c1", "p50_ms")), 3) if n != "direct" else "0",
                         fmt(res.added(n, ("c1", "p99_ms")), 3) if n != "direct" else "0",
                         fmt(res.median(n, ("iperf1_gbps",)), 2),
                         fmt(res.median(n, ("iperfN_gbps",)), 2)])
    meta = res.data["meta"]
    hdr = ["setup", "req/s", "p50 ms", "p99 ms", "proxy CPU s/1k req", "proxy peak RSS MB"]
    out.append(("HTTP/1.1 keep-alive, wrk -t1 -c%d" % meta["conns"], table(hdr, rows_ka, markdown)))
    out.append(("One request per connection (Connection: close), wrk -t1 -c%d" % meta["conns"],
                table(hdr, rows_cl, markdown)))
    out.append((f"Latency at one connection (wrk -c1) and bulk throughput (iperf3, "
                f"1 and {meta['iperf_streams']} streams)",
                table(["setup", "p50 ms", "p99 ms", "+p50 vs direct", "+p99 vs direct",
                       "iperf3 x1 Gbit/s", f"iperf3 x{meta['iperf_streams']} Gbit/s"],
                      rows_lat, markdown)))
    return out


def _kb_to_mb(v):
    return None if v is None else v / 1024


def ratio_table(res, markdown=False):
    if not _avail(res, "remora"):
        return None
    rows = []
    metrics = [("capped keep-alive req/s (¼ CPU)", CAP_KA, "ratio"),
               ("capped Connection: close req/s (¼ CPU)", CAP_CL, "ratio"),
               ("machine CPU per 1k req, − direct (keep-alive)", MACHINE_KA, "added"),
               ("machine CPU per 1k req, − direct (close)", MACHINE_CL, "added"),
               ("keep-alive req/s", ("keepalive", "rps"), "ratio"),
               ("new conn/s (Connection: close)", ("close", "rps"), "ratio"),
               ("proxy CPU per 1k req (keep-alive)", ("keepalive", "cpu_per_1k"), "ratio"),
               ("proxy CPU per 1k req (close)", ("close", "cpu_per_1k"), "ratio"),
               ("added p50 at -c1", ("c1", "p50_ms"), "added"),
               ("added p99 at -c1", ("c1", "p99_ms"), "added"),
               ("iperf3 one stream", ("iperf1_gbps",), "ratio"),
               ("iperf3 parallel", ("iperfN_gbps",), "ratio")]
    peers = [p for p in PROXIES_FOR_RATIOS if _avail(res, p)]
    for title, path, kind in metrics:
        row = [title]
        for p in peers:
            if kind == "added":
                v = None if p == "direct" else res.added_ratio("remora", p, path)
            else:
                v = res.ratio("remora", p, path)
                if p == "direct" and path[-1] == "cpu_per_1k":
                    v = None
            row.append(fmt(v, 2, "×"))
        rows.append(row)
    return table(["Remora ÷"] + [res.label(p) for p in peers], rows, markdown)


def mtls_rows(res):
    """Issue 14 §7: Remora's two sidecars against HAProxy's two, side by side. Each row:
    [figure, Remora, HAProxy, Remora ÷ HAProxy (median of per-run ratios), goal, verdict]. For
    CPU the goal ≥ 1.2 × better is Remora ÷ HAProxy ≤ 1/1.2. None when either did not run."""
    if not (_avail(res, MTLS_A) and _avail(res, MTLS_B)):
        return None
    rows = []
    figures = [("capped keep-alive req/s (¼ CPU per sidecar)", CAP_KA, 0, "ratio", True),
               ("capped new TLS handshakes/s (Connection: close, ¼ CPU per sidecar)", CAP_CL, 0,
                "ratio", True),
               ("machine CPU s/1k keep-alive req, − direct", MACHINE_KA, 4, "added", True),
               ("machine CPU s/1k keep-alive req", MACHINE_KA, 4, "ratio", False),
               ("machine CPU s/1k close req (a handshake each), − direct", MACHINE_CL, 4, "added",
                False),
               ("keep-alive req/s (uncapped)", ("keepalive", "rps"), 0, "ratio", False),
               ("new TLS handshakes/s (Connection: close, uncapped)", ("close", "rps"), 0, "ratio",
                False),
               ("both sidecars' CPU s/1k keep-alive req", ("keepalive", "cpu_per_1k"), 4, "ratio",
                False),
               ("both sidecars' CPU s/1k close req", ("close", "cpu_per_1k"), 4, "ratio", False)]
    for title, path, digits, kind, goal in figures:
        cpu = "cpu" in path[-1] or "machine" in path[-1]
        if kind == "added":
            a, b = res.added(MTLS_A, path), res.added(MTLS_B, path)
            v = res.added_ratio(MTLS_A, MTLS_B, path)
        else:
            a, b = res.median(MTLS_A, path), res.median(MTLS_B, path)
            v = res.ratio(MTLS_A, MTLS_B, path)
        want, verdict = "", ""
        if goal:
            want = f"≤ {1 / MTLS_GOAL:.2f}×" if cpu else f"≥ {MTLS_GOAL:.2f}×"
            ok = v is not None and (v <= 1 / MTLS_GOAL if cpu else v >= MTLS_GOAL)
            verdict = "not measured" if v is None else ("met" if ok else "NOT met")
        rows.append([title, fmt(a, digits), fmt(b, digits), fmt(v, 2, "×"), want, verdict])
    return rows


def mtls_table(res, markdown=False):
    rows = mtls_rows(res)
    if rows is None:
        return None
    return table(["figure", res.label(MTLS_A), res.label(MTLS_B), "Remora ÷ HAProxy", "goal",
                  "verdict"], rows, markdown)


def _avail(res, name):
    return any(s["name"] == name and s["available"] for s in res.setups)


def weights_table(res, markdown=False):
    w = res.data.get("weights") or {}
    rows = []
    for name in ("remora", "kube-proxy"):
        runs = w.get(name)
        if runs is None:
            continue
        if isinstance(runs, str):
            rows.append([res.label(name), runs, "", "", "", ""])
            continue
        for n in sorted({k for r in runs for k in r}, key=int):
            vals = [r[n] for r in runs if n in r]
            rows.append([f"{res.label(name)} ({'90/10 VirtualService' if name == 'remora' else '--probability 0.9'})",
                         f"{int(n):,}", fmt(med([v['v2_pct'] for v in vals]), 2) + " %",
                         fmt(med([v['dev_pp'] for v in vals]), 2) + " pp",
                         fmt(med([v['chi2'] for v in vals]), 2),
                         fmt(med([v['p'] for v in vals]), 3)])
    if not rows:
        return None
    return table(["setup", "connections", "v2 share (want 10 %)", "abs. deviation", "chi-square",
                  "p-value"], rows, markdown)


def scaling_table(res, markdown=False):
    sc = res.data.get("scaling") or {}
    kube, rem = sc.get("kube-proxy") or {}, sc.get("remora")
    ns = sorted(set(kube) | (set(rem) if isinstance(rem, dict) else set()), key=int)
    if not ns:
        return None
    rows = []
    for n in ns:
        k = kube.get(n) or []
        row = [f"{int(n):,}", fmt(med([x["restore_s"] for x in k]) and med([x["restore_s"] for x in k]) * 1e3, 1),
               fmt(med([x["connect_ms"] for x in k]), 3), fmt(med([x["first_response_ms"] for x in k]), 3)]
        if isinstance(rem, dict) and rem.get(n):
            r = rem[n]
            row += [fmt(_ms(med([x["load_s"] for x in r])), 1), fmt(_ms(med([x["reload_s"] for x in r])), 1),
                    fmt(med([x["connect_ms"] for x in r]), 3), fmt(med([x["first_response_ms"] for x in r]), 3)]
        else:
            row += ["not available"] + [""] * 3
        rows.append(row)
    return table(["Services", "kube: iptables-restore ms", "kube: connect ms", "kube: 1st response ms",
                  "Remora: start→serving ms", "Remora: reload +1 ms", "Remora: connect ms",
                  "Remora: 1st response ms"], rows, markdown)


def _ms(v):
    return None if v is None else v * 1e3


def memory_table(res, markdown=False):
    mem = res.data.get("memory") or {}
    if not mem:
        return None
    counts = res.data["meta"].get("idle_counts", [])
    rows = []
    for s in res.setups:
        # Older results have no "memory" key: every proxy but HAProxy http was measured then.
        if not s.get("memory", s.get("has_proxy") and s["name"] != "haproxy-http"):
            continue
        runs = mem.get(s["name"])
        if runs is None or isinstance(runs, str):
            rows.append([s["label"], "not available"] + [""] * (2 * len(counts)))
            continue
        row = [s["label"], fmt(_kb_to_mb(med([r.get("idle_kb") for r in runs])), 2)]
        for c in counts:
            row.append(fmt(_kb_to_mb(med([_get(r, (str(c), "rss_kb")) for r in runs])), 1))
            row.append(fmt(_kb(med([_get(r, (str(c), "per_conn_bytes")) for r in runs])), 1))
        rows.append(row)
    if not rows:
        return None
    hdr = ["proxy", "idle RSS MB"]
    for c in counts:
        hdr += [f"RSS with {c:,} idle MB", f"KB per conn ({c:,})"]
    return table(hdr, rows, markdown)


def _kb(v):
    return None if v is None else v / 1024


# -- goals (issue 5 and issue 3 §7) -------------------------------------------------------------
def goals(res):
    """[(goal, measured, verdict)]; verdict is 'met', 'NOT met' or 'not measured'."""
    out = []

    def add(goal, value, ok, shown):
        if value is None:
            out.append((goal, "not measured", "not measured"))
        else:
            out.append((goal, shown, "met" if ok else "NOT met"))

    r = lambda b, path: res.ratio("remora", b, path)  # noqa: E731
    # Issue 12 §4, against HAProxy tcp in the same run.
    v = r("haproxy-tcp", CAP_KA)
    add("capped keep-alive req/s ≥ 1.5 × HAProxy tcp (issue 12)", v, v is not None and v >= 1.5,
        fmt(v, 2, "×"))
    v = res.added_ratio("remora", "haproxy-tcp", MACHINE_KA)
    add("machine CPU per 1k keep-alive req (− direct) ≤ 0.6 × HAProxy tcp's (issue 12)", v,
        v is not None and v <= 0.6, fmt(v, 2, "×"))
    for key, what, want in (("iperf1_gbps", "one stream", 0.95), ("iperfN_gbps", "four streams", 0.9)):
        v = r("direct", (key,))
        add(f"bulk, {what} ≥ {want:g} × direct (issue 12)", v, v is not None and v >= want,
            fmt(v, 2, "×"))
    v = res.added_ratio("remora", "haproxy-tcp", ("c1", "p50_ms"))
    add("added p50 at one connection ≤ 0.7 × HAProxy tcp's (issue 12)", v,
        v is not None and v <= 0.7, fmt(v, 2, "×"))
    v = r("haproxy-tcp", CAP_CL)
    add("capped Connection: close req/s ≥ 1.2 × HAProxy tcp (issue 12)", v,
        v is not None and v >= 1.2, fmt(v, 2, "×"))
    for peer in ("haproxy-tcp", "nginx-stream", "nginx-http"):
        v = r(peer, ("keepalive", "rps"))
        add(f"keep-alive req/s ≥ 1.2 × {res.label(peer)}", v, v is not None and v >= 1.2, fmt(v, 2, "×"))
    v = r("haproxy-tcp", ("close", "rps"))
    add("new conn/s ≥ 1.2 × HAProxy (issue 3 §7)", v, v is not None and v >= 1.2, fmt(v, 2, "×"))
    v = res.added_ratio("remora", "haproxy-tcp", ("c1", "p50_ms"))
    add("added p50 latency (-c1) ≤ 1.0 × HAProxy's", v, v is not None and v <= 1.0, fmt(v, 2, "×"))
    v = r("haproxy-tcp", ("keepalive", "cpu_per_1k"))
    add("proxy CPU per 1k requests ≤ 0.8 × HAProxy's", v, v is not None and v <= 0.8, fmt(v, 2, "×"))
    for key, what in (("iperf1_gbps", "one stream"), ("iperfN_gbps", "parallel streams")):
        v = r("direct", (key,))
        add(f"bulk throughput ({what}) ≥ 0.8 × direct", v, v is not None and v >= 0.8, fmt(v, 2, "×"))
    for row in mtls_rows(res) or []:
        if row[4]:
            out.append((f"mTLS: {row[0]} {row[4]} HAProxy mTLS's (issue 14 §7)", row[3],
                        row[5]))
    w = (res.data.get("weights") or {}).get("remora")
    if isinstance(w, list):
        v = med([x["10000"]["dev_pp"] for x in w if "10000" in x])
        add("weight deviation at 10,000 connections ≤ 0.1 pp", v, v is not None and v <= 0.1,
            fmt(v, 3, " pp"))
    else:
        add("weight deviation at 10,000 connections ≤ 0.1 pp", None, False, "")
    sc = (res.data.get("scaling") or {})
    rem, kube = sc.get("remora"), sc.get("kube-proxy") or {}
    if isinstance(rem, dict) and rem:
        ns = sorted(rem, key=int)
        lo, hi = (med([x["first_response_ms"] for x in rem[n]]) for n in (ns[0], ns[-1]))
        v = hi / lo if lo else None
        kns = sorted(kube, key=int)
        kg = None
        if kns:
            klo, khi = (med([x["first_response_ms"] for x in kube[n]]) for n in (kns[0], kns[-1]))
            kg = khi / klo if klo else None
        add(f"connect latency flat (±10 %) from {int(ns[0]):,} to {int(ns[-1]):,} Services",
            v, v is not None and 0.9 <= v <= 1.1,
            f"{fmt(v, 2, '×')} (kube-proxy chains: {fmt(kg, 2, '×')})")
        v = med([x["reload_s"] for x in rem[ns[-1]]])
        add(f"reload adding 1 Service among {int(ns[-1]):,} ≤ 100 ms (issue 3)", v,
            v is not None and v <= 0.1, fmt(_ms(v), 1, " ms"))
    else:
        add("connect latency flat (±10 %) from 1 to 10k Services", None, False, "")
    mem = (res.data.get("memory") or {}).get("remora")
    if isinstance(mem, list):
        v = med([x.get("idle_kb") for x in mem])
        add("idle RSS ≤ 8 MB with the seed config (issue 3 §7)", v, v is not None and v <= 8192,
            fmt(_kb_to_mb(v), 2, " MB"))
        for c in res.data["meta"].get("idle_counts", []):
            v = med([_get(x, (str(c), "per_conn_bytes")) for x in mem])
            add(f"memory per idle proxied connection ≤ 16 KB ({c:,} open, issue 3 §7)", v,
                v is not None and v <= 16384, fmt(_kb(v), 1, " KB"))
    else:
        add("idle RSS ≤ 8 MB; ≤ 16 KB per idle connection (issue 3 §7)", None, False, "")
    return out


def issue3_figures(res):
    """Issue 3 §7's figures, beside HAProxy's, for the proxy's closing note."""
    rows = []
    if not _avail(res, "remora"):
        return None
    for title, path in (("keep-alive req/s", ("keepalive", "rps")),
                        ("new conn/s (1 request per connection)", ("close", "rps"))):
        rows.append([title, fmt(res.median("remora", path), 0), fmt(res.median("haproxy-tcp", path), 0),
                     fmt(res.ratio("remora", "haproxy-tcp", path), 2, "×"), "≥ 1.20×"])
    for title, key in (("iperf3 Gbit/s, one stream", "iperf1_gbps"),
                       ("iperf3 Gbit/s, parallel", "iperfN_gbps")):
        rows.append([title + " (vs direct)", fmt(res.median("remora", (key,)), 2),
                     fmt(res.median("direct", (key,)), 2) + " (direct)",
                     fmt(res.ratio("remora", "direct", (key,)), 2, "×"), "≥ 0.80×"])
    mem = res.data.get("memory") or {}
    rm, hm = mem.get("remora"), mem.get("haproxy-tcp")
    if isinstance(rm, list):
        hidle = med([x.get("idle_kb") for x in hm]) if isinstance(hm, list) else None
        rows.append(["idle RSS MB (seed config)", fmt(_kb_to_mb(med([x.get("idle_kb") for x in rm])), 2),
                     fmt(_kb_to_mb(hidle), 2), "", "≤ 8 MB"])
        for c in res.data["meta"].get("idle_counts", []):
            hv = med([_get(x, (str(c), "per_conn_bytes")) for x in hm]) if isinstance(hm, list) else None
            rows.append([f"KB per idle connection ({c:,} open)",
                         fmt(_kb(med([_get(x, (str(c), "per_conn_bytes")) for x in rm])), 1),
                         fmt(_kb(hv), 1), "", "≤ 16 KB"])
    return table(["figure", "Remora", "HAProxy tcp", "ratio", "goal"], rows, True)


# -- printed summary --------------------------------------------------------------------------
def summary_text(res):
    parts = []
    meta = res.data["meta"]
    parts.append(f"Machine: {meta['machine']}")
    parts.append(f"Pinning: {meta['pinning']}")
    parts.append(f"Interception for the sidecar setups: {meta.get('interception')}")
    if meta.get("note"):
        parts.append(f"Note: {meta['note']}")
    parts.append(f"CPU cap: {meta.get('cap', 'not measured')}")
    parts.append(f"Runs: {meta['runs']} (medians; ratios taken within each run)")
    for s in res.setups:
        if not s["available"]:
            parts.append(f"Not available: {s['label']}: {s['reason']}")
    for title, t in headline_tables(res):
        parts += ["", "Headline: " + title, t]
    for title, fn in (("Capped at a quarter CPU (cgroup cpu quota)", capped_table),
                      ("Machine-wide CPU per 1,000 requests (/proc/stat busy time)", machine_table)):
        t = fn(res)
        if t:
            parts += ["", title, t]
    perf = perf_tables(res)
    for title, t in perf:
        parts += ["", title, t]
    if not perf:
        parts += ["", "Throughput and latency: not measured"]
    t = mtls_table(res)
    if t:
        parts += ["", "mTLS between two sidecars (issue 14 §7): Remora ÷ HAProxy", t]
    rt = ratio_table(res)
    parts += ["", "Ratios (Remora ÷ peer, median of per-run ratios)", rt or
              "Remora: not available — " + _reason(res, "remora")]
    for title, fn in (("Weight accuracy (configured 90/10)", weights_table),
                      ("Scaling with Services", scaling_table),
                      ("Memory (RSS of the proxy's processes)", memory_table)):
        t = fn(res)
        parts += ["", title, t or "not measured"]
    for note in meta.get("notes", []) + cap_notes(res):
        parts.append(f"NOTE: {note}")
    g = goals(res)
    parts += ["", "Goals", table(["goal", "measured", "verdict"], [list(x) for x in g])]
    for e in res.data.get("errors", []):
        parts.append(f"ERROR: {e}")
    return "\n".join(parts)


def _reason(res, name):
    for s in res.setups:
        if s["name"] == name:
            return s.get("reason") or "failed (see errors)"
    return "not in this run"


# -- plots --------------------------------------------------------------------------------------
def _write_dat(path, header, rows):
    with open(path, "w") as f:
        f.write("\t".join(f'"{h}"' for h in header) + "\n")
        for r in rows:
            f.write("\t".join(f'"{c}"' if isinstance(c, str) else ("NaN" if c is None else f"{c:g}")
                              for c in r) + "\n")


def plots(res, out_dir):
    """Writes the .dat files and PNGs into out_dir; returns the PNG names made."""
    os.makedirs(out_dir, exist_ok=True)
    avail = [s for s in res.available()]
    made = []

    def gp(name, **params):
        args = ["gnuplot"]
        for k, v in params.items():
            args += ["-e", f"{k}='{v}'"]
        args.append(os.path.join(BENCH_DIR, "plots.gp"))
        cp = subprocess.run(args, capture_output=True, text=True, cwd=out_dir)
        if cp.returncode == 0 and os.path.exists(os.path.join(out_dir, name)):
            made.append(name)
        else:
            print(f"plot {name} failed: {cp.stderr.strip()[:300]}")

    rows = [[s["label"], res.median(s["name"], ("keepalive", "rps")),
             res.median(s["name"], ("close", "rps"))] for s in avail]
    _write_dat(os.path.join(out_dir, "rps.dat"), ["setup", "keep-alive", "Connection: close"], rows)
    gp("rps.png", kind="hist", data="rps.dat", out="rps.png", ncols="2",
       title="HTTP requests per second (higher is better)", ylabel="requests/s")

    rows = [[s["label"], res.median(s["name"], CAP_KA), res.median(s["name"], CAP_CL)]
            for s in avail if s.get("capped")]
    if rows:
        _write_dat(os.path.join(out_dir, "capped.dat"), ["setup", "keep-alive", "Connection: close"],
                   rows)
        gp("capped.png", kind="hist", data="capped.dat", out="capped.png", ncols="2",
           title="HTTP requests per second, proxy capped at 0.25 CPU (higher is better)",
           ylabel="requests/s")

    rows = [[s["label"], res.median(s["name"], ("c1", "p50_ms")), res.median(s["name"], ("c1", "p99_ms")),
             res.median(s["name"], ("keepalive", "p50_ms")), res.median(s["name"], ("keepalive", "p99_ms"))]
            for s in avail]
    _write_dat(os.path.join(out_dir, "latency.dat"),
               ["setup", "p50 -c1", "p99 -c1", f"p50 -c{res.data['meta']['conns']}",
                f"p99 -c{res.data['meta']['conns']}"], rows)
    gp("latency.png", kind="hist", data="latency.dat", out="latency.png", ncols="4",
       title="Request latency percentiles (lower is better; log scale)", ylabel="ms", logy="1")

    rows = [[s["label"], res.median(s["name"], ("iperf1_gbps",)), res.median(s["name"], ("iperfN_gbps",))]
            for s in avail if s.get("supports_iperf")]
    _write_dat(os.path.join(out_dir, "throughput.dat"),
               ["setup", "1 stream", f"{res.data['meta']['iperf_streams']} streams"], rows)
    gp("throughput.png", kind="hist", data="throughput.dat", out="throughput.png", ncols="2",
       title="iperf3 bulk throughput (higher is better)", ylabel="Gbit/s")

    sc = res.data.get("scaling") or {}
    kube, rem = sc.get("kube-proxy") or {}, sc.get("remora")
    rem = rem if isinstance(rem, dict) else {}
    ns = sorted(set(kube) | set(rem), key=int)
    if ns:
        rows = []
        for n in ns:
            k, r = kube.get(n) or [], rem.get(n) or []
            rows.append([int(n), med([x["first_response_ms"] for x in k]),
                         med([x["first_response_ms"] for x in r]),
                         med([x["connect_ms"] for x in k]), med([x["connect_ms"] for x in r])])
        _write_dat(os.path.join(out_dir, "scaling.dat"),
                   ["services", "kube-proxy chains: connect + 1st response",
                    "Remora: connect + 1st response", "kube-proxy chains: TCP connect",
                    "Remora: TCP connect"], rows)
        gp("scaling.png", kind="lines", data="scaling.dat", out="scaling.png", ncols="4",
           title="Latency to the last Service vs number of Services", ylabel="ms")
        rows = [[int(n), _ms(med([x["restore_s"] for x in kube.get(n) or []])),
                 _ms(med([x["load_s"] for x in rem.get(n) or []])),
                 _ms(med([x["reload_s"] for x in rem.get(n) or []]))] for n in ns]
        _write_dat(os.path.join(out_dir, "programming.dat"),
                   ["services", "kube-proxy chains: iptables-restore", "Remora: start to serving",
                    "Remora: reload adding one Service"], rows)
        gp("programming.png", kind="lines", data="programming.dat", out="programming.png", ncols="3",
           title="Time to program N Services", ylabel="ms", logy="1")
    return made


def headline(res):
    """One line per headline ratio, for the README to quote."""
    if not _avail(res, "remora") or not res.rounds:
        return []
    out = []
    for peer in ("haproxy-tcp", "nginx-stream", "nginx-http"):
        v = res.ratio("remora", peer, ("keepalive", "rps"))
        if v is not None:
            out.append(f"keep-alive requests/s: {fmt(v, 2, '×')} {res.label(peer)}")
    v = res.ratio("remora", "haproxy-tcp", ("close", "rps"))
    if v is not None:
        out.append(f"new connections/s: {fmt(v, 2, '×')} HAProxy tcp")
    v = res.ratio("remora", "haproxy-tcp", ("keepalive", "cpu_per_1k"))
    if v is not None:
        out.append(f"proxy CPU per 1,000 requests: {fmt(v, 2, '×')} HAProxy tcp's")
    v = res.added("remora", ("c1", "p50_ms"))
    if v is not None:
        out.append(f"added p50 latency at one connection: {fmt(v * 1000, 0)} µs "
                   f"(HAProxy tcp: {fmt((res.added('haproxy-tcp', ('c1', 'p50_ms')) or 0) * 1000, 0)} µs)")
    v = res.ratio("remora", "direct", ("iperf1_gbps",))
    if v is not None:
        out.append(f"bulk throughput: {fmt(v, 2, '×')} a direct connection")
    w = (res.data.get("weights") or {}).get("remora")
    if isinstance(w, list) and w:
        v = med([x["10000"]["dev_pp"] for x in w if "10000" in x])
        k = (res.data.get("weights") or {}).get("kube-proxy") or []
        kv = med([x["10000"]["dev_pp"] for x in k if "10000" in x])
        if v is not None:
            out.append(f"90/10 split over 10,000 connections: off by {fmt(v, 2)} points "
                       f"(kube-proxy-shaped chains: {fmt(kv, 2)})")
    return out


# -- docs/BENCHMARKS.md -----------------------------------------------------------------------
def markdown(res, plot_names, plot_rel="bench"):
    meta = res.data["meta"]
    md = ["# Remora benchmarks", "",
          "<!-- Written by scripts/bench.sh from its latest full run; do not edit by hand. -->", "",
          f"Produced by `{meta['command']}` at commit `{meta['commit']}` on {meta['date']}, "
          f"in {meta['elapsed_s'] / 60:.1f} minutes.", ""]
    if meta.get("note"):
        md += [f"**Note:** {meta['note']}", ""]
    md += ["## Headline", "",
          "Each proxy capped at a quarter of a CPU (a sidecar with a 250m CPU limit), and the "
          "CPU the whole machine spent per 1,000 requests beyond what the same requests cost "
          "direct (softirq included). In brackets: the ratio to the row's reference, computed "
          "within each run, median over runs. Higher req/s and lower CPU are better.", ""]
    heads = headline_tables(res, True)
    for title, t in heads:
        md += [f"### {title}", "", t, ""]
    if not heads:
        md += ["Not measured in this run: it has neither the capped nor the machine-wide "
               "figures (" + ("throughput was skipped" if not res.rounds else
                              "it predates them; the next full run of scripts/bench.sh fills "
                              "them in") + ").", ""]
    md += ["### Uncapped (Remora, iptables mode, one worker)", ""]
    hl = headline(res)
    md += [f"- {h}" for h in hl] if hl else [
        f"Remora did not run: {_reason(res, 'remora')}."]
    md += ["", "## Machine and method", "",
          f"- **Machine:** {meta['machine']}",
          f"- **Software:** {meta['versions']}",
          "- **Topology:** DESIGN.md's isolated world: a node namespace with a bridge "
          "(10.244.0.1/16, no link to the root namespace, no forwarding) and one namespace per pod "
          "on a veth pair. Backends: bill-service-v1 (10.244.1.168) and bill-service-v2 "
          "(10.244.2.74), Debian's nginx with one worker returning the seed's strings; an iperf3 "
          "server in bill-service-v1.",
          f"- **Pinning:** {meta['pinning']}",
          f"- **Interception for the sidecar setups:** {meta.get('interception')}",
          f"- **Runs:** {meta['runs']}; every figure is the median over runs, and the setups take "
          "turns inside each run (the starting setup rotates). Ratios are computed within each "
          "run, then their median is shown.",
          f"- **Workloads:** wrk -t1 -c{meta['conns']} for {meta['wrk_s']} s (keep-alive, then "
          f"`Connection: close`), wrk -t1 -c1 for {meta['c1_s']} s, iperf3 for {meta['iperf_s']} s "
          f"with 1 and {meta['iperf_streams']} streams. Proxy CPU is utime+stime of the proxy's "
          "processes from /proc over the wrk run, divided by the requests wrk completed; RSS is "
          "VmRSS (peak: VmHWM) summed over the proxy's processes (nginx: master + worker).",
          "- **Capped throughput:** not measured in this run." if "cap_s" not in meta else
          f"- **Capped throughput:** {meta['cap']}. Every proxy start gets its "
          "own cgroup; the proxy is placed in it between fork and exec, so its threads and "
          "children (nginx's worker) are born inside, and the harness checks before each capped "
          "run that every process of the proxy is in it. The quota is off for the uncapped "
          f"figures and on for two more wrk -t1 -c{meta['conns']} runs of {meta.get('cap_s')} s "
          "(keep-alive, `Connection: close`); the proxy is then the bottleneck, and the share of "
          "CFS periods in which it was throttled is shown as evidence. Softirq work done on the "
          "proxy's behalf is not charged to its cgroup, which is why the machine-wide figure "
          "stands beside it.",
          "- **Machine-wide CPU per 1,000 requests:** the busy time of the whole machine over each "
          "wrk run from /proc/stat (user + nice + system + irq + softirq; idle, iowait and steal "
          "excluded), divided by the requests completed, minus the same figure of the direct "
          "setup in the same run. It counts the client, backends, kernel and proxy, so work a "
          "design pushes into softirq is not hidden; anything else running on the machine "
          "counts too, so it is only meaningful on an otherwise idle machine.",
          ""]
    md += ["### Setups", "", table(["setup", "path", "status"],
                                   [[s["label"], s["note"], "ran" if s["available"] else
                                     f"not available: {s['reason']}"] for s in res.setups], True, 3), ""]
    md += ["### Tuning (the same for every setup)", ""]
    md += [f"- {t}" for t in meta["tuning"]]
    md += [""]
    md += ["## Results", ""]
    t = capped_table(res, True)
    if t:
        md += [f"### Capped at a quarter CPU, wrk -t1 -c{meta['conns']}", "",
               "Proxy CPUs used: the proxy's utime+stime over the run ÷ wall time (at most 0.25 "
               "when the cap holds). Periods throttled: CFS periods in which the cgroup ran out "
               "of quota ÷ periods in which it ran.", "", t, ""]
    if "capped.png" in plot_names:
        md += [f"![Capped requests per second]({plot_rel}/capped.png)", ""]
    t = machine_table(res, True)
    if t:
        md += ["### Machine-wide CPU per 1,000 requests (uncapped runs)", "", t, ""]
    for title, t in perf_tables(res, True):
        md += [f"### {title}", "", t, ""]
    for name, cap in (("rps.png", "Requests per second"), ("latency.png", "Latency percentiles"),
                      ("throughput.png", "Bulk throughput")):
        if name in plot_names:
            md += [f"![{cap}]({plot_rel}/{name})", ""]
    t = mtls_table(res, True)
    if t:
        md += ["### mTLS between two sidecars (issue 14 §7)", "",
               "A client pod and a server pod, each with interception and its own sidecar: "
               "Remora's pair (auto mTLS out, PeerAuthentication STRICT in) against HAProxy's "
               "pair (`server … ssl verify required crt … ca-file …` out, `bind … ssl crt … "
               "verify required ca-file …` in), TLS 1.3 on both, certificates made with the "
               "openssl CLI from a test CA at setup (EC P-256). Each sidecar has its own "
               "quarter-CPU cgroup. A `Connection: close` request is one new client "
               "connection, so one new TLS connection between the sidecars: its req/s is the "
               "handshake rate (both pairs resume TLS sessions, as they do by default). Ratios "
               "are within each run, median over runs.", "", t, ""]
    rt = ratio_table(res, True)
    md += ["### Ratios (Remora ÷ peer)", "", rt or
           f"Remora: not available — {_reason(res, 'remora')}.", ""]
    t = weights_table(res, True)
    md += ["### Weight accuracy (configured 90/10)", "",
           "Sequential connections, one request each, counted by which backend answered. "
           "kube-proxy-shaped chains can only weight with `--probability 0.9`; the chi-square "
           "is against 90/10 (df = 1).", "", t or "not measured", ""]
    t = scaling_table(res, True)
    md += ["### Scaling with Services", "",
           "kube-proxy chains: the full ruleset (one KUBE-SERVICES rule, one KUBE-SVC chain and two "
           "KUBE-SEP chains per Service) restored with `iptables-restore --noflush` into a fresh "
           "pod netns, then fresh connections to the last Service, whose first packet walks all of "
           "KUBE-SERVICES. Remora: the same Services in its YAML; start → first response through "
           "the last Service, the same connections, and a reload that adds one Service (file "
           "replaced by rename, as a ConfigMap update does) → first response through the new "
           "Service.", "", t or "not measured", ""]
    for name, cap in (("scaling.png", "Latency vs Services"), ("programming.png", "Programming time")):
        if name in plot_names:
            md += [f"![{cap}]({plot_rel}/{name})", ""]
    t = memory_table(res, True)
    md += ["### Memory", "",
           f"Idle connections are opened through the proxy and left silent; KB per connection is "
           f"(RSS with N open − idle RSS) / N. An L4 proxy (Remora, HAProxy tcp, nginx stream) "
           f"connects upstream at once, so each idle connection holds two sockets; nginx http "
           f"connects upstream only when a request arrives, so it holds one. RSS is the proxy's "
           f"own memory; kernel socket buffers are not in it, for any proxy. "
           f"{meta.get('idle_note', '')}", "", t or "not measured", ""]
    t = issue3_figures(res)
    if t:
        md += ["### The proxy's own figures (issue 3 §7)", "", t, ""]
    md += ["## Goals", "", table(["goal", "measured", "verdict"], [list(x) for x in goals(res)], True, 3),
           ""]
    short = [g for g in goals(res) if g[2] != "met"]
    md += ["## Where Remora falls short", ""]
    if short:
        md += [f"- {g[0]}: {g[1]} ({g[2]})." for g in short]
        md += ["", "The bottleneck analysis (perf, strace -c, io_uring stats) belongs in the "
               "closing note of the run that produced this page."]
    else:
        md += ["Every goal above is met in this run."]
    notes = meta.get("notes", []) + cap_notes(res)
    if notes:
        md += ["", "## Notes on this run", ""] + [f"- {n}" for n in notes]
    if res.data.get("errors"):
        md += ["", "## Errors during the run", ""] + [f"- {e}" for e in res.data["errors"]]
    md += ["", "## Reproduce", "", "```", meta["command"], "```", "",
           "Raw numbers: [bench/results.json](bench/results.json).", ""]
    return "\n".join(md)
