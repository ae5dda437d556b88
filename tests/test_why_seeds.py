"""Parts 2 and 3 of the Why-BN-helps page over several seeds: the loss landscape's and the noisy-BN
curves get bands, their numbers mean ± interval and paired verdicts; one seed changes nothing.

Oracles: every run is trained here directly (``why.landscape_run``, ``why.noisy_job`` seed by seed,
not through the page's job lists), and the statistics are numpy's mean and standard deviation with
scipy's t quantile, on the per-seed values computed here.
"""
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from bnviz.figures import why as why_figs
from bnviz.views import why

stats = pytest.importorskip("scipy.stats")

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(ROOT / "pages/8_Why_BN_helps.py")
CONFIG = why.DEFAULT.replace(steps=100, depth=2)   # the page's config at ?steps=100&depth=2
SEEDS = (0, 1, 2)
SETTINGS = why.Settings()                           # step_max 4, noise shift 1, scale 2: the page's defaults
LABELS = ("with BN", "without BN")


@pytest.fixture(scope="module")
def direct():
    """Every probed and noisy network at each seed, trained here one by one."""
    landscapes = {label: [why.landscape_run(why.variants(CONFIG.replace(seed=s))[label], SETTINGS.step_max)
                          for s in SEEDS] for label in LABELS}
    noisy = [why.noisy_job(CONFIG.replace(seed=s), SETTINGS.noise_shift, SETTINGS.noise_scale) for s in SEEDS]
    return landscapes, noisy


def t_interval(values) -> tuple[float, float, float]:
    """(mean, low, high): the 95 % Student t-interval of the mean, by numpy and scipy."""
    x = np.asarray(values, dtype=np.float64)
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return x.mean(), x.mean() - half, x.mean() + half


def headline_text(mean: float, low: float, high: float) -> str:
    """An accuracy headline in percent: mean ± half-width, or the interval's ends cut to 0 and 100
    when it reaches past them."""
    if 0 <= low and high <= 100:
        return f"{mean:.1f} % ± {(high - low) / 2:.1f}"
    return f"{mean:.1f} % (95 % CI {max(low, 0):.1f} to {min(high, 100):.1f})"


def median(run, name: str) -> float:
    return float(np.median([getattr(p, name) for p in run.probes]))


def trace(fig, name: str, meta: str, xaxis: str):
    [t] = [t for t in fig.data if t.name in (name, f"{name}: 95 % CI") and t.meta == meta and t.xaxis == xaxis]
    return t


def test_jobs_list_every_network_seed_by_seed_and_one_seed_is_the_single_run_list():
    jobs = why.landscape_jobs(CONFIG, 2.0, 3)
    assert [(cfg.seed, cfg.norm) for cfg, _ in jobs] == [(s, n) for s in SEEDS for n in ("batchnorm", "none")]
    assert why.landscape_jobs(CONFIG, 2.0) == [(cfg, 2.0) for cfg in why.variants(CONFIG).values()]
    assert why.noisy_jobs(CONFIG, 1.0, 2.0) == [(CONFIG, 1.0, 2.0)]
    assert why.by_label(["a0", "b0", "a1", "b1"], ["a", "b"]) == {"a": ["a0", "a1"], "b": ["b0", "b1"]}
    # 15 networks a seed, at most MAX_RUNS (160) runs: 10 seeds, as Page.train would cut them
    assert why.NETWORKS_PER_SEED == 15
    assert why.seeds_within(1, 160) == 1 and why.seeds_within(10, 160) == 10 and why.seeds_within(20, 160) == 10


def test_landscape_bands_are_the_mean_and_t_interval_of_the_seeds(direct):
    landscapes, _ = direct
    fig = why.landscape_figure({k: v[0] for k, v in landscapes.items()}, landscapes)
    for col, name in ((1, "loss_range"), (2, "max_grad_diff"), (3, "beta")):
        axis = "x" if col == 1 else f"x{col}"
        for label, runs in landscapes.items():
            table = np.array([r.series(name)[1] for r in runs])          # seeds x probed steps
            ivs = [t_interval(table[:, j]) for j in range(table.shape[1])]
            line = trace(fig, label, "mean", axis)
            assert np.asarray(line.x).tolist() == [p.step for p in runs[0].probes]
            np.testing.assert_allclose(np.asarray(line.y), [iv[0] for iv in ivs], rtol=1e-12)
            band = trace(fig, label, "band", axis)
            np.testing.assert_allclose(np.asarray(band.y), [iv[2] for iv in ivs] + [iv[1] for iv in ivs][::-1],
                                       rtol=1e-9)


def test_landscape_metrics_are_mean_and_half_interval_and_verdicts_a_paired_t_interval(direct):
    landscapes, _ = direct
    summary = why.landscape_summary(landscapes)
    for name, what in why.LANDSCAPE_METRICS.items():
        med = {label: [median(r, name) for r in runs] for label, runs in landscapes.items()}
        texts, diff, line = summary[name]
        for label in LABELS:
            mean, low, high = t_interval(med[label])
            assert texts[label] == f"{mean:.3g} ± {(high - low) / 2:.2g}"
        d = np.subtract(med["with BN"], med["without BN"])
        mean, low, high = t_interval(d)
        ci = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))   # scipy alone
        assert (diff.mean, diff.low, diff.high) == pytest.approx((mean, low, high), rel=1e-9)
        assert (diff.low, diff.high) == pytest.approx(ci, rel=1e-9)
        assert line.startswith(f"median {what}: ") and "over 3 seeds" in line
        if high < 0:
            assert f"with BN lower by {-mean:.3g} (95 % CI {-high:.3g} to {-low:.3g})" in line
        elif low > 0:
            assert f"without BN lower by {mean:.3g} (95 % CI {low:.3g} to {high:.3g})" in line
        else:
            assert f"no difference detectable over 3 seeds ({low:.3g} to {high:.3g}" in line


