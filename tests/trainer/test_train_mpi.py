#!/usr/bin/python3
"""test_train_mpi.py - gpt-train under mpirun, as a user runs it (issue 4).

    test_train_mpi.py config|ranks|resume|signals|badinput|nan|text|precision

config    --config FILE under the flags; the printed effective configuration repeats a run
ranks     np 1, 2, 4, 8: training with --check-sync (weights compared across ranks every
          log step), checkpoint contents, and a rank that drifts is caught (exit 2)
resume    a run stopped at step k (SIGUSR1 to one rank) and resumed ends bit-identical to an
          uninterrupted run, with the same metrics; resume at 4 and 1 ranks; --steps reached
signals   SIGTERM to the ranks, SIGTERM and SIGUSR1 to mpirun: a checkpoint that resumes
badinput  each bad input exits 1 within seconds, with one message naming the culprit
nan       a NaN gradient stops with exit 2 naming the step and keeps the last checkpoint;
          --skip-bad-steps skips it and goes on
text      --data corpus.txt: rank 0 tokenizes into RUN/, the others wait; reused on resume
precision --precision bf16: in /config, kept by --resume, which continues bit for bit at the
          same rank count; 2 threads equal 1; a resume that changes it is logged; a CPU
          without bf16 instructions (imitated: ONEDNN_MAX_CPU_ISA) is exit 1 naming them

Binaries from $GT_BUILD, sources from $GT_SRC; Python is /usr/bin/python3 (h5py, numpy).
"""
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402

TRAIN = os.path.join(tl.BUILD, "gpt-train")
BPE = os.path.join(tl.BUILD, "gpt-bpe")
# A tiny model so every run takes seconds.
TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "8",
        "--warmup", "4", "--lr", "3e-3", "--dropout", "0.1"]

ck = tl.Checks("test_train_mpi", verbose=True)
check = ck.ok


def mpirun(np_, *args, timeout=120, env=None):
    """gpt-train under mpirun -np NP: (exit status or "timeout", stdout, stderr, seconds)."""
    r = tl.run(tl.mpirun(np_, TRAIN, *args), timeout=timeout, extra_env=dict(GT_PROGRESS="0", **(env or {})))
    return ("timeout" if r.timed_out else r.rc), r.out, r.err, r.secs


def corpus(path, n_bytes=120_000):
    """The Taylor Swift text when the shared data is there, else seeded English-like text."""
    data_file = tl.shared_data("taylorswift.txt")
    if data_file:
        with open(data_file, "rb") as f:
            data = f.read()[:n_bytes]
        data = data.decode("utf-8", "ignore").encode()
    else:
        rng = np.random.default_rng(3)
        words = ("the a love story you me we were never ever getting back together shake it off blank space "
                 "style red fifteen our song tim mcgraw teardrops on my guitar mine back to december").split()
        out, n = [], 0
        while n < n_bytes:
            line = " ".join(rng.choice(words, size=rng.integers(4, 12))) + ".\n"
            out.append(line)
            n += len(line)
        data = "".join(out).encode()
    with open(path, "wb") as f:
        f.write(data)


def make_tokens(d, vocab=300, n_bytes=120_000):
    txt, voc, tok = os.path.join(d, "corpus.txt"), os.path.join(d, "vocab.h5"), os.path.join(d, "tokens.h5")
    corpus(txt, n_bytes)
    tl.run_ok([BPE, "train", "--input", txt, "--out", voc, "--vocab-size", vocab])
    tl.run_ok([BPE, "encode", "--vocab", voc, "--input", txt, "--out", tok])
    return tok


