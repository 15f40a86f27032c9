#!/usr/bin/python3
"""gpt-bpe on bad input: every case exits 1 with ONE message that names the flag or file and
says what is wrong, prints no HDF5 error stack, and leaves no output (nor temporary) file."""
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402

BPE = os.path.join(tl.BUILD, "gpt-bpe")
ck = tl.Checks("test_bpe_errors")
check = ck.ok


def run(*args):
    return tl.run([BPE, *args])


def expect_error(args, needles, out=None, status=1):
    """Runs gpt-bpe, expects exit `status`, one error line containing every needle."""
    tmpdir = os.path.dirname(out) if out else None
    before = set(os.listdir(tmpdir)) if tmpdir and os.path.isdir(tmpdir) else set()
    r = run(*args)
    err = r.err
    what = " ".join(args)
    check(r.rc == status, "%s: exit %s, expected %d (%s)" % (what, r.rc, status, err.strip()))
    lines = [l for l in err.splitlines() if l.strip()]
    check(len([l for l in lines if "error:" in l]) == 1 and len(lines) <= 2,
          "%s: expected one error message, got %r" % (what, err))
    check("HDF5-DIAG" not in err, "%s: HDF5 error stack printed" % what)
    for n in needles:
        check(n in err, "%s: message %r lacks %r" % (what, err.strip(), n))
    if out:
        check(not os.path.exists(out) or out in KEEP, "%s: output %s was written" % (what, out))
        after = set(os.listdir(tmpdir)) if os.path.isdir(tmpdir) else set()
        check(not [f for f in after - before if ".tmp-" in f], "%s: temporary file left behind" % what)
        check(not [f for f in after if ".tmp-" in f], "%s: temporary file left behind" % what)


KEEP = set()


