"""A tiny transformer encoder, its normalization placed as the variants people compare, and a task
generated in code (nothing downloaded).

The block (Vaswani et al. 2017, the layout of ``torch.nn.TransformerEncoderLayer`` with ReLU,
no dropout, ``batch_first=True``), with ``Norm`` one of LayerNorm, RMSNorm, DyT or nothing:

* Post-LN (``norm_first=False``, the original):  ``x = Norm1(x + SA(x));  x = Norm2(x + FF(x))``
* Pre-LN  (``norm_first=True``, Xiong et al. 2020): ``x = x + SA(Norm1(x));  x = x + FF(Norm2(x))``

with ``SA`` multi-head self-attention (no mask: every position sees every other) and
``FF(x) = W2 ReLU(W1 x + b1) + b2``. A pre-norm network normalizes once more after its last block
(as GPT-2 and ViT do); a post-norm one already ends in a norm. The parameter names are torch's
(``self_attn.in_proj_weight``, ``linear1``, ``norm2``, ...), so a block loads the ``state_dict``
of an ``nn.TransformerEncoderLayer`` (``tests/test_tiny_transformer.py`` checks the outputs agree).

The task, :func:`sorting_task`: sequences of ``length`` tokens from ``0 .. vocab - 1``; the target
at every position is the sorted sequence. Shapes: tokens (N, T) int64, logits (N, vocab, T) so
``F.cross_entropy(logits, targets)`` and ``argmax(1)`` work per position as they do per sample.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset
from .norms import DyT

NORMS = ("layernorm", "rmsnorm", "dyt", "none")
# label -> (norm kind, norm_first)
VARIANTS: dict[str, tuple[str, bool]] = {
    "Post-LN": ("layernorm", False),
    "Pre-LN": ("layernorm", True),
    "Pre-RMSNorm": ("rmsnorm", True),
    "Pre-DyT": ("dyt", True),
    "no normalization": ("none", True),
}


def make_token_norm(kind: str, d_model: int) -> nn.Module:
    """The normalization over each token's ``d_model`` features (the last axis)."""
    if kind == "layernorm":
        return nn.LayerNorm(d_model)
    if kind == "rmsnorm":
        return nn.RMSNorm(d_model)
    if kind == "dyt":
        return DyT(d_model)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown normalization {kind!r}; choose one of {', '.join(NORMS)}")


class SelfAttention(nn.Module):
    r"""Multi-head self-attention, written out: for each of ``heads`` heads of size
    :math:`d_h = d / \text{heads}`,

    .. math:: \mathrm{head}_i = \mathrm{softmax}\!\left(\frac{Q_i K_i^\top}{\sqrt{d_h}}\right) V_i,
              \qquad [Q, K, V] = x W_{in}^\top + b_{in}

    and the heads concatenated go through ``out_proj``. Parameters named as in
    ``nn.MultiheadAttention`` (``in_proj_weight`` (3d, d), ``in_proj_bias`` (3d,), ``out_proj``).
    Shape: (N, T, d) -> (N, T, d).
    """

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not a multiple of heads {heads}")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d_model))
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (z.reshape(n, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))  # (N, h, T, dh)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(n, t, d))


class TransformerBlock(nn.Module):
    """One encoder block, Post- or Pre-norm (see the module docstring). Shape (N, T, d) -> same."""

    def __init__(self, d_model: int, heads: int, d_ff: int, norm: str = "layernorm", norm_first: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = SelfAttention(d_model, heads)
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.norm1 = make_token_norm(norm, d_model)
        self.norm2 = make_token_norm(norm, d_model)

    def ff(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(torch.relu(self.linear1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.self_attn(self.norm1(x))
            return x + self.ff(self.norm2(x))
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.ff(x))


class TinyTransformer(nn.Module):
    """Token and position embeddings, ``layers`` blocks, a final norm for pre-norm variants, and a
    linear head per position. Tokens (N, T) -> logits (N, vocab, T)."""

    def __init__(self, vocab: int, length: int, d_model: int = 32, heads: int = 2, d_ff: int = 64, layers: int = 4,
                 norm: str = "layernorm", norm_first: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Parameter(torch.zeros(length, d_model))
        self.blocks = nn.ModuleList(TransformerBlock(d_model, heads, d_ff, norm, norm_first) for _ in range(layers))
        self.final_norm = make_token_norm(norm, d_model) if norm_first else nn.Identity()
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x)).transpose(1, 2)


def init_weights(model: TinyTransformer, generator: torch.Generator) -> None:
    """Xavier-uniform matrices (torch's choice for ``in_proj_weight``, used here for every weight
    matrix, as in the original Transformer), zero biases, N(0, 1) token and N(0, 0.02^2) position
    embeddings; gammas 1, betas 0, DyT's alpha 0.5 as constructed."""
    for name, p in model.named_parameters():
        if name.endswith("position"):
            nn.init.normal_(p, std=0.02, generator=generator)
        elif name.startswith("embed"):
            nn.init.normal_(p, generator=generator)
        elif p.dim() == 2:
            nn.init.xavier_uniform_(p, generator=generator)
        elif name.endswith("bias") and not _is_norm_param(model, name):
            nn.init.zeros_(p)


def _is_norm_param(model: nn.Module, name: str) -> bool:
    owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    return isinstance(owner, (nn.LayerNorm, nn.RMSNorm, DyT))


def build_transformer(variant: str, vocab: int, length: int, *, layers: int = 4, d_model: int = 32, heads: int = 2,
                      d_ff: int = 64, generator: torch.Generator | None = None) -> TinyTransformer:
    """The network of one of :data:`VARIANTS`, weights from ``generator``."""
    norm, norm_first = VARIANTS[variant]
    model = TinyTransformer(vocab, length, d_model, heads, d_ff, layers, norm, norm_first)
    init_weights(model, generator if generator is not None else torch.Generator().manual_seed(0))
    return model


def sorting_task(n_train: int = 4000, n_test: int = 500, length: int = 8, vocab: int = 10, seed: int = 0) -> Dataset:
    """Random token sequences (uniform over ``0 .. vocab - 1``, from a generator seeded by
    ``seed``) and their sorted versions as targets, as a :class:`~bnviz.data.Dataset`."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n_train + n_test, length), generator=g)
    y = x.sort(dim=1).values
    return Dataset(x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:],
                   n_classes=vocab, name=f"sorting {length} tokens of {vocab}")
