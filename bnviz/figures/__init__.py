"""Figure builders, one module per topic; ``common`` holds the shared style.

The names below are imported on first use (PEP 562), not with the package: ``bnviz.figures.intro``
needs only numpy and plotly, and the home page draws it before torch (~2 s) is imported.
"""
from __future__ import annotations

import importlib
from typing import Any

_WHERE = {name: "activations" for name in ("histogram_heatmap", "layer_histograms", "moment_lines",
                                           "percentile_bands", "training_curves")}
_WHERE.update({name: "common" for name in ("HEIGHT", "PALETTE", "WIDTH", "color", "styled")})

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
