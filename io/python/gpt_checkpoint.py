"""Read gpt-train checkpoints (format "gpt-train/checkpoint", SPEC.md) with h5py.

    import gpt_checkpoint as gc
    sd  = gc.load_state_dict("RUN/ckpt-00001000.h5")          # torch tensors (numpy if no torch)
    cfg = gc.load_config("RUN/ckpt-00001000.h5")              # GPTConfig fields
    m, v = gc.load_optimizer("RUN/ckpt-00001000.h5")          # AdamW moments by parameter name

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
