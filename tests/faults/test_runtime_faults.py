#!/usr/bin/python3
"""test_runtime_faults.py - what a long training meets on a shared cluster, and what the user
must see then:

full disk   RUN on a small tmpfs (mount -t tmpfs -o size=...; skipped with the reason when
            mounting is not permitted). A checkpoint write that does not fit: exit 2 on every
            rank, one message naming the checkpoint path and the bytes needed, the previous
            checkpoint and RUN/latest intact, no temporary file left, and --resume works once
            there is space. An attention.h5 append that does not fit: the same, naming
            attention.h5, with the records already written still readable.
            (RLIMIT_FSIZE is not used: it breaks Open MPI's own shared-memory files.)
dead rank   one of 4 ranks killed with SIGKILL mid-training: every process of the job is gone
            within 30 s and the output names the lost rank (Open MPI's "process rank 2 ...
            exited on signal 9"); the newest checkpoint is intact. One rank that cannot open
            its data file (GT_FAULT_OPEN_RANK): exit 1 within 30 s, naming that rank.
NaN         a NaN gradient injected at step k (GT_FAULT_NAN_STEP=k, a test hook of gpt-train;
            GT_FAULT_NAN_LAYER=l puts it in block l): stops within step k with a message naming
            the step, NaN, and the layer and tensor, exit 2, the last good
            checkpoint (step k-1) kept and named; with --skip-bad-steps the run finishes, the
            skip is counted in the log, and every weight is finite.
exploding   a huge but finite loss: injected at step k (GT_FAULT_EXPLODE_STEP=k scales ln_f for
            that step: logits x100), it stops within step k naming the step, "exploding" and the
            tensor with the largest gradient, exit 2, checkpoint k-1 kept; with --skip-bad-steps
            the run skips it and finishes. A real divergence (--lr 5, no clipping) is caught the
            same way; with --skip-bad-steps it gives up after 20 bad steps in a row, saying why.
"""
import os
import re
import shutil
import signal
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


def latest_of(run):
    try:
        with open(os.path.join(run, "latest")) as f:
            return os.path.basename(f.read().strip())
    except OSError:
        return None


