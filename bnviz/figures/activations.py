"""Figures of activations: training curves, per-layer histograms, percentile bands, heatmaps."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ..record import IOFFE_PERCENTILES, PERCENTILES, TAP_LABELS, History, Snapshot
from .common import axis_key, color, figure, grid, house, rgba, styled, subplots


def training_curves(histories: Mapping[str, History]) -> go.Figure:
    """Training loss (per step) and eval-mode test accuracy (at each evaluation), side by side."""
    fig = subplots(rows=1, cols=2, subplot_titles=("training loss (cross-entropy, per step)",
                                                   "test accuracy (eval mode)"))
    for i, (label, h) in enumerate(histories.items()):
        steps, loss, _ = h.loss_curve()
        fig.add_scatter(x=steps, y=loss, name=label, line=dict(color=color(i), width=1.5), row=1, col=1,
                        legendgroup=label)
        es, acc = h.eval_curve("test_acc")
        fig.add_scatter(x=es, y=acc, name=label, line=dict(color=color(i), width=2), mode="lines+markers",
                        row=1, col=2, legendgroup=label, showlegend=False)
    fig.update_xaxes(title_text="step (weight updates)")
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    return styled(fig, "Training with and without normalization")


def bin_centers(edges: np.ndarray) -> np.ndarray:
    return (edges[:-1] + edges[1:]) / 2


def short(tap: str) -> str:
    """A tap's name without its explanation, for titles: "pre-activation"."""
    return TAP_LABELS[tap].split(" (")[0]


def snapshot_for(label: str, history: History, step: int) -> tuple[Snapshot, str]:
    """The snapshot a figure of ``step`` shows for a run, and the run's legend name: a run whose
    recording ended earlier (diverged, stopped) shows its last snapshot and says which step that is."""
    snap = history.snapshot_at(step)
    return snap, label if snap.step == step else f"{label} (step {snap.step}, its last recorded)"


def runs_without(histories: Mapping[str, History], tap: str) -> list[str]:
    """Labels of the runs that never recorded ``tap`` (e.g. "norm_output" in a run without a norm)."""
    return [label for label, h in histories.items() if tap not in h.taps]


def _absent_subtitle(histories: Mapping[str, History], tap: str) -> str | None:
    absent = runs_without(histories, tap)
    return f"{', '.join(absent)}: no {TAP_LABELS[tap]} (this network has no such layer)" if absent else None


def _note_absent(fig: go.Figure, histories: Mapping[str, History], tap: str) -> None:
    """Say under the title which runs have nothing at ``tap``, rather than leave a silent gap."""
    subtitle = _absent_subtitle(histories, tap)
    if subtitle:
        fig.update_layout(title_subtitle_text=subtitle)


def _house_noting_absent(title: str, histories: Mapping[str, History], tap: str) -> dict:
    """:func:`~bnviz.figures.common.house` with :func:`_note_absent`'s subtitle, as layout properties."""
    layout = house(title)
    subtitle = _absent_subtitle(histories, tap)
    if subtitle:
        layout["title"]["subtitle"] = dict(text=subtitle)
    return layout


