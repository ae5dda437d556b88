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
import copy
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import optim
from .config import Config, check
from .data import Dataset, batches, load
from .models import Net, accuracy, build, loss_fn
from .batch_trace import BatchTrace, load_running
from .record import TAPS, EvalPoint, History, Snapshot, Thinned, bin_edges, new_history
from .recorder import Recorder

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
    # For :func:`with_momentum`: every step's BN batch statistics, and the weights at each
    # evaluation the history keeps (eval mode is the one thing momentum changes).
    trace: BatchTrace | None = None
    eval_weights: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


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


class Callback:
    """What the loop tells the code around it; override the moments you need.

    ``before_step`` sees the model with the weights after ``step`` updates and that step's batch,
    before the forward pass (the landscape probes, a recorder arming its hooks). ``after_forward``
    sees the step's logits and loss before the backward pass. ``after_step`` runs after the update;
    returning False stops training. Callbacks must not change the model or draw from a generator
    the training uses, or the run is no longer the run its config names.
    """

    def before_step(self, step: int, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        pass

    def after_forward(self, step: int, logits: torch.Tensor, loss: float, y: torch.Tensor) -> None:
        pass

    def after_step(self, step: int, model: nn.Module, loss: float) -> "bool | None":
        return None


@dataclass(frozen=True)
class LoopEnd:
    """How :func:`run_loop` ended: updates done, and the step whose loss was not finite or the
    number of updates after which a callback stopped it."""

    done: int
    diverged_at: int | None = None
    stopped_at: int | None = None


def micro_batch_slices(n: int, micro_batches: int) -> list[slice]:
    """``micro_batches`` consecutive slices of ``range(n)``, as equal as possible."""
    if not 1 <= micro_batches <= n:
        raise ValueError(f"cannot cut a batch of {n} into {micro_batches} micro-batches")
    bounds = [round(i * n / micro_batches) for i in range(micro_batches + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _accumulate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, micro_batches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and backward of each micro-batch, gradients summed: the batch's logits and its mean
    loss (a value, without graph)."""
    logits, total = [], 0.0
    for part in micro_batch_slices(len(x), micro_batches):
        out = model(x[part])
        loss = loss_fn(out, y[part]) * ((part.stop - part.start) / len(x))
        loss.backward()
        logits.append(out.detach())
        total += loss.item()
    return torch.cat(logits), torch.tensor(total)


def run_loop(model: nn.Module, optimizer: optim.Sgd | optim.Adam, stream: Iterator[tuple[torch.Tensor, torch.Tensor]],
             steps: int, callbacks: Sequence[Callback] = (), micro_batches: int = 1) -> LoopEnd:
    """The training loop every bnviz run goes through: ``steps`` times forward, cross-entropy,
    backward, update, with ``callbacks`` told at each moment (see :class:`Callback`).

    A NaN/inf loss stops training before its update (``diverged_at``). The model is put in
    training mode first; a callback's ``before_step`` may set modes per step (fine-tuning with
    frozen BN keeps BN in eval mode).

    ``micro_batches`` k > 1: gradient accumulation. Each batch is cut into k consecutive
    micro-batches (:func:`micro_batch_slices`), each gets its own forward and backward pass with
    its loss weighted by its share of the batch, and one update follows: the gradient of the
    batch's mean loss, except that BN sees (normalizes by, and updates its running statistics
    with) one micro-batch at a time. Callbacks see the whole batch, its logits and mean loss.
    """
    model.train()
    for step in range(steps):
        xb, yb = next(stream)
        for cb in callbacks:
            cb.before_step(step, model, xb, yb)
        if micro_batches == 1:
            logits = model(xb)
            loss = loss_fn(logits, yb)
        else:
            optimizer.zero_grad(set_to_none=True)
            logits, loss = _accumulate(model, xb, yb, micro_batches)
        value = loss.item()
        for cb in callbacks:
            cb.after_forward(step, logits, value, yb)
        if not math.isfinite(value):
            return LoopEnd(done=step, diverged_at=step)
        if micro_batches == 1:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()
        stop = False
        for cb in callbacks:
            stop = cb.after_step(step, model, value) is False or stop
        if stop:
            return LoopEnd(done=step + 1, stopped_at=step + 1 if step + 1 < steps else None)
    return LoopEnd(done=steps)


def _next_due(series: Thinned, step: int, last: int) -> int:
    """The first step from ``step`` on that ``series`` wants as it stands, or ``last``. Its stride
    only ever doubles, so no step before this one can become due later: there is no need to ask
    again before it."""
    due = step + (-step % series.stride)
    return min(due, last) if step <= last else due


class _Recording(Callback):
    """What :func:`train` keeps: snapshots by the recorder at the history's cadence, the loss
    curve, evaluations with the progress callback, and with a BN trace every step's batch
    statistics (the snapshots' batch and running statistics then come from it)."""

    def __init__(self, config: Config, recorder: Recorder | None, history: History, data: Dataset,
                 model: Net, progress: ProgressFn | None, trace: BatchTrace | None = None):
        self.config, self.recorder, self.history, self.data = config, recorder, history, data
        self.model, self.progress, self.trace = model, progress, trace
        self.replay = trace.replay(config.momentum) if trace is not None else None
        self.eval_weights: dict[int, dict[str, torch.Tensor]] = {}
        self.last = config.steps - 1
        # The next step to record, the next evaluation (updates done) and the step armed, as
        # numbers: the loop asks at every step, and asking the series costs a step ~1 us each.
        recording = recorder is not None
        self.next_snapshot = _next_due(history.snapshots, 0, self.last) if recording else -1
        self.next_eval = _next_due(history.evals, 1, config.steps) if recording else -1
        self.armed_at = -1

    def before_step(self, step, model, x, y):
        if step == self.next_snapshot:
            if self.history.snapshots.due(step) or step == self.last:
                self.recorder.arm()
                self.armed_at = step
            self.next_snapshot = _next_due(self.history.snapshots, step + 1, self.last)

    def after_forward(self, step, logits, loss, y):
        if self.trace is not None:
            self.trace.capture(step)
        # The pass is kept and summarised with others at the next evaluation (before the
        # progress callback reads the history) or when the recorder holds enough: one numpy
        # pass over many snapshots costs a fraction of one per snapshot.
        if step == self.armed_at and self.recorder.capture(step) and self.recorder.full:
            self.flush()
        # Only steps the thinned series still wants: adding every step would halve its
        # resolution again at every step once it is full.
        if math.isfinite(loss) and (self.history.losses.due(step) or step == self.last):
            self.history.losses.add(step, (loss, accuracy(logits, y)))

    def after_step(self, step, model, loss):
        done = step + 1
        if done != self.next_eval:
            return None
        stop = False
        if self.history.evals.due(done) or done == self.config.steps:
            self.evaluate(done)
            stop = self.progress is not None and self.progress(done, self.config.steps, self.history) is False
        self.next_eval = _next_due(self.history.evals, done + 1, self.config.steps)
        return False if stop else None

    def flush(self) -> None:
        """Summarise the captured passes into the history's snapshots."""
        if self.recorder is None:
            return
        for snap in self.recorder.flush():
            # Due as the history stands now: had each pass been added when it was captured, the
            # series would have thinned in between and left out the same steps.
            if self.history.snapshots.due(snap.step) or snap.step == self.last:
                if self.trace is not None:
                    snap = _traced_norm_stats(snap, self.trace, self.replay.at(snap.step))
                self.history.snapshots.add(snap.step, snap)

    def evaluate(self, done: int) -> None:
        """Evaluate after ``done`` updates (BN by the running statistics of the config's momentum)."""
        self.flush()
        running = self.replay.at(done - 1) if self.replay is not None else None
        with self.trace.running_buffers(running) if running is not None else nullcontext():
            self.history.evals.add(done, evaluate(self.model, self.data, self.config, done))
        if self.trace is not None:
            self.eval_weights[done] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            kept = set(self.history.evals.steps)
            self.eval_weights = {s: w for s, w in self.eval_weights.items() if s in kept}

    def finish(self) -> None:
        self.flush()
        if self.recorder is not None:
            self.recorder.close()
        if self.trace is not None:
            self.trace.finish(self.replay.at(self.trace.done - 1) if self.trace.done else None)


def _traced_norm_stats(snap: Snapshot, trace: BatchTrace, running: dict[int, tuple[np.ndarray, np.ndarray]]) -> Snapshot:
    """``snap`` with each traced layer's batch statistics (the biased variance BN normalizes
    with, from the trace's unbiased one) and running statistics (of the config's momentum)."""
    batch = trace.batch_stats(snap.step)
    norms = dict(snap.norms)
    for i, stats in snap.norms.items():
        if i in batch:
            mean, unbiased = batch[i]
            n = stats.count
            var = (unbiased.astype(np.float64) * ((n - 1) / n)).astype(np.float32) if n > 1 else np.zeros_like(unbiased)
            norms[i] = replace(stats, batch_mean=mean, batch_var=var, running_mean=running[i][0], running_var=running[i][1])
    return Snapshot(step=snap.step, taps=snap.taps, norms=norms)


def build_for(config: Config, data: Dataset, model: nn.Module | None = None
              ) -> tuple[Net, optim.Sgd | optim.Adam, Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """The model, optimizer and batch stream ``config`` names: initial weights from a generator
    seeded by ``config.seed``, batches from one seeded by ``config.seed + 1``. ``model``: train
    this network instead of the one ``config`` describes (a ResNet, a transformer), with the same
    optimizer and batches."""
    if model is None:
        model = build(config, tuple(data.x_train.shape[1:]), data.n_classes, torch.Generator().manual_seed(config.seed))
    optimizer = make_optimizer(config, model)
    stream = _endless_batches(data, config.batch_size, torch.Generator().manual_seed(config.seed + 1))
    return model, optimizer, stream


def train(config: Config, progress: ProgressFn | None = None, *, dataset: Dataset | None = None,
          record: bool = True, trace: bool = False) -> Run:
    """Train the network ``config`` describes and record it.

    Raises :class:`~bnviz.config.ConfigError` for a configuration that cannot train (e.g. BN with
    a batch of one). A loss that turns NaN/inf does not raise: training stops and
    ``history.diverged_at`` names the step.

    ``record=False`` trains the same steps on the same batches but takes no snapshots and runs no
    evaluations (so ``progress`` is never called; the history holds only the losses): the
    baseline ``benchmarks/`` measures the recorder's overhead against.

    ``trace=True`` also keeps every step's BN batch statistics (:mod:`bnviz.batch_trace`), from
    which :func:`with_momentum` derives the run any other momentum gives without training: what
    a page's momentum control needs, and nothing else. It costs ~1 % of a default run's time and
    2 x C float32 numbers per BN layer and step (0.6 M for the default run).
    """
    check(config)
    started = time.perf_counter()
    data = dataset if dataset is not None else load(config)
    model, optimizer, stream = build_for(config, data)
    history = new_history(config, model.layer_names, {tap: bin_edges(tap, config) for tap in TAPS})
    batch_trace = BatchTrace.start(model.batchnorms(), config.steps) if record and trace else None
    recorder = Recorder(model, model.recorded_layers(), history.edges, batch_stats=batch_trace is None) if record else None
    recording = _Recording(config, recorder, history, data, model, progress, batch_trace)
    steps = config.steps
    if record:
        recording.evaluate(0)
        # Called before the first update too: a live chart can show the starting point while the
        # first steps train, instead of appearing only after the first eval_every steps.
        if progress is not None and progress(0, config.steps, history) is False:
            history.stopped_at = steps = 0
    end = run_loop(model, optimizer, stream, steps, [recording])
    recording.finish()
    history.diverged_at = end.diverged_at
    if end.stopped_at is not None:
        history.stopped_at = end.stopped_at
    model.eval()
    history.elapsed_s = time.perf_counter() - started
    return Run(config=config, history=history, model=model, dataset=data,
               trace=batch_trace if batch_trace is not None and batch_trace.done else None,
               eval_weights=recording.eval_weights)


def momentum_free(config: Config) -> Config:
    """What training depends on: ``config`` but its BN momentum (a fixed stand-in). Momentum never
    enters a training-mode forward pass, so two configs equal here train identically."""
    return config.replace(momentum=0.1)


def with_momentum(run: Run, momentum: float | None) -> Run | None:
    """The run ``run.config`` with BN momentum ``momentum`` makes, derived from ``run``'s batch
    trace without training: the same weights, losses and training-mode activations (momentum
    never enters a training-mode forward pass), the running statistics of every snapshot and of
    the final model replayed for ``momentum``, and every evaluation redone with them.

    A network without BatchNorm keeps no running statistics: its run is the same under any
    momentum. None when ``run`` cannot be derived from (its BN recorded without a trace: a trace
    too large, or a run that was not recorded).
    """
    trace, model, data = run.trace, run.model, run.dataset
    config = run.config.replace(momentum=momentum)
    old = run.history
    if isinstance(model, Net) and not model.batchnorms():
        return replace(run, config=config, history=replace(old, config=config))
    if trace is None or model is None or data is None:
        return None
    # One pass of the replay over every step asked for (it only moves forward): the snapshots',
    # those before each evaluation, and the last.
    replay = trace.replay(momentum)
    at = {step: replay.at(step)
          for step in sorted({*old.snapshots.steps, *(s - 1 for s in old.evals.steps), trace.done - 1})}
    snapshots = Thinned(cap=old.snapshots.cap, stride=old.snapshots.stride)
    for step, snap in zip(old.snapshots.steps, old.snapshots.items):
        running = at[step]
        norms = {i: replace(ns, running_mean=running[i][0], running_var=running[i][1]) if i in running else ns
                 for i, ns in snap.norms.items()}
        snapshots.steps.append(step)
        snapshots.items.append(Snapshot(step=step, taps=snap.taps, norms=norms))
    derived = copy.deepcopy(model)
    norms = dict(derived.batchnorms())
    evals = Thinned(cap=old.evals.cap, stride=old.evals.stride)
    with torch.no_grad():
        for step in old.evals.steps:
            if step not in run.eval_weights:
                return None
            derived.load_state_dict(run.eval_weights[step])
            load_running(norms, at[step - 1])
            evals.steps.append(step)
            evals.items.append(evaluate(derived, data, config, step))
        derived.load_state_dict(model.state_dict())
        load_running(norms, at[trace.done - 1])
    for m in norms.values():
        m.momentum = momentum
    derived.eval()
    history = History(config=config, layer_names=old.layer_names, edges=old.edges, snapshots=snapshots,
                      losses=old.losses, evals=evals, diverged_at=old.diverged_at, stopped_at=old.stopped_at,
                      elapsed_s=old.elapsed_s)
    return Run(config=config, history=history, model=derived, dataset=data, trace=trace, eval_weights=run.eval_weights)


# ----------------------------------------------------------------------------------------------
# Per-step curves for the experiments that look at the model between updates


# Called before the update of step ``step`` with the model (weights after ``step`` updates, train
# mode) and that step's batch. It must not change the model: work on a copy.
StepFn = Callable[[int, Net, torch.Tensor, torch.Tensor], None]
# (updates done, total steps); called every ``config.eval_every`` updates and at the end.
LoopProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class Curves:
    """What one run of :func:`train_steps` records: every step's loss, not thinned."""

    loss: np.ndarray          # training cross-entropy of step i's batch (train mode), one per update
    batch_acc: np.ndarray     # accuracy on that batch
    eval_steps: np.ndarray    # updates done at each evaluation (0 first)
    test_acc: np.ndarray      # eval-mode accuracy on the test split (BN with running statistics)
    test_loss: np.ndarray     # eval-mode cross-entropy on the test split
    diverged_at: int | None   # step whose loss was NaN/inf (training stopped there)

    @property
    def initial_loss(self) -> float:
        return float(self.loss[0]) if len(self.loss) else math.nan

    def final_loss(self, fraction: float = 0.1) -> float:
        """Mean training loss over the last ``fraction`` of the steps (NaN if the run diverged)."""
        if self.diverged_at is not None or not len(self.loss):
            return math.nan
        tail = max(1, int(round(len(self.loss) * fraction)))
        return float(np.mean(self.loss[-tail:]))


@torch.no_grad()
def _test(model: nn.Module, data: Dataset) -> tuple[float, float]:
    model.eval()
    logits = model(data.x_test)
    model.train()
    return accuracy(logits, data.y_test), loss_fn(logits, data.y_test).item()


class _CurveRecording(Callback):
    def __init__(self, config: Config, data: Dataset, on_step: StepFn | None, progress: LoopProgress | None):
        self.config, self.data, self.on_step, self.progress = config, data, on_step, progress
        self.losses: list[float] = []
        self.batch_acc: list[float] = []
        acc0 = loss0 = math.nan
        self.evals = [[0], [acc0], [loss0]]

    def before_step(self, step, model, x, y):
        if self.on_step is not None:
            self.on_step(step, model, x, y)

    def after_forward(self, step, logits, loss, y):
        if math.isfinite(loss):
            self.losses.append(loss)
            self.batch_acc.append(accuracy(logits, y))

    def after_step(self, step, model, loss):
        done = step + 1
        if done % self.config.eval_every == 0 or done == self.config.steps:
            acc, tl = _test(model, self.data)
            for series, value in zip(self.evals, (done, acc, tl)):
                series.append(value)
            if self.progress is not None:
                self.progress(done, self.config.steps)


class _Schedule(Callback):
    """Sets the optimizer's learning rate before each step: ``lr(step)``."""

    def __init__(self, optimizer: optim.Sgd | optim.Adam, lr: Callable[[int], float]):
        self.optimizer, self.lr = optimizer, lr

    def before_step(self, step, model, x, y):
        self.optimizer.lr = float(self.lr(step))


def train_steps(config: Config, *, prepare: Callable[[Net], None] | None = None, on_step: StepFn | None = None,
                progress: LoopProgress | None = None, dataset: Dataset | None = None,
                model: nn.Module | None = None, callbacks: Sequence[Callback] = (),
                lr_schedule: Callable[[int], float] | None = None) -> tuple[Curves, Net]:
    """Train as :func:`train` does (same model, batches and updates: the same run), calling
    ``prepare(model)`` once before the first step and ``on_step(step, model, x, y)`` before every
    update, keeping every step's loss. Returns the curves and the final model (eval mode).

    For the experiments that look at the weights between updates (the loss-landscape probes) or
    change the model before training (noisy BN). A NaN/inf loss stops training
    (``Curves.diverged_at``). ``model``: train this network instead of the one ``config``
    describes (see :func:`build_for`); ``callbacks`` are told after the curves' own.
    ``lr_schedule(step)``: the learning rate of step ``step`` (a warm-up); ``config.lr`` otherwise.
    """
    check(config)
    data = dataset if dataset is not None else load(config)
    model, optimizer, stream = build_for(config, data, model)
    if prepare is not None:
        prepare(model)
    curves = _CurveRecording(config, data, on_step, progress)
    curves.evals[1][0], curves.evals[2][0] = _test(model, data)
    schedule = [] if lr_schedule is None else [_Schedule(optimizer, lr_schedule)]
    end = run_loop(model, optimizer, stream, config.steps, [*schedule, curves, *callbacks])
    model.eval()
    steps, acc, loss = (np.asarray(s) for s in curves.evals)
    return Curves(loss=np.asarray(curves.losses), batch_acc=np.asarray(curves.batch_acc), eval_steps=steps,
                  test_acc=acc, test_loss=loss, diverged_at=end.diverged_at), model
