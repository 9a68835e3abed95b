#!/usr/bin/python3
"""Remora's benchmark harness (issue 5). Started by scripts/bench.sh, which owns the cleanup trap;
see `scripts/bench.sh --help`. Python standard library only."""

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cpucap  # noqa: E402
import experiments  # noqa: E402
import report  # noqa: E402
import setups as setups_mod  # noqa: E402
from experiments import log  # noqa: E402
from world import BenchError, World, nofile_hard_limit, run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROFILES = {
    # name: durations in seconds and counts; --quick is the CI smoke test (≤ 3 minutes).
    "full": dict(runs=3, conns=32, wrk_s=6, c1_s=5, cap_s=6, iperf_s=4, iperf_streams=4,
                 weight_counts=[1000, 10000], scaling_ns=[1, 1000, 5000, 10000], samples=100,
                 idle_counts=[1000, 10000], budget_s=19 * 60, memory_s=10),
    "quick": dict(runs=1, conns=32, wrk_s=2, c1_s=1, cap_s=1, iperf_s=1, iperf_streams=4,
                  weight_counts=[1000, 10000], scaling_ns=[1, 1000], samples=20,
                  idle_counts=[1000, 2000], budget_s=170, memory_s=5),
}

TUNING = [
    "Each pod netns: `net.ipv4.ip_local_port_range=1024 65000` with the mesh's ports "
    "reserved (`net.ipv4.ip_local_reserved_ports=15000-15090`), `net.ipv4.tcp_tw_reuse=1`, "
    "`net.core.somaxconn=4096`, `net.netfilter.nf_conntrack_tcp_timeout_time_wait=5` (tens of "
    "thousands of short connections per run without running out of ports or conntrack entries).",
    "Backends (test/bench/nginx-backend.conf): 1 worker, `keepalive_requests 1000000` (so "
    "keep-alive runs never reconnect), no access log.",
    "HAProxy (test/bench/haproxy-tcp.cfg): `nbthread 1`, `mode tcp`, `balance roundrobin` with "
    "weights 90/10, default `tune.bufsize` (16 KB), no logging; `maxconn 9980` (RLIMIT_NOFILE).",
    "HAProxy http (test/bench/haproxy-http.cfg): as HAProxy tcp but `mode http`, "
    "`option http-keep-alive` and `http-reuse always` (upstream connections reused across "
    "requests, as an L7 sidecar's pool would).",
    "nginx stream (test/bench/nginx-stream.conf): 1 worker, weights 90/10, default "
    "`proxy_buffer_size` (16 KB), no logging.",
    "nginx http (test/bench/nginx-http.conf): 1 worker, weights 90/10, upstream `keepalive 64` "
    "with HTTP/1.1 and `Connection \"\"` (upstream reuse even when the client sends "
    "`Connection: close`), default buffers, `access_log off`.",
    "Remora: the seed config unchanged (test/fixtures/seed/seed.yaml + istio-90-10.yaml) plus a "
    "single-endpoint Service for iperf3 (test/bench/remora-iperf.yaml); `--concurrency 1`, "
    "`--log-level error`, every other flag at its default.",
    "HAProxy and nginx see every redirected connection on 15001 and balance to the bill-service "
    "pods without looking at the original destination; for iperf3 they are restarted with a "
    "config pointing at the iperf3 server (…-iperf.cfg/.conf). Remora routes both by original "
    "destination from one config.",
    "mTLS rows (test/bench/remora-mtls.yaml, haproxy-mtls-client.cfg, haproxy-mtls-server.cfg): "
    "their own two pods (front-mtls 10.244.3.14, bill-mtls 10.244.4.10 with nginx), remora-init's "
    "rules in both; each pod's sidecar pinned like the other proxies, in a cgroup of its own "
    "(capped runs: a quarter CPU each). TLS 1.3 only on both pairs, default ciphersuites and "
    "session resumption; Remora also checks the peer's SPIFFE ID, HAProxy the chain only.",
    "Every proxy runs as uid 1337 (the loop breaker of the REDIRECT rules) with "
    "RLIMIT_NOFILE = the machine's hard limit.",
]


def describe(e):
    return str(e) if isinstance(e, BenchError) else f"{type(e).__name__}: {e}"


