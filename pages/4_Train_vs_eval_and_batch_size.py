"""Train vs eval mode, single-sample inference, and a batch-size sweep of BN / GN / LN / no norm."""
import streamlit as st

from bnviz import ui
from bnviz.seeds import band_caption
from bnviz.experiments import sweeps
from bnviz.config import problems
from bnviz.figures import batchsize as figs
from bnviz.views import batchsize as view

st.set_page_config(page_title="bnviz: train vs eval, batch size", page_icon="📊", layout="wide")

page = ui.Page(
    "batchsize", "Train vs eval mode, and batch size",
    "In training mode BatchNorm normalizes each input with the mean and variance of the batch it is in; in eval "
    "mode with running averages collected during training. What to look for: in train mode one input's prediction "
    "moves with its batch-mates (less in larger batches); a batch of one cannot be normalized at all; and in the "
    "sweep, BatchNorm's accuracy falls at small batches, where its batch statistics are noisy (the noise follows "
    "sigma / sqrt(n)), while GroupNorm and LayerNorm, which normalize each sample on its own, hold.")


@st.cache_data(max_entries=64, show_spinner="Putting the input into random batches…")
def dependence(config, index: int, _run) -> list:
    """Keyed by the network's Config (which names the trained weights) and the input."""
    return view.batch_dependence_all(_run, index)


@st.cache_data(max_entries=64, show_spinner=False)
def batch_of_one_figure(config, index: int, _run):
    return view.batch_of_one(_run, index)


def control(widget, name: str, label: str, *args, **kwargs):
    """A display/experiment control kept in the URL, starting at the view's default."""
    page.view_value(name, view.VIEW_DEFAULTS[name])
    return page.view_control(widget, name, label, *args, **kwargs)


def sweep_settings() -> tuple[list[int], list[str]]:
    """The sweep's batch sizes and normalizations (kept in the URL), with a note for each bad value."""
    st.markdown("**Sweep**: the same network trained once per (normalization, batch size): same seed, steps, "
                "learning rate and width as the network above; only these two change.")
    c1, c2 = st.columns([2, 3])
    text = control(c1.text_input, "sizes", "Batch sizes (comma-separated)",
                             help="Each of 1, 2, 4, 8, 16, 32, 64, 128, 256. BatchNorm cannot train with 1.")
    sizes, notes = sweeps.parse_batch_sizes(text)
    for note in notes:
        c1.warning(f"Batch sizes: {note}.")
    cols = c2.columns(4)
    norms = [norm for col, (name, norm) in zip(cols, view.NORM_TOGGLES.items())
             if control(col.checkbox, name, sweeps.NORM_LABELS[norm])]
    return sizes, norms


def clamp_sample(n_test: int) -> None:
    key = page.view_value("sample", view.VIEW_DEFAULTS["sample"])
    value = st.session_state[key]
    if not isinstance(value, int) or not 0 <= value < n_test:
        fixed = min(max(int(value), 0), n_test - 1) if isinstance(value, int) else 0
        st.warning(f"Test sample {value!r} does not exist: the test set has samples 0 to {n_test - 1}; "
                   f"showing #{fixed}.")
        st.session_state[key] = fixed


