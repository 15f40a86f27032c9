#!/usr/bin/python3
"""Attention heatmaps, loss curves and the attention explorer from gpt-train's HDF5 files.

    /usr/bin/python3 io/python/gpt_viz.py RUN [--gen gen.h5 ...] --html explorer.html [--max-steps 60]
    /usr/bin/python3 io/python/gpt_viz.py RUN [--gen gen.h5 ...] --serve [--port 8000]
    /usr/bin/python3 io/python/gpt_viz.py RUN --out figs/ [--gen gen.h5 ...]
        [--layer -1] [--head 0] [--step STEP] [--gen-tokens 8] [--max-frames 60] [--dpi 100]

RUN is a run directory (attention.h5, metrics.csv) or an attention.h5 file.

--html writes the explorer: one self-contained page (script, style and data inline, nothing
fetched) to scrub through training, read the probe shaded by attention or by the model's
loss, and step through generation (gpt_explorer.py). --serve serves the same page on
127.0.0.1 and follows a run as gpt-train appends to it.

--out writes PNGs (matplotlib, Agg backend) into figs/:
    attn_step<S>_L<l>H<h>.png   one layer/head at one step (default: the last record)
    attn_grid_step<S>.png       all layers x heads at that step
    attn_L<l>H<h>_steps.png     the same head across training steps (small multiples)
    attn_L<l>H<h>_steps.gif     ... animated (needs pillow, python3-pil)
    loss.png                    train/val loss from RUN/metrics.csv
    <gen>_prompt_grid.png       the prompt's attention, all layers x heads
    <gen>_tok<i>_L<l>H<h>.png   one heatmap per generated token (its full matrix, rebuilt
                                from the stored rows; the query that drew it outlined)
    <gen>_tokens_L<l>H<h>.png   the first four generated tokens side by side

As a module, each plot_* function saves one figure and returns what it drew
({"path", "data", "size"}), so tests can compare pixels with the HDF5 numbers.
"""
import argparse
import errno
import os
import signal
import stat
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import PowerNorm  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt_attention import read_attention, read_generation, read_metrics, attention_path  # noqa: E402,F401

CMAP = "viridis"


def token_label(tok, maxlen=10):
    """A token's text made visible on an axis: spaces as '·', control characters escaped."""
    t = tok.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t").replace(" ", "·")
    t = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in t)
    return t if len(t) <= maxlen else t[: maxlen - 1] + "…"


def _norm():
    # probabilities: a square-root scale keeps weak attention visible next to strong
    return PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)


def _label_axes(ax, rows, cols, fontsize, max_labels=None):
    def ticks(n):
        step = 1 if not max_labels or n <= max_labels else int(np.ceil(n / max_labels))
        return list(range(0, n, step))
    xt, yt = ticks(len(cols)), ticks(len(rows))
    ax.set_xticks(xt)
    ax.set_xticklabels([token_label(cols[i]) for i in xt], rotation=90, fontsize=fontsize)
    ax.set_yticks(yt)
    ax.set_yticklabels([token_label(rows[i]) for i in yt], fontsize=fontsize)


def _heat(ax, m, rows=None, cols=None, fontsize=8, max_labels=None, mask_future=True):
    """Draws m (queries x keys); keys after each query (always 0) left white."""
    q, k = m.shape
    data = np.ma.masked_array(m, mask=np.triu(np.ones((q, k), bool), k=k - q + 1)) if mask_future else m
    im = ax.imshow(data, cmap=CMAP, norm=_norm(), interpolation="nearest")
    if rows is not None:
        _label_axes(ax, rows, cols, fontsize, max_labels)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    return im


def _fontsize(n, inches):
    # label height ~ inches*72/n points; 4..10 pt
    return float(np.clip(0.8 * inches * 72 / max(n, 1), 4, 10))


class WriteError(Exception):
    """An output that could not be written (a full disk): gpt_viz.py exits 2."""

    def __init__(self, path, err):
        super().__init__(f"writing '{path}' failed: {err.strerror or err}")


def _tmp_path(path):
    """A temporary name beside path, with its extension (the writers pick the format by it)."""
    d, base = os.path.split(path)
    stem, ext = os.path.splitext(base)
    return os.path.join(d, f".{stem}.tmp-{os.getpid()}{ext}")


