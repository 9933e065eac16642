"""The OpenAI-compatible server, exercised through a real uvicorn server and the official `openai` client."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import httpx
import jsonschema
import openai
import pytest
from conftest import EMAIL, WEATHER
from openai import AsyncOpenAI, OpenAI
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel
from scripted import ScriptedRouter, call, calls, text
from toolformer_router.adapters import server
from toolformer_router.adapters._common import structured_output_text
from toolformer_router.adapters.server import create_app, serve_in_thread

from toolformer_router import cli, normalize_tool
from toolformer_router.batching import RequestBatcher
from toolformer_router.types import RouteChunk, RouteResult, RouteUsage, ToolCall

ROOT = Path(__file__).parent.parent
KEY = "sk-test-key"
ECHO = {"type": "function", "function": {"name": "echo", "description": "Echo a number.", "parameters": {
    "type": "object", "properties": {"n": {"type": "integer"}, "tag": {"type": "string"}}, "required": ["n"]}}}
TOOLS = [WEATHER, {"type": "function", "function": EMAIL}, ECHO]


def structured(name: str, **arguments) -> RouteResult:
    """A scripted forced call of a structured answer's tool, `raw` as the router writes it."""
    return call(name, **arguments).model_copy(update={"raw": json.dumps([{"name": name, "arguments": arguments}])})


@pytest.fixture
def scripted():
    """A scripted router behind a live server (API key required, small limits): (router, base_url)."""
    router = ScriptedRouter()
    with serve_in_thread(create_app(router, api_key=KEY, max_body_bytes=64 * 1024, max_tools=8,
                                    max_pending=100)) as base_url:
        yield router, base_url


@pytest.fixture
def client(scripted):
    return OpenAI(base_url=scripted[1], api_key=KEY, max_retries=0)


def test_a_call(scripted, client):
    router, _ = scripted
    router.script = [call("get_weather", city="Paris", unit="celsius")]
    response = client.chat.completions.create(model="any-model", tools=TOOLS,
                                              messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert response.object == "chat.completion" and response.model == "any-model"
    assert response.id.startswith("chatcmpl-")
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant" and choice.message.content is None
    (tool_call,) = choice.message.tool_calls
    assert tool_call.type == "function" and tool_call.id.startswith("call_")
    assert tool_call.function.name == "get_weather"
    assert json.loads(tool_call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    assert response.usage.prompt_tokens == 3 and response.usage.completion_tokens == 10
    assert response.usage.total_tokens == 13 and response.usage.router["active_tools"] == 3
    assert router.requests[0]["tools"] == ["get_weather", "send_email", "echo"]
    assert router.requests[0]["tool_choice"] is None and router.requests[0]["parallel_tool_calls"] is True


def test_a_text_answer_and_the_output_budget(scripted, client):
    router, _ = scripted
    router.script = [text("Hello there!"), RouteResult(text="cut sho", finish_reason="length", model="scripted")]
    response = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], tools=TOOLS,
                                              max_tokens=7)
    assert response.choices[0].finish_reason == "stop" and response.choices[0].message.content == "Hello there!"
    assert response.choices[0].message.tool_calls is None
    assert router.requests[0]["max_new_tokens"] == 7
    response = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=7, max_completion_tokens=3)
    assert response.choices[0].finish_reason == "length" and response.choices[0].message.content == "cut sho"
    assert router.requests[1]["max_new_tokens"] == 3 and router.requests[1]["tools"] == []
    router.script = [call("get_weather", city="Par").model_copy(update={"finish_reason": "length"})]
    response = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], tools=TOOLS)
    assert response.choices[0].finish_reason == "length"  # a call closed early by the budget: kept, flagged
    assert json.loads(response.choices[0].message.tool_calls[0].function.arguments) == {"city": "Par"}


def test_a_multi_turn_conversation_with_tool_results(scripted, client):
    router, _ = scripted
    router.script = [calls(("get_weather", {"city": "Rome"}), ("send_email", {"to": "a@b.c", "body": "hi"})),
                     text("It is 18 C in Rome and the email is sent.")]
    messages = [{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather in Rome,"},
                                             {"type": "text", "text": "and email a@b.c"}]}]
    first = client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
    assert [c.function.name for c in first.choices[0].message.tool_calls] == ["get_weather", "send_email"]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    for tool_call, result in zip(first.choices[0].message.tool_calls, ["18 C, sunny", "sent"], strict=True):
        messages.append({"role": "tool", "tool_call_id": tool_call.id, "content": result})
    second = client.chat.completions.create(model="m", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "It is 18 C in Rome and the email is sent."
    seen = router.requests[1]["messages"]
    assert seen[0] == {"role": "system", "content": "Be brief."}
    assert seen[1] == {"role": "user", "content": "Weather in Rome,\nand email a@b.c"}
    assert seen[2]["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Rome"}},
                                     {"name": "send_email", "arguments": {"to": "a@b.c", "body": "hi"}}]
    assert seen[3] == {"role": "tool", "content": "18 C, sunny", "name": "get_weather"}
    assert seen[4] == {"role": "tool", "content": "sent", "name": "send_email"}