def metrics(run):
    with open(os.path.join(run, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def same_tensors(a, b, groups=("model", "optimizer/m", "optimizer/v")):
    with h5py.File(a) as fa, h5py.File(b) as fb:
        for g in groups:
            if sorted(fa[g]) != sorted(fb[g]):
                return False, g + ": names differ"
            for k in fa[g]:
                if not np.array_equal(fa[g][k][()], fb[g][k][()]):
                    return False, g + "/" + k + " differs"
    return True, ""


latest = tl.latest


def errors(stderr):
    return tl.error_lines(stderr, "gpt-train: error")


# ----------------------------------------------------------------------------

def test_ranks(d):
    tok = make_tokens(d)
    for np_ in (1, 2, 4, 8):
        run = os.path.join(d, f"np{np_}")
        rc, out, err, secs = mpirun(np_, "--data", tok, "--out", run, "--steps", 12, "--log-every", 4, "--eval-every", 6,
                                    "--ckpt-every", 6, "--check-sync", *TINY)
        if not check(rc == 0, f"np {np_}: 12 steps with --check-sync exit 0 ({secs:.1f} s)", err[-2000:]):
            continue
        rows = metrics(run)
        check([r["step"] for r in rows] == ["4", "6", "8", "12"], f"np {np_}: metrics.csv rows at log and eval steps",
              str([r["step"] for r in rows]))
        check(rows[1]["val_loss"] != "" and rows[0]["val_loss"] == "" and rows[1]["train_loss"] != "",
              f"np {np_}: empty cells where a figure was not measured")
        check(int(rows[-1]["tokens"]) == 12 * 8 * 16 * np_, f"np {np_}: tokens counts every rank's batches")
        ck = os.path.join(run, "ckpt-00000012.h5")
        with h5py.File(ck) as f:
            check(f.attrs["format"] == "gpt-train/checkpoint" and f.attrs["step"] == 12 and f.attrs["world_size"] == np_,
                  f"np {np_}: checkpoint root attrs (step 12, world_size {np_})")
            check(f["state"].attrs["data_pos"] == 12 * 8 * np_ % f["state"].attrs["data_windows"]
                  and f["state"].attrs["adam_t"] == 12, f"np {np_}: /state holds the global data cursor and the AdamW step")
            check("tokenizer" in f and f["config"].attrs["n_layer"] == 2 and f["config"].attrs["batch_size"] == 8,
                  f"np {np_}: /tokenizer copy and /config attrs")
            check(f["model/lm_head.weight"].id == f["model/transformer.wte.weight"].id, f"np {np_}: lm_head is a hard link")
        check(sorted(os.listdir(run)) == ["ckpt-00000006.h5", "ckpt-00000012.h5", "latest", "lock", "metrics.csv",
                                          "train.log"],
              f"np {np_}: run directory holds checkpoints, latest, lock, metrics.csv, train.log", str(os.listdir(run)))
        check(len(errors(err)) == 0 and "check" not in err, f"np {np_}: no errors")
    # --check-sync is not vacuous: one rank's weights nudged after step 3 must be caught.
    run = os.path.join(d, "desync")
    rc, out, err, secs = mpirun(2, "--data", tok, "--out", run, "--steps", 8, "--log-every", 2, "--check-sync", *TINY,
                                env={"GT_FAULT_DESYNC_STEP": "3"})
    check(rc == 2 and "weights differ across ranks after step 4" in err and len(errors(err)) == 1,
          "--check-sync catches a rank whose weights drifted (exit 2, one message)", f"rc={rc}\n{err[-1500:]}")


def test_resume(d):
    tok = make_tokens(d)
    common = ["--data", tok, "--steps", 20, "--log-every", 2, "--eval-every", 5, "--ckpt-every", 50, *TINY]
    a, b = os.path.join(d, "straight"), os.path.join(d, "stopped")
    rc, _, err, _ = mpirun(2, "--out", a, *common)
    check(rc == 0, "uninterrupted 20-step run", err[-1500:])
    rc, out, err, _ = mpirun(2, "--out", b, *common, env={"GT_FAULT_SIGNAL_STEP": "7"})
    check(rc == 0 and "stopped by SIGUSR1 after step 7" in out and "--resume" in out,
          "a signal to one rank stops both after step 7 with a checkpoint (exit 0)", f"rc={rc}\n{out[-800:]}{err[-800:]}")
    check(latest(b).endswith("ckpt-00000007.h5"), "RUN/latest names ckpt-00000007.h5")
    partial = os.path.join(d, "partial")
    shutil.copytree(b, partial)
    # Only --data, --out and --resume: every other setting comes from the checkpoint.
    rc, out, err, _ = mpirun(2, "--data", tok, "--out", b, "--resume")
    check(rc == 0 and "resuming from" in out, "--resume continues to --steps 20", err[-1500:])
    ok, why = same_tensors(os.path.join(a, "ckpt-00000020.h5"), os.path.join(b, "ckpt-00000020.h5"))
    check(ok, "resumed run ends bit-identical to the uninterrupted one (model, AdamW m and v)", why)
    cols = ["step", "tokens", "train_loss", "val_loss", "lr", "grad_norm"]
    ma, mb = metrics(a), metrics(b)
    check([[r[c] for c in cols] for r in ma] == [[r[c] for c in cols] for r in mb],
          "metrics.csv of the resumed run equals the uninterrupted one")
    # Another rank count: the data order is global, so the run continues with the same windows.
    for np_ in (4, 1):
        run = os.path.join(d, f"resume_np{np_}")
        shutil.copytree(partial, run)
        rc, out, err, _ = mpirun(np_, "--data", tok, "--out", run, "--resume")
        check(rc == 0 and "the data order is global" in out, f"resume a 2-rank checkpoint on {np_} rank(s)", err[-1500:])
        with h5py.File(os.path.join(run, "ckpt-00000020.h5")) as f:
            check(f.attrs["world_size"] == np_ and f.attrs["step"] == 20 and np.isfinite(f["state"].attrs["best_val_loss"]),
                  f"  ... ends at step 20 with world_size {np_}")
    # --steps is where the run ends: resuming a finished run has nothing to do.
    rc, out, err, _ = mpirun(2, "--data", tok, "--out", b, "--resume", "--steps", 20)
    check(rc == 0 and "nothing to train" in out, "--resume at --steps already reached: exit 0, nothing to train", err)
    rc, out, err, _ = mpirun(2, "--data", tok, "--out", b, "--resume", "--steps", 24)
    check(rc == 0 and os.path.exists(os.path.join(b, "ckpt-00000024.h5")), "--resume --steps 24 goes on to step 24", err)


def test_signals(d):
    tok = make_tokens(d)
    common = ["--data", tok, "--steps", 100000, "--log-every", 1, *TINY]
    for how in ("SIGTERM to the ranks", "SIGTERM to mpirun", "SIGUSR1 to mpirun"):
        run = os.path.join(d, how.replace(" ", "_"))
        cmd = tl.mpirun(2, TRAIN, "--out", run, *common)
        # mpirun SIGKILLs the ranks 1 s after forwarding SIGTERM unless told to wait (README).
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=tl.env(dict(GT_PROGRESS="0", OMPI_MCA_odls_base_sigkill_timeout="10")))
        t0 = time.time()
        while time.time() - t0 < 60 and not (os.path.exists(os.path.join(run, "metrics.csv"))
                                             and len(open(os.path.join(run, "metrics.csv")).readlines()) > 4):
            time.sleep(0.1)
        sig = signal.SIGUSR1 if "USR1" in how else signal.SIGTERM
        if "ranks" in how:
            kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
            for k in kids:
                os.kill(int(k), sig)
        else:
            p.send_signal(sig)
        try:
            out, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            check(False, f"{how}: the job ends within 60 s")
            continue
        secs = time.time() - t0
        # mpirun itself reports 1 after it was signalled (the ranks exit 0).
        want_rc = (0,) if "mpirun" not in how or "USR1" in how else (0, 1)
        if "SIGTERM to mpirun" in how:  # mpirun no longer forwards output: the message is in train.log
            out = open(os.path.join(run, "train.log")).read()
        check(p.returncode in want_rc and "stopped by" in out and "--resume" in out,
              f"{how}: checkpoint written, exit {p.returncode}, message says how to resume ({secs:.1f} s)",
              f"rc={p.returncode}\n{out[-600:]}\n{err[-800:]}")
        if not os.path.exists(os.path.join(run, "latest")):
            check(False, f"{how}: RUN/latest exists")
            continue
        with h5py.File(latest(run)) as f:
            step = int(f.attrs["step"])
        rc, out, err, _ = mpirun(2, "--data", tok, "--out", run, "--resume", "--steps", step + 3)
        check(rc == 0 and os.path.exists(os.path.join(run, f"ckpt-{step + 3:08d}.h5")),
              f"{how}: the checkpoint of step {step} resumes", err[-1000:])


def test_badinput(d):
    tok = make_tokens(d)
    voc = os.path.join(d, "vocab.h5")
    good = os.path.join(d, "good")
    rc, _, err, _ = mpirun(2, "--data", tok, "--out", good, "--steps", 2, *TINY)
    check(rc == 0, "a good 2-step run (for the resume cases)", err[-1000:])
    bin_file = os.path.join(d, "random.bin")
    with open(bin_file, "wb") as f:
        f.write(bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)))
    # tokens.h5 whose vocabulary is smaller than its ids (vocab and tokens disagree)
    small_voc = os.path.join(d, "small_vocab.h5")
    tl.run_ok([BPE, "train", "--input", os.path.join(d, "corpus.txt"), "--out", small_voc, "--vocab-size", "260"])
    mixed = os.path.join(d, "mixed.h5")
    shutil.copy(tok, mixed)
    with h5py.File(mixed, "a") as f, h5py.File(small_voc) as s:
        del f["tokenizer"]
        s.copy("tokenizer", f)
    cfg_unknown, cfg_bad = os.path.join(d, "unknown.conf"), os.path.join(d, "bad.conf")
    with open(cfg_unknown, "w") as f:
        f.write("# model\nn_layer = 2\nlearning_rate = 0.1\n")
    with open(cfg_bad, "w") as f:
        f.write("n_layer = two  # words are not numbers\n")
    tiny_tok = os.path.join(d, "tiny_tokens.h5")
    with open(os.path.join(d, "tiny.txt"), "w") as f:
        f.write("a short text that cannot feed eight ranks. " * 30)
    tl.run_ok([BPE, "encode", "--vocab", voc, "--input", os.path.join(d, "tiny.txt"), "--out", tiny_tok])
    run = lambda name: os.path.join(d, "bad_" + name)  # noqa: E731
    cases = [
        ("missing data file", 2, ["--data", os.path.join(d, "nope.h5"), "--out", run("a")], {}, r"nope\.h5.*No such file"),
        ("foreign HDF5 data file (vocab.h5)", 2, ["--data", voc, "--out", run("b")], {}, r"vocab\.h5.*format is 'gpt-train/vocab'"),
        ("binary file as text", 2, ["--data", bin_file, "--out", run("c")], {}, r"random\.bin.*UTF-8"),
        ("vocab and tokens disagree", 2, ["--data", mixed, "--out", run("d"), "--steps", 2], {}, r"mixed\.h5"),
        ("--resume without a checkpoint", 2, ["--data", tok, "--out", run("e"), "--resume"], {}, r"--resume: no checkpoint"),
        ("--resume with another model shape", 2, ["--data", tok, "--out", good, "--resume", "--n-layer", "3"], {},
         r"has n-layer 2 but --n-layer 3"),
        ("config file with an unknown key", 2, ["--data", tok, "--out", run("f"), "--config", cfg_unknown], {},
         r"unknown\.conf' line 3: unknown key 'learning_rate'"),
        ("config file with a bad value", 2, ["--data", tok, "--out", run("g"), "--config", cfg_bad], {},
         r"bad\.conf' line 1: n_layer = 'two': not an integer"),
        ("unknown flag", 2, ["--data", tok, "--out", run("h"), "--learning-rate", "1"], {}, r"unknown option '--learning-rate'"),
        ("flag out of range", 2, ["--data", tok, "--out", run("i"), "--dropout", "1.5"], {}, r"--dropout 1\.5: must be between"),
        ("one rank cannot open its file", 4, ["--data", tok, "--out", run("j")], {"GT_FAULT_OPEN_RANK": "2"},
         r"rank 2 of 4: --data .*No such file"),
        ("shard too small", 8, ["--data", tiny_tok, "--out", run("k"), "--batch-size", "32"], {},
         r"one micro-batch over 8 ranks of --batch-size 32 takes 256 windows, so /train needs 4097 tokens; "
         r"use at most \d+ rank"),
        ("existing run without --resume", 2, ["--data", tok, "--out", good, "--steps", 4], {}, r"already holds a run"),
        ("--attn-prompt longer than the block", 2, ["--data", tok, "--out", run("l"), "--attn-every", "1",
                                                    "--block-size", "4", "--attn-prompt", "a much longer prompt than four tokens"], {},
         r"--attn-prompt: \d+ tokens, longer than --block-size 4"),
        ("unknown --pattern name (text input)", 2, ["--data", os.path.join(d, "corpus.txt"), "--out", run("n"),
                                                    "--pattern", "llama4"], {}, r"--pattern 'llama4': unknown pattern"),
        ("n-embd not divisible by n-head", 2, ["--data", tok, "--out", run("m"), "--n-embd", "30", "--n-head", "4"], {}, r"30"),
    ]
    for name, np_, args, env, pattern in cases:
        extra = [] if any(a in args for a in ("--n-layer", "--batch-size", "--block-size", "--n-embd")) else ["--n-layer", "1"]
        rc, out, err, secs = mpirun(np_, *args, *extra, timeout=60, env=env)
        errs = errors(err)
        ok = rc == 1 and len(errs) == 1 and re.search(pattern, errs[0]) is not None and secs < 30
        check(ok, f"bad input: {name}: exit 1 after {secs:.1f} s with one message",
              f"rc={rc} messages={errs}\nstderr tail: {err[-600:]}")
    with h5py.File(latest(good)) as f:
        check(f.attrs["step"] == 2, "the good run's checkpoint is untouched by the failed attempts")


