"""bnviz.seeds against independent oracles: printed t tables, scipy, Monte-Carlo draws of t and
coverage of the interval on simulated normal data, numpy per-step statistics."""
import math

import numpy as np
import pytest

from bnviz import seeds
from bnviz.config import Config

# Two-sided 95 % critical values, t_{0.975, df}, from any printed t table.
TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 7: 2.365, 9: 2.262, 14: 2.145, 19: 2.093, 30: 2.042}


@pytest.mark.parametrize("df,expected", sorted(TABLE.items()))
def test_t_quantile_matches_printed_table(df, expected):
    assert seeds.t_quantile(0.975, df) == pytest.approx(expected, abs=6e-4)


def test_t_quantile_matches_scipy_everywhere_it_is_used():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, seeds.MAX_SEEDS):
        for p in (0.5, 0.6, 0.9, 0.975, 0.995, 0.025):
            assert seeds.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9, abs=1e-12)
            assert seeds.t_cdf(stats.t.ppf(p, df), df) == pytest.approx(p, abs=1e-12)


@pytest.mark.parametrize("df", [1, 3, 8])
def test_t_quantile_against_monte_carlo_draws_of_t(df):
    rng = np.random.default_rng(df)
    n = 400_000
    t = rng.standard_normal(n) / np.sqrt(rng.chisquare(df, n) / df)  # the definition of Student's t
    q = seeds.t_quantile(0.975, df)
    share = np.mean(t <= q)
    assert share == pytest.approx(0.975, abs=4 * math.sqrt(0.975 * 0.025 / n))


def test_regularized_beta_against_a_closed_form():
    # I_x(a, 1) = x^a and I_x(1, b) = 1 - (1 - x)^b
    for x in (0.01, 0.3, 0.77, 0.99):
        assert seeds.regularized_beta(2.5, 1.0, x) == pytest.approx(x ** 2.5, rel=1e-12)
        assert seeds.regularized_beta(1.0, 3.5, x) == pytest.approx(1 - (1 - x) ** 3.5, rel=1e-12)


@pytest.mark.parametrize("n", [2, 5, 8])
def test_interval_covers_the_true_mean_95_percent_of_the_time(n):
    rng = np.random.default_rng(100 + n)
    reps, true_mean = 4000, 3.0
    hits = 0
    for _ in range(reps):
        iv = seeds.mean_interval(rng.normal(true_mean, 2.0, n))
        hits += iv.low <= true_mean <= iv.high
    assert hits / reps == pytest.approx(0.95, abs=4 * math.sqrt(0.95 * 0.05 / reps))


def test_mean_interval_is_mean_plus_minus_t_s_over_root_n_by_numpy():
    x = np.array([0.975, 0.962, 0.981, 0.955, 0.978, np.nan])  # a diverged run: NaN, left out
    finite = x[np.isfinite(x)]
    iv = seeds.mean_interval(x)
    half = TABLE[4] * finite.std(ddof=1) / math.sqrt(5)
    assert iv.n == 5
    assert iv.mean == pytest.approx(finite.mean())
    assert (iv.low, iv.high) == pytest.approx((finite.mean() - half, finite.mean() + half), rel=3e-4)  # the table has 3 decimals


def test_one_value_has_no_interval():
    iv = seeds.mean_interval([0.9])
    assert iv.mean == 0.9 and math.isnan(iv.low) and math.isnan(iv.high)
    assert seeds.headline([0.9]) == "90.0 %"


