"""Training: what recording costs, what the home page's default run costs, what a long run keeps.

- ``instrumentation_overhead``: ``train(Config())`` (snapshots every 20 steps, evaluations every
  200) over ``train(Config(), record=False)`` (same model, data and batches; no snapshots, no
  evaluations; the per-step loss is kept in both, as the loop needs it to detect divergence).
  The detail's ``with_batch_trace`` is the same ratio for ``train(Config(), trace=True)``, what
  the pages with a momentum control run (every step's BN batch statistics kept, 20 pairs).
  ``Config()`` leaves ``bn_diagnostics`` off, as every view but two does; the detail reports the
  recorder's in-run share with it on too (the running-statistics and batch-size views).
- ``default_run_s`` / ``default_run_vs_bare``: the home page's two runs (``home.runs(Config())``)
  through ``bnviz.train.train`` exactly as the page calls it (data loaded by ``train``), against
  :func:`bare_loop`, a hand-written torch loop over the same model, data and batches.
- ``history_mb_50k_steps``: the memory a 50,000-step run's History holds, three ways.
"""
from __future__ import annotations

import pickle
import statistics
import time
import tracemalloc
from typing import Iterator
from unittest import mock

import torch
import torch.nn.functional as F

from bnviz.config import Config
from bnviz.data import Dataset, batches, load
from bnviz.models import build
from bnviz.record import TAPS
from bnviz.record import bin_edges, new_history
from bnviz import train as train_module
from bnviz.recorder import Recorder
from bnviz.train import evaluate, make_optimizer, train
from bnviz.views import home

from . import Result, interleaved, ratios, spread


