"""The terminal's files: the key pair (``pubex keygen``), the state file next to it
(last ``client_seq``, unacknowledged bids) and the JSON-lines receipts file."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

# ------------------------------------------------------------------ key files


class KeyFileError(Exception):
    pass


def write_keypair(path: Path, key_id: str = "") -> tuple[str, str]:
    """Create PATH (private: hex seed + key id, mode 0600) and PATH.pub."""
    pub_path = Path(f"{path}.pub")
    for target in (path, pub_path):
        if target.exists():
            raise KeyFileError(f"{target} exists; refusing to overwrite a key")
    key_id = key_id or f"key-{secrets.token_hex(6)}"
    key = SigningKey.generate()
    public_hex = key.verify_key.encode().hex()
    secret = {"key_id": key_id, "seed_hex": key.encode().hex()}
    # O_EXCL + 0600 at creation: the seed is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(secret, f)
        f.write("\n")
    pub_path.write_text(json.dumps({"key_id": key_id, "public_key_hex": public_hex}) + "\n")
    return key_id, public_hex


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise KeyFileError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise KeyFileError(f"{path}: not a key file")
    return data


def load_key(path: Path) -> tuple[SigningKey, str]:
    data = _read_json(path)
    try:
        return SigningKey(bytes.fromhex(data["seed_hex"])), str(data["key_id"])
    except (KeyError, ValueError, TypeError) as e:
        raise KeyFileError(f"{path}: not a private key file ({e})") from None


def load_public(path: Path) -> tuple[str, str]:
    """(key id, public key hex) from a .pub file."""
    data = _read_json(path)
    try:
        return str(data["key_id"]), str(data["public_key_hex"])
    except KeyError as e:
        raise KeyFileError(f"{path}: not a public key file (no {e})") from None


# ---------------------------------------------------------------- local files


class SeqStore:
    """The last client_seq used and the unacknowledged bids, in a JSON file
    replaced atomically, so a restart neither reuses a seq nor forgets a bid."""

    def __init__(self, path: Path, now_us: Callable[[], int] = lambda: time.time_ns() // 1000):
        self.path = path
        self.now_us = now_us
        self.last = 0
        self.pending: dict[int, dict[str, Any]] = {}
        if path.exists():
            data = json.loads(path.read_text() or "{}")
            self.last = int(data.get("last_client_seq", 0))
            for row in data.get("pending", []):
                self.pending[int(row["client_seq"])] = row

    def allocate(self) -> int:
        # The wall clock floor keeps seqs increasing even if this file was lost.
        self.last = max(self.last + 1, self.now_us())
        return self.last

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        rows = [self.pending[k] for k in sorted(self.pending)]
        tmp.write_text(json.dumps({"last_client_seq": self.last, "pending": rows}))
        os.replace(tmp, self.path)


class ReceiptLog:
    """Append-only JSON lines: one per acknowledged bid."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def lots(self) -> set[str]:
        """Lots with an accepted bid of ours (own standing survives restarts)."""
        if not self.path.exists():
            return set()
        out = set()
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                out.add(json.loads(line)["lot"])
        return out


def default_paths(key_path: Path) -> tuple[Path, Path]:
    """(state file, receipts file) next to the key."""
    return Path(f"{key_path}.state.json"), Path(f"{key_path}.receipts.jsonl")
