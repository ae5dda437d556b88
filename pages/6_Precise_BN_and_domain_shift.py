"""Precise BN (recomputing BN statistics at the final weights) and covariate shift (AdaBN, fine-tuning)."""
import streamlit as st

from bnviz import ui
from bnviz.config import parse_list
from bnviz.figures import shift as figs
from bnviz.figures import training_curves
from bnviz.views import shift as view

st.set_page_config(page_title="bnviz: precise BN and domain shift", page_icon="📊", layout="wide")

page = ui.Page(
    "shift", "Precise BN and domain shift",
    "BatchNorm's running statistics are a moving average collected while the weights changed, on the training "
    "distribution. What to look for: (a) with a very small or very large momentum the moving average misses the "
    "statistics of the final weights, and averaging the batch statistics of N batches at the end (precise BN) "
    "closes the gap with a few dozen batches; (b) on a shifted test domain the source statistics are wrong, and "
    "re-estimating them on the unlabelled target inputs (AdaBN) recovers much of the accuracy; fine-tuning on a few "
    "labelled target samples behaves differently with BN frozen or trainable.")


@st.cache_data(max_entries=32, show_spinner="Recomputing BN statistics over N batches…")
def precise_curves(configs: tuple, ns: tuple, batch_size: int, _runs, labels: tuple):
    """Keyed by the runs' Configs (they name the trained weights) and the batch settings."""
    return view.precise_curves(_runs, labels, ns, batch_size)


@st.cache_data(max_entries=32, show_spinner="Evaluating on the shifted domain and fine-tuning…")
def shift_results(config, settings: view.TransferSettings, _run):
    return view.shift_results(_run, settings)


def control(widget, name: str, label: str, *args, **kwargs):
    page.view_value(name, view.VIEW_DEFAULTS[name])
    return page.view_control(widget, name, label, *args, **kwargs)


def notes_warning(what: str, notes: list) -> None:
    for note in notes:
        st.warning(f"{what}: {note}.")


def coerce(name: str, low: float, high: float) -> None:
    """Turn a float from the link into a number the widget accepts (with a note if it had to change)."""
    key = page.view_value(name, view.VIEW_DEFAULTS[name])
    value, note = view.coerce_float(name, st.session_state[key], low, high)
    st.session_state[key] = value
    if note:
        st.warning(note + ".")


def show_shift(source, settings) -> None:
    """Part (b)'s charts and numbers for the source network at the chosen shift."""
    curve, stats, result = shift_results(source.config, settings, source)
    page.chart(figs.shift_curve(curve, settings.amount), "covariate shift",
               caption="Share of the shifted test set classified correctly by the network trained on the unshifted "
                       "source. Red: eval mode with the source running statistics. Green: AdaBN (Li et al., 2016): "
                       "every BN layer's statistics replaced by the mean and unbiased variance of its input over the "
                       "shifted test inputs, layer by layer, no labels used. With BN right after the first Linear "
                       "layer, an offset or a scale of the inputs is undone exactly by the first BN layer's new "
                       "statistics. Dotted line: the amount chosen above.")
    if stats is not None:
        page.chart(figs.first_layer(stats), "first BN layer statistics",
                   caption="One point per channel of the first BN layer: the source running statistic (x) and the "
                           f"statistic of the shifted test inputs at amount {settings.amount:g} (y). On the dashed "
                           "diagonal nothing changes; the distance from it is the error frozen statistics make.")
    batch = min(source.config.batch_size, settings.n_labelled)
    page.chart(figs.transfer(result), "transfer",
               caption=f"At amount {settings.amount:g} ({settings.kind}). Fine-tuning: {settings.steps} SGD steps "
                       f"(learning rate {settings.lr:g}, batches of {batch}) on {result.n_labelled} labelled target "
                       "samples, all weights trained. BN frozen: BN layers in eval mode with the source statistics, "
                       "gamma and beta fixed. BN trainable: BN in train mode (batch statistics; the running "
                       "statistics move to the target with the momentum), gamma and beta learned. Accuracy on the "
                       "shifted test set; hover for the loss.")
    for name, s in (("BN frozen", result.finetune_frozen_bn), ("BN trainable", result.finetune_trainable_bn)):
        if s.loss != s.loss or s.acc < 1.0 / source.dataset.n_classes + 0.05:
            st.warning(f"Fine-tuning with {name} ended near chance ({s.acc:.1%}, loss {s.loss:.3f}): the updates "
                       "were too large for this shift. Try a smaller fine-tuning learning rate.")
    m1, m2, m3 = st.columns(3)
    m1.metric("accuracy lost to the shift", f"{result.frozen.acc - result.source_on_source.acc:+.1%}",
              help="Target test accuracy with frozen source statistics minus source test accuracy.")
    m2.metric("AdaBN gain", f"{result.adabn.acc - result.frozen.acc:+.1%}",
              help="Target test accuracy with AdaBN minus with frozen source statistics.")
    m3.metric("trainable minus frozen BN (fine-tuned)",
              f"{result.finetune_trainable_bn.acc - result.finetune_frozen_bn.acc:+.1%}",
              help="Target test accuracy after fine-tuning with BN trainable minus with BN frozen.")