def _assemble(stream) -> tuple[str, dict[int, dict], str | None, object]:
    """Put streamed deltas together the way OpenAI's client users do."""
    content, tool_calls, finish_reason, usage = "", {}, None, None
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        usage = chunk.usage or usage
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for delta in choice.delta.tool_calls or ():
                entry = tool_calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = delta.id or entry["id"]
                if delta.function:
                    entry["name"] += delta.function.name or ""
                    entry["arguments"] += delta.function.arguments or ""
            finish_reason = choice.finish_reason or finish_reason
    return content, tool_calls, finish_reason, usage


def test_streaming_calls_and_text(scripted, client):
    router, _ = scripted
    router.script = [calls(("get_weather", {"city": "Oslo"}), ("echo", {"n": 3})), text("Just an answer.")]
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Oslo?"}], tools=TOOLS,
                                            stream=True, stream_options={"include_usage": True})
    content, tool_calls, finish_reason, usage = _assemble(stream)
    assert content == "" and finish_reason == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for c in tool_calls.values()] == [
        ("get_weather", {"city": "Oslo"}), ("echo", {"n": 3})]
    assert all(c["id"].startswith("call_") for c in tool_calls.values())
    assert usage.prompt_tokens == 1 and usage.total_tokens == 11
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], stream=True)
    content, tool_calls, finish_reason, usage = _assemble(stream)
    assert (content, tool_calls, finish_reason, usage) == ("Just an answer.", {}, "stop", None)


def test_a_text_answer_streams_piece_by_piece_and_merges_into_the_whole(make_router):
    """With a real (tiny) router, stream=True sends a text answer in several content deltas as it is decoded;
    they join into exactly the non-streamed message, with the same finish reason and usage."""
    router = make_router()
    with serve_in_thread(create_app(router)) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        request = {"model": "m", "messages": [{"role": "user", "content": "tell me a story"}], "max_tokens": 24}
        whole = client.chat.completions.create(**request)
        stream = client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        content, tool_calls, finish_reason, usage = _assemble(chunks)
    assert sum(bool(c.choices and c.choices[0].delta.content) for c in chunks) > 3
    assert (content, finish_reason) == (whole.choices[0].message.content, whole.choices[0].finish_reason)
    assert content and tool_calls == {} and usage.completion_tokens == whole.usage.completion_tokens
    router.close()


