"""Networks built from a :class:`~bnviz.config.Config`: an MLP and a small LeNet-style CNN.

Every hidden layer is a :class:`Block` whose parts (weight layer, normalization, activation,
dropout) run in the order the config asks for, so "BN before ReLU", "BN after ReLU" and
"dropout before BN" are the same code with a different order. The recorder (bnviz.recorder) sees
inside by forward hooks, as it does in any other model.

Randomness (initial weights, dropout masks) comes from a private ``torch.Generator`` seeded by the
config, never from torch's global generator: a Streamlit server trains many sessions in threads of
one process, and a shared global generator would make their results depend on each other.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import Config
from .norms import is_batchnorm, make_norm
from .recorder import LayerSpec

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
CNN_CHANNELS = (8, 16)


class SeededDropout(nn.Module):
    """Inverted dropout drawing its masks from a private generator (see the module docstring)."""

    def __init__(self, p: float, generator: torch.Generator):
        super().__init__()
        self.p = p
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty_like(x).bernoulli_(keep, generator=self.generator)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """One hidden layer: ``weight`` then ``norm``/``act``/``dropout`` in ``order``, then ``pool``.

    ``order`` is a tuple of part names ("norm", "act", "dropout") applied after the weight layer.
    The recorder sees inside by hooks on ``norm``, ``act`` and the block itself
    (:meth:`Net.recorded_layers`); nothing here knows about recording.
    """

    def __init__(self, weight: nn.Module, norm: nn.Module | None, act: nn.Module,
                 dropout: nn.Module | None, order: tuple[str, ...], pool: nn.Module | None = None):
        super().__init__()
        self.weight = weight
        self.norm = norm
        self.act = act
        self.dropout = dropout
        self.pool = pool
        self.order = tuple(part for part in order if getattr(self, part) is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.weight(x)
        for part in self.order:
            x = getattr(self, part)(x)
        if self.pool is not None:
            x = self.pool(x)
        return x


class Net(nn.Module):
    """Hidden blocks followed by a linear classifier head."""

    def __init__(self, blocks: list[Block], head: nn.Module, layer_names: list[str], flatten_input: bool):
        super().__init__()
        self.flatten_input = flatten_input
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.layer_names = layer_names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten_input:
            x = x.flatten(1)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def recorded_layers(self) -> list[LayerSpec]:
        """One recorded layer per hidden block, named as the figures name them ("layer 1"), with
        or without a norm: the recorder taps the norm's input and output, the activation's input
        and output, and the block's output (the activation's, when the block ends with it).

        What the block's code guarantees is said too: its activation takes the norm's output
        when "act" follows "norm" in its order, and no part writes into a tensor in place."""
        return [LayerSpec(name=name, norm=b.norm, act=b.act, out=b, out_is_act=b.order[-1:] == ("act",) and b.pool is None,
                          act_takes_norm_output=("norm", "act") in zip(b.order, b.order[1:]), read_only=True)
                for name, b in zip(self.layer_names, self.blocks)]

    def batchnorms(self) -> list[tuple[int, nn.Module]]:
        """(block index, module) of every BatchNorm layer (torch's or the reference one)."""
        return [(i, b.norm) for i, b in enumerate(self.blocks) if b.norm is not None and is_batchnorm(b.norm)]

    def dropouts(self) -> list[SeededDropout]:
        return [m for m in self.modules() if isinstance(m, SeededDropout)]


def _block_order(config: Config) -> tuple[str, ...]:
    if config.placement == "before":
        order = ("norm", "act")
    else:
        order = ("act", "norm")
    if config.dropout <= 0 or config.dropout_position == "before_output":
        return order
    if config.dropout_position == "before_norm":
        i = order.index("norm")
        return order[:i] + ("dropout",) + order[i:]
    i = order.index("act")
    return order[: i + 1] + ("dropout",) + order[i + 1:]


def _weight_bias(config: Config) -> bool:
    """Whether the weight layer keeps its bias: a BatchNorm right after it subtracts the batch mean,
    so a bias there is redundant (its beta takes over) unless the user asks to keep it."""
    bn_follows = config.placement == "before" and config.norm in ("batchnorm", "reference")
    return config.bias_with_norm or not bn_follows


def _reinit(model: nn.Module, scale: float, generator: torch.Generator) -> None:
    """torch's default initialisation, drawn from ``generator`` and multiplied by ``scale``."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(m.weight, a=5 ** 0.5, generator=generator)
            with torch.no_grad():
                m.weight.mul_(scale)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1 / fan_in ** 0.5
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)


def build(config: Config, input_shape: tuple[int, ...], n_classes: int,
          generator: torch.Generator | None = None) -> Net:
    """The network ``config`` describes, for inputs of ``input_shape`` (without the batch axis).

    MLP: ``depth`` hidden blocks of ``width`` units. CNN (LeNet-style): two 3x3 conv blocks of
    8 and 16 channels, each followed by 2x2 max-pooling, one hidden fully connected block of
    ``width`` units, then the classifier; ``depth`` does not apply to it.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    order = _block_order(config)
    bias = _weight_bias(config)
    act = ACTIVATIONS[config.activation]

    def norm(n: int, spatial: bool) -> nn.Module | None:
        return make_norm(config.norm if config.has_norm else "none", n, spatial=spatial, momentum=config.momentum,
                         eps=config.eps, affine=config.affine)

    def dropout() -> nn.Module | None:
        if config.dropout > 0 and config.dropout_position != "before_output":
            return SeededDropout(config.dropout, generator)
        return None

    blocks: list[Block] = []
    names: list[str] = []
    if config.arch == "cnn":
        channels, size = input_shape[0], input_shape[1:]
        for i, out in enumerate(CNN_CHANNELS):
            blocks.append(Block(nn.Conv2d(channels, out, 3, padding=1, bias=bias), norm(out, True), act(),
                                dropout(), order, pool=nn.MaxPool2d(2)))
            names.append(f"conv {i + 1}")
            channels, size = out, tuple(s // 2 for s in size)
        width_in = channels * size[0] * size[1]
        blocks.append(Block(nn.Sequential(nn.Flatten(), nn.Linear(width_in, config.width, bias=bias)),
                            norm(config.width, False), act(), dropout(), order))
        names.append("fc 1")
    else:
        width_in = int(torch.tensor(input_shape).prod())
        for i in range(config.depth):
            blocks.append(Block(nn.Linear(width_in, config.width, bias=bias), norm(config.width, False),
                                act(), dropout(), order))
            names.append(f"layer {i + 1}")
            width_in = config.width
    head_parts: list[nn.Module] = []
    if config.dropout > 0 and config.dropout_position == "before_output":
        head_parts.append(SeededDropout(config.dropout, generator))
    head_parts.append(nn.Linear(config.width, n_classes))
    model = Net(blocks, nn.Sequential(*head_parts), names, flatten_input=config.arch == "mlp")
    _reinit(model, config.init_scale, generator)
    return model


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item()


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)
