"""The gist cache: persistence, fingerprints, corruption, concurrent writers, kills, hot-swaps."""

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import EMAIL, STOCK, WEATHER
from toolformer_router import GistCache
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
