#!/usr/bin/python3
"""gpt_viz.py --html and --serve without a browser (tests/browser/ drives the page itself):
the quantization's bound, the records a page keeps, the page's data against the HDF5 files,
the size budget (12 layers x 12 heads, a 64-token probe, 60 records <= 25 MB), the server's
API and clean stop, and bad input: one error line, exit 1, no file written."""
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import testlib as tl  # noqa: E402
import gpt_attention as ga  # noqa: E402
import gpt_explorer as ge  # noqa: E402

TOOL = os.path.join(tl.BUILD, "attn_write_check")
VIZ = os.path.join(tl.PYDIR, "gpt_viz.py")
TMP = tl.tmpdir("viz_explorer_")
BUDGET_MB = 25


def sh(*args, expect=0):
    return tl.run_ok(list(args), expect=expect)


def viz(*args, expect=0):
    return sh(tl.PYTHON, VIZ, *args, expect=expect)


def one_error(p, *needles):
    """exit 1 with exactly one line on stderr, `gpt_viz.py: error: ...` holding the needles"""
    why = tl.refusal(p, *needles, prog="gpt_viz.py")
    assert not why, why
    return p.err.strip()


def page_data(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    tag = '<script type="application/json" id="explorer-data">'
    start = text.index(tag) + len(tag)
    return json.loads(text[start: text.index("</script>", start)]), text


def make_run(name, L=2, H=3, T=9, records=7, extra=()):
    run = os.path.join(TMP, name)
    os.makedirs(run)
    sh(TOOL, "write", f"out={run}/attention.h5", f"raw={run}/raw.bin", f"L={L}", f"H={H}", f"T={T}",
       f"records={records}", "every=5", *extra)
    with open(os.path.join(run, "metrics.csv"), "w") as f:
        f.write("step,train_loss,val_loss\n")
        for s in range(1, 5 * records + 1):
            f.write(f"{s},{6 - 0.05 * s:.4f},{'%.4f' % (6 - 0.04 * s) if s % 10 == 0 else ''}\n")
    return run


def no_leftovers(d):
    left = [f for f in os.listdir(d) if f.startswith(".explorer-") or f.endswith(".html")]
    assert not left, left


def test_quantization():
    rng = np.random.default_rng(0)
    a = rng.random((3, 4, 16, 16)).astype(np.float32) ** 4
    a = np.tril(a)
    a /= a.sum(-1, keepdims=True)
    a[0, 0, 5] = 0  # an all-zero row
    scale, q = ge.quantize_rows(a)
    rowmax = a.max(-1)
    assert scale.dtype == np.float16 and (scale.astype(np.float32) >= rowmax).all(), "the scale is the max rounded up"
    err = np.abs(ge.dequantize(scale, q) - a)
    bound = rowmax / 510 * (1 + 2 ** -10) + 1e-7
    assert (err <= bound[..., None]).all(), float((err - bound[..., None]).max())
    assert (ge.dequantize(scale, q)[0, 0, 5] == 0).all()
    # a record packs the lower triangle only, and decodes to the same values
    b = ge.pack_record(a)
    d = ge.decode_record(b, 3, 4, 16)
    np.testing.assert_array_equal(d, ge.dequantize(scale, np.tril(q)))
    assert (np.triu(d, 1) == 0).all()
    import zlib
    assert len(zlib.decompress(b)) == ge.record_bytes(3, 4, 16)


def test_select_records():
    assert ge.select_records(5, 60, 100) == (list(range(5)), "")
    idx, note = ge.select_records(1000, 60, 100)
    assert len(idx) == 60 and idx[0] == 0 and idx[-1] == 999 and (np.diff(idx) > 0).all()
    assert np.ptp(np.diff(idx)) <= 1, "evenly spaced"
    assert "1000 records" in note and "60" in note and "--max-steps" in note
    # a huge record: fewer records, and the note says why
    idx, note = ge.select_records(100, 60, 10 << 20, max_bytes=64 << 20)
    assert len(idx) == 6 and idx[-1] == 99 and "size limit" in note, (idx, note)
    idx, _ = ge.select_records(100, 60, 100 << 20, max_bytes=64 << 20)
    assert idx == [99], "at least the last record"


def test_page_data():
    run = make_run("run", T=12)
    html = os.path.join(TMP, "run.html")
    p = viz(run, "--html", html, "--max-steps", "4", "--layer", "0", "--head", "-1")
    assert p.out.split() == [html]
    note = [l for l in p.err.split("\n") if l]
    assert len(note) == 1 and "7 records" in note[0] and "keeps 4" in note[0], p.err  # subsampled, and said so
    d, text = page_data(html)
    rec = ga.read_attention(run)
    assert d["records"]["index"] == [0, 2, 4, 6] and d["records"]["step"] == [5, 15, 25, 35]
    assert d["tokens"] == rec.tokens and d["tokens"][8:10] == ["Hé", "\ufffd"]  # a cut UTF-8 character: U+FFFD
    assert d["start"] == {"layer": 0, "head": 2}
    assert d["note"] and d["n_records"] == 7
    for i in d["records"]["index"]:
        got = ge.decode_record(base64.b64decode(d["blobs"][str(i)]), 2, 3, 12)
        want = rec.record(i)
        assert (np.abs(got - want) <= want.max(-1, keepdims=True) / 510 * 1.001 + 1e-7).all()
    m = d["metrics"]
    assert m["train_loss"]["step"] == list(range(1, 36)) and m["val_loss"]["step"] == [10, 20, 30]
    # self-contained: no URL the browser would fetch; the policy forbids fetching anyway
    for bad in ("http://", "https://", "src=", "@import", "url("):
        assert bad not in text.replace("http://www.w3.org/2000/svg", ""), bad
    assert "connect-src 'none'" in text
    no_leftovers_but(TMP, "run.html")


def no_leftovers_but(d, keep):
    left = [f for f in os.listdir(d) if f.startswith(".explorer-")]
    assert not left, left
    assert os.path.exists(os.path.join(d, keep))


def test_budget():
    """The budget shape, random attention (compresses worst): the page stays <= 25 MB."""
    run = os.path.join(TMP, "budget")
    os.makedirs(run)
    sh(TOOL, "write", f"out={run}/attention.h5", "raw=/dev/null", "L=12", "H=12", "T=64", "block=64",
       "records=75", "every=100", "float16=1")
    html = os.path.join(TMP, "budget.html")
    p = viz(run, "--html", html)
    assert "75 records" in p.err and "keeps 60" in p.err, p.err
    size = os.path.getsize(html)
    print(f"  budget page: {size / 1e6:.2f} MB (12 layers x 12 heads, 64-token probe, 60 records)")
    assert size <= BUDGET_MB * 1e6, size
    d, _ = page_data(html)
    assert len(d["records"]["index"]) == 60 and d["records"]["index"][-1] == 74
    os.remove(html)


def test_bad_input():
    run = make_run("bad")
    out = os.path.join(TMP, "out")
    os.makedirs(out)
    html = os.path.join(out, "x.html")
    # nothing to do, or two things at once
    one_error(viz(run, expect=1), "--html", "--out")
    one_error(viz(run, "--serve", "--html", html, expect=1), "--serve")
    # --max-frames 0 and friends: one line, not a traceback
    one_error(viz(run, "--out", out, "--max-frames", "0", expect=1), "--max-frames 0")
    one_error(viz(run, "--html", html, "--max-steps", "0", expect=1), "--max-steps 0")
    one_error(viz(run, "--serve", "--port", "70000", expect=1), "--port 70000")
    # an out-of-range layer or head no longer wraps
    one_error(viz(run, "--out", out, "--layer", "7", expect=1), "--layer 7", "2 layers")
    one_error(viz(run, "--out", out, "--head", "3", expect=1), "--head 3", "3 heads")
    one_error(viz(run, "--out", out, "--layer", "-3", expect=1), "--layer -3")
    one_error(viz(run, "--html", html, "--head", "5", expect=1), "--head 5")
    assert os.listdir(out) == [], os.listdir(out)
    # a run without attention.h5
    empty = os.path.join(TMP, "empty")
    os.makedirs(empty)
    with open(os.path.join(empty, "metrics.csv"), "w") as f:
        f.write("step,train_loss\n1,5.0\n")
    one_error(viz(empty, "--html", html, expect=1), "no attention.h5", "--attn-every")
    one_error(viz(os.path.join(TMP, "nope"), "--html", html, expect=1), "nope")
    # a generation file of another model (the run has 2 x 3, the generator 2 x 2)
    gen = os.path.join(TMP, "gen.h5")
    sh(TOOL, "gen", f"out={gen}", f"raw={TMP}/gen.bin", "P=4", "N=5", "block=8")
    one_error(viz(run, "--gen", gen, "--html", html, expect=1), gen, "2 layers x 2 heads", "2 x 3")
    one_error(viz(run, "--gen", os.path.join(TMP, "nogen.h5"), "--html", html, expect=1), "nogen.h5")
    # a file that is not HDF5, and one of another format
    junk = os.path.join(TMP, "junk.h5")
    with open(junk, "wb") as f:
        f.write(b"not hdf5" * 100)
    one_error(viz(junk, "--html", html, expect=1), "junk.h5")
    one_error(viz(run, "--gen", junk, "--html", html, expect=1), "junk.h5")
    one_error(viz(run, "--gen", os.path.join(run, "attention.h5"), "--html", html, expect=1), "gpt-train/generation")
    # the page's directory does not exist
    one_error(viz(run, "--html", os.path.join(TMP, "no", "dir", "x.html"), expect=1), "does not exist")
    one_error(viz(run, "--html", out, expect=1), "directory")
    assert os.listdir(out) == [], os.listdir(out)
    # --step that the page does not keep
    one_error(viz(run, "--html", html, "--step", "11", expect=1), "--step 11")
    assert os.listdir(out) == [], os.listdir(out)


def test_crash_left_open():
    """attention.h5 of a writer killed mid-run stays marked open for writing: plain h5py
    refuses it, gpt_viz reads it (swmr=True) and draws the records flushed before the kill."""
    run = os.path.join(TMP, "crash")
    os.makedirs(run)
    p = tl.run([TOOL, "write", f"out={run}/attention.h5", f"raw={run}/raw.bin", "L=2", "H=2", "T=6",
                "records=9", "crash_after=4"])
    assert p.rc == -signal.SIGKILL, p.rc
    try:
        h5py.File(os.path.join(run, "attention.h5"), "r").close()
        raise AssertionError("the kill did not leave attention.h5 marked open")
    except OSError:
        pass
    html = os.path.join(TMP, "crash.html")
    viz(run, "--html", html)
    d, _ = page_data(html)
    assert d["records"]["step"] == [10, 20, 30, 40], d["records"]["step"]


def test_invalid_utf8():
    """token texts that are not UTF-8 (a file not written by our writers) show as U+FFFD"""
    run = make_run("utf8", T=5, records=2)
    p = os.path.join(run, "attention.h5")
    with h5py.File(p, "a") as f:
        del f["probe/tokens"]
        f.create_dataset("probe/tokens", data=np.array([b"a", b"\xff\xfe", b"c\xc3", b"\xe2\x82\xac", b"x"], dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
    html = os.path.join(TMP, "utf8.html")
    viz(run, "--html", html)
    d, _ = page_data(html)
    assert d["tokens"] == ["a", "\ufffd\ufffd", "c\ufffd", "\u20ac", "x"], d["tokens"]
    # the PNG path reads the same way
    viz(run, "--out", os.path.join(TMP, "utf8figs"), "--dpi", "30")


def get(url):
    with urllib.request.urlopen(url, timeout=20) as r:
        return r.status, r.read()


def start_server(run, *args, preexec_fn=None):
    p = subprocess.Popen([tl.PYTHON, VIZ, run, "--serve", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
    line = p.stdout.readline()
    assert "serving" in line, line + p.stderr.read()
    return p, line.split("at ", 1)[1].split()[0]


def test_serve():
    run = make_run("serve", records=3)
    p, url = start_server(run, "--port", "0")
    try:
        assert url.startswith("http://127.0.0.1:"), url
        status, body = get(url)
        assert status == 200 and b'id="explorer-data"' in body and b"connect-src 'self'" in body
        status, body = get(url + "api/meta")
        meta = json.loads(body)
        assert meta["records"]["step"] == [5, 10, 15] and meta["live"]["version"] == 1
        rec = ga.read_attention(run)
        for i in range(3):
            status, blob = get(url + f"api/record?i={i}")
            got, want = ge.decode_record(blob, 2, 3, 9), rec.record(i)
            assert (np.abs(got - want) <= want.max(-1, keepdims=True) / 510 * 1.001 + 1e-7).all()
        try:
            get(url + "api/record?i=9")
            raise AssertionError("record 9 exists?")
        except urllib.error.HTTPError as e:
            assert e.code == 404
        # records appended while serving show up in the next /api/meta
        sh(TOOL, "write", f"out={run}/attention.h5", f"raw={run}/raw.bin", "L=2", "H=3", "T=9", "records=2",
           "every=5", "first=20", "resume=15")
        meta = json.loads(get(url + "api/meta")[1])
        assert meta["records"]["step"] == [5, 10, 15, 20, 25], meta["records"]["step"]
        # the port is taken now: a second server says so in one line
        one_error(tl.run([tl.PYTHON, VIZ, run, "--serve", "--port", url.rsplit(":", 1)[1].strip("/")]),
                  "already in use", "--port")
        p.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0 and "stopped" in out and err == "", (p.returncode, out, err)
    finally:
        if p.poll() is None:
            p.kill()
    # SIGTERM stops it cleanly too; a run without attention.h5 yet is waited for
    empty = os.path.join(TMP, "later")
    os.makedirs(empty)
    p, url = start_server(empty, "--port", "0")
    stops(p, signal.SIGTERM, lambda: get(url)[1])
    # started as a script's background job, which inherits SIGINT ignored: Ctrl-C still stops it
    p, url = start_server(empty, "--port", "0", preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    stops(p, signal.SIGINT)


def stops(p, sig, before=None):
    """The server p ends with exit 0 and 'stopped' on signal sig (after `before`, whose
    result, when given, is the waiting page)."""
    try:
        if before:
            assert b"Waiting for the run" in before()
        p.send_signal(sig)
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0 and "stopped" in out, (sig, p.returncode, out, err)
    finally:
        if p.poll() is None:
            p.kill()


def test_port_in_use():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        run = make_run("port", records=1)
        one_error(viz(run, "--serve", "--port", str(port), expect=1), f"--port {port}", "already in use")
    finally:
        s.close()


if __name__ == "__main__":
    tl.require("attn_write_check", fail=True)
    for t in (test_quantization, test_select_records, test_page_data, test_budget, test_bad_input,
              test_crash_left_open, test_invalid_utf8, test_serve, test_port_in_use):
        tl.timed(t)
    tl.rmtree(TMP)  # kept when a test fails, for a look
