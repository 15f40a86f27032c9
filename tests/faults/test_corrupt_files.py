#!/usr/bin/python3
"""test_corrupt_files.py - damaged vocab.h5, tokens.h5, checkpoints and attention.h5, loaded
by the real tools, never crash: each load either succeeds (and what it produced is checked)
or fails with exit status 1 and one message naming the file.

Damage is seeded (GT_FAULT_SEED, default 1) so a failure replays exactly: truncations at many
offsets (fixed interesting ones plus random) and random bit flips, a third of them anywhere,
a third in the first 4 KiB and a third in the last 4 KiB (where HDF5 keeps most metadata).
GT_FAULT_TRIALS (default 24) is the number of damaged copies per file kind and loader family;
the expensive gpt-train --resume loaders get a quarter of that.

Loaders: gpt-bpe decode and encode (vocab.h5), gpt-bpe decode --tokens and gpt-train --data
(tokens.h5), gpt-sample and gpt-train --resume (checkpoint), gpt-train --resume with
--attn-every (attention.h5). A failure is: a signal, a sanitizer report, a hang, an exit
status other than 0/1, an exit 1 without exactly one message naming the file, or a success
whose result is wrong (encode/decode no longer round-trips, a resumed attention.h5 whose
steps are not increasing).
"""
import os
import random
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import faultlib as fl  # noqa: E402

TRIALS = int(os.environ.get("GT_FAULT_TRIALS", "24"))
SEED = int(os.environ.get("GT_FAULT_SEED", "1"))
# A bad input file is exit 1 (docs/faults.md), and that is what this test demands.
# GT_FAULT_ALLOW_EXIT2=1 (for soaks over new seeds) tallies an orderly exit 2 with one message
# as a listed contract gap instead of a failure.
STRICT_EXIT = not os.environ.get("GT_FAULT_ALLOW_EXIT2")
MODEL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "2",
         "--eval-batches", "1", "--log-every", "1", "--dropout", "0.1"]


