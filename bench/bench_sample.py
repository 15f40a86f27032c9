#!/usr/bin/python3
"""bench_sample.py - two measurements of the attention/sampling component.

1. Sampling speed: tokens/s of `gpt-sample` (C, key/value cache) against the PyTorch twin
   (io/python/nanogpt_model.py) generating the same way from the same checkpoint, greedy,
   one thread each. The twin runs twice: nanoGPT's generate() (full forward of the last
   block_size tokens per new token) and with a key/value cache written here on the twin's
   modules (same window policy as gpt-sample: cached steps until the context reaches
   block_size, then a full recompute of the window per token). Both checkpoints are made
   with gpt-train: the reference shape (block 16, 5 layers, 4 heads, 64 embd, vocab 2000)
   and the "baby" shape (block 256, 6 layers, 6 heads, 384 embd), where 200 new tokens after
   a short prompt stay inside one window, so every token is a cached step.
   Time excludes loading (gpt-sample reports its generation time on stderr).

2. Cost of --attn-every on the reference experiment, two ways:
   a. in one process (bench_attn_cost, C): training steps of the reference shape (one
      rank's 16 sequences, fwd+bwd+AdamW, no allreduce, so an upper bound) interleaved
      with probe records (probe_forward + attn_append: eval forward + HDF5 append + flush); the
      slowdown at N is probe / (N * step). Robust to a loaded machine, since both sides
      are timed alternately in the same process.
   b. end to end (--e2e): gpt-train (mpirun -np 2, the trainer's defaults, 16 sequences
      per rank) with --attn-every off, 10 and 1, interleaved runs, median ms/step from
      metrics.csv. Only meaningful on an otherwise idle machine.

    /usr/bin/python3 bench/bench_sample.py [--build build] [--tokens 200] [--skip-sample]
                                           [--skip-attn] [--e2e [--steps 300 --repeats 3]]
"""
import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(SRC, "io", "python"))
DATA = os.path.join(SRC, "..", "shared", "data", "taylorswift.txt")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
           OPENBLAS_NUM_THREADS="1", GT_PROGRESS="0")
PROMPT = " Hello, this is"


def sh(cmd, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, **kw)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return p


def make_checkpoint(build, out, shape):
    """A gpt-train checkpoint of that shape (a few steps: speed does not depend on training)."""
    args = {"ref": [], "baby": ["--block-size", "256", "--n-layer", "6", "--n-head", "6", "--n-embd", "384"]}[shape]
    sh([os.path.join(build, "gpt-train"), "--data", DATA, "--out", out, *args, "--steps", "2", "--batch-size", "2",
        "--eval-every", "0", "--eval-batches", "1", "--warmup", "1"])
    return os.path.join(out, open(os.path.join(out, "latest")).read().strip())


def c_tokens_per_s(build, ckpt, n):
    best = 0.0
    for _ in range(3):
        p = sh([os.path.join(build, "gpt-sample"), "--checkpoint", ckpt, "--prompt", PROMPT, "--temperature", "0",
                "--max-new-tokens", str(n)])
        m = re.search(r"\(([\d.]+) tokens/s\)", p.stderr)
        best = max(best, float(m.group(1)))
    return best, p.stdout


