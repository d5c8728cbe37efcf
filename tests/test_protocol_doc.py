"""docs/protocol.md and README.md against the code they describe.

The protocol document is the contract client authors write against (issue 13.7), so it
must name everything the wire can carry.  Names come from the code, never from a list
kept here: client and server frames (``gateway/wire/protocol.py``), signed payloads, engine
events (``engine/messages.py``), refusal codes (``engine/codes.py``, ``GatewayError``),
``RuleSet`` fields and lot phases.  Each frame or event must have a table row in its
section whose first cell names it in backticks; each of its fields (and the fields of
the rows it nests, and the values of its enumerations) must appear in backticks in that
row.  Each code must have a row ``| number | `name` | meaning |`` with a meaning.  The
other way round, a row naming something the code does not have fails too.

README: every ``pubex COMMAND`` is a real subcommand, every option shown after it one of
its options, every ``make TARGET`` a Makefile target.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine import messages as m
from engine import state
from engine.codes import Reject
from engine.rules import PRESETS, RuleSet
from gateway.wire import protocol as p

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "protocol.md").read_text()
README = (ROOT / "README.md").read_text()
TICKED = re.compile(r"`([^`\n]+)`")


def section(title: str) -> str:
    """The text under the heading ``title`` (any level), up to the next heading of the
    same or a higher level; its subsections included."""
    lines = DOC.splitlines()
    for i, line in enumerate(lines):
        hashes = line.split(" ", 1)[0]
        if set(hashes) == {"#"} and line[len(hashes) + 1 :].strip() == title:
            end = next(
                (
                    j
                    for j in range(i + 1, len(lines))
                    if re.match(rf"#{{1,{len(hashes)}}} ", lines[j])
                ),
                len(lines),
            )
            return "\n".join(lines[i + 1 : end])
    raise AssertionError(f"docs/protocol.md has no section {title!r}")


def rows(text: str) -> dict[str, str]:
    """Table rows by each name in backticks in their first cell (header and rule rows
    left out); a row naming several (``freeze_lot`` / ``resume_lot``) is each one's."""
    found: dict[str, str] = {}
    for line in map(str.strip, text.splitlines()):
        if not line.startswith("| ") or line.startswith("| ---"):
            continue
        first = line.split(" | ", 1)[0]
        for name in TICKED.findall(first):
            found[name] = found.get(name, "") + line
    return found


def ticked(text: str) -> set[str]:
    return set(TICKED.findall(text))


def tag(cls: type) -> str:
    value = cls.__struct_config__.tag  # type: ignore[attr-defined]
    assert isinstance(value, str)
    return value


def members(union: Any) -> tuple[type, ...]:
    return typing.get_args(union)


def _bare(hint: Any) -> Any:
    while hasattr(hint, "__metadata__"):
        hint = hint.__origin__
    return hint


def literals(hint: Any) -> list[str]:
    """The string values of a Literal (also inside Annotated and tuples)."""
    hint = _bare(hint)
    if typing.get_origin(hint) is typing.Literal:
        return [v for v in typing.get_args(hint) if isinstance(v, str)]
    return [v for arg in typing.get_args(hint) for v in literals(arg)]


def nested(hint: Any) -> list[type]:
    """Structs carried inside a field (``tuple[RegionDemand, ...]``, ``list[TapeRow]``)."""
    hint = _bare(hint)
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return [hint]
    return [s for arg in typing.get_args(hint) for s in nested(arg)]


def expected_names(cls: type, *, skip: frozenset[str] = frozenset()) -> list[str]:
    """Every field of ``cls``, the fields of the row Structs it nests (a rule set is
    checked on its own) and the values of its enumerations."""
    names: list[str] = []
    for field in msgspec.structs.fields(cls):
        if field.name in skip:
            continue
        names.append(field.name)
        names += literals(field.type)
        for inner in nested(field.type):
            if inner is not RuleSet:
                names += expected_names(inner)
    return names


def missing_in_rows(classes: tuple[type, ...], table: dict[str, str], **kw: Any) -> list[str]:
    missing = []
    for cls in classes:
        row = table.get(tag(cls))
        if row is None:
            missing.append(f"{tag(cls)} (no row)")
            continue
        have = ticked(row)
        missing += [f"{tag(cls)}.{n}" for n in expected_names(cls, **kw) if n not in have]
    return missing


CLIENT = members(p.ClientFrame)
SERVER = members(p.ServerFrame)
EVENTS = members(m.AnyEvent)


def test_every_client_frame_and_field_is_documented() -> None:
    """Every staff frame's ``client_seq`` is described once, above the table."""
    text = section("Client frames")
    assert "`client_seq`" in text.split("| frame |", 1)[0]
    staff = tuple(c for c in CLIENT if issubclass(c, p.StaffFrame))
    others = tuple(c for c in CLIENT if c not in staff)
    table = rows(text)
    missing = missing_in_rows(others, table)
    missing += missing_in_rows(staff, table, skip=frozenset({"client_seq"}))
    assert not missing


def test_who_may_send_each_staff_frame() -> None:
    """The "who" column agrees with the gateway: registry frames name the registry
    service, supervision frames the supervisor, and no other staff frame names either."""
    table = rows(section("Client frames"))
    wrong = []
    for cls in CLIENT:
        if not issubclass(cls, p.StaffFrame):
            continue
        who = table[tag(cls)].rstrip(" |").rsplit(" | ", 1)[-1]
        if ("registry" in who) != issubclass(cls, p.REGISTRY_ACTIONS):
            wrong.append(f"{tag(cls)}: {who}")
        if ("supervisor" in who) != issubclass(cls, p.SUPERVISION_ACTIONS):
            wrong.append(f"{tag(cls)}: {who}")
    assert not wrong


