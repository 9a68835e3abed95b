"""The setups compared side by side, on the same backends, taking turns (issue 5, section 1).

Every setup serves the same request: GET / from a client pod, answered by one of the two
bill-service pods. What differs is the path in between.
"""

import os
import shutil

import cpucap
import kube_chains
import measure
from world import BenchError, run, wait_until

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PROXY_UID = 1337
BILL_VIP = ("10.1.122.241", 9999)
IPERF_VIP = ("10.1.122.242", 5201)
WEIGHTED_VIP = ("10.1.122.243", 9999)  # kube chains only: --probability 0.9
V1_IP, V2_IP = "10.244.1.168", "10.244.2.74"
# Services a reload adds in the scaling figure live here; the proxy's own connections to it are
# refused locally (see Env.prepare_mesh), so a probe fails fast until the reload lands.
RELOAD_VIP = ("10.3.0.1", 9999)
ROOT = os.path.dirname(os.path.dirname(BENCH_DIR))
# The mTLS rows (issue 14 §7) have two pods of their own, both with interception: the client
# pod's sidecar originates mTLS, the server pod's sidecar terminates it (STRICT) and hands the
# request to the pod's nginx. The other setups never touch them.
MTLS_VIP = ("10.1.122.244", 9999)
MTLS_PODS = {"front-mtls": "10.244.3.14", "bill-mtls": "10.244.4.10"}
MTLS_IDS = {"front": "spiffe://cluster.local/ns/istio-demo/sa/front",
            "bill": "spiffe://cluster.local/ns/istio-demo/sa/bill"}
# remora-proxy's config: the seed scenario unchanged, at 90/10, plus the iperf3 Service.
REMORA_CONFIG_PARTS = [os.path.join(ROOT, "test", "fixtures", "seed", "seed.yaml"),
                       os.path.join(ROOT, "test", "fixtures", "seed", "istio-90-10.yaml"),
                       os.path.join(BENCH_DIR, "remora-iperf.yaml")]


def yaml_documents(text):
    """Splits multi-document YAML on `---` lines, dropping documents that hold only comments."""
    docs, cur = [], []
    for line in text.splitlines(keepends=True) + ["---\n"]:
        if line.rstrip() == "---":
            if any(l.strip() and not l.lstrip().startswith("#") for l in cur):
                docs.append("".join(cur))
            cur = []
        else:
            cur.append(line)
    return docs


def remora_config_text():
    """The seed config files joined into one multi-document YAML."""
    docs = []
    for path in REMORA_CONFIG_PARTS:
        with open(path) as f:
            docs += yaml_documents(f.read())
    return "---\n".join(docs)


# The L4 row's config: the same Services and weights, but bill-service's port declared TCP
# (`tcp-http`) and the VirtualService's route under `tcp:`, so the row stays an L4 figure once
# remora-proxy routes HTTP ports per request (issue 10); the L7 row keeps the seed as it is.
L4_EDITS = [("  ports:\n  - name: http\n    port: 9999\n", "  ports:\n  - name: tcp-http\n    port: 9999\n"),
            ("  hosts:\n  - bill-service\n  http:\n", "  hosts:\n  - bill-service\n  tcp:\n")]


def remora_l4_config_text():
    """The seed config with bill-service made a TCP port (L4_EDITS); BenchError when the seed
    no longer has the text the edits expect."""
    text = remora_config_text()
    for old, new in L4_EDITS:
        if text.count(old) != 1:
            raise BenchError(f"the seed config changed: expected one {old!r} to make the L4 "
                             "config (test/bench/setups.py L4_EDITS)")
        text = text.replace(old, new)
    return text

PODS = {  # name -> IPv4 (the seed's backends keep their seed addresses)
    "bill-v1": V1_IP,
    "bill-v2": V2_IP,
    "front-direct": "10.244.3.10",
    "front-kube": "10.244.3.11",
    "front-mesh": "10.244.3.12",  # front-tomcat with interception; every sidecar takes its turn
    # The weight figure's kube-proxy client. Not front-kube: its backends still hold TIME_WAIT
    # sockets from wrk's connections to 10.1.122.241, and a connection to another ClusterIP that
    # DNATs onto the same 4-tuple carries an unrelated ISN and TCP timestamp, so PAWS drops some
    # SYNs and each costs a 1 s retransmit. Real clusters have that too; it is not what this
    # figure measures.
    "front-weights": "10.244.3.13",
    # The remora-ebpf row's client: eBPF interception (no rules) in a pod of its own, so its
    # programs and the iptables rules of front-mesh never meet.
    "front-ebpf": "10.244.3.15",
}


