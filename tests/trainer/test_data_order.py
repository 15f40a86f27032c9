#!/usr/bin/python3
"""test_data_order.py - the training data order does not depend on the rank count (issue 15).

ranks     A run resumed at other rank counts, 8 -> 3 -> 5 -> 8, takes exactly the windows an
          uninterrupted 8-rank run takes, in the same order, and every epoch covers each
          training window exactly once (epoch 0 completes inside the 5-rank part). Each rank
          reports the windows it takes through the GT_TRACE_WINDOWS test hook
          ("epoch position window" lines); the resumes read their cursor from the checkpoint.
batch     2 ranks x 16 sequences and 4 ranks x 8 sequences, dropout off, train on the same
          global batches: their training and validation losses agree up to summation order.
legacy    A checkpoint with the per-rank cursors of older versions (/state/cursor_*) still
          resumes, at the same fraction of its epoch, with a note saying so.

Binaries from $GT_BUILD, sources from $GT_SRC; Python is /usr/bin/python3 (h5py, numpy).
"""
import csv
import glob
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "faults"))
import testlib as tl  # noqa: E402
import faultlib as fl  # noqa: E402

MODEL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--eval-every", "0",
         "--eval-batches", "1", "--log-every", "1", "--ckpt-every", "0", "--warmup", "2"]


def h5():
    import h5py
    return h5py


def trace(prefix):
    """[(epoch, position, window)] of all ranks' trace files, in the order of the global positions."""
    rows = []
    for p in glob.glob(prefix + ".rank*"):
        with open(p) as f:
            rows += [tuple(int(x) for x in line.split()) for line in f]
    return sorted(rows)


def windows_of(tokens, T):
    with h5().File(tokens, "r") as f:
        return (f["train"].shape[0] - 1) // T


