"""iptables-restore input shaped like kube-proxy's iptables mode (nat table).

Shape (REFERENCES.md, "kube-proxy iptables mode"): OUTPUT and PREROUTING jump to KUBE-SERVICES,
which has one rule per Service port matching clusterIP/port and jumping to that port's KUBE-SVC-*
chain. A KUBE-SVC-* chain marks off-cluster sources for masquerade, then picks an endpoint with
n-1 `statistic --mode random --probability` rules (printed with 10 decimals, as kube-proxy does)
and a final fallthrough. Each KUBE-SEP-* chain marks hairpin traffic and DNATs to its endpoint.
Chain names are the first 16 base32 characters of a SHA-256 of the service port name (and
endpoint), which is how kube-proxy names them.

The chains are installed in the client pod's own nat OUTPUT path, where the first packet of a
connection walks them, exactly as it walks them in the node's PREROUTING on a real node.
"""

import base64
import hashlib

POD_CIDR = "10.244.0.0/16"


def _hash16(text):
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


class Service:
    def __init__(self, namespace, name, port_name, cluster_ip, port, endpoints, probabilities=None):
        """endpoints: [(ip, port)]; probabilities: per-rule values (len(endpoints)-1), or None for
        kube-proxy's own 1/(n-i)."""
        self.namespace, self.name, self.port_name = namespace, name, port_name
        self.cluster_ip, self.port = cluster_ip, port
        self.endpoints = endpoints
        n = len(endpoints)
        self.probabilities = probabilities or [1.0 / (n - i) for i in range(n - 1)]

    @property
    def port_id(self):
        return f"{self.namespace}/{self.name}:{self.port_name}"


def render(services):
    chains = ["KUBE-SERVICES", "KUBE-MARK-MASQ", "KUBE-POSTROUTING", "KUBE-NODEPORTS"]
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
    ]
    per_service = []
    for svc in services:
        svc_chain = "KUBE-SVC-" + _hash16(svc.port_id + "tcp")
        chains.append(svc_chain)
        comment = f'"{svc.port_id} cluster IP"'
        rules.append(f"-A KUBE-SERVICES -d {svc.cluster_ip}/32 -p tcp -m comment --comment "
                     f"{comment} -m tcp --dport {svc.port} -j {svc_chain}")
        per_service.append(f"-A {svc_chain} ! -s {POD_CIDR} -d {svc.cluster_ip}/32 -p tcp "
                           f"-m comment --comment {comment} -m tcp --dport {svc.port} "
                           "-j KUBE-MARK-MASQ")
        for i, (ip, port) in enumerate(svc.endpoints):
            ep = f"{ip}:{port}"
            sep_chain = "KUBE-SEP-" + _hash16(svc.port_id + "tcp" + ep)
            chains.append(sep_chain)
            stat = ""
            if i < len(svc.probabilities):
                stat = f" -m statistic --mode random --probability {svc.probabilities[i]:.10f}"
            per_service.append(f'-A {svc_chain} -m comment --comment "{svc.port_id} -> {ep}"'
                               f"{stat} -j {sep_chain}")
            per_service.append(f'-A {sep_chain} -s {ip}/32 -m comment --comment "{svc.port_id}" '
                               "-j KUBE-MARK-MASQ")
            per_service.append(f'-A {sep_chain} -p tcp -m comment --comment "{svc.port_id}" '
                               f"-m tcp -j DNAT --to-destination {ep}")
    rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this '
                 'must be the last rule in this chain" -m addrtype --dst-type LOCAL '
                 "-j KUBE-NODEPORTS")
    lines = ["*nat"] + [f":{c} - [0:0]" for c in chains] + rules + per_service + ["COMMIT", ""]
    return "\n".join(lines)


BILL_V1 = ("10.244.1.168", 80)
BILL_V2 = ("10.244.2.74", 80)


def seed_services():
    """The bench's kube-proxy view of the seed: bill-service split 50/50 as kube-proxy does, a
    single-endpoint iperf Service, and a copy of bill-service weighted with --probability 0.9
    (the only way iptables can weight) for the weight-accuracy figure."""
    return [
        Service("istio-demo", "bill-service", "http", "10.1.122.241", 9999, [BILL_V1, BILL_V2]),
        Service("istio-demo", "bill-iperf", "tcp-iperf", "10.1.122.242", 5201,
                [("10.244.1.168", 5201)]),
        Service("istio-demo", "bill-service-weighted", "http", "10.1.122.243", 9999,
                [BILL_V1, BILL_V2], probabilities=[0.9]),
    ]


def filler_ip(i):
    """ClusterIP of the i-th filler Service (10.2.0.0/16; never the seed's 10.1.122.x)."""
    return f"10.2.{i // 250}.{i % 250 + 1}"


def scaled_services(n):
    """n Service ports: n-1 fillers, then the seed's bill-service last, so its first packet walks
    the whole KUBE-SERVICES chain."""
    out = [Service("istio-demo", f"svc-{i}", "http", filler_ip(i), 9999, [BILL_V1, BILL_V2])
           for i in range(n - 1)]
    out.append(seed_services()[0])
    return out
