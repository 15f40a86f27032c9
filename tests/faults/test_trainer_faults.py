#!/usr/bin/python3
"""test_trainer_faults.py - what a new user's afternoon of unusual input did to gpt-train
(issue 15), each class provoked with the real tool under mpirun; every run has a timeout, so
a hang is a failure, not a stuck suite.

    test_trainer_faults.py [lock|newdir|inputs|vocab|resumecmd|bigstep|streak ...]

lock      Two runs on one RUN: the second is refused (exit 1, one line naming the first's PID,
          read back from RUN/lock), the first's files untouched; under mpirun rank 0 holds the
          lock and every rank agrees. kill -9 of the holder frees it: --resume then works.
newdir    An early error (a missing --data) in a RUN this run created removes RUN and the
          parents it made; a RUN that existed stays; a run that started writing keeps its files.
inputs    --data as a FIFO (no writer: it would block forever), a character device (/dev/zero:
          it never ends) and a directory of binary files (a directory is text: every file below
          it): exit 1 within seconds naming what it is. A text --data that is one of RUN's own
          files (train.log) is refused.
vocab     --resume with a tokens.h5 of another vocabulary of the same size is refused, naming
          the difference. Text mode: a text changed since the run tokenized it is refused on
          --resume naming both SHA-256, with RUN/vocab.h5 and RUN/tokens.h5 unchanged byte for
          byte (also with --vocab-size repeated); --data RUN/tokens.h5 resumes.
resumecmd The "Resume with:" command printed after a stop signal, run as printed by a shell,
          resumes the same run: --out holds a quote, spaces, $ and a 250-byte name, and an
          --attn-prompt holds a quote and a newline.
bigstep   Steps across 99,999,999 -> 100,000,000 (a tiny model resumed from a checkpoint whose
          step is set): --keep-ckpts 2 keeps the 2 newest by step; --resume takes the newest by
          step when RUN/latest lags behind; the same at 10^15, the largest --steps.
streak    A divergence with --skip-bad-steps (--lr warming up to 5, 3 ranks, a checkpoint due
          every step): no checkpoint is written inside the streak of skipped steps; the one of the
          step before it, whose weights every step of the streak failed on, is renamed aside; the
          stop names the last one whose weights trained well, which is RUN/latest, and resuming
          from it with a sane --lr works.
signals   SIGINT, SIGTERM, SIGHUP in each phase, on 2 ranks (GT_TEST_STOP_AT stops rank 0 at the
          point, the test sends the signal to a rank and lets it go on): while starting (RUN just
          created and locked), tokenizing a text, waiting for rank 0 (rank 1 signalled), writing
          RUN/vocab.h5, reading the data: the job ends by the signal at once, rank 0 says what
          it was doing, no temp file and no RUN it created is left; on --resume the checkpoints
          are untouched. While a checkpoint is written (training): it completes, the run stops
          after the next step with a checkpoint, exit 0, and resumes.
reader    --resume of a run killed after attention records past its checkpoint, while h5py readers
          hold attention.h5 (one opened with swmr=True and kept open, one reopening it every
          20 ms): it works, the readers go on, the records past the checkpoint are dropped.
          --attn-every 0 on such a resume drops them too. --attn-dtype float32 on the resume of
          a float16 run is refused (the file untouched); without the flag /config says float16.
sbatch    jobs/train.sbatch gives the ranks OMP_WAIT_POLICY=passive when a node gets more tasks x
          threads than CPUs, and keeps a policy the user set; without a gpt-train to run it stops
          at once with one message (it went on and ran an empty command).
solo      Errors that rank 0 alone meets deep in the tokenizer of a text --data, on 2 ranks: a
          --pattern that is no regex, one that exhausts PCRE2's match limit, and out of memory
          (rank 0 under ulimit -v): one `gpt-train: error:` line, exit 1, no MPI_ABORT banner, no
          RUN left (they ended in MPI_Abort).
stdout    stdout that fails: --help > /dev/full and a run > /dev/full are exit 2 with one line
          naming stdout (they were exit 0); a run piped into head stops as on a signal, with a
          checkpoint, exit 0, and --resume continues it (it trained on to the end unheard).
stale     Temporary files a kill -9 leaves in RUN (RUN/vocab.h5.tmp-PID of a text --data, a
          metrics.csv cut mid-row by a full disk) are gone when the next run on RUN starts; a
          file of the user's own with .tmp in its name stays; the cut row does not glue itself to
          the next one.
"""
import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import faultlib as fl  # noqa: E402

MODEL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "2",
         "--eval-batches", "1", "--log-every", "1", "--dropout", "0.1"]


def h5():
    import h5py
    return h5py


def gt(train, np_, *args, timeout=60, extra_env=None):
    return fl.run(tl.mpirun(np_, train, *args), timeout=timeout, extra_env=extra_env)


def one_error(ck, what, r, rc, *needles):
    """Exit rc, no crash or hang, exactly one error line holding every needle."""
    lines = r.error_lines()
    ok = r.rc == rc and not r.crashed() and len(lines) == 1 and all(n in lines[0] for n in needles)
    return ck.ok(ok, what, r.describe() + "\n  error lines: %s" % lines)


