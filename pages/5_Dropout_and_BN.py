"""Dropout and BatchNorm: the variance shift, three orderings, and the fix."""
import streamlit as st

from bnviz import ui
from bnviz.figures import dropout as figs
from bnviz.figures import training_curves
from bnviz.train import EVAL_SUBSET
from bnviz.views import dropout as view

st.set_page_config(page_title="bnviz: dropout and BN", page_icon="📊", layout="wide")

page = ui.Page(
    "dropout", "Dropout and BatchNorm: the variance shift",
    "Inverted dropout keeps each unit with probability p and multiplies it by 1/p: the mean is unchanged, the "
    "variance is not. A BN layer that follows learns the larger training-time variance into its running "
    "statistics, and at test time (dropout off) divides a smaller variance by it. What to look for: the measured "
    "train/eval variance ratio on the closed form, growing as p falls and compounding in deeper layers; no shift "
    "when dropout comes only after the last BN; and what recomputing BN's statistics with dropout off does to "
    "eval accuracy and loss.")


@st.cache_data(max_entries=64, show_spinner="Measuring BN inputs with dropout on and off…")
def analyse(config, _run):
    """Keyed by the run's Config, which names its trained weights."""
    return view.analyse(_run)


def control(widget, name: str, label: str, *args, **kwargs):
    page.view_value(name, view.VIEW_DEFAULTS[name])
    return page.view_control(widget, name, label, *args, **kwargs)


