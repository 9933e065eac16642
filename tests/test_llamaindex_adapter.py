"""LlamaIndex adapter: `ToolFormerLLM` driven by a scripted router (exact call sequences), plus one slow run on the
real default checkpoint and the example."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.llms import MockFunctionCallingLLM, MockLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.core.types import PydanticProgramMode
from pydantic import BaseModel, Field, ValidationError
from scripted import ScriptedRouter, call, calls, text
from toolformer_router.adapters.llamaindex import (
    NoToolCallError,
    ToolFormerLLM,
    to_router_messages,
)

from toolformer_router.errors import (
    DuplicateToolError,
    InvalidQueryError,
    InvalidToolError,
    ToolRouterError,
    TooManyToolsError,
    UnknownToolError,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")  # llama-index workflows' getmembers
EXAMPLE = Path(__file__).parents[1] / "examples" / "llamaindex_agent.py"


def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather for a city."""
    return f"sunny in {city} ({unit})"


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def send_email(to: str, body: str) -> str:
    """Send an email."""
    return f"sent to {to}"


TOOLS = [FunctionTool.from_defaults(f) for f in (get_weather, add, send_email)]
NAMES = ["get_weather", "add", "send_email"]


class RecordingLLM(MockLLM):
    """A plain (non-tool) LLM that records the kwargs of each chat call; answers with the prompt echoed."""

    seen: list[dict[str, Any]] = Field(default_factory=list)

    def chat(self, messages, **kwargs):
        self.seen.append(kwargs)
        return ChatResponse(message=ChatMessage(role="assistant", content=f"fallback: {messages[-1].content}"))

    async def achat(self, messages, **kwargs):
        return self.chat(messages, **kwargs)

    def stream_chat(self, messages, **kwargs):
        yield self.chat(messages, **kwargs)


def user(content: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=content)]


async def run_agent(agent: FunctionAgent, question: str, **kwargs: Any) -> tuple[Any, list[ToolCallResult]]:
    handler = agent.run(user_msg=question, **kwargs)
    results = [e async for e in handler.stream_events() if isinstance(e, ToolCallResult)]
    return await handler, results


