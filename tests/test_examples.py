"""The examples: `custom_tools.json`, the asyncio agent loop and the LangGraph agent, driven by a scripted router
(exact call sequences), plus `slow` runs of each example's main path on the real default checkpoint."""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from scripted import ScriptedRouter, call, calls, text

from toolformer_router.schema import fit_tool_text, normalize_tools, render_tool

EXAMPLES = Path(__file__).parents[1] / "examples"
CUSTOM_TOOLS = json.loads((EXAMPLES / "custom_tools.json").read_text())
NAMES = [tool["function"]["name"] for tool in CUSTOM_TOOLS]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in CUSTOM_TOOLS}


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class CountingRouter(ScriptedRouter):
    """A scripted router with what the examples also read from a `ToolRouter`: token counts of the schema text."""

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def tool_text(self, tool) -> str:
        return render_tool(tool)


def schema_words(tools) -> int:
    return sum(len(render_tool(tool).split()) for tool in normalize_tools(tools))


def prompt_words(requests) -> int:
    """What `ScriptedRouter` reports as `input_tokens`, summed over requests."""
    return sum(len(message["content"].split()) for request in requests for message in request["messages"])


# ----------------------------------------------------------------------------------- custom_tools.json
def test_custom_tools_are_200_valid_openai_tools_within_256_schema_tokens(tokenizer, make_router):
    assert len(CUSTOM_TOOLS) == 200 and len(set(NAMES)) == 200
    assert all(tool["type"] == "function" and tool["function"]["description"] for tool in CUSTOM_TOOLS)
    tools = normalize_tools(CUSTOM_TOOLS)
    counts = lambda texts: [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    for tool in tools:
        assert counts([render_tool(tool)])[0] <= 256, tool.name
        assert fit_tool_text(tool, counts, 256) == render_tool(tool)  # nothing had to be cut
    assert len(make_router().check_tools(CUSTOM_TOOLS)) == 200  # the grammar can enforce every schema
    # typed parameters, not just strings: enums, formats, bounds and required keys throughout
    text = json.dumps(CUSTOM_TOOLS)
    assert text.count('"enum"') > 50 and text.count('"format"') > 50 and text.count('"minimum"') > 50
    assert sum(bool(t["function"]["parameters"].get("required")) for t in CUSTOM_TOOLS) > 180
    # the LlamaIndex example puts these three real functions before the custom tools: no name may clash
    assert not {"get_weather", "convert_currency", "add_calendar_event"} & set(NAMES)


@pytest.mark.parametrize("example", ["async_agent_loop", "langchain_agent"])
def test_real_functions_take_exactly_their_json_parameters(example):
    module = load_example(example)
    real = module.REAL_TOOLS if example == "async_agent_loop" else module.REAL
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in CUSTOM_TOOLS}
    for name, function in real.items():
        parameters = inspect.signature(function).parameters
        assert set(parameters) == set(schemas[name]["properties"]), name
        assert [p for p, v in parameters.items() if v.default is inspect.Parameter.empty] == schemas[name]["required"]


# ----------------------------------------------------------------------------------- async agent loop
ASYNC_SCRIPT = {  # words of the query -> the calls of the first route
    "Lisbon": ("get_current_weather", {"city": "Lisbon", "unit": "celsius"}),
    "Oslo": ("get_weather_forecast", {"city": "Oslo", "days": 5, "unit": "fahrenheit"}),
    "Tokyo": ("convert_timezone", {"datetime": "2025-03-14T09:30", "from_timezone": "America/New_York",
                                   "to_timezone": "Asia/Tokyo"}),
    "euros": ("convert_currency_amount", {"amount": 250, "from_currency": "USD", "to_currency": "EUR"}),
    "days are there": ("days_between_dates", {"start_date": "2025-01-15", "end_date": "2025-04-01"}),
    "pounds": ("convert_units", {"value": 72, "from_unit": "kg", "to_unit": "lb"}),
    "mortgage": ("calculate_loan_payment", {"principal": 300000, "annual_rate_percent": 4.5, "years": 30}),
    "tip": ("calculate_tip", {"bill_amount": 86.4, "tip_percent": 18, "people": 4}),
    "words": ("text_statistics", {"text": "The quick brown fox jumps over the lazy dog. It barked twice."}),
    "Email": ("send_email", {"to": ["anna@example.com"], "subject": "Report", "body": "It is ready."}),
    "lights": ("toggle_lights", {"room": "kitchen", "on": False}),
}
EXPECTED_RESULTS = {
    "convert_timezone": {"datetime": "2025-03-14T22:30", "timezone": "Asia/Tokyo"},
    "convert_currency_amount": {"amount": 230.0, "currency": "EUR"},
    "days_between_dates": {"days": 76},
    "convert_units": {"value": 158.7328, "unit": "lb"},
    "calculate_loan_payment": {"monthly_payment": 1520.06, "total_interest": 247220.13},
    "calculate_tip": {"tip": 15.55, "total": 101.95, "per_person": 25.49},
    "text_statistics": {"words": 12, "characters": 61, "sentences": 2},
    "send_email": {"status": "ok", "tool": "send_email"},
    "toggle_lights": {"status": "ok", "tool": "toggle_lights"},
}


