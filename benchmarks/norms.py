"""The reference BatchNorm against torch's fused kernel: forward + backward, training mode."""
from __future__ import annotations

import torch

from bnviz.norms import BatchNorm

from . import Result, interleaved, ratios, spread

SHAPE = (256, 512)


def reference_bn(quick: bool) -> Result:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=gen).requires_grad_(True)
    grad = torch.randn(SHAPE, generator=gen)
    layers = {"reference": BatchNorm(SHAPE[1]), "torch": torch.nn.BatchNorm1d(SHAPE[1])}
    iterations = 5 if quick else 100       # per timed block; blocks alternate between the two layers
    rounds = 2 if quick else 21

    def block(layer: torch.nn.Module):
        def go() -> None:
            for _ in range(iterations):
                x.grad = None
                layer.weight.grad = layer.bias.grad = None
                layer(x).backward(grad)
        return go

    for layer in layers.values():
        block(layer)()                                # warm-up
    t = interleaved({name: block(layer) for name, layer in layers.items()}, rounds)
    per_call_us = {name: spread(v, 1e6 / iterations, 1) for name, v in t.cpu.items()}
    return Result("reference_bn_vs_torch", ratios(t.cpu["reference"], t.cpu["torch"]), "x",
                  f"bnviz.norms.BatchNorm / torch.nn.BatchNorm1d, forward + backward of a {SHAPE} batch, "
                  f"training mode; CPU time, median of {rounds} interleaved blocks of {iterations} calls",
                  target=2.0, detail={"per_call_cpu_us": per_call_us,
                                      "wall_ratio": spread(ratios(t.wall["reference"], t.wall["torch"]))})


def run(quick: bool) -> list[Result]:
    return [reference_bn(quick)]