def latest(run):
    with open(os.path.join(run, "latest")) as f:
        return f.read().strip()


def file_sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def wait_for(cond, secs):
    t0 = time.time()
    while time.time() - t0 < secs:
        if cond():
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- lock
def test_lock(ck, train, d, tokens):
    run = os.path.join(d, "locked")
    first = fl.spawn(tl.mpirun(2, train, "--data", tokens, "--out", run, "--steps", "1000000", "--ckpt-every", "5",
                               *MODEL), os.path.join(d, "first.log"))
    try:
        metrics = os.path.join(run, "metrics.csv")
        if not ck.ok(wait_for(lambda: os.path.exists(metrics) and len(open(metrics).readlines()) > 3, 60),
                     "lock: the first run trains"):
            return
        holder = open(os.path.join(run, "lock")).read()
        m = re.match(r"PID (\d+) on (\S+)", holder)
        pid = int(m.group(1)) if m else -1
        ck.ok(m is not None and open("/proc/%d/comm" % pid).read().strip() == "gpt-train",
              "lock: RUN/lock names the PID of the first run's rank 0, a live gpt-train", holder)
        log_before = open(os.path.join(run, "train.log")).read()
        for extra in ([], ["--resume"]):
            r = gt(train, 2, "--data", tokens, "--out", run, "--steps", "1000000", *MODEL, *extra, timeout=60)
            one_error(ck, "lock: a second run %s on the same RUN is refused, naming the first's PID" % (extra or ""),
                      r, 1, "is in use by another gpt-train", "PID %d" % pid)
        log_after = open(os.path.join(run, "train.log")).read()
        ck.ok(log_after.startswith(log_before) and "effective configuration" not in log_after[len(log_before):],
              "lock: the refused runs wrote nothing into RUN")
    finally:
        tl.kill_group(first)  # kill -9 of the whole job: the kernel drops the lock
    # the newest complete checkpoint, which --resume takes (RUN/latest lags one behind when the
    # kill fell between a checkpoint's rename and its update)
    step = max(int(m.group(1)) for m in (re.match(r"ckpt-(\d+)\.h5$", n) for n in os.listdir(run)) if m)
    r = gt(train, 2, "--data", tokens, "--out", run, "--resume", "--steps", step + 2, timeout=120)
    ck.ok(r.rc == 0 and os.path.exists(os.path.join(run, "ckpt-%08d.h5" % (step + 2))),
          "lock: after kill -9 of the holder, --resume takes the lock and trains", r.describe())


# ---------------------------------------------------------------- newdir
def test_newdir(ck, train, d, tokens):
    new = os.path.join(d, "made", "by", "this-run")
    r = gt(train, 2, "--data", os.path.join(d, "missing.h5"), "--out", new, *MODEL)
    one_error(ck, "newdir: a missing --data is one error", r, 1, "missing.h5")
    ck.ok(not os.path.exists(os.path.join(d, "made")), "newdir: the RUN it created (and its parents) is removed",
          str(os.listdir(d)))
    mine = os.path.join(d, "mine")
    os.makedirs(mine)
    r = gt(train, 2, "--data", os.path.join(d, "missing.h5"), "--out", mine, *MODEL)
    ck.ok(r.rc == 1 and os.path.isdir(mine), "newdir: a RUN that existed before stays", r.describe())
    # A run that started writing keeps everything (here: stopped by a NaN at step 3).
    run = os.path.join(d, "made2")
    r = gt(train, 2, "--data", tokens, "--out", run, "--steps", "5", "--ckpt-every", "1", *MODEL,
           extra_env={"GT_FAULT_NAN_STEP": "3"})
    ck.ok(r.rc == 2 and os.path.exists(os.path.join(run, "ckpt-00000002.h5")) and
          os.path.exists(os.path.join(run, "train.log")), "newdir: a run that failed after it began keeps its files",
          r.describe())


# ---------------------------------------------------------------- inputs
def test_inputs(ck, train, d, tokens):
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo)
    # A directory is text (every file below it), so one holding a binary file is refused naming that file.
    bin_dir = os.path.join(d, "binary-dir")
    os.makedirs(bin_dir)
    with open(os.path.join(bin_dir, "data.bin"), "wb") as f:
        f.write(bytes(range(256)) * 4)
    for what, path, kind in (("a FIFO", fifo, "is a FIFO"), ("/dev/zero", "/dev/zero", "is a character device"),
                             ("a directory of binary files", bin_dir, "data.bin': invalid UTF-8")):
        r = gt(train, 2, "--data", path, "--out", os.path.join(d, "in-" + what[-4:]), *MODEL, timeout=30)
        ok = one_error(ck, "inputs: --data %s: exit 1 naming it" % what, r, 1, "--data '%s'" % path, kind)
        ck.ok(ok and r.secs < 20, "inputs: ... within seconds (%.1f s)" % r.secs)
    run = os.path.join(d, "in-run")
    r = gt(train, 2, "--data", tokens, "--out", run, "--steps", "2", *MODEL)
    if ck.ok(r.rc == 0, "inputs: a run to resume", r.describe()):
        log = os.path.join(run, "train.log")
        r = gt(train, 2, "--data", log, "--out", run, "--resume", "--steps", "4", *MODEL)
        one_error(ck, "inputs: a text --data that is RUN/train.log is refused", r, 1, "a file of the run directory")