def async_decision(messages, tools, tool_choice):
    """Warm-up: text. First route: the query's call (the greeting: text). After a result: the weather query calls
    once more (a second step), the lights query calls forever (stopped by max_steps), the others answer."""
    if tool_choice == "none":
        return text("ready")
    query, last = messages[0]["content"], messages[-1]
    match = next((step for words, step in ASYNC_SCRIPT.items() if words in query), None)
    if match is None:
        return text("Hello! I'm fine.")
    if last["role"] == "user" or "lights" in query:
        return call(match[0], **match[1])
    if "Lisbon" in query and last["name"] == "get_current_weather":
        return calls(("get_weather_forecast", {"city": "Lisbon", "days": 2}), ("get_air_quality", {"city": "Lisbon"}))
    return text(f"Done: {last['content']}")


async def test_async_loop_runs_50_sessions_and_feeds_real_results_back():
    example = load_example("async_agent_loop")
    router = CountingRouter(default=async_decision, delay_s=0.02)
    stats = await example.run(router, CUSTOM_TOOLS, sessions=50, max_steps=3)

    conversations = stats["conversations"]
    assert len(conversations) == 50
    assert [c["query"] for c in conversations] == [example.QUERIES[i % len(example.QUERIES)] for i in range(50)]
    routes_per_query = {"Lisbon": 3, "lights": 3, "How are you": 1}  # the others: call, then answer
    expected_routes = sum(next((n for w, n in routes_per_query.items() if w in c["query"]), 2) for c in conversations)
    assert stats["routes"] == expected_routes == len(router.requests) - 1  # minus the warm-up
    assert all(len(request["tools"]) == 200 for request in router.requests)
    for conversation in conversations:
        query, answer = conversation["query"], conversation["answer"]
        if "lights" in query:  # out of steps: three calls, no answer
            assert answer is None and [m["role"] for m in conversation["messages"]].count("tool") == 3
        elif "How are you" in query:
            assert answer == "Hello! I'm fine." and len(conversation["messages"]) == 1
        else:
            assert answer.startswith("Done: ") and conversation["messages"][-1]["role"] == "tool"

    # the functions really ran, and their results went back to the router as tool messages
    fed_back = [r["messages"][-1] for r in router.requests if r["messages"][-1]["role"] == "tool"]
    results = {m["name"]: json.loads(m["content"]) for m in fed_back}
    for name, expected in EXPECTED_RESULTS.items():
        assert results[name] == expected, name
    assert results["get_current_weather"] == example.get_current_weather("Lisbon", "celsius")
    assert results["get_weather_forecast"]["city"] in ("Oslo", "Lisbon") and "error" not in results["get_air_quality"]
    lisbon = next(r for r in router.requests if r["messages"][0]["content"].startswith("What's the weather"))
    assert lisbon["messages"][-1]["role"] == "user"  # the first route of a session sees the query alone
    assert stats["tool_calls"] == sum(m["role"] == "tool" for c in conversations for m in c["messages"])
    assert 0 < stats["real_tool_calls"] < stats["tool_calls"]

    # statistics
    assert stats["prompt_tokens"] == prompt_words(router.requests[1:])
    assert stats["schema_tokens_per_route"] == schema_words(CUSTOM_TOOLS)
    assert stats["pasted_prompt_tokens"] == stats["prompt_tokens"] + stats["schema_tokens_per_route"] * stats["routes"]
    assert stats["pasted_prompt_tokens"] > 10 * stats["prompt_tokens"] > 0
    assert 0.019 <= stats["latency_p50_s"] <= stats["latency_p95_s"] < stats["seconds"]
    assert stats["seconds"] < 0.5 * stats["routes"] * 0.02  # concurrent sessions: far less than one after another
    assert stats["routes_per_s"] == pytest.approx(stats["routes"] / stats["seconds"])