# ----------------------------------------------------------------------------------- agents
@pytest.mark.parametrize("streaming", [True, False])
async def test_function_agent_calls_tool_then_answers(streaming):
    router = ScriptedRouter([call("get_weather", city="Paris"), text("It is sunny in Paris.")])
    agent = FunctionAgent(tools=TOOLS, llm=ToolFormerLLM(router=router), streaming=streaming)
    output, results = await run_agent(agent, "Weather in Paris?")
    assert str(output.response.content) == "It is sunny in Paris."
    assert [(r.tool_name, r.tool_kwargs, r.tool_output.is_error) for r in results] == [
        ("get_weather", {"city": "Paris"}, False)]
    first, second = router.requests
    assert first["tools"] == second["tools"] == NAMES
    assert first["tool_choice"] is None and first["parallel_tool_calls"] is True
    assert first["messages"] == [{"role": "user", "content": "Weather in Paris?"}]
    assert second["messages"][1]["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert second["messages"][2] == {"role": "tool", "content": "sunny in Paris (celsius)", "name": "get_weather"}


async def test_function_agent_parallel_calls_and_initial_tool_choice():
    router = ScriptedRouter([calls(("add", {"a": 2, "b": 3}), ("add", {"a": 1, "b": 1})),
                             call("send_email", to="a@b.c", body="5, 2"), text("Done, emailed.")])
    agent = FunctionAgent(tools=TOOLS, llm=ToolFormerLLM(router=router), initial_tool_choice="add")
    output, results = await run_agent(agent, "Add 2+3 and 1+1 and email it")
    assert str(output.response.content) == "Done, emailed."
    assert sorted((r.tool_name, str(r.tool_output.content)) for r in results) == [
        ("add", "2"), ("add", "5"), ("send_email", "sent to a@b.c")]
    assert [r["tool_choice"] for r in router.requests] == ["add", None, None]
    tool_messages = [m for m in router.requests[2]["messages"] if m["role"] == "tool"]
    assert sorted((m["name"], m["content"]) for m in tool_messages) == [("add", "2"), ("add", "5"),
                                                                        ("send_email", "sent to a@b.c")]


async def test_function_agent_fallback_answers_without_tools():
    fallback = RecordingLLM()
    router = ScriptedRouter([call("add", a=1, b=1), text("ignored")])
    agent = FunctionAgent(tools=TOOLS, llm=ToolFormerLLM(router=router, fallback=fallback), streaming=False)
    output, results = await run_agent(agent, "1+1?")
    assert [r.tool_name for r in results] == ["add"]
    assert str(output.response.content) == "fallback: 2"  # the fallback saw the tool result last
    assert fallback.seen == [{}]
    assert [r["max_text_tokens"] for r in router.requests] == [0, 0]  # the router only decides


# ----------------------------------------------------------------------------------- FunctionCallingLLM API
def test_predict_and_call():
    router = ScriptedRouter([call("add", a=4, b=5)])
    response = ToolFormerLLM(router=router).predict_and_call(TOOLS, user_msg="4+5?")
    assert response.response == "9" and response.sources[0].tool_name == "add"
    assert router.requests[0]["parallel_tool_calls"] is False and router.requests[0]["tools"] == NAMES


async def test_apredict_and_call_parallel():
    router = ScriptedRouter([calls(("add", {"a": 1, "b": 2}), ("add", {"a": 3, "b": 4}))])
    response = await ToolFormerLLM(router=router).apredict_and_call(TOOLS, user_msg="1+2, 3+4",
                                                                   allow_parallel_tool_calls=True)
    assert response.response == "3\n\n7"


def test_predict_and_call_no_call_errors():
    llm = ToolFormerLLM(router=ScriptedRouter([text("no"), text("no")]))
    with pytest.raises(NoToolCallError):
        llm.predict_and_call(TOOLS, user_msg="hi")
    assert llm.predict_and_call(TOOLS, user_msg="hi", error_on_no_tool_call=False).response == "no"


class Invoice(BaseModel):
    """An invoice."""

    customer: str
    amount: float


async def test_structured_predict_forces_a_call():
    router = ScriptedRouter([call("Invoice", customer="ACME", amount=12.5)] * 2)
    llm = ToolFormerLLM(router=router)
    prompt = PromptTemplate("Extract the invoice: {text}")
    assert llm.structured_predict(Invoice, prompt, text="ACME owes 12.5") == Invoice(customer="ACME", amount=12.5)
    assert await llm.astructured_predict(Invoice, prompt, text="x") == Invoice(customer="ACME", amount=12.5)
    assert [(r["tools"], r["tool_choice"]) for r in router.requests] == [(["Invoice"], "required")] * 2
    assert router.requests[0]["messages"][-1]["content"] == "Extract the invoice: ACME owes 12.5"


async def test_stream_structured_predict_yields_the_whole_forced_answer():
    router = ScriptedRouter([call("Invoice", customer="ACME", amount=12.5)] * 2)
    llm = ToolFormerLLM(router=router)
    prompt = PromptTemplate("Extract the invoice: {text}")
    assert list(llm.stream_structured_predict(Invoice, prompt, text="ACME owes 12.5")) == [
        Invoice(customer="ACME", amount=12.5)]
    answers = [a async for a in await llm.astream_structured_predict(Invoice, prompt, text="x")]
    assert answers == [Invoice(customer="ACME", amount=12.5)]
    assert [(r["tools"], r["tool_choice"], r["parallel_tool_calls"]) for r in router.requests] == [
        (["Invoice"], "Invoice", False)] * 2
    assert router.requests[0]["messages"][-1]["content"] == "Extract the invoice: ACME owes 12.5"


def test_stream_structured_predict_in_text_mode_goes_to_llamaindexs_program():
    router = ScriptedRouter([text('{"customer": "ACME", "amount": 3}')])
    llm = ToolFormerLLM(router=router, pydantic_program_mode=PydanticProgramMode.LLM)
    answers = list(llm.stream_structured_predict(Invoice, PromptTemplate("Extract: {text}"), text="ACME, 3"))
    assert (answers[-1].customer, answers[-1].amount) == ("ACME", 3) and router.requests[0]["tools"] == []


def test_prepare_chat_with_tools():
    llm = ToolFormerLLM(router=ScriptedRouter())
    history = user("hi")
    kwargs = llm._prepare_chat_with_tools(TOOLS[:1], user_msg="weather?", chat_history=history, tool_required=True)
    assert len(history) == 1  # not mutated
    assert [m.content for m in kwargs["messages"]] == ["hi", "weather?"]
    assert kwargs["tool_choice"] == "required" and kwargs["parallel_tool_calls"] is False
    (tool,) = kwargs["tools"]
    assert tool["name"] == "get_weather" and tool["description"].endswith("Current weather for a city.")
    assert tool["parameters"]["required"] == ["city"]
    assert llm._prepare_chat_with_tools(TOOLS, tool_choice="add", tool_required=True)["tool_choice"] == "add"


def test_get_tool_calls_from_response_matches_mock():
    response = ChatResponse(message=ChatMessage(role="assistant", blocks=[
        ToolCallBlock(tool_call_id="c1", tool_name="add", tool_kwargs={"a": 1, "b": 2}),
        ToolCallBlock(tool_call_id="c2", tool_name="get_weather", tool_kwargs='{"city": "Oslo"}')]))
    llm = ToolFormerLLM(router=ScriptedRouter())
    assert llm.get_tool_calls_from_response(response) == MockFunctionCallingLLM().get_tool_calls_from_response(
        response)
    no_call = ChatResponse(message=ChatMessage(role="assistant", content="hello"))
    assert llm.get_tool_calls_from_response(no_call, error_on_no_tool_call=False) == []
    with pytest.raises(NoToolCallError, match="hello") as error:
        llm.get_tool_calls_from_response(no_call)
    assert isinstance(error.value, ValueError) and isinstance(error.value, ToolRouterError)


def test_chat_response_carries_calls_and_usage():
    router = ScriptedRouter([call("add", a=1, b=2), text("plain")])
    llm = ToolFormerLLM(router=router)
    response = llm.chat_with_tools(TOOLS, user_msg="one plus two")
    (block,) = response.message.blocks
    assert isinstance(block, ToolCallBlock) and block.tool_kwargs == {"a": 1, "b": 2}
    assert response.message.content is None
    assert response.raw["usage"]["active_tools"] == 3 and response.raw["model"] == "scripted"
    usage = response.additional_kwargs
    assert usage["prompt_tokens"] == usage["input_tokens"] == 3 and usage["completion_tokens"] == 10
    assert {"gist_tokens", "cache_hits", "cache_misses", "latency_s", "total_tokens"} <= usage.keys()
    response = llm.chat(user("hello"))  # no tools bound: the router gets none (not its registered set)
    assert response.message.content == "plain" and router.requests[1]["tools"] == []


def test_metadata_without_loading_the_model():
    llm = ToolFormerLLM(max_new_tokens=64)
    meta = llm.metadata
    assert llm.router is None
    assert meta.is_function_calling_model and meta.is_chat_model and meta.context_window == 8192
    assert meta.num_output == 64 and meta.model_name == "toolformer-router/default"
    assert ToolFormerLLM(router=ScriptedRouter()).metadata.model_name == "scripted"


# ----------------------------------------------------------------------------------- streaming, completion
def test_stream_chat_and_complete():
    router = ScriptedRouter([text("Hi there"), call("add", a=1, b=1), text("done"), text("streamed")])
    llm = ToolFormerLLM(router=router)
    chunks = list(llm.stream_chat(user("hello")))  # the pieces as decoded, then the whole answer with its usage
    assert [(c.delta, c.message.content) for c in chunks] == [("Hi ", "Hi "), ("there", "Hi there"), ("", "Hi there")]
    assert chunks[-1].additional_kwargs["output_tokens"] == 2
    (chunk,) = list(llm.stream_chat_with_tools(TOOLS, user_msg="1+1"))
    assert chunk.delta == "" and [b.tool_name for b in chunk.message.blocks] == ["add"]
    assert llm.complete("say done").text == "done"
    completions = list(llm.stream_complete("go"))
    assert "".join(c.delta for c in completions) == completions[-1].text == "streamed"


async def test_astream_chat_and_acomplete():
    router = ScriptedRouter([text("async hi"), call("get_weather", city="Rome"), text("ok")])
    llm = ToolFormerLLM(router=router)
    chunks = [c async for c in await llm.astream_chat(user("hello"))]
    assert [(c.delta, c.message.content) for c in chunks] == [("async ", "async "), ("hi", "async hi"),
                                                               ("", "async hi")]
    chunks = [c async for c in await llm.astream_chat_with_tools(TOOLS, user_msg="Rome?")]
    assert llm.get_tool_calls_from_response(chunks[-1])[0].tool_kwargs == {"city": "Rome"}
    assert (await llm.acomplete("x")).text == "ok"


async def test_concurrent_achat_each_gets_its_own_answer():
    def echo(messages, tools, tool_choice):
        return text(f"answer to {messages[-1]['content']}")

    router = ScriptedRouter(default=echo, delay_s=0.01)
    llm = ToolFormerLLM(router=router)
    responses = await asyncio.gather(*(llm.achat(user(f"q{i}")) for i in range(50)))
    assert [r.message.content for r in responses] == [f"answer to q{i}" for i in range(50)]
    assert len(router.requests) == 50


# ----------------------------------------------------------------------------------- fallback
async def test_fallback_only_when_no_call():
    fallback = RecordingLLM()
    router = ScriptedRouter([text("x"), call("add", a=1, b=2), text("x"), text("x")])
    llm = ToolFormerLLM(router=router, fallback=fallback)
    assert llm.chat_with_tools(TOOLS, user_msg="hi").message.content == "fallback: hi"
    assert llm.get_tool_calls_from_response(llm.chat_with_tools(TOOLS, user_msg="1+2"))[0].tool_name == "add"
    assert (await llm.achat_with_tools(TOOLS, user_msg="yo")).message.content == "fallback: yo"
    assert [c.message.content for c in llm.stream_chat(user("s"))] == ["fallback: s"]
    assert fallback.seen == [{}, {}, {}]


def test_fallback_with_mock_function_calling_llm_gets_no_tools():
    fallback = MockFunctionCallingLLM()  # would call every tool if it were given any
    llm = ToolFormerLLM(router=ScriptedRouter([text("x")]), fallback=fallback)
    response = llm.chat_with_tools(TOOLS, user_msg="just chat")
    assert response.message.content == "just chat" and llm.get_tool_calls_from_response(response, False) == []


# ----------------------------------------------------------------------------------- messages
def test_to_router_messages():
    messages = [
        ChatMessage(role=MessageRole.DEVELOPER, content="Be brief."),
        ChatMessage(role="user", content="hi"),
        ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]}),
        ChatMessage(role="tool", content="3", additional_kwargs={"tool_call_id": "c1"}),
        ChatMessage(role="tool", content="?", additional_kwargs={"name": "get_weather"}),
        ChatMessage(role="assistant", blocks=[TextBlock(text="calling"),
                                              ToolCallBlock(tool_call_id="c2", tool_name="add", tool_kwargs={})]),
    ]
    system, _, assistant, result, named, last = to_router_messages(messages)
    assert system == {"role": "system", "content": "Be brief."}
    assert assistant["tool_calls"] == [{"id": "c1", "name": "add", "arguments": {"a": 1, "b": 2}}]
    assert (result["name"], result["content"]) == ("add", "3") and named["name"] == "get_weather"
    assert last["content"] == "calling" and last["tool_calls"][0]["name"] == "add"


