#!/usr/bin/python3
"""test_allreduce_bf16.py - the bf16 gradient exchange (--allreduce-dtype bf16) against fp32 on
4 ranks, 300 steps of the reference experiment's model (docs/training.md, the defaults) on
taylorswift.txt (vocabulary 2000; without the shared data, a generated text with vocabulary
320): the final val loss within 1% of fp32's, every rank's weights identical throughout
(--check-sync at every log step), at most 0.55x fp32's bytes sent per rank per step, and the
flag stored in the checkpoint's /config. Dropout off, so the two runs differ only in the
exchange's rounding.
"""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "faults"))
import faultlib as fl  # noqa: E402

STEPS = 300


def main():
    bpe, train = tl.require("gpt-bpe", "gpt-train")
    h5py = tl.require_module("h5py", "python3-h5py")
    c = tl.Checks("test_allreduce_bf16", verbose=True)
    d = tl.tmpdir("gt_bf16x_")
    text = tl.shared_data("taylorswift.txt")
    if text:
        voc, tokens = os.path.join(d, "vocab.h5"), os.path.join(d, "tokens.h5")
        tl.run_ok([bpe, "train", "--input", text, "--out", voc, "--vocab-size", "2000"])
        tl.run_ok([bpe, "encode", "--vocab", voc, "--input", text, "--out", tokens])
    else:
        _, _, tokens = fl.make_tokens(bpe, d, 200000)
    res = {}
    for dtype in ("fp32", "bf16"):
        run = os.path.join(d, dtype)
        r = tl.run(tl.mpirun(4, train, "--data", tokens, "--out", run, "--steps", STEPS, "--batch-size", 8,
                             "--dropout", 0, "--eval-every", STEPS, "--log-every", 50, "--check-sync",
                             "--allreduce-dtype", dtype), timeout=900, extra_env={"GT_PROGRESS": "0"})
        if not c.ok(r.rc == 0, "%s: %d steps on 4 ranks with --check-sync" % (dtype, STEPS), r.describe()):
            continue
        val = re.search(r"best val loss ([\d.]+)", r.out)
        mb = re.search(r"allreduce \(%s\): ([\d.]+) MB sent per rank per step" % dtype, r.out)
        res[dtype] = (float(val.group(1)), float(mb.group(1)))
        with h5py.File(tl.latest(run), "r") as f:
            c.ok(f["config"].attrs["allreduce_dtype"] == dtype.encode() or f["config"].attrs["allreduce_dtype"] == dtype,
                 "%s: stored in the checkpoint's /config" % dtype)
    if len(res) == 2:
        (v32, b32), (v16, b16) = res["fp32"], res["bf16"]
        c.ok(abs(v16 - v32) <= 0.01 * v32, "val loss after %d steps: bf16 %.4f, fp32 %.4f (%.2f%% apart, at most 1%%)"
             % (STEPS, v16, v32, 100 * abs(v16 - v32) / v32))
        c.ok(b16 <= 0.55 * b32, "bytes sent per rank per step: bf16 %.3f MB, fp32 %.3f MB (%.2fx, at most 0.55x)"
             % (b16, b32, b16 / b32))
    tl.rmtree(d)
    c.finish()


if __name__ == "__main__":
    main()
