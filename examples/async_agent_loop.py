"""A plain asyncio agent loop on `ToolRouter.aroute`: concurrent sessions over the 200 tools of custom_tools.json.

    python examples/async_agent_loop.py [--sessions 50] [--max-steps 3] [--require-call]

Each session: query -> route -> run the calls (nine are real Python functions below, the rest return a canned "ok")
-> results back as `role="tool"` messages -> route again, until a text answer or `--max-steps` routes. Concurrent
`aroute` calls are decoded together in batches. Prints route latency, throughput and the prompt tokens saved.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
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
    "What's the monthly payment on a 300000 mortgage at 4.5% over 30 years?", "Hi! How are you today?",
    "Our dinner bill is 86.40 for 4 people. What does each pay with an 18% tip?", "Turn off the kitchen lights.",
    "How many words are in 'The quick brown fox jumps over the lazy dog.'?", "Email anna@example.com: report ready.",
]

# ----------------------------------------------------------------- nine real tools (deterministic stand-ins)
RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "CHF": 0.88, "CAD": 1.36, "AUD": 1.52}  # per USD
UNITS = {"m": ("length", 1), "km": ("length", 1000), "mi": ("length", 1609.344), "ft": ("length", 0.3048),
         "in": ("length", 0.0254), "kg": ("mass", 1), "lb": ("mass", 0.45359237), "g": ("mass", 0.001),
         "oz": ("mass", 0.028349523125), "l": ("volume", 1), "gal": ("volume", 3.785411784),
         "c": ("temperature", (1, 273.15)), "f": ("temperature", (5 / 9, 255.372222)), "k": ("temperature", (1, 0))}


def get_current_weather(city: str, unit: str = "celsius") -> dict:
    celsius = zlib.crc32(city.lower().encode()) % 25 + 5  # a stable fake reading per city
    return {"city": city, "temperature": celsius if unit == "celsius" else round(celsius * 9 / 5 + 32), "unit": unit,
            "sky": ("sunny", "cloudy", "rainy", "windy")[celsius % 4]}

def get_weather_forecast(city: str, days: int = 3, unit: str = "celsius") -> dict:
    today = get_current_weather(city, unit)["temperature"]
    return {"city": city, "unit": unit, "daily_highs": [today + day % 3 - 1 for day in range(days)]}

def convert_timezone(datetime: str, from_timezone: str, to_timezone: str) -> dict:
    moment = dt.datetime.fromisoformat(datetime).replace(tzinfo=ZoneInfo(from_timezone))
    return {"datetime": moment.astimezone(ZoneInfo(to_timezone)).strftime("%Y-%m-%dT%H:%M"), "timezone": to_timezone}

def days_between_dates(start_date: str, end_date: str, include_end_date: bool = False) -> dict:
    return {"days": (dt.date.fromisoformat(end_date) - dt.date.fromisoformat(start_date)).days + include_end_date}

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
    return {"words": len(text.split()), "characters": len(text), "sentences": len(re.findall(r"[.!?]+(\s|$)", text))}

def convert_units(value: float, from_unit: str, to_unit: str) -> dict:
    (kind, a), (other, b) = UNITS[from_unit], UNITS[to_unit]
    if kind != other:
        raise ValueError(f"cannot convert {kind} to {other}")
    converted = (a[0] * value + a[1] - b[1]) / b[0] if kind == "temperature" else value * a / b  # kelvin = a0*v + a1
    return {"value": round(converted, 4), "unit": to_unit}


REAL_TOOLS = {f.__name__: f for f in (get_current_weather, get_weather_forecast, convert_timezone, days_between_dates,
                                      convert_currency_amount, calculate_loan_payment, calculate_tip, text_statistics,
                                      convert_units)}


def execute(name: str, arguments: dict[str, Any]) -> str:
    try:  # arguments always match the schema, but a value can be outside a function's domain
        return json.dumps(REAL_TOOLS[name](**arguments) if name in REAL_TOOLS else {"status": "ok", "tool": name})
    except (ArithmeticError, LookupError, TypeError, ValueError) as error:  # fed back as the tool's result
        return json.dumps({"error": f"{type(error).__name__}: {error}"})


async def session(router: Any, tools: list, query: str, max_steps: int, routes: list, choice: Any, budget: int) -> dict:
    messages: list[dict[str, Any]] = [{"role": "user", "content": query}]
    for step in range(max_steps):
        started = time.perf_counter()
        result = await router.aroute(messages, tools, tool_choice=None if step else choice, max_new_tokens=budget)
        routes.append((time.perf_counter() - started, result.usage.input_tokens))
        if not result.calls:
            return {"query": query, "messages": messages, "answer": result.text}
        messages.append({"role": "assistant", "content": "", "tool_calls": [c.model_dump() for c in result.calls]})
        messages += [{"role": "tool", "name": c.name, "content": execute(c.name, c.arguments)} for c in result.calls]
    return {"query": query, "messages": messages, "answer": None}  # out of steps


async def run(router: Any, tools: list, sessions: int = 50, max_steps: int = 3, *, require_call: bool = False,
              max_new_tokens: int = 96) -> dict:
    """Run `sessions` conversations concurrently; returns them with the statistics."""
    active = router.prepare_tools(tools)  # normalised once, reused by every request
    schema_tokens = sum(router.count_tokens(router.tool_text(t)) for t in active)
    await router.aroute("warm-up", active, tool_choice="none", max_new_tokens=1)  # encodes the tools not cached yet
    routes: list[tuple[float, int]] = []
    started = time.perf_counter()
    conversations = await asyncio.gather(*(session(router, active, QUERIES[i % len(QUERIES)], max_steps, routes,
                                                   "required" if require_call else None, max_new_tokens)
                                           for i in range(sessions)))
    seconds, latencies = time.perf_counter() - started, sorted(latency for latency, _ in routes)
    calls = [m["name"] for c in conversations for m in c["messages"] if m["role"] == "tool"]
    prompt_tokens = sum(tokens for _, tokens in routes)
    return {"conversations": conversations, "routes": len(routes), "seconds": seconds, "tool_calls": len(calls),
            "routes_per_s": len(routes) / seconds, "latency_p50_s": latencies[math.ceil(0.50 * len(routes)) - 1],
            "latency_p95_s": latencies[math.ceil(0.95 * len(routes)) - 1], "prompt_tokens": prompt_tokens,
            "real_tool_calls": sum(name in REAL_TOOLS for name in calls), "schema_tokens_per_route": schema_tokens,
            "pasted_prompt_tokens": prompt_tokens + schema_tokens * len(routes)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=3, help="routes per session at most")
    parser.add_argument("--require-call", action="store_true", help="each session's first route must call a tool")
    args = parser.parse_args(argv)
    router, tools = ToolRouter.from_pretrained("default"), json.loads(CUSTOM_TOOLS.read_text())
    try:
        stats = asyncio.run(run(router, tools, args.sessions, args.max_steps, require_call=args.require_call))
    finally:
        router.close()
    print(f"{args.sessions} sessions, {stats['routes']} routes, {stats['tool_calls']} tool calls "
          f"({stats['real_tool_calls']} to real functions) in {stats['seconds']:.1f}s: {stats['routes_per_s']:.2f} "
          f"routes/s, latency p50 {stats['latency_p50_s']:.2f}s p95 {stats['latency_p95_s']:.2f}s")
    print(f"prompt tokens: {stats['prompt_tokens']}; pasting all {len(tools)} schemas: {stats['pasted_prompt_tokens']} "
          f"({stats['pasted_prompt_tokens'] - stats['prompt_tokens']} saved; {stats['schema_tokens_per_route']}/route)")
    return stats


if __name__ == "__main__":
    main()
