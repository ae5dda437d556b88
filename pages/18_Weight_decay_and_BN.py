"""Scale invariance and weight decay: what L2 regularization does to the weights in front of BN."""
from dataclasses import asdict

import streamlit as st

from bnviz import ui
from bnviz.figures import weight_decay as figs
from bnviz.views import seeded, weight_decay as view

st.set_page_config(page_title="bnviz: weight decay and BN", page_icon="📊", layout="wide")

page = ui.Page(
    "weight_decay", "Weight decay and BN",
    "A weight layer followed by BN is scale invariant: multiplying its weights by k changes nothing in the forward "
    "pass and divides their gradient by k. So weight decay cannot regularize those weights; it sets their norm, and "
    "with it the effective learning rate lr / ||W||². What to look for: without weight decay the norms only grow and "
    "the effective learning rate falls; with it the norms settle and the effective rate stays high.")

SETTINGS = asdict(view.Settings())

with ui.guard():
    config = page.config(view.DEFAULT, main=("depth", "width", "activation"), view=SETTINGS, seeds=True)
    page.view_settings(SETTINGS, view.coerce)
    found = view.check(config)
    if found:
        st.error("**This configuration cannot train.** " + " ".join(found))
        st.stop()

    st.header("1. The x k check")
    page.view_value("factor", view.Settings().factor, options=view.OPTIONS["factor"])

    def factor_control() -> None:
        page.view_control(st.select_slider, "factor", "k: factor on the first layer's weights",
                          view.OPTIONS["factor"], format_func=lambda k: f"x {k:g}",
                          help="The first hidden layer's weight matrix (Linear without bias, then BN) is multiplied "
                               "by k in a copy of the initial network.")

    @page.part(controls=factor_control)
    def check(factor: float) -> None:
        result = view.scale_check(config, factor)
        c1, c2, c3 = st.columns(3)
        c1.metric("largest change of a logit", f"{result.max_output_change:.1e}",
                  help=f"max |logits(k W) - logits(W)| over the batch, BN in training mode; the logits reach "
                       f"{result.max_logit:.2f}. Not exactly 0 only because of BN's eps (var + eps is not k² var).")
        c2.metric("gradient norm ratio ||dL/d(kW)|| / ||dL/dW||", f"{result.grad_ratio:.4f}",
                  help=f"Autograd in float64; 1/k = {1 / factor:.4g}. ||dL/dW|| = {result.grad_norm:.4g}.")
        c3.metric("largest error of k · dL/d(kW) against dL/dW", f"{result.max_grad_error:.1e}",
                  help="Relative to the largest gradient entry.")
        st.caption(f"Cross-entropy of the first training batch ({config.batch_size} samples) through the initial "
                   f"network and through the same network with {result.layer}'s weights times {factor:g}; both "
                   "passes by autograd in float64.")

    st.header("2. Weight norms and the effective learning rate")
    decay = page.view_control(st.select_slider, "decay", "Weight decay λ", view.OPTIONS["decay"],
                              format_func=lambda d: f"{d:g}",
                              help="The L2 penalty compared with none: the update is W <- W - lr (g + λ W).")
    if config.optimizer != "sgd":
        st.info("With Adam the step size does not scale with the gradient, so its effective learning rate on the "
                "direction of W is about lr / ||W||, not lr / ||W||²; the right panel still shows lr / ||W||².")
    seed_list, note = seeded.seed_list(config.seed, page.n_seeds, view.RUNS_PER_SEED)
    if note:
        st.warning(note)
    results = [ui.computed(f"Training, seed {s}", view.compare, config.replace(seed=s), float(decay))
               for s in seed_list]
    runs = results[0]
    for run in runs:
        if run.diverged_at is not None:
            st.warning(f"**{run.label} diverged at step {run.diverged_at}** (the loss became NaN or infinite).")
    page.chart(figs.norms_and_effective_lr(runs), "weight norms",
               caption="Frobenius norm of each hidden weight matrix followed by BN, after every update (solid: no "
                       "weight decay, dashed: with), and lr / ||W||², the learning rate of the direction W/||W||, "
                       "which is all the network sees of W. Plain SGD: ||W_{t+1}||² = ||W_t||² + lr² ||g_t||², "
                       "because the gradient is orthogonal to W; weight decay multiplies W by (1 − lr λ) each step.")
    page.chart(figs.test_accuracy(runs), "test accuracy",
               caption="Share of the held-out test set classified correctly, in eval mode, same seed and batches.")
    cols = st.columns(2)
    for col, run in zip(cols, runs):
        col.metric(f"final effective learning rate, {run.label}", f"{run.effective_lr[-1].mean():.3g}",
                   help="lr / ||W||² after the last update, mean over the layers.")
    if len(results) > 1:
        with st.container(border=True):
            st.markdown(seeded.markdown(view.seed_summary(results, seed_list)))
    page.download_all()