class Env:
    """Everything the setups share: the world, binaries, CPU pinning, the interception mode."""

    def __init__(self, world, build_dir, pin, run_dir):
        self.world = world
        self.build_dir = build_dir
        self.pin = pin  # {"load": cpu|None, "backends": cpu|None, "proxy": cpu|None}
        self.run_dir = run_dir
        self.interception = None  # how front-mesh's REDIRECT rules were installed
        self.remora_help = None
        # The CPU cap's cgroup hierarchy (cpucap.probe): kind "v1"/"v2" and its root, or the
        # reason there is none (then the capped figures are not measured, and the page says so).
        self.cap_kind, self.cap_root, self.cap_reason = None, None, "not probed"
        self.mtls_dir = None  # certificates of the mTLS rows, once prepare_mtls() ran
        # The kernel relay's pins (remora-init relay install on a bpffs of the run's own), or
        # why there are none; made by the first setup that asks (relay_pins()).
        self.relay_dir, self.relay_reason, self.relay_mount = None, None, None
        # The remora-ebpf row: its cgroup v2 (the programs attach there, the load generator
        # runs inside), pin dir and how the install went; made by the row's probe.
        self.ebpf_cgroup, self.ebpf_pins, self.ebpf_reason = None, None, None

    def probe_cap(self):
        self.cap_kind, self.cap_root, self.cap_reason = cpucap.probe(
            f"{self.world.prefix}-probe")
        return self.cap_reason

    def bin(self, name):
        override = os.environ.get("REMORA_BENCH_" + name.upper().replace("-", "_"))
        return override or os.path.join(self.build_dir, "bin", name)

    def ns(self, pod):
        return self.world.ns(pod)

    # -- the world ----------------------------------------------------------------------------
    def build_world(self):
        self.world.create()
        for name, ip in PODS.items():
            self.world.add_pod(name, ip)
        for name in ("bill-v1", "bill-v2"):
            prefix = self.private_dir(f"nginx-{name}", owner=None)
            self.world.spawn(name, self.ns(name),
                             ["nginx", "-p", prefix + "/", "-e", "stderr", "-c",
                              os.path.join(BENCH_DIR, "nginx-backend.conf")],
                             cpu=self.pin["backends"])
        self.world.spawn("iperf3-server", self.ns("bill-v1"), ["iperf3", "-s", "-p", "5201"],
                         cpu=self.pin["backends"])
        for ip in (V1_IP, V2_IP):
            ok = wait_until(lambda ip=ip: measure.served_by(
                measure.http_get(self.world, self.ns("front-direct"), ip, 80, timeout=0.5)), 10)
            if not ok:
                raise BenchError(f"backend {ip} did not come up; see {self.run_dir}/*.log")
        self.install_kube_chains()
        self.prepare_mesh()

    def private_dir(self, name, owner=PROXY_UID):
        path = os.path.join(self.run_dir, name)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(os.path.join(path, "tmp"))
        if owner is not None:
            for p in (path, os.path.join(path, "tmp")):
                os.chown(p, owner, owner)
        return path

    def install_kube_chains(self):
        rules = kube_chains.render(kube_chains.seed_services())
        for pod in ("front-kube", "front-weights"):
            self.world.ns_exec(self.ns(pod), ["iptables-restore", "--noflush"], input_text=rules)

    def install_interception(self, ns):
        """remora-init's default rules in ns (test/bench/default_plan.sh's copy of them when
        remora-init is missing or fails); returns how they were installed."""
        init = self.bin("remora-init")
        reason = None
        if os.access(init, os.X_OK):
            cp = self.world.ns_exec(ns, [init, "install"], check=False)
            saved = self.world.ns_exec(ns, ["iptables-save", "-t", "nat"]).stdout
            if cp.returncode == 0 and "REMORA_OUTPUT" in saved and "--to-ports 15001" in saved:
                return "remora-init install (default flags)"
            reason = (f"`remora-init install` exited {cp.returncode} and left "
                      f"{'no ' if 'REMORA_OUTPUT' not in saved else 'incomplete '}rules")
            self.world.ns_exec(ns, ["iptables", "-t", "nat", "-F"], check=False)
            self.world.ns_exec(ns, ["iptables", "-t", "nat", "-X"], check=False)
        else:
            reason = f"{init} not built"
        plan = run(["bash", os.path.join(BENCH_DIR, "default_plan.sh"), "restore", "4"]).stdout
        self.world.ns_exec(ns, ["iptables-restore", "--noflush"], input_text=plan)
        return ("test/bench/default_plan.sh (the same rules remora-init plans; "
                f"fallback because {reason})")

    def prepare_mesh(self):
        ns = self.ns("front-mesh")
        self.interception = self.install_interception(ns)
        # The proxy's passthrough to RELOAD_VIP fails at once (EHOSTUNREACH) instead of timing
        # out, for the proxy's uid only; the app's packets still route normally and get captured.
        self.world.ns_exec(ns, ["ip", "route", "add", "unreachable", "10.3.0.0/16", "table",
                                str(PROXY_UID)])
        self.world.ns_exec(ns, ["ip", "rule", "add", "uidrange", f"{PROXY_UID}-{PROXY_UID}",
                                "lookup", str(PROXY_UID), "pref", "100"])

    def prepare_mtls(self):
        """The mTLS rows' world, made once (by the first mTLS setup's probe): the two pods, the
        server pod's nginx, interception in both, and the certificates, made with the openssl
        CLI from a fresh test CA (EC P-256): for each pod the layout of `--tls-dir`
        (cert-chain.pem, key.pem, root-cert.pem) plus haproxy.pem (certificate + key, HAProxy's
        `crt`). Returns the certificate directory."""
        if self.mtls_dir:
            return self.mtls_dir
        for name, ip in MTLS_PODS.items():
            self.world.add_pod(name, ip)
        bill = self.ns("bill-mtls")
        prefix = self.private_dir("nginx-bill-mtls", owner=None)
        self.world.spawn("bill-mtls", bill,
                         ["nginx", "-p", prefix + "/", "-e", "stderr", "-c",
                          os.path.join(BENCH_DIR, "nginx-backend.conf")],
                         cpu=self.pin["backends"])
        if not self.wait_listener(bill, 80):
            raise BenchError(f"the bill-mtls nginx did not listen; see {self.run_dir}/bill-mtls.log")
        for pod in MTLS_PODS:
            self.install_interception(self.ns(pod))
        self.mtls_dir = make_mtls_certs(os.path.join(self.run_dir, "mtls"))
        return self.mtls_dir

    def bpffs(self):
        """A bpffs of the run's own, mounted once in the run dir (pins of the kernel relay and
        of the eBPF row), or raises BenchError."""
        if self.relay_mount:
            return self.relay_mount
        mount = os.path.join(self.run_dir, "bpffs")
        os.makedirs(mount, exist_ok=True)
        cp = run(["mount", "-t", "bpf", "bpf", mount, "-o", "mode=0755"], check=False)
        if cp.returncode != 0:
            raise BenchError(f"mounting a bpffs failed: {cp.stderr.strip()}")
        self.relay_mount = mount
        return mount

    def relay_pins(self):
        """The pin dir of the kernel relay (docs/PROXY.md "Kernel relay"), installed once per run
        on the run's bpffs, or None (then relay_reason says why)."""
        if self.relay_dir or self.relay_reason:
            return self.relay_dir
        init = self.bin("remora-init")
        try:
            pins = os.path.join(self.bpffs(), "relay")
        except BenchError as e:
            self.relay_reason = str(e)
            return None
        cp = run([init, "relay", "install", "--pin-dir", pins, "--proxy-uid", str(PROXY_UID),
                  "--proxy-gid", str(PROXY_UID)], check=False, timeout=30)
        if cp.returncode != 0:
            self.relay_reason = (f"`remora-init relay install` exited {cp.returncode}: "
                                 f"{(cp.stderr or cp.stdout).strip()[-300:]}")
            return None
        self.relay_dir = pins
        return pins

    def install_ebpf(self):
        """`remora-init install --mode ebpf` in front-ebpf, attached to a cgroup v2 made for the
        run (named like the cap's cgroups, so bench.sh's trap removes it too) and pinned on the
        run's bpffs. Returns None, or why the row cannot run."""
        if self.ebpf_pins or self.ebpf_reason:
            return self.ebpf_reason
        root = cgroup2_root()
        if root is None:
            self.ebpf_reason = "no cgroup v2 hierarchy to attach the programs to"
            return self.ebpf_reason
        try:
            pins = os.path.join(self.bpffs(), "ebpf")
        except BenchError as e:
            self.ebpf_reason = str(e)
            return self.ebpf_reason
        cgroup = os.path.join(root, f"{self.world.prefix}-ebpf")
        os.makedirs(cgroup, exist_ok=True)
        self.ebpf_cgroup = cgroup
        cp = self.ebpf_init(["install", "--mode", "ebpf", "--cgroup", cgroup,
                             "--bpf-pin-dir", pins])
        if cp.returncode != 0:
            self.ebpf_reason = (f"`remora-init install --mode ebpf` exited {cp.returncode}: "
                                f"{(cp.stderr or cp.stdout).strip()[-300:]}")
            return self.ebpf_reason
        self.ebpf_pins = pins
        return None

    def ebpf_init(self, args):
        # nsenter, not `ip netns exec`: that one mounts a fresh /sys, without the cgroup v2
        # hierarchy the programs attach to.
        return run(["nsenter", f"--net=/run/netns/{self.ns('front-ebpf')}",
                    self.bin("remora-init")] + args, check=False, timeout=30)

    def remove_bpf(self):
        """Uninstalls the eBPF row and the kernel relay, then unmounts the run's bpffs."""
        if self.ebpf_pins and "front-ebpf" in self.world.pods:
            self.ebpf_init(["uninstall", "--mode", "ebpf", "--bpf-pin-dir", self.ebpf_pins])
        self.ebpf_pins = None
        if self.relay_dir:
            run([self.bin("remora-init"), "relay", "uninstall", "--pin-dir", self.relay_dir],
                check=False, timeout=30)
            self.relay_dir = None
        if self.relay_mount:
            run(["umount", "-l", self.relay_mount], check=False)
            self.relay_mount = None
        if self.ebpf_cgroup:
            try:
                os.rmdir(self.ebpf_cgroup)
            except OSError:
                pass  # bench.py reports it among the leftovers
            self.ebpf_cgroup = None

    def remora_flags(self):
        if self.remora_help is None:
            cp = run([self.bin("remora-proxy"), "--help"], check=False, timeout=10)
            self.remora_help = cp.stdout + cp.stderr
        flags = []
        if "--concurrency" in self.remora_help:
            flags += ["--concurrency", "1"]
        if "--log-level" in self.remora_help:
            flags += ["--log-level", "error"]
        flags += os.environ.get("REMORA_BENCH_PROXY_ARGS", "").split()
        return flags

    def wait_listener(self, ns, port, timeout=10):
        def listening():
            out = self.world.ns_exec(ns, ["ss", "-Hltn", f"( sport = :{port} )"], check=False).stdout
            return out.strip() != ""
        return wait_until(listening, timeout, interval=0.02)


