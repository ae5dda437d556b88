"""Figure of the which-values-share-statistics view: Wu & He's Figure 2 drawn on a real tensor."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go

from ..experiments.shared_statistics import Entry, Shared
from .common import styled, subplots


def tiles(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) laid out as one image of N rows and C columns of H x W tiles, a blank (NaN)
    line between tiles: shape (N (H + 1) - 1, C (W + 1) - 1)."""
    n, c, h, w = x.shape
    out = np.full((n, h + 1, c, w + 1), np.nan)
    out[:, :h, :, :w] = x.transpose(0, 2, 1, 3)
    return out.reshape(n * (h + 1), c * (w + 1))[:-1, :-1]


def shared_sets(x: np.ndarray, shared: Sequence[Shared], entry: Entry) -> go.Figure:
    """One panel per method: every entry of ``x`` as a pixel (rows: samples, columns: channels;
    each tile an H x W map), the entries normalized with ``entry`` in colour, the others grey,
    ``entry`` itself circled."""
    n, c, h, w = x.shape
    fig = subplots(rows=2, cols=2, horizontal_spacing=0.1, vertical_spacing=0.1,
                   subplot_titles=[f"{s.method}: {s.count} values, mean {s.mean:.3g}, var {s.var:.3g}"
                                   for s in shared])
    limit = float(np.nanmax(np.abs(x))) or 1.0
    grey = tiles(np.where(np.isfinite(x), 0.0, np.nan))
    row_of = entry[0] * (h + 1) + entry[2]
    col_of = entry[1] * (w + 1) + entry[3]
    for i, s in enumerate(shared):
        r, col = divmod(i, 2)
        fig.add_heatmap(z=grey, colorscale=[[0, "#e6e6e6"], [1, "#e6e6e6"]], showscale=False, hoverinfo="skip",
                        row=r + 1, col=col + 1)
        fig.add_heatmap(z=tiles(np.where(s.mask, x, np.nan)), colorscale="RdBu_r", zmin=-limit, zmax=limit,
                        showscale=i == 0, colorbar=dict(title="x", len=0.9), name=s.method,
                        hovertemplate=f"{s.method}<br>value %{{z:.3g}}<extra></extra>", row=r + 1, col=col + 1)
        fig.add_scatter(x=[col_of], y=[row_of], mode="markers", showlegend=False,
                        marker=dict(symbol="circle-open", size=12, color="black", line=dict(width=2)),
                        hovertemplate=f"entry (n={entry[0]}, c={entry[1]}, h={entry[2]}, w={entry[3]})<br>"
                                      f"x = {s.value:.4g}, x_hat = {s.normalized:.4g}<extra></extra>",
                        row=r + 1, col=col + 1)
    channel_ticks = [k * (w + 1) + (w - 1) / 2 for k in range(c)]
    sample_ticks = [k * (h + 1) + (h - 1) / 2 for k in range(n)]
    fig.update_xaxes(tickvals=channel_ticks, ticktext=[str(k) for k in range(c)], title_text="channel c",
                     showgrid=False, zeroline=False)
    fig.update_yaxes(tickvals=sample_ticks, ticktext=[str(k) for k in range(n)], title_text="sample n",
                     autorange="reversed", showgrid=False, zeroline=False)
    styled(fig, f"Which values are normalized with entry (n={entry[0]}, c={entry[1]}, h={entry[2]}, w={entry[3]}) "
                f"of a {n}×{c}×{h}×{w} activation tensor", height=820)
    return fig.update_layout(margin=dict(r=110))   # room for the colour bar
