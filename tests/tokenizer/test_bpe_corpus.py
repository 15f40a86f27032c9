#!/usr/bin/python3
"""gpt-bpe on a corpus of many files (docs/tokenizer.md, inputs): --input repeatable, directories
walked recursively in byte order of the paths, symbolic links followed, '-' for stdin;
--doc-separator; --val-split docs; /sources (path, bytes, SHA-256, tokens per split); an older
tokens.h5 without /sources still read; and the bad inputs: an empty directory, a file that is not
UTF-8 below a directory (named, with its byte offset, or replaced), an unreadable file (named), a
dangling link, a link loop, '-' twice, --out inside the corpus.

Documents are files: no chunk spans two, so each file encodes exactly as it does alone, and a
separator is one special id between them. Training on a directory equals training on the files
joined by the separator (a special token, cut out before counting), read in small blocks."""
import hashlib
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import bpe_corpora  # noqa: E402

BPE = os.path.join(tl.BUILD, "gpt-bpe")
SEP = "<|endoftext|>"
ck = tl.Checks("test_bpe_corpus")
check = ck.ok


def run(*args, stdin=None, env=None, preexec_fn=None):
    return tl.run([BPE, *args], stdin=stdin, extra_env=env, preexec_fn=preexec_fn)


def ids_of(path, split=None):
    with h5py.File(path, "r") as f:
        if split:
            return f[split][()].astype(np.int64)
        return np.concatenate([f["train"][()], f["val"][()]]).astype(np.int64)


def merges_of(path):
    with h5py.File(path, "r") as f:
        return f["tokenizer/merges"][()].tolist(), [s.decode() for s in f["tokenizer/special_tokens"][()]]


def token_bytes(path):
    with h5py.File(path, "r") as f:
        t = f["tokenizer"]
        tb, off = t["token_bytes"][()].tobytes(), t["token_offsets"][()]
    return [tb[off[i]:off[i + 1]] for i in range(len(off) - 1)]


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


def refused(r, *needles):
    why = tl.refusal(r, *needles, prog="gpt-bpe")
    return not why, why


