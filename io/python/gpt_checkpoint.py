#!/usr/bin/python3
"""Read gpt-train checkpoints (format "gpt-train/checkpoint", docs/formats.md) with h5py;
load them into nanoGPT, and turn nanoGPT checkpoints into them.

    import gpt_checkpoint as gc
    sd  = gc.load_state_dict("RUN/ckpt-00001000.h5")          # torch tensors (numpy if no torch)
    cfg = gc.load_config("RUN/ckpt-00001000.h5")              # GPTConfig fields
    m, v = gc.load_optimizer("RUN/ckpt-00001000.h5")          # AdamW moments by parameter name
    gc.verify_checksums("RUN/ckpt-00001000.h5")               # [] when every tensor is intact
    gc.update_checksums("edited.h5")                          # after changing tensors with h5py
    gc.load_into(model, "RUN/ckpt-00001000.h5")               # any nanoGPT-style GPT, any torch

    gpt_checkpoint.py from-nanogpt ckpt.pt OUT.h5 --vocab vocab.h5     # nanoGPT -> gpt-train
    gpt_checkpoint.py from-nanogpt ckpt.pt --run RUN --vocab vocab.h5 [--data tokens.h5]  # a run to --resume

Every tensor carries an attribute "checksum" (uint64, 2): the sum of its 32-bit words and
the sum of (i+1) * word i, both modulo 2^64. gpt-train and gpt-sample refuse a tensor that
does not match it, so a checkpoint edited with h5py needs update_checksums() (or the
attribute deleted) before the C tools load it again.

/model holds nanoGPT names and PyTorch shapes; lm_head.weight is an HDF5 hard link to
transformer.wte.weight, so the plain h5py comprehension
    {k: torch.from_numpy(v[()]) for k, v in h5py.File(p)["model"].items()}
is already a state_dict that nanoGPT's GPT loads with strict=True. Upstream nanoGPT on
torch < 2.0 also holds its causal masks (transformer.h.<i>.attn.bias) in the state_dict:
load_into keeps those. docs/engine.md (nanoGPT interop) has both directions in full.
"""
import os
import re
import sys

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


# ---------------------------------------------------------------- gpt-train -> nanoGPT
class MismatchError(ValueError):
    """A checkpoint and a model (or a nanoGPT file and gpt-train) disagree; the message names
    the tensors."""


def _names(names, most=8):
    names = sorted(names)
    return ", ".join(names[:most]) + (" and %d more" % (len(names) - most) if len(names) > most else "")


