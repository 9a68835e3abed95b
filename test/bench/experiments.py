"""The workloads of issue 5, section 2. Each returns plain dicts; report.py turns them into
tables, ratios and plots."""

import os
import time

import kube_chains
import measure
from setups import BILL_VIP, PROXY_UID, RELOAD_VIP, WEIGHTED_VIP, Remora, remora_config_text
from world import BenchError, wait_until


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- throughput and latency, every setup in turn --------------------------------------------
def perf_round(env, setup, cfg):
    """One turn of one setup: wrk keep-alive, wrk Connection: close, wrk -c1, the same two wrk
    runs with the proxy capped at a quarter CPU, iperf3 x1 and xN. Every wrk run also records
    the machine's busy CPU (report.py subtracts direct's from the same run)."""
    out = {}
    load_cpu = env.pin["load"]
    try:
        setup.start("http")
        pids = setup.pids() if setup.has_proxy else None
        url = setup.url()
        out["keepalive"] = measure.wrk(env.world, setup.ns, url, cfg.conns, cfg.wrk_s,
                                       cpu=load_cpu, proc_pids=pids)
        out["close"] = measure.wrk(env.world, setup.ns, url, cfg.conns, cfg.wrk_s, close=True,
                                   cpu=load_cpu, proc_pids=pids)
        out["c1"] = measure.wrk(env.world, setup.ns, url, 1, cfg.c1_s, cpu=load_cpu)
        if pids:
            out["peak_rss_kb"] = measure.peak_rss_kb(setup.pids())
        if pids and cfg.cap and setup.set_cap(True):
            try:
                pids = setup.pids()
                for key, close in (("cap_keepalive", False), ("cap_close", True)):
                    out[key] = measure.wrk(env.world, setup.ns, url, cfg.conns, cfg.cap_s,
                                           close=close, cpu=load_cpu, proc_pids=pids,
                                           cgroup=setup.cgroup)
                # Every process of the proxy was in the capped cgroup (set_cap adopts any
                # that were not): the page shows both counts.
                out["cap_procs"] = len(setup.cgroup.pids())
                out["proxy_procs"] = len(setup.pids())
            finally:
                setup.set_cap(False)
        if setup.supports_iperf:
            if setup.has_proxy:
                setup.ensure("iperf")
            host, port = setup.iperf_target
            out["iperf1_gbps"] = measure.iperf3(setup.ns, host, port, 1, cfg.iperf_s, cpu=load_cpu)
            out["iperfN_gbps"] = measure.iperf3(setup.ns, host, port, cfg.iperf_streams,
                                                cfg.iperf_s, cpu=load_cpu)
    finally:
        setup.stop()
    return out


# -- weight accuracy ------------------------------------------------------------------------
def weight_run(env, setup_name, counts):
    """Observed split of `counts` sequential connections, configured 90/10."""
    results = {}
    remora = None
    try:
        if setup_name == "remora":
            remora = Remora(env)
            remora.start("http")
            ns, (ip, port) = remora.ns, BILL_VIP
        else:
            ns, (ip, port) = env.ns("front-weights"), WEIGHTED_VIP
        for n in counts:
            c = measure.count_split(ns, ip, port, n)
            ok = c["v1"] + c["v2"]
            if ok == 0:
                raise BenchError(f"weights: no connection through {setup_name} succeeded")
            v2_share = c["v2"] / ok
            chi2, p = measure.chi_square([c["v1"], c["v2"]], [0.9, 0.1])
            results[str(n)] = {"v1": c["v1"], "v2": c["v2"], "failed": c["failed"],
                               "v2_pct": 100 * v2_share, "dev_pp": abs(100 * v2_share - 10.0),
                               "chi2": chi2, "p": p}
    finally:
        if remora:
            remora.stop()
    return results


# -- scaling with Services ------------------------------------------------------------------
def kube_scaling_run(env, n, samples):
    """Full kube-proxy-shaped ruleset for n Services restored into a fresh pod; then the
    connect latency of the last Service (its first packet walks all of KUBE-SERVICES)."""
    rules_path = os.path.join(env.run_dir, f"kube-{n}.rules")
    if not os.path.exists(rules_path):
        with open(rules_path, "w") as f:
            f.write(kube_chains.render(kube_chains.scaled_services(n)))
    ns = env.world.add_pod("kscale", "10.244.3.20")
    try:
        # Timed inside the netns, so `ip netns exec`'s own start-up is not counted.
        cp = env.world.ns_exec(ns, ["bash", "-c",
                                    's=$EPOCHREALTIME; iptables-restore --noflush "$1" || exit 1; '
                                    'e=$EPOCHREALTIME; echo "$s $e"', "_", rules_path],
                               timeout=600)
        s, e = (float(x) for x in cp.stdout.split())
        lat = measure.connect_latency(ns, *BILL_VIP, samples)
        rules = sum(1 for line in open(rules_path) if line.startswith("-A "))
    finally:
        env.world.remove_pod("kscale")
    return {"restore_s": e - s, "rules": rules, **lat}


