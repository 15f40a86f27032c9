"""clusterlib.py - gpt-train on the emulated cluster (tests/cluster/netns_cluster.sh): what the
cluster tests and bench/bench_cluster.py share.

    need_root_or_skip()             skip (exit 77) with the reason unless namespaces can be made
    in_cluster(n, rate, argv)       re-runs this script inside a fresh n-node cluster (the shell
                                    script's trap removes it, even after a failure); returns
                                    the Result and the cluster's id, for leftover_of()
    leftover_of(cid, words)         namespaces, links or processes left by that cluster
    train(np_, args, cluster)       gpt-train under mpirun, on the cluster (one rank per node) or
                                    on this machine (cluster None)
    exchange(text)                  the end-of-run exchange line as numbers
"""
import os
import re
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
import testlib as tl  # noqa: E402

SCRIPT = os.path.join(HERE, "netns_cluster.sh")


def need_root_or_skip():
    if os.geteuid() != 0:
        tl.skip("the emulated cluster needs root (network namespaces, veth, tc)")
    for t in ("ip", "tc"):
        if not shutil.which(t):
            tl.skip("%s is not installed (iproute2)" % t)
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if r.returncode != 0:
        tl.skip("ip netns does not work here: " + r.stderr.strip())


def in_cluster(n, rate, argv, timeout=600):
    """Runs `python3 argv...` inside an n-node cluster at `rate`; its output streams through.
    Returns (rc, cluster id). The id is printed by the inner run as 'cluster: ID'."""
    cmd = ["bash", SCRIPT, "run", str(n), rate, "--", sys.executable] + [str(a) for a in argv]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=tl.env())
    cid = None
    try:
        for line in p.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            m = re.match(r"^cluster: (\d+)$", line.strip())
            if m:
                cid = m.group(1)
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.terminate()  # the script's trap tears the cluster down
        p.wait(timeout=60)
    return p.returncode, cid


def cluster_id():
    with open(os.path.join(os.environ["GT_CLUSTER_DIR"], "id")) as f:
        return f.read().strip()


def leftover_of(cid, words=()):
    """What a cluster left behind: its namespaces, its veths and bridge, and any process whose
    command line holds one of `words` (the test's directory)."""
    left = []
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left += ["namespace " + l.split()[0] for l in ns.splitlines() if l.startswith("gtn%s-" % cid)]
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    left += ["link " + l.split()[0] for l in links.splitlines()
             if l.startswith("gtv%s-" % cid) or l.split()[0] == "gtb%s" % cid]
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if any(w and w in cmd for w in words) and "test_cluster.py" not in cmd:
            left.append("process %s: %s" % (pid, cmd[:120]))
    return left


def train(np_, args, cluster=None, timeout=600, extra_env=None):
    """gpt-train with args under mpirun: on the cluster (one rank per node), else here."""
    gpt = tl.tool("gpt-train")
    if cluster:
        cmd = ["bash", SCRIPT, "mpirun", cluster, str(np_), gpt] + [str(a) for a in args]
    else:
        cmd = tl.mpirun(np_, gpt, *args)
    return tl.run(cmd, timeout=timeout, extra_env=dict({"GT_PROGRESS": "0"}, **(extra_env or {})))


EXCHANGE = re.compile(
    r"allreduce \((?P<dtype>\w+)\): (?P<mb>[\d.]+) MB sent per rank per step; one blocking exchange "
    r"(?P<blocking>[\d.]+) ms; backward (?P<backward>[\d.]+) ms/step, exposed after it (?P<exposed>[\d.]+) ms/step: "
    r"(?P<hidden>[\d.]+)% of the blocking exchange hidden; (?P<done>[\d.]+)% of the gradient done when backward ended")


def exchange(text):
    """The end-of-run exchange line as a dict of floats (and dtype), or None."""
    m = EXCHANGE.search(text)
    if not m:
        return None
    d = {k: float(v) for k, v in m.groupdict().items() if k != "dtype"}
    d["dtype"] = m.group("dtype")
    return d


def median_step_ms(run, skip=2):
    """The median ms_per_step of RUN/metrics.csv's rows after the first `skip`."""
    import csv
    with open(os.path.join(run, "metrics.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["ms_per_step"]]
    return statistics.median(float(r["ms_per_step"]) for r in rows[skip:] or rows)


def rate_mbit(rate):
    m = re.match(r"^(\d+)(mbit|gbit)$", rate)
    return int(m.group(1)) * (1000 if m.group(2) == "gbit" else 1)
