"""Page settings that are not Config fields (display and experiment controls) as URLs carry them.

A link holds such a value as text; the control that shows it offers a fixed set of numbers. This
turns one into the other and says what it changed, so a hand-edited or stale link never makes a
widget raise: the page shows the note instead.
"""
from __future__ import annotations

import math
from typing import Any, Sequence


def snap(name: str, raw: Any, default: float, options: Sequence[float]) -> tuple[float, str | None]:
    """``raw`` as the nearest of ``options`` (a sequence of numbers, or a ``range`` of whole numbers);
    ``default`` if it is not a finite number. Returns the value and a note for the page (None when
    ``raw`` was one of the options)."""
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return default, f"{name}: {str(raw)[:20]!r} is not a number; kept {default:g}"
    if not math.isfinite(number):
        return default, f"{name}: {str(raw)[:20]!r} is not a finite number; kept {default:g}"
    if isinstance(options, range):       # whole numbers (a seed): round and clamp, without a scan
        value = min(max(round(number), options.start), options.stop - 1)
    else:
        value = min(options, key=lambda o: abs(o - number))
    return value, None if value == number else f"{name}: {str(raw)[:20]} is not offered; using the nearest, {value:g}"