def test_nan(d):
    tok = make_tokens(d)
    run = os.path.join(d, "nan")
    common = ["--data", tok, "--steps", 12, "--ckpt-every", 5, "--log-every", 1, *TINY]
    rc, out, err, _ = mpirun(2, "--out", run, *common, env={"GT_FAULT_NAN_STEP": "8"})
    errs = errors(err)
    check(rc == 2 and len(errs) == 1 and "step 8" in errs[0] and "ckpt-00000005.h5" in errs[0],
          "a NaN gradient at step 8 stops with exit 2 naming the step and the last good checkpoint", f"rc={rc} {errs}")
    check(latest(run).endswith("ckpt-00000005.h5") and not os.path.exists(os.path.join(run, "ckpt-00000008.h5")),
          "  ... and keeps the last good checkpoint as RUN/latest")
    rc, out, err, _ = mpirun(2, "--data", tok, "--out", run, "--resume", "--skip-bad-steps", env={"GT_FAULT_NAN_STEP": "8"})
    check(rc == 0 and "update skipped" in out, "--resume --skip-bad-steps skips the bad update and finishes", err[-800:])
    with h5py.File(os.path.join(run, "ckpt-00000012.h5")) as f:
        check(f["state"].attrs["skipped_steps"] == 1 and all(np.isfinite(f["model"][k][()]).all() for k in f["model"]),
              "  ... counts 1 skipped step, weights finite")


