"""bnviz: what BatchNorm and its relatives do inside a network, recorded and drawn.

The public API for your own model and training loop::

    import bnviz
    with bnviz.watch(model, "runs/my-resnet", every=20) as w:
        ...; w.step(loss=loss.item())
    run = bnviz.open_run("runs/my-resnet")

``watch`` and ``open_run`` are imported on first use: ``import bnviz`` stays free of torch, so the
app's first chart is not held up by it (see bnviz.ui_first_paint).
"""
from __future__ import annotations

from typing import Any

__version__ = "0.5.0"
__all__ = ["watch", "open_run", "Watch", "__version__"]

_LAZY = {"watch": ("bnviz.watcher", "watch"), "Watch": ("bnviz.watcher", "Watch"),
         "open_run": ("bnviz.store", "open_run")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bnviz' has no attribute {name!r}")
