#!/usr/bin/python3
"""gpt-bpe against the Python reference (tests/bpe_ref.py), on every corpus of bpe_corpora.py
and every built-in pattern:
  - the split: chunk for chunk (PCRE2 alone, the ASCII fast path, and the streaming path);
  - training: merge for merge, and the vocab.h5 layout of docs/formats.md;
  - encoding: id for id, /train + /val split, source attributes (SHA-256 against hashlib);
  - decode(encode(text)) == text through `gpt-bpe decode`.
Usage: test_bpe_ref.py [quick|full]   (quick: smaller texts, fewer pattern combinations)"""
import hashlib
import os
import sys
import tempfile

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import bpe_corpora  # noqa: E402
import bpe_ref  # noqa: E402

BPE = os.path.join(tl.BUILD, "gpt-bpe")
SPLIT = os.path.join(tl.BUILD, "test_bpe_split")
ck = tl.Checks("test_bpe_ref")
check = ck.ok
run = tl.run


def c_split(pattern, path, extra=(), env=None):
    r = tl.run_ok([SPLIT, pattern, path, *extra], extra_env=env)
    out = []
    for line in r.stdout.decode().splitlines():
        kind, v = line.split(" ", 1)
        out.append(bytes.fromhex(v) if kind == "W" else int(v))
    return out


def py_split(text, pattern, specials=()):
    rx = bpe_ref.regex.compile(bpe_ref.pcre2_compatible(bpe_ref.resolve(pattern)))
    out = []
    for seg, sp in bpe_ref.split_segments(text, list(specials)):
        if sp is not None:
            out.append(sp)
        else:
            out.extend(c.encode("utf-8") for c in bpe_ref.chunks(seg, rx))
    return out


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return "at %d: C %r vs ref %r" % (i, x, y)
    return "lengths %d vs %d" % (len(a), len(b))


def vocab_merges(path):
    with h5py.File(path, "r") as f:
        g = f["tokenizer"]
        return [tuple(int(v) for v in m) for m in g["merges"][()]], g


def check_vocab_layout(path, merges, specials, pattern):
    with h5py.File(path, "r") as f:
        check(f.attrs["format"] == "gpt-train/vocab" and f.attrs["format_version"] == 1, "vocab.h5 root attrs")
        g = f["tokenizer"]
        V = 256 + len(merges) + len(specials)
        check(int(g.attrs["vocab_size"]) == V and int(g.attrs["n_merges"]) == len(merges), "vocab_size/n_merges attrs")
        check(g.attrs["pattern"] == bpe_ref.resolve(pattern), "pattern attr holds the regex")
        check(g["merges"].dtype == np.int32 and g["merges"].shape == (len(merges), 2), "merges int32 (M,2)")
        check(g["token_offsets"].dtype == np.int64 and g["token_offsets"].shape == (V + 1,), "token_offsets int64 (V+1)")
        check(g["token_bytes"].dtype == np.uint8, "token_bytes uint8")
        tb, off = g["token_bytes"][()].tobytes(), g["token_offsets"][()]
        ref = bpe_ref.token_bytes(merges, specials)
        check(all(tb[off[i]:off[i + 1]] == ref[i] for i in range(V)), "token_bytes match the merges")
        sp = [s.decode() if isinstance(s, bytes) else s for s in g["special_tokens"][()]]
        check(sp == list(specials), "special_tokens dataset")


