"""Figures for slides: SVG and PDF beside PNG (one batch per call), the presentation style, and
animations of the recorded histograms (GIF with Pillow, MP4 with imageio-ffmpeg's ffmpeg).

Oracles: the file formats' own structure (XML with an <svg> root, PDF objects, GIF frames read
back by Pillow, the MP4's ftyp box and the frames ffmpeg decodes); plotly.js's own resolution of
every default size (``full_figure_for_development``) for the presentation style; numpy's
histogram of the very samples for the bars drawn in each animation frame.
"""
import copy
import html
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
import pytest
import torch
from PIL import Image

from bnviz import animate, export
from bnviz.config import Config
from bnviz.export import CHROMIUM_HELP, chromium_path, figure_csv, figure_image, figure_images, presentation
from bnviz.figures import activations
from bnviz.record import Snapshot, Thinned, new_history, tap_stats

needs_browser = pytest.mark.skipif(chromium_path() is None, reason=CHROMIUM_HELP)
TAP = "pre_activation"


def titled(title: str) -> go.Figure:
    return go.Figure(go.Scatter(y=[1, 3, 2], name="loss"), layout=dict(title=title, width=640, height=360))


def svg_root(data: bytes) -> ET.Element:
    root = ET.fromstring(data)
    assert root.tag.rsplit("}", 1)[-1] == "svg"
    return root


def svg_text(root: ET.Element) -> str:
    return " ".join("".join(el.itertext()) for el in root.iter() if el.tag.endswith("text"))


def pdf_pages(data: bytes) -> list[tuple[float, float]]:
    """The (width, height) of each page object: ``/Type /Page`` (not ``/Pages``) with its MediaBox."""
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    pages = re.findall(rb"/Type\s*/Page(?![s\w])", data)
    boxes = [tuple(map(float, m)) for m in re.findall(rb"/MediaBox\s*\[\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", data)]
    return [(x1 - x0, y1 - y0) for (x0, y0, x1, y1) in boxes[:len(pages)]]


# --- SVG and PDF -------------------------------------------------------------------------------


@needs_browser
@pytest.mark.timeout(300)
def test_svg_is_xml_with_the_figure_at_its_size_and_pdf_has_one_page():
    fig = titled("loss of run seven")
    svg = svg_root(figure_image(fig, "svg"))
    assert (float(svg.get("width")), float(svg.get("height"))) == (640, 360)
    assert "loss of run seven" in svg_text(svg)
    pdf = figure_image(fig, "pdf")
    pages = pdf_pages(pdf)
    assert len(pages) == 1 and len(pdf) > 1000
    # Chromium prints the 640 x 360 px page at 96 px per inch, in points (72 per inch).
    assert pages[0] == pytest.approx((640 * 0.75, 360 * 0.75), abs=1.5)


