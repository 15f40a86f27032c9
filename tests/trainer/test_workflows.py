#!/usr/bin/python3
"""The everyday workflows (issue 14), as a user runs them, each with its bad inputs.

  initfrom  gpt-train --init-from: a new run from a checkpoint's weights (checked bit for bit
            with --lr 0), its tokenizer for a text --data, /config's record (path, step,
            SHA-256 of the file), --init-optimizer (the moments: m_init - m_fresh = beta1 m_src),
            an exact --resume of the fine-tune, contradicting flags, a tokens.h5 of another
            tokenizer (the message's gpt-bpe encode command is run and fixes it).
  text      gpt-train --data DIR DIR FILE: the corpus pipeline of gpt-bpe (the same tokens as
            gpt-bpe train + encode), --doc-separator, --val-split docs, reuse, '-' refused.
  eval      gpt-eval: the run's own tokens.h5 --split val equals its final val loss (1e-6
            relative) and metrics.csv's val_bpb; bits per byte by hand from the decoded bytes; the
            same loss at 1 and 2 ranks; --per-token; text input equals its tokens.h5; bad inputs.

Data: ../shared/data/tinyshakespeare.txt then taylorswift.txt, else seeded text (said on stderr).
"""
import csv
import hashlib
import math
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402

TRAIN, BPE, EVAL = (os.path.join(tl.BUILD, n) for n in ("gpt-train", "gpt-bpe", "gpt-eval"))
TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "8",
        "--warmup", "2", "--lr", "3e-3", "--dropout", "0.0", "--log-every", "1", "--eval-every", "0"]
ck = tl.Checks("test_workflows", verbose=True)
check = ck.ok