def test_text(d):
    txt = os.path.join(d, "corpus.txt")
    corpus(txt, 60_000)
    run = os.path.join(d, "run")
    args = ["--data", txt, "--out", run, "--vocab-size", 300, "--log-every", 2, *TINY]
    rc, out, err, _ = mpirun(2, *args, "--steps", 4)
    check(rc == 0 and "training a 300-token tokenizer" in out, "--data corpus.txt: rank 0 tokenizes, then 2 ranks train",
          err[-1500:])
    for name in ("vocab.h5", "tokens.h5", "ckpt-00000004.h5"):
        check(os.path.exists(os.path.join(run, name)), f"  ... RUN/{name} written")
    with h5py.File(os.path.join(run, "tokens.h5")) as f:
        check(f["train"].attrs["source"] == txt, "  ... tokens.h5 records its source")
    with h5py.File(os.path.join(run, "ckpt-00000004.h5")) as f, h5py.File(os.path.join(run, "vocab.h5")) as v:
        check(np.array_equal(f["tokenizer/merges"][()], v["tokenizer/merges"][()]), "  ... checkpoint carries the tokenizer")
    rc, out, err, _ = mpirun(2, *args, "--steps", 6, "--resume")
    check(rc == 0 and "reusing" in out and "training a" not in out, "--resume reuses RUN/tokens.h5 (same sha256)", out[-800:])
    with open(txt, "a") as f:
        f.write("\nsome new text changes the sha256.\n")
    rc, out, err, _ = mpirun(2, *args, "--steps", 8, "--resume")
    check(rc == 1 and "has changed since this run tokenized it" in err and "training a" not in out,
          "a changed corpus is refused on --resume (the run's tokens are never rewritten)", err[-800:])