# ---------------------------------------------------------------- vocab
def test_vocab(ck, train, bpe, d, tokens):
    corpus = os.path.join(d, "corpus.txt")
    run = os.path.join(d, "v")
    r = gt(train, 2, "--data", tokens, "--out", run, "--steps", "2", *MODEL)
    if not ck.ok(r.rc == 0, "vocab: a 2-step run", r.describe()):
        return
    # The same text and vocabulary size, another split pattern: other merges, same size.
    other_vocab, other_tokens = os.path.join(d, "other_vocab.h5"), os.path.join(d, "other_tokens.h5")
    for cmd in ([bpe, "train", "--input", corpus, "--out", other_vocab, "--vocab-size", "320", "--pattern", "gpt2"],
                [bpe, "encode", "--vocab", other_vocab, "--input", corpus, "--out", other_tokens]):
        fl.run(cmd, timeout=120)
    with h5().File(tokens, "r") as a, h5().File(other_tokens, "r") as b:
        same_size = a["tokenizer"].attrs["vocab_size"] == b["tokenizer"].attrs["vocab_size"]
    if ck.ok(same_size, "vocab: fixture: two tokenizers of the same size"):
        r = gt(train, 2, "--data", other_tokens, "--out", run, "--resume", "--steps", "4", *MODEL)
        one_error(ck, "vocab: --resume with another vocabulary of the same size is refused", r, 1,
                  "holds another tokenizer than checkpoint", "other_tokens.h5")
    # Text mode: the run's own RUN/vocab.h5 and RUN/tokens.h5 are never rewritten by a resume.
    text = os.path.join(d, "text.txt")
    shutil.copy(corpus, text)
    trun = os.path.join(d, "t")
    args = ["--data", text, "--out", trun, "--vocab-size", "300", *MODEL]
    r = gt(train, 2, *args, "--steps", "2", timeout=120)
    if not ck.ok(r.rc == 0, "vocab: a text run", r.describe()):
        return
    before = {n: file_sha(os.path.join(trun, n)) for n in ("vocab.h5", "tokens.h5")}
    old_sha = file_sha(text)
    with open(text, "a") as f:
        f.write("One line more.\n")
    new_sha = file_sha(text)
    for extra in ([], ["--vocab-size", "280"]):
        r = gt(train, 2, *args, "--resume", "--steps", "4", *extra, timeout=120)
        one_error(ck, "vocab: --resume on a changed text %sis refused, naming the old and new SHA-256" %
                  (" ".join(extra) + " " if extra else ""), r, 1, old_sha, new_sha, "--data %s" %
                  os.path.join(trun, "tokens.h5"))
        after = {n: file_sha(os.path.join(trun, n)) for n in ("vocab.h5", "tokens.h5")}
        ck.ok(after == before, "vocab: ... and RUN/vocab.h5, RUN/tokens.h5 are unchanged byte for byte")
    r = gt(train, 2, "--data", os.path.join(trun, "tokens.h5"), "--out", trun, "--resume", "--steps", "4", *MODEL)
    ck.ok(r.rc == 0 and os.path.exists(os.path.join(trun, "ckpt-00000004.h5")),
          "vocab: --resume --data RUN/tokens.h5 continues on the run's own tokens", r.describe())


# ---------------------------------------------------------------- resumecmd
def test_resumecmd(ck, train, d, tokens):
    base = os.path.join(d, "it's a \"run\" $HOME")
    run = os.path.join(base, "r" * 250)
    os.makedirs(base)
    prompt = "say 'hi'\nand more"
    r = gt(train, 2, "--data", tokens, "--out", run, "--steps", "6", "--attn-every", "2", "--attn-prompt", prompt,
           *MODEL, "--block-size", "16", extra_env={"GT_FAULT_SIGNAL_STEP": "3"})
    m = re.search(r"Resume with:\n (.*)\Z", r.out, re.S)
    if not ck.ok(r.rc == 0 and m is not None, "resumecmd: a signal stops the run with a command to resume",
                 r.describe() + r.out[-600:]):
        return
    cmd = m.group(1).rstrip("\n")
    ck.ok(len(cmd) > 500 and "'\\''" in cmd, "resumecmd: the command keeps every byte (quoted for the shell)", cmd)
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, env=fl.env(), timeout=120)
    ok = p.returncode == 0 and "resuming from %s/ckpt-00000003.h5" % run in p.stdout and \
        os.path.exists(os.path.join(run, "ckpt-00000006.h5"))
    ck.ok(ok, "resumecmd: running the printed command resumes that run to its end",
          "rc=%s\n%s\n%s" % (p.returncode, p.stdout[-800:], p.stderr[-800:]))
    with h5().File(os.path.join(run, "ckpt-00000006.h5"), "r") as f:
        ck.ok(f["config"].attrs["attn_prompt"] == prompt, "resumecmd: ... with the same --attn-prompt")


