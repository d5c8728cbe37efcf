"""Issue 13 (2): a ledger written before today's id bounds (64 characters of
``[A-Za-z0-9._-]``) holds ids of any length and content -- a 600- or
5,000-character bidder id, non-ASCII, NUL.  Every companion follows such a
ledger to its end (nothing skipped: each key is storable by construction,
:mod:`persistence.keys`), survives a restart on it, and serves its HTTP reads
for those records.

The ledger is written the way such an old gateway would have: engine commands
built directly and appended with the ledger's Journal (``Market``), bypassing
the gateway's Reader that bounds ids today."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.messages import (
    AnswerComplaint,
    Command,
    ComplaintFiled,
    ComplaintHandled,
    ConfirmDeposit,
    ConfirmPayment,
    DeclareDefault,
    Event,
    FileComplaint,
    HandleAlert,
    KeyRegistered,
    PlaceBid,
    RegisterBidder,
    RegisterKey,
    encode_command,
    encode_events,
)
from engine.rules import JUDICIAL_SETTLED
from ledger.record import EntryBody, chain_entry, encode_body
from ledger.store import LedgerStore
from persistence.keys import PART_MAX, key_pair, key_part
from persistence.service import ServiceStore
from services.disclosure.projection import DisclosureProjection, DisclosureReader
from services.follower import Entry, Follower
from services.registry.projection import RegistryProjection, RegistryReader
from services.registry.writer import Outbox
from services.supervision.projection import SupervisionProjection, SupervisionReader
from tests import tokens
from tests.services.service_process import start, wait_listening
from tests.services.supervision_market import HOUR_NS, MINUTE_NS, Market

pytestmark = pytest.mark.timeout(120)

MAX64 = "m" * 64  # today's longest id
LONG = "b" * 600  # the probe's bidder id
HUGE = "h" * 5000
WIDE = "竞买人" * 100  # 300 characters, 900 bytes of UTF-8
NUL = "nul\x00bidder"
BIDDERS = (LONG, HUGE, WIDE, NUL, MAX64)
# the engine itself bounds lot and key ids to 64 characters -- of any kind: 4-byte ones
# make 256 bytes of UTF-8, beyond a plain key part
LOT_PAID = "P" * 64
LOT_DEFAULT = "🂡" * 64
LOT_NONE = "n" * 5000  # no such lot: refused by the engine, ledgered all the same
COMPLAINT = "c" * 600  # today's engine refuses ids past 64: forged as an older one wrote them
COMPLAINT_NUL = "c\x00" * 2500
KEY_ID = "🔑" * 64
LONG_KEY = "k" * 600
SHARED_IP = "1.2.3.4"


def build(ledger_dir: Path) -> dict[str, Any]:
    """LONG registers, bids, wins and pays on LOT_PAID; wins and defaults on
    LOT_DEFAULT; HUGE bids from LONG's IP (a W-D1 alert naming both); a
    600-character complaint is filed and answered; the alert is handled."""
    m = Market(ledger_dir)
    try:
        t = m.now_ns
        for lot in (LOT_PAID, LOT_DEFAULT):
            m.lot(lot, rules=JUDICIAL_SETTLED, t_ns=t, end_ns=t + MINUTE_NS + 4 * HOUR_NS)
            for b in BIDDERS:
                m.staff(RegisterBidder, lot, b, t_ns=t)
                m.staff(ConfirmDeposit, lot, b, 10_000, t_ns=t)
        m.key(KEY_ID, LONG, "ab" * 32, t)
        start = t + MINUTE_NS
        for lot in (LOT_PAID, LOT_DEFAULT):
            for i, b in enumerate((HUGE, WIDE, NUL, MAX64, LONG)):
                _, events = m.bidder(
                    b,
                    PlaceBid,
                    lot,
                    100_000 + i * 1_000,
                    t_ns=start + (i + 1) * MINUTE_NS,
                    ip=SHARED_IP if b in (LONG, HUGE) else f"9.9.9.{i}",
                    device=f"dev-{i}",
                )
                assert any(type(e).__name__ == "BidAccepted" for e in events), events
        m.bidder(LONG, PlaceBid, LOT_NONE, 1, t_ns=start)
        m.staff(RegisterBidder, LOT_NONE, HUGE, t_ns=start)
        m.fire(start + 5 * HOUR_NS)  # both lots close: LONG wins them
        later = start + 6 * HOUR_NS
        m.staff(ConfirmPayment, LOT_PAID, t_ns=later)
        m.staff(DeclareDefault, LOT_DEFAULT, "walked away " + WIDE, t_ns=later)
        origin, staff = f"bidder:{LONG}", "staff:clerk"
        for cid in (COMPLAINT, COMPLAINT_NUL):
            filed = FileComplaint(origin, m.next_seq(origin), LOT_PAID, cid, "x" * 5000)
            forge(m, filed, [ComplaintFiled(LOT_PAID, cid, "bidder")], later)
            answer = AnswerComplaint(staff, m.next_seq(staff), cid, "answer", "answered: " + WIDE)
            forge(m, answer, [ComplaintHandled(LOT_PAID, cid, "answer")], later)
        key = RegisterKey(staff, m.next_seq(staff), LONG_KEY, HUGE, "cd" * 32)
        forge(m, key, [KeyRegistered("", LONG_KEY)], later)
        m.journal.commit()
        # supervision raised an alert on LONG and HUGE: staff handle it (its key, and
        # a 5,000-character key an old console might have sent)
        alerts = follow_supervision(m.store, ledger_dir.parent / "probe")
        shared = [a for a in alerts if LONG in a.subjects and HUGE in a.subjects]
        assert shared, [(a.rule, a.subjects) for a in alerts]
        alert = shared[0]
        for key in (alert.key, "z" * 5000):
            m.staff(HandleAlert, alert.lot_id, key, "acknowledge", WIDE, t_ns=later + 1)
        m.journal.commit()
        return {"last_seq": m.store.last_seq(), "alert": alert}
    finally:
        m.close()


def forge(m: Market, cmd: Command, events: list[Event], t_ns: int) -> None:
    """An entry as an older engine ledgered it (its bounds were wider): chained and
    batched the Journal's way, not applied by today's router (which refuses it)."""
    m.now_ns = max(t_ns, m.now_ns + 1)
    m.router.state.applied += 1
    seq = m.router.applied
    body = encode_body(EntryBody(seq, m.now_ns, encode_command(cmd), encode_events(events), b""))
    entry_hash, value, _ = chain_entry(m.journal.prev_hash, body)
    m.journal.prev_hash = entry_hash
    m.journal.batch.entries.append((seq, value))


def follow_supervision(ledger: LedgerStore, path: Path) -> list[Any]:
    with ServiceStore.open(path) as ss:
        Follower("probe", ledger, ss, [SupervisionProjection()]).catch_up()
        return SupervisionReader(ss).alerts(0, 10_000)


@pytest.fixture(scope="module")
def old_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any]]]:
    data = tmp_path_factory.mktemp("poison") / "data"
    facts = build(data / "ledger")
    yield data, facts


def follow(data: Path, name: str, projection: Any, restarts: int = 2) -> ServiceStore:
    """Follow to the end ``restarts`` times over (a restart resumes, applies nothing
    twice), nothing skipped; the store is returned open."""
    ledger = LedgerStore.open(data / "ledger", readonly=True)
    try:
        for _ in range(restarts):
            with ServiceStore.open(data / name) as ss:
                f = Follower(name, ledger, ss, [projection()], chunk_entries=7)
                f.catch_up()
                st = f.statistics()
                assert st.position == ledger.last_seq() and st.lag_entries == 0
                assert st.skipped == 0 and f.skipped() == []
    finally:
        ledger.close()
    return ServiceStore.open(data / name)


def test_key_parts_are_storable_and_distinct() -> None:
    for s in (MAX64, LONG, HUGE, WIDE, NUL, "", "\ud800x"):
        k = key_part(s)
        assert len(k) <= PART_MAX and b"\x00" not in k
    assert key_part(MAX64) == MAX64.encode()  # today's ids keep their keys
    assert len(key_pair(HUGE, HUGE) + bytes(8)) <= 511
    assert key_part(LONG) != key_part(LONG + "x") and key_part(NUL) != key_part("nul")


def test_registry_follows_an_old_ledger(old_ledger: tuple[Path, dict[str, Any]]) -> None:
    data, _ = old_ledger
    with follow(data, "registry", RegistryProjection) as ss:
        r = RegistryReader(ss)
        paid = {g.bidder_id: g.deposit for g in r.registrations(LOT_PAID)}
        assert paid == {LONG: "applied", **{b: "refund_due" for b in BIDDERS if b != LONG}}
        defaulted = {g.bidder_id: g.deposit for g in r.registrations(LOT_DEFAULT)}
        assert defaulted[LONG] == "forfeited" and defaulted[HUGE] == "refund_due"
        assert r.registration(LOT_DEFAULT, LONG).reason.startswith("walked away")  # type: ignore[union-attr]
        subject = r.subject(LONG)
        assert subject is not None and subject[1][0].key_id == KEY_ID
        assert r.key(LONG_KEY).subject_id == HUGE  # type: ignore[union-attr]
        assert [k.key_id for k in r.subject(HUGE)[1]] == [LONG_KEY]  # type: ignore[index]
        assert r.subject(NUL) is not None and r.subject("nul") is None
        assert r.lot(LOT_DEFAULT).status == "defaulted"  # type: ignore[union-attr]
        due = {(lot, b) for lot, b, _ in r.due()}
        assert (LOT_PAID, HUGE) in due and (LOT_DEFAULT, NUL) in due and len(due) == 8
        # the writer queues the refunds with the ids themselves (the gateway bounds
        # them today and refuses: final, never a crash)
        outbox = Outbox(ss, r)
        frames = [outbox.intent(cs).frame for cs in outbox.queue_refunds()]  # type: ignore[union-attr]
        assert {(f["lot"], f["bidder"]) for f in frames} == due
        assert outbox.refund_cs(LOT_PAID, HUGE) > 0


def test_supervision_follows_an_old_ledger(old_ledger: tuple[Path, dict[str, Any]]) -> None:
    data, facts = old_ledger
    with follow(data, "supervision", SupervisionProjection) as ss:
        r = SupervisionReader(ss)
        got = r.alert(facts["alert"].alert_id)
        assert got is not None and [h.note for h in got[1]] == [WIDE]  # handled once
        assert any(a.alert_id == facts["alert"].alert_id for a in r.alerts(lot=LOT_PAID))
        for cid in (COMPLAINT, COMPLAINT_NUL):
            c = r.complaint(cid)
            assert c is not None and c.lot_id == LOT_PAID and c.answer == "answered: " + WIDE
        assert r.complaint("c") is None
        assert r.monitor(LOT_DEFAULT) is not None and r.monitor(LOT_PAID).bid_count == 5  # type: ignore[union-attr]


def test_disclosure_follows_an_old_ledger(old_ledger: tuple[Path, dict[str, Any]]) -> None:
    data, _ = old_ledger
    with follow(data, "disclosure", DisclosureProjection) as ss:
        r = DisclosureReader(ss)
        lot = r.lot(LOT_DEFAULT)
        assert lot is not None and lot.notices
        kinds = [n.kind for n in r.notices(lot_id=LOT_PAID)]
        assert "result" in kinds or len(kinds) >= 2, kinds


def test_a_failing_entry_is_skipped_recorded_and_followed_past(tmp_path: Path) -> None:
    """The last resort: a projection that raises on one entry does not stop the
    follower (nor crash-loop it); the entry is recorded, counted and skipped."""
    m = Market(tmp_path / "ledger")
    m.lot("L1", bidders=("a", "b"))
    m.close()

    class Fails:
        dbs = (b"seen",)

        def load(self, store: ServiceStore, txn: Any) -> None:
            self.db = store.db(b"seen")

        def apply(self, txn: Any, entry: Entry) -> None:
            txn.put(entry.seq.to_bytes(8, "big"), b"", db=self.db)
            if entry.seq == 3:
                raise ValueError("cannot")

    ledger = LedgerStore.open(tmp_path / "ledger", readonly=True)
    with ledger, ServiceStore.open(tmp_path / "svc") as ss:
        f = Follower("t", ledger, ss, [Fails()])
        f.catch_up()
        assert f.position.seq == ledger.last_seq() and f.statistics().skipped == 1
        [rec] = f.skipped()
        assert rec["seq"] == 3 and rec["projection"] == "Fails" and "cannot" in rec["error"]
        with ss.read() as txn:
            seen = [int.from_bytes(k, "big") for k, _ in txn.cursor(ss.db(b"seen"))]
        assert seen == [s for s in range(1, ledger.last_seq() + 1) if s != 3]  # not half-applied
        assert Follower("t", ledger, ss, [Fails()]).statistics().skipped == 1  # durable


def get(url: str, token: str) -> Any:
    req = urllib.request.Request(url, headers=tokens.bearer(token))
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def test_companion_processes_serve_the_old_records(
    old_ledger: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The real processes, on a copy of the data dir: each follows to the end
    and answers its HTTP reads for the long, wide and NUL ids."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(old_ledger[0] / "ledger", data / "ledger")
    last = old_ledger[1]["last_seq"]
    procs = {}
    try:
        urls = {}
        for cmd in ("supervise", "disclose", "registry"):
            procs[cmd] = start(cmd, data, tmp_path / f"{cmd}.log")
        for cmd, proc in procs.items():
            urls[cmd] = wait_listening(proc, tmp_path / f"{cmd}.log")
        for cmd, url in urls.items():
            health = json.loads(urllib.request.urlopen(url + "healthz", timeout=10).read())
            assert health["position"] == last and health["skipped"] == 0, (cmd, health)
        sv, rg, dc = urls["supervise"], urls["registry"], urls["disclose"]
        # ids today's id_pattern refuses: read from the lists, and a read by such
        # an id is a typed 400 (a parameter that cannot name anything today), never 5xx
        complaints = get(f"{sv}api/complaints?limit=1000", tokens.SUPERVISOR)["complaints"]
        assert COMPLAINT in {c["complaint_id"] for c in complaints}
        monitors = get(f"{sv}api/lots?limit=1000", tokens.SUPERVISOR)["lots"]
        assert LOT_DEFAULT in {m["lot_id"] for m in monitors}
        alerts = get(f"{sv}api/alerts?lot={q(LOT_PAID)}", tokens.SUPERVISOR)
        assert any(LONG in a["subjects"] for a in alerts["alerts"]), alerts
        subjects = get(f"{rg}api/subjects?limit=1000", tokens.STAFF)["subjects"]
        assert {LONG, HUGE, WIDE, NUL} <= {row["subject_id"] for row in subjects}
        for url in (
            f"{sv}api/complaints/{q(COMPLAINT)}",
            f"{sv}api/lots/{q(LOT_DEFAULT)}",
            *(f"{rg}api/subjects/{q(who)}" for who in (LONG, HUGE, WIDE, NUL)),
        ):
            req = urllib.request.Request(url, headers=tokens.bearer(tokens.STAFF))
            try:
                urllib.request.urlopen(req, timeout=10)
                raise AssertionError(f"{url[:80]}: an id outside id_pattern was read")
            except urllib.error.HTTPError as e:
                assert e.code == 400 and json.loads(e.read())["code"] == "bad_parameter"
        lot = json.loads(urllib.request.urlopen(f"{dc}api/lots/{q(LOT_PAID)}", timeout=10).read())
        assert lot["lot_id"] == LOT_PAID
        for cmd, proc in procs.items():
            assert proc.poll() is None, (tmp_path / f"{cmd}.log").read_text()
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(30)