def test_a_headline_interval_past_the_possible_range_is_shown_cut_to_it():
    """Two seeds at 95 % and 57.8 %: t(0.975, 1) = 12.706 makes the interval mean ± 236 points,
    which a headline "76.4 % ± 236.3" would name; with an accuracy's bounds it shows the ends cut
    to 0 and 100 instead.
    An interval inside the range keeps the ± form (scipy's t quantile as the oracle)."""
    from scipy import stats
    wide = [0.95, 0.578]
    half = stats.t.ppf(0.975, 1) * np.std(wide, ddof=1) / math.sqrt(2) * 100
    assert np.mean(wide) * 100 + half > 100 and np.mean(wide) * 100 - half < 0
    assert seeds.headline(wide, bounds=seeds.ACCURACY) == f"{np.mean(wide) * 100:.1f} % (95 % CI 0.0 to 100.0)"
    high = [0.99, 0.999, 0.97]          # only the upper end passes 100 %
    half = stats.t.ppf(0.975, 2) * np.std(high, ddof=1) / math.sqrt(3) * 100
    assert np.mean(high) * 100 + half > 100 > np.mean(high) * 100 - half > 0
    assert seeds.headline(high, bounds=seeds.ACCURACY) == (f"{np.mean(high) * 100:.1f} % (95 % CI "
                                                          f"{np.mean(high) * 100 - half:.1f} to 100.0)")
    narrow = [0.91, 0.92, 0.915]
    half = stats.t.ppf(0.975, 2) * np.std(narrow, ddof=1) / math.sqrt(3) * 100
    assert seeds.headline(narrow, bounds=seeds.ACCURACY) == f"{np.mean(narrow) * 100:.1f} % ± {half:.1f}"
    assert seeds.headline(wide).startswith(f"{np.mean(wide) * 100:.1f} % ± ")     # no bounds: not cut


def test_paired_interval_is_narrower_than_separate_ones_when_seeds_move_both():
    rng = np.random.default_rng(7)
    seed_effect = rng.normal(0, 1.0, 8)            # what a seed does to both networks
    a = 97.0 + seed_effect + rng.normal(0, 0.1, 8)
    b = 96.5 + seed_effect + rng.normal(0, 0.1, 8)
    diff = seeds.paired_difference(a, b)
    d = a - b
    assert diff.mean == pytest.approx(d.mean())
    assert diff.half_width == pytest.approx(TABLE[7] * d.std(ddof=1) / math.sqrt(8), rel=3e-4)  # the table has 3 decimals
    assert diff.low > 0  # the seeds' shared noise cancels: 0.5 points is detected
    separate = seeds.mean_interval(a).half_width + seeds.mean_interval(b).half_width
    assert diff.half_width < separate / 3


def test_verdict_wording():
    ahead = seeds.Interval(0.6, 0.1, 1.1, 8)
    assert seeds.verdict("BN", "no BN", ahead) == "BN ahead by 0.6 points (95 % CI 0.1 to 1.1) over 8 seeds"
    behind = seeds.Interval(-0.6, -1.1, -0.1, 8)
    assert seeds.verdict("no BN", "BN", behind) == "BN ahead by 0.6 points (95 % CI 0.1 to 1.1) over 8 seeds"
    none = seeds.Interval(0.2, -0.4, 0.8, 5)
    line = seeds.verdict("BN", "no BN", none)
    assert "no difference detectable over 5 seeds (-0.4 to 0.8" in line and "BN minus no BN" in line


def test_a_verdict_names_diverged_seeds_rather_than_asking_for_more():
    one = seeds.paired_difference([0.9], [0.8])
    assert seeds.verdict("BN", "no BN", one) == "BN vs no BN: one seed, no interval (choose 2 seeds or more for a verdict)"
    nan = float("nan")
    for a, b, some in (([0.9, 0.91, 0.92], [nan, nan, nan], "none"), ([0.9, 0.91, 0.92], [0.8, nan, nan], "only 1")):
        diff = seeds.paired_difference(a, b)
        assert (diff.n, diff.given) == (3 - len([v for v in b if v != v]), 3)
        assert seeds.verdict("BN", "no BN", diff) == (f"BN vs no BN: no verdict, {some} of the 3 seeds gave both a "
                                                     "value (a run that diverged gives none)")
    assert seeds.paired_difference([0.9, 0.91, 0.92], [0.8, nan, 0.82]).scaled(100.0).given == 3


class _Eval:
    def __init__(self, acc):
        self.test_acc = acc


class _History:
    """What summarize reads of a History: whether it finished, and its evaluations."""

    def __init__(self, acc, finished=True):
        self.finished, self.evals = finished, [_Eval(0.1), _Eval(acc)]


