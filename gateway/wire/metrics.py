"""Prometheus metrics of one pubex process.  Never labelled per lot or bidder:
labels are bounded sets (command type, outcome, role)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

ACK_BUCKETS_US = (
    100,
    250,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    250_000,
    1_000_000,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
COMMIT_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.commands = Counter(
            "pubex_commands", "Commands by type and outcome", ["type", "outcome"], registry=r
        )
        self.ack_latency = Histogram(
            "pubex_ack_latency_us",
            "Frame received to durable ack sent (µs)",
            buckets=ACK_BUCKETS_US,
            registry=r,
        )
        self.sequencer_answer = Histogram(
            "pubex_sequencer_answer_us",
            "On the sequencer: a command read from the link to its answer queued back (µs)",
            buckets=ACK_BUCKETS_US,
            registry=r,
        )
        self.batch_size = Histogram(
            "pubex_batch_entries",
            "Entries per committed batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "pubex_commit_seconds",
            "Group commit (fsync) round trip",
            buckets=COMMIT_BUCKETS_S,
            registry=r,
        )
        self.connections = Gauge(
            "pubex_connections", "Open WebSocket connections", ["role"], registry=r
        )
        self.queue_depth = Gauge(
            "pubex_sequencer_queue_depth", "Commands waiting for the sequencer", registry=r
        )
        self.send_queue_max = Gauge(
            "pubex_send_queue_max_bytes",
            "Most bytes owed to one connection (replies, events, snapshots, unsent tail)",
            registry=r,
        )
        self.closed_slow = Counter(
            "pubex_connections_closed_slow",
            "Connections closed 1013: owed more than send_queue_bytes",
            registry=r,
        )
        self.connections_refused = Counter(
            "pubex_connections_refused",
            "Upgrade requests refused for a connection cap",
            ["cap"],
            registry=r,
        )
        self.commands_failed = Counter(
            "pubex_commands_failed",
            "Commands refused because applying or storing them raised (the engine was rebuilt)",
            registry=r,
        )
        self.snapshots_dropped = Counter(
            "pubex_snapshots_dropped",
            "Lot snapshots replaced before a slow client took them",
            registry=r,
        )
        self.frames_refused = Counter(
            "pubex_frames_refused", "Frames refused at the gateway", ["code"], registry=r
        )
        self.durable_seq = Gauge("pubex_durable_seq", "Last durable ledger seq", registry=r)
        self.link_up = Gauge(
            "pubex_link_up",
            "Edges linked to the sequencer (on the sequencer); this edge's link up (1) or not",
            registry=r,
        )
        self.link_events = Counter(
            "pubex_link_events",
            "Link joins, peers refused, and links dropped for not reading or for a broken batch",
            ["event"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def merge_texts(parts: list[tuple[dict[str, str], bytes]]) -> bytes:
    """Several processes' exposition texts as one: each sample gets its part's
    labels (``role``, ``edge``), and each family is described once -- what a
    scraper of any edge of a split server reads (``pubex serve --edges K``)."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    for labels, text in parts:
        for fam in text_string_to_metric_families(text.decode("utf-8", "replace")):
            entry = families.setdefault(fam.name, (fam.type, fam.documentation, []))
            for sample in fam.samples:
                merged = {**sample.labels, **labels}
                body = ",".join(f'{k}="{_escape(v)}"' for k, v in merged.items())
                entry[2].append(f"{sample.name}{{{body}}} {floatToGoString(sample.value)}")
    out: list[str] = []
    for name, (kind, doc, lines) in families.items():
        out.append(f"# HELP {name} {_escape_doc(doc)}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(lines)
    return ("\n".join(out) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_doc(doc: str) -> str:
    return doc.replace("\\", "\\\\").replace("\n", "\\n")
