"""Helpers shared by the benchmark suites: exact percentiles, units, the machine."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Sequence
from typing import Any

import orjson


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


Row = tuple[str, str, str, str]  # figure, value, limit or peer, ratio


def emit(result: dict[str, Any], as_json: bool, table: Callable[[dict[str, Any]], str]) -> None:
    """A suite's output: one JSON object (``--json``), or its table and elapsed time."""
    if as_json:
        print(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS).decode())
    else:
        print(table(result))
        print(f"elapsed {result['elapsed_s']} s")


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def render(rows: list[Row], machine_facts: dict[str, Any]) -> list[str]:
    """The suites' table: figure, value, its limit or peer, the ratio; then the machine."""
    w0 = max(len(x[0]) for x in rows)
    w1 = max(len(x[1]) for x in rows)
    w2 = max(len(x[2]) for x in rows)
    head = f"{'figure':<{w0}}  {'value':>{w1}}  {'limit/peer':<{w2}}  ratio"
    lines = [head, "-" * len(head)]
    lines += [f"{a:<{w0}}  {b:>{w1}}  {c:<{w2}}  {d}" for a, b, c, d in rows]
    m = machine_facts
    lines.append(f"machine: {m['platform']}, {m['cpu_count']} CPUs, Python {m['python']}")
    return lines
