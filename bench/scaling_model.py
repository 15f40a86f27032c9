#!/usr/bin/python3
"""scaling_model.py - how gpt-train's data parallelism scales across nodes (docs/scaling.md).

    step = compute + exposed exchange
    exchange   T_ar   = 2 (N-1)/N x bytes / (eta x bandwidth) + latency
    exposed    max(T_tail, T_ar - omega x backward)

bytes: 4 (fp32) or 2 (bf16) per parameter, plus the embedding rows exchanged after backward
(mpi/allreduce.h, the embeddings' split). T_tail: what cannot start before backward ends (the
last block's final bucket, and the token rows, or all of wte when the split is off), sent at
the same rate. latency: two phases of the last bucket, 2 x (alpha + (N-1) x o), alpha = 50 us
per round trip and o = 5 us per message (assumed: the emulation has no delay to measure).

Fitted here, from bench/bench_cluster.py's measurements on the emulated cluster: eta (the
share of a link's rate TCP achieves, from the blocking exchanges), omega (the share of
backward the exchange can use, least squares on the exposed waits) and backward's share of
compute. Checked against every emulated run (2 and 4 nodes, two link rates, fp32 and bf16):
given what the run computed (its step without the exposed wait: on a real cluster the node's
compute is an input, here it also carries the emulated network's kernel work, which runs on
the same two cores, shown against the same ranks over shared memory), the model's step
against the measured one.

Then projected for gpt2-124M and a 350M model (GPT-2 medium's shape) on nodes of --cores
cores at --gflops per core (docs/benchmarks.md measured ~90 GFLOP/s per core at gpt2-124M),
--tokens per node per step, 8-64 nodes on 10, 25 and 100 GbE, fp32 and bf16: tokens/s and
efficiency (compute / step). With a fixed global batch (--global-batch) the compute per node
shrinks with N while the exchange does not: where efficiency falls below 50%, data
parallelism stops paying.

    /usr/bin/python3 bench/scaling_model.py [--measurements bench/scaling_measurements.json]
        [--plot docs/img/scaling.png] [--markdown]
"""
import argparse
import json
import math
import os
import statistics
import sys

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ALPHA, O_MSG = 50e-6, 5e-6
BYTES = {"fp32": 4, "bf16": 2}
MODELS = {  # V, T, L, C
    "gpt2-124M": (50257, 1024, 12, 768),
    "350M": (50257, 1024, 24, 1024),
}
LINKS = {"10GbE": 10e9 / 8, "25GbE": 25e9 / 8, "100GbE": 100e9 / 8}


def params(V, T, L, C):
    return V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C


def flops_per_token(V, T, L, C):
    """Training FLOPs per token, as docs/benchmarks.md counts them."""
    return 3 * (L * (24 * C * C + 4 * T * C) + 2 * V * C)


