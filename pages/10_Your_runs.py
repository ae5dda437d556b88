"""Your runs: runs recorded with bnviz.watch in your own training loop, followed live, and the BN doctor."""
import time

import streamlit as st

from bnviz import ui
from bnviz.figures.runs import MAX_CHANNEL_LINES
from bnviz.record import TAP_LABELS
from bnviz.store import RunFileError
from bnviz.views import runs as view
from bnviz.watcher import default_runs_dir

st.set_page_config(page_title="bnviz: your runs", page_icon="📊", layout="wide")

page = ui.Page(
    "runs", "Your runs",
    "Runs you recorded from your own training loop with bnviz.watch(model, run_dir): the same charts as the other "
    "pages, drawn from your model's normalization layers, and the BN doctor's checks. What to look for: running "
    "statistics that drift away from the batch statistics (eval mode then normalizes with the wrong numbers), "
    "gamma and beta that move although you froze them, and whatever the doctor flags below. A run that is still "
    "training is followed live.")

VIEW_DEFAULTS = {"run": "", "layer": "", "step": 0, "tap": "norm_output", "log_y": False, "log_color": True}
RUN_VIEWS = ("layer", "step", "tap")   # display settings that only mean something for one run
MAX_EVIDENCE = 8                       # doctor findings drawn as charts; the rest are listed in words


def key(name: str) -> str:
    return f"runs.view.{name}"


def forget(names) -> None:
    for name in names:
        st.session_state.pop(key(name), None)


def metrics(data: view.RunData) -> None:
    meta = data.meta
    c = st.columns(5)
    c[0].metric("status", data.status,
                help="running: the training process is writing it; finished: closed normally; failed: the training "
                     "loop raised an exception; stopped: the process is gone without closing the run (killed).")
    c[1].metric("last step", "-" if data.last_step is None else str(data.last_step),
                help="The newest optimizer step the run holds (a snapshot or a logged scalar); step s is the training "
                     "forward pass made with the weights after s optimizer steps.")
    c[2].metric("recorded steps", str(len(data.steps)),
                help=f"Steps whose forward pass was recorded (histograms, per-channel statistics): every "
                     f"{meta.get('snapshot_stride', '?')} steps now. Past 200 of them every other one is dropped and "
                     "the spacing doubles, so a long run stays small.")
    c[3].metric("normalization layers", str(sum(info.family is not None for info in data.layers)),
                help=f"Normalization modules found by type; {len(data.layers)} recorded layer(s) in all.")
    updated = float(meta["updated"])
    c[4].metric("last update", view.age(updated),
                help="Time of the last commit to the run file: "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(updated))}.")


def changed(root, listed: tuple, name: str | None = None, drawn: tuple | None = None) -> bool:
    """Whether a run started or went in the runs folder, or the run shown (``name``, drawn at
    ``drawn``: its last step and status) has a new step or status, since the page drew them (a
    damaged or vanished run counts as changed: the redrawn page says what is wrong)."""
    if view.run_names(root) != listed:
        return True
    if drawn is None:
        return False
    try:
        return view.progress(root, name) != drawn
    except (ValueError, FileNotFoundError, RunFileError):
        return True


def follow(root, listed: tuple, data: view.RunData | None = None) -> None:
    """Redraw the page at each new step of the run shown while it is written, and, with no run to
    show, when one starts. A page showing a finished run does not poll (an idle tab costs the
    server nothing): its "Look for new runs" button reads the folder again."""
    if data is None:
        page.follow(lambda: changed(root, listed), "Watching the runs folder: a run that starts there is shown "
                    "within seconds", every=view.FOLDER_POLL_S)
    elif data.status == "running":
        page.follow(lambda: changed(root, listed, data.name, (data.last_step, data.status)),
                    "Following live: this run is being written, and new steps appear within about a second",
                    every=view.LIVE_POLL_S)


