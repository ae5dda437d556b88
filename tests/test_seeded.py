"""Seed summaries of the issue-17 views: bnviz.seeds' numbers from per-seed values, and the cap."""
import numpy as np
import pytest

from bnviz.views import seeded


def test_summary_pairs_by_seed():
    """b = a - 0.05 at every seed: the paired difference is exactly 5 points (no spread), while the
    two arms' own intervals are wide; a t-interval by hand for the headline."""
    a = [0.90, 0.80, 0.85]          # its interval within 0..100 % (past it, see test_seeds)
    b = [x - 0.05 for x in a]
    summary = seeded.summarize({"A": a, "B": b}, [3, 4, 5], [("A", "B")])
    assert summary.verdicts == ["A ahead by 5.0 points (95 % CI 5.0 to 5.0) over 3 seeds"]
    half = 4.302652729911275 * np.std(np.array(a) * 100, ddof=1) / np.sqrt(3)     # t_{0.975, 2}
    assert summary.headlines["A"] == f"{np.mean(a) * 100:.1f} % ± {half:.1f}"
    assert summary.intervals["B"].mean == pytest.approx(np.mean(b) * 100)
    text = seeded.markdown(summary)
    assert "Across 3 seeds" in text and "seed 3 (the sidebar's seed)" in text


def test_seed_list_is_capped_with_a_note():
    assert seeded.seed_list(7, 3, 6) == ([7, 8, 9], None)
    seeds, note = seeded.seed_list(0, 20, 24)
    assert seeds == [0, 1] and "2 seed(s) instead of 20" in note
    assert seeded.seed_list(0, 5, 100)[0] == [0]
