"""Read gpt-train's attention files with h5py (docs/formats.md): RUN/attention.h5 (the probe's
attention after every Nth training step) and the generation file of `gpt-sample --attn-out`.

    import gpt_attention as ga
    rec = ga.read_attention("RUN")              # or "RUN/attention.h5"; works while training runs
    rec.steps, rec.loss, rec.tokens             # (N,), (N,), T token texts
    a = rec.record(-1)                          # (L, H, T, T) float32 of the last record
    layers = rec.head_view(-1, as_torch=True)   # bertviz.head_view(layers, rec.tokens)

    gen = ga.read_generation("gen.h5")
    m, labels = gen.matrix(3)                   # (L, H, W, W) full matrix when token 3 was drawn
    gen.head_view(3, as_torch=True)             # bertviz.head_view(that, labels)
    gen.prompt_head_view(as_torch=True)         # ... with gen.tokens[:gen.n_prompt]

    sd = ga.load_state_dict("RUN/ckpt-00001000.h5")   # PyTorch-style state_dict

Only h5py and numpy are needed (torch optional, for tensors).
"""
import os

import h5py
import numpy as np

ATTENTION_FORMAT = "gpt-train/attention"
GENERATION_FORMAT = "gpt-train/generation"


def _str(x):
    # bytes that are not UTF-8 (a file written by another tool) show as U+FFFD, as the C
    # writers do, rather than failing the whole read
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def _check(f, fmt, path):
    got = _str(f.attrs.get("format", ""))
    if got != fmt:
        raise ValueError(f"{path}: format is {got!r}, expected {fmt!r}")
    if int(f.attrs.get("format_version", 0)) != 1:
        raise ValueError(f"{path}: format_version {f.attrs.get('format_version')} is not supported (1)")


def _open_swmr(path):
    """Opens for reading while a writer may be appending (SWMR), else plainly."""
    try:
        return h5py.File(path, "r", libver="latest", swmr=True)
    except (OSError, ValueError):
        return h5py.File(path, "r")


def attention_path(run_or_file):
    """RUN/attention.h5 for a run directory; the path itself for a file."""
    return os.path.join(run_or_file, "attention.h5") if os.path.isdir(run_or_file) else run_or_file


def _as_torch(arrays, as_torch):
    if not as_torch:
        return arrays
    import torch  # bertviz takes torch tensors
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


class AttentionRecords:
    """The records of an attention.h5 flushed so far.

    steps (N,) int64, loss (N,) float32, token_ids (T,) int32, tokens [T str],
    n_layer, n_head, every, dtype of the stored attention, token_loss (N, T-1) float32 (the
    probe's loss on each of its tokens 1..T-1; None in files written before gpt-train
    recorded it). Attention values are read on demand (record, records, head_series) as
    float32, so long runs need not fit in memory.
    """

    def __init__(self, path):
        self.path = path
        with _open_swmr(path) as f:
            _check(f, ATTENTION_FORMAT, path)
            self.n_layer = int(f.attrs["n_layer"])
            self.n_head = int(f.attrs["n_head"])
            self.every = int(f.attrs["every"])
            self.token_ids = f["probe/token_ids"][()].astype(np.int32)
            self.tokens = [_str(t) for t in f["probe/tokens"][()]]
            d = f["attention"]
            self.dtype = d.dtype
            self.axes = _str(d.attrs.get("axes", ""))
            # a writer flushes /attention (and /token_loss), then /loss, then /step: the
            # shortest is what is complete
            tl = f["token_loss"] if "token_loss" in f else None
            n = min(f["step"].shape[0], f["loss"].shape[0], d.shape[0], *([tl.shape[0]] if tl is not None else []))
            self.steps = f["step"][:n].astype(np.int64)
            self.loss = f["loss"][:n].astype(np.float32)
            self.token_loss = tl[:n].astype(np.float32) if tl is not None else None
        self.T = len(self.token_ids)

    def __len__(self):
        return len(self.steps)

    def _index(self, i):
        n = len(self.steps)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: record {i} of {n}")
        return i % n

    def index_of_step(self, step):
        """Index of the record of training step `step` (KeyError if none)."""
        hits = np.nonzero(self.steps == step)[0]
        if len(hits) == 0:
            raise KeyError(f"{self.path}: no record for step {step} (steps {self.steps.tolist()[:5]}...)")
        return int(hits[0])

    def record(self, i=-1):
        """(L, H, T, T) float32 attention of record i."""
        i = self._index(i)
        with _open_swmr(self.path) as f:
            return f["attention"][i].astype(np.float32)

    def records(self, indices):
        """(K, L, H, T, T) float32 of the records `indices`, read in one opening of the file."""
        idx = [self._index(i) for i in indices]
        with _open_swmr(self.path) as f:
            d = f["attention"]
            out = np.zeros((len(idx), self.n_layer, self.n_head, self.T, self.T), np.float32)
            for n, i in enumerate(idx):
                out[n] = d[i]
            return out

    def head_series(self, layer, head, indices=None):
        """(K, T, T) float32: one head over the records `indices` (default all)."""
        idx = list(range(len(self))) if indices is None else [self._index(i) for i in indices]
        with _open_swmr(self.path) as f:
            d = f["attention"]
            return np.stack([d[i, layer, head].astype(np.float32) for i in idx]) if idx else \
                np.zeros((0, self.T, self.T), np.float32)

    def all(self):
        """(N, L, H, T, T) float32, everything (small files only)."""
        with _open_swmr(self.path) as f:
            return f["attention"][: len(self)].astype(np.float32)

    def head_view(self, i=-1, as_torch=False):
        """bertviz's head_view structure for record i: a list over layers of (1, H, T, T).
        bertviz stacks them with torch.stack, so pass as_torch=True for bertviz."""
        a = self.record(i)
        return _as_torch([a[l][None] for l in range(self.n_layer)], as_torch)