def bucket_floats(n):
    """gpt-train's bucket size (src/train/train_main.c): an eighth of the gradient, 64 KiB-4 MiB."""
    return min(max(n * 4 // 8, 64 << 10), 4 << 20) // 4


def tail_floats(n, C):
    """What backward hands over last from the blocks: block 0's final sub-layers (c_attn, ln_1,
    the attention projection), at most one bucket."""
    return min(bucket_floats(n), 4 * C * C + 8 * C)


def latency(N):
    return 2 * (ALPHA + (N - 1) * O_MSG)


def rate_bytes(rate):
    return int(rate[:-4]) * (1e9 if rate.endswith("gbit") else 1e6) / 8


# ---------------------------------------------------------------- the emulated cluster
def load(path):
    with open(path) as f:
        return json.load(f)


def fit(m):
    s = m["shape"]
    V, T, L, C = s["vocab"], s["block_size"], s["n_layer"], s["n_embd"]
    n = params(V, T, L, C)
    runs = m["runs"]
    comp = {}
    for N in sorted({r["nodes"] for r in runs}):
        shm = [r for r in runs if r["nodes"] == N and r["rate"] == "shm"]
        comp[N] = statistics.mean(r["step"] - r["exposed"] for r in shm) / 1e3
    net = [r for r in runs if r["rate"] != "shm"]
    for r in net:
        N, w = r["nodes"], BYTES[r["dtype"]]
        r["grad_bytes"] = 2 * (N - 1) / N * n * w
        r["bw"] = rate_bytes(r["rate"])
        r["extra_bytes"] = max(0.0, r["mb"] * 1e6 - r["grad_bytes"])  # token rows and bitmaps
        r["eta"] = r["grad_bytes"] / (r["blocking"] / 1e3 - latency(N)) / r["bw"]
    eta = statistics.median(r["eta"] for r in net)
    beta = statistics.median(r["backward"] / (r["step"] - r["exposed"]) for r in runs)
    for r in net:  # what the node computed in this run: the step without the exposed wait
        r["compute"] = (r["step"] - r["exposed"]) / 1e3
        r["inflation"] = r["compute"] / comp[r["nodes"]] - 1

    def exposed(r, omega):
        N, w = r["nodes"], BYTES[r["dtype"]]
        t_ar = r["mb"] * 1e6 / (eta * r["bw"])
        tail = 2 * (N - 1) / N * tail_floats(n, C) * w + r["extra_bytes"]
        t_tail = tail / (eta * r["bw"])
        return max(t_tail, t_ar - omega * r["backward"] / 1e3) + latency(N)

    best = min((sum((exposed(r, om) - r["exposed"] / 1e3) ** 2 for r in net), om)
               for om in [i / 200 for i in range(0, 301)])
    omega = best[1]
    for r in net:
        r["pred_exposed"] = exposed(r, omega)
        r["pred_step"] = r["compute"] + r["pred_exposed"]
        r["err"] = r["pred_step"] / (r["step"] / 1e3) - 1
    return dict(n=n, comp=comp, eta=eta, beta=beta, omega=omega, runs=net)


# ---------------------------------------------------------------- projection
def heaps(tokens):
    """Distinct GPT-2 tokens in `tokens` tokens of English text: U = 45 sqrt(n) (Heaps' law,
    an assumption: no GPT-2-tokenized corpus here to measure it on)."""
    return 45 * math.sqrt(tokens)


def project(model, N, link, dtype, f, tokens_node, cores, gflops):
    V, T, L, C = MODELS[model]
    n, w, bw = params(V, T, L, C), BYTES[dtype], LINKS[link]
    comp = flops_per_token(V, T, L, C) * tokens_node / (cores * gflops * 1e9)
    U = min(V, heaps(N * tokens_node))
    split = N > 1 and U <= V / 2
    emb = (U if split else V) * C  # floats exchanged after backward from the embeddings
    ring = 2 * (N - 1) / N
    t_ar = ring * (n + (U * C if split else 0)) * w / (f["eta"] * bw) + latency(N)
    t_tail = ring * (tail_floats(n, C) + emb) * w / (f["eta"] * bw) + latency(N)
    exposed = 0.0 if N == 1 else max(t_tail, t_ar - f["omega"] * f["beta"] * comp)  # backward = beta x compute
    step = comp + exposed
    return dict(step=step, comp=comp, exposed=exposed, tokens_s=N * tokens_node / step, eff=comp / step, split=split)


def max_nodes(model, global_batch):
    """Data parallelism cannot split a sequence: at most one per node."""
    return global_batch // MODELS[model][1]


def stops_paying(model, link, dtype, f, global_batch, cores, gflops):
    """The smallest power-of-two node count at which a fixed global batch runs below 50%
    efficiency, or None when it does not before every node holds a single sequence."""
    N = 2
    while N <= max_nodes(model, global_batch):
        if project(model, N, link, dtype, f, global_batch / N, cores, gflops)["eff"] < 0.5:
            return N
        N *= 2
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--measurements", default=os.path.join(SRC, "bench", "scaling_measurements.json"))
    ap.add_argument("--plot", default=os.path.join(SRC, "docs", "img", "scaling.png"))
    ap.add_argument("--cores", type=int, default=32)
    ap.add_argument("--gflops", type=float, default=90.0)
    ap.add_argument("--tokens", type=int, default=16 * 1024, help="tokens per node per step")
    ap.add_argument("--global-batch", type=int, default=1 << 19)
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    m = load(a.measurements)
    f = fit(m)
    print("measurements: %s, %s (%d cores), %s" % (os.path.relpath(a.measurements, SRC), m["cpu"], m["cores"], m["date"]))
    print("fit: eta %.2f (share of the link rate TCP achieves), omega %.2f (share of backward the exchange "
          "uses); backward is %.0f%% of compute" % (f["eta"], f["omega"], 100 * f["beta"]))
    print("compute per step over shared memory: " + ", ".join("%d ranks %.0f ms" % (N, 1e3 * c)
                                                             for N, c in sorted(f["comp"].items())))
    print("\n| nodes | link | wire | compute (vs shm) | backward | exposed measured | exposed model | step measured "
          "| step model | error |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in sorted(f["runs"], key=lambda r: (r["nodes"], r["rate"], r["dtype"])):
        print("| %d | %s | %s | %.0f ms (%+.0f%%) | %.0f ms | %.0f ms | %.0f ms | %.0f ms | %.0f ms | %+.0f%% |" % (
            r["nodes"], r["rate"].replace("mbit", " Mbit/s"), r["dtype"], 1e3 * r["compute"], 100 * r["inflation"],
            r["backward"], r["exposed"], 1e3 * r["pred_exposed"], r["step"], 1e3 * r["pred_step"], 100 * r["err"]))
    worst = max(abs(r["err"]) for r in f["runs"])
    print("\nlargest step-time error: %.0f%% (%s 20%%)" % (100 * worst, "within" if worst <= 0.2 else "NOT within"))

    print("\nProjection: nodes of %d cores x %.0f GFLOP/s, %d tokens per node per step (weak scaling)"
          % (a.cores, a.gflops, a.tokens))
    nodes = [8, 16, 32, 64]
    print("\n| model | link | wire | " + " | ".join("%d nodes" % N for N in nodes) + " |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in nodes) + " |")
    for model in MODELS:
        for link in LINKS:
            for dtype in ("fp32", "bf16"):
                cells = []
                for N in nodes:
                    p = project(model, N, link, dtype, f, a.tokens, a.cores, a.gflops)
                    cells.append("%.0fk tok/s, %.0f%%" % (p["tokens_s"] / 1e3, 100 * p["eff"]))
                print("| %s | %s | %s | %s |" % (model, link, dtype, " | ".join(cells)))
    print("\nFixed global batch of %d tokens: the node count where efficiency falls below 50%%" % a.global_batch)
    print("\n| model | link | fp32 | bf16 |")
    print("| --- | --- | --- | --- |")
    for model in MODELS:
        for link in LINKS:
            s = [stops_paying(model, link, d, f, a.global_batch, a.cores, a.gflops) for d in ("fp32", "bf16")]
            cap = "not before %d (one sequence per node)" % max_nodes(model, a.global_batch)
            print("| %s | %s | %s | %s |" % (model, link, *[str(x) if x else cap for x in s]))
    if a.plot:
        plot(f, a, nodes)


def plot(f, a, nodes):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.6))
    colors = {"10GbE": "tab:red", "25GbE": "tab:blue", "100GbE": "tab:green"}
    for i, model in enumerate(MODELS):
        xs = [2 ** k for k in range(1, 20) if 2 ** k <= max_nodes(model, a.global_batch)]
        for link, col in colors.items():
            for dtype, ls in (("fp32", "-"), ("bf16", "--")):
                ys = [100 * project(model, N, link, dtype, f, a.global_batch / N, a.cores, a.gflops)["eff"] for N in xs]
                ax[i].plot(xs, ys, ls, color=col, label="%s %s" % (link, dtype))
        for N in nodes:
            ax[i].axvline(N, color="gray", lw=0.5, alpha=0.4)
        ax[i].axhline(50, color="k", lw=0.6, ls=":")
        ax[i].set_xscale("log", base=2)
        ax[i].set_ylim(0, 102)
        ax[i].set_xlabel("nodes (global batch %dk tokens split evenly, down to one sequence)" % (a.global_batch // 1024))
        ax[i].set_ylabel("efficiency: compute / step (%)")
        ax[i].set_title("%s: where data parallelism stops paying\n(%d cores x %.0f GFLOP/s per node)"
                        % (model, a.cores, a.gflops), fontsize=10)
        ax[i].legend(fontsize=7, loc="lower left")
    meas = [r["step"] for r in f["runs"]]
    pred = [1e3 * r["pred_step"] for r in f["runs"]]
    ax[2].scatter(meas, pred, c=["tab:blue" if r["dtype"] == "fp32" else "tab:orange" for r in f["runs"]])
    for r, x, y in zip(f["runs"], meas, pred):
        ax[2].annotate("%dn %s" % (r["nodes"], r["rate"].replace("mbit", "M")), (x, y), fontsize=7)
    lim = [0, 1.15 * max(meas + pred)]
    ax[2].plot(lim, lim, "k-", lw=0.8)
    ax[2].fill_between(lim, [0.8 * v for v in lim], [1.2 * v for v in lim], color="gray", alpha=0.2, label="+-20%")
    ax[2].set_xlim(lim)
    ax[2].set_ylim(lim)
    ax[2].set_xlabel("measured step (ms)")
    ax[2].set_ylabel("model (ms)")
    ax[2].set_title("emulated cluster: model against measurements\n(blue fp32, orange bf16)", fontsize=10)
    ax[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.plot, dpi=110)
    print("\nwrote " + os.path.relpath(a.plot, SRC))


if __name__ == "__main__":
    main()
