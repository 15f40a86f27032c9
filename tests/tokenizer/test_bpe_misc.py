#!/usr/bin/python3
"""gpt-bpe: help and usage, SHA-256 (SHA-NI and portable code against hashlib), streaming in
small blocks (same ids, invalid UTF-8 offsets counted across blocks), --replace-invalid
against Python's errors="replace", uint32 token files for vocabularies above 65536, --ids."""
import hashlib
import os
import random
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import bpe_corpora  # noqa: E402
import bpe_ref  # noqa: E402

BPE = os.path.join(tl.BUILD, "gpt-bpe")
ck = tl.Checks("test_bpe_misc")
check = ck.ok


def run(*args, env=None):
    return tl.run([BPE, *args], extra_env=env)


def ids_of(path):
    with h5py.File(path, "r") as f:
        return np.concatenate([f["train"][()], f["val"][()]]).astype(np.int64), f["train"].dtype


def main():
    tmp = tl.tmpdir("bpe_misc_")
    T = lambda name: os.path.join(tmp, name)  # noqa: E731
    try:
        # ---- usage
        for cmd, flags in (("train", ["--input", "--out", "--vocab-size", "--pattern", "--special", "--replace-invalid",
                                      "--threads", "--force"]),
                           ("encode", ["--vocab", "--input", "--out", "--val-fraction", "--replace-invalid", "--threads",
                                       "--force"]),
                           ("decode", ["--vocab", "--tokens", "--split", "--ids"])):
            r = run(cmd, "--help")
            out = r.stdout.decode()
            check(r.rc == 0 and all(f in out for f in flags), "%s --help lacks a flag: %s" % (cmd, out))
        check(run("--help").rc == 0 and run().rc == 1, "gpt-bpe --help / no arguments")

        # ---- corpus and vocabulary
        texts = bpe_corpora.corpora(small=True)
        text = "".join(texts[k] for k in ("accents", "cjk", "emoji", "crlf", "spaces"))
        if "shakespeare200k" in texts:
            text = texts["shakespeare200k"] + text
        raw = text.encode("utf-8")
        with open(T("c.txt"), "wb") as f:
            f.write(raw)
        r = run("train", "--input", T("c.txt"), "--out", T("v.h5"), "--vocab-size", "800", "--quiet", "--special", "<|eot|>")
        check(r.rc == 0, "train: %s" % r.err)
        with h5py.File(T("v.h5"), "r") as f:
            merges = [tuple(int(x) for x in m) for m in f["tokenizer/merges"][()]]

        # ---- SHA-256: SHA-NI and portable code against hashlib, at block-edge sizes
        rng = random.Random(5)
        for n in (1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 99999):
            data = bytes(rng.choice(b"abc \n") for _ in range(n))
            with open(T("s.txt"), "wb") as f:
                f.write(data)
            for env in ({}, {"GT_SHA256_PORTABLE": "1"}):
                r = run("encode", "--vocab", T("v.h5"), "--input", T("s.txt"), "--out", T("s.h5"), "--force", "--quiet", env=env)
                with h5py.File(T("s.h5"), "r") as f:
                    sha = f["train"].attrs["source_sha256"]
                check(r.rc == 0 and sha == hashlib.sha256(data).hexdigest(), "sha256 of %d bytes %s" % (n, env))

        # ---- streaming: 70001-byte blocks give exactly the ids of one block
        r1 = run("encode", "--vocab", T("v.h5"), "--input", T("c.txt"), "--out", T("t1.h5"), "--quiet")
        r2 = run("encode", "--vocab", T("v.h5"), "--input", T("c.txt"), "--out", T("t2.h5"), "--quiet",
                 env={"GT_BPE_BLOCK": "70001"})
        r3 = run("encode", "--vocab", T("v.h5"), "--input", T("c.txt"), "--out", T("t3.h5"), "--quiet", "--threads", "2",
                 env={"GT_BPE_BLOCK": "150001"})
        check(r1.rc == r2.rc == r3.rc == 0, "encode failed")
        a, dt = ids_of(T("t1.h5"))
        check(np.array_equal(a, ids_of(T("t2.h5"))[0]), "streamed encoding differs")
        check(np.array_equal(a, ids_of(T("t3.h5"))[0]), "streamed encoding with 2 threads differs")
        check(list(a) == bpe_ref.encode(text, merges, "llama3", ["<|eot|>"]), "encoding differs from the reference")
        # ---- words past 64 KiB are merged in a compact scratch (bpe_huge): GT_BPE_HUGE=2 sends
        # every word there, GT_BPE_HUGE=10^9 none; both must give the reference's ids, also
        # for words of 70 KB to 300 KB (a letter run built of frequent pairs, CJK, spaces)
        r = run("encode", "--vocab", T("v.h5"), "--input", T("c.txt"), "--out", T("th.h5"), "--quiet", "--force",
                env={"GT_BPE_HUGE": "2"})
        check(r.rc == 0 and np.array_equal(a, ids_of(T("th.h5"))[0]), "bpe_huge on every word differs")
        rng = random.Random(5)
        pieces = ["".join(rng.choice(["th", "he", "in", "er", "an", "e", "t"]) for _ in range(40000)),
                  "\u4f60\u597d\u4e16\u754c" * 20000, " " * 300000, "ok"]
        with open(T("long.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(pieces))
        outs = []
        for huge in ("2", "1000000000"):
            r = run("encode", "--vocab", T("v.h5"), "--input", T("long.txt"), "--out", T("tl%s.h5" % huge), "--quiet",
                    env={"GT_BPE_HUGE": huge})
            outs.append(ids_of(T("tl%s.h5" % huge))[0] if r.rc == 0 else None)
        check(outs[0] is not None and outs[1] is not None and np.array_equal(outs[0], outs[1]),
              "words of 70-300 KB: bpe_huge and bpe_long disagree")
        # invalid UTF-8 beyond the first blocks: offset and line still exact
        bad_at = len(raw) - 1000
        while (raw[bad_at] & 0xC0) == 0x80:
            bad_at += 1
        broken = raw[:bad_at] + b"\xc3\x28" + raw[bad_at:]
        with open(T("broken.txt"), "wb") as f:
            f.write(broken)
        r = run("encode", "--vocab", T("v.h5"), "--input", T("broken.txt"), "--out", T("tb.h5"), env={"GT_BPE_BLOCK": "70001"})
        line = broken[:bad_at].count(b"\n") + 1
        err = r.err
        check(r.rc == 1 and "byte offset %d " % bad_at in err and "line %d," % line in err,
              "invalid UTF-8 after several blocks: %r (expected offset %d line %d)" % (err, bad_at, line))
        check(not os.path.exists(T("tb.h5")), "output written despite invalid input")

        # ---- --replace-invalid: each bad sequence becomes one U+FFFD, as Python's errors="replace"
        bad = (b"caf\xc3\xa9 \xff\xfe ok \xe2\x82 x \xed\xa0\x80 y \xf0\x9f\x98 z \xc0\xaf \xf4\x90\x80\x80 " +
               "ünïcödé 😀 ".encode() * 3) * 40 + b"\xe2\x82"
        with open(T("bad.txt"), "wb") as f:
            f.write(bad)
        fixed = bad.decode("utf-8", errors="replace")
        n_repl = fixed.count("\ufffd")
        for block in ("7", "16777216"):
            r = run("encode", "--vocab", T("v.h5"), "--input", T("bad.txt"), "--out", T("tr.h5"), "--force", "--quiet",
                    "--replace-invalid", env={"GT_BPE_BLOCK": block})
            check(r.rc == 0 and ("replaced %d invalid" % n_repl) in r.err,
                  "--replace-invalid (block %s): %r, expected %d replacements" % (block, r.stderr, n_repl))
            d = run("decode", "--vocab", T("v.h5"), "--tokens", T("tr.h5"), "--split", "train").stdout + \
                run("decode", "--vocab", T("v.h5"), "--tokens", T("tr.h5"), "--split", "val").stdout
            check(d == fixed.encode("utf-8"), "--replace-invalid round trip (block %s)" % block)
            with h5py.File(T("tr.h5"), "r") as f:
                check(f["train"].attrs["source_sha256"] == hashlib.sha256(bad).hexdigest(),
                      "sha256 is of the input as given")
        r = run("train", "--input", T("bad.txt"), "--out", T("vr.h5"), "--vocab-size", "300", "--replace-invalid")
        check(r.rc == 0 and ("replaced %d invalid" % n_repl) in r.err, "train --replace-invalid")
        with h5py.File(T("vr.h5"), "r") as f:
            m = [tuple(int(x) for x in mm) for mm in f["tokenizer/merges"][()]]
        check(m == bpe_ref.train(fixed, 300), "train --replace-invalid merges differ from the reference")

        # ---- --ids: raw bytes, even a token that is half a character
        tb = bpe_ref.token_bytes(merges, ["<|eot|>"])
        ids = [0, 65, 10, 195, 255, 256, 300, len(tb) - 1, 65]
        r = run("decode", "--vocab", T("v.h5"), "--ids", ",".join(map(str, ids)))
        check(r.rc == 0 and r.stdout == b"".join(tb[i] for i in ids), "decode --ids")

        # ---- vocabularies above 65536 ids: uint32 token files
        rng = random.Random(11)
        words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(5, 10))) for _ in range(40000)]
        big = " ".join(w for w in words for _ in range(2)) + "\n"
        with open(T("w.txt"), "w") as f:
            f.write(big)
        r = run("train", "--input", T("w.txt"), "--out", T("vb.h5"), "--vocab-size", "70000", "--quiet")
        check(r.rc == 0, "train 70000: %s" % r.err)
        with h5py.File(T("vb.h5"), "r") as f:
            V = int(f["tokenizer"].attrs["vocab_size"])
        check(V > 65536, "text too small for a vocabulary above 65536 (got %d)" % V)
        r = run("encode", "--vocab", T("vb.h5"), "--input", T("w.txt"), "--out", T("tw.h5"), "--quiet")
        a, dt = ids_of(T("tw.h5"))
        check(r.rc == 0 and dt == np.uint32 and a.max() >= 65536, "uint32 ids for V=%d (%s, max %d)" % (V, dt, a.max()))
        d = run("decode", "--vocab", T("vb.h5"), "--tokens", T("tw.h5")).stdout + \
            run("decode", "--vocab", T("vb.h5"), "--tokens", T("tw.h5"), "--split", "val").stdout
        check(d == big.encode(), "uint32 round trip")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ck.finish()


if __name__ == "__main__":
    main()
