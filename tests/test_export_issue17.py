"""`bnviz export` writes the issue-17 pages' figures (CSV here; PNG is the same path as every page's)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {"small_batch": 3, "grad_accumulation": 3, "data_parallel": 3, "weight_decay": 2}


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("slug", list(FIGURES))
def test_export_writes_every_figure(tmp_path, slug):
    done = subprocess.run([sys.executable, "-m", "bnviz", "export", "--out", str(tmp_path), "--page", slug,
                           "--no-png", "--config", "?steps=40&width=16&depth=2&eval_every=20"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1100,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    csvs = list(tmp_path.rglob("*.csv"))
    assert len(csvs) >= FIGURES[slug], (done.stdout[-2000:], sorted(p.name for p in tmp_path.rglob("*")))
