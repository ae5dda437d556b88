"""Animations of recorded histograms over training, for slides: an animated GIF (Pillow) and an
MP4 (the ffmpeg binary that the imageio-ffmpeg wheel ships).

Frames are drawn here from the recorded numbers (numpy arrays into pixels, text with Pillow),
not rendered by the export browser: kaleido renders one image per call, ~0.25 s each on this
project's two cores, so 60 frames took 12-15 s even batched over its tabs; drawn directly they
take well under a second (``make bench``: ``animation_gif_s``). A frame is the layer histograms
figure reduced to what moves: one panel per layer, each run's bars on the tap's fixed bins (the
same bins, x range and y range on every frame, so only the distribution moves), and the step.

    anim = histogram_animation({"with BN": h1, "without BN": h2}, "pre_activation")
    Path("hist.gif").write_bytes(gif(anim))
"""
from __future__ import annotations

import functools
import io
import math
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from .export import PRESENTATION_SCALE
from .figures.activations import short
from .figures.common import color
from .record import TAP_LABELS, History

if TYPE_CHECKING:
    from PIL import Image

MAX_FRAMES = 60          # a GIF of more frames grows without showing more on a slide
FPS = 10                 # frames per second of the GIF and the MP4 (a GIF counts in 1/100 s)
HOLD_S = 2.0             # the GIF shows its last frame this long before it loops
SIZE = (960, 540)        # pixels, 16:9 like a slide; even, as the MP4's colour format needs
BAR_ALPHA = 0.55         # as the layer histograms figure: where two runs overlap both show


class EncoderUnavailable(RuntimeError):
    """No MP4 encoder: the imageio-ffmpeg package (which ships ffmpeg) is not installed."""


@dataclass(frozen=True)
class HistogramAnimation:
    """What every frame shows: per step, per run and per layer, the share of the tap's values in
    each of its fixed bins.

    Shapes: F frames, R runs (those that recorded the tap), L layers, B bins.
    """

    tap: str                          # e.g. "pre_activation"
    steps: tuple[int, ...]            # (F,) the step of each frame
    last_step: int                    # the last recorded step of the longest run
    layer_names: tuple[str, ...]      # (L,)
    runs: tuple[str, ...]             # (R,) legend labels
    edges: tuple[np.ndarray, ...]     # (R,) each (B+1,): the run's bin edges for the tap
    shares: np.ndarray                # (F, R, L, B) counts / n of the snapshot shown; 0 where none
    outside: np.ndarray               # (F, R, L) share of the values beyond the bins
    shown: np.ndarray                 # (F, R) the step each run shows: its last when it ended earlier
    absent: tuple[str, ...] = ()      # runs that never recorded the tap (no such layer)

    @property
    def title(self) -> str:
        return f"{short(self.tap).capitalize()} per layer"

    @property
    def y_max(self) -> float:
        """The y range of every frame: the highest bar of the whole animation, and a little room."""
        top = float(self.shares.max()) if self.shares.size else 0.0
        return top * 1.05 if top > 0 else 1.0

    @property
    def x_range(self) -> tuple[float, float]:
        return (min(float(e[0]) for e in self.edges), max(float(e[-1]) for e in self.edges)) if self.edges \
            else (0.0, 1.0)


def thin(steps: Sequence[int], most: int = MAX_FRAMES) -> list[int]:
    """At most ``most`` of ``steps``, evenly spread over them, the first and the last kept."""
    if len(steps) <= most:
        return list(steps)
    picks = np.unique(np.round(np.linspace(0, len(steps) - 1, most)).astype(int))
    return [steps[i] for i in picks]