async def test_async_loop_require_call_applies_to_the_first_route_of_each_session():
    example = load_example("async_agent_loop")
    days = call("days_between_dates", start_date="2025-01-01", end_date="2025-01-31")
    router = CountingRouter(default=lambda messages, tools, choice: days if choice == "required" else text("ok"))
    stats = await example.run(router, CUSTOM_TOOLS[:20], sessions=3, max_steps=2, require_call=True)
    assert router.requests[0]["tool_choice"] == "none" and len(router.requests) == 7  # the warm-up, then 3 x 2 routes
    for request in router.requests[1:]:  # the first route of a session sees the query alone
        assert request["tool_choice"] == ("required" if len(request["messages"]) == 1 else None)
    assert stats["routes"] == 6 and stats["tool_calls"] == stats["real_tool_calls"] == 3
    assert all(c["answer"] == "ok" and c["messages"][-1]["content"] == '{"days": 30}' for c in stats["conversations"])
    assert stats["schema_tokens_per_route"] == schema_words(CUSTOM_TOOLS[:20])


def test_async_loop_execute_reports_errors_as_results():
    example = load_example("async_agent_loop")

    def execute(name, **arguments):
        return json.loads(example.execute(name, arguments))

    assert execute("convert_currency_amount", amount=1, from_currency="XXX", to_currency="EUR") == {
        "error": "KeyError: 'XXX'"}
    assert execute("convert_units", value=1, from_unit="kg", to_unit="m") == {
        "error": "ValueError: cannot convert mass to length"}
    assert "ZoneInfoNotFoundError" in execute("convert_timezone", datetime="2025-01-01T00:00",
                                              from_timezone="Mars/Olympus", to_timezone="UTC")["error"]
    assert execute("convert_units", value=212, from_unit="f", to_unit="c") == {"value": 100.0, "unit": "c"}
    assert execute("get_stock_quote", ticker="AAPL") == {"status": "ok", "tool": "get_stock_quote"}


# ----------------------------------------------------------------------------------- LangGraph agent
def test_langchain_agent_runs_queries_with_real_and_canned_tools():
    from toolformer_router.adapters.langchain import ChatToolFormer

    example = load_example("langchain_agent")
    email = {"to": ["anna@example.com"], "subject": "FX", "body": "230 EUR"}
    router = CountingRouter([
        call("get_current_weather", city="Lisbon", unit="celsius"), text("18 degrees and sunny in Lisbon."),
        call("convert_currency_amount", amount=250, from_currency="USD", to_currency="EUR"),
        call("send_email", **email), text("250 USD is 230 EUR; Anna knows."),
    ])
    result = example.run(ChatToolFormer(router=router), example.QUERIES[:2], tool_count=200)

    first, second = result["runs"]
    assert first["calls"] == [("get_current_weather", {"city": "Lisbon", "unit": "celsius"},
                               "18 degrees celsius, sunny, in Lisbon")]
    assert first["answer"] == "18 degrees and sunny in Lisbon."
    assert [c[:2] for c in second["calls"]] == [
        ("convert_currency_amount", {"amount": 250, "from_currency": "USD", "to_currency": "EUR"}),
        ("send_email", email)]
    assert second["calls"][0][2] == "250 USD = 230.0 EUR"
    assert json.loads(second["calls"][1][2]) == {"status": "ok", "tool": "send_email", "arguments": email}
    assert second["answer"] == "250 USD is 230 EUR; Anna knows."
    assert result["routes"] == len(router.requests) == 5
    assert all(len(request["tools"]) == 200 for request in router.requests)
    assert router.requests[1]["messages"][-1] == {"role": "tool", "name": "get_current_weather",
                                                  "content": "18 degrees celsius, sunny, in Lisbon"}
    prompt = prompt_words(router.requests)
    assert result["prompt_tokens"] == prompt
    assert result["schema_tokens_per_route"] == schema_words(CUSTOM_TOOLS)  # the same schemas as the JSON
    assert result["pasted_prompt_tokens"] == prompt + 5 * result["schema_tokens_per_route"]