def cgroup2_root():
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup/unified on a hybrid machine),
    or None."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "cgroup2":
                return fields[1]
    return None


_home_cgroup = None  # this process's cgroup v2 before enter_cgroup()


def enter_cgroup(path):
    global _home_cgroup
    if _home_cgroup is None:
        with open("/proc/self/cgroup") as f:
            rel = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
        _home_cgroup = os.path.join(cgroup2_root(), rel.lstrip("/"))
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


def leave_cgroup():
    if _home_cgroup is not None:
        with open(os.path.join(_home_cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


def make_mtls_certs(base):
    """A test CA and one certificate per MTLS_IDS entry (URI SAN = the SPIFFE ID, client and
    server auth), with the openssl CLI; readable by the proxies' uid."""
    def openssl(*args):
        run(["openssl"] + list(args))
    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o755)
    ca_key, ca = os.path.join(base, "ca.key"), os.path.join(base, "ca.pem")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", ca_key)
    openssl("req", "-x509", "-new", "-key", ca_key, "-subj", "/CN=remora-bench-ca", "-days", "2",
            "-out", ca)
    for name, ident in MTLS_IDS.items():
        d = os.path.join(base, name)
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o755)
        key, csr, ext = (os.path.join(base, f"{name}.{x}") for x in ("key", "csr", "ext"))
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
        openssl("req", "-new", "-key", key, "-subj", f"/CN={name}", "-out", csr)
        with open(ext, "w") as f:
            f.write(f"subjectAltName=URI:{ident}\nextendedKeyUsage=serverAuth,clientAuth\n")
        cert = os.path.join(d, "cert-chain.pem")
        openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                "-days", "1", "-extfile", ext, "-out", cert)
        shutil.copy(key, os.path.join(d, "key.pem"))
        shutil.copy(ca, os.path.join(d, "root-cert.pem"))
        with open(os.path.join(d, "haproxy.pem"), "w") as f:
            for part in (cert, key):
                with open(part) as src:
                    f.write(src.read())
        for fname in ("cert-chain.pem", "key.pem", "root-cert.pem", "haproxy.pem"):
            os.chmod(os.path.join(d, fname), 0o644)
    return base


