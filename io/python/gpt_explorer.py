"""The attention explorer: one self-contained HTML page (docs/attention.md "The explorer").

    gpt_viz.py RUN [--gen GEN.h5 ...] --html OUT.html [--max-steps 60]
    gpt_viz.py RUN [--gen GEN.h5 ...] --serve [--port 8000]

The page inlines its script, its style and its data (nothing is fetched, so it opens from
file://). Attention is quantized to one byte per value with one scale per row
(quantize_rows), only the causal lower triangle is kept, and each record is deflated on
its own so the page decodes only the records it shows. Under --serve the same page is
served on 127.0.0.1; it polls /api/meta and fetches new records from /api/record as
gpt-train appends them to attention.h5 (read with swmr=True).

As a module: bundle(run, gens) -> dict (the page's data), page(data) -> str (the HTML),
write_page(path, html), serve(run, gens, port); decode_record(blob, L, H, T) inverts
pack_record for tests.
"""
import base64
import errno
import html
import json
import os
import re
import signal
import sys
import tempfile
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt_attention import attention_path, read_attention, read_generation, read_metrics  # noqa: E402

FORMAT = "gpt-train/explorer"
ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "explorer")
# Raw (quantized, before deflate) attention bytes a page takes at most. The budget shape
# (12 layers x 12 heads, 64-token probe, 60 records) is 20.2 MB raw; a run far beyond it
# keeps fewer records, and says so.
MAX_RAW_BYTES = 64 << 20
# Points of the loss curve at most (every point of a short run; a long one is thinned).
MAX_CURVE_POINTS = 4000


class InputError(Exception):
    """Bad input: gpt_viz.py prints the message as one error line and exits 1."""


# ---- quantization -------------------------------------------------------------------------

def quantize_rows(rows):
    """rows (..., n) of non-negative floats -> (scale (...,) float16, q (..., n) uint8) with
    rows ~= q * scale / 255. The scale is the row's maximum rounded up to float16, so q
    never exceeds 255 and each value is off by at most scale/510 (rowmax/510, plus 0.1%)."""
    rows = np.asarray(rows, np.float32)
    mx = np.asarray(rows.max(axis=-1) if rows.shape[-1] else np.zeros(rows.shape[:-1], np.float32))
    scale = mx.astype(np.float16)
    low = scale.astype(np.float32) < mx
    scale[low] = np.nextafter(scale[low], np.float16(np.inf))
    s = scale.astype(np.float32)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s > 0, np.rint(rows / np.where(s > 0, s, 1) * 255), 0)
    return scale, np.clip(q, 0, 255).astype(np.uint8)


def dequantize(scale, q):
    return q.astype(np.float32) * (np.asarray(scale, np.float32)[..., None] / np.float32(255))


def _tril(T):
    return np.tril_indices(T)


def pack_record(att):
    """One record (L, H, T, T) -> deflated bytes: float16 row scales (L, H, T), then for each
    (layer, head) the lower triangle's rows q = 0..T-1, each q+1 bytes long."""
    L, H, T, _ = att.shape
    scale, q = quantize_rows(att)
    r, c = _tril(T)
    tri = q[:, :, r, c]  # (L, H, T(T+1)/2), row-major over the triangle
    return zlib.compress(scale.astype("<f2").tobytes() + tri.tobytes(), 6)


