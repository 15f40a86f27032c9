#!/usr/bin/python3
"""test_train_reference.py - the reference experiment: gpt-train under mpirun reaches the val
loss of a PyTorch twin trained with the same settings and steps, within 2%.

Reference experiment (the trainer's defaults): taylorswift.txt, vocab 2000, block 16,
5 layers, 4 heads, 64 embd, batch 32, dropout 0.3, AdamW lr 1e-3 (warmup 100, cosine to
1e-4), betas (0.9, 0.99), weight decay 0.01, grad clip 1.0. gpt-train runs on 2 ranks with
16 sequences each (32 per step, as the twin). Both start from the same weights (a gpt-train
checkpoint written with lr 0 after one step), then train STEPS steps with their own dropout
masks and data order; both final models are evaluated by the same PyTorch code on the
eval windows of docs/training.md, which must also match the val loss gpt-train itself reported.

Skips (77) when ../shared/data/taylorswift.txt or torch is absent.
    GT_REF_STEPS=600 (default)
"""
import csv
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402

STEPS = int(os.environ.get("GT_REF_STEPS", "600"))
REF = dict(block=16, layers=5, heads=4, embd=64, batch=32, dropout=0.3, lr=1e-3, min_lr=1e-4, warmup=100,
           wd=0.01, beta1=0.9, beta2=0.99, eps=1e-8, clip=1.0, seed=1337)

DATA = tl.shared_data("taylorswift.txt", skip_why="the reference experiment needs taylorswift.txt")
h5py = tl.require_module("h5py", "python3-h5py")
np = tl.require_module("numpy", "python3-numpy")
torch = tl.require_module("torch", "python3-torch: the PyTorch twin is the reference")
from nanogpt_model import GPT, GPTConfig  # noqa: E402
from gpt_checkpoint import load_config, load_state_dict  # noqa: E402


def lr_at(step, total, warmup, lr, min_lr):
    """gpt-train's schedule (src/adamw.c lr_at), cosine."""
    if step < warmup:
        return lr * (step + 1) / warmup
    ratio = min(max((step - warmup) / max(total - warmup, 1), 0.0), 1.0)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def eval_loss(model, val, T):
    """Mean cross-entropy over the /val windows starting at multiples of T, dropout off
    (docs/training.md, evaluation)."""
    model.eval()
    n = (len(val) - 1) // T
    x = torch.from_numpy(np.stack([val[i * T:i * T + T] for i in range(n)]).astype(np.int64))
    y = torch.from_numpy(np.stack([val[i * T + 1:i * T + T + 1] for i in range(n)]).astype(np.int64))
    total = 0.0
    with torch.no_grad():
        for b in range(0, n, 256):
            _, loss = model(x[b:b + 256], y[b:b + 256])
            total += loss.item() * len(x[b:b + 256])
    return total / n


def twin(init_ckpt, train, val, steps):
    torch.manual_seed(REF["seed"])
    torch.set_num_threads(1)
    cfg = load_config(init_ckpt)
    cfg["dropout"] = REF["dropout"]
    model = GPT(GPTConfig(**cfg))
    model.load_state_dict(load_state_dict(init_ckpt), strict=True)
    opt = model.configure_optimizers(REF["wd"], REF["lr"], (REF["beta1"], REF["beta2"]), REF["eps"])
    T, B = REF["block"], REF["batch"]
    nwin = (len(train) - 1) // T
    rng = np.random.default_rng(REF["seed"])
    order, pos = rng.permutation(nwin), 0
    for step in range(steps):
        idx = []
        for _ in range(B):  # shuffled windows at multiples of T, epochs wrap: as gpt-train's loader
            if pos == nwin:
                order, pos = rng.permutation(nwin), 0
            idx.append(order[pos])
            pos += 1
        x = torch.from_numpy(np.stack([train[i * T:i * T + T] for i in idx]).astype(np.int64))
        y = torch.from_numpy(np.stack([train[i * T + 1:i * T + T + 1] for i in idx]).astype(np.int64))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, REF["warmup"], REF["lr"], REF["min_lr"])
        model.train()
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), REF["clip"])
        opt.step()
    return model


def main():
    bpe, train_bin = tl.require("gpt-bpe", "gpt-train")
    d = tl.tmpdir("gt_train_ref_")
    ck = tl.Checks("test_train_reference")
    voc, tok = os.path.join(d, "vocab.h5"), os.path.join(d, "tokens.h5")
    tl.run_ok([bpe, "train", "--input", DATA, "--out", voc, "--vocab-size", "2000"])
    tl.run_ok([bpe, "encode", "--vocab", voc, "--input", DATA, "--out", tok])
    with h5py.File(tok) as f:
        train, val = f["train"][()].astype(np.int64), f["val"][()].astype(np.int64)

    mpirun = tl.mpirun(2, train_bin, "--data", tok)
    quiet = {"GT_PROGRESS": "0"}
    # The common starting point: one step at lr 0 leaves gpt-train's initial weights untouched.
    init = os.path.join(d, "init")
    tl.run_ok(mpirun + ["--out", init, "--steps", "1", "--lr", "0", "--min-lr", "0", "--warmup", "0",
                        "--batch-size", "16"], extra_env=quiet)
    init_ckpt = os.path.join(init, "ckpt-00000001.h5")

    run = os.path.join(d, "run")
    t0 = time.time()
    # Everything else is the default configuration, which is the reference experiment.
    p = tl.run(mpirun + ["--out", run, "--steps", STEPS, "--batch-size", "16", "--eval-every", "0",
                         "--log-every", "100"], timeout=None, extra_env=quiet)
    t_c = time.time() - t0
    if p.rc != 0:
        print(p.out[-2000:], p.err[-2000:])
        print("FAIL: gpt-train exited", p.rc)
        sys.exit(1)
    # It started from the same weights the twin loads: the lr-0 run used the same seed.
    with open(os.path.join(run, "metrics.csv")) as f:
        c_reported = float([r for r in csv.DictReader(f) if r["val_loss"]][-1]["val_loss"])
    final = os.path.join(run, f"ckpt-{STEPS:08d}.h5")
    c_model = GPT(GPTConfig(**load_config(final)))
    c_model.load_state_dict(load_state_dict(final), strict=True)
    c_val = eval_loss(c_model, val, REF["block"])

    t0 = time.time()
    t_model = twin(init_ckpt, train, val, STEPS)
    t_t = time.time() - t0
    t_val = eval_loss(t_model, val, REF["block"])
    init_model = GPT(GPTConfig(**load_config(init_ckpt)))
    init_model.load_state_dict(load_state_dict(init_ckpt), strict=True)
    v0 = eval_loss(init_model, val, REF["block"])

    rel = abs(c_val - t_val) / t_val
    print(f"{STEPS} steps: val loss gpt-train (2 ranks x 16) {c_val:.4f} ({t_c:.0f} s) vs PyTorch twin (batch 32) "
          f"{t_val:.4f} ({t_t:.0f} s): {100 * rel:.2f}% apart (limit 2%); initial val loss {v0:.4f}")
    ck.ok(rel < 0.02 and c_val < v0 - 1.0, "gpt-train's val loss within 2% of the PyTorch twin's, and learned")
    ck.ok(abs(c_reported - c_val) < 1e-3 * c_val,
          f"gpt-train's reported val loss {c_reported:.6f} equals PyTorch's eval of its checkpoint {c_val:.6f}")
    tl.rmtree(d)
    ck.finish()


if __name__ == "__main__":
    main()
