"""Agent loops with tools that run: how many requests end with exactly the right calls, in four ways of driving
the router.

    python benchmarks/bench_agents.py [--checkpoint default] [--frameworks loop,langchain,llamaindex,openai]
                                      [--limit N] [--out FILE]

Ten everyday tools (`TOOLS`: plain Python functions with their JSON Schemas, shared by every driver) and 36 requests
written for this benchmark (`REQUESTS`, none from BFCL): single calls phrased the ways people ask, requests that need
two calls, and requests that need no tool. Drivers, each given `MAX_STEPS` model turns:

- `loop`: a plain loop over `ToolRouter.route` with OpenAI-style messages;
- `langchain`: `langchain.agents.create_agent` over `ChatToolFormer` and `StructuredTool`s;
- `llamaindex`: `FunctionAgent` over `ToolFormerLLM` and `FunctionTool`s;
- `openai`: the `openai` client in a loop against `toolformer-router serve` (a subprocess).

The first three share one in-process router. Every tool execution is logged by the tool wrapper itself. A request
is correct when the executed calls match the expected ones exactly (each once, no other call), the step limit was not
reached and a non-empty text answer came back. Prints a JSON summary and a table; writes the summary and every record
to `--out` (default benchmarks/results/agents/<checkpoint name>.json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import itertools
import json
import math
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import machine, print_table  # noqa: E402

import toolformer_router  # noqa: E402
from toolformer_router.training.metrics import wilson_interval  # noqa: E402

MAX_STEPS = 6
"""Model turns per request in every driver; a request whose last allowed turn still calls tools hit the limit."""
FRAMEWORKS = ("loop", "langchain", "llamaindex", "openai")


# ----------------------------------------------------------------------------------- ten tools that run
RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "CHF": 0.88, "CAD": 1.36, "AUD": 1.52}  # per USD
STOCKS = {"AAPL": 189.84, "MSFT": 415.5, "GOOGL": 171.2, "NVDA": 121.4, "TSLA": 177.9, "AMZN": 185.1}
PHRASES = {("hello", "spanish"): "hola", ("hello", "german"): "hallo", ("hello", "french"): "bonjour",
           ("good morning", "spanish"): "buenos días", ("good morning", "german"): "guten Morgen",
           ("thank you", "french"): "merci", ("thank you", "italian"): "grazie", ("goodbye", "japanese"): "sayōnara"}
OUTBOX: list[dict[str, str]] = []
"""The emails `send_email` has sent in this process."""


def _stable(text: str, n: int) -> int:
    """A number in [0, n) fixed by `text` (the same in every run and driver)."""
    return zlib.crc32(text.strip().lower().encode()) % n


def get_weather(city: str, unit: str = "celsius") -> dict:
    """Current weather for a city: temperature, sky and wind."""
    celsius = _stable(city, 25) + 5
    temperature = celsius if unit == "celsius" else round(celsius * 9 / 5 + 32)
    return {"city": city, "temperature": temperature, "unit": unit,
            "sky": ("sunny", "cloudy", "rainy", "windy")[celsius % 4], "wind_kmh": _stable(city + "wind", 40)}


def convert_currency(amount: float, from_currency: str, to_currency: str) -> dict:
    """Convert an amount of money from one currency to another at today's exchange rate."""
    source, target = from_currency.upper(), to_currency.upper()
    if source not in RATES or target not in RATES:
        return {"error": f"no rate for {source} -> {target}; known currencies: {', '.join(RATES)}"}
    return {"amount": round(amount / RATES[source] * RATES[target], 2), "currency": target}


def add(a: float, b: float) -> dict:
    """Add two numbers and return their sum."""
    return {"result": a + b}


def multiply(a: float, b: float) -> dict:
    """Multiply two numbers and return their product."""
    return {"result": a * b}