# ----------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("tool, error", [
    ({"name": "", "description": "x", "parameters": {"type": "object"}}, InvalidToolError),
    ({"name": "t", "parameters": {"type": "string"}}, InvalidToolError),
    (FunctionTool.from_defaults(add, name="add"), DuplicateToolError),
])
def test_bad_tools(tool, error):
    llm = ToolFormerLLM(router=ScriptedRouter([text("x")]))
    with pytest.raises(error):
        llm.chat(user("hi"), tools=[TOOLS[1], tool])


def test_too_many_tools():
    llm = ToolFormerLLM(router=ScriptedRouter([text("x")]), max_tools=2)
    with pytest.raises(TooManyToolsError, match="max_tools=2"):
        llm.chat_with_tools(TOOLS, user_msg="hi")
    assert llm.chat_with_tools(TOOLS[:2], user_msg="hi").message.content == "x"


@pytest.mark.parametrize("message, match", [
    (ChatMessage(role=MessageRole.CHATBOT, content="hi"), "role 'chatbot'"),
    (ChatMessage(role="user", blocks=[ImageBlock(image=b"\x89PNG")]), "image content"),
    (ChatMessage(role="assistant", additional_kwargs={"tool_calls": [{"name": "add", "arguments": "{oops"}]}),
     "not valid JSON"),
])
async def test_bad_messages(message, match):
    llm = ToolFormerLLM(router=ScriptedRouter())
    with pytest.raises(InvalidQueryError, match=match):
        await llm.achat([*user("hi"), message])