def full_disk(ck, d, train, tokens):
    # Checkpoints: each is ~138 KB for this model; 220 KiB holds one and the small files.
    with fl.Tmpfs(os.path.join(d, "fs-ckpt"), "220k") as fs:
        if not fs.mounted:
            print("SKIP full disk: cannot mount a tmpfs here (%s)" % fs.why)
            return
        run = os.path.join(fs.path, "run")
        r = fl.run(tl.mpirun(2, train, "--data", tokens, "--out", run, "--steps", "5", "--ckpt-every", "1",
                             "--keep-ckpts", "3", *MODEL), timeout=120)
        what = "full disk at a checkpoint"
        ck.ok(not r.crashed(), what + ": no crash, no hang", r.describe())
        ck.ok(r.rc == 2, what + ": exit status 2 (runtime failure)", r.describe())
        errs = r.error_lines()
        ck.ok(len(errs) == 1, what + ": one error message (got %d)" % len(errs), r.describe())
        msg = errs[0] if errs else ""
        m = re.search(r"ckpt-(\d{8})\.h5", msg)
        ck.ok(m is not None and re.search(r"\d+ bytes", msg) is not None,
              what + ": the message names the checkpoint path and the bytes needed", msg)
        names = sorted(os.listdir(run))
        ck.ok(not [n for n in names if ".tmp" in n], what + ": no temporary file left", str(names))
        lt = latest_of(run)
        ck.ok(lt is not None and fl.ckpt_step(os.path.join(run, lt)) == int(lt[5:13]),
              what + ": RUN/latest names the previous checkpoint, intact", "latest %s, files %s" % (lt, names))
        if m and lt:
            ck.ok(int(lt[5:13]) == int(m.group(1)) - 1, what + ": the previous checkpoint is the step before",
                  "%s vs %s" % (lt, msg))
        # With space again (a bigger tmpfs holds the same run), --resume finishes the run.
        keep = os.path.join(d, "saved-run")
        shutil.copytree(run, keep)
    r = fl.run(tl.mpirun(2, train, "--data", tokens, "--out", keep, "--steps", "5", "--ckpt-every", "1",
                         "--keep-ckpts", "3", "--resume", *MODEL), timeout=120)
    ck.ok(r.rc == 0 and latest_of(keep) == "ckpt-00000005.h5", "full disk: --resume finishes once there is space",
          r.describe())

    # Attention records: each ~32 KiB uncompressed (2 layers, 4 heads, 32x32).
    with fl.Tmpfs(os.path.join(d, "fs-attn"), "200k") as fs:
        if not fs.mounted:
            return
        run = os.path.join(fs.path, "run")
        r = fl.run(tl.mpirun(2, train, "--data", tokens, "--out", run, "--steps", "300", "--ckpt-every", "1000",
                             "--attn-every", "1", "--n-layer", "2", "--n-head", "4", "--n-embd", "16",
                             "--block-size", "32", "--batch-size", "2", "--eval-batches", "1", "--log-every", "50"),
                   timeout=120)
        what = "full disk at an attention record"
        ck.ok(not r.crashed(), what + ": no crash, no hang", r.describe())
        ck.ok(r.rc == 2, what + ": exit status 2", r.describe())
        errs = r.error_lines()
        ck.ok(len(errs) == 1 and "attention.h5" in errs[0] and re.search(r"\d+ bytes", errs[0]),
              what + ": one message naming attention.h5 and the bytes needed", r.describe())
        try:
            with h5().File(os.path.join(run, "attention.h5"), "r", swmr=True) as f:
                steps = list(f["step"][()])
                n_att = f["attention"].shape[0]
            ok = len(steps) > 0 and steps == list(range(1, len(steps) + 1)) and n_att >= len(steps)
            detail = "steps %s, records %d" % (steps[-3:], n_att)
        except Exception as e:  # noqa: BLE001
            ok, detail = False, str(e)
        ck.ok(ok, what + ": the records written so far stay readable", detail)


def rank_pids(sid):
    ranks = {}
    for pid in tl.session_pids(sid):
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        for e in env:
            if e.startswith(b"OMPI_COMM_WORLD_RANK="):
                ranks[int(e.split(b"=")[1])] = pid
    return ranks


def dead_rank(ck, d, train, tokens):
    run = os.path.join(d, "dead")
    log = os.path.join(d, "dead.log")
    p = fl.spawn(tl.mpirun(4, train, "--data", tokens, "--out", run, "--steps", "1000000", "--ckpt-every", "200",
                           *MODEL[:-4], "--log-every", "100"), log)
    what = "dead rank (SIGKILL to rank 2 of 4)"
    deadline = time.time() + 60
    while time.time() < deadline and not latest_of(run) and p.poll() is None:
        time.sleep(0.05)
    ranks = rank_pids(p.pid)
    if not ck.ok(p.poll() is None and len(ranks) == 4, what + ": training running on 4 ranks",
                 "ranks %s, rc %s" % (ranks, p.poll())):
        tl.kill_group(p)
        return
    time.sleep(0.3)
    t0 = time.time()
    os.kill(ranks[2], signal.SIGKILL)
    while time.time() - t0 < 30 and tl.session_pids(p.pid):
        time.sleep(0.05)
    secs = time.time() - t0
    left = tl.session_pids(p.pid)
    ck.ok(not left, what + ": every process gone within 30 s (took %.1f s)" % secs, "still alive: %s" % left)
    tl.kill_group(p)
    with open(log, errors="replace") as f:
        out = f.read()
    ck.ok(p.returncode != 0, what + ": mpirun exits non-zero", "rc %s" % p.returncode)
    ck.ok(re.search(r"rank 2\b", out) is not None, what + ": the output names the lost rank 2", out[-1500:])
    lt = latest_of(run)
    ck.ok(lt is not None and isinstance(fl.ckpt_step(os.path.join(run, lt)), int),
          what + ": the newest checkpoint is intact", "latest %s" % lt)
    print("dead rank: all processes gone %.1f s after the kill" % secs)

    t0 = time.time()
    r = fl.run(tl.mpirun(4, train, "--data", tokens, "--out", os.path.join(d, "norank"), "--steps", "5", *MODEL),
               timeout=30, extra_env={"GT_FAULT_OPEN_RANK": "3"})
    what = "rank 3 cannot open its data file"
    ck.ok(not r.timed_out and time.time() - t0 < 30, what + ": every rank exits within 30 s", r.describe())
    errs = r.error_lines()
    ck.ok(r.rc == 1 and len(errs) == 1 and "rank 3" in errs[0], what + ": exit 1, one message naming rank 3",
          r.describe())