def main():
    tmp = tl.tmpdir("bpe_corpus_")
    T = lambda *p: os.path.join(tmp, *p)  # noqa: E731
    try:
        texts = bpe_corpora.corpora(small=True)
        kinds = ["accents", "cyrillic", "cjk", "emoji", "crlf", "spaces", "fuzz"]
        # A tree whose byte order differs from a per-directory walk ("a.txt" < "a/..." since
        # '.' < '/') and from the locale's ("B" < "a"); files end mid-word so a chunk would span
        # two files if documents were simply concatenated.
        names = ["a/x.txt", "a.txt", "B.txt", "a/b/c.txt", "a/b/Z.txt", "ü.txt", "z/y/x/w.txt"]
        files = {}
        for i, n in enumerate(names):
            files[n] = texts[kinds[i % len(kinds)]][: 3000 + 1500 * i] + "tail%d" % i
            write(T("corpus", n), files[n])
        os.symlink(os.path.join("..", "a.txt"), T("corpus", "z", "link-to-a.txt"))  # the same file again
        os.mkfifo(T("corpus", "a", "fifo"))                                          # skipped: not a regular file
        order = sorted(names, key=lambda n: n.encode())
        corpus = T("corpus")

        # ---- training: a directory with a separator equals one text joined by it (a special)
        joined = SEP.join(files[n] for n in order)
        write(T("joined.txt"), joined)
        small = {"GT_BPE_BLOCK": "777"}  # blocks of 777 bytes: chunk boundaries everywhere
        r = run("train", "--input", corpus, "--out", T("vd.h5"), "--vocab-size", "700", "--doc-separator", SEP,
                env=small)
        check(r.rc == 0, "train --input DIR --doc-separator", r.err)
        check("reached twice through links" in r.err and "not regular files" in r.err,
              "train notes the linked file read once and the FIFO skipped", r.err)
        r = run("train", "--input", T("joined.txt"), "--out", T("vj.h5"), "--vocab-size", "700", "--special", SEP, "--quiet")
        check(r.rc == 0, "train the joined text", r.err)
        md, sd = merges_of(T("vd.h5"))
        mj, sj = merges_of(T("vj.h5"))
        check(md == mj and sd == sj == [SEP], "a directory with --doc-separator trains the merges of the joined text "
              "(separator added to the special tokens)", (len(md), len(mj), sd, sj))
        # the same vocabulary from two --input directories and a file, in the order given
        write(T("part2", "only.txt"), files["z/y/x/w.txt"])
        first = [n for n in order if n != "z/y/x/w.txt"]
        shutil.copytree(corpus, T("part1"), symlinks=True, ignore=lambda d, ns: [n for n in ns if n in ("z", "fifo")])
        r = run("train", "--input", T("part1"), "--input", T("part2"), "--out", T("v2.h5"), "--vocab-size", "700",
                "--special", SEP, "--quiet")
        write(T("joined2.txt"), SEP.join([files[n] for n in first] + [files["z/y/x/w.txt"]]))
        run("train", "--input", T("joined2.txt"), "--out", T("vj2.h5"), "--vocab-size", "700", "--special", SEP, "--quiet")
        check(r.rc == 0 and merges_of(T("v2.h5")) == merges_of(T("vj2.h5")),
              "two --input directories train as their files in the order given", r.err)

        # ---- encoding: each file alone, the separator's id between them
        vocab = T("vd.h5")
        sep_id = len(token_bytes(vocab)) - 1
        r = run("encode", "--vocab", vocab, "--input", corpus, "--out", T("td.h5"), "--val-fraction", "0",
                "--doc-separator", SEP, "--quiet", env=small)
        check(r.rc == 0, "encode --input DIR --doc-separator", r.err)
        alone = []
        for n in order:
            r = run("encode", "--vocab", vocab, "--input", T("corpus", n), "--out", T("one.h5"), "--val-fraction", "0",
                    "--force", "--quiet")
            alone.append(ids_of(T("one.h5")))
        want = np.concatenate(sum([[a, np.array([sep_id])] for a in alone], [])[:-1])
        got = ids_of(T("td.h5"))
        check(np.array_equal(got, want), "the directory's ids are each file's ids alone, joined by the separator's id",
              (len(got), len(want)))
        tb = token_bytes(vocab)
        check(b"".join(tb[i] for i in got) == joined.encode(), "decoding gives the files joined by the separator")
        check(int((got == sep_id).sum()) == len(order) - 1, "the separator is one id, never cut by the split pattern",
              int((got == sep_id).sum()))
        with h5py.File(T("td.h5"), "r") as f:
            s = f["sources"]
            paths = [p.decode() for p in s["path"][()]]
            check(paths == [os.path.join(corpus, n) for n in order], "/sources lists the files in byte order of the "
                  "paths (find -L DIR -type f | LC_ALL=C sort)", paths)
            raw = [open(os.path.join(corpus, n), "rb").read() for n in order]
            check(list(s["bytes"][()]) == [len(b) for b in raw], "/sources/bytes")
            check([h.decode() for h in s["sha256"][()]] == [hashlib.sha256(b).hexdigest() for b in raw], "/sources/sha256")
            check(list(s["train_tokens"][()]) == [len(a) for a in alone] and not s["val_tokens"][()].any(),
                  "/sources/train_tokens: each file's tokens (separators not counted)")
            check(s.attrs["doc_separator"] == SEP and s.attrs["val_split"] == "tokens", "/sources attributes")
            tr = f["train"].attrs
            check(tr["source"] == corpus and int(tr["source_bytes"]) == sum(map(len, raw)) and
                  tr["source_sha256"] == hashlib.sha256(b"".join(raw)).hexdigest(),
                  "/train's source attributes: the input, all bytes, the SHA-256 of all bytes in order", dict(tr))
        # without a separator: still no chunk across files
        r = run("encode", "--vocab", vocab, "--input", corpus, "--out", T("tn.h5"), "--val-fraction", "0", "--quiet")
        check(r.rc == 0 and np.array_equal(ids_of(T("tn.h5")), np.concatenate(alone)),
              "without a separator each file still encodes as alone", r.err)

        # ---- stdin, alone and among files
        r = run("encode", "--vocab", vocab, "--input", "-", "--out", T("ts.h5"), "--val-fraction", "0", "--quiet",
                stdin=joined.encode())
        r2 = run("encode", "--vocab", vocab, "--input", T("joined.txt"), "--out", T("tf.h5"), "--val-fraction", "0",
                 "--quiet")
        check(r.rc == 0 and r2.rc == 0 and np.array_equal(ids_of(T("ts.h5")), ids_of(T("tf.h5"))),
              "--input - reads standard input", r.err)
        with h5py.File(T("ts.h5"), "r") as f:
            check(f["sources/path"][0] == b"-" and int(f["sources/bytes"][0]) == len(joined.encode()),
                  "stdin is the source '-' with its size")
        r = run("encode", "--vocab", vocab, "--input", T("corpus", "B.txt"), "--input", "-", "--out", T("tm.h5"),
                "--val-fraction", "0", "--doc-separator", SEP, "--quiet", stdin=files["a.txt"].encode())
        want = np.concatenate([alone[order.index("B.txt")], [sep_id], alone[order.index("a.txt")]])
        check(r.rc == 0 and np.array_equal(ids_of(T("tm.h5")), want), "a file then stdin, in the order given", r.err)

        # ---- --val-split docs: /val is the fewest last whole documents holding the fraction
        for frac in ("0.1", "0.3", "0.5"):
            r = run("encode", "--vocab", vocab, "--input", corpus, "--out", T("tv.h5"), "--val-fraction", frac,
                    "--val-split", "docs", "--doc-separator", SEP, "--force", "--quiet")
            n = len(got)
            need = int(n * float(frac) + 0.5)
            starts = [0]
            for a in alone[:-1]:
                starts.append(starts[-1] + len(a) + 1)
            ok_starts = [s for s in starts if s <= n - need]
            with h5py.File(T("tv.h5"), "r") as f:
                n_train, n_val = f["train"].shape[0], f["val"].shape[0]
                vt = list(f["sources/val_tokens"][()])
                check(f["sources"].attrs["val_split"] == "docs", "val_split attribute")
            check(r.rc == 0 and n_train == max(ok_starts) and n_train + n_val == n,
                  "--val-split docs --val-fraction %s: /val starts at the last document start at or before n - "
                  "round(n F)" % frac, (r.err, n_train, ok_starts))
            k = starts.index(n_train) if n_train in starts else -1
            check(vt == [0] * k + [len(a) for a in alone[k:]], "  ... its files' tokens are all in /val", vt)
        r = run("encode", "--vocab", vocab, "--input", T("corpus", "a.txt"), "--out", T("t1.h5"), "--val-split", "docs")
        check(*refused(r, "--val-split docs", "one document"))
        # a separator inside one file makes documents too
        r = run("encode", "--vocab", vocab, "--input", T("joined.txt"), "--out", T("tj.h5"), "--val-fraction", "0.2",
                "--val-split", "docs", "--doc-separator", SEP, "--quiet")
        with h5py.File(T("tj.h5"), "r") as f:
            check(r.rc == 0 and f["val"][0] != sep_id and f["train"][-1] == sep_id,
                  "separators inside a file start documents: /val begins after one", r.err)

        # ---- an older tokens.h5 (no /sources) is still read
        shutil.copy(T("tf.h5"), T("old.h5"))
        with h5py.File(T("old.h5"), "a") as f:
            del f["sources"]
        r = run("decode", "--vocab", vocab, "--tokens", T("old.h5"))
        check(r.rc == 0 and r.stdout == b"".join(tb[i] for i in ids_of(T("old.h5"), "train")),
              "decode reads a tokens.h5 without /sources", r.err)

        # ---- bad input: one line, exit 1, no output file
        os.mkdir(T("empty"))
        os.makedirs(T("emptytree", "a", "b"))
        checks = [
            (["train", "--input", T("empty"), "--out", T("x.h5")], ["--input", "empty", "no regular files"]),
            (["train", "--input", T("emptytree"), "--out", T("x.h5")], ["emptytree", "no regular files"]),
            (["encode", "--vocab", vocab, "--input", "-", "--input", "-", "--out", T("x.h5")], ["'-'", "twice"]),
            (["encode", "--vocab", vocab, "--input", corpus, "--out", T("x.h5"), "--doc-separator", "<|nope|>"],
             ["--doc-separator", "<|nope|>", "not a special token"]),
        ]
        write(T("bad", "fine.txt"), "fine text\n")
        bad = b"line one\nline two \xc3\x28 oops\n"
        write(T("bad", "sub", "latin1.txt"), bad)
        checks.append((["train", "--input", T("bad"), "--out", T("x.h5")],
                       ["--input '%s'" % T("bad"), "latin1.txt", "invalid UTF-8 at byte offset %d" % bad.index(b"\xc3"),
                        "line 2", "column 10", "--replace-invalid"]))
        os.makedirs(T("loop", "d"))
        write(T("loop", "d", "t.txt"), "text\n")
        os.symlink("..", T("loop", "d", "up"))
        checks.append((["train", "--input", T("loop"), "--out", T("x.h5")], ["symbolic link loop", "up"]))
        os.makedirs(T("dangling"))
        write(T("dangling", "t.txt"), "text\n")
        os.symlink("nowhere", T("dangling", "gone.txt"))
        checks.append((["train", "--input", T("dangling"), "--out", T("x.h5")], ["gone.txt", "dangling"]))
        write(T("without", "t.txt"), "some text\n")
        shutil.copy(vocab, T("without", "v.h5"))
        checks.append((["train", "--input", T("without"), "--out", T("without", "v.h5"), "--force"],
                       ["--out", "same file"]))
        for args, needles in checks:
            before = set(os.listdir(tmp))
            r = run(*args)
            check(*refused(r, *needles))
            check(not (set(os.listdir(tmp)) - before), "no output for %s" % " ".join(args[:3]))
        r = run("train", "--input", T("bad"), "--out", T("rep.h5"), "--replace-invalid")
        check(r.rc == 0 and os.path.exists(T("rep.h5")) and "replaced 1 invalid UTF-8 sequence(s) in 1 of 2 files" in r.err
              and "latin1.txt" in r.err, "--replace-invalid on a directory: counted, the file named", r.err)
        # an unreadable file is named (as root, run as nobody: root reads anything)
        os.makedirs(T("locked"))
        write(T("locked", "a.txt"), "open text\n")
        write(T("locked", "secret.txt"), "closed text\n")
        os.chmod(T("locked", "secret.txt"), 0)
        for p in (tmp, T("locked")):
            os.chmod(p, 0o755)
        drop = (lambda: (os.setgid(65534), os.setuid(65534))) if os.geteuid() == 0 else None
        os.makedirs(T("out"))
        os.chmod(T("out"), 0o777)
        r = run("train", "--input", T("locked"), "--out", T("out", "x.h5"), preexec_fn=drop)
        check(*refused(r, "--input '%s'" % T("locked"), "secret.txt", "Permission denied"))
    finally:
        tl.rmtree(tmp)
    ck.finish()


if __name__ == "__main__":
    main()
