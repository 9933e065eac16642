"""The per-tool gist cache: in-process (on the model's device) and on disk (SQLite, WAL mode).

An entry holds one tool's gists (K, d) and every cross-attention layer's keys/values for them
(L, 2, kv_heads, K, head_dim), keyed by (sha256 of the tool's canonical schema JSON, fingerprint of the
weights that produced it): a changed model never sees another model's entries. On disk each entry is a
safetensors blob with its sha256; SQLite gives atomic commits and safe concurrent writers, so a process
killed mid-write leaves the store usable. An entry whose checksum or layout is wrong is logged, deleted
and reported as a miss, so the caller recomputes it.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cachetools
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS gist_entries (
    schema_hash TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    payload BLOB NOT NULL,
    checksum TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (schema_hash, fingerprint)
) WITHOUT ROWID
"""


@dataclass(frozen=True)
class ToolMemory:
    """One tool's cached memory: gists (K, d) and cross-attention keys/values (L, 2, kv_heads, K, head_dim)."""

    gists: torch.Tensor
    memory: torch.Tensor

    def to(self, device: torch.device | str) -> ToolMemory:
        return ToolMemory(self.gists.to(device), self.memory.to(device))

    @property
    def nbytes(self) -> int:
        return self.gists.numel() * self.gists.element_size() + self.memory.numel() * self.memory.element_size()

    def serialize(self) -> bytes:
        return save_tensors({"gists": self.gists.detach().cpu().contiguous(), "memory": self.memory.detach().cpu().contiguous()})

    @classmethod
    def deserialize(cls, payload: bytes) -> ToolMemory:
        tensors = load_tensors(payload)
        return cls(tensors["gists"], tensors["memory"])


def open_database(path: Path, timeout_s: float) -> sqlite3.Connection:
    """A connection to the disk tier in WAL mode with the table in place. Processes that open a new file at once
    can meet in a lock upgrade, where SQLite answers "database is locked" at once instead of waiting (it would
    deadlock): the setup is retried until `timeout_s`."""
    db = sqlite3.connect(path, timeout=timeout_s, check_same_thread=False, isolation_level=None)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            return db
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.02)


class GistCache:
    """Two-tier cache of `ToolMemory` entries; thread-safe, shareable between routers of the same model.

    Args:
        path: SQLite file for the disk tier (created if absent), or None for memory only.
        max_memory_entries: least recently used entries beyond this leave the in-process tier.
    """

    def __init__(self, path: str | Path | None = None, *, max_memory_entries: int = 100_000):
        self.path = Path(path) if path is not None else None
        self.max_memory_entries = max_memory_entries
        self._memory: cachetools.LRUCache[tuple[str, str], ToolMemory] = cachetools.LRUCache(max_memory_entries)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self.hits = self.misses = self.disk_hits = self.corrupt = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = open_database(self.path, timeout_s=60.0)

    def __len__(self) -> int:
        return len(self._memory)

    def get_many(
        self, schema_hashes: Iterable[str], fingerprint: str, device: torch.device | str
    ) -> dict[str, ToolMemory]:
        """The entries found (memory first, then disk) for these tools under this fingerprint."""
        found: dict[str, ToolMemory] = {}
        with self._lock:
            wanted = list(dict.fromkeys(schema_hashes))
            for schema_hash in wanted:
                entry = self._memory.get((schema_hash, fingerprint))
                if entry is not None:
                    found[schema_hash] = entry
            missing = [h for h in wanted if h not in found]
            if missing and self._db is not None:
                for schema_hash, entry in self._read_disk(missing, fingerprint).items():
                    entry = entry.to(device)
                    self._remember((schema_hash, fingerprint), entry)
                    found[schema_hash] = entry
                    self.disk_hits += 1
            self.hits += len(found)
            self.misses += len(wanted) - len(found)
        return found

    def put_many(self, entries: dict[str, ToolMemory], fingerprint: str) -> None:
        """Store entries in memory and, in one transaction, on disk."""
        with self._lock:
            for schema_hash, entry in entries.items():
                self._remember((schema_hash, fingerprint), entry)
            if self._db is None or not entries:
                return
            rows = []
            for schema_hash, entry in entries.items():
                payload = entry.serialize()
                rows.append((schema_hash, fingerprint, payload, hashlib.sha256(payload).hexdigest(), time.time()))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO gist_entries VALUES (?, ?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def clear_memory(self) -> None:
        """Drop the in-process tier (the disk tier stays)."""
        with self._lock:
            self._memory.clear()

    def disk_entries(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM gist_entries").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _remember(self, key: tuple[str, str], entry: ToolMemory) -> None:
        self._memory[key] = entry

    def _read_disk(self, schema_hashes: list[str], fingerprint: str) -> dict[str, ToolMemory]:
        found: dict[str, ToolMemory] = {}
        for start in range(0, len(schema_hashes), 500):  # SQLite's bound-parameter limit
            chunk = schema_hashes[start : start + 500]
            rows = self._db.execute(
                f"SELECT schema_hash, payload, checksum FROM gist_entries WHERE fingerprint = ? "
                f"AND schema_hash IN ({','.join('?' * len(chunk))})",
                [fingerprint, *chunk],
            ).fetchall()
            for schema_hash, payload, checksum in rows:
                entry = self._verified(schema_hash, fingerprint, payload, checksum)
                if entry is not None:
                    found[schema_hash] = entry
        return found

    def _verified(self, schema_hash: str, fingerprint: str, payload: bytes, checksum: str) -> ToolMemory | None:
        problem = None
        if hashlib.sha256(payload).hexdigest() != checksum:
            problem = "checksum mismatch"
        else:
            try:
                entry = ToolMemory.deserialize(payload)
            except Exception as error:  # safetensors raises several types on damaged bytes
                problem = f"unreadable payload ({error})"
        if problem is None:
            return entry
        self.corrupt += 1
        logger.warning("gist cache entry %s… is corrupt (%s): recomputing it", schema_hash[:12], problem)
        self._db.execute(
            "DELETE FROM gist_entries WHERE schema_hash = ? AND fingerprint = ?", (schema_hash, fingerprint)
        )
        return None