def mutations(data, rng, n):
    """n damaged copies: about n/3 truncations, the rest bit/byte flips."""
    size = len(data)
    fixed = [0, 1, 7, 8, 100, 511, 512, 1024, 2048, size // 2, size - 512, size - 1]
    offs = [o for o in fixed if 0 <= o < size]
    n_trunc = max(2, n // 3)
    rng.shuffle(offs)
    offs = offs[: n_trunc // 2] + [rng.randrange(size) for _ in range(n_trunc - n_trunc // 2)]
    for o in sorted(set(offs)):
        yield "truncated to %d of %d bytes" % (o, size), data[:o]
    for i in range(n - n_trunc):
        b = bytearray(data)
        k = rng.choice([1, 1, 1, 2, 3, 8])
        where = i % 3
        spots = []
        for _ in range(k):
            if where == 0 or size <= 4096:
                pos = rng.randrange(size)
            elif where == 1:
                pos = rng.randrange(4096)
            else:
                pos = size - 1 - rng.randrange(4096)
            if rng.random() < 0.7:
                b[pos] ^= 1 << rng.randrange(8)
            else:
                b[pos] = rng.randrange(256)
            spots.append(pos)
        if bytes(b) == data:
            continue
        yield "bytes changed at %s" % ",".join(map(str, sorted(spots))), bytes(b)


class Suite:
    def __init__(self, d):
        self.d = d
        self.ck = tl.Checks("test_corrupt_files")
        self.stats = {}
        self.gaps = []
        self.n = 0

    def judge(self, kind, loader, how, r, damaged_path, verify=None, keep=None):
        """Checks one load of a damaged file; verify(r) -> (ok, detail) for successes.
        A damaged file that fails a check is kept under GT_FAULT_KEEP (default
        /tmp/gt-corrupt-failures) to replay it."""
        before = self.ck.failed
        self._judge(kind, loader, how, r, damaged_path, verify)
        src = keep or damaged_path
        if self.ck.failed > before and os.path.exists(src):
            kd = os.environ.get("GT_FAULT_KEEP", "/tmp/gt-corrupt-failures")
            os.makedirs(kd, exist_ok=True)
            dst = os.path.join(kd, "%s-%d-%s" % (kind, self.n, os.path.basename(src)))
            shutil.copy(src, dst)
            print("  damaged file kept: %s" % dst)

    def _judge(self, kind, loader, how, r, damaged_path, verify=None):
        what = "%s via %s (%s)" % (kind, loader, how)
        st = self.stats.setdefault((kind, loader), {"ok": 0, "exit1": 0, "exit2": 0, "other": 0})
        if not self.ck.ok(not r.crashed(), what + ": no crash, no hang, no sanitizer report", r.describe()):
            st["other"] += 1
            return
        if r.rc == 0:
            st["ok"] += 1
            if verify:
                good, detail = verify(r)
                self.ck.ok(good, what + ": loaded, and the result is right", detail + "\n" + r.describe())
            return
        errors = tl.error_lines(r.err)
        if r.rc == 1:
            st["exit1"] += 1
            self.ck.ok(len(errors) == 1, what + ": exactly one error message (got %d)" % len(errors), r.describe())
            base = os.path.basename(damaged_path)
            self.ck.ok(any(base in l for l in errors), what + ": the message names the file '%s'" % base,
                       r.describe())
            return
        if r.rc == 2 and not STRICT_EXIT:
            st["exit2"] += 1
            self.ck.ok(len(errors) == 1, what + ": exactly one error message (got %d)" % len(errors), r.describe())
            self.gaps.append("%s: exit 2: %s" % (what, errors[0] if errors else r.err[-200:]))
            return
        st["other"] += 1
        self.ck.ok(False, what + ": exit status 0 or 1 (1 = bad input file), got %s" % r.rc, r.describe())

    def report(self):
        for (kind, loader), s in sorted(self.stats.items()):
            print("  %-12s %-28s loaded %3d, refused: exit 1 %3d, exit 2 %2d; wrong: %d" % (
                kind, loader, s["ok"], s["exit1"], s["exit2"], s["other"]))
        if self.gaps:
            print("contract gaps (damaged input ended with exit 2, not 1; allowed by GT_FAULT_ALLOW_EXIT2):")
            for g in self.gaps:
                print("  " + g)


def main():
    bpe, = tl.require("gpt-bpe")
    train = tl.tool("gpt-train")
    sample = tl.tool("gpt-sample")
    d = tl.tmpdir("gt-corrupt-")
    S = Suite(d)
    rng = random.Random(SEED)
    corpus, vocab, tokens = fl.make_tokens(bpe, d, 20000, ("--special", "<|endoftext|>"))
    with open(corpus, "rb") as f:
        corpus_bytes = f.read()
    ref = fl.run([bpe, "decode", "--vocab", vocab, "--ids", "72,101,108,108,111"])
    ref_hello = ref.out

    def damaged(kind, src, n):
        with open(src, "rb") as f:
            data = f.read()
        for how, blob in mutations(data, rng, n):
            S.n += 1
            p = os.path.join(d, "damaged-%04d-%s" % (S.n, os.path.basename(src)))
            with open(p, "wb") as f:
                f.write(blob)
            yield how, p

    # ---- vocab.h5: decode ids, and encode+decode round trip of the corpus
    for how, p in damaged("vocab.h5", vocab, TRIALS):
        r = fl.run([bpe, "decode", "--vocab", p, "--ids", "72,101,108,108,111"], timeout=30)
        S.judge("vocab.h5", "gpt-bpe decode --ids", how, r, p)
        out = p + ".tokens.h5"
        r = fl.run([bpe, "encode", "--vocab", p, "--input", corpus, "--out", out], timeout=60)

        def roundtrip(r, p=p, out=out):
            back = fl.run([bpe, "decode", "--vocab", p, "--tokens", out, "--split", "train"], timeout=60)
            back_val = fl.run([bpe, "decode", "--vocab", p, "--tokens", out, "--split", "val"], timeout=60)
            if back.rc != 0 or back_val.rc != 0:
                return False, "decode of what encode wrote failed:\n" + back.describe() + back_val.describe()
            text = (back.out + back_val.out).encode()
            return text == corpus_bytes, "decode(encode(corpus)) differs from the corpus (%d vs %d bytes)" % (
                len(text), len(corpus_bytes))
        S.judge("vocab.h5", "gpt-bpe encode (round trip)", how, r, p, roundtrip)
        if r.rc != 0:
            S.ck.ok(not os.path.exists(out), "vocab.h5 (%s): failed encode leaves no output" % how, out)
        os.remove(p)
        if os.path.exists(out):
            os.remove(out)
    del ref_hello

    # ---- tokens.h5: decode both splits; start a 1-step training on it
    for i, (how, p) in enumerate(damaged("tokens.h5", tokens, TRIALS)):
        for split in ("train", "val"):
            r = fl.run([bpe, "decode", "--vocab", vocab, "--tokens", p, "--split", split], timeout=30)
            S.judge("tokens.h5", "gpt-bpe decode --split " + split, how, r, p)
        if train and i % 4 == 0:
            run = os.path.join(d, "run-tok-%d" % i)
            r = fl.run([train, "--data", p, "--out", run, "--steps", "1"] + MODEL, timeout=30)
            S.judge("tokens.h5", "gpt-train --data", how, r, p)
            shutil.rmtree(run, ignore_errors=True)
        os.remove(p)

    if not train:
        print("note: gpt-train not built: checkpoints and attention.h5 are not tested")
    else:
        base_run = os.path.join(d, "base-run")
        r = fl.run([train, "--data", tokens, "--out", base_run, "--steps", "2", "--ckpt-every", "1",
                    "--keep-ckpts", "5", "--attn-every", "1"] + MODEL, timeout=180)
        if r.rc != 0:
            print("fixture: gpt-train failed\n" + r.describe())
            sys.exit(1)
        with open(os.path.join(base_run, "latest")) as f:
            latest = f.read().strip()
        ckpt = latest if os.path.isabs(latest) else os.path.join(base_run, os.path.basename(latest))
        attn = os.path.join(base_run, "attention.h5")

        # ---- checkpoints: gpt-sample; gpt-train --resume (a quarter of the trials)
        for i, (how, p) in enumerate(damaged("checkpoint", ckpt, TRIALS)):
            if sample:
                r = fl.run([sample, "--checkpoint", p, "--prompt", "The", "--max-new-tokens", "4", "--seed", "1"],
                           timeout=60)
                S.judge("checkpoint", "gpt-sample", how, r, p)
            if i % 4 == 0:
                run = os.path.join(d, "run-ck-%d" % i)
                shutil.copytree(base_run, run)
                shutil.copy(p, os.path.join(run, os.path.basename(ckpt)))
                r = fl.run([train, "--data", tokens, "--out", run, "--steps", "3", "--resume", "--attn-every", "1"]
                           + MODEL, timeout=30)
                S.judge("checkpoint", "gpt-train --resume", how, r, os.path.basename(ckpt),
                        keep=p)
                shutil.rmtree(run, ignore_errors=True)
            os.remove(p)

        # ---- attention.h5: resumed (truncated to the checkpoint's step, then appended to)
        import h5py

        def attn_ok(r, run=None):
            try:
                with h5py.File(os.path.join(run, "attention.h5"), "r") as f:
                    steps = list(f["step"][()])
                    n_att = f["attention"].shape[0]
            except Exception as e:  # noqa: BLE001 - any failure to read is a wrong result
                return False, "attention.h5 unreadable after a successful resume: %s" % e
            ok = steps == sorted(set(steps)) and steps and steps[-1] == 3 and n_att == len(steps)
            return ok, "steps after resume: %s (attention records %d)" % (steps, n_att)

        for i, (how, p) in enumerate(damaged("attention.h5", attn, max(4, TRIALS // 2))):
            run = os.path.join(d, "run-at-%d" % i)
            shutil.copytree(base_run, run)
            shutil.copy(p, os.path.join(run, "attention.h5"))
            r = fl.run([train, "--data", tokens, "--out", run, "--steps", "3", "--resume", "--attn-every", "1"]
                       + MODEL, timeout=30)
            S.judge("attention.h5", "gpt-train --resume", how, r, "attention.h5",
                    lambda r, run=run: attn_ok(r, run), keep=p)
            shutil.rmtree(run, ignore_errors=True)
            os.remove(p)

    S.report()
    tl.rmtree(d)
    S.ck.finish()


if __name__ == "__main__":
    main()