def main():
    tmp = tl.tmpdir("bpe_errors_")
    try:
        T = lambda name: os.path.join(tmp, name)  # noqa: E731
        text = ("The quick brown fox jumps over the lazy dog. " * 50 + "\n") * 20
        with open(T("ok.txt"), "w") as f:
            f.write(text)
        open(T("empty.txt"), "w").close()
        os.mkdir(T("adir"))
        out = T("v.h5")

        # ---- train: input
        expect_error(["train", "--input", T("missing.txt"), "--out", out], ["--input", "missing.txt", "No such file"], out)
        expect_error(["train", "--input", T("ok.txt/x"), "--out", out], ["--input", "Not a directory"], out)
        expect_error(["train", "--input", T("empty.txt"), "--out", out], ["--input", "empty"], out)
        expect_error(["train", "--input", T("adir"), "--out", out], ["--input", "adir", "no regular files"], out)
        if os.geteuid() != 0:  # root reads anything
            shutil.copy(T("ok.txt"), T("noread.txt"))
            os.chmod(T("noread.txt"), 0)
            expect_error(["train", "--input", T("noread.txt"), "--out", out], ["--input", "Permission denied"], out)
        # invalid UTF-8: offset and line named
        bad = b"first line\nsecond line\nthird \xff line\n"
        with open(T("bad.txt"), "wb") as f:
            f.write(bad)
        expect_error(["train", "--input", T("bad.txt"), "--out", out],
                     ["bad.txt", "invalid UTF-8", "byte offset %d" % bad.index(b"\xff"), "line 3", "--replace-invalid"], out)
        with open(T("bad2.txt"), "wb") as f:
            f.write(b"ok\n" * 10 + b"truncated \xe2\x82")  # a character cut at the end of the file
        expect_error(["train", "--input", T("bad2.txt"), "--out", out], ["byte offset 40", "line 11"], out)
        with open(T("bad3.txt"), "wb") as f:
            f.write(b"surrogate \xed\xa0\x80 and overlong \xc0\xaf")
        expect_error(["train", "--input", T("bad3.txt"), "--out", out], ["byte offset 10", "line 1"], out)

        # ---- train: flags
        ok = ["--input", T("ok.txt"), "--out", out]
        expect_error(["train", *ok, "--vocab-size", "255"], ["--vocab-size", "must be between 256 and 2147483647"], out)
        expect_error(["train", *ok, "--vocab-size", "257", "--special", "<a>", "--special", "<b>"],
                     ["--vocab-size", "at least 256", "2 special"], out)
        # token ids are uint32 in tokens.h5, and the vocabulary's counts int32: at most 2^31 - 1
        expect_error(["train", *ok, "--vocab-size", "4294967296"], ["--vocab-size", "must be between 256 and 2147483647"], out)
        expect_error(["train", *ok, "--vocab-size", "99999999999999"], ["--vocab-size", "must be between"], out)
        expect_error(["train", *ok, "--vocab-size", "3000000000"], ["--vocab-size", "must be between"], out)
        expect_error(["train", *ok, "--vocab-size", "99999999999999999999999"], ["--vocab-size", "must be between"], out)
        expect_error(["train", *ok, "--vocab-size", "12x"], ["--vocab-size", "not an integer"], out)
        expect_error(["train", *ok, "--vocab-size", "-5"], ["--vocab-size", "must be between 256"], out)
        expect_error(["train", *ok, "--pattern", "([a-z"], ["--pattern", "invalid regex", "offset 5", "missing terminating ]"], out)
        expect_error(["train", *ok, "--pattern", "a{2,1}"], ["--pattern", "invalid regex", "offset"], out)
        expect_error(["train", *ok, "--pattern", "llama4"], ["--pattern", "llama4", "unknown pattern name"], out)
        expect_error(["train", *ok, "--pattern", ""], ["--pattern", "empty"], out)
        expect_error(["train", *ok, "--special", ""], ["--special", "empty"], out)
        expect_error(["train", *ok, "--special", "<a>", "--special", "<a>"], ["--special", "twice"], out)
        expect_error(["train", *ok, "--threads", "0"], ["--threads"], out)
        expect_error(["train", *ok, "--bogus"], ["unknown option", "--bogus"], out)
        expect_error(["train", *ok, "--bogus=3"], ["unknown option", "--bogus"], out)
        expect_error(["train", *ok, "stray"], ["unexpected argument", "stray"], out)
        expect_error(["train", *ok, "--vocab-size"], ["--vocab-size", "needs a value"], out)
        expect_error(["train", "--input", T("ok.txt")], ["--out", "required"])
        expect_error(["train", "--out", out], ["--input", "required"], out)
        expect_error(["frobnicate"], ["unknown command", "frobnicate"])
        # output paths
        expect_error(["train", "--input", T("ok.txt"), "--out", T("nodir/v.h5")], ["--out", "does not exist"], T("nodir/v.h5"))
        expect_error(["train", "--input", T("ok.txt"), "--out", T("adir")], ["--out", "is a directory"])
        r = run("train", *ok, "--vocab-size", "300", "--quiet")
        check(r.rc == 0 and os.path.exists(out), "train on good input failed: %s" % r.err)
        KEEP.add(out)
        mtime = os.path.getmtime(out)
        expect_error(["train", *ok], ["--out", "exists", "--force"], out)
        check(os.path.getmtime(out) == mtime, "an existing --out was touched without --force")
        r = run("train", *ok, "--vocab-size", "300", "--quiet", "--force")
        check(r.rc == 0, "--force did not overwrite")
        # too little text is a note, not an error
        with open(T("tiny.txt"), "w") as f:
            f.write("abab")
        r = run("train", "--input", T("tiny.txt"), "--out", T("tiny.h5"), "--vocab-size", "5000")
        check(r.rc == 0 and b"note:" in r.stderr and b"vocab_size 257" in r.stderr,
              "short text: expected a note and vocab_size 257, got %r" % r.stderr)

        # ---- encode
        tok = T("t.h5")
        enc = ["encode", "--vocab", out, "--input", T("ok.txt"), "--out", tok]
        expect_error(["encode", "--vocab", T("none.h5"), "--input", T("ok.txt"), "--out", tok], ["--vocab", "none.h5"], tok)
        expect_error(["encode", "--vocab", T("ok.txt"), "--input", T("ok.txt"), "--out", tok], ["--vocab", "not an HDF5"], tok)
        expect_error(["encode", "--vocab", T("adir"), "--input", T("ok.txt"), "--out", tok], ["--vocab", "directory"], tok)
        expect_error(["encode", "--vocab", T("empty.txt"), "--input", T("ok.txt"), "--out", tok], ["--vocab", "empty"], tok)
        data = open(out, "rb").read()
        for frac in (0.5, 0.9):
            with open(T("trunc.h5"), "wb") as f:
                f.write(data[:int(len(data) * frac)])
            expect_error(["encode", "--vocab", T("trunc.h5"), "--input", T("ok.txt"), "--out", tok], ["trunc.h5"], tok)
        with h5py.File(T("other.h5"), "w") as f:
            f.attrs["format"] = "gpt-train/attention"
            f.attrs["format_version"] = 1
        expect_error(["encode", "--vocab", T("other.h5"), "--input", T("ok.txt"), "--out", tok],
                     ["--vocab", "format is 'gpt-train/attention'", "gpt-train/vocab"], tok)
        with h5py.File(T("other.h5"), "w") as f:  # a checkpoint holds a /tokenizer, but not this one
            f.attrs["format"] = "gpt-train/checkpoint"
            f.attrs["format_version"] = 1
        expect_error(["encode", "--vocab", T("other.h5"), "--input", T("ok.txt"), "--out", tok],
                     ["other.h5", "no /tokenizer group"], tok)
        with h5py.File(T("noformat.h5"), "w") as f:
            f["x"] = np.arange(3)
        expect_error(["encode", "--vocab", T("noformat.h5"), "--input", T("ok.txt"), "--out", tok], ["--vocab", "format"], tok)
        # damaged /tokenizer contents: each gives one message naming the file
        def damaged(name, edit, needle):
            p = T(name)
            shutil.copy(out, p)
            with h5py.File(p, "r+") as f:
                edit(f["tokenizer"])
            expect_error(["encode", "--vocab", p, "--input", T("ok.txt"), "--out", tok], [name, needle], tok)

        def future_id(g):
            m = g["merges"][()]
            m[3, 0] = 256 + 10
            g["merges"][...] = m
        damaged("d1.h5", future_id, "does not exist yet")

        def bad_offsets(g):
            o = g["token_offsets"][()]
            o[100] = o[102]
            g["token_offsets"][...] = o
        damaged("d2.h5", bad_offsets, "token_offsets")

        def bad_vocab_size(g):
            g.attrs["vocab_size"] = np.int64(100)
        damaged("d3.h5", bad_vocab_size, "inconsistent")

        def no_merges(g):
            del g["merges"]
        damaged("d4.h5", no_merges, "merges")

        def bad_bytes(g):
            b = g["token_bytes"][()]
            b[-1] ^= 1
            g["token_bytes"][...] = b
        damaged("d5.h5", bad_bytes, "do not match")

        def bad_pattern(g):
            g.attrs["pattern"] = "(unclosed"
        damaged("d6.h5", bad_pattern, "not a valid regex")

        def merges_shape(g):
            del g["merges"]
            g["merges"] = np.zeros((5, 3), np.int32)
        damaged("d7.h5", merges_shape, "shape")

        def no_specials(g):
            del g["special_tokens"]
        damaged("d8.h5", no_specials, "special_tokens")

        for vf in ("1", "1.5", "-0.1", "abc", "nan"):
            expect_error([*enc, "--val-fraction", vf], ["--val-fraction", "[0, 1)"], tok)
        expect_error(["encode", "--vocab", out, "--input", T("bad.txt"), "--out", tok],
                     ["bad.txt", "byte offset %d" % bad.index(b"\xff"), "line 3"], tok)
        expect_error(["encode", "--vocab", out, "--input", T("empty.txt"), "--out", tok], ["--input", "empty"], tok)
        expect_error(["encode", "--vocab", out, "--input", T("adir"), "--out", tok], ["--input", "directory"], tok)
        expect_error(["encode", "--vocab", out, "--input", T("missing.txt"), "--out", tok], ["--input", "missing.txt"], tok)
        expect_error(["encode", "--vocab", out, "--input", T("ok.txt"), "--out", T("nodir/t.h5")], ["--out", "does not exist"])
        expect_error(["encode", "--vocab", out, "--input", T("ok.txt")], ["--out", "required"])
        expect_error([*enc, "--pattern", "gpt2"], ["unknown option", "--pattern"], tok)
        r = run(*enc, "--quiet")
        check(r.rc == 0, "encode on good input failed: %s" % r.err)
        KEEP.add(tok)
        expect_error(enc, ["--out", "exists", "--force"], tok)

        # ---- decode
        expect_error(["decode", "--vocab", out, "--ids", "1,2,99999"], ["--ids", "99999", "vocab_size"])
        expect_error(["decode", "--vocab", out, "--ids", "1,x"], ["--ids", "integers"])
        expect_error(["decode", "--vocab", out, "--ids", "-1"], ["--ids", "-1"])
        expect_error(["decode", "--vocab", out], ["--tokens", "--ids"])
        expect_error(["decode", "--vocab", out, "--ids", "1", "--tokens", tok], ["exactly one"])
        expect_error(["decode", "--vocab", out, "--tokens", tok, "--split", "test"], ["--split", "train or val"])
        expect_error(["decode", "--vocab", out, "--tokens", out], ["--tokens", "format is 'gpt-train/vocab'"])
        r = run("train", "--input", T("ok.txt"), "--out", T("v2.h5"), "--vocab-size", "280", "--quiet")
        expect_error(["decode", "--vocab", T("v2.h5"), "--tokens", tok], ["another vocabulary"])
        # an id out of range inside tokens.h5
        shutil.copy(tok, T("tbad.h5"))
        with h5py.File(T("tbad.h5"), "r+") as f:
            a = f["train"][()]
            a[7] = 65000
            f["train"][...] = a
        expect_error(["decode", "--vocab", out, "--tokens", T("tbad.h5")], ["tbad.h5", "/train[7]", "65000"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ck.finish()


if __name__ == "__main__":
    main()
