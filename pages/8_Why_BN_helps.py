"""Why BN helps: learning-rate sweep, loss-landscape smoothness (Santurkar et al. 2018), noisy BN."""
from dataclasses import asdict

import numpy as np
import streamlit as st

from bnviz import ui
from bnviz.experiments import lr_sweep
from bnviz.config import problems
from bnviz.seeds import METHOD, accuracy_help, band_caption
from bnviz.views import why

st.set_page_config(page_title="bnviz: why BN helps", page_icon="📊", layout="wide")

page = ui.Page(
    "why", "Why BN helps",
    "Three experiments on the same deep MLP with and without BatchNorm. What to look for: BN trains at learning "
    "rates where the plain network diverges; along the gradient, the loss and the gradient of the BN network change "
    "less (Santurkar et al. 2018, 'a smoother landscape'); and randomly shifting and scaling every BN output at every "
    "step, which destroys the 'stable input distributions' BN was designed for, barely hurts training.")

SETTINGS = asdict(why.Settings())


def medians(runs, name: str) -> dict[str, float]:
    return {label: float(np.nanmedian(run.series(name)[1])) for label, run in runs.items()}


with ui.guard():
    config = page.config(why.DEFAULT, main=("depth", "activation", "init_scale", "affine"), view=SETTINGS, seeds=True)
    page.view_settings(SETTINGS, why.coerce)
    n_seeds = why.seeds_within(page.n_seeds, ui.MAX_RUNS)
    if n_seeds < page.n_seeds:
        st.warning(f"This page trains {why.NETWORKS_PER_SEED} networks per seed; at most {ui.MAX_RUNS} runs are "
                   f"trained at once, so {n_seeds} seeds instead of {page.n_seeds}.")
    st.caption(f"This page trains {why.NETWORKS_PER_SEED} networks of {config.steps} steps each"
               + (f" at each of {n_seeds} seeds ({config.seed} to {config.seed + n_seeds - 1})" if n_seeds > 1 else "")
               + ": "
               f"{2 * len(lr_sweep.DEFAULT_LRS)} for the sweep, 2 probed for the landscape, 1 with noisy BN. "
               f"The network: {config.depth} hidden layers of {config.width} {config.activation} units, weights at "
               f"{config.init_scale:g} x PyTorch's default initialization (2.45 would be He initialization), "
               f"{config.optimizer} with batch {config.batch_size}, {config.steps} steps, on {config.dataset}. "
               "'With BN': BatchNorm1d before every activation (Linear without bias); 'without BN': the same "
               "network with biases. Same seed, initial weights and batches for every run"
               + (" at one seed; comparisons pair the runs of each seed." if n_seeds > 1 else "."))
    found = problems(why.variants(config)["with BN"])
    if found:
        st.error("**This configuration cannot train.** " + " ".join(found))
        st.stop()

    # ----- 1. learning-rate sweep ----------------------------------------------------------------------
    st.header("1. BN trains with much larger learning rates")
    st.markdown(
        f"Both networks train for {config.steps} steps at each learning rate of "
        f"{', '.join(f'{lr:g}' for lr in lr_sweep.DEFAULT_LRS)} (SGD step w <- w - lr * gradient). A rate is "
        "**stable** when the loss never became NaN/infinite and the mean training loss of the last 10% of steps is "
        "below half the first step's loss; **diverged** (x) when the loss became NaN or infinite; an open circle "
        "did neither (the loss stayed high or bounced).")
    over_seeds = why.by_seed(ui.computed_many("Learning-rate sweep", lr_sweep.point,
                                              why.sweep_jobs(config, n_seeds)), n_seeds)
    points = over_seeds[0]
    page.chart(why.sweep_figure(config, points, over_seeds), "learning-rate sweep",
               caption="Left: mean training cross-entropy over the last 10% of steps (log scale). Right: share of the "
                       "held-out test set classified correctly at the end, in eval mode (stability is judged on the "
                       "training loss; a BN network can train stably yet evaluate badly when its running statistics "
                       "lag behind fast-moving weights). Dashed: the largest stable rate of each network. Only rates "
                       "on the grid are tried, so the true limit lies between the dashed line and the next rate."
                       + (f" Dashed lines and markers: seed {config.seed}." + band_caption(n_seeds)
                          if n_seeds > 1 else ""))
    cols = st.columns(2)
    for col, label in zip(cols, ("with BN", "without BN")):
        col.metric(f"largest stable learning rate, {label}", why.largest_stable_over_seeds(over_seeds, label),
                   help="The largest rate of the grid whose run was stable (definition above); over several "
                        "seeds, the median of each seed's.")
    if n_seeds > 1:
        st.markdown("\n".join(f"- {line}" for line in why.sweep_verdicts(over_seeds)))
        st.caption(f"Final test accuracy at each learning rate over {n_seeds} seeds, paired by seed; "
                   f"{METHOD}. A run that diverged is left out of its pair.")

    # ----- 2. landscape ---------------------------------------------------------------------------------
    st.header("2. A smoother loss landscape along the gradient")
    st.markdown(
        "Santurkar, Tsipras, Ilyas & Madry (2018), *How Does Batch Normalization Help Optimization?*: at 15 points "
        "of a training run, take the weights w, the gradient g of that step's mini-batch loss, and step along it "
        "by several sizes eta (the same batch, BN in training mode, on a copy of the network):")
    st.latex(r"\text{(a) } L(w-\eta g) \qquad \text{(b) } \lVert \nabla L(w) - \nabla L(w-\eta g) \rVert_2 \qquad "
             r"\text{(c) } \beta_{\text{eff}} = \max_\eta \frac{\lVert \nabla L(w) - \nabla L(w-\eta g) \rVert_2}"
             r"{\lVert \eta g \rVert_2}")
    step_max = page.view_control(st.select_slider, "step_max",
                                 "Largest step size eta, in multiples of the learning rate",
                                 why.OPTIONS["step_max"], format_func=lambda m: f"{m:g} x lr",
                                 help=f"{why.N_STEP_SIZES} step sizes, evenly spaced from 1/{why.N_STEP_SIZES} of this "
                                      "to this (0.4 gives 0.05 ... 0.4 x lr; 4 spans the size of one training step "
                                      "and more).")
    variants = why.variants(config)
    landscapes = why.by_label(ui.computed_many("Loss landscape", why.landscape_run,
                                               why.landscape_jobs(config, step_max, n_seeds)), list(variants))
    probed = {label: runs[0] for label, runs in landscapes.items()}
    for label, runs in landscapes.items():
        diverged = [(run.config.seed, run.curves.diverged_at) for run in runs if run.curves.diverged_at is not None]
        if n_seeds == 1 and diverged:
            st.warning(f"**{label}: training diverged at step {diverged[0][1]}** (the loss became NaN or "
                       "infinite); its probes and curves stop there. Try a smaller learning rate.")
        elif diverged:
            st.warning(f"**{label}: training diverged in {len(diverged)} of {n_seeds} seeds** ("
                       + ", ".join(f"seed {seed} at step {step}" for seed, step in diverged)
                       + "; the loss became NaN or infinite): their probes and curves stop there, and a seed "
                         "without probes is left out. Try a smaller learning rate.")
    caption = ("(a) Band: the lowest to the highest loss among L(w) and the L(w - eta g); line: L(w). "
               "(b) Band: the smallest to the largest change of the gradient (l2 norm over all parameters, "
               "gamma and beta included) over the step sizes. (c) The largest change of gradient per unit of "
               "distance moved, a local estimate of how fast the gradient varies (its Lipschitz constant, "
               "beta) in the direction we actually step. Narrow bands and a small beta: a step's outcome is "
               "predictable, so larger steps are safe. Computed in float64.")
    if n_seeds > 1:
        caption = ("At each probed step: (a) the range of the loss (highest minus lowest among L(w) and the "
                   "L(w - eta g)); (b) the largest change of the gradient over the step sizes (l2 norm over all "
                   "parameters, gamma and beta included); (c) the largest change of gradient per unit of distance "
                   "moved, a local estimate of how fast the gradient varies (its Lipschitz constant, beta) in the "
                   "direction we actually step. Small values: a step's outcome is predictable, so larger steps are "
                   "safe. Computed in float64. With Seeds = 1 the figure shows the whole range over the step sizes "
                   "of one run." + band_caption(n_seeds))
    page.chart(why.landscape_figure(probed, landscapes), "loss landscape", caption=caption)
    cols = st.columns(3)
    if n_seeds == 1:
        for col, (name, what) in zip(cols, why.LANDSCAPE_METRICS.items()):
            med = medians(probed, name)
            col.metric(f"median {what}, with BN", f"{med['with BN']:.3g}",
                       delta=f"{med['with BN'] - med['without BN']:+.3g} vs without BN ({med['without BN']:.3g})",
                       delta_color="inverse", help="Median over the probed steps (15, fewer if a run diverged).")
    else:
        summary = why.landscape_summary(landscapes)
        for col, (name, what) in zip(cols, why.LANDSCAPE_METRICS.items()):
            texts, diff, _ = summary[name]
            col.metric(f"median {what}, with BN", texts["with BN"],
                       delta=f"{diff.mean:+.3g} vs without BN ({texts['without BN']})", delta_color="inverse",
                       help=f"Each seed's median over the probed steps (15, fewer if a run diverged); mean ± half "
                            f"the 95 % t-interval over {n_seeds} seeds. The change: the mean over seeds of with BN "
                            "minus without BN.")
        st.markdown("\n".join(f"- {line}" for line in (summary[name][2] for name in why.LANDSCAPE_METRICS)))
        st.caption(f"Each seed's median over the probed steps, with BN against without BN, paired by seed (the "
                   f"same seed gives both the same batches); {METHOD}. Lower is smoother.")
    st.info(
        "The smoothness is measured in the space of the weights, and BN makes the loss **independent of the scale of "
        "the weights that feed it**: L(a W) = L(W) for a > 0, so the gradient scales as 1/a and the curvature as "
        "1/a². Small weights in front of BN therefore mean a large curvature over very small steps, so the answer "
        "depends on the step sizes compared and on the weight scale. Measured with the defaults: over steps up to "
        "4 x lr, all three quantities are smaller with BN; over 0.05 to 0.4 x lr (the range of Santurkar et al.'s "
        "figure) the loss and the gradient still change less with BN, but its effective beta is larger. Try the "
        "step-size control and the weight-initialization scale.")

    # ----- 3. noisy BN ----------------------------------------------------------------------------------
    st.header("3. Noisy BN: unstable layer inputs, and it still trains")
    st.markdown(
        "BN was introduced to reduce *internal covariate shift*: the change of each layer's input distribution as "
        "the layers before it learn. Santurkar et al. test that explanation by adding it back: after every BN layer, "
        "at every training step, each unit's output y becomes **s·y + m**, with m drawn from U(-shift, shift) and s "
        "from U(1, scale), anew at each step (the same for all samples of the step). Every layer's input now moves "
        "in mean and spread all the time, far more than without BN. In eval mode the noise is replaced by its mean "
        "(y times E[s] = (1 + scale)/2).")
    c1, c2 = st.columns(2)
    shift = page.view_control(c1.select_slider, "noise_shift", "shift: m drawn from U(-shift, shift)",
                              why.OPTIONS["noise_shift"], help="Random change of each unit's mean, per step.")
    scale = page.view_control(c2.select_slider, "noise_scale", "scale: s drawn from U(1, scale)",
                              why.OPTIONS["noise_scale"], help="Random factor on each unit's spread, per step.")
    noisy_runs = ui.computed_many("Noisy BN", why.noisy_job, why.noisy_jobs(config, shift, scale, n_seeds))
    diverged = [(cfg.seed, cur.diverged_at) for (cfg, _, _), cur in zip(why.noisy_jobs(config, shift, scale, n_seeds),
                                                                       noisy_runs) if cur.diverged_at is not None]
    if n_seeds == 1 and diverged:
        st.warning(f"**Noisy BN: training diverged at step {diverged[0][1]}**; its curves stop there.")
    elif diverged:
        st.warning(f"**Noisy BN: training diverged in {len(diverged)} of {n_seeds} seeds** ("
                   + ", ".join(f"seed {seed} at step {step}" for seed, step in diverged)
                   + "); their curves stop there and their final accuracy is left out.")
    settings = why.Settings(step_max=step_max, noise_shift=shift, noise_scale=scale)
    curves = why.noisy_curves(probed, noisy_runs[0], settings)
    curves_over = why.noisy_curves_over_seeds(landscapes, noisy_runs, settings)
    page.chart(why.noisy_figure(curves, curves_over), "noisy BN",
               caption="Left: training cross-entropy of each step's mini-batch (as trained: with the noise for noisy "
                       "BN), moving average of 10 steps. Right: share of the held-out test set classified correctly, "
                       "in eval mode. BN and no-BN are the runs of part 2." + band_caption(n_seeds))
    cols = st.columns(len(curves))
    if n_seeds == 1:
        for col, (label, cur) in zip(cols, curves.items()):
            col.metric(f"final test accuracy, {label}", f"{cur.test_acc[-1]:.1%}",
                       help=f"Eval mode, after {cur.eval_steps[-1]} updates.")
    else:
        headlines, verdicts = why.noisy_summary(curves_over)
        for col, (label, cur) in zip(cols, curves.items()):
            col.metric(f"final test accuracy, {label}", headlines[label],
                       help=f"Eval mode, after {cur.eval_steps[-1]} updates; {accuracy_help(n_seeds)}; a run that "
                            "diverged is left out.")
        st.markdown("\n".join(f"- {line}" for line in verdicts))
        st.caption(f"Final test accuracy over {n_seeds} seeds, paired by seed (the same seed gives the networks the "
                   f"same batches); {METHOD}. A run that diverged is left out of its pair.")
    page.download_all()
