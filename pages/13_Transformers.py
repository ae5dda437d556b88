"""Transformers: LayerNorm before or after the residual addition, warm-up, RMSNorm and DyT."""
from dataclasses import asdict

import streamlit as st

from bnviz import seeds, ui
from bnviz.experiments import transformer as experiment
from bnviz.views import residual, transformer

st.set_page_config(page_title="bnviz: transformers", page_icon="📊", layout="wide")

page = ui.Page(
    "transformer", "Transformers: where the LayerNorm goes",
    "A tiny transformer encoder learns to sort 8 digits, with LayerNorm after each residual addition (Post-LN, the "
    "original), before each sub-layer (Pre-LN), RMSNorm or DyT in its place, or no normalization. What to look for: "
    "Post-LN trains only with a learning-rate warm-up at a learning rate where Pre-LN trains without one (Xiong et al. "
    "2020); LayerNorm removes a vector's shift and scale, RMSNorm only its scale; and LayerNorm's input-output "
    "relation across tokens, which DyT's tanh imitates (Zhu et al. 2025).")

SETTINGS = asdict(transformer.Settings())
DISPLAY = {"shift": 1.0, "scale": 2.0, "source": experiment.run_label("Pre-LN", transformer.Settings.warmup),
           "norm_layer": "blocks.0.norm1"}

