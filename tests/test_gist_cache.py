"""The gist cache: persistence, fingerprints, corruption, concurrent writers, kills, hot-swaps."""

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from conftest import EMAIL, STOCK, TINY_ROUTER_CONFIG, WEATHER, tiny_backbone
from toolformer_router import GistCache, RouterConfig, ToolRouter, gist_cache
from toolformer_router.gist_cache import ToolMemory


def _entry(seed: int) -> ToolMemory:
    generator = torch.Generator().manual_seed(seed)
    return ToolMemory(torch.randn(8, 64, generator=generator), torch.randn(2, 2, 2, 8, 16, generator=generator))


def test_disk_tier_persists_across_instances_and_is_keyed_by_fingerprint(tmp_path):
    path = tmp_path / "gists.sqlite"
    first = GistCache(path)
    first.put_many({"a": _entry(0), "b": _entry(1)}, "model-1")
    first.close()
    second = GistCache(path)
    found = second.get_many(["a", "b", "c"], "model-1", "cpu")
    assert set(found) == {"a", "b"}
    assert torch.equal(found["a"].gists, _entry(0).gists) and torch.equal(found["b"].memory, _entry(1).memory)
    assert second.get_many(["a"], "model-2", "cpu") == {}  # another model's entries are never served
    assert (second.disk_hits, second.misses) == (2, 2)


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "bad_checksum"])
def test_corrupt_entry_is_detected_logged_and_dropped(tmp_path, caplog, damage):
    path = tmp_path / "gists.sqlite"
    GistCache(path).put_many({"a": _entry(0), "b": _entry(1)}, "fp")
    with sqlite3.connect(path) as db:
        payload = db.execute("SELECT payload FROM gist_entries WHERE schema_hash='a'").fetchone()[0]
        if damage == "flip_byte":
            payload = payload[:-5] + bytes([payload[-5] ^ 0xFF]) + payload[-4:]
        elif damage == "truncate":
            payload = payload[: len(payload) // 2]
        if damage == "bad_checksum":
            db.execute("UPDATE gist_entries SET checksum='0' WHERE schema_hash='a'")
        else:
            db.execute("UPDATE gist_entries SET payload=? WHERE schema_hash='a'", (payload,))
    cache = GistCache(path)
    with caplog.at_level(logging.WARNING, logger="toolformer_router.gist_cache"):
        found = cache.get_many(["a", "b"], "fp", "cpu")
    assert set(found) == {"b"} and cache.corrupt == 1
    assert "corrupt" in caplog.text
    assert cache.disk_entries() == 1  # the bad entry is gone, so it will be recomputed and rewritten


def test_corrupt_entry_is_recomputed_by_the_router(tmp_path, make_router):
    path = tmp_path / "gists.sqlite"
    router = make_router(gist_cache=GistCache(path))
    (expected,), _, _ = router.tool_memories(router.prepare_tools([WEATHER]))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE gist_entries SET checksum='broken'")
    fresh = make_router(gist_cache=GistCache(path))
    (recomputed,), hits, misses = fresh.tool_memories(fresh.prepare_tools([WEATHER]))
    assert (hits, misses) == (0, 1)
    assert torch.equal(recomputed.gists, expected.gists)
    (again,), hits, _ = make_router(gist_cache=GistCache(path)).tool_memories(fresh.prepare_tools([WEATHER]))
    assert hits == 1 and torch.equal(again.memory, expected.memory)


_WRITER = textwrap.dedent(
    """
    import sys, torch
    from toolformer_router.gist_cache import GistCache, ToolMemory
    cache = GistCache(sys.argv[1])
    prefix, count = sys.argv[2], int(sys.argv[3])
    for i in range(count):
        g = torch.Generator().manual_seed(i)
        entry = ToolMemory(torch.randn(8, 64, generator=g), torch.randn(2, 2, 2, 8, 16, generator=g))
        cache.put_many({f"{prefix}-{i}": entry, f"shared-{i}": entry}, "fp")
        print(i, flush=True)
    """
)


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "gists.sqlite"
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, "60"], stdout=subprocess.DEVNULL)
               for name in ("p1", "p2")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    cache = GistCache(path)
    keys = [f"{p}-{i}" for p in ("p1", "p2") for i in range(60)] + [f"shared-{i}" for i in range(60)]
    found = cache.get_many(keys, "fp", "cpu")
    assert len(found) == 180 and cache.corrupt == 0