def test_summary_of_runs_over_seeds_in_points():
    a, b = [0.97, 0.975, 0.98, 0.972], [0.95, 0.956, 0.96, 0.951]
    histories = {"with BN": [_History(x) for x in a],
                 "without BN": [_History(x) for x in b[:3]] + [_History(0.2, finished=False)]}  # diverged
    summary = seeds.summarize(histories, seeds=[0, 1, 2, 3])
    [line] = summary.verdicts
    d = (np.array(a[:3]) - np.array(b[:3])) * 100   # the diverged seed drops out of the pairs
    assert line.startswith(f"with BN ahead by {d.mean():.1f} points")
    assert line.endswith("over 3 seeds")
    half = TABLE[3] * np.std(np.array(a) * 100, ddof=1) / 2
    assert summary.headlines["with BN"] == f"{np.mean(a) * 100:.1f} % ± {half:.1f}"
    assert "4 seeds (0 to 3)" in summary.caption and "t-interval" in summary.caption


def test_band_matches_numpy_per_step_and_leaves_out_a_run_that_stopped():
    rng = np.random.default_rng(3)
    steps = np.arange(0, 100, 10)
    values = rng.normal(size=(4, len(steps)))
    curves = [(steps, values[i]) for i in range(3)] + [(steps[:4], values[3, :4])]  # the 4th diverged at 40
    b = seeds.band(curves)
    np.testing.assert_array_equal(b.steps, steps)
    np.testing.assert_array_equal(b.n, [4] * 4 + [3] * 6)
    for j in range(len(steps)):
        col = values[: b.n[j], j]
        half = TABLE[b.n[j] - 1] * col.std(ddof=1) / math.sqrt(b.n[j])
        assert b.mean[j] == pytest.approx(col.mean())
        assert (b.low[j], b.high[j]) == pytest.approx((col.mean() - half, col.mean() + half), rel=3e-4)


def test_an_accuracy_band_is_cut_to_0_and_1_where_it_reaches_past_them():
    """Two seeds of accuracies near 1 and near 0: scipy's t-interval reaches past both ends; the band
    with an accuracy's bounds is that interval cut to [0, 1], the mean untouched, one seed NaN."""
    from scipy import stats
    steps = np.array([0, 10, 20])
    a, b = np.array([0.10, 0.95, 0.99]), np.array([0.02, 0.80, 0.93])
    plain = seeds.band([(steps, a), (steps, b)])
    cut = seeds.band([(steps, a), (steps, b)], bounds=seeds.ACCURACY)
    pair = np.stack([a, b])
    half = stats.t.ppf(0.975, 1) * pair.std(axis=0, ddof=1) / math.sqrt(2)
    np.testing.assert_allclose(plain.low, pair.mean(axis=0) - half)
    assert (plain.low < 0).any() and (plain.high > 1).any()          # what the bounds are for
    np.testing.assert_allclose(cut.low, np.clip(pair.mean(axis=0) - half, 0, 1))
    np.testing.assert_allclose(cut.high, np.clip(pair.mean(axis=0) + half, 0, 1))
    np.testing.assert_array_equal(cut.mean, plain.mean)
    one = seeds.band([(steps, a)], bounds=seeds.ACCURACY)
    assert np.isnan(one.low).all() and np.isnan(one.high).all()


def test_expand_gives_every_label_every_seed_first_seed_first():
    configs = {"with BN": Config(seed=5), "without BN": Config(seed=5, norm="none")}
    flat = seeds.expand(configs, 3)
    assert list(flat)[:2] == ["with BN", "without BN"]          # the page's own runs first
    assert flat["without BN (seed 7)"] == Config(seed=7, norm="none")
    assert sorted(c.seed for c in flat.values()) == [5, 5, 6, 6, 7, 7]
    assert seeds.expand(configs, 1) == configs


def test_a_summary_of_one_finished_seed_says_one_seed():
    # a 20-seed run stopped after its first seed: what is shown must not read "Across 1 seeds"
    from bnviz.seeds import SeedSummary, count
    one = SeedSummary(seeds=(7,), headlines={}, intervals={}, verdicts=[])
    assert one.title == "Across 1 seed" and "over 1 seed (7):" in one.caption and "1 seeds" not in one.caption
    three = SeedSummary(seeds=(0, 1, 2), headlines={}, intervals={}, verdicts=[])
    assert three.title == "Across 3 seeds" and "over 3 seeds (0 to 2):" in three.caption
    assert count(1) == "1 seed" and count(2) == "2 seeds"
