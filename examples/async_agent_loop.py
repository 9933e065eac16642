"""A plain asyncio agent loop on `ToolRouter.aroute`: concurrent sessions over the 200 tools of custom_tools.json.

    python examples/async_agent_loop.py [--sessions 50] [--max-steps 3] [--tools 200]

Each session: query -> route -> run the calls (ten tools are real Python functions below, the rest return a canned
"ok") -> results back as `role="tool"` messages -> route again, until a text answer or `--max-steps` routes.
Concurrent `aroute` calls are decoded together in batches. Prints latency, throughput and prompt tokens saved.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import datetime as dt
import json
import math
import operator
import re
import time
import zlib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from toolformer_router import ToolRouter

CUSTOM_TOOLS = Path(__file__).with_name("custom_tools.json")
QUERIES = [
    "What's the weather in Lisbon right now, in celsius?", "Give me a 5-day forecast for Oslo in fahrenheit.",
    "It's 2025-03-14T09:30 in New York. What time is that in Tokyo?", "Convert 250 US dollars to euros.",
    "How many days are there between 2025-01-15 and 2025-04-01?", "How many pounds is 72 kilograms?",
    "What's the monthly payment on a 300000 mortgage at 4.5% over 30 years?", "What is (12.5 * 4) / 3 + 2 ** 5?",
    "Our dinner bill is 86.40 for 4 people. What does each pay with an 18% tip?", "Hi! How are you today?",
    "How long does this take to read: 'The quick brown fox jumps over the lazy dog. It barked twice.'",
    "Email anna@example.com that the quarterly report is ready.", "Turn off the lights in the kitchen.",
]

# ----------------------------------------------------------------- ten real tools (deterministic stand-ins)
RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "CHF": 0.88, "CAD": 1.36, "AUD": 1.52}  # per USD
UNITS = {"m": ("length", 1), "km": ("length", 1000), "mi": ("length", 1609.344), "ft": ("length", 0.3048),
         "in": ("length", 0.0254), "kg": ("mass", 1), "lb": ("mass", 0.45359237), "g": ("mass", 0.001),
         "oz": ("mass", 0.028349523125), "l": ("volume", 1), "gal": ("volume", 3.785411784),
         "c": ("temperature", (1, 273.15)), "f": ("temperature", (5 / 9, 255.372222)), "k": ("temperature", (1, 0))}
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
             ast.Mod: operator.mod, ast.Pow: lambda a, b: a**b if abs(b) <= 64 else math.inf, ast.USub: operator.neg}


def get_current_weather(city: str, unit: str = "celsius") -> dict:
    celsius = zlib.crc32(city.lower().encode()) % 35 - 5  # a stable fake reading per city
    return {"city": city, "temperature": celsius if unit == "celsius" else round(celsius * 9 / 5 + 32), "unit": unit,
            "sky": ("sunny", "cloudy", "rainy", "windy")[celsius % 4]}

def get_weather_forecast(city: str, days: int = 3, unit: str = "celsius") -> dict:
    today = get_current_weather(city, unit)["temperature"]
    return {"city": city, "unit": unit, "daily_highs": [today + day % 3 - 1 for day in range(days)]}

def convert_timezone(datetime: str, from_timezone: str, to_timezone: str) -> dict:
    moment = dt.datetime.fromisoformat(datetime).replace(tzinfo=ZoneInfo(from_timezone))
    return {"datetime": moment.astimezone(ZoneInfo(to_timezone)).strftime("%Y-%m-%dT%H:%M"), "timezone": to_timezone}

def days_between_dates(start_date: str, end_date: str, include_end_date: bool = False) -> dict:
    start, end = dt.date.fromisoformat(start_date), dt.date.fromisoformat(end_date)
    weeks, rest = divmod(max(days := (end - start).days + include_end_date, 0), 7)
    return {"days": days, "weekdays": 5 * weeks + sum((start + dt.timedelta(7 * weeks + i)).weekday() < 5
                                                      for i in range(rest))}

def convert_currency_amount(amount: float, from_currency: str, to_currency: str) -> dict:
    return {"amount": round(amount / RATES[from_currency] * RATES[to_currency], 2), "currency": to_currency}

def calculate_loan_payment(principal: float, annual_rate_percent: float, years: int) -> dict:
    rate, months = annual_rate_percent / 1200, years * 12
    monthly = principal / months if rate == 0 else principal * rate / (1 - (1 + rate) ** -months)
    return {"monthly_payment": round(monthly, 2), "total_interest": round(monthly * months - principal, 2)}

def calculate_tip(bill_amount: float, tip_percent: float = 15, people: int = 1) -> dict:
    total = bill_amount * (1 + tip_percent / 100)
    return {"tip": round(total - bill_amount, 2), "total": round(total, 2), "per_person": round(total / people, 2)}

def text_statistics(text: str) -> dict:
    words, sentences = len(text.split()), len([s for s in re.split(r"[.!?]+", text) if s.strip()])
    return {"words": words, "sentences": sentences, "characters": len(text), "reading_seconds": round(words / 4)}

def calculate(expression: str) -> dict:
    def value(node: ast.AST) -> float:  # numbers and arithmetic only: never `eval`
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, (ast.BinOp, ast.UnaryOp)) and type(node.op) in OPERATORS:
            operands = (node.left, node.right) if isinstance(node, ast.BinOp) else (node.operand,)
            return OPERATORS[type(node.op)](*map(value, operands))
        raise ValueError(f"not an arithmetic expression: {expression!r}")
    return {"result": value(ast.parse(expression, mode="eval").body)}

def convert_units(value: float, from_unit: str, to_unit: str) -> dict:
    (kind, a), (other, b) = UNITS[from_unit], UNITS[to_unit]
    if kind != other:
        raise ValueError(f"cannot convert {kind} to {other}")
    converted = (value * a[0] + a[1] - b[1]) / b[0] if kind == "temperature" else value * a / b  # via kelvin
    return {"value": round(converted, 4), "unit": to_unit}


REAL_TOOLS = {f.__name__: f for f in (get_current_weather, get_weather_forecast, convert_timezone, days_between_dates,
                                      convert_currency_amount, calculate_loan_payment, calculate_tip, text_statistics,
                                      calculate, convert_units)}


def execute(name: str, arguments: dict[str, Any]) -> str:
    """Run one call. Arguments always match the schema, but a value can be outside a function's domain."""
    try:
        return json.dumps(REAL_TOOLS[name](**arguments) if name in REAL_TOOLS else {"status": "ok", "tool": name})
    except (ArithmeticError, LookupError, TypeError, ValueError) as error:  # fed back as the tool's result
        return json.dumps({"error": f"{type(error).__name__}: {error}"})


