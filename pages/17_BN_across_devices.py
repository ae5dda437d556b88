"""BN across devices: DistributedDataParallel in CPU processes, plain BN vs synchronized BN."""
from dataclasses import asdict

import streamlit as st

from bnviz import ui
from bnviz.distributed import DistributedError
from bnviz.experiments import data_parallel as dp
from bnviz.figures import data_parallel as figs
from bnviz.views import data_parallel as view, seeded

st.set_page_config(page_title="bnviz: BN across devices", page_icon="📊", layout="wide")

page = ui.Page(
    "data_parallel", "BN across devices",
    "Data-parallel training gives each process (device) a slice of every global batch and averages the gradients, "
    "but BN normalizes each slice by its own statistics. What to look for: plain BN's accuracy follows the per-device "
    "batch, not the global one; synchronized BN normalizes every process by the global batch; the running statistics "
    "agree across processes only when DDP broadcasts them or BN is synchronized.")

SETTINGS = asdict(view.Settings())

with ui.guard():
    config = page.config(view.DEFAULT, main=("depth", "width", "activation"), view=SETTINGS, seeds=True)
    page.view_settings(SETTINGS, view.coerce)
    processes = int(page.view_control(
        st.select_slider, "processes", "Processes (devices)", list(view.OPTIONS["processes"]),
        help="Worker processes started for this job, each a 'device' on this machine's CPU, joined in a "
             "torch.distributed process group (gloo backend). Each takes about 2 s to start."))
    found = view.check(config, processes)
    if found:
        st.error("**This configuration cannot train.** " + " ".join(found))
        st.stop()
    b = config.batch_size
    st.markdown(
        f"The page starts {processes} processes, which train the same network under "
        "`torch.nn.parallel.DistributedDataParallel`, and stops them when done (at most "
        f"{dp.time_limit(config, processes):.0f} s; a change of settings stops them too). Every global batch of {processes} × b samples is "
        "cut into one per-device batch of b per process. In each process, one after the other: plain BN and "
        f"synchronized BN at b = {', '.join(map(str, sorted(set(dp.DEFAULT_PER_DEVICE) | {b})))} (the sidebar's batch "
        f"size is the per-device batch, here {b}), and plain BN with `broadcast_buffers=False` at b = {b}. "
        "**Synchronized BN** is bnviz's CPU version of `torch.nn.SyncBatchNorm` (which refuses CPU tensors): the "
        "per-channel sums, sums of squares and counts are all-reduced in the forward pass, the gradient sums in the "
        "backward pass, so every process normalizes by the statistics of the global batch.")
    seed_list, note = seeded.seed_list(config.seed, page.n_seeds, view.runs_per_seed(config, processes))
    if note:
        st.warning(note)
    try:
        results = [ui.computed(f"Data-parallel job ({processes} processes), seed {s}", view.study,
                               config.replace(seed=s), processes) for s in seed_list]
    except DistributedError as exc:
        st.error(f"**The data-parallel job did not complete.** {exc}. Its processes have been stopped. Try again, "
                 "with fewer steps or processes if the machine is busy.")
        st.stop()
    result = results[0]
    st.caption(f"The job took {result.elapsed_s:.1f} s, process start-up included"
               + (f"; one job per seed, {len(results)} in all." if len(results) > 1 else "."))
    page.chart(figs.accuracy_by_per_device(result), "accuracy by per-device batch",
               caption="Share of the held-out test set classified correctly after training, in eval mode with rank "
                       "0's running statistics (the weights are the same in every process). Hover for the global "
                       "batch.")
    cols = st.columns(2)
    for col, mode in zip(cols, dp.MODES):
        col.metric(f"{mode}, {b} per device", f"{result.accuracy(dp.Variant(mode, b)):.1%}",
                   help=f"Eval-mode test accuracy of rank 0 after training, global batch {processes * b}.")
    page.chart(figs.batch_statistics(result, b), "batch statistics per process",
               caption="Per-channel mean of the first BN layer's input at the last recorded step, over each "
                       f"process's own {b} samples, as the recorder (bnviz.recorder, running in that process) saw "
                       "it. Plain BN normalizes each process by these; synchronized BN normalizes every process by "
                       f"the mean of all {processes * b} samples (black bars: the average of the processes' means).")
    page.view_value("channel", 0, options=view.OPTIONS["channel"])

    def channel_control() -> None:
        page.view_control(st.select_slider, "channel", "Channel", list(view.OPTIONS["channel"]),
                          help="Channel of the first BN layer whose running mean is drawn.")

    @page.part(controls=channel_control)
    def running(channel: int) -> None:
        if channel >= config.width:
            st.info(f"The first BN layer has {config.width} channels (0 to {config.width - 1}); channel {channel} "
                    "does not exist, so nothing is drawn. Choose a lower channel.")
        page.chart(figs.running_statistics(result, b, channel), "running statistics per process",
                   caption="Running mean of one channel of the first BN layer in each process, recorded right after "
                           "the forward pass of every 5th step (after its update). broadcast_buffers=True (DDP's "
                           "default): each forward starts from rank 0's buffers, so the processes differ by one "
                           "update; False: each keeps its own and they drift apart; synchronized BN: all update with "
                           "the global statistics and stay equal.")
    if len(results) > 1:
        with st.container(border=True):
            st.markdown(seeded.markdown(view.seed_summary(results, seed_list)))
    page.download_all()