def machine_description():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    virt = run(["systemd-detect-virt"], check=False).stdout.strip() if shutil.which(
        "systemd-detect-virt") else ""
    return (f"{model}, {os.cpu_count()} cores, {mem_gb:.0f} GiB RAM, Linux {platform.release()}"
            + (f", virtualised ({virt})" if virt and virt != "none" else ""))


def versions():
    def first(argv):
        cp = run(argv, check=False)
        return (cp.stdout or cp.stderr).strip().splitlines()[0] if (cp.stdout or cp.stderr) else "?"
    return "; ".join([first(["haproxy", "-v"]).split(" - ")[0], first(["nginx", "-v"]),
                      first(["wrk", "--version"]).split(" Copyright")[0],
                      first(["iperf3", "--version"]), first(["iptables", "-V"]),
                      f"Python {platform.python_version()}"])


def git_commit():
    cp = run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"], check=False)
    commit = cp.stdout.strip() or "unknown"
    dirty = run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                check=False).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def parse_pin(text):
    pin = {"load": None, "backends": None, "proxy": None}
    if text == "none" or (os.cpu_count() or 1) < 2:
        return pin, "none (processes float over all cores)"
    for part in text.split(","):
        k, _, v = part.partition("=")
        if k not in pin or not v.isdigit():
            raise SystemExit(f"bench: bad --pin '{text}' (want load=N,backends=N,proxy=N or none)")
        pin[k] = int(v)
    desc = (f"taskset: load generators (wrk, iperf3 client) on CPU {pin['load']}, backends (nginx, "
            f"iperf3 server) on CPU {pin['backends']}, the proxy under test on CPU {pin['proxy']}; "
            "softirq work follows the sending CPU. Python socket clients (weights, scaling, "
            "memory) are not pinned.")
    return pin, desc