def test_the_event_stream_is_in_openais_exact_format(scripted):
    router, base_url = scripted
    router.script = [call("echo", n=1)]
    response = httpx.post(f"{base_url}/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                          json={"model": "m", "messages": [{"role": "user", "content": "one"}], "tools": [ECHO],
                                "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = response.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert all(event.startswith("data: {") for event in events[:-2])
    assert len({c["id"] for c in chunks}) == 1 and {c["object"] for c in chunks} == {"chat.completion.chunk"}
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant" and all("role" not in d for d in deltas[1:])
    assert deltas[1]["tool_calls"][0] == {"index": 0, "id": deltas[1]["tool_calls"][0]["id"], "type": "function",
                                          "function": {"name": "echo", "arguments": ""}}
    assert deltas[2]["tool_calls"] == [{"index": 0, "function": {"arguments": '{"n":1}'}}]
    assert deltas[-1] == {} and [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "tool_calls"]
    assert all("usage" not in c for c in chunks)


def test_tool_choice_forms(scripted, client):
    router, _ = scripted
    router.default = lambda messages, tools, choice: (
        text("no call") if choice == "none" else call("echo", n=len(messages)))
    user = [{"role": "user", "content": "go"}]
    for choice in ("auto", "none", "required", {"type": "function", "function": {"name": "echo"}}):
        response = client.chat.completions.create(model="m", messages=user, tools=TOOLS, tool_choice=choice,
                                                  parallel_tool_calls=False)
        assert response.choices[0].finish_reason == ("stop" if choice == "none" else "tool_calls")
    assert [r["tool_choice"] for r in router.requests] == [
        "auto", "none", "required", {"type": "function", "function": {"name": "echo"}}]
    assert {r["parallel_tool_calls"] for r in router.requests} == {False}
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="m", messages=user, tools=TOOLS,
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert error.value.param == "tool_choice" and "nope" in error.value.message
    with pytest.raises(openai.BadRequestError):  # a call is required, but there is no tool
        client.chat.completions.create(model="m", messages=user, tool_choice="required")


def test_models(client):
    (model,) = client.models.list().data
    assert model.id == "scripted" and model.object == "model"


def test_retrieve_a_model(scripted, client):
    router, base_url = scripted
    model = client.models.retrieve("scripted")
    assert (model.id, model.object, model.owned_by) == ("scripted", "model", "toolformer-router")
    with pytest.raises(openai.NotFoundError) as error:
        client.models.retrieve("gpt-4o")
    assert error.value.code == "model_not_found" and error.value.param == "model" and "gpt-4o" in error.value.message
    response = httpx.get(f"{base_url}/models/gpt-4o", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 404 and response.json()["error"]["type"] == "invalid_request_error"
    router.name = "org/tool-router"  # hub-style ids hold a slash
    with serve_in_thread(create_app(router)) as url:
        assert OpenAI(base_url=url, api_key="x", max_retries=0).models.retrieve("org/tool-router").id == router.name


MCP_LOOKUP = {"name": "lookup", "title": "Lookup", "description": "Look a word up.",
              "inputSchema": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
              "annotations": {"readOnlyHint": True}}


def test_mcp_tools_beside_openai_ones(scripted, client):
    router, _ = scripted
    seen = []
    router.default = lambda messages, tools, choice: seen.append(tools) or call("lookup", word="gist")
    response = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Define gist"}],
                                              tools=[MCP_LOOKUP, ECHO])
    assert response.choices[0].message.tool_calls[0].function.name == "lookup"
    ((lookup, echo),) = seen
    assert lookup == normalize_tool({"name": "lookup", "description": "Look a word up.",
                                     "parameters": MCP_LOOKUP["inputSchema"]})
    assert echo == normalize_tool(ECHO)


def test_sampling_parameters_are_accepted_and_reported_as_ignored(scripted, client):
    router, _ = scripted
    router.default = text("ok")
    user = [{"role": "user", "content": "Hi"}]
    raw = client.chat.completions.with_raw_response.create(model="m", messages=user, temperature=0.1, top_p=0.9,
                                                           seed=7, presence_penalty=0.0, frequency_penalty=0.5)
    assert raw.headers["x-toolformer-decoding"] == "greedy; ignored=temperature,top_p,seed,frequency_penalty"
    assert raw.parse().choices[0].message.content == "ok"
    raw = client.chat.completions.with_raw_response.create(  # greedy's own values; unknown fields stay ignored
        model="m", messages=user, temperature=0, top_p=1, n=1, logprobs=False, user="u-1",
        extra_body={"a_future_field": {"x": 1}})
    assert raw.headers["x-toolformer-decoding"] == "greedy"
    with client.chat.completions.with_streaming_response.create(model="m", messages=user, temperature=0.7,
                                                                stream=True) as response:
        assert response.headers["x-toolformer-decoding"] == "greedy; ignored=temperature"
        assert _assemble(response.parse())[0] == "ok"
    assert len(router.requests) == 3


def test_stop_sequences_reach_the_router(scripted, client):
    router, _ = scripted
    router.default = text("ok")
    for stop in ("\n", ["END", "\n\n"], None):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], stop=stop)
    assert [r["stop"] for r in router.requests] == ["\n", ["END", "\n\n"], None]


class Forecast(BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"]
    days: list[int]


class GetWeather(BaseModel):
    """Current weather in a city."""

    city: str


def test_a_structured_answer_parsed_by_the_openai_sdk(scripted, client):
    router, _ = scripted
    seen = []
    router.default = lambda messages, tools, choice: seen.append(tools) or structured(
        "Forecast", city="Oslo", unit="celsius", days=[1, 2])
    completion = client.chat.completions.parse(model="m", messages=[{"role": "user", "content": "Oslo, 2 days"}],
                                               response_format=Forecast, max_completion_tokens=40, stop="\n")
    choice = completion.choices[0]
    assert choice.message.parsed == Forecast(city="Oslo", unit="celsius", days=[1, 2])
    assert choice.message.content == '{"city":"Oslo","unit":"celsius","days":[1,2]}'
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    (request,) = router.requests  # no tools: straight to the forced call; stop is for text answers only
    assert (request["tools"], request["tool_choice"], request["parallel_tool_calls"]) == (["Forecast"], "Forecast", False)
    assert request["max_new_tokens"] == 40 and request["stop"] is None
    ((tool,),) = seen
    assert tool.parameters == normalize_tool({"name": "Forecast", "parameters": to_strict_json_schema(Forecast)}).parameters
    assert "JSON" in tool.description


def test_the_openai_sdks_streaming_helper_reads_text_and_structured_answers(scripted, client):
    """`client.chat.completions.stream(...)` (the SDK's helper: content delta events, a final parsed completion)."""
    router, _ = scripted
    router.script = [text("A short answer here."),
                     structured("Forecast", city="Oslo", unit="celsius", days=[1])]
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "hi"}]) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta" and event.delta]
        final = stream.get_final_completion()
    assert deltas == ["A ", "short ", "answer ", "here."] and final.choices[0].message.content == "".join(deltas)
    with client.chat.completions.stream(model="m", messages=[{"role": "user", "content": "Oslo"}],
                                        response_format=Forecast) as stream:
        parsed = stream.get_final_completion().choices[0].message.parsed
    assert parsed == Forecast(city="Oslo", unit="celsius", days=[1])


