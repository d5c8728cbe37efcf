"""Helpers shared by the benchmark suites: exact percentiles, units, the machine."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Sequence
from typing import Any


def pct(sorted_samples: Sequence[int], q: float) -> int:
    """Exact nearest-rank percentile of sorted samples (q in [0, 100])."""
    n = len(sorted_samples)
    if n == 0:
        return 0
    rank = max(1, math.ceil(q / 100 * n))
    return sorted_samples[min(rank, n) - 1]


def us(ns: float) -> float:
    return round(ns / 1000, 1)


def machine(**extra: Any) -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        **extra,
    }
