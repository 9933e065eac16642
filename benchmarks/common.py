"""Shared helpers for the benchmarks: BFCL tool catalog, timing statistics, table printing."""

from __future__ import annotations

import importlib.util
import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import torch

from toolformer_router import RouteResult, RouteUsage, ToolCall
from toolformer_router.schema import normalize_tools


class ZeroCostRouter:
    """Answers every request at once with the same call: what remains of a request's time is the adapter's."""

    name = "zero-cost"

    def __init__(self) -> None:
        self.result = RouteResult(calls=[ToolCall(id="call_0", name="get_weather", arguments={"city": "Berlin"})],
                                  model=self.name, usage=RouteUsage(input_tokens=20, output_tokens=12))
        self._prepared: dict[bytes, list] = {}

    def prepare_tools(self, tools: Any) -> list:
        """Validated once per tool list, as `ToolRouter.prepare_tools` memoises per tool."""
        key = orjson.dumps(list(tools), option=orjson.OPT_SORT_KEYS)
        if key not in self._prepared:
            self._prepared[key] = normalize_tools(orjson.loads(key))
        return self._prepared[key]

    def route(self, query: Any, tools: Any = None, **_: Any) -> RouteResult:
        return self.result

    async def aroute(self, query: Any, tools: Any = None, **_: Any) -> RouteResult:
        return self.result


def bfcl_tools(seed: int = 0) -> list[dict]:
    """Unique BFCL function docs (python categories, all splits: speed only, nothing is trained), shuffled."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None:
        raise SystemExit("bfcl-eval is needed: pip install --no-deps bfcl-eval")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    tools: dict[str, dict] = {}
    for path in sorted(data.glob("BFCL_v4_*.json")):
        if any(part in path.name for part in ("java", "javascript", "multi_turn", "memory", "web_search", "format")):
            continue
        for line in path.open():
            for function in json.loads(line).get("function", []):
                tools.setdefault(function["name"], function)
    ordered = [tools[name] for name in sorted(tools)]
    random.Random(seed).shuffle(ordered)
    return ordered


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "n": len(ordered),
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "mean_ms": 1000 * statistics.fmean(ordered),
    }


def machine() -> str:
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print(" | ".join(c.ljust(widths[c]) for c in columns))
    print("-|-".join("-" * widths[c] for c in columns))
    for row in rows:
        print(" | ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return "" if value is None else str(value)