def test_langchain_agent_tool_count_and_step_limit():
    from toolformer_router.adapters.langchain import ChatToolFormer

    example = load_example("langchain_agent")
    assert [t.name for t in example.make_tools(5)[:3]] == list(example.REAL)  # the real tools come first
    router = CountingRouter(default=call("toggle_lights", room="kitchen", on=False))  # never answers
    result = example.run(ChatToolFormer(router=router), ["Lights off!"], tool_count=150, max_steps=3)
    assert all(len(request["tools"]) == 150 for request in router.requests)
    run = result["runs"][0]
    assert len(router.requests) == 3 and len(run["calls"]) == 2  # the last turn's call is not run
    canned = {"status": "ok", "tool": "toggle_lights", "arguments": {"room": "kitchen", "on": False}}
    assert [json.loads(output) for _, _, output in run["calls"]] == [canned, canned]  # the two calls ran
    # no answer from the router: the run ends with LangGraph's documented reply at the step limit
    assert run["answer"] == "Sorry, need more steps to process this request."


# ----------------------------------------------------------------------------------- real checkpoint
@pytest.mark.slow
def test_async_loop_main_on_default_checkpoint(default_router, monkeypatch, capsys):
    example = load_example("async_agent_loop")
    monkeypatch.setattr(example.ToolRouter, "from_pretrained", lambda *args, **kwargs: default_router)
    stats = example.main(["--sessions", "5", "--max-steps", "1", "--require-call"])
    out = capsys.readouterr().out
    assert "5 sessions, 5 routes" in out and "routes/s" in out and "pasting all 200 schemas" in out
    assert stats["routes"] == 5 and stats["latency_p95_s"] > 0
    # one required route per session: a call (run, then out of steps), or a call cut short by the token budget
    assert all(conversation["answer"] is None for conversation in stats["conversations"])
    assert stats["pasted_prompt_tokens"] > 10 * stats["prompt_tokens"] > 0
    # the calls made are valid for their tools and were run: each result fed back is what the function returns
    called = [c for c in stats["conversations"] if len(c["messages"]) > 1]
    assert called and stats["tool_calls"] == sum(len(c["messages"]) - 2 for c in called) > 0
    for conversation in called:
        assistant, *results = conversation["messages"][1:]
        assert assistant["role"] == "assistant" and [m["role"] for m in results] == ["tool"] * len(results)
        assert [m["name"] for m in results] == [c["name"] for c in assistant["tool_calls"]]
        for tool_call, message in zip(assistant["tool_calls"], results):
            Draft202012Validator(SCHEMAS[tool_call["name"]]).validate(tool_call["arguments"])
            assert message["content"] == example.execute(tool_call["name"], tool_call["arguments"])


@pytest.mark.slow
def test_langchain_agent_main_on_default_checkpoint(default_router, capsys):
    example = load_example("langchain_agent")
    result = example.main(["What's the weather in Lisbon?", "--device", "cpu", "--max-new-tokens", "48"])
    out = capsys.readouterr().out
    assert "answer" in out and "pasting all 200 schemas" in out
    assert result["routes"] >= 1 and result["pasted_prompt_tokens"] > 10 * result["prompt_tokens"] > 0
    calls = result["runs"][0]["calls"]
    assert calls and "weather" in calls[0][0]  # the weather query calls, and first a weather tool
    for name, arguments, output in calls:  # each call valid for its tool, and run by the agent
        Draft202012Validator(SCHEMAS[name]).validate(arguments)
        assert output is not None and not output.startswith("Error")  # a ToolNode error reads "Error: ..."