class Setup:
    name = ""
    label = ""
    pod = ""
    http_target = BILL_VIP
    iperf_target = IPERF_VIP
    has_proxy = False
    supports_iperf = True
    per_request = False  # an HTTP proxy: connects upstream per request, not per connection
    memory = True  # measured in the memory figure (when it has a proxy)
    note = ""

    def __init__(self, env):
        self.env = env
        self.proc = None
        self.cgroup = None
        self.probed = None

    def unavailable(self):
        """None when the setup can run here, otherwise the reason it cannot."""
        return None

    def probe(self):
        """Runs once the world exists: None when the setup works there, else the reason it
        does not (for rows that need a running proxy to tell, such as Remora's L7)."""
        return None

    @property
    def ns(self):
        return self.env.ns(self.pod)

    def url(self):
        ip, port = self.http_target
        return f"http://{ip}:{port}/"

    def start(self, phase="http"):
        """Starts what the setup needs for `phase` ("http" or "iperf") and checks it serves."""
        if phase == "http":
            body = measure.http_get(self.env.world, self.ns, *self.http_target, timeout=3)
            if not measure.served_by(body):
                raise BenchError(f"{self.name}: GET {self.url()} did not reach a backend")

    def stop(self):
        if self.proc is not None:
            self.env.world.stop(self.proc)
            self.proc = None
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None

    def pids(self):
        return self.proc.tree() if self.proc else []

    def set_cap(self, on):
        """Turns the quarter-CPU quota of the proxy's cgroup on or off; False when there is no
        cgroup (no proxy, or no cpu controller on this machine)."""
        if self.cgroup is None:
            return False
        # Whatever the proxy forked or re-spawned since its start is moved in too.
        self.cgroup.adopt(self.pids())
        self.cgroup.set_cap(on)
        return True


