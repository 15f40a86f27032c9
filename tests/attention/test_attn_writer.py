#!/usr/bin/python3
"""attention.h5 as written by io/attention_io.c (through tests/attn_write_check.c), read
with h5py: the layout of docs/formats.md, float16, resume truncation, a crash mid-run, a SWMR reader
while records are appended, a real model's probe, UTF-8 token texts, bad probes."""
import os
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import gpt_attention as ga  # noqa: E402

TOOL = os.path.join(tl.BUILD, "attn_write_check")
TMP = tl.tmpdir("attn_writer_")

# the hand-made vocabulary of attn_write_check: bytes, then "Hé" and a cut 3-byte character
TOKEN_BYTES = [bytes([i]) for i in range(256)] + [b"H\xc3\xa9", b"\xe2\x82"]
PROBE = [ord(c) for c in "Hello, w"] + [256, 257, 0xC3] + [ord(c) for c in "! xyz"]


def run(*args, expect=0):
    return tl.run_ok([TOOL, *args], expect=expect)


def raw(path, shape):
    a = np.fromfile(path, np.float32)
    return a.reshape((-1,) + tuple(shape))


def paths(name):
    h5, bn = os.path.join(TMP, name + ".h5"), os.path.join(TMP, name + ".bin")
    for p in (h5, bn):
        if os.path.exists(p):
            os.remove(p)
    return h5, bn


def token_losses(steps, T):
    """what attn_write_check writes as the per-token losses of a record"""
    return np.array([[np.float32(0.5) + np.float32(0.25) * np.float32(t) + np.float32(s) / np.float32(1000)
                      for t in range(T - 1)] for s in steps], np.float32)


