"""Running statistics vs momentum: BN's running averages on a known stream, then in a training network."""
import math

import streamlit as st

from bnviz import figures, theory, ui
from bnviz.experiments import streams
from bnviz.views import running

st.set_page_config(page_title="bnviz: running statistics", page_icon="📊", layout="wide")

page = ui.Page(
    "running", "Running statistics vs momentum",
    "BatchNorm normalizes with batch statistics in training and with running averages of them in eval mode. "
    "What to look for: a small momentum averages away batch noise but lags behind the truth (at the start, "
    "and whenever the statistics drift, as they do while the weights train); a large momentum follows quickly "
    "but stays as noisy as a few batches. In the network, a lagging running average shows up as an eval-mode "
    "accuracy below what the same weights reach with their true (population) statistics.")

VIEW_DEFAULTS = {
    "convention": "pytorch", "variance": "unbiased",
    "stream_momenta": running.format_momenta(running.DEFAULT_STREAM_MOMENTA),
    "stream_n": running.DEFAULT_STREAM.batch_size, "stream_batches": running.DEFAULT_STREAM.n_batches,
    "stream_mu": running.DEFAULT_STREAM.mu, "stream_sigma": running.DEFAULT_STREAM.sigma,
    "stream_drift": running.DEFAULT_STREAM.drift, "stream_shift": running.DEFAULT_STREAM.mean_shift,
    "stream_factor": running.DEFAULT_STREAM.std_factor, "stream_seed": running.DEFAULT_STREAM.seed,
    "momenta": running.format_momenta(running.EXTRA_MOMENTA), "layer": 1, "step": 100,
}
# URL name -> StreamSpec field, for the stream settings.
STREAM_FIELDS = {"stream_n": "batch_size", "stream_batches": "n_batches", "stream_mu": "mu",
                 "stream_sigma": "sigma", "stream_drift": "drift", "stream_shift": "mean_shift",
                 "stream_factor": "std_factor", "stream_seed": "seed"}


@st.cache_data(max_entries=64, show_spinner=False)
def stream_figures(spec: streams.StreamSpec, momenta: tuple, convention: str, variance: str) -> dict:
    return running.stream_figures(spec, momenta, convention, variance)


def coerce_stream_settings() -> list[str]:
    """Give each stream control its default, and snap values from a link to what the controls offer."""
    notes = []
    for name, field in STREAM_FIELDS.items():
        key = page.view_value(name, VIEW_DEFAULTS[name])
        value, note = running.coerce_stream_value(field, st.session_state[key])
        if value != st.session_state[key] or type(value) is not type(st.session_state[key]):
            st.session_state[key] = value
        if note:
            notes.append(note)
    return notes


def momenta_control(where, name: str, label: str, options: tuple, help: str) -> list:
    """A multiselect of momenta whose choice the URL keeps as a comma-separated string."""
    text_key = page.view_value(name, VIEW_DEFAULTS[name])
    widget_key = f"running.{name}"
    if widget_key not in st.session_state:
        chosen, notes = running.parse_momenta(st.session_state[text_key])
        st.session_state[widget_key] = chosen
        st.session_state[f"{widget_key}.notes"] = notes
    shown = running.sort_momenta([*options, *st.session_state[widget_key]])
    value = where.multiselect(label, shown, key=widget_key, help=help,
                              format_func=running.momentum_choice)
    for note in st.session_state.get(f"{widget_key}.notes", []):
        where.warning(f"Momenta in the link: {note}.")
    chosen = running.sort_momenta(value)
    st.session_state[text_key] = running.format_momenta(chosen)
    return chosen


intro, part_a, part_b = st.container(), st.container(), st.container()