class Direct(Setup):
    name, label, pod = "direct", "direct", "front-direct"
    http_target = (V1_IP, 80)
    iperf_target = (V1_IP, 5201)
    note = "client → backend pod IP; no interception, no proxy"


class KubeProxy(Setup):
    name, label, pod = "kube-proxy", "kube-proxy chains", "front-kube"
    note = "client → ClusterIP, DNAT by KUBE-SERVICES/KUBE-SVC/KUBE-SEP chains (random 50/50)"


class ProxySetup(Setup):
    pod = "front-mesh"
    has_proxy = True
    restart_for_iperf = True

    def argv(self, phase):
        raise NotImplementedError

    def start(self, phase="http"):
        env = self.env
        self.stop()
        procs = None
        if env.cap_kind:
            # A cgroup per start, born before the proxy so all its processes and threads start
            # inside it (nginx master and worker, every remora-proxy thread); no quota until
            # set_cap(True), so the uncapped figures are unaffected.
            self.cgroup = cpucap.CpuCgroup(env.cap_kind, env.cap_root,
                                           f"{env.world.prefix}-{self.name}-{phase}").create()
            procs = self.cgroup.procs_file()
        self.proc = env.world.spawn(f"{self.name}-{phase}", self.ns, self.argv(phase),
                                    cpu=env.pin["proxy"], uid=PROXY_UID, cgroup_procs=procs)
        if not env.wait_listener(self.ns, 15001) or not self.proc.alive():
            tail = self.proc.log_tail()
            self.stop()
            raise BenchError(f"{self.name}: no listener on 15001 (log: {tail or 'empty'})")
        if phase == "http":
            ok = wait_until(lambda: measure.served_by(
                measure.http_get(env.world, self.ns, *self.http_target, timeout=1)), 10, 0.05)
            if not ok:
                tail = self.proc.log_tail()
                self.stop()
                raise BenchError(f"{self.name}: GET {self.url()} through the proxy did not reach "
                                 f"a backend (log: {tail or 'empty'})")

    def ensure(self, phase):
        """Starts the proxy for `phase` unless the running one already serves it."""
        if self.proc is None or self.restart_for_iperf or not self.proc.alive():
            self.start(phase)