def metrics(run):
    with open(os.path.join(run, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def train(train_bin, np_, tokens, run, *args, trace_to=None, timeout=180):
    env = {"GT_TRACE_WINDOWS": trace_to} if trace_to else None
    return fl.run(tl.mpirun(np_, train_bin, "--data", tokens, "--out", run, *MODEL, *args), timeout=timeout,
                  extra_env=env)


def test_ranks(ck, train_bin, d, tokens):
    W = windows_of(tokens, 16)
    B = 4
    # The chain: (ranks, steps) in turn; epoch 0 must end inside the 5-rank part.
    chain = [(8, 8), (3, 30), (5, 15), (8, 10)]
    used = sum(np_ * B * s for np_, s in chain)
    before_5 = sum(np_ * B * s for np_, s in chain[:2])
    if not (before_5 < W < before_5 + 5 * B * 15 and used < 2 * W):
        ck.ok(False, "fixture: %d windows must end epoch 0 inside the 5-rank part of the chain" % W)
        return
    ref_steps = -(-used // (8 * B))
    ref, ref_trace = os.path.join(d, "ref"), os.path.join(d, "ref-trace")
    r = train(train_bin, 8, tokens, ref, "--batch-size", B, "--steps", ref_steps, trace_to=ref_trace)
    if not ck.ok(r.rc == 0, "uninterrupted 8-rank run", r.describe()):
        return
    run, tr = os.path.join(d, "chain"), os.path.join(d, "chain-trace")
    step = 0
    for i, (np_, steps) in enumerate(chain):
        step += steps
        r = train(train_bin, np_, tokens, run, "--batch-size", B, "--steps", step, *(["--resume"] if i else []),
                  trace_to=tr)
        if not ck.ok(r.rc == 0, "chain part %d: %d ranks to step %d" % (i, np_, step), r.describe()):
            return
    got, want = trace(tr), trace(ref_trace)
    ck.ok(len(got) == used, "the chain took %d windows (B x ranks x steps)" % used, "took %d" % len(got))
    ck.ok(got == want[:len(got)],
          "8 -> 3 -> 5 -> 8 ranks take exactly the windows of the uninterrupted 8-rank run, in its order",
          "first difference at %s" % next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None))
    epoch0 = sorted(w for e, _, w in got if e == 0)
    ck.ok(epoch0 == list(range(W)), "epoch 0 covers each of the %d windows exactly once" % W,
          "%d windows taken, %d distinct" % (len(epoch0), len(set(epoch0))))
    epoch1 = [w for e, _, w in got if e == 1]
    ck.ok(len(epoch1) == used - W and len(set(epoch1)) == len(epoch1), "epoch 1 repeats no window so far")
    ck.ok([p for e, p, _ in got if e == 0] == list(range(W)) and [p for e, p, _ in got if e == 1] ==
          list(range(used - W)), "positions run without gaps or repeats across the resumes")
    with h5().File(os.path.join(run, "ckpt-%08d.h5" % step), "r") as f:
        s = f["state"].attrs
        ck.ok(s["data_epoch"] == 1 and s["data_pos"] == used - W and s["data_windows"] == W and
              f.attrs["world_size"] == 8 and "cursor_pos" not in f["state"],
              "the checkpoint holds one global cursor: /state data_epoch 1, data_pos %d, data_windows %d" % (used - W, W),
              str(dict(s)))


def test_batch(ck, train_bin, d, tokens):
    runs = {}
    for np_, b in ((2, 16), (4, 8)):
        run = os.path.join(d, "b%dx%d" % (np_, b))
        r = train(train_bin, np_, tokens, run, "--batch-size", b, "--steps", 8, "--dropout", "0", "--eval-every", "4")
        if not ck.ok(r.rc == 0, "%d ranks x %d sequences" % (np_, b), r.describe()):
            return
        runs[np_] = metrics(run)
    a, b = runs[2], runs[4]
    ck.ok([x["step"] for x in a] == [x["step"] for x in b] and [x["tokens"] for x in a] == [x["tokens"] for x in b],
          "same steps and token counts")
    worst = max(abs(float(x[k]) - float(y[k])) / abs(float(x[k])) for x, y in zip(a, b)
                for k in ("train_loss", "val_loss") if x[k] and y[k])
    ck.ok(worst < 1e-4, "2 x 16 and 4 x 8 sequences: the same losses up to summation order (largest relative "
          "difference %.1e)" % worst, str([(x["train_loss"], y["train_loss"]) for x, y in zip(a, b)]))
    # The test can fail: another global batch (2 x 8) gives other losses.
    run = os.path.join(d, "b2x8")
    r = train(train_bin, 2, tokens, run, "--batch-size", 8, "--steps", 8, "--dropout", "0", "--eval-every", "4")
    if ck.ok(r.rc == 0, "2 ranks x 8 sequences", r.describe()):
        other = metrics(run)
        ck.ok(abs(float(other[-1]["train_loss"]) - float(a[-1]["train_loss"])) > 1e-3,
              "  ... while another global batch size trains differently")


def test_legacy(ck, train_bin, d, tokens):
    """A checkpoint from before the global order: per-rank cursors at 3/4 of epoch 2."""
    run = os.path.join(d, "legacy")
    r = train(train_bin, 2, tokens, run, "--batch-size", 4, "--steps", 2)
    if not ck.ok(r.rc == 0, "a 2-step run to edit", r.describe()):
        return
    import numpy as np
    W = windows_of(tokens, 16)
    with h5().File(os.path.join(run, "ckpt-00000002.h5"), "a") as f:
        s = f["state"]
        for k in ("data_epoch", "data_pos", "data_windows"):
            del s.attrs[k]
        s["cursor_epoch"] = np.array([2, 2], dtype=np.int64)
        s["cursor_pos"] = np.array([300, 300], dtype=np.int64)
        s["cursor_windows"] = np.array([400, 400], dtype=np.int64)
    tr = os.path.join(d, "legacy-trace")
    r = train(train_bin, 3, tokens, run, "--batch-size", 4, "--steps", 3, "--resume", trace_to=tr)
    ck.ok(r.rc == 0 and "per-rank data cursors of an older gpt-train" in r.out and "(75.0%)" in r.out,
          "an older checkpoint's per-rank cursors resume at the same fraction of the epoch, with a note", r.describe())
    got = trace(tr)
    ck.ok(got and got[0][0] == 2 and abs(got[0][1] - 3 * W // 4) <= 2, "  ... epoch 2 from 3/4 of its windows",
          str(got[:3]))


def main():
    bpe, train_bin = tl.require("gpt-bpe", "gpt-train")
    parts = sys.argv[1:] or ["ranks", "batch", "legacy"]
    d = tl.tmpdir("gt-order-")
    ck = tl.Checks("test_data_order")
    _, _, tokens = fl.make_tokens(bpe, d, 27000)
    for p in parts:
        {"ranks": test_ranks, "batch": test_batch, "legacy": test_legacy}[p](ck, train_bin, d, tokens)
    tl.rmtree(d)
    ck.finish()


if __name__ == "__main__":
    main()
