"""The four issue-16 views through the export command (CSV only, short runs): every figure written."""
import io

import pytest

from bnviz import cli


@pytest.mark.timeout(900)
@pytest.mark.parametrize("page,figures", [
    ("residual", ["branch-and-skip-variance-at-initialization.csv", "branch-over-skip-during-training.csv",
                  "residual-training-curves.csv"]),
    ("depth", ["gradient-growth-over-training-steps.csv", "gradient-norm-per-layer-after-training-steps.csv",
               "gradient-norm-per-layer-at-initialization.csv"]),
    ("transformer", ["layernorm-input-vs-output.csv", "layernorm-vs-rmsnorm-on-one-vector.csv",
                     "training-with-and-without-warm-up.csv", "transformer-gradients-at-initialization.csv"]),
    ("shared", ["which-values-share-statistics.csv"]),
])
def test_export_writes_every_figure(tmp_path, page, figures):
    stream = io.StringIO()
    status = cli.main(["export", "--out", str(tmp_path), "--page", page, "--no-png", "--config", "?steps=20"], stream)
    assert status == 0, stream.getvalue()
    assert sorted(p.name for p in (tmp_path / page).iterdir()) == sorted(figures)