def test_json_object_and_a_described_schema_streamed(scripted, client):
    router, _ = scripted
    seen = []
    router.default = lambda messages, tools, choice: seen.append(tools[0]) or structured(tools[0].name, answer=42)
    user = [{"role": "user", "content": "Six times seven?"}]
    response = client.chat.completions.create(model="m", messages=user, response_format={"type": "json_object"})
    assert json.loads(response.choices[0].message.content) == {"answer": 42}
    assert seen[0].parameters == {"type": "object", "additionalProperties": True, "properties": {}}
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    stream = client.chat.completions.create(model="m", messages=user, stream=True, response_format={
        "type": "json_schema", "json_schema": {"name": "result", "description": "The number.", "schema": schema}})
    assert _assemble(stream)[:3] == ('{"answer":42}', {}, "stop")
    assert (seen[1].name, seen[1].description) == ("result", "The number.")


def test_tools_and_response_format_together(scripted, client):
    """Routed with the tools first: a call is answered as a call, a text decision by the structured answer."""
    router, _ = scripted
    forecast = {"city": "Oslo", "unit": "celsius", "days": [3]}
    router.script = [call("GetWeather", city="Oslo"), text(""), structured("Forecast", **forecast),
                     structured("Forecast", **forecast)]
    user = [{"role": "user", "content": "Oslo weather"}]
    tools = [openai.pydantic_function_tool(GetWeather)]
    first = client.chat.completions.parse(model="m", messages=user, tools=tools, response_format=Forecast).choices[0]
    assert first.finish_reason == "tool_calls" and first.message.content is None
    assert first.message.tool_calls[0].function.parsed_arguments == GetWeather(city="Oslo")
    second = client.chat.completions.parse(model="m", messages=user, tools=tools, response_format=Forecast)
    assert second.choices[0].message.parsed == Forecast(**forecast) and not second.choices[0].message.tool_calls
    assert second.usage.prompt_tokens == 2 * 2 and second.usage.completion_tokens == 0 + 10  # both routes count
    third = client.chat.completions.parse(model="m", messages=user, tools=tools, response_format=Forecast,
                                          tool_choice="none")
    assert third.choices[0].message.parsed == Forecast(**forecast)
    assert [(r["tools"], r["tool_choice"], r["max_text_tokens"]) for r in router.requests] == [
        (["GetWeather"], None, 0), (["GetWeather"], None, 0), (["Forecast"], "Forecast", None),
        (["Forecast"], "Forecast", None)]


def test_structured_output_text_reads_the_call_as_the_grammar_accepted_it():
    pruned = RouteResult(calls=[ToolCall(id="c", name="a", arguments={"x": 1})],  # e.g. drop_unstated_optionals
                         raw='[{"name":"a","arguments":{"x":1,"note":"kept"}}]')
    assert structured_output_text(pruned) == '{"x":1,"note":"kept"}'
    assert structured_output_text(call("a", x=1)) == '{"x":1}'  # raw is not the call list: from the call
    assert structured_output_text(RouteResult(finish_reason="length", usage=RouteUsage())) is None


