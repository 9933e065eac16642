"""Adapter overhead: what ChatToolFormer (LangChain) and ToolFormerLLM (LlamaIndex) add to a direct router call.

    python benchmarks/bench_adapters.py [--calls 2000] [--out FILE]

Over a router that answers instantly (`common.ZeroCostRouter`) with 20 bound BFCL tools, so every microsecond
measured is the adapter's: message and tool conversion, binding, output message types, callbacks.
Prints a JSON document and a table; writes the JSON to `--out` (default benchmarks/results/adapters_cpu.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import ZeroCostRouter, bfcl_tools, machine, percentiles, print_table, timed  # noqa: E402
from langchain_core.tools import StructuredTool  # noqa: E402
from llama_index.core.tools import FunctionTool  # noqa: E402

from toolformer_router.adapters.langchain import ChatToolFormer  # noqa: E402
from toolformer_router.adapters.llamaindex import ToolFormerLLM  # noqa: E402

QUERY = "What's the weather in Berlin?"


async def _async_times(fn: Callable[[], Awaitable[object]], calls: int) -> list[float]:
    for _ in range(min(50, calls)):
        await fn()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "adapters_cpu.json"))
    args = parser.parse_args()

    router = ZeroCostRouter()
    tools = [{"name": "get_weather", "description": "Weather for a city.",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    tools += bfcl_tools()[:19]
    messages = [{"role": "user", "content": QUERY}]
    lc_tools = [StructuredTool(name=t["name"], description=t.get("description") or t["name"],
                               args_schema=t["parameters"], func=lambda **kw: "ok") for t in tools]
    li_tools = [FunctionTool.from_defaults(fn=lambda **kw: "ok", name=t["name"], description=t.get("description") or "")
                for t in tools]
    chat_model = ChatToolFormer(router=router)
    bound = chat_model.bind_tools(lc_tools)
    llm = ToolFormerLLM(router=router)

    cases = {
        "direct router.route": lambda: router.route(messages, tools),
        "langchain invoke (bound)": lambda: bound.invoke(QUERY),
        "langchain bind_tools + invoke": lambda: chat_model.bind_tools(lc_tools).invoke(QUERY),
        "llamaindex chat_with_tools": lambda: llm.chat_with_tools(li_tools, user_msg=QUERY),
    }
    async_cases = {
        "direct router.aroute": lambda: router.aroute(messages, tools),
        "langchain ainvoke (bound)": lambda: bound.ainvoke(QUERY),
        "llamaindex achat_with_tools": lambda: llm.achat_with_tools(li_tools, user_msg=QUERY),
    }
    rows = []
    for name, fn in cases.items():
        rows.append({"case": name, **percentiles(timed(fn, args.calls, warmup=min(50, args.calls)))})
    for name, fn in async_cases.items():
        rows.append({"case": name, **percentiles(asyncio.run(_async_times(fn, args.calls)))})
    for row in rows:
        row["p50_us"] = 1000 * row.pop("p50_ms")
        row["p95_us"] = 1000 * row.pop("p95_ms")
        row["mean_us"] = 1000 * row.pop("mean_ms")
    report = {"machine": machine(), "tools": len(tools), "calls": args.calls, "rows": rows}
    print(json.dumps(report, indent=2))
    print_table(rows, ["case", "n", "p50_us", "p95_us", "mean_us"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
