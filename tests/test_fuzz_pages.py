"""Every page survives every legal input: a property-based walk through its controls.

For each page (``pages/*.py``, the home page included, found at collection time) one AppTest session opens the
page, then hypothesis sets random legal values on random controls (options, both ends of every range,
empty and full multiselects) and reruns, ``FUZZ_EXAMPLES`` times. A change goes to a control no case
has changed yet while there is one, so the run touches every control it can reach. The pages of
``HEAVY_PAGES`` (a rerun trains for 15 s or more whatever is capped) get half as many cases; a case
makes enough changes (1 to ``MAX_CHANGES``, more on a page with many controls) for the cases to
reach every control. After every run:

- no exception reaches the page, and no error is the catch-all "Something went wrong" of
  ``ui.guard()`` (an unexpected exception the page should have prevented or explained);
- every ``st.error`` has text;
- choosing MNIST / Fashion-MNIST (not on disk in the tests) shows an error naming the folder to use
  (or, first, why the other settings cannot train).

Values are sent as the browser sends them (the option's label), so no ``format_func`` has to be
inverted. Training stays small: the controls that only set how much is trained (``WORK_CAPS``:
steps, seeds, width, depth, batch size, world size, micro-batches, fine-tuning steps, the depth
sweep's deepest network, the transformer's layers) are kept at or below a cap, as the shared steps control always was. Each
still reaches its low end and values past the page's default; the caps only leave out the sizes
that make a case train for a minute (a session keeps its settings from case to case, so 20 seeds
of 6 layers of 256 units at batch 256 on the small-batch page trained 480 such networks per rerun).
``BNVIZ_FUZZ_EXAMPLES=50 pytest tests/test_fuzz_pages.py`` runs a deeper search.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "pages").glob("*.py"))  # pages/0_Home.py is the home page app.py serves
FUZZ_EXAMPLES = int(os.environ.get("BNVIZ_FUZZ_EXAMPLES", "8"))
MAX_CHANGES = 3            # controls changed before one rerun (more where needed to reach them all)
# Pages whose every retraining takes 15 s or more at the capped sizes (24 networks a seed for the
# small-batch page; a spawned two-process job for the devices page): half the cases, more changes each.
HEAVY_PAGES = ("15_Small_batch_remedies", "17_BN_across_devices")
MAX_STEPS = 200            # the steps control is kept at or below this
# Work-size controls (a key, or the last part of one: ``width`` is every page's width) and the
# largest value a case may give them. Above each cap the page only trains longer.
WORK_CAPS = {
    "steps": MAX_STEPS,
    "shift.view.ft_steps": MAX_STEPS,        # fine-tuning steps
    "seeds": 2,                              # 1 and 2: the single-run and the over-seeds displays
    "width": 100,                            # 100: not a multiple of GroupNorm's groups of 16
    "depth": 4,                              # one past the default 3 (and the layer views it offers)
    "batch_size": 64,
    "depth.view.depth": 20,                  # gradients-vs-depth: the deepest network of the sweep
    "data_parallel.view.processes": 2,       # world size: one process, and more than one (spawned)
    "data_parallel.view.seeds": 1,           # a spawned job per seed: test_page_data_parallel runs 2 seeds
    "transformer.view.layers": 4,            # one past the default 3
    "grad_accumulation.view.micro_batches": 8,
}
RUN_TIMEOUT_S = 300
KINDS = ("selectbox", "select_slider", "slider", "radio", "number_input", "toggle", "checkbox", "multiselect")
DATA_DIR = os.environ["BNVIZ_DATA_DIR"]  # set by conftest to a folder without MNIST
TOTALS: dict[str, int] = {}


# ----- setting a control as the browser does -----------------------------------------------------------
def send_labels(widget, labels: list[str]) -> None:
    """Make ``widget`` send ``labels`` (its options as displayed) on the next run, as the frontend does."""
    single = widget.type in ("selectbox", "radio")

    def state(self) -> WidgetState:
        ws = WidgetState()
        ws.id = self.id
        if single:
            ws.string_value = labels[0]
        else:
            ws.string_array_value.data[:] = labels
        return ws

    cls = type(widget)
    widget.__class__ = type(f"Fuzzed{cls.__name__}", (cls,), {"_widget_state": property(state)})


def _name(widget) -> str:
    return widget.key or f"{widget.type} {widget.label!r}"


def work_cap(widget) -> float | None:
    """The largest value a case may give ``widget`` (see ``WORK_CAPS``), or None: no cap."""
    if widget.key is None:
        return None
    return WORK_CAPS.get(widget.key, WORK_CAPS.get(widget.key.rsplit(".", 1)[-1]))


def _number(label: str) -> float | None:
    try:
        return float(label)
    except ValueError:
        return None


def capped(widget, options: list[str]) -> list[str]:
    """``options`` (labels) without those above the widget's work cap (the lowest if none is left)."""
    cap = work_cap(widget)
    if cap is None:
        return options
    kept = [o for o in options if (n := _number(o)) is not None and n <= cap]
    return kept or options[:1]


