#!/usr/bin/python3
"""test_cli_table.py - every flag of gpt-bpe, gpt-train and gpt-sample given a missing value,
a value of the wrong type, an out-of-range value, or an unknown name (and a few cross-flag
mistakes): each must end with exit status 1 and ONE message on stderr that contains the flag
(or config key) name -- never a crash, never a hang, never a half-written output.

gpt-train rows run under `mpirun --oversubscribe -np 2` inside a timeout: a usage error on
every rank must end the whole job, with one message (not one per rank).

The valid parts of each command line point at real files (a small vocab.h5, tokens.h5 and
checkpoint made first), so the only thing wrong is the flag under test.
GT_CLI_QUICK=1 runs gpt-train rows as one process except a sample under mpirun (sanitize.sh).
"""
import os
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import faultlib as fl  # noqa: E402

QUICK = bool(os.environ.get("GT_CLI_QUICK"))

# ---------------------------------------------------------------- the table
# (name, argv after the tool, the text the message must contain)
# Placeholders: {txt} corpus, {vocab} vocab.h5, {tokens} tokens.h5, {ckpt} a checkpoint,
# {new} a fresh output path (must not exist afterwards), {run} a fresh run directory.
BPE = [
    ("no command (usage)", [], "USAGE"),
    ("unknown command", ["tokenize"], "tokenize"),
    ("unknown flag train", ["train", "--input", "{txt}", "--out", "{new}", "--bogus", "1"], "--bogus"),
    ("unknown flag encode", ["encode", "--vocab", "{vocab}", "--input", "{txt}", "--out", "{new}", "--vocab-siz", "3"],
     "--vocab-siz"),
    ("unknown flag decode", ["decode", "--vocab", "{vocab}", "--ids", "1", "--verbose"], "--verbose"),
    # train
    ("train --input missing value", ["train", "--out", "{new}", "--input"], "--input"),
    ("train --out missing value", ["train", "--input", "{txt}", "--out"], "--out"),
    ("train --vocab-size missing value", ["train", "--input", "{txt}", "--out", "{new}", "--vocab-size"], "--vocab-size"),
    ("train --pattern missing value", ["train", "--input", "{txt}", "--out", "{new}", "--pattern"], "--pattern"),
    ("train --special missing value", ["train", "--input", "{txt}", "--out", "{new}", "--special"], "--special"),
    ("train --threads missing value", ["train", "--input", "{txt}", "--out", "{new}", "--threads"], "--threads"),
    ("train --input not given", ["train", "--out", "{new}"], "--input"),
    ("train --out not given", ["train", "--input", "{txt}"], "--out"),
    ("train --vocab-size not a number", ["train", "--input", "{txt}", "--out", "{new}", "--vocab-size", "many"],
     "--vocab-size"),
    ("train --vocab-size fractional", ["train", "--input", "{txt}", "--out", "{new}", "--vocab-size", "300.5"],
     "--vocab-size"),
    ("train --vocab-size below 256", ["train", "--input", "{txt}", "--out", "{new}", "--vocab-size", "100"],
     "--vocab-size"),
    ("train --vocab-size negative", ["train", "--input", "{txt}", "--out", "{new}", "--vocab-size", "-5"],
     "--vocab-size"),
    ("train --vocab-size above uint32", ["train", "--input", "{txt}", "--out", "{new}", "--vocab-size", "5000000000"],
     "--vocab-size"),
    ("train --vocab-size overflows", ["train", "--input", "{txt}", "--out", "{new}", "--vocab-size",
                                      "99999999999999999999999"], "--vocab-size"),
    ("train --pattern invalid regex", ["train", "--input", "{txt}", "--out", "{new}", "--pattern", "(ab"], "--pattern"),
    ("train --threads zero", ["train", "--input", "{txt}", "--out", "{new}", "--threads", "0"], "--threads"),
    ("train --threads not a number", ["train", "--input", "{txt}", "--out", "{new}", "--threads", "x"], "--threads"),
    ("train --force with a value", ["train", "--input", "{txt}", "--out", "{new}", "--force=yes"], "--force"),
    ("train --special empty", ["train", "--input", "{txt}", "--out", "{new}", "--special", ""], "--special"),
    ("train --input missing file", ["train", "--input", "{dir}/nope.txt", "--out", "{new}"], "nope.txt"),
    ("train --input is a directory", ["train", "--input", "{dir}", "--out", "{new}"], "--input"),
    ("train --out in a missing directory", ["train", "--input", "{txt}", "--out", "{dir}/no/such/vocab.h5"], "--out"),
    ("train --out exists", ["train", "--input", "{txt}", "--out", "{vocab}"], "--force"),
    # encode
    ("encode --vocab missing value", ["encode", "--input", "{txt}", "--out", "{new}", "--vocab"], "--vocab"),
    ("encode --input missing value", ["encode", "--vocab", "{vocab}", "--out", "{new}", "--input"], "--input"),
    ("encode --out missing value", ["encode", "--vocab", "{vocab}", "--input", "{txt}", "--out"], "--out"),
    ("encode --val-fraction missing value", ["encode", "--vocab", "{vocab}", "--input", "{txt}", "--out", "{new}",
                                             "--val-fraction"], "--val-fraction"),
    ("encode --val-fraction not a number", ["encode", "--vocab", "{vocab}", "--input", "{txt}", "--out", "{new}",
                                            "--val-fraction", "tenth"], "--val-fraction"),
    ("encode --val-fraction above 1", ["encode", "--vocab", "{vocab}", "--input", "{txt}", "--out", "{new}",
                                       "--val-fraction", "1.5"], "--val-fraction"),
    ("encode --val-fraction negative", ["encode", "--vocab", "{vocab}", "--input", "{txt}", "--out", "{new}",
                                        "--val-fraction", "-0.1"], "--val-fraction"),
    ("encode --val-fraction nan", ["encode", "--vocab", "{vocab}", "--input", "{txt}", "--out", "{new}",
                                   "--val-fraction", "nan"], "--val-fraction"),
    ("encode --threads missing value", ["encode", "--vocab", "{vocab}", "--input", "{txt}", "--out", "{new}",
                                        "--threads"], "--threads"),
    ("encode --threads zero", ["encode", "--vocab", "{vocab}", "--input", "{txt}", "--out", "{new}", "--threads", "0"],
     "--threads"),
    ("encode --replace-invalid with a value", ["encode", "--vocab", "{vocab}", "--input", "{txt}", "--out", "{new}",
                                               "--replace-invalid", "3"], "3"),
    ("encode --vocab not given", ["encode", "--input", "{txt}", "--out", "{new}"], "--vocab"),
    ("encode --vocab missing file", ["encode", "--vocab", "{dir}/nope.h5", "--input", "{txt}", "--out", "{new}"],
     "nope.h5"),
    ("encode --vocab not HDF5", ["encode", "--vocab", "{txt}", "--input", "{txt}", "--out", "{new}"], "--vocab"),
    # (a tokens.h5 or a checkpoint is a --vocab: it holds the /tokenizer)
    ("encode --vocab is a directory", ["encode", "--vocab", "{dir}/emptyrun", "--input", "{txt}", "--out", "{new}"],
     "--vocab"),
    # decode
    ("decode --vocab missing value", ["decode", "--ids", "1,2", "--vocab"], "--vocab"),
    ("decode --ids missing value", ["decode", "--vocab", "{vocab}", "--ids"], "--ids"),
    ("decode --tokens missing value", ["decode", "--vocab", "{vocab}", "--tokens"], "--tokens"),
    ("decode --split missing value", ["decode", "--vocab", "{vocab}", "--tokens", "{tokens}", "--split"], "--split"),
    ("decode --split unknown", ["decode", "--vocab", "{vocab}", "--tokens", "{tokens}", "--split", "test"], "--split"),
    ("decode --ids not numbers", ["decode", "--vocab", "{vocab}", "--ids", "1,two,3"], "--ids"),
    ("decode --ids negative", ["decode", "--vocab", "{vocab}", "--ids", "1,-2"], "--ids"),
    ("decode --ids out of vocabulary", ["decode", "--vocab", "{vocab}", "--ids", "1,99999"], "99999"),
    ("decode --ids overflowing", ["decode", "--vocab", "{vocab}", "--ids", "1,99999999999999999999999"],
     "99999999999999999999999 is not a token id"),
    ("decode --ids empty item", ["decode", "--vocab", "{vocab}", "--ids", "1,,2"], "--ids"),
    ("decode neither --ids nor --tokens", ["decode", "--vocab", "{vocab}"], "--ids"),
    ("decode --tokens is vocab.h5", ["decode", "--vocab", "{vocab}", "--tokens", "{vocab}"], "--tokens"),
]

