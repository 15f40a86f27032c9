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
generation file). Exact content: an output written under a fault is compared, dataset by
dataset, with the same command's output on a healthy disk.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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

    def __init__(self, name, cmd, ignore=()):
        self.name, self.cmd, self.ignore = name, cmd, ignore
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


def failing_call(ck, d, tools, lib):
    """Fails the k-th write-side call on the temp file, for each k (all of them up to 40,
    beyond that the first and last 15 and an even spread)."""
    for tool in tools:
        out = os.path.join(d, tool.name.replace(" ", "-") + ".h5")
        r = fl.run(tool.cmd(out), timeout=120, extra_env={"LD_PRELOAD": lib, "GT_FAIL_AT": "0"})
        line = [l for l in r.err.splitlines() if l.startswith("failwrite:")]
        n = int(line[-1].split()[1]) if line else 0
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


def main():
    bpe, sample, train = fl.require("gpt-bpe", "gpt-sample", "gpt-train")
    lib = os.path.join(fl.BUILD, "libgt_failwrite.so")
    d = fl.tmpdir("gt-io-")
    ck = fl.Checks("test_io_faults")
    corpus, vocab, tokens = fl.make_tokens(bpe, d, 60000)
    run = fl.make_checkpoint(train, tokens, os.path.join(d, "run"))
    tools = [
        Tool("gpt-bpe train", lambda out: [bpe, "train", "--input", corpus, "--out", out, "--vocab-size", "320"]),
        Tool("gpt-bpe encode", lambda out: [bpe, "encode", "--vocab", vocab, "--input", corpus, "--out", out],
             ignore=("source",)),
        Tool("gpt-sample --attn-out", lambda out: [sample, "--checkpoint", run, "--prompt", "The quick",
                                                   "--max-new-tokens", "60", "--attn-out", out],
             ignore=("checkpoint",)),
    ]
    for tool in tools:
        tool.ref_path = os.path.join(d, "ref-" + tool.name.replace(" ", "-") + ".h5")
        r = fl.run(tool.cmd(tool.ref_path), timeout=120)
        if r.rc != 0:
            print("reference run failed\n" + r.describe())
            sys.exit(1)
        tool.ref = tool.content(tool.ref_path)
    parts = [(full_disk, (ck, d, tools)), (size_limit, (ck, d, tools))]
    if os.path.exists(lib):
        parts.append((failing_call, (ck, d, tools, lib)))
    else:
        print("SKIP failing call: %s is not built" % lib)
    fl.run_parts(ck, d, parts)


if __name__ == "__main__":
    main()
