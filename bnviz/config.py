"""The experiment configuration: one frozen, hashable value that names a training run.

Everything expensive (training) is keyed by a ``Config``; a page builds one from its controls,
the trainer reads it, the cache hashes it and the URL query string carries it. Values that come
from outside (a URL, a file) go through :func:`from_query`, which clamps or drops what is out of
range and says so, so a shared link can never start a runaway computation.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

DATASETS = ("digits", "digits-image", "moons", "circles", "spirals", "blobs", "mnist", "fashion-mnist")
ARCHS = ("mlp", "cnn")
ACTIVATIONS = ("relu", "sigmoid", "tanh")
NORMS = ("batchnorm", "reference", "layernorm", "groupnorm", "none")
PLACEMENTS = ("none", "before", "after")  # "none": no normalization layer, whatever ``norm`` says
DROPOUT_POSITIONS = ("after_activation", "before_norm", "before_output")
OPTIMIZERS = ("sgd", "adam")
SHIFTS = ("none", "offset", "scale", "contrast")

# Hard caps for anything that sets the amount of work; a URL cannot go past them.
LIMITS: dict[str, tuple[float, float]] = {
    "seed": (0, 2**31 - 1),
    "steps": (1, 50_000),
    "batch_size": (1, 1024),
    "lr": (1e-5, 10.0),
    "depth": (1, 10),
    "width": (2, 512),
    "momentum": (0.0, 1.0),
    "eps": (1e-12, 1.0),
    "dropout": (0.0, 0.95),
    "init_scale": (0.01, 10.0),
    "record_every": (1, 1000),
    "eval_every": (1, 5000),
    "n_samples": (50, 20_000),
    "shift_amount": (0.0, 10.0),
    "weight_decay": (0.0, 1.0),
}


@dataclass(frozen=True)
class Config:
    """One training run. Defaults are the home page's experiment (3 x 100 ReLU MLP on digits)."""

    dataset: str = "digits"
    seed: int = 0
    steps: int = 1000
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    arch: str = "mlp"
    depth: int = 3
    width: int = 100
    activation: str = "relu"
    norm: str = "batchnorm"
    placement: str = "before"
    momentum: float | None = 0.1
    eps: float = 1e-5
    affine: bool = True            # the norm layers learn gamma and beta (torch's affine=True)
    bias_with_norm: bool = False
    dropout: float = 0.0
    dropout_position: str = "after_activation"
    init_scale: float = 1.0
    record_every: int = 20
    eval_every: int = 200
    # Also evaluate BN by batch statistics and by recomputed population statistics (and keep
    # those) at every evaluation: the running-statistics and batch-size views show them. Off for
    # the others: it is ~5 ms an evaluation, most of what an evaluation costs.
    bn_diagnostics: bool = False
    n_samples: int = 2000
    standardize: bool = True
    shift: str = "none"
    shift_amount: float = 0.0

    @property
    def has_norm(self) -> bool:
        return self.norm != "none" and self.placement != "none"

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)

    def without_norm(self) -> "Config":
        return self.replace(norm="none")

    def to_query(self) -> dict[str, str]:
        """The fields that differ from the defaults, as strings for a URL query string."""
        default = Config()
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != getattr(default, f.name):
                out[f.name] = _format(value)
        return out


class ConfigError(ValueError):
    """A configuration that cannot train, with a message written for a student."""


def _format(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value) if isinstance(value, float) else str(value)


CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": DATASETS, "arch": ARCHS, "activation": ACTIVATIONS, "norm": NORMS,
    "placement": PLACEMENTS, "dropout_position": DROPOUT_POSITIONS, "optimizer": OPTIMIZERS,
    "shift": SHIFTS,
}
MAX_QUERY_VALUE_LEN = 64


def quoted(raw: str) -> str:
    """A link's value as a note quotes it: its start, in repr, at most 40 characters (the repr
    of 20 characters outside the BMP alone is 200 characters of escapes)."""
    text = repr(raw[:20])
    return text if len(text) <= 40 else text[:39] + "…"