def test_every_signed_payload_field_is_documented() -> None:
    text = section("Signed payloads")
    assert "`domain`" in text.split("| domain |", 1)[0]
    table = rows(text)
    payloads = {
        p.BID_DOMAIN: p.BidPayload,
        p.SEALED_DOMAIN: p.SealedPayload,
        p.ORDER_DOMAIN: p.OrderPayload,
    }
    missing = []
    for domain, cls in payloads.items():
        have = ticked(table.get(domain, ""))
        names = expected_names(cls, skip=frozenset({"domain"}))
        missing += [f"{domain}.{n}" for n in names if n not in have]
    assert not missing
    # each action's own fields, in the tables of the Bidding and e-mall sections
    for actions, where in ((p.SEALED_FIELDS, "Bidding"), (p.ORDER_FIELDS, "The e-mall")):
        text = next(section(t) for t in re.findall(r"^## (.+)$", DOC, re.M) if t.startswith(where))
        bidding = rows(text)
        for action, fields in actions.items():
            row = bidding.get(action, "")
            assert row, f"no row for the {action} action in {where}"
            assert all(f in row for f in fields), (action, sorted(fields))


def test_every_server_frame_and_field_is_documented() -> None:
    assert not missing_in_rows(SERVER, rows(section("Server frames")))


def test_every_event_and_field_is_documented() -> None:
    """``lot_id`` is every event's and described once, above the tables."""
    assert "`lot_id`" in section("Events").split("###", 1)[0]
    table = rows(section("Events"))
    assert not missing_in_rows(EVENTS, table, skip=frozenset({"lot_id"}))


def test_documented_frames_and_events_exist() -> None:
    """No row for a frame, payload or event the code does not have (renamed, removed)."""
    stale = set(rows(section("Client frames"))) - {tag(c) for c in CLIENT}
    stale |= set(rows(section("Server frames"))) - {tag(c) for c in SERVER}
    stale |= set(rows(section("Events"))) - {tag(c) for c in EVENTS}
    stale |= set(rows(section("Rule sets"))) - {f.name for f in msgspec.structs.fields(RuleSet)}
    assert not stale


@pytest.mark.parametrize("enum", [Reject, p.GatewayError], ids=["engine", "gateway"])
def test_every_code_has_a_row_with_its_number_name_and_meaning(enum: Any) -> None:
    codes = section("Codes")
    missing = []
    for code in enum:
        row = re.search(rf"^\| {code.value} \| `{code.name}` \| (.*) \|$", codes, re.M)
        if row is None or not row.group(1).strip():
            missing.append(f"{code.value} {code.name}")
    assert not missing


def test_no_code_row_the_code_does_not_have() -> None:
    known = {(c.value, c.name) for c in Reject} | {(c.value, c.name) for c in p.GatewayError}
    documented = {
        (int(n), name) for n, name in re.findall(r"^\| (\d+) \| `(\w+)` \|", section("Codes"), re.M)
    }
    assert documented == known


def test_every_rule_set_field_is_documented() -> None:
    text = section("Rule sets")
    table = rows(text)
    missing = []
    for field in msgspec.structs.fields(RuleSet):
        row = table.get(field.name)
        if row is None:
            missing.append(f"{field.name} (no row)")
            continue
        missing += [f"{field.name}={v}" for v in literals(field.type) if f"`{v}`" not in row]
    assert not missing
    assert not [name for name in PRESETS if f"`{name}`" not in text]


def test_every_phase_status_and_reason_is_named() -> None:
    """Lot statuses, phases and settlement states (engine/state.py constants), and the
    reasons events carry, appear in backticks in the document."""
    values = {
        v
        for k, v in vars(state).items()
        if k.isupper() and isinstance(v, str) and not k.startswith("_")
    }
    values |= set(typing.get_args(m.UnsoldReason))
    assert values, "engine/state.py has no constants"
    assert not sorted(values - ticked(DOC))
    phases = {state.BIDDING, state.LISTING, state.DESCENDING, state.SUBMISSION, state.QUOTING}
    mechanisms = ticked(section("Mechanisms"))
    assert phases <= mechanisms
    assert set(typing.get_args(m.Mechanism)) <= mechanisms


# ------------------------------------------------------------------ README


def _readme_code() -> list[str]:
    """Lines of the README's sh blocks and its inline code."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        lines += block.splitlines()
    lines += TICKED.findall(README)
    return lines


def _subparsers(parser: Any) -> dict[str, Any]:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: Any) -> set[str]:
    found = {s for a in parser._actions for s in a.option_strings}
    for sub in _subparsers(parser).values():
        found |= _options(sub)
    return found


def test_readme_commands_and_options_exist() -> None:
    from gateway.entry.cli import build_parser

    commands = _subparsers(build_parser())
    seen = set()
    bad = []
    for line in _readme_code():
        for m_ in re.finditer(r"(?:^|[\s/(])pubex ([a-z][a-z-]*)((?: [^;|&`]*)?)", line):
            name, rest = m_.group(1), m_.group(2)
            seen.add(name)
            if name not in commands:
                bad.append(f"pubex {name}")
                continue
            known = _options(commands[name])
            bad += [
                f"pubex {name} {o}" for o in re.findall(r"--[a-z][a-z-]*", rest) if o not in known
            ]
    assert not bad
    # the quick start and command line cover every command but the hidden ones
    assert not sorted(set(commands) - seen)


def test_readme_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    named = set()
    for line in _readme_code():
        named |= set(re.findall(r"\bmake ([a-z][a-z-]*)", line))
    assert named, "the README names no make target"
    assert not sorted(named - targets)