def send_email(to: str, subject: str, body: str) -> dict:
    """Send an email from the user's account."""
    OUTBOX.append({"to": to, "subject": subject, "body": body})
    return {"status": "sent", "to": to, "message_id": f"msg-{_stable(to + subject + body, 10**6):06d}"}


def get_stock_price(symbol: str) -> dict:
    """The latest trading price of a company's shares, by ticker symbol."""
    symbol = symbol.upper()
    price = STOCKS.get(symbol, 10 + _stable(symbol, 49000) / 100)
    return {"symbol": symbol, "price": price, "currency": "USD"}


def get_order_status(order_id: str) -> dict:
    """Look up where a customer's order is: its shipping status and expected delivery date."""
    status = ("processing", "shipped", "out for delivery", "delivered")[_stable(order_id, 4)]
    return {"order_id": order_id, "status": status, "expected_delivery": f"2026-06-{_stable(order_id, 28) + 1:02d}"}


def set_timer(minutes: float, label: str | None = None) -> dict:
    """Start a countdown timer that rings after the given number of minutes."""
    return {"status": "started", "minutes": minutes, "label": label}


def translate_text(text: str, target_language: str) -> dict:
    """Translate a word or sentence into another language."""
    key = (text.strip().strip(".!?'\"").lower(), target_language.strip().lower())
    return {"translation": PHRASES.get(key, f"[{target_language}] {text}"), "language": target_language}


def create_calendar_event(title: str, date: str, time: str | None = None) -> dict:
    """Add an event to the user's calendar."""
    return {"status": "created", "event_id": f"evt-{_stable(title + date, 10**6):06d}", "title": title,
            "date": date, "time": time}


@dataclass(frozen=True)
class Tool:
    """A tool every driver offers: the function that runs and its JSON Schema (description from the docstring)."""

    function: Callable[..., dict]
    parameters: dict[str, Any]

    @property
    def name(self) -> str:
        return self.function.__name__

    @property
    def description(self) -> str:
        return inspect.cleandoc(self.function.__doc__ or "")

    def openai(self) -> dict[str, Any]:
        """The tool as an OpenAI `tools=` entry."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


def _schema(required: Sequence[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


TOOLS: dict[str, Tool] = {tool.name: tool for tool in (
    Tool(get_weather, _schema(["city"], city={"type": "string", "description": "City name, e.g. Oslo"},
                              unit={"type": "string", "enum": ["celsius", "fahrenheit"],
                                    "description": "Temperature unit (default celsius)"})),
    Tool(convert_currency, _schema(["amount", "from_currency", "to_currency"],
                                   amount={"type": "number", "description": "Amount of money to convert"},
                                   from_currency={"type": "string", "description": "ISO 4217 code, e.g. USD"},
                                   to_currency={"type": "string", "description": "ISO 4217 code, e.g. EUR"})),
    Tool(add, _schema(["a", "b"], a={"type": "number", "description": "First number"},
                      b={"type": "number", "description": "Second number"})),
    Tool(multiply, _schema(["a", "b"], a={"type": "number", "description": "First factor"},
                           b={"type": "number", "description": "Second factor"})),
    Tool(send_email, _schema(["to", "subject", "body"],
                             to={"type": "string", "description": "Recipient email address"},
                             subject={"type": "string", "description": "Subject line"},
                             body={"type": "string", "description": "Message text"})),
    Tool(get_stock_price, _schema(["symbol"], symbol={"type": "string", "description": "Ticker symbol, e.g. AAPL"})),
    Tool(get_order_status, _schema(["order_id"], order_id={"type": "string",
                                                           "description": "Order number, e.g. A-1042"})),
    Tool(set_timer, _schema(["minutes"], minutes={"type": "number", "description": "Duration in minutes"},
                            label={"type": "string", "description": "What the timer is for"})),
    Tool(translate_text, _schema(["text", "target_language"],
                                 text={"type": "string", "description": "Text to translate"},
                                 target_language={"type": "string", "description": "Language name, e.g. Spanish"})),
    Tool(create_calendar_event, _schema(["title", "date"], title={"type": "string", "description": "Event title"},
                                        date={"type": "string", "description": "Date as YYYY-MM-DD"},
                                        time={"type": "string", "description": "Start time as HH:MM (24 h)"})),
)}
SYMMETRIC = {"add": ("a", "b"), "multiply": ("a", "b")}
"""Tools whose two arguments may come in either order."""


class ToolBox:
    """Runs the tools by name and logs every execution (what the scoring reads)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def execute(self, name: str, arguments: dict[str, Any]) -> str:
        """Log the call, run it, return its result as JSON (an error as `{"error": ...}`, as a tool would)."""
        self.calls.append(Call(name, dict(arguments)))
        try:
            return json.dumps(TOOLS[name].function(**arguments))
        except (KeyError, TypeError, ValueError, ArithmeticError) as error:
            return json.dumps({"error": f"{type(error).__name__}: {error}"})


