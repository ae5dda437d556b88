"""The training loop: deterministic, recorded at a cadence, stoppable, and honest about divergence.

``train(config)`` returns a :class:`Run`: the compact :class:`~bnviz.record.History` every figure is
drawn from, and the trained model for the experiments that need it afterwards (precise BN, AdaBN).
The same config gives the same history bit for bit: all randomness comes from generators seeded
by ``config.seed`` (never torch's global one, which other sessions of a server share).
"""
from __future__ import annotations

import functools
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import optim
from .config import Config, check
from .data import Dataset, batches, load
from .models import TAPS, Net, accuracy, build, loss_fn
from .record import EvalPoint, History, Snapshot, bin_edges, new_history, norm_stats_many, tap_stats_many

# Called after every evaluation, the one before the first update included, with (updates done,
# total steps, history so far); returning False stops the run early (the history then says where).
ProgressFn = Callable[[int, int, History], "bool | None"]

EVAL_SUBSET = 1024  # training samples the population statistics are computed over


@dataclass
class Run:
    config: Config
    history: History
    model: Net | None       # final weights in eval mode; None for a run stopped before the end
    dataset: Dataset | None


def make_optimizer(config: Config, model: nn.Module) -> optim.Sgd | optim.Adam:
    """torch.optim.SGD / Adam's updates, bit for bit, without their ~2 s torch._dynamo import."""
    kind = optim.Adam if config.optimizer == "adam" else optim.Sgd
    return kind(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _endless_batches(data: Dataset, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from batches(data.x_train, data.y_train, batch_size, generator)


@contextmanager
def preserved_norm_state(model: Net) -> Iterator[None]:
    """Run code that puts BN layers in training mode without letting it touch their running
    statistics (or the model's train/eval flags): both are restored on exit."""
    norms = [m for _, m in model.batchnorms()]
    saved = [[(b, b.clone()) for b in m.buffers()] for m in norms]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        for buffers in saved:
            for b, copy in buffers:
                b.copy_(copy)
        for m, mode in modes:
            if m.training != mode:  # nn.Module.__setattr__ is slow enough to matter here
                m.training = mode


def batchnorm_train_mode(model: Net) -> None:
    """BN layers normalize with batch statistics; everything else (dropout) in eval mode."""
    model.eval()
    for _, m in model.batchnorms():
        m.train()


def _chunks(n: int, size: int) -> list[slice]:
    """Slices of ``range(n)`` of ``size``, the last one absorbing a remainder of 1 (BN cannot
    normalize a batch of one)."""
    edges = list(range(0, n, size)) + [n]
    if len(edges) > 2 and edges[-1] - edges[-2] < 2:
        edges.pop(-2)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def _fill_with_population_statistics(model: Net, x: torch.Tensor) -> list[tuple[int, nn.Module]]:
    """Leave the population statistics of ``x`` in the running statistics of the BN layers that
    keep them, and return those layers. The BN layers must be in training mode; their running
    statistics are overwritten (the caller preserves them)."""
    norms = [(i, m) for i, m in model.batchnorms() if m.running_mean is not None]
    momenta = [m.momentum for _, m in norms]
    if norms:
        try:
            for _, m in norms:
                m.reset_running_stats()
                m.momentum = None
            model(x)
        finally:
            for (_, m), momentum in zip(norms, momenta):
                m.momentum = momentum
    return norms


@torch.no_grad()
def population_statistics(model: Net, x: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and unbiased variance of every BN layer's input over ``x`` as one batch,
    with the BN layers normalizing by those same statistics: the "true" statistics of the current
    weights, which the running averages only estimate. (Layers that keep no running statistics
    are left out.)

    Computed by BN itself: with its running statistics reset and ``momentum=None`` (a cumulative
    average), one training-mode forward of ``x`` leaves exactly the batch mean and the unbiased
    batch variance in them. Cheaper than tapping the inputs and reducing them again, and it runs
    at every evaluation. Buffers, momenta and modes are restored afterwards.
    """
    with preserved_norm_state(model):
        batchnorm_train_mode(model)
        norms = _fill_with_population_statistics(model, x)
        return {i: (m.running_mean.clone(), m.running_var.clone()) for i, m in norms}


def _normalize_per_chunk(module: nn.Module, chunk: int, x: torch.Tensor) -> torch.Tensor:
    """Training-mode BN of ``x`` (k * chunk rows) with each run of ``chunk`` rows normalized by its
    own batch statistics, in one call: the k chunks are laid side by side as k * C channels of
    one batch of ``chunk`` rows, so torch's batch_norm kernel computes each chunk's statistics from
    that chunk alone (the same numbers as a pass per chunk, up to rounding)."""
    c, rest = x.shape[1], x.shape[2:]
    k = x.shape[0] // chunk
    side_by_side = x.reshape(k, chunk, c, *rest).transpose(0, 1).reshape(chunk, k * c, *rest)
    weight = None if module.weight is None else module.weight.repeat(k)
    bias = None if module.bias is None else module.bias.repeat(k)
    y = F.batch_norm(side_by_side, None, None, weight, bias, training=True, eps=module.eps)
    return y.reshape(chunk, k, c, *rest).transpose(0, 1).reshape(x.shape)


@contextmanager
def _batchnorm_per_chunk(model: Net, chunk: int) -> Iterator[None]:
    """Inside: the model's BN layers normalize every ``chunk`` consecutive rows by their own
    statistics (and leave their running statistics alone)."""
    norms = [m for _, m in model.batchnorms()]
    for m in norms:
        m.forward = functools.partial(_normalize_per_chunk, m, chunk)  # an instance attribute shadows the method
    try:
        yield
    finally:
        for m in norms:
            del m.forward


def _correct_with_batch_stats(model: Net, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> int:
    """How many of ``x`` are classified correctly when BN normalizes each batch of ``batch_size``
    by its own statistics. The BN layers must be in training mode; running statistics change.

    The batches of full size go through the network together, in one forward pass; only a last
    batch of another size takes a second one. (A pass per batch cost ~0.5 ms each, at every
    evaluation.)"""
    slices = _chunks(len(x), max(batch_size, 2))
    size = slices[0].stop
    full = sum(1 for sl in slices if sl.stop - sl.start == size) * size
    with _batchnorm_per_chunk(model, size):
        correct = (model(x[:full]).argmax(1) == y[:full]).sum().item()
    if full < len(x):
        correct += (model(x[full:]).argmax(1) == y[full:]).sum().item()
    return correct


@torch.no_grad()
def accuracy_with_batch_stats(model: Net, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    """Test accuracy when BN normalizes each test batch by its own statistics (train-mode BN):
    the test set cut into batches of ``batch_size`` in order (see :func:`_chunks`)."""
    if not model.batchnorms():
        model.eval()
        return accuracy(model(x), y)
    with preserved_norm_state(model):
        batchnorm_train_mode(model)
        return _correct_with_batch_stats(model, x, y, batch_size) / len(x)


@torch.no_grad()
def accuracy_with_stats(model: Net, x: torch.Tensor, y: torch.Tensor,
                        stats: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Eval-mode accuracy with each BN layer's running statistics replaced by ``stats``."""
    if not stats:
        model.eval()
        return accuracy(model(x), y)
    with preserved_norm_state(model):
        model.eval()
        for i, m in model.batchnorms():
            m.running_mean.copy_(stats[i][0])
            m.running_var.copy_(stats[i][1])
        return accuracy(model(x), y)


@torch.no_grad()
def evaluate(model: Net, data: Dataset, config: Config, step: int) -> EvalPoint:
    """Test loss and accuracy in eval mode; with ``config.bn_diagnostics`` also the accuracy with
    BN by batch statistics and with BN by the population statistics of the first EVAL_SUBSET
    training samples (also returned). Without it those are NaN and no population is kept.

    What :func:`accuracy_with_batch_stats` and :func:`population_statistics` followed by
    :func:`accuracy_with_stats` compute, with the model's state saved and restored once, not three
    times: this runs at every evaluation of every run."""
    x, y = data.x_test, data.y_test
    was_training = model.training
    model.eval()
    test_logits = model(x)
    test_acc = accuracy(test_logits, y)
    # Without BN nothing depends on batch or running statistics in eval mode: all three agree.
    test_acc_batch_stats = test_acc_population = test_acc if config.bn_diagnostics else math.nan
    population = {}
    norms = [m for _, m in model.batchnorms()]
    if norms and config.bn_diagnostics:
        with preserved_norm_state(model):  # the passes below change the running statistics
            for m in norms:  # BN by batch statistics; dropout stays off
                m.training = True
            test_acc_batch_stats = _correct_with_batch_stats(model, x, y, config.batch_size) / len(x)
            tracked = _fill_with_population_statistics(model, data.x_train[:EVAL_SUBSET])
            if tracked:
                for m in norms:  # eval mode now normalizes by the population statistics
                    m.training = False
                test_acc_population = accuracy(model(x), y)
                population = {i: (m.running_mean.numpy().copy(), m.running_var.numpy().copy()) for i, m in tracked}
    model.train(was_training)
    return EvalPoint(step=step, test_loss=loss_fn(test_logits, y).item(), test_acc=test_acc,
                     test_acc_batch_stats=test_acc_batch_stats, test_acc_population=test_acc_population,
                     population=population)


def record_snapshot(model: Net, step: int, taps: list[dict[str, torch.Tensor]], history: History) -> Snapshot:
    # Two tap points hold the same tensor when nothing runs between them (BN's output is the
    # activation's input; without dropout or pooling the activation's output is the layer's):
    # such a tensor is summarised once. The tensors of one shape (every layer of an MLP) are
    # summarised together, in one go.
    groups: dict[tuple, dict[tuple, tuple[torch.Tensor, np.ndarray]]] = {}
    places: dict[tuple[int, str], tuple[tuple, tuple]] = {}
    for i, block_taps in enumerate(taps):
        for name, tensor in block_taps.items():
            if name == "norm_input":
                continue
            edges = history.edges[name]
            group = (tuple(tensor.shape), tensor.dtype)
            same = (tensor.data_ptr(), tensor.stride(), id(edges))  # a run's edges are fixed arrays
            groups.setdefault(group, {}).setdefault(same, (tensor, edges))
            places[(i, name)] = (group, same)
    summaries = {}
    for group, members in groups.items():
        tensors, edges = zip(*members.values())
        for same, stats in zip(members, tap_stats_many(tensors, list(edges))):
            summaries[(group, same)] = stats
    tap_out = {place: summaries[key] for place, key in places.items()}
    normed = [i for i, block in enumerate(model.blocks) if block.norm is not None]
    stats = norm_stats_many([model.blocks[i].norm for i in normed], [taps[i].get("norm_input") for i in normed])
    return Snapshot(step=step, taps=tap_out, norms=dict(zip(normed, stats)))


def train(config: Config, progress: ProgressFn | None = None, *, dataset: Dataset | None = None,
          record: bool = True) -> Run:
    """Train the network ``config`` describes and record it.

    Raises :class:`~bnviz.config.ConfigError` for a configuration that cannot train (e.g. BN with
    a batch of one). A loss that turns NaN/inf does not raise: training stops and
    ``history.diverged_at`` names the step.

    ``record=False`` trains the same steps on the same batches but takes no snapshots and runs no
    evaluations (so ``progress`` is never called; the history holds only the per-step losses):
    the baseline ``benchmarks/`` measures the recorder's overhead against.
    """
    check(config)
    started = time.perf_counter()
    data = dataset if dataset is not None else load(config)
    init_gen = torch.Generator().manual_seed(config.seed)
    model = build(config, tuple(data.x_train.shape[1:]), data.n_classes, init_gen)
    optimizer = make_optimizer(config, model)
    stream = _endless_batches(data, config.batch_size, torch.Generator().manual_seed(config.seed + 1))
    history = new_history(config, model.layer_names, {tap: bin_edges(tap, config) for tap in TAPS})
    if record:
        history.evals.add(0, evaluate(model, data, config, 0))
        # Called before the first update too: a live chart can show the starting point while the
        # first steps train, instead of appearing only after the first eval_every steps.
        if progress is not None and progress(0, config.steps, history) is False:
            history.stopped_at = 0

    model.train()
    for step in range(config.steps if history.stopped_at is None else 0):
        xb, yb = next(stream)
        recording = record and (history.snapshots.due(step) or step == config.steps - 1)
        if recording:
            model.start_taps()
        logits = model(xb)
        loss = loss_fn(logits, yb)
        loss_value = loss.item()
        if recording:
            history.snapshots.add(step, record_snapshot(model, step, model.collect_taps(), history))
        if not math.isfinite(loss_value):
            history.diverged_at = step
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Only steps the thinned series still wants: adding every step would halve its
        # resolution again at every step once it is full.
        if history.losses.due(step) or step == config.steps - 1:
            history.losses.add(step, (loss_value, accuracy(logits, yb)))
        done = step + 1
        if record and (history.evals.due(done) or done == config.steps):
            history.evals.add(done, evaluate(model, data, config, done))
            if progress is not None and progress(done, config.steps, history) is False:
                if done < config.steps:
                    history.stopped_at = done
                break
    model.eval()
    history.elapsed_s = time.perf_counter() - started
    return Run(config=config, history=history, model=model, dataset=data)
