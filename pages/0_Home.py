"""Home: what BatchNorm is, and the same network trained live with and without it."""
from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

# numpy and plotly only, so far: the title, the formula and its picture reach the browser first.
# On a new server, torch (~2 s of CPU to import) is imported at the lowest priority while the
# browser loads plotly.js and draws the picture, and training waits until it is drawn
# (let_browser_draw): on two cores the two would slow each other down.
from bnviz import navigation
from bnviz.export import modebar_config, pandas_settled, safe_filename
from bnviz.figures import intro
from bnviz.ui_first_paint import let_browser_draw

st.set_page_config(page_title="bnviz: BatchNorm, visualized", page_icon="📊", layout="wide")
APP_DIR = Path(__file__).resolve().parent.parent  # where app.py is

st.title("bnviz: what BatchNorm does inside a network")
st.caption("Small PyTorch networks train live on your machine; every chart is drawn from the numbers recorded "
           "while they train.")
st.markdown(
    "**Batch normalization** (Ioffe & Szegedy, 2015) standardizes every feature of a layer with the mean and "
    "variance of the current mini-batch, then lets the network rescale and shift it with two learned "
    "parameters, gamma and beta. In training it uses the batch's statistics; at test time it uses running "
    "averages of them collected during training: the source of most of BN's surprises.")
st.latex(r"\mu_B=\frac1m\sum_{i=1}^m x_i,\quad \sigma_B^2=\frac1m\sum_{i=1}^m (x_i-\mu_B)^2,\quad "
         r"\hat x_i=\frac{x_i-\mu_B}{\sqrt{\sigma_B^2+\epsilon}},\quad y_i=\gamma\,\hat x_i+\beta")
# Another page's run may be importing pandas meanwhile: plotly must not meet it half-imported.
intro_fig = pandas_settled(intro.standardization_figure)
intro_box = st.container()
pandas_settled(lambda: intro_box.plotly_chart(intro_fig, config=modebar_config(intro.NAME),
                                              key=f"home.chart.{safe_filename(intro.NAME)}", theme=None))
let_browser_draw(1, key="home.first_paint")  # before torch's import: see bnviz/ui_first_paint.py

from bnviz import figures, ui  # noqa: E402 - torch comes with these; see above
from bnviz.seeds import band_caption  # noqa: E402
from bnviz.views import home  # noqa: E402

page = ui.Page("home", None)
with ui.guard():
    with intro_box:
        page.chart(intro_fig, intro.NAME, drawn=True,
                   caption="The formula above applied to one feature over a batch of 256 values (a skewed sample). "
                           "BN moves the batch to mean 0 and standard deviation 1, then gamma and beta set them; "
                           "the shape of the distribution, its skewness included, does not change.")

    config = page.config(home.VIEW.default, main=("activation", "norm", "placement"), seeds=True)
    if not config.has_norm:  # one curve under a "with and without" title would look like a lost run
        st.info("Normalization is off (Normalization: none, or BN placement: no normalization): with and without "
                "would be the same network, so only the network without normalization is trained. Choose a "
                "normalization and a placement to compare the two.")
    runs = page.train(home.runs(config), live=figures.training_curves)
    if runs:
        [(name, fig)] = home.make_figures(config, runs, page.seed_runs).items()
        page.chart(fig, name, caption="Same network, seed, data and batches; only the normalization differs. Loss: training "
                           "cross-entropy of each mini-batch. Accuracy: share of the held-out test set classified "
                           "correctly in eval mode (BN uses its running statistics)." + band_caption(page.n_seeds))
        cols = st.columns(len(runs)) if page.n_seeds == 1 else []  # over seeds: the summary above has them
        for col, (label, run) in zip(cols, runs.items()):
            last = run.history.evals[-1]
            col.metric(f"test accuracy, {label}", f"{last.test_acc:.1%}",
                       help=f"Eval mode, after {last.step} updates; trained in {run.history.elapsed_s:.1f} s.")
    page.download_all()

    st.subheader("The views")
    for section, entries in navigation.sections(APP_DIR).items():
        listed = [e for e in entries if e.number != navigation.HOME]
        if listed:
            st.markdown(f"**{section}**")
            for entry in listed:
                try:
                    st.page_link(str(entry.path), label=entry.title)
                except StreamlitPageNotFoundError:  # this script run on its own, not through app.py
                    st.markdown(f"[{entry.title}](/{entry.url_path})")
