#!/usr/bin/python3
"""test_io_faults.py - writing files when the writes fail, as a user on a full disk meets it:
every tool either finishes (exit 0) with exactly the right content, or stops with exit 2, one
message naming the output file and the reason, no output file and no temp file, and never a
crash (a signal, such as the SIGSEGV libhdf5 1.10 raised tearing down a file whose close had
failed).

full disk    the output directory on a small tmpfs, at sizes from a few pages to just above
             the file's size, so the failure lands in each phase HDF5 goes through (its chunk
             writes at a dataset's close, its metadata at the flush, the close itself);
             skipped, saying why, where mounting is not permitted.
size limit   RLIMIT_FSIZE (ulimit -f) from a fraction of the file's size to past it: a write
             beyond it fails with EFBIG (SIGXFSZ is ignored) and is reported like a full disk.
failing call tests/faults/failwrite.c (LD_PRELOAD) fails the k-th write-side system call on
             the temp file (pwrite, write, ftruncate, fsync, close, rename), for every k, with
             ENOSPC or EIO: every phase of writing, also those a tmpfs never reaches.

Tools: gpt-bpe train (vocab.h5), gpt-bpe encode (tokens.h5), gpt-sample --attn-out (the
generation file), gpt-eval --per-token (not under a size limit: Open MPI's MPI_Init itself fails
under one, before any code of ours runs). Exact content: an output written under a fault is
compared, dataset by dataset, with the same command's output on a healthy disk.

gpt_viz      gpt_viz.py --html (the explorer page) and --out (the PNGs and the GIF) on small
             tmpfs disks: exit 2 with one message naming the file that did not fit, no
             temporary file, every file there complete (byte for byte a healthy run's); or
             exit 0 with all of them. (It was exit 1, a PNG cut short or empty, the file unnamed.)

trainer      gpt-train on 2 ranks in text mode (RUN/vocab.h5, tokens.h5, train.log,
             metrics.csv, attention.h5 every step, checkpoints) with RUN on a tmpfs at sizes
             that run out in each of them: every rank exits 2 with one message (or the run
             completes), no temp file is left, and what is in RUN is intact: tokens equal to
             a healthy run's, RUN/latest naming a readable checkpoint, attention.h5 readable.
             A RUN that an early error leaves empty is removed; a directory where
             metrics.csv or train.log belongs is named as such (exit 1), and an attention.h5
             another program holds open for writing is said to be locked.
"""
import re
import subprocess
import threading
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import faultlib as fl  # noqa: E402

def h5():
    import h5py
    return h5py


def h5_content(path):
    """Every dataset and attribute of an HDF5 file, for equality: {name: bytes or value}."""
    out = {}
    with h5().File(path, "r") as f:
        def visit(name, obj):
            for k, v in obj.attrs.items():
                out["%s@%s" % (name, k)] = repr(v)
            if isinstance(obj, h5().Dataset):
                out[name] = obj[()].tobytes() if obj.dtype.kind != "O" else repr(list(obj[()]))
        for k, v in f.attrs.items():
            out["@" + k] = repr(v)
        f.visititems(visit)
    return out


class Tool:
    """One command that writes one file: `cmd(out)` builds its command line; `ignore` names
    attributes that differ between runs (the checkpoint path, say)."""

    def __init__(self, name, cmd, ignore=(), fsize=True):
        self.name, self.cmd, self.ignore, self.fsize = name, cmd, ignore, fsize
        self.ref = None

    def content(self, path):
        c = h5_content(path)
        return {k: v for k, v in c.items() if not any(k.endswith("@" + i) for i in self.ignore)}


