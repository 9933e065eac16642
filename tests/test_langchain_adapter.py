"""ChatToolFormer: scripted-router tests for exact behaviour, LangGraph end to end, bad input, concurrency."""

from __future__ import annotations

import asyncio
import json
import warnings

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.load import dumps, loads
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field, ValidationError
from scripted import ScriptedRouter, call, calls, text

from toolformer_router import normalize_tool
from toolformer_router.adapters.langchain import ChatToolFormer
from toolformer_router.errors import InvalidQueryError, InvalidToolError, TooManyToolsError, UnknownToolError
from toolformer_router.types import RouteResult, RouteUsage


@tool
def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather for a city."""
    return f"18 degrees {unit} and sunny in {city}"


@tool
def send_email(to: str, body: str) -> str:
    """Send an email."""
    return f"sent to {to}"


class Person(BaseModel):
    """A person mentioned in the text."""

    name: str = Field(description="Full name")
    age: int


def model_with(*script, **fields) -> tuple[ChatToolFormer, ScriptedRouter]:
    router = ScriptedRouter(script)
    return ChatToolFormer(router=router, **fields), router


def test_tool_call_message_has_langchain_shape_usage_and_metadata():
    model, router = model_with(call("get_weather", city="Paris"))
    message = model.bind_tools([get_weather, send_email]).invoke("Weather in Paris?")
    assert isinstance(message, AIMessage) and message.content == ""
    [tool_call] = message.tool_calls
    assert tool_call["name"] == "get_weather" and tool_call["args"] == {"city": "Paris"}
    assert tool_call["type"] == "tool_call" and tool_call["id"].startswith("call_")
    assert message.usage_metadata["output_tokens"] == 10
    assert message.usage_metadata["input_tokens"] == router.requests[0]["messages"][0]["content"].count(" ") + 1
    assert message.response_metadata["active_tools"] == 2
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert router.requests[0]["tools"] == ["get_weather", "send_email"]


def test_text_answer_and_stop_sequences():
    model, _ = model_with(text("Hello there, how are you?"))
    assert model.invoke("hi", stop=[", how"]).content == "Hello there"


@pytest.mark.parametrize("choice", ["auto", "any", "required", True, "none", "get_weather",
                                    {"type": "function", "function": {"name": "get_weather"}}])
def test_tool_choice_reaches_the_router(choice):
    answer = text("ok") if choice in ("auto", "none") else call("get_weather", city="Oslo")
    model, router = model_with(answer)
    model.bind_tools([get_weather, send_email], tool_choice=choice).invoke("Oslo?")
    assert router.requests[0]["tool_choice"] == choice


def test_bad_binds_are_clear_errors():
    model, _ = model_with()
    with pytest.raises(UnknownToolError, match="not among the active tools"):
        model.bind_tools([get_weather], tool_choice="send_email")
    with pytest.raises(InvalidToolError):
        model.bind_tools([{"type": "function", "function": {"name": "x", "parameters": {"type": "array"}}}])
    limited, _ = model_with(max_tools=1)
    with pytest.raises(TooManyToolsError):
        limited.bind_tools([get_weather, send_email])


def test_unsupported_content_is_a_typed_error():
    model, router = model_with(text("never"))
    image = HumanMessage(content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])
    with pytest.raises(InvalidQueryError, match="image_url"):
        model.invoke([image])
    assert router.requests == []


def test_full_conversation_reaches_the_router_with_tool_names():
    model, router = model_with(text("It is 18 degrees in Paris."))
    history = [
        SystemMessage("Be brief."),
        HumanMessage("Weather in Paris?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}]),
        ToolMessage("18 degrees", tool_call_id="c1"),
        ToolMessage("timeout", tool_call_id="c1", status="error"),
    ]
    model.bind_tools([get_weather]).invoke(history)
    seen = router.requests[0]["messages"]
    assert [m["role"] for m in seen] == ["system", "user", "assistant", "tool", "tool"]
    assert seen[2]["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert seen[3] == {"role": "tool", "content": "18 degrees", "name": "get_weather"}
    assert seen[4]["content"] == "Error: timeout"


def test_stream_chunks_merge_into_the_same_calls():
    script = calls(("get_weather", {"city": "Paris"}), ("send_email", {"to": "a@b.c", "body": "hi"}))
    model, _ = model_with(script)
    chunks = list(model.bind_tools([get_weather, send_email]).stream("both"))
    assert chunks[-1].chunk_position == "last"
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert isinstance(merged, AIMessageChunk)
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [
        ("get_weather", {"city": "Paris"}), ("send_email", {"to": "a@b.c", "body": "hi"})]
    assert [c["id"] for c in merged.tool_calls] == [c.id for c in script.calls]
    assert merged.usage_metadata["output_tokens"] == 10


async def test_astream_text():
    model, _ = model_with(text("Hello!"))
    chunks = [chunk async for chunk in model.astream("hi")]
    assert "".join(c.text for c in chunks) == "Hello!" and chunks[-1].chunk_position == "last"


def test_text_streams_token_by_token_and_merges_into_the_invoked_message(make_router):
    """With a real (tiny) router, `stream` delivers a text answer in several pieces as it is decoded, each one
    reported to `on_llm_new_token`; the merged chunks equal what `invoke` answers."""
    class Tokens(BaseCallbackHandler):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def on_llm_new_token(self, token, **kwargs):
            self.seen.append(token)

    model = ChatToolFormer(router=make_router(), max_tokens=24)
    handler = Tokens()
    chunks = list(model.stream("tell me a story", config={"callbacks": [handler]}))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    invoked = model.invoke("tell me a story")
    assert sum(bool(chunk.content) for chunk in chunks) > 3 and merged.content == invoked.content != ""
    assert "".join(handler.seen) == invoked.content and len(handler.seen) > 3
    assert merged.response_metadata["finish_reason"] == invoked.response_metadata["finish_reason"]


async def test_astream_pieces_then_calls():
    model, _ = model_with(text("Three small words"), call("get_weather", city="Oslo"))
    pieces = [chunk.content async for chunk in model.astream("hi") if chunk.content]
    assert pieces == ["Three ", "small ", "words"]
    chunks = [chunk async for chunk in model.bind_tools([get_weather]).astream("weather")]
    assert [c["name"] for chunk in chunks for c in chunk.tool_call_chunks] == ["get_weather"]


def test_call_cut_by_the_budget_goes_to_invalid_tool_calls():
    cut = RouteResult(raw='[{"name":"get_weather","argu', finish_reason="length", model="scripted",
                      usage=RouteUsage(output_tokens=8))
    model, _ = model_with(cut)
    message = model.bind_tools([get_weather]).invoke("weather?")
    assert message.tool_calls == [] and message.invalid_tool_calls[0]["args"].startswith('[{"name"')


def test_call_closed_early_by_the_budget_is_kept_with_finish_reason_length():
    closed = call("get_weather", city="Par").model_copy(update={"finish_reason": "length"})
    model, _ = model_with(closed)
    message = model.bind_tools([get_weather]).invoke("weather?")
    assert [c["args"] for c in message.tool_calls] == [{"city": "Par"}] and message.invalid_tool_calls == []
    assert message.response_metadata["finish_reason"] == "length"


def test_no_call_turns_go_to_the_fallback_without_tools():
    fallback = GenericFakeChatModel(messages=iter(["A long, well written answer."]))
    model, router = model_with(text("short"), fallback=fallback)
    message = model.bind_tools([get_weather]).invoke("Tell me a story")
    assert message.content == "A long, well written answer."
    assert router.requests[0]["tools"] == ["get_weather"]  # the router decided; the fallback saw no tools
    assert router.requests[0]["max_text_tokens"] == 0  # the router only decides: no text it would throw away
    model.fallback = None
    router.script = [text("short")]
    assert model.bind_tools([get_weather]).invoke("hi").content == "short"
    assert router.requests[1]["max_text_tokens"] is None  # without a fallback the router's own text is the answer


def test_structured_output_pydantic_dict_and_raw():
    model, router = model_with(call("Person", name="Ada Lovelace", age=36), call("Person", name="Alan", age=41),
                               call("Person", name="Grace", age=85))
    assert model.with_structured_output(Person).invoke("Ada Lovelace, 36") == Person(name="Ada Lovelace", age=36)
    assert router.requests[0]["tool_choice"] in ("any", "Person")
    schema = Person.model_json_schema()
    schema["title"] = "Person"
    assert model.with_structured_output(schema).invoke("Alan, 41") == {"name": "Alan", "age": 41}
    raw = model.with_structured_output(Person, include_raw=True).invoke("Grace, 85")
    assert raw["parsed"] == Person(name="Grace", age=85) and raw["parsing_error"] is None
    assert isinstance(raw["raw"], AIMessage)


def test_ls_params_report_the_model():
    model, _ = model_with()
    params = model._get_ls_params()
    assert params["ls_provider"] == "toolformer-router" and params["ls_model_name"] == "scripted"


async def test_thousand_concurrent_ainvokes_are_not_cross_wired():
    def echo(messages, tools, tool_choice):
        return call("get_weather", city=messages[-1]["content"])

    router = ScriptedRouter(default=echo, delay_s=0.001)
    model = ChatToolFormer(router=router).bind_tools([get_weather])
    answers = await asyncio.gather(*(model.ainvoke(f"city-{i}") for i in range(1000)))
    assert [a.tool_calls[0]["args"]["city"] for a in answers] == [f"city-{i}" for i in range(1000)]
    assert len({a.tool_calls[0]["id"] for a in answers}) == 1000


async def test_cancelled_ainvoke_leaves_the_others_alone():
    router = ScriptedRouter(default=lambda m, t, c: text(m[-1]["content"]), delay_s=0.05)
    model = ChatToolFormer(router=router)
    tasks = [asyncio.create_task(model.ainvoke(f"q{i}")) for i in range(10)]
    await asyncio.sleep(0.01)
    tasks[3].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[3], asyncio.CancelledError)
    assert [d.content for i, d in enumerate(done) if i != 3] == [f"q{i}" for i in range(10) if i != 3]


def test_langgraph_react_agent_runs_the_exact_sequence():
    from langgraph.prebuilt import create_react_agent

    model, router = model_with(call("get_weather", city="Paris"), call("send_email", to="ann@x.org", body="sunny"),
                               text("Done: it is sunny and Ann knows."))
    agent = create_react_agent(model, [get_weather, send_email])
    state = agent.invoke({"messages": [HumanMessage("Check Paris weather and email ann@x.org")]})
    kinds = [type(m).__name__ for m in state["messages"]]
    assert kinds == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert state["messages"][2].content == "18 degrees celsius and sunny in Paris"
    assert state["messages"][-1].content == "Done: it is sunny and Ann knows."
    third = router.requests[2]["messages"]
    assert [m["role"] for m in third] == ["user", "assistant", "tool", "assistant", "tool"]
    assert third[2] == {"role": "tool", "content": "18 degrees celsius and sunny in Paris", "name": "get_weather"}
    assert all(r["tools"] == ["get_weather", "send_email"] for r in router.requests)


@pytest.mark.slow
def test_langgraph_agent_on_the_default_checkpoint_terminates_with_valid_calls(default_router):
    from langgraph.prebuilt import create_react_agent

    model = ChatToolFormer(router=default_router, max_new_tokens=96)
    agent = create_react_agent(model, [get_weather, send_email])
    state = agent.invoke({"messages": [HumanMessage("What's the weather in Paris?")]}, {"recursion_limit": 12})
    for message in state["messages"]:
        for tool_call in getattr(message, "tool_calls", []):
            assert tool_call["name"] in ("get_weather", "send_email")
            json.dumps(tool_call["args"])
            (get_weather if tool_call["name"] == "get_weather" else send_email).args_schema(**tool_call["args"])
    assert isinstance(state["messages"][-1], AIMessage) and not state["messages"][-1].tool_calls


def test_the_same_tool_twice_is_bound_once_but_two_tools_under_one_name_are_an_error():
    model, router = model_with(call("Person", name="Ada", age=36))
    schema = Person.model_json_schema()  # equal to the pydantic model but for "title" annotations
    model.bind_tools([Person, schema], tool_choice="any").invoke("Ada, 36")
    assert router.requests[0]["tools"] == ["Person"]
    other = {"title": "Person", "description": "Someone else.", "type": "object", "properties": {}}
    with pytest.raises(Exception, match="[Dd]uplicate"):
        model.bind_tools([Person, other])


def test_langchain_create_agent_rebinds_cheaply_and_runs_the_sequence():
    from langchain.agents import create_agent

    model, router = model_with(call("get_weather", city="Rome"), text("Sunny in Rome."))
    agent = create_agent(model, [get_weather, send_email])
    state = agent.invoke({"messages": [HumanMessage("Weather in Rome?")]})
    assert [type(m).__name__ for m in state["messages"]] == ["HumanMessage", "AIMessage", "ToolMessage", "AIMessage"]
    assert state["messages"][-1].content == "Sunny in Rome."
    assert [r["tools"] for r in router.requests] == [["get_weather", "send_email"]] * 2


# ----------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name, value", [("temperature", 0.7), ("timeout", 60), ("max_retries", 2),
                                         ("model_kwargs", {"top_p": 0.9}), ("api_key", "sk-x"), ("top_p", 0.9)])
def test_constructor_parameters_the_router_cannot_honour_are_refused_by_name(name, value):
    with pytest.raises(ValidationError, match=name):
        ChatToolFormer(router=ScriptedRouter(), **{name: value})


def test_temperature_zero_max_tokens_and_stop_are_honoured():
    model, router = model_with(text("Hello there, how are you?"), text("a, b"), text("a, b"), temperature=0,
                               max_tokens=12, stop=[", how"])
    assert model.invoke("hi").content == "Hello there"  # the constructor's stop sequences
    assert model.invoke("hi", stop=["b"], temperature=0).content == "a,"  # the call's replace them
    assert model.invoke("hi", max_tokens=5).content == "a, b"
    assert [r["max_new_tokens"] for r in router.requests] == [12, 12, 5]
    assert [r["stop"] for r in router.requests] == [[", how"], ["b"], [", how"]]  # the router ends the text
    assert ChatToolFormer(router=router, max_new_tokens=7).max_tokens == 7  # the older name of the same budget
    params = model._get_ls_params()
    assert (params["ls_temperature"], params["ls_max_tokens"], params["ls_provider"]) == (0, 12, "toolformer-router")


@pytest.mark.parametrize("kwargs, error, match", [({"temperature": 0.5}, ValueError, "temperature=0.5"),
                                                  ({"top_p": 0.9}, TypeError, "'top_p'"),
                                                  ({"seed": 1, "logprobs": True}, TypeError, "'logprobs', 'seed'")])
async def test_call_parameters_the_router_cannot_honour_are_refused_by_name(kwargs, error, match):
    router = ScriptedRouter(default=text("never"))
    model = ChatToolFormer(router=router)
    with pytest.raises(error, match=match):
        model.invoke("hi", **kwargs)
    with pytest.raises(error, match=match):
        await model.bind_tools([get_weather]).bind(**kwargs).ainvoke("hi")
    with pytest.raises(error, match=match):
        list(model.stream("hi", **kwargs))
    assert router.requests == []


def test_streaming_true_makes_invoke_stream():
    class Tokens(BaseCallbackHandler):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def on_llm_new_token(self, token, **kwargs):
            self.seen.append(token)

    model, _ = model_with(text("Hello!"), text("Hello!"), streaming=True)
    handler = Tokens()
    assert model.invoke("hi", config={"callbacks": [handler]}).content == "Hello!"
    assert "".join(handler.seen) == "Hello!"
    model.streaming = False
    handler.seen = []
    model.invoke("hi", config={"callbacks": [handler]})
    assert handler.seen == []


# ----------------------------------------------------------------------------------- tokens
def test_token_counts_use_the_routers_tokenizer(make_router, tokenizer):
    router = make_router("llama")
    model = ChatToolFormer(router=router, max_tokens=4)
    text_ = "Wie spät ist es in Zürich?"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no GPT-2 fallback warning
        assert model.get_num_tokens(text_) == len(tokenizer.encode(text_, add_special_tokens=False))
        assert model.get_token_ids(text_) == tokenizer.encode(text_, add_special_tokens=False)
        conversation = [SystemMessage("Be brief."), HumanMessage(text_)]
        counted = model.get_num_tokens_from_messages(conversation)
        assert counted == model.get_num_tokens_from_messages(conversation, tools=[get_weather])  # gists, not text
    assert counted == model.invoke(conversation).usage_metadata["input_tokens"]  # what the decoder read
    assert counted > model.get_num_tokens(text_) + model.get_num_tokens("Be brief.")  # template and instructions


# ----------------------------------------------------------------------------------- serialisation
@pytest.mark.filterwarnings("ignore:The function `loads` is in beta")
def test_dumps_and_loads_round_trip_without_the_router_object():
    model = ChatToolFormer(router=ScriptedRouter(), device="cpu", max_new_tokens=32, temperature=0, stop=["\n"])
    serialized = dumps(model)
    assert ChatToolFormer.is_lc_serializable()
    assert json.loads(serialized)["kwargs"] == {"checkpoint": "default", "device": "cpu", "max_tokens": 32,
                                                "temperature": 0.0, "stop": ["\n"]}
    loaded = loads(serialized, valid_namespaces=["toolformer_router"], allowed_objects=[ChatToolFormer])
    assert isinstance(loaded, ChatToolFormer) and loaded.router is None
    assert (loaded.device, loaded.max_tokens, loaded.stop) == ("cpu", 32, ["\n"])
    with pytest.raises(ValueError, match="not allowed"):
        loads(serialized, valid_namespaces=["toolformer_router"], allowed_objects="all")


# ----------------------------------------------------------------------------------- images
IMAGE = HumanMessage(content=[{"type": "text", "text": "What is in this picture?"},
                              {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])


async def test_turns_the_router_cannot_read_go_to_the_fallback_unless_they_need_a_call():
    fallback = GenericFakeChatModel(messages=iter(["A cat.", "A dog.", "A bird."]))
    model, router = model_with(fallback=fallback)
    bound = model.bind_tools([get_weather])
    assert bound.invoke([IMAGE]).content == "A cat."
    assert (await bound.ainvoke([HumanMessage("Hi"), IMAGE])).content == "A dog."
    assert "".join(chunk.text for chunk in bound.stream([IMAGE])).strip() == "A bird."
    assert router.requests == []  # the router never saw the turns
    with pytest.raises(InvalidQueryError, match="image_url.*only when they need no call"):
        model.bind_tools([get_weather], tool_choice="any").invoke([IMAGE])
    with pytest.raises(InvalidQueryError, match="image_url"):
        model.with_structured_output(Person, method="json_schema").invoke([IMAGE])


# ----------------------------------------------------------------------------------- structured output
def test_structured_output_methods_are_forced_calls_of_the_schema():
    seen = []

    def answer(messages, tools, tool_choice):
        seen.append((tools[0].name, tools[0].parameters, tool_choice))
        return call(tools[0].name, name="Ada", age=36)

    router = ScriptedRouter(default=answer)
    model = ChatToolFormer(router=router)
    person = Person(name="Ada", age=36)
    strict_person = normalize_tool(convert_to_openai_tool(Person)).parameters
    assert model.with_structured_output(Person).invoke("Ada, 36") == person
    assert model.with_structured_output(Person, method="json_schema", strict=True).invoke("Ada, 36") == person
    assert model.with_structured_output(Person, method="json_mode").invoke("Ada, 36") == person
    assert model.with_structured_output(None, method="json_mode").invoke("Ada, 36") == {"name": "Ada", "age": 36}
    schema = {"title": "Person", "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    assert model.with_structured_output(schema, method="json_schema").invoke("Ada") == {"name": "Ada", "age": 36}
    assert [(name, choice) for name, _, choice in seen] == [("Person", "Person")] * 3 + [
        ("structured_output", "structured_output"), ("Person", "Person")]
    assert [parameters for _, parameters, _ in seen[:3]] == [strict_person] * 3  # the grammar holds the schema
    assert seen[3][1] == {"type": "object", "additionalProperties": True, "properties": {}}  # any JSON object
    assert [r["parallel_tool_calls"] for r in router.requests] == [True, False, False, False, False]


def test_json_schema_answers_are_json_content_and_include_raw_reports_parse_errors():
    unfit = call("Person", name="Ada")  # a scripted answer the grammar would not let through: no age
    model, _ = model_with(call("Person", name="Ada", age=36), unfit, call("Person", name="Bo", age=5))
    structured = model.with_structured_output(Person, method="json_schema", include_raw=True)
    first = structured.invoke("Ada, 36")
    assert first["parsed"] == Person(name="Ada", age=36) and first["parsing_error"] is None
    assert json.loads(first["raw"].content) == {"name": "Ada", "age": 36} and first["raw"].tool_calls == []
    assert first["raw"].response_metadata["finish_reason"] == "stop"
    second = structured.invoke("Ada, 36")
    assert second["parsed"] is None and "age" in str(second["parsing_error"])
    assert json.loads(second["raw"].content) == {"name": "Ada"}
    chunks = list(model.with_structured_output(Person, method="json_schema").stream("Bo, 5"))
    assert chunks == [Person(name="Bo", age=5)]


def test_response_format_is_a_call_parameter_and_not_one_to_mix_with_tools():
    model, router = model_with(call("structured_output", answer=42))
    message = model.invoke("Six times seven?", response_format={"type": "json_object"})
    assert json.loads(message.content) == {"answer": 42} and not message.tool_calls
    with pytest.raises(ValueError, match="response_format cannot be combined with bound tools"):
        model.bind_tools([get_weather]).invoke("x", response_format={"type": "json_object"})
    with pytest.raises(ValueError, match="'text' is not supported"):
        model.invoke("x", response_format={"type": "text"})
    with pytest.raises(ValueError, match="method"):
        model.with_structured_output(Person, method="xml")
    with pytest.raises(ValueError, match="needs a schema"):
        model.with_structured_output(None, method="json_schema")
    with pytest.raises(TypeError, match="'tools'"):
        model.with_structured_output(Person, tools=[get_weather])
    assert len(router.requests) == 1


def test_structured_output_through_the_real_grammar_always_validates(make_router):
    """A tiny random backbone knows nothing, yet its answer validates: the grammar admits nothing else."""

    class Trip(BaseModel):
        city: str
        days: int = Field(ge=1, le=14)
        mode: str = Field(json_schema_extra={"enum": ["train", "plane"]})

    model = ChatToolFormer(router=make_router("llama"), max_tokens=48)
    for method in ("function_calling", "json_schema", "json_mode"):
        result = model.with_structured_output(Trip, method=method, include_raw=True).invoke("Three days in Rome")
        assert isinstance(result["parsed"], Trip), (method, result)
