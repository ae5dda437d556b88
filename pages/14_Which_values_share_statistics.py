"""Which values share statistics: BatchNorm, LayerNorm, InstanceNorm and GroupNorm sets (Wu & He 2018, Fig. 2)."""
import streamlit as st

from bnviz import ui
from bnviz.experiments import shared_statistics as experiment
from bnviz.views import shared_statistics as shared

st.set_page_config(page_title="bnviz: which values share statistics", page_icon="📊", layout="wide")

page = ui.Page(
    "shared", "Which values share statistics",
    "A real activation tensor (N, C, H, W): the output of a convolution of a trained CNN, on 8 test images. Pick one "
    "entry and see the set of entries it is normalized with under BatchNorm (the same channel across the batch), "
    "LayerNorm (the same sample, all channels), InstanceNorm (the same sample and channel) and GroupNorm (the same "
    "sample, a group of channels), with the mean and variance each computes and the normalized value, checked "
    "against torch's own layers.")

DISPLAY = {"layer": "conv 1", "n": shared.DEFAULT_ENTRY[0], "c": shared.DEFAULT_ENTRY[1], "h": shared.DEFAULT_ENTRY[2],
           "w": shared.DEFAULT_ENTRY[3], "groups": shared.DEFAULT_GROUPS}

with ui.guard():
    config = page.config(shared.DEFAULT, view=DISPLAY)
    st.caption(f"The CNN: two 3x3 convolutions (8 and 16 channels), each followed by BatchNorm2d, ReLU and 2x2 "
               f"max-pooling, then a hidden layer and the classifier, trained {config.steps} steps on {config.dataset} "
               f"(batch {config.batch_size}, seed {config.seed}). The tensor: a convolution's output (the input of its "
               "BatchNorm), recorded by bnviz's recorder in eval mode on the first 8 test images.")
    runs = page.train(shared.runs(config))
    if runs and shared.LABEL in runs and runs[shared.LABEL].model is not None:
        run = runs[shared.LABEL]
        tensors = {layer: shared.tensor(run, layer) for layer in shared.LAYERS}
        for name, default in DISPLAY.items():
            page.view_value(name, default)

        def entry_controls() -> None:
            cols = st.columns(6)
            layer = page.view_control(cols[0].selectbox, "layer", "Tensor", list(shared.LAYERS),
                                      help="conv 1: (8, 8, 8, 8), the first convolution's output; conv 2: "
                                           "(8, 16, 4, 4).")
            n, c, h, w = tensors[layer].shape
            page.view_control(cols[1].select_slider, "n", "sample n", list(range(n)))
            page.view_control(cols[2].select_slider, "c", "channel c", list(range(c)))
            page.view_control(cols[3].select_slider, "h", "row h", list(range(h)))
            page.view_control(cols[4].select_slider, "w", "column w", list(range(w)))
            page.view_control(cols[5].selectbox, "groups", "GroupNorm groups G", experiment.divisors(c),
                              help="GroupNorm splits the C channels into G groups of C/G (G = 1: LayerNorm; "
                                   "G = C: InstanceNorm). Wu & He use G = 32 in large networks.")

        @page.part(controls=entry_controls)
        def sets(layer: str, n: int, c: int, h: int, w: int, groups: int) -> None:
            x = tensors[layer if layer in tensors else "conv 1"]
            entry = experiment.clamp_entry((n, c, h, w), x.shape)
            if x.shape[1] % max(int(groups), 1):
                st.warning(f"GroupNorm needs a number of groups that divides the {x.shape[1]} channels; "
                           f"{groups} does not, so G = {shared.DEFAULT_GROUPS} is used.")
                groups = shared.DEFAULT_GROUPS
            found = shared.compute(x, entry, int(groups))
            page.chart(shared.figure(x, found, entry), "which values share statistics",
                       caption="Every value of the tensor is one pixel: rows of tiles are the samples, columns the "
                               "channels, each tile the H x W positions. Coloured: the values normalized together "
                               "with the circled entry (colour = value x); grey: the others. The panel titles give "
                               "the mean and the (biased) variance over the coloured values.")
            st.dataframe({
                "method": [s.method for s in found],
                "values in the set": [s.count for s in found],
                "mean mu": [s.mean for s in found],
                "variance sigma^2": [s.var for s in found],
                "x at the entry": [s.value for s in found],
                "x_hat = (x - mu) / sqrt(sigma^2 + eps)": [s.normalized for s in found],
                "torch's x_hat": [experiment.torch_normalized(x, entry, s.method, int(groups)) for s in found],
            }, hide_index=True)
            st.caption("eps = 1e-5. torch's x_hat: the same tensor through nn.BatchNorm2d (training mode: batch "
                       "statistics over these 8 samples), nn.LayerNorm([C, H, W]), nn.InstanceNorm2d and "
                       f"nn.GroupNorm({groups}, C), without learned gamma and beta, in float64. BatchNorm's set here "
                       "is these 8 samples, as in a training batch of 8.")
    page.download_all()
