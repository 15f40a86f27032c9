#!/usr/bin/python3
"""test_cluster.py - gpt-train across an emulated multi-node cluster (docs/scaling.md): network
namespaces as nodes, each on its own rate-limited link to a bridge, Open MPI over TCP between
them (tests/cluster/netns_cluster.sh). Root only: skips (77) with the reason elsewhere.

    test_cluster.py exact|overlap|linkdown|cleanup

exact     4 nodes: 16 steps with --check-sync end with the same weights, AdamW moments and
          metrics, bit for bit, as 4 ranks on one machine (shared memory), for the fp32 and
          the bf16 exchange.
overlap   4 nodes at 100 and at 400 Mbit/s, fp32 and bf16: step time, backward, the blocking
          exchange, the exposed wait and the share hidden, reported as a table (timings are
          not asserted, but the shaping is: the blocking exchange at 100 Mbit/s takes at least
          0.8x the time its bytes need at that rate); bf16 sends <= 0.55x fp32's bytes.
linkdown  4 nodes, one node's link taken down mid-run (ip link set ... down): the watchdog
          (--collective-timeout 5) fires on the other ranks naming that node's rank, every
          gpt-train is gone within S + 20 s, the node's own rank too (its watchdog fires as
          well; its line reaches mpirun only over the healed link). mpirun itself waits for
          the cut-off node's daemon until the link is back: healed, it ends with exit 2, and
          --resume on the healed cluster finishes the run.
cleanup   after every part: no namespace, veth, bridge or process of it left; and the script
          cleans up after a command that fails and after SIGTERM.
"""
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(HERE, "..", "faults"))
import clusterlib as cl  # noqa: E402
import faultlib as fl  # noqa: E402
import testlib as tl  # noqa: E402

TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
        "--dropout", "0.1", "--warmup", "4", "--lr", "3e-3", "--eval-batches", "2"]
# The overlap shape: ~1.06M parameters (4.2 MB of fp32 gradient), as in the first measurement
# of the notes that motivated the progress thread (docs/scaling.md).
SHAPE = ["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--block-size", "64", "--batch-size", "8",
         "--dropout", "0", "--warmup", "2", "--eval-every", "0", "--eval-batches", "1", "--ckpt-every", "0"]
PLAN = {"exact": (4, "400mbit"), "overlap": (4, "100mbit"), "linkdown": (4, "400mbit")}


def same_checkpoints(a, b):
    import h5py
    import numpy as np
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for g in ("model", "optimizer/m", "optimizer/v"):
            for k in fa[g]:
                if not np.array_equal(fa[g][k][()], fb[g][k][()]):
                    return "%s/%s differs" % (g, k)
    return ""


def metrics_cols(run, cols=("step", "train_loss", "val_loss", "grad_norm")):
    import csv
    with open(os.path.join(run, "metrics.csv")) as f:
        return [[r[c] for c in cols] for r in csv.DictReader(f)]


# ---------------------------------------------------------------- inside the cluster
def part_exact(c, d, tokens, cluster):
    for dtype in ("fp32", "bf16"):
        runs = {}
        for where in ("cluster", "local"):
            run = os.path.join(d, "exact-%s-%s" % (dtype, where))
            r = cl.train(4, ["--data", tokens, "--out", run, "--steps", 16, "--log-every", 4, "--eval-every", 8,
                             "--check-sync", "--allreduce-dtype", dtype, *TINY],
                         cluster=cluster if where == "cluster" else None, timeout=300)
            c.ok(r.rc == 0, "exact %s: 4 ranks on %s, 16 steps with --check-sync" %
                 (dtype, "4 nodes" if where == "cluster" else "one machine"), r.describe())
            runs[where] = run
        ck = "ckpt-00000016.h5"
        why = same_checkpoints(os.path.join(runs["cluster"], ck), os.path.join(runs["local"], ck))
        c.ok(not why, "exact %s: 4 nodes end with the weights and moments of 4 ranks on one machine, bit for bit"
             % dtype, why)
        c.ok(metrics_cols(runs["cluster"]) == metrics_cols(runs["local"]),
             "exact %s: the same losses and norms in metrics.csv" % dtype)


