"""The benchmark's isolated network world and the processes started inside it.

DESIGN.md "Test topology rules": a "node" namespace holds a bridge (10.244.0.1/16) and has no link
to the root namespace; each pod is a namespace joined to the bridge by a veth pair, with a default
route via the node. The node does not forward, so a packet to any address outside 10.244.0.0/16
that nothing intercepts dies there. Every name carries the harness's prefix (which carries the
PID of scripts/bench.sh), so the shell's trap can remove exactly what was made, even after a crash.
"""

import ctypes
import os
import resource
import signal
import subprocess
import threading
import time

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class BenchError(RuntimeError):
    pass


def run(argv, check=True, input_text=None, timeout=120):
    """Runs argv and returns CompletedProcess with text output; raises BenchError on failure."""
    try:
        cp = subprocess.run(argv, input=input_text, capture_output=True, text=True,
                            timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"timed out after {timeout}s: {' '.join(argv)}") from e
    if check and cp.returncode != 0:
        raise BenchError(f"'{' '.join(argv)}' exited {cp.returncode}: {cp.stderr.strip()[:500]}")
    return cp


def in_netns(ns, fn, *args, **kwargs):
    """Calls fn in a dedicated thread that has entered network namespace `ns`.

    setns() changes only the calling thread, so the harness itself stays in the root namespace;
    sockets the function creates belong to `ns` for their whole life, whichever thread uses them
    later. Returns fn's result and re-raises its exception.
    """
    box = {}

    def body():
        try:
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["result"] = fn(*args, **kwargs)
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    t = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _child_setup(cgroup_procs):
    """Runs in the child between fork and exec: the process enters its cgroup (when given)
    before it becomes the program, so every thread and child it makes is born inside."""
    def setup():
        _raise_nofile()
        if cgroup_procs:
            fd = os.open(cgroup_procs, os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
    return setup


def nofile_hard_limit():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def descendants(pid):
    """PIDs of pid's children and their children (scan of /proc by parent PID)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Proc:
    """A process the harness started; stopped by its own PID (and its descendants' PIDs)."""

    def __init__(self, name, popen, log_path):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path

    def alive(self):
        return self.popen.poll() is None

    def tree(self):
        return [self.pid] + descendants(self.pid) if self.alive() else []

    def log_tail(self, n=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-n:]).strip()
        except OSError:
            return ""

    def stop(self, timeout=5.0):
        if not self.alive():
            return self.popen.returncode
        pids = self.tree()
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            for p in pids[1:]:  # e.g. nginx workers left behind by a killed master
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.popen.wait(5)


class World:
    NODE_IP = "10.244.0.1"

    def __init__(self, prefix, run_dir):
        self.prefix = prefix
        self.run_dir = run_dir
        self.node = f"{prefix}-node"
        self.namespaces = []
        self.pods = {}
        self.procs = []
        self._veth_index = 0

    # -- namespaces -------------------------------------------------------------------------
    def ns_exec(self, ns, argv, **kw):
        return run(["ip", "netns", "exec", ns] + list(argv), **kw)

    def create(self):
        run(["ip", "netns", "add", self.node])
        self.namespaces.append(self.node)
        self.ns_exec(self.node, ["ip", "link", "set", "lo", "up"])
        self.ns_exec(self.node, ["ip", "link", "add", "br0", "type", "bridge"])
        self.ns_exec(self.node, ["ip", "addr", "add", f"{self.NODE_IP}/16", "dev", "br0"])
        self.ns_exec(self.node, ["ip", "link", "set", "br0", "up"])
        # No forwarding and no uplink: nothing that reaches the node goes anywhere else.
        self.ns_exec(self.node, ["sysctl", "-qw", "net.ipv4.ip_forward=0"])

    def add_pod(self, name, ip):
        ns = f"{self.prefix}-{name}"
        idx = self._veth_index
        self._veth_index += 1
        host_if, peer_if = f"{self.prefix}h{idx}", f"{self.prefix}c{idx}"
        run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        self.ns_exec(ns, ["ip", "link", "set", "lo", "up"])
        self.ns_exec(self.node, ["ip", "link", "add", host_if, "type", "veth", "peer", "name",
                                 peer_if, "netns", ns])
        self.ns_exec(self.node, ["ip", "link", "set", host_if, "master", "br0", "up"])
        self.ns_exec(ns, ["ip", "link", "set", peer_if, "name", "eth0"])
        self.ns_exec(ns, ["ip", "addr", "add", f"{ip}/16", "dev", "eth0"])
        self.ns_exec(ns, ["ip", "link", "set", "eth0", "up"])
        self.ns_exec(ns, ["ip", "route", "add", "default", "via", self.NODE_IP])
        # Same for every setup (docs/BENCHMARKS.md, "Tuning"): room for tens of thousands of
        # short connections per run without port or conntrack exhaustion. The widened range
        # covers the proxies' own ports (15000-15090), so those are reserved: a client or
        # upstream connection that took 15006 as its source port made the next proxy's listen
        # fail with EADDRINUSE (seen as "no listener on 15001" in run 3 of two L4 runs).
        self.ns_exec(ns, ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000",
                          "net.ipv4.ip_local_reserved_ports=15000-15090",
                          "net.ipv4.tcp_tw_reuse=1", "net.core.somaxconn=4096"])
        self.ns_exec(ns, ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=5"],
                     check=False)
        self.pods[name] = {"ns": ns, "ip": ip}
        return ns

    def remove_pod(self, name):
        pod = self.pods.pop(name)
        for p in list(self.procs):
            if p.ns == pod["ns"]:
                self.stop(p)
        run(["ip", "netns", "delete", pod["ns"]], check=False)
        self.namespaces.remove(pod["ns"])

    def ns(self, pod):
        return self.pods[pod]["ns"]

    # -- processes --------------------------------------------------------------------------
    def spawn(self, name, ns, argv, cpu=None, uid=None, env=None, cgroup_procs=None):
        """Starts argv inside ns (optionally pinned to `cpu`, run as uid:uid, and inside the
        cgroup whose `cgroup.procs` file is given).

        `ip netns exec`, taskset and setpriv each exec the next program, so the PID Popen
        returns is the program's own.
        """
        cmd = ["ip", "netns", "exec", ns]
        if cpu is not None:
            cmd += ["taskset", "-c", str(cpu)]
        if uid is not None:
            cmd += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        cmd += list(argv)
        log_path = os.path.join(self.run_dir, f"{name}.log")
        log = open(log_path, "ab")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        popen = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 preexec_fn=_child_setup(cgroup_procs), env=full_env)
        log.close()
        proc = Proc(name, popen, log_path)
        proc.ns = ns
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        if proc is None:
            return None
        rc = proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)
        return rc

    # -- teardown ---------------------------------------------------------------------------
    def destroy(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:  # keep tearing down whatever happens
                pass
        self.procs.clear()
        for ns in reversed(self.namespaces):
            run(["ip", "netns", "delete", ns], check=False)
        self.namespaces.clear()

    def leftovers(self):
        """Namespaces carrying our prefix that still exist (empty after a clean teardown)."""
        out = run(["ip", "netns", "list"], check=False).stdout
        return [line.split()[0] for line in out.splitlines()
                if line.split() and line.split()[0].startswith(self.prefix + "-")]


def wait_until(predicate, timeout, interval=0.02):
    """Polls predicate until it returns a truthy value or timeout seconds pass (then None)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)