# gpt-train: (flag, kind, value) generated from docs/training.md's flag list and config.c's ranges.
TRAIN_INT = {  # flag: (below-range value, above-range value or None)
    "--n-layer": ("0", "257"), "--n-head": ("0", None), "--n-embd": ("0", None), "--block-size": ("0", None),
    "--batch-size": ("0", None), "--grad-accum": ("0", None), "--steps": ("0", None), "--warmup": ("-1", None),
    "--seed": ("-1", "99999999999999999999"), "--eval-every": ("-1", None), "--eval-batches": ("-1", None),
    "--ckpt-every": ("-1", None), "--keep-ckpts": ("0", None), "--log-every": ("0", None),
    "--threads": ("0", "100000"), "--attn-every": ("-1", None), "--vocab-size": ("100", "99999999999"),
}
TRAIN_REAL = {
    "--dropout": ("-0.1", "1"), "--lr": ("-0.001", "11"), "--min-lr": ("-1", None),
    "--weight-decay": ("-1", None), "--beta1": ("-0.5", "1"), "--beta2": ("-0.5", "1.5"), "--eps": ("0", "2"),
    "--grad-clip": ("-1", None), "--val-fraction": ("0", "0.95"), "--loss-spike": ("-1", "2e6"),
}
TRAIN_CHOICE = {"--lr-schedule": "exponential", "--attn-dtype": "float64"}
TRAIN_STR = ["--data", "--out", "--config", "--attn-prompt", "--pattern"]
TRAIN_BOOL = ["--resume", "--check-sync", "--skip-bad-steps"]