def test_process_killed_mid_write_leaves_the_cache_usable(tmp_path):
    path = tmp_path / "gists.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), "k", "100000"], stdout=subprocess.PIPE)
    for _ in range(20):  # let it commit a few entries, then kill it while it keeps writing
        writer.stdout.readline()
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        written = [row[0] for row in db.execute("SELECT schema_hash FROM gist_entries")]
    cache = GistCache(path)
    found = cache.get_many(written, "fp", "cpu")
    assert len(found) == len(written) >= 20 and cache.corrupt == 0
    cache.put_many({"after": _entry(3)}, "fp")  # still writable
    assert "after" in GistCache(path).get_many(["after"], "fp", "cpu")


def test_hot_swap_encodes_only_new_tools_and_keeps_the_others_bit_identical(make_router):
    router = make_router()
    calls: list[int] = []
    original = router.model.encode_tools

    def counting(input_ids, attention_mask):
        calls.append(len(input_ids))
        return original(input_ids, attention_mask)

    router.model.encode_tools = counting
    router.add_tools([WEATHER, EMAIL])
    assert calls == [2]
    before, _, _ = router.tool_memories(router.tools)
    router.add_tools([STOCK])  # add
    router.remove_tools(["send_email"])  # remove
    replaced = {**EMAIL, "description": "Send an e-mail message."}
    router.add_tools([replaced])  # re-add, changed: encodes just this one
    reordered = list(reversed(router.tools))
    router.route("hi", tools=reordered, tool_choice="none", max_new_tokens=2)  # reorder: nothing to encode
    assert calls == [2, 1, 1]
    after, hits, misses = router.tool_memories([t for t in router.tools if t.name == "get_weather"])
    assert (hits, misses) == (1, 0)
    assert torch.equal(after[0].gists, before[0].gists) and torch.equal(after[0].memory, before[0].memory)


