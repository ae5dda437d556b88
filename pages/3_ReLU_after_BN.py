"""ReLU after BN: the next layer's input for BN->ReLU, ReLU->BN and no BN, against the rectified Gaussian."""
import streamlit as st

from bnviz import figures, ui
from bnviz.views import histograms, relu

st.set_page_config(page_title="bnviz: ReLU after BN", page_icon="📊", layout="wide")

page = ui.Page(
    "relu", "ReLU after BN",
    "The same ReLU network trained three times (same seed, data and batches): BN before the ReLU, BN after it, and "
    "no BN. What to look for: BN→ReLU hands the next layer a rectified Gaussian, not a standardized input: at "
    "initialization (gamma = 1, beta = 0) half its values are exactly 0, the mean is 1/sqrt(2 pi) = 0.399 and the "
    "standard deviation 0.584. ReLU→BN hands it BN's output instead: centred and scaled by gamma and beta, with no "
    "exact zeros. Without BN the scale drifts with depth and training. As BN→ReLU trains, beta moves each unit's "
    "threshold: a negative beta silences the unit more than half the time (more zeros), a positive one less.")

CAPTION_NEXT = ("Values leaving the chosen layer in one training forward pass (all samples, all units), "
                "i.e. the input of the next layer. Left: density of the values that are not exactly 0 "
                "(share of all values per unit of x, so runs binned on different ranges compare; the "
                "exact zeros are taken out; after ReLU→BN the ReLU's zeros reappear as one value per "
                "unit, (0 - batch mean) / batch std x gamma + beta: the tall spike below 0). Right: share "
                "of values exactly 0; the black mark is the "
                "rectified-Gaussian prediction for BN→ReLU from its gamma and beta, "
                "avg over units of Phi(-beta/|gamma|) (with dropout after the ReLU: 1 - (1-p)(1 - that)).")
CAPTION_CHECK = ("BN→ReLU run, output of the ReLU in every layer. Bars: recorded density of the non-zero "
                 "values. Line: the density predicted if each unit's BN output were exactly N(0, 1), so "
                 "that unit j gives ReLU(N(beta_j, gamma_j^2)), averaged over the units. It integrates to "
                 "1 minus the predicted share of exact zeros, which the arrow at 0 gives next to the "
                 "recorded share. BN makes each unit's batch mean exactly 0 but not its distribution "
                 "Gaussian, so expect close, not equal, numbers.")
CAPTION_MOMENTS = ("Per layer, at the chosen step: mean, standard deviation (population, over all samples and "
                   "units) and share of values exactly 0 of the next layer's input. Dashed: the "
                   "rectified-Gaussian prediction for BN→ReLU from its gamma and beta (at initialization: "
                   "0.399, 0.584 and 50%).")
CAPTION_GAMMA_BETA = ("BN→ReLU run. Top: each BN layer's learned scale gamma and shift beta, mean over the "
                      "layer's units and +-1 standard deviation across them. Bottom left: share of the ReLU's "
                      "outputs that are exactly 0, recorded (solid) and predicted as the average over units "
                      "of Phi(-beta_j/|gamma_j|) (dashed), Phi being the standard normal CDF. Bottom right: "
                      "share of units whose beta is negative, i.e. whose ReLU is off for more than half "
                      "of the inputs.")
CAPTION_THEORY = ("Theory: ReLU of a unit Gaussian shifted by mu, which is what beta does to a unit "
                  "(mu = beta/|gamma|; the mean and std then scale by |gamma|). Points: each BN→ReLU "
                  "layer at the chosen step, at its units' average beta/|gamma| (bar: +-1 std across "
                  "units) and its recorded share of exact zeros. The units of a layer have different "
                  "shifts, so a point need not sit exactly on the curve.")

VIEW_DEFAULTS = {"layer": 0, "step": 0, "log_y": False}

with ui.guard():
    config = page.config(relu.VIEW.default,
                         main=("depth", "width", "init_scale", "dropout", "dropout_position", "affine"),
                         view=VIEW_DEFAULTS, seeds=True)
    configs = relu.runs(config)
    st.markdown("**The three networks**, in the order a value meets the layers (dropout appears where the "
                "dropout settings put it, when its probability is above 0):\n\n"
                + "\n".join(f"- {label}: {relu.ordering(cfg)}" for label, cfg in configs.items()))
    runs = page.train(configs, live=figures.training_curves)
    if runs:
        names = next(iter(runs.values())).history.layer_names
        steps = histograms.recorded_steps(runs)
        # The charts below are parts (ui.Page.part): a display change redraws only those drawn with
        # it (a part's parameters name the settings it depends on).
        c1, c2, c3 = st.columns([1, 4, 1])
        page.view_value("layer", histograms.default_layer(runs))
        page.view_control(c1.selectbox, "layer", "Layer", list(range(len(names))), format_func=names.__getitem__,
                          help="Hidden layer whose output (the next layer's input) is compared.")
        page.view_value("step", steps[-1])
        page.view_control(c2.select_slider, "step", "Step", steps,
                          help="Recorded forward passes: step s uses the weights after s updates. At step 0 "
                               "gamma = 1 and beta = 0, so BN→ReLU should give ReLU(N(0, 1)).")
        page.view_control(c3.toggle, "log_y", "Log y axis", help="Shows the tails of the densities.")

        @page.part
        def next_layer_input(layer, step, log_y):
            page.chart(relu.next_layer_input(runs, layer=layer, step=step, log_y=log_y), "next-layer input",
                       caption=CAPTION_NEXT)

        @page.part
        def at_step(step):
            check = relu.rectified_gaussian_check(runs, step=step)
            if check is not None:
                page.chart(check, "BN-ReLU vs rectified Gaussian", caption=CAPTION_CHECK)
            page.chart(relu.relu_moments(runs, step=step), "moments across depth", caption=CAPTION_MOMENTS)

        gamma_beta = relu.gamma_beta_over_training(runs)
        if gamma_beta is not None:
            page.chart(gamma_beta, "gamma and beta over training", caption=CAPTION_GAMMA_BETA)

            @page.part
            def theory(step):
                page.chart(relu.shifted_relu_theory(runs, step=step), "ReLU of a shifted Gaussian",
                           caption=CAPTION_THEORY)
    page.download_all()