def judge(ck, tool, r, out, what, allow_ok=True):
    """The one rule: exit 0 with the reference content, or exit 2 with one message naming the
    output, and neither the output nor a temp file left. Returns the exit status."""
    d = os.path.dirname(out)
    left = sorted(n for n in os.listdir(d) if ".tmp" in n)
    ck.ok(not r.crashed(), "%s %s: no crash, no hang" % (tool.name, what), r.describe())
    ck.ok(not left, "%s %s: no temp file left" % (tool.name, what), str(left))
    if r.rc == 0 and allow_ok:
        same = os.path.exists(out) and tool.content(out) == tool.ref
        ck.ok(same, "%s %s: exit 0, so the file reads back exactly as written on a healthy disk" % (tool.name, what),
              r.describe())
        return 0
    errs = r.error_lines()
    ck.ok(r.rc == 2, "%s %s: exit status 2 (runtime failure)" % (tool.name, what), r.describe())
    ck.ok(len(errs) == 1 and os.path.basename(out) in errs[0],
          "%s %s: one message naming the output file" % (tool.name, what), r.describe())
    ck.ok(not os.path.exists(out), "%s %s: no output file" % (tool.name, what), str(os.listdir(d)))
    return r.rc


def full_disk(ck, d, tools):
    for tool in tools:
        ref_size = os.path.getsize(tool.ref_path)
        # from a few pages to past the file's size: the failure moves through the phases
        pages = sorted({max(1, int(ref_size * f) // 4096) for f in (0.02, 0.1, 0.3, 0.5, 0.7, 0.85, 0.95, 1.0)}
                       | {ref_size // 4096 + 1, ref_size // 4096 + 2, ref_size // 4096 + 4})
        results = []
        for p in pages:
            with fl.Tmpfs(os.path.join(d, "fs"), "%dk" % (4 * p)) as fs:
                if not fs.mounted:
                    print("SKIP full disk: cannot mount a tmpfs here (%s)" % fs.why)
                    return
                out = os.path.join(fs.path, "out.h5")
                r = fl.run(tool.cmd(out), timeout=120)
                rc = judge(ck, tool, r, out, "on a %d KiB tmpfs" % (4 * p))
                if rc == 2:
                    ck.ok("No space left on device" in r.err, "%s on a %d KiB tmpfs: the message says the disk is full"
                          % (tool.name, 4 * p), r.err[-600:])
                results.append("%dk:%s" % (4 * p, r.rc))
        print("full disk, %s (file of %d bytes): %s" % (tool.name, ref_size, " ".join(results)), flush=True)
        ck.ok(any(x.endswith(":2") for x in results) and results[-1].endswith(":0"),
              "%s: the smallest disks fail, the largest succeeds" % tool.name, " ".join(results))


def size_limit(ck, d, tools):
    for tool in tools:
        if not tool.fsize:
            continue
        ref_size = os.path.getsize(tool.ref_path)
        out = os.path.join(d, "limited.h5")
        results = []
        for frac in (0.05, 0.3, 0.6, 0.9, 0.99, 1.0, 1.5):
            limit = max(1, int(ref_size * frac))
            r = fl.run(["prlimit", "--fsize=%d" % limit, *tool.cmd(out)], timeout=120)
            rc = judge(ck, tool, r, out, "under a file size limit of %d bytes" % limit)
            if rc == 2:
                ck.ok("File too large" in r.err and "ulimit -f" in r.err,
                      "%s under a %d-byte limit: the message names the file size limit" % (tool.name, limit), r.err[-600:])
            results.append("%d:%s" % (limit, r.rc))
            if os.path.exists(out):
                os.remove(out)
        print("size limit, %s (file of %d bytes): %s" % (tool.name, ref_size, " ".join(results)), flush=True)
        ck.ok(results[0].endswith(":2") and results[-1].endswith(":0"),
              "%s: the smallest limit fails, the largest succeeds" % tool.name, " ".join(results))


TRAIN = ["--steps", "6", "--ckpt-every", "2", "--keep-ckpts", "1", "--attn-every", "1", "--n-layer", "1",
         "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "2", "--eval-batches", "1",
         "--log-every", "1", "--vocab-size", "320"]


def check_run(ck, what, r, run, ref_tokens, named):
    """The rule for a gpt-train run that met a failing write: exit 2 with one message naming
    the file (its name goes into `named`), or a complete run; no temp file left; what is in
    RUN intact. An empty RUN is removed."""
    errs = r.error_lines()
    ck.ok(not r.crashed(), what + ": no crash, no hang", r.describe())
    ck.ok(r.rc in (0, 2), what + ": exit 0, or 2 for the failed write", r.describe())
    if r.rc == 2:
        m = re.search(r"(vocab|tokens|attention)\.h5|ckpt-\d{8}\.h5|metrics\.csv|train\.log|latest", errs[0]) \
            if len(errs) == 1 else None
        ck.ok(m is not None, what + ": one message, naming the file", r.describe())
        if m:
            named.add("ckpt-*.h5" if m.group(0).startswith("ckpt-") else m.group(0))
    names = sorted(os.listdir(run)) if os.path.isdir(run) else []
    ck.ok(not [n for n in names if ".tmp" in n], what + ": no temp file left", str(names))
    if not names:
        ck.ok(not os.path.exists(run), what + ": a RUN left empty by the failure is removed", str(names))
    if "tokens.h5" in names and ref_tokens is not None:
        ck.ok(h5_content(os.path.join(run, "tokens.h5")) == ref_tokens,
              what + ": RUN/tokens.h5 holds exactly the tokens of a healthy run")
    if "latest" in names:
        with open(os.path.join(run, "latest")) as f:
            latest = f.read().strip()
        ck.ok(fl.ckpt_step(os.path.join(run, latest)) is not None, what + ": RUN/latest names a readable checkpoint",
              "%s, %s" % (latest, names))
    if "attention.h5" in names:
        try:
            with h5().File(os.path.join(run, "attention.h5"), "r", swmr=True) as f:
                steps = list(f["step"][()])
            ok = steps == list(range(1, len(steps) + 1))
        except Exception as e:  # noqa: BLE001
            ok, steps = False, str(e)
        ck.ok(ok, what + ": attention.h5 stays readable, its records in order", str(steps))
    if r.rc == 0:
        with open(os.path.join(run, "metrics.csv")) as f:
            rows = f.read().splitlines()
        steps = len(rows) - 1
        ck.ok(steps in (6, 60) and fl.ckpt_step(os.path.join(run, "ckpt-%08d.h5" % steps)) == steps,
              what + ": exit 0, so every metrics row and the last checkpoint are there", "%s %s" % (rows, names))


def trainer_full_disk(ck, d, train, corpus, tokens):
    ref = os.path.join(d, "ref-run")
    r = fl.run(tl.mpirun(2, train, "--data", corpus, "--out", ref, *TRAIN), timeout=120)
    if not ck.ok(r.rc == 0, "trainer: the reference run completes", r.describe()):
        return
    ref_tokens = h5_content(os.path.join(ref, "tokens.h5"))
    named = set()
    # Text mode with attention.h5 every step and checkpoints every 2 steps; then from a
    # tokens.h5 outside RUN, without attention and with one checkpoint at the end, on a disk
    # of a few pages, so the small writes of train.log and metrics.csv meet the full disk.
    pairs = dict(zip(TRAIN[::2], TRAIN[1::2]))
    pairs.pop("--attn-every")
    pairs.update({"--ckpt-every": "100", "--steps": "60"})
    logs_only = ["--data", tokens] + [x for kv in pairs.items() for x in kv]
    for args, sizes in ((["--data", corpus] + TRAIN, (8, 100, 284, 292, 300, 360, 440, 520, 800)),
                        (logs_only, (4, 8, 12, 16))):
        results = []
        for kb in sizes:
            with fl.Tmpfs(os.path.join(d, "fs"), "%dk" % kb) as fs:
                if not fs.mounted:
                    print("SKIP trainer full disk: cannot mount a tmpfs here (%s)" % fs.why)
                    return
                run = os.path.join(fs.path, "run")
                r = fl.run(tl.mpirun(2, train, "--out", run, *args), timeout=120)
                check_run(ck, "gpt-train (2 ranks) on a %d KiB tmpfs" % kb, r, run,
                          ref_tokens if args[1] == corpus else None, named)
                results.append("%dk:%s" % (kb, r.rc))
        print("trainer full disk: %s" % " ".join(results), flush=True)
    print("trainer full disk: the failures named %s" % sorted(named), flush=True)
    ck.ok({"vocab.h5", "tokens.h5", "ckpt-*.h5", "train.log", "metrics.csv"} <= named,
          "trainer: the full disk was met writing vocab.h5, tokens.h5, a checkpoint, train.log and metrics.csv",
          str(sorted(named)))


def trainer_failing_call(ck, d, train, corpus, lib):
    """gpt-train (one process) with each write-side call on its temp files failing in turn:
    vocab.h5, tokens.h5, attention.h5 and checkpoints, past the free-space checks."""
    ref_tokens = h5_content(os.path.join(d, "ref-run", "tokens.h5"))
    run = os.path.join(d, "fw-run")
    cmd = [train, "--data", corpus, "--out", run, *TRAIN]
    r = fl.run(cmd, timeout=120, extra_env={"LD_PRELOAD": lib, "GT_FAIL_AT": "0"})
    # (Open MPI's singleton start runs a helper process too: the largest count is ours)
    n = max([int(l.split()[1]) for l in r.err.splitlines() if l.startswith("failwrite:")] or [0])
    if not ck.ok(r.rc == 0 and n > 0, "gpt-train under failwrite: runs, counting its calls", r.describe()):
        return
    named, calls = set(), {}
    for k in sorted(set(list(range(1, 7)) + [1 + i * (n - 1) // 14 for i in range(15)])):
        subprocess.run(["rm", "-rf", run])
        errno_ = 28 if k % 2 else 5
        r = fl.run(cmd, timeout=120, extra_env={"LD_PRELOAD": lib, "GT_FAIL_AT": str(k), "GT_FAIL_ERRNO": str(errno_)})
        failing = [l for l in r.err.splitlines() if l.startswith("failwrite: failing call")]
        call = failing[0].split(": ")[-1] if failing else "none"
        calls[call] = calls.get(call, 0) + 1
        check_run(ck, "gpt-train with write call %d of %d (%s) failing" % (k, n, call), r, run, ref_tokens, named)
        ck.ok(r.rc == 2, "gpt-train with write call %d of %d (%s) failing: exit 2" % (k, n, call), r.describe())
    print("trainer failing call: %d calls, failed: %s; the messages named %s" % (n, calls, sorted(named)), flush=True)


def trainer_files(ck, d, train, corpus, tokens):
    # an early error (here: the data file does not exist) leaves no empty RUN behind
    run = os.path.join(d, "new", "run")
    r = fl.run(tl.mpirun(2, train, "--data", os.path.join(d, "missing.txt"), "--out", run, *TRAIN), timeout=60)
    ck.ok(r.rc == 1 and not os.path.exists(os.path.join(d, "new")),
          "gpt-train: an early error removes the empty RUN (and the parent) it created", r.describe())
    # ... but never a RUN that existed before it
    os.makedirs(run)
    r = fl.run(tl.mpirun(2, train, "--data", os.path.join(d, "missing.txt"), "--out", run, *TRAIN), timeout=60)
    ck.ok(r.rc == 1 and os.path.isdir(run), "gpt-train: an early error keeps a RUN it did not create", r.describe())
    for name in ("metrics.csv", "train.log"):
        run = os.path.join(d, "dir-" + name)
        os.makedirs(os.path.join(run, name))
        r = fl.run(tl.mpirun(2, train, "--data", tokens, "--out", run, *TRAIN), timeout=60)
        errs = r.error_lines()
        ck.ok(r.rc == 1 and len(errs) == 1 and name in errs[0] and "is a directory" in errs[0] and "full" not in errs[0],
              "gpt-train: a directory named RUN/%s is exit 1 saying so, not a full disk" % name, r.describe())
    # attention.h5 held open for writing by another program: --resume names the lock
    run = os.path.join(d, "locked")
    r = fl.run(tl.mpirun(2, train, "--data", tokens, "--out", run, *TRAIN), timeout=120)
    held, done = threading.Event(), threading.Event()

    def hold():
        with h5().File(os.path.join(run, "attention.h5"), "a"):
            held.set()
            done.wait(60)
    t = threading.Thread(target=hold)
    t.start()
    held.wait(30)
    r = fl.run(tl.mpirun(2, train, "--data", tokens, "--out", run, "--resume", "--steps", "8"), timeout=60)
    done.set()
    t.join()
    errs = r.error_lines()
    ck.ok(r.rc == 1 and len(errs) == 1 and "attention.h5" in errs[0] and "lock" in errs[0] and "damaged" not in errs[0],
          "gpt-train --resume with attention.h5 held open for writing: one message naming the lock", r.describe())


def failing_call(ck, d, tools, lib):
    """Fails the k-th write-side call on the temp file, for each k (all of them up to 40,
    beyond that the first and last 15 and an even spread)."""
    for tool in tools:
        out = os.path.join(d, tool.name.replace(" ", "-") + ".h5")
        r = fl.run(tool.cmd(out), timeout=120, extra_env={"LD_PRELOAD": lib, "GT_FAIL_AT": "0"})
        # every process counts (an MPI program's singleton start-up forks one that writes nothing)
        n = max([int(m) for m in re.findall(r"^failwrite: (\d+) calls$", r.err, re.M)] or [0])
        if not ck.ok(r.rc == 0 and n > 0, "%s under failwrite: runs, counting its calls" % tool.name, r.describe()):
            continue
        os.remove(out)
        ks = list(range(1, n + 1)) if n <= 40 else sorted(set(list(range(1, 16)) + list(range(n - 14, n + 1)) +
                                                            [1 + i * (n - 1) // 10 for i in range(11)]))
        phases = {}
        for k in ks:
            errno_, text = (28, "No space left on device") if k % 2 else (5, "Input/output error")
            r = fl.run(tool.cmd(out), timeout=120,
                       extra_env={"LD_PRELOAD": lib, "GT_FAIL_AT": str(k), "GT_FAIL_ERRNO": str(errno_)})
            failing = [l for l in r.err.splitlines() if l.startswith("failwrite: failing call")]
            call = failing[0].split(": ")[-1] if failing else "none"
            phases[call] = phases.get(call, 0) + 1
            # a failed close of an already-synced, complete file may be harmless; all else must fail
            rc = judge(ck, tool, r, out, "with write call %d of %d (%s) failing" % (k, n, call), allow_ok=False)
            if rc == 2:
                ck.ok(text in r.err, "%s, call %d failing: the message gives the system's reason (%s)" % (tool.name, k, text),
                      r.err[-600:])
            if os.path.exists(out):
                os.remove(out)
        print("failing call, %s: %d calls, each failed once: %s" % (tool.name, n, phases), flush=True)


def viz_full_disk(ck, d, train, tokens, sample):
    viz = [tl.PYTHON, os.path.join(tl.PYDIR, "gpt_viz.py")]
    run, gen = os.path.join(d, "vizrun"), os.path.join(d, "vizgen.h5")
    r = fl.run([train, "--data", tokens, "--out", run, "--steps", "4", "--attn-every", "1", "--n-layer", "1",
                "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "2", "--eval-batches", "1",
                "--log-every", "1"], timeout=120)
    r2 = fl.run([sample, "--checkpoint", run, "--prompt", "The", "--max-new-tokens", "3", "--attn-out", gen], timeout=60)
    ref_page, ref_figs = os.path.join(d, "ref.html"), os.path.join(d, "ref-figs")
    r3 = fl.run(viz + [run, "--gen", gen, "--html", ref_page, "--out", ref_figs, "--gen-tokens", "2"], timeout=120)
    if not ck.ok(r.rc == r2.rc == r3.rc == 0, "fixture: a run with attention.h5, a generation file, their figures",
                 r.describe() + r2.describe() + r3.describe()):
        return
    ref = {n: fl.sha256(os.path.join(ref_figs, n)) for n in os.listdir(ref_figs)}
    ref["page.html"] = fl.sha256(ref_page)
    total = sum(os.path.getsize(os.path.join(ref_figs, n)) for n in os.listdir(ref_figs)) + os.path.getsize(ref_page)
    results = []
    for kib in (16, 48, total // 3 // 1024, 2 * total // 3 // 1024, total // 1024 + 64):
        with fl.Tmpfs(os.path.join(d, "fs"), "%dk" % kib) as fs:
            if not fs.mounted:
                print("SKIP gpt_viz on a full disk: cannot mount a tmpfs here (%s)" % fs.why)
                return
            figs = os.path.join(fs.path, "figs")
            r = fl.run(viz + [run, "--gen", gen, "--html", os.path.join(fs.path, "page.html"), "--out", figs,
                              "--gen-tokens", "2"], timeout=120)
            there = {n: fl.sha256(os.path.join(figs, n)) for n in (os.listdir(figs) if os.path.isdir(figs) else [])}
            if os.path.exists(os.path.join(fs.path, "page.html")):
                there["page.html"] = fl.sha256(os.path.join(fs.path, "page.html"))
            what = "gpt_viz.py on a %d KiB tmpfs" % kib
            errs = tl.error_lines(r.err, "gpt_viz.py: error:")
            ck.ok(r.rc == 0 and there == ref or r.rc == 2 and len(errs) == 1 and "No space left" in errs[0]
                  and "Traceback" not in r.err, what + ": exit 0 with every file, or exit 2 with one message",
                  r.describe())
            if r.rc == 2:
                ck.ok(re.search(r"writing '[^']*(page\.html|\.png|\.gif)' failed", errs[0]) is not None,
                      what + ": the message names the file", errs[0])
            ck.ok(all(ref.get(n) == h for n, h in there.items()),
                  what + ": every file there is complete, no temporary file", str(sorted(there)))
            results.append("%dk:%s" % (kib, r.rc))
    print("gpt_viz on a full disk (%d bytes of files): %s" % (total, " ".join(results)), flush=True)
    ck.ok(results[0].endswith(":2") and results[-1].endswith(":0"), "gpt_viz.py: the smallest disk fails, the "
          "largest succeeds", " ".join(results))


def main():
    bpe, sample, train, evaluate = tl.require("gpt-bpe", "gpt-sample", "gpt-train", "gpt-eval")
    lib = os.path.join(tl.BUILD, "libgt_failwrite.so")
    d = tl.tmpdir("gt-io-")
    ck = tl.Checks("test_io_faults")
    corpus, vocab, tokens = fl.make_tokens(bpe, d, 60000)
    run = fl.make_checkpoint(train, tokens, os.path.join(d, "run"))
    tools = [
        Tool("gpt-bpe train", lambda out: [bpe, "train", "--input", corpus, "--out", out, "--vocab-size", "320"]),
        Tool("gpt-bpe encode", lambda out: [bpe, "encode", "--vocab", vocab, "--input", corpus, "--out", out],
             ignore=("source",)),
        Tool("gpt-sample --attn-out", lambda out: [sample, "--checkpoint", run, "--prompt", "The quick",
                                                   "--max-new-tokens", "60", "--attn-out", out],
             ignore=("checkpoint",)),
        Tool("gpt-eval --per-token", lambda out: [evaluate, "--checkpoint", run, "--data", tokens, "--per-token", out],
             fsize=False),
    ]
    for tool in tools:
        tool.ref_path = os.path.join(d, "ref-" + tool.name.replace(" ", "-") + ".h5")
        r = fl.run(tool.cmd(tool.ref_path), timeout=120)
        if r.rc != 0:
            print("reference run failed\n" + r.describe())
            sys.exit(1)
        tool.ref = tool.content(tool.ref_path)
    parts = [(full_disk, (ck, d, tools)), (size_limit, (ck, d, tools)), (trainer_full_disk, (ck, d, train, corpus, tokens)),
             (trainer_files, (ck, d, train, corpus, tokens)), (viz_full_disk, (ck, d, train, tokens, sample))]
    if os.path.exists(lib):
        parts.append((failing_call, (ck, d, tools, lib)))
        parts.append((trainer_failing_call, (ck, d, train, corpus, lib)))
    else:
        print("SKIP failing call: %s is not built" % lib)
    fl.run_parts(ck, d, parts)


if __name__ == "__main__":
    main()
