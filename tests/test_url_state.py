"""URL state is user input: whatever a link carries, a page opens without a traceback, says what it
adjusted, and can only select what its controls offer (so a link cannot start a runaway computation).

Three levels:
- ``config.from_query`` on arbitrary text (hypothesis): never raises, always within ``LIMITS``, and its
  result survives a round trip through ``to_query``;
- a probe page offering every control of ``ui.CONTROLS`` (no training, so workload fields can be pushed
  to their extremes): URL values are clamped to ``LIMITS``, then snapped to the control's options;
- every real page (``pages/*.py``, the home page included, found at collection time) opened with hostile links.
"""
from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from streamlit.testing.v1 import AppTest

from bnviz import ui
from bnviz.config import CHOICES, LIMITS, MAX_QUERY_VALUE_LEN, Config, from_query, parse_value

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "pages").glob("*.py"))  # pages/0_Home.py is the home page app.py serves
FIELDS = {f.name: f for f in fields(Config)}
# The hard caps the issue names: whatever a link says, a run stays below them.
HARD_CAPS = {"steps": 50_000, "width": 512, "depth": 10, "n_samples": 20_000}

# ----- hostile values -------------------------------------------------------------------------------
GOOGOL = str(10**100)
HUGE_TEXT = "9" * 100_000
HOSTILE_VALUES = ["1e308", "-1e308", "1e309", GOOGOL, "-" + GOOGOL, "nan", "NaN", "inf", "-inf", "", " ", "abc",
                  "[1, 2]", "{}", "0x10", "1_000", "true", "none", "null", "<script>alert(1)</script>",
                  "réLU", "١٢٨", "５", "💥", "\x00", "%00", "../../etc/passwd", "1" * 64, "1" * 65, HUGE_TEXT,
                  "0", "-1", "0.5", "3.7", "1e-400"]


def _number_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(min_value=-10**120, max_value=10**120).map(str),
        st.floats(min_value=-1e6, max_value=1e6).map(lambda x: f"{x:g}"),
    )


VALUE_TEXT = st.one_of(st.sampled_from(HOSTILE_VALUES), _number_text(), st.text(max_size=80),
                       st.sampled_from([c for cs in CHOICES.values() for c in cs]))
QUERY = st.dictionaries(
    st.one_of(st.sampled_from(sorted(FIELDS)), st.text(max_size=30)),
    st.one_of(VALUE_TEXT, st.lists(VALUE_TEXT, max_size=3)),
    max_size=12,
)


def assert_within_limits(config: Config) -> None:
    """Every field of ``config`` has its declared type and lies within ``LIMITS`` / ``CHOICES``."""
    for name, f in FIELDS.items():
        value = getattr(config, name)
        if name in CHOICES:
            assert value in CHOICES[name], (name, value)
        elif isinstance(getattr(Config(), name), bool):
            assert isinstance(value, bool), (name, value)
        elif name == "momentum" and value is None:
            continue
        else:
            lo, hi = LIMITS[name]
            assert isinstance(value, (int, float)) and not isinstance(value, bool), (name, value)
            assert math.isfinite(value) and lo <= value <= hi, (name, value)
            if isinstance(getattr(Config(), name), int):
                assert isinstance(value, int), (name, value)
    for name, cap in HARD_CAPS.items():
        assert getattr(config, name) <= cap


# ----- level 1: from_query ------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(QUERY)
def test_from_query_never_raises_and_stays_within_limits(params):
    config, notes = from_query(params)
    assert_within_limits(config)
    assert all(isinstance(n, str) and n for n in notes)
    # at most one note per key, and none longer than a sentence: a long value is never echoed
    assert len(notes) <= len(params)
    assert all(len(n) <= 200 for n in notes)
    restored, again = from_query(config.to_query())
    assert restored == config and again == []


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(FIELDS)), VALUE_TEXT)
def test_parse_value_either_accepts_or_explains(name, raw):
    default = getattr(Config(), name)
    value, note = parse_value(name, raw, default)
    if note is None:
        # accepted without a note: the text was exactly a valid value of the field
        text = str(raw).strip()
        if name in CHOICES:
            assert value == text
        elif isinstance(default, bool):
            assert text.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off")
        elif value is None:
            assert name == "momentum" and text.lower() in ("none", "null", "cumulative")
        else:
            assert value == float(text)
    config = Config().replace(**{name: value})
    assert_within_limits(config)


@pytest.mark.parametrize("raw", HOSTILE_VALUES)
def test_every_field_survives_every_hostile_value(raw):
    config, notes = from_query({name: raw for name in FIELDS})
    assert_within_limits(config)
    if len(raw.strip()) > MAX_QUERY_VALUE_LEN:
        assert config == Config() and len(notes) == len(FIELDS)