# Hypothesis needs every case to draw the same kinds of choices whatever the page shows (the controls
# on screen change from case to case), so one change is one fixed-shape draw, mapped onto the
# control's options afterwards: which control, two (where, which) picks, and eight spare numbers.
ANY = st.integers(0, 2**20)
CHANGE = st.tuples(ANY, st.tuples(st.sampled_from(("low", "high", "any")), ANY),
                   st.tuples(st.sampled_from(("low", "high", "any")), ANY), st.lists(ANY, min_size=8, max_size=8))


class Choice:
    """One drawn change: hands out indices into whatever options the chosen control has."""

    def __init__(self, drawn):
        self.control, first, second, self.spare = drawn
        self.picks = [first, second]

    def pick(self, n: int) -> int:
        """An index in range(n): the lowest, the highest, or any."""
        where, r = self.picks.pop(0) if self.picks else ("any", self.spare[0])
        return 0 if where == "low" else n - 1 if where == "high" else r % n

    def subset(self, options: list, size: int) -> list:
        return list(dict.fromkeys(options[(self.spare[j % 8] + j) % len(options)] for j in range(size)))


def on_grid(choice: Choice, lo: float, hi: float, step: float, is_int: bool) -> float:
    """A value a slider or number input can take: either end, or a point of its step grid."""
    step = max(int(step), 1) if is_int else (step or (hi - lo) / 100 or 1.0)
    k = choice.pick(int((hi - lo) // step) + 1)
    return int(lo) + k * step if is_int else min(round(lo + k * step, 10), hi)


def set_random_value(widget, choice: Choice) -> str:
    """Give ``widget`` a random legal value; return what was done."""
    kind, name = widget.type, _name(widget)
    if kind in ("selectbox", "radio"):
        options = capped(widget, list(widget.options))
        label = options[choice.pick(len(options))]
        send_labels(widget, [label])
        return f"{name} = {label!r}"
    if kind == "multiselect":
        options = list(widget.options)
        chosen = choice.subset(options, choice.pick((widget.proto.max_selections or len(options)) + 1))
        send_labels(widget, chosen)
        return f"{name} = {chosen!r}"
    if kind == "select_slider":
        options = capped(widget, list(widget.options))
        ends = [choice.pick(len(options))]
        if isinstance(widget.value, (list, tuple)):
            ends = sorted(ends + [choice.pick(len(options))])
        labels = [options[i] for i in ends]
        send_labels(widget, labels)
        return f"{name} = {labels!r}"
    if kind == "slider":
        proto = widget.proto
        if proto.data_type not in (proto.INT, proto.FLOAT):
            return f"{name}: a date or time slider, left alone"
        is_int = proto.data_type == proto.INT
        hi = min(proto.max, work_cap(widget) or proto.max)
        value = on_grid(choice, proto.min, hi, proto.step, is_int)
        if isinstance(widget.value, (list, tuple)):
            value = sorted([value, on_grid(choice, proto.min, hi, proto.step, is_int)])
        widget.set_value(value)
        return f"{name} = {value!r}"
    if kind == "number_input":
        is_int = widget.proto.data_type == widget.proto.INT
        current = widget.value if widget.value is not None else 0
        lo = widget.min if widget.min is not None else current - 10**6
        hi = widget.max if widget.max is not None else current + 10**6
        hi = min(hi, work_cap(widget) or hi)
        value = on_grid(choice, lo, hi, widget.step or 1, is_int)
        widget.set_value(int(value) if is_int else float(value))
        return f"{name} = {value!r}"
    value = bool(choice.pick(2))
    widget.set_value(value)
    return f"{name} = {value!r}"


def fuzzable(at: AppTest) -> list:
    """The controls a user can change now (enabled, outside forms, not the Stop button)."""
    return [w for kind in KINDS for w in at.get(kind)
            if not getattr(w.proto, "disabled", False) and not getattr(w, "form_id", "")]


# ----- what must hold after every run ----------------------------------------------------------------------
def problems_after_run(at: AppTest) -> list[str]:
    found = []
    if at.exception:
        found += [f"exception: {e.value[:500]}" for e in at.exception]
    errors = [e.value for e in at.error]
    found += ["an st.error without text" for e in errors if not e.strip()]
    found += [f"unexpected error: {e[:400]}" for e in errors if e.startswith("Something went wrong")]
    dataset = at.session_state["dataset"] if "dataset" in at.session_state else None
    if dataset in ("mnist", "fashion-mnist") and any(w.key == "dataset" for w in at.selectbox):
        # unless the settings cannot train anyway (e.g. BN with a batch of one), which is said first
        if not any(DATA_DIR in e and "never downloads" in e or "cannot train" in e for e in errors):
            found.append(f"dataset={dataset}: no error naming the folder {DATA_DIR}/{dataset}; errors: {errors}")
    return found


@pytest.fixture(scope="module")
def recorded_runs(tmp_path_factory):
    """The runs folder of the "Your runs" page: two small runs recorded with bnviz.watch."""
    from test_figures_runs import batches, convnet, mlp, record

    root = tmp_path_factory.mktemp("runs")
    record(root / "mlp", mlp(), batches(12, 16, 0))
    record(root / "cnn", convnet(), batches(12, 8, 1, shape=(1, 8, 8)))
    return root


@pytest.mark.parametrize("page_file", PAGES, ids=lambda p: p.stem)
def test_random_legal_inputs_never_break_the_page(page_file, capsys, recorded_runs, monkeypatch):
    monkeypatch.setenv("BNVIZ_RUNS_DIR", str(recorded_runs))
    at = AppTest.from_file(str(page_file), default_timeout=RUN_TIMEOUT_S)
    at.session_state["steps"] = 100
    at.run()
    assert problems_after_run(at) == [], "the page fails on first load"
    failures: list[str] = []
    cases = []
    seen: set[str] = set()       # every control a case could change
    touched: set[str] = set()    # those a case changed
    examples = max(1, FUZZ_EXAMPLES // 2) if page_file.stem in HEAVY_PAGES else FUZZ_EXAMPLES
    # enough changes a case for the cases to reach every control the page shows now
    fewest = max(1, math.ceil(len(fuzzable(at)) / examples))

    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(CHANGE, min_size=fewest, max_size=fewest + MAX_CHANGES - 1))
    def fuzz(changes):
        actions = []
        for drawn in changes:
            widgets = fuzzable(at)
            seen.update(map(_name, widgets))
            widgets = [w for w in widgets if _name(w) not in touched] or widgets
            if widgets:
                choice = Choice(drawn)
                widget = widgets[choice.control % len(widgets)]
                touched.add(_name(widget))
                actions.append(set_random_value(widget, choice))
        at.run()
        cases.append(actions)
        # Failures are collected, not raised: the session carries state from case to case, so
        # hypothesis could not replay one case alone; the report lists every case that failed.
        for problem in problems_after_run(at):
            failures.append(f"case {len(cases)} ({'; '.join(actions)}): {problem}")

    fuzz()
    TOTALS[page_file.stem] = len(cases)
    with capsys.disabled():
        print(f"\n[fuzz] {page_file.name}: {len(cases)} cases, {sum(map(len, cases))} control changes, "
              f"{len(touched)} of {len(seen)} controls changed, {len(failures)} failures; "
              f"{sum(TOTALS.values())} cases so far")
    assert failures == [], "\n".join(dict.fromkeys(failures))
