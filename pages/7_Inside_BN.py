"""Inside BN: one tiny batch through Algorithm 1, BatchNorm2d's per-channel statistics, whitening vs BN."""
from dataclasses import asdict, replace

import numpy as np
import pandas as pd
import streamlit as st

from bnviz import ui
from bnviz.experiments import bn_steps, whitening
from bnviz.views import inside

st.set_page_config(page_title="bnviz: inside BN", page_icon="📊", layout="wide")

page = ui.Page(
    "inside", "Inside BN, step by step",
    "What BatchNorm computes, number by number. What to look for: every feature leaves BN with mean 0 and "
    "variance 1 (before gamma and beta), whatever its scale; a conv layer's BN keeps one mean and variance per "
    "channel, over the whole batch and every pixel; and BN does not decorrelate features: that would be whitening, "
    "which it skips on purpose.")

SETTINGS = asdict(inside.Settings())


def table(values: np.ndarray, rows: list[str], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(values, index=rows, columns=columns)


with ui.guard():
    config = page.config(inside.DEFAULT, view=SETTINGS)
    settings = inside.Settings(**page.view_settings(SETTINGS, inside.coerce))

    # Part 2 trains a network and is filled last: if it stops the script (data files missing),
    # parts 1 and 3 have already been drawn.
    part1, part2, part3 = st.container(), st.container(), st.container()
    with part1:
        # ----- 1. Algorithm 1 ---------------------------------------------------------------------------
        st.header("1. One mini-batch through BatchNorm")
        st.markdown("Algorithm 1 of Ioffe & Szegedy (2015), applied to each feature (column) separately, over the "
                    "m samples (rows) of the batch. In training mode BN uses these batch statistics; in eval mode it "
                    "uses running averages of them instead.")
        st.latex(r"\mu_B=\frac1m\sum_{i=1}^m x_i \qquad \sigma_B^2=\frac1m\sum_{i=1}^m (x_i-\mu_B)^2 \qquad "
                 r"\hat x_i=\frac{x_i-\mu_B}{\sqrt{\sigma_B^2+\epsilon}} \qquad y_i=\gamma\,\hat x_i+\beta")

        # The rest of part 1 depends on its three controls: a part of the page (ui.Page.part), redrawn
        # alone when one of them changes. The seed draws part 3's points too.
        @page.part
        def algorithm(batch_seed, gamma, beta):
            c1, c2, c3 = st.columns(3)
            page.view_control(c1.number_input, "batch_seed", "Batch values: seed", min_value=inside.SEED_RANGE[0],
                              max_value=inside.SEED_RANGE[1], step=1,
                              help="Seeds the 4 x 3 batch (and the 2-D points of part 3): feature j has mean about "
                                   "2j - 2 and spread about j + 1, rounded to one decimal.")
            page.view_control(c2.select_slider, "gamma", "gamma (scale, all features)", inside.OPTIONS["gamma"],
                              help="BN's learned scale, initialized to 1. With gamma = sqrt(var + eps) and beta = mu, "
                                   "BN could undo the normalization exactly.")
            page.view_control(c3.select_slider, "beta", "beta (shift, all features)", inside.OPTIONS["beta"],
                              help="BN's learned shift, initialized to 0.")
            shown = replace(settings, batch_seed=int(batch_seed), gamma=gamma, beta=beta)
            steps = inside.tiny_batch(shown)
            m, d = steps.x.shape
            samples = [f"sample {i + 1}" for i in range(m)]
            feats = [f"feature {j + 1}" for j in range(d)]
            top, bottom = st.columns(2), st.columns(2)
            top[0].markdown("**x** (the batch)")
            top[0].table(table(steps.x, samples, feats).style.format("{:g}"))
            top[1].markdown("**batch statistics** (per feature)")
            top[1].table(table(np.vstack([steps.mean, steps.var, np.sqrt(steps.var + steps.eps)]),
                               ["mu_B", "sigma²_B", "sqrt(sigma²_B + eps)"], feats).style.format("{:.4f}"))
            bottom[0].markdown("**x_hat** (normalized)")
            bottom[0].table(table(steps.x_hat, samples, feats).style.format("{:.4f}"))
            bottom[1].markdown(f"**y** = {steps.gamma[0]:g} x_hat + ({steps.beta[0]:g})")
            bottom[1].table(table(steps.y, samples, feats).style.format("{:.4f}"))
            x1 = steps.x[:, 0]
            st.markdown("Feature 1, worked out:")
            st.latex(
                rf"\mu_B=\tfrac14\big({' + '.join(f'({v:g})' for v in x1)}\big)={steps.mean[0]:.4f},\qquad "
                rf"\sigma_B^2=\tfrac14\sum_i (x_i-\mu_B)^2={steps.var[0]:.4f}")
            st.latex(
                rf"\hat x_1=\frac{{{x1[0]:g}-({steps.mean[0]:.4f})}}{{\sqrt{{{steps.var[0]:.4f}+10^{{-5}}}}}}"
                rf"={steps.x_hat[0, 0]:.4f},\qquad y_1={steps.gamma[0]:g}\cdot({steps.x_hat[0, 0]:.4f})+({steps.beta[0]:g})"
                rf"={steps.y[0, 0]:.4f}")
            st.caption(f"Check: each column of x_hat has mean {np.abs(steps.x_hat.mean(axis=0)).max():.1e} (0 up to "
                       f"rounding) and variance {steps.x_hat.var(axis=0).min():.5f} to {steps.x_hat.var(axis=0).max():.5f} "
                       "(1 minus the effect of eps). Variances divide by m, not m - 1: BN normalizes with the biased "
                       "batch variance.")
            page.chart(inside.batch_figure(shown), "Algorithm 1 step by step",
                       caption="The same numbers as colours (red positive, blue negative; one colour scale per panel). "
                               "Computed in float64 numpy from the formulas above.")

            st.subheader("Two implementations, same numbers")
            cmp = bn_steps.compare_implementations(steps)
            c1, c2, c3 = st.columns([2, 2, 1])
            c1.markdown("`bnviz.norms.BatchNorm` (reference, elementary tensor ops)")
            c1.table(table(cmp.reference, samples, feats).style.format("{:.6f}"))
            c2.markdown("`torch.nn.BatchNorm1d` (PyTorch's fused kernel)")
            c2.table(table(cmp.torch, samples, feats).style.format("{:.6f}"))
            c3.metric("largest |difference|", f"{cmp.max_abs_diff:.2e}",
                      help="max over the 12 outputs of |reference - torch|, both in float32, training mode, same gamma, "
                           "beta and eps. float32 carries about 7 significant digits, so ~1e-7 is rounding.")
            c3.metric("largest |float32 - float64|", f"{np.max(np.abs(cmp.torch - steps.y)):.2e}",
                      help="max |torch's float32 output - the float64 values of the tables above|.")

    with part3:
        # ----- 3. Whitening -----------------------------------------------------------------------------------
        st.header("3. What BN does not do: whitening")
        st.markdown(
            "Ioffe & Szegedy start from a known fact: networks train faster when their inputs are **whitened**, "
            "zero mean, unit variance and **uncorrelated**. Standardizing each feature on its own (what BN does) "
            "fixes the first two but leaves the correlation. Whitening removes it with the covariance matrix "
            "Sigma = U Lambda U^T of the d features: PCA whitening z = Lambda^(-1/2) U^T (x - mu) rotates onto the "
            "principal axes, ZCA whitening z = U Lambda^(-1/2) U^T (x - mu) = Sigma^(-1/2) (x - mu) rotates back, "
            "staying as close to the input as possible.")

        @page.part
        def whitening_figures(batch_seed, correlation, scale):
            c1, c2 = st.columns(2)
            page.view_control(c1.select_slider, "correlation", "Correlation of the two features",
                              inside.OPTIONS["correlation"],
                              help="rho of the Gaussian the 500 points are drawn from "
                                   "(bnviz.data.correlated_gaussian).")
            page.view_control(c2.select_slider, "scale", "Scale of feature 2 / feature 1", inside.OPTIONS["scale"],
                              help="Standard deviation of feature 2; feature 1 has 1.")
            shown = replace(settings, batch_seed=int(batch_seed), correlation=correlation, scale=scale)
            data = inside.whitened(shown)
            wfigs = inside.whitening_figures(data)
            page.chart(wfigs["whitening scatter"], "whitening scatter",
                       caption=f"{inside.N_POINTS} points drawn with correlation {shown.correlation:g} and standard "
                               f"deviations 1 and {shown.scale:g}. Standardized: each feature (x - mean) / "
                               "sqrt(var + eps) "
                               "on its own; the cloud is still a tilted ellipse. Whitened: round. PCA's axes are the "
                               "principal components; ZCA's are the original features.")
            corr = {k: whitening.correlation(v)[0, 1] for k, v in data.items()}
            page.chart(wfigs["covariance matrices"], "covariance matrices",
                       caption="Covariance matrices (divide by n). Standardization makes the diagonal 1 but keeps the "
                               "off-diagonal correlation "
                               f"({corr['standardized (what BN does)']:.3f} here, as in the raw data: "
                               f"{corr['raw data']:.3f}); both whitenings give the identity (off-diagonal "
                               f"{max(abs(corr['PCA-whitened']), abs(corr['ZCA-whitened'])):.1e}: not exactly 0 because "
                               "eps = 1e-5 is added to the eigenvalues, as BN adds it to the variance).")

        st.subheader("Why BN does not whiten")
        st.markdown(
            "- **Cost.** For a layer of d units and a batch of m, whitening needs the d x d covariance "
            "(O(m d²)), its eigendecomposition (O(d³), about 9 d³ operations) and a d x d matrix product per "
            "sample, in every training step. BN needs about 7 m d operations.\n"
            "- **Backpropagation.** The gradient must flow through the eigendecomposition. Its derivative contains "
            "1 / (lambda_i - lambda_j) for every pair of eigenvalues, so it is unstable when two eigenvalues are "
            "close, and undefined when they are equal. A mini-batch of m < d samples even has a singular covariance.\n"
            "- **The simplification** (Ioffe & Szegedy, section 3): normalize each feature independently, with the "
            "mini-batch's mean and variance; correlations stay. Two learned parameters per feature, gamma and beta, "
            "let the network undo the normalization where it hurts, so BN can represent the identity.")
        cfigs = inside.cost_figures(config.batch_size)
        batch = config.batch_size
        ratio_1024 = whitening.whitening_flops(batch, 1024) / whitening.batchnorm_flops(batch, 1024)
        page.chart(cfigs["whitening cost"], "whitening cost",
                   caption=f"Leading-order operation counts for one batch of m = {config.batch_size} (the sidebar's "
                           "batch size): BN ~7 m d (mean, variance, normalize, scale and shift); whitening ~4 m d² "
                           "(covariance and applying the matrix) + ~11 d³ (eigendecomposition with eigenvectors, "
                           "~9 d³, "
                           "Golub & Van Loan; forming U Lambda^(-1/2) U^T, 2 d³). At d = 1024 whitening costs about "
                           f"{ratio_1024:,.0f}"
                           " times more.")
        page.chart(cfigs["eigendecomposition gradient"], "eigendecomposition gradient",
                   caption="64 points whose covariance has eigenvalues exactly 1 + gap/2 and 1 - gap/2. Loss: the "
                           "sum of "
                           "ZCA(x) times fixed random weights. y: relative error ||g - g_exact|| / ||g_exact|| of the "
                           "gradient autograd computes through torch.linalg.eigh, against the exact gradient of the "
                           "closed-form inverse square root of a 2x2 matrix (no eigenvectors) in float64. ZCA itself "
                           "is perfectly smooth here; the error comes from differentiating the eigenvectors.")
    with part2:
        # ----- 2. BatchNorm2d per channel ------------------------------------------------------------------------
        st.header("2. After a convolution: one mean and variance per channel")
        st.markdown(
            "A conv layer's output has shape (N, C, H, W): N images, C channels (feature maps), H x W pixels. "
            "`BatchNorm2d` treats each channel as one feature and computes its mean and variance over the "
            "**batch and every pixel**, i.e. over axes (0, 2, 3): m = N·H·W values per channel, so all pixels of a "
            "feature map are normalized alike and the layer stays convolutional. Below: a small CNN (3x3 convs with "
            "8 and 16 channels, each followed by BatchNorm2d, ReLU and 2x2 max-pooling) trained on the 8x8 digits, "
            "and its first conv layer on a batch of test images.")
        runs = page.train(inside.runs(config))
        if runs:
            [run] = runs.values()
            channels = inside.channel_view(run)
            if channels is None:
                st.info("Training was stopped before the end, so there is no trained network to look inside. "
                        "Press Train again to finish it.")
            else:
                # The rest of part 2 depends on the channel only.
                @page.part
                def conv_figures(channel):
                    page.view_control(st.radio, "channel", "Channel to show", inside.OPTIONS["channel"],
                                      format_func=lambda c: f"{c + 1}", horizontal=True,
                                      help="Which of conv 1's 8 channels the feature maps show.")
                    figs = inside.conv_figures(channels, run.dataset.y_test.numpy(), replace(settings, channel=channel))
                    n_img = channels.conv.shape[0]
                    page.chart(figs["input digit images"], "input digit images",
                               caption=f"The batch is the first {n_img} test images (the training batch size). Pixels are "
                                       "standardized with the training set's mean and standard deviation.")
                    page.chart(figs["conv feature maps"], "conv feature maps",
                               caption=f"Top: channel {channel + 1} of conv 1's output (BatchNorm2d's input) for the first "
                                       "images; bottom: the same maps after BatchNorm2d in training mode, (x - mean) / "
                                       "sqrt(var + eps) * gamma + beta with this channel's batch mean and variance. The "
                                       "pattern is unchanged: one affine map per channel, the same for every pixel.")
                    page.chart(figs["per-channel statistics"], "per-channel statistics",
                               caption=f"Blue: this batch's statistics of each channel, reduced over the {n_img} images "
                                       "and "
                                       f"{channels.conv.shape[2]}x{channels.conv.shape[3]} pixels (axes 0, 2, 3; variance "
                                       "divides by m). Red: the running estimates BatchNorm2d accumulated in training "
                                       "(momentum 0.1; the variance unbiased, divided by m - 1), which eval mode uses. The "
                                       "outlined channel is the one shown above.")

    page.download_all()
