"""A LangGraph ReAct agent over 200 tools with toolformer-router as its chat model (default checkpoint, CPU is fine).

    python examples/langchain_agent.py ["What's the weather in Lisbon?" ...] [--tools 200] [--device cpu]

The tools are those of `examples/custom_tools.json`: three run real Python functions (`StructuredTool.from_function`),
the others are `StructuredTool`s whose `args_schema` is the tool's JSON Schema and which return a canned "ok". The
schemas never enter the prompt: each is read once by the gist encoder and cached on disk, so the prompt is the
conversation only; the last line compares it with what pasting every schema into each request would cost.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.prebuilt import create_react_agent
from toolformer_router.adapters.langchain import ChatToolFormer

CUSTOM_TOOLS = Path(__file__).with_name("custom_tools.json")
QUERIES = ["What's the weather in Lisbon right now, in celsius?", "Convert 250 US dollars to euros.",
           "Our dinner bill is 86.40 for 4 people. What does each pay with an 18% tip?"]
RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "CHF": 0.88, "CAD": 1.36, "AUD": 1.52}  # per USD


def get_current_weather(city: str, unit: str = "celsius") -> str:
    return f"{18 if unit == 'celsius' else 64} degrees {unit}, sunny, in {city}"


def convert_currency_amount(amount: float, from_currency: str, to_currency: str) -> str:
    if from_currency not in RATES or to_currency not in RATES:
        return f"no rate for {from_currency} -> {to_currency}; known currencies: {', '.join(RATES)}"
    return f"{amount} {from_currency} = {round(amount / RATES[from_currency] * RATES[to_currency], 2)} {to_currency}"


def calculate_tip(bill_amount: float, tip_percent: float = 15, people: int = 1) -> str:
    total = bill_amount * (1 + tip_percent / 100)
    return f"total {total:.2f} with a {tip_percent}% tip: {total / max(people, 1):.2f} each for {people}"


REAL = {f.__name__: f for f in (get_current_weather, convert_currency_amount, calculate_tip)}


def canned(name: str):
    return lambda **arguments: json.dumps({"status": "ok", "tool": name, "arguments": arguments})


def make_tools(n: int) -> list[StructuredTool]:
    """The tools of custom_tools.json as LangChain tools, the real ones first, `n` in all."""
    specs = [tool["function"] for tool in json.loads(CUSTOM_TOOLS.read_text())]
    specs = sorted(specs, key=lambda spec: spec["name"] not in REAL)[:n]  # stable: JSON order otherwise
    return [StructuredTool.from_function(REAL[s["name"]], name=s["name"], description=s["description"],
                                         args_schema=s["parameters"]) if s["name"] in REAL else
            StructuredTool(name=s["name"], description=s["description"], args_schema=s["parameters"],
                           func=canned(s["name"]))
            for s in specs]


def run(model: ChatToolFormer, queries: list[str], tool_count: int = 200, max_steps: int = 3) -> dict[str, Any]:
    """Run the agent once per query (at most `max_steps` model turns each); returns the calls, the answers and
    the prompt tokens (actual vs pasting every schema into each turn)."""
    tools = make_tools(tool_count)
    agent = create_react_agent(model, tools)
    router = model.get_router()
    schemas = router.prepare_tools([convert_to_openai_tool(tool) for tool in tools])
    schema_tokens = sum(router.count_tokens(router.tool_text(tool)) for tool in schemas)
    runs, routes, prompt_tokens = [], 0, 0
    for query in queries:
        state = agent.invoke({"messages": [HumanMessage(query)]}, {"recursion_limit": 2 * max_steps})
        outputs = {m.tool_call_id: m.content for m in state["messages"] if isinstance(m, ToolMessage)}
        turns = [m for m in state["messages"] if isinstance(m, AIMessage) and m.usage_metadata]  # one per route
        calls = [(c["name"], c["args"], outputs.get(c["id"])) for m in turns for c in m.tool_calls]
        routes += len(turns)
        prompt_tokens += sum(m.usage_metadata["input_tokens"] for m in turns)
        runs.append({"query": query, "calls": calls, "answer": state["messages"][-1].content})
    return {"runs": runs, "routes": routes, "prompt_tokens": prompt_tokens, "schema_tokens_per_route": schema_tokens,
            "pasted_prompt_tokens": prompt_tokens + schema_tokens * routes}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("queries", nargs="*", default=QUERIES)
    parser.add_argument("--tools", type=int, default=200)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when available)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args(argv)
    result = run(ChatToolFormer(device=args.device, max_new_tokens=args.max_new_tokens), args.queries, args.tools)
    for item in result["runs"]:
        print(f"> {item['query']}")
        for name, arguments, output in item["calls"]:
            print(f"  call   {name}({json.dumps(arguments)}) -> {output}")
        print(f"  answer {item['answer']!r}")
    print(f"prompt tokens over {result['routes']} routes: {result['prompt_tokens']} "
          f"(pasting all {args.tools} schemas: {result['pasted_prompt_tokens']})")
    return result


if __name__ == "__main__":
    main()
