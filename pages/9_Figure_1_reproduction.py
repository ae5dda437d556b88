"""Ioffe & Szegedy (2015), Figure 1: their 3 x 100 sigmoid MLP with and without BN, on the bundled digits."""
import streamlit as st

from bnviz import figures, ui
from bnviz.views import figure1

st.set_page_config(page_title="bnviz: Figure 1 reproduction", page_icon="📊", layout="wide")

page = ui.Page(
    "figure1", "Ioffe & Szegedy 2015, Figure 1",
    "The figure that introduced BatchNorm, rerun live. What to look for: (a) with BN the test accuracy rises "
    "within a few hundred steps, without BN it waits on a plateau and then climbs more slowly; (b) without BN "
    "the input of a sigmoid in the last hidden layer drifts and spreads over training (its distribution keeps "
    "changing, what the paper calls internal covariate shift); (c) with BN it stays centred with a steady spread.")

SIDEBAR = ("seed", "steps", "batch_size", "lr", "optimizer")

with ui.guard():
    config = page.config(figure1.DEFAULT, sidebar=SIDEBAR, view={"mnist": False}, seeds=True)
    st.markdown(
        "**Their setup** (section 4.1 of the paper): MNIST, a network of **3 fully connected hidden layers of 100 "
        "sigmoid units** and a 10-way softmax, **mini-batches of 60**, trained for 50,000 steps; the BN network "
        "normalizes every hidden layer before its sigmoid. **Here**: the same network and batch size on "
        "scikit-learn's bundled digits, **1,797 images of 8x8 pixels** (1,437 to train, 360 to test) instead of "
        "MNIST's 60,000 + 10,000 images of 28x28; **2,000 steps** (about 83 passes over the small training set) "
        "instead of 50,000; plain SGD with learning rate 0.3 (the paper does not give its rate); PyTorch's default "
        "uniform initialization instead of their small random Gaussian weights. The linear layers before BN have "
        "no bias (BN's beta replaces it). The sidebar changes steps, batch size, learning rate, optimizer and seed.")

    missing = figure1.mnist_missing()
    mnist_key = page.view_value("mnist", False)
    if missing is not None and st.session_state[mnist_key]:
        st.session_state[mnist_key] = False
        st.warning("The link asks for MNIST, but the MNIST files are not on this machine: showing the digits.")
    use_mnist = page.view_control(
        st.toggle, "mnist", "Run on local MNIST files (20,000 training images, 28x28)", disabled=missing is not None,
        help="Trains the same preset on MNIST read from local files; nothing is ever downloaded.")
    if missing is not None:
        st.info("MNIST is not available, so this toggle is disabled. " + missing)
    if use_mnist:
        config = figure1.on_mnist(config)
    st.caption(f"This run: {'MNIST (20,000 training images)' if use_mnist else 'bundled digits'}, "
               f"{config.steps} steps, batch {config.batch_size}, {config.optimizer} with learning rate {config.lr:g}, "
               f"seed {config.seed}.")

    runs = page.train(figure1.runs(config), live=figures.training_curves)
    if runs:
        figs = figure1.make_figures(config, runs, page.seed_runs)
        for name, fig in figs.items():
            layer = runs[figure1.WITH].history.layer_names[figure1.last_layer(config)]
            page.chart(fig, name, caption=(
                "(a) Share of the held-out test set classified correctly, in eval mode (BN uses its running "
                "statistics), every 50 steps. (b, c) At each recorded step (every 20 steps, thinned to at most 200 "
                f"points), the 15th, 50th and 85th percentiles over the training batch of the input of unit 1 of "
                f"{layer} to its sigmoid: the weighted sum Wu without BN, BN's output gamma x_hat + beta with BN. "
                "Line: median; band: 15th to 85th percentile (70% of the batch)."
                + (f" (a) over {page.n_seeds} seeds: mean and 95 % Student t-interval at each evaluation; "
                   f"(b, c) show seed {config.seed}." if page.n_seeds > 1 else "")))
        cols = st.columns(len(runs)) if page.n_seeds == 1 else []  # over seeds: the summary above has them
        for col, (label, run) in zip(cols, runs.items()):
            last = run.history.evals[-1]
            col.metric(f"test accuracy, {label}", f"{last.test_acc:.1%}",
                       help=f"Eval mode (BN with its running statistics), after {last.step} updates; trained in "
                            f"{run.history.elapsed_s:.1f} s.")
    page.download_all()
