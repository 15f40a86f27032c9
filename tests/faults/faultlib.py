"""faultlib.py - shared helpers of the fault-injection suite (tests/faults/*.py).

Every test here runs the real command-line tools as a user would and judges only what a
user sees: the exit status, the signal (if any), the messages, and the files left behind.
A crash is a process killed by a signal or any sanitizer report; the correct answer to
bad input is exit 1 with one message naming the flag or the file.

The generic helpers (paths, tools, skips, Result, mpirun, Checks, temporary directories) are
tests/testlib.py's; here are what the fault suite adds: its environment for the tools (sanitizer
options, Open MPI quiet on an oversubscribed machine) with run() and spawn() in it, and the
small corpus, vocabulary and tokens every fault test starts from.
Run a file directly (`/usr/bin/python3 tests/faults/test_x.py`) or through ctest.
"""
import atexit
import hashlib
import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402


def env(extra=None):
    """testlib's environment, plus what the fault suite needs under sanitizers."""
    e = tl.env(extra)
    # Open MPI's own allocations are reported as leaks by LSan; our leaks are checked on
    # gpt-bpe (no MPI) by sanitize.sh, so MPI programs run with leak detection off.
    asan = e.get("ASAN_OPTIONS", "")
    if "detect_leaks" not in asan:
        e["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "detect_leaks=0"
    e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    # Keep Open MPI quiet about the oversubscribed 2-core machine and shared memory.
    e.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")
    return e


def run(cmd, timeout=60, cwd=None, stdin=None, extra_env=None):
    """testlib.run in the fault suite's environment."""
    return tl.run(cmd, timeout=timeout, cwd=cwd, stdin=stdin, env_=env(extra_env))


def spawn(cmd, log_path, extra_env=None):
    """testlib.spawn in the fault suite's environment: stdout+stderr to log_path."""
    return tl.spawn(cmd, log_path, env_=env(extra_env))


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
    tl.rmtree(d)
    ck.finish()


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

