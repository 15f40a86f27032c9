#!/usr/bin/python3
"""test_crash_resume.py - kill -9 a 2-rank training at random moments, then --resume it:
the run must always end with weights (and AdamW moments, and the attention records)
bit-identical to an uninterrupted run, and no torn file may ever be taken for a checkpoint.

Each trial starts a fresh run (mpirun --oversubscribe -np 2, a tiny model, a checkpoint and
an attention record every step so that writes take much of the time) and kills the whole job
(mpirun and both ranks, SIGKILL) once or twice before letting a resume finish. Kill moments
cycle through three kinds:
  random   a uniformly random time into the run;
  ckpt     the instant a checkpoint's temporary file appears (the write is under way);
  attn     the instant attention.h5 changes (an append is under way).
After every kill: each RUN/ckpt-*.h5 must open and hold every tensor; RUN/latest must name the
newest of them (or the one before, when the kill fell between a checkpoint's rename and the
update of RUN/latest); gpt-sample must load RUN; the resume must start from the newest
complete checkpoint either way. With no checkpoint at all (killed before the first one) the run is
started again without --resume, as a user would; a checkpoint without RUN/latest (killed between
the first rename and the first update of latest) is resumed, as gpt-train's message asks.

GT_CRASH_TRIALS (default 20) and GT_CRASH_SEED (default 1) set the number and the seed;
tests/faults/crash_soak.sh runs many more.
"""
import glob
import os
import random
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import faultlib as fl  # noqa: E402

TRIALS = int(os.environ.get("GT_CRASH_TRIALS", "20"))
SEED = int(os.environ.get("GT_CRASH_SEED", "1"))
STEPS = int(os.environ.get("GT_CRASH_STEPS", "30"))
NP = 2
ARGS = ["--steps", str(STEPS), "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16",
        "--batch-size", "4", "--ckpt-every", "1", "--keep-ckpts", "2", "--attn-every", "1", "--eval-every", "10",
        "--eval-batches", "2", "--log-every", "5", "--dropout", "0.1", "--seed", "5"]
CKPT_RE = re.compile(r"^ckpt-(\d{8})\.h5$")


def h5():
    import h5py
    return h5py


def read_ckpt(path):
    """All tensors and the step of a checkpoint; raises if anything is unreadable."""
    with h5().File(path, "r") as f:
        out = {"step": int(f.attrs["step"])}
        for grp in ("model", "optimizer/m", "optimizer/v"):
            for k in f[grp].keys():
                out[grp + "/" + k] = f[grp][k][()].tobytes()
        return out


def read_attn(path):
    with h5().File(path, "r") as f:
        return list(f["step"][()]), f["attention"][()].tobytes()


def complete_ckpts(run):
    """{step: path} of the checkpoints in run that are complete; raises AssertionError on a torn one."""
    found = {}
    for name in os.listdir(run):
        m = CKPT_RE.match(name)
        if not m:
            continue
        p = os.path.join(run, name)
        try:
            c = read_ckpt(p)
        except Exception as e:  # noqa: BLE001
            raise AssertionError("torn file under a checkpoint's name: %s (%s)" % (p, e))
        if c["step"] != int(m.group(1)):
            raise AssertionError("%s holds step %d" % (p, c["step"]))
        found[c["step"]] = p
    return found