def histogram_animation(histories: Mapping[str, History], tap: str, *,
                        max_frames: int = MAX_FRAMES) -> HistogramAnimation:
    """The recorded histograms of ``tap`` in every layer, one frame per recorded step (thinned to
    ``max_frames``). A run whose recording ended earlier (diverged, stopped) keeps showing its
    last snapshot, as the layer histograms figure does, and ``shown`` says which step that is."""
    longest = max(histories.values(), key=lambda h: len(h.snapshots))
    steps = thin(list(longest.snapshots.steps), max_frames)
    present = {label: h for label, h in histories.items() if tap in h.edges and tap in h.taps}
    layers = longest.layer_names
    bins = max((len(h.edges[tap]) - 1 for h in present.values()), default=0)
    shares = np.zeros((len(steps), len(present), len(layers), bins))
    outside = np.zeros((len(steps), len(present), len(layers)))
    shown = np.zeros((len(steps), len(present)), dtype=int)
    for f, step in enumerate(steps):
        for r, h in enumerate(present.values()):
            snap = h.snapshot_at(step)
            shown[f, r] = snap.step
            for layer in range(len(layers)):
                st = snap.taps.get((layer, tap))
                if st is None:
                    continue
                n = max(st.n, 1)
                shares[f, r, layer, :len(st.counts)] = st.counts / n
                outside[f, r, layer] = (st.below + st.above) / n
    return HistogramAnimation(
        tap=tap, steps=tuple(steps),
        last_step=int(longest.snapshots.steps[-1]) if len(longest.snapshots) else 0,
        layer_names=tuple(layers), runs=tuple(present), edges=tuple(h.edges[tap] for h in present.values()),
        shares=shares, outside=outside, shown=shown,
        absent=tuple(label for label in histories if label not in present))


# ----- drawing ------------------------------------------------------------------------------------
INK, GRID, AXIS, MUTED = (42, 63, 95), (235, 240, 248), (190, 198, 210), (110, 120, 135)


@functools.lru_cache(maxsize=16)
def _font(size: int):
    from PIL import ImageFont
    return ImageFont.load_default(size=size)   # Pillow's bundled scalable font: no system fonts needed


def nice_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) inside [lo, hi], at most ``most``."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(most - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class _Layout:
    """Where things go on a frame, in pixels; ``k`` scales text and lines (presentation)."""

    width: int
    height: int
    k: float
    panels: tuple[tuple[int, int, int, int], ...]    # (left, top, right, bottom) of each plot area

    @classmethod
    def of(cls, layers: int, size: tuple[int, int], k: float) -> _Layout:
        w, h = size
        left, right, top, bottom, gap = 70 * k, 20 * k, 118 * k, 58 * k, 22 * k
        panel_w = (w - left - right - gap * (layers - 1)) / max(layers, 1)
        panels = tuple((round(left + i * (panel_w + gap)), round(top), round(left + i * (panel_w + gap) + panel_w),
                        round(h - bottom)) for i in range(layers))
        return cls(w, h, k, panels)