# ---------------------------------------------------------------- bigstep
def set_step(path, step):
    with h5().File(path, "a") as f:
        f.attrs["step"] = step
        f["state"].attrs["adam_t"] = step


def ckpts(run):
    return sorted(n for n in os.listdir(run) if n.startswith("ckpt-"))


def test_bigstep(ck, train, d, tokens):
    run = os.path.join(d, "big")
    common = ["--data", tokens, "--out", run, "--ckpt-every", "1", "--keep-ckpts", "2", "--eval-every", "0", *MODEL]
    r = gt(train, 1, *common, "--steps", "2")
    if not ck.ok(r.rc == 0, "bigstep: a 2-step run", r.describe()):
        return
    src = os.path.join(d, "two.h5")
    shutil.copy(os.path.join(run, "ckpt-00000002.h5"), src)
    for start, end in ((99_999_998, 100_000_003), (999_999_999_999_998, 1_000_000_000_000_000)):
        for n in ckpts(run):
            os.remove(os.path.join(run, n))
        name = "ckpt-%08d.h5" % start
        shutil.copy(src, os.path.join(run, name))
        set_step(os.path.join(run, name), start)
        with open(os.path.join(run, "latest"), "w") as f:
            f.write(name + "\n")
        r = gt(train, 1, *common, "--resume", "--steps", end, timeout=120)
        want = ["ckpt-%08d.h5" % (end - 1), "ckpt-%08d.h5" % end]
        ck.ok(r.rc == 0 and ckpts(run) == sorted(want) and latest(run) == want[1],
              "bigstep: %d -> %d with --keep-ckpts 2 keeps the 2 newest by step, RUN/latest the newest" % (start, end),
              "%s %s\n%s" % (ckpts(run), latest(run) if os.path.exists(os.path.join(run, "latest")) else None,
                             r.describe()))
        # RUN/latest one behind (a kill between a checkpoint's rename and the update of latest).
        with open(os.path.join(run, "latest"), "w") as f:
            f.write(want[0] + "\n")
        r = gt(train, 1, *common, "--resume", "--steps", end, timeout=120)
        ck.ok(r.rc == 0 and "checkpoint '%s' is already at step %d" % (os.path.join(run, want[1]), end) in r.out,
              "bigstep: --resume takes the newest by step (%s), not RUN/latest's" % want[1], r.describe() + r.out[-400:])


# ---------------------------------------------------------------- streak
def test_streak(ck, train, d, tokens):
    run = os.path.join(d, "div")
    # A learning rate warming up to 5: a few good steps, then every step explodes.
    r = gt(train, 3, "--data", tokens, "--out", run, "--steps", "200", "--lr", "5", "--warmup", "8",
           "--skip-bad-steps", "--ckpt-every", "1", "--keep-ckpts", "2", *MODEL, timeout=180)
    lines = r.error_lines()
    if not ck.ok(r.rc == 2 and len(lines) == 1 and "bad steps in a row" in lines[0],
                 "streak: a divergence with --skip-bad-steps gives up (exit 2, one message)", r.describe()):
        return
    skipped = [int(s) for s in re.findall(r"^step (\d+): .*update skipped", r.out, re.M)]
    stop = int(re.search(r"error: step (\d+):", lines[0]).group(1))
    first = stop - 20  # the streak: 20 skipped steps, then the one that gave up
    ck.ok(skipped[-20:] == list(range(first, stop)), "streak: the last 20 skipped steps are the streak",
          str(skipped[-25:]))
    m = re.search(r"RUN/latest names (\S+) \(step (\d+)\)", lines[0])
    named, step = (m.group(1), int(m.group(2))) if m else (None, -1)
    ck.ok(m is not None and step < first - 1 and os.path.basename(named) == latest(run),
          "streak: the stop names a checkpoint from before the streak whose weights trained well (step %d < %d), "
          "and it is RUN/latest" % (step, first - 1), lines[0])
    ck.ok(all(int(n[5:13]) < first for n in ckpts(run)), "streak: no checkpoint was written inside the streak",
          str(ckpts(run)))
    aside = "ckpt-%08d.h5.diverged" % (first - 1)
    ck.ok(ckpts(run) == sorted(["ckpt-%08d.h5" % step, aside]),
          "streak: the checkpoint of the step before the streak, whose weights the streak failed on, is renamed "
          "aside (%s); the good one is kept" % aside, str(ckpts(run)))
    with h5().File(os.path.join(run, latest(run)), "r") as f:
        ck.ok(int(f["state"].attrs["bad_steps_in_row"]) == 0, "streak: its /state shows no bad steps in a row")
    r = gt(train, 3, "--data", tokens, "--out", run, "--resume", "--lr", "1e-3", "--steps", step + 10, timeout=120)
    ck.ok(r.rc == 0 and "resuming from %s" % named in r.out and latest(run) == "ckpt-%08d.h5" % (step + 10),
          "streak: --resume starts from it and, with a sane --lr, does not fail again: it trains to the end",
          r.describe() + r.out[-500:])