class Remora(ProxySetup):
    name, label = "remora", "Remora (kernel relay)"
    restart_for_iperf = False  # one config routes both Services by original destination
    note = ("remora-init REDIRECT rules → remora-proxy, one worker, VirtualService 90/10 "
            "(as `tcp:` routes on a `tcp-http` port: an L4 figure even once L7 exists); "
            "the kernel relay (`remora-init relay install`, `--relay kernel`) when it installs")
    relay = "kernel"  # --relay of this row; "kernel" falls back to uring if the pins fail

    def unavailable(self):
        b = self.env.bin("remora-proxy")
        if not os.access(b, os.X_OK):
            return f"{b} does not exist yet (the proxy issue)"
        missing = [p for p in REMORA_CONFIG_PARTS if not os.path.exists(p)]
        if missing:
            return f"missing config part(s): {', '.join(missing)}"
        try:
            self.config_text()
        except BenchError as e:
            return str(e)
        return None

    def config_text(self):
        return remora_l4_config_text()

    def config_path(self):
        # The proxy runs as 1337 and may not read the source tree; it gets its own copy.
        path = os.path.join(self.env.run_dir, f"{self.name}.yaml")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(self.config_text())
            os.chmod(path, 0o644)
        return path

    def relay_flags(self):
        if self.relay in ("kernel", "auto"):
            pins = self.env.relay_pins()
            if pins:
                return ["--relay", self.relay, "--relay-pin-dir", pins]
            return ["--relay", "uring"]  # the row says so in the run's log (relay_reason)
        return ["--relay", self.relay]

    def argv(self, phase, config=None):
        return [self.env.bin("remora-proxy"), "--config", config or self.config_path()] + \
            self.env.remora_flags() + self.relay_flags() + \
            os.environ.get("REMORA_BENCH_EXTRA", "").split()


class RemoraUring(Remora):
    # The same proxy relaying the bytes itself (io_uring), for the side-by-side with the kernel
    # relay of the remora row.
    name, label = "remora-uring", "Remora (io_uring relay)"
    note = "as Remora (kernel relay), with `--relay uring`: the bytes go through user space"
    relay = "uring"


class RemoraAuto(Remora):
    # Adaptive hand-over (docs/PROXY.md "Kernel relay"): a pair starts in the io_uring relay and
    # goes to the kernel after a few exchanges.
    name, label = "remora-auto", "Remora (auto relay)"
    note = ("as Remora (kernel relay), with `--relay auto`: the io_uring relay first, the kernel "
            "after 3 exchanges")
    relay = "auto"


class RemoraEbpf(Remora):
    # eBPF interception (docs/EBPF.md): the client's connect is rewritten to 15001 by the
    # cgroup connect4 program and the proxy reads the original destination through getsockopt;
    # no iptables rule, no NAT, no conntrack entry. The same proxy and relay as Remora
    # (iptables), so the ratio between the two rows is the interception's cost.
    name, label = "remora-ebpf", "Remora (eBPF)"
    pod = "front-ebpf"
    note = ("`remora-init install --mode ebpf` (cgroup connect4 + getsockopt, sk_lookup "
            "inbound; no rules) → remora-proxy as Remora (kernel relay); the load "
            "generator runs in the cgroup the programs attach to")

    def unavailable(self):
        if not os.path.exists("/sys/kernel/btf/vmlinux"):
            return "the kernel has no BTF (/sys/kernel/btf/vmlinux): eBPF mode cannot load"
        if cgroup2_root() is None:
            return "no cgroup v2 hierarchy to attach the programs to"
        return super().unavailable()

    def probe(self):
        return self.env.install_ebpf()

    starting = False

    def start(self, phase="http"):
        # This process and every client it forks (wrk, iperf3, the probes' sockets) connect
        # from inside the cgroup, as a meshed pod's app would, until stop().
        enter_cgroup(self.env.ebpf_cgroup)
        self.starting = True  # ProxySetup.start stops a previous proxy first: stay inside
        try:
            super().start(phase)
        except BaseException:
            leave_cgroup()
            raise
        finally:
            self.starting = False

    def stop(self):
        super().stop()
        if not self.starting:
            leave_cgroup()


class HaproxyTcp(ProxySetup):
    name, label = "haproxy-tcp", "HAProxy tcp"
    note = "same REDIRECT rules → HAProxy 2.6 mode tcp, nbthread 1, weights 90/10"

    def argv(self, phase):
        cfg = "haproxy-tcp.cfg" if phase == "http" else "haproxy-tcp-iperf.cfg"
        return ["haproxy", "-db", "-f", os.path.join(BENCH_DIR, cfg)]


