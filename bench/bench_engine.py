#!/usr/bin/python3
"""Training-step benchmark: the C engine against its PyTorch twin, same shapes, same run.

    /usr/bin/python3 bench/bench_engine.py [--build build] [--seconds 4] [--shapes seed,baby,gpt2-124M]
                                           [--threads 1,2] [--coretype] [--out bench.json]

For each shape and thread count: tokens/s, ms per step (forward + backward + clip + AdamW)
and the CPU time per step (all threads; unlike wall time it is not inflated by other work),
achieved GFLOP/s (3 x forward FLOPs per token: matmuls + attention, gpt2_flops_per_token),
the cblas_sgemm ceiling measured in the C process with the same thread count, and peak RSS.
PyTorch runs nanoGPT's model (io/python/nanogpt_model.py) with torch.optim.AdamW; at 2
threads it is tried as torch threads x OPENBLAS_NUM_THREADS in {2x1, 1x2, 2x2}, the C engine
as OpenMP x OpenBLAS threads in {2x2, 1x2}, and the best of each is compared. Every measurement is its own process so peak RSS is per run. --coretype adds the C
engine with OPENBLAS_CORETYPE=Haswell beside the default kernel choice.
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
TARGETS = {"seed": 3.0, "baby": 1.3, "gpt2-124M": 2.0}


def flops_per_token(V, T, L, C):
    return L * (24.0 * C * C + 4.0 * T * C) + 2.0 * V * C


def torch_worker(V, T, L, H, C, B, threads, seconds):
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
    print(json.dumps({"impl": "torch", "threads": threads, "steps": n, "ms_per_step": ms, "cpu_ms_per_step": cpu_ms,
                      "tokens_per_s": B * T / (ms / 1e3), "gflops": 3 * flops_per_token(V, T, L, C) * B * T / (ms / 1e3) / 1e9,
                      "params": params, "peak_rss_mb": rss, "loss": loss.item()}))


def run_json(cmd, env_extra):
    env = dict(os.environ)
    env.update(env_extra)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement (>= 2 steps)")
    ap.add_argument("--shapes", default="seed,baby,gpt2-124M")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--coretype", action="store_true", help="also run C with OPENBLAS_CORETYPE=Haswell")
    ap.add_argument("--wait-policy", choices=["env", "passive", "active"], default="env",
                    help="OMP_WAIT_POLICY for every run (C and PyTorch): 'passive' keeps idle OpenMP threads "
                         "from spinning, which matters on a machine busy with other work (default: as inherited)")
    ap.add_argument("--out", help="write all measurements as JSON here")
    ap.add_argument("--torch-worker", nargs=8, type=float, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.torch_worker:
        w = a.torch_worker
        torch_worker(*map(int, w[:7]), w[7])
        return
    exe = os.path.join(a.build, "bench_engine")
    if not os.path.exists(exe):
        sys.exit(f"bench_engine: {exe} not found; build first (scripts/build.sh, target bench_engine)")
    results = []
    policy = {} if a.wait_policy == "env" else {"OMP_WAIT_POLICY": a.wait_policy.upper()}
    print(f"# OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default') if a.wait_policy == 'env' else a.wait_policy}, "
          f"{a.seconds:g} s per measurement, load average at start {os.getloadavg()[0]:.1f}")
    print(f"{'shape':10} {'thr':>3} {'impl':26} {'ms/step':>9} {'CPU ms':>8} {'tok/s':>9} {'GFLOP/s':>8} "
          f"{'%sgemm':>7} {'RSS MB':>8}")
    for shape in a.shapes.split(","):
        V, T, L, H, C, B = SHAPES[shape]
        for th in map(int, a.threads.split(",")):
            one = dict(policy, OMP_NUM_THREADS=str(th), OPENBLAS_NUM_THREADS=str(th))
            rows = []
            # C at 2 threads, like PyTorch, in both ways of spending them: OpenMP threads
            # (GEMMs split by the engine) or one OpenMP thread and OpenBLAS's own threads
            csettings = [(th, th)] if th == 1 else [(th, th), (1, th)]
            c = None
            for omp, ob in csettings:
                r = run_json([exe, *map(str, (V, T, L, H, C, B, omp, a.seconds, ob))],
                             dict(policy, OMP_NUM_THREADS=str(omp), OPENBLAS_NUM_THREADS=str(ob)))
                r["label"] = f"C engine omp={omp} blas={ob}"
                rows.append(r)
                if c is None or r["tokens_per_s"] > c["tokens_per_s"]:
                    c = r
            if a.coretype:
                ch = run_json([exe, *map(str, (V, T, L, H, C, B, th, a.seconds))], dict(one, OPENBLAS_CORETYPE="Haswell"))
                ch["label"] = "C engine, Haswell kernels"
                rows.append(ch)
            settings = [(1, 1)] if th == 1 else [(2, 1), (1, 2), (2, 2)]
            best = None
            for tt, ob in settings:
                t = run_json([sys.executable, os.path.abspath(__file__), "--torch-worker",
                              *map(str, (V, T, L, H, C, B, tt, a.seconds))],
                             dict(policy, OMP_NUM_THREADS=str(tt), OPENBLAS_NUM_THREADS=str(ob)))
                t["label"] = f"PyTorch torch={tt} blas={ob}"
                rows.append(t)
                if best is None or t["tokens_per_s"] > best["tokens_per_s"]:
                    best = t
            for r in rows:
                pct = f"{100 * r['gflops'] / c['sgemm_peak_gflops']:6.1f}%"
                print(f"{shape:10} {th:>3} {r['label']:26} {r['ms_per_step']:9.1f} {r['cpu_ms_per_step']:8.1f} "
                      f"{r['tokens_per_s']:9.0f} {r['gflops']:8.1f} {pct:>7} {r['peak_rss_mb']:8.0f}")
            speed = c["tokens_per_s"] / best["tokens_per_s"]
            mem = c["peak_rss_mb"] / best["peak_rss_mb"]
            cpu = best["cpu_ms_per_step"] / c["cpu_ms_per_step"]
            print(f"{shape:10} {th:>3} => best C / best PyTorch speed {speed:.2f}x (target {TARGETS[shape]}x; by CPU time "
                  f"{cpu:.2f}x), "
                  f"RSS {mem:.2f}x (target <= 0.8x), sgemm ceiling {c['sgemm_peak_gflops']:.0f} GFLOP/s "
                  f"(model MLP shape {c['sgemm_model_shape_gflops']:.0f}), C at "
                  f"{100 * c['gflops'] / c['sgemm_peak_gflops']:.0f}%")
            results.append({"shape": shape, "threads": th, "runs": rows, "speedup": speed, "cpu_speedup": cpu,
                            "rss_ratio": mem})
            sys.stdout.flush()
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