def test_auth(scripted):
    router, base_url = scripted
    router.default = text("ok")
    with pytest.raises(openai.AuthenticationError) as error:
        OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
    assert error.value.status_code == 401 and error.value.code == "invalid_api_key"
    response = httpx.post(f"{base_url}/chat/completions", json={"model": "m", "messages": []})  # no key
    assert response.status_code == 401
    assert response.json() == {"error": {"message": response.json()["error"]["message"],
                                         "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    assert router.requests == []
    with serve_in_thread(create_app(router)) as open_url:  # no api_key: any or no key is fine
        assert OpenAI(base_url=open_url, api_key="anything", max_retries=0).models.list().data


BAD_REQUESTS = [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model", "Missing required parameter"),
    ({"model": "m", "messages": []}, "messages", "at least 1"),
    ({"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, "messages.[0].role", "Invalid value"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages.[0].content", "Invalid value"),
    ({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages.[0].content.[0]", "only text content"),
    ({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "echo", "arguments": "{nope"}}]}]},
     "messages.[0].tool_calls.[0].function.arguments", "not valid JSON"),
    ({"model": "m", "messages": [{"role": "user", "content": "  "}]}, "messages", "no non-empty"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens", "greater than"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream", "boolean"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "custom", "custom": {}}]},
     "tools.[0].type", "Invalid value"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "x", "parameters": {"type": "string"}}}]}, "tools", "type 'object'"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [ECHO, ECHO]}, "tools", "echo"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [ECHO] * 9}, "tools", "at most 8"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "x", "description": "y"}]},
     "tools.[0]", "MCP tool {'name', 'description', 'inputSchema'}"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "x", "inputSchema": 5}]},
     "tools.[0].inputSchema", "Invalid value"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [
        {"name": "x", "inputSchema": {"type": "array"}}]}, "tools", "type 'object'"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 2}, "n", "only n=1"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "logprobs": True}, "logprobs", "not supported"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}, "top_logprobs",
     "not supported"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"42": 5}}, "logit_bias",
     "not supported"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "functions": [{"name": "x"}]}, "functions",
     "send 'tools'"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}, "temperature", "less than"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": list("abcde")}, "stop", "at most 4"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": ""}, "stop", "at least 1"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}},
     "response_format.type", "Invalid value"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_schema"}},
     "response_format.json_schema", "Missing required parameter"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}}, "response_format.json_schema.name",
     "pattern"),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "array"}}}}, "response_format",
     "type 'object'"),
]


@pytest.mark.parametrize(("body", "param", "message"), BAD_REQUESTS)
def test_bad_requests_are_400_in_openais_shape(scripted, client, body, param, message):
    router, _ = scripted
    router.default = text("ok")
    with pytest.raises(openai.BadRequestError) as error:
        client.post("/chat/completions", body=body, cast_to=object)
    assert error.value.status_code == 400 and error.value.type == "invalid_request_error"
    assert error.value.param == param and message in error.value.message
    assert router.requests == []


def test_invalid_json_and_unknown_paths(scripted):
    _, base_url = scripted
    headers = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
    response = httpx.post(f"{base_url}/chat/completions", headers=headers, content=b'{"model": ')
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    response = httpx.get(f"{base_url}/nowhere", headers=headers)
    assert response.status_code == 404 and response.json()["error"]["type"] == "invalid_request_error"
    response = httpx.post(f"{base_url}/chat/completions", headers=headers,  # the script is empty: the router fails
                          json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"


def test_too_large_bodies_are_413(scripted, client):
    router, base_url = scripted
    with pytest.raises(openai.APIStatusError) as error:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 100_000}])
    assert error.value.status_code == 413 and error.value.code == "request_too_large"

    def chunked():  # no content-length: the limit holds while reading
        for _ in range(20):
            yield b" " * 8192

    response = httpx.post(f"{base_url}/chat/completions", content=chunked(),
                          headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert router.requests == []


def _by_content(messages, tools, tool_choice) -> RouteResult:
    """Scripted as a function of the request: `n=<i>` calls echo(n=i) when i is odd and answers in text when even."""
    n = int(re.search(r"n=(\d+)", messages[-1]["content"]).group(1))
    return call("echo", n=n, tag=f"tag-{n}") if n % 2 else text(f"answer {n}")


async def test_100_concurrent_requests_are_neither_lost_nor_cross_wired(scripted):
    router, base_url = scripted
    router.default, router.delay_s = _by_content, 0.05

    async def one(client: AsyncOpenAI, n: int) -> None:
        kwargs = {"model": f"model-{n}", "messages": [{"role": "user", "content": f"request n={n}"}], "tools": TOOLS}
        if n % 3 == 0:
            stream = await client.chat.completions.create(**kwargs, stream=True)
            content, tool_calls, finish_reason, _ = _assemble([chunk async for chunk in stream])
            arguments = [json.loads(c["arguments"]) for c in tool_calls.values()]
        else:
            response = await client.chat.completions.create(**kwargs)
            assert response.model == f"model-{n}"
            message, finish_reason = response.choices[0].message, response.choices[0].finish_reason
            content = message.content or ""
            arguments = [json.loads(c.function.arguments) for c in message.tool_calls or ()]
        if n % 2:
            assert (content, arguments, finish_reason) == ("", [{"n": n, "tag": f"tag-{n}"}], "tool_calls")
        else:
            assert (content, arguments, finish_reason) == (f"answer {n}", [], "stop")

    async with AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0) as client:
        await asyncio.gather(*(one(client, n) for n in range(100)))
    assert len(router.requests) == 100
    assert router.max_in_flight > 1  # the requests overlapped inside the server