def parse_value(name: str, raw: str, default: Any) -> tuple[Any, str | None]:
    """Parse one query-string value for field ``name``; return (value, note or None).

    Never raises: a value that cannot be used falls back to ``default`` with a note, and a
    number outside :data:`LIMITS` is clamped with a note.
    """
    raw = str(raw).strip()
    if len(raw) > MAX_QUERY_VALUE_LEN:
        return default, f"{name}: value too long, kept {default!r}"
    if name in CHOICES:
        if raw in CHOICES[name]:
            return raw, None
        return default, f"{name}: {quoted(raw)} is not one of {', '.join(CHOICES[name])}; kept {default!r}"
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True, None
        if raw.lower() in ("0", "false", "no", "off"):
            return False, None
        return default, f"{name}: {quoted(raw)} is not a yes/no value; kept {default!r}"
    if name == "momentum" and raw.lower() in ("none", "null", "cumulative"):
        return None, None
    is_int = isinstance(default, int) and not isinstance(default, bool)
    try:
        number = float(raw)
    except ValueError:
        return default, f"{name}: {quoted(raw)} is not a number; kept {default!r}"
    if not math.isfinite(number):
        return default, f"{name}: {quoted(raw)} is not a finite number; kept {default!r}"
    lo, hi = LIMITS[name]
    note = None
    if number < lo or number > hi:
        clamped = min(max(number, lo), hi)
        note = f"{name}: {raw[:20]} is outside [{lo:g}, {hi:g}]; clamped to {clamped:g}"
        number = clamped
    if is_int:
        if number != int(number) and note is None:
            note = f"{name}: {raw[:20]} is not a whole number; rounded to {round(number)}"
        return int(round(number)), note
    return number, note


def from_query(params: Mapping[str, Any], base: Config | None = None) -> tuple[Config, list[str]]:
    """Build a Config from a URL query mapping, starting from ``base`` (the page's defaults).

    Returns the config and the notes a page shows about every value it clamped or ignored.
    Unknown keys are ignored with a note (but keys a page owns itself are its business: pass
    only the config keys, or ignore the notes for them).
    """
    base = base or Config()
    names = {f.name for f in fields(Config)}
    changes: dict[str, Any] = {}
    notes: list[str] = []
    for key, raw in params.items():
        if isinstance(raw, (list, tuple)):
            raw = raw[-1] if raw else ""
        if key not in names:
            notes.append(f"ignored unknown setting {str(key)[:20]!r}")
            continue
        value, note = parse_value(key, raw, getattr(base, key))
        changes[key] = value
        if note:
            notes.append(note)
    return base.replace(**changes), notes


def problems(config: Config) -> list[str]:
    """Reasons this configuration cannot train, each a sentence a student understands.

    An empty list means the trainer will run it (it may still diverge: that is reported in the
    history, not here).
    """
    out = []
    if config.has_norm and config.norm in ("batchnorm", "reference") and config.batch_size < 2:
        out.append(
            "BatchNorm cannot train with a batch of one: it normalizes each feature with the mean "
            "and variance of the batch, and one sample has zero variance, so every output would "
            "be 0 (x - mean = 0). Use a batch of 2 or more, or a normalization that works per "
            "sample (LayerNorm, GroupNorm); a trained BN network can still predict one sample at "
            "a time in eval mode, with its running statistics."
        )
    if config.arch == "cnn" and config.dataset not in ("digits-image", "mnist", "fashion-mnist"):
        out.append(f"The CNN needs images; {config.dataset!r} is not an image data set. "
                   "Choose digits-image, mnist or fashion-mnist, or the MLP.")
    if config.dropout > 0 and not 0 < 1 - config.dropout <= 1:
        out.append("Dropout probability must be below 1.")
    return out


def check(config: Config) -> None:
    """Raise :class:`ConfigError` with every problem of ``config``."""
    found = problems(config)
    if found:
        raise ConfigError(" ".join(found))


def parse_number(item: str, name: str = "") -> float:
    """A finite number from one item of a comma-separated URL value, or ValueError saying why."""
    label = f"{name} {item[:20]!r}" if name else repr(item[:20])
    try:
        value = float(item)
    except ValueError:
        raise ValueError(f"{label} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{label} is not a finite number")
    return value


def parse_list(text: str, parse: Callable[[str], Any], *, limit: int | None = None,
               what: str = "values") -> tuple[list[Any], list[str]]:
    """The items of a comma-separated URL value through ``parse``; never raises.

    ``parse`` returns an item's value or raises ValueError whose message says what is wrong with
    it; such items are dropped with that note. Duplicates are dropped, and past ``limit`` items
    (each usually costs a training run) the rest are dropped with a note.
    """
    values: list[Any] = []
    notes: list[str] = []
    for item in str(text)[:200].split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = parse(item)
        except ValueError as exc:
            notes.append(f"{exc}; ignored")
            continue
        if value not in values:
            values.append(value)
    if limit is not None and len(values) > limit:
        notes.append(f"at most {limit} {what}; kept the first {limit}")
        values = values[:limit]
    return values, notes