def layer_controls(data: view.RunData) -> None:
    names, steps, taps = data.layer_names, data.steps, data.history.taps
    c1, c2 = st.columns([1, 2])
    page.view_control(c1.selectbox, "layer", "Layer", names,
                      format_func=lambda n: f"{n} ({data.layers[names.index(n)].kind or 'no norm module'})",
                      help="The layer of the percentile bands, the heatmap, the per-channel statistics and gamma/beta; "
                           "named as in model.named_modules().")
    page.view_control(c2.radio, "tap", "Tap point", taps, horizontal=True, format_func=lambda t: TAP_LABELS[t],
                      help="Where the values are read: the normalization layer's output, or the input / output of the "
                           "activation module that follows it.")
    if len(steps) > 1:
        page.view_control(st.select_slider, "step", "Recorded step", steps,
                          help="Steps whose training forward pass was recorded; step s used the weights after s "
                               "optimizer steps. Left at the newest, it follows a live run.")


def draw_layers(data: view.RunData) -> None:
    layer_of = lambda name: data.layer_names.index(name)  # noqa: E731
    for name in ("log_y", "log_color"):   # drawn by the one part each that takes it
        page.view_value(name, VIEW_DEFAULTS[name])

    def log_y_control():
        page.view_control(st.toggle, "log_y", "Log y axis", help="Shows the tails of the histograms.")

    @page.part(controls=log_y_control)
    def histograms(layer, step, tap, log_y):
        fig, shown, empty = view.layer_histograms(data, step=step, tap=tap, layer=layer_of(layer), log_y=log_y)
        more = len(data.layer_names) - len(shown)
        page.chart(fig, "layer histograms",
                   caption="One panel per layer: the values at the chosen tap in the training forward pass of the "
                           "chosen step (all samples of the batch, all channels and positions), on fixed bins. "
                           "Height: share of the values in the bin (count / number of values); values beyond the bins "
                           "are counted, and a panel notes their share."
                           + (f" {len(shown)} of {len(data.layer_names)} layers, evenly spaced across depth and "
                              f"including the chosen one ({more} not shown)." if more else "")
                           + (f" Empty: {', '.join(empty)}, with nothing at this tap (no activation module follows "
                              "them)." if empty else ""))

    @page.part
    def bands(layer, tap):
        note = view.tap_note(data, layer_of(layer), tap)
        if note:
            st.info(view.plain(note))
            page.figures.pop("percentile bands", None)   # not in the ZIP either
            return
        page.chart(view.percentile_bands(data, layer=layer_of(layer), tap=tap), "percentile bands",
                   caption="The chosen layer's 15th, 50th and 85th percentiles at each recorded step (all channels "
                           "together; the k-th percentile is the value below which k% of the values lie), as in Ioffe "
                           "& Szegedy's Figure 1: the median as a line, 15th-85th as a band.")

    def colour_control():
        page.view_control(st.toggle, "log_color", "Log colour scale",
                          help="Colour by log10 of the share of values: the tails become visible.")

    @page.part(controls=colour_control)
    def heatmap(layer, tap, log_color):
        if view.tap_note(data, layer_of(layer), tap):
            page.figures.pop("histograms over training", None)  # why: said above the bands
            return
        page.chart(view.histogram_heatmap(data, layer=layer_of(layer), tap=tap, log_color=log_color),
                   "histograms over training",
                   caption="The chosen layer's histogram at every recorded step, one column per step. Colour: share "
                           "of that step's values in the bin" + (" (log scale)." if log_color else "."))

    @page.part
    def statistics(layer, step):
        fig = view.batch_vs_running(data, layer=layer_of(layer), step=step)
        if fig is None:
            st.info(f"Layer {view.plain(layer)} has no normalization module: no batch or running statistics.")
            return
        note = view.running_note(data, layer_of(layer))
        if note:
            st.info(view.plain(note))
        page.chart(fig, "batch vs running statistics",
                   caption="Per channel (x: channel index, from 0), at the chosen step. Left: the mean of the layer's "
                           "input over the batch (and spatial positions)" + (
                               ". Right: its variance, biased (sum of squared deviations / n) and times n/(n-1) "
                               "(unbiased). n = values per channel (subtitle)." if note else
                               " against running_mean. Right: the batch variance BN normalized with, biased (sum of "
                               "squared deviations / n), the same times n/(n-1) (unbiased), and running_var, which "
                               "torch stores unbiased: compare it with the unbiased one. n = values per channel "
                               "(subtitle). Eval mode normalizes with the running ones: where they sit away from the "
                               "batch ones, eval-mode outputs shift."))

    @page.part
    def parameters(layer):
        fig = view.gamma_beta(data, layer=layer_of(layer))
        if fig is None:
            st.info(f"Layer {view.plain(layer)} has no gamma and beta (no normalization module, or affine=False).")
            return
        lines = data.layers[layer_of(layer)].channels <= MAX_CHANNEL_LINES
        page.chart(fig, "gamma and beta",
                   caption="The layer's learned scale gamma (weight) and shift beta (bias) at each recorded step: "
                           + ("one line per channel." if lines else
                              "the median across channels as a line and the 10th-90th percentile across channels "
                              "as a band (too many channels for a line each).")
                           + " Frozen parameters (requires_grad=False) stay flat.")