def test_config(d):
    tok = make_tokens(d)
    conf = os.path.join(d, "my.conf")
    with open(conf, "w") as f:
        f.write("# a config file\nn_layer = 1\nn-embd = 32   # dashes work too\nn_head = 2\nsteps = 5\n"
                "lr = 2e-3\nlr_schedule = linear\nattn_prompt = \"Hello there\"\nbatch_size = 8\n")
    run = os.path.join(d, "a")
    rc, out, err, _ = mpirun(2, "--data", tok, "--out", run, "--config", conf, "--steps", 3, "--log-every", 1)
    check(rc == 0, "--config file with a flag on top", err[-1000:])
    with h5py.File(latest(run)) as f:
        a = dict(f["config"].attrs)
        check(f.attrs["step"] == 3 and a["steps"] == 3 and a["n_layer"] == 1 and a["n_embd"] == 32 and a["lr"] == 2e-3
              and a["lr_schedule"] == "linear" and a["attn_prompt"] == "Hello there" and a["batch_size"] == 8,
              "  ... the file's settings are in effect, the flag wins over the file (steps 3, not 5)", str(a))
    # The printed effective configuration is itself a config file that repeats the run.
    text = out[out.index("# effective configuration"):out.index("\ndata: ")]
    printed = os.path.join(d, "printed.conf")
    with open(printed, "w") as f:
        f.write(text.replace("out = " + run, "out = " + os.path.join(d, "b")))
    rc, out, err, _ = mpirun(2, "--config", printed)
    ok, why = rc == 0, err[-800:]
    if ok:
        ok, why = same_tensors(latest(run), latest(os.path.join(d, "b")))
    check(ok, "the printed effective configuration, used as --config, repeats the run bit for bit", why)