def load_into(model, path):
    """Fills a nanoGPT-style GPT (upstream nanoGPT's model.py, or nanogpt_model.py; also one
    wrapped by torch.compile) with the weights of a gpt-train checkpoint, and returns it.

    Buffers the model owns that the checkpoint does not hold are kept from the model: upstream
    nanoGPT on torch < 2.0 registers its causal masks transformer.h.<i>.attn.bias as persistent
    buffers, which plain load_state_dict(strict=True) reports missing. A model built with
    bias=False takes the checkpoint if its biases are all zero (as from-nanogpt writes them).
    Raises MismatchError naming the tensors on anything missing, unexpected or of the wrong
    shape; the model is untouched then."""
    import torch
    target = getattr(model, "_orig_mod", model)  # torch.compile's wrapper holds the module
    sd = load_state_dict(path, as_torch=True)
    own = target.state_dict()
    buffers = {name for name, _ in target.named_buffers()}
    missing = [k for k in own if k not in sd and k not in buffers]
    if missing:
        raise MismatchError(f"{path}: the model has tensors the checkpoint lacks: {_names(missing)}")
    extra = [k for k in sd if k not in own]
    unexpected = [k for k in extra if not (k.endswith(".bias") and not torch.any(sd[k]))]
    if unexpected:
        biases = all(k.endswith(".bias") for k in unexpected)
        hint = " (a model with bias=False takes only all-zero biases)" if biases else ""
        raise MismatchError(f"{path}: the checkpoint has tensors the model lacks: {_names(unexpected)}{hint}")
    shapes = [f"{k} {tuple(sd[k].shape)} in the checkpoint, {tuple(own[k].shape)} in the model"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if shapes:
        raise MismatchError(f"{path}: tensor shapes differ: " + "; ".join(shapes[:4]))
    full = {k: (sd[k] if k in sd else own[k]) for k in own}
    target.load_state_dict(full, strict=True)
    return model


# ---------------------------------------------------------------- nanoGPT -> gpt-train
PROG = "gpt_checkpoint.py"
COMPILE_PREFIX = "_orig_mod."  # torch.compile's wrapper: nanoGPT's train.py saves keys with it
PAD = 64  # nanoGPT pads vocab_size to a multiple of 64 (50257 -> 50304)
RNG_DOC = ("counter-based (src/model/rng.h): weights from seed; dropout of (step, rank, micro-step) from "
           "mix(seed, step, rank, micro); the data order of epoch e is a permutation keyed by mix(seed, e); "
           "so seed, step and the data cursor are the complete RNG state")
# nanoGPT train.py setting (the checkpoint's "config" dict) -> (gpt-train /config key, type, range);
# the ranges are src/train/config.c's. A value outside is left to gpt-train's default.
NANOGPT_SETTINGS = {
    "batch_size": ("batch_size", int, 1, 1 << 20), "gradient_accumulation_steps": ("grad_accum", int, 1, 1 << 16),
    "max_iters": ("steps", int, 1, 1e15), "learning_rate": ("lr", float, 0, 10), "min_lr": ("min_lr", float, 0, 10),
    "warmup_iters": ("warmup", int, 0, 2**31 - 1), "weight_decay": ("weight_decay", float, 0, 10),
    "beta1": ("beta1", float, 0, 0.999999), "beta2": ("beta2", float, 0, 0.999999),
    "grad_clip": ("grad_clip", float, 0, 1e30), "eval_interval": ("eval_every", int, 0, 2**31 - 1),
    "eval_iters": ("eval_batches", int, 0, 2**31 - 1), "log_interval": ("log_every", int, 1, 2**31 - 1),
    "dropout": ("dropout", float, 0, 0.999)}


class ConvertError(Exception):
    """Bad input to from_nanogpt: the command line prints it as one error line, exit 1."""


def nanogpt_param_names(n_layer, bias=True):
    """nanoGPT's parameters in named_parameters() order (the tied lm_head.weight is
    transformer.wte.weight), the order configure_optimizers splits into its two groups."""
    b = lambda name: [name + ".weight"] + ([name + ".bias"] if bias else [])  # noqa: E731
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(n_layer):
        h = f"transformer.h.{i}."
        for part in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"):
            names += b(h + part)
    return names + b("transformer.ln_f")


def gpt_train_shapes(n_layer, n_embd, block_size, vocab_size):
    """{name: shape} of every tensor of gpt-train's /model but the lm_head.weight link."""
    C = n_embd
    part = {"ln_1": (C,), "attn.c_attn": (3 * C, C), "attn.c_proj": (C, C), "ln_2": (C,), "mlp.c_fc": (4 * C, C),
            "mlp.c_proj": (C, 4 * C)}
    bias = {"attn.c_attn": (3 * C,), "mlp.c_fc": (4 * C,)}
    out = {"transformer.wte.weight": (vocab_size, C), "transformer.wpe.weight": (block_size, C)}
    for i in range(n_layer):
        for p, shape in part.items():
            out[f"transformer.h.{i}.{p}.weight"] = shape
            out[f"transformer.h.{i}.{p}.bias"] = bias.get(p, (C,))
    out["transformer.ln_f.weight"] = out["transformer.ln_f.bias"] = (C,)
    return out


def _number(x, what):
    """A Python int or float from a number or a one-element tensor."""
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ConvertError(f"{what} is {x!r}, not a number")
    return x


class _PlainPickle:
    """pickle for torch.load that builds only what a checkpoint of tensors and plain data
    holds: the file cannot run code. torch >= 2.0 has this built in (weights_only=True);
    torch 1.13's weights_only cannot read floats, so there it is this."""
    import pickle as _pickle
    ALLOWED = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
               ("torch._utils", "_rebuild_parameter"), ("torch", "Size")}
    STORAGES = {"Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"}

    class Unpickler(_pickle.Unpickler):
        def find_class(self, module, name):
            plain = _PlainPickle
            if (module, name) in plain.ALLOWED or (module == "torch" and name[:-7] in plain.STORAGES
                                                   and name.endswith("Storage")):
                return super().find_class(module, name)
            raise plain._pickle.UnpicklingError(f"{module}.{name} is not a tensor or plain data")

    load = _pickle.load