def histogram_outline(counts: np.ndarray, n: int, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A histogram as the outline of its bars, for a filled line: ``(x, y, bins)``, two points per
    bin, at its left and right edge and both at its height ``counts / n``; ``bins`` holds each
    point's bin as (left edge, right edge), for the hover. Only the bins from the first to the last
    non-empty one (the empty ones at either end would be a line along 0); float32, which is more
    than the picture and the hover's digits show, and half the bytes sent.

    Drawn with ``fill="tozeroy"`` it is the bars without the gaps between them; on a log axis an
    empty bin's two points (height 0) are left out, and the outline stops there as a bar would.
    """
    filled = np.flatnonzero(counts)
    lo, hi = (int(filled[0]), int(filled[-1]) + 1) if filled.size else (0, 0)
    left, right = edges[lo:hi], edges[lo + 1:hi + 1]
    x = np.stack([left, right], axis=1).ravel().astype(np.float32)
    y = np.repeat(counts[lo:hi] / max(n, 1), 2).astype(np.float32)
    bins = np.repeat(np.stack([left, right], axis=1), 2, axis=0).astype(np.float32)
    return x, y, bins


def histogram_steps(counts: np.ndarray, n: int, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every bin of a histogram as a step line (``line_shape="hv"``): ``(x, y)``, the edges and
    each bin's height ``counts / n`` at its left edge (the last repeated at the right end), float32.

    Filled to zero it is the picture of :func:`histogram_outline` with one point per bin instead
    of two, and histograms on the same edges share ``x``: an animation's frames send only ``y``.
    (Not for a log axis, where an empty bin's 0 would be dropped and the step drawn across it.)
    """
    heights = counts / max(n, 1)
    y = np.append(heights, heights[-1:] if len(heights) else []).astype(np.float32)
    return np.asarray(edges, dtype=np.float32), y


def layer_histograms(histories: Mapping[str, History], step: int, tap: str, *, log_y: bool = False,
                     bins_in_hover: bool = True) -> go.Figure:
    """One panel per layer: the distribution at ``tap`` in the forward pass of ``step``, overlaid
    for every run.

    Heights are fractions of all values (``counts / n``), so runs with different sizes compare.
    Each histogram is one filled line along the top of its bars (:func:`histogram_outline`):
    the same picture as a bar per bin, which the browser draws in about half the time (one
    path per histogram instead of an SVG element per bar).
    Values beyond the fixed bin range are not drawn but counted: a panel says what share of each
    run lies outside. A run whose recording ends before ``step`` (diverged or stopped) shows its
    last snapshot, and its legend entry names that step.

    The hover names the bin under the pointer (its edges, sent as ``customdata``); with
    ``bins_in_hover=False`` it gives the value at the pointer's corner instead, and the figure is
    a third smaller (the played histograms: 40 such figures in one).
    """
    data, layout = _layer_histogram_parts(histories, step, tap, log_y=log_y, bins_in_hover=bins_in_hover)
    for trace in data:
        del trace["run_layer"]
    return figure(data, layout)


def _layer_histogram_parts(histories: Mapping[str, History], step: int, tap: str, *, log_y: bool = False,
                           bins_in_hover: bool = True, whole_range: bool = False) -> tuple[list[dict], dict]:
    """:func:`layer_histograms` as plain trace and layout dicts, unvalidated. Each trace dict also
    carries ``"run_layer"``, (run index, layer), which is not a plotly property: pop it before
    making a figure. ``whole_range``: every bin as a step line (:func:`histogram_steps`), not
    only the filled ones as an outline (:func:`histogram_outline`); linear y axis only."""
    first = next(iter(histories.values()))
    names = first.layer_names
    layout, cells = grid(1, len(names), subplot_titles=list(names), shared_yaxes=True)
    where = "values %{customdata[0]:.2f} to %{customdata[1]:.2f}" if bins_in_hover else "value %{x:.2f}"
    data: list[dict] = []
    outside: dict[int, list[str]] = {layer: [] for layer in range(len(names))}
    # A note must fit its panel: beyond three panels in a row it breaks after the run's name, and
    # beyond six it leaves the range out (the x axis spans it; the caption says what lies outside).
    sep = "<br>" if len(names) > 3 else " "
    for i, (label, h) in enumerate(histories.items()):
        snap, name = snapshot_for(label, h, step)
        edges = h.edges[tap]
        for layer in range(len(names)):
            st = snap.taps.get((layer, tap))
            if st is None:
                continue
            beyond = (st.below + st.above) / max(st.n, 1)
            if beyond >= 0.001:
                bounds = f" [{edges[0]:g}, {edges[-1]:g}]" if len(names) <= 6 else ""
                outside[layer].append(f"{label}:{sep}{beyond:.1%} outside{bounds}")
            line = dict(width=0, color=color(i))
            if whole_range:
                (x, y), bins = histogram_steps(st.counts, st.n, edges), None
                line["shape"] = "hv"
            else:
                x, y, bins = histogram_outline(st.counts, st.n, edges)
            data.append(dict(
                run_layer=(i, layer), type="scatter", x=x, y=y, customdata=bins if bins_in_hover else None, mode="lines",
                line=line, fill="tozeroy", fillcolor=rgba(color(i), 0.55), name=name,
                legendgroup=label, showlegend=layer == 0,
                hovertemplate=f"{label}<br>{where}<br>%{{y:.2%}} of values<extra>mean {st.mean:.3f}, "
                              f"std {st.std:.3f}, zeros {st.zero_frac:.1%}, outside range {beyond:.1%}</extra>",
                **cells[0][layer]))
    annotations = list(layout.get("annotations", ()))
    for layer, notes in outside.items():
        if notes:
            cell = cells[0][layer]
            annotations.append(dict(xref=f"{cell['xaxis']} domain", yref=f"{cell['yaxis']} domain", x=0.5, y=0.98,
                                    showarrow=False, font=dict(size=11), text="<br>".join(notes)))
    ranges = [h.edges[tap] for h in histories.values() if tap in h.edges]
    for cell in cells[0]:
        xaxis = layout[axis_key(cell["xaxis"])]
        xaxis["title"] = dict(text="value")
        if ranges:  # the x axis shows the whole bin range, drawn or not
            xaxis["range"] = [float(ranges[0][0]), float(ranges[0][-1])]
        if log_y:
            layout[axis_key(cell["yaxis"])]["type"] = "log"
    layout[axis_key(cells[0][0]["yaxis"])]["title"] = dict(text="fraction of values")
    layout.update(annotations=annotations,
                  **_house_noting_absent(f"{short(tap).capitalize()} per layer at step {step}", histories, tap))
    return data, layout


MAX_FRAMES = 40  # frames of the animated histograms: every recorded step, thinned evenly past this


def animated_layer_histograms(histories: Mapping[str, History], tap: str, *, max_frames: int = MAX_FRAMES) -> go.Figure:
    """:func:`layer_histograms` at every recorded step as one figure with a Play button and a
    step slider (plotly frames, played in the browser: nothing is sent back to the server).

    The y axis is fixed to the highest bin of any frame, so heights compare across steps.
    Every histogram spans all its bins (:func:`histogram_steps`), so the traces keep
    their ``x`` and a frame carries only each trace's heights, name and hover: the figure is
    made ~5x faster than from whole frames (plotly validates every frame's every property, ~1 ms
    a trace) and is about half the bytes.
    """
    steps = max((list(h.snapshots.steps) for h in histories.values()), key=len)
    if len(steps) > max_frames:
        steps = [steps[i] for i in np.unique(np.linspace(0, len(steps) - 1, max_frames).round().astype(int))]
    parts = [_layer_histogram_parts(histories, step, tap, bins_in_hover=False, whole_range=True) for step in steps]
    # The traces are those of any frame, in one order (a run that recorded nothing at a layer in
    # some frame shows an empty histogram there); a frame names the traces it updates.
    shown: dict[tuple[int, int], dict] = {}
    for data, _ in parts:
        for trace in data:
            shown.setdefault(trace["run_layer"], trace)
    order = sorted(shown)
    index = {key: k for k, key in enumerate(order)}
    last = {trace["run_layer"]: trace for trace in parts[-1][0]}
    base = []
    for key in order:
        trace = dict(last.get(key) or dict(shown[key], y=np.zeros_like(shown[key]["y"])))
        del trace["run_layer"]
        base.append(trace)
    top = max((float(np.max(t["y"])) for data, _ in parts for t in data if len(t["y"])), default=1.0)
    frames = []
    for step, (data, layout) in zip(steps, parts):
        here = {trace["run_layer"]: trace for trace in data}
        missing = [key for key in order if key not in here]
        updates = [dict(type="scatter", y=here[key]["y"], name=here[key]["name"],
                        hovertemplate=here[key]["hovertemplate"]) for key in order if key in here]
        updates += [dict(type="scatter", y=np.zeros_like(shown[key]["y"])) for key in missing]
        frames.append(dict(name=str(step), data=updates,
                           traces=[index[key] for key in order if key in here] + [index[key] for key in missing],
                           layout=dict(title=layout["title"], annotations=layout["annotations"])))
    layout = parts[-1][1]
    for key in [k for k in layout if k.startswith("yaxis")]:
        layout[key].update(range=[0, top * 1.05], autorange=False)
    play = dict(frame=dict(duration=250, redraw=True), transition=dict(duration=0), fromcurrent=True, mode="immediate")
    layout.update(
        updatemenus=[dict(type="buttons", direction="left", x=0, y=-0.28, xanchor="left", yanchor="top",
                          buttons=[dict(label="▶ Play", method="animate", args=[None, play]),
                                   dict(label="❚❚ Pause", method="animate",
                                        args=[[None], dict(frame=dict(duration=0, redraw=False), mode="immediate")])])],
        sliders=[dict(active=len(steps) - 1, x=0.24, y=-0.22, len=0.76, currentvalue=dict(prefix="step "),
                      steps=[dict(label=str(step), method="animate",
                                  args=[[str(step)], dict(frame=dict(duration=0, redraw=True), mode="immediate")])
                             for step in steps])],
        margin=dict(layout.get("margin", {}), b=150))
    return go.Figure(data=base, layout=layout, frames=frames)


def percentile_bands(histories: Mapping[str, History], layer: int, tap: str, *, unit: bool = False,
                     bands: Sequence[int] = IOFFE_PERCENTILES) -> go.Figure:
    """Percentiles of a layer's tap over training: the median as a line, each symmetric pair around
    it as a shaded band (nested bands overlap, so the middle of the distribution is darkest).

    ``bands`` is an odd number of recorded percentiles (:data:`~bnviz.record.PERCENTILES`), e.g.
    Ioffe & Szegedy's 15/50/85 (their Figure 1) or TensorBoard's 0/7/16/31/50/69/84/93/100.
    With ``unit`` the percentiles are those of unit 0 across the batch (as in Ioffe & Szegedy's
    figure); otherwise of all units together.
    """
    qs = sorted(bands)
    if len(qs) % 2 == 0 or any(q not in PERCENTILES for q in qs):
        raise ValueError(f"bands must be an odd number of recorded percentiles {PERCENTILES}, got {bands!r}")
    idx = {q: PERCENTILES.index(q) for q in qs}
    mid = qs[len(qs) // 2]
    pairs = [(qs[k], qs[-1 - k]) for k in range(len(qs) // 2)]  # outermost first
    data: list[dict] = []
    for i, (label, h) in enumerate(histories.items()):
        steps, stats = h.tap_series(layer, tap)
        if not stats:
            continue
        pct = np.array([s.unit_percentiles if unit else s.percentiles for s in stats])
        c = color(i)
        hover = f"step %{{x}}<br>%{{meta}}th percentile %{{y:.3f}}<extra>{label}</extra>"
        for k, (lo_q, hi_q) in enumerate(pairs):
            data.append(dict(type="scatter", x=steps, y=pct[:, idx[hi_q]], line=dict(width=0.5, color=c),
                             name=f"{label} {hi_q}th", meta=hi_q, legendgroup=label, showlegend=False,
                             hovertemplate=hover))
            data.append(dict(type="scatter", x=steps, y=pct[:, idx[lo_q]], line=dict(width=0.5, color=c),
                             fill="tonexty", fillcolor=rgba(c, 0.18), name=f"{label} {lo_q}th-{hi_q}th", meta=lo_q,
                             legendgroup=label, showlegend=k == 0, hovertemplate=hover))
        data.append(dict(type="scatter", x=steps, y=pct[:, idx[mid]], line=dict(width=2, color=c),
                         name=f"{label} {mid}th", meta=mid, legendgroup=label, hovertemplate=hover))
    who = "unit 1 of" if unit else "all units of"
    name = first_layer_name(histories, layer)
    layout = dict(xaxis=dict(title=dict(text="step (weight updates)")), yaxis=dict(title=dict(text="value")),
                  **_house_noting_absent(f"{short(tap).capitalize()}, {who} {name}: {'/'.join(map(str, qs))}th "
                                         "percentiles", histories, tap))
    return figure(data, layout)


def first_layer_name(histories: Mapping[str, History], layer: int) -> str:
    names = next(iter(histories.values())).layer_names
    return names[layer] if layer < len(names) else f"layer {layer + 1}"


def round_steps(steps: Sequence[int], most: int = 7) -> list[int]:
    """The steps a step axis labels: multiples of 1, 2 or 5 x 10^k, at most ``most`` of them
    (a category axis, where plotly would label every k-th category whatever its value)."""
    steps = [int(s) for s in steps]
    if not steps:
        return []
    span = max(steps[-1] - steps[0], 1)
    for exp in range(0, 12):
        for m in (1, 2, 5):
            every = m * 10 ** exp
            picked = [s for s in steps if s % every == 0]
            if len(picked) <= most and span / every <= most:
                return picked or steps[:1]
    return steps[:1]


# Shares below this are drawn in the lowest colour: a log colour scale needs a floor for empty bins.
HEATMAP_FLOOR = 1e-4


def histogram_heatmap(histories: Mapping[str, History], layer: int, tap: str, *,
                      log_color: bool = True) -> go.Figure:
    """The distribution over time, one panel per run side by side on one colour scale: a column per
    recorded step, colour = fraction of that step's values in each bin (``counts / n``).

    The log scale (floored at :data:`HEATMAP_FLOOR`) shows the tails a linear one hides.
    """
    layout, cells = grid(1, len(histories), subplot_titles=list(histories), shared_yaxes=True,
                         horizontal_spacing=0.04)
    data: list[dict] = []
    annotations = list(layout.get("annotations", ()))
    for cell, (label, h) in zip(cells[0], histories.items()):
        xaxis = layout[axis_key(cell["xaxis"])]
        steps, stats = h.tap_series(layer, tap)
        if not stats:
            annotations.append(dict(xref=f"{cell['xaxis']} domain", yref=f"{cell['yaxis']} domain", x=0.5, y=0.5,
                                    showarrow=False, text=f"no {TAP_LABELS[tap]}<br>in this network"))
            continue
        edges = h.edges[tap]
        # float32 (7 significant digits, more than the colours and the hover's 0.01% show), row-major:
        # plotly sends it base64-encoded, half the bytes of float64. The hover reads the share from
        # z when z is the share, and from customdata when z is its log.
        share = np.ascontiguousarray(np.array([s.counts / max(s.n, 1) for s in stats], dtype=np.float32).T)
        z = np.log10(np.maximum(share, np.float32(HEATMAP_FLOOR))) if log_color else share
        data.append(dict(type="heatmap", x=steps, y=bin_centers(edges), z=z, customdata=share if log_color else None,
                         coloraxis="coloraxis", name=label,
                         hovertemplate=f"{label}<br>step %{{x}}<br>value %{{y:.2f}}<br>"
                                       f"%{{{'customdata' if log_color else 'z'}:.2%}} of values<extra></extra>",
                         **cell))
        xaxis["tickvals"] = round_steps(steps)
    if log_color:
        ticks = list(range(int(np.log10(HEATMAP_FLOOR)), 1))
        coloraxis = dict(colorscale="Viridis", cmin=ticks[0], cmax=0, colorbar=dict(
            title=dict(text="share of values"), tickvals=ticks, ticktext=[f"{100 * 10.0 ** t:g}%" for t in ticks]))
    else:
        coloraxis = dict(colorscale="Viridis", cmin=0, colorbar=dict(title=dict(text="share of values"),
                                                                     tickformat=".0%"))
    # One column per recorded step, equally wide: the steps are categories. The last recorded step
    # (the final one) is closer to the one before than the others are to each other, and plotly draws
    # a heatmap whose columns are not evenly spaced brick by brick (a canvas the plot's size, ~2x the
    # browser's time) instead of as a one-pixel-per-column image.
    for cell in cells[0]:
        layout[axis_key(cell["xaxis"])].update(title=dict(text="step (weight updates)"), type="category", tickangle=0)
    layout[axis_key(cells[0][0]["yaxis"])]["title"] = dict(text="value")
    layout.update(annotations=annotations, coloraxis=coloraxis,
                  **house(f"{short(tap).capitalize()} of {first_layer_name(histories, layer)} over training"))
    layout["margin"]["r"] = 150  # the colour bar and its title (see common.MARGIN)
    return figure(data, layout)


def moment_lines(histories: Mapping[str, History], tap: str, step: int) -> go.Figure:
    """Mean, standard deviation and fraction of exact zeros of ``tap`` across depth at ``step``."""
    fig = subplots(rows=1, cols=3, subplot_titles=("mean", "standard deviation", "fraction of exact zeros"))
    for i, (label, h) in enumerate(histories.items()):
        snap, name = snapshot_for(label, h, step)
        layers = [layer for layer in range(len(h.layer_names)) if (layer, tap) in snap.taps]
        if not layers:
            continue
        stats = [snap.taps[(layer, tap)] for layer in layers]
        x = [h.layer_names[layer] for layer in layers]
        for col, values in enumerate(([s.mean for s in stats], [s.std for s in stats], [s.zero_frac for s in stats])):
            fig.add_scatter(x=x, y=values, name=name, mode="lines+markers", line=dict(color=color(i)),
                            legendgroup=label, showlegend=col == 0, row=1, col=col + 1)
    fig.update_yaxes(tickformat=".0%", row=1, col=3)
    styled(fig, f"{short(tap).capitalize()}: moments across depth at step {step}")
    _note_absent(fig, histories, tap)
    return fig
