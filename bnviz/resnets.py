"""Residual networks with the normalization placements people train, and their normalizer-free rivals.

Every block computes ``out = merge(x, branch(x))``: the *skip path* carries ``x`` unchanged, the
*residual branch* learns a correction. Where BatchNorm sits in the branch, and what happens to the
sum, is what the styles differ in (weight = Linear for the MLP-ResNet, 3x3 Conv2d for the CNN):

============  ==========================================  ===============================  ==========
style         branch(x)                                   out                              source
============  ==========================================  ===============================  ==========
``post``      weight-BN-ReLU-weight-BN                    ReLU(x + branch(x))              He et al. 2015 (original)
``pre``       BN-ReLU-weight-BN-ReLU-weight               x + branch(x)                    He et al. 2016 (pre-activation)
``skipinit``  alpha * (ReLU-weight-ReLU-weight), alpha=0  x + branch(x)                    De & Smith 2020
``fixup``     scale * W2(ReLU(W1(x + b1) + b2) + b3) + b4 ReLU(x + branch(x))              Zhang et al. 2019
``none``      ReLU-weight-ReLU-weight                     x + branch(x)                    (no normalization)
============  ==========================================  ===============================  ==========

``zero_init=True`` sets the gamma of each branch's last BN to 0 (Goyal et al. 2017), so every BN
block starts as the identity (``post``: ReLU(x), which is x for the non-negative x it receives).

Initialization: He (``kaiming_normal_``, fan-in, ReLU gain) for every weight layer, biases 0, so a
branch without normalization keeps the second moment of its input (the doubling of the ``none``
network's skip path, and the ``+1`` per block of the ``pre`` one, are exact in expectation). Fixup
scales its first weight of each branch by ``L**-0.5`` (``L`` blocks, two layers per branch) and
starts its last weight, and the classifier, at 0. Weights come from a private generator.

Shapes: the MLP-ResNet takes (N, *) inputs (flattened) of ``in_features`` values, the CNN-ResNet
(N, C_in, H, W); both return (N, n_classes) logits. A network names its parts for the recorder:
:meth:`ResNet.branch_layers` are :class:`~bnviz.recorder.LayerSpec` s whose "output" tap is the
stem's output, then each block's branch output and block output.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .recorder import LayerSpec

STYLES = ("post", "pre", "skipinit", "fixup", "none")
NORMALIZED = ("post", "pre")
CNN_CHANNELS = 16


class Scalar(nn.Module):
    """Multiplies by (``mode="mul"``) or adds (``"add"``) one learned scalar; SkipInit's alpha and
    Fixup's scale and biases."""

    def __init__(self, value: float, mode: str):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(value)))
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.value if self.mode == "mul" else x + self.value

    def extra_repr(self) -> str:
        return f"{self.mode}, value={self.value.item():g}"


