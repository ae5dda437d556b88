"""The recorder: forward hooks on any ``torch.nn.Module``'s normalization layers, and compact numbers.

A *layer* is what the figures call one: a normalization module found by type (every BatchNorm,
SyncBatchNorm and LazyBatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm, bnviz's reference
BatchNorm) together with the activation module that consumes its output, where the model has one
as a module. bnviz's own networks hand the recorder their hidden blocks instead (a block without
a norm is a layer too: the "without BN" run is drawn beside the "with BN" one).

How it stays free when it is not recording (the fastai ``Hooks`` / ``wandb.watch`` idea, made
cheap): hooks exist only while a step is armed. :meth:`Recorder.arm` registers them before the
forward pass of a recorded step; each hook copies what it sees once; :meth:`Recorder.collect`
summarises the copies into a :class:`~bnviz.record.Snapshot` and removes the hooks. Steps that are
not recorded run with no hook registered, so torch takes its hook-free fast path.

What a hook copies, and why it copies: the norm layer's input (for the per-channel batch mean and
biased variance), its output, the activation's input and output, and the layer's running buffers
and gamma/beta as they are right after its forward. ``ReLU(inplace=True)`` and ``out += identity``
overwrite tensors after the hook has seen them, and the optimizer changes gamma/beta before the
user calls ``step``: a reference would record the wrong numbers. Copies are taken only on
recorded steps; reading never writes, so training is the same bit for bit with or without it.
Where the owner of the model says that nothing writes into the tensors a layer's modules take
and give (bnviz's own networks, :class:`LayerSpec` ``read_only``), the hooks keep those tensors
themselves instead; buffers and gamma/beta are copied all the same.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from .norms import BatchNorm as ReferenceBatchNorm
from .record import LayerInfo, NormStats, Scratch, Snapshot, TapStats, sorted_rows, summarize_sorted

# Activation modules the recorder pairs with a norm layer: the nonlinearities torch ships as modules.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh,
    nn.Tanhshrink, nn.LogSigmoid,
)

# Taps summarised as histograms. "norm_input" is summarised only per channel (NormStats): its
# range is the previous layer's business, and a histogram of it on shared edges says little.
HISTOGRAM_TAPS = ("pre_activation", "norm_output", "post_activation", "output")


_FAMILIES: dict[type, str | None] = {}


def norm_family(module: nn.Module) -> str | None:
    """What a normalization module averages over: "batch" (BatchNorm of any kind), "layer",
    "group", "instance", "rms"; None for anything else."""
    # By type, once: the recorder asks for every layer of every snapshot it summarises.
    kind = type(module)
    if kind not in _FAMILIES:
        _FAMILIES[kind] = _family(module)
    return _FAMILIES[kind]


def _family(module: nn.Module) -> str | None:
    if isinstance(module, (_BatchNorm, ReferenceBatchNorm)):
        return "batch"
    if isinstance(module, _InstanceNorm):
        return "instance"
    if isinstance(module, nn.LayerNorm):
        return "layer"
    if isinstance(module, nn.GroupNorm):
        return "group"
    rms = getattr(nn, "RMSNorm", None)
    if rms is not None and isinstance(module, rms):
        return "rms"
    return None


def _compiled_type() -> type | None:
    """torch.compile's module type, if TorchDynamo is loaded. Not imported here: it costs a second
    or more, and a model can only be compiled once it has been."""
    return getattr(sys.modules.get("torch._dynamo.eval_frame"), "OptimizedModule", None)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile``: its layer
    names are the ones the user's code uses ("layer1.0.bn1", not "module.layer1.0.bn1" or
    "_orig_mod.layer1.0.bn1")."""
    compiled = _compiled_type()
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif compiled is not None and isinstance(model, compiled):
            model = model._orig_mod
        else:
            return model


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` or a module inside it was made by ``torch.compile``."""
    compiled = _compiled_type()
    return compiled is not None and any(isinstance(m, compiled) for m in model.modules())


class _Inert:
    """What a copy of a watched module gets in place of a recorder's hook: nothing to do."""

    __slots__ = ()

    def __call__(self, *args: Any) -> None:
        return None


class _Hook:
    """A recorder's (or watch's) hook as registered on the user's modules.

    ``copy.deepcopy(model)`` in a training loop (an EMA twin, a best-so-far copy) copies every
    module's hooks with it. A bound method as hook made it deep-copy the recorder and what it
    held: between a recorded forward and ``w.step`` those are tensors of the autograd graph, and
    torch refuses to deep-copy them ("Only Tensors created explicitly by the user (graph leaves)
    support the deepcopy protocol"): the user's copy failed only because the model was watched.
    The copy is not the watched model: its hook is inert. Pickled (``torch.save(model)``), too.
    """

    __slots__ = ("fn",)

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def __deepcopy__(self, memo: dict) -> _Inert:
        return _Inert()

    def __reduce__(self) -> tuple:
        return (_Inert, ())


def eager(hook: Callable, compiled: bool) -> Callable:
    """``hook`` as it must be registered on a module that runs compiled: excluded from what
    TorchDynamo traces (it fails on the recorder's Python state, and copying values out of a
    graph is no part of it), so it runs as plain Python between graphs. Otherwise in a
    :class:`_Hook` (~0.1 us a call), which a deep copy of the model does not take along; the
    compiled wrapper costs ~8 us a call."""
    return torch.compiler.disable(hook) if compiled else _Hook(hook)


@dataclass(frozen=True)
class LayerSpec:
    """Which modules make up one recorded layer.

    ``norm``: its input gives the batch statistics, its output the "norm_output" tap, its buffers
    and parameters the per-channel state. ``act``: its input is "pre_activation", its output
    "post_activation". ``out``: its output is "output". ``act_follows_norm``: count a call of
    ``act`` only when its input is the norm's output (a shared ``self.relu``, as in ResNet blocks,
    is also called after the residual addition; that call belongs to no norm layer).
    ``out_is_act``: the owner of the model knows that ``out`` ends with ``act`` (nothing runs after
    it), so "output" is "post_activation" and ``out`` needs no hook of its own (each hook costs a
    recorded step some 15 us). ``act_takes_norm_output``: the owner knows that ``act`` runs once a
    forward pass, on the norm's output itself; when ``act`` is exactly ``nn.ReLU``, "pre_activation"
    is then "norm_output" and "post_activation" its ReLU, and ``act`` needs no hooks either.
    ``read_only``: the owner knows that nothing writes into the tensors these modules take and
    give, then or later (no in-place activation, no ``out += identity``): the hooks keep them
    rather than copy them (a copy costs a recorded step ~10 us a tap).
    """

    name: str
    norm: nn.Module | None = None
    act: nn.Module | None = None
    out: nn.Module | None = None
    act_follows_norm: bool = False
    out_is_act: bool = False
    act_takes_norm_output: bool = False
    read_only: bool = False


def find_layers(model: nn.Module) -> list[LayerSpec]:
    """Every normalization module of ``model`` (``named_modules`` order, names as it gives them),
    each with the activation module registered right after it among the leaf modules, if any.

    Registration order is how ``nn.Sequential`` and hand-written blocks alike list "conv, bn, relu";
    whether the activation really consumes the norm's output is checked at every recorded forward
    (``act_follows_norm``), so a wrong guess records nothing rather than something false.
    """
    leaves, inside = [], None
    for name, m in unwrap(model).named_modules():
        # What a norm module holds (torch.nn.utils.parametrize's parametrizations of its weight)
        # is part of it, not the next module of the model: its activation comes after all that.
        if norm_family(m):
            leaves.append((name, m))
            inside = f"{name}." if name else ""
        elif not any(m.children()) and not (inside is not None and name.startswith(inside)):
            leaves.append((name, m))
    specs = []
    for i, (name, m) in enumerate(leaves):
        if norm_family(m) is None:
            continue
        nxt = leaves[i + 1][1] if i + 1 < len(leaves) else None
        act = nxt if isinstance(nxt, ACTIVATION_TYPES) else None
        specs.append(LayerSpec(name=name, norm=m, act=act, act_follows_norm=True))
    return specs


def _momentum(module: nn.Module) -> float | None:
    m = getattr(module, "momentum", None)
    return None if m is None else float(m)


def layer_info(spec: LayerSpec) -> LayerInfo:
    """What the run store and the doctor need to know of a layer (read once its shapes exist:
    a lazy module learns its channels at its first forward)."""
    norm, family = spec.norm, (norm_family(spec.norm) if spec.norm is not None else None)
    act = type(spec.act).__name__ if spec.act is not None else None
    if norm is None:
        return LayerInfo(name=spec.name, kind="", family=None, channels=0, activation=act)
    weight = getattr(norm, "weight", None)
    running = getattr(norm, "running_mean", None)
    eps = getattr(norm, "eps", None)
    return LayerInfo(name=spec.name, kind=type(norm).__name__, family=family, channels=_channels(norm),
                     momentum=_momentum(norm), eps=None if eps is None else float(eps),
                     affine=isinstance(weight, torch.Tensor) and not _uninitialized(weight),
                     tracks_running_stats=isinstance(running, torch.Tensor), activation=act)


def _uninitialized(t: Any) -> bool:
    return isinstance(t, nn.parameter.UninitializedTensorMixin)


def _channels(norm: nn.Module) -> int:
    for name in ("num_features", "num_channels"):
        n = getattr(norm, name, None)
        if isinstance(n, int) and n > 0:
            return n
    shape = getattr(norm, "normalized_shape", None)
    if shape:
        return int(shape[0]) if len(shape) > 1 else int(shape[-1])
    return 0


def _per_channel(norm: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x`` laid out as (M, C, rest) with the channel axis second, and the number of values one
    of the layer's statistics is taken over (the doctor's "values per channel", :func:`_count`).

    Batch- and instance-type layers have their channels on axis 1. LayerNorm and RMSNorm normalize
    over their trailing ``normalized_shape``: the channel is its first axis (the last axis for the
    usual 1-D shape).
    """
    if norm_family(norm) in ("layer", "rms"):
        shape = tuple(getattr(norm, "normalized_shape", None) or x.shape[-1:])
        lead = x.reshape(-1, *x.shape[x.dim() - len(shape):])          # (M, *normalized_shape)
        return lead.reshape(lead.shape[0], lead.shape[1], -1), _count(norm, x.shape)
    if x.dim() < 2:
        return x.reshape(-1, 1, 1), x.numel()
    return x.reshape(x.shape[0], x.shape[1], -1), _count(norm, x.shape)


def _per_channel_vector(v: torch.Tensor) -> torch.Tensor:
    """A layer's parameter as one value per channel: itself when it is a vector, else its mean
    over every axis but the first (the channel axis of a multi-axis ``normalized_shape``)."""
    return v.reshape(-1) if v.dim() < 2 else v.reshape(v.shape[0], -1).mean(1)


def _unbatched_dim(norm: nn.Module | None) -> int | None:
    """The number of axes of an unbatched input of ``norm`` (InstanceNorm1d: 2, (C, L)); None for
    a layer whose inputs always carry a batch axis."""
    if isinstance(norm, _InstanceNorm):
        try:
            return int(norm._get_no_batch_dim())
        except (AttributeError, NotImplementedError, TypeError):
            return None
    return None


def _count(norm: nn.Module, shape: torch.Size) -> int:
    """The number of values one statistic of ``norm`` covers for an input of ``shape``, from the
    shape alone (the hooks run it on every recorded forward pass): N*H*W for BatchNorm, H*W for
    InstanceNorm, C/G*H*W for GroupNorm, prod(normalized_shape) for LayerNorm and RMSNorm."""
    family = norm_family(norm)
    # math.prod, not np.prod: numpy makes an array of the tuple first (~10 us a call, and this
    # runs in every recorded norm layer's hook)
    if family in ("layer", "rms"):
        normalized = getattr(norm, "normalized_shape", None) or shape[-1:]
        return int(math.prod(normalized))
    if len(shape) < 2:
        return int(math.prod(shape))
    rest = int(math.prod(shape[2:]))
    if family == "group":
        return rest * shape[1] // max(int(getattr(norm, "num_groups", 1)), 1)
    if family == "instance":
        return rest
    return shape[0] * rest


_EMPTY = torch.empty(0)


def _inplace(act: nn.Module) -> bool:
    """Whether an activation module overwrites its input (``nn.ReLU(inplace=True)`` and kin).
    Each hook registered costs a recorded step some 20 us, so only these get a pre-hook."""
    return bool(getattr(act, "inplace", False))


def _relu_only(act: nn.Module) -> bool:
    """Whether ``act`` is exactly ``nn.ReLU``: elementwise and non-decreasing, so its output,
    sorted, is the ReLU of its sorted input, and the recorder can summarise it from the sort of
    the norm output it already has instead of copying and sorting it too. (A subclass could
    compute anything: only the type itself counts.)"""
    return type(act) is nn.ReLU


def _copy(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` in CPU memory, outside autograd: the summaries are computed by numpy, and a
    copy left on a GPU would hold its memory until then. (On the CPU a plain clone: faster.)"""
    t = t.detach()
    return t.clone() if t.is_cpu else t.to("cpu")


def _kept(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself outside autograd, for a layer whose owner says nothing writes into it
    (``LayerSpec.read_only``); copied only off the CPU."""
    t = t.detach()
    return t if t.is_cpu else t.to("cpu")


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """A module call's input tensor: its first positional argument, or (called as
    ``ln(input=x)``) its first keyword argument; None when that is no tensor."""
    x = args[0] if args else next(iter(kwargs.values()), None)
    return x if isinstance(x, torch.Tensor) else None