def stopped_at_bad_step(ck, d, train, tokens, name, k, steps, env, needle):
    """A 2-rank run with a fault injected at step k (env) must stop within step k: exit 2, no
    crash, one message naming step k, `needle` and the last good checkpoint, which stays
    RUN/latest, with nothing saved from step k on. Returns the message."""
    run = os.path.join(d, name)
    r = fl.run(tl.mpirun(2, train, "--data", tokens, "--out", run, "--steps", str(steps), "--ckpt-every", "1", *MODEL),
               timeout=120, extra_env=env)
    what = "%s at step %d" % (needle, k)
    ck.ok(not r.crashed(), what + ": no crash, no hang", r.describe())
    ck.ok(r.rc == 2, what + ": exit status 2", r.describe())
    errs = r.error_lines()
    msg = errs[0] if errs else ""
    ck.ok(len(errs) == 1 and ("step %d" % k) in msg and needle in msg,
          what + ": one message naming step %d and %s" % (k, needle), r.describe())
    ck.ok("ckpt-%08d.h5" % (k - 1) in msg, what + ": the message names the last good checkpoint", msg)
    ck.ok(latest_of(run) == "ckpt-%08d.h5" % (k - 1) and fl.ckpt_step(os.path.join(run, latest_of(run))) == k - 1,
          what + ": RUN/latest is the intact checkpoint of step %d" % (k - 1), str(os.listdir(run)))
    ck.ok(not [n for n in os.listdir(run) if n.startswith("ckpt-") and int(n[5:13]) >= k],
          what + ": nothing saved from step %d on" % k, str(os.listdir(run)))
    return run, msg


def nan_step(ck, d, train, tokens):
    k = 3
    _, msg = stopped_at_bad_step(ck, d, train, tokens, "nan", k, 6, {"GT_FAULT_NAN_STEP": str(k)}, "NaN")
    ck.ok("transformer.wte.weight" in msg, "NaN at step %d: the message names the tensor with the NaN gradient" % k,
          msg)

    # In a block: GT_FAULT_NAN_LAYER=l poisons block l's attention weight gradient.
    run3 = os.path.join(d, "nan-layer")
    r = fl.run(tl.mpirun(2, train, "--data", tokens, "--out", run3, "--steps", "4", "--ckpt-every", "1",
                         *(MODEL[:1] + ["2"] + MODEL[2:])), timeout=120,
               extra_env={"GT_FAULT_NAN_STEP": "2", "GT_FAULT_NAN_LAYER": "1"})
    errs = r.error_lines()
    ck.ok(r.rc == 2 and len(errs) == 1 and "step 2" in errs[0] and "layer 1" in errs[0]
          and "transformer.h.1.attn.c_attn.weight" in errs[0],
          "NaN gradient in block 1 at step 2: the message names the step, the layer and the tensor", r.describe())

    run2 = os.path.join(d, "nan-skip")
    r = fl.run(tl.mpirun(2, train, "--data", tokens, "--out", run2, "--steps", "6", "--ckpt-every", "3",
                         "--skip-bad-steps", *MODEL), timeout=120, extra_env={"GT_FAULT_NAN_STEP": str(k)})
    what = "NaN gradient at step %d with --skip-bad-steps" % k
    ck.ok(r.rc == 0, what + ": the run finishes", r.describe())
    with open(os.path.join(run2, "train.log"), errors="replace") as f:
        log = f.read()
    ck.ok(re.search(r"step %d\b.*skipped.*1 skipped" % k, log) is not None, what + ": the skip is logged and counted",
          log[-1200:])
    try:
        import numpy as np
        with h5().File(os.path.join(run2, "ckpt-00000006.h5"), "r") as f:
            finite = all(np.isfinite(f["model"][n][()]).all() for n in f["model"].keys())
            skipped = int(f["state"].attrs.get("skipped_steps", -1))
        ck.ok(finite, what + ": every weight finite at the end")
        ck.ok(skipped == 1, what + ": the checkpoint counts 1 skipped step", "skipped_steps = %s" % skipped)
    except Exception as e:  # noqa: BLE001
        ck.ok(False, what + ": final checkpoint readable", str(e))