def _torch_load(torch, path):
    if int(torch.__version__.split(".")[0]) >= 2:
        return torch.load(path, map_location="cpu", weights_only=True)
    # torch 1.13's load() replaces any pickle_module by pickle unless weights_only: its own
    # zip reader with ours, then (the zip format is torch.save's since 1.6)
    import torch.serialization as ts
    with open(path, "rb") as f:
        if not ts._is_zipfile(f):
            raise ValueError("not the zip file torch.save writes")
        with ts._open_zipfile_reader(f) as z:
            return ts._load(z, "cpu", _PlainPickle, encoding="utf-8")


def _read_nanogpt(path):
    try:
        import torch
    except ImportError:
        raise ConvertError("reading a torch.save checkpoint needs PyTorch (python3-torch)")
    if not os.path.isfile(path):
        raise ConvertError(f"'{path}': no such file")
    try:
        ck = _torch_load(torch, path)
    except Exception as e:  # noqa: BLE001 - pickle and zip errors of any kind: not a checkpoint
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise ConvertError(f"'{path}' is not a torch.save checkpoint of tensors and plain data ({type(e).__name__}: "
                           f"{first})")
    if not isinstance(ck, dict) or "model" not in ck or "model_args" not in ck:
        keys = sorted(ck) if isinstance(ck, dict) else type(ck).__name__
        raise ConvertError(f"'{path}' is not a nanoGPT checkpoint: expected a dict with 'model' and 'model_args' "
                           f"(train.py's layout), found {keys}")
    args = ck["model_args"]
    for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
        if not isinstance(args.get(k), int) or args[k] < 1:
            raise ConvertError(f"'{path}': model_args['{k}'] is {args.get(k)!r}, not a positive integer")
    if args["n_embd"] % args["n_head"]:
        raise ConvertError(f"'{path}': model_args n_embd {args['n_embd']} is not divisible by n_head {args['n_head']}")
    return ck


def _model_tensors(path, ck):
    """{name: float32 array} of the nanoGPT model, in gpt-train's names and shapes (lm_head
    dropped, the causal masks dropped, zero biases where nanoGPT had bias=False)."""
    args = ck["model_args"]
    L, C, T, V = args["n_layer"], args["n_embd"], args["block_size"], args["vocab_size"]
    bias = bool(args.get("bias", True))
    sd = {}
    for k, t in ck["model"].items():
        k = k[len(COMPILE_PREFIX):] if k.startswith(COMPILE_PREFIX) else k
        if re.fullmatch(r"transformer\.h\.\d+\.attn\.bias", k) and tuple(t.shape) == (1, 1, T, T):
            continue  # upstream's causal mask on torch < 2.0: a buffer, not a weight
        if not t.is_floating_point():
            raise ConvertError(f"'{path}': tensor '{k}' is {t.dtype}, not floating point")
        sd[k] = t.detach().float().numpy()
    names = nanogpt_param_names(L, bias)
    missing = [k for k in names if k not in sd]
    unexpected = [k for k in sd if k not in names and k != "lm_head.weight"]
    if missing:
        raise ConvertError(f"'{path}': the model lacks {_names(missing)} (model_args: n_layer {L}, bias {bias})")
    if unexpected:
        raise ConvertError(f"'{path}': the model has tensors nanoGPT's GPT does not: {_names(unexpected)}")
    if "lm_head.weight" in sd and not np.array_equal(sd.pop("lm_head.weight"), sd["transformer.wte.weight"]):
        raise ConvertError(f"'{path}': lm_head.weight differs from transformer.wte.weight; gpt-train ties them")
    shapes = gpt_train_shapes(L, C, T, V)
    for k, a in sd.items():
        if a.shape != shapes[k]:
            raise ConvertError(f"'{path}': tensor '{k}' has shape {a.shape}, expected {shapes[k]} for model_args "
                               f"n_layer {L}, n_embd {C}, block_size {T}, vocab_size {V}")
    for k in shapes:
        if k not in sd:  # bias=False: a bias of 0 computes what no bias does
            sd[k] = np.zeros(shapes[k], np.float32)
    return sd, names