def decode_record(blob, L, H, T):
    """pack_record's inverse: (L, H, T, T) float32, as the page computes it."""
    raw = zlib.decompress(blob)
    n = L * H * T
    scale = np.frombuffer(raw[: 2 * n], "<f2").reshape(L, H, T)
    tri = np.frombuffer(raw[2 * n:], np.uint8).reshape(L, H, T * (T + 1) // 2)
    q = np.zeros((L, H, T, T), np.uint8)
    r, c = _tril(T)
    q[:, :, r, c] = tri
    return dequantize(scale, q)


def record_bytes(L, H, T):
    """Raw bytes of one packed record before deflate."""
    return L * H * (2 * T + T * (T + 1) // 2)


def pack_rows(blocks):
    """Generation windows: a list of (L, H, W_i) arrays (W_i varies) -> deflated bytes: the
    float16 scales of every row, (i, l, h) in order, then the rows' bytes in the same order."""
    scales, parts = [], []
    for b in blocks:
        s, q = quantize_rows(b)
        scales.append(s.reshape(-1))
        parts.append(q.tobytes())
    head = np.concatenate(scales).astype("<f2").tobytes() if scales else b""
    return zlib.compress(head + b"".join(parts), 6)


def _b64(b):
    return base64.b64encode(b).decode("ascii")


# ---- the data bundle ----------------------------------------------------------------------

def _round(x, digits=5):
    """Floats for JSON: NaN -> None, a few significant digits (the page shows 3-4)."""
    out = []
    for v in np.asarray(x, np.float64).tolist():
        out.append(None if not np.isfinite(v) else float(f"{v:.{digits}g}"))
    return out


def select_records(n, max_steps, per_record, max_bytes=MAX_RAW_BYTES):
    """Indices of the records a page keeps: at most max_steps, evenly spaced, the first and
    the last always; fewer when they would pass max_bytes. Returns (indices, note)."""
    k = min(n, max_steps, max(1, max_bytes // max(per_record, 1)))
    if n <= k:
        return list(range(n)), ""
    idx = [n - 1] if k == 1 else sorted(set(int(round(x)) for x in np.linspace(0, n - 1, k)))
    why = f"--max-steps {max_steps}" if k == max_steps else \
        f"the page's size limit: {per_record / 1e6:.1f} MB per record before compression"
    return idx, f"{n} records in attention.h5: the page keeps {len(idx)}, evenly spaced ({why})"


def _metrics(path):
    """train/val loss of metrics.csv for the curve, a long run thinned to MAX_CURVE_POINTS."""
    if not path or not os.path.isfile(path):
        return None
    try:
        m = read_metrics(path)
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read ({e})")
    if "step" not in m:
        return None
    out = {}
    for col in ("train_loss", "val_loss"):
        if col not in m:
            continue
        ok = np.isfinite(m["step"]) & np.isfinite(m[col])
        s, v = m["step"][ok], m[col][ok]
        if len(s) > MAX_CURVE_POINTS:
            keep = np.unique(np.linspace(0, len(s) - 1, MAX_CURVE_POINTS).round().astype(int))
            s, v = s[keep], v[keep]
        out[col] = {"step": [int(x) for x in s], "loss": _round(v)}
    return out or None


def _open_attention(run):
    att = attention_path(run)
    if not os.path.exists(att):
        if os.path.isdir(run):
            raise InputError(f"{run}: no attention.h5 in this run directory (train with --attn-every N to record it)")
        raise InputError(f"{run}: no such run directory or attention.h5")
    if os.path.isdir(att):
        raise InputError(f"{att}: a directory, not an attention.h5 file")
    try:
        return read_attention(att)
    except ValueError as e:
        raise InputError(str(e))
    except KeyError as e:
        raise InputError(f"{att}: not a complete attention.h5 (missing {e})")
    except OSError as e:
        raise InputError(f"{att}: cannot be read as HDF5 ({_h5_reason(e)})")


def _h5_reason(e):
    s = str(e)
    if "lock" in s.lower():
        return "it is locked by a writer that did not open it for SWMR; wait for it or run h5clear -s on it"
    return s.split("(")[0].strip() or type(e).__name__


def _gen_entry(path, L, H, run_label):
    if not os.path.isfile(path):
        raise InputError(f"--gen {path}: no such file")
    try:
        g = read_generation(path)
    except ValueError as e:
        raise InputError(f"--gen {e}")
    except KeyError as e:
        raise InputError(f"--gen {path}: not a complete generation file (missing {e})")
    except OSError as e:
        raise InputError(f"--gen {path}: cannot be read as HDF5 ({_h5_reason(e)})")
    if (g.n_layer, g.n_head) != (L, H):
        raise InputError(f"--gen {path}: written by a model of {g.n_layer} layers x {g.n_head} heads, but "
                         f"{run_label} has {L} x {H}; give generation files of the run's own model")
    P, N = g.n_prompt, g.n_generated
    # generated token i: the row of query P-1+i over its window context_start[i] .. P-1+i
    rows = [g.attention[i, :, :, : P + i - int(g.context_start[i])] for i in range(N)]
    top = None
    if g.top_ids is not None and g.top_probs is not None:
        top = {"ids": g.top_ids.tolist(), "probs": [_round(r, 4) for r in g.top_probs],
               "tokens": g.top_tokens if g.top_tokens is not None else None}
    a = g.attrs
    return {
        "name": os.path.splitext(os.path.basename(path))[0], "path": path,
        "n_prompt": P, "tokens": g.tokens, "token_ids": g.token_ids.tolist(),
        "context_start": g.context_start.tolist(), "block_size": g.block_size,
        "step": a.get("step"), "prompt": a.get("prompt", ""), "temperature": a.get("temperature"),
        "top_k": a.get("top_k"), "top_p": a.get("top_p"), "seed": a.get("seed"),
        "att": _b64(pack_rows(rows)) if rows else "", "top": top,
    }


def bundle(run, gens=(), max_steps=60, live=False, with_blobs=True, max_bytes=MAX_RAW_BYTES, notes=None):
    """The page's data for a run directory (or attention.h5) and generation files.
    Raises InputError (one line) on bad input. `notes` collects what was left out."""
    rec = _open_attention(run)
    N, L, H, T = len(rec), rec.n_layer, rec.n_head, rec.T
    if N == 0 and not live:
        raise InputError(f"{rec.path}: no records yet (gpt-train writes one every --attn-every steps)")
    idx, note = select_records(N, max_steps, record_bytes(L, H, T), max_bytes)
    if note and notes is not None:
        notes.append(note)
    d = {
        "format": FORMAT, "version": 1,
        "title": os.path.basename(os.path.normpath(run)), "source": rec.path,
        "live": None, "n_layer": L, "n_head": H, "T": T, "every": rec.every,
        "tokens": rec.tokens, "token_ids": rec.token_ids.tolist(),
        "n_records": N, "note": note,
        "records": {"index": idx, "step": [int(rec.steps[i]) for i in idx], "loss": _round(rec.loss[idx])},
        "token_loss": [_round(rec.token_loss[i], 4) for i in idx] if rec.token_loss is not None else None,
        "quant": "rowmax-uint8-v1",
        "blobs": {},
        "metrics": _metrics(os.path.join(run, "metrics.csv") if os.path.isdir(run) else
                            os.path.join(os.path.dirname(os.path.abspath(run)), "metrics.csv")),
        "gens": [],
        "cmap": _colormap(),
    }
    if with_blobs and idx:
        for i, a in zip(idx, rec.records(idx)):
            d["blobs"][str(i)] = _b64(pack_record(a))
    d["gens"] = [_gen_entry(p, L, H, rec.path) for p in gens]
    return d


_CMAP = None


def _colormap():
    """viridis as 256 RGB triples in hex, the PNGs' colormap (matplotlib's, CC0)."""
    global _CMAP
    if _CMAP is None:
        from matplotlib import colormaps
        rgb = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
        _CMAP = rgb.tobytes().hex()
    return _CMAP


# ---- the page -----------------------------------------------------------------------------

def _asset(name):
    with open(os.path.join(ASSETS, name), encoding="utf-8") as f:
        return f.read()


def page(data):
    """The self-contained HTML for a bundle."""
    # In a <script> element only "</script" (and "<!--") can end the data early: escape "<".
    js_data = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    # static pages may fetch nothing; a served page talks to its own server only
    connect = "'self'" if data.get("live") else "'none'"
    csp = (f"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
           f"connect-src {connect}; base-uri 'none'; form-action 'none'")
    vals = {"CSP": csp, "TITLE": html.escape(f"attention explorer - {data['title']}"), "CSS": _asset("explorer.css"),
            "DATA": js_data, "JS": _asset("explorer.js")}
    # one pass, so nothing inserted (a token's text, say) is itself substituted
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: vals[m.group(1)], _asset("explorer.html"))


def write_page(path, text):
    """Writes the page atomically (temp name in the same directory, then rename)."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise InputError(f"--html {path}: the directory {d} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".explorer-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# ---- live: --serve ------------------------------------------------------------------------

class _Live:
    """What the server knows of the run, re-read when attention.h5 or metrics.csv change."""

    def __init__(self, run, gens, max_steps):
        self.run, self.gens, self.max_steps = run, gens, max_steps
        self.lock = threading.Lock()
        self.version = 1          # bumped when records were dropped or the file replaced (a resume)
        self.sig = None
        self.meta = None
        self.first = None         # (indices, steps) seen at the last read, to notice rewrites
        self.n_records = 0
        self.gen_entries = None

    def _signature(self):
        out = []
        for p in (attention_path(self.run), os.path.join(self.run, "metrics.csv")):
            try:
                st = os.stat(p)
                out.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def refresh(self):
        with self.lock:
            sig = self._signature()
            if self.meta is not None and sig == self.sig:
                return self.meta
            try:
                d = bundle(self.run, [], self.max_steps, live=True, with_blobs=False)
            except InputError as e:
                if self.meta is None or not os.path.exists(attention_path(self.run)):
                    self.meta = {"format": FORMAT, "waiting": str(e), "live": {"version": self.version}}
                    self.sig = sig
                return self.meta  # a file caught between two writes: keep what was read before
            steps = d["records"]["step"]
            if self.first is not None:
                old_idx, old_steps = self.first
                same = {i: s for i, s in zip(old_idx, old_steps)}
                if d["n_records"] < self.n_records or \
                        any(same.get(i, s) != s for i, s in zip(d["records"]["index"], steps)) or \
                        (self.sig and sig[0] and self.sig[0] and sig[0][0] != self.sig[0][0]):
                    self.version += 1
            self.first = (d["records"]["index"], steps)
            self.n_records = d["n_records"]
            if self.gen_entries is None:
                self.gen_entries = [_gen_entry(p, d["n_layer"], d["n_head"], d["source"]) for p in self.gens]
            d["gens"] = self.gen_entries
            d["live"] = {"version": self.version, "poll_ms": 1500}
            self.meta, self.sig = d, sig
            return d

    def record(self, i):
        rec = read_attention(self.run)
        if not 0 <= i < len(rec):
            return None
        return pack_record(rec.record(i))


def _handler(live):
    class H(BaseHTTPRequestHandler):
        server_version = "gpt_viz"

        def log_message(self, *a):
            pass

        def _send(self, code, body, ctype):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            u = urlparse(self.path)
            try:
                if u.path in ("/", "/index.html"):
                    d = dict(live.refresh())
                    if "waiting" in d:
                        body = _waiting_page(d["waiting"])
                    else:
                        d["blobs"] = {}
                        body = page(d)
                    self._send(200, body.encode("utf-8"), "text/html; charset=utf-8")
                elif u.path == "/api/meta":
                    d = live.refresh()
                    self._send(200, json.dumps(d, allow_nan=False).encode(), "application/json")
                elif u.path == "/api/record":
                    q = parse_qs(u.query)
                    blob = live.record(int(q.get("i", ["-1"])[0]))
                    if blob is None:
                        self._send(404, b"no such record", "text/plain")
                    else:
                        self._send(200, blob, "application/octet-stream")
                else:
                    self._send(404, b"not found", "text/plain")
            except (BrokenPipeError, ConnectionResetError):
                pass
            except (OSError, ValueError, KeyError) as e:  # a file caught mid-write: the page retries
                try:
                    self._send(503, f"{e}".encode(), "text/plain")
                except OSError:
                    pass
    return H


def _waiting_page(msg):
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
            "<title>attention explorer - waiting</title></head><body style='font:15px sans-serif;margin:2em'>"
            f"<p id='waiting'>Waiting for the run: {html.escape(msg)}</p>"
            "<script>setTimeout(function(){location.reload();},1500);</script></body></html>")


def serve(run, gens, port, max_steps=60, out=sys.stdout):
    """Serves the page on 127.0.0.1:port until Ctrl-C (or SIGTERM, SIGHUP). Returns 0."""
    live = _Live(run, gens, max_steps)
    d = live.refresh()  # bad generation files and the like fail now, before the port is taken
    try:
        httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(live))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise InputError(f"--port {port}: 127.0.0.1:{port} is already in use; give another --port")
        raise InputError(f"--port {port}: cannot listen on 127.0.0.1:{port} ({e.strerror})")
    httpd.daemon_threads = True
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"

    def stop(signum, frame):
        raise KeyboardInterrupt
    # Ctrl-C, SIGTERM and SIGHUP stop it, also when started from a script that ignores SIGINT
    # in its background jobs (Python then installs no KeyboardInterrupt handler of its own).
    # Installed before the "serving" line, which tells a caller the server is up.
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {s: signal.signal(s, stop) for s in sigs}
    try:
        if "waiting" in d:
            print(f"gpt_viz.py: {d['waiting']}; the page waits for it", file=sys.stderr)
        print(f"gpt_viz.py: serving {run} at {url} (Ctrl-C stops)", file=out, flush=True)
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for s in sigs:
            signal.signal(s, old[s])
        httpd.server_close()
    print("gpt_viz.py: stopped", file=out, flush=True)
    return 0