def train_rows():
    rows = []
    base = ["--data", "{tokens}", "--out", "{run}", "--steps", "2", "--n-layer", "1", "--n-embd", "16",
            "--n-head", "2", "--block-size", "8", "--batch-size", "2"]
    text_base = ["--data", "{txt}", "--out", "{run}", "--steps", "2", "--n-layer", "1", "--n-embd", "16",
                 "--n-head", "2", "--block-size", "8", "--batch-size", "2"]

    def b(flag):  # text-only flags are checked with text input
        return text_base if flag in ("--vocab-size", "--val-fraction", "--pattern") else base

    for flag in list(TRAIN_INT) + list(TRAIN_REAL) + list(TRAIN_CHOICE) + TRAIN_STR:
        rows.append(("%s missing value" % flag, b(flag) + [flag], flag))
    for flag, (lo, hi) in TRAIN_INT.items():
        rows.append(("%s not a number" % flag, b(flag) + [flag, "ten"], flag))
        rows.append(("%s fractional" % flag, b(flag) + [flag, "2.5"], flag))
        rows.append(("%s below range (%s)" % (flag, lo), b(flag) + [flag, lo], flag))
        if hi:
            rows.append(("%s above range (%s)" % (flag, hi), b(flag) + [flag, hi], flag))
    for flag, (lo, hi) in TRAIN_REAL.items():
        rows.append(("%s not a number" % flag, b(flag) + [flag, "abc"], flag))
        rows.append(("%s is inf" % flag, b(flag) + [flag, "inf"], flag))
        rows.append(("%s below range (%s)" % (flag, lo), b(flag) + [flag, lo], flag))
        if hi:
            rows.append(("%s above range (%s)" % (flag, hi), b(flag) + [flag, hi], flag))
    for flag, bad in TRAIN_CHOICE.items():
        rows.append(("%s unknown choice" % flag, base + [flag, bad], flag))
    rows += [
        ("unknown flag", base + ["--learning-rate", "0.1"], "--learning-rate"),
        ("unknown flag, no value", base + ["--fast"], "--fast"),
        ("positional argument", base + ["extra.txt"], "extra.txt"),
        ("--data not given", ["--out", "{run}", "--steps", "2"], "--data"),
        ("--out not given", ["--data", "{tokens}", "--steps", "2"], "--out"),
        ("--data missing file", ["--data", "{dir}/nope.h5", "--out", "{run}", "--steps", "2"], "nope.h5"),
        ("--data is vocab.h5", ["--data", "{vocab}", "--out", "{run}", "--steps", "2"], "--data"),
        ("--data is a directory", ["--data", "{dir}", "--out", "{run}", "--steps", "2"], "--data"),
        ("--n-embd not divisible by --n-head", base + ["--n-embd", "18", "--n-head", "4"], "--n-head"),
        ("--min-lr above --lr", base + ["--lr", "1e-4", "--min-lr", "1e-3"], "--min-lr"),
        ("--pattern invalid regex", text_base + ["--pattern", "(ab"], "--pattern"),
        ("--resume without a checkpoint", base + ["--resume"], "--resume"),
        ("--resume=maybe", base + ["--resume=maybe"], "--resume"),
        ("--check-sync=maybe", base + ["--check-sync=maybe"], "--check-sync"),
        ("--skip-bad-steps=2", base + ["--skip-bad-steps=2"], "--skip-bad-steps"),
        ("--config missing file", base + ["--config", "{dir}/nope.conf"], "nope.conf"),
        ("--config unknown key", base + ["--config", "{conf_unknown}"], "learning_rate"),
        ("--config bad value", base + ["--config", "{conf_badvalue}"], "n_layer"),
        ("--config line without =", base + ["--config", "{conf_noeq}"], "line 2"),
        ("--attn-prompt longer than --block-size", base + ["--attn-every", "1", "--attn-prompt",
                                                           "the quick brown fox jumps over the lazy dog " * 3],
         "--attn-prompt"),
    ]
    return rows


