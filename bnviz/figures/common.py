"""The house style shared by every figure module: template, palette, title and legend placement.

Figure modules are pure functions from recorded numbers to ``plotly.graph_objects.Figure``: no
figure function trains or touches a tensor, and each figure's title names it, so the same
functions serve the app, the export command and notebooks. Runs are passed as ``{label: history}``
so a figure can compare "with BN" and "without BN" (or several momenta) with consistent colours.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

TEMPLATE = "plotly_white"
# Every new figure starts from plotly's default template, which plotly assigns without validating
# it (~1 ms); setting it afterwards (``update_layout(template=...)``) validates the whole template
# again, ~20 ms per figure. So the house template is made the default here. Streamlit's plotly
# module makes its own theme the default when it is imported: styled() checks, and sets the
# template itself when the default is not the house one.
pio.templates.default = TEMPLATE
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT = 900, 460


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


# Room for the axes' tick labels and titles. The template's axes have automargin on: when the
# labels need more than the margin, plotly.js enlarges it and draws the whole figure a second time.
# With l=60, b=50 (until 2026-11-21) that happened to almost every figure, by 1-3 px, and doubled
# the browser's time to draw it (measured with plotly.js alone: layer histograms 147 -> 70 ms).
# A figure with a colour bar or a legend on the right sets its own right margin.
MARGIN = dict(l=70, r=30, t=100, b=60)


def house(title: str, *, height: int = HEIGHT) -> dict[str, Any]:
    """The house style as layout properties: title, height, legend on top, margins (and the
    template, when plotly's default is not the house one)."""
    # No fixed width: the app stretches charts to the page; exports use WIDTH.
    layout: dict[str, Any] = dict(title=dict(text=title, x=0.01), height=height,
                                  legend=dict(orientation="h", yanchor="bottom", y=1.08, xanchor="right", x=1),
                                  margin=dict(MARGIN))
    if pio.templates.default != TEMPLATE:  # a figure would be made with another default template
        layout["template"] = TEMPLATE
    return layout


def styled(fig: go.Figure, title: str, *, height: int = HEIGHT) -> go.Figure:
    """The house style: title, white template, legend on top."""
    return fig.update_layout(**house(title, height=height))


def figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> go.Figure:
    """``go.Figure`` from plain trace and layout dicts, validated in one go.

    The same figure as ``add_trace`` / ``update_layout`` / ``update_xaxes`` calls would make, ~4x
    faster: each of those calls walks plotly's property tree again (the layer histograms took
    ~20 ms that way, ~5 ms this way; a display change that misses :mod:`bnviz.views.memo` waits
    for it). Trace dicts name their axes (``xaxis="x2"``, see :func:`grid`); ``layout`` is usually
    :func:`grid`'s, updated with :func:`house`.
    """
    return go.Figure(data=data, layout=layout)


def grid(rows: int = 1, cols: int = 1, **options: Any) -> tuple[dict[str, Any], list[list[dict[str, str]]]]:
    """The layout of ``make_subplots(rows, cols, **options)`` as a new dict (axes, domains,
    subplot titles), and each cell's axes for a trace, ``cells[row - 1][col - 1]`` (``{"xaxis":
    "x2", "yaxis": "y2"}``): what :func:`figure` builds a grid of panels from."""
    layout, grid_ref, _ = _grid(rows, cols, json.dumps(options, sort_keys=True, default=_plain))
    cells = [[dict(cell[0].trace_kwargs) if cell else {} for cell in row] for row in grid_ref]
    return copy.deepcopy(layout), cells


def axis_key(ref: str) -> str:
    """The layout key of an axis reference: "x" -> "xaxis", "y2" -> "yaxis2"."""
    return f"{ref[0]}axis{ref[1:]}"


def subplots(rows: int = 1, cols: int = 1, **options: Any) -> go.Figure:
    """``plotly.subplots.make_subplots(rows, cols, **options)``, a new figure each call, ~10x faster
    when the same grid was made before (same options, titles included).

    make_subplots builds its layout through plotly's validators, ~20 ms for a row of three panels;
    a figure made from the finished layout takes ~2 ms. So the grid's layout (axes, domains,
    subplot titles) and its subplot references, which ``row=`` / ``col=`` arguments use, are kept
    per distinct call and copied into each new figure, as make_subplots itself attaches them.
    """
    layout, grid_ref, grid_str = _grid(rows, cols, json.dumps(options, sort_keys=True, default=_plain))
    fig = go.Figure(layout=copy.deepcopy(layout))
    fig.__dict__["_grid_ref"] = copy.deepcopy(grid_ref)
    fig.__dict__["_grid_str"] = grid_str
    return fig


@lru_cache(maxsize=128)
def _grid(rows: int, cols: int, options: str) -> tuple[dict, Any, str]:
    fig = make_subplots(rows=rows, cols=cols, **json.loads(options))
    layout = copy.deepcopy(fig.layout.to_plotly_json())
    layout.pop("template", None)  # a new figure gets the default template, as make_subplots' did
    return layout, fig.__dict__["_grid_ref"], fig.__dict__["_grid_str"]


def _plain(value: Any) -> Any:
    """numpy numbers and arrays as JSON can hold them (an option's value, e.g. column widths)."""
    return value.tolist() if hasattr(value, "tolist") else list(value)