def _moments(path, ck, names, shapes):
    """(m, v, t): AdamW's moments by name and its step count, from nanoGPT's optimizer
    state_dict; zeros and t = 0 when the checkpoint has no optimizer state."""
    opt = ck.get("optimizer") or {}
    state, groups = opt.get("state") or {}, opt.get("param_groups") or []
    zeros = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
    if not state:
        return zeros, {k: z.copy() for k, z in zeros.items()}, 0, groups
    # configure_optimizers: group 0 the tensors of 2 or more dimensions, group 1 the rest,
    # each in named_parameters() order; the state is keyed by position across both groups.
    decay = [k for k in names if len(shapes[k]) >= 2]
    nodecay = [k for k in names if len(shapes[k]) < 2]
    got = [len(g.get("params", [])) for g in groups]
    if got != [len(decay), len(nodecay)]:
        raise ConvertError(f"'{path}': the optimizer's parameter groups hold {got} tensors, not nanoGPT's "
                           f"configure_optimizers groups of {len(decay)} decayed and {len(nodecay)} other tensors")
    m, v, steps = dict(zeros), {k: z.copy() for k, z in zeros.items()}, set()
    for group, group_names in zip(groups, (decay, nodecay)):
        for pid, name in zip(group["params"], group_names):
            st = state.get(pid)
            if not st or "exp_avg" not in st or "exp_avg_sq" not in st:
                raise ConvertError(f"'{path}': the optimizer has no AdamW state (exp_avg, exp_avg_sq) for '{name}'")
            for moment, out in (("exp_avg", m), ("exp_avg_sq", v)):
                a = st[moment].detach().float().numpy()
                if a.shape != shapes[name]:
                    raise ConvertError(f"'{path}': optimizer {moment} of '{name}' has shape {a.shape}, the "
                                       f"parameter {shapes[name]}")
                out[name] = a
            steps.add(int(_number(st.get("step", 0), f"'{path}': optimizer step of '{name}'")))
    if len(steps) != 1:
        raise ConvertError(f"'{path}': the optimizer's tensors are at different steps {sorted(steps)}")
    return m, v, steps.pop(), groups


