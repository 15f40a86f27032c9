"""faultlib.py - shared helpers of the fault-injection suite (tests/faults/*.py).

Every test here runs the real command-line tools as a user would and judges only what a
user sees: the exit status, the signal (if any), the messages, and the files left behind.
A crash is a process killed by a signal or any sanitizer report; the correct answer to
bad input is exit 1 with one message naming the flag or the file.

Binaries come from $GT_BUILD (default: build/ next to the sources), sources from $GT_SRC.
Run a file directly (`/usr/bin/python3 tests/faults/test_x.py`) or through ctest.
"""
import atexit
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SRC = os.environ.get("GT_SRC") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("GT_BUILD") or os.path.join(SRC, "build")
SKIP = 77  # ctest SKIP_RETURN_CODE

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: UndefinedBehaviorSanitizer", "SUMMARY: AddressSanitizer",
                     "SUMMARY: UndefinedBehaviorSanitizer")


def env():
    e = dict(os.environ)
    e.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    e.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    e.setdefault("OMP_NUM_THREADS", "1")
    e.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Open MPI's own allocations are reported as leaks by LSan; our leaks are checked on
    # gpt-bpe (no MPI) by sanitize.sh, so MPI programs run with leak detection off.
    asan = e.get("ASAN_OPTIONS", "")
    if "detect_leaks" not in asan:
        e["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "detect_leaks=0"
    e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    # Keep Open MPI quiet about the oversubscribed 2-core machine and shared memory.
    e.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    return e


def tool(name):
    """Path of a built tool, or None when it is not built (yet)."""
    p = os.path.join(BUILD, name)
    return p if os.path.isfile(p) and os.access(p, os.X_OK) else None


def require(*names):
    """Skip the whole test (exit 77) with a reason when a tool is missing."""
    missing = [n for n in names if not tool(n)]
    if missing:
        print("SKIP: not built in %s: %s" % (BUILD, ", ".join(missing)))
        sys.exit(SKIP)
    return [tool(n) for n in names]


def mpirun(np_, *args):
    return ["mpirun", "--oversubscribe", "-np", str(np_)] + [str(a) for a in args]


class Result:
    def __init__(self, cmd, rc, out, err, secs, timed_out=False):
        self.cmd, self.rc, self.out, self.err, self.secs, self.timed_out = cmd, rc, out, err, secs, timed_out

    @property
    def signal(self):
        """The signal that killed the process (or, under mpirun, a rank), else None."""
        if self.rc is not None and self.rc < 0:
            return -self.rc
        # mpirun exits 128+sig or reports a rank killed by a signal in its own words
        if "exited on signal" in self.err and "signal 9" not in self.err:
            return "rank signal"
        return None

    @property
    def sanitizer(self):
        return any(m in self.err for m in SANITIZER_MARKERS)

    def error_lines(self, marker=": error:"):
        """The lines of stdout and stderr holding an error message ("gpt-train: error: ...")."""
        return [l for l in (self.out + self.err).splitlines() if marker in l]

    def crashed(self):
        return self.timed_out or self.signal is not None or self.sanitizer or (self.rc is not None and self.rc > 128)

    def describe(self):
        cmd = " ".join(str(c) for c in self.cmd)
        if len(cmd) > 300:
            cmd = cmd[:300] + "..."
        tail = self.err[-1500:]
        return "cmd: %s\n  rc=%s timed_out=%s secs=%.1f\n  stderr tail:\n%s" % (
            cmd, self.rc, self.timed_out, self.secs, "\n".join("    " + l for l in tail.splitlines()))


def run(cmd, timeout=60, cwd=None, stdin=None, extra_env=None):
    e = env()
    if extra_env:
        e.update(extra_env)
    t0 = time.time()
    p = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=e, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                         start_new_session=True)
    try:
        out, err = p.communicate(input=stdin, timeout=timeout)
        return Result(cmd, p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                      time.time() - t0)
    except subprocess.TimeoutExpired:
        kill_group(p)
        out, err = p.communicate()
        return Result(cmd, None, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                      time.time() - t0, timed_out=True)


