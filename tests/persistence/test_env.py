"""open_env, the settings guard and map growth on real LMDB environments."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from persistence.env import (
    StorageUnavailable,
    UnsafeSettings,
    check_settings,
    grow_map,
    map_size,
    open_env,
)

KiB = 1024


def test_open_env_is_durable(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e")
    flags = env.flags()
    assert (flags["sync"], flags["metasync"], flags["writemap"]) == (True, True, False)
    check_settings(env)
    env.close()


def test_open_env_readonly(tmp_path: Path) -> None:
    open_env(tmp_path / "e").close()
    env = open_env(tmp_path / "e", readonly=True)
    assert env.flags()["readonly"]
    check_settings(env)
    env.close()


@pytest.mark.parametrize("unsafe", [{"sync": False}, {"metasync": False}, {"writemap": True}])
def test_settings_guard_refuses(tmp_path: Path, unsafe: dict[str, bool]) -> None:
    env = lmdb.open(str(tmp_path / "e"), **unsafe)
    try:
        with pytest.raises(UnsafeSettings):
            check_settings(env)
    finally:
        env.close()


def test_grow_map_doubles_up_to_cap(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e", map_size=64 * KiB)
    start = map_size(env)
    assert grow_map(env, cap=start * 3) == start * 2
    assert grow_map(env, cap=start * 3) == start * 3  # clamped at the cap
    with pytest.raises(StorageUnavailable):
        grow_map(env, cap=start * 3)
    assert map_size(env) == start * 3
    env.close()


def test_reopen_with_small_map_still_covers_the_data(tmp_path: Path) -> None:
    env = open_env(tmp_path / "e", map_size=64 * KiB)
    for i in range(4):
        grow_map(env)
        with env.begin(write=True) as txn:
            txn.put(i.to_bytes(4, "big"), b"v" * 100 * KiB)
    env.close()
    # LMDB never maps less than the used pages, whatever size is asked for.
    env = open_env(tmp_path / "e", map_size=64 * KiB)
    assert map_size(env) > 64 * KiB
    with env.begin() as txn:
        assert txn.get((3).to_bytes(4, "big")) == b"v" * 100 * KiB
    env.close()
