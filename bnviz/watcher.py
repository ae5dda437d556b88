"""``bnviz.watch``: record the normalization layers of your own model, in your own training loop.

One call, as with ``wandb.watch``, and one line per optimizer step::

    with bnviz.watch(model, "runs/my-resnet", every=20) as w:
        for x, y in loader:
            loss = loss_fn(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
            w.step(loss=loss.item())

What it records, where and when: the :class:`~bnviz.recorder.Recorder` finds the model's
normalization layers by type; step ``s`` is the training forward pass made with the weights after
``s`` optimizer steps, and steps 0, ``every``, 2 * ``every``, ... are recorded (the cadence doubles
as a long run is thinned, so the record stays bounded). Everything goes to a SQLite file in
``run_dir`` (:mod:`bnviz.store`), committed as training goes, so ``bnviz app`` follows the run
live and a killed process leaves every committed step readable.

What it will not do: change training. Hooks exist only during recorded forward passes and only
read; the optional held-out evaluation restores every buffer, mode and random state it touches.
Losses are the same bit for bit with and without watching (tests/test_watch.py).
"""
from __future__ import annotations

import numbers
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .recorder import ACTIVATION_TYPES, LayerSpec, Recorder, eager, norm_family, unwrap
from .store import RUN_FILE, RunWriter

COMMIT_EVERY_S = 0.5   # the longest a step waits to be committed: a live view sees it within ~1 s
PRECISE_BATCHES = 8    # recent training inputs kept for the held-out precise-BN evaluation


def _distributed() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a torch.distributed job."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _activation_layers(model: nn.Module) -> list[LayerSpec]:
    """A model without normalization layers is recorded at its activation modules, so that a
    "without BN" model can be compared with its "with BN" twin."""
    return [LayerSpec(name=name, act=m) for name, m in unwrap(model).named_modules() if isinstance(m, ACTIVATION_TYPES)]


def _scalar(name: str, value: Any) -> float:
    # A numpy array of one value is taken like a tensor of one value (float() refuses an array
    # of shape (1,) in numpy 2: np.array([loss]) was an error where torch.tensor([loss]) was not).
    if isinstance(value, (torch.Tensor, np.ndarray)):
        count = value.size if isinstance(value, np.ndarray) else value.numel()
        if count != 1:
            kind = "an array" if isinstance(value, np.ndarray) else "a tensor"
            raise TypeError(f"w.step({name}=...) needs a single number; got {kind} of shape {tuple(value.shape)}")
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"w.step({name}=...) needs a number, got {type(value).__name__}") from None


