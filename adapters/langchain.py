"""LangChain chat model: `ChatToolFormer`, a drop-in tool-calling `BaseChatModel` backed by a `ToolRouter`.

    from toolformer_router.adapters.langchain import ChatToolFormer

    model = ChatToolFormer().bind_tools(tools)          # any number of tools; their schemas never enter a prompt
    message = model.invoke("What's the weather in Paris?")
    message.tool_calls                                   # [{"name": "get_weather", "args": {...}, "id": ..., ...}]

Tools are turned into router tools by `convert_to_openai_tool` (BaseTool, `@tool` functions, pydantic
models, TypedDicts, dicts) and encoded once per model through the router's gist cache, so re-binding on
every agent step is cheap. `tool_choice` is enforced by the router's grammar. When the router answers
without a call and a `fallback` chat model is set, the turn goes to the fallback *without* the tool schemas; so
do turns the router cannot read (images, audio, files) when they need no call. `with_structured_output` answers
through the same grammar, so the answer always validates against the schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal

import orjson
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.chat_models import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from toolformer_router.errors import InvalidQueryError, TooManyToolsError
from toolformer_router.grammar import resolve_tool_choice
from toolformer_router.types import RouteResult

from ._common import (
    UnreadableContentError,
    check_parameters,
    greedy_temperature,
    name_tool_results,
    query_or_fallback,
    shared_router,
    structured_output_text,
    structured_output_tool,
)

_UNREAD_PARTS = ("tool_use", "tool_call", "reasoning", "thinking", "redacted_thinking")
"""Content parts that are carried by `tool_calls` (tool_use, tool_call) or are the model's own reasoning: skipped."""
_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant", "system": "system",
          "developer": "system", "tool": "tool"}
_INVOKE_PARAMETERS = frozenset({"tools", "tool_choice", "parallel_tool_calls", "max_tokens", "temperature",
                                "response_format", "stream"})
"""What a call (or `bind`) may carry; `stream` is LangChain's own switch. Any other keyword is refused by name."""


def _text(content: str | list[Any], where: str) -> str:
    """A message's text; list content may hold only text parts (the router reads text)."""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append(part.get("text", ""))
        elif isinstance(part, dict) and part.get("type") in _UNREAD_PARTS:
            continue
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise UnreadableContentError(f"{where}: content part of type {kind!r} is not supported (text only)")
    return "".join(parts)


def to_router_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages -> the router's `{role, content[, tool_calls, name]}` dicts."""
    converted = []
    for i, message in enumerate(messages):
        role = message.role if isinstance(message, ChatMessage) else message.type
        if role not in _ROLES:
            raise InvalidQueryError(f"message {i}: unsupported message type {type(message).__name__} ({role!r})")
        entry: dict[str, Any] = {"role": _ROLES[role], "content": _text(message.content, f"message {i}")}
        if isinstance(message, AIMessage) and message.tool_calls:
            entry["tool_calls"] = [{"id": c.get("id"), "name": c["name"], "arguments": c["args"]}
                                   for c in message.tool_calls]
        if isinstance(message, ToolMessage):
            entry["tool_call_id"] = message.tool_call_id
            if message.status == "error":
                entry["content"] = f"Error: {entry['content']}"
        if message.name and role == "tool":
            entry["name"] = message.name
        converted.append(entry)
    return name_tool_results(converted)


