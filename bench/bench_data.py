#!/usr/bin/python3
"""bench_data.py - what reading the training data costs gpt-train: start-up time, time per
step and peak memory of one rank, on a corpus that fits the data cache and on one that does not,
for one or more builds side by side (e.g. before and after a change to the data loader).

A tiny model (1 layer, 32 embd, block 64, batch 32) makes each step cheap, so the data's
share of it shows; real models spend far longer per step on the same windows. The corpora are
random ids under a real 2000-token vocabulary, written as gpt-bpe writes tokens.h5 (uint16,
chunks of 65536 with Fletcher-32).

    /usr/bin/python3 bench/bench_data.py [--build build] [--build /tmp/old-build] [--steps 200]
        [--sizes 2e6,2e8]

Prints one row per build and corpus: tokens, start-up seconds (wall, to the first step),
median wall ms per step, CPU ms per step (CPU time of a --steps N run minus that of a
2-step run, over N-2 steps: what a step costs, whatever else the machine runs), and peak
RSS in MB. Not a test: wall timings depend on the machine and its load.
"""
import argparse
import csv
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "faults"))
import faultlib as fl  # noqa: E402

MODEL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "64", "--batch-size", "32",
         "--dropout", "0", "--eval-every", "0", "--eval-batches", "1", "--ckpt-every", "0", "--log-every", "1",
         "--warmup", "2"]


def make_tokens(bpe, d, n):
    """tokens.h5 of n random ids (vocabulary 2000) with the /tokenizer of a real vocab.h5."""
    import h5py
    import numpy as np
    vocab = os.path.join(d, "vocab.h5")
    if not os.path.exists(vocab):
        corpus = fl.make_corpus(os.path.join(d, "corpus.txt"), 200000)
        subprocess.run([bpe, "train", "--input", corpus, "--out", vocab, "--vocab-size", "2000", "--quiet"], check=True)
    path = os.path.join(d, "tokens-%d.h5" % n)
    if os.path.exists(path):
        return path
    with h5py.File(vocab, "r") as v:
        V = int(v["tokenizer"].attrs["vocab_size"])
    rng = np.random.default_rng(1)
    with h5py.File(path + ".tmp", "w", libver=("v110", "latest")) as f, h5py.File(vocab, "r") as v:
        f.attrs["format"] = "gpt-train/tokens"
        f.attrs["format_version"] = 1
        v.copy("tokenizer", f)
        for name, count in (("train", n), ("val", max(n // 100, 10000))):
            ds = f.create_dataset(name, shape=(count,), maxshape=(None,), dtype="<u2", chunks=(65536,),
                                  fletcher32=True)
            for a in range(0, count, 1 << 24):
                b = min(count, a + (1 << 24))
                ds[a:b] = rng.integers(0, V, b - a, dtype=np.uint16)
            ds.attrs["source"] = "random ids"
            ds.attrs["source_bytes"] = 2 * n
            ds.attrs["source_sha256"] = "0" * 64
    os.rename(path + ".tmp", path)
    return path


def run(build, tokens, steps, d):
    out = os.path.join(d, "run")
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["/usr/bin/time", "-f", "maxrss %M cpu %U %S", os.path.join(build, "gpt-train"), "--data", tokens, "--out", out,
           "--steps", str(steps), *MODEL]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(fl.env(), GT_PROGRESS="0"))
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit("gpt-train failed:\n" + p.stdout[-1500:] + p.stderr[-1500:])
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    ms = [float(r["ms_per_step"]) for r in rows[2:] if r["ms_per_step"]]
    m = re.search(r"maxrss (\d+) cpu ([\d.]+) ([\d.]+)", p.stderr)
    rss, cpu = int(m.group(1)) / 1024, float(m.group(2)) + float(m.group(3))
    startup = wall - sum(float(r["ms_per_step"]) for r in rows if r["ms_per_step"]) / 1000
    return startup, statistics.median(ms) if ms else float("nan"), rss, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", action="append", help="a build directory (repeatable; default build/)")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--sizes", default="2e6,2e8", help="corpus sizes in tokens, comma-separated")
    ap.add_argument("--dir", help="keep the corpora here (default: a temp directory, removed)")
    a = ap.parse_args()
    builds = a.build or [os.path.join(SRC, "build")]
    d = a.dir or tempfile.mkdtemp(prefix="bench_data_")
    os.makedirs(d, exist_ok=True)
    bpe = next(p for p in (os.path.join(b, "gpt-bpe") for b in builds) if os.path.exists(p))
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print("CPU: %s; load %s" % (cpu, open("/proc/loadavg").read().split()[0]))
    print("%-28s %12s %10s %10s %12s %10s" % ("build", "tokens", "start s", "ms/step", "CPU ms/step", "RSS MB"))
    for n in (int(float(x)) for x in a.sizes.split(",")):
        tokens = make_tokens(bpe, d, n)
        for b in builds:
            s, ms, rss, cpu = run(b, tokens, a.steps, d)
            cpu0 = run(b, tokens, 2, d)[3]
            print("%-28s %12d %10.2f %10.3f %12.3f %10.0f" % (b[-28:], n, s, ms, 1000 * (cpu - cpu0) / (a.steps - 2),
                                                              rss), flush=True)
    if not a.dir:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