class ResidualBlock(nn.Module):
    """``merge(x, branch(x))`` in one of :data:`STYLES` (see the module docstring).

    ``weight()`` makes a fresh weight layer (Linear or Conv2d, width to width, no bias where a BN
    follows it), ``norm()`` a fresh BatchNorm of that width.
    """

    def __init__(self, style: str, weight, norm, zero_init: bool = False):
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"unknown block style {style!r}; choose one of {', '.join(STYLES)}")
        self.style = style
        if style == "post":
            parts = [weight(False), norm(), nn.ReLU(), weight(False), norm()]
        elif style == "pre":
            parts = [norm(), nn.ReLU(), weight(False), norm(), nn.ReLU(), weight(False)]
        elif style == "fixup":
            parts = [Scalar(0.0, "add"), weight(False), Scalar(0.0, "add"), nn.ReLU(), Scalar(0.0, "add"),
                     weight(False), Scalar(1.0, "mul"), Scalar(0.0, "add")]
        else:
            parts = [nn.ReLU(), weight(True), nn.ReLU(), weight(True)]
            if style == "skipinit":
                parts.append(Scalar(0.0, "mul"))
        self.branch = nn.Sequential(*parts)
        self.relu_after = nn.ReLU() if style in ("post", "fixup") else None
        self.zero_init = zero_init and style in NORMALIZED

    def weights(self) -> list[nn.Module]:
        return [m for m in self.branch if isinstance(m, (nn.Linear, nn.Conv2d))]

    def last_norm(self) -> nn.Module | None:
        norms = [m for m in self.branch if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        return norms[-1] if norms else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.branch(x)
        return self.relu_after(out) if self.relu_after is not None else out


class ResNet(nn.Module):
    """stem -> ``n_blocks`` residual blocks -> head (final BN-ReLU for ``pre``, ReLU for the other
    pre-activation styles) -> [global average pool] -> Linear classifier."""

    def __init__(self, stem: nn.Module, blocks: list[ResidualBlock], head: nn.Module, classifier: nn.Linear,
                 flatten_input: bool):
        super().__init__()
        self.flatten_input = flatten_input
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.flatten_input:
            x = x.flatten(1)
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.head(x)
        if x.dim() == 4:
            x = x.mean(dim=(2, 3))
        return self.classifier(x)

    def branch_layers(self) -> list[LayerSpec]:
        """What the recorder taps to compare branch and skip path: the stem's output (the first
        block's skip path), then per block its branch output ("block i branch") and its output
        ("block i", the next block's skip path)."""
        specs = [LayerSpec(name="stem", out=self.stem)]
        for i, block in enumerate(self.blocks, start=1):
            specs += [LayerSpec(name=f"block {i} branch", out=block.branch), LayerSpec(name=f"block {i}", out=block)]
        return specs


def _init(model: ResNet, generator: torch.Generator) -> None:
    """He initialization, biases 0; then Fixup's rescaling and zeros, and zero-init gammas."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    n_blocks = len(model.blocks)
    for block in model.blocks:
        first, last = block.weights()
        if block.style == "fixup":
            with torch.no_grad():
                first.weight.mul_(n_blocks ** -0.5)   # L^(-1/(2m-2)) with m = 2 layers per branch
                last.weight.zero_()
        if block.zero_init:
            nn.init.zeros_(block.last_norm().weight)
    if any(b.style == "fixup" for b in model.blocks):
        nn.init.zeros_(model.classifier.weight)
        nn.init.zeros_(model.classifier.bias)


def build_resnet(style: str, input_shape: tuple[int, ...], n_classes: int, *, arch: str = "mlp", width: int = 64,
                 n_blocks: int = 8, zero_init: bool = False, generator: torch.Generator | None = None) -> ResNet:
    """An MLP-ResNet (``arch="mlp"``: blocks of ``width`` units on flattened inputs) or a small
    CNN-ResNet (``"cnn"``: 3x3 convolutions of :data:`CNN_CHANNELS` channels at the input's
    resolution, global average pooling) with ``n_blocks`` blocks of ``style``."""
    if arch not in ("mlp", "cnn"):
        raise ValueError(f"unknown arch {arch!r}; choose mlp or cnn")
    if arch == "cnn" and len(input_shape) != 3:
        raise ValueError(f"the CNN-ResNet needs (C, H, W) images, got samples of shape {input_shape}")
    if n_blocks < 1:
        raise ValueError("a ResNet needs at least one block")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    if arch == "cnn":
        width = CNN_CHANNELS
        stem: nn.Module = nn.Conv2d(input_shape[0], width, 3, padding=1)
        weight = lambda bias: nn.Conv2d(width, width, 3, padding=1, bias=bias)  # noqa: E731
        norm = lambda: nn.BatchNorm2d(width)  # noqa: E731
    else:
        stem = nn.Linear(math.prod(input_shape), width)
        weight = lambda bias: nn.Linear(width, width, bias=bias)  # noqa: E731
        norm = lambda: nn.BatchNorm1d(width)  # noqa: E731
    blocks = [ResidualBlock(style, weight, norm, zero_init) for _ in range(n_blocks)]
    head: nn.Module = {"pre": lambda: nn.Sequential(norm(), nn.ReLU()),
                       "post": nn.Identity, "fixup": nn.Identity}.get(style, nn.ReLU)()
    model = ResNet(stem, blocks, head, nn.Linear(width, n_classes), flatten_input=arch == "mlp")
    _init(model, generator)
    return model
