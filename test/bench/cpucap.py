"""The CPU cap of the capped-throughput figure (issue 12): every proxy under test runs in a cgroup
of its own, made by the harness for that start and removed after it, whose cpu controller quota
is a quarter of a CPU while the capped workloads run (and unlimited otherwise).

cgroup v2's `cpu.max` is used where the unified hierarchy offers the cpu controller; otherwise
the cgroup v1 `cpu` hierarchy (`cpu.cfs_quota_us` / `cpu.cfs_period_us`), which is what the
bench machine has. Each cgroup is named `<prefix>-<setup>-<phase>` under the hierarchy's root;
the prefix carries scripts/bench.sh's PID, so its trap can remove exactly what the run made.
"""

import errno
import os
import time

from world import BenchError

QUOTA_US = 25000  # a quarter of a CPU: what a sidecar with `limits.cpu: 250m` gets
PERIOD_US = 100000


def _read(path):
    with open(path) as f:
        return f.read()


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def probe(test_name):
    """(kind, root, None) for the hierarchy to use, or (None, None, reason) when there is none
    or the harness may not make cgroups in it (tried with a cgroup named test_name)."""
    kind, root, reason = _find()
    if kind is None:
        return kind, root, reason
    try:
        cg = CpuCgroup(kind, root, test_name)
        os.mkdir(cg.path)
        try:
            cg.set_cap(True)
            cg.set_cap(False)
        finally:
            os.rmdir(cg.path)
    except (OSError, BenchError) as e:
        return None, None, f"cannot make a capped cgroup under {root} ({e})"
    return kind, root, None


def _find():
    mounts = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 4:
                    mounts.append((fields[2], fields[1], fields[3].split(",")))
    except OSError as e:
        return None, None, f"cannot read /proc/self/mounts: {e}"
    v2_reason = None
    for fstype, mnt, _ in mounts:
        if fstype != "cgroup2":
            continue
        try:
            controllers = _read(os.path.join(mnt, "cgroup.controllers")).split()
        except OSError:
            continue
        if "cpu" not in controllers:
            continue
        try:
            if "cpu" not in _read(os.path.join(mnt, "cgroup.subtree_control")).split():
                _write(os.path.join(mnt, "cgroup.subtree_control"), "+cpu")
            return "v2", mnt, None
        except OSError as e:
            v2_reason = f"cgroup v2 at {mnt} has the cpu controller but it cannot be enabled ({e})"
    for fstype, mnt, opts in mounts:
        if fstype == "cgroup" and "cpu" in opts and os.path.exists(
                os.path.join(mnt, "cpu.cfs_quota_us")):
            return "v1", mnt, None
    return None, None, v2_reason or "no cgroup v2 cpu controller and no cgroup v1 cpu hierarchy"


class CpuCgroup:
    """One harness-owned cgroup with the cpu controller; the proxy is started inside it."""

    def __init__(self, kind, root, name):
        self.kind = kind
        self.root = root
        self.name = name
        self.path = os.path.join(root, name)
        self.capped = False

    def create(self):
        try:
            os.mkdir(self.path)
        except FileExistsError:
            pass  # left by an earlier start of the same setup in this run; reused
        except OSError as e:
            raise BenchError(f"cannot create cgroup {self.path}: {e}") from e
        self.set_cap(False)
        return self

    def procs_file(self):
        return os.path.join(self.path, "cgroup.procs")

    def set_cap(self, on):
        """Quota QUOTA_US per PERIOD_US when on; no quota when off."""
        try:
            if self.kind == "v2":
                _write(os.path.join(self.path, "cpu.max"),
                       f"{QUOTA_US if on else 'max'} {PERIOD_US}")
            else:
                _write(os.path.join(self.path, "cpu.cfs_period_us"), str(PERIOD_US))
                _write(os.path.join(self.path, "cpu.cfs_quota_us"), str(QUOTA_US if on else -1))
        except OSError as e:
            raise BenchError(f"cannot set the cpu quota of {self.path}: {e}") from e
        self.capped = on

    def pids(self):
        try:
            return {int(x) for x in _read(self.procs_file()).split()}
        except OSError:
            return set()

    def adopt(self, pids):
        """Moves every given process (all its threads) into the cgroup; returns those that were
        outside it. Processes that have exited meanwhile are skipped."""
        inside = self.pids()
        moved = []
        for pid in pids:
            if pid in inside:
                continue
            try:
                _write(self.procs_file(), str(pid))
                moved.append(pid)
            except OSError as e:
                if e.errno != errno.ESRCH:
                    raise BenchError(f"cannot move PID {pid} into {self.path}: {e}") from e
        return moved

    def stat(self):
        """{"periods", "throttled", "throttled_s"} from cpu.stat (cumulative)."""
        out = {}
        try:
            for line in _read(os.path.join(self.path, "cpu.stat")).splitlines():
                k, _, v = line.partition(" ")
                if v.strip().isdigit():
                    out[k] = int(v)
        except OSError:
            pass
        throttled_s = (out.get("throttled_usec", 0) / 1e6 if self.kind == "v2"
                       else out.get("throttled_time", 0) / 1e9)
        return {"periods": out.get("nr_periods", 0), "throttled": out.get("nr_throttled", 0),
                "throttled_s": throttled_s}

    def remove(self):
        """Removes the cgroup once its processes are gone (any left are moved to the root
        first, so an rmdir never fails on a straggler)."""
        if not os.path.isdir(self.path):
            return
        for _ in range(50):
            left = self.pids()
            for pid in left:
                try:
                    _write(os.path.join(self.root, "cgroup.procs"), str(pid))
                except OSError:
                    pass
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY:
                    raise BenchError(f"cannot remove cgroup {self.path}: {e}") from e
            time.sleep(0.02)
        raise BenchError(f"cgroup {self.path} stayed busy; not removed")


def leftovers(root, prefix):
    """Cgroups carrying the run's prefix that still exist under root."""
    if not root or not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root)
                  if n.startswith(prefix + "-") and os.path.isdir(os.path.join(root, n)))


def remove_all(root, prefix):
    """Removes every cgroup the run made that is still there (after a failure); the processes
    in them were already stopped with the namespaces."""
    for name in leftovers(root, prefix):
        try:
            CpuCgroup(None, root, name).remove()
        except BenchError:
            pass


class CgroupSet:
    """Several CpuCgroups seen as one, for a setup with a proxy on each side (the mTLS rows: a
    client sidecar and a server sidecar, each with its own quarter CPU, as two pods with
    `limits.cpu: 250m` would have). stat() adds up the members' counters."""

    def __init__(self, members):
        self.members = list(members)

    def set_cap(self, on):
        for m in self.members:
            m.set_cap(on)

    def pids(self):
        out = set()
        for m in self.members:
            out |= m.pids()
        return out

    def stat(self):
        out = {"periods": 0, "throttled": 0, "throttled_s": 0.0}
        for m in self.members:
            for k, v in m.stat().items():
                out[k] += v
        return out

    def remove(self):
        for m in self.members:
            m.remove()
