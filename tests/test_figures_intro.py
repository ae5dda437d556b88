"""The home page's picture of BatchNorm on one batch, against torch's own BatchNorm1d and numpy."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bnviz.figures import intro


def test_standardize_matches_torch_batchnorm_on_one_feature():
    x = intro.example_batch(64, seed=3)
    got = intro.standardize(x, gamma=1.5, beta=0.5)
    bn = torch.nn.BatchNorm1d(1, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.fill_(1.5)
        bn.bias.fill_(0.5)
    want = bn(torch.from_numpy(x).view(-1, 1)).detach().view(-1).numpy()
    np.testing.assert_allclose(got.y, want, rtol=1e-12, atol=1e-12)
    assert abs(got.x_hat.mean()) < 1e-12 and got.x_hat.std() == pytest.approx(1.0, abs=1e-5)
    assert got.y.mean() == pytest.approx(0.5) and got.y.std() == pytest.approx(1.5, abs=1e-5)


def test_figure_shows_the_three_stages_with_their_statistics():
    fig = intro.standardization_figure()
    assert [t.type for t in fig.data] == ["histogram"] * 3
    b = intro.standardize(intro.example_batch(), gamma=1.5, beta=0.5)
    for trace, values in zip(fig.data, (b.x, b.x_hat, b.y)):
        np.testing.assert_array_equal(np.asarray(trace.x), values)
    notes = [a.text for a in fig.layout.annotations if a.text.startswith("mean")]
    skew = [float(n.split("skewness ")[1]) for n in notes]
    # the shape is kept: the same skewness (positive: a gamma sample) in all three panels
    assert len(set(skew)) == 1 and skew[0] > 0.5
    assert notes[1].startswith("mean 0.00<br>std 1.00") and notes[2].startswith("mean 0.50<br>std 1.50")


def test_intro_figure_needs_no_torch():
    # The home page draws it, then waits for the browser to draw it, before importing torch: all it
    # imports until then (app.py's first imports) must leave torch out.
    code = ("import sys; from bnviz.figures import intro; import bnviz.export, bnviz.ui_first_paint; "
            "intro.standardization_figure(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
