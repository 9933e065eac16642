"""The OpenAI-compatible server under load: 1,000 requests from 200 concurrent clients, each request with tools of its
own, against an in-process server (loopback only) over the real checkpoint.

    python benchmarks/bench_load.py [--requests 1000] [--concurrency 200] [--max-pending 64] \
        [--max-cached-tools 1000] [--alone 24] [--out FILE]

Checks what the server promises under load:
- nothing lost: every request ends with a 200 (a client answered 429 waits `Retry-After` and sends it again; as
  with the OpenAI client, a connection that fails before any answer is retried, at most twice, and counted);
- nothing cross-wired: every call names one of its own request's tools (each request's tool names carry its
  number) and the response ids are unique;
- the queue is bounded: past `--max-pending` waiting completions the server answers 429 at once, so the latency of
  an admitted request stays bounded instead of growing with the number of clients;
- memory is bounded: with `--max-cached-tools` below the number of distinct tools sent, the process's RSS levels
  off (sampled every 0.5 s; client and server share the process);
- a request's calls do not depend on its batch: `--alone` requests are first sent one at a time to the idle
  server, then again inside the load, and their answers compared.
Prints a JSON document and a table; writes the JSON to `--out` (default benchmarks/results/load_<device>.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import torch
from tqdm import tqdm

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import machine, percentiles, print_table  # noqa: E402

from toolformer_router import ToolRouter  # noqa: E402
from toolformer_router.adapters.server import create_app, serve_in_thread  # noqa: E402

CITIES = ["Lisbon", "Berlin", "Osaka", "Lima", "Nairobi", "Oslo", "Denver", "Hanoi", "Cairo", "Perth", "Quito",
          "Dublin", "Seoul", "Tunis", "Porto", "Zurich"]
CURRENCIES = [("USD", "EUR"), ("GBP", "JPY"), ("EUR", "CHF"), ("CAD", "USD")]


def request_tools(i: int) -> list[dict[str, Any]]:
    """Three tools whose names carry the request number `i`: no two requests share a tool."""

    def tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
        return {"type": "function", "function": {
            "name": f"{name}_{i}", "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required}}}

    text = {"type": "string"}
    return [
        tool("get_weather", f"Current weather for a city (weather service {i}).",
             {"city": {**text, "description": "City name"},
              "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city"]),
        tool("convert_currency", f"Convert an amount of money between currencies (exchange desk {i}).",
             {"amount": {"type": "number"}, "from_currency": text, "to_currency": text},
             ["amount", "from_currency", "to_currency"]),
        tool("send_email", f"Send an e-mail message (mailbox {i}).",
             {"to": {**text, "description": "Recipient address"}, "subject": text, "body": text}, ["to", "body"]),
    ]


def request_query(i: int) -> str:
    kind = i % 3
    if kind == 0:
        return f"What's the weather in {CITIES[i % len(CITIES)]} right now?"
    if kind == 1:
        source, target = CURRENCIES[i % len(CURRENCIES)]
        return f"Convert {100 + i} {source} to {target}."
    return f"Send an email to user{i}@example.com saying the meeting moved to {i % 12 + 1} pm."


def request_body(i: int, max_tokens: int) -> bytes:
    return orjson.dumps({"model": "bench", "messages": [{"role": "user", "content": request_query(i)}],
                         "tools": request_tools(i), "tool_choice": "auto", "max_tokens": max_tokens})


def answer_of(response: dict) -> dict[str, Any]:
    """What the comparison alone / in the load looks at: the text and the calls (names and arguments)."""
    message = response["choices"][0]["message"]
    calls = [(c["function"]["name"], orjson.loads(c["function"]["arguments"])) for c in message.get("tool_calls") or []]
    return {"content": message.get("content"), "calls": calls, "finish_reason": response["choices"][0]["finish_reason"]}


def cross_wired(i: int, response: dict) -> bool:
    own = {tool["function"]["name"] for tool in request_tools(i)}
    return any(name not in own for name, _ in answer_of(response)["calls"])


async def send(client: httpx.AsyncClient, i: int, body: bytes, stats: Counter, refusals: list[float]
               ) -> tuple[dict, float]:
    """POST one request until it is admitted; returns the answer and the latency of the admitted attempt. As the
    OpenAI client does, a request whose connection failed before any answer is sent again (at most twice)."""
    failed_connections = 0
    while True:
        started = time.perf_counter()
        try:
            response = await client.post("/chat/completions", content=body,
                                         headers={"content-type": "application/json"})
        except httpx.TransportError:
            failed_connections += 1
            stats["connection_retries"] += 1
            if failed_connections > 2:
                raise
            continue
        if response.status_code in (429, 503):
            stats[f"http_{response.status_code}"] += 1
            refusals.append(time.perf_counter() - started)
            await asyncio.sleep(float(response.headers.get("retry-after", 1)))
            continue
        stats[f"http_{response.status_code}"] += 1
        if response.status_code != 200:
            raise RuntimeError(f"request {i}: HTTP {response.status_code}: {response.text[:200]}")
        return response.json(), time.perf_counter() - started


async def sample_rss(samples: list[tuple[float, int, int]], done: list[int], stop: asyncio.Event) -> None:
    process = psutil.Process()
    started = time.perf_counter()
    while not stop.is_set():
        samples.append((time.perf_counter() - started, done[0], process.memory_info().rss))
        await asyncio.sleep(0.5)


async def run(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    total, alone_ids = args.requests, list(range(args.alone))
    bodies = {i: request_body(i, args.max_tokens) for i in range(total)}
    stats: Counter = Counter()
    # idle connections expire on the client before the server's 5 s keep-alive closes them (no race on reuse)
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=args.timeout) as client:
        alone = {i: (await send(client, i, bodies[i], Counter(), []))[0] for i in alone_ids}
        order = list(range(total))
        random.Random(0).shuffle(order)
        queue = iter(order)
        answers: dict[int, dict] = {}
        latencies: list[float] = []
        refusals: list[float] = []
        failures: list[str] = []
        done = [0]
        samples: list[tuple[float, int, int]] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(samples, done, stop))

        progress = tqdm(total=total, desc="requests", unit="req")

        async def client_loop() -> None:
            for i in queue:
                try:
                    answers[i], latency = await send(client, i, bodies[i], stats, refusals)
                    latencies.append(latency)
                except Exception as error:  # noqa: BLE001 - counted as lost, reported
                    failures.append(f"{i}: {type(error).__name__}: {error}")
                done[0] += 1
                progress.update()

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(args.concurrency)))
        wall = time.perf_counter() - started
        progress.close()
        stop.set()
        await sampler
    ids = [c["id"] for a in answers.values() for c in a["choices"][0]["message"].get("tool_calls") or []]
    together = {i: answer_of(answers[i]) for i in alone_ids if i in answers}
    differ = [i for i in alone_ids if answer_of(alone[i]) != together.get(i)]
    rss = [r for _, _, r in samples]
    quarter = {q: max((r for _, d, r in samples if d <= q * total / 4), default=rss[0]) for q in (1, 2, 3, 4)}
    return {
        "requests": total, "concurrency": args.concurrency, "max_pending": args.max_pending,
        "max_cached_tools": args.max_cached_tools, "distinct_tools": 3 * total, "max_tokens": args.max_tokens,
        "wall_s": wall, "throughput_rps": len(answers) / wall,
        "answered_200": len(answers), "lost": len(failures), "failures": failures[:10],
        "cross_wired": sum(cross_wired(i, a) for i, a in answers.items()),
        "duplicate_call_ids": len(ids) - len(set(ids)),
        "refused_429": stats["http_429"], "refused_503": stats["http_503"],
        "refusal_latency": percentiles(refusals) | {"max_ms": 1000 * max(refusals)} if refusals else None,
        "connection_retries": stats["connection_retries"],
        "admitted_latency": percentiles(latencies) | {"max_ms": 1000 * max(latencies)},
        "with_calls": sum(bool(answer_of(a)["calls"]) for a in answers.values()),
        "alone_compared": len(alone_ids), "alone_differ": differ,
        "rss_mb": {"first": rss[0] / 2**20, "peak": max(rss) / 2**20, "last": rss[-1] / 2**20,
                   "peak_by_quarter_done": [quarter[q] / 2**20 for q in (1, 2, 3, 4)]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--device", default=None)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--max-pending", type=int, default=64)
    parser.add_argument("--max-cached-tools", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=40)
    parser.add_argument("--alone", type=int, default=24, help="requests also sent alone first, then compared")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a client waits for one answer")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not 0 <= args.alone <= args.requests:
        parser.error("--alone must be between 0 and --requests")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        router = ToolRouter.from_pretrained(args.checkpoint, device=args.device, disk_cache=False,
                                            max_cached_tools=args.max_cached_tools)
    with serve_in_thread(create_app(router, max_pending=args.max_pending)) as base_url:
        result = asyncio.run(run(base_url, args))
    result["caches_after"] = {"gists": len(router.gist_cache._memory), "schema_texts": len(router._tool_texts),
                              "grammar_rules": len(router.grammar._rules)}
    result["machine"] = machine()
    result["checkpoint"] = args.checkpoint
    print(json.dumps(result, indent=2))
    latency = result["admitted_latency"]
    print_table([{
        "requests": result["requests"], "clients": result["concurrency"], "200": result["answered_200"],
        "lost": result["lost"], "cross-wired": result["cross_wired"], "429s": result["refused_429"],
        "429 p95 ms": f"{(result['refusal_latency'] or {}).get('p95_ms', 0):.0f}",
        "p50/p95/max s": "/".join(f"{latency[key] / 1000:.1f}" for key in ("p50_ms", "p95_ms", "max_ms")),
        "req/s": f"{result['throughput_rps']:.2f}",
        "RSS MB by quarter": "/".join(f"{m:.0f}" for m in result["rss_mb"]["peak_by_quarter_done"]),
        "alone = in load": f"{result['alone_compared'] - len(result['alone_differ'])}/{result['alone_compared']}",
    }], ["requests", "clients", "200", "lost", "cross-wired", "429s", "429 p95 ms", "p50/p95/max s", "req/s",
         "RSS MB by quarter", "alone = in load"])
    device = "gpu" if torch.cuda.is_available() and args.device != "cpu" else "cpu"
    out = Path(args.out or Path(__file__).parent / "results" / f"load_{device}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