with ui.guard():
    with part_b:
        st.header("(b) In a training network")
        st.markdown(
            "The same network trains once per momentum (same seed, data and batches). At every evaluation the "
            "**population statistics** of each BN layer's input are recomputed over (up to 1,024 samples of) the "
            "training set with the current weights: the values the running averages try to estimate.")
        config = page.config(running.DEFAULT, main=("momentum", "depth", "width", "activation", "placement"),
                             view=VIEW_DEFAULTS)

    with intro:
        st.subheader("Two conventions for one update rule")
        c1, c2 = st.columns(2)
        c1.markdown("**PyTorch** (`torch.nn.BatchNorm1d(momentum=0.1)`): momentum is the weight of the **new** "
                    "batch statistic.")
        c1.latex(r"\hat\mu \leftarrow (1-m)\,\hat\mu + m\,\mu_B")
        c2.markdown("**Keras / TensorFlow** (`BatchNormalization(momentum=0.99)`): momentum is the weight of the "
                    "**old** value.")
        c2.latex(r"\hat\mu \leftarrow \text{momentum}\,\hat\mu + (1-\text{momentum})\,\mu_B")
        st.markdown("Here mu-hat is the running estimate and mu_B the statistic of the current batch (its mean, or "
                    "its variance for the running variance). So **Keras 0.99 = PyTorch 0.01** and PyTorch's default "
                    "0.1 = Keras 0.9. PyTorch's `momentum=None` uses m = 1/t at the t-th batch: the plain "
                    "(cumulative) average of all batches so far, with no Keras equivalent. torch starts from running "
                    "mean 0 and running variance 1 and accumulates the **unbiased** batch variance (divide by n - 1).")
        convention = page.view_control(st.radio, "convention", "Show momenta in the convention of", running.CONVENTIONS,
                                       format_func=lambda c: {"pytorch": "PyTorch (weight of the new batch)",
                                                              "keras": "Keras (weight of the old value = 1 - m)"}[c],
                                       horizontal=True)

    with part_a:
        st.header("(a) Pure statistics: a stream of batches from a known distribution")
        st.markdown("No network: each batch holds n samples of N(mu, sigma^2), whose mean and standard deviation can "
                    "drift (linearly over the stream, or as a step in the middle), as a layer's input does while "
                    "the weights move. The running estimates are computed exactly as torch's BatchNorm1d does.")
        notes = coerce_stream_settings()
        if notes:
            st.warning("Some stream settings in the link were adjusted: " + "; ".join(notes) + ".")
        top = st.columns([3, 1])
        stream_momenta = momenta_control(
            top[0], "stream_momenta", "Momenta", running.STREAM_MOMENTA,
            "One running estimate per momentum. The URL keeps PyTorch values (0.01 = Keras 0.99).")
        variance = page.view_control(top[1].radio, "variance", "Variance estimator", running.VARIANCES,
                                     horizontal=True,
                                     help="unbiased: divide by n - 1, what torch stores in running_var. biased: "
                                          "divide by n, what BN normalizes with in training.")
        cols = st.columns(4)
        n = page.view_control(cols[0].selectbox, "stream_n", "Batch size n", running.STREAM_OPTIONS["batch_size"],
                              help="Samples per batch: the batch mean's variance is sigma^2 / n.")
        n_batches = page.view_control(cols[0].selectbox, "stream_batches", "Number of batches",
                                      running.STREAM_OPTIONS["n_batches"])
        mu = page.view_control(cols[1].select_slider, "stream_mu", "True mean mu", running.STREAM_OPTIONS["mu"])
        sigma = page.view_control(cols[1].select_slider, "stream_sigma", "True standard deviation sigma",
                                  running.STREAM_OPTIONS["sigma"])
        drift = page.view_control(cols[2].radio, "stream_drift", "Drift", streams.DRIFTS, horizontal=True,
                                  help="none: stationary. linear: the true mean and std move evenly from start to "
                                       "end. step: they jump half-way through the stream.")
        seed = page.view_control(cols[2].number_input, "stream_seed", "Stream seed", min_value=running.SEED_RANGE[0],
                                 max_value=running.SEED_RANGE[1], step=1)
        shift = page.view_control(cols[3].select_slider, "stream_shift", "Mean moves by",
                                  running.STREAM_OPTIONS["mean_shift"], disabled=drift == "none",
                                  help="With drift: the true mean goes from mu to mu + this.")
        factor = page.view_control(cols[3].select_slider, "stream_factor", "Std multiplied by",
                                   running.STREAM_OPTIONS["std_factor"], disabled=drift == "none",
                                   help="With drift: the true std goes from sigma to sigma x this.")
        spec = streams.StreamSpec(mu=mu, sigma=sigma, batch_size=n, n_batches=n_batches, drift=drift,
                                  mean_shift=shift, std_factor=factor, seed=int(seed))
        problems = streams.problems(spec)
        if problems:
            st.error(" ".join(problems))
        elif not stream_momenta:
            st.warning("Choose at least one momentum to see its running estimate.")
        else:
            figs = stream_figures(spec, tuple(stream_momenta), convention, variance)
            band = ("Shaded: expected value +- 2 standard deviations of the estimate (theory: "
                    "E = true + (initial - true)(1 - m)^t, Var = m/(2 - m) (1 - (1 - m)^(2t)) s, with s the variance "
                    "of one batch statistic; for the cumulative average Var = s / t)" if spec.stationary else
                    "Shaded: expected value +- 2 standard deviations of the estimate (the EMA recursion applied to "
                    "the true values and to the batch-statistic variances; with a linear drift the estimate trails "
                    "by (1 - m)/m batches)")
            page.chart(figs["stream running mean"], "stream running mean",
                       caption=f"Solid: running mean after t batches (starts at 0, torch's initial value). Black: the "
                               f"true mean. {band}; s = sigma^2 / n for the batch mean.")
            if variance == "unbiased":
                var_caption = ("Solid: running variance fed the unbiased batch variance (sum of squared deviations / "
                               "(n - 1)), as torch does; it starts at 1 and is unbiased: it centres on the true "
                               "variance. "
                               f"{band}; s = 2 sigma^4 / (n - 1) for Gaussian samples.")
            else:
                var_caption = ("Solid: a running average of the biased batch variance (divide by n), the one BN "
                               "normalizes with in training. It centres on (n - 1)/n x the true variance (dashed), "
                               f"too small by a factor that matters for small batches. {band}; "
                               "s = 2 (n - 1) sigma^4 / n^2.")
            page.chart(figs["stream running variance"], "stream running variance", caption=var_caption)
            m1, m2, m3 = st.columns(3)
            m1.metric("E[biased batch variance] / true variance", f"{(n - 1) / n:.4f}",
                      help=f"(n - 1)/n with n = {n}: why torch stores the unbiased variance (Bessel's correction).")
            m2.metric("noise of one batch mean (std)", f"{sigma / math.sqrt(n):.4g}",
                      help="sigma / sqrt(n) at the start of the stream: the batch mean BN subtracts in training "
                           "fluctuates by this much.")
            m3.metric("noise of one unbiased batch variance (std)",
                      f"{math.sqrt(theory.batch_var_variance(sigma ** 2, n, unbiased=True)):.4g}",
                      help="sqrt(2 / (n - 1)) sigma^2 for Gaussian samples, at the start of the stream.")
            rows = running.momentum_table(stream_momenta, convention, sigma, n)
            st.table(rows)
            st.caption("Half-life: batches until the initial value's weight halves, ln 0.5 / ln(1 - m). Stationary "
                       "std: sqrt(m / (2 - m) x sigma^2 / n), the noise left once the start is forgotten. Lag: a "
                       "running average of a linearly drifting statistic trails it by (1 - m) / m batches.")

    with part_b:
        extra = momenta_control(
            st, "momenta", "Also train with momenta", running.NETWORK_MOMENTA,
            "Each momentum is one more training run of the same network; the BN momentum setting above is always "
            "included.")
        extra = [m for m in extra if m != config.momentum]
        if len(extra) > running.MAX_RUNS - 1:
            st.warning(f"At most {running.MAX_RUNS} momenta (one training run each): training the BN momentum "
                       f"setting and the first {running.MAX_RUNS - 1} others. Remove some to choose others.")
            extra = extra[:running.MAX_RUNS - 1]
        runs = page.train(running.runs(config, extra), live=figures.training_curves)
        usable = {k: r for k, r in (runs or {}).items() if running.bn_layers(r)}
        if runs and not usable:
            st.warning("These runs recorded no BatchNorm running statistics (no BN layer, or training stopped "
                       "before the first recording).")
        if usable:
            first = next(iter(usable.values()))
            layers = running.bn_layers(first)
            names = first.history.layer_names
            page.view_value("layer", running.default_layer(layers))
            layer = page.view_control(st.selectbox, "layer", "BN layer", layers, format_func=lambda i: names[i],
                                      help="Which BatchNorm layer's running statistics to compare.")
            comparisons = [running.running_vs_population(r, layer) for r in usable.values()]
            paired = running.paired_steps(comparisons)
            step = None
            if paired:
                page.view_value("step", running.default_step(paired, config.steps))
                step = page.view_control(st.select_slider, "step", "Step for the per-channel scatter", paired,
                                         help="Steps at which both the running statistics and the population "
                                              "statistics were recorded.")
            figs = running.network_figures(usable, layer, step, convention)
            page.chart(figs["running vs population error"], "running vs population error",
                       caption="At each recorded step s: the running mean/variance after the forward pass of step s "
                               "(which used the weights after s updates) against the population statistics of those "
                               "weights. Left: mean over channels of |running mean - population mean| / "
                               "sqrt(population variance + eps), i.e. how far (in units of the intended std) the "
                               "eval-mode output is shifted. Right: mean over channels of |running var - population "
                               "var| / (population var + eps). Small momenta start far off (running stats start at 0 "
                               "and 1) and catch up slowly. The first BN layer's input often has a population mean of "
                               "exactly 0 (standardized data through a Linear without bias), so its running mean shows "
                               "noise but no lag: the second layer is shown by default.")
            page.chart(figs["running vs population per channel"], "running vs population per channel",
                       caption="One point per channel of the chosen layer at the chosen step. On the dashed diagonal "
                               "the running statistic equals the population statistic.")
            page.chart(figs["eval accuracy by statistics"], "eval accuracy by statistics",
                       caption="Share of the held-out test set classified correctly, with BN normalizing by: its "
                               "running statistics (eval mode, what model.eval() does), the population statistics "
                               "recomputed from the training set for the current weights, or each test batch's own "
                               "statistics (train-mode BN, test batches of the training batch size).")
            cols = st.columns(len(usable))
            for col, run in zip(cols, usable.values()):
                gstep, acc_run, acc_pop, _ = running.accuracy_gap(run)
                last = run.history.evals[-1]
                col.metric(f"largest gap, {running.momentum_label(run.config.momentum, convention)}",
                           f"{acc_pop - acc_run:+.1%}",
                           help=f"Test accuracy with population statistics minus with running statistics, at step "
                                f"{gstep} ({acc_pop:.1%} vs {acc_run:.1%}), the largest over the evaluations. At the "
                                f"end (step {last.step}): {last.test_acc_population:.1%} vs {last.test_acc:.1%}. "
                                f"Trained in {run.history.elapsed_s:.1f} s.")
    page.download_all()
