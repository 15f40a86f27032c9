#!/usr/bin/python3
"""bench_cluster.py - gpt-train's data-parallel step on the emulated cluster, for the scaling
model (bench/scaling_model.py, docs/scaling.md). Root only (network namespaces).

For each node count and link rate, a fresh cluster (tests/cluster/netns_cluster.sh: one rank
per node, each node's link shaped both ways by tc tbf) runs the overlap shape (4 layers, n_embd
128, block 64, batch 8 per rank, vocab 2000: 1.06M parameters, 4.2 MB of fp32 gradient) with
the fp32 and the bf16 exchange; the same ranks on one machine over shared memory give the
compute alone. Writes one JSON record per run: the median step, the exchange line's figures
(bytes, blocking exchange, backward, exposed wait, share hidden), the machine and its load.

    sudo /usr/bin/python3 bench/bench_cluster.py [--nodes 2,4] [--rates 100mbit,400mbit]
        [--steps 30] [--build build] [--out bench/scaling_measurements.json]

About 5 minutes with the defaults. Timings depend on the load: take them in a quiet window
(the file records the load average before and after each run).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "cluster"))
sys.path.insert(0, os.path.join(SRC, "tests"))

SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=8, vocab=2000)


def shape_args():
    return ["--n-layer", SHAPE["n_layer"], "--n-head", SHAPE["n_head"], "--n-embd", SHAPE["n_embd"],
            "--block-size", SHAPE["block_size"], "--batch-size", SHAPE["batch_size"], "--dropout", "0",
            "--warmup", "2", "--eval-every", "0", "--eval-batches", "1", "--ckpt-every", "0", "--log-every", "1"]


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def inner(args):
    """Inside one cluster: fp32 and bf16 runs; prints one JSON line per run."""
    import clusterlib as cl
    for dtype in args.dtypes.split(","):
        run = tempfile.mkdtemp(prefix="bench_cluster_", dir=args.tmp)
        load0 = os.getloadavg()[0]
        r = cl.train(args.np, ["--data", args.tokens, "--out", run, "--steps", args.steps, "--allreduce-dtype", dtype,
                               *shape_args()], cluster=os.environ.get("GT_CLUSTER_DIR"), timeout=1800)
        x = cl.exchange(r.out)
        if r.rc != 0 or not x:
            print("run failed:\n" + r.describe(), file=sys.stderr)
            sys.exit(1)
        x.update(nodes=args.np, rate=args.rate, step=cl.median_step_ms(run), load=[load0, os.getloadavg()[0]])
        print("RESULT " + json.dumps(x), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", default="2,4")
    ap.add_argument("--rates", default="100mbit,400mbit")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--out", default=os.path.join(SRC, "bench", "scaling_measurements.json"))
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--np", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--rate", help=argparse.SUPPRESS)
    ap.add_argument("--tokens", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    a = ap.parse_args()
    os.environ["GT_BUILD"] = os.path.abspath(a.build)
    if a.inner:
        return inner(a)
    import clusterlib as cl
    import testlib as tl
    cl.need_root_or_skip()
    tmp = tempfile.mkdtemp(prefix="bench_cluster_")
    text = tl.shared_data("tinyshakespeare.txt", skip_why="the measurements use its 2000-token vocabulary")
    bpe = os.path.join(a.build, "gpt-bpe")
    voc, tok = os.path.join(tmp, "vocab.h5"), os.path.join(tmp, "tokens.h5")
    subprocess.run([bpe, "train", "--input", text, "--out", voc, "--vocab-size", str(SHAPE["vocab"])], check=True,
                   capture_output=True)
    subprocess.run([bpe, "encode", "--vocab", voc, "--input", text, "--out", tok], check=True, capture_output=True)
    records = []
    common = ["--steps", str(a.steps), "--tokens", tok, "--tmp", tmp, "--build", a.build, "--dtypes", a.dtypes]
    me = os.path.abspath(__file__)
    for n in [int(x) for x in a.nodes.split(",")]:
        # Shared memory: the same ranks with an effectively unlimited link (compute alone).
        p = subprocess.run([sys.executable, me, "--inner", "--np", str(n), "--rate", "shm"] + common,
                           capture_output=True, text=True)
        records += [json.loads(l[7:]) for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        for rate in a.rates.split(","):
            p = subprocess.run(["bash", cl.SCRIPT, "run", str(n), rate, "--", sys.executable, me, "--inner", "--np",
                                str(n), "--rate", rate] + common, capture_output=True, text=True)
            got = [json.loads(l[7:]) for l in p.stdout.splitlines() if l.startswith("RESULT ")]
            if not got:
                sys.exit("%d nodes at %s failed:\n%s%s" % (n, rate, p.stdout[-3000:], p.stderr[-3000:]))
            records += got
        for x in records[-(1 + len(a.rates.split(","))) * len(a.dtypes.split(",")):]:
            print("%d %-8s %-5s step %7.1f ms  backward %6.1f  blocking %6.1f  exposed %6.1f  hidden %5.1f%%  "
                  "%.2f MB  load %.1f-%.1f" % (x["nodes"], x["rate"], x["dtype"], x["step"], x["backward"],
                                               x["blocking"], x["exposed"], x["hidden"], x["mb"], *x["load"]),
                  flush=True)
    out = dict(cpu=cpu_name(), cores=os.cpu_count(), date=time.strftime("%Y-%m-%d %H:%M"), shape=SHAPE,
               command="sudo /usr/bin/python3 bench/bench_cluster.py " + " ".join(sys.argv[1:]), runs=records)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote " + a.out)
    subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
