"""The house style shared by every figure module: template, palette, title and legend placement.

Figure modules are pure functions from recorded numbers to ``plotly.graph_objects.Figure``: no
figure function trains or touches a tensor, and each figure's title names it, so the same
functions serve the app, the export command and notebooks. Runs are passed as ``{label: history}``
so a figure can compare "with BN" and "without BN" (or several momenta) with consistent colours.
"""
from __future__ import annotations

import plotly.graph_objects as go

TEMPLATE = "plotly_white"
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT = 900, 460


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def styled(fig: go.Figure, title: str, *, height: int = HEIGHT) -> go.Figure:
    """The house style: title, white template, legend on top."""
    # No fixed width: the app stretches charts to the page; exports use WIDTH.
    fig.update_layout(title=dict(text=title, x=0.01), template=TEMPLATE, height=height,
                      legend=dict(orientation="h", yanchor="bottom", y=1.08, xanchor="right", x=1),
                      margin=dict(l=60, r=20, t=100, b=50))
    return fig