# ----------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class Call:
    """A tool call: executed (all its arguments) or expected (only the arguments to check; a tuple value lists
    the accepted alternatives)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    id: str
    text: str
    expected: tuple[Call, ...] = ()

    @property
    def kind(self) -> str:
        return "none" if not self.expected else "single" if len(self.expected) == 1 else "multi"


def _single(id_: str, request: str, name: str, /, **arguments: Any) -> Request:
    return Request(id_, request, (Call(name, arguments),))


REQUESTS: list[Request] = [
    _single("add_plus", "What is 17 plus 25?", "add", a=17, b=25),
    _single("add_symbol", "What's 3 + 4?", "add", a=3, b=4),
    _single("add_sum", "Add 1250 and 380 for me.", "add", a=1250, b=380),
    _single("multiply_by", "Multiply 12 by 9.", "multiply", a=12, b=9),
    _single("multiply_times", "How much is 6 times 7?", "multiply", a=6, b=7),
    _single("currency_codes", "Convert 100 USD to EUR", "convert_currency",
            amount=100, from_currency="USD", to_currency="EUR"),
    _single("currency_names", "How many yen do I get for 50 British pounds?", "convert_currency",
            amount=50, from_currency="GBP", to_currency="JPY"),
    _single("currency_change", "Change 75 euros into Swiss francs.", "convert_currency",
            amount=75, from_currency="EUR", to_currency="CHF"),
    _single("weather_plain", "How's the weather in Oslo", "get_weather", city="Oslo"),
    _single("weather_unit", "Is it raining in Seattle right now? Give me the temperature in fahrenheit.",
            "get_weather", city="Seattle", unit="fahrenheit"),
    _single("weather_umbrella", "Do I need an umbrella in London today?", "get_weather", city="London"),
    _single("order_where", "Where is my order A-1042?", "get_order_status", order_id="A-1042"),
    _single("order_shipped", "Has my package 88213 shipped yet?", "get_order_status", order_id=("88213", "#88213")),
    _single("timer_remind", "remind me in 10 minutes to stretch", "set_timer", minutes=10),
    _single("timer_plain", "Set a timer for 25 minutes.", "set_timer", minutes=25),
    _single("stock_ticker", "What's the price of TSLA stock?", "get_stock_price", symbol="TSLA"),
    _single("stock_share", "How much is one share of MSFT right now?", "get_stock_price", symbol="MSFT"),
    _single("translate_into", "Translate 'good morning' into Spanish.", "translate_text",
            text="good morning", target_language="Spanish"),
    _single("translate_say", "How do you say 'thank you' in French?", "translate_text",
            text="thank you", target_language="French"),
    _single("email_say", "Email bob@example.com to say the meeting moved to 3pm.", "send_email",
            to="bob@example.com"),
    _single("email_note", "Drop a note to alice@example.org with the subject 'Invoice' saying it has been paid.",
            "send_email", to="alice@example.org", subject="Invoice"),
    _single("calendar_put", "Put 'Dentist' on my calendar for 2026-03-14 at 09:30.", "create_calendar_event",
            title="Dentist", date="2026-03-14", time="09:30"),
    _single("calendar_schedule", "Schedule a team lunch on 2026-05-02.", "create_calendar_event",
            title=("team lunch", "lunch"), date="2026-05-02"),
    Request("two_weathers", "What's the weather in Paris and in Rome?",
            (Call("get_weather", {"city": "Paris"}), Call("get_weather", {"city": "Rome"}))),
    Request("convert_then_email", "Convert 200 USD to GBP and email the result to tom@example.com.",
            (Call("convert_currency", {"amount": 200, "from_currency": "USD", "to_currency": "GBP"}),
             Call("send_email", {"to": "tom@example.com"}))),
    Request("two_stocks", "What are AAPL and GOOGL trading at?",
            (Call("get_stock_price", {"symbol": "AAPL"}), Call("get_stock_price", {"symbol": "GOOGL"}))),
    Request("two_orders", "Check the status of orders B-2001 and B-2002.",
            (Call("get_order_status", {"order_id": "B-2001"}), Call("get_order_status", {"order_id": "B-2002"}))),
    Request("timer_and_translate", "Set a 5 minute timer and translate 'hello' into German.",
            (Call("set_timer", {"minutes": 5}),
             Call("translate_text", {"text": "hello", "target_language": "German"}))),
    Request("multiply_and_add", "What is 8 times 12, and what is 15 plus 27?",
            (Call("multiply", {"a": 8, "b": 12}), Call("add", {"a": 15, "b": 27}))),
    Request("event_and_weather", "Add 'Flight to Berlin' to my calendar on 2026-07-01 and tell me the weather in "
            "Berlin.", (Call("create_calendar_event", {"title": "Flight to Berlin", "date": "2026-07-01"}),
                        Call("get_weather", {"city": "Berlin"}))),
    Request("greeting", "Hi there!"),
    Request("thanks", "Thanks, that's all!"),
    Request("hamlet", "Who wrote Hamlet?"),
    Request("capital", "What is the capital of Japan?"),
    Request("how_are_you", "Good morning! How are you?"),
    Request("http", "What does HTTP stand for?"),
]


# ----------------------------------------------------------------------------------- scoring
def same_value(expected: Any, actual: Any) -> bool:
    """Tolerant equality: numbers by value, strings case-insensitive and stripped, a tuple of alternatives."""
    if isinstance(expected, tuple):
        return any(same_value(e, actual) for e in expected)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    if isinstance(expected, (int, float)):
        return isinstance(actual, (int, float)) and math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(expected, str):
        return isinstance(actual, str) and expected.strip().casefold() == actual.strip().casefold()
    return expected == actual


def call_matches(expected: Call, actual: Call) -> bool:
    """Same tool, and each argument `expected` lists has a tolerantly equal value (either order for SYMMETRIC)."""
    if expected.name != actual.name:
        return False
    orders = [actual.arguments]
    if expected.name in SYMMETRIC:
        first, second = SYMMETRIC[expected.name]
        swapped = dict(actual.arguments)
        swapped[first], swapped[second] = actual.arguments.get(second), actual.arguments.get(first)
        orders.append(swapped)
    return any(all(key in arguments and same_value(value, arguments[key]) for key, value in expected.arguments.items())
               for arguments in orders)


def calls_match(expected: Sequence[Call], executed: Sequence[Call]) -> bool:
    """Whether the executed calls are exactly the expected ones, each once, in any order."""
    return len(expected) == len(executed) and any(
        all(call_matches(e, a) for e, a in zip(expected, order)) for order in itertools.permutations(executed))


def _same_call(a: Call, b: Call) -> bool:
    return a.name == b.name and a.arguments.keys() == b.arguments.keys() and all(
        same_value(value, b.arguments[key]) for key, value in a.arguments.items())


def without_repeats(calls: Sequence[Call]) -> list[Call]:
    """The calls with any repeat of an earlier one (same tool, tolerantly equal arguments) left out."""
    kept: list[Call] = []
    for call in calls:
        if not any(_same_call(call, seen) for seen in kept):
            kept.append(call)
    return kept


def score(request: Request, executed: Sequence[Call], *, step_limit: bool, final_text: str | None) -> dict[str, bool]:
    """One request's outcome: `correct` and the failure flags (several may hold at once)."""
    answered = bool(final_text and final_text.strip())
    distinct = without_repeats(executed)
    flags = {
        "repeated_call": len(distinct) < len(executed),
        "step_limit": step_limit,
        "text_where_tool_fits": bool(request.expected) and not executed and answered,
        "called_on_no_tool": not request.expected and bool(executed),
        "wrong_or_missing_call": bool(request.expected) and bool(executed) and not calls_match(request.expected,
                                                                                                 distinct),
        "no_final_text": not answered and not step_limit,
    }
    return {"correct": calls_match(request.expected, executed) and answered and not step_limit, **flags}