with ui.guard():
    config = page.config(view.DEFAULT, main=("momentum", "depth", "width", "activation"), view=view.VIEW_DEFAULTS,
                         seeds=True)
    training, part_a, part_b = st.container(), st.container(), st.container()
    with part_a:
        st.header("(a) Precise BN")
        st.markdown(
            "**What is computed.** After training, with the weights fixed: draw N batches of the training batch size "
            "from the training set (shuffled, no sample twice within an epoch); run each through the network in "
            "training mode (each BN layer normalizes with that batch's statistics, dropout off, nothing learned); "
            "for every BN layer set `running_mean` = the mean over the N batches of the per-channel batch means and "
            "`running_var` = the mean of the per-channel **unbiased** batch variances. This is fvcore's "
            "`update_bn_stats` (Wu & Johnson, *Rethinking \"Batch\" in BatchNorm*, 2021), and what torch's BN does "
            "with `momentum=None` over N batches. The moving average instead mixes statistics of older weights "
            "(small momentum: it also still remembers its start at mean 0, variance 1) or of a few recent batches "
            "only (large momentum: noisy).")
        c1, c2 = st.columns(2)
        momenta, m_notes = parse_list(
            control(c1.text_input, "momenta", "Momenta to train (comma-separated, PyTorch convention)",
                    help="running = (1 − m) · running + m · batch statistic; 'none' = cumulative average. One "
                         f"training run each, at most {view.MAX_MOMENTA}; the BN momentum setting above is always "
                         "included."),
            view.parse_momentum, limit=view.MAX_MOMENTA, what="momentum values")
        ns, n_notes = parse_list(
            control(c2.text_input, "ns", "N: numbers of batches for precise BN (comma-separated)",
                    help=f"Each of {', '.join(map(str, view.N_OPTIONS))}."),
            view.parse_n, limit=len(view.N_OPTIONS), what="N values")
        with c1:
            notes_warning("Momenta", m_notes)
        with c2:
            notes_warning("Numbers of batches", n_notes)
        ns = sorted(ns)

    with part_b:
        st.header("(b) Covariate shift")
        coerce("amount", *view.AMOUNT_RANGE)
        coerce("ft_lr", min(view.FINETUNE_LRS), max(view.FINETUNE_LRS))
        c1, c2, c3, c4, c5 = st.columns(5)
        kind = control(c1.radio, "kind", "Shift of the test domain", view.KINDS,
                       help="offset: x + a. scale: x · (1 + a). contrast: each image scaled by (1 + a) around its "
                            "own mean. Applied to the (standardized) test inputs only; the network trained on the "
                            "source.")
        amount = control(c2.slider, "amount", "Shift amount a", min_value=view.AMOUNT_RANGE[0],
                         max_value=view.AMOUNT_RANGE[1], step=0.05)
        labelled = control(c3.select_slider, "labelled", "Labelled target samples", view.LABELLED_OPTIONS,
                           help="Fine-tuning uses the first this-many training samples, shifted, with their labels.")
        ft_steps = control(c4.select_slider, "ft_steps", "Fine-tuning steps", view.FINETUNE_STEPS)
        ft_lr = control(c5.select_slider, "ft_lr", "Fine-tuning learning rate", view.FINETUNE_LRS,
                        help="Plain SGD. Fine-tuning usually takes a smaller step than training from scratch.")
        if amount == 0:
            st.info("Shift amount 0: the target domain is identical to the source domain, so frozen and "
                    "re-estimated statistics differ only by the test set's sampling noise. Move the amount above 0 "
                    "to shift it.")

    with training:
        runs = page.train(view.runs(config, momenta), live=training_curves) or {}

    with part_a:
        labels = [label for label in view.runs(config, momenta) if label in runs]
        finished = [label for label in labels if runs[label].model is not None]
        if len(finished) < len(labels):
            st.info("Some runs were stopped before the end; precise BN needs their final weights, so they are "
                    "left out.")
        if not ns:
            st.warning("Enter at least one number of batches N to draw the precise-BN curve.")
        elif finished:
            batch_size = config.batch_size
            if batch_size < 2:
                st.error("Precise BN averages batch statistics, which need at least 2 samples per batch.")
            else:
                curves = precise_curves(tuple(runs[k].config for k in finished), tuple(ns), batch_size, runs,
                                        tuple(finished))
                page.chart(figs.precise_bn(curves), "precise BN",
                           caption=f"Dashed, one per momentum: eval mode with the moving-average statistics as "
                                   f"trained. Black: precise BN over N batches of {batch_size}, mean of "
                                   f"{view.REPEATS} independent draws of the batches (bars: min to max). Dotted: "
                                   "the population statistics (all training samples as one batch), the limit as N "
                                   "grows. The weights are the same for every momentum: BN's running statistics "
                                   "play no part in training, so all momenta share one precise-BN curve.")
                cols = st.columns(len(curves))
                for col, (label, c) in zip(cols, curves.items()):
                    best = float(c.acc[-1].mean())
                    col.metric(label, f"{best:.1%}", f"{best - c.ema.acc:+.1%} vs moving average",
                               help=f"Test accuracy with precise BN over N = {c.n_batches[-1]} batches (mean of "
                                    f"{view.REPEATS} draws) vs {c.ema.acc:.1%} with the running statistics; test "
                                    f"loss {c.ema.loss:.3f} -> {float(c.loss[-1].mean()):.3f}.")

    with part_b:
        st.subheader("Shifted test domain: frozen statistics, AdaBN, fine-tuning")
        source = runs.get(view.momentum_label(config.momentum))
        if source is None:
            st.info("There is no trained source network: see the message above.")
        elif source.model is None:
            st.info("Training of the source network (the BN momentum setting above) was stopped before the end.")
        else:
            show_shift(source, view.TransferSettings(kind=kind, amount=float(amount), n_labelled=int(labelled),
                                                     steps=int(ft_steps), lr=float(ft_lr)))
    page.download_all()
