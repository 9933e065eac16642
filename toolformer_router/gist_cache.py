"""The per-tool gist cache: in-process (on the model's device) and on disk (SQLite, WAL mode).

An entry holds one tool's gists (K, d) and every cross-attention layer's keys/values for them
(L, 2, kv_heads, K, head_dim), keyed by (sha256 of the tool's canonical schema JSON, fingerprint of the
weights that produced it): a changed model never sees another model's entries. On disk each entry is a
safetensors blob with its sha256; SQLite gives atomic commits and safe concurrent writers, so a process
killed mid-write leaves the store usable. An entry whose checksum, shape, dtype or values are wrong is
logged, deleted and reported as a miss, so the caller recomputes it.

The disk tier only ever speeds routing up: a damaged file is moved aside (`<name>.corrupt-<time>`) and a new
one created, a table of an older layout is recreated, a read-only file is read but not written, and a lock
held by another process is waited for at most `lock_timeout_s` before the write is skipped (entries stay in
memory) or the read counts as misses, and then not waited for again for `lock_retry_s`. Each such fault is logged
as a warning, never raised.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import cachetools
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .schema import MAX_CACHED_TOOLS

if TYPE_CHECKING:
    from .modeling import ToolRouterModel

logger = logging.getLogger(__name__)

_COLUMNS = ("schema_hash", "fingerprint", "payload", "checksum", "created", "used")
_SCHEMA = """
CREATE TABLE gist_entries (
    schema_hash TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    payload BLOB NOT NULL,
    checksum TEXT NOT NULL,
    created REAL NOT NULL,
    used REAL NOT NULL,
    PRIMARY KEY (schema_hash, fingerprint)
) WITHOUT ROWID
"""
_EVICT = """
DELETE FROM gist_entries WHERE (schema_hash, fingerprint) IN (
    SELECT schema_hash, fingerprint FROM (
        SELECT schema_hash, fingerprint, SUM(LENGTH(payload)) OVER (
            ORDER BY used DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS newer_bytes
        FROM gist_entries)
    WHERE newer_bytes > ?)
"""
_WARN_EVERY_S = 60.0
"""A recurring disk-tier fault (a lock, a read-only file) is logged at most this often."""

_T = TypeVar("_T")


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


@dataclass(frozen=True)
class EntryLayout:
    """The shapes and dtype of every entry one model makes: gists (K, d), memory (L, 2, kv_heads, K, head_dim)."""

    gists: tuple[int, ...]
    memory: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def of(cls, model: ToolRouterModel) -> EntryLayout:
        """The layout of `model.encode_tools` and `model.project_memory` for one tool."""
        num_gists, hidden = model.gist_pooling.queries.shape
        block = next(iter(model.cross_attention.values()))
        memory = (len(model.cross_attention), 2, block.num_kv_heads, num_gists, block.head_dim)
        return cls((num_gists, hidden), memory, model.gist_pooling.queries.dtype)

    def mismatch(self, entry: ToolMemory) -> str | None:
        """How `entry`'s shapes or dtype differ from this layout, or None."""
        found = EntryLayout(tuple(entry.gists.shape), tuple(entry.memory.shape), entry.gists.dtype)
        if found != self or entry.memory.dtype != self.dtype:
            return f"layout {found} with {entry.memory.dtype} memory; expected {self}"
        return None


def _decode(payload: bytes, checksum: str, layout: EntryLayout | None) -> tuple[ToolMemory | None, str | None]:
    """A stored entry and None, or None and what is wrong with it (`layout` None: shapes and dtype unchecked)."""
    if hashlib.sha256(payload).hexdigest() != checksum:
        return None, "checksum mismatch"
    try:
        entry = ToolMemory.deserialize(payload)
    except Exception as error:  # safetensors raises several types on damaged bytes
        return None, f"unreadable payload ({error})"
    mismatch = layout.mismatch(entry) if layout is not None else None
    if mismatch is not None:
        return None, mismatch
    if not (torch.isfinite(entry.gists).all() and torch.isfinite(entry.memory).all()):
        return None, "non-finite values"
    return entry, None


def _fault(error: Exception) -> str:
    """The kind of a disk-tier error, from SQLite's own message texts: damaged, read-only, locked, layout or
    unusable (anything else: a missing folder, a full disk, an I/O error)."""
    text = str(error)
    if isinstance(error, sqlite3.DatabaseError):
        if "malformed" in text or "not a database" in text:
            return "damaged"
        if "readonly" in text:
            return "read-only"
        if "locked" in text:
            return "locked"
        if "no such table" in text or "no such column" in text:
            return "layout"
    return "unusable"


_CONSEQUENCE = {
    "read-only": "new entries are kept in memory only",
    "locked": "another process holds its lock; skipped, and tried again after lock_retry_s (entries stay in memory, "
              "misses are recomputed)",
    "layout": "its table changed under this process; reopening it",
    "unusable": "using memory only for now",
}


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """A write transaction; BEGIN IMMEDIATE waits for another writer up to the busy timeout, then fails."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise


def _columns(db: sqlite3.Connection) -> tuple[str, ...]:
    return tuple(row[1] for row in db.execute("PRAGMA table_info(gist_entries)"))


def _ensure_layout(db: sqlite3.Connection, path: Path) -> None:
    """Create the table, or recreate it (its entries are dropped, with a warning) where it has another layout."""
    if _columns(db) == _COLUMNS:
        return
    with _transaction(db):
        found = _columns(db)  # again under the write lock: another process may have just created it
        if found == _COLUMNS:
            return
        if found:
            logger.warning("gist cache %s has an older table layout %s: recreating it empty", path, found)
        db.execute("DROP TABLE IF EXISTS gist_entries")
        db.execute(_SCHEMA)


def open_database(path: Path, timeout_s: float, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the disk tier with the current table layout: in WAL mode where the file can be written,
    else read-only (immutable where the folder is read-only and holds no -shm file, which a WAL reader needs).
    Processes that open a new file at once can meet in a lock upgrade, where SQLite answers "database is
    locked" at once instead of waiting (it would deadlock): the setup is retried until `timeout_s`."""
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    folder_writable = os.access(path.parent, os.W_OK)
    writable = not read_only and folder_writable and (not path.exists() or os.access(path, os.W_OK))
    shared_memory = folder_writable or Path(f"{path}-shm").exists()  # what a reader of a WAL file needs
    mode = "rwc" if writable else "ro" if shared_memory else "ro&immutable=1"
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True, timeout=timeout_s,
                         check_same_thread=False, isolation_level=None)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if writable:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            _ensure_layout(db, path)
            return db
        except sqlite3.OperationalError as error:
            if _fault(error) != "locked" or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.02)
        except BaseException:
            db.close()
            raise


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


