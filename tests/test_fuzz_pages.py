"""Every page survives every legal input: a property-based walk through its controls.

For each page (``pages/*.py``, the home page included, found at collection time) one AppTest session opens the
page, then hypothesis sets random legal values on random controls (options, both ends of every range,
empty and full multiselects) and reruns, ``FUZZ_EXAMPLES`` times. After every run:

- no exception reaches the page, and no error is the catch-all "Something went wrong" of
  ``ui.guard()`` (an unexpected exception the page should have prevented or explained);
- every ``st.error`` has text;
- choosing MNIST / Fashion-MNIST (not on disk in the tests) shows an error naming the folder to use
  (or, first, why the other settings cannot train).

Values are sent as the browser sends them (the option's label), so no ``format_func`` has to be
inverted. Training stays small: the shared steps control is kept at 100 or 200 steps.
``BNVIZ_FUZZ_EXAMPLES=50 pytest tests/test_fuzz_pages.py`` runs a deeper search.
"""
from __future__ import annotations

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
MAX_CHANGES = 3            # controls changed before one rerun
MAX_STEPS = 200            # the steps control is kept at or below this
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


def _is_steps(widget) -> bool:
    return widget.key is not None and (widget.key == "steps" or widget.key.endswith(".steps"))


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
        options = list(widget.options)
        if _is_steps(widget):
            options = [o for o in options if o.isdigit() and int(o) <= MAX_STEPS] or options[:1]
        label = options[choice.pick(len(options))]
        send_labels(widget, [label])
        return f"{name} = {label!r}"
    if kind == "multiselect":
        options = list(widget.options)
        chosen = choice.subset(options, choice.pick((widget.proto.max_selections or len(options)) + 1))
        send_labels(widget, chosen)
        return f"{name} = {chosen!r}"
    if kind == "select_slider":
        options = list(widget.options)
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
        value = on_grid(choice, proto.min, proto.max, proto.step, is_int)
        if isinstance(widget.value, (list, tuple)):
            value = sorted([value, on_grid(choice, proto.min, proto.max, proto.step, is_int)])
        widget.set_value(value)
        return f"{name} = {value!r}"
    if kind == "number_input":
        is_int = widget.proto.data_type == widget.proto.INT
        current = widget.value if widget.value is not None else 0
        lo = widget.min if widget.min is not None else current - 10**6
        hi = widget.max if widget.max is not None else current + 10**6
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

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.lists(CHANGE, min_size=1, max_size=MAX_CHANGES))
    def fuzz(changes):
        actions = []
        for drawn in changes:
            widgets = fuzzable(at)
            if widgets:
                choice = Choice(drawn)
                actions.append(set_random_value(widgets[choice.control % len(widgets)], choice))
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
              f"{len(failures)} failures; {sum(TOTALS.values())} cases so far")
    assert failures == [], "\n".join(dict.fromkeys(failures))
