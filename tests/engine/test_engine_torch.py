"""The C engine against its PyTorch twin (io/python/nanogpt_model.py), weights exchanged
through the HDF5 checkpoint: logits, loss, attention, every gradient, ten AdamW steps, resume,
dropout reproducibility. Binaries from $GT_BUILD, sources from $GT_SRC."""
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
from nanogpt_model import GPT, GPTConfig  # noqa: E402
import gpt_checkpoint  # noqa: E402

CHECK = os.path.join(tl.BUILD, "engine_check")
TMP = tl.tmpdir("engine-torch-")
ck = tl.Checks("test_engine_torch", verbose=True)


def run(*args, threads=1):
    return tl.run_ok([CHECK, *args, "--threads", threads])


def rel_err(a, b):
    """max |a-b| / max |b|: scale-free and not fooled by individual tiny elements."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def check(name, ok, detail=""):
    ck.ok(ok, f"{name} {detail}".strip())


def write_tokens(path, inputs, targets):
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "gpt-train/engine-tokens"
        f.attrs["format_version"] = 1
        f["inputs"] = inputs.astype(np.int32)
        f["targets"] = targets.astype(np.int32)


def make_case(tag, V, block, L, H, C, B, T, seed):
    ckpt = os.path.join(TMP, f"{tag}.h5")
    run("init", "--out", ckpt, "--vocab", V, "--block", block, "--layers", L, "--heads", H, "--embd", C,
        "--seed", seed)
    rng = np.random.default_rng(seed)
    inputs = rng.integers(0, V, size=(B, T))
    targets = rng.integers(0, V, size=(B, T))
    tok = os.path.join(TMP, f"{tag}-tokens.h5")
    write_tokens(tok, inputs, targets)
    return ckpt, tok, torch.from_numpy(inputs), torch.from_numpy(targets)


def torch_model(ckpt):
    # exactly the snippet of docs/formats.md, checkpoints: lm_head.weight arrives through
    # the hard link
    with h5py.File(ckpt, "r") as f:
        sd = {k: torch.from_numpy(v[()]) for k, v in f["model"].items()}
    model = GPT(GPTConfig(**gpt_checkpoint.load_config(ckpt)))
    model.load_state_dict(sd, strict=True)
    return model


def test_forward_backward(tag, V, block, L, H, C, B, T, seed=1):
    ckpt, tok, x, y = make_case(tag, V, block, L, H, C, B, T, seed)
    model = torch_model(ckpt)
    for blk in model.transformer.h:
        blk.attn.keep_att = True
    out = os.path.join(TMP, f"{tag}-fb.h5")
    run("fwdbwd", "--ckpt", ckpt, "--tokens", tok, "--out", out)
    model.eval()
    logits, loss = model(x, y)
    loss.backward()
    with h5py.File(out, "r") as f:
        check(f"{tag} logits", rel_err(f["logits"][()], logits.detach().numpy()) < 1e-5,
              f"rel {rel_err(f['logits'][()], logits.detach().numpy()):.2e}")
        cl = float(f.attrs["loss"])
        check(f"{tag} loss", abs(cl - loss.item()) / abs(loss.item()) < 1e-5, f"C {cl:.7f} torch {loss.item():.7f}")
        att = np.stack([blk.attn.last_att.numpy() for blk in model.transformer.h])
        check(f"{tag} attention", rel_err(f["att"][()], att) < 1e-5, f"rel {rel_err(f['att'][()], att):.2e}")
        worst, worst_name = 0.0, ""
        names = dict(model.named_parameters())
        for k in f["grads"]:
            e = rel_err(f["grads"][k][()], names[k].grad.numpy())
            if e > worst:
                worst, worst_name = e, k
        check(f"{tag} all {len(names)} gradients", worst < 1e-5 and len(f["grads"]) == len(names),
              f"worst rel {worst:.2e} ({worst_name})")


def test_adamw(tag, V, block, L, H, C, B, T, seed=2, steps=10, lr=1e-3, wd=0.1, clip=1.0):
    ckpt, tok, x, y = make_case(tag, V, block, L, H, C, B, T, seed)
    model = torch_model(ckpt)
    model.eval()  # dropout 0 anyway
    opt = model.configure_optimizers(wd, lr, (0.9, 0.95), eps=1e-8)
    tl, tn = [], []
    for _ in range(steps):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        tn.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
        opt.step()
        tl.append(loss.item())
    out = os.path.join(TMP, f"{tag}-train.h5")
    run("train", "--ckpt", ckpt, "--tokens", tok, "--out", out, "--steps", steps, "--lr", lr, "--wd", wd,
        "--clip", clip)
    with h5py.File(out, "r") as f:
        cl, cn = f["losses"][()], f["norms"][()]
        check(f"{tag} {steps} AdamW losses", rel_err(cl, tl) < 1e-5 and tl[-1] < tl[0] - 0.05,
              f"rel {rel_err(cl, tl):.2e}; torch {tl[0]:.4f} -> {tl[-1]:.4f}")
        check(f"{tag} grad norms (clipping active: {min(tn):.2f} > {clip})", rel_err(cn, tn) < 1e-4 and min(tn) > clip,
              f"rel {rel_err(cn, tn):.2e}")
        worst, wm, kb = 0.0, 0.0, 0.0
        for k, p in model.named_parameters():
            cw, tw = f["model"][k][()], p.detach().numpy()
            if k.endswith("attn.c_attn.bias"):
                # The key bias has an exactly zero gradient (softmax ignores a constant per
                # query), so both sides follow rounding noise that Adam rescales: check it
                # stays near 0 (real gradients move weights by ~lr per step), compare the rest.
                kb = max(kb, np.abs(cw[C:2 * C]).max(), np.abs(tw[C:2 * C]).max())
                cw, tw = np.concatenate([cw[:C], cw[2 * C:]]), np.concatenate([tw[:C], tw[2 * C:]])
            worst = max(worst, rel_err(cw, tw))
            st = opt.state[p]
            wm = max(wm, rel_err(f["optimizer/m"][k][()], st["exp_avg"].numpy()),
                     rel_err(f["optimizer/v"][k][()], st["exp_avg_sq"].numpy()))
        check(f"{tag} weights after {steps} steps", worst < 1e-4, f"worst rel {worst:.2e}")
        check(f"{tag} key bias stays at rounding noise", kb < 0.05 * lr * steps, f"max |b_k| {kb:.1e}")
        check(f"{tag} AdamW moments", wm < 1e-3, f"worst rel {wm:.2e}")
    # resume: 5 + 5 steps through the optimizer groups equals 10 straight
    half = os.path.join(TMP, f"{tag}-half.h5")
    rest = os.path.join(TMP, f"{tag}-rest.h5")
    run("train", "--ckpt", ckpt, "--tokens", tok, "--out", half, "--steps", steps // 2, "--lr", lr, "--wd", wd,
        "--clip", clip)
    run("train", "--ckpt", ckpt, "--tokens", tok, "--out", rest, "--steps", steps - steps // 2, "--lr", lr,
        "--wd", wd, "--clip", clip, "--resume", half)
    with h5py.File(out, "r") as a, h5py.File(rest, "r") as b:
        same = all(np.array_equal(a["model"][k][()], b["model"][k][()]) for k in a["model"])
        check(f"{tag} resume 5+5 == 10 (bitwise)", same and np.array_equal(a["losses"][steps // 2:], b["losses"][()]))


def test_dropout(tag="dropout"):
    # B*T*C = 40960 is above layers.c's PAR_MIN (32768), so at 2 threads the element-wise
    # and row-wise kernels (LayerNorm, residual, dropout) run split too, not just the GEMMs
    ckpt, tok, x, y = make_case(tag, 300, 32, 2, 4, 64, 20, 32, 3)
    # the checkpoint was made with dropout 0: give its config p = 0.3
    with h5py.File(ckpt, "r+") as f:
        f["config"].attrs["dropout"] = 0.3
    outs = {}
    for name, args, th in [("eval", [], 1), ("s7", ["--train", "--dropout-seed", 7], 1),
                           ("s7b", ["--train", "--dropout-seed", 7], 2), ("s8", ["--train", "--dropout-seed", 8], 1)]:
        outs[name] = os.path.join(TMP, f"{tag}-{name}.h5")
        run("fwdbwd", "--ckpt", ckpt, "--tokens", tok, "--out", outs[name], *args, threads=th)
    f = {k: h5py.File(v, "r") for k, v in outs.items()}
    le, l7, l7b, l8 = (float(f[k].attrs["loss"]) for k in ("eval", "s7", "s7b", "s8"))
    check("dropout changes the training loss", abs(l7 - le) > 1e-3 and abs(l7 - l8) > 1e-3, f"{le:.4f} {l7:.4f} {l8:.4f}")
    # Masks depend on (seed, position) only; GEMMs are split by rows or columns of the output and
    # row sums go through fixed blocks, so 2 threads should reproduce 1 thread (here
    # bit for bit; the check allows rounding in case a BLAS kernel sums differently).
    worst = max(rel_err(f["s7b"]["grads"][k][()], f["s7"]["grads"][k][()]) for k in f["s7"]["grads"])
    bitwise = all(np.array_equal(f["s7b"]["grads"][k][()], f["s7"]["grads"][k][()]) for k in f["s7"]["grads"])
    check("same dropout seed, 1 vs 2 threads: same masks, same gradients", abs(l7 - l7b) < 1e-6 and worst < 1e-6,
          f"loss {l7:.7f} vs {l7b:.7f}, worst grad rel {worst:.1e}, bitwise {bitwise}")
    att = f["s7"]["att"][()]
    # after dropout rows would sum to (kept mass)/(1-p), not 1
    check("attention probabilities are stored before dropout, causal",
          np.allclose(att.sum(-1), 1, atol=1e-5) and np.all(np.triu(att[..., :, :], 1) == 0))
    # eval forward of a dropout model in torch (model.eval()) equals the C eval forward
    model = torch_model(ckpt)
    model.eval()
    _, loss = model(x, y)
    check("dropout model in eval mode matches torch", abs(le - loss.item()) < 1e-5 * abs(le))
    for v in f.values():
        v.close()


def test_state_dict_helpers():
    ckpt, _, _, _ = make_case("helpers", 300, 32, 2, 4, 64, 1, 4, 5)
    sd = gpt_checkpoint.load_state_dict(ckpt)
    model = GPT.from_checkpoint(ckpt)
    check("gpt_checkpoint.load_state_dict loads strict=True, lm_head tied",
          "lm_head.weight" in sd and torch.equal(sd["lm_head.weight"], sd["transformer.wte.weight"]) and
          model.lm_head.weight is model.transformer.wte.weight)
    with h5py.File(ckpt, "r") as f:
        lnk = f["model"].get("lm_head.weight", getlink=True)
        check("lm_head.weight is an HDF5 hard link", isinstance(lnk, h5py.HardLink) and
              f["model/lm_head.weight"].id == f["model/transformer.wte.weight"].id)
        # init statistics: N(0, 0.02), projections 0.02/sqrt(2L), LayerNorm 1/0, biases 0
        w = f["model/transformer.h.0.mlp.c_fc.weight"][()]
        pw = f["model/transformer.h.1.attn.c_proj.weight"][()]
        check("GPT-2 init", abs(w.std() - 0.02) < 1e-3 and abs(pw.std() - 0.01) < 1e-3 and
              np.all(f["model/transformer.h.0.ln_1.weight"][()] == 1) and
              np.all(f["model/transformer.h.0.attn.c_attn.bias"][()] == 0),
              f"std {w.std():.4f}, proj std {pw.std():.4f}")


if __name__ == "__main__":
    torch.manual_seed(0)
    test_forward_backward("base", V=300, block=32, L=2, H=4, C=64, B=4, T=32)
    test_forward_backward("odd", V=257, block=16, L=3, H=3, C=30, B=3, T=13)
    test_forward_backward("odd-T1", V=257, block=16, L=3, H=3, C=30, B=5, T=1)
    # T >= 64 takes the blocked-GEMM attention (short sequences use fused loops)
    test_forward_backward("long", V=300, block=160, L=2, H=2, C=32, B=2, T=150)
    test_adamw("base", V=300, block=32, L=2, H=4, C=64, B=4, T=32)
    test_adamw("odd", V=257, block=16, L=3, H=3, C=30, B=3, T=13)
    test_dropout()
    test_state_dict_helpers()
    if not ck.failed:
        tl.rmtree(TMP)  # kept when a check fails, for a look
    ck.finish()