with ui.guard():
    config = page.config(view.DEFAULT, main=("dropout", "depth", "width", "activation", "placement"),
                         view=view.VIEW_DEFAULTS, seeds=True)
    if not config.has_norm:
        st.info(view.NEEDS_NORM)
        st.stop()
    st.latex(r"y=\frac{m\,x}{p},\ m\sim\mathrm{Bernoulli}(p):\qquad \mathrm{Var}_\text{train}(y)=\frac{c^2+v}{p}-c^2,"
             r"\qquad \mathrm{Var}_\text{eval}(y)=v,\qquad \text{ratio}=\frac{(c^2+v)/p-c^2}{v}")
    st.caption("x: the unit's value before dropout, with mean c and variance v over the data; p: keep probability "
               "(= 1 − the dropout rate set above). Li, Chen, Hu & Yang, *Understanding the Disharmony between "
               "Dropout and Batch Normalization by Variance Shift*, CVPR 2019.")
    if config.dropout == 0:
        st.warning("Dropout is 0: nothing is dropped, training and evaluation see the same variance and every ratio "
                   "below is 1. Set a dropout probability above 0 to see the shift.")
    with st.expander("Keep-probability sweep", expanded=True):
        c1, c2 = st.columns([2, 3])
        text = control(c1.text_input, "keeps", "Keep probabilities p (comma-separated)",
                       help=f"Each between {view.KEEP_RANGE[0]:g} and {view.KEEP_RANGE[1]:g}; one training run each "
                            f"(at most {view.MAX_KEEPS}).")
        keeps, notes = view.parse_keeps(text)
        for note in notes:
            c1.warning(f"Keep probabilities: {note}.")
        position = control(c2.radio, "sweep_position", "Ordering for the sweep", view.SWEEP_POSITIONS,
                           format_func=lambda pos: view.ordering_label(config, pos), horizontal=True)

    runs = page.train(view.runs(config, keeps, position), live=training_curves, compare=view.comparisons(config)) or {}
    order_configs = view.ordering_configs(config)
    done = {label: view.find(runs, cfg) for label, cfg in order_configs.items()}
    done = {label: run for label, run in done.items() if run is not None and run.model is not None}
    if len(done) < len(order_configs):
        st.info("Some runs were stopped before the end; the figures show the finished ones.")
    results = {label: analyse(run.config, run) for label, run in done.items()}

    if results:
        st.header("1. The shift at each BN layer")
        page.chart(figs.ratio_by_layer({k: v[0] for k, v in results.items()}), "variance ratio by layer",
                   caption="Bars: for each BN layer, the variance over the training inputs of the layer's input in "
                           "training mode (dropout on; BN normalizing with the statistics of the whole set as one "
                           "batch) divided by the same in eval mode (dropout off, running statistics), averaged over "
                           "units. Same data, same weights, one forward pass each. Diamonds: theory, averaged over "
                           "units: ((c² + v)/p − c²)/v where dropout feeds BN directly, and "
                           "1 + (1/p − 1) Σⱼ Wᵢⱼ² E[aⱼ²] / v where dropout feeds a Linear layer and then BN (c, v, aⱼ "
                           "measured in eval mode). "
                           "Theory covers the dropout just before each layer; deeper layers also inherit the shift of "
                           "the layers below, so they measure higher.")
        page.view_value("units", view.VIEW_DEFAULTS["units"])
        units = page.view_control(st.radio, "units", "Per-unit view of the first BN layer for",
                                  view.SWEEP_POSITIONS,
                                  format_func=lambda pos: view.ordering_label(config, pos), horizontal=True)
        unit_label = view.ordering_label(config, units)
        if unit_label in results:
            page.chart(figs.unit_scatter(view.first_shifted(results[unit_label][0])), "variance ratio per unit",
                       caption="One point per unit of the first BN layer that dropout feeds: its measured "
                               "train/eval variance ratio against the closed form with that unit's own c and v. "
                               "The spread around the diagonal is Monte-Carlo noise of the dropout masks "
                               f"(about sqrt(2/N) relative for N = {min(len(done[unit_label].dataset.x_train), EVAL_SUBSET)} "
                               "samples).")

    st.header("2. Against the keep probability")
    keep_runs = {k: view.find(runs, view.keep_config(config, k, position)) for k in keeps}
    keep_runs = {k: r for k, r in keep_runs.items() if r is not None and r.model is not None}
    if not keeps:
        st.warning("Enter at least one keep probability between 0.1 and 1 to draw this sweep.")
    elif keep_runs:
        shifts = [analyse(r.config, r)[0] for r in keep_runs.values()]
        page.chart(figs.ratio_vs_keep(list(keep_runs), shifts), "variance ratio vs keep probability",
                   caption=f"One network trained per keep probability ({view.ordering_label(config, position)}); "
                           "markers: measured mean train/eval variance ratio of each BN layer's input; dashed: the "
                           "closed form with the measured c and v of each unit, averaged over units; dotted: 1/p, the "
                           "ratio for a zero-mean input. p = 1 is no dropout (ratio 1).")

    if results:
        st.header("3. Three orderings, and the fix")
        page.chart(figs.accuracy_fix({k: v[1] for k, v in results.items()}), "recomputed statistics",
                   caption="Eval mode on the held-out test set. Blue: BN's running statistics as trained (averaged "
                           "with dropout on). Red: every BN layer's statistics replaced by the mean and unbiased "
                           "variance of its input over (up to 1,024) training samples with dropout off and each BN "
                           "normalizing with those statistics (train.population_statistics). Accuracy: share "
                           "classified correctly; loss: mean cross-entropy, which shows changes in confidence that "
                           "accuracy hides.")
        cols = st.columns(len(results))
        for col, (label, (_, fix)) in zip(cols, results.items()):
            col.metric(label, f"{fix.acc_recomputed:.1%}",
                       f"{fix.acc_recomputed - fix.acc_running:+.1%} accuracy; loss {fix.loss_running:.3f} → "
                       f"{fix.loss_recomputed:.3f}",
                       help=f"Test accuracy after recomputing BN statistics with dropout off "
                            f"({fix.acc_recomputed:.1%}) vs with the running statistics ({fix.acc_running:.1%}), and "
                            "the test loss (mean cross-entropy) before and after.")
        st.markdown(
            "Li et al. recommend the third ordering: put dropout **after the last BN layer** (here, only before the "
            "classifier), where no BN sees its variance change; or keep dropout before BN and **recompute the BN "
            "statistics with dropout off** after training, so eval mode normalizes with the variance it will see.")
    page.download_all()
