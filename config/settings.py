"""Typed runtime settings, loaded from TOML.

Theory of operation: ``config/default.toml`` is the documented default; the Structs below
carry the same defaults (a test keeps them equal), so a user file only needs the keys it
changes. Loading is strict: no type coercion ("8080" is not a port), unknown keys are
errors, and every failure is a ``ConfigError`` that names the offending key as a dotted
path (``ledger.batch_max_bytes``). Units are the last part of every name.

Settings are frozen: the shell layers read them once at start-up and pass the pieces they
need down. The engine never sees this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ClockSettings",
    "ConfigError",
    "LedgerSettings",
    "NetSettings",
    "ServiceSettings",
    "Settings",
    "load_settings",
]

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default.toml")

_MiB = 1024 * 1024

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]  # 0 = let the OS pick (tests)
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


# Every settings Struct is frozen (read once, never changed), keyword-only, and refuses
# unknown keys (a typo must not silently fall back to a default). The options are spelled
# out on each class because type checkers do not inherit ``frozen`` from a base Struct.


class LedgerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    batch_max_entries: Positive = 1024
    batch_max_bytes: Positive = 4 * _MiB
    snapshot_every_entries: Positive = 100_000
    checkpoint_every_entries: Positive = 1_000
    map_size_bytes: Positive = 64 * _MiB  # initial size; persistence grows the map


class ClockSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Forward wall-clock jumps are absorbed at most at (1 + ppm / 1e6) x real speed.
    max_slew_ppm: NonNegative = 500


class NetSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: NonEmpty = "127.0.0.1"
    ws_port: Port = 8765
    http_port: Port = 8080


class AuthSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # token -> staff id / supervisor id. Development defaults; a deployment's own
    # config file replaces them.
    staff_tokens: dict[str, str] = msgspec.field(
        default_factory=lambda: {"dev-staff-token": "staff-01"}
    )
    supervisor_tokens: dict[str, str] = msgspec.field(
        default_factory=lambda: {"dev-supervisor-token": "supervisor-01"}
    )
    # token -> service id: companions that submit registry commands (origin
    # "service:<id>"; the registry frames only).
    service_tokens: dict[str, str] = msgspec.field(
        default_factory=lambda: {"dev-registry-token": "registry"}
    )
    # Browser Origins allowed on the WebSocket port besides the console's own.
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    handshake_window_s: Positive = 30
    watchers_allowed: bool = True
    # /metrics of every process: "" = loopback clients only; else this bearer token only.
    metrics_token: str = ""
    # A failed authentication (any surface) slows its client address down: the n-th
    # failure in a row makes it wait base * 2**(n-1), at most max, before it may try again
    # (0 turns the back-off off: for test harnesses only).
    auth_backoff_base_ms: NonNegative = 100
    auth_backoff_max_s: Positive = 30


class LimitSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_frame_bytes: Annotated[int, msgspec.Meta(ge=1024, le=_MiB)] = 16_384
    # Every money field of every frame and HTTP body: at most this many fen. The
    # schema itself stops at 2**63 - 1 (what the ledger stores).
    max_amount_fen: Annotated[int, msgspec.Meta(ge=1, le=2**62)] = 10**15
    # Every identifier (lot, item, bidder, key, expert, complaint, alert, ...) must
    # match this whole (ASCII by default: no look-alike ids); at most 128 characters.
    id_pattern: NonEmpty = r"[A-Za-z0-9._-]{1,64}"
    max_depth: Annotated[int, msgspec.Meta(ge=4, le=64)] = 8  # JSON nesting of a frame
    bids_per_s: Positive = 20  # per bidder, token bucket (every signed frame takes a token)
    bid_burst: Positive = 40
    # Commands of one staff member, supervisor or service (token bucket): each is
    # ledgered, accepted or not, so a token cannot grow the ledger without bound.
    staff_commands_per_s: Positive = 100
    staff_burst: Positive = 1_000
    # A key's (or staff member's) engine refusals ledgered per minute; past the
    # budget its commands are refused at the edge, unledgered, until it refills.
    refusals_per_minute: Positive = 60
    # Everything a connection is owed (replies, events, snapshots) in bytes; past
    # it the connection is closed with 1013.
    send_queue_bytes: Annotated[int, msgspec.Meta(ge=64 * 1024)] = _MiB
    max_connections: Positive = 20_000  # WebSocket connections in total
    max_connections_per_address: Positive = 200  # from one client IP
    subscriptions_per_connection: Positive = 5_000  # known lots and items only
    snapshot_interval_ms: Positive = 100
    heartbeat_s: Positive = 15  # a peer that misses a ping for this long is dropped
    # client_seq sessions the engine keeps per origin (staff id, service, bidder);
    # past it a new session forgets the least recently used one.  Ledgered with
    # each start (RuntimeStarted), so a replay bounds them as the run did.
    sessions_per_identity: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 16

    def __post_init__(self) -> None:
        try:
            re.compile(self.id_pattern)
        except re.error as exc:
            raise ValueError(f"id_pattern is not a regular expression: {exc}") from None


class ServiceSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # HTTP ports of the companions `pubex platform` starts beside the engine (0 = any).
    supervision_http_port: Port = 8092
    disclosure_http_port: Port = 8093
    registry_http_port: Port = 8094
    # `pubex platform` itself: /healthz (each child's state) and /metrics, on 127.0.0.1.
    platform_http_port: Port = 8095
    # A child that exits is restarted after a back-off (restart_backoff_ms doubling to
    # restart_backoff_max_s; back to the start once it ran restart_window_s); one that
    # exits restart_max_tries times within restart_window_s is held (not restarted).
    restart_max_tries: Positive = 5
    restart_window_s: Positive = 60
    restart_backoff_ms: Positive = 500
    restart_backoff_max_s: Positive = 30


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    data_dir: NonEmpty = "./var"
    ledger: LedgerSettings = msgspec.field(default_factory=LedgerSettings)
    clock: ClockSettings = msgspec.field(default_factory=ClockSettings)
    net: NetSettings = msgspec.field(default_factory=NetSettings)
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    limits: LimitSettings = msgspec.field(default_factory=LimitSettings)
    services: ServiceSettings = msgspec.field(default_factory=ServiceSettings)


class ConfigError(ValueError):
    """Bad configuration. ``key`` is the dotted key at fault, when one can be named."""

    def __init__(self, source: str, key: str | None, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {reason}")


def load_settings(path: str | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """Load settings from ``path`` (default: the packaged defaults), then apply ``overrides``.

    ``overrides`` may be nested (``{"net": {"ws_port": 0}}``) or dotted
    (``{"net.ws_port": 0}``); it is validated as strictly as the file.
    """
    source = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    raw = _read_toml(source)
    settings = _convert(raw, str(source))
    if not overrides:
        return settings
    merged = _deep_merge(raw, _expand_dotted(overrides))
    return _convert(merged, "overrides")


def _read_toml(source: Path) -> dict[str, Any]:
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(source), None, f"cannot read: {exc}") from None
    try:
        raw = msgspec.toml.decode(text)
    except msgspec.DecodeError as exc:
        key = _key_at_error_line(text, str(exc))
        raise ConfigError(str(source), key, f"malformed TOML: {exc}") from None
    assert isinstance(raw, dict)  # a TOML document is always a table
    return raw


def _convert(raw: Mapping[str, Any], source: str) -> Settings:
    try:
        return msgspec.convert(raw, Settings, strict=True)
    except msgspec.ValidationError as exc:
        key, reason = _split_validation_error(str(exc))
        raise ConfigError(source, key, reason) from None


_AT_PATH = re.compile(r"^(?P<reason>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN_FIELD = re.compile(r"unknown field `(?P<name>[^`]+)`")


def _split_validation_error(message: str) -> tuple[str | None, str]:
    """'Expected `int`, got `str` - at `$.ledger.x`' -> ('ledger.x', 'Expected ...')."""
    match = _AT_PATH.match(message)
    assert match is not None  # the pattern matches any string
    reason = match["reason"]
    parts = [p for p in (match["path"] or "").split(".") if p]
    unknown = _UNKNOWN_FIELD.search(reason)
    if unknown:
        parts.append(unknown["name"])
    return (".".join(parts) or None), reason


_LINE_NO = re.compile(r"\(at line (\d+), column \d+\)")
_TABLE_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_KEY_LINE = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")


def _key_at_error_line(text: str, message: str) -> str | None:
    """Best effort: the dotted key defined on the line tomllib complains about."""
    found = _LINE_NO.search(message)
    if not found:
        return None
    lines = text.splitlines()
    line_no = int(found.group(1))
    table = ""
    for line in lines[: line_no - 1]:
        header = _TABLE_HEADER.match(line)
        if header:
            table = header.group(1)
    if line_no > len(lines):
        return table or None
    line = lines[line_no - 1]
    header = _TABLE_HEADER.match(line)
    if header:
        return header.group(1)
    key = _KEY_LINE.match(line)
    if not key:
        return table or None
    name = key.group(1).replace('"', "").replace("'", "").replace(" ", "")
    return f"{table}.{name}" if table else name


def _expand_dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    expanded: dict[str, Any] = {}
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = expanded
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError("overrides", dotted, f"{part!r} is set to a value, not a table")
        if isinstance(value, Mapping):
            value = _deep_merge(node.get(leaf, {}), _expand_dotted(value))
        node[leaf] = value
    return expanded


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
