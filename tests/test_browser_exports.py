"""Figures for slides in a real browser: on the Activation histograms page the real download
buttons give a PNG, an SVG, a PDF, a GIF (and an MP4) and the page ZIP, each opened and checked by
its format (magic bytes, size, pages, frames); the Presentation toggle enlarges the charts' text
on screen and goes into the link."""
import io
import re
import xml.etree.ElementTree as ET
import zipfile

import pytest
from PIL import Image

from bnviz import animate
from conftest import png_size, wait_for_charts

pytestmark = pytest.mark.browser

STEPS = 100
RECORDED = len(range(0, STEPS, 20)) + 1          # a snapshot every 20 steps (the default) and the last step
STEMS = ("layer-histograms", "percentile-bands", "histograms-over-training")


def idle(page) -> None:
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", state="attached",
                           timeout=300_000)


def download(page, label: str) -> tuple[str, bytes]:
    """Click the first button named ``label``; the downloaded file's suggested name and bytes."""
    with page.expect_download(timeout=180_000) as info:
        page.get_by_role("button", name=label).first.click()
    with open(info.value.path(), "rb") as f:
        return info.value.suggested_filename, f.read()


def check_svg(data: bytes) -> None:
    root = ET.fromstring(data)
    assert root.tag.rsplit("}", 1)[-1] == "svg" and float(root.get("width")) == 900


def check_pdf(data: bytes) -> None:
    assert data[:5] == b"%PDF-" and data.rstrip().endswith(b"%%EOF") and len(data) > 5000
    assert len(re.findall(rb"/Type\s*/Page(?![s\w])", data)) == 1


def check_gif(data: bytes) -> None:
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF" and gif.n_frames == RECORDED and gif.size == animate.SIZE


@pytest.mark.timeout(900)
def test_every_download_of_the_histograms_page_is_a_real_file_of_its_type(page, app_url):
    page.goto(app_url + f"/Activation_histograms?steps={STEPS}")
    wait_for_charts(page, 3, timeout_ms=300_000)
    idle(page)

    name, png = download(page, "Download PNG")
    assert name == "layer-histograms.png" and png_size(png) == (1800, 920)     # 900 x 460 at scale 2
    name, svg = download(page, "Download SVG")
    assert name == "layer-histograms.svg"
    check_svg(svg)
    name, pdf = download(page, "Download PDF")
    assert name == "layer-histograms.pdf"
    check_pdf(pdf)
    name, gif = download(page, "Download GIF")
    assert name == "layer-histograms-over-training.gif"
    check_gif(gif)
    if animate.mp4_available():
        name, mp4 = download(page, "Download MP4")
        assert name == "layer-histograms-over-training.mp4" and mp4[4:8] == b"ftyp"

    name, data = download(page, "Download all (ZIP)")
    assert name == "bnviz-histograms.zip"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == sorted(
            [f"{s}.{ext}" for s in STEMS for ext in ("png", "svg", "pdf", "csv")]
            + ["layer-histograms-over-training.gif", "README.txt"])
        for stem in STEMS:
            assert png_size(archive.read(f"{stem}.png"))[0] == 1800
            check_svg(archive.read(f"{stem}.svg"))
            check_pdf(archive.read(f"{stem}.pdf"))
            assert archive.read(f"{stem}.csv").startswith(b"trace,x,y")
        check_gif(archive.read("layer-histograms-over-training.gif"))


def title_px(page) -> float:
    """The font size of the first chart's title as the browser draws it."""
    return float(page.locator(".js-plotly-plot .gtitle").first.evaluate("e => parseFloat(getComputedStyle(e).fontSize)"))


@pytest.mark.timeout(900)
def test_presentation_enlarges_the_charts_and_goes_into_the_link(page, app_url):
    page.goto(app_url + f"/Activation_histograms?steps={STEPS}")
    wait_for_charts(page, 3, timeout_ms=300_000)
    idle(page)
    before = title_px(page)
    page.get_by_text("Presentation", exact=True).click()
    page.wait_for_url(re.compile(r"presentation=1"))
    # The chart is redrawn after the click: between the old and the new one there is no title.
    page.wait_for_function(f"(() => {{ const t = document.querySelector('.js-plotly-plot .gtitle');"
                           f" return t !== null && parseFloat(getComputedStyle(t).fontSize) > {before * 1.5}; }})()",
                           timeout=120_000)
    idle(page)
    name, svg = download(page, "Download SVG")
    sizes = [float(s) for s in re.findall(rb"font-size:\s*([\d.]+)px", svg)]
    assert max(sizes) > before * 1.5                 # the export is the enlarged chart too