def check_tools():
    missing = [t for t in ("haproxy", "nginx", "wrk", "iperf3", "iptables-restore", "iptables-save",
                           "gnuplot", "ss", "taskset", "setpriv", "ip")
               if not shutil.which(t)]
    if missing:
        raise SystemExit(f"bench: missing tools: {' '.join(missing)} (run scripts/setup.sh)")
    if not os.path.exists("/usr/lib/nginx/modules/ngx_stream_module.so"):
        raise SystemExit("bench: libnginx-mod-stream is not installed (run scripts/setup.sh)")
    if os.geteuid() != 0:
        raise SystemExit("bench: must run as root (it builds network namespaces)")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prefix", help="name prefix of every namespace made (required to run)")
    ap.add_argument("--build-dir")
    ap.add_argument("--render", metavar="RESULTS_JSON",
                    help="only rewrite the summary/BENCHMARKS.md/plots from a saved results.json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--setups", default=",".join(setups_mod.DEFAULT))
    ap.add_argument("--skip", default="",
                    help="comma list of: perf,cap,weights,scaling,memory")
    ap.add_argument("--pin", default="load=0,backends=0,proxy=1")
    ap.add_argument("--out", help="directory for results.json and the logs")
    ap.add_argument("--docs", help="write BENCHMARKS.md and plots here (default: full runs only)")
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--note", help="a note on the run, shown with its results")
    ap.add_argument("--command", default="scripts/bench.sh")
    args = ap.parse_args()
    if args.render:
        return render_only(args)
    if not args.prefix or not args.build_dir:
        ap.error("--prefix and --build-dir are required (scripts/bench.sh passes them)")
    check_tools()

    cfg = dict(PROFILES["quick" if args.quick else "full"])
    if args.runs:
        cfg["runs"] = args.runs
    cfg = argparse.Namespace(**cfg)
    skip = set(filter(None, args.skip.split(",")))
    cfg.cap = "cap" not in skip
    pin, pin_desc = parse_pin(args.pin)
    hard = nofile_hard_limit()
    idle_counts = [experiments.nofile_limited_count(n, hard) for n in cfg.idle_counts]
    idle_note = ""
    if idle_counts != cfg.idle_counts:
        idle_note = (f"RLIMIT_NOFILE's hard limit here is {hard} and a proxied connection takes two "
                     f"descriptors, so the largest count is {idle_counts[-1]:,}, not "
                     f"{cfg.idle_counts[-1]:,}.")

    run_dir = tempfile.mkdtemp(prefix=f"{args.prefix}-", dir="/tmp")
    os.chmod(run_dir, 0o755)
    out_dir = args.out or os.path.join(args.build_dir, "bench-results",
                                       time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out_dir, exist_ok=True)
    world = World(args.prefix, run_dir)
    env = setups_mod.Env(world, args.build_dir, pin, run_dir)
    cap_reason = env.probe_cap() if cfg.cap else "skipped (--skip cap)"
    if cap_reason:
        cfg.cap = False
    started = time.monotonic()
    data = {"meta": dict(command=args.command, commit=git_commit(),
                         date=time.strftime("%Y-%m-%d %H:%M %Z"), machine=machine_description(),
                         versions=versions(), pinning=pin_desc, runs=cfg.runs, conns=cfg.conns,
                         wrk_s=cfg.wrk_s, c1_s=cfg.c1_s, iperf_s=cfg.iperf_s,
                         iperf_streams=cfg.iperf_streams, idle_counts=idle_counts,
                         cap_s=cfg.cap_s, cap=cap_desc(env, cap_reason),
                         idle_note=idle_note, tuning=TUNING, notes=[], note=args.note,
                         quick=args.quick, prefix=args.prefix),
            "setups": [], "rounds": [], "weights": {}, "scaling": {}, "memory": {}, "errors": []}
    errors = data["errors"]
    extra = os.environ.get("REMORA_BENCH_EXTRA", "").strip()
    if extra:
        # An experiment's flags (setups.Remora.argv): the page and results.json say so.
        data["meta"]["notes"].append(f"every remora-proxy ran with REMORA_BENCH_EXTRA: {extra}")
        log(data["meta"]["notes"][-1])
    log(f"machine: {data['meta']['machine']}")
    log(f"pinning: {pin_desc}")
    log(f"CPU cap: {data['meta']['cap']}")
    log(f"run dir (logs): {run_dir}; results: {out_dir}")

    try:
        setups = setups_mod.make(env, [s for s in args.setups.split(",") if s])
        for s in setups:
            reason = s.unavailable()
            data["setups"].append(dict(name=s.name, label=s.label, note=s.note,
                                       available=reason is None, reason=reason,
                                       has_proxy=s.has_proxy, supports_iperf=s.supports_iperf,
                                       memory=s.has_proxy and s.memory,
                                       capped=s.has_proxy and cfg.cap))
            if reason:
                log(f"{s.label}: not available — {reason}")
        avail = [s for s in setups if s.unavailable() is None]
        log("building the netns world")
        env.build_world()
        data["meta"]["interception"] = env.interception
        log(f"interception in front-mesh: {env.interception}")
        for s, entry in zip(setups, data["setups"]):
            if s in avail:
                reason = s.probe()
                if reason:
                    entry.update(available=False, reason=reason)
                    avail.remove(s)
                    log(f"{s.label}: not available — {reason}")

        if "perf" not in skip:
            for r in range(cfg.runs):
                k = r % len(avail) if avail else 0
                order = avail[k:] + avail[:k]
                rnd = {}
                data["rounds"].append(rnd)
                for s in order:
                    log(f"run {r + 1}/{cfg.runs}: {s.label}")
                    try:
                        rnd[s.name] = experiments.perf_round(env, s, cfg)
                        ka = rnd[s.name]["keepalive"]
                        log(f"  keep-alive {ka['rps']:.0f} req/s, close "
                            f"{rnd[s.name]['close']['rps']:.0f} req/s, -c1 p50 "
                            f"{rnd[s.name]['c1']['p50_ms']:.3f} ms")
                    except Exception as e:  # noqa: BLE001 (recorded; the run goes on)
                        errors.append(f"run {r + 1}, {s.name}: {describe(e)}")
                        log(f"  FAILED: {describe(e)}")

        names = {s.name for s in avail}
        if "weights" not in skip:
            for name in ("remora", "kube-proxy"):
                if name not in names:
                    data["weights"][name] = "not available" if name == "remora" else None
                    continue
                runs = []
                for r in range(cfg.runs):
                    log(f"weights {r + 1}/{cfg.runs}: {name}, {cfg.weight_counts} connections")
                    try:
                        runs.append(experiments.weight_run(env, name, cfg.weight_counts))
                    except Exception as e:  # noqa: BLE001 (recorded; the run goes on)
                        errors.append(f"weights, {name}: {describe(e)}")
                data["weights"][name] = runs
            data["weights"] = {k: v for k, v in data["weights"].items() if v is not None}

        if "scaling" not in skip:
            kube, rem = {}, {} if "remora" in names else "not available"
            n_mem = sum(1 for s in avail if s.has_proxy and s.memory)
            memory_reserve = 0 if "memory" in skip else n_mem * cfg.runs * cfg.memory_s
            last_sample_s = 0.0
            for n in cfg.scaling_ns:
                for r in range(cfg.runs):
                    # A kube-proxy-shaped restore of 10k Services takes from ~30 s to minutes
                    # on a busy 2-core machine; extra samples that would overrun the run's time
                    # budget are skipped and the page says so.
                    left = cfg.budget_s - (time.monotonic() - started) - memory_reserve
                    if r > 0 and left < last_sample_s:
                        note = (f"scaling at {n:,} Services: {r} of {cfg.runs} samples (the rest "
                                f"would overrun the {cfg.budget_s // 60:.0f}-minute budget)")
                        data["meta"]["notes"].append(note)
                        log(note)
                        break
                    t_sample = time.monotonic()
                    log(f"scaling {n} Services, run {r + 1}/{cfg.runs}: kube-proxy chains")
                    try:
                        kube.setdefault(str(n), []).append(
                            experiments.kube_scaling_run(env, n, cfg.samples))
                    except Exception as e:  # noqa: BLE001 (recorded; the run goes on)
                        errors.append(f"scaling, kube-proxy, {n}: {describe(e)}")
                    if isinstance(rem, dict):
                        log(f"scaling {n} Services, run {r + 1}/{cfg.runs}: Remora")
                        try:
                            rem.setdefault(str(n), []).append(
                                experiments.remora_scaling_run(env, n, cfg.samples))
                        except Exception as e:  # noqa: BLE001 (recorded; the run goes on)
                            errors.append(f"scaling, remora, {n}: {describe(e)}")
                    last_sample_s = time.monotonic() - t_sample
            data["scaling"] = {"kube-proxy": kube, "remora": rem}

        if "memory" not in skip:
            for s, entry in zip(setups, data["setups"]):
                if not s.has_proxy or not s.memory:
                    continue
                if s not in avail:
                    data["memory"][s.name] = f"not available: {entry['reason']}"
                    continue
                runs = []
                for r in range(cfg.runs):
                    log(f"memory {r + 1}/{cfg.runs}: {s.label}, idle and {idle_counts} idle conns")
                    try:
                        runs.append(experiments.memory_run(env, s, idle_counts))
                    except Exception as e:  # noqa: BLE001 (recorded; the run goes on)
                        errors.append(f"memory, {s.name}: {describe(e)}")
                        s.stop()
                data["memory"][s.name] = runs
    except Exception as e:  # noqa: BLE001 (recorded; results so far are still written)
        errors.append(f"fatal: {describe(e)}")
        log(f"FATAL: {describe(e)}")
        traceback.print_exc()
    except KeyboardInterrupt:
        errors.append("interrupted")
    finally:
        log("tearing down")
        world.destroy()
        data["meta"]["kernel_relay"] = (f"pins in {env.relay_dir}" if env.relay_dir
                                        else env.relay_reason or "not asked for")
        data["meta"]["ebpf"] = (f"pins in {env.ebpf_pins}, cgroup {env.ebpf_cgroup}"
                                if env.ebpf_pins else env.ebpf_reason or "not asked for")
        env.remove_bpf()
        cpucap.remove_all(env.cap_root, args.prefix)
    left = world.leftovers()
    left_cg = cpucap.leftovers(env.cap_root, args.prefix)
    data["meta"]["cleanup_ok"] = not left and not left_cg
    if left:
        errors.append(f"namespaces left behind: {left}")
    if left_cg:
        errors.append(f"cgroups left behind in {env.cap_root}: {left_cg}")
    data["meta"]["elapsed_s"] = time.monotonic() - started

    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(data, f, indent=1)
    for name in os.listdir(run_dir):  # keep the logs next to the results
        if name.endswith(".log"):
            shutil.copy(os.path.join(run_dir, name), out_dir)
    shutil.rmtree(run_dir, ignore_errors=True)

    res = report.Results(data)
    print()
    print(report.summary_text(res))
    print()

    docs = None if args.no_docs else (args.docs or (None if args.quick else os.path.join(ROOT, "docs")))
    if docs and not any(e.startswith("fatal") for e in errors):
        write_docs(res, docs, os.path.join(out_dir, "results.json"))

    problems = completeness(data, cfg, skip)
    for p in problems:
        print(f"MISSING: {p}")
    for e in errors:
        print(f"ERROR: {e}")
    log(f"done in {data['meta']['elapsed_s']:.0f} s; results in {out_dir}/results.json")
    return 1 if (problems or errors) else 0


