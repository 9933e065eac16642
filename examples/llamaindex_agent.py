"""A LlamaIndex `FunctionAgent` over 200 tools, routed by toolformer-router on the default checkpoint (CPU is fine).

    python examples/llamaindex_agent.py ["What's the weather in Lyon?"] [--tools 200] [--require-call]

Three real Python functions plus the tools of `examples/custom_tools.json`. The tool
schemas never enter the prompt: each is read once by the gist encoder and cached on disk, so the prompt is the
conversation only; the last line compares it with what pasting every schema into each request would cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index.core.agent.workflow import AgentStream, FunctionAgent, ToolCallResult
from llama_index.core.tools import FunctionTool, ToolMetadata
from toolformer_router.adapters.llamaindex import ToolFormerLLM, to_router_tool

CUSTOM_TOOLS = Path(__file__).with_name("custom_tools.json")


def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather for a city."""
    return f"18 degrees {unit}, sunny, in {city}"


def convert_currency(amount: float, source: str, target: str) -> str:
    """Convert an amount of money between two ISO currency codes."""
    return f"{amount} {source} = {round(amount * 1.08, 2)} {target}"


def add_calendar_event(title: str, date: str, time: str = "09:00") -> str:
    """Add an event to the user's calendar (date as YYYY-MM-DD)."""
    return f"added '{title}' on {date} at {time}"


@dataclass
class SchemaMetadata(ToolMetadata):
    """Tool metadata carrying a JSON Schema as is (for tools defined as JSON rather than Python functions)."""

    parameters: dict[str, Any] = field(default_factory=dict)

    def get_parameters_dict(self) -> dict:
        return self.parameters


def schema_tool(spec: dict[str, Any]) -> FunctionTool:
    spec = spec.get("function", spec)
    metadata = SchemaMetadata(name=spec["name"], description=spec.get("description", ""), fn_schema=None,
                              parameters=spec.get("parameters") or spec.get("inputSchema") or {"type": "object"})
    return FunctionTool(fn=lambda **kwargs: f"{spec['name']} done: {json.dumps(kwargs)}", metadata=metadata)


def make_tools(n: int) -> list[FunctionTool]:
    """Three real functions, then the tools of custom_tools.json, `n` in all."""
    specs = json.loads(CUSTOM_TOOLS.read_text())
    real = [FunctionTool.from_defaults(f) for f in (get_weather, convert_currency, add_calendar_event)]
    return (real + [schema_tool(s) for s in specs])[:n]


async def run(question: str, n_tools: int = 200, llm: ToolFormerLLM | None = None, tool_choice: str | None = None,
              max_iterations: int = 4) -> dict[str, Any]:
    """Run the agent once (`tool_choice` on its first step); returns the calls, the answer and prompt tokens
    (actual vs pasted schemas). After `max_iterations` steps the agent answers without tools."""
    llm, tools = llm or ToolFormerLLM(), make_tools(n_tools)
    agent = FunctionAgent(tools=tools, llm=llm, initial_tool_choice=tool_choice, early_stopping_method="generate",
                          timeout=600)
    handler = agent.run(user_msg=question, max_iterations=max_iterations)
    calls, usages = [], []
    async for event in handler.stream_events():
        if isinstance(event, ToolCallResult):
            calls.append((event.tool_name, event.tool_kwargs, str(event.tool_output.content)))
        elif isinstance(event, AgentStream) and isinstance(event.raw, dict):
            usages.append(event.raw["usage"])
    answer = await handler
    schema_tokens = llm.router.count_tokens(json.dumps([to_router_tool(t) for t in tools]))
    prompt_tokens = sum(u["input_tokens"] for u in usages)
    return {"calls": calls, "answer": str(answer.response.content), "routes": len(usages),
            "prompt_tokens": prompt_tokens,
            "pasted_prompt_tokens": prompt_tokens + schema_tokens * sum(u["active_tools"] > 0 for u in usages)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default="What's the weather in Lyon, in fahrenheit?")
    parser.add_argument("--tools", type=int, default=200)
    parser.add_argument("--require-call", action="store_true", help="the first step must call a tool")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.question, args.tools, tool_choice="required" if args.require_call else None))
    for name, kwargs, output in result["calls"]:
        print(f"call   {name}({json.dumps(kwargs)}) -> {output}")
    print(f"answer {result['answer']}")
    print(f"prompt tokens over {result['routes']} routes: {result['prompt_tokens']} "
          f"(pasting all {args.tools} schemas: {result['pasted_prompt_tokens']})")
    return result


if __name__ == "__main__":
    main()