def _without_titles(value: Any) -> Any:
    """A JSON Schema without its `title` annotations (they never change what validates)."""
    if isinstance(value, dict):
        return {k: _without_titles(v) for k, v in value.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(value, list):
        return [_without_titles(v) for v in value]
    return value


def _unique_tools(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeats of the same tool (e.g. a pydantic model and its JSON schema: equal but for titles);
    two *different* tools under one name are left for the router to reject (`DuplicateToolError`)."""
    seen: dict[str, Any] = {}
    unique = []
    for tool in tools:
        function = tool["function"]
        key = _without_titles(function)
        if seen.get(function["name"]) == key:
            continue
        seen.setdefault(function["name"], key)
        unique.append(tool)
    return unique


def _response_format(schema: dict[str, Any] | type | None) -> dict[str, Any]:
    """OpenAI-style `response_format` for a schema (any form `convert_to_openai_tool` takes); None: any JSON object."""
    if schema is None:
        return {"type": "json_object"}
    function = convert_to_openai_tool(schema)["function"]
    return {"type": "json_schema", "json_schema": {"name": function["name"], "description": function.get("description"),
                                                   "schema": function["parameters"]}}


def _answer_tool(response_format: Mapping[str, Any]) -> dict[str, Any]:
    """The synthetic tool behind `response_format` (`{"type": "json_object"}` or `{"type": "json_schema",
    "json_schema": {"name", "schema"[, "description"]}}`): a forced call of it is the answer."""
    kind = response_format.get("type")
    if kind == "json_object":
        return structured_output_tool()
    if kind == "json_schema":
        spec = response_format["json_schema"]
        return structured_output_tool(spec.get("schema"), spec.get("name") or "structured_output",
                                      spec.get("description"))
    raise ValueError(f"response_format type {kind!r} is not supported (use 'json_object' or 'json_schema')")


class ChatToolFormer(BaseChatModel):
    """Tool-calling chat model backed by toolformer-router (local, CPU or CUDA).

    Args:
        checkpoint: "default" (the packaged checkpoint) or a checkpoint folder.
        device, dtype: where and how to run the router (default: CUDA + bf16 when available, else CPU + fp32).
        router: an existing `ToolRouter` to share (otherwise one per checkpoint/device/dtype per process); never
            serialised.
        fallback: chat model that answers the turns where the router makes no call, and the turns it cannot read
            (images, audio, files) when they need no call; it never sees the tools.
        max_tools: refuse to bind more tools than this (default: the router's `max_tools`).
        max_tokens: output budget per turn (default: the router's); `max_new_tokens` is the same parameter.
        temperature: decoding is greedy under the grammar, so 0 or None; any other value is refused (no framework
            passes a nonzero default, so a nonzero value is a wish this model cannot grant).
        stop: stop sequences of every call that gives none (a text answer ends before the first of them).
        streaming: `invoke` goes through `stream` (LangChain's switch).

    Every other parameter is refused by name, at construction and per call: the router runs in-process, so
    `timeout`, `max_retries`, `api_key`, `model_kwargs` and sampling parameters have nothing to act on.

    Example:
        >>> model = ChatToolFormer().bind_tools([get_weather, send_email], tool_choice="auto")
        >>> model.invoke("Weather in Paris?").tool_calls[0]["name"]
        'get_weather'

    Structured output:
        >>> model.with_structured_output(Person).invoke("Ada Lovelace, 36")           # a forced call of `Person`
        >>> model.with_structured_output(Person, method="json_schema").invoke(...)  # JSON text, parsed
        >>> model.invoke("...", response_format={"type": "json_object"}).content    # '{"...": ...}'

    Tokens: `get_num_tokens` counts with the router's own tokenizer; `get_num_tokens_from_messages` is the
    decoder's prompt (tools add none: their schemas are read as gists).

    Serialisation: `dumps(model)`, then `loads(text, valid_namespaces=["toolformer_router"],
    allowed_objects=[ChatToolFormer])` (the `router` object is left out; the loaded model loads its checkpoint).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    checkpoint: str = "default"
    device: str | None = None
    dtype: str | None = None
    router: Any = Field(default=None, exclude=True)
    fallback: BaseChatModel | None = None
    max_tools: int | None = None
    max_tokens: int | None = Field(default=None, validation_alias=AliasChoices("max_tokens", "max_new_tokens"))
    temperature: float | None = None
    stop: list[str] | None = None
    streaming: bool = False
    _router: Any = PrivateAttr(default=None)

    @field_validator("temperature")
    @classmethod
    def _greedy(cls, temperature: float | None) -> float | None:
        return greedy_temperature(temperature)

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        return ["toolformer_router", "adapters", "langchain"]

    @property
    def _llm_type(self) -> str:
        return "toolformer-router"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "device": self.device, "dtype": self.dtype,
                "max_tokens": self.max_tokens}

    def get_router(self) -> Any:
        """The router behind this model (loaded on first use, shared per checkpoint in the process)."""
        if self._router is None:
            self._router = self.router if self.router is not None else shared_router(
                self.checkpoint, self.device, self.dtype)
        return self._router

    @property
    def model_name(self) -> str:
        router = self.router if self.router is not None else self._router
        return router.name if router is not None else f"toolformer-router/{self.checkpoint}"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "toolformer-router"
        return params

    # ------------------------------------------------------------------------------------ tokens
    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of `text` under the router's own tokenizer (not GPT-2's), unless `custom_get_token_ids`."""
        if self.custom_get_token_ids is not None:
            return self.custom_get_token_ids(text)
        return self.get_router().tokenizer.encode(text, add_special_tokens=False)

    def get_num_tokens(self, text: str) -> int:
        """Tokens of `text` under the router's own tokenizer (`router.count_tokens`)."""
        if self.custom_get_token_ids is not None:
            return len(self.custom_get_token_ids(text))
        return self.get_router().count_tokens(text)

    def get_num_tokens_from_messages(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> int:
        """Tokens of the decoder's prompt for `messages` (chat template and the router's instructions included):
        the `input_tokens` of a route decided in one pass. `tools` add none: their schemas are read as gists."""
        return len(self.get_router().prompt_ids(to_router_messages(messages)))

    # ------------------------------------------------------------------------------------- tools
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | BaseTool],
        *,
        tool_choice: dict | str | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (anything `convert_to_openai_tool` accepts) with an optional `tool_choice`:
        "auto"/None, "any"/"required"/True (must call), "none", a tool name or
        `{"type": "function", "function": {"name": ...}}`. Tools are validated here (a bad tool or an
        unknown `tool_choice` name raises a `ToolRouterError` subclass); encoding happens on first use and
        is cached. `strict` is accepted for compatibility: calls always follow the schemas exactly. Other
        keywords are bound as call parameters (checked when the model is called)."""
        formatted = _unique_tools([convert_to_openai_tool(tool) for tool in tools])
        limit = self.max_tools
        if limit is not None and len(formatted) > limit:
            raise TooManyToolsError(f"{len(formatted)} tools bound; this model allows max_tools={limit}")
        prepared = self.get_router().prepare_tools(formatted)
        resolve_tool_choice(tool_choice, prepared)
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: Literal["function_calling", "json_schema", "json_mode"] = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict | BaseModel]:
        """Answers that always validate against `schema` (pydantic class, TypedDict, JSON Schema or OpenAI tool):
        the answer is a forced call of a tool whose parameters are the schema, so the grammar shapes it.

        method: "function_calling": the message carries the call in `tool_calls` (parsed by a tools parser);
            "json_schema": the message's content is the answer's JSON text (parsed by a JSON/pydantic parser);
            "json_mode": a JSON object as content: of `schema`'s shape when a schema is given (the grammar can
            enforce it, so it does), any object when `schema` is None.
        include_raw: return `{"raw": AIMessage, "parsed": ..., "parsing_error": ...}`. `strict` is accepted:
        the answer always follows the schema exactly."""
        check_parameters(kwargs, (), "with_structured_output")
        if method not in ("function_calling", "json_schema", "json_mode"):
            raise ValueError(f"method must be 'function_calling', 'json_schema' or 'json_mode', got {method!r}")
        if schema is None and method != "json_mode":
            raise ValueError(f"method={method!r} needs a schema (only 'json_mode' works without one)")
        traced = {"ls_structured_output_format": {"kwargs": {"method": method}, "schema": schema}} if schema else {}
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if method == "function_calling":
            name = convert_to_openai_tool(schema)["function"]["name"]
            model = self.bind_tools([schema], tool_choice=name, **traced)
            parser = (PydanticToolsParser(tools=[schema], first_tool_only=True) if is_pydantic
                      else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True))
        else:
            model = self.bind(response_format=_response_format(schema), **traced)
            parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()
        if not include_raw:
            return model | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=model) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")

    # ----------------------------------------------------------------------------------- routing
    def _request(self, messages: list[BaseMessage], kwargs: dict[str, Any],
                 stop: list[str] | None) -> dict[str, Any] | None:
        """The router's arguments for one turn, from the call's (and bound) keywords, each honoured or refused by
        name; None when the fallback answers the turn unread (`query_or_fallback`). A `response_format` turn is
        a forced call of its synthetic tool (`_answer_tool`), alone; `stop` ends a text answer."""
        check_parameters(kwargs, _INVOKE_PARAMETERS, "ChatToolFormer")
        tools, tool_choice = kwargs.get("tools") or [], kwargs.get("tool_choice")
        parallel = kwargs.get("parallel_tool_calls", True) is not False
        if kwargs.get("response_format") is not None:
            if tools:
                raise ValueError("response_format cannot be combined with bound tools: the answer is a forced call "
                                 "of its own tool (bind the schema as a tool instead)")
            tools = [_answer_tool(kwargs["response_format"])]
            tool_choice, parallel = tools[0]["function"]["name"], False
        query = query_or_fallback(to_router_messages, messages, fallback=self.fallback is not None,
                                  tool_choice=tool_choice)
        if query is None:
            return None
        return {"query": query, "tools": tools, "tool_choice": tool_choice, "parallel_tool_calls": parallel,
                "max_new_tokens": kwargs.get("max_tokens", self.max_tokens), "stop": stop,
                "max_text_tokens": 0 if self.fallback is not None else None}  # the fallback writes the text

    def _stop(self, stop: list[str] | None) -> list[str] | None:
        """The call's stop sequences, else the model's."""
        return self.stop if stop is None else stop

    def _wants_fallback(self, result: RouteResult | None) -> bool:
        return self.fallback is not None and (result is None or not result.calls and result.finish_reason == "stop")

    def _message(self, result: RouteResult, kwargs: dict[str, Any]) -> AIMessage:
        """The route as an AIMessage: calls in `tool_calls`; for a `response_format` turn, the answer's JSON text
        as content instead."""
        calls = [{"name": c.name, "args": c.arguments, "id": c.id, "type": "tool_call"} for c in result.calls]
        content = result.text or ""
        if kwargs.get("response_format") is not None:
            content, calls = structured_output_text(result) or "", []
        invalid = []
        if not result.calls and result.raw.startswith("["):
            invalid.append({"name": None, "args": result.raw, "id": None, "type": "invalid_tool_call",
                            "error": "the output budget (max_new_tokens) ran out inside a tool call"
                            if result.finish_reason == "length" else "a number in the tool call is out of range"})
        usage = result.usage
        return AIMessage(
            content=content,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=UsageMetadata(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                                         total_tokens=usage.input_tokens + usage.output_tokens),
            response_metadata={
                "model_name": result.model, "model_provider": "toolformer-router",
                "finish_reason": "tool_calls" if calls and result.finish_reason == "stop" else result.finish_reason,
                "gist_tokens": usage.gist_tokens, "active_tools": usage.active_tools,
                "cache_hits": usage.cache_hits, "cache_misses": usage.cache_misses, "latency_s": usage.latency_s,
            },
        )

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        stop = self._stop(stop)
        request = self._request(messages, kwargs, stop)
        result = None if request is None else self.get_router().route(**request)
        if self._wants_fallback(result):
            return ChatResult(generations=[ChatGeneration(message=self.fallback.invoke(messages, stop=stop))])
        return ChatResult(generations=[ChatGeneration(message=self._message(result, kwargs))])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        stop = self._stop(stop)
        request = self._request(messages, kwargs, stop)
        result = None if request is None else await self.get_router().aroute(**request)
        if self._wants_fallback(result):
            message = await self.fallback.ainvoke(messages, stop=stop)
            return ChatResult(generations=[ChatGeneration(message=message)])
        return ChatResult(generations=[ChatGeneration(message=self._message(result, kwargs))])

    @staticmethod
    def _chunks(message: AIMessage, streamed: str = "") -> Iterator[ChatGenerationChunk]:
        """A routed answer as chunks: the text not `streamed` yet, one chunk per call (`tool_call_chunks` that
        merge back into the same calls), and a last chunk with the usage and metadata."""
        if message.content != streamed:
            yield ChatGenerationChunk(message=AIMessageChunk(content=message.content[len(streamed):]))
        for index, call in enumerate(message.tool_calls):
            chunk = {"name": call["name"], "args": orjson.dumps(call["args"]).decode(), "id": call["id"],
                     "index": index, "type": "tool_call_chunk"}
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[chunk]))
        for invalid in message.invalid_tool_calls:
            chunk = {"name": None, "args": invalid["args"], "id": None, "index": len(message.tool_calls),
                     "type": "tool_call_chunk"}
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[chunk]))
        yield ChatGenerationChunk(message=AIMessageChunk(
            content="", usage_metadata=message.usage_metadata, response_metadata=message.response_metadata,
            chunk_position="last"))

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        """Text arrives token by token as the router decodes it; calls arrive once checked, with the last chunks
        (the checks after decoding may still turn a call list into a text answer), as does a structured answer."""
        stop = self._stop(stop)
        request = self._request(messages, kwargs, stop)
        pieces = iter(()) if request is None else self.get_router().stream(**request)
        streamed, result = "", None
        for piece in pieces:
            if piece.result is not None:
                result = piece.result
                break
            streamed += piece.text
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece.text))
            if run_manager:
                run_manager.on_llm_new_token(piece.text, chunk=chunk)
            yield chunk
        if self._wants_fallback(result):  # nothing was streamed: the router only decided
            for message in self.fallback.stream(messages, stop=stop):
                yield ChatGenerationChunk(message=message)
            return
        for chunk in self._chunks(self._message(result, kwargs), streamed):
            if run_manager and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        """Async `_stream`: concurrent streams are decoded together in one batch."""
        stop = self._stop(stop)
        request = self._request(messages, kwargs, stop)
        streamed, result = "", None
        if request is not None:
            async for piece in self.get_router().astream(**request):
                if piece.result is not None:
                    result = piece.result
                    break
                streamed += piece.text
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece.text))
                if run_manager:
                    await run_manager.on_llm_new_token(piece.text, chunk=chunk)
                yield chunk
        if self._wants_fallback(result):
            async for message in self.fallback.astream(messages, stop=stop):
                yield ChatGenerationChunk(message=message)
            return
        for chunk in self._chunks(self._message(result, kwargs), streamed):
            if run_manager and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


__all__ = ["ChatToolFormer", "to_router_messages"]