class Watch:
    """A running recording; made by :func:`watch`. Call :meth:`step` after every optimizer step
    and :meth:`close` at the end (or use it as a context manager)."""

    def __init__(self, model: nn.Module, run_dir: str | os.PathLike, every: int = 20, *,
                 holdout: tuple[torch.Tensor, torch.Tensor] | None = None, overwrite: bool = False):
        # Any whole number (a numpy integer from a config or an array too), not int alone.
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"every must be a whole number of steps >= 1, got {every!r}")
        every = int(every)
        if not isinstance(model, nn.Module):
            raise TypeError(f"bnviz.watch needs a torch.nn.Module, got {type(model).__name__}")
        if holdout is not None and (not isinstance(holdout, (tuple, list)) or len(holdout) != 2):
            raise TypeError("holdout must be a pair (inputs, targets) of tensors")
        self.rank, self.world_size = _distributed()
        base = Path(run_dir)
        self.run_dir = base / f"rank-{self.rank}" if self.world_size > 1 else base
        if (self.run_dir / RUN_FILE).exists() and not overwrite:
            raise FileExistsError(f"{self.run_dir / RUN_FILE} already holds a run: choose another run_dir, "
                                  "or pass overwrite=True to replace it")
        self.model = model
        self.every = every
        self.holdout = holdout
        self.overwrite = overwrite
        self.recorder = Recorder(model)
        if not self.recorder.layers:
            self.recorder = Recorder(model, _activation_layers(model))
        if not self.recorder.layers:
            warnings.warn(f"bnviz.watch: {type(unwrap(model)).__name__} has no normalization or activation "
                          "modules; only the scalars passed to step() are recorded", stacklevel=3)
        self.steps_done = 0
        self._writer: RunWriter | None = None
        self._last_commit = time.monotonic()
        self._inputs: list[tuple] = []
        # The layers' descriptions were read before any recorded forward (w.step before the first
        # forward, or close without one): a lazy module had no channels nor gamma/beta yet.
        self._infos_provisional = False
        self._input_hook = None
        self._closed = False
        self._arm()

    # ----- the training loop's side -------------------------------------------------------------
    def _arm(self) -> None:
        # The store's thinned cadence decides (before the writer exists, at step 0, every step is due).
        if self._writer is not None and not self._writer.snapshot_due(self.steps_done):
            return
        self.recorder.arm()
        if self.holdout is not None and self._input_hook is None:
            self._input_hook = unwrap(self.model).register_forward_pre_hook(eager(self._keep_input, self.recorder.compiled))

    def _keep_input(self, module: nn.Module, inputs: tuple) -> None:
        """Keep the training input of a recorded step for the precise-BN evaluation."""
        if not module.training:  # a validation pass; the step's training forward is still to come
            return
        if self._input_hook is not None:
            self._input_hook.remove()
            self._input_hook = None
        # Every positional argument: a model of several inputs (a siamese net's forward(a, b))
        # is called with all of them again; with the first alone the precise-BN pass failed.
        if any(isinstance(a, torch.Tensor) for a in inputs):
            kept = tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in inputs)
            self._inputs = (self._inputs + [kept])[-PRECISE_BATCHES:]

    def _open_writer(self) -> RunWriter:
        info = unwrap(self.model)
        meta = {"every": self.every, "rank": self.rank, "world_size": self.world_size,
                "model": type(info).__name__, "torch": torch.__version__, "holdout": self.holdout is not None}
        return RunWriter(self.run_dir, layers=self.recorder.layer_infos(), meta=meta, overwrite=self.overwrite,
                         every=self.every)

    def step(self, **scalars: Any) -> None:
        """Call once per optimizer step, after it, with any named numbers of that step (``loss=``).

        Records the forward pass of the step that just ended if it was due, stores the scalars
        under its step number and arms the hooks for the next due step.
        """
        if self._closed:
            raise RuntimeError("this watch is closed; start a new bnviz.watch to record more")
        values = {name: _scalar(name, v) for name, v in scalars.items()}
        step = self.steps_done
        snap = self.recorder.collect(step) if self.recorder.armed else None
        if self._input_hook is not None:  # the step's forward pass never came
            self._input_hook.remove()
            self._input_hook = None
        if self._writer is None:
            self._writer = self._open_writer()
            self._infos_provisional = snap is None
        if snap is not None:
            if self._infos_provisional:
                # A lazy module (LazyBatchNorm2d) learns its channels and gets gamma and beta at
                # its first forward; read before it, the run said "0 channels, no affine" for good
                # and the doctor skipped its parameters.
                self._writer.update_layers(self.recorder.layer_infos())
                self._infos_provisional = False
            if not self._writer.has_snapshots and self.recorder.edges is not None:
                self._writer.set_edges(self.recorder.edges)
            self._writer.add_snapshot(snap)
            if self.holdout is not None:
                values.update(self._holdout_scores())
        if values:
            self._writer.add_scalars(step, values)
        self.steps_done += 1
        now = time.monotonic()
        if snap is not None or now - self._last_commit >= COMMIT_EVERY_S:
            self._writer.commit()
            self._last_commit = now
        self._arm()

    # ----- held-out evaluation -----------------------------------------------------------------
    def _holdout_scores(self) -> dict[str, float]:
        """:meth:`_evaluate_holdout`, or nothing once it has failed. It calls the user's model in
        ways the training loop does not (eval mode, the held-out batch, the kept inputs): a model
        that cannot take them must not stop the training it watches. Warned once, then off."""
        try:
            return self._evaluate_holdout()
        except Exception as exc:  # noqa: BLE001 - whatever the user's model raises; state is restored
            warnings.warn(f"bnviz.watch: the held-out evaluation failed ({type(exc).__name__}: {exc}); "
                          "it is off for the rest of this run (pass holdout=(inputs, targets), inputs a "
                          "tuple for a model of several inputs)", RuntimeWarning, stacklevel=3)
            self.holdout = None
            self._inputs = []
            return {}

    @torch.no_grad()
    def _evaluate_holdout(self) -> dict[str, float]:
        """Held-out loss and accuracy in eval mode (BN with its running statistics), and the
        accuracy once BN's running statistics are recomputed at the current weights from the
        recent training inputs (precise BN): far apart, the running statistics are the problem.

        Everything touched is put back: modes, BN buffers and momenta, torch's random state.
        """
        model = unwrap(self.model)
        x, y = self.holdout
        norms = [s.norm for s in self.recorder.layers
                 if s.norm is not None and norm_family(s.norm) == "batch" and getattr(s.norm, "running_mean", None) is not None]
        modes = [(m, m.training) for m in model.modules()]
        saved = [(m, m.momentum, [(b, b.clone()) for b in m.buffers()]) for m in norms]
        rng = torch.get_rng_state()
        out: dict[str, float] = {}
        args = tuple(x) if isinstance(x, (tuple, list)) else (x,)   # the inputs of a model of several
        try:
            model.eval()
            out.update(_scores(model(*args), y, "holdout"))
            if norms and self._inputs:
                for m in norms:
                    m.reset_running_stats()
                    m.momentum = None
                    m.train()
                for xb in self._inputs:
                    model(*xb)
                model.eval()
                precise = _scores(model(*args), y, "holdout_precise")
                out.update(precise)
        finally:
            for m, momentum, buffers in saved:
                m.momentum = momentum
                for b, copy in buffers:
                    b.copy_(copy)
            for m, mode in modes:
                m.training = mode
            torch.set_rng_state(rng)
        return out

    # ----- the end ---------------------------------------------------------------------------------
    def close(self, status: str = "finished") -> None:
        """Stop recording, commit, and mark the run finished (or "failed")."""
        if self._closed:
            return
        self._closed = True
        self.recorder.close()
        if self._input_hook is not None:
            self._input_hook.remove()
            self._input_hook = None
        if self._writer is None:
            self._writer = self._open_writer()
        self._writer.close(status)

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("failed" if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt) else "finished")

    def __repr__(self) -> str:
        return f"<bnviz.Watch {self.run_dir} step {self.steps_done}, {len(self.recorder.layers)} layers>"