def _warnings(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


@pytest.mark.parametrize("damage", ["bad_header", "truncated", "garbage"])
def test_damaged_file_is_moved_aside_and_routing_recomputes(tmp_path, caplog, make_router, damage):
    path = tmp_path / "gists.sqlite"
    cache = GistCache(path)
    cache.put_many({f"t{i}": _entry(i) for i in range(40)}, "fp")  # several pages: interior and leaf b-tree pages
    cache.close()
    data = bytearray(path.read_bytes())
    if damage == "bad_header":
        data[:16] = b"not a database!!"
    elif damage == "truncated":
        del data[len(data) // 3 :]
    else:  # garbage over every page after the first
        data[4096:] = torch.randint(0, 256, (len(data) - 4096,), generator=torch.Generator().manual_seed(0),
                                    dtype=torch.uint8).numpy().tobytes()
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="toolformer_router.gist_cache"):
        router = make_router(gist_cache=GistCache(path))
        router.add_tools([WEATHER])  # encoded, as nothing could be read
        router.route("hi", max_new_tokens=2)
        router.remove_tools(["get_weather"])
    assert _warnings(caplog, "damaged") and list(tmp_path.glob("gists.sqlite.corrupt-*"))
    assert GistCache(path).disk_entries() == 1  # a new file, which holds the recomputed entry


def test_a_file_another_process_moved_aside_is_left_alone_and_its_new_file_used(tmp_path, caplog):
    path = tmp_path / "gists.sqlite"
    writer = GistCache(path)
    writer.put_many({f"t{i}": _entry(i) for i in range(40)}, "fp")
    writer.close()
    cache = GistCache(path)  # open on the file that another process then finds damaged, moves aside and recreates
    aside = tmp_path / "gists.sqlite.corrupt-other"
    for suffix in ("", "-wal", "-shm"):  # as `GistCache` moves a damaged file aside
        os.replace(f"{path}{suffix}", f"{aside}{suffix}")
    with aside.open("r+b") as file:
        file.seek(4096)
        file.write(b"garbage!" * 4096)
    GistCache(path).put_many({"new": _entry(99)}, "fp")
    with caplog.at_level(logging.WARNING, logger="toolformer_router.gist_cache"):
        found = cache.get_many(["t5", "new"], "fp", "cpu")  # the moved file is damaged: reopen, don't move again
    assert set(found) == {"new"} and not caplog.records
    moved = sorted(p.name for p in tmp_path.glob("*.corrupt-*"))
    assert moved == [aside.name, f"{aside.name}-shm", f"{aside.name}-wal"]


@pytest.mark.parametrize("why", ["folder refuses", "read_only"])
def test_damaged_file_that_cannot_be_moved_aside_leaves_memory_only(tmp_path, caplog, monkeypatch, why):
    path = tmp_path / "gists.sqlite"
    path.write_bytes(b"garbage" * 1000)

    def refuse(source, target):
        raise PermissionError(13, "Permission denied", source)

    if why == "folder refuses":
        monkeypatch.setattr(os, "replace", refuse)
    with caplog.at_level(logging.WARNING, logger="toolformer_router.gist_cache"):
        cache = GistCache(path, read_only=why == "read_only")
        cache.put_many({"a": _entry(0)}, "fp")
    assert set(cache.get_many(["a"], "fp", "cpu")) == {"a"} and cache.disk_entries() == 0
    assert len(_warnings(caplog, "cannot be moved aside")) == 1
    assert path.read_bytes() == b"garbage" * 1000 and not list(tmp_path.glob("*.corrupt-*"))


@pytest.mark.parametrize("how", ["flag", "chmod"])
def test_read_only_file_is_read_and_new_entries_stay_in_memory(tmp_path, caplog, monkeypatch, make_router, how):
    monkeypatch.setattr(gist_cache, "_WARN_EVERY_S", 0.0)  # once, not merely rate-limited
    path = tmp_path / "cache" / "gists.sqlite"
    GistCache(path).put_many({"a": _entry(0)}, "fp")
    if how == "chmod":
        if os.geteuid() == 0:
            pytest.skip("root writes through file modes; the 'flag' case opens the file read-only instead")
        path.chmod(0o444)
        path.parent.chmod(0o555)
    try:
        with caplog.at_level(logging.WARNING, logger="toolformer_router.gist_cache"):
            cache = GistCache(path, read_only=how == "flag")
            assert set(cache.get_many(["a"], "fp", "cpu")) == {"a"}
            cache.put_many({"b": _entry(1)}, "fp")
            cache.put_many({"c": _entry(2)}, "fp")
            router = make_router(gist_cache=cache)
            router.add_tools([WEATHER])  # encoded, kept in memory
            router.remove_tools(["get_weather"])
        assert set(cache.get_many(["a", "b", "c"], "fp", "cpu")) == {"a", "b", "c"}
        assert len(_warnings(caplog, "read-only")) == 1
    finally:
        path.parent.chmod(0o755)
        path.chmod(0o644)
    assert GistCache(path).disk_entries() == 1  # nothing was written


def _locked_cache_file(path, journal: str, lock: str) -> sqlite3.Connection:
    """A cache file holding entry "a", and another connection holding its `lock` (`BEGIN <lock>`) in `journal` mode."""
    writer = GistCache(path)
    writer.put_many({"a": _entry(0)}, "fp")
    writer.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute(f"PRAGMA journal_mode={journal}")
    holder.execute(f"BEGIN {lock}")
    return holder


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_lock_held_by_another_process_delays_a_route_briefly_and_skips_the_disk(tmp_path, caplog, make_router,
                                                                                   journal):
    path = tmp_path / "gists.sqlite"
    holder = _locked_cache_file(path, journal, "EXCLUSIVE")  # in rollback-journal mode this stops readers too
    try:
        with caplog.at_level(logging.WARNING, logger="toolformer_router.gist_cache"):
            cache = GistCache(path, lock_retry_s=0.0)  # the default lock timeout, waited for at every access
            found = cache.get_many(["a"], "fp", "cpu")
            cache.put_many({"b": _entry(1)}, "fp")
            router = make_router(gist_cache=cache)
            start = time.monotonic()
            router.route("hi", tools=[WEATHER], max_new_tokens=2)  # a read and a write
            elapsed = time.monotonic() - start
        assert set(found) == ({"a"} if journal == "wal" else set())  # WAL readers are never blocked
        assert cache.lock_timeout_s <= 1 and elapsed < 2 * cache.lock_timeout_s + 1
        assert set(cache.get_many(["b"], "fp", "cpu")) == {"b"}  # in memory
        assert len(_warnings(caplog, "locked")) == 1  # rate-limited
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    cache.put_many({"c": _entry(2)}, "fp")  # the lock is gone: written again
    assert set(GistCache(path).get_many(["a", "b", "c"], "fp", "cpu")) == {"a", "c"}


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_lock_held_for_long_is_waited_for_once_then_skipped_for_lock_retry_s(tmp_path, journal):
    path = tmp_path / "gists.sqlite"
    holder = _locked_cache_file(path, journal, "IMMEDIATE" if journal == "wal" else "EXCLUSIVE")
    try:
        cache = GistCache(path, lock_timeout_s=0.3, lock_retry_s=0.8)
        waited = time.monotonic()
        cache.get_many(["a"], "fp", "cpu")  # WAL: read, then its write (the entry's use) waits
        waited = time.monotonic() - waited
        skipped = time.monotonic()
        for i in range(3):
            cache.clear_memory()
            found = cache.get_many(["a"], "fp", "cpu")
            cache.put_many({f"b{i}": _entry(i)}, "fp")
        skipped = time.monotonic() - skipped
        assert set(found) == ({"a"} if journal == "wal" else set())  # WAL readers are never blocked
        assert skipped < 0.3  # was a wait of lock_timeout_s per read or write: 1.8 s
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert waited < 0.3 if journal == "delete" else waited >= 0.3  # (the open waited in rollback-journal mode)
    time.sleep(0.8)  # lock_retry_s on: the disk is used again
    cache.put_many({"c": _entry(2)}, "fp")
    assert set(GistCache(path).get_many(["a", "b0", "c"], "fp", "cpu")) == {"a", "c"}


_OLDER_LAYOUTS = {
    "no checksum": "CREATE TABLE gist_entries (schema_hash TEXT, fingerprint TEXT, payload BLOB, created REAL, "
                   "PRIMARY KEY (schema_hash, fingerprint))",
    "no used": "CREATE TABLE gist_entries (schema_hash TEXT, fingerprint TEXT, payload BLOB, checksum TEXT, "
               "created REAL, PRIMARY KEY (schema_hash, fingerprint))",
}


@pytest.mark.parametrize("layout", list(_OLDER_LAYOUTS))
def test_older_table_layout_is_recreated_at_open(tmp_path, caplog, make_router, layout):
    path = tmp_path / "gists.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(_OLDER_LAYOUTS[layout])
        db.execute("INSERT INTO gist_entries (schema_hash, fingerprint, payload, created) VALUES ('a', 'fp', x'00', 0)")
    db.close()
    with caplog.at_level(logging.WARNING, logger="toolformer_router.gist_cache"):
        cache = GistCache(path)
    assert _warnings(caplog, "older table layout") and cache.disk_entries() == 0
    router = make_router(gist_cache=cache)
    router.add_tools([WEATHER])
    router.remove_tools(["get_weather"])
    assert GistCache(path).disk_entries() == 1


@pytest.mark.parametrize("fault", ["gists_shape", "memory_shape", "dtype", "nan", "inf"])
def test_stored_entry_of_the_wrong_shape_or_not_finite_is_deleted_and_recomputed(tmp_path, caplog, make_router,
                                                                                  fault):
    path = tmp_path / "gists.sqlite"
    router = make_router(gist_cache=GistCache(path))
    tool = router.prepare_tools([WEATHER])[0]
    (expected,), _, _ = make_router().tool_memories([tool])  # the same weights, memory only
    gists, memory = expected.gists.clone(), expected.memory.clone()
    if fault == "gists_shape":
        gists = gists[:-1]
    elif fault == "memory_shape":
        memory = memory[..., :-1]
    elif fault == "dtype":
        gists, memory = gists.double(), memory.double()
    else:
        memory[0, 0, 0, 0, 0] = float(fault)
    GistCache(path).put_many({tool.schema_hash: ToolMemory(gists, memory)}, router.model.memory_fingerprint())
    with caplog.at_level(logging.WARNING, logger="toolformer_router.gist_cache"):
        result = router.route("hi", tools=[WEATHER], max_new_tokens=2)
        (served,), hits, misses = router.tool_memories([tool])
    assert (result.usage.cache_hits, result.usage.cache_misses) == (0, 1) and router.gist_cache.corrupt == 1
    assert _warnings(caplog, "corrupt") and (hits, misses) == (1, 0)
    assert torch.equal(served.gists, expected.gists) and torch.equal(served.memory, expected.memory)
    (reread,), hits, _ = make_router(gist_cache=GistCache(path)).tool_memories([tool])  # the row was replaced
    assert hits == 1 and torch.equal(reread.memory, expected.memory)


def test_disk_tier_keeps_the_most_recently_used_entries_within_its_byte_bound(tmp_path):
    path = tmp_path / "gists.sqlite"
    size = len(_entry(0).serialize())
    writer = GistCache(path, max_disk_bytes=3 * size)
    for key, seed in (("a", 0), ("b", 1), ("c", 2)):
        writer.put_many({key: _entry(seed)}, "fp")
    reader = GistCache(path, max_disk_bytes=3 * size)
    assert set(reader.get_many(["a"], "fp", "cpu")) == {"a"}  # read from disk: now used more recently than "b"
    reader.put_many({"d": _entry(3)}, "fp")
    assert set(GistCache(path).get_many(["a", "b", "c", "d"], "fp", "cpu")) == {"a", "c", "d"}
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT SUM(LENGTH(payload)) FROM gist_entries").fetchone()[0] <= 3 * size
    db.close()


def test_memory_tier_keeps_the_most_recently_used_entries_within_its_bound():
    cache = GistCache(None, max_memory_entries=2)
    cache.put_many({"a": _entry(0), "b": _entry(1)}, "fp")
    cache.get_many(["a"], "fp", "cpu")
    cache.put_many({"c": _entry(2)}, "fp")
    assert len(cache) == 2 and set(cache.get_many(["a", "b", "c"], "fp", "cpu")) == {"a", "c"}


def test_router_bounds_every_per_tool_cache_by_max_cached_tools(tokenizer):
    """Routing over many distinct tools keeps at most `max_cached_tools` of each per-tool cache in memory, and a
    tool that left is recomputed to the same calls."""
    config = RouterConfig(**TINY_ROUTER_CONFIG, lexical_weight=1.0)
    router = ToolRouter.from_backbone(tiny_backbone("llama", len(tokenizer)), tokenizer, config, max_cached_tools=3)
    tool_sets = [[{**WEATHER, "name": f"get_weather_{i}"}, {**EMAIL, "name": f"send_email_{i}"}] for i in range(4)]
    first = [router.route("Weather in Lisbon?", tools=tools, max_new_tokens=12).raw for tools in tool_sets]
    caches = {"gists": router.gist_cache._memory, "schema texts": router._tool_texts,
              "grammar rules": router.grammar._rules, "word lists": router.lexical._tool_words}
    assert {name: len(cache) for name, cache in caches.items()} == dict.fromkeys(caches, 3)  # 8 tools were seen
    again = router.route("Weather in Lisbon?", tools=tool_sets[0], max_new_tokens=12).raw  # its tools had left
    assert again == first[0]