def twin_generate(model, idx, n, cached):
    import torch
    import torch.nn.functional as F
    T = model.config.block_size
    tr = model.transformer
    H = model.config.n_head
    C = model.config.n_embd
    out = list(idx)

    def full(window):
        x = torch.tensor([window], dtype=torch.long)
        logits, _ = model(x)
        return logits[0, -1]

    def step(tok, pos, cache):
        """one token through the blocks with cached keys/values per layer"""
        x = tr.wte(torch.tensor([tok])) + tr.wpe(torch.tensor([pos]))  # (1, C)
        for l, b in enumerate(tr.h):
            h = b.ln_1(x)
            q, k, v = b.attn.c_attn(h).split(C, dim=1)
            cache[l][0].append(k)
            cache[l][1].append(v)
            K = torch.cat(cache[l][0]).view(-1, H, C // H).transpose(0, 1)  # (H, t, hs)
            V = torch.cat(cache[l][1]).view(-1, H, C // H).transpose(0, 1)
            qh = q.view(H, 1, C // H)
            att = F.softmax((qh @ K.transpose(1, 2)) / (C // H) ** 0.5, dim=-1)
            y = (att @ V).transpose(0, 1).reshape(1, C)
            x = x + b.attn.c_proj(y)
            x = x + b.mlp(b.ln_2(x))
        return model.lm_head(tr.ln_f(x))[0]

    def prefill(window):
        cache = [([], []) for _ in tr.h]
        logits = None
        for p, t in enumerate(window):
            logits = step(t, p, cache)
        return logits, cache

    with torch.no_grad():
        if not cached:
            for _ in range(n):
                out.append(int(torch.argmax(full(out[-T:]))))
            return out[len(idx):]
        window = out[-T:]
        # the prompt goes through one full forward (as gpt-sample's prefill), then the cache is filled
        logits, cache = prefill(window)
        npos = len(window)
        for i in range(n):
            tok = int(torch.argmax(logits))
            out.append(tok)
            if i + 1 == n:
                break
            if npos < T:
                logits = step(tok, npos, cache)
                npos += 1
            else:  # window full: positions shift, recompute (full forward is the fast way)
                logits = full(out[-T:])
        return out[len(idx):]


def twin_tokens_per_s(ckpt, prompt_ids, n, cached):
    import torch
    from nanogpt_model import GPT
    torch.set_num_threads(1)
    model = GPT.from_checkpoint(ckpt)
    model.eval()
    best, ids = 0.0, None
    for _ in range(2):
        t0 = time.perf_counter()
        ids = twin_generate(model, prompt_ids, n, cached)
        best = max(best, n / (time.perf_counter() - t0))
    return best, ids


def bench_sampling(build, n):
    import gpt_attention as ga
    print(f"## sampling: greedy, {n} new tokens after {PROMPT!r}, 1 thread, best of runs")
    print("| checkpoint | gpt-sample (C, KV cache) | twin, full recompute | twin, KV cache | C / best twin | same ids |")
    print("| --- | --- | --- | --- | --- | --- |")
    tmp = tempfile.mkdtemp(prefix="bench_sample_")
    for shape in ("ref", "baby"):
        ckpt = make_checkpoint(build, os.path.join(tmp, shape), shape)
        gen = os.path.join(tmp, shape + ".h5")
        sh([os.path.join(build, "gpt-sample"), "--checkpoint", ckpt, "--prompt", PROMPT, "--temperature", "0",
            "--max-new-tokens", str(n), "--attn-out", gen])
        g = ga.read_generation(gen)
        prompt_ids = g.token_ids[: g.n_prompt].tolist()
        c, _ = c_tokens_per_s(build, ckpt, n)
        full, ids_full = twin_tokens_per_s(ckpt, prompt_ids, n, cached=False)
        kv, ids_kv = twin_tokens_per_s(ckpt, prompt_ids, n, cached=True)
        same = ids_full == g.token_ids[g.n_prompt:].tolist() and ids_kv == ids_full
        print(f"| {shape} (block {g.block_size}) | {c:.0f} tok/s | {full:.0f} tok/s | {kv:.0f} tok/s | "
              f"{c / max(full, kv):.1f}x | {same} |", flush=True)


def ms_per_step(run, skip_first):
    with open(os.path.join(run, "metrics.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["ms_per_step"]]
    vals = [float(r["ms_per_step"]) for r in rows if int(r["step"]) > skip_first]
    vals.sort()
    return sum(vals) / len(vals), vals[len(vals) // 2]


def bench_attn_inprocess(build):
    print("\n## --attn-every cost in one process (bench_attn_cost): reference shape, 1 thread")
    print("| probe | dtype | step median / min ms | record median / min ms | slowdown N=1 | slowdown N=10 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for probe, f16 in ((6, 0), (16, 0), (16, 1)):
        p = sh([os.path.join(build, "bench_attn_cost"), "300", os.path.join(tempfile.mkdtemp(), "a.h5"), str(f16),
                str(probe)])
        s = re.search(r"median ([\d.]+) ms, min ([\d.]+) ms\n.*?median ([\d.]+) ms, min ([\d.]+) ms", p.stdout, re.S)
        n1 = re.search(r"every 1: ([\d.]+)% \(median\), ([\d.]+)%", p.stdout)
        n10 = re.search(r"every 10: ([\d.]+)% \(median\), ([\d.]+)%", p.stdout)
        print(f"| {probe} tokens | {'float16' if f16 else 'float32'} | {s.group(1)} / {s.group(2)} | {s.group(3)} / "
              f"{s.group(4)} | {n1.group(1)}% / {n1.group(2)}% | {n10.group(1)}% / {n10.group(2)}% |", flush=True)


def bench_attn(build, steps, repeats):
    print(f"\n## --attn-every cost: reference experiment (trainer defaults), mpirun -np 2, 16 sequences per rank, "
          f"{steps} steps, {repeats} interleaved repeats")
    print("| --attn-every | mean ms/step | median ms/step | wall s | slowdown (median ms/step) | records |")
    print("| --- | --- | --- | --- | --- | --- |")
    tmp = tempfile.mkdtemp(prefix="bench_attn_")
    # tokenize once; every run reuses the vocab/tokens (same corpus)
    base = os.path.join(tmp, "tok")
    sh([os.path.join(build, "gpt-train"), "--data", DATA, "--out", base, "--steps", "1", "--eval-every", "0",
        "--eval-batches", "1"])
    tokens = os.path.join(base, "tokens.h5")
    res = {k: [] for k in ("off", "10", "1")}
    for r in range(repeats):
        for every in ("off", "10", "1"):  # interleaved, so machine noise hits all alike
            run = os.path.join(tmp, f"run_{every}_{r}")
            extra = [] if every == "off" else ["--attn-every", every, "--attn-prompt", PROMPT]
            t0 = time.perf_counter()
            sh(["mpirun", "--oversubscribe", "-np", "2", os.path.join(build, "gpt-train"), "--data", tokens, "--out",
                run, "--batch-size", "16", "--steps", str(steps), "--eval-every", "0", "--eval-batches", "1",
                "--ckpt-every", "0", *extra])
            wall = time.perf_counter() - t0
            mean, med = ms_per_step(run, 10)
            n = 0
            if every != "off":
                import gpt_attention as ga
                n = len(ga.read_attention(run))
            res[every].append((mean, med, wall, n))
    import statistics
    base_med = statistics.median(x[1] for x in res["off"])
    for every in ("off", "10", "1"):
        mean = statistics.median(x[0] for x in res[every])
        med = statistics.median(x[1] for x in res[every])
        wall = statistics.median(x[2] for x in res[every])
        slow = "" if every == "off" else f"{100 * (med / base_med - 1):+.1f}%"
        print(f"| {every} | {mean:.2f} | {med:.2f} | {wall:.1f} | {slow} | {res[every][0][3]} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-sample", action="store_true")
    ap.add_argument("--skip-attn", action="store_true")
    ap.add_argument("--e2e", action="store_true", help="also the end-to-end gpt-train runs (idle machine only)")
    a = ap.parse_args()
    if not os.path.isfile(DATA):
        sys.exit(f"{DATA} is absent: the benchmark uses taylorswift.txt")
    if not a.skip_sample:
        bench_sampling(a.build, a.tokens)
    if not a.skip_attn:
        bench_attn_inprocess(a.build)
        if a.e2e:
            bench_attn(a.build, a.steps, a.repeats)


if __name__ == "__main__":
    main()