def _attribute_tensor(module: nn.Module, name: str) -> torch.Tensor | None:
    value = getattr(module, name, None)
    return value if isinstance(value, torch.Tensor) and not _uninitialized(value) else None


def _same(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    """Whether ``a`` is the very tensor ``b`` (the same memory, viewed the same way)."""
    return b is not None and a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


class _LayerHooks:
    """The hooks of one layer and what they copied during the armed forward pass.

    Built once per layer; :meth:`Recorder.arm` registers its bound methods and :meth:`reset`
    empties it. The hooks read module state through ``_buffers`` / ``_parameters`` rather than
    ``getattr``: nn.Module's attribute lookup is slow enough to show in a recorded step.
    """

    def __init__(self, recorder: "Recorder", spec: LayerSpec):
        self.recorder = recorder
        self.spec = spec
        self.act_inplace = spec.act is not None and _inplace(spec.act)
        self.act_relu = spec.act is not None and _relu_only(spec.act)
        # InstanceNorm also takes one unbatched sample, (C, L) or (C, H, W): its input is then
        # recorded with a batch axis of 1 added, or its C channels were taken for a batch.
        self.unbatched_dim = _unbatched_dim(spec.norm)
        # LayerNorm / RMSNorm over several trailing axes: gamma and beta are not vectors (norm_hook)
        self.multi_axis = len(tuple(getattr(spec.norm, "normalized_shape", None) or ())) > 1
        # The owner says the ReLU takes the norm's output: the norm's hook records both, none on act.
        self.relu_of_norm = self.act_relu and spec.act_takes_norm_output and spec.norm is not None
        # (An in-place activation writes into the norm's output whatever its owner says.)
        self.keep = _kept if spec.read_only and not self.act_inplace else _copy
        compiled = recorder.compiled
        # what arm() registers: the bound methods, made once (wrapped for a compiled model)
        self.calls = {"norm": eager(self.norm_hook, compiled), "act_pre": eager(self.act_pre_hook, compiled),
                      "act": eager(self.act_hook, compiled), "out": eager(self.out_hook, compiled)}
        self.reset()

    def reset(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        # Taps whose values are the ReLU of another tap's copy (tap -> that tap), not copied.
        self.relu_of: dict[str, str] = {}
        # The tensors the copies were taken of, kept alive until collect: a tensor's identity
        # (its storage address) can only be compared with one that cannot have been freed and
        # its memory handed to another.
        self.originals: dict[str, torch.Tensor] = {}
        # running mean, running variance, weight and bias, flattened and joined in one copy
        # (split by split_vectors when summarised); None until the norm layer ran
        self.joined: torch.Tensor | None = None
        self.sizes: tuple[int | None, ...] = ()
        self.shape: torch.Size | None = None   # of the norm layer's input
        self.training = True
        self.frozen = False
        self.batches_tracked: int | None = None
        self.act_pending = False

    @property
    def count(self) -> int:
        """Values one of the layer's statistics covers (see :func:`_count`)."""
        return _count(self.spec.norm, self.shape) if self.shape is not None and self.spec.norm is not None else 0

    @property
    def samples(self) -> int:
        """The batch size of the recorded forward pass."""
        if self.shape is None:
            return 0
        return int(self.shape[0]) if len(self.shape) > 1 else 1

    @property
    def seen(self) -> bool:
        return bool(self.tensors) or self.joined is not None

    def take(self) -> "_LayerHooks":
        """What this armed pass copied, in a holder of its own, and this one emptied for the next."""
        taken = object.__new__(_LayerHooks)
        taken.__dict__.update(self.__dict__)
        taken.originals = {}
        self.reset()
        return taken

    def split_vectors(self, joined: np.ndarray) -> list[np.ndarray | None]:
        """Running mean, running variance, weight and bias: views of ``joined`` (this layer's
        :attr:`joined` as float32 numpy), None where the layer has none."""
        vectors, at = [], 0
        for size in self.sizes:
            if size is None:
                vectors.append(None)
            else:
                vectors.append(joined[at:at + size])
                at += size
        return vectors

    def values(self) -> dict[str, torch.Tensor]:
        """Every tap's tensor, the ReLU-derived ones computed (one tensor object per source, so
        a tensor seen at two taps is still one object)."""
        out = dict(self.tensors)
        made: dict[str, torch.Tensor] = {}
        for tap, source in self.relu_of.items():
            if source not in made:
                made[source] = torch.relu(self.tensors[source])
            out[tap] = made[source]
        return out

    def norm_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        # Runs inside the recorded training forward: only copies here (what the next step
        # changes) and the cheapest reads; counts, casts and splits wait for the summary.
        if self.joined is not None or not self.recorder.active():
            return
        # Registered with its keyword arguments: a layer called as ``self.ln(input=x)`` passed its
        # hook no positional input, and was never recorded.
        x = _first_input(args, kwargs)
        if x is None:
            return
        if self.unbatched_dim is not None and x.dim() == self.unbatched_dim:
            x = x.unsqueeze(0)
        self.shape = x.shape
        tensors, keep = self.tensors, self.keep
        if self.recorder.batch_stats:
            tensors["norm_input"] = keep(x)
        # A layer (or a hook of the user's on it) may give something else than a tensor, a
        # tuple (y, stats): its statistics, buffers and parameters are recorded all the same
        # (they were dropped with it), only its "norm_output" tap is not.
        if isinstance(output, torch.Tensor):
            tensors["norm_output"] = kept = keep(output)
            self.originals["norm_output"] = output
            if self.relu_of_norm:
                tensors["pre_activation"] = kept
                self.relu_of["post_activation"] = "norm_output"
                if self.spec.out_is_act:
                    self.relu_of["output"] = "norm_output"
        buffers, params = module._buffers, module._parameters
        weight, bias = params.get("weight"), params.get("bias")
        grads = [p.requires_grad for p in params.values() if p is not None]
        if "parametrizations" in module._modules:
            # torch.nn.utils.parametrize moved gamma / beta out of _parameters (weight computed
            # from parametrizations.weight.original): read as the layer's forward used them, or
            # they were recorded as absent (NaN) while the layer said it was affine.
            weight, bias = _attribute_tensor(module, "weight"), _attribute_tensor(module, "bias")
            grads = [p.requires_grad for p in module.parameters()]
        present = (buffers.get("running_mean"), buffers.get("running_var"), weight, bias)
        # One copy of all four (.data: a parameter's copy must not join the autograd graph);
        # split into arrays only when summarised.
        # A LayerNorm / RMSNorm over several trailing axes (normalized_shape (C, H, W)) has a gamma
        # and beta of that shape: recorded per channel (its first axis, as the batch statistics)
        # as their mean over the other axes, or the run store refused the step (lengths C and
        # C*H*W) and the user's training stopped. A NaN or inf anywhere stays in the mean.
        if self.multi_axis:
            present = tuple([v if v is None or v.dim() == 1 else _per_channel_vector(v.data) for v in present])
        flat = [v.data for v in present if v is not None]
        joined = torch.cat(flat) if flat else _EMPTY     # a new tensor: the copy itself
        self.joined = joined if joined.is_cpu else joined.to("cpu")
        self.sizes = tuple([None if v is None else v.numel() for v in present])
        self.training = module.training
        self.frozen = bool(grads) and not any(grads)
        nbt = buffers.get("num_batches_tracked")
        self.batches_tracked = None if nbt is None else int(nbt.item())

    def _take_act_input(self, args: tuple, kwargs: dict) -> bool:
        """Copy the activation's input (or share the norm output's copy when it is that very
        tensor); False when this call is not the layer's activation."""
        if "pre_activation" in self.tensors or not self.recorder.active():
            return False
        x = _first_input(args, kwargs)
        if x is None:
            return False
        if _same(x, self.originals.get("norm_output")):
            self.tensors["pre_activation"] = self.tensors["norm_output"]
        elif self.spec.act_follows_norm:
            return False
        else:
            self.tensors["pre_activation"] = self.keep(x)
        return True

    def act_pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        # Only for an in-place activation, whose input is overwritten by the time its forward
        # hook runs; a norm output it overwrites was copied by the norm's hook already.
        self.act_pending = self._take_act_input(args, kwargs)

    def act_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not self.act_inplace:
            self.act_pending = self._take_act_input(args, kwargs)
        if not self.act_pending or not isinstance(output, torch.Tensor):
            return
        self.act_pending = False
        if self.act_relu and "norm_output" in self.tensors and self.tensors["pre_activation"] is self.tensors["norm_output"]:
            self.relu_of["post_activation"] = "norm_output"
        else:
            self.tensors["post_activation"] = self.keep(output)
        self.originals["post_activation"] = output
        if self.spec.out_is_act:
            if "post_activation" in self.relu_of:
                self.relu_of["output"] = self.relu_of["post_activation"]
            else:
                self.tensors["output"] = self.tensors["post_activation"]

    def out_hook(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        if "output" in self.tensors or "output" in self.relu_of or not self.recorder.active() \
                or not isinstance(output, torch.Tensor):
            return
        if _same(output, self.originals.get("post_activation")):  # nothing ran in between
            if "post_activation" in self.relu_of:
                self.relu_of["output"] = self.relu_of["post_activation"]
            else:
                self.tensors["output"] = self.tensors["post_activation"]
        else:
            self.tensors["output"] = self.keep(output)


class Recorder:
    """Records the layers of one model at the forward passes it is armed for.

    >>> rec = Recorder(model)             # layers found by type
    >>> rec.arm(); model(x); snap = rec.collect(step)

    ``edges`` fixes the histogram bin edges per tap; without it they are chosen at the first
    :meth:`collect` from what that step saw (see :func:`choose_edges`) and fixed from then on, so
    every step's histograms of a run are comparable. ``any_mode``: also record a forward made in
    eval mode (by default only a training-mode forward of the root module counts: a validation
    pass between two steps is not "the training forward of step s"). ``batch_stats=False``: leave
    the per-channel batch mean and variance out of the snapshot's NormStats (None there), for a
    caller that has them already (:func:`bnviz.train.train` reads them from BN's own buffers).
    """

    def __init__(self, model: nn.Module, layers: Sequence[LayerSpec] | None = None,
                 edges: Mapping[str, np.ndarray] | None = None, *, any_mode: bool = False,
                 batch_stats: bool = True):
        self.model = unwrap(model)
        self.compiled = is_compiled(model)
        self.batch_stats = batch_stats
        self.layers: list[LayerSpec] = list(layers) if layers is not None else find_layers(self.model)
        self.edges: dict[str, np.ndarray] | None = _shared(edges) if edges is not None else None
        self.any_mode = any_mode
        self._hooks = [_LayerHooks(self, spec) for spec in self.layers]
        self._handles: list[Any] = []
        self._pending: list[tuple[int, list[_LayerHooks]]] = []
        self._pending_bytes = 0
        # Work space kept between flushes: the stacked copies, and summarize_sorted's float64 sums.
        self._rows, self._sums = Scratch(), Scratch()

    # ----- hooks ---------------------------------------------------------------------------
    @property
    def armed(self) -> bool:
        return bool(self._handles)

    @property
    def captured(self) -> bool:
        """Whether the armed forward pass has happened (some layer saw it)."""
        return any(h.seen for h in self._hooks)

    def active(self) -> bool:
        """Whether a forward pass now is one to record."""
        return self.any_mode or self.model.training

    def arm(self) -> None:
        """Register the hooks; the next (training-mode) forward pass is recorded."""
        if self._handles:
            return
        for h in self._hooks:
            if h.seen or h.act_pending:   # what a pass read without collect or capture left behind
                h.reset()
            spec = h.spec
            if spec.norm is not None:
                self._handles.append(spec.norm.register_forward_hook(h.calls["norm"], with_kwargs=True))
            if spec.act is not None and not h.relu_of_norm:
                if h.act_inplace:
                    self._handles.append(spec.act.register_forward_pre_hook(h.calls["act_pre"], with_kwargs=True))
                self._handles.append(spec.act.register_forward_hook(h.calls["act"], with_kwargs=True))
            if spec.out is not None and not (spec.out_is_act and spec.act is not None):
                self._handles.append(spec.out.register_forward_hook(h.calls["out"]))

    def disarm(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # ----- summaries -------------------------------------------------------------------------
    def tensors(self) -> list[dict[str, torch.Tensor]]:
        """The copies of the armed forward pass, one dict per layer (tap name -> tensor), for
        experiments that need the values themselves. Call it before :meth:`collect`."""
        return [h.values() for h in self._hooks]

    def layer_infos(self) -> list[LayerInfo]:
        return [layer_info(spec) for spec in self.layers]

    def collect(self, step: int) -> Snapshot | None:
        """The :class:`Snapshot` of the armed forward pass as step ``step``, and disarm. None when
        no forward pass happened while armed (nothing to record; the hooks are removed anyway)."""
        if not self._end_pass():
            return None
        snap = self._summarise([(step, self._hooks)])[0]
        for h in self._hooks:
            h.reset()  # the copies are summarised: let them go
        return snap

    def _end_pass(self) -> bool:
        """Disarm; whether the armed forward pass happened (its copies are then in the hooks, and
        the histogram edges are fixed from the first one)."""
        self.disarm()
        if not self.captured:
            return False
        if self.edges is None:
            self.edges = choose_edges(self._hooks)
        return True

    # ----- deferred summaries ------------------------------------------------------------------
    # Summarising costs numpy's per-call overhead more than arithmetic: ~150 calls per snapshot
    # of the default MLP, about as long as a training step. Passes kept by capture() and
    # summarised together by flush() share those calls (one sort, one search... per group of
    # equal shapes across all of them): a recorded run spends ~3x less on its snapshots. The
    # copies wait in memory meanwhile, bounded by MAX_PENDING / MAX_PENDING_BYTES.
    MAX_PENDING = 16
    MAX_PENDING_BYTES = 64 << 20

    def capture(self, step: int) -> bool:
        """Disarm and keep the armed forward pass's copies as step ``step`` for :meth:`flush`;
        False when no forward pass happened while armed (nothing kept)."""
        if not self._end_pass():
            return False
        taken = [h.take() for h in self._hooks]
        self._pending.append((step, taken))
        held = {id(t): t for h in taken for t in h.tensors.values()}   # a tensor seen at two taps counted once
        self._pending_bytes += sum(t.nbytes for t in held.values())
        return True

    @property
    def pending(self) -> int:
        """Captured passes not yet summarised."""
        return len(self._pending)

    @property
    def full(self) -> bool:
        """Whether the captured passes should be summarised now to keep memory bounded."""
        return len(self._pending) >= self.MAX_PENDING or self._pending_bytes >= self.MAX_PENDING_BYTES

    def flush(self) -> list[Snapshot]:
        """The :class:`Snapshot` of every pass :meth:`capture` kept, in the order captured, summarised
        together; each equals what :meth:`collect` would have returned for it."""
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        return self._summarise(pending) if pending else []

    def _summarise(self, passes: Sequence[tuple[int, Sequence["_LayerHooks"]]]) -> list[Snapshot]:
        caps = [layers for _, layers in passes]
        # NaN / inf in a diverging model's tensors are recorded as such (counted as nonfinite, NaN
        # statistics): numpy's "invalid value" / "overflow" warnings about them only pointed the
        # user at bnviz's lines from inside their training loop.
        with np.errstate(invalid="ignore", over="ignore"):
            taps, norms = self._tap_stats(caps), self._norm_stats(caps)
        return [Snapshot(step=step, taps=taps[j], norms=norms[j]) for j, (step, _) in enumerate(passes)]

    def _tap_stats(self, passes: Sequence[Sequence[_LayerHooks]]) -> list[dict[tuple[int, str], TapStats]]:
        # A tensor seen at two taps (BN's output is the activation's input) is summarised once;
        # tensors of one shape (every layer of an MLP, of every pass) are sorted and summarised
        # in one numpy pass; a ReLU's output is not sorted at all: it is the ReLU of its sorted input.
        members: dict[tuple[int, int, bool], tuple[torch.Tensor, np.ndarray, bool]] = {}
        places: dict[tuple[int, int, str], tuple[int, int, bool]] = {}
        assert self.edges is not None
        taps = [(tap, self.edges[tap]) for tap in HISTOGRAM_TAPS if tap in self.edges]
        for j, caps in enumerate(passes):
            for i, cap in enumerate(caps):
                tensors, relu_of = cap.tensors, cap.relu_of
                for tap, edges in taps:
                    source = relu_of.get(tap)
                    tensor = tensors.get(tap if source is None else source)
                    if tensor is None:
                        continue
                    same = (id(tensor), id(edges), source is not None)
                    if same not in members:
                        if not tensor.numel():   # an empty batch: nothing to summarise
                            continue
                        members[same] = (tensor, edges, source is not None)
                    places[(j, i, tap)] = same
        groups: dict[tuple, list[tuple[int, int, bool]]] = {}
        for same, (tensor, _, _) in members.items():
            groups.setdefault((tuple(tensor.shape), tensor.dtype), []).append(same)
        summaries = {}
        for keys in groups.values():
            # One sorted row per tensor; a ReLU's summary is made from its input's row.
            rows: dict[int, int] = {}
            tensors = []
            for key in keys:
                tensor = members[key][0]
                if rows.setdefault(id(tensor), len(tensors)) == len(tensors):
                    tensors.append(tensor.float())
            s, unit = sorted_rows(tensors, self._rows)
            stats = summarize_sorted(s, unit, [members[key][1] for key in keys], [rows[key[0]] for key in keys],
                                     [key[2] for key in keys], self._sums)
            summaries.update(zip(keys, stats))
        out: list[dict[tuple[int, str], TapStats]] = [{} for _ in passes]
        for (j, i, tap), key in places.items():
            out[j][(i, tap)] = summaries[key]
        return out

    def _norm_stats(self, passes: Sequence[Sequence[_LayerHooks]]) -> list[dict[int, NormStats]]:
        # Batch statistics in numpy: mean and biased variance per channel (axis 1) over every
        # other axis, inputs of one shape (of every pass) together. numpy, not torch:
        # torch.var_mean over the batch axis takes ~150 us for a (64, 100) input here, numpy
        # ~40 us for all of them.
        layouts: dict[tuple[int, torch.Size], tuple[int, ...]] = {}
        groups: dict[tuple, list[tuple[int, int, torch.Tensor]]] = {}
        for j, caps in enumerate(passes):
            for i, cap in enumerate(caps):
                x = cap.tensors.get("norm_input")
                norm = self.layers[i].norm
                if x is not None and x.numel() and norm is not None:
                    # Laid out as (M, C, rest) once per layer and shape, not once per pass.
                    laid = layouts.get((i, x.shape))
                    if laid is None:
                        laid = layouts[(i, x.shape)] = tuple(_per_channel(norm, x)[0].shape)
                    groups.setdefault((x.shape, x.dtype, laid), []).append((j, i, x))
        batch: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        for (_, _, laid), members in groups.items():
            # Sums in float64 over float32 values (no float64 copy of the inputs: that copy and
            # its arithmetic were ~2/3 of a summary); the deviations are exact enough in float32,
            # and taken in place: the stack is a copy of its own (in memory kept between flushes).
            xs = [x for _, _, x in members]
            if xs[0].dtype == torch.float32:
                a = self._rows.take(len(xs) * xs[0].numel(), np.float32).reshape(len(xs), *xs[0].shape)
                torch.stack(xs, out=torch.from_numpy(a))
            else:
                a = torch.stack(xs).float().numpy()
            a = a.reshape(len(members), *laid)
            mean = a.mean(axis=(1, 3), keepdims=True, dtype=np.float64)
            a -= mean.astype(a.dtype)
            var = np.square(a, out=a).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
            mean = mean.reshape(len(members), -1).astype(np.float32)
            for k, (j, i, _) in enumerate(members):    # views: one array per shape group, not two per layer
                batch[(j, i)] = (mean[k], var[k])
        # Every layer's vectors of every pass in one cast to float32 arrays, then views of it.
        held = [cap for caps in passes for cap in caps if cap.joined is not None]
        joined = torch.cat([cap.joined.float() for cap in held]).numpy() if held else None
        vectors, at = {}, 0
        for cap in held:
            vectors[id(cap)] = cap.split_vectors(joined[at:at + cap.joined.numel()])
            at += cap.joined.numel()
        counts: dict[tuple[int, torch.Size | None], int] = {}
        out: list[dict[int, NormStats]] = []
        for j, caps in enumerate(passes):
            stats = {}
            for i, cap in enumerate(caps):
                if cap.joined is None:
                    continue
                count = counts.get((i, cap.shape))
                if count is None:
                    count = counts[(i, cap.shape)] = cap.count
                batch_mean, batch_var = batch.get((j, i), (None, None))
                running_mean, running_var, weight, bias = vectors[id(cap)]
                # constructed, not assembled: instances made by __init__ share their attribute keys
                # (PEP 412); a History of 50,000 steps held ~20 % more memory otherwise
                stats[i] = NormStats(batch_mean=batch_mean, batch_var=batch_var, running_mean=running_mean,
                                     running_var=running_var, weight=weight, bias=bias, count=count,
                                     training=cap.training, frozen=cap.frozen,
                                     num_batches_tracked=cap.batches_tracked, samples=cap.samples)
            out.append(stats)
        return out

    def close(self) -> None:
        """Remove the hooks and drop every copy, captured passes not yet flushed included; the
        work space kept between flushes goes to the next recorder."""
        self.disarm()
        for h in self._hooks:
            h.reset()
        self._pending, self._pending_bytes = [], 0
        self._rows.release()
        self._sums.release()


_NICE = (1.0, 2.0, 2.5, 5.0, 10.0)
QUANTILE_SAMPLE = 65_536


def _shared(edges: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``edges`` with equal arrays made one object: a tensor seen at two taps with equal edges
    (a ReLU's output that is also its block's output) is then summarised once."""
    seen: dict[bytes, np.ndarray] = {}
    return {tap: seen.setdefault(e.tobytes() + str(e.dtype).encode(), e) for tap, e in edges.items()}


def _nice_ceil(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= x."""
    if not math.isfinite(x) or x <= 0:
        return 1.0
    p = 10.0 ** math.floor(math.log10(x))
    return next(n * p for n in _NICE if n * p >= x * (1 - 1e-12))


def choose_edges(caps: Iterable[_LayerHooks], bins: int = 160) -> dict[str, np.ndarray]:
    """Histogram edges per tap for a model bnviz knows nothing about, from its first recorded step.

    Per tap (over all layers): ``bins`` equal bins from 0 (when no value is negative, as after a
    ReLU) or from -R, to R, where R is twice the largest 99.9th percentile of |x|, rounded up to
    1, 2, 2.5 or 5 times a power of ten, and at least 1. Twice, because activations widen as a
    network trains; values that leave the range later are counted as below/above, never lost.
    """
    seen: dict[str, dict[int, torch.Tensor]] = {}
    for cap in caps:
        for tap, t in cap.values().items():
            if tap in HISTOGRAM_TAPS and t.numel():
                seen.setdefault(tap, {})[id(t)] = t      # a tensor seen at two taps counts once
    edges = {}
    for tap, ts in seen.items():
        reach, lowest = 0.0, 0.0
        for t in ts.values():
            v = t.detach().reshape(-1)
            # A range needs no full sort of a ResNet's 500,000-value activations: an evenly
            # strided sample of at most 65,536 values gives the 99.9th percentile closely
            # (a full torch.quantile of each took ~30 ms, the first snapshot over a second).
            v = v[:: v.numel() // QUANTILE_SAMPLE + 1].float()
            v = v[torch.isfinite(v)]
            if not v.numel():
                continue
            reach = max(reach, float(torch.quantile(v.abs(), 0.999)))
            smallest = float(t.min())            # over every value: a few negatives decide the range's side
            lowest = min(lowest, smallest if math.isfinite(smallest) else float(v.min()))
        r = _nice_ceil(max(2 * reach, 1.0))
        lo = 0.0 if lowest >= 0 else -r
        edges[tap] = np.linspace(lo, r, bins + 1, dtype=np.float32)
    return edges
