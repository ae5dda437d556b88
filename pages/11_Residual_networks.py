"""Residual networks: BN in the block, the skip path's variance, and normalizer-free rivals (De & Smith 2020)."""
from dataclasses import asdict

import streamlit as st

from bnviz import seeds, ui
from bnviz.config import problems
from bnviz.experiments import residual as experiment
from bnviz.views import residual

st.set_page_config(page_title="bnviz: residual networks", page_icon="📊", layout="wide")

page = ui.Page(
    "residual", "Residual networks",
    "The same residual network with BN placed as in the original ResNet (after each weight layer, ReLU after the "
    "addition) or before each weight layer (pre-activation), and without normalization: SkipInit, Fixup, or nothing. "
    "What to look for: with BN on the branch, the skip path's variance grows by about 1 per block, so deep blocks "
    "start close to the identity (their branch adds little); without normalization it doubles per block; SkipInit "
    "and Fixup start every block as the identity by construction.")

SETTINGS = asdict(residual.Settings())

with ui.guard():
    config = page.config(residual.DEFAULT, main=("arch", "width"), view={**SETTINGS, "step": 0}, seeds=True)
    page.view_settings(SETTINGS, residual.coerce)
    c1, c2 = st.columns(2)
    blocks = page.view_control(c1.select_slider, "blocks", "Residual blocks", residual.BLOCKS,
                               help="Blocks of two weight layers each (Linear for the MLP-ResNet, 3x3 convolution for "
                                    "the CNN-ResNet), all of the same width.")
    zero_gamma = page.view_control(c2.toggle, "zero_gamma", "Start each BN branch's last gamma at 0",
                                   help="Goyal et al. (2017): the gamma of the last BN in every branch is "
                                        "initialized to 0, so each BN block starts as the identity (post-activation: "
                                        "ReLU of its input).")
    used = experiment.dataset_for(config)
    if used.dataset != config.dataset:
        st.info(f"The CNN-ResNet needs images: it trains on **{used.dataset}** (the {config.dataset!r} of the sidebar "
                "is not an image data set).")
    found = problems(used)
    if found:
        st.error("**This configuration cannot train.** " + " ".join(found))
        st.stop()
    if residual.blocks_for(config, blocks) != blocks:
        st.warning(f"The CNN-ResNet is limited to {residual.CNN_MAX_BLOCKS} blocks here (one of {blocks} blocks trains "
                   f"for minutes on two cores): showing {residual.CNN_MAX_BLOCKS}. The MLP-ResNet takes up to "
                   f"{max(residual.BLOCKS)}.")
        blocks = residual.blocks_for(config, blocks)
    st.caption(
        f"Networks: a stem ({'3x3 convolution' if config.arch == 'cnn' else 'Linear'}) to "
        f"{16 if config.arch == 'cnn' else config.width} {'channels' if config.arch == 'cnn' else 'units'}, "
        f"{blocks} residual blocks, {'global average pooling and ' if config.arch == 'cnn' else ''}a linear classifier; "
        "He initialization (biases 0) from the same seed for every variant. Variants: **original** "
        "(weight-BN-ReLU-weight-BN, ReLU after the addition), **pre-activation** (BN-ReLU-weight-BN-ReLU-weight, "
        "nothing after the addition), **SkipInit** (the pre-activation branch without BN, times a scalar alpha that "
        "starts at 0), **Fixup** (no BN; scalar biases and a scalar multiplier, the first weight of each branch scaled "
        "by 1/sqrt(blocks), the last one and the classifier at 0), **no normalization** (the pre-activation branch "
        "without BN).")

    st.header("1. At initialization")
    st.latex(r"x_{l+1} = x_l + f_l(x_l):\qquad \begin{aligned} \mathrm{Var}(x_{l+1}) &= \mathrm{Var}(x_l) + 1 "
             r"&& \text{(BN ends the branch)} \\ \mathrm{Var}(x_{l+1}) &= 2\,\mathrm{Var}(x_l) "
             r"&& \text{(no normalization)} \end{aligned}")
    measured = ui.computed("Variances at initialization", residual.init_variances, config, blocks, zero_gamma)
    page.chart(residual.init_figure(measured), "branch and skip variance at initialization",
               caption="Variance of all values of a tensor (over the samples of the first training batch and all "
                       "units or channels and positions), recorded by bnviz's recorder on a training-mode forward "
                       "pass (BN normalizes by the batch's statistics). Skip path of block l: its input (the stem's "
                       "output for block 1). Branch: f_l(x_l) before it is added. Dotted: the closed forms above, "
                       "from the measured Var(x_1); they hold in expectation over the weights (checked by "
                       "Monte-Carlo in the tests). The original block has a ReLU after the addition, so its skip path "
                       "has no such law."
                       + (" In the CNN-ResNet the 3x3 convolutions are zero-padded at the borders of the 8x8 images, "
                          "so a branch adds somewhat less than 1 and the measured growth falls below the dotted line."
                          if config.arch == "cnn" else ""))

    st.header("2. During training")
    labels = list(experiment.variants(zero_gamma))
    n_seeds = residual.seeds_within_budget(config, blocks, zero_gamma, page.n_seeds)
    if n_seeds < page.n_seeds:
        st.warning(f"{page.n_seeds} seeds of {len(labels)} networks of {blocks} blocks for {config.steps} steps would "
                   f"take too long here: training {n_seeds} seed(s). Fewer blocks or steps allow more seeds.")
    over_seeds = residual.by_seed(ui.computed_many("Training the variants", residual.variant_job,
                                                   residual.jobs(config, blocks, zero_gamma, n_seeds)),
                                  labels, n_seeds)
    trained = over_seeds[0]
    for label, run in trained.items():
        if run.curves.diverged_at is not None:
            st.warning(f"**{label}: training diverged at step {run.curves.diverged_at}** (the loss became NaN or "
                       "infinite); its curves stop there. Try a smaller learning rate.")
    steps = sorted({r.step for run in trained.values() for r in run.recorded})
    page.view_value("step", steps[-1], steps)

    @page.part(controls=lambda: page.view_control(st.select_slider, "step", "Recorded step", steps,
                                                  help="Branch and skip variances are recorded on the training "
                                                       "forward pass of these steps (step 0: initialization)."))
    def during_training(step: int) -> None:
        page.chart(residual.ratio_figure(trained, step), "branch over skip during training",
                   caption="Var(branch output) / Var(skip path) per block, on the training batch of the chosen "
                           "step (solid) and of step 0 (dotted). A small ratio: the block is close to the identity.")

    page.chart(residual.curves_figure(trained), "residual training curves",
               caption="Left: training cross-entropy of each mini-batch, moving average of 10 steps. Right: share of "
                       "the held-out test set classified correctly in eval mode (BN with its running statistics)."
                       + (f" The curves and part 2's figure show seed {config.seed}; the numbers below are over "
                          f"{n_seeds} seeds." if n_seeds > 1 else ""))
    summary = residual.summarize([{label: run.curves for label, run in runs.items()} for runs in over_seeds],
                                 config.seed)
    cols = st.columns(len(trained))
    for col, (label, text) in zip(cols, summary.headlines.items()):
        col.metric(f"test accuracy, {label}", text,
                   help=f"Eval mode, after {config.steps} updates"
                        + (f"; {seeds.accuracy_help(n_seeds)}." if n_seeds > 1 else "."))
    if n_seeds > 1:
        st.markdown("\n".join(f"- {line}" for line in summary.verdicts))
        st.caption(summary.caption)
    page.download_all()