class RemoraL7(Remora):
    # L7-ROW: remora-proxy routing each HTTP request on its own (issue 10). Same binary, same
    # config and flags as Remora (the seed's bill-service port is named `http`); the row
    # fills in by itself once probe() sees one keep-alive connection answered by both
    # backends, and is then compared with HAProxy http and nginx http, at the same cap.
    name, label = "remora-l7", "Remora (L7)"
    supports_iperf = False
    per_request = True
    memory = False  # the same process as the Remora row
    note = "same REDIRECT rules → remora-proxy routing per HTTP request (issue 10), 90/10"
    PROBE_REQUESTS = 50

    def config_text(self):
        return remora_config_text()  # the seed as it is: bill-service's port is `http`

    def probe(self):
        try:
            self.start("http")
            c = measure.keepalive_split(self.ns, *self.http_target, self.PROBE_REQUESTS)
        except BenchError as e:
            return f"remora-proxy did not serve the L7 probe ({e})"
        finally:
            self.stop()
        if c["v1"] and c["v2"]:
            return None
        return (f"remora-proxy routes per connection, not per request: {self.PROBE_REQUESTS} "
                f"requests on one keep-alive connection went v1 {c['v1']}, v2 {c['v2']}, "
                f"failed {c['failed']} (issue 10 adds per-request routing)")


class HaproxyHttp(ProxySetup):
    name, label = "haproxy-http", "HAProxy http"
    supports_iperf = False
    per_request = True
    memory = False
    note = ("same REDIRECT rules → HAProxy 2.6 mode http, nbthread 1, http-reuse always, "
            "weights 90/10 (the L7 row's peer)")

    def argv(self, phase):
        return ["haproxy", "-db", "-f", os.path.join(BENCH_DIR, "haproxy-http.cfg")]


class NginxStream(ProxySetup):
    name, label = "nginx-stream", "nginx stream"
    note = "same REDIRECT rules → nginx 1.22 stream, 1 worker, weights 90/10"

    def argv(self, phase):
        prefix = self.env.private_dir(f"{self.name}-{phase}")
        cfg = "nginx-stream.conf" if phase == "http" else "nginx-stream-iperf.conf"
        return ["nginx", "-p", prefix + "/", "-e", "stderr", "-c", os.path.join(BENCH_DIR, cfg)]


class NginxHttp(ProxySetup):
    name, label = "nginx-http", "nginx http"
    supports_iperf = False  # an HTTP proxy cannot carry iperf3
    per_request = True
    note = "same REDIRECT rules → nginx 1.22 http proxy, 1 worker, upstream keepalive, 90/10"

    def argv(self, phase):
        prefix = self.env.private_dir(f"{self.name}-{phase}")
        return ["nginx", "-p", prefix + "/", "-e", "stderr", "-c",
                os.path.join(BENCH_DIR, "nginx-http.conf")]


class MtlsPair(ProxySetup):
    """A proxy in each of two pods, mTLS between them (issue 14 §7): the client sidecar in
    front-mtls originates TLS 1.3 with a client certificate toward bill-mtls, whose sidecar
    terminates it (client certificate required) and forwards to nginx. Each sidecar runs in a
    cgroup of its own with the same quarter-CPU cap as the other setups, pinned like them."""
    pod = "front-mtls"
    http_target = MTLS_VIP
    supports_iperf = False
    memory = False
    restart_for_iperf = False
    # (side, pod, port it listens on before it can serve); the server starts first.
    SIDES = (("server", "bill-mtls", 15006), ("client", "front-mtls", 15001))

    def __init__(self, env):
        super().__init__(env)
        self.procs = {}
        self.side_cgroups = {}

    def unavailable(self):
        if not shutil.which("openssl"):
            return "the openssl CLI is missing (it makes the certificates)"
        return None

    def probe(self):
        try:
            self.env.prepare_mtls()
        except BenchError as e:
            return f"the mTLS pods could not be set up ({e})"
        return None

    def side_argv(self, side):
        raise NotImplementedError

    def side_env(self):
        return None

    def start(self, phase="http"):
        env = self.env
        self.stop()
        for side, pod, port in self.SIDES:
            procs = None
            if env.cap_kind:
                cg = cpucap.CpuCgroup(env.cap_kind, env.cap_root,
                                      f"{env.world.prefix}-{self.name}-{side}").create()
                self.side_cgroups[side] = cg
                self.cgroup = cpucap.CgroupSet(self.side_cgroups.values())
                procs = cg.procs_file()
            ns = env.ns(pod)
            proc = env.world.spawn(f"{self.name}-{side}", ns, self.side_argv(side),
                                   cpu=env.pin["proxy"], uid=PROXY_UID, env=self.side_env(),
                                   cgroup_procs=procs)
            self.procs[side] = proc
            if not env.wait_listener(ns, port) or not proc.alive():
                tail = proc.log_tail()
                self.stop()
                raise BenchError(f"{self.name}: the {side} sidecar has no listener on {port} "
                                 f"(log: {tail or 'empty'})")
        ok = wait_until(lambda: measure.served_by(
            measure.http_get(env.world, self.ns, *self.http_target, timeout=1)), 10, 0.05)
        if not ok:
            tails = "; ".join(f"{s}: {p.log_tail() or 'empty'}" for s, p in self.procs.items())
            self.stop()
            raise BenchError(f"{self.name}: GET {self.url()} through both sidecars did not "
                             f"reach the backend (logs: {tails})")

    def stop(self):
        for proc in self.procs.values():
            self.env.world.stop(proc)
        self.procs = {}
        if self.cgroup is not None:
            self.cgroup.remove()
        self.cgroup = None
        self.side_cgroups = {}

    def pids(self):
        return [pid for proc in self.procs.values() for pid in proc.tree()]

    def set_cap(self, on):
        if not self.side_cgroups:
            return False
        for side, cg in self.side_cgroups.items():
            cg.adopt(self.procs[side].tree())
            cg.set_cap(on)
        return True


