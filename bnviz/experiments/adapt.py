"""Re-estimating BatchNorm statistics after training: precise BN, AdaBN, and BN during fine-tuning.

BN's running statistics are an exponential moving average collected while the weights moved, so
at the end of training they mix statistics of older weights (small momentum) or of the last few
batches only (large momentum). Three remedies, each on a copy of the model:

* :func:`precise_bn` (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021; fvcore's
  ``update_bn_stats``): with the weights fixed, average the batch statistics of N batches.
* :func:`adabn` (Li, Wang, Shi, Liu & Hou, "Revisiting Batch Normalization For Practical Domain
  Adaptation", 2016): replace the statistics by those of the *target* domain's inputs; no labels.
* :func:`finetune`: train on a few labelled target samples with BN either frozen (eval mode, source
  statistics, gamma and beta fixed) or trainable (train mode: batch statistics, running statistics
  updated, gamma and beta learned).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

import numpy as np
import torch

from ..data import batches, shift_features
from ..models import Net, accuracy, loss_fn
from ..optim import Sgd
from ..train import Callback, batchnorm_train_mode, population_statistics, run_loop


def precise_bn_batches(n_samples: int, batch_size: int, n_batches: int, seed: int = 0) -> list[torch.Tensor]:
    """The sample indices of the ``n_batches`` batches :func:`precise_bn` averages over.

    Shuffled epochs of ``n_samples`` (as :func:`bnviz.data.batches`: no sample twice within an
    epoch, a partial last batch dropped), as many epochs as it takes, from one generator seeded
    by ``seed``. A ``batch_size`` above ``n_samples`` gives batches of the whole set.
    """
    if n_batches < 1:
        raise ValueError(f"n_batches must be at least 1, got {n_batches}")
    if min(batch_size, n_samples) < 2:
        raise ValueError("BatchNorm statistics need batches of at least 2 samples")
    gen = torch.Generator().manual_seed(seed)
    index = torch.arange(n_samples)
    out: list[torch.Tensor] = []
    while len(out) < n_batches:
        for idx, _ in batches(index, index, batch_size, gen):
            out.append(idx)
            if len(out) == n_batches:
                break
    return out


@torch.no_grad()
def precise_bn(model: Net, x: torch.Tensor, batch_size: int, n_batches: int, seed: int = 0) -> Net:
    """A copy of ``model`` whose BN running statistics are averages over ``n_batches`` batches of ``x``.

    What it computes, for every BN layer: ``running_mean`` = the plain mean over the N batches of
    the per-channel batch means of the layer's input, ``running_var`` = the plain mean of the
    per-channel *unbiased* batch variances (divide by m - 1, m values per channel in a batch),
    the same as fvcore's ``update_bn_stats`` and as torch's BN with ``momentum=None`` over N
    batches (which is how it is done here: the copy's BN layers run N forward passes in training
    mode with momentum None after a reset, then get their momentum back). Batches come from
    :func:`precise_bn_batches` with ``seed``.

    Each batch runs through the whole network in training mode, so a layer's input is what it is
    in training: the layers before it normalize with that batch's own statistics. Dropout is off
    (unlike fvcore, which leaves the mode to the caller), so the statistics are those eval mode
    will see. Weights, gamma and beta are not touched.

    Why: the moving average mixes statistics of old weights (small momentum) or of a few recent
    batches (large momentum); N batches at the final weights fix both, and N of 10-100 is enough
    (Wu & Johnson 2021). It will not fix statistics for another data distribution; see :func:`adabn`.
    """
    net = copy.deepcopy(model)
    norms = net.batchnorms()
    if not norms:
        return net
    momenta = {i: m.momentum for i, m in norms}
    for _, m in norms:
        m.reset_running_stats()
        m.momentum = None
    batchnorm_train_mode(net)
    for idx in precise_bn_batches(len(x), batch_size, n_batches, seed):
        net(x[idx])
    for i, m in norms:
        m.momentum = momenta[i]
    net.eval()
    return net


@torch.no_grad()
def adabn(model: Net, x_target: torch.Tensor) -> Net:
    """A copy of ``model`` whose BN running statistics are those of the target inputs ``x_target``.

    AdaBN (Li et al. 2016): for every BN layer, the per-channel mean and unbiased variance of its
    input when all of ``x_target`` goes through the network as one batch with every BN layer
    normalizing by those same target statistics (train.population_statistics, dropout off), so
    each layer's statistics are taken after the layers before it have been adapted too. Uses no
    labels; weights, gamma and beta are the source model's.
    """
    net = copy.deepcopy(model)
    stats = population_statistics(net, x_target)
    for i, m in net.batchnorms():
        m.running_mean.copy_(stats[i][0])
        m.running_var.copy_(stats[i][1])
    net.eval()
    return net


BnMode = Literal["frozen", "trainable"]


def finetune(model: Net, x: torch.Tensor, y: torch.Tensor, *, bn: BnMode, steps: int, batch_size: int,
             lr: float, seed: int = 0) -> Net:
    """A copy of ``model`` fine-tuned with plain SGD on the labelled samples ``(x, y)``.

    ``bn="frozen"``: BN layers stay in eval mode (they normalize with the source running
    statistics, which do not change) and their gamma and beta are not trained; everything else
    (weights, biases, dropout in training mode) trains. ``bn="trainable"``: the whole network is in
    training mode: BN normalizes with each batch's statistics, updates its running statistics with
    its momentum, and learns gamma and beta. Batches are shuffled epochs of ``(x, y)`` from
    ``seed``; a batch size above ``len(x)`` uses all of them.
    """
    if bn not in ("frozen", "trainable"):
        raise ValueError(f"bn must be 'frozen' or 'trainable', got {bn!r}")
    if len(x) < 2:
        raise ValueError("fine-tuning needs at least 2 labelled samples")
    net = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    for d in net.dropouts():
        d.generator = gen
    bn_params = {id(p) for _, m in net.batchnorms() for p in m.parameters()}
    params = [p for p in net.parameters() if bn == "trainable" or id(p) not in bn_params]
    optimizer = Sgd(params, lr=lr)  # torch.optim.SGD's update, without its torch._dynamo import
    run_loop(net, optimizer, _epochs(x, y, batch_size, gen), steps, [_BnMode(bn)])
    net.eval()
    return net


def _epochs(x: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from batches(x, y, batch_size, gen)


class _BnMode(Callback):
    """Fine-tuning with frozen BN: the network trains, its BN layers stay in eval mode."""

    def __init__(self, bn: BnMode):
        self.bn = bn

    def before_step(self, step, model, x, y):
        model.train()
        if self.bn == "frozen":
            for _, m in model.batchnorms():
                m.eval()


# ----------------------------------------------------------------------------------------------
# The numbers the precise-BN / domain-shift page draws


@dataclass(frozen=True)
class Scores:
    """Eval-mode accuracy (share correct) and mean cross-entropy on a test set."""

    acc: float
    loss: float


@torch.no_grad()
def score(model: Net, x: torch.Tensor, y: torch.Tensor) -> Scores:
    """Eval-mode scores of ``model`` (on a copy, so a shared model's mode is left alone)."""
    net = copy.deepcopy(model)
    net.eval()
    logits = net(x)
    return Scores(acc=accuracy(logits, y), loss=loss_fn(logits, y).item())


@dataclass(frozen=True)
class PreciseCurve:
    """Test scores with the moving-average statistics, with precise BN over N batches, and with the
    population statistics of the training inputs (the limit of precise BN as N grows)."""

    n_batches: tuple[int, ...]
    acc: np.ndarray          # (len(n_batches), repeats): one column per draw of the batches
    loss: np.ndarray
    ema: Scores
    population: Scores


def precise_bn_curve(model: Net, x_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
                     batch_size: int, n_batches: Sequence[int], repeats: int = 3, seed: int = 0) -> PreciseCurve:
    """:func:`precise_bn` for every N in ``n_batches``, ``repeats`` draws of batches each (seeds
    ``seed``, ``seed + 1``, ...), scored on the test set."""
    acc = np.zeros((len(n_batches), repeats))
    loss = np.zeros_like(acc)
    for i, n in enumerate(n_batches):
        for r in range(repeats):
            s = score(precise_bn(model, x_train, batch_size, n, seed + r), x_test, y_test)
            acc[i, r], loss[i, r] = s.acc, s.loss
    return PreciseCurve(n_batches=tuple(n_batches), acc=acc, loss=loss, ema=score(model, x_test, y_test),
                        population=score(adabn(model, x_train), x_test, y_test))


@dataclass(frozen=True)
class ShiftCurve:
    """Target-domain test accuracy against the shift amount, with source and with target statistics."""

    kind: str
    amounts: tuple[float, ...]
    frozen: tuple[float, ...]    # eval mode with the source running statistics
    adapted: tuple[float, ...]   # AdaBN: statistics of the shifted test inputs


def shift_curve(model: Net, x_test: torch.Tensor, y_test: torch.Tensor, kind: str,
                amounts: Sequence[float]) -> ShiftCurve:
    frozen, adapted = [], []
    for a in amounts:
        xt = shift_features(x_test, kind, a)
        frozen.append(score(model, xt, y_test).acc)
        adapted.append(score(adabn(model, xt), xt, y_test).acc)
    return ShiftCurve(kind=kind, amounts=tuple(amounts), frozen=tuple(frozen), adapted=tuple(adapted))


@dataclass(frozen=True)
class FirstLayerStats:
    """The first BN layer's per-channel statistics: source running ones vs the target inputs'."""

    source_mean: np.ndarray
    source_var: np.ndarray
    target_mean: np.ndarray
    target_var: np.ndarray


def first_layer_stats(model: Net, x_target: torch.Tensor) -> FirstLayerStats | None:
    norms = model.batchnorms()
    if not norms:
        return None
    i, m = norms[0]
    target = adabn(model, x_target).batchnorms()[0][1]
    return FirstLayerStats(source_mean=m.running_mean.numpy().copy(), source_var=m.running_var.numpy().copy(),
                           target_mean=target.running_mean.numpy().copy(), target_var=target.running_var.numpy().copy())


@dataclass(frozen=True)
class Transfer:
    """Target test scores of the source model, AdaBN, and two fine-tunings on labelled target samples."""

    source_on_source: Scores     # no shift: the source model on the source test set
    frozen: Scores               # source model on the target test set, source statistics
    adabn: Scores                # AdaBN on the target test inputs
    finetune_frozen_bn: Scores   # fine-tuned with BN in eval mode, gamma and beta fixed
    finetune_trainable_bn: Scores  # fine-tuned with BN in train mode, gamma and beta learned
    n_labelled: int


def transfer(model: Net, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor,
             kind: str, amount: float, *, n_labelled: int, steps: int, batch_size: int, lr: float,
             seed: int = 0) -> Transfer:
    """Everything compared at one shift: the target domain is the same data under ``kind`` / ``amount``.

    The labelled target samples are the first ``n_labelled`` training samples, shifted; the target
    test set is the shifted test set (no overlap).
    """
    xt = shift_features(x_test, kind, amount)
    xl = shift_features(x_train[:n_labelled], kind, amount)
    yl = y_train[:n_labelled]
    tuned = {bn: finetune(model, xl, yl, bn=bn, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
             for bn in ("frozen", "trainable")}
    return Transfer(source_on_source=score(model, x_test, y_test), frozen=score(model, xt, y_test),
                    adabn=score(adabn(model, xt), xt, y_test),
                    finetune_frozen_bn=score(tuned["frozen"], xt, y_test),
                    finetune_trainable_bn=score(tuned["trainable"], xt, y_test), n_labelled=len(xl))
