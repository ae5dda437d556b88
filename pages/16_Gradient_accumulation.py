"""Gradient accumulation: a batch of 64 as k micro-batches, with BatchNorm, GroupNorm and LayerNorm."""
from dataclasses import asdict

import streamlit as st

from bnviz import ui
from bnviz.figures import grad_accumulation as figs
from bnviz.views import grad_accumulation as view, seeded

st.set_page_config(page_title="bnviz: gradient accumulation", page_icon="📊", layout="wide")

page = ui.Page(
    "grad_accumulation", "Gradient accumulation",
    "Accumulating the gradients of k micro-batches before one update gives the gradient of the whole batch, unless "
    "a layer looks at the other samples. What to look for: GroupNorm and LayerNorm train the same with or without "
    "accumulation; BatchNorm normalizes each micro-batch by its own statistics, so it behaves like the small batch, "
    "with sqrt(k) times noisier statistics.")

SETTINGS = asdict(view.Settings())

with ui.guard():
    config = page.config(view.DEFAULT, main=("depth", "width", "activation"), view=SETTINGS, seeds=True)
    page.view_settings(SETTINGS, view.coerce)
    k = int(page.view_control(st.select_slider, "micro_batches", "Micro-batches per batch (k)",
                              view.OPTIONS["micro_batches"],
                              help="Each batch of the sidebar's batch size is cut into k consecutive micro-batches; "
                                   "each gets a forward and backward pass (loss weighted by its share of the batch), "
                                   "then one update."))
    found = view.check(config, view.Settings(micro_batches=k))
    if found:
        st.error("**This configuration cannot train.** " + " ".join(found))
        st.stop()
    micro = config.batch_size // k
    st.caption(f"Per normalization, two runs from seed {config.seed}: the true batch of {config.batch_size}, and "
               f"{k} micro-batches of about {micro} accumulated. Same initial weights and the same batches, step for "
               f"step; {config.steps} steps of {config.optimizer}, learning rate {config.lr:g}. With accumulation "
               f"BN's running statistics are updated {k} times per step, each time with a micro-batch.")
    seed_list, note = seeded.seed_list(config.seed, page.n_seeds, view.RUNS_PER_SEED)
    if note:
        st.warning(note)
    results = [ui.computed(f"Training, seed {s}", view.compare, config.replace(seed=s), k) for s in seed_list]
    runs = results[0]
    for run in runs:
        if run.diverged_at is not None:
            st.warning(f"**{run.label} diverged at step {run.diverged_at}** (the loss became NaN or infinite).")
    page.chart(figs.test_accuracy(runs), "test accuracy",
               caption="Share of the held-out test set classified correctly, in eval mode (BN with its running "
                       "statistics), during training. Solid: true batch; dashed: accumulated.")
    page.chart(figs.final_accuracy(runs), "final accuracy",
               caption="Eval-mode test accuracy after the last step. GroupNorm and LayerNorm receive the same "
                       "gradient either way (up to float rounding), so their bars match.")
    page.chart(figs.statistics_noise(runs), "noise of BN statistics",
               caption="One point per channel of the first BN layer. y: standard deviation of the channel's batch mean "
                       "from one step to the next, over the second half of training (successive-difference estimate, "
                       "which cancels the slow drift of the weights). x: σ/√n, the standard error of a mean of n "
                       "independent samples, σ² the channel's average unbiased batch variance. n is the batch BN "
                       "normalized by: the whole batch, or one micro-batch.")
    bn = {run.micro_batches: run for run in runs if run.noise is not None}
    cols = st.columns(3)
    if len(bn) == 2:
        true, acc = bn[1], bn[k]
        cols[0].metric("BN eval gap (accumulated − true batch)", f"{(acc.final_acc - true.final_acc) * 100:+.1f} points",
                       help="Difference of the eval-mode test accuracies after training, in percentage points.")
        cols[1].metric("noise of BN's batch mean, accumulated / true",
                       f"{acc.noise.rms / true.noise.rms:.2f}x",
                       help=f"Root-mean-square over channels of the measured standard deviations, ratio. Theory for "
                            f"independent samples: sqrt({true.noise.n}/{acc.noise.n}) = {(true.noise.n / acc.noise.n) ** 0.5:.2f}.")
        cols[2].metric("measured / theory (accumulated)", f"{acc.noise.pooled_ratio:.2f}",
                       help="sqrt(sum of squared measured std / sum of squared sigma/sqrt(n)) over channels: 1 where "
                            "the sigma/sqrt(n) law holds.")
    if len(results) > 1:
        with st.container(border=True):
            st.markdown(seeded.markdown(view.seed_summary(results, seed_list)))
    page.download_all()