def exploding_loss(ck, d, train, tokens):
    k = 13
    what = "exploding loss at step %d" % k
    run, msg = stopped_at_bad_step(ck, d, train, tokens, "explode", k, 16, {"GT_FAULT_EXPLODE_STEP": str(k)},
                                   "exploding")
    ck.ok("largest gradient: transformer." in msg, what + ": the message names the tensor with the largest gradient",
          msg)
    # --resume then goes on past the (one-off) spike: the injection is not repeated
    r = fl.run(tl.mpirun(2, train, "--data", tokens, "--out", run, "--resume"), timeout=120)
    ck.ok(r.rc == 0 and fl.ckpt_step(os.path.join(run, "ckpt-00000016.h5")) == 16,
          what + ": --resume from the kept checkpoint finishes", r.describe())

    run2 = os.path.join(d, "explode-skip")
    r = fl.run(tl.mpirun(2, train, "--data", tokens, "--out", run2, "--steps", "16", "--skip-bad-steps", *MODEL),
               timeout=120, extra_env={"GT_FAULT_EXPLODE_STEP": str(k)})
    what = "exploding loss at step %d with --skip-bad-steps" % k
    ck.ok(r.rc == 0, what + ": the run finishes", r.describe())
    with open(os.path.join(run2, "train.log"), errors="replace") as f:
        log = f.read()
    ck.ok(re.search(r"step %d: .*exploding.*update skipped.*1 skipped" % k, log) is not None,
          what + ": the skip is logged and counted", log[-1200:])

    # A real divergence, no injection: a learning rate far too high and no clipping.
    wild = ["--lr", "5", "--grad-clip", "0", "--warmup", "0", "--lr-schedule", "constant"]
    run3 = os.path.join(d, "diverge")
    r = fl.run(tl.mpirun(2, train, "--data", tokens, "--out", run3, "--steps", "60", *wild, *MODEL), timeout=120)
    errs = r.error_lines()
    ck.ok(r.rc == 2 and len(errs) == 1 and "exploding" in errs[0] and "--lr" in errs[0],
          "a real divergence (--lr 5): exit 2, one message saying the loss is exploding and suggesting a lower --lr",
          r.describe())
    run4 = os.path.join(d, "diverge-skip")
    r = fl.run(tl.mpirun(2, train, "--data", tokens, "--out", run4, "--steps", "60", "--skip-bad-steps", *wild,
                         *MODEL), timeout=120)
    errs = r.error_lines()
    ck.ok(r.rc == 2 and len(errs) == 1 and "21 bad steps in a row" in errs[0],
          "a real divergence with --skip-bad-steps: gives up after 20 skipped steps in a row, saying so",
          r.describe())


def main():
    bpe, train = tl.require("gpt-bpe", "gpt-train")
    d = tl.tmpdir("gt-runtime-")
    ck = tl.Checks("test_runtime_faults")
    _, _, tokens = fl.make_tokens(bpe, d, 40000)
    for part in (full_disk, dead_rank, nan_step, exploding_loss):
        t0 = time.time()
        part(ck, d, train, tokens)
        print("%s: %.1f s" % (part.__name__, time.time() - t0), flush=True)
    tl.rmtree(d)
    ck.finish()


if __name__ == "__main__":
    main()