FLAGS = ("repeated_call", "step_limit", "text_where_tool_fits", "called_on_no_tool", "wrong_or_missing_call",
         "no_final_text")


def summarize(framework: str, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One framework's figures over its records: correct/N with a Wilson 95 % interval, failure counts, time."""
    n, correct = len(records), sum(r["correct"] for r in records)
    low, high = wilson_interval(correct, n)
    kinds = {kind: [r for r in records if r["kind"] == kind] for kind in ("single", "multi", "none")}
    return {"framework": framework, "n": n, "correct": correct, "accuracy": correct / n, "ci95": [low, high],
            **{f"correct_{kind}": f"{sum(r['correct'] for r in rs)}/{len(rs)}" for kind, rs in kinds.items()},
            **{flag: sum(r[flag] for r in records) for flag in FLAGS},
            "errors": sum(r["error"] is not None for r in records),
            "mean_steps": sum(r["steps"] for r in records) / n,
            "mean_s": sum(r["seconds"] for r in records) / n}


# ----------------------------------------------------------------------------------- drivers
@dataclass
class Outcome:
    """How one agent run ended (the calls are in the ToolBox)."""

    steps: int = 0
    step_limit: bool = False
    final_text: str | None = None
    error: str | None = None


Driver = Callable[[Request], Outcome]


def loop_driver(router: Any, box: ToolBox) -> Driver:
    """A plain loop over `router.route`: calls run and go back as `role="tool"` messages until a text answer."""
    tools = router.prepare_tools([tool.openai() for tool in TOOLS.values()])

    def run(request: Request) -> Outcome:
        messages: list[dict[str, Any]] = [{"role": "user", "content": request.text}]
        for step in range(1, MAX_STEPS + 1):
            result = router.route(messages, tools)
            if not result.calls:
                return Outcome(step, final_text=result.text)
            messages.append({"role": "assistant", "content": "", "tool_calls": [c.model_dump() for c in result.calls]})
            messages += [{"role": "tool", "tool_call_id": c.id, "name": c.name,
                          "content": box.execute(c.name, c.arguments)} for c in result.calls]
        return Outcome(MAX_STEPS, step_limit=True)

    return run


def langchain_driver(router: Any, box: ToolBox) -> Driver:
    """`create_agent(ChatToolFormer(router=router), StructuredTools)`, `MAX_STEPS` model turns (recursion limit)."""
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.tools import StructuredTool
    from langgraph.errors import GraphRecursionError

    from toolformer_router.adapters.langchain import ChatToolFormer

    def runner(name: str) -> Callable[..., str]:
        return lambda **arguments: box.execute(name, arguments)

    tools = [StructuredTool(name=t.name, description=t.description, args_schema=t.parameters, func=runner(t.name))
             for t in TOOLS.values()]
    agent = create_agent(model=ChatToolFormer(router=router), tools=tools)

    def run(request: Request) -> Outcome:
        messages: list[Any] = []
        outcome = Outcome()
        try:  # each model turn and each tools turn is one graph step
            for state in agent.stream({"messages": [HumanMessage(request.text)]},
                                      {"recursion_limit": 2 * MAX_STEPS}, stream_mode="values"):
                messages = state["messages"]
        except GraphRecursionError:
            outcome.step_limit = True
        turns = [m for m in messages if isinstance(m, AIMessage)]
        outcome.steps = len(turns)
        if not outcome.step_limit and turns and not turns[-1].tool_calls:
            outcome.final_text = turns[-1].content if isinstance(turns[-1].content, str) else str(turns[-1].content)
        return outcome

    return run


def llamaindex_driver(router: Any, box: ToolBox) -> Driver:
    """`FunctionAgent(ToolFormerLLM(router=router), FunctionTools)`, `MAX_STEPS` model turns (at the limit it routes
    one more turn, whose calls do not run, before it raises: such records show `MAX_STEPS + 1` steps)."""
    from llama_index.core.agent.workflow import AgentOutput, FunctionAgent
    from llama_index.core.tools import FunctionTool, ToolMetadata
    from llama_index.core.workflow.errors import WorkflowRuntimeError

    from toolformer_router.adapters.llamaindex import ToolFormerLLM

    @dataclass
    class SchemaMetadata(ToolMetadata):
        """Tool metadata that carries a JSON Schema as is."""

        parameters: dict[str, Any] = field(default_factory=dict)

        def get_parameters_dict(self) -> dict:
            return self.parameters

    def runner(name: str) -> Callable[..., str]:
        return lambda **arguments: box.execute(name, arguments)

    tools = [FunctionTool(fn=runner(t.name), metadata=SchemaMetadata(name=t.name, description=t.description,
                                                                        fn_schema=None, parameters=t.parameters))
             for t in TOOLS.values()]
    agent = FunctionAgent(tools=tools, llm=ToolFormerLLM(router=router), timeout=600)

    async def arun(request: Request) -> Outcome:
        outcome = Outcome()
        # FunctionAgent raises on its max_iterations-th turn even when that turn answers: +1 gives MAX_STEPS turns
        handler = agent.run(user_msg=request.text, max_iterations=MAX_STEPS + 1)
        try:
            async for event in handler.stream_events():
                if isinstance(event, AgentOutput):
                    outcome.steps += 1
            response = await handler
        except WorkflowRuntimeError as error:
            if "Max iterations" not in str(error):
                raise
            outcome.step_limit = True
            return outcome
        outcome.final_text = str(response.response.content or "")
        return outcome

    return lambda request: asyncio.run(arun(request))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served(checkpoint: str, startup_s: float = 600) -> Iterator[str]:
    """`toolformer-router serve` in a subprocess; yields its `/v1` base URL once `/v1/models` answers."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    command = shutil.which("toolformer-router", path=str(Path(sys.executable).parent))
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen([command, "serve", "--checkpoint", checkpoint, "--port", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + startup_s
            while not _answers(f"{base_url}/models"):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise SystemExit(f"toolformer-router serve did not start:\n{log.read().decode()[-3000:]}")
                time.sleep(1)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def openai_driver(base_url: str, box: ToolBox) -> Driver:
    """The `openai` client in a loop against the server: `tools=` the JSON Schemas, results as `role="tool"`."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="none")
    model = client.models.list().data[0].id
    tools = [tool.openai() for tool in TOOLS.values()]

    def run(request: Request) -> Outcome:
        messages: list[dict[str, Any]] = [{"role": "user", "content": request.text}]
        for step in range(1, MAX_STEPS + 1):
            message = client.chat.completions.create(model=model, messages=messages, tools=tools).choices[0].message
            if not message.tool_calls:
                return Outcome(step, final_text=message.content)
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                content = box.execute(call.function.name, json.loads(call.function.arguments or "{}"))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
        return Outcome(MAX_STEPS, step_limit=True)

    return run


def run_requests(framework: str, driver: Driver, box: ToolBox, requests: Sequence[Request]) -> Iterator[dict[str, Any]]:
    """Each request through `driver`, one record as each ends: its executed calls, steps, answer, time and score."""
    for request in tqdm(requests, desc=framework, unit="request"):
        box.calls = []
        started = time.perf_counter()
        try:
            outcome = driver(request)
        except Exception as error:  # noqa: BLE001 - an adapter failure is a measured outcome, not a crash
            outcome = Outcome(error=f"{type(error).__name__}: {error}"[:500])
        seconds = time.perf_counter() - started
        yield {"framework": framework, "id": request.id, "kind": request.kind, "request": request.text,
               "expected": [asdict(c) for c in request.expected], "calls": [asdict(c) for c in box.calls],
               **asdict(outcome), "seconds": seconds,
               **score(request, box.calls, step_limit=outcome.step_limit, final_text=outcome.final_text)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated subset of " +
                        ", ".join(FRAMEWORKS))
    parser.add_argument("--limit", type=int, default=None, help="only the first N requests")
    parser.add_argument("--out", default=None)
    parser.add_argument("--resume", action="store_true", help="keep the records already in --out, run the rest")
    args = parser.parse_args(argv)
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    if unknown := set(frameworks) - set(FRAMEWORKS):
        parser.error(f"unknown frameworks: {', '.join(sorted(unknown))}")
    requests = REQUESTS[: args.limit]
    out = Path(args.out or Path(__file__).parent / "results" / "agents" / f"{Path(args.checkpoint).name}.json")
    report: dict[str, Any] = {"machine": machine(), "engine": str(Path(toolformer_router.__file__).parent),
                              "checkpoint": args.checkpoint, "max_steps": MAX_STEPS, "requests": len(requests),
                              "wall_s": 0.0, "frameworks": [], "records": []}
    if args.resume and out.exists():
        kept = json.loads(out.read_text())
        report["wall_s"] = kept["wall_s"]
        report["records"] = [r for r in kept["records"] if r["framework"] in frameworks
                             and r["id"] in {q.id for q in requests}]
    records, previous_wall_s, started = report["records"], report["wall_s"], time.perf_counter()
    box = ToolBox()

    def save() -> None:
        report.update(wall_s=previous_wall_s + time.perf_counter() - started, frameworks=[
            summarize(f, [r for r in records if r["framework"] == f]) for f in frameworks
            if any(r["framework"] == f for r in records)])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")

    def run(framework: str, driver: Driver) -> None:
        """Run the framework's requests not yet recorded; write the report after each (a crash keeps them)."""
        done = {r["id"] for r in records if r["framework"] == framework}
        for record in run_requests(framework, driver, box, [r for r in requests if r.id not in done]):
            records.append(record)
            save()

    in_process = [f for f in frameworks if f != "openai"]
    if in_process:
        from toolformer_router import ToolRouter

        router = ToolRouter.from_pretrained(args.checkpoint)
        builders = {"loop": loop_driver, "langchain": langchain_driver, "llamaindex": llamaindex_driver}
        try:
            for framework in in_process:
                run(framework, builders[framework](router, box))
        finally:
            router.close()
    if "openai" in frameworks:
        with served(args.checkpoint) as base_url:
            run("openai", openai_driver(base_url, box))
    save()

    print(json.dumps({k: v for k, v in report.items() if k != "records"}, indent=2))
    rows = [{**row, "ci95": f"{row['ci95'][0]:.2f}-{row['ci95'][1]:.2f}", "correct": f"{row['correct']}/{row['n']}"}
            for row in report["frameworks"]]
    print_table(rows, ["framework", "correct", "accuracy", "ci95", "correct_single", "correct_multi", "correct_none",
                       *FLAGS, "errors", "mean_steps", "mean_s"])
    return report


if __name__ == "__main__":
    main()
