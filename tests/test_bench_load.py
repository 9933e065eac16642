"""`benchmarks/bench_load.py` through its own functions, on a tiny router (so the script cannot rot unnoticed)."""

import argparse
import asyncio
import importlib.util
import sys
from pathlib import Path

import orjson
import pytest

from toolformer_router.adapters.server import create_app, serve_in_thread


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_load.py"
    spec = importlib.util.spec_from_file_location("bench_load", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_call_of_another_requests_tool_counts_as_cross_wired(bench):
    def response(name: str) -> dict:
        call = {"id": "call_0", "type": "function", "function": {"name": name, "arguments": "{}"}}
        return {"choices": [{"message": {"content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}]}

    assert not bench.cross_wired(7, response("get_weather_7"))
    assert bench.cross_wired(7, response("get_weather_8"))
    names = [{t["function"]["name"] for t in bench.request_tools(i)} for i in range(50)]
    assert all(a.isdisjoint(b) for i, a in enumerate(names) for b in names[i + 1:])  # no two requests share a tool


def test_a_small_load_answers_every_request_once_past_the_queue_bound(bench, make_router):
    router = make_router()
    args = argparse.Namespace(requests=8, concurrency=4, alone=2, max_tokens=12, max_pending=1,
                              max_cached_tools=4, timeout=120.0)
    with serve_in_thread(create_app(router, max_pending=args.max_pending)) as base_url:
        result = asyncio.run(bench.run(base_url, args))
    assert result["answered_200"] == 8 and result["lost"] == 0 and result["cross_wired"] == 0
    assert result["refused_429"] > 0  # four clients, one place: the bound was answered with 429s
    assert result["alone_differ"] == [] and result["alone_compared"] == 2
    assert orjson.loads(bench.request_body(3, 12))["tools"] == bench.request_tools(3)
