"""Load generators, their parsers, and the per-process accounting the figures need."""

import json
import math
import os
import re
import socket
import statistics
import time

from world import BenchError, in_netns, run

CLK_TCK = os.sysconf("SC_CLK_TCK")
V1_MARK = b"bill-service-v1"
V2_MARK = b"bill-service-v2"


# -- /proc accounting ------------------------------------------------------------------------
def cpu_seconds(pids):
    """utime + stime of the given processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLK_TCK


def machine_cpu_seconds():
    """Busy CPU seconds of the whole machine since boot, from /proc/stat's `cpu` line: user +
    nice + system + irq + softirq. Idle, iowait and steal are not work done here; guest time is
    already inside user and nice."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK
    raise BenchError("/proc/stat has no cpu line")


def _status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(pids):
    return sum(_status_kb(p, "VmRSS") for p in pids)


def peak_rss_kb(pids):
    return sum(_status_kb(p, "VmHWM") for p in pids)


# -- wrk ---------------------------------------------------------------------------------------
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise BenchError(f"wrk: cannot parse latency '{text}'")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out):
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise BenchError("wrk printed no Requests/sec:\n" + out[-800:])
    res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    res["requests"] = int(m.group(1)) if m else 0
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        res[key] = _ms(m.group(1)) if m else None
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        # A read "error" is how wrk counts the server closing after Connection: close.
        errors += int(m.group(1)) + int(m.group(3)) + int(m.group(4))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    res["errors"] = errors
    return res


def wrk(world, ns, url, conns, seconds, close=False, cpu=None, proc_pids=None, cgroup=None):
    """Runs wrk (one thread) in ns. Always adds the machine's busy CPU seconds over the run and
    per 1k requests; adds the proxy's own CPU per 1k requests when proc_pids is given, and the
    cgroup's throttling over the run when cgroup (a cpucap.CpuCgroup) is given."""
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(url)
    cmd = ["ip", "netns", "exec", ns] + (["taskset", "-c", str(cpu)] if cpu is not None else []) + argv
    cpu0 = cpu_seconds(proc_pids) if proc_pids else None
    th0 = cgroup.stat() if cgroup else None
    m0, t0 = machine_cpu_seconds(), time.monotonic()
    cp = run(cmd, timeout=seconds + 30)
    m1, t1 = machine_cpu_seconds(), time.monotonic()
    res = parse_wrk(cp.stdout)
    per_1k = (lambda used: used / res["requests"] * 1000 if res["requests"] else None)
    res["wall_s"] = t1 - t0
    res["machine_s"] = m1 - m0
    res["machine_per_1k"] = per_1k(m1 - m0)
    if proc_pids:
        used = cpu_seconds(proc_pids) - cpu0
        res["cpu_s"] = used
        res["cpu_per_1k"] = per_1k(used)
        res["cpu_cores"] = used / (t1 - t0)
    if cgroup:
        th1 = cgroup.stat()
        periods = th1["periods"] - th0["periods"]
        res["periods"] = periods
        res["throttled_pct"] = ((th1["throttled"] - th0["throttled"]) / periods * 100
                                if periods else None)
        res["throttled_s"] = th1["throttled_s"] - th0["throttled_s"]
    if res["requests"] and res["errors"] > res["requests"] * 0.01:
        raise BenchError(f"wrk: {res['errors']} errors in {res['requests']} requests ({url})")
    return res


# -- iperf3 ------------------------------------------------------------------------------------
def iperf3(ns, host, port, streams, seconds, cpu=None):
    argv = ["iperf3", "-c", host, "-p", str(port), "-t", str(seconds), "-P", str(streams), "-J",
            "--connect-timeout", "3000"]
    cmd = ["ip", "netns", "exec", ns] + (["taskset", "-c", str(cpu)] if cpu is not None else []) + argv
    cp = run(cmd, check=False, timeout=seconds + 30)
    try:
        data = json.loads(cp.stdout)
    except json.JSONDecodeError as e:
        raise BenchError(f"iperf3 printed no JSON (exit {cp.returncode}): {cp.stderr[-300:]}") from e
    if "error" in data:
        raise BenchError(f"iperf3: {data['error']}")
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


# -- socket clients run inside a pod netns (world.in_netns) -------------------------------------
REQUEST = b"GET / HTTP/1.1\r\nHost: bill-service\r\nConnection: close\r\n\r\n"


def _fetch(ip, port, timeout):
    """One connection, one request; returns (connect_s, total_s, response bytes)."""
    t0 = time.perf_counter()
    s = socket.create_connection((ip, port), timeout=timeout)
    t1 = time.perf_counter()
    try:
        s.sendall(REQUEST)
        chunks = []
        while True:
            b = s.recv(4096)
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    return t1 - t0, time.perf_counter() - t0, b"".join(chunks)