def draw_doctor(data: view.RunData) -> None:
    st.subheader("BN doctor")
    st.caption("Checks on the recorded numbers alone (no model, no data): running vs recent batch statistics, "
               "frozen parameters in train mode, non-finite values, constant channels, too few values per "
               "statistic, and the momentum convention. A quiet doctor means none of these signatures is present "
               "at the recorded steps, not that the run is healthy.")
    alerts = view.alerts(data.findings)
    if not data.findings:
        st.info("Nothing to check: the run records no normalization layer.")
    elif not alerts:
        st.success("No problems or warnings at the recorded steps.")
    for i, f in enumerate(alerts):
        box = st.error if f.severity == "problem" else st.warning
        text = (f"**{f.severity.capitalize()}: {f.title}**, layer {view.code(f.layer or 'run')}\n\n"
                f"{view.plain(f.evidence)}" + (f"\n\n**Fix:** {f.fix}" if f.fix else ""))
        if f.series and i < MAX_EVIDENCE:
            left, right = st.columns([2, 3])
            with left:
                box(text)
            with right:
                page.chart(view.evidence(f), view.evidence_name(f),
                           caption=f"The evidence at each recorded step: {', '.join(f.series)}; "
                                   f"y: {f.unit or 'value'}.")
        else:
            box(text)
    if len([f for f in alerts if f.series]) > MAX_EVIDENCE:
        st.caption(f"Evidence is drawn for the first {MAX_EVIDENCE} findings only.")
    quiet = view.quiet_rows(data.findings)
    if quiet:
        with st.expander(f"Checks that found nothing: {len(quiet)}"):
            st.dataframe(quiet, hide_index=True)


def draw_run(root, listed: tuple, data: view.RunData) -> None:
    st.subheader(f"Run {view.plain(data.name)}")
    metrics(data)
    follow(root, listed, data)
    if data.status == "failed":
        st.warning("The training loop raised an exception: the run ends at the last step committed before it.")
    elif data.status == "stopped":
        st.info("The training process is gone without closing the run (killed, or it ended without leaving the "
                "`with bnviz.watch(...)` block): everything committed before is shown.")
    summary = view.holdout_summary(data)
    if summary:
        st.caption(summary)
    counts = {s: sum(f.severity == s for f in data.findings) for s in ("problem", "warning")}
    st.caption(f"BN doctor: {counts['problem']} problem(s), {counts['warning']} warning(s) "
               f"in {len(data.findings)} checks; details at the bottom of the page.")

    st.subheader("Logged scalars")
    page.chart(view.scalar_curves(data), "logged scalars",
               caption="Every number passed to w.step(...) at the steps it was passed, and with bnviz.watch(..., "
                       "holdout=(x, y)) the held-out loss and accuracy at each recorded step: in eval mode with BN's "
                       "running statistics (solid), and with them recomputed at the same weights from recent training "
                       "batches (precise BN, dashed). Loss: as your loop computed it.")

    st.subheader("Inside the layers")
    if not data.steps:
        st.info(view.no_steps_note(data))
    else:
        layer_controls(data)
        draw_layers(data)
    draw_doctor(data)