def text_file(path, name, n_bytes, seed):
    """n_bytes of ../shared/data/NAME, else seeded English-like text."""
    src = tl.shared_data(name)
    if src:
        data = open(src, "rb").read()[:n_bytes].decode("utf-8", "ignore").encode()
    else:
        print("note: %s absent, using seeded text" % name, file=sys.stderr)
        rng = np.random.default_rng(seed)
        words = ("the a thou art love story you me we were never ever king lord speak night day shake it off "
                 "blank space red our song back to december heart hand sweet good noble").split()
        data = "".join(" ".join(rng.choice(words, size=rng.integers(4, 12))) + ".\n"
                       for _ in range(n_bytes // 40)).encode()[:n_bytes]
    with open(path, "wb") as f:
        f.write(data)
    return path


def train(np_, *args, timeout=180):
    return tl.run(tl.mpirun(np_, TRAIN, *args), timeout=timeout, extra_env={"GT_PROGRESS": "0"})


def gpt_eval(np_, *args, timeout=180):
    cmd = tl.mpirun(np_, EVAL, *args) if np_ > 1 else [EVAL, *args]
    return tl.run(cmd, timeout=timeout)


def result(r):
    """The last stdout line of gpt-eval as a dict of floats."""
    last = r.out.strip().splitlines()[-1]
    return {k: float(v) for k, v in (kv.split("=") for kv in last.split())}


def tensors(path, group):
    with h5py.File(path) as f:
        return {k: f[group][k][()] for k in f[group]}


def refused(r, *needles):
    """(ok, what): r is a refusal, exit 1 and one error line, holding every needle."""
    why = tl.refusal(r, *needles, alone=False)
    return not why, why or "refused: " + ", ".join(needles)


def base_run(d):
    """A 2-rank run on Shakespeare: the checkpoint fine-tunes start from."""
    txt = text_file(os.path.join(d, "base.txt"), "tinyshakespeare.txt", 200_000, 1)
    run = os.path.join(d, "base")
    r = train(2, "--data", txt, "--out", run, "--vocab-size", "400", "--steps", "8", *TINY)
    assert r.rc == 0, r.describe()
    return run, txt


# ---------------------------------------------------------------- --init-from
def test_initfrom(d):
    base, _ = base_run(d)
    src = tl.latest(base)
    ft_txt = text_file(os.path.join(d, "ft.txt"), "taylorswift.txt", 120_000, 2)
    # --lr 0: one step leaves the weights as they came (AdamW's decay is lr x wd), so they must be
    # the checkpoint's, bit for bit; the text is encoded with its tokenizer.
    run0 = os.path.join(d, "ft0")
    r = train(2, *TINY, "--data", ft_txt, "--out", run0, "--init-from", base, "--steps", "1", "--lr", "0", "--min-lr",
              "0")
    check(r.rc == 0 and "init: weights from %s (step 8" % src in r.out, "--init-from RUN: a new run from its latest",
          r.describe())
    if r.rc:
        return
    ft_ck = tl.latest(run0)
    a, b = tensors(src, "model"), tensors(ft_ck, "model")
    check(all(np.array_equal(a[k], b[k]) for k in a), "the fine-tune starts from the checkpoint's weights, bit for bit")
    with h5py.File(src) as fs, h5py.File(os.path.join(run0, "tokens.h5")) as ft, h5py.File(ft_ck) as fc:
        check(all(np.array_equal(fs["tokenizer"][k][()], ft["tokenizer"][k][()]) for k in ("merges", "token_bytes")),
              "a text --data is encoded with the checkpoint's tokenizer")
        c = fc["config"].attrs
        sha = hashlib.sha256(open(src, "rb").read()).hexdigest()
        check(c["init_from"] == src and c["init_from_step"] == 8 and c["init_from_sha256"] == sha and
              fc.attrs["step"] == 1, "/config records the source: path, step, SHA-256 of the file",
              (c["init_from"], c["init_from_step"], c["init_from_sha256"]))
        check(c["n_layer"] == 2 and c["vocab_size"] == fs["config"].attrs["vocab_size"] and c["dropout"] == 0.0,
              "  ... the shape and vocabulary are the checkpoint's, dropout this run's")
    # --init-optimizer: the same step with the source's moments: m = beta1 m_src + (1 - beta1) g
    # against (1 - beta1) g from fresh ones, the gradient g being the same.
    run1 = os.path.join(d, "ft1")
    r = train(2, *TINY, "--data", os.path.join(run0, "tokens.h5"), "--out", run1, "--init-from", src,
              "--init-optimizer", "--steps", "1", "--lr", "0", "--min-lr", "0")
    if check(r.rc == 0 and "weights and AdamW moments" in r.out, "--init-optimizer", r.describe()):
        m_src, m_fresh, m_init = (tensors(p, "optimizer/m") for p in (src, ft_ck, tl.latest(run1)))
        diff = max(float(np.abs(m_init[k] - m_fresh[k] - 0.9 * m_src[k]).max()) for k in m_src)
        scale = max(float(np.abs(m_src[k]).max()) for k in m_src)
        check(diff <= 1e-6 * scale + 1e-12, "  ... the moments are the checkpoint's: m_init - m_fresh = beta1 m_src",
              (diff, scale))
        with h5py.File(src) as fs, h5py.File(tl.latest(run1)) as f1:
            check(f1["state"].attrs["adam_t"] == fs["state"].attrs["adam_t"] + 1, "  ... with their step count")
    # --resume of a fine-tune is exact: 0 -> 6 straight against 0 -> 3, then --resume to 6.
    common = ["--data", ft_txt, "--init-from", base, *TINY]
    straight, split = os.path.join(d, "straight"), os.path.join(d, "split")
    r1 = train(2, "--out", straight, "--steps", "6", *common)
    r2 = train(2, "--out", split, "--steps", "3", *common)
    r3 = train(2, "--data", ft_txt, "--out", split, "--resume", "--steps", "6")
    if check(r1.rc == r2.rc == r3.rc == 0, "a fine-tune stopped at 3 and resumed", r3.describe()):
        a, b = tl.latest(straight), tl.latest(split)
        same = all(np.array_equal(tensors(a, g)[k], tensors(b, g)[k])
                   for g in ("model", "optimizer/m", "optimizer/v") for k in tensors(src, "optimizer/m"))
        check(same, "  ... ends with the straight run's weights and moments, bit for bit")
        # every row but the extra eval of the stopped run's last step
        rows = lambda p: [(x["step"], x["train_loss"], x["lr"], x["grad_norm"])  # noqa: E731
                          for x in csv.DictReader(open(os.path.join(p, "metrics.csv")))]
        check(rows(straight) == rows(split), "  ... and its training losses", (rows(straight), rows(split)))
        with h5py.File(tl.latest(split)) as f:
            check(f["config"].attrs["init_from"] == src, "  ... and its checkpoints still record the source")

    # ---- bad inputs: one line, exit 1, no run left behind
    other_v, other_t = os.path.join(d, "other_v.h5"), os.path.join(d, "other_t.h5")
    tl.run_ok([BPE, "train", "--input", ft_txt, "--out", other_v, "--vocab-size", "400", "--quiet"])
    tl.run_ok([BPE, "encode", "--vocab", other_v, "--input", ft_txt, "--out", other_t, "--quiet"])
    bad = os.path.join(d, "bad")
    cases = [
        (["--data", ft_txt, "--init-from", base, "--n-layer", "3"], ["--n-layer 3", "contradicts", "n-layer 2"]),
        (["--data", ft_txt, "--init-from", base, "--vocab-size", "999"], ["--vocab-size 999", "contradicts"]),
        (["--data", ft_txt, "--init-from", base, "--block-size", "32"], ["--block-size 32", "contradicts"]),
        (["--data", ft_txt, "--init-from", os.path.join(d, "nope.h5")], ["--init-from", "nope.h5"]),
        (["--data", ft_txt, "--init-from", d], ["--init-from", "no checkpoint written yet"]),
        (["--data", ft_txt, "--init-from", ft_txt], ["--init-from", "ft.txt"]),
        (["--data", other_t, "--init-from", base], ["another tokenizer than --init-from", "merge", "gpt-bpe encode --vocab",
                                                     "--input '%s'" % ft_txt]),
    ]
    for args, needles in cases:
        r = train(2, *TINY[8:], *args, "--out", bad, "--steps", "2")
        check(*refused(r, *needles))
        check(not os.path.exists(bad), "  ... no run directory left behind")
    r = train(2, "--data", ft_txt, "--out", split, "--resume", "--init-from", base, "--steps", "8")
    check(*refused(r, "--init-from", "--resume"))
    # The command the message gives makes the tokens the checkpoint needs.
    r = train(2, *TINY[8:], "--data", other_t, "--init-from", base, "--out", bad, "--steps", "2")
    cmd = r.err.split("vocabulary: ", 1)[-1].split(" (or give", 1)[0]
    fixed = tl.run(["/bin/sh", "-c", cmd.replace("gpt-bpe ", BPE + " ", 1)])
    out = cmd.split("--out ", 1)[-1].strip("'")
    r = train(2, *TINY[8:], "--data", out, "--init-from", base, "--out", bad, "--steps", "2")
    check(fixed.rc == 0 and r.rc == 0, "the gpt-bpe encode command of the message fixes the tokens", fixed.describe() + r.describe())


# ---------------------------------------------------------------- text --data
def test_text(d):
    docs = os.path.join(d, "docs")
    os.makedirs(os.path.join(docs, "b"))
    whole = open(text_file(os.path.join(d, "all.txt"), "tinyshakespeare.txt", 150_000, 3), "rb").read()
    parts = [whole[i * 30_000:(i + 1) * 30_000] for i in range(5)]
    names = [os.path.join(docs, "a.txt"), os.path.join(docs, "b", "c.txt"), os.path.join(docs, "b", "d.txt"),
             os.path.join(d, "e.txt"), os.path.join(d, "f.txt")]
    for n, p in zip(names, parts):
        open(n, "wb").write(p.decode("utf-8", "ignore").encode())
    sep = "<|endoftext|>"
    run = os.path.join(d, "run")
    args = ["--data", docs, "--data", names[3], "--vocab-size", "350", "--doc-separator", sep, "--val-split", "docs",
            "--val-fraction", "0.2", *TINY]
    r = train(2, *args, "--out", run, "--steps", "2")
    if not check(r.rc == 0, "--data DIR FILE --doc-separator --val-split docs", r.describe()):
        return
    # The same files through gpt-bpe give the same vocabulary and tokens: one pipeline.
    v, t = os.path.join(d, "v.h5"), os.path.join(d, "t.h5")
    tl.run_ok([BPE, "train", "--input", docs, "--input", names[3], "--out", v, "--vocab-size", "350",
               "--doc-separator", sep, "--quiet"])
    tl.run_ok([BPE, "encode", "--vocab", v, "--input", docs, "--input", names[3], "--out", t, "--doc-separator", sep,
               "--val-split", "docs", "--val-fraction", "0.2", "--quiet"])
    with h5py.File(os.path.join(run, "tokens.h5")) as a, h5py.File(t) as b:
        same = all(np.array_equal(a[k][()], b[k][()]) for k in ("train", "val", "tokenizer/merges"))
        check(same, "gpt-train's text --data gives exactly gpt-bpe train + encode's tokens")
        paths = [p.decode() for p in a["sources/path"][()]]
        check(paths == names[:4] and a["sources"].attrs["val_split"] == "docs" and
              a["tokenizer/special_tokens"][()].tolist() == [sep.encode()],
              "  ... /sources lists the files; the separator is a special token", paths)
        check(a["sources/val_tokens"][()].tolist()[:3] == [0, 0, 0], "  ... /val holds whole documents")
    # metrics.csv as an older gpt-train wrote it (no val_bpb column): the resume adds the column.
    mpath = os.path.join(run, "metrics.csv")
    old = [",".join(x.split(",")[:8]) for x in open(mpath).read().splitlines()]
    open(mpath, "w").write("\n".join(old) + "\n")
    r = train(2, *args, "--out", run, "--steps", "4", "--resume")
    check(r.rc == 0 and "reusing" in r.out, "--resume reuses RUN/tokens.h5 of the same files", r.describe())
    rows = list(csv.DictReader(open(mpath)))
    check([x["step"] for x in rows] == ["1", "2", "3", "4"] and rows[1]["val_bpb"] == "" and rows[-1]["val_bpb"] != "",
          "--resume of an older metrics.csv adds the val_bpb column (empty in the older rows)", rows)
    open(names[1], "ab").write(b"one more line\n")
    r = train(2, *args, "--out", run, "--steps", "6", "--resume")
    check(*refused(r, "has changed since this run tokenized it"))
    r = train(2, "--data", "-", "--out", os.path.join(d, "stdin"), "--steps", "2", *TINY)
    check(*refused(r, "--data '-'", "standard input"))
    r = train(2, "--data", t, "--data", names[4], "--out", os.path.join(d, "mix"), "--steps", "2", *TINY)
    check(*refused(r, "tokens.h5", "comes alone"))
    os.mkdir(os.path.join(d, "empty"))
    r = train(2, "--data", os.path.join(d, "empty"), "--out", os.path.join(d, "e"), "--steps", "2", *TINY)
    check(*refused(r, "no regular files"))


# ---------------------------------------------------------------- gpt-eval
def test_eval(d):
    run, txt = base_run(d)
    tok = os.path.join(run, "tokens.h5")
    rows = list(csv.DictReader(open(os.path.join(run, "metrics.csv"))))
    final = float(rows[-1]["val_loss"])
    r1 = gpt_eval(1, "--checkpoint", run, "--data", tok, "--split", "val", "--batch-size", "8")
    if not check(r1.rc == 0, "gpt-eval on the run's own tokens.h5", r1.describe()):
        return
    e1 = result(r1)
    check(abs(e1["loss"] - final) <= 1e-6 * final, "gpt-eval --split val equals the run's final val loss (1e-6 "
          "relative)", (e1["loss"], final))
    check(abs(e1["bpb"] - float(rows[-1]["val_bpb"])) <= 1e-5 * e1["bpb"] and "bpb" in r1.out,
          "  ... and metrics.csv's val_bpb", (e1["bpb"], rows[-1]["val_bpb"]))
    check(abs(e1["ppl"] - math.exp(e1["loss"])) <= 1e-5 * e1["ppl"], "  ... ppl = exp(loss)")
    # bits per byte by hand: the scored tokens are /val[1 : 1 + W T]; their decoded bytes.
    with h5py.File(tok) as f:
        t = f["tokenizer"]
        off, n_special = t["token_offsets"][()], len(t["special_tokens"][()])
        val = f["val"][()].astype(np.int64)
    V, T = len(off) - 1, 16
    W = (len(val) - 1) // T
    scored = val[1:1 + W * T]
    lens = np.diff(off)
    lens[V - n_special:] = 0
    nbytes = int(lens[scored].sum())
    check(e1["tokens"] == W * T and e1["bytes"] == nbytes, "tokens and bytes are the scored tokens and their decoded "
          "bytes", (e1["tokens"], W * T, e1["bytes"], nbytes))
    check(abs(e1["bpb"] - e1["loss"] * W * T / (math.log(2) * nbytes)) <= 1e-7 * e1["bpb"],
          "bpb = loss x tokens / (ln 2 x bytes)")
    # 2 ranks, other batches, and --per-token
    pt = os.path.join(d, "pt.h5")
    r2 = gpt_eval(2, "--checkpoint", tl.latest(run), "--data", tok, "--batch-size", "5", "--per-token", pt)
    if check(r2.rc == 0, "gpt-eval under mpirun -np 2", r2.describe()):
        e2 = result(r2)
        check(abs(e2["loss"] - e1["loss"]) <= 1e-6 * e1["loss"] and e2["tokens"] == e1["tokens"] and
              e2["bytes"] == e1["bytes"], "the same loss at 1 and 2 ranks", (e1, e2))
        with h5py.File(pt) as f:
            ids, loss = f["token_ids"][()], f["token_loss"][()].astype(np.float64)
            check(f.attrs["format"] == "gpt-train/token-loss" and np.array_equal(ids, scored) and
                  f.attrs["context_id"] == val[0], "--per-token: the scored ids in order")
            check(abs(loss.mean() - e2["loss"]) <= 1e-6 * e2["loss"] and f.attrs["bytes"] == nbytes,
                  "  ... their losses average to the loss", (loss.mean(), e2["loss"]))
    # text input: encoded with the checkpoint's tokenizer, scored whole
    ev_txt = text_file(os.path.join(d, "eval.txt"), "taylorswift.txt", 60_000, 4)
    r3 = gpt_eval(1, "--checkpoint", run, "--data", ev_txt)
    whole = os.path.join(d, "whole.h5")
    tl.run_ok([BPE, "encode", "--vocab", tl.latest(run), "--input", ev_txt, "--out", whole, "--val-fraction", "0",
               "--quiet"])
    r4 = gpt_eval(1, "--checkpoint", run, "--data", whole, "--split", "train")
    if check(r3.rc == 0 and r4.rc == 0, "gpt-eval on a text file", r3.describe() + r4.describe()):
        check(result(r3) == result(r4), "  ... equals gpt-eval on its tokens.h5 (gpt-bpe encode --vocab CKPT)",
              (r3.out[-200:], r4.out[-200:]))
        check(result(r3)["bytes"] <= os.path.getsize(ev_txt), "  ... bytes are the scored text's")
    # bad inputs
    other_v, other_t = os.path.join(d, "ov.h5"), os.path.join(d, "ot.h5")
    tl.run_ok([BPE, "train", "--input", ev_txt, "--out", other_v, "--vocab-size", "400", "--quiet"])
    tl.run_ok([BPE, "encode", "--vocab", other_v, "--input", ev_txt, "--out", other_t, "--quiet"])
    short = os.path.join(d, "short.txt")
    open(short, "w").write("Hi.")
    badutf = os.path.join(d, "bad.txt")
    open(badutf, "wb").write(b"fine\nnot \xff fine\n")
    open(os.path.join(d, "exists.h5"), "w").write("x")
    cases = [
        (["--checkpoint", os.path.join(d, "nope"), "--data", tok], ["--checkpoint", "nope"]),
        (["--checkpoint", run, "--data", os.path.join(d, "nope.txt")], ["--data", "nope.txt"]),
        (["--checkpoint", run, "--data", ev_txt, "--split", "val"], ["--split val", "only a tokens.h5"]),
        (["--checkpoint", run, "--data", other_t], ["another tokenizer than --checkpoint", "gpt-bpe encode --vocab"]),
        (["--checkpoint", run, "--data", short], ["fewer than the block size + 1"]),
        (["--checkpoint", run, "--data", badutf], ["bad.txt", "invalid UTF-8 at byte offset 9"]),
        (["--checkpoint", run, "--data", tok, "--per-token", os.path.join(d, "exists.h5")], ["--per-token", "exists"]),
        (["--checkpoint", run, "--data", tok, "--batch-size", "0"], ["--batch-size"]),
        (["--checkpoint", tok, "--data", tok], ["--checkpoint", "format is 'gpt-train/tokens'"]),
    ]
    for np_ in (1, 2):
        for args, needles in cases[: len(cases) if np_ == 1 else 4]:
            r = gpt_eval(np_, *args)
            check(*refused(r, *needles))


def main():
    tl.require("gpt-train", "gpt-bpe", "gpt-eval", fail=True)
    parts = {"initfrom": test_initfrom, "text": test_text, "eval": test_eval}
    which = sys.argv[1:] or list(parts)
    for name in which:
        d = tl.tmpdir("workflows_%s_" % name)
        try:
            tl.timed(parts[name], d)
        finally:
            tl.rmtree(d)
    ck.finish()


if __name__ == "__main__":
    main()