def _endless(data: Dataset, batch_size: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from batches(data.x_train, data.y_train, batch_size, generator)


def bare_loop(config: Config, data: Dataset) -> torch.nn.Module:
    """The minimal loop the trainer does its work around: forward, loss, backward, SGD step.

    Same initial weights (``build`` with the seed's generator), same batch order (the trainer's
    ``seed + 1`` batch generator), so the final weights equal ``train(config)``'s bit for bit
    (``tests/test_benchmarks_smoke.py`` checks it). Plain SGD only: the default's optimizer.
    """
    assert config.optimizer == "sgd" and config.weight_decay == 0
    model = build(config, tuple(data.x_train.shape[1:]), data.n_classes, torch.Generator().manual_seed(config.seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    stream = _endless(data, config.batch_size, torch.Generator().manual_seed(config.seed + 1))
    model.train()
    for _ in range(config.steps):
        xb, yb = next(stream)
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model


def _per_call_ms(fn, n: int) -> float:
    """CPU milliseconds per call."""
    fn()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e3


def _components(config: Config, data: Dataset, quick: bool) -> dict[str, float]:
    """Milliseconds of one snapshot (statistics of the tapped tensors, summarised with the others
    of one evaluation interval, as train() does), one evaluation and one plain training step, on the default model: where the overhead comes from."""
    model = build(config, tuple(data.x_train.shape[1:]), data.n_classes, torch.Generator().manual_seed(0))
    history = new_history(config, model.layer_names, {t: bin_edges(t, config) for t in TAPS})
    optimizer = make_optimizer(config, model)
    xb, yb = data.x_train[:config.batch_size], data.y_train[:config.batch_size]
    model.train()
    recorder = Recorder(model, model.recorded_layers(), history.edges, batch_stats=False)  # as train() records

    per_flush = max(config.eval_every // config.record_every, 1)   # train() summarises at each evaluation

    def snapshots() -> None:
        for step in range(per_flush):
            recorder.arm()
            with torch.no_grad():
                model(xb)
            recorder.capture(step)
        recorder.flush()

    def forwards() -> None:
        for _ in range(per_flush):
            with torch.no_grad():
                model(xb)

    def step() -> None:
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    n = 3 if quick else 30
    return {"step_ms": round(_per_call_ms(step, 10 * n), 3),
            # a recorded forward pass less a plain one is the recorder's cost
            "snapshot_ms": round((_per_call_ms(snapshots, n) - _per_call_ms(forwards, n)) / per_flush, 3),
            "evaluate_ms": round(_per_call_ms(lambda: evaluate(model, data, config, 0), n), 3)}


def _in_run_ratio(config: Config, data: Dataset, runs: int) -> dict[str, float]:
    """The recorder's share measured inside recorded runs: CPU time in ``Recorder.capture`` and
    ``Recorder.flush`` (train() keeps the recorded passes and summarises them together) and
    ``evaluate`` against the rest of the same run. Both parts see the same machine at the same
    moments (they alternate step by step), so this is far less noisy than comparing two runs; it
    leaves out indirect costs (caches the recorder evicts), which the paired runs include."""
    spent = [0.0]

    def timed(fn):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.process_time() - start
        return wrapper

    ratios_ = []
    with mock.patch.object(train_module, "evaluate", timed(train_module.evaluate)), \
            mock.patch.object(Recorder, "capture", timed(Recorder.capture)), \
            mock.patch.object(Recorder, "flush", timed(Recorder.flush)):
        for _ in range(runs):
            spent[0] = 0.0
            start = time.process_time()
            train(config, dataset=data)
            total = time.process_time() - start
            ratios_.append(1 + spent[0] / (total - spent[0]))
    return spread(ratios_)


def instrumentation_overhead(quick: bool) -> Result:
    config = Config(steps=60) if quick else Config()
    data = load(config)
    rounds = 2 if quick else 100  # single runs vary by +-15 % here: the median of 40 pairs moved by +-0.02
    train(config.replace(steps=20), dataset=data)               # warm-up: first-call costs
    train(config.replace(steps=20), dataset=data, record=False)
    t = interleaved({"recorded": lambda: train(config, dataset=data),
                     "bare": lambda: train(config, dataset=data, record=False)}, rounds)
    # What a page with a momentum control adds (train(trace=True): every step's BN batch
    # statistics, kept so that another momentum is derived without training): fewer pairs.
    traced = interleaved({"traced": lambda: train(config, dataset=data, trace=True),
                          "bare": lambda: train(config, dataset=data, record=False)}, 2 if quick else 20)
    parts = _components(config, data, quick)
    diagnosed = (train(config.replace(steps=20), dataset=data).model, config.replace(bn_diagnostics=True))
    snapshots = len(range(0, config.steps, config.record_every)) + ((config.steps - 1) % config.record_every != 0)
    evals = 1 + config.steps // config.eval_every + (config.steps % config.eval_every != 0)
    return Result(
        "instrumentation_overhead", ratios(t.cpu["recorded"], t.cpu["bare"]), "x",
        f"train(Config()) / the same run with record=False ({config.steps} steps; snapshots every "
        f"{config.record_every}, evaluations every {config.eval_every} steps); CPU time, median of {rounds} "
        "interleaved pairs",
        target=1.05,
        detail={"wall_ratio": spread(ratios(t.wall["recorded"], t.wall["bare"])),
                "with_batch_trace": spread(ratios(traced.cpu["traced"], traced.cpu["bare"])),
                "recorded_s": spread(t.wall["recorded"]), "bare_s": spread(t.wall["bare"]),
                "per_step_cpu_ms": {k: round(statistics.median(v) / config.steps * 1e3, 3) for k, v in t.cpu.items()},
                "components_cpu_ms": parts, "snapshots": snapshots, "evaluations": evals,
                "in_run_ratio": _in_run_ratio(config, data, 2 if quick else 9),
                "with_bn_diagnostics": {
                    "evaluate_ms": round(_per_call_ms(lambda: evaluate(diagnosed[0], data, diagnosed[1], 0),
                                                      3 if quick else 30), 3),
                    "in_run_ratio": _in_run_ratio(diagnosed[1], data, 2 if quick else 9)},
                "predicted_from_components": round(
                    1 + (snapshots * parts["snapshot_ms"] + evals * parts["evaluate_ms"])
                    / (config.steps * parts["step_ms"]), 3)})


def default_run(quick: bool) -> list[Result]:
    configs = home.runs(home.VIEW.default)
    if quick:
        configs = {label: cfg.replace(steps=60) for label, cfg in configs.items()}
    datasets = {label: load(cfg) for label, cfg in configs.items()}
    rounds = 2 if quick else 5
    for label, cfg in configs.items():                           # warm-up
        train(cfg.replace(steps=20))
        bare_loop(cfg.replace(steps=20), datasets[label])

    def as_the_page_does() -> None:
        for cfg in configs.values():
            train(cfg)

    def bare() -> None:
        for label, cfg in configs.items():
            bare_loop(cfg, datasets[label])

    t = interleaved({"default": as_the_page_does, "bare": bare}, rounds)
    labels = ", ".join(configs)
    return [
        Result("default_run_s", t.wall["default"], "s",
               f"home page default experiment: train() of {labels} ({next(iter(configs.values())).steps} steps "
               "each), wall time",
               detail={"cpu_s": spread(t.cpu["default"]), "bare_wall_s": spread(t.wall["bare"]),
                       "bare_cpu_s": spread(t.cpu["bare"])}),
        Result("default_run_vs_bare", ratios(t.cpu["default"], t.cpu["bare"]), "x",
               "default_run_s / a bare torch loop on the same models, data and batches (no recording, no "
               "evaluation, data loaded once outside the timing); CPU time, interleaved pairs",
               detail={"wall_ratio": spread(ratios(t.wall["default"], t.wall["bare"]))}),
    ]


def history_memory(quick: bool) -> Result:
    """Three measures of the History of a long run; the largest is reported.

    ``nbytes``: History.nbytes(), the recorder's own estimate. ``pickle``: its serialized size.
    ``tracemalloc``: Python-heap bytes allocated to rebuild it from the pickle (numpy arrays,
    objects, dicts): what it actually occupies as live objects.
    """
    steps = 300 if quick else 50_000
    start = time.perf_counter()
    history = train(Config(steps=steps)).history
    elapsed = time.perf_counter() - start
    blob = pickle.dumps(history, protocol=pickle.HIGHEST_PROTOCOL)
    tracemalloc.start()
    copy = pickle.loads(blob)
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del copy
    measures = {"nbytes": history.nbytes(), "pickle": len(blob), "tracemalloc": traced}
    mb = max(measures.values()) / 1e6
    return Result(
        "history_mb_50k_steps", [mb], "MB",
        f"memory held by the History of Config(steps={steps}) (MB = 1e6 bytes): the largest of "
        "History.nbytes(), pickle size and tracemalloc of the live objects",
        target=20.0,
        detail={"steps": steps, "bytes": measures, "train_s": round(elapsed, 2),
                "kept": {"snapshots": len(history.snapshots), "snapshot_stride": history.snapshots.stride,
                         "losses": len(history.losses), "evals": len(history.evals)}})


def run(quick: bool) -> list[Result]:
    return [instrumentation_overhead(quick), *default_run(quick), history_memory(quick)]
