"""`benchmarks/bench_agents.py`: the scoring of agent runs on hand-made records, the ten tools, and the plain loop
driver over a scripted router (no model)."""

import json

import pytest
from scripted import ScriptedRouter, call, calls, text

@pytest.fixture(scope="module")
def bench(bench_agents):
    return bench_agents


def _request(bench, request_id: str):
    return next(r for r in bench.REQUESTS if r.id == request_id)


def _score(bench, request, executed, *, step_limit=False, final_text="Done."):
    return bench.score(request, [bench.Call(n, a) for n, a in executed], step_limit=step_limit, final_text=final_text)


def _failures(outcome: dict) -> set[str]:
    return {flag for flag, value in outcome.items() if value and flag != "correct"}


def test_requests_are_many_mixed_and_use_known_tools(bench):
    requests = bench.REQUESTS
    assert len(requests) >= 32 and len({r.id for r in requests}) == len(requests)
    kinds = [r.kind for r in requests]
    assert kinds.count("single") >= 20 and kinds.count("multi") >= 6 and kinds.count("none") >= 6
    for request in requests:
        for expected in request.expected:
            schema = bench.TOOLS[expected.name].parameters
            assert set(expected.arguments) <= set(schema["properties"]), request.id


def test_exact_calls_with_a_text_answer_are_correct(bench):
    outcome = _score(bench, _request(bench, "add_plus"), [("add", {"a": 17, "b": 25})])
    assert outcome["correct"] and not _failures(outcome)
    assert _score(bench, _request(bench, "add_plus"), [("add", {"a": 25.0, "b": 17})])["correct"]  # either order
    two = _request(bench, "two_weathers")
    outcome = _score(bench, two, [("get_weather", {"city": "Rome", "unit": "celsius"}),
                                  ("get_weather", {"city": "Paris"})])
    assert outcome["correct"] and not _failures(outcome)  # any order; unlisted arguments are not checked


def test_tolerant_argument_comparison(bench):
    same = bench.same_value
    assert same(10, 10.0) and same(0.1 + 0.2, 0.3) and not same(10, 10.5)
    assert same("EUR", " eur ") and same("New York", "new york") and not same("Paris", "Pariss")
    assert not same(10, "10") and not same("10", 10) and not same(1, True)
    assert same(("88213", "#88213"), "#88213") and not same(("88213", "#88213"), "88214")
    request = _request(bench, "currency_codes")
    assert _score(bench, request, [("convert_currency", {"amount": 100.0, "from_currency": "usd",
                                                         "to_currency": "Eur "})])["correct"]
    outcome = _score(bench, request, [("convert_currency", {"amount": 100, "from_currency": "USD",
                                                            "to_currency": "GBP"})])
    assert not outcome["correct"] and _failures(outcome) == {"wrong_or_missing_call"}
    outcome = _score(bench, request, [("convert_currency", {"amount": 100, "from_currency": "USD"})])
    assert not outcome["correct"]  # a listed argument missing


