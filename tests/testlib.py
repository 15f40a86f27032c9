"""testlib.py - what every Python test of gpt-train shares (tests/<component>/test_*.py).

Where things are: the built tools in $GT_BUILD (default: build/ in the checkout), the sources
in $GT_SRC (default: the checkout holding this file), ../shared/data beside the checkout;
ctest sets GT_BUILD and GT_SRC (tests/CMakeLists.txt). Importing testlib also puts io/python
on sys.path, so a test imports gpt_checkpoint, gpt_attention and nanogpt_model directly.

What a test does with it: run a tool as a user would (a timeout, stdout and stderr captured,
mpirun with the variables root needs), judge a refusal of bad input (the exit status and ONE
line `PROG: error: ...` naming the culprit), count checks and end with a summary, and skip
(exit 77, ctest's SKIP_RETURN_CODE) with the reason when something it needs is absent.

A test file starts with
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import testlib as tl  # noqa: E402
and runs directly (`/usr/bin/python3 tests/engine/test_x.py`) or through ctest.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SRC = os.environ.get("GT_SRC") or os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BUILD = os.environ.get("GT_BUILD") or os.path.join(SRC, "build")
PYTHON = "/usr/bin/python3"  # Debian's, with python3-h5py/-numpy/-torch (another may be first on PATH)
PYDIR = os.path.join(SRC, "io", "python")
SHARED_DATA = os.path.join(SRC, "..", "shared", "data")
SKIP = 77  # ctest SKIP_RETURN_CODE

if PYDIR not in sys.path:
    sys.path.insert(0, PYDIR)

# mpirun refuses to start as root without these; one thread per rank unless a test says otherwise
BASE_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1"}


# ---------------------------------------------------------------- skipping
def skip(reason):
    """Ends the test as skipped (exit 77), saying why."""
    print("SKIP: " + reason, flush=True)
    sys.exit(SKIP)


def tool(name):
    """Path of a built tool, or None when it is not built (yet)."""
    p = os.path.join(BUILD, name)
    return p if os.path.isfile(p) and os.access(p, os.X_OK) else None


def require(*names, fail=False):
    """Paths of the built tools; when one is missing, a skip with the reason (or, with fail,
    exit 1: for tests whose tools are always built with them)."""
    missing = [n for n in names if not tool(n)]
    if missing:
        if fail:
            print("missing in %s: %s (build them first)" % (BUILD, ", ".join(missing)), file=sys.stderr)
            sys.exit(1)
        skip("not built in %s: %s" % (BUILD, ", ".join(missing)))
    return [tool(n) for n in names]


def require_module(name, why):
    """The imported Python module, or a skip naming it and `why` it is needed."""
    try:
        return __import__(name)
    except ImportError as e:
        skip("%s (%s)" % (e, why))


def shared_data(name, fallback=None, skip_why=None):
    """../shared/data/NAME when it is there. Otherwise the fallback path (said on stderr), or a
    skip saying `skip_why`, or None."""
    p = os.path.join(SHARED_DATA, name)
    if os.path.isfile(p):
        return p
    if fallback:
        print("note: %s absent, using %s" % (p, fallback), file=sys.stderr)
        return fallback
    if skip_why:
        skip("%s is absent (%s)" % (p, skip_why))
    return None


# ---------------------------------------------------------------- running tools
def env(extra=None):
    """The environment tools run in: ours, plus BASE_ENV where unset, plus `extra`."""
    e = dict(os.environ)
    for k, v in BASE_ENV.items():
        e.setdefault(k, v)
    e.update(extra or {})
    return e


def mpirun(np_, *args):
    """The command line of `mpirun --oversubscribe -np NP args...` (run it with run())."""
    return ["mpirun", "--oversubscribe", "-np", str(np_)] + [str(a) for a in args]


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: UndefinedBehaviorSanitizer", "SUMMARY: AddressSanitizer",
                     "SUMMARY: UndefinedBehaviorSanitizer")


class Result:
    """A finished run: rc (None when it timed out), stdout/stderr as bytes, out/err as text."""

    def __init__(self, cmd, rc, stdout, stderr, secs, timed_out=False):
        self.cmd, self.rc, self.stdout, self.stderr, self.secs, self.timed_out = \
            cmd, rc, stdout, stderr, secs, timed_out
        self.out = stdout.decode("utf-8", "replace")
        self.err = stderr.decode("utf-8", "replace")

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
        return error_lines(self.out + self.err, marker)

    def crashed(self):
        return self.timed_out or self.signal is not None or self.sanitizer or (self.rc is not None and self.rc > 128)

    def describe(self):
        cmd = " ".join(str(c) for c in self.cmd)
        if len(cmd) > 300:
            cmd = cmd[:300] + "..."
        tail = self.err[-1500:]
        return "cmd: %s\n  rc=%s timed_out=%s secs=%.1f\n  stderr tail:\n%s" % (
            cmd, self.rc, self.timed_out, self.secs, "\n".join("    " + l for l in tail.splitlines()))


def run(cmd, timeout=300, cwd=None, stdin=None, extra_env=None, env_=None, preexec_fn=None):
    """Runs cmd (a list; items str()ed) in its own session with output captured; returns a
    Result. On timeout (seconds; None for none) the whole session is killed (mpirun and every
    rank). env_ replaces env() as the base environment; extra_env is added to it."""
    e = dict(env_ if env_ is not None else env())
    e.update(extra_env or {})
    cmd = [c if isinstance(c, bytes) else str(c) for c in cmd]
    t0 = time.time()
    p = subprocess.Popen(cmd, cwd=cwd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                         start_new_session=True, preexec_fn=preexec_fn)
    try:
        out, err = p.communicate(input=stdin, timeout=timeout)
        return Result(cmd, p.returncode, out, err, time.time() - t0)
    except subprocess.TimeoutExpired:
        kill_group(p)
        out, err = p.communicate()
        return Result(cmd, None, out, err, time.time() - t0, timed_out=True)


def run_ok(cmd, expect=0, **kw):
    """run(), asserting the exit status `expect` (AssertionError showing the command and stderr)."""
    r = run(cmd, **kw)
    assert r.rc == expect, "exit %s, expected %d\n%s" % (r.rc, expect, r.describe())
    return r


def spawn(cmd, log_path=None, extra_env=None, env_=None):
    """Starts cmd in its own session and returns the Popen: stdout+stderr to log_path, or, without
    one, stdout discarded and stderr on a text pipe (p.stderr). Stop it with kill_group(p)."""
    e = dict(env_ if env_ is not None else env())
    e.update(extra_env or {})
    cmd = [str(c) for c in cmd]
    if log_path is None:
        return subprocess.Popen(cmd, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    with open(log_path, "wb") as f:
        return subprocess.Popen(cmd, env=e, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


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


# ---------------------------------------------------------------- judging a refusal
def error_lines(text, marker=": error:"):
    """The lines of text holding an error message."""
    return [l for l in text.splitlines() if marker in l]


def refusal(r, *needles, status=1, prog=None, alone=True, ignore=None):
    """Why r is not the refusal bad input must get, or "" when it is: exit `status` and exactly
    one error line holding every needle. alone: that line is all of stderr (one line, ending in a
    newline); prog: it starts with 'PROG: error: '; otherwise it is the one line with ': error:'.
    Lines containing `ignore` are dropped first (a sanitizer's own warnings, say)."""
    err = r.err
    if ignore:
        err = "".join(l for l in err.splitlines(True) if ignore not in l)
    if r.rc != status:
        return "exit %s, expected %d\n%s" % (r.rc, status, r.describe())
    if alone:
        lines = err.splitlines()
        if len(lines) != 1 or not err.endswith("\n"):
            return "stderr is %d lines, expected one error line:\n%s" % (len(lines), err[-2000:])
    else:
        lines = error_lines(err)
        if len(lines) != 1:
            return "%d error lines, expected one:\n%s" % (len(lines), err[-2000:])
    line = lines[0]
    if prog and not line.startswith(prog + ": error: "):
        return "the message does not start with '%s: error: ': %s" % (prog, line)
    if ": error:" not in line:
        return "not an error message: %s" % line
    missing = [n for n in needles if n not in line]
    if missing:
        return "the message lacks %s: %s" % (", ".join(repr(n) for n in missing), line)
    return ""


# ---------------------------------------------------------------- counting checks
class Checks:
    """Counts checks; prints each failure in full (and each success when verbose), and
    finish() ends with 'NAME: N passed, N failed', exit 1 when any failed."""

    def __init__(self, name, verbose=False):
        self.name, self.verbose, self.passed, self.failed, self.failures = name, verbose, 0, 0, []

    def ok(self, cond, what, detail=""):
        if cond:
            self.passed += 1
            if self.verbose:
                print("ok   " + what, flush=True)
        else:
            self.failed += 1
            self.failures.append(what)
            print("FAIL: %s\n  %s" % (what, str(detail).replace("\n", "\n  ")), flush=True)
        return bool(cond)

    def finish(self):
        print("%s: %d passed, %d failed" % (self.name, self.passed, self.failed), flush=True)
        for what in self.failures:
            print("  failed: " + what)
        sys.exit(1 if self.failed else 0)


def timed(fn, *args, **kw):
    """Runs one test function (assert style), prints 'ok NAME (secs)', returns its result."""
    t0 = time.time()
    out = fn(*args, **kw)
    print("ok %s (%.1fs)" % (fn.__name__, time.time() - t0), flush=True)
    return out


# ---------------------------------------------------------------- files
def tmpdir(prefix):
    """A fresh directory under $GT_TEST_TMP (or $GT_FAULT_TMP, or the system's temp dir)."""
    base = os.environ.get("GT_TEST_TMP") or os.environ.get("GT_FAULT_TMP") or tempfile.gettempdir()
    return tempfile.mkdtemp(prefix=prefix, dir=base)


def rmtree(d):
    """Removes a test's directory, unless GT_KEEP_TMP is set (then says where it is)."""
    if os.environ.get("GT_KEEP_TMP"):
        print("kept", d)
        return
    shutil.rmtree(d, ignore_errors=True)


def latest(run):
    """The checkpoint RUN/latest names."""
    with open(os.path.join(run, "latest")) as f:
        return os.path.join(run, os.path.basename(f.read().strip()))