with ui.guard():
    config = page.config(view.DEFAULT, main=("depth", "width", "activation", "momentum"), view=view.VIEW_DEFAULTS,
                         seeds=True)
    with st.expander("Sweep: batch sizes and normalizations", expanded=True):
        sizes, norms = sweep_settings()
    sweep_configs, skipped = sweeps.sweep_configs(config, sizes, norms)
    for note in skipped:
        st.info(note)
    per_sample = [sweeps.NORM_LABELS[n] for n in norms if n in ("groupnorm", "layernorm")]
    if per_sample and sizes and min(sizes) <= 2:
        st.caption(f"{' and '.join(per_sample)} at batch {min(sizes)}: fine. They normalize within each sample, "
                   "so the batch size does not enter their statistics at all.")
    if not sizes or not norms:
        st.warning("The sweep needs at least one batch size and one normalization; it is skipped until you "
                   "choose some.")
    main_problem = problems(view.main_config(config))
    if main_problem:
        st.error("**Part 1 needs a BatchNorm network, which cannot train with the sidebar's batch size of 1.** "
                 + " ".join(main_problem) + " Choose a batch size of 2 or more in the sidebar for part 1; the sweep "
                 "below runs without it.")

    runs = page.train(view.runs(config, sizes, norms), live=figs.sweep_live,
                      compare=view.comparisons(sizes, norms)) or {}

    st.header("1. One input, different batches")
    main = runs.get(view.MAIN)
    if main is not None and main.model is None:
        st.info("Training of the BN network was stopped before the end; part 1 needs the trained weights.")
    elif main is not None:
        data = main.dataset
        st.markdown(
            f"A BatchNorm network trained with batches of {config.batch_size}. In **eval mode** (`model.eval()`) "
            "each BN layer subtracts its running mean and divides by its running standard deviation: fixed numbers, "
            "so the output for an input is the same alone or in any batch. In **train mode** it uses the mean and "
            "variance of the current batch, so the same input gets different outputs in different batches.")
        clamp_sample(len(data.x_test))
        c1, c2 = st.columns(2)
        index = control(c1.number_input, "sample", "Test sample", min_value=0,
                                  max_value=len(data.x_test) - 1, step=1,
                                  help="Index into the held-out test set.")
        in_batch = control(c2.select_slider, "in_batch", "Size of the batches it is put in",
                                     view.IN_BATCH_SIZES,
                                     help="The input plus this many minus one other test samples, drawn at random "
                                          f"{view.N_BATCHES} times.")
        deps = dependence(main.config, int(index), main)
        chosen = next((d for d in deps if d.batch_size == in_batch), deps[-1])
        if chosen.batch_size != in_batch:
            st.warning(f"The test set has only {len(data.x_test)} samples: showing batches of {chosen.batch_size}.")
        page.chart(figs.batch_dependence(chosen), "one input across batches",
                   caption=f"Box and dots: the input's softmax probability for each class in train mode (BN uses the "
                           f"batch's mean and biased variance; dropout off), once per random batch of {in_batch}. "
                           f"Diamond: eval mode (running statistics). True class {chosen.label}.")
        m1, m2, m3 = st.columns(3)
        m1.metric("prediction differs from eval mode", f"{chosen.flip_rate:.0%} of batches",
                  help=f"Share of the {view.N_BATCHES} batches of {in_batch} in which the train-mode arg-max class is "
                       f"not eval mode's class ({chosen.eval_class}).")
        m2.metric("mean total-variation distance", f"{chosen.total_variation:.3f}",
                  help="0.5 x sum over classes of |p_train - p_eval|, averaged over the batches: 0 = same "
                       "probabilities, 1 = no overlap.")
        m3.metric("eval mode: alone vs inside a batch", f"{chosen.eval_in_batch_max_diff:.1e}",
                  help="Largest absolute difference between the input's logits computed alone and inside a batch, in "
                       "eval mode: zero up to float rounding, because eval mode does not look at the batch.")
        page.chart(figs.batch_dependence_by_size(deps), "train vs eval by batch size",
                   caption="For the same input: how far the train-mode probabilities are from eval mode's, for batches "
                           "of each size. Larger batches have batch statistics closer to the running ones, so train "
                           "mode converges towards eval mode.")

        st.header("2. Predicting a single sample")
        error = sweeps.batch_of_one_error(main.model, data.x_test[int(index):int(index) + 1])
        st.markdown(
            "In deployment a network often sees one input at a time. **Eval mode works**: the running statistics "
            "do not depend on the batch. **Train mode cannot**: a batch of one has mean = the input itself and "
            "variance 0, so x̂ = (x − x) / √(0 + ε) = 0 in every channel and each BN layer outputs its β "
            "whatever the input. torch refuses such a batch:")
        if error:
            st.code(error, language=None, wrap_lines=True)
        page.chart(batch_of_one_figure(main.config, int(index), main), "batch of one",
                   caption="Left: eval-mode probabilities of three test inputs, each run alone. Right: what train "
                           "mode would give each of them as a batch of one, computed exactly by running the input "
                           "as a batch of two identical copies (same mean, zero variance, which torch accepts): "
                           "the same bars for every input.")

    st.header("3. Batch size sweep")
    if sweep_configs:
        sweep = sweeps.summarize(runs, sweep_configs)
        if sweep.missing:
            st.info(f"Not shown (training stopped before the end): {', '.join(sweep.missing)}.")
        if sweep.points:
            page.chart(view.sweep_figure(sweep, sweep_configs, page.seed_runs), "batch size sweep",
                       caption=f"Share of the {config.dataset} test set classified correctly after {config.steps} "
                               "steps, in eval mode (BN: running statistics). Dotted: BN normalizing each test batch "
                               "(of the training batch size) by its own statistics. Every run takes the same number "
                               "of steps, so smaller batches also see fewer samples: the no-normalization line shows "
                               "what that alone costs. GroupNorm: groups of 16 units; LayerNorm: all units of a layer."
                               + (f" Dotted lines and parts 1-2: seed {config.seed}." + band_caption(page.n_seeds)
                                  if page.n_seeds > 1 else ""))
            st.markdown(
                "**The known result.** Wu & He, *Group Normalization* (ECCV 2018), Figure 1: ResNet-50 on ImageNet, "
                "BN's top-1 error is 23.6 % at 32 images per GPU and rises to 34.7 % at 2; GN stays at about 24 % "
                "for every batch size. The numbers here come from a small MLP on a small data set, trained for a "
                "few hundred steps in seconds: compare the shape, not the values.")
            bn2, bn64 = sweep.accuracy("batchnorm", min(sizes)), sweep.accuracy("batchnorm", max(sizes))
            gn2 = sweep.accuracy("groupnorm", min(sizes))
            if bn2 is not None and bn64 is not None:
                st.caption(f"Here: BatchNorm {bn2:.1%} at batch {min(sizes)} vs {bn64:.1%} at batch {max(sizes)}"
                           + (f"; GroupNorm {gn2:.1%} at batch {min(sizes)}." if gn2 is not None else "."))
            if any(p.noise is not None for p in sweep.points):
                page.chart(figs.sweep_noise(sweep), "batch mean noise",
                           caption="First BN layer, one value per channel, over the last half of training (a snapshot "
                                   f"every {sweeps.NOISE_RECORD_EVERY} steps). Measured: the batch mean's standard "
                                   "deviation from step to step, estimated from successive differences, "
                                   "sqrt(mean (m_t+1 − m_t)² / 2), which cancels the slow drift of the weights, "
                                   "pooled over channels (the root of the sum of squares over the sum of sigma²; bars: "
                                   "25th to 75th percentile of single channels); sigma is the root of the channel's "
                                   "mean unbiased batch variance over the same steps. Theory: the "
                                   "mean of n independent samples has standard deviation sigma / sqrt(n) "
                                   "(theory.batch_mean_variance). GroupNorm and LayerNorm take their statistics "
                                   "within each sample: they have no batch noise at all.")
            elif "batchnorm" in norms:
                st.info("No BN run recorded enough steps to measure the batch-mean noise (at least 3 snapshots in the "
                        "second half of training): use more training steps.")
            elapsed = sum(runs[label].history.elapsed_s for label in sweep_configs if label in runs)
            st.caption(f"{len(sweep_configs)} sweep runs; their training took {elapsed:.1f} s in total (summed over "
                       "runs when they were trained; cached since).")
    page.download_all()