class QueuedRouter(ScriptedRouter):
    """A scripted router whose `aroute` waits in a real `RequestBatcher` queue, served one request at a time in
    `serve_s` each, as on a busy device: every request queued ahead makes a later one wait. Streamed pieces come
    `serve_s` apart."""

    def __init__(self, serve_s: float):
        super().__init__(default=_by_content)
        self.serve_s = serve_s
        self.batcher = RequestBatcher(self._serve, max_batch_size=1, wait_s=0)

    def _serve(self, requests: list[dict]) -> list[RouteResult]:
        time.sleep(self.serve_s)
        return [self.route(**request) for request in requests]

    async def aroute(self, query, tools=None, **kwargs) -> RouteResult:
        return await self.batcher.submit({"query": query, "tools": tools, **kwargs})

    async def astream(self, query, tools=None, **kwargs) -> AsyncIterator[RouteChunk]:
        """A text answer's pieces `serve_s` apart, as decoded."""
        async for chunk in super().astream(query, tools, **kwargs):
            yield chunk
            await asyncio.sleep(self.serve_s)


def _raw_request(n: int, stream: bool = False) -> bytes:
    """A whole chat completion request as HTTP/1.1 bytes, for a client that goes away before the answer."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": f"n={n}"}], "stream": stream}).encode()
    return (f"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


def test_past_max_pending_a_request_is_refused_at_once_with_429():
    """Requests waiting for the router, and a stream until its end, hold the slots; past them, an immediate 429."""
    router = QueuedRouter(serve_s=0.5)
    messages = [{"role": "user", "content": "n=2"}]

    async def refused(client: AsyncOpenAI) -> None:
        started = time.perf_counter()
        with pytest.raises(openai.RateLimitError) as error:
            await client.chat.completions.create(model="m", messages=messages)
        assert time.perf_counter() - started < 0.4  # at once, not queued
        assert error.value.code == "rate_limit_exceeded" and error.value.type == "requests"
        assert error.value.response.headers["retry-after"] == "1"

    async def scenario(base_url: str) -> None:
        async with AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0) as client:
            waiting = asyncio.create_task(client.chat.completions.create(model="m", messages=messages))
            await asyncio.sleep(0.1)
            await refused(client)
            assert (await waiting).choices[0].message.content == "answer 2"
            stream = await client.chat.completions.create(model="m", messages=messages, stream=True)
            await refused(client)  # the stream is being sent
            assert _assemble([chunk async for chunk in stream])[0] == "answer 2"
            answer = await client.chat.completions.create(model="m", messages=messages)  # its slot came back
            assert answer.choices[0].message.content == "answer 2"

    try:
        with serve_in_thread(create_app(router, api_key=KEY, max_pending=1)) as base_url:
            asyncio.run(scenario(base_url))
    finally:
        router.batcher.close()
    assert len(router.requests) == 3


@pytest.mark.parametrize("max_pending", [0, -1])
def test_max_pending_must_be_positive(max_pending):
    with pytest.raises(ValueError, match="max_pending"):
        create_app(ScriptedRouter(), max_pending=max_pending)


def test_requests_whose_clients_left_are_not_decoded():
    """Clients that send a request (plain or streamed) and disconnect before the answer: their requests leave the
    queue undecoded, their slots come back, and the next request does not wait behind them."""
    router, abandoned = QueuedRouter(serve_s=0.4), 6
    try:
        with serve_in_thread(create_app(router, api_key=KEY, max_pending=abandoned)) as base_url:
            port = int(base_url.split(":")[-1].split("/")[0])
            clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(abandoned)]
            for n, client in enumerate(clients):
                client.sendall(_raw_request(2 * n, stream=n % 2 == 1))  # even n: a text answer
            time.sleep(0.2)  # all queued, the first being served
            for client in clients:
                client.close()
            time.sleep(0.05)
            started = time.perf_counter()
            response = httpx.post(f"{base_url}/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                                  json={"model": "m", "messages": [{"role": "user", "content": "n=100"}]})
            latency = time.perf_counter() - started
    finally:
        router.batcher.close()
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "answer 100"
    assert latency < 3 * router.serve_s  # not behind the abandoned ones (that would take 6 x 0.4 s)
    served = [r["messages"][-1]["content"] for r in router.requests]
    assert served == ["n=0", "n=100"]  # only the one already being served when its client left


def _until_closed(sock: socket.socket, head: bytes, trickle: bytes, limit_s: float) -> tuple[bytes, float]:
    """Send `head`, then `trickle` a byte every 50 ms, until the server closes the connection: (what it answered,
    seconds until it closed); fails past `limit_s`."""
    started = time.perf_counter()
    received, position = b"", 0
    sock.sendall(head)
    while time.perf_counter() - started < limit_s:
        if select.select([sock], [], [], 0.05)[0]:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return received, time.perf_counter() - started
            received += data
        elif position < len(trickle):
            try:
                sock.sendall(trickle[position:position + 1])
            except (BrokenPipeError, ConnectionResetError):
                return received, time.perf_counter() - started
            position += 1
    raise AssertionError(f"the connection is still open after {limit_s} s")


def test_slow_clients_are_cut_off_after_the_read_timeout():
    """A request head, or a body, trickled a byte at a time (and a connection that sends nothing) is cut off
    after `read_timeout_s`: the head by closing the connection, the body with a 408."""
    router = ScriptedRouter(default=text("hi"))
    app = create_app(router, api_key=KEY, read_timeout_s=0.5)
    with serve_in_thread(app, read_timeout_s=0.5) as base_url:
        port = int(base_url.split(":")[-1].split("/")[0])
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {KEY}\r\n"
                "content-type: application/json\r\ncontent-length: 200\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            answered, seconds = _until_closed(sock, head[:20], head[20:], limit_s=3)
        assert answered == b"" and 0.4 < seconds < 1.5
        with socket.create_connection(("127.0.0.1", port)) as sock:
            answered, seconds = _until_closed(sock, b"", b"", limit_s=3)
        assert answered == b"" and 0.4 < seconds < 1.5
        with socket.create_connection(("127.0.0.1", port)) as sock:
            answered, seconds = _until_closed(sock, head, b" " * 200, limit_s=3)
        assert answered.startswith(b"HTTP/1.1 408 ") and b'"code":"request_timeout"' in answered
        assert 0.4 < seconds < 1.5
        response = httpx.post(f"{base_url}/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                              json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200  # a request sent at once is untouched
    assert len(router.requests) == 1


def test_cli_serve_passes_its_options(monkeypatch):
    seen = {}
    monkeypatch.setattr(server, "serve", lambda checkpoint, **kwargs: seen.update(checkpoint=checkpoint, **kwargs))
    cli.main(["serve", "--checkpoint", "ckpt", "--host", "0.0.0.0", "--port", "9001", "--api-key", "k",
              "--device", "cpu", "--dtype", "bfloat16", "--max-pending", "8", "--read-timeout", "2.5",
              "--keep-alive", "3"])
    assert seen == {"checkpoint": "ckpt", "host": "0.0.0.0", "port": 9001, "api_key": "k", "device": "cpu",
                    "dtype": "bfloat16", "max_pending": 8, "read_timeout_s": 2.5, "keep_alive_s": 3}
    seen.clear()
    cli.main(["serve"])  # the limits left out: `serve`'s defaults
    assert not {"max_pending", "read_timeout_s", "keep_alive_s"} & seen.keys()


@pytest.mark.slow
async def test_a_real_tiny_router_behind_the_server(make_router):
    """The real `aroute` path: grammar-valid calls come back through the server, concurrent requests batched."""
    router = make_router()
    zone = {"type": "function", "function": {"name": "get_time", "description": "Current time in a zone.",
                                             "parameters": {"type": "object", "required": ["zone"], "properties": {
                                                 "zone": {"type": "string", "enum": ["utc", "local"]}}}}}
    tools = [zone, WEATHER]
    try:
        with serve_in_thread(create_app(router)) as base_url:
            async with AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0) as client:
                responses = await asyncio.gather(*(client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": f"What time is it? ({i})"}], tools=tools,
                    tool_choice={"type": "function", "function": {"name": "get_time"}}, parallel_tool_calls=False,
                    max_tokens=32) for i in range(4)))
                for response in responses:
                    (tool_call,) = response.choices[0].message.tool_calls
                    assert response.choices[0].finish_reason == "tool_calls" and tool_call.function.name == "get_time"
                    jsonschema.validate(json.loads(tool_call.function.arguments), zone["function"]["parameters"])
                    assert response.usage.router["gist_tokens"] == 2 * router.config.num_gists
                answer = await client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "Hello"}], tools=tools, tool_choice="none",
                    max_tokens=3)
                assert answer.choices[0].finish_reason in ("stop", "length")
                assert not answer.choices[0].message.tool_calls
                assert answer.usage.completion_tokens <= 3
                with pytest.raises(openai.BadRequestError):
                    await client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                                         tools=[{"type": "function", "function": {"name": ""}}])
    finally:
        router.close()


@pytest.mark.slow
def test_stop_and_structured_answers_on_a_real_tiny_router(make_router):
    """The real grammar: a stop sequence cuts the text answer, a structured answer follows its schema, and a
    schema the grammar cannot enforce is refused before routing."""

    class Verdict(BaseModel):
        unit: Literal["celsius", "fahrenheit"]
        urgent: bool

    router = make_router()
    try:
        with serve_in_thread(create_app(router)) as base_url:
            client = OpenAI(base_url=base_url, api_key="none", max_retries=0)
            hello = {"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16}
            whole = client.chat.completions.create(**hello).choices[0].message.content
            stop = whole[len(whole) // 2:][:2]
            cut = client.chat.completions.create(**hello, stop=[stop]).choices[0]
            assert len(stop) == 2 and cut.finish_reason == "stop"
            assert cut.message.content == whole[:whole.index(stop)].rstrip()
            parsed = client.chat.completions.parse(model="tiny", messages=[{"role": "user", "content": "Unit?"}],
                                                   response_format=Verdict, max_tokens=48).choices[0]
            assert parsed.finish_reason == "stop" and isinstance(parsed.message.parsed, Verdict)
            lookahead = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?=x)"}}}
            with pytest.raises(openai.BadRequestError) as error:
                client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                               response_format={"type": "json_schema", "json_schema": {
                                                   "name": "a", "schema": lookahead}})
            assert error.value.param == "response_format" and "cannot be enforced" in error.value.message
    finally:
        router.close()


class Person(BaseModel):
    name: str
    age: int
    city: str


@pytest.mark.slow
def test_structured_answers_from_the_default_checkpoint(default_router):
    """The OpenAI SDK's `parse` against the default checkpoint: extraction, a JSON object, and with tools a call."""
    weather = {"type": "function", "function": {  # strict, as `parse` wants its tools
        "name": "get_weather", "description": "Current weather in a city.", "strict": True, "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
            "additionalProperties": False}}}
    with serve_in_thread(create_app(default_router)) as base_url:
        client = OpenAI(base_url=base_url, api_key="none", max_retries=0)
        alice = [{"role": "user", "content": "Alice is 30 years old and lives in Paris."}]
        person = client.chat.completions.parse(model="default", messages=alice, response_format=Person)
        assert person.choices[0].message.parsed == Person(name="Alice", age=30, city="Paris")
        capital = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "The capital of France, as JSON."}],
            response_format={"type": "json_object"}, max_tokens=64).choices[0]
        assert capital.finish_reason == "stop" and isinstance(json.loads(capital.message.content), dict)
        paris = [{"role": "user", "content": "What's the weather in Paris right now?"}]
        called = client.chat.completions.parse(model="default", messages=paris, tools=[weather],
                                               response_format=Person).choices[0]
        assert called.message.tool_calls[0].function.parsed_arguments == {"city": "Paris"}


