"""--precision bf16 of the engine (docs/engine.md, Mixed precision): every gradient of small
models against the fp32 engine within the bound derived below, the same bits at 1 and 2
threads, ten AdamW steps against PyTorch's autocast bf16, and 5 + 5 steps through the
optimizer state equal to 10 (bitwise). Skips (77), saying why, on a CPU without bf16
instructions. Binaries from $GT_BUILD, sources from $GT_SRC.

The gradient bound. Rounding an operand to bf16 moves it by a relative d, |d| <= u = 2^-8
(half an ulp of an 8-bit significand). In a matmul y = sum_k a_k b_k with both operands
rounded, the error sum_k a_k b_k (da_k + db_k) is a sum of terms of random sign: relative to
the size of y, its standard deviation is about sqrt(2/3) u (RNE errors are spread evenly
over +-u: variance u^2/3 each). The gradient of a parameter depends on a chain of such
stages: forward, per block c_attn, QK^T, AV, c_proj, c_fc, c_proj, then the head; backward
the same again plus GELU's derivative, kept as bf16: n = 13 L + 2 at most. Independent
errors add in quadrature: sqrt(2n/3) u of the gradient's size. The test compares
max|g_bf16 - g_fp32| with max|g_fp32|, and the largest of a tensor's errors is at most about
4.5 standard deviations (Gaussian tail over <= 10^5 elements): bound = 4.5 sqrt(2n/3) u,
0.076 for L = 2 and 0.092 for L = 3. It is a bound on
rounding noise: a wrong operand, a stale weight copy, a missing term or a bf16 accumulator
(error growing like sqrt(K) u per product) are far outside it; measured errors sit at
about a tenth of it (the residual stream carries most of each gradient past the matmuls).
"""
import math
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testlib as tl  # noqa: E402
import test_engine_torch as twin  # noqa: E402  (the fp32 twin's helpers: cases, runs, checks)

U = 2.0 ** -8


def grad_bound(L):
    return 4.5 * math.sqrt(2 * (13 * L + 2) / 3) * U


def skip_without_bf16():
    ckpt, tok, _, _ = twin.make_case("probe", 300, 16, 1, 2, 32, 1, 4, 1)
    r = tl.run([twin.CHECK, "fwdbwd", "--ckpt", ckpt, "--tokens", tok, "--out",
                os.path.join(twin.TMP, "probe-out.h5"), "--precision", "bf16"])
    if r.rc == tl.SKIP:
        tl.skip(r.err.strip())
    if r.rc != 0:
        raise RuntimeError(f"engine_check --precision bf16 failed ({r.rc}): {r.err}")


def fwdbwd(tag, ckpt, tok, prec, threads=1, train=True):
    out = os.path.join(twin.TMP, f"{tag}-{prec}-{threads}.h5")
    args = ["fwdbwd", "--ckpt", ckpt, "--tokens", tok, "--out", out, "--precision", prec]
    if train:
        args += ["--train", "--dropout-seed", 7]
    twin.run(*args, threads=threads)
    return h5py.File(out, "r")


def test_gradients(tag, V, block, L, H, C, B, T, dropout):
    ckpt, tok, _, _ = twin.make_case(tag, V, block, L, H, C, B, T, 3)
    with h5py.File(ckpt, "r+") as f:
        f["config"].attrs["dropout"] = dropout
    f32, b16, b16t2 = fwdbwd(tag, ckpt, tok, "fp32"), fwdbwd(tag, ckpt, tok, "bf16"), fwdbwd(tag, ckpt, tok, "bf16", 2)
    bound = grad_bound(L)
    fwd_bound = 4.5 * math.sqrt(2 * (6 * L + 1) / 3) * U
    e = twin.rel_err(b16["logits"][()], f32["logits"][()])
    twin.check(f"{tag} bf16 logits against fp32 (forward bound {fwd_bound:.3f})", e < fwd_bound, f"rel {e:.2e}")
    l16, l32 = float(b16.attrs["loss"]), float(f32.attrs["loss"])
    twin.check(f"{tag} bf16 loss against fp32 (within u/4: a mean of many rounded terms)", abs(l16 - l32) < U / 4 * l32,
               f"bf16 {l16:.6f} fp32 {l32:.6f}")
    e = twin.rel_err(b16["att"][()], f32["att"][()])
    twin.check(f"{tag} bf16 attention probabilities against fp32", e < fwd_bound, f"rel {e:.2e}")
    worst, name, n = 0.0, "", 0
    for k in f32["grads"]:
        e = twin.rel_err(b16["grads"][k][()], f32["grads"][k][()])
        n += 1
        if e > worst:
            worst, name = e, k
    twin.check(f"{tag} all {n} bf16 gradients against fp32 (bound {bound:.3f})", worst < bound,
               f"worst rel {worst:.2e} ({name}), {worst / bound:.2f} of the bound")
    same = all(np.array_equal(b16["grads"][k][()], b16t2["grads"][k][()]) for k in b16["grads"])
    same = same and np.array_equal(b16["logits"][()], b16t2["logits"][()]) and np.array_equal(b16["att"][()], b16t2["att"][()])
    twin.check(f"{tag} bf16 with dropout, 1 vs 2 threads: the same bits (logits, attention, gradients)", same)


def train_c(tag, ckpt, tok, prec, steps, threads=1, resume=None, lr=1e-3, wd=0.1, clip=1.0):
    out = os.path.join(twin.TMP, f"{tag}-train-{prec}-{steps}-{threads}{'-resumed' if resume else ''}.h5")
    args = ["train", "--ckpt", ckpt, "--tokens", tok, "--out", out, "--steps", steps, "--lr", lr, "--wd", wd,
            "--clip", clip, "--precision", prec]
    if resume:
        args += ["--resume", resume]
    twin.run(*args, threads=threads)
    return out


