"""Call margins of the queries a checkpoint must get right in plain use: the README demo's (with its tools) and
LangChain's standard agent-loop query ("What is the weather in San Francisco, CA?" with a one-tool weather schema).

A route calls when its call margin (best call-opening logit minus best text logit at the first token) plus
`call_bias` (the one for its number of tools) is above 0, so these margins bound the `call_bias` a checkpoint may
ship with: below minus the smallest call margin, a query that should call answers in text. Used with
`toolformer-router calibrate` (validation) to choose `call_bias`; nothing here reads the BFCL test categories.

    python benchmarks/bench_call_margins.py [--checkpoint default] [--call-bias B] [--out FILE]

Prints a JSON document and a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import machine, print_table

from toolformer_router import ToolRouter
from toolformer_router.cli import DEMO_QUERIES, DEMO_TOOLS

LANGCHAIN_WEATHER = {"name": "get_weather", "description": "Get the weather at a location.",
                     "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                                    "required": ["location"]}}
"""The tool of langchain-tests' `test_agent_loop` (its `get_weather(location: str)`), as the adapter binds it."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--call-bias", type=float, default=None,
                        help="route at this call_bias (default: the checkpoint's)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    router = ToolRouter.from_pretrained(args.checkpoint, disk_cache=False)
    if args.call_bias is not None:
        router.config.set_call_threshold("call_bias", args.call_bias)
    demo_tools = json.loads(Path(DEMO_TOOLS).read_text())
    cases = [(query, demo_tools) for query in DEMO_QUERIES]
    cases.append(("What is the weather in San Francisco, CA?", [LANGCHAIN_WEATHER]))
    rows = []
    for query, tools in cases:
        result = router.route(query, tools=tools)
        rows.append({"query": query, "call_margin": round(result.call_margin, 3),
                     "call_bias": router.config.call_thresholds(len(tools)).call_bias,
                     "calls": [{"name": c.name, "arguments": c.arguments} for c in result.calls],
                     "text": result.text})
    report = {"checkpoint": args.checkpoint, "machine": machine(), "rows": rows}
    print(json.dumps(report, indent=2, ensure_ascii=False))
    print_table([{"query": r["query"][:48], "call margin": r["call_margin"],
                  "routed": ", ".join(c["name"] for c in r["calls"]) or "text"} for r in rows],
                ["query", "call margin", "routed"])
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