@pytest.mark.slow
def test_the_example_against_the_cli_server(tmp_path, capsys):
    """`toolformer-router serve` on the default checkpoint as a subprocess, then the example's main against it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "toolformer_router.cli", "serve", "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if httpx.get(f"{base_url}/models").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        spec = importlib.util.spec_from_file_location("openai_client_example", ROOT / "examples" / "openai_client.py")
        example = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(example)
        example.main(["--base-url", base_url])
        out = capsys.readouterr().out
        assert "> " in out and "streamed" in out
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_an_empty_api_key_is_refused_at_startup():
    with pytest.raises(ValueError, match="api_key must not be empty"):
        create_app(ScriptedRouter(), api_key=" ")


def test_serve_command_passes_the_limits_it_is_given_and_leaves_the_rest_to_serve(monkeypatch):
    import toolformer_router.adapters.server as server
    from toolformer_router.cli import main

    seen = {}
    monkeypatch.setattr(server, "serve", lambda checkpoint, **options: seen.update(options, checkpoint=checkpoint))
    main(["serve", "--max-cached-tools", "5", "--max-pending", "3"])
    assert seen["max_cached_tools"] == 5 and seen["max_pending"] == 3 and seen["checkpoint"] == "default"
    assert "read_timeout_s" not in seen and "keep_alive_s" not in seen  # unset: serve's own defaults
