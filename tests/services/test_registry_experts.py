"""Expert draws (R-6.5): avoidance is always honoured, the pool matches the
criteria, and a draw re-run from the revealed seed gives the same experts; a
wrong seed or a changed pool is detected."""

from __future__ import annotations

import tempfile
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.draw import seed_hash
from persistence.service import ServiceStore
from services.registry.experts import (
    YEAR_NS,
    DrawError,
    ExpertBook,
    public,
    rerun,
)
from services.registry.model import DrawCriteria, Expert, Relation

NOW_NS = 50 * YEAR_NS
SPECIALTIES = ["civil", "water", "it", "medical"]
REGIONS = ["JS", "ZJ", "SH"]
SUBJECTS = [f"s{i}" for i in range(8)]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Expert], list[Relation], list[str], DrawCriteria]:
    n = draw(st.integers(5, 40))
    experts = [
        Expert(
            expert_id=f"e{i:03d}",
            name=f"expert {i}",
            specialties=draw(st.lists(st.sampled_from(SPECIALTIES), min_size=1, max_size=3)),
            region=draw(st.sampled_from(REGIONS)),
            available=draw(st.booleans()) or draw(st.booleans()),
            engaged_days=draw(st.lists(st.sampled_from(["2026-01-05", "2026-01-06"]), max_size=1)),
            barred=draw(st.integers(0, 9)) == 0,
        )
        for i in range(n)
    ]
    relations = [
        Relation(
            expert_id=f"e{draw(st.integers(0, n - 1)):03d}",
            subject_id=draw(st.sampled_from(SUBJECTS)),
            kind=draw(st.sampled_from(["employment", "shareholding", "family", "other"])),
            until_ns=draw(st.sampled_from([-1, NOW_NS - 4 * YEAR_NS, NOW_NS - YEAR_NS, NOW_NS])),
        )
        for _ in range(draw(st.integers(0, 3 * n)))
    ]
    bidders = draw(st.lists(st.sampled_from(SUBJECTS), min_size=1, max_size=5, unique=True))
    region = draw(st.sampled_from(["", *REGIONS]))
    criteria = DrawCriteria(
        lot_id="T1",
        specialty=draw(st.sampled_from(["", *SPECIALTIES])),
        region=region,
        region_reason="local regulation" if region else "",
        count=draw(st.integers(1, 4)),
        alternates=draw(st.integers(0, 3)),
        day=draw(st.sampled_from(["", "2026-01-05"])),
        avoid_subjects=draw(st.lists(st.sampled_from(SUBJECTS), max_size=1)),
        at_ns=NOW_NS,
    )
    return experts, relations, bidders, criteria


_STORE: dict[str, ServiceStore] = {}


def fresh_book() -> ExpertBook:
    """One store for every example (opening LMDB per example is the slow part),
    emptied of experts and relations before each."""
    if "s" not in _STORE:
        _STORE["s"] = ServiceStore.open(Path(tempfile.mkdtemp(prefix="experts-")))
    store = _STORE["s"]
    book = ExpertBook(store)

    def clear(txn: object) -> None:
        for name in (b"rg_experts", b"rg_relations"):
            txn.drop(store.db(name), delete=False)  # type: ignore[attr-defined]

    store.write(clear)
    return book


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_draws_honour_avoidance_and_rerun_from_the_revealed_seed(
    world: tuple[list[Expert], list[Relation], list[str], DrawCriteria],
) -> None:
    experts, relations, bidders, criteria = world
    if True:
        book = fresh_book()
        book.put_experts(experts)
        if relations:
            book.add_relations(relations)
        try:
            committed = book.commit(criteria, bidders)
        except DrawError as e:
            assert "pool insufficient" in str(e)
            return
        shown = public(committed)
        assert shown.seed_hex == "" and shown.drawn == []  # the seed stays secret until the reveal
        assert committed.seed_hash == seed_hash(committed.seed_hex)
        drawn = book.reveal(committed.draw_id, NOW_NS + 1).drawn
        by_id = {e.expert_id: e for e in experts}
        avoid = set(bidders) | set(criteria.avoid_subjects)
        window_start = NOW_NS - 3 * YEAR_NS
        for eid in drawn:
            e = by_id[eid]
            assert not criteria.specialty or criteria.specialty in e.specialties
            assert not criteria.region or e.region == criteria.region
            assert e.available and not e.barred and criteria.day not in e.engaged_days
            for r in relations:
                if r.expert_id == eid and r.subject_id in avoid:
                    assert 0 <= r.until_ns < window_start, (eid, r)  # ended before the window
        assert len(drawn) == min(len(committed.pool), criteria.count + criteria.alternates)
        assert len(set(drawn)) == len(drawn)
        stored = book.draw(committed.draw_id)
        assert stored is not None and rerun(stored) == drawn
        # the record travels as JSON and re-runs there too
        again = msgspec.json.decode(msgspec.json.encode(stored), type=type(stored))
        assert rerun(again) == drawn


def test_a_wrong_seed_or_pool_is_detected_and_draws_are_not_redrawn(tmp_path: Path) -> None:
    with ServiceStore.open(tmp_path / "s") as store:
        book = ExpertBook(store)
        book.put_experts(
            [
                Expert(expert_id=f"e{i}", name="x", specialties=["civil"], region="JS")
                for i in range(9)
            ]
        )
        book.add_relations([Relation(expert_id="e3", subject_id="bidder-1", kind="family")])
        c = DrawCriteria(lot_id="L", specialty="civil", count=3, alternates=2, at_ns=NOW_NS)
        d = book.commit(c, ["bidder-1"])
        assert "e3" not in d.pool and d.excluded["e3"].startswith("avoidance: family")
        with pytest.raises(DrawError, match="not revealed"):
            rerun(d)
        first = book.reveal(d.draw_id, NOW_NS)
        assert book.reveal(d.draw_id, NOW_NS + 5).drawn == first.drawn  # a second reveal is a read
        forged = msgspec.structs.replace(first, seed_hex="00" * 32)
        with pytest.raises(DrawError, match="seed"):
            rerun(forged)
        shrunk = msgspec.structs.replace(first, pool=first.pool[1:])
        with pytest.raises(DrawError, match="pool"):
            rerun(shrunk)
        with pytest.raises(DrawError, match="reason"):
            book.commit(msgspec.structs.replace(c, region="JS"), [])
        with pytest.raises(DrawError, match="insufficient"):
            book.commit(msgspec.structs.replace(c, count=9), ["bidder-1"])