def _vocab(path, model_vocab):
    """The /tokenizer group's vocabulary size, checked against the model's; the rows to keep."""
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise ConvertError(f"--vocab '{path}': cannot open as HDF5 ({e})")
    with f:
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt != "gpt-train/vocab" or "tokenizer" not in f or "vocab_size" not in f["tokenizer"].attrs:
            raise ConvertError(f"--vocab '{path}': format is {fmt!r}, expected 'gpt-train/vocab' (gpt-bpe train --out)")
        V = int(f["tokenizer"].attrs["vocab_size"])
    padded = -(-V // PAD) * PAD
    if model_vocab != V and not (model_vocab == padded and model_vocab > V):
        raise ConvertError(f"--vocab '{path}' has {V} tokens but the model's vocab_size is {model_vocab}"
                           + (f" (nor is it {V} padded to a multiple of {PAD}, {padded})" if model_vocab > V else "")
                           + ": give the vocabulary the nanoGPT run's token ids come from")
    return V


def _tokenizer_key(f):
    """What decides every token's id: the vocabulary size, split pattern, merges, special tokens."""
    g = f["tokenizer"]
    sp = g["special_tokens"][()].tolist() if "special_tokens" in g else []
    return (int(g.attrs.get("vocab_size", -1)), str(g.attrs.get("pattern", "")), g["merges"][()].tobytes(),
            [x.decode() if isinstance(x, bytes) else x for x in sp])


def _data_windows(data, vocab, block_size):
    """Training windows of tokens.h5 (its /train over block_size) after checking that it was
    encoded with the vocabulary; 1 without --data (the cursor is at 0 either way)."""
    if not data:
        return 1
    try:
        f = h5py.File(data, "r")
    except (OSError, ValueError) as e:
        raise ConvertError(f"--data '{data}': cannot open as HDF5 ({e})")
    with f, h5py.File(vocab, "r") as v:
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt != "gpt-train/tokens" or "train" not in f or "tokenizer" not in f:
            raise ConvertError(f"--data '{data}': format is {fmt!r}, expected 'gpt-train/tokens' "
                               "(gpt-bpe encode --out)")
        if _tokenizer_key(f) != _tokenizer_key(v):
            raise ConvertError(f"--data '{data}' was encoded with another vocabulary than --vocab '{vocab}': "
                               f"encode the text with --vocab {vocab}")
        return max(1, (f["train"].shape[0] - 1) // block_size)


def _write_h5(out, vocab, cfg, state, tensors, m, v):
    """A checkpoint as io/train_state.c writes one (docs/formats.md, checkpoints)."""
    import datetime
    tmp = f"{out}.tmp-{os.getpid()}"
    try:
        with h5py.File(tmp, "w", libver=("v110", "latest")) as f, h5py.File(vocab, "r") as voc:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = np.int64(1)
            for k in ("step", "tokens_seen", "world_size"):
                f.attrs[k] = np.int64(state[k])
            f.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            f.attrs["software_version"] = "gpt_checkpoint.py from-nanogpt"
            g = f.create_group("config")
            for k, x in cfg.items():
                g.attrs[k] = x if isinstance(x, str) else (np.float64(x) if isinstance(x, float) else np.int64(x))
            for group, arrays in (("model", tensors), ("optimizer/m", m), ("optimizer/v", v)):
                g = f.create_group(group)
                for k, a in arrays.items():
                    d = g.create_dataset(k, data=np.ascontiguousarray(a, np.float32))
                    d.attrs.create("checksum", tensor_checksum(a), dtype=np.uint64)
            f["model"]["lm_head.weight"] = f["model"]["transformer.wte.weight"]  # a hard link, as gpt-train's
            g = f.create_group("state")
            g.attrs["seed"] = np.int64(cfg.get("seed", 1337))
            g.attrs["adam_t"] = np.int64(state["adam_t"])
            g.attrs["best_val_loss"] = np.float64(state["best_val_loss"])
            g.attrs["skipped_steps"] = np.int64(0)
            g.attrs["recent_loss"] = np.float64(0)
            g.attrs["recent_loss_steps"] = np.int64(0)
            g.attrs["bad_steps_in_row"] = np.int64(0)
            g.attrs["rng"] = RNG_DOC
            g.attrs["data_epoch"] = np.int64(0)  # nanoGPT keeps no cursor: the start of gpt-train's order
            g.attrs["data_pos"] = np.int64(0)
            g.attrs["data_windows"] = np.int64(state["data_windows"])
            voc.copy("tokenizer", f)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _check_output(out, run, force):
    """Refuses, before any work, an output that would overwrite something or cannot be made."""
    target = run if run is not None else out
    parent = os.path.dirname(os.path.abspath(target))
    if run is not None:
        if os.path.exists(os.path.join(run, "latest")) or (os.path.isdir(run) and any(
                re.fullmatch(r"ckpt-\d{8,}\.h5", n) for n in os.listdir(run))):
            raise ConvertError(f"--run '{run}' already holds a run (RUN/latest or a checkpoint): use a new directory")
        if os.path.exists(run) and not os.path.isdir(run):
            raise ConvertError(f"--run '{run}' is not a directory")
    else:
        if os.path.isdir(out):
            raise ConvertError(f"'{out}' is a directory (for a run directory use --run)")
        if os.path.exists(out) and not force:
            raise ConvertError(f"'{out}' exists (add --force to replace it)")
    if not os.path.isdir(parent):
        raise ConvertError(f"'{target}': the directory '{parent}' does not exist")


def from_nanogpt(ckpt, out=None, vocab=None, run=None, force=False, notes=None, data=None):
    """Writes a gpt-train checkpoint (out, a file; or run, a run directory with RUN/latest) from
    a nanoGPT train.py checkpoint and a gpt-train vocabulary; returns the checkpoint's path.
    data (optional): the tokens.h5 the run will continue on, checked against the vocabulary,
    for the data cursor's window count. Raises ConvertError with one message on bad input.
    notes(text) hears what was adapted."""
    notes = notes or (lambda text: None)
    if (out is None) == (run is None):
        raise ConvertError("give exactly one of OUT.h5 and --run RUN")
    if not vocab:
        raise ConvertError("--vocab is required: nanoGPT checkpoints hold no tokenizer, gpt-train's do")
    _check_output(out, run, force)
    ck = _read_nanogpt(ckpt)
    args = ck["model_args"]
    V = _vocab(vocab, args["vocab_size"])
    windows = _data_windows(data, vocab, int(args["block_size"]))
    tensors, names = _model_tensors(ckpt, ck)
    shapes = {k: a.shape for k, a in tensors.items()}
    m, v, adam_t, groups = _moments(ckpt, ck, names, shapes)
    if V < args["vocab_size"]:
        notes(f"vocab_size {args['vocab_size']} is {V} padded to a multiple of {PAD} (nanoGPT's padding): "
              f"rows {V}..{args['vocab_size'] - 1} of transformer.wte.weight and its moments dropped")
        for d in (tensors, m, v):
            d["transformer.wte.weight"] = d["transformer.wte.weight"][:V]
    if not args.get("bias", True):
        notes("bias=False: every bias is 0 (the same model); gpt-train trains them from there")
    settings = dict(ck.get("config") if isinstance(ck.get("config"), dict) else {})
    if "dropout" in args:
        settings["dropout"] = args["dropout"]
    cfg = {k: int(args[k]) for k in ("n_layer", "n_head", "n_embd", "block_size")}
    cfg["vocab_size"] = V
    for theirs, (ours, kind, lo, hi) in NANOGPT_SETTINGS.items():
        x = settings.get(theirs)
        if x is None or isinstance(x, bool) or not isinstance(x, (int, float)):
            continue
        if kind is int and x != int(x) or not lo <= x <= hi:
            notes(f"{theirs} = {x!r} is outside gpt-train's --{ours.replace('_', '-')} range: left to its default")
            continue
        cfg[ours] = kind(x)
    if groups:  # the optimizer's own hyperparameters win over the logged settings
        cfg["weight_decay"] = float(groups[0].get("weight_decay", cfg.get("weight_decay", 0.0)))
        betas = groups[0].get("betas")
        if betas:
            cfg["beta1"], cfg["beta2"] = float(betas[0]), float(betas[1])
        if "eps" in groups[0]:
            cfg["eps"] = float(groups[0]["eps"])
    if "decay_lr" in settings:
        cfg["lr_schedule"] = "cosine" if settings["decay_lr"] else "constant"
    if "eval_every" in cfg:
        cfg["ckpt_every"] = cfg["eval_every"]  # nanoGPT saves at each eval
    cfg.setdefault("dropout", 0.0)  # a model setting every checkpoint holds
    cfg["data"], cfg["out"] = "", run or ""  # a record only: --resume takes both from its command line
    step = int(_number(ck.get("iter_num", 0), f"'{ckpt}': iter_num"))
    best = _number(ck.get("best_val_loss", float("inf")), f"'{ckpt}': best_val_loss")
    tokens = step * cfg.get("batch_size", 0) * cfg.get("grad_accum", 1) * cfg["block_size"]
    state = {"step": step, "tokens_seen": tokens, "world_size": 1, "adam_t": adam_t, "best_val_loss": float(best),
             "data_windows": windows}
    if adam_t == 0 and step > 0:
        notes("no AdamW state in the checkpoint: the moments start at 0 (as a fresh optimizer)")
    if run is None:
        _write_h5(out, vocab, cfg, state, tensors, m, v)
        return out
    created = not os.path.isdir(run)
    os.makedirs(run, exist_ok=True)
    out = os.path.join(run, f"ckpt-{step:08d}.h5")
    try:
        _write_h5(out, vocab, cfg, state, tensors, m, v)
        tmp = os.path.join(run, "latest.tmp")  # RUN/latest last: it only ever names a complete file
        with open(tmp, "w") as fh:
            fh.write(os.path.basename(out) + "\n")
        os.replace(tmp, os.path.join(run, "latest"))
    except BaseException:
        for leftover in (out, os.path.join(run, "latest.tmp")):
            if os.path.exists(leftover):
                os.remove(leftover)
        if created and not os.listdir(run):
            os.rmdir(run)
        raise
    return out


def main(argv=None):
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # one line and exit 1, as every tool of gpt-train
            print(f"{PROG}: error: {message}", file=sys.stderr)
            sys.exit(1)

    ap = Parser(prog=PROG, description="Convert checkpoints between nanoGPT and gpt-train (docs/engine.md).")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    c = sub.add_parser("from-nanogpt", help="a nanoGPT train.py checkpoint (ckpt.pt) -> a gpt-train checkpoint",
                       description="Writes a gpt-train checkpoint that gpt-train --resume and gpt-sample accept "
                                   "from a nanoGPT checkpoint (weights, AdamW moments, iter_num, settings) and a "
                                   "gpt-train vocabulary whose token ids are the nanoGPT run's.")
    c.add_argument("ckpt", help="nanoGPT's torch.save checkpoint (train.py's out_dir/ckpt.pt)")
    c.add_argument("out", nargs="?", help="the gpt-train checkpoint to write (OUT.h5)")
    c.add_argument("--run", help="write RUN/ckpt-<iter_num>.h5 and RUN/latest instead, to continue with "
                                 "gpt-train --out RUN --resume (RUN must not hold a run yet)")
    c.add_argument("--vocab", required=True, help="vocab.h5 of gpt-bpe train: its /tokenizer goes into the checkpoint")
    c.add_argument("--data", help="the tokens.h5 the run continues on (optional): checked against --vocab, and "
                                  "the data cursor counts its windows")
    c.add_argument("--force", action="store_true", help="replace an existing OUT.h5")
    sub.required = True
    a = ap.parse_args(argv)

    def note(text):
        print(f"{PROG}: note: {text}", file=sys.stderr)

    try:
        path = from_nanogpt(a.ckpt, out=a.out, vocab=a.vocab, run=a.run, force=a.force, notes=note, data=a.data)
    except ConvertError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # writing failed (a full disk, say): no output file is left
        print(f"{PROG}: error: writing '{a.run or a.out}' failed: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    if a.run:
        tokens = a.data or "tokens.h5"
        print(f"continue with: mpirun -np N gpt-train --data {tokens} --out {a.run} --resume --steps STEPS\n"
              + ("" if a.data else f"  (tokens.h5: gpt-bpe encode --vocab {a.vocab} ...)\n")
              + f"sample with: gpt-sample --checkpoint {a.run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
