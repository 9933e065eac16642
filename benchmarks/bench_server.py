"""OpenAI-compatible server speed: throughput and latency at 1, 8 and 64 concurrent clients against an in-process
server over the real checkpoint with 20 active tools, and the adapter's own cost per call over a zero-cost router.

    python benchmarks/bench_server.py [--checkpoint default] [--concurrency 1,8,64] [--requests 128] [--out FILE]

Load: raw `httpx` clients (lighter than the `openai` client, which shares these CPUs with the server) posting
chat completions with 20 unique BFCL tools; as in bench_engine.py every request is forced to the same tool, so
every row decodes the same call shape. Overhead: direct `aroute` vs the ASGI app called in-process (validation,
conversion, JSON) vs a full HTTP round trip through uvicorn, on a router that answers instantly.
Prints a JSON document and a table; writes the JSON to `--out` (default benchmarks/results/server_<device>.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from bench_engine import usable_catalog  # noqa: E402
from common import ZeroCostRouter, machine, percentiles, print_table  # noqa: E402

from toolformer_router import ToolRouter  # noqa: E402
from toolformer_router.adapters.server import create_app, serve_in_thread  # noqa: E402

QUERIES = [
    "Find me the weather forecast for Berlin for the next three days, in celsius.",
    "What is the price of AAPL stock right now?",
    "Book a table for four at an Italian restaurant tonight at 8pm.",
    "How many calories are in two boiled eggs?",
    "Send a message to Maria saying I'll be late.",
    "Convert 120 kilometres to miles.",
    "What's the population of Canada?",
    "Translate 'good morning' into Japanese.",
]


def request_body(query: str, tools: list[dict], tool_choice: Any, max_tokens: int) -> bytes:
    return orjson.dumps({"model": "bench", "messages": [{"role": "user", "content": query}], "tools": tools,
                         "tool_choice": tool_choice, "parallel_tool_calls": False, "max_tokens": max_tokens})


async def load(base_url: str, bodies: list[bytes], concurrency: int, total: int) -> tuple[list[float], float, list]:
    """`total` requests from `concurrency` clients, each sending its next request when the last is answered."""
    latencies: list[float] = []
    answers: list[dict] = []
    indices = iter(range(total))
    headers = {"content-type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=None) as client:

        async def worker() -> None:
            for i in indices:
                started = time.perf_counter()
                response = await client.post("/chat/completions", content=bodies[i % len(bodies)], headers=headers)
                response.raise_for_status()
                latencies.append(time.perf_counter() - started)
                answers.append(response.json())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - started, answers


async def per_call_us(call, calls: int) -> float:
    for _ in range(min(50, calls)):
        await call()
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return 1e6 * (time.perf_counter() - started) / calls


async def asgi_post(app, body: bytes) -> None:
    """One POST to the ASGI app in-process: no socket, no HTTP parsing, no client."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    status = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    assert status == [200], status


async def overhead(tools: list[dict], calls: int) -> dict[str, float]:
    """µs per call of the same request: direct `aroute`, the ASGI app in-process, HTTP through uvicorn."""
    router = ZeroCostRouter()
    app = create_app(router)
    body = request_body(QUERIES[0], tools, "auto", 24)
    messages = [{"role": "user", "content": QUERIES[0]}]
    direct = await per_call_us(lambda: router.aroute(messages, tools, tool_choice="auto", max_new_tokens=24), calls)
    in_process = await per_call_us(lambda: asgi_post(app, body), calls)
    with serve_in_thread(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as client:
            async def http_post() -> None:
                (await client.post("/chat/completions", content=body)).raise_for_status()

            http = await per_call_us(http_post, calls)
    return {"direct_aroute_us": direct, "asgi_app_us": in_process, "http_uvicorn_us": http,
            "app_overhead_us": in_process - direct, "http_overhead_us": http - direct, "calls": calls,
            "tools_per_request": len(tools)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--device", default=None)
    parser.add_argument("--tools", type=int, default=20)
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--requests", type=int, default=128, help="requests per concurrency level (after warm-up)")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--overhead-calls", type=int, default=2000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        router = ToolRouter.from_pretrained(args.checkpoint, device=args.device, disk_cache=False)
    tools = [tool.to_openai() for tool in usable_catalog(router, args.tools)]
    bodies = [request_body(q, tools, {"type": "function", "function": {"name": tools[0]["function"]["name"]}},
                          args.max_tokens) for q in QUERIES]
    report: dict[str, Any] = {
        "machine": machine(), "checkpoint": args.checkpoint, "device": str(router.device),
        "dtype": str(router.model.lm_head.weight.dtype), "torch_threads": torch.get_num_threads(), "tools": len(tools),
        "max_tokens": args.max_tokens, "max_batch_size": router.max_batch_size,
    }
    rows = []
    with serve_in_thread(create_app(router)) as base_url:
        asyncio.run(load(base_url, bodies, 2, 4))  # warm-up: gists, grammar, assembled memory
        for concurrency in levels:
            latencies, elapsed, answers = asyncio.run(load(base_url, bodies, concurrency, args.requests))
            stats = percentiles(latencies)
            rows.append({"concurrency": concurrency, "requests": stats["n"], "throughput_rps": stats["n"] / elapsed,
                         "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"], "mean_ms": stats["mean_ms"],
                         "output_tokens": sum(a["usage"]["completion_tokens"] for a in answers) / len(answers),
                         "finish_reasons": dict(Counter(a["choices"][0]["finish_reason"] for a in answers))})
            print(f"[{concurrency} clients] {rows[-1]['throughput_rps']:.2f} req/s, p50 {stats['p50_ms']:.0f} ms",
                  file=sys.stderr)
    router.close()
    report["load"] = rows
    report["adapter_overhead"] = asyncio.run(overhead(tools, args.overhead_calls))
    print(json.dumps(report, indent=2))
    out = Path(args.out or Path(__file__).parent / "results" / f"server_{router.device.type}.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print_table(rows, ["concurrency", "requests", "throughput_rps", "p50_ms", "p95_ms", "mean_ms", "output_tokens"])
    print()
    print_table([report["adapter_overhead"]], ["direct_aroute_us", "asgi_app_us", "http_uvicorn_us",
                                               "app_overhead_us", "http_overhead_us"])


if __name__ == "__main__":
    main()
