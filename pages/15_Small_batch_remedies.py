"""Small-batch remedies: Batch Renorm, Ghost BN and GroupNorm + Weight Standardization against BN."""
from dataclasses import asdict

import streamlit as st

from bnviz import ui
from bnviz.experiments import small_batch as sb
from bnviz.figures import small_batch as figs
from bnviz.views import seeded, small_batch as view

st.set_page_config(page_title="bnviz: small-batch remedies", page_icon="📊", layout="wide")

page = ui.Page(
    "small_batch", "Small-batch remedies",
    "BatchNorm's statistics come from the batch: with a few samples they are noisy, and with samples that are not "
    "i.i.d. they describe the wrong population. What to look for: BN's accuracy falls at batches of 2-4 while "
    "GroupNorm + Weight Standardization (no batch statistics at all) does not; on batches of two classes each, "
    "BN's eval mode meets statistics it never trained with, Batch Renorm recovers part of it, GroupNorm does not care.")

SETTINGS = asdict(view.Settings())

with ui.guard():
    config = page.config(view.DEFAULT, main=("depth", "width", "activation"), view=SETTINGS, seeds=True)
    page.view_settings(SETTINGS, view.coerce)
    st.markdown(
        "- **BatchNorm**: `torch.nn.BatchNorm1d` before every activation.\n"
        "- **Batch Renorm** (Ioffe 2017): x̂ = (x − μ_B)/σ_B · r + d with r = σ_B/σ and d = (μ_B − μ)/σ from the "
        "running statistics μ, σ, clipped to [1/r_max, r_max] and [−d_max, d_max], no gradient through r and d. "
        f"Plain BN for the first sixth of the steps ({config.steps // 6}), then the limits grow linearly to r_max and "
        "d_max over the next third; eval mode is BN's.\n"
        "- **Ghost BN** (Hoffer et al. 2017): BN over consecutive ghost batches of a fixed size inside each batch; "
        "running statistics from their average. A ghost batch as large as the batch is plain BN.\n"
        "- **GroupNorm + WS** (Qiao et al. 2019): every hidden weight matrix standardized per output unit (zero mean, "
        "unit variance over its inputs) before use, followed by GroupNorm (groups of 16 units): nothing depends on "
        "the other samples of the batch.")
    c1, c2, c3 = st.columns(3)
    ghost = page.view_control(c1.select_slider, "ghost_size", "Ghost batch size", view.OPTIONS["ghost_size"],
                              help="Samples per ghost batch of Ghost BN (a last ghost batch of one sample joins "
                                   "the one before).")
    r_max = page.view_control(c2.select_slider, "r_max", "Batch Renorm r_max", view.OPTIONS["r_max"],
                              help="Final limit of r = sigma_B / sigma: clipped to [1/r_max, r_max]. 1 keeps BN's "
                                   "scale.")
    d_max = page.view_control(c3.select_slider, "d_max", "Batch Renorm d_max", view.OPTIONS["d_max"],
                              help="Final limit of d = (mu_B - mu) / sigma: clipped to [-d_max, d_max]. 0 keeps "
                                   "BN's shift.")
    found = view.check(config)
    if found:
        st.error("**This configuration cannot train.** " + " ".join(found))
        st.stop()
    settings = view.Settings(ghost_size=int(ghost), r_max=float(r_max), d_max=float(d_max))
    st.caption(f"Each of the 4 normalizations trains {len(sb.DEFAULT_BATCH_SIZES)} times on i.i.d. batches "
               f"({', '.join(map(str, sb.DEFAULT_BATCH_SIZES))}) and once on two-class batches of "
               f"{config.batch_size} (the sidebar's batch size): {config.steps} steps of {config.optimizer}, "
               f"learning rate {config.lr:g}, {config.depth} hidden layers of {config.width} units, seed "
               f"{config.seed} (the same initial weights and batches for every normalization).")
    seed_list, note = seeded.seed_list(config.seed, page.n_seeds, view.runs_per_seed(config))
    if note:
        st.warning(note)
    results = [ui.computed(f"Training the remedies, seed {s}", view.study, config.replace(seed=s), settings)
               for s in seed_list]
    result = results[0]
    for run in result.sweep + result.two_class:
        if run.diverged_at is not None:
            st.warning(f"**{run.label}, batch {run.batch_size} ({run.sampling}) diverged at step {run.diverged_at}** "
                       "(the loss became NaN or infinite); its accuracy is the one at that step.")

    st.header("1. The batch-size sweep")
    page.chart(figs.sweep(result), "remedies by batch size",
               caption="Share of the held-out test set classified correctly after training, in eval mode (BN "
                       "variants normalize by their running statistics). Every run takes the same number of steps, "
                       "so a small batch also sees fewer samples.")
    st.header("2. Batches that are not i.i.d.")
    st.markdown("Each training batch holds two classes drawn at random, half of each, in random order. The test set "
                "is evaluated in eval mode, as always.")
    page.chart(figs.two_class(result), "two-class batches",
               caption="Left: test accuracy after training (eval mode) with i.i.d. batches (grey) and with two-class "
                       "batches (red), same batch size. Right: test accuracy during training on two-class batches.")
    page.chart(figs.renorm_factors(result), "batch renorm corrections",
               caption="Batch Renorm's r and d in its first layer at every step of the two-class run: the median and "
                       "the range over the layer's channels, and the clipping limits (dotted: [1/r_max, r_max] and "
                       "[-d_max, d_max], 1 and 0 during the warm-up). r and d are computed from the running statistics "
                       "before the step's update and carry no gradient; clipped values sit on a dotted line.")
    cols = st.columns(len(sb.REMEDIES))
    by = sb.by_label(result.two_class)
    for col, (label, pair) in zip(cols, by.items()):
        iid, two = (next(r.final_acc for r in pair if r.sampling == s) for s in sb.SAMPLINGS)
        col.metric(f"{label}: two-class batches", f"{two:.1%}", delta=f"{(two - iid) * 100:+.1f} points vs i.i.d.",
                   help="Eval-mode test accuracy after training on two-class batches, and its difference from the "
                        "same network trained on i.i.d. batches of the same size (percentage points).")
    if len(results) > 1:
        with st.container(border=True):
            st.markdown(seeded.markdown(view.seed_summary(results, seed_list)))
    page.download_all()
