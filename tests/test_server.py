"""The OpenAI-compatible server, exercised through a real uvicorn server and the official `openai` client."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from conftest import EMAIL, WEATHER
from openai import AsyncOpenAI, OpenAI
from scripted import ScriptedRouter, call, calls, text

from toolformer_router import cli
from toolformer_router.adapters import server
from toolformer_router.adapters.server import create_app, serve_in_thread
from toolformer_router.types import RouteResult

ROOT = Path(__file__).parent.parent
KEY = "sk-test-key"
ECHO = {"type": "function", "function": {"name": "echo", "description": "Echo a number.", "parameters": {
    "type": "object", "properties": {"n": {"type": "integer"}, "tag": {"type": "string"}}, "required": ["n"]}}}
TOOLS = [WEATHER, {"type": "function", "function": EMAIL}, ECHO]


@pytest.fixture
def scripted():
    """A scripted router behind a live server (API key required, small limits): (router, base_url)."""
    router = ScriptedRouter()
    with serve_in_thread(create_app(router, api_key=KEY, max_body_bytes=64 * 1024, max_tools=8)) as base_url:
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


def test_cli_serve_passes_its_options(monkeypatch):
    seen = {}
    monkeypatch.setattr(server, "serve", lambda checkpoint, **kwargs: seen.update(checkpoint=checkpoint, **kwargs))
    cli.main(["serve", "--checkpoint", "ckpt", "--host", "0.0.0.0", "--port", "9001", "--api-key", "k",
              "--device", "cpu", "--dtype", "bfloat16"])
    assert seen == {"checkpoint": "ckpt", "host": "0.0.0.0", "port": 9001, "api_key": "k", "device": "cpu",
                    "dtype": "bfloat16"}


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
