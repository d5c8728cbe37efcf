"""LedgerStore on a real LMDB environment in tmp_path (no mocks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.record import GENESIS, chain_hash, make_entry, unpack_value
from ledger.store import Batch, LedgerCorrupt, LedgerStore, StorageUnavailable
from ledger.verify import verify_chain
from persistence.env import map_size
from tests.ledger.conftest import body_bytes, make_batch, write_chain

KiB = 1024


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LedgerStore]:
    s = LedgerStore.open(tmp_path / "ledger")
    yield s
    s.close()


def test_empty_store(store: LedgerStore) -> None:
    assert store.last_seq() == 0
    assert store.last_hash() == GENESIS
    assert store.get(1) is None
    assert list(store.iter_entries()) == []
    assert store.latest_snapshot() is None
    assert store.snapshot_at_or_before(10) is None
    assert store.checkpoints() == []
    assert store.get_meta(b"x") is None


def test_commit_and_read_back(store: LedgerStore) -> None:
    last = write_chain(store, 25, per_batch=7)
    assert store.last_seq() == 25
    assert store.last_hash() == last
    entry = store.get(3)
    assert entry is not None
    prev, h, body = entry
    assert h == chain_hash(prev, body) and body == body_bytes(3)
    seqs = [s for s, *_ in store.iter_entries()]
    assert seqs == list(range(1, 26))
    assert [s for s, *_ in store.iter_entries(10, 12)] == [10, 11, 12]
    assert [s for s, *_ in store.iter_entries(24)] == [24, 25]
    assert list(store.iter_entries(26)) == []


def test_iter_entries_streams(store: LedgerStore) -> None:
    write_chain(store, 20)
    it = store.iter_entries()
    seq, prev, _h, _body = next(it)
    assert (seq, prev) == (1, GENESIS)
    it.close()  # abandoning the walk releases its read txn


def test_side_tables_commit_with_entries(store: LedgerStore) -> None:
    batch, h = make_batch(GENESIS, 1, 5)
    batch.snapshots.append((5, b"snap5"))
    batch.checkpoints.append((5, b"cp5"))
    batch.meta[b"state_hash"] = b"abc"
    store.commit_batch(batch)
    more, _ = make_batch(h, 6, 5)
    more.snapshots.append((10, b"snap10"))
    store.commit_batch(more)
    assert store.latest_snapshot() == (10, b"snap10")
    assert store.snapshot_at_or_before(9) == (5, b"snap5")
    assert store.snapshot_at_or_before(10) == (10, b"snap10")
    assert store.snapshot_at_or_before(4) is None
    assert store.checkpoints() == [(5, b"cp5")]
    assert store.get_meta(b"state_hash") == b"abc"


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    with LedgerStore.open(tmp_path / "l") as s:
        last = write_chain(s, 30)
    with LedgerStore.open(tmp_path / "l", readonly=True) as r:
        assert (r.last_seq(), r.last_hash()) == (30, last)
        with pytest.raises(StorageUnavailable):
            r.commit_batch(make_batch(last, 31, 1)[0])


def test_readonly_open_of_missing_dir_fails(tmp_path: Path) -> None:
    with pytest.raises(lmdb.Error):
        LedgerStore.open(tmp_path / "nope", readonly=True)


# -- append refused ------------------------------------------------------------


def _refused(store: LedgerStore, batch: Batch) -> None:
    before = (store.last_seq(), store.last_hash())
    with pytest.raises(LedgerCorrupt):
        store.commit_batch(batch)
    assert (store.last_seq(), store.last_hash()) == before


def test_append_refused_gap(store: LedgerStore) -> None:
    h = write_chain(store, 10)
    _refused(store, make_batch(h, 12, 3)[0])


def test_append_refused_backwards_and_duplicate(store: LedgerStore) -> None:
    h = write_chain(store, 10)
    _refused(store, make_batch(h, 10, 1)[0])
    _refused(store, make_batch(h, 5, 3)[0])
    batch, _ = make_batch(h, 11, 3)
    batch.entries.reverse()
    _refused(store, batch)


def test_append_refused_first_entry_not_one(store: LedgerStore) -> None:
    _refused(store, make_batch(GENESIS, 2, 3)[0])


def test_append_refused_inside_batch_gap_nothing_visible(store: LedgerStore) -> None:
    h = write_chain(store, 10)
    batch, _ = make_batch(h, 11, 5)
    del batch.entries[2]
    batch.meta[b"k"] = b"v"
    _refused(store, batch)
    assert store.get_meta(b"k") is None


def test_append_refused_bad_prev_link(store: LedgerStore) -> None:
    write_chain(store, 10)
    _refused(store, make_batch(b"\x01" * 32, 11, 1)[0])


# -- map full -----------------------------------------------------------------


def test_map_full_grows_and_loses_nothing(tmp_path: Path) -> None:
    with LedgerStore.open(tmp_path / "l", map_size=64 * KiB) as s:
        start = map_size(s.env)
        last = write_chain(s, 4000, per_batch=500, size=1000)  # ~4 MiB
        assert s.map_grows > 0 and map_size(s.env) > start
        assert (s.last_seq(), s.last_hash()) == (4000, last)
        report = verify_chain(s)
    assert report.ok and report.count == 4000


def test_map_cap_refuses_with_nothing_visible(tmp_path: Path) -> None:
    with LedgerStore.open(tmp_path / "l", map_size=64 * KiB, map_cap=256 * KiB) as s:
        h = write_chain(s, 10)
        big, _ = make_batch(h, 11, 400, size=2000)  # ~800 KiB > cap
        big.meta[b"k"] = b"v"
        with pytest.raises(StorageUnavailable):
            s.commit_batch(big)
        assert (s.last_seq(), s.last_hash(), s.get_meta(b"k")) == (10, h, None)
        write_chain(s, 20)  # small batches still fit
        assert verify_chain(s).ok


# -- fault injection ------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("exc", [OSError(5, "EIO"), lmdb.DiskError("injected")])
def test_fault_at_kth_commit(tmp_path: Path, k: int, exc: Exception) -> None:
    def hook(attempt: int) -> None:
        if attempt == k:
            raise exc

    with LedgerStore.open(tmp_path / "l") as s:
        s.fault_hook = hook
        h = GENESIS
        for i in range(6):
            batch, nh = make_batch(h, i * 10 + 1, 10)
            batch.meta[b"batch"] = str(i).encode()
            if s.commit_attempts + 1 == k:
                with pytest.raises(StorageUnavailable):
                    s.commit_batch(batch)
                # Nothing of the failed batch is visible.
                assert (s.last_seq(), s.last_hash()) == (i * 10, h)
                assert s.get(i * 10 + 1) is None
                assert s.get_meta(b"batch") == (str(i - 1).encode() if i else None)
            s.commit_batch(batch)  # the fault has cleared: the retry commits
            h = nh
        assert (s.last_seq(), s.last_hash()) == (60, h)
        assert verify_chain(s).ok


# -- properties -----------------------------------------------------------------


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(1, 15), min_size=1, max_size=12))
def test_random_batch_splits_give_same_chain(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int]
) -> None:
    n = sum(sizes)
    values: list[bytes] = []
    prev = GENESIS
    for seq in range(1, n + 1):
        prev, v = make_entry(prev, body_bytes(seq, 50))
        values.append(v)
    one = [(i + 1, v) for i, v in enumerate(values)]
    d = tmp_path_factory.mktemp("split")
    with LedgerStore.open(d / "a") as a, LedgerStore.open(d / "b") as b:
        a.commit_batch(Batch(entries=one))
        pos = 0
        for size in sizes:
            b.commit_batch(Batch(entries=one[pos : pos + size]))
            pos += size
        assert list(a.iter_entries()) == list(b.iter_entries())
        assert a.last_hash() == b.last_hash() == unpack_value(values[-1])[1]


def test_reader_adopts_map_grown_by_writer_process(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "l"
    with LedgerStore.open(path, map_size=64 * KiB) as w:
        write_chain(w, 5)
    # The reader maps only 64 KiB, so the writer's growth forces MapResizedError.
    with LedgerStore.open(path, readonly=True, map_size=64 * KiB) as reader:
        assert reader.last_seq() == 5
        script = textwrap.dedent(f"""
            from ledger.store import LedgerStore
            from tests.ledger.conftest import write_chain
            with LedgerStore.open({str(path)!r}, map_size=64 * 1024) as w:
                write_chain(w, 3000, per_batch=500, size=1000)
                assert w.map_grows > 0
        """)
        subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[2])
        assert reader.last_seq() == 3000  # begin() hit MapResizedError and adopted
        assert map_size(reader.env) > 64 * KiB
        assert verify_chain(reader).ok
