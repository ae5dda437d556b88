"""SGD and Adam for the training loop: torch's own update functions, without torch.optim.Optimizer.

Why not ``torch.optim.SGD`` / ``torch.optim.Adam`` themselves: their ``__init__``, ``zero_grad`` and
``step`` are wrapped in ``torch._disable_dynamo``, which imports ``torch._dynamo`` on first use.
That import takes ~2 s of CPU, and a new server paid it before the first chart of its first page.

The updates are not re-implemented: :class:`Sgd` and :class:`Adam` keep the same per-parameter
state the torch classes keep and call the same functional updates (``torch.optim.sgd.sgd``,
``torch.optim.adam.adam``) with the arguments the classes pass on CPU (single-tensor kernels:
torch's foreach/fused kernels are for accelerators). ``tests/test_optim.py`` checks that weights
after many steps are bit-identical to ``torch.optim.SGD`` / ``torch.optim.Adam``.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch.optim.adam import adam
from torch.optim.sgd import sgd


class _Optimizer:
    """The part of torch.optim.Optimizer the loop uses: ``zero_grad`` and ``step``."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0):
        self.params = [p for p in params if p.requires_grad]
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.detach_().zero_()

    def _with_grads(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        params = [p for p in self.params if p.grad is not None]
        return params, [p.grad for p in params]


class Sgd(_Optimizer):
    """``torch.optim.SGD(params, lr, weight_decay=...)``: plain SGD, no momentum."""

    @torch.no_grad()
    def step(self) -> None:
        params, grads = self._with_grads()
        sgd(params, grads, [None] * len(params), has_sparse_grad=False, foreach=False, fused=False,
            weight_decay=self.weight_decay, momentum=0.0, lr=self.lr, dampening=0.0, nesterov=False,
            maximize=False)


class Adam(_Optimizer):
    """``torch.optim.Adam(params, lr, weight_decay=...)`` with its default betas (0.9, 0.999) and
    eps 1e-8; the step counters are float32 CPU scalars, as torch keeps them."""

    betas = (0.9, 0.999)
    eps = 1e-8

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    @torch.no_grad()
    def step(self) -> None:
        params, grads = self._with_grads()
        for p in params:
            if p not in self.state:
                self.state[p] = {"step": torch.tensor(0.0, dtype=torch.float32),
                                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        states = [self.state[p] for p in params]
        adam(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
             [s["step"] for s in states], foreach=False, capturable=False, differentiable=False, fused=False,
             has_complex=False, decoupled_weight_decay=False, amsgrad=False, beta1=self.betas[0],
             beta2=self.betas[1], lr=self.lr, weight_decay=self.weight_decay, eps=self.eps, maximize=False)
