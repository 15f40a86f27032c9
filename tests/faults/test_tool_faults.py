#!/usr/bin/python3
"""test_tool_faults.py - gpt-bpe and gpt-sample meeting what a new user tries: inputs that
are not files, interrupts, an output nobody can take, the output named as an input, and the
messages that must name the real problem. The rule each time: one message and exit 1 for bad
input, exit 2 for a runtime failure, the signal's own status for an interrupt, a quiet end
for a closed pipe; never a hang, never a temp file left, never an input destroyed.

not a file     --input, --vocab, --tokens, --checkpoint (and RUN/latest) given /dev/zero, a
               FIFO (with and without a writer), a directory (but for --input, which takes
               one), a socket: exit 1 within seconds, naming the flag and what the path is;
               nothing read from it.
signals        SIGINT, SIGTERM, SIGHUP delivered in each phase (GT_TEST_STOP_AT stops the tool
               at a named point: start-up, reading, writing the output, generating): the tool
               ends by that signal (status 128+N) with no temp file and no output file; except
               that gpt-sample, stopped while generating, first completes the --attn-out file
               with the tokens so far (stopped_by names the signal).
stdout         > /dev/full: exit 2 naming stdout (also --help and --version), no --attn-out
               file; | head: a quiet end by SIGPIPE, no message, and gpt-sample's --attn-out
               file complete up to the last token written (stopped_by "closed stdout").
same file      --force with --out naming an input (the same path, a symlink, a hard link), or
               --attn-out naming the checkpoint: exit 1 naming both, the input untouched.
messages       a file where a directory is needed is named as such; a file another program
               holds open for writing is said to be locked, not damaged; a custom pattern that
               exhausts PCRE2's match limit is bad input (exit 1) naming the pattern and the
               byte offset in the input, also when encode meets it blocks into the file.
memory         encoding one chunk of L bytes (a text without whitespace) grows the peak RSS
               (/usr/bin/time) by at most 9 bytes per byte: 5.2 for the merges (the chunk's ids
               included), 1 for its text, 2 for its 16-bit ids, with room to spare; it was 17.
gpt-eval       > /dev/full and --help > /dev/full: exit 2 naming stdout (they were exit 0, the
               result line lost); --per-token --force naming the checkpoint or --data: refused,
               the input untouched (it was replaced by the per-token file).
vanished       a checkpoint removed while gpt-sample or gpt-eval opens it (a training run's
               --keep-ckpts, made certain by failwrite.c's GT_VANISH_*): from a run directory,
               RUN/latest is read again and the newer checkpoint taken; a file given directly is
               said to be gone, not "truncated or damaged".
gpt_viz        RUN, RUN/metrics.csv or --gen a FIFO, a device, a socket, a directory, a link loop:
               one line naming it, at once (a FIFO hung it); --html naming attention.h5,
               metrics.csv or a --gen file (it destroyed them) or a FIFO (it replaced it), --out
               naming a file, --dpi and --max-frames past their bounds: one line, nothing
               written; stdout > /dev/full: exit 2, | head: a quiet end (tracebacks); SIGINT,
               SIGTERM, SIGHUP while the PNGs are written: 128+N, no temporary file, every PNG
               complete.
sample.sbatch  PROMPT_FILE a directory, a FIFO, /dev/zero, a socket, a link loop, over 4 MiB: one
               message, exit 1 (it hung, or sampled the default prompt as if nothing was wrong).
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import faultlib as fl  # noqa: E402

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def one_error(ck, r, what, needles, status=1):
    errs = r.error_lines()
    ck.ok(not r.crashed(), what + ": no crash, no hang", r.describe())
    ck.ok(r.rc == status, what + ": exit status %d" % status, r.describe())
    ck.ok(len(errs) == 1 and all(n in errs[0] for n in needles),
          what + ": one message naming %s" % ", ".join(repr(n) for n in needles), r.describe())


def not_a_file(ck, d, bpe, corpus, vocab, tokens):
    fifo = os.path.join(d, "fifo")
    os.mkfifo(fifo)
    sock_path = os.path.join(d, "sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(sock_path)
    kinds = [("/dev/zero", "character device"), (fifo, "FIFO"), (d, "directory"), (sock_path, "socket")]
    out = os.path.join(d, "never.h5")
    for path, kind in kinds:
        cases = [
            ("train --input", [bpe, "train", "--input", path, "--out", out], "--input"),
            ("encode --input", [bpe, "encode", "--vocab", vocab, "--input", path, "--out", out], "--input"),
            ("encode --vocab", [bpe, "encode", "--vocab", path, "--input", corpus, "--out", out], "--vocab"),
            ("decode --tokens", [bpe, "decode", "--vocab", vocab, "--tokens", path], "--tokens"),
        ]
        for name, cmd, flag in cases:
            if kind == "directory" and flag == "--input":
                continue  # a directory is an input: every file below it (tests/tokenizer/test_bpe_corpus.py)
            r = fl.run(cmd, timeout=20)
            one_error(ck, r, "gpt-bpe %s %s" % (name, kind), [flag, kind])
            ck.ok(r.secs < 10 and not os.path.exists(out), "gpt-bpe %s %s: refused at once, no output" % (name, kind),
                  "%.1f s" % r.secs)
    # A FIFO with a writer that never stops is refused just the same, before reading anything.
    writer = subprocess.Popen("exec yes > '%s'" % fifo, shell=True)
    r = fl.run([bpe, "train", "--input", fifo, "--out", out], timeout=20)
    writer.kill()
    writer.wait()
    one_error(ck, r, "gpt-bpe train --input FIFO with an endless writer", ["--input", "FIFO"])
    sock.close()


def stop_at(cmd, phase, sig, timeout=60):
    """Runs cmd until it stops itself at `phase` (GT_TEST_STOP_AT), then sends sig and lets it
    continue. Returns (Popen after exit, whether it reached the phase, files seen at the stop)."""
    e = fl.env()
    e["GT_TEST_STOP_AT"] = phase
    p = subprocess.Popen([str(c) for c in cmd], env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    deadline, reached = time.time() + timeout, False
    while time.time() < deadline and p.poll() is None:
        try:
            with open("/proc/%d/stat" % p.pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "T":
                    reached = True
                    break
        except OSError:
            break
        time.sleep(0.01)
    try:
        os.kill(p.pid, sig)
        os.kill(p.pid, signal.SIGCONT)
    except ProcessLookupError:  # it never stopped: ended before the phase
        pass
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        tl.kill_group(p)
    return p, reached


def signals_each_phase(ck, d, bpe, corpus, vocab):
    out = os.path.join(d, "sig.h5")
    tools = [("gpt-bpe train", [bpe, "train", "--input", corpus, "--out", out, "--vocab-size", "300"]),
             ("gpt-bpe encode", [bpe, "encode", "--vocab", vocab, "--input", corpus, "--out", out])]
    i = 0
    for name, cmd in tools:
        for phase in ("start", "read", "write"):
            sig = SIGNALS[i % 3]
            i += 1
            p, reached = stop_at(cmd, phase, sig)
            what = "%s: %s in phase '%s'" % (name, signal.Signals(sig).name, phase)
            left = [n for n in os.listdir(d) if n.startswith("sig.h5")]
            ck.ok(reached, what + ": the tool reached the phase", "rc %s" % p.returncode)
            ck.ok(p.returncode == -sig, what + ": ends by that signal (status 128+%d)" % sig,
                  "rc %s, stderr %s" % (p.returncode, p.stderr.read()[-500:]))
            ck.ok(not left, what + ": no temp file, no output file", str(left))
            for n in left:
                os.remove(os.path.join(d, n))


def stdout_faults(ck, d, bpe, corpus, vocab, tokens):
    full = open("/dev/full", "wb")
    for name, args in (("decode", ["decode", "--vocab", vocab, "--tokens", tokens]), ("--help", ["--help"]),
                       ("encode --help", ["encode", "--help"]), ("--version", ["--version"])):
        p = subprocess.run([bpe, *args], stdout=full, stderr=subprocess.PIPE, env=fl.env(), timeout=60)
        err = p.stderr.decode(errors="replace")
        lines = [l for l in err.splitlines() if ": error:" in l]
        ck.ok(p.returncode == 2 and len(lines) == 1 and "stdout" in lines[0],
              "gpt-bpe %s > /dev/full: exit 2, one message naming stdout" % name, "rc %s: %s" % (p.returncode, err))
    full.close()
    # | head: the reader goes away; the tool ends quietly by SIGPIPE, as any command in a pipe.
    # The text must outgrow the pipe's buffer (64 KiB), or decode is done before head leaves.
    big_text, big_tokens = os.path.join(d, "big.txt"), os.path.join(d, "big.h5")
    with open(corpus, "rb") as f, open(big_text, "wb") as g:
        g.write(f.read() * 8)
    r = fl.run([bpe, "encode", "--vocab", vocab, "--input", big_text, "--out", big_tokens], timeout=60)
    ck.ok(r.rc == 0, "fixture: a text 8 times the corpus encodes", r.describe())
    p = subprocess.Popen([bpe, "decode", "--vocab", vocab, "--tokens", big_tokens], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=fl.env())
    p.stdout.read(10)
    p.stdout.close()
    err = p.stderr.read().decode(errors="replace")
    p.wait(timeout=60)
    ck.ok(p.returncode == -signal.SIGPIPE and not err.strip(),
          "gpt-bpe decode | head: a quiet end by SIGPIPE", "rc %s, stderr %r" % (p.returncode, err))


def same_file(ck, d, bpe, corpus, vocab):
    text = os.path.join(d, "text.txt")
    with open(corpus, "rb") as f, open(text, "wb") as g:
        g.write(f.read())
    before = fl.sha256(text)
    link, hard = os.path.join(d, "link.txt"), os.path.join(d, "hard.txt")
    os.symlink(text, link)
    os.link(text, hard)
    vcopy = os.path.join(d, "vcopy.h5")
    with open(vocab, "rb") as f, open(vcopy, "wb") as g:
        g.write(f.read())
    vbefore = fl.sha256(vcopy)
    cases = [("encode --out = --input", ["encode", "--vocab", vocab, "--input", text, "--out", text], "--input"),
             ("encode --out = a symlink to --input", ["encode", "--vocab", vocab, "--input", text, "--out", link],
              "--input"),
             ("train --out = a hard link to --input", ["train", "--input", text, "--out", hard], "--input"),
             ("encode --out = --vocab", ["encode", "--vocab", vcopy, "--input", text, "--out", vcopy], "--vocab")]
    for name, args, flag in cases:
        r = fl.run([bpe, *args, "--force"], timeout=60)
        one_error(ck, r, "gpt-bpe %s --force" % name, ["--out", flag, "same file"])
    ck.ok(fl.sha256(text) == before and fl.sha256(vcopy) == vbefore, "--force onto an input: the inputs are untouched")


def messages(ck, d, bpe, corpus, vocab):
    r = fl.run([bpe, "train", "--input", corpus, "--out", os.path.join(corpus, "x.h5")], timeout=30)
    one_error(ck, r, "gpt-bpe train --out FILE/x.h5", ["--out", "is a file, not a directory"])
    # HDF5 locks a file it opens for writing: a second program is told so, not that the file is damaged
    import h5py
    locked = os.path.join(d, "locked.h5")
    with open(vocab, "rb") as f, open(locked, "wb") as g:
        g.write(f.read())
    held = threading.Event()
    done = threading.Event()

    def hold():
        with h5py.File(locked, "a"):
            held.set()
            done.wait(60)
    t = threading.Thread(target=hold)
    t.start()
    held.wait(30)
    r = fl.run([bpe, "encode", "--vocab", locked, "--input", corpus, "--out", os.path.join(d, "l.h5")], timeout=30)
    done.set()
    t.join()
    one_error(ck, r, "gpt-bpe encode --vocab FILE held open for writing by h5py", ["--vocab", "lock"])
    ck.ok("damaged" not in r.err, "a locked file is not called damaged", r.err[-400:])


def generation(path):
    """(n_generated, stopped_by, rows of /attention, len of /token_ids) of a generation file."""
    import h5py
    with h5py.File(path, "r") as f:
        return (int(f.attrs["n_generated"]), f.attrs["stopped_by"], f["attention"].shape[0], f["token_ids"].shape[0],
                int(f.attrs["n_prompt"]))


def sample_faults(ck, d, sample, run):
    """gpt-sample: not a file, signals in each phase, stdout, --attn-out onto the checkpoint."""
    out = os.path.join(d, "gen.h5")
    fifo = os.path.join(d, "fifo2")
    os.mkfifo(fifo)
    for path, kind in (("/dev/zero", "character device"), (fifo, "FIFO")):
        r = fl.run([sample, "--checkpoint", path, "--prompt", "x"], timeout=20)
        one_error(ck, r, "gpt-sample --checkpoint %s" % kind, ["--checkpoint", kind])
    fake = os.path.join(d, "fakerun")
    os.mkdir(fake)
    os.mkfifo(os.path.join(fake, "latest"))
    r = fl.run([sample, "--checkpoint", fake, "--prompt", "x"], timeout=20)
    one_error(ck, r, "gpt-sample --checkpoint RUN whose latest is a FIFO", ["--checkpoint", "FIFO"])

    base = [sample, "--checkpoint", run, "--prompt", "The quick", "--max-new-tokens", "40"]
    for i, phase in enumerate(("start", "write")):
        sig = SIGNALS[i]
        p, reached = stop_at(base + ["--attn-out", out], phase, sig)
        what = "gpt-sample --attn-out: %s in phase '%s'" % (signal.Signals(sig).name, phase)
        left = [n for n in os.listdir(d) if n.startswith("gen.h5")]
        ck.ok(reached and p.returncode == -sig, what + ": ends by that signal", "rc %s" % p.returncode)
        ck.ok(not left, what + ": no temp file, no output file", str(left))
    for sig in SIGNALS:
        p, reached = stop_at(base + ["--attn-out", out], "generate", sig)
        what = "gpt-sample --attn-out: %s while generating" % signal.Signals(sig).name
        ck.ok(reached and p.returncode == -sig, what + ": ends by that signal", "rc %s" % p.returncode)
        ck.ok([n for n in os.listdir(d) if n.startswith("gen.h5")] == ["gen.h5"],
              what + ": the generation file is in place, no temp file", str(os.listdir(d)))
        try:
            n, by, rows, ids, P = generation(out)
            ok = by == signal.Signals(sig).name and rows == n == 3 and ids == P + n
            detail = "n_generated %d, stopped_by %r, %d rows, %d ids" % (n, by, rows, ids)
        except Exception as e:  # noqa: BLE001
            ok, detail = False, str(e)
        ck.ok(ok, what + ": it holds the 3 tokens generated so far, stopped_by names the signal", detail)
        os.remove(out)

    full = open("/dev/full", "wb")
    p = subprocess.run(base + ["--attn-out", out], stdout=full, stderr=subprocess.PIPE, env=fl.env(), timeout=60)
    full.close()
    err = p.stderr.decode(errors="replace")
    lines = [l for l in err.splitlines() if ": error:" in l]
    ck.ok(p.returncode == 2 and len(lines) == 1 and "stdout" in lines[0],
          "gpt-sample > /dev/full: exit 2, one message naming stdout", "rc %s: %s" % (p.returncode, err))
    ck.ok(not [n for n in os.listdir(d) if n.startswith("gen.h5")], "gpt-sample > /dev/full: no --attn-out file",
          str(os.listdir(d)))
    # | head: generation stops at the closed pipe; the file keeps what was printed
    p = subprocess.Popen([sample, "--checkpoint", run, "--prompt", "The quick", "--max-new-tokens", "100000",
                          "--attn-out", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=fl.env())
    p.stdout.read(40)
    p.stdout.close()
    err = p.stderr.read().decode(errors="replace")
    p.wait(timeout=60)
    ck.ok(p.returncode == -signal.SIGPIPE and ": error:" not in err,
          "gpt-sample | head: a quiet end by SIGPIPE", "rc %s, stderr %r" % (p.returncode, err))
    try:
        n, by, rows, ids, P = generation(out)
        ok = by == "closed stdout" and 0 < n < 100000 and rows == n and ids == P + n
        detail = "n_generated %d, stopped_by %r, %d rows, %d ids" % (n, by, rows, ids)
    except Exception as e:  # noqa: BLE001
        ok, detail = False, str(e)
    ck.ok(ok, "gpt-sample --attn-out | head: the file is complete up to the last token, stopped_by 'closed stdout'",
          detail)
    os.remove(out)

    with open(os.path.join(run, "latest")) as f:
        ckpt = os.path.join(run, f.read().strip())
    before = fl.sha256(ckpt)
    r = fl.run(base + ["--attn-out", ckpt, "--force"], timeout=60)
    one_error(ck, r, "gpt-sample --attn-out = the checkpoint, --force", ["--attn-out", "same file"])
    ck.ok(fl.sha256(ckpt) == before, "gpt-sample --attn-out = the checkpoint: the checkpoint is untouched")


def pattern_limit(ck, d, bpe):
    text = os.path.join(d, "aaa.txt")
    with open(text, "w") as f:
        f.write("hello world\n" * 1000 + "a" * 200000 + "\n")
    pattern = r"(?:(a+)+c)|[a-z]+|\s+|."
    vocab = os.path.join(d, "pv.h5")
    r = fl.run([bpe, "train", "--input", os.path.join(d, "corpus.txt"), "--out", vocab, "--vocab-size", "300",
                "--pattern", pattern], timeout=120)
    ck.ok(r.rc == 0, "fixture: a vocabulary with a pattern that can backtrack badly", r.describe())
    for name, cmd, env in (
            ("train", [bpe, "train", "--input", text, "--out", os.path.join(d, "pv2.h5"), "--vocab-size", "300",
                       "--pattern", pattern], None),
            ("encode in 4 KiB blocks", [bpe, "encode", "--vocab", vocab, "--input", text, "--out",
                                        os.path.join(d, "pe.h5")], {"GT_BPE_BLOCK": "4096"})):
        r = fl.run(cmd, timeout=300, extra_env=env)
        one_error(ck, r, "gpt-bpe %s: PCRE2's match limit on a custom pattern" % name,
                  [pattern, "byte offset 12000", "match limit"])


def encode_memory(ck, d, bpe, vocab):
    """Peak RSS of encoding one chunk of 8 MB and of 24 MB: the difference over 16 MB."""
    if not os.access("/usr/bin/time", os.X_OK):
        print("SKIP encode memory: /usr/bin/time is not installed")
        return
    import random
    rnd = random.Random(3)
    letters = bytes(ord("a") + i % 26 for i in range(256))
    peaks = {}
    for mb in (8, 24):
        text = os.path.join(d, "chunk%d.txt" % mb)
        with open(text, "wb") as f:
            f.write(rnd.randbytes(mb * 1000000).translate(letters))
        r = fl.run(["/usr/bin/time", "-f", "peak %M", bpe, "encode", "--vocab", vocab, "--input", text, "--out",
                    os.path.join(d, "chunk%d.h5" % mb), "--quiet"], timeout=300)
        m = [l for l in r.err.splitlines() if l.startswith("peak ")]
        if not ck.ok(r.rc == 0 and m, "gpt-bpe encode of one %d MB chunk runs" % mb, r.describe()):
            return
        peaks[mb] = int(m[-1].split()[1]) * 1024
        os.remove(text)
    per_byte = (peaks[24] - peaks[8]) / 16e6
    print("encode memory: peak %.0f MB for one 8 MB chunk, %.0f MB for 24 MB: %.1f bytes per byte of the chunk"
          % (peaks[8] / 1e6, peaks[24] / 1e6, per_byte), flush=True)
    ck.ok(per_byte <= 9.0, "gpt-bpe encode: at most 9 bytes of memory per byte of its longest chunk (%.1f)" % per_byte)


def eval_faults(ck, d, evaluate, run, tokens):
    full = open("/dev/full", "wb")
    for name, args in (("a score", ["--checkpoint", run, "--data", tokens]), ("--help", ["--help"])):
        p = subprocess.run([evaluate, *args], stdout=full, stderr=subprocess.PIPE, env=fl.env(), timeout=60)
        err = p.stderr.decode(errors="replace")
        ck.ok(p.returncode == 2 and len(tl.error_lines(err)) == 1 and "stdout" in err,
              "gpt-eval %s > /dev/full: exit 2, one message naming stdout" % name, "rc %s: %s" % (p.returncode, err))
    full.close()
    tcopy = os.path.join(d, "tcopy.h5")
    with open(tokens, "rb") as f, open(tcopy, "wb") as g:
        g.write(f.read())
    with open(os.path.join(run, "latest")) as f:
        ckpt = os.path.join(run, f.read().strip())
    before = (fl.sha256(tcopy), fl.sha256(ckpt))
    for flag, target in (("--data", tcopy), ("--checkpoint", ckpt)):
        r = fl.run([evaluate, "--checkpoint", run, "--data", tcopy, "--per-token", target, "--force"], timeout=60)
        one_error(ck, r, "gpt-eval --per-token = %s, --force" % flag, ["--per-token", flag, "same file"])
    ck.ok((fl.sha256(tcopy), fl.sha256(ckpt)) == before, "gpt-eval --per-token onto an input: the inputs are untouched")


def vanished(ck, d, sample, evaluate, run, tokens, lib):
    """The checkpoint RUN/latest names is removed while the tool opens it (before HDF5's first
    look at it, or between that and its opening), and RUN/latest then names a newer one."""
    if not os.path.exists(lib):
        print("SKIP vanished: %s is not built" % lib)
        return
    import shutil
    with open(os.path.join(run, "latest")) as f:
        ckpt = os.path.join(run, f.read().strip())
    live = os.path.join(d, "live")
    os.mkdir(live)
    for k in (1, 2):
        for name, cmd in (("gpt-sample", [sample, "--checkpoint", live, "--prompt", "The", "--max-new-tokens", "3"]),
                          ("gpt-eval", [evaluate, "--checkpoint", live, "--data", tokens])):
            shutil.copy(ckpt, os.path.join(live, "ckpt-00000001.h5"))
            shutil.copy(ckpt, os.path.join(live, "ckpt-00000002.h5"))
            with open(os.path.join(live, "latest"), "w") as f:
                f.write("ckpt-00000001.h5\n")
            r = fl.run(cmd, timeout=60, extra_env={
                "LD_PRELOAD": lib, "GT_VANISH_MATCH": "ckpt-00000001", "GT_VANISH_AT": str(k),
                "GT_VANISH_LATEST": os.path.join(live, "latest"), "GT_VANISH_NAME": "ckpt-00000002.h5"})
            ck.ok(r.rc == 0 and not os.path.exists(os.path.join(live, "ckpt-00000001.h5")),
                  "%s --checkpoint RUN: the checkpoint latest named vanishes at open %d, the newer one is taken"
                  % (name, k), r.describe())
        gone = os.path.join(live, "ckpt-00000003.h5")
        shutil.copy(ckpt, gone)
        r = fl.run([sample, "--checkpoint", gone, "--prompt", "The"], timeout=60,
                   extra_env={"LD_PRELOAD": lib, "GT_VANISH_MATCH": "ckpt-00000003", "GT_VANISH_AT": str(k)})
        one_error(ck, r, "gpt-sample --checkpoint FILE removed at open %d" % k, ["ckpt-00000003.h5", "removed"])
        ck.ok("damaged" not in r.err, "... not called damaged", r.err[-300:])


def viz_faults(ck, d, train, tokens, sample):
    viz = [tl.PYTHON, os.path.join(tl.PYDIR, "gpt_viz.py")]
    run = os.path.join(d, "vizrun")
    r = fl.run([train, "--data", tokens, "--out", run, "--steps", "4", "--attn-every", "1", "--n-layer", "1",
                "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "2", "--eval-batches", "1",
                "--log-every", "1"], timeout=120)
    gen = os.path.join(d, "vizgen.h5")
    r2 = fl.run([sample, "--checkpoint", run, "--prompt", "The", "--max-new-tokens", "5", "--attn-out", gen],
                timeout=60)
    if not ck.ok(r.rc == 0 and r2.rc == 0, "fixture: a run with attention.h5 and a generation file",
                 r.describe() + r2.describe()):
        return
    fifo, sock_path, odd = os.path.join(d, "vfifo"), os.path.join(d, "vsock"), os.path.join(d, "oddrun")
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(sock_path)
    loop = os.path.join(d, "vloop")
    os.symlink(loop, loop)
    os.mkdir(odd)
    shutil_copy(os.path.join(run, "attention.h5"), os.path.join(odd, "attention.h5"))
    os.mkfifo(os.path.join(odd, "metrics.csv"))
    page = os.path.join(d, "page.html")
    cases = [("RUN a FIFO", [fifo, "--html", page], [fifo, "FIFO"]),
             ("RUN a link loop", [loop, "--html", page], [loop, "symbolic links"]),
             ("RUN/metrics.csv a FIFO", [odd, "--html", page], ["metrics.csv", "FIFO"]),
             ("--gen /dev/zero", [run, "--gen", "/dev/zero", "--html", page], ["--gen", "character device"]),
             ("--gen a socket", [run, "--gen", sock_path, "--html", page], ["--gen", "socket"]),
             ("--gen a directory", [run, "--gen", d, "--html", page], ["--gen", "directory"]),
             ("--html a FIFO", [run, "--html", fifo], ["--html", "FIFO"]),
             ("--html = attention.h5", [run, "--html", os.path.join(run, "attention.h5")], ["--html", "same file"]),
             ("--html = metrics.csv", [run, "--html", os.path.join(run, "metrics.csv")], ["--html", "same file"]),
             ("--html = a --gen file", [run, "--gen", gen, "--html", gen], ["--html", "same file"]),
             ("--out a file", [run, "--out", gen], ["--out", "not a directory"]),
             ("--dpi 301", [run, "--out", os.path.join(d, "figs"), "--dpi", "301"], ["--dpi", "at most 300"]),
             ("--max-frames 1001", [run, "--out", os.path.join(d, "figs"), "--max-frames", "1001"], ["--max-frames"])]
    before = {p: fl.sha256(p) for p in (os.path.join(run, "attention.h5"), os.path.join(run, "metrics.csv"), gen)}
    for what, args, needles in cases:
        r = fl.run(viz + args, timeout=30)
        errs = tl.error_lines(r.err, "gpt_viz.py: error:")
        ck.ok(r.rc == 1 and len(errs) == 1 and all(n in errs[0] for n in needles) and "Traceback" not in r.err,
              "gpt_viz.py %s: exit 1, one line naming it" % what, r.describe())
    ck.ok(all(fl.sha256(p) == h for p, h in before.items()) and os.path.exists(fifo) and not os.path.isfile(fifo)
          and not os.path.exists(page) and not os.path.exists(os.path.join(d, "figs")),
          "gpt_viz.py: the inputs and the FIFO are untouched, nothing written")
    sock.close()
    with open("/dev/full", "wb") as full:
        p = subprocess.run(viz + [run, "--html", page], stdout=full, stderr=subprocess.PIPE, env=fl.env(), timeout=60)
    err = p.stderr.decode(errors="replace")
    ck.ok(p.returncode == 2 and tl.error_lines(err, "gpt_viz.py: error:") == [err.strip()] and "stdout" in err,
          "gpt_viz.py > /dev/full: exit 2, one line naming stdout", "rc %s: %s" % (p.returncode, err))
    p = subprocess.Popen(viz + [run, "--html", page], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=fl.env())
    p.stdout.close()
    err = p.stderr.read().decode(errors="replace")
    p.wait(timeout=120)
    ck.ok(p.returncode == 128 + signal.SIGPIPE and not err.strip(), "gpt_viz.py | head: a quiet end",
          "rc %s: %r" % (p.returncode, err))
    # a signal while the PNGs are written: every file there complete, no temporary file
    ref = os.path.join(d, "figs-ref")
    r = fl.run(viz + [run, "--out", ref, "--gen", gen], timeout=120)
    names = sorted(os.listdir(ref)) if r.rc == 0 else []
    ck.ok(len(names) > 5, "fixture: gpt_viz.py --out draws the PNGs", r.describe())
    for i, sig in enumerate(SIGNALS):
        out = os.path.join(d, "sig%d" % i)
        p = subprocess.Popen(viz + [run, "--out", out, "--gen", gen], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env=fl.env(), start_new_session=True)
        wait = time.time() + 60
        while time.time() < wait and p.poll() is None and len(os.listdir(out) if os.path.isdir(out) else []) < 3:
            time.sleep(0.01)
        p.send_signal(sig)
        p.wait(timeout=60)
        left = sorted(os.listdir(out)) if os.path.isdir(out) else []
        same = all(n in names and fl.sha256(os.path.join(out, n)) == fl.sha256(os.path.join(ref, n)) for n in left)
        ck.ok(p.returncode == 128 + sig and same and not any(".tmp" in n for n in left),
              "gpt_viz.py --out: %s while writing PNGs: status %d, every PNG left complete, no temporary file"
              % (signal.Signals(sig).name, 128 + sig), "rc %s, files %s" % (p.returncode, left))


def shutil_copy(a, b):
    with open(a, "rb") as f, open(b, "wb") as g:
        g.write(f.read())


def sample_sbatch(ck, d, run):
    script = os.path.join(tl.SRC, "jobs", "sample.sbatch")
    fifo = os.path.join(d, "pfifo")
    os.mkfifo(fifo)
    big = os.path.join(d, "big-prompts.txt")
    with open(big, "wb") as f:
        f.truncate(5 << 20)
    loop = os.path.join(d, "ploop")
    os.symlink(loop, loop)
    for what, path, needle in (("a directory", d, "not a regular file"), ("a FIFO", fifo, "not a regular file"),
                               ("/dev/zero", "/dev/zero", "not a regular file"), ("a link loop", loop, "symbolic link"),
                               ("over 4 MiB", big, "4 MiB")):
        r = fl.run(["bash", script], timeout=30, cwd=d, extra_env={"CKPT": run, "PROMPT_FILE": path,
                                                                   "GT_BUILD": tl.BUILD, "MAX_NEW_TOKENS": "2"})
        ck.ok(r.rc == 1 and r.err.count("ERROR") == 1 and needle in r.err and "=== sample" not in r.out,
              "sample.sbatch PROMPT_FILE %s: one message, exit 1, nothing sampled" % what, r.describe())


def main():
    bpe, sample, train, evaluate = tl.require("gpt-bpe", "gpt-sample", "gpt-train", "gpt-eval")
    d = tl.tmpdir("gt-tools-")
    ck = tl.Checks("test_tool_faults")
    corpus, vocab, tokens = fl.make_tokens(bpe, d, 60000)
    run = fl.make_checkpoint(train, tokens, os.path.join(d, "run"))
    fl.run_parts(ck, d, ((not_a_file, (ck, d, bpe, corpus, vocab, tokens)),
                         (signals_each_phase, (ck, d, bpe, corpus, vocab)),
                         (stdout_faults, (ck, d, bpe, corpus, vocab, tokens)),
                         (same_file, (ck, d, bpe, corpus, vocab)),
                         (messages, (ck, d, bpe, corpus, vocab)),
                         (sample_faults, (ck, d, sample, run)),
                         (pattern_limit, (ck, d, bpe)),
                         (encode_memory, (ck, d, bpe, vocab)),
                         (eval_faults, (ck, d, evaluate, run, tokens)),
                         (vanished, (ck, d, sample, evaluate, run, tokens, os.path.join(tl.BUILD, "libgt_failwrite.so"))),
                         (viz_faults, (ck, d, train, tokens, sample)),
                         (sample_sbatch, (ck, d, run))))


if __name__ == "__main__":
    main()