SAMPLE = [
    ("--checkpoint missing value", ["--prompt", "hi", "--checkpoint"], "--checkpoint"),
    ("--checkpoint not given", ["--prompt", "hi"], "--checkpoint"),
    ("--checkpoint missing file", ["--checkpoint", "{dir}/nope.h5", "--prompt", "hi"], "nope.h5"),
    ("--checkpoint is tokens.h5", ["--checkpoint", "{tokens}", "--prompt", "hi"], "--checkpoint"),
    ("--checkpoint empty run dir", ["--checkpoint", "{dir}/emptyrun", "--prompt", "hi"], "emptyrun"),
    ("--prompt missing value", ["--checkpoint", "{ckpt}", "--prompt"], "--prompt"),
    ("--max-new-tokens missing value", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--max-new-tokens"],
     "--max-new-tokens"),
    ("--max-new-tokens not a number", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--max-new-tokens", "ten"],
     "--max-new-tokens"),
    ("--max-new-tokens negative", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--max-new-tokens", "-1"],
     "--max-new-tokens"),
    ("--temperature missing value", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--temperature"], "--temperature"),
    ("--temperature not a number", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--temperature", "warm"],
     "--temperature"),
    ("--temperature negative", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--temperature", "-1"], "--temperature"),
    ("--temperature nan", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--temperature", "nan"], "--temperature"),
    ("--top-k missing value", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--top-k"], "--top-k"),
    ("--top-k not a number", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--top-k", "some"], "--top-k"),
    ("--top-k negative", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--top-k", "-3"], "--top-k"),
    ("--top-p missing value", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--top-p"], "--top-p"),
    ("--top-p not a number", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--top-p", "most"], "--top-p"),
    ("--top-p above 1", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--top-p", "1.5"], "--top-p"),
    ("--top-p negative", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--top-p", "-0.5"], "--top-p"),
    ("--seed missing value", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--seed"], "--seed"),
    ("--seed not a number", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--seed", "lucky"], "--seed"),
    ("--attn-out missing value", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--attn-out"], "--attn-out"),
    ("--attn-out in a missing directory", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--attn-out",
                                           "{dir}/no/such/gen.h5"], "--attn-out"),
    ("--threads missing value", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--threads"], "--threads"),
    ("--threads zero", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--threads", "0"], "--threads"),
    ("--threads not a number", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--threads", "x"], "--threads"),
    ("unknown flag", ["--checkpoint", "{ckpt}", "--prompt", "hi", "--beam-width", "4"], "--beam-width"),
]


# ---------------------------------------------------------------- fixtures
def make_fixtures(d, bpe, train):
    f = {"dir": d, "txt": fl.make_corpus(os.path.join(d, "corpus.txt"), 20000)}
    f["vocab"] = os.path.join(d, "vocab.h5")
    f["tokens"] = os.path.join(d, "tokens.h5")
    r = fl.run([bpe, "train", "--input", f["txt"], "--out", f["vocab"], "--vocab-size", "300"], timeout=120)
    if r.rc != 0:
        print("fixture: gpt-bpe train failed, cannot test\n" + r.describe())
        sys.exit(1)
    r = fl.run([bpe, "encode", "--vocab", f["vocab"], "--input", f["txt"], "--out", f["tokens"]], timeout=120)
    if r.rc != 0:
        print("fixture: gpt-bpe encode failed, cannot test\n" + r.describe())
        sys.exit(1)
    os.mkdir(os.path.join(d, "emptyrun"))
    for name, text in (("conf_unknown", "n_layer = 1\nlearning_rate = 0.1\n"),
                       ("conf_badvalue", "# tiny\nn_layer = many\n"),
                       ("conf_noeq", "n_layer = 1\nn_head 2\n")):
        f[name] = os.path.join(d, name + ".conf")
        with open(f[name], "w") as fh:
            fh.write(text)
    f["ckpt"] = None
    if train:
        run_dir = os.path.join(d, "ckpt-run")
        r = fl.run([train, "--data", f["tokens"], "--out", run_dir, "--steps", "1", "--n-layer", "1",
                    "--n-embd", "16", "--n-head", "2", "--block-size", "8", "--batch-size", "2",
                    "--eval-batches", "1"], timeout=120)
        if r.rc == 0:
            f["ckpt"] = run_dir
        else:
            print("fixture: a 1-step gpt-train failed; gpt-sample rows that need a checkpoint are skipped\n"
                  + r.describe())
    return f


def fill(args, fx, counter):
    out = []
    for a in args:
        if a == "{new}":
            counter[0] += 1
            a = os.path.join(fx["dir"], "out-%d.h5" % counter[0])
        elif a == "{run}":
            counter[0] += 1
            a = os.path.join(fx["dir"], "run-%d" % counter[0])
        else:
            a = a.format(**{k: (v or "") for k, v in fx.items()})
        out.append(a)
    return out


def check_row(ck, tool_name, label, cmd, expect, fresh_outputs, timeout=60, r=None):
    r = r or fl.run(cmd, timeout=timeout)
    what = "%s: %s" % (tool_name, label)
    if not ck.ok(not r.crashed(), what + ": no crash, no hang, no sanitizer report", r.describe()):
        return
    ck.ok(r.rc == 1, what + ": exit status 1", r.describe())
    if expect == "USAGE":  # no command at all: the usage text, listing the commands
        ck.ok("usage" in r.err.lower() and "train" in r.err, what + ": prints the usage", r.describe())
        return
    errors = tl.error_lines(r.err)
    ck.ok(len(errors) == 1, what + ": exactly one error message (got %d)" % len(errors), r.describe())
    ck.ok(any(expect in l for l in errors), what + ": the message names '%s'" % expect, r.describe())
    for p in fresh_outputs:
        left = [x for x in os.listdir(os.path.dirname(p)) if os.path.basename(p) in x]
        ck.ok(not left, what + ": nothing written for %s" % p, "left behind: %s" % left)


def main():
    bpe, = tl.require("gpt-bpe")
    train = tl.tool("gpt-train")
    sample = tl.tool("gpt-sample")
    d = tl.tmpdir("gt-cli-")
    ck = tl.Checks("test_cli_table")
    fx = make_fixtures(d, bpe, train)
    counter = [0]

    for label, args, expect in BPE:
        a = fill(args, fx, counter)
        fresh = [os.path.join(fx["dir"], "out-%d.h5" % counter[0])] if "{new}" in args else []
        check_row(ck, "gpt-bpe", label, [bpe] + a, expect, fresh)

    if train:
        # Under mpirun -np 2: every missing value, every below-range value and every other
        # mistake (the no-hang check); the remaining type errors of the same flags go through
        # the same parser in one process, which is four times quicker to start. Rows run
        # four at a time (mpirun start-up is mostly waiting).
        jobs = []
        for i, (label, args, expect) in enumerate(train_rows()):
            a = fill(args, fx, counter)
            typo = any(w in label for w in ("not a number", "fractional", "is inf", "above range"))
            under_mpi = (i % 8 == 0) if QUICK else not typo
            cmd = tl.mpirun(2, train, *a) if under_mpi else [train] + a
            run_dir = os.path.join(fx["dir"], "run-%d" % counter[0]) if "{run}" in args else None
            jobs.append((label, cmd, expect, under_mpi, run_dir))
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda j: fl.run(j[1], timeout=90), jobs))
        for (label, cmd, expect, under_mpi, run_dir), r in zip(jobs, results):
            check_row(ck, "gpt-train" + (" (mpirun -np 2)" if under_mpi else ""), label, cmd, expect, [], r=r)
            if run_dir and os.path.isdir(run_dir):  # a failed start leaves no checkpoint behind
                ckpts = [x for x in os.listdir(run_dir) if x.startswith("ckpt-")]
                ck.ok(not ckpts, "gpt-train: %s: no checkpoint written" % label, str(ckpts))
    else:
        print("note: gpt-train not built; its rows are not run")

    if sample:
        for label, args, expect in SAMPLE:
            if "{ckpt}" in " ".join(args) and not fx["ckpt"]:
                print("note: no checkpoint; skipped gpt-sample row '%s'" % label)
                continue
            check_row(ck, "gpt-sample", label, [sample] + fill(args, fx, counter), expect, [])
    else:
        print("note: gpt-sample not built; its rows are not run")

    tl.rmtree(d)
    ck.finish()


if __name__ == "__main__":
    main()