# ---------------------------------------------------------------- signals
def rank_pids(sid):
    """{rank: pid} of the gpt-train processes of session sid, and the set of stopped ones."""
    ranks, stopped = {}, set()
    for pid in tl.session_pids(sid):
        try:
            with open("/proc/%d/comm" % pid) as f:
                if f.read().strip() != "gpt-train":
                    continue
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            with open("/proc/%d/stat" % pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        ranks[int(env.get(b"OMPI_COMM_WORLD_RANK", b"-1"))] = pid
        if state == "T":
            stopped.add(pid)
    return ranks, stopped


def signal_in_phase(cmd, phase, rank, sig, timeout=60):
    """Runs cmd (mpirun) until rank 0 stops itself at `phase` (GT_TEST_STOP_AT), sends sig to
    `rank`, lets every stopped process go on, and waits for the job: (Result, reached)."""
    p = subprocess.Popen([str(c) for c in cmd], env=fl.env({"GT_TEST_STOP_AT": phase}), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    t0, reached = time.time(), False
    while time.time() - t0 < timeout and p.poll() is None and not reached:
        ranks, stopped = rank_pids(p.pid)
        reached = bool(stopped) and rank in ranks
        time.sleep(0.02)
    if reached:
        os.kill(ranks[rank], sig)
    # Let every stopped process go on, also those that reach the point again (a later
    # checkpoint), until the job ends.
    while time.time() - t0 < timeout and p.poll() is None:
        for pid in rank_pids(p.pid)[1]:
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)
    try:
        out, err = p.communicate(timeout=5)
        rc, timed_out = p.returncode, False
    except subprocess.TimeoutExpired:
        tl.kill_group(p)
        out, err = p.communicate()
        rc, timed_out = None, True
    return tl.Result(cmd, rc, out, err, time.time() - t0, timed_out), reached


def test_signals(ck, train, d, tokens):
    corpus = os.path.join(d, "corpus.txt")
    cases = (  # phase, data, ranks' signal target, signal, what
        ("start", tokens, 0, signal.SIGINT, "starting (RUN just created and locked)"),
        ("tokenize", corpus, 0, signal.SIGTERM, "tokenizing a text"),
        ("tokenize", corpus, 1, signal.SIGHUP, "waiting for rank 0 to tokenize"),
        ("write", corpus, 0, signal.SIGTERM, "writing RUN/vocab.h5"),
        ("load", tokens, 0, signal.SIGINT, "reading and checking the data"))
    for i, (phase, data, rank, sig, what) in enumerate(cases):
        what = "signals: %s to rank %d while %s" % (signal.Signals(sig).name, rank, what)
        parent = os.path.join(d, "sig%d" % i)
        cmd = tl.mpirun(2, train, "--data", data, "--out", os.path.join(parent, "new"), "--steps", "3",
                        "--vocab-size", "300", *MODEL)
        r, reached = signal_in_phase(cmd, phase, rank, sig)
        if not ck.ok(reached, what + ": the phase was reached", r.describe()):
            continue
        ck.ok(not r.timed_out and r.rc == 128 + sig and r.secs < 30,
              what + ": the job ends by that signal at once (%.1f s)" % r.secs, r.describe())
        ck.ok(rank != 0 or "stopped by a signal while" in r.err, what + ": rank 0 says what it was doing", r.err[-600:])
        left = [os.path.relpath(os.path.join(w, f), parent) for w, _, fs in os.walk(parent) for f in fs]
        if rank == 0:
            ck.ok(not os.path.exists(parent), what + ": no temp file, and the RUN it created (and its parent) is gone",
                  str(left))
        else:  # rank 0 may finish its tokens before mpirun ends it: complete files, never a part of one
            ck.ok(set(left) <= {"new/vocab.h5", "new/tokens.h5"}, what + ": no temp file; what RUN holds is complete",
                  str(left))
            for f in left:
                with h5().File(os.path.join(parent, f), "r") as h:
                    ck.ok(h.attrs["format"].startswith("gpt-train/"), what + ": %s is complete" % f)
    # --resume: the run is as it was, and resumes.
    run = os.path.join(d, "sig-resume")
    r = gt(train, 2, "--data", tokens, "--out", run, "--steps", "2", "--ckpt-every", "1", *MODEL)
    if not ck.ok(r.rc == 0, "signals: a run to resume", r.describe()):
        return
    before = {n: file_sha(os.path.join(run, n)) for n in os.listdir(run) if n.startswith("ckpt-") or n == "latest"}
    cmd = tl.mpirun(2, train, "--data", tokens, "--out", run, "--resume", "--steps", "4")
    r, reached = signal_in_phase(cmd, "load", 0, signal.SIGTERM)
    after = {n: file_sha(os.path.join(run, n)) for n in os.listdir(run) if n.startswith("ckpt-") or n == "latest"}
    ck.ok(reached and r.rc == 128 + signal.SIGTERM and after == before and not glob.glob(os.path.join(run, "*tmp*")),
          "signals: SIGTERM while a --resume reads its data: it ends, the checkpoints are untouched", r.describe())
    # Checkpointing (training: deferred): the checkpoint being written completes, the run stops after
    # the next step with one more, exit 0, and resumes.
    r, reached = signal_in_phase(cmd, "write", 0, signal.SIGTERM)
    ck.ok(reached and r.rc == 0 and "stopped by SIGTERM after step 4" in r.out and latest(run) == "ckpt-00000004.h5"
          and not glob.glob(os.path.join(run, "*tmp*")),
          "signals: SIGTERM while a checkpoint is written: it completes, the run stops at the end of the next step "
          "with one more (exit 0)", r.describe() + r.out[-500:])
    r = gt(train, 2, "--data", tokens, "--out", run, "--resume", "--steps", "5", *MODEL)
    ck.ok(r.rc == 0 and latest(run) == "ckpt-00000005.h5", "signals: ... and the run resumes", r.describe())


# ---------------------------------------------------------------- reader
READER = r"""
import sys, time, h5py
path, mode = sys.argv[1], sys.argv[2]
if mode == "hold":      # opened once, as docs/attention.md shows, and kept open
    f = h5py.File(path, "r", libver="latest", swmr=True)
    print("open", flush=True)
    time.sleep(120)
else:                   # reopened on every poll, 50 times a second
    print("open", flush=True)
    while True:
        try:
            with h5py.File(path, "r", libver="latest", swmr=True) as f:
                f["step"].refresh()
        except Exception:
            pass
        time.sleep(0.02)
"""


def crashed_run(train, d, name, tokens, *extra):
    """A run with an attention record every step and checkpoints at 4 and 8, then made to look
    killed after step 8 but before its checkpoint: RUN/latest names step 4, records 5-8 stay."""
    run = os.path.join(d, name)
    r = gt(train, 2, "--data", tokens, "--out", run, "--steps", "8", "--ckpt-every", "4", "--attn-every", "1", *MODEL,
           *extra)
    if r.rc != 0:
        return None, r
    os.remove(os.path.join(run, "ckpt-00000008.h5"))
    with open(os.path.join(run, "latest"), "w") as f:
        f.write("ckpt-00000004.h5\n")
    return run, r


def attn_steps(path):
    with h5().File(path, "r", libver="latest", swmr=True) as f:
        return [int(x) for x in f["step"][()]], f["attention"].dtype.itemsize


def test_reader(ck, train, d, tokens):
    run, r = crashed_run(train, d, "read", tokens)
    if not ck.ok(run is not None, "reader: a run with attention records", r.describe()):
        return
    path = os.path.join(run, "attention.h5")
    readers = []
    for mode in ("hold", "poll"):
        p = subprocess.Popen([sys.executable, "-c", READER, path, mode], stdout=subprocess.PIPE, text=True)
        readers.append(p)
        ck.ok(p.stdout.readline().strip() == "open", "reader: an h5py reader (%s) has attention.h5 open" % mode)
    try:
        r = gt(train, 2, "--data", tokens, "--out", run, "--resume", "--steps", "10", timeout=120)
        ok = ck.ok(r.rc == 0, "reader: --resume works while h5py readers hold attention.h5 (swmr=True, and one "
                   "reopening it every 20 ms)", r.describe())
        if ok:
            steps, _ = attn_steps(path)
            ck.ok(steps == list(range(1, 11)), "reader: ... records 5-8 of the crashed run were dropped, 5-10 "
                  "written once", str(steps))
        ck.ok(all(p.poll() is None for p in readers), "reader: the readers are unharmed (still running)")
    finally:
        for p in readers:
            p.kill()
            p.wait()
    # --attn-every 0 on the resume of such a run: the records past the checkpoint go too.
    run, r = crashed_run(train, d, "read0", tokens)
    if ck.ok(run is not None, "reader: another crashed run", r.describe()):
        r = gt(train, 2, "--data", tokens, "--out", run, "--resume", "--steps", "6", "--attn-every", "0", timeout=120)
        steps = attn_steps(os.path.join(run, "attention.h5"))[0] if r.rc == 0 else None
        ck.ok(r.rc == 0 and steps == [1, 2, 3, 4], "reader: --resume --attn-every 0 drops the records past the "
              "checkpoint anyway", "%s\n%s" % (steps, r.describe()))
    # --attn-dtype on the resume of a float16 run: refused when it asks for the other dtype;
    # without it the file's dtype stays, and /config says so.
    run, r = crashed_run(train, d, "read16", tokens, "--attn-dtype", "float16")
    if ck.ok(run is not None, "reader: a float16 run", r.describe()):
        before = file_sha(os.path.join(run, "attention.h5"))
        r = gt(train, 2, "--data", tokens, "--out", run, "--resume", "--steps", "6", "--attn-dtype", "float32")
        one_error(ck, "reader: --attn-dtype float32 on the resume of a float16 run is refused", r, 1,
                  "--attn-dtype float32", "float16 records")
        ck.ok(file_sha(os.path.join(run, "attention.h5")) == before, "reader: ... and attention.h5 is untouched")
        r = gt(train, 2, "--data", tokens, "--out", run, "--resume", "--steps", "6")
        with h5().File(os.path.join(run, "ckpt-00000006.h5"), "r") as f:
            dtype = f["config"].attrs["attn_dtype"]
        ck.ok(r.rc == 0 and dtype == "float16" and attn_steps(os.path.join(run, "attention.h5"))[1] == 2,
              "reader: without the flag the run goes on in float16, and /config records float16", r.describe())


# ---------------------------------------------------------------- sbatch
def test_sbatch(ck, train, d, tokens):
    """jobs/train.sbatch's wait policy, run outside Slurm with a job's variables and a stand-in
    for gpt-train that reports what it was given."""
    stub = os.path.join(d, "fake-gpt-train")
    with open(stub, "w") as f:
        f.write("#!/bin/sh\necho \"policy=${OMP_WAIT_POLICY:-unset} args=$*\" >> \"%s\"\n" % os.path.join(d, "seen"))
    os.chmod(stub, 0o755)
    script = os.path.join(tl.SRC, "jobs", "train.sbatch")
    cases = (("4 tasks x --threads 2 on 2 CPUs", {"SLURM_CPUS_ON_NODE": "2"}, "passive"),
             ("4 tasks x --threads 2 on 8 CPUs", {"SLURM_CPUS_ON_NODE": "8"}, "unset"),
             ("a policy the user set", {"SLURM_CPUS_ON_NODE": "2", "OMP_WAIT_POLICY": "active"}, "active"))
    for what, env, want in cases:
        if os.path.exists(os.path.join(d, "seen")):
            os.remove(os.path.join(d, "seen"))
        e = {"SLURM_NTASKS": "4", "SLURM_TASKS_PER_NODE": "4", "SLURM_CPUS_PER_TASK": "1", "LAUNCHER": "mpirun",
             "GPT_TRAIN_BIN": stub, "RUN": os.path.join(d, "sb-run"), **env}
        r = fl.run(["bash", script, "--threads", "2"], timeout=60, cwd=d, extra_env=e)
        seen = open(os.path.join(d, "seen")).read() if os.path.exists(os.path.join(d, "seen")) else ""
        ck.ok(r.rc == 0 and seen.count("policy=%s " % want) == 4,
              "sbatch: %s: the ranks get OMP_WAIT_POLICY %s" % (what, want), r.describe() + "\n" + seen)


    # no gpt-train to be found: one message, at once (die inside $(...) only left the subshell)
    r = fl.run(["bash", script], timeout=60, cwd=d,
               extra_env={"GT_BUILD": "", "GPT_TRAIN_BIN": "", "PATH": "/usr/bin:/bin", "RUN": os.path.join(d, "nb")})
    ck.ok(r.rc == 1 and "cannot find gpt-train" in r.err and "command not found" not in r.err + r.out
          and "launcher" not in r.out, "sbatch: without a gpt-train binary it stops at once with one message",
          r.describe())


# ---------------------------------------------------------------- solo
def no_banner(ck, what, r, *needles):
    one_error(ck, what, r, 1, *needles)
    ck.ok("MPI_ABORT" not in r.out + r.err, what + ": no MPI_ABORT banner (the ranks agreed)", r.describe())


def test_solo(ck, train, d, tokens):
    corpus = os.path.join(d, "corpus.txt")
    runs = [os.path.join(d, "solo%d" % i) for i in range(3)]
    r = gt(train, 2, "--data", corpus, "--out", runs[0], "--pattern", "(a", *MODEL)
    no_banner(ck, "solo: a --pattern that is no regex", r, "--pattern", "(a", "invalid regex")
    aaa = os.path.join(d, "aaa.txt")
    with open(aaa, "w") as f:
        f.write("hello world\n" * 200 + "a" * 30000 + "\n")
    r = gt(train, 2, "--data", aaa, "--out", runs[1], "--pattern", r"(?:(a+)+c)|[a-z]+|\s+|.", *MODEL, timeout=120)
    no_banner(ck, "solo: a --pattern that exhausts PCRE2's match limit", r, "(?:(a+)+c)", "match limit")
    # rank 0 alone short of memory while it trains the tokenizer
    big = os.path.join(d, "big.txt")
    with open(big, "wb") as f:
        f.write(b"x" * (64 << 20))
    cmd = ["sh", "-c", 'if [ "$OMPI_COMM_WORLD_RANK" = 0 ]; then ulimit -v 400000; fi; exec "$@"', "sh", train,
           "--data", big, "--out", runs[2], *MODEL]
    r = gt(cmd[0], 2, *cmd[1:], timeout=120)
    no_banner(ck, "solo: rank 0 out of memory in the tokenizer", r, "out of memory")
    os.remove(big)
    ck.ok(not any(os.path.exists(p) for p in runs), "solo: no RUN is left behind", str(os.listdir(d)))


# ---------------------------------------------------------------- stdout
def test_stdout(ck, train, d, tokens):
    with open("/dev/full", "wb") as full:
        p = subprocess.run([train, "--help"], stdout=full, stderr=subprocess.PIPE, env=fl.env(), timeout=60)
        err = p.stderr.decode(errors="replace")
        ck.ok(p.returncode == 2 and len(tl.error_lines(err)) == 1 and "stdout" in err,
              "stdout: gpt-train --help > /dev/full: exit 2, one line naming stdout", "rc %s: %s" % (p.returncode, err))
        run = os.path.join(d, "full")
        p = subprocess.run([train, "--data", tokens, "--out", run, "--steps", "20", *MODEL], stdout=full,
                           stderr=subprocess.PIPE, env=fl.env(), timeout=120)
        err = p.stderr.decode(errors="replace")
        ck.ok(p.returncode == 2 and len(tl.error_lines(err)) == 1 and "writing to stdout failed" in err
              and "train.log" in err, "stdout: a run > /dev/full: exit 2, one line naming stdout (train.log has "
              "every line)", "rc %s: %s" % (p.returncode, err))
    # | head: the reader goes; the run stops as on a signal, with a checkpoint, and resumes
    run = os.path.join(d, "piped")
    p = subprocess.Popen([train, "--data", tokens, "--out", run, "--steps", "1000000", "--ckpt-every", "1000000",
                          *MODEL], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=fl.env())
    for _ in range(40):
        p.stdout.readline()
    p.stdout.close()
    try:
        p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        tl.kill_group(p)
    err = p.stderr.read().decode(errors="replace")
    log = open(os.path.join(run, "train.log")).read() if os.path.exists(os.path.join(run, "train.log")) else ""
    m = re.search(r"stopped by SIGPIPE after step (\d+); checkpoint (\S+)\.", log)
    ck.ok(p.returncode == 0 and not tl.error_lines(err) and m and os.path.exists(m.group(2)),
          "stdout: a run | head stops at the closed pipe with a checkpoint, exit 0, quietly",
          "rc %s, stderr %r, log tail %r" % (p.returncode, err[-300:], log[-300:]))
    if m:
        step = int(m.group(1))
        r = gt(train, 1, "--data", tokens, "--out", run, "--resume", "--steps", step + 2)
        ck.ok(r.rc == 0 and os.path.exists(os.path.join(run, "ckpt-%08d.h5" % (step + 2))),
              "stdout: ... and --resume continues it", r.describe())


# ---------------------------------------------------------------- stale
def test_stale(ck, train, d, tokens):
    corpus = os.path.join(d, "corpus.txt")
    run = os.path.join(d, "stale")
    cmd = [train, "--data", corpus, "--out", run, "--steps", "4", "--ckpt-every", "2", "--vocab-size", "300", *MODEL]
    # kill -9 while RUN/vocab.h5 is written (GT_TEST_STOP_AT stops it there)
    p = fl.spawn(cmd, os.path.join(d, "stale.log"), extra_env={"GT_TEST_STOP_AT": "write"})
    left = lambda: [n for n in os.listdir(run) if ".tmp" in n] if os.path.isdir(run) else []  # noqa: E731
    stopped = wait_for(lambda: any(n.startswith("vocab.h5.tmp-") for n in left()), 60)
    tl.kill_group(p)
    ck.ok(stopped, "stale: kill -9 while RUN/vocab.h5 is written leaves its temporary file", str(left()))
    mine = os.path.join(run, "notes.tmp")
    with open(mine, "w") as f:
        f.write("mine\n")
    r = fl.run(cmd, timeout=120)
    ck.ok(r.rc == 0 and left() == ["notes.tmp"], "stale: the next run on RUN removes it, and keeps the user's "
          "notes.tmp", "%s\n%s" % (left(), r.describe()))
    # a metrics.csv row cut short (a full disk) past the checkpoint: its step reads as "1"
    with open(os.path.join(run, "metrics.csv"), "a") as f:
        f.write("1")
    r = fl.run([train, "--data", corpus, "--out", run, "--resume", "--steps", "6"], timeout=120)
    rows = [l.split(",") for l in open(os.path.join(run, "metrics.csv")).read().splitlines()[1:]]
    steps = [int(x[0]) for x in rows]
    ck.ok(r.rc == 0 and steps == sorted(set(steps)) and steps[-1] == 6 and all(len(x) == len(rows[0]) for x in rows),
          "stale: --resume drops the cut row of metrics.csv (steps %s)" % steps, r.describe())


def main():
    bpe, train = tl.require("gpt-bpe", "gpt-train")
    parts = sys.argv[1:] or ["lock", "newdir", "inputs", "vocab", "resumecmd", "bigstep", "streak", "signals",
                             "reader", "sbatch", "solo", "stdout", "stale"]
    d = tl.tmpdir("gt-trainer-faults-")
    ck = tl.Checks("test_trainer_faults " + " ".join(parts))
    _, _, tokens = fl.make_tokens(bpe, d, 60000)
    for p in parts:
        t0 = time.time()
        if p == "vocab":
            test_vocab(ck, train, bpe, d, tokens)
        else:
            globals()["test_" + p](ck, train, d, tokens)
        print("%s: %.1f s" % (p, time.time() - t0), flush=True)
    tl.rmtree(d)
    ck.finish()


if __name__ == "__main__":
    main()
