"""An independent tap for tests: plain forward hooks on a bnviz Net's blocks, written without
bnviz.recorder, so the recorder can be checked against it."""
from __future__ import annotations

import torch


def block_taps(model, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Run ``model(x)`` (no grad, in the model's current modes) and return, per hidden block, the
    norm's input and output, the activation's input and output and the block's output (copies)."""
    out: list[dict[str, torch.Tensor]] = [{} for _ in model.blocks]
    handles = []

    def keep(i, name, which):
        def hook(module, inputs, output):
            out[i][name] = (inputs[0] if which == "in" else output).detach().clone()
        return hook

    for i, block in enumerate(model.blocks):
        if block.norm is not None:
            handles.append(block.norm.register_forward_hook(keep(i, "norm_input", "in")))
            handles.append(block.norm.register_forward_hook(keep(i, "norm_output", "out")))
        handles.append(block.act.register_forward_hook(keep(i, "pre_activation", "in")))
        handles.append(block.act.register_forward_hook(keep(i, "post_activation", "out")))
        handles.append(block.register_forward_hook(keep(i, "output", "out")))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return out
