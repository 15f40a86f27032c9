#!/usr/bin/python3
"""bench_ddp.py - data-parallel training speed: gpt-train on 1 and 2 ranks vs PyTorch
DistributedDataParallel (gloo, 2 processes), side by side in one run, 1 thread per process.

Baby shape: V=2000, T=256, L=6, H=6, C=384, B=8 sequences per rank, dropout 0, AdamW.
Reports tokens/s over all ranks (median step after warm-up), the 2-rank speed-up, the ratio
to DDP, the share of gpt-train's gradient reduced behind backward, and the gradient bytes
each rank sends per step. On a machine shared with other work, wall-clock speed-ups mean
little, so it also reports CPU seconds per 1000 training tokens of each whole run (all
processes, setup included): the work a configuration costs, whatever else runs.

    /usr/bin/python3 bench/bench_ddp.py [--steps 8] [--build build] [--text FILE]

Needs gpt-bpe and gpt-train built, torch (python3-torch), and a text to tokenize
(default ../shared/data/tinyshakespeare.txt, else the fortunes package, else generated).
Not a test: timings depend on the machine and its load.
"""
import argparse
import csv
import glob
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(SRC, "io", "python"))
SHAPE = dict(vocab=2000, block=256, layers=6, heads=6, embd=384, batch=8)
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
           OPENBLAS_NUM_THREADS="1", GT_PROGRESS="0")


def find_text(arg):
    if arg:
        return arg
    shared = os.path.join(SRC, "..", "shared", "data", "tinyshakespeare.txt")
    if os.path.exists(shared):
        return shared
    out = os.path.join(tempfile.mkdtemp(prefix="bench_ddp_"), "text.txt")
    parts = [p for p in glob.glob("/usr/share/games/fortunes/*") if "." not in os.path.basename(p)]
    with open(out, "wb") as f:
        for p in sorted(parts):
            f.write(open(p, "rb").read().decode("utf-8", "ignore").encode())
    return out


def cpu_children():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def gpt_train(build, tokens, np_, steps, out):
    cmd = ["mpirun", "--oversubscribe", "-np", str(np_), os.path.join(build, "gpt-train"), "--data", tokens,
           "--out", out, "--steps", str(steps), "--log-every", "1", "--eval-every", "0", "--eval-batches", "1",
           "--ckpt-every", "0", "--n-layer", str(SHAPE["layers"]), "--n-head", str(SHAPE["heads"]),
           "--n-embd", str(SHAPE["embd"]), "--block-size", str(SHAPE["block"]), "--batch-size", str(SHAPE["batch"]),
           "--dropout", "0", "--threads", "1", "--warmup", "2"]
    c0 = cpu_children()
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    cpu = (cpu_children() - c0) / (steps * np_ * SHAPE["batch"] * SHAPE["block"] / 1000)
    if p.returncode != 0:
        sys.exit(f"gpt-train -np {np_} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    tps = statistics.median(float(r["tokens_per_s"]) for r in rows[2:] if r["tokens_per_s"])
    ms = statistics.median(float(r["ms_per_step"]) for r in rows[2:] if r["ms_per_step"])
    m = re.search(r"allreduce \(\w+\): .*", p.stdout)
    return tps, ms, m.group(0) if m else None, cpu


def ddp_worker(rank, world, tokens, steps, q):
    import h5py
    import numpy as np
    import torch
    import torch.distributed as dist
    from nanogpt_model import GPT, GPTConfig
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", "29517"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(1337)
    model = GPT(GPTConfig(block_size=SHAPE["block"], vocab_size=SHAPE["vocab"], n_layer=SHAPE["layers"],
                          n_head=SHAPE["heads"], n_embd=SHAPE["embd"], dropout=0.0))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = model.configure_optimizers(0.01, 1e-3, (0.9, 0.99))
    with h5py.File(tokens) as f:
        train = f["train"][()].astype(np.int64)
    T, B = SHAPE["block"], SHAPE["batch"]
    rng = np.random.default_rng(rank)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        idx = rng.integers(0, (len(train) - 1) // T, B)
        x = torch.from_numpy(np.stack([train[i * T:i * T + T] for i in idx]))
        y = torch.from_numpy(np.stack([train[i * T + 1:i * T + T + 1] for i in idx]))
        _, loss = ddp(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    if rank == 0:
        q.put(statistics.median(times[2:]))
    dist.destroy_process_group()


def ddp(tokens, steps):
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    c0 = cpu_children()
    procs = [ctx.Process(target=ddp_worker, args=(r, 2, tokens, steps, q)) for r in range(2)]
    for p in procs:
        p.start()
    s = q.get(timeout=3600)
    for p in procs:
        p.join()
    cpu = (cpu_children() - c0) / (steps * 2 * SHAPE["batch"] * SHAPE["block"] / 1000)
    return 2 * SHAPE["batch"] * SHAPE["block"] / s, 1000 * s, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--text")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="bench_ddp_")
    text = find_text(a.text)
    voc, tok = os.path.join(d, "vocab.h5"), os.path.join(d, "tokens.h5")
    bpe = os.path.join(a.build, "gpt-bpe")
    subprocess.run([bpe, "train", "--input", text, "--out", voc, "--vocab-size", str(SHAPE["vocab"])], check=True,
                   capture_output=True)
    subprocess.run([bpe, "encode", "--vocab", voc, "--input", text, "--out", tok], check=True, capture_output=True)
    print(f"baby shape {SHAPE}, {a.steps} steps each (median step after 2 warm-up steps), 1 thread per process, "
          f"{os.cpu_count()} cores")
    t1, ms1, _, c1 = gpt_train(a.build, tok, 1, a.steps, os.path.join(d, "np1"))
    print(f"gpt-train 1 rank  x 1 thread: {t1:8.0f} tokens/s ({ms1:.0f} ms/step), {c1:.2f} CPU s per 1k tokens")
    t2, ms2, ar, c2 = gpt_train(a.build, tok, 2, a.steps, os.path.join(d, "np2"))
    print(f"gpt-train 2 ranks x 1 thread: {t2:8.0f} tokens/s ({ms2:.0f} ms/step): {t2 / t1:.2f}x one rank; "
          f"{c2:.2f} CPU s per 1k tokens")
    if ar:
        print("  gpt-train " + ar)
    try:
        td, msd, cd = ddp(tok, a.steps)
        print(f"PyTorch DDP (gloo) 2 procs x 1 thread: {td:8.0f} tokens/s ({msd:.0f} ms/step), {cd:.2f} CPU s per "
              f"1k tokens; gpt-train 2 ranks is {t2 / td:.2f}x DDP")
    except Exception as e:  # torch missing or gloo unavailable: report, do not hide the C numbers
        print(f"PyTorch DDP: not measured ({e})")
    subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    main()