def _background(anim: HistogramAnimation, lay: _Layout) -> Image.Image:
    """Everything that stays the same on every frame: legend, panel titles, grid, axes, ticks."""
    from PIL import Image, ImageDraw

    k = lay.k
    img = Image.new("RGB", (lay.width, lay.height), "white")
    d = ImageDraw.Draw(img)
    small, medium = _font(round(12 * k)), _font(round(14 * k))
    x_lo, x_hi = anim.x_range
    y_ticks = nice_ticks(0.0, anim.y_max, 5)
    x_ticks = nice_ticks(x_lo, x_hi, 5)
    # legend: a swatch and a label per run, right-aligned on the title's line
    x = lay.width - 20 * k
    for r in reversed(range(len(anim.runs))):
        text_w = d.textlength(anim.runs[r], font=medium)
        x -= text_w
        d.text((x, 22 * k), anim.runs[r], font=medium, fill=INK)
        x -= 20 * k
        d.rectangle((x, 24 * k, x + 14 * k, 38 * k), fill=_blend((255, 255, 255), _rgb(color(r)), BAR_ALPHA))
        x -= 18 * k
    for i, (l, t, r, b) in enumerate(lay.panels):
        d.text(((l + r) / 2, t - 26 * k), anim.layer_names[i], font=medium, fill=INK, anchor="ms")
        for v in y_ticks:
            y = b - v / anim.y_max * (b - t)
            d.line((l, y, r, y), fill=GRID, width=max(1, round(k)))
            if i == 0:
                d.text((l - 6 * k, y), f"{v:.0%}" if anim.y_max >= 0.05 else f"{v:.1%}", font=small, fill=INK,
                       anchor="rm")
        for v in x_ticks:
            x = l + (v - x_lo) / (x_hi - x_lo) * (r - l)
            d.line((x, t, x, b), fill=GRID, width=max(1, round(k)))
            d.text((x, b + 6 * k), _label(v), font=small, fill=INK, anchor="mt")
        d.line((l, b, r, b), fill=AXIS, width=max(1, round(1.5 * k)))
        d.text(((l + r) / 2, b + 26 * k), "value", font=small, fill=MUTED, anchor="mt")
    d.text((8 * k, lay.panels[0][1] - 10 * k), "share of values", font=small, fill=MUTED, anchor="ls")
    if anim.absent:
        d.text((20 * k, 62 * k), f"{', '.join(anim.absent)}: no {TAP_LABELS[anim.tap]} (this network has no such "
               "layer)", font=small, fill=MUTED)
    return img


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _blend(under: tuple[int, int, int], over: tuple[int, int, int], alpha: float) -> tuple[int, int, int]:
    return tuple(round(u * (1 - alpha) + o * alpha) for u, o in zip(under, over))  # type: ignore[return-value]


def _bar_heights(shares: np.ndarray, edges: np.ndarray, x_lo: float, x_hi: float, width: int,
                 y_max: float, height: int) -> np.ndarray:
    """Bar height in pixels at each pixel column of a plot area ``width`` wide: the share of the
    bin that column's centre falls in (bins [e_j, e_j+1), the last closed), 0 outside the bins."""
    centres = x_lo + (np.arange(width) + 0.5) / width * (x_hi - x_lo)
    j = np.searchsorted(edges, centres, side="right") - 1
    j[centres == edges[-1]] = len(edges) - 2
    inside = (j >= 0) & (j < len(edges) - 1)
    heights = np.zeros(width)
    heights[inside] = shares[j[inside]]
    return heights / y_max * height


def frames(anim: HistogramAnimation, *, size: tuple[int, int] = SIZE, presentation: bool = False) -> list[Image.Image]:
    """One RGB image per step of ``anim``: the bars of every run in every layer panel, overlaid with
    ``BAR_ALPHA`` as in the figure, on the same axes; the step in the title and as a progress bar."""
    from PIL import Image, ImageDraw

    k = PRESENTATION_SCALE if presentation else 1.0
    lay = _Layout.of(len(anim.layer_names), size, k)
    base = np.asarray(_background(anim, lay)).copy()
    x_lo, x_hi = anim.x_range
    colours = [np.asarray(_rgb(color(r)), dtype=np.float64) for r in range(len(anim.runs))]
    big, small = _font(round(20 * k)), _font(round(12 * k))
    out = []
    for f, step in enumerate(anim.steps):
        pixels = base.copy()
        for layer, (l, t, r, b) in enumerate(lay.panels):
            area = pixels[t:b, l:r].astype(np.float64)
            rows_from_bottom = (b - t) - 0.5 - np.arange(b - t)
            for run in range(len(anim.runs)):
                heights = _bar_heights(anim.shares[f, run, layer], anim.edges[run], x_lo, x_hi, r - l,
                                       anim.y_max, b - t)
                covered = rows_from_bottom[:, None] < heights[None, :]
                area[covered] = area[covered] * (1 - BAR_ALPHA) + colours[run] * BAR_ALPHA
            pixels[t:b, l:r] = area.round().astype(np.uint8)
        img = Image.fromarray(pixels)
        d = ImageDraw.Draw(img)
        d.text((20 * k, 18 * k), f"{anim.title}, step {step}", font=big, fill=INK)
        # progress through training: how far this frame's step is along the run
        y = 52 * k
        d.line((20 * k, y, lay.width - 20 * k, y), fill=GRID, width=max(2, round(3 * k)))
        d.line((20 * k, y, 20 * k + (lay.width - 40 * k) * step / max(anim.last_step, 1), y), fill=INK,
               width=max(2, round(3 * k)))
        notes = [f"{run}: step {anim.shown[f, i]}, its last recorded" for i, run in enumerate(anim.runs)
                 if anim.shown[f, i] != step]
        if notes:
            d.text((20 * k, 62 * k), "; ".join(notes), font=small, fill=MUTED)
        for layer, (l, t, r, _) in enumerate(lay.panels):
            beyond = [f"{run}: {anim.outside[f, i, layer]:.1%} outside" for i, run in enumerate(anim.runs)
                      if anim.outside[f, i, layer] >= 0.001]
            for line, text in enumerate(beyond):
                d.text(((l + r) / 2, t + 4 * k + line * 15 * k), text, font=small, fill=MUTED, anchor="mt")
        out.append(img)
    return out