def train_torch(ckpt, x, y, steps, autocast, lr=1e-3, wd=0.1, clip=1.0):
    model = twin.torch_model(ckpt)
    model.eval()
    opt = model.configure_optimizers(wd, lr, (0.9, 0.95), eps=1e-8)
    losses = []
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(loss.item())
    return np.array(losses), {k: p.detach().numpy().copy() for k, p in model.named_parameters()}


def test_adamw(tag, V, block, L, H, C, B, T, steps=10):
    """Ten steps of the bf16 engine against PyTorch's autocast bf16 from the same weights.
    Both are bf16 perturbations of the same fp32 run, autocast the larger one (its LayerNorm,
    GELU, softmax and logits are bf16 too), so the bf16 engine must be about as close to
    autocast as autocast is to fp32 (within 1.5x), on the losses and on the weights' change
    over the 10 steps (all tensors together, 2-norm: AdamW's normalised steps give elements
    with near-zero gradients noise-driven moves of ~lr, so no elementwise bound; the key bias,
    whose gradient is exactly zero, is left out as in test_engine_torch). Each tensor's change
    must also be within 64 u of fp32's (small tensors' trajectories measured up to 23 u, as
    AdamW divides their rounding noise by small second moments): a stale bf16 weight copy, a
    missing refresh after AdamW or a wrong gradient is far outside."""
    ckpt, tok, x, y = twin.make_case(tag, V, block, L, H, C, B, T, 4)
    l32, w32 = train_torch(ckpt, x, y, steps, False)
    l16, w16 = train_torch(ckpt, x, y, steps, True)
    out = train_c(tag, ckpt, tok, "bf16", steps)
    m0 = twin.torch_model(ckpt)
    w0 = {k: p.detach().numpy() for k, p in m0.named_parameters()}
    with h5py.File(out, "r") as f:
        lc = f["losses"][()]
        wc = {k: f["model"][k][()] for k in w32}
    ref = np.abs(l16 - l32).max()
    got = np.abs(lc - l16).max()
    twin.check(f"{tag} {steps} bf16 AdamW losses: to autocast within 1.5x autocast's distance to fp32",
               got <= 1.5 * ref + 1e-6 and lc[-1] < lc[0] - 0.05,
               f"|C bf16 - autocast| {got:.2e}, |autocast - fp32| {ref:.2e}; C {lc[0]:.4f} -> {lc[-1]:.4f}")

    def change(w, k):  # the change over the steps, without the key bias
        d = (w[k] - w0[k]).ravel()
        return np.concatenate([d[:C], d[2 * C:]]) if k.endswith("attn.c_attn.bias") else d

    dc, dt, d32 = (np.concatenate([change(w, k) for k in w32]) for w in (wc, w16, w32))
    n32 = np.linalg.norm(d32)
    e_c, e_t, e_c32 = np.linalg.norm(dc - dt) / n32, np.linalg.norm(dt - d32) / n32, np.linalg.norm(dc - d32) / n32
    twin.check(f"{tag} weight changes after {steps} steps: to autocast within 1.5x autocast's distance to fp32",
               e_c <= 1.5 * e_t, f"C bf16 vs autocast {e_c:.2e}, autocast vs fp32 {e_t:.2e}, C bf16 vs fp32 {e_c32:.2e}")
    worst, name = 0.0, ""
    for k in w32:
        e = np.linalg.norm(change(wc, k) - change(w32, k)) / max(np.linalg.norm(change(w32, k)), 1e-30)
        if e > worst:
            worst, name = e, k
    twin.check(f"{tag} every tensor's change within 64 u of fp32's", worst < 64 * U, f"worst {worst:.2e} ({name})")
    # 5 + 5 steps through the optimizer state (the bf16 copy rebuilt from the loaded weights)
    # equal 10 straight, bit for bit, and 2 threads equal 1
    half = train_c(tag, ckpt, tok, "bf16", steps // 2)
    rest = train_c(tag, ckpt, tok, "bf16", steps - steps // 2, resume=half)
    two = train_c(tag, ckpt, tok, "bf16", steps, threads=2)
    with h5py.File(out, "r") as a, h5py.File(rest, "r") as b, h5py.File(two, "r") as t2:
        same = all(np.array_equal(a["model"][k][()], b["model"][k][()]) for k in a["model"])
        same = same and np.array_equal(a["losses"][steps // 2:], b["losses"][()])
        twin.check(f"{tag} bf16 resume {steps // 2}+{steps - steps // 2} == {steps} (bitwise)", same)
        same = all(np.array_equal(a[g][k][()], t2[g][k][()]) for g in ("model", "optimizer/m", "optimizer/v")
                   for k in a[g])
        twin.check(f"{tag} bf16 {steps} steps at 2 threads == 1 thread (weights and moments, bitwise)", same)


if __name__ == "__main__":
    torch.manual_seed(0)
    skip_without_bf16()
    # short sequences take the fused attention kernels, T >= 64 the blocked GEMMs
    test_gradients("fused", V=300, block=32, L=2, H=4, C=64, B=20, T=32, dropout=0.3)
    test_gradients("odd", V=257, block=16, L=3, H=3, C=30, B=3, T=13, dropout=0.0)
    test_gradients("gemm", V=300, block=160, L=2, H=2, C=32, B=2, T=150, dropout=0.2)
    test_adamw("base", V=300, block=32, L=2, H=4, C=64, B=4, T=32)
    test_adamw("gemm", V=300, block=128, L=2, H=2, C=64, B=2, T=96)
    twin.ck.name = "test_engine_bf16"
    if not twin.ck.failed:
        tl.rmtree(twin.TMP)  # kept when a check fails, for a look
    twin.ck.finish()