def test_controls_offer_only_values_within_limits():
    """The UI is stricter than LIMITS (e.g. steps <= 5,000, width <= 256, depth <= 6): a link is snapped
    to what the controls offer, so the LIMITS only ever bind the core and the export CLI."""
    for name, control in ui.CONTROLS.items():
        if name in CHOICES:
            assert set(control.options) <= set(CHOICES[name]), name
        if name not in LIMITS:
            continue
        lo, hi = LIMITS[name]
        offered = [o for o in control.options if o is not None] or [control.low, control.high]
        assert lo <= min(offered) and max(offered) <= hi, name
    assert max(ui.CONTROLS["steps"].options) == 5000
    assert max(ui.CONTROLS["width"].options) == 256 and ui.CONTROLS["depth"].high == 6


# ----- level 2: a probe page with every control -------------------------------------------------------
PROBE_VIEW = {"layer": 0, "flag": False, "mu": 0.5, "tap": "pre"}


def probe_page():
    import streamlit as st

    from bnviz import ui
    from bnviz.config import Config

    page = ui.Page("probe", "Every control", "URL state probe: no training.")
    with ui.guard():
        config = page.config(Config(), main=tuple(n for n in ui.CONTROLS if n not in ui.SHARED),
                             view={"layer": 0, "flag": False, "mu": 0.5, "tap": "pre"})
        st.session_state["probe.__config"] = config
        page.view_control(st.selectbox, "layer", "Layer", [0, 1, 2])
        page.view_control(st.toggle, "flag", "Flag")
        page.view_control(st.select_slider, "mu", "mu", [-1.0, 0.0, 0.5, 1.0])
        page.view_control(st.radio, "tap", "Tap", ["pre", "post"])


def _probe(params: dict) -> AppTest:
    at = AppTest.from_function(probe_page, default_timeout=120)
    at.query_params.update(params)
    return at.run()


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def assert_offered(at: AppTest) -> None:
    """Every control of ``ui.CONTROLS`` on the page shows a value its widget offers."""
    widgets = [w for kind in ("selectbox", "radio", "slider", "number_input", "toggle") for w in at.get(kind)]
    for w in widgets:
        key = w.key or ""
        name = key if key in ui.SHARED else key.split(".", 1)[1] if key.count(".") == 1 else None
        if name not in ui.CONTROLS:
            continue
        control, value = ui.CONTROLS[name], w.value
        if control.kind in ("select", "radio"):
            assert value in control.options, (key, value)
        elif control.kind in ("slider", "number"):
            assert control.low <= value <= control.high, (key, value)
        else:
            assert isinstance(value, bool), (key, value)
        if name in LIMITS and value is not None:
            lo, hi = LIMITS[name]
            assert lo <= value <= hi, (key, value)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    errors = _errors(at)
    assert all(e.strip() for e in errors), errors
    assert not [e for e in errors if e.startswith("Something went wrong")], errors


def test_probe_clamps_workload_fields_to_what_the_controls_offer():
    at = _probe({"steps": "1e308", "width": GOOGOL[:60], "depth": "1e308", "n_samples": "1e308",
                 "batch_size": ["2", "1e308"], "seed": "-1e308", "lr": "nan", "momentum": "inf",
                 "dropout": "0.99", "shift_amount": "1e9", "eps": "1e-300", "record_every": "0",
                 "layer": "1e308", "mu": "abc", "flag": "maybe", "tap": "<script>", "evil": "<script>"})
    assert_clean(at)
    assert_offered(at)
    config = at.session_state["probe.__config"]
    assert_within_limits(config)
    assert (config.steps, config.width, config.depth, config.n_samples) == (5000, 256, 6, 10_000)
    assert (config.batch_size, config.seed, config.lr, config.momentum) == (256, 0, Config().lr, Config().momentum)
    assert (config.dropout, config.shift_amount, config.eps, config.record_every) == (0.9, 3.0, 1e-8, 20)
    [warning] = [w.value for w in at.warning]
    assert warning.startswith("Some settings in the link were adjusted: steps: 1e308 is outside [1, 50000]")
    notes = "; ".join(at.session_state["probe.__url_notes"])
    for part in ("steps: 50000 is not offered here; using 5000", "width: 512 is not offered here; using 256",
                 "lr: 'nan' is not a finite number", "ignored unknown setting 'evil'",
                 "record_every has no control on this page", "mu: 'abc' is not a number; kept 0.5"):
        assert part in notes
    assert (at.selectbox(key="probe.view.layer").value, at.toggle(key="probe.view.flag").value) == (2, False)
    assert at.select_slider(key="probe.view.mu").value == 0.5 and at.radio(key="probe.view.tap").value == "pre"
    # the link written back holds only offered values and nothing it was not asked for
    assert at.query_params["steps"] == "5000" and "evil" not in at.query_params
    assert at.query_params["layer"] == "2" and at.query_params["tap"] == "pre"