def test_bad_tool_choice_and_empty_conversation():
    llm = ToolFormerLLM(router=ScriptedRouter())
    with pytest.raises(UnknownToolError, match="nope"):
        llm.chat_with_tools(TOOLS, user_msg="hi", tool_choice="nope")
    with pytest.raises(UnknownToolError):
        llm.chat(user("hi"), tool_choice="required")  # no tools bound
    with pytest.raises(InvalidQueryError):
        llm.chat([ChatMessage(role="user", content="  ")])


# ----------------------------------------------------------------------------------- example
def load_example():
    spec = importlib.util.spec_from_file_location("llamaindex_agent", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the example's dataclass looks its module up
    spec.loader.exec_module(module)
    return module


async def test_example_with_scripted_router():
    example = load_example()
    router = ScriptedRouter([call("get_weather", city="Lyon", unit="fahrenheit"), text("64F in Lyon.")])
    router.count_tokens = lambda s: len(s.split())
    result = await example.run("Weather in Lyon?", n_tools=200, llm=ToolFormerLLM(router=router))
    assert len(router.requests[0]["tools"]) == 200
    assert result["calls"] == [("get_weather", {"city": "Lyon", "unit": "fahrenheit"},
                                "18 degrees fahrenheit, sunny, in Lyon")]
    assert result["answer"] == "64F in Lyon." and result["routes"] == 2
    assert result["pasted_prompt_tokens"] > 10 * result["prompt_tokens"] > 0


# ----------------------------------------------------------------------------------- real checkpoint
@pytest.mark.slow
async def test_function_agent_on_default_checkpoint(default_router):
    llm = ToolFormerLLM(device="cpu", max_new_tokens=48)  # loads lazily: the process-wide CPU default router
    tools = TOOLS[:2]
    agent = FunctionAgent(tools=tools, llm=llm, initial_tool_choice="required", early_stopping_method="generate",
                          timeout=600)  # first step must call; "generate" ends the run with a tool-less answer
    output, results = await run_agent(agent, "What's the weather in Paris?", max_iterations=3)
    assert isinstance(output.response.content, str) and results and llm.router is default_router
    assert results[0].tool_name == "get_weather"  # the first step's required call: the weather tool
    for result in results:  # every call named a bound tool with arguments its function accepted
        assert result.tool_name in {"get_weather", "add"} and not result.tool_output.is_error, result


@pytest.mark.slow
def test_example_main_on_default_checkpoint(capsys):
    result = load_example().main(["What's the weather in Lyon?", "--tools", "20", "--require-call"])
    out = capsys.readouterr().out
    assert "call   " in out and "answer" in out and "pasting all 20 schemas" in out
    assert result["pasted_prompt_tokens"] > result["prompt_tokens"] > 0


# ----------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name, value", [("temperature", 0.1), ("timeout", 30), ("top_p", 0.5), ("api_key", "x")])
def test_constructor_parameters_the_router_cannot_honour_are_refused_by_name(name, value):
    with pytest.raises(ValidationError, match=name):
        ToolFormerLLM(router=ScriptedRouter(), **{name: value})


@pytest.mark.parametrize("kwargs, error, match", [({"temperature": 0.7}, ValueError, "temperature=0.7"),
                                                  ({"top_p": 0.5}, TypeError, "'top_p'"),
                                                  ({"max_tokens": 5}, TypeError, "'max_tokens'")])
async def test_call_parameters_the_router_cannot_honour_are_refused_by_name(kwargs, error, match):
    router = ScriptedRouter(default=text("never"))
    llm = ToolFormerLLM(router=router)
    with pytest.raises(error, match=match):
        llm.chat(user("hi"), **kwargs)
    with pytest.raises(error, match=match):
        await llm.achat_with_tools(TOOLS, user_msg="hi", **kwargs)
    with pytest.raises(error, match=match):
        llm.complete("hi", **kwargs)
    assert router.requests == []


def test_temperature_zero_and_the_output_budget_are_honoured():
    router = ScriptedRouter([text("a"), text("b")])
    llm = ToolFormerLLM(router=router, temperature=0, max_tokens=9)
    assert llm.chat(user("hi"), temperature=0).message.content == "a"
    assert llm.chat(user("hi"), temperature=None).message.content == "b"
    assert [r["max_new_tokens"] for r in router.requests] == [9, 9]
    assert ToolFormerLLM(router=router, max_new_tokens=7).max_tokens == 7  # the older name of the same budget


# ----------------------------------------------------------------------------------- images
async def test_turns_the_router_cannot_read_go_to_the_fallback_unless_they_need_a_call():
    fallback = RecordingLLM()
    router = ScriptedRouter()
    llm = ToolFormerLLM(router=router, fallback=fallback)
    image = ChatMessage(role="user", blocks=[TextBlock(text="What is this?"), ImageBlock(image=b"\x89PNG")])
    assert llm.chat_with_tools(TOOLS, chat_history=[image]).message.content == "fallback: What is this?"
    assert (await llm.achat([image])).message.content == "fallback: What is this?"
    assert [c.message.content for c in llm.stream_chat([image])] == ["fallback: What is this?"]
    assert router.requests == [] and len(fallback.seen) == 3
    with pytest.raises(InvalidQueryError, match="image content.*only when they need no call"):
        llm.chat_with_tools(TOOLS, chat_history=[image], tool_required=True)


def test_stream_chat_delivers_a_real_routers_text_piece_by_piece(make_router):
    llm = ToolFormerLLM(router=make_router(), max_tokens=24)
    chunks = list(llm.stream_chat(user("tell me a story")))
    whole = llm.chat(user("tell me a story")).message.content
    assert len(chunks) > 3 and "".join(c.delta for c in chunks) == chunks[-1].message.content == whole != ""
