"""Gradients at initialization vs depth (Yang et al. 2019): BN without skips explodes them toward the input."""
from dataclasses import asdict

import streamlit as st

from bnviz import seeds, ui
from bnviz.config import problems
from bnviz.experiments import depth_gradients as experiment
from bnviz.views import depth

st.set_page_config(page_title="bnviz: gradients vs depth", page_icon="📊", layout="wide")

page = ui.Page(
    "depth", "Gradients at initialization vs depth",
    "Deep MLPs at initialization: Linear-BN-ReLU without skip connections, the same with skips, and Linear-ReLU "
    "without BN. What to look for: with BN and no skips the gradient grows by a constant factor per layer from the "
    "output back to the input (Yang et al. 2019: about 1.21 per layer for ReLU), whatever the weights' scale; skips "
    "and the plain He-initialized network keep it level; and a few training steps shrink the explosion.")

SETTINGS = asdict(depth.Settings())

with ui.guard():
    config = page.config(depth.DEFAULT, main=("width",), view={**SETTINGS, "step": 10}, seeds=True)
    page.view_settings(SETTINGS, depth.coerce)
    layers = page.view_control(st.select_slider, "depth", "Layers (Linear layers before the classifier)",
                               depth.DEPTHS, help="Every network has this many Linear layers of the chosen width.")
    found = problems(config)
    if found:
        st.error("**This configuration cannot train.** " + " ".join(found))
        st.stop()
    st.caption(f"Networks: {layers} Linear layers of {config.width} units, each followed by BatchNorm1d (no bias before "
               "it) and ReLU, or by ReLU alone; with skips, every layer after the first adds its input "
               "(x + ReLU(BN(W x))). He initialization (normal, fan-in), then a linear classifier; cross-entropy on "
               f"{config.dataset}, batch {config.batch_size}, the same seed, weights and batches for all three.")

    st.header("1. At initialization")
    st.latex(r"\lVert \partial L / \partial W_l \rVert \;\approx\; \lVert \partial L / \partial W_L \rVert \cdot "
             r"\lambda^{L-l},\qquad \lambda = \sqrt{\pi / (\pi - 1)} = 1.211 \quad \text{(BN-ReLU, no skips, "
             r"large batches)}")
    at_init = ui.computed("Gradients at initialization", depth.init_runs, config, layers)
    page.chart(depth.norms_figure(at_init, 0), "gradient norm per layer at initialization",
               caption="Frobenius norm of the gradient of the mini-batch's mean cross-entropy with respect to each "
                       "layer's weight matrix, on the first training batch (BN in training mode: batch statistics). "
                       "Dashed: the growth of 1.211 per layer, drawn from the BN network's last layer; it was checked "
                       "by Monte-Carlo (wide networks, large batches: 1.20-1.21 per layer) before being drawn here."
                       + (f" Figures: seed {config.seed}; the measured growth below is over {page.n_seeds} seeds."
                          if page.n_seeds > 1 else ""))
    bn = at_init[experiment.KINDS["bn"]]
    growths = [experiment.fitted_growth(bn.norms[0])] + [
        experiment.fitted_growth(ui.computed(f"Gradients at initialization, seed {config.seed + k}", depth.init_runs,
                                             config.replace(seed=config.seed + k), layers)[bn.label].norms[0])
        for k in range(1, page.n_seeds)]
    cols = st.columns(3)
    cols[0].metric("measured growth per layer, BN-ReLU no skips", seeds.headline(growths, scale=1.0, unit="", digits=3),
                   help="Least-squares fit of log ||dL/dW_l|| against l, leaving out 3 layers at each end; the "
                        "factor by which the gradient grows per layer toward the input"
                        + (f"; mean ± half the 95 % t-interval over {page.n_seeds} seeds (other weights and "
                           "batches)." if page.n_seeds > 1 else "."))
    cols[1].metric("theory (Yang et al. 2019)", f"{experiment.GROWTH:.3f}",
                   help="sqrt(pi / (pi - 1)) for ReLU, in the limit of large batches and widths.")
    cols[2].metric("first / last layer, BN-ReLU no skips", f"{bn.growth()[0]:.3g}",
                   help="||dL/dW_1|| / ||dL/dW_L|| at initialization.")

    st.header("2. After a few training steps")
    full = ui.computed("Training", depth.trained, config, layers)
    for label, run in full.items():
        if run.curves.diverged_at is not None:
            st.warning(f"**{label}: training diverged at step {run.curves.diverged_at}** (the loss became NaN or "
                       "infinite); its curves stop there.")
    offered = depth.steps_offered(config)
    page.view_value("step", min(10, offered[-1]), offered)

    @page.part(controls=lambda: page.view_control(st.select_slider, "step", "Training step", offered,
                                                  help="The gradients of this step's mini-batch, at the weights "
                                                       "after this many SGD updates."))
    def after_steps(step: int) -> None:
        page.chart(depth.norms_figure(full, step), "gradient norm per layer after training steps",
                   caption="Solid: each layer's gradient norm at the chosen step; dotted: at initialization.")

    page.chart(depth.growth_figure(full), "gradient growth over training steps",
               caption="Left: how many times larger the first layer's gradient is than the last layer's, at every "
                       "step. Right: the training loss of each step's mini-batch. BN makes the loss independent of "
                       "the scale of the weights before it: the large early gradients inflate those weights, and a "
                       "larger weight gets a proportionally smaller gradient.")
    page.download_all()