def one_corpus(name, text, pattern, vocab_size, tmp, specials=(), threads=1):
    tag = "%s/%s/V%d%s" % (name, pattern, vocab_size, "/specials" if specials else "")
    path = os.path.join(tmp, "%s.txt" % name)
    with open(path, "wb") as f:
        f.write(text.encode("utf-8"))
    # 1. the split
    sp_args = list(specials)
    ref_chunks = py_split(text, pattern, specials)
    c_chunks = c_split(pattern, path, sp_args)
    check(c_chunks == ref_chunks, "%s: split differs from the reference %s" % (tag, first_diff(c_chunks, ref_chunks)))
    slow = c_split(pattern, path, sp_args, {"GT_BPE_NO_FAST": "1"})
    check(slow == c_chunks, "%s: ASCII fast path differs from PCRE2 %s" % (tag, first_diff(c_chunks, slow)))
    if name in ("fuzz", "spaces", "custom", "specials", "emoji"):  # PCRE2's interpreter, as without JIT
        interp = c_split(pattern, path, sp_args, {"GT_BPE_NO_FAST": "1", "GT_BPE_NO_JIT": "1"})
        check(interp == c_chunks, "%s: PCRE2 interpreter differs from JIT %s" % (tag, first_diff(c_chunks, interp)))
    # 2. training
    vocab = os.path.join(tmp, "v.h5")
    sp_flags = [a for s in specials for a in ("--special", s)]
    r = run([BPE, "train", "--input", path, "--out", vocab, "--vocab-size", str(vocab_size), "--pattern", pattern,
             "--threads", str(threads), "--force", "--quiet", *sp_flags])
    if r.rc != 0:
        check(False, "%s: gpt-bpe train failed: %s" % (tag, r.err))
        return
    ref_merges = bpe_ref.train(text, vocab_size, pattern, specials)
    merges, _ = vocab_merges(vocab)
    check(merges == ref_merges, "%s: merges differ from the reference %s" % (tag, first_diff(merges, ref_merges)))
    check_vocab_layout(vocab, ref_merges, specials, pattern)
    # 3. encoding
    tokens = os.path.join(tmp, "t.h5")
    r = run([BPE, "encode", "--vocab", vocab, "--input", path, "--out", tokens, "--val-fraction", "0.25",
             "--threads", str(threads), "--force", "--quiet"])
    if r.rc != 0:
        check(False, "%s: gpt-bpe encode failed: %s" % (tag, r.err))
        return
    ref_ids = bpe_ref.encode(text, ref_merges, pattern, specials)
    with h5py.File(tokens, "r") as f:
        check(f.attrs["format"] == "gpt-train/tokens", "%s: tokens.h5 format attr" % tag)
        tr, va = f["train"], f["val"]
        ids = list(tr[()]) + list(va[()])
        check(tr.dtype == np.uint16 and va.dtype == np.uint16, "%s: ids stored as uint16" % tag)
        check([int(i) for i in ids] == ref_ids, "%s: encoding differs from the reference %s" % (
            tag, first_diff([int(i) for i in ids], ref_ids)))
        check(va.shape[0] == int(len(ref_ids) * 0.25 + 0.5), "%s: /val is the last quarter" % tag)
        raw = text.encode("utf-8")
        check(tr.attrs["source"] == path and int(tr.attrs["source_bytes"]) == len(raw), "%s: source attrs" % tag)
        check(tr.attrs["source_sha256"] == hashlib.sha256(raw).hexdigest(), "%s: source_sha256" % tag)
        check(tr.chunks is not None, "%s: /train is chunked" % tag)
    # 4. round trip through the command line
    dec = run([BPE, "decode", "--vocab", vocab, "--tokens", tokens]).stdout + \
        run([BPE, "decode", "--vocab", vocab, "--tokens", tokens, "--split", "val"]).stdout
    check(dec == text.encode("utf-8"), "%s: decode(encode(text)) != text" % tag)
    check(bpe_ref.decode(ref_ids, ref_merges, specials) == text.encode("utf-8"), "%s: reference round trip" % tag)
    return merges


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "full"
    texts = bpe_corpora.corpora(small=(mode == "quick"))
    with tempfile.TemporaryDirectory() as tmp:
        # The incremental reference against the rule as written, recounting every step.
        small = bpe_corpora.make("accents", 3000, 7) + bpe_corpora.make("crlf", 2000, 8)
        for pat in ("llama3", "gpt2"):
            check(bpe_ref.train(small, 400, pat) == bpe_ref.train_naive(small, 400, pat),
                  "reference: incremental training differs from the naive rule (%s)" % pat)
        for name, text in texts.items():
            big = name in ("taylorswift", "shakespeare200k")
            path = os.path.join(tmp, "%s.txt" % name)
            with open(path, "wb") as f:
                f.write(text.encode("utf-8"))
            check(c_split("llama3", path) == c_split("gpt4", path), "%s: llama3 and gpt4 split differently" % name)
            pats = ("llama3", "gpt4", "gpt2") if (mode == "full" or name in ("fuzz", "crlf", "spaces")) else ("llama3",)
            for pat in pats:
                one_corpus(name, text, pat, 1000 if big else 600, tmp)
            print("ok:", name, pats, flush=True)
        # Special tokens: never split, ids after the merges, cut out of the training text.
        text = texts["accents"][:8000] + "<|endoftext|>" + texts["crlf"][:8000] + "<|end|><|endoftext|><|endoftext|>x" \
            + "<|pad|>" + texts["emoji"][:4000] + "<|end"
        for pat in ("llama3", "gpt2"):
            one_corpus("specials", text, pat, 700, tmp, specials=("<|endoftext|>", "<|end|>", "<|pad|>", "<|end"))
        print("ok: specials", flush=True)
        # Threads split the work at newlines; results must not change.
        if "shakespeare200k" in texts:
            t = texts["shakespeare200k"] * 2 + "<|endoftext|>\n" + texts["shakespeare200k"][:50000]
            m1 = one_corpus("threads1", t, "llama3", 800, tmp, specials=("<|endoftext|>",), threads=1)
            m2 = one_corpus("threads2", t, "llama3", 800, tmp, specials=("<|endoftext|>",), threads=2)
            check(m1 == m2, "--threads 2 trains different merges")
            print("ok: threads", flush=True)
        # Streaming: blocks of 100 kB through the splitter give the same chunks.
        big = "".join(texts[k] for k in texts) * 3
        path = os.path.join(tmp, "big.txt")
        with open(path, "wb") as f:
            f.write(big.encode("utf-8"))
        for pat in ("llama3", "gpt2", r"\p{L}+|\s+(?!\S)|\d"):
            whole = c_split(pat, path, ["<|endoftext|>"])
            streamed = c_split(pat, path, ["--stream", "100000", "<|endoftext|>"])
            check(whole == streamed, "streaming split differs (%s) %s" % (pat, first_diff(streamed, whole)))
            check(b"".join(c for c in whole if isinstance(c, bytes)) == big.encode("utf-8").replace(b"<|endoftext|>", b""),
                  "split loses or adds bytes (%s)" % pat)
        # Dense special tokens (one every few dozen bytes, some overlapping) so that block ends
        # fall inside and next to them.
        rng = bpe_corpora.random.Random(3)
        dense = "".join(rng.choice(["<|endoftext|>", "<|end", "<|end|>", " word", "\n", "é", "<|", "|>"]) +
                        texts["fuzz"][i:i + rng.randint(0, 40)] for i in range(0, 20000, 7))
        path = os.path.join(tmp, "dense.txt")
        with open(path, "wb") as f:
            f.write((dense * 8).encode("utf-8"))
        sp = ["<|endoftext|>", "<|end|>", "<|end"]
        whole = c_split("llama3", path, sp)
        check(whole == py_split(dense * 8, "llama3", sp), "dense specials: split differs from the reference")
        for block in ("70001", "100003", "131072"):
            streamed = c_split("llama3", path, ["--stream", block, *sp])
            check(whole == streamed, "dense specials, blocks of %s: streaming split differs %s" % (
                block, first_diff(streamed, whole)))
        print("ok: streaming", flush=True)
        # A custom regex that leaves gaps and can match empty: gaps become chunks, nothing is lost.
        for pat in (r"\d+", r"[a-z]*", r"(?<=a)b|\s"):
            one_corpus("custom", texts["fuzz"][:5000], pat, 400, tmp)
        print("ok: custom regexes", flush=True)
    ck.finish()


if __name__ == "__main__":
    main()