def read_attention(run_or_file):
    return AttentionRecords(attention_path(run_or_file))


class Generation:
    """A generation file: token_ids (P+N,), tokens [P+N str], n_prompt P,
    prompt_attention (L, H, P, P), attention (N, L, H, T) rows zero-padded to block size T,
    context_start (N,), attrs (prompt, temperature, top_k, top_p, seed, checkpoint, step),
    top_ids (N, K) int32, top_probs (N, K) float32 and top_tokens [N][K str]: the K likeliest
    next tokens, their probabilities and texts when each generated token was drawn (None in
    files written before gpt-sample recorded them).

    Generated token i (ids[P+i]) was drawn from the query at index q = P-1+i, whose row
    attention[i] covers the keys context_start[i] .. q.
    """

    def __init__(self, path):
        self.path = path
        with h5py.File(path, "r") as f:
            _check(f, GENERATION_FORMAT, path)
            self.attrs = {k: (_str(v) if isinstance(v, (bytes, str)) else v.item() if hasattr(v, "item") else v)
                          for k, v in f.attrs.items()}
            self.token_ids = f["token_ids"][()].astype(np.int32)
            self.tokens = [_str(t) for t in f["tokens"][()]]
            self.prompt_attention = f["prompt_attention"][()].astype(np.float32)
            self.attention = f["attention"][()].astype(np.float32)
            self.context_start = f["context_start"][()].astype(np.int64)
            self.top_ids = f["top_ids"][()].astype(np.int32) if "top_ids" in f else None
            self.top_probs = f["top_probs"][()].astype(np.float32) if "top_probs" in f else None
            self.top_tokens = [[_str(t) for t in r] for r in f["top_tokens"][()]] if "top_tokens" in f else None
        self.n_prompt = int(self.attrs["n_prompt"])
        self.n_layer, self.n_head = self.prompt_attention.shape[:2]
        self.block_size = self.attention.shape[3] if self.attention.ndim == 4 else 0

    @property
    def n_generated(self):
        return len(self.context_start)

    def row(self, q):
        """(L, H, q+1) attention of query q (an index into token_ids) over keys 0..q, zeros
        for keys outside that query's window."""
        P = self.n_prompt
        out = np.zeros((self.n_layer, self.n_head, q + 1), np.float32)
        if q < P - 1:
            out[:, :, : q + 1] = self.prompt_attention[:, :, q, : q + 1]
        else:
            j = q - (P - 1)
            s = int(self.context_start[j])
            out[:, :, s: q + 1] = self.attention[j, :, :, : q + 1 - s]
        return out

    def matrix(self, i):
        """The full (L, H, W, W) attention matrix at the moment generated token i was drawn,
        over its context window (W tokens from context_start[i]), rebuilt by stacking each
        query's row; and the window's token labels. Rows of queries that were computed in an
        earlier window (after the window slid) are cropped to this window."""
        if not -self.n_generated <= i < self.n_generated:
            raise IndexError(f"{self.path}: generated token {i} of {self.n_generated}")
        i %= self.n_generated
        q = self.n_prompt - 1 + i
        s = int(self.context_start[i])
        W = q - s + 1
        m = np.zeros((self.n_layer, self.n_head, W, W), np.float32)
        for r in range(s, q + 1):
            m[:, :, r - s, : r - s + 1] = self.row(r)[:, :, s:]
        return m, self.tokens[s: q + 1]

    def head_view(self, i, as_torch=False):
        """bertviz's structure (list over layers of (1, H, W, W)) for generated token i;
        as_torch=True for bertviz, with the labels of matrix(i)."""
        m, _ = self.matrix(i)
        return _as_torch([m[l][None] for l in range(self.n_layer)], as_torch)

    def prompt_head_view(self, as_torch=False):
        return _as_torch([self.prompt_attention[l][None] for l in range(self.n_layer)], as_torch)


def read_generation(path):
    return Generation(path)


def load_state_dict(path, as_torch=True):
    """A checkpoint's /model as a PyTorch-style state_dict (torch tensors when torch is
    there and as_torch, numpy arrays otherwise). Uses gpt_checkpoint.py (the engine's)."""
    try:
        from gpt_checkpoint import load_state_dict as load
    except ImportError:
        import sys
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from gpt_checkpoint import load_state_dict as load
    return load(path, as_torch=as_torch)


def read_metrics(path):
    """metrics.csv as {column: float array}, NaN where a cell is empty."""
    import csv
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    header = rows[0]
    cols = {h: [] for h in header}
    for r in rows[1:]:
        if not r:
            continue
        for h, v in zip(header, r + [""] * (len(header) - len(r))):
            try:
                cols[h].append(float(v) if v.strip() != "" else np.nan)
            except ValueError:
                cols[h].append(np.nan)
    return {h: np.asarray(v, np.float64) for h, v in cols.items()}