def test_noisy_bn_bands_headlines_and_verdicts_over_seeds(direct):
    landscapes, noisy = direct
    over = why.noisy_curves_over_seeds(landscapes, noisy, SETTINGS)
    bn, noisy_label, plain = over
    assert over[bn] == [r.curves for r in landscapes["with BN"]] and over[noisy_label] == noisy
    fig = why.noisy_figure(why.noisy_curves({k: v[0] for k, v in landscapes.items()}, noisy[0], SETTINGS), over)
    acc = {label: np.array([c.test_acc for c in cs]) for label, cs in over.items()}
    for label, table in acc.items():
        line = trace(fig, label, "mean", "x2")
        np.testing.assert_array_equal(np.asarray(line.x), over[label][0].eval_steps)
        np.testing.assert_allclose(np.asarray(line.y), table.mean(axis=0), rtol=1e-12)
        ivs = [t_interval(table[:, j]) for j in range(table.shape[1])]
        band = trace(fig, label, "band", "x2")
        np.testing.assert_allclose(np.asarray(band.y), [min(iv[2], 1) for iv in ivs] + [max(iv[1], 0) for iv in ivs][::-1],
                                   rtol=1e-9)       # cut to an accuracy's range
    headlines, verdicts = why.noisy_summary(over)
    finals = {label: acc[label][:, -1] * 100 for label in acc}
    for label, x in finals.items():
        assert headlines[label] == headline_text(*t_interval(x))
    for line, other in zip(verdicts, (bn, plain)):
        d = finals[noisy_label] - finals[other]
        mean, low, high = t_interval(d)
        assert "over 3 seeds" in line
        if low > 0:
            assert f"noisy BN ahead by {mean:.1f} points (95 % CI {low:.1f} to {high:.1f})" in line
        elif high < 0:
            assert f"ahead by {-mean:.1f} points (95 % CI {-high:.1f} to {-low:.1f})" in line
        else:
            assert f"no difference detectable over 3 seeds ({low:.1f} to {high:.1f} points, noisy BN minus" in line


def test_one_seed_draws_the_single_run_figures(direct):
    landscapes, noisy = direct
    one = {k: v[:1] for k, v in landscapes.items()}
    probed = {k: v[0] for k, v in one.items()}
    assert why.landscape_figure(probed, one).to_json() == why_figs.landscape(probed).to_json()
    curves = why.noisy_curves(probed, noisy[0], SETTINGS)
    over = why.noisy_curves_over_seeds(one, noisy[:1], SETTINGS)
    assert why.noisy_figure(curves, over).to_json() == why_figs.noisy_training(curves).to_json()


def open_page(**query) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=300)
    at.query_params.update({"steps": "100", "depth": "2", **query})
    return at.run()


def test_page_over_two_seeds_shows_the_numbers_of_the_seeds_trained_here_and_one_seed_is_unchanged(direct):
    landscapes, noisy = direct
    at = open_page(seeds="2")
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    for name, what in why.LANDSCAPE_METRICS.items():
        mean, low, high = t_interval([median(r, name) for r in landscapes["with BN"][:2]])
        assert metrics[f"median {what}, with BN"] == f"{mean:.3g} ± {(high - low) / 2:.2g}"
    bn_final = [r.curves.test_acc[-1] * 100 for r in landscapes["with BN"][:2]]
    mean, low, high = t_interval(bn_final)
    assert metrics["final test accuracy, BN"] == headline_text(mean, low, high)
    text = " ".join(m.value for m in at.markdown)
    for what in why.LANDSCAPE_METRICS.values():
        assert f"median {what}: " in text
    assert "noisy BN vs BN" in text or "noisy BN ahead by" in text or "BN ahead by" in text
    assert text.count("over 2 seeds") >= len(why.LANDSCAPE_METRICS) + 2
    captions = " ".join(c.value for c in at.caption)
    assert "Parts 2 and 3 show one seed" not in captions and captions.count("95 % Student t-interval") >= 3

    at = open_page()                                      # one seed: the single-run numbers, no verdicts
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    bn, plain = landscapes["with BN"][0], landscapes["without BN"][0]
    for name, what in why.LANDSCAPE_METRICS.items():
        assert metrics[f"median {what}, with BN"] == f"{median(bn, name):.3g}"
    [delta] = [m.proto.delta for m in at.metric if m.label == "median effective beta (c), with BN"]
    assert delta == f"{median(bn, 'beta') - median(plain, 'beta'):+.3g} vs without BN ({median(plain, 'beta'):.3g})"
    assert metrics["final test accuracy, BN"] == f"{bn.curves.test_acc[-1]:.1%}"
    noisy_label = next(k for k in metrics if k.startswith("final test accuracy, noisy BN"))
    assert metrics[noisy_label] == f"{noisy[0].test_acc[-1]:.1%}"
    text = " ".join(m.value for m in at.markdown)
    assert "over " not in text and "no difference detectable" not in text and "lower by" not in text