def part_overlap(c, d, tokens, cluster):
    rows = []
    for rate in ("100mbit", "400mbit"):
        subprocess.run(["bash", cl.SCRIPT, "rate", cluster, rate], check=True)
        for dtype in ("fp32", "bf16"):
            run = os.path.join(d, "overlap-%s-%s" % (rate, dtype))
            r = cl.train(4, ["--data", tokens, "--out", run, "--steps", 12, "--log-every", 1,
                             "--allreduce-dtype", dtype, *SHAPE], cluster=cluster, timeout=600)
            x = cl.exchange(r.out)
            if not c.ok(r.rc == 0 and x, "overlap %s %s: the run and its exchange line" % (rate, dtype), r.describe()):
                continue
            x.update(rate=rate, step=cl.median_step_ms(run))
            rows.append(x)
    print("\n4 nodes, %s   (median step after 2; exchange figures per step)" % SHAPE_TEXT)
    print("%-8s %-5s %9s %9s %9s %9s %9s %8s %8s" % ("link", "wire", "MB sent", "step ms", "backward", "blocking",
                                                    "exposed", "hidden", "done"))
    for x in rows:
        print("%-8s %-5s %9.2f %9.1f %9.1f %9.1f %9.1f %7.1f%% %7.1f%%" % (
            x["rate"], x["dtype"], x["mb"], x["step"], x["backward"], x["blocking"], x["exposed"], x["hidden"],
            x["done"]))
    print(flush=True)
    by = {(x["rate"], x["dtype"]): x for x in rows}
    for rate in ("100mbit", "400mbit"):
        f, b = by.get((rate, "fp32")), by.get((rate, "bf16"))
        if f and b:
            c.ok(b["mb"] <= 0.55 * f["mb"], "%s: bf16 sends %.2f MB per rank per step, <= 0.55x fp32's %.2f MB" %
                 (rate, b["mb"], f["mb"]))
        for x in (f, b):
            if x:
                c.ok(0 <= x["hidden"] <= 100 and 0 <= x["done"] <= 100 and x["step"] > x["exposed"] >= 0,
                     "%s %s: figures in range" % (rate, x["dtype"]), str(x))
    for dtype in ("fp32", "bf16"):
        x = by.get(("100mbit", dtype))
        if x:
            ideal = x["mb"] * 8 / 100.0 * 1000  # ms for the bytes at 100 Mbit/s
            c.ok(x["blocking"] >= 0.8 * ideal, "100 Mbit/s is real: %s's blocking exchange %.0f ms >= 0.8 x the %.0f ms "
                 "its bytes need" % (dtype, x["blocking"], ideal))


def rank_processes(cluster):
    """{namespace: [comm names]} of the processes in each node."""
    out = {}
    with open(os.path.join(cluster, "nodes")) as f:
        nodes = [l.split()[1] for l in f if l.strip()]
    for ns in nodes:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        names = []
        for p in pids:
            try:
                with open("/proc/%s/comm" % p) as f:
                    names.append(f.read().strip())
            except OSError:
                pass
        out[ns] = names
    return out


def part_linkdown(c, d, tokens, cluster):
    S = 5
    run = os.path.join(d, "linkdown")
    gpt = tl.tool("gpt-train")
    log = os.path.join(d, "linkdown.log")
    args = ["--data", tokens, "--out", run, "--steps", 100000, "--ckpt-every", 50, "--log-every", 50,
            "--eval-every", 0, "--collective-timeout", S, "--n-layer", 1, "--n-head", 2, "--n-embd", 16,
            "--block-size", 8, "--batch-size", 2]
    p = tl.spawn(["bash", cl.SCRIPT, "mpirun", cluster, 4, gpt] + args, log, extra_env={"GT_PROGRESS": "0"})
    deadline = time.time() + 120
    while time.time() < deadline and not os.path.exists(os.path.join(run, "ckpt-00000100.h5")):
        time.sleep(0.1)
    # Node 3 holds rank 2 (--map-by node).
    subprocess.run(["bash", cl.SCRIPT, "link", cluster, "3", "down"], check=True)
    t0 = time.time()
    gone = None
    while time.time() - t0 < S + 40:
        if not any("gpt-train" in n for names in rank_processes(cluster).values() for n in names):
            gone = time.time() - t0
            break
        time.sleep(0.2)
    c.ok(gone is not None and gone < S + 20, "link down: every rank is gone within S + 20 s (%s s), the cut-off "
         "node's too" % ("%.1f" % gone if gone is not None else "not"), str(rank_processes(cluster)))
    subprocess.run(["bash", cl.SCRIPT, "link", cluster, "3", "up"], check=True)
    try:
        rc = p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        tl.kill_group(p)
        rc = "timeout"
    with open(log, errors="replace") as f:
        text = f.read()
    lines = [l for l in text.splitlines() if "made no progress" in l]
    c.ok(rc == 2, "link down: mpirun ends with exit 2 once the link is healed", "rc=%s\n%s" % (rc, text[-2000:]))
    # The cut-off rank's own line reaches mpirun only once the link is back, if at all.
    pat = re.compile(r"^gpt-train: error: rank [013] of 4: step \d+: .* made no progress for %d s "
                     r"\(--collective-timeout %d\): rank 2 did not arrive; RUN/latest names the last complete "
                     r"checkpoint" % (S, S))
    others = [l for l in lines if not l.startswith("gpt-train: error: rank 2 of 4:")]
    c.ok(others and all(pat.match(l) for l in others), "link down: the other ranks' lines name rank 2 (node 3)",
         "\n".join(lines) or text[-2000:])
    step = fl.ckpt_step(tl.latest(run))
    c.ok(step is not None and step >= 100, "link down: RUN/latest names a complete checkpoint (step %s)" % step)
    newest = max(int(f[5:13]) for f in os.listdir(run) if re.match(r"^ckpt-\d{8}\.h5$", f))
    r = cl.train(4, ["--data", tokens, "--out", run, "--resume", "--steps", newest + 20], cluster=cluster, timeout=300)
    c.ok(r.rc == 0 and os.path.exists(os.path.join(run, "ckpt-%08d.h5" % (newest + 20))),
         "link down: --resume on the healed cluster finishes the run (to step %d)" % (newest + 20), r.describe())