def keepalive_split(ns, ip, port, n, timeout=3.0):
    """n requests on ONE keep-alive connection; returns {"v1": a, "v2": b, "failed": c}. An L4
    proxy picks the backend once per connection, so only an L7 proxy answers from both."""
    request = b"GET / HTTP/1.1\r\nHost: bill-service\r\n\r\n"

    def body():
        counts = {"v1": 0, "v2": 0, "failed": 0}
        try:
            s = socket.create_connection((ip, port), timeout=timeout)
        except OSError:
            counts["failed"] = n
            return counts
        buf = b""
        try:
            for i in range(n):
                s.sendall(request)
                while True:  # one response: headers, then Content-Length bytes of body
                    head, sep, rest = buf.partition(b"\r\n\r\n")
                    m = re.search(rb"(?im)^content-length:\s*(\d+)", head) if sep else None
                    if m and len(rest) >= int(m.group(1)):
                        length = int(m.group(1))
                        counts[served_by(rest[:length]) or "failed"] += 1
                        buf = rest[length:]
                        break
                    chunk = s.recv(4096)
                    if not chunk:
                        counts["failed"] += n - i
                        return counts
                    buf += chunk
        except OSError:
            counts["failed"] += n - counts["v1"] - counts["v2"] - counts["failed"]
        finally:
            s.close()
        return counts
    return in_netns(ns, body)


def http_get(world, ns, ip, port, timeout=2.0):
    return in_netns(ns, _fetch, ip, port, timeout)[2]


def served_by(body):
    if V2_MARK in body:
        return "v2"
    if V1_MARK in body:
        return "v1"
    return None


def count_split(ns, ip, port, n, timeout=3.0):
    """n sequential connections, one request each; returns {"v1": a, "v2": b, "failed": c}."""
    def body():
        counts = {"v1": 0, "v2": 0, "failed": 0}
        for _ in range(n):
            try:
                who = served_by(_fetch(ip, port, timeout)[2])
            except OSError:
                who = None
            counts[who or "failed"] += 1
        return counts
    return in_netns(ns, body)


def connect_latency(ns, ip, port, samples, timeout=3.0):
    """Median TCP connect time and connect-to-last-byte time of fresh connections, in ms."""
    def body():
        for _ in range(3):  # warm-up: the first fetches after a pod or proxy starts run cold
            try:
                _fetch(ip, port, timeout)
            except OSError:
                pass
        conn, total, ok = [], [], 0
        for _ in range(samples):
            try:
                c, t, data = _fetch(ip, port, timeout)
            except OSError:
                continue
            if served_by(data):
                ok += 1
                conn.append(c * 1e3)
                total.append(t * 1e3)
            time.sleep(0.002)
        if ok < max(1, samples // 2):
            raise BenchError(f"connect latency: only {ok}/{samples} fetches through {ip}:{port} "
                             "succeeded")
        return {"connect_ms": statistics.median(conn), "first_response_ms": statistics.median(total)}
    return in_netns(ns, body)


def wait_first_response(ns, ip, port, timeout, attempt_timeout=0.2):
    """Seconds until a fetch through ip:port returns a backend's body (polled), or None."""
    def body():
        t0 = time.perf_counter()
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            try:
                if served_by(_fetch(ip, port, attempt_timeout)[2]):
                    return time.perf_counter() - t0
            except OSError:
                pass
            time.sleep(0.001)
        return None
    return in_netns(ns, body)


def open_idle(ns, ip, port, n, timeout=5.0):
    """Opens n TCP connections that then sit idle; returns the sockets (caller closes)."""
    def body():
        socks = []
        try:
            for _ in range(n):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(timeout)
                s.connect((ip, port))
                socks.append(s)
        except OSError:
            for s in socks:
                s.close()
            raise
        return socks
    return in_netns(ns, body)


def established_count(world, ns, filter_expr):
    cp = world.ns_exec(ns, ["ss", "-Htn", "state", "established", filter_expr], check=False)
    return len([l for l in cp.stdout.splitlines() if l.strip()])


# -- statistics --------------------------------------------------------------------------------
def chi_square(observed, expected_fractions):
    """Pearson chi-square of observed counts against expected fractions, and its p-value (df=1)."""
    n = sum(observed)
    chi2 = sum((o - n * f) ** 2 / (n * f) for o, f in zip(observed, expected_fractions))
    p = math.erfc(math.sqrt(chi2 / 2)) if len(observed) == 2 else None
    return chi2, p


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