with ui.guard():
    # the task is generated in code: no data set control
    config = page.config(transformer.DEFAULT, sidebar=tuple(n for n in ui.SHARED if n != "dataset"),
                         view={**SETTINGS, **DISPLAY}, seeds=True)
    page.view_settings(SETTINGS, transformer.coerce)
    c1, c2, c3 = st.columns(3)
    layers = page.view_control(c1.select_slider, "layers", "Transformer blocks", transformer.LAYERS,
                               help="Encoder blocks of model width 32, 2 attention heads, feed-forward width 64.")
    warmup = page.view_control(c2.select_slider, "warmup", "Warm-up steps", transformer.WARMUPS,
                               help="With warm-up the learning rate rises linearly from lr/warm-up to lr over these "
                                    "steps (step s uses lr * min(1, (s + 1) / warm-up)), then stays at lr.")
    all_variants = page.view_control(c3.toggle, "all_variants", "Also train RMSNorm, DyT and no normalization",
                                     help="Post-LN and Pre-LN are always trained; this adds three more networks "
                                          "(twice each: with and without warm-up).")
    st.caption(
        f"Task: 4,000 random sequences of 8 tokens (digits 0-9) and 500 held-out ones; the target at every position is "
        f"the sorted sequence. Network: token and learned position embeddings (width 32), {layers} encoder block(s) "
        "(self-attention with 2 heads, no mask; ReLU feed-forward of width 64; no dropout), a final norm for the "
        "pre-norm variants, a linear head per position. Xavier-uniform weights, zero biases, from the same seed for "
        f"every variant; cross-entropy per token, {config.optimizer} with peak learning rate {config.lr:g}, batch "
        f"{config.batch_size}, {config.steps} steps. Post-LN: x = LN(x + SA(x)), x = LN(x + FF(x)). Pre-LN: "
        "x = x + SA(LN(x)), x = x + FF(LN(x)). RMSNorm and DyT variants are pre-norm.")

    st.header("1. Gradients at initialization")
    norms = ui.computed("Gradients at initialization", transformer.init_gradients, config, layers)
    page.chart(transformer.gradients_figure(norms), "transformer gradients at initialization",
               caption="Frobenius norm of the gradient of the first training batch's mean cross-entropy with respect "
                       "to each block's second feed-forward weight W2 (the quantity of Xiong et al.'s Figure 3), at "
                       "initialization. Xiong et al. show, for 6-layer models of width 512, Post-LN's growing toward "
                       "the output and Pre-LN's level; here, for a tiny model, read what is measured: the comparison "
                       "that matters is Post-LN's gradient near the output against Pre-LN's.")
    if layers > 1:
        post, pre = norms["Post-LN"], norms["Pre-LN"]
        cols = st.columns(2)
        cols[0].metric("last / first layer, Post-LN", f"{post[-1] / post[0]:.2f}",
                       help="||dL/dW2|| of the last block over that of the first, at initialization.")
        cols[1].metric("last / first layer, Pre-LN", f"{pre[-1] / pre[0]:.2f}",
                       help="||dL/dW2|| of the last block over that of the first, at initialization.")

    st.header("2. LayerNorm and RMSNorm on one vector")
    st.latex(r"\mathrm{LN}(v)=\frac{v-\mu}{\sqrt{\sigma^2+\epsilon}},\quad "
             r"\mathrm{RMS}(v)=\frac{v}{\sqrt{\tfrac1d\sum_i v_i^2+\epsilon}},\qquad \epsilon = 10^{-5}"
             r"\ \text{(without their learned }\gamma,\beta\text{)}")
    page.view_value("shift", 1.0, transformer.SHIFTS)
    page.view_value("scale", 2.0, transformer.SCALES)

    def vector_controls() -> None:
        a, b = st.columns(2)
        page.view_control(a.select_slider, "shift", "shift c (added to every feature)", transformer.SHIFTS)
        page.view_control(b.select_slider, "scale", "scale s (multiplies every feature)", transformer.SCALES,
                          help="A negative scale flips the vector: both norms flip their output with it.")

    @page.part(controls=vector_controls)
    def one_vector(shift: float, scale: float) -> None:
        page.chart(transformer.vector_figure(shift, scale), "layernorm vs rmsnorm on one vector",
                   caption="Blue: a fixed vector v of 8 features and its normalizations; red: the same for s·v + c. "
                           "'Largest change': the largest |difference| between the two outputs over the features. "
                           "LayerNorm subtracts the mean, so a shift c disappears; both divide by a spread, so a "
                           "positive scale s disappears (up to eps).")

    st.header("3. Warm-up: Post-LN needs it")
    n_seeds = transformer.seeds_within_budget(config, layers, all_variants, page.n_seeds)
    labels, jobs = transformer.jobs(config, layers, warmup, all_variants, n_seeds)
    if n_seeds < page.n_seeds:
        st.warning(f"{page.n_seeds} seeds of {len(labels)} networks of {layers} blocks for {config.steps} steps would "
                   f"take too long here: training {n_seeds} seed(s). Fewer blocks, steps or networks allow more seeds.")
    over_seeds = residual.by_seed(ui.computed_many("Training", transformer.run_job, jobs), labels, n_seeds)
    trained = over_seeds[0]
    for label, run in trained.items():
        if run.curves.diverged_at is not None:
            st.warning(f"**{label}: training diverged at step {run.curves.diverged_at}** (the loss became NaN or "
                       "infinite); its curves stop there.")
    page.chart(transformer.warmup_figure(trained), "training with and without warm-up",
               caption="Top: share of the 500 × 8 held-out target tokens predicted correctly (eval mode). Bottom: "
                       "training cross-entropy per token, moving average of 10 steps. Chance is 10 %. Dotted: the end "
                       "of the warm-up."
                       + (f" The curves and part 4 show seed {config.seed}; the numbers below are over "
                          f"{n_seeds} seeds." if n_seeds > 1 else ""))
    summary = residual.summarize([{label: run.curves for label, run in runs.items()} for runs in over_seeds],
                                 config.seed)
    cols = st.columns(min(len(trained), 5))
    for i, (label, text) in enumerate(summary.headlines.items()):
        cols[i % len(cols)].metric(f"test accuracy, {label}", text,
                                   help=f"Per token, eval mode, after {config.steps} updates"
                                        + (f"; {seeds.accuracy_help(n_seeds)}."
                                           if n_seeds > 1 else "."))
    if n_seeds > 1:
        st.markdown("\n".join(f"- {line}" for line in summary.verdicts))
        st.caption(summary.caption.replace("Final test accuracy", "Final test accuracy per token"))

    st.header("4. LayerNorm's input and output: the S-shape DyT imitates")
    st.latex(r"\mathrm{DyT}(x) = \gamma \odot \tanh(\alpha x) + \beta")
    sources = transformer.layernorm_runs(trained)
    page.view_value("source", DISPLAY["source"] if DISPLAY["source"] in sources else sources[0], sources)
    scatters = {label: transformer.scatters(config, trained[label]) for label in sources}
    names = [s.name for s in scatters[sources[0]]]
    page.view_value("norm_layer", names[0], names)

    def scatter_controls() -> None:
        a, b = st.columns(2)
        page.view_control(a.selectbox, "source", "Trained network", sources)
        page.view_control(b.selectbox, "norm_layer", "LayerNorm layer", names)

    @page.part(controls=scatter_controls)
    def layernorm_scatter(source: str, norm_layer: str) -> None:
        chosen = next(s for s in scatters[source] if s.name == norm_layer)
        page.chart(transformer.scatter_figure(chosen), "layernorm input vs output",
                   caption="Every token of 64 training sequences (512 tokens), features 0-7: the value entering the "
                           "LayerNorm (x) against its normalized value before gamma and beta, x_hat = (y - beta) / "
                           "gamma, from gamma and beta as recorded. Each token is normalized by its own mean and "
                           "variance, so one feature's points spread around a curve; tokens with extreme values are "
                           "squashed. Black: the curve gamma·tanh(alpha·x) closest to the points (least squares): "
                           "what a DyT layer with those parameters would compute. In this small model most layers are "
                           "close to linear; Zhu et al. see the S-shape in the deeper layers of large trained models.")
    page.download_all()