def _write_atomic(path, write):
    """write(tmp) then rename tmp to path: the output is complete or absent, whatever happens
    (a full disk, a signal: see main). An OSError becomes WriteError naming path."""
    tmp = _tmp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise WriteError(path, e) from e
        raise


def _save(fig, path, dpi):
    try:  # no bbox_inches="tight": the pixel size is figsize * dpi
        _write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=dpi))
        w, h = fig.get_size_inches() * dpi
    finally:
        plt.close(fig)
    return (int(round(w)), int(round(h)))


def _plotted(im):
    return np.ma.filled(im.get_array(), 0.0).astype(np.float32)


def head_figsize(T):
    side = float(np.clip(3.0 + 0.13 * T, 5.0, 14.0))
    return (side + 1.2, side + 0.6)


def plot_matrix(m, rows, cols, title, path, figsize=None, dpi=100, outline_row=None):
    """One (queries x keys) heatmap with token labels and a colorbar."""
    figsize = figsize or head_figsize(max(m.shape))
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    im = _heat(ax, m, rows, cols, fontsize=_fontsize(max(m.shape), figsize[1] - 1.5))
    if outline_row is not None:
        ax.add_patch(Rectangle((-0.5, outline_row - 0.5), m.shape[1], 1, fill=False, edgecolor="red", lw=1.5))
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8, label="attention")
    data = _plotted(im)
    return {"path": path, "data": data, "size": _save(fig, path, dpi)}


def plot_head(rec, i, layer, head, path, figsize=None, dpi=100):
    """One layer/head of attention.h5 record i (tokens on both axes)."""
    a = rec.record(i)
    i %= len(rec)
    title = f"layer {layer % rec.n_layer}, head {head % rec.n_head} - step {rec.steps[i]} (loss {rec.loss[i]:.3f})"
    return plot_matrix(a[layer, head], rec.tokens, rec.tokens, title, path, figsize, dpi)


def _grid(att, rows, cols, suptitle, path, figsize=None, dpi=100, panel_titles=None):
    """att (A, B, Q, K) as an A x B grid of heatmaps with one colorbar."""
    A, B, Q, K = att.shape
    figsize = figsize or (1.0 + 2.4 * B, 1.0 + 2.4 * A)
    fig, axes = plt.subplots(A, B, figsize=figsize, squeeze=False, layout="constrained")
    fs = _fontsize(max(Q, K), 2.4) if max(Q, K) <= 32 else 5
    data = np.zeros((A, B, Q, K), np.float32)
    for a in range(A):
        for b in range(B):
            ax = axes[a][b]
            im = _heat(ax, att[a, b])
            # tokens on the outer axes only, at most 16 labels per axis
            _label_axes(ax, rows, cols, fs, max_labels=16)
            if b > 0:
                ax.set_yticklabels([])
            if a < A - 1:
                ax.set_xticklabels([])
            ax.set_title(panel_titles[a][b] if panel_titles else f"L{a} H{b}", fontsize=9)
            data[a, b] = _plotted(im)
    fig.colorbar(im, ax=axes, shrink=0.6, label="attention")
    fig.suptitle(suptitle)
    return {"path": path, "data": data, "size": _save(fig, path, dpi)}


def plot_grid(rec, i, path, figsize=None, dpi=100):
    """All layers x heads of record i."""
    a = rec.record(i)
    i %= len(rec)
    return _grid(a, rec.tokens, rec.tokens, f"attention at step {rec.steps[i]} (loss {rec.loss[i]:.3f})", path,
                 figsize, dpi)


def step_indices(n, k):
    """Up to k record indices spread evenly over n records, always the first and last."""
    if n <= k:
        return list(range(n))
    return sorted(set(int(round(x)) for x in np.linspace(0, n - 1, k)))