def session_pids(sid):
    """Pids of the live processes of session sid (mpirun puts each rank in its own process
    group, so killpg would miss the ranks; the session holds them all)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields: state ppid pgrp session ...; zombies are already dead
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(name))
    return pids


def kill_group(p, sig=signal.SIGKILL, wait=10.0):
    """Kills a process started by run()/spawn() and everything it started (its whole
    session: mpirun and every rank), like a node losing power; waits until all are gone."""
    deadline = time.time() + wait
    while True:
        pids = session_pids(p.pid)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            p.wait(timeout=0.01)
        except subprocess.TimeoutExpired:
            pass
        if not pids or time.time() > deadline:
            return
        time.sleep(0.01)


def spawn(cmd, log_path, extra_env=None):
    """Starts cmd in its own session with stdout+stderr to log_path; returns the Popen."""
    e = env()
    if extra_env:
        e.update(extra_env)
    f = open(log_path, "wb")
    p = subprocess.Popen([str(c) for c in cmd], env=e, stdout=f, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    f.close()
    return p


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


WORDS = ("the quick brown fox jumps over lazy dog and then some more words appear in this "
         "small corpus so that a tokenizer learns merges while training stays tiny "
         "café naïve déjà vu Привет мир 你好 世界 🙂 ").split()


def make_corpus(path, n_bytes=60000, seed=7):
    """A deterministic small text with some non-ASCII, enough for a tiny model."""
    r = random.Random(seed)
    parts, size = [], 0
    while size < n_bytes:
        line = " ".join(r.choice(WORDS) for _ in range(r.randint(4, 14)))
        line = line[0].upper() + line[1:] + r.choice([".", "!", "?", ","]) + "\n"
        parts.append(line)
        size += len(line.encode())
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(parts))
    return path


def make_tokens(bpe, d, n_bytes, extra_train_args=()):
    """corpus.txt, vocab.h5 (vocabulary 320) and tokens.h5 in d: the fixture every fault test
    starts from. Exits 1 with the tool's output when gpt-bpe fails."""
    corpus = make_corpus(os.path.join(d, "corpus.txt"), n_bytes)
    vocab, tokens = os.path.join(d, "vocab.h5"), os.path.join(d, "tokens.h5")
    for cmd in ([bpe, "train", "--input", corpus, "--out", vocab, "--vocab-size", "320", *extra_train_args],
                [bpe, "encode", "--vocab", vocab, "--input", corpus, "--out", tokens]):
        r = run(cmd, timeout=120)
        if r.rc != 0:
            print("fixture failed\n" + r.describe())
            sys.exit(1)
    return corpus, vocab, tokens


def ckpt_step(path):
    """The step of a checkpoint whose every tensor reads back (h5py), else None."""
    try:
        import h5py
        with h5py.File(path, "r") as f:
            for grp in ("model", "optimizer/m", "optimizer/v"):
                for k in f[grp].keys():
                    f[grp][k][()]
            return int(f.attrs["step"])
    except Exception:  # noqa: BLE001
        return None


def make_checkpoint(train, tokens, run):
    """A 2-step training of a tiny model into run (a checkpoint for gpt-sample). Exits 1 with
    the tool's output when gpt-train fails."""
    r = globals()["run"]([train, "--data", tokens, "--out", run, "--steps", "2", "--n-layer", "2", "--n-head", "2",
                          "--n-embd", "16", "--block-size", "16", "--batch-size", "2", "--eval-batches", "1"],
                         timeout=120)
    if r.rc != 0:
        print("fixture failed\n" + r.describe())
        sys.exit(1)
    return run


def run_parts(ck, d, parts):
    """Runs each (function, args) of a test, printing its time; then removes d and ends the
    test with the tally (exit 1 when a check failed)."""
    for part, args in parts:
        t0 = time.time()
        part(*args)
        print("%s: %.1f s" % (part.__name__, time.time() - t0), flush=True)
    rmtree(d)
    ck.finish()


class Checks:
    """Counts checks; prints each failure in full and ends with 'N passed, N failed'."""

    def __init__(self, name):
        self.name, self.passed, self.failed = name, 0, 0

    def ok(self, cond, what, detail=""):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL: %s\n  %s" % (what, detail.replace("\n", "\n  ")), flush=True)
        return cond

    def finish(self):
        print("%s: %d passed, %d failed" % (self.name, self.passed, self.failed), flush=True)
        sys.exit(1 if self.failed else 0)


class Tmpfs:
    """A small tmpfs mounted at path for the duration of a with-block (a full disk at a known
    size). `mounted` is False, with the reason in `why`, where mounting is not permitted (not
    root, a container without CAP_SYS_ADMIN): tests then skip that part, saying so. The mount
    goes away on leaving the block, also on a failure, and at interpreter exit."""

    def __init__(self, path, size):
        self.path, self.size, self.mounted, self.why = path, size, False, ""

    def __enter__(self):
        os.makedirs(self.path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % self.size, "tmpfs", self.path],
                           capture_output=True, text=True)
        self.mounted = r.returncode == 0
        self.why = r.stderr.strip()
        if self.mounted:
            atexit.register(self.unmount)
        return self

    def unmount(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], capture_output=True)
            self.mounted = False

    def __exit__(self, *a):
        self.unmount()


def tmpdir(prefix):
    base = os.environ.get("GT_FAULT_TMP") or tempfile.gettempdir()
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def rmtree(d):
    if os.environ.get("GT_KEEP_TMP"):
        print("kept", d)
        return
    shutil.rmtree(d, ignore_errors=True)