# ----- encoding -----------------------------------------------------------------------------------
def _some_frames(anim: HistogramAnimation, size: tuple[int, int], presentation: bool) -> list[Image.Image]:
    if not anim.steps:
        raise ValueError("nothing to animate: the runs have no recorded step yet")
    return frames(anim, size=size, presentation=presentation)


def gif(anim: HistogramAnimation, *, size: tuple[int, int] = SIZE, presentation: bool = False,
        fps: float = FPS, hold_s: float = HOLD_S) -> bytes:
    """An animated GIF, one frame per step of ``anim`` at ``fps``, looping, the last frame held
    ``hold_s`` seconds."""
    images = _some_frames(anim, size, presentation)
    # One palette for all frames (from the frame with the most bars' colours: the last), so a
    # colour never flickers between frames; the figure uses far fewer than its 256 colours.
    palette = images[-1].quantize(colors=256, method=0)
    paletted = [im.quantize(palette=palette, dither=0) for im in images]
    durations = [round(1000 / fps)] * len(paletted)
    durations[-1] = max(durations[-1], round(hold_s * 1000))
    buffer = io.BytesIO()
    paletted[0].save(buffer, format="GIF", save_all=True, append_images=paletted[1:], duration=durations,
                     loop=0, optimize=False, disposal=1)
    return buffer.getvalue()


def mp4_available() -> bool:
    """Whether :func:`mp4` can encode: imageio-ffmpeg installed with its ffmpeg binary."""
    try:
        import imageio_ffmpeg
        return os.path.isfile(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return False


def mp4(anim: HistogramAnimation, *, size: tuple[int, int] = SIZE, presentation: bool = False,
        fps: float = FPS) -> bytes:
    """An H.264 MP4 (yuv420p, which every player and slide program plays), exactly one video frame
    per step of ``anim`` at ``fps``. Raises :class:`EncoderUnavailable` without imageio-ffmpeg."""
    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"an MP4 frame needs an even width and height, not {size[0]}x{size[1]}")
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise EncoderUnavailable("MP4 export needs the imageio-ffmpeg package (pip install imageio-ffmpeg), "
                                 "which ships an ffmpeg binary; the GIF needs nothing more.") from exc
    images = _some_frames(anim, size, presentation)
    with tempfile.TemporaryDirectory(prefix="bnviz-mp4-") as folder:
        path = os.path.join(folder, "animation.mp4")
        # macro_block_size=2: keep the size (ffmpeg's default of 16 would rescale 540 to 544 rows);
        # faststart: the index first, so a browser or a slide plays it before it has all of it.
        writer = imageio_ffmpeg.write_frames(path, size, fps=fps, codec="libx264", pix_fmt_in="rgb24",
                                             pix_fmt_out="yuv420p", macro_block_size=2, quality=8,
                                             output_params=["-movflags", "+faststart"], ffmpeg_log_level="error")
        writer.send(None)
        for im in images:
            writer.send(np.ascontiguousarray(np.asarray(im)))
        writer.close()
        with open(path, "rb") as f:
            return f.read()