def cap_desc(env, reason):
    if reason:
        return f"not measured: {reason}"
    where = (f"cgroup v2 `cpu.max` = \"{cpucap.QUOTA_US} {cpucap.PERIOD_US}\""
             if env.cap_kind == "v2" else
             f"cgroup v1 cpu controller, `cpu.cfs_quota_us` = {cpucap.QUOTA_US}, "
             f"`cpu.cfs_period_us` = {cpucap.PERIOD_US}")
    return (f"{cpucap.QUOTA_US / cpucap.PERIOD_US:g} CPU: {where}, in a cgroup per proxy start "
            f"(`{env.cap_root}/<run prefix>-<setup>-<phase>`, removed when the proxy stops)")


def write_docs(res, docs, results_json):
    plot_dir = os.path.join(docs, "bench")
    names = report.plots(res, plot_dir)
    if os.path.abspath(results_json) != os.path.abspath(os.path.join(plot_dir, "results.json")):
        shutil.copy(results_json, plot_dir)
    with open(os.path.join(docs, "BENCHMARKS.md"), "w") as f:
        f.write(report.markdown(res, names))
    log(f"wrote {docs}/BENCHMARKS.md and {len(names)} plots in {plot_dir}")


def render_only(args):
    with open(args.render) as f:
        res = report.Results(json.load(f))
    print(report.summary_text(res))
    if args.docs and not args.no_docs:
        write_docs(res, args.docs, args.render)
    return 0