def scaled_config_text(n, extra=""):
    """n Services: n-1 fillers (selecting the same pods) before the seed config."""
    base = remora_config_text()
    docs = []
    for i in range(n - 1):
        docs.append(_service_yaml(f"svc-{i}", kube_chains.filler_ip(i)))
    if extra:
        docs.append(extra)
    return "".join(docs) + base


def _service_yaml(name, ip, port=9999):
    return (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: istio-demo\n"
            f"spec:\n  clusterIP: {ip}\n  selector:\n    app: bill-service\n  ports:\n"
            f"  - name: http\n    port: {port}\n    targetPort: 80\n---\n")


def remora_scaling_run(env, n, samples):
    """remora-proxy with n Services: start → first response through the last Service (load),
    connect latency to it, then a reload adding one Service → first response through it."""
    cfg_dir = env.private_dir(f"remora-scale-{n}")
    path = os.path.join(cfg_dir, "services.yaml")
    with open(path, "w") as f:
        f.write(scaled_config_text(n))
    os.chmod(path, 0o644)
    remora = Remora(env)
    world = env.world
    res = {}
    try:
        t0 = time.perf_counter()
        remora.proc = world.spawn(f"remora-scale-{n}", remora.ns, remora.argv("http", path),
                                  cpu=env.pin["proxy"], uid=PROXY_UID)
        waited = measure.wait_first_response(remora.ns, *BILL_VIP, timeout=120)
        if waited is None:
            raise BenchError(f"remora with {n} Services never served {BILL_VIP} "
                             f"(log: {remora.proc.log_tail()})")
        res["load_s"] = time.perf_counter() - t0
        res.update(measure.connect_latency(remora.ns, *BILL_VIP, samples))
        # Reload: the same file plus one Service, swapped in atomically (rename), as a
        # ConfigMap update does. The probe fails fast until the proxy routes the new VIP.
        tmp = path + ".new"
        with open(tmp, "w") as f:
            f.write(scaled_config_text(n, _service_yaml("svc-added", RELOAD_VIP[0])))
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
        t0 = time.perf_counter()
        waited = measure.wait_first_response(remora.ns, *RELOAD_VIP, timeout=5)
        res["reload_via"] = "file change"
        if waited is None:
            remora.proc.popen.send_signal(1)  # SIGHUP: the documented fallback trigger
            t0 = time.perf_counter()
            waited = measure.wait_first_response(remora.ns, *RELOAD_VIP, timeout=10)
            res["reload_via"] = "SIGHUP (no reload within 5 s of the file change)"
        res["reload_s"] = (time.perf_counter() - t0) if waited is not None else None
        res["rss_kb"] = measure.rss_kb(remora.pids())
    finally:
        remora.stop()
    return res


# -- memory -----------------------------------------------------------------------------------
def memory_run(env, setup, counts):
    """Proxy RSS at idle and with each count of idle connections held open through it."""
    world, ns = env.world, setup.ns
    res = {}
    try:
        setup.start("http")
        time.sleep(0.5)
        idle = measure.rss_kb(setup.pids())
        res["idle_kb"] = idle
        for n in counts:
            socks = measure.open_idle(ns, *BILL_VIP, n)
            try:
                accepted = wait_until(
                    lambda: measure.established_count(world, ns, "( sport = :15001 )") >= n, 30, 0.2)
                if not accepted:
                    raise BenchError(f"memory: {setup.name} did not accept {n} connections")
                if not setup.per_request:  # an HTTP proxy connects upstream per request
                    wait_until(lambda: measure.established_count(world, ns, "( dport = :80 )") >= n,
                               10, 0.2)
                time.sleep(0.5)
                rss = measure.rss_kb(setup.pids())
                res[str(n)] = {"rss_kb": rss, "per_conn_bytes": (rss - idle) * 1024 / n,
                               "upstream": measure.established_count(world, ns, "( dport = :80 )")}
            finally:
                for s in socks:
                    s.close()
            wait_until(lambda: measure.established_count(world, ns, "( sport = :15001 )") < 10,
                       15, 0.2)
    finally:
        setup.stop()
    return res


def nofile_limited_count(wanted, hard_limit):
    """Idle connections one proxy can hold: 2 fds each, minus headroom for its other fds."""
    return min(wanted, (hard_limit - 400) // 2)

