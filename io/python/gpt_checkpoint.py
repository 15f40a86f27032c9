"""Read gpt-train checkpoints (format "gpt-train/checkpoint", docs/formats.md) with h5py.

    import gpt_checkpoint as gc
    sd  = gc.load_state_dict("RUN/ckpt-00001000.h5")          # torch tensors (numpy if no torch)
    cfg = gc.load_config("RUN/ckpt-00001000.h5")              # GPTConfig fields
    m, v = gc.load_optimizer("RUN/ckpt-00001000.h5")          # AdamW moments by parameter name
    gc.verify_checksums("RUN/ckpt-00001000.h5")               # [] when every tensor is intact
    gc.update_checksums("edited.h5")                          # after changing tensors with h5py

Every tensor carries an attribute "checksum" (uint64, 2): the sum of its 32-bit words and
the sum of (i+1) * word i, both modulo 2^64. gpt-train and gpt-sample refuse a tensor that
does not match it, so a checkpoint edited with h5py needs update_checksums() (or the
attribute deleted) before the C tools load it again.

/model holds nanoGPT names and PyTorch shapes; lm_head.weight is an HDF5 hard link to
transformer.wte.weight, so the plain h5py comprehension
    {k: torch.from_numpy(v[()]) for k, v in h5py.File(p)["model"].items()}
is already a state_dict that nanoGPT's GPT loads with strict=True.
"""
import h5py
import numpy as np

FORMAT = "gpt-train/checkpoint"
MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "dropout")


def _open(path):
    f = h5py.File(path, "r")
    fmt = f.attrs.get("format")
    if isinstance(fmt, bytes):
        fmt = fmt.decode()
    if fmt != FORMAT:
        f.close()
        raise ValueError(f"{path}: format is {fmt!r}, expected {FORMAT!r}")
    return f


def _group(f, name, as_torch):
    arrays = {k: np.asarray(v[()], dtype=np.float32) for k, v in f[name].items()}
    if not as_torch:
        return arrays
    try:
        import torch
    except ImportError:
        return arrays
    return {k: torch.from_numpy(v) for k, v in arrays.items()}


def tensor_checksum(a):
    """The checksum gpt-train stores with each tensor, as a uint64 array of 2 (numpy's uint64
    sums and products wrap modulo 2^64, as the C code's do)."""
    w = np.ascontiguousarray(a, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    i = np.arange(1, w.size + 1, dtype=np.uint64)
    return np.array([w.sum(dtype=np.uint64), (w * i).sum(dtype=np.uint64)], dtype=np.uint64)


_TENSOR_GROUPS = ("model", "optimizer/m", "optimizer/v")


def _tensors(f):
    for g in _TENSOR_GROUPS:
        if g in f:
            for k, d in f[g].items():
                if k != "lm_head.weight":  # the same dataset as transformer.wte.weight
                    yield g + "/" + k, d


def verify_checksums(path):
    """Names of the tensors whose data does not match their checksum attribute ([] = intact;
    tensors without the attribute, from older versions, are not checked)."""
    with _open(path) as f:
        return [name for name, d in _tensors(f)
                if "checksum" in d.attrs and not np.array_equal(tensor_checksum(d[()]), d.attrs["checksum"])]


def update_checksums(path):
    """Recomputes every tensor's checksum attribute, after an edit of the tensors with h5py."""
    _open(path).close()
    with h5py.File(path, "r+") as f:
        for _, d in _tensors(f):
            d.attrs.create("checksum", tensor_checksum(d[()]), dtype=np.uint64)


def load_state_dict(path, as_torch=True):
    """The /model group as a state_dict: {nanoGPT name: tensor (or numpy array)}."""
    with _open(path) as f:
        return _group(f, "model", as_torch)


def load_optimizer(path, as_torch=False):
    """(m, v): the AdamW moments as dicts keyed like the state_dict (without lm_head)."""
    with _open(path) as f:
        return _group(f, "optimizer/m", as_torch), _group(f, "optimizer/v", as_torch)


def load_config(path, all_settings=False):
    """The model config from /config (all_settings=True: every attribute the trainer stored)."""
    with _open(path) as f:
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f["config"].attrs.items()}
    if all_settings:
        return attrs
    cfg = {k: attrs[k] for k in MODEL_KEYS}
    for k in MODEL_KEYS[:-1]:
        cfg[k] = int(cfg[k])
    cfg["dropout"] = float(cfg["dropout"])
    return cfg