def test_a_repeated_call_is_wrong_even_when_every_expected_call_ran(bench):
    request = _request(bench, "weather_plain")
    outcome = _score(bench, request, [("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "oslo "})])
    assert not outcome["correct"] and _failures(outcome) == {"repeated_call"}
    outcome = _score(bench, request, [("get_weather", {"city": "Oslo"})] * 6, step_limit=True, final_text=None)
    assert not outcome["correct"] and _failures(outcome) == {"repeated_call", "step_limit"}


def test_an_extra_or_missing_call_is_wrong(bench):
    request = _request(bench, "convert_then_email")
    convert = ("convert_currency", {"amount": 200, "from_currency": "USD", "to_currency": "GBP"})
    email = ("send_email", {"to": "tom@example.com", "subject": "Conversion", "body": "200 USD is 158 GBP"})
    assert _score(bench, request, [convert, email])["correct"]
    outcome = _score(bench, request, [convert])
    assert not outcome["correct"] and _failures(outcome) == {"wrong_or_missing_call"}
    outcome = _score(bench, request, [convert, email, ("get_weather", {"city": "London"})])
    assert not outcome["correct"] and _failures(outcome) == {"wrong_or_missing_call"}


def test_text_answers_and_no_tool_requests(bench):
    arithmetic = _request(bench, "add_plus")
    outcome = _score(bench, arithmetic, [], final_text="17 + 25 = 32.")
    assert not outcome["correct"] and _failures(outcome) == {"text_where_tool_fits"}
    greeting = _request(bench, "greeting")
    outcome = _score(bench, greeting, [], final_text="Hello! How can I help?")
    assert outcome["correct"] and not _failures(outcome)
    outcome = _score(bench, greeting, [("get_weather", {"city": "Oslo"})])
    assert not outcome["correct"] and _failures(outcome) == {"called_on_no_tool"}
    for final_text in (None, "  "):  # the calls were right, but no answer came back
        outcome = _score(bench, arithmetic, [("add", {"a": 17, "b": 25})], final_text=final_text)
        assert not outcome["correct"] and _failures(outcome) == {"no_final_text"}


def test_summary_counts_and_interval(bench):
    records = [{"kind": "single", "correct": True, "error": None, "steps": 2, "seconds": 1.0,
                **{flag: False for flag in bench.FLAGS}},
               {"kind": "none", "correct": False, "error": None, "steps": 1, "seconds": 3.0,
                **{flag: flag == "called_on_no_tool" for flag in bench.FLAGS}}]
    summary = bench.summarize("loop", records)
    assert summary["correct"] == 1 and summary["n"] == 2 and summary["accuracy"] == 0.5
    assert summary["correct_single"] == "1/1" and summary["correct_none"] == "0/1" and summary["correct_multi"] == "0/0"
    assert summary["called_on_no_tool"] == 1 and summary["repeated_call"] == 0 and summary["mean_s"] == 2.0
    low, high = summary["ci95"]
    assert 0 < low < 0.5 < high < 1


def test_every_tool_runs_and_is_deterministic(bench):
    arguments = {"get_weather": {"city": "Oslo", "unit": "fahrenheit"},
                 "convert_currency": {"amount": 100, "from_currency": "USD", "to_currency": "EUR"},
                 "add": {"a": 17, "b": 25}, "multiply": {"a": 6, "b": 7},
                 "send_email": {"to": "bob@example.com", "subject": "Hi", "body": "Moved to 3pm."},
                 "get_stock_price": {"symbol": "msft"}, "get_order_status": {"order_id": "A-1042"},
                 "set_timer": {"minutes": 10, "label": "stretch"},
                 "translate_text": {"text": "Good morning", "target_language": "Spanish"},
                 "create_calendar_event": {"title": "Dentist", "date": "2026-03-14", "time": "09:30"}}
    assert set(arguments) == set(bench.TOOLS)
    box = bench.ToolBox()
    sent = len(bench.OUTBOX)
    results = {name: json.loads(box.execute(name, args)) for name, args in arguments.items()}
    assert [c.name for c in box.calls] == list(arguments) and box.calls[0].arguments == arguments["get_weather"]
    assert results["add"] == {"result": 42} and results["multiply"] == {"result": 42}
    assert results["convert_currency"] == {"amount": 92.0, "currency": "EUR"}
    assert results["translate_text"]["translation"] == "buenos días"
    assert results["get_stock_price"] == {"symbol": "MSFT", "price": 415.5, "currency": "USD"}
    assert results["send_email"]["status"] == "sent" and len(bench.OUTBOX) == sent + 1
    assert results == {name: json.loads(box.execute(name, args)) for name, args in arguments.items()}
    assert "error" in json.loads(box.execute("convert_currency", {"amount": 1, "from_currency": "USD",
                                                                  "to_currency": "XYZ"}))
    for tool in bench.TOOLS.values():
        function = tool.openai()["function"]
        assert function["description"] and set(function["parameters"]["required"]) <= set(
            function["parameters"]["properties"])


def test_loop_driver_records_what_ran(bench):
    box = bench.ToolBox()
    router = ScriptedRouter([calls(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"})),
                             text("Sunny in both."), call("add", a=17, b=25), call("add", a=17, b=25)],
                            default=call("add", a=17, b=25))
    requests = [_request(bench, "two_weathers"), _request(bench, "add_plus")]
    first, second = bench.run_requests("loop", bench.loop_driver(router, box), box, requests)
    assert first["correct"] and first["steps"] == 2 and first["final_text"] == "Sunny in both."
    assert [c["arguments"]["city"] for c in first["calls"]] == ["Paris", "Rome"]
    tool_results = [m for m in router.requests[1]["messages"] if m["role"] == "tool"]
    assert len(tool_results) == 2 and "temperature" in tool_results[0]["content"]
    assert second["step_limit"] and second["steps"] == bench.MAX_STEPS and second["repeated_call"]
    assert len(second["calls"]) == bench.MAX_STEPS and not second["correct"]
