"""``pubex ledger backup DIR OUT``: a consistent copy of a live ledger.

LMDB copies from inside one read transaction, so the copy is the ledger as of
one commit even while the server keeps writing; the copy is then verified
(hash chain) before it is reported good.
"""

from __future__ import annotations

from pathlib import Path

import lmdb

from ledger.verify import ChainReport, verify_chain


def backup(ledger_dir: str | Path, out_dir: str | Path) -> ChainReport:
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(ledger_dir), readonly=True, lock=True, max_dbs=16, subdir=True)
    try:
        env.copy(str(out), compact=True)
    finally:
        env.close()
    for name in ("server.pub",):
        src = Path(ledger_dir).parent / name
        if src.exists():
            (out / name).write_bytes(src.read_bytes())
    return verify_chain(out)
