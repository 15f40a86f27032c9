#!/usr/bin/python3
"""test_train_bf16_quality.py - the reference experiment (test_train_reference.py: the trainer's
defaults on taylorswift.txt, vocab 2000, the seed shape, 2 ranks x 16 sequences) trained
for 5000 steps under `mpirun -np 2` in fp32 and with --precision bf16, same seed, so the
same initial weights, data order and dropout masks: the bf16 run's val loss must end within
1% of the fp32 run's (docs/engine.md, mixed precision).

Both final checkpoints are evaluated by the same fp32 code (the PyTorch twin on the eval
windows of docs/training.md), so the comparison is of the trained weights; gpt-train's own
reports (the bf16 run evaluates in bf16) are printed beside them. At the seed shape a step
takes 9-16 ms on 2 ranks: measured 45 s (bf16) and 79 s (fp32) for the two runs at load 5,
about 2.5 minutes for the whole test; no timing is checked.

Skips (77), saying why, when ../shared/data/taylorswift.txt or torch is absent, or when the
CPU can do no bf16.
    GT_BF16_QUALITY_STEPS=5000 (default)
"""
import csv
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402

STEPS = int(os.environ.get("GT_BF16_QUALITY_STEPS", "5000"))
DATA = tl.shared_data("taylorswift.txt", skip_why="the reference experiment needs taylorswift.txt")
h5py = tl.require_module("h5py", "python3-h5py")
np = tl.require_module("numpy", "python3-numpy")
torch = tl.require_module("torch", "python3-torch: the fp32 evaluation of both runs")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_train_reference import REF, eval_loss  # noqa: E402
from nanogpt_model import GPT  # noqa: E402


def reported_val(run):
    with open(os.path.join(run, "metrics.csv")) as f:
        return float([r for r in csv.DictReader(f) if r["val_loss"]][-1]["val_loss"])


def main():
    bpe, train_bin = tl.require("gpt-bpe", "gpt-train")
    d = tl.tmpdir("gt_bf16_quality_")
    ck = tl.Checks("test_train_bf16_quality", verbose=True)
    voc, tok = os.path.join(d, "vocab.h5"), os.path.join(d, "tokens.h5")
    tl.run_ok([bpe, "train", "--input", DATA, "--out", voc, "--vocab-size", "2000"])
    tl.run_ok([bpe, "encode", "--vocab", voc, "--input", DATA, "--out", tok])
    with h5py.File(tok) as f:
        val = f["val"][()].astype(np.int64)
    torch.set_num_threads(1)
    vals, secs = {}, {}
    for prec in ("bf16", "fp32"):
        run = os.path.join(d, prec)
        t0 = time.time()
        # everything else is the default configuration: the reference experiment
        p = tl.run(tl.mpirun(2, train_bin, "--data", tok, "--out", run, "--steps", STEPS, "--batch-size", "16",
                             "--eval-every", "0", "--log-every", "500", "--precision", prec),
                   timeout=None, extra_env={"GT_PROGRESS": "0"})
        secs[prec] = time.time() - t0
        if prec == "bf16" and p.rc == 1 and "AVX512-BF16" in p.err:
            tl.skip("this CPU can do no bf16: " + " ".join(tl.error_lines(p.err)))
        if p.rc != 0:
            print(p.out[-2000:], p.err[-2000:])
            print(f"FAIL: gpt-train --precision {prec} exited {p.rc}")
            sys.exit(1)
        model = GPT.from_checkpoint(os.path.join(run, f"ckpt-{STEPS:08d}.h5"))
        vals[prec] = eval_loss(model, val, REF["block"])
        print(f"{prec}: {STEPS} steps in {secs[prec]:.0f} s; val loss {vals[prec]:.4f} (fp32 evaluation), "
              f"{reported_val(run):.4f} as gpt-train reported it")
    rel = abs(vals["bf16"] - vals["fp32"]) / vals["fp32"]
    ck.ok(rel < 0.01, f"bf16's val loss within 1% of fp32's after {STEPS} steps: {vals['bf16']:.4f} vs "
                      f"{vals['fp32']:.4f}, {100 * rel:.2f}% apart")
    ck.ok(vals["fp32"] < 7.0 - 1.0, "the runs learned (val loss well below ln 2000 = 7.6)")
    tl.rmtree(d)
    ck.finish()


if __name__ == "__main__":
    main()