class RemoraMtls(MtlsPair):
    name, label = "remora-mtls", "Remora mTLS"
    note = ("front-mtls: REDIRECT → remora-proxy originating mTLS (auto mTLS, TLS 1.3) → "
            "bill-mtls: inbound REDIRECT → remora-proxy terminating (PeerAuthentication STRICT) "
            "→ nginx; one worker each")

    def unavailable(self):
        b = self.env.bin("remora-proxy")
        if not os.access(b, os.X_OK):
            return f"{b} does not exist"
        self.env.remora_flags()  # reads and keeps `remora-proxy --help`
        if "--tls-dir" not in self.env.remora_help:
            return "remora-proxy has no --tls-dir (issue 14)"
        return super().unavailable()

    def config_path(self):
        path = os.path.join(self.env.prepare_mtls(), "mesh.yaml")
        if not os.path.exists(path):
            shutil.copy(os.path.join(BENCH_DIR, "remora-mtls.yaml"), path)
            os.chmod(path, 0o644)
        return path

    def side_argv(self, side):
        certs = os.path.join(self.env.prepare_mtls(), "front" if side == "client" else "bill")
        return [self.env.bin("remora-proxy"), "--config", self.config_path(), "--tls-dir",
                certs] + self.env.remora_flags()


class HaproxyMtls(MtlsPair):
    name, label = "haproxy-mtls", "HAProxy mTLS"
    note = ("front-mtls: REDIRECT → HAProxy 2.6 `server … ssl verify required crt … ca-file …` "
            "→ bill-mtls: inbound REDIRECT → HAProxy `bind … ssl crt … verify required "
            "ca-file …` → nginx; nbthread 1 each")

    def side_env(self):
        return {"MTLS_DIR": self.env.prepare_mtls()}

    def side_argv(self, side):
        return ["haproxy", "-db", "-f", os.path.join(BENCH_DIR, f"haproxy-mtls-{side}.cfg")]


ALL = [Direct, KubeProxy, Remora, RemoraUring, RemoraAuto, RemoraEbpf, RemoraL7, HaproxyTcp, NginxStream, NginxHttp,
       HaproxyHttp, RemoraMtls, HaproxyMtls]
DEFAULT = ["direct", "kube-proxy", "remora", "remora-uring", "remora-auto", "remora-ebpf", "remora-l7", "haproxy-tcp",
           "nginx-stream", "nginx-http", "haproxy-http", "remora-mtls", "haproxy-mtls"]
# The L4 proxies of the headline (all compared with HAProxy tcp) and the L7 ones (with HAProxy
# http and nginx http).
L4_PROXIES = ["remora", "remora-uring", "remora-auto", "remora-ebpf", "nginx-stream", "haproxy-tcp"]
L7_PROXIES = ["remora-l7", "nginx-http", "haproxy-http"]
MTLS_PROXIES = ["remora-mtls", "haproxy-mtls"]  # two sidecars each, compared with each other


def make(env, names):
    by_name = {cls.name: cls for cls in ALL}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise BenchError(f"unknown setup(s) {unknown}; known: {sorted(by_name)}")
    return [by_name[n](env) for n in names]