def prepare_settings(data: view.RunData) -> None:
    """Give the display settings values this run can show: a link's, kept where they fit; the newest
    step when the run changes or a live run gets a new one while the newest was shown."""
    steps = data.steps
    if not steps:
        forget(RUN_VIEWS)
        return
    shown_run, shown_last = st.session_state.get("runs.__shown", (None, None))
    if shown_run is not None and shown_run != data.name:
        forget(RUN_VIEWS)
    elif shown_run == data.name and st.session_state.get(key("step")) == shown_last:
        st.session_state[key("step")] = steps[-1]
    st.session_state["runs.__shown"] = (data.name, steps[-1])
    page.view_value("step", steps[-1], options=steps)
    for name, options, default in (("layer", data.layer_names, view.default_layer(data)),
                                   ("tap", data.history.taps, view.default_tap(data))):
        # a link's ?layer=nope falls back to the default, and the link's warning says so
        page.view_value(name, default, options=options, fallback=default)


with ui.guard():
    page.display_only(VIEW_DEFAULTS)
    root = default_runs_dir()
    found = view.list_runs(root)
    listed = tuple(sorted(r.name for r in found))   # as view.run_names finds them, to notice a new run
    requested = st.session_state.get(key("run")) or None
    chosen = view.select(root, found, requested)
    if chosen.error:
        # the reason is a sentence without its full stop; the next one must not run into it
        st.error(("**The run shown is gone from the runs folder (deleted or renamed?).** "
                  if requested == st.session_state.get("runs.__opened") else
                  "**The run in the link cannot be opened.** ") + f"{chosen.error.rstrip('.')}."
                 + (f" Showing the newest run, {view.plain(chosen.name)}, instead." if chosen.name else ""))
    if chosen.name is None:
        forget(VIEW_DEFAULTS)
        st.query_params.clear()  # nothing on this page reads the link now
        st.info(view.howto(root))
        follow(root, listed)
    else:
        st.session_state[key("run")] = chosen.name
        st.session_state["runs.__opened"] = chosen.name
        data, problem = None, None
        try:
            data = view.read_run(root, chosen.name)
        except (ValueError, FileNotFoundError, RunFileError) as exc:
            problem = str(exc)
        if data is None:
            forget(RUN_VIEWS)
        else:
            prepare_settings(data)
        st.caption(f"Runs folder: {view.code(root.resolve())} (`$BNVIZ_RUNS_DIR`, else `./runs`; `bnviz app "
                   f"--runs DIR` sets it). {len(found)} run(s), most recently updated first. Status: running, "
                   "finished, failed (an exception), stopped (the process is gone), damaged (cannot be read). Last "
                   "step: the newest optimizer step recorded. Layers: recorded normalization layers.")
        st.dataframe(view.runs_table(found), hide_index=True, height=min(38 + 35 * len(found), 250))
        page.view_control(st.selectbox, "run", "Run", chosen.options,
                          help="The run's folder relative to the runs folder; the link keeps it (?run=...).")
        st.button("Look for new runs", key="runs.look",
                  help=f"The list above is the runs folder as it was at {time.strftime('%H:%M:%S')}: read it "
                       "again, with runs started since. (A run that is being written is followed by itself.)")
        if problem is not None:
            st.error(f"**This run cannot be read.** {view.plain(problem)}")
        else:
            draw_run(root, listed, data)
    page.download_all()