def wait_for_moment(p, run, kind, rng, budget):
    """Returns when the job should be killed (or when it ended by itself)."""
    t0 = time.time()
    if kind == "random":
        until = t0 + rng.uniform(0.2, 0.9 * budget)
        while time.time() < until and p.poll() is None:
            time.sleep(0.005)
        return
    skip = rng.randrange(0, STEPS // 2)  # let some writes pass first
    seen, last_sig = 0, None
    while p.poll() is None and time.time() - t0 < budget * 3:
        if kind == "ckpt":
            tmp = glob.glob(os.path.join(run, "ckpt-*.tmp*"))
            if tmp:
                seen += 1
                if seen > skip:
                    return
                while glob.glob(os.path.join(run, "ckpt-*.tmp*")) and p.poll() is None:
                    time.sleep(0.0005)
        else:
            try:
                st = os.stat(os.path.join(run, "attention.h5"))
                sig = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                sig = None
            if sig and sig != last_sig:
                if last_sig is not None:
                    seen += 1
                    if seen > skip:
                        return
                last_sig = sig
        time.sleep(0.0005)


def main():
    bpe, train = tl.require("gpt-bpe", "gpt-train")
    sample = tl.tool("gpt-sample")
    d = tl.tmpdir("gt-crash-")
    ck = tl.Checks("test_crash_resume")
    rng = random.Random(SEED)
    _, _, tokens = fl.make_tokens(bpe, d, 60000)

    # The uninterrupted run everything is compared with.
    ref_run = os.path.join(d, "reference")
    t0 = time.time()
    r = fl.run(tl.mpirun(NP, train, "--data", tokens, "--out", ref_run, *ARGS), timeout=300)
    ref_secs = time.time() - t0
    if r.rc != 0:
        print("reference run failed\n" + r.describe())
        sys.exit(1)
    ref = read_ckpt(os.path.join(ref_run, "ckpt-%08d.h5" % STEPS))
    ref_attn = read_attn(os.path.join(ref_run, "attention.h5"))
    print("reference run: %d steps in %.1f s" % (STEPS, ref_secs), flush=True)

    kinds = ["random", "ckpt", "attn"]
    tally = {"kills": 0, "no_ckpt_yet": 0, "tmp_left": 0, "finished_before_kill": 0, "latest_behind": 0}
    for trial in range(TRIALS):
        kind = kinds[trial % 3]
        run = os.path.join(d, "run-%d" % trial)
        n_kills = 1 + (trial % 4 == 3)
        label = "trial %d (%s kill x%d)" % (trial, kind, n_kills)
        resumed_ok = True
        for k in range(n_kills + 1):
            # A kill between the first checkpoint's rename and the first write of RUN/latest
            # leaves a checkpoint without latest: gpt-train then asks for --resume, as a user would give.
            has_latest = os.path.exists(os.path.join(run, "latest")) or bool(glob.glob(os.path.join(run, "ckpt-*.h5")))
            cmd = tl.mpirun(NP, train, "--data", tokens, "--out", run, *ARGS) + (["--resume"] if has_latest else [])
            log = os.path.join(d, "log-%d-%d.txt" % (trial, k))
            if k == n_kills:  # the last one runs to the end
                r = fl.run(cmd, timeout=300)
                resumed_ok = ck.ok(r.rc == 0, label + ": the final run finishes", r.describe())
                if has_latest and r.rc == 0:
                    m = re.search(r"resuming from (\S+) at step (\d+)", r.out + r.err) or \
                        re.search(r"checkpoint (\S+) is already at step (\d+)", r.out + r.err)
                    ck.ok(m is not None and int(m.group(2)) == newest,
                          label + ": resume starts from the newest complete checkpoint (step %s)" % newest,
                          "resume said: %s" % (m.group(0) if m else (r.out + r.err)[-800:]))
                break
            p = fl.spawn(cmd, log)
            wait_for_moment(p, run, kind, rng, ref_secs)
            if p.poll() is not None:
                tally["finished_before_kill"] += 1
            tl.kill_group(p)
            p.wait()
            tally["kills"] += 1
            if glob.glob(os.path.join(run, "*.tmp*")):
                tally["tmp_left"] += 1
            try:
                found = complete_ckpts(run) if os.path.isdir(run) else {}
                torn = None
            except AssertionError as e:
                found, torn = {}, str(e)
            ck.ok(torn is None, label + ": no torn file under a checkpoint name after kill %d" % (k + 1), str(torn))
            newest = max(found) if found else None
            if os.path.exists(os.path.join(run, "latest")):
                with open(os.path.join(run, "latest")) as f:
                    name = os.path.basename(f.read().strip())
                m = CKPT_RE.match(name)
                ck.ok(m is not None and int(m.group(1)) in found,
                      label + ": RUN/latest names a complete checkpoint after kill %d" % (k + 1),
                      "latest = %r, complete: %s" % (name, sorted(found)))
                # RUN/latest is updated right after the rename of a new checkpoint: a kill between
                # the two leaves it one checkpoint behind, naming a complete older one. The resume
                # must still start from the newest complete checkpoint (checked below).
                ck.ok(m is not None and int(m.group(1)) in sorted(found)[-2:],
                      label + ": RUN/latest names the newest complete checkpoint (or, killed between the "
                      "rename and the update of latest, the one before)",
                      "latest = %r, complete: %s" % (name, sorted(found)))
                if m is not None and int(m.group(1)) != max(found):
                    tally["latest_behind"] += 1
                if sample and trial % 3 == 0:
                    s = fl.run([sample, "--checkpoint", run, "--prompt", "The", "--max-new-tokens", "3"], timeout=60)
                    ck.ok(s.rc == 0, label + ": gpt-sample loads the run after the kill", s.describe())
            elif found:
                tally["latest_behind"] += 1
                ck.ok(len(found) == 1, label + ": without RUN/latest only the first checkpoint exists (killed between "
                      "its rename and the first update of latest)", str(sorted(found)))
            else:
                tally["no_ckpt_yet"] += 1
        if not resumed_ok:
            continue
        final = os.path.join(run, "ckpt-%08d.h5" % STEPS)
        try:
            got = read_ckpt(final)
        except Exception as e:  # noqa: BLE001
            ck.ok(False, label + ": final checkpoint readable", str(e))
            continue
        diff = sorted(k for k in ref if got.get(k) != ref[k])
        ck.ok(not diff, label + ": weights, moments and step bit-identical to the uninterrupted run",
              "differs: %s" % diff[:8])
        steps, att = read_attn(os.path.join(run, "attention.h5"))
        ck.ok(steps == ref_attn[0], label + ": attention.h5 has each step once, in order",
              "steps %s vs %s" % (steps, ref_attn[0]))
        ck.ok(att == ref_attn[1], label + ": attention records bit-identical to the uninterrupted run")
        shutil.rmtree(run, ignore_errors=True)

    print("kills: %(kills)d, of which before the first checkpoint: %(no_ckpt_yet)d, with a temporary file left "
          "(killed mid-write): %(tmp_left)d, between a rename and RUN/latest: %(latest_behind)d, run already "
          "over: %(finished_before_kill)d" % tally)
    ck.ok(tally["tmp_left"] > 0 or TRIALS < 6, "some kills landed in the middle of a checkpoint write", str(tally))
    tl.rmtree(d)
    ck.finish()


if __name__ == "__main__":
    main()