def completeness(data, cfg, skip):
    """What the smoke test asserts: every setup that exists produced every number it should."""
    missing = []
    avail = [s for s in data["setups"] if s["available"]]
    if "perf" not in skip:
        for r, rnd in enumerate(data["rounds"]):
            for s in avail:
                m = rnd.get(s["name"])
                keys = [("keepalive", "rps"), ("close", "rps"), ("c1", "p50_ms"), ("c1", "p99_ms"),
                        ("keepalive", "p99_ms")]
                keys += [("keepalive", "machine_per_1k"), ("close", "machine_per_1k")]
                if s["has_proxy"]:
                    keys += [("keepalive", "cpu_per_1k"), ("peak_rss_kb",)]
                if s.get("capped"):
                    keys += [("cap_keepalive", "rps"), ("cap_close", "rps"),
                             ("cap_keepalive", "throttled_pct")]
                if s["supports_iperf"]:
                    keys += [("iperf1_gbps",), ("iperfN_gbps",)]
                for k in keys:
                    if report._get(m or {}, k) is None:
                        missing.append(f"run {r + 1}: {s['name']} {'.'.join(k)}")
        if len(data["rounds"]) < cfg.runs:
            missing.append(f"only {len(data['rounds'])} of {cfg.runs} runs")
    names = {s["name"] for s in avail}
    if "weights" not in skip:
        for n in ("kube-proxy", "remora"):
            if n in names and not data["weights"].get(n):
                missing.append(f"weights: {n}")
    if "scaling" not in skip:
        sc = data["scaling"]
        for n in ("kube-proxy", "remora"):
            if n in names:
                got = sc.get(n) if isinstance(sc.get(n), dict) else {}
                for count in cfg.scaling_ns:
                    if not got.get(str(count)):
                        missing.append(f"scaling: {n} at {count} Services")
    if "memory" not in skip:
        for s in avail:
            if s.get("memory"):
                runs = data["memory"].get(s["name"])
                if not isinstance(runs, list) or not runs or any(
                        str(c) not in runs[0] for c in data["meta"]["idle_counts"]):
                    missing.append(f"memory: {s['name']}")
    if not data["meta"].get("cleanup_ok"):
        missing.append("topology cleanup")
    return missing


if __name__ == "__main__":
    sys.exit(main())
