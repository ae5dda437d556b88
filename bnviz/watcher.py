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
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .record import Snapshot
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
    except OverflowError:   # an int beyond float's range (10**400): float() named neither the scalar nor why
        raise ValueError(f"w.step({name}=...) is a whole number too large for a float "
                         f"({len(str(abs(value)))} digits)") from None


def _run_dir(run_dir: Any) -> Path:
    """``run_dir`` as a Path, refused with a clear error before anything is written: not a path
    (None, a number: pathlib's TypeError named neither), or empty ("" is the current folder,
    most likely an unset setting)."""
    if isinstance(run_dir, bytes):
        run_dir = os.fsdecode(run_dir)
    if not isinstance(run_dir, (str, os.PathLike)):
        raise TypeError(f"run_dir must be a folder path (str or pathlib.Path), got {type(run_dir).__name__}")
    if not os.fspath(run_dir).strip():
        raise ValueError("run_dir is empty: give the folder to record the run in")
    return Path(run_dir)


def _make_folder(folder: Path) -> None:
    """Create the run's folder now, not at the first ``w.step`` (where a file in its place, or a
    folder that cannot be written, stopped training with a bare "[Errno 17] File exists" from
    pathlib); the error names the path and what is wrong with it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FileExistsError(f"run_dir {folder} is a file, not a folder: choose another run_dir") from None
    except NotADirectoryError:
        blocking = next((p for p in folder.parents if p.exists()), None)
        raise NotADirectoryError(f"run_dir {folder} cannot be made: {blocking} is a file, not a folder") from None
    except OSError as err:
        raise type(err)(err.errno, f"run_dir {folder} cannot be made ({err.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"run_dir {folder} is not writable: choose a folder you can write to")


_NORM_NAME = ("BatchNorm", "InstanceNorm", "LayerNorm", "GroupNorm", "RMSNorm")


def _scripted(model: nn.Module) -> tuple[list[str], list[str]]:
    """The outermost TorchScript modules of ``model`` (torch.jit.script / torch.jit.trace) by name,
    and the normalization layers inside them, "name (BatchNorm2d)": a scripted module runs its
    compiled graph, which calls no Python hook of the modules inside it."""
    outer: list[str] = []
    norms: list[str] = []
    for name, m in unwrap(model).named_modules():
        if not isinstance(m, torch.jit.ScriptModule):
            continue
        if not any(name == o or name.startswith(f"{o}.") or not o for o in outer):
            outer.append(name)
        kind = getattr(m, "original_name", type(m).__name__)
        if any(n in kind for n in _NORM_NAME):
            norms.append(f"{name or type(m).__name__} ({kind})")
    return outer, norms


_OPEN: "weakref.WeakSet[Watch]" = weakref.WeakSet()   # the watches of this process not yet closed


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
        # overwrite="no" is true: it replaced the run it was meant to keep.
        if not isinstance(overwrite, (bool, np.bool_)):
            raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
        overwrite = bool(overwrite)
        self.rank, self.world_size = _distributed()
        base = _run_dir(run_dir)
        self.run_dir = base / f"rank-{self.rank}" if self.world_size > 1 else base
        if (self.run_dir / RUN_FILE).exists() and not overwrite:
            raise FileExistsError(f"{self.run_dir / RUN_FILE} already holds a run: choose another run_dir, "
                                  "or pass overwrite=True to replace it")
        _make_folder(self.run_dir)
        self.model = model
        self.every = every
        self.holdout = holdout
        self.overwrite = overwrite
        self.recorder = Recorder(model)
        scripted, hidden = _scripted(model)
        if not self.recorder.layers:
            self.recorder = Recorder(model, _activation_layers(model))
        if "" in scripted:
            root = unwrap(model)
            warnings.warn(f"bnviz.watch: {getattr(root, 'original_name', type(root).__name__)} is a TorchScript module "
                          "(torch.jit.script or torch.jit.trace): its compiled graph calls no Python hooks, so none "
                          "of its layers can be recorded; only the scalars passed to step() are. Watch and train "
                          "the eager module to record it.", stacklevel=3)
        elif scripted:
            warnings.warn(f"bnviz.watch: {', '.join(scripted)} of {type(unwrap(model)).__name__} "
                          f"{'is a TorchScript module' if len(scripted) == 1 else 'are TorchScript modules'} "
                          "(torch.jit.script or torch.jit.trace), whose compiled graph calls no Python hooks: "
                          + (f"the normalization layers inside ({', '.join(hidden)}) are not recorded"
                             if hidden else "the layers inside are not recorded")
                          + "; the rest of the model is.", stacklevel=3)
        elif not self.recorder.layers:
            warnings.warn(f"bnviz.watch: {type(unwrap(model)).__name__} has no normalization or activation "
                          "modules; only the scalars passed to step() are recorded", stacklevel=3)
        self._warn_shared()
        self._scripted_root = "" in scripted
        self.steps_done = 0
        self._writer: RunWriter | None = None
        self._last_commit = time.monotonic()
        self._inputs: list[tuple] = []
        # The layers' descriptions were read before any recorded forward (w.step before the first
        # forward, or close without one): a lazy module had no channels nor gamma/beta yet.
        self._infos_provisional = False
        # The root module's pre-hook of an armed step: it tells a step without a forward from one
        # whose forward was in eval mode, or reached none of the recorded layers (warned once).
        self._root_hook = None
        self._root_eval = self._root_train = False
        self._warned: set[str] = set()
        self._lengths: dict[int, int] = {}   # a norm layer's per-channel length, from its first snapshot
        self._closed = False
        _OPEN.add(self)
        self._arm()

    def _warn_shared(self) -> None:
        """Warn when a norm module of this model is also one of another model watched now: a hook
        sees every call of its module, so both runs record its first call, whichever model made it."""
        mine = {id(s.norm): s.name for s in self.recorder.layers if s.norm is not None}
        root = unwrap(self.model)
        for other in list(_OPEN):
            if other._closed or unwrap(other.model) is root:
                continue
            shared = [mine[id(s.norm)] for s in other.recorder.layers if s.norm is not None and id(s.norm) in mine]
            if shared:
                warnings.warn(f"bnviz.watch: {', '.join(shared)} of {type(root).__name__} "
                              f"{'is' if len(shared) == 1 else 'are'} also in the model watched into {other.run_dir}; "
                              "a shared module is recorded at its first training-mode call of each step, by "
                              "either model, in both runs", stacklevel=4)

    # ----- the training loop's side -------------------------------------------------------------
    def _arm(self) -> None:
        # The store's thinned cadence decides (before the writer exists, at step 0, every step is due).
        if self._writer is not None and not self._writer.snapshot_due(self.steps_done):
            return
        self.recorder.arm()
        if self._root_hook is None and not self._scripted_root:   # a ScriptModule refuses Python hooks
            self._root_hook = unwrap(self.model).register_forward_pre_hook(eager(self._root_called, self.recorder.compiled))

    def _root_called(self, module: nn.Module, inputs: tuple) -> None:
        """The root module's first forward of an armed step: whether the step had a training-mode
        forward, and its input kept for the precise-BN evaluation. Removed after the training
        forward: later calls of the step cost nothing."""
        if not module.training:  # a validation pass; the step's training forward is still to come
            self._root_eval = True
            return
        self._root_train = True
        self._remove_root_hook()
        # Every positional argument: a model of several inputs (a siamese net's forward(a, b))
        # is called with all of them again; with the first alone the precise-BN pass failed.
        if self.holdout is not None and any(isinstance(a, torch.Tensor) for a in inputs):
            kept = tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in inputs)
            self._inputs = (self._inputs + [kept])[-PRECISE_BATCHES:]

    def _remove_root_hook(self) -> None:
        if self._root_hook is not None:
            self._root_hook.remove()
            self._root_hook = None

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _nothing_recorded(self, step: int) -> None:
        """Why a due step recorded nothing, when it is not just a step without a forward pass."""
        train, evaluated = self._root_train, self._root_eval
        self._root_train = self._root_eval = False
        norms = [s.name for s in self.recorder.layers if s.norm is not None]
        if train and norms:
            self._warn_once("unreached", f"bnviz.watch: the training forward of step {step} reached none of the "
                            f"{len(norms)} normalization layers found when watching began ({', '.join(norms[:3])}"
                            f"{', ...' if len(norms) > 3 else ''}): were they replaced (model.x = new module, "
                            "convert_sync_batchnorm) after bnviz.watch? Watch the model as it trains.")
        elif evaluated and not train and not self._writer.has_snapshots:
            self._warn_once("eval", f"bnviz.watch: step {step} had forward passes in eval mode only, and those are "
                            "not recorded (a validation pass is not the training forward): call model.train() "
                            "before training forwards; nothing is recorded until one comes.")

    def _consistent(self, snap: Snapshot) -> Snapshot:
        """``snap`` without the per-channel state of a layer whose channel count changed since its
        first snapshot (warned once per layer): torch lets an InstanceNorm or a BatchNorm without
        gamma/beta and running statistics take any number of channels, and the run store, which
        keeps one length per layer, refused the step and stopped training."""
        norms = {}
        for i, ns in snap.norms.items():
            arrays = [a for a in (ns.batch_mean, ns.running_mean, ns.weight, ns.bias) if a is not None]
            n = int(np.size(arrays[0])) if arrays else None
            first = self._lengths.setdefault(i, n) if n is not None else None
            if first is not None and n != first:
                name = self.recorder.layers[i].name
                self._warn_once(f"channels {i}", f"bnviz.watch: layer {name!r} normalized {n} channels at step "
                                f"{snap.step}, {first} at its first recorded step; a run keeps one channel count per "
                                "layer, so its per-channel statistics are recorded only at the steps with "
                                f"{first} (its histograms at every step)")
                continue
            norms[i] = ns
        return snap if len(norms) == len(snap.norms) else Snapshot(step=snap.step, taps=snap.taps, norms=norms)

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
        armed = self.recorder.armed
        snap = self.recorder.collect(step) if armed else None
        self._remove_root_hook()   # the step's training forward never came
        if self._writer is None:
            self._writer = self._open_writer()
            self._infos_provisional = snap is None
        if armed and snap is None:
            self._nothing_recorded(step)
        self._root_train = self._root_eval = False
        if snap is not None:
            snap = self._consistent(snap)
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
        _OPEN.discard(self)
        self.recorder.close()
        self._remove_root_hook()
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

    Layers found and how they are called (tests/test_watch_foreign2.py): a norm layer called with
    keywords (``self.ln(input=x)``) is recorded like one called positionally; one that gives (or
    whose hook of yours makes it give) a tuple is recorded without its "norm_output" histogram;
    hooks of yours that change a layer's input or output are seen as the model sees them; a
    gamma / beta made by ``torch.nn.utils.parametrize`` is recorded as the forward used it. Under
    gradient checkpointing the forward's call is recorded, not its recomputation in backward.
    TorchScript modules (``torch.jit.script`` / ``trace``) run a compiled graph that calls no
    Python hook: the norm layers inside a scripted submodule are not recorded (a UserWarning names
    them; the rest of the model is), and a wholly scripted model records only the scalars (warned).
    A norm module shared with another model watched at the same time is recorded at its first
    training-mode call of each step, by either model, in both runs (warned at ``watch``).

    Warned once (RuntimeWarning), training going on: a due step whose only forward passes were in
    eval mode, while nothing has been recorded yet (a model trained in eval mode records nothing);
    a training forward that reached none of the norm layers found at ``watch`` (replaced since);
    a layer whose channel count changes (torch lets InstanceNorm and a BatchNorm without gamma /
    beta and running statistics take any): a run keeps one count per layer, so its per-channel
    statistics are kept only at the steps with its first count, its histograms at every step.

    ``every``: an integer >= 1 (a bool, float or string is refused). ``run_dir``: a str or
    os.PathLike, not empty; the folder is created by ``watch``, which raises at once, naming the
    path, if it is a file, lies under a file or cannot be written. ``overwrite``: a bool.
    In a torch.distributed job each process records its own run, in ``run_dir/rank-<rank>``.
    Raises FileExistsError if ``run_dir`` already holds a run, unless ``overwrite=True``.
    """
    return Watch(model, run_dir, every, holdout=holdout, overwrite=overwrite)


def default_runs_dir() -> Path:
    """Where the app looks for runs: ``$BNVIZ_RUNS_DIR``, else ``./runs``."""
    return Path(os.environ.get("BNVIZ_RUNS_DIR") or "runs")
