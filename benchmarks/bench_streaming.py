"""Streaming: time to the first piece of a text answer against its total time, through the router and the three
interfaces users stream from, and whether the streamed pieces join into exactly the non-streamed answer.

    python benchmarks/bench_streaming.py [--checkpoint default] [--max-tokens 60] [--repeats 2] [--out FILE]

Each prompt asks for prose, so the answer runs to the `--max-tokens` budget (the issue's "60-token text answer").
Two settings: no tools (the text is decoded in the first pass), and the ten tools of benchmarks/bench_agents.py
bound with tool_choice "none" (the router decides first, then the backbone writes the answer without the tools).
Drivers: `ToolRouter.stream`, LangChain `ChatToolFormer.stream`, LlamaIndex `ToolFormerLLM.stream_chat`, and the
OpenAI client's `stream=True` against `toolformer-router serve` in this process. Everything runs serially.
Prints a JSON document and a table; writes the JSON to `--out` (default benchmarks/results/streaming_<device>.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, __import__("os").path.dirname(__file__))
from bench_agents import TOOLS
from common import machine, print_table
from toolformer_router.adapters.server import create_app, serve_in_thread

from toolformer_router import ToolRouter

PROMPTS = [
    "Tell me about the history of Rome in a few paragraphs.",
    "Describe how a bicycle works, part by part.",
    "Write a short story about a lighthouse keeper.",
    "Explain why the sky is blue to a ten-year-old.",
    "What should I pack for a week of hiking in the mountains?",
    "Give me some advice on learning to cook.",
]

Driver = Callable[[str, list[dict], int], Iterator[str]]


def drivers(router: ToolRouter, base_url: str) -> dict[str, Driver]:
    """Each interface as a function (prompt, tools, max_tokens) -> the text pieces it streams; the OpenAI client
    talks to the server at `base_url`."""
    from llama_index.core.llms import ChatMessage
    from openai import OpenAI
    from toolformer_router.adapters.langchain import ChatToolFormer
    from toolformer_router.adapters.llamaindex import ToolFormerLLM

    def core(prompt: str, tools: list[dict], max_tokens: int) -> Iterator[str]:
        for chunk in router.stream(prompt, tools, tool_choice="none" if tools else None, max_new_tokens=max_tokens):
            if chunk.text:
                yield chunk.text

    def langchain(prompt: str, tools: list[dict], max_tokens: int) -> Iterator[str]:
        model = ChatToolFormer(router=router, max_tokens=max_tokens)
        bound = model.bind_tools(tools, tool_choice="none") if tools else model
        for chunk in bound.stream(prompt):
            if chunk.content:
                yield chunk.content

    def llamaindex(prompt: str, tools: list[dict], max_tokens: int) -> Iterator[str]:
        llm = ToolFormerLLM(router=router, max_tokens=max_tokens)
        for response in llm.stream_chat([ChatMessage(role="user", content=prompt)], tools=tools,
                                        tool_choice="none" if tools else None):
            if response.delta:
                yield response.delta

    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0)

    def openai(prompt: str, tools: list[dict], max_tokens: int) -> Iterator[str]:
        extra = {"tools": [{"type": "function", "function": t} for t in tools], "tool_choice": "none"} if tools else {}
        stream = client.chat.completions.create(model=router.name, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=max_tokens, stream=True, **extra)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    return {"router": core, "langchain": langchain, "llamaindex": llamaindex, "openai": openai}


def measure(driver: Driver, prompt: str, tools: list[dict], max_tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    first, pieces = None, []
    for piece in driver(prompt, tools, max_tokens):
        first = first if first is not None else time.perf_counter() - started
        pieces.append(piece)
    total = time.perf_counter() - started
    return {"ttft_s": first if first is not None else total, "total_s": total, "pieces": len(pieces),
            "text": "".join(pieces)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=int, help="only the first N prompts")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    prompts = PROMPTS[: args.limit]
    router = ToolRouter.from_pretrained(args.checkpoint)
    tools = [tool.openai()["function"] for tool in TOOLS.values()]
    settings = {"no tools": [], f"{len(tools)} tools, tool_choice none": tools}
    with serve_in_thread(create_app(router)) as base_url:
        records, rows = run(drivers(router, base_url), router, settings, prompts, args)
    document = {"machine": machine(), "checkpoint": args.checkpoint, "max_tokens": args.max_tokens,
                "repeats": args.repeats, "prompts": prompts, "summary": rows, "records": records}
    out = args.out or Path(__file__).parent / "results" / f"streaming_{router.device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2))
    print(json.dumps(rows, indent=2))
    print_table(rows, list(rows[0]))


def run(ways: dict[str, Driver], router: ToolRouter, settings: dict[str, list[dict]], prompts: list[str],
        args: argparse.Namespace) -> tuple[list[dict], list[dict]]:
    """Every driver over every prompt in every setting, serially: (records, summary rows)."""
    records, rows = [], []
    for setting, active in settings.items():
        expected = {p: router.route(p, active, tool_choice="none" if active else None,
                                    max_new_tokens=args.max_tokens) for p in prompts}  # also warms every path
        for name, driver in ways.items():
            runs = [dict(measure(driver, p, active, args.max_tokens), prompt=p, setting=setting, driver=name,
                         matches=None, output_tokens=expected[p].usage.output_tokens)
                    for _ in range(args.repeats) for p in prompts]
            for record in runs:
                record["matches"] = record.pop("text") == expected[record["prompt"]].text
            records += runs
            ttft, total = [r["ttft_s"] for r in runs], [r["total_s"] for r in runs]
            share = [r["ttft_s"] / r["total_s"] for r in runs]
            rows.append({"setting": setting, "driver": name, "n": len(runs),
                         "output_tokens_p50": statistics.median(r["output_tokens"] for r in runs),
                         "ttft_p50_s": round(statistics.median(ttft), 3),
                         "total_p50_s": round(statistics.median(total), 3),
                         "ttft_share_p50": round(statistics.median(share), 3), "ttft_share_max": round(max(share), 3),
                         "pieces_p50": statistics.median(r["pieces"] for r in runs),
                         "joined_equals_route": f"{sum(r['matches'] for r in runs)}/{len(runs)}"})
    return records, rows


if __name__ == "__main__":
    main()
