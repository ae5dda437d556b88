"""`bnviz export` for slides: --animate writes the histograms page's GIF (and MP4), --format writes
SVG and PDF beside PNG, and --presentation (or a link's presentation=1) enlarges the text.

Oracles: the recorder's schedule (a snapshot every ``record_every`` steps and one at the last
step) for the number of frames, Pillow and ffmpeg reading the files back, and the font sizes
written in the SVG files themselves.
"""
import io
import re
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from bnviz import animate, cli, export
from bnviz.export import CHROMIUM_HELP, chromium_path

STEPS, EVERY = 60, 10
LINK = f"?steps={STEPS}&record_every={EVERY}&width=16&depth=2"


def run(*args: str) -> tuple[int, str]:
    stream = io.StringIO()
    return cli.main(["export", *args], stream), stream.getvalue()


@pytest.mark.timeout(600)
def test_animate_writes_a_gif_with_one_frame_per_recorded_step(tmp_path):
    status, err = run("--out", str(tmp_path), "--page", "histograms", "--no-png", "--animate", "--config", LINK)
    assert status == 0, err
    folder = tmp_path / "histograms"
    recorded = list(range(0, STEPS, EVERY)) + [STEPS - 1]          # 0, 10, ..., 50 and the last step, 59
    gif = Image.open(folder / "layer-histograms-over-training.gif")
    assert gif.format == "GIF" and gif.n_frames == len(recorded) and gif.size == animate.SIZE
    assert {p.suffix for p in folder.iterdir()} == ({".csv", ".gif", ".mp4"} if animate.mp4_available()
                                                    else {".csv", ".gif"})
    if animate.mp4_available():
        import imageio_ffmpeg
        mp4 = folder / "layer-histograms-over-training.mp4"
        assert mp4.read_bytes()[4:8] == b"ftyp"
        assert imageio_ffmpeg.count_frames_and_secs(str(mp4))[0] == len(recorded)
    assert "1 GIF" in err and "Traceback" not in err


def svg_font_sizes(path) -> list[float]:
    root = ET.parse(path).getroot()
    assert root.tag.rsplit("}", 1)[-1] == "svg"
    styles = " ".join(el.get("style", "") for el in root.iter() if el.tag.endswith("text"))
    return [float(s) for s in re.findall(r"font-size:\s*([\d.]+)px", styles)]


@pytest.mark.skipif(chromium_path() is None, reason=CHROMIUM_HELP)
@pytest.mark.timeout(900)
def test_formats_and_presentation(tmp_path):
    plain, big = tmp_path / "plain", tmp_path / "big"
    status, err = run("--out", str(plain), "--page", "histograms", "--format", "svg", "pdf", "png",
                      "--config", LINK)
    assert status == 0, err
    status, err = run("--out", str(big), "--page", "histograms", "--format", "svg", "--config", LINK + "&presentation=1")
    assert status == 0, err
    assert "warning" not in err                                     # a display setting: nothing ignored
    stems = ("layer-histograms", "percentile-bands", "histograms-over-training")
    for stem in stems:
        assert (plain / "histograms" / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        assert (plain / "histograms" / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        before = svg_font_sizes(plain / "histograms" / f"{stem}.svg")
        after = svg_font_sizes(big / "histograms" / f"{stem}.svg")
        assert before and max(after) == pytest.approx(max(before) * export.PRESENTATION_SCALE, abs=1)
        assert min(after) == pytest.approx(min(before) * export.PRESENTATION_SCALE, abs=1)
        # the data are the same: the CSVs are identical
        assert (plain / "histograms" / f"{stem}.csv").read_text() == (big / "histograms" / f"{stem}.csv").read_text()