@needs_browser
@pytest.mark.timeout(300)
def test_a_batch_returns_each_image_in_the_order_asked():
    a, b = titled("first figure"), titled("second figure")
    svg_a, png_b, pdf_a, svg_b = figure_images([(a, "svg"), (b, "png"), (a, "pdf"), (b, "svg")], scale=1)
    assert "first figure" in svg_text(svg_root(svg_a)) and "second figure" not in svg_text(svg_root(svg_a))
    assert "second figure" in svg_text(svg_root(svg_b))
    assert png_b[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(io.BytesIO(png_b)).size == (640, 360)
    assert len(pdf_pages(pdf_a)) == 1
    assert figure_images([]) == []
    with pytest.raises(ValueError, match="unknown image format 'bmp'"):
        figure_image(a, "bmp")


# --- presentation ------------------------------------------------------------------------------


def small_histories(steps: int = 60) -> dict:
    from bnviz.train import train
    config = Config(steps=steps, width=16, depth=2, record_every=10, eval_every=20)
    return {"with BN": train(config).history, "without BN": train(config.without_norm()).history}


@pytest.fixture(scope="module")
def plotly_js():
    """kaleido's sync server, which ``full_figure_for_development`` asks plotly.js through."""
    import kaleido
    kaleido.start_sync_server(n=1, path=chromium_path(), mathjax=False, headless=True, enable_sandbox=False,
                              enable_gpu=False, silence_warnings=True)
    yield
    kaleido.stop_sync_server(silence_warnings=True)


def font_sizes(layout) -> dict[str, float]:
    """Every text size plotly.js resolved for the figure: title, legend, axes' ticks and titles,
    annotations (subplot titles, notes)."""
    sizes = {"font": layout.font.size, "title": layout.title.font.size, "legend": layout.legend.font.size}
    for name in dir(layout):
        if re.fullmatch(r"[xy]axis\d*", name) and layout[name] is not None:
            sizes[f"{name}.tick"] = layout[name].tickfont.size
            sizes[f"{name}.title"] = layout[name].title.font.size
    for i, note in enumerate(layout.annotations):
        sizes[f"annotation {i}"] = note.font.size
    return {key: size for key, size in sizes.items() if size is not None}   # None: no such text drawn


@needs_browser
@pytest.mark.timeout(600)
def test_presentation_scales_every_resolved_font_and_line_and_keeps_the_data(plotly_js):
    histories = small_histories()
    scale = export.PRESENTATION_SCALE
    for fig in (activations.training_curves(histories), activations.layer_histograms(histories, 59, TAP),
                activations.percentile_bands(histories, 1, TAP)):
        before = fig.full_figure_for_development(warn=False)
        shown = presentation(fig)
        after = shown.full_figure_for_development(warn=False)
        old, new = font_sizes(before.layout), font_sizes(after.layout)
        assert old.keys() == new.keys() and len(old) >= 5
        for key, size in old.items():
            # plotly.js rounds the sizes it derives (a title is 1.4x the base font): within 1 px
            assert new[key] == pytest.approx(size * scale, abs=1.0), key
        widths = [(t.line.width, u.line.width) for t, u in zip(before.data, after.data) if t.type == "scatter"]
        for w, v in widths:
            assert v == pytest.approx(w * scale)
        assert after.layout.height > before.layout.height
        assert figure_csv(shown) == figure_csv(fig)       # the data are the same
    assert any(w for w, _ in widths)


def test_presentation_leaves_its_argument_alone():
    fig = titled("x")
    fig.update_layout(annotations=[dict(text="note", font=dict(size=11), showarrow=False)])
    before = fig.to_dict()
    out = presentation(fig)
    assert fig.to_dict() == before
    assert out.layout.annotations[0].font.size == pytest.approx(11 * export.PRESENTATION_SCALE)
    assert out.data[0].line.width == pytest.approx(2 * export.PRESENTATION_SCALE)   # plotly.js's default 2


# --- text that fits -----------------------------------------------------------------------------


def test_wrap_text_line_keeps_every_word_in_order_and_every_tag_balanced_on_each_line():
    line = "<b>A long</b> title with <sub>a subscript that runs on for a while</sub> and &amp; more words"
    whole = export.text_width(line, 14)
    for room in (40, 90, 150, 300, whole):
        lines = export.wrap_text_line(line, room, 14)
        visible = [html.unescape(re.sub(r"<[^>]+>", "", x)) for x in lines]
        assert " ".join(visible) == html.unescape(re.sub(r"<[^>]+>", "", line))
        for x, shown in zip(lines, visible):
            assert export.text_width(x, 14) <= room or " " not in shown    # only a single long word may exceed
            for tag in ("b", "sub"):
                assert x.count(f"<{tag}>") == x.count(f"</{tag}>"), (x, room)
        assert (len(lines) == 1) == (room >= whole)


@needs_browser
def test_text_width_is_at_least_what_chromium_draws_and_not_much_more(browser):
    """The estimate against the width Chromium gives the text in plotly's font stack: never short
    (a line estimated to fit does), at most 15 % over."""
    page = browser.new_page()
    try:
        texts = ["Covariance matrices (biased, 1/n): standardization", "(b) without BN: input of one sigmoid",
                 "WWW MMM mmm iii lll 0123456789 %&@", "layer 3 over training, eta = 0.025 ... 0.2"]
        drawn = page.evaluate("""(texts) => texts.map(t => { const s = document.createElement('span');
            s.style.font = '16px "Open Sans", verdana, arial, sans-serif'; s.style.whiteSpace = 'pre';
            s.textContent = t; document.body.appendChild(s); return s.getBoundingClientRect().width; })""", texts)
    finally:
        page.close()
    for text, px in zip(texts, drawn):
        assert px <= export.text_width(text, 16) <= 1.15 * px, (text, px, export.text_width(text, 16))


def test_fit_text_leaves_a_figure_whose_texts_fit_unchanged():
    fig = make_subplots(rows=1, cols=2, subplot_titles=("one", "two"))
    fig.update_layout(title="Short title", legend=dict(orientation="h", y=1.08, yanchor="bottom"))
    spec = fig.to_dict()
    before = copy.deepcopy(spec)
    assert export.fit_text(spec, 900) == 0 and spec == before


def _boxes(browser, spec: dict, width: int) -> dict:
    """Draw ``spec`` with plotly.js in Chromium, ``width`` px wide: the boxes of its title lines,
    subplot titles and legend, and the figure's own box."""
    import plotly
    page = browser.new_page(viewport={"width": width + 100, "height": 2000})
    try:
        page.set_content(f'<div id="fig" style="width:{width}px"></div>')
        page.add_script_tag(path=str(Path(plotly.__file__).parent / "package_data" / "plotly.min.js"))
        return page.evaluate("""async (spec) => {
          const div = document.getElementById('fig');
          await Plotly.newPlot(div, spec.data, {...spec.layout, width: spec.width}, {staticPlot: true});
          const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
          const root = div.getBoundingClientRect();
          return {figure: [root.left, root.top, root.left + spec.width, root.top + (spec.layout.height || 450)],
                  title: [...div.querySelectorAll('.gtitle')].map(box),
                  notes: [...div.querySelectorAll('.annotation-text')].map(box),
                  legend: [...div.querySelectorAll('.legend .bg')].map(box)}; }""",
                             {"data": spec["data"], "layout": spec["layout"], "width": width})
    finally:
        page.close()


def _inside(inner, outer) -> bool:
    return all(i >= o - 1 for i, o in zip(inner[:2], outer[:2])) and all(i <= o + 1 for i, o in zip(inner[2:], outer[2:]))


def _apart(a, b) -> bool:
    return a[2] <= b[0] + 1 or b[2] <= a[0] + 1 or a[3] <= b[1] + 1 or b[3] <= a[1] + 1


LONG_TITLE = ("Covariance matrices (biased, 1/n): standardization keeps the off-diagonal correlation, whitening "
              "makes it the identity, and this title goes on to be longer than any figure is wide")


def long_texts(title: str = LONG_TITLE + "<br><sub>" + LONG_TITLE.lower() + "</sub>",
               legend_above: bool = True) -> go.Figure:
    fig = make_subplots(rows=1, cols=4, subplot_titles=("raw data", "standardized (what BN does)", "PCA-whitened",
                                                        "ZCA-whitened"))
    for col in range(1, 5):
        fig.add_trace(go.Scatter(y=[1, 2, 3], name=f"series {col}"), row=1, col=col)
    legend = dict(orientation="h", x=1, xanchor="right", y=1.08, yanchor="bottom") if legend_above else dict(y=-0.3)
    fig.update_layout(title=dict(text=title, x=0.01), height=460, margin=dict(t=100), legend=legend)
    return fig


@needs_browser
@pytest.mark.parametrize("shown", ["image", "presentation", "subplot titles only, presentation"])
def test_long_titles_and_subplot_titles_fit_the_figure_and_keep_apart(browser, shown, monkeypatch):
    """Checked where plotly.js draws them: before fitting, the title (or, at presentation size, the
    subplot titles) runs off the figure or into each other (the test can fail); after, every line
    lies inside the figure, no subplot title meets another or the title, and the legend meets
    none of them."""
    if shown == "subplot titles only, presentation":    # a title of two lines that fits; its subplot titles do not
        fig = long_texts("Ioffe & Szegedy (2015), Figure 1<br><sub>(b, c): percentiles of one unit</sub>",
                         legend_above=False)
        with monkeypatch.context() as patched:
            patched.setattr(export, "fit_text", lambda *args, **kwargs: 0)
            raw = _boxes(browser, presentation(fig).to_dict(), export.DEFAULT_WIDTH)
        assert not all(_apart(a, b) for i, a in enumerate(raw["notes"]) for b in raw["notes"][i + 1:])
    else:
        fig = long_texts()
        raw = _boxes(browser, fig.to_dict(), export.DEFAULT_WIDTH)
        assert max(b[2] for b in raw["title"]) > raw["figure"][2]          # what the fitting is for
    if shown != "image":
        spec = presentation(fig).to_dict()
    else:
        spec = fig.to_dict()
        grown = export.fit_text(spec, export.DEFAULT_WIDTH)
        assert grown > 0 and spec["layout"]["height"] == 460 + grown
    boxes = _boxes(browser, spec, export.DEFAULT_WIDTH)
    assert boxes["title"] and all(_inside(b, boxes["figure"]) for b in boxes["title"]), boxes
    notes = boxes["notes"]
    assert len(notes) == 4 and all(_inside(b, boxes["figure"]) for b in notes)
    assert all(_apart(a, b) for i, a in enumerate(notes) for b in notes[i + 1:]), notes
    assert all(_apart(a, b) for a in boxes["title"] for b in notes), boxes
    for legend in boxes["legend"]:
        assert all(_apart(legend, b) for b in boxes["title"] + notes), (legend, boxes)


# --- animations --------------------------------------------------------------------------------


EDGES = np.linspace(-4.0, 4.0, 41, dtype=np.float32)   # 40 bins of width 0.2


def sampled_history(steps: list[int], layers: int = 2, seed: int = 0):
    """A History of ``steps`` snapshots whose layer ``l`` at step ``s`` holds 4,000 normal values
    of mean 0 and standard deviation (0.5 + l/2) * (1 + s/steps[-1]): a spreading distribution.
    Returns it and the samples, for numpy's histogram to check against."""
    rng = np.random.default_rng(seed)
    h = new_history(Config(record_every=1), [f"layer {i + 1}" for i in range(layers)], {TAP: EDGES})
    h.snapshots = Thinned(cap=10_000)
    samples = {}
    for s in steps:
        taps = {}
        for layer in range(layers):
            x = rng.normal(0.0, (0.5 + layer / 2) * (1 + s / steps[-1]), size=(200, 20)).astype(np.float32)
            samples[s, layer] = x
            taps[(layer, TAP)] = tap_stats(torch.from_numpy(x), EDGES)
        h.snapshots.add(s, Snapshot(step=s, taps=taps, norms={}))
    return h, samples


def bar_heights(frame: Image.Image, anim: animate.HistogramAnimation, layer: int, size=animate.SIZE) -> np.ndarray:
    """Height in pixels of the bar over the centre of every bin of ``layer``'s panel: the run of
    pixels of the (only) run's bar colour up from the panel's bottom."""
    lay = animate._Layout.of(len(anim.layer_names), size, 1.0)
    l, t, r, b = lay.panels[layer]
    pixels = np.asarray(frame.convert("RGB")).astype(int)
    bar = np.asarray(animate._blend((255, 255, 255), animate._rgb(animate.color(0)), animate.BAR_ALPHA))
    x_lo, x_hi = anim.x_range
    centres = (EDGES[:-1] + EDGES[1:]) / 2
    cols = l + ((centres - x_lo) / (x_hi - x_lo) * (r - l)).astype(int)
    heights = []
    for c in cols:
        column = pixels[t:b, c][::-1]                       # from the bottom up
        is_bar = np.abs(column - bar).max(axis=1) <= 24    # gridlines under a bar tint it a little
        heights.append(np.argmin(is_bar) if not is_bar.all() else len(is_bar))
    return np.asarray(heights), b - t


def test_thin_keeps_first_and_last_and_spreads_evenly():
    steps = list(range(0, 2000, 10))
    kept = animate.thin(steps, 60)
    assert len(kept) == 60 and kept[0] == 0 and kept[-1] == 1990
    gaps = np.diff([steps.index(s) for s in kept])
    assert gaps.max() - gaps.min() <= 1
    assert animate.thin(steps[:7], 60) == steps[:7]


@pytest.mark.timeout(300)
def test_gif_has_one_frame_per_step_and_its_bars_are_numpys_histogram_on_fixed_axes():
    steps = list(range(0, 75 * 4, 4))                      # 75 recorded steps: thinned to 60 frames
    history, samples = sampled_history(steps)
    anim = animate.histogram_animation({"one run": history}, TAP)
    shown = animate.thin(steps, animate.MAX_FRAMES)
    assert list(anim.steps) == shown and len(shown) == 60
    data = animate.gif(anim)
    assert data[:6] == b"GIF89a"
    gif = Image.open(io.BytesIO(data))
    assert gif.n_frames == 60 and gif.size == animate.SIZE
    assert gif.info.get("loop") == 0
    # the same y axis on every frame: the highest bar of the whole animation (numpy's, here)
    shares = {key: np.histogram(x, EDGES)[0] / x.size for key, x in samples.items()}
    y_max = max(shares[s, layer].max() for s in shown for layer in range(2)) * 1.05
    for index in (0, 29, 59):
        gif.seek(index)
        assert gif.info["duration"] == (round(1000 / animate.FPS) if index < 59 else round(animate.HOLD_S * 1000))
        for layer in range(2):
            heights, panel = bar_heights(gif, anim, layer)
            expected = shares[shown[index], layer] / y_max * panel
            np.testing.assert_allclose(heights, expected, atol=1.01)


def test_frames_of_runs_that_ended_early_or_lack_the_tap_say_so():
    long, _ = sampled_history([0, 10, 20, 30])
    short, _ = sampled_history([0, 10])
    anim = animate.histogram_animation({"long": long, "short": short}, TAP)
    assert list(anim.steps) == [0, 10, 20, 30]
    assert anim.shown[:, 1].tolist() == [0, 10, 10, 10]     # its last snapshot, as the figure shows
    missing = animate.histogram_animation({"long": long}, "norm_output")
    assert missing.runs == () and missing.absent == ("long",)
    assert len(animate.frames(missing)) == 4                 # still frames: empty panels, and a note
    nothing = new_history(Config(), ["layer 1"], {TAP: EDGES})
    with pytest.raises(ValueError, match="no recorded step"):
        animate.gif(animate.histogram_animation({"stopped at once": nothing}, TAP))


@pytest.mark.timeout(300)
def test_presentation_frames_are_the_same_size_with_larger_text():
    history, _ = sampled_history([0, 10])
    anim = animate.histogram_animation({"one run": history}, TAP)
    plain, big = animate.frames(anim)[0], animate.frames(anim, presentation=True)[0]
    assert plain.size == big.size == animate.SIZE

    def title_height(img, k):   # rows with dark ink in the title's corner, above the progress bar
        corner = np.asarray(img.convert("L"))[:round(48 * k), :480]
        return int((corner < 120).any(axis=1).sum())
    assert title_height(big, export.PRESENTATION_SCALE) >= 1.4 * title_height(plain, 1.0) > 0


@pytest.mark.skipif(not animate.mp4_available(), reason="imageio-ffmpeg is not installed")
@pytest.mark.timeout(300)
def test_mp4_has_its_ftyp_box_and_exactly_one_frame_per_step(tmp_path):
    import imageio_ffmpeg
    steps = list(range(0, 130, 10))
    history, _ = sampled_history(steps)
    anim = animate.histogram_animation({"one run": history}, TAP)
    data = animate.mp4(anim)
    assert data[4:8] == b"ftyp" and len(data) > 5000
    path = tmp_path / "a.mp4"
    path.write_bytes(data)
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(path))
    assert frames == len(steps)
    assert seconds == pytest.approx(len(steps) / animate.FPS, abs=0.2)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    assert tuple(meta["size"]) == animate.SIZE
    decoded = np.frombuffer(next(reader), dtype=np.uint8).reshape(animate.SIZE[1], animate.SIZE[0], 3)
    reader.close()
    drawn = np.asarray(animate.frames(anim)[0]).astype(int)
    assert np.abs(decoded.astype(int) - drawn).mean() < 4    # lossy, but the same picture