def _scores(out: Any, y: torch.Tensor, prefix: str) -> dict[str, float]:
    """Loss and accuracy for a classifier (logits (N, K), integer targets (N,)); mean squared
    error for a regression output of the targets' shape; nothing for anything else."""
    if not isinstance(out, torch.Tensor) or not isinstance(y, torch.Tensor):
        return {}
    if out.dim() == 2 and y.dim() == 1 and not y.is_floating_point() and len(y) == len(out):
        loss = F.cross_entropy(out.float(), y).item()
        return {f"{prefix}_loss": loss, f"{prefix}_acc": (out.argmax(1) == y).float().mean().item()}
    if out.shape == y.shape:
        return {f"{prefix}_mse": F.mse_loss(out.float(), y.float()).item()}
    return {}


def watch(model: nn.Module, run_dir: str | os.PathLike, every: int = 20, *,
          holdout: tuple[torch.Tensor, torch.Tensor] | None = None, overwrite: bool = False) -> Watch:
    """Record ``model``'s normalization layers into ``run_dir`` while you train it.

    ``every``: record the training forward pass of steps 0, every, 2*every, ... (per-channel batch
    mean and biased variance of each norm layer's input, running mean and variance, gamma and beta,
    histograms and percentiles of its output and of the activation after it). Scalars passed to
    :meth:`Watch.step` are kept for every step.

    Which forward, and which call, when there are several (a design choice, tested in
    tests/test_watch_foreign.py): step ``s`` is the *first* training-mode forward of the watched
    model after ``s`` optimizer steps, and each layer is recorded at its *first call* in it.
    With gradient accumulation (k forwards per optimizer step) or a GAN's discriminator (called
    on the real batch, then on the fake one) that is the first micro-batch / the first call; a
    layer used twice in one forward (shared weights, a siamese net's ``f(a)``, ``f(b)``) is
    recorded at its first use: the batch statistics it normalized that input with, and its
    running buffers right after that call (so ``running = (1 - momentum) * before + momentum *
    unbiased batch var`` holds for the recorded pair; the second use's update comes after).
    Forwards in eval mode (validation, under ``torch.no_grad`` or not) are never recorded; a
    ``step()`` with no training forward since the previous one records only its scalars.

    Scalars: numbers, or tensors / numpy arrays of one value; NaN and inf are kept as such.
    Any name a keyword can carry, ``w.step(**{"val loss": v})`` included.

    ``holdout``: an (inputs, targets) batch kept aside; at each recorded step its loss and accuracy
    in eval mode are recorded, with and without BN's running statistics recomputed (precise BN):
    the BN doctor's evidence for an eval-mode collapse. For a model of several inputs pass
    ``inputs`` as a tuple (``model(*inputs)``). If the model cannot be evaluated that way, a
    RuntimeWarning says why and the held-out evaluation is off for the run: training goes on.

    In a torch.distributed job each process records its own run, in ``run_dir/rank-<rank>``.
    Raises FileExistsError if ``run_dir`` already holds a run, unless ``overwrite=True``.
    """
    return Watch(model, run_dir, every, holdout=holdout, overwrite=overwrite)


def default_runs_dir() -> Path:
    """Where the app looks for runs: ``$BNVIZ_RUNS_DIR``, else ``./runs``."""
    return Path(os.environ.get("BNVIZ_RUNS_DIR") or "runs")
