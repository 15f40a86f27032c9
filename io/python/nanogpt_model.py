"""nanoGPT's GPT (Karpathy, model.py), trimmed to what gpt-train's checkpoints need.

The PyTorch twin of the C engine: same architecture (pre-LayerNorm, eps 1e-5, GELU tanh
approximation, learned positions, biases on, lm_head tied to wte), same parameter names and
shapes, so a gpt-train checkpoint loads with strict=True:

    from gpt_checkpoint import load_state_dict, load_config
    model = GPT(GPTConfig(**load_config(path)))
    model.load_state_dict(load_state_dict(path), strict=True)

The causal mask is a non-persistent buffer, so it is not part of the state_dict (nanoGPT's
flash-attention path has no buffer either).

It can also be built the way upstream nanoGPT's model.py builds its GPT, for tests of the
interop helpers (gpt_checkpoint.load_into, from-nanogpt) without a copy of upstream:
GPT.like_upstream(config) has the exact erf GELU, GPTConfig(bias=False) drops every bias,
and the causal mask is what upstream registers on each torch: a persistent buffer
transformer.h.<i>.attn.bias (in the state_dict) before torch 2.0, none from 2.0 on (flash).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    block_size: int = 1024
    vocab_size: int = 50257
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # upstream's switch: False drops every Linear and LayerNorm bias (gpt-train has them)


class LayerNorm(nn.Module):
    """LayerNorm (eps 1e-5) whose bias may be absent, as upstream's: same names as nn.LayerNorm."""

    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


# Where the causal mask lives: "nonpersistent" (the twin's: a buffer outside the state_dict),
# "persistent" (upstream on torch < 2.0: the buffer transformer.h.<i>.attn.bias is in the
# state_dict) or "none" (upstream on torch >= 2.0: no buffer; the mask is made per forward).
MASKS = ("nonpersistent", "persistent", "none")


class CausalSelfAttention(nn.Module):
    def __init__(self, config, mask="nonpersistent"):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        assert mask in MASKS, mask
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        if mask != "none":
            causal = torch.tril(torch.ones(config.block_size, config.block_size))
            self.register_buffer("bias", causal.view(1, 1, config.block_size, config.block_size),
                                 persistent=mask == "persistent")
        self.last_att = None  # (B, nh, T, T) softmax before dropout, when keep_att is set
        self.keep_att = False

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        causal = self.bias[:, :, :T, :T] if hasattr(self, "bias") else torch.ones(T, T, device=x.device).tril()
        att = att.masked_fill(causal == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        if self.keep_att:
            self.last_att = att.detach()
        att = self.attn_dropout(att)
        y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config, gelu="tanh"):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=gelu)  # "tanh" as the engine and GPT-2; "none" (erf) as upstream
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config, mask="nonpersistent", gelu="tanh"):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, config.bias)
        self.attn = CausalSelfAttention(config, mask)
        self.ln_2 = LayerNorm(config.n_embd, config.bias)
        self.mlp = MLP(config, gelu)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config, mask="nonpersistent", gelu="tanh"):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, mask, gelu) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        b, t = idx.size()
        assert t <= self.config.block_size, f"sequence of {t} exceeds block size {self.config.block_size}"
        pos = torch.arange(0, t, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, eps=1e-8):
        """AdamW with weight decay on the 2-D tensors only, as nanoGPT."""
        params = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        decay = [p for p in params.values() if p.dim() >= 2]
        nodecay = [p for p in params.values() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": nodecay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """nanoGPT's sampler: idx (B, T) -> (B, T + max_new_tokens), cropping to block_size."""
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("Inf")
            probs = F.softmax(logits, dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
        return idx

    @classmethod
    def like_upstream(cls, config, flash=None):
        """A GPT built as upstream nanoGPT's model.py builds it: erf GELU, and the causal mask as
        upstream registers it, a persistent buffer transformer.h.<i>.attn.bias without flash
        attention (torch < 2.0), none with it (torch >= 2.0). flash=None: as on this torch."""
        if flash is None:
            flash = hasattr(F, "scaled_dot_product_attention")
        return cls(config, mask="none" if flash else "persistent", gelu="none")

    @classmethod
    def from_checkpoint(cls, path, dropout=None):
        """A GPT with the weights of a gpt-train checkpoint (strict=True)."""
        from gpt_checkpoint import load_config, load_state_dict
        cfg = load_config(path)
        if dropout is not None:
            cfg["dropout"] = dropout
        model = cls(GPTConfig(**cfg))
        model.load_state_dict(load_state_dict(path), strict=True)
        return model