def test_precision(d):
    tok = make_tokens(d)
    # a CPU without bf16 instructions: one line naming them, exit 1, no run directory
    run = os.path.join(d, "old-cpu")
    rc, out, err, _ = mpirun(2, "--data", tok, "--out", run, "--steps", 4, "--precision", "bf16", *TINY,
                             env={"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"})
    check(rc == 1 and len(errors(err)) == 1 and "AVX512-BF16" in err and not os.path.exists(latest_path(run)),
          "--precision bf16 where oneDNN may not use bf16 instructions: exit 1 naming AVX512-BF16", f"rc={rc}\n{err[-800:]}")
    rc, out, err, _ = mpirun(2, "--data", tok, "--out", os.path.join(d, "bad"), "--precision", "fp16", *TINY)
    check(rc == 1 and len(errors(err)) == 1 and "--precision" in err, "--precision fp16: exit 1 naming the flag", err[-800:])
    common = ["--data", tok, "--steps", 12, "--log-every", 2, "--eval-every", 6, "--ckpt-every", 50, *TINY]
    a, b, t2 = os.path.join(d, "straight"), os.path.join(d, "stopped"), os.path.join(d, "threads2")
    rc, out, err, _ = mpirun(2, "--out", a, *common, "--precision", "bf16")
    if rc == 1 and "AVX512-BF16" in err:
        print(f"note: this CPU can do no bf16, the bf16 training checks are skipped: {errors(err)[0]}")
        return
    check(rc == 0 and "precision: bf16 matmuls on" in out, "12 bf16 steps on 2 ranks, logged", err[-1500:])
    with h5py.File(latest(a)) as f:
        check(f["config"].attrs["precision"] == "bf16" and f["model/transformer.wte.weight"].dtype == np.float32,
              "  ... /config precision = bf16; the checkpoint's tensors are float32 as ever")
    rc, out, err, _ = mpirun(2, "--out", b, *common, "--precision", "bf16", env={"GT_FAULT_SIGNAL_STEP": "5"})
    check(rc == 0 and latest(b).endswith("ckpt-00000005.h5"), "a bf16 run stopped after step 5", err[-800:])
    partial = os.path.join(d, "partial")
    shutil.copytree(b, partial)
    rc, out, err, _ = mpirun(2, "--data", tok, "--out", b, "--resume")
    ok, why = rc == 0, err[-800:]
    if ok:
        ok, why = same_tensors(latest(a), latest(b))
    check(ok and "precision: bf16" in out, "--resume keeps bf16 and ends bit-identical to the uninterrupted run", why)
    rc, out, err, _ = mpirun(2, "--out", t2, *common, "--precision", "bf16", "--threads", 2)
    ok, why = rc == 0, err[-800:]
    if ok:
        ok, why = same_tensors(latest(a), latest(t2))
    check(ok, "bf16 at 2 threads per rank ends bit-identical to 1 thread", why)
    rc, out, err, _ = mpirun(2, "--data", tok, "--out", partial, "--resume", "--precision", "fp32")
    with h5py.File(latest(partial)) as f:
        prec = f["config"].attrs["precision"]
    check(rc == 0 and "the checkpoint's run trained in bf16; this run continues in fp32" in out and prec == "fp32",
          "a resume that changes the precision is allowed and logged", out[-800:] + err[-800:])


def latest_path(run):
    return os.path.join(run, "latest")


TESTS = {"config": test_config, "ranks": test_ranks, "resume": test_resume, "signals": test_signals, "badinput": test_badinput,
         "nan": test_nan, "text": test_text, "precision": test_precision}

if __name__ == "__main__":
    names = sys.argv[1:] or list(TESTS)
    tl.require("gpt-train", "gpt-bpe")
    for name in names:
        d = tl.tmpdir(f"gt_train_{name}_")
        t0 = time.time()
        print(f"== {name}")
        TESTS[name](d)
        print(f"   {time.time() - t0:.1f} s")
        tl.rmtree(d)
    ck.finish()
