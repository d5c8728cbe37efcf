"""``python -m bench SUITE [options]``: run one benchmark suite by name.

Each suite is a module ``bench.<name>`` with ``main(argv: list[str]) -> int``.
Benchmarks never fail on a timing: a suite exits 0 unless it could not run.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line description); later suites (``book``, ...) add a line here.
SUITES: dict[str, tuple[str, str]] = {
    "core": ("bench.core", "engine bids/s, durable bids/s vs raw LMDB, open-loop ack latency"),
    "book": (
        "bench.book",
        "order book ops/s and p99 vs cython-orderbook, akhil4n-orderbook, fastlob",
    ),
    "gateway": (
        "bench.gateway",
        "pubex serve acks/s vs trio-websocket echo (+verify), watcher lag",
    ),
    "services": (
        "bench.services",
        "each follower's catch-up vs a verify-and-decode scan, live lag at half max acks",
    ),
    "abuse": (
        "bench.abuse",
        "one hostile client: RSS of a never-reading pinger, ledger growth of a refuser",
    ),
    "memory": (
        "bench.memory",
        "edge RSS per idle bidder (vs 64 KiB), sequencer RSS for 100k open lots (vs 1 GiB)",
    ),
    "startup": (
        "bench.startup",
        "sequencer start-up (snapshot + tail, start-up check) vs a full replay (vs 0.1x)",
    ),
    "report": (
        "bench.report",
        "every suite in turn -> docs/benchmarks.md (+ .json, ack latency chart)",
    ),
}


def usage() -> str:
    lines = ["usage: python -m bench SUITE [--json] [--quick] [...]", "", "suites:"]
    lines += [f"  {name:<8} {desc}" for name, (_, desc) in SUITES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in SUITES:
        print(f"unknown suite {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUITES[name][0])
    result: int = module.main(rest)
    return result


if __name__ == "__main__":
    sys.exit(main())