def check_attention_values(a):
    """rows sum to 1, nothing above the diagonal, all in [0, 1]"""
    T = a.shape[-1]
    assert np.allclose(a.sum(-1), 1.0, atol=2e-3), "rows do not sum to 1"
    assert (a[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0).all(), "upper triangle not 0"
    assert (a >= 0).all() and (a <= 1.0005).all()


def test_layout():
    h5, bn = paths("layout")
    run("write", f"out={h5}", f"raw={bn}", "L=2", "H=3", "T=7", "records=5", "every=10")
    with h5py.File(h5, "r") as f:
        assert f.attrs["format"] == "gpt-train/attention" and f.attrs["format_version"] == 1
        assert (f.attrs["n_layer"], f.attrs["n_head"], f.attrs["every"]) == (2, 3, 10)
        d = f["attention"]
        assert d.shape == (5, 2, 3, 7, 7) and d.dtype == np.float32
        assert d.chunks == (1, 2, 3, 7, 7), d.chunks
        assert d.compression == "gzip"
        assert d.maxshape == (None, 2, 3, 7, 7)
        assert d.attrs["axes"] == "step,layer,head,query,key"
        assert f["step"].dtype == np.int64 and f["step"].maxshape == (None,)
        assert f["loss"].dtype == np.float32
        assert f["step"][()].tolist() == [10, 20, 30, 40, 50]
        assert np.allclose(f["loss"][()], [10.0 / (s + 1) for s in (10, 20, 30, 40, 50)])
        assert f["probe/token_ids"].dtype == np.int32
        assert f["probe/token_ids"][()].tolist() == PROBE[:7]
        np.testing.assert_array_equal(d[()], raw(bn, (2, 3, 7, 7)))
        check_attention_values(d[()])
        tl = f["token_loss"]
        assert tl.dtype == np.float32 and tl.shape == (5, 6) and tl.maxshape == (None, 6), (tl.shape, tl.maxshape)
        np.testing.assert_array_equal(tl[()], token_losses([10, 20, 30, 40, 50], 7))
    # a one-token probe has nothing to predict: no /token_loss, and readers say None
    h5, bn = paths("one")
    run("write", f"out={h5}", f"raw={bn}", "T=1", "records=2")
    with h5py.File(h5, "r") as f:
        assert "token_loss" not in f and f["attention"].shape == (2, 2, 3, 1, 1)
    assert ga.read_attention(h5).token_loss is None
    # the texts: valid UTF-8 for the cut character (U+FFFD), "Hé" intact
    h5, bn = paths("texts")
    run("write", f"out={h5}", f"raw={bn}", "T=13", "records=1")
    rec = ga.read_attention(h5)
    want = [TOKEN_BYTES[i].decode("utf-8", "replace") for i in PROBE[:13]]
    assert rec.tokens == want, (rec.tokens, want)
    assert rec.tokens[8] == "Hé" and rec.tokens[9] == "\ufffd" and rec.tokens[10] == "\ufffd"


def test_float16():
    h5, bn = paths("f16")
    run("write", f"out={h5}", f"raw={bn}", "T=12", "records=3", "float16=1")
    with h5py.File(h5, "r") as f:
        d = f["attention"]
        assert d.dtype == np.float16
        want = raw(bn, (2, 3, 12, 12)).astype(np.float16)  # numpy rounds to nearest even, as we do
        np.testing.assert_array_equal(d[()], want)
        check_attention_values(d[()].astype(np.float32))


def test_resume():
    h5, bn = paths("resume")
    run("write", f"out={h5}", f"raw={bn}", "records=5", "every=10", "seed=1")        # steps 10..50
    first = raw(bn, (2, 3, 7, 7)).copy()
    os.remove(bn)
    # resumed from the step-30 checkpoint: 40 and 50 are dropped and written again
    run("write", f"out={h5}", f"raw={bn}", "records=3", "every=10", "first=40", "resume=30", "seed=2")
    second = raw(bn, (2, 3, 7, 7))
    with h5py.File(h5, "r") as f:
        steps = f["step"][()]
        assert steps.tolist() == [10, 20, 30, 40, 50, 60], steps
        assert (np.diff(steps) > 0).all()
        assert f["loss"].shape == (6,) and f["attention"].shape[0] == 6
        np.testing.assert_array_equal(f["attention"][:3], first[:3])
        np.testing.assert_array_equal(f["attention"][3:], second)
        np.testing.assert_array_equal(f["token_loss"][()], token_losses([10, 20, 30, 40, 50, 60], 7))
    # a file from before gpt-train recorded /token_loss: a resume adds it, NaN for the records kept
    with h5py.File(h5, "a") as f:
        del f["token_loss"]
    run("write", f"out={h5}", f"raw={bn}", "records=1", "every=10", "first=50", "resume=40")
    with h5py.File(h5, "r") as f:
        assert f["step"][()].tolist() == [10, 20, 30, 40, 50]
        tl = f["token_loss"][()]
        assert tl.shape == (5, 6) and np.isnan(tl[:4]).all(), tl
        np.testing.assert_array_equal(tl[4], token_losses([50], 7)[0])
    rec = ga.read_attention(h5)
    assert len(rec) == 5 and np.isnan(rec.token_loss[0]).all()
    # a resume at a step before every record empties it; resume without a file creates one
    run("write", f"out={h5}", f"raw={bn}", "records=1", "first=5", "resume=0", "every=5")
    with h5py.File(h5, "r") as f:
        assert f["step"][()].tolist() == [5]
        assert f.attrs["every"] == 5  # the resumed run's --attn-every
    h5b, bnb = paths("resume_new")
    run("write", f"out={h5b}", f"raw={bnb}", "records=2", "resume=100", "first=110")
    with h5py.File(h5b, "r") as f:
        assert f["step"][()].tolist() == [110, 120]
    # a different probe length or model on resume: one message naming the file, exit 1
    p = run("write", f"out={h5}", f"raw={bn}", "T=6", "records=1", "first=500", "resume=400", expect=1)
    assert h5 in p.err and "move it away" in p.err and p.err.count("\n") == 1, p.err
    p = run("write", f"out={h5}", f"raw={bn}", "H=2", "records=1", "first=500", "resume=400", expect=1)
    assert h5 in p.err, p.err
    # a fresh run (resume < 0) replaces the file
    run("write", f"out={h5}", f"raw={bn}", "records=2")
    with h5py.File(h5, "r") as f:
        assert f["step"][()].tolist() == [10, 20]


def test_crash():
    h5, bn = paths("crash")
    p = tl.run([TOOL, "write", f"out={h5}", f"raw={bn}", "records=6", "crash_after=3"])
    assert p.rc == -9, p.rc  # SIGKILL: no close, no final flush
    want = raw(bn, (2, 3, 7, 7))
    rec = ga.read_attention(h5)
    assert rec.steps.tolist() == [10, 20, 30], rec.steps
    np.testing.assert_array_equal(rec.all(), want)
    # and the next run resumes from it
    os.remove(bn)
    run("write", f"out={h5}", f"raw={bn}", "records=2", "first=40", "resume=30")
    assert ga.read_attention(h5).steps.tolist() == [10, 20, 30, 40, 50]


def test_crashed_mid_append():
    """tests/faults/found/attention-crashed-mid-append.h5: a gpt-train run (2 layers, 2 heads,
    16-token probe, steps 1..9) killed -9 inside an append, kept by the crash soak. Its flushed
    metadata points at space past the end of allocation the superblock records, so HDF5 fails
    with "addr overflow" when a resume frees or reuses that space, unless the writer moves the
    end of allocation first (what `h5clear --increment` does)."""
    import shutil
    h5, bn = paths("crashed")
    shutil.copy(os.path.join(tl.SRC, "tests", "faults", "found", "attention-crashed-mid-append.h5"), h5)
    try:
        h5py.File(h5, "r").close()
        raise AssertionError("the fixture should be marked open for writing")
    except OSError:
        pass
    with h5py.File(h5, "r", swmr=True) as f:
        probe = f["probe/token_ids"][()].tolist()
        assert f["step"][()].tolist() == list(range(1, 10))
        before = f["attention"][:8]
    # resume at step 8 (drops the record of step 9), then append steps 9 and 10
    run("write", f"out={h5}", f"raw={bn}", "L=2", "H=2", "T=16", "V=4096", "probe=" + ",".join(map(str, probe)),
        "records=2", "first=9", "every=1", "resume=8")
    with h5py.File(h5, "r") as f:  # plain h5py: closed cleanly
        assert f["step"][()].tolist() == list(range(1, 11)), f["step"][()]
        np.testing.assert_array_equal(f["attention"][:8], before)
        np.testing.assert_array_equal(f["attention"][8:], raw(bn, (2, 2, 16, 16)))


def test_swmr_reader_while_writing():
    h5, bn = paths("swmr")
    w = tl.spawn([TOOL, "write", f"out={h5}", f"raw={bn}", "T=9", "records=8", "sleep_ms=300"])
    seen = []
    deadline = time.time() + 60
    while w.poll() is None and time.time() < deadline:
        if os.path.exists(h5):
            try:
                rec = ga.read_attention(h5)
            except (OSError, KeyError):
                time.sleep(0.05)  # the file is being renamed into place
                continue
            n = len(rec)
            if n and (not seen or n != seen[-1]):
                seen.append(n)
                a = rec.all()
                check_attention_values(a)
                assert (np.diff(rec.steps) > 0).all()
                np.testing.assert_array_equal(a, raw(bn, (2, 3, 9, 9))[:n])
        time.sleep(0.1)
    assert w.wait() == 0, w.stderr.read()
    assert len(seen) >= 3 and seen[-1] <= 8, f"reader saw too few intermediate states: {seen}"
    assert seen == sorted(seen)
    assert len(ga.read_attention(h5)) == 8
    # h5py's own SWMR mode with refresh() on one open handle
    h5, bn = paths("swmr2")
    w = tl.spawn([TOOL, "write", f"out={h5}", f"raw={bn}", "records=5", "sleep_ms=300"])
    while not os.path.exists(h5):
        time.sleep(0.05)
    time.sleep(0.2)
    sizes = []
    with h5py.File(h5, "r", libver="latest", swmr=True) as f:
        d = f["step"]
        while w.poll() is None:
            d.refresh()
            if not sizes or d.shape[0] != sizes[-1]:
                sizes.append(d.shape[0])
            time.sleep(0.05)
        d.refresh()
        sizes.append(d.shape[0])
    assert w.wait() == 0
    assert sizes[-1] == 5 and len(set(sizes)) >= 3, sizes


def test_polling_reader_never_locks_the_writer_out():
    """A reader that opens the file the instant it appears (plain or SWMR) must not keep the
    writer from opening it: the file is published already in SWMR-write mode."""
    import threading
    h5, bn = paths("race")
    stop = []

    def poll(swmr):
        while not stop:
            try:
                with h5py.File(h5, "r", swmr=swmr) as f:
                    f["step"].shape
            except Exception:  # noqa: BLE001 - absent, or being renamed into place
                pass

    for swmr in (False, True):
        th = threading.Thread(target=poll, args=(swmr,))
        th.start()
        try:
            for _ in range(12):
                if os.path.exists(h5):
                    os.remove(h5)
                run("write", f"out={h5}", f"raw={bn}", "records=2")
        finally:
            stop.append(1)
            th.join()
        stop.clear()


def test_model_probe():
    h5, bn = paths("model")
    run("model", f"out={h5}", f"raw={bn}", "records=3")
    rec = ga.read_attention(h5)
    assert rec.steps.tolist() == [1, 2, 3]
    assert (rec.n_layer, rec.n_head, rec.T) == (2, 2, 12)
    a = rec.all()
    check_attention_values(a)
    # equal to a separate eval-mode forward of the probe (no dropout leaked in)
    r = np.fromfile(bn, np.float32).reshape(3, 2 * 2 * 12 * 12 + 1)
    np.testing.assert_array_equal(a, r[:, :-1].reshape(3, 2, 2, 12, 12))
    assert not np.allclose(a[0], a[2]), "weights changed, so should the attention"
    assert np.isfinite(rec.loss).all() and (rec.loss > 0).all()
    # the token losses: 11 per record, their mean the engine's loss of the shifted probe
    tl = rec.token_loss
    assert tl.shape == (3, 11) and np.isfinite(tl).all() and (tl > 0).all()
    np.testing.assert_allclose(tl.mean(1), r[:, -1], rtol=1e-5)


def test_bad_probe():
    h5, bn = paths("bad")
    p = run("write", f"out={h5}", f"raw={bn}", "T=20", "block=16", expect=1)
    assert "--attn-prompt" in p.err and "16" in p.err and p.err.count("\n") == 1, p.err
    p = run("write", f"out={h5}", f"raw={bn}", "T=0", expect=1)
    assert "no tokens" in p.err, p.err
    assert not os.path.exists(h5)


def test_utf8_sanitize():
    rng = np.random.default_rng(0)
    cases = [b"", b"abc", "héllo wörld €😀".encode(), b"\xe2\x82", b"\xe2\x82A", b"\xc0\xaf", b"\xed\xa0\x80",
             b"\xf4\x90\x80\x80", b"\xf0\x9f\x98", b"\xff\xfe", b"\xe0\x80\xaf"]
    pool = list(range(256))
    for _ in range(200):  # random bytes biased towards UTF-8 lead/continuation bytes
        n = int(rng.integers(1, 9))
        cases.append(bytes(int(rng.choice(pool)) if rng.random() < 0.3 else
                           int(rng.choice([0xC3, 0xE2, 0xF0, 0x80, 0x82, 0x9F, 0xBF, 0x41])) for _ in range(n)))
    cases = [c for c in cases if not set(c) & {0, 10, 13}]  # one line per case in text mode
    p = run("utf8", *[c.hex() or "" for c in cases if c])
    got = p.stdout.decode("utf-8").split("\n")[:-1]  # strict: a raw invalid byte is a failure
    want = [c.decode("utf-8", "replace") for c in cases if c]
    assert len(got) == len(want)
    for c, g, w in zip([c for c in cases if c], got, want):
        assert g == w, f"{c!r}: got {g!r}, Python gives {w!r}"


if __name__ == "__main__":
    tl.require("attn_write_check", fail=True)
    for t in [v for k, v in list(globals().items()) if k.startswith("test_")]:
        tl.timed(t)
    tl.rmtree(TMP)  # kept when a test fails, for a look