def inside(part, d, tokens):
    print("cluster: %s" % cl.cluster_id(), flush=True)
    c = tl.Checks("test_cluster %s" % part)
    {"exact": part_exact, "overlap": part_overlap, "linkdown": part_linkdown}[part](
        c, d, tokens, os.environ["GT_CLUSTER_DIR"])
    c.finish()


# ---------------------------------------------------------------- outside
def make_tokens(d):
    text = tl.shared_data("tinyshakespeare.txt")
    if not text:
        _, _, tokens = fl.make_tokens(tl.tool("gpt-bpe"), d, 300000)
        return tokens
    bpe = tl.tool("gpt-bpe")
    voc, tok = os.path.join(d, "vocab.h5"), os.path.join(d, "tokens.h5")
    tl.run_ok([bpe, "train", "--input", text, "--out", voc, "--vocab-size", "2000"])
    tl.run_ok([bpe, "encode", "--vocab", voc, "--input", text, "--out", tok])
    return tok


def check_clean(c, what, cid, d):
    left = cl.leftover_of(cid, [d]) if cid else ["(the cluster never came up)"]
    c.ok(not left, "%s: no namespace, veth, bridge or process left" % what, "\n".join(left))


def part_cleanup(c, d):
    # A command that fails, leaving a process in a node (a sleep of a length nobody else uses).
    left = "sleep 300.%d" % (os.getpid() % 100000)
    mark = os.path.join(d, "in-the-node")
    p = subprocess.run(["bash", cl.SCRIPT, "run", "2", "100mbit", "--", "sh", "-c",
                        "cat $GT_CLUSTER_DIR/id; ip netns exec $(awk 'NR==1{print $2}' $GT_CLUSTER_DIR/nodes) "
                        "sh -c 'touch %s; exec %s' & while [ ! -e %s ]; do sleep 0.05; done; exit 3"
                        % (mark, left, mark)], capture_output=True, text=True, timeout=120)
    cid = p.stdout.split()[0] if p.stdout.split() else None
    c.ok(p.returncode == 3, "a failing command's status comes back (3)", p.stderr)
    check_clean(c, "after a failing command (with a process left running in a node)", cid, left)
    # SIGTERM to the script while its command runs.
    running = "sleep 301.%d" % (os.getpid() % 100000)
    q = subprocess.Popen(["bash", cl.SCRIPT, "run", "2", "100mbit", "--", "sh", "-c",
                          "cat $GT_CLUSTER_DIR/id; exec %s" % running], stdout=subprocess.PIPE, text=True)
    cid = q.stdout.readline().strip()
    time.sleep(0.5)
    q.send_signal(signal.SIGTERM)
    try:
        q.wait(timeout=30)
    except subprocess.TimeoutExpired:
        q.kill()
    c.ok(q.returncode is not None and q.returncode != 0, "SIGTERM ends the script (status %s)" % q.returncode)
    check_clean(c, "after SIGTERM", cid, running)


SHAPE_TEXT = "4 layers, n_embd 128, block 64, batch 8, vocab 2000 (or the fallback corpus's 320)"


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--inside":
        inside(sys.argv[2], sys.argv[3], sys.argv[4])
    if len(sys.argv) != 2 or sys.argv[1] not in ("exact", "overlap", "linkdown", "cleanup"):
        sys.exit("usage: test_cluster.py exact|overlap|linkdown|cleanup")
    cl.need_root_or_skip()
    tl.require("gpt-train", "gpt-bpe")
    part = sys.argv[1]
    c = tl.Checks("test_cluster " + part)
    d = tl.tmpdir("gt_cluster_")
    if part == "cleanup":
        part_cleanup(c, d)
    else:
        tokens = make_tokens(d)
        n, rate = PLAN[part]
        rc, cid = cl.in_cluster(n, rate, [os.path.abspath(__file__), "--inside", part, d, tokens])
        c.ok(rc == 0, "%s inside a %d-node cluster at %s" % (part, n, rate), "exit %s" % rc)
        check_clean(c, part, cid, d)
    tl.rmtree(d)
    c.finish()


if __name__ == "__main__":
    main()