class GistCache:
    """Two-tier cache of `ToolMemory` entries; thread-safe, shareable between routers of the same model.

    Args:
        path: SQLite file for the disk tier (created if absent), or None for memory only.
        max_memory_entries: least recently used entries beyond this leave the in-process tier (10,000 entries
            of the default checkpoint in bfloat16 hold about 0.5 GB).
        max_disk_bytes: least recently written or read entries beyond this many payload bytes leave the disk
            tier (1 GiB: about 20,000 tools of the default checkpoint).
        lock_timeout_s: how long a disk read or write waits for another process's lock before it is skipped.
        lock_retry_s: after such a wait, how long the disk tier (a read waited) or its writes (a write waited) are
            skipped without waiting: a lock held for long costs one wait, not one per route.
        read_only: open the file read-only (as a file or folder without write permission is): its entries
            are read, new ones are kept in memory only.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        max_memory_entries: int = MAX_CACHED_TOOLS,
        max_disk_bytes: int = 1 << 30,
        lock_timeout_s: float = 0.5,
        lock_retry_s: float = 10.0,
        read_only: bool = False,
    ):
        self.path = Path(path) if path is not None else None
        self.max_memory_entries = max_memory_entries
        self.max_disk_bytes = max_disk_bytes
        self.lock_timeout_s = lock_timeout_s
        self.lock_retry_s = lock_retry_s
        self.read_only = read_only
        self._memory: cachetools.LRUCache[tuple[str, str], ToolMemory] = cachetools.LRUCache(max_memory_entries)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._db_file: tuple[int, int] | None = None  # the file `_db` has open, to notice it being replaced
        self._disk = self.path is not None  # False once closed, or when a damaged file cannot be moved aside
        self._writable = True  # False after a write failed on a read-only file
        self._warned: dict[str, float] = {}
        self._locked_until = {"read": 0.0, "write": 0.0}  # when a lock wait timed out: skipped until then
        self.hits = self.misses = self.disk_hits = self.corrupt = 0
        with self._lock:
            self._on_disk(lambda db: None)  # open now: a damaged or outdated file is dealt with at once

    def __len__(self) -> int:
        return len(self._memory)

    def get_many(
        self,
        schema_hashes: Iterable[str],
        fingerprint: str,
        device: torch.device | str,
        layout: EntryLayout | None = None,
    ) -> dict[str, ToolMemory]:
        """The entries found (memory first, then disk) for these tools under this fingerprint. A stored entry
        that is damaged, non-finite or not of `layout` (the caller's shapes and dtype; None: unchecked) is
        deleted and counts as a miss, as does every entry when the disk cannot be read."""
        found: dict[str, ToolMemory] = {}
        with self._lock:
            wanted = list(dict.fromkeys(schema_hashes))
            for schema_hash in wanted:
                entry = self._memory.get((schema_hash, fingerprint))
                if entry is not None:
                    found[schema_hash] = entry
            missing = [h for h in wanted if h not in found]
            if missing:
                rows = self._on_disk(lambda db: _select(db, missing, fingerprint)) or []
                read, bad = [], []
                for schema_hash, payload, checksum in rows:
                    stored, problem = _decode(payload, checksum, layout)
                    if stored is None:
                        self.corrupt += 1
                        logger.warning("gist cache entry %s… is corrupt (%s): recomputing it", schema_hash[:12],
                                       problem)
                        bad.append(schema_hash)
                        continue
                    found[schema_hash] = stored.to(device)
                    self._memory[(schema_hash, fingerprint)] = found[schema_hash]
                    read.append(schema_hash)
                self.disk_hits += len(read)
                if read or bad:
                    self._on_disk(lambda db: _after_read(db, fingerprint, read, bad), write=True)
            self.hits += len(found)
            self.misses += len(wanted) - len(found)
        return found

    def put_many(self, entries: dict[str, ToolMemory], fingerprint: str) -> None:
        """Store entries in memory and, in one transaction, on disk, where the least recently used beyond
        `max_disk_bytes` leave; a disk fault leaves them in memory only."""
        with self._lock:
            for schema_hash, entry in entries.items():
                self._memory[(schema_hash, fingerprint)] = entry
            if entries:
                self._on_disk(lambda db: _store(db, entries, fingerprint, self.max_disk_bytes), write=True)

    def clear_memory(self) -> None:
        """Drop the in-process tier (the disk tier stays)."""
        with self._lock:
            self._memory.clear()

    def disk_entries(self) -> int:
        with self._lock:
            return self._on_disk(lambda db: db.execute("SELECT COUNT(*) FROM gist_entries").fetchone()[0]) or 0

    def close(self) -> None:
        with self._lock:
            self._disk = False
            self._disconnect()

    def _on_disk(self, action: Callable[[sqlite3.Connection], _T], *, write: bool = False) -> _T | None:
        """`action`'s result on the disk tier, or None where there is none or it fails: the fault is logged and
        this call goes on with the in-process tier. A damaged file is moved aside, and a file replaced under
        this process reopened, and the action tried once more."""
        if not self._disk or (write and not self._writable):
            return None
        now = time.monotonic()
        if now < self._locked_until["read"] or (write and now < self._locked_until["write"]):
            return None
        for retry in (True, False):
            opening = self._db is None
            try:
                if opening:
                    self._db = open_database(self.path, self.lock_timeout_s, read_only=self.read_only)
                    self._db_file = _file_identity(self.path)
                return action(self._db)
            except (sqlite3.DatabaseError, OSError) as error:
                if not (self._recover(error, write=write and not opening) and retry):
                    return None
        return None

    def _recover(self, error: Exception, *, write: bool) -> bool:
        """Deal with a disk-tier fault of a read or a `write`; True when the action is worth trying again."""
        if self._db is not None and _file_identity(self.path) != self._db_file:  # another process moved it aside
            self._disconnect()
            return True
        fault = _fault(error)
        if fault == "damaged":
            self._quarantine(error)
            return self._disk
        if fault == "read-only":
            self._writable = False
        elif fault == "layout":
            self._disconnect()
        now = time.monotonic()
        if fault == "locked":
            self._locked_until["write" if write else "read"] = now + self.lock_retry_s
        if now - self._warned.get(fault, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self._warned[fault] = now
            logger.warning("gist cache %s: %s (%s): %s", self.path, fault, error, _CONSEQUENCE[fault])
        return fault == "layout"

    def _quarantine(self, error: Exception) -> None:
        """Move the damaged file and its -wal and -shm aside as `<name>.corrupt-<time>`; the next use creates a
        new one. Where they cannot be moved (or the cache is read-only), the disk tier is off for this process."""
        self._disconnect()
        aside = f"{self.path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
        unmovable = "the cache is read-only" if self.read_only else None
        if unmovable is None:
            try:
                for suffix in ("", "-wal", "-shm"):
                    with suppress(FileNotFoundError):
                        os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            except OSError as move_error:
                unmovable = str(move_error)
        if unmovable is not None:
            self._disk = False
            logger.warning("gist cache %s is damaged (%s) and cannot be moved aside (%s): using memory only",
                           self.path, error, unmovable)
        else:
            logger.warning("gist cache %s is damaged (%s): moved aside to %s, starting a new one", self.path, error,
                           aside)

    def _disconnect(self) -> None:
        if self._db is not None:
            with suppress(sqlite3.Error):
                self._db.close()
            self._db = None


def _select(db: sqlite3.Connection, schema_hashes: list[str], fingerprint: str) -> list[tuple[str, bytes, str]]:
    rows = []
    for start in range(0, len(schema_hashes), 500):  # SQLite's bound-parameter limit
        chunk = schema_hashes[start : start + 500]
        rows += db.execute(
            f"SELECT schema_hash, payload, checksum FROM gist_entries WHERE fingerprint = ? "
            f"AND schema_hash IN ({','.join('?' * len(chunk))})",
            [fingerprint, *chunk],
        ).fetchall()
    return rows


def _after_read(db: sqlite3.Connection, fingerprint: str, read: list[str], bad: list[str]) -> None:
    """Mark entries read from disk as used now and delete the bad ones."""
    now = time.time()
    with _transaction(db):
        db.executemany("UPDATE gist_entries SET used = ? WHERE schema_hash = ? AND fingerprint = ?",
                       [(now, h, fingerprint) for h in read])
        db.executemany("DELETE FROM gist_entries WHERE schema_hash = ? AND fingerprint = ?",
                       [(h, fingerprint) for h in bad])


def _store(db: sqlite3.Connection, entries: dict[str, ToolMemory], fingerprint: str, max_bytes: int) -> None:
    """Write entries and evict the least recently used beyond `max_bytes`, in one transaction."""
    now = time.time()
    rows = []
    for schema_hash, entry in entries.items():
        payload = entry.serialize()
        rows.append((schema_hash, fingerprint, payload, hashlib.sha256(payload).hexdigest(), now, now))
    with _transaction(db):
        db.executemany(f"INSERT OR REPLACE INTO gist_entries ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.execute(_EVICT, (max_bytes,))
