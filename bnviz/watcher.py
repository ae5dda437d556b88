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

import os
import time
import warnings
from pathlib import Path
from typing import Any

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
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"w.step({name}=...) needs a single number; got a tensor of shape {tuple(value.shape)}")
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
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a whole number of steps >= 1, got {every!r}")
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
        self._inputs: list[torch.Tensor] = []
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
        if inputs and isinstance(inputs[0], torch.Tensor):
            self._inputs = (self._inputs + [inputs[0].detach().clone()])[-PRECISE_BATCHES:]

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
        if snap is not None:
            if not self._writer.has_snapshots and self.recorder.edges is not None:
                self._writer.set_edges(self.recorder.edges)
            self._writer.add_snapshot(snap)
            if self.holdout is not None:
                values.update(self._evaluate_holdout())
        if values:
            self._writer.add_scalars(step, values)
        self.steps_done += 1
        now = time.monotonic()
        if snap is not None or now - self._last_commit >= COMMIT_EVERY_S:
            self._writer.commit()
            self._last_commit = now
        self._arm()

    # ----- held-out evaluation -----------------------------------------------------------------
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
        try:
            model.eval()
            out.update(_scores(model(x), y, "holdout"))
            if norms and self._inputs:
                for m in norms:
                    m.reset_running_stats()
                    m.momentum = None
                    m.train()
                for xb in self._inputs:
                    model(xb)
                model.eval()
                precise = _scores(model(x), y, "holdout_precise")
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

    ``holdout``: an (inputs, targets) batch kept aside; at each recorded step its loss and accuracy
    in eval mode are recorded, with and without BN's running statistics recomputed (precise BN):
    the BN doctor's evidence for an eval-mode collapse.

    In a torch.distributed job each process records its own run, in ``run_dir/rank-<rank>``.
    Raises FileExistsError if ``run_dir`` already holds a run, unless ``overwrite=True``.
    """
    return Watch(model, run_dir, every, holdout=holdout, overwrite=overwrite)


def default_runs_dir() -> Path:
    """Where the app looks for runs: ``$BNVIZ_RUNS_DIR``, else ``./runs``."""
    return Path(os.environ.get("BNVIZ_RUNS_DIR") or "runs")