# ----------------------------------------------------------------- the loop
async def session(router: Any, tools: list, query: str, max_steps: int, max_new_tokens: int, routes: list) -> dict:
    messages: list[dict[str, Any]] = [{"role": "user", "content": query}]
    for _ in range(max_steps):
        started = time.perf_counter()
        result = await router.aroute(messages, tools, max_new_tokens=max_new_tokens)
        routes.append((time.perf_counter() - started, result.usage.input_tokens))
        if not result.calls:
            return {"query": query, "messages": messages, "answer": result.text}
        messages.append({"role": "assistant", "content": "", "tool_calls": [c.model_dump() for c in result.calls]})
        messages += [{"role": "tool", "name": c.name, "content": execute(c.name, c.arguments)} for c in result.calls]
    return {"query": query, "messages": messages, "answer": None}  # out of steps


async def run(router: Any, tools: list, sessions: int = 50, max_steps: int = 3, *, max_new_tokens: int = 96) -> dict:
    """Run `sessions` conversations concurrently; returns them with the statistics."""
    active = router.prepare_tools(tools)  # normalised once, reused by every request
    schema_tokens = sum(router.count_tokens(router.tool_text(t)) for t in active)
    await router.aroute("warm-up", active, tool_choice="none", max_new_tokens=1)  # encodes the tools not cached yet
    routes: list[tuple[float, int]] = []
    started = time.perf_counter()
    conversations = await asyncio.gather(*(session(router, active, QUERIES[i % len(QUERIES)], max_steps,
                                                   max_new_tokens, routes) for i in range(sessions)))
    seconds, latencies = time.perf_counter() - started, sorted(latency for latency, _ in routes)
    calls = [m["name"] for c in conversations for m in c["messages"] if m["role"] == "tool"]
    prompt_tokens = sum(tokens for _, tokens in routes)
    return {"conversations": conversations, "routes": len(routes), "seconds": seconds,
            "routes_per_s": len(routes) / seconds, "latency_p50_s": latencies[math.ceil(0.50 * len(routes)) - 1],
            "latency_p95_s": latencies[math.ceil(0.95 * len(routes)) - 1], "tool_calls": len(calls),
            "real_tool_calls": sum(name in REAL_TOOLS for name in calls), "prompt_tokens": prompt_tokens,
            "schema_tokens_per_route": schema_tokens, "pasted_prompt_tokens": prompt_tokens + schema_tokens * len(routes)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=3, help="routes per session at most")
    parser.add_argument("--tools", type=int, default=200, help="the first N tools of custom_tools.json")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    args = parser.parse_args(argv)
    router, tools = ToolRouter.from_pretrained("default"), json.loads(CUSTOM_TOOLS.read_text())[: args.tools]
    try:
        stats = asyncio.run(run(router, tools, args.sessions, args.max_steps, max_new_tokens=args.max_new_tokens))
    finally:
        router.close()
    for conversation in stats["conversations"][:2]:
        steps = [f"{m['name']} -> {m['content']}" for m in conversation["messages"] if m["role"] == "tool"]
        print(f"> {conversation['query']}\n  " + "\n  ".join(steps + [f"answer: {conversation['answer']!r}"]))
    print(f"{args.sessions} sessions, {stats['routes']} routes, {stats['tool_calls']} tool calls "
          f"({stats['real_tool_calls']} to real functions) in {stats['seconds']:.1f}s: {stats['routes_per_s']:.2f} "
          f"routes/s, latency p50 {stats['latency_p50_s']:.2f}s p95 {stats['latency_p95_s']:.2f}s")
    print(f"prompt tokens: {stats['prompt_tokens']}; pasting all {len(tools)} schemas: {stats['pasted_prompt_tokens']} "
          f"({stats['pasted_prompt_tokens'] - stats['prompt_tokens']} saved, {stats['schema_tokens_per_route']} per route)")
    return stats


if __name__ == "__main__":
    main()