def plot_head_steps(rec, layer, head, path, max_panels=12, figsize=None, dpi=100):
    """The same head across training steps, as small multiples (up to max_panels records)."""
    idx = step_indices(len(rec), max_panels)
    series = rec.head_series(layer, head, idx)
    ncols = min(4, len(idx))
    nrows = int(np.ceil(len(idx) / ncols))
    att = np.zeros((nrows, ncols, rec.T, rec.T), np.float32)
    titles = [["" for _ in range(ncols)] for _ in range(nrows)]
    for n, i in enumerate(idx):
        att[n // ncols, n % ncols] = series[n]
        titles[n // ncols][n % ncols] = f"step {rec.steps[i]}, loss {rec.loss[i]:.2f}"
    out = _grid(att, rec.tokens, rec.tokens,
                f"layer {layer % rec.n_layer}, head {head % rec.n_head} over training", path, figsize, dpi, titles)
    out["data"] = out["data"].reshape(nrows * ncols, rec.T, rec.T)[: len(idx)]
    out["indices"] = idx
    return out


def animate_head(rec, layer, head, path, max_frames=60, fps=4, figsize=None, dpi=80):
    """Animated GIF of one head over the records (up to max_frames). None without pillow."""
    from matplotlib import animation
    if not animation.writers.is_available("pillow"):
        return None
    idx = step_indices(len(rec), max_frames)
    series = rec.head_series(layer, head, idx)
    figsize = figsize or head_figsize(rec.T)
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    im = _heat(ax, series[0], rec.tokens, rec.tokens, fontsize=_fontsize(rec.T, figsize[1] - 1.5))
    fig.colorbar(im, ax=ax, shrink=0.8, label="attention")
    title = ax.set_title("")
    writer = animation.PillowWriter(fps=fps)

    def write(tmp):
        with writer.saving(fig, tmp, dpi):
            for n, i in enumerate(idx):
                im.set_data(np.ma.masked_array(series[n], mask=np.triu(np.ones((rec.T, rec.T), bool), k=1)))
                title.set_text(f"layer {layer % rec.n_layer}, head {head % rec.n_head} - step {rec.steps[i]} "
                               f"(loss {rec.loss[i]:.3f})")
                writer.grab_frame()
    try:
        _write_atomic(path, write)
    finally:
        plt.close(fig)
    return {"path": path, "frames": len(idx), "indices": idx, "data": series}


def plot_generation_token(gen, i, layer, head, path, figsize=None, dpi=100):
    """Generated token i: the full matrix of its context window (rows stacked from the file),
    the query that drew it outlined in red, the drawn token in the title."""
    m, labels = gen.matrix(i)
    i %= gen.n_generated
    new = gen.tokens[gen.n_prompt + i]
    title = (f"generated token {i}: '{token_label(new, 20)}' "
             f"(layer {layer % gen.n_layer}, head {head % gen.n_head})")
    return plot_matrix(m[layer, head], labels, labels, title, path, figsize, dpi, outline_row=m.shape[2] - 1)


def plot_generation_tokens(gen, layer, head, path, n=4, figsize=None, dpi=100):
    """The first n generated tokens side by side (each its own window's matrix)."""
    n = min(n, gen.n_generated)
    figsize = figsize or (1.0 + 4.2 * n, 5.0)
    fig, axes = plt.subplots(1, n, figsize=figsize, squeeze=False, layout="constrained")
    data = []
    for i in range(n):
        m, labels = gen.matrix(i)
        ax = axes[0][i]
        im = _heat(ax, m[layer, head], labels, labels, fontsize=_fontsize(len(labels), 3.5), max_labels=24)
        q = m.shape[2] - 1
        ax.add_patch(Rectangle((-0.5, q - 0.5), m.shape[3], 1, fill=False, edgecolor="red", lw=1.5))
        ax.set_title(f"token {i}: '{token_label(gen.tokens[gen.n_prompt + i], 16)}'", fontsize=10)
        data.append(_plotted(im))
    fig.colorbar(im, ax=axes, shrink=0.7, label="attention")
    fig.suptitle(f"generating {n} tokens (layer {layer % gen.n_layer}, head {head % gen.n_head})")
    return {"path": path, "data": data, "size": _save(fig, path, dpi)}


def plot_prompt_grid(gen, path, figsize=None, dpi=100):
    P = gen.n_prompt
    labels = gen.tokens[:P]
    return _grid(gen.prompt_attention, labels, labels, f"prompt attention: {gen.attrs.get('prompt', '')[:60]!r}",
                 path, figsize, dpi)


def plot_loss(metrics, path, figsize=(7.0, 4.5), dpi=100):
    """train_loss (line) and val_loss (dots) against step; empty cells skipped."""
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    step = metrics.get("step", np.zeros(0))
    drawn = {}
    for col, style in (("train_loss", "-"), ("val_loss", "o-")):
        if col not in metrics:
            continue
        ok = ~np.isnan(metrics[col]) & ~np.isnan(step)
        if ok.any():
            ax.plot(step[ok], metrics[col][ok], style, label=col.replace("_", " "), ms=4)
            drawn[col] = (step[ok], metrics[col][ok])
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title("loss")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend()
    return {"path": path, "data": drawn, "size": _save(fig, path, dpi)}


def _index_ok(flag, v, n, what):
    """--layer/--head v valid for n layers/heads (negative counts from the end); else a message."""
    if -n <= v < n:
        return None
    return f"{flag} {v}: {what} has {n} {flag[2:]}s (0..{n - 1}, or -1 for the last)"


class BadInput(Exception):
    """One error line for the user: exit 1."""


def draw_pngs(a):
    """The --out figures for parsed arguments a; returns the paths written. Every file is read
    and checked before a PNG is written."""
    att = attention_path(a.run)
    metrics = os.path.join(a.run, "metrics.csv") if os.path.isdir(a.run) else None
    rec = read_attention(att) if os.path.isfile(att) else None
    if rec is None and not os.path.isdir(a.run):
        raise BadInput(f"{a.run}: not a run directory or attention.h5")
    gens = [read_generation(g) for g in a.gen]
    for what, n_layer, n_head in ([(rec.path, rec.n_layer, rec.n_head)] if rec is not None else []) + \
            [(g.path, g.n_layer, g.n_head) for g in gens]:
        msg = _index_ok("--layer", a.layer, n_layer, what) or _index_ok("--head", a.head, n_head, what)
        if msg:
            raise BadInput(msg)
    i = None
    if rec is not None and len(rec):
        i = rec.index_of_step(a.step) if a.step is not None else len(rec) - 1
    _make_out_dir(a.out)
    written = []
    if rec is not None:
        if len(rec) == 0:
            print(f"gpt_viz.py: {att} has no records yet", file=sys.stderr)
        else:
            L, H = a.layer % rec.n_layer, a.head % rec.n_head
            s = rec.steps[i]
            written.append(plot_head(rec, i, L, H, os.path.join(a.out, f"attn_step{s:08d}_L{L}H{H}.png"),
                                     dpi=a.dpi)["path"])
            written.append(plot_grid(rec, i, os.path.join(a.out, f"attn_grid_step{s:08d}.png"), dpi=a.dpi)["path"])
            written.append(plot_head_steps(rec, L, H, os.path.join(a.out, f"attn_L{L}H{H}_steps.png"),
                                           dpi=a.dpi)["path"])
            g = animate_head(rec, L, H, os.path.join(a.out, f"attn_L{L}H{H}_steps.gif"), a.max_frames)
            if g:
                written.append(g["path"])
            else:
                print("gpt_viz.py: pillow (python3-pil) missing: no GIF", file=sys.stderr)
    if metrics and os.path.isfile(metrics):
        written.append(plot_loss(read_metrics(metrics), os.path.join(a.out, "loss.png"), dpi=a.dpi)["path"])
    for gpath, gen in zip(a.gen, gens):
        stem = os.path.splitext(os.path.basename(gpath))[0]
        L, H = a.layer % gen.n_layer, a.head % gen.n_head
        written.append(plot_prompt_grid(gen, os.path.join(a.out, f"{stem}_prompt_grid.png"), dpi=a.dpi)["path"])
        for i in range(min(a.gen_tokens, gen.n_generated)):
            written.append(plot_generation_token(gen, i, L, H, os.path.join(a.out, f"{stem}_tok{i:03d}_L{L}H{H}.png"),
                                                 dpi=a.dpi)["path"])
        if gen.n_generated:
            written.append(plot_generation_tokens(gen, L, H, os.path.join(a.out, f"{stem}_tokens_L{L}H{H}.png"),
                                                  dpi=a.dpi)["path"])
    if not written:
        raise BadInput(f"{a.run}: nothing to draw (no attention.h5 records, no metrics.csv, no --gen)")
    return written


def explorer_page(a, ge):
    """The --html page for parsed arguments a (gpt_explorer.py), checked and built in memory."""
    notes = []
    data = ge.bundle(a.run, a.gen, a.max_steps, notes=notes)
    msg = _index_ok("--layer", a.layer, data["n_layer"], data["source"]) or \
        _index_ok("--head", a.head, data["n_head"], data["source"])
    if msg:
        raise BadInput(msg)
    # the page opens on these unless its URL says otherwise (#layer=...)
    data["start"] = {"layer": a.layer % data["n_layer"], "head": a.head % data["n_head"]}
    if a.step is not None:
        if a.step not in data["records"]["step"]:
            raise BadInput(f"--step {a.step}: no record of that step in the page (steps {data['records']['step'][:5]}...)")
        data["start"]["step"] = a.step
    for n in notes:
        print(f"gpt_viz.py: note: {n}", file=sys.stderr)
    return ge.page(data)


def _kind(mode):
    return ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a regular file" if stat.S_ISREG(mode)
            else "not a regular file")


def _stat(path, flag):
    """os.stat, or None when path does not exist; BadInput for anything else (a link loop)."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise BadInput(f"{flag}'{path}': {e.strerror}")


def check_files(a):
    """Every input is a regular file (or RUN a directory): a FIFO would block the read forever, a
    device never end. Outputs: --html a file that is no input (the page is renamed over it),
    --out a directory. Returns nothing; BadInput for the first problem."""
    inputs = []
    st = _stat(a.run, "")
    if st is None:
        raise BadInput(f"{a.run}: no such run directory or file")
    if stat.S_ISDIR(st.st_mode):
        for name in ("attention.h5", "metrics.csv"):
            p = os.path.join(a.run, name)
            s = _stat(p, "")
            if s is not None and not stat.S_ISREG(s.st_mode):
                raise BadInput(f"'{p}': is {_kind(s.st_mode)}, expected a regular file")
            if s is not None:
                inputs.append((p, "the run's " + name))
    elif not stat.S_ISREG(st.st_mode):
        raise BadInput(f"'{a.run}': is {_kind(st.st_mode)}, expected a run directory or an attention.h5 file")
    else:
        inputs.append((a.run, "the attention file"))
    for g in a.gen:
        s = _stat(g, "--gen ")
        if s is None:
            raise BadInput(f"--gen '{g}': no such file")
        if not stat.S_ISREG(s.st_mode):
            raise BadInput(f"--gen '{g}': is {_kind(s.st_mode)}, expected a generation file (gpt-sample --attn-out)")
        inputs.append((g, "--gen"))
    if a.html:
        s = _stat(a.html, "--html ")
        if s is not None and stat.S_ISDIR(s.st_mode):
            raise BadInput(f"--html {a.html}: is a directory; give the page's file name")
        if s is not None and not stat.S_ISREG(s.st_mode):
            raise BadInput(f"--html '{a.html}': is {_kind(s.st_mode)}; give the page's file name (it is written "
                           "under a temporary name and renamed to this one)")
        for p, what in inputs:
            if s is not None and os.path.samefile(a.html, p):
                raise BadInput(f"--html '{a.html}' is the same file as {what} '{p}'; writing it would destroy it")
    if a.out:
        s = _stat(a.out, "--out ")
        if s is not None and not stat.S_ISDIR(s.st_mode):
            raise BadInput(f"--out '{a.out}': is {_kind(s.st_mode)}, not a directory")


_made_dirs = []


def _make_out_dir(path):
    """Creates --out and its missing parents, remembering them: a failure removes them again
    while still empty (main)."""
    missing, p = [], os.path.abspath(path)
    while not os.path.exists(p):
        missing.append(p)
        p = os.path.dirname(p)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise WriteError(path, e) from e
    _made_dirs.extend(missing)


def _remove_made_dirs():
    for d in _made_dirs:  # deepest first
        try:
            os.rmdir(d)
        except OSError:
            pass


class Stopped(BaseException):
    """SIGINT, SIGTERM or SIGHUP: unwinds the stack, so temporary files go (_write_atomic)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _stop(signum, frame):
    raise Stopped(signum)


def _print_paths(paths):
    """The written files on stdout. A reader that went away (`| head`) ends quietly (141, as
    SIGPIPE would); any other failure (> /dev/full) is exit 2 with one line."""
    try:
        for p in paths:
            print(p)
        sys.stdout.flush()
    except OSError as e:
        try:  # no second failure when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        if e.errno == errno.EPIPE:
            return 128 + signal.SIGPIPE
        print(f"gpt_viz.py: error: writing to stdout failed: {e.strerror}", file=sys.stderr)
        return 2
    return 0


def main(argv=None):
    import gpt_explorer as ge
    ap = argparse.ArgumentParser(prog="gpt_viz.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run directory (attention.h5, metrics.csv) or an attention.h5 file")
    ap.add_argument("--html", metavar="OUT.html", help="write the explorer: one self-contained HTML page")
    ap.add_argument("--serve", action="store_true", help="serve the explorer on 127.0.0.1, following the run live")
    ap.add_argument("--port", type=int, default=8000, help="port of --serve (default 8000; 0: any free port)")
    ap.add_argument("--max-steps", type=int, default=60,
                    help="attention records in the page at most, evenly spaced, the last always (default 60)")
    ap.add_argument("--out", help="directory for the PNG/GIF files (created)")
    ap.add_argument("--gen", action="append", default=[], help="generation file of gpt-sample --attn-out (repeatable)")
    ap.add_argument("--layer", type=int, default=-1, help="layer of the single-head plots (default -1: the last)")
    ap.add_argument("--head", type=int, default=0, help="head of the single-head plots (default 0)")
    ap.add_argument("--step", type=int, default=None, help="training step to draw (default: the last record)")
    ap.add_argument("--gen-tokens", type=int, default=8, help="per-token heatmaps per generation file (default 8)")
    ap.add_argument("--max-frames", type=int, default=60, help="frames of the GIF (default 60)")
    ap.add_argument("--dpi", type=int, default=100, help="resolution of the PNG figures, 1-300 (default 100)")
    a = ap.parse_args(argv)

    def fail(msg):
        print(f"gpt_viz.py: error: {msg}", file=sys.stderr)
        return 1

    if not (a.out or a.html or a.serve):
        return fail("nothing to do: give --html OUT.html (the explorer), --serve, or --out DIR (PNGs)")
    if a.serve and (a.out or a.html):
        return fail("--serve serves the page; --html and --out write files: give one or the other")
    # upper bounds: each figure and every GIF frame is held in memory at figsize x dpi
    for flag, v, lo, hi in (("--max-frames", a.max_frames, 1, 1000), ("--max-steps", a.max_steps, 1, None),
                            ("--gen-tokens", a.gen_tokens, 0, None), ("--dpi", a.dpi, 1, 300)):
        if v < lo:
            return fail(f"{flag} {v}: must be at least {lo}")
        if hi is not None and v > hi:
            return fail(f"{flag} {v}: must be at most {hi}")
    if a.serve and not 0 <= a.port <= 65535:
        return fail(f"--port {a.port}: must be between 0 and 65535")
    try:
        check_files(a)
        if a.serve:
            return ge.serve(a.run, a.gen, a.port, a.max_steps)
        # also SIGINT: a script's background job inherits it ignored (no KeyboardInterrupt then)
        old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            page = explorer_page(a, ge) if a.html else None  # before any PNG: bad input writes nothing
            written = draw_pngs(a) if a.out else []
            if page is not None:
                try:
                    ge.write_page(a.html, page)
                except OSError as e:
                    raise WriteError(a.html, e) from e
                written.append(a.html)
        finally:
            for s_, h in old.items():
                signal.signal(s_, h)
    except (BadInput, ge.InputError) as e:
        _remove_made_dirs()
        return fail(str(e))
    except WriteError as e:
        _remove_made_dirs()
        print(f"gpt_viz.py: error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Stopped) as e:  # the temporary files are gone (_write_atomic)
        _remove_made_dirs()
        return 128 + (e.signum if isinstance(e, Stopped) else signal.SIGINT)
    except (OSError, ValueError, KeyError) as e:
        _remove_made_dirs()
        return fail(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
    return _print_paths(written)


if __name__ == "__main__":
    sys.exit(main())
