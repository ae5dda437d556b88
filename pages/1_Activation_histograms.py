"""Activation histograms: each layer's distribution with and without BN, over training."""
import streamlit as st

from bnviz import ui
from bnviz.record import TAP_LABELS
from bnviz.views import histograms

st.set_page_config(page_title="bnviz: activation histograms", page_icon="📊", layout="wide")

page = ui.Page(
    "histograms", "Activation histograms",
    "The same network trained twice, with and without BatchNorm (same seed, data and batches). What to look for: "
    "without BN the pre-activations drift and spread as training goes on, more so in deeper layers and with a "
    "large weight-init scale (the 'internal covariate shift' of Ioffe & Szegedy, 2015); with BN they stay centred "
    "and scaled, every step, because each feature is standardized over the batch before gamma and beta act. With "
    "the sigmoid, watch the post-activations pile up at 0 and 1 (saturation: the gradient there is nearly 0).")

VIEW_DEFAULTS = {"layer": 0, "step": 0, "tap": "pre_activation", "log_y": False, "bands": "ioffe", "unit": False,
                 "log_color": True, "play": False}

with ui.guard():
    config = page.config(histograms.VIEW.default,
                         main=("activation", "depth", "width", "placement", "momentum", "init_scale"),
                         view=VIEW_DEFAULTS, seeds=True)
    # While they train: the loss curves, and the layer histograms and percentile bands so far.
    runs = page.train(histograms.runs(config), live=histograms.live_figures)
    if runs:
        names = next(iter(runs.values())).history.layer_names
        steps = histograms.recorded_steps(runs)
        # The parts below redraw alone (ui.Page.part): a part's parameters name the display settings
        # it depends on. Layer and tap matter to several parts: their controls come first; the
        # others matter to one part each, which draws them.
        page.view_value("layer", histograms.default_layer(runs), options=range(len(names)))
        page.view_value("step", steps[-1], options=steps)
        for name, options in (("tap", histograms.TAPS), ("bands", tuple(histograms.BANDS))):
            page.view_value(name, VIEW_DEFAULTS[name], options=options)
        for name in ("log_y", "unit", "log_color", "play"):
            page.view_value(name, VIEW_DEFAULTS[name])
        c1, c2 = st.columns([1, 4])
        page.view_control(c1.selectbox, "layer", "Layer", list(range(len(names))), format_func=names.__getitem__,
                          help="Hidden layer of the percentile bands and the heatmaps below.")
        page.view_control(c2.radio, "tap", "Tap point", histograms.TAPS, horizontal=True,
                          format_func=lambda t: TAP_LABELS[t],
                          help="Where in each block the values are read: the input of the nonlinearity, "
                               "the output of the normalization layer, or the output of the nonlinearity.")

        # Each part's own controls are drawn above its figure, after it (see ui.Page.part).
        def step_controls():
            c1, c2 = st.columns([4, 1])
            page.view_control(c1.select_slider, "step", "Step", steps,
                              help="Recorded forward passes: step s uses the weights after s updates.")
            page.view_control(c2.toggle, "log_y", "Log y axis", help="Shows the tails of the histograms.")
            note = histograms.absent_note(runs, page.view("tap"))
            if note:
                st.info(note)

        @page.part(controls=step_controls)
        def layer_histograms(step, tap, log_y):
            page.chart(histograms.layer_histograms(runs, step=step, tap=tap, log_y=log_y), "layer histograms",
                       caption="One panel per hidden layer: the values at the chosen tap in one training forward "
                               "pass (all samples of the batch, all units), on fixed bins shared by both runs. "
                               "Height: share of the values in the bin (count / number of values). Values beyond "
                               "the bins are counted, not dropped: a panel notes their share.")
            page.animation(histograms.ANIMATION, lambda: histograms.animation(runs, tap=tap))

        def band_controls():
            c1, c2 = st.columns([3, 1])
            page.view_control(c1.radio, "bands", "Percentile bands", tuple(histograms.BANDS), horizontal=True,
                              format_func=histograms.BAND_LABELS.__getitem__)
            page.view_control(c2.toggle, "unit", "One unit only",
                              help="Percentiles of unit 1 across the batch, as in Ioffe & Szegedy's Figure 1, "
                                   "instead of all units of the layer together.")

        @page.part(controls=band_controls)
        def percentile_bands(layer, tap, bands, unit):
            page.chart(histograms.percentile_bands(runs, layer=layer, tap=tap, bands=bands, unit=unit),
                       "percentile bands",
                       caption="Percentiles of the chosen layer's values at each recorded step: the median as a "
                               "line, each symmetric pair of percentiles as a shaded band (bands overlap, so the "
                               "middle of the distribution is darkest). The k-th percentile is the value below "
                               "which k% of the values lie (numpy's linear interpolation).")

        def colour_controls():
            page.view_control(st.toggle, "log_color", "Log colour scale",
                              help="Colour by log10 of the share of values: the tails become visible.")

        @page.part(controls=colour_controls)
        def heatmap(layer, tap, log_color):
            page.chart(histograms.histogram_heatmap(runs, layer=layer, tap=tap, log_color=log_color),
                       "histograms over training",
                       caption="The chosen layer's histogram at every recorded step, one column per step, one panel "
                               "per run on one colour scale. Colour: share of that step's values in the bin"
                               + (" (log scale; shares below 0.01% get the lowest colour)." if log_color else "."))

        def play_controls():
            page.view_control(st.toggle, "play", "Play the histograms over training",
                              help="The layer histograms at every recorded step, played in the browser (Play "
                                   "button, step slider under the chart).")

        @page.part(controls=play_controls)
        def played(tap, play):
            if play:
                page.chart(histograms.played_histograms(runs, tap=tap), "layer histograms, played",
                           caption="The layer histograms above at each recorded step (at most "
                                   f"{histograms.MAX_FRAMES} steps, evenly spaced); the y axis is fixed to the "
                                   "highest bin of any step, so heights compare across steps.")
    page.download_all()
