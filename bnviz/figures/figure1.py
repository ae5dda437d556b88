"""Ioffe & Szegedy (2015), Figure 1, redrawn from our runs: accuracy, and one sigmoid's input over time."""
from __future__ import annotations

from typing import Mapping

import plotly.graph_objects as go

from ..record import IOFFE_PERCENTILES, History
from .activations import percentile_bands
from .common import color, styled, subplots

TAP = "pre_activation"


def figure1(histories: Mapping[str, History], layer: int, *, with_bn: str = "with BN",
            without_bn: str = "without BN") -> go.Figure:
    """(a) test accuracy vs steps for both runs; (b) without BN and (c) with BN: the 15th, 50th and
    85th percentiles, over the batch, of the input of unit 1 of hidden layer ``layer`` to its
    sigmoid (the ``pre_activation`` tap, i.e. BN's output in the BN network), at every recorded step.

    Panels (b) and (c) share their y axis so the spreads compare directly.
    """
    fig = subplots(rows=1, cols=3, horizontal_spacing=0.07, subplot_titles=(
        "(a) test accuracy", f"(b) {without_bn}: input of one sigmoid", f"(c) {with_bn}: input of one sigmoid"))
    for i, (label, h) in enumerate(histories.items()):
        steps, acc = h.eval_curve("test_acc")
        fig.add_scatter(x=steps, y=acc, name=f"{label}: test accuracy", line=dict(color=color(i), width=2),
                        legendgroup=label, row=1, col=1)
    bands = percentile_bands(histories, layer, TAP, unit=True, bands=IOFFE_PERCENTILES)
    panel = {without_bn: 2, with_bn: 3}
    for trace in bands.data:
        if trace.legendgroup in panel:
            fig.add_trace(trace, row=1, col=panel[trace.legendgroup])
    fig.update_yaxes(matches="y2", row=1, col=3)
    fig.update_xaxes(title_text="step (weight updates)")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="sigmoid input", row=1, col=2)
    name = next(iter(histories.values())).layer_names[layer]
    percentiles = "/".join(str(q) for q in IOFFE_PERCENTILES)
    styled(fig, f"Ioffe & Szegedy (2015), Figure 1, on our runs<br><sub>(b, c): {percentiles}th percentiles over "
                f"the batch of the input of unit 1 of {name} to its sigmoid</sub>", height=520)
    # Six legend entries: below the panels, where they do not cover the title.
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0),
                      margin=dict(b=110))
    return fig
