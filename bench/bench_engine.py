#!/usr/bin/python3
"""Training-step benchmark: the C engine against its PyTorch twin, same shapes, same run,
in fp32 and in bf16 (--precision bf16 against PyTorch's torch.autocast("cpu", bfloat16)).

    /usr/bin/python3 bench/bench_engine.py [--build build] [--seconds 2] [--shapes seed,baby,gpt2-124M]
                                           [--threads 1,2] [--precision fp32,bf16] [--coretype] [--out bench.json]

For each shape and thread count: tokens/s, ms per step (forward + backward + clip + AdamW)
and the CPU time per step (all threads; unlike wall time it is not inflated by other work),
achieved GFLOP/s (3 x forward FLOPs per token: matmuls + attention, gpt2_flops_per_token),
the matmul ceiling measured in the C process with the same thread count (a 1024^3
cblas_sgemm for fp32, gemm_bf16 for bf16), and peak RSS. PyTorch runs nanoGPT's model
(io/python/nanogpt_model.py) with torch.optim.AdamW, in bf16 with the forward under
autocast as its documentation shows; at 2 threads it is tried as torch threads x
OPENBLAS_NUM_THREADS in {2x1, 1x2, 2x2}, the C engine in fp32 as OpenMP x OpenBLAS threads in
{2x2, 1x2} (bf16 does not use OpenBLAS: OpenMP 2), and the best of each is compared. Every
measurement is its own process so peak RSS is per run. --coretype adds the C engine with
OPENBLAS_CORETYPE=Haswell beside the default kernel choice. A CPU without bf16 instructions
skips the bf16 rows and says so.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
SHAPES = {  # V, T, L, H, C, B
    "seed": (2000, 16, 5, 4, 64, 32),
    "baby": (2000, 256, 6, 6, 384, 8),
    "gpt2-124M": (50257, 64, 12, 12, 768, 4),
}
TARGETS = {"seed": 3.0, "baby": 1.3, "gpt2-124M": 2.0}  # C fp32 / PyTorch fp32
# C bf16 against PyTorch autocast bf16's best, and against the C engine's fp32 best
TARGETS_BF16 = {"baby": 1.4, "gpt2-124M": 1.5}
TARGETS_BF16_VS_FP32 = {"baby": 1.6}


def flops_per_token(V, T, L, C):
    return L * (24.0 * C * C + 4.0 * T * C) + 2.0 * V * C


def torch_worker(V, T, L, H, C, B, threads, seconds, autocast):
    import torch
    sys.path.insert(0, os.path.join(SRC, "io", "python"))
    from nanogpt_model import GPT, GPTConfig
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    model = GPT(GPTConfig(block_size=T, vocab_size=V, n_layer=L, n_head=H, n_embd=C, dropout=0.0))
    model.train()
    opt = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95))
    x = torch.randint(0, V, (B, T))
    y = torch.randint(0, V, (B, T))
    steps, t0, c0 = 0, None, None
    while True:
        if steps == 1:
            t0 = time.perf_counter()
            c0 = time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(autocast)):
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
        if steps >= 3 and time.perf_counter() - t0 > seconds:
            break
    n = steps - 1
    ms = (time.perf_counter() - t0) / n * 1e3
    cpu_ms = (time.process_time() - c0) / n * 1e3
    params = sum(p.numel() for p in model.parameters())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"impl": "torch", "precision": "bf16" if autocast else "fp32", "threads": threads, "steps": n, "ms_per_step": ms, "cpu_ms_per_step": cpu_ms,
                      "tokens_per_s": B * T / (ms / 1e3), "gflops": 3 * flops_per_token(V, T, L, C) * B * T / (ms / 1e3) / 1e9,
                      "params": params, "peak_rss_mb": rss, "loss": loss.item()}))


def run_json(cmd, env_extra):
    """The measurement's JSON line; None when the C engine cannot run bf16 here (exit 77)."""
    env = dict(os.environ)
    env.update(env_extra)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode == 77:
        print(f"# skipped: {r.stderr.strip()}")
        return None
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def best(rows, impl, prec):
    rs = [r for r in rows if r["impl"] == impl and r["precision"] == prec]
    return max(rs, key=lambda r: r["tokens_per_s"]) if rs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement (>= 2 steps)")
    ap.add_argument("--shapes", default="seed,baby,gpt2-124M")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--precision", default="fp32,bf16", help="fp32, bf16 or both (C engine and PyTorch alike)")
    ap.add_argument("--coretype", action="store_true", help="also run C with OPENBLAS_CORETYPE=Haswell")
    ap.add_argument("--wait-policy", choices=["env", "passive", "active"], default="env",
                    help="OMP_WAIT_POLICY for every run (C and PyTorch): 'passive' keeps idle OpenMP threads "
                         "from spinning, which matters on a machine busy with other work (default: as inherited)")
    ap.add_argument("--out", help="write all measurements as JSON here")
    ap.add_argument("--torch-worker", nargs=9, type=float, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_worker:
        w = a.torch_worker
        torch_worker(*map(int, w[:7]), w[7], int(w[8]))
        return
    exe = os.path.join(a.build, "bench_engine")
    if not os.path.exists(exe):
        sys.exit(f"bench_engine: {exe} not found; build first (scripts/build.sh, target bench_engine)")
    results = []
    policy = {} if a.wait_policy == "env" else {"OMP_WAIT_POLICY": a.wait_policy.upper()}
    print(f"# OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default') if a.wait_policy == 'env' else a.wait_policy}, "
          f"{a.seconds:g} s per measurement, load average at start {os.getloadavg()[0]:.1f}")
    print(f"{'shape':10} {'thr':>3} {'impl':31} {'ms/step':>9} {'CPU ms':>8} {'tok/s':>9} {'GFLOP/s':>8} "
          f"{'%ceil':>7} {'RSS MB':>8}")
    precisions = a.precision.split(",")
    for shape in a.shapes.split(","):
        V, T, L, H, C, B = SHAPES[shape]
        for th in map(int, a.threads.split(",")):
            one = dict(policy, OMP_NUM_THREADS=str(th), OPENBLAS_NUM_THREADS=str(th))
            rows = []
            for prec in precisions:
                # C at 2 threads, like PyTorch, in both ways of spending them in fp32: OpenMP
                # threads (GEMMs split by the engine) or one OpenMP thread and OpenBLAS's own
                # threads; bf16's matmuls are oneDNN's, run on the engine's OpenMP threads
                csettings = [(th, th)] if th == 1 or prec == "bf16" else [(th, th), (1, th)]
                for omp, ob in csettings:
                    r = run_json([exe, *map(str, (V, T, L, H, C, B, omp, a.seconds, ob, prec))],
                                 dict(policy, OMP_NUM_THREADS=str(omp), OPENBLAS_NUM_THREADS=str(ob)))
                    if r is None:
                        continue
                    r["label"] = f"C {prec} omp={omp} blas={ob}" + (f" {r['isa']}" if prec == "bf16" else "")
                    rows.append(r)
                if a.coretype and prec == "fp32":
                    ch = run_json([exe, *map(str, (V, T, L, H, C, B, th, a.seconds))], dict(one, OPENBLAS_CORETYPE="Haswell"))
                    ch["label"] = "C fp32, Haswell kernels"
                    rows.append(ch)
                settings = [(1, 1)] if th == 1 else [(2, 1), (1, 2), (2, 2)]
                for tt, ob in settings:
                    t = run_json([sys.executable, os.path.abspath(__file__), "--torch-worker",
                                  *map(str, (V, T, L, H, C, B, tt, a.seconds, int(prec == "bf16")))],
                                 dict(policy, OMP_NUM_THREADS=str(tt), OPENBLAS_NUM_THREADS=str(ob)))
                    t["label"] = f"PyTorch {prec}{' autocast' if prec == 'bf16' else ''} torch={tt} blas={ob}"
                    rows.append(t)
            c32, c16, t32, t16 = best(rows, "C", "fp32"), best(rows, "C", "bf16"), best(rows, "torch", "fp32"), best(rows, "torch", "bf16")
            # each row against the ceiling of its own arithmetic, measured by the C process
            ceil = {p: r["sgemm_peak_gflops"] for p, r in (("fp32", c32), ("bf16", c16)) if r}
            for r in rows:
                c = ceil.get(r["precision"])
                pct = f"{100 * r['gflops'] / c:6.1f}%" if c else "      -"
                print(f"{shape:10} {th:>3} {r['label']:31} {r['ms_per_step']:9.1f} {r['cpu_ms_per_step']:8.1f} "
                      f"{r['tokens_per_s']:9.0f} {r['gflops']:8.1f} {pct:>7} {r['peak_rss_mb']:8.0f}")
            res = {"shape": shape, "threads": th, "runs": rows}
            if c32 and t32:
                res["speedup"] = c32["tokens_per_s"] / t32["tokens_per_s"]
                res["rss_ratio"] = c32["peak_rss_mb"] / t32["peak_rss_mb"]
                print(f"{shape:10} {th:>3} => fp32: best C / best PyTorch {res['speedup']:.2f}x (target {TARGETS[shape]}x; "
                      f"by CPU time {t32['cpu_ms_per_step'] / c32['cpu_ms_per_step']:.2f}x), RSS {res['rss_ratio']:.2f}x "
                      f"(target <= 0.8x), C at {100 * c32['gflops'] / ceil['fp32']:.0f}% of the sgemm ceiling "
                      f"({ceil['fp32']:.0f} GFLOP/s)")
            if c16 and t16:
                res["bf16_speedup"] = c16["tokens_per_s"] / t16["tokens_per_s"]
                tgt = f"target {TARGETS_BF16[shape]}x" if shape in TARGETS_BF16 else "no target"
                print(f"{shape:10} {th:>3} => bf16: best C / best PyTorch autocast {res['bf16_speedup']:.2f}x ({tgt}; by "
                      f"CPU time {t16['cpu_ms_per_step'] / c16['cpu_ms_per_step']:.2f}x), C at "
                      f"{100 * c16['gflops'] / ceil['bf16']:.0f}% of the bf16 matmul ceiling ({ceil['bf16']:.0f} "
                      f"GFLOP/s, {c16['isa']})")
            if c16 and c32:
                res["bf16_vs_fp32"] = c16["tokens_per_s"] / c32["tokens_per_s"]
                res["bf16_rss_vs_fp32"] = c16["peak_rss_mb"] / c32["peak_rss_mb"]
                tgt = f"target {TARGETS_BF16_VS_FP32[shape]}x" if shape in TARGETS_BF16_VS_FP32 else "no target"
                print(f"{shape:10} {th:>3} => C bf16 / C fp32 {res['bf16_vs_fp32']:.2f}x ({tgt}), peak RSS "
                      f"{c16['peak_rss_mb']:.0f} / {c32['peak_rss_mb']:.0f} MB ({res['bf16_rss_vs_fp32']:.2f}x, target <= 1)")
            results.append(res)
            sys.stdout.flush()
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