# 10 kB in each of the 29 fields stays under Streamlit's 512 kB cap on the query string (below).
@pytest.mark.parametrize("raw", ["1e308", "-1e308", GOOGOL, "nan", "inf", "abc", "9" * 10_000, "<script>", "3.7"])
def test_probe_survives_a_hostile_value_in_every_field(raw):
    at = _probe({**{name: raw for name in FIELDS}, **{name: raw for name in PROBE_VIEW}})
    assert_clean(at)
    assert_offered(at)
    assert_within_limits(at.session_state["probe.__config"])
    assert any("adjusted" in w.value for w in at.warning)
    assert all(len(v) <= 200 and "<script" not in v for v in at.query_params.values())


@pytest.mark.parametrize("padding", [{"padding": "9" * 600_000}, {f"k{i}": "" for i in range(1000)}],
                         ids=["over 512 kB", "over 1000 keys"])
def test_a_query_string_over_streamlits_caps_is_ignored_as_a_whole(padding):
    """Streamlit drops a query string over 524,288 characters or 1,000 fields before any page code sees it."""
    at = _probe({"steps": "1e308", "evil": "x", **padding})
    assert_clean(at)
    assert not at.warning
    assert at.session_state["probe.__config"] == Config()


def test_a_link_with_hundreds_of_bad_keys_gets_one_short_note():
    at = _probe({**{f"k{i}": "1" for i in range(900)}, "steps": "1e308"})
    assert_clean(at)
    [warning] = [w.value for w in at.warning]
    # 900 unknown keys, and steps both clamped to LIMITS and snapped to the control's options
    assert len(warning) < 2000 and warning.endswith(f"and {902 - ui.MAX_URL_NOTES} more.")
    assert at.session_state["probe.__config"].steps == 5000 and "k1" not in at.query_params


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(QUERY)
def test_probe_survives_random_links(params):
    at = _probe({k: v for k, v in params.items() if k})
    assert_clean(at)
    assert_offered(at)
    assert_within_limits(at.session_state["probe.__config"])


# ----- level 3: every page -----------------------------------------------------------------------------
# Every case keeps the work small (steps=100, or a repeated key whose last value is 100), and all but
# "numbers" fall back to the page's defaults, so a page trains once and the other cases hit its cache.
# "numbers" ends with a batch of one, which a BN page refuses with an explanation instead of training.
SMALL = {"steps": "100"}
PAGE_CASES = {
    "numbers": {"width": "-1e308", "depth": "-inf", "lr": "nan", "seed": "-1e308", "batch_size": "-1e308",
                "momentum": "inf", "init_scale": "0x10", "dropout": "1e309", "eps": "[1,2]", "n_samples": GOOGOL},
    "text": {"activation": "<script>alert(1)</script>", "norm": "💥", "dataset": "数字", "placement": "\u202ebefore",
             "optimizer": "sgd; drop table", "arch": "true", "__proto__": "x", "evil": "<script>alert(1)</script>",
             "k" * 300: "1", "tap": "<img src=x onerror=alert(1)>", "layer": "<svg onload=alert(1)>"},
    "long and repeated": {"activation": "relu" * 25_000, "seed": HUGE_TEXT, "layer": HUGE_TEXT,
                          "steps": ["5000", "1e308", "100"], "norm": ["layernorm", "<script>"], "width": ["1e308", ""]},
    "view keys": {"layer": "1e308", "step": "-99999999", "tap": "nonsense", "log_y": "maybe", "bands": "\x00",
                  "sample": "1e308", "in_batch": "-1", "mnist": "1e308", "momenta": "nan,inf,-1,<b>",
                  "keeps": "0,1e308,abc", "ns": "-5,1e308", "batch_seed": "1e308", "stream_n": "inf"},
}


@pytest.fixture(scope="module", params=PAGES, ids=lambda p: p.stem)
def page_file(request):
    return str(request.param)


# Pages that train nothing have no steps control: "Your runs" reads runs recorded with bnviz.watch,
# here one small run in a folder of its own.
TRAINS_NOTHING = {"10_Your_runs"}


@pytest.fixture(scope="module")
def recorded_runs(tmp_path_factory):
    from test_figures_runs import batches, mlp, record

    root = tmp_path_factory.mktemp("runs")
    record(root / "small", mlp(), batches(12, 16, 0))
    return root


@pytest.mark.parametrize("case", list(PAGE_CASES))
def test_page_opens_with_a_hostile_link(page_file, case, recorded_runs, monkeypatch):
    monkeypatch.setenv("BNVIZ_RUNS_DIR", str(recorded_runs))
    params = {**SMALL, **PAGE_CASES[case]}
    at = AppTest.from_file(page_file, default_timeout=300)
    at.query_params.update(params)
    at.run()
    assert_clean(at)
    assert any("adjusted" in w.value for w in at.warning), [w.value for w in at.warning]
    assert_offered(at)
    if Path(page_file).stem not in TRAINS_NOTHING:
        assert at.session_state["steps"] == 100
    # the link written back drops what it ignored and never echoes hostile text
    for key, value in at.query_params.items():
        assert key not in ("evil", "__proto__", "k" * 300), key
        assert len(str(value)) <= 200 and "<script" not in str(value) and "<img" not in str(value), (key, value)
